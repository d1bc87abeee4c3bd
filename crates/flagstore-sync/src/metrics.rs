//! The sync's metrics, through the `metrics` facade: whatever recorder the application installs
//! (the CLI's serves them on `/metrics` in the Prometheus format) receives them; with none, they
//! cost next to nothing. Labels are the environment's name and small fixed sets, never a key.

use flagstore::Kind;

use crate::data::DataSet;
use crate::status::ConnectionState;

/// `flagstore_sync_state{env, state}`: 1 for the environment's connection state, 0 for the others.
pub(crate) fn state(env: &str, current: ConnectionState) {
    for state in ConnectionState::ALL {
        metrics::gauge!("flagstore_sync_state", "env" => env.to_owned(), "state" => state.as_str())
            .set(if state == current { 1.0 } else { 0.0 });
    }
}

/// `flagstore_sync_events_total{env, event}`: `put`, `patch` or `delete` applied.
pub(crate) fn event(env: &str, event: &'static str) {
    metrics::counter!("flagstore_sync_events_total", "env" => env.to_owned(), "event" => event)
        .increment(1);
}

/// `flagstore_sync_reconnects_total{env, reason}`.
pub(crate) fn reconnect(env: &str, reason: &'static str) {
    metrics::counter!("flagstore_sync_reconnects_total", "env" => env.to_owned(), "reason" => reason)
        .increment(1);
}

/// `flagstore_sync_last_update_timestamp_seconds{env}` and `flagstore_sync_items{env, kind}`.
pub(crate) fn updated(env: &str, data: &DataSet, at_millis: u64) {
    #[allow(clippy::cast_precision_loss)]
    let seconds = at_millis as f64 / 1000.0;
    metrics::gauge!("flagstore_sync_last_update_timestamp_seconds", "env" => env.to_owned())
        .set(seconds);
    for kind in [Kind::FEATURES, Kind::SEGMENTS] {
        #[allow(clippy::cast_precision_loss)]
        let count = data.live_count(&kind) as f64;
        metrics::gauge!("flagstore_sync_items", "env" => env.to_owned(), "kind" => kind.name().to_owned())
            .set(count);
    }
}

/// `flagstore_sync_store_valid{env, store}`: 1 while the store holds the current data.
pub(crate) fn store_valid(env: &str, store: usize, valid: bool) {
    metrics::gauge!("flagstore_sync_store_valid", "env" => env.to_owned(), "store" => store.to_string())
        .set(if valid { 1.0 } else { 0.0 });
}

/// `flagstore_big_segments_synchronized_on_timestamp_seconds{env}`: when the stores were last
/// marked synchronized.
pub(crate) fn big_segments_synchronized(env: &str, at_millis: u64) {
    #[allow(clippy::cast_precision_loss)]
    let seconds = at_millis as f64 / 1000.0;
    metrics::gauge!("flagstore_big_segments_synchronized_on_timestamp_seconds", "env" => env.to_owned())
        .set(seconds);
}

/// `flagstore_big_segments_patches_total{env, outcome}`: `applied`, or `skipped` (off the
/// chain: read again from the cursor).
pub(crate) fn big_segment_patch(env: &str, applied: bool) {
    let outcome = if applied { "applied" } else { "skipped" };
    metrics::counter!("flagstore_big_segments_patches_total", "env" => env.to_owned(), "outcome" => outcome)
        .increment(1);
}

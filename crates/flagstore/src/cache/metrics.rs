//! The cache's metrics through the `metrics` facade (feature `metrics`): handles registered once
//! at `build()`, so that recording costs no lookup. A hit records nothing here: hits and misses
//! are counted by [`Counters`] and published every second (after every load where no runtime
//! runs the publishing task), so the hot path is the same with the feature on or off.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};

use super::Inner;
use super::stats::Counters;
use crate::changes::{FeedEvent, FeedMetrics};
use crate::error::Operation;

/// How often the counters are published while the cache is alive.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// How a store operation ended, the `outcome` label.
#[derive(Debug, Clone, Copy)]
pub(super) enum Outcome {
    Ok,
    Error,
    /// An upsert the store refused as not newer.
    NotUpdated,
}

impl Outcome {
    const ALL: [Outcome; 3] = [Outcome::Ok, Outcome::Error, Outcome::NotUpdated];

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::NotUpdated => "not_updated",
        }
    }
}

const OPERATIONS: [Operation; 5] = [
    Operation::Init,
    Operation::Get,
    Operation::GetAll,
    Operation::Upsert,
    Operation::IsInitialized,
];

pub(super) struct Metrics {
    /// Whether a task publishes the counters every second; else each load does.
    periodic: AtomicBool,
    hits: Counter,
    misses: Counter,
    load_errors: Counter,
    evictions: Counter,
    entries: Gauge,
    available: Gauge,
    feed: FeedMetrics,
    operations: Vec<Histogram>,
}

impl Metrics {
    /// Registers every series with `backend` as its label, with the recorder installed now.
    pub(super) fn new(backend: &str) -> Metrics {
        let b = backend.to_owned();
        let requests = |result: &'static str| metrics::counter!("flagstore_cache_requests_total", "backend" => b.clone(), "result" => result);
        let mut operations = Vec::new();
        for operation in OPERATIONS {
            for outcome in Outcome::ALL {
                operations.push(metrics::histogram!(
                    "flagstore_store_operation_duration_seconds",
                    "backend" => b.clone(),
                    "operation" => operation.to_string(),
                    "outcome" => outcome.as_str()
                ));
            }
        }
        Metrics {
            periodic: AtomicBool::new(false),
            hits: requests("hit"),
            misses: requests("miss"),
            load_errors: metrics::counter!("flagstore_cache_load_errors_total", "backend" => b.clone()),
            evictions: metrics::counter!("flagstore_cache_evictions_total", "backend" => b.clone()),
            entries: metrics::gauge!("flagstore_cache_entries", "backend" => b.clone()),
            available: metrics::gauge!("flagstore_store_available", "backend" => b.clone()),
            feed: FeedMetrics::new(backend),
            operations,
        }
    }

    /// Publishes the counters' totals.
    pub(super) fn publish(&self, counters: &Counters, entries: u64) {
        let stats = counters.snapshot(entries);
        self.hits.absolute(stats.hits);
        self.misses.absolute(stats.misses);
        self.load_errors.absolute(stats.load_errors);
        self.evictions.absolute(stats.evictions);
        #[allow(clippy::cast_precision_loss)]
        self.entries.set(entries as f64);
    }

    pub(super) fn operation(&self, operation: Operation, outcome: Outcome, took: Duration) {
        let Some(op) = OPERATIONS.iter().position(|o| *o == operation) else {
            return;
        };
        self.operations[op * Outcome::ALL.len() + outcome as usize].record(took.as_secs_f64());
    }

    /// Whether the counters are published every second, so that a load need not.
    pub(super) fn is_periodic(&self) -> bool {
        self.periodic.load(Ordering::Relaxed)
    }

    pub(super) fn available(&self, available: bool) {
        self.available.set(if available { 1.0 } else { 0.0 });
    }

    pub(super) fn feed_event(&self, event: &FeedEvent) {
        self.feed.record(event);
    }
}

/// Publishes `inner`'s counters every second and its status on every change, until it is
/// dropped. Without a Tokio runtime at `build()` the counters are published after each load
/// only.
pub(super) fn start_publishing(inner: &Arc<Inner>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    inner.metrics.periodic.store(true, Ordering::Relaxed);
    let weak: Weak<Inner> = Arc::downgrade(inner);
    let mut status = inner.status.subscribe();
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(PUBLISH_EVERY);
        loop {
            tokio::select! {
                changed = status.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = tick.tick() => {}
            }
            let Some(inner) = weak.upgrade() else { return };
            inner.publish_metrics();
        }
    });
}

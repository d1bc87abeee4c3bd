//! Big Segments, kept current as the Relay Proxy keeps them: an environment whose data holds an
//! unbounded segment reads the chain of membership patches from LaunchDarkly (the revisions
//! endpoint until it has no more, then the `/big-segments` stream) and applies each to every
//! store that holds Big Segments, moving each store's cursor with it; while the stream holds,
//! the stores' synchronization time is refreshed every 30 s, so readers see the data as fresh,
//! and once it breaks, it is not, so they see it go stale.

use std::time::Duration;

use flagstore::backend::Reconnect;
use flagstore::big_segments::{BigSegmentPatch, DynBigSegmentStore};
use serde::Deserialize;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::environment::HEALTHY_STREAM;
use crate::source::{Failure, Source};
use crate::sse::Line;
use crate::status::{BigSegmentStatus, Status, now_millis};

/// How often the synchronization time is refreshed while the stream holds.
const REFRESH: Duration = Duration::from_secs(30);
/// Polls of the revisions endpoint in one catch-up at most: a chain that never ends (or never
/// applies) is a failure to back off from, not a loop.
const MOST_POLLS: usize = 1000;

/// One environment's Big Segments synchronizer.
pub(crate) struct BigSegmentsSync {
    pub(crate) name: String,
    pub(crate) index: usize,
    pub(crate) source: Source,
    pub(crate) stores: Vec<DynBigSegmentStore>,
    pub(crate) status: watch::Sender<Status>,
    pub(crate) first_retry: Duration,
}

/// Why one synchronization spell ended.
enum Ended {
    /// LaunchDarkly or a store failed; retried with backoff unless permanent.
    Failed(Failure),
    /// A store held the stream's patch off its chain (a gap): catch up again at once.
    Gap,
}

impl From<Failure> for Ended {
    fn from(failure: Failure) -> Self {
        Ended::Failed(failure)
    }
}

impl BigSegmentsSync {
    /// Runs until LaunchDarkly refuses the SDK key, or `stop` says so.
    pub(crate) async fn run(self, mut stop: watch::Receiver<bool>) {
        tokio::select! {
            () = self.sync_forever() => {}
            _ = stop.wait_for(|stop| *stop) => {}
        }
    }

    async fn sync_forever(&self) {
        let mut backoff = Reconnect::starting_at(self.first_retry);
        loop {
            let mut streaming_since = None;
            let ended = self.sync(&mut streaming_since).await;
            // As the flag stream: a stream that held for a while earns the shortest delay again.
            if streaming_since.is_some_and(|since: Instant| since.elapsed() >= HEALTHY_STREAM) {
                backoff.reset();
            }
            match ended {
                Ended::Gap => {
                    tracing::warn!(
                        "{}: a Big Segments patch did not follow the stored cursor; reading the changes again from it",
                        self.name
                    );
                    continue;
                }
                Ended::Failed(failure) if failure.is_permanent() => {
                    tracing::error!(
                        "{}: giving up on Big Segments: {failure}; SDK key {}",
                        self.name,
                        self.source.key
                    );
                    self.set_available(false);
                    return;
                }
                Ended::Failed(failure) => {
                    tracing::warn!("{}: Big Segments: {failure}; retrying", self.name);
                }
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// Catches up, opens the stream, catches up once more (what changed while it opened), marks
    /// the stores synchronized (noting when in `streaming_since`), then applies the stream and
    /// refreshes the time until it ends. The time is refreshed only while the stream is heard
    /// from (an event or a heartbeat within the read timeout): a stream gone silent must not
    /// keep the data looking fresh.
    async fn sync(&self, streaming_since: &mut Option<Instant>) -> Ended {
        if let Err(ended) = self.catch_up().await {
            return ended;
        }
        let mut stream = match self.source.big_segments_stream().await {
            Ok(stream) => stream,
            Err(failure) => return failure.into(),
        };
        if let Err(ended) = self.catch_up().await {
            return ended;
        }
        if let Err(failure) = self.synchronized().await {
            return failure.into();
        }
        *streaming_since = Some(Instant::now());
        let mut heard = Instant::now();
        let mut refresh = tokio::time::interval(REFRESH);
        refresh.tick().await;
        loop {
            tokio::select! {
                line = stream.next() => {
                    let line = match line {
                        Ok(line) => line,
                        Err(failure) => return failure.into(),
                    };
                    heard = Instant::now();
                    let Line::Event(event) = line else { continue };
                    let Ok(text) = event.data.into_text() else {
                        return Failure::Invalid(
                            "a Big Segments event is not UTF-8".to_owned(),
                        )
                        .into();
                    };
                    let patches = match parse(&text) {
                        Ok(patches) => patches,
                        Err(failure) => return failure.into(),
                    };
                    for store in &self.stores {
                        match apply_all(&self.name, store, &patches).await {
                            Ok(true) => {}
                            Ok(false) => return Ended::Gap,
                            Err(failure) => return failure.into(),
                        }
                    }
                    if let Err(failure) = self.synchronized().await {
                        return failure.into();
                    }
                }
                // Each refresh interrupts the read, which restarts the read's own timeout: the
                // silence is measured here instead.
                () = tokio::time::sleep_until(heard + self.source.read_timeout) => {
                    return Failure::Network(format!(
                        "nothing received on the Big Segments stream for {:?} (not even a heartbeat)",
                        self.source.read_timeout
                    ))
                    .into();
                }
                _ = refresh.tick() => {
                    if let Err(failure) = self.synchronized().await {
                        return failure.into();
                    }
                }
            }
        }
    }

    /// Reads the revisions after each store's cursor and applies them, until LaunchDarkly has
    /// none left for any store.
    async fn catch_up(&self) -> Result<(), Ended> {
        for store in &self.stores {
            let mut polls = 0;
            loop {
                polls += 1;
                if polls > MOST_POLLS {
                    return Err(Failure::Invalid(format!(
                        "the Big Segments revisions did not end (or did not follow {store}'s cursor) after {MOST_POLLS} requests"
                    ))
                    .into());
                }
                let cursor = store.get_cursor().await.map_err(store_failure)?;
                let body = self.source.big_segment_revisions(cursor.as_deref()).await?;
                let patches = parse(&body)?;
                if patches.is_empty() {
                    break;
                }
                // A patch off the chain stops this batch; the next request starts at the cursor.
                apply_all(&self.name, store, &patches).await?;
            }
        }
        Ok(())
    }

    /// Records now as every store's synchronization time.
    async fn synchronized(&self) -> Result<(), Failure> {
        let now = now_millis();
        for store in &self.stores {
            if let Err(err) = store.set_synchronized_on(now).await {
                self.set_available(false);
                return Err(store_failure(err));
            }
        }
        crate::metrics::big_segments_synchronized(&self.name, now);
        self.status.send_modify(|status| {
            status.environments[self.index].big_segments = Some(BigSegmentStatus {
                available: true,
                last_synchronized_on: Some(now),
            });
        });
        Ok(())
    }

    fn set_available(&self, available: bool) {
        self.status.send_modify(|status| {
            let big = status.environments[self.index]
                .big_segments
                .get_or_insert_with(BigSegmentStatus::default);
            big.available = available;
        });
    }
}

/// Applies `patches` in order to `store`; `false` at the first one off its chain.
async fn apply_all(
    env: &str,
    store: &DynBigSegmentStore,
    patches: &[BigSegmentPatch],
) -> Result<bool, Failure> {
    for patch in patches {
        let applied = store.apply_patch(patch).await.map_err(store_failure)?;
        crate::metrics::big_segment_patch(env, applied);
        if !applied {
            return Ok(false);
        }
    }
    Ok(true)
}

fn store_failure(err: flagstore::Error) -> Failure {
    Failure::Network(format!(
        "the Big Segments store: {}",
        flagstore::error::one_line(&err)
    ))
}

/// A patch as LaunchDarkly sends it.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePatch {
    segment_id: String,
    version: String,
    #[serde(default)]
    previous_version: Option<String>,
    #[serde(default)]
    changes: Option<WireChanges>,
}

#[derive(Deserialize, Default)]
struct WireChanges {
    #[serde(default)]
    included: Option<WireSet>,
    #[serde(default)]
    excluded: Option<WireSet>,
}

#[derive(Deserialize, Default)]
struct WireSet {
    #[serde(default)]
    add: Option<Vec<String>>,
    #[serde(default)]
    remove: Option<Vec<String>>,
}

/// The patches in a revisions answer or a stream event: a JSON list.
fn parse(json: &str) -> Result<Vec<BigSegmentPatch>, Failure> {
    let wire: Vec<WirePatch> = serde_json::from_str(json)
        .map_err(|e| Failure::Invalid(format!("Big Segments patches that are not valid: {e}")))?;
    Ok(wire
        .into_iter()
        .map(|w| {
            let mut patch = BigSegmentPatch::new(
                w.segment_id,
                w.previous_version.unwrap_or_default(),
                w.version,
            );
            let changes = w.changes.unwrap_or_default();
            let included = changes.included.unwrap_or_default();
            let excluded = changes.excluded.unwrap_or_default();
            patch.included_add = included.add.unwrap_or_default();
            patch.included_remove = included.remove.unwrap_or_default();
            patch.excluded_add = excluded.add.unwrap_or_default();
            patch.excluded_remove = excluded.remove.unwrap_or_default();
            patch
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_parse_as_launchdarkly_sends_them() {
        let json = r#"[{"environmentId":"env","segmentId":"beta.g2","version":"2","previousVersion":"1",
            "changes":{"included":{"add":["a","b"],"remove":["c"]},"excluded":{"add":null,"remove":[]}}},
            {"segmentId":"staff.g1","version":"1"}]"#;
        let patches = parse(json).unwrap();
        assert_eq!(patches.len(), 2);
        assert_eq!(patches[0].segment_ref, "beta.g2");
        assert_eq!(patches[0].previous_version, "1");
        assert_eq!(patches[0].included_add, ["a", "b"]);
        assert_eq!(patches[0].included_remove, ["c"]);
        assert!(patches[0].excluded_add.is_empty());
        assert_eq!(patches[1].previous_version, "");
        assert!(parse("[]").unwrap().is_empty());
        assert!(matches!(parse("{}"), Err(Failure::Invalid(_))));
    }
}

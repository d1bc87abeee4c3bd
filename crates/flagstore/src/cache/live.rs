//! Live mode: entries live until the store's change feed says they changed.
//!
//! What a change drops depends on what the feed can say:
//! - **one item** ([`Change::Item`]: Consul keys, DynamoDB stream records, the memory store):
//!   that item's entry and its kind's whole-kind entry, as a write through this cache would.
//! - **some item of a kind** ([`Change::Kind`]: a Redis hash is one key): every entry of that
//!   kind goes stale at once, by one atomic add to the kind's generation. The next stale read
//!   re-validates them together: a whole-kind entry with one `get_all`, the item entries with
//!   one [`get_many`](crate::PersistentDataStore::get_many), instead of each entry making a read
//!   of its own.
//! - **anything** ([`Change::Everything`], and a feed that (re)connects, since it saw nothing
//!   while away): every entry goes stale, and "initialized" is asked again.
//!
//! An entry is fresh only while its kind's generation still holds the value it had when the
//! entry's read *started*, so a read that raced a change never outlives it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::task::AbortHandle;

use super::entry::{CacheKey, Cached, Entry};
use super::{BACKEND, Inited, Inner, lock};
use crate::changes::{Change, FeedEvent};
use crate::error::Operation;
use crate::{Error, Kind, Result};

/// The most item entries one re-validation reads; the rest are read when next asked for.
const REVALIDATED_AT_MOST: usize = 1000;

pub(super) struct Live {
    /// How long an entry lives while the feed is connected.
    pub(super) ttl: Duration,
    /// Changes that made every entry stale.
    everything: AtomicU64,
    /// Changes that made one kind's entries stale: flags, segments, any other kind.
    kinds: [AtomicU64; 3],
    /// Every change the feed reported, for tests and logs.
    seen: AtomicU64,
    connected: AtomicBool,
    /// Whether the current disconnection has been logged at warn level already.
    loss_reported: AtomicBool,
    /// Held while stale item entries are re-validated, so that concurrent stale reads wait for
    /// the one read instead of each making their own.
    revalidating: tokio::sync::Mutex<()>,
    task: Mutex<Option<AbortHandle>>,
}

/// The slot of `kind`'s generation: the kinds LaunchDarkly has get their own; any other kind
/// shares the last, which only costs it a spare re-read.
fn slot(kind: &Kind) -> usize {
    if *kind == Kind::FEATURES {
        0
    } else if *kind == Kind::SEGMENTS {
        1
    } else {
        2
    }
}

impl Live {
    pub(super) fn new(ttl: Duration) -> Live {
        Live {
            ttl,
            everything: AtomicU64::new(0),
            kinds: Default::default(),
            seen: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            loss_reported: AtomicBool::new(false),
            revalidating: tokio::sync::Mutex::new(()),
            task: Mutex::new(None),
        }
    }

    /// The generation of `kind`'s entries: it moves on every change that concerns them. Two
    /// counters read one after the other: a change between the reads can only make the sum
    /// look newer than an entry's, never equal to it, so the entry is re-read (never kept).
    pub(super) fn generation(&self, kind: &Kind) -> u64 {
        self.everything.load(Ordering::Acquire) + self.kinds[slot(kind)].load(Ordering::Acquire)
    }

    pub(super) fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }

    #[cfg(test)]
    pub(super) fn seen(&self) -> u64 {
        self.seen.load(Ordering::Acquire)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }
}

impl Inner {
    /// Starts following the store's change feed, if live mode is on.
    pub(super) fn start_feed(self: &Arc<Self>) -> Result<()> {
        let Some(live) = &self.live else {
            return Ok(());
        };
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::config(
                BACKEND,
                "invalidate_on_changes() follows the store's change feed on the Tokio runtime: call build() inside one",
            )
        })?;
        let Some(mut feed) = self.store.changes() else {
            tracing::warn!(
                store = %self.store,
                "this store has no change feed; live mode falls back to the normal cache time"
            );
            return Ok(());
        };
        let inner: Weak<Inner> = Arc::downgrade(self);
        let task = runtime.spawn(async move {
            while let Some(event) = feed.next().await {
                let Some(inner) = inner.upgrade() else { return };
                let via = matches!(event, FeedEvent::Connected).then(|| feed.via());
                inner.on_feed_event(event, via.flatten()).await;
            }
            if let Some(inner) = inner.upgrade() {
                let ended = Error::database(BACKEND, Operation::Watch, "the change feed ended");
                inner.on_feed_event(FeedEvent::Lost(ended), None).await;
            }
        });
        *lock(&live.task) = Some(task.abort_handle());
        Ok(())
    }

    /// Takes in one event of the feed; `via` says what a connected feed follows.
    async fn on_feed_event(&self, event: FeedEvent, via: Option<String>) {
        let Some(live) = &self.live else { return };
        #[cfg(feature = "metrics")]
        self.metrics.feed_event(&event);
        match event {
            FeedEvent::Changed(change) => {
                self.changed(live, change).await;
                live.seen.fetch_add(1, Ordering::AcqRel);
            }
            FeedEvent::Connected => {
                // Whatever changed while the feed was away went unseen.
                self.changed(live, Change::Everything).await;
                live.connected.store(true, Ordering::Release);
                live.loss_reported.store(false, Ordering::Release);
                self.status
                    .send_if_modified(|status| !std::mem::replace(&mut status.live, true));
                let via = via.unwrap_or_else(|| "its change feed".to_owned());
                tracing::info!(store = %self.store, via = %via, "change feed connected: entries live until they change");
            }
            FeedEvent::Lost(err) => {
                live.connected.store(false, Ordering::Release);
                self.status
                    .send_if_modified(|status| std::mem::replace(&mut status.live, false));
                if live.loss_reported.swap(true, Ordering::AcqRel) {
                    tracing::debug!(store = %self.store, error = %err, "change feed still down");
                } else {
                    tracing::warn!(
                        store = %self.store,
                        error = %err,
                        "change feed down: entries live for the normal cache time until it reconnects"
                    );
                }
            }
        }
    }

    /// Makes stale what `change` may have changed, and nothing else.
    async fn changed(&self, live: &Live, change: Change) {
        match change {
            Change::Item { kind, key } => {
                if let Some(cache) = &self.cache {
                    self.forget(cache, &kind, &key).await;
                }
            }
            Change::Kind(kind) => {
                live.kinds[slot(&kind)].fetch_add(1, Ordering::AcqRel);
            }
            Change::Everything => {
                live.everything.fetch_add(1, Ordering::AcqRel);
                // A flush or a new data set may have removed the marker too.
                *lock(&self.inited) = Inited::Unknown;
            }
        }
    }

    /// Live mode: re-reads, in one read, every item entry of `kind` that a change made stale,
    /// so that a reader using ten flags makes one database read per change rather than ten.
    /// Concurrent callers wait for the one re-validation under way. Nothing is cached if a write
    /// to the kind came while it read, and a failed read caches nothing: each caller then reads
    /// its own key, which reports the error.
    pub(super) async fn revalidate(
        &self,
        cache: &moka::future::Cache<CacheKey, Entry>,
        kind: &Kind,
    ) {
        let Some(live) = &self.live else { return };
        let _one_at_a_time = live.revalidating.lock().await;
        let stamp = self.writes.stamp();
        let generation = live.generation(kind);
        let stale: Vec<String> = cache
            .iter()
            .filter_map(|(key, entry)| match &*key {
                CacheKey::Item(k, item_key) if k == kind && !self.is_fresh(k, &entry) => {
                    Some(item_key.clone())
                }
                _ => None,
            })
            .take(REVALIDATED_AT_MOST)
            .collect();
        if stale.is_empty() {
            return;
        }
        let keys: Vec<&str> = stale.iter().map(String::as_str).collect();
        let started = std::time::Instant::now();
        let read = self.timed(Operation::Get, self.store.get_many(kind, &keys));
        let read = read.await;
        self.stats.loaded(read.is_ok(), started.elapsed());
        let Ok(items) = read else { return };
        if items.len() != keys.len() {
            return;
        }
        if let Some(_turn) = self.writes.publish(kind, stamp).await {
            for (key, item) in stale.into_iter().zip(items) {
                let entry = Entry::new(Cached::Item(item), generation);
                cache.insert(CacheKey::Item(kind.clone(), key), entry).await;
            }
        }
    }
}

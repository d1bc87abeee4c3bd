//! Outages: noticing them, polling until the database answers again, and (in forever mode)
//! restoring the database from the cache.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use super::entry::{CacheKey, Cached};
use super::{CacheMode, Inner, lock};
use crate::{Collection, Error, Item, Kind, Result, sort_for_init};

const MAX_POLL_INTERVAL: Duration = Duration::from_secs(10);

/// Forever mode: what the database has not taken yet.
#[derive(Default)]
pub(super) struct Pending {
    /// An init failed: the database must be re-initialized from the cache.
    pub(super) init_failed: bool,
    /// Upserts that failed, kept apart from the cache so that no eviction can lose them.
    pub(super) items: HashMap<(Kind, String), Item>,
}

impl Pending {
    pub(super) fn add_item(&mut self, kind: &Kind, item: &Item) {
        let slot = self.items.entry((kind.clone(), item.key().to_owned()));
        slot.and_modify(|old| {
            if old.version() < item.version() {
                *old = item.clone();
            }
        })
        .or_insert_with(|| item.clone());
    }

    fn merge(&mut self, earlier: Pending) {
        self.init_failed |= earlier.init_failed;
        for ((kind, _), item) in &earlier.items {
            self.add_item(kind, item);
        }
    }
}

/// How a write-back went.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Restored {
    /// The database holds at least everything the cache holds.
    Everything,
    /// The database was not initialized (or our init had failed) and the cache holds no full
    /// data set to initialize it with: only the failed writes were replayed.
    OnlyPendingWrites,
}

impl Inner {
    /// Notes an error: an outage marks the store unavailable and starts the health poll.
    pub(super) fn observe(self: &Arc<Self>, err: &Error) {
        if !err.is_outage() {
            return;
        }
        let went_down = self.status.send_if_modified(|status| {
            let was_up = status.available;
            status.available = false;
            was_up
        });
        if went_down {
            tracing::warn!(store = %self.store, error = %err, "store unavailable; polling until it recovers");
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => {
                    handle.spawn(poll_until_available(Arc::downgrade(self)));
                }
                Err(_) => tracing::error!(
                    store = %self.store,
                    "no Tokio runtime to poll the store's health on; its status will stay unavailable"
                ),
            }
        }
    }

    pub(super) fn remember<T>(self: &Arc<Self>, result: Result<T>) -> Result<T> {
        if let Err(err) = &result {
            self.observe(err);
        }
        result
    }

    /// The full data set the cache holds: every kind whose whole-kind entry is cached, provided
    /// flags and segments are among them. `None` if the cache holds no full data set.
    fn cached_data_set(&self) -> Option<Vec<Collection>> {
        let cache = self.cache.as_ref()?;
        let mut collections: Vec<Collection> = cache
            .iter()
            .filter_map(|(key, entry)| match (&*key, entry.value) {
                (CacheKey::All(kind), Cached::All(all)) => {
                    Some(Collection::new(kind.clone(), all.items().to_vec()))
                }
                _ => None,
            })
            .collect();
        let has = |kind: &Kind| collections.iter().any(|c| &c.kind == kind);
        if !has(&Kind::FEATURES) || !has(&Kind::SEGMENTS) {
            return None;
        }
        collections.sort_by(|a, b| a.kind.cmp(&b.kind));
        Some(sort_for_init(collections))
    }

    /// Forever mode: makes the database hold what the cache holds, after an outage.
    ///
    /// - If our own init failed, or the database came back uninitialized (a restarted server
    ///   with no persistence, say), it is initialized from the cached data set, as the Go SDK's
    ///   wrapper does: the cache is the source of truth.
    /// - Otherwise every cached item is written back as an upsert, so items the database lost
    ///   (or holds in an older version) are restored while a newer version another writer stored
    ///   meanwhile still wins.
    ///
    /// Failed upserts are replayed as upserts in either case. What fails stays pending.
    pub(super) async fn write_back(&self) -> Result<Restored> {
        let pending = std::mem::take(&mut *lock(&self.pending));
        let result = self.try_write_back(&pending).await;
        if result.is_err() {
            lock(&self.pending).merge(pending);
        }
        result
    }

    async fn try_write_back(&self, pending: &Pending) -> Result<Restored> {
        let data = self.cached_data_set();
        let needs_init = pending.init_failed || !self.store.is_initialized().await?;
        let restored = match (&data, needs_init) {
            (Some(data), true) => {
                self.store.init(data).await?;
                Restored::Everything
            }
            (Some(data), false) => {
                for collection in data {
                    for item in &collection.items {
                        self.store.upsert(&collection.kind, item.clone()).await?;
                    }
                }
                Restored::Everything
            }
            (None, true) => Restored::OnlyPendingWrites,
            (None, false) => Restored::Everything,
        };
        for ((kind, _), item) in &pending.items {
            self.store.upsert(kind, item.clone()).await?;
        }
        Ok(restored)
    }
}

/// Polls the database's health with backoff until it answers (and, in forever mode, takes the
/// write-back), then announces recovery. Stops early if the store is dropped.
async fn poll_until_available(inner: Weak<Inner>) {
    let mut delay = match inner.upgrade() {
        Some(inner) => inner.poll_interval,
        None => return,
    };
    loop {
        tokio::time::sleep(delay).await;
        let Some(inner) = inner.upgrade() else { return };
        delay = (delay * 2).min(MAX_POLL_INTERVAL.max(inner.poll_interval));
        if !inner.store.is_available().await {
            continue;
        }
        let refresh_needed = if inner.mode == CacheMode::Forever {
            match inner.write_back().await {
                Ok(Restored::Everything) => {
                    tracing::info!(store = %inner.store, "wrote the cached data back to the recovered store");
                    false
                }
                Ok(Restored::OnlyPendingWrites) => {
                    tracing::warn!(
                        store = %inner.store,
                        "the store came back uninitialized and the cache holds no full data set to restore; send the full data set again"
                    );
                    true
                }
                Err(err) => {
                    tracing::warn!(store = %inner.store, error = %err, "write-back failed; retrying");
                    continue;
                }
            }
        } else {
            // Writes during the outage may be lost and the database may have lost data: only
            // whoever feeds the store can tell, so it is asked to send everything again.
            true
        };
        tracing::info!(store = %inner.store, "store available again");
        inner.status.send_modify(|status| {
            status.available = true;
            status.refresh_needed = refresh_needed;
        });
        return;
    }
}

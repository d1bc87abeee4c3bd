//! Configuring a [`CachingStore`].

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moka::future::Cache;
use tokio::sync::watch;

use super::entry::{CacheKey, Entry};
use super::outage::Pending;
use super::{BACKEND, CacheMode, CachingStore, DEFAULT_CACHE_TIME, Inited, Inner, StoreStatus};
use crate::{Error, PersistentDataStore, Result};

/// Longest TTL accepted; anything longer is a mistake for [`CachingStoreBuilder::cache_forever`]
/// (and moka refuses TTLs over 1000 years).
const MAX_CACHE_TIME: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Configures a [`CachingStore`]; made by [`CachingStore::builder`].
#[must_use]
pub struct CachingStoreBuilder {
    store: Arc<dyn PersistentDataStore>,
    mode: CacheMode,
    capacity_bytes: Option<u64>,
    poll_interval: Duration,
}

impl fmt::Debug for CachingStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachingStoreBuilder")
            .field("store", &format_args!("{}", self.store))
            .field("mode", &self.mode)
            .field("capacity_bytes", &self.capacity_bytes)
            .field("poll_interval", &self.poll_interval)
            .finish()
    }
}

impl CachingStoreBuilder {
    pub(super) fn new(store: Arc<dyn PersistentDataStore>) -> Self {
        CachingStoreBuilder {
            store,
            mode: CacheMode::Ttl(DEFAULT_CACHE_TIME),
            capacity_bytes: None,
            poll_interval: DEFAULT_POLL_INTERVAL,
        }
    }

    /// Caches entries for `ttl`; `Duration::ZERO` turns caching off. The default is 15 seconds.
    pub fn cache_time(mut self, ttl: Duration) -> Self {
        self.mode = if ttl.is_zero() {
            CacheMode::Disabled
        } else {
            CacheMode::Ttl(ttl)
        };
        self
    }

    /// Keeps entries until they are replaced, and treats the cache as the source of truth: when
    /// the database recovers from an outage, the cached data set is written back to it (see
    /// [`CachingStore`]). For a process that feeds its store, as the SDKs' forever mode does.
    pub fn cache_forever(mut self) -> Self {
        self.mode = CacheMode::Forever;
        self
    }

    /// Sends every read to the database.
    pub fn no_caching(mut self) -> Self {
        self.mode = CacheMode::Disabled;
        self
    }

    /// Bounds the cache to about this many bytes of item JSON; least-used entries are evicted
    /// first. Unbounded by default. Evicted entries are simply read again. In forever mode,
    /// writes awaiting write-back are kept outside the cache and are never evicted, but a
    /// whole-kind entry may be: the cache then no longer holds a full data set to restore after
    /// an outage, and recovery reports [`StoreStatus::refresh_needed`] instead.
    pub fn capacity_bytes(mut self, bytes: u64) -> Self {
        self.capacity_bytes = Some(bytes);
        self
    }

    /// The first delay between health polls while the database is unavailable; it doubles on each
    /// failed poll up to 10 seconds. The default is 500 ms.
    pub fn status_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// The configured store.
    ///
    /// Fails if the TTL is over 100 years (use [`cache_forever`](Self::cache_forever)), the
    /// capacity is zero, or the poll interval is zero.
    pub fn build(self) -> Result<CachingStore> {
        if let CacheMode::Ttl(ttl) = self.mode
            && ttl > MAX_CACHE_TIME
        {
            return Err(Error::config(
                BACKEND,
                format!("cache_time of {ttl:?} is over 100 years; use cache_forever() instead"),
            ));
        }
        if self.capacity_bytes == Some(0) {
            return Err(Error::config(
                BACKEND,
                "capacity_bytes must be positive; use no_caching() to turn the cache off",
            ));
        }
        if self.poll_interval.is_zero() {
            return Err(Error::config(
                BACKEND,
                "status_poll_interval must be positive",
            ));
        }
        let cache = match self.mode {
            CacheMode::Disabled => None,
            CacheMode::Ttl(_) | CacheMode::Forever => {
                let mut builder = Cache::builder().weigher(|key: &CacheKey, entry: &Entry| {
                    u32::try_from(key.weight() + entry.value.weight()).unwrap_or(u32::MAX)
                });
                if let Some(bytes) = self.capacity_bytes {
                    builder = builder.max_capacity(bytes);
                }
                if let CacheMode::Ttl(ttl) = self.mode {
                    // Expiry is decided by `Entry::is_fresh`; moka's own TTL only frees memory.
                    builder = builder.time_to_live(ttl);
                }
                Some(builder.build())
            }
        };
        let (status, _) = watch::channel(StoreStatus::AVAILABLE);
        Ok(CachingStore {
            inner: Arc::new(Inner {
                store: self.store,
                mode: self.mode,
                cache,
                inited: Mutex::new(Inited::Unknown),
                status,
                poll_interval: self.poll_interval,
                pending: Mutex::new(Pending::default()),
            }),
        })
    }
}

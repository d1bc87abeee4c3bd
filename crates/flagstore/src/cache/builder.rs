//! Configuring a [`CachingStore`].

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use moka::future::Cache;
use moka::notification::RemovalCause;
use tokio::sync::watch;

use super::entry::{CacheKey, Entry};
use super::live::Live;
use super::loads::Loads;
use super::outage::Pending;
use super::sequence::WriteSequence;
use super::stats::Counters;
use super::{BACKEND, CacheMode, CachingStore, Inited, Inner, StoreStatus};
use crate::{Error, PersistentDataStore, Result};

/// Longest TTL accepted; anything longer is a mistake for [`CachingStoreBuilder::cache_forever`]
/// (and moka refuses TTLs over 1000 years).
const MAX_CACHE_TIME: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Configures a [`CachingStore`]; made by [`CachingStore::builder`].
#[must_use = "a builder does nothing until build() is called"]
pub struct CachingStoreBuilder {
    store: Arc<dyn PersistentDataStore>,
    mode: CacheMode,
    capacity_bytes: Option<u64>,
    poll_interval: Duration,
    live: bool,
    live_cache_time: Option<Duration>,
    last_known_good: bool,
    name: Option<String>,
}

impl fmt::Debug for CachingStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachingStoreBuilder")
            .field("store", &format_args!("{}", self.store))
            .field("mode", &self.mode)
            .field("capacity_bytes", &self.capacity_bytes)
            .field("poll_interval", &self.poll_interval)
            .field("live", &self.live)
            .field("live_cache_time", &self.live_cache_time)
            .field("last_known_good", &self.last_known_good)
            .field("name", &self.name)
            .finish()
    }
}

impl CachingStoreBuilder {
    /// Like [`CachingStore::builder`], for a store already behind an `Arc`, such as a
    /// [`DynStore`](crate::DynStore) opened from a URL.
    pub fn from_arc(store: Arc<dyn PersistentDataStore>) -> Self {
        CachingStoreBuilder {
            store,
            mode: CacheMode::Ttl(CachingStore::DEFAULT_CACHE_TIME),
            capacity_bytes: None,
            poll_interval: DEFAULT_POLL_INTERVAL,
            live: false,
            live_cache_time: None,
            last_known_good: false,
            name: None,
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

    /// Live mode: follows the store's [change feed](PersistentDataStore::changes) and keeps
    /// entries until it reports a change (or for [`live_cache_time`](Self::live_cache_time), 5
    /// minutes by default, in case it missed one). A daemon-mode reader then sees every change,
    /// whoever wrote it, within about a second, with a fraction of the database reads a short
    /// cache time costs.
    ///
    /// While the feed is down (and for a store without one), entries live for
    /// the normal [`cache_time`](Self::cache_time), so nothing older than that is served, and
    /// [`StoreStatus::live`] says `false`. A change drops what it concerns: the one item where
    /// the feed names it (Consul, DynamoDB), else the entries of its kind (a Redis hash), which
    /// the next read re-validates together with one database read.
    ///
    /// Needs the TTL mode and a Tokio runtime: `build()` starts the feed on the current one.
    ///
    /// ```
    /// use std::time::Duration;
    /// use flagstore::memory::MemoryDatabase;
    /// use flagstore::{CachingStore, Item, Kind, PersistentDataStore};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// // Two processes sharing one database; with Redis, a `RedisStore`.
    /// let database = MemoryDatabase::new();
    /// let writer = database.store("prod");
    /// let reader = CachingStore::builder(database.store("prod"))
    ///     .cache_time(Duration::from_secs(15)) // while the feed is down
    ///     .invalidate_on_changes()
    ///     .live_cache_time(Duration::from_secs(600))
    ///     .build()?;
    ///
    /// writer.upsert(&Kind::FEATURES, Item::from_json("f", r#"{"key":"f","version":1}"#)?).await?;
    /// assert_eq!(reader.get(&Kind::FEATURES, "f").await?.map(|f| f.version()), Some(1));
    /// let mut status = reader.subscribe();
    /// status.wait_for(|s| s.live).await.expect("feed connected");
    ///
    /// writer.upsert(&Kind::FEATURES, Item::from_json("f", r#"{"key":"f","version":2}"#)?).await?;
    /// # for _ in 0..1000 {
    /// #     if reader.get(&Kind::FEATURES, "f").await?.map(|f| f.version()) == Some(2) { break }
    /// #     tokio::time::sleep(Duration::from_millis(1)).await;
    /// # }
    /// // Within moments, not 10 minutes:
    /// assert_eq!(reader.get(&Kind::FEATURES, "f").await?.map(|f| f.version()), Some(2));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    pub fn invalidate_on_changes(mut self) -> Self {
        self.live = true;
        self
    }

    /// In live mode, how long an entry lives while the change feed is connected: the safety net
    /// for a change the feed did not report. The default is 5 minutes.
    pub fn live_cache_time(mut self, ttl: Duration) -> Self {
        self.live_cache_time = Some(ttl);
        self
    }

    /// Last-known-good mode: when the database suddenly loses data the cache holds (it answers
    /// "not initialized" where a flag was, or a kind that had items comes back empty), the cache
    /// keeps serving what it held, reports [`StoreStatus::last_known_good`] and logs one warning,
    /// instead of turning every flag to its fallback value. For daemon-mode readers of a store
    /// that a wipe or a restart without persistence can empty. Off by default.
    ///
    /// **The risk:** while it serves the last known good data, changes are not seen, and a writer
    /// that really emptied a kind (an `init` without segments) is not believed until that kind
    /// has items again. Watch the status, and re-feed the store.
    pub fn keep_last_known_good(mut self) -> Self {
        self.last_known_good = true;
        self
    }

    /// The name of this store in the metrics (feature `metrics`): their `backend` label, which
    /// tells several stores of one process apart. The backend's name (`redis`, …) by default.
    ///
    /// ```
    /// use flagstore::CachingStore;
    /// use flagstore::memory::MemoryStore;
    ///
    /// let flags = CachingStore::builder(MemoryStore::new()).name("flags-eu").build()?;
    /// # Ok::<(), flagstore::Error>(())
    /// ```
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
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
        let live = self.live_settings()?;
        let stats = Arc::new(Counters::default());
        #[cfg(feature = "metrics")]
        let metrics_name = self
            .name
            .clone()
            .unwrap_or_else(|| self.store.backend().to_owned());
        let cache = match self.mode {
            CacheMode::Disabled => None,
            CacheMode::Ttl(_) | CacheMode::Forever => {
                let mut builder = Cache::builder().weigher(|key: &CacheKey, entry: &Entry| {
                    u32::try_from(key.weight() + entry.value.weight()).unwrap_or(u32::MAX)
                });
                if let Some(bytes) = self.capacity_bytes {
                    builder = builder.max_capacity(bytes);
                }
                let counted = stats.clone();
                builder = builder.eviction_listener(move |_key, _entry, cause| {
                    if matches!(cause, RemovalCause::Size | RemovalCause::Expired) {
                        counted
                            .evictions
                            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                });
                // Expiry is decided by `Inner::is_fresh`; moka's own TTL only frees memory. A
                // last-known-good cache keeps expired entries: they are what it serves.
                if let (CacheMode::Ttl(ttl), false) = (self.mode, self.last_known_good) {
                    let longest = live.as_ref().map_or(ttl, |live| live.ttl.max(ttl));
                    builder = builder.time_to_live(longest);
                }
                Some(builder.build())
            }
        };
        let (status, _) = watch::channel(StoreStatus::AVAILABLE);
        let inner = Arc::new(Inner {
            store: self.store,
            mode: self.mode,
            cache,
            items: (self.mode == CacheMode::Forever && self.capacity_bytes.is_none())
                .then(super::items::ItemTable::default),
            built: tokio::time::Instant::now(),
            bounded: self.capacity_bytes.is_some(),
            inited: Mutex::new(Inited::Unknown),
            status,
            poll_interval: self.poll_interval,
            pending: Mutex::new(Pending::default()),
            live,
            last_known_good: self.last_known_good,
            losses: Mutex::default(),
            writes: WriteSequence::default(),
            loads: Loads::default(),
            item_entries: std::sync::atomic::AtomicBool::new(false),
            stats,
            #[cfg(feature = "metrics")]
            metrics: super::metrics::Metrics::new(&metrics_name),
        });
        inner.start_feed()?;
        #[cfg(feature = "metrics")]
        super::metrics::start_publishing(&inner);
        Ok(CachingStore { inner })
    }

    fn live_settings(&self) -> Result<Option<Live>> {
        let ttl = match (self.live, self.live_cache_time) {
            (false, None) => return Ok(None),
            (false, Some(_)) => {
                return Err(Error::config(
                    BACKEND,
                    "live_cache_time is for live mode: add invalidate_on_changes()",
                ));
            }
            (true, ttl) => ttl.unwrap_or(CachingStore::DEFAULT_LIVE_CACHE_TIME),
        };
        let CacheMode::Ttl(normal) = self.mode else {
            return Err(Error::config(
                BACKEND,
                "invalidate_on_changes() needs a cache time: it cannot be combined with no_caching() or cache_forever()",
            ));
        };
        if ttl < normal || ttl > MAX_CACHE_TIME {
            return Err(Error::config(
                BACKEND,
                format!(
                    "live_cache_time ({ttl:?}) must be at least the cache time ({normal:?}) and at most 100 years"
                ),
            ));
        }
        Ok(Some(Live::new(ttl)))
    }
}

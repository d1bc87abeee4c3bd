//! The TTL caching wrapper around any store.

mod builder;
mod entry;
mod items;
mod last_known_good;
mod live;
mod loads;
#[cfg(feature = "metrics")]
mod metrics;
mod outage;
mod sequence;
mod stats;
mod status;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_live;
#[cfg(all(test, feature = "metrics"))]
mod tests_metrics;
#[cfg(test)]
mod tests_monotonic;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use moka::future::Cache;
use tokio::sync::watch;

use crate::backend::StoredItems;
use crate::changes::ChangeFeed;
use crate::error::Operation;
use crate::{Collection, Error, Item, Kind, PersistentDataStore, Result};
use entry::{CacheKey, Cached, Entry, KeyRef, KindItems};
use items::ItemTable;
use last_known_good::Losses;
use live::Live;
use loads::Loads;
use outage::Pending;
use sequence::{Turn, WriteSequence};
use stats::Counters;

pub use builder::CachingStoreBuilder;
pub use stats::CacheStats;
pub use status::StoreStatus;

const BACKEND: &str = "cache";

/// How a [`CachingStore`] caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheMode {
    /// Entries live for this long, then the next read goes to the database.
    Ttl(Duration),
    /// No caching: every read goes to the database.
    Disabled,
    /// Entries never expire; the cache is the source of truth and is written back to the
    /// database after an outage.
    Forever,
}

/// Wraps any [`PersistentDataStore`] in an in-memory cache, the way the LaunchDarkly SDKs do.
///
/// - **TTL** (the default, 15 s): items, "not found" answers and whole-kind reads are cached for
///   the TTL; a cached whole kind also answers `get` for its keys (an `init` caches each kind
///   whole, one entry per kind). Concurrent misses on one key make one database read. Errors are never cached. A
///   successful upsert updates the item's entry and drops its kind's whole-kind entry. A failed
///   `init` empties the cache, so that nothing older is served as if the init had not happened.
/// - **Disabled** (`cache_time(Duration::ZERO)` or `no_caching()`): every read goes to the database.
/// - **Forever**: entries never expire and the cache is the source of truth. Upserts update the
///   whole-kind entry in place, so `get_all` keeps answering through an outage. A write that
///   fails still updates the cache. When the database recovers, the cache restores it: a
///   database that came back uninitialized (or whose init failed) is initialized from the cached
///   data set; otherwise every cached item is written back as an upsert, which restores lost
///   items without overwriting a newer version another writer stored meanwhile.
///
/// Two opt-in additions for readers of a database that other processes write (daemon mode):
///
/// - **Live** ([`invalidate_on_changes`](CachingStoreBuilder::invalidate_on_changes), TTL mode,
///   for stores with a [change feed](PersistentDataStore::changes): all in this workspace): entries live
///   for the long [`live_cache_time`](CachingStoreBuilder::live_cache_time) and are dropped as
///   soon as the feed reports a change, whoever made it. While the feed is down, entries live for
///   the normal cache time, and [`StoreStatus::live`] is `false`.
/// - **Last known good** ([`keep_last_known_good`](CachingStoreBuilder::keep_last_known_good)):
///   when the database suddenly loses data the cache holds, the cache keeps serving it and
///   reports [`StoreStatus::last_known_good`].
///
/// In every mode the cache never goes back in version: a read that started before a write
/// (an upsert, a delete, an init) never lands its older result over what the write cached, and
/// a read made after a write returns never shares a database read that began before it.
///
/// Fresh entries are served even while the database is down. The wrapper tracks the database's
/// health: see [`CachingStore::status`] and [`CachingStore::subscribe`]. After an outage in
/// TTL or disabled mode the status asks for a refresh ([`StoreStatus::refresh_needed`]).
///
/// ```
/// use std::time::Duration;
/// use flagstore::memory::MemoryStore;
/// use flagstore::{CachingStore, Item, Kind, PersistentDataStore};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let database = MemoryStore::new();
/// let store = CachingStore::builder(database.clone())
///     .cache_time(Duration::from_secs(30))
///     .build()?;
///
/// let flag = Item::from_json("beta", r#"{"key":"beta","version":1,"on":true}"#)?;
/// store.upsert(&Kind::FEATURES, flag).await?;
///
/// // While the entry is fresh, reads never reach the database, even if it is down.
/// database.database().set_available(false);
/// let cached = store.get(&Kind::FEATURES, "beta").await?.expect("cached");
/// assert_eq!(cached.version(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct CachingStore {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn PersistentDataStore>,
    mode: CacheMode,
    cache: Option<Cache<CacheKey, Entry>>,
    /// Forever mode without a capacity: the single items' entries, which need none of moka's
    /// bookkeeping (see [`items`]); whole-kind entries stay in `cache`.
    items: Option<ItemTable>,
    /// When the store was built: the read time every entry of `items` shows.
    built: tokio::time::Instant,
    /// Whether the cache has a capacity, which a whole kind may not fit in.
    bounded: bool,
    inited: Mutex<Inited>,
    status: watch::Sender<StoreStatus>,
    poll_interval: Duration,
    /// Forever mode: writes the database has not accepted yet.
    pending: Mutex<Pending>,
    /// Live mode: the change feed's state.
    live: Option<Live>,
    /// Whether last-known-good mode is on, and what the database lost.
    last_known_good: bool,
    losses: Mutex<Losses>,
    /// Orders the cache changes of writes against the inserts of loads (monotonic versions).
    writes: WriteSequence,
    /// Loads under way, shared by concurrent misses.
    loads: Loads,
    /// Whether an item's own entry was ever cached (beside whole-kind entries).
    item_entries: AtomicBool,
    /// Hits, misses, loads and evictions, for [`CachingStore::stats`].
    stats: Arc<Counters>,
    #[cfg(feature = "metrics")]
    metrics: metrics::Metrics,
}

/// Whether the store is known to be initialized. Only "yes" is remembered: initialized stays
/// initialized, while a "no" may change at any moment when another process writes the store
/// (a daemon-mode reader waiting for its first data must see it at once).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Inited {
    Unknown,
    Yes,
}

/// What [`Inner::lookup`] found for a key: an entry, whether it is the answer of the kind's
/// whole-kind entry rather than the key's own, and whether it may be served (judged once, as
/// it was found).
struct Found {
    entry: Entry,
    whole: bool,
    fresh: bool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a single assignment, take or merge; poison cannot leave a
    // torn value.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl CachingStore {
    /// The SDKs' default cache time.
    pub const DEFAULT_CACHE_TIME: Duration = Duration::from_secs(15);

    /// How long entries live in live mode when no
    /// [`live_cache_time`](CachingStoreBuilder::live_cache_time) is given: the safety net for a
    /// change the feed missed.
    pub const DEFAULT_LIVE_CACHE_TIME: Duration = Duration::from_secs(300);

    /// A builder wrapping `store`, with the default 15-second TTL. For a store already behind an
    /// `Arc` (a [`DynStore`](crate::DynStore)), use [`CachingStoreBuilder::from_arc`].
    pub fn builder(store: impl PersistentDataStore) -> CachingStoreBuilder {
        CachingStoreBuilder::from_arc(Arc::new(store))
    }

    /// How this store caches.
    pub fn mode(&self) -> CacheMode {
        self.inner.mode
    }

    /// The wrapped store.
    pub fn inner_store(&self) -> &Arc<dyn PersistentDataStore> {
        &self.inner.store
    }

    /// The database's health as last observed.
    pub fn status(&self) -> StoreStatus {
        *self.inner.status.borrow()
    }

    /// A receiver that wakes on every status change.
    ///
    /// ```
    /// # use flagstore::memory::MemoryStore;
    /// # use flagstore::CachingStore;
    /// # let store = CachingStore::builder(MemoryStore::new()).build().unwrap();
    /// let mut status = store.subscribe();
    /// assert!(status.borrow_and_update().available);
    /// // later, in a task: while status.changed().await.is_ok() { ... }
    /// ```
    pub fn subscribe(&self) -> watch::Receiver<StoreStatus> {
        self.inner.status.subscribe()
    }

    /// [`PersistentDataStore::get`], callable without the trait: a cache hit then costs no
    /// boxed future, which is most of what a hit costs beyond the cache lookup itself.
    pub async fn get(&self, kind: &Kind, key: &str) -> Result<Option<Item>> {
        let inner = &self.inner;
        let Some(cache) = &inner.cache else {
            let result = inner
                .uncached(Operation::Get, inner.store.get(kind, key))
                .await;
            return inner.remember(result);
        };
        let load = || async move {
            let read = inner.timed(Operation::Get, inner.store.get(kind, key));
            read.await.map(Cached::Item)
        };
        match inner.cached(cache, KeyRef::Item(kind, key), load).await? {
            Cached::Item(item) => Ok(item),
            Cached::All(_) => unreachable_entry(kind, Some(key)),
        }
    }

    /// Drops every cached entry (not the writes awaiting write-back). Reads already under way
    /// do not cache what they read.
    pub async fn invalidate_all(&self) {
        self.inner.flush().await;
    }

    /// How the cache has served reads since it was built: hits, misses, database loads and
    /// their time, evictions, and the entries held now (after pending evictions are applied).
    /// Always counted; it costs a hit about one uncontended atomic add. With the `metrics`
    /// feature the same figures go to the metrics recorder every second and on this call.
    pub async fn stats(&self) -> CacheStats {
        let (entries, _) = self.cache_usage().await;
        #[cfg(feature = "metrics")]
        self.inner.publish_metrics();
        self.inner.stats.snapshot(entries)
    }

    /// Cached entries and their approximate weight in bytes, after pending evictions are applied.
    pub async fn cache_usage(&self) -> (u64, u64) {
        match &self.inner.cache {
            Some(cache) => {
                cache.run_pending_tasks().await;
                let (items, weight) = self.inner.items.as_ref().map_or((0, 0), ItemTable::usage);
                (cache.entry_count() + items, cache.weighted_size() + weight)
            }
            None => (0, 0),
        }
    }
}

impl Inner {
    /// Whether `entry`, of `kind`, may be served.
    fn is_fresh(&self, kind: &Kind, entry: &Entry) -> bool {
        match (self.mode, &self.live) {
            (CacheMode::Ttl(ttl), None) => entry.loaded_at.elapsed() < ttl,
            (CacheMode::Ttl(ttl), Some(live)) => {
                let ttl = if live.connected() { live.ttl } else { ttl };
                entry.generation == live.generation(kind) && entry.loaded_at.elapsed() < ttl
            }
            (CacheMode::Forever, _) => true,
            (CacheMode::Disabled, _) => false,
        }
    }

    /// A read with no cache to answer it (caching disabled): a miss and a load.
    async fn uncached<T>(
        &self,
        operation: Operation,
        read: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        self.stats.misses.add(1);
        let started = std::time::Instant::now();
        let result = self.timed(operation, read).await;
        self.stats.loaded(result.is_ok(), started.elapsed());
        result
    }

    /// One call to the wrapped store, timed for the `metrics` feature's
    /// `flagstore_store_operation_duration_seconds`.
    async fn timed<T>(
        &self,
        operation: Operation,
        call: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        self.timed_as(operation, call, |_| false).await
    }

    /// [`timed`](Self::timed), with `not_updated` telling the answers that wrote nothing (an
    /// upsert's `false`).
    #[cfg(feature = "metrics")]
    async fn timed_as<T>(
        &self,
        operation: Operation,
        call: impl Future<Output = Result<T>>,
        not_updated: fn(&T) -> bool,
    ) -> Result<T> {
        let started = std::time::Instant::now();
        let result = call.await;
        let outcome = match &result {
            Err(_) => metrics::Outcome::Error,
            Ok(answer) if not_updated(answer) => metrics::Outcome::NotUpdated,
            Ok(_) => metrics::Outcome::Ok,
        };
        self.metrics
            .operation(operation, outcome, started.elapsed());
        result
    }

    #[cfg(not(feature = "metrics"))]
    async fn timed_as<T>(
        &self,
        _operation: Operation,
        call: impl Future<Output = Result<T>>,
        _not_updated: fn(&T) -> bool,
    ) -> Result<T> {
        call.await
    }

    /// Publishes the counters and the status to the metrics recorder.
    #[cfg(feature = "metrics")]
    fn publish_metrics(&self) {
        let entries = self.cache.as_ref().map_or(0, Cache::entry_count)
            + self.items.as_ref().map_or(0, ItemTable::len);
        self.metrics.publish(&self.stats, entries);
        self.metrics.available(self.status.borrow().available);
    }

    /// Live mode: the generation of `kind`'s entries (see [`live`]); 0 otherwise.
    fn generation(&self, kind: &Kind) -> u64 {
        self.live.as_ref().map_or(0, |live| live.generation(kind))
    }

    /// An entry of `kind` holding `value`, read now.
    fn entry(&self, kind: &Kind, value: Cached) -> Entry {
        Entry::new(value, self.generation(kind))
    }

    /// Whether a stale entry is re-validated with its kind (live mode) rather than re-read
    /// alone. Not with last-known-good, which compares each answer with what it replaces.
    fn revalidates(&self) -> bool {
        self.live.is_some() && !self.last_known_good
    }

    async fn flush(&self) {
        if let Some(cache) = &self.cache {
            let _turn = self.writes.write(None).await;
            self.invalidate_everything(cache);
        }
        *lock(&self.inited) = Inited::Unknown;
    }

    /// A cached value, loading it (once, however many callers ask at the same time) if it is
    /// missing or stale. Failed loads are handed to every waiting caller and never cached.
    async fn cached<L, F>(
        self: &Arc<Self>,
        cache: &Cache<CacheKey, Entry>,
        key: KeyRef<'_>,
        load: L,
    ) -> Result<Cached>
    where
        L: FnOnce() -> F,
        F: Future<Output = Result<Cached>> + Send,
    {
        let mut previous = None;
        if let Some(found) = self.lookup(cache, key).await {
            if found.fresh {
                self.stats.hits.add(1);
                return Ok(found.entry.value);
            }
            previous = Some(found);
        }
        self.stats.misses.add(1);
        // Boxed: a miss's future state is kilobytes, which every hit would otherwise carry.
        Box::pin(async move {
            if let (KeyRef::Item(kind, _), Some(found)) = (key, &previous)
                && self.revalidates()
            {
                if found.whole {
                    self.reload_kind(cache, kind).await;
                } else {
                    self.revalidate(cache, kind).await;
                }
                if let Some(now) = self.lookup(cache, key).await
                    && now.fresh
                {
                    return Ok(now.entry.value);
                }
            }
            let previous = previous.map(|found| found.entry.value);
            self.load(cache, key, previous, load).await
        })
        .await
    }

    /// Live mode: refreshes `kind`'s stale whole-kind entry with one read, which then answers
    /// every item of the kind. Its failure caches nothing; the caller reads its own key.
    async fn reload_kind(self: &Arc<Self>, cache: &Cache<CacheKey, Entry>, kind: &Kind) {
        let load = || async move {
            let read = self.timed(Operation::GetAll, self.store.get_all(kind));
            read.await.map(Cached::all)
        };
        let previous = cache.get(&KeyRef::All(kind)).await.map(|all| all.value);
        let _ = self.load(cache, KeyRef::All(kind), previous, load).await;
    }

    /// What the cache holds for `key`, fresh or not. An item's own entry comes first while
    /// fresh; otherwise its kind's fresh whole-kind entry answers (a whole-kind read is cached
    /// only over item entries that agree with it, so it is never older), then whatever is held.
    async fn lookup(&self, cache: &Cache<CacheKey, Entry>, key: KeyRef<'_>) -> Option<Found> {
        let kind = key.kind();
        let found = |entry: Entry, whole: bool| Found {
            fresh: self.is_fresh(kind, &entry),
            entry,
            whole,
        };
        let KeyRef::Item(_, item_key) = key else {
            return cache.get(&key).await.map(|entry| found(entry, false));
        };
        let own = self
            .own_entry(cache, kind, item_key)
            .await
            .map(|entry| found(entry, false));
        if own.as_ref().is_some_and(|own| own.fresh) {
            return own;
        }
        let all = cache.get(&KeyRef::All(kind)).await;
        let whole = all
            .and_then(|all| all.for_item(item_key))
            .map(|entry| found(entry, true));
        match (own, whole) {
            (_, Some(whole)) if whole.fresh => Some(whole),
            (Some(own), _) => Some(own),
            (None, whole) => whole,
        }
    }

    /// The miss (or stale entry) half of [`cached`](Self::cached): one database read however
    /// many callers ask, cached only if no write to the kind was made while it ran.
    async fn load<L, F>(
        self: &Arc<Self>,
        cache: &Cache<CacheKey, Entry>,
        key: KeyRef<'_>,
        previous: Option<Cached>,
        load: L,
    ) -> Result<Cached>
    where
        L: FnOnce() -> F,
        F: Future<Output = Result<Cached>> + Send,
    {
        let kind = key.kind();
        let shared = self
            .loads
            .join(key, self.writes.last_write(kind), self.writes.stamp());
        let result = shared
            .get_or_init(|| async move {
                // Both taken before the read: a write or a reported change while it runs makes
                // the result unfit to cache, or stale.
                let stamp = self.writes.stamp();
                let generation = self.generation(kind);
                // A load that finished between this caller's miss and its joining has cached
                // its value already: no second read for it.
                if let Some(found) = self.lookup(cache, key).await
                    && found.fresh
                {
                    return Ok(found.entry.value);
                }
                let started = std::time::Instant::now();
                let loaded = load().await;
                self.stats.loaded(loaded.is_ok(), started.elapsed());
                let mut value = loaded?;
                if self.last_known_good {
                    value = self.or_last_known_good(kind, previous, value).await;
                }
                if let Some(_turn) = self.writes.publish(kind, stamp).await {
                    // A load's entry keeps the generation its read started at, so it is
                    // inserted here rather than through `insert_item`.
                    if let Cached::All(all) = &value {
                        self.supersede_item_entries(cache, kind, all).await;
                    } else {
                        self.item_entries.store(true, Ordering::Relaxed);
                    }
                    let entry = Entry::new(value.clone(), generation);
                    match key {
                        KeyRef::Item(kind, key) => self.put_own(cache, kind, key, entry).await,
                        KeyRef::All(_) => cache.insert(key.owned(), entry).await,
                    }
                }
                Ok(value)
            })
            .await
            .clone();
        self.loads.finish(key, &shared);
        if let Err(err) = &result {
            self.observe(err);
        }
        #[cfg(feature = "metrics")]
        if !self.metrics.is_periodic() {
            self.publish_metrics();
        }
        result
    }

    /// Before a whole-kind read is cached: drops every item entry of the kind that shows another
    /// version than the read found. The read is newer (no write to the kind came while it ran),
    /// so such an entry is older, and a `get` after this `get_all` must not go back to it.
    /// Costs a lookup per item, and nothing while no item entry was ever cached.
    async fn supersede_item_entries(
        &self,
        cache: &Cache<CacheKey, Entry>,
        kind: &Kind,
        all: &KindItems,
    ) {
        if !self.item_entries.load(Ordering::Relaxed) {
            return;
        }
        for item in all.items() {
            let Some(entry) = self.own_entry(cache, kind, item.key()).await else {
                continue;
            };
            let same = match &entry.value {
                Cached::Item(Some(own)) => {
                    own.version() == item.version() && own.is_deleted() == item.is_deleted()
                }
                _ => false,
            };
            if !same {
                self.drop_own(cache, kind, item.key()).await;
            }
        }
    }

    /// Fills the cache with a full data set: a whole-kind entry per kind the init replaced
    /// (flags and segments always, empty if the data has none), which also answers `get`. A
    /// cache with a capacity also gets an entry per item, in case a whole kind does not fit.
    async fn fill(&self, data: &[Collection]) {
        let Some(cache) = &self.cache else { return };
        let _turn = self.writes.write(None).await;
        self.invalidate_everything(cache);
        for kind in crate::backend::replaced_kinds(data) {
            let items: Vec<Item> = data
                .iter()
                .filter(|c| &c.kind == kind)
                .flat_map(|c| c.items.iter().cloned())
                .collect();
            if self.bounded {
                for item in &items {
                    self.insert_item(cache, kind, item.clone()).await;
                }
            }
            let all = self.entry(kind, Cached::all(items));
            cache.insert(CacheKey::All(kind.clone()), all).await;
        }
    }

    /// Caches `item` in an entry of its own, read now. Every such entry but a load's goes
    /// through here, so that [`supersede_item_entries`](Self::supersede_item_entries) knows
    /// there may be some.
    async fn insert_item(&self, cache: &Cache<CacheKey, Entry>, kind: &Kind, item: Item) {
        self.item_entries.store(true, Ordering::Relaxed);
        let entry = self.entry(kind, Cached::Item(Some(item.clone())));
        self.put_own(cache, kind, item.key(), entry).await;
    }

    /// `key`'s own entry (not its kind's whole-kind entry), fresh or not.
    async fn own_entry(
        &self,
        cache: &Cache<CacheKey, Entry>,
        kind: &Kind,
        key: &str,
    ) -> Option<Entry> {
        match &self.items {
            Some(items) => items.get(kind, key).map(|value| Entry {
                loaded_at: self.built,
                generation: 0,
                value: Cached::Item(value),
            }),
            None => cache.get(&KeyRef::Item(kind, key)).await,
        }
    }

    /// Makes `entry` (an item's) `key`'s own entry.
    async fn put_own(&self, cache: &Cache<CacheKey, Entry>, kind: &Kind, key: &str, entry: Entry) {
        match (&self.items, entry.value) {
            (Some(items), Cached::Item(value)) => items.insert(kind, key, value),
            (_, value) => {
                let entry = Entry { value, ..entry };
                cache.insert(CacheKey::item(kind, key), entry).await;
            }
        }
    }

    /// Drops `key`'s own entry.
    async fn drop_own(&self, cache: &Cache<CacheKey, Entry>, kind: &Kind, key: &str) {
        match &self.items {
            Some(items) => items.remove(kind, key),
            None => cache.invalidate(&KeyRef::Item(kind, key)).await,
        }
    }

    /// Drops every entry. The caller holds the write turn.
    fn invalidate_everything(&self, cache: &Cache<CacheKey, Entry>) {
        cache.invalidate_all();
        if let Some(items) = &self.items {
            items.clear();
        }
    }

    /// The version the cache shows for `key`: its own entry's, else its kind's whole-kind
    /// entry's; `None` for "not found" or nothing cached.
    async fn cached_version(
        &self,
        cache: &Cache<CacheKey, Entry>,
        kind: &Kind,
        key: &str,
    ) -> Option<u64> {
        match self
            .lookup(cache, KeyRef::Item(kind, key))
            .await?
            .entry
            .value
        {
            Cached::Item(item) => item.map(|item| item.version()),
            Cached::All(_) => None,
        }
    }

    /// Forever mode: makes the cache show `item` (its own entry, and in place in the whole-kind
    /// entry if that is cached) unless it already shows a version at least as new, which a
    /// concurrent write put there. The caller holds the write turn.
    async fn show(
        &self,
        _turn: &Turn<'_>,
        cache: &Cache<CacheKey, Entry>,
        kind: &Kind,
        item: &Item,
    ) {
        if self
            .cached_version(cache, kind, item.key())
            .await
            .is_some_and(|cached| cached >= item.version())
        {
            return;
        }
        self.insert_item(cache, kind, item.clone()).await;
        let all_key = CacheKey::All(kind.clone());
        if let Some(Cached::All(all)) = cache.get(&all_key).await.map(|e| e.value) {
            let all = self.entry(kind, Cached::All(Arc::new(all.replaced(item))));
            cache.insert(all_key, all).await;
        }
    }

    /// TTL mode, after the database took `item`: caches it and drops the kind's whole-kind
    /// entry. If the cache already shows a newer version (a concurrent upsert's), the item's
    /// entry is dropped instead, so the next read asks the database.
    async fn cache_written(&self, cache: &Cache<CacheKey, Entry>, kind: &Kind, item: Item) {
        let _turn = self.writes.write(Some(kind)).await;
        let newer = self
            .cached_version(cache, kind, item.key())
            .await
            .is_some_and(|cached| cached > item.version());
        if newer {
            self.drop_own(cache, kind, item.key()).await;
        } else {
            self.insert_item(cache, kind, item).await;
        }
        cache.invalidate(&KeyRef::All(kind)).await;
    }

    /// Drops what the cache holds for `key` and its kind's whole-kind entry.
    async fn forget(&self, cache: &Cache<CacheKey, Entry>, kind: &Kind, key: &str) {
        let _turn = self.writes.write(Some(kind)).await;
        self.drop_own(cache, kind, key).await;
        cache.invalidate(&KeyRef::All(kind)).await;
    }

    /// Forever mode, after the database refused an upsert as not newer: caches what it holds,
    /// unless a write to the kind was cached while it was read.
    async fn refresh_item(&self, cache: &Cache<CacheKey, Entry>, kind: &Kind, key: &str) {
        let stamp = self.writes.stamp();
        match self.store.get(kind, key).await {
            Ok(Some(current)) => {
                if let Some(turn) = self.writes.write_unless_written_since(kind, stamp).await {
                    self.show(&turn, cache, kind, &current).await;
                }
            }
            _ => self.forget(cache, kind, key).await,
        }
    }
}

impl fmt::Debug for CachingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CachingStore")
            .field("store", &self.inner.store)
            .field("mode", &self.inner.mode)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl fmt::Display for CachingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.inner.mode {
            CacheMode::Ttl(ttl) => match &self.inner.live {
                Some(live) => write!(
                    f,
                    "{} (cached until changed, at most {:?}; {ttl:?} while the change feed is down)",
                    self.inner.store, live.ttl
                ),
                None => write!(f, "{} (cached for {ttl:?})", self.inner.store),
            },
            CacheMode::Disabled => write!(f, "{} (uncached)", self.inner.store),
            CacheMode::Forever => write!(f, "{} (cached forever)", self.inner.store),
        }
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl PersistentDataStore for CachingStore {
    /// The wrapped store's.
    fn backend(&self) -> &'static str {
        self.inner.store.backend()
    }

    async fn init(&self, data: &[Collection]) -> Result<()> {
        let inner = &self.inner;
        let result = inner.timed(Operation::Init, inner.store.init(data)).await;
        match (&result, inner.mode) {
            (Ok(()), _) => {
                inner.fill(data).await;
                inner.forget_losses();
                *lock(&inner.inited) = Inited::Yes;
                // A successful init supersedes anything still waiting to be written back.
                *lock(&inner.pending) = Pending::default();
            }
            (Err(err), CacheMode::Forever) if err.is_outage() => {
                inner.fill(data).await;
                *lock(&inner.inited) = Inited::Yes;
                *lock(&inner.pending) = Pending {
                    init_failed: true,
                    ..Pending::default()
                };
            }
            // The database may hold part of the new data, or none of it: whatever is cached no
            // longer says what it holds.
            (Err(_), _) => inner.flush().await,
        }
        inner.remember(result)
    }

    async fn get(&self, kind: &Kind, key: &str) -> Result<Option<Item>> {
        CachingStore::get(self, kind, key).await
    }

    async fn get_all(&self, kind: &Kind) -> Result<Vec<Item>> {
        let inner = &self.inner;
        let Some(cache) = &inner.cache else {
            let result = inner
                .uncached(Operation::GetAll, inner.store.get_all(kind))
                .await;
            return inner.remember(result);
        };
        let load = || async move {
            let read = inner.timed(Operation::GetAll, inner.store.get_all(kind));
            read.await.map(Cached::all)
        };
        match inner.cached(cache, KeyRef::All(kind), load).await? {
            Cached::All(all) => Ok(all.items().to_vec()),
            Cached::Item(_) => unreachable_entry(kind, None),
        }
    }

    /// Each key through the cache, as [`get`](CachingStore::get) answers it.
    async fn get_many(&self, kind: &Kind, keys: &[&str]) -> Result<Vec<Option<Item>>> {
        let mut items = Vec::with_capacity(keys.len());
        for key in keys {
            items.push(CachingStore::get(self, kind, key).await?);
        }
        Ok(items)
    }

    /// Always reads the database: callers want to know what it holds, unreadable values included.
    async fn get_all_checked(&self, kind: &Kind) -> Result<StoredItems> {
        let inner = &self.inner;
        inner.remember(inner.store.get_all_checked(kind).await)
    }

    /// Always the wrapped store's pages, as `get_all_checked` reads the database.
    fn pages<'a>(&'a self, kind: &'a Kind) -> crate::backend::Pages<'a> {
        self.inner.store.pages(kind)
    }

    async fn upsert(&self, kind: &Kind, item: Item) -> Result<bool> {
        let inner = &self.inner;
        let forever = inner.mode == CacheMode::Forever;
        let upsert = inner.store.upsert(kind, item.clone());
        let result = inner
            .timed_as(Operation::Upsert, upsert, |written| !written)
            .await;
        let Some(cache) = &inner.cache else {
            return inner.remember(result);
        };
        match (&result, forever) {
            (Ok(true), true) => {
                let turn = inner.writes.write(Some(kind)).await;
                inner.show(&turn, cache, kind, &item).await;
            }
            (Ok(true), false) => inner.cache_written(cache, kind, item).await,
            // The database holds something at least as new.
            (Ok(false), true) => inner.refresh_item(cache, kind, item.key()).await,
            (Ok(false), false) => inner.forget(cache, kind, item.key()).await,
            (Err(err), true) if err.is_outage() => {
                let turn = inner.writes.write(Some(kind)).await;
                inner.show(&turn, cache, kind, &item).await;
                lock(&inner.pending).add_item(kind, &item);
            }
            (Err(_), _) => {}
        }
        inner.remember(result)
    }

    async fn is_initialized(&self) -> Result<bool> {
        let inner = &self.inner;
        if *lock(&inner.inited) == Inited::Yes {
            return Ok(true);
        }
        let answer = inner.timed(Operation::IsInitialized, inner.store.is_initialized());
        let answer = inner.remember(answer.await)?;
        if answer {
            *lock(&inner.inited) = Inited::Yes;
        }
        Ok(answer)
    }

    async fn is_available(&self) -> bool {
        self.inner.store.is_available().await
    }

    /// The wrapped store's feed.
    fn changes(&self) -> Option<ChangeFeed> {
        self.inner.store.changes()
    }

    /// The wrapped store's limit.
    fn item_limit(&self) -> Option<crate::backend::ItemLimit> {
        self.inner.store.item_limit()
    }
}

/// Keys and values are paired by construction (`Item` keys hold `Item` values); reaching this
/// means a bug in this module, reported as an error rather than a panic.
fn unreachable_entry<T>(kind: &Kind, key: Option<&str>) -> Result<T> {
    Err(Error::database(
        BACKEND,
        if key.is_some() {
            crate::error::Operation::Get
        } else {
            crate::error::Operation::GetAll
        },
        "internal error: cache entry of the wrong shape",
    )
    .on(kind, key))
}

//! The TTL caching wrapper around any store.

mod status;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use async_trait::async_trait;
use moka::future::Cache;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::{Collection, Error, Item, Kind, PersistentDataStore, Result};

pub use status::StoreStatus;

/// The SDKs' default cache time.
pub const DEFAULT_CACHE_TIME: Duration = Duration::from_secs(15);

/// Longest TTL accepted; anything longer is a mistake for [`CachingStoreBuilder::cache_forever`]
/// (and moka refuses TTLs over 1000 years).
const MAX_CACHE_TIME: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(500);
const MAX_POLL_INTERVAL: Duration = Duration::from_secs(10);

const BACKEND: &str = "cache";

/// How a [`CachingStore`] caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheMode {
    /// Entries live for this long, then the next read goes to the database.
    Ttl(Duration),
    /// No caching: every read goes to the database.
    Disabled,
    /// Entries never expire; failed writes are kept and written back when the database returns.
    Forever,
}

/// Wraps any [`PersistentDataStore`] in an in-memory cache, the way the LaunchDarkly SDKs do.
///
/// - **TTL** (the default, 15 s): items, "not found" answers and whole-kind reads are cached for
///   the TTL. Concurrent misses on one key make one database read. Errors are never cached. A
///   successful upsert updates the item's entry and drops its kind's whole-kind entry.
/// - **Disabled** (`cache_time(Duration::ZERO)` or `no_caching()`): every read goes to the database.
/// - **Forever**: entries never expire. A write that fails still updates the cache and is written
///   back when the database recovers, so this process's view survives an outage intact.
///
/// Fresh entries are served even while the database is down. The wrapper tracks the database's
/// health: see [`CachingStore::status`] and [`CachingStore::subscribe`].
///
/// ```
/// use std::time::Duration;
/// use flagstore::{CachingStore, Item, Kind, MemoryStore, PersistentDataStore};
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
    /// Caches entries for `ttl`; `Duration::ZERO` turns caching off. The default is 15 seconds.
    pub fn cache_time(mut self, ttl: Duration) -> Self {
        self.mode = if ttl.is_zero() {
            CacheMode::Disabled
        } else {
            CacheMode::Ttl(ttl)
        };
        self
    }

    /// Keeps entries until they are replaced, and writes back what failed to reach the database
    /// once it recovers. For a process that is the source of truth for its store.
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
    /// first. Unbounded by default. Evicted entries are simply read again; in forever mode,
    /// writes awaiting write-back are kept outside the cache and are never evicted.
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

struct Inner {
    store: Arc<dyn PersistentDataStore>,
    mode: CacheMode,
    cache: Option<Cache<CacheKey, Entry>>,
    inited: Mutex<Inited>,
    status: watch::Sender<StoreStatus>,
    poll_interval: Duration,
    /// Forever mode: writes the database has not accepted yet.
    pending: Mutex<Pending>,
}

/// Whether the store is known to be initialized. Only "yes" is remembered: initialized stays
/// initialized, while a "no" may change at any moment when another process writes the store
/// (a daemon-mode reader waiting for its first data must see it at once).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Inited {
    Unknown,
    Yes,
}

#[derive(Default)]
struct Pending {
    init: Option<Vec<Collection>>,
    items: HashMap<(Kind, String), Item>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.init.is_none() && self.items.is_empty()
    }

    fn add_item(&mut self, kind: &Kind, item: &Item) {
        let slot = self.items.entry((kind.clone(), item.key().to_owned()));
        slot.and_modify(|old| {
            if old.version() < item.version() {
                *old = item.clone();
            }
        })
        .or_insert_with(|| item.clone());
    }
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum CacheKey {
    Item(Kind, String),
    All(Kind),
}

impl CacheKey {
    fn weight(&self) -> usize {
        match self {
            CacheKey::Item(kind, key) => kind.name().len() + key.len(),
            CacheKey::All(kind) => kind.name().len(),
        }
    }
}

#[derive(Clone)]
struct Entry {
    loaded_at: Instant,
    value: Cached,
}

#[derive(Clone)]
enum Cached {
    Item(Option<Item>),
    All(Arc<Vec<Item>>),
}

impl Cached {
    fn weight(&self) -> usize {
        // Approximate overhead of an entry besides its JSON and keys.
        const ENTRY_OVERHEAD: usize = 64;
        ENTRY_OVERHEAD
            + match self {
                Cached::Item(item) => item.as_ref().map_or(0, |i| i.key().len() + i.len()),
                Cached::All(items) => items.iter().map(|i| i.key().len() + i.len()).sum(),
            }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a single assignment or take; poison cannot leave a torn value.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl CachingStore {
    /// A builder wrapping `store`, with the default 15-second TTL.
    pub fn builder(store: impl PersistentDataStore) -> CachingStoreBuilder {
        Self::builder_for(Arc::new(store))
    }

    /// Like [`builder`](Self::builder), for a store already behind an `Arc`.
    pub fn builder_for(store: Arc<dyn PersistentDataStore>) -> CachingStoreBuilder {
        CachingStoreBuilder {
            store,
            mode: CacheMode::Ttl(DEFAULT_CACHE_TIME),
            capacity_bytes: None,
            poll_interval: DEFAULT_POLL_INTERVAL,
        }
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
    /// # use flagstore::{CachingStore, MemoryStore};
    /// # let store = CachingStore::builder(MemoryStore::new()).build().unwrap();
    /// let mut status = store.subscribe();
    /// assert!(status.borrow_and_update().available);
    /// // later, in a task: while status.changed().await.is_ok() { ... }
    /// ```
    pub fn subscribe(&self) -> watch::Receiver<StoreStatus> {
        self.inner.status.subscribe()
    }

    /// Drops every cached entry (not the writes awaiting write-back).
    pub fn invalidate_all(&self) {
        if let Some(cache) = &self.inner.cache {
            cache.invalidate_all();
        }
        *lock(&self.inner.inited) = Inited::Unknown;
    }

    /// Cached entries and their approximate weight in bytes, after pending evictions are applied.
    pub async fn cache_usage(&self) -> (u64, u64) {
        match &self.inner.cache {
            Some(cache) => {
                cache.run_pending_tasks().await;
                (cache.entry_count(), cache.weighted_size())
            }
            None => (0, 0),
        }
    }
}

impl Inner {
    fn is_fresh(&self, entry: &Entry) -> bool {
        match self.mode {
            CacheMode::Ttl(ttl) => entry.loaded_at.elapsed() < ttl,
            CacheMode::Forever => true,
            CacheMode::Disabled => false,
        }
    }

    /// A cached value, loading it (once, however many callers ask at the same time) if it is
    /// missing or stale. Failed loads are handed to every waiting caller and never cached.
    async fn cached<F>(
        self: &Arc<Self>,
        cache: &Cache<CacheKey, Entry>,
        key: CacheKey,
        load: F,
    ) -> Result<Cached>
    where
        F: Future<Output = Result<Cached>> + Send,
    {
        if let Some(entry) = cache.get(&key).await {
            if self.is_fresh(&entry) {
                return Ok(entry.value);
            }
            cache.invalidate(&key).await;
        }
        let loaded = cache
            .try_get_with(key, async move {
                load.await.map(|value| Entry {
                    loaded_at: Instant::now(),
                    value,
                })
            })
            .await;
        match loaded {
            Ok(entry) => Ok(entry.value),
            Err(shared) => {
                let err = Error::clone(&shared);
                self.observe(&err);
                Err(err)
            }
        }
    }

    /// Notes an error: an outage marks the store unavailable and starts the health poll.
    fn observe(self: &Arc<Self>, err: &Error) {
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

    fn remember<T>(self: &Arc<Self>, result: Result<T>) -> Result<T> {
        if let Err(err) = &result {
            self.observe(err);
        }
        result
    }

    async fn fill(&self, data: &[Collection]) {
        let Some(cache) = &self.cache else { return };
        cache.invalidate_all();
        let now = Instant::now();
        for collection in data {
            for item in &collection.items {
                let key = CacheKey::Item(collection.kind.clone(), item.key().to_owned());
                cache
                    .insert(
                        key,
                        Entry {
                            loaded_at: now,
                            value: Cached::Item(Some(item.clone())),
                        },
                    )
                    .await;
            }
            let all = Cached::All(Arc::new(collection.items.clone()));
            cache
                .insert(
                    CacheKey::All(collection.kind.clone()),
                    Entry {
                        loaded_at: now,
                        value: all,
                    },
                )
                .await;
        }
    }

    /// Forever mode: makes the cache show `item` even though the database has not taken it.
    async fn keep_unwritten(&self, kind: &Kind, item: &Item) {
        let Some(cache) = &self.cache else { return };
        let item_key = CacheKey::Item(kind.clone(), item.key().to_owned());
        let newer = match cache.get(&item_key).await.map(|e| e.value) {
            Some(Cached::Item(Some(cached))) => cached.version() < item.version(),
            _ => true,
        };
        if !newer {
            return;
        }
        let now = Instant::now();
        cache
            .insert(
                item_key,
                Entry {
                    loaded_at: now,
                    value: Cached::Item(Some(item.clone())),
                },
            )
            .await;
        let all_key = CacheKey::All(kind.clone());
        if let Some(Cached::All(items)) = cache.get(&all_key).await.map(|e| e.value) {
            let mut items = Vec::clone(&items);
            match items.iter_mut().find(|i| i.key() == item.key()) {
                Some(slot) => *slot = item.clone(),
                None => items.push(item.clone()),
            }
            cache
                .insert(
                    all_key,
                    Entry {
                        loaded_at: now,
                        value: Cached::All(Arc::new(items)),
                    },
                )
                .await;
        }
    }

    /// Forever mode: writes what the database missed during the outage. A failed init is
    /// repeated whole; failed upserts are replayed as upserts, so a newer version another writer
    /// stored meanwhile still wins.
    async fn write_back(&self) -> Result<()> {
        let pending = std::mem::take(&mut *lock(&self.pending));
        if pending.is_empty() {
            return Ok(());
        }
        let mut remaining = pending;
        if let Some(data) = remaining.init.take()
            && let Err(err) = self.store.init(&data).await
        {
            remaining.init = Some(data);
            self.requeue(remaining);
            return Err(err);
        }
        let items: Vec<_> = remaining.items.drain().collect();
        let mut items = items.into_iter();
        while let Some(((kind, key), item)) = items.next() {
            if let Err(err) = self.store.upsert(&kind, item.clone()).await {
                remaining.items.insert((kind, key), item);
                remaining.items.extend(items);
                self.requeue(remaining);
                return Err(err);
            }
        }
        tracing::info!(store = %self.store, "wrote cached data back to the recovered store");
        Ok(())
    }

    fn requeue(&self, failed: Pending) {
        let mut pending = lock(&self.pending);
        if pending.init.is_none() {
            pending.init = failed.init;
        }
        for ((kind, _), item) in &failed.items {
            pending.add_item(kind, item);
        }
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
        let forever = inner.mode == CacheMode::Forever;
        if forever && let Err(err) = inner.write_back().await {
            tracing::warn!(store = %inner.store, error = %err, "write-back failed; retrying");
            continue;
        }
        tracing::info!(store = %inner.store, "store available again");
        inner.status.send_replace(StoreStatus {
            available: true,
            refresh_needed: !forever,
        });
        return;
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
            CacheMode::Ttl(ttl) => write!(f, "{} (cached for {ttl:?})", self.inner.store),
            CacheMode::Disabled => write!(f, "{} (uncached)", self.inner.store),
            CacheMode::Forever => write!(f, "{} (cached forever)", self.inner.store),
        }
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl PersistentDataStore for CachingStore {
    async fn init(&self, data: &[Collection]) -> Result<()> {
        let inner = &self.inner;
        let result = inner.store.init(data).await;
        match (&result, inner.mode) {
            (Ok(()), _) => {
                inner.fill(data).await;
                *lock(&inner.inited) = Inited::Yes;
                // A successful init supersedes anything still waiting to be written back.
                *lock(&inner.pending) = Pending::default();
            }
            (Err(err), CacheMode::Forever) if err.is_outage() => {
                inner.fill(data).await;
                *lock(&inner.inited) = Inited::Yes;
                let mut pending = lock(&inner.pending);
                *pending = Pending::default();
                pending.init = Some(data.to_vec());
            }
            (Err(_), _) => {}
        }
        inner.remember(result)
    }

    async fn get(&self, kind: &Kind, key: &str) -> Result<Option<Item>> {
        let inner = &self.inner;
        let Some(cache) = &inner.cache else {
            return inner.remember(inner.store.get(kind, key).await);
        };
        let store = Arc::clone(&inner.store);
        let load = async move { store.get(kind, key).await.map(Cached::Item) };
        match inner
            .cached(cache, CacheKey::Item(kind.clone(), key.to_owned()), load)
            .await?
        {
            Cached::Item(item) => Ok(item),
            Cached::All(_) => unreachable_entry(kind, Some(key)),
        }
    }

    async fn get_all(&self, kind: &Kind) -> Result<Vec<Item>> {
        let inner = &self.inner;
        let Some(cache) = &inner.cache else {
            return inner.remember(inner.store.get_all(kind).await);
        };
        let store = Arc::clone(&inner.store);
        let load = async move {
            store
                .get_all(kind)
                .await
                .map(|items| Cached::All(Arc::new(items)))
        };
        match inner
            .cached(cache, CacheKey::All(kind.clone()), load)
            .await?
        {
            Cached::All(items) => Ok(Vec::clone(&items)),
            Cached::Item(_) => unreachable_entry(kind, None),
        }
    }

    async fn upsert(&self, kind: &Kind, item: Item) -> Result<bool> {
        let inner = &self.inner;
        let forever = inner.mode == CacheMode::Forever;
        let result = inner.store.upsert(kind, item.clone()).await;
        if forever && lock(&inner.pending).init.is_some() {
            // An init is waiting to be written back; replaying this after it keeps it current.
            lock(&inner.pending).add_item(kind, &item);
        }
        let Some(cache) = &inner.cache else {
            return inner.remember(result);
        };
        let item_key = CacheKey::Item(kind.clone(), item.key().to_owned());
        let all_key = CacheKey::All(kind.clone());
        match &result {
            Ok(true) => {
                let entry = Entry {
                    loaded_at: Instant::now(),
                    value: Cached::Item(Some(item)),
                };
                cache.insert(item_key, entry).await;
                cache.invalidate(&all_key).await;
            }
            // The database holds something at least as new: read it next time.
            Ok(false) => {
                cache.invalidate(&item_key).await;
                cache.invalidate(&all_key).await;
            }
            Err(err) if forever && err.is_outage() => {
                inner.keep_unwritten(kind, &item).await;
                lock(&inner.pending).add_item(kind, &item);
            }
            Err(_) => {}
        }
        inner.remember(result)
    }

    async fn is_initialized(&self) -> Result<bool> {
        let inner = &self.inner;
        if *lock(&inner.inited) == Inited::Yes {
            return Ok(true);
        }
        let answer = inner.remember(inner.store.is_initialized().await)?;
        if answer {
            *lock(&inner.inited) = Inited::Yes;
        }
        Ok(answer)
    }

    async fn is_available(&self) -> bool {
        self.inner.store.is_available().await
    }
}

/// Keys and values are paired by construction (`Item` keys hold `Item` values); reaching this
/// means a bug in this module, reported as an error rather than a panic.
fn unreachable_entry<T>(kind: &Kind, key: Option<&str>) -> Result<T> {
    Err(Error::database(
        BACKEND,
        if key.is_some() {
            crate::Operation::Get
        } else {
            crate::Operation::GetAll
        },
        "internal error: cache entry of the wrong shape",
    )
    .on(kind, key))
}

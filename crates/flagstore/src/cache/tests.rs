#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::RwLock;

use super::*;
use crate::error::Operation;
use crate::memory::MemoryStore;

const F: Kind = Kind::FEATURES;

/// A store that counts calls, can be made to fail, and can hold reads at a gate.
#[derive(Debug, Default)]
pub(super) struct Double {
    pub(super) inner: MemoryStore,
    reads: AtomicUsize,
    writes: AtomicUsize,
    pub(super) gate: RwLock<()>,
    /// Whether its feed reports a changed item as a change to its kind, as Redis's must.
    pub(super) kind_feed: std::sync::atomic::AtomicBool,
}

impl Double {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }
    pub(super) fn reads(&self) -> usize {
        self.reads.load(Ordering::SeqCst)
    }
    fn writes(&self) -> usize {
        self.writes.load(Ordering::SeqCst)
    }
    pub(super) fn set_failing(&self, failing: bool) {
        self.inner.database().set_available(!failing);
    }
}

impl fmt::Display for Double {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("double")
    }
}

#[async_trait]
impl PersistentDataStore for Double {
    async fn init(&self, data: &[Collection]) -> Result<()> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.init(data).await
    }
    async fn get(&self, kind: &Kind, key: &str) -> Result<Option<Item>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let _open = self.gate.read().await;
        self.inner.get(kind, key).await
    }
    async fn get_all(&self, kind: &Kind) -> Result<Vec<Item>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let _open = self.gate.read().await;
        self.inner.get_all(kind).await
    }
    /// One read, as a backend that reads many keys in one request counts it.
    async fn get_many(&self, kind: &Kind, keys: &[&str]) -> Result<Vec<Option<Item>>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        let _open = self.gate.read().await;
        self.inner.get_many(kind, keys).await
    }
    async fn upsert(&self, kind: &Kind, item: Item) -> Result<bool> {
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.upsert(kind, item).await
    }
    async fn is_initialized(&self) -> Result<bool> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.is_initialized().await
    }
    async fn is_available(&self) -> bool {
        self.inner.is_available().await
    }
    fn changes(&self) -> Option<crate::changes::ChangeFeed> {
        use crate::changes::{Change, ChangeFeed, FeedEvent};
        let mut feed = self.inner.changes()?;
        if !self.kind_feed.load(Ordering::SeqCst) {
            return Some(feed);
        }
        Some(ChangeFeed::new(move |tx| async move {
            while let Some(event) = feed.next().await {
                let event = match event {
                    FeedEvent::Changed(Change::Item { kind, .. }) => {
                        FeedEvent::Changed(Change::Kind(kind))
                    }
                    other => other,
                };
                if !tx.send(event).await {
                    return;
                }
            }
        }))
    }
}

pub(super) fn item(key: &str, version: u64) -> Item {
    Item::from_json(key, format!(r#"{{"key":"{key}","version":{version}}}"#)).unwrap()
}

fn cached(double: &Arc<Double>, ttl: Duration) -> CachingStore {
    CachingStoreBuilder::from_arc(double.clone())
        .cache_time(ttl)
        .build()
        .unwrap()
}

fn forever(double: &Arc<Double>) -> CachingStore {
    CachingStoreBuilder::from_arc(double.clone())
        .cache_forever()
        .status_poll_interval(Duration::from_millis(100))
        .build()
        .unwrap()
}

pub(super) async fn next_status(rx: &mut watch::Receiver<StoreStatus>) -> StoreStatus {
    rx.changed().await.expect("store dropped");
    *rx.borrow_and_update()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_make_one_read() {
    let double = Double::new();
    double.inner.upsert(&F, item("f", 1)).await.unwrap();
    let store = cached(&double, Duration::from_secs(60));

    let held = double.gate.write().await;
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.get(&F, "f").await })
        })
        .collect();
    while double.reads() == 0 {
        tokio::task::yield_now().await;
    }
    // Give the other 99 every chance to reach the database too, if coalescing were broken.
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
    drop(held);
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().unwrap().version(), 1);
    }
    assert_eq!(double.reads(), 1);
    // Every caller counts as a miss (or a hit, if it came after the load); one load.
    let stats = store.stats().await;
    assert_eq!(stats.hits + stats.misses, 100, "{stats:?}");
    assert!(stats.misses >= 1);
    assert_eq!((stats.load_successes, stats.load_errors), (1, 0));
}

#[tokio::test]
async fn stats_count_hits_misses_loads_and_errors() {
    let double = Double::new();
    double.inner.upsert(&F, item("f", 1)).await.unwrap();
    let store = cached(&double, Duration::from_secs(60));
    assert_eq!(store.stats().await, CacheStats::default());
    assert_eq!(CacheStats::default().hit_rate(), None);

    store.get(&F, "f").await.unwrap();
    store.get(&F, "f").await.unwrap();
    store.get_all(&F).await.unwrap();
    store.get_all(&F).await.unwrap();
    double.set_failing(true);
    assert!(store.get(&Kind::SEGMENTS, "down").await.is_err());
    let stats = store.stats().await;
    assert_eq!(
        (
            stats.hits,
            stats.misses,
            stats.load_successes,
            stats.load_errors
        ),
        (2, 3, 2, 1),
        "{stats:?}"
    );
    assert_eq!(stats.hit_rate(), Some(0.4));
    assert_eq!(
        stats.entries, 2,
        "the item's entry and the kind's; never an error"
    );
    assert_eq!(stats.evictions, 0);

    // Without a cache every read is a miss and a load.
    let uncached = CachingStore::builder(double.inner.clone())
        .no_caching()
        .build()
        .unwrap();
    double.set_failing(false);
    uncached.get(&F, "f").await.unwrap();
    uncached.get_all(&F).await.unwrap();
    let stats = uncached.stats().await;
    assert_eq!(
        (
            stats.hits,
            stats.misses,
            stats.load_successes,
            stats.entries
        ),
        (0, 2, 2, 0)
    );
}

#[tokio::test]
async fn stats_count_evictions_for_capacity() {
    let double = Double::new();
    for i in 0..200 {
        double
            .inner
            .upsert(&F, item(&format!("f{i:03}"), 1))
            .await
            .unwrap();
    }
    let store = CachingStore::builder(double.inner.clone())
        .capacity_bytes(2_000)
        .build()
        .unwrap();
    for i in 0..200 {
        store.get(&F, &format!("f{i:03}")).await.unwrap();
    }
    let stats = store.stats().await;
    assert!(stats.evictions > 0, "{stats:?}");
    assert!(stats.entries < 200, "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn entries_expire_after_the_ttl() {
    let double = Double::new();
    double.inner.upsert(&F, item("f", 1)).await.unwrap();
    let store = cached(&double, Duration::from_secs(30));

    store.get(&F, "f").await.unwrap();
    store.get_all(&F).await.unwrap();
    assert_eq!(double.reads(), 2);
    tokio::time::advance(Duration::from_millis(29_999)).await;
    store.get(&F, "f").await.unwrap();
    store.get_all(&F).await.unwrap();
    assert_eq!(double.reads(), 2, "still fresh");

    double.inner.upsert(&F, item("f", 2)).await.unwrap();
    tokio::time::advance(Duration::from_millis(2)).await;
    assert_eq!(store.get(&F, "f").await.unwrap().unwrap().version(), 2);
    assert_eq!(store.get_all(&F).await.unwrap()[0].version(), 2);
    assert_eq!(double.reads(), 4, "expired entries are read again");
}

#[tokio::test]
async fn not_found_and_tombstones_are_cached() {
    let double = Double::new();
    double
        .inner
        .upsert(&F, Item::tombstone("gone", 3))
        .await
        .unwrap();
    let store = cached(&double, Duration::from_secs(60));
    for _ in 0..3 {
        assert_eq!(store.get(&F, "missing").await.unwrap(), None);
        assert!(store.get(&F, "gone").await.unwrap().unwrap().is_deleted());
    }
    assert_eq!(double.reads(), 2);
}

#[tokio::test]
async fn errors_are_not_cached() {
    let double = Double::new();
    double.inner.upsert(&F, item("f", 1)).await.unwrap();
    let store = cached(&double, Duration::from_secs(60));
    double.set_failing(true);
    let err = store.get(&F, "f").await.unwrap_err();
    assert_eq!(err.operation(), Some(Operation::Get));
    assert!(store.get_all(&F).await.is_err());
    double.set_failing(false);
    assert_eq!(store.get(&F, "f").await.unwrap().unwrap().version(), 1);
    assert_eq!(store.get_all(&F).await.unwrap().len(), 1);
    assert_eq!(double.reads(), 4);
}

#[tokio::test]
async fn zero_ttl_reads_the_database_every_time() {
    let double = Double::new();
    let store = cached(&double, Duration::ZERO);
    assert_eq!(store.mode(), CacheMode::Disabled);
    for _ in 0..5 {
        store.get(&F, "f").await.unwrap();
        store.get_all(&F).await.unwrap();
    }
    assert_eq!(double.reads(), 10);
    let off = CachingStoreBuilder::from_arc(double.clone())
        .no_caching()
        .build()
        .unwrap();
    off.get(&F, "f").await.unwrap();
    assert_eq!(double.reads(), 11);
}

#[tokio::test]
async fn upsert_updates_the_item_and_drops_the_kind_entry() {
    let double = Double::new();
    double.inner.upsert(&F, item("f", 1)).await.unwrap();
    let store = cached(&double, Duration::from_secs(60));
    store.get(&F, "f").await.unwrap();
    store.get_all(&F).await.unwrap();
    assert_eq!(double.reads(), 2);

    assert!(store.upsert(&F, item("f", 2)).await.unwrap());
    assert_eq!(store.get(&F, "f").await.unwrap().unwrap().version(), 2);
    assert_eq!(double.reads(), 2, "the item entry was updated in place");
    assert_eq!(store.get_all(&F).await.unwrap()[0].version(), 2);
    assert_eq!(double.reads(), 3, "the kind entry was dropped");

    // Someone else stored version 5: a refused upsert makes the next read fetch it.
    double.inner.upsert(&F, item("f", 5)).await.unwrap();
    assert!(!store.upsert(&F, item("f", 3)).await.unwrap());
    assert_eq!(store.get(&F, "f").await.unwrap().unwrap().version(), 5);
}

#[tokio::test]
async fn init_fills_the_cache_and_remembers_the_marker() {
    let double = Double::new();
    let store = cached(&double, Duration::from_secs(60));
    assert!(!store.is_initialized().await.unwrap());
    assert!(!store.is_initialized().await.unwrap());
    assert_eq!(
        double.reads(),
        2,
        "another process may initialize the store at any moment"
    );
    store
        .init(&[Collection::new(F, vec![item("a", 1), item("b", 1)])])
        .await
        .unwrap();
    assert!(store.is_initialized().await.unwrap());
    assert_eq!(store.get(&F, "a").await.unwrap().unwrap().version(), 1);
    assert_eq!(store.get_all(&F).await.unwrap().len(), 2);
    assert_eq!(
        double.reads(),
        2,
        "init filled the cache; 'initialized' is remembered"
    );
}

#[tokio::test]
async fn fresh_entries_are_served_while_the_database_is_down() {
    let double = Double::new();
    double.inner.upsert(&F, item("f", 1)).await.unwrap();
    let store = cached(&double, Duration::from_secs(60));
    store.get(&F, "f").await.unwrap();
    store.get_all(&F).await.unwrap();
    double.set_failing(true);
    assert_eq!(store.get(&F, "f").await.unwrap().unwrap().version(), 1);
    assert_eq!(store.get_all(&F).await.unwrap().len(), 1);
    // The cached whole kind knows the key is absent; nothing cached knows about segments.
    assert_eq!(store.get(&F, "other").await.unwrap(), None);
    assert!(store.get(&Kind::SEGMENTS, "s").await.is_err());
}

#[tokio::test(start_paused = true)]
async fn status_goes_down_on_the_first_error_and_up_on_recovery() {
    let double = Double::new();
    let store = CachingStoreBuilder::from_arc(double.clone())
        .status_poll_interval(Duration::from_millis(100))
        .build()
        .unwrap();
    let mut rx = store.subscribe();
    assert!(rx.borrow_and_update().available);

    double.set_failing(true);
    assert!(store.get(&F, "f").await.is_err());
    assert!(store.get(&F, "g").await.is_err());
    let down = next_status(&mut rx).await;
    assert!(!down.available);
    assert!(!store.status().available);

    // Polling continues with backoff for as long as the database is down.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!store.status().available);
    assert!(!rx.has_changed().unwrap(), "no second 'down' event");

    double.set_failing(false);
    let up = next_status(&mut rx).await;
    assert!(up.available);
    assert!(
        up.refresh_needed,
        "a TTL cache cannot vouch for writes made during the outage"
    );
}

#[tokio::test]
async fn item_errors_do_not_mark_the_store_unavailable() {
    #[derive(Debug)]
    struct Corrupt;
    impl fmt::Display for Corrupt {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("corrupt")
        }
    }
    #[async_trait]
    impl PersistentDataStore for Corrupt {
        async fn init(&self, _: &[Collection]) -> Result<()> {
            Ok(())
        }
        async fn get(&self, kind: &Kind, key: &str) -> Result<Option<Item>> {
            let cause = Item::from_json(key, "{").unwrap_err();
            Err(Error::invalid_item(
                "corrupt",
                Operation::Get,
                kind,
                key,
                cause,
            ))
        }
        async fn get_all(&self, _: &Kind) -> Result<Vec<Item>> {
            Ok(vec![])
        }
        async fn upsert(&self, _: &Kind, _: Item) -> Result<bool> {
            Ok(true)
        }
        async fn is_initialized(&self) -> Result<bool> {
            Ok(true)
        }
        async fn is_available(&self) -> bool {
            true
        }
    }
    let store = CachingStore::builder(Corrupt).build().unwrap();
    let err = store.get(&F, "bad").await.unwrap_err();
    assert!(matches!(err, Error::InvalidItem { .. }), "{err}");
    assert!(store.status().available);
}

#[tokio::test(start_paused = true)]
async fn forever_mode_keeps_failed_upserts_and_writes_them_back() {
    let double = Double::new();
    let store = forever(&double);
    store
        .init(&[Collection::new(F, vec![item("a", 1), item("b", 1)])])
        .await
        .unwrap();
    let mut rx = store.subscribe();

    double.set_failing(true);
    assert!(store.upsert(&F, item("a", 2)).await.is_err());
    assert!(store.upsert(&F, item("c", 1)).await.is_err());
    assert!(store.upsert(&F, Item::tombstone("b", 2)).await.is_err());
    assert!(!next_status(&mut rx).await.available);
    // The cache shows the writes the database refused.
    assert_eq!(store.get(&F, "a").await.unwrap().unwrap().version(), 2);
    assert!(store.get(&F, "b").await.unwrap().unwrap().is_deleted());
    let mut all: Vec<_> = store.get_all(&F).await.unwrap();
    all.sort_by(|x, y| x.key().cmp(y.key()));
    assert_eq!(
        all,
        vec![item("a", 2), Item::tombstone("b", 2), item("c", 1)]
    );

    double.set_failing(false);
    let up = next_status(&mut rx).await;
    assert!(up.available && !up.refresh_needed);
    let mut stored = double.inner.get_all(&F).await.unwrap();
    stored.sort_by(|x, y| x.key().cmp(y.key()));
    assert_eq!(
        stored, all,
        "the database holds everything after the write-back"
    );
}

#[tokio::test(start_paused = true)]
async fn forever_mode_writes_back_a_failed_init() {
    let double = Double::new();
    let store = forever(&double);
    let mut rx = store.subscribe();
    double.set_failing(true);
    let data = [
        Collection::new(Kind::SEGMENTS, vec![item("s", 1)]),
        Collection::new(F, vec![item("a", 1)]),
    ];
    assert!(store.init(&data).await.is_err());
    assert!(store.upsert(&F, item("a", 2)).await.is_err());
    assert!(
        store.is_initialized().await.unwrap(),
        "the cache holds a full data set"
    );
    assert_eq!(store.get(&F, "a").await.unwrap().unwrap().version(), 2);
    assert!(!next_status(&mut rx).await.available);

    double.set_failing(false);
    assert!(next_status(&mut rx).await.available);
    assert!(double.inner.is_initialized().await.unwrap());
    assert_eq!(double.inner.get(&F, "a").await.unwrap(), Some(item("a", 2)));
    assert_eq!(
        double.inner.get(&Kind::SEGMENTS, "s").await.unwrap(),
        Some(item("s", 1))
    );
}

#[tokio::test(start_paused = true)]
async fn forever_write_back_does_not_overwrite_newer_data() {
    let double = Double::new();
    let store = forever(&double);
    let mut rx = store.subscribe();
    double.set_failing(true);
    assert!(store.upsert(&F, item("f", 2)).await.is_err());
    assert!(!next_status(&mut rx).await.available);
    double.set_failing(false);
    // Another writer got version 9 in before the write-back.
    double.inner.upsert(&F, item("f", 9)).await.unwrap();
    assert!(next_status(&mut rx).await.available);
    assert_eq!(double.inner.get(&F, "f").await.unwrap(), Some(item("f", 9)));
}

/// The database lost everything while it was down: a restarted Redis without persistence.
fn wipe(double: &Double) {
    let db = double.inner.database();
    db.clear(double.inner.prefix());
}

fn sorted(mut items: Vec<Item>) -> Vec<Item> {
    items.sort_by(|x, y| x.key().cmp(y.key()));
    items
}

#[tokio::test(start_paused = true)]
async fn forever_mode_restores_a_database_that_comes_back_empty() {
    let double = Double::new();
    let store = forever(&double);
    let flags: Vec<Item> = (0..1000).map(|i| item(&format!("f{i:04}"), 1)).collect();
    let data = [
        Collection::new(Kind::SEGMENTS, vec![item("s", 3)]),
        Collection::new(F, flags.clone()),
    ];
    store.init(&data).await.unwrap();
    let mut rx = store.subscribe();

    double.set_failing(true);
    wipe(&double);
    assert!(store.upsert(&F, item("f0007", 2)).await.is_err());
    assert!(!next_status(&mut rx).await.available);
    double.set_failing(false);
    let up = next_status(&mut rx).await;
    assert!(up.available && !up.refresh_needed, "{up:?}");

    // Every other reader sees the whole data set again, marker included.
    assert!(double.inner.is_initialized().await.unwrap());
    let stored = sorted(double.inner.get_all(&F).await.unwrap());
    assert_eq!(stored.len(), 1000);
    assert_eq!(stored[7], item("f0007", 2));
    assert_eq!(stored[8], item("f0008", 1));
    assert_eq!(
        double.inner.get_all(&Kind::SEGMENTS).await.unwrap(),
        vec![item("s", 3)]
    );
}

#[tokio::test(start_paused = true)]
async fn forever_mode_restores_items_lost_from_an_initialized_database() {
    let double = Double::new();
    let store = forever(&double);
    store
        .init(&[Collection::new(F, vec![item("a", 1), item("b", 1)])])
        .await
        .unwrap();
    let mut rx = store.subscribe();
    double.set_failing(true);
    assert!(store.upsert(&F, item("c", 1)).await.is_err());
    assert!(!next_status(&mut rx).await.available);
    // The database came back from an old snapshot: marker there, "b" missing, "a" newer.
    double.inner.database().clear(double.inner.prefix());
    double.set_failing(false);
    double
        .inner
        .init(&[Collection::new(F, vec![item("a", 5)])])
        .await
        .unwrap();

    let up = next_status(&mut rx).await;
    assert!(up.available && !up.refresh_needed);
    assert_eq!(
        sorted(double.inner.get_all(&F).await.unwrap()),
        vec![item("a", 5), item("b", 1), item("c", 1)],
        "lost items restored; the newer version another writer stored is kept"
    );
}

#[tokio::test(start_paused = true)]
async fn forever_mode_without_a_full_data_set_asks_for_a_refresh() {
    let double = Double::new();
    double
        .inner
        .init(&[Collection::new(F, vec![item("a", 1)])])
        .await
        .unwrap();
    let store = forever(&double);
    assert_eq!(store.get(&F, "a").await.unwrap(), Some(item("a", 1)));
    let mut rx = store.subscribe();
    double.set_failing(true);
    wipe(&double);
    assert!(store.upsert(&F, item("b", 1)).await.is_err());
    assert!(!next_status(&mut rx).await.available);
    double.set_failing(false);
    let up = next_status(&mut rx).await;
    assert!(up.available && up.refresh_needed, "{up:?}");
    assert_eq!(double.inner.get(&F, "b").await.unwrap(), Some(item("b", 1)));
}

#[tokio::test(start_paused = true)]
async fn forever_mode_answers_gets_from_one_entry_per_kind() {
    let double = Double::new();
    let store = forever(&double);
    let flags: Vec<Item> = (0..1000).map(|i| item(&format!("f{i:04}"), 1)).collect();
    let data = [
        Collection::new(Kind::SEGMENTS, vec![item("s", 3)]),
        Collection::new(F, flags),
    ];
    store.init(&data).await.unwrap();
    assert_eq!(store.cache_usage().await.0, 2, "one entry per kind");

    let reads = double.reads();
    for i in (0..1000).step_by(37) {
        let key = format!("f{i:04}");
        assert_eq!(store.get(&F, &key).await.unwrap(), Some(item(&key, 1)));
    }
    assert_eq!(store.get(&F, "absent").await.unwrap(), None);
    assert_eq!(
        store.get(&Kind::SEGMENTS, "s").await.unwrap(),
        Some(item("s", 3))
    );
    assert!(store.upsert(&F, item("f0001", 2)).await.unwrap());
    assert!(store.upsert(&F, item("new", 1)).await.unwrap());
    assert_eq!(
        store.get(&F, "f0001").await.unwrap(),
        Some(item("f0001", 2))
    );
    assert_eq!(store.get(&F, "new").await.unwrap(), Some(item("new", 1)));
    assert_eq!(store.get_all(&F).await.unwrap().len(), 1001);
    assert_eq!(double.reads(), reads, "every answer came from the cache");
}

/// A daemon-mode reader's forever cache, filled flag by flag: each answer (an item, a tombstone,
/// "not found") is kept in the item table and counted, later reads come from it, a whole-kind
/// read that finds a newer version replaces the older one, and `invalidate_all` empties it.
#[tokio::test]
async fn forever_mode_keeps_items_read_one_by_one() {
    let double = Double::new();
    double
        .init(&[Collection::new(
            F,
            vec![item("a", 1), item("b", 1), Item::tombstone("gone", 4)],
        )])
        .await
        .unwrap();
    let store = forever(&double);
    let custom = Kind::new("widgets");
    for key in ["a", "b", "gone", "absent"] {
        store.get(&F, key).await.unwrap();
    }
    assert_eq!(store.get(&custom, "a").await.unwrap(), None);
    let (entries, weight) = store.cache_usage().await;
    assert_eq!(entries, 5, "four keys of one kind and one of another");
    assert!(weight > 0);
    let reads = double.reads();
    assert_eq!(store.get(&F, "a").await.unwrap(), Some(item("a", 1)));
    assert!(store.get(&F, "gone").await.unwrap().unwrap().is_deleted());
    assert_eq!(store.get(&F, "absent").await.unwrap(), None);
    assert_eq!(double.reads(), reads, "answered from the table");

    // Another writer stores a newer `a`; this reader's `get_all` sees it, and a `get` after
    // it never goes back to the version the table held.
    double.upsert(&F, item("a", 5)).await.unwrap();
    assert_eq!(store.get_all(&F).await.unwrap().len(), 3);
    assert_eq!(store.get(&F, "a").await.unwrap(), Some(item("a", 5)));

    store.invalidate_all().await;
    assert_eq!(store.cache_usage().await.0, 0);
    assert_eq!(store.get(&F, "b").await.unwrap(), Some(item("b", 1)));
    assert_eq!(double.reads(), reads + 2, "a get_all, then b read again");
}

#[tokio::test(start_paused = true)]
async fn ttl_mode_answers_gets_from_a_fresh_whole_kind_read() {
    let double = Double::new();
    double.inner.upsert(&F, item("a", 1)).await.unwrap();
    let store = cached(&double, Duration::from_secs(10));
    store.get_all(&F).await.unwrap();
    let reads = double.reads();
    assert_eq!(store.get(&F, "a").await.unwrap(), Some(item("a", 1)));
    assert_eq!(store.get(&F, "b").await.unwrap(), None);
    assert_eq!(double.reads(), reads);

    // Another writer adds "b": the cache says so once the whole-kind entry is stale.
    double.inner.upsert(&F, item("b", 1)).await.unwrap();
    tokio::time::advance(Duration::from_secs(11)).await;
    assert_eq!(store.get(&F, "b").await.unwrap(), Some(item("b", 1)));
    assert_eq!(double.reads(), reads + 1);
}

#[tokio::test(start_paused = true)]
async fn forever_mode_serves_get_all_through_an_outage_after_an_upsert() {
    let double = Double::new();
    let store = forever(&double);
    store
        .init(&[Collection::new(F, vec![item("a", 1), item("b", 1)])])
        .await
        .unwrap();
    assert!(store.upsert(&F, item("a", 2)).await.unwrap());
    assert!(store.upsert(&F, item("n", 1)).await.unwrap());
    double.set_failing(true);
    let reads = double.reads();
    assert_eq!(
        sorted(store.get_all(&F).await.unwrap()),
        vec![item("a", 2), item("b", 1), item("n", 1)]
    );
    assert_eq!(double.reads(), reads, "served from the cache");
}

#[tokio::test(start_paused = true)]
async fn forever_mode_caches_what_the_database_kept_after_a_refused_upsert() {
    let double = Double::new();
    let store = forever(&double);
    store
        .init(&[Collection::new(F, vec![item("a", 1)])])
        .await
        .unwrap();
    double.inner.upsert(&F, item("a", 7)).await.unwrap();
    assert!(!store.upsert(&F, item("a", 3)).await.unwrap());
    double.set_failing(true);
    assert_eq!(store.get(&F, "a").await.unwrap(), Some(item("a", 7)));
    assert_eq!(store.get_all(&F).await.unwrap(), vec![item("a", 7)]);
}

#[tokio::test]
async fn a_failed_init_in_ttl_mode_empties_the_cache() {
    let double = Double::new();
    let store = cached(&double, Duration::from_secs(60));
    store
        .init(&[Collection::new(F, vec![item("old", 1)])])
        .await
        .unwrap();
    assert!(store.is_initialized().await.unwrap());
    double.set_failing(true);
    assert!(
        store
            .init(&[Collection::new(F, vec![item("new", 1)])])
            .await
            .is_err()
    );
    assert!(
        store.get(&F, "old").await.is_err(),
        "the old data set is not served as if the init had not happened"
    );
    assert!(store.get_all(&F).await.is_err());
    assert!(store.is_initialized().await.is_err());
}

#[tokio::test]
async fn ttl_mode_does_not_cache_failed_writes() {
    let double = Double::new();
    let store = cached(&double, Duration::from_secs(60));
    double.inner.upsert(&F, item("f", 1)).await.unwrap();
    store.get(&F, "f").await.unwrap();
    double.set_failing(true);
    assert!(store.upsert(&F, item("f", 2)).await.is_err());
    assert_eq!(store.get(&F, "f").await.unwrap().unwrap().version(), 1);
    assert_eq!(double.writes(), 1);
}

#[tokio::test]
async fn capacity_bounds_memory() {
    let double = Double::new();
    let big = "x".repeat(10_000);
    for i in 0..100 {
        let json = format!(r#"{{"version":1,"pad":"{big}"}}"#);
        double
            .inner
            .upsert(&F, Item::from_json(format!("f{i}"), json).unwrap())
            .await
            .unwrap();
    }
    let store = CachingStoreBuilder::from_arc(double.clone())
        .capacity_bytes(100_000)
        .build()
        .unwrap();
    for i in 0..100 {
        assert!(store.get(&F, &format!("f{i}")).await.unwrap().is_some());
    }
    let (entries, bytes) = store.cache_usage().await;
    assert!(bytes <= 100_000, "{bytes} bytes cached");
    assert!(entries > 0 && entries < 100, "{entries} entries");
}

#[test]
fn builder_rejects_nonsense_with_clear_errors() {
    let err = CachingStore::builder(MemoryStore::new())
        .cache_time(Duration::from_secs(u64::MAX / 2))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("use cache_forever()"), "{err}");
    let err = CachingStore::builder(MemoryStore::new())
        .capacity_bytes(0)
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cache: invalid configuration: capacity_bytes must be positive; use no_caching() to turn the cache off"
    );
    let err = CachingStore::builder(MemoryStore::new())
        .status_poll_interval(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("status_poll_interval"), "{err}");
}

#[test]
fn default_is_a_fifteen_second_ttl() {
    let store = CachingStore::builder(MemoryStore::new()).build().unwrap();
    assert_eq!(store.mode(), CacheMode::Ttl(Duration::from_secs(15)));
    assert_eq!(
        store.to_string(),
        r#"memory store (prefix "") (cached for 15s)"#
    );
}

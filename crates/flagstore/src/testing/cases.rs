//! The cases of the conformance suite, each a public function so a backend can run one alone.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::future::join_all;

use super::{StoreFactory, UpsertHook};
use crate::{Collection, DynStore, Item, Kind};

type Case =
    for<'a> fn(&'a dyn StoreFactory, &'a str) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        /// Every case, by name, in the order [`run`](super::run) runs them.
        pub const ALL: &[(&str, Case)] = &[$((stringify!($name), |f, p| Box::pin($name(f, p)))),*];
    };
}

cases![
    init_then_get_returns_items_byte_for_byte,
    init_replaces_previous_data,
    init_without_items_still_initializes,
    another_instance_sees_the_marker,
    missing_keys_and_kinds_are_not_found,
    get_many_answers_as_get_does,
    any_kind_name_works,
    upsert_writes_only_newer_versions,
    delete_writes_only_newer_versions,
    upsert_older_after_delete_keeps_the_tombstone,
    get_all_includes_tombstones,
    prefixes_are_independent,
    large_init_replaces_and_removes_stale_keys,
    pages_hold_what_get_all_holds,
    lower_external_writes_do_not_block_a_higher_upsert,
    higher_external_write_wins,
    racing_instances_leave_the_highest_version,
    cached_reads_never_go_back_in_version,
    unreachable_server_errors_without_hanging,
];

/// A tombstone as each LaunchDarkly SDK writes it: `(storage key, JSON, version)`. Go (and Rust)
/// write a flag-shaped record keyed `$deleted`, Python its dict with spaces, Node no key at all.
/// Every reader must recognise all three.
pub const SDK_TOMBSTONES: [(&str, &str, u64); 3] = [
    (
        "go",
        r#"{"key":"$deleted","version":11,"deleted":true,"on":false}"#,
        11,
    ),
    (
        "python",
        r#"{"key": "python", "version": 12, "deleted": true}"#,
        12,
    ),
    ("node", r#"{"version":13,"deleted":true}"#, 13),
];

/// A flag whose JSON has non-ASCII text and floats, like real flags from other SDKs.
pub fn flag(key: &str, version: u64) -> Item {
    let json = format!(
        r#"{{"key":"{key}","version":{version},"on":true,"salt":"s\u00e4lt","name":"café ☕",
"variations":[true,false,1.0,0.5],"fallthrough":{{"variation":0}},"offVariation":1,"deleted":false}}"#
    );
    Item::from_json(key, json).expect("valid test flag")
}

/// A segment in the shape LaunchDarkly serves.
pub fn segment(key: &str, version: u64) -> Item {
    let json = format!(
        r#"{{"key":"{key}","version":{version},"included":["user-1"],"excluded":[],"salt":"x"}}"#
    );
    Item::from_json(key, json).expect("valid test segment")
}

/// A data set of flags and segments, segments first.
pub fn data_set(flags: Vec<Item>, segments: Vec<Item>) -> Vec<Collection> {
    vec![
        Collection::new(Kind::SEGMENTS, segments),
        Collection::new(Kind::FEATURES, flags),
    ]
}

async fn sorted_all(store: &DynStore, kind: &Kind) -> Vec<Item> {
    let mut items = store
        .get_all(kind)
        .await
        .unwrap_or_else(|e| panic!("get_all({kind}) on {store}: {e}"));
    items.sort_by(|a, b| a.key().cmp(b.key()));
    items
}

async fn get(store: &DynStore, kind: &Kind, key: &str) -> Option<Item> {
    store
        .get(kind, key)
        .await
        .unwrap_or_else(|e| panic!("get({kind}, {key}) on {store}: {e}"))
}

async fn upsert(store: &DynStore, kind: &Kind, item: Item) -> bool {
    let key = item.key().to_owned();
    store
        .upsert(kind, item)
        .await
        .unwrap_or_else(|e| panic!("upsert({kind}, {key}) on {store}: {e}"))
}

async fn init(store: &DynStore, data: &[Collection]) {
    store
        .init(data)
        .await
        .unwrap_or_else(|e| panic!("init on {store}: {e}"));
}

fn keys(items: &[Item]) -> Vec<&str> {
    items.iter().map(Item::key).collect()
}

/// `init` stores every item, and reads return them with version, deleted flag and JSON intact.
pub async fn init_then_get_returns_items_byte_for_byte(f: &dyn StoreFactory, prefix: &str) {
    let store = f.store(prefix, None).await;
    let (f1, f2, s1) = (flag("f1", 1), flag("f2", 7), segment("s1", 3));
    init(
        &store,
        &data_set(vec![f1.clone(), f2.clone()], vec![s1.clone()]),
    )
    .await;
    assert_eq!(get(&store, &Kind::FEATURES, "f1").await, Some(f1.clone()));
    assert_eq!(get(&store, &Kind::FEATURES, "f2").await, Some(f2.clone()));
    assert_eq!(get(&store, &Kind::SEGMENTS, "s1").await, Some(s1.clone()));
    assert_eq!(sorted_all(&store, &Kind::FEATURES).await, vec![f1, f2]);
    assert_eq!(sorted_all(&store, &Kind::SEGMENTS).await, vec![s1]);
}

/// A second `init` leaves exactly its own data: items it lacks are gone, whatever their version.
pub async fn init_replaces_previous_data(f: &dyn StoreFactory, prefix: &str) {
    let store = f.store(prefix, None).await;
    init(
        &store,
        &data_set(
            vec![flag("f1", 10), flag("f2", 10)],
            vec![segment("s1", 10)],
        ),
    )
    .await;
    let replacement = vec![flag("f2", 1), flag("f3", 1)];
    init(&store, &data_set(replacement.clone(), vec![])).await;
    assert_eq!(sorted_all(&store, &Kind::FEATURES).await, replacement);
    assert_eq!(get(&store, &Kind::FEATURES, "f1").await, None);
    assert_eq!(sorted_all(&store, &Kind::SEGMENTS).await, vec![]);
    assert_eq!(get(&store, &Kind::SEGMENTS, "s1").await, None);
}

/// A store initialized with zero items (or no collections at all) is initialized.
pub async fn init_without_items_still_initializes(f: &dyn StoreFactory, prefix: &str) {
    let store = f.store(prefix, None).await;
    assert!(
        !store.is_initialized().await.unwrap(),
        "a cleared store must not be initialized"
    );
    init(&store, &data_set(vec![], vec![])).await;
    assert!(store.is_initialized().await.unwrap());

    f.clear(prefix).await;
    let store = f.store(prefix, None).await;
    init(&store, &[]).await;
    assert!(store.is_initialized().await.unwrap());
}

/// The `$inited` marker lives in the database: an instance that did not write it sees it.
pub async fn another_instance_sees_the_marker(f: &dyn StoreFactory, prefix: &str) {
    let writer = f.store(prefix, None).await;
    let reader = f.store(prefix, None).await;
    assert!(!reader.is_initialized().await.unwrap());
    init(&writer, &data_set(vec![flag("f1", 1)], vec![])).await;
    assert!(reader.is_initialized().await.unwrap());
    let fresh = f.store(prefix, None).await;
    assert!(fresh.is_initialized().await.unwrap());
    assert_eq!(
        get(&fresh, &Kind::FEATURES, "f1").await,
        Some(flag("f1", 1))
    );
}

/// Nothing stored is `Ok(None)` / an empty list, never an error.
pub async fn missing_keys_and_kinds_are_not_found(f: &dyn StoreFactory, prefix: &str) {
    let store = f.store(prefix, None).await;
    assert_eq!(get(&store, &Kind::FEATURES, "nope").await, None);
    assert_eq!(sorted_all(&store, &Kind::FEATURES).await, vec![]);
    init(&store, &data_set(vec![flag("f1", 1)], vec![])).await;
    assert_eq!(get(&store, &Kind::FEATURES, "nope").await, None);
    assert_eq!(get(&store, &Kind::SEGMENTS, "f1").await, None);
    assert_eq!(sorted_all(&store, &Kind::new("unknown-kind")).await, vec![]);
}

/// `get_many` answers what `get` answers for each key, in the order asked: items, tombstones and
/// "not found" alike, a key asked twice twice, nothing for no keys.
pub async fn get_many_answers_as_get_does(f: &dyn StoreFactory, prefix: &str) {
    let store = f.store(prefix, None).await;
    let f1 = flag("f1", 3);
    init(&store, &data_set(vec![f1.clone(), flag("f2", 1)], vec![])).await;
    let tombstone = Item::tombstone("f2", 2);
    assert!(
        store
            .upsert(&Kind::FEATURES, tombstone.clone())
            .await
            .unwrap()
    );
    let keys = ["nope", "f2", "f1", "f1"];
    let many = store.get_many(&Kind::FEATURES, &keys).await.unwrap();
    let expected = vec![None, Some(tombstone), Some(f1.clone()), Some(f1)];
    assert_eq!(many, expected);
    assert!(
        store
            .get_many(&Kind::FEATURES, &[])
            .await
            .unwrap()
            .is_empty()
    );
    let other = store.get_many(&Kind::SEGMENTS, &["f1"]).await.unwrap();
    assert_eq!(other, vec![None]);
}

/// Kinds are opaque names; keys may hold dots, dashes and underscores.
pub async fn any_kind_name_works(f: &dyn StoreFactory, prefix: &str) {
    let store = f.store(prefix, None).await;
    let widgets = Kind::new("widgets");
    let item =
        Item::from_json("w.1-a_B", r#"{"key":"w.1-a_B","version":4,"ünïcode":"✓"}"#).unwrap();
    init(
        &store,
        &[Collection::new(widgets.clone(), vec![item.clone()])],
    )
    .await;
    assert_eq!(get(&store, &widgets, "w.1-a_B").await, Some(item.clone()));
    assert_eq!(sorted_all(&store, &widgets).await, vec![item]);
    assert_eq!(sorted_all(&store, &Kind::FEATURES).await, vec![]);
}

/// Upsert writes a new key or a higher version, and refuses an equal or lower one.
pub async fn upsert_writes_only_newer_versions(f: &dyn StoreFactory, prefix: &str) {
    let store = f.store(prefix, None).await;
    init(&store, &data_set(vec![flag("f1", 10)], vec![])).await;
    assert!(
        upsert(&store, &Kind::FEATURES, flag("new", 1)).await,
        "new key"
    );
    assert_eq!(
        get(&store, &Kind::FEATURES, "new").await,
        Some(flag("new", 1))
    );
    assert!(
        upsert(&store, &Kind::FEATURES, flag("f1", 11)).await,
        "newer"
    );
    assert_eq!(
        get(&store, &Kind::FEATURES, "f1").await,
        Some(flag("f1", 11))
    );
    assert!(
        !upsert(&store, &Kind::FEATURES, flag("f1", 9)).await,
        "older"
    );
    assert!(
        !upsert(&store, &Kind::FEATURES, flag("f1", 11)).await,
        "same version"
    );
    assert_eq!(
        get(&store, &Kind::FEATURES, "f1").await,
        Some(flag("f1", 11))
    );
    let other = f.store(prefix, None).await;
    assert_eq!(
        get(&other, &Kind::FEATURES, "f1").await,
        Some(flag("f1", 11))
    );
    assert_eq!(
        keys(&sorted_all(&other, &Kind::FEATURES).await),
        ["f1", "new"]
    );
}

/// A delete is an upsert of a tombstone: newer wins, older or equal is refused, an unknown key
/// gets a tombstone.
pub async fn delete_writes_only_newer_versions(f: &dyn StoreFactory, prefix: &str) {
    let store = f.store(prefix, None).await;
    init(
        &store,
        &data_set(vec![flag("a", 10), flag("b", 10), flag("c", 10)], vec![]),
    )
    .await;
    assert!(
        upsert(&store, &Kind::FEATURES, Item::tombstone("a", 11)).await,
        "newer"
    );
    let a = get(&store, &Kind::FEATURES, "a")
        .await
        .expect("tombstone kept");
    assert!(a.is_deleted() && a.version() == 11, "{a:?}");
    assert!(
        !upsert(&store, &Kind::FEATURES, Item::tombstone("b", 9)).await,
        "older"
    );
    assert_eq!(get(&store, &Kind::FEATURES, "b").await, Some(flag("b", 10)));
    assert!(
        !upsert(&store, &Kind::FEATURES, Item::tombstone("c", 10)).await,
        "same"
    );
    assert_eq!(get(&store, &Kind::FEATURES, "c").await, Some(flag("c", 10)));
    assert!(
        upsert(&store, &Kind::FEATURES, Item::tombstone("unknown", 1)).await,
        "unknown key"
    );
    assert_eq!(
        get(&store, &Kind::FEATURES, "unknown").await,
        Some(Item::tombstone("unknown", 1))
    );
}

/// A tombstone blocks older updates (no resurrection) but not newer ones.
pub async fn upsert_older_after_delete_keeps_the_tombstone(f: &dyn StoreFactory, prefix: &str) {
    let store = f.store(prefix, None).await;
    init(&store, &data_set(vec![flag("f", 5)], vec![])).await;
    assert!(upsert(&store, &Kind::FEATURES, Item::tombstone("f", 7)).await);
    assert!(
        !upsert(&store, &Kind::FEATURES, flag("f", 6)).await,
        "older than the delete"
    );
    assert!(
        !upsert(&store, &Kind::FEATURES, flag("f", 7)).await,
        "same as the delete"
    );
    assert_eq!(
        get(&store, &Kind::FEATURES, "f").await,
        Some(Item::tombstone("f", 7))
    );
    assert!(
        upsert(&store, &Kind::FEATURES, flag("f", 8)).await,
        "newer than the delete"
    );
    assert_eq!(get(&store, &Kind::FEATURES, "f").await, Some(flag("f", 8)));
}

/// `get_all` returns tombstones too, in every shape other SDKs write them.
pub async fn get_all_includes_tombstones(f: &dyn StoreFactory, prefix: &str) {
    let store = f.store(prefix, None).await;
    let python = Item::from_json("py", r#"{"key": "py", "version": 3, "deleted": true}"#).unwrap();
    let node = Item::from_json("node", r#"{"version":4,"deleted":true}"#).unwrap();
    let live = flag("live", 1);
    init(
        &store,
        &data_set(
            vec![
                live.clone(),
                python.clone(),
                node.clone(),
                Item::tombstone("go", 2),
            ],
            vec![],
        ),
    )
    .await;
    let all = sorted_all(&store, &Kind::FEATURES).await;
    assert_eq!(all, vec![Item::tombstone("go", 2), live, node, python]);
}

/// Stores with different prefixes share nothing, marker included.
pub async fn prefixes_are_independent(f: &dyn StoreFactory, prefix: &str) {
    let (p1, p2) = (format!("{prefix}a"), format!("{prefix}a2"));
    f.clear(&p1).await;
    f.clear(&p2).await;
    let s1 = f.store(&p1, None).await;
    let s2 = f.store(&p2, None).await;
    init(
        &s1,
        &data_set(vec![flag("only1", 1), flag("both", 1)], vec![]),
    )
    .await;
    assert!(
        !s2.is_initialized().await.unwrap(),
        "marker leaked across prefixes"
    );
    init(
        &s2,
        &data_set(vec![flag("only2", 2), flag("both", 2)], vec![]),
    )
    .await;
    // Re-initializing one prefix must not delete the other's keys (`ld` vs `ld2`).
    init(&s1, &data_set(vec![flag("both", 3)], vec![])).await;
    assert_eq!(keys(&sorted_all(&s1, &Kind::FEATURES).await), ["both"]);
    assert_eq!(
        get(&s1, &Kind::FEATURES, "both").await,
        Some(flag("both", 3))
    );
    assert_eq!(
        keys(&sorted_all(&s2, &Kind::FEATURES).await),
        ["both", "only2"]
    );
    assert_eq!(
        get(&s2, &Kind::FEATURES, "both").await,
        Some(flag("both", 2))
    );
    assert!(upsert(&s2, &Kind::FEATURES, flag("only2", 9)).await);
    assert_eq!(get(&s1, &Kind::FEATURES, "only2").await, None);
    f.clear(&p1).await;
    f.clear(&p2).await;
}

/// Enough items to need several batches, pages or transactions in every backend; a smaller
/// re-init removes the rest.
pub async fn large_init_replaces_and_removes_stale_keys(f: &dyn StoreFactory, prefix: &str) {
    let store = f.store(prefix, None).await;
    let flags: Vec<Item> = (0..300)
        .map(|i| flag(&format!("flag-{i:03}"), i + 1))
        .collect();
    let segments: Vec<Item> = (0..60)
        .map(|i| segment(&format!("seg-{i:02}"), 1))
        .collect();
    init(&store, &data_set(flags.clone(), segments)).await;
    assert_eq!(sorted_all(&store, &Kind::FEATURES).await, flags);
    assert_eq!(sorted_all(&store, &Kind::SEGMENTS).await.len(), 60);
    let fewer: Vec<Item> = flags[..10].to_vec();
    init(&store, &data_set(fewer.clone(), vec![])).await;
    assert_eq!(sorted_all(&store, &Kind::FEATURES).await, fewer);
    assert_eq!(sorted_all(&store, &Kind::SEGMENTS).await, vec![]);
}

/// More items than a page holds come back in pages: each item once, byte for byte, tombstones
/// included, and an empty kind is no items.
pub async fn pages_hold_what_get_all_holds(f: &dyn StoreFactory, prefix: &str) {
    use futures::TryStreamExt;

    let store = f.store(prefix, None).await;
    let mut flags: Vec<Item> = (0..crate::backend::PAGE_ITEMS as u64 * 2 + 50)
        .map(|i| flag(&format!("flag-{i:04}"), i + 1))
        .collect();
    flags.push(Item::tombstone("gone", 7));
    init(&store, &data_set(flags.clone(), vec![])).await;
    let pages: Vec<_> = store
        .pages(&Kind::FEATURES)
        .try_collect()
        .await
        .unwrap_or_else(|e| panic!("pages(features) on {store}: {e}"));
    let mut paged: Vec<Item> = pages.into_iter().flat_map(|page| page.items).collect();
    paged.sort_by(|a, b| a.key().cmp(b.key()));
    flags.sort_by(|a, b| a.key().cmp(b.key()));
    assert_eq!(paged.len(), flags.len(), "every item once");
    assert!(paged == flags, "the paged items differ from those written");
    let segments: Vec<_> = store
        .pages(&Kind::SEGMENTS)
        .try_collect()
        .await
        .unwrap_or_else(|e| panic!("pages(segments) on {store}: {e}"));
    assert!(
        segments
            .iter()
            .all(|page| page.items.is_empty() && page.unreadable.is_empty())
    );
}

/// Another writer stores lower versions (2, 3, 4) in the race window of up to three successive
/// attempts; the upsert of version 10 gets past them and wins.
pub async fn lower_external_writes_do_not_block_a_higher_upsert(
    f: &dyn StoreFactory,
    prefix: &str,
) {
    let other = f.store(prefix, None).await;
    init(&other, &data_set(vec![flag("raced", 1)], vec![])).await;
    let calls = Arc::new(AtomicU32::new(0));
    let hook: UpsertHook = {
        let (calls, other) = (Arc::clone(&calls), Arc::clone(&other));
        Arc::new(move || {
            let (calls, other) = (Arc::clone(&calls), Arc::clone(&other));
            Box::pin(async move {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                if n < 3 {
                    let version = u64::from(n) + 2;
                    assert!(upsert(&other, &Kind::FEATURES, flag("raced", version)).await);
                }
            })
        })
    };
    let store = f.store(prefix, Some(hook)).await;
    assert!(upsert(&store, &Kind::FEATURES, flag("raced", 10)).await);
    // Read-then-write stores (Redis, Consul) lose three races and retry; a conditional write
    // (DynamoDB) wins at once. Either way the race window was entered and the higher version won.
    assert!(
        calls.load(Ordering::SeqCst) >= 1,
        "the race window was never entered"
    );
    let fresh = f.store(prefix, None).await;
    assert_eq!(
        get(&fresh, &Kind::FEATURES, "raced").await,
        Some(flag("raced", 10))
    );
}

/// Another writer stores a higher version in the race window: the lower upsert reports
/// "not updated" and the higher version stays.
pub async fn higher_external_write_wins(f: &dyn StoreFactory, prefix: &str) {
    let other = f.store(prefix, None).await;
    init(&other, &data_set(vec![flag("raced", 1)], vec![])).await;
    let calls = Arc::new(AtomicU32::new(0));
    let hook: UpsertHook = {
        let (calls, other) = (Arc::clone(&calls), Arc::clone(&other));
        Arc::new(move || {
            let (calls, other) = (Arc::clone(&calls), Arc::clone(&other));
            Box::pin(async move {
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    assert!(upsert(&other, &Kind::FEATURES, flag("raced", 3)).await);
                }
            })
        })
    };
    let store = f.store(prefix, Some(hook)).await;
    assert!(!upsert(&store, &Kind::FEATURES, flag("raced", 2)).await);
    assert_eq!(
        get(&store, &Kind::FEATURES, "raced").await,
        Some(flag("raced", 3))
    );
    let fresh = f.store(prefix, None).await;
    assert_eq!(
        get(&fresh, &Kind::FEATURES, "raced").await,
        Some(flag("raced", 3))
    );
}

/// Two instances upserting many versions of one key at once leave the highest version whose
/// upsert reported success, and the store still takes a higher version.
pub async fn racing_instances_leave_the_highest_version(f: &dyn StoreFactory, prefix: &str) {
    let a = f.store(prefix, None).await;
    let b = f.store(prefix, None).await;
    init(&a, &data_set(vec![], vec![])).await;
    let writes = (1..=20u64).map(|v| {
        let store = if v % 2 == 0 {
            Arc::clone(&a)
        } else {
            Arc::clone(&b)
        };
        async move { (v, store.upsert(&Kind::FEATURES, flag("hot", v)).await) }
    });
    let mut highest_written = None;
    for (version, result) in join_all(writes).await {
        match result {
            Ok(true) => highest_written = highest_written.max(Some(version)),
            Ok(false) | Err(crate::Error::Contention { .. }) => {}
            Err(e) => panic!("racing upsert of version {version}: {e}"),
        }
    }
    // A write succeeds only over a lower stored version, so the last one to succeed is the
    // highest, and contention may make a write give up but never undo a success.
    let highest_written = highest_written.expect("no racing upsert succeeded");
    let fresh = f.store(prefix, None).await;
    assert_eq!(
        get(&fresh, &Kind::FEATURES, "hot")
            .await
            .map(|i| i.version()),
        Some(highest_written),
        "the stored version is not the highest one written"
    );
    assert!(upsert(&a, &Kind::FEATURES, flag("hot", 21)).await);
    let fresh = f.store(prefix, None).await;
    assert_eq!(
        get(&fresh, &Kind::FEATURES, "hot").await,
        Some(flag("hot", 21))
    );
}

/// A [`CachingStore`](crate::CachingStore) over this store, with a TTL and forever, never lets
/// a slow read land over a newer write: the read is held open after reading version 1 while
/// version 2 is upserted through the cache, for a `get` and for a `get_all`. (Live mode, which
/// needs the server's change feed set up, is raced in the core's own tests.)
pub async fn cached_reads_never_go_back_in_version(f: &dyn StoreFactory, prefix: &str) {
    use crate::{CachingStore, PersistentDataStore};
    let database = f.store(prefix, None).await;
    for mode in ["ttl", "forever"] {
        for slow_read in ["get", "get_all"] {
            let key = format!("{mode}-{slow_read}");
            init(&database, &data_set(vec![flag(&key, 1)], vec![])).await;
            let gated = super::GatedStore::new(f.store(prefix, None).await);
            let builder = CachingStore::builder(gated.clone());
            let cache = match mode {
                "ttl" => builder.cache_time(Duration::from_secs(60)),
                _ => builder.cache_forever(),
            }
            .build()
            .unwrap();
            let mut held = gated.hold_next_read();
            let reader = tokio::spawn({
                let (cache, key) = (cache.clone(), key.clone());
                async move {
                    match slow_read {
                        "get" => cache.get(&Kind::FEATURES, &key).await.map(|_| ()),
                        _ => cache.get_all(&Kind::FEATURES).await.map(|_| ()),
                    }
                }
            });
            held.read().await;
            assert!(
                cache.upsert(&Kind::FEATURES, flag(&key, 2)).await.unwrap(),
                "{key}: upsert of version 2"
            );
            held.release();
            reader.await.unwrap().unwrap();
            let got = cache.get(&Kind::FEATURES, &key).await.unwrap();
            assert_eq!(
                got.map(|i| i.version()),
                Some(2),
                "{key}: get after the race"
            );
            let all = cache.get_all(&Kind::FEATURES).await.unwrap();
            let version = all.iter().find(|i| i.key() == key).map(Item::version);
            assert_eq!(version, Some(2), "{key}: get_all after the race");
        }
    }
}

/// Against a server that does not answer, every call fails with an outage error (none claims
/// success, none is mistaken for bad data) within the store's configured request budget
/// ([`StoreFactory::unreachable_budget`]) plus a margin, and the store is neither initialized
/// nor available.
pub async fn unreachable_server_errors_without_hanging(f: &dyn StoreFactory, _prefix: &str) {
    let store = f.unreachable_store().await;
    let limit = f.unreachable_budget() + UNREACHABLE_MARGIN;
    let bounded =
        async |what: &str, call: Pin<Box<dyn Future<Output = crate::Result<()>> + Send + '_>>| {
            let started = tokio::time::Instant::now();
            let result = tokio::time::timeout(limit, call)
                .await
                .unwrap_or_else(|_| panic!("{what} on an unreachable server took over {limit:?}"));
            let err = match result {
                Ok(()) => panic!("{what} on an unreachable server succeeded"),
                Err(err) => err,
            };
            assert!(
                err.is_outage(),
                "{what} on an unreachable server: not an outage error: {err}"
            );
            let took = started.elapsed();
            assert!(took <= limit, "{what} took {took:?}, over {limit:?}");
        };
    // Reads before writes: a forever cache rightly answers reads from a write it could not store.
    bounded(
        "is_initialized",
        Box::pin(async { store.is_initialized().await.map(|_| ()) }),
    )
    .await;
    bounded(
        "get",
        Box::pin(async { store.get(&Kind::FEATURES, "f").await.map(|_| ()) }),
    )
    .await;
    bounded(
        "get_all",
        Box::pin(async { store.get_all(&Kind::FEATURES).await.map(|_| ()) }),
    )
    .await;
    let data = data_set(vec![flag("f", 1)], vec![]);
    bounded("init", Box::pin(store.init(&data))).await;
    bounded(
        "upsert",
        Box::pin(async {
            store
                .upsert(&Kind::FEATURES, flag("f", 2))
                .await
                .map(|_| ())
        }),
    )
    .await;
    let started = tokio::time::Instant::now();
    let available = tokio::time::timeout(limit, store.is_available()).await;
    assert_eq!(available, Ok(false), "is_available within {limit:?}");
    assert!(started.elapsed() <= limit);
}

/// How far past its configured budget an unreachable store's error may come: scheduling on a
/// loaded machine, and a connect attempt that starts just before the budget runs out.
pub const UNREACHABLE_MARGIN: Duration = Duration::from_millis(1500);

//! The adapter against the reference store, driven by the SDK's trait and by a real SDK client.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use flagstore::memory::MemoryStore;
use flagstore::testing::SDK_TOMBSTONES;
use flagstore::{Collection, Item, Kind, PersistentDataStore};
use flagstore_launchdarkly::LaunchDarklyStore;
use flagstore_launchdarkly::launchdarkly_server_sdk as ld;
use ld::{
    Client, ConfigBuilder, ContextBuilder, NullEventProcessorBuilder, PersistentDataStoreBuilder,
    PersistentDataStoreFactory,
};

/// The memory store, counting reads of single items.
#[derive(Debug, Default)]
struct Counted {
    inner: MemoryStore,
    gets: AtomicUsize,
}

impl fmt::Display for Counted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("counted memory store")
    }
}

#[async_trait]
impl PersistentDataStore for Counted {
    async fn init(&self, data: &[Collection]) -> flagstore::Result<()> {
        self.inner.init(data).await
    }
    async fn get(&self, kind: &Kind, key: &str) -> flagstore::Result<Option<Item>> {
        self.gets.fetch_add(1, Ordering::SeqCst);
        self.inner.get(kind, key).await
    }
    async fn get_all(&self, kind: &Kind) -> flagstore::Result<Vec<Item>> {
        self.inner.get_all(kind).await
    }
    async fn upsert(&self, kind: &Kind, item: Item) -> flagstore::Result<bool> {
        self.inner.upsert(kind, item).await
    }
    async fn is_initialized(&self) -> flagstore::Result<bool> {
        self.inner.is_initialized().await
    }
    async fn is_available(&self) -> bool {
        self.inner.is_available().await
    }
}

async fn with_tombstones() -> MemoryStore {
    let store = MemoryStore::new();
    let items = SDK_TOMBSTONES
        .iter()
        .map(|(key, json, _)| Item::from_json(*key, *json).unwrap())
        .collect();
    store
        .init(&[Collection::new(Kind::FEATURES, items)])
        .await
        .unwrap();
    store
}

fn check_tombstones(adapter: &dyn ld::PersistentDataStore) {
    for (key, _, version) in SDK_TOMBSTONES {
        let item = adapter.flag(key).unwrap().unwrap();
        assert!(item.deleted, "{key} must read as deleted");
        assert_eq!(item.version, version, "{key}");
    }
    assert!(adapter.flag("missing").unwrap().is_none());
    assert!(adapter.all_flags().unwrap().values().all(|i| i.deleted));
    assert!(adapter.is_initialized());
}

#[test]
fn works_without_any_runtime() {
    let store = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(with_tombstones());
    let factory = LaunchDarklyStore::new(store).unwrap();
    check_tombstones(factory.create_persistent_data_store().unwrap().as_ref());
}

#[tokio::test(flavor = "current_thread")]
async fn works_when_called_from_a_current_thread_runtime() {
    let factory = LaunchDarklyStore::new(with_tombstones().await).unwrap();
    // A synchronous call on the runtime's only thread, as the SDK makes it: no block_on panic,
    // no deadlock (the store runs on the adapter's own threads).
    check_tombstones(factory.create_persistent_data_store().unwrap().as_ref());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn works_when_called_from_a_multi_thread_runtime_and_drops_inside_it() {
    let factory = LaunchDarklyStore::new(with_tombstones().await).unwrap();
    let adapter = factory.create_persistent_data_store().unwrap();
    check_tombstones(adapter.as_ref());
    // Dropping the adapter's runtime inside async code must not panic.
    drop(adapter);
    drop(factory);
}

#[test]
fn upserts_and_inits_go_through_with_the_sdks_tombstones() {
    let factory = LaunchDarklyStore::new(MemoryStore::new()).unwrap();
    let mut adapter = factory.create_persistent_data_store().unwrap();
    let flag = |version: u64| ld::SerializedItem {
        version,
        deleted: false,
        serialized_item: format!(r#"{{"key":"f","version":{version},"on":true}}"#),
    };
    let all = ld::AllData {
        flags: [("f".to_owned(), flag(1))].into(),
        segments: Default::default(),
    };
    adapter.init(all).unwrap();
    assert!(adapter.upsert(ld::DataKind::Flag, "f", flag(2)).unwrap());
    assert!(!adapter.upsert(ld::DataKind::Flag, "f", flag(2)).unwrap());
    let tombstone = ld::SerializedItem {
        version: 3,
        deleted: true,
        serialized_item: String::new(),
    };
    assert!(adapter.upsert(ld::DataKind::Flag, "f", tombstone).unwrap());
    let stored = adapter.flag("f").unwrap().unwrap();
    assert!(stored.deleted && stored.version == 3);
    assert_eq!(
        stored.serialized_item,
        r#"{"key":"$deleted","version":3,"deleted":true}"#
    );
}

#[test]
fn store_errors_reach_the_sdk_with_backend_operation_and_key() {
    let store = MemoryStore::new();
    store.database().set_available(false);
    let factory = LaunchDarklyStore::new(store).unwrap();
    let adapter = factory.create_persistent_data_store().unwrap();
    let err = adapter.flag("my-flag").err().unwrap();
    assert_eq!(
        err.to_string(),
        "memory: get of features/my-flag failed: the memory database is offline (MemoryDatabase::set_available(false))"
    );
    assert!(!adapter.is_initialized());
}

/// The reason the adapter fills in `deleted`: the SDK caches a tombstone it recognises, but a
/// tombstone it cannot recognise (Python's, Node's) is "not found" and fetched on every evaluation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sdks_tombstone_is_cached_by_the_sdk() {
    let counted = Arc::new(Counted {
        inner: with_tombstones().await,
        gets: AtomicUsize::new(0),
    });
    let mut builder = PersistentDataStoreBuilder::new(Arc::new(
        LaunchDarklyStore::from_arc(counted.clone()).unwrap(),
    ));
    builder.cache_time(Duration::from_secs(300));
    let config = ConfigBuilder::new("sdk-key")
        .daemon_mode(true)
        .event_processor(&NullEventProcessorBuilder::new())
        .data_store(&builder)
        .build()
        .unwrap();
    let client = Client::build(config).unwrap();
    client.start_with_default_executor();
    let context = ContextBuilder::new("user").build().unwrap();
    for (key, _, _) in SDK_TOMBSTONES {
        for _ in 0..10 {
            let detail = client.bool_variation_detail(&context, key, true);
            let reason = serde_json::to_value(&detail.reason).unwrap();
            assert_eq!(
                reason,
                serde_json::json!({"kind": "ERROR", "errorKind": "FLAG_NOT_FOUND"}),
                "{key}"
            );
        }
    }
    assert_eq!(
        counted.gets.load(Ordering::SeqCst),
        3,
        "one read per tombstone, then the SDK's cache"
    );
}

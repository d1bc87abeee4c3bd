//! The conformance suite against the reference store and the caching wrapper in every mode.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flagstore::memory::{MemoryDatabase, MemoryStore};
use flagstore::testing::{self, StoreFactory, UpsertHook};
use flagstore::{CachingStore, DynStore};

/// Memory stores on one shared database, each passed through `wrap`.
struct Memory {
    db: MemoryDatabase,
    wrap: fn(MemoryStore) -> DynStore,
}

#[async_trait]
impl StoreFactory for Memory {
    async fn store(&self, prefix: &str, hook: Option<UpsertHook>) -> DynStore {
        let store = self.db.store(prefix);
        (self.wrap)(match hook {
            Some(hook) => store.before_upsert_write(hook),
            None => store,
        })
    }

    async fn clear(&self, prefix: &str) {
        self.db.clear(prefix);
    }

    async fn unreachable_store(&self) -> DynStore {
        let db = MemoryDatabase::new();
        db.set_available(false);
        (self.wrap)(db.store("unreachable"))
    }

    fn unreachable_budget(&self) -> Duration {
        Duration::ZERO
    }
}

async fn suite(wrap: fn(MemoryStore) -> DynStore) {
    testing::run(&Memory {
        db: MemoryDatabase::new(),
        wrap,
    })
    .await;
}

#[tokio::test]
async fn memory_store() {
    suite(|s| Arc::new(s)).await;
}

#[tokio::test]
async fn memory_store_behind_a_dyn_arc() {
    suite(|s| {
        let inner: DynStore = Arc::new(s);
        Arc::new(inner)
    })
    .await;
}

#[tokio::test]
async fn cached_with_a_ttl() {
    suite(|s| {
        Arc::new(
            CachingStore::builder(s)
                .cache_time(Duration::from_secs(30))
                .build()
                .unwrap(),
        )
    })
    .await;
}

#[tokio::test]
async fn cache_disabled() {
    suite(|s| Arc::new(CachingStore::builder(s).no_caching().build().unwrap())).await;
}

#[tokio::test]
async fn cached_forever() {
    suite(|s| Arc::new(CachingStore::builder(s).cache_forever().build().unwrap())).await;
}

#[tokio::test]
async fn cached_with_a_tiny_capacity() {
    suite(|s| {
        Arc::new(
            CachingStore::builder(s)
                .capacity_bytes(2_000)
                .build()
                .unwrap(),
        )
    })
    .await;
}

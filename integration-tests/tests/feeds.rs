//! The change-feed conformance suite (`flagstore::testing::run_changes`) against every store
//! that has a feed: memory, Redis (single node, Cluster, Sentinel; each with client tracking
//! and with keyspace notifications), Consul and DynamoDB (its stream, on moto). Each runs on a server this test starts itself,
//! since the suite restarts it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use flagstore::DynStore;
use flagstore::memory::MemoryDatabase;
use flagstore::testing::{FeedFactory, run_changes};
use flagstore_consul::ConsulStore;
use flagstore_dynamodb::{DynamoDbStore, DynamoDbStoreBuilder};
use flagstore_integration_tests::consul::Consul;
use flagstore_integration_tests::moto::Moto;
use flagstore_integration_tests::redis::{Redis, RedisCluster, RedisSentinel};
use flagstore_integration_tests::redis_with_feed_mode;
use flagstore_redis::FeedMode;

/// Runs blocking server control (starting processes, waiting on their logs) off the runtime's
/// workers.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(work)
}

struct Memory(MemoryDatabase);

#[async_trait]
impl FeedFactory for Memory {
    async fn store(&self, prefix: &str) -> DynStore {
        Arc::new(self.0.store(prefix))
    }

    async fn restart_server(&self, _prefix: &str) {
        self.0.set_available(false);
        self.0.set_available(true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_feed() {
    run_changes(&Memory(MemoryDatabase::new())).await;
}

struct SingleRedis(Mutex<Redis>, FeedMode);

#[async_trait]
impl FeedFactory for SingleRedis {
    async fn store(&self, prefix: &str) -> DynStore {
        let url = self.0.lock().unwrap().url().to_owned();
        redis_with_feed_mode(&url, prefix, self.1)
    }

    async fn restart_server(&self, _prefix: &str) {
        blocking(|| self.0.lock().unwrap().restart_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_tracking_feed() {
    let redis = Mutex::new(Redis::start_local(&[]));
    run_changes(&SingleRedis(redis, FeedMode::Tracking)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keyspace_feed() {
    let redis = Mutex::new(Redis::start_local(&[]));
    run_changes(&SingleRedis(redis, FeedMode::Keyspace)).await;
}

struct Cluster(Mutex<RedisCluster>, FeedMode);

/// One hash tag keeps a prefix's keys on one node, as a cluster prefix must.
fn tagged(prefix: &str) -> String {
    format!("{{{prefix}}}")
}

#[async_trait]
impl FeedFactory for Cluster {
    async fn store(&self, prefix: &str) -> DynStore {
        let url = self.0.lock().unwrap().url();
        redis_with_feed_mode(&url, &tagged(prefix), self.1)
    }

    async fn restart_server(&self, prefix: &str) {
        blocking(|| {
            let mut cluster = self.0.lock().unwrap();
            let port = cluster.node_for_slot(cluster.keyslot(&tagged(prefix)));
            cluster.restart_node_on(port);
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_tracking_feed() {
    let cluster = Mutex::new(RedisCluster::start());
    run_changes(&Cluster(cluster, FeedMode::Tracking)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_keyspace_feed() {
    let cluster = Mutex::new(RedisCluster::start());
    run_changes(&Cluster(cluster, FeedMode::Keyspace)).await;
}

struct Sentinel(Mutex<RedisSentinel>, FeedMode);

#[async_trait]
impl FeedFactory for Sentinel {
    async fn store(&self, prefix: &str) -> DynStore {
        let url = self.0.lock().unwrap().url();
        redis_with_feed_mode(&url, prefix, self.1)
    }

    async fn restart_server(&self, _prefix: &str) {
        blocking(|| self.0.lock().unwrap().fail_over());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sentinel_tracking_feed() {
    let sentinel = Mutex::new(RedisSentinel::start());
    run_changes(&Sentinel(sentinel, FeedMode::Tracking)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sentinel_keyspace_feed() {
    let sentinel = Mutex::new(RedisSentinel::start());
    run_changes(&Sentinel(sentinel, FeedMode::Keyspace)).await;
}

struct LocalConsul(Mutex<Consul>);

#[async_trait]
impl FeedFactory for LocalConsul {
    async fn store(&self, prefix: &str) -> DynStore {
        let address = self.0.lock().unwrap().address().to_owned();
        Arc::new(
            ConsulStore::builder()
                .url(address)
                .prefix(prefix)
                .build()
                .unwrap(),
        )
    }

    async fn restart_server(&self, _prefix: &str) {
        blocking(|| self.0.lock().unwrap().restart_empty());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_feed() {
    run_changes(&LocalConsul(Mutex::new(Consul::start_local_agent()))).await;
}

struct MotoDynamo(Mutex<Moto>);

/// The table every prefix of the DynamoDB feed cases shares, as SDKs sharing a table do.
const TABLE: &str = "flagstore-feeds";

/// A store on moto; the table (with its stream) is made if missing.
async fn moto_store(builder: DynamoDbStoreBuilder, prefix: &str) -> Arc<DynamoDbStore> {
    let store = builder
        .prefix(prefix)
        .stream_poll_interval(std::time::Duration::from_millis(200))
        .build()
        .unwrap();
    flagstore_dynamodb::create_table(store.client().await, TABLE)
        .await
        .unwrap();
    Arc::new(store)
}

#[async_trait]
impl FeedFactory for MotoDynamo {
    async fn store(&self, prefix: &str) -> DynStore {
        let builder = self.0.lock().unwrap().builder(TABLE);
        moto_store(builder, prefix).await
    }

    async fn restart_server(&self, prefix: &str) {
        blocking(|| self.0.lock().unwrap().restart_empty());
        self.store(prefix).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_stream_feed() {
    run_changes(&MotoDynamo(Mutex::new(Moto::start_local()))).await;
}

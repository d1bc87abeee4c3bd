//! How long a full `init` takes on each backend, against the in-memory store as the baseline in
//! the same run. Starts the real servers the tests use (see the harness), so run it where
//! `scripts/install-servers.sh` has run:
//!
//! ```sh
//! cargo bench -p flagstore-integration-tests --bench init            # 1,000 and 5,000 flags
//! cargo bench -p flagstore-integration-tests --bench init -- 200 20000
//! ```
//!
//! Each size is initialized three times on a fresh prefix; the table shows the median, then the
//! time to read every flag back with `get_all`. Redis runs as one node, as a local three-primary
//! cluster, and as a primary with a replica behind a Sentinel, all in the same run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use flagstore::memory::MemoryStore;

use flagstore::{Collection, DynStore, Item, Kind, PersistentDataStore, sort_for_init};
use flagstore_consul::ConsulStore;
use flagstore_dynamodb::{DynamoDbStore, create_table};
use flagstore_integration_tests::consul::Consul;
use flagstore_integration_tests::dynamodb::DynamoDb;
use flagstore_integration_tests::realistic_flag;
use flagstore_integration_tests::redis::{MASTER_NAME, Redis, RedisCluster, RedisSentinel};
use flagstore_redis::RedisStore;

fn data(n: usize) -> Vec<Collection> {
    sort_for_init(vec![Collection::new(
        Kind::FEATURES,
        (0..n)
            .map(|i| {
                let (key, json) = realistic_flag(i, 3);
                Item::from_json(key, json).unwrap()
            })
            .collect(),
    )])
}

async fn measure(name: &str, make: &dyn Fn(String) -> DynStore, n: usize) {
    let data = data(n);
    let mut inits = Vec::new();
    let mut reads = Vec::new();
    for round in 0..3 {
        let store = make(format!("bench{n}r{round}x{}", std::process::id()));
        let started = Instant::now();
        store.init(&data).await.unwrap();
        inits.push(started.elapsed());
        let started = Instant::now();
        assert_eq!(store.get_all(&Kind::FEATURES).await.unwrap().len(), n);
        reads.push(started.elapsed());
    }
    inits.sort();
    reads.sort();
    println!(
        "| {name:<9} | {n:>6} | {:>10} | {:>13} |",
        show(inits[1]),
        show(reads[1])
    );
}

fn show(d: Duration) -> String {
    if d < Duration::from_millis(10) {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.0} ms", d.as_secs_f64() * 1e3)
    }
}

#[tokio::main]
async fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 5_000]
    } else {
        sizes
    };

    let redis = Redis::start();
    let cluster = RedisCluster::start();
    let sentinel = RedisSentinel::start();
    let dynamo = DynamoDb::start();
    let consul = Consul::start();
    let table = format!("bench_{}", std::process::id());
    let probe = DynamoDbStore::builder(&table)
        .url(dynamo.endpoint())
        .region("us-east-1")
        .static_credentials("bench", "bench")
        .build()
        .unwrap();
    create_table(probe.client().await, &table).await.unwrap();

    let memory = |_prefix: String| -> DynStore { std::sync::Arc::new(MemoryStore::new()) };
    let redis_store = |prefix: String| -> DynStore {
        std::sync::Arc::new(
            RedisStore::builder()
                .url(redis.url())
                .prefix(prefix)
                .build()
                .unwrap(),
        )
    };
    // A cluster's prefix holds a hash tag, so that its keys share one slot.
    let cluster_store = |prefix: String| -> DynStore {
        std::sync::Arc::new(
            RedisStore::builder()
                .cluster_nodes(cluster.nodes())
                .prefix(format!("{{{prefix}}}"))
                .build()
                .unwrap(),
        )
    };
    let sentinel_store = |prefix: String| -> DynStore {
        std::sync::Arc::new(
            RedisStore::builder()
                .sentinel([sentinel.sentinel_node()], MASTER_NAME)
                .prefix(prefix)
                .build()
                .unwrap(),
        )
    };
    let dynamo_store = |prefix: String| -> DynStore {
        std::sync::Arc::new(
            DynamoDbStore::builder(&table)
                .url(dynamo.endpoint())
                .region("us-east-1")
                .static_credentials("bench", "bench")
                .prefix(prefix)
                .build()
                .unwrap(),
        )
    };

    let consul_store = |prefix: String| -> DynStore {
        std::sync::Arc::new(
            ConsulStore::builder()
                .url(consul.address())
                .prefix(prefix)
                .build()
                .unwrap(),
        )
    };

    println!("| backend   |  flags |  init (p50) | get_all (p50) |");
    println!("|-----------|-------:|------------:|--------------:|");
    for &n in &sizes {
        measure("memory", &memory, n).await;
        measure("redis", &redis_store, n).await;
        measure("cluster", &cluster_store, n).await;
        measure("sentinel", &sentinel_store, n).await;
        measure("dynamodb", &dynamo_store, n).await;
        measure("consul", &consul_store, n).await;
    }
}

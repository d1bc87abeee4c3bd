//! The Redis store on a real local Redis Cluster (three primaries) and on a primary watched by
//! Redis Sentinel: the whole conformance suite in both modes, where a cluster puts the keys, a
//! failover followed without a restart, and bad configurations refused clearly.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use async_trait::async_trait;
use flagstore::testing::{self, StoreFactory, UpsertHook, flag, segment, unique_run_id};
use flagstore::{CachingStore, Collection, DynStore, Item, Kind, PersistentDataStore};
use flagstore_integration_tests::redis::{MASTER_NAME, RedisCluster, RedisSentinel};
use flagstore_integration_tests::{free_port, maybe_cached};
use flagstore_redis::redis::{self, AsyncCommands};
use flagstore_redis::{RedisStore, RedisStoreBuilder};

/// Stores on a cluster or behind a Sentinel, for the suite.
enum Target<'a> {
    Cluster(&'a RedisCluster),
    Sentinel(&'a RedisSentinel),
}

struct ScaleOutFactory<'a> {
    target: Target<'a>,
    cached: bool,
}

impl ScaleOutFactory<'_> {
    /// A cluster needs a hash tag in the prefix: the suite's prefix becomes `{prefix}`.
    fn prefix(&self, prefix: &str) -> String {
        match self.target {
            Target::Cluster(_) => format!("{{{prefix}}}"),
            Target::Sentinel(_) => prefix.to_owned(),
        }
    }

    fn builder(&self, prefix: &str) -> RedisStoreBuilder {
        let url = match self.target {
            Target::Cluster(cluster) => cluster.url(),
            Target::Sentinel(sentinel) => sentinel.url(),
        };
        RedisStore::builder().url(url).prefix(self.prefix(prefix))
    }

    /// Runs `KEYS pattern` and deletes what it finds, bypassing the store under test.
    async fn delete_matching(&self, pattern: &str) {
        match self.target {
            Target::Cluster(cluster) => {
                let client = redis::cluster::ClusterClient::new(
                    cluster
                        .nodes()
                        .iter()
                        .map(|n| format!("redis://{n}"))
                        .collect::<Vec<_>>(),
                )
                .unwrap();
                let mut conn = client.get_async_connection().await.unwrap();
                let keys: Vec<String> = conn.keys(pattern).await.unwrap();
                for key in keys {
                    let _: () = conn.del(key).await.unwrap();
                }
            }
            Target::Sentinel(sentinel) => {
                let url = format!("redis://127.0.0.1:{}", sentinel.primary_port());
                let mut conn = redis::Client::open(url)
                    .unwrap()
                    .get_multiplexed_async_connection()
                    .await
                    .unwrap();
                let keys: Vec<String> = conn.keys(pattern).await.unwrap();
                if !keys.is_empty() {
                    let _: () = conn.del(keys).await.unwrap();
                }
            }
        }
    }
}

#[async_trait]
impl StoreFactory for ScaleOutFactory<'_> {
    async fn store(&self, prefix: &str, hook: Option<UpsertHook>) -> DynStore {
        let builder = self.builder(prefix);
        let builder = match hook {
            Some(hook) => builder.before_upsert_write(hook),
            None => builder,
        };
        maybe_cached(builder.build().unwrap(), self.cached)
    }

    async fn clear(&self, prefix: &str) {
        self.delete_matching(&format!("{}:*", self.prefix(prefix)))
            .await;
    }

    async fn unreachable_store(&self) -> DynStore {
        let closed = format!("127.0.0.1:{}", free_port());
        let builder = match self.target {
            Target::Cluster(_) => RedisStore::builder()
                .cluster_nodes([closed])
                .prefix("{unreachable}"),
            Target::Sentinel(_) => RedisStore::builder().sentinel([closed], MASTER_NAME),
        };
        let store = builder
            .connect_timeout(Duration::from_millis(500))
            .request_timeout(Duration::from_millis(800))
            .build()
            .unwrap();
        maybe_cached(store, self.cached)
    }

    /// Connect and request timeout: a call may spend both.
    fn unreachable_budget(&self) -> Duration {
        Duration::from_millis(500 + 800)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_on_a_cluster() {
    let cluster = RedisCluster::start();
    for cached in [false, true] {
        testing::run(&ScaleOutFactory {
            target: Target::Cluster(&cluster),
            cached,
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_behind_sentinel() {
    let sentinel = RedisSentinel::start();
    testing::run(&ScaleOutFactory {
        target: Target::Sentinel(&sentinel),
        cached: false,
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_keeps_every_key_of_a_prefix_in_one_slot_in_the_sdks_schema() {
    let cluster = RedisCluster::start();
    let store = RedisStore::builder()
        .cluster_nodes(cluster.nodes())
        .prefix("{launchdarkly}")
        .build()
        .unwrap();
    assert!(
        store
            .to_string()
            .starts_with("redis store cluster redis+cluster://127.0.0.1:")
    );
    store
        .init(&[
            Collection::new(Kind::SEGMENTS, vec![segment("s", 1)]),
            Collection::new(Kind::FEATURES, vec![flag("f", 2)]),
        ])
        .await
        .unwrap();
    assert!(store.upsert(&Kind::FEATURES, flag("g", 1)).await.unwrap());

    // The other SDKs' key names, with the prefix as given; one slot, served by one node.
    let keys = [
        "{launchdarkly}:features",
        "{launchdarkly}:segments",
        "{launchdarkly}:$inited",
    ];
    let slots: Vec<u16> = keys.iter().map(|k| cluster.keyslot(k)).collect();
    assert_eq!(slots, vec![slots[0]; 3], "{keys:?} in slots {slots:?}");
    assert_eq!(
        slots[0],
        cluster.keyslot("launchdarkly"),
        "the hash tag decides the slot"
    );
    let node = cluster.node_for_slot(slots[0]);
    let mut conn = redis::Client::open(format!("redis://127.0.0.1:{node}"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for key in keys {
        assert!(
            conn.exists::<_, bool>(key).await.unwrap(),
            "{key} on node {node}"
        );
    }
    let stored: String = conn.hget("{launchdarkly}:features", "f").await.unwrap();
    assert_eq!(stored, flag("f", 2).json());

    // Another instance (another process, say) reads it all.
    let reader = RedisStore::builder()
        .url(cluster.url())
        .prefix("{launchdarkly}")
        .build()
        .unwrap();
    assert!(reader.is_initialized().await.unwrap());
    let mut flags: Vec<Item> = reader.get_all(&Kind::FEATURES).await.unwrap();
    flags.sort_by(|a, b| a.key().cmp(b.key()));
    assert_eq!(flags, vec![flag("f", 2), flag("g", 1)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_is_followed_without_a_restart_and_loses_nothing_acknowledged() {
    let mut sentinel = RedisSentinel::start();
    let store = RedisStore::builder()
        .sentinel([sentinel.sentinel_node()], MASTER_NAME)
        .prefix("failover")
        .connect_timeout(Duration::from_millis(500))
        .request_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let cache = CachingStore::builder(
        RedisStore::builder()
            .url(sentinel.url())
            .prefix("failover")
            .request_timeout(Duration::from_secs(2))
            .build()
            .unwrap(),
    )
    .no_caching()
    .build()
    .unwrap();
    let flags: Vec<Item> = (0..50).map(|i| flag(&format!("f{i}"), 1)).collect();
    store
        .init(&[Collection::new(Kind::FEATURES, flags)])
        .await
        .unwrap();
    for i in 0..10 {
        assert!(
            store
                .upsert(&Kind::FEATURES, flag(&format!("f{i}"), 2))
                .await
                .unwrap()
        );
    }
    // Redis replicates asynchronously: what the replica has acknowledged survives a failover.
    sentinel.wait_for_replication();
    let old_primary = sentinel.primary_port();

    sentinel.fail_over();
    assert_ne!(sentinel.primary_port(), old_primary);

    // The same store instances go on, on the new primary. Calls made while the pool notices the
    // change may fail (each within its timeout); within a few seconds they succeed.
    let started = Instant::now();
    let all = loop {
        match store.get_all(&Kind::FEATURES).await {
            Ok(all) => break all,
            Err(err) => {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "still failing: {err}"
                );
                tokio::task::yield_now().await;
            }
        }
    };
    assert_eq!(all.len(), 50, "every acknowledged item survived");
    for i in 0..10 {
        let key = format!("f{i}");
        assert_eq!(
            store.get(&Kind::FEATURES, &key).await.unwrap(),
            Some(flag(&key, 2))
        );
    }
    assert!(
        store
            .upsert(&Kind::FEATURES, flag("after", 1))
            .await
            .unwrap()
    );
    assert!(store.is_initialized().await.unwrap());
    // A store built from the sentinel URL (here behind a cache) follows it too.
    let started = Instant::now();
    while cache
        .get(&Kind::FEATURES, "after")
        .await
        .ok()
        .flatten()
        .is_none()
    {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the URL-built store never recovered"
        );
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_scale_out_configurations_fail_clearly_and_quickly() {
    // A prefix whose keys would span slots.
    let err = RedisStore::builder()
        .cluster_nodes(["127.0.0.1:7000"])
        .build()
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        r#"redis: invalid configuration: in cluster mode the prefix must hold a hash tag, such as "{launchdarkly}", so that all of its keys share one hash slot (atomic init, WATCH on upsert); prefix "launchdarkly" has none. Every SDK and Relay Proxy sharing the data must use the same prefix"#
    );
    let err = RedisStore::builder()
        .url("redis+cluster://127.0.0.1:7000")
        .cluster_nodes(["127.0.0.1:7001"])
        .prefix("{p}")
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("give one of url, cluster_nodes and sentinel"),
        "{err}"
    );

    // The message and its cause, as an error-chain printer shows them.
    let with_cause = |err: &flagstore::Error| {
        let cause = std::error::Error::source(err).map(|s| s.to_string());
        format!("{err}: {}", cause.unwrap_or_default())
    };
    let timed = |store: RedisStore| async move {
        let started = Instant::now();
        let err = store.get(&Kind::FEATURES, "f").await.unwrap_err();
        let took = started.elapsed();
        assert!(took <= Duration::from_millis(1200), "took {took:?}: {err}");
        err
    };
    // Unreachable cluster nodes.
    let store = RedisStore::builder()
        .url(format!(
            "redis+cluster://127.0.0.1:{},127.0.0.1:{}",
            free_port(),
            free_port()
        ))
        .prefix("{p}")
        .connect_timeout(Duration::from_millis(300))
        .request_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let err = timed(store).await;
    assert!(err.is_outage(), "{err}");

    // A cluster whose slots nobody serves.
    let unassigned = RedisCluster::start_without_slots();
    let store = RedisStore::builder()
        .cluster_nodes(unassigned.nodes())
        .prefix("{p}")
        .request_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let err = timed(store).await;
    assert!(err.is_outage(), "{err}");

    // A primary name the Sentinel does not know.
    let sentinel = RedisSentinel::start();
    let store = RedisStore::builder()
        .sentinel([sentinel.sentinel_node()], "no-such-master")
        .request_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let err = timed(store).await;
    let chain = with_cause(&err);
    assert!(chain.contains("redis: get of features/f failed"), "{chain}");
    assert!(
        chain.contains(r#"names a primary for "no-such-master""#),
        "{chain}"
    );
    assert!(chain.contains(&sentinel.sentinel_node()), "{chain}");

    // Every Sentinel down: said so, with the addresses tried, and no password.
    let closed = format!("127.0.0.1:{}", free_port());
    let store = RedisStore::builder()
        .url(format!("redis+sentinel://app:s3cret@{closed}/mymaster"))
        .connect_timeout(Duration::from_millis(300))
        .request_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let err = timed(store).await;
    let chain = with_cause(&err);
    assert!(chain.contains("every Sentinel is down"), "{chain}");
    assert!(chain.contains(&closed), "{chain}");
    assert!(!chain.contains("s3cret"), "{chain}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_the_sentinels_name_late_is_waited_for_within_the_budget() {
    // Right after a failover the Sentinels may not name a usable primary for a moment, and the
    // driver says so exactly as for a misspelt name. Here the Sentinel learns the name 300 ms
    // after the read starts: the read retries and succeeds.
    let sentinel = RedisSentinel::start();
    let store = RedisStore::builder()
        .sentinel([sentinel.sentinel_node()], "late")
        .prefix(format!("late_{}", unique_run_id()))
        .request_timeout(Duration::from_secs(4))
        .build()
        .unwrap();
    let started = Instant::now();
    let read = tokio::spawn(async move { store.get(&Kind::FEATURES, "f").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!read.is_finished(), "the read gave up at once");
    tokio::task::block_in_place(|| sentinel.monitor("late"));
    let got = read.await.unwrap();
    assert!(got.is_ok(), "{got:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

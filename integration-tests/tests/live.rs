//! Live daemon mode on real servers: a reader caching for ten minutes sees every change, by any
//! writer (the LaunchDarkly Python SDK's own stores included), within a second (DynamoDB's
//! stream: two); it falls back to
//! the normal cache time while its change feed is down, and keeps the last known good data when
//! the database is wiped.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use flagstore::testing::unique_run_id;
use flagstore::{
    CachingStore, CachingStoreBuilder, Collection, DynStore, Item, Kind, PersistentDataStore,
    StoreStatus,
};
use flagstore_consul::ConsulStore;
use flagstore_dynamodb::DynamoDbStore;
use flagstore_integration_tests::consul::Consul;
use flagstore_integration_tests::moto::Moto;
use flagstore_integration_tests::python::ld_compat;
use flagstore_integration_tests::redis::{Redis, RedisCluster, RedisSentinel};
use flagstore_integration_tests::{live_cache, redis_with_feed};
use flagstore_redis::{FeedMode, RedisStore, redis};
use serde_json::json;

const F: Kind = Kind::FEATURES;
/// The bound: a change is seen within this long.
const PROPAGATION: Duration = Duration::from_secs(1);

fn flag(key: &str, version: u64) -> Item {
    Item::from_json(
        key,
        json!({"key": key, "version": version, "on": true}).to_string(),
    )
    .unwrap()
}

async fn wait_status(store: &CachingStore, what: &str, test: impl Fn(&StoreStatus) -> bool) {
    let mut status = store.subscribe();
    tokio::time::timeout(Duration::from_secs(30), status.wait_for(test))
        .await
        .unwrap_or_else(|_| panic!("{what}: status stayed {:?}", store.status()))
        .unwrap();
}

/// How long `reader` took to show `key` at `version`, failing after `bound`.
async fn seen_within(reader: &CachingStore, key: &str, version: u64, bound: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let got = reader
            .get(&F, key)
            .await
            .ok()
            .flatten()
            .map(|i| i.version());
        if got == Some(version) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < bound,
            "{key} still at {got:?}, not {version}, after {bound:?}"
        );
        tokio::task::yield_now().await;
    }
}

/// Seeds `writer`, makes a live reader on `reader`, and checks it caches: a second read makes
/// no database read (a change would be needed for one).
async fn seeded_reader(writer: &dyn PersistentDataStore, reader: DynStore) -> CachingStore {
    writer
        .init(&[Collection::new(F, vec![flag("f", 1)])])
        .await
        .unwrap();
    let reader = live_cache(reader, Duration::from_secs(15)).await;
    assert_eq!(reader.get(&F, "f").await.unwrap().unwrap().version(), 1);
    reader
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_live_reader_sees_a_python_sdk_write_within_a_second() {
    let redis = Redis::start();
    let prefix = format!("live_{}", unique_run_id());
    let store = redis_with_feed(redis.url(), &prefix);
    let reader = seeded_reader(&*store, store.clone()).await;

    let spec = json!({"backend": "redis", "url": redis.url(), "prefix": prefix}).to_string();
    let item = json!({"key": "f", "version": 2, "on": false}).to_string();
    tokio::task::spawn_blocking(move || ld_compat(&["upsert", &spec, "features", &item]))
        .await
        .unwrap();
    let took = seen_within(&reader, "f", 2, PROPAGATION).await;
    eprintln!("redis: seen {took:?} after the Python SDK's write returned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_live_reader_sees_a_python_sdk_write_within_a_second() {
    let consul = Consul::start();
    let prefix = format!("live_{}", unique_run_id());
    let store: Arc<ConsulStore> = Arc::new(
        ConsulStore::builder()
            .url(consul.address())
            .prefix(&prefix)
            .build()
            .unwrap(),
    );
    let reader = seeded_reader(&*store, store.clone()).await;

    let rest = consul
        .address()
        .split("://")
        .nth(1)
        .unwrap()
        .trim_end_matches('/');
    let (host, port) = rest.rsplit_once(':').unwrap();
    let spec = json!({"backend": "consul", "host": host, "port": port.parse::<u16>().unwrap(), "prefix": prefix})
        .to_string();
    let item = json!({"key": "f", "version": 2, "on": false}).to_string();
    tokio::task::spawn_blocking(move || ld_compat(&["upsert", &spec, "features", &item]))
        .await
        .unwrap();
    let took = seen_within(&reader, "f", 2, PROPAGATION).await;
    eprintln!("consul: seen {took:?} after the Python SDK's write returned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_and_sentinel_live_readers_see_writes_within_a_second() {
    let cluster = RedisCluster::start();
    let prefix = format!("{{live_{}}}", unique_run_id());
    let writer = redis_with_feed(&cluster.url(), &prefix);
    let reader = seeded_reader(&*writer, redis_with_feed(&cluster.url(), &prefix)).await;
    writer.upsert(&F, flag("f", 2)).await.unwrap();
    seen_within(&reader, "f", 2, PROPAGATION).await;

    let sentinel = RedisSentinel::start();
    let prefix = format!("live_{}", unique_run_id());
    let writer = redis_with_feed(&sentinel.url(), &prefix);
    let reader = seeded_reader(&*writer, redis_with_feed(&sentinel.url(), &prefix)).await;
    writer.upsert(&F, flag("f", 2)).await.unwrap();
    seen_within(&reader, "f", 2, PROPAGATION).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_feed_outage_falls_back_to_the_ttl_and_recovers() {
    let mut redis = Redis::start_local(&[]);
    let prefix = format!("live_{}", unique_run_id());
    let writer = redis_with_feed(redis.url(), &prefix);
    writer
        .init(&[Collection::new(F, vec![flag("f", 1)])])
        .await
        .unwrap();
    let ttl = Duration::from_secs(1);
    let reader = live_cache(redis_with_feed(redis.url(), &prefix), ttl).await;
    reader.get(&F, "f").await.unwrap();
    // Taken after the read returns, so at or after the entry's own time stamp.
    let read_at = Instant::now();

    redis.stop();
    wait_status(&reader, "feed down", |s| !s.live).await;
    // The entry is older than the normal TTL now that nothing vouches for it: not served.
    tokio::time::sleep(ttl.saturating_sub(read_at.elapsed())).await;
    assert!(reader.get(&F, "f").await.is_err(), "served past the TTL");

    // Back, empty (no persistence), and written again at once: the reader reconnects, re-reads
    // and follows changes as before.
    redis.restart_empty();
    writer
        .init(&[Collection::new(F, vec![flag("f", 5)])])
        .await
        .unwrap();
    wait_status(&reader, "feed back", |s| s.live && s.available).await;
    seen_within(&reader, "f", 5, PROPAGATION).await;
    writer.upsert(&F, flag("f", 6)).await.unwrap();
    seen_within(&reader, "f", 6, PROPAGATION).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_redis_keeps_serving_the_last_known_good_flags() {
    let mut redis = Redis::start_local(&[]);
    let prefix = format!("live_{}", unique_run_id());
    let writer = redis_with_feed(redis.url(), &prefix);
    writer
        .init(&[Collection::new(F, vec![flag("f", 1), flag("g", 1)])])
        .await
        .unwrap();
    let reader = CachingStoreBuilder::from_arc(redis_with_feed(redis.url(), &prefix))
        .cache_time(Duration::from_secs(15))
        .invalidate_on_changes()
        .keep_last_known_good()
        .build()
        .unwrap();
    wait_status(&reader, "feed connects", |s| s.live).await;
    assert_eq!(reader.get_all(&F).await.unwrap().len(), 2);
    reader.get(&F, "f").await.unwrap();

    // The Relay Proxy's old complaint: Redis restarts without persistence.
    redis.restart_empty();
    wait_status(&reader, "feed back", |s| s.live && s.available).await;
    assert_eq!(reader.get(&F, "f").await.unwrap().unwrap().version(), 1);
    assert_eq!(reader.get_all(&F).await.unwrap().len(), 2);
    assert!(reader.status().last_known_good);

    // Re-fed: the new data shows, and the degraded state ends.
    writer
        .init(&[Collection::new(F, vec![flag("f", 7)])])
        .await
        .unwrap();
    seen_within(&reader, "f", 7, PROPAGATION).await;
    assert!(!reader.status().last_known_good);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_keyspace_events_is_reported_by_name() {
    let redis = Redis::start_local(&[]);
    let store = RedisStore::builder()
        .url(redis.url())
        .feed(FeedMode::Keyspace)
        .build()
        .unwrap();
    let mut feed = store.changes().unwrap();
    match feed.next().await {
        Some(flagstore::changes::FeedEvent::Lost(err)) => {
            let message = err.to_string();
            assert!(message.contains("notify-keyspace-events"), "{message}");
            assert!(message.contains("configure_keyspace_events"), "{message}");
        }
        other => panic!("expected the missing setting, got {other:?}"),
    }
}

/// Consul restarted empty (a dev agent keeps nothing): the feed's blocking query breaks, it
/// reconnects with backoff, and the reconnection alone makes the reader re-read: the new data
/// shows well within the 15-second TTL, and changes after that propagate live again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consul_restart_is_followed_by_the_feed() {
    let mut consul = Consul::start_local_agent();
    let prefix = format!("live_{}", unique_run_id());
    let store = |consul: &Consul| -> Arc<ConsulStore> {
        Arc::new(
            ConsulStore::builder()
                .url(consul.address())
                .prefix(&prefix)
                .build()
                .unwrap(),
        )
    };
    let writer = store(&consul);
    writer
        .init(&[Collection::new(F, vec![flag("f", 1)])])
        .await
        .unwrap();
    let reader = live_cache(store(&consul), Duration::from_secs(15)).await;
    assert_eq!(reader.get(&F, "f").await.unwrap().unwrap().version(), 1);

    consul.restart_empty();
    writer
        .init(&[Collection::new(F, vec![flag("f", 4)])])
        .await
        .unwrap();
    seen_within(&reader, "f", 4, Duration::from_secs(10)).await;
    wait_status(&reader, "feed back", |s| s.live).await;
    writer.upsert(&F, flag("f", 5)).await.unwrap();
    seen_within(&reader, "f", 5, PROPAGATION).await;
}

/// A `FLUSHALL` is invisible to keyspace notifications; with client tracking (what `auto` picks
/// on Redis 6+) a live reader stops serving the flushed flags within a second, says the store
/// is no longer initialized, and a last-known-good reader reports that it is holding on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushall_is_seen_within_a_second_with_client_tracking() {
    let redis = Redis::start_local(&[]);
    let prefix = format!("live_{}", unique_run_id());
    let writer = redis_with_feed(redis.url(), &prefix);
    let reader = seeded_reader(&*writer, redis_with_feed(redis.url(), &prefix)).await;
    let keeping = CachingStoreBuilder::from_arc(redis_with_feed(redis.url(), &prefix))
        .cache_time(Duration::from_secs(15))
        .invalidate_on_changes()
        .live_cache_time(Duration::from_secs(600))
        .keep_last_known_good()
        .build()
        .unwrap();
    wait_status(&keeping, "feed connects", |s| s.live).await;
    assert!(reader.is_initialized().await.unwrap());
    assert_eq!(keeping.get(&F, "f").await.unwrap().unwrap().version(), 1);

    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let flushed = Instant::now();
    redis::cmd("FLUSHALL")
        .query_async::<()>(&mut conn)
        .await
        .unwrap();
    loop {
        let gone = reader.get(&F, "f").await.unwrap().is_none();
        if gone && !reader.is_initialized().await.unwrap() {
            break;
        }
        assert!(
            flushed.elapsed() < PROPAGATION,
            "the flushed flag still served after {PROPAGATION:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!("flush seen after {:?}", flushed.elapsed());
    loop {
        let kept = keeping.get(&F, "f").await.unwrap();
        assert_eq!(kept.map(|f| f.version()), Some(1), "last known good lost");
        if keeping.status().last_known_good {
            break;
        }
        assert!(flushed.elapsed() < PROPAGATION, "the wipe went unreported");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A managed Redis: `notify-keyspace-events` empty and `CONFIG` refused. `auto` follows client
/// tracking, which needs neither, so the reader is live all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_gives_a_live_reader_where_config_is_refused() {
    let redis = Redis::start_local(&["--rename-command", "CONFIG", ""]);
    let prefix = format!("live_{}", unique_run_id());
    let store = RedisStore::builder()
        .url(redis.url())
        .prefix(&prefix)
        .build()
        .unwrap();
    let mut feed = store.changes().unwrap();
    match feed.next().await {
        Some(flagstore::changes::FeedEvent::Connected) => {}
        other => panic!("expected the feed to connect, got {other:?}"),
    }
    let via = feed.via().unwrap();
    assert!(via.contains("client tracking"), "{via}");

    let writer = redis_with_feed(redis.url(), &prefix);
    let reader = seeded_reader(&*writer, Arc::new(store)).await;
    writer.upsert(&F, flag("f", 2)).await.unwrap();
    seen_within(&reader, "f", 2, PROPAGATION).await;
}

/// A server that refuses client tracking (here an ACL without `CLIENT`, as Redis 5 would by
/// lacking it): `auto` follows keyspace notifications instead, and says so; `tracking` reports
/// the refusal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_falls_back_to_keyspace_notifications_where_tracking_is_refused() {
    let redis = Redis::start_with_acl(&["user default on nopass ~* &* +@all -client"]);
    let prefix = format!("live_{}", unique_run_id());
    let store = redis_with_feed(redis.url(), &prefix);
    let mut feed = store.changes().unwrap();
    match feed.next().await {
        Some(flagstore::changes::FeedEvent::Connected) => {}
        other => panic!("expected the feed to connect, got {other:?}"),
    }
    let via = feed.via().unwrap();
    assert!(via.contains("keyspace notifications"), "{via}");
    let reader = seeded_reader(&*store, store.clone()).await;
    redis_with_feed(redis.url(), &prefix)
        .upsert(&F, flag("f", 2))
        .await
        .unwrap();
    seen_within(&reader, "f", 2, PROPAGATION).await;

    let tracking =
        flagstore_integration_tests::redis_with_feed_mode(redis.url(), &prefix, FeedMode::Tracking);
    match tracking.changes().unwrap().next().await {
        Some(flagstore::changes::FeedEvent::Lost(err)) => {
            let message = flagstore::error::one_line(&err);
            assert!(message.contains("refused client tracking"), "{message}");
        }
        other => panic!("expected the refusal, got {other:?}"),
    }
}

/// DynamoDB (moto, which serves DynamoDB Streams): a live reader sees the Python SDK's write
/// through the table's stream within 2 s, and only the changed flag is read again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamodb_live_reader_sees_a_python_sdk_write_within_two_seconds() {
    let moto = Moto::start();
    let table = format!("live-{}", unique_run_id());
    let store = Arc::new(moto.builder(&table).build().unwrap());
    flagstore_dynamodb::create_table(store.client().await, &table)
        .await
        .unwrap();
    store
        .init(&[Collection::new(F, vec![flag("f", 1), flag("g", 1)])])
        .await
        .unwrap();
    let reader = live_cache(store.clone(), Duration::from_secs(15)).await;
    assert_eq!(reader.get(&F, "f").await.unwrap().unwrap().version(), 1);
    assert_eq!(reader.get(&F, "g").await.unwrap().unwrap().version(), 1);
    let loads = reader.stats().await.load_successes;

    let spec =
        json!({"backend": "dynamodb", "endpoint": moto.endpoint(), "table": table, "prefix": ""})
            .to_string();
    let item = json!({"key": "f", "version": 2, "on": false}).to_string();
    tokio::task::spawn_blocking(move || ld_compat(&["upsert", &spec, "features", &item]))
        .await
        .unwrap();
    let took = seen_within(&reader, "f", 2, Duration::from_secs(2)).await;
    eprintln!("dynamodb: seen {took:?} after the Python SDK's write returned");
    assert_eq!(reader.get(&F, "g").await.unwrap().unwrap().version(), 1);
    assert_eq!(
        reader.stats().await.load_successes,
        loads + 1,
        "the stream names the flag: only it is read again"
    );
}

/// A table without a stream (dynalite has no Streams API at all) is reported by name, with how
/// to enable one, and a live reader stays on its normal cache time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dynamodb_table_without_a_stream_is_reported() {
    let dynamo = flagstore_integration_tests::dynamodb::DynamoDb::start();
    let table = format!("nostream-{}", unique_run_id());
    let store = DynamoDbStore::builder(&table)
        .url(dynamo.endpoint())
        .region("us-east-1")
        .static_credentials("test", "test")
        .build()
        .unwrap();
    flagstore_dynamodb::create_table(store.client().await, &table)
        .await
        .unwrap();
    let mut feed = store.changes().unwrap();
    match feed.next().await {
        Some(flagstore::changes::FeedEvent::Lost(err)) => {
            let message = flagstore::error::one_line(&err);
            assert!(message.contains("has no stream"), "{message}");
            assert!(message.contains("StreamViewType=KEYS_ONLY"), "{message}");
        }
        other => panic!("expected the missing stream, got {other:?}"),
    }
}

/// Consul's index does not name the key, but each kind folder's own index says which kind
/// moved: a flag write is a change of flags (segments stay cached), the marker everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consul_write_is_reported_as_a_change_of_its_kind() {
    use flagstore::changes::{Change, FeedEvent};
    let consul = Consul::start();
    let prefix = format!("kinds_{}", unique_run_id());
    let store = ConsulStore::builder()
        .url(consul.address())
        .prefix(&prefix)
        .build()
        .unwrap();
    store
        .init(&[
            Collection::new(F, vec![flag("f", 1)]),
            Collection::new(Kind::SEGMENTS, vec![flag("s", 1)]),
        ])
        .await
        .unwrap();
    let mut feed = store.changes().unwrap();
    assert!(matches!(feed.next().await, Some(FeedEvent::Connected)));
    let mut next = async || match tokio::time::timeout(Duration::from_secs(2), feed.next()).await {
        Ok(Some(FeedEvent::Changed(change))) => change,
        other => panic!("expected a change, got {other:?}"),
    };
    store.upsert(&F, flag("f", 2)).await.unwrap();
    assert_eq!(next().await, Change::Kind(F));
    store.upsert(&Kind::SEGMENTS, flag("s", 2)).await.unwrap();
    assert_eq!(next().await, Change::Kind(Kind::SEGMENTS));
    // An init that rewrites the flags and drops the segment: both kinds are reported (Consul
    // leaves the marker, rewritten with the same value, as it was).
    store
        .init(&[Collection::new(F, vec![flag("f", 3)])])
        .await
        .unwrap();
    let mut missing = vec![Change::Kind(F), Change::Kind(Kind::SEGMENTS)];
    while !missing.is_empty() {
        match next().await {
            Change::Everything => break,
            change => missing.retain(|m| *m != change),
        }
    }
    // The marker removed: everything.
    let raw = flagstore_integration_tests::consul::RawConsul::new(consul.address(), consul.token());
    raw.delete(&format!("{prefix}/$inited")).await;
    assert_eq!(next().await, Change::Everything);
}

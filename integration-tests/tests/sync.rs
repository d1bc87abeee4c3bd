//! `flagstore-sync` against a fake LaunchDarkly and real Redis, DynamoDB and Consul: the data
//! arrives byte for byte, changes follow, and every fault the issue names is survived.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::future::Future;
use std::time::Duration;

use flagstore::testing::unique_run_id;
use flagstore::{DynStore, Item, Kind, PersistentDataStore};
use flagstore_integration_tests::python::ld_compat;
use flagstore_integration_tests::redis::{RedisCluster, RedisSentinel};
use flagstore_integration_tests::{Backend, FakeLaunchDarkly, FaultProxy};
use flagstore_sync::{
    ConnectionState, DataStoreState, Environment, ErrorKind, SdkKey, Status, SyncHandle,
    Synchronizer, SynchronizerBuilder,
};
use flagstore_url::StoreUrl;
use serde_json::{Value, json};

const SDK_KEY: &str = "sdk-fake-0123-4567-89ab-cdef01234567";
const F: Kind = Kind::FEATURES;

/// A flag as LaunchDarkly sends it, with a field no SDK models (it must survive) and a number
/// whose spelling a re-serializer would change.
fn flag(key: &str, version: u64) -> Value {
    json!({
        "key": key, "version": version, "on": true, "salt": format!("{key}-salt"),
        "variations": [true, false], "offVariation": 1, "fallthrough": {"variation": 0},
        "targets": [], "contextTargets": [], "rules": [], "prerequisites": [],
        "clientSideAvailability": {"usingMobileKey": false, "usingEnvironmentId": false},
        "trackEvents": false, "debugEventsUntilDate": null,
        "somethingNew": {"weights": [1.50, 2e3]},
    })
}

fn segment(key: &str, version: u64) -> Value {
    json!({"key": key, "version": version, "included": ["alice"], "excluded": [], "rules": [], "salt": "s"})
}

fn data(flags: &[(&str, u64)]) -> Value {
    let flags: serde_json::Map<String, Value> = flags
        .iter()
        .map(|(key, version)| ((*key).to_owned(), flag(key, *version)))
        .collect();
    json!({"flags": flags, "segments": {"seg": segment("seg", 1)}})
}

/// A synchronizer for `fake` with quick retries and checks, so that faults heal within a test.
fn builder(fake: &FakeLaunchDarkly) -> SynchronizerBuilder {
    Synchronizer::builder()
        .stream_uri(fake.uri())
        .base_uri(fake.uri())
        .initial_reconnect_delay(Duration::from_millis(50))
        .check_interval(Duration::from_millis(200))
}

fn start(builder: SynchronizerBuilder, key: &str, store: DynStore) -> SyncHandle {
    builder
        .environment(Environment::new("test", SdkKey::new(key).unwrap()).store_instance(store))
        .build()
        .unwrap()
        .start()
}

/// Waits (up to 15 s) until `check` holds.
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within 15 s: {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (up to 15 s) for a status where `wanted` holds, and returns it.
async fn status_until(handle: &SyncHandle, wanted: impl Fn(&Status) -> bool) -> Status {
    let mut rx = handle.subscribe();
    let waited = tokio::time::timeout(Duration::from_secs(15), rx.wait_for(|s| wanted(s))).await;
    match waited {
        Ok(status) => status.unwrap().clone(),
        Err(_) => panic!("status still {:#?} after 15 s", handle.status()),
    }
}

fn connection(status: &Status) -> ConnectionState {
    status.environments[0].connection.state
}

fn healthy(status: &Status) -> bool {
    status.is_healthy()
}

/// Whether the store holds `key` at `version`.
async fn stored_at(store: &DynStore, kind: &Kind, key: &str, version: u64) -> bool {
    store
        .get(kind, key)
        .await
        .ok()
        .flatten()
        .is_some_and(|item| item.version() == version)
}

/// Put, patch, delete, a dropped stream, a wiped store and a store outage, on one backend.
async fn feeds_and_heals(backend: Backend) {
    let prefix = format!("sync{}", unique_run_id());
    let fake = FakeLaunchDarkly::start(SDK_KEY, data(&[("alpha", 1), ("beta", 1)]));
    let proxy = FaultProxy::start(&backend.server_address());
    let written = backend.store_through(&prefix, proxy.address(), Duration::from_millis(500));
    let reader = backend.store(&prefix);
    let sync = start(builder(&fake), SDK_KEY, written);

    // The put: every item byte for byte as sent.
    status_until(&sync, healthy).await;
    assert!(reader.is_initialized().await.unwrap());
    for (kind, key, sent) in [
        (F, "alpha", flag("alpha", 1)),
        (F, "beta", flag("beta", 1)),
        (Kind::SEGMENTS, "seg", segment("seg", 1)),
    ] {
        let item = reader.get(&kind, key).await.unwrap().unwrap();
        assert_eq!(item.json(), sent.to_string(), "{kind}/{key}");
        assert_eq!(item.version(), 1);
    }

    // A patch, then a delete: the tombstone the SDKs write.
    fake.patch("flags", flag("alpha", 2));
    eventually("the patch is stored", || stored_at(&reader, &F, "alpha", 2)).await;
    let alpha = reader.get(&F, "alpha").await.unwrap().unwrap();
    assert_eq!(alpha.json(), flag("alpha", 2).to_string());
    fake.delete("flags", "beta", 3);
    eventually("the delete is stored", || stored_at(&reader, &F, "beta", 3)).await;
    let beta = reader.get(&F, "beta").await.unwrap().unwrap();
    assert!(beta.is_deleted());
    let tombstone: Value = serde_json::from_str(beta.json()).unwrap();
    assert_eq!(
        tombstone,
        json!({"key": "beta", "version": 3, "deleted": true})
    );

    // A dropped stream: the reconnection's put replaces everything.
    fake.set_data(data(&[("alpha", 2), ("gamma", 1)]));
    fake.drop_streams();
    fake.wait_for_requests(|r| r.streams >= 2).await;
    eventually("the new put is stored", || {
        stored_at(&reader, &F, "gamma", 1)
    })
    .await;
    eventually("the put removed what it lacks", || async {
        reader.get(&F, "beta").await.unwrap().is_none()
    })
    .await;

    // A wiped store (the marker and a flag gone) is written again from memory.
    backend.wipe(&prefix, "alpha").await;
    eventually("the wiped store is rewritten", || async {
        reader.is_initialized().await.unwrap() && stored_at(&reader, &F, "alpha", 2).await
    })
    .await;
    let status = status_until(&sync, healthy).await;
    let store = &status.environments[0].stores[0];
    assert!(
        store
            .last_error
            .as_ref()
            .is_some_and(|e| e.message.contains("lost its data")),
        "{store:?}"
    );

    // The store goes away during a patch: INTERRUPTED, then the patch is there once it is back.
    proxy.cut();
    fake.patch("flags", flag("alpha", 3));
    let down = status_until(&sync, |s| {
        s.environments[0].stores[0].state == DataStoreState::Interrupted
    })
    .await;
    assert!(!down.is_healthy());
    assert_eq!(
        down.environments[0].stores[0]
            .last_error
            .as_ref()
            .unwrap()
            .kind,
        ErrorKind::StoreError
    );
    proxy.restore();
    status_until(&sync, healthy).await;
    assert_eq!(
        reader.get(&F, "alpha").await.unwrap().unwrap().json(),
        flag("alpha", 3).to_string()
    );
    sync.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_and_heals_redis() {
    feeds_and_heals(Backend::redis()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_and_heals_dynamodb() {
    feeds_and_heals(Backend::dynamodb().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_and_heals_consul() {
    feeds_and_heals(Backend::consul()).await;
}

/// `sync_once` writes, reads back, and reports; a refused key fails without a retry.
async fn once(backend: Backend) {
    let prefix = format!("once{}", unique_run_id());
    let fake = FakeLaunchDarkly::start(SDK_KEY, data(&[("alpha", 4), ("beta", 2)]));
    let store = backend.store(&prefix);
    fake.fail_polls(&[503]);
    let sync = builder(&fake)
        .environment(
            Environment::new("test", SdkKey::new(SDK_KEY).unwrap()).store_instance(store.clone()),
        )
        .build()
        .unwrap();
    let reports = sync.sync_once().await;
    let report = reports[0].as_ref().unwrap();
    assert_eq!((report.flags, report.segments, report.stores), (2, 1, 1));
    assert_eq!(fake.requests().polls, 2, "the 503 is retried");
    assert_eq!(
        store.get(&F, "alpha").await.unwrap().unwrap().json(),
        flag("alpha", 4).to_string()
    );

    let refused = builder(&fake)
        .environment(
            Environment::new("test", SdkKey::new("sdk-wrong-key-0000000").unwrap())
                .store_instance(store),
        )
        .build()
        .unwrap();
    let err = refused.sync_once().await.remove(0).unwrap_err().to_string();
    assert!(err.contains("HTTP 401"), "{err}");
    assert!(!err.contains("sdk-wrong"), "{err}");
    assert_eq!(fake.requests().polls, 3, "a 401 is not retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_redis() {
    once(Backend::redis()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_dynamodb() {
    once(Backend::dynamodb().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_consul() {
    once(Backend::consul()).await;
}

/// A flag over DynamoDB's 400 KB limit cannot be stored: a one-shot sync fails naming it, its
/// size and the limit, instead of reporting a store that lacks it as synced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_item_the_store_cannot_hold_is_reported() {
    let backend = Backend::dynamodb().await;
    let prefix = format!("large{}", unique_run_id());
    let mut sent = data(&[("alpha", 1)]);
    let mut large = flag("large", 1);
    large["description"] = json!("x".repeat(450_000));
    sent["flags"]["large"] = large;
    let fake = FakeLaunchDarkly::start(SDK_KEY, sent);
    let sync = builder(&fake)
        .environment(
            Environment::new("test", SdkKey::new(SDK_KEY).unwrap())
                .store_instance(backend.store(&prefix)),
        )
        .build()
        .unwrap();
    let err = sync.sync_once().await.remove(0).unwrap_err().to_string();
    assert!(
        err.contains(r#"the features item "large" (version 1) is missing after the write"#)
            && err.contains(r#"the features item "large" is 450"#)
            && err.contains("over DynamoDB's 409600-byte limit"),
        "{err}"
    );
}

/// Stores named by URL, as the command and configuration files name them: a Redis Cluster and a
/// Sentinel-watched primary, fed at once, each described in the status as the Relay Proxy does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feeds_a_redis_cluster_and_sentinel_named_by_url() {
    let (cluster, sentinel) = (RedisCluster::start(), RedisSentinel::start());
    let run = unique_run_id();
    let urls = [
        format!("{}?prefix={{sync{run}}}", cluster.url()),
        format!("{}?prefix=sync{run}", sentinel.url()),
    ];
    let fake = FakeLaunchDarkly::start(SDK_KEY, data(&[("alpha", 1)]));
    let env = urls.iter().fold(
        Environment::new("test", SdkKey::new(SDK_KEY).unwrap()),
        |env, url| env.store(StoreUrl::parse(url).unwrap()),
    );
    let sync = builder(&fake).environment(env).build().unwrap().start();
    let status = status_until(&sync, healthy).await;
    let stores = &status.environments[0].stores;
    assert_eq!(stores[0].database, "redis");
    assert_eq!(
        stores[0].db_prefix.as_deref(),
        Some(format!("{{sync{run}}}").as_str())
    );
    assert_eq!(
        stores[1].db_server.as_deref(),
        Some(sentinel.url().as_str())
    );
    fake.patch("flags", flag("alpha", 2));
    for url in &urls {
        let reader = flagstore_url::open(url).unwrap();
        eventually("the patch is stored", || stored_at(&reader, &F, "alpha", 2)).await;
        assert_eq!(
            reader.get(&F, "alpha").await.unwrap().unwrap().json(),
            flag("alpha", 2).to_string()
        );
    }
    sync.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_turns_the_environment_off_for_good() {
    let backend = Backend::redis();
    let fake = FakeLaunchDarkly::start(SDK_KEY, data(&[("alpha", 1)]));
    let sync = start(
        builder(&fake),
        "sdk-refused-0000-1111",
        backend.store(&format!("off{}", unique_run_id())),
    );
    tokio::time::timeout(Duration::from_secs(15), sync.all_off())
        .await
        .expect("the environment is OFF");
    let status = sync.status();
    let error = status.environments[0]
        .connection
        .last_error
        .clone()
        .unwrap();
    assert_eq!(
        (error.kind, error.status_code),
        (ErrorKind::ErrorResponse, Some(401))
    );
    assert_eq!(status.environments[0].sdk_key, "sdk-********1111");
    assert!(!format!("{status:?}").contains("sdk-refused"));
    assert_eq!(fake.requests().streams, 1, "no retry after a 401");
    sync.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_retried_and_polling_fills_in_meanwhile() {
    let backend = Backend::redis();
    let prefix = format!("retry{}", unique_run_id());
    let reader = backend.store(&prefix);
    let fake = FakeLaunchDarkly::start(SDK_KEY, data(&[("alpha", 1)]));
    fake.fail_streams(&[503, 500, 429, 400, 408]);
    let sync = start(builder(&fake), SDK_KEY, backend.store(&prefix));
    // The first failure polls (no data yet): the store is written before the stream works.
    let polled = status_until(&sync, |s| connection(s) == ConnectionState::Interrupted).await;
    assert_eq!(
        polled.environments[0]
            .connection
            .last_error
            .as_ref()
            .unwrap()
            .status_code,
        Some(503)
    );
    eventually("the polled data is stored", || {
        stored_at(&reader, &F, "alpha", 1)
    })
    .await;
    status_until(&sync, healthy).await;
    let requests = fake.requests();
    assert_eq!(requests.streams, 6, "{requests:?}");
    assert_eq!(requests.polls, 1, "polled once: the data was fresh after");
    sync.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_events_are_ignored_and_malformed_ones_restart_the_stream() {
    let backend = Backend::redis();
    let prefix = format!("malformed{}", unique_run_id());
    let reader = backend.store(&prefix);
    let fake = FakeLaunchDarkly::start(SDK_KEY, data(&[("alpha", 1)]));
    let sync = start(builder(&fake), SDK_KEY, backend.store(&prefix));
    status_until(&sync, healthy).await;

    fake.send_raw(": heartbeat\n\nevent: something-new\ndata: {\"x\":1}\n\n");
    fake.send_raw("event: patch\ndata: {\"path\":\"/experiments/e\",\"data\":{}}\n\n");
    fake.patch("flags", flag("alpha", 2));
    eventually("the patch after them is stored", || {
        stored_at(&reader, &F, "alpha", 2)
    })
    .await;
    assert_eq!(
        fake.requests().streams,
        1,
        "nothing there restarts the stream"
    );

    fake.send_raw(
        "event: patch\ndata: {\"path\":\"/flags/alpha\",\"data\":{\"key\":\"alpha\"}}\n\n",
    );
    fake.wait_for_requests(|r| r.streams >= 2).await;
    let status = status_until(&sync, healthy).await;
    let error = status.environments[0]
        .connection
        .last_error
        .clone()
        .unwrap();
    assert_eq!(error.kind, ErrorKind::InvalidData);
    assert!(error.message.contains("malformed patch"), "{error:?}");
    sync.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_stream_is_reopened() {
    let backend = Backend::redis();
    let fake = FakeLaunchDarkly::start(SDK_KEY, data(&[("alpha", 1)]));
    let sync = start(
        builder(&fake).read_timeout(Duration::from_millis(300)),
        SDK_KEY,
        backend.store(&format!("silent{}", unique_run_id())),
    );
    fake.wait_for_requests(|r| r.streams >= 3).await;
    let error = sync.status().environments[0]
        .connection
        .last_error
        .clone()
        .unwrap();
    assert_eq!(error.kind, ErrorKind::NetworkError);
    assert!(
        error.message.contains("nothing received for 300ms"),
        "{error:?}"
    );
    sync.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polling_mode_never_streams() {
    let backend = Backend::redis();
    let prefix = format!("polling{}", unique_run_id());
    let reader = backend.store(&prefix);
    let fake = FakeLaunchDarkly::start(SDK_KEY, data(&[("alpha", 7)]));
    let sync = start(
        builder(&fake).polling(true),
        SDK_KEY,
        backend.store(&prefix),
    );
    status_until(&sync, healthy).await;
    assert!(stored_at(&reader, &F, "alpha", 7).await);
    assert_eq!(fake.requests().streams, 0);
    sync.shutdown().await;

    let err = builder(&fake)
        .poll_interval(Duration::from_secs(10))
        .environment(Environment::new("test", SdkKey::new(SDK_KEY).unwrap()).store_instance(reader))
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid sync configuration: the poll interval is 10s; it must be at least 30s"
    );
}

/// Fan-out: one environment, two backends, the same bytes in each; one store's outage does not
/// hold up the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_environment_feeds_several_stores() {
    let (redis, consul) = (Backend::redis(), Backend::consul());
    let prefix = format!("fanout{}", unique_run_id());
    let proxy = FaultProxy::start(&consul.server_address());
    let fake = FakeLaunchDarkly::start(SDK_KEY, data(&[("alpha", 1)]));
    let sync = builder(&fake)
        .environment(
            Environment::new("test", SdkKey::new(SDK_KEY).unwrap())
                .store_instance(redis.store(&prefix))
                .store_instance(consul.store_through(
                    &prefix,
                    proxy.address(),
                    Duration::from_millis(500),
                )),
        )
        .build()
        .unwrap()
        .start();
    status_until(&sync, healthy).await;
    proxy.cut();
    fake.patch("flags", flag("alpha", 2));
    let (redis_reader, consul_reader) = (redis.store(&prefix), consul.store(&prefix));
    eventually("Redis has the patch", || {
        stored_at(&redis_reader, &F, "alpha", 2)
    })
    .await;
    let status = status_until(&sync, |s| {
        s.environments[0].stores[1].state == DataStoreState::Interrupted
    })
    .await;
    assert_eq!(
        status.environments[0].stores[0].state,
        DataStoreState::Valid
    );
    let relay = status.to_relay_json("test");
    assert_eq!(relay["status"], "degraded");
    assert_eq!(
        relay["environments"]["test"]["dataStoreStatus"]["state"],
        "INTERRUPTED"
    );
    proxy.restore();
    status_until(&sync, healthy).await;
    for reader in [&redis_reader, &consul_reader] {
        assert_eq!(
            reader.get(&F, "alpha").await.unwrap().unwrap().json(),
            flag("alpha", 2).to_string()
        );
    }
    sync.shutdown().await;
}

/// What `sync` writes from the fake server's data is, item by item, what the LaunchDarkly
/// Python SDK writes when it streams the same data from the same server.
async fn agrees_with_the_python_sdk(backend: Backend) {
    let run = unique_run_id();
    let (ours, theirs) = (format!("syncrs{run}"), format!("syncpy{run}"));
    let fake = FakeLaunchDarkly::start(SDK_KEY, data(&[("alpha", 1), ("beta", 1), ("gamma", 5)]));
    let sync = start(builder(&fake), SDK_KEY, backend.store(&ours));
    status_until(&sync, healthy).await;

    let spec = backend.python_spec(&theirs);
    let uri = fake.uri().to_owned();
    let python =
        tokio::task::spawn_blocking(move || ld_compat(&["stream", &spec, &uri, SDK_KEY, "done"]));
    fake.wait_for_requests(|r| r.streams >= 2).await;
    fake.patch("flags", flag("alpha", 2));
    fake.delete("flags", "beta", 3);
    fake.patch("segments", segment("seg", 2));
    fake.patch("flags", flag("done", 1));
    python.await.unwrap();
    let reader = backend.store(&ours);
    eventually("sync stored the last patch", || {
        stored_at(&reader, &F, "done", 1)
    })
    .await;

    let python_store = backend.store(&theirs);
    for kind in [F, Kind::SEGMENTS] {
        let as_map = |items: Vec<Item>| -> std::collections::BTreeMap<String, (u64, Value)> {
            items
                .into_iter()
                .map(|i| {
                    let json = serde_json::from_str(i.json()).unwrap();
                    (i.key().to_owned(), (i.version(), json))
                })
                .collect()
        };
        let mine = as_map(reader.get_all(&kind).await.unwrap());
        let python = as_map(python_store.get_all(&kind).await.unwrap());
        assert_eq!(mine, python, "{kind}");
        assert!(!mine.is_empty());
    }
    sync.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agrees_with_the_python_sdk_on_redis() {
    agrees_with_the_python_sdk(Backend::redis()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agrees_with_the_python_sdk_on_dynamodb() {
    agrees_with_the_python_sdk(Backend::dynamodb().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agrees_with_the_python_sdk_on_consul() {
    agrees_with_the_python_sdk(Backend::consul()).await;
}

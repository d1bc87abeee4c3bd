//! The stores under the real LaunchDarkly Rust SDK (a writer client and a daemon-mode reader),
//! and across languages with the LaunchDarkly Python SDK's own Redis, DynamoDB and Consul stores.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use flagstore::testing::unique_run_id;
use flagstore::{Collection, DynStore, Item, Kind, PersistentDataStore, sort_for_init};
use flagstore_integration_tests::Backend;
use flagstore_integration_tests::python::{fixture, ld_compat};
use flagstore_integration_tests::redis::Redis;
use flagstore_launchdarkly::LaunchDarklyStore;
use flagstore_launchdarkly::launchdarkly_server_sdk::{
    Client, ConfigBuilder, Context, Flag, NullEventProcessorBuilder, PersistentDataStoreBuilder,
    Segment, TestData,
};

/// The CLI's evaluation JSON, the very code `flagstore eval` prints with.
#[path = "../../crates/flagstore-cli/src/evaluation.rs"]
mod evaluation;
use evaluation::evaluation_json;
use flagstore_redis::RedisStore;
use serde_json::{Value, json};

fn fixture_json() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("flags.json")).unwrap()).unwrap()
}

fn contexts_json() -> Vec<Value> {
    serde_json::from_str(&std::fs::read_to_string(fixture("contexts.json")).unwrap()).unwrap()
}

fn flag_keys() -> Vec<String> {
    let mut keys: Vec<String> = fixture_json()["flags"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    keys.sort();
    keys
}

fn sdk_store(store: DynStore, cache: Option<Duration>) -> PersistentDataStoreBuilder {
    let mut builder =
        PersistentDataStoreBuilder::new(Arc::new(LaunchDarklyStore::from_arc(store).unwrap()));
    match cache {
        Some(ttl) => builder.cache_time(ttl),
        None => builder.no_caching(),
    };
    builder
}

/// A daemon-mode client: reads the store lazily, never talks to LaunchDarkly.
fn daemon_reader(store: DynStore, cache: Option<Duration>) -> Client {
    let config = ConfigBuilder::new("sdk-key-daemon")
        .daemon_mode(true)
        .event_processor(&NullEventProcessorBuilder::new())
        .data_store(&sdk_store(store, cache))
        .build()
        .unwrap();
    let client = Client::build(config).unwrap();
    client.start_with_default_executor();
    client
}

/// A normal client fed by TestData instead of LaunchDarkly, writing through the adapter.
async fn sdk_writer(store: DynStore, data: &TestData) -> Client {
    let config = ConfigBuilder::new("sdk-key-writer")
        .data_source(data)
        .event_processor(&NullEventProcessorBuilder::new())
        .data_store(&sdk_store(store, None))
        .build()
        .unwrap();
    let client = Client::build(config).unwrap();
    client.start_with_default_executor();
    assert_eq!(
        client
            .wait_for_initialization(Duration::from_secs(30))
            .await,
        Some(true)
    );
    client
}

/// One evaluation in the shape ld_compat.py prints.
fn evaluate(client: &Client, flag: &str, raw_context: &Value) -> Value {
    let context: Context = serde_json::from_value(raw_context.clone()).unwrap();
    let mut result = evaluation_json(client, flag, &context);
    result["flag"] = json!(flag);
    result["context"] = raw_context["key"].clone();
    result
}

fn evaluate_all(client: &Client) -> Vec<Value> {
    contexts_json()
        .iter()
        .flat_map(|context| {
            flag_keys()
                .into_iter()
                .map(move |flag| (flag, context.clone()))
        })
        .map(|(flag, context)| evaluate(client, &flag, &context))
        .collect()
}

fn find<'a>(results: &'a [Value], flag: &str, context: &str) -> &'a Value {
    results
        .iter()
        .find(|r| r["flag"] == flag && r["context"] == context)
        .unwrap()
}

/// Rule matches, targets, segments, prerequisites and off flags with known answers.
fn check_known_answers(results: &[Value]) {
    let cases = [
        (
            "checkout-v2",
            "vip-user",
            json!(true),
            json!({"kind": "TARGET_MATCH"}),
        ),
        (
            "checkout-v2",
            "alice",
            json!(true),
            json!({"kind": "RULE_MATCH", "ruleIndex": 0, "ruleId": "rule-example-staff"}),
        ),
        (
            "checkout-v2",
            "beta-user-1",
            json!(true),
            json!({"kind": "RULE_MATCH", "ruleIndex": 1, "ruleId": "rule-beta-segment"}),
        ),
        (
            "checkout-v2",
            "carol",
            json!(true),
            json!({"kind": "RULE_MATCH", "ruleIndex": 1, "ruleId": "rule-beta-segment"}),
        ),
        (
            "banner-text",
            "alice",
            json!("Grüß Gott ☀ — Willkommen"),
            json!({"kind": "RULE_MATCH", "ruleIndex": 0, "ruleId": "rule-dach"}),
        ),
        (
            "banner-text",
            "bob",
            json!("Bonjour à tous, ça va ?"),
            json!({"kind": "RULE_MATCH", "ruleIndex": 1, "ruleId": "rule-france"}),
        ),
        (
            "banner-text",
            "zoë-ünicode",
            json!("Grüß Gott ☀ — Willkommen"),
            json!({"kind": "RULE_MATCH", "ruleIndex": 0, "ruleId": "rule-dach"}),
        ),
        (
            "banner-text",
            "user-42",
            json!("Hello 👋"),
            json!({"kind": "FALLTHROUGH"}),
        ),
        (
            "discount-rate",
            "bob",
            json!(0.333),
            json!({"kind": "RULE_MATCH", "ruleIndex": 0, "ruleId": "rule-gold"}),
        ),
        (
            "discount-rate",
            "carol",
            json!(1.0),
            json!({"kind": "RULE_MATCH", "ruleIndex": 1, "ruleId": "rule-big-spender"}),
        ),
        (
            "new-dashboard",
            "vip-user",
            json!(true),
            json!({"kind": "FALLTHROUGH"}),
        ),
        (
            "json-config",
            "alice",
            json!({"limit": 99, "label": "große Zahl", "ratio": 1.0, "tags": []}),
            json!({"kind": "TARGET_MATCH"}),
        ),
    ];
    for (flag, context, value, reason) in cases {
        let got = find(results, flag, context);
        assert_eq!(
            (&got["value"], &got["reason"]),
            (&value, &reason),
            "{flag} for {context}"
        );
    }
    // A failed prerequisite is reported as such wherever checkout-v2 is off for the context.
    for context in contexts_json() {
        let key = context["key"].as_str().unwrap();
        if find(results, "checkout-v2", key)["value"] == json!(false) {
            let dashboard = find(results, "new-dashboard", key);
            assert_eq!(
                dashboard["reason"],
                json!({"kind": "PREREQUISITE_FAILED", "prerequisiteKey": "checkout-v2"})
            );
        }
    }
}

async fn rust_sdk_end_to_end(backend: Backend) {
    let prefix = format!("e2e{}", unique_run_id());
    let fixture = fixture_json();
    let data = TestData::new();
    for flag in fixture["flags"].as_object().unwrap().values() {
        data.use_preconfigured_flag(serde_json::from_value::<Flag>(flag.clone()).unwrap());
    }
    for segment in fixture["segments"].as_object().unwrap().values() {
        data.use_preconfigured_segment(serde_json::from_value::<Segment>(segment.clone()).unwrap());
    }
    let writer = sdk_writer(backend.store(&prefix), &data).await;
    assert!(
        backend.store(&prefix).is_initialized().await.unwrap(),
        "the writer initialized the store"
    );

    let ttl = Duration::from_secs(2);
    let reader = daemon_reader(backend.store(&prefix), Some(ttl));
    let from_reader = evaluate_all(&reader);
    check_known_answers(&from_reader);
    let off = find(&from_reader, "maintenance-mode", "bob");
    assert_eq!(
        (&off["value"], &off["reason"]),
        (&json!(false), &json!({"kind": "OFF"}))
    );
    assert_eq!(
        from_reader,
        evaluate_all(&writer),
        "the daemon reader agrees with the writer"
    );

    // An update through the writer reaches the reader once its cache entry expires.
    let context = json!({"kind": "user", "key": "user-42"});
    assert_eq!(
        evaluate(&reader, "legacy-search", &context)["value"],
        json!("old")
    );
    let cached_at = Instant::now();
    let mut updated = fixture["flags"]["legacy-search"].clone();
    updated["fallthrough"] = json!({"variation": 1});
    data.use_preconfigured_flag(serde_json::from_value::<Flag>(updated).unwrap());
    let stale = evaluate(&reader, "legacy-search", &context)["value"].clone();
    if cached_at.elapsed() < ttl {
        assert_eq!(
            stale,
            json!("old"),
            "served from the SDK's cache until the TTL passes"
        );
    }
    wait_for(&reader, "legacy-search", &context, |r| {
        r["value"] == json!("new")
    })
    .await;

    // A deletion by another writer (a tombstone): the flag is then not found.
    assert!(
        backend
            .store(&prefix)
            .upsert(&Kind::FEATURES, Item::tombstone("banner-text", 1_000))
            .await
            .unwrap()
    );
    wait_for(&reader, "banner-text", &context, |r| {
        r["reason"] == json!({"kind": "ERROR", "errorKind": "FLAG_NOT_FOUND"})
    })
    .await;
}

/// Evaluates until `done` holds or 20 s pass (the cache TTL is 2 s).
async fn wait_for(client: &Client, flag: &str, context: &Value, done: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let result = evaluate(client, flag, context);
        if done(&result) {
            return;
        }
        assert!(Instant::now() < deadline, "{flag} never changed: {result}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Writes the fixture and the mutations ld_compat.py applies, through flagstore.
async fn flagstore_write(store: &DynStore) {
    let fixture = fixture_json();
    let items = |section: &str| -> Vec<Item> {
        fixture[section]
            .as_object()
            .unwrap()
            .iter()
            .map(|(key, value)| Item::from_json(key.as_str(), value.to_string()).unwrap())
            .collect()
    };
    let data = sort_for_init(vec![
        Collection::new(Kind::FEATURES, items("flags")),
        Collection::new(Kind::SEGMENTS, items("segments")),
    ]);
    store.init(&data).await.unwrap();
    let mut updated = fixture["flags"]["legacy-search"].clone();
    updated["version"] = json!(5);
    updated["fallthrough"] = json!({"variation": 1});
    assert!(
        store
            .upsert(
                &Kind::FEATURES,
                Item::from_json("legacy-search", updated.to_string()).unwrap()
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .upsert(&Kind::FEATURES, Item::tombstone("maintenance-mode", 10))
            .await
            .unwrap()
    );
}

fn python_eval(backend: &Backend, prefix: &str) -> Vec<Value> {
    let contexts = fixture("contexts.json");
    let flags = fixture("flags.json");
    let out = ld_compat(&[
        "eval",
        &backend.python_spec(prefix),
        contexts.to_str().unwrap(),
        flags.to_str().unwrap(),
    ]);
    serde_json::from_str(&out).unwrap()
}

/// Python writes, Rust reads; Rust writes, Python reads; all four readings agree.
async fn cross_sdk(backend: Backend) {
    let run = unique_run_id();
    let (python_prefix, rust_prefix) = (format!("py{run}"), format!("rs{run}"));

    let flags = fixture("flags.json");
    ld_compat(&[
        "write",
        &backend.python_spec(&python_prefix),
        flags.to_str().unwrap(),
    ]);
    let rust_reads_python = evaluate_all(&daemon_reader(backend.store(&python_prefix), None));
    let python_reads_python = python_eval(&backend, &python_prefix);
    check_known_answers(&rust_reads_python);
    assert_eq!(
        rust_reads_python, python_reads_python,
        "Python wrote; Rust and Python read alike"
    );

    flagstore_write(&backend.store(&rust_prefix)).await;
    let rust_reads_rust = evaluate_all(&daemon_reader(backend.store(&rust_prefix), None));
    let python_reads_rust = python_eval(&backend, &rust_prefix);
    assert_eq!(
        python_reads_rust, rust_reads_rust,
        "flagstore wrote; Rust and Python read alike"
    );
    assert_eq!(
        rust_reads_rust, rust_reads_python,
        "both writers' stores evaluate the same"
    );

    // The mutations took effect on both sides: an upsert and a (Python-shaped or Go-shaped) delete.
    for results in [&rust_reads_python, &python_reads_rust] {
        assert_eq!(
            find(results, "legacy-search", "user-42")["value"],
            json!("new")
        );
        assert_eq!(
            find(results, "maintenance-mode", "user-42")["reason"],
            json!({"kind": "ERROR", "errorKind": "FLAG_NOT_FOUND"})
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_end_to_end_on_redis() {
    rust_sdk_end_to_end(Backend::redis()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_end_to_end_on_dynamodb() {
    rust_sdk_end_to_end(Backend::dynamodb().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_sdk_end_to_end_on_consul() {
    rust_sdk_end_to_end(Backend::consul()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_and_flagstore_agree_on_redis() {
    cross_sdk(Backend::redis()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_and_flagstore_agree_on_dynamodb() {
    cross_sdk(Backend::dynamodb().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_and_flagstore_agree_on_consul() {
    cross_sdk(Backend::consul()).await;
}

/// What a daemon-mode caller of the LaunchDarkly Rust SDK 3.2 sees while the database is down
/// and the SDK's cache holds nothing fresh: every flag evaluates to the caller's default with
/// reason FLAG_NOT_FOUND, exactly as for a deleted flag. The SDK gives no other sign; the adapter
/// logs each store error, and a flagstore `CachingStore` in front of the store keeps serving
/// what it holds (and reports the outage in its status).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_an_outage_daemon_mode_evaluates_flags_as_not_found() {
    let mut redis = Redis::start_local(&[]);
    let prefix = format!("outage{}", unique_run_id());
    let store = |redis: &Redis| -> RedisStore {
        RedisStore::builder()
            .url(redis.url())
            .prefix(&prefix)
            .connect_timeout(Duration::from_millis(500))
            .request_timeout(Duration::from_secs(1))
            .build()
            .unwrap()
    };
    flagstore_write(&(Arc::new(store(&redis)) as DynStore)).await;
    let alice = json!({"kind": "user", "key": "alice"});

    // No SDK cache: what a reader sees once its cache has expired.
    let bare = daemon_reader(Arc::new(store(&redis)), None);
    // flagstore's forever cache in front: what it read stays served through the outage.
    let cached: DynStore = Arc::new(
        flagstore::CachingStore::builder(store(&redis))
            .cache_forever()
            .build()
            .unwrap(),
    );
    let shielded = daemon_reader(cached, None);
    let before = evaluate(&bare, "checkout-v2", &alice);
    assert_ne!(before["reason"]["kind"], json!("ERROR"), "{before}");
    assert_ne!(
        before["reason"],
        json!({"kind": "ERROR", "errorKind": "FLAG_NOT_FOUND"})
    );
    assert_eq!(evaluate(&shielded, "checkout-v2", &alice), before);

    redis.stop();
    let during = evaluate(&bare, "checkout-v2", &alice);
    assert_eq!(
        during,
        json!({
            "flag": "checkout-v2", "context": "alice",
            "value": null, "variationIndex": null,
            "reason": {"kind": "ERROR", "errorKind": "FLAG_NOT_FOUND"},
        }),
        "what the caller sees: its default value, as if the flag were deleted"
    );
    assert_eq!(evaluate(&shielded, "checkout-v2", &alice), before);
    bare.close();
    shielded.close();
}

/// The live daemon-mode setup the adapter README recommends: the SDK's cache off, flagstore's
/// live cache (ten minutes, dropped on any change) underneath. Another writer's change is
/// evaluated within a second, with no database read per evaluation in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_daemon_mode_evaluates_another_writers_change_within_a_second() {
    let redis = Redis::start();
    let prefix = format!("livedaemon{}", unique_run_id());
    let store = || -> RedisStore {
        RedisStore::builder()
            .url(redis.url())
            .prefix(&prefix)
            .configure_keyspace_events(true)
            .build()
            .unwrap()
    };
    let writer: DynStore = Arc::new(store());
    flagstore_write(&writer).await;
    let live =
        flagstore_integration_tests::live_cache(Arc::new(store()), Duration::from_secs(15)).await;
    let reader = daemon_reader(Arc::new(live), None);
    let alice = json!({"kind": "user", "key": "alice"});
    let before = evaluate(&reader, "checkout-v2", &alice);
    assert_eq!(before["reason"]["kind"], json!("FALLTHROUGH"), "{before}");

    // Another process turns the flag off.
    let current = writer
        .get(&Kind::FEATURES, "checkout-v2")
        .await
        .unwrap()
        .unwrap();
    let mut changed: Value = serde_json::from_str(current.json()).unwrap();
    changed["on"] = json!(false);
    changed["version"] = json!(current.version() + 1);
    let changed = Item::from_json("checkout-v2", changed.to_string()).unwrap();
    writer.upsert(&Kind::FEATURES, changed).await.unwrap();
    off_within_a_second(&reader, &alice, Instant::now(), "the change").await;
    reader.close();
}

/// Evaluates `checkout-v2` for `context` until it is OFF, failing a second after `since`.
async fn off_within_a_second(reader: &Client, context: &Value, since: Instant, what: &str) {
    loop {
        let now = evaluate(reader, "checkout-v2", context);
        if now["reason"]["kind"] == json!("OFF") {
            return;
        }
        assert!(
            since.elapsed() < Duration::from_secs(1),
            "still {now} a second after {what}"
        );
        tokio::task::yield_now().await;
    }
}

/// The whole system: a `patch` leaves a (fake) LaunchDarkly, `flagstore sync` writes it to
/// Redis, and a daemon-mode Rust SDK client on the live cache evaluates it within a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patch_from_launchdarkly_reaches_a_live_daemon_mode_client_within_a_second() {
    let redis = Redis::start();
    let prefix = format!("syncdaemon{}", unique_run_id());
    let key = "sdk-e2e-0000-1111-2222";
    let fake = flagstore_integration_tests::FakeLaunchDarkly::start(key, fixture_json());
    let sync = flagstore_sync::Synchronizer::builder()
        .stream_uri(fake.uri())
        .base_uri(fake.uri())
        .environment(
            flagstore_sync::Environment::new("e2e", flagstore_sync::SdkKey::new(key).unwrap())
                .store_instance(Arc::new(
                    RedisStore::builder()
                        .url(redis.url())
                        .prefix(&prefix)
                        .build()
                        .unwrap(),
                )),
        )
        .build()
        .unwrap()
        .start();
    let mut status = sync.subscribe();
    tokio::time::timeout(Duration::from_secs(15), status.wait_for(|s| s.is_healthy()))
        .await
        .expect("sync is healthy within 15 s")
        .unwrap();

    let live = flagstore_integration_tests::live_cache(
        flagstore_integration_tests::redis_with_feed(redis.url(), &prefix),
        Duration::from_secs(15),
    )
    .await;
    let reader = daemon_reader(Arc::new(live), None);
    let alice = json!({"kind": "user", "key": "alice"});
    let before = evaluate(&reader, "checkout-v2", &alice);
    assert_eq!(before["reason"]["kind"], json!("FALLTHROUGH"), "{before}");

    let mut changed = fixture_json()["flags"]["checkout-v2"].clone();
    changed["on"] = json!(false);
    changed["version"] = json!(changed["version"].as_u64().unwrap() + 1);
    let started = Instant::now();
    fake.patch("flags", changed);
    off_within_a_second(&reader, &alice, started, "the patch left LaunchDarkly").await;
    reader.close();
    sync.shutdown().await;
}

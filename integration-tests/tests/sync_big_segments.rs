//! `flagstore-sync` keeping Big Segments current, as the Relay Proxy does, against the fake
//! LaunchDarkly's revisions endpoint and `/big-segments` stream, on real Redis and DynamoDB;
//! the LaunchDarkly Python SDK then evaluates a big-segment rule from what was written.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::time::Duration;

use flagstore::big_segments::{DynBigSegmentStore, context_hash};
use flagstore::testing::unique_run_id;
use flagstore_integration_tests::python::ld_compat;
use flagstore_integration_tests::{Backend, FakeLaunchDarkly};
use flagstore_sync::{Environment, SdkKey, Status, SyncHandle, Synchronizer, SynchronizerBuilder};
use serde_json::{Value, json};

const SDK_KEY: &str = "sdk-fake-big-0123-4567-89ab-cdef0123";

/// A big segment (generation 2: its ref is `big-seg.g2`) and a flag whose rule matches it.
fn data(unbounded: bool) -> Value {
    json!({
        "flags": {"big-flag": {
            "key": "big-flag", "version": 1, "on": true, "salt": "f",
            "variations": [false, true], "offVariation": 0, "fallthrough": {"variation": 0},
            "rules": [{"id": "r", "variation": 1, "clauses": [
                {"attribute": "key", "op": "segmentMatch", "values": ["big-seg"], "negate": false}
            ]}],
            "targets": [], "prerequisites": [],
        }},
        "segments": {"big-seg": {
            "key": "big-seg", "version": 1, "unbounded": unbounded, "generation": 2,
            "included": [], "excluded": [], "rules": [], "salt": "s",
        }},
    })
}

/// A patch as LaunchDarkly sends it, context keys hashed.
fn patch(
    previous: &str,
    version: &str,
    included: (&[&str], &[&str]),
    excluded: (&[&str], &[&str]),
) -> Value {
    let hashed = |keys: &[&str]| keys.iter().map(|k| context_hash(k)).collect::<Vec<_>>();
    json!({
        "environmentId": "env", "segmentId": "big-seg.g2",
        "version": version, "previousVersion": previous,
        "changes": {
            "included": {"add": hashed(included.0), "remove": hashed(included.1)},
            "excluded": {"add": hashed(excluded.0), "remove": hashed(excluded.1)},
        },
    })
}

/// A synchronizer for `fake` feeding `backend` under `prefix`, its Big Segments included,
/// with quick retries.
fn synchronizer(fake: &FakeLaunchDarkly, backend: &Backend, prefix: &str) -> SynchronizerBuilder {
    let env = Environment::new("test", SdkKey::new(SDK_KEY).unwrap())
        .store_instance(backend.store(prefix))
        .big_segment_store_instance(backend.big_segment_store(prefix));
    Synchronizer::builder()
        .stream_uri(fake.uri())
        .base_uri(fake.uri())
        .initial_reconnect_delay(Duration::from_millis(50))
        .environment(env)
}

fn start(fake: &FakeLaunchDarkly, backend: &Backend, prefix: &str) -> SyncHandle {
    synchronizer(fake, backend, prefix).build().unwrap().start()
}

async fn status_until(handle: &SyncHandle, what: &str, wanted: impl Fn(&Status) -> bool) -> Status {
    let mut rx = handle.subscribe();
    let waited = tokio::time::timeout(Duration::from_secs(20), rx.wait_for(|s| wanted(s))).await;
    match waited {
        Ok(status) => status.unwrap().clone(),
        Err(_) => panic!("{what}: status still {:#?} after 20 s", handle.status()),
    }
}

async fn cursor_reaches(store: &DynBigSegmentStore, version: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let cursor = store.get_cursor().await.unwrap();
        if cursor.as_deref() == Some(version) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the cursor is {cursor:?}, not {version:?}, after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// What the Python SDK evaluates `big-flag` to for each context, with its Big Segments status.
async fn python_evaluates(spec: &str, stale_after: &str) -> HashMap<String, (Value, Value)> {
    let spec = spec.to_owned();
    let stale_after = stale_after.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        ld_compat(&[
            "bigseg-eval",
            &spec,
            "big-flag",
            r#"["alice","bob","carol","dave"]"#,
            &stale_after,
        ])
    })
    .await
    .unwrap();
    let results: Value = serde_json::from_str(&out).unwrap();
    results
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let key = r["context"].as_str().unwrap().to_owned();
            (key, (r["value"].clone(), r["reason"].clone()))
        })
        .collect()
}

/// The revisions caught up, then the stream applied; a patch off the chain is not applied and
/// the chain is read again from the cursor; the Python SDK evaluates the rule as LaunchDarkly
/// says, HEALTHY; once the stream is gone and the threshold has passed, STALE.
async fn follows_the_chain(backend: Backend) {
    let prefix = format!("bigsync{}", unique_run_id());
    let fake = FakeLaunchDarkly::start(SDK_KEY, data(true));
    fake.add_big_segment_patches(&[patch("", "1", (&["alice", "bob"], &[]), (&[], &[]))]);
    let big = backend.big_segment_store(&prefix);
    let sync = start(&fake, &backend, &prefix);

    status_until(&sync, "synchronized", |s| {
        s.environments[0]
            .big_segments
            .is_some_and(|b| b.available && b.last_synchronized_on.is_some())
    })
    .await;
    cursor_reaches(&big, "1").await;
    fake.wait_for_requests(|r| r.big_segment_streams >= 1).await;

    // A streamed patch: bob moves from included to excluded.
    fake.stream_big_segment_patches(&[patch("1", "2", (&[], &["bob"]), (&["bob"], &[]))]);
    cursor_reaches(&big, "2").await;

    // A gap: the stream sends "4" on top of "3", which it never sent; "3" is in the chain.
    fake.add_big_segment_patches(&[patch("2", "3", (&["dave"], &[]), (&[], &[]))]);
    fake.send_big_segment_patches_only(&[patch("3x", "4", (&["carol"], &[]), (&[], &[]))]);
    cursor_reaches(&big, "3").await;
    let dave = big.get_membership(&context_hash("dave")).await.unwrap();
    assert_eq!(dave.and_then(|m| m.check("big-seg.g2")), Some(true));
    let carol = big.get_membership(&context_hash("carol")).await.unwrap();
    assert_eq!(carol, None, "the patch off the chain was applied");
    status_until(&sync, "healthy", Status::is_healthy).await;
    let json = sync.status().to_relay_json("test");
    let big_status = &json["environments"]["test"]["bigSegmentStatus"];
    assert_eq!(big_status["available"], json!(true), "{json}");
    assert_eq!(big_status["potentiallyStale"], json!(false), "{json}");

    let spec = backend.python_spec(&prefix);
    let evaluated = python_evaluates(&spec, "60").await;
    let value = |key: &str| evaluated[key].0.clone();
    assert_eq!(value("alice"), json!(true), "{evaluated:?}");
    assert_eq!(evaluated["alice"].1["bigSegmentsStatus"], json!("HEALTHY"));
    assert_eq!(value("bob"), json!(false), "excluded");
    assert_eq!(value("carol"), json!(false), "unknown");
    assert_eq!(evaluated["carol"].1["kind"], json!("FALLTHROUGH"));
    assert_eq!(value("dave"), json!(true), "{evaluated:?}");

    // The stream gone for good: the sync time is no longer refreshed, and once it is older than
    // the SDK's threshold (2 s here), the SDK says STALE.
    fake.fail_big_segments(&[503; 1000]);
    fake.drop_big_segment_streams();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let evaluated = python_evaluates(&spec, "2").await;
        if evaluated["alice"].1["bigSegmentsStatus"] == json!("STALE") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {evaluated:?} after 20 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    sync.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_segments_follow_launchdarkly_on_redis() {
    follows_the_chain(Backend::redis()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_segments_follow_launchdarkly_on_dynamodb() {
    follows_the_chain(Backend::dynamodb().await).await;
}

/// No unbounded segment, no Big Segments request; a refused key is final for Big Segments (one
/// request, no retry storm), reported as unavailable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_segments_start_only_when_needed_and_stop_on_a_refused_key() {
    let backend = Backend::redis();
    let prefix = format!("bigsync{}", unique_run_id());
    let fake = FakeLaunchDarkly::start(SDK_KEY, data(false));
    let sync = start(&fake, &backend, &prefix);
    status_until(&sync, "healthy", Status::is_healthy).await;
    assert_eq!(fake.requests().big_segment_polls, 0);
    assert!(sync.status().environments[0].big_segments.is_none());

    fake.fail_big_segments(&[401]);
    let mut unbounded = data(true)["segments"]["big-seg"].clone();
    unbounded["version"] = json!(2);
    fake.patch("segments", unbounded);
    status_until(&sync, "unavailable", |s| {
        s.environments[0].big_segments.is_some_and(|b| !b.available)
    })
    .await;
    // Retries (50 ms apart at first) would have come by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        fake.requests().big_segment_polls,
        1,
        "a refused key is retried"
    );
    assert!(!sync.status().is_healthy());
    sync.shutdown().await;
}

/// A Big Segments stream gone silent (no event, no heartbeat) for the read timeout is reopened,
/// rather than kept while the sync time is refreshed as if it were alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_big_segments_stream_is_reopened() {
    let backend = Backend::redis();
    let prefix = format!("bigsync{}", unique_run_id());
    let fake = FakeLaunchDarkly::start(SDK_KEY, data(true));
    let sync = synchronizer(&fake, &backend, &prefix)
        .read_timeout(Duration::from_millis(500))
        .build()
        .unwrap()
        .start();
    // The fake's Big Segments stream sends nothing unless told to.
    fake.wait_for_requests(|r| r.big_segment_streams >= 3).await;
    sync.shutdown().await;
}

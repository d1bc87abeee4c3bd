//! The `metrics` feature on a real Redis: a live cache's feed, its loads and what the store
//! refused to hand over, as a Prometheus recorder installed for this test binary renders them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use flagstore::testing::{flag, unique_run_id};
use flagstore::{CachingStoreBuilder, Collection, Kind, PersistentDataStore};
use flagstore_integration_tests::redis::Redis;
use flagstore_integration_tests::redis_with_feed;
use flagstore_redis::redis::{self, AsyncCommands};

const F: Kind = Kind::FEATURES;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_cache_on_redis_reports_its_feed_loads_and_rejected_items() {
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .unwrap();

    let redis = Redis::start();
    let prefix = format!("metrics{}", unique_run_id());
    let writer = redis_with_feed(redis.url(), &prefix);
    writer
        .init(&[Collection::new(F, vec![flag("a", 1)])])
        .await
        .unwrap();
    // Another program's corrupt value: skipped by whole-kind reads, and counted.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = conn
        .hset(format!("{prefix}:features"), "bad", "not json")
        .await
        .unwrap();

    let live = CachingStoreBuilder::from_arc(redis_with_feed(redis.url(), &prefix))
        .name("live-redis")
        .invalidate_on_changes()
        .build()
        .unwrap();
    let mut status = live.subscribe();
    tokio::time::timeout(Duration::from_secs(30), status.wait_for(|s| s.live))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(live.get_all(&F).await.unwrap().len(), 1);
    writer.upsert(&F, flag("a", 2)).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while live.get(&F, "a").await.unwrap().unwrap().version() != 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the change was not seen"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    live.stats().await;

    // What a Prometheus scrape would read.
    let page = prometheus.render();
    let value = |series: &str| -> f64 {
        page.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in:\n{page}"))
    };
    let b = r#"backend="live-redis""#;
    assert_eq!(value(&format!("flagstore_feed_connected{{{b}}}")), 1.0);
    assert!(
        value(&format!(
            r#"flagstore_feed_events_total{{{b},event="connected"}}"#
        )) >= 1.0
    );
    assert!(
        value(&format!(
            r#"flagstore_feed_events_total{{{b},event="changed"}}"#
        )) >= 1.0
    );
    assert!(value(r#"flagstore_items_rejected_total{backend="redis",reason="invalid"}"#) >= 1.0);
    assert!(
        value(&format!(
            r#"flagstore_store_operation_duration_seconds_count{{{b},operation="get_all",outcome="ok"}}"#
        )) >= 1.0
    );
    assert!(
        value(&format!(
            r#"flagstore_cache_requests_total{{{b},result="miss"}}"#
        )) >= 2.0
    );
    assert_eq!(value(&format!("flagstore_store_available{{{b}}}")), 1.0);
}

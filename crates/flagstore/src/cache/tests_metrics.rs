//! The `metrics` feature: every series moves exactly as the cache and the store did, seen by a
//! debugging recorder installed for this test binary.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

use super::tests::{Double, item};
use super::*;

const F: Kind = Kind::FEATURES;

/// A store built with a debugging recorder of its own: every series the cache registers at
/// `build()` records there, whatever thread records later.
fn built(builder: CachingStoreBuilder) -> (CachingStore, Snapshotter) {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let store = ::metrics::with_local_recorder(&recorder, || builder.build().unwrap());
    (store, snapshotter)
}

/// A series' name, labels and value.
type Series = (String, Vec<(String, String)>, f64);

/// Every series in one snapshot (which drains the counters and histograms it reports): a
/// counter's or gauge's value, or a histogram's number of samples, by name and labels.
fn snapshot(snapshotter: &Snapshotter) -> Vec<Series> {
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let labels = key
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            #[allow(clippy::cast_precision_loss)]
            let value = match value {
                DebugValue::Counter(n) => n as f64,
                DebugValue::Gauge(g) => g.into_inner(),
                DebugValue::Histogram(samples) => samples.len() as f64,
            };
            (key.name().to_owned(), labels, value)
        })
        .collect()
}

/// The value of `name` whose labels include every one of `labels`.
fn value(series: &[Series], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    series
        .iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, value)| *value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_and_the_store_report_through_the_facade() {
    let double = Double::new();
    double.inner.upsert(&F, item("f", 2)).await.unwrap();
    let (store, snapshotter) = built(CachingStoreBuilder::from_arc(double.clone()).name("facade"));
    let b = ("backend", "facade");

    store.get(&F, "f").await.unwrap();
    store.get(&F, "f").await.unwrap();
    store.get(&F, "f").await.unwrap();
    assert!(!store.upsert(&F, item("f", 1)).await.unwrap());
    double.set_failing(true);
    assert!(store.get(&Kind::SEGMENTS, "s").await.is_err());
    store.stats().await;

    let series = snapshot(&snapshotter);
    let count = |name: &str, labels: &[(&str, &str)]| value(&series, name, labels).unwrap_or(-1.0);
    assert_eq!(
        count("flagstore_cache_requests_total", &[b, ("result", "hit")]),
        2.0
    );
    assert_eq!(
        count("flagstore_cache_requests_total", &[b, ("result", "miss")]),
        2.0
    );
    assert_eq!(count("flagstore_cache_load_errors_total", &[b]), 1.0);
    assert_eq!(count("flagstore_cache_evictions_total", &[b]), 0.0);
    // The upsert not taken dropped the item's entry: none left.
    assert_eq!(count("flagstore_cache_entries", &[b]), 0.0);
    let op = |operation: &str, outcome: &str| {
        count(
            "flagstore_store_operation_duration_seconds",
            &[b, ("operation", operation), ("outcome", outcome)],
        )
    };
    assert_eq!(op("get", "ok"), 1.0);
    assert_eq!(op("get", "error"), 1.0);
    assert_eq!(op("upsert", "not_updated"), 1.0);
    assert_eq!(op("upsert", "ok"), 0.0);

    // The outage reaches the availability gauge (published on the status change), and the
    // recovery too.
    let snapshotter = &snapshotter;
    let gauge_becomes = |wanted: f64| async move {
        for _ in 0..500 {
            if value(&snapshot(snapshotter), "flagstore_store_available", &[b]) == Some(wanted) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("flagstore_store_available never became {wanted}");
    };
    gauge_becomes(0.0).await;
    double.set_failing(false);
    gauge_becomes(1.0).await;
}

#[tokio::test]
async fn the_backend_label_defaults_to_the_backend() {
    let (store, snapshotter) = built(CachingStore::builder(crate::memory::MemoryStore::new()));
    store.get(&F, "x").await.unwrap();
    store.stats().await;
    let series = snapshot(&snapshotter);
    assert_eq!(
        value(
            &series,
            "flagstore_cache_requests_total",
            &[("backend", "memory"), ("result", "miss")]
        ),
        Some(1.0)
    );
}

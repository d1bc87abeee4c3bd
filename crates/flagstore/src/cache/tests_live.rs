//! Live mode and last-known-good, on the memory database's change feed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use super::tests::{Double, item};
use super::*;
use crate::memory::MemoryStore;

const F: Kind = Kind::FEATURES;
const TTL: Duration = Duration::from_secs(15);
const LIVE_TTL: Duration = Duration::from_secs(600);

fn live(double: &Arc<Double>) -> CachingStore {
    CachingStoreBuilder::from_arc(double.clone())
        .cache_time(TTL)
        .invalidate_on_changes()
        .live_cache_time(LIVE_TTL)
        .build()
        .unwrap()
}

async fn connected(store: &CachingStore) {
    store
        .subscribe()
        .wait_for(|s| s.live)
        .await
        .expect("store dropped");
}

/// The changes the cache's feed task has taken in.
fn seen_changes(store: &CachingStore) -> u64 {
    store.inner.live.as_ref().map_or(0, Live::seen)
}

/// Waits until the cache's feed task has taken in at least one more change than `seen`.
async fn changes_after(store: &CachingStore, seen: u64) {
    while seen_changes(store) <= seen {
        tokio::task::yield_now().await;
    }
}

/// Another store on the same database: a different process writing.
fn other_writer(double: &Double) -> MemoryStore {
    double.inner.database().store(double.inner.prefix())
}

#[tokio::test(start_paused = true)]
async fn entries_live_past_the_ttl_until_a_change_is_reported() {
    let double = Double::new();
    let writer = other_writer(&double);
    writer.upsert(&F, item("f", 1)).await.unwrap();
    let store = live(&double);
    connected(&store).await;

    assert_eq!(store.get(&F, "f").await.unwrap().unwrap().version(), 1);
    tokio::time::advance(TTL * 10).await;
    assert_eq!(store.get(&F, "f").await.unwrap().unwrap().version(), 1);
    assert_eq!(double.reads(), 1, "ten TTLs later, still cached");

    let seen = seen_changes(&store);
    writer.upsert(&F, item("f", 2)).await.unwrap();
    changes_after(&store, seen).await;
    assert_eq!(store.get(&F, "f").await.unwrap().unwrap().version(), 2);
    assert_eq!(double.reads(), 2);

    tokio::time::advance(LIVE_TTL).await;
    store.get(&F, "f").await.unwrap();
    assert_eq!(
        double.reads(),
        3,
        "the live cache time still bounds an entry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_that_raced_a_change_is_not_kept() {
    let double = Double::new();
    let writer = other_writer(&double);
    writer.upsert(&F, item("f", 1)).await.unwrap();
    let store = live(&double);
    connected(&store).await;

    // The read starts before the change and ends after it: it may hold either version, so the
    // entry it leaves must not be trusted.
    let held = double.gate.write().await;
    let reading = tokio::spawn({
        let store = store.clone();
        async move { store.get(&F, "f").await }
    });
    while double.reads() == 0 {
        tokio::task::yield_now().await;
    }
    let seen = seen_changes(&store);
    writer.upsert(&F, item("f", 2)).await.unwrap();
    changes_after(&store, seen).await;
    drop(held);
    reading.await.unwrap().unwrap();

    assert_eq!(store.get(&F, "f").await.unwrap().unwrap().version(), 2);
    assert_eq!(double.reads(), 2, "the raced entry was read again");
}

#[tokio::test(start_paused = true)]
async fn while_the_feed_is_down_entries_live_for_the_normal_ttl() {
    let double = Double::new();
    double.inner.upsert(&F, item("f", 1)).await.unwrap();
    let store = live(&double);
    let mut status = store.subscribe();
    connected(&store).await;
    store.get(&F, "f").await.unwrap();

    double.set_failing(true);
    status.wait_for(|s| !s.live).await.unwrap();
    tokio::time::advance(TTL + Duration::from_secs(1)).await;
    // Older than the TTL and unconfirmed by the feed: not served, so the outage shows.
    assert!(store.get(&F, "f").await.is_err());

    double.set_failing(false);
    status.wait_for(|s| s.live && s.available).await.unwrap();
    let reads = double.reads();
    assert_eq!(store.get(&F, "f").await.unwrap().unwrap().version(), 1);
    assert_eq!(
        double.reads(),
        reads + 1,
        "re-read after the feed came back"
    );
}

#[tokio::test]
async fn live_mode_is_refused_where_it_cannot_work() {
    let build = |b: CachingStoreBuilder| b.build().unwrap_err().to_string();
    let base = || CachingStore::builder(MemoryStore::new());
    assert!(build(base().no_caching().invalidate_on_changes()).contains("needs a cache time"));
    assert!(build(base().cache_forever().invalidate_on_changes()).contains("needs a cache time"));
    assert!(build(base().live_cache_time(LIVE_TTL)).contains("add invalidate_on_changes()"));
    assert!(
        build(
            base()
                .cache_time(LIVE_TTL)
                .invalidate_on_changes()
                .live_cache_time(TTL)
        )
        .contains("must be at least the cache time")
    );
}

#[test]
fn live_mode_needs_a_runtime_at_build() {
    let err = CachingStore::builder(MemoryStore::new())
        .invalidate_on_changes()
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("inside one"), "{err}");
}

fn keeping(double: &Arc<Double>) -> CachingStore {
    CachingStoreBuilder::from_arc(double.clone())
        .cache_time(Duration::from_secs(1))
        .keep_last_known_good()
        .build()
        .unwrap()
}

async fn seed(store: &impl PersistentDataStore, flags: &[(&str, u64)]) {
    let flags = flags.iter().map(|(k, v)| item(k, *v)).collect();
    store
        .init(&[
            Collection::new(F, flags),
            Collection::new(Kind::SEGMENTS, vec![item("s", 1)]),
        ])
        .await
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_wiped_database_keeps_serving_the_last_known_good_data() {
    let double = Double::new();
    seed(&double.inner, &[("f", 1), ("g", 1)]).await;
    let store = keeping(&double);
    assert_eq!(store.get(&F, "f").await.unwrap().unwrap().version(), 1);
    assert_eq!(store.get_all(&F).await.unwrap().len(), 2);

    double.inner.database().clear(double.inner.prefix());
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(store.get(&F, "f").await.unwrap().unwrap().version(), 1);
    assert_eq!(store.get_all(&F).await.unwrap().len(), 2);
    assert!(store.status().last_known_good);
    // Never cached, so nothing to keep: honestly not found.
    assert!(store.get(&F, "never-read").await.unwrap().is_none());

    seed(&other_writer(&double), &[("f", 3)]).await;
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(store.get(&F, "f").await.unwrap().unwrap().version(), 3);
    assert!(!store.status().last_known_good, "the data is back");
}

#[tokio::test(start_paused = true)]
async fn a_flag_known_only_from_a_whole_kind_read_is_kept_too() {
    let double = Double::new();
    seed(&double.inner, &[("f", 1), ("g", 1)]).await;
    let store = keeping(&double);
    assert_eq!(store.get_all(&F).await.unwrap().len(), 2);

    double.inner.database().clear(double.inner.prefix());
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(store.get(&F, "g").await.unwrap().unwrap().version(), 1);
    assert!(store.status().last_known_good);
}

#[tokio::test(start_paused = true)]
async fn without_the_option_a_wipe_shows_at_once() {
    let double = Double::new();
    seed(&double.inner, &[("f", 1)]).await;
    let store = CachingStoreBuilder::from_arc(double.clone())
        .cache_time(Duration::from_secs(1))
        .build()
        .unwrap();
    store.get(&F, "f").await.unwrap();
    double.inner.database().clear(double.inner.prefix());
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(store.get(&F, "f").await.unwrap().is_none());
    assert!(!store.status().last_known_good);
}

#[tokio::test(start_paused = true)]
async fn a_kind_emptied_is_kept_but_a_flag_removed_by_a_writer_is_not() {
    let double = Double::new();
    seed(&double.inner, &[("f", 1), ("g", 1)]).await;
    let store = keeping(&double);
    store.get(&F, "g").await.unwrap();
    store.get_all(&F).await.unwrap();

    // A real re-init without `g`: the marker is there, so `g` is gone for good.
    seed(&other_writer(&double), &[("f", 2)]).await;
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(store.get(&F, "g").await.unwrap().is_none());
    assert!(!store.status().last_known_good);

    // Every flag gone at once, marker or not: kept.
    seed(&other_writer(&double), &[]).await;
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(store.get_all(&F).await.unwrap().len(), 2);
    assert!(store.status().last_known_good);
}

/// A reader of ten flags and a segment, live, after `writer` seeded them.
async fn reader_of_ten(double: &Arc<Double>, writer: &MemoryStore) -> CachingStore {
    let flags = (0..10).map(|i| item(&format!("f{i}"), 1)).collect();
    writer
        .init(&[
            Collection::new(F, flags),
            Collection::new(Kind::SEGMENTS, vec![item("s", 1)]),
        ])
        .await
        .unwrap();
    let store = live(double);
    connected(&store).await;
    for i in 0..10 {
        store.get(&F, &format!("f{i}")).await.unwrap();
    }
    store.get(&Kind::SEGMENTS, "s").await.unwrap();
    store
}

async fn read_all_ten(store: &CachingStore) -> Vec<u64> {
    let mut versions = Vec::new();
    for i in 0..10 {
        let flag = store.get(&F, &format!("f{i}")).await.unwrap().unwrap();
        versions.push(flag.version());
    }
    versions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_change_drops_only_that_item() {
    let double = Double::new();
    let writer = other_writer(&double);
    let store = reader_of_ten(&double, &writer).await;
    let reads = double.reads();

    let seen = seen_changes(&store);
    writer.upsert(&F, item("f3", 2)).await.unwrap();
    changes_after(&store, seen).await;
    let versions = read_all_ten(&store).await;
    assert_eq!(versions[3], 2);
    store.get(&Kind::SEGMENTS, "s").await.unwrap();
    assert_eq!(
        double.reads(),
        reads + 1,
        "only the changed flag is read again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_to_a_kind_revalidates_its_entries_in_one_read() {
    let double = Double::new();
    double
        .kind_feed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let writer = other_writer(&double);
    let store = reader_of_ten(&double, &writer).await;
    let reads = double.reads();

    let seen = seen_changes(&store);
    writer.upsert(&F, item("f7", 2)).await.unwrap();
    changes_after(&store, seen).await;
    let versions = read_all_ten(&store).await;
    assert_eq!(versions[7], 2);
    assert!(
        versions
            .iter()
            .enumerate()
            .all(|(i, v)| *v == if i == 7 { 2 } else { 1 })
    );
    assert_eq!(
        double.reads(),
        reads + 1,
        "ten flags re-validated with one read"
    );
    store.get(&Kind::SEGMENTS, "s").await.unwrap();
    assert_eq!(double.reads(), reads + 1, "segments did not change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_kind_entry_refreshes_with_one_read_and_answers_its_items() {
    let double = Double::new();
    double
        .kind_feed
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let writer = other_writer(&double);
    let flags = (0..10).map(|i| item(&format!("f{i}"), 1)).collect();
    writer.init(&[Collection::new(F, flags)]).await.unwrap();
    let store = live(&double);
    connected(&store).await;
    assert_eq!(store.get_all(&F).await.unwrap().len(), 10);
    let reads = double.reads();

    let seen = seen_changes(&store);
    writer.upsert(&F, item("f2", 5)).await.unwrap();
    changes_after(&store, seen).await;
    let versions = read_all_ten(&store).await;
    assert_eq!(versions[2], 5);
    assert_eq!(
        double.reads(),
        reads + 1,
        "one whole-kind read answers all ten"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flush_reported_as_everything_asks_initialized_again() {
    let double = Double::new();
    let writer = other_writer(&double);
    let store = reader_of_ten(&double, &writer).await;
    assert!(store.is_initialized().await.unwrap());

    // A wipe, reported as a flush is by Redis client tracking: the marker is read again.
    let seen = seen_changes(&store);
    double.inner.database().clear(double.inner.prefix());
    changes_after(&store, seen).await;
    assert!(!store.is_initialized().await.unwrap());
    assert!(store.get(&F, "f1").await.unwrap().is_none());
}

//! The cache never goes back in version: a read that started before a write never lands over
//! what the write cached. Each test holds a database read open after it has read (with
//! [`GatedStore`]), makes the write, then lets the read finish.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::error::Operation;
use crate::memory::MemoryStore;
use crate::testing::{GatedStore, data_set, flag};

const F: Kind = Kind::FEATURES;

#[derive(Clone, Copy, Debug)]
enum Mode {
    Ttl,
    Forever,
    Live,
}

const MODES: [Mode; 3] = [Mode::Ttl, Mode::Forever, Mode::Live];

/// A database holding `f` at version 1, and a cache in `mode` over a gated view of it.
async fn setup(mode: Mode) -> (MemoryStore, GatedStore, CachingStore) {
    let database = MemoryStore::new();
    database
        .init(&data_set(vec![flag("f", 1), flag("g", 1)], vec![]))
        .await
        .unwrap();
    let gated = GatedStore::new(Arc::new(database.clone()));
    let builder = CachingStore::builder(gated.clone());
    let store = match mode {
        Mode::Ttl => builder.cache_time(Duration::from_secs(60)),
        Mode::Forever => builder.cache_forever(),
        Mode::Live => builder
            .cache_time(Duration::from_secs(60))
            .invalidate_on_changes(),
    }
    .build()
    .unwrap();
    if let Mode::Live = mode {
        store.subscribe().wait_for(|s| s.live).await.unwrap();
    }
    (database, gated, store)
}

fn versions(items: &[Item]) -> Vec<(&str, u64)> {
    let mut versions: Vec<_> = items.iter().map(|i| (i.key(), i.version())).collect();
    versions.sort();
    versions
}

/// Runs `read` with its database read held open while `write` runs, then checks that every
/// later read shows the write.
async fn race<R, W>(mode: Mode, read: R, write: W, expected: &[(&str, u64)])
where
    R: FnOnce(CachingStore) -> tokio::task::JoinHandle<()>,
    W: AsyncFnOnce(&CachingStore),
{
    let (_database, gated, store) = setup(mode).await;
    let mut held = gated.hold_next_read();
    let reader = read(store.clone());
    held.read().await;
    write(&store).await;
    held.release();
    reader.await.unwrap();
    for (key, version) in expected {
        let got = store.get(&F, key).await.unwrap().map(|i| i.version());
        assert_eq!(got, Some(*version), "{mode:?}: get {key} after the race");
    }
    let all = PersistentDataStore::get_all(&store, &F).await.unwrap();
    assert_eq!(versions(&all), expected, "{mode:?}: get_all after the race");
    // And again, now that anything the race cached is what answers.
    let got = store.get(&F, "f").await.unwrap().map(|i| i.version());
    assert_eq!(got, Some(expected[0].1), "{mode:?}: second get");
}

fn slow_get(store: CachingStore) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        store.get(&F, "f").await.unwrap();
    })
}

fn slow_get_all(store: CachingStore) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        PersistentDataStore::get_all(&store, &F).await.unwrap();
    })
}

async fn upsert_v2(store: &CachingStore) {
    assert!(store.upsert(&F, flag("f", 2)).await.unwrap());
}

#[tokio::test]
async fn a_slow_get_never_lands_over_a_newer_upsert() {
    for mode in MODES {
        race(mode, slow_get, upsert_v2, &[("f", 2), ("g", 1)]).await;
    }
}

#[tokio::test]
async fn a_slow_get_all_never_lands_over_a_newer_upsert() {
    for mode in MODES {
        race(mode, slow_get_all, upsert_v2, &[("f", 2), ("g", 1)]).await;
    }
}

#[tokio::test]
async fn a_slow_get_never_lands_over_a_delete() {
    for mode in MODES {
        let delete = async |store: &CachingStore| {
            assert!(store.upsert(&F, Item::tombstone("f", 3)).await.unwrap());
        };
        race(mode, slow_get, delete, &[("f", 3), ("g", 1)]).await;
    }
}

#[tokio::test]
async fn a_slow_read_never_lands_over_an_init_even_with_lower_versions() {
    // An init replaces regardless of versions: what it cached is the truth, not the higher
    // version the slow read saw.
    for mode in MODES {
        let init = async |store: &CachingStore| {
            let data = data_set(vec![flag("f", 0), flag("g", 0)], vec![]);
            store.init(&data).await.unwrap();
        };
        race(mode, slow_get, init, &[("f", 0), ("g", 0)]).await;
        race(mode, slow_get_all, init, &[("f", 0), ("g", 0)]).await;
    }
}

#[tokio::test]
async fn a_read_that_starts_after_a_write_does_not_join_a_load_from_before_it() {
    // A get_all held open before the upsert; the upsert drops the whole-kind entry; a get_all
    // made after the upsert returned must not be handed the held load's older result.
    for mode in MODES {
        let (_database, gated, store) = setup(mode).await;
        let mut held = gated.hold_next_read();
        let early = slow_get_all(store.clone());
        held.read().await;
        upsert_v2(&store).await;
        // Joining the held load would wait for a release that only comes after.
        let late = tokio::time::timeout(
            Duration::from_secs(10),
            PersistentDataStore::get_all(&store, &F),
        )
        .await
        .expect("joined the load from before the write")
        .unwrap();
        assert_eq!(versions(&late), [("f", 2), ("g", 1)], "{mode:?}");
        held.release();
        early.await.unwrap();
        assert_eq!(
            store.inner.loads.len(),
            0,
            "{mode:?}: a finished load is forgotten"
        );
    }
}

#[tokio::test]
async fn an_upsert_whose_cache_change_comes_late_does_not_hide_a_newer_one() {
    // v2 is written to the database first, but its cache change lands after v3's.
    for mode in MODES {
        let (_database, gated, store) = setup(mode).await;
        let mut held = gated.hold_next_upsert();
        let early = tokio::spawn({
            let store = store.clone();
            async move { assert!(store.upsert(&F, flag("f", 2)).await.unwrap()) }
        });
        held.read().await;
        assert!(store.upsert(&F, flag("f", 3)).await.unwrap());
        held.release();
        early.await.unwrap();
        let got = store.get(&F, "f").await.unwrap().unwrap();
        assert_eq!(got.version(), 3, "{mode:?}: get");
        let all = PersistentDataStore::get_all(&store, &F).await.unwrap();
        assert_eq!(versions(&all), [("f", 3), ("g", 1)], "{mode:?}: get_all");
    }
}

#[tokio::test]
async fn a_forever_cache_keeps_an_unwritten_upsert_over_a_slow_read() {
    // During an outage, forever mode caches what it could not write; a read that started before
    // and finishes after must not replace it.
    let (database, gated, store) = setup(Mode::Forever).await;
    let mut held = gated.hold_next_read();
    let reader = slow_get(store.clone());
    held.read().await;
    database.database().set_available(false);
    let err = store.upsert(&F, flag("f", 5)).await.unwrap_err();
    assert!(err.is_outage(), "{err}");
    assert_eq!(err.operation(), Some(Operation::Upsert));
    held.release();
    reader.await.unwrap();
    assert_eq!(store.get(&F, "f").await.unwrap().unwrap().version(), 5);
}

#[tokio::test]
async fn a_get_after_a_newer_get_all_does_not_go_back() {
    // Another process writes version 2 while this cache holds version 1 in the item's own
    // entry; a get_all then reads version 2, and the get that follows must not answer 1.
    for mode in [Mode::Ttl, Mode::Forever] {
        let (database, _gated, store) = setup(mode).await;
        assert_eq!(store.get(&F, "f").await.unwrap().unwrap().version(), 1);
        let other = database.database().store(database.prefix());
        assert!(other.upsert(&F, flag("f", 2)).await.unwrap());
        assert!(other.upsert(&F, flag("new", 1)).await.unwrap());
        // The cache holds no whole-kind entry yet, so this reads the database, in either mode.
        let all = PersistentDataStore::get_all(&store, &F).await.unwrap();
        assert_eq!(versions(&all), [("f", 2), ("g", 1), ("new", 1)], "{mode:?}");
        let got = store.get(&F, "f").await.unwrap().unwrap();
        assert_eq!(got.version(), 2, "{mode:?}: get went back after get_all");
    }
}

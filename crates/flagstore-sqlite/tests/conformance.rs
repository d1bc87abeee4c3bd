//! The conformance suite against SQLite files, and two processes' worth of stores on one file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flagstore::testing::{self, StoreFactory, UpsertHook};
use flagstore::{DynStore, Kind, PersistentDataStore};
use flagstore_sqlite::SqliteStore;

struct Sqlite {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

#[async_trait]
impl StoreFactory for Sqlite {
    async fn store(&self, prefix: &str, hook: Option<UpsertHook>) -> DynStore {
        let mut builder = SqliteStore::builder(&self.path).prefix(prefix);
        if let Some(hook) = hook {
            builder = builder.before_upsert_write(hook);
        }
        Arc::new(builder.build().unwrap())
    }

    async fn clear(&self, prefix: &str) {
        // Initializing with nothing, then removing the marker, leaves the prefix empty.
        let store = SqliteStore::builder(&self.path)
            .prefix(prefix)
            .build()
            .unwrap();
        store.init(&[]).await.unwrap();
        let connection = rusqlite::Connection::open(&self.path).unwrap();
        connection
            .execute("DELETE FROM flagstore_inited WHERE prefix = ?1", [prefix])
            .unwrap();
    }

    async fn unreachable_store(&self) -> DynStore {
        // A path that cannot be created: a file inside a directory that does not exist.
        let path = self.path.with_file_name("missing-dir").join("flags.db");
        Arc::new(
            SqliteStore::builder(path)
                .busy_timeout(Duration::from_millis(200))
                .build()
                .unwrap(),
        )
    }

    fn unreachable_budget(&self) -> Duration {
        Duration::from_millis(200)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("flags.db");
    testing::run(&Sqlite { _dir: dir, path }).await;
}

#[tokio::test]
async fn the_file_is_shared_in_wal_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shared.db");
    let a = SqliteStore::builder(&path).build().unwrap();
    let b = SqliteStore::builder(&path).build().unwrap();
    a.init(&[]).await.unwrap();
    assert!(b.is_initialized().await.unwrap());
    assert!(
        b.upsert(&Kind::FEATURES, testing::flag("f", 2))
            .await
            .unwrap()
    );
    assert_eq!(
        a.get(&Kind::FEATURES, "f").await.unwrap(),
        Some(testing::flag("f", 2))
    );
    let mode: String = rusqlite::Connection::open(&path)
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn a_version_beyond_sqlite_integers_is_an_item_error_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::builder(dir.path().join("big.db"))
        .build()
        .unwrap();
    store
        .init(&testing::data_set(vec![testing::flag("kept", 1)], vec![]))
        .await
        .unwrap();
    let huge = testing::flag("huge", u64::MAX);
    let err = store
        .upsert(&Kind::FEATURES, huge.clone())
        .await
        .unwrap_err();
    assert!(!err.is_outage(), "{err}");
    assert_eq!(
        err.to_string(),
        "sqlite: upsert of features/huge: the item cannot be stored"
    );
    let cause = std::error::Error::source(&err).unwrap().to_string();
    assert!(cause.contains("18446744073709551615"), "{cause}");
    let data = testing::data_set(vec![huge], vec![]);
    let err = store.init(&data).await.unwrap_err();
    assert!(!err.is_outage(), "{err}");
    assert_eq!(
        store.get(&Kind::FEATURES, "kept").await.unwrap(),
        Some(testing::flag("kept", 1)),
        "the refused init changed nothing"
    );
}

#[test]
fn builder_errors_name_the_setting() {
    let err = SqliteStore::builder("").build().unwrap_err();
    assert_eq!(
        err.to_string(),
        "sqlite: invalid configuration: a database file path is required"
    );
    let err = SqliteStore::builder("x.db")
        .busy_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "sqlite: invalid configuration: busy_timeout must be positive"
    );
}

/// The change-feed suite: a "restart" replaces the file with an empty one, as a restore or a
/// deploy shipping a new database does.
struct SqliteFeed {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

#[async_trait]
impl testing::FeedFactory for SqliteFeed {
    async fn store(&self, prefix: &str) -> DynStore {
        Arc::new(
            SqliteStore::builder(&self.path)
                .prefix(prefix)
                .build()
                .unwrap(),
        )
    }

    async fn restart_server(&self, _prefix: &str) {
        for suffix in ["", "-wal", "-shm"] {
            let mut name = self.path.clone().into_os_string();
            name.push(suffix);
            let _ = std::fs::remove_file(name);
        }
        let fresh = SqliteStore::builder(&self.path).build().unwrap();
        assert!(!fresh.is_initialized().await.unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn change_feed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("feed.db");
    testing::run_changes(&SqliteFeed { _dir: dir, path }).await;
}

/// A commit that did not go through a store (a hand-made edit) logs nothing: the feed cannot
/// say what changed, so it says everything may have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlogged_edit_is_reported_as_everything() {
    use flagstore::changes::{Change, FeedEvent};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("edit.db");
    let store = SqliteStore::builder(&path).prefix("p").build().unwrap();
    store.init(&[]).await.unwrap();
    let mut feed = store.changes().unwrap();
    assert!(matches!(feed.next().await, Some(FeedEvent::Connected)));
    assert!(feed.via().unwrap().contains("data_version"));

    let connection = rusqlite::Connection::open(&path).unwrap();
    connection
        .execute("DELETE FROM flagstore_inited WHERE prefix = 'p'", [])
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(2), feed.next()).await;
    match next.unwrap() {
        Some(FeedEvent::Changed(Change::Everything)) => {}
        other => panic!("expected everything, got {other:?}"),
    }
}

//! The store: one SQLite file, shared by the processes of one host.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use flagstore::backend::{
    ConfigKey, PAGE_ITEMS, Pages, StoredItems, config_duration, paged, read_stored_items,
};
use flagstore::error::{ItemError, Operation};
use flagstore::{Collection, Error, Item, Kind, PersistentDataStore, Result};
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};

use crate::config::SqliteConfigKey;

pub(crate) const BACKEND: &str = "sqlite";

/// The prefix used when none is given, as in the other backends.
pub const DEFAULT_PREFIX: &str = "launchdarkly";

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS flagstore_items (
        prefix  TEXT    NOT NULL,
        kind    TEXT    NOT NULL,
        key     TEXT    NOT NULL,
        version INTEGER NOT NULL,
        item    TEXT    NOT NULL,
        PRIMARY KEY (prefix, kind, key)
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS flagstore_inited (prefix TEXT PRIMARY KEY) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS flagstore_changes (
        id     INTEGER PRIMARY KEY AUTOINCREMENT,
        prefix TEXT    NOT NULL,
        kind   TEXT    NOT NULL,
        key    TEXT    NOT NULL
    );
";

/// Appends one row to the change log the feed reads (`kind` empty: the whole data set), and
/// trims the log to its last [`feed::LOG_KEPT`] rows. Runs inside the write's transaction, so
/// the row is committed exactly when the write is.
fn log_change(
    connection: &Connection,
    prefix: &str,
    kind: &str,
    key: &str,
) -> rusqlite::Result<()> {
    connection
        .prepare_cached("INSERT INTO flagstore_changes (prefix, kind, key) VALUES (?1, ?2, ?3)")?
        .execute(params![prefix, kind, key])?;
    connection
        .prepare_cached("DELETE FROM flagstore_changes WHERE id <= last_insert_rowid() - ?1")?
        .execute(params![crate::feed::LOG_KEPT])?;
    Ok(())
}

/// Configures a [`SqliteStore`]; [`build`](Self::build) validates and does not touch the file.
#[must_use = "a builder does nothing until build() is called"]
#[derive(Clone)]
pub struct SqliteStoreBuilder {
    path: PathBuf,
    prefix: Option<String>,
    busy_timeout: Duration,
    create_if_missing: bool,
    #[cfg(feature = "testing")]
    before_upsert_write: Option<flagstore::testing::UpsertHook>,
}

impl fmt::Debug for SqliteStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStoreBuilder")
            .field("path", &self.path)
            .field("prefix", &self.prefix)
            .field("busy_timeout", &self.busy_timeout)
            .field("create_if_missing", &self.create_if_missing)
            .finish_non_exhaustive()
    }
}

impl SqliteStoreBuilder {
    /// A builder configured from the environment:
    ///
    /// | variable | sets |
    /// |---|---|
    /// | `FLAGSTORE_SQLITE_PATH` | the database file (required: [`build`](Self::build) fails without it) |
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        SqliteStore::builder(var("FLAGSTORE_SQLITE_PATH").unwrap_or_default())
    }

    /// Whether the first operation creates the file when it does not exist (the default). Off,
    /// every operation on a missing file fails with an error naming it: for tools that only read
    /// and must not leave an empty database behind.
    pub fn create_if_missing(mut self, create: bool) -> Self {
        self.create_if_missing = create;
        self
    }

    /// The key prefix; the empty string means the default, `launchdarkly`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// How long an operation waits for another process's write lock before failing (default 5 s).
    pub fn busy_timeout(mut self, timeout: Duration) -> Self {
        self.busy_timeout = timeout;
        self
    }

    /// The database file, replacing the one given before.
    pub fn path(mut self, path: impl AsRef<Path>) -> Self {
        self.path = path.as_ref().to_owned();
        self
    }

    /// Sets one option from its text form, as a store URL's query gives it:
    ///
    /// ```
    /// use flagstore_sqlite::{SqliteConfigKey, SqliteStore};
    ///
    /// let store = SqliteStore::builder("flags.db")
    ///     .with_config(SqliteConfigKey::Prefix, "prod")?
    ///     .with_config("busy_timeout".parse()?, "250ms")?
    ///     .build()?;
    /// assert_eq!(store.prefix(), "prod");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_config(self, key: SqliteConfigKey, value: impl AsRef<str>) -> Result<Self> {
        let value = value.as_ref();
        Ok(match key {
            SqliteConfigKey::Prefix => self.prefix(value),
            SqliteConfigKey::BusyTimeout => {
                self.busy_timeout(config_duration(BACKEND, key.as_str(), value)?)
            }
        })
    }

    /// Runs `hook` inside every upsert just before its conditional write. For the conformance suite.
    #[cfg(feature = "testing")]
    pub fn before_upsert_write(mut self, hook: flagstore::testing::UpsertHook) -> Self {
        self.before_upsert_write = Some(hook);
        self
    }

    /// The store. Fails on an empty path or a zero busy timeout; the file is opened (and created
    /// with its tables) by the first operation.
    pub fn build(self) -> Result<SqliteStore> {
        if self.path.as_os_str().is_empty() {
            return Err(Error::config(BACKEND, "a database file path is required"));
        }
        if self.busy_timeout.is_zero() {
            return Err(Error::config(BACKEND, "busy_timeout must be positive"));
        }
        let prefix = match self.prefix.as_deref() {
            None | Some("") => DEFAULT_PREFIX.to_owned(),
            Some(prefix) => prefix.to_owned(),
        };
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: self.path,
                prefix,
                busy_timeout: self.busy_timeout,
                create_if_missing: self.create_if_missing,
                connection: Mutex::new(None),
                skipped: AtomicU64::new(0),
            }),
            #[cfg(feature = "testing")]
            before_upsert_write: self.before_upsert_write,
        })
    }
}

/// A [`PersistentDataStore`] in one SQLite file.
///
/// For local development and single-host fleets: several processes on one host can share the
/// file (it is opened in WAL mode, so readers never wait for the writer). It is the `flagstore`
/// CLI's default store, so the CLI works on a machine with no database server. Other LaunchDarkly
/// SDKs cannot read it; use Redis, DynamoDB or Consul to share flags across languages.
///
/// - `init` is one transaction: delete the prefix's items, insert the new ones, set the marker.
/// - `upsert` is one statement, `INSERT … ON CONFLICT … DO UPDATE … WHERE excluded.version >
///   version`: atomic across processes, so it never needs a retry.
/// - Versions above `i64::MAX` cannot be stored (SQLite integers are 64-bit signed): such an item
///   is refused with [`Error::InvalidItem`] ([`ItemError::VersionOutOfRange`]), not an outage,
///   and an `init` holding one writes nothing.
///
/// ```
/// use flagstore::{Collection, Item, Kind, PersistentDataStore};
/// use flagstore_sqlite::SqliteStore;
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// # let dir = tempfile::tempdir()?;
/// let store = SqliteStore::builder(dir.path().join("flags.db")).build()?;
/// let flag = Item::from_json("f", r#"{"key":"f","version":1}"#)?;
/// store.init(&[Collection::new(Kind::FEATURES, vec![flag])]).await?;
/// assert!(store.is_initialized().await?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
    #[cfg(feature = "testing")]
    before_upsert_write: Option<flagstore::testing::UpsertHook>,
}

pub(crate) struct Inner {
    pub(crate) path: PathBuf,
    pub(crate) prefix: String,
    busy_timeout: Duration,
    create_if_missing: bool,
    connection: Mutex<Option<Connection>>,
    skipped: AtomicU64,
}

impl Inner {
    fn open(&self) -> rusqlite::Result<Connection> {
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if self.create_if_missing {
            flags |= OpenFlags::SQLITE_OPEN_CREATE;
        }
        let connection = Connection::open_with_flags(&self.path, flags)?;
        connection.busy_timeout(self.busy_timeout)?;
        connection.pragma_update(None, "journal_mode", "WAL")?;
        connection.pragma_update(None, "synchronous", "NORMAL")?;
        connection.execute_batch(SCHEMA)?;
        Ok(connection)
    }

    /// Runs `work` on the connection (opened on first use), on a blocking thread.
    /// A new connection of its own, unless the file is missing and must not be created.
    pub(crate) fn open_existing(&self, op: Operation) -> Result<Connection> {
        if !self.create_if_missing && !self.path.exists() {
            return Err(self.missing(op));
        }
        self.open().map_err(|e| self.error(op, e))
    }

    fn missing(&self, op: Operation) -> Error {
        Error::database(
            BACKEND,
            op,
            format!("{} does not exist", self.path.display()),
        )
    }

    fn with<T>(
        &self,
        op: Operation,
        work: impl FnOnce(&mut Connection, &str) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let mut slot: MutexGuard<'_, Option<Connection>> =
            self.connection.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(self.open_existing(op)?);
        }
        match slot.as_mut() {
            Some(connection) => work(connection, &self.prefix).map_err(|e| self.error(op, e)),
            None => Err(Error::database(
                BACKEND,
                op,
                "the database connection could not be opened",
            )),
        }
    }

    pub(crate) fn error(&self, op: Operation, err: rusqlite::Error) -> Error {
        match err.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
                Error::timeout(BACKEND, op, self.busy_timeout)
            }
            Some(rusqlite::ErrorCode::PermissionDenied | rusqlite::ErrorCode::ReadOnly) => {
                Error::permission_denied(BACKEND, op, err)
            }
            _ => Error::database(BACKEND, op, err),
        }
    }
}

/// One item's stored JSON, by prefix, kind and key.
const SELECT_ITEM: &str =
    "SELECT item FROM flagstore_items WHERE prefix = ?1 AND kind = ?2 AND key = ?3";

/// The item a read found under `key`, if any; a value that is not one is an error naming it.
fn stored_item(
    op: Operation,
    kind: &Kind,
    key: &str,
    json: Option<String>,
) -> Result<Option<Item>> {
    json.map(|json| {
        Item::from_json(key, json).map_err(|e| Error::invalid_item(BACKEND, op, kind, key, e))
    })
    .transpose()
}

/// Runs `work` on a blocking thread: every use of a connection, the store's and its feed's.
pub(crate) async fn blocking<T: Send + 'static>(
    inner: &Arc<Inner>,
    op: Operation,
    work: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
) -> Result<T> {
    let inner = Arc::clone(inner);
    tokio::task::spawn_blocking(move || work(&inner))
        .await
        .map_err(|e| Error::database(BACKEND, op, format!("the database thread failed: {e}")))?
}

fn to_sql_version(op: Operation, kind: &Kind, item: &Item) -> Result<i64> {
    i64::try_from(item.version()).map_err(|_| {
        let out_of_range = ItemError::version_out_of_range(item.version(), i64::MAX.unsigned_abs());
        Error::invalid_item(BACKEND, op, kind, item.key(), out_of_range)
    })
}

impl SqliteStore {
    /// A builder for a store in the file at `path` (created if missing), prefix `launchdarkly`.
    pub fn builder(path: impl AsRef<Path>) -> SqliteStoreBuilder {
        SqliteStoreBuilder {
            path: path.as_ref().to_path_buf(),
            prefix: None,
            busy_timeout: Duration::from_secs(5),
            create_if_missing: true,
            #[cfg(feature = "testing")]
            before_upsert_write: None,
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// How many unreadable rows `get_all` has skipped since this store was built.
    pub fn skipped_items(&self) -> u64 {
        self.inner.skipped.load(Ordering::Relaxed)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        op: Operation,
        work: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        blocking(&self.inner, op, work).await
    }
}

impl fmt::Display for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sqlite store {} (prefix {:?})",
            self.inner.path.display(),
            self.inner.prefix
        )
    }
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.path)
            .field("prefix", &self.inner.prefix)
            .field("busy_timeout", &self.inner.busy_timeout)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// `kind`'s stored `(key, JSON)` rows: all of them, or with `after`, the page of
    /// [`PAGE_ITEMS`] rows that follows that key in key order.
    async fn rows(&self, kind: &Kind, after: Option<String>) -> Result<Vec<(String, String)>> {
        let op = Operation::GetAll;
        let kind2 = kind.clone();
        self.blocking(op, move |inner| {
            inner.with(op, |connection, prefix| {
                let read = |row: &rusqlite::Row<'_>| Ok((row.get(0)?, row.get(1)?));
                match &after {
                    None => connection
                        .prepare_cached(
                            "SELECT key, item FROM flagstore_items WHERE prefix = ?1 AND kind = ?2",
                        )?
                        .query_map(params![prefix, kind2.name()], read)?
                        .collect(),
                    Some(after) => connection
                        .prepare_cached(
                            "SELECT key, item FROM flagstore_items
                             WHERE prefix = ?1 AND kind = ?2 AND key > ?3 ORDER BY key LIMIT ?4",
                        )?
                        .query_map(
                            params![prefix, kind2.name(), after, PAGE_ITEMS as i64],
                            read,
                        )?
                        .collect(),
                }
            })
        })
        .await
        .map_err(|e| e.on(kind, None))
    }
}

#[async_trait]
impl PersistentDataStore for SqliteStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn init(&self, data: &[Collection]) -> Result<()> {
        let op = Operation::Init;
        let mut rows = Vec::new();
        for collection in data {
            for item in &collection.items {
                let version = to_sql_version(op, &collection.kind, item)?;
                rows.push((collection.kind.name().to_owned(), version, item.clone()));
            }
        }
        self.blocking(op, move |inner| {
            inner.with(op, |connection, prefix| {
                let tx = connection.transaction()?;
                tx.execute("DELETE FROM flagstore_items WHERE prefix = ?1", params![prefix])?;
                {
                    let mut insert = tx.prepare(
                        "INSERT OR REPLACE INTO flagstore_items (prefix, kind, key, version, item) VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?;
                    for (kind, version, item) in &rows {
                        insert.execute(params![prefix, kind, item.key(), version, item.json()])?;
                    }
                }
                tx.execute("INSERT OR IGNORE INTO flagstore_inited (prefix) VALUES (?1)", params![prefix])?;
                log_change(&tx, prefix, "", "")?;
                tx.commit()
            })
        })
        .await
    }

    async fn get(&self, kind: &Kind, key: &str) -> Result<Option<Item>> {
        let op = Operation::Get;
        let (kind2, key2) = (kind.clone(), key.to_owned());
        let json = self
            .blocking(op, move |inner| {
                inner.with(op, |connection, prefix| {
                    connection
                        .query_row(SELECT_ITEM, params![prefix, kind2.name(), key2], |row| {
                            row.get::<_, String>(0)
                        })
                        .optional()
                })
            })
            .await
            .map_err(|e| e.on(kind, Some(key)))?;
        stored_item(op, kind, key, json)
    }

    async fn get_all(&self, kind: &Kind) -> Result<Vec<Item>> {
        let stored = self.get_all_checked(kind).await?;
        Ok(stored.into_readable(BACKEND, kind, &self.inner.skipped))
    }

    async fn get_all_checked(&self, kind: &Kind) -> Result<StoredItems> {
        Ok(read_stored_items(self.rows(kind, None).await?))
    }

    /// [`PAGE_ITEMS`] rows at a time in key order, each page starting after the last key of
    /// the one before (the primary key's order, so no row comes twice and none is skipped).
    fn pages<'a>(&'a self, kind: &'a Kind) -> Pages<'a> {
        paged(String::new(), move |after| async move {
            let rows = self.rows(kind, Some(after)).await?;
            let next = (rows.len() == PAGE_ITEMS)
                .then(|| rows.last().map(|(key, _)| key.clone()))
                .flatten();
            Ok((read_stored_items(rows), next))
        })
    }

    async fn upsert(&self, kind: &Kind, item: Item) -> Result<bool> {
        let op = Operation::Upsert;
        let version = to_sql_version(op, kind, &item)?;
        #[cfg(feature = "testing")]
        if let Some(hook) = &self.before_upsert_write {
            hook().await;
        }
        let (kind2, item2) = (kind.clone(), item.clone());
        let changed = self
            .blocking(op, move |inner| {
                inner.with(op, |connection, prefix| {
                    let tx = connection.transaction()?;
                    let changed = tx.execute(
                        "INSERT INTO flagstore_items (prefix, kind, key, version, item) VALUES (?1, ?2, ?3, ?4, ?5)
                         ON CONFLICT (prefix, kind, key) DO UPDATE SET version = excluded.version, item = excluded.item
                         WHERE excluded.version > flagstore_items.version",
                        params![prefix, kind2.name(), item2.key(), version, item2.json()],
                    )?;
                    if changed > 0 {
                        log_change(&tx, prefix, kind2.name(), item2.key())?;
                    }
                    tx.commit()?;
                    Ok(changed)
                })
            })
            .await
            .map_err(|e| e.on(kind, Some(item.key())))?;
        Ok(changed > 0)
    }

    async fn is_initialized(&self) -> Result<bool> {
        let op = Operation::IsInitialized;
        self.blocking(op, move |inner| {
            inner.with(op, |connection, prefix| {
                connection
                    .query_row(
                        "SELECT 1 FROM flagstore_inited WHERE prefix = ?1",
                        params![prefix],
                        |_| Ok(()),
                    )
                    .optional()
                    .map(|found| found.is_some())
            })
        })
        .await
    }

    /// `PRAGMA data_version`, read every 100 ms on a connection of the feed's own, and the change
    /// log every write through a `SqliteStore` appends to: one
    /// [`Change::Item`](flagstore::changes::Change::Item) per upsert, everything per `init`, for
    /// writes by any process on the file.
    fn changes(&self) -> Option<flagstore::changes::ChangeFeed> {
        Some(crate::feed::start(Arc::clone(&self.inner)))
    }

    /// One blocking task reading every key.
    async fn get_many(&self, kind: &Kind, keys: &[&str]) -> Result<Vec<Option<Item>>> {
        let op = Operation::Get;
        let kind2 = kind.clone();
        let owned: Vec<String> = keys.iter().map(|key| (*key).to_owned()).collect();
        let found = self
            .blocking(op, move |inner| {
                inner.with(op, |connection, prefix| {
                    let mut query = connection.prepare_cached(SELECT_ITEM)?;
                    owned
                        .iter()
                        .map(|key| {
                            query
                                .query_row(params![prefix, kind2.name(), key], |row| {
                                    row.get::<_, String>(0)
                                })
                                .optional()
                        })
                        .collect::<rusqlite::Result<Vec<Option<String>>>>()
                })
            })
            .await
            .map_err(|e| e.on(kind, None))?;
        keys.iter()
            .zip(found)
            .map(|(key, json)| stored_item(op, kind, key, json))
            .collect()
    }

    async fn is_available(&self) -> bool {
        let op = Operation::IsAvailable;
        self.blocking(op, move |inner| {
            inner.with(op, |connection, _| {
                connection.query_row("SELECT 1", [], |_| Ok(()))
            })
        })
        .await
        .is_ok()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn from_env_reads_the_path_variable() {
        let store = SqliteStoreBuilder::from_vars(|name| {
            (name == "FLAGSTORE_SQLITE_PATH").then(|| "/var/lib/flags.db".to_owned())
        })
        .build()
        .unwrap();
        assert_eq!(store.path(), Path::new("/var/lib/flags.db"));
        let err = SqliteStoreBuilder::from_vars(|_| None).build().unwrap_err();
        assert_eq!(
            err.to_string(),
            "sqlite: invalid configuration: a database file path is required"
        );
    }
}

//! The store: the LaunchDarkly Redis schema, reads over one shared multiplexed connection and
//! upserts over a deadpool connection pool.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_redis::Pool;
use deadpool_redis::redis::{self, AsyncCommands};
use flagstore::backend::{
    PAGE_ITEMS, Pages, StoredItems, UPSERT_ATTEMPTS, contention_backoff, paged, read_stored_bytes,
    replaced_kinds, version_to_replace,
};
use flagstore::changes::ChangeFeed;
use flagstore::error::Operation;
use flagstore::{Collection, Error, Item, Kind, PersistentDataStore, Result};

use crate::builder::RedisStoreBuilder;
use crate::error::{BACKEND, from_pool, from_redis};
use crate::feed::{Feed, FeedMode};
use crate::reads::SharedReads;
use crate::topology::{Conn, Topology};

/// Fields per HSET in `init`: keeps each command a sensible size for huge data sets.
const HSET_CHUNK: usize = 500;

/// A hash field and its value, as read.
type Field = (Vec<u8>, Vec<u8>);

/// Bytes of JSON per HSET in `init`, unless one item alone is larger.
const HSET_BYTES: usize = 1 << 20;

/// The commands of an `init`, in order: each `HSET` kept as the items it writes and built only
/// when sent, so that the data set is never copied whole into commands.
#[derive(Default)]
struct Pieces<'a>(Vec<Piece<'a>>);

enum Piece<'a> {
    Command(redis::Cmd),
    Hset(Arc<str>, &'a [Item]),
}

impl<'a> Pieces<'a> {
    fn push_command(&mut self, command: redis::Cmd) {
        self.0.push(Piece::Command(command));
    }

    fn push_hset(&mut self, hash: &Arc<str>, items: &'a [Item]) {
        self.0.push(Piece::Hset(hash.clone(), items));
    }

    /// The bytes of keys and JSON the largest `HSET` carries: about the largest command sent,
    /// without packing any command to measure it.
    fn largest_hset(&self) -> usize {
        self.0
            .iter()
            .map(|piece| match piece {
                Piece::Command(_) => 0,
                Piece::Hset(_, items) => items.iter().map(|i| i.key().len() + i.len()).sum(),
            })
            .max()
            .unwrap_or(0)
    }

    /// Each command, built as it is needed.
    fn iter(&self) -> impl Iterator<Item = std::borrow::Cow<'_, redis::Cmd>> {
        self.0.iter().map(|piece| match piece {
            Piece::Command(command) => std::borrow::Cow::Borrowed(command),
            Piece::Hset(hash, items) => {
                let mut hset = redis::cmd("HSET");
                hset.arg(hash.as_ref());
                for item in *items {
                    hset.arg(item.key()).arg(item.json());
                }
                std::borrow::Cow::Owned(hset)
            }
        })
    }
}

/// `items` in runs of at most [`HSET_CHUNK`] items and [`HSET_BYTES`] bytes (at least one item).
fn chunks(items: &[Item]) -> impl Iterator<Item = &[Item]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0;
        let end = rest
            .iter()
            .take(HSET_CHUNK)
            .position(|item| {
                bytes += item.len();
                bytes > HSET_BYTES
            })
            .map_or(rest.len().min(HSET_CHUNK), |at| at.max(1));
        let (chunk, after) = rest.split_at(end);
        rest = after;
        Some(chunk)
    })
}

/// An `init` that sent an `HSET` of more than this closes its connection afterwards (see `init`).
const RETIRE_AFTER_BYTES: usize = 1 << 20;

/// A [`PersistentDataStore`] in Redis, readable and writable by every LaunchDarkly SDK and the
/// Relay Proxy.
///
/// Schema: one hash per kind at `{prefix}:{kind}` (field = item key, value = item JSON, tombstones
/// included) and the string `{prefix}:$inited` once initialized.
///
/// - `init` is one MULTI/EXEC: delete the kinds' hashes, write every item, set the marker.
/// - `upsert` is WATCH, HGET, compare versions, MULTI/HSET/EXEC on one pooled connection, retried
///   up to [`UPSERT_ATTEMPTS`] times, after a short random backoff, when another writer changes
///   the hash in between. A stored value that is not valid item JSON counts as version 0, so a
///   versioned upsert repairs it (as the Go SDK's store does), with a warning log.
/// - `get_all` skips an item another program stored as invalid JSON, with an error log, and
///   counts it in [`RedisStore::skipped_items`]; `get` of that key returns
///   [`Error::InvalidItem`]; `get_all_checked` reports it.
/// - Each operation, retries and connecting included, finishes or fails within the response
///   timeout: one budget per call, and a [`Error::Timeout`] reports the time actually waited.
///
/// ```no_run
/// use flagstore::{CachingStore, Kind, PersistentDataStore};
/// use flagstore_redis::RedisStore;
///
/// # async fn demo() -> Result<(), flagstore::Error> {
/// let redis = RedisStore::builder().url("redis://localhost:6379").build()?;
/// let store = CachingStore::builder(redis).build()?;
/// if let Some(flag) = store.get(&Kind::FEATURES, "new-checkout").await? {
///     println!("version {} deleted {}", flag.version(), flag.is_deleted());
/// }
/// # Ok(()) }
/// ```
pub struct RedisStore {
    /// The servers: pools, the connection reads share, the primaries; shared with the feed.
    topology: Arc<Topology>,
    prefix: String,
    skipped: AtomicU64,
    /// `{prefix}:features`, `{prefix}:segments`, `{prefix}:$inited`, made once.
    features_key: String,
    segments_key: String,
    inited_key: String,
    feed: Option<Arc<Feed>>,
    #[cfg(feature = "testing")]
    before_upsert_write: Option<flagstore::testing::UpsertHook>,
}

impl RedisStore {
    /// A builder with the defaults (`redis://localhost:6379`, prefix `launchdarkly`).
    pub fn builder() -> RedisStoreBuilder {
        RedisStoreBuilder::new()
    }

    /// The store on `topology`; with a change feed where its servers can be visited.
    pub(crate) fn new(
        topology: Topology,
        prefix: String,
        feed_mode: FeedMode,
        configure_keyspace_events: bool,
        #[cfg(feature = "testing")] before_upsert_write: Option<flagstore::testing::UpsertHook>,
    ) -> Self {
        let topology = Arc::new(topology);
        let feed = topology.can_visit().then(|| {
            Arc::new(Feed::new(
                Arc::clone(&topology),
                prefix.clone(),
                feed_mode,
                configure_keyspace_events,
            ))
        });
        let features_key = format!("{prefix}:features");
        let segments_key = format!("{prefix}:segments");
        let inited_key = format!("{prefix}:$inited");
        RedisStore {
            topology,
            prefix,
            skipped: AtomicU64::new(0),
            features_key,
            segments_key,
            inited_key,
            feed,
            #[cfg(feature = "testing")]
            before_upsert_write,
        }
    }

    /// The budget of one whole operation, the topology's request timeout.
    fn request_timeout(&self) -> Duration {
        self.topology.timeouts().request
    }

    /// The servers, for work that must visit every primary.
    pub(crate) fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Sends one read command: on the shared connection when the store has one, else on a
    /// pooled connection. A shared connection that fails, or whose read is abandoned (the
    /// operation's time ran out), is let go and reopened by the next read.
    pub(crate) async fn read<T: redis::FromRedisValue>(
        &self,
        op: Operation,
        command: &redis::Cmd,
    ) -> Result<T> {
        let Some(reads) = self.topology.reads() else {
            // Boxed, like opening the shared connection: the state of waiting for a pooled
            // connection is kilobytes, and every read's future would carry (and copy) it.
            return Box::pin(async {
                let mut conn = self.connection(op).await?;
                command
                    .query_async(&mut conn)
                    .await
                    .map_err(self.redis_err(op))
            })
            .await;
        };
        let abandoned = DiscardIfDropped(Some(reads));
        let result = loop {
            let (mut conn, fresh) = match reads.get().await {
                Ok(opened) => opened,
                Err(err) => break Err(err),
            };
            match command.query_async(&mut conn).await {
                Ok(value) => break Ok(value),
                // Broken before this read: once more, on a new connection.
                Err(err) if reads.failed(&err) && !fresh && !err.is_timeout() => continue,
                Err(err) => break Err(err),
            }
        };
        abandoned.disarm();
        result.map_err(self.redis_err(op))
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The connection pool of a single-server store, for callers that want to run their own
    /// commands; `None` in cluster and Sentinel modes.
    pub fn pool(&self) -> Option<&Pool> {
        self.topology.single_pool()
    }

    /// How many unreadable stored items `get_all` has skipped since this store was built.
    pub fn skipped_items(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// The hash holding `kind`'s items: `{prefix}:{kind}`.
    pub fn hash_key(&self, kind: &Kind) -> String {
        self.hash_key_ref(kind).into_owned()
    }

    /// [`hash_key`](Self::hash_key) without building the two keys every read uses.
    fn hash_key_ref(&self, kind: &Kind) -> std::borrow::Cow<'_, str> {
        match kind.name() {
            "features" => self.features_key.as_str().into(),
            "segments" => self.segments_key.as_str().into(),
            _ => format!("{}:{}", self.prefix, kind).into(),
        }
    }

    /// The initialized marker: `{prefix}:$inited`.
    pub fn inited_key(&self) -> String {
        self.inited_key.clone()
    }

    /// Sends `commands` as one transaction, a command at a time between `MULTI` and `EXEC`
    /// on this connection of its own, and checks every queued command's answer. If this is
    /// dropped midway, the connection is still inside `MULTI`: the pool's check before reuse (a
    /// `PING`, answered `QUEUED`) then drops it.
    async fn transaction_in_pieces(
        &self,
        conn: &mut Conn,
        commands: &Pieces<'_>,
    ) -> redis::RedisResult<()> {
        redis::cmd("MULTI").query_async::<()>(conn).await?;
        for command in commands.iter() {
            command.query_async::<()>(conn).await?;
        }
        let answers: redis::Value = redis::cmd("EXEC").query_async(conn).await?;
        answers.extract_error().map(drop)
    }

    pub(crate) async fn connection(&self, op: Operation) -> Result<Conn> {
        self.topology
            .connection()
            .await
            .map_err(|e| from_pool(op, self.request_timeout(), e))
    }

    /// Runs one whole operation (waiting for a connection, connecting, every command and retry)
    /// within the response timeout, naming kind and key in any error. A timeout, whichever layer
    /// noticed it, reports the time actually waited.
    pub(crate) async fn bounded<T>(
        &self,
        op: Operation,
        target: Option<(&Kind, Option<&str>)>,
        work: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let started = tokio::time::Instant::now();
        let result = match tokio::time::timeout(self.request_timeout(), work).await {
            Ok(Err(Error::Timeout { .. })) | Err(_) => {
                Err(Error::timeout(BACKEND, op, started.elapsed()))
            }
            Ok(result) => result,
        };
        match target {
            Some((kind, key)) => result.map_err(|e| e.on(kind, key)),
            None => result,
        }
    }

    pub(crate) fn redis_err(&self, op: Operation) -> impl Fn(redis::RedisError) -> Error + '_ {
        move |e| from_redis(op, self.request_timeout(), e)
    }

    async fn try_upsert(&self, kind: &Kind, item: &Item) -> Result<bool> {
        let op = Operation::Upsert;
        let hash = self.hash_key(kind);
        for attempt in 0..UPSERT_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(contention_backoff(attempt - 1)).await;
            }
            // One connection for WATCH through EXEC: the watch belongs to the connection. A
            // connection dropped mid-watch is UNWATCHed by the pool before reuse.
            let mut conn = self.connection(op).await?;
            redis::cmd("WATCH")
                .arg(&hash)
                .query_async::<()>(&mut conn)
                .await
                .map_err(self.redis_err(op))?;
            let old: Option<String> = conn
                .hget(&hash, item.key())
                .await
                .map_err(self.redis_err(op))?;
            #[cfg(feature = "testing")]
            if let Some(hook) = &self.before_upsert_write {
                hook().await;
            }
            if let Some(old) = old
                && version_to_replace(BACKEND, kind, item.key(), &old) >= item.version()
            {
                redis::cmd("UNWATCH")
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(self.redis_err(op))?;
                return Ok(false);
            }
            let committed: Option<()> = redis::pipe()
                .atomic()
                .hset(&hash, item.key(), item.json())
                .ignore()
                .query_async(&mut conn)
                .await
                .map_err(self.redis_err(op))?;
            if committed.is_some() {
                return Ok(true);
            }
            tracing::debug!(kind = %kind, key = item.key(), "upsert lost a race; retrying");
        }
        Err(Error::contention(
            BACKEND,
            kind.clone(),
            item.key(),
            UPSERT_ATTEMPTS,
        ))
    }
}

impl fmt::Display for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "redis store {} (prefix {:?})",
            self.topology.target(),
            self.prefix
        )
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (size, max_size) = self.topology.pool_status();
        f.debug_struct("RedisStore")
            .field("target", &self.topology.target())
            .field("prefix", &self.prefix)
            .field("pool_size", &size)
            .field("pool_max_size", &max_size)
            .field("request_timeout", &self.request_timeout())
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl PersistentDataStore for RedisStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    /// One `MULTI`/`EXEC` transaction: the old hashes deleted, the new ones written, the marker
    /// set, all at once for every reader. On one server (or behind Sentinel) the transaction is
    /// sent in pieces of at most 500 items or about 1 MB, so that no copy of the
    /// whole data set is ever built to send; a Cluster connection routes each command on its
    /// own, so there it goes as one pipeline.
    async fn init(&self, data: &[Collection]) -> Result<()> {
        let op = Operation::Init;
        let mut commands = Pieces::default();
        for kind in replaced_kinds(data) {
            commands.push_command(redis::cmd("DEL").arg(self.hash_key(kind)).to_owned());
        }
        for collection in data {
            let hash = Arc::<str>::from(self.hash_key(&collection.kind));
            for chunk in chunks(&collection.items) {
                commands.push_hset(&hash, chunk);
            }
        }
        commands.push_command(redis::cmd("SET").arg(&self.inited_key).arg("").to_owned());
        self.bounded(op, None, async {
            let mut conn = self.connection(op).await?;
            if self.topology.is_cluster() {
                let mut pipe = redis::pipe();
                pipe.atomic();
                for command in commands.iter() {
                    pipe.add_command(command.into_owned()).ignore();
                }
                let sent = pipe.query_async::<()>(&mut conn).await;
                // The connection keeps the capacity of its write buffer, here the size of the
                // whole data set: a large one is closed, not pooled.
                conn.retire();
                return sent.map_err(self.redis_err(op));
            }
            match self.transaction_in_pieces(&mut conn, &commands).await {
                Ok(()) => {
                    // The connection keeps its write buffer's capacity for as long as it lives.
                    if commands.largest_hset() > RETIRE_AFTER_BYTES {
                        conn.retire();
                    }
                    Ok(())
                }
                Err(err) => {
                    // Perhaps still inside MULTI: never handed to another caller.
                    conn.retire();
                    Err(self.redis_err(op)(err))
                }
            }
        })
        .await
    }

    async fn get(&self, kind: &Kind, key: &str) -> Result<Option<Item>> {
        let op = Operation::Get;
        self.bounded(op, Some((kind, Some(key))), async {
            let mut hget = redis::cmd("HGET");
            hget.arg(self.hash_key_ref(kind).as_ref()).arg(key);
            let json: Option<Vec<u8>> = self.read(op, &hget).await?;
            stored_item(op, kind, key, json)
        })
        .await
    }

    /// One `HMGET` of every key.
    async fn get_many(&self, kind: &Kind, keys: &[&str]) -> Result<Vec<Option<Item>>> {
        let op = Operation::Get;
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        self.bounded(op, Some((kind, None)), async {
            let mut hmget = redis::cmd("HMGET");
            hmget.arg(self.hash_key_ref(kind).as_ref()).arg(keys);
            let values: Vec<Option<Vec<u8>>> = self.read(op, &hmget).await?;
            keys.iter()
                .zip(values)
                .map(|(key, json)| stored_item(op, kind, key, json))
                .collect()
        })
        .await
    }

    async fn get_all(&self, kind: &Kind) -> Result<Vec<Item>> {
        let stored = self.get_all_checked(kind).await?;
        Ok(stored.into_readable(BACKEND, kind, &self.skipped))
    }

    async fn get_all_checked(&self, kind: &Kind) -> Result<StoredItems> {
        let op = Operation::GetAll;
        self.bounded(op, Some((kind, None)), async {
            let mut hgetall = redis::cmd("HGETALL");
            hgetall.arg(self.hash_key_ref(kind).as_ref());
            // Bytes: decoding them is part of the check, in one pass per item, so that one
            // value that is not UTF-8 is an unreadable item, not a failed read.
            let pairs: Vec<(Vec<u8>, Vec<u8>)> = self.read(op, &hgetall).await?;
            read_stored_bytes(BACKEND, op, pairs).await
        })
        .await
    }

    /// `HSCAN`, [`PAGE_ITEMS`] fields per call as a hint: Redis may return a field twice (when
    /// the hash grows while it is scanned), so the keys already returned are remembered and
    /// skipped; a field stored the whole time comes once.
    fn pages<'a>(&'a self, kind: &'a Kind) -> Pages<'a> {
        let start = (0u64, std::collections::HashSet::<Vec<u8>>::new());
        paged(start, move |(cursor, mut seen)| async move {
            let op = Operation::GetAll;
            self.bounded(op, Some((kind, None)), async {
                let mut hscan = redis::cmd("HSCAN");
                hscan
                    .arg(self.hash_key_ref(kind).as_ref())
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(PAGE_ITEMS);
                let (next, mut pairs): (u64, Vec<Field>) = self.read(op, &hscan).await?;
                pairs.retain(|(key, _)| seen.insert(key.clone()));
                let items = read_stored_bytes(BACKEND, op, pairs).await?;
                Ok((items, (next != 0).then_some((next, seen))))
            })
            .await
        })
    }

    async fn upsert(&self, kind: &Kind, item: Item) -> Result<bool> {
        let key = item.key().to_owned();
        self.bounded(
            Operation::Upsert,
            Some((kind, Some(&key))),
            self.try_upsert(kind, &item),
        )
        .await
    }

    async fn is_initialized(&self) -> Result<bool> {
        let op = Operation::IsInitialized;
        self.bounded(op, None, async {
            let mut exists = redis::cmd("EXISTS");
            exists.arg(&self.inited_key);
            self.read(op, &exists).await
        })
        .await
    }

    async fn is_available(&self) -> bool {
        let op = Operation::IsAvailable;
        let ping = self.bounded(op, None, async {
            self.read::<String>(op, &redis::cmd("PING")).await
        });
        ping.await.is_ok()
    }

    /// Keyspace notifications on the store's keys, from every server that holds them (the
    /// primary the Sentinels name; every cluster primary). Each change to a kind's hash is a
    /// [`Change::Kind`](flagstore::changes::Change::Kind), each change to the marker a
    /// [`Change::Everything`](flagstore::changes::Change::Everything). The server must announce them:
    /// see [`configure_keyspace_events`](crate::RedisStoreBuilder::configure_keyspace_events).
    /// `None` for a store on a caller-supplied pool.
    fn changes(&self) -> Option<ChangeFeed> {
        self.feed.as_ref().map(Feed::start)
    }
}

/// The item a read found under `key`, if any; a value that is not one is an error naming it.
fn stored_item(
    op: Operation,
    kind: &Kind,
    key: &str,
    json: Option<Vec<u8>>,
) -> Result<Option<Item>> {
    json.map(|json| {
        Item::from_json_bytes(key, json).map_err(|e| Error::invalid_item(BACKEND, op, kind, key, e))
    })
    .transpose()
}

/// Discards the shared connection if a read is dropped before it finishes (its operation ran out
/// of time): the connection may be stuck on a server that stopped answering.
struct DiscardIfDropped<'a>(Option<&'a SharedReads>);

impl DiscardIfDropped<'_> {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for DiscardIfDropped<'_> {
    fn drop(&mut self) {
        if let Some(reads) = self.0 {
            reads.discard();
        }
    }
}

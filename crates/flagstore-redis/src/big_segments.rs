//! Big Segments in Redis, in the layout the Go, Python and Node SDKs read and the Relay Proxy
//! writes:
//!
//! - `{prefix}:big_segments_synchronized_on`: a string, the Unix time in milliseconds;
//! - `{prefix}:big_segment_include:{contextHash}` and `{prefix}:big_segment_exclude:{contextHash}`:
//!   sets of segment refs (`key.gN`);
//! - `{prefix}:big_segments_cursor`: the version of the last patch applied, and
//!   `{prefix}:big_segments_lock`, the key a patch's transaction watches, as the Relay Proxy's
//!   synchronizer uses them.

use async_trait::async_trait;
use deadpool_redis::redis;
use deadpool_redis::redis::aio::ConnectionLike;
use flagstore::backend::{UPSERT_ATTEMPTS, contention_backoff};
use flagstore::big_segments::{
    BigSegmentMembership, BigSegmentMetadata, BigSegmentPatch, BigSegmentStore,
};
use flagstore::error::Operation;
use flagstore::{Error, Result};

use crate::error::BACKEND;
use crate::feed::glob_escape;
use crate::store::RedisStore;

const OP: Operation = Operation::BigSegments;

/// Contexts written per transaction by `set_memberships`, and keys per `DEL` when clearing.
const CHUNK: usize = 250;

impl RedisStore {
    /// `{prefix}:big_segments_synchronized_on`.
    pub fn big_segments_synchronized_on_key(&self) -> String {
        format!("{}:big_segments_synchronized_on", self.prefix())
    }

    /// `{prefix}:big_segment_include:{context_hash}`.
    pub fn big_segment_include_key(&self, context_hash: &str) -> String {
        format!("{}:big_segment_include:{context_hash}", self.prefix())
    }

    /// `{prefix}:big_segment_exclude:{context_hash}`.
    pub fn big_segment_exclude_key(&self, context_hash: &str) -> String {
        format!("{}:big_segment_exclude:{context_hash}", self.prefix())
    }

    /// `{prefix}:big_segments_cursor`.
    pub fn big_segments_cursor_key(&self) -> String {
        format!("{}:big_segments_cursor", self.prefix())
    }

    /// `{prefix}:big_segments_lock`.
    pub fn big_segments_lock_key(&self) -> String {
        format!("{}:big_segments_lock", self.prefix())
    }

    /// The string under `key`, if any.
    async fn get_string(&self, key: &str) -> Result<Option<String>> {
        self.bounded(OP, None, async {
            let mut conn = self.connection(OP).await?;
            redis::cmd("GET")
                .arg(key)
                .query_async(&mut conn)
                .await
                .map_err(self.redis_err(OP))
        })
        .await
    }

    /// One attempt at a patch: `None` if another writer touched the lock meanwhile.
    async fn try_apply(&self, patch: &BigSegmentPatch) -> Result<Option<bool>> {
        let (lock, cursor_key) = (self.big_segments_lock_key(), self.big_segments_cursor_key());
        let mut conn = self.connection(OP).await?;
        redis::cmd("WATCH")
            .arg(&lock)
            .query_async::<()>(&mut conn)
            .await
            .map_err(self.redis_err(OP))?;
        let cursor: Option<String> = redis::cmd("GET")
            .arg(&cursor_key)
            .query_async(&mut conn)
            .await
            .map_err(self.redis_err(OP))?;
        if !patch.follows(cursor.as_deref()) {
            redis::cmd("UNWATCH")
                .query_async::<()>(&mut conn)
                .await
                .map_err(self.redis_err(OP))?;
            return Ok(Some(false));
        }
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.set(&lock, "").ignore();
        pipe.set(&cursor_key, &patch.version).ignore();
        let segment = patch.segment_ref.as_str();
        for change in patch.changes() {
            let key = if change.included {
                self.big_segment_include_key(change.context_hash)
            } else {
                self.big_segment_exclude_key(change.context_hash)
            };
            if change.add {
                pipe.sadd(key, segment).ignore();
            } else {
                pipe.srem(key, segment).ignore();
            }
        }
        let committed: Option<()> = pipe
            .query_async(&mut conn)
            .await
            .map_err(self.redis_err(OP))?;
        Ok(committed.map(|()| true))
    }

    /// Every key matching `pattern` on the servers holding the data.
    async fn scan(&self, pattern: &str) -> Result<Vec<String>> {
        let topology = self.topology();
        if !topology.is_cluster() {
            let mut conn = self.connection(OP).await?;
            return self.scan_on(&mut conn, pattern).await;
        }
        let mut keys = Vec::new();
        for client in topology.primaries(OP).await? {
            let mut conn = topology.connect(OP, &client).await?;
            keys.extend(self.scan_on(&mut conn, pattern).await?);
        }
        Ok(keys)
    }

    async fn scan_on(&self, conn: &mut impl ConnectionLike, pattern: &str) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = self
                .bounded(OP, None, async {
                    redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(conn)
                        .await
                        .map_err(self.redis_err(OP))
                })
                .await?;
            keys.extend(batch);
            if next == 0 {
                return Ok(keys);
            }
            cursor = next;
        }
    }
}

#[async_trait]
impl BigSegmentStore for RedisStore {
    async fn get_metadata(&self) -> Result<BigSegmentMetadata> {
        let key = self.big_segments_synchronized_on_key();
        let value = self.get_string(&key).await?;
        match value {
            None => Ok(BigSegmentMetadata::default()),
            Some(text) => text
                .trim()
                .parse()
                .map(BigSegmentMetadata::synchronized_at)
                .map_err(|_| {
                    let reason = format!("{text:?} is not a Unix time in milliseconds");
                    Error::invalid_record(BACKEND, OP, key.as_str(), reason)
                }),
        }
    }

    async fn get_membership(&self, context_hash: &str) -> Result<Option<BigSegmentMembership>> {
        let (include, exclude) = (
            self.big_segment_include_key(context_hash),
            self.big_segment_exclude_key(context_hash),
        );
        let (included, excluded): (Vec<String>, Vec<String>) = self
            .bounded(OP, None, async {
                let mut conn = self.connection(OP).await?;
                redis::pipe()
                    .cmd("SMEMBERS")
                    .arg(&include)
                    .cmd("SMEMBERS")
                    .arg(&exclude)
                    .query_async(&mut conn)
                    .await
                    .map_err(self.redis_err(OP))
            })
            .await?;
        let membership = BigSegmentMembership::new(included, excluded);
        Ok((!membership.is_empty()).then_some(membership))
    }

    /// One MULTI/EXEC per 250 contexts: each context's two sets are deleted and rewritten
    /// together, so a reader never sees half of one context's change.
    async fn set_memberships(&self, memberships: &[(String, BigSegmentMembership)]) -> Result<()> {
        for chunk in memberships.chunks(CHUNK) {
            let mut pipe = redis::pipe();
            pipe.atomic();
            for (hash, membership) in chunk {
                let (include, exclude) = (
                    self.big_segment_include_key(hash),
                    self.big_segment_exclude_key(hash),
                );
                pipe.del(&include).ignore().del(&exclude).ignore();
                let included: Vec<&str> = membership.included().collect();
                if !included.is_empty() {
                    pipe.sadd(&include, included).ignore();
                }
                let excluded: Vec<&str> = membership.excluded().collect();
                if !excluded.is_empty() {
                    pipe.sadd(&exclude, excluded).ignore();
                }
            }
            self.bounded(OP, None, async {
                let mut conn = self.connection(OP).await?;
                pipe.query_async::<()>(&mut conn)
                    .await
                    .map_err(self.redis_err(OP))
            })
            .await?;
        }
        Ok(())
    }

    async fn set_synchronized_on(&self, unix_millis: u64) -> Result<()> {
        let key = self.big_segments_synchronized_on_key();
        self.bounded(OP, None, async {
            let mut conn = self.connection(OP).await?;
            redis::cmd("SET")
                .arg(&key)
                .arg(unix_millis.to_string())
                .query_async::<()>(&mut conn)
                .await
                .map_err(self.redis_err(OP))
        })
        .await
    }

    /// Finds the membership sets with `SCAN` (on every primary of a cluster) and deletes them
    /// with the synchronization time.
    async fn clear_big_segments(&self) -> Result<()> {
        let prefix = glob_escape(self.prefix());
        let mut keys = self
            .scan(&format!("{prefix}:big_segment_include:*"))
            .await?;
        keys.extend(
            self.scan(&format!("{prefix}:big_segment_exclude:*"))
                .await?,
        );
        keys.push(self.big_segments_synchronized_on_key());
        keys.push(self.big_segments_cursor_key());
        keys.push(self.big_segments_lock_key());
        for chunk in keys.chunks(CHUNK) {
            self.bounded(OP, None, async {
                let mut conn = self.connection(OP).await?;
                redis::cmd("DEL")
                    .arg(chunk)
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(self.redis_err(OP))
            })
            .await?;
        }
        Ok(())
    }

    async fn get_cursor(&self) -> Result<Option<String>> {
        self.get_string(&self.big_segments_cursor_key()).await
    }

    /// As the Relay Proxy does: `WATCH {prefix}:big_segments_lock`, read the cursor, then one
    /// MULTI/EXEC that sets the lock and the cursor and adds or removes the segment ref in each
    /// context's set; retried if another writer got in between.
    async fn apply_patch(&self, patch: &BigSegmentPatch) -> Result<bool> {
        self.bounded(OP, None, async {
            for attempt in 0..UPSERT_ATTEMPTS {
                if attempt > 0 {
                    tokio::time::sleep(contention_backoff(attempt - 1)).await;
                }
                if let Some(applied) = self.try_apply(patch).await? {
                    return Ok(applied);
                }
            }
            Err(Error::database(
                BACKEND,
                OP,
                format!(
                    "{} kept changing while a Big Segments patch was applied ({UPSERT_ATTEMPTS} attempts): is another synchronizer writing this prefix?",
                    self.big_segments_lock_key()
                ),
            ))
        })
        .await
    }
}

//! The connection reads share.
//!
//! A read is one command, so every `get`, `get_all` and `is_initialized` can go over one
//! multiplexed connection (a cluster client multiplexes one per node), pipelined with every other
//! read in flight, with no pool checkout and no `UNWATCH`/`PING` before it. Only an upsert's
//! WATCH…EXEC needs a connection of its own, and keeps taking one from the pool.
//!
//! The connection is opened on the first read and replaced after it breaks: a read that fails
//! on I/O, a dropped connection or a timeout discards it. A read that found the connection it
//! was handed already broken (the server restarted since) tries once more on a new one: reads
//! are idempotent, and the pool this replaces did the same by checking connections on checkout.

use std::sync::RwLock;

use deadpool_redis::redis::aio::{ConnectionLike, MultiplexedConnection};
#[cfg(feature = "cluster")]
use deadpool_redis::redis::cluster::ClusterClient;
#[cfg(feature = "cluster")]
use deadpool_redis::redis::cluster_async::ClusterConnection;
use deadpool_redis::redis::{
    AsyncConnectionConfig, Client, Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value,
};

/// How the shared connection is opened.
pub(crate) enum Opener {
    Single {
        client: Client,
        config: AsyncConnectionConfig,
    },
    #[cfg(feature = "cluster")]
    Cluster(ClusterClient),
}

/// The shared connection of one store.
pub(crate) struct SharedReads {
    opener: Opener,
    current: RwLock<Option<Shared>>,
    /// Held while opening, so that a burst of reads after a failure opens one connection.
    opening: tokio::sync::Mutex<()>,
}

/// A handle on the shared connection: cloning it is cheap, and every clone sends on the same
/// socket(s).
#[derive(Clone)]
pub(crate) enum Shared {
    Single(MultiplexedConnection),
    #[cfg(feature = "cluster")]
    Cluster(ClusterConnection),
}

impl SharedReads {
    pub(crate) fn new(opener: Opener) -> Self {
        SharedReads {
            opener,
            current: RwLock::new(None),
            opening: tokio::sync::Mutex::new(()),
        }
    }

    fn current(&self) -> Option<Shared> {
        // A poisoned lock holds a whole Option: a clone or a replacement, never a torn value.
        self.current
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The shared connection, opening it if there is none; whether it was just opened.
    pub(crate) async fn get(&self) -> RedisResult<(Shared, bool)> {
        if let Some(conn) = self.current() {
            return Ok((conn, false));
        }
        // Boxed: connecting takes kilobytes of future state, which every read would otherwise
        // carry and copy although almost none of them connects.
        Box::pin(self.open()).await
    }

    async fn open(&self) -> RedisResult<(Shared, bool)> {
        let _opening = self.opening.lock().await;
        if let Some(conn) = self.current() {
            return Ok((conn, false));
        }
        let conn = match &self.opener {
            Opener::Single { client, config } => client
                .get_multiplexed_async_connection_with_config(config)
                .await
                .map(Shared::Single)?,
            #[cfg(feature = "cluster")]
            Opener::Cluster(client) => client.get_async_connection().await.map(Shared::Cluster)?,
        };
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(conn.clone());
        Ok((conn, true))
    }

    /// After a read failed with `err`: a connection that may be broken is let go. Whether it
    /// was (and a read that found it broken may try once more on a new one).
    pub(crate) fn failed(&self, err: &RedisError) -> bool {
        let broken = err.is_io_error()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.is_timeout()
            || err.is_unrecoverable_error();
        if broken {
            self.discard();
        }
        broken
    }

    /// Lets the connection go; the next read opens a new one.
    pub(crate) fn discard(&self) {
        *self
            .current
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
    }
}

impl ConnectionLike for Shared {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Shared::Single(conn) => conn.req_packed_command(cmd),
            #[cfg(feature = "cluster")]
            Shared::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Shared::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "cluster")]
            Shared::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Shared::Single(conn) => conn.get_db(),
            #[cfg(feature = "cluster")]
            Shared::Cluster(conn) => conn.get_db(),
        }
    }
}

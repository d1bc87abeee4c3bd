//! Where the data lives (one server, a Redis Cluster, or a primary that Redis Sentinel manages):
//! the pools, the connection reads share, and the servers holding the data, used alike by the
//! store, its change feed and Big Segments.
//!
//! Every write takes a connection of its own from a pool: an upsert's WATCH belongs to the
//! connection it was sent on, so it must not be shared while the upsert runs.

use std::future::Future;
use std::time::Duration;

use deadpool::managed;
#[cfg(any(feature = "cluster", feature = "sentinel"))]
use deadpool::managed::Object;
use deadpool_redis::Pool;
use deadpool_redis::redis::aio::{ConnectionLike, MultiplexedConnection};
use deadpool_redis::redis::{self, Client, Cmd, Pipeline, RedisError, RedisFuture, Value};
use flagstore::error::Operation;
use flagstore::{Error, Result};

#[cfg(feature = "cluster")]
use crate::cluster::{ClusterManager, NodeTemplate};
use crate::connect::Timeouts;
use crate::error::{BACKEND, from_redis};
use crate::reads::SharedReads;
#[cfg(feature = "sentinel")]
use crate::sentinel::SentinelManager;

/// One store's view of its servers.
pub(crate) struct Topology {
    pools: Pools,
    /// The connection reads share; `None` (Sentinel, a caller's pool): reads use the pool.
    reads: Option<SharedReads>,
    /// The servers to visit one by one (a change feed, a `SCAN`); `None` for a caller's pool,
    /// whose client is private to it.
    primaries: Option<Primaries>,
    /// The database the data is in (always 0 in a cluster).
    db: i64,
    timeouts: Timeouts,
    /// How `Display` names the servers: never a password.
    target: String,
}

/// How to find the servers holding the data at a given moment.
pub(crate) enum Primaries {
    /// One server.
    Single(Client),
    /// Whichever server the Sentinels name as primary.
    #[cfg(feature = "sentinel")]
    Sentinel(tokio::sync::Mutex<redis::sentinel::SentinelClient>),
    /// Every primary of the cluster, as `CLUSTER SLOTS` reports them.
    #[cfg(feature = "cluster")]
    Cluster(NodeTemplate),
}

/// A pool of `manager`'s connections, `size` at most, each wait and each connection bounded by
/// `timeouts`: the limits every topology's pool has.
pub(crate) fn limited_pool<M, W>(
    manager: M,
    size: usize,
    timeouts: Timeouts,
) -> Result<managed::Pool<M, W>>
where
    M: managed::Manager,
    W: From<managed::Object<M>>,
{
    managed::Pool::<M, W>::builder(manager)
        .max_size(size)
        .runtime(deadpool::Runtime::Tokio1)
        .wait_timeout(Some(timeouts.request))
        .create_timeout(Some(timeouts.connect_and_answer()))
        .recycle_timeout(Some(timeouts.request))
        .build()
        .map_err(|e| Error::config_caused_by(BACKEND, "could not set up the connection pool", e))
}

impl Topology {
    pub(crate) fn new(
        pools: Pools,
        reads: Option<SharedReads>,
        primaries: Option<Primaries>,
        db: i64,
        timeouts: Timeouts,
        target: String,
    ) -> Self {
        Topology {
            pools,
            reads,
            primaries,
            db,
            timeouts,
            target,
        }
    }

    /// A pooled connection of its own, for one operation.
    pub(crate) async fn connection(&self) -> std::result::Result<Conn, PoolError> {
        self.pools.get().await
    }

    /// The connection reads share, where reads can share one.
    pub(crate) fn reads(&self) -> Option<&SharedReads> {
        self.reads.as_ref()
    }

    /// The pool of a single server.
    pub(crate) fn single_pool(&self) -> Option<&Pool> {
        match &self.pools {
            Pools::Single(pool) => Some(pool),
            #[allow(unreachable_patterns, reason = "reachable with cluster or sentinel on")]
            _ => None,
        }
    }

    /// Whether the data is spread over the primaries of a Redis Cluster.
    pub(crate) fn is_cluster(&self) -> bool {
        #[cfg(feature = "cluster")]
        if let Pools::Cluster(_) = self.pools {
            return true;
        }
        false
    }

    /// Whether the servers can be visited one by one (a change feed needs that).
    pub(crate) fn can_visit(&self) -> bool {
        self.primaries.is_some()
    }

    /// Open and maximum pooled connections.
    pub(crate) fn pool_status(&self) -> (usize, usize) {
        self.pools.status()
    }

    pub(crate) fn db(&self) -> i64 {
        self.db
    }

    pub(crate) fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    pub(crate) fn target(&self) -> &str {
        &self.target
    }

    /// The servers holding the data right now: the one server, the current primary, or every
    /// cluster primary.
    pub(crate) async fn primaries(&self, op: Operation) -> Result<Vec<Client>> {
        match &self.primaries {
            None => Err(Error::database(
                BACKEND,
                op,
                "a store on a caller-supplied pool cannot reach its servers one by one",
            )),
            Some(Primaries::Single(client)) => Ok(vec![client.clone()]),
            #[cfg(feature = "sentinel")]
            Some(Primaries::Sentinel(sentinel)) => {
                let budget = self.timeouts.connect_and_answer();
                let client = self
                    .bounded(op, budget, async {
                        sentinel.lock().await.async_get_client().await
                    })
                    .await?;
                Ok(vec![client])
            }
            #[cfg(feature = "cluster")]
            Some(Primaries::Cluster(nodes)) => {
                let budget = self.timeouts.connect_and_answer();
                let mut conn = tokio::time::timeout(budget, self.connection())
                    .await
                    .map_err(|_| Error::timeout(BACKEND, op, budget))?
                    .map_err(|e| crate::error::from_pool(op, budget, e))?;
                let slots: Value = self
                    .bounded(op, self.timeouts.request, async {
                        redis::cmd("CLUSTER")
                            .arg("SLOTS")
                            .query_async(&mut conn)
                            .await
                    })
                    .await?;
                crate::cluster::primaries_in(&slots)
                    .iter()
                    .map(|(host, port)| nodes.client(op, host, *port))
                    .collect()
            }
        }
    }

    /// A plain connection to one of the [`primaries`](Self::primaries), with the store's
    /// timeouts.
    pub(crate) async fn connect(
        &self,
        op: Operation,
        client: &Client,
    ) -> Result<MultiplexedConnection> {
        let config = self.timeouts.connection_config();
        self.bounded(op, self.timeouts.connect_and_answer(), async {
            client
                .get_multiplexed_async_connection_with_config(&config)
                .await
        })
        .await
    }

    /// `call` within `budget`, its failure as an error of `op`.
    pub(crate) async fn bounded<T>(
        &self,
        op: Operation,
        budget: Duration,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T> {
        match tokio::time::timeout(budget, call).await {
            Ok(result) => result.map_err(|e| from_redis(op, budget, e)),
            Err(_) => Err(Error::timeout(BACKEND, op, budget)),
        }
    }
}

/// The pool of one of the three topologies.
pub(crate) enum Pools {
    Single(Pool),
    #[cfg(feature = "cluster")]
    Cluster(managed::Pool<ClusterManager>),
    #[cfg(feature = "sentinel")]
    Sentinel(managed::Pool<SentinelManager>),
}

/// Pool errors of any topology, as deadpool-redis's own pool reports them.
pub(crate) type PoolError = managed::PoolError<RedisError>;

impl Pools {
    /// A connection for one operation.
    pub(crate) async fn get(&self) -> Result<Conn, PoolError> {
        match self {
            Pools::Single(pool) => pool.get().await.map(Conn::Single),
            #[cfg(feature = "cluster")]
            Pools::Cluster(pool) => pool.get().await.map(Conn::Cluster),
            #[cfg(feature = "sentinel")]
            Pools::Sentinel(pool) => pool.get().await.map(Conn::Sentinel),
        }
    }

    /// Open and maximum connections.
    pub(crate) fn status(&self) -> (usize, usize) {
        let status = match self {
            Pools::Single(pool) => pool.status(),
            #[cfg(feature = "cluster")]
            Pools::Cluster(pool) => pool.status(),
            #[cfg(feature = "sentinel")]
            Pools::Sentinel(pool) => pool.status(),
        };
        (status.size, status.max_size)
    }
}

/// A pooled connection of any topology; it goes back to its pool when dropped.
pub(crate) enum Conn {
    Single(deadpool_redis::Connection),
    #[cfg(feature = "cluster")]
    Cluster(Object<ClusterManager>),
    #[cfg(feature = "sentinel")]
    Sentinel(Object<SentinelManager>),
}

impl Conn {
    /// Closes the connection instead of returning it to its pool.
    pub(crate) fn retire(self) {
        match self {
            Conn::Single(conn) => drop(deadpool_redis::Connection::take(conn)),
            #[cfg(feature = "cluster")]
            Conn::Cluster(conn) => drop(Object::take(conn)),
            #[cfg(feature = "sentinel")]
            Conn::Sentinel(conn) => drop(Object::take(conn)),
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            #[cfg(feature = "cluster")]
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
            #[cfg(feature = "sentinel")]
            Conn::Sentinel(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "cluster")]
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
            #[cfg(feature = "sentinel")]
            Conn::Sentinel(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            #[cfg(feature = "cluster")]
            Conn::Cluster(conn) => conn.get_db(),
            #[cfg(feature = "sentinel")]
            Conn::Sentinel(conn) => conn.get_db(),
        }
    }
}

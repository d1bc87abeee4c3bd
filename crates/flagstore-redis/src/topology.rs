//! Where the data lives (one server, a Redis Cluster, or a primary that Redis Sentinel manages)
//! and the pooled connection each operation takes.
//!
//! Every operation takes a connection of its own from a pool: an upsert's WATCH belongs to the
//! connection it was sent on, so it must not be shared while the upsert runs.

use deadpool::managed::{self, Metrics, Object, RecycleError, RecycleResult};
use deadpool_redis::Pool;
use deadpool_redis::redis::aio::{ConnectionLike, MultiplexedConnection};
use deadpool_redis::redis::cluster::ClusterClient;
use deadpool_redis::redis::cluster_async::ClusterConnection;
use deadpool_redis::redis::sentinel::SentinelClient;
use deadpool_redis::redis::{
    self, AsyncConnectionConfig, Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, Value,
};
use flagstore::backend::redact_url;
use std::time::Duration;

/// Makes and checks the connections of a cluster pool. Each pooled connection is a whole
/// cluster client with connections of its own to the nodes, so a WATCH on it is this
/// operation's alone.
pub(crate) struct ClusterManager {
    pub(crate) client: ClusterClient,
}

impl managed::Manager for ClusterManager {
    type Type = ClusterConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<ClusterConnection, RedisError> {
        self.client.get_async_connection().await
    }

    async fn recycle(
        &self,
        conn: &mut ClusterConnection,
        _: &Metrics,
    ) -> RecycleResult<RedisError> {
        // Also clears a WATCH an abandoned upsert left behind (sent to every primary).
        redis::cmd("UNWATCH").query_async::<()>(conn).await?;
        Ok(())
    }
}

/// Makes and checks the connections of a Sentinel pool: each new connection goes to the primary
/// the Sentinels name at that moment, and a pooled connection to a server that is no longer the
/// primary (after a failover) is discarded instead of reused.
pub(crate) struct SentinelManager {
    pub(crate) client: tokio::sync::Mutex<SentinelClient>,
    pub(crate) config: AsyncConnectionConfig,
    /// The primary's name, and the Sentinels as configured, for error messages.
    pub(crate) master: String,
    pub(crate) sentinels: Vec<String>,
    pub(crate) connect_timeout: Duration,
    /// How long "no such primary" is retried: right after a failover the Sentinels may name a
    /// server that does not answer as primary yet, which the driver reports exactly as it
    /// reports a misspelt name. Half the request budget, so a misspelt name still fails with
    /// this explanation rather than a bare timeout.
    pub(crate) retry_for: Duration,
}

/// The first wait between lookups of a primary the Sentinels do not name (yet); it doubles.
const SENTINEL_RETRY_FIRST: Duration = Duration::from_millis(25);
const SENTINEL_RETRY_MAX: Duration = Duration::from_millis(250);

impl SentinelManager {
    async fn connect_once(&self) -> Result<MultiplexedConnection, RedisError> {
        let mut client = self.client.lock().await;
        client.get_async_connection_with_config(&self.config).await
    }

    /// The driver's error, saying which primary and which Sentinels, and whether any Sentinel
    /// answers at all.
    async fn explained(&self, err: RedisError, retried: Duration) -> RedisError {
        let sentinels = self
            .sentinels
            .iter()
            .map(|s| redact_url(s).into_owned())
            .collect::<Vec<_>>()
            .join(", ");
        let master = &self.master;
        let detail = if err.kind() == ErrorKind::MasterNameNotFoundBySentinel {
            format!(
                "no Sentinel of [{sentinels}] names a primary for {master:?} that answers as primary (retried for {retried:.1?}): the name may be misspelt, or a failover still under way"
            )
        } else if !self.any_sentinel_answers().await {
            format!(
                "every Sentinel is down: none of [{sentinels}] accepts a connection (primary {master:?}): {err}"
            )
        } else {
            format!(
                "could not reach the primary {master:?} through the Sentinels [{sentinels}]: {err}"
            )
        };
        RedisError::from((err.kind(), "Redis Sentinel", detail))
    }

    /// Whether a TCP connection to any configured Sentinel opens within the connect timeout.
    async fn any_sentinel_answers(&self) -> bool {
        let timeout = self.connect_timeout;
        for sentinel in &self.sentinels {
            let address = tcp_address(sentinel);
            let connect = tokio::net::TcpStream::connect(address);
            if matches!(tokio::time::timeout(timeout, connect).await, Ok(Ok(_))) {
                return true;
            }
        }
        false
    }
}

/// `host:port` of a node given as `host:port` or as a URL.
fn tcp_address(node: &str) -> &str {
    let rest = node.split_once("://").map_or(node, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    rest.split('/').next().unwrap_or(rest)
}

impl managed::Manager for SentinelManager {
    type Type = MultiplexedConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<MultiplexedConnection, RedisError> {
        let started = tokio::time::Instant::now();
        let mut delay = SENTINEL_RETRY_FIRST;
        loop {
            match self.connect_once().await {
                Ok(conn) => return Ok(conn),
                Err(err)
                    if err.kind() == ErrorKind::MasterNameNotFoundBySentinel
                        && started.elapsed() + delay < self.retry_for =>
                {
                    tracing::debug!(master = %self.master, "the Sentinels name no primary yet; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(SENTINEL_RETRY_MAX);
                }
                Err(err) => return Err(self.explained(err, started.elapsed()).await),
            }
        }
    }

    async fn recycle(
        &self,
        conn: &mut MultiplexedConnection,
        _: &Metrics,
    ) -> RecycleResult<RedisError> {
        redis::cmd("UNWATCH").query_async::<()>(&mut *conn).await?;
        let role: Vec<Value> = redis::cmd("ROLE").query_async(conn).await?;
        match role.first() {
            Some(Value::BulkString(role)) if role.as_slice() == b"master" => Ok(()),
            _ => Err(RecycleError::message(
                "the server is no longer the primary (a failover happened)",
            )),
        }
    }
}

/// The pool of one of the three topologies.
pub(crate) enum Pools {
    Single(Pool),
    Cluster(managed::Pool<ClusterManager>),
    Sentinel(managed::Pool<SentinelManager>),
}

/// Pool errors of any topology, as deadpool-redis's own pool reports them.
pub(crate) type PoolError = managed::PoolError<RedisError>;

impl Pools {
    /// A connection for one operation.
    pub(crate) async fn get(&self) -> Result<Conn, PoolError> {
        match self {
            Pools::Single(pool) => pool.get().await.map(Conn::Single),
            Pools::Cluster(pool) => pool.get().await.map(Conn::Cluster),
            Pools::Sentinel(pool) => pool.get().await.map(Conn::Sentinel),
        }
    }

    /// Open and maximum connections.
    pub(crate) fn status(&self) -> (usize, usize) {
        let status = match self {
            Pools::Single(pool) => pool.status(),
            Pools::Cluster(pool) => pool.status(),
            Pools::Sentinel(pool) => pool.status(),
        };
        (status.size, status.max_size)
    }
}

/// A pooled connection of any topology; it goes back to its pool when dropped.
pub(crate) enum Conn {
    Single(deadpool_redis::Connection),
    Cluster(Object<ClusterManager>),
    Sentinel(Object<SentinelManager>),
}

impl Conn {
    /// Closes the connection instead of returning it to its pool.
    pub(crate) fn retire(self) {
        match self {
            Conn::Single(conn) => drop(deadpool_redis::Connection::take(conn)),
            Conn::Cluster(conn) => drop(Object::take(conn)),
            Conn::Sentinel(conn) => drop(Object::take(conn)),
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
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
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
            Conn::Sentinel(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
            Conn::Sentinel(conn) => conn.get_db(),
        }
    }
}

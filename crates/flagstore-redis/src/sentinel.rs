//! Redis Sentinel (feature `sentinel`): a pool whose connections go to the primary the
//! Sentinels name, and drop out after a failover.

use std::time::Duration;

use deadpool::managed::{self, Metrics, RecycleError, RecycleResult};
use deadpool_redis::redis::aio::MultiplexedConnection;
use deadpool_redis::redis::sentinel::{
    SentinelClient, SentinelNodeConnectionInfo, SentinelServerType,
};
use deadpool_redis::redis::{
    self, AsyncConnectionConfig, ErrorKind, RedisConnectionInfo, RedisError, TlsMode, Value,
};
use flagstore::backend::redact_url;
use flagstore::{Error, Result};

use crate::connect;
use crate::error::BACKEND;
use crate::multi::PoolSettings;
use crate::topology::{Pools, Primaries, Topology, limited_pool};

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

/// The primary `master` of the `sentinels` in database `db`. Nothing connects until the first
/// operation.
pub(crate) fn topology(
    tls: bool,
    sentinels: &[String],
    master: &str,
    db: i64,
    settings: &PoolSettings<'_>,
    target: String,
) -> Result<Topology> {
    if settings.root_cert_pem.is_some() {
        return Err(Error::config(
            BACKEND,
            "a TLS root certificate is not supported in Sentinel mode; the primary's certificate is checked against the system's roots",
        ));
    }
    let urls: Vec<String> = sentinels
        .iter()
        .map(|n| connect::node_url(false, n))
        .collect();
    let redis = settings
        .credentials
        .apply(RedisConnectionInfo::default().set_db(db));
    let mut primary = SentinelNodeConnectionInfo::default().set_redis_connection_info(redis);
    if tls {
        primary = primary.set_tls_mode(TlsMode::Secure);
    }
    let client = || {
        SentinelClient::build(
            urls.clone(),
            master,
            Some(primary.clone()),
            SentinelServerType::Master,
        )
        .map_err(|_| Error::config(BACKEND, "the Sentinel addresses are not valid Redis URLs"))
    };
    let manager = SentinelManager {
        client: tokio::sync::Mutex::new(client()?),
        config: settings.timeouts.connection_config(),
        master: master.to_owned(),
        sentinels: sentinels.to_vec(),
        connect_timeout: settings.timeouts.connect,
        retry_for: settings.timeouts.request / 2,
    };
    let pool = limited_pool(manager, settings.pool_size, settings.timeouts)?;
    // Reads keep using the pool, whose checkout confirms the server is still the primary.
    Ok(Topology::new(
        Pools::Sentinel(pool),
        None,
        Some(Primaries::Sentinel(tokio::sync::Mutex::new(client()?))),
        db,
        settings.timeouts,
        target,
    ))
}

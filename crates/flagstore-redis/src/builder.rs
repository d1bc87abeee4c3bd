//! Configuration of a [`RedisStore`].

use std::fmt;
use std::time::Duration;

use deadpool_redis::redis::{AsyncConnectionConfig, Client, ConnectionAddr, IntoConnectionInfo};
use deadpool_redis::{Manager, Pool};
use flagstore::backend::{
    ConfigKey, NetworkOptions, Secret, config_count, redact_url, refuse_ignored,
};
use flagstore::{Error, Result};

use crate::config::RedisConfigKey;
use crate::connect::{self, Credentials, Timeouts};
use crate::error::BACKEND;
use crate::feed::FeedMode;
use crate::multi::{self, Hosts, PoolSettings};
use crate::reads::{Opener, SharedReads};
use crate::store::RedisStore;
use crate::topology::{Pools, Primaries, Topology, limited_pool};

/// The URL used when none is given.
pub const DEFAULT_URL: &str = "redis://localhost:6379";
/// The key prefix every LaunchDarkly SDK uses by default.
pub const DEFAULT_PREFIX: &str = "launchdarkly";
/// Pooled connections when none is set.
pub const DEFAULT_POOL_SIZE: usize = 16;
/// Time allowed to open a connection (TCP, TLS and the `HELLO`/`AUTH`/`SELECT` handshake).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time allowed for one whole operation: waiting for a pooled connection, connecting if need
/// be, every command and every retry.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Configures a [`RedisStore`]. Made by [`RedisStore::builder`]; [`build`](Self::build) checks
/// everything and never connects.
///
/// ```
/// use std::time::Duration;
/// use flagstore_redis::RedisStore;
///
/// let store = RedisStore::builder()
///     .url("redis://app:hunter2@cache.internal:6379/2")
///     .prefix("prod")
///     .pool_size(8)
///     .request_timeout(Duration::from_secs(1))
///     .build()?;
/// // The password never shows.
/// assert_eq!(store.to_string(), r#"redis store at redis://app:***@cache.internal:6379/2 (prefix "prod")"#);
/// # Ok::<(), flagstore::Error>(())
/// ```
#[must_use = "a builder does nothing until build() is called"]
pub struct RedisStoreBuilder {
    url: Option<String>,
    prefix: Option<String>,
    username: Option<String>,
    password: Option<Secret>,
    pool_size: Option<usize>,
    network: NetworkOptions,
    /// From the environment: a password for a URL that carries none.
    env_password: Option<Secret>,
    pool: Option<Pool>,
    cluster_nodes: Option<Vec<String>>,
    sentinel: Option<(Vec<String>, String)>,
    feed_mode: FeedMode,
    configure_keyspace_events: bool,
    #[cfg(feature = "testing")]
    pub(crate) before_upsert_write: Option<flagstore::testing::UpsertHook>,
}

impl Default for RedisStoreBuilder {
    fn default() -> Self {
        RedisStoreBuilder {
            url: None,
            prefix: None,
            username: None,
            password: None,
            pool_size: None,
            network: NetworkOptions::new(),
            env_password: None,
            pool: None,
            cluster_nodes: None,
            sentinel: None,
            feed_mode: FeedMode::Auto,
            configure_keyspace_events: false,
            #[cfg(feature = "testing")]
            before_upsert_write: None,
        }
    }
}

impl RedisStoreBuilder {
    /// A builder with the defaults: `redis://localhost:6379`, prefix `launchdarkly`, 16 pooled
    /// connections, 2 s connect and 5 s response timeouts.
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder configured from the environment, as the Relay Proxy reads it:
    ///
    /// | variable | sets |
    /// |---|---|
    /// | `REDIS_URL` | [`url`](Self::url) |
    /// | `REDIS_USERNAME` | [`username`](Self::username) |
    /// | `REDIS_PASSWORD` | the password, for a URL that carries none |
    ///
    /// Unset variables leave the defaults. A password in the URL (in `REDIS_URL`, or in one given
    /// to [`url`](Self::url) afterwards) wins over `REDIS_PASSWORD`; a URL given afterwards
    /// without one gets `REDIS_PASSWORD`, else the password of `REDIS_URL`. An explicit
    /// [`password`](Self::password) wins over all of them.
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let mut builder = Self::new();
        let url = var("REDIS_URL");
        builder.env_password = var("REDIS_PASSWORD")
            .filter(|p| !p.is_empty())
            .or_else(|| url.as_deref().and_then(url_password))
            .map(Secret::new);
        if let Some(url) = url {
            builder = builder.url(url);
        }
        if let Some(username) = var("REDIS_USERNAME") {
            builder = builder.username(username);
        }
        builder
    }

    /// The server: `redis://[user:password@]host[:port][/db]`, or `rediss://…` for TLS (verified
    /// against the system's roots, or [`tls_root_certificate_pem`](Self::tls_root_certificate_pem)).
    ///
    /// For `rediss://`, [`build`](Self::build) installs rustls's `ring` crypto provider as the
    /// process default if no provider is installed yet: the `redis` crate only uses the process
    /// default. Install your own first to use another.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// The key prefix; the empty string means the default, `launchdarkly`, as in the other SDKs.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// The ACL user name, overriding any in the URL.
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// The password, overriding any in the URL; keeps it out of URLs that end up in config files.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(Secret::new(password));
        self
    }

    /// The most connections the pool opens. An upsert holds one connection for its whole
    /// WATCH/MULTI/EXEC, so this bounds concurrent writes, not correctness.
    pub fn pool_size(mut self, size: usize) -> Self {
        self.pool_size = Some(size);
        self
    }

    /// Time allowed to open a connection (TCP, TLS and the handshake); it is spent within the
    /// operation's [`request_timeout`](Self::request_timeout), not on top of it.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.network = self.network.connect_timeout(timeout);
        self
    }

    /// Time allowed for one whole operation: waiting for a free pooled connection, connecting if
    /// need be, every command and every retry. An operation that runs out fails with
    /// [`Error::Timeout`](flagstore::Error::Timeout) naming the time it waited.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.network = self.network.request_timeout(timeout);
        self
    }

    /// Trusts this CA certificate (PEM) for `rediss://` instead of the system's roots.
    pub fn tls_root_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.network = self.network.tls_root_certificate_pem(pem);
        self
    }

    /// The timeouts and TLS root certificate at once, replacing any set before; unset ones keep
    /// the defaults.
    pub fn network(mut self, options: NetworkOptions) -> Self {
        self.network = options;
        self
    }

    /// Sets one option from its text form, as a store URL's query gives it:
    ///
    /// ```
    /// use flagstore_redis::{RedisConfigKey, RedisStore};
    ///
    /// let store = RedisStore::builder()
    ///     .url("redis://cache:6379")
    ///     .with_config(RedisConfigKey::Prefix, "prod")?
    ///     .with_config("pool_size".parse()?, "4")?
    ///     .with_config("request_timeout".parse()?, "1s")?
    ///     .build()?;
    /// assert_eq!(store.prefix(), "prod");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_config(self, key: RedisConfigKey, value: impl AsRef<str>) -> Result<Self> {
        let value = value.as_ref();
        Ok(match key {
            RedisConfigKey::Prefix => self.prefix(value),
            RedisConfigKey::PoolSize => self.pool_size(config_count(BACKEND, key.as_str(), value)?),
            RedisConfigKey::KeyspaceEvents => match value {
                "configure" => self.configure_keyspace_events(true),
                other => {
                    return Err(Error::config(
                        BACKEND,
                        format!(
                            "keyspace_events={other:?}: the only value is \"configure\" (let the change feed turn on the keyspace notifications it needs)"
                        ),
                    ));
                }
            },
            RedisConfigKey::Feed => self.feed(value.parse()?),
            RedisConfigKey::Network(key) => Self {
                network: self.network.with_config(BACKEND, key, value)?,
                ..self
            },
        })
    }

    /// The password to set over the URL's: an explicit one always, the environment's only where
    /// the URL has none.
    fn password_over(&self, url_has_password: bool) -> Option<&Secret> {
        self.password
            .as_ref()
            .or(self.env_password.as_ref().filter(|_| !url_has_password))
    }

    /// `from_url`, the credentials a URL carries, with this builder's over them: an explicit
    /// username, and the password [`password_over`](Self::password_over) picks.
    fn credentials_over(&self, from_url: Credentials) -> Credentials {
        let password = self
            .password_over(from_url.password.is_some())
            .map(|p| p.expose().to_owned());
        Credentials {
            username: self.username.clone().or(from_url.username),
            password: password.or(from_url.password),
        }
    }

    /// Uses a pool the caller configured. URL, credentials, pool size, connect timeout and TLS are
    /// then the pool's business: setting any of them here as well is refused at
    /// [`build`](Self::build) rather than silently ignored. The request timeout still bounds
    /// every operation.
    pub fn pool(mut self, pool: Pool) -> Self {
        self.pool = Some(pool);
        self
    }

    /// Which mechanism the store's [change feed](flagstore::PersistentDataStore::changes)
    /// follows: [`FeedMode::Auto`] (the default) uses Redis client tracking where the server
    /// offers it (Redis 6+, Valkey: no server setting needed, flushes seen) and keyspace
    /// notifications otherwise. Also `feed=auto|tracking|keyspace` in a store URL.
    ///
    /// ```
    /// use flagstore_redis::{FeedMode, RedisStore};
    ///
    /// let store = RedisStore::builder()
    ///     .url("redis://localhost:6379")
    ///     .feed(FeedMode::Tracking)
    ///     .build()?;
    /// # Ok::<(), flagstore::Error>(())
    /// ```
    pub fn feed(mut self, mode: FeedMode) -> Self {
        self.feed_mode = mode;
        self
    }

    /// Lets the store's [change feed](flagstore::PersistentDataStore::changes) turn on the
    /// keyspace notifications it needs when it follows them ([`FeedMode::Keyspace`], or `auto`
    /// on a server without client tracking): `CONFIG SET notify-keyspace-events`, adding `K`,
    /// `g`, `$`, `h`, `x`, `e` to what is set, on every server it listens to. Off by default: the
    /// feed then reports a missing setting as an error naming it, and retries. Where `CONFIG` is
    /// forbidden (many managed services), set it in the service's parameters instead.
    pub fn configure_keyspace_events(mut self, configure: bool) -> Self {
        self.configure_keyspace_events = configure;
        self
    }

    /// Redis Cluster: these nodes (`host:port`, or `redis://…`/`rediss://…` URLs); the client
    /// discovers the rest. Also set by a `redis+cluster://h1:p1,h2:p2` (or `rediss+cluster://`)
    /// [`url`](Self::url).
    ///
    /// The [`prefix`](Self::prefix) must then hold a hash tag, such as `{launchdarkly}`, so that
    /// all of its keys share one hash slot: `init`'s MULTI/EXEC and the WATCH of an upsert need
    /// that. [`build`](Self::build) refuses a prefix without one. Every other SDK and the Relay
    /// Proxy sharing the data must be configured with the same prefix.
    #[cfg(feature = "cluster")]
    #[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
    pub fn cluster_nodes<S: Into<String>>(mut self, nodes: impl IntoIterator<Item = S>) -> Self {
        self.cluster_nodes = Some(nodes.into_iter().map(Into::into).collect());
        self
    }

    /// Redis Sentinel: these Sentinels (`host:port`) name the primary called `master_name`; the
    /// store connects to whichever server is the primary and follows failovers without a
    /// restart. Also set by a `redis+sentinel://h1:p1,h2:p2/MASTER_NAME[/db]` [`url`](Self::url)
    /// (`rediss+sentinel://` for TLS to the primary). The username and password are the
    /// primary's.
    #[cfg(feature = "sentinel")]
    #[cfg_attr(docsrs, doc(cfg(feature = "sentinel")))]
    pub fn sentinel<S: Into<String>>(
        mut self,
        nodes: impl IntoIterator<Item = S>,
        master_name: impl Into<String>,
    ) -> Self {
        self.sentinel = Some((
            nodes.into_iter().map(Into::into).collect(),
            master_name.into(),
        ));
        self
    }

    /// Runs `hook` inside every upsert between WATCH/HGET and MULTI/EXEC, where a concurrent
    /// writer can race this one. For the conformance suite.
    #[cfg(feature = "testing")]
    pub fn before_upsert_write(mut self, hook: flagstore::testing::UpsertHook) -> Self {
        self.before_upsert_write = Some(hook);
        self
    }

    /// The store. Fails with [`Error::Config`] on a malformed URL, a scheme other than `redis`,
    /// `rediss` or `redis+unix`, a zero pool size or timeout, or a CA certificate without TLS.
    /// Does not connect: the first operation does.
    pub fn build(self) -> Result<RedisStore> {
        let timeouts = Timeouts {
            connect: self
                .network
                .get_connect_timeout()
                .unwrap_or(DEFAULT_CONNECT_TIMEOUT),
            request: self
                .network
                .get_request_timeout()
                .unwrap_or(DEFAULT_REQUEST_TIMEOUT),
        };
        if timeouts.connect.is_zero() || timeouts.request.is_zero() {
            return Err(Error::config(
                BACKEND,
                "connect_timeout and request_timeout must be positive",
            ));
        }
        if self.pool_size == Some(0) {
            return Err(Error::config(BACKEND, "pool_size must be at least 1"));
        }
        let prefix = match self.prefix.as_deref() {
            None | Some("") => DEFAULT_PREFIX.to_owned(),
            Some(prefix) => prefix.to_owned(),
        };
        let topology = match self.multi_host()? {
            Some((hosts, credentials)) => {
                self.multi_topology(&prefix, &hosts, &credentials, timeouts)?
            }
            None => self.single_topology(timeouts)?,
        };
        Ok(RedisStore::new(
            topology,
            prefix,
            self.feed_mode,
            self.configure_keyspace_events,
            #[cfg(feature = "testing")]
            self.before_upsert_write,
        ))
    }

    /// The cluster or Sentinel hosts this builder names, if any, with the credentials to use.
    fn multi_host(&self) -> Result<Option<(Hosts, Credentials)>> {
        let from_url = match self.url.as_deref() {
            Some(url) => multi::parse(url)?,
            None => None,
        };
        let given = [
            self.cluster_nodes.is_some(),
            self.sentinel.is_some(),
            self.url.is_some(),
        ];
        if given.iter().filter(|set| **set).count() > 1 {
            return Err(Error::config(
                BACKEND,
                "give one of url, cluster_nodes and sentinel (a cluster or Sentinel URL sets the nodes itself)",
            ));
        }
        let found = match (&self.cluster_nodes, &self.sentinel) {
            (Some(nodes), _) => Some((
                Hosts::Cluster {
                    tls: false,
                    nodes: nodes.clone(),
                },
                Credentials::default(),
            )),
            (None, Some((sentinels, master))) => Some((
                Hosts::Sentinel {
                    tls: false,
                    sentinels: sentinels.clone(),
                    master: master.clone(),
                    db: 0,
                },
                Credentials::default(),
            )),
            (None, None) => from_url,
        };
        Ok(found.map(|(hosts, credentials)| (hosts, self.credentials_over(credentials))))
    }

    fn multi_topology(
        &self,
        prefix: &str,
        hosts: &Hosts,
        credentials: &Credentials,
        timeouts: Timeouts,
    ) -> Result<Topology> {
        if self.pool.is_some() {
            return Err(Error::config(
                BACKEND,
                "pool() cannot be combined with a cluster or Sentinel topology",
            ));
        }
        if let Hosts::Cluster { nodes, .. } = hosts
            && nodes.is_empty()
        {
            return Err(Error::config(BACKEND, "cluster_nodes names no node"));
        }
        #[cfg(feature = "cluster")]
        if let Hosts::Cluster { .. } = hosts
            && !crate::cluster::has_hash_tag(prefix)
        {
            return Err(Error::config(
                BACKEND,
                format!(
                    "in cluster mode the prefix must hold a hash tag, such as {:?}, so that all of its keys share one hash slot (atomic init, WATCH on upsert); prefix {prefix:?} has none. Every SDK and Relay Proxy sharing the data must use the same prefix",
                    crate::cluster::tagged_prefix(prefix)
                ),
            ));
        }
        // Only a cluster has a rule for the prefix.
        let _ = prefix;
        if hosts_use_tls(hosts) {
            connect::use_process_crypto_provider();
        }
        let settings = PoolSettings {
            credentials,
            pool_size: self.pool_size.unwrap_or(DEFAULT_POOL_SIZE),
            timeouts,
            root_cert_pem: self.network.get_tls_root_certificate_pem(),
        };
        multi::topology(hosts, &settings)
    }

    /// One server: a pool, the connection reads share and the server's client (for the change
    /// feed) on `url`, or the caller's pool alone.
    fn single_topology(&self, timeouts: Timeouts) -> Result<Topology> {
        if let Some(pool) = &self.pool {
            refuse_ignored(
                BACKEND,
                "pool()",
                "the pool",
                &[
                    ("url", self.url.is_some()),
                    ("username", self.username.is_some()),
                    ("password", self.password.is_some()),
                    ("pool_size", self.pool_size.is_some()),
                    (
                        "connect_timeout",
                        self.network.get_connect_timeout().is_some(),
                    ),
                    (
                        "tls_root_certificate_pem",
                        self.network.get_tls_root_certificate_pem().is_some(),
                    ),
                ],
            )?;
            // Its client is private to the pool, and a pooled connection cannot subscribe.
            return Ok(Topology::new(
                Pools::Single(pool.clone()),
                None,
                None,
                0,
                timeouts,
                "on a caller-supplied pool".to_owned(),
            ));
        }
        let url = self.url.as_deref().unwrap_or(DEFAULT_URL);
        let shown = redact_url(url);
        let scheme = url.split("://").next().unwrap_or_default();
        if !matches!(scheme, "redis" | "rediss" | "redis+unix" | "unix") || !url.contains("://") {
            return Err(Error::config(
                BACKEND,
                format!(
                    "{shown:?} is not a Redis URL: use redis://host:port, rediss://host:port for TLS, or redis+unix:///path"
                ),
            ));
        }
        // The driver's parse errors can quote the URL, password included: say what is wrong here.
        let info = url.into_connection_info().map_err(|_| {
            Error::config(
                BACKEND,
                format!("{shown:?} is not a valid Redis URL (expected redis://[user:password@]host[:port][/db])"),
            )
        })?;
        let settings = info.redis_settings();
        let from_url = Credentials {
            username: settings.username().map(str::to_owned),
            password: settings.password().map(str::to_owned),
        };
        let mut info = self.credentials_over(from_url).apply_to(info);
        let tls = matches!(info.addr(), ConnectionAddr::TcpTls { .. });
        if tls {
            connect::use_process_crypto_provider();
        }
        if let Some(pem) = self.network.get_tls_root_certificate_pem() {
            if !tls {
                return Err(Error::config(
                    BACKEND,
                    format!(
                        "a TLS root certificate was given but {shown:?} is not a rediss:// URL"
                    ),
                ));
            }
            let roots = connect::root_certificates(pem)?;
            info = connect::client(info, Some(&roots))
                .map_err(|e| {
                    Error::config_caused_by(BACKEND, "the TLS root certificate is unusable", e)
                })?
                .get_connection_info()
                .clone();
        }
        // The driver's error is left out: it may quote the URL, password included.
        let unusable = |_| Error::config(BACKEND, format!("{shown:?} is not a usable Redis URL"));
        let client = Client::open(info.clone()).map_err(unusable)?;
        let manager =
            Manager::new_with_config(info, timeouts.connection_config()).map_err(unusable)?;
        let pool: Pool = limited_pool(
            manager,
            self.pool_size.unwrap_or(DEFAULT_POOL_SIZE),
            timeouts,
        )?;
        let db = client.get_connection_info().redis_settings().db();
        // No response timeout of its own: every read runs under the store's one budget
        // (`bounded`), and a second timer per read would only cost time.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeouts.connect))
            .set_response_timeout(None);
        let reads = SharedReads::new(Opener::Single {
            client: client.clone(),
            config,
        });
        Ok(Topology::new(
            Pools::Single(pool),
            Some(reads),
            Some(Primaries::Single(client)),
            db,
            timeouts,
            format!("at {shown}"),
        ))
    }
}

fn hosts_use_tls(hosts: &Hosts) -> bool {
    match hosts {
        Hosts::Cluster { tls, nodes } => *tls || nodes.iter().any(|n| n.starts_with("rediss://")),
        Hosts::Sentinel { tls, .. } => *tls,
    }
}

/// The password of a `redis://` URL, percent-decoded exactly (form decoding would turn a `+`
/// into a space). Read from the text, not a URL parser: `h1:1,h2:2` (a cluster's nodes) is no
/// valid host.
fn url_password(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let at = rest.rfind('@')?;
    let (_, password) = rest[..at].split_once(':')?;
    let decoded = percent_encoding::percent_decode_str(password)
        .decode_utf8()
        .ok()?;
    Some(decoded.into_owned()).filter(|p| !p.is_empty())
}

impl fmt::Debug for RedisStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStoreBuilder")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("prefix", &self.prefix)
            .field("username", &self.username)
            .field("password", &self.password)
            .field("pool_size", &self.pool_size)
            .field("env_password", &self.env_password)
            .field("network", &self.network)
            .field("pool", &self.pool.as_ref().map(|_| "<caller's pool>"))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(url: &str) -> Result<RedisStore> {
        RedisStore::builder().url(url).build()
    }

    #[test]
    fn accepts_every_url_form_redis_users_write() {
        let ok = [
            ("redis://localhost", "at redis://localhost"),
            ("redis://127.0.0.1:6380/2", "at redis://127.0.0.1:6380/2"),
            ("redis://user:pw@h:1/0", "at redis://user:***@h:1/0"),
            ("redis://:pw@h", "at redis://:***@h"),
            (
                "rediss://cache.example.com:6380",
                "at rediss://cache.example.com:6380",
            ),
            ("rediss://h:6380/#insecure", "at rediss://h:6380/#insecure"),
            (
                "redis+unix:///run/redis.sock",
                "at redis+unix:///run/redis.sock",
            ),
        ];
        for (url, shown) in ok {
            let store = build(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(
                store.to_string(),
                format!(r#"redis store {shown} (prefix "launchdarkly")"#)
            );
        }
    }

    #[test]
    fn rejects_bad_urls_without_echoing_the_password() {
        let cases = [
            (
                "http://u:topsecret@h",
                r#"redis: invalid configuration: "http://u:***@h" is not a Redis URL: use redis://host:port, rediss://host:port for TLS, or redis+unix:///path"#,
            ),
            (
                "localhost:6379",
                r#"redis: invalid configuration: "localhost:6379" is not a Redis URL: use redis://host:port, rediss://host:port for TLS, or redis+unix:///path"#,
            ),
            (
                "redis://u:topsecret@h:notaport",
                r#"redis: invalid configuration: "redis://u:***@h:notaport" is not a valid Redis URL (expected redis://[user:password@]host[:port][/db])"#,
            ),
            (
                "redis://h/notadb",
                r#"redis: invalid configuration: "redis://h/notadb" is not a valid Redis URL (expected redis://[user:password@]host[:port][/db])"#,
            ),
        ];
        for (url, message) in cases {
            let err = build(url).unwrap_err();
            assert!(matches!(err, Error::Config { .. }), "{url}");
            assert_eq!(err.to_string(), message);
            assert!(!format!("{err:?}").contains("topsecret"));
        }
    }

    #[test]
    fn validates_sizes_timeouts_and_tls_settings() {
        let err = RedisStore::builder().pool_size(0).build().unwrap_err();
        assert_eq!(
            err.to_string(),
            "redis: invalid configuration: pool_size must be at least 1"
        );
        let err = RedisStore::builder()
            .request_timeout(Duration::ZERO)
            .build()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "redis: invalid configuration: connect_timeout and request_timeout must be positive"
        );
        let err = RedisStore::builder()
            .url("redis://h")
            .tls_root_certificate_pem("-----BEGIN CERTIFICATE-----")
            .build()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"redis: invalid configuration: a TLS root certificate was given but "redis://h" is not a rediss:// URL"#
        );
        let err = RedisStore::builder()
            .url("rediss://h")
            .tls_root_certificate_pem("not a certificate")
            .build()
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("redis: invalid configuration: the TLS root certificate is unusable"),
            "{err}"
        );
    }

    #[test]
    fn settings_a_caller_supplied_pool_would_ignore_are_refused() {
        let pool = || {
            deadpool_redis::Config::from_url("redis://127.0.0.1:1")
                .create_pool(Some(deadpool_redis::Runtime::Tokio1))
                .unwrap()
        };
        let err = RedisStore::builder()
            .pool(pool())
            .url("redis://other:6379")
            .pool_size(4)
            .password("pw")
            .build()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "redis: invalid configuration: url, password, pool_size cannot be combined with pool(): configure the pool instead"
        );
        let store = RedisStore::builder()
            .pool(pool())
            .prefix("p")
            .request_timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        assert_eq!(
            store.to_string(),
            r#"redis store on a caller-supplied pool (prefix "p")"#
        );
    }

    #[test]
    fn defaults_and_prefixes() {
        let store = RedisStore::builder().build().unwrap();
        assert_eq!(
            store.to_string(),
            r#"redis store at redis://localhost:6379 (prefix "launchdarkly")"#
        );
        assert_eq!(
            store.hash_key(&flagstore::Kind::FEATURES),
            "launchdarkly:features"
        );
        assert_eq!(store.inited_key(), "launchdarkly:$inited");
        let store = RedisStore::builder().prefix("").build().unwrap();
        assert_eq!(store.prefix(), "launchdarkly");
        let store = RedisStore::builder().prefix("env-1").build().unwrap();
        assert_eq!(
            store.hash_key(&flagstore::Kind::new("widgets")),
            "env-1:widgets"
        );
    }

    #[test]
    fn secrets_never_show_in_debug_or_display() {
        let builder = RedisStore::builder()
            .url("redis://app:url-secret@h:6379")
            .username("app")
            .password("builder-secret");
        let shown = format!("{builder:?}");
        assert!(
            !shown.contains("url-secret") && !shown.contains("builder-secret"),
            "{shown}"
        );
        let store = builder.build().unwrap();
        let shown = format!("{store:?} {store}");
        assert!(
            !shown.contains("url-secret") && !shown.contains("builder-secret"),
            "{shown}"
        );
    }

    #[test]
    fn the_environment_password_is_decoded_exactly_and_never_beats_the_url() {
        let env = |name: &str| match name {
            "REDIS_URL" => Some("redis://:a+b%40c%2Fd@elsewhere:6379".to_owned()),
            _ => None,
        };
        let builder = RedisStoreBuilder::from_vars(env).url("redis://cache:6379");
        assert_eq!(
            builder.password_over(false).map(Secret::expose),
            Some("a+b@c/d")
        );
        assert_eq!(
            builder.password_over(true),
            None,
            "the URL's own password wins"
        );
        let with_env = |name: &str| match name {
            "REDIS_PASSWORD" => Some("direct".to_owned()),
            other => env(other),
        };
        let builder = RedisStoreBuilder::from_vars(with_env);
        assert_eq!(
            builder.password_over(false).map(Secret::expose),
            Some("direct")
        );
        let builder = builder.password("explicit");
        assert_eq!(
            builder.password_over(true).map(Secret::expose),
            Some("explicit")
        );
        assert_eq!(
            url_password("redis+cluster://:own@h1:1,h2:2").as_deref(),
            Some("own")
        );
        assert_eq!(url_password("redis+cluster://h1:1,h2:2"), None);
        assert_eq!(url_password("redis://cache"), None);
    }

    #[test]
    fn from_env_reads_the_documented_variables() {
        let env = |name: &str| match name {
            "REDIS_URL" => Some("redis://cache:6390/1".to_owned()),
            "REDIS_USERNAME" => Some("app".to_owned()),
            "REDIS_PASSWORD" => Some("env-secret".to_owned()),
            _ => None,
        };
        let builder = RedisStoreBuilder::from_vars(env);
        assert_eq!(builder.url.as_deref(), Some("redis://cache:6390/1"));
        assert_eq!(builder.username.as_deref(), Some("app"));
        assert_eq!(
            builder.env_password.as_ref().map(Secret::expose),
            Some("env-secret")
        );
        let unset = RedisStoreBuilder::from_vars(|_| None);
        assert_eq!(unset.url, None);
        assert!(unset.build().is_ok());
    }
}

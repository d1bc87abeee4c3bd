//! What every networked backend's builder shares: timeouts and a TLS root certificate, the text
//! form of settings (`2s`, `500ms`), and how a store states the largest item it accepts.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use crate::{Error, Item, Kind, Result};

/// The network settings the Redis, DynamoDB and Consul builders share. Each builder embeds one
/// and fills what is left unset with its own defaults at `build()`.
///
/// ```
/// use std::time::Duration;
/// use flagstore::backend::{NetworkConfigKey, NetworkOptions};
///
/// let options = NetworkOptions::new()
///     .connect_timeout(Duration::from_millis(500))
///     .with_config("redis", "request_timeout".parse()?, "2s")?;
/// assert_eq!(options.get_connect_timeout(), Some(Duration::from_millis(500)));
/// assert_eq!(options.get_request_timeout(), Some(Duration::from_secs(2)));
///
/// let err = options.with_config("redis", NetworkConfigKey::RequestTimeout, "soon").unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     r#"redis: invalid configuration: request_timeout="soon" is not a duration like 500ms, 2s or 1m"#
/// );
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
#[must_use = "options do nothing until a builder takes them"]
pub struct NetworkOptions {
    connect_timeout: Option<Duration>,
    request_timeout: Option<Duration>,
    tls_root_certificate_pem: Option<Vec<u8>>,
}

impl NetworkOptions {
    /// No setting given: every backend's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Time allowed to open a connection (TCP, TLS and any handshake).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Time allowed for one request's answer.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = Some(timeout);
        self
    }

    /// A PEM root certificate (or several) to verify the server's TLS certificate against,
    /// instead of the system's roots.
    pub fn tls_root_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.tls_root_certificate_pem = Some(pem.into());
        self
    }

    /// The connect timeout, if one was given.
    pub fn get_connect_timeout(&self) -> Option<Duration> {
        self.connect_timeout
    }

    /// The request timeout, if one was given.
    pub fn get_request_timeout(&self) -> Option<Duration> {
        self.request_timeout
    }

    /// The PEM root certificate, if one was given.
    pub fn get_tls_root_certificate_pem(&self) -> Option<&[u8]> {
        self.tls_root_certificate_pem.as_deref()
    }

    /// Sets `key` from its text form; an error names `backend` and the setting.
    pub fn with_config(
        self,
        backend: &'static str,
        key: NetworkConfigKey,
        value: &str,
    ) -> Result<Self> {
        Ok(match key {
            NetworkConfigKey::ConnectTimeout => {
                self.connect_timeout(config_duration(backend, key.as_str(), value)?)
            }
            NetworkConfigKey::RequestTimeout => {
                self.request_timeout(config_duration(backend, key.as_str(), value)?)
            }
        })
    }
}

impl fmt::Debug for NetworkOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NetworkOptions")
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field(
                "tls_root_certificate_pem",
                &self.tls_root_certificate_pem.as_ref().map(Vec::len),
            )
            .finish()
    }
}

/// The [`NetworkOptions`] a text setting can name: `connect_timeout`, `request_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NetworkConfigKey {
    /// `connect_timeout`, a duration.
    ConnectTimeout,
    /// `request_timeout`, a duration.
    RequestTimeout,
}

impl NetworkConfigKey {
    /// Both keys.
    pub const ALL: &'static [NetworkConfigKey] = &[
        NetworkConfigKey::ConnectTimeout,
        NetworkConfigKey::RequestTimeout,
    ];

    /// The key's text form.
    pub fn as_str(self) -> &'static str {
        match self {
            NetworkConfigKey::ConnectTimeout => "connect_timeout",
            NetworkConfigKey::RequestTimeout => "request_timeout",
        }
    }
}

impl ConfigKey for NetworkConfigKey {
    const ALL: &'static [Self] = NetworkConfigKey::ALL;

    fn as_str(self) -> &'static str {
        NetworkConfigKey::as_str(self)
    }
}

impl FromStr for NetworkConfigKey {
    type Err = UnknownKey;

    fn from_str(name: &str) -> std::result::Result<Self, UnknownKey> {
        find_key(name)
    }
}

/// A backend's typed configuration keys (`RedisConfigKey`, `ConsulConfigKey`, …): every key, and
/// each one's text form, the name a store URL's query uses.
pub trait ConfigKey: Copy + 'static {
    /// Every key, in the order the docs list them.
    const ALL: &'static [Self];

    /// The key's text form.
    fn as_str(self) -> &'static str;
}

/// The key of type `K` whose text form is `name`: the body of every config key's `FromStr`.
pub fn find_key<K: ConfigKey>(name: &str) -> std::result::Result<K, UnknownKey> {
    K::ALL
        .iter()
        .copied()
        .find(|key| key.as_str() == name)
        .ok_or_else(|| UnknownKey::new(name))
}

/// A configuration key no backend setting has; the error of every config key's `FromStr`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown option {name:?}")]
pub struct UnknownKey {
    name: String,
}

impl UnknownKey {
    /// The key `name` is unknown.
    pub fn new(name: impl Into<String>) -> Self {
        UnknownKey { name: name.into() }
    }

    /// The name that was given.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// `500ms`, `2s`, `1m`: a whole number and a unit, the form durations take in store URLs and
/// every backend's `with_config`.
///
/// ```
/// use std::time::Duration;
/// use flagstore::backend::parse_duration;
///
/// assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
/// assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
/// assert_eq!(parse_duration("2"), None);
/// ```
pub fn parse_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(number)),
        "s" => Some(Duration::from_secs(number)),
        "m" => number.checked_mul(60).map(Duration::from_secs),
        _ => None,
    }
}

/// `value` as a duration for the setting `name`, or the configuration error saying so.
pub fn config_duration(backend: &'static str, name: &str, value: &str) -> Result<Duration> {
    parse_duration(value).ok_or_else(|| {
        Error::config(
            backend,
            format!("{name}={value:?} is not a duration like 500ms, 2s or 1m"),
        )
    })
}

/// `value` as a whole number for the setting `name`, or the configuration error saying so.
pub fn config_count(backend: &'static str, name: &str, value: &str) -> Result<usize> {
    value
        .parse()
        .map_err(|_| Error::config(backend, format!("{name}={value:?} is not a whole number")))
}

/// How one backend counts an item's size.
type SizeOf = dyn Fn(&Kind, &Item) -> usize + Send + Sync;

/// The largest item a store accepts, and how it counts an item's bytes against that limit; see
/// [`PersistentDataStore::item_limit`](crate::PersistentDataStore::item_limit).
#[derive(Clone)]
pub struct ItemLimit {
    backend: &'static str,
    bytes: usize,
    size_of: Option<Arc<SizeOf>>,
}

impl ItemLimit {
    /// A limit of `bytes` on the item's JSON; `backend` names the database in messages
    /// (`Consul`).
    pub fn new(backend: &'static str, bytes: usize) -> Self {
        ItemLimit {
            backend,
            bytes,
            size_of: None,
        }
    }

    /// The same limit, counting each item with `size_of` (DynamoDB counts attribute names and
    /// the namespace too).
    #[must_use = "with_size_of returns a new limit"]
    pub fn with_size_of(
        mut self,
        size_of: impl Fn(&Kind, &Item) -> usize + Send + Sync + 'static,
    ) -> Self {
        self.size_of = Some(Arc::new(size_of));
        self
    }

    /// The database's name for messages: `DynamoDB` or `Consul`.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The limit in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// `item`'s size as the database counts it against [`bytes`](Self::bytes).
    pub fn size_of(&self, kind: &Kind, item: &Item) -> usize {
        match &self.size_of {
            Some(size_of) => size_of(kind, item),
            None => item.len(),
        }
    }
}

impl fmt::Debug for ItemLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ItemLimit")
            .field("backend", &self.backend)
            .field("bytes", &self.bytes)
            .finish_non_exhaustive()
    }
}

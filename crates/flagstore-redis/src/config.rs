//! The options a Redis store takes by name, as a store URL's query gives them.

use std::str::FromStr;

use flagstore::backend::{ConfigKey, NetworkConfigKey, UnknownKey, find_key};

/// A [`RedisStoreBuilder`](crate::RedisStoreBuilder) option by name, for
/// [`with_config`](crate::RedisStoreBuilder::with_config): `prefix`, `pool_size`,
/// `connect_timeout`, `request_timeout`, `feed`, `keyspace_events`. Credentials are not among them: they
/// come from the URL, the environment ([`from_env`](crate::RedisStoreBuilder::from_env)) or the
/// builder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RedisConfigKey {
    /// `prefix`: the [key prefix](crate::RedisStoreBuilder::prefix).
    Prefix,
    /// `pool_size`: the [most pooled connections](crate::RedisStoreBuilder::pool_size).
    PoolSize,
    /// `connect_timeout`, `request_timeout`.
    Network(NetworkConfigKey),
    /// `feed`: `auto`, `tracking` or `keyspace`, the [change feed's
    /// mechanism](crate::RedisStoreBuilder::feed).
    Feed,
    /// `keyspace_events`, whose one value `configure` lets the change feed
    /// [turn on the notifications it needs](crate::RedisStoreBuilder::configure_keyspace_events).
    KeyspaceEvents,
}

impl ConfigKey for RedisConfigKey {
    const ALL: &'static [Self] = &[
        RedisConfigKey::Prefix,
        RedisConfigKey::PoolSize,
        RedisConfigKey::Network(NetworkConfigKey::ConnectTimeout),
        RedisConfigKey::Network(NetworkConfigKey::RequestTimeout),
        RedisConfigKey::Feed,
        RedisConfigKey::KeyspaceEvents,
    ];

    fn as_str(self) -> &'static str {
        match self {
            RedisConfigKey::Prefix => "prefix",
            RedisConfigKey::PoolSize => "pool_size",
            RedisConfigKey::Network(key) => key.as_str(),
            RedisConfigKey::Feed => "feed",
            RedisConfigKey::KeyspaceEvents => "keyspace_events",
        }
    }
}

impl FromStr for RedisConfigKey {
    type Err = UnknownKey;

    fn from_str(name: &str) -> Result<Self, UnknownKey> {
        find_key(name)
    }
}

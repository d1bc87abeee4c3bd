//! The options a Consul store takes by name, as a store URL's query gives them.

use std::str::FromStr;

use flagstore::backend::{ConfigKey, NetworkConfigKey, UnknownKey, find_key};

/// A [`ConsulStoreBuilder`](crate::ConsulStoreBuilder) option by name, for
/// [`with_config`](crate::ConsulStoreBuilder::with_config): `dc`, `prefix`, `connect_timeout`,
/// `request_timeout`. Secrets (the ACL token) are not among them: they come from the
/// environment ([`from_env`](crate::ConsulStoreBuilder::from_env)) or the builder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConsulConfigKey {
    /// `dc`: the [datacenter](crate::ConsulStoreBuilder::datacenter).
    Datacenter,
    /// `prefix`: the [key prefix](crate::ConsulStoreBuilder::prefix).
    Prefix,
    /// `connect_timeout`, `request_timeout`.
    Network(NetworkConfigKey),
}

impl ConfigKey for ConsulConfigKey {
    const ALL: &'static [Self] = &[
        ConsulConfigKey::Datacenter,
        ConsulConfigKey::Prefix,
        ConsulConfigKey::Network(NetworkConfigKey::ConnectTimeout),
        ConsulConfigKey::Network(NetworkConfigKey::RequestTimeout),
    ];

    fn as_str(self) -> &'static str {
        match self {
            ConsulConfigKey::Datacenter => "dc",
            ConsulConfigKey::Prefix => "prefix",
            ConsulConfigKey::Network(key) => key.as_str(),
        }
    }
}

impl FromStr for ConsulConfigKey {
    type Err = UnknownKey;

    fn from_str(name: &str) -> Result<Self, UnknownKey> {
        find_key(name)
    }
}

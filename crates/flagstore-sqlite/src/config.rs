//! The options an SQLite store takes by name, as a store URL's query gives them.

use std::str::FromStr;

use flagstore::backend::{ConfigKey, UnknownKey, find_key};

/// A [`SqliteStoreBuilder`](crate::SqliteStoreBuilder) option by name, for
/// [`with_config`](crate::SqliteStoreBuilder::with_config): `prefix`, `busy_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SqliteConfigKey {
    /// `prefix`: the [key prefix](crate::SqliteStoreBuilder::prefix).
    Prefix,
    /// `busy_timeout`: how long to [wait for a lock](crate::SqliteStoreBuilder::busy_timeout).
    BusyTimeout,
}

impl ConfigKey for SqliteConfigKey {
    const ALL: &'static [Self] = &[SqliteConfigKey::Prefix, SqliteConfigKey::BusyTimeout];

    fn as_str(self) -> &'static str {
        match self {
            SqliteConfigKey::Prefix => "prefix",
            SqliteConfigKey::BusyTimeout => "busy_timeout",
        }
    }
}

impl FromStr for SqliteConfigKey {
    type Err = UnknownKey;

    fn from_str(name: &str) -> Result<Self, UnknownKey> {
        find_key(name)
    }
}

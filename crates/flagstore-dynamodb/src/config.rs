//! The options a DynamoDB store takes by name, as a store URL's query gives them.

use std::str::FromStr;

use flagstore::backend::{ConfigKey, NetworkConfigKey, UnknownKey, find_key};

/// A [`DynamoDbStoreBuilder`](crate::DynamoDbStoreBuilder) option by name, for
/// [`with_config`](crate::DynamoDbStoreBuilder::with_config): `endpoint`, `region`, `prefix`,
/// `connect_timeout`, `request_timeout`. Credentials are not among them: they come from the AWS
/// SDK's default chain or the builder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DynamoDbConfigKey {
    /// `endpoint`: the [endpoint URL](crate::DynamoDbStoreBuilder::url).
    Endpoint,
    /// `region`: the [AWS region](crate::DynamoDbStoreBuilder::region).
    Region,
    /// `prefix`: the [key prefix](crate::DynamoDbStoreBuilder::prefix).
    Prefix,
    /// `connect_timeout`, `request_timeout`.
    Network(NetworkConfigKey),
}

impl ConfigKey for DynamoDbConfigKey {
    const ALL: &'static [Self] = &[
        DynamoDbConfigKey::Endpoint,
        DynamoDbConfigKey::Region,
        DynamoDbConfigKey::Prefix,
        DynamoDbConfigKey::Network(NetworkConfigKey::ConnectTimeout),
        DynamoDbConfigKey::Network(NetworkConfigKey::RequestTimeout),
    ];

    fn as_str(self) -> &'static str {
        match self {
            DynamoDbConfigKey::Endpoint => "endpoint",
            DynamoDbConfigKey::Region => "region",
            DynamoDbConfigKey::Prefix => "prefix",
            DynamoDbConfigKey::Network(key) => key.as_str(),
        }
    }
}

impl FromStr for DynamoDbConfigKey {
    type Err = UnknownKey;

    fn from_str(name: &str) -> Result<Self, UnknownKey> {
        find_key(name)
    }
}

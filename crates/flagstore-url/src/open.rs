//! Opening the store a URL names.

use flagstore::{DynStore, Error, Item, Kind, Result};

use crate::parse::StoreUrl;
#[cfg(any(
    feature = "redis",
    feature = "dynamodb",
    feature = "consul",
    feature = "sqlite"
))]
use crate::parse::Target;

/// The largest item a backend accepts, and how it counts an item's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemLimit {
    backend: &'static str,
    bytes: usize,
    /// DynamoDB counts attribute names and the namespace too.
    dynamodb_prefix: Option<String>,
}

impl ItemLimit {
    /// The backend's name for messages: `DynamoDB` or `Consul`.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The limit in bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// `item`'s size as the backend counts it against [`bytes`](Self::bytes).
    pub fn size_of(&self, kind: &Kind, item: &Item) -> usize {
        match &self.dynamodb_prefix {
            #[cfg(feature = "dynamodb")]
            Some(prefix) => flagstore_dynamodb::estimated_size(
                &flagstore_dynamodb::namespace(prefix, kind),
                item,
            ),
            _ => {
                let _ = kind;
                item.len()
            }
        }
    }
}

/// The error for a URL whose backend this build leaves out.
#[allow(dead_code, reason = "unused when every backend feature is on")]
fn not_compiled(backend: &'static str) -> Error {
    Error::config(
        backend,
        format!(
            "this build has no {backend} support: enable the `{backend}` feature of flagstore-url"
        ),
    )
}

impl StoreUrl {
    /// Opens the store, creating it where that means anything (an SQLite file), without
    /// connecting: the first operation connects.
    ///
    /// Secrets come from the environment, never from the URL's query:
    ///
    /// | backend | from the environment |
    /// |---|---|
    /// | Redis | the password, when the URL has none: `REDIS_PASSWORD`, else the password of `REDIS_URL` |
    /// | DynamoDB | region and credentials through the AWS SDK's default chain (`AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE`, …); for a local emulator any key pair will do |
    /// | Consul | `CONSUL_HTTP_TOKEN` (the ACL token), `CONSUL_CACERT` (a CA for `consul+https://`) |
    /// | SQLite | — |
    pub fn open(&self) -> Result<DynStore> {
        self.open_with(true)
    }

    /// Like [`open`](Self::open), but a store that does not exist yet is not created: opening a
    /// missing SQLite file fails. For tools that only read.
    pub fn open_existing(&self) -> Result<DynStore> {
        self.open_with(false)
    }

    fn open_with(&self, create: bool) -> Result<DynStore> {
        let (prefix, timeouts) = (self.prefix.as_deref(), self.timeouts);
        // Every backend arm uses both; a build with no backend has no arm that does.
        let _ = (prefix, timeouts);
        match &self.target {
            #[cfg(feature = "redis")]
            Target::Redis { .. } => Ok(std::sync::Arc::new(self.redis()?)),
            #[cfg(feature = "dynamodb")]
            Target::DynamoDb { .. } => Ok(std::sync::Arc::new(self.dynamodb()?)),
            #[cfg(feature = "consul")]
            Target::Consul { url, datacenter } => {
                let mut builder = flagstore_consul::ConsulStoreBuilder::from_env().url(url);
                if let Some(dc) = datacenter {
                    builder = builder.datacenter(dc);
                }
                if let Some(prefix) = prefix {
                    builder = builder.prefix(prefix);
                }
                if let Some(timeout) = timeouts.connect {
                    builder = builder.connect_timeout(timeout);
                }
                if let Some(timeout) = timeouts.request {
                    builder = builder.request_timeout(timeout);
                }
                Ok(std::sync::Arc::new(builder.build()?))
            }
            #[cfg(feature = "sqlite")]
            Target::Sqlite { path, busy_timeout } => {
                if !create && !path.exists() {
                    return Err(Error::config(
                        "sqlite",
                        format!(
                            "the store {} does not exist (load data into it first)",
                            path.display()
                        ),
                    ));
                }
                let mut builder =
                    flagstore_sqlite::SqliteStore::builder(path).create_if_missing(create);
                if let Some(prefix) = prefix {
                    builder = builder.prefix(prefix);
                }
                if let Some(timeout) = busy_timeout {
                    builder = builder.busy_timeout(*timeout);
                }
                Ok(std::sync::Arc::new(builder.build()?))
            }
            #[allow(
                unreachable_patterns,
                reason = "reachable when a backend feature is off"
            )]
            _ => {
                let _ = create;
                Err(not_compiled(self.backend()))
            }
        }
    }

    /// The largest item the backend accepts, for backends whose limit a flag can reach
    /// (DynamoDB's 400 KB, Consul's 512 KiB); `None` for Redis and SQLite.
    pub fn item_limit(&self) -> Option<ItemLimit> {
        match &self.target {
            #[cfg(feature = "dynamodb")]
            Target::DynamoDb { .. } => Some(ItemLimit {
                backend: "DynamoDB",
                bytes: flagstore_dynamodb::MAX_ITEM_SIZE,
                dynamodb_prefix: Some(self.prefix.clone().unwrap_or_default()),
            }),
            #[cfg(feature = "consul")]
            Target::Consul { .. } => Some(ItemLimit {
                backend: "Consul",
                bytes: flagstore_consul::MAX_VALUE_SIZE,
                dynamodb_prefix: None,
            }),
            _ => None,
        }
    }

    /// Creates the DynamoDB table this URL names if it does not exist yet (partition key
    /// `namespace`, sort key `key`); other backends need nothing created.
    pub async fn create_table(&self) -> Result<()> {
        match &self.target {
            #[cfg(feature = "dynamodb")]
            Target::DynamoDb { table, .. } => {
                let store = self.dynamodb()?;
                flagstore_dynamodb::create_table(store.client().await, table).await
            }
            _ => Ok(()),
        }
    }

    /// Opens the Big Segments data under the same prefix: Redis and DynamoDB hold it, as the
    /// LaunchDarkly SDKs read it; the other backends have none, which is an error saying so.
    pub fn open_big_segments(&self) -> Result<flagstore::big_segments::DynBigSegmentStore> {
        match &self.target {
            #[cfg(feature = "redis")]
            Target::Redis { .. } => Ok(std::sync::Arc::new(self.redis()?)),
            #[cfg(feature = "dynamodb")]
            Target::DynamoDb { .. } => Ok(std::sync::Arc::new(self.dynamodb()?)),
            _ => Err(Error::config(
                self.backend(),
                "Big Segments live in Redis or DynamoDB, where the LaunchDarkly SDKs read them; this backend has none",
            )),
        }
    }

    #[cfg(feature = "redis")]
    fn redis(&self) -> Result<flagstore_redis::RedisStore> {
        let Target::Redis {
            url,
            pool_size,
            configure_keyspace_events,
        } = &self.target
        else {
            return Err(Error::config("redis", "not a redis:// URL"));
        };
        let mut builder = flagstore_redis::RedisStore::builder()
            .url(url)
            .configure_keyspace_events(*configure_keyspace_events);
        if let Some(password) = password_from_env(url) {
            builder = builder.password(password);
        }
        if let Some(size) = pool_size {
            builder = builder.pool_size(*size);
        }
        if let Some(prefix) = &self.prefix {
            builder = builder.prefix(prefix);
        }
        if let Some(timeout) = self.timeouts.connect {
            builder = builder.connect_timeout(timeout);
        }
        if let Some(timeout) = self.timeouts.request {
            builder = builder.request_timeout(timeout);
        }
        builder.build()
    }

    #[cfg(feature = "dynamodb")]
    fn dynamodb(&self) -> Result<flagstore_dynamodb::DynamoDbStore> {
        let Target::DynamoDb {
            table,
            endpoint,
            region,
        } = &self.target
        else {
            return Err(Error::config("dynamodb", "not a dynamodb:// URL"));
        };
        let mut builder = flagstore_dynamodb::DynamoDbStore::builder(table);
        if let Some(endpoint) = endpoint {
            builder = builder.url(endpoint);
        }
        if let Some(region) = region {
            builder = builder.region(region);
        }
        if let Some(prefix) = &self.prefix {
            builder = builder.prefix(prefix);
        }
        if let Some(timeout) = self.timeouts.connect {
            builder = builder.connect_timeout(timeout);
        }
        if let Some(timeout) = self.timeouts.request {
            builder = builder.request_timeout(timeout);
        }
        builder.build()
    }
}

/// The Redis password from the environment, for a URL that carries none: `REDIS_PASSWORD`, else
/// the password of `REDIS_URL`.
#[cfg(feature = "redis")]
fn password_from_env(url: &str) -> Option<String> {
    password_from(
        url,
        std::env::var("REDIS_PASSWORD").ok().as_deref(),
        std::env::var("REDIS_URL").ok().as_deref(),
    )
}

/// URLs percent-encode passwords; this is plain percent-decoding (form decoding would turn a `+`
/// into a space).
#[cfg(feature = "redis")]
fn password_from(url: &str, password: Option<&str>, env_url: Option<&str>) -> Option<String> {
    // Read from the text, not a URL parser: `h1:1,h2:2` (a cluster's nodes) is no valid host.
    let has_password = url.split_once("://").is_some_and(|(_, rest)| {
        rest.rfind('@')
            .and_then(|at| rest[..at].split_once(':'))
            .is_some_and(|(_, password)| !password.is_empty())
    });
    if has_password {
        return None;
    }
    if let Some(password) = password.filter(|p| !p.is_empty()) {
        return Some(password.to_owned());
    }
    let env = url::Url::parse(env_url?).ok()?;
    let decoded = percent_encoding::percent_decode_str(env.password()?)
        .decode_utf8()
        .ok()?;
    Some(decoded.into_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[cfg(feature = "redis")]
    #[test]
    fn the_redis_password_comes_from_the_environment_decoded_exactly() {
        let env = Some("redis://:a+b%40c%2Fd@elsewhere:6379");
        assert_eq!(
            password_from("redis://cache:6379", None, env).as_deref(),
            Some("a+b@c/d")
        );
        assert_eq!(
            password_from("redis://cache:6379", Some("direct"), env).as_deref(),
            Some("direct")
        );
        assert_eq!(
            password_from("redis://u:own@cache", Some("direct"), env),
            None,
            "the URL's own password wins"
        );
        assert_eq!(password_from("redis://cache", None, None), None);
        assert_eq!(
            password_from("redis+cluster://:own@h1:1,h2:2", Some("direct"), env),
            None,
            "a cluster URL's own password wins too"
        );
        assert_eq!(
            password_from("redis+cluster://h1:1,h2:2", Some("direct"), env).as_deref(),
            Some("direct")
        );
    }

    #[cfg(all(feature = "redis", feature = "dynamodb", feature = "consul"))]
    #[test]
    fn item_limits_count_as_the_backend_does() {
        let item = Item::from_json("k", r#"{"version":12}"#).unwrap();
        let dynamo = StoreUrl::parse("dynamodb://t")
            .unwrap()
            .item_limit()
            .unwrap();
        assert_eq!((dynamo.backend(), dynamo.bytes()), ("DynamoDB", 409_600));
        assert_eq!(dynamo.size_of(&Kind::FEATURES, &item), 148);
        let prefixed = StoreUrl::parse("dynamodb://t?prefix=p")
            .unwrap()
            .item_limit()
            .unwrap();
        assert_eq!(prefixed.size_of(&Kind::FEATURES, &item), 150);
        let consul = StoreUrl::parse("consul://h").unwrap().item_limit().unwrap();
        assert_eq!(consul.size_of(&Kind::FEATURES, &item), item.len());
        assert_eq!(StoreUrl::parse("redis://h").unwrap().item_limit(), None);
    }

    #[cfg(feature = "redis")]
    #[test]
    fn passwords_with_url_characters_and_typos_never_show() {
        // Unencoded '/', '?' and '#' in passwords (common in generated ones), and typos.
        let cases = [
            (
                "redis://:s3cret?PW@h",
                r#""redis://:***@h" is not a valid Redis URL"#,
            ),
            ("redis://:s3cret#PW@h", r#""redis://:***@h""#),
            ("redis:/:s3cret@h", r#""redis:/:***@h" is not a Redis URL"#),
            ("redis:s3cret@h", r#""redis:***@h" is not a Redis URL"#),
        ];
        for (raw, want) in cases {
            let err = StoreUrl::parse(raw)
                .and_then(|url| url.open())
                .map(drop)
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{raw}: {err}");
            assert!(
                !err.contains("s3cret") && !err.contains("PW"),
                "{raw}: {err}"
            );
        }
    }

    #[cfg(not(feature = "redis"))]
    #[test]
    fn a_backend_left_out_of_the_build_is_named() {
        let err = StoreUrl::parse("redis://h")
            .unwrap()
            .open()
            .map(drop)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "redis: invalid configuration: this build has no redis support: enable the `redis` feature of flagstore-url"
        );
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn read_only_never_creates() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("flags.db");
        let url = StoreUrl::parse(&format!("sqlite:{}", file.display())).unwrap();
        let err = url.open_existing().map(drop).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        assert!(!file.exists());
        url.open().unwrap();
    }

    #[cfg(all(feature = "redis", feature = "dynamodb", feature = "consul"))]
    #[test]
    fn opening_never_connects() {
        for raw in [
            "redis://127.0.0.1:1",
            "dynamodb://flags?endpoint=http://127.0.0.1:1&region=us-east-1",
            "consul://127.0.0.1:1",
        ] {
            StoreUrl::parse(raw).unwrap().open().unwrap();
        }
    }

    #[cfg(feature = "dynamodb")]
    #[test]
    fn dynamodb_errors_never_show_credentials_in_an_endpoint() {
        for (raw, expected) in [
            (
                "dynamodb://t?endpoint=u:PW@host",
                r#"table name "t" is invalid"#,
            ),
            (
                "dynamodb://bad table?endpoint=http://u:PW@127.0.0.1:1",
                r#"table name "bad table" is invalid"#,
            ),
            ("dynamodb://flags?endpoint=u:PW@host", "is not an http"),
        ] {
            let err = StoreUrl::parse(raw)
                .and_then(|url| url.open())
                .map(drop)
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{raw}: {err}");
            assert!(!err.contains("PW"), "{raw}: {err}");
        }
    }
}

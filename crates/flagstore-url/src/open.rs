//! Opening the store a URL names: the backend's own builder, from its environment, with the
//! URL's location and options.

use flagstore::{DynStore, Error, Result};

use crate::parse::StoreUrl;
#[cfg(any(
    feature = "redis",
    feature = "dynamodb",
    feature = "consul",
    feature = "sqlite"
))]
use crate::parse::Target;
#[cfg(any(
    feature = "redis",
    feature = "dynamodb",
    feature = "consul",
    feature = "sqlite"
))]
use flagstore::backend::{ConfigKey, UnknownKey};

/// What a backend's builder starts from, before the URL's location and options.
#[cfg(any(feature = "redis", feature = "dynamodb", feature = "consul"))]
#[derive(Clone, Copy)]
enum Base {
    /// The backend's `from_env()`: what opening a store uses.
    Environment,
    /// The builder's defaults: what checking the options uses.
    Defaults,
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
    /// Each backend's builder starts from its `from_env()`, then takes the URL's location and
    /// options, which win over the environment. Secrets come from the environment, never from
    /// the URL's query:
    ///
    /// | backend | from the environment |
    /// |---|---|
    /// | Redis | the password, when the URL has none: `REDIS_PASSWORD`, else the password of `REDIS_URL`; `REDIS_USERNAME` |
    /// | DynamoDB | region and credentials through the AWS SDK's default chain (`AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_PROFILE`, …); for a local emulator any key pair will do; `DYNAMODB_PREFIX` and `DYNAMODB_URL` where the URL gives no `prefix` or `endpoint` |
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
        match &self.target {
            #[cfg(feature = "redis")]
            Target::Redis { .. } => {
                Ok(std::sync::Arc::new(self.redis(Base::Environment)?.build()?))
            }
            #[cfg(feature = "dynamodb")]
            Target::DynamoDb { .. } => Ok(std::sync::Arc::new(
                self.dynamodb(Base::Environment)?.build()?,
            )),
            #[cfg(feature = "consul")]
            Target::Consul { .. } => Ok(std::sync::Arc::new(
                self.consul(Base::Environment)?.build()?,
            )),
            #[cfg(feature = "sqlite")]
            Target::Sqlite { path } => {
                if !create && !path.exists() {
                    return Err(Error::config(
                        "sqlite",
                        format!(
                            "the store {} does not exist (load data into it first)",
                            path.display()
                        ),
                    ));
                }
                let builder = self.sqlite()?.create_if_missing(create);
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

    /// Every option through the backend's builder, without building: the check `parse` makes.
    /// It starts from the builder's defaults, not its environment: whether an option is valid
    /// does not depend on the environment, and parsing reads neither variables nor files.
    pub(crate) fn check_options(&self) -> Result<()> {
        match &self.target {
            #[cfg(feature = "redis")]
            Target::Redis { .. } => self.redis(Base::Defaults).map(drop),
            #[cfg(feature = "dynamodb")]
            Target::DynamoDb { .. } => self.dynamodb(Base::Defaults).map(drop),
            #[cfg(feature = "consul")]
            Target::Consul { .. } => self.consul(Base::Defaults).map(drop),
            #[cfg(feature = "sqlite")]
            Target::Sqlite { .. } => self.sqlite().map(drop),
            // A backend left out of the build is refused when opened, naming the feature.
            #[allow(
                unreachable_patterns,
                reason = "reachable when a backend feature is off"
            )]
            _ => Ok(()),
        }
    }

    /// Creates the DynamoDB table this URL names if it does not exist yet (partition key
    /// `namespace`, sort key `key`); other backends need nothing created.
    pub async fn create_table(&self) -> Result<()> {
        match &self.target {
            #[cfg(feature = "dynamodb")]
            Target::DynamoDb { table } => {
                let store = self.dynamodb(Base::Environment)?.build()?;
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
            Target::Redis { .. } => {
                Ok(std::sync::Arc::new(self.redis(Base::Environment)?.build()?))
            }
            #[cfg(feature = "dynamodb")]
            Target::DynamoDb { .. } => Ok(std::sync::Arc::new(
                self.dynamodb(Base::Environment)?.build()?,
            )),
            _ => Err(Error::config(
                self.backend(),
                "Big Segments live in Redis or DynamoDB, where the LaunchDarkly SDKs read them; this backend has none",
            )),
        }
    }

    /// Applies the query's options, in order, through the backend's `with_config`; a name the
    /// backend does not take is refused with the list of those it does.
    #[cfg(any(
        feature = "redis",
        feature = "dynamodb",
        feature = "consul",
        feature = "sqlite"
    ))]
    fn configure<B, K>(&self, mut builder: B, with_config: fn(B, K, &str) -> Result<B>) -> Result<B>
    where
        K: ConfigKey + std::str::FromStr<Err = UnknownKey>,
    {
        for (name, value) in &self.options {
            let key: K = name.parse().map_err(|_| {
                let known: Vec<&str> = K::ALL.iter().map(|key| key.as_str()).collect();
                Error::config(
                    self.backend(),
                    format!(
                        "unknown option {name:?} in {:?}; the options are {}",
                        self.shown_base,
                        known.join(", ")
                    ),
                )
            })?;
            builder = with_config(builder, key, value)?;
        }
        Ok(builder)
    }

    #[cfg(feature = "redis")]
    fn redis(&self, base: Base) -> Result<flagstore_redis::RedisStoreBuilder> {
        use flagstore_redis::RedisStoreBuilder;
        let Target::Redis { url } = &self.target else {
            return Err(Error::config("redis", "not a redis:// URL"));
        };
        let builder = match base {
            Base::Environment => RedisStoreBuilder::from_env(),
            Base::Defaults => RedisStoreBuilder::new(),
        };
        let builder = builder.url(url);
        self.configure(builder, |b, k, v| b.with_config(k, v))
    }

    #[cfg(feature = "dynamodb")]
    fn dynamodb(&self, base: Base) -> Result<flagstore_dynamodb::DynamoDbStoreBuilder> {
        use flagstore_dynamodb::{DynamoDbStore, DynamoDbStoreBuilder};
        let Target::DynamoDb { table } = &self.target else {
            return Err(Error::config("dynamodb", "not a dynamodb:// URL"));
        };
        let builder = match base {
            Base::Environment => DynamoDbStoreBuilder::from_env().table(table),
            Base::Defaults => DynamoDbStore::builder(table),
        };
        self.configure(builder, |b, k, v| b.with_config(k, v))
    }

    #[cfg(feature = "consul")]
    fn consul(&self, base: Base) -> Result<flagstore_consul::ConsulStoreBuilder> {
        use flagstore_consul::ConsulStoreBuilder;
        let Target::Consul { url } = &self.target else {
            return Err(Error::config("consul", "not a consul:// URL"));
        };
        let builder = match base {
            Base::Environment => ConsulStoreBuilder::from_env(),
            Base::Defaults => ConsulStoreBuilder::new(),
        };
        let builder = builder.url(url);
        self.configure(builder, |b, k, v| b.with_config(k, v))
    }

    #[cfg(feature = "sqlite")]
    fn sqlite(&self) -> Result<flagstore_sqlite::SqliteStoreBuilder> {
        let Target::Sqlite { path } = &self.target else {
            return Err(Error::config("sqlite", "not a sqlite: URL"));
        };
        let builder = flagstore_sqlite::SqliteStore::builder(path);
        self.configure(builder, |b, k, v| b.with_config(k, v))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[cfg(all(feature = "redis", feature = "dynamodb", feature = "consul"))]
    #[test]
    fn item_limits_count_as_the_backend_does() {
        use flagstore::{Item, Kind};
        let item = Item::from_json("k", r#"{"version":12}"#).unwrap();
        let limit = |url: &str| crate::open(url).unwrap().item_limit();
        let dynamo = limit("dynamodb://tbl?region=us-east-1").unwrap();
        assert_eq!((dynamo.backend(), dynamo.bytes()), ("DynamoDB", 409_600));
        assert_eq!(dynamo.size_of(&Kind::FEATURES, &item), 148);
        let prefixed = limit("dynamodb://tbl?prefix=p&region=us-east-1").unwrap();
        assert_eq!(prefixed.size_of(&Kind::FEATURES, &item), 150);
        let consul = limit("consul://h").unwrap();
        assert_eq!(consul.size_of(&Kind::FEATURES, &item), item.len());
        assert!(limit("redis://h").is_none());
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

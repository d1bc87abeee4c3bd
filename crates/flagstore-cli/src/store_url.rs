//! Store URLs: which backend, where, and with which prefix.

use std::path::PathBuf;
use std::time::Duration;

use flagstore::backend::redact_url;
use flagstore::{DynStore, Item, Kind};
use flagstore_consul::{ConsulStoreBuilder, MAX_VALUE_SIZE};
use flagstore_dynamodb::{DynamoDbStore, MAX_ITEM_SIZE, create_table, estimated_size};
use flagstore_redis::RedisStore;
use flagstore_sqlite::SqliteStore;

use crate::CliError;

/// A parsed `--store` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoreUrl {
    Redis {
        url: String,
        prefix: Option<String>,
    },
    DynamoDb {
        table: String,
        endpoint: Option<String>,
        region: Option<String>,
        prefix: Option<String>,
    },
    Consul {
        address: String,
        datacenter: Option<String>,
        prefix: Option<String>,
    },
    Sqlite {
        path: PathBuf,
        prefix: Option<String>,
    },
}

const FORMS: &str = "redis://host:port[/db], rediss://…, dynamodb://TABLE[?endpoint=…&region=…], \
                     consul://host:port[?dc=…], sqlite:PATH; each with an optional ?prefix=…";

/// Measures an item the way its backend counts bytes against its limit.
pub(crate) type Measure = Box<dyn Fn(&Kind, &Item) -> usize + Send + Sync>;

/// How large one item may be in a backend.
pub(crate) struct SizeLimit {
    pub(crate) backend: &'static str,
    pub(crate) bytes: usize,
    pub(crate) measure: Measure,
}

/// An opened store and what `status` needs to know about its backend.
pub(crate) struct Opened {
    pub(crate) store: DynStore,
    pub(crate) limit: Option<SizeLimit>,
}

impl StoreUrl {
    pub(crate) fn parse(raw: &str) -> Result<StoreUrl, CliError> {
        let shown = redact_url(raw).into_owned();
        // Options start at the first '?' after the user-info, which runs to the last '@':
        // passwords may hold an unencoded '?'.
        let options_from = raw.rfind('@').unwrap_or(0);
        let (base, query) = match raw[options_from..].find('?') {
            Some(at) => (&raw[..options_from + at], &raw[options_from + at + 1..]),
            None => (raw, ""),
        };
        let mut options: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        for (i, (name, _)) in options.iter().enumerate() {
            if options[..i].iter().any(|(earlier, _)| earlier == name) {
                // Only the part before '?': a value might be a secret.
                let base = redact_url(base);
                return Err(CliError::new(format!(
                    "option {name:?} is given twice in {base:?}"
                )));
            }
        }
        let mut take = |name: &str| -> Option<String> {
            options
                .iter()
                .position(|(k, _)| k == name)
                .map(|i| options.remove(i).1)
        };
        let (scheme, rest) = base
            .split_once(':')
            .ok_or_else(|| CliError::new(format!("{shown:?} is not a store URL; use {FORMS}")))?;
        let parsed = match scheme {
            "redis" | "rediss" => StoreUrl::Redis {
                url: base.to_owned(),
                prefix: take("prefix"),
            },
            "dynamodb" => {
                let table = rest
                    .strip_prefix("//")
                    .unwrap_or(rest)
                    .trim_end_matches('/')
                    .to_owned();
                if table.is_empty() {
                    return Err(CliError::new(format!(
                        "{shown:?} names no table: use dynamodb://TABLE"
                    )));
                }
                StoreUrl::DynamoDb {
                    table,
                    endpoint: take("endpoint"),
                    region: take("region"),
                    prefix: take("prefix"),
                }
            }
            "consul" => {
                let authority = rest
                    .strip_prefix("//")
                    .unwrap_or(rest)
                    .trim_end_matches('/');
                if authority.contains('@') {
                    return Err(CliError::new(format!(
                        "{shown:?}: a consul:// URL takes no user or token; the ACL token comes from $CONSUL_HTTP_TOKEN"
                    )));
                }
                let address = match authority {
                    "" => flagstore_consul::DEFAULT_URL.to_owned(),
                    a if a.contains(':') => format!("http://{a}"),
                    a => format!("http://{a}:8500"),
                };
                StoreUrl::Consul {
                    address,
                    datacenter: take("dc"),
                    prefix: take("prefix"),
                }
            }
            "sqlite" => {
                let path = rest.strip_prefix("//").unwrap_or(rest);
                if path.is_empty() {
                    return Err(CliError::new(format!(
                        "{shown:?} names no file: use sqlite:PATH"
                    )));
                }
                StoreUrl::Sqlite {
                    path: PathBuf::from(path),
                    prefix: take("prefix"),
                }
            }
            other => {
                return Err(CliError::new(format!(
                    "unknown store type {other:?} in {shown:?}; use {FORMS}"
                )));
            }
        };
        if let Some((key, _)) = options.first() {
            // Only the part before '?': an unknown option's value might be a secret.
            let base = redact_url(base);
            return Err(CliError::new(format!(
                "unknown option {key:?} in {base:?}; {}",
                parsed.known_options()
            )));
        }
        Ok(parsed)
    }

    fn known_options(&self) -> &'static str {
        match self {
            StoreUrl::Redis { .. } | StoreUrl::Sqlite { .. } => "the only option is prefix",
            StoreUrl::DynamoDb { .. } => "options are endpoint, region and prefix",
            StoreUrl::Consul { .. } => "options are dc and prefix",
        }
    }

    /// Opens the store. Secrets come from the environment: the password of `$REDIS_URL` (when
    /// this URL has none), `AWS_*` through the AWS chain, `CONSUL_HTTP_TOKEN`. With `create`
    /// false (commands that only read), a store that does not exist is not created: an SQLite
    /// file that is not there is reported, not made.
    pub(crate) fn open(&self, create: bool) -> Result<Opened, CliError> {
        let timeout = Duration::from_secs(5);
        match self {
            StoreUrl::Redis { url, prefix } => {
                let mut builder = RedisStore::builder()
                    .url(url)
                    .connect_timeout(Duration::from_secs(2))
                    .request_timeout(timeout);
                if let Some(prefix) = prefix {
                    builder = builder.prefix(prefix);
                }
                if let Some(password) = password_from_env(url) {
                    builder = builder.password(password);
                }
                Ok(Opened {
                    store: std::sync::Arc::new(builder.build()?),
                    limit: None,
                })
            }
            StoreUrl::DynamoDb { .. } => {
                let store = std::sync::Arc::new(self.dynamodb()?);
                let sizer = std::sync::Arc::clone(&store);
                let limit = SizeLimit {
                    backend: "DynamoDB",
                    bytes: MAX_ITEM_SIZE,
                    measure: Box::new(move |kind, item| {
                        estimated_size(&sizer.namespace(kind), item)
                    }),
                };
                Ok(Opened {
                    store,
                    limit: Some(limit),
                })
            }
            StoreUrl::Consul {
                address,
                datacenter,
                prefix,
            } => {
                let mut builder = ConsulStoreBuilder::from_env()
                    .url(address)
                    .connect_timeout(Duration::from_secs(2))
                    .request_timeout(timeout);
                if let Some(dc) = datacenter {
                    builder = builder.datacenter(dc);
                }
                if let Some(prefix) = prefix {
                    builder = builder.prefix(prefix);
                }
                let limit = SizeLimit {
                    backend: "Consul",
                    bytes: MAX_VALUE_SIZE,
                    measure: Box::new(|_, item| item.len()),
                };
                Ok(Opened {
                    store: std::sync::Arc::new(builder.build()?),
                    limit: Some(limit),
                })
            }
            StoreUrl::Sqlite { path, prefix } => {
                if !create && !path.exists() {
                    return Err(CliError::new(format!(
                        "the store {} does not exist (load data into it first)",
                        path.display()
                    )));
                }
                let mut builder = SqliteStore::builder(path).create_if_missing(create);
                if let Some(prefix) = prefix {
                    builder = builder.prefix(prefix);
                }
                Ok(Opened {
                    store: std::sync::Arc::new(builder.build()?),
                    limit: None,
                })
            }
        }
    }
}

impl StoreUrl {
    /// The DynamoDB store this URL names.
    fn dynamodb(&self) -> Result<DynamoDbStore, CliError> {
        let StoreUrl::DynamoDb {
            table,
            endpoint,
            region,
            prefix,
        } = self
        else {
            return Err(CliError::new("internal error: not a DynamoDB URL"));
        };
        let mut builder = DynamoDbStore::builder(table)
            .connect_timeout(Duration::from_secs(2))
            .request_timeout(Duration::from_secs(10));
        if let Some(endpoint) = endpoint {
            builder = builder.url(endpoint);
        }
        if let Some(region) = region {
            builder = builder.region(region);
        }
        if let Some(prefix) = prefix {
            builder = builder.prefix(prefix);
        }
        Ok(builder.build()?)
    }

    /// Creates the DynamoDB table if this URL names one that does not exist yet; other backends
    /// need nothing created.
    pub(crate) async fn create_table(&self) -> Result<(), CliError> {
        if let StoreUrl::DynamoDb { table, .. } = self {
            let store = self.dynamodb()?;
            create_table(store.client().await, table).await?;
        }
        Ok(())
    }
}

/// The password of `$REDIS_URL`, for a store URL that carries none.
fn password_from_env(url: &str) -> Option<String> {
    password_from(url, std::env::var("REDIS_URL").ok().as_deref())
}

/// The decoded password of `env_url` if `url` has none. URLs percent-encode passwords; this is
/// plain percent-decoding (form decoding would turn a `+` into a space).
fn password_from(url: &str, env_url: Option<&str>) -> Option<String> {
    if url::Url::parse(url)
        .ok()
        .is_some_and(|u| u.password().is_some())
    {
        return None;
    }
    let env = url::Url::parse(env_url?).ok()?;
    let decoded = percent_encoding::percent_decode_str(env.password()?)
        .decode_utf8()
        .ok()?;
    Some(decoded.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_backend() {
        let cases = [
            (
                "redis://localhost:6379",
                StoreUrl::Redis {
                    url: "redis://localhost:6379".into(),
                    prefix: None,
                },
            ),
            (
                "rediss://u:p@cache:6380/2?prefix=prod",
                StoreUrl::Redis {
                    url: "rediss://u:p@cache:6380/2".into(),
                    prefix: Some("prod".into()),
                },
            ),
            (
                "dynamodb://flags?endpoint=http://127.0.0.1:8000&region=eu-west-1&prefix=p",
                StoreUrl::DynamoDb {
                    table: "flags".into(),
                    endpoint: Some("http://127.0.0.1:8000".into()),
                    region: Some("eu-west-1".into()),
                    prefix: Some("p".into()),
                },
            ),
            (
                "dynamodb://ld-flags",
                StoreUrl::DynamoDb {
                    table: "ld-flags".into(),
                    endpoint: None,
                    region: None,
                    prefix: None,
                },
            ),
            (
                "consul://consul.internal:8501?dc=eu&prefix=ld",
                StoreUrl::Consul {
                    address: "http://consul.internal:8501".into(),
                    datacenter: Some("eu".into()),
                    prefix: Some("ld".into()),
                },
            ),
            (
                "consul://agent",
                StoreUrl::Consul {
                    address: "http://agent:8500".into(),
                    datacenter: None,
                    prefix: None,
                },
            ),
            (
                "sqlite:flagstore.db",
                StoreUrl::Sqlite {
                    path: "flagstore.db".into(),
                    prefix: None,
                },
            ),
            (
                "sqlite:///var/lib/flags.db?prefix=x",
                StoreUrl::Sqlite {
                    path: "/var/lib/flags.db".into(),
                    prefix: Some("x".into()),
                },
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(StoreUrl::parse(raw).unwrap(), want, "{raw}");
        }
    }

    #[test]
    fn takes_the_password_from_redis_url_decoded_exactly() {
        let env = Some("redis://:a+b%40c%2Fd@elsewhere:6379");
        assert_eq!(
            password_from("redis://cache:6379", env).as_deref(),
            Some("a+b@c/d")
        );
        assert_eq!(
            password_from("redis://u:own@cache", env),
            None,
            "the URL's own password wins"
        );
        assert_eq!(password_from("redis://cache", None), None);
        assert_eq!(
            password_from("redis://cache", Some("redis://elsewhere")),
            None
        );
    }

    #[test]
    fn rejects_bad_urls_clearly_and_never_echoes_a_password() {
        let cases = [
            (
                "memcached://h",
                "unknown store type \"memcached\" in \"memcached://h\"; use ",
            ),
            ("just-a-name", "\"just-a-name\" is not a store URL; use "),
            (
                "redis://u:hunter2@h?prefix=a&db=3",
                "unknown option \"db\" in \"redis://u:***@h\"; the only option is prefix",
            ),
            (
                "dynamodb://?region=x",
                "\"dynamodb://?region=x\" names no table: use dynamodb://TABLE",
            ),
            (
                "consul://h?token=s3cret",
                "unknown option \"token\" in \"consul://h\"; options are dc and prefix",
            ),
            ("sqlite:", "\"sqlite:\" names no file: use sqlite:PATH"),
            (
                "redis://:s3cret@h?prefix=a&prefix=b",
                "option \"prefix\" is given twice in \"redis://:***@h\"",
            ),
            (
                "consul://s3cret@host",
                "\"consul://***@host\": a consul:// URL takes no user or token",
            ),
        ];
        for (raw, start) in cases {
            let err = StoreUrl::parse(raw).unwrap_err().to_string();
            assert!(err.starts_with(start), "{raw}: {err}");
            assert!(!err.contains("hunter2") && !err.contains("s3cret"), "{err}");
        }
    }

    #[test]
    fn passwords_with_url_characters_and_typos_never_show() {
        // Unencoded '/', '?' and '#' in passwords (common in generated ones), and typos.
        let cases = [
            (
                "redis://:s3cret/PW@h?db=1",
                "unknown option \"db\" in \"redis://:***@h\"",
            ),
            (
                "redis://:s3cret?PW@h",
                "\"redis://:***@h\" is not a valid Redis URL",
            ),
            ("redis://:s3cret#PW@h", "\"redis://:***@h\""),
            ("redis:/:s3cret@h", "\"redis:/:***@h\" is not a Redis URL"),
            ("redis:s3cret@h", "\"redis:***@h\" is not a Redis URL"),
            (
                "redis//:s3cret@h",
                "unknown store type \"redis//\" in \"***@h\"",
            ),
            ("consul://s3cret@host:8500", "\"consul://***@host:8500\""),
        ];
        for (raw, want) in cases {
            let err = StoreUrl::parse(raw)
                .and_then(|url| url.open(false).map(|_| ()))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{raw}: {err}");
            assert!(
                !err.contains("s3cret") && !err.contains("PW"),
                "{raw}: {err}"
            );
        }
    }
}

//! Store URLs: which backend, where, and with which options.

use std::fmt;
use std::path::PathBuf;

use flagstore::backend::redact_url;
use flagstore::{Error, Result};

/// The forms every error about an unknown scheme lists.
pub(crate) const FORMS: &str = "redis://host:port[/db], rediss://… (TLS), redis+unix:///path, \
    redis+cluster://host:port,host:port, redis+sentinel://host:port,…/MASTER[/db], \
    dynamodb://TABLE, consul://host:port, consul+https://host:port, sqlite:PATH";

/// What was not a store URL, before any backend is known.
const URL: &str = "store-url";

/// A parsed store URL: the backend, where it is, and the options given as query parameters.
///
/// | form | options |
/// |---|---|
/// | `redis://[user:password@]host[:port][/db]`, `rediss://…` (TLS), `redis+unix:///path[?db=N]` | `prefix`, `pool_size`, `connect_timeout`, `request_timeout`, `feed=auto\|tracking\|keyspace`, `keyspace_events=configure` |
/// | `redis+cluster://[user:password@]host:port,host:port` (`rediss+cluster://` for TLS); the prefix needs a hash tag, e.g. `?prefix={launchdarkly}` | the same |
/// | `redis+sentinel://[user:password@]host:port,host:port/MASTER_NAME[/db]` (`rediss+sentinel://`: TLS to the primary) | the same |
/// | `dynamodb://TABLE` | `endpoint`, `region`, `prefix`, `connect_timeout`, `request_timeout` |
/// | `consul://host[:port]`, `consul+https://host[:port]` | `dc`, `prefix`, `connect_timeout`, `request_timeout` |
/// | `sqlite:PATH`, `sqlite:///absolute/path` | `prefix`, `busy_timeout` |
///
/// Durations are written `500ms`, `2s` or `1m`. An option the backend does not take, or one given
/// twice, is refused. Secrets never go in the query: they come from the environment when the store
/// is opened (see [`StoreUrl::open`]). `Display` and `Debug` mask any password.
///
/// ```
/// use flagstore_url::StoreUrl;
///
/// let url = StoreUrl::parse("redis://app:hunter2@cache:6379/2?prefix=prod&request_timeout=1s")?;
/// assert_eq!(url.backend(), "redis");
/// assert_eq!(url.to_string(), "redis://app:***@cache:6379/2?prefix=prod&request_timeout=1s");
///
/// let err = StoreUrl::parse("sqlite:flags.db?db=2").unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     r#"sqlite: invalid configuration: unknown option "db" in "sqlite:flags.db"; the options are prefix, busy_timeout"#
/// );
/// # Ok::<(), flagstore::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct StoreUrl {
    /// The URL as given, for `Display` (masked).
    pub(crate) raw: String,
    pub(crate) target: Target,
    /// The query's options, each given once, in order; the backend's `with_config` reads them.
    pub(crate) options: Vec<(String, String)>,
    /// The part before the query, masked: the only part errors quote.
    pub(crate) shown_base: String,
}

/// Where the store is, per backend; everything else is an option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Redis { url: String },
    DynamoDb { table: String },
    Consul { url: String },
    Sqlite { path: PathBuf },
}

impl StoreUrl {
    /// Parses a store URL without opening anything. Errors never quote a password or token.
    pub fn parse(raw: &str) -> Result<StoreUrl> {
        let shown = redact_url(raw).into_owned();
        // Options start at the first '?' after the user-info, which runs to the last '@':
        // generated passwords may hold an unencoded '?'. URLs that take no user-info start their
        // options at the first '?', since an option's value may hold an '@' of its own (an
        // endpoint with credentials).
        let no_userinfo = ["dynamodb:", "sqlite:"]
            .iter()
            .any(|scheme| raw.starts_with(scheme));
        let options_from = if no_userinfo {
            0
        } else {
            raw.rfind('@').unwrap_or(0)
        };
        let (base, query) = match raw[options_from..].find('?') {
            Some(at) => (&raw[..options_from + at], &raw[options_from + at + 1..]),
            None => (raw, ""),
        };
        let Some((scheme, rest)) = base.split_once(':') else {
            return Err(Error::config(
                URL,
                format!("{shown:?} is not a store URL; use {FORMS}"),
            ));
        };
        let backend = match scheme {
            "redis" | "rediss" | "redis+unix" | "unix" | "redis+cluster" | "rediss+cluster"
            | "redis+sentinel" | "rediss+sentinel" => "redis",
            "dynamodb" => "dynamodb",
            "consul" | "consul+http" | "consul+https" => "consul",
            "sqlite" => "sqlite",
            _ => {
                return Err(Error::config(
                    URL,
                    format!(
                        "unknown store type {:?} in {shown:?}; use {FORMS}",
                        redact_url(scheme)
                    ),
                ));
            }
        };
        let options: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        // Only the part before '?' is ever quoted: an option's value might be a secret.
        let shown_base = redact_url(base).into_owned();
        for (i, (name, _)) in options.iter().enumerate() {
            if options[..i].iter().any(|(earlier, _)| earlier == name) {
                return Err(Error::config(
                    backend,
                    format!("option {name:?} is given twice in {shown_base:?}"),
                ));
            }
        }
        let target = match backend {
            "redis" => Target::Redis {
                url: base.to_owned(),
            },
            "dynamodb" => {
                let table = rest
                    .strip_prefix("//")
                    .unwrap_or(rest)
                    .trim_end_matches('/');
                if table.is_empty() {
                    return Err(Error::config(
                        backend,
                        format!("{shown:?} names no table: use dynamodb://TABLE"),
                    ));
                }
                Target::DynamoDb {
                    table: table.to_owned(),
                }
            }
            "consul" => {
                let authority = rest
                    .strip_prefix("//")
                    .unwrap_or(rest)
                    .trim_end_matches('/');
                if authority.contains('@') {
                    return Err(Error::config(
                        backend,
                        format!(
                            "{shown:?}: a consul URL takes no user or token; the ACL token comes from $CONSUL_HTTP_TOKEN"
                        ),
                    ));
                }
                let http = if scheme == "consul+https" {
                    "https"
                } else {
                    "http"
                };
                let url = match authority {
                    "" => format!("{http}://127.0.0.1:8500"),
                    a if a.contains(':') => format!("{http}://{a}"),
                    a => format!("{http}://{a}:8500"),
                };
                Target::Consul { url }
            }
            _ => {
                let path = rest.strip_prefix("//").unwrap_or(rest);
                if path.is_empty() {
                    return Err(Error::config(
                        backend,
                        format!("{shown:?} names no file: use sqlite:PATH"),
                    ));
                }
                Target::Sqlite {
                    path: PathBuf::from(path),
                }
            }
        };
        let url = StoreUrl {
            raw: raw.to_owned(),
            target,
            options,
            shown_base,
        };
        // The backend's own builder checks every option now, so a bad URL fails here, not at
        // the first use; opening sets them again.
        url.check_options()?;
        Ok(url)
    }

    /// The backend's name: `redis`, `dynamodb`, `consul` or `sqlite`.
    pub fn backend(&self) -> &'static str {
        match self.target {
            Target::Redis { .. } => "redis",
            Target::DynamoDb { .. } => "dynamodb",
            Target::Consul { .. } => "consul",
            Target::Sqlite { .. } => "sqlite",
        }
    }

    /// The key prefix the URL names, if it names one (each backend has its default otherwise).
    pub fn prefix(&self) -> Option<&str> {
        self.option("prefix")
    }

    /// The same store under `prefix` when the URL names no prefix of its own; a URL's own
    /// `?prefix=` wins. For configurations that give a prefix beside the URL, as the Relay
    /// Proxy's `LD_PREFIX_*` does.
    ///
    /// ```
    /// use flagstore_url::StoreUrl;
    ///
    /// let url = StoreUrl::parse("redis://cache:6379")?.with_default_prefix("prod")?;
    /// assert_eq!(url.prefix(), Some("prod"));
    /// assert_eq!(url.to_string(), "redis://cache:6379?prefix=prod");
    /// let own = StoreUrl::parse("redis://cache:6379?prefix=mine")?.with_default_prefix("prod")?;
    /// assert_eq!(own.prefix(), Some("mine"));
    /// # Ok::<(), flagstore::Error>(())
    /// ```
    pub fn with_default_prefix(self, prefix: &str) -> Result<StoreUrl> {
        if self.prefix().is_some() {
            return Ok(self);
        }
        let encoded: String = form_urlencoded::byte_serialize(prefix.as_bytes()).collect();
        let separator = if self.options.is_empty() { '?' } else { '&' };
        StoreUrl::parse(&format!("{}{separator}prefix={encoded}", self.raw))
    }

    /// Where the database is, with any password masked, for status reports: the server's URL
    /// for Redis and Consul, the `endpoint` option for DynamoDB (`None`: AWS's own), the file
    /// for SQLite.
    ///
    /// ```
    /// use flagstore_url::StoreUrl;
    ///
    /// let url = StoreUrl::parse("redis://:hunter2@cache:6379/2?prefix=prod")?;
    /// assert_eq!(url.server().as_deref(), Some("redis://:***@cache:6379/2"));
    /// assert_eq!(StoreUrl::parse("dynamodb://flags")?.server(), None);
    /// # Ok::<(), flagstore::Error>(())
    /// ```
    pub fn server(&self) -> Option<String> {
        match &self.target {
            Target::DynamoDb { .. } => self.option("endpoint").map(|e| redact_url(e).into_owned()),
            Target::Consul { url } => Some(url.clone()),
            Target::Redis { .. } | Target::Sqlite { .. } => Some(self.shown_base.clone()),
        }
    }

    /// The DynamoDB table the URL names; `None` for the other backends.
    pub fn table(&self) -> Option<&str> {
        match &self.target {
            Target::DynamoDb { table } => Some(table),
            _ => None,
        }
    }

    /// The value of the query option `name`, if given.
    pub(crate) fn option(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact_url(&self.raw))
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StoreUrl")
            .field(&redact_url(&self.raw))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn target(raw: &str) -> (Target, Vec<(String, String)>) {
        let url = StoreUrl::parse(raw).unwrap();
        (url.target, url.options)
    }

    fn pairs(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_every_form() {
        let redis = |url: &str| Target::Redis {
            url: url.to_owned(),
        };
        let consul = |url: &str| Target::Consul {
            url: url.to_owned(),
        };
        let cases = [
            (
                "redis://localhost:6379",
                redis("redis://localhost:6379"),
                pairs(&[]),
            ),
            (
                "rediss://u:p@cache:6380/2?prefix=prod&pool_size=4",
                redis("rediss://u:p@cache:6380/2"),
                pairs(&[("prefix", "prod"), ("pool_size", "4")]),
            ),
            (
                "redis+unix:///run/redis.sock?prefix=x",
                redis("redis+unix:///run/redis.sock"),
                pairs(&[("prefix", "x")]),
            ),
            (
                "redis+cluster://:pw@h1:7000,h2:7001?prefix={ld}",
                redis("redis+cluster://:pw@h1:7000,h2:7001"),
                pairs(&[("prefix", "{ld}")]),
            ),
            (
                "redis+sentinel://s1:26379,s2:26379/mymaster/2",
                redis("redis+sentinel://s1:26379,s2:26379/mymaster/2"),
                pairs(&[]),
            ),
            (
                "redis://h?keyspace_events=configure",
                redis("redis://h"),
                pairs(&[("keyspace_events", "configure")]),
            ),
            (
                "redis://h?feed=tracking",
                redis("redis://h"),
                pairs(&[("feed", "tracking")]),
            ),
            (
                "dynamodb://flags?endpoint=http://127.0.0.1:8000&region=eu-west-1&prefix=p",
                Target::DynamoDb {
                    table: "flags".into(),
                },
                pairs(&[
                    ("endpoint", "http://127.0.0.1:8000"),
                    ("region", "eu-west-1"),
                    ("prefix", "p"),
                ]),
            ),
            (
                "dynamodb://ld-flags",
                Target::DynamoDb {
                    table: "ld-flags".into(),
                },
                pairs(&[]),
            ),
            (
                "consul://consul.internal:8501?dc=eu&prefix=ld",
                consul("http://consul.internal:8501"),
                pairs(&[("dc", "eu"), ("prefix", "ld")]),
            ),
            ("consul://agent", consul("http://agent:8500"), pairs(&[])),
            ("consul://", consul("http://127.0.0.1:8500"), pairs(&[])),
            (
                "consul+https://agent",
                consul("https://agent:8500"),
                pairs(&[]),
            ),
            (
                "consul+http://agent:1",
                consul("http://agent:1"),
                pairs(&[]),
            ),
            (
                "sqlite:flagstore.db",
                Target::Sqlite {
                    path: "flagstore.db".into(),
                },
                pairs(&[]),
            ),
            (
                "sqlite:///var/lib/flags.db?prefix=x&busy_timeout=250ms",
                Target::Sqlite {
                    path: "/var/lib/flags.db".into(),
                },
                pairs(&[("prefix", "x"), ("busy_timeout", "250ms")]),
            ),
        ];
        for (raw, want, options) in cases {
            assert_eq!(target(raw), (want, options), "{raw}");
        }
        let url = StoreUrl::parse("consul://h?connect_timeout=500ms&request_timeout=2s&prefix=p")
            .unwrap();
        assert_eq!(url.prefix(), Some("p"));
        assert_eq!(
            (url.option("connect_timeout"), url.option("request_timeout")),
            (Some("500ms"), Some("2s"))
        );
    }

    // Options are checked by each backend's builder: the Redis, DynamoDB and Consul cases need
    // them in the build.
    #[cfg(all(feature = "redis", feature = "dynamodb", feature = "consul"))]
    #[test]
    fn refuses_bad_urls_clearly_and_never_echoes_a_secret() {
        let cases = [
            (
                "memcached://h",
                r#"store-url: invalid configuration: unknown store type "memcached" in "memcached://h"; use "#,
            ),
            (
                "just-a-name",
                r#"store-url: invalid configuration: "just-a-name" is not a store URL; use "#,
            ),
            (
                "redis://u:hunter2@h?prefix=a&db=3",
                r#"redis: invalid configuration: unknown option "db" in "redis://u:***@h"; the options are prefix, pool_size, connect_timeout, request_timeout, feed, keyspace_events"#,
            ),
            (
                "redis://:s3cret@h?prefix=a&prefix=b",
                r#"redis: invalid configuration: option "prefix" is given twice in "redis://:***@h""#,
            ),
            (
                "dynamodb://?region=x",
                r#"dynamodb: invalid configuration: "dynamodb://?region=x" names no table: use dynamodb://TABLE"#,
            ),
            (
                "consul://h?token=s3cret",
                r#"consul: invalid configuration: unknown option "token" in "consul://h"; the options are dc, prefix, connect_timeout, request_timeout"#,
            ),
            (
                "consul://s3cret@host",
                r#"consul: invalid configuration: "consul://***@host": a consul URL takes no user or token"#,
            ),
            (
                "sqlite:",
                r#"sqlite: invalid configuration: "sqlite:" names no file: use sqlite:PATH"#,
            ),
            (
                "redis://h?request_timeout=soon",
                r#"redis: invalid configuration: request_timeout="soon" is not a duration like 500ms, 2s or 1m"#,
            ),
            (
                "redis://h?keyspace_events=yes",
                r#"redis: invalid configuration: keyspace_events="yes": the only value is "configure" (let the change feed turn on the keyspace notifications it needs)"#,
            ),
            (
                "redis://h?feed=push",
                r#"redis: invalid configuration: feed="push": the feeds are auto, tracking and keyspace"#,
            ),
            (
                "redis://h?pool_size=many",
                r#"redis: invalid configuration: pool_size="many" is not a whole number"#,
            ),
            // Unencoded '/', '?' and '#' in passwords, and typos: never echoed.
            (
                "redis://:s3cret/PW@h?db=1",
                r#"redis: invalid configuration: unknown option "db" in "redis://:***@h""#,
            ),
            (
                "redis//:s3cret@h",
                r#"store-url: invalid configuration: unknown store type "redis//" in "***@h""#,
            ),
            (
                "s3cret@h",
                r#"store-url: invalid configuration: "***@h" is not a store URL"#,
            ),
        ];
        for (raw, start) in cases {
            let err = StoreUrl::parse(raw).unwrap_err().to_string();
            assert!(err.starts_with(start), "{raw}: {err}");
            for secret in ["hunter2", "s3cret", "PW"] {
                assert!(!err.contains(secret), "{raw}: {err}");
            }
        }
    }

    #[test]
    fn display_and_debug_mask_passwords() {
        let url = StoreUrl::parse("rediss://app:s3cret/x@cache:6380/1?prefix=p").unwrap();
        let shown = format!("{url} {url:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("rediss://app:***@cache:6380/1?prefix=p"),
            "{shown}"
        );
    }
}

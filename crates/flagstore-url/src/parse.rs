//! Store URLs: which backend, where, and with which options.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

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
/// | `redis://[user:password@]host[:port][/db]`, `rediss://…` (TLS), `redis+unix:///path[?db=N]` | `prefix`, `pool_size`, `connect_timeout`, `request_timeout`, `keyspace_events=configure` |
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
/// let err = StoreUrl::parse("redis://cache?db=2").unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     r#"redis: invalid configuration: unknown option "db" in "redis://cache"; the options are prefix, pool_size, connect_timeout, request_timeout, keyspace_events"#
/// );
/// # Ok::<(), flagstore::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct StoreUrl {
    /// The URL as given, for `Display` (masked).
    pub(crate) raw: String,
    pub(crate) target: Target,
    pub(crate) prefix: Option<String>,
    pub(crate) timeouts: Timeouts,
}

/// Where the store is, per backend.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Target {
    Redis {
        url: String,
        pool_size: Option<usize>,
        /// `keyspace_events=configure`: the change feed may turn on the notifications it needs.
        configure_keyspace_events: bool,
    },
    DynamoDb {
        table: String,
        endpoint: Option<String>,
        region: Option<String>,
    },
    Consul {
        url: String,
        datacenter: Option<String>,
    },
    Sqlite {
        path: PathBuf,
        busy_timeout: Option<Duration>,
    },
}

/// Timeouts given in the URL; unset ones keep the backend's defaults.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Timeouts {
    pub(crate) connect: Option<Duration>,
    pub(crate) request: Option<Duration>,
}

/// The query options, taken one by one by the backend's parser.
struct Options<'a> {
    backend: &'static str,
    shown_base: String,
    pairs: Vec<(String, String)>,
    known: &'a [&'static str],
}

impl Options<'_> {
    fn take(&mut self, name: &str) -> Option<String> {
        let at = self.pairs.iter().position(|(key, _)| key == name)?;
        Some(self.pairs.remove(at).1)
    }

    fn duration(&mut self, name: &str) -> Result<Option<Duration>> {
        let Some(text) = self.take(name) else {
            return Ok(None);
        };
        parse_duration(&text).map(Some).ok_or_else(|| {
            Error::config(
                self.backend,
                format!("{name}={text:?} is not a duration like 500ms, 2s or 1m"),
            )
        })
    }

    fn count(&mut self, name: &str) -> Result<Option<usize>> {
        let Some(text) = self.take(name) else {
            return Ok(None);
        };
        text.parse().map(Some).map_err(|_| {
            Error::config(
                self.backend,
                format!("{name}={text:?} is not a whole number"),
            )
        })
    }

    fn timeouts(&mut self) -> Result<Timeouts> {
        Ok(Timeouts {
            connect: self.duration("connect_timeout")?,
            request: self.duration("request_timeout")?,
        })
    }

    /// Refuses whatever option no parser took.
    fn finish(self) -> Result<()> {
        match self.pairs.first() {
            None => Ok(()),
            Some((name, _)) => Err(Error::config(
                self.backend,
                format!(
                    "unknown option {name:?} in {:?}; the options are {}",
                    self.shown_base,
                    self.known.join(", ")
                ),
            )),
        }
    }
}

const REDIS_OPTIONS: &[&str] = &[
    "prefix",
    "pool_size",
    "connect_timeout",
    "request_timeout",
    "keyspace_events",
];
const DYNAMODB_OPTIONS: &[&str] = &[
    "endpoint",
    "region",
    "prefix",
    "connect_timeout",
    "request_timeout",
];
const CONSUL_OPTIONS: &[&str] = &["dc", "prefix", "connect_timeout", "request_timeout"];
const SQLITE_OPTIONS: &[&str] = &["prefix", "busy_timeout"];

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
        let (backend, known) = match scheme {
            "redis" | "rediss" | "redis+unix" | "unix" | "redis+cluster" | "rediss+cluster"
            | "redis+sentinel" | "rediss+sentinel" => ("redis", REDIS_OPTIONS),
            "dynamodb" => ("dynamodb", DYNAMODB_OPTIONS),
            "consul" | "consul+http" | "consul+https" => ("consul", CONSUL_OPTIONS),
            "sqlite" => ("sqlite", SQLITE_OPTIONS),
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
        let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        // Only the part before '?' is ever quoted: an option's value might be a secret.
        let shown_base = redact_url(base).into_owned();
        for (i, (name, _)) in pairs.iter().enumerate() {
            if pairs[..i].iter().any(|(earlier, _)| earlier == name) {
                return Err(Error::config(
                    backend,
                    format!("option {name:?} is given twice in {shown_base:?}"),
                ));
            }
        }
        let mut options = Options {
            backend,
            shown_base,
            pairs,
            known,
        };
        let prefix = options.take("prefix");
        let timeouts = options.timeouts()?;
        let target = match backend {
            "redis" => Target::Redis {
                url: base.to_owned(),
                pool_size: options.count("pool_size")?,
                configure_keyspace_events: match options.take("keyspace_events").as_deref() {
                    None => false,
                    Some("configure") => true,
                    Some(other) => {
                        return Err(Error::config(
                            "redis",
                            format!(
                                "keyspace_events={other:?}: the only value is \"configure\" (let the change feed turn on the keyspace notifications it needs)"
                            ),
                        ));
                    }
                },
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
                    endpoint: options.take("endpoint"),
                    region: options.take("region"),
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
                Target::Consul {
                    url,
                    datacenter: options.take("dc"),
                }
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
                    busy_timeout: options.duration("busy_timeout")?,
                }
            }
        };
        options.finish()?;
        Ok(StoreUrl {
            raw: raw.to_owned(),
            target,
            prefix,
            timeouts,
        })
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
        self.prefix.as_deref()
    }
}

/// `500ms`, `2s`, `1m`: a whole number and a unit.
fn parse_duration(text: &str) -> Option<Duration> {
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

    fn target(raw: &str) -> Target {
        StoreUrl::parse(raw).unwrap().target
    }

    #[test]
    fn parses_every_form() {
        let redis = |url: &str, pool_size| Target::Redis {
            url: url.to_owned(),
            pool_size,
            configure_keyspace_events: false,
        };
        let consul = |url: &str, dc: Option<&str>| Target::Consul {
            url: url.to_owned(),
            datacenter: dc.map(str::to_owned),
        };
        let cases = [
            (
                "redis://localhost:6379",
                redis("redis://localhost:6379", None),
            ),
            (
                "rediss://u:p@cache:6380/2?prefix=prod&pool_size=4",
                redis("rediss://u:p@cache:6380/2", Some(4)),
            ),
            (
                "redis+unix:///run/redis.sock?prefix=x",
                redis("redis+unix:///run/redis.sock", None),
            ),
            (
                "redis+cluster://:pw@h1:7000,h2:7001?prefix={ld}",
                redis("redis+cluster://:pw@h1:7000,h2:7001", None),
            ),
            (
                "redis+sentinel://s1:26379,s2:26379/mymaster/2",
                redis("redis+sentinel://s1:26379,s2:26379/mymaster/2", None),
            ),
            (
                "redis://h?keyspace_events=configure",
                Target::Redis {
                    url: "redis://h".into(),
                    pool_size: None,
                    configure_keyspace_events: true,
                },
            ),
            (
                "dynamodb://flags?endpoint=http://127.0.0.1:8000&region=eu-west-1&prefix=p",
                Target::DynamoDb {
                    table: "flags".into(),
                    endpoint: Some("http://127.0.0.1:8000".into()),
                    region: Some("eu-west-1".into()),
                },
            ),
            (
                "dynamodb://ld-flags",
                Target::DynamoDb {
                    table: "ld-flags".into(),
                    endpoint: None,
                    region: None,
                },
            ),
            (
                "consul://consul.internal:8501?dc=eu&prefix=ld",
                consul("http://consul.internal:8501", Some("eu")),
            ),
            ("consul://agent", consul("http://agent:8500", None)),
            ("consul://", consul("http://127.0.0.1:8500", None)),
            ("consul+https://agent", consul("https://agent:8500", None)),
            ("consul+http://agent:1", consul("http://agent:1", None)),
            (
                "sqlite:flagstore.db",
                Target::Sqlite {
                    path: "flagstore.db".into(),
                    busy_timeout: None,
                },
            ),
            (
                "sqlite:///var/lib/flags.db?prefix=x&busy_timeout=250ms",
                Target::Sqlite {
                    path: "/var/lib/flags.db".into(),
                    busy_timeout: Some(Duration::from_millis(250)),
                },
            ),
        ];
        for (raw, want) in cases {
            assert!(target(raw) == want, "{raw}");
        }
        let url = StoreUrl::parse("consul://h?connect_timeout=500ms&request_timeout=2s&prefix=p")
            .unwrap();
        assert_eq!(url.prefix(), Some("p"));
        assert_eq!(
            (url.timeouts.connect, url.timeouts.request),
            (
                Some(Duration::from_millis(500)),
                Some(Duration::from_secs(2))
            )
        );
        assert_eq!(parse_duration("1m"), Some(Duration::from_secs(60)));
    }

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
                r#"redis: invalid configuration: unknown option "db" in "redis://u:***@h"; the options are prefix, pool_size, connect_timeout, request_timeout, keyspace_events"#,
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

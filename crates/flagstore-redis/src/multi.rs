//! Redis Cluster and Redis Sentinel: their URLs, the prefix rule a cluster needs, and their
//! connection pools.

use std::time::Duration;

use deadpool::Runtime;
use deadpool::managed;
use deadpool_redis::redis::cluster::ClusterClientBuilder;
use deadpool_redis::redis::sentinel::{
    SentinelClient, SentinelNodeConnectionInfo, SentinelServerType,
};
use deadpool_redis::redis::{AsyncConnectionConfig, RedisConnectionInfo, TlsCertificates, TlsMode};
use flagstore::backend::redact_url;
use flagstore::{Error, Result};

use crate::builder::DEFAULT_PREFIX;
use crate::error::BACKEND;
use crate::feed::{FeedSource, NodeTemplate};
use crate::reads::Opener;
use crate::topology::{ClusterManager, Pools, SentinelManager};

/// Several servers to reach: the nodes of a cluster, or the Sentinels that name a primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Topology {
    Cluster {
        tls: bool,
        nodes: Vec<String>,
    },
    Sentinel {
        tls: bool,
        sentinels: Vec<String>,
        master: String,
        db: i64,
    },
}

/// Credentials from a multi-host URL.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct UserInfo {
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
}

/// `redis+cluster://[user:password@]h1:p1,h2:p2` and `rediss+cluster://…`;
/// `redis+sentinel://[user:password@]h1:p1,h2:p2/MASTER[/db]` and `rediss+sentinel://…` (the
/// credentials and TLS are the primary's). `None` for any other scheme.
pub(crate) fn parse(url: &str) -> Result<Option<(Topology, UserInfo)>> {
    let shown = redact_url(url);
    let Some((scheme, rest)) = url.split_once("://") else {
        return Ok(None);
    };
    let (tls, cluster) = match scheme {
        "redis+cluster" => (false, true),
        "rediss+cluster" => (true, true),
        "redis+sentinel" => (false, false),
        "rediss+sentinel" => (true, false),
        _ => return Ok(None),
    };
    let mut user = UserInfo::default();
    let rest = match rest.rfind('@') {
        Some(at) => {
            let (username, password) = rest[..at].split_once(':').unwrap_or((&rest[..at], ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8()
                    .map(|d| d.into_owned())
                    .map_err(|_| {
                        Error::config(BACKEND, format!("{shown:?}: the user-info is not UTF-8"))
                    })
            };
            user.username = Some(decode(username)?).filter(|u| !u.is_empty());
            user.password = Some(decode(password)?).filter(|p| !p.is_empty());
            &rest[at + 1..]
        }
        None => rest,
    };
    let (hosts, path) = rest.split_once('/').unwrap_or((rest, ""));
    let hosts: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
        .collect();
    if hosts.is_empty() {
        return Err(Error::config(
            BACKEND,
            format!("{shown:?} names no host: list them as host:port,host:port"),
        ));
    }
    let topology = if cluster {
        if !path.trim_matches('/').is_empty() {
            return Err(Error::config(
                BACKEND,
                format!("{shown:?}: a Redis Cluster has only database 0; remove the path"),
            ));
        }
        Topology::Cluster { tls, nodes: hosts }
    } else {
        let mut segments = path.split('/').filter(|s| !s.is_empty());
        let master = segments.next().ok_or_else(|| {
            Error::config(
                BACKEND,
                format!(
                    "{shown:?} names no primary: use redis+sentinel://host:port,…/MASTER_NAME[/db]"
                ),
            )
        })?;
        let db = match segments.next() {
            None => 0,
            Some(db) => db.parse().map_err(|_| {
                Error::config(
                    BACKEND,
                    format!("{shown:?}: database {db:?} is not a number"),
                )
            })?,
        };
        Topology::Sentinel {
            tls,
            sentinels: hosts,
            master: master.to_owned(),
            db,
        }
    };
    Ok(Some((topology, user)))
}

/// Whether every key under `prefix` falls in one hash slot: the prefix holds a hash tag, a
/// non-empty `{…}` (Redis hashes only the text between the first `{` and the next `}`).
pub(crate) fn has_hash_tag(prefix: &str) -> bool {
    prefix
        .find('{')
        .and_then(|open| prefix[open + 1..].find('}'))
        .is_some_and(|len| len > 0)
}

/// A prefix with a valid hash tag to suggest for `prefix`: the prefix in braces, without any
/// braces of its own (one could cut the tag short or leave it empty, as `}ldx{` would); the
/// default prefix in braces if nothing is left.
pub(crate) fn tagged_prefix(prefix: &str) -> String {
    let text: String = prefix.chars().filter(|c| !matches!(c, '{' | '}')).collect();
    let tagged = format!(
        "{{{}}}",
        if text.is_empty() {
            DEFAULT_PREFIX
        } else {
            &text
        }
    );
    debug_assert!(has_hash_tag(&tagged));
    tagged
}

/// What a pool is built with, whatever the topology.
pub(crate) struct PoolSettings<'a> {
    pub(crate) user: &'a UserInfo,
    pub(crate) pool_size: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) request_timeout: Duration,
    pub(crate) root_cert_pem: Option<&'a [u8]>,
}

fn node_url(tls: bool, host: &str) -> String {
    if host.contains("://") {
        host.to_owned()
    } else if tls {
        format!("rediss://{host}")
    } else {
        format!("redis://{host}")
    }
}

fn built<M: managed::Manager>(manager: M, settings: &PoolSettings<'_>) -> Result<managed::Pool<M>> {
    managed::Pool::builder(manager)
        .max_size(settings.pool_size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(settings.request_timeout))
        .create_timeout(Some(settings.connect_timeout + settings.request_timeout))
        .recycle_timeout(Some(settings.request_timeout))
        .build()
        .map_err(|e| Error::config_caused_by(BACKEND, "could not set up the connection pool", e))
}

/// The pool for `topology`, and where its change feed listens. Nothing connects until the first
/// operation.
pub(crate) fn pools(
    topology: &Topology,
    settings: &PoolSettings<'_>,
) -> Result<(Pools, FeedSource, Option<Opener>)> {
    match topology {
        Topology::Cluster { tls, nodes } => {
            let urls: Vec<String> = nodes.iter().map(|n| node_url(*tls, n)).collect();
            let mut builder = ClusterClientBuilder::new(urls)
                .connection_timeout(settings.connect_timeout)
                .response_timeout(settings.request_timeout)
                // A redirect or a reconnect after a topology change: a few retries, all within
                // the store's request timeout, which bounds the whole call.
                .retries(2);
            if let Some(username) = &settings.user.username {
                builder = builder.username(username);
            }
            if let Some(password) = &settings.user.password {
                builder = builder.password(password);
            }
            if let Some(pem) = settings.root_cert_pem {
                if !tls {
                    return Err(Error::config(
                        BACKEND,
                        "a TLS root certificate was given for a cluster without TLS (use rediss+cluster://)",
                    ));
                }
                builder = builder.certs(TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.to_vec()),
                });
            }
            let client = builder.build().map_err(|_| {
                Error::config(
                    BACKEND,
                    "the cluster node addresses are not valid Redis URLs",
                )
            })?;
            let reads = Opener::Cluster(client.clone());
            let pool = built(ClusterManager { client }, settings)?;
            let nodes = NodeTemplate {
                tls: *tls,
                username: settings.user.username.clone(),
                password: settings.user.password.clone(),
                root_cert_pem: settings.root_cert_pem.map(<[u8]>::to_vec),
            };
            let feed = FeedSource::Cluster {
                pool: pool.clone(),
                nodes,
            };
            Ok((Pools::Cluster(pool), feed, Some(reads)))
        }
        Topology::Sentinel {
            tls,
            sentinels,
            master,
            db,
        } => {
            if settings.root_cert_pem.is_some() {
                return Err(Error::config(
                    BACKEND,
                    "a TLS root certificate is not supported in Sentinel mode; the primary's certificate is checked against the system's roots",
                ));
            }
            let urls: Vec<String> = sentinels.iter().map(|n| node_url(false, n)).collect();
            let mut redis = RedisConnectionInfo::default().set_db(*db);
            if let Some(username) = &settings.user.username {
                redis = redis.set_username(username);
            }
            if let Some(password) = &settings.user.password {
                redis = redis.set_password(password);
            }
            let mut primary =
                SentinelNodeConnectionInfo::default().set_redis_connection_info(redis);
            if *tls {
                primary = primary.set_tls_mode(TlsMode::Secure);
            }
            let client = || {
                SentinelClient::build(
                    urls.clone(),
                    master.clone(),
                    Some(primary.clone()),
                    SentinelServerType::Master,
                )
                .map_err(|_| {
                    Error::config(BACKEND, "the Sentinel addresses are not valid Redis URLs")
                })
            };
            let config = AsyncConnectionConfig::new()
                .set_connection_timeout(Some(settings.connect_timeout))
                .set_response_timeout(Some(settings.request_timeout));
            let manager = SentinelManager {
                client: tokio::sync::Mutex::new(client()?),
                config,
                master: master.clone(),
                sentinels: sentinels.clone(),
                connect_timeout: settings.connect_timeout,
                retry_for: settings.request_timeout / 2,
            };
            let feed = FeedSource::Sentinel(tokio::sync::Mutex::new(client()?));
            // Reads keep using the pool, whose checkout confirms the server is still the primary.
            Ok((Pools::Sentinel(built(manager, settings)?), feed, None))
        }
    }
}

/// How the store names its target in `Display`: the hosts, never a password.
pub(crate) fn describe(topology: &Topology) -> String {
    match topology {
        Topology::Cluster { tls, nodes } => {
            let scheme = if *tls {
                "rediss+cluster"
            } else {
                "redis+cluster"
            };
            format!("cluster {scheme}://{}", nodes.join(","))
        }
        Topology::Sentinel {
            tls,
            sentinels,
            master,
            db,
        } => {
            let scheme = if *tls {
                "rediss+sentinel"
            } else {
                "redis+sentinel"
            };
            format!(
                "primary {master:?} of {scheme}://{}/{master}/{db}",
                sentinels.join(",")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn suggests_only_prefixes_whose_hash_tag_is_valid() {
        for (prefix, suggested) in [
            ("launchdarkly", "{launchdarkly}"),
            ("ld:app", "{ld:app}"),
            ("}ldx{", "{ldx}"),
            ("a}b", "{ab}"),
            ("{", "{launchdarkly}"),
            ("{}", "{launchdarkly}"),
            ("x{", "{x}"),
            ("", "{launchdarkly}"),
        ] {
            let tagged = tagged_prefix(prefix);
            assert_eq!(tagged, suggested, "{prefix}");
            assert!(has_hash_tag(&tagged), "{prefix} -> {tagged}");
        }
    }

    #[test]
    fn parses_cluster_and_sentinel_urls() {
        let (topology, user) = parse("redis+cluster://:pw%40x@10.0.0.1:7000,10.0.0.2:7001")
            .unwrap()
            .unwrap();
        assert_eq!(
            topology,
            Topology::Cluster {
                tls: false,
                nodes: vec!["10.0.0.1:7000".into(), "10.0.0.2:7001".into()]
            }
        );
        assert_eq!(user.password.as_deref(), Some("pw@x"));
        let (topology, _) = parse("rediss+sentinel://s1:26379,s2:26379/mymaster/3")
            .unwrap()
            .unwrap();
        assert_eq!(
            topology,
            Topology::Sentinel {
                tls: true,
                sentinels: vec!["s1:26379".into(), "s2:26379".into()],
                master: "mymaster".into(),
                db: 3
            }
        );
        assert_eq!(parse("redis://h:6379").unwrap(), None);
        let err = |url: &str| parse(url).unwrap_err().to_string();
        assert!(err("redis+cluster://").contains("names no host"));
        assert!(err("redis+cluster://h:1/2").contains("only database 0"));
        assert!(err("redis+sentinel://:s3cret@h:1").contains("names no primary"));
        assert!(!err("redis+sentinel://:s3cret@h:1").contains("s3cret"));
        assert!(err("redis+sentinel://h:1/m/x").contains("is not a number"));
    }

    #[test]
    fn hash_tags() {
        for (prefix, tagged) in [
            ("{launchdarkly}", true),
            ("prod{ld}", true),
            ("launchdarkly", false),
            ("{}ld", false),
            ("}{", false),
            ("{open", false),
        ] {
            assert_eq!(has_hash_tag(prefix), tagged, "{prefix}");
        }
    }
}

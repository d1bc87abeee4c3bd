//! Cluster and Sentinel URLs (`redis+cluster://`, `redis+sentinel://`), and building either
//! topology's pool; each lives in its own module behind its feature.

use flagstore::backend::redact_url;
use flagstore::{Error, Result};

use crate::connect::{Credentials, Timeouts};
use crate::error::BACKEND;
use crate::topology::Topology;

/// Several servers to reach: the nodes of a cluster, or the Sentinels that name a primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Hosts {
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

/// `redis+cluster://[user:password@]h1:p1,h2:p2` and `rediss+cluster://…`;
/// `redis+sentinel://[user:password@]h1:p1,h2:p2/MASTER[/db]` and `rediss+sentinel://…` (the
/// credentials and TLS are the primary's). `None` for any other scheme.
pub(crate) fn parse(url: &str) -> Result<Option<(Hosts, Credentials)>> {
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
    let mut user = Credentials::default();
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
        Hosts::Cluster { tls, nodes: hosts }
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
        Hosts::Sentinel {
            tls,
            sentinels: hosts,
            master: master.to_owned(),
            db,
        }
    };
    Ok(Some((topology, user)))
}

/// What a pool is built with, whatever the topology.
#[cfg_attr(
    not(any(feature = "cluster", feature = "sentinel")),
    allow(dead_code, reason = "read by the cluster and sentinel modules")
)]
pub(crate) struct PoolSettings<'a> {
    pub(crate) credentials: &'a Credentials,
    pub(crate) pool_size: usize,
    pub(crate) timeouts: Timeouts,
    pub(crate) root_cert_pem: Option<&'a [u8]>,
}

/// The topology `hosts` names. Nothing connects until the first operation.
pub(crate) fn topology(hosts: &Hosts, settings: &PoolSettings<'_>) -> Result<Topology> {
    let target = describe(hosts);
    match hosts {
        #[cfg(feature = "cluster")]
        Hosts::Cluster { tls, nodes } => crate::cluster::topology(*tls, nodes, settings, target),
        #[cfg(feature = "sentinel")]
        Hosts::Sentinel {
            tls,
            sentinels,
            master,
            db,
        } => crate::sentinel::topology(*tls, sentinels, master, *db, settings, target),
        #[allow(unreachable_patterns, reason = "reachable with a feature off")]
        other => {
            let _ = (settings, target);
            Err(not_enabled(other))
        }
    }
}

/// The error for a topology whose feature this build leaves out.
#[allow(dead_code, reason = "unused when both features are on")]
fn not_enabled(hosts: &Hosts) -> Error {
    let feature = match hosts {
        Hosts::Cluster { .. } => "cluster",
        Hosts::Sentinel { .. } => "sentinel",
    };
    Error::config(
        BACKEND,
        format!(
            "this build has no Redis {feature} support: enable the `{feature}` feature of flagstore-redis (flagstore-url and the flagstore command enable it with `redis`)"
        ),
    )
}

/// How the store names its target in `Display`: the hosts, never a password.
pub(crate) fn describe(hosts: &Hosts) -> String {
    match hosts {
        Hosts::Cluster { tls, nodes } => {
            let scheme = if *tls {
                "rediss+cluster"
            } else {
                "redis+cluster"
            };
            format!("cluster {scheme}://{}", nodes.join(","))
        }
        Hosts::Sentinel {
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
    fn parses_cluster_and_sentinel_urls() {
        let (topology, user) = parse("redis+cluster://:pw%40x@10.0.0.1:7000,10.0.0.2:7001")
            .unwrap()
            .unwrap();
        assert_eq!(
            topology,
            Hosts::Cluster {
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
            Hosts::Sentinel {
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

    #[cfg(not(feature = "cluster"))]
    #[test]
    fn a_cluster_url_without_its_feature_names_the_feature() {
        let err = crate::RedisStore::builder()
            .url("redis+cluster://127.0.0.1:1,127.0.0.1:2")
            .prefix("{ld}")
            .build()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "redis: invalid configuration: this build has no Redis cluster support: enable the `cluster` feature of flagstore-redis (flagstore-url and the flagstore command enable it with `redis`)"
        );
    }

    #[cfg(not(feature = "sentinel"))]
    #[test]
    fn a_sentinel_url_without_its_feature_names_the_feature() {
        let err = crate::RedisStore::builder()
            .url("redis+sentinel://127.0.0.1:1/mymaster")
            .build()
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("enable the `sentinel` feature of flagstore-redis"),
            "{err}"
        );
    }
}

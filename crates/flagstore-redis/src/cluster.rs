//! Redis Cluster (feature `cluster`): the pool, whose every connection is a cluster client of
//! its own, the prefix rule a cluster needs, and finding the primaries.

use deadpool::managed::{self, Metrics, RecycleResult};
use deadpool_redis::redis::cluster::{ClusterClient, ClusterClientBuilder};
use deadpool_redis::redis::cluster_async::ClusterConnection;
use deadpool_redis::redis::{self, IntoConnectionInfo, RedisError, TlsCertificates, Value};
use flagstore::error::Operation;
use flagstore::{Error, Result};

use crate::builder::DEFAULT_PREFIX;
use crate::connect::{self, Credentials};
use crate::error::BACKEND;
use crate::multi::PoolSettings;
use crate::reads::{Opener, SharedReads};
use crate::topology::{Pools, Primaries, Topology, limited_pool};

/// Makes and checks the connections of a cluster pool. Each pooled connection is a whole
/// cluster client with connections of its own to the nodes, so a WATCH on it is this
/// operation's alone.
pub(crate) struct ClusterManager {
    pub(crate) client: ClusterClient,
}

impl managed::Manager for ClusterManager {
    type Type = ClusterConnection;
    type Error = RedisError;

    async fn create(&self) -> Result<ClusterConnection, RedisError> {
        self.client.get_async_connection().await
    }

    async fn recycle(
        &self,
        conn: &mut ClusterConnection,
        _: &Metrics,
    ) -> RecycleResult<RedisError> {
        // Also clears a WATCH an abandoned upsert left behind (sent to every primary).
        redis::cmd("UNWATCH").query_async::<()>(conn).await?;
        Ok(())
    }
}

/// How to reach a cluster node discovered at run time: the same TLS and credentials as the
/// configured ones.
pub(crate) struct NodeTemplate {
    tls: bool,
    credentials: Credentials,
    roots: Option<TlsCertificates>,
}

impl NodeTemplate {
    pub(crate) fn client(&self, op: Operation, host: &str, port: u16) -> Result<redis::Client> {
        let url = connect::node_url(self.tls, &format!("{host}:{port}"));
        let unusable = |_| {
            Error::database(
                BACKEND,
                op,
                format!("the cluster reported a node address that is not usable: {url}"),
            )
        };
        let info = url.as_str().into_connection_info().map_err(unusable)?;
        connect::client(self.credentials.apply_to(info), self.roots.as_ref()).map_err(unusable)
    }
}

/// The cluster of `nodes` (`host:port` or URLs). Nothing connects until the first operation.
pub(crate) fn topology(
    tls: bool,
    nodes: &[String],
    settings: &PoolSettings<'_>,
    target: String,
) -> Result<Topology> {
    let urls: Vec<String> = nodes.iter().map(|n| connect::node_url(tls, n)).collect();
    let mut builder = ClusterClientBuilder::new(urls)
        .connection_timeout(settings.timeouts.connect)
        .response_timeout(settings.timeouts.request)
        // A redirect or a reconnect after a topology change: a few retries, all within the
        // store's request timeout, which bounds the whole call.
        .retries(2);
    if let Some(username) = &settings.credentials.username {
        builder = builder.username(username);
    }
    if let Some(password) = &settings.credentials.password {
        builder = builder.password(password);
    }
    let roots = match settings.root_cert_pem {
        Some(_) if !tls => {
            return Err(Error::config(
                BACKEND,
                "a TLS root certificate was given for a cluster without TLS (use rediss+cluster://)",
            ));
        }
        Some(pem) => Some(connect::root_certificates(pem)?),
        None => None,
    };
    if let Some(roots) = &roots {
        builder = builder.certs(roots.clone());
    }
    let client = builder.build().map_err(|_| {
        Error::config(
            BACKEND,
            "the cluster node addresses are not valid Redis URLs",
        )
    })?;
    let reads = SharedReads::new(Opener::Cluster(client.clone()));
    let pool = limited_pool(
        ClusterManager { client },
        settings.pool_size,
        settings.timeouts,
    )?;
    let nodes = NodeTemplate {
        tls,
        credentials: settings.credentials.clone(),
        roots,
    };
    Ok(Topology::new(
        Pools::Cluster(pool),
        Some(reads),
        Some(Primaries::Cluster(nodes)),
        0,
        settings.timeouts,
        target,
    ))
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

/// The primaries in a `CLUSTER SLOTS` reply: `[[start, end, [host, port, id], replica...], ...]`.
pub(crate) fn primaries_in(slots: &Value) -> Vec<(String, u16)> {
    let Value::Array(ranges) = slots else {
        return Vec::new();
    };
    let mut found: Vec<(String, u16)> = ranges
        .iter()
        .filter_map(|range| match range {
            Value::Array(fields) => match fields.get(2) {
                Some(Value::Array(node)) => match (node.first(), node.get(1)) {
                    (Some(Value::BulkString(host)), Some(Value::Int(port))) => Some((
                        String::from_utf8_lossy(host).into_owned(),
                        u16::try_from(*port).ok()?,
                    )),
                    _ => None,
                },
                _ => None,
            },
            _ => None,
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
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

//! The test harness: real database servers for the integration tests.
//!
//! For each service, in this order:
//! 1. an endpoint from the environment (`FLAGSTORE_TEST_REDIS_URL`, ...): a server someone runs;
//! 2. the local binary (`redis-server`, ...) started as a child process on a free 127.0.0.1 port in
//!    a temporary directory, ready once it says so, killed when the handle drops;
//! 3. where a Docker engine answers, a container started with testcontainers;
//! 4. otherwise the test fails with a message naming what to install. Nothing is skipped.
//!
//! `scripts/install-servers.sh` installs every binary the harness starts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

/// The workspace README's Rust examples, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

mod backend;
pub mod consul;
mod docker;
pub mod dynamodb;
mod fake_launchdarkly;
mod fault_proxy;
pub mod moto;
mod process;
pub mod python;
pub mod redis;
pub mod tls;

pub use backend::Backend;
pub use docker::DockerService;
pub use fake_launchdarkly::{FakeLaunchDarkly, Requests};
pub use fault_proxy::FaultProxy;
pub use process::{LocalServer, free_port};

/// `store` as the suite takes it: behind the default caching wrapper if `cached`, else as it is.
pub fn maybe_cached(
    store: impl flagstore::PersistentDataStore,
    cached: bool,
) -> flagstore::DynStore {
    if cached {
        std::sync::Arc::new(flagstore::CachingStore::builder(store).build().unwrap())
    } else {
        std::sync::Arc::new(store)
    }
}

/// A Redis store under `prefix` whose change feed turns on the keyspace notifications it needs
/// (a test server has none configured).
pub fn redis_with_feed(url: &str, prefix: &str) -> std::sync::Arc<flagstore_redis::RedisStore> {
    redis_with_feed_mode(url, prefix, flagstore_redis::FeedMode::Auto)
}

/// [`redis_with_feed`] following the feed `mode` picks.
pub fn redis_with_feed_mode(
    url: &str,
    prefix: &str,
    mode: flagstore_redis::FeedMode,
) -> std::sync::Arc<flagstore_redis::RedisStore> {
    std::sync::Arc::new(
        flagstore_redis::RedisStore::builder()
            .url(url)
            .prefix(prefix)
            .feed(mode)
            .configure_keyspace_events(true)
            .build()
            .unwrap(),
    )
}

/// A live daemon-mode cache over `store`, as the adapter README recommends: entries kept for
/// ten minutes, dropped on any change the store's feed reports, `ttl` while the feed is down.
/// Waits (up to 30 s) for the feed to connect; must run inside a Tokio runtime.
pub async fn live_cache(
    store: flagstore::DynStore,
    ttl: std::time::Duration,
) -> flagstore::CachingStore {
    let live = flagstore::CachingStoreBuilder::from_arc(store)
        .cache_time(ttl)
        .invalidate_on_changes()
        .live_cache_time(std::time::Duration::from_secs(600))
        .build()
        .unwrap();
    let mut status = live.subscribe();
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        status.wait_for(|s| s.live),
    )
    .await
    .unwrap_or_else(|_| panic!("the change feed of {live} did not connect within 30 s"))
    .unwrap();
    live
}

/// The key and JSON of a flag shaped like a real one (targets, two rules with clauses, rollouts;
/// about 1.3 KB) at `version`, for benchmarks: `flag-00042` for `i` = 42.
pub fn realistic_flag(i: usize, version: u64) -> (String, String) {
    let key = format!("flag-{i:05}");
    let json = format!(
        r#"{{"key":"{key}","version":{version},"on":true,"salt":"{key}-salt","trackEvents":false,
"targets":[{{"variation":0,"values":["user-1","user-2","user-3","user-4","user-5"]}}],
"rules":[{{"id":"r1","variation":0,"clauses":[{{"attribute":"email","op":"endsWith","values":["@example.com"],"negate":false}}],"trackEvents":false}},
{{"id":"r2","rollout":{{"variations":[{{"variation":0,"weight":25000}},{{"variation":1,"weight":75000}}]}},"clauses":[{{"attribute":"country","op":"in","values":["de","fr","nl","se","no"],"negate":false}}],"trackEvents":false}}],
"fallthrough":{{"rollout":{{"variations":[{{"variation":0,"weight":10000}},{{"variation":1,"weight":90000}}]}}}},
"offVariation":1,"prerequisites":[],"variations":[true,false],"clientSideAvailability":{{"usingMobileKey":false,"usingEnvironmentId":false}},
"description":"A flag of realistic size for benchmarks, with some text so that it weighs about what production flags weigh."}}"#
    );
    (key, json)
}

/// `GET path` from `address` over plain HTTP/1.1 (a status endpoint under test): the status code
/// and the body; `None` while nothing answers there.
pub fn http_get(address: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut socket = std::net::TcpStream::connect(address).ok()?;
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(
        socket,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    socket.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_owned()))
}

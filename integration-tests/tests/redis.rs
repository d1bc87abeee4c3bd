//! The Redis store against a real Redis: the conformance suite under several configurations,
//! the wire format other SDKs share, and Redis-specific options.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use flagstore::testing::{self, SDK_TOMBSTONES, StoreFactory, UpsertHook, flag};
use flagstore::{CachingStore, Collection, DynStore, Error, Item, Kind, PersistentDataStore};
use flagstore_integration_tests::redis::Redis;
use flagstore_integration_tests::{free_port, maybe_cached};
use flagstore_redis::redis::{self, AsyncCommands};
use flagstore_redis::{RedisStore, RedisStoreBuilder};

/// Stores on one Redis, configured alike.
#[derive(Default)]
struct RedisFactory {
    url: String,
    pool_size: Option<usize>,
    ca_pem: Option<String>,
    cached: bool,
}

impl RedisFactory {
    fn new(redis: &Redis) -> Self {
        RedisFactory {
            url: redis.url().to_owned(),
            ..Default::default()
        }
    }

    fn builder(&self, prefix: &str) -> RedisStoreBuilder {
        let mut builder = RedisStore::builder().url(&self.url).prefix(prefix);
        if let Some(size) = self.pool_size {
            builder = builder.pool_size(size);
        }
        if let Some(pem) = &self.ca_pem {
            builder = builder.tls_root_certificate_pem(pem.as_bytes());
        }
        builder
    }
}

#[async_trait]
impl StoreFactory for RedisFactory {
    async fn store(&self, prefix: &str, hook: Option<UpsertHook>) -> DynStore {
        let builder = self.builder(prefix);
        let builder = match hook {
            Some(hook) => builder.before_upsert_write(hook),
            None => builder,
        };
        maybe_cached(builder.build().unwrap(), self.cached)
    }

    async fn clear(&self, prefix: &str) {
        let store = self.builder(prefix).build().unwrap();
        let mut conn = store.pool().unwrap().get().await.unwrap();
        let keys: Vec<String> = conn.keys(format!("{prefix}:*")).await.unwrap();
        if !keys.is_empty() {
            let _: () = conn.del(keys).await.unwrap();
        }
    }

    async fn unreachable_store(&self) -> DynStore {
        let store = RedisStore::builder()
            .url(format!("redis://127.0.0.1:{}", free_port()))
            .connect_timeout(Duration::from_millis(500))
            .request_timeout(Duration::from_millis(500))
            .build()
            .unwrap();
        maybe_cached(store, self.cached)
    }

    /// Connect and request timeout: a call may spend both.
    fn unreachable_budget(&self) -> Duration {
        Duration::from_millis(500 + 500)
    }
}

async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
async fn conformance() {
    let redis = Redis::start();
    testing::run(&RedisFactory::new(&redis)).await;
}

#[tokio::test]
async fn conformance_behind_the_cache() {
    let redis = Redis::start();
    testing::run(&RedisFactory {
        cached: true,
        ..RedisFactory::new(&redis)
    })
    .await;
}

#[tokio::test]
async fn conformance_with_one_connection_on_another_database() {
    let redis = Redis::start();
    let url = redis.url_with_db(5);
    testing::run(&RedisFactory {
        url,
        pool_size: Some(1),
        ..Default::default()
    })
    .await;
}

#[tokio::test]
async fn conformance_over_resp3() {
    // RESP3 replies a hash as a map, not as a flat array of fields and values.
    let redis = Redis::start();
    let mut url = url::Url::parse(redis.url()).unwrap();
    url.query_pairs_mut().append_pair("protocol", "resp3");
    testing::run(&RedisFactory {
        url: url.to_string(),
        ..Default::default()
    })
    .await;
}

#[tokio::test]
async fn conformance_over_tls_with_a_private_ca() {
    let redis = Redis::start_tls();
    let ca_pem = Some(redis.ca_pem().to_owned());
    testing::run(&RedisFactory {
        ca_pem,
        ..RedisFactory::new(&redis)
    })
    .await;
}

#[tokio::test]
async fn tls_without_the_ca_fails_cleanly() {
    let redis = Redis::start_tls();
    let store = RedisStore::builder()
        .url(redis.url())
        .connect_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let err = store.get(&Kind::FEATURES, "f").await.unwrap_err();
    assert!(err.is_outage(), "{err}");
    assert!(!store.is_available().await);
    // With the CA it works.
    let store = RedisStore::builder()
        .url(redis.url())
        .tls_root_certificate_pem(redis.ca_pem())
        .build()
        .unwrap();
    assert!(store.is_available().await);
}

#[tokio::test]
async fn writes_exactly_the_schema_other_sdks_read() {
    let redis = Redis::start();
    // The default prefix, so a database of its own: on a shared server nothing else is there.
    let url = redis.url_with_db(6);
    let mut conn = raw(&url).await;
    let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await.unwrap();
    let store = RedisStore::builder().url(&url).build().unwrap();
    let flag = flag("my-flag", 3);
    let segment =
        Item::from_json("beta", r#"{"key":"beta","version":2,"included":["a"]}"#).unwrap();
    store
        .init(&[
            Collection::new(Kind::SEGMENTS, vec![segment.clone()]),
            Collection::new(Kind::FEATURES, vec![flag.clone()]),
        ])
        .await
        .unwrap();
    store
        .upsert(&Kind::FEATURES, Item::tombstone("gone", 9))
        .await
        .unwrap();

    let mut keys: Vec<String> = conn.keys("*").await.unwrap();
    keys.sort();
    assert_eq!(
        keys,
        [
            "launchdarkly:$inited",
            "launchdarkly:features",
            "launchdarkly:segments"
        ]
    );
    let kind: String = redis::cmd("TYPE")
        .arg("launchdarkly:features")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(kind, "hash");
    let stored: String = conn.hget("launchdarkly:features", "my-flag").await.unwrap();
    assert_eq!(stored.as_bytes(), flag.json().as_bytes(), "byte for byte");
    let stored: String = conn.hget("launchdarkly:segments", "beta").await.unwrap();
    assert_eq!(stored, segment.json());
    let tombstone: String = conn.hget("launchdarkly:features", "gone").await.unwrap();
    assert_eq!(
        tombstone,
        r#"{"key":"$deleted","version":9,"deleted":true}"#
    );
}

#[tokio::test]
async fn reads_every_sdks_tombstone_shape_written_raw() {
    let redis = Redis::start();
    // The default prefix, so a database of its own.
    let url = redis.url_with_db(8);
    let mut conn = raw(&url).await;
    let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await.unwrap();
    let shapes = SDK_TOMBSTONES;
    for (key, json, _) in shapes {
        let _: () = conn.hset("launchdarkly:features", key, json).await.unwrap();
    }
    let _: () = conn.set("launchdarkly:$inited", "").await.unwrap();
    let store = RedisStore::builder().url(&url).build().unwrap();
    assert!(store.is_initialized().await.unwrap());
    for (key, json, version) in shapes {
        let item = store.get(&Kind::FEATURES, key).await.unwrap().unwrap();
        assert!(item.is_deleted(), "{key}");
        assert_eq!(item.version(), version, "{key}");
        assert_eq!(item.json(), json, "{key}: kept as stored");
        // An older update must not resurrect it.
        assert!(
            !store
                .upsert(&Kind::FEATURES, flag(key, version - 1))
                .await
                .unwrap()
        );
    }
    assert_eq!(store.get_all(&Kind::FEATURES).await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_corrupt_value_from_another_writer_is_reported_not_hidden() {
    let redis = Redis::start();
    let store = RedisStore::builder()
        .url(redis.url())
        .prefix("corrupt")
        .build()
        .unwrap();
    store
        .init(&[Collection::new(Kind::FEATURES, vec![flag("good", 1)])])
        .await
        .unwrap();
    let mut conn = raw(redis.url()).await;
    let _: () = conn
        .hset("corrupt:features", "bad", "{truncated")
        .await
        .unwrap();
    let _: () = conn
        .hset("corrupt:features", "noversion", r#"{"key":"noversion"}"#)
        .await
        .unwrap();
    // Not UTF-8 (a Latin-1 "é"): unreadable like any other bad JSON, not a failed read.
    let _: () = conn
        .hset(
            "corrupt:features",
            "latin1",
            &b"{\"version\":1,\"name\":\"caf\xe9\"}"[..],
        )
        .await
        .unwrap();

    let err = store.get(&Kind::FEATURES, "bad").await.unwrap_err();
    assert!(matches!(err, Error::InvalidItem { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "redis: get of features/bad: the stored item is unreadable"
    );
    assert_eq!(err.key(), Some("bad"));
    let err = store.get(&Kind::FEATURES, "latin1").await.unwrap_err();
    assert!(matches!(err, Error::InvalidItem { .. }), "{err:?}");

    let all = store.get_all(&Kind::FEATURES).await.unwrap();
    assert_eq!(all.iter().map(Item::key).collect::<Vec<_>>(), ["good"]);
    assert_eq!(store.skipped_items(), 3);

    let checked = store.get_all_checked(&Kind::FEATURES).await.unwrap();
    let mut unreadable: Vec<_> = checked.unreadable.iter().map(|u| u.key.as_str()).collect();
    unreadable.sort();
    assert_eq!(unreadable, ["bad", "latin1", "noversion"]);

    // As in the Go SDK, a corrupt value counts as version 0: a versioned upsert repairs it.
    assert!(store.upsert(&Kind::FEATURES, flag("bad", 5)).await.unwrap());
    assert_eq!(
        store.get(&Kind::FEATURES, "bad").await.unwrap(),
        Some(flag("bad", 5))
    );
}

#[tokio::test]
async fn empty_prefix_means_the_default_and_prefixes_do_not_leak() {
    let redis = Redis::start();
    // The default prefix, so a database of its own.
    let url = redis.url_with_db(7);
    let mut conn = raw(&url).await;
    let _: () = redis::cmd("FLUSHDB").query_async(&mut conn).await.unwrap();
    let store = RedisStore::builder().url(&url).prefix("").build().unwrap();
    assert_eq!(store.prefix(), "launchdarkly");
    store.init(&[]).await.unwrap();
    let ld2 = RedisStore::builder()
        .url(&url)
        .prefix("launchdarkly2")
        .build()
        .unwrap();
    assert!(!ld2.is_initialized().await.unwrap());
    assert!(
        conn.exists::<_, bool>("launchdarkly:$inited")
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn database_index_in_the_url_is_used() {
    let redis = Redis::start();
    let mut db3 = raw(&redis.url_with_db(3)).await;
    let _: () = db3.del("dbtest:features").await.unwrap();
    let store = RedisStore::builder()
        .url(redis.url_with_db(3))
        .prefix("dbtest")
        .build()
        .unwrap();
    store
        .init(&[Collection::new(Kind::FEATURES, vec![flag("f", 1)])])
        .await
        .unwrap();
    assert!(db3.exists::<_, bool>("dbtest:features").await.unwrap());
    let mut db4 = raw(&redis.url_with_db(4)).await;
    assert!(!db4.exists::<_, bool>("dbtest:features").await.unwrap());
}

const APP_PASSWORD: &str = "app-S3cr3t-pw";

fn acl_redis() -> Redis {
    Redis::start_with_acl(&[
        "user default off",
        &format!("user app on >{APP_PASSWORD} ~* &* +@all"),
        "user narrow on >narrow-pw ~other:* +@all",
    ])
}

fn with_credentials(url: &str, user: &str, password: &str) -> String {
    url.replacen("redis://", &format!("redis://{user}:{password}@"), 1)
}

#[tokio::test]
async fn acl_user_works_and_conformance_passes() {
    let redis = acl_redis();
    let url = with_credentials(redis.url(), "app", APP_PASSWORD);
    testing::run(&RedisFactory {
        url,
        ..Default::default()
    })
    .await;
    // Credentials given to the builder instead of the URL work the same.
    let store = RedisStore::builder()
        .url(redis.url())
        .username("app")
        .password(APP_PASSWORD)
        .build()
        .unwrap();
    assert!(store.is_available().await);
}

#[tokio::test]
async fn refused_credentials_are_permission_errors_that_never_show_the_password() {
    let redis = acl_redis();
    let wrong = "Wr0ng-Pa55word";
    let store = RedisStore::builder()
        .url(with_credentials(redis.url(), "app", wrong))
        .build()
        .unwrap();
    let err = store.get(&Kind::FEATURES, "f").await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    let shown = format!(
        "{err} {err:?} {store} {store:?} {:?}",
        std::error::Error::source(&err)
    );
    assert!(!shown.contains(wrong), "password leaked: {shown}");

    // A user without access to the prefix's keys: refused by Redis, reported as such.
    let narrow = RedisStore::builder()
        .url(with_credentials(redis.url(), "narrow", "narrow-pw"))
        .build()
        .unwrap();
    let err = narrow.init(&[]).await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    assert!(!narrow.is_initialized().await.is_ok_and(|i| i));
}

/// A `MakeWriter` that keeps everything logged, to search it for secrets.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn logs_never_show_the_password() {
    let redis = acl_redis();
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let wrong = "L0gged-Pa55word";
    let store = RedisStore::builder()
        .url(with_credentials(redis.url(), "app", wrong))
        .build()
        .unwrap();
    let cached = CachingStore::builder(store).build().unwrap();
    assert!(cached.get(&Kind::FEATURES, "f").await.is_err());
    assert!(cached.get_all(&Kind::FEATURES).await.is_err());
    let good = RedisStore::builder()
        .url(with_credentials(redis.url(), "app", APP_PASSWORD))
        .build()
        .unwrap();
    good.init(&[]).await.unwrap();
    let mut conn = raw(&with_credentials(redis.url(), "app", APP_PASSWORD)).await;
    let _: () = conn
        .hset("launchdarkly:features", "broken", "nope")
        .await
        .unwrap();
    good.get_all(&Kind::FEATURES).await.unwrap();

    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.contains("store unavailable"),
        "the outage was logged: {text}"
    );
    assert!(text.contains("redis://app:***@127.0.0.1"), "{text}");
    assert!(
        text.contains("broken"),
        "the skipped item was logged: {text}"
    );
    assert!(
        !text.contains(wrong) && !text.contains(APP_PASSWORD),
        "password in logs: {text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_writers_share_a_pool_of_four_without_deadlock() {
    let redis = Redis::start();
    let store = Arc::new(
        RedisStore::builder()
            .url(redis.url())
            .prefix("pool")
            .pool_size(4)
            .build()
            .unwrap(),
    );
    store.init(&[]).await.unwrap();
    let writers: Vec<_> = (1..=64u64)
        .map(|v| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                // Half race on one key, half write their own.
                let key = if v % 2 == 0 {
                    "shared".to_owned()
                } else {
                    format!("own-{v}")
                };
                store.upsert(&Kind::FEATURES, flag(&key, v)).await
            })
        })
        .collect();
    let all = tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(writers))
        .await
        .expect("writers deadlocked");
    for result in all {
        match result.unwrap() {
            Ok(_) | Err(Error::Contention { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(store.get_all(&Kind::FEATURES).await.unwrap().len(), 33);
    let shared = store.get(&Kind::FEATURES, "shared").await.unwrap().unwrap();
    assert!(shared.version() % 2 == 0 && shared.version() >= 2);
    assert!(
        store
            .upsert(&Kind::FEATURES, flag("shared", 100))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn a_server_that_goes_away_errors_within_the_deadline() {
    let mut redis = Redis::start_local(&[]);
    let store = RedisStore::builder()
        .url(redis.url())
        .connect_timeout(Duration::from_millis(500))
        .request_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    store.init(&[]).await.unwrap();
    redis.stop();
    let started = std::time::Instant::now();
    assert!(store.get(&Kind::FEATURES, "f").await.is_err());
    assert!(!store.is_available().await);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn unix_socket_urls_work() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("redis.sock");
    let _redis = Redis::start_local(&["--unixsocket", socket.to_str().unwrap()]);
    let store = RedisStore::builder()
        .url(format!("redis+unix://{}", socket.display()))
        .prefix("unix")
        .build()
        .unwrap();
    store
        .init(&[Collection::new(Kind::FEATURES, vec![flag("f", 1)])])
        .await
        .unwrap();
    assert_eq!(
        store.get(&Kind::FEATURES, "f").await.unwrap(),
        Some(flag("f", 1))
    );
}

#[tokio::test]
async fn a_caller_supplied_pool_is_used_as_it_is() {
    use flagstore_redis::deadpool_redis::{Config, Runtime};
    let redis = Redis::start();
    let pool = Config::from_url(redis.url())
        .create_pool(Some(Runtime::Tokio1))
        .unwrap();
    let store = RedisStore::builder()
        .pool(pool)
        .prefix("byo")
        .build()
        .unwrap();
    assert_eq!(
        store.to_string(),
        r#"redis store on a caller-supplied pool (prefix "byo")"#
    );
    store
        .init(&[Collection::new(Kind::FEATURES, vec![flag("f", 2)])])
        .await
        .unwrap();
    let mut conn = raw(redis.url()).await;
    assert!(conn.exists::<_, bool>("byo:features").await.unwrap());
    assert_eq!(
        store.pool().unwrap().status().max_size,
        Config::from_url(redis.url()).get_pool_config().max_size
    );
}

/// An init goes in pieces of about 1 MB, so a connection that wrote megabytes goes back to the
/// pool; a connection keeps its write buffer's capacity for life, so one that had to send a
/// single item of more is closed rather than pooled, and the next write simply opens another.
#[tokio::test]
async fn an_init_goes_in_pieces_and_only_an_outsized_one_closes_its_connection() {
    let redis = Redis::start();
    let prefix = format!("large_init_{}", testing::unique_run_id());
    let store = RedisStore::builder()
        .url(redis.url())
        .prefix(&prefix)
        .pool_size(1)
        .build()
        .unwrap();
    let open = || store.pool().unwrap().status().size;

    store
        .init(&[Collection::new(Kind::FEATURES, vec![flag("small", 1)])])
        .await
        .unwrap();
    assert_eq!(open(), 1, "a small init's connection goes back to the pool");

    let padding = "x".repeat(2_000);
    let large: Vec<Item> = (0..1_000)
        .map(|i| {
            let json = format!(r#"{{"key":"f{i}","version":1,"description":"{padding}"}}"#);
            Item::from_json(format!("f{i}"), json).unwrap()
        })
        .collect();
    store
        .init(&[Collection::new(Kind::FEATURES, large.clone())])
        .await
        .unwrap();
    assert_eq!(open(), 1, "a 2 MB init's connection goes back to the pool");
    let mut held = store.get_all(&Kind::FEATURES).await.unwrap();
    held.sort_by(|a, b| a.key().cmp(b.key()));
    let mut written = large;
    written.sort_by(|a, b| a.key().cmp(b.key()));
    assert!(held == written, "every piece of the init was written");

    let outsized = format!(
        r#"{{"key":"huge","version":1,"x":"{}"}}"#,
        "y".repeat(1_500_000)
    );
    let mut items: Vec<Item> = written.clone();
    items.push(Item::from_json("huge", outsized).unwrap());
    store
        .init(&[Collection::new(Kind::FEATURES, items)])
        .await
        .unwrap();
    assert_eq!(
        open(),
        0,
        "an init that sent a 1.5 MB piece closes its connection"
    );

    assert!(store.upsert(&Kind::FEATURES, flag("f7", 2)).await.unwrap());
    assert_eq!(
        store
            .get(&Kind::FEATURES, "f7")
            .await
            .unwrap()
            .unwrap()
            .version(),
        2
    );
    assert_eq!(store.get_all(&Kind::FEATURES).await.unwrap().len(), 1_001);
    assert_eq!(open(), 1);
}

/// An init sent in pieces is still one transaction: a reader polling while it is written sees
/// the old data set or the new one, never an empty or half-written hash.
#[tokio::test]
async fn readers_see_an_init_in_pieces_whole_or_not_at_all() {
    let redis = Redis::start();
    let prefix = format!("pieces_{}", testing::unique_run_id());
    let store = RedisStore::builder()
        .url(redis.url())
        .prefix(&prefix)
        .build()
        .unwrap();
    let old: Vec<Item> = (0..10).map(|i| flag(&format!("old{i}"), 1)).collect();
    store
        .init(&[Collection::new(Kind::FEATURES, old)])
        .await
        .unwrap();
    let padding = "x".repeat(1_000);
    let new: Vec<Item> = (0..6_000)
        .map(|i| {
            let json = format!(r#"{{"key":"n{i}","version":1,"description":"{padding}"}}"#);
            Item::from_json(format!("n{i}"), json).unwrap()
        })
        .collect();
    let hash = store.hash_key(&Kind::FEATURES);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (mut conn, done, hash) = (raw(redis.url()).await, done.clone(), hash.clone());
        tokio::spawn(async move {
            let mut seen = std::collections::BTreeSet::new();
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let len: usize = conn.hlen(&hash).await.unwrap();
                seen.insert(len);
            }
            seen
        })
    };
    store
        .init(&[Collection::new(Kind::FEATURES, new)])
        .await
        .unwrap();
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let seen = reader.await.unwrap();
    assert!(
        seen.iter().all(|len| [10, 6_000].contains(len)),
        "a reader saw {seen:?} items"
    );
    assert!(
        seen.contains(&10),
        "the reader ran while the init was written"
    );
}

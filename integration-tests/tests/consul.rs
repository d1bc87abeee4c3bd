//! The Consul store against a real Consul agent: the conformance suite, transactions beyond 64
//! operations and one request body, prefix isolation, ACLs and the value size limit.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flagstore::testing::{self, SDK_TOMBSTONES, StoreFactory, UpsertHook, flag, unique_run_id};
use flagstore::{Collection, DynStore, Error, Item, Kind, PersistentDataStore};
use flagstore_consul::{ConsulStore, ConsulStoreBuilder, MAX_TXN_BODY, MAX_VALUE_SIZE};
use flagstore_integration_tests::consul::{Consul, RawConsul};
use flagstore_integration_tests::{free_port, maybe_cached};

#[derive(Default)]
struct ConsulFactory {
    address: String,
    token: Option<String>,
    datacenter: Option<String>,
    ca_pem: Option<String>,
    /// Where `clear` sends its raw requests.
    raw_address: String,
    cached: bool,
}

impl ConsulFactory {
    fn new(consul: &Consul) -> Self {
        ConsulFactory {
            address: consul.address().to_owned(),
            raw_address: consul.http_address().to_owned(),
            token: consul.token().map(str::to_owned),
            ..Default::default()
        }
    }

    fn builder(&self, prefix: &str) -> ConsulStoreBuilder {
        let mut b = ConsulStore::builder().url(&self.address).prefix(prefix);
        if let Some(token) = &self.token {
            b = b.token(token);
        }
        if let Some(dc) = &self.datacenter {
            b = b.datacenter(dc);
        }
        if let Some(pem) = &self.ca_pem {
            b = b.tls_root_certificate_pem(pem.as_bytes());
        }
        b
    }
}

#[async_trait]
impl StoreFactory for ConsulFactory {
    async fn store(&self, prefix: &str, hook: Option<UpsertHook>) -> DynStore {
        let mut b = self.builder(prefix);
        if let Some(hook) = hook {
            b = b.before_upsert_write(hook);
        }
        let store = b.build().unwrap();
        maybe_cached(store, self.cached)
    }

    async fn clear(&self, prefix: &str) {
        // Over the agent's plain HTTP port, bypassing the store under test (and its TLS).
        let client = RawConsul::new(&self.raw_address, self.token.as_deref());
        // The trailing slash: clearing "ld" must not touch "ld2".
        client.delete_recursive(&format!("{prefix}/")).await;
    }

    async fn unreachable_store(&self) -> DynStore {
        let store = ConsulStore::builder()
            .url(format!("http://127.0.0.1:{}", free_port()))
            .connect_timeout(Duration::from_millis(500))
            .request_timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        Arc::new(store)
    }

    /// Connect and request timeout: a call may spend both.
    fn unreachable_budget(&self) -> Duration {
        Duration::from_millis(500 + 2000)
    }
}

#[tokio::test]
async fn conformance() {
    let consul = Consul::start();
    testing::run(&ConsulFactory::new(&consul)).await;
}

#[tokio::test]
async fn conformance_behind_the_cache_in_an_explicit_datacenter() {
    let consul = Consul::start();
    testing::run(&ConsulFactory {
        cached: true,
        datacenter: Some("dc1".to_owned()),
        ..ConsulFactory::new(&consul)
    })
    .await;
}

#[tokio::test]
async fn writes_exactly_the_layout_other_sdks_read() {
    // The default prefix, which other tests on a shared agent also use: an agent of its own.
    let consul = Consul::start_local_agent();
    let store = ConsulStore::builder()
        .url(consul.address())
        .build()
        .unwrap();
    let f = flag("my-flag", 4);
    store
        .init(&[Collection::new(Kind::FEATURES, vec![f.clone()])])
        .await
        .unwrap();
    store
        .upsert(&Kind::SEGMENTS, Item::tombstone("gone", 2))
        .await
        .unwrap();
    let client = RawConsul::new(consul.address(), None);
    let mut keys = client.keys("launchdarkly/").await;
    keys.sort();
    assert_eq!(
        keys,
        [
            "launchdarkly/$inited",
            "launchdarkly/features/my-flag",
            "launchdarkly/segments/gone"
        ]
    );
    assert_eq!(
        client.get("launchdarkly/features/my-flag").await.unwrap(),
        f.json(),
        "byte for byte"
    );
    assert_eq!(client.get("launchdarkly/$inited").await.unwrap(), "");
    assert_eq!(
        client.get("launchdarkly/segments/gone").await.unwrap(),
        r#"{"key":"$deleted","version":2,"deleted":true}"#
    );
}

#[tokio::test]
async fn reads_every_sdks_tombstone_shape_written_raw() {
    let consul = Consul::start();
    let client = RawConsul::new(consul.address(), None);
    // A prefix of its own: on a shared agent other tests write under the default one.
    let prefix = format!("tombstones_{}", unique_run_id());
    let shapes = SDK_TOMBSTONES;
    for (key, json, _) in shapes {
        client.put(&format!("{prefix}/features/{key}"), json).await;
    }
    let store = ConsulStore::builder()
        .url(consul.address())
        .prefix(&prefix)
        .build()
        .unwrap();
    for (key, json, version) in shapes {
        let item = store.get(&Kind::FEATURES, key).await.unwrap().unwrap();
        assert!(item.is_deleted() && item.version() == version, "{key}");
        assert_eq!(item.json(), json);
        assert!(
            !store
                .upsert(&Kind::FEATURES, flag(key, version - 1))
                .await
                .unwrap()
        );
    }
    assert_eq!(store.get_all(&Kind::FEATURES).await.unwrap().len(), 3);
}

fn padded(key: &str, bytes: usize) -> Item {
    let base = format!(r#"{{"key":"{key}","version":1,"pad":""}}"#);
    let json = format!(
        r#"{{"key":"{key}","version":1,"pad":"{}"}}"#,
        "p".repeat(bytes - base.len())
    );
    Item::from_json(key, json).unwrap()
}

#[tokio::test]
async fn init_beyond_one_transaction_in_operations_and_bytes() {
    let consul = Consul::start();
    let run = unique_run_id();
    let store = ConsulStore::builder()
        .url(consul.address())
        .prefix(format!("big_{run}"))
        .build()
        .unwrap();
    // Stale copies that the init must delete, among them one of the oversized item.
    store
        .init(&[Collection::new(
            Kind::FEATURES,
            vec![flag("stale", 1), flag("too-big", 1)],
        )])
        .await
        .unwrap();
    // 150 items of 10 KB: 3 transactions by count, more by size (base64 inflates to ~13.3 KB).
    let mut flags: Vec<Item> = (0..150)
        .map(|i| padded(&format!("f{i:03}"), 10_000))
        .collect();
    let total: usize = flags.iter().map(Item::len).sum();
    assert!(
        total * 4 / 3 > 3 * MAX_TXN_BODY,
        "more bytes than three transactions hold"
    );
    // Within Consul's value limit but too big for any transaction body: a plain PUT.
    flags.push(padded("large", 450_000));
    // Over Consul's value limit: skipped, and its stale copy deleted.
    flags.push(padded("too-big", MAX_VALUE_SIZE + 1));
    store
        .init(&[Collection::new(Kind::FEATURES, flags.clone())])
        .await
        .unwrap();

    let mut stored = store.get_all(&Kind::FEATURES).await.unwrap();
    stored.sort_by(|a, b| a.key().cmp(b.key()));
    let mut expected: Vec<Item> = flags[..151].to_vec();
    expected.sort_by(|a, b| a.key().cmp(b.key()));
    assert_eq!(stored, expected);
    assert_eq!(store.get(&Kind::FEATURES, "too-big").await.unwrap(), None);
    assert_eq!(store.get(&Kind::FEATURES, "stale").await.unwrap(), None);
    assert!(store.is_initialized().await.unwrap());
}

#[tokio::test]
async fn values_at_the_limit_are_written_and_over_it_refused() {
    let consul = Consul::start();
    let prefix = format!("limit_{}", unique_run_id());
    let store = ConsulStore::builder()
        .url(consul.address())
        .prefix(&prefix)
        .build()
        .unwrap();
    let at_limit = padded("at-limit", MAX_VALUE_SIZE);
    assert!(
        store
            .upsert(&Kind::FEATURES, at_limit.clone())
            .await
            .unwrap()
    );
    assert_eq!(
        store.get(&Kind::FEATURES, "at-limit").await.unwrap(),
        Some(at_limit)
    );
    let over = padded("over", MAX_VALUE_SIZE + 1);
    let err = store.upsert(&Kind::FEATURES, over).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::ItemTooLarge {
                size: 524_289,
                limit: 524_288,
                ..
            }
        ),
        "{err:?}"
    );
    // Consul itself enforces the limit: the refusal spares a write that would fail.
    let client = RawConsul::new(consul.address(), None);
    let status = client
        .put_bytes(
            &format!("{prefix}/features/raw"),
            vec![b'x'; MAX_VALUE_SIZE + 1],
        )
        .await;
    assert_eq!(status, 413, "Consul refuses the raw value too");
}

#[tokio::test]
async fn prefix_ld_never_touches_ld2() {
    let consul = Consul::start();
    let ld = ConsulStore::builder()
        .url(consul.address())
        .prefix("ld")
        .build()
        .unwrap();
    let ld2 = ConsulStore::builder()
        .url(consul.address())
        .prefix("ld2")
        .build()
        .unwrap();
    ld2.init(&[Collection::new(Kind::FEATURES, vec![flag("keep", 1)])])
        .await
        .unwrap();
    ld.init(&[Collection::new(Kind::FEATURES, vec![flag("mine", 1)])])
        .await
        .unwrap();
    ld.init(&[]).await.unwrap();
    assert_eq!(
        ld2.get(&Kind::FEATURES, "keep").await.unwrap(),
        Some(flag("keep", 1))
    );
    assert!(ld2.is_initialized().await.unwrap());
    assert_eq!(ld.get_all(&Kind::FEATURES).await.unwrap(), vec![]);
}

#[tokio::test]
async fn unreadable_values_are_reported_not_hidden() {
    let consul = Consul::start();
    let run = unique_run_id();
    let client = RawConsul::new(consul.address(), None);
    let store = ConsulStore::builder()
        .url(consul.address())
        .prefix(format!("corrupt_{run}"))
        .build()
        .unwrap();
    store
        .init(&[Collection::new(Kind::FEATURES, vec![flag("good", 1)])])
        .await
        .unwrap();
    client
        .put(&format!("corrupt_{run}/features/bad"), "{oops")
        .await;
    let err = store.get(&Kind::FEATURES, "bad").await.unwrap_err();
    assert!(matches!(err, Error::InvalidItem { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        "consul: get of features/bad: the stored item is unreadable"
    );
    let all = store.get_all(&Kind::FEATURES).await.unwrap();
    assert_eq!(all.iter().map(Item::key).collect::<Vec<_>>(), ["good"]);
    assert_eq!(store.skipped_items(), 1);
    let checked = store.get_all_checked(&Kind::FEATURES).await.unwrap();
    assert_eq!(checked.unreadable.len(), 1);
    assert_eq!(checked.unreadable[0].key, "bad");

    // As in the Go SDK, a corrupt value counts as version 0: a versioned upsert repairs it.
    assert!(store.upsert(&Kind::FEATURES, flag("bad", 5)).await.unwrap());
    assert_eq!(
        store.get(&Kind::FEATURES, "bad").await.unwrap(),
        Some(flag("bad", 5))
    );
}

const MASTER: &str = "b7e1c4f0-flagstore-master-token";

#[tokio::test]
async fn acl_default_deny_works_with_a_token() {
    let consul = Consul::start_with_acl(MASTER);
    testing::run(&ConsulFactory::new(&consul)).await;
}

#[tokio::test]
async fn acl_default_deny_refuses_without_a_valid_token() {
    let consul = Consul::start_with_acl(MASTER);
    let anonymous = ConsulStore::builder()
        .url(consul.address())
        .build()
        .unwrap();
    for err in [
        anonymous.get(&Kind::FEATURES, "f").await.unwrap_err(),
        anonymous.init(&[]).await.unwrap_err(),
        anonymous
            .upsert(&Kind::FEATURES, flag("f", 1))
            .await
            .unwrap_err(),
    ] {
        assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
        assert!(err.to_string().contains("permission denied"), "{err}");
        // The cause is typed: a caller matches the status without parsing the message.
        let http = std::error::Error::source(&err)
            .and_then(|cause| cause.downcast_ref::<flagstore_consul::ConsulHttpError>())
            .unwrap_or_else(|| panic!("no ConsulHttpError behind {err:?}"));
        // ACLs refuse a transaction's operations inside it: the init's answer is 409.
        let status = if err.operation() == Some(flagstore::error::Operation::Init) {
            409
        } else {
            403
        };
        assert_eq!(http.status(), status, "{http}");
        assert!(http.body().contains("Permission denied"), "{http}");
    }
    assert!(!anonymous.is_available().await);

    let wrong = "00000000-0000-0000-0000-000000000000";
    let bogus = ConsulStore::builder()
        .url(consul.address())
        .token(wrong)
        .build()
        .unwrap();
    let err = bogus.get_all(&Kind::FEATURES).await.unwrap_err();
    assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    let shown = format!(
        "{err} {err:?} {bogus} {bogus:?} {:?}",
        std::error::Error::source(&err)
    );
    assert!(
        !shown.contains(wrong) && !shown.contains(MASTER),
        "token leaked: {shown}"
    );

    let admin = ConsulStore::builder()
        .url(consul.address())
        .token(MASTER)
        .build()
        .unwrap();
    admin.init(&[]).await.unwrap();
    assert!(admin.is_initialized().await.unwrap());
}

/// A store with a new token whose policy has these rules, and the token.
async fn reader_with(
    consul: &Consul,
    raw: &RawConsul,
    name: &str,
    rules: &str,
) -> (ConsulStore, String) {
    let token = raw.token_with_rules(name, rules).await;
    let store = ConsulStore::builder()
        .url(consul.address())
        .token(&token)
        .build()
        .unwrap();
    (store, token)
}

#[tokio::test]
async fn a_token_that_may_not_read_is_refused_not_empty() {
    let consul = Consul::start_with_acl(MASTER);
    let admin = ConsulStore::builder()
        .url(consul.address())
        .token(MASTER)
        .build()
        .unwrap();
    admin
        .init(&[Collection::new(Kind::FEATURES, vec![flag("f", 1)])])
        .await
        .unwrap();
    let raw = RawConsul::new(consul.address(), Some(MASTER));
    // Allowed to read another prefix only: Consul filters this store's keys out of a
    // recursive read and answers it with an empty 404.
    let (reader, token) = reader_with(
        &consul,
        &raw,
        "elsewhere",
        r#"key_prefix "elsewhere/" { policy = "read" }"#,
    )
    .await;
    for err in [
        reader.get_all(&Kind::FEATURES).await.unwrap_err(),
        reader.get_all(&Kind::SEGMENTS).await.unwrap_err(),
        reader.get(&Kind::FEATURES, "f").await.unwrap_err(),
        reader.is_initialized().await.unwrap_err(),
    ] {
        assert!(matches!(err, Error::PermissionDenied { .. }), "{err:?}");
    }
    assert!(!format!("{reader:?} {reader}").contains(&token));
    // Allowed to read it: a kind with nothing in it is truly empty.
    let (reader, _) = reader_with(
        &consul,
        &raw,
        "reader",
        r#"key_prefix "launchdarkly/" { policy = "read" }"#,
    )
    .await;
    assert_eq!(
        reader.get_all(&Kind::FEATURES).await.unwrap(),
        vec![flag("f", 1)]
    );
    assert_eq!(reader.get_all(&Kind::SEGMENTS).await.unwrap(), vec![]);
}

/// An HTTP server that is not Consul: every request gets this status and body, without
/// Consul's headers.
async fn not_consul(status: &str, body: &'static str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = format!("http://{}", listener.local_addr().unwrap());
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let response = response.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    });
    address
}

#[tokio::test]
async fn another_http_server_at_the_address_is_an_error_not_an_empty_store() {
    for (status, body) in [
        ("404 Not Found", "404 page not found"),
        ("404 Not Found", ""),
        ("200 OK", "[]"),
    ] {
        let address = not_consul(status, body).await;
        let store = ConsulStore::builder().url(&address).build().unwrap();
        for err in [
            store.get_all(&Kind::FEATURES).await.unwrap_err(),
            store.get(&Kind::FEATURES, "f").await.unwrap_err(),
            store.is_initialized().await.unwrap_err(),
        ] {
            assert!(matches!(err, Error::Database { .. }), "{status}: {err:?}");
            let cause = std::error::Error::source(&err).unwrap().to_string();
            assert!(cause.contains("X-Consul-Index"), "{status}: {cause}");
        }
        assert!(!store.is_available().await);
    }
}

#[tokio::test]
async fn conformance_over_https_with_a_private_ca() {
    let consul = Consul::start_tls();
    assert!(consul.address().starts_with("https://"));
    let ca_pem = Some(consul.ca_pem().to_owned());
    testing::run(&ConsulFactory {
        ca_pem,
        ..ConsulFactory::new(&consul)
    })
    .await;
    // Without the CA the agent's certificate is not trusted: a clean error, not a hang.
    let untrusting = ConsulStore::builder()
        .url(consul.address())
        .build()
        .unwrap();
    let err = untrusting.get(&Kind::FEATURES, "f").await.unwrap_err();
    assert!(err.is_outage(), "{err}");
    assert!(!untrusting.is_available().await);
}

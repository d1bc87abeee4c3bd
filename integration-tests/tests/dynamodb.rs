//! The DynamoDB store against a real emulator (dynalite): the conformance suite with and without
//! a prefix, the table schema other SDKs share, and the 400 KB item limit.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use flagstore::testing::{self, SDK_TOMBSTONES, StoreFactory, UpsertHook, flag, segment};
use flagstore::{Collection, DynStore, Error, Item, Kind, PersistentDataStore};
use flagstore_dynamodb::aws_sdk_dynamodb::Client;
use flagstore_dynamodb::aws_sdk_dynamodb::types::AttributeValue;
use flagstore_dynamodb::{
    DynamoDbError, DynamoDbStore, DynamoDbStoreBuilder, MAX_ITEM_SIZE, create_table, estimated_size,
};
use flagstore_integration_tests::dynamodb::DynamoDb;
use flagstore_integration_tests::{free_port, maybe_cached};

fn builder(endpoint: &str, table: &str) -> DynamoDbStoreBuilder {
    DynamoDbStore::builder(table)
        .url(endpoint)
        .region("us-east-1")
        .static_credentials("test", "test")
}

/// A fresh table on the emulator, and a store on it with `prefix`.
async fn store_on_new_table(db: &DynamoDb, prefix: &str) -> DynamoDbStore {
    let table = format!("t_{}", testing::unique_run_id());
    let store = builder(db.endpoint(), &table)
        .prefix(prefix)
        .build()
        .unwrap();
    create_table(store.client().await, &table).await.unwrap();
    store
}

/// How the suite's prefixes map onto the table.
#[derive(Clone, Copy, PartialEq)]
enum Layout {
    /// One table; each case's prefix is the store's prefix.
    Prefixed,
    /// A table per case; the store has no prefix (the SDKs' default for DynamoDB).
    TablePerCase,
}

struct DynamoFactory {
    endpoint: String,
    table: String,
    layout: Layout,
    cached: bool,
}

impl DynamoFactory {
    async fn new(db: &DynamoDb, layout: Layout, cached: bool) -> Self {
        let table = format!("shared_{}", testing::unique_run_id());
        let factory = DynamoFactory {
            endpoint: db.endpoint().to_owned(),
            table,
            layout,
            cached,
        };
        create_table(&factory.client().await, &factory.table)
            .await
            .unwrap();
        factory
    }

    fn target(&self, prefix: &str) -> (String, String) {
        match self.layout {
            Layout::Prefixed => (self.table.clone(), prefix.to_owned()),
            Layout::TablePerCase => (format!("case_{prefix}"), String::new()),
        }
    }

    async fn client(&self) -> Client {
        builder(&self.endpoint, &self.table)
            .build()
            .unwrap()
            .client()
            .await
            .clone()
    }
}

#[async_trait]
impl StoreFactory for DynamoFactory {
    async fn store(&self, prefix: &str, hook: Option<UpsertHook>) -> DynStore {
        let (table, prefix) = self.target(prefix);
        let mut b = builder(&self.endpoint, &table).prefix(prefix);
        if let Some(hook) = hook {
            b = b.before_upsert_write(hook);
        }
        let store = b.build().unwrap();
        maybe_cached(store, self.cached)
    }

    async fn clear(&self, prefix: &str) {
        let (table, prefix) = self.target(prefix);
        let client = self.client().await;
        // A case's own table is made on first use; deleting tables would race their removal.
        create_table(&client, &table).await.unwrap();
        for record in scan(&client, &table).await {
            let AttributeValue::S(namespace) = &record["namespace"] else {
                panic!("bad record")
            };
            if prefix.is_empty() || namespace.starts_with(&format!("{prefix}:")) {
                let key = HashMap::from([
                    ("namespace".to_owned(), record["namespace"].clone()),
                    ("key".to_owned(), record["key"].clone()),
                ]);
                client
                    .delete_item()
                    .table_name(&table)
                    .set_key(Some(key))
                    .send()
                    .await
                    .unwrap();
            }
        }
    }

    async fn unreachable_store(&self) -> DynStore {
        let endpoint = format!("http://127.0.0.1:{}", free_port());
        let store = builder(&endpoint, "unreachable")
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

async fn scan(client: &Client, table: &str) -> Vec<HashMap<String, AttributeValue>> {
    let mut records = Vec::new();
    let mut start = None;
    loop {
        let page = client
            .scan()
            .table_name(table)
            .consistent_read(true)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        records.extend(page.items().iter().cloned());
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            return records;
        }
    }
}

fn s(record: &HashMap<String, AttributeValue>, name: &str) -> String {
    match record.get(name) {
        Some(AttributeValue::S(v)) => v.clone(),
        Some(AttributeValue::N(v)) => format!("N:{v}"),
        other => format!("{other:?}"),
    }
}

#[tokio::test]
async fn conformance_with_a_prefix() {
    let db = DynamoDb::start();
    testing::run(&DynamoFactory::new(&db, Layout::Prefixed, false).await).await;
}

#[tokio::test]
async fn conformance_without_a_prefix() {
    let db = DynamoDb::start();
    testing::run(&DynamoFactory::new(&db, Layout::TablePerCase, false).await).await;
}

#[tokio::test]
async fn conformance_behind_the_cache() {
    let db = DynamoDb::start();
    testing::run(&DynamoFactory::new(&db, Layout::Prefixed, true).await).await;
}

#[tokio::test]
async fn writes_exactly_the_schema_other_sdks_read() {
    let db = DynamoDb::start();
    for (prefix, features, marker) in [
        ("", "features", "$inited"),
        ("env1", "env1:features", "env1:$inited"),
    ] {
        let store = store_on_new_table(&db, prefix).await;
        let f = flag("my-flag", 7);
        store
            .init(&[Collection::new(Kind::FEATURES, vec![f.clone()])])
            .await
            .unwrap();
        store
            .upsert(&Kind::SEGMENTS, Item::tombstone("gone", 3))
            .await
            .unwrap();
        let mut records = scan(store.client().await, store.table()).await;
        records.sort_by_key(|r| (s(r, "namespace"), s(r, "key")));
        let rows: Vec<Vec<String>> = records
            .iter()
            .map(|r| {
                let mut names: Vec<_> = r.keys().cloned().collect();
                names.sort();
                let mut row = vec![s(r, "namespace"), s(r, "key"), names.join(",")];
                if r.contains_key("version") {
                    row.push(s(r, "version"));
                }
                row
            })
            .collect();
        let segments = features.replace("features", "segments");
        assert_eq!(
            rows,
            vec![
                vec![
                    marker.to_owned(),
                    marker.to_owned(),
                    "key,namespace".to_owned()
                ],
                vec![
                    features.to_owned(),
                    "my-flag".to_owned(),
                    "item,key,namespace,version".to_owned(),
                    "N:7".to_owned()
                ],
                vec![
                    segments,
                    "gone".to_owned(),
                    "item,key,namespace,version".to_owned(),
                    "N:3".to_owned()
                ],
            ],
            "prefix {prefix:?}"
        );
        let stored = records.iter().find(|r| s(r, "key") == "my-flag").unwrap();
        assert_eq!(s(stored, "item"), f.json(), "byte for byte");
    }
}

#[tokio::test]
async fn reads_every_sdks_tombstone_shape_written_raw() {
    let db = DynamoDb::start();
    let store = store_on_new_table(&db, "").await;
    let client = store.client().await;
    let shapes = SDK_TOMBSTONES;
    for (key, json, version) in shapes {
        let record = HashMap::from([
            (
                "namespace".to_owned(),
                AttributeValue::S("features".to_owned()),
            ),
            ("key".to_owned(), AttributeValue::S(key.to_owned())),
            ("version".to_owned(), AttributeValue::N(version.to_string())),
            ("item".to_owned(), AttributeValue::S(json.to_owned())),
        ]);
        client
            .put_item()
            .table_name(store.table())
            .set_item(Some(record))
            .send()
            .await
            .unwrap();
    }
    for (key, json, version) in shapes {
        let item = store.get(&Kind::FEATURES, key).await.unwrap().unwrap();
        assert!(item.is_deleted() && item.version() == version, "{key}");
        assert_eq!(item.json(), json);
        assert!(
            !store
                .upsert(&Kind::FEATURES, flag(key, version - 1))
                .await
                .unwrap(),
            "{key} resurrected"
        );
    }
    assert_eq!(store.get_all(&Kind::FEATURES).await.unwrap().len(), 3);
}

/// A flag with this many targets is well over 400 KB.
fn huge_flag(key: &str, version: u64) -> Item {
    let targets: Vec<String> = (0..40_000).map(|i| format!("\"user-{i:06}\"")).collect();
    let json = format!(
        r#"{{"key":"{key}","version":{version},"on":true,"targets":[{{"variation":0,"values":[{}]}}],"variations":[true,false]}}"#,
        targets.join(",")
    );
    Item::from_json(key, json).unwrap()
}

fn huge_segment(key: &str, version: u64) -> Item {
    let included: Vec<String> = (0..40_000).map(|i| format!("\"user-{i:06}\"")).collect();
    let json = format!(
        r#"{{"key":"{key}","version":{version},"included":[{}]}}"#,
        included.join(",")
    );
    Item::from_json(key, json).unwrap()
}

#[tokio::test]
async fn oversized_items_are_skipped_in_init_and_their_old_copies_deleted() {
    let db = DynamoDb::start();
    let store = store_on_new_table(&db, "").await;
    // Small copies first: after the next init they would be stale.
    store
        .init(&[
            Collection::new(Kind::SEGMENTS, vec![segment("big-seg", 1)]),
            Collection::new(Kind::FEATURES, vec![flag("big", 1), flag("small", 1)]),
        ])
        .await
        .unwrap();
    let (big, big_seg) = (huge_flag("big", 2), huge_segment("big-seg", 2));
    assert!(estimated_size("features", &big) > MAX_ITEM_SIZE);
    store
        .init(&[
            Collection::new(Kind::SEGMENTS, vec![big_seg, segment("ok-seg", 2)]),
            Collection::new(
                Kind::FEATURES,
                vec![flag("small", 2), big, flag("other", 2)],
            ),
        ])
        .await
        .unwrap();
    assert!(store.is_initialized().await.unwrap());
    assert_eq!(
        store.get(&Kind::FEATURES, "big").await.unwrap(),
        None,
        "stale copy deleted"
    );
    assert_eq!(
        store.get(&Kind::SEGMENTS, "big-seg").await.unwrap(),
        None,
        "stale copy deleted"
    );
    assert_eq!(
        store.get(&Kind::FEATURES, "small").await.unwrap(),
        Some(flag("small", 2))
    );
    assert_eq!(
        store.get(&Kind::FEATURES, "other").await.unwrap(),
        Some(flag("other", 2))
    );
    assert_eq!(
        store.get(&Kind::SEGMENTS, "ok-seg").await.unwrap(),
        Some(segment("ok-seg", 2))
    );
}

#[tokio::test]
async fn oversized_upserts_are_typed_errors_that_write_nothing() {
    let db = DynamoDb::start();
    let store = store_on_new_table(&db, "p").await;
    store
        .init(&[Collection::new(Kind::FEATURES, vec![flag("big", 1)])])
        .await
        .unwrap();
    for (kind, item) in [
        (Kind::FEATURES, huge_flag("big", 2)),
        (Kind::SEGMENTS, huge_segment("seg", 1)),
    ] {
        let err = store.upsert(&kind, item.clone()).await.unwrap_err();
        match &err {
            Error::ItemTooLarge {
                size, limit, key, ..
            } => {
                assert_eq!(*limit, 409_600);
                assert_eq!(key, item.key());
                assert_eq!(*size, estimated_size(&store.namespace(&kind), &item));
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().starts_with(&format!(
            "dynamodb: upsert of {kind}/{}: item is ",
            item.key()
        )));
    }
    assert_eq!(
        store.get(&Kind::FEATURES, "big").await.unwrap(),
        Some(flag("big", 1))
    );
    assert_eq!(store.get(&Kind::SEGMENTS, "seg").await.unwrap(), None);
}

/// An item whose estimated size is exactly `size`.
fn item_of_size(namespace: &str, key: &str, size: usize) -> Item {
    let base = Item::from_json(key, r#"{"version":1,"pad":""}"#).unwrap();
    let pad = size - estimated_size(namespace, &base);
    Item::from_json(
        key,
        format!(r#"{{"version":1,"pad":"{}"}}"#, "x".repeat(pad)),
    )
    .unwrap()
}

#[tokio::test]
async fn items_just_under_the_limit_are_written_and_just_over_are_refused() {
    let db = DynamoDb::start();
    let store = store_on_new_table(&db, "").await;
    let at_limit = item_of_size("features", "at-limit", MAX_ITEM_SIZE);
    assert_eq!(estimated_size("features", &at_limit), MAX_ITEM_SIZE);
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

    let over = item_of_size("features", "over", MAX_ITEM_SIZE + 1);
    assert!(matches!(
        store.upsert(&Kind::FEATURES, over.clone()).await,
        Err(Error::ItemTooLarge { .. })
    ));
    store
        .init(&[Collection::new(Kind::FEATURES, vec![over, flag("fine", 1)])])
        .await
        .unwrap();
    assert_eq!(store.get(&Kind::FEATURES, "over").await.unwrap(), None);
    assert_eq!(
        store.get(&Kind::FEATURES, "fine").await.unwrap(),
        Some(flag("fine", 1))
    );

    // The emulator enforces the real limit: a record well over it, sent raw, is rejected. So the
    // refusal above protects a write that would fail, and the estimate errs on the safe side.
    let client = store.client().await;
    let oversized = "y".repeat(MAX_ITEM_SIZE);
    let record = HashMap::from([
        (
            "namespace".to_owned(),
            AttributeValue::S("features".to_owned()),
        ),
        ("key".to_owned(), AttributeValue::S("raw".to_owned())),
        ("item".to_owned(), AttributeValue::S(oversized)),
    ]);
    let raw = client
        .put_item()
        .table_name(store.table())
        .set_item(Some(record))
        .send()
        .await;
    assert!(raw.is_err(), "the emulator accepted an item over 400 KB");
}

#[tokio::test]
async fn init_spans_many_batches_and_query_pages() {
    let db = DynamoDb::start();
    let store = store_on_new_table(&db, "").await;
    // 60 items of ~20 KB: 3 batches of writes and more than one 1 MB query page.
    let flags: Vec<Item> = (0..60)
        .map(|i| item_of_size("features", &format!("f{i:02}"), 20_000))
        .collect();
    store
        .init(&[Collection::new(Kind::FEATURES, flags.clone())])
        .await
        .unwrap();

    let client = store.client().await;
    let first_page = client
        .query()
        .table_name(store.table())
        .key_condition_expression("#n = :n")
        .expression_attribute_names("#n", "namespace")
        .expression_attribute_values(":n", AttributeValue::S("features".to_owned()))
        .send()
        .await
        .unwrap();
    assert!(
        first_page.last_evaluated_key().is_some(),
        "the data must span more than one page"
    );
    assert!(first_page.items().len() < 60);

    let mut all = store.get_all(&Kind::FEATURES).await.unwrap();
    all.sort_by(|a, b| a.key().cmp(b.key()));
    assert_eq!(all, flags);

    store
        .init(&[Collection::new(Kind::FEATURES, flags[..5].to_vec())])
        .await
        .unwrap();
    assert_eq!(store.get_all(&Kind::FEATURES).await.unwrap().len(), 5);
    assert_eq!(
        scan(client, store.table()).await.len(),
        6,
        "5 items and the marker: stale keys deleted"
    );
}

#[tokio::test]
async fn unreadable_records_are_reported_not_hidden() {
    let db = DynamoDb::start();
    let store = store_on_new_table(&db, "").await;
    store
        .init(&[Collection::new(Kind::FEATURES, vec![flag("good", 1)])])
        .await
        .unwrap();
    let client = store.client().await;
    for (key, item) in [("bad-json", Some("{nope")), ("no-item", None)] {
        let mut record = HashMap::from([
            (
                "namespace".to_owned(),
                AttributeValue::S("features".to_owned()),
            ),
            ("key".to_owned(), AttributeValue::S(key.to_owned())),
        ]);
        if let Some(item) = item {
            record.insert("item".to_owned(), AttributeValue::S(item.to_owned()));
        }
        client
            .put_item()
            .table_name(store.table())
            .set_item(Some(record))
            .send()
            .await
            .unwrap();
        let err = store.get(&Kind::FEATURES, key).await.unwrap_err();
        assert!(matches!(err, Error::InvalidItem { .. }), "{err:?}");
        assert_eq!(err.key(), Some(key));
    }
    let all = store.get_all(&Kind::FEATURES).await.unwrap();
    assert_eq!(all.iter().map(Item::key).collect::<Vec<_>>(), ["good"]);
    assert_eq!(store.skipped_items(), 2);
    let checked = store.get_all_checked(&Kind::FEATURES).await.unwrap();
    let mut unreadable: Vec<_> = checked.unreadable.iter().map(|u| u.key.as_str()).collect();
    unreadable.sort();
    assert_eq!(unreadable, ["bad-json", "no-item"]);
}

#[tokio::test]
async fn the_version_attribute_is_read_and_a_broken_one_is_repaired_by_an_upsert() {
    let db = DynamoDb::start();
    let store = store_on_new_table(&db, "").await;
    let client = store.client().await;
    let put = |key: &str, version: Option<AttributeValue>| {
        let mut record = HashMap::from([
            (
                "namespace".to_owned(),
                AttributeValue::S("features".to_owned()),
            ),
            ("key".to_owned(), AttributeValue::S(key.to_owned())),
            (
                "item".to_owned(),
                AttributeValue::S(format!(r#"{{"key":"{key}","version":5}}"#)),
            ),
        ]);
        if let Some(version) = version {
            record.insert("version".to_owned(), version);
        }
        client
            .put_item()
            .table_name(store.table())
            .set_item(Some(record))
            .send()
    };
    put("differs", Some(AttributeValue::N("3".into())))
        .await
        .unwrap();
    put("missing", None).await.unwrap();
    put("mistyped", Some(AttributeValue::S("5".into())))
        .await
        .unwrap();

    // The attribute is what the conditional write compares, so it is the version readers see.
    let differs = store
        .get(&Kind::FEATURES, "differs")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(differs.version(), 3);
    let all = store.get_all(&Kind::FEATURES).await.unwrap();
    assert_eq!(
        all.iter().find(|i| i.key() == "differs").unwrap().version(),
        3
    );
    assert!(
        !store
            .upsert(&Kind::FEATURES, flag("differs", 3))
            .await
            .unwrap()
    );
    assert!(
        store
            .upsert(&Kind::FEATURES, flag("differs", 4))
            .await
            .unwrap()
    );

    // Without a usable attribute the JSON's version is shown, and an upsert can repair the
    // record (before, it was refused forever).
    for key in ["missing", "mistyped"] {
        assert_eq!(
            store
                .get(&Kind::FEATURES, key)
                .await
                .unwrap()
                .unwrap()
                .version(),
            5
        );
        assert!(
            store.upsert(&Kind::FEATURES, flag(key, 6)).await.unwrap(),
            "{key}"
        );
        assert_eq!(
            store.get(&Kind::FEATURES, key).await.unwrap(),
            Some(flag(key, 6))
        );
        assert!(
            !store.upsert(&Kind::FEATURES, flag(key, 6)).await.unwrap(),
            "{key}"
        );
    }
}

#[tokio::test]
async fn a_missing_table_is_a_clear_error() {
    let db = DynamoDb::start();
    let store = builder(db.endpoint(), "no-such-table").build().unwrap();
    let err = store.get(&Kind::FEATURES, "f").await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("dynamodb: get of features/f failed"),
        "{err}"
    );
    let cause = std::error::Error::source(&err).unwrap().to_string();
    assert!(
        cause.contains(r#"table "no-such-table" does not exist"#),
        "{cause}"
    );
    // The AWS SDK's own error is kept, for callers that match on it.
    let sdk = std::error::Error::source(&err)
        .and_then(|s| s.downcast_ref::<DynamoDbError>())
        .expect("the cause is a DynamoDbError");
    assert_eq!(sdk.code(), Some("ResourceNotFoundException"));
    assert!(matches!(
        sdk.sdk_error(),
        flagstore_dynamodb::aws_sdk_dynamodb::Error::ResourceNotFoundException(_)
    ));
    assert!(!store.is_available().await);
}

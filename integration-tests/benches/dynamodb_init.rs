//! DynamoDB `init` on dynalite, beside two raw writers and the LaunchDarkly Python SDK's own
//! store, in the same run:
//!
//! ```sh
//! cargo bench -p flagstore-integration-tests --bench dynamodb_init
//! ```
//!
//! | function | what it writes |
//! |---|---|
//! | `flagstore` | `DynamoDbStore::init`: the existing-keys query, the items in dependency stages with up to 8 BatchWriteItem calls in flight, the marker |
//! | `raw, 8 in flight` | the same records with bare BatchWriteItem calls, 8 at a time, no query, no retry logic: the floor for this emulator |
//! | `raw, one at a time` | the same, one call after another (what flagstore did before) |
//! | `python sdk` | the Python SDK's `DynamoDBFeatureStore.init` of the same data, timed inside Python (interpreter start-up excluded) |

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use flagstore::{Collection, Item, Kind, PersistentDataStore};
use flagstore_dynamodb::aws_sdk_dynamodb::Client;
use flagstore_dynamodb::aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use flagstore_dynamodb::{DynamoDbStore, create_table};
use flagstore_integration_tests::dynamodb::DynamoDb;
use flagstore_integration_tests::python::ld_compat;
use futures::StreamExt;

/// A flag of about 1.3 KB, as in the other benches.
fn flag(i: usize) -> Item {
    let key = format!("flag-{i:05}");
    let json = format!(
        r#"{{"key":"{key}","version":3,"on":true,"salt":"{key}-salt","targets":[{{"variation":0,"values":["user-1","user-2","user-3","user-4","user-5"]}}],"rules":[{{"id":"r1","variation":0,"clauses":[{{"attribute":"email","op":"endsWith","values":["@example.com"],"negate":false}}]}},{{"id":"r2","rollout":{{"variations":[{{"variation":0,"weight":25000}},{{"variation":1,"weight":75000}}]}},"clauses":[{{"attribute":"country","op":"in","values":["de","fr","nl","se","no"],"negate":false}}]}}],"fallthrough":{{"variation":0}},"offVariation":1,"prerequisites":[],"variations":[true,false],"description":"A flag of realistic size for benchmarks, with some text so that it weighs about what production flags weigh."}}"#
    );
    Item::from_json(key, json).unwrap()
}

fn record(namespace: &str, item: &Item) -> WriteRequest {
    let attributes = HashMap::from([
        (
            "namespace".to_owned(),
            AttributeValue::S(namespace.to_owned()),
        ),
        ("key".to_owned(), AttributeValue::S(item.key().to_owned())),
        (
            "version".to_owned(),
            AttributeValue::N(item.version().to_string()),
        ),
        ("item".to_owned(), AttributeValue::S(item.json().to_owned())),
    ]);
    let put = PutRequest::builder()
        .set_item(Some(attributes))
        .build()
        .unwrap();
    WriteRequest::builder().put_request(put).build()
}

async fn raw_write(client: &Client, table: &str, requests: &[WriteRequest], in_flight: usize) {
    let batches = requests.chunks(25).map(|chunk| async move {
        let out = client
            .batch_write_item()
            .request_items(table, chunk.to_vec())
            .send()
            .await
            .unwrap();
        assert!(out.unprocessed_items().is_none_or(|m| m.is_empty()));
    });
    futures::stream::iter(batches)
        .buffer_unordered(in_flight)
        .collect::<Vec<()>>()
        .await;
}

fn dynamodb_init(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let db = DynamoDb::start();
    let table = format!("bench_{}", flagstore::testing::unique_run_id());
    let store = |prefix: &str| {
        DynamoDbStore::builder(&table)
            .url(db.endpoint())
            .region("us-east-1")
            .static_credentials("test", "test")
            .prefix(prefix)
            .build()
            .unwrap()
    };
    let probe = store("probe");
    let client = runtime.block_on(async {
        let client = probe.client().await.clone();
        create_table(&client, &table).await.unwrap();
        client
    });

    let mut group = c.benchmark_group("dynamodb_init");
    group.sample_size(10);
    for size in [1_000usize, 5_000] {
        let flags: Vec<Item> = (0..size).map(flag).collect();
        let data = [Collection::new(Kind::FEATURES, flags.clone())];
        let flagstore_store = store(&format!("fs{size}"));
        group.bench_with_input(BenchmarkId::new("flagstore", size), &size, |b, _| {
            b.to_async(&runtime)
                .iter(|| async { flagstore_store.init(&data).await.unwrap() })
        });
        let requests: Vec<WriteRequest> = flags
            .iter()
            .map(|f| record(&format!("raw{size}:features"), f))
            .collect();
        group.bench_with_input(BenchmarkId::new("raw, 8 in flight", size), &size, |b, _| {
            b.to_async(&runtime)
                .iter(|| raw_write(&client, &table, &requests, 8))
        });
        group.bench_with_input(
            BenchmarkId::new("raw, one at a time", size),
            &size,
            |b, _| {
                b.to_async(&runtime)
                    .iter(|| raw_write(&client, &table, &requests, 1))
            },
        );
        let spec = serde_json::json!({
            "backend": "dynamodb", "endpoint": db.endpoint(), "table": table, "prefix": format!("py{size}"),
        })
        .to_string();
        group.bench_with_input(BenchmarkId::new("python sdk", size), &size, |b, _| {
            b.iter_custom(|iters| {
                let out = ld_compat(&["time-init", &spec, &size.to_string(), &iters.to_string()]);
                Duration::from_secs_f64(out.trim().parse().unwrap())
            })
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    targets = dynamodb_init
}
criterion_main!(benches);

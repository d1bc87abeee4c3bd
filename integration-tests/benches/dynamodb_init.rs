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
//! | `raw, 8 in flight + query` | the raw writer while a bare query reads the namespace's keys: what `init` must do at the least, since it deletes what the new data drops |
//! | `raw, one at a time` | the same records, one call after another (what flagstore did before) |
//! | `python sdk` | the Python SDK's `DynamoDBFeatureStore.init` of the same data, timed inside Python (interpreter start-up excluded) |
//!
//! After criterion, the writers take turns for five more inits each while the bench reads
//! dynalite's CPU time from `/proc`: where the emulator is busy for the whole of an init, the
//! server, not the client, sets its time.

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

/// Every key of `namespace`, as `init`'s existing-keys query reads them (consistent reads, keys
/// only, every page).
async fn raw_query(client: &Client, table: &str, namespace: &str) -> usize {
    let mut keys = 0;
    let mut start = None;
    loop {
        let page = client
            .query()
            .table_name(table)
            .consistent_read(true)
            .key_condition_expression("#namespace = :namespace")
            .expression_attribute_names("#namespace", "namespace")
            .expression_attribute_names("#key", "key")
            .expression_attribute_values(":namespace", AttributeValue::S(namespace.to_owned()))
            .projection_expression("#key")
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        keys += page.items().len();
        start = page.last_evaluated_key().cloned();
        if start.is_none() {
            return keys;
        }
    }
}

/// The CPU time process `pid` has used so far (user + system), from `/proc`.
fn cpu_time(pid: u32) -> Duration {
    static TICKS_PER_SECOND: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let ticks = *TICKS_PER_SECOND.get_or_init(|| {
        let out = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    });
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // The fields after the command name, which is in parentheses: state is the first of them,
    // utime and stime the 12th and 13th.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let used: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    Duration::from_secs_f64(used / ticks)
}

/// Each writer's wall time and dynalite's CPU time per init, as table rows. The writers take
/// turns, five rounds after one unmeasured init each (the first init into a namespace inserts,
/// later ones overwrite), so that the emulator's warm-up and garbage collection fall on all.
fn server_time(pid: u32, size: usize, writers: &[(&str, &dyn Fn() -> Duration)]) -> Vec<String> {
    const ROUNDS: u32 = 5;
    for (_, run) in writers {
        run();
    }
    let mut totals = vec![(Duration::ZERO, Duration::ZERO); writers.len()];
    for _ in 0..ROUNDS {
        for ((_, run), (wall, busy)) in writers.iter().zip(&mut totals) {
            let before = cpu_time(pid);
            *wall += run();
            *busy += cpu_time(pid) - before;
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3 / f64::from(ROUNDS);
    writers
        .iter()
        .zip(totals)
        .map(|((name, _), (wall, busy))| {
            format!(
                "| {name}, {size} flags | {:.0} ms | {:.0} ms | {:.0}% |",
                ms(wall),
                ms(busy),
                busy.as_secs_f64() / wall.as_secs_f64() * 100.0,
            )
        })
        .collect()
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

    let mut servers = Vec::new();
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
        let raw_namespace = format!("raw{size}:features");
        let floor = || async {
            let (_, keys) = futures::join!(
                raw_write(&client, &table, &requests, 8),
                raw_query(&client, &table, &raw_namespace)
            );
            keys
        };
        group.bench_with_input(
            BenchmarkId::new("raw, 8 in flight + query", size),
            &size,
            |b, _| b.to_async(&runtime).iter(floor),
        );
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
        let python = |iters: u64| {
            let out = ld_compat(&["time-init", &spec, &size.to_string(), &iters.to_string()]);
            Duration::from_secs_f64(out.trim().parse().unwrap())
        };
        group.bench_with_input(BenchmarkId::new("python sdk", size), &size, |b, _| {
            b.iter_custom(python)
        });

        if let Some(pid) = db.server_pid() {
            let timed = |run: &dyn Fn()| {
                let started = std::time::Instant::now();
                run();
                started.elapsed()
            };
            let writers: [(&str, &dyn Fn() -> Duration); 4] = [
                ("flagstore", &|| {
                    timed(&|| runtime.block_on(flagstore_store.init(&data)).unwrap())
                }),
                ("raw, 8 in flight", &|| {
                    timed(&|| runtime.block_on(raw_write(&client, &table, &requests, 8)))
                }),
                ("raw, 8 in flight + query", &|| {
                    timed(&|| {
                        runtime.block_on(floor());
                    })
                }),
                // Timed inside Python; dynalite's CPU is counted over the whole call, which adds
                // nothing while the interpreter starts.
                ("python sdk", &|| python(1)),
            ];
            servers.extend(server_time(pid, size, &writers));
        }
    }
    group.finish();
    if !servers.is_empty() {
        println!("\n| writer | wall time per init | dynalite CPU per init | dynalite busy |");
        println!("|---|---:|---:|---:|");
        for line in servers {
            println!("{line}");
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(5));
    targets = dynamodb_init
}
criterion_main!(benches);

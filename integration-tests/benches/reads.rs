//! The hot read paths against their floor, each beside its raw baseline in the same run, on a
//! local `redis-server` this bench starts (or `FLAGSTORE_TEST_REDIS_URL`):
//!
//! ```sh
//! cargo bench -p flagstore-integration-tests --bench reads
//! cargo bench -p flagstore-integration-tests --bench reads -- get/    # one group
//! ```
//!
//! | group | flagstore | raw baseline |
//! |---|---|---|
//! | `get` | uncached `RedisStore::get` of one 1.3 KB flag | `HGET` on one multiplexed connection |
//! | `concurrent64` | 64 tasks × 100 uncached gets | the same through one multiplexed connection, and through a deadpool pool of 16 |
//! | `cache_hit` | `CachingStore::get` of a cached flag, 1 task and 8 tasks | a bare `moka::future::Cache<String, Arc<str>>` get by `&str` |
//! | `get_all10k` | `RedisStore::get_all` of 10,000 flags | `HGETALL` into `(String, String)` pairs |
//! | `item_parse` | `Item::from_json` of one 1.3 KB flag (version, tombstone, and a validating scan) | serde_json validating the same JSON into `IgnoredAny` |
//!
//! After the criterion groups (each path timed on its own, one after the other), every row is
//! measured once more **interleaved**: round by round, the baseline's batch and flagstore's
//! batch run back to back, in alternating order, and the table printed at the end gives the
//! median of each and the median of the per-round ratios. This machine's speed drifts by tens
//! of percent within a minute, which moves two criterion groups run a minute apart against
//! each other; a drift hits both halves of one round alike. `FLAGSTORE_BENCH_INTERLEAVED=0`
//! skips it, `FLAGSTORE_BENCH_INTERLEAVED=get_all` keeps the rows whose label has that text
//! (criterion's filter arguments do not apply to it). `FLAGSTORE_BENCH_PROMETHEUS=1` installs a
//! Prometheus recorder first, for the cost of the core's `metrics` feature (on in this crate).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use flagstore::{CachingStoreBuilder, Collection, Item, Kind, PersistentDataStore};
use flagstore_integration_tests::redis::Redis;
use flagstore_redis::RedisStore;
use flagstore_redis::deadpool_redis;
use flagstore_redis::redis::{self, AsyncCommands};
use futures::future::BoxFuture;

/// A flag shaped like a real one (rules, targets, rollouts), about 1.3 KB.
fn flag(i: usize) -> Item {
    let key = format!("flag-{i:05}");
    let json = format!(
        r#"{{"key":"{key}","version":3,"on":true,"salt":"{key}-salt","trackEvents":false,"targets":[{{"variation":0,"values":["user-1","user-2","user-3","user-4","user-5"]}}],"rules":[{{"id":"r1","variation":0,"clauses":[{{"attribute":"email","op":"endsWith","values":["@example.com"],"negate":false}}],"trackEvents":false}},{{"id":"r2","rollout":{{"variations":[{{"variation":0,"weight":25000}},{{"variation":1,"weight":75000}}]}},"clauses":[{{"attribute":"country","op":"in","values":["de","fr","nl","se","no"],"negate":false}}],"trackEvents":false}}],"fallthrough":{{"rollout":{{"variations":[{{"variation":0,"weight":10000}},{{"variation":1,"weight":90000}}]}}}},"offVariation":1,"prerequisites":[],"variations":[true,false],"clientSideAvailability":{{"usingMobileKey":false,"usingEnvironmentId":false}},"description":"A flag of realistic size for benchmarks, with some text so that it weighs about what production flags weigh."}}"#
    );
    Item::from_json(key, json).unwrap()
}

struct Fixture {
    /// Taken and dropped (stopping a server this bench started) at the end of `main`: a static
    /// is never dropped by itself.
    redis: std::sync::Mutex<Option<Redis>>,
    url: String,
    prefix: String,
    runtime: tokio::runtime::Runtime,
}

static FIXTURE: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();

fn fixture() -> &'static Fixture {
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let redis = Redis::start();
        let prefix = format!("bench_{}", flagstore::testing::unique_run_id());
        let store = RedisStore::builder()
            .url(redis.url())
            .prefix(&prefix)
            .build()
            .unwrap();
        let flags: Vec<Item> = (0..10_000).map(flag).collect();
        runtime
            .block_on(store.init(&[Collection::new(Kind::FEATURES, flags)]))
            .unwrap();
        Fixture {
            url: redis.url().to_owned(),
            redis: std::sync::Mutex::new(Some(redis)),
            prefix,
            runtime,
        }
    })
}

fn store(f: &Fixture) -> Arc<RedisStore> {
    let _in = f.runtime.enter();
    Arc::new(
        RedisStore::builder()
            .url(&f.url)
            .prefix(&f.prefix)
            .build()
            .unwrap(),
    )
}

fn raw_multiplexed(f: &Fixture) -> redis::aio::MultiplexedConnection {
    f.runtime.block_on(async {
        redis::Client::open(f.url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    })
}

/// `tasks` tasks each making `per_task` calls of `read`, all at once; the time for all of them.
async fn concurrently<F, Fut>(tasks: usize, per_task: usize, read: F) -> Duration
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    let started = Instant::now();
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let read = read.clone();
            tokio::spawn(async move {
                for i in 0..per_task {
                    read(t * per_task + i).await;
                }
            })
        })
        .collect();
    for handle in handles {
        handle.await.unwrap();
    }
    started.elapsed()
}

/// `ops` operations of one path, run once: how long they took.
type Run = Arc<dyn Fn() -> BoxFuture<'static, Duration> + Send + Sync>;

/// One measured path: a batch of `ops` operations.
#[derive(Clone)]
struct Side {
    name: &'static str,
    ops: u64,
    run: Run,
}

impl Side {
    fn new<F, Fut>(name: &'static str, ops: u64, run: F) -> Side
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Duration> + Send + 'static,
    {
        Side {
            name,
            ops,
            run: Arc::new(move || Box::pin(run())),
        }
    }

    /// `n` sequential calls of `op`, timed together.
    fn sequential<F, Fut>(name: &'static str, n: u64, op: F) -> Side
    where
        F: Fn() -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send,
    {
        Side::new(name, n, move || {
            let op = op.clone();
            async move {
                let started = Instant::now();
                for _ in 0..n {
                    op().await;
                }
                started.elapsed()
            }
        })
    }

    /// `tasks` tasks each making `per_task` calls of `op` (given a running index), all at once.
    fn concurrent<F, Fut>(name: &'static str, tasks: usize, per_task: usize, op: F) -> Side
    where
        F: Fn(usize) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        Side::new(name, (tasks * per_task) as u64, move || {
            concurrently(tasks, per_task, op.clone())
        })
    }
}

/// How a row's ratio reads.
#[derive(Clone, Copy)]
enum Ratio {
    /// flagstore's time over the baseline's: lower is better.
    Time,
    /// flagstore's throughput over the baseline's: higher is better.
    Throughput,
}

/// A row of the interleaved table: flagstore's path against its baseline.
struct Row {
    label: &'static str,
    baseline: Side,
    flagstore: Side,
    ratio: Ratio,
    rounds: usize,
}

/// The paths, built on the shared fixture.
struct Paths {
    get: (Side, Side),
    concurrent: (Side, Side, Side),
    hit1: (Side, Side),
    hit8: (Side, Side),
    get_all: (Side, Side),
    parse: (Side, Side),
}

fn paths() -> Paths {
    let f = fixture();
    let store = store(f);
    let hash: Arc<str> = format!("{}:features", f.prefix).into();
    let conn = raw_multiplexed(f);
    let key = |i: usize| format!("flag-{:05}", i % 10_000);

    let get = {
        let (conn, hash) = (conn.clone(), hash.clone());
        let raw = Side::sequential("raw HGET, multiplexed", 200, move || {
            let (mut conn, hash) = (conn.clone(), hash.clone());
            async move {
                let json: Option<String> = conn.hget(&*hash, "flag-00042").await.unwrap();
                json.unwrap();
            }
        });
        let store = store.clone();
        let ours = Side::sequential("RedisStore::get", 200, move || {
            let store = store.clone();
            async move {
                store
                    .get(&Kind::FEATURES, "flag-00042")
                    .await
                    .unwrap()
                    .unwrap();
            }
        });
        (raw, ours)
    };

    let concurrent = {
        const TASKS: usize = 64;
        const PER_TASK: usize = 100;
        let pool = {
            let _in = f.runtime.enter();
            deadpool_redis::Config::from_url(&f.url)
                .builder()
                .unwrap()
                .max_size(16)
                .runtime(deadpool_redis::Runtime::Tokio1)
                .build()
                .unwrap()
        };
        let (c, h) = (conn.clone(), hash.clone());
        let multiplexed = Side::concurrent(
            "raw HGET, one multiplexed connection",
            TASKS,
            PER_TASK,
            move |i| {
                let (mut conn, hash) = (c.clone(), h.clone());
                async move {
                    let _: Option<String> = conn.hget(&*hash, key(i)).await.unwrap();
                }
            },
        );
        let h = hash.clone();
        let pooled = Side::concurrent("raw HGET, deadpool pool of 16", TASKS, PER_TASK, move |i| {
            let (pool, hash) = (pool.clone(), h.clone());
            async move {
                let mut conn = pool.get().await.unwrap();
                let _: Option<String> = conn.hget(&*hash, key(i)).await.unwrap();
            }
        });
        let s = store.clone();
        let ours = Side::concurrent("RedisStore::get", TASKS, PER_TASK, move |i| {
            let store = s.clone();
            async move {
                store.get(&Kind::FEATURES, &key(i)).await.unwrap().unwrap();
            }
        });
        (multiplexed, pooled, ours)
    };

    let (cached, moka) = {
        let _in = f.runtime.enter();
        let cached = CachingStoreBuilder::from_arc(store.clone())
            .cache_time(Duration::from_secs(3600))
            .build()
            .unwrap();
        f.runtime
            .block_on(cached.get(&Kind::FEATURES, "flag-00042"))
            .unwrap();
        // The least a cache of flags by key can do: a moka cache of the JSON, looked up by
        // the caller's `&str` (no key built), a hit handing out a shared pointer.
        let moka: moka::future::Cache<String, Arc<str>> = moka::future::Cache::builder()
            .time_to_live(Duration::from_secs(3600))
            .build();
        f.runtime
            .block_on(moka.insert("flag-00042".to_owned(), flag(42).json().into()));
        (cached, moka)
    };
    let moka_get = move || {
        let moka = moka.clone();
        async move {
            moka.get("flag-00042").await.unwrap();
        }
    };
    // `CachingStore` itself, as an application holds it: through an `Arc`, method lookup would
    // pick the boxed `PersistentDataStore` impl for `Arc<T>` instead of the inherent `get`.
    let cached_get = move || {
        let cached = cached.clone();
        async move {
            cached.get(&Kind::FEATURES, "flag-00042").await.unwrap();
        }
    };
    let hit1 = (
        Side::sequential("bare moka get, 1 task", 10_000, moka_get.clone()),
        Side::sequential("CachingStore::get, 1 task", 10_000, cached_get.clone()),
    );
    let hit8 = (
        Side::concurrent("bare moka get, 8 tasks", 8, 1000, move |_| moka_get()),
        Side::concurrent("CachingStore::get, 8 tasks", 8, 1000, move |_| cached_get()),
    );

    let get_all = {
        let raw = Side::sequential("raw HGETALL", 1, move || {
            let (mut conn, hash) = (conn.clone(), hash.clone());
            async move {
                let pairs: Vec<(String, String)> = conn.hgetall(&*hash).await.unwrap();
                assert_eq!(pairs.len(), 10_000);
            }
        });
        let ours = Side::sequential("RedisStore::get_all", 1, move || {
            let store = store.clone();
            async move {
                assert_eq!(store.get_all(&Kind::FEATURES).await.unwrap().len(), 10_000);
            }
        });
        (raw, ours)
    };

    let parse = {
        let json: Arc<str> = flag(42).json().into();
        let j = json.clone();
        let raw = Side::sequential("serde_json validate (IgnoredAny)", 1000, move || {
            let json = j.clone();
            async move {
                serde_json::from_str::<serde::de::IgnoredAny>(std::hint::black_box(&json)).unwrap();
            }
        });
        let ours = Side::sequential("Item::from_json", 1000, move || {
            let json = json.clone();
            async move {
                Item::from_json("flag-00042", std::hint::black_box(&*json)).unwrap();
            }
        });
        (raw, ours)
    };

    Paths {
        get,
        concurrent,
        hit1,
        hit8,
        get_all,
        parse,
    }
}

/// One criterion group of `sides`, each timed per operation.
fn group(c: &mut Criterion, name: &str, samples: usize, sides: &[&Side]) {
    let f = fixture();
    let mut group = c.benchmark_group(name);
    group.sample_size(samples);
    for side in sides {
        group.throughput(criterion::Throughput::Elements(side.ops));
        let run = side.run.clone();
        group.bench_function(side.name, |b| {
            b.to_async(&f.runtime).iter_custom(|iters| {
                let run = run.clone();
                async move {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += run().await;
                    }
                    total
                }
            })
        });
    }
    group.finish();
}

/// Runs every row interleaved and prints the table.
fn interleaved(rows: impl Iterator<Item = Row>) {
    let f = fixture();
    println!("\ninterleaved: each round runs both sides back to back, in alternating order");
    println!("| path | flagstore | baseline | ratio, median of rounds (quartiles) |");
    println!("|---|---:|---:|---:|");
    for row in rows {
        let (mut ours, mut base, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
        f.runtime.block_on(async {
            // One unmeasured round: connections, caches and allocator warm.
            (row.baseline.run)().await;
            (row.flagstore.run)().await;
            for round in 0..row.rounds {
                let (b, o) = if round % 2 == 0 {
                    let b = (row.baseline.run)().await;
                    (b, (row.flagstore.run)().await)
                } else {
                    let o = (row.flagstore.run)().await;
                    ((row.baseline.run)().await, o)
                };
                let (b, o) = (
                    b.as_secs_f64() / row.baseline.ops as f64,
                    o.as_secs_f64() / row.flagstore.ops as f64,
                );
                base.push(b);
                ours.push(o);
                ratios.push(match row.ratio {
                    Ratio::Time => o / b,
                    Ratio::Throughput => b / o,
                });
            }
        });
        let quartiles = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            (v[v.len() / 4], v[v.len() / 2], v[v.len() * 3 / 4])
        };
        let (_, ours, _) = quartiles(&mut ours);
        let (_, base, _) = quartiles(&mut base);
        let (q1, ratio, q3) = quartiles(&mut ratios);
        let show = |secs: f64| match row.ratio {
            Ratio::Time => duration(secs),
            Ratio::Throughput => format!("{:.1} k/s", 1e-3 / secs),
        };
        println!(
            "| {} | {} | {}: {} | **{ratio:.2}×** ({q1:.2}–{q3:.2}) |",
            row.label,
            show(ours),
            row.baseline.name,
            show(base),
        );
    }
}

fn duration(secs: f64) -> String {
    match secs {
        s if s >= 1e-3 => format!("{:.2} ms", s * 1e3),
        s if s >= 1e-6 => format!("{:.2} µs", s * 1e6),
        s => format!("{:.0} ns", s * 1e9),
    }
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
}

fn main() {
    // The `metrics` feature's cost with a real recorder behind it: the stores are built after
    // this, so they register their series with it.
    if std::env::var("FLAGSTORE_BENCH_PROMETHEUS").is_ok_and(|v| v == "1") {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .unwrap();
        eprintln!("a Prometheus recorder is installed");
    }
    let paths = paths();
    let mut criterion = config().configure_from_args();
    group(&mut criterion, "get", 100, &[&paths.get.0, &paths.get.1]);
    let (multiplexed, pooled, ours) = &paths.concurrent;
    group(
        &mut criterion,
        "concurrent64",
        20,
        &[multiplexed, pooled, ours],
    );
    let hits = [&paths.hit1.0, &paths.hit1.1, &paths.hit8.0, &paths.hit8.1];
    group(&mut criterion, "cache_hit", 100, &hits);
    group(
        &mut criterion,
        "get_all10k",
        20,
        &[&paths.get_all.0, &paths.get_all.1],
    );
    group(
        &mut criterion,
        "item_parse",
        100,
        &[&paths.parse.0, &paths.parse.1],
    );
    criterion.final_summary();

    // "0" skips the interleaved table; any other value keeps only the rows whose label has it.
    let only = std::env::var("FLAGSTORE_BENCH_INTERLEAVED").unwrap_or_default();
    if only != "0" {
        let row = |label, (baseline, flagstore): (Side, Side), ratio, rounds| Row {
            label,
            baseline,
            flagstore,
            ratio,
            rounds,
        };
        let Paths {
            get,
            concurrent: (multiplexed, pooled, ours),
            hit1,
            hit8,
            get_all,
            parse,
        } = paths;
        let rows = [
            row("uncached `RedisStore::get`", get, Ratio::Time, 41),
            row(
                "64 readers × 100 gets",
                (multiplexed, ours.clone()),
                Ratio::Throughput,
                41,
            ),
            row("the same", (pooled, ours), Ratio::Throughput, 21),
            row("`CachingStore::get` hit, 1 task", hit1, Ratio::Time, 41),
            row("the same, 8 tasks × 1,000", hit8, Ratio::Time, 41),
            row("`get_all` of 10,000 flags", get_all, Ratio::Time, 41),
            row("`Item::from_json`, 1.3 KB", parse, Ratio::Time, 41),
        ];
        interleaved(rows.into_iter().filter(|row| row.label.contains(&only)));
    }
    if let Some(fixture) = FIXTURE.get() {
        drop(fixture.redis.lock().unwrap().take());
    }
}

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
//! | `cache_hit` | `CachingStore::get` of a cached flag, 1 task and 8 tasks | a bare `moka::future::Cache` get |
//! | `get_all10k` | `RedisStore::get_all` of 10,000 flags | `HGETALL` into `(String, String)` pairs |
//! | `item_parse` | `Item::from_json` of one 1.3 KB flag (version, tombstone, and a validating scan) | serde_json validating the same JSON into `IgnoredAny` |

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use flagstore::{CachingStore, Collection, Item, Kind, PersistentDataStore};
use flagstore_integration_tests::redis::Redis;
use flagstore_redis::RedisStore;
use flagstore_redis::deadpool_redis;
use flagstore_redis::redis::{self, AsyncCommands};

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

fn get(c: &mut Criterion) {
    let f = fixture();
    let store = store(f);
    let hash = format!("{}:features", f.prefix);
    let conn = raw_multiplexed(f);
    let mut group = c.benchmark_group("get");
    group.bench_function("raw HGET, multiplexed", |b| {
        b.to_async(&f.runtime).iter(|| {
            let (mut conn, hash) = (conn.clone(), hash.clone());
            async move {
                let json: Option<String> = conn.hget(&hash, "flag-00042").await.unwrap();
                json.unwrap()
            }
        })
    });
    group.bench_function("RedisStore::get", |b| {
        b.to_async(&f.runtime).iter(|| {
            let store = store.clone();
            async move {
                store
                    .get(&Kind::FEATURES, "flag-00042")
                    .await
                    .unwrap()
                    .unwrap()
            }
        })
    });
    group.finish();
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

fn concurrent64(c: &mut Criterion) {
    const TASKS: usize = 64;
    const PER_TASK: usize = 100;
    let f = fixture();
    let store = store(f);
    let hash = format!("{}:features", f.prefix);
    let conn = raw_multiplexed(f);
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
    let mut group = c.benchmark_group("concurrent64");
    group.throughput(criterion::Throughput::Elements((TASKS * PER_TASK) as u64));
    group.sample_size(20);
    let key = |i: usize| format!("flag-{:05}", i % 10_000);
    group.bench_function("raw HGET, one multiplexed connection", |b| {
        b.to_async(&f.runtime).iter_custom(|iters| {
            let (conn, hash) = (conn.clone(), hash.clone());
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (conn, hash) = (conn.clone(), hash.clone());
                    total += concurrently(TASKS, PER_TASK, move |i| {
                        let (mut conn, hash) = (conn.clone(), hash.clone());
                        async move {
                            let _: Option<String> = conn.hget(&hash, key(i)).await.unwrap();
                        }
                    })
                    .await;
                }
                total
            }
        })
    });
    group.bench_function("raw HGET, deadpool pool of 16", |b| {
        b.to_async(&f.runtime).iter_custom(|iters| {
            let (pool, hash) = (pool.clone(), hash.clone());
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (pool, hash) = (pool.clone(), hash.clone());
                    total += concurrently(TASKS, PER_TASK, move |i| {
                        let (pool, hash) = (pool.clone(), hash.clone());
                        async move {
                            let mut conn = pool.get().await.unwrap();
                            let _: Option<String> = conn.hget(&hash, key(i)).await.unwrap();
                        }
                    })
                    .await;
                }
                total
            }
        })
    });
    group.bench_function("RedisStore::get", |b| {
        b.to_async(&f.runtime).iter_custom(|iters| {
            let store = store.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let store = store.clone();
                    total += concurrently(TASKS, PER_TASK, move |i| {
                        let store = store.clone();
                        async move {
                            store.get(&Kind::FEATURES, &key(i)).await.unwrap().unwrap();
                        }
                    })
                    .await;
                }
                total
            }
        })
    });
    group.finish();
}

fn cache_hit(c: &mut Criterion) {
    let f = fixture();
    let cached = {
        let _in = f.runtime.enter();
        CachingStore::builder_for(store(f))
            .cache_time(Duration::from_secs(3600))
            .build()
            .unwrap()
    };
    f.runtime
        .block_on(cached.get(&Kind::FEATURES, "flag-00042"))
        .unwrap();
    let moka: moka::future::Cache<(Kind, String), Item> = moka::future::Cache::builder()
        .time_to_live(Duration::from_secs(3600))
        .build();
    f.runtime
        .block_on(moka.insert((Kind::FEATURES, "flag-00042".to_owned()), flag(42)));
    let mut group = c.benchmark_group("cache_hit");
    group.bench_function("bare moka get, 1 task", |b| {
        b.to_async(&f.runtime).iter(|| {
            let moka = moka.clone();
            async move {
                moka.get(&(Kind::FEATURES, "flag-00042".to_owned()))
                    .await
                    .unwrap()
            }
        })
    });
    group.bench_function("CachingStore::get, 1 task", |b| {
        b.to_async(&f.runtime).iter(|| {
            let cached = cached.clone();
            async move { cached.get(&Kind::FEATURES, "flag-00042").await.unwrap() }
        })
    });
    const TASKS: usize = 8;
    const PER_TASK: usize = 1000;
    group.throughput(criterion::Throughput::Elements((TASKS * PER_TASK) as u64));
    group.bench_function("bare moka get, 8 tasks", |b| {
        b.to_async(&f.runtime).iter_custom(|iters| {
            let moka = moka.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let moka = moka.clone();
                    total += concurrently(TASKS, PER_TASK, move |_| {
                        let moka = moka.clone();
                        async move {
                            moka.get(&(Kind::FEATURES, "flag-00042".to_owned()))
                                .await
                                .unwrap();
                        }
                    })
                    .await;
                }
                total
            }
        })
    });
    group.bench_function("CachingStore::get, 8 tasks", |b| {
        b.to_async(&f.runtime).iter_custom(|iters| {
            let cached = cached.clone();
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let cached = cached.clone();
                    total += concurrently(TASKS, PER_TASK, move |_| {
                        let cached = cached.clone();
                        async move {
                            cached.get(&Kind::FEATURES, "flag-00042").await.unwrap();
                        }
                    })
                    .await;
                }
                total
            }
        })
    });
    group.finish();
}

fn get_all10k(c: &mut Criterion) {
    let f = fixture();
    let store = store(f);
    let hash = format!("{}:features", f.prefix);
    let conn = raw_multiplexed(f);
    let mut group = c.benchmark_group("get_all10k");
    group.sample_size(20);
    group.bench_function("raw HGETALL", |b| {
        b.to_async(&f.runtime).iter(|| {
            let (mut conn, hash) = (conn.clone(), hash.clone());
            async move {
                let pairs: Vec<(String, String)> = conn.hgetall(&hash).await.unwrap();
                assert_eq!(pairs.len(), 10_000);
            }
        })
    });
    group.bench_function("RedisStore::get_all", |b| {
        b.to_async(&f.runtime).iter(|| {
            let store = store.clone();
            async move {
                assert_eq!(store.get_all(&Kind::FEATURES).await.unwrap().len(), 10_000);
            }
        })
    });
    group.finish();
}

/// What each read spends on the JSON itself: reading `version` and `deleted` and checking that the
/// whole document is JSON, against serde_json's bare validation of the same bytes.
fn item_parse(c: &mut Criterion) {
    let json = flag(42).json().to_owned();
    let mut group = c.benchmark_group("item_parse");
    group.bench_function("serde_json validate (IgnoredAny)", |b| {
        b.iter(|| {
            serde_json::from_str::<serde::de::IgnoredAny>(std::hint::black_box(&json)).unwrap()
        })
    });
    group.bench_function("Item::from_json", |b| {
        b.iter(|| Item::from_json("flag-00042", std::hint::black_box(json.as_str())).unwrap())
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
}

fn main() {
    let mut criterion = config().configure_from_args();
    get(&mut criterion);
    concurrent64(&mut criterion);
    cache_hit(&mut criterion);
    get_all10k(&mut criterion);
    item_parse(&mut criterion);
    criterion.final_summary();
    if let Some(fixture) = FIXTURE.get() {
        drop(fixture.redis.lock().unwrap().take());
    }
}

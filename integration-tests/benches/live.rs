//! Live daemon mode against the SDK's usual 15-second cache, in the same run, on one local
//! Redis: how long a change takes to reach the readers, and how many database reads they cost.
//!
//! ```sh
//! cargo bench -p flagstore-integration-tests --bench live            # 20 s per mode, a change a second
//! cargo bench -p flagstore-integration-tests --bench live -- 60 10    # 60 s per mode, a change every 10 s
//! ```
//!
//! Eight daemon-mode LaunchDarkly clients (the Rust SDK 3.2 through the adapter), each on its own
//! thread and its own store, evaluate ten flags round-robin, one evaluation per millisecond, like
//! eight services under steady traffic. Once a second another writer changes one of the flags
//! (its only variation becomes the new version number), or at the interval given. For each change and each reader the
//! bench records when that reader first evaluated the new value; database reads are Redis's own
//! count (`INFO commandstats`: HGET, HMGET, HGETALL, GET, EXISTS) from one second after the
//! readers start (their first reads fill the caches) to the end of the phase.
//!
//! - **TTL 15 s**: the SDK's cache (15 s) over a bare Redis store, the usual daemon-mode setup.
//! - **live, tracking**: the SDK's cache off; a flagstore `CachingStore` with
//!   `invalidate_on_changes()` and a 10-minute live cache time underneath, its feed on Redis
//!   client tracking (what `feed=auto` picks on Redis 6+).
//! - **live, keyspace**: the same on keyspace notifications.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flagstore::{Collection, DynStore, Item, Kind, PersistentDataStore};
use flagstore_integration_tests::live_cache;
use flagstore_integration_tests::redis::Redis;
use flagstore_launchdarkly::LaunchDarklyStore;
use flagstore_launchdarkly::launchdarkly_server_sdk::{
    Client, ConfigBuilder, ContextBuilder, NullEventProcessorBuilder, PersistentDataStoreBuilder,
};
use flagstore_redis::redis;
use flagstore_redis::{FeedMode, RedisStore};

const READERS: usize = 8;
const FLAGS: usize = 10;

fn flag(i: usize, version: u64) -> Item {
    let key = format!("flag-{i}");
    let json = format!(
        r#"{{"key":"{key}","version":{version},"on":false,"offVariation":0,"variations":[{version}],"salt":"s","targets":[],"rules":[],"prerequisites":[],"fallthrough":{{"variation":0}}}}"#
    );
    Item::from_json(key, json).unwrap()
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Ttl15,
    Live(FeedMode),
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Ttl15 => "TTL 15 s (SDK cache)",
            Mode::Live(FeedMode::Keyspace) => "live, keyspace",
            Mode::Live(_) => "live, tracking",
        }
    }

    fn feed(self) -> FeedMode {
        match self {
            Mode::Ttl15 => FeedMode::Auto,
            Mode::Live(feed) => feed,
        }
    }
}

/// Per reader, each version of flag-0 it saw first and when.
type Sightings = Vec<std::sync::Mutex<Vec<(u64, Instant)>>>;

struct Phase {
    evaluations: u64,
    reads: u64,
    seconds: f64,
    delays: Vec<Duration>,
    changes: usize,
}

fn redis_store(url: &str, prefix: &str, feed: FeedMode) -> RedisStore {
    RedisStore::builder()
        .url(url)
        .prefix(prefix)
        .feed(feed)
        .configure_keyspace_events(true)
        .build()
        .unwrap()
}

fn reader(mode: Mode, url: &str, prefix: &str, runtime: &tokio::runtime::Runtime) -> Client {
    let _entered = runtime.enter();
    let (store, sdk_cache): (DynStore, Option<Duration>) = match mode {
        Mode::Ttl15 => (
            Arc::new(redis_store(url, prefix, mode.feed())),
            Some(Duration::from_secs(15)),
        ),
        Mode::Live(feed) => {
            let store: DynStore = Arc::new(redis_store(url, prefix, feed));
            let live = runtime.block_on(live_cache(store, Duration::from_secs(15)));
            (Arc::new(live), None)
        }
    };
    let mut builder =
        PersistentDataStoreBuilder::new(Arc::new(LaunchDarklyStore::from_arc(store).unwrap()));
    match sdk_cache {
        Some(ttl) => builder.cache_time(ttl),
        None => builder.no_caching(),
    };
    let config = ConfigBuilder::new("sdk-key-bench")
        .daemon_mode(true)
        .event_processor(&NullEventProcessorBuilder::new())
        .data_store(&builder)
        .build()
        .unwrap();
    let client = Client::build(config).unwrap();
    client.start_with_default_executor();
    client
}

fn read_commands(conn: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
    info.lines()
        .filter(|l| {
            [
                "cmdstat_hget:",
                "cmdstat_hmget:",
                "cmdstat_hgetall:",
                "cmdstat_get:",
                "cmdstat_exists:",
            ]
            .iter()
            .any(|c| l.starts_with(c))
        })
        .filter_map(|l| {
            l.split("calls=")
                .nth(1)?
                .split(',')
                .next()?
                .parse::<u64>()
                .ok()
        })
        .sum()
}

fn run(
    mode: Mode,
    url: &str,
    seconds: u64,
    change_every: Duration,
    runtime: &tokio::runtime::Runtime,
) -> Phase {
    let prefix = format!("bench_live_{}", flagstore::testing::unique_run_id());
    let writer = redis_store(url, &prefix, FeedMode::Auto);
    let flags = (0..FLAGS).map(|i| flag(i, 1)).collect();
    runtime
        .block_on(writer.init(&[Collection::new(Kind::FEATURES, flags)]))
        .unwrap();

    let clients: Vec<Client> = (0..READERS)
        .map(|_| reader(mode, url, &prefix, runtime))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let evaluations = Arc::new(AtomicU64::new(0));
    // Per reader, the first time it saw each version of flag-0.
    let seen: Arc<Sightings> =
        Arc::new((0..READERS).map(|_| std::sync::Mutex::default()).collect());
    let mut conn = redis::Client::open(url).unwrap().get_connection().unwrap();

    let threads: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(r, client)| {
            let (stop, evaluations, seen) = (stop.clone(), evaluations.clone(), seen.clone());
            std::thread::spawn(move || {
                let context = ContextBuilder::new(format!("user-{r}")).build().unwrap();
                let mut last = 0;
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("flag-{}", i % FLAGS);
                    let value = client.int_variation(&context, &key, -1);
                    if i % FLAGS == 0 && value as u64 > last {
                        last = value as u64;
                        seen[r].lock().unwrap().push((last, Instant::now()));
                    }
                    evaluations.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                    std::thread::sleep(Duration::from_millis(1));
                }
                client.close();
            })
        })
        .collect();

    // The readers' first reads fill their caches; the phase counts from here.
    std::thread::sleep(Duration::from_secs(1));
    let reads_before = read_commands(&mut conn);
    let started = Instant::now();
    let mut written: Vec<(u64, Instant)> = Vec::new();
    let mut version = 1;
    while started.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(change_every);
        version += 1;
        runtime
            .block_on(writer.upsert(&Kind::FEATURES, flag(0, version)))
            .unwrap();
        written.push((version, Instant::now()));
    }
    // Let the last change reach the readers (at most a TTL) before stopping them.
    let settle = if mode == Mode::Ttl15 { 16 } else { 2 };
    std::thread::sleep(Duration::from_secs(settle));
    let elapsed = started.elapsed().as_secs_f64();
    let reads = read_commands(&mut conn) - reads_before;
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        thread.join().unwrap();
    }

    let mut delays = Vec::new();
    for reader in seen.iter() {
        let reader = reader.lock().unwrap();
        for (version, at) in &written {
            // The first evaluation of this version or a later one.
            if let Some((_, first)) = reader.iter().find(|(v, _)| v >= version) {
                delays.push(first.saturating_duration_since(*at));
            }
        }
    }
    delays.sort();
    Phase {
        evaluations: evaluations.load(Ordering::Relaxed),
        reads,
        seconds: elapsed,
        delays,
        changes: written.len(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let at = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[at]
}

fn main() {
    let numbers: Vec<u64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let seconds = numbers.first().copied().unwrap_or(20);
    let change_every = Duration::from_secs(numbers.get(1).copied().unwrap_or(1));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let redis = Redis::start_local(&[]);
    println!(
        "{READERS} daemon-mode readers x {FLAGS} flags, 1 evaluation/ms each; a change every {change_every:?}; {seconds} s per mode"
    );
    println!(
        "{:<22} {:>10} {:>12} {:>16} {:>11} {:>13} {:>13}",
        "mode", "evals/s", "db reads/s", "reads/change/rd", "changes", "delay p50", "delay p99"
    );
    let modes = [
        Mode::Ttl15,
        Mode::Live(FeedMode::Tracking),
        Mode::Live(FeedMode::Keyspace),
    ];
    for mode in modes {
        let phase = run(mode, redis.url(), seconds, change_every, &runtime);
        println!(
            "{:<22} {:>10.0} {:>12.1} {:>16.2} {:>11} {:>13.1?} {:>13.1?}",
            mode.name(),
            phase.evaluations as f64 / phase.seconds,
            phase.reads as f64 / phase.seconds,
            phase.reads as f64 / (phase.changes.max(1) * READERS) as f64,
            format!("{}/{}", phase.delays.len() / READERS, phase.changes),
            percentile(&phase.delays, 0.5),
            percentile(&phase.delays, 0.99),
        );
    }
}

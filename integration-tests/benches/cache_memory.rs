//! What a forever cache of 10,000 realistic flags costs in memory, against the bytes of their
//! JSON (the floor: a cache must hold the JSON). The data goes through a Redis store, so the only
//! copy in this process is the cache's.
//!
//! Each figure is taken in a child process of its own: the cache filled by `init`, and a
//! daemon-mode reader's cache filled by `get_all` in a process that has done nothing else, as a
//! daemon-mode service starts (a big `init` earlier in the same process would leave the
//! allocator holding its freed buffers, and the reader reusing them). Beside the reader, its
//! raw baseline: a process that keeps a bare `HGETALL` reply of the same hash, as the redis
//! client hands it over, which is the least a reader through that client can hold. Each is
//! taken twice: with glibc's default allocator settings (what a service sees), and with its
//! mmap threshold fixed at 64 KiB (`MALLOC_MMAP_THRESHOLD_=65536`), under which every freed
//! buffer over 64 KiB goes back to the system at once. The difference is freed memory the
//! allocator keeps for reuse, such as the holes the client's reply leaves; the second figure is
//! closer to what the cache holds.
//!
//! Growth is anonymous resident memory (`RssAnon`: the heap and everything else allocated).
//! Total RSS also counts the program's code, paged in from the binary as each path first runs:
//! a reader's first item-by-item fill runs ~0.7 MB of code the process had not run before, a
//! fixed cost of the program that would otherwise be charged to the 10,000 flags (it was, until
//! this measure split them: 1.38x where the heap grew 1.23x). The code paged in is printed
//! beside each figure, and the item-by-item measures start after a few reads made and dropped
//! (as in a service that has evaluated flags before), so that little of it remains.
//!
//! ```sh
//! cargo bench -p flagstore-integration-tests --bench cache_memory
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use flagstore::{CachingStore, Collection, Item, Kind, PersistentDataStore};
use flagstore_integration_tests::redis::Redis;
use flagstore_redis::RedisStore;

fn flag(i: usize) -> Item {
    let key = format!("flag-{i:05}");
    let json = format!(
        r#"{{"key":"{key}","version":3,"on":true,"salt":"{key}-salt","targets":[{{"variation":0,"values":["user-1","user-2","user-3","user-4","user-5"]}}],"rules":[{{"id":"r1","variation":0,"clauses":[{{"attribute":"email","op":"endsWith","values":["@example.com"],"negate":false}}]}}],"fallthrough":{{"variation":0}},"offVariation":1,"prerequisites":[],"variations":[true,false],"description":"A flag of realistic size for benchmarks, with some text so that it weighs about what production flags weigh."}}"#
    );
    Item::from_json(key, json).unwrap()
}

/// Lets the runtime finish what a call left behind (a closed connection's task frees its
/// buffers when it next runs), so that the measure is of what stays.
fn settle(runtime: &tokio::runtime::Runtime) {
    runtime.block_on(async { tokio::time::sleep(std::time::Duration::from_millis(200)).await });
}

/// Resident memory, from /proc/self/status: anonymous (the heap and every other allocation)
/// and file-backed (mostly the program's own code, paged in as it first runs).
#[derive(Clone, Copy)]
struct Resident {
    anon: u64,
    file: u64,
}

impl Resident {
    fn now() -> Resident {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let kib = |field: &str| -> u64 {
            let line = status.lines().find(|l| l.starts_with(field)).unwrap();
            line[field.len()..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .unwrap()
        };
        Resident {
            anon: kib("RssAnon:") * 1024,
            file: kib("RssFile:") * 1024,
        }
    }

    /// What grew since `self`, as a sentence: the anonymous growth against the JSON (the
    /// figure), and the code first run beside it. That code is paged in once whatever the
    /// number of flags (a read path's first use touches ~0.8 MB of this binary), so counting
    /// it would charge a fixed cost of the program to each flag.
    fn growth(self, json_bytes: usize) -> (u64, String) {
        let now = Resident::now();
        let anon = now.anon.saturating_sub(self.anon);
        let file = now.file.saturating_sub(self.file);
        let text = format!(
            "resident memory grew {anon} bytes, {:.2}x the JSON (code paged in beside it: {file} bytes; both: {:.2}x)",
            anon as f64 / json_bytes as f64,
            (anon + file) as f64 / json_bytes as f64
        );
        (anon, text)
    }
}

/// Set in the child processes: which measure to take.
const CHILD: &str = "FLAGSTORE_CACHE_MEMORY_CHILD";
/// Set in the child processes: the key prefix holding the flags the reader reads.
const PREFIX: &str = "FLAGSTORE_CACHE_MEMORY_PREFIX";

const FLAGS: usize = 10_000;
/// Reads made and dropped before an item-by-item measure, so that it starts with the path's
/// code paged in.
const WARM_UP_READS: usize = 16;

fn main() {
    match std::env::var(CHILD).as_deref() {
        Ok("init") => return filled_by_init(),
        Ok("reader") => return filled_by_reader(),
        Ok("raw") => return raw_reply_kept(),
        Ok("reader-items") => return filled_item_by_item(),
        Ok("raw-items") => return raw_items_kept(),
        _ => {}
    }
    // The flags the readers read, written by this process, which measures nothing.
    let redis = Redis::start();
    let runtime = runtime();
    let prefix = format!("bench_mem_{}", flagstore::testing::unique_run_id());
    runtime
        .block_on(store(&redis, &prefix).init(&data()))
        .unwrap();
    let exe = std::env::current_exe().unwrap();
    for (allocator, threshold) in [
        ("glibc defaults", None),
        ("mmap threshold 64 KiB", Some("65536")),
    ] {
        println!("== {allocator}");
        for measure in ["init", "reader", "raw", "reader-items", "raw-items"] {
            let mut child = std::process::Command::new(&exe);
            child
                .env(CHILD, measure)
                .env(PREFIX, &prefix)
                .env(flagstore_integration_tests::redis::URL_VAR, redis.url());
            if let Some(threshold) = threshold {
                child.env("MALLOC_MMAP_THRESHOLD_", threshold);
            }
            assert!(child.status().unwrap().success());
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn store(redis: &Redis, prefix: &str) -> RedisStore {
    RedisStore::builder()
        .url(redis.url())
        .prefix(prefix)
        .build()
        .unwrap()
}

fn data() -> [Collection; 1] {
    [Collection::new(
        Kind::FEATURES,
        (0..FLAGS).map(flag).collect(),
    )]
}

/// 1. The cache's own structures: the items (and their JSON) exist before the baseline, so the
///    growth is the entries, keys and the cache's bookkeeping, never the JSON. Written to a
///    prefix of its own.
fn filled_by_init() {
    let runtime = runtime();
    let redis = Redis::start();
    let prefix = format!("bench_mem_{}", flagstore::testing::unique_run_id());
    let cache = CachingStore::builder(store(&redis, &prefix))
        .cache_forever()
        .build()
        .unwrap();
    // Warm up the allocator and the connection with a small data set first.
    runtime
        .block_on(cache.init(&[Collection::new(Kind::FEATURES, vec![flag(0)])]))
        .unwrap();
    let data = data();
    let json_bytes: usize = data[0].items.iter().map(|f| f.json().len()).sum();
    let before = Resident::now();
    runtime.block_on(cache.init(&data)).unwrap();
    settle(&runtime);
    let (structures, _) = before.growth(json_bytes);
    drop(data);
    let (entries, weight) = runtime.block_on(cache.cache_usage());
    println!(
        "forever cache of {FLAGS} flags filled by init: {entries} entries, weighed {weight} bytes"
    );
    println!(
        "JSON {json_bytes} bytes; anonymous resident memory grew {structures} bytes: JSON + growth = {:.2}x the JSON",
        (json_bytes + structures as usize) as f64 / json_bytes as f64
    );
}

/// The flags' JSON bytes, for the readers, made one flag at a time: a whole data set built and
/// freed before the read would be memory the read reuses.
fn json_bytes_one_at_a_time() -> usize {
    (0..FLAGS).map(|i| flag(i).json().len()).sum()
}

/// A daemon-mode reader's forever cache over the readers' prefix, its connection open (it asks
/// "initialized?" first, as a reader does anyway).
fn forever_reader(runtime: &tokio::runtime::Runtime) -> (Redis, CachingStore) {
    let redis = Redis::start();
    let prefix = std::env::var(PREFIX).unwrap();
    let reader = CachingStore::builder(store(&redis, &prefix))
        .cache_forever()
        .build()
        .unwrap();
    assert!(runtime.block_on(reader.is_initialized()).unwrap());
    (redis, reader)
}

/// 2. A daemon-mode reader filling it from the database, in a process that has done nothing
///    else (as a daemon-mode service starts): everything it allocates counts, the decoding
///    buffers the allocator keeps included.
fn filled_by_reader() {
    let runtime = runtime();
    let (_redis, reader) = forever_reader(&runtime);
    let json_bytes = json_bytes_one_at_a_time();
    let before = Resident::now();
    let read = runtime.block_on(reader.get_all(&Kind::FEATURES)).unwrap();
    assert_eq!(read.len(), FLAGS);
    drop(read);
    settle(&runtime);
    let (_, grown) = before.growth(json_bytes);
    println!("a reader's forever cache filled by get_all: {grown}");
}

/// The server, the readers' hash, and a bare multiplexed connection to it (checked to hold the
/// hash): what the raw baselines read through.
fn raw_connection(
    runtime: &tokio::runtime::Runtime,
) -> (
    Redis,
    String,
    flagstore_redis::redis::aio::MultiplexedConnection,
) {
    use flagstore_redis::redis::{self, AsyncCommands};
    let redis = Redis::start();
    let hash = format!("{}:features", std::env::var(PREFIX).unwrap());
    let mut conn = runtime.block_on(async {
        redis::Client::open(redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    });
    assert!(runtime.block_on(conn.exists::<_, bool>(&hash)).unwrap());
    (redis, hash, conn)
}

/// 3. The reader's baseline: the same hash read by a bare `HGETALL` on one multiplexed
///    connection, the reply kept as the client decoded it (one allocation per key and per
///    value), in a process that has done nothing else.
fn raw_reply_kept() {
    use flagstore_redis::redis::AsyncCommands;
    let runtime = runtime();
    let (_redis, hash, mut conn) = raw_connection(&runtime);
    let json_bytes = json_bytes_one_at_a_time();
    let before = Resident::now();
    let reply: Vec<(String, String)> = runtime.block_on(conn.hgetall(&hash)).unwrap();
    assert_eq!(reply.len(), FLAGS);
    settle(&runtime);
    let (_, grown) = before.growth(json_bytes);
    println!("raw HGETALL reply kept: {grown}");
    drop(reply);
}

/// 4. A daemon-mode reader that asks for flags one at a time (the SDK's pattern), filling a
///    forever cache item by item, in a process that has done nothing else.
fn filled_item_by_item() {
    let runtime = runtime();
    let (_redis, reader) = forever_reader(&runtime);
    let keys: Vec<String> = (0..FLAGS).map(|i| format!("flag-{i:05}")).collect();
    let json_bytes = json_bytes_one_at_a_time();
    // A first few reads through a reader of their own, dropped: the code of the path is paged
    // in, as in a service that has evaluated flags before.
    {
        let (_, warm) = forever_reader(&runtime);
        runtime.block_on(async {
            for key in &keys[..WARM_UP_READS] {
                warm.get(&Kind::FEATURES, key).await.unwrap().unwrap();
            }
        });
    }
    settle(&runtime);
    let before = Resident::now();
    runtime.block_on(async {
        for key in &keys {
            reader.get(&Kind::FEATURES, key).await.unwrap().unwrap();
        }
    });
    settle(&runtime);
    let (_, grown) = before.growth(json_bytes);
    println!("a reader's forever cache filled item by item: {grown}");
    // Still held, and answered from the cache.
    assert!(
        runtime
            .block_on(reader.get(&Kind::FEATURES, &keys[7]))
            .unwrap()
            .is_some()
    );
}

/// 5. That reader's baseline: the same `HGET`s on one multiplexed connection, each answer kept
///    in a plain `HashMap<String, Arc<str>>`, in a process that has done nothing else.
fn raw_items_kept() {
    use flagstore_redis::redis::AsyncCommands;
    use std::collections::HashMap;
    use std::sync::Arc;
    let runtime = runtime();
    let (_redis, hash, mut conn) = raw_connection(&runtime);
    let keys: Vec<String> = (0..FLAGS).map(|i| format!("flag-{i:05}")).collect();
    let json_bytes = json_bytes_one_at_a_time();
    // The same warm-up as the reader's.
    runtime.block_on(async {
        let mut warm: HashMap<String, Arc<str>> = HashMap::new();
        for key in &keys[..WARM_UP_READS] {
            let json: String = conn.hget(&hash, key).await.unwrap();
            warm.insert(key.clone(), json.into());
        }
    });
    settle(&runtime);
    let before = Resident::now();
    let mut kept: HashMap<String, Arc<str>> = HashMap::new();
    runtime.block_on(async {
        for key in &keys {
            let json: String = conn.hget(&hash, key).await.unwrap();
            kept.insert(key.clone(), json.into());
        }
    });
    settle(&runtime);
    let (_, grown) = before.growth(json_bytes);
    println!("raw HGETs kept in a HashMap<String, Arc<str>>: {grown}");
    assert_eq!(kept.len(), FLAGS);
}

//! What a forever cache of 10,000 realistic flags costs in memory, against the bytes of their
//! JSON (the floor: a cache must hold the JSON). The data goes through a Redis store, so the only
//! copy in this process is the cache's.
//!
//! Resident memory is measured twice, in two child processes: with glibc's default allocator
//! settings (what a service sees), and with its mmap threshold fixed at 64 KiB
//! (`MALLOC_MMAP_THRESHOLD_=65536`), under which every freed buffer over 64 KiB goes back to the
//! system at once. The difference is transient buffers the allocator keeps for reuse, such as
//! the one packed `MULTI`…`EXEC` of an `init`; the second figure is what the cache holds.
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

/// Resident set size in bytes, from /proc/self/statm.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Set in the child processes.
const CHILD: &str = "FLAGSTORE_CACHE_MEMORY_CHILD";

fn main() {
    if std::env::var_os(CHILD).is_some() {
        return measure();
    }
    let exe = std::env::current_exe().unwrap();
    for (allocator, threshold) in [
        ("glibc defaults", None),
        ("mmap threshold 64 KiB", Some("65536")),
    ] {
        println!("== {allocator}");
        let mut child = std::process::Command::new(&exe);
        child.env(CHILD, "1");
        if let Some(threshold) = threshold {
            child.env("MALLOC_MMAP_THRESHOLD_", threshold);
        }
        assert!(child.status().unwrap().success());
    }
}

fn measure() {
    const FLAGS: usize = 10_000;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let redis = Redis::start();
    let prefix = format!("bench_mem_{}", flagstore::testing::unique_run_id());
    let store = RedisStore::builder()
        .url(redis.url())
        .prefix(&prefix)
        .build()
        .unwrap();
    let cache = CachingStore::builder(store)
        .cache_forever()
        .build()
        .unwrap();
    // Warm up the allocator and the connection with a small data set first.
    runtime
        .block_on(cache.init(&[Collection::new(Kind::FEATURES, vec![flag(0)])]))
        .unwrap();

    // 1. The cache's own structures: the items (and their JSON) exist before the baseline, so
    //    the growth is the entries, keys and the cache's bookkeeping, never the JSON.
    let data = [Collection::new(
        Kind::FEATURES,
        (0..FLAGS).map(flag).collect(),
    )];
    let json_bytes: usize = data[0].items.iter().map(|f| f.json().len()).sum();
    let before = rss();
    runtime.block_on(cache.init(&data)).unwrap();
    settle(&runtime);
    let structures = rss().saturating_sub(before);
    drop(data);
    let (entries, weight) = runtime.block_on(cache.cache_usage());
    println!(
        "forever cache of {FLAGS} flags filled by init: {entries} entries, weighed {weight} bytes"
    );
    println!(
        "JSON {json_bytes} bytes; resident memory grew {structures} bytes: JSON + growth = {:.2}x the JSON",
        (json_bytes + structures as usize) as f64 / json_bytes as f64
    );

    // 2. A daemon-mode reader filling it from the database: everything it allocates counts,
    //    the decoding buffers the allocator keeps included.
    let reader = CachingStore::builder(
        RedisStore::builder()
            .url(redis.url())
            .prefix(&prefix)
            .build()
            .unwrap(),
    )
    .cache_forever()
    .build()
    .unwrap();
    let before = rss();
    let read = runtime.block_on(reader.get_all(&Kind::FEATURES)).unwrap();
    drop(read);
    settle(&runtime);
    let grown = rss().saturating_sub(before);
    println!(
        "a reader's forever cache filled by get_all: resident memory grew {grown} bytes, {:.2}x the JSON",
        grown as f64 / json_bytes as f64
    );
}

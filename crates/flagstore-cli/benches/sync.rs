//! `flagstore sync` from a fake LaunchDarkly to a local Redis, each figure beside a baseline taken
//! in the same run:
//!
//! - a `put` of N realistic flags (10,000 by default): the daemon's time from start to a healthy
//!   `/status` and its peak resident memory, against the JSON's size and against `flagstore
//!   load` of the same data from a file (start, parse, `init`, exit; peak memory from
//!   `getrusage`);
//! - a `patch`'s latency, from the fake server sending it to the store holding it (p50, p99),
//!   against the store write alone (`RedisStore::upsert`, then the same read that sees it);
//! - sustained patches per second, a burst sent back to back until the last is stored, against
//!   the same upserts made one after another directly;
//! - a one-shot `sync --once` of the same data (poll, `init`, read back): time and peak memory.
//!
//! ```sh
//! cargo bench -p flagstore-cli --bench sync                   # 10,000 flags, 500 + 5,000 patches
//! cargo bench -p flagstore-cli --bench sync -- 1000 200 2000
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use flagstore::{DynStore, Item, Kind, PersistentDataStore};
use flagstore_integration_tests::redis::Redis;
use flagstore_integration_tests::{FakeLaunchDarkly, free_port, http_get, realistic_flag};
use serde_json::{Value, json};

/// The command as the tests run it: no settings from the caller's environment.
#[path = "../tests/common/mod.rs"]
mod common;

const SDK_KEY: &str = "sdk-bench-0000-1111-2222";

fn flag_value(i: usize, version: u64) -> Value {
    serde_json::from_str(&realistic_flag(i, version).1).unwrap()
}

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

/// `/status`'s top-level `status`, if the daemon answers.
fn status(address: &str) -> Option<String> {
    let (_, body) = http_get(address, "/status")?;
    let body: Value = serde_json::from_str(&body).ok()?;
    body["status"].as_str().map(str::to_owned)
}

/// A figure of a process's memory in bytes from /proc: `VmHWM` (peak resident), `VmRSS`.
fn memory(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// Runs `command` to its end: its wall time.
fn timed(command: &mut Command) -> Duration {
    let started = Instant::now();
    let status = command.stdout(Stdio::null()).status().unwrap();
    assert!(status.success());
    started.elapsed()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at]
}

fn mb(bytes: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let mb = bytes as f64 / 1e6;
    format!("{mb:.1} MB")
}

async fn holds(store: &DynStore, key: &str, version: u64) -> bool {
    store
        .get(&Kind::FEATURES, key)
        .await
        .unwrap()
        .is_some_and(|i| i.version() == version)
}

fn main() {
    let (flags, samples, burst) = (arg(0, 10_000), arg(1, 500), arg(2, 5_000));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let redis = Redis::start_local(&[]);
    let dir = tempfile::tempdir().unwrap();

    let flag_map: serde_json::Map<String, Value> = (0..flags)
        .map(|i| (format!("flag-{i:05}"), flag_value(i, 3)))
        .collect();
    let data = json!({"flags": flag_map, "segments": {}});
    let text = data.to_string();
    let text_len = text.len();
    let json_size = text_len as u64;
    let file = dir.path().join("flags.json");
    std::fs::write(&file, &text).unwrap();
    drop(text);

    // The baseline: the CLI loading the same data from a file.
    let load_store = format!("{}?prefix=benchload", redis.url());
    let mut load = common::flagstore_command(&load_store);
    load.args(["load", file.to_str().unwrap()]);
    let load_time = timed(&mut load);
    let (_, load_peak) = common::measured(&load);

    // What the fake server spends rendering its put (on the bench's side, inside the daemon's
    // start-to-healthy time).
    let started = Instant::now();
    let rendered = json!({"path": "/", "data": data}).to_string().len();
    let render_time = started.elapsed();
    assert!(rendered > text_len);

    // The daemon: start to healthy (the put of every flag written).
    let fake = FakeLaunchDarkly::start(SDK_KEY, data);
    let address = format!("127.0.0.1:{}", free_port());
    let store_url = format!("{}?prefix=benchsync", redis.url());
    let started = Instant::now();
    let mut daemon = common::flagstore_command(&store_url)
        .args([
            "sync",
            "--stream-uri",
            fake.uri(),
            "--base-uri",
            fake.uri(),
            "--listen",
            &address,
        ])
        .env("LD_SDK_KEY", SDK_KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while status(&address).as_deref() != Some("healthy") {
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "not healthy after 120 s"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    let put_time = started.elapsed();
    let put_peak = memory(daemon.id(), "VmHWM:");
    let put_resident = memory(daemon.id(), "VmRSS:");

    // A one-shot sync of the same data (polled, written, read back), as a cron job runs it.
    let mut once = common::flagstore_command(&format!("{}?prefix=benchonce", redis.url()));
    once.args([
        "sync",
        "--once",
        "--base-uri",
        fake.uri(),
        "--stream-uri",
        fake.uri(),
    ])
    .env("LD_SDK_KEY", SDK_KEY);
    let (once_time, once_peak) = common::measured(&once);

    let store: DynStore = flagstore_url::open(&store_url).unwrap();
    let direct: DynStore =
        flagstore_url::open(&format!("{}?prefix=benchdirect", redis.url())).unwrap();
    let (latencies, baseline, burst_time, burst_baseline) = runtime.block_on(async {
        // One patch at a time: sent, then watched for.
        let mut latencies = Vec::new();
        let mut baseline = Vec::new();
        for i in 0..samples {
            let version = 4 + i as u64;
            let flag = flag_value(i % 100, version);
            let key = format!("flag-{:05}", i % 100);
            let started = Instant::now();
            fake.patch("flags", flag);
            while !holds(&store, &key, version).await {}
            latencies.push(started.elapsed());

            let (key, json) = realistic_flag(i % 100, version);
            let item = Item::from_json(key.clone(), json).unwrap();
            let started = Instant::now();
            direct.upsert(&Kind::FEATURES, item).await.unwrap();
            while !holds(&direct, &key, version).await {}
            baseline.push(started.elapsed());
        }
        latencies.sort();
        baseline.sort();

        // A burst: every patch sent at once, timed until the last is stored.
        let first = 10_000 + samples as u64;
        let patches: Vec<Value> = (0..burst)
            .map(|i| flag_value(i % 1000, first + i as u64))
            .collect();
        let last = (
            format!("flag-{:05}", (burst - 1) % 1000),
            first + burst as u64 - 1,
        );
        let started = Instant::now();
        for patch in patches {
            fake.patch("flags", patch);
        }
        while !holds(&store, &last.0, last.1).await {}
        let burst_time = started.elapsed();

        let items: Vec<Item> = (0..burst)
            .map(|i| {
                let (key, json) = realistic_flag(i % 1000, first + i as u64);
                Item::from_json(key, json).unwrap()
            })
            .collect();
        let started = Instant::now();
        for item in items {
            direct.upsert(&Kind::FEATURES, item).await.unwrap();
        }
        (latencies, baseline, burst_time, started.elapsed())
    });

    let killed = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(
        daemon.wait().unwrap().success(),
        "the daemon exits 0 on SIGTERM"
    );

    #[allow(clippy::cast_precision_loss)]
    let ratio = |a: u64| a as f64 / json_size as f64;
    let rate = |n: usize, d: Duration| {
        #[allow(clippy::cast_precision_loss)]
        let r = n as f64 / d.as_secs_f64();
        r
    };
    println!("flagstore sync: {flags} flags, JSON {}", mb(json_size));
    println!("| measure | sync | baseline |");
    println!("|---|---:|---:|");
    println!(
        "| put of {flags} flags: start to healthy | {:.0} ms (the fake server's rendering of the put: {:.0} ms of it) | `flagstore load` of the file: {:.0} ms |",
        put_time.as_secs_f64() * 1e3,
        render_time.as_secs_f64() * 1e3,
        load_time.as_secs_f64() * 1e3
    );
    println!(
        "| peak resident memory | {} ({:.1}× the JSON) | `flagstore load`: {} ({:.1}×) |",
        mb(put_peak),
        ratio(put_peak),
        mb(load_peak),
        ratio(load_peak)
    );
    println!(
        "| `sync --once` (poll, write, read back) | {:.0} ms, peak {} ({:.1}× the JSON) | |",
        once_time.as_secs_f64() * 1e3,
        mb(once_peak),
        ratio(once_peak)
    );
    println!(
        "| resident after the put (the data kept in memory) | {} ({:.1}× the JSON) | |",
        mb(put_resident),
        ratio(put_resident)
    );
    println!(
        "| patch to stored, p50 / p99 ({samples} patches) | {:.0} µs / {:.0} µs | upsert alone: {:.0} µs / {:.0} µs |",
        percentile(&latencies, 0.5).as_secs_f64() * 1e6,
        percentile(&latencies, 0.99).as_secs_f64() * 1e6,
        percentile(&baseline, 0.5).as_secs_f64() * 1e6,
        percentile(&baseline, 0.99).as_secs_f64() * 1e6
    );
    println!(
        "| sustained patches ({burst} back to back) | {:.0}/s | sequential upserts: {:.0}/s |",
        rate(burst, burst_time),
        rate(burst, burst_baseline)
    );
}

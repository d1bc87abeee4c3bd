//! Whole `flagstore` processes at scale: `load`, `dump`, `ls`, `status` and `eval` of 1,000,
//! 10,000 and 100,000 realistic flags (about 1.3 KB each: targets, rules, rollouts) on SQLite,
//! Redis and DynamoDB (dynalite; to 10,000), each with its wall time and the process's peak
//! resident memory, beside the data file's size: the measure issue 29's targets are set in
//! (at 100,000 flags: `load` ≤ 2× the file, `dump` ≤ 1.5×, `ls` and `status` ≤ 50 MB, and
//! time linear).
//!
//! ```sh
//! cargo bench -p flagstore-cli --bench scale                       # 1,000, 10,000, 100,000
//! cargo bench -p flagstore-cli --bench scale -- 1000 10000         # the sizes given
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;

use flagstore_integration_tests::dynamodb::DynamoDb;
use flagstore_integration_tests::realistic_flag;
use flagstore_integration_tests::redis::Redis;

/// The command as the tests run it: no settings from the caller's environment.
#[path = "../tests/common/mod.rs"]
mod common;

/// The largest data set DynamoDB (an emulator, one item per write) is measured at.
const DYNAMODB_MOST: usize = 10_000;

/// Writes a data file of `n` realistic flags; its size in bytes.
fn data_file(path: &std::path::Path, n: usize) -> u64 {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    file.write_all(b"{\"flags\":{").unwrap();
    for i in 0..n {
        let (key, json) = realistic_flag(i, 1);
        if i > 0 {
            file.write_all(b",").unwrap();
        }
        write!(file, "\"{key}\":{}", json.replace('\n', "")).unwrap();
    }
    file.write_all(b"},\"segments\":{}}").unwrap();
    file.flush().unwrap();
    drop(file);
    std::fs::metadata(path).unwrap().len()
}

fn mb(bytes: u64) -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let mb = bytes as f64 / 1_000_000.0;
    mb
}

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 10_000, 100_000]
    } else {
        sizes
    };
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start_local(&[]);
    let dynamo = DynamoDb::start();
    println!(
        "{:<9} {:>8} {:>9} {:<8} {:>9} {:>10} {:>12}",
        "backend", "flags", "file MB", "command", "wall s", "peak MB", "peak / file"
    );
    for &n in &sizes {
        let file = dir.path().join(format!("flags-{n}.json"));
        let size = data_file(&file, n);
        let file = file.to_str().unwrap().to_owned();
        let mut stores = vec![
            (
                "sqlite",
                format!("sqlite:{}", dir.path().join(format!("s{n}.db")).display()),
            ),
            ("redis", format!("{}?prefix=scale{n}", redis.url())),
        ];
        if n <= DYNAMODB_MOST {
            stores.push((
                "dynamodb",
                format!(
                    "dynamodb://scale-{n}?endpoint={}&region=us-east-1",
                    dynamo.endpoint()
                ),
            ));
        }
        for (backend, store) in &stores {
            let context =
                r#"{"kind":"user","key":"user-1","email":"a@example.com","country":"de"}"#;
            let runs: [(&str, Vec<&str>); 5] = [
                ("load", vec!["load", "--create-table", &file]),
                ("dump", vec!["dump"]),
                ("ls", vec!["ls"]),
                ("status", vec!["status"]),
                ("eval", vec!["eval", "flag-00001", "--context", context]),
            ];
            for (name, args) in runs {
                let mut command = common::flagstore_command(store);
                command.args(&args);
                let (wall, peak) = common::measured(&command);
                #[allow(clippy::cast_precision_loss)]
                let ratio = peak as f64 / size as f64;
                println!(
                    "{backend:<9} {n:>8} {:>9.1} {name:<8} {:>9.2} {:>10.1} {ratio:>11.2}×",
                    mb(size),
                    wall.as_secs_f64(),
                    mb(peak),
                );
            }
        }
    }
}

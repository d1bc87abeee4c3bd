//! The subcommands.

use std::io::{IsTerminal, Read};
use std::time::{Duration, Instant};

use flagstore::{Collection, DynStore, Item, Kind, PersistentDataStore, redact_url, sort_for_init};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::evaluate::{daemon_client, evaluate, parse_context};
use crate::store_url::{Opened, StoreUrl};
use crate::{CliError, Command, DEFAULT_STORE, bench, data};

const EXAMPLE_FLAGS: &str = include_str!("../../../examples/flags.json");
const EXAMPLE_CONTEXTS: &str = include_str!("../../../examples/contexts.json");

pub(crate) async fn run(store: Option<String>, command: Command) -> Result<(), CliError> {
    // The demo works on a throwaway SQLite file unless a store is named.
    let scratch = (store.is_none() && matches!(command, Command::Demo))
        .then(|| std::env::temp_dir().join(format!("flagstore-demo-{}.db", std::process::id())));
    let url = match (store, &scratch) {
        (Some(url), _) => url,
        (None, Some(path)) => format!("sqlite:{}", path.display()),
        (None, None) => DEFAULT_STORE.to_owned(),
    };
    let parsed = StoreUrl::parse(&url)?;
    if let Command::Load {
        create_table: true, ..
    } = command
    {
        parsed.create_table().await?;
    }
    let opened = parsed.open()?;
    let store = opened.store.clone();
    match command {
        Command::Load { file, .. } => load(&store, &file).await,
        Command::Dump => {
            let (flags, segments) = (
                store.get_all(&Kind::FEATURES).await?,
                store.get_all(&Kind::SEGMENTS).await?,
            );
            println!("{}", data::render(&flags, &segments)?);
            Ok(())
        }
        Command::Ls { kind, json } => ls(&store, kind.as_deref(), json).await,
        Command::Get { kind, key } => {
            let kind = parse_kind(&kind);
            match store.get(&kind, &key).await? {
                Some(item) => {
                    println!("{}", item.json());
                    Ok(())
                }
                None => Err(CliError::new(format!("{kind}/{key} is not in the store"))),
            }
        }
        Command::Copy { to, create_table } => copy(&store, &to, create_table).await,
        Command::Status { json } => status(&url, &opened, json).await,
        Command::Eval {
            flag,
            context,
            json,
        } => {
            let context = parse_context(&context)?;
            require_initialized(&store).await?;
            let client = daemon_client(store)?;
            let result = evaluate(&client, &flag, &context);
            if json {
                println!("{result}");
            } else {
                println!("value:      {}", result["value"]);
                println!("variation:  {}", result["variationIndex"]);
                println!("reason:     {}", result["reason"]);
            }
            Ok(())
        }
        Command::Bench {
            requests,
            concurrency,
            json,
        } => bench::run(store, requests, concurrency, json).await,
        Command::Demo => demo(store, scratch.as_deref()).await,
    }
}

/// `features`, `flags` and `segments` as the SDKs name them; any other kind as given.
fn parse_kind(name: &str) -> Kind {
    match name {
        "features" | "flags" | "flag" => Kind::FEATURES,
        "segments" | "segment" => Kind::SEGMENTS,
        other => Kind::new(other.to_owned()),
    }
}

async fn require_initialized(store: &DynStore) -> Result<(), CliError> {
    if store.is_initialized().await? {
        Ok(())
    } else {
        Err(CliError::new(format!(
            "{store} is not initialized: load flags into it first"
        )))
    }
}

/// A spinner on a terminal, nothing otherwise (pipes and logs get the final line only).
fn spinner(message: String) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new_spinner().with_message(message);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    Some(bar)
}

async fn write_all(store: &DynStore, data: &[Collection], verb: &str) -> Result<(), CliError> {
    let count = |kind: &Kind| {
        data.iter()
            .filter(|c| &c.kind == kind)
            .map(|c| c.items.len())
            .sum::<usize>()
    };
    let plural = |n: usize, noun: &str| {
        if n == 1 {
            format!("1 {noun}")
        } else {
            format!("{n} {noun}s")
        }
    };
    let summary = format!(
        "{} and {}",
        plural(count(&Kind::FEATURES), "flag"),
        plural(count(&Kind::SEGMENTS), "segment")
    );
    let bar = spinner(format!("{verb} {summary} into {store}"));
    let started = Instant::now();
    let result = store.init(data).await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    result?;
    eprintln!("{verb} {summary} into {store} in {:.1?}", started.elapsed());
    Ok(())
}

async fn load(store: &DynStore, file: &str) -> Result<(), CliError> {
    let text = if file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError::new(format!("could not read standard input: {e}")))?;
        text
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| CliError::new(format!("could not read {file}: {e}")))?
    };
    let data = data::parse(&text).map_err(|e| CliError::new(format!("{file}: {e}")))?;
    write_all(store, &data, "loaded").await
}

async fn ls(store: &DynStore, kind: Option<&str>, json: bool) -> Result<(), CliError> {
    let kinds = match kind {
        Some(kind) => vec![parse_kind(kind)],
        None => vec![Kind::FEATURES, Kind::SEGMENTS],
    };
    let mut rows = Vec::new();
    for kind in kinds {
        let mut items = store.get_all(&kind).await?;
        items.sort_by(|a, b| a.key().cmp(b.key()));
        rows.extend(items.into_iter().map(|item| (kind.clone(), item)));
    }
    if json {
        let list: Vec<Value> = rows
            .iter()
            .map(|(kind, i)| json!({"kind": kind.name(), "key": i.key(), "version": i.version(), "deleted": i.is_deleted()}))
            .collect();
        println!("{}", Value::Array(list));
    } else {
        for (kind, item) in rows {
            let deleted = if item.is_deleted() { "  (deleted)" } else { "" };
            println!(
                "{:<10} {:<40} v{}{deleted}",
                kind.name(),
                item.key(),
                item.version()
            );
        }
    }
    Ok(())
}

async fn copy(source: &DynStore, to: &str, create_table: bool) -> Result<(), CliError> {
    let target_url = StoreUrl::parse(to)?;
    if create_table {
        target_url.create_table().await?;
    }
    let target = target_url.open()?.store;
    require_initialized(source).await?;
    let data = sort_for_init(vec![
        Collection::new(Kind::FEATURES, source.get_all(&Kind::FEATURES).await?),
        Collection::new(Kind::SEGMENTS, source.get_all(&Kind::SEGMENTS).await?),
    ]);
    write_all(&target, &data, "copied").await
}

async fn status(url: &str, opened: &Opened, json: bool) -> Result<(), CliError> {
    let store = &opened.store;
    let started = Instant::now();
    let available = store.is_available().await;
    let round_trip = started.elapsed();
    if !available {
        return Err(CliError::new(format!(
            "{store} does not answer (after {round_trip:.1?})"
        )));
    }
    let initialized = store.is_initialized().await?;
    let mut counts = serde_json::Map::new();
    let mut largest: Vec<(Kind, Item, usize)> = Vec::new();
    for kind in [Kind::FEATURES, Kind::SEGMENTS] {
        let items = store.get_all(&kind).await?;
        let deleted = items.iter().filter(|i| i.is_deleted()).count();
        counts.insert(
            kind.name().to_owned(),
            json!({"items": items.len(), "deleted": deleted}),
        );
        for item in items {
            let size = opened
                .limit
                .as_ref()
                .map_or(item.len(), |l| (l.measure)(&kind, &item));
            largest.push((kind.clone(), item, size));
        }
    }
    largest.sort_by_key(|entry| std::cmp::Reverse(entry.2));
    largest.truncate(5);
    let limit = opened.limit.as_ref().map(|l| l.bytes);
    let report = json!({
        "store": redact_url(url),
        "initialized": initialized,
        "counts": counts,
        "sizeLimit": limit,
        "largest": largest.iter().map(|(kind, item, size)| json!({
            "kind": kind.name(), "key": item.key(), "bytes": size,
            "percentOfLimit": limit.map(|l| (*size as f64) * 100.0 / (l as f64)),
        })).collect::<Vec<_>>(),
        "roundTripMs": round_trip.as_secs_f64() * 1e3,
    });
    if json {
        println!("{report}");
        return Ok(());
    }
    println!("store:        {store}");
    println!("initialized:  {}", if initialized { "yes" } else { "no" });
    for (kind, count) in &counts {
        println!(
            "{:<13} {} ({} deleted)",
            format!("{kind}:"),
            count["items"],
            count["deleted"]
        );
    }
    match limit {
        Some(l) => println!("size limit:   {l} bytes per item"),
        None => println!("size limit:   none that flags reach"),
    }
    for (kind, item, size) in &largest {
        let share = limit
            .map(|l| {
                format!(
                    " ({:.1}% of the limit)",
                    (*size as f64) * 100.0 / (l as f64)
                )
            })
            .unwrap_or_default();
        println!("largest:      {kind}/{} {size} bytes{share}", item.key());
    }
    println!("round trip:   {:.2} ms", round_trip.as_secs_f64() * 1e3);
    Ok(())
}

/// Loads the examples into `store` and prints evaluations; removes `scratch` (the throwaway
/// SQLite file, with its WAL files) afterwards.
async fn demo(store: DynStore, scratch: Option<&std::path::Path>) -> Result<(), CliError> {
    println!("flagstore demo on {store}");
    let data = data::parse(EXAMPLE_FLAGS)?;
    write_all(&store, &data, "loaded").await?;
    let contexts: Vec<Value> = serde_json::from_str(EXAMPLE_CONTEXTS)
        .map_err(|e| CliError::new(format!("example contexts: {e}")))?;
    let client = daemon_client(store)?;
    println!(
        "\nEvaluations through the LaunchDarkly Rust SDK in daemon mode, reading the store:\n"
    );
    println!("{:<14} {:<15} {:<28} reason", "context", "flag", "value");
    for raw in &contexts {
        let context = parse_context(&raw.to_string())?;
        for flag in [
            "checkout-v2",
            "banner-text",
            "discount-rate",
            "new-dashboard",
        ] {
            let result = evaluate(&client, flag, &context);
            let key = raw["key"].as_str().unwrap_or_default();
            println!(
                "{key:<14} {flag:<15} {:<28} {}",
                result["value"].to_string(),
                result["reason"]
            );
        }
    }
    client.close();
    if let Some(scratch) = scratch {
        let _ = std::fs::remove_file(scratch);
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", scratch.display()));
        }
    }
    Ok(())
}

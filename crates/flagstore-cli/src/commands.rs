//! The subcommands.

use std::io::{IsTerminal, Read, Write};
use std::time::{Duration, Instant};

use std::collections::HashMap;

use flagstore::backend::UnreadableItem;
use flagstore::backend::redact_url;
use flagstore::changes::FeedEvent;
use flagstore::{Collection, DynStore, Item, Kind, PersistentDataStore, sort_for_init};
use flagstore_sync::DataSet;
use futures::TryStreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};

use crate::evaluate::{Witness, daemon_client, evaluate, parse_context};
use crate::store_url::{ItemLimit, Opened, StoreUrl, open};
use crate::{BigSegmentsCommand, CliError, Command, DEFAULT_STORE, bench, big_segments, sync};

const EXAMPLE_FLAGS: &str = include_str!("../data/flags.json");
const EXAMPLE_CONTEXTS: &str = include_str!("../data/contexts.json");

pub(crate) async fn run(store: Option<String>, command: Command) -> Result<(), CliError> {
    let command = match command {
        // Sync opens its stores itself: a configuration file may name several.
        Command::Sync(args) => return sync::run(store, *args).await,
        command => command,
    };
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
    // Only commands that write may create a store that does not exist yet.
    let writes = matches!(command, Command::Load { .. } | Command::Demo);
    let opened = open(&parsed, writes)?;
    let store = opened.store.clone();
    tracing::debug!("opened {store}");
    match command {
        Command::Load { file, .. } => load(&opened, &file).await,
        Command::Dump { skip_invalid } => dump(&store, skip_invalid).await,
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
        Command::Copy {
            to,
            create_table,
            skip_invalid,
        } => copy(&store, &to, create_table, skip_invalid).await,
        Command::Status { json } => status(&url, &opened, json).await,
        Command::Eval {
            flag,
            context,
            json,
        } => {
            let context = parse_context(&context)?;
            require_initialized(&store).await?;
            let witness = Witness::new(store);
            let client = daemon_client(witness.clone())?;
            let mut result = evaluate(&client, &flag, &context);
            client.close();
            witness.verdict()?;
            let big = witness.big_segments_consulted();
            if !big.is_empty() {
                // What the other SDKs report when they cannot read memberships.
                result["reason"]["bigSegmentsStatus"] = "NOT_CONFIGURED".into();
                eprintln!(
                    "warning: {flag} depends on Big Segment(s) {}: the LaunchDarkly Rust SDK cannot read Big Segment memberships, so their rules did not match and this answer may differ from other SDKs' (bigSegmentsStatus NOT_CONFIGURED)",
                    big.join(", ")
                );
            }
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
            metrics,
        } => {
            if let Some(address) = metrics {
                let render = crate::metrics::install()?;
                crate::metrics::serve(&address, None, render).await?;
            }
            bench::run(store, requests, concurrency, json).await
        }
        Command::Watch { json, metrics } => {
            let feed_metrics = match metrics {
                Some(address) => {
                    let render = crate::metrics::install()?;
                    crate::metrics::serve(&address, None, render).await?;
                    Some(flagstore::changes::FeedMetrics::new(store.backend()))
                }
                None => None,
            };
            crate::watch::run(store, json, feed_metrics).await
        }
        Command::BigSegments { command } => {
            let store = parsed.open_big_segments()?;
            match command {
                BigSegmentsCommand::Load { file } => {
                    let text = read_input(&file)?;
                    big_segments::load(&store, &text)
                        .await
                        .map_err(|e| CliError::new(format!("{file}: {e}")))
                }
                BigSegmentsCommand::Get { context_key, json } => {
                    big_segments::get(&store, &context_key, json).await
                }
                BigSegmentsCommand::Status { json } => big_segments::status(&store, json).await,
            }
        }
        Command::Demo => demo(store, scratch.as_deref()).await,
        Command::Sync(_) => Err(CliError::new("sync runs before any store is opened")),
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

/// What to do about stored values that are not valid items.
#[derive(Clone, Copy)]
enum Unreadable {
    /// Name each on stderr, and fail unless `skip_invalid`: for a dump or copy, a partial
    /// answer would be a silently partial backup.
    Fail { skip_invalid: bool },
    /// Name each on stderr and go on: for listings.
    Warn,
}

/// An unreadable stored item as the commands name it: `features/key (reason)`.
fn described(kind: &Kind, bad: &UnreadableItem) -> String {
    format!("{kind}/{} ({})", bad.key, bad.error)
}

/// Reads every stored value of `kind` a page at a time, handing each readable item to `each`
/// and naming each unreadable one on stderr (failing for those, after the last page, unless
/// `unreadable` says go on). Returns how many were unreadable.
async fn each_item(
    store: &DynStore,
    kind: &Kind,
    unreadable: Unreadable,
    mut each: impl FnMut(Item),
) -> Result<usize, CliError> {
    let mut bad = Vec::new();
    let mut pages = store.pages(kind);
    while let Some(page) = pages.try_next().await? {
        page.items.into_iter().for_each(&mut each);
        bad.extend(page.unreadable.iter().map(|item| described(kind, item)));
    }
    if bad.is_empty() {
        return Ok(0);
    }
    if let Unreadable::Fail {
        skip_invalid: false,
    } = unreadable
    {
        return Err(CliError::new(format!(
            "unreadable stored items: {}; nothing was written. Fix them, or pass --skip-invalid \
             to go on without them",
            bad.join(", ")
        )));
    }
    for item in &bad {
        eprintln!("warning: skipped the unreadable stored item {item}");
    }
    Ok(bad.len())
}

/// Every readable item of `kind`, naming each unreadable one on stderr.
async fn read_kind(
    store: &DynStore,
    kind: &Kind,
    unreadable: Unreadable,
) -> Result<Vec<Item>, CliError> {
    let mut items = Vec::new();
    each_item(store, kind, unreadable, |item| items.push(item)).await?;
    Ok(items)
}

/// Refuses, before anything is written, a data set holding items over the target's size limit.
fn check_sizes(data: &[Collection], limit: Option<&ItemLimit>) -> Result<(), CliError> {
    let Some(limit) = limit else { return Ok(()) };
    let oversized: Vec<String> = data
        .iter()
        .flat_map(|c| c.items.iter().map(move |item| (&c.kind, item)))
        .filter_map(|(kind, item)| {
            let size = limit.size_of(kind, item);
            (size > limit.bytes()).then(|| format!("{kind}/{} is {size} bytes", item.key()))
        })
        .collect();
    if oversized.is_empty() {
        return Ok(());
    }
    Err(CliError::new(format!(
        "{} over {}'s {}-byte item limit, so the store would silently lack {}: {}; nothing was written",
        if oversized.len() == 1 {
            "one item is"
        } else {
            "some items are"
        },
        limit.backend(),
        limit.bytes(),
        if oversized.len() == 1 { "it" } else { "them" },
        oversized.join(", ")
    )))
}

/// Checks that the store holds exactly `data` (keys and versions) after an init.
///
/// On backends whose init is not atomic (DynamoDB, Consul), two loads at the same time can
/// interleave and leave a mix of both data sets. Checking afterwards catches it: a load that
/// succeeds left the store holding exactly its file.
async fn verify(store: &DynStore, data: &[Collection]) -> Result<(), CliError> {
    let mut differences = Vec::new();
    for kind in flagstore::backend::replaced_kinds(data) {
        let mut wanted: HashMap<&str, (u64, bool)> = data
            .iter()
            .filter(|c| &c.kind == kind)
            .flat_map(|c| c.items.iter().map(|i| (i.key(), (i.version(), false))))
            .collect();
        let mut unexpected = |key: &str, version: Option<u64>| match wanted.get_mut(key) {
            Some((wanted, seen)) => {
                *seen = true;
                if version != Some(*wanted) {
                    differences.push(format!("{kind}/{key} has another version"));
                }
            }
            None => differences.push(format!("{kind}/{key} should not be there")),
        };
        let mut pages = store.pages(kind);
        while let Some(page) = pages.try_next().await? {
            for item in &page.items {
                unexpected(item.key(), Some(item.version()));
            }
            for bad in &page.unreadable {
                unexpected(&bad.key, None);
            }
        }
        let mut missing: Vec<_> = wanted
            .iter()
            .filter(|(_, (_, seen))| !seen)
            .map(|(key, _)| format!("{kind}/{key} is missing"))
            .collect();
        missing.sort();
        differences.extend(missing);
    }
    if differences.is_empty() {
        return Ok(());
    }
    let shown: Vec<_> = differences.iter().take(5).cloned().collect();
    Err(CliError::new(format!(
        "the store changed while it was written ({} difference(s): {}{}): was another load or copy \
         writing it at the same time? Run this one again once the other has finished",
        differences.len(),
        shown.join(", "),
        if differences.len() > shown.len() {
            ", …"
        } else {
            ""
        }
    )))
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
    verify(store, data).await?;
    eprintln!("{verb} {summary} into {store} in {:.1?}", started.elapsed());
    Ok(())
}

/// The text of `file`, or of standard input for `-`.
fn read_input(file: &str) -> Result<String, CliError> {
    if file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError::new(format!("could not read standard input: {e}")))?;
        Ok(text)
    } else {
        std::fs::read_to_string(file)
            .map_err(|e| CliError::new(format!("could not read {file}: {e}")))
    }
}

/// A data file to load, every item checked, in the order `init` takes.
fn parse_data(text: &str) -> Result<Vec<Collection>, flagstore_sync::DataError> {
    DataSet::parse_strict(text).map(|data| data.to_collections())
}

/// The data file `file` (standard input for `-`), read as it is parsed: each item's JSON is
/// held once, in the item, and never the whole file beside it.
fn read_data(file: &str) -> Result<Vec<Collection>, CliError> {
    let data = if file == "-" {
        DataSet::read_strict(std::io::stdin().lock())
    } else {
        let opened = std::fs::File::open(file)
            .map_err(|e| CliError::new(format!("could not read {file}: {e}")))?;
        DataSet::read_strict(std::io::BufReader::with_capacity(1 << 16, opened))
    };
    data.map(|data| data.to_collections())
        .map_err(|e| CliError::new(format!("{file}: {e}")))
}

async fn load(opened: &Opened, file: &str) -> Result<(), CliError> {
    let data = read_data(file)?;
    check_sizes(&data, opened.limit.as_ref())?;
    write_all(&opened.store, &data, "loaded").await
}

/// The store's flags and segments as a data file on standard output, written item by item.
async fn dump(store: &DynStore, skip_invalid: bool) -> Result<(), CliError> {
    require_initialized(store).await?;
    let unreadable = Unreadable::Fail { skip_invalid };
    let flags = read_kind(store, &Kind::FEATURES, unreadable).await?;
    let segments = read_kind(store, &Kind::SEGMENTS, unreadable).await?;
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    DataSet::write(&mut out, &flags, &segments)?;
    out.write_all(b"\n")
        .and_then(|()| out.flush())
        .map_err(|e| CliError::new(format!("could not write the data: {e}")))
}

async fn ls(store: &DynStore, kind: Option<&str>, json: bool) -> Result<(), CliError> {
    let kinds = match kind {
        Some(kind) => vec![parse_kind(kind)],
        None => vec![Kind::FEATURES, Kind::SEGMENTS],
    };
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let failed = |e: std::io::Error| CliError::new(format!("could not write the listing: {e}"));
    if json {
        out.write_all(b"[").map_err(failed)?;
    }
    let mut first = true;
    for kind in kinds {
        // Keys and versions only: the items themselves go as each page is read.
        let mut rows: Vec<(Box<str>, u64, bool)> = Vec::new();
        each_item(store, &kind, Unreadable::Warn, |item| {
            rows.push((item.key().into(), item.version(), item.is_deleted()));
        })
        .await?;
        rows.sort_unstable();
        for (key, version, deleted) in rows {
            if json {
                let row = json!({"kind": kind.name(), "key": key, "version": version, "deleted": deleted});
                let comma = if first { "" } else { "," };
                write!(out, "{comma}{row}").map_err(failed)?;
            } else {
                let deleted = if deleted { "  (deleted)" } else { "" };
                writeln!(out, "{:<10} {key:<40} v{version}{deleted}", kind.name())
                    .map_err(failed)?;
            }
            first = false;
        }
    }
    if json {
        out.write_all(b"]\n").map_err(failed)?;
    }
    out.flush().map_err(failed)
}

async fn copy(
    source: &DynStore,
    to: &str,
    create_table: bool,
    skip_invalid: bool,
) -> Result<(), CliError> {
    let target_url = StoreUrl::parse(to)?;
    require_initialized(source).await?;
    let unreadable = Unreadable::Fail { skip_invalid };
    let data = sort_for_init(vec![
        Collection::new(
            Kind::FEATURES,
            read_kind(source, &Kind::FEATURES, unreadable).await?,
        ),
        Collection::new(
            Kind::SEGMENTS,
            read_kind(source, &Kind::SEGMENTS, unreadable).await?,
        ),
    ]);
    if create_table {
        target_url.create_table().await?;
    }
    let target = open(&target_url, true)?;
    check_sizes(&data, target.limit.as_ref())?;
    write_all(&target.store, &data, "copied").await
}

async fn status(url: &str, opened: &Opened, json: bool) -> Result<(), CliError> {
    let store = &opened.store;
    // One real read, not a health check followed by a read: it says why it failed, and a
    // stalled server costs one request timeout, not two.
    let started = Instant::now();
    let initialized = store.is_initialized().await;
    let round_trip = started.elapsed();
    let initialized = match initialized {
        Ok(initialized) => initialized,
        Err(err) if err.is_outage() => {
            return Err(CliError::new(format!(
                "{store} does not answer (after {round_trip:.1?}): {err}"
            )));
        }
        Err(err) => return Err(err.into()),
    };
    let mut counts = serde_json::Map::new();
    // The five largest items so far, as (kind, key, size): every item is looked at once, as
    // its page is read, and none is kept.
    let mut largest: Vec<(Kind, String, usize)> = Vec::new();
    for kind in [Kind::FEATURES, Kind::SEGMENTS] {
        let (mut items, mut deleted) = (0, 0);
        let unreadable = each_item(store, &kind, Unreadable::Warn, |item| {
            items += 1;
            deleted += usize::from(item.is_deleted());
            let size = opened
                .limit
                .as_ref()
                .map_or(item.len(), |l| l.size_of(&kind, &item));
            if largest.len() < 5 || largest.last().is_some_and(|smallest| size > smallest.2) {
                largest.push((kind.clone(), item.key().to_owned(), size));
                largest.sort_by_key(|entry| std::cmp::Reverse(entry.2));
                largest.truncate(5);
            }
        })
        .await?;
        counts.insert(
            kind.name().to_owned(),
            json!({"items": items, "deleted": deleted, "unreadable": unreadable}),
        );
    }
    let limit = opened.limit.as_ref().map(ItemLimit::bytes);
    // Another writer's unreadable sync time spoils that line, not the whole report.
    let big = match &opened.big_segments {
        Some(big) => Some(match big.get_metadata().await {
            Ok(metadata) => big_segments::describe(&metadata),
            Err(err) if err.is_outage() => return Err(err.into()),
            Err(err) => {
                eprintln!("warning: big segments metadata unreadable: {err}");
                json!({"unreadable": err.to_string()})
            }
        }),
        None => None,
    };
    let feed = feed_connected(store).await;
    let report = json!({
        "store": redact_url(url),
        "initialized": initialized,
        "changeFeed": feed.as_ref().map(|via| json!({"connected": via.is_some(), "via": via})),
        "counts": counts,
        "sizeLimit": limit,
        "largest": largest.iter().map(|(kind, key, size)| json!({
            "kind": kind.name(), "key": key, "bytes": size,
            "percentOfLimit": limit.map(|l| (*size as f64) * 100.0 / (l as f64)),
        })).collect::<Vec<_>>(),
        "roundTripMs": round_trip.as_secs_f64() * 1e3,
        "bigSegments": big,
    });
    if json {
        println!("{report}");
        return Ok(());
    }
    println!("store:        {store}");
    println!("initialized:  {}", if initialized { "yes" } else { "no" });
    for (kind, count) in &counts {
        println!(
            "{:<13} {} ({} deleted, {} unreadable)",
            format!("{kind}:"),
            count["items"],
            count["deleted"],
            count["unreadable"]
        );
    }
    match limit {
        Some(l) => println!("size limit:   {l} bytes per item"),
        None => println!("size limit:   none that flags reach"),
    }
    for (kind, key, size) in &largest {
        let share = limit
            .map(|l| {
                format!(
                    " ({:.1}% of the limit)",
                    (*size as f64) * 100.0 / (l as f64)
                )
            })
            .unwrap_or_default();
        println!("largest:      {kind}/{key} {size} bytes{share}");
    }
    if let Some(big) = &big {
        println!("big segments: {}", big_segments::describe_text(big));
    }
    match feed {
        Some(Some(via)) => println!("change feed:  connected, via {via}"),
        Some(None) => println!("change feed:  not connected (see the warning above)"),
        None => println!("change feed:  none"),
    }
    println!("round trip:   {:.2} ms", round_trip.as_secs_f64() * 1e3);
    Ok(())
}

/// Whether the store's change feed connects (within 3 s): what it follows if it does, `None`
/// if not; `None` outside for a store without one.
async fn feed_connected(store: &DynStore) -> Option<Option<String>> {
    let mut feed = store.changes()?;
    match tokio::time::timeout(FEED_CONNECT_WAIT, feed.next()).await {
        Ok(Some(FeedEvent::Connected)) => Some(Some(
            feed.via().unwrap_or_else(|| "its change feed".to_owned()),
        )),
        Ok(Some(FeedEvent::Lost(err))) => {
            eprintln!(
                "warning: the change feed does not connect: {}",
                CliError::from(err)
            );
            Some(None)
        }
        _ => {
            eprintln!("warning: the change feed did not connect within {FEED_CONNECT_WAIT:?}");
            Some(None)
        }
    }
}

/// How long `status` waits for the change feed to connect.
const FEED_CONNECT_WAIT: Duration = Duration::from_secs(3);

/// Loads the examples into `store` and prints evaluations; removes `scratch` (the throwaway
/// SQLite file, with its WAL files) afterwards.
async fn demo(store: DynStore, scratch: Option<&std::path::Path>) -> Result<(), CliError> {
    println!("flagstore demo on {store}");
    let data = parse_data(EXAMPLE_FLAGS)?;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use async_trait::async_trait;
    use flagstore::Result;
    use flagstore::backend::StoredItems;
    use flagstore::memory::MemoryStore;

    use super::*;

    /// A store another loader writes into while this one's init runs.
    #[derive(Debug)]
    struct Interleaved(MemoryStore);

    impl std::fmt::Display for Interleaved {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("interleaved")
        }
    }

    #[async_trait]
    impl PersistentDataStore for Interleaved {
        async fn init(&self, data: &[Collection]) -> Result<()> {
            self.0.init(data).await?;
            let other = Item::from_json("theirs", r#"{"version":1}"#).unwrap();
            self.0.upsert(&Kind::FEATURES, other).await.map(drop)
        }
        async fn get(&self, kind: &Kind, key: &str) -> Result<Option<Item>> {
            self.0.get(kind, key).await
        }
        async fn get_all(&self, kind: &Kind) -> Result<Vec<Item>> {
            self.0.get_all(kind).await
        }
        async fn get_all_checked(&self, kind: &Kind) -> Result<StoredItems> {
            self.0.get_all_checked(kind).await
        }
        async fn upsert(&self, kind: &Kind, item: Item) -> Result<bool> {
            self.0.upsert(kind, item).await
        }
        async fn is_initialized(&self) -> Result<bool> {
            self.0.is_initialized().await
        }
        async fn is_available(&self) -> bool {
            true
        }
    }

    #[tokio::test]
    async fn a_load_that_another_writer_interleaved_with_fails_loudly() {
        let data = parse_data(r#"{"flags": {"mine": {"key":"mine","version":2}}}"#).unwrap();
        let clean: DynStore = Arc::new(MemoryStore::new());
        write_all(&clean, &data, "loaded").await.unwrap();

        let mixed: DynStore = Arc::new(Interleaved(MemoryStore::new()));
        let err = write_all(&mixed, &data, "loaded")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("the store changed while it was written (1 difference(s): features/theirs should not be there)"),
            "{err}"
        );
    }

    #[test]
    fn oversized_items_are_named_with_their_size() {
        let big = "x".repeat(600_000);
        let text =
            format!(r#"{{"flags": {{"a": {{"version":1}}, "big": {{"version":1,"x":"{big}"}}}}}}"#);
        let data = parse_data(&text).unwrap();
        let limit = flagstore_url::open("consul://h").unwrap().item_limit();
        let err = check_sizes(&data, limit.as_ref()).unwrap_err().to_string();
        assert_eq!(
            err,
            "one item is over Consul's 524288-byte item limit, so the store would silently lack it: \
             features/big is 600020 bytes; nothing was written"
        );
        assert!(check_sizes(&data, None).is_ok());
    }
}

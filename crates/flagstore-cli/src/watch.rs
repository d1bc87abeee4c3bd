//! `flagstore watch`: follows the store's change feed and prints each item that changed.
//!
//! Feeds report what they can see (Redis: "a flag changed"; Consul: "something under the prefix
//! changed"), so each report is turned into item lines by re-reading what it covers and
//! comparing versions with what was seen before. A line is printed only for an item whose
//! version changed, appeared or vanished, whoever wrote it.

use std::collections::{BTreeMap, BTreeSet};

use flagstore::changes::{Change, FeedEvent, FeedMetrics};

use flagstore::{DynStore, Kind, PersistentDataStore};
use serde_json::json;

use crate::CliError;

/// What the store held, as far as this watcher knows: each item's version, or `None` for an
/// item stored but unreadable.
type Seen = BTreeMap<(Kind, String), Option<u64>>;

pub(crate) async fn run(
    store: DynStore,
    json: bool,
    metrics: Option<FeedMetrics>,
) -> Result<(), CliError> {
    let Some(mut feed) = store.changes() else {
        return Err(CliError::new(format!(
            "{store} has no change feed: only Redis and Consul stores can be watched (DynamoDB and SQLite have no native one)"
        )));
    };
    let mut kinds: BTreeSet<Kind> = [Kind::FEATURES, Kind::SEGMENTS].into();
    let mut seen = Seen::new();
    // The first reads are the baseline: nothing has changed yet.
    let mut primed = false;
    while let Some(event) = feed.next().await {
        if let Some(metrics) = &metrics {
            metrics.record(&event);
        }
        let connected = matches!(event, FeedEvent::Connected);
        let covered: Vec<Kind> = match event {
            FeedEvent::Lost(err) => {
                eprintln!("change feed down, reconnecting: {}", CliError::from(err));
                continue;
            }
            FeedEvent::Connected => kinds.iter().cloned().collect(),
            FeedEvent::Changed(Change::Item { kind, .. } | Change::Kind(kind)) => {
                kinds.insert(kind.clone());
                vec![kind]
            }
            _ => kinds.iter().cloned().collect(),
        };
        for kind in covered {
            let now = match read(&store, &kind).await {
                Ok(now) => now,
                Err(err) => {
                    eprintln!("could not read {kind}: {err}");
                    continue;
                }
            };
            if primed {
                report(&mut seen, &kind, now, json);
            } else {
                seen.extend(now);
            }
        }
        primed = true;
        if connected {
            // After the reads: every change from here on is printed.
            eprintln!("watching {store}");
        }
    }
    Err(CliError::new("the change feed ended"))
}

async fn read(store: &DynStore, kind: &Kind) -> Result<Seen, CliError> {
    let stored = store.get_all_checked(kind).await?;
    let readable = stored
        .items
        .iter()
        .map(|item| ((kind.clone(), item.key().to_owned()), Some(item.version())));
    let unreadable = stored
        .unreadable
        .iter()
        .map(|u| ((kind.clone(), u.key.clone()), None));
    Ok(readable.chain(unreadable).collect())
}

/// Prints the items of `kind` whose version differs between `seen` and `now`, and remembers `now`.
fn report(seen: &mut Seen, kind: &Kind, now: Seen, json: bool) {
    let before: Seen = seen.extract_if(.., |(k, _), _| k == kind).collect();
    let keys: BTreeSet<&String> = before
        .keys()
        .chain(now.keys())
        .map(|(_, key)| key)
        .collect();
    for key in keys {
        let id = (kind.clone(), key.clone());
        let (old, new) = (before.get(&id), now.get(&id));
        if old == new {
            continue;
        }
        let version = new.copied().flatten();
        if json {
            println!(
                "{}",
                json!({"kind": kind.name(), "key": key, "version": version})
            );
        } else {
            match new {
                Some(Some(version)) => println!("{kind}/{key}  version {version}"),
                Some(None) => println!("{kind}/{key}  unreadable value stored"),
                None => println!("{kind}/{key}  removed"),
            }
        }
    }
    seen.extend(now);
}

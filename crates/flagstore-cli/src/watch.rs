//! `flagstore watch`: follows the store's change feed and prints each item that changed.
//!
//! Feeds report what they can see: one item (DynamoDB, SQLite), some item of a kind (a Redis
//! hash), or anything under the prefix (an `init`, a reconnection). Each report is turned into
//! item lines by re-reading what it covers (the one item, or the whole kind) and comparing with
//! what was seen before. A line is printed only for an item that changed, appeared, was deleted
//! (a tombstone) or vanished, whoever wrote it.

use std::collections::{BTreeMap, BTreeSet};

use flagstore::changes::{Change, FeedEvent, FeedMetrics};
use flagstore::{DynStore, Item, Kind, PersistentDataStore};
use serde_json::json;

use crate::CliError;

/// What one stored item looks like to the watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// An item or a tombstone (`deleted`), at this version.
    Stored { version: u64, deleted: bool },
    /// A value is stored but cannot be read as an item.
    Unreadable,
}

impl State {
    fn of(item: &Item) -> State {
        State::Stored {
            version: item.version(),
            deleted: item.is_deleted(),
        }
    }
}

/// What the store held, as far as this watcher knows.
type Seen = BTreeMap<(Kind, String), State>;

/// What one feed event makes the watcher read again.
enum Reread {
    Kinds(Vec<Kind>),
    Item(Kind, String),
}

pub(crate) async fn run(
    store: DynStore,
    json: bool,
    metrics: Option<FeedMetrics>,
) -> Result<(), CliError> {
    let Some(mut feed) = store.changes() else {
        return Err(CliError::new(format!(
            "{store} has no change feed, so it cannot be watched"
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
        let reread = match event {
            FeedEvent::Lost(err) => {
                eprintln!("change feed down, reconnecting: {}", CliError::from(err));
                continue;
            }
            FeedEvent::Changed(Change::Item { kind, key }) => {
                kinds.insert(kind.clone());
                Reread::Item(kind, key)
            }
            FeedEvent::Changed(Change::Kind(kind)) => {
                kinds.insert(kind.clone());
                Reread::Kinds(vec![kind])
            }
            _ => Reread::Kinds(kinds.iter().cloned().collect()),
        };
        match reread {
            Reread::Item(kind, key) => match store.get(&kind, &key).await {
                Ok(item) => {
                    let now = item.map(|item| State::of(&item));
                    print_change(&mut seen, &kind, &key, now, json);
                }
                // Unreadable, or the read failed: the kind's read tells which.
                Err(_) => reread_kind(&store, &mut seen, &kind, primed, json).await,
            },
            Reread::Kinds(kinds) => {
                for kind in kinds {
                    reread_kind(&store, &mut seen, &kind, primed, json).await;
                }
            }
        }
        primed = true;
        if connected {
            // After the reads: every change from here on is printed.
            let via = feed.via().unwrap_or_else(|| "its change feed".to_owned());
            eprintln!("watching {store} via {via}");
        }
    }
    Err(CliError::new("the change feed ended"))
}

/// Reads `kind` whole and prints what differs from `seen` (once `primed`; before, the read is
/// the baseline).
async fn reread_kind(store: &DynStore, seen: &mut Seen, kind: &Kind, primed: bool, json: bool) {
    let now = match read(store, kind).await {
        Ok(now) => now,
        Err(err) => {
            eprintln!("could not read {kind}: {err}");
            return;
        }
    };
    if primed {
        report(seen, kind, now, json);
    } else {
        seen.extend(now);
    }
}

async fn read(store: &DynStore, kind: &Kind) -> Result<Seen, CliError> {
    let stored = store.get_all_checked(kind).await?;
    let readable = stored
        .items
        .iter()
        .map(|item| ((kind.clone(), item.key().to_owned()), State::of(item)));
    let unreadable = stored
        .unreadable
        .iter()
        .map(|u| ((kind.clone(), u.key.clone()), State::Unreadable));
    Ok(readable.chain(unreadable).collect())
}

/// Prints the items of `kind` that differ between `seen` and `now`, and remembers `now`.
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
        if old != new {
            println!("{}", line(kind, key, new.copied(), json));
        }
    }
    seen.extend(now);
}

/// Prints `key`'s line if `now` differs from what `seen` holds, and remembers it.
fn print_change(seen: &mut Seen, kind: &Kind, key: &str, now: Option<State>, json: bool) {
    let id = (kind.clone(), key.to_owned());
    let before = match now {
        Some(state) => seen.insert(id, state),
        None => seen.remove(&id),
    };
    if before != now {
        println!("{}", line(kind, key, now, json));
    }
}

/// One output line: `{"kind","key","version","deleted"}` with `--json` (version null and
/// deleted true for an item that vanished; version null and deleted false for an unreadable
/// value), else text that says "deleted" for both kinds of deletion.
fn line(kind: &Kind, key: &str, now: Option<State>, json: bool) -> String {
    if json {
        let (version, deleted) = match now {
            Some(State::Stored { version, deleted }) => (Some(version), deleted),
            Some(State::Unreadable) => (None, false),
            None => (None, true),
        };
        return json!({"kind": kind.name(), "key": key, "version": version, "deleted": deleted})
            .to_string();
    }
    match now {
        Some(State::Stored {
            version,
            deleted: false,
        }) => format!("{kind}/{key}  version {version}"),
        Some(State::Stored {
            version,
            deleted: true,
        }) => format!("{kind}/{key}  deleted, version {version}"),
        Some(State::Unreadable) => format!("{kind}/{key}  unreadable value stored"),
        None => format!("{kind}/{key}  deleted, no longer stored"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_tell_deletions_apart() {
        let f = Kind::FEATURES;
        let stored = |version, deleted| Some(State::Stored { version, deleted });
        assert_eq!(
            line(&f, "a", stored(2, false), false),
            "features/a  version 2"
        );
        assert_eq!(
            line(&f, "a", stored(3, true), false),
            "features/a  deleted, version 3"
        );
        assert_eq!(
            line(&f, "a", None, false),
            "features/a  deleted, no longer stored"
        );
        let parsed = |state| -> serde_json::Value {
            serde_json::from_str(&line(&f, "a", state, true)).unwrap()
        };
        assert_eq!(
            parsed(stored(3, true)),
            json!({"kind": "features", "key": "a", "version": 3, "deleted": true})
        );
        assert_eq!(
            parsed(None),
            json!({"kind": "features", "key": "a", "version": null, "deleted": true})
        );
        assert_eq!(
            parsed(Some(State::Unreadable)),
            json!({"kind": "features", "key": "a", "version": null, "deleted": false})
        );
    }
}

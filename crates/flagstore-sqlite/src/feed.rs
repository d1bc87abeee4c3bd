//! The change feed: `PRAGMA data_version` polled on a connection of its own, and the change log
//! every write through a `SqliteStore` appends to in its own transaction.
//!
//! `data_version` moves whenever another connection (any process) commits, and costs nothing
//! to read; only then is the log read, for the rows of this prefix since the last one seen: one
//! [`Change::Item`] per upsert, [`Change::Everything`] per `init`. A commit that logged nothing
//! (a hand-made edit, or an older flagstore) is reported as [`Change::Everything`] too, since
//! it may have changed anything; but only when no logged write comes within the same poll, which
//! hides it (the live cache time then bounds what is missed). Edit the file through a store.

use std::sync::Arc;
use std::time::Duration;

use flagstore::backend::FeedSender;
use flagstore::changes::{Change, ChangeFeed, FeedEvent};
use flagstore::error::Operation;
use flagstore::{Error, Kind};
use rusqlite::{Connection, params};

use crate::store::{BACKEND, Inner, blocking};

/// How often `data_version` is read.
const POLL: Duration = Duration::from_millis(100);

/// Log rows kept: a reader that falls further behind than this (never, at one poll per 100 ms)
/// is told that everything changed.
pub(crate) const LOG_KEPT: i64 = 10_000;

/// Where the feed stands: the last `data_version` and log row it has seen, and which file it
/// has open.
#[derive(Clone, Copy)]
struct Seen {
    data_version: i64,
    row: i64,
    file: Option<FileId>,
}

/// A file's identity: a file deleted and made anew at the same path (a restore, a deploy that
/// ships a new database) is another file, which the feed's open connection no longer sees.
type FileId = (u64, u64);

#[cfg(unix)]
fn file_id(path: &std::path::Path) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(not(unix))]
fn file_id(_path: &std::path::Path) -> Option<FileId> {
    None
}

pub(crate) fn start(inner: Arc<Inner>) -> ChangeFeed {
    ChangeFeed::reconnecting(move |tx| {
        let inner = Arc::clone(&inner);
        async move { follow(&inner, &tx).await }
    })
}

/// Opens the feed's connection and forwards changes until a read fails (the error) or the
/// reader is gone (`None`).
async fn follow(inner: &Arc<Inner>, tx: &FeedSender) -> Option<Error> {
    let opened = blocking(inner, Operation::Watch, |inner| {
        let connection = inner.open_existing(Operation::Watch)?;
        let seen = Seen {
            data_version: data_version(&connection)
                .map_err(|e| inner.error(Operation::Watch, e))?,
            row: last_row(&connection).map_err(|e| inner.error(Operation::Watch, e))?,
            file: file_id(&inner.path),
        };
        Ok((connection, seen))
    })
    .await;
    let (mut connection, mut seen) = match opened {
        Ok(opened) => opened,
        Err(err) => return Some(err),
    };
    let via = format!(
        "SQLite data_version polling of {} every {POLL:?}",
        inner.path.display()
    );
    if !tx.connected(via).await {
        return None;
    }
    let mut ticks = tokio::time::interval(POLL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let polled = blocking(inner, Operation::Watch, move |inner| {
            if file_id(&inner.path) != seen.file {
                return Err(Error::database(
                    BACKEND,
                    Operation::Watch,
                    format!(
                        "{} was replaced or removed; the change feed opens it again",
                        inner.path.display()
                    ),
                ));
            }
            let changes = poll(&connection, inner, &mut seen)
                .map_err(|e| inner.error(Operation::Watch, e))?;
            Ok((connection, seen, changes))
        })
        .await;
        let changes;
        (connection, seen, changes) = match polled {
            Ok(polled) => polled,
            Err(err) => return Some(err),
        };
        for change in changes {
            if !tx.send(FeedEvent::Changed(change)).await {
                return None;
            }
        }
    }
}

/// What changed under the prefix since `seen`, moving it on.
fn poll(connection: &Connection, inner: &Inner, seen: &mut Seen) -> rusqlite::Result<Vec<Change>> {
    let version = data_version(connection)?;
    if version == seen.data_version {
        return Ok(Vec::new());
    }
    seen.data_version = version;
    let last = last_row(connection)?;
    let first_kept = connection.query_row(
        "SELECT COALESCE(MIN(id), 0) FROM flagstore_changes",
        [],
        |row| row.get::<_, i64>(0),
    )?;
    let missed = last == seen.row || (seen.row > 0 && first_kept > seen.row + 1);
    let mut changes = Vec::new();
    if missed {
        // A commit that logged nothing, or rows trimmed before they were read.
        changes.push(Change::Everything);
    } else {
        let mut rows = connection.prepare_cached(
            "SELECT kind, key FROM flagstore_changes WHERE id > ?1 AND prefix = ?2 ORDER BY id",
        )?;
        let logged = rows.query_map(params![seen.row, inner.prefix], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })?;
        for row in logged {
            let (kind, key) = row?;
            let change = match kind.as_str() {
                "" => Change::Everything,
                "features" => Change::Item {
                    kind: Kind::FEATURES,
                    key,
                },
                "segments" => Change::Item {
                    kind: Kind::SEGMENTS,
                    key,
                },
                _ => Change::Item {
                    kind: Kind::new(kind),
                    key,
                },
            };
            if !changes.contains(&change) {
                changes.push(change);
            }
        }
    }
    seen.row = last;
    Ok(changes)
}

fn data_version(connection: &Connection) -> rusqlite::Result<i64> {
    connection.query_row("PRAGMA data_version", [], |row| row.get(0))
}

fn last_row(connection: &Connection) -> rusqlite::Result<i64> {
    connection.query_row(
        "SELECT COALESCE(MAX(id), 0) FROM flagstore_changes",
        [],
        |row| row.get(0),
    )
}

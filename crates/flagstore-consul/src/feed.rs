//! The change feed: Consul blocking queries on the store's prefix.
//!
//! A blocking query on `{prefix}/?keys` answers as soon as anything under the prefix changes
//! (written, deleted, whoever did it) or after the wait, with the same index. Only key lists
//! travel, never the values. Consul's index does not say which key moved, but each folder's own
//! index does say whether it moved: after every change the feed lists `{prefix}/features/`,
//! `{prefix}/segments/` and the marker at once (three small non-blocking queries), and reports
//! [`Change::Kind`] for a kind folder that moved, [`Change::Everything`] for the marker (an
//! `init`) or for a change anywhere else under the prefix.

use std::sync::Arc;
use std::time::Duration;

use flagstore::backend::FeedSender;
use flagstore::changes::{Change, ChangeFeed, FeedEvent};
use flagstore::{Error, Kind};

use crate::http::Http;

/// How long one blocking query waits for a change. It also bounds how long a silent network
/// partition goes unnoticed: a query that does not answer within the wait (plus the request
/// timeout) fails, and the cache falls back to its normal TTL.
const WAIT: Duration = Duration::from_secs(10);

/// One part of the prefix whose own index tells whether it moved.
struct Folder {
    path: String,
    change: Change,
    index: u64,
    keys: usize,
}

impl Folder {
    /// Reads the folder's index again; whether it moved. A folder with no keys answers with
    /// Consul's whole index, which moves on any write anywhere: empty before and after is not
    /// a change of it.
    async fn moved(&mut self, http: &Http) -> Result<bool, Error> {
        let (index, keys) = http.wait_for_keys(&self.path, 0, Duration::ZERO).await?;
        let moved = index != self.index && !(keys == 0 && self.keys == 0);
        self.index = index;
        self.keys = keys;
        Ok(moved)
    }
}

pub(crate) fn start(http: Arc<Http>, prefix: &str) -> ChangeFeed {
    let prefix: Arc<str> = prefix.into();
    ChangeFeed::reconnecting(move |tx| {
        let (http, prefix) = (Arc::clone(&http), Arc::clone(&prefix));
        async move { follow(&http, &prefix, &tx).await }
    })
}

/// Follows the prefix's index until a query fails (the error) or the reader is gone (`None`).
async fn follow(http: &Http, prefix: &str, tx: &FeedSender) -> Option<Error> {
    let folder = format!("{prefix}/");
    let mut index = match http.wait_for_keys(&folder, 0, WAIT).await {
        Ok((index, _)) => index.max(1),
        Err(err) => return Some(err),
    };
    let part = |path: String, change: Change| Folder {
        path,
        change,
        index: 0,
        keys: 0,
    };
    let mut folders = [
        part(format!("{prefix}/features/"), Change::Kind(Kind::FEATURES)),
        part(format!("{prefix}/segments/"), Change::Kind(Kind::SEGMENTS)),
        part(format!("{prefix}/$inited"), Change::Everything),
    ];
    for folder in &mut folders {
        if let Err(err) = folder.moved(http).await {
            return Some(err);
        }
    }
    if !tx
        .connected(format!("Consul blocking queries on {folder}"))
        .await
    {
        return None;
    }
    loop {
        let next = match http.wait_for_keys(&folder, index, WAIT).await {
            Ok((next, _)) => next,
            Err(err) => return Some(err),
        };
        if next == index {
            continue;
        }
        // An index that went backwards (a restored snapshot, a new cluster) restarts the count.
        index = next.max(1);
        let mut changes = Vec::new();
        for folder in &mut folders {
            match folder.moved(http).await {
                Ok(true) => changes.push(folder.change.clone()),
                Ok(false) => {}
                Err(err) => return Some(err),
            }
        }
        // The marker, or something under the prefix beside the two kinds: anything may have
        // changed.
        if changes.is_empty() || changes.contains(&Change::Everything) {
            changes = vec![Change::Everything];
        }
        for change in changes {
            if !tx.send(FeedEvent::Changed(change)).await {
                return None;
            }
        }
    }
}

//! The change feed: Consul blocking queries on the store's prefix.
//!
//! A blocking query on `{prefix}/?keys` answers as soon as anything under the prefix changes
//! (written, deleted, whoever did it) or after the wait, with the same index. Only the key list
//! travels, never the values; a change is reported as [`Change::Everything`], because the index
//! does not say which key moved.

use std::sync::Arc;
use std::time::Duration;

use flagstore::Error;
use flagstore::backend::FeedSender;
use flagstore::backend::Reconnect;
use flagstore::changes::{Change, ChangeFeed, FeedEvent};

use crate::http::Http;

/// How long one blocking query waits for a change. It also bounds how long a silent network
/// partition goes unnoticed: a query that does not answer within the wait (plus the request
/// timeout) fails, and the cache falls back to its normal TTL.
const WAIT: Duration = Duration::from_secs(10);

pub(crate) fn start(http: Arc<Http>, prefix: &str) -> ChangeFeed {
    let folder = format!("{prefix}/");
    ChangeFeed::new(move |tx| async move { run(&http, &folder, &tx).await })
}

async fn run(http: &Http, folder: &str, tx: &FeedSender) {
    let mut backoff = Reconnect::new();
    loop {
        let lost = tokio::select! {
            lost = follow(http, folder, tx, &mut backoff) => lost,
            () = tx.closed() => return,
        };
        let Some(err) = lost else { return };
        if !tx.send(FeedEvent::Lost(err)).await {
            return;
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Follows the prefix's index until a query fails (the error) or the reader is gone (`None`).
async fn follow(
    http: &Http,
    folder: &str,
    tx: &FeedSender,
    backoff: &mut Reconnect,
) -> Option<Error> {
    let mut index = match http.wait_for_keys(folder, 0, WAIT).await {
        Ok(index) => index.max(1),
        Err(err) => return Some(err),
    };
    if !tx
        .connected(format!("Consul blocking queries on {folder}"))
        .await
    {
        return None;
    }
    backoff.reset();
    loop {
        let next = match http.wait_for_keys(folder, index, WAIT).await {
            Ok(next) => next,
            Err(err) => return Some(err),
        };
        if next == index {
            continue;
        }
        // An index that went backwards (a restored snapshot, a new cluster) restarts the count.
        index = next.max(1);
        if !tx.send(FeedEvent::Changed(Change::Everything)).await {
            return None;
        }
    }
}

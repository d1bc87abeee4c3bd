//! Client tracking: `CLIENT TRACKING ON BCAST PREFIX {prefix}:` on a RESP3 connection to each
//! server, which then pushes an `invalidate` message naming every key under the prefix that any
//! client changed, and one with no keys when the data was flushed.
//!
//! Unlike keyspace notifications it needs no server setting (managed services that forbid
//! `CONFIG SET` allow it) and it sees `FLUSHALL`/`FLUSHDB`. Tracking is per connection: each
//! reconnection, failover or cluster change sets it up again on the servers of the moment. A
//! server tracks keys across all its databases, so a write to the same key in another database
//! is reported too: a spare refresh, never a missed change.

use deadpool_redis::redis::{
    self, Client, ErrorKind, ProtocolVersion, PushInfo, PushKind, RedisError, RedisResult, Value,
};
use flagstore::Error;
use flagstore::backend::FeedSender;
use flagstore::changes::{Change, FeedEvent};
use flagstore::error::Operation;
use std::time::Duration;
use tokio::sync::mpsc;

use super::{Ended, Feed, HEARTBEAT, closed, ping_all};
use crate::error::{BACKEND, from_redis};

impl Feed {
    /// Turns tracking on at every server and forwards invalidations until a connection fails,
    /// a server refuses tracking, or the reader is gone.
    pub(super) async fn follow_tracking(&self, clients: &[Client], tx: &FeedSender) -> Ended {
        let timeouts = self.topology.timeouts();
        // Unbounded, as the driver needs: invalidations are a few bytes each, and this loop
        // drains them as fast as the reader takes events.
        let (pushes_tx, mut pushes) = mpsc::unbounded_channel::<PushInfo>();
        let tracked = format!("{}:", self.prefix);
        let mut connections = Vec::with_capacity(clients.len());
        for client in clients {
            let client = match resp3(client) {
                Ok(client) => client,
                Err(err) => {
                    return Ended::Lost(from_redis(Operation::Watch, timeouts.connect, err));
                }
            };
            let config = timeouts
                .connection_config()
                .set_push_sender(pushes_tx.clone());
            let budget = timeouts.connect_and_answer();
            let connect = client.get_multiplexed_async_connection_with_config(&config);
            let mut connection = match self.step(budget, connect).await {
                Ok(connection) => connection,
                Err(ended) => return ended,
            };
            let mut tracking = redis::cmd("CLIENT");
            tracking
                .arg("TRACKING")
                .arg("ON")
                .arg("BCAST")
                .arg("PREFIX")
                .arg(&tracked);
            let answer = tracking.query_async::<Value>(&mut connection);
            if let Err(ended) = self.step(timeouts.request, answer).await {
                return ended;
            }
            connections.push(connection);
        }
        // Only the connections hold senders now: the channel closes when they all have.
        drop(pushes_tx);
        let via = format!(
            "Redis client tracking (BCAST PREFIX {tracked}) on {}",
            Feed::servers(clients.len())
        );
        if !tx.connected(via).await {
            return Ended::ReaderGone;
        }
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                push = pushes.recv() => {
                    let push = match push {
                        Some(push) if push.kind != PushKind::Disconnection => push,
                        _ => return Ended::Lost(closed("client tracking invalidations")),
                    };
                    if push.kind != PushKind::Invalidate {
                        continue;
                    }
                    for change in self.invalidated(&push.data) {
                        if !tx.send(FeedEvent::Changed(change)).await {
                            return Ended::ReaderGone;
                        }
                    }
                }
                _ = heartbeat.tick() => {
                    if let Err(err) = ping_all(self, &mut connections).await {
                        return Ended::Lost(err);
                    }
                }
            }
        }
    }

    /// One step of setting tracking up, within `budget`: a server's refusal is told apart from
    /// a failed connection, so that `auto` can fall back.
    async fn step<T>(
        &self,
        budget: Duration,
        call: impl Future<Output = RedisResult<T>>,
    ) -> Result<T, Ended> {
        match tokio::time::timeout(budget, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) if is_refusal(&err) => Err(Ended::TrackingRefused(Error::database(
                BACKEND,
                Operation::Watch,
                format!(
                    "the server refused client tracking (CLIENT TRACKING needs Redis 6 or later, RESP3, and the CLIENT command allowed): {err}"
                ),
            ))),
            Ok(Err(err)) => Err(Ended::Lost(from_redis(Operation::Watch, budget, err))),
            Err(_) => Err(Ended::Lost(Error::timeout(
                BACKEND,
                Operation::Watch,
                budget,
            ))),
        }
    }

    /// The changes one `invalidate` push reports: everything for a flush (no keys), else one
    /// per key of this store's.
    fn invalidated(&self, data: &[Value]) -> Vec<Change> {
        let mut changes = Vec::new();
        for value in data {
            match value {
                Value::Nil => return vec![Change::Everything],
                Value::Array(keys) | Value::Set(keys) => {
                    for key in keys {
                        let key = match key {
                            Value::BulkString(bytes) => bytes.as_slice(),
                            Value::SimpleString(text) => text.as_bytes(),
                            _ => continue,
                        };
                        match self.change_for(key) {
                            Some(Change::Everything) => return vec![Change::Everything],
                            Some(change) if !changes.contains(&change) => changes.push(change),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        changes
    }
}

/// `client`, speaking RESP3: pushes arrive on the connection they concern only in RESP3.
fn resp3(client: &Client) -> RedisResult<Client> {
    let info = client.get_connection_info().clone();
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    Client::open(info.set_redis_settings(settings))
}

/// Whether the server answered that it will not track (no RESP3, no `CLIENT TRACKING`, an ACL
/// forbidding it), rather than the connection failing.
fn is_refusal(err: &RedisError) -> bool {
    if err.is_io_error() || err.is_timeout() || err.is_connection_dropped() {
        return false;
    }
    matches!(
        err.kind(),
        ErrorKind::Server(_) | ErrorKind::Extension | ErrorKind::RESP3NotSupported
    )
}

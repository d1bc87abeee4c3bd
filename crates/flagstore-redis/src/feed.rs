//! The change feed: Redis keyspace notifications on the store's keys.
//!
//! Redis announces every command that touches a key on `__keyspace@{db}__:{key}` when the
//! server's `notify-keyspace-events` asks for it. A hash is one key, so the feed sees "some flag
//! changed" ([`Change::Kind`]), not which one; the marker `{prefix}:$inited` changing means an
//! `init` ([`Change::Everything`]). It sees every writer: other SDKs, the Relay Proxy, `flagstore
//! load`, `redis-cli`. `FLUSHDB` and `FLUSHALL` are not announced by Redis; a server restart is
//! (the feed's connection drops).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_redis::redis::{self, Client, Msg, Value};
use flagstore::backend::FeedSender;
use flagstore::backend::Reconnect;
use flagstore::changes::{Change, ChangeFeed, FeedEvent};
use flagstore::error::Operation;
use flagstore::{Error, Kind, Result};
use futures::StreamExt;
use futures::stream::{self, BoxStream};

use crate::error::BACKEND;
use crate::topology::Topology;

/// The event classes the feed needs besides `K` (keyspace): generic (`DEL`, `RENAME`,
/// `EXPIRE`), string (`SET` of the marker), hash, expired and evicted. `A` stands for all classes.
const NEEDED_CLASSES: &str = "g$hxe";

/// How often the feed checks that its connections still answer. A dead server closes them at
/// once; this catches a silent network partition.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Everything a running feed needs; shared by every feed the store opens.
pub(crate) struct Feed {
    topology: Arc<Topology>,
    prefix: String,
    configure_events: bool,
    /// Whether the "cannot check notify-keyspace-events" warning was logged already.
    unchecked_reported: AtomicBool,
}

impl Feed {
    pub(crate) fn new(topology: Arc<Topology>, prefix: String, configure_events: bool) -> Feed {
        Feed {
            topology,
            prefix,
            configure_events,
            unchecked_reported: AtomicBool::new(false),
        }
    }

    pub(crate) fn start(self: &Arc<Self>) -> ChangeFeed {
        let feed = Arc::clone(self);
        ChangeFeed::new(move |tx| async move { feed.run(tx).await })
    }

    async fn run(&self, tx: FeedSender) {
        let mut backoff = Reconnect::new();
        loop {
            let lost = tokio::select! {
                lost = self.follow(&tx, &mut backoff) => lost,
                () = tx.closed() => return,
            };
            let Some(err) = lost else { return };
            if !tx.send(FeedEvent::Lost(err)).await {
                return;
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    /// Connects, subscribes, and forwards notifications until a connection fails (the error) or
    /// the reader is gone (`None`).
    async fn follow(&self, tx: &FeedSender, backoff: &mut Reconnect) -> Option<Error> {
        let clients = match self.topology.primaries(Operation::Watch).await {
            Ok(clients) => clients,
            Err(err) => return Some(err),
        };
        let pattern = format!(
            "__keyspace@{}__:{}:*",
            self.topology.db(),
            glob_escape(&self.prefix)
        );
        let timeouts = self.topology.timeouts();
        let mut sinks = Vec::with_capacity(clients.len());
        let mut streams: Vec<BoxStream<'static, Option<Msg>>> = Vec::with_capacity(clients.len());
        for client in &clients {
            if let Err(err) = self.check_events(client).await {
                return Some(err);
            }
            let subscribed = self
                .bounded(timeouts.connect_and_answer(), async {
                    let mut pubsub = client.get_async_pubsub().await?;
                    pubsub.psubscribe(&pattern).await?;
                    Ok(pubsub.split())
                })
                .await;
            let (sink, messages) = match subscribed {
                Ok(halves) => halves,
                Err(err) => return Some(err),
            };
            sinks.push(sink);
            // A closed connection ends its stream: `None` marks that.
            streams.push(
                messages
                    .map(Some)
                    .chain(stream::once(async { None }))
                    .boxed(),
            );
        }
        if !tx.send(FeedEvent::Connected).await {
            return None;
        }
        backoff.reset();
        let mut messages = stream::select_all(streams);
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = messages.next() => {
                    let Some(Some(message)) = message else {
                        return Some(Error::database(
                            BACKEND,
                            Operation::Watch,
                            "the connection carrying keyspace notifications closed",
                        ));
                    };
                    if let Some(change) = self.change(&message)
                        && !tx.send(FeedEvent::Changed(change)).await
                    {
                        return None;
                    }
                }
                _ = heartbeat.tick() => {
                    for sink in &mut sinks {
                        let pong = self.bounded(timeouts.request, async {
                            sink.ping::<Value>().await
                        });
                        if let Err(err) = pong.await {
                            return Some(err);
                        }
                    }
                }
            }
        }
    }

    /// Makes sure the server announces what the feed needs, setting it if allowed to.
    async fn check_events(&self, client: &Client) -> Result<()> {
        let mut conn = self.topology.connect(Operation::Watch, client).await?;
        let current: redis::RedisResult<Vec<String>> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("notify-keyspace-events")
            .query_async(&mut conn)
            .await;
        let current = match current {
            Ok(pair) => pair.get(1).cloned().unwrap_or_default(),
            Err(err) => {
                // Managed services often rename or forbid CONFIG; the setting may still be right.
                if !self.unchecked_reported.swap(true, Ordering::AcqRel) {
                    tracing::warn!(
                        error = %err,
                        "cannot read the server's notify-keyspace-events; the change feed assumes it includes K{NEEDED_CLASSES}"
                    );
                }
                return Ok(());
            }
        };
        let missing = missing_events(&current);
        if missing.is_empty() {
            return Ok(());
        }
        if !self.configure_events {
            return Err(Error::config(
                BACKEND,
                format!(
                    "the server's notify-keyspace-events is {current:?} and lacks {missing:?}, so the change feed would miss changes: set it to include K{NEEDED_CLASSES} (CONFIG SET notify-keyspace-events K{NEEDED_CLASSES}, or in redis.conf), or let the store set it: configure_keyspace_events(true) on the builder, keyspace_events=configure in a store URL"
                ),
            ));
        }
        let wanted = format!("{current}{missing}");
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("notify-keyspace-events")
            .arg(&wanted)
            .query_async::<()>(&mut conn)
            .await
            .map_err(|err| {
                Error::config_caused_by(
                    BACKEND,
                    format!(
                        "could not set notify-keyspace-events to {wanted:?}; set it on the server"
                    ),
                    err,
                )
            })?;
        tracing::info!(setting = %wanted, "set the server's notify-keyspace-events for the change feed");
        Ok(())
    }

    /// What a notification means for this store, if anything.
    fn change(&self, message: &Msg) -> Option<Change> {
        let channel = message.get_channel_name();
        let key = channel
            .strip_prefix(&format!("__keyspace@{}__:", self.topology.db()))?
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(':')?;
        change_for_key(key)
    }

    async fn bounded<T>(
        &self,
        budget: Duration,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T> {
        self.topology.bounded(Operation::Watch, budget, call).await
    }
}

/// The change a write to `{prefix}:{key}` is. Keys that hold no kind (Big Segments data,
/// anything with a `:` in it) are not this store's data.
fn change_for_key(key: &str) -> Option<Change> {
    match key {
        "$inited" => Some(Change::Everything),
        "big_segments_synchronized_on" => None,
        kind if kind.contains(':') || kind.is_empty() => None,
        "features" => Some(Change::Kind(Kind::FEATURES)),
        "segments" => Some(Change::Kind(Kind::SEGMENTS)),
        kind => Some(Change::Kind(Kind::new(kind.to_owned()))),
    }
}

/// The event letters `current` lacks: `K`, then the classes not covered (`A` covers all).
fn missing_events(current: &str) -> String {
    let mut missing = String::new();
    if !current.contains('K') {
        missing.push('K');
    }
    if !current.contains('A') {
        missing.extend(NEEDED_CLASSES.chars().filter(|c| !current.contains(*c)));
    }
    missing
}

/// `text` as a literal in a Redis glob pattern.
pub(crate) fn glob_escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_changes() {
        assert_eq!(change_for_key("$inited"), Some(Change::Everything));
        assert_eq!(
            change_for_key("features"),
            Some(Change::Kind(Kind::FEATURES))
        );
        assert_eq!(change_for_key("big_segment_include:abc"), None);
        assert_eq!(change_for_key("big_segments_synchronized_on"), None);
    }

    #[test]
    fn missing_event_letters() {
        assert_eq!(missing_events(""), "Kg$hxe");
        assert_eq!(missing_events("KA"), "");
        assert_eq!(missing_events("Kh"), "g$xe");
        assert_eq!(missing_events("AKE"), "");
    }

    #[test]
    fn prefixes_are_literal_in_patterns() {
        assert_eq!(glob_escape("{ld}*x?[a]\\"), "{ld}\\*x\\?\\[a\\]\\\\");
    }
}

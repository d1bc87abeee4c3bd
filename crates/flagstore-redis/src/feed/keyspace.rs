//! Keyspace notifications on the store's keys.
//!
//! Redis announces every command that touches a key on `__keyspace@{db}__:{key}` when the
//! server's `notify-keyspace-events` asks for it. It sees every writer: other SDKs, the Relay
//! Proxy, `flagstore load`, `redis-cli`. `FLUSHDB` and `FLUSHALL` are not announced; a server
//! restart is (the feed's connection drops).

use std::sync::atomic::Ordering;

use deadpool_redis::redis::{self, Client, Msg, Value};
use flagstore::backend::FeedSender;
use flagstore::changes::FeedEvent;
use flagstore::error::Operation;
use flagstore::{Error, Result};
use futures::StreamExt;
use futures::stream::{self, BoxStream};

use super::{Ended, Feed, HEARTBEAT, closed};
use crate::error::BACKEND;

/// The event classes the feed needs besides `K` (keyspace): generic (`DEL`, `RENAME`,
/// `EXPIRE`), string (`SET` of the marker), hash, expired and evicted. `A` stands for all classes.
const NEEDED_CLASSES: &str = "g$hxe";

impl Feed {
    /// Subscribes on every server and forwards notifications until a connection fails or the
    /// reader is gone.
    pub(super) async fn follow_keyspace(&self, clients: &[Client], tx: &FeedSender) -> Ended {
        let pattern = format!(
            "__keyspace@{}__:{}:*",
            self.topology.db(),
            glob_escape(&self.prefix)
        );
        let timeouts = self.topology.timeouts();
        let mut sinks = Vec::with_capacity(clients.len());
        let mut streams: Vec<BoxStream<'static, Option<Msg>>> = Vec::with_capacity(clients.len());
        for client in clients {
            if let Err(err) = self.check_events(client).await {
                return Ended::Lost(err);
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
                Err(err) => return Ended::Lost(err),
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
        let via = format!(
            "Redis keyspace notifications on {}",
            Feed::servers(clients.len())
        );
        if !tx.connected(via).await {
            return Ended::ReaderGone;
        }
        let mut messages = stream::select_all(streams);
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = messages.next() => {
                    let Some(Some(message)) = message else {
                        return Ended::Lost(closed("keyspace notifications"));
                    };
                    if let Some(change) = self.keyspace_change(&message)
                        && !tx.send(FeedEvent::Changed(change)).await
                    {
                        return Ended::ReaderGone;
                    }
                }
                _ = heartbeat.tick() => {
                    for sink in &mut sinks {
                        let pong = self.bounded(timeouts.request, sink.ping::<Value>());
                        if let Err(err) = pong.await {
                            return Ended::Lost(err);
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
    fn keyspace_change(&self, message: &Msg) -> Option<flagstore::changes::Change> {
        let channel = message.get_channel_name();
        let key = channel.strip_prefix(&format!("__keyspace@{}__:", self.topology.db()))?;
        self.change_for(key.as_bytes())
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

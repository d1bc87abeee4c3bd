//! The change feed: which of the store's keys some writer changed, from every server holding
//! them (the one server, the primary the Sentinels name, every cluster primary).
//!
//! Two mechanisms, picked by [`FeedMode`]:
//! - **client tracking** ([`tracking`]): `CLIENT TRACKING ON BCAST PREFIX {prefix}:` over RESP3
//!   (Redis 6+, Valkey). It needs no server setting and reports a `FLUSHALL`/`FLUSHDB` as an
//!   invalidation of everything.
//! - **keyspace notifications** ([`keyspace`]): `__keyspace@{db}__:{prefix}:*`, which needs the
//!   server's `notify-keyspace-events` and says nothing about a flush.
//!
//! Either way a hash is one key, so a change to flags is [`Change::Kind`] (not which flag), and
//! a change to the marker `{prefix}:$inited` is [`Change::Everything`].

mod keyspace;
mod tracking;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use deadpool_redis::redis::{self, Value};
use flagstore::backend::FeedSender;
use flagstore::changes::{Change, ChangeFeed};
use flagstore::error::Operation;
use flagstore::{Error, Kind, Result};

use crate::error::BACKEND;
use crate::topology::Topology;

pub(crate) use keyspace::glob_escape;

/// How often the feed checks that its connections still answer. A dead server closes them at
/// once; this catches a silent network partition.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Which mechanism a Redis store's [change feed](flagstore::PersistentDataStore::changes)
/// follows: [`RedisStoreBuilder::feed`](crate::RedisStoreBuilder::feed), or `feed=` in a store
/// URL.
///
/// ```
/// use flagstore_redis::FeedMode;
///
/// assert_eq!("tracking".parse::<FeedMode>()?, FeedMode::Tracking);
/// assert_eq!(FeedMode::default(), FeedMode::Auto);
/// # Ok::<(), flagstore::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum FeedMode {
    /// Client tracking where the server offers it, keyspace notifications otherwise: decided
    /// each time the feed connects, so a server upgraded (or failed over to) is followed by the
    /// better mechanism. The default.
    #[default]
    Auto,
    /// `CLIENT TRACKING ON BCAST PREFIX` with RESP3 pushes: Redis 6 or later, or Valkey. Needs no
    /// server configuration and sees flushes. A server that refuses it (Redis 5, an ACL without
    /// `CLIENT`) is reported as the feed's error.
    Tracking,
    /// Keyspace notifications: any Redis version, but the server's `notify-keyspace-events` must
    /// include them (see
    /// [`configure_keyspace_events`](crate::RedisStoreBuilder::configure_keyspace_events)), and a
    /// `FLUSHALL` or `FLUSHDB` goes unseen.
    Keyspace,
}

impl FeedMode {
    /// The name a store URL gives it: `auto`, `tracking`, `keyspace`.
    pub fn as_str(self) -> &'static str {
        match self {
            FeedMode::Auto => "auto",
            FeedMode::Tracking => "tracking",
            FeedMode::Keyspace => "keyspace",
        }
    }
}

impl fmt::Display for FeedMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FeedMode {
    type Err = Error;

    fn from_str(name: &str) -> Result<Self> {
        match name {
            "auto" => Ok(FeedMode::Auto),
            "tracking" => Ok(FeedMode::Tracking),
            "keyspace" => Ok(FeedMode::Keyspace),
            other => Err(Error::config(
                BACKEND,
                format!("feed={other:?}: the feeds are auto, tracking and keyspace"),
            )),
        }
    }
}

/// Everything a running feed needs; shared by every feed the store opens.
pub(crate) struct Feed {
    topology: Arc<Topology>,
    prefix: String,
    mode: FeedMode,
    configure_events: bool,
    /// Whether the "cannot check notify-keyspace-events" warning was logged already.
    unchecked_reported: AtomicBool,
    /// Whether `auto`'s fall-back to keyspace notifications was logged already.
    fallback_reported: AtomicBool,
}

/// How one connected spell of a feed ended.
enum Ended {
    /// A connection failed, or could not be made.
    Lost(Error),
    /// The reader dropped the feed.
    ReaderGone,
    /// `auto` mode: a server refused client tracking; keyspace notifications are next.
    TrackingRefused(Error),
}

impl From<Error> for Ended {
    fn from(err: Error) -> Self {
        Ended::Lost(err)
    }
}

impl Feed {
    pub(crate) fn new(
        topology: Arc<Topology>,
        prefix: String,
        mode: FeedMode,
        configure_events: bool,
    ) -> Feed {
        Feed {
            topology,
            prefix,
            mode,
            configure_events,
            unchecked_reported: AtomicBool::new(false),
            fallback_reported: AtomicBool::new(false),
        }
    }

    pub(crate) fn start(self: &Arc<Self>) -> ChangeFeed {
        let feed = Arc::clone(self);
        ChangeFeed::reconnecting(move |tx| {
            let feed = Arc::clone(&feed);
            async move {
                match feed.follow(&tx).await {
                    Ended::ReaderGone => None,
                    // Only `follow` in auto mode turns a refusal into keyspace notifications.
                    Ended::Lost(err) | Ended::TrackingRefused(err) => Some(err),
                }
            }
        })
    }

    /// One connected spell with the mechanism the mode picks.
    async fn follow(&self, tx: &FeedSender) -> Ended {
        let clients = match self.topology.primaries(Operation::Watch).await {
            Ok(clients) => clients,
            Err(err) => return Ended::Lost(err),
        };
        match self.mode {
            FeedMode::Keyspace => self.follow_keyspace(&clients, tx).await,
            // A refusal ends the spell like any failure: `start` reports it as lost.
            FeedMode::Tracking => self.follow_tracking(&clients, tx).await,
            FeedMode::Auto => match self.follow_tracking(&clients, tx).await {
                Ended::TrackingRefused(err) => {
                    if !self.fallback_reported.swap(true, Ordering::AcqRel) {
                        tracing::info!(
                            error = %err,
                            "the server refused client tracking; the change feed follows keyspace notifications instead"
                        );
                    }
                    self.follow_keyspace(&clients, tx).await
                }
                ended => ended,
            },
        }
    }

    /// What a change to `key` (a whole Redis key) means for this store, if anything.
    fn change_for(&self, key: &[u8]) -> Option<Change> {
        let key = std::str::from_utf8(key).ok()?;
        change_for_key(key.strip_prefix(self.prefix.as_str())?.strip_prefix(':')?)
    }

    /// The servers the feed follows, in words, for [`ChangeFeed::via`].
    fn servers(count: usize) -> String {
        match count {
            1 => "1 server".to_owned(),
            n => format!("{n} servers"),
        }
    }

    async fn bounded<T>(
        &self,
        budget: Duration,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T> {
        self.topology.bounded(Operation::Watch, budget, call).await
    }
}

/// Pings every connection in turn within the request timeout: the heartbeat both mechanisms
/// share.
async fn ping_all<C: redis::aio::ConnectionLike>(feed: &Feed, connections: &mut [C]) -> Result<()> {
    let timeouts = feed.topology.timeouts();
    for connection in connections {
        let ping = redis::cmd("PING");
        feed.bounded(timeouts.request, ping.query_async::<Value>(connection))
            .await?;
    }
    Ok(())
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

/// A connection-level failure of the feed, worded the same by both mechanisms.
fn closed(what: &str) -> Error {
    Error::database(
        BACKEND,
        Operation::Watch,
        format!("the connection carrying {what} closed"),
    )
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
    fn modes_parse_and_name_themselves() {
        for mode in [FeedMode::Auto, FeedMode::Tracking, FeedMode::Keyspace] {
            assert_eq!(mode.as_str().parse::<FeedMode>().unwrap(), mode);
        }
        let err = "push".parse::<FeedMode>().unwrap_err().to_string();
        assert!(err.contains("auto, tracking and keyspace"), "{err}");
    }
}

//! Change feeds: how a database tells a reader that some writer (this process, another SDK, the
//! Relay Proxy, `flagstore load`) changed the data, so that a cache can keep entries for minutes
//! and still drop them within a second of a change.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::{Error, Kind};

/// What a change feed saw change.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Change {
    /// One item was written or removed.
    Item {
        /// Its kind.
        kind: Kind,
        /// Its key.
        key: String,
    },
    /// Some items of this kind changed; the feed cannot say which (a Redis hash is one key).
    Kind(Kind),
    /// Anything may have changed: an `init` replaced the data set, or the marker was removed.
    Everything,
}

/// One event of a [`ChangeFeed`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum FeedEvent {
    /// The feed is connected: every change from now on is reported. Changes made before (while
    /// it was connecting, or during a gap after [`Lost`](Self::Lost)) were not seen, so a reader
    /// treats this event as [`Change::Everything`].
    Connected,
    /// Something changed.
    Changed(Change),
    /// The feed lost its connection (or could not make one) for this reason. It reconnects with
    /// backoff and sends [`Connected`](Self::Connected) when it is back; until then changes go
    /// unseen.
    Lost(Error),
}

type Run = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A stream of [`FeedEvent`]s from one store, from [`PersistentDataStore::changes`].
///
/// The feed runs as a task on the Tokio runtime, started by the first [`next`](Self::next), and
/// stops when the `ChangeFeed` is dropped. Backends make one with [`ChangeFeed::new`], writing
/// the feed as a plain loop that sends events.
///
/// ```
/// use flagstore::changes::{Change, FeedEvent};
/// use flagstore::memory::MemoryStore;
/// use flagstore::{Item, Kind, PersistentDataStore};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = MemoryStore::new();
/// let mut feed = store.changes().expect("the memory store has a feed");
/// assert!(matches!(feed.next().await, Some(FeedEvent::Connected)));
///
/// store.upsert(&Kind::FEATURES, Item::tombstone("beta", 2)).await?;
/// match feed.next().await {
///     Some(FeedEvent::Changed(Change::Item { kind, key })) => {
///         assert_eq!((kind, key.as_str()), (Kind::FEATURES, "beta"));
///     }
///     other => panic!("unexpected {other:?}"),
/// }
/// # Ok::<(), flagstore::Error>(())
/// # }).unwrap();
/// ```
///
/// [`PersistentDataStore::changes`]: crate::PersistentDataStore::changes
pub struct ChangeFeed {
    events: mpsc::Receiver<FeedEvent>,
    run: Option<Run>,
    task: Option<AbortHandle>,
    senders: mpsc::WeakSender<FeedEvent>,
    via: Via,
}

/// What the feed follows, as its backend last said when it connected.
type Via = Arc<Mutex<Option<String>>>;

/// Events a feed buffers while its reader is busy; a full buffer makes the feed wait.
const BUFFERED_EVENTS: usize = 1024;

impl ChangeFeed {
    /// A feed that runs `run`, handing it the sender for its events. `run` should loop until
    /// [`FeedSender::send`] returns `false` (the reader is gone).
    pub fn new<F, Fut>(run: F) -> ChangeFeed
    where
        F: FnOnce(FeedSender) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (tx, events) = mpsc::channel(BUFFERED_EVENTS);
        let senders = tx.downgrade();
        let via = Via::default();
        let sender = FeedSender {
            tx,
            via: Arc::clone(&via),
            connected: Arc::default(),
        };
        ChangeFeed {
            events,
            run: Some(Box::pin(run(sender))),
            task: None,
            senders,
            via,
        }
    }

    /// A feed that runs `follow` again and again: each run connects (saying so with
    /// [`FeedSender::connected`]) and forwards changes until its connection fails (the error,
    /// sent as [`FeedEvent::Lost`]) or the reader is gone (`None`). Runs are spaced by a
    /// [`Reconnect`] backoff, which starts over after a run that connected. The loop every
    /// backend's feed in this workspace is.
    ///
    /// ```
    /// use flagstore::changes::{Change, ChangeFeed, FeedEvent};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let mut feed = ChangeFeed::reconnecting(|tx| async move {
    ///     if !tx.connected("a test feed").await {
    ///         return None;
    ///     }
    ///     tx.send(FeedEvent::Changed(Change::Everything)).await;
    ///     tx.closed().await;
    ///     None
    /// });
    /// assert!(matches!(feed.next().await, Some(FeedEvent::Connected)));
    /// assert_eq!(feed.via().as_deref(), Some("a test feed"));
    /// # });
    /// ```
    pub fn reconnecting<F, Fut>(follow: F) -> ChangeFeed
    where
        F: Fn(FeedSender) -> Fut + Send + 'static,
        Fut: Future<Output = Option<Error>> + Send + 'static,
    {
        ChangeFeed::new(move |tx| async move {
            let mut backoff = Reconnect::new();
            loop {
                let lost = tokio::select! {
                    lost = follow(tx.clone()) => lost,
                    () = tx.closed() => return,
                };
                let Some(err) = lost else { return };
                if tx.connected.swap(false, Ordering::AcqRel) {
                    backoff.reset();
                }
                if !tx.send(FeedEvent::Lost(err)).await {
                    return;
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        })
    }

    /// What the feed follows, in words, as its backend said when it last connected (for
    /// example "Redis client tracking on 3 servers"): a feed that picks its mechanism when it
    /// connects may pick another after a reconnection. `None` before it first connects, or if
    /// the backend does not say.
    pub fn via(&self) -> Option<String> {
        self.via
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// A handle that outlives the feed and tells whether everything the backend runs for it has
    /// stopped: the feed's own task and every task holding a clone of its [`FeedSender`]. A feed
    /// that leaves work running after it is dropped (a subscription still reading, a poll still
    /// looping) keeps a connection open for nothing.
    pub fn tracker(&self) -> FeedTracker {
        FeedTracker {
            senders: self.senders.clone(),
        }
    }

    /// The next event, waiting for one. `None` once the feed has ended for good, which the
    /// feeds in this workspace only do when their store cannot have one. The first call starts
    /// the feed on the current Tokio runtime.
    pub async fn next(&mut self) -> Option<FeedEvent> {
        if let Some(run) = self.run.take() {
            self.task = Some(tokio::spawn(run).abort_handle());
        }
        self.events.recv().await
    }
}

impl Drop for ChangeFeed {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

impl fmt::Debug for ChangeFeed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChangeFeed")
            .field("started", &self.run.is_none())
            .finish_non_exhaustive()
    }
}

/// From [`ChangeFeed::tracker`].
#[derive(Debug, Clone)]
pub struct FeedTracker {
    senders: mpsc::WeakSender<FeedEvent>,
}

impl FeedTracker {
    /// Whether no [`FeedSender`] of the feed is left: its loop and every task it started have
    /// ended.
    pub fn has_ended(&self) -> bool {
        self.senders.strong_count() == 0
    }
}

/// The sending half a backend's feed loop writes to.
#[derive(Debug, Clone)]
pub struct FeedSender {
    tx: mpsc::Sender<FeedEvent>,
    via: Via,
    /// Whether `connected` was called since [`ChangeFeed::reconnecting`] last looked.
    connected: Arc<AtomicBool>,
}

impl FeedSender {
    /// Sends [`FeedEvent::Connected`], recording what the feed now follows for
    /// [`ChangeFeed::via`]; `false` if the reader has dropped the feed.
    pub async fn connected(&self, via: impl Into<String>) -> bool {
        *self
            .via
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(via.into());
        self.connected.store(true, Ordering::Release);
        self.send(FeedEvent::Connected).await
    }

    /// Sends `event`; `false` if the reader has dropped the feed, and the loop should end.
    pub async fn send(&self, event: FeedEvent) -> bool {
        self.tx.send(event).await.is_ok()
    }

    /// Waits until the reader drops the feed.
    pub async fn closed(&self) {
        self.tx.closed().await;
    }
}

/// Delays between reconnection attempts of a feed: random up to a window that starts at 100 ms
/// (or where [`starting_at`](Self::starting_at) says) and doubles to 30 s, back to the start
/// after a connection that held.
#[derive(Debug, Clone)]
pub struct Reconnect {
    window: Duration,
    first: Duration,
}

impl Reconnect {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(30);

    /// A backoff at its first, shortest window.
    pub fn new() -> Self {
        Self::starting_at(Self::FIRST)
    }

    /// A backoff whose first window is `first` (at most 30 s), doubling to 30 s: LaunchDarkly's
    /// SDKs start a stream's reconnection at 1 s.
    ///
    /// ```
    /// use std::time::Duration;
    /// use flagstore::backend::Reconnect;
    ///
    /// let mut backoff = Reconnect::starting_at(Duration::from_secs(1));
    /// let first = backoff.next_delay();
    /// assert!(first >= Duration::from_millis(500) && first <= Duration::from_secs(1));
    /// ```
    pub fn starting_at(first: Duration) -> Self {
        // A zero window would never grow: every attempt would follow the last at once.
        let first = first.clamp(Duration::from_millis(1), Self::MAX);
        Reconnect {
            window: first,
            first,
        }
    }

    /// How long to wait before the next attempt: at least half the window, so that reconnecting
    /// readers spread out but never spin.
    ///
    /// ```
    /// use std::time::Duration;
    /// use flagstore::backend::Reconnect;
    ///
    /// let mut backoff = Reconnect::new();
    /// let first = backoff.next_delay();
    /// assert!(first >= Duration::from_millis(50) && first <= Duration::from_millis(100));
    /// for _ in 0..20 {
    ///     assert!(backoff.next_delay() <= Duration::from_secs(30));
    /// }
    /// ```
    pub fn next_delay(&mut self) -> Duration {
        let window = self.window;
        self.window = (self.window * 2).min(Self::MAX);
        let half = window / 2;
        half + half.mul_f64(fastrand::f64())
    }

    /// Starts over from the shortest window, after a connection that worked.
    pub fn reset(&mut self) {
        self.window = self.first;
    }
}

impl Default for Reconnect {
    fn default() -> Self {
        Self::new()
    }
}

/// A change feed's metrics (feature `metrics`): `flagstore_feed_connected{backend}` (1 while
/// connected) and `flagstore_feed_events_total{backend, event}` (`connected`, `changed`,
/// `lost`), for whoever reads a feed. A live cache records its own; a program that follows a
/// feed itself (as `flagstore watch` does) records each event it takes.
///
/// ```
/// use flagstore::changes::{FeedEvent, FeedMetrics};
///
/// let metrics = FeedMetrics::new("redis");
/// metrics.record(&FeedEvent::Connected);
/// ```
#[cfg(feature = "metrics")]
#[derive(Debug, Clone)]
pub struct FeedMetrics {
    connected: metrics::Gauge,
    events: [metrics::Counter; 3],
}

#[cfg(feature = "metrics")]
impl FeedMetrics {
    /// The series for the feed of `backend` (the label), registered with the recorder installed
    /// now.
    pub fn new(backend: &str) -> FeedMetrics {
        let event = |event: &'static str| metrics::counter!("flagstore_feed_events_total", "backend" => backend.to_owned(), "event" => event);
        FeedMetrics {
            connected: metrics::gauge!("flagstore_feed_connected", "backend" => backend.to_owned()),
            events: [event("connected"), event("changed"), event("lost")],
        }
    }

    /// Counts `event`, and sets the gauge when it connects or loses the feed.
    pub fn record(&self, event: &FeedEvent) {
        let index = match event {
            FeedEvent::Connected => {
                self.connected.set(1.0);
                0
            }
            FeedEvent::Changed(_) => 1,
            FeedEvent::Lost(_) => {
                self.connected.set(0.0);
                2
            }
        };
        self.events[index].increment(1);
    }
}

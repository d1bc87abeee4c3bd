//! Live mode: entries live until the store's change feed says something changed.
//!
//! Every change the feed reports bumps one generation counter, and an entry is fresh only while
//! the counter still holds the value it had when the entry's read *started*. A read that raced
//! a change therefore never outlives it, and invalidating costs one atomic add, whatever the
//! cache holds. The price is that any change re-reads every entry once; changes are rare next
//! to reads.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::task::AbortHandle;

use super::{BACKEND, Inner, lock};
use crate::changes::FeedEvent;
use crate::{Error, Result};

pub(super) struct Live {
    /// How long an entry lives while the feed is connected.
    pub(super) ttl: Duration,
    generation: AtomicU64,
    connected: AtomicBool,
    /// Whether the current disconnection has been logged at warn level already.
    loss_reported: AtomicBool,
    task: Mutex<Option<AbortHandle>>,
}

impl Live {
    pub(super) fn new(ttl: Duration) -> Live {
        Live {
            ttl,
            generation: AtomicU64::new(0),
            connected: AtomicBool::new(false),
            loss_reported: AtomicBool::new(false),
            task: Mutex::new(None),
        }
    }

    pub(super) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(super) fn connected(&self) -> bool {
        self.connected.load(Ordering::Acquire)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }
}

impl Inner {
    /// Starts following the store's change feed, if live mode is on.
    pub(super) fn start_feed(self: &Arc<Self>) -> Result<()> {
        let Some(live) = &self.live else {
            return Ok(());
        };
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
            Error::config(
                BACKEND,
                "invalidate_on_changes() follows the store's change feed on the Tokio runtime: call build() inside one",
            )
        })?;
        let Some(mut feed) = self.store.changes() else {
            tracing::warn!(
                store = %self.store,
                "this store has no change feed; live mode falls back to the normal cache time"
            );
            return Ok(());
        };
        let inner: Weak<Inner> = Arc::downgrade(self);
        let task = runtime.spawn(async move {
            while let Some(event) = feed.next().await {
                let Some(inner) = inner.upgrade() else { return };
                inner.on_feed_event(event);
            }
            if let Some(inner) = inner.upgrade() {
                inner.on_feed_event(FeedEvent::Lost(Error::database(
                    BACKEND,
                    crate::error::Operation::Watch,
                    "the change feed ended",
                )));
            }
        });
        *lock(&live.task) = Some(task.abort_handle());
        Ok(())
    }

    fn on_feed_event(&self, event: FeedEvent) {
        let Some(live) = &self.live else { return };
        #[cfg(feature = "metrics")]
        self.metrics.feed_event(&event);
        match event {
            FeedEvent::Changed(_) => {
                live.generation.fetch_add(1, Ordering::AcqRel);
            }
            FeedEvent::Connected => {
                // Whatever changed while the feed was away went unseen.
                live.generation.fetch_add(1, Ordering::AcqRel);
                live.connected.store(true, Ordering::Release);
                live.loss_reported.store(false, Ordering::Release);
                self.status
                    .send_if_modified(|status| !std::mem::replace(&mut status.live, true));
                tracing::info!(store = %self.store, "change feed connected: entries live until they change");
            }
            FeedEvent::Lost(err) => {
                live.connected.store(false, Ordering::Release);
                self.status
                    .send_if_modified(|status| std::mem::replace(&mut status.live, false));
                if live.loss_reported.swap(true, Ordering::AcqRel) {
                    tracing::debug!(store = %self.store, error = %err, "change feed still down");
                } else {
                    tracing::warn!(
                        store = %self.store,
                        error = %err,
                        "change feed down: entries live for the normal cache time until it reconnects"
                    );
                }
            }
        }
    }
}

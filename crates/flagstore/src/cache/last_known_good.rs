//! Last-known-good: when the database suddenly loses data the cache holds, keep serving it.
//!
//! A Redis restarted without persistence, a `FLUSHALL`, a deleted hash: the database then answers
//! "not found" for every flag, and every evaluation serves its fallback value until someone
//! re-feeds the store. In this opt-in mode a re-read that lost data keeps the cached value
//! instead, when the loss looks like a wipe rather than a write:
//!
//! - an item (not a tombstone) is gone and the database says it is *not initialized*: real
//!   writers delete with tombstones and re-initialize with the marker, so only a wipe does this;
//! - every item of a kind is gone, where the cache held live items of it.
//!
//! The risk, stated in the builder's docs: a writer that really emptied a kind (an `init` with no
//! segments left) is not believed until the kind has items again.

use std::collections::BTreeSet;

use super::Inner;
use super::entry::Cached;
use super::lock;
use crate::Kind;

/// Why the cache is serving last-known-good data.
#[derive(Default)]
pub(super) struct Losses {
    /// The database answered "not initialized" after losing an item.
    wiped: bool,
    /// Kinds whose items all vanished.
    emptied: BTreeSet<Kind>,
}

impl Losses {
    fn any(&self) -> bool {
        self.wiped || !self.emptied.is_empty()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Loss {
    None,
    /// A live item is gone.
    Item,
    /// Every item of the kind is gone.
    Kind,
}

fn loss(previous: &Cached, now: &Cached) -> Loss {
    match (previous, now) {
        (Cached::Item(Some(item)), Cached::Item(None)) if !item.is_deleted() => Loss::Item,
        (Cached::All(before), Cached::All(after))
            if after.items().is_empty() && before.items().iter().any(|i| !i.is_deleted()) =>
        {
            Loss::Kind
        }
        _ => Loss::None,
    }
}

impl Inner {
    /// The value to cache after a re-read of `kind` that returned `now` where the cache held
    /// `previous`.
    pub(super) async fn or_last_known_good(
        &self,
        kind: &Kind,
        previous: Option<Cached>,
        now: Cached,
    ) -> Cached {
        let Some(previous) = previous else {
            return now;
        };
        let loss = loss(&previous, &now);
        let serving = lock(&self.losses).any();
        match loss {
            Loss::Kind => {
                self.note_loss(|losses| {
                    losses.emptied.insert(kind.clone());
                });
                return previous;
            }
            Loss::None if !serving => return now,
            Loss::None | Loss::Item => {}
        }
        // Only now is the marker worth a read: something vanished, or data is coming back.
        match self.store.is_initialized().await {
            Ok(false) if loss == Loss::Item => {
                self.note_loss(|losses| losses.wiped = true);
                previous
            }
            Ok(true) => {
                self.clear_losses(|losses| {
                    losses.wiped = false;
                    let has_items = match &now {
                        Cached::Item(item) => item.is_some(),
                        Cached::All(all) => !all.items().is_empty(),
                    };
                    if has_items {
                        losses.emptied.remove(kind);
                    }
                });
                now
            }
            _ => now,
        }
    }

    /// Forgets every loss: the process initialized the store itself.
    pub(super) fn forget_losses(&self) {
        self.clear_losses(|losses| *losses = Losses::default());
    }

    fn note_loss(&self, record: impl FnOnce(&mut Losses)) {
        let was_serving = {
            let mut losses = lock(&self.losses);
            let was = losses.any();
            record(&mut losses);
            was
        };
        if !was_serving {
            self.status
                .send_modify(|status| status.last_known_good = true);
            tracing::warn!(
                store = %self.store,
                "the store lost data the cache holds (not initialized, or a kind emptied): serving the last known good data until it is back; re-feed the store"
            );
        }
    }

    fn clear_losses(&self, clear: impl FnOnce(&mut Losses)) {
        let cleared = {
            let mut losses = lock(&self.losses);
            let was = losses.any();
            clear(&mut losses);
            was && !losses.any()
        };
        if cleared {
            self.status
                .send_modify(|status| status.last_known_good = false);
            tracing::info!(store = %self.store, "the store has its data again: last-known-good serving ended");
        }
    }
}

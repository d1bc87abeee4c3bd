//! Keeping the cache monotonic: a value read before a write never lands over what that write
//! cached.
//!
//! The race this closes: a `get` misses and reads v1 from the database; before it returns, an
//! `upsert` of v2 succeeds and caches v2; then the slow read finishes. A cache that inserted
//! every finished load would now serve v1 for a whole TTL (in forever mode, until the key is
//! written again).
//!
//! Every change the cache makes on behalf of a write (an upsert's entry, an init's fill, a
//! refusal's invalidation) takes a number from one counter and records it against its kind, or
//! against every kind for an init. A load notes the counter before it reads; when it finishes,
//! it may cache its value only if no write to its kind took a number since. Both the write's
//! change and the load's check-then-insert happen under one lock, so a load either lands before
//! the write's change (which then overwrites or drops it) or sees the write's number and leaves
//! the cache alone. The lock is held only around in-memory cache operations, never around a
//! database call, and a cache hit never touches it.
//!
//! The rule is per kind, not per key: a load that raced a write to another key of its kind is
//! not cached either, which costs one more database read later and never a wrong answer.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::{Mutex as AsyncMutex, MutexGuard};

use super::lock;
use crate::Kind;

/// The write counter and, per kind, the number of the latest write to it.
#[derive(Default)]
pub(super) struct WriteSequence {
    /// Serialises the cache changes of writes against the inserts of finished loads.
    turn: AsyncMutex<()>,
    counter: AtomicU64,
    marks: Mutex<Marks>,
}

#[derive(Default)]
struct Marks {
    /// The latest write that touched every kind (an init, a flush).
    everything: u64,
    kinds: HashMap<Kind, u64>,
}

/// Held while a write changes the cache, or while a load inserts what it read.
pub(super) type Turn<'a> = MutexGuard<'a, ()>;

impl WriteSequence {
    /// What a load notes before it reads the database.
    pub(super) fn stamp(&self) -> u64 {
        self.counter.load(Ordering::Acquire)
    }

    /// The number of the latest write to `kind`.
    pub(super) fn last_write(&self, kind: &Kind) -> u64 {
        let marks = lock(&self.marks);
        marks
            .kinds
            .get(kind)
            .map_or(marks.everything, |&k| k.max(marks.everything))
    }

    /// Starts a write's change to the cache entries of `kind` (of every kind for `None`): loads
    /// that started before it will not cache what they read. Hold the turn while changing the
    /// cache.
    pub(super) async fn write(&self, kind: Option<&Kind>) -> Turn<'_> {
        let turn = self.turn.lock().await;
        self.record(kind);
        turn
    }

    /// Like [`write`](Self::write), for a write whose value was read from the database after
    /// `stamp` was taken: `None`, and no write, if another write to `kind` came since.
    pub(super) async fn write_unless_written_since(
        &self,
        kind: &Kind,
        stamp: u64,
    ) -> Option<Turn<'_>> {
        let turn = self.publish(kind, stamp).await?;
        self.record(Some(kind));
        Some(turn)
    }

    /// The turn to insert a load's value, if no write to `kind` took a number after `stamp`.
    pub(super) async fn publish(&self, kind: &Kind, stamp: u64) -> Option<Turn<'_>> {
        let turn = self.turn.lock().await;
        (self.last_write(kind) <= stamp).then_some(turn)
    }

    fn record(&self, kind: Option<&Kind>) {
        let number = self.counter.fetch_add(1, Ordering::AcqRel) + 1;
        let mut marks = lock(&self.marks);
        match kind {
            Some(kind) => {
                marks.kinds.insert(kind.clone(), number);
            }
            None => {
                // Every kind's mark is now below `everything`; dropping them keeps the map from
                // growing with kinds that are no longer written.
                marks.everything = number;
                marks.kinds.clear();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_write_to_a_kind_blocks_only_earlier_loads_of_that_kind() {
        let seq = WriteSequence::default();
        let before = seq.stamp();
        drop(seq.write(Some(&Kind::FEATURES)).await);
        assert!(seq.publish(&Kind::FEATURES, before).await.is_none());
        assert!(seq.publish(&Kind::SEGMENTS, before).await.is_some());
        let after = seq.stamp();
        assert!(seq.publish(&Kind::FEATURES, after).await.is_some());
        drop(seq.write(None).await);
        assert!(seq.publish(&Kind::SEGMENTS, after).await.is_none());
        assert!(seq.publish(&Kind::new("custom"), after).await.is_none());
        let now = seq.stamp();
        assert!(
            seq.write_unless_written_since(&Kind::FEATURES, now)
                .await
                .is_some()
        );
        // That write counts as one since `now`.
        assert!(
            seq.write_unless_written_since(&Kind::FEATURES, now)
                .await
                .is_none()
        );
        assert!(seq.publish(&Kind::SEGMENTS, now).await.is_some());
    }
}

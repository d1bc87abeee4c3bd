//! Request coalescing: concurrent misses on one key make one database read.
//!
//! moka's `try_get_with` coalesces too, but it inserts whatever the read returned, whenever it
//! returns, even over an entry a write put there in the meantime. Here the load decides itself
//! whether its value may be cached (see [`super::sequence`]), and callers share its result
//! through a cell that exists only while the load runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OnceCell;

use super::entry::{CacheKey, Cached, KeyRef};
use super::lock;
use crate::Result;

/// One load's shared result. If the caller running the load is cancelled, the next waiting
/// caller runs its own load into the same cell.
pub(super) type Shared = Arc<OnceCell<Result<Cached>>>;

/// The loads under way, by key.
#[derive(Default)]
pub(super) struct Loads {
    in_flight: Mutex<HashMap<CacheKey, InFlight>>,
}

struct InFlight {
    /// The write counter when the load was registered.
    stamp: u64,
    shared: Shared,
}

impl Loads {
    /// The load of `key` to wait for: the one under way if it was registered at or after
    /// `last_write` (the latest write to the key's kind), so that no caller is handed what was
    /// read before a write it has already seen complete; otherwise a new one registered at
    /// `stamp`.
    pub(super) fn join(&self, key: KeyRef<'_>, last_write: u64, stamp: u64) -> Shared {
        let mut in_flight = lock(&self.in_flight);
        let owned = key.owned();
        if let Some(load) = in_flight.get(&owned)
            && load.stamp >= last_write
        {
            return Arc::clone(&load.shared);
        }
        // An older load keeps running for the callers already waiting on it.
        let shared = Shared::default();
        in_flight.insert(
            owned,
            InFlight {
                stamp,
                shared: Arc::clone(&shared),
            },
        );
        shared
    }

    /// Forgets `shared` once its result is in hand, unless a newer load replaced it.
    pub(super) fn finish(&self, key: KeyRef<'_>, shared: &Shared) {
        let mut in_flight = lock(&self.in_flight);
        let owned = key.owned();
        if in_flight
            .get(&owned)
            .is_some_and(|load| Arc::ptr_eq(&load.shared, shared))
        {
            in_flight.remove(&owned);
        }
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        lock(&self.in_flight).len()
    }
}

//! The conformance suite every [`PersistentDataStore`](crate::PersistentDataStore) must pass (feature `testing`).
//!
//! A backend's integration test implements [`StoreFactory`] for its database and calls [`run`]:
//!
//! ```
//! use async_trait::async_trait;
//! use flagstore::testing::{self, StoreFactory, UpsertHook};
//! use flagstore::memory::MemoryDatabase;
//! use flagstore::DynStore;
//!
//! struct Memory(MemoryDatabase);
//!
//! #[async_trait]
//! impl StoreFactory for Memory {
//!     async fn store(&self, prefix: &str, hook: Option<UpsertHook>) -> DynStore {
//!         let store = self.0.store(prefix);
//!         std::sync::Arc::new(match hook {
//!             Some(hook) => store.before_upsert_write(hook),
//!             None => store,
//!         })
//!     }
//!     async fn clear(&self, prefix: &str) {
//!         self.0.clear(prefix);
//!     }
//!     async fn unreachable_store(&self) -> DynStore {
//!         let db = MemoryDatabase::new();
//!         db.set_available(false);
//!         std::sync::Arc::new(db.store("any"))
//!     }
//!     fn unreachable_budget(&self) -> std::time::Duration {
//!         std::time::Duration::ZERO // an offline memory database answers at once
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! testing::run(&Memory(MemoryDatabase::new())).await;
//! # });
//! ```
//!
//! Each case uses its own prefix, unique to the run, so cases (and test processes) sharing one
//! server do not see each other's data. Every check is an assertion: a failing store panics the
//! calling test with a message naming the case.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod big_segments;
mod cases;
pub mod changes;
mod gate;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;

use crate::DynStore;

pub use big_segments::{BigSegmentStoreFactory, run_big_segments};
pub use cases::*;
pub use changes::{FeedFactory, run_changes};
pub use gate::{GatedStore, HeldRead};

/// Runs inside an upsert, between reading the stored version and writing the new item: the
/// window a concurrent writer can hit. Stores expose it for the suite's race cases only.
pub type UpsertHook = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Makes stores of one backend for the suite.
#[async_trait]
pub trait StoreFactory: Send + Sync {
    /// A new store instance (its own connection or pool, like another process) whose items live
    /// under `prefix`, running `hook` inside every upsert if one is given.
    async fn store(&self, prefix: &str, hook: Option<UpsertHook>) -> DynStore;

    /// Deletes everything stored under `prefix`, marker included, bypassing the store under test.
    async fn clear(&self, prefix: &str);

    /// A store configured for a server that does not answer (a closed port, say), with short
    /// timeouts so the suite stays quick.
    async fn unreachable_store(&self) -> DynStore;

    /// The longest a call on [`unreachable_store`](Self::unreachable_store) may take by its
    /// configuration (its request timeout, or connect plus request timeout where a call may
    /// spend both): each call must fail within this plus
    /// [`UNREACHABLE_MARGIN`].
    fn unreachable_budget(&self) -> Duration;
}

/// Runs every case of the suite, one after another.
pub async fn run(factory: &dyn StoreFactory) {
    let run = unique_run_id();
    for (name, case) in cases::ALL {
        let prefix = format!("{run}_{name}");
        factory.clear(&prefix).await;
        case(factory, &prefix).await;
        factory.clear(&prefix).await;
    }
}

/// Checks the item reader's fast path against serde_json on one input, panicking on any
/// disagreement: the body of the `item_json` fuzz target (see `fuzz/README.md`), and of the test
/// that replays its corpus.
pub fn check_item_json(input: &[u8]) {
    crate::item::assert_fast_path_agrees(input);
}

/// A prefix fragment no other run (in this process or another) uses at the same time.
pub fn unique_run_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!(
        "ct{}x{}x{}",
        std::process::id(),
        nanos % 1_000_000_000_000,
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

//! The conformance suite every [`BigSegmentStore`](crate::big_segments::BigSegmentStore) must pass.
//!
//! A backend's integration test implements [`BigSegmentStoreFactory`] and calls
//! [`run_big_segments`]; each case uses its own prefix, unique to the run.
//!
//! ```
//! use async_trait::async_trait;
//! use flagstore::testing::{BigSegmentStoreFactory, run_big_segments};
//! use flagstore::big_segments::DynBigSegmentStore;
//! # use flagstore::big_segments::{BigSegmentMembership, BigSegmentMetadata, BigSegmentPatch, BigSegmentStore};
//! # use flagstore::Result;
//! # use std::collections::HashMap;
//! # use std::sync::{Arc, Mutex};
//! # /// A toy in-process store, for this example only.
//! # #[derive(Debug, Default)]
//! # struct Toy(Mutex<(Option<u64>, HashMap<String, BigSegmentMembership>, Option<String>)>);
//! # impl std::fmt::Display for Toy {
//! #     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str("toy") }
//! # }
//! # #[async_trait]
//! # impl BigSegmentStore for Toy {
//! #     async fn get_metadata(&self) -> Result<BigSegmentMetadata> {
//! #         Ok(self.0.lock().unwrap().0.map(BigSegmentMetadata::synchronized_at).unwrap_or_default())
//! #     }
//! #     async fn get_membership(&self, hash: &str) -> Result<Option<BigSegmentMembership>> {
//! #         Ok(self.0.lock().unwrap().1.get(hash).cloned())
//! #     }
//! #     async fn set_memberships(&self, all: &[(String, BigSegmentMembership)]) -> Result<()> {
//! #         let mut state = self.0.lock().unwrap();
//! #         for (hash, m) in all {
//! #             if m.is_empty() { state.1.remove(hash); } else { state.1.insert(hash.clone(), m.clone()); }
//! #         }
//! #         Ok(())
//! #     }
//! #     async fn set_synchronized_on(&self, at: u64) -> Result<()> {
//! #         self.0.lock().unwrap().0 = Some(at);
//! #         Ok(())
//! #     }
//! #     async fn clear_big_segments(&self) -> Result<()> {
//! #         *self.0.lock().unwrap() = Default::default();
//! #         Ok(())
//! #     }
//! #     async fn get_cursor(&self) -> Result<Option<String>> {
//! #         Ok(self.0.lock().unwrap().2.clone())
//! #     }
//! #     async fn apply_patch(&self, patch: &BigSegmentPatch) -> Result<bool> {
//! #         let mut state = self.0.lock().unwrap();
//! #         if !patch.follows(state.2.as_deref()) { return Ok(false); }
//! #         let r = &patch.segment_ref;
//! #         for (hashes, included, add) in [(&patch.included_add, true, true), (&patch.included_remove, true, false),
//! #                                         (&patch.excluded_add, false, true), (&patch.excluded_remove, false, false)] {
//! #             for hash in hashes {
//! #                 let old = state.1.remove(hash).unwrap_or_default();
//! #                 let (mut inc, mut exc): (Vec<String>, Vec<String>) =
//! #                     (old.included().map(str::to_owned).collect(), old.excluded().map(str::to_owned).collect());
//! #                 let set = if included { &mut inc } else { &mut exc };
//! #                 set.retain(|x| x != r);
//! #                 if add { set.push(r.clone()); }
//! #                 let new = BigSegmentMembership::new(inc, exc);
//! #                 if !new.is_empty() { state.1.insert(hash.clone(), new); }
//! #             }
//! #         }
//! #         state.2 = Some(patch.version.clone());
//! #         Ok(true)
//! #     }
//! # }
//!
//! struct Toys(Mutex<HashMap<String, Arc<Toy>>>);
//!
//! #[async_trait]
//! impl BigSegmentStoreFactory for Toys {
//!     async fn store(&self, prefix: &str) -> DynBigSegmentStore {
//!         self.0.lock().unwrap().entry(prefix.to_owned()).or_default().clone()
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! run_big_segments(&Toys(Mutex::default())).await;
//! # });
//! ```

use std::future::Future;
use std::pin::Pin;

use async_trait::async_trait;

use super::unique_run_id;
use crate::big_segments::{
    BigSegmentMembership, BigSegmentPatch, DynBigSegmentStore, context_hash,
};

/// Makes Big Segments stores of one backend for the suite.
#[async_trait]
pub trait BigSegmentStoreFactory: Send + Sync {
    /// A store (its own connection, like another process) whose data lives under `prefix`.
    async fn store(&self, prefix: &str) -> DynBigSegmentStore;
}

type Case = for<'a> fn(
    &'a dyn BigSegmentStoreFactory,
    &'a str,
) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        /// Every Big Segments case, by name, in the order [`run_big_segments`] runs them.
        pub const BIG_SEGMENT_CASES: &[(&str, Case)] = &[$((stringify!($name), |f, p| Box::pin($name(f, p)))),*];
    };
}

cases![
    metadata_is_absent_until_written,
    metadata_round_trips,
    an_unknown_context_has_no_membership,
    memberships_round_trip,
    set_memberships_replaces_and_empty_removes,
    prefixes_are_independent,
    many_contexts_in_one_call,
    clear_removes_memberships_and_metadata,
    patches_apply_in_a_chain_and_move_the_cursor,
    a_patch_off_the_chain_changes_nothing,
    the_sync_time_and_the_cursor_are_independent,
];

/// Runs every case, each on a fresh prefix, clearing it after.
pub async fn run_big_segments(factory: &dyn BigSegmentStoreFactory) {
    let run = unique_run_id();
    for (name, case) in BIG_SEGMENT_CASES {
        let prefix = format!("{run}_{name}");
        case(factory, &prefix).await;
        factory
            .store(&prefix)
            .await
            .clear_big_segments()
            .await
            .unwrap();
    }
}

fn membership(included: &[&str], excluded: &[&str]) -> BigSegmentMembership {
    BigSegmentMembership::new(included.iter().copied(), excluded.iter().copied())
}

/// The metadata of a prefix nobody wrote is "never synchronized", not an error.
pub async fn metadata_is_absent_until_written(factory: &dyn BigSegmentStoreFactory, prefix: &str) {
    let store = factory.store(prefix).await;
    let metadata = store.get_metadata().await.unwrap();
    assert_eq!(metadata.last_synchronized, None, "{store}");
}

/// The synchronization time is stored and read back to the millisecond, by another instance.
pub async fn metadata_round_trips(factory: &dyn BigSegmentStoreFactory, prefix: &str) {
    let writer = factory.store(prefix).await;
    writer.set_synchronized_on(1_700_000_000_123).await.unwrap();
    let reader = factory.store(prefix).await;
    assert_eq!(
        reader.get_metadata().await.unwrap().last_synchronized,
        Some(1_700_000_000_123)
    );
    writer.set_synchronized_on(1_700_000_060_000).await.unwrap();
    assert_eq!(
        reader.get_metadata().await.unwrap().last_synchronized,
        Some(1_700_000_060_000)
    );
}

/// A context no segment mentions has no membership.
pub async fn an_unknown_context_has_no_membership(
    factory: &dyn BigSegmentStoreFactory,
    prefix: &str,
) {
    let store = factory.store(prefix).await;
    let hash = context_hash("nobody");
    assert_eq!(store.get_membership(&hash).await.unwrap(), None);
}

/// Included only, excluded only, and both, for hashes with `+`, `/` and `=` in them.
pub async fn memberships_round_trip(factory: &dyn BigSegmentStoreFactory, prefix: &str) {
    let writer = factory.store(prefix).await;
    // Keys whose hashes hold base64's `+` and `/`, and every hash ends in `=`.
    let cases = [
        ("included-only", membership(&["beta.g1", "staff.g2"], &[])),
        ("excluded-only", membership(&[], &["beta.g1"])),
        ("both", membership(&["beta.g1"], &["beta.g1", "staff.g2"])),
        ("ünïcødé", membership(&["big seg with spaces.g0"], &[])),
    ];
    let written: Vec<(String, BigSegmentMembership)> = cases
        .iter()
        .map(|(key, m)| (context_hash(key), m.clone()))
        .collect();
    writer.set_memberships(&written).await.unwrap();
    let reader = factory.store(prefix).await;
    for (key, expected) in &cases {
        let got = reader.get_membership(&context_hash(key)).await.unwrap();
        assert_eq!(got.as_ref(), Some(expected), "membership of {key}");
    }
    let both = reader
        .get_membership(&context_hash("both"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(both.check("beta.g1"), Some(true), "an inclusion wins");
    assert_eq!(both.check("staff.g2"), Some(false));
    assert_eq!(both.check("other.g1"), None);
}

/// Writing a context's membership replaces it entirely; an empty one removes it.
pub async fn set_memberships_replaces_and_empty_removes(
    factory: &dyn BigSegmentStoreFactory,
    prefix: &str,
) {
    let store = factory.store(prefix).await;
    let hash = context_hash("alice");
    let first = membership(&["a.g1", "b.g1"], &["c.g1"]);
    store
        .set_memberships(&[(hash.clone(), first)])
        .await
        .unwrap();
    let second = membership(&["d.g1"], &[]);
    store
        .set_memberships(&[(hash.clone(), second.clone())])
        .await
        .unwrap();
    assert_eq!(store.get_membership(&hash).await.unwrap(), Some(second));
    store
        .set_memberships(&[(hash.clone(), BigSegmentMembership::default())])
        .await
        .unwrap();
    assert_eq!(store.get_membership(&hash).await.unwrap(), None);
}

/// Data under one prefix is invisible under another, and clearing one leaves the other.
pub async fn prefixes_are_independent(factory: &dyn BigSegmentStoreFactory, prefix: &str) {
    let other_prefix = format!("{prefix}_other");
    let (one, other) = (
        factory.store(prefix).await,
        factory.store(&other_prefix).await,
    );
    let hash = context_hash("alice");
    one.set_memberships(&[(hash.clone(), membership(&["a.g1"], &[]))])
        .await
        .unwrap();
    one.set_synchronized_on(42).await.unwrap();
    assert_eq!(other.get_membership(&hash).await.unwrap(), None);
    assert_eq!(other.get_metadata().await.unwrap().last_synchronized, None);
    other.set_synchronized_on(7).await.unwrap();
    other.clear_big_segments().await.unwrap();
    assert_eq!(
        one.get_metadata().await.unwrap().last_synchronized,
        Some(42)
    );
    assert!(one.get_membership(&hash).await.unwrap().is_some());
}

/// A thousand contexts in one call are all written (backends batch them).
pub async fn many_contexts_in_one_call(factory: &dyn BigSegmentStoreFactory, prefix: &str) {
    let store = factory.store(prefix).await;
    let all: Vec<(String, BigSegmentMembership)> = (0..1000)
        .map(|i| {
            let m = membership(&[&format!("seg{}.g1", i % 7)], &[]);
            (context_hash(&format!("user-{i}")), m)
        })
        .collect();
    store.set_memberships(&all).await.unwrap();
    for i in [0, 1, 499, 998, 999] {
        let got = store
            .get_membership(&context_hash(&format!("user-{i}")))
            .await
            .unwrap();
        assert_eq!(got, Some(all[i].1.clone()), "user-{i}");
    }
}

/// Clearing removes every membership and the metadata.
pub async fn clear_removes_memberships_and_metadata(
    factory: &dyn BigSegmentStoreFactory,
    prefix: &str,
) {
    let store = factory.store(prefix).await;
    let hashes: Vec<String> = (0..30).map(|i| context_hash(&format!("c{i}"))).collect();
    let all: Vec<_> = hashes
        .iter()
        .map(|h| (h.clone(), membership(&["a.g1"], &["b.g1"])))
        .collect();
    store.set_memberships(&all).await.unwrap();
    store.set_synchronized_on(1).await.unwrap();
    store.clear_big_segments().await.unwrap();
    assert_eq!(store.get_metadata().await.unwrap().last_synchronized, None);
    for hash in &hashes {
        assert_eq!(store.get_membership(hash).await.unwrap(), None);
    }
}

fn patch(segment: &str, previous: &str, version: &str) -> BigSegmentPatch {
    BigSegmentPatch::new(segment, previous, version)
}

/// Patches apply one after another: each adds and removes what it says, in the included and
/// excluded sets, and moves the cursor to its version.
pub async fn patches_apply_in_a_chain_and_move_the_cursor(
    factory: &dyn BigSegmentStoreFactory,
    prefix: &str,
) {
    let store = factory.store(prefix).await;
    let (alice, bob) = (context_hash("alice"), context_hash("bob"));
    assert_eq!(store.get_cursor().await.unwrap(), None, "{store}");

    let mut first = patch("beta.g1", "", "v1");
    first.included_add = vec![alice.clone(), bob.clone()];
    first.excluded_add = vec![context_hash("carol")];
    assert!(store.apply_patch(&first).await.unwrap(), "{store}");
    assert_eq!(store.get_cursor().await.unwrap().as_deref(), Some("v1"));

    let mut second = patch("beta.g1", "v1", "v2");
    second.included_remove = vec![bob.clone()];
    second.excluded_add = vec![bob.clone()];
    assert!(store.apply_patch(&second).await.unwrap());
    let mut third = patch("staff.g2", "v2", "v3");
    third.included_add = vec![alice.clone()];
    assert!(store.apply_patch(&third).await.unwrap());
    assert_eq!(store.get_cursor().await.unwrap().as_deref(), Some("v3"));

    let alice_now = store.get_membership(&alice).await.unwrap().unwrap();
    assert_eq!(alice_now.check("beta.g1"), Some(true));
    assert_eq!(alice_now.check("staff.g2"), Some(true));
    let bob_now = store.get_membership(&bob).await.unwrap().unwrap();
    assert_eq!(bob_now.check("beta.g1"), Some(false));
    let carol = store
        .get_membership(&context_hash("carol"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(carol.check("beta.g1"), Some(false));
}

/// A patch whose previous version is not the stored cursor (a gap) changes nothing and says so.
pub async fn a_patch_off_the_chain_changes_nothing(
    factory: &dyn BigSegmentStoreFactory,
    prefix: &str,
) {
    let store = factory.store(prefix).await;
    let alice = context_hash("alice");
    assert!(
        store
            .apply_patch(&patch("beta.g1", "", "v1"))
            .await
            .unwrap()
    );
    let mut gap = patch("beta.g1", "v5", "v6");
    gap.included_add = vec![alice.clone()];
    assert!(!store.apply_patch(&gap).await.unwrap(), "{store}");
    assert_eq!(store.get_cursor().await.unwrap().as_deref(), Some("v1"));
    assert_eq!(store.get_membership(&alice).await.unwrap(), None);
}

/// Writing the synchronization time keeps the cursor, and the other way round.
pub async fn the_sync_time_and_the_cursor_are_independent(
    factory: &dyn BigSegmentStoreFactory,
    prefix: &str,
) {
    let store = factory.store(prefix).await;
    assert!(
        store
            .apply_patch(&patch("beta.g1", "", "v1"))
            .await
            .unwrap()
    );
    store.set_synchronized_on(1_700_000_000_000).await.unwrap();
    assert_eq!(store.get_cursor().await.unwrap().as_deref(), Some("v1"));
    assert!(
        store
            .apply_patch(&patch("beta.g1", "v1", "v2"))
            .await
            .unwrap()
    );
    let metadata = store.get_metadata().await.unwrap();
    assert_eq!(
        metadata.last_synchronized,
        Some(1_700_000_000_000),
        "{store}"
    );
    store.clear_big_segments().await.unwrap();
    assert_eq!(
        store.get_cursor().await.unwrap(),
        None,
        "clear removes the cursor"
    );
}

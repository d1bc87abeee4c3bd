//! Persistent feature stores for LaunchDarkly-style server-side SDKs: the core.
//!
//! Flag data lives in a shared database (Redis, DynamoDB, Consul) in the format every
//! LaunchDarkly SDK and the Relay Proxy read and write. This crate holds what every backend shares:
//!
//! - [`PersistentDataStore`], the async, object-safe trait each backend implements, with its
//!   semantics spelled out (init replaces, upsert only writes newer versions, tombstones are kept);
//! - [`Item`] and [`Kind`], with a fast reader of the `version` and `deleted` fields that accepts
//!   every SDK's tombstone shape;
//! - [`CachingStore`], the TTL cache the SDKs put in front of a database, with request coalescing,
//!   a forever mode that survives outages, and [`StoreStatus`] tracking;
//! - [`MemoryStore`], the reference implementation;
//! - [`Error`], one error type naming backend, operation, kind and key;
//! - with the `testing` feature, `flagstore::testing`: the conformance suite every store passes.
//!
//! ```
//! use flagstore::{sort_for_init, CachingStore, Collection, Item, Kind, MemoryStore, PersistentDataStore};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! // Any backend works the same way; the in-memory one needs no server.
//! let store = CachingStore::builder(MemoryStore::new()).build()?;
//!
//! let flag = Item::from_json("new-ui", r#"{"key":"new-ui","version":1,"on":true}"#)?;
//! let segment = Item::from_json("beta", r#"{"key":"beta","version":1,"included":["u1"]}"#)?;
//! store
//!     .init(&sort_for_init(vec![
//!         Collection::new(Kind::FEATURES, vec![flag]),
//!         Collection::new(Kind::SEGMENTS, vec![segment]),
//!     ]))
//!     .await?;
//!
//! assert!(store.is_initialized().await?);
//! let got = store.get(&Kind::FEATURES, "new-ui").await?.expect("stored");
//! assert_eq!(got.version(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! | feature | what it adds |
//! |---|---|
//! | `testing` | `flagstore::testing`: the conformance suite, and the upsert race hook on [`MemoryStore`] |

#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]
#![doc(html_root_url = "https://docs.rs/flagstore/0.1.0")]

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

mod big_segments;
mod cache;
mod changes;
mod error;
mod item;
mod kind;
mod memory;
mod order;
mod secret;
mod store;
mod stored;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use big_segments::{
    BigSegmentMembership, BigSegmentMetadata, BigSegmentStore, DEFAULT_STALE_AFTER,
    DynBigSegmentStore, context_hash, segment_ref,
};
pub use cache::{
    CacheMode, CachingStore, CachingStoreBuilder, DEFAULT_CACHE_TIME, DEFAULT_LIVE_CACHE_TIME,
    StoreStatus,
};
pub use changes::{Change, ChangeFeed, FeedEvent, FeedSender, FeedTracker};
pub use error::{Error, Operation, Result, SharedError};
pub use item::{DELETED_PLACEHOLDER_KEY, Item, ItemError};
pub use kind::Kind;
pub use memory::{MemoryDatabase, MemoryStore};
pub use order::sort_for_init;
pub use store::{Collection, DynStore, PersistentDataStore};
pub use stored::{StoredItems, UnreadableItem};

/// For authors of backends: reading what other writers stored, the shared retry bounds, and
/// keeping secrets out of output. Applications using the stores do not need any of it.
pub mod backend {
    pub use crate::changes::Reconnect;
    pub use crate::order::write_stages;
    pub use crate::secret::{REDACTED, Secret, redact_url};
    pub use crate::store::{UPSERT_ATTEMPTS, contention_backoff, refuse_ignored, replaced_kinds};
    pub use crate::stored::{read_stored_bytes, read_stored_items, version_to_replace};
}

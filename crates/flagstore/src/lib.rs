//! Persistent feature stores for LaunchDarkly-style server-side SDKs: the core.
//!
//! Flag data lives in a shared database (Redis, DynamoDB, Consul) in the format every
//! LaunchDarkly SDK and the Relay Proxy read and write. The crate root holds what an application
//! uses:
//!
//! - [`PersistentDataStore`], the async, object-safe trait each backend implements, with its
//!   semantics spelled out (init replaces, upsert only writes newer versions, tombstones are kept);
//! - [`Item`], [`Kind`] and [`Collection`], with a fast reader of the `version` and `deleted`
//!   fields that accepts every SDK's tombstone shape;
//! - [`CachingStore`], the TTL cache the SDKs put in front of a database, with request coalescing,
//!   a forever mode that survives outages, and [`StoreStatus`] tracking;
//! - [`Error`], one error type naming backend, operation, kind and key.
//!
//! The modules hold the rest: [`memory`], the reference implementation; [`big_segments`] and
//! [`changes`], which a store offers when its database can; [`error`], what an error names;
//! [`backend`], what an author of a new backend needs; and, with the `testing` feature,
//! `testing`, the conformance suite every store passes.
//!
//! ```
//! use flagstore::memory::MemoryStore;
//! use flagstore::{sort_for_init, CachingStore, Collection, Item, Kind, PersistentDataStore};
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
//! | `testing` | `flagstore::testing`: the conformance suite, and the upsert race hook on [`MemoryStore`](memory::MemoryStore) |

#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]
#![doc(html_root_url = "https://docs.rs/flagstore/0.1.0")]

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

pub mod backend;
pub mod big_segments;
mod cache;
mod config;
pub mod error;
mod feed;
mod item;
mod kind;
pub mod memory;
mod order;
mod secret;
mod store;
mod stored;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use cache::{CacheMode, CacheStats, CachingStore, CachingStoreBuilder, StoreStatus};
pub use error::{Error, Result};
pub use item::Item;
pub use kind::Kind;
pub use order::sort_for_init;
pub use store::{Collection, DynStore, PersistentDataStore};

/// Change feeds: how a database tells a reader that some writer (this process, another SDK, the
/// Relay Proxy, `flagstore load`) changed the data, so that a cache can keep entries for minutes
/// and still drop them within a second of a change.
///
/// A reader asks a store for its feed with [`PersistentDataStore::changes`]; a backend builds
/// one with [`ChangeFeed::new`](changes::ChangeFeed::new) and a
/// [`FeedSender`](crate::backend::FeedSender).
pub mod changes {
    #[cfg(feature = "metrics")]
    #[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
    pub use crate::feed::FeedMetrics;
    pub use crate::feed::{Change, ChangeFeed, FeedEvent, FeedTracker};
}

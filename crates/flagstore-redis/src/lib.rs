#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

mod big_segments;
mod builder;
#[cfg(feature = "cluster")]
mod cluster;
mod config;
mod connect;
mod error;
mod feed;
mod multi;
mod reads;
#[cfg(feature = "sentinel")]
mod sentinel;
mod store;
mod topology;

pub use builder::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_POOL_SIZE, DEFAULT_PREFIX, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_URL, RedisStoreBuilder,
};
pub use config::RedisConfigKey;
pub use feed::FeedMode;
pub use store::RedisStore;

/// The pool crate this store is built on, so callers bringing their own pool get matching versions.
pub use deadpool_redis;
/// The Redis client crate, re-exported for the same reason.
pub use deadpool_redis::redis;

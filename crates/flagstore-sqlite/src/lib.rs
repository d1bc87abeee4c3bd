#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

mod config;
mod feed;
mod store;

pub use config::SqliteConfigKey;
pub use store::{DEFAULT_PREFIX, SqliteStore, SqliteStoreBuilder};

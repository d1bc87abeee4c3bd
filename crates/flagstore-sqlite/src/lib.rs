#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

mod store;

pub use store::{DEFAULT_PREFIX, SqliteStore, SqliteStoreBuilder};

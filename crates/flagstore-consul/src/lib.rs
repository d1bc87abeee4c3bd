#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]
#![warn(missing_docs)]

mod builder;
mod error;
mod store;
mod txn;

pub use builder::{
    ConsulStoreBuilder, DEFAULT_ADDRESS, DEFAULT_CONNECT_TIMEOUT, DEFAULT_PREFIX,
    DEFAULT_REQUEST_TIMEOUT,
};
pub use store::{ConsulStore, MAX_VALUE_SIZE};
pub use txn::{MAX_TXN_BODY, MAX_TXN_OPS};

/// The Consul client crate this store is built on.
pub use consulrs;

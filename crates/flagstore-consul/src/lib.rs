#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

mod builder;
mod config;
mod feed;
mod http;
mod store;
mod txn;

pub use builder::{
    ConsulStoreBuilder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_PREFIX, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_URL,
};
pub use config::ConsulConfigKey;
pub use http::ConsulHttpError;
pub use store::{ConsulStore, MAX_VALUE_SIZE};
pub use txn::{MAX_TXN_BODY, MAX_TXN_OPS};

/// The backend name errors and logs carry.
const BACKEND: &str = "consul";

/// The HTTP client this store is built on, for [`ConsulStoreBuilder::http_client`].
pub use reqwest;

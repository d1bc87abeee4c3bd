#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

mod big_segments;
mod config;
mod data;
mod environment;
mod error;
mod http;
mod metrics;
mod protocol;
mod sdk_key;
mod source;
mod sse;
mod status;
mod synchronizer;
mod writer;

pub use config::SyncConfig;
pub use data::{DataError, DataSet};
pub use error::SyncError;
pub use http::{RenderMetrics, serve_http};
pub use sdk_key::SdkKey;
pub use status::{
    BigSegmentStatus, ConnectionState, ConnectionStatus, DataStoreState, DataStoreStatus,
    EnvironmentStatus, ErrorKind, LastError, Status,
};
pub use synchronizer::{
    DEFAULT_BASE_URI, DEFAULT_STREAM_URI, Environment, OnceReport, SyncHandle, Synchronizer,
    SynchronizerBuilder,
};

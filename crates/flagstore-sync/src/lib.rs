//! Keeps LaunchDarkly persistent stores fed: the Relay Proxy's store role as a library and as the
//! `flagstore sync` command.
//!
//! Per environment, a [`Synchronizer`] speaks LaunchDarkly's server-side protocol as the SDKs
//! do (the `/all` stream: `put`, `patch`, `delete`; or polling `/sdk/latest-all`), keeps the
//! whole data set in memory, and writes it through any flagstore store (Redis, Cluster,
//! Sentinel, DynamoDB, Consul, SQLite), each item byte for byte as received. It repairs what
//! goes wrong: a store that failed a write or was wiped is written again from memory; a stream
//! that drops, goes silent or sends garbage is reopened with backoff, polling in the meantime;
//! an SDK key LaunchDarkly refuses turns that environment OFF instead of retrying forever.
//! [`SyncHandle::status`] reports it all in the Relay Proxy's `/status` shape, which
//! [`serve_http`] serves beside the metrics.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use flagstore_sync::{Environment, SdkKey, Synchronizer};
//! use flagstore_url::StoreUrl;
//!
//! let sync = Synchronizer::builder()
//!     .environment(
//!         Environment::new("production", SdkKey::from_env("LD_SDK_KEY")?)
//!             .store(StoreUrl::parse("redis://127.0.0.1:6379?prefix=production")?),
//!     )
//!     .build()?;
//!
//! // A cron job or webhook function: fetch, write, verify, done.
//! for report in sync.sync_once().await {
//!     let report = report?;
//!     println!("{}: {} flags, {} segments", report.environment, report.flags, report.segments);
//! }
//! # Ok(())
//! # }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

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
    ConnectionState, ConnectionStatus, DataStoreState, DataStoreStatus, EnvironmentStatus,
    ErrorKind, LastError, Status,
};
pub use synchronizer::{
    DEFAULT_BASE_URI, DEFAULT_STREAM_URI, Environment, OnceReport, SyncHandle, Synchronizer,
    SynchronizerBuilder,
};

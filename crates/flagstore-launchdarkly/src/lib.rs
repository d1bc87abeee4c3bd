#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

mod adapter;
mod runtime;

pub use adapter::{DEFAULT_CALL_TIMEOUT, LaunchDarklyStore};

/// The SDK this adapter plugs into, so callers get the matching version.
pub use launchdarkly_server_sdk;

//! The errors of syncing: configuration, LaunchDarkly's answers, the stores.

/// Why a sync could not be set up or did not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The configuration is incomplete or wrong; nothing was started.
    #[error("invalid sync configuration: {message}")]
    #[non_exhaustive]
    Config {
        /// What is wrong, never with a key in it.
        message: String,
    },
    /// LaunchDarkly (or the Relay Proxy or test server in its place) could not be reached or
    /// did not answer with flag data.
    #[error("environment {environment:?}: {message}")]
    #[non_exhaustive]
    Source {
        /// The environment's name.
        environment: String,
        /// The HTTP status, when there was an answer.
        status: Option<u16>,
        /// What happened, never with the SDK key in it.
        message: String,
    },
    /// A store refused a write or a read.
    #[error("environment {environment:?}, store {store}: {source}")]
    #[non_exhaustive]
    Store {
        /// The environment's name.
        environment: String,
        /// The store, password masked.
        store: String,
        /// The store's error (boxed: it is large, and rare).
        #[source]
        source: Box<flagstore::Error>,
    },
    /// A store read back something other than what was written.
    #[error("environment {environment:?}, store {store}: {message}")]
    #[non_exhaustive]
    Mismatch {
        /// The environment's name.
        environment: String,
        /// The store, password masked.
        store: String,
        /// The first difference found.
        message: String,
    },
}

impl SyncError {
    pub(crate) fn config(message: impl Into<String>) -> Self {
        SyncError::Config {
            message: message.into(),
        }
    }
}

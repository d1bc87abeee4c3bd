//! The one error type every store returns, and what it names: the [`Operation`] that failed, the
//! driver's cause ([`SharedError`]), and why an item could not be read or stored ([`ItemError`]).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::Kind;
pub use crate::item::ItemError;

/// A cause shared between clones of an [`Error`]. Errors are cloned when the caching wrapper hands
/// one failed load to every caller that was waiting on it.
pub type SharedError = Arc<dyn std::error::Error + Send + Sync + 'static>;

/// A `Result` whose error is this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error and each of its causes on one line, joined by `: `, a cause's line breaks made
/// spaces: for a log line, a status field or another library's message-only error. Nothing in a
/// flagstore error or its causes holds a password or token.
///
/// ```
/// use flagstore::error::one_line;
///
/// let cause = std::io::Error::other("connection refused\n(os error 111)");
/// let err = flagstore::Error::config_caused_by("redis", "cannot connect", cause);
/// assert_eq!(
///     one_line(&err),
///     "redis: invalid configuration: cannot connect: connection refused (os error 111)"
/// );
/// ```
pub fn one_line(err: &(dyn std::error::Error + 'static)) -> String {
    let mut message = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string().replace('\n', " "));
        source = cause.source();
    }
    message
}

/// The store operation that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Operation {
    /// Writing a full data set.
    Init,
    /// Reading one item.
    Get,
    /// Reading every item of a kind.
    GetAll,
    /// Writing one item if it is newer.
    Upsert,
    /// Reading the `$inited` marker.
    IsInitialized,
    /// The health round trip.
    IsAvailable,
    /// Following the store's change feed.
    Watch,
    /// Reading or writing Big Segments data.
    BigSegments,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Init => "init",
            Operation::Get => "get",
            Operation::GetAll => "get_all",
            Operation::Upsert => "upsert",
            Operation::IsInitialized => "is_initialized",
            Operation::IsAvailable => "is_available",
            Operation::Watch => "watch",
            Operation::BigSegments => "big segments",
        })
    }
}

/// What went wrong, in which backend, during which operation, and on which item.
///
/// The message names all of that; the underlying cause (a driver error, a JSON error) is only
/// available through [`std::error::Error::source`], so error-chain printers show it once.
/// Messages never contain passwords or tokens.
///
/// ```
/// use flagstore::error::Operation;
/// use flagstore::{Error, Kind};
///
/// let err = Error::contention("redis", Kind::FEATURES, "my-flag", 10);
/// assert_eq!(err.operation(), Some(Operation::Upsert));
/// assert_eq!(err.key(), Some("my-flag"));
/// assert_eq!(
///     err.to_string(),
///     "redis: upsert of features/my-flag: still changing after 10 attempts, gave up"
/// );
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Error {
    /// The database could not be reached, or answered with an error.
    #[non_exhaustive]
    Database {
        /// The backend, such as `redis`.
        backend: &'static str,
        /// The operation that failed.
        operation: Operation,
        /// The kind involved, if the operation had one.
        kind: Option<Kind>,
        /// The item key involved, if the operation had one.
        key: Option<String>,
        /// The driver's error.
        source: SharedError,
    },
    /// The database did not answer in time.
    #[non_exhaustive]
    Timeout {
        /// The backend.
        backend: &'static str,
        /// The operation that timed out.
        operation: Operation,
        /// The kind involved, if any.
        kind: Option<Kind>,
        /// The item key involved, if any.
        key: Option<String>,
        /// The timeout that expired.
        after: Duration,
    },
    /// The database refused the credentials or the operation.
    #[non_exhaustive]
    PermissionDenied {
        /// The backend.
        backend: &'static str,
        /// The operation that was refused.
        operation: Operation,
        /// The kind involved, if any.
        kind: Option<Kind>,
        /// The item key involved, if any.
        key: Option<String>,
        /// The database's answer.
        source: SharedError,
    },
    /// A stored item (perhaps written by another program) is not valid item JSON; for a write
    /// (`init`, `upsert`), an item the database cannot store as it is (its version out of the
    /// database's range).
    #[non_exhaustive]
    InvalidItem {
        /// The backend.
        backend: &'static str,
        /// The operation that read it.
        operation: Operation,
        /// The item's kind.
        kind: Kind,
        /// The item's storage key.
        key: String,
        /// Why it could not be read.
        source: ItemError,
    },
    /// A stored record that is not an item (Big Segments metadata or memberships, perhaps
    /// written by another program) holds something this crate cannot read. Not an outage: the
    /// database answered.
    #[non_exhaustive]
    InvalidRecord {
        /// The backend.
        backend: &'static str,
        /// The operation that read it.
        operation: Operation,
        /// The record's storage key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The item is larger than the database accepts; it was not written.
    #[non_exhaustive]
    ItemTooLarge {
        /// The backend.
        backend: &'static str,
        /// The operation that refused it.
        operation: Operation,
        /// The item's kind.
        kind: Kind,
        /// The item's storage key.
        key: String,
        /// The item's size as the database counts it.
        size: usize,
        /// The database's limit.
        limit: usize,
    },
    /// An upsert lost the race to concurrent writers on every allowed attempt.
    #[non_exhaustive]
    Contention {
        /// The backend.
        backend: &'static str,
        /// The item's kind.
        kind: Kind,
        /// The item's storage key.
        key: String,
        /// How many attempts were made.
        attempts: u32,
    },
    /// The store's configuration is invalid; raised by builders, before any connection.
    #[non_exhaustive]
    Config {
        /// The backend.
        backend: &'static str,
        /// What is wrong, in words that name the setting.
        message: String,
        /// The error behind it, if one was (a certificate file that could not be read, a
        /// client library that refused the settings).
        source: Option<SharedError>,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Database {
                backend,
                operation,
                kind,
                key,
                ..
            } => write!(f, "{backend}: {operation}{} failed", target(kind, key)),
            Error::Timeout {
                backend,
                operation,
                kind,
                key,
                after,
            } => write!(
                f,
                "{backend}: {operation}{} timed out after {after:?}",
                target(kind, key)
            ),
            Error::PermissionDenied {
                backend,
                operation,
                kind,
                key,
                ..
            } => write!(
                f,
                "{backend}: {operation}{}: permission denied",
                target(kind, key)
            ),
            Error::InvalidItem {
                backend,
                operation: operation @ (Operation::Init | Operation::Upsert),
                kind,
                key,
                ..
            } => write!(
                f,
                "{backend}: {operation} of {kind}/{key}: the item cannot be stored"
            ),
            Error::InvalidItem {
                backend,
                operation,
                kind,
                key,
                ..
            } => write!(
                f,
                "{backend}: {operation} of {kind}/{key}: the stored item is unreadable"
            ),
            Error::InvalidRecord {
                backend,
                operation,
                key,
                reason,
            } => write!(
                f,
                "{backend}: {operation} of {key}: the stored record is unreadable: {reason}"
            ),
            Error::ItemTooLarge {
                backend,
                operation,
                kind,
                key,
                size,
                limit,
            } => write!(
                f,
                "{backend}: {operation} of {kind}/{key}: item is {size} bytes, over the {limit}-byte limit"
            ),
            Error::Contention {
                backend,
                kind,
                key,
                attempts,
            } => write!(
                f,
                "{backend}: upsert of {kind}/{key}: still changing after {attempts} attempts, gave up"
            ),
            Error::Config {
                backend, message, ..
            } => {
                write!(f, "{backend}: invalid configuration: {message}")
            }
        }
    }
}

/// `source()` is the cause itself (the driver's error, the item's), not the `Arc` it is shared
/// through, so callers can downcast it to the backend's error type.
impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Database { source, .. } | Error::PermissionDenied { source, .. } => {
                Some(&**source)
            }
            Error::InvalidItem { source, .. } => Some(source),
            Error::Config {
                source: Some(source),
                ..
            } => Some(&**source),
            _ => None,
        }
    }
}

fn target(kind: &Option<Kind>, key: &Option<String>) -> String {
    match (kind, key) {
        (Some(kind), Some(key)) => format!(" of {kind}/{key}"),
        (Some(kind), None) => format!(" of {kind}"),
        (None, Some(key)) => format!(" of {key}"),
        (None, None) => String::new(),
    }
}

impl Error {
    /// A database error during `operation`.
    pub fn database(
        backend: &'static str,
        operation: Operation,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Error {
        Error::Database {
            backend,
            operation,
            kind: None,
            key: None,
            source: Arc::from(source.into()),
        }
    }

    /// A timeout of `after` during `operation`.
    pub fn timeout(backend: &'static str, operation: Operation, after: Duration) -> Error {
        Error::Timeout {
            backend,
            operation,
            kind: None,
            key: None,
            after,
        }
    }

    /// The database refused `operation`.
    pub fn permission_denied(
        backend: &'static str,
        operation: Operation,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Error {
        Error::PermissionDenied {
            backend,
            operation,
            kind: None,
            key: None,
            source: Arc::from(source.into()),
        }
    }

    /// A stored item that could not be read.
    pub fn invalid_item(
        backend: &'static str,
        operation: Operation,
        kind: &Kind,
        key: impl Into<String>,
        source: ItemError,
    ) -> Error {
        Error::InvalidItem {
            backend,
            operation,
            kind: kind.clone(),
            key: key.into(),
            source,
        }
    }

    /// A stored record other than an item that could not be read.
    pub fn invalid_record(
        backend: &'static str,
        operation: Operation,
        key: impl Into<String>,
        reason: impl Into<String>,
    ) -> Error {
        Error::InvalidRecord {
            backend,
            operation,
            key: key.into(),
            reason: reason.into(),
        }
    }

    /// An item over the database's size limit.
    pub fn too_large(
        backend: &'static str,
        operation: Operation,
        kind: &Kind,
        key: impl Into<String>,
        size: usize,
        limit: usize,
    ) -> Error {
        Error::ItemTooLarge {
            backend,
            operation,
            kind: kind.clone(),
            key: key.into(),
            size,
            limit,
        }
    }

    /// An upsert that gave up after `attempts` lost races.
    pub fn contention(
        backend: &'static str,
        kind: Kind,
        key: impl Into<String>,
        attempts: u32,
    ) -> Error {
        Error::Contention {
            backend,
            kind,
            key: key.into(),
            attempts,
        }
    }

    /// An invalid configuration.
    pub fn config(backend: &'static str, message: impl Into<String>) -> Error {
        Error::Config {
            backend,
            message: message.into(),
            source: None,
        }
    }

    /// An invalid configuration that `source` revealed. `message` says which setting is wrong;
    /// the cause stays reachable through [`std::error::Error::source`], not pasted into the
    /// message.
    pub fn config_caused_by(
        backend: &'static str,
        message: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> Error {
        Error::Config {
            backend,
            message: message.into(),
            source: Some(Arc::from(source.into())),
        }
    }

    /// The same error, naming the kind and (if given) the key it concerned. Variants that always
    /// name both are returned unchanged.
    #[must_use = "on() returns the error with its kind and key; the original is consumed"]
    pub fn on(mut self, item_kind: &Kind, item_key: Option<&str>) -> Error {
        if let Error::Database { kind, key, .. }
        | Error::Timeout { kind, key, .. }
        | Error::PermissionDenied { kind, key, .. } = &mut self
        {
            *kind = Some(item_kind.clone());
            *key = item_key.map(str::to_owned);
        }
        self
    }

    /// The backend that raised the error, such as `redis`.
    pub fn backend(&self) -> &'static str {
        match self {
            Error::Database { backend, .. }
            | Error::Timeout { backend, .. }
            | Error::PermissionDenied { backend, .. }
            | Error::InvalidItem { backend, .. }
            | Error::InvalidRecord { backend, .. }
            | Error::ItemTooLarge { backend, .. }
            | Error::Contention { backend, .. }
            | Error::Config { backend, .. } => backend,
        }
    }

    /// The operation that failed; `None` for a configuration error, which precedes them all.
    pub fn operation(&self) -> Option<Operation> {
        match self {
            Error::Database { operation, .. }
            | Error::Timeout { operation, .. }
            | Error::PermissionDenied { operation, .. }
            | Error::InvalidItem { operation, .. }
            | Error::InvalidRecord { operation, .. }
            | Error::ItemTooLarge { operation, .. } => Some(*operation),
            Error::Contention { .. } => Some(Operation::Upsert),
            Error::Config { .. } => None,
        }
    }

    /// The kind the error concerns, if known.
    pub fn kind(&self) -> Option<&Kind> {
        match self {
            Error::Database { kind, .. }
            | Error::Timeout { kind, .. }
            | Error::PermissionDenied { kind, .. } => kind.as_ref(),
            Error::InvalidItem { kind, .. }
            | Error::ItemTooLarge { kind, .. }
            | Error::Contention { kind, .. } => Some(kind),
            Error::InvalidRecord { .. } | Error::Config { .. } => None,
        }
    }

    /// The item key the error concerns, if known.
    pub fn key(&self) -> Option<&str> {
        match self {
            Error::Database { key, .. }
            | Error::Timeout { key, .. }
            | Error::PermissionDenied { key, .. } => key.as_deref(),
            Error::InvalidItem { key, .. }
            | Error::InvalidRecord { key, .. }
            | Error::ItemTooLarge { key, .. }
            | Error::Contention { key, .. } => Some(key),
            Error::Config { .. } => None,
        }
    }

    /// Whether the error means the database is unreachable or failing, as opposed to a problem
    /// with one item. The caching wrapper marks the store unavailable on these.
    pub fn is_outage(&self) -> bool {
        matches!(
            self,
            Error::Database { .. } | Error::Timeout { .. } | Error::PermissionDenied { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn messages_name_backend_operation_kind_and_key() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = Error::database("redis", Operation::Get, io).on(&Kind::FEATURES, Some("f1"));
        assert_eq!(err.to_string(), "redis: get of features/f1 failed");
        assert_eq!(
            err.source().map(|s| s.to_string()).as_deref(),
            Some("refused")
        );
        assert!(err.is_outage());
        let io = err
            .source()
            .and_then(|s| s.downcast_ref::<std::io::Error>());
        assert_eq!(
            io.map(std::io::Error::kind),
            Some(std::io::ErrorKind::ConnectionRefused),
            "the cause itself, ready to downcast"
        );

        let err = Error::timeout("consul", Operation::GetAll, Duration::from_secs(2))
            .on(&Kind::SEGMENTS, None);
        assert_eq!(
            err.to_string(),
            "consul: get_all of segments timed out after 2s"
        );

        let err = Error::too_large(
            "dynamodb",
            Operation::Init,
            &Kind::FEATURES,
            "big",
            500_000,
            409_600,
        );
        assert_eq!(
            err.to_string(),
            "dynamodb: init of features/big: item is 500000 bytes, over the 409600-byte limit"
        );
        assert!(!err.is_outage());
        assert_eq!(err.key(), Some("big"));
    }

    #[test]
    fn invalid_item_keeps_its_cause_out_of_the_message() {
        let cause = crate::Item::from_json("k", "{").unwrap_err();
        let err = Error::invalid_item("redis", Operation::Get, &Kind::FEATURES, "k", cause);
        assert_eq!(
            err.to_string(),
            "redis: get of features/k: the stored item is unreadable"
        );
        assert_eq!(
            err.source().map(|s| s.to_string()).as_deref(),
            Some("item is not a JSON object")
        );
    }
}

//! AWS SDK errors as `flagstore::Error`.

use std::time::Duration;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use flagstore::{Error, Operation};

pub(crate) const BACKEND: &str = "dynamodb";

/// Error codes that mean the credentials or their permissions were refused.
const REFUSED: &[&str] = &[
    "AccessDeniedException",
    "UnrecognizedClientException",
    "InvalidSignatureException",
    "MissingAuthenticationTokenException",
    "ExpiredTokenException",
];

/// Error codes that mean "slow down": retried with backoff, never dropped.
const THROTTLED: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
];

/// Maps an SDK error. The SDK's own `Display` is terse, so the cause is rendered with its whole
/// context (codes, messages, request id; never credentials).
pub(crate) fn from_sdk<E, R>(
    operation: Operation,
    timeout: Duration,
    table: &str,
    err: SdkError<E, R>,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    if matches!(err, SdkError::TimeoutError(_)) {
        return Error::timeout(BACKEND, operation, timeout);
    }
    let code = err.code().map(str::to_owned);
    // A service error is its code and message; the SDK's full context would add the raw HTTP
    // response. Anything else (connection refused, DNS) needs the whole chain to be useful.
    let detail = match (&err, code.as_deref()) {
        (SdkError::ServiceError(_), Some(code)) => match err.message() {
            Some(message) => format!("{code}: {message}"),
            None => code.to_owned(),
        },
        _ => DisplayErrorContext(&err).to_string(),
    };
    match code.as_deref() {
        Some(code) if REFUSED.contains(&code) => {
            Error::permission_denied(BACKEND, operation, detail)
        }
        Some("ResourceNotFoundException") => Error::database(
            BACKEND,
            operation,
            format!("table {table:?} does not exist (the store never creates it)"),
        ),
        _ => Error::database(BACKEND, operation, detail),
    }
}

/// Whether the SDK error is throttling that a later retry may get past.
pub(crate) fn is_throttled<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    err.code().is_some_and(|code| THROTTLED.contains(&code))
}

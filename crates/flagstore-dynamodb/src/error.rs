//! AWS SDK errors as `flagstore::Error`.

use std::fmt;
use std::time::Duration;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use flagstore::Error;
use flagstore::error::Operation;

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

/// The AWS SDK's error behind a [`flagstore::Error`] from this store: its
/// [`source()`](std::error::Error::source) is a `DynamoDbError`, so callers can downcast to it and
/// match on the SDK's own error type.
///
/// Its `Display` is the service's code and message (`ResourceNotFoundException: …`), or the whole
/// context of a failure before any answer (connection refused, DNS); never credentials.
///
/// ```no_run
/// # async fn demo(store: flagstore_dynamodb::DynamoDbStore) {
/// use flagstore::{Kind, PersistentDataStore};
/// use flagstore_dynamodb::{DynamoDbError, aws_sdk_dynamodb};
///
/// if let Err(err) = store.get(&Kind::FEATURES, "f").await {
///     let cause = std::error::Error::source(&err).and_then(|s| s.downcast_ref::<DynamoDbError>());
///     if let Some(aws_sdk_dynamodb::Error::ResourceNotFoundException(_)) = cause.map(DynamoDbError::sdk_error) {
///         eprintln!("create the table first");
///     }
/// }
/// # }
/// ```
#[derive(Debug)]
pub struct DynamoDbError {
    detail: String,
    sdk: aws_sdk_dynamodb::Error,
}

impl DynamoDbError {
    /// The AWS SDK's error, one variant per DynamoDB error code.
    pub fn sdk_error(&self) -> &aws_sdk_dynamodb::Error {
        &self.sdk
    }

    /// The service's error code, such as `ConditionalCheckFailedException`, if it answered.
    pub fn code(&self) -> Option<&str> {
        self.sdk.code()
    }
}

impl fmt::Display for DynamoDbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

/// The SDK's error is reached through [`DynamoDbError::sdk_error`], not `source()`: its text is
/// already in this error's message, and chain printers would show it twice.
impl std::error::Error for DynamoDbError {}

/// Maps an SDK error, keeping it (as a [`DynamoDbError`]) as the cause.
pub(crate) fn from_sdk<E, R>(
    operation: Operation,
    timeout: Duration,
    table: &str,
    err: SdkError<E, R>,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
    aws_sdk_dynamodb::Error: From<SdkError<E, R>>,
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
    let detail = match code.as_deref() {
        Some("ResourceNotFoundException") => {
            format!("table {table:?} does not exist (the store never creates it)")
        }
        _ => detail,
    };
    let refused = code.as_deref().is_some_and(|code| REFUSED.contains(&code));
    let cause = DynamoDbError {
        detail,
        sdk: aws_sdk_dynamodb::Error::from(err),
    };
    if refused {
        Error::permission_denied(BACKEND, operation, cause)
    } else {
        Error::database(BACKEND, operation, cause)
    }
}

/// Whether the SDK error is throttling that a later retry may get past.
pub(crate) fn is_throttled<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>) -> bool {
    err.code().is_some_and(|code| THROTTLED.contains(&code))
}

/// A conditional write's outcome: `Ok(false)` when DynamoDB refused it for its condition
/// (`ConditionalCheckFailedException`), any other error as it is.
pub(crate) fn written<T>(result: flagstore::Result<T>) -> flagstore::Result<bool> {
    match result {
        Ok(_) => Ok(true),
        Err(err) if is_condition_failed(&err) => Ok(false),
        Err(err) => Err(err),
    }
}

fn is_condition_failed(err: &Error) -> bool {
    std::error::Error::source(err)
        .and_then(|cause| cause.downcast_ref::<DynamoDbError>())
        .and_then(DynamoDbError::code)
        == Some("ConditionalCheckFailedException")
}

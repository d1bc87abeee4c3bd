//! Redis and pool errors as `flagstore::Error`.

use std::time::Duration;

use deadpool_redis::PoolError;
use deadpool_redis::redis::{ErrorKind, RedisError};
use flagstore::Error;
use flagstore::error::Operation;

pub(crate) const BACKEND: &str = "redis";

/// Maps a driver error. Timeouts and refused credentials get their own variants; the driver's
/// messages never include the password, so the error is kept whole as the source.
pub(crate) fn from_redis(operation: Operation, timeout: Duration, err: RedisError) -> Error {
    if err.is_timeout() {
        return Error::timeout(BACKEND, operation, timeout);
    }
    let refused = matches!(err.kind(), ErrorKind::AuthenticationFailed)
        || is_refusal(err.code())
        // Inside MULTI/EXEC a refusal arrives as an aborted transaction listing each command's error.
        || err
            .clone()
            .into_server_errors()
            .is_some_and(|errors| errors.iter().any(|(_, e)| is_refusal(Some(e.code()))));
    if refused {
        Error::permission_denied(BACKEND, operation, err)
    } else {
        Error::database(BACKEND, operation, err)
    }
}

fn is_refusal(code: Option<&str>) -> bool {
    matches!(code, Some("NOAUTH" | "WRONGPASS" | "NOPERM"))
}

/// Maps a failure to get a pooled connection.
pub(crate) fn from_pool(operation: Operation, timeout: Duration, err: PoolError) -> Error {
    match err {
        PoolError::Timeout(_) => Error::timeout(BACKEND, operation, timeout),
        PoolError::Backend(err) => from_redis(operation, timeout, err),
        other => Error::database(BACKEND, operation, other),
    }
}

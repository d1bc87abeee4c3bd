//! consulrs errors as `flagstore::Error`.

use std::time::Duration;

use consulrs::error::ClientError;
use flagstore::{Error, Operation};

pub(crate) const BACKEND: &str = "consul";

/// Maps a consulrs error. Consul's own message (the response body) is kept: "Permission denied",
/// "Value exceeds 524288 byte limit", and so on. Tokens travel in a header, never in a URL, so
/// nothing here can show one.
pub(crate) fn from_consul(operation: Operation, timeout: Duration, err: ClientError) -> Error {
    match err {
        ClientError::APIError { code: 403, message } => {
            Error::permission_denied(BACKEND, operation, http_detail(403, message))
        }
        ClientError::APIError { code, message } => {
            Error::database(BACKEND, operation, http_detail(code, message))
        }
        ClientError::RestClientError {
            source: rustify::errors::ClientError::RequestError { ref source, .. },
        } if source
            .downcast_ref::<reqwest::Error>()
            .is_some_and(reqwest::Error::is_timeout) =>
        {
            Error::timeout(BACKEND, operation, timeout)
        }
        other => Error::database(BACKEND, operation, other),
    }
}

fn http_detail(code: u16, message: Option<String>) -> String {
    match message.as_deref().map(str::trim) {
        Some(message) if !message.is_empty() => format!("HTTP {code}: {message}"),
        _ => format!("HTTP {code}"),
    }
}

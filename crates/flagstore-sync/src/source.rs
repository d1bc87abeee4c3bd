//! LaunchDarkly's server-side endpoints: the `/all` stream and the `/sdk/latest-all` poll, each
//! request bounded in time, every failure sorted into what to retry and what is final. A
//! failure's message quotes the URL, never the key: that travels in a header.

use std::collections::VecDeque;
use std::time::Duration;

use crate::data::{DataError, DataSet};
use crate::sdk_key::SdkKey;
use crate::sse::{Data, Line, Parser};
use crate::status::{ErrorKind, LastError, now_millis};

/// Why a request or a stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Failure {
    /// No connection, a dropped one, a timeout, the stream's end.
    Network(String),
    /// An HTTP error status.
    Status(u16),
    /// What arrived is not flag data.
    Invalid(String),
}

impl Failure {
    /// Whether retrying cannot help, as the SDKs decide it: a 4xx other than 400, 408 and 429
    /// (401, 403 and 404 above all: the SDK key is wrong or revoked).
    pub(crate) fn is_permanent(&self) -> bool {
        matches!(self, Failure::Status(s) if (400..500).contains(s) && !matches!(s, 400 | 408 | 429))
    }

    /// The metrics label saying why a connection was retried.
    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Failure::Network(_) => "network_error",
            Failure::Status(_) => "error_response",
            Failure::Invalid(_) => "invalid_data",
        }
    }

    pub(crate) fn last_error(&self) -> LastError {
        let (kind, status_code) = match self {
            Failure::Network(_) => (ErrorKind::NetworkError, None),
            Failure::Status(status) => (ErrorKind::ErrorResponse, Some(*status)),
            Failure::Invalid(_) => (ErrorKind::InvalidData, None),
        };
        LastError {
            kind,
            status_code,
            message: self.to_string(),
            time: now_millis(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Network(message) | Failure::Invalid(message) => f.write_str(message),
            Failure::Status(status) => {
                write!(f, "LaunchDarkly answered HTTP {status}")?;
                match status {
                    401 | 403 => f.write_str(" (the SDK key is invalid or revoked)"),
                    404 => f.write_str(
                        " (no such environment or endpoint: check the SDK key and the URIs)",
                    ),
                    _ => Ok(()),
                }
            }
        }
    }
}

/// Where and how to reach LaunchDarkly for one environment.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub(crate) http: reqwest::Client,
    pub(crate) stream_uri: String,
    pub(crate) base_uri: String,
    pub(crate) key: SdkKey,
    pub(crate) read_timeout: Duration,
    pub(crate) request_timeout: Duration,
}

impl Source {
    /// The whole data set from the polling endpoint.
    pub(crate) async fn poll(&self) -> Result<DataSet, Failure> {
        let url = format!("{}/sdk/latest-all", self.base_uri);
        let mut response = self.get(&url, "application/json").await?;
        // Kept in blocks, each given back once parsed, as a stream's put is: the answer is as
        // big as the data set.
        let mut body = Data::default();
        while let Some(chunk) = chunk(&mut response, self.read_timeout).await? {
            body.push(&chunk);
        }
        // On a blocking thread, as a stream's put is read (`protocol::read_event`).
        tokio::task::spawn_blocking(move || DataSet::read(body.reader()))
            .await
            .unwrap_or_else(|e| Err(DataError::new(format!("reading it failed: {e}"))))
            .map_err(|e| Failure::Invalid(format!("the polling answer: {e}")))
    }

    /// Opens the stream of changes; its first event is the whole data set.
    pub(crate) async fn stream(&self) -> Result<Stream, Failure> {
        self.open_stream("/all").await
    }

    /// Opens the Big Segments stream: each event's data is a list of patches.
    pub(crate) async fn big_segments_stream(&self) -> Result<Stream, Failure> {
        self.open_stream("/big-segments").await
    }

    /// The Big Segments patches after `cursor` (all of them without one), from the revisions
    /// endpoint, as its JSON text.
    pub(crate) async fn big_segment_revisions(
        &self,
        cursor: Option<&str>,
    ) -> Result<String, Failure> {
        let mut url = reqwest::Url::parse(&format!("{}/sdk/big-segments/revisions", self.base_uri))
            .map_err(|e| Failure::Invalid(format!("the base URI: {e}")))?;
        if let Some(cursor) = cursor {
            url.query_pairs_mut().append_pair("after", cursor);
        }
        let mut response = self.get(url.as_str(), "application/json").await?;
        let mut body = Vec::new();
        while let Some(chunk) = chunk(&mut response, self.read_timeout).await? {
            body.extend_from_slice(&chunk);
        }
        String::from_utf8(body)
            .map_err(|_| Failure::Invalid("the Big Segments revisions are not UTF-8".to_owned()))
    }

    async fn open_stream(&self, path: &str) -> Result<Stream, Failure> {
        let url = format!("{}{path}", self.stream_uri);
        let response = self.get(&url, "text/event-stream").await?;
        Ok(Stream {
            read_timeout: self.read_timeout,
            response,
            parser: Parser::default(),
            lines: VecDeque::new(),
        })
    }

    async fn get(&self, url: &str, accept: &str) -> Result<reqwest::Response, Failure> {
        let request = self
            .http
            .get(url)
            .header("Authorization", self.key.expose())
            .header("Accept", accept)
            .send();
        let response = tokio::time::timeout(self.request_timeout, request)
            .await
            .map_err(|_| {
                Failure::Network(format!(
                    "no answer from {url} within {:?}",
                    self.request_timeout
                ))
            })?
            .map_err(|e| Failure::Network(flagstore::error::one_line(&e)))?;
        let status = response.status().as_u16();
        if status != 200 {
            return Err(Failure::Status(status));
        }
        Ok(response)
    }
}

/// The next piece of a body, if it comes within `read_timeout`.
async fn chunk(
    response: &mut reqwest::Response,
    read_timeout: Duration,
) -> Result<Option<bytes::Bytes>, Failure> {
    tokio::time::timeout(read_timeout, response.chunk())
        .await
        .map_err(|_| {
            Failure::Network(format!(
                "nothing received for {read_timeout:?} (not even a heartbeat)"
            ))
        })?
        .map_err(|e| Failure::Network(flagstore::error::one_line(&e)))
}

/// An open `/all` stream.
#[derive(Debug)]
pub(crate) struct Stream {
    read_timeout: Duration,
    response: reqwest::Response,
    parser: Parser,
    lines: VecDeque<Line>,
}

impl Stream {
    /// The next event or heartbeat; an error once the stream is broken, silent too long, or
    /// ended (LaunchDarkly's stream never ends on its own).
    pub(crate) async fn next(&mut self) -> Result<Line, Failure> {
        loop {
            if let Some(line) = self.lines.pop_front() {
                return Ok(line);
            }
            let chunk = chunk(&mut self.response, self.read_timeout)
                .await?
                .ok_or_else(|| Failure::Network("the stream ended".to_owned()))?;
            let mut lines = Vec::new();
            self.parser.push(&chunk, &mut lines).map_err(|_| {
                Failure::Invalid("the stream sent bytes that are not UTF-8".to_owned())
            })?;
            self.lines.extend(lines);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_retried() {
        for status in [400, 408, 429, 500, 502, 503] {
            assert!(!Failure::Status(status).is_permanent(), "{status}");
        }
        for status in [401, 403, 404, 405] {
            assert!(Failure::Status(status).is_permanent(), "{status}");
        }
        assert!(!Failure::Network("reset".into()).is_permanent());
        assert_eq!(
            Failure::Status(401).to_string(),
            "LaunchDarkly answered HTTP 401 (the SDK key is invalid or revoked)"
        );
    }
}

//! The few Consul HTTP API calls the store makes, on reqwest: KV reads, key listings,
//! check-and-set writes and transactions.
//!
//! Every answer is checked to be Consul's own: a KV read that Consul answers carries the
//! `X-Consul-Index` header, so a 404 without it (from a proxy, a load balancer's default page,
//! or some other server on the port) is an error, never "not found".

use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use flagstore::backend::Secret;
use flagstore::error::Operation;
use flagstore::{Error, Result};
use reqwest::{Method, StatusCode};
use serde::Deserialize;

use crate::BACKEND;

const INDEX_HEADER: &str = "X-Consul-Index";
const TOKEN_HEADER: &str = "X-Consul-Token";

/// One key/value pair as `GET /v1/kv/...` returns it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct KvPair {
    pub(crate) key: String,
    /// Base64, or absent for an empty value.
    value: Option<String>,
    pub(crate) modify_index: u64,
}

impl KvPair {
    /// The value as text; `None` if it is not base64 of UTF-8 (which reads as an unreadable item).
    pub(crate) fn text(&self) -> Option<String> {
        match &self.value {
            None => Some(String::new()),
            Some(encoded) => String::from_utf8(STANDARD.decode(encoded).ok()?).ok(),
        }
    }
}

/// A Consul answer: its status and body.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) body: String,
}

/// The HTTP side of a store.
#[derive(Debug)]
pub(crate) struct Http {
    pub(crate) client: reqwest::Client,
    /// `http(s)://host:port/`, no user-info.
    pub(crate) base: url::Url,
    pub(crate) token: Option<Secret>,
    pub(crate) datacenter: Option<String>,
    pub(crate) request_timeout: Duration,
}

impl Http {
    /// `{base}v1/{section}/{key}`, each segment of `key` percent-encoded as a path segment.
    fn url(&self, section: &str, key: &str, query: &[(&str, String)]) -> url::Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().push("v1").push(section);
            if !key.is_empty() {
                path.extend(key.split('/'));
            }
        }
        {
            let mut pairs = url.query_pairs_mut();
            for (name, value) in query {
                pairs.append_pair(name, value);
            }
            if let Some(dc) = &self.datacenter {
                pairs.append_pair("dc", dc);
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        url
    }

    /// Sends one request within the request timeout and reads the whole answer. Statuses are
    /// the caller's to judge, but 403 is always a refusal and 5xx always a database error.
    pub(crate) async fn send(
        &self,
        op: Operation,
        method: Method,
        section: &str,
        key: &str,
        query: &[(&str, String)],
        body: Option<Vec<u8>>,
    ) -> Result<(Answer, bool)> {
        let (answer, index) = self
            .exchange(op, method, section, key, query, body, self.request_timeout)
            .await?;
        Ok((answer, index.is_some()))
    }

    /// [`send`](Self::send) within `budget`, with Consul's index if it answered one.
    #[allow(clippy::too_many_arguments)]
    async fn exchange(
        &self,
        op: Operation,
        method: Method,
        section: &str,
        key: &str,
        query: &[(&str, String)],
        body: Option<Vec<u8>>,
        budget: Duration,
    ) -> Result<(Answer, Option<u64>)> {
        let started = tokio::time::Instant::now();
        let mut request = self
            .client
            .request(method, self.url(section, key, query))
            .timeout(budget);
        if let Some(token) = &self.token {
            request = request.header(TOKEN_HEADER, token.expose());
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let exchange = async {
            let response = request.send().await?;
            let status = response.status();
            let index = response
                .headers()
                .get(INDEX_HEADER)
                .map(|v| v.to_str().ok().and_then(|v| v.parse().ok()).unwrap_or(0));
            let body = response.text().await?;
            Ok::<_, reqwest::Error>((Answer { status, body }, index))
        };
        let (answer, index) = match tokio::time::timeout(budget, exchange).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(err)) if err.is_timeout() => {
                return Err(Error::timeout(BACKEND, op, started.elapsed()));
            }
            // The error names the URL, which never holds the token (that travels in a header).
            Ok(Err(err)) => return Err(Error::database(BACKEND, op, err)),
            Err(_) => return Err(Error::timeout(BACKEND, op, started.elapsed())),
        };
        match answer.status {
            StatusCode::FORBIDDEN => Err(Error::permission_denied(BACKEND, op, detail(&answer))),
            status if status.is_server_error() => {
                Err(Error::database(BACKEND, op, detail(&answer)))
            }
            _ => Ok((answer, index)),
        }
    }

    /// A blocking query on the keys under `prefix`: answers once their index passes `index`,
    /// or after about `wait` with the same index (index 0: at once). The index Consul answered,
    /// and how many keys there are.
    pub(crate) async fn wait_for_keys(
        &self,
        prefix: &str,
        index: u64,
        wait: Duration,
    ) -> Result<(u64, usize)> {
        let op = Operation::Watch;
        let query = [
            ("keys", "true".to_owned()),
            ("index", index.to_string()),
            ("wait", format!("{}ms", wait.as_millis())),
        ];
        // Consul adds up to wait/16 of jitter before answering.
        let budget = wait + wait / 16 + self.request_timeout;
        let (answer, index) = self
            .exchange(op, Method::GET, "kv", prefix, &query, None, budget)
            .await?;
        match (answer.status, index) {
            (StatusCode::NOT_FOUND, Some(index)) => Ok((index, 0)),
            (StatusCode::OK, Some(index)) => {
                let keys: Vec<serde::de::IgnoredAny> =
                    serde_json::from_str(&answer.body).map_err(|e| {
                        Error::database(
                            BACKEND,
                            op,
                            format!("Consul's key list is not the expected JSON: {e}"),
                        )
                    })?;
                Ok((index, keys.len()))
            }
            (_, None) => Err(Error::database(
                BACKEND,
                op,
                format!(
                    "{} answered without Consul's {INDEX_HEADER} header: is it a Consul agent? ({})",
                    self.base,
                    detail(&answer)
                ),
            )),
            _ => Err(Error::database(BACKEND, op, detail(&answer))),
        }
    }

    /// A read that Consul answers with JSON, or 404 for "nothing there". Anything else, and any
    /// answer without Consul's index header, is an error.
    async fn read<T: for<'de> Deserialize<'de>>(
        &self,
        op: Operation,
        key: &str,
        query: &[(&str, String)],
    ) -> Result<Option<T>> {
        let (answer, from_consul) = self.send(op, Method::GET, "kv", key, query, None).await?;
        if !from_consul {
            return Err(Error::database(
                BACKEND,
                op,
                format!(
                    "{} answered without Consul's {INDEX_HEADER} header: is it a Consul agent? ({})",
                    self.base,
                    detail(&answer)
                ),
            ));
        }
        match answer.status {
            StatusCode::OK => serde_json::from_str(&answer.body).map(Some).map_err(|e| {
                Error::database(
                    BACKEND,
                    op,
                    format!("Consul's answer is not the expected JSON: {e}"),
                )
            }),
            StatusCode::NOT_FOUND => Ok(None),
            _ => Err(Error::database(BACKEND, op, detail(&answer))),
        }
    }

    /// The pair stored under `key`, if any.
    pub(crate) async fn get(&self, op: Operation, key: &str) -> Result<Option<KvPair>> {
        let pairs: Option<Vec<KvPair>> = self.read(op, key, &[]).await?;
        Ok(pairs.and_then(|pairs| pairs.into_iter().next()))
    }

    /// Every pair whose key starts with `prefix`.
    pub(crate) async fn get_recursive(&self, op: Operation, prefix: &str) -> Result<Vec<KvPair>> {
        let query = [("recurse", "true".to_owned())];
        Ok(self.read(op, prefix, &query).await?.unwrap_or_default())
    }

    /// Every key that starts with `prefix`.
    pub(crate) async fn keys(&self, op: Operation, prefix: &str) -> Result<Vec<String>> {
        let query = [("keys", "true".to_owned())];
        Ok(self.read(op, prefix, &query).await?.unwrap_or_default())
    }

    /// Writes `value` under `key`; with `cas`, only if the key's ModifyIndex is still that (0:
    /// only if the key does not exist). Whether it was written.
    pub(crate) async fn put(
        &self,
        op: Operation,
        key: &str,
        value: &str,
        cas: Option<u64>,
    ) -> Result<bool> {
        let query: Vec<_> = cas
            .map(|index| ("cas", index.to_string()))
            .into_iter()
            .collect();
        let body = Some(value.as_bytes().to_vec());
        let (answer, _) = self.send(op, Method::PUT, "kv", key, &query, body).await?;
        match (answer.status, answer.body.trim()) {
            (StatusCode::OK, "true") => Ok(true),
            (StatusCode::OK, "false") => Ok(false),
            _ => Err(Error::database(BACKEND, op, detail(&answer))),
        }
    }

    /// Runs a transaction (`PUT /v1/txn`); a rollback (409) is returned as an answer.
    pub(crate) async fn txn(&self, op: Operation, body: Vec<u8>) -> Result<Answer> {
        let (answer, _) = self
            .send(op, Method::PUT, "txn", "", &[], Some(body))
            .await?;
        match answer.status {
            StatusCode::OK | StatusCode::CONFLICT => Ok(answer),
            _ => Err(Error::database(BACKEND, op, detail(&answer))),
        }
    }
}

/// An HTTP answer from Consul that is an error: the cause of the [`flagstore::Error`] a call
/// returns, so a caller can tell a 403 from a 500 without parsing the message.
///
/// ```
/// # fn check(err: &flagstore::Error) -> bool {
/// use flagstore_consul::ConsulHttpError;
///
/// let status = std::error::Error::source(err)
///     .and_then(|cause| cause.downcast_ref::<ConsulHttpError>())
///     .map(ConsulHttpError::status);
/// status == Some(403)
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsulHttpError {
    status: u16,
    body: String,
}

impl ConsulHttpError {
    pub(crate) fn new(status: StatusCode, body: impl Into<String>) -> ConsulHttpError {
        ConsulHttpError {
            status: status.as_u16(),
            body: body.into().trim().chars().take(200).collect(),
        }
    }

    /// The HTTP status code. ACLs refuse a transaction's operations inside it: an `init` that
    /// is refused has status 409 (rolled back), and the body names each refused key.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The answer's body, trimmed and cut to its first 200 characters.
    pub fn body(&self) -> &str {
        &self.body
    }
}

impl fmt::Display for ConsulHttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.body.is_empty() {
            write!(f, "HTTP {}", self.status)
        } else {
            write!(f, "HTTP {}: {}", self.status, self.body)
        }
    }
}

impl std::error::Error for ConsulHttpError {}

/// The error for an answer: `HTTP 404: body` (the body trimmed and shortened) when shown.
pub(crate) fn detail(answer: &Answer) -> ConsulHttpError {
    ConsulHttpError::new(answer.status, answer.body.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http(dc: Option<&str>) -> Http {
        Http {
            client: reqwest::Client::new(),
            base: url::Url::parse("http://127.0.0.1:8500").unwrap(),
            token: None,
            datacenter: dc.map(str::to_owned),
            request_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn keys_are_encoded_segment_by_segment() {
        let url = http(None).url("kv", "ld/features/a b?c#d", &[]);
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8500/v1/kv/ld/features/a%20b%3Fc%23d"
        );
        let url = http(Some("eu")).url("kv", "ld/", &[("recurse", "true".into())]);
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8500/v1/kv/ld/?recurse=true&dc=eu"
        );
        let url = http(None).url("txn", "", &[]);
        assert_eq!(url.as_str(), "http://127.0.0.1:8500/v1/txn");
    }

    #[test]
    fn values_decode_from_base64() {
        let pair: KvPair = serde_json::from_str(
            r#"{"Key":"k","Value":"eyJ2ZXJzaW9uIjoxfQ==","ModifyIndex":7,"Flags":0}"#,
        )
        .unwrap();
        assert_eq!(pair.text().as_deref(), Some(r#"{"version":1}"#));
        let empty: KvPair =
            serde_json::from_str(r#"{"Key":"k","Value":null,"ModifyIndex":1}"#).unwrap();
        assert_eq!(empty.text().as_deref(), Some(""));
    }
}

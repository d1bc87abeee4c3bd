//! Configuration of a [`ConsulStore`].

use std::fmt;
use std::time::Duration;

use flagstore::backend::{NetworkOptions, Secret, redact_url, refuse_ignored};
use flagstore::{Error, Result};

use crate::BACKEND;
use crate::config::ConsulConfigKey;
use crate::http::Http;
use crate::store::ConsulStore;

/// The URL used when none is given and `CONSUL_HTTP_ADDR` is unset.
pub const DEFAULT_URL: &str = "http://127.0.0.1:8500";
/// The key prefix every LaunchDarkly SDK uses by default.
pub const DEFAULT_PREFIX: &str = "launchdarkly";
/// Time allowed to open a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time allowed for one request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Configures a [`ConsulStore`]. Made by [`ConsulStore::builder`]; [`build`](Self::build) checks
/// everything and never connects.
///
/// ```
/// use flagstore_consul::ConsulStore;
///
/// let store = ConsulStore::builder()
///     .url("https://consul.internal:8501")
///     .token("b1gs3cr3t-token")
///     .datacenter("eu-west")
///     .prefix("prod")
///     .build()?;
/// assert_eq!(store.to_string(), r#"consul store at https://consul.internal:8501/ (datacenter "eu-west", prefix "prod")"#);
/// assert!(!format!("{store:?}").contains("b1gs3cr3t"));
/// # Ok::<(), flagstore::Error>(())
/// ```
#[must_use = "a builder does nothing until build() is called"]
pub struct ConsulStoreBuilder {
    address: Option<String>,
    token: Option<Secret>,
    datacenter: Option<String>,
    prefix: Option<String>,
    /// `CONSUL_CACERT` named a file that could not be read: reported by `build()`.
    ca_file_error: Option<String>,
    client_identity_pem: Option<Secret>,
    network: NetworkOptions,
    http_client: Option<reqwest::Client>,
    #[cfg(feature = "testing")]
    before_upsert_write: Option<flagstore::testing::UpsertHook>,
}

impl Default for ConsulStoreBuilder {
    fn default() -> Self {
        ConsulStoreBuilder {
            address: None,
            token: None,
            datacenter: None,
            prefix: None,
            ca_file_error: None,
            client_identity_pem: None,
            network: NetworkOptions::new(),
            http_client: None,
            #[cfg(feature = "testing")]
            before_upsert_write: None,
        }
    }
}

impl ConsulStoreBuilder {
    /// A builder with the defaults: `http://127.0.0.1:8500`, no token, the agent's datacenter,
    /// prefix `launchdarkly`, 2 s connect and 10 s request timeouts.
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder configured from the variables the `consul` command line reads:
    ///
    /// | variable | sets |
    /// |---|---|
    /// | `CONSUL_HTTP_ADDR` | [`url`](Self::url) (`host:port` gets `http://`, or `https://` with `CONSUL_HTTP_SSL=true`) |
    /// | `CONSUL_HTTP_TOKEN` | [`token`](Self::token) |
    /// | `CONSUL_CACERT` | [`tls_root_certificate_pem`](Self::tls_root_certificate_pem), read from that file |
    ///
    /// Unset variables leave the defaults. A `CONSUL_CACERT` that cannot be read is an error at
    /// [`build`](Self::build).
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let mut builder = Self::new();
        if let Some(address) = var("CONSUL_HTTP_ADDR").filter(|a| !a.is_empty()) {
            let address = if address.contains("://") {
                address
            } else if var("CONSUL_HTTP_SSL")
                .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
            {
                format!("https://{address}")
            } else {
                format!("http://{address}")
            };
            builder = builder.url(address);
        }
        if let Some(token) = var("CONSUL_HTTP_TOKEN").filter(|t| !t.is_empty()) {
            builder = builder.token(token);
        }
        if let Some(path) = var("CONSUL_CACERT").filter(|p| !p.is_empty()) {
            // Read now; a file that cannot be read is reported by build(), naming it.
            match std::fs::read(&path) {
                Ok(pem) => builder = builder.tls_root_certificate_pem(pem),
                Err(e) => {
                    builder.ca_file_error =
                        Some(format!("CONSUL_CACERT={path:?} cannot be read: {e}"));
                }
            }
        }
        builder
    }

    /// Where the Consul agent is: `http://host:port` or `https://host:port`.
    pub fn url(mut self, address: impl Into<String>) -> Self {
        self.address = Some(address.into());
        self
    }

    /// The ACL token sent with every request. Never logged or shown by `Debug` or `Display`.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(Secret::new(token));
        self
    }

    /// The datacenter to read and write; the agent's own by default.
    pub fn datacenter(mut self, datacenter: impl Into<String>) -> Self {
        self.datacenter = Some(datacenter.into());
        self
    }

    /// The key prefix; the empty string means the default, `launchdarkly`, as in the other SDKs.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    /// Trusts this CA certificate (PEM) for `https://` instead of the system's roots.
    pub fn tls_root_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.network = self.network.tls_root_certificate_pem(pem);
        self
    }

    /// Presents this client certificate and key (both PEM, concatenated) for mutual TLS.
    pub fn tls_client_identity_pem(mut self, cert_and_key: impl Into<String>) -> Self {
        self.client_identity_pem = Some(Secret::new(cert_and_key));
        self
    }

    /// Time allowed to open a connection.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.network = self.network.connect_timeout(timeout);
        self
    }

    /// Time allowed for one request.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.network = self.network.request_timeout(timeout);
        self
    }

    /// The timeouts and TLS root certificate at once, replacing any set before; unset ones keep
    /// the defaults.
    pub fn network(mut self, options: NetworkOptions) -> Self {
        self.network = options;
        self
    }

    /// Sets one option from its text form, as a store URL's query gives it:
    ///
    /// ```
    /// use flagstore_consul::{ConsulConfigKey, ConsulStore};
    ///
    /// let store = ConsulStore::builder()
    ///     .with_config(ConsulConfigKey::Datacenter, "eu-west")?
    ///     .with_config("request_timeout".parse()?, "2s")?
    ///     .build()?;
    /// assert!(store.to_string().contains(r#"datacenter "eu-west""#));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_config(self, key: ConsulConfigKey, value: impl AsRef<str>) -> Result<Self> {
        let value = value.as_ref();
        Ok(match key {
            ConsulConfigKey::Datacenter => self.datacenter(value),
            ConsulConfigKey::Prefix => self.prefix(value),
            ConsulConfigKey::Network(key) => Self {
                network: self.network.with_config(BACKEND, key, value)?,
                ..self
            },
        })
    }

    /// Sends requests through this HTTP client instead of one the builder makes (to share a
    /// connection pool, or for TLS or proxy settings of your own). The request timeout still
    /// bounds every call; TLS settings and the connect timeout belong to the client, so setting
    /// them here as well is refused at [`build`](Self::build).
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http_client = Some(client);
        self
    }

    /// Runs `hook` inside every upsert between reading the stored value and the check-and-set
    /// write, where a concurrent writer can race this one. For the conformance suite.
    #[cfg(feature = "testing")]
    pub fn before_upsert_write(mut self, hook: flagstore::testing::UpsertHook) -> Self {
        self.before_upsert_write = Some(hook);
        self
    }

    /// The store. Fails with [`Error::Config`] on an address that is not an `http(s)://` URL, a
    /// token with characters an HTTP header cannot carry, an unusable certificate, a prefix
    /// holding `/`, or zero timeouts. Does not connect.
    pub fn build(self) -> Result<ConsulStore> {
        if let Some(message) = self.ca_file_error {
            return Err(Error::config(BACKEND, message));
        }
        let connect_timeout = self.network.get_connect_timeout();
        let request_timeout = self
            .network
            .get_request_timeout()
            .unwrap_or(DEFAULT_REQUEST_TIMEOUT);
        if connect_timeout.is_some_and(|t| t.is_zero()) || request_timeout.is_zero() {
            return Err(Error::config(
                BACKEND,
                "connect_timeout and request_timeout must be positive",
            ));
        }
        let prefix = match self.prefix.as_deref() {
            None | Some("") => DEFAULT_PREFIX.to_owned(),
            Some(p) if p.contains('/') => {
                return Err(Error::config(
                    BACKEND,
                    format!("prefix {p:?} must not contain '/'"),
                ));
            }
            Some(p) => p.to_owned(),
        };
        let raw_address = self.address.as_deref().unwrap_or(DEFAULT_URL);
        let base = url::Url::parse(raw_address)
            .ok()
            .filter(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host().is_some()
                    && u.username().is_empty()
                    && u.password().is_none()
            })
            .ok_or_else(|| {
                Error::config(
                    BACKEND,
                    format!(
                        "url {:?} is not an http:// or https:// URL of a Consul agent (the token goes in token(), not the URL)",
                        redact_url(raw_address)
                    ),
                )
            })?;
        if let Some(token) = &self.token
            && !token.expose().bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(Error::config(
                BACKEND,
                "the ACL token holds characters an HTTP header cannot carry",
            ));
        }
        let client = match self.http_client {
            Some(client) => {
                refuse_ignored(
                    BACKEND,
                    "http_client()",
                    "that client",
                    &[
                        (
                            "tls_root_certificate_pem",
                            self.network.get_tls_root_certificate_pem().is_some(),
                        ),
                        (
                            "tls_client_identity_pem",
                            self.client_identity_pem.is_some(),
                        ),
                        ("connect_timeout", connect_timeout.is_some()),
                    ],
                )?;
                client
            }
            None => self.make_client(connect_timeout, request_timeout)?,
        };
        let http = Http {
            client,
            base,
            token: self.token,
            datacenter: self.datacenter,
            request_timeout,
        };
        Ok(ConsulStore::new(
            http,
            prefix,
            #[cfg(feature = "testing")]
            self.before_upsert_write,
        ))
    }

    fn make_client(
        &self,
        connect_timeout: Option<Duration>,
        request_timeout: Duration,
    ) -> Result<reqwest::Client> {
        let mut http = reqwest::Client::builder()
            .connect_timeout(connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT))
            .timeout(request_timeout);
        if let Some(pem) = self.network.get_tls_root_certificate_pem() {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .ok()
                .filter(|certs| !certs.is_empty())
                .ok_or_else(|| {
                    Error::config(
                        BACKEND,
                        "the TLS root certificate is unusable: no PEM certificate found",
                    )
                })?;
            http = http.tls_built_in_root_certs(false);
            for cert in certs {
                http = http.add_root_certificate(cert);
            }
        }
        if let Some(identity) = &self.client_identity_pem {
            let identity =
                reqwest::Identity::from_pem(identity.expose().as_bytes()).map_err(|_| {
                    Error::config(BACKEND, "the TLS client certificate and key are unusable")
                })?;
            http = http.identity(identity);
        }
        http.build()
            .map_err(|e| Error::config_caused_by(BACKEND, "could not set up the HTTP client", e))
    }
}

impl fmt::Debug for ConsulStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulStoreBuilder")
            .field("address", &self.address)
            .field("token", &self.token)
            .field("datacenter", &self.datacenter)
            .field("prefix", &self.prefix)
            .field("client_identity_pem", &self.client_identity_pem)
            .field("network", &self.network)
            .field("http_client", &self.http_client.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ConsulStore;

    #[test]
    fn validates_with_errors_that_name_the_setting() {
        let err = |b: ConsulStoreBuilder| b.build().unwrap_err().to_string();
        assert_eq!(
            err(ConsulStore::builder().url("127.0.0.1:8500")),
            r#"consul: invalid configuration: url "127.0.0.1:8500" is not an http:// or https:// URL of a Consul agent (the token goes in token(), not the URL)"#
        );
        assert_eq!(
            err(ConsulStore::builder().url("ftp://h")),
            r#"consul: invalid configuration: url "ftp://h" is not an http:// or https:// URL of a Consul agent (the token goes in token(), not the URL)"#
        );
        assert_eq!(
            err(ConsulStore::builder().prefix("a/b")),
            r#"consul: invalid configuration: prefix "a/b" must not contain '/'"#
        );
        assert_eq!(
            err(ConsulStore::builder().token("line\nbreak")),
            "consul: invalid configuration: the ACL token holds characters an HTTP header cannot carry"
        );
        assert!(
            err(ConsulStore::builder().tls_root_certificate_pem("junk"))
                .contains("TLS root certificate")
        );
        let shown = err(ConsulStore::builder().url("http://s3cret-token@consul:8500"));
        assert!(shown.contains(r#""http://***@consul:8500""#), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert_eq!(
            err(ConsulStore::builder()
                .http_client(reqwest::Client::new())
                .tls_root_certificate_pem("pem")),
            "consul: invalid configuration: tls_root_certificate_pem cannot be combined with http_client(): configure that client instead"
        );
    }

    #[test]
    fn from_env_reads_the_consul_cli_variables() {
        let store = ConsulStoreBuilder::from_vars(|name| match name {
            "CONSUL_HTTP_ADDR" => Some("consul.internal:8501".to_owned()),
            "CONSUL_HTTP_SSL" => Some("true".to_owned()),
            "CONSUL_HTTP_TOKEN" => Some("env-token-value".to_owned()),
            _ => None,
        })
        .build()
        .unwrap();
        assert_eq!(
            store.to_string(),
            r#"consul store at https://consul.internal:8501/ (prefix "launchdarkly")"#
        );
        assert!(store.has_token());
        let plain =
            ConsulStoreBuilder::from_vars(|n| (n == "CONSUL_HTTP_ADDR").then(|| "h:1".to_owned()));
        assert_eq!(
            plain.build().unwrap().to_string(),
            r#"consul store at http://h:1/ (prefix "launchdarkly")"#
        );
        let defaults = ConsulStoreBuilder::from_vars(|_| None).build().unwrap();
        assert_eq!(
            defaults.to_string(),
            r#"consul store at http://127.0.0.1:8500/ (prefix "launchdarkly")"#
        );
        assert!(!defaults.has_token());
        let missing = "/nonexistent/flagstore-ca.pem";
        let err =
            ConsulStoreBuilder::from_vars(|n| (n == "CONSUL_CACERT").then(|| missing.to_owned()))
                .build()
                .unwrap_err()
                .to_string();
        assert!(
            err.starts_with(&format!(
                "consul: invalid configuration: CONSUL_CACERT={missing:?} cannot be read: "
            )),
            "{err}"
        );
    }

    #[test]
    fn the_token_never_shows() {
        let builder = ConsulStore::builder().token("t0ken-s3cret");
        assert!(!format!("{builder:?}").contains("t0ken-s3cret"));
        let store = builder.build().unwrap();
        assert!(!format!("{store:?} {store}").contains("t0ken-s3cret"));
    }
}

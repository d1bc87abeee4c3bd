//! Configuration of a [`DynamoDbStore`].

use std::fmt;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::config::{Credentials, SharedCredentialsProvider};
use flagstore::backend::{NetworkOptions, Secret, refuse_ignored};
use flagstore::{Error, Result};

use crate::config::DynamoDbConfigKey;
use crate::error::BACKEND;
use crate::feed::DEFAULT_STREAM_POLL_INTERVAL;
use crate::store::{ClientSource, DynamoDbStore, Timing};

/// The key prefix every LaunchDarkly SDK uses by default for DynamoDB: none.
pub const DEFAULT_PREFIX: &str = "";
/// Time allowed to open a connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time allowed for one request, retries by the SDK included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The shortest [`stream_poll_interval`](DynamoDbStoreBuilder::stream_poll_interval).
const MIN_STREAM_POLL_INTERVAL: Duration = Duration::from_millis(200);
/// How long `init` keeps retrying writes DynamoDB left unprocessed or throttled.
pub const DEFAULT_BATCH_DEADLINE: Duration = Duration::from_secs(60);

/// Configures a [`DynamoDbStore`]. Made by [`DynamoDbStore::builder`]; [`build`](Self::build)
/// checks everything and never connects (AWS configuration is loaded on first use).
///
/// ```
/// use flagstore_dynamodb::DynamoDbStore;
///
/// // Against DynamoDB itself: region and credentials from the standard AWS chain.
/// let store = DynamoDbStore::builder("launchdarkly-flags").prefix("prod").build()?;
/// assert_eq!(store.to_string(), r#"dynamodb store table "launchdarkly-flags" (prefix "prod")"#);
///
/// // Against a local emulator.
/// let local = DynamoDbStore::builder("flags")
///     .url("http://127.0.0.1:8000")
///     .region("us-east-1")
///     .static_credentials("local", "local")
///     .build()?;
/// # Ok::<(), flagstore::Error>(())
/// ```
#[must_use = "a builder does nothing until build() is called"]
pub struct DynamoDbStoreBuilder {
    table: String,
    prefix: String,
    client: Option<Client>,
    stream_client: Option<aws_sdk_dynamodbstreams::Client>,
    sdk_config: Option<SdkConfig>,
    endpoint: Option<String>,
    region: Option<String>,
    credentials: Option<(String, Secret)>,
    network: NetworkOptions,
    batch_deadline: Duration,
    stream_poll_interval: Duration,
    #[cfg(feature = "testing")]
    before_upsert_write: Option<flagstore::testing::UpsertHook>,
}

impl DynamoDbStoreBuilder {
    pub(crate) fn new(table: String) -> Self {
        DynamoDbStoreBuilder {
            table,
            prefix: DEFAULT_PREFIX.to_owned(),
            client: None,
            stream_client: None,
            sdk_config: None,
            endpoint: None,
            region: None,
            credentials: None,
            network: NetworkOptions::new(),
            batch_deadline: DEFAULT_BATCH_DEADLINE,
            stream_poll_interval: DEFAULT_STREAM_POLL_INTERVAL,
            #[cfg(feature = "testing")]
            before_upsert_write: None,
        }
    }

    /// A builder configured from the environment, as the Relay Proxy reads it:
    ///
    /// | variable | sets |
    /// |---|---|
    /// | `DYNAMODB_TABLE` | the table (required) |
    /// | `DYNAMODB_PREFIX` | [`prefix`](Self::prefix) |
    /// | `DYNAMODB_URL` | [`url`](Self::url) |
    ///
    /// Region and credentials come from the standard AWS variables (`AWS_REGION`,
    /// `AWS_ACCESS_KEY_ID`, `AWS_PROFILE`, ...) through the AWS SDK's default chain.
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let mut builder = Self::new(var("DYNAMODB_TABLE").unwrap_or_default());
        if let Some(prefix) = var("DYNAMODB_PREFIX") {
            builder = builder.prefix(prefix);
        }
        if let Some(endpoint) = var("DYNAMODB_URL") {
            builder = builder.url(endpoint);
        }
        builder
    }

    /// The table, replacing the one given before.
    pub fn table(mut self, table: impl Into<String>) -> Self {
        self.table = table.into();
        self
    }

    /// The key prefix: namespaces become `{prefix}:{kind}`. Empty (the default) means none.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Uses this client as it is: its endpoint, region, credentials, retries and timeouts.
    /// Every request still has this builder's request timeout as a backstop. Setting the URL,
    /// region, credentials or connect timeout here as well is refused at [`build`](Self::build)
    /// rather than silently ignored.
    pub fn client(mut self, client: Client) -> Self {
        self.client = Some(client);
        self
    }

    /// With [`client`](Self::client): the DynamoDB Streams client the
    /// [change feed](flagstore::PersistentDataStore::changes) reads the table's stream with. A
    /// store given only a DynamoDB client cannot make one with the same settings (the SDK does
    /// not hand them out), so its feed reports that this is missing. Without `client()`, both
    /// clients are made from the same AWS configuration and this is not needed.
    pub fn stream_client(mut self, client: aws_sdk_dynamodbstreams::Client) -> Self {
        self.stream_client = Some(client);
        self
    }

    /// Builds the client from this AWS configuration, with this builder's endpoint and timeouts.
    pub fn sdk_config(mut self, config: SdkConfig) -> Self {
        self.sdk_config = Some(config);
        self
    }

    /// Where DynamoDB is: an endpoint URL instead of AWS's regional one, e.g. a local emulator.
    /// The AWS SDK also honours `AWS_ENDPOINT_URL_DYNAMODB` and `AWS_ENDPOINT_URL` by itself.
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.endpoint = Some(url.into());
        self
    }

    /// The AWS region, overriding the default chain's.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Fixed credentials instead of the default chain's, for local emulators and tests. The
    /// secret never shows in `Debug` or logs.
    pub fn static_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        self.credentials = Some((access_key_id.into(), Secret::new(secret_access_key)));
        self
    }

    /// Time allowed to open a connection.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.network = self.network.connect_timeout(timeout);
        self
    }

    /// Time allowed for one request, the SDK's own retries included.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.network = self.network.request_timeout(timeout);
        self
    }

    /// The timeouts at once, replacing any set before; unset ones keep the defaults. A TLS root
    /// certificate is refused at [`build`](Self::build): the AWS SDK takes its own
    /// (`AWS_CA_BUNDLE`, or [`sdk_config`](Self::sdk_config)).
    pub fn network(mut self, options: NetworkOptions) -> Self {
        self.network = options;
        self
    }

    /// Sets one option from its text form, as a store URL's query gives it:
    ///
    /// ```
    /// use flagstore_dynamodb::{DynamoDbConfigKey, DynamoDbStore};
    ///
    /// let store = DynamoDbStore::builder("flags")
    ///     .with_config(DynamoDbConfigKey::Endpoint, "http://127.0.0.1:8000")?
    ///     .with_config("region".parse()?, "eu-west-1")?
    ///     .with_config("request_timeout".parse()?, "2s")?
    ///     .build()?;
    /// assert_eq!(
    ///     store.to_string(),
    ///     r#"dynamodb store table "flags" at http://127.0.0.1:8000 (prefix "")"#
    /// );
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_config(self, key: DynamoDbConfigKey, value: impl AsRef<str>) -> Result<Self> {
        let value = value.as_ref();
        Ok(match key {
            DynamoDbConfigKey::Endpoint => self.url(value),
            DynamoDbConfigKey::Region => self.region(value),
            DynamoDbConfigKey::Prefix => self.prefix(value),
            DynamoDbConfigKey::Network(key) => Self {
                network: self.network.with_config(BACKEND, key, value)?,
                ..self
            },
        })
    }

    /// How often the [change feed](flagstore::PersistentDataStore::changes) reads each shard of
    /// the table's stream: 1 s by default, at least 200 ms. DynamoDB Streams serves about five
    /// reads per second per shard to all readers together, so with many live readers on one
    /// table, raise it (eight readers: 2 s) or they are throttled and see changes later.
    ///
    /// ```
    /// use std::time::Duration;
    /// use flagstore_dynamodb::DynamoDbStore;
    ///
    /// let store = DynamoDbStore::builder("flags")
    ///     .region("eu-west-1")
    ///     .stream_poll_interval(Duration::from_secs(2))
    ///     .build()?;
    /// # Ok::<(), flagstore::Error>(())
    /// ```
    pub fn stream_poll_interval(mut self, interval: Duration) -> Self {
        self.stream_poll_interval = interval;
        self
    }

    /// How long `init` keeps retrying writes DynamoDB leaves unprocessed or throttles before it
    /// fails (it never drops them).
    pub fn batch_deadline(mut self, deadline: Duration) -> Self {
        self.batch_deadline = deadline;
        self
    }

    /// Runs `hook` inside every upsert just before the conditional write, where a concurrent
    /// writer can race this one. For the conformance suite.
    #[cfg(feature = "testing")]
    pub fn before_upsert_write(mut self, hook: flagstore::testing::UpsertHook) -> Self {
        self.before_upsert_write = Some(hook);
        self
    }

    /// The store. Fails with [`Error::Config`] on a missing or invalid table name, a URL
    /// that is not an http(s) URL, zero timeouts, or both a client and an SDK configuration.
    pub fn build(self) -> Result<DynamoDbStore> {
        validate_table_name(&self.table)?;
        if self.network.get_tls_root_certificate_pem().is_some() {
            return Err(Error::config(
                BACKEND,
                "a TLS root certificate is set through the AWS SDK (AWS_CA_BUNDLE, or sdk_config()), not here",
            ));
        }
        let connect_timeout = self
            .network
            .get_connect_timeout()
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        let request_timeout = self
            .network
            .get_request_timeout()
            .unwrap_or(DEFAULT_REQUEST_TIMEOUT);
        if self.stream_poll_interval < MIN_STREAM_POLL_INTERVAL {
            return Err(Error::config(
                BACKEND,
                format!(
                    "stream_poll_interval is {:?}; it must be at least {MIN_STREAM_POLL_INTERVAL:?} (DynamoDB Streams serves about five reads per second per shard)",
                    self.stream_poll_interval
                ),
            ));
        }
        if connect_timeout.is_zero() || request_timeout.is_zero() || self.batch_deadline.is_zero() {
            return Err(Error::config(
                BACKEND,
                "connect_timeout, request_timeout and batch_deadline must be positive",
            ));
        }
        if let Some(endpoint) = &self.endpoint {
            let valid = ["http://", "https://"].iter().any(|scheme| {
                endpoint
                    .strip_prefix(scheme)
                    .is_some_and(|rest| !rest.is_empty())
            });
            if !valid {
                return Err(Error::config(
                    BACKEND,
                    format!(
                        "url {:?} is not an http:// or https:// URL",
                        flagstore::backend::redact_url(endpoint)
                    ),
                ));
            }
        }
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(connect_timeout)
            .operation_timeout(request_timeout)
            .build();
        if self.stream_client.is_some() && self.client.is_none() {
            return Err(Error::config(
                BACKEND,
                "stream_client() goes with client(); without it both clients come from the same AWS configuration",
            ));
        }
        let source = match (self.client, self.sdk_config) {
            (Some(_), Some(_)) => {
                return Err(Error::config(
                    BACKEND,
                    "give either a client or an SDK configuration, not both",
                ));
            }
            (Some(client), None) => {
                refuse_ignored(
                    BACKEND,
                    "client()",
                    "the client",
                    &[
                        ("url", self.endpoint.is_some()),
                        ("region", self.region.is_some()),
                        ("static_credentials", self.credentials.is_some()),
                        (
                            "connect_timeout",
                            self.network.get_connect_timeout().is_some(),
                        ),
                    ],
                )?;
                ClientSource::ready(client, self.stream_client)
            }
            (None, Some(sdk)) => {
                let mut config = sdk.into_builder().timeout_config(timeouts);
                if let Some(endpoint) = &self.endpoint {
                    config = config.endpoint_url(endpoint);
                }
                if let Some(region) = &self.region {
                    config = config.region(Region::new(region.clone()));
                }
                if let Some((id, secret)) = &self.credentials {
                    config = config.credentials_provider(SharedCredentialsProvider::new(
                        static_credentials(id, secret),
                    ));
                }
                ClientSource::from_config(&config.build())
            }
            (None, None) => {
                let mut loader =
                    aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts);
                if let Some(endpoint) = &self.endpoint {
                    loader = loader.endpoint_url(endpoint);
                }
                if let Some(region) = &self.region {
                    loader = loader.region(Region::new(region.clone()));
                }
                if let Some((id, secret)) = &self.credentials {
                    loader = loader.credentials_provider(static_credentials(id, secret));
                }
                ClientSource::lazy(loader)
            }
        };
        Ok(DynamoDbStore::new(
            source,
            self.table,
            self.prefix,
            self.endpoint,
            Timing {
                request_timeout,
                batch_deadline: self.batch_deadline,
                stream_poll_interval: self.stream_poll_interval,
            },
            #[cfg(feature = "testing")]
            self.before_upsert_write,
        ))
    }
}

fn static_credentials(id: &str, secret: &Secret) -> Credentials {
    Credentials::new(id, secret.expose(), None, None, "flagstore-static")
}

/// DynamoDB's own rule: 3 to 255 characters of `[A-Za-z0-9_.-]`.
fn validate_table_name(table: &str) -> Result<()> {
    if table.is_empty() {
        return Err(Error::config(BACKEND, "a table name is required"));
    }
    let valid_chars = table
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !(3..=255).contains(&table.len()) || !valid_chars {
        return Err(Error::config(
            BACKEND,
            format!(
                "table name {table:?} is invalid: DynamoDB allows 3 to 255 characters of A-Z, a-z, 0-9, '_', '-' and '.'"
            ),
        ));
    }
    Ok(())
}

impl fmt::Debug for DynamoDbStoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamoDbStoreBuilder")
            .field("table", &self.table)
            .field("prefix", &self.prefix)
            .field("client", &self.client.as_ref().map(|_| "<caller's client>"))
            .field(
                "sdk_config",
                &self.sdk_config.as_ref().map(|_| "<caller's config>"),
            )
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("credentials", &self.credentials)
            .field("network", &self.network)
            .field("batch_deadline", &self.batch_deadline)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DynamoDbStore;

    fn config_error(builder: DynamoDbStoreBuilder) -> String {
        match builder.build() {
            Err(err @ Error::Config { .. }) => err.to_string(),
            other => panic!("expected a configuration error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn settings_a_caller_supplied_client_would_ignore_are_refused() {
        let sdk = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .build();
        let err = DynamoDbStore::builder("flags")
            .client(Client::from_conf(sdk.clone()))
            .url("http://127.0.0.1:8000")
            .region("eu-west-1")
            .build()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "dynamodb: invalid configuration: url, region cannot be combined with client(): configure the client instead"
        );
        assert!(
            DynamoDbStore::builder("flags")
                .client(Client::from_conf(sdk))
                .prefix("p")
                .request_timeout(Duration::from_secs(3))
                .build()
                .is_ok()
        );
    }

    #[test]
    fn validates_with_errors_that_name_the_setting() {
        assert_eq!(
            config_error(DynamoDbStore::builder("")),
            "dynamodb: invalid configuration: a table name is required"
        );
        assert_eq!(
            config_error(DynamoDbStore::builder("a b")),
            r#"dynamodb: invalid configuration: table name "a b" is invalid: DynamoDB allows 3 to 255 characters of A-Z, a-z, 0-9, '_', '-' and '.'"#
        );
        assert_eq!(
            config_error(DynamoDbStore::builder("flags").url("127.0.0.1:8000")),
            r#"dynamodb: invalid configuration: url "127.0.0.1:8000" is not an http:// or https:// URL"#
        );
        assert!(
            config_error(DynamoDbStore::builder("flags").request_timeout(Duration::ZERO))
                .contains("must be positive")
        );
    }

    #[test]
    fn from_env_reads_the_documented_variables() {
        let builder = DynamoDbStoreBuilder::from_vars(|name| match name {
            "DYNAMODB_TABLE" => Some("ld-flags".to_owned()),
            "DYNAMODB_PREFIX" => Some("prod".to_owned()),
            "DYNAMODB_URL" => Some("http://127.0.0.1:8000".to_owned()),
            _ => None,
        });
        let store = builder.build().unwrap();
        assert_eq!(
            store.to_string(),
            r#"dynamodb store table "ld-flags" at http://127.0.0.1:8000 (prefix "prod")"#
        );
        let err = DynamoDbStoreBuilder::from_vars(|_| None)
            .build()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "dynamodb: invalid configuration: a table name is required"
        );
    }

    #[test]
    fn the_secret_key_never_shows() {
        let builder = DynamoDbStore::builder("flags")
            .static_credentials("AKIDEXAMPLE", "wJalrXUtnFEMI-secret");
        assert!(!format!("{builder:?}").contains("wJalrXUtnFEMI"));
        let store = builder.build().unwrap();
        assert!(!format!("{store:?} {store}").contains("wJalrXUtnFEMI"));
    }
}

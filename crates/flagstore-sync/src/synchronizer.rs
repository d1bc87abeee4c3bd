//! The synchronizer: its configuration, the running tasks, and the one-shot sync.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flagstore::backend::Reconnect;
use flagstore::big_segments::DynBigSegmentStore;
use flagstore::{DynStore, Kind};
use futures::TryStreamExt;

use crate::big_segments::BigSegmentsSync;
use flagstore_url::StoreUrl;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::SyncError;
use crate::data::DataSet;
use crate::environment::{Feed, Mode};
use crate::sdk_key::SdkKey;
use crate::source::{Failure, Source};
use crate::status::{
    ConnectionState, ConnectionStatus, DataStoreState, DataStoreStatus, EnvironmentStatus, Status,
    now_millis,
};
use crate::writer::{StatusSlot, Writer};

/// LaunchDarkly's streaming service.
pub const DEFAULT_STREAM_URI: &str = "https://stream.launchdarkly.com";
/// LaunchDarkly's polling service.
pub const DEFAULT_BASE_URI: &str = "https://sdk.launchdarkly.com";

/// One LaunchDarkly environment: its SDK key and the stores it feeds.
///
/// ```
/// use flagstore_sync::{Environment, SdkKey};
/// use flagstore_url::StoreUrl;
///
/// let production = Environment::new("production", SdkKey::new("sdk-0000-1111")?)
///     .store(StoreUrl::parse("redis://cache:6379?prefix=production")?)
///     // During a migration: both stores get every change.
///     .store(StoreUrl::parse("dynamodb://flags?prefix=production")?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Environment {
    name: String,
    key: SdkKey,
    stores: Vec<Target>,
    big_segment_stores: Vec<DynBigSegmentStore>,
}

#[derive(Clone)]
enum Target {
    Url(StoreUrl),
    Store(DynStore),
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Url(url) => write!(f, "{url}"),
            Target::Store(store) => write!(f, "{store}"),
        }
    }
}

impl Environment {
    /// An environment named `name` (in status pages, metrics and logs) with its SDK key.
    pub fn new(name: impl Into<String>, sdk_key: SdkKey) -> Self {
        Environment {
            name: name.into(),
            key: sdk_key,
            stores: Vec::new(),
            big_segment_stores: Vec::new(),
        }
    }

    /// Adds a store, opened when the synchronizer is built.
    #[must_use = "store returns the environment with the store added"]
    pub fn store(mut self, url: StoreUrl) -> Self {
        self.stores.push(Target::Url(url));
        self
    }

    /// Adds a store already opened (any [`PersistentDataStore`](flagstore::PersistentDataStore)).
    #[must_use = "store_instance returns the environment with the store added"]
    pub fn store_instance(mut self, store: DynStore) -> Self {
        self.stores.push(Target::Store(store));
        self
    }

    /// Adds a Big Segments store already opened, kept current once the environment's data holds
    /// an unbounded segment. A store added by URL (Redis, DynamoDB) gets its Big Segments kept
    /// current without this; this is for stores added with
    /// [`store_instance`](Self::store_instance).
    #[must_use = "big_segment_store_instance returns the environment with the store added"]
    pub fn big_segment_store_instance(mut self, store: DynBigSegmentStore) -> Self {
        self.big_segment_stores.push(store);
        self
    }

    /// The environment's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Builds a [`Synchronizer`]; every option has the SDKs' default.
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until build()"]
pub struct SynchronizerBuilder {
    environments: Vec<Environment>,
    stream_uri: String,
    base_uri: String,
    polling: bool,
    poll_interval: Duration,
    read_timeout: Duration,
    request_timeout: Duration,
    check_interval: Duration,
    initial_reconnect_delay: Duration,
}

impl Default for SynchronizerBuilder {
    fn default() -> Self {
        SynchronizerBuilder {
            environments: Vec::new(),
            stream_uri: DEFAULT_STREAM_URI.to_owned(),
            base_uri: DEFAULT_BASE_URI.to_owned(),
            polling: false,
            poll_interval: Synchronizer::MIN_POLL_INTERVAL,
            read_timeout: Duration::from_secs(300),
            request_timeout: Duration::from_secs(30),
            check_interval: Duration::from_secs(10),
            initial_reconnect_delay: Duration::from_secs(1),
        }
    }
}

impl SynchronizerBuilder {
    /// Adds an environment; at least one is needed, each with a distinct name.
    pub fn environment(mut self, environment: Environment) -> Self {
        self.environments.push(environment);
        self
    }

    /// The streaming service: LaunchDarkly's by default; a Relay Proxy's or a test server's.
    pub fn stream_uri(mut self, uri: impl Into<String>) -> Self {
        self.stream_uri = uri.into();
        self
    }

    /// The polling service: LaunchDarkly's by default; a Relay Proxy's or a test server's.
    pub fn base_uri(mut self, uri: impl Into<String>) -> Self {
        self.base_uri = uri.into();
        self
    }

    /// Poll instead of streaming.
    pub fn polling(mut self, polling: bool) -> Self {
        self.polling = polling;
        self
    }

    /// How often to poll, in polling mode and while the stream is down: at least (and by
    /// default) 30 s.
    pub fn poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// How long a stream may stay silent (LaunchDarkly sends a heartbeat every few minutes)
    /// before it is dropped and reopened: 5 minutes by default.
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// How long to wait for LaunchDarkly to answer a request (connecting included): 30 s by
    /// default.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How often each store is asked whether it still holds the data (a Redis restarted empty,
    /// a table recreated), and how long a store that failed waits at most before it is written
    /// again: 10 s by default.
    pub fn check_interval(mut self, interval: Duration) -> Self {
        self.check_interval = interval;
        self
    }

    /// The first delay before reconnecting a failed stream, doubling to 30 s: 1 s by default.
    pub fn initial_reconnect_delay(mut self, delay: Duration) -> Self {
        self.initial_reconnect_delay = delay;
        self
    }

    /// Checks the configuration and opens every store (no connection is made yet).
    pub fn build(self) -> Result<Synchronizer, SyncError> {
        if self.environments.is_empty() {
            return Err(SyncError::config("no environment to sync"));
        }
        for (i, env) in self.environments.iter().enumerate() {
            if self.environments[..i].iter().any(|e| e.name == env.name) {
                return Err(SyncError::config(format!(
                    "the environment name {:?} is given twice",
                    env.name
                )));
            }
            if env.stores.is_empty() {
                return Err(SyncError::config(format!(
                    "the environment {:?} has no store to write",
                    env.name
                )));
            }
        }
        if self.poll_interval < Synchronizer::MIN_POLL_INTERVAL {
            return Err(SyncError::config(format!(
                "the poll interval is {:?}; it must be at least 30s",
                self.poll_interval
            )));
        }
        for (name, value) in [
            ("read timeout", self.read_timeout),
            ("request timeout", self.request_timeout),
            ("check interval", self.check_interval),
            ("initial reconnect delay", self.initial_reconnect_delay),
        ] {
            if value.is_zero() {
                return Err(SyncError::config(format!("the {name} must be more than 0")));
            }
        }
        let stream_uri = endpoint("stream URI", &self.stream_uri)?;
        let base_uri = endpoint("base URI", &self.base_uri)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("flagstore-sync/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| SyncError::config(format!("cannot set up the HTTP client: {e}")))?;
        let mut environments = Vec::new();
        for env in self.environments {
            let mut stores = Vec::new();
            for target in env.stores {
                stores.push(OpenStore::open(target).map_err(|source| SyncError::Store {
                    environment: env.name.clone(),
                    store: "(opening)".to_owned(),
                    source: Box::new(source),
                })?);
            }
            environments.push(OpenEnvironment {
                source: Source {
                    http: http.clone(),
                    stream_uri: stream_uri.clone(),
                    base_uri: base_uri.clone(),
                    key: env.key,
                    read_timeout: self.read_timeout,
                    request_timeout: self.request_timeout,
                },
                name: env.name,
                stores,
                big_segment_stores: env.big_segment_stores,
            });
        }
        Ok(Synchronizer {
            environments,
            mode: if self.polling {
                Mode::Polling
            } else {
                Mode::Streaming
            },
            poll_interval: self.poll_interval,
            check_interval: self.check_interval,
            first_retry: self.initial_reconnect_delay,
        })
    }
}

/// A URI without its trailing slashes, refused unless it is http or https.
fn endpoint(what: &str, uri: &str) -> Result<String, SyncError> {
    let parsed = reqwest::Url::parse(uri)
        .map_err(|e| SyncError::config(format!("the {what} {uri:?} is not a URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(SyncError::config(format!(
            "the {what} {uri:?} must be an http:// or https:// URL with a host"
        )));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(SyncError::config(format!(
            "the {what} must not hold credentials: the SDK key is the only one sent"
        )));
    }
    Ok(uri.trim_end_matches('/').to_owned())
}

/// A store, opened, with what status reports about it.
#[derive(Debug, Clone)]
struct OpenStore {
    store: DynStore,
    /// The same database's Big Segments (Redis, DynamoDB), kept current once the data holds
    /// an unbounded segment.
    big_segments: Option<DynBigSegmentStore>,
    database: String,
    server: Option<String>,
    prefix: Option<String>,
    table: Option<String>,
}

impl OpenStore {
    fn open(target: Target) -> flagstore::Result<OpenStore> {
        Ok(match target {
            Target::Url(url) => OpenStore {
                store: url.open()?,
                big_segments: url.open_big_segments().ok(),
                database: url.backend().to_owned(),
                server: url.server(),
                prefix: url.prefix().map(str::to_owned),
                table: url.table().map(str::to_owned),
            },
            Target::Store(store) => OpenStore {
                big_segments: None,
                database: store.to_string(),
                store,
                server: None,
                prefix: None,
                table: None,
            },
        })
    }

    fn status(&self) -> DataStoreStatus {
        DataStoreStatus {
            state: DataStoreState::Interrupted,
            state_since: now_millis(),
            database: self.database.clone(),
            db_server: self.server.clone(),
            db_prefix: self.prefix.clone(),
            db_table: self.table.clone(),
            last_error: None,
        }
    }
}

#[derive(Debug, Clone)]
struct OpenEnvironment {
    name: String,
    source: Source,
    stores: Vec<OpenStore>,
    /// Big Segments stores given as instances, beside those of `stores`.
    big_segment_stores: Vec<DynBigSegmentStore>,
}

/// Keeps stores fed from LaunchDarkly: per environment, the whole data set on each (re)connect
/// and every change after it, written byte for byte; repairs a store that failed or was wiped
/// from the data in memory.
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// use flagstore_sync::{Environment, SdkKey, Synchronizer};
/// use flagstore_url::StoreUrl;
///
/// let sync = Synchronizer::builder()
///     .environment(
///         Environment::new("production", SdkKey::from_env("LD_SDK_KEY")?)
///             .store(StoreUrl::parse("redis://127.0.0.1:6379")?),
///     )
///     .build()?;
/// let running = sync.start();
/// tokio::signal::ctrl_c().await?;
/// running.shutdown().await;
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct Synchronizer {
    environments: Vec<OpenEnvironment>,
    mode: Mode,
    poll_interval: Duration,
    check_interval: Duration,
    first_retry: Duration,
}

impl Synchronizer {
    /// The shortest poll interval LaunchDarkly allows.
    pub const MIN_POLL_INTERVAL: Duration = Duration::from_secs(30);

    /// A builder with the SDKs' defaults: LaunchDarkly's endpoints, streaming.
    pub fn builder() -> SynchronizerBuilder {
        SynchronizerBuilder::default()
    }

    /// Starts every environment's feed and store writers on the current Tokio runtime.
    ///
    /// # Panics
    /// Outside a Tokio runtime, as `tokio::spawn` does.
    pub fn start(self) -> SyncHandle {
        let initial = Status {
            environments: self
                .environments
                .iter()
                .map(|env| EnvironmentStatus {
                    name: env.name.clone(),
                    sdk_key: env.source.key.masked(),
                    connection: ConnectionStatus {
                        state: ConnectionState::Initializing,
                        state_since: now_millis(),
                        last_error: None,
                    },
                    stores: env.stores.iter().map(OpenStore::status).collect(),
                    last_update: None,
                    big_segments: None,
                })
                .collect(),
        };
        let (status, _) = watch::channel(initial);
        let (stop, stopped) = watch::channel(false);
        let mut feeds = JoinSet::new();
        let mut writers = JoinSet::new();
        for (index, env) in self.environments.into_iter().enumerate() {
            let memory = Arc::new(Mutex::new(None));
            let big_stores: Vec<DynBigSegmentStore> = env
                .stores
                .iter()
                .filter_map(|store| store.big_segments.clone())
                .chain(env.big_segment_stores.iter().cloned())
                .collect();
            let big_segments = (!big_stores.is_empty()).then(|| BigSegmentsSync {
                name: env.name.clone(),
                index,
                source: env.source.clone(),
                stores: big_stores,
                status: status.clone(),
                first_retry: self.first_retry,
            });
            let mut senders = Vec::new();
            for (store_index, store) in env.stores.into_iter().enumerate() {
                let (tx, rx) = mpsc::unbounded_channel();
                senders.push(tx);
                let writer = Writer {
                    store: store.store,
                    memory: memory.clone(),
                    writes: rx,
                    slot: StatusSlot {
                        status: status.clone(),
                        env_index: index,
                        env_name: env.name.clone(),
                        store_index,
                    },
                    check_interval: self.check_interval,
                };
                writers.spawn(writer.run(stopped.clone()));
            }
            let feed = Feed {
                name: env.name,
                index,
                source: env.source,
                mode: self.mode,
                poll_interval: self.poll_interval,
                first_retry: self.first_retry,
                memory,
                writers: senders,
                status: status.clone(),
                last_data: None,
                big_segments,
                stop: stopped.clone(),
            };
            feeds.spawn(feed.run());
        }
        SyncHandle {
            status,
            stop,
            feeds,
            writers,
        }
    }

    /// Fetches each environment's whole data set once (from the polling endpoint), writes it
    /// to each of its stores with `init`, and reads it back: an environment succeeds only if
    /// every store then holds exactly what was fetched. The body of a cron job or of a function
    /// a LaunchDarkly webhook triggers. Network failures are retried twice (1 s, then 2 s
    /// later); a refused SDK key is not.
    pub async fn sync_once(&self) -> Vec<Result<OnceReport, SyncError>> {
        let mut reports = Vec::new();
        for env in &self.environments {
            reports.push(self.once(env).await);
        }
        reports
    }

    async fn once(&self, env: &OpenEnvironment) -> Result<OnceReport, SyncError> {
        let mut backoff = Reconnect::starting_at(self.first_retry);
        let mut attempts = 0;
        let data = loop {
            attempts += 1;
            match env.source.poll().await {
                Ok(data) => break data,
                Err(failure) if failure.is_permanent() || attempts == 3 => {
                    return Err(SyncError::Source {
                        environment: env.name.clone(),
                        status: match failure {
                            Failure::Status(status) => Some(status),
                            _ => None,
                        },
                        message: failure.to_string(),
                    });
                }
                Err(failure) => {
                    tracing::warn!("{}: {failure}; retrying", env.name);
                    tokio::time::sleep(backoff.next_delay()).await;
                }
            }
        };
        let collections = data.to_collections();
        for store in &env.stores {
            let failed = |source| SyncError::Store {
                environment: env.name.clone(),
                store: store.store.to_string(),
                source: Box::new(source),
            };
            store.store.init(&collections).await.map_err(failed)?;
            for kind in [Kind::FEATURES, Kind::SEGMENTS] {
                let difference = first_difference(&store.store, &data, &kind)
                    .await
                    .map_err(failed)?;
                if let Some(difference) = difference {
                    let too_large = store.store.item_limit().and_then(|limit| {
                        data.items(&kind)
                            .map(|item| (item, limit.size_of(&kind, item)))
                            .find(|(_, size)| *size > limit.bytes())
                            .map(|(item, size)| {
                                format!(
                                    "; the {kind} item {:?} is {size} bytes, over {}'s {}-byte limit, so the store cannot hold it",
                                    item.key(),
                                    limit.backend(),
                                    limit.bytes()
                                )
                            })
                    });
                    return Err(SyncError::Mismatch {
                        environment: env.name.clone(),
                        store: store.store.to_string(),
                        message: difference + &too_large.unwrap_or_default(),
                    });
                }
            }
        }
        Ok(OnceReport {
            environment: env.name.clone(),
            flags: data.live_count(&Kind::FEATURES),
            segments: data.live_count(&Kind::SEGMENTS),
            stores: env.stores.len(),
        })
    }
}

/// The first way in which `store`'s items of `kind` differ from `data`'s, if any: an unreadable
/// item, one not written, one at another version or with other JSON, one missing. Read a page
/// at a time, so that the data set is never held twice (100,000 flags are over 100 MB).
async fn first_difference(
    store: &DynStore,
    data: &DataSet,
    kind: &Kind,
) -> flagstore::Result<Option<String>> {
    let mut read = std::collections::HashSet::new();
    let mut pages = store.pages(kind);
    while let Some(page) = pages.try_next().await? {
        if let Some(bad) = page.unreadable.first() {
            return Ok(Some(format!(
                "after the write, the {kind} item {:?} is unreadable: {}",
                bad.key, bad.error
            )));
        }
        for got in &page.items {
            let Some(wrote) = data.get(kind, got.key()) else {
                return Ok(Some(format!(
                    "the {kind} item {:?} is there but was not written",
                    got.key()
                )));
            };
            if got.version() != wrote.version() || got.json() != wrote.json() {
                return Ok(Some(format!(
                    "the {kind} item {:?} was written at version {} but read back at version {}{}",
                    wrote.key(),
                    wrote.version(),
                    got.version(),
                    if got.version() == wrote.version() {
                        " with other JSON"
                    } else {
                        ""
                    }
                )));
            }
            read.insert(wrote.key());
        }
    }
    Ok(data
        .items(kind)
        .find(|wrote| !read.contains(wrote.key()))
        .map(|wrote| {
            format!(
                "the {kind} item {:?} (version {}) is missing after the write",
                wrote.key(),
                wrote.version()
            )
        }))
}

/// What a one-shot sync wrote for one environment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OnceReport {
    /// The environment's name.
    pub environment: String,
    /// Flags written.
    pub flags: usize,
    /// Segments written.
    pub segments: usize,
    /// Stores written, each checked.
    pub stores: usize,
}

/// A running [`Synchronizer`]: its status, and how to stop it. Dropping it stops every task at
/// once, a write in progress included; [`shutdown`](Self::shutdown) lets the writes finish.
#[derive(Debug)]
pub struct SyncHandle {
    status: watch::Sender<Status>,
    stop: watch::Sender<bool>,
    feeds: JoinSet<()>,
    writers: JoinSet<()>,
}

impl SyncHandle {
    /// Every environment's status now.
    pub fn status(&self) -> Status {
        self.status.borrow().clone()
    }

    /// The status as it changes, for waiting on a state without polling.
    pub fn subscribe(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    /// Resolves once every environment is OFF (each refused its SDK key): nothing is left to
    /// do, and a service should exit with an error.
    pub async fn all_off(&self) {
        let mut status = self.status.subscribe();
        let _ = status
            .wait_for(|s| {
                s.environments
                    .iter()
                    .all(|e| e.connection.state == ConnectionState::Off)
            })
            .await;
    }

    /// Stops reading from LaunchDarkly, lets every store finish the writes already received
    /// (a store that cannot be written is left as it is), and returns when all is done or
    /// after 30 s.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let finish = async {
            while self.feeds.join_next().await.is_some() {}
            while self.writers.join_next().await.is_some() {}
        };
        if tokio::time::timeout(Duration::from_secs(30), finish)
            .await
            .is_err()
        {
            tracing::warn!("some store writes did not finish within 30 s of the shutdown");
        }
    }
}

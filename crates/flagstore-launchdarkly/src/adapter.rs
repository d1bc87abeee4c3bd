//! The factory the SDK's `PersistentDataStoreBuilder` takes, and the store it makes.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use flagstore::{Collection, DynStore, Item, Kind, PersistentDataStore, sort_for_init};
use launchdarkly_server_sdk as ld;
use ld::{AllData, DataKind, PersistentStoreError, SerializedItem};

use crate::runtime::StoreRuntime;

/// The longest any one call may take before the adapter reports an error to the SDK. The
/// stores' own timeouts answer well before this; it only guards against a stuck store.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Any flagstore store (or a [`flagstore::CachingStore`] around one) as a
/// [`launchdarkly_server_sdk::PersistentDataStoreFactory`].
///
/// ```no_run
/// use std::sync::Arc;
/// use std::time::Duration;
/// use flagstore_launchdarkly::LaunchDarklyStore;
/// use flagstore_redis::RedisStore;
/// use launchdarkly_server_sdk::{Client, ConfigBuilder, PersistentDataStoreBuilder};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let redis = RedisStore::builder().url("redis://localhost:6379").build()?;
/// let factory = LaunchDarklyStore::new(redis)?;
/// let mut store = PersistentDataStoreBuilder::new(Arc::new(factory));
/// store.cache_time(Duration::from_secs(30));
///
/// let config = ConfigBuilder::new("sdk-key-123abc").data_store(&store).build()?;
/// let client = Client::build(config)?;
/// client.start_with_default_executor();
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LaunchDarklyStore {
    store: DynStore,
    runtime: Arc<StoreRuntime>,
    call_timeout: Duration,
}

impl LaunchDarklyStore {
    /// Adapts `store`, running it on a runtime of two threads that this adapter owns. Fails
    /// only if the operating system refuses the threads.
    pub fn new(store: impl PersistentDataStore) -> flagstore::Result<Self> {
        Self::from_arc(Arc::new(store))
    }

    /// Like [`new`](Self::new), for a store already behind an `Arc`.
    pub fn from_arc(store: DynStore) -> flagstore::Result<Self> {
        let runtime = StoreRuntime::new(2).map_err(|e| {
            flagstore::Error::config_caused_by(
                "launchdarkly",
                "could not start the adapter's runtime",
                e,
            )
        })?;
        Ok(LaunchDarklyStore {
            store,
            runtime: Arc::new(runtime),
            call_timeout: DEFAULT_CALL_TIMEOUT,
        })
    }

    /// The longest one call may take before the SDK gets an error (default 60 s).
    #[must_use = "call_timeout returns the configured adapter; the original is consumed"]
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// The adapted store.
    pub fn store(&self) -> &DynStore {
        &self.store
    }

    fn run<T: Send + 'static>(
        &self,
        what: &str,
        work: impl std::future::Future<Output = flagstore::Result<T>> + Send + 'static,
    ) -> Result<T, PersistentStoreError> {
        match self.runtime.run(self.call_timeout, work) {
            Some(Ok(value)) => Ok(value),
            Some(Err(err)) => Err(to_sdk_error(&err)),
            None => Err(PersistentStoreError::new(format!(
                "{}: {what} did not finish within {:?}",
                self.store, self.call_timeout
            ))),
        }
    }
}

impl fmt::Debug for LaunchDarklyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LaunchDarklyStore")
            .field("store", &format_args!("{}", self.store))
            .field("call_timeout", &self.call_timeout)
            .finish_non_exhaustive()
    }
}

/// The SDK's error carries only a message: it gets ours (backend, operation, kind, key) and the
/// causes below it, which never contain secrets.
fn to_sdk_error(err: &flagstore::Error) -> PersistentStoreError {
    PersistentStoreError::new(flagstore::error::one_line(err))
}

/// The SDK's view of an item, with `version` and `deleted` filled in from the stored JSON: the
/// SDK recognises a tombstone by itself only when its key is `$deleted`, so Python's and Node's
/// tombstones would otherwise read as "flag not found" and be fetched again on every evaluation.
fn to_serialized(item: &Item) -> SerializedItem {
    SerializedItem {
        version: item.version(),
        deleted: item.is_deleted(),
        serialized_item: item.json().to_owned(),
    }
}

fn from_serialized(key: &str, item: SerializedItem) -> Result<Item, PersistentStoreError> {
    if item.deleted {
        return Ok(Item::tombstone(key, item.version));
    }
    Item::from_json(key, item.serialized_item).map_err(|e| {
        PersistentStoreError::new(format!(
            "the SDK handed over an unreadable item {key:?}: {e}"
        ))
    })
}

impl ld::PersistentDataStoreFactory for LaunchDarklyStore {
    fn create_persistent_data_store(
        &self,
    ) -> Result<Box<dyn ld::PersistentDataStore>, std::io::Error> {
        Ok(Box::new(self.clone()))
    }
}

impl ld::PersistentDataStore for LaunchDarklyStore {
    fn init(
        &mut self,
        all_data: AllData<SerializedItem, SerializedItem>,
    ) -> Result<(), PersistentStoreError> {
        let convert =
            |items: HashMap<String, SerializedItem>| -> Result<Vec<Item>, PersistentStoreError> {
                let mut items: Vec<_> = items.into_iter().collect();
                items.sort_by(|a, b| a.0.cmp(&b.0));
                items
                    .into_iter()
                    .map(|(key, item)| from_serialized(&key, item))
                    .collect()
            };
        // The SDK hands over hash maps: order them as every store writes (segments first,
        // prerequisites before dependents).
        let data = sort_for_init(vec![
            Collection::new(Kind::FEATURES, convert(all_data.flags)?),
            Collection::new(Kind::SEGMENTS, convert(all_data.segments)?),
        ]);
        let store = Arc::clone(&self.store);
        self.run("init", async move { store.init(&data).await })
    }

    fn flag(&self, key: &str) -> Result<Option<SerializedItem>, PersistentStoreError> {
        let (store, key) = (Arc::clone(&self.store), key.to_owned());
        let item = self.run("get", async move { store.get(&Kind::FEATURES, &key).await })?;
        Ok(item.as_ref().map(to_serialized))
    }

    fn segment(&self, key: &str) -> Result<Option<SerializedItem>, PersistentStoreError> {
        let (store, key) = (Arc::clone(&self.store), key.to_owned());
        let item = self.run("get", async move { store.get(&Kind::SEGMENTS, &key).await })?;
        Ok(item.as_ref().map(to_serialized))
    }

    fn all_flags(&self) -> Result<HashMap<String, SerializedItem>, PersistentStoreError> {
        let store = Arc::clone(&self.store);
        let items = self.run(
            "get_all",
            async move { store.get_all(&Kind::FEATURES).await },
        )?;
        Ok(items
            .iter()
            .map(|item| (item.key().to_owned(), to_serialized(item)))
            .collect())
    }

    fn upsert(
        &mut self,
        kind: DataKind,
        key: &str,
        item: SerializedItem,
    ) -> Result<bool, PersistentStoreError> {
        let kind = match kind {
            DataKind::Flag => Kind::FEATURES,
            DataKind::Segment => Kind::SEGMENTS,
        };
        let item = from_serialized(key, item)?;
        let store = Arc::clone(&self.store);
        self.run("upsert", async move { store.upsert(&kind, item).await })
    }

    fn is_initialized(&self) -> bool {
        let store = Arc::clone(&self.store);
        match self.run(
            "is_initialized",
            async move { store.is_initialized().await },
        ) {
            Ok(initialized) => initialized,
            Err(err) => {
                tracing::warn!(error = %err, "could not tell whether the store is initialized");
                false
            }
        }
    }
}

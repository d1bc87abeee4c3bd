//! The store: the LaunchDarkly DynamoDB schema.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use aws_config::{ConfigLoader, SdkConfig};
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{AttributeValue, WriteRequest};
use aws_sdk_dynamodbstreams::Client as StreamsClient;
use flagstore::backend::{Pages, StoredItems, paged};
use flagstore::backend::{replaced_kinds, write_stages};
use flagstore::error::Operation;
use flagstore::{Collection, Error, Item, Kind, PersistentDataStore, Result};
use futures::StreamExt;
use tokio::sync::OnceCell;

use crate::batch::{Attempt, write_all};
use crate::builder::DynamoDbStoreBuilder;
use crate::error::{BACKEND, from_sdk, is_throttled, written};
use crate::feed::StreamFeed;
use crate::schema::{
    MAX_ITEM_SIZE, Namespaces, PARTITION_KEY, SORT_KEY, VERSION_ATTR, delete_request,
    estimated_size, item_attributes, item_from_record, key_attributes, put_request, stored_item,
};

/// BatchWriteItem's limit on requests per call.
const BATCH_SIZE: usize = 25;
/// BatchWriteItem calls in flight at once within one stage of an `init` (or one Big Segments
/// write): DynamoDB takes them in parallel, and a table's write capacity, not this, is the limit.
const BATCHES_IN_FLIGHT: usize = 8;

/// One DynamoDB record, by attribute name.
type Record = HashMap<String, AttributeValue>;

/// The clients, or what is needed to make them on first use (loading AWS configuration is async
/// and may read files or call metadata endpoints: not something `build()` should do).
pub(crate) struct ClientSource {
    clients: OnceCell<Clients>,
    loader: std::sync::Mutex<Option<ConfigLoader>>,
}

/// DynamoDB's client, and the DynamoDB Streams client the change feed uses (`None`: a caller's
/// DynamoDB client came without one).
struct Clients {
    dynamo: Client,
    streams: Option<StreamsClient>,
}

impl Clients {
    fn from_config(config: &SdkConfig) -> Clients {
        Clients {
            dynamo: Client::new(config),
            streams: Some(StreamsClient::new(config)),
        }
    }
}

impl ClientSource {
    pub(crate) fn ready(dynamo: Client, streams: Option<StreamsClient>) -> Self {
        ClientSource {
            clients: OnceCell::new_with(Some(Clients { dynamo, streams })),
            loader: std::sync::Mutex::new(None),
        }
    }

    /// Both clients from one AWS configuration.
    pub(crate) fn from_config(config: &SdkConfig) -> Self {
        ClientSource {
            clients: OnceCell::new_with(Some(Clients::from_config(config))),
            loader: std::sync::Mutex::new(None),
        }
    }

    pub(crate) fn lazy(loader: ConfigLoader) -> Self {
        ClientSource {
            clients: OnceCell::new(),
            loader: std::sync::Mutex::new(Some(loader)),
        }
    }

    async fn clients(&self) -> &Clients {
        self.clients
            .get_or_init(|| async {
                let loader = self.loader.lock().unwrap_or_else(|p| p.into_inner()).take();
                // The cell runs this once; without a loader (a caller's client) it is never reached.
                let config = match loader {
                    Some(loader) => loader.load().await,
                    None => {
                        aws_config::defaults(aws_config::BehaviorVersion::latest())
                            .load()
                            .await
                    }
                };
                Clients::from_config(&config)
            })
            .await
    }

    pub(crate) async fn get(&self) -> &Client {
        &self.clients().await.dynamo
    }

    /// The DynamoDB Streams client, if the store has one.
    pub(crate) async fn streams(&self) -> Option<&StreamsClient> {
        self.clients().await.streams.as_ref()
    }
}

/// The store's time limits, as the builder checked them.
pub(crate) struct Timing {
    pub(crate) request_timeout: Duration,
    pub(crate) batch_deadline: Duration,
    pub(crate) stream_poll_interval: Duration,
}

/// A [`PersistentDataStore`] in a DynamoDB table, readable and writable by every LaunchDarkly SDK
/// and the Relay Proxy.
///
/// Schema: partition key `namespace` (S), sort key `key` (S); each item is a record with
/// `namespace` = `{prefix}:{kind}` (or `{kind}` without a prefix), `key`, `version` (N) and `item`
/// (S, the JSON); the marker is a record whose namespace and key are both `{prefix}:$inited`.
/// The table must exist: the store never creates it ([`create_table`](crate::create_table) does,
/// for tests and tools).
///
/// - `init` writes in BatchWriteItem calls of 25, stage by stage ([`write_stages`]: segments,
///   then flags without prerequisites, then the flags that depend on those, …), up to 8 calls in
///   flight within a stage, while it queries the existing keys (consistent reads, every page);
///   then it deletes the keys no longer present, then writes the marker. Writes DynamoDB leaves unprocessed or throttles are retried with
///   backoff until the batch deadline, then reported as an error; never dropped.
/// - `upsert` is one conditional PutItem; a failed condition means "not updated". A record
///   whose `version` attribute is missing or not a number is replaced.
/// - Reads take an item's version from its `version` attribute, which is what the condition
///   compares (as the other SDKs' stores do), falling back to the JSON's when the attribute is
///   missing or malformed.
/// - An item over DynamoDB's 400 KB limit ([`MAX_ITEM_SIZE`], estimated by
///   [`estimated_size`](crate::estimated_size)) is never sent: `init` skips it with an
///   error-level log naming kind, key and size, writes the rest and deletes any older copy (stale
///   data must not be served); `upsert` returns [`Error::ItemTooLarge`].
/// - `get_all` skips unreadable records with an error log and counts them in
///   [`DynamoDbStore::skipped_items`]; `get` of one returns [`Error::InvalidItem`];
///   `get_all_checked` reports them.
///
/// ```no_run
/// use flagstore::{CachingStore, Kind, PersistentDataStore};
/// use flagstore_dynamodb::DynamoDbStore;
///
/// # async fn demo() -> Result<(), flagstore::Error> {
/// let dynamo = DynamoDbStore::builder("launchdarkly-flags").build()?;
/// let store = CachingStore::builder(dynamo).build()?;
/// let flag = store.get(&Kind::FEATURES, "new-checkout").await?;
/// # Ok(()) }
/// ```
pub struct DynamoDbStore {
    source: Arc<ClientSource>,
    table: String,
    names: Namespaces,
    endpoint: Option<String>,
    pub(crate) request_timeout: Duration,
    batch_deadline: Duration,
    skipped: AtomicU64,
    feed: Arc<StreamFeed>,
    #[cfg(feature = "testing")]
    before_upsert_write: Option<flagstore::testing::UpsertHook>,
}

impl DynamoDbStore {
    /// A builder for a store on `table`, prefix empty, AWS settings from the default chain.
    pub fn builder(table: impl Into<String>) -> DynamoDbStoreBuilder {
        DynamoDbStoreBuilder::new(table.into())
    }

    pub(crate) fn new(
        source: ClientSource,
        table: String,
        prefix: String,
        endpoint: Option<String>,
        timing: Timing,
        #[cfg(feature = "testing")] before_upsert_write: Option<flagstore::testing::UpsertHook>,
    ) -> Self {
        let source = Arc::new(source);
        let names = Namespaces::new(prefix);
        let feed = Arc::new(StreamFeed {
            source: Arc::clone(&source),
            table: table.clone(),
            names: names.clone(),
            request_timeout: timing.request_timeout,
            poll_interval: timing.stream_poll_interval,
        });
        DynamoDbStore {
            source,
            table,
            names,
            endpoint,
            request_timeout: timing.request_timeout,
            batch_deadline: timing.batch_deadline,
            skipped: AtomicU64::new(0),
            feed,
            #[cfg(feature = "testing")]
            before_upsert_write,
        }
    }

    /// The table name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The key prefix (empty for none).
    pub fn prefix(&self) -> &str {
        self.names.prefix()
    }

    /// The client this store uses, made on first use.
    pub async fn client(&self) -> &Client {
        self.source.get().await
    }

    /// How many unreadable records `get_all` has skipped since this store was built.
    pub fn skipped_items(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    pub(crate) fn names(&self) -> &Namespaces {
        &self.names
    }

    /// The namespace (partition key) of `kind`'s items.
    pub fn namespace(&self, kind: &Kind) -> String {
        self.names.kind(kind)
    }

    /// One request under the request timeout (a backstop for a caller's client without one).
    pub(crate) async fn call<T, E, R>(
        &self,
        op: Operation,
        request: impl Future<Output = std::result::Result<T, aws_sdk_dynamodb::error::SdkError<E, R>>>,
    ) -> Result<T>
    where
        E: aws_sdk_dynamodb::error::ProvideErrorMetadata
            + std::error::Error
            + Send
            + Sync
            + 'static,
        R: fmt::Debug + Send + Sync + 'static,
        aws_sdk_dynamodb::Error: From<aws_sdk_dynamodb::error::SdkError<E, R>>,
    {
        match tokio::time::timeout(self.request_timeout, request).await {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(err)) => Err(from_sdk(op, self.request_timeout, &self.table, err)),
            Err(_) => Err(Error::timeout(BACKEND, op, self.request_timeout)),
        }
    }

    /// Every record of a namespace (consistent reads, following every page).
    pub(crate) async fn query_all(
        &self,
        op: Operation,
        namespace: &str,
        keys_only: bool,
    ) -> Result<Vec<Record>> {
        let mut records = Vec::new();
        let mut start = None;
        loop {
            let (page, next) = self.query_page(op, namespace, keys_only, start).await?;
            records.extend(page);
            start = next;
            if start.is_none() {
                return Ok(records);
            }
        }
    }

    /// One page of a namespace's records (a consistent read), from `start` (`None`: the
    /// first), with where the next page starts (`None`: this was the last).
    async fn query_page(
        &self,
        op: Operation,
        namespace: &str,
        keys_only: bool,
        start: Option<Record>,
    ) -> Result<(Vec<Record>, Option<Record>)> {
        let client = self.client().await;
        let mut query = client
            .query()
            .table_name(&self.table)
            .consistent_read(true)
            .key_condition_expression("#namespace = :namespace")
            .expression_attribute_names("#namespace", PARTITION_KEY)
            .expression_attribute_values(":namespace", AttributeValue::S(namespace.to_owned()))
            .set_exclusive_start_key(start);
        if keys_only {
            query = query
                .projection_expression("#key")
                .expression_attribute_names("#key", SORT_KEY);
        }
        let page = self.call(op, query.send()).await?;
        let next = page.last_evaluated_key;
        Ok((page.items.unwrap_or_default(), next))
    }

    /// Writes `requests` in BatchWriteItem calls of 25, up to [`BATCHES_IN_FLIGHT`] at once,
    /// in no particular order: callers pass one stage of writes at a time. Requests are taken
    /// from `requests` only as batches are sent, so a caller that builds them lazily never
    /// holds more than the batches in flight.
    pub(crate) async fn write_batches(
        &self,
        op: Operation,
        mut requests: impl Iterator<Item = Result<WriteRequest>> + Send,
    ) -> Result<()> {
        let client = self.client().await;
        let mut in_flight = futures::stream::FuturesUnordered::new();
        loop {
            while in_flight.len() < BATCHES_IN_FLIGHT {
                let batch = requests
                    .by_ref()
                    .take(BATCH_SIZE)
                    .collect::<Result<Vec<_>>>()?;
                if batch.is_empty() {
                    break;
                }
                in_flight.push(self.write_batch(client, op, batch));
            }
            match in_flight.next().await {
                Some(written) => written?,
                None => return Ok(()),
            }
        }
    }

    /// One batch, retried until every request in it is written or the batch deadline passes.
    async fn write_batch(
        &self,
        client: &Client,
        op: Operation,
        batch: Vec<WriteRequest>,
    ) -> Result<()> {
        let send = |pending: Vec<WriteRequest>| async move {
            let request = client
                .batch_write_item()
                .request_items(&self.table, pending)
                .send();
            match tokio::time::timeout(self.request_timeout, request).await {
                Ok(Ok(output)) => Attempt::Unprocessed(
                    output
                        .unprocessed_items()
                        .and_then(|m| m.get(&self.table))
                        .cloned()
                        .unwrap_or_default(),
                ),
                Ok(Err(err)) if is_throttled(&err) => Attempt::Throttled,
                Ok(Err(err)) => {
                    Attempt::Failed(from_sdk(op, self.request_timeout, &self.table, err))
                }
                Err(_) => Attempt::Failed(Error::timeout(BACKEND, op, self.request_timeout)),
            }
        };
        match write_all(batch, self.batch_deadline, send).await {
            Ok(()) => Ok(()),
            Err(Err(err)) => Err(err),
            Err(Ok(pending)) => Err(Error::database(
                BACKEND,
                op,
                format!(
                    "{pending} writes still unprocessed after retrying for {:?} (throttled table?)",
                    self.batch_deadline
                ),
            )),
        }
    }

    fn fits(&self, op: Operation, kind: &Kind, namespace: &str, item: &Item) -> Result<()> {
        let size = estimated_size(namespace, item);
        if size <= MAX_ITEM_SIZE {
            return Ok(());
        }
        tracing::error!(
            backend = BACKEND,
            kind = %kind,
            key = item.key(),
            size,
            limit = MAX_ITEM_SIZE,
            "item is too large for DynamoDB; it was not stored"
        );
        flagstore::backend::item_rejected(BACKEND, flagstore::backend::Rejected::TooLarge);
        Err(Error::too_large(
            BACKEND,
            op,
            kind,
            item.key(),
            size,
            MAX_ITEM_SIZE,
        ))
    }
}

impl fmt::Display for DynamoDbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "dynamodb store table {:?}", self.table)?;
        if let Some(endpoint) = &self.endpoint {
            write!(f, " at {endpoint}")?;
        }
        write!(f, " (prefix {:?})", self.names.prefix())
    }
}

impl fmt::Debug for DynamoDbStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DynamoDbStore")
            .field("table", &self.table)
            .field("prefix", &self.names.prefix())
            .field("endpoint", &self.endpoint)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl PersistentDataStore for DynamoDbStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn init(&self, data: &[Collection]) -> Result<()> {
        let op = Operation::Init;
        // One put per key, from its last copy in the data (DynamoDB rejects a batch naming a key
        // twice), stage by stage so that nothing is written before what it depends on.
        let namespaces: Vec<String> = data.iter().map(|c| self.names.kind(&c.kind)).collect();
        let mut last: HashMap<(&str, &str), (usize, usize)> = HashMap::new();
        for (c, collection) in data.iter().enumerate() {
            for (i, item) in collection.items.iter().enumerate() {
                last.insert((namespaces[c].as_str(), item.key()), (c, i));
            }
        }
        let mut stages = Vec::new();
        let mut written = HashSet::new();
        for stage in write_stages(data) {
            let mut puts = Vec::with_capacity(stage.len());
            for (c, i) in stage {
                let (kind, item, namespace) = (&data[c].kind, &data[c].items[i], &namespaces[c]);
                if last.get(&(namespace.as_str(), item.key())) != Some(&(c, i)) {
                    continue;
                }
                // Too large: not written, so its old copy counts as stale and is deleted.
                if self.fits(op, kind, namespace, item).is_err() {
                    continue;
                }
                written.insert((namespace.clone(), item.key().to_owned()));
                puts.push((namespace.as_str(), item));
            }
            stages.push(puts);
        }
        // What is stored now, for every kind being replaced, read while the new items go in:
        // the deletes need it only once they are all written. A key the query sees because this
        // init just wrote it is not stale.
        let existing = async {
            let mut existing = HashSet::new();
            for kind in replaced_kinds(data) {
                let namespace = self.names.kind(kind);
                for record in self.query_all(op, &namespace, true).await? {
                    if let Some(AttributeValue::S(key)) = record.get(SORT_KEY) {
                        existing.insert((namespace.clone(), key.clone()));
                    }
                }
            }
            Ok(existing)
        };
        let writes = async {
            for puts in &stages {
                // Each request built as its batch goes: never a copy of the whole data set.
                let requests = puts
                    .iter()
                    .map(|(namespace, item)| put_request(op, item_attributes(namespace, item)));
                self.write_batches(op, requests).await?;
            }
            Ok(())
        };
        let (existing, ()) = futures::future::try_join(existing, writes).await?;
        let mut stale: Vec<_> = existing.difference(&written).cloned().collect();
        stale.sort();
        let mut deletes = Vec::with_capacity(stale.len());
        for (namespace, key) in stale {
            deletes.push(delete_request(op, &namespace, &key)?);
        }
        self.write_batches(op, deletes.into_iter().map(Ok)).await?;

        let marker = self.names.inited();
        let client = self.client().await;
        let put = client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(key_attributes(&marker, &marker)));
        self.call(op, put.send()).await?;
        Ok(())
    }

    async fn get(&self, kind: &Kind, key: &str) -> Result<Option<Item>> {
        let op = Operation::Get;
        let client = self.client().await;
        let request = client
            .get_item()
            .table_name(&self.table)
            .consistent_read(true)
            .set_key(Some(key_attributes(&self.names.kind(kind), key)))
            .send();
        let output = self
            .call(op, request)
            .await
            .map_err(|e| e.on(kind, Some(key)))?;
        output
            .item()
            .map(|record| {
                item_from_record(key, record)
                    .map_err(|e| Error::invalid_item(BACKEND, op, kind, key, e))
            })
            .transpose()
    }

    async fn get_all(&self, kind: &Kind) -> Result<Vec<Item>> {
        let stored = self.get_all_checked(kind).await?;
        Ok(stored.into_readable(BACKEND, kind, &self.skipped))
    }

    async fn get_all_checked(&self, kind: &Kind) -> Result<StoredItems> {
        let op = Operation::GetAll;
        let records = self
            .query_all(op, &self.names.kind(kind), false)
            .await
            .map_err(|e| e.on(kind, None))?;
        Ok(StoredItems::from_results(records.iter().map(stored_item)))
    }

    /// One query page (up to 1 MB of records) per page.
    fn pages<'a>(&'a self, kind: &'a Kind) -> Pages<'a> {
        let namespace = self.names.kind(kind);
        paged(None, move |start| {
            let namespace = namespace.clone();
            async move {
                let (records, next) = self
                    .query_page(Operation::GetAll, &namespace, false, start)
                    .await
                    .map_err(|e| e.on(kind, None))?;
                let page = StoredItems::from_results(records.iter().map(stored_item));
                Ok((page, next.map(Some)))
            }
        })
    }

    async fn upsert(&self, kind: &Kind, item: Item) -> Result<bool> {
        let op = Operation::Upsert;
        let namespace = self.names.kind(kind);
        self.fits(op, kind, &namespace, &item)?;
        #[cfg(feature = "testing")]
        if let Some(hook) = &self.before_upsert_write {
            hook().await;
        }
        let client = self.client().await;
        let request = client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item_attributes(&namespace, &item)))
            // The other SDKs' condition, plus: a record whose version attribute is missing or not
            // a number (written by hand, or by a broken writer) can be repaired by an upsert.
            .condition_expression(
                "attribute_not_exists(#namespace) or attribute_not_exists(#key) \
                 or attribute_not_exists(#version) or (not attribute_type(#version, :number)) \
                 or :version > #version",
            )
            .expression_attribute_names("#namespace", PARTITION_KEY)
            .expression_attribute_names("#key", SORT_KEY)
            .expression_attribute_names("#version", VERSION_ATTR)
            .expression_attribute_values(":version", AttributeValue::N(item.version().to_string()))
            .expression_attribute_values(":number", AttributeValue::S("N".to_owned()))
            .send();
        written(self.call(op, request).await).map_err(|e| e.on(kind, Some(item.key())))
    }

    async fn is_initialized(&self) -> Result<bool> {
        let op = Operation::IsInitialized;
        let marker = self.names.inited();
        let client = self.client().await;
        let request = client
            .get_item()
            .table_name(&self.table)
            .consistent_read(true)
            .set_key(Some(key_attributes(&marker, &marker)))
            .send();
        Ok(self.call(op, request).await?.item().is_some())
    }

    /// The table's DynamoDB stream: one [`Change::Item`](flagstore::changes::Change::Item) per
    /// record written or removed under this prefix, [`Change::Everything`](flagstore::changes::Change::Everything)
    /// for the marker. The table needs a stream enabled (any view type); without one the feed
    /// reports an error saying how to enable it, and retries.
    fn changes(&self) -> Option<flagstore::changes::ChangeFeed> {
        Some(self.feed.start())
    }

    async fn is_available(&self) -> bool {
        // A read of the marker: cheap, and it needs only the permissions the store needs anyway.
        let marker = self.names.inited();
        let client = self.client().await;
        let request = client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key_attributes(&marker, &marker)))
            .projection_expression("#key")
            .expression_attribute_names("#key", SORT_KEY)
            .send();
        self.call(Operation::IsAvailable, request).await.is_ok()
    }

    /// DynamoDB's 400 KB item limit, counted as [`estimated_size`](crate::estimated_size)
    /// counts: the item's JSON, its key, its namespace and the attribute names.
    fn item_limit(&self) -> Option<flagstore::backend::ItemLimit> {
        let prefix = self.names.prefix().to_owned();
        let limit = flagstore::backend::ItemLimit::new("DynamoDB", MAX_ITEM_SIZE).with_size_of(
            move |kind, item| estimated_size(&crate::schema::namespace(&prefix, kind), item),
        );
        Some(limit)
    }
}

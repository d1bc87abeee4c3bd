//! The store: the LaunchDarkly Consul key layout over Consul's HTTP API.

use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use flagstore::backend::{PAGE_ITEMS, Pages, StoredItems, paged};
use flagstore::backend::{UPSERT_ATTEMPTS, contention_backoff, version_to_replace};
use flagstore::error::{ItemError, Operation};
use flagstore::{Collection, Error, Item, Kind, PersistentDataStore, Result};
use futures::TryStreamExt;

use crate::BACKEND;
use crate::builder::ConsulStoreBuilder;
use crate::http::{ConsulHttpError, Http, KvPair, detail};
use crate::txn::{Step, TxnResults, Write, plan};

/// Consul's limit on one KV value: 512 KiB.
pub const MAX_VALUE_SIZE: usize = 524_288;

/// A [`PersistentDataStore`] in Consul's key/value store, readable and writable by every
/// LaunchDarkly SDK that supports Consul.
///
/// Layout: each item at `{prefix}/{kind}/{key}` (the JSON as the value, tombstones included), and
/// `{prefix}/$inited` (empty) once initialized.
///
/// - `init` lists the keys under `{prefix}/` (with the slash: prefix `ld` never touches `ld2/`),
///   then writes transactions (`PUT /v1/txn`) of at most 64 operations and under Consul's 512 KiB
///   request limit: the items in the order given, then deletes of keys no longer present, then the
///   marker. A value too large for any transaction body (transaction values are base64, a third
///   larger) but within Consul's value limit is written alone with a plain PUT, in its place.
/// - `upsert` reads the value and its ModifyIndex, compares versions, then writes with
///   check-and-set on that index (0 = create only), retrying up to [`UPSERT_ATTEMPTS`] times when
///   another writer got in between; running out is [`Error::Contention`].
/// - A value over Consul's 512 KiB limit ([`MAX_VALUE_SIZE`]) is never sent: `init` skips it with
///   an error-level log naming kind, key and size and deletes any older copy; `upsert` returns
///   [`Error::ItemTooLarge`].
/// - `get_all` skips values that are not valid item JSON with an error log, counted in
///   [`ConsulStore::skipped_items`]; `get` of one returns [`Error::InvalidItem`];
///   `get_all_checked` reports them. An upsert over such a value treats it as version 0 and
///   replaces it (as the Go SDK's store does), with a warning log.
/// - Only Consul's own answers count: a 404 without Consul's `X-Consul-Index` header (another
///   HTTP server at the address) is an error, not "nothing stored". Consul answers a recursive
///   read the token may not see with an empty 404; when a kind reads as empty, a plain read of
///   its folder tells a permission problem ([`Error::PermissionDenied`]) from a truly empty kind.
///
/// ```no_run
/// use flagstore::{CachingStore, Kind, PersistentDataStore};
/// use flagstore_consul::ConsulStore;
///
/// # async fn demo() -> Result<(), flagstore::Error> {
/// let consul = ConsulStore::builder().build()?; // CONSUL_HTTP_ADDR / CONSUL_HTTP_TOKEN: from_env()
/// let store = CachingStore::builder(consul).build()?;
/// let flag = store.get(&Kind::FEATURES, "new-checkout").await?;
/// # Ok(()) }
/// ```
pub struct ConsulStore {
    http: Arc<Http>,
    prefix: String,
    skipped: AtomicU64,
    #[cfg(feature = "testing")]
    before_upsert_write: Option<flagstore::testing::UpsertHook>,
}

impl ConsulStore {
    /// A builder with the defaults (`http://127.0.0.1:8500`, prefix `launchdarkly`).
    pub fn builder() -> ConsulStoreBuilder {
        ConsulStoreBuilder::new()
    }

    pub(crate) fn new(
        http: Http,
        prefix: String,
        #[cfg(feature = "testing")] before_upsert_write: Option<flagstore::testing::UpsertHook>,
    ) -> Self {
        ConsulStore {
            http: Arc::new(http),
            prefix,
            skipped: AtomicU64::new(0),
            #[cfg(feature = "testing")]
            before_upsert_write,
        }
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether requests carry an ACL token.
    pub fn has_token(&self) -> bool {
        self.http.token.is_some()
    }

    /// How many unreadable values `get_all` has skipped since this store was built.
    pub fn skipped_items(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// Where `kind`'s item `key` is stored: `{prefix}/{kind}/{key}`.
    pub fn item_key(&self, kind: &Kind, key: &str) -> String {
        format!("{}/{}/{}", self.prefix, kind, key)
    }

    /// The initialized marker: `{prefix}/$inited`.
    pub fn inited_key(&self) -> String {
        format!("{}/$inited", self.prefix)
    }

    /// The folder of `kind`'s items: `{prefix}/{kind}/`.
    fn folder(&self, kind: &Kind) -> String {
        format!("{}/{}/", self.prefix, kind)
    }

    async fn run_txn(&self, writes: &[Write<'_>], body: Vec<u8>) -> Result<()> {
        let op = Operation::Init;
        let answer = self.http.txn(op, body).await?;
        match answer.status.as_u16() {
            200 => Ok(()),
            // A rolled-back transaction answers 409 with the failed operations.
            _ => {
                let errors = serde_json::from_str::<TxnResults>(&answer.body)
                    .ok()
                    .and_then(|r| r.errors)
                    .unwrap_or_default();
                if errors.is_empty() {
                    return Err(Error::database(BACKEND, op, detail(&answer)));
                }
                let detail: Vec<String> = errors
                    .iter()
                    .map(|e| {
                        let key = match writes.get(e.op_index) {
                            Some(Write::Set { key, .. } | Write::Delete { key }) => key.as_str(),
                            None => "?",
                        };
                        format!("{key}: {}", e.what)
                    })
                    .collect();
                let detail = ConsulHttpError::new(
                    answer.status,
                    format!("transaction rolled back: {}", detail.join("; ")),
                );
                // ACLs refuse per operation, inside the transaction, rather than with a 403.
                if errors.iter().any(|e| e.what.contains("Permission denied")) {
                    Err(Error::permission_denied(BACKEND, op, detail))
                } else {
                    Err(Error::database(BACKEND, op, detail))
                }
            }
        }
    }

    fn fits(&self, op: Operation, kind: &Kind, item: &Item) -> Result<()> {
        if item.len() <= MAX_VALUE_SIZE {
            return Ok(());
        }
        tracing::error!(
            backend = BACKEND,
            kind = %kind,
            key = item.key(),
            size = item.len(),
            limit = MAX_VALUE_SIZE,
            "item is too large for Consul; it was not stored"
        );
        flagstore::backend::item_rejected(BACKEND, flagstore::backend::Rejected::TooLarge);
        Err(Error::too_large(
            BACKEND,
            op,
            kind,
            item.key(),
            item.len(),
            MAX_VALUE_SIZE,
        ))
    }

    async fn try_upsert(&self, kind: &Kind, item: &Item) -> Result<bool> {
        let op = Operation::Upsert;
        self.fits(op, kind, item)?;
        let key = self.item_key(kind, item.key());
        for attempt in 0..UPSERT_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(contention_backoff(attempt - 1)).await;
            }
            let current = self.http.get(op, &key).await?;
            #[cfg(feature = "testing")]
            if let Some(hook) = &self.before_upsert_write {
                hook().await;
            }
            let index = match current {
                Some(pair) => {
                    let stored = pair.text().unwrap_or_default();
                    if version_to_replace(BACKEND, kind, item.key(), &stored) >= item.version() {
                        return Ok(false);
                    }
                    pair.modify_index
                }
                None => 0,
            };
            if self.http.put(op, &key, item.json(), Some(index)).await? {
                return Ok(true);
            }
            tracing::debug!(kind = %kind, key = item.key(), "check-and-set lost a race; retrying");
        }
        Err(Error::contention(
            BACKEND,
            kind.clone(),
            item.key(),
            UPSERT_ATTEMPTS,
        ))
    }
}

/// The item in a KV pair.
fn decode(key: &str, pair: &KvPair) -> std::result::Result<Item, ItemError> {
    match pair.text() {
        Some(json) => Item::from_json(key, json),
        None => Err(ItemError::MalformedRecord(
            "value is not base64 of UTF-8 text".to_owned(),
        )),
    }
}

impl fmt::Display for ConsulStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "consul store at {} (", self.http.base)?;
        if let Some(dc) = &self.http.datacenter {
            write!(f, "datacenter {dc:?}, ")?;
        }
        write!(f, "prefix {:?})", self.prefix)
    }
}

impl fmt::Debug for ConsulStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulStore")
            .field("address", &self.http.base.as_str())
            .field("datacenter", &self.http.datacenter)
            .field("prefix", &self.prefix)
            .field(
                "token",
                &self.has_token().then_some(flagstore::backend::REDACTED),
            )
            .field("request_timeout", &self.http.request_timeout)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl PersistentDataStore for ConsulStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn init(&self, data: &[Collection]) -> Result<()> {
        let op = Operation::Init;
        let marker = self.inited_key();
        // The trailing slash keeps prefix "ld" from listing "ld2/...".
        let existing = self.http.keys(op, &format!("{}/", self.prefix)).await?;
        let mut stale: BTreeSet<String> = existing.into_iter().filter(|k| *k != marker).collect();

        let mut writes = Vec::new();
        for collection in data {
            for item in &collection.items {
                // Too large: not written, and its old copy stays in `stale` to be deleted.
                if self.fits(op, &collection.kind, item).is_err() {
                    continue;
                }
                let key = self.item_key(&collection.kind, item.key());
                stale.remove(&key);
                writes.push(Write::Set {
                    key,
                    value: item.json(),
                });
            }
        }
        writes.extend(stale.into_iter().map(|key| Write::Delete { key }));
        writes.push(Write::Set {
            key: marker,
            value: "",
        });

        for step in plan(writes) {
            match step {
                Step::Txn { writes, body } => self.run_txn(&writes, body).await?,
                Step::Put { key, value } => {
                    self.http.put(op, &key, value, None).await?;
                }
            }
        }
        Ok(())
    }

    async fn get(&self, kind: &Kind, key: &str) -> Result<Option<Item>> {
        let op = Operation::Get;
        let pair = self
            .http
            .get(op, &self.item_key(kind, key))
            .await
            .map_err(|e| e.on(kind, Some(key)))?;
        pair.map(|pair| {
            decode(key, &pair).map_err(|e| Error::invalid_item(BACKEND, op, kind, key, e))
        })
        .transpose()
    }

    async fn get_all(&self, kind: &Kind) -> Result<Vec<Item>> {
        let stored = self.get_all_checked(kind).await?;
        Ok(stored.into_readable(BACKEND, kind, &self.skipped))
    }

    async fn get_all_checked(&self, kind: &Kind) -> Result<StoredItems> {
        let op = Operation::GetAll;
        let folder = self.folder(kind);
        let read = async {
            let pairs = self.http.get_recursive(op, &folder).await?;
            if pairs.is_empty() {
                // Consul filters what the token may not read out of a recursive read, and
                // answers an empty 404 when nothing is left; a plain read of the folder is
                // refused outright (403) when that is why.
                self.http.get(op, &folder).await?;
            }
            Ok::<_, Error>(pairs)
        };
        let pairs = read.await.map_err(|e| e.on(kind, None))?;
        Ok(StoredItems::from_results(pairs.iter().filter_map(|pair| {
            let key = pair.key.strip_prefix(&folder).filter(|k| !k.is_empty())?;
            Some((key.to_owned(), decode(key, pair)))
        })))
    }

    /// The folder's keys first (one listing, keys only), then their values [`PAGE_ITEMS`] at a
    /// time, 16 reads in flight: Consul has no paged read of values, and a recursive read of a
    /// large folder holds it whole, twice (the answer and its decoding). A key deleted between
    /// the listing and its read is left out, as if listed after.
    fn pages<'a>(&'a self, kind: &'a Kind) -> Pages<'a> {
        let op = Operation::GetAll;
        let folder = self.folder(kind);
        let listing = async move {
            let keys = self.http.keys(op, &folder).await?;
            if keys.is_empty() {
                // As in `get_all_checked`: an empty answer may be the token's filtering.
                self.http.get(op, &folder).await?;
            }
            let keys: Vec<String> = keys
                .into_iter()
                .filter_map(|key| Some(key.strip_prefix(&folder)?.to_owned()))
                .filter(|key| !key.is_empty())
                .collect();
            Ok::<_, Error>((keys, folder))
        };
        let read = move |(keys, folder): (Vec<String>, String)| {
            paged((keys, folder, 0), move |(keys, folder, from)| async move {
                let to = (from + PAGE_ITEMS).min(keys.len());
                let mut page = Vec::with_capacity(to - from);
                for chunk in keys[from..to].chunks(16) {
                    let folder = &folder;
                    let reads = chunk.iter().map(|key| async move {
                        let pair = self.http.get(op, &format!("{folder}{key}")).await?;
                        Ok::<_, Error>(pair.map(|pair| (key.clone(), decode(key, &pair))))
                    });
                    for read in futures::future::join_all(reads).await {
                        page.extend(read.map_err(|e| e.on(kind, None))?);
                    }
                }
                let next = (to < keys.len()).then_some((keys, folder, to));
                Ok((StoredItems::from_results(page), next))
            })
        };
        Box::pin(
            futures::stream::once(async move { listing.await.map_err(|e| e.on(kind, None)) })
                .map_ok(read)
                .try_flatten(),
        )
    }

    async fn upsert(&self, kind: &Kind, item: Item) -> Result<bool> {
        self.try_upsert(kind, &item)
            .await
            .map_err(|e| e.on(kind, Some(item.key())))
    }

    async fn is_initialized(&self) -> Result<bool> {
        let op = Operation::IsInitialized;
        Ok(self.http.get(op, &self.inited_key()).await?.is_some())
    }

    async fn is_available(&self) -> bool {
        let op = Operation::IsAvailable;
        self.http.get(op, &self.inited_key()).await.is_ok()
    }

    /// Blocking queries on the store's prefix: any write under it, by any writer, is reported
    /// within moments, as a change of the kind whose folder moved
    /// ([`Change::Kind`](flagstore::changes::Change::Kind): Consul's index does not say which key)
    /// or, for the marker, as [`Change::Everything`](flagstore::changes::Change::Everything).
    /// Each query waits up to 10 s, so a silent network partition is noticed within about 10 s
    /// plus the request timeout.
    fn changes(&self) -> Option<flagstore::changes::ChangeFeed> {
        Some(crate::feed::start(Arc::clone(&self.http), &self.prefix))
    }

    /// Consul's 512 KiB value limit, on the item's JSON.
    fn item_limit(&self) -> Option<flagstore::backend::ItemLimit> {
        Some(flagstore::backend::ItemLimit::new("Consul", MAX_VALUE_SIZE))
    }
}

//! The store: the LaunchDarkly Consul key layout over consulrs.

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use consulrs::api::kv::common::KVPair;
use consulrs::api::kv::requests::{ReadKeyRequest, ReadKeysRequest, SetKeyRequest};
use consulrs::api::{self, ApiResponse};
use consulrs::client::ConsulClient;
use consulrs::error::ClientError;
use flagstore::{
    Collection, Error, Item, ItemError, Kind, Operation, PersistentDataStore, Result,
    UPSERT_ATTEMPTS, read_stored_items,
};

use crate::builder::ConsulStoreBuilder;
use crate::error::{BACKEND, from_consul};
use crate::txn::{Step, TxnRequest, TxnResults, Write, plan};

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
///   [`ConsulStore::skipped_items`]; `get` of one returns [`Error::InvalidItem`].
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
    client: ConsulClient,
    address: String,
    datacenter: Option<String>,
    prefix: String,
    request_timeout: Duration,
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
        client: ConsulClient,
        address: String,
        datacenter: Option<String>,
        prefix: String,
        request_timeout: Duration,
        #[cfg(feature = "testing")] before_upsert_write: Option<flagstore::testing::UpsertHook>,
    ) -> Self {
        ConsulStore {
            client,
            address,
            datacenter,
            prefix,
            request_timeout,
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
        self.client.settings.token.is_some()
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

    /// One request under the request timeout; Consul's 404 becomes `None`.
    async fn call<T>(
        &self,
        op: Operation,
        request: impl Future<Output = std::result::Result<ApiResponse<T>, ClientError>>,
    ) -> Result<Option<T>> {
        match tokio::time::timeout(self.request_timeout, request).await {
            Ok(Ok(response)) => Ok(Some(response.response)),
            Ok(Err(ClientError::APIError { code: 404, .. })) => Ok(None),
            Ok(Err(err)) => Err(from_consul(op, self.request_timeout, err)),
            Err(_) => Err(Error::timeout(BACKEND, op, self.request_timeout)),
        }
    }

    async fn read(&self, op: Operation, key: &str, recurse: bool) -> Result<Vec<KVPair>> {
        let request = ReadKeyRequest {
            key: key.to_owned(),
            dc: self.datacenter.clone(),
            recurse: recurse.then_some(true),
            ..Default::default()
        };
        Ok(self
            .call(op, api::exec_with_result(&self.client, request))
            .await?
            .unwrap_or_default())
    }

    async fn put(&self, op: Operation, key: &str, value: &str, cas: Option<u64>) -> Result<bool> {
        let request = SetKeyRequest {
            key: key.to_owned(),
            value: value.as_bytes().to_vec(),
            cas,
            dc: self.datacenter.clone(),
            ..Default::default()
        };
        Ok(self
            .call(op, api::exec_with_result(&self.client, request))
            .await?
            .unwrap_or(false))
    }

    async fn run_txn(&self, writes: &[Write], body: Vec<u8>) -> Result<()> {
        let op = Operation::Init;
        let request = TxnRequest {
            body,
            dc: self.datacenter.clone(),
            ..Default::default()
        };
        match tokio::time::timeout(
            self.request_timeout,
            api::exec_with_result(&self.client, request),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            // A rolled-back transaction answers 409 with the failed operations.
            Ok(Err(ClientError::APIError { code: 409, message })) => {
                let errors = message
                    .as_deref()
                    .and_then(|m| serde_json::from_str::<TxnResults>(m).ok())
                    .and_then(|r| r.errors)
                    .unwrap_or_default();
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
                let detail = format!("transaction rolled back: {}", detail.join("; "));
                // ACLs refuse per operation, inside the transaction, rather than with a 403.
                if errors.iter().any(|e| e.what.contains("Permission denied")) {
                    Err(Error::permission_denied(BACKEND, op, detail))
                } else {
                    Err(Error::database(BACKEND, op, detail))
                }
            }
            Ok(Err(err)) => Err(from_consul(op, self.request_timeout, err)),
            Err(_) => Err(Error::timeout(BACKEND, op, self.request_timeout)),
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
        for _ in 0..UPSERT_ATTEMPTS {
            let current = self.read(op, &key, false).await?.into_iter().next();
            #[cfg(feature = "testing")]
            if let Some(hook) = &self.before_upsert_write {
                hook().await;
            }
            let index = match current {
                Some(pair) => {
                    let old = decode(item.key(), &pair)
                        .map_err(|e| Error::invalid_item(BACKEND, op, kind, item.key(), e))?;
                    if old.version() >= item.version() {
                        return Ok(false);
                    }
                    pair.modify_index
                }
                None => 0,
            };
            if self.put(op, &key, item.json(), Some(index)).await? {
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

/// The item in a KV pair (consulrs hands values over as base64).
fn decode(key: &str, pair: &KVPair) -> std::result::Result<Item, ItemError> {
    let json: String = match pair.value.clone() {
        Some(value) => value.try_into().map_err(|e: ClientError| {
            ItemError::MalformedRecord(format!("value is not UTF-8 base64: {e}"))
        })?,
        None => String::new(),
    };
    Item::from_json(key, json)
}

impl fmt::Display for ConsulStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "consul store at {} (", self.address)?;
        if let Some(dc) = &self.datacenter {
            write!(f, "datacenter {dc:?}, ")?;
        }
        write!(f, "prefix {:?})", self.prefix)
    }
}

impl fmt::Debug for ConsulStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsulStore")
            .field("address", &self.address)
            .field("datacenter", &self.datacenter)
            .field("prefix", &self.prefix)
            .field("token", &self.has_token().then_some(flagstore::REDACTED))
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl PersistentDataStore for ConsulStore {
    async fn init(&self, data: &[Collection]) -> Result<()> {
        let op = Operation::Init;
        let marker = self.inited_key();
        // The trailing slash keeps prefix "ld" from listing "ld2/...".
        let listing = ReadKeysRequest {
            key: format!("{}/", self.prefix),
            dc: self.datacenter.clone(),
            ..Default::default()
        };
        let existing = self
            .call(op, api::exec_with_result(&self.client, listing))
            .await?
            .unwrap_or_default();
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
                    value: item.json().to_owned(),
                });
            }
        }
        writes.extend(stale.into_iter().map(|key| Write::Delete { key }));
        writes.push(Write::Set {
            key: marker,
            value: String::new(),
        });

        for step in plan(writes) {
            match step {
                Step::Txn { writes, body } => self.run_txn(&writes, body).await?,
                Step::Put { key, value } => {
                    self.put(op, &key, &value, None).await?;
                }
            }
        }
        Ok(())
    }

    async fn get(&self, kind: &Kind, key: &str) -> Result<Option<Item>> {
        let op = Operation::Get;
        let pairs = self
            .read(op, &self.item_key(kind, key), false)
            .await
            .map_err(|e| e.on(kind, Some(key)))?;
        pairs
            .first()
            .map(|pair| {
                decode(key, pair).map_err(|e| Error::invalid_item(BACKEND, op, kind, key, e))
            })
            .transpose()
    }

    async fn get_all(&self, kind: &Kind) -> Result<Vec<Item>> {
        let op = Operation::GetAll;
        let dir = format!("{}/{}/", self.prefix, kind);
        let pairs = self
            .read(op, &dir, true)
            .await
            .map_err(|e| e.on(kind, None))?;
        let stored = pairs.iter().filter_map(|pair| {
            let key = pair.key.strip_prefix(&dir).filter(|k| !k.is_empty())?;
            // A value that is not even base64 text reads as invalid JSON, and is skipped as such.
            let json = pair
                .value
                .clone()
                .and_then(|v| v.try_into().ok())
                .unwrap_or_default();
            Some((key.to_owned(), json))
        });
        Ok(read_stored_items(BACKEND, kind, stored, &self.skipped))
    }

    async fn upsert(&self, kind: &Kind, item: Item) -> Result<bool> {
        self.try_upsert(kind, &item)
            .await
            .map_err(|e| e.on(kind, Some(item.key())))
    }

    async fn is_initialized(&self) -> Result<bool> {
        Ok(!self
            .read(Operation::IsInitialized, &self.inited_key(), false)
            .await?
            .is_empty())
    }

    async fn is_available(&self) -> bool {
        self.read(Operation::IsAvailable, &self.inited_key(), false)
            .await
            .is_ok()
    }
}

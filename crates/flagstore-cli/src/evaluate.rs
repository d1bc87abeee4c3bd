//! Evaluations through the real LaunchDarkly SDK, in daemon mode, and honest about failures.

use std::fmt;
use std::sync::{Arc, Mutex};

pub(crate) use crate::evaluation::evaluation_json as evaluate;
use async_trait::async_trait;
use flagstore::backend::StoredItems;
use flagstore::{Collection, DynStore, Item, Kind, PersistentDataStore};
use flagstore_launchdarkly::LaunchDarklyStore;
use flagstore_launchdarkly::launchdarkly_server_sdk::{
    Client, ConfigBuilder, Context, ContextBuilder, Flag, NullEventProcessorBuilder,
    PersistentDataStoreBuilder, Segment,
};

use crate::CliError;

/// A daemon-mode client on `store`: it never talks to LaunchDarkly and reads every flag from the
/// store (no cache: the CLI evaluates once and exits).
pub(crate) fn daemon_client(store: DynStore) -> Result<Client, CliError> {
    let adapter = LaunchDarklyStore::from_arc(store)
        .map_err(|e| CliError::new(format!("could not start: {e}")))?;
    let mut builder = PersistentDataStoreBuilder::new(Arc::new(adapter));
    builder.no_caching();
    let config = ConfigBuilder::new("flagstore-cli")
        .daemon_mode(true)
        .event_processor(&NullEventProcessorBuilder::new())
        .data_store(&builder)
        .build()
        .map_err(|e| CliError::new(format!("could not configure the SDK: {e}")))?;
    let client = Client::build(config)
        .map_err(|e| CliError::new(format!("could not start the SDK: {e}")))?;
    client.start_with_default_executor();
    Ok(client)
}

/// A context from JSON (`{"kind":"user","key":"alice",…}`), or a bare user key.
pub(crate) fn parse_context(text: &str) -> Result<Context, CliError> {
    if text.trim_start().starts_with('{') {
        serde_json::from_str(text)
            .map_err(|e| CliError::new(format!("--context is not a valid context: {e}")))
    } else {
        ContextBuilder::new(text)
            .build()
            .map_err(|e| CliError::new(format!("--context is not a valid key: {e}")))
    }
}

/// The store as the SDK sees it during an evaluation, keeping every item it read and every
/// error it got.
///
/// The SDK answers FLAG_NOT_FOUND, with the default value, both when a flag is missing and when
/// reading it failed (a database error, a corrupt value) or its JSON is not a flag it can parse.
/// Only the first is a true answer; the witness lets the CLI tell them apart.
#[derive(Debug)]
pub(crate) struct Witness {
    store: DynStore,
    seen: Mutex<Vec<(Kind, Item)>>,
    errors: Mutex<Vec<flagstore::Error>>,
}

impl Witness {
    pub(crate) fn new(store: DynStore) -> Arc<Witness> {
        Arc::new(Witness {
            store,
            seen: Mutex::new(Vec::new()),
            errors: Mutex::new(Vec::new()),
        })
    }

    fn note<T>(
        &self,
        result: flagstore::Result<T>,
        items: impl Fn(&T) -> Vec<Item>,
        kind: &Kind,
    ) -> flagstore::Result<T> {
        match &result {
            Ok(value) => {
                let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
                seen.extend(items(value).into_iter().map(|item| (kind.clone(), item)));
            }
            Err(err) => self
                .errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(err.clone()),
        }
        result
    }

    /// The first error the SDK got from the store, or the first item it read that the SDK
    /// cannot parse: either means the evaluation's answer is not the store's.
    pub(crate) fn verdict(&self) -> Result<(), CliError> {
        if let Some(err) = self
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .first()
        {
            return Err(CliError::from(err.clone()));
        }
        for (kind, item) in self.seen.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            if item.is_deleted() {
                continue;
            }
            let parsed = if *kind == Kind::FEATURES {
                serde_json::from_str::<Flag>(item.json()).map(drop)
            } else if *kind == Kind::SEGMENTS {
                serde_json::from_str::<Segment>(item.json()).map(drop)
            } else {
                Ok(())
            };
            if let Err(e) = parsed {
                return Err(CliError::new(format!(
                    "{kind}/{} is stored but the LaunchDarkly SDK cannot read it ({e}), so it evaluates as not found",
                    item.key()
                )));
            }
        }
        Ok(())
    }
}

impl Witness {
    /// The unbounded (Big) segments the evaluation consulted. The Rust SDK cannot ask for Big
    /// Segment memberships, so a rule on one of these never matched, where the other SDKs would
    /// have looked the context up: the answer may differ from theirs.
    pub(crate) fn big_segments_consulted(&self) -> Vec<String> {
        #[derive(serde::Deserialize)]
        struct Probe {
            #[serde(default)]
            unbounded: bool,
        }
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut keys: Vec<String> = seen
            .iter()
            .filter(|(kind, item)| *kind == Kind::SEGMENTS && !item.is_deleted())
            .filter(|(_, item)| {
                serde_json::from_str::<Probe>(item.json()).is_ok_and(|probe| probe.unbounded)
            })
            .map(|(_, item)| item.key().to_owned())
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

impl fmt::Display for Witness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.store.fmt(f)
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl PersistentDataStore for Witness {
    async fn init(&self, data: &[Collection]) -> flagstore::Result<()> {
        let result = self.store.init(data).await;
        self.note(result, |_| Vec::new(), &Kind::FEATURES)
    }

    async fn get(&self, kind: &Kind, key: &str) -> flagstore::Result<Option<Item>> {
        let result = self.store.get(kind, key).await;
        self.note(result, |item| item.iter().cloned().collect(), kind)
    }

    async fn get_all(&self, kind: &Kind) -> flagstore::Result<Vec<Item>> {
        let result = self.store.get_all(kind).await;
        self.note(result, Vec::clone, kind)
    }

    async fn get_many(&self, kind: &Kind, keys: &[&str]) -> flagstore::Result<Vec<Option<Item>>> {
        let result = self.store.get_many(kind, keys).await;
        self.note(
            result,
            |items| items.iter().flatten().cloned().collect(),
            kind,
        )
    }

    async fn get_all_checked(&self, kind: &Kind) -> flagstore::Result<StoredItems> {
        let result = self.store.get_all_checked(kind).await;
        self.note(result, |stored| stored.items.clone(), kind)
    }

    /// One page, noted like every read.
    fn pages<'a>(&'a self, kind: &'a Kind) -> flagstore::backend::Pages<'a> {
        Box::pin(futures::stream::once(self.get_all_checked(kind)))
    }

    async fn upsert(&self, kind: &Kind, item: Item) -> flagstore::Result<bool> {
        let result = self.store.upsert(kind, item).await;
        self.note(result, |_| Vec::new(), kind)
    }

    async fn is_initialized(&self) -> flagstore::Result<bool> {
        let result = self.store.is_initialized().await;
        self.note(result, |_| Vec::new(), &Kind::FEATURES)
    }

    async fn is_available(&self) -> bool {
        self.store.is_available().await
    }

    fn changes(&self) -> Option<flagstore::changes::ChangeFeed> {
        self.store.changes()
    }

    fn item_limit(&self) -> Option<flagstore::backend::ItemLimit> {
        self.store.item_limit()
    }
    fn backend(&self) -> &'static str {
        self.store.backend()
    }
}

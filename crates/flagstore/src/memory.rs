//! The in-memory store: the reference implementation of the trait's semantics.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::backend::UPSERT_ATTEMPTS;
use crate::changes::{Change, ChangeFeed, FeedEvent};
use crate::error::Operation;
use crate::{Collection, Error, Item, Kind, PersistentDataStore, Result};

const BACKEND: &str = "memory";
/// What the memory store's feed follows, for [`ChangeFeed::via`].
const VIA: &str = "the memory database's own events";

/// A process-local "database" that [`MemoryStore`]s read and write, one namespace per prefix.
///
/// Several stores opened on one database behave like several SDK instances sharing one Redis:
/// each sees what the others wrote. [`MemoryDatabase::set_available`] simulates an outage, for
/// testing how callers handle one. Every store on it has a [change feed](PersistentDataStore::changes).
#[derive(Clone)]
pub struct MemoryDatabase {
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<DbEvent>,
}

/// What the database tells the stores' change feeds.
#[derive(Clone, Debug)]
enum DbEvent {
    Changed { prefix: String, change: Change },
    Available(bool),
}

impl Default for MemoryDatabase {
    fn default() -> Self {
        MemoryDatabase {
            state: Arc::default(),
            events: broadcast::channel(1024).0,
        }
    }
}

#[derive(Default)]
struct State {
    offline: bool,
    namespaces: HashMap<String, Namespace>,
}

#[derive(Default)]
struct Namespace {
    inited: bool,
    kinds: HashMap<Kind, BTreeMap<String, Item>>,
}

impl MemoryDatabase {
    /// An empty database.
    pub fn new() -> Self {
        Self::default()
    }

    /// A store on this database whose items live under `prefix`.
    pub fn store(&self, prefix: impl Into<String>) -> MemoryStore {
        MemoryStore {
            db: self.clone(),
            prefix: prefix.into(),
            #[cfg(feature = "testing")]
            before_upsert_write: None,
        }
    }

    /// Makes every call of every store on this database fail (`false`) or work again (`true`).
    pub fn set_available(&self, available: bool) {
        self.lock().offline = !available;
        self.announce(DbEvent::Available(available));
    }

    /// Removes everything under `prefix`, marker included.
    pub fn clear(&self, prefix: &str) {
        self.lock().namespaces.remove(prefix);
        self.changed(prefix, Change::Everything);
    }

    fn changed(&self, prefix: &str, change: Change) {
        self.announce(DbEvent::Changed {
            prefix: prefix.to_owned(),
            change,
        });
    }

    fn announce(&self, event: DbEvent) {
        // No feed listening is not an error.
        let _ = self.events.send(event);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the maps half-updated (every update is a
        // single insert or a whole replacement), so a poisoned lock is safe to keep using.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl fmt::Debug for MemoryDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("MemoryDatabase")
            .field("namespaces", &state.namespaces.len())
            .field("available", &!state.offline)
            .finish()
    }
}

/// A [`PersistentDataStore`] held in this process's memory.
///
/// It follows exactly the semantics every database backend must (it is what the conformance suite
/// was written against), so it is also the store to use in tests of code that takes a store.
///
/// ```
/// use flagstore::memory::MemoryStore;
/// use flagstore::{Collection, Item, Kind, PersistentDataStore};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = MemoryStore::new();
/// assert!(!store.is_initialized().await?);
/// let flag = Item::from_json("f", r#"{"key":"f","version":1}"#)?;
/// store.init(&[Collection::new(Kind::FEATURES, vec![flag])]).await?;
/// assert!(store.is_initialized().await?);
/// assert_eq!(store.get_all(&Kind::FEATURES).await?.len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    db: MemoryDatabase,
    prefix: String,
    #[cfg(feature = "testing")]
    before_upsert_write: Option<crate::testing::UpsertHook>,
}

impl MemoryStore {
    /// A store on a new, empty database.
    pub fn new() -> Self {
        MemoryDatabase::new().store("")
    }

    /// The database this store reads and writes.
    pub fn database(&self) -> &MemoryDatabase {
        &self.db
    }

    /// The prefix this store's items live under.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Runs `hook` inside every upsert, after the stored version is read and before the new item
    /// is written: the window in which another writer can race this one. For the conformance
    /// suite's concurrency cases.
    #[cfg(feature = "testing")]
    #[must_use = "the hook is on the returned store, not on this one"]
    pub fn before_upsert_write(mut self, hook: crate::testing::UpsertHook) -> Self {
        self.before_upsert_write = Some(hook);
        self
    }

    fn state(&self, operation: Operation) -> Result<MutexGuard<'_, State>> {
        let state = self.db.lock();
        if state.offline {
            return Err(offline_error(operation));
        }
        Ok(state)
    }

    fn stored_version(&self, kind: &Kind, key: &str) -> Result<Option<u64>> {
        let state = self
            .state(Operation::Upsert)
            .map_err(|e| e.on(kind, Some(key)))?;
        Ok(state
            .namespaces
            .get(&self.prefix)
            .and_then(|ns| ns.kinds.get(kind))
            .and_then(|items| items.get(key))
            .map(Item::version))
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "memory store (prefix {:?})", self.prefix)
    }
}

#[async_trait]
impl PersistentDataStore for MemoryStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn init(&self, data: &[Collection]) -> Result<()> {
        let mut state = self.state(Operation::Init)?;
        let mut ns = Namespace {
            inited: true,
            kinds: HashMap::new(),
        };
        for collection in data {
            let items = ns.kinds.entry(collection.kind.clone()).or_default();
            for item in &collection.items {
                items.insert(item.key().to_owned(), item.clone());
            }
        }
        state.namespaces.insert(self.prefix.clone(), ns);
        drop(state);
        self.db.changed(&self.prefix, Change::Everything);
        Ok(())
    }

    async fn get(&self, kind: &Kind, key: &str) -> Result<Option<Item>> {
        let state = self
            .state(Operation::Get)
            .map_err(|e| e.on(kind, Some(key)))?;
        Ok(state
            .namespaces
            .get(&self.prefix)
            .and_then(|ns| ns.kinds.get(kind))
            .and_then(|items| items.get(key))
            .cloned())
    }

    async fn get_all(&self, kind: &Kind) -> Result<Vec<Item>> {
        let state = self
            .state(Operation::GetAll)
            .map_err(|e| e.on(kind, None))?;
        Ok(state
            .namespaces
            .get(&self.prefix)
            .and_then(|ns| ns.kinds.get(kind))
            .map(|items| items.values().cloned().collect())
            .unwrap_or_default())
    }

    async fn upsert(&self, kind: &Kind, item: Item) -> Result<bool> {
        // Optimistic, like the network backends: read the version, let a racing writer in (the
        // test hook), then write only if nothing changed since the read.
        for _ in 0..UPSERT_ATTEMPTS {
            let seen = self.stored_version(kind, item.key())?;
            #[cfg(feature = "testing")]
            if let Some(hook) = &self.before_upsert_write {
                hook().await;
            }
            if seen.is_some_and(|v| v >= item.version()) {
                return Ok(false);
            }
            let mut state = self
                .state(Operation::Upsert)
                .map_err(|e| e.on(kind, Some(item.key())))?;
            let items = state
                .namespaces
                .entry(self.prefix.clone())
                .or_default()
                .kinds
                .entry(kind.clone())
                .or_default();
            if items.get(item.key()).map(Item::version) == seen {
                let key = item.key().to_owned();
                items.insert(key.clone(), item);
                drop(state);
                let change = Change::Item {
                    kind: kind.clone(),
                    key,
                };
                self.db.changed(&self.prefix, change);
                return Ok(true);
            }
        }
        Err(Error::contention(
            BACKEND,
            kind.clone(),
            item.key(),
            UPSERT_ATTEMPTS,
        ))
    }

    async fn is_initialized(&self) -> Result<bool> {
        let state = self.state(Operation::IsInitialized)?;
        Ok(state
            .namespaces
            .get(&self.prefix)
            .is_some_and(|ns| ns.inited))
    }

    async fn is_available(&self) -> bool {
        !self.db.lock().offline
    }

    /// Every write through any store on the same database, and every
    /// [`set_available`](MemoryDatabase::set_available) (as [`FeedEvent::Lost`] and
    /// [`FeedEvent::Connected`]).
    fn changes(&self) -> Option<ChangeFeed> {
        let mut events = self.db.events.subscribe();
        let prefix = self.prefix.clone();
        let offline = self.db.lock().offline;
        Some(ChangeFeed::new(move |tx| async move {
            let sent = if offline {
                tx.send(FeedEvent::Lost(offline_error(Operation::Watch)))
                    .await
            } else {
                tx.connected(VIA).await
            };
            if !sent {
                return;
            }
            loop {
                let event = match events.recv().await {
                    Ok(DbEvent::Changed { prefix: p, change }) if p == prefix => {
                        FeedEvent::Changed(change)
                    }
                    Ok(DbEvent::Changed { .. }) => continue,
                    Ok(DbEvent::Available(true)) => {
                        if !tx.connected(VIA).await {
                            return;
                        }
                        continue;
                    }
                    Ok(DbEvent::Available(false)) => {
                        FeedEvent::Lost(offline_error(Operation::Watch))
                    }
                    // Missed events: anything may have changed.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        FeedEvent::Changed(Change::Everything)
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if !tx.send(event).await {
                    return;
                }
            }
        }))
    }
}

fn offline_error(operation: Operation) -> Error {
    Error::database(
        BACKEND,
        operation,
        "the memory database is offline (MemoryDatabase::set_available(false))",
    )
}

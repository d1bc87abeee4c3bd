//! A store whose next read can be held open after it has read: the slow database read of the
//! cache's race cases, made deterministic.

use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use tokio::sync::oneshot;

use crate::changes::ChangeFeed;
use crate::{Collection, DynStore, Item, Kind, PersistentDataStore, Result};

/// Wraps a store; calls pass through unless [`hold_next_read`](GatedStore::hold_next_read) was
/// called, in which case the next `get` or `get_all` reads the database, then waits for the test
/// to release it before returning what it read ([`hold_next_upsert`](GatedStore::hold_next_upsert)
/// likewise holds an upsert after it has written).
///
/// ```
/// use std::sync::Arc;
/// use flagstore::testing::{GatedStore, flag};
/// use flagstore::memory::MemoryStore;
/// use flagstore::{Kind, PersistentDataStore};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let database = MemoryStore::new();
/// database.upsert(&Kind::FEATURES, flag("f", 1)).await?;
/// let gated = GatedStore::new(Arc::new(database.clone()));
///
/// let mut held = gated.hold_next_read();
/// let reader = tokio::spawn({
///     let gated = gated.clone();
///     async move { gated.get(&Kind::FEATURES, "f").await }
/// });
/// held.read().await; // it has read version 1 and waits
/// database.upsert(&Kind::FEATURES, flag("f", 2)).await?;
/// held.release();
/// let read = reader.await.unwrap()?.unwrap();
/// assert_eq!(read.version(), 1, "what it read before the write");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct GatedStore {
    inner: DynStore,
    next_read: Arc<Mutex<Option<Gate>>>,
    next_upsert: Arc<Mutex<Option<Gate>>>,
}

/// The store's side of a held read.
struct Gate {
    read: oneshot::Sender<()>,
    release: oneshot::Receiver<()>,
}

/// The test's side of a held read.
#[derive(Debug)]
pub struct HeldRead {
    read: Option<oneshot::Receiver<()>>,
    release: oneshot::Sender<()>,
}

impl HeldRead {
    /// Waits until the held read has read the database.
    pub async fn read(&mut self) {
        if let Some(read) = self.read.take() {
            read.await
                .expect("the held read was dropped before it read");
        }
    }

    /// Lets the held read return.
    pub fn release(self) {
        // The reader may have been cancelled meanwhile; nothing then waits.
        let _ = self.release.send(());
    }
}

impl GatedStore {
    /// Wraps `inner`; no read is held until asked.
    pub fn new(inner: DynStore) -> GatedStore {
        GatedStore {
            inner,
            next_read: Arc::default(),
            next_upsert: Arc::default(),
        }
    }

    /// Holds the next `get`, `get_all` or `get_all_checked` after it has read, until the
    /// returned handle releases it.
    pub fn hold_next_read(&self) -> HeldRead {
        Self::hold(&self.next_read)
    }

    /// Holds the next `upsert` after the database has answered it, until the returned handle
    /// releases it; [`HeldRead::read`] then waits for the database's answer.
    pub fn hold_next_upsert(&self) -> HeldRead {
        Self::hold(&self.next_upsert)
    }

    fn hold(slot: &Mutex<Option<Gate>>) -> HeldRead {
        let (read_tx, read_rx) = oneshot::channel();
        let (release_tx, release_rx) = oneshot::channel();
        *slot.lock().unwrap() = Some(Gate {
            read: read_tx,
            release: release_rx,
        });
        HeldRead {
            read: Some(read_rx),
            release: release_tx,
        }
    }

    async fn pass<T>(slot: &Mutex<Option<Gate>>, read: Result<T>) -> Result<T> {
        let gate = slot.lock().unwrap().take();
        if let Some(gate) = gate {
            let _ = gate.read.send(());
            let _ = gate.release.await;
        }
        read
    }
}

impl fmt::Debug for GatedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatedStore")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for GatedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (gated)", self.inner)
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl PersistentDataStore for GatedStore {
    async fn init(&self, data: &[Collection]) -> Result<()> {
        self.inner.init(data).await
    }

    async fn get(&self, kind: &Kind, key: &str) -> Result<Option<Item>> {
        let read = self.inner.get(kind, key).await;
        Self::pass(&self.next_read, read).await
    }

    async fn get_all(&self, kind: &Kind) -> Result<Vec<Item>> {
        let read = self.inner.get_all(kind).await;
        Self::pass(&self.next_read, read).await
    }

    async fn get_many(&self, kind: &Kind, keys: &[&str]) -> Result<Vec<Option<Item>>> {
        let read = self.inner.get_many(kind, keys).await;
        Self::pass(&self.next_read, read).await
    }

    async fn get_all_checked(&self, kind: &Kind) -> Result<crate::backend::StoredItems> {
        let read = self.inner.get_all_checked(kind).await;
        Self::pass(&self.next_read, read).await
    }

    /// One page, through the gate like every read.
    fn pages<'a>(&'a self, kind: &'a Kind) -> crate::backend::Pages<'a> {
        Box::pin(futures::stream::once(self.get_all_checked(kind)))
    }

    async fn upsert(&self, kind: &Kind, item: Item) -> Result<bool> {
        let written = self.inner.upsert(kind, item).await;
        Self::pass(&self.next_upsert, written).await
    }

    async fn is_initialized(&self) -> Result<bool> {
        self.inner.is_initialized().await
    }

    async fn is_available(&self) -> bool {
        self.inner.is_available().await
    }

    fn changes(&self) -> Option<ChangeFeed> {
        self.inner.changes()
    }

    fn item_limit(&self) -> Option<crate::backend::ItemLimit> {
        self.inner.item_limit()
    }

    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
}

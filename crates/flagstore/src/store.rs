//! The store trait every backend implements.

use std::fmt::{Debug, Display};
use std::sync::Arc;

use async_trait::async_trait;

use crate::backend::{ItemLimit, StoredItems};
use crate::changes::ChangeFeed;
use crate::stored::Pages;
use crate::{Item, Kind, Result};

/// How many times an upsert reads, compares and tries to write before giving up with
/// [`Error::Contention`](crate::Error::Contention). Every backend uses this bound: enough for any
/// real contention, small enough to fail fast on a bug.
pub const UPSERT_ATTEMPTS: u32 = 10;

/// How long an upsert that lost a race waits before attempt `attempt + 1`: a random time up to
/// a window that doubles with every lost race (2 ms, 4 ms, … capped at 128 ms). Writers that
/// collided then spread out instead of colliding again in lockstep; the ten attempts together
/// wait well under a second.
///
/// ```
/// use std::time::Duration;
/// use flagstore::backend::contention_backoff;
///
/// assert!(contention_backoff(0) <= Duration::from_millis(2));
/// assert!(contention_backoff(30) <= Duration::from_millis(128));
/// ```
pub fn contention_backoff(attempt: u32) -> std::time::Duration {
    let window_us = 2_000u64 << attempt.min(6);
    std::time::Duration::from_micros(fastrand::u64(0..=window_us))
}

/// All items of one kind, as handed to [`PersistentDataStore::init`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collection {
    /// The kind of every item in `items`.
    pub kind: Kind,
    /// The items, in the order they are to be written.
    pub items: Vec<Item>,
}

impl Collection {
    /// A collection of `items` of `kind`.
    pub fn new(kind: Kind, items: Vec<Item>) -> Self {
        Collection { kind, items }
    }
}

/// A database that holds flag data in the format every LaunchDarkly SDK shares.
///
/// The trait is object safe: the CLI and the caching wrapper hold an
/// `Arc<dyn PersistentDataStore>` and pick the backend at run time. Every implementation passes the
/// conformance suite in `flagstore::testing` (feature `testing`).
///
/// Every method has a timeout and none panics: a dead server, a slow one or a corrupt item from
/// another writer is an [`Error`](crate::Error).
///
/// ```
/// use flagstore::memory::MemoryStore;
/// use flagstore::{Item, Kind, PersistentDataStore};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = MemoryStore::new();
/// let flag = Item::from_json("beta", r#"{"key":"beta","version":1,"on":true}"#)?;
/// assert!(store.upsert(&Kind::FEATURES, flag).await?);
///
/// // A delete is an upsert of a newer tombstone.
/// assert!(store.upsert(&Kind::FEATURES, Item::tombstone("beta", 2)).await?);
/// let got = store.get(&Kind::FEATURES, "beta").await?.expect("the tombstone is kept");
/// assert!(got.is_deleted());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[async_trait]
pub trait PersistentDataStore: Debug + Display + Send + Sync + 'static {
    /// Replaces everything under this store's prefix with `data`, regardless of versions, then
    /// marks the store initialized.
    ///
    /// Collections and items are written in the order given; use [`crate::sort_for_init`] to put
    /// segments before flags and prerequisites before the flags that depend on them. Backends
    /// that cannot write atomically write the new items first, then delete the ones no longer
    /// present, then the `$inited` marker; they may write items concurrently where no
    /// dependency orders them ([`write_stages`](crate::backend::write_stages)), never an item
    /// before what it depends on.
    async fn init(&self, data: &[Collection]) -> Result<()>;

    /// The item stored under `key`: `Ok(Some)` for an item or a tombstone, `Ok(None)` if nothing
    /// is stored. A database error is an error, never "not found".
    async fn get(&self, kind: &Kind, key: &str) -> Result<Option<Item>>;

    /// Every item of `kind`, tombstones included, each under its storage key (no key twice).
    ///
    /// A stored value that is not a valid item (written by another program, say) is skipped with
    /// an error-level log, so that it cannot hide every other flag; use
    /// [`get_all_checked`](Self::get_all_checked) to see which.
    async fn get_all(&self, kind: &Kind) -> Result<Vec<Item>>;

    /// What [`get`](Self::get) answers for each of `keys`, in their order, read together where
    /// the backend can (Redis: one `HMGET`; SQLite: one blocking task). The default makes the
    /// `get`s 16 at a time. A live cache re-validates the items it holds with one call after a
    /// change its feed could not name.
    async fn get_many(&self, kind: &Kind, keys: &[&str]) -> Result<Vec<Option<Item>>> {
        let mut items = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(16) {
            let reads: Vec<_> = chunk.iter().map(|key| self.get(kind, key)).collect();
            for item in futures::future::join_all(reads).await {
                items.push(item?);
            }
        }
        Ok(items)
    }

    /// Every value stored for `kind`: the readable items as [`get_all`](Self::get_all) returns
    /// them, and the unreadable ones with the reason for each, for callers that must not lose an
    /// item silently (a backup, a copy).
    ///
    /// The default suits stores that cannot hold an unreadable value; every store that reads
    /// what other programs wrote overrides it.
    async fn get_all_checked(&self, kind: &Kind) -> Result<StoredItems> {
        Ok(StoredItems {
            items: self.get_all(kind).await?,
            unreadable: Vec::new(),
        })
    }

    /// Every value stored for `kind`, as [`get_all_checked`](Self::get_all_checked) finds them,
    /// a page at a time: for callers that look at each item once (a listing, a backup, the
    /// check after a load) and so need not hold a whole kind, which at 100,000 flags is over
    /// 100 MB. A page holds about [`PAGE_ITEMS`](crate::backend::PAGE_ITEMS) items (DynamoDB:
    /// what one 1 MB query page holds).
    ///
    /// No key comes in two pages. The pages are not one snapshot: an item written while they
    /// are read may or may not be in them, as with any read.
    ///
    /// The default is one page from `get_all_checked`; Redis pages with `HSCAN`, SQLite by key
    /// order, DynamoDB by query page.
    ///
    /// ```
    /// use futures::TryStreamExt;
    /// use flagstore::memory::MemoryStore;
    /// use flagstore::{Item, Kind, PersistentDataStore};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let store = MemoryStore::new();
    /// store.upsert(&Kind::FEATURES, Item::from_json("a", r#"{"version":1}"#)?).await?;
    /// let mut count = 0;
    /// let mut pages = store.pages(&Kind::FEATURES);
    /// while let Some(page) = pages.try_next().await? {
    ///     count += page.items.len();
    /// }
    /// assert_eq!(count, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// # }).unwrap();
    /// ```
    fn pages<'a>(&'a self, kind: &'a Kind) -> Pages<'a> {
        Box::pin(futures::stream::once(self.get_all_checked(kind)))
    }

    /// Writes `item` if nothing is stored under its key or the stored version is lower.
    /// Returns whether it wrote. Safe against concurrent writers in other processes; retries
    /// after a lost race are bounded, and running out of them is [`Error::Contention`](crate::Error::Contention).
    async fn upsert(&self, kind: &Kind, item: Item) -> Result<bool>;

    /// Whether some writer (this instance or another) has initialized the store.
    async fn is_initialized(&self) -> Result<bool>;

    /// Whether the database answers a cheap round trip right now.
    async fn is_available(&self) -> bool;

    /// A feed of the changes any writer makes to this store's data (this process, other SDKs,
    /// the Relay Proxy), for a cache that keeps entries until they change
    /// ([`CachingStoreBuilder::invalidate_on_changes`](crate::CachingStoreBuilder::invalidate_on_changes)).
    ///
    /// `None` if the backend has no way to watch its data. Each call opens a new feed with its
    /// own connection; nothing connects until the feed's first `next()`.
    fn changes(&self) -> Option<ChangeFeed> {
        None
    }

    /// The largest item this store's database accepts and how it counts an item's size, for
    /// the databases a flag can outgrow (DynamoDB's 400 KB, Consul's 512 KiB); `None` where no
    /// flag comes near the limit (Redis, SQLite, memory).
    fn item_limit(&self) -> Option<ItemLimit> {
        None
    }

    /// The backend's name (`redis`, `dynamodb`, `consul`, `sqlite`, `memory`), as errors name
    /// it: the default `backend` label of a cache's metrics. `custom` unless a store says.
    fn backend(&self) -> &'static str {
        "custom"
    }
}

macro_rules! forward_store {
    ($wrapper:ty) => {
        #[async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<T: PersistentDataStore + ?Sized> PersistentDataStore for $wrapper {
            async fn init(&self, data: &[Collection]) -> Result<()> {
                (**self).init(data).await
            }
            async fn get(&self, kind: &Kind, key: &str) -> Result<Option<Item>> {
                (**self).get(kind, key).await
            }
            async fn get_all(&self, kind: &Kind) -> Result<Vec<Item>> {
                (**self).get_all(kind).await
            }
            async fn get_many(&self, kind: &Kind, keys: &[&str]) -> Result<Vec<Option<Item>>> {
                (**self).get_many(kind, keys).await
            }
            async fn get_all_checked(&self, kind: &Kind) -> Result<StoredItems> {
                (**self).get_all_checked(kind).await
            }
            fn pages<'a>(&'a self, kind: &'a Kind) -> Pages<'a> {
                (**self).pages(kind)
            }
            async fn upsert(&self, kind: &Kind, item: Item) -> Result<bool> {
                (**self).upsert(kind, item).await
            }
            async fn is_initialized(&self) -> Result<bool> {
                (**self).is_initialized().await
            }
            async fn is_available(&self) -> bool {
                (**self).is_available().await
            }
            fn changes(&self) -> Option<ChangeFeed> {
                (**self).changes()
            }
            fn item_limit(&self) -> Option<ItemLimit> {
                (**self).item_limit()
            }
            fn backend(&self) -> &'static str {
                (**self).backend()
            }
        }
    };
}

forward_store!(Arc<T>);
forward_store!(Box<T>);

/// The kinds an `init` with `data` replaces: `features` and `segments` always (so a data set
/// that omits one still clears it, as "replace everything" promises), plus every kind in `data`.
/// Backends that store kinds in separate places (Redis hashes, DynamoDB partitions) clear these.
///
/// ```
/// use flagstore::backend::replaced_kinds;
/// use flagstore::{Collection, Kind};
///
/// let data = [Collection::new(Kind::new("widgets"), vec![])];
/// let names: Vec<_> = replaced_kinds(&data).iter().map(|k| k.name()).collect();
/// assert_eq!(names, ["features", "segments", "widgets"]);
/// ```
pub fn replaced_kinds(data: &[Collection]) -> std::collections::BTreeSet<&Kind> {
    [&Kind::FEATURES, &Kind::SEGMENTS]
        .into_iter()
        .chain(data.iter().map(|c| &c.kind))
        .collect()
}

/// Refuses, at `build()`, settings that a caller-supplied client or pool would silently ignore:
/// `settings` pairs each setting's name with whether it was given.
///
/// ```
/// use flagstore::backend::refuse_ignored;
///
/// let err = refuse_ignored("redis", "pool()", "the pool", &[("url", true), ("pool_size", false)]);
/// assert_eq!(
///     err.unwrap_err().to_string(),
///     "redis: invalid configuration: url cannot be combined with pool(): configure the pool instead"
/// );
/// assert!(refuse_ignored("redis", "pool()", "the pool", &[("url", false)]).is_ok());
/// ```
pub fn refuse_ignored(
    backend: &'static str,
    supplied: &str,
    configure: &str,
    settings: &[(&str, bool)],
) -> Result<()> {
    let ignored: Vec<&str> = settings
        .iter()
        .filter_map(|(name, given)| given.then_some(*name))
        .collect();
    if ignored.is_empty() {
        return Ok(());
    }
    Err(crate::Error::config(
        backend,
        format!(
            "{} cannot be combined with {supplied}: configure {configure} instead",
            ignored.join(", ")
        ),
    ))
}

/// A store chosen at run time.
pub type DynStore = Arc<dyn PersistentDataStore>;

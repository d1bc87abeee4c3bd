//! Reading items as other writers stored them.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{ItemError, Operation};
use crate::item::{Header, check_stored_bytes};
use crate::{Error, Item, Kind, Result};

/// Every value stored for one kind, split into the items that could be read and the ones that
/// could not: what [`PersistentDataStore::get_all_checked`](crate::PersistentDataStore::get_all_checked)
/// returns.
///
/// ```
/// use flagstore::backend::StoredItems;
/// use flagstore::Item;
///
/// let stored = StoredItems::from_results([
///     ("good".to_owned(), Item::from_json("good", r#"{"version":1}"#)),
///     ("bad".to_owned(), Item::from_json("bad", "{not json")),
/// ]);
/// assert_eq!(stored.items.len(), 1);
/// assert_eq!(stored.unreadable[0].key, "bad");
/// ```
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct StoredItems {
    /// The readable items, tombstones included.
    pub items: Vec<Item>,
    /// The stored values that are not valid items, with the reason for each.
    pub unreadable: Vec<UnreadableItem>,
}

/// How many items a page of [`PersistentDataStore::pages`](crate::PersistentDataStore::pages)
/// holds, on backends that choose: enough that a round trip per page costs little next to the
/// items, few enough (about 1 MB of realistic flags) that a page is never a burden.
pub const PAGE_ITEMS: usize = 1000;

/// The pages of one kind's stored values, as
/// [`PersistentDataStore::pages`](crate::PersistentDataStore::pages) yields them.
pub type Pages<'a> = futures::stream::BoxStream<'a, crate::Result<StoredItems>>;

/// The pages of a read that goes from cursor to cursor, for a backend's
/// [`pages`](crate::PersistentDataStore::pages): `read` turns a cursor into one page and the
/// next page's cursor, `None` after the last page. The first page is read from `first`.
///
/// ```
/// use futures::TryStreamExt;
/// use flagstore::backend::{StoredItems, paged};
/// use flagstore::Item;
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let stored: Vec<Item> = (0..5)
///     .map(|i| Item::from_json(format!("f{i}"), r#"{"version":1}"#).unwrap())
///     .collect();
/// // Two items a page, the cursor being where the next page starts.
/// let pages = paged(0, |from: usize| {
///     let stored = &stored;
///     async move {
///         let to = (from + 2).min(stored.len());
///         let read = stored[from..to].iter().map(|i| (i.key().to_owned(), Ok(i.clone())));
///         let page = StoredItems::from_results(read);
///         Ok((page, (to < stored.len()).then_some(to)))
///     }
/// });
/// let sizes: Vec<usize> = pages.map_ok(|page| page.items.len()).try_collect().await?;
/// assert_eq!(sizes, [2, 2, 1]);
/// # Ok::<(), flagstore::Error>(())
/// # }).unwrap();
/// ```
pub fn paged<'a, C, F, Fut>(first: C, read: F) -> Pages<'a>
where
    C: Send + 'a,
    F: FnMut(C) -> Fut + Send + 'a,
    Fut: std::future::Future<Output = crate::Result<(StoredItems, Option<C>)>> + Send + 'a,
{
    Box::pin(futures::stream::try_unfold(
        (Some(first), read),
        |(cursor, mut read)| async move {
            let Some(cursor) = cursor else {
                return Ok(None);
            };
            let (page, next) = read(cursor).await?;
            Ok(Some((page, (next, read))))
        },
    ))
}

/// A stored value that is not a valid item, perhaps written by another program.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct UnreadableItem {
    /// The storage key.
    pub key: String,
    /// Why it could not be read.
    pub error: ItemError,
}

impl StoredItems {
    /// Sorts `(key, parse result)` pairs into readable and unreadable items.
    pub fn from_results(
        results: impl IntoIterator<Item = (String, Result<Item, ItemError>)>,
    ) -> StoredItems {
        let mut stored = StoredItems::default();
        for (key, result) in results {
            match result {
                Ok(item) => stored.items.push(item),
                Err(error) => stored.unreadable.push(UnreadableItem { key, error }),
            }
        }
        stored
    }

    /// The readable items, after logging each unreadable one at error level (naming backend,
    /// kind, key and reason) and counting it in `skipped`.
    ///
    /// This is the policy of [`get_all`](crate::PersistentDataStore::get_all): one corrupt
    /// value written by another program must not hide every other flag, and a `get` of that key
    /// still returns [`Error::InvalidItem`](crate::Error::InvalidItem), so the problem stays
    /// visible where the item is used.
    pub fn into_readable(
        self,
        backend: &'static str,
        kind: &Kind,
        skipped: &AtomicU64,
    ) -> Vec<Item> {
        for unreadable in &self.unreadable {
            skipped.fetch_add(1, Ordering::Relaxed);
            item_rejected(backend, Rejected::Invalid);
            tracing::error!(
                backend,
                kind = %kind,
                key = %unreadable.key,
                error = %unreadable.error,
                "skipping an unreadable stored item; fix or re-initialize the store"
            );
        }
        self.items
    }
}

/// Why a backend left an item out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejected {
    /// Over the database's item size limit: never sent.
    TooLarge,
    /// A stored value that is not a valid item: skipped by a whole-kind read.
    Invalid,
}

/// Counts an item a backend left out in `flagstore_items_rejected_total{backend, reason}` (with
/// the `metrics` feature; nothing without it). Backends call it where they log the item.
pub fn item_rejected(backend: &'static str, reason: Rejected) {
    #[cfg(feature = "metrics")]
    {
        let reason = match reason {
            Rejected::TooLarge => "too_large",
            Rejected::Invalid => "invalid",
        };
        metrics::counter!("flagstore_items_rejected_total", "backend" => backend, "reason" => reason)
            .increment(1);
    }
    #[cfg(not(feature = "metrics"))]
    let _ = (backend, reason);
}

/// Turns the `(key, json)` pairs a backend read into [`StoredItems`].
pub fn read_stored_items(pairs: impl IntoIterator<Item = (String, String)>) -> StoredItems {
    let mut stored = StoredItems::default();
    for (key, json) in pairs {
        match Item::from_stored(key, json) {
            Ok(item) => stored.items.push(item),
            Err((key, error)) => stored.unreadable.push(UnreadableItem { key, error }),
        }
    }
    stored
}

/// The least JSON a chunk handed to another thread holds (so a read is spread only from twice
/// this): less would cost more to hand over than it saves, since a chunk this size takes a
/// few hundred microseconds to check.
const SPREAD_MIN_BYTES: usize = 256 * 1024;

/// Turns the `(key, json)` pairs a backend read as bytes into [`StoredItems`]: a value that is
/// not UTF-8 is unreadable like any other bad JSON, instead of failing the whole read.
///
/// Meant for a whole kind read on an async task. A large read is checked in chunks on the
/// runtime's blocking threads, four per core (so that a core busy with something else, such as
/// the database server on the same host or the connection's driver, holds up only a small part,
/// and the calling thread turns each chunk into items while later ones are checked), each chunk
/// decoded and checked in one pass while its bytes are in cache: a 10,000-flag kind then
/// neither holds up the task's runtime worker for milliseconds nor waits on one core. The items
/// themselves are made on the calling thread, so that what the caller keeps is not spread over
/// the allocator arenas of other threads (glibc keeps memory in the arena of the thread that
/// allocated it). The items keep their order. Small reads, and calls
/// outside a Tokio runtime, are checked in place.
///
/// # Errors
/// [`Error::Database`](crate::Error::Database) naming `backend` and `op` if a chunk could not
/// be checked because the runtime is shutting down: items are never silently dropped.
pub async fn read_stored_bytes(
    backend: &'static str,
    op: Operation,
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
) -> Result<StoredItems> {
    let bytes: usize = pairs.iter().map(|(_, json)| json.len()).sum();
    let parts = (bytes / SPREAD_MIN_BYTES).min(cores() * 4);
    let runtime = match tokio::runtime::Handle::try_current() {
        Ok(runtime) if parts > 1 => runtime,
        _ => {
            let mut stored = StoredItems::default();
            let headers = Vec::with_capacity(pairs.len());
            stored.add(check_chunk(pairs, headers));
            return Ok(stored);
        }
    };
    let count = pairs.len();
    let tasks: Vec<_> = split(pairs, parts)
        .into_iter()
        .map(|chunk| {
            // Allocated here, for the reason in `check_chunk`.
            let headers = Vec::with_capacity(chunk.len());
            runtime.spawn_blocking(move || check_chunk(chunk, headers))
        })
        .collect();
    let mut stored = StoredItems::default();
    stored.items.reserve_exact(count);
    for task in tasks {
        let checked = task
            .await
            .map_err(|e| Error::database(backend, op, format!("checking the items read: {e}")))?;
        stored.add(checked);
    }
    Ok(stored)
}

/// One chunk's pairs, decoded in place, and each one's header or error.
type CheckedChunk = (
    Vec<(String, String)>,
    Vec<std::result::Result<Header, ItemError>>,
);

/// Checks a chunk, pushing each header onto `headers`, which the caller allocates with room
/// for all of them. A readable chunk then allocates nothing, so that checking it on another
/// thread leaves nothing in that thread's allocator arena: the pairs are decoded in the chunk's
/// own vector, and the items are made by the caller (see [`check_stored_bytes`]).
fn check_chunk(
    chunk: Vec<(Vec<u8>, Vec<u8>)>,
    mut headers: Vec<std::result::Result<Header, ItemError>>,
) -> CheckedChunk {
    let pairs = chunk
        .into_iter()
        .map(|(key, json)| {
            let (pair, header) = check_stored_bytes(key, json);
            headers.push(header);
            pair
        })
        .collect();
    (pairs, headers)
}

impl StoredItems {
    fn add(&mut self, (pairs, headers): CheckedChunk) {
        for ((key, json), header) in pairs.into_iter().zip(headers) {
            match header {
                Ok(header) => self.items.push(Item::from_checked(key, json, header)),
                Err(error) => self.unreadable.push(UnreadableItem { key, error }),
            }
        }
    }
}

/// `items` in `parts` runs of about equal length, in order.
fn split<T>(mut items: Vec<T>, parts: usize) -> Vec<Vec<T>> {
    let per_part = items.len().div_ceil(parts.max(1)).max(1);
    let mut runs = Vec::with_capacity(parts);
    // From the back, so that each split moves only the run it takes.
    while items.len() > per_part {
        runs.push(items.split_off(items.len() - per_part));
    }
    runs.push(items);
    runs.reverse();
    runs
}

/// How many threads can run at once here, asked once (the answer reads cgroup files on Linux).
fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// The version an upsert must beat: the stored item's, or 0 when the stored value is unreadable,
/// so that a versioned write can repair a corrupt value instead of leaving the key broken until
/// the next full init (what the Go SDK's stores do). The repair is logged at warn level.
pub fn version_to_replace(backend: &'static str, kind: &Kind, key: &str, stored: &str) -> u64 {
    match Item::from_json(key, stored) {
        Ok(item) => item.version(),
        Err(error) => {
            tracing::warn!(
                backend,
                kind = %kind,
                key,
                error = %error,
                "the stored item is unreadable; treating it as version 0 so the upsert replaces it"
            );
            0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_and_counts_unreadable_items() {
        let skipped = AtomicU64::new(0);
        let pairs = vec![
            ("good".to_owned(), r#"{"version":1}"#.to_owned()),
            ("bad".to_owned(), "{not json".to_owned()),
            ("noversion".to_owned(), "{}".to_owned()),
        ];
        let stored = read_stored_items(pairs);
        let keys: Vec<_> = stored.unreadable.iter().map(|u| u.key.as_str()).collect();
        assert_eq!(keys, ["bad", "noversion"]);
        let items = stored.into_readable("test", &Kind::FEATURES, &skipped);
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].key(), "good");
        assert_eq!(skipped.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn splits_keep_the_order_and_lose_nothing() {
        for (len, parts) in [(10, 3), (10, 1), (3, 8), (0, 2), (16, 2)] {
            let runs = split((0..len).collect::<Vec<u32>>(), parts);
            assert!(runs.len() <= parts.max(1), "{len} in {parts}: {runs:?}");
            let joined: Vec<u32> = runs.concat();
            assert_eq!(joined, (0..len).collect::<Vec<_>>(), "{len} in {parts}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_large_read_is_checked_whole_and_in_order() {
        // Over a megabyte, so that it is spread over the cores wherever there are several.
        let pad = "x".repeat(1000);
        let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..1200)
            .map(|i| {
                let json = format!(r#"{{"version":{i},"pad":"{pad}"}}"#);
                (format!("k{i:04}").into_bytes(), json.into_bytes())
            })
            .collect();
        pairs[7].1 = b"{\"version\":1,\"x\":\"\xff\"}".to_vec();
        pairs[1100].0 = b"bad\xffkey".to_vec();
        let stored = read_stored_bytes("test", Operation::GetAll, pairs)
            .await
            .unwrap();
        let unreadable: Vec<_> = stored.unreadable.iter().map(|u| u.key.as_str()).collect();
        assert_eq!(unreadable, ["k0007", "bad\u{fffd}key"]);
        let ItemError::InvalidJson(cause) = &stored.unreadable[0].error else {
            panic!("{:?}", stored.unreadable[0].error);
        };
        assert_eq!(cause.to_string(), "the value is not UTF-8 (from byte 18)");
        assert!(matches!(
            stored.unreadable[1].error,
            ItemError::MalformedRecord(_)
        ));
        let versions: Vec<u64> = stored.items.iter().map(Item::version).collect();
        let expected: Vec<u64> = (0..1200).filter(|&i| i != 7 && i != 1100).collect();
        assert_eq!(versions, expected);
    }

    #[test]
    fn an_unreadable_stored_value_is_version_zero_for_upserts() {
        assert_eq!(
            version_to_replace("t", &Kind::FEATURES, "k", r#"{"version":4}"#),
            4
        );
        assert_eq!(version_to_replace("t", &Kind::FEATURES, "k", "{oops"), 0);
        assert_eq!(version_to_replace("t", &Kind::FEATURES, "k", ""), 0);
    }
}

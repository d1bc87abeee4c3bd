//! What the cache did: hits, misses, loads and evictions, counted cheaply enough to stay on.
//!
//! Hits and misses are counted on every read from every thread, so each is a set of counters on
//! cache lines of their own, one picked per thread: concurrent readers never contend for one
//! line, and reading the total (rare) adds them up.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// How a [`CachingStore`](crate::CachingStore) has served reads since it was built, as the
/// LaunchDarkly Java SDK's `CacheStats` reports them, plus the entries held now.
///
/// ```
/// use flagstore::memory::MemoryStore;
/// use flagstore::{CachingStore, Item, Kind, PersistentDataStore};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let store = CachingStore::builder(MemoryStore::new()).build()?;
/// store.get(&Kind::FEATURES, "beta").await?; // a miss: read from the database
/// store.get(&Kind::FEATURES, "beta").await?; // a hit ("not found" is cached too)
/// let stats = store.stats().await;
/// assert_eq!((stats.hits, stats.misses, stats.load_successes), (1, 1, 1));
/// assert_eq!(stats.hit_rate(), Some(0.5));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct CacheStats {
    /// Reads answered from the cache.
    pub hits: u64,
    /// Reads that went to the database: nothing cached, or only a stale entry. Concurrent misses
    /// on one key share one load but each counts here.
    pub misses: u64,
    /// Database reads that succeeded.
    pub load_successes: u64,
    /// Database reads that failed (never cached).
    pub load_errors: u64,
    /// Time spent in database reads, successful or not.
    pub total_load_time: Duration,
    /// Entries removed to keep the cache within its capacity, or because they expired.
    pub evictions: u64,
    /// Entries held now.
    pub entries: u64,
}

impl CacheStats {
    /// Hits over all reads; `None` before the first read.
    pub fn hit_rate(&self) -> Option<f64> {
        let requests = self.hits + self.misses;
        #[allow(clippy::cast_precision_loss)]
        (requests > 0).then(|| self.hits as f64 / requests as f64)
    }
}

/// Counters spread over cache lines, one picked per thread.
#[derive(Debug, Default)]
pub(super) struct Striped([Line; STRIPES]);

const STRIPES: usize = 16;

#[derive(Debug, Default)]
#[repr(align(128))]
struct Line(AtomicU64);

impl Striped {
    pub(super) fn add(&self, n: u64) {
        self.0[stripe()].0.fetch_add(n, Ordering::Relaxed);
    }

    pub(super) fn sum(&self) -> u64 {
        self.0
            .iter()
            .map(|line| line.0.load(Ordering::Relaxed))
            .sum()
    }
}

/// This thread's stripe: threads take them in turn as they first count.
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.with(|stripe| *stripe)
}

/// Everything [`CacheStats`] reports but the entries, which the cache itself counts.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) hits: Striped,
    pub(super) misses: Striped,
    pub(super) load_successes: AtomicU64,
    pub(super) load_errors: AtomicU64,
    load_nanos: AtomicU64,
    pub(super) evictions: AtomicU64,
}

impl Counters {
    /// Records one database read and how long it took.
    pub(super) fn loaded(&self, ok: bool, took: Duration) {
        let counter = if ok {
            &self.load_successes
        } else {
            &self.load_errors
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.load_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    pub(super) fn snapshot(&self, entries: u64) -> CacheStats {
        CacheStats {
            hits: self.hits.sum(),
            misses: self.misses.sum(),
            load_successes: self.load_successes.load(Ordering::Relaxed),
            load_errors: self.load_errors.load(Ordering::Relaxed),
            total_load_time: Duration::from_nanos(self.load_nanos.load(Ordering::Relaxed)),
            evictions: self.evictions.load(Ordering::Relaxed),
            entries,
        }
    }
}

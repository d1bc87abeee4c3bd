//! Store status: whether the database answers, and what to do when it comes back.

/// The health of the database behind a [`CachingStore`](crate::CachingStore), as last observed.
///
/// The first outage error (see [`Error::is_outage`](crate::Error::is_outage)) makes the store
/// unavailable and starts polling [`is_available`](crate::PersistentDataStore::is_available)
/// with backoff; the first successful poll makes it available again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStatus {
    /// Whether the database answered the last call or poll.
    pub available: bool,
    /// Set on recovery when the cache could not write its data back (every mode but
    /// [`cache_forever`](crate::CachingStoreBuilder::cache_forever)): writes may have been lost
    /// during the outage, so whoever feeds the store should send the full data set again.
    pub refresh_needed: bool,
    /// Live mode ([`invalidate_on_changes`](crate::CachingStoreBuilder::invalidate_on_changes)):
    /// the store's change feed is connected, so entries live until a change or the long
    /// [`live_cache_time`](crate::CachingStoreBuilder::live_cache_time). `false` while the feed
    /// is down or reconnecting (entries then live for the normal cache time), for a store with
    /// no feed, and in every other mode.
    pub live: bool,
    /// Last-known-good mode ([`keep_last_known_good`](crate::CachingStoreBuilder::keep_last_known_good)):
    /// the database lost data the cache holds (it answers "not initialized", or a kind that had
    /// items has none), and the cache keeps serving what it held. A degraded state: changes made
    /// since are not seen until the data is back.
    pub last_known_good: bool,
}

impl StoreStatus {
    pub(crate) const AVAILABLE: StoreStatus = StoreStatus {
        available: true,
        refresh_needed: false,
        live: false,
        last_known_good: false,
    };
}

impl Default for StoreStatus {
    fn default() -> Self {
        StoreStatus::AVAILABLE
    }
}

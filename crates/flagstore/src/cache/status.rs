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
}

impl StoreStatus {
    pub(crate) const AVAILABLE: StoreStatus = StoreStatus {
        available: true,
        refresh_needed: false,
    };
}

impl Default for StoreStatus {
    fn default() -> Self {
        StoreStatus::AVAILABLE
    }
}

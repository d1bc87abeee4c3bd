//! Reading items as other writers stored them.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Item, ItemError, Kind};

/// Every value stored for one kind, split into the items that could be read and the ones that
/// could not: what [`PersistentDataStore::get_all_checked`](crate::PersistentDataStore::get_all_checked)
/// returns.
///
/// ```
/// use flagstore::{Item, StoredItems};
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
    fn an_unreadable_stored_value_is_version_zero_for_upserts() {
        assert_eq!(
            version_to_replace("t", &Kind::FEATURES, "k", r#"{"version":4}"#),
            4
        );
        assert_eq!(version_to_replace("t", &Kind::FEATURES, "k", "{oops"), 0);
        assert_eq!(version_to_replace("t", &Kind::FEATURES, "k", ""), 0);
    }
}

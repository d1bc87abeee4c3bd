//! Reading items as other writers stored them.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::{Item, Kind};

/// Turns the `(key, json)` pairs a backend read for `get_all` into items, skipping any that are
/// not valid item JSON.
///
/// One corrupt value written by another program must not hide every other flag, so it is skipped
/// with an error-level log naming backend, kind, key and reason, and counted in `skipped`. A
/// `get` of that key still returns [`Error::InvalidItem`](crate::Error::InvalidItem), so the
/// problem stays visible where the item is used.
pub fn read_stored_items(
    backend: &'static str,
    kind: &Kind,
    pairs: impl IntoIterator<Item = (String, String)>,
    skipped: &AtomicU64,
) -> Vec<Item> {
    pairs
        .into_iter()
        .filter_map(|(key, json)| match Item::from_json(key.as_str(), json) {
            Ok(item) => Some(item),
            Err(err) => {
                skipped.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    backend,
                    kind = %kind,
                    key = %key,
                    error = %err,
                    "skipping an unreadable stored item; fix or re-initialize the store"
                );
                None
            }
        })
        .collect()
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
        let items = read_stored_items("test", &Kind::FEATURES, pairs, &skipped);
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].key(), "good");
        assert_eq!(skipped.load(Ordering::Relaxed), 2);
    }
}

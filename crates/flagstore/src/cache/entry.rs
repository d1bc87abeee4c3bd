//! What the cache holds: one item (or "not found"), or every item of a kind.

use std::sync::{Arc, OnceLock};

use tokio::time::Instant;

use crate::{Item, Kind};

#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) enum CacheKey {
    Item(Kind, String),
    All(Kind),
}

impl CacheKey {
    pub(super) fn item(kind: &Kind, key: &str) -> CacheKey {
        CacheKey::Item(kind.clone(), key.to_owned())
    }

    pub(super) fn weight(&self) -> usize {
        match self {
            CacheKey::Item(kind, key) => kind.name().len() + key.len(),
            CacheKey::All(kind) => kind.name().len(),
        }
    }
}

#[derive(Clone)]
pub(super) struct Entry {
    pub(super) loaded_at: Instant,
    /// Live mode: the count of changes the feed had reported when the value was read; any later
    /// change makes the entry stale. Always 0 in the other modes.
    pub(super) generation: u64,
    pub(super) value: Cached,
}

impl Entry {
    pub(super) fn new(value: Cached, generation: u64) -> Entry {
        Entry {
            loaded_at: Instant::now(),
            generation,
            value,
        }
    }

    /// A whole-kind entry's answer for one key, as that key's own entry would hold it.
    pub(super) fn for_item(&self, key: &str) -> Option<Entry> {
        match &self.value {
            Cached::All(all) => Some(Entry {
                loaded_at: self.loaded_at,
                generation: self.generation,
                value: Cached::Item(all.find(key).cloned()),
            }),
            Cached::Item(_) => None,
        }
    }
}

#[derive(Clone)]
pub(super) enum Cached {
    Item(Option<Item>),
    All(Arc<KindItems>),
}

impl Cached {
    pub(super) fn all(items: Vec<Item>) -> Cached {
        Cached::All(Arc::new(KindItems::new(items)))
    }

    pub(super) fn weight(&self) -> usize {
        // Approximate overhead of an entry besides its JSON and keys.
        const ENTRY_OVERHEAD: usize = 64;
        ENTRY_OVERHEAD
            + match self {
                Cached::Item(item) => item.as_ref().map_or(0, |i| i.key().len() + i.len()),
                Cached::All(all) => all.items().iter().map(|i| i.key().len() + i.len()).sum(),
            }
    }
}

/// Every item of one kind, as a whole-kind read or an `init` left them, and findable by key: a
/// `get` is answered from here, so a full data set costs one cache entry per kind, not one per
/// item (about a kilobyte of bookkeeping each).
pub(super) struct KindItems {
    items: Vec<Item>,
    /// Positions in `items`, in key order. Built by the first lookup: a reader that only ever
    /// asks for whole kinds never pays for it.
    by_key: OnceLock<Vec<usize>>,
}

impl KindItems {
    pub(super) fn new(items: Vec<Item>) -> KindItems {
        KindItems {
            items,
            by_key: OnceLock::new(),
        }
    }

    pub(super) fn items(&self) -> &[Item] {
        &self.items
    }

    /// The item stored under `key`; `None` means the kind has no such item.
    pub(super) fn find(&self, key: &str) -> Option<&Item> {
        let by_key = self.by_key();
        let at = by_key
            .binary_search_by(|&i| self.items[i].key().cmp(key))
            .ok()?;
        Some(&self.items[by_key[at]])
    }

    fn by_key(&self) -> &Vec<usize> {
        self.by_key.get_or_init(|| {
            let mut by_key: Vec<usize> = (0..self.items.len()).collect();
            by_key.sort_by(|&a, &b| self.items[a].key().cmp(self.items[b].key()));
            by_key
        })
    }

    /// These items with `item` in place of the one under the same key, or added. The key
    /// order carries over, so a forever cache taking upserts never sorts again.
    pub(super) fn replaced(&self, item: &Item) -> KindItems {
        let mut items = self.items.clone();
        let mut by_key = self.by_key().clone();
        match by_key.binary_search_by(|&i| self.items[i].key().cmp(item.key())) {
            Ok(at) => items[by_key[at]] = item.clone(),
            Err(at) => {
                by_key.insert(at, items.len());
                items.push(item.clone());
            }
        }
        KindItems {
            items,
            by_key: OnceLock::from(by_key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(key: &str, version: u64) -> Item {
        Item::from_json(key, format!(r#"{{"version":{version}}}"#)).unwrap()
    }

    #[test]
    fn finds_items_by_key_and_keeps_the_order_through_replacements() {
        let all = KindItems::new(vec![item("b", 1), item("a", 1), item("c", 1)]);
        assert_eq!(all.find("a").map(Item::version), Some(1));
        assert!(all.find("aa").is_none());
        let all = all.replaced(&item("aa", 2)).replaced(&item("c", 3));
        let keys: Vec<_> = all.items().iter().map(Item::key).collect();
        assert_eq!(keys, ["b", "a", "c", "aa"]);
        for (key, version) in [("a", 1), ("aa", 2), ("b", 1), ("c", 3)] {
            assert_eq!(all.find(key).map(Item::version), Some(version), "{key}");
        }
        assert!(all.find("d").is_none() && all.find("").is_none());
    }
}

//! What the cache holds: one item (or "not found"), or every item of a kind.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, OnceLock};

use moka::Equivalent;
use tokio::time::Instant;

use crate::{Item, Kind};

/// What an entry is stored under. Hashed through [`KeyRef`], so that a borrowed key finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
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

    fn borrowed(&self) -> KeyRef<'_> {
        match self {
            CacheKey::Item(kind, key) => KeyRef::Item(kind, key),
            CacheKey::All(kind) => KeyRef::All(kind),
        }
    }
}

impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.borrowed().hash(state);
    }
}

/// A [`CacheKey`] made of the caller's own kind and key, for lookups and invalidations: a cache
/// hit then builds no key (an allocation and a copy of the key on every read otherwise). It
/// hashes and compares exactly as the owned key it stands for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyRef<'a> {
    Item(&'a Kind, &'a str),
    All(&'a Kind),
}

impl<'a> KeyRef<'a> {
    pub(super) fn kind(self) -> &'a Kind {
        match self {
            KeyRef::Item(kind, _) | KeyRef::All(kind) => kind,
        }
    }

    /// The owned key, for inserting.
    pub(super) fn owned(self) -> CacheKey {
        match self {
            KeyRef::Item(kind, key) => CacheKey::item(kind, key),
            KeyRef::All(kind) => CacheKey::All(kind.clone()),
        }
    }
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            KeyRef::Item(kind, key) => {
                state.write_u8(0);
                kind.hash(state);
                key.hash(state);
            }
            KeyRef::All(kind) => {
                state.write_u8(1);
                kind.hash(state);
            }
        }
    }
}

impl Equivalent<CacheKey> for KeyRef<'_> {
    fn equivalent(&self, key: &CacheKey) -> bool {
        *self == key.borrowed()
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

    #[tokio::test]
    async fn a_borrowed_key_finds_exactly_what_its_owned_key_stored() {
        let custom = Kind::new("features2");
        let owned = [
            CacheKey::item(&Kind::FEATURES, "a"),
            CacheKey::item(&Kind::FEATURES, ""),
            CacheKey::item(&custom, "a"),
            CacheKey::All(Kind::FEATURES),
            CacheKey::All(custom.clone()),
        ];
        let cache: moka::future::Cache<CacheKey, usize> = moka::future::Cache::new(100);
        for (i, key) in owned.iter().enumerate() {
            assert_eq!(key.borrowed().owned(), *key);
            cache.insert(key.clone(), i).await;
        }
        for (i, key) in owned.iter().enumerate() {
            assert_eq!(cache.get(&key.borrowed()).await, Some(i));
            for (j, other) in owned.iter().enumerate() {
                assert_eq!(key.borrowed().equivalent(other), i == j);
            }
        }
        // An item key is never its kind's whole-kind key, nor another kind's.
        assert_eq!(
            cache.get(&KeyRef::Item(&Kind::FEATURES, "features")).await,
            None
        );
        assert_eq!(cache.get(&KeyRef::Item(&Kind::SEGMENTS, "a")).await, None);
        cache.invalidate(&KeyRef::Item(&custom, "a")).await;
        assert_eq!(cache.get(&owned[2]).await, None);
        assert_eq!(cache.get(&owned[0]).await, Some(0));
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

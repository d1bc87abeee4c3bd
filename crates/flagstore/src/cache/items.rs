//! Forever mode's entries for single items: a plain table by kind and key.
//!
//! An entry that never expires and is never evicted needs none of moka's bookkeeping (access
//! and write order, timestamps, weights, a shared key per entry), which for a 1 KB flag is
//! over half its size again. A daemon-mode reader that asks for flags one by one, as the SDK
//! does, fills this table: the item itself, found by its own key, and nothing beside it.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::{Item, Kind};

/// Items and "not found" answers of every kind, each by key.
#[derive(Default)]
pub(super) struct ItemTable(RwLock<Kinds>);

/// The two kinds every reader asks for in fields of their own (no hashing of the kind on a
/// hit), any other kind by name.
#[derive(Default)]
struct Kinds {
    features: Table,
    segments: Table,
    other: HashMap<Kind, Table>,
}

#[derive(Default)]
struct Table {
    items: HashSet<ByKey>,
    missing: HashSet<Box<str>>,
}

impl Table {
    fn len(&self) -> usize {
        self.items.len() + self.missing.len()
    }
}

/// An item that hashes and compares as its key, so that the set finds it by `&str` and stores
/// no second copy of the key.
struct ByKey(Item);

impl Hash for ByKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.key().hash(state);
    }
}

impl PartialEq for ByKey {
    fn eq(&self, other: &Self) -> bool {
        self.0.key() == other.0.key()
    }
}

impl Eq for ByKey {}

impl Borrow<str> for ByKey {
    fn borrow(&self) -> &str {
        self.0.key()
    }
}

impl Kinds {
    fn table(&self, kind: &Kind) -> Option<&Table> {
        match kind.name() {
            "features" => Some(&self.features),
            "segments" => Some(&self.segments),
            _ => self.other.get(kind),
        }
    }

    fn table_mut(&mut self, kind: &Kind) -> &mut Table {
        match kind.name() {
            "features" => &mut self.features,
            "segments" => &mut self.segments,
            _ => self.other.entry(kind.clone()).or_default(),
        }
    }

    fn tables(&self) -> impl Iterator<Item = &Table> {
        [&self.features, &self.segments]
            .into_iter()
            .chain(self.other.values())
    }
}

impl ItemTable {
    // The critical sections are single set operations: poison cannot leave a torn table.
    fn read(&self) -> RwLockReadGuard<'_, Kinds> {
        self.0
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Kinds> {
        self.0
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What is held for `key`: `Some(Some(item))`, `Some(None)` for a cached "not found",
    /// `None` if nothing is.
    pub(super) fn get(&self, kind: &Kind, key: &str) -> Option<Option<Item>> {
        let kinds = self.read();
        let table = kinds.table(kind)?;
        if let Some(held) = table.items.get(key) {
            return Some(Some(held.0.clone()));
        }
        table.missing.contains(key).then_some(None)
    }

    /// Holds `value` for `key` (an item stored under `key`, or "not found").
    pub(super) fn insert(&self, kind: &Kind, key: &str, value: Option<Item>) {
        let mut kinds = self.write();
        let table = kinds.table_mut(kind);
        match value {
            Some(item) => {
                table.missing.remove(key);
                table.items.replace(ByKey(item));
            }
            None => {
                table.items.remove(key);
                table.missing.insert(key.into());
            }
        }
    }

    pub(super) fn remove(&self, kind: &Kind, key: &str) {
        let mut kinds = self.write();
        let table = kinds.table_mut(kind);
        table.items.remove(key);
        table.missing.remove(key);
    }

    pub(super) fn clear(&self) {
        *self.write() = Kinds::default();
    }

    /// Entries held, counted without weighing them (for the periodic metrics).
    #[cfg(feature = "metrics")]
    pub(super) fn len(&self) -> u64 {
        let entries: usize = self.read().tables().map(Table::len).sum();
        entries as u64
    }

    /// Entries held, and their approximate weight in bytes (keys and JSON).
    pub(super) fn usage(&self) -> (u64, u64) {
        let kinds = self.read();
        let (mut entries, mut bytes) = (0, 0);
        for table in kinds.tables() {
            entries += table.len();
            bytes += table
                .items
                .iter()
                .map(|held| held.0.key().len() + held.0.len())
                .sum::<usize>();
            bytes += table.missing.iter().map(|key| key.len()).sum::<usize>();
        }
        (entries as u64, bytes as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(key: &str, version: u64) -> Item {
        Item::from_json(key, format!(r#"{{"version":{version}}}"#)).unwrap()
    }

    #[test]
    fn holds_items_and_absences_by_kind_and_key() {
        let table = ItemTable::default();
        let custom = Kind::new("widgets");
        assert_eq!(table.get(&Kind::FEATURES, "a"), None);
        table.insert(&Kind::FEATURES, "a", Some(item("a", 1)));
        table.insert(&Kind::SEGMENTS, "a", None);
        table.insert(&custom, "a", Some(item("a", 3)));
        assert_eq!(table.get(&Kind::FEATURES, "a"), Some(Some(item("a", 1))));
        assert_eq!(table.get(&Kind::SEGMENTS, "a"), Some(None));
        assert_eq!(table.get(&custom, "a"), Some(Some(item("a", 3))));
        assert_eq!(table.get(&Kind::new("other"), "a"), None);

        // A newer answer replaces the old one, whichever shape either has.
        table.insert(&Kind::FEATURES, "a", Some(item("a", 2)));
        assert_eq!(table.get(&Kind::FEATURES, "a"), Some(Some(item("a", 2))));
        table.insert(&Kind::FEATURES, "a", None);
        assert_eq!(table.get(&Kind::FEATURES, "a"), Some(None));
        table.insert(&Kind::SEGMENTS, "a", Some(item("a", 4)));
        assert_eq!(table.get(&Kind::SEGMENTS, "a"), Some(Some(item("a", 4))));
        assert_eq!(table.usage().0, 3);

        table.remove(&Kind::SEGMENTS, "a");
        assert_eq!(table.get(&Kind::SEGMENTS, "a"), None);
        table.clear();
        assert_eq!(table.get(&custom, "a"), None);
        assert_eq!(table.usage(), (0, 0));
    }
}

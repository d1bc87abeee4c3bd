//! What the cache holds: one item (or "not found"), or every item of a kind.

use std::sync::Arc;

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
}

#[derive(Clone)]
pub(super) enum Cached {
    Item(Option<Item>),
    All(Arc<Vec<Item>>),
}

impl Cached {
    pub(super) fn weight(&self) -> usize {
        // Approximate overhead of an entry besides its JSON and keys.
        const ENTRY_OVERHEAD: usize = 64;
        ENTRY_OVERHEAD
            + match self {
                Cached::Item(item) => item.as_ref().map_or(0, |i| i.key().len() + i.len()),
                Cached::All(items) => items.iter().map(|i| i.key().len() + i.len()).sum(),
            }
    }
}

/// `items` with `item` in place of the one under the same key, or added.
pub(super) fn replaced(items: &[Item], item: &Item) -> Vec<Item> {
    let mut items = items.to_vec();
    match items.iter_mut().find(|i| i.key() == item.key()) {
        Some(slot) => *slot = item.clone(),
        None => items.push(item.clone()),
    }
    items
}

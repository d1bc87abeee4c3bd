//! The write order for a full data set.

use std::collections::{HashMap, HashSet};

use serde::Deserialize;

use crate::{Collection, Item, Kind};

/// Orders a full data set the way stores must write it: segments first, then flags, then any other
/// kind; within flags, every prerequisite before the flags that depend on it; within segments,
/// every segment a rule matches (`segmentMatch`) before the segments that match it.
///
/// A store that cannot write atomically is briefly half-written during `init`; in this order a
/// reader never sees a flag whose prerequisite or segment is missing. Items keep their given order
/// where no dependency says otherwise, prerequisite cycles are broken rather than looped on, and a
/// prerequisite that is not in the data set is ignored.
///
/// ```
/// use flagstore::{sort_for_init, Collection, Item, Kind};
///
/// let flags = vec![
///     Item::from_json("child", r#"{"version":1,"prerequisites":[{"key":"parent","variation":0}]}"#)?,
///     Item::from_json("parent", r#"{"version":1}"#)?,
/// ];
/// let segments = vec![Item::from_json("beta-users", r#"{"version":1}"#)?];
/// let sorted = sort_for_init(vec![
///     Collection::new(Kind::FEATURES, flags),
///     Collection::new(Kind::SEGMENTS, segments),
/// ]);
/// assert_eq!(sorted[0].kind, Kind::SEGMENTS);
/// let keys: Vec<_> = sorted[1].items.iter().map(|i| i.key()).collect();
/// assert_eq!(keys, ["parent", "child"]);
/// # Ok::<(), flagstore::error::ItemError>(())
/// ```
pub fn sort_for_init(mut data: Vec<Collection>) -> Vec<Collection> {
    data.sort_by_key(|c| c.kind.init_priority());
    for collection in &mut data {
        let dependencies: fn(&Item) -> Vec<String> = if collection.kind == Kind::FEATURES {
            prerequisite_keys
        } else if collection.kind == Kind::SEGMENTS {
            matched_segment_keys
        } else {
            continue;
        };
        collection.items = dependencies_first(std::mem::take(&mut collection.items), dependencies);
    }
    data
}

/// Splits a data set in write order (as [`sort_for_init`] leaves it) into stages whose items
/// depend on none of each other, for backends that write in batches and can send several at
/// once: every item of a stage may be written concurrently, and each stage must be complete
/// before the next starts. Each entry is `(collection index, item index)`.
///
/// A collection's items start a new stage after the previous collection's last one (segments,
/// then flags, as given); within it, an item goes one stage after the latest of its
/// dependencies (prerequisites, matched segments) that come before it.
///
/// ```
/// use flagstore::backend::write_stages;
/// use flagstore::{sort_for_init, Collection, Item, Kind};
///
/// let data = sort_for_init(vec![
///     Collection::new(Kind::FEATURES, vec![
///         Item::from_json("a", r#"{"version":1}"#)?,
///         Item::from_json("b", r#"{"version":1,"prerequisites":[{"key":"a","variation":0}]}"#)?,
///         Item::from_json("c", r#"{"version":1}"#)?,
///     ]),
///     Collection::new(Kind::SEGMENTS, vec![Item::from_json("s", r#"{"version":1}"#)?]),
/// ]);
/// // The segment, then both flags without prerequisites (a, c) together, then b.
/// assert_eq!(write_stages(&data), vec![vec![(0, 0)], vec![(1, 0), (1, 2)], vec![(1, 1)]]);
/// # Ok::<(), flagstore::error::ItemError>(())
/// ```
pub fn write_stages(data: &[Collection]) -> Vec<Vec<(usize, usize)>> {
    let mut stages: Vec<Vec<(usize, usize)>> = Vec::new();
    let mut base = 0;
    for (c, collection) in data.iter().enumerate() {
        let dependencies: fn(&Item) -> Vec<String> = if collection.kind == Kind::FEATURES {
            prerequisite_keys
        } else if collection.kind == Kind::SEGMENTS {
            matched_segment_keys
        } else {
            |_| Vec::new()
        };
        let mut stage_of: HashMap<&str, usize> = HashMap::with_capacity(collection.items.len());
        let mut deepest = None;
        for (i, item) in collection.items.iter().enumerate() {
            let stage = dependencies(item)
                .iter()
                .filter_map(|key| stage_of.get(key.as_str()))
                .map(|stage| stage + 1)
                .max()
                .unwrap_or(0);
            stage_of.insert(item.key(), stage);
            deepest = deepest.max(Some(stage));
            if stages.len() <= base + stage {
                stages.resize_with(base + stage + 1, Vec::new);
            }
            stages[base + stage].push((c, i));
        }
        if let Some(deepest) = deepest {
            base += deepest + 1;
        }
    }
    stages
}

#[derive(Deserialize)]
struct Prerequisites {
    #[serde(default)]
    prerequisites: Vec<Prerequisite>,
}

#[derive(Deserialize)]
struct Prerequisite {
    key: String,
}

// An item whose dependencies cannot be read still gets written; it just has no ordering
// constraint. The store reports unreadable items on read, not here.

fn prerequisite_keys(item: &Item) -> Vec<String> {
    serde_json::from_str::<Prerequisites>(item.json())
        .map(|p| p.prerequisites.into_iter().map(|p| p.key).collect())
        .unwrap_or_default()
}

#[derive(Deserialize)]
struct SegmentRules {
    #[serde(default)]
    rules: Vec<SegmentRule>,
}

#[derive(Deserialize)]
struct SegmentRule {
    #[serde(default)]
    clauses: Vec<Clause>,
}

#[derive(Deserialize)]
struct Clause {
    #[serde(default)]
    op: String,
    #[serde(default)]
    values: Vec<serde_json::Value>,
}

fn matched_segment_keys(item: &Item) -> Vec<String> {
    serde_json::from_str::<SegmentRules>(item.json())
        .map(|s| {
            s.rules
                .into_iter()
                .flat_map(|rule| rule.clauses)
                .filter(|clause| clause.op == "segmentMatch")
                .flat_map(|clause| clause.values)
                .filter_map(|value| value.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn dependencies_first(items: Vec<Item>, dependencies: fn(&Item) -> Vec<String>) -> Vec<Item> {
    let index: HashMap<String, usize> = items
        .iter()
        .enumerate()
        .map(|(i, item)| (item.key().to_owned(), i))
        .collect();
    let mut visited = HashSet::with_capacity(items.len());
    let mut order = Vec::with_capacity(items.len());
    for start in 0..items.len() {
        // Depth-first, with an explicit stack so a long prerequisite chain cannot overflow it.
        let mut stack = vec![(start, false)];
        while let Some((i, expanded)) = stack.pop() {
            if expanded {
                order.push(i);
                continue;
            }
            if !visited.insert(i) {
                continue;
            }
            stack.push((i, true));
            for key in dependencies(&items[i]).iter().rev() {
                if let Some(&dep) = index.get(key)
                    && !visited.contains(&dep)
                {
                    stack.push((dep, false));
                }
            }
        }
    }
    let mut slots: Vec<Option<Item>> = items.into_iter().map(Some).collect();
    order.into_iter().filter_map(|i| slots[i].take()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(key: &str, prereqs: &[&str]) -> Item {
        let prereqs: Vec<String> = prereqs
            .iter()
            .map(|p| format!(r#"{{"key":"{p}","variation":0}}"#))
            .collect();
        let json = format!(
            r#"{{"key":"{key}","version":1,"prerequisites":[{}]}}"#,
            prereqs.join(",")
        );
        Item::from_json(key, json).unwrap()
    }

    fn prerequisites_first(items: Vec<Item>) -> Vec<Item> {
        dependencies_first(items, prerequisite_keys)
    }

    fn keys(items: &[Item]) -> Vec<&str> {
        items.iter().map(Item::key).collect()
    }

    #[test]
    fn prerequisites_come_before_dependents() {
        let items = vec![
            flag("a", &["b", "c"]),
            flag("b", &["c", "e"]),
            flag("c", &[]),
            flag("d", &[]),
            flag("e", &[]),
            flag("f", &[]),
        ];
        let sorted = prerequisites_first(items);
        let pos = |k: &str| keys(&sorted).iter().position(|x| *x == k).unwrap();
        assert!(pos("b") < pos("a") && pos("c") < pos("a"));
        assert!(pos("c") < pos("b") && pos("e") < pos("b"));
        assert_eq!(sorted.len(), 6);
    }

    #[test]
    fn keeps_order_without_dependencies_and_survives_cycles_and_missing_keys() {
        assert_eq!(
            keys(&prerequisites_first(vec![
                flag("x", &[]),
                flag("y", &[]),
                flag("z", &[])
            ])),
            ["x", "y", "z"]
        );
        let cyclic = prerequisites_first(vec![
            flag("p", &["q"]),
            flag("q", &["p"]),
            flag("r", &["nope"]),
        ]);
        assert_eq!(keys(&cyclic), ["q", "p", "r"]);
    }

    #[test]
    fn deep_chains_do_not_overflow() {
        let n = 50_000;
        let items: Vec<Item> = (0..n)
            .map(|i| {
                let key = format!("f{i}");
                let dep = format!("f{}", i + 1);
                if i + 1 < n {
                    flag(&key, &[&dep])
                } else {
                    flag(&key, &[])
                }
            })
            .collect();
        let sorted = prerequisites_first(items);
        assert_eq!(sorted[0].key(), format!("f{}", n - 1));
        assert_eq!(sorted[n - 1].key(), "f0");
    }

    #[test]
    fn segments_matched_by_other_segments_come_first() {
        let segment = |key: &str, matches: &[&str]| {
            let values: Vec<String> = matches.iter().map(|m| format!("{m:?}")).collect();
            let json = format!(
                r#"{{"key":"{key}","version":1,"rules":[{{"clauses":[{{"attribute":"","op":"segmentMatch","values":[{}]}},{{"attribute":"email","op":"in","values":["x"]}}]}}]}}"#,
                values.join(",")
            );
            Item::from_json(key, json).unwrap()
        };
        let sorted = sort_for_init(vec![Collection::new(
            Kind::SEGMENTS,
            vec![
                segment("all-staff", &["engineers", "sales"]),
                segment("engineers", &[]),
                segment("sales", &["emea"]),
                segment("emea", &[]),
            ],
        )]);
        assert_eq!(
            keys(&sorted[0].items),
            ["engineers", "emea", "sales", "all-staff"]
        );
    }

    #[test]
    fn kinds_sort_segments_then_flags_then_others() {
        let sorted = sort_for_init(vec![
            Collection::new(Kind::new("other"), vec![]),
            Collection::new(Kind::FEATURES, vec![]),
            Collection::new(Kind::SEGMENTS, vec![]),
        ]);
        let kinds: Vec<_> = sorted.iter().map(|c| c.kind.name()).collect();
        assert_eq!(kinds, ["segments", "features", "other"]);
    }
}

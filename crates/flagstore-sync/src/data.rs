//! Flag data sets: the shape LaunchDarkly's polling endpoint serves and a stream's `put` carries,
//! `{"flags": {KEY: FLAG, ...}, "segments": {KEY: SEGMENT, ...}}`, each item kept byte for byte.

use std::collections::BTreeMap;
use std::fmt;

use flagstore::{Collection, Item, Kind, sort_for_init};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// Why a data set was refused, naming the item at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct DataError(String);

impl DataError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        DataError(message.into())
    }
}

/// Every flag and segment of an environment, by key, each item's JSON exactly as received so
/// that fields this project does not model reach the other SDKs unchanged.
///
/// ```
/// use flagstore::Kind;
/// use flagstore_sync::DataSet;
///
/// let data = DataSet::parse(r#"{"flags": {"beta": {"key":"beta","version":3,"on":true}},
///                                "segments": {}, "somethingNew": 1}"#)?;
/// let beta = data.get(&Kind::FEATURES, "beta").unwrap();
/// assert_eq!(beta.version(), 3);
/// assert_eq!(beta.json(), r#"{"key":"beta","version":3,"on":true}"#);
///
/// // A file to load is held to more: nothing unknown, something to load.
/// assert!(DataSet::parse_strict(r#"{"flags": {}, "somethingNew": 1}"#).is_err());
/// # Ok::<(), flagstore_sync::DataError>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DataSet {
    /// Flags, then segments (see [`KINDS`]), by key.
    sections: [BTreeMap<String, Item>; 2],
    /// Live flags and live segments, kept as items change: metrics read them on every change.
    live: [usize; 2],
}

/// The kinds a data set holds, in the order of its sections.
const KINDS: [Kind; 2] = [Kind::FEATURES, Kind::SEGMENTS];

impl DataSet {
    /// Parses what LaunchDarkly sends: top-level fields other than `flags` and `segments` are
    /// ignored, as the SDKs ignore them. Every item must carry a version; a key given twice, or
    /// an item whose inner `key` differs from its map key, is refused.
    pub fn parse(text: &str) -> Result<DataSet, DataError> {
        Self::parse_with(text, false)
    }

    /// Parses a data file to load: like [`parse`](Self::parse), but an unknown top-level field
    /// (a typo, or a file of another shape) or a file with neither section is refused, since
    /// loading it would replace the store's data with nothing.
    pub fn parse_strict(text: &str) -> Result<DataSet, DataError> {
        Self::parse_with(text, true)
    }

    fn parse_with(text: &str, strict: bool) -> Result<DataSet, DataError> {
        let expected = r#"expected {"flags": {...}, "segments": {...}}"#;
        // Serde would also take a sequence for the struct; a data set is an object.
        if !text.trim_start().starts_with('{') {
            return Err(DataError::new(format!("not a flag data file; {expected}")));
        }
        let parsed = if strict {
            serde_json::from_str::<StrictFields<'_>>(text).map(Sections::from)
        } else {
            serde_json::from_str::<Sections<'_>>(text)
        };
        let sections = parsed
            .map_err(|e| DataError::new(format!("not a flag data file ({e}); {expected}")))?;
        if strict && sections.flags.is_none() && sections.segments.is_none() {
            return Err(DataError::new(format!(
                "the file has neither \"flags\" nor \"segments\"; {expected}"
            )));
        }
        let sections = [
            items("flags", sections.flags)?,
            items("segments", sections.segments)?,
        ];
        let live =
            |items: &BTreeMap<String, Item>| items.values().filter(|i| !i.is_deleted()).count();
        Ok(DataSet {
            live: [live(&sections[0]), live(&sections[1])],
            sections,
        })
    }

    /// The item stored under `key`, tombstones included.
    pub fn get(&self, kind: &Kind, key: &str) -> Option<&Item> {
        self.section(kind)?.get(key)
    }

    /// Every item of `kind` (flags or segments), tombstones included, by key.
    pub fn items(&self, kind: &Kind) -> impl Iterator<Item = &Item> {
        self.section(kind).into_iter().flat_map(BTreeMap::values)
    }

    /// Whether a live segment is unbounded (a Big Segment, `"unbounded": true`): the data then
    /// needs its memberships kept current too.
    pub fn has_big_segments(&self) -> bool {
        self.items(&Kind::SEGMENTS).any(is_big_segment)
    }

    /// How many live (not deleted) items of `kind` the set holds.
    pub fn live_count(&self, kind: &Kind) -> usize {
        match Self::slot(kind) {
            Some(slot) => self.live[slot],
            None => 0,
        }
    }

    /// Applies one change as a store's upsert would: `item` replaces what is held under its key
    /// only if that is older (or absent). Returns whether it did. Kinds other than flags and
    /// segments are not part of a data set and are refused.
    pub fn upsert(&mut self, kind: &Kind, item: Item) -> bool {
        let Some(slot) = Self::slot(kind) else {
            return false;
        };
        let section = &mut self.sections[slot];
        let was_live = match section.get(item.key()) {
            Some(held) if held.version() >= item.version() => return false,
            Some(held) => !held.is_deleted(),
            None => false,
        };
        let is_live = !item.is_deleted();
        section.insert(item.key().to_owned(), item);
        self.live[slot] = self.live[slot] + usize::from(is_live) - usize::from(was_live);
        true
    }

    fn slot(kind: &Kind) -> Option<usize> {
        KINDS.iter().position(|k| k == kind)
    }

    /// The set as a store's `init` takes it: segments before flags, prerequisites first.
    pub fn to_collections(&self) -> Vec<Collection> {
        sort_for_init(
            KINDS
                .iter()
                .zip(&self.sections)
                .map(|(kind, items)| {
                    Collection::new(kind.clone(), items.values().cloned().collect())
                })
                .collect(),
        )
    }

    /// The data file for these items: live items only (a data file has no tombstones), keys
    /// sorted, each item's JSON exactly as held.
    pub fn render<'a>(
        flags: impl IntoIterator<Item = &'a Item>,
        segments: impl IntoIterator<Item = &'a Item>,
    ) -> Result<String, DataError> {
        fn section<'a>(
            items: impl IntoIterator<Item = &'a Item>,
        ) -> Result<BTreeMap<&'a str, &'a RawValue>, DataError> {
            items
                .into_iter()
                .filter(|i| !i.is_deleted())
                .map(|i| {
                    let raw: &RawValue = serde_json::from_str(i.json()).map_err(|e| {
                        DataError::new(format!("stored item {:?} is not JSON: {e}", i.key()))
                    })?;
                    Ok((i.key(), raw))
                })
                .collect()
        }
        #[derive(serde::Serialize)]
        struct Out<'a> {
            flags: BTreeMap<&'a str, &'a RawValue>,
            segments: BTreeMap<&'a str, &'a RawValue>,
        }
        let out = Out {
            flags: section(flags)?,
            segments: section(segments)?,
        };
        serde_json::to_string(&out)
            .map_err(|e| DataError::new(format!("could not write the data: {e}")))
    }

    fn section(&self, kind: &Kind) -> Option<&BTreeMap<String, Item>> {
        Self::slot(kind).map(|slot| &self.sections[slot])
    }
}

#[derive(Deserialize)]
struct Sections<'a> {
    #[serde(borrow)]
    flags: Option<Section<'a>>,
    #[serde(borrow)]
    segments: Option<Section<'a>>,
}

/// [`Sections`] that refuses any other field.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StrictFields<'a> {
    #[serde(borrow)]
    flags: Option<Section<'a>>,
    #[serde(borrow)]
    segments: Option<Section<'a>>,
}

impl<'a> From<StrictFields<'a>> for Sections<'a> {
    fn from(StrictFields { flags, segments }: StrictFields<'a>) -> Self {
        Sections { flags, segments }
    }
}

/// One section of a data set: items by key. A key given twice is refused (plain JSON parsing
/// would silently keep the last copy), and the error names it with its line.
struct Section<'a>(BTreeMap<String, &'a RawValue>);

impl<'de: 'a, 'a> Deserialize<'de> for Section<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Items<'a>(std::marker::PhantomData<&'a ()>);

        impl<'de: 'a, 'a> Visitor<'de> for Items<'a> {
            type Value = Section<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of items by key")
            }

            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut items = BTreeMap::new();
                while let Some((key, item)) = map.next_entry::<String, &'de RawValue>()? {
                    if items.contains_key(&key) {
                        return Err(de::Error::custom(format!("the key {key:?} is given twice")));
                    }
                    items.insert(key, item);
                }
                Ok(Section(items))
            }
        }

        deserializer.deserialize_map(Items(std::marker::PhantomData))
    }
}

#[derive(Deserialize)]
struct KeyField {
    key: Option<String>,
}

/// Checks and keeps every item of one section.
fn items(section: &str, raw: Option<Section<'_>>) -> Result<BTreeMap<String, Item>, DataError> {
    raw.map(|s| s.0)
        .unwrap_or_default()
        .into_iter()
        .map(|(key, raw)| {
            let item = Item::from_json(key.as_str(), raw.get())
                .map_err(|e| DataError::new(format!("{section} item {key:?} is invalid: {e}")))?;
            if let Ok(KeyField { key: Some(inner) }) = serde_json::from_str::<KeyField>(raw.get())
                && inner != key
                && !item.is_deleted()
            {
                return Err(DataError::new(format!(
                    "{section} item {key:?} has the key {inner:?} inside"
                )));
            }
            Ok((key, item))
        })
        .collect()
}

/// Whether `segment` is live and unbounded.
pub(crate) fn is_big_segment(segment: &Item) -> bool {
    #[derive(Deserialize)]
    struct Unbounded {
        #[serde(default)]
        unbounded: bool,
    }
    !segment.is_deleted()
        && serde_json::from_str::<Unbounded>(segment.json()).is_ok_and(|s| s.unbounded)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn keeps_item_bytes_and_orders_for_init() {
        let text = r#"{"segments": {"s": {"key":"s","version":1}},
                       "flags": {"b": {"key":"b", "version": 2, "prerequisites":[{"key":"a","variation":0}]},
                                 "a": {"key":"a","version":1, "name": "caf\u00e9"}}}"#;
        let data = DataSet::parse_strict(text).unwrap();
        let collections = data.to_collections();
        assert_eq!(collections[0].kind, Kind::SEGMENTS);
        let keys: Vec<_> = collections[1].items.iter().map(Item::key).collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(
            collections[1].items[0].json(),
            r#"{"key":"a","version":1, "name": "caf\u00e9"}"#
        );
        let dumped =
            DataSet::render(data.items(&Kind::FEATURES), data.items(&Kind::SEGMENTS)).unwrap();
        assert_eq!(DataSet::parse_strict(&dumped).unwrap(), data);
    }

    #[test]
    fn names_the_bad_item() {
        let err = |text: &str| DataSet::parse_strict(text).unwrap_err().to_string();
        assert_eq!(
            err(r#"{"flags":{"f":{"key":"f"}}}"#),
            r#"flags item "f" is invalid: item has no version"#
        );
        assert_eq!(
            err(r#"{"segments":{"s":{"key":"t","version":1}}}"#),
            r#"segments item "s" has the key "t" inside"#
        );
        assert!(
            err(r#"{"flagValues":{"f":true}}"#)
                .starts_with("not a flag data file (unknown field `flagValues`")
        );
        assert!(err("[]").starts_with("not a flag data file"));
        assert_eq!(
            err("{\"flags\": {\n\"a\": {\"version\":1},\n\"a\": {\"version\":2}}}"),
            "not a flag data file (the key \"a\" is given twice at line 3 column 19); expected {\"flags\": {...}, \"segments\": {...}}"
        );
        assert!(err("{}").starts_with("the file has neither"));
    }

    #[test]
    fn what_launchdarkly_sends_may_hold_more() {
        let data =
            DataSet::parse(r#"{"flags":{},"segments":{},"configurationOverrides":{}}"#).unwrap();
        assert_eq!(data.live_count(&Kind::FEATURES), 0);
        assert_eq!(DataSet::parse("{}").unwrap(), DataSet::default());
        // Item-level checks stay.
        assert!(DataSet::parse(r#"{"flags":{"f":{"key":"f"}}}"#).is_err());
    }

    #[test]
    fn upsert_keeps_the_newer_item() {
        let mut data = DataSet::default();
        let item =
            |v: u64| Item::from_json("f", format!(r#"{{"key":"f","version":{v}}}"#)).unwrap();
        assert!(data.upsert(&Kind::FEATURES, item(2)));
        assert!(!data.upsert(&Kind::FEATURES, item(2)));
        assert!(!data.upsert(&Kind::FEATURES, item(1)));
        assert!(data.upsert(&Kind::FEATURES, Item::tombstone("f", 3)));
        assert_eq!(data.live_count(&Kind::FEATURES), 0);
        assert!(!data.upsert(&Kind::new("other"), item(9)));
    }
}

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

    /// Reads a data file to load as [`parse_strict`](Self::parse_strict) does, from `reader`
    /// as it goes: each item's JSON is read once into the item that keeps it, and the file's
    /// text is never held whole (a 100,000-flag file is over 100 MB).
    pub fn read_strict(reader: impl std::io::BufRead) -> Result<DataSet, DataError> {
        Self::read_with(reader, true)
    }

    /// Reads what LaunchDarkly sends as [`parse`](Self::parse) does, from `reader` as it goes.
    pub(crate) fn read(reader: impl std::io::BufRead) -> Result<DataSet, DataError> {
        Self::read_with(reader, false)
    }

    fn read_with(mut reader: impl std::io::BufRead, strict: bool) -> Result<DataSet, DataError> {
        let first = loop {
            let buffer = reader
                .fill_buf()
                .map_err(|e| DataError::new(format!("could not read the data: {e}")))?;
            match buffer.iter().position(|b| !b.is_ascii_whitespace()) {
                Some(at) => break Some(buffer[at]),
                None if buffer.is_empty() => break None,
                None => {
                    let all = buffer.len();
                    reader.consume(all);
                }
            }
        };
        Self::parse_from(first, serde_json::Deserializer::from_reader(reader), strict)
    }

    fn parse_with(text: &str, strict: bool) -> Result<DataSet, DataError> {
        let first = text.trim_start().bytes().next();
        Self::parse_from(first, serde_json::Deserializer::from_str(text), strict)
    }

    /// Parses what `deserializer` reads, whose first byte other than whitespace is `first`.
    fn parse_from<'de, R: serde_json::de::Read<'de>>(
        first: Option<u8>,
        mut deserializer: serde_json::Deserializer<R>,
        strict: bool,
    ) -> Result<DataSet, DataError> {
        let expected = r#"expected {"flags": {...}, "segments": {...}}"#;
        // A data set is an object (the derived strict fields would also take a sequence), and
        // a file of another shape is named as such before any parsing.
        if first != Some(b'{') {
            return Err(DataError::new(format!("not a flag data file; {expected}")));
        }
        let parsed = if strict {
            StrictFields::deserialize(&mut deserializer).map(Sections::from)
        } else {
            Sections::deserialize(&mut deserializer)
        };
        let sections = parsed
            .and_then(|sections| deserializer.end().map(|()| sections))
            .map_err(|e| DataError::new(format!("not a flag data file ({e}); {expected}")))?;
        if strict && sections.flags.is_none() && sections.segments.is_none() {
            return Err(DataError::new(format!(
                "the file has neither \"flags\" nor \"segments\"; {expected}"
            )));
        }
        Self::from_sections(sections)
    }

    /// Checks and keeps the items of both sections.
    fn from_sections(sections: Sections) -> Result<DataSet, DataError> {
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
        let mut out = Vec::new();
        Self::write(&mut out, flags, segments)?;
        String::from_utf8(out).map_err(|e| DataError::new(format!("could not write the data: {e}")))
    }

    /// [`render`](Self::render), written to `out` item by item rather than built whole first.
    /// Each item is checked to be JSON before it is written.
    pub fn write<'a>(
        mut out: impl std::io::Write,
        flags: impl IntoIterator<Item = &'a Item>,
        segments: impl IntoIterator<Item = &'a Item>,
    ) -> Result<(), DataError> {
        fn section<'a>(
            out: &mut impl std::io::Write,
            items: impl IntoIterator<Item = &'a Item>,
        ) -> Result<(), DataError> {
            let mut items: Vec<&Item> = items.into_iter().filter(|i| !i.is_deleted()).collect();
            items.sort_unstable_by(|a, b| a.key().cmp(b.key()));
            out.write_all(b"{").map_err(unwritten)?;
            for (n, item) in items.iter().enumerate() {
                let raw: &RawValue = serde_json::from_str(item.json()).map_err(|e| {
                    DataError::new(format!("stored item {:?} is not JSON: {e}", item.key()))
                })?;
                if n > 0 {
                    out.write_all(b",").map_err(unwritten)?;
                }
                serde_json::to_writer(&mut *out, item.key()).map_err(unwritten)?;
                out.write_all(b":").map_err(unwritten)?;
                out.write_all(raw.get().as_bytes()).map_err(unwritten)?;
            }
            out.write_all(b"}").map_err(unwritten)
        }
        fn unwritten(e: impl fmt::Display) -> DataError {
            DataError::new(format!("could not write the data: {e}"))
        }
        out.write_all(br#"{"flags":"#).map_err(unwritten)?;
        section(&mut out, flags)?;
        out.write_all(br#","segments":"#).map_err(unwritten)?;
        section(&mut out, segments)?;
        out.write_all(b"}").map_err(unwritten)
    }

    fn section(&self, kind: &Kind) -> Option<&BTreeMap<String, Item>> {
        Self::slot(kind).map(|slot| &self.sections[slot])
    }
}

/// Both sections, as LaunchDarkly sends them: other fields are ignored.
struct Sections {
    flags: Option<Section>,
    segments: Option<Section>,
}

impl<'de> Deserialize<'de> for Sections {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;

        impl<'de> Visitor<'de> for Fields {
            type Value = Sections;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a data set, {"flags": {...}, "segments": {...}}"#)
            }

            // A map only: serde's derive would also take a sequence for a struct.
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Sections, M::Error> {
                let mut sections = Sections {
                    flags: None,
                    segments: None,
                };
                let mut seen = [false; 2];
                while let Some(field) = map.next_key::<String>()? {
                    let (slot, seen) = match field.as_str() {
                        "flags" => (&mut sections.flags, &mut seen[0]),
                        "segments" => (&mut sections.segments, &mut seen[1]),
                        _ => {
                            map.next_value::<de::IgnoredAny>()?;
                            continue;
                        }
                    };
                    if std::mem::replace(seen, true) {
                        return Err(de::Error::custom(format!("\"{field}\" is given twice")));
                    }
                    *slot = map.next_value()?;
                }
                Ok(sections)
            }
        }

        deserializer.deserialize_map(Fields)
    }
}

/// A data set as a value inside other JSON (a stream's `put` event), deserialized as it is read
/// like [`DataSet::parse`].
pub(crate) struct Embedded(pub(crate) DataSet);

impl<'de> Deserialize<'de> for Embedded {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let sections = Sections::deserialize(deserializer)?;
        DataSet::from_sections(sections)
            .map(Embedded)
            .map_err(de::Error::custom)
    }
}

/// [`Sections`] that refuses any other field.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StrictFields {
    flags: Option<Section>,
    segments: Option<Section>,
}

impl From<StrictFields> for Sections {
    fn from(StrictFields { flags, segments }: StrictFields) -> Self {
        Sections { flags, segments }
    }
}

/// One section of a data set: items by key, each item's JSON read once into a string of its
/// own (which the item then keeps). A key given twice is refused (plain JSON parsing would
/// silently keep the last copy), and the error names it with its line.
struct Section(BTreeMap<String, Box<RawValue>>);

impl<'de> Deserialize<'de> for Section {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Items;

        impl<'de> Visitor<'de> for Items {
            type Value = Section;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of items by key")
            }

            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                let mut items = BTreeMap::new();
                while let Some((key, item)) = map.next_entry::<String, Box<RawValue>>()? {
                    if items.contains_key(&key) {
                        return Err(de::Error::custom(format!("the key {key:?} is given twice")));
                    }
                    items.insert(key, item);
                }
                Ok(Section(items))
            }
        }

        deserializer.deserialize_map(Items)
    }
}

#[derive(Deserialize)]
struct KeyField {
    key: Option<String>,
}

/// Checks and keeps every item of one section.
fn items(section: &str, raw: Option<Section>) -> Result<BTreeMap<String, Item>, DataError> {
    raw.map(|s| s.0)
        .unwrap_or_default()
        .into_iter()
        .map(|(key, raw)| {
            let json = String::from(Box::<str>::from(raw));
            let item = Item::from_json(key.as_str(), json)
                .map_err(|e| DataError::new(format!("{section} item {key:?} is invalid: {e}")))?;
            if let Ok(KeyField { key: Some(inner) }) = serde_json::from_str::<KeyField>(item.json())
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
    fn a_file_read_as_it_goes_is_the_file_parsed_whole() {
        let text = "\n  {\"flags\": {\"a\": {\"key\":\"a\", \"version\": 2}}, \"segments\": {}}\n";
        let read = DataSet::read_strict(std::io::BufReader::with_capacity(4, text.as_bytes()));
        assert_eq!(read.unwrap(), DataSet::parse_strict(text).unwrap());
        let read = |text: &str| {
            DataSet::read_strict(text.as_bytes())
                .unwrap_err()
                .to_string()
        };
        assert!(read("  [1]").starts_with("not a flag data file;"));
        assert!(read("").starts_with("not a flag data file;"));
        assert!(
            read(r#"{"flags": {}} trailing"#)
                .starts_with("not a flag data file (trailing characters")
        );
        assert_eq!(
            read(r#"{"flags":{"f":{"key":"f"}}}"#),
            r#"flags item "f" is invalid: item has no version"#
        );
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

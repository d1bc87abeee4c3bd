//! Flag data files: the shape LaunchDarkly's polling endpoint serves,
//! `{"flags": {KEY: FLAG, ...}, "segments": {KEY: SEGMENT, ...}}`.

use std::collections::BTreeMap;
use std::fmt;

use flagstore::{Collection, Item, Kind, sort_for_init};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::CliError;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DataFile<'a> {
    #[serde(borrow)]
    flags: Option<Section<'a>>,
    #[serde(borrow)]
    segments: Option<Section<'a>>,
}

/// One section of a data file: items by key. A key given twice is refused (plain JSON parsing
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

/// Reads and checks every item of a data file, so that nothing is written unless all of it is
/// good. Items keep their JSON exactly as in the file.
pub(crate) fn parse(text: &str) -> Result<Vec<Collection>, CliError> {
    let expected = r#"expected {"flags": {...}, "segments": {...}}"#;
    // Serde would also take a sequence for the struct; a data file is an object.
    if !text.trim_start().starts_with('{') {
        return Err(CliError::new(format!("not a flag data file; {expected}")));
    }
    let file: DataFile<'_> = serde_json::from_str(text)
        .map_err(|e| CliError::new(format!("not a flag data file ({e}); {expected}")))?;
    // Loading replaces everything: a file with neither section is far more likely a mistake.
    if file.flags.is_none() && file.segments.is_none() {
        return Err(CliError::new(format!(
            "the file has neither \"flags\" nor \"segments\"; {expected}"
        )));
    }
    let collection = |kind: Kind,
                      section: &str,
                      items: BTreeMap<String, &RawValue>|
     -> Result<Collection, CliError> {
        let items = items
            .into_iter()
            .map(|(key, raw)| {
                let item = Item::from_json(key.as_str(), raw.get()).map_err(|e| {
                    CliError::new(format!("{section} item {key:?} is invalid: {e}"))
                })?;
                if let Ok(KeyField { key: Some(inner) }) =
                    serde_json::from_str::<KeyField>(raw.get())
                    && inner != key
                    && !item.is_deleted()
                {
                    return Err(CliError::new(format!(
                        "{section} item {key:?} has the key {inner:?} inside"
                    )));
                }
                Ok(item)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Collection::new(kind, items))
    };
    Ok(sort_for_init(vec![
        collection(
            Kind::FEATURES,
            "flags",
            file.flags.map(|s| s.0).unwrap_or_default(),
        )?,
        collection(
            Kind::SEGMENTS,
            "segments",
            file.segments.map(|s| s.0).unwrap_or_default(),
        )?,
    ]))
}

/// The data file for these items: live items only (a data file has no tombstones), keys sorted,
/// each item's JSON exactly as stored.
pub(crate) fn render(flags: &[Item], segments: &[Item]) -> Result<String, CliError> {
    let section = |items: &[Item]| -> Result<BTreeMap<String, Box<RawValue>>, CliError> {
        items
            .iter()
            .filter(|i| !i.is_deleted())
            .map(|i| {
                let raw = RawValue::from_string(i.json().to_owned()).map_err(|e| {
                    CliError::new(format!("stored item {:?} is not JSON: {e}", i.key()))
                })?;
                Ok((i.key().to_owned(), raw))
            })
            .collect()
    };
    #[derive(serde::Serialize)]
    struct Out {
        flags: BTreeMap<String, Box<RawValue>>,
        segments: BTreeMap<String, Box<RawValue>>,
    }
    let out = Out {
        flags: section(flags)?,
        segments: section(segments)?,
    };
    serde_json::to_string(&out).map_err(|e| CliError::new(format!("could not write the data: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_item_bytes_and_orders_for_init() {
        let text = r#"{"segments": {"s": {"key":"s","version":1}},
                       "flags": {"b": {"key":"b", "version": 2, "prerequisites":[{"key":"a","variation":0}]},
                                 "a": {"key":"a","version":1, "name": "caf\u00e9"}}}"#;
        let data = parse(text).unwrap();
        assert_eq!(data[0].kind, Kind::SEGMENTS);
        let keys: Vec<_> = data[1].items.iter().map(Item::key).collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(
            data[1].items[0].json(),
            r#"{"key":"a","version":1, "name": "caf\u00e9"}"#
        );
        let dumped = render(&data[1].items, &data[0].items).unwrap();
        let again = parse(&dumped).unwrap();
        assert_eq!(again, data);
    }

    #[test]
    fn names_the_bad_item() {
        let err = |text: &str| parse(text).unwrap_err().to_string();
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
}

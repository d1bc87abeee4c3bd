//! LaunchDarkly's server-side streaming messages: `put` replaces everything, `patch` upserts one
//! item, `delete` records a tombstone. Only the envelope is parsed; items stay as received.

use std::fmt;

use flagstore::{Item, Kind};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::data::{DataError, DataSet, Embedded};
use crate::sse::Data;

/// What one event asks of the stores.
#[derive(Debug)]
pub(crate) enum Message {
    /// Replace everything with this data set.
    Put(DataSet),
    /// Upsert this item (a tombstone for a delete).
    Upsert(Kind, Item),
    /// Nothing: an event or path this version does not know, ignored as the SDKs ignore them.
    Ignored(String),
}

#[derive(Deserialize)]
struct Envelope<'a> {
    // Borrowed unless it holds escapes.
    #[serde(borrow, default)]
    path: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    version: Option<u64>,
}

/// The parts of a `put` event this reads: its path, and its data when the path is the root.
/// The data set is built as the event is read, never from a copy of the event's whole text.
struct Put {
    path: Option<String>,
    data: Option<DataSet>,
}

impl<'de> Deserialize<'de> for Put {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Fields;

        impl<'de> Visitor<'de> for Fields {
            type Value = Put;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"an object, {"path": "/", "data": {...}}"#)
            }

            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Put, M::Error> {
                let mut put = Put {
                    path: None,
                    data: None,
                };
                while let Some(field) = map.next_key::<String>()? {
                    match field.as_str() {
                        "path" => put.path = map.next_value()?,
                        // A put to another path is ignored: its data is not read as a data set.
                        "data" if put.path.as_deref().is_none_or(|path| path == "/") => {
                            put.data = map.next_value::<Option<Embedded>>()?.map(|e| e.0);
                        }
                        _ => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(put)
            }
        }

        deserializer.deserialize_map(Fields)
    }
}

/// [`decode`], with a put read on a blocking thread: a put of every flag takes a good part of
/// a second to parse (100,000 flags: about 0.6 s), which would hold up the other tasks of the
/// runtime's worker.
pub(crate) async fn read_event(name: &str, data: Data) -> Result<Message, DataError> {
    if name != "put" {
        return decode(name, data);
    }
    tokio::task::spawn_blocking(move || decode("put", data))
        .await
        .unwrap_or_else(|e| Err(DataError::new(format!("reading the put failed: {e}"))))
}

/// Reads one event. An error means the stream is corrupt and must be restarted.
pub(crate) fn decode(name: &str, data: Data) -> Result<Message, DataError> {
    if !matches!(name, "put" | "patch" | "delete") {
        return Ok(Message::Ignored(format!("event {name:?}")));
    }
    if name == "put" {
        // Read from the event's blocks as they are parsed, each given back once read: a put of
        // every flag is as big as the data set, which would otherwise be held twice.
        let mut deserializer = serde_json::Deserializer::from_reader(data.reader());
        // One error for the envelope's shape and the items' own (a missing version, a key
        // given twice), which are found as the data is read.
        let put = Put::deserialize(&mut deserializer)
            .and_then(|put| deserializer.end().map(|()| put))
            .map_err(|e| {
                DataError::new(format!("a put event does not hold a valid data set: {e}"))
            })?;
        let path = put.path.as_deref().unwrap_or("/");
        if path != "/" {
            return Ok(Message::Ignored(format!("put to {path:?}")));
        }
        let data = put
            .data
            .ok_or_else(|| DataError::new("a put event has no data"))?;
        return Ok(Message::Put(data));
    }
    let text = data
        .into_text()
        .map_err(|_| DataError::new(format!("a {name} event is not UTF-8")))?;
    let envelope: Envelope<'_> = serde_json::from_str(&text).map_err(|e| {
        DataError::new(format!(
            "a {name} event is not JSON of the expected shape: {e}"
        ))
    })?;
    let path = envelope.path.as_deref().unwrap_or("/");
    match name {
        "patch" => {
            let Some((kind, key)) = item_path(path) else {
                return Ok(Message::Ignored(format!("patch of {path:?}")));
            };
            let data = envelope
                .data
                .ok_or_else(|| DataError::new(format!("the patch of {path:?} has no data")))?;
            let item = Item::from_json(key, data.get())
                .map_err(|e| DataError::new(format!("the patch of {path:?} is invalid: {e}")))?;
            Ok(Message::Upsert(kind, item))
        }
        _ => {
            let Some((kind, key)) = item_path(path) else {
                return Ok(Message::Ignored(format!("delete of {path:?}")));
            };
            let version = envelope
                .version
                .ok_or_else(|| DataError::new(format!("the delete of {path:?} has no version")))?;
            Ok(Message::Upsert(kind, tombstone(key, version)))
        }
    }
}

/// `/flags/KEY` or `/segments/KEY`.
fn item_path(path: &str) -> Option<(Kind, &str)> {
    let (kind, key) = if let Some(key) = path.strip_prefix("/flags/") {
        (Kind::FEATURES, key)
    } else {
        (Kind::SEGMENTS, path.strip_prefix("/segments/")?)
    };
    (!key.is_empty()).then_some((kind, key))
}

/// The tombstone the SDKs write for a streamed delete: `{"key":KEY,"version":N,"deleted":true}`.
fn tombstone(key: &str, version: u64) -> Item {
    // A string always serializes; the fallback is never taken.
    let quoted = serde_json::to_string(key).unwrap_or_else(|_| "\"\"".to_owned());
    let json = format!(r#"{{"key":{quoted},"version":{version},"deleted":true}}"#);
    Item::from_json(key, json).unwrap_or_else(|_| Item::tombstone(key, version))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    fn decode_event(name: &str, data: &str) -> Result<Message, DataError> {
        decode(name, Data::from(data))
    }

    #[test]
    fn put_patch_and_delete() {
        let put = decode_event(
            "put",
            r#"{"path":"/","data":{"flags":{"f":{"key":"f","version":1,"new":[1, 2]}},"segments":{}}}"#,
        )
        .unwrap();
        let Message::Put(data) = put else {
            panic!("{put:?}")
        };
        assert_eq!(
            data.get(&Kind::FEATURES, "f").unwrap().json(),
            r#"{"key":"f","version":1,"new":[1, 2]}"#
        );

        let patch = decode_event(
            "patch",
            r#"{"path":"/segments/s","data":{"key":"s","version":4}}"#,
        )
        .unwrap();
        let Message::Upsert(kind, item) = patch else {
            panic!("{patch:?}")
        };
        assert_eq!((kind, item.key(), item.version()), (Kind::SEGMENTS, "s", 4));
        assert_eq!(item.json(), r#"{"key":"s","version":4}"#);

        let delete = decode_event("delete", r#"{"path":"/flags/a\"b","version":7}"#).unwrap();
        let Message::Upsert(kind, item) = delete else {
            panic!("{delete:?}")
        };
        assert_eq!(
            (kind, item.key(), item.version()),
            (Kind::FEATURES, "a\"b", 7)
        );
        assert!(item.is_deleted());
        assert_eq!(item.json(), r#"{"key":"a\"b","version":7,"deleted":true}"#);
    }

    #[test]
    fn a_put_is_read_as_the_data_set_it_carries() {
        let flags: Vec<String> = (0..40_000)
            .map(|i| {
                format!(r#""f{i}":{{"key":"f{i}","version":{i},"on":true,"note":"\u00e9 {i}"}}"#)
            })
            .collect();
        let data = format!(
            r#"{{"flags":{{{}}},"segments":{{}},"new":[1]}}"#,
            flags.join(",")
        );
        // Many blocks' worth (the data first, the path after it), through the stream's parser in
        // small chunks: the same data set as parsing the data's text.
        let put = format!(r#"{{"data":{data},"path":"/"}}"#);
        assert!(put.len() > 2 << 20);
        let mut parser = crate::sse::Parser::default();
        let mut out = Vec::new();
        let event = format!("event: put\ndata: {put}\n\n");
        for chunk in event.as_bytes().chunks(1000) {
            parser.push(chunk, &mut out).unwrap();
        }
        let [crate::sse::Line::Event(event)] = &mut out[..] else {
            panic!("{out:?}")
        };
        let Ok(Message::Put(read)) = decode("put", std::mem::take(&mut event.data)) else {
            panic!("not a put")
        };
        assert!(read == DataSet::parse(&data).unwrap());
        assert_eq!(read.live_count(&Kind::FEATURES), 40_000);
        assert_eq!(
            read.get(&Kind::FEATURES, "f7").unwrap().json(),
            r#"{"key":"f7","version":7,"on":true,"note":"\u00e9 7"}"#
        );
        // Bytes that are not UTF-8 inside a put read from blocks: refused, as a put's text was.
        let mut bad = Data::default();
        bad.push(br#"{"path":"/","data":{"flags":{"f":{"key":"f","version":1,"x":""#);
        bad.push(b"\xff\xfe");
        bad.push(br#""}}}}"#);
        assert!(decode("put", bad).is_err());
        // Null sections are empty ones, as in a data file.
        let Ok(Message::Put(empty)) =
            decode_event("put", r#"{"path":"/","data":{"flags":null,"segments":{}}}"#)
        else {
            panic!("not a put")
        };
        assert_eq!(empty.live_count(&Kind::FEATURES), 0);
    }

    #[test]
    fn unknown_events_and_paths_are_ignored() {
        for (name, data) in [
            ("ping", "{}"),
            ("patch", r#"{"path":"/other/x","data":{"version":1}}"#),
            ("delete", r#"{"path":"/flags/","version":1}"#),
            ("put", r#"{"path":"/flags","data":{}}"#),
            // Another path's data is not a data set, and is not read as one.
            (
                "put",
                r#"{"path":"/flags/f","data":{"key":"f","version":1}}"#,
            ),
            ("put", r#"{"path":"/flags/f","data":[1]}"#),
        ] {
            assert!(
                matches!(decode_event(name, data), Ok(Message::Ignored(_))),
                "{name} {data}"
            );
        }
    }

    #[test]
    fn malformed_events_are_errors() {
        for (name, data) in [
            ("put", "{"),
            ("put", r#"{"path":"/"}"#),
            ("put", r#"{"path":"/","data":null}"#),
            ("put", r#"{"path":"/","data":[{}, {}]}"#),
            ("put", r#"{"path":"/","data":{"flags":{},"flags":{}}}"#),
            (
                "put",
                r#"{"path":"/","data":{"flags":{"f":{"key":"f","version":1},"f":{"key":"f","version":2}}}}"#,
            ),
            (
                "put",
                r#"{"path":"/","data":{"flags":{"f":{"key":"g","version":1}}}}"#,
            ),
            ("put", r#"{"path":"/","data":{}} trailing"#),
            (
                "put",
                "{\"path\":\"/\",\"data\":{\"flags\":{\"f\":{\"key\":\"\u{0}\",\"version\":1}}}}",
            ),
            ("put", r#"{"path":"/","data":{"flags":{"f":{"key":"f"}}}}"#),
            ("patch", r#"{"path":"/flags/f","data":{"key":"f"}}"#),
            ("patch", r#"{"path":"/flags/f"}"#),
            ("delete", r#"{"path":"/flags/f"}"#),
            ("delete", r#"{"path":"/flags/f","version":-1}"#),
        ] {
            assert!(decode_event(name, data).is_err(), "{name} {data}");
        }
    }
}

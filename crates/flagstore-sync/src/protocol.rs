//! LaunchDarkly's server-side streaming messages: `put` replaces everything, `patch` upserts one
//! item, `delete` records a tombstone. Only the envelope is parsed; items stay as received.

use flagstore::{Item, Kind};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::data::{DataError, DataSet};
use crate::sse::Event;

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

/// Reads one event. An error means the stream is corrupt and must be restarted.
pub(crate) fn decode(event: &Event) -> Result<Message, DataError> {
    let name = event.name.as_str();
    if !matches!(name, "put" | "patch" | "delete") {
        return Ok(Message::Ignored(format!("event {name:?}")));
    }
    let envelope: Envelope<'_> = serde_json::from_str(&event.data).map_err(|e| {
        DataError::new(format!(
            "a {name} event is not JSON of the expected shape: {e}"
        ))
    })?;
    let path = envelope.path.as_deref().unwrap_or("/");
    match name {
        "put" => {
            if path != "/" {
                return Ok(Message::Ignored(format!("put to {path:?}")));
            }
            let data = envelope
                .data
                .ok_or_else(|| DataError::new("a put event has no data"))?;
            Ok(Message::Put(DataSet::parse(data.get())?))
        }
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
        decode(&Event {
            name: name.to_owned(),
            data: data.to_owned(),
        })
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
    fn unknown_events_and_paths_are_ignored() {
        for (name, data) in [
            ("ping", "{}"),
            ("patch", r#"{"path":"/other/x","data":{"version":1}}"#),
            ("delete", r#"{"path":"/flags/","version":1}"#),
            ("put", r#"{"path":"/flags","data":{}}"#),
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

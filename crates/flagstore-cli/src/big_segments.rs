//! `flagstore big-segments`: load a membership file into a store's Big Segments data, look up one
//! context, and the Big Segments line of `flagstore status`.
//!
//! A membership file maps segment refs (`KEY.gGENERATION`, as the SDKs name a big segment) to
//! the context keys it includes and excludes:
//!
//! ```json
//! {
//!   "beta-testers.g2": {"included": ["alice", "bob"], "excluded": ["mallory"]},
//!   "enterprise.g1": {"included": ["carol"]}
//! }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use flagstore::big_segments::{
    BigSegmentMembership, BigSegmentMetadata, DEFAULT_STALE_AFTER, DynBigSegmentStore, context_hash,
};
use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Value, json};

use crate::CliError;

/// The file: lists by segment ref, no ref twice, every ref of the form `KEY.gN`.
struct MembershipFile(BTreeMap<String, Lists>);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Lists {
    #[serde(default)]
    included: Keys,
    #[serde(default)]
    excluded: Keys,
}

/// Context keys, each a string, none twice.
#[derive(Default)]
struct Keys(BTreeSet<String>);

impl<'de> Deserialize<'de> for Keys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct List;
        impl<'de> Visitor<'de> for List {
            type Value = Keys;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of context keys (strings)")
            }
            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Keys, S::Error> {
                let mut keys = BTreeSet::new();
                while let Some(key) = seq.next_element::<String>()? {
                    if !keys.insert(key.clone()) {
                        return Err(de::Error::custom(format!(
                            "the context key {key:?} is listed twice"
                        )));
                    }
                }
                Ok(Keys(keys))
            }
        }
        deserializer.deserialize_seq(List)
    }
}

impl<'de> Deserialize<'de> for MembershipFile {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Segments;
        impl<'de> Visitor<'de> for Segments {
            type Value = MembershipFile;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"an object of segment refs: {"KEY.gN": {"included": [...], "excluded": [...]}}"#)
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<MembershipFile, M::Error> {
                let mut segments = BTreeMap::new();
                while let Some(segment_ref) = map.next_key::<String>()? {
                    if !is_segment_ref(&segment_ref) {
                        return Err(de::Error::custom(format!(
                            "{segment_ref:?} is not a segment ref: write KEY.gGENERATION, the segment's key and its generation (e.g. \"beta-testers.g2\"), as the SDKs look it up"
                        )));
                    }
                    if segments.contains_key(&segment_ref) {
                        return Err(de::Error::custom(format!(
                            "the segment {segment_ref:?} is given twice"
                        )));
                    }
                    let lists: Lists = map.next_value()?;
                    segments.insert(segment_ref, lists);
                }
                Ok(MembershipFile(segments))
            }
        }
        deserializer.deserialize_map(Segments)
    }
}

fn is_segment_ref(text: &str) -> bool {
    text.rsplit_once(".g").is_some_and(|(key, generation)| {
        !key.is_empty() && !generation.is_empty() && generation.bytes().all(|b| b.is_ascii_digit())
    })
}

/// What a membership file holds: each context's membership, by context hash.
pub(crate) struct Parsed {
    pub(crate) segments: usize,
    pub(crate) memberships: Vec<(String, BigSegmentMembership)>,
}

/// Reads and checks a whole membership file; serde's errors name the line and column.
pub(crate) fn parse(text: &str) -> Result<Parsed, CliError> {
    let file: MembershipFile = serde_json::from_str(text)
        .map_err(|e| CliError::new(format!("not a Big Segments membership file: {e}")))?;
    let mut by_context: BTreeMap<&str, (Vec<&str>, Vec<&str>)> = BTreeMap::new();
    for (segment_ref, lists) in &file.0 {
        for key in &lists.included.0 {
            by_context.entry(key).or_default().0.push(segment_ref);
        }
        for key in &lists.excluded.0 {
            by_context.entry(key).or_default().1.push(segment_ref);
        }
    }
    let memberships = by_context
        .into_iter()
        .map(|(key, (included, excluded))| {
            (
                context_hash(key),
                BigSegmentMembership::new(included, excluded),
            )
        })
        .collect();
    Ok(Parsed {
        segments: file.0.len(),
        memberships,
    })
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Replaces the store's Big Segments data with the file's, then marks it synchronized now.
pub(crate) async fn load(store: &DynBigSegmentStore, text: &str) -> Result<(), CliError> {
    let parsed = parse(text)?;
    store.clear_big_segments().await?;
    store.set_memberships(&parsed.memberships).await?;
    store.set_synchronized_on(now_millis()).await?;
    println!(
        "loaded {} segments, {} contexts into {store}",
        parsed.segments,
        parsed.memberships.len()
    );
    Ok(())
}

/// The synchronization time as the status shows it.
pub(crate) fn describe(metadata: &BigSegmentMetadata) -> Value {
    let stale = metadata.is_stale(DEFAULT_STALE_AFTER);
    json!({
        "synchronizedOn": metadata.last_synchronized,
        "secondsAgo": metadata.last_synchronized.map(|t| now_millis().saturating_sub(t) / 1000),
        "stale": stale,
    })
}

/// `described` as one line of text.
pub(crate) fn describe_text(described: &Value) -> String {
    let freshness = if described["stale"] == json!(true) {
        format!("STALE (older than {} s)", DEFAULT_STALE_AFTER.as_secs())
    } else {
        "up to date".to_owned()
    };
    if let Some(reason) = described["unreadable"].as_str() {
        return format!("UNREADABLE ({reason})");
    }
    match described["synchronizedOn"].as_u64() {
        None => "never synchronized (STALE)".to_owned(),
        Some(at) => format!(
            "synchronized at {at} (Unix ms, {} s ago): {freshness}",
            described["secondsAgo"]
        ),
    }
}

/// The data's freshness and the synchronizer's cursor.
pub(crate) async fn status(store: &DynBigSegmentStore, json_output: bool) -> Result<(), CliError> {
    let mut described = describe(&store.get_metadata().await?);
    let cursor = store.get_cursor().await?;
    if json_output {
        described["cursor"] = json!(cursor);
        println!("{described}");
        return Ok(());
    }
    println!("big segments:  {}", describe_text(&described));
    match cursor {
        Some(cursor) => println!("cursor:        {cursor} (the last patch applied)"),
        None => println!("cursor:        none (never synchronized from LaunchDarkly)"),
    }
    Ok(())
}

/// One context's memberships and the data's freshness.
pub(crate) async fn get(
    store: &DynBigSegmentStore,
    context_key: &str,
    json_output: bool,
) -> Result<(), CliError> {
    let hash = context_hash(context_key);
    let membership = store.get_membership(&hash).await?.unwrap_or_default();
    let metadata = describe(&store.get_metadata().await?);
    let included: Vec<&str> = membership.included().collect();
    let excluded: Vec<&str> = membership.excluded().collect();
    if json_output {
        println!(
            "{}",
            json!({
                "contextKey": context_key, "contextHash": hash,
                "included": included, "excluded": excluded, "metadata": metadata,
            })
        );
        return Ok(());
    }
    let list = |refs: &[&str]| {
        if refs.is_empty() {
            "(none)".to_owned()
        } else {
            refs.join(", ")
        }
    };
    println!("context key:   {context_key}");
    println!("context hash:  {hash}");
    println!("included in:   {}", list(&included));
    println!("excluded from: {}", list(&excluded));
    println!("big segments:  {}", describe_text(&metadata));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> String {
        parse(text).err().expect("refused").to_string()
    }

    #[test]
    fn a_file_inverts_to_memberships_by_context() {
        let parsed = parse(
            r#"{"a.g1": {"included": ["alice", "bob"], "excluded": ["carol"]}, "b.g2": {"included": ["alice"]}}"#,
        )
        .unwrap();
        assert_eq!(parsed.segments, 2);
        let alice = parsed
            .memberships
            .iter()
            .find(|(h, _)| *h == context_hash("alice"))
            .unwrap();
        assert_eq!(
            alice.1,
            BigSegmentMembership::new(["a.g1", "b.g2"], [] as [&str; 0])
        );
        assert_eq!(parsed.memberships.len(), 3);
    }

    #[test]
    fn bad_files_are_refused_with_the_line() {
        let unknown = refused("{\n\"a.g1\": {\"included\": [], \"members\": []}\n}");
        assert!(
            unknown.contains("unknown field `members`") && unknown.contains("line 2"),
            "{unknown}"
        );
        let twice = refused("{\n\"a.g1\": {},\n\"a.g1\": {}\n}");
        assert!(
            twice.contains("given twice") && twice.contains("line 3"),
            "{twice}"
        );
        let number = refused("{\"a.g1\": {\n\"included\": [\"x\", 5]}}");
        assert!(
            number.contains("invalid type: integer `5`") && number.contains("line 2"),
            "{number}"
        );
        let listed = refused("{\"a.g1\": {\"included\": [\"x\", \"x\"]}}");
        assert!(listed.contains("listed twice"), "{listed}");
        let no_generation = refused("{\"beta\": {}}");
        assert!(no_generation.contains("KEY.gGENERATION"), "{no_generation}");
        assert!(refused("[]").contains("an object of segment refs"));
    }
}

//! Items: one flag or segment as stored, with the two fields every store must understand.

use std::fmt;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

mod scan;

/// The longest key kept inside the item rather than in an allocation of its own: most flag and
/// segment keys fit, and the item's record is no larger for it (its allocation is the same size
/// class either way).
const INLINE_KEY: usize = 22;

/// An item's storage key: inline when short, which saves a heap allocation (about 32 bytes) per
/// item in every cache and data set.
#[derive(Clone, PartialEq, Eq)]
enum StorageKey {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Heap(Box<str>),
}

impl StorageKey {
    fn new(key: String) -> StorageKey {
        match u8::try_from(key.len()) {
            Ok(len) if key.len() <= INLINE_KEY => {
                let mut bytes = [0; INLINE_KEY];
                bytes[..key.len()].copy_from_slice(key.as_bytes());
                StorageKey::Inline { len, bytes }
            }
            // Boxed: no spare capacity kept.
            _ => StorageKey::Heap(key.into_boxed_str()),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            // Always UTF-8: copied from a `str` whole. Checking costs a few nanoseconds on a
            // short key and needs no `unsafe`.
            StorageKey::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            StorageKey::Heap(key) => key,
        }
    }
}

/// The key other SDKs (Go, Rust) give a tombstone's JSON; readers must not rely on it.
pub const DELETED_PLACEHOLDER_KEY: &str = "$deleted";

/// One stored item: a flag or segment as JSON, or a tombstone recording that it was deleted.
///
/// The JSON is opaque to stores except for its top-level `version` and `deleted` fields, which
/// [`Item::from_json`] reads without building the whole flag. Clones are cheap: an item is one
/// shared allocation, and the strings it was built from are kept, not copied.
///
/// ```
/// use flagstore::Item;
///
/// let flag = Item::from_json("my-flag", r#"{"key":"my-flag","version":3,"on":true}"#)?;
/// assert_eq!((flag.version(), flag.is_deleted()), (3, false));
///
/// // Node writes tombstones without a key; they are tombstones all the same.
/// let gone = Item::from_json("old-flag", r#"{"version":9,"deleted":true}"#)?;
/// assert!(gone.is_deleted());
/// # Ok::<(), flagstore::error::ItemError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Item(Arc<Parts>);

// One allocation per item beside its JSON: caches hand out clones of items on every hit, and a
// whole kind of them is a vector of pointers.
#[derive(Clone, PartialEq, Eq)]
struct Parts {
    key: StorageKey,
    version: u64,
    deleted: bool,
    json: Box<str>,
}

impl Item {
    /// An item from its storage key and serialized JSON, reading `version` and `deleted` from the
    /// JSON. The JSON is kept exactly as given, never re-serialized; a `String` is kept without
    /// a copy.
    ///
    /// Accepts every tombstone shape the LaunchDarkly SDKs write (`"key":"$deleted"`, the real key,
    /// or no key at all; compact or with spaces). A `version` written as an integral float (`3.0`)
    /// is accepted; a missing, negative, fractional or non-numeric one is an error.
    pub fn from_json(key: impl Into<String>, json: impl Into<String>) -> Result<Item, ItemError> {
        let json = json.into();
        let header = Header::parse(&json)?;
        Ok(Item::new(key.into(), header, json))
    }

    /// Like [`from_json`](Self::from_json), for JSON as bytes, the way most database clients
    /// hand values back: bytes that are not UTF-8 are [`ItemError::InvalidJson`], like any
    /// other value that is not JSON. The bytes are kept without a copy.
    ///
    /// ```
    /// use flagstore::Item;
    ///
    /// let flag = Item::from_json_bytes("my-flag", br#"{"version":2}"#.to_vec())?;
    /// assert_eq!(flag.version(), 2);
    /// assert!(Item::from_json_bytes("bad", vec![b'{', 0xff, b'}']).is_err());
    /// # Ok::<(), flagstore::error::ItemError>(())
    /// ```
    pub fn from_json_bytes(key: impl Into<String>, json: Vec<u8>) -> Result<Item, ItemError> {
        Item::from_json(key, utf8_json(json)?)
    }

    /// Like [`from_json`](Self::from_json), giving the key back with the error: what a store
    /// reading many values needs to report the bad ones, without copying every key.
    pub(crate) fn from_stored(key: String, json: String) -> Result<Item, (String, ItemError)> {
        match Header::parse(&json) {
            Ok(header) => Ok(Item::new(key, header, json)),
            Err(error) => Err((key, error)),
        }
    }

    /// An item from the parts [`check_stored_bytes`] found readable.
    pub(crate) fn from_checked(key: String, json: String, header: Header) -> Item {
        Item::new(key, header, json)
    }

    fn new(key: String, header: Header, json: String) -> Item {
        Item(Arc::new(Parts {
            key: StorageKey::new(key),
            version: header.version,
            deleted: header.deleted,
            json: json.into_boxed_str(),
        }))
    }

    /// A tombstone: the record that `key` was deleted at `version`. Its JSON is
    /// `{"key":"$deleted","version":N,"deleted":true}`, the shape the Go and Rust SDKs write and
    /// every SDK reads.
    pub fn tombstone(key: impl Into<String>, version: u64) -> Item {
        let json =
            format!(r#"{{"key":"{DELETED_PLACEHOLDER_KEY}","version":{version},"deleted":true}}"#);
        let header = Header {
            version,
            deleted: true,
        };
        Item::new(key.into(), header, json)
    }

    /// The same item with the version its database records beside the JSON.
    ///
    /// For backends that keep the version in a field of its own (DynamoDB's `version`
    /// attribute): that field is what their conditional writes compare, so it is the version
    /// readers must see too, as the other SDKs' stores do. The JSON is unchanged.
    #[must_use = "with_version returns a new item; the original is consumed"]
    pub fn with_version(mut self, version: u64) -> Item {
        // A fresh item (the usual case) is changed in place; a shared one is copied first.
        Arc::make_mut(&mut self.0).version = version;
        self
    }

    /// The storage key (the hash field, sort key or key path segment), which is not necessarily
    /// the `key` inside the JSON: tombstones often carry `$deleted` or no key at all.
    pub fn key(&self) -> &str {
        self.0.key.as_str()
    }

    /// The item's version; a write only replaces an item whose version is lower.
    pub fn version(&self) -> u64 {
        self.0.version
    }

    /// Whether this is a tombstone.
    pub fn is_deleted(&self) -> bool {
        self.0.deleted
    }

    /// The serialized JSON, exactly as stored.
    pub fn json(&self) -> &str {
        &self.0.json
    }

    /// The JSON's length in bytes.
    pub fn len(&self) -> usize {
        self.0.json.len()
    }

    /// Whether the JSON is empty (it never is for an item built by this crate).
    pub fn is_empty(&self) -> bool {
        self.0.json.is_empty()
    }
}

/// Decodes a stored `(key, json)` pair of bytes in place and reads the JSON's header, or says
/// why the pair is unreadable. Allocates nothing for a readable pair: it runs on other threads
/// for a large read, and an allocation made there would stay in that thread's allocator arena.
///
/// A key that is not UTF-8 cannot name an item: it is reported (lossily decoded) as a malformed
/// record.
pub(crate) fn check_stored_bytes(
    key: Vec<u8>,
    json: Vec<u8>,
) -> ((String, String), Result<Header, ItemError>) {
    let key = match String::from_utf8(key) {
        Ok(key) => key,
        Err(e) => {
            let key = String::from_utf8_lossy(e.as_bytes()).into_owned();
            let error = ItemError::MalformedRecord("the key is not UTF-8".to_owned());
            return ((key, String::new()), Err(error));
        }
    };
    match utf8_json(json) {
        Ok(json) => {
            let header = Header::parse(&json);
            ((key, json), header)
        }
        Err(error) => ((key, String::new()), Err(error)),
    }
}

/// `json` as a string, or an error naming where its UTF-8 breaks. (serde_json cannot be asked:
/// skipping a string, as validation into `IgnoredAny` does, does not check its UTF-8.)
fn utf8_json(json: Vec<u8>) -> Result<String, ItemError> {
    String::from_utf8(json).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        let error = <serde_json::Error as serde::de::Error>::custom(format!(
            "the value is not UTF-8 (from byte {at})"
        ));
        ItemError::InvalidJson(Arc::new(error))
    })
}

impl fmt::Debug for Item {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Flags can be hundreds of kilobytes: show the shape, not the body.
        f.debug_struct("Item")
            .field("key", &self.key())
            .field("version", &self.version())
            .field("deleted", &self.is_deleted())
            .field("json_bytes", &self.len())
            .finish()
    }
}

/// Why item JSON could not be read.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ItemError {
    /// Not a JSON object (malformed, truncated, or another JSON type).
    #[error("item is not a JSON object")]
    InvalidJson(#[source] Arc<serde_json::Error>),
    /// The object has no top-level `version`.
    #[error("item has no version")]
    MissingVersion,
    /// The `version` is not a non-negative integer.
    #[error("item version {0} is not a non-negative integer")]
    InvalidVersion(String),
    /// The `deleted` field is neither a boolean nor null.
    #[error("item field \"deleted\" is {0}, not a boolean")]
    InvalidDeleted(String),
    /// The database record around the JSON is malformed (an attribute missing or mistyped).
    #[error("stored record is malformed: {0}")]
    MalformedRecord(String),
    /// The version is larger than the database can store (SQLite's integers are signed 64-bit).
    #[error("item version {version} is over the largest this database stores, {max}")]
    #[non_exhaustive]
    VersionOutOfRange {
        /// The item's version.
        version: u64,
        /// The largest version the database stores.
        max: u64,
    },
}

impl ItemError {
    /// An item whose version is over `max`, the largest the database stores.
    pub fn version_out_of_range(version: u64, max: u64) -> ItemError {
        ItemError::VersionOutOfRange { version, max }
    }
}

/// The two top-level fields stores care about, for the serde_json path: deserializing into this
/// skips every other field without allocating.
#[derive(Deserialize)]
struct RawHeader {
    #[serde(default)]
    version: Option<Value>,
    #[serde(default)]
    deleted: Option<Value>,
}

pub(crate) struct Header {
    version: u64,
    deleted: bool,
}

/// Largest integer an IEEE double holds exactly; an integral float beyond it is not a version.
const MAX_EXACT_F64: f64 = 9_007_199_254_740_992.0;

impl Header {
    fn parse(json: &str) -> Result<Header, ItemError> {
        match scan::object_fields(json).and_then(Header::from_fields) {
            Some(header) => Ok(header),
            // Invalid, unusual, or a field to report: serde_json decides and explains.
            None => Header::parse_with_serde(json),
        }
    }

    /// The header from the fast scan's raw fields, when both are in their usual form: a plain
    /// integer version and a literal `deleted`.
    fn from_fields(fields: scan::Fields<'_>) -> Option<Header> {
        let version = fields.version?;
        // Twenty digits may overflow; leave those to the general path.
        if version.len() > 19 || !version.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let deleted = match fields.deleted {
            None | Some("false" | "null") => false,
            Some("true") => true,
            Some(_) => return None,
        };
        Some(Header {
            version: version.parse().ok()?,
            deleted,
        })
    }

    fn parse_with_serde(json: &str) -> Result<Header, ItemError> {
        // Serde would also accept the struct's sequence form (`[1, true]`); an item is an object.
        if !json.trim_start().starts_with('{') {
            let not_object =
                <serde_json::Error as serde::de::Error>::custom("expected a JSON object");
            return Err(ItemError::InvalidJson(Arc::new(not_object)));
        }
        let raw: RawHeader =
            serde_json::from_str(json).map_err(|e| ItemError::InvalidJson(Arc::new(e)))?;
        let version = match raw.version {
            None | Some(Value::Null) => return Err(ItemError::MissingVersion),
            Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
                (Some(v), _) => v,
                (None, Some(f)) if f >= 0.0 && f.fract() == 0.0 && f <= MAX_EXACT_F64 => f as u64,
                _ => return Err(ItemError::InvalidVersion(n.to_string())),
            },
            Some(other) => return Err(ItemError::InvalidVersion(other.to_string())),
        };
        let deleted = match raw.deleted {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => b,
            Some(other) => return Err(ItemError::InvalidDeleted(other.to_string())),
        };
        Ok(Header { version, deleted })
    }
}

/// The fast path's contract on one input, for the fuzzer, its corpus and the tests: whatever the
/// scan reads, serde_json reads the same, and an item read from these bytes gets the header (or
/// the refusal) that serde_json alone would give. Panics, naming the input, on a disagreement.
#[cfg(any(test, feature = "testing"))]
#[allow(clippy::panic)]
pub(crate) fn assert_fast_path_agrees(input: &[u8]) {
    let Ok(json) = std::str::from_utf8(input) else {
        // Bytes that are not UTF-8 are never an item, on any path.
        let checked = check_stored_bytes(b"k".to_vec(), input.to_vec()).1;
        if Item::from_json_bytes("k", input.to_vec()).is_ok() || checked.is_ok() {
            panic!("accepted bytes that are not UTF-8: {input:?}");
        }
        return;
    };
    if !scan::agrees_with_serde(json) {
        panic!("the scan read other fields than serde_json: {json:?}");
    }
    let fast = Header::parse(json).map(|h| (h.version, h.deleted));
    let serde = Header::parse_with_serde(json).map(|h| (h.version, h.deleted));
    match (&fast, &serde) {
        (Ok(a), Ok(b)) if a == b => {}
        (Err(_), Err(_)) => {}
        _ => panic!("fast path {fast:?}, serde_json {serde:?}: {json:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> Result<(u64, bool), ItemError> {
        Item::from_json("k", json).map(|i| (i.version(), i.is_deleted()))
    }

    /// Keys up to the inline length and past it, ASCII and not, come back byte for byte.
    #[test]
    fn keys_short_and_long_come_back_as_given() {
        let keys = [
            String::new(),
            "a".repeat(INLINE_KEY),
            "a".repeat(INLINE_KEY + 1),
            format!("{}é", "a".repeat(INLINE_KEY - 2)),
            format!("{}é", "a".repeat(INLINE_KEY - 1)),
            "clé-ünïcode".to_owned(),
            "x".repeat(300),
        ];
        for key in keys {
            let item = Item::from_json(key.as_str(), r#"{"version":1}"#).unwrap();
            assert_eq!(item.key(), key);
            assert_eq!(item.clone(), item);
            assert_ne!(
                item,
                Item::from_json(format!("{key}!"), r#"{"version":1}"#).unwrap()
            );
        }
    }

    /// The fuzzer's corpus (`fuzz/corpus/item_json`, minimized after each long run), replayed
    /// on every test run: what the fuzzer once found stays checked.
    #[test]
    fn the_fuzz_corpus_reads_as_serde_json_reads_it() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/item_json");
        let mut replayed = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let input = std::fs::read(entry.unwrap().path()).unwrap();
            assert_fast_path_agrees(&input);
            replayed += 1;
        }
        assert!(
            replayed >= 30,
            "only {replayed} inputs in {}",
            dir.display()
        );
    }

    #[test]
    fn reads_every_sdks_tombstone_shape() {
        let shapes = [
            r#"{"key":"$deleted","version":7,"deleted":true,"on":false,"variations":[]}"#,
            r#"{"key": "k", "version": 7, "deleted": true}"#,
            r#"{"version":7,"deleted":true}"#,
            "{\n  \"deleted\" : true ,\n  \"version\" : 7\n}",
        ];
        for shape in shapes {
            assert_eq!(read(shape).unwrap(), (7, true), "{shape}");
        }
    }

    #[test]
    fn reads_only_top_level_fields() {
        let json = r#"{"key":"f","rules":[{"version":99,"deleted":true}],"version":4,
                       "prerequisites":[{"key":"p","variation":1}],"deleted":false}"#;
        assert_eq!(read(json).unwrap(), (4, false));
    }

    #[test]
    fn keeps_json_byte_for_byte() {
        let json = r#"{"key":"caf\u00e9","version":1.0,"weight":1.0,"name":"café"}"#;
        let item = Item::from_json("café", json).unwrap();
        assert_eq!(item.json(), json);
        assert_eq!(item.version(), 1);
    }

    #[test]
    fn null_deleted_means_live() {
        assert_eq!(read(r#"{"version":2,"deleted":null}"#).unwrap(), (2, false));
    }

    #[test]
    fn rejects_bad_input_with_typed_errors() {
        assert!(matches!(read("not json"), Err(ItemError::InvalidJson(_))));
        assert!(matches!(read(""), Err(ItemError::InvalidJson(_))));
        assert!(matches!(read("[1,2]"), Err(ItemError::InvalidJson(_))));
        assert!(matches!(
            read(r#"{"version":1"#),
            Err(ItemError::InvalidJson(_))
        ));
        assert!(matches!(
            read(r#"{"key":"x"}"#),
            Err(ItemError::MissingVersion)
        ));
        assert!(matches!(
            read(r#"{"version":null}"#),
            Err(ItemError::MissingVersion)
        ));
        assert!(
            matches!(read(r#"{"version":-1}"#), Err(ItemError::InvalidVersion(v)) if v == "-1")
        );
        assert!(matches!(
            read(r#"{"version":1.5}"#),
            Err(ItemError::InvalidVersion(_))
        ));
        assert!(matches!(
            read(r#"{"version":"3"}"#),
            Err(ItemError::InvalidVersion(_))
        ));
        assert!(matches!(
            read(r#"{"version":1e300}"#),
            Err(ItemError::InvalidVersion(_))
        ));
        assert!(matches!(
            read(r#"{"version":1,"deleted":"yes"}"#),
            Err(ItemError::InvalidDeleted(_))
        ));
        assert!(matches!(
            read(r#"{"version":1,"version":2}"#),
            Err(ItemError::InvalidJson(_))
        ));
    }

    #[test]
    fn tombstone_reads_back_as_itself() {
        let t = Item::tombstone("gone", 12);
        assert_eq!(
            t.json(),
            r#"{"key":"$deleted","version":12,"deleted":true}"#
        );
        let back = Item::from_json("gone", t.json()).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn debug_hides_the_body() {
        let item = Item::from_json("k", r#"{"version":1,"secret":"s3cr3t"}"#).unwrap();
        assert!(!format!("{item:?}").contains("s3cr3t"));
    }
}

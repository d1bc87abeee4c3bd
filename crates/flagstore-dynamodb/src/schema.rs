//! The table layout every LaunchDarkly SDK shares, and DynamoDB's item size limit.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, DeleteRequest, PutRequest, WriteRequest};
use flagstore::error::{ItemError, Operation};
use flagstore::{Error, Item, Kind};

use crate::error::BACKEND;

/// The partition key attribute.
pub const PARTITION_KEY: &str = "namespace";
/// The sort key attribute.
pub const SORT_KEY: &str = "key";
/// The item version attribute (a number).
pub const VERSION_ATTR: &str = "version";
/// The item JSON attribute (a string).
pub const ITEM_ATTR: &str = "item";

/// DynamoDB's limit on one item, attribute names and values included: 400 KB.
pub const MAX_ITEM_SIZE: usize = 409_600;

/// Overhead the estimate adds for what DynamoDB counts besides names and values.
const SIZE_OVERHEAD: usize = 100;

/// Names the partitions of one prefix.
#[derive(Debug, Clone)]
pub(crate) struct Namespaces {
    prefix: String,
}

impl Namespaces {
    pub(crate) fn new(prefix: String) -> Self {
        Namespaces { prefix }
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `{prefix}:{kind}`, or just `{kind}` without a prefix.
    pub(crate) fn kind(&self, kind: &Kind) -> String {
        self.qualify(kind.name())
    }

    /// `{prefix}:$inited`, or `$inited`: both the partition and the sort key of the marker.
    pub(crate) fn inited(&self) -> String {
        self.qualify("$inited")
    }

    /// `{prefix}:big_segments_metadata`: both keys of the Big Segments metadata record.
    pub(crate) fn big_segments_metadata(&self) -> String {
        self.qualify("big_segments_metadata")
    }

    /// `{prefix}:big_segments_user`: the partition of the Big Segments memberships.
    pub(crate) fn big_segments_user(&self) -> String {
        self.qualify("big_segments_user")
    }

    fn qualify(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_owned()
        } else {
            format!("{}:{name}", self.prefix)
        }
    }
}

/// The namespace (partition key value) of `kind`'s items under `prefix`: `{prefix}:{kind}`, or
/// just `{kind}` when the prefix is empty, as every LaunchDarkly SDK names it.
///
/// ```
/// use flagstore::Kind;
/// use flagstore_dynamodb::namespace;
///
/// assert_eq!(namespace("prod", &Kind::FEATURES), "prod:features");
/// assert_eq!(namespace("", &Kind::SEGMENTS), "segments");
/// ```
pub fn namespace(prefix: &str, kind: &Kind) -> String {
    Namespaces::new(prefix.to_owned()).kind(kind)
}

/// The primary key of one record.
pub(crate) fn key_attributes(namespace: &str, key: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            PARTITION_KEY.to_owned(),
            AttributeValue::S(namespace.to_owned()),
        ),
        (SORT_KEY.to_owned(), AttributeValue::S(key.to_owned())),
    ])
}

/// A BatchWriteItem request writing the record `attributes`.
pub(crate) fn put_request(
    op: Operation,
    attributes: HashMap<String, AttributeValue>,
) -> Result<WriteRequest, Error> {
    let put = PutRequest::builder()
        .set_item(Some(attributes))
        .build()
        .map_err(|e| Error::database(BACKEND, op, e))?;
    Ok(WriteRequest::builder().put_request(put).build())
}

/// A BatchWriteItem request deleting the record `namespace`/`key`.
pub(crate) fn delete_request(
    op: Operation,
    namespace: &str,
    key: &str,
) -> Result<WriteRequest, Error> {
    let delete = DeleteRequest::builder()
        .set_key(Some(key_attributes(namespace, key)))
        .build()
        .map_err(|e| Error::database(BACKEND, op, e))?;
    Ok(WriteRequest::builder().delete_request(delete).build())
}

/// The full record of an item.
pub(crate) fn item_attributes(namespace: &str, item: &Item) -> HashMap<String, AttributeValue> {
    let mut attributes = key_attributes(namespace, item.key());
    attributes.insert(
        VERSION_ATTR.to_owned(),
        AttributeValue::N(item.version().to_string()),
    );
    attributes.insert(
        ITEM_ATTR.to_owned(),
        AttributeValue::S(item.json().to_owned()),
    );
    attributes
}

/// DynamoDB's size of an item's record, estimated from above the way the other SDKs do: 100
/// bytes of overhead plus every attribute name and value. An item within
/// [`MAX_ITEM_SIZE`] by this estimate is always accepted.
pub fn estimated_size(namespace: &str, item: &Item) -> usize {
    SIZE_OVERHEAD
        + PARTITION_KEY.len()
        + namespace.len()
        + SORT_KEY.len()
        + item.key().len()
        + VERSION_ATTR.len()
        + item.version().to_string().len()
        + ITEM_ATTR.len()
        + item.len()
}

/// The key of a stored record and its item, for [`flagstore::backend::StoredItems`]; a record without a
/// string `key` attribute is reported under the empty key.
pub(crate) fn stored_item(
    record: &HashMap<String, AttributeValue>,
) -> (String, Result<Item, ItemError>) {
    let key = match record.get(SORT_KEY) {
        Some(AttributeValue::S(key)) => key.clone(),
        _ => String::new(),
    };
    let item = item_from_record(&key, record);
    (key, item)
}

/// The item in a record. Its version is the `version` attribute, which is what conditional
/// writes compare (the other SDKs' stores read it the same way); the JSON's own version is the
/// fallback when the attribute is missing or not a whole number, and such a record is
/// repaired by the next upsert of the item.
pub(crate) fn item_from_record(
    key: &str,
    record: &HashMap<String, AttributeValue>,
) -> Result<Item, ItemError> {
    let item = match record.get(ITEM_ATTR) {
        Some(AttributeValue::S(json)) => Item::from_json(key, json.as_str())?,
        Some(_) => {
            return Err(ItemError::MalformedRecord(format!(
                "attribute {ITEM_ATTR:?} is not a string"
            )));
        }
        None => {
            return Err(ItemError::MalformedRecord(format!(
                "attribute {ITEM_ATTR:?} is missing"
            )));
        }
    };
    Ok(match record.get(VERSION_ATTR) {
        Some(AttributeValue::N(n)) => match n.parse::<u64>() {
            Ok(version) => item.with_version(version),
            Err(_) => item,
        },
        _ => item,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespaces_with_and_without_prefix() {
        let none = Namespaces::new(String::new());
        assert_eq!(none.kind(&Kind::FEATURES), "features");
        assert_eq!(none.inited(), "$inited");
        let some = Namespaces::new("prod".to_owned());
        assert_eq!(some.kind(&Kind::SEGMENTS), "prod:segments");
        assert_eq!(some.inited(), "prod:$inited");
    }

    #[test]
    fn the_version_attribute_is_the_version() {
        let record = |version: Option<AttributeValue>| {
            let mut record = HashMap::from([
                (SORT_KEY.to_owned(), AttributeValue::S("k".into())),
                (
                    ITEM_ATTR.to_owned(),
                    AttributeValue::S(r#"{"version":5}"#.into()),
                ),
            ]);
            if let Some(version) = version {
                record.insert(VERSION_ATTR.to_owned(), version);
            }
            record
        };
        let version = |r| stored_item(&r).1.unwrap().version();
        assert_eq!(version(record(Some(AttributeValue::N("3".into())))), 3);
        assert_eq!(version(record(None)), 5, "missing: the JSON's");
        assert_eq!(
            version(record(Some(AttributeValue::S("3".into())))),
            5,
            "mistyped"
        );
        assert_eq!(
            version(record(Some(AttributeValue::N("3.5".into())))),
            5,
            "not whole"
        );
    }

    #[test]
    fn size_counts_names_values_and_overhead() {
        let item = Item::from_json("k", r#"{"version":12}"#).unwrap();
        // 100 + "namespace" 9 + "features" 8 + "key" 3 + "k" 1 + "version" 7 + "12" 2 + "item" 4 + 14
        assert_eq!(estimated_size("features", &item), 148);
    }
}

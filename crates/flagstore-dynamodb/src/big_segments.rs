//! Big Segments in DynamoDB, in the layout the Go, Python and Node SDKs read and the Relay Proxy
//! writes, in the same table as the flags:
//!
//! - metadata: the record whose `namespace` and `key` are both `{prefix}:big_segments_metadata`,
//!   with `synchronizedOn` (N, Unix milliseconds);
//! - memberships: records in namespace `{prefix}:big_segments_user`, `key` = the context hash, with
//!   string sets `included` and `excluded` (an empty set is left out: DynamoDB has none).
//!
//! Without a prefix the names lose theirs and the colon, as the flag namespaces do.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use flagstore::big_segments::{BigSegmentMembership, BigSegmentMetadata, BigSegmentStore};
use flagstore::error::Operation;
use flagstore::{Error, Result};

use crate::error::BACKEND;
use crate::schema::{SORT_KEY, delete_request, key_attributes, put_request};
use crate::store::DynamoDbStore;

const OP: Operation = Operation::BigSegments;
/// The synchronization time attribute of the metadata record.
const SYNCHRONIZED_ON: &str = "synchronizedOn";
/// The membership attributes.
const INCLUDED: &str = "included";
const EXCLUDED: &str = "excluded";

impl DynamoDbStore {
    async fn read_record(&self, namespace: &str, key: &str) -> Result<Option<Record>> {
        let request = self
            .client()
            .await
            .get_item()
            .table_name(self.table())
            .consistent_read(true)
            .set_key(Some(key_attributes(namespace, key)))
            .send();
        let output = self.call(OP, request).await?;
        Ok(output.item().cloned().map(|attributes| Record {
            namespace: namespace.to_owned(),
            key: key.to_owned(),
            attributes,
        }))
    }
}

/// One record read back, for error messages that name it.
struct Record {
    namespace: String,
    key: String,
    attributes: HashMap<String, AttributeValue>,
}

impl Record {
    fn malformed(&self, attribute: &str, expected: &str) -> Error {
        Error::invalid_record(
            BACKEND,
            OP,
            format!("{}/{}", self.namespace, self.key),
            format!("attribute {attribute} is not {expected}"),
        )
    }

    fn strings(&self, attribute: &str) -> Result<Vec<String>> {
        match self.attributes.get(attribute) {
            None => Ok(Vec::new()),
            Some(AttributeValue::Ss(values)) => Ok(values.clone()),
            Some(_) => Err(self.malformed(attribute, "a string set (SS)")),
        }
    }
}

#[async_trait]
impl BigSegmentStore for DynamoDbStore {
    async fn get_metadata(&self) -> Result<BigSegmentMetadata> {
        let key = self.names().big_segments_metadata();
        let Some(record) = self.read_record(&key, &key).await? else {
            return Ok(BigSegmentMetadata::default());
        };
        match record.attributes.get(SYNCHRONIZED_ON) {
            None => Ok(BigSegmentMetadata::default()),
            Some(AttributeValue::N(number)) => number
                .parse()
                .map(BigSegmentMetadata::synchronized_at)
                .map_err(|_| record.malformed(SYNCHRONIZED_ON, "a Unix time in milliseconds")),
            Some(_) => Err(record.malformed(SYNCHRONIZED_ON, "a number (N)")),
        }
    }

    async fn get_membership(&self, context_hash: &str) -> Result<Option<BigSegmentMembership>> {
        let namespace = self.names().big_segments_user();
        let Some(record) = self.read_record(&namespace, context_hash).await? else {
            return Ok(None);
        };
        let membership =
            BigSegmentMembership::new(record.strings(INCLUDED)?, record.strings(EXCLUDED)?);
        Ok((!membership.is_empty()).then_some(membership))
    }

    /// BatchWriteItem calls of 25: a put per context, or a delete for an empty membership. A
    /// context given twice is written once, as its last entry says (a batch may not name one
    /// key twice).
    async fn set_memberships(&self, memberships: &[(String, BigSegmentMembership)]) -> Result<()> {
        let namespace = self.names().big_segments_user();
        let last: HashMap<&str, &BigSegmentMembership> = memberships
            .iter()
            .map(|(hash, membership)| (hash.as_str(), membership))
            .collect();
        let mut requests = Vec::with_capacity(last.len());
        for (hash, membership) in last {
            let request = if membership.is_empty() {
                delete_request(OP, &namespace, hash)?
            } else {
                let mut attributes = key_attributes(&namespace, hash);
                for (name, refs) in [
                    (INCLUDED, membership.included().collect::<Vec<_>>()),
                    (EXCLUDED, membership.excluded().collect()),
                ] {
                    if !refs.is_empty() {
                        let set = refs.into_iter().map(str::to_owned).collect();
                        attributes.insert(name.to_owned(), AttributeValue::Ss(set));
                    }
                }
                put_request(OP, attributes)?
            };
            requests.push(request);
        }
        self.write_batches(OP, requests).await
    }

    async fn set_synchronized_on(&self, unix_millis: u64) -> Result<()> {
        let key = self.names().big_segments_metadata();
        let mut item = key_attributes(&key, &key);
        item.insert(
            SYNCHRONIZED_ON.to_owned(),
            AttributeValue::N(unix_millis.to_string()),
        );
        let request = self
            .client()
            .await
            .put_item()
            .table_name(self.table())
            .set_item(Some(item))
            .send();
        self.call(OP, request).await.map(|_| ())
    }

    async fn clear_big_segments(&self) -> Result<()> {
        let namespace = self.names().big_segments_user();
        let metadata = self.names().big_segments_metadata();
        let mut keys: Vec<(String, String)> = self
            .query_all(OP, &namespace, true)
            .await?
            .iter()
            .filter_map(|record| match record.get(SORT_KEY) {
                Some(AttributeValue::S(key)) => Some((namespace.clone(), key.clone())),
                _ => None,
            })
            .collect();
        keys.push((metadata.clone(), metadata));
        let mut requests = Vec::with_capacity(keys.len());
        for (namespace, key) in keys {
            requests.push(delete_request(OP, &namespace, &key)?);
        }
        self.write_batches(OP, requests).await
    }
}

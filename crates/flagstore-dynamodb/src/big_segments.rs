//! Big Segments in DynamoDB, in the layout the Go, Python and Node SDKs read and the Relay Proxy
//! writes, in the same table as the flags:
//!
//! - metadata: the record whose `namespace` and `key` are both `{prefix}:big_segments_metadata`,
//!   with `synchronizedOn` (N, Unix milliseconds) and `lastVersion` (S, the cursor: the version
//!   of the last patch applied);
//! - memberships: records in namespace `{prefix}:big_segments_user`, `key` = the context hash, with
//!   string sets `included` and `excluded` (an empty set is left out: DynamoDB has none).
//!
//! Without a prefix the names lose theirs and the colon, as the flag namespaces do.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::AttributeValue;
use flagstore::big_segments::{
    BigSegmentMembership, BigSegmentMetadata, BigSegmentPatch, BigSegmentStore,
};
use flagstore::error::Operation;
use flagstore::{Error, Result};

use crate::error::{BACKEND, written};
use crate::schema::{SORT_KEY, delete_request, key_attributes, put_request};
use crate::store::DynamoDbStore;

const OP: Operation = Operation::BigSegments;
/// The synchronization time attribute of the metadata record.
const SYNCHRONIZED_ON: &str = "synchronizedOn";
/// The cursor attribute of the metadata record.
const LAST_VERSION: &str = "lastVersion";
/// Membership updates of one patch in flight at once.
const UPDATES_IN_FLIGHT: usize = 8;
/// The membership attributes.
const INCLUDED: &str = "included";
const EXCLUDED: &str = "excluded";

impl DynamoDbStore {
    /// Adds `segment_ref` to (or deletes it from) the string set `attribute` of the context's
    /// membership record, creating the record if needed. Idempotent, so a patch interrupted
    /// half-way is simply applied again.
    async fn update_membership(
        &self,
        hash: &str,
        attribute: &str,
        segment_ref: &str,
        add: bool,
    ) -> Result<()> {
        let namespace = self.names().big_segments_user();
        let expression = if add {
            "ADD #set :ref"
        } else {
            "DELETE #set :ref"
        };
        let request = self
            .client()
            .await
            .update_item()
            .table_name(self.table())
            .set_key(Some(key_attributes(&namespace, hash)))
            .update_expression(expression)
            .expression_attribute_names("#set", attribute)
            .expression_attribute_values(":ref", AttributeValue::Ss(vec![segment_ref.to_owned()]))
            .send();
        self.call(OP, request).await.map(|_| ())
    }

    /// The metadata record (`synchronizedOn`, `lastVersion`), if there is one.
    async fn metadata_record(&self) -> Result<Option<Record>> {
        let key = self.names().big_segments_metadata();
        self.read_record(&key, &key).await
    }

    /// An UpdateItem of the metadata record, for one attribute to be set on it.
    async fn metadata_update(&self) -> UpdateItemFluentBuilder {
        let key = self.names().big_segments_metadata();
        self.client()
            .await
            .update_item()
            .table_name(self.table())
            .set_key(Some(key_attributes(&key, &key)))
    }

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
        let Some(record) = self.metadata_record().await? else {
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
        self.write_batches(OP, requests.into_iter().map(Ok)).await
    }

    /// An update of `synchronizedOn` alone, so that the cursor beside it stays.
    async fn set_synchronized_on(&self, unix_millis: u64) -> Result<()> {
        let request = self
            .metadata_update()
            .await
            .update_expression("SET #at = :at")
            .expression_attribute_names("#at", SYNCHRONIZED_ON)
            .expression_attribute_values(":at", AttributeValue::N(unix_millis.to_string()))
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
        self.write_batches(OP, requests.into_iter().map(Ok)).await
    }

    async fn get_cursor(&self) -> Result<Option<String>> {
        let Some(record) = self.metadata_record().await? else {
            return Ok(None);
        };
        match record.attributes.get(LAST_VERSION) {
            None => Ok(None),
            Some(AttributeValue::S(version)) => Ok(Some(version.clone())),
            Some(_) => Err(record.malformed(LAST_VERSION, "a string (S)")),
        }
    }

    /// Reads the cursor (consistently); if the patch follows it, adds and deletes the segment
    /// ref in each context's sets (UpdateItem `ADD`/`DELETE`, 8 at a time: idempotent, so a
    /// patch cut off half-way is applied again whole), then moves `lastVersion` on with a
    /// condition that it is still the previous version. Not one transaction, as in the Relay
    /// Proxy (a transaction holds 100 items; a patch may name thousands of contexts): a reader
    /// may see part of a patch for a moment, never a cursor ahead of its memberships.
    async fn apply_patch(&self, patch: &BigSegmentPatch) -> Result<bool> {
        if !patch.follows(self.get_cursor().await?.as_deref()) {
            return Ok(false);
        }
        let segment = patch.segment_ref.as_str();
        let all: Vec<_> = patch.changes().collect();
        for chunk in all.chunks(UPDATES_IN_FLIGHT) {
            let updates: Vec<_> = chunk
                .iter()
                .map(|change| {
                    let attribute = if change.included { INCLUDED } else { EXCLUDED };
                    self.update_membership(change.context_hash, attribute, segment, change.add)
                })
                .collect();
            for result in futures::future::join_all(updates).await {
                result?;
            }
        }

        // As `BigSegmentPatch::follows` reads it: no cursor yet, or the previous version.
        let condition = "attribute_not_exists(#cursor) or #cursor = :previous";
        let request = self
            .metadata_update()
            .await
            .update_expression("SET #cursor = :version")
            .condition_expression(condition)
            .expression_attribute_names("#cursor", LAST_VERSION)
            .expression_attribute_values(
                ":previous",
                AttributeValue::S(patch.previous_version.clone()),
            )
            .expression_attribute_values(":version", AttributeValue::S(patch.version.clone()))
            .send();
        // Refused for its condition: another writer moved the cursor meanwhile; the memberships
        // written are idempotent and the caller reads the chain again from the cursor now.
        written(self.call(OP, request).await)
    }
}

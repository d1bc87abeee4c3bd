//! Creating the table, for tests and tools. The store itself never creates it.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
    StreamSpecification, StreamViewType, TableStatus,
};
use flagstore::error::Operation;
use flagstore::{Error, Result};

use crate::error::{BACKEND, from_sdk};
use crate::schema::{PARTITION_KEY, SORT_KEY};

const CREATE_DEADLINE: Duration = Duration::from_secs(120);

/// Creates `table` with the schema the store and the LaunchDarkly SDKs expect (partition key
/// `namespace`, sort key `key`, both strings; on-demand billing) and a `KEYS_ONLY` stream, which
/// the store's [change feed](flagstore::PersistentDataStore::changes) reads (it costs nothing
/// until read), and waits until it is active. A table that already exists is left as it is.
///
/// Production tables are usually created by infrastructure code; this is for tests, local
/// emulators and the `flagstore` CLI.
pub async fn create_table(client: &Client, table: &str) -> Result<()> {
    let op = Operation::Init;
    let key = |name: &str, kind: KeyType| {
        KeySchemaElement::builder()
            .attribute_name(name)
            .key_type(kind)
            .build()
    };
    let attribute = |name: &str| {
        AttributeDefinition::builder()
            .attribute_name(name)
            .attribute_type(ScalarAttributeType::S)
            .build()
    };
    let request = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(PARTITION_KEY, KeyType::Hash).map_err(|e| Error::database(BACKEND, op, e))?)
        .key_schema(key(SORT_KEY, KeyType::Range).map_err(|e| Error::database(BACKEND, op, e))?)
        .attribute_definitions(
            attribute(PARTITION_KEY).map_err(|e| Error::database(BACKEND, op, e))?,
        )
        .attribute_definitions(attribute(SORT_KEY).map_err(|e| Error::database(BACKEND, op, e))?)
        .stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::KeysOnly)
                .build()
                .map_err(|e| Error::database(BACKEND, op, e))?,
        );
    match request.send().await {
        Ok(_) => {}
        Err(err)
            if err
                .as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception()) => {}
        Err(err) => return Err(from_sdk(op, CREATE_DEADLINE, table, err)),
    }
    let started = tokio::time::Instant::now();
    loop {
        let described = client.describe_table().table_name(table).send().await;
        let status = described
            .map_err(|e| from_sdk(op, CREATE_DEADLINE, table, e))?
            .table()
            .and_then(|t| t.table_status().cloned());
        if status == Some(TableStatus::Active) {
            return Ok(());
        }
        if started.elapsed() > CREATE_DEADLINE {
            return Err(Error::timeout(BACKEND, op, CREATE_DEADLINE));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#![doc = include_str!("../README.md")]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs)]

mod batch;
mod big_segments;
mod builder;
mod config;
mod error;
mod feed;
mod schema;
mod store;
mod table;

pub use builder::{
    DEFAULT_BATCH_DEADLINE, DEFAULT_CONNECT_TIMEOUT, DEFAULT_PREFIX, DEFAULT_REQUEST_TIMEOUT,
    DynamoDbStoreBuilder,
};
pub use config::DynamoDbConfigKey;
pub use error::DynamoDbError;
pub use schema::{
    ITEM_ATTR, MAX_ITEM_SIZE, PARTITION_KEY, SORT_KEY, VERSION_ATTR, estimated_size, namespace,
};
pub use store::DynamoDbStore;
pub use table::create_table;

/// The AWS SDK crates this store is built on, so callers bringing a client get matching versions.
pub use aws_config;
/// The DynamoDB client crate.
pub use aws_sdk_dynamodb;
/// The DynamoDB Streams client crate the change feed reads the table's stream with.
pub use aws_sdk_dynamodbstreams;

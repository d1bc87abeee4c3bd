//! One running database of each backend, and how to open a store on it from Rust and from
//! Python, directly or through a [`FaultProxy`](crate::FaultProxy).

use std::sync::Arc;
use std::time::Duration;

use flagstore::testing::unique_run_id;
use flagstore::{DynStore, Kind};
use flagstore_consul::ConsulStore;
use flagstore_dynamodb::aws_sdk_dynamodb::types::AttributeValue;
use flagstore_dynamodb::{DynamoDbStore, create_table, namespace};
use flagstore_redis::RedisStore;
use flagstore_redis::redis::{self, AsyncCommands};
use serde_json::json;

use crate::consul::{Consul, RawConsul};
use crate::dynamodb::DynamoDb;
use crate::redis::Redis;

/// A database the tests write to: Redis, DynamoDB (with a table of this run's own) or Consul.
#[derive(Debug)]
pub enum Backend {
    /// A Redis server.
    Redis(Redis),
    /// A DynamoDB endpoint and the table made for this run.
    DynamoDb(DynamoDb, String),
    /// A Consul agent.
    Consul(Consul),
}

impl Backend {
    /// A Redis ([`Redis::start`]).
    pub fn redis() -> Backend {
        Backend::Redis(Redis::start())
    }

    /// A DynamoDB endpoint ([`DynamoDb::start`]) with a new table.
    pub async fn dynamodb() -> Backend {
        let db = DynamoDb::start();
        let table = format!("ld_{}", unique_run_id());
        let probe = dynamo_store(db.endpoint(), &table, "", None);
        create_table(probe.client().await, &table).await.unwrap();
        Backend::DynamoDb(db, table)
    }

    /// A Consul agent ([`Consul::start`]).
    pub fn consul() -> Backend {
        Backend::Consul(Consul::start())
    }

    /// A store under `prefix`.
    pub fn store(&self, prefix: &str) -> DynStore {
        match self {
            Backend::Redis(r) => redis_store(r.url(), prefix, None),
            Backend::DynamoDb(db, table) => {
                Arc::new(dynamo_store(db.endpoint(), table, prefix, None))
            }
            Backend::Consul(c) => consul_store(c.address(), prefix, None),
        }
    }

    /// The Big Segments store under `prefix` (Redis, DynamoDB; Consul has none).
    pub fn big_segment_store(&self, prefix: &str) -> flagstore::big_segments::DynBigSegmentStore {
        match self {
            Backend::Redis(r) => Arc::new(
                RedisStore::builder()
                    .url(r.url())
                    .prefix(prefix)
                    .build()
                    .unwrap(),
            ),
            Backend::DynamoDb(db, table) => {
                Arc::new(dynamo_store(db.endpoint(), table, prefix, None))
            }
            Backend::Consul(_) => panic!("Consul holds no Big Segments"),
        }
    }

    /// The server's `host:port`, for a [`FaultProxy`](crate::FaultProxy) in front of it.
    pub fn server_address(&self) -> String {
        let url = url::Url::parse(match self {
            Backend::Redis(r) => r.url(),
            Backend::DynamoDb(db, _) => db.endpoint(),
            Backend::Consul(c) => c.address(),
        })
        .unwrap();
        format!(
            "{}:{}",
            url.host_str().unwrap(),
            url.port_or_known_default().unwrap()
        )
    }

    /// A store under `prefix` that reaches the server at `address` (a proxy's) instead, each
    /// request given up after `timeout`.
    pub fn store_through(&self, prefix: &str, address: &str, timeout: Duration) -> DynStore {
        let moved = |url: &str| {
            let mut url = url::Url::parse(url).unwrap();
            let (host, port) = address.rsplit_once(':').unwrap();
            url.set_host(Some(host)).unwrap();
            url.set_port(Some(port.parse().unwrap())).unwrap();
            url.to_string().trim_end_matches('/').to_owned()
        };
        match self {
            Backend::Redis(r) => redis_store(&moved(r.url()), prefix, Some(timeout)),
            Backend::DynamoDb(db, table) => Arc::new(dynamo_store(
                &moved(db.endpoint()),
                table,
                prefix,
                Some(timeout),
            )),
            Backend::Consul(c) => consul_store(&moved(c.address()), prefix, Some(timeout)),
        }
    }

    /// How `ld_compat.py` opens the same store.
    pub fn python_spec(&self, prefix: &str) -> String {
        let spec = match self {
            Backend::Redis(r) => json!({"backend": "redis", "url": r.url(), "prefix": prefix}),
            Backend::DynamoDb(db, table) => {
                json!({"backend": "dynamodb", "endpoint": db.endpoint(), "table": table, "prefix": prefix})
            }
            Backend::Consul(c) => {
                let url = url::Url::parse(c.address()).unwrap();
                json!({"backend": "consul", "host": url.host_str().unwrap(), "port": url.port().unwrap(), "prefix": prefix})
            }
        };
        spec.to_string()
    }

    /// Removes the `$inited` marker and the flag `flag` under `prefix`, as a Redis restarted
    /// without persistence or a recreated table loses them, without touching other prefixes.
    pub async fn wipe(&self, prefix: &str, flag: &str) {
        match self {
            Backend::Redis(r) => {
                let client = redis::Client::open(r.url()).unwrap();
                let mut conn = client.get_multiplexed_async_connection().await.unwrap();
                let _: () = conn
                    .del(&[format!("{prefix}:$inited"), format!("{prefix}:features")])
                    .await
                    .unwrap();
            }
            Backend::DynamoDb(db, table) => {
                let store = dynamo_store(db.endpoint(), table, prefix, None);
                let client = store.client().await;
                let marker = format!("{prefix}:$inited");
                for (partition, key) in [
                    (marker.clone(), marker),
                    (namespace(prefix, &Kind::FEATURES), flag.to_owned()),
                ] {
                    client
                        .delete_item()
                        .table_name(table)
                        .key("namespace", AttributeValue::S(partition))
                        .key("key", AttributeValue::S(key))
                        .send()
                        .await
                        .unwrap();
                }
            }
            Backend::Consul(c) => {
                RawConsul::new(c.address(), c.token())
                    .delete_recursive(&format!("{prefix}/"))
                    .await;
            }
        }
    }
}

fn redis_store(url: &str, prefix: &str, timeout: Option<Duration>) -> DynStore {
    let mut builder = RedisStore::builder().url(url).prefix(prefix);
    if let Some(timeout) = timeout {
        builder = builder.connect_timeout(timeout).request_timeout(timeout);
    }
    Arc::new(builder.build().unwrap())
}

fn dynamo_store(
    endpoint: &str,
    table: &str,
    prefix: &str,
    timeout: Option<Duration>,
) -> DynamoDbStore {
    let mut builder = DynamoDbStore::builder(table)
        .url(endpoint)
        .region("us-east-1")
        .static_credentials("test", "test")
        .prefix(prefix);
    if let Some(timeout) = timeout {
        builder = builder.connect_timeout(timeout).request_timeout(timeout);
    }
    builder.build().unwrap()
}

fn consul_store(address: &str, prefix: &str, timeout: Option<Duration>) -> DynStore {
    let mut builder = ConsulStore::builder().url(address).prefix(prefix);
    if let Some(timeout) = timeout {
        builder = builder.connect_timeout(timeout).request_timeout(timeout);
    }
    Arc::new(builder.build().unwrap())
}

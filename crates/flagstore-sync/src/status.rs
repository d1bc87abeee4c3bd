//! What each environment's connection and stores are doing, and the Relay Proxy's `/status`
//! JSON that reports it, so health checks written for the Relay Proxy keep working.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::{Map, Value, json};

/// The state of an environment's connection to LaunchDarkly, as the SDKs' data source status
/// names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum ConnectionState {
    /// No data received yet.
    Initializing,
    /// Connected, with the current data.
    Valid,
    /// Data was received, but the connection is down and being retried.
    Interrupted,
    /// Given up for good: LaunchDarkly refused the SDK key (401, 403, 404, …).
    Off,
}

impl ConnectionState {
    /// The name `/status` uses: `INITIALIZING`, `VALID`, `INTERRUPTED` or `OFF`.
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionState::Initializing => "INITIALIZING",
            ConnectionState::Valid => "VALID",
            ConnectionState::Interrupted => "INTERRUPTED",
            ConnectionState::Off => "OFF",
        }
    }

    pub(crate) const ALL: [ConnectionState; 4] = [
        ConnectionState::Initializing,
        ConnectionState::Valid,
        ConnectionState::Interrupted,
        ConnectionState::Off,
    ];
}

/// What went wrong last, in the SDKs' terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum ErrorKind {
    /// No connection, a dropped connection, a timeout.
    NetworkError,
    /// LaunchDarkly answered with an HTTP error status.
    ErrorResponse,
    /// LaunchDarkly sent something that is not valid flag data.
    InvalidData,
    /// A store refused a write or did not answer.
    StoreError,
}

/// The last error, with when it happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastError {
    /// What kind of error.
    pub kind: ErrorKind,
    /// The HTTP status, for [`ErrorKind::ErrorResponse`].
    #[serde(rename = "statusCode", skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    /// What happened, never with a key or password in it.
    pub message: String,
    /// When, in Unix milliseconds.
    pub time: u64,
}

/// An environment's connection to LaunchDarkly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionStatus {
    /// The current state.
    pub state: ConnectionState,
    /// Since when, in Unix milliseconds.
    pub state_since: u64,
    /// The last error, if there was one.
    pub last_error: Option<LastError>,
}

/// Whether a store holds the environment's current data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[non_exhaustive]
pub enum DataStoreState {
    /// The store holds the current data.
    Valid,
    /// The store lacks some of the data (not written yet, a write failed, it was wiped); the
    /// data is kept in memory and written again once the store answers.
    Interrupted,
}

/// One store of an environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataStoreStatus {
    /// The current state.
    pub state: DataStoreState,
    /// Since when, in Unix milliseconds.
    pub state_since: u64,
    /// The backend: `redis`, `dynamodb`, `consul` or `sqlite`.
    pub database: String,
    /// Where it is, password masked.
    pub db_server: Option<String>,
    /// The key prefix, when the store has one configured.
    pub db_prefix: Option<String>,
    /// The DynamoDB table.
    pub db_table: Option<String>,
    /// The last write error, if there was one.
    pub last_error: Option<LastError>,
}

/// An environment's Big Segments, once its data holds an unbounded segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BigSegmentStatus {
    /// Whether the last write to the stores (a patch, the synchronization time) worked.
    pub available: bool,
    /// When the stores were last marked synchronized, in Unix milliseconds.
    pub last_synchronized_on: Option<u64>,
}

impl BigSegmentStatus {
    /// Whether the SDKs reading the stores may see the data as stale at `now` (Unix
    /// milliseconds): never synchronized, or longer ago than their default threshold
    /// ([`DEFAULT_STALE_AFTER`](flagstore::big_segments::DEFAULT_STALE_AFTER), 2 minutes).
    pub fn potentially_stale(&self, now: u64) -> bool {
        let threshold = flagstore::big_segments::DEFAULT_STALE_AFTER.as_millis();
        self.last_synchronized_on
            .is_none_or(|at| u128::from(now.saturating_sub(at)) > threshold)
    }
}

/// One environment: its connection and its stores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentStatus {
    /// The environment's name in the configuration.
    pub name: String,
    /// The SDK key, masked to its last 4 characters.
    pub sdk_key: String,
    /// The connection to LaunchDarkly.
    pub connection: ConnectionStatus,
    /// Each store, in the configured order.
    pub stores: Vec<DataStoreStatus>,
    /// When the data last changed, in Unix milliseconds.
    pub last_update: Option<u64>,
    /// Its Big Segments, once its data holds an unbounded segment.
    pub big_segments: Option<BigSegmentStatus>,
}

impl EnvironmentStatus {
    /// Whether the connection is VALID, every store holds the data, and Big Segments (if the
    /// environment has them) are available and fresh.
    pub fn is_healthy(&self) -> bool {
        self.connection.state == ConnectionState::Valid
            && self.stores.iter().all(|s| s.state == DataStoreState::Valid)
            && self
                .big_segments
                .is_none_or(|big| big.available && !big.potentially_stale(now_millis()))
    }

    /// The state of the environment's stores taken together: INTERRUPTED if any is.
    pub fn data_store_state(&self) -> DataStoreState {
        if self.stores.iter().all(|s| s.state == DataStoreState::Valid) {
            DataStoreState::Valid
        } else {
            DataStoreState::Interrupted
        }
    }
}

/// Every environment's status at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Status {
    /// The environments, in the configured order.
    pub environments: Vec<EnvironmentStatus>,
}

impl Status {
    /// Whether every environment is healthy.
    pub fn is_healthy(&self) -> bool {
        self.environments.iter().all(EnvironmentStatus::is_healthy)
    }

    /// The environment named `name`.
    pub fn environment(&self, name: &str) -> Option<&EnvironmentStatus> {
        self.environments.iter().find(|e| e.name == name)
    }

    /// The Relay Proxy's `/status` document: `status` `healthy` or `degraded`, and per
    /// environment `sdkKey` (masked), `status` (`connected` or `disconnected`),
    /// `connectionStatus` and `dataStoreStatus`. With several stores, `dataStoreStatus`
    /// describes the first and carries the environment's combined state; `dataStores` lists
    /// each.
    ///
    /// ```
    /// use flagstore_sync::Status;
    ///
    /// let status = Status::default();
    /// let json = status.to_relay_json("0.1.0");
    /// assert_eq!(json["status"], "healthy");
    /// assert_eq!(json["environments"], serde_json::json!({}));
    /// ```
    pub fn to_relay_json(&self, version: &str) -> Value {
        let environments: Map<String, Value> = self
            .environments
            .iter()
            .map(|env| (env.name.clone(), environment_json(env)))
            .collect();
        json!({
            "environments": environments,
            "status": if self.is_healthy() { "healthy" } else { "degraded" },
            "version": version,
        })
    }
}

fn environment_json(env: &EnvironmentStatus) -> Value {
    let mut connection = json!({
        "state": env.connection.state,
        "stateSince": env.connection.state_since,
    });
    if let Some(error) = &env.connection.last_error {
        connection["lastError"] = json!(error);
    }
    let stores: Vec<Value> = env.stores.iter().map(store_json).collect();
    let mut data_store = stores.first().cloned().unwrap_or_else(|| json!({}));
    data_store["state"] = json!(env.data_store_state());
    if let Some(since) = env.stores.iter().map(|s| s.state_since).max() {
        data_store["stateSince"] = json!(since);
    }
    let mut out = json!({
        "sdkKey": env.sdk_key,
        "status": if env.connection.state == ConnectionState::Valid { "connected" } else { "disconnected" },
        "connectionStatus": connection,
        "dataStoreStatus": data_store,
        "dataStores": stores,
        "lastUpdate": env.last_update,
    });
    if let Some(big) = env.big_segments {
        out["bigSegmentStatus"] = json!({
            "available": big.available,
            "potentiallyStale": big.potentially_stale(now_millis()),
            "lastSynchronizedOn": big.last_synchronized_on,
        });
    }
    out
}

fn store_json(store: &DataStoreStatus) -> Value {
    let mut out = json!({
        "state": store.state,
        "stateSince": store.state_since,
        "database": store.database,
    });
    let fields = [
        ("dbServer", &store.db_server),
        ("dbPrefix", &store.db_prefix),
        ("dbTable", &store.db_table),
    ];
    for (name, value) in fields {
        if let Some(value) = value {
            out[name] = json!(value);
        }
    }
    if let Some(error) = &store.last_error {
        out["lastError"] = json!(error);
    }
    out
}

/// Now, in Unix milliseconds.
pub(crate) fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_shape() {
        let store = DataStoreStatus {
            state: DataStoreState::Valid,
            state_since: 5,
            database: "redis".into(),
            db_server: Some("redis://:***@cache:6379".into()),
            db_prefix: Some("prod".into()),
            db_table: None,
            last_error: None,
        };
        let mut env = EnvironmentStatus {
            name: "production".into(),
            sdk_key: "sdk-****1234".into(),
            connection: ConnectionStatus {
                state: ConnectionState::Valid,
                state_since: 7,
                last_error: None,
            },
            stores: vec![store.clone()],
            last_update: Some(9),
            big_segments: None,
        };
        let status = Status {
            environments: vec![env.clone()],
        };
        assert_eq!(
            status.to_relay_json("1.2.3"),
            json!({
                "environments": {"production": {
                    "sdkKey": "sdk-****1234",
                    "status": "connected",
                    "connectionStatus": {"state": "VALID", "stateSince": 7},
                    "dataStoreStatus": {"state": "VALID", "stateSince": 5, "database": "redis",
                        "dbServer": "redis://:***@cache:6379", "dbPrefix": "prod"},
                    "dataStores": [{"state": "VALID", "stateSince": 5, "database": "redis",
                        "dbServer": "redis://:***@cache:6379", "dbPrefix": "prod"}],
                    "lastUpdate": 9,
                }},
                "status": "healthy",
                "version": "1.2.3",
            })
        );

        env.connection.state = ConnectionState::Interrupted;
        env.connection.last_error = Some(LastError {
            kind: ErrorKind::ErrorResponse,
            status_code: Some(503),
            message: "HTTP 503".into(),
            time: 8,
        });
        let mut down = store;
        down.state = DataStoreState::Interrupted;
        down.state_since = 11;
        env.stores.push(down);
        let json = Status {
            environments: vec![env],
        }
        .to_relay_json("1.2.3");
        assert_eq!(json["status"], "degraded");
        let env = &json["environments"]["production"];
        assert_eq!(env["status"], "disconnected");
        assert_eq!(
            env["connectionStatus"]["lastError"],
            json!({"kind": "ERROR_RESPONSE", "statusCode": 503, "message": "HTTP 503", "time": 8})
        );
        assert_eq!(env["dataStoreStatus"]["state"], "INTERRUPTED");
        assert_eq!(env["dataStoreStatus"]["stateSince"], 11);
    }
}

#[cfg(test)]
mod big_segment_tests {
    use super::*;

    #[test]
    fn big_segments_show_when_present_and_count_in_health() {
        let mut env = EnvironmentStatus {
            name: "production".into(),
            sdk_key: "sdk-****1234".into(),
            connection: ConnectionStatus {
                state: ConnectionState::Valid,
                state_since: 1,
                last_error: None,
            },
            stores: Vec::new(),
            last_update: None,
            big_segments: None,
        };
        assert!(environment_json(&env).get("bigSegmentStatus").is_none());
        let now = now_millis();
        env.big_segments = Some(BigSegmentStatus {
            available: true,
            last_synchronized_on: Some(now),
        });
        assert!(env.is_healthy());
        assert_eq!(
            environment_json(&env)["bigSegmentStatus"],
            json!({"available": true, "potentiallyStale": false, "lastSynchronizedOn": now})
        );
        env.big_segments = Some(BigSegmentStatus {
            available: true,
            last_synchronized_on: Some(now - 121_000),
        });
        assert!(!env.is_healthy(), "stale");
        assert_eq!(
            environment_json(&env)["bigSegmentStatus"]["potentiallyStale"],
            true
        );
    }
}

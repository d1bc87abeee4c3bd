//! moto's server mode, the DynamoDB emulator with DynamoDB Streams (dynalite has no Streams
//! API): `FLAGSTORE_TEST_MOTO_ENDPOINT`, else a local `moto_server` from the Python virtualenv
//! (`scripts/install-servers.sh` installs `moto[server]` there).

use tempfile::TempDir;

use crate::process::{LocalServer, free_port};

/// The variable naming an existing moto server to test against.
pub const ENDPOINT_VAR: &str = "FLAGSTORE_TEST_MOTO_ENDPOINT";

/// A DynamoDB endpoint with DynamoDB Streams.
#[derive(Debug)]
pub struct Moto {
    endpoint: String,
    server: Option<LocalServer>,
}

impl Moto {
    /// The endpoint from the environment, else a fresh local `moto_server`.
    pub fn start() -> Moto {
        if let Ok(endpoint) = std::env::var(ENDPOINT_VAR)
            && !endpoint.is_empty()
        {
            return Moto {
                endpoint,
                server: None,
            };
        }
        Self::start_local()
    }

    /// A fresh local `moto_server`, whatever the environment says: for tests that restart it.
    pub fn start_local() -> Moto {
        let program = crate::python::python().with_file_name("moto_server");
        let program = program.to_str().unwrap().to_owned();
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            let args = ["-H", "127.0.0.1", "-p", &port.to_string()].map(str::to_owned);
            let dir = TempDir::new().unwrap();
            match LocalServer::start("moto", &program, &args, dir, ready) {
                Ok(server) => {
                    return Moto {
                        endpoint: format!("http://127.0.0.1:{port}"),
                        server: Some(server),
                    };
                }
                Err(e) => last_error = e,
            }
        }
        panic!(
            "moto_server did not start (scripts/install-servers.sh installs moto[server]): {last_error}"
        );
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A store builder for `table` on this server (test credentials, `us-east-1`).
    pub fn builder(&self, table: &str) -> flagstore_dynamodb::DynamoDbStoreBuilder {
        flagstore_dynamodb::DynamoDbStore::builder(table)
            .url(&self.endpoint)
            .region("us-east-1")
            .static_credentials("test", "test")
    }

    /// Stops the server and starts it again, empty (moto keeps nothing): every table is gone.
    /// Only for a server this fixture started.
    pub fn restart_empty(&mut self) {
        let server = self
            .server
            .as_mut()
            .expect("only a moto server this test started can be restarted");
        server.restart(ready).unwrap();
    }
}

fn ready(log: &str) -> bool {
    log.contains("Running on http://")
}

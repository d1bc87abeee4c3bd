//! A DynamoDB emulator for the tests: `FLAGSTORE_TEST_DYNAMODB_ENDPOINT`, else a local `dynalite`
//! (npm), else an `amazon/dynamodb-local` container where Docker answers.

use tempfile::TempDir;
use testcontainers::core::WaitFor;

use crate::docker::DockerService;
use crate::process::{LocalServer, free_port, on_path};

/// The variable naming an existing DynamoDB endpoint to test against.
pub const ENDPOINT_VAR: &str = "FLAGSTORE_TEST_DYNAMODB_ENDPOINT";

const INSTALL_HINT: &str = "no DynamoDB emulator to test against: set \
     FLAGSTORE_TEST_DYNAMODB_ENDPOINT=http://host:port, install dynalite (npm install -g dynalite; \
     scripts/install-servers.sh does it), or run a Docker engine";

/// A DynamoDB endpoint the tests can use.
#[derive(Debug)]
pub struct DynamoDb {
    endpoint: String,
    _server: Option<LocalServer>,
    _container: Option<DockerService>,
}

impl DynamoDb {
    /// The endpoint from the environment, else a fresh local dynalite, else a container.
    pub fn start() -> DynamoDb {
        if let Ok(endpoint) = std::env::var(ENDPOINT_VAR)
            && !endpoint.is_empty()
        {
            return DynamoDb {
                endpoint,
                _server: None,
                _container: None,
            };
        }
        if on_path("dynalite") {
            return Self::start_dynalite();
        }
        let ready = WaitFor::message_on_stdout("Initializing DynamoDB Local");
        let cmd = ["-jar", "DynamoDBLocal.jar", "-inMemory", "-sharedDb"]
            .map(str::to_owned)
            .to_vec();
        // As docker-compose.yml pins it (dynalite, the local path's emulator, has no image).
        let container = DockerService::start("amazon/dynamodb-local", "2.5.2", 8000, ready, cmd)
            .unwrap_or_else(|e| panic!("{INSTALL_HINT}\n({e})"));
        let (host, port) = container.address();
        DynamoDb {
            endpoint: format!("http://{host}:{port}"),
            _server: None,
            _container: Some(container),
        }
    }

    fn start_dynalite() -> DynamoDb {
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            // In memory; tables become active at once instead of after dynalite's default 500 ms.
            let args = [
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--createTableMs",
                "0",
                "--deleteTableMs",
                "0",
                "--updateTableMs",
                "0",
            ]
            .map(str::to_owned);
            let dir = TempDir::new().unwrap();
            match LocalServer::start("dynalite", "dynalite", &args, dir, |log| {
                log.contains("listening at")
            }) {
                Ok(server) => {
                    return DynamoDb {
                        endpoint: format!("http://127.0.0.1:{port}"),
                        _server: Some(server),
                        _container: None,
                    };
                }
                Err(e) => last_error = e,
            }
        }
        panic!("dynalite did not start: {last_error}");
    }

    /// The endpoint URL.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The emulator's process id, when this fixture started it (benches read its CPU time).
    pub fn server_pid(&self) -> Option<u32> {
        self._server.as_ref().map(LocalServer::pid)
    }
}

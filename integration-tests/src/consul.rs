//! Consul for the tests: `FLAGSTORE_TEST_CONSUL_ADDR`, else a local `consul agent -dev`, else a
//! `hashicorp/consul` container where Docker answers.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use tempfile::TempDir;
use testcontainers::core::WaitFor;

use crate::docker::DockerService;
use crate::process::{LocalServer, free_port, on_path};
use crate::tls::generate;

/// The variable naming an existing Consul agent (`http://host:port`) to test against.
pub const ADDR_VAR: &str = "FLAGSTORE_TEST_CONSUL_ADDR";

const INSTALL_HINT: &str = "no Consul to test against: set FLAGSTORE_TEST_CONSUL_ADDR=http://host:port, \
     install consul (Debian bullseye package; scripts/install-servers.sh does it), or run a Docker engine";

/// A Consul agent the tests can use.
#[derive(Debug, Default)]
pub struct Consul {
    address: String,
    http_address: String,
    token: Option<String>,
    ca_pem: Option<String>,
    _certs_dir: Option<TempDir>,
    _server: Option<LocalServer>,
    _container: Option<DockerService>,
}

impl Consul {
    /// The agent from the environment, else a fresh local dev agent, else a container.
    pub fn start() -> Consul {
        if let Ok(address) = std::env::var(ADDR_VAR)
            && !address.is_empty()
        {
            return Consul {
                http_address: address.clone(),
                address,
                ..Consul::default()
            };
        }
        if on_path("consul") {
            return Self::start_local(None);
        }
        let ready = WaitFor::message_on_stdout("Synced node info");
        let cmd = ["agent", "-dev", "-client", "0.0.0.0"]
            .map(str::to_owned)
            .to_vec();
        // The version the local path runs (Debian's 1.8.7), as docker-compose.yml pins it.
        let container = DockerService::start("consul", "1.8.7", 8500, ready, cmd)
            .unwrap_or_else(|e| panic!("{INSTALL_HINT}\n({e})"));
        let (host, port) = container.address();
        // The same readiness as the local path: a leader, and a KV store that takes writes.
        wait_for_kv_write(port, None)
            .unwrap_or_else(|e| panic!("the consul container never took a write: {e}"));
        let address = format!("http://{host}:{port}");
        Consul {
            http_address: address.clone(),
            address,
            _container: Some(container),
            ..Consul::default()
        }
    }

    /// A fresh local dev agent with ACLs enabled, denying everything to requests without a
    /// token; `master_token` may do anything.
    pub fn start_with_acl(master_token: &str) -> Consul {
        Self::start_local(Some(master_token))
    }

    /// A fresh local dev agent that also serves HTTPS with a throwaway CA; [`address`](Self::address)
    /// is the `https://` one and [`ca_pem`](Self::ca_pem) the CA to trust.
    pub fn start_tls() -> Consul {
        let dir = TempDir::new().unwrap();
        let certs = generate(dir.path());
        let https = free_port();
        let hcl = format!(
            r#"ports {{ https = {https} }} cert_file = "{}" key_file = "{}" ca_file = "{}" verify_incoming = false"#,
            certs.cert_file.display(),
            certs.key_file.display(),
            certs.ca_file.display()
        );
        let mut consul = Self::launch(None, Some(hcl));
        consul.http_address = consul.address.clone();
        consul.address = format!("https://127.0.0.1:{https}");
        consul.ca_pem = Some(certs.ca_pem);
        consul._certs_dir = Some(dir);
        consul
    }

    /// A fresh local dev agent, never an external one: for tests that restart it.
    pub fn start_local_agent() -> Consul {
        Self::start_local(None)
    }

    fn start_local(master_token: Option<&str>) -> Consul {
        let acl = master_token.map(|token| {
            format!(r#"acl {{ enabled = true default_policy = "deny" tokens {{ master = "{token}" agent = "{token}" }} }}"#)
        });
        let mut consul = Self::launch(master_token, acl);
        consul.token = master_token.map(str::to_owned);
        consul
    }

    fn launch(master_token: Option<&str>, hcl: Option<String>) -> Consul {
        Self::launch_on(None, master_token, hcl)
    }

    /// Stops a local dev agent and starts a new, empty one on the same HTTP port, as when an
    /// agent without persistence restarts.
    pub fn restart_empty(&mut self) {
        assert!(self._server.is_some(), "only an agent this process started");
        let port: u16 = self
            .http_address
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a local agent's address ends in its port");
        self._server.take();
        let fresh = Self::launch_on(Some(port), None, None);
        self._server = fresh._server;
    }

    fn launch_on(port: Option<u16>, master_token: Option<&str>, hcl: Option<String>) -> Consul {
        assert!(on_path("consul"), "{INSTALL_HINT}");
        let mut last_error = String::new();
        for _ in 0..5 {
            let http = port.unwrap_or_else(free_port);
            let mut args: Vec<String> = vec![
                "agent".into(),
                "-dev".into(),
                "-node".into(),
                format!("flagstore-{http}"),
            ];
            for (flag, value) in [
                ("-bind", "127.0.0.1".to_owned()),
                ("-client", "127.0.0.1".to_owned()),
                ("-http-port", http.to_string()),
                ("-server-port", free_port().to_string()),
                ("-serf-lan-port", free_port().to_string()),
                ("-serf-wan-port", free_port().to_string()),
                ("-dns-port", "-1".to_owned()),
                ("-grpc-port", "-1".to_owned()),
            ] {
                args.push(format!("{flag}={value}"));
            }
            if let Some(hcl) = &hcl {
                args.push("-hcl".into());
                args.push(hcl.clone());
            }
            let dir = TempDir::new().unwrap();
            let server = match LocalServer::start("consul", "consul", &args, dir, |log| {
                log.contains("Synced node info")
            }) {
                Ok(server) => server,
                Err(e) => {
                    last_error = e;
                    continue;
                }
            };
            let address = format!("http://127.0.0.1:{http}");
            match wait_for_kv_write(http, master_token) {
                Ok(()) => {
                    return Consul {
                        http_address: address.clone(),
                        address,
                        _server: Some(server),
                        ..Consul::default()
                    };
                }
                Err(e) => last_error = format!("{e}\n{}", server.log_text()),
            }
        }
        panic!("consul did not start: {last_error}");
    }

    /// The agent's HTTP address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The agent's plain HTTP address (the same as [`address`](Self::address) unless TLS).
    pub fn http_address(&self) -> &str {
        &self.http_address
    }

    /// The CA certificate (PEM) of a TLS agent.
    pub fn ca_pem(&self) -> &str {
        self.ca_pem.as_deref().expect("not a TLS agent")
    }

    /// The master token of an ACL agent.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }
}

/// Ready means a leader is elected and the KV store takes writes: retry one until it does.
fn wait_for_kv_write(port: u16, token: Option<&str>) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::new();
    while Instant::now() < deadline {
        match put_once(port, token) {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("consul never accepted a KV write: {last}"))
}

fn put_once(port: u16, token: Option<&str>) -> Result<(), String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let token_header = token
        .map(|t| format!("X-Consul-Token: {t}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "PUT /v1/kv/flagstore-harness/ready HTTP/1.1\r\nHost: 127.0.0.1\r\n{token_header}Content-Length: 2\r\nConnection: close\r\n\r\nok"
    );
    stream
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| e.to_string())?;
    if response.starts_with("HTTP/1.1 200") && response.trim_end().ends_with("true") {
        Ok(())
    } else {
        Err(response.lines().next().unwrap_or_default().to_owned())
    }
}

/// Plain requests to Consul's KV API, bypassing the store under test: to set up and inspect
/// what other writers would see.
#[derive(Debug, Clone)]
pub struct RawConsul {
    client: flagstore_consul::reqwest::Client,
    address: String,
    token: Option<String>,
}

impl RawConsul {
    /// A client for the agent at `address` (`http://host:port`), sending `token` if given.
    pub fn new(address: &str, token: Option<&str>) -> RawConsul {
        RawConsul {
            client: flagstore_consul::reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            address: address.trim_end_matches('/').to_owned(),
            token: token.map(str::to_owned),
        }
    }

    async fn send(
        &self,
        method: flagstore_consul::reqwest::Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> (u16, String) {
        let mut request = self
            .client
            .request(method, format!("{}/v1/kv/{path_and_query}", self.address));
        if let Some(token) = &self.token {
            request = request.header("X-Consul-Token", token);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }

    /// The value under `key`, if any (`?raw`: the bytes as stored).
    pub async fn get(&self, key: &str) -> Option<String> {
        let (status, body) = self
            .send(
                flagstore_consul::reqwest::Method::GET,
                &format!("{key}?raw"),
                None,
            )
            .await;
        (status == 200).then_some(body)
    }

    /// Writes `value` under `key`; the HTTP status (200 when Consul took it).
    pub async fn put_bytes(&self, key: &str, value: Vec<u8>) -> u16 {
        self.send(flagstore_consul::reqwest::Method::PUT, key, Some(value))
            .await
            .0
    }

    /// Deletes `key`, which must succeed.
    pub async fn delete(&self, key: &str) {
        let (status, _) = self
            .send(flagstore_consul::reqwest::Method::DELETE, key, None)
            .await;
        assert_eq!(status, 200, "DELETE {key}");
    }

    /// Writes `value` under `key`, which must succeed.
    pub async fn put(&self, key: &str, value: &str) {
        assert_eq!(
            self.put_bytes(key, value.as_bytes().to_vec()).await,
            200,
            "PUT {key}"
        );
    }

    /// Every key under `prefix`.
    pub async fn keys(&self, prefix: &str) -> Vec<String> {
        let (status, body) = self
            .send(
                flagstore_consul::reqwest::Method::GET,
                &format!("{prefix}?keys"),
                None,
            )
            .await;
        if status == 200 {
            serde_json::from_str(&body).unwrap()
        } else {
            Vec::new()
        }
    }

    /// A new ACL token whose one policy has these rules (HCL), made with this client's token
    /// (which must be allowed to manage ACLs).
    pub async fn token_with_rules(&self, name: &str, rules: &str) -> String {
        let send = |path: &str, body: serde_json::Value| {
            let mut request = self
                .client
                .put(format!("{}/v1/acl/{path}", self.address))
                .body(body.to_string());
            if let Some(token) = &self.token {
                request = request.header("X-Consul-Token", token);
            }
            request.send()
        };
        let policy = send("policy", serde_json::json!({"Name": name, "Rules": rules}))
            .await
            .unwrap();
        assert!(
            policy.status().is_success(),
            "policy: {}",
            policy.text().await.unwrap()
        );
        let token = send(
            "token",
            serde_json::json!({"Description": name, "Policies": [{"Name": name}]}),
        )
        .await
        .unwrap();
        assert!(
            token.status().is_success(),
            "token: {}",
            token.text().await.unwrap()
        );
        let body: serde_json::Value = serde_json::from_str(&token.text().await.unwrap()).unwrap();
        body["SecretID"].as_str().unwrap().to_owned()
    }

    /// Deletes every key under `prefix`.
    pub async fn delete_recursive(&self, prefix: &str) {
        let (status, body) = self
            .send(
                flagstore_consul::reqwest::Method::DELETE,
                &format!("{prefix}?recurse"),
                None,
            )
            .await;
        assert_eq!(status, 200, "DELETE {prefix}: {body}");
    }
}

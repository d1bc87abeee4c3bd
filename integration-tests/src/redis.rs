//! Redis for the tests: `FLAGSTORE_TEST_REDIS_URL`, else a local `redis-server`.

use tempfile::TempDir;
use testcontainers::core::WaitFor;

use crate::docker::DockerService;
use crate::process::{LocalServer, free_port, on_path};
use crate::tls::{TestCertificates, generate};

/// The variable naming an existing Redis to test against instead of starting one.
pub const URL_VAR: &str = "FLAGSTORE_TEST_REDIS_URL";

const INSTALL_HINT: &str = "no Redis to test against: set FLAGSTORE_TEST_REDIS_URL=redis://host:port, \
     install redis-server (Debian: apt-get install redis-server; scripts/install-servers.sh does it), \
     or run a Docker engine";

/// A Redis the tests can use: an external one, or a `redis-server` this process started.
#[derive(Debug)]
pub struct Redis {
    url: String,
    server: Option<LocalServer>,
    // Held for its Drop, which removes the container.
    _container: Option<DockerService>,
    certs: Option<TestCertificates>,
}

impl Redis {
    /// The Redis from `FLAGSTORE_TEST_REDIS_URL`, else a fresh local `redis-server`, else a
    /// `redis` container where Docker answers.
    pub fn start() -> Redis {
        match std::env::var(URL_VAR) {
            Ok(url) if !url.is_empty() => Redis {
                url,
                server: None,
                _container: None,
                certs: None,
            },
            _ if on_path("redis-server") => Self::start_local(&[]),
            _ => {
                let ready = WaitFor::message_on_stdout("Ready to accept connections");
                // The version Debian's redis-server has, as docker-compose.yml pins it.
                let container = DockerService::start("redis", "7.0.15", 6379, ready, vec![])
                    .unwrap_or_else(|e| panic!("{INSTALL_HINT}\n({e})"));
                let (host, port) = container.address();
                Redis {
                    url: format!("redis://{host}:{port}"),
                    server: None,
                    _container: Some(container),
                    certs: None,
                }
            }
        }
    }

    /// A fresh local `redis-server` with these extra arguments; never an external one, since
    /// the test needs that configuration (or needs to stop the server).
    pub fn start_local(extra: &[&str]) -> Redis {
        let (server, port) = launch(|port| {
            let mut args = base_args();
            args.extend(["--port".to_owned(), port.to_string()]);
            args.extend(extra.iter().map(|s| (*s).to_owned()));
            (args, None)
        });
        Redis {
            url: format!("redis://127.0.0.1:{port}"),
            server: Some(server),
            _container: None,
            certs: None,
        }
    }

    /// A fresh local `redis-server` whose users are the lines of an ACL file
    /// (`user app on >password ~* &* +@all`).
    pub fn start_with_acl(acl_lines: &[&str]) -> Redis {
        let (server, port) = launch(|port| {
            let dir = TempDir::new().unwrap();
            let acl = dir.path().join("users.acl");
            std::fs::write(&acl, acl_lines.join("\n") + "\n").unwrap();
            let mut args = base_args();
            args.extend(["--port".to_owned(), port.to_string()]);
            args.extend(["--aclfile".to_owned(), acl.to_str().unwrap().to_owned()]);
            (args, Some(dir))
        });
        Redis {
            url: format!("redis://127.0.0.1:{port}"),
            server: Some(server),
            _container: None,
            certs: None,
        }
    }

    /// A fresh local `redis-server` that only speaks TLS, with a throwaway CA.
    pub fn start_tls() -> Redis {
        let mut certs = None;
        let (server, port) = launch(|port| {
            let dir = TempDir::new().unwrap();
            let generated = generate(dir.path());
            let mut args = base_args();
            args.extend(
                [
                    "--port",
                    "0",
                    "--tls-port",
                    &port.to_string(),
                    "--tls-cert-file",
                    generated.cert_file.to_str().unwrap(),
                    "--tls-key-file",
                    generated.key_file.to_str().unwrap(),
                    "--tls-ca-cert-file",
                    generated.ca_file.to_str().unwrap(),
                    "--tls-auth-clients",
                    "no",
                ]
                .map(str::to_owned),
            );
            certs = Some(generated);
            (args, Some(dir))
        });
        Redis {
            url: format!("rediss://127.0.0.1:{port}"),
            server: Some(server),
            _container: None,
            certs,
        }
    }

    /// The server's URL (no credentials).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The server's URL on database `db`, replacing any database the URL names (a shared server
    /// from `FLAGSTORE_TEST_REDIS_URL` may name one).
    pub fn url_with_db(&self, db: u8) -> String {
        let mut url = url::Url::parse(&self.url).expect("a Redis URL");
        url.set_path(&format!("/{db}"));
        url.to_string()
    }

    /// The throwaway CA certificate (PEM) of a TLS server.
    pub fn ca_pem(&self) -> &str {
        &self.certs.as_ref().expect("not a TLS server").ca_pem
    }

    /// Whether this process started the server (so it may be reconfigured or stopped).
    pub fn is_local(&self) -> bool {
        self.server.is_some()
    }

    /// Stops a local server now, to test what happens when Redis goes away.
    pub fn stop(&mut self) {
        self.server.take();
    }

    /// After [`stop`](Self::stop): a new, empty local server on the same port, as when a Redis
    /// without persistence restarts.
    pub fn restart_empty(&mut self) {
        let port: u16 = self
            .url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("a local plain server's URL ends in its port");
        self.server.take();
        let mut args = base_args();
        args.extend(["--port".to_owned(), port.to_string()]);
        let server = LocalServer::start(
            "redis-server",
            "redis-server",
            &args,
            TempDir::new().unwrap(),
            |log| log.contains("Ready to accept connections"),
        )
        .unwrap_or_else(|e| panic!("could not restart redis-server on port {port}: {e}"));
        self.server = Some(server);
    }

    /// Freezes a local server (SIGSTOP): it keeps accepting connections and never answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Unfreezes a server frozen by [`pause`](Self::pause).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let server = self
            .server
            .as_ref()
            .expect("only a server this process started");
        let status = std::process::Command::new("kill")
            .args([signal, &server.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal} {}", server.pid());
    }
}

fn base_args() -> Vec<String> {
    // No persistence, no protected mode surprises, loopback only.
    [
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "no",
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Starts redis-server on a free port; retries with another port if one was taken meanwhile.
fn launch(mut config: impl FnMut(u16) -> (Vec<String>, Option<TempDir>)) -> (LocalServer, u16) {
    assert!(on_path("redis-server"), "{INSTALL_HINT}");
    let mut last_error = String::new();
    for _ in 0..5 {
        let port = free_port();
        let (args, dir) = config(port);
        let dir = dir.unwrap_or_else(|| TempDir::new().unwrap());
        match LocalServer::start("redis-server", "redis-server", &args, dir, |log| {
            log.contains("Ready to accept connections")
        }) {
            Ok(server) => return (server, port),
            Err(e) => last_error = e,
        }
    }
    panic!("redis-server did not start: {last_error}");
}

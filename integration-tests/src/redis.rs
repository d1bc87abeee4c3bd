//! Redis for the tests: `FLAGSTORE_TEST_REDIS_URL`, else a local `redis-server`.

use std::time::Duration;

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

/// A local Redis Cluster of three primaries (no replicas), every slot assigned, started from the
/// local `redis-server` and `redis-cli`; stopped when dropped.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<(LocalServer, u16)>,
}

impl RedisCluster {
    /// Starts three cluster-enabled nodes, joins them with `redis-cli --cluster create`, and waits
    /// until every node reports `cluster_state:ok`.
    pub fn start() -> RedisCluster {
        assert!(
            on_path("redis-server") && on_path("redis-cli"),
            "{INSTALL_HINT}"
        );
        let nodes: Vec<(LocalServer, u16)> = (0..3).map(|_| start_cluster_node()).collect();
        let mut create = std::process::Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for (_, port) in &nodes {
            create.arg(format!("127.0.0.1:{port}"));
        }
        let output = create
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        let cluster = RedisCluster { nodes };
        for (_, port) in &cluster.nodes {
            wait_until(Duration::from_secs(30), || {
                redis_cli(*port, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
            })
            .unwrap_or_else(|| panic!("node {port} never reported cluster_state:ok"));
        }
        cluster
    }

    /// A cluster of three nodes with no slot assigned: every key is unserved.
    pub fn start_without_slots() -> RedisCluster {
        assert!(on_path("redis-server"), "{INSTALL_HINT}");
        RedisCluster {
            nodes: (0..3).map(|_| start_cluster_node()).collect(),
        }
    }

    /// The nodes as `host:port`.
    pub fn nodes(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|(_, port)| format!("127.0.0.1:{port}"))
            .collect()
    }

    /// `redis+cluster://…` naming every node.
    pub fn url(&self) -> String {
        format!("redis+cluster://{}", self.nodes().join(","))
    }

    /// Restarts the node on `port` empty (no persistence; it keeps its `nodes.conf`, so it comes
    /// back with its slots) and waits until every node reports `cluster_state:ok` again.
    pub fn restart_node_on(&mut self, port: u16) {
        let (server, port) = self
            .nodes
            .iter_mut()
            .find(|(_, p)| *p == port)
            .unwrap_or_else(|| panic!("no cluster node on port {port}"));
        server
            .restart(|log| log.contains("Ready to accept connections"))
            .unwrap_or_else(|e| panic!("cluster node {port} did not restart: {e}"));
        for (_, port) in &self.nodes {
            wait_until(Duration::from_secs(30), || {
                redis_cli(*port, &["CLUSTER", "INFO"]).contains("cluster_state:ok")
            })
            .unwrap_or_else(|| {
                panic!("node {port} never reported cluster_state:ok after a restart")
            });
        }
    }

    /// `CLUSTER KEYSLOT key`, asked of the first node.
    pub fn keyslot(&self, key: &str) -> u16 {
        redis_cli(self.nodes[0].1, &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .unwrap()
    }

    /// The port of the node serving `slot`, from `CLUSTER SLOTS`.
    pub fn node_for_slot(&self, slot: u16) -> u16 {
        let out = redis_cli(self.nodes[0].1, &["--no-raw", "CLUSTER", "SLOTS"]);
        // Each range prints as: N) 1) (integer) START 2) (integer) END 3) 1) "127.0.0.1" 2) (integer) PORT …
        let numbers: Vec<u64> = out
            .lines()
            .filter_map(|l| l.split("(integer) ").nth(1))
            .filter_map(|n| n.trim().parse().ok())
            .collect();
        // Per range the integers are START, END, PORT, then node id-less extras (none on 7.0).
        for range in numbers.chunks(3) {
            if let [start, end, port] = range
                && (*start..=*end).contains(&u64::from(slot))
            {
                return u16::try_from(*port).unwrap();
            }
        }
        panic!("no node serves slot {slot}: {out}");
    }
}

fn start_cluster_node() -> (LocalServer, u16) {
    let mut last_error = String::new();
    for _ in 0..5 {
        let (port, bus) = (free_port(), free_port());
        let mut args = base_args();
        args.extend(
            [
                "--port",
                &port.to_string(),
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus.to_string(),
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            ]
            .map(str::to_owned),
        );
        match LocalServer::start(
            "redis-server",
            "redis-server",
            &args,
            TempDir::new().unwrap(),
            |log| log.contains("Ready to accept connections"),
        ) {
            Ok(server) => return (server, port),
            Err(e) => last_error = e,
        }
    }
    panic!("a cluster node did not start: {last_error}");
}

/// A primary, one replica and one Sentinel watching them as `mymaster`, all local; stopped when
/// dropped.
#[derive(Debug)]
pub struct RedisSentinel {
    primary: Option<(LocalServer, u16)>,
    replica: (LocalServer, u16),
    sentinel: (LocalServer, u16),
}

/// The name the Sentinel knows the primary by.
pub const MASTER_NAME: &str = "mymaster";

impl RedisSentinel {
    /// Starts the three, and waits until the Sentinel has found the replica (so a failover can
    /// promote it).
    pub fn start() -> RedisSentinel {
        assert!(
            on_path("redis-sentinel"),
            "{INSTALL_HINT} (and redis-sentinel)"
        );
        let (primary, primary_port) = launch(|port| {
            let mut args = base_args();
            args.extend(["--port".to_owned(), port.to_string()]);
            (args, None)
        });
        let (replica, replica_port) = launch(|port| {
            let mut args = base_args();
            args.extend(["--port".to_owned(), port.to_string()]);
            args.extend([
                "--replicaof".to_owned(),
                "127.0.0.1".to_owned(),
                primary_port.to_string(),
            ]);
            (args, None)
        });
        wait_until(Duration::from_secs(30), || {
            redis_cli(replica_port, &["INFO", "replication"]).contains("master_link_status:up")
        })
        .expect("the replica never synced with the primary");
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            let dir = TempDir::new().unwrap();
            let conf = dir.path().join("sentinel.conf");
            std::fs::write(
                &conf,
                format!(
                    "port {port}\nbind 127.0.0.1\nprotected-mode no\n\
                     sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} 1\n\
                     sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                     sentinel failover-timeout {MASTER_NAME} 10000\n"
                ),
            )
            .unwrap();
            let args = [conf.to_str().unwrap().to_owned()];
            match LocalServer::start("redis-sentinel", "redis-sentinel", &args, dir, |log| {
                log.contains("+slave slave")
            }) {
                Ok(server) => {
                    return RedisSentinel {
                        primary: Some((primary, primary_port)),
                        replica: (replica, replica_port),
                        sentinel: (server, port),
                    };
                }
                Err(e) => last_error = e,
            }
        }
        panic!("redis-sentinel did not start: {last_error}");
    }

    /// `redis+sentinel://127.0.0.1:PORT/mymaster`.
    pub fn url(&self) -> String {
        format!(
            "redis+sentinel://127.0.0.1:{}/{MASTER_NAME}",
            self.sentinel.1
        )
    }

    /// The Sentinel as `host:port`.
    pub fn sentinel_node(&self) -> String {
        format!("127.0.0.1:{}", self.sentinel.1)
    }

    /// Makes the Sentinel watch the current primary under a second name as well.
    pub fn monitor(&self, name: &str) {
        let port = self.primary_port().to_string();
        let out = redis_cli(
            self.sentinel.1,
            &["SENTINEL", "MONITOR", name, "127.0.0.1", &port, "1"],
        );
        assert_eq!(out.trim(), "OK", "SENTINEL MONITOR {name}: {out}");
    }

    /// The primary's port, as the Sentinel reports it now.
    pub fn primary_port(&self) -> u16 {
        let out = redis_cli(
            self.sentinel.1,
            &["SENTINEL", "get-master-addr-by-name", MASTER_NAME],
        );
        out.lines()
            .nth(1)
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or(0)
    }

    /// Waits until the replica has every write the primary has taken (`WAIT 1`).
    pub fn wait_for_replication(&self) {
        let (_, port) = self.primary.as_ref().expect("the primary is running");
        let acked = redis_cli(*port, &["WAIT", "1", "5000"]);
        assert_eq!(
            acked.trim(),
            "1",
            "the replica did not acknowledge the writes"
        );
    }

    /// Kills the primary and waits until the Sentinel has promoted the replica.
    pub fn fail_over(&mut self) {
        self.primary.take();
        let replica = self.replica.1;
        wait_until(Duration::from_secs(60), || self.primary_port() == replica)
            .expect("the Sentinel never promoted the replica");
        wait_until(Duration::from_secs(30), || {
            redis_cli(replica, &["ROLE"]).starts_with("master")
        })
        .expect("the replica never took the primary role");
    }
}

/// Runs `redis-cli -p PORT ARGS…` and returns its output.
fn redis_cli(port: u16, args: &[&str]) -> String {
    let output = std::process::Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Polls `done` until it holds or `deadline` passes; `None` on the deadline.
fn wait_until(deadline: Duration, mut done: impl FnMut() -> bool) -> Option<()> {
    let started = std::time::Instant::now();
    while started.elapsed() < deadline {
        if done() {
            return Some(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

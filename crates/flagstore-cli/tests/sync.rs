//! `flagstore sync` as an operator runs it: against a fake LaunchDarkly and a real Redis, as a
//! one-shot job and as a daemon with `/status` and `/metrics`, stopped by a signal.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Read;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use flagstore::testing::unique_run_id;
use flagstore::{Kind, PersistentDataStore};
use flagstore_integration_tests::redis::Redis;
use flagstore_integration_tests::{FakeLaunchDarkly, free_port, http_get as get};
use serde_json::{Value, json};

mod common;

const SDK_KEY: &str = "sdk-cli-0123-4567-89ab-cdef01234567";

fn data() -> Value {
    json!({
        "flags": {
            "alpha": {"key": "alpha", "version": 3, "on": true, "variations": [true, false],
                      "fallthrough": {"variation": 0}, "offVariation": 1, "salt": "a", "new": 1.50},
            "beta": {"key": "beta", "version": 1, "on": false, "variations": ["x"],
                     "fallthrough": {"variation": 0}, "offVariation": 0, "salt": "b"},
        },
        "segments": {"seg": {"key": "seg", "version": 2, "included": ["alice"], "salt": "s"}},
    })
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_writes_reads_back_and_exits_0_only_if_it_all_worked() {
    let redis = Redis::start();
    let store = format!("{}?prefix=once{}", redis.url(), unique_run_id());
    let fake = FakeLaunchDarkly::start(SDK_KEY, data());
    let once = |key: Option<&str>| {
        let mut command = common::flagstore_command(&store);
        command.args(["sync", "--once", "--base-uri", fake.uri()]);
        if let Some(key) = key {
            command.env("LD_SDK_KEY", key);
        }
        command.output().unwrap()
    };

    let output = once(Some(SDK_KEY));
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(
        text(&output.stdout),
        "default: 2 flags and 1 segments written to 1 store(s) and read back\n"
    );
    // The store holds exactly the data LaunchDarkly sent, byte for byte.
    let dumped = common::flagstore_command(&store)
        .arg("dump")
        .output()
        .unwrap();
    assert_eq!(text(&dumped.stdout).trim(), data().to_string());

    let refused = once(Some("sdk-wrong-key-2222-3333"));
    assert!(!refused.status.success());
    let err = text(&refused.stderr);
    assert!(
        err.contains("HTTP 401 (the SDK key is invalid or revoked)"),
        "{err}"
    );
    assert!(!err.contains("sdk-wrong"), "{err}");

    let missing = once(None);
    assert!(!missing.status.success());
    let err = text(&missing.stderr);
    assert!(
        err.contains("LD_SDK_KEY is not set; or give --config FILE"),
        "{err}"
    );
}

/// A `flagstore sync` process, killed if a test fails before it ends.
struct Daemon(Child);

impl Daemon {
    fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.0.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The exit status, within 15 s.
    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "flagstore sync is still running after 15 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr(&mut self) -> String {
        let mut err = String::new();
        self.0
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        err
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `/status`, once it says `healthy` (up to 15 s).
fn healthy_status(address: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some((200, body)) = get(address, "/status") {
            let status: Value = serde_json::from_str(&body).unwrap();
            if status["status"] == "healthy" {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "not healthy after 15 s: {status}"
            );
        }
        assert!(
            Instant::now() < deadline,
            "no /status on {address} after 15 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_serves_status_and_metrics_and_stops_cleanly_on_sigterm() {
    let redis = Redis::start();
    let run = unique_run_id();
    let fake = FakeLaunchDarkly::start(SDK_KEY, data());
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("staging.key");
    std::fs::write(&key_file, format!("{SDK_KEY}\n")).unwrap();
    let config = dir.path().join("sync.toml");
    std::fs::write(
        &config,
        format!(
            r#"
stream_uri = "{uri}"
base_uri = "{uri}"

[environments.production]
sdk_key_env = "TEST_LD_KEY_PRODUCTION"
store = "{redis}"
prefix = "prod{run}"

[environments.staging]
sdk_key_file = {key_file:?}
stores = ["{redis}?prefix=stag{run}"]
"#,
            uri = fake.uri(),
            redis = redis.url(),
        ),
    )
    .unwrap();
    let address = format!("127.0.0.1:{}", free_port());
    let mut daemon = Daemon(
        common::flagstore_command("sqlite:unused.db")
            .args([
                "sync",
                "--config",
                config.to_str().unwrap(),
                "--listen",
                &address,
            ])
            .env("TEST_LD_KEY_PRODUCTION", SDK_KEY)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );

    let status = healthy_status(&address);
    for (env, prefix) in [
        ("production", format!("prod{run}")),
        ("staging", format!("stag{run}")),
    ] {
        let env = &status["environments"][env];
        assert_eq!(env["status"], "connected", "{env}");
        assert_eq!(env["sdkKey"], "sdk-********4567");
        assert_eq!(env["connectionStatus"]["state"], "VALID");
        assert!(env["connectionStatus"]["stateSince"].as_u64().unwrap() > 1_600_000_000_000);
        let store = &env["dataStoreStatus"];
        assert_eq!(store["state"], "VALID");
        assert_eq!(store["database"], "redis");
        assert_eq!(store["dbServer"], redis.url());
        assert_eq!(store["dbPrefix"], prefix.as_str());
    }
    let (_, raw) = get(&address, "/status").unwrap();
    assert!(!raw.contains(SDK_KEY), "{raw}");

    let (code, metrics) = get(&address, "/metrics").unwrap();
    assert_eq!(code, 200);
    for series in [
        r#"flagstore_sync_state{env="production",state="VALID"} 1"#,
        r#"flagstore_sync_state{env="staging",state="OFF"} 0"#,
        r#"flagstore_sync_items{env="staging",kind="features"} 2"#,
        r#"flagstore_sync_events_total{env="production",event="put"} 1"#,
        r#"flagstore_sync_store_valid{env="production",store="0"} 1"#,
    ] {
        assert!(metrics.contains(series), "no {series} in:\n{metrics}");
    }
    assert!(metrics.contains("flagstore_sync_last_update_timestamp_seconds{env=\"production\"}"));
    assert_eq!(get(&address, "/other").unwrap().0, 404);

    // A change reaches both environments' stores.
    let mut flag = data()["flags"]["beta"].clone();
    flag["version"] = json!(2);
    fake.patch("flags", flag.clone());
    let reader = flagstore_url::open(&format!("{}?prefix=stag{run}", redis.url())).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while reader
        .get(&Kind::FEATURES, "beta")
        .await
        .unwrap()
        .unwrap()
        .version()
        != 2
    {
        assert!(Instant::now() < deadline, "the patch did not arrive");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        reader
            .get(&Kind::FEATURES, "beta")
            .await
            .unwrap()
            .unwrap()
            .json(),
        flag.to_string()
    );

    daemon.signal("TERM");
    assert!(daemon.wait().success());
    let err = daemon.stderr();
    assert!(!err.contains(SDK_KEY), "{err}");
}

#[test]
fn a_daemon_exits_non_zero_once_every_key_is_refused() {
    let redis = Redis::start();
    let fake = FakeLaunchDarkly::start(SDK_KEY, data());
    let mut daemon = Daemon(
        common::flagstore_command(&format!(
            "{}?prefix=refused{}",
            redis.url(),
            unique_run_id()
        ))
        .args(["sync", "--stream-uri", fake.uri(), "--base-uri", fake.uri()])
        .env("LD_SDK_KEY", "sdk-revoked-4444-5555")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap(),
    );
    assert!(!daemon.wait().success());
    let err = daemon.stderr();
    assert!(err.contains("LaunchDarkly answered HTTP 401"), "{err}");
    assert!(err.contains("refused every environment's SDK key"), "{err}");
    assert!(!err.contains("sdk-revoked"), "{err}");
    assert_eq!(fake.requests().streams, 1);
}

//! The `flagstore` binary as a user runs it, against every backend.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use flagstore::testing::unique_run_id;
use flagstore_dynamodb::{DynamoDbStore, create_table};
use flagstore_integration_tests::consul::Consul;
use flagstore_integration_tests::dynamodb::DynamoDb;
use flagstore_integration_tests::free_port;
use flagstore_integration_tests::redis::Redis;
use serde_json::{Value, json};

mod common;

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/data/flags.json");

/// Runs `flagstore --store STORE ARGS…` with a clean environment of AWS test credentials.
fn flagstore(store: &str, args: &[&str]) -> Output {
    flagstore_with_input(store, args, None)
}

fn flagstore_with_input(store: &str, args: &[&str], input: Option<&str>) -> Output {
    run_flagstore(store, args, input, &[])
}

/// Runs `flagstore --store STORE ARGS…` with extra environment variables.
fn flagstore_env(store: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    run_flagstore(store, args, None, env)
}

fn run_flagstore(store: &str, args: &[&str], input: Option<&str>, env: &[(&str, &str)]) -> Output {
    let mut command = common::flagstore_command(store);
    command
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let mut child = command.spawn().unwrap();
    if let Some(input) = input {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

fn ok(output: &Output) -> String {
    assert!(
        output.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn failure(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "succeeded: {}",
        String::from_utf8_lossy(&output.stdout)
    );
    let stderr = String::from_utf8(output.stderr.clone()).unwrap();
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
    stderr
}

fn sqlite_url(dir: &Path) -> String {
    format!("sqlite:{}", dir.join("flags.db").display())
}

async fn dynamo_url(db: &DynamoDb) -> String {
    let table = format!("cli_{}", unique_run_id());
    let store = DynamoDbStore::builder(&table)
        .url(db.endpoint())
        .region("us-east-1")
        .static_credentials("test", "test")
        .build()
        .unwrap();
    create_table(store.client().await, &table).await.unwrap();
    format!(
        "dynamodb://{table}?endpoint={}&region=us-east-1",
        db.endpoint()
    )
}

/// `load` then `dump` gives back every item of the file, byte for byte.
fn check_round_trip(store: &str) {
    let loaded = flagstore(store, &["load", EXAMPLE]);
    ok(&loaded);
    assert!(String::from_utf8_lossy(&loaded.stderr).contains("loaded 7 flags and 1 segment into"));
    let dumped = ok(&flagstore(store, &["dump"]));
    let original: Value = serde_json::from_str(&std::fs::read_to_string(EXAMPLE).unwrap()).unwrap();
    let back: Value = serde_json::from_str(&dumped).unwrap();
    assert_eq!(back, original, "{store}");
    // Loading the dump and dumping again is byte-identical: stored JSON is never re-serialized.
    ok(&flagstore_with_input(store, &["load", "-"], Some(&dumped)));
    assert_eq!(ok(&flagstore(store, &["dump"])), dumped);
}

#[test]
fn round_trip_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    check_round_trip(&sqlite_url(dir.path()));
}

#[test]
fn round_trip_on_redis() {
    let redis = Redis::start();
    check_round_trip(&format!("{}?prefix=cli{}", redis.url(), unique_run_id()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_on_dynamodb() {
    let db = DynamoDb::start();
    check_round_trip(&dynamo_url(&db).await);
}

#[test]
fn round_trip_on_consul() {
    let consul = Consul::start();
    let address = consul.address().replace("http://", "consul://");
    check_round_trip(&format!("{address}?prefix=cli{}", unique_run_id()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_through_every_backend_keeps_identical_dumps() {
    let (redis, db, consul) = (Redis::start(), DynamoDb::start(), Consul::start());
    let dir = tempfile::tempdir().unwrap();
    let fresh_table = format!("fresh_{}", unique_run_id());
    let chain = [
        format!("{}?prefix=copy{}", redis.url(), unique_run_id()),
        format!(
            "dynamodb://{fresh_table}?endpoint={}&region=us-east-1",
            db.endpoint()
        ),
        format!(
            "{}?prefix=copy{}",
            consul.address().replace("http://", "consul://"),
            unique_run_id()
        ),
        sqlite_url(dir.path()),
    ];
    ok(&flagstore(&chain[0], &["load", EXAMPLE]));
    let first = ok(&flagstore(&chain[0], &["dump"]));
    for pair in chain.windows(2) {
        // The DynamoDB table does not exist yet: --create-table makes it.
        let copied = flagstore(&pair[0], &["copy", "--to", &pair[1], "--create-table"]);
        ok(&copied);
        assert_eq!(
            ok(&flagstore(&pair[1], &["dump"])),
            first,
            "{} -> {}",
            pair[0],
            pair[1]
        );
    }
    let listed: Value =
        serde_json::from_str(&ok(&flagstore(&chain[3], &["ls", "--json"]))).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 8);
}

#[test]
fn eval_prints_the_sdks_answer() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_url(dir.path());
    ok(&flagstore(&store, &["load", EXAMPLE]));
    let alice = r#"{"kind":"user","key":"alice","email":"alice@example.com","country":"at"}"#;
    let out: Value = serde_json::from_str(&ok(&flagstore(
        &store,
        &["eval", "checkout-v2", "--context", alice, "--json"],
    )))
    .unwrap();
    assert_eq!(
        out,
        json!({"value": true, "variationIndex": 0, "reason": {"kind": "RULE_MATCH", "ruleIndex": 0, "ruleId": "rule-example-staff"}})
    );
    let out: Value = serde_json::from_str(&ok(&flagstore(
        &store,
        &["eval", "banner-text", "--context", alice, "--json"],
    )))
    .unwrap();
    assert_eq!(out["value"], json!("Grüß Gott ☀ — Willkommen"));
    let out: Value = serde_json::from_str(&ok(&flagstore(
        &store,
        &["eval", "no-such-flag", "--context", "bob", "--json"],
    )))
    .unwrap();
    assert_eq!(
        out["reason"],
        json!({"kind": "ERROR", "errorKind": "FLAG_NOT_FOUND"})
    );
    let text = ok(&flagstore(
        &store,
        &["eval", "maintenance-mode", "--context", "bob"],
    ));
    assert_eq!(
        text,
        "value:      false\nvariation:  1\nreason:     {\"kind\":\"OFF\"}\n"
    );
}

#[test]
fn bad_files_change_nothing_and_name_the_item() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_url(dir.path());
    ok(&flagstore(&store, &["load", EXAMPLE]));
    let before = ok(&flagstore(&store, &["dump"]));
    let cases = [
        ("not json at all", "error: -: not a flag data file"),
        (
            r#"{"flags":{"ok":{"key":"ok","version":1},"broken":{"key":"broken"}}}"#,
            "error: -: flags item \"broken\" is invalid: item has no version",
        ),
        (
            r#"{"segments":{"s":{"key":"other","version":1}}}"#,
            "error: -: segments item \"s\" has the key \"other\" inside",
        ),
        (
            r#"{"flags":{"neg":{"key":"neg","version":-3}}}"#,
            "error: -: flags item \"neg\" is invalid: item version -3 is not a non-negative integer",
        ),
    ];
    for (input, start) in cases {
        let err = failure(&flagstore_with_input(&store, &["load", "-"], Some(input)));
        assert!(err.starts_with(start), "{err}");
    }
    let missing = failure(&flagstore(&store, &["load", "/no/such/file.json"]));
    assert!(
        missing.starts_with("error: could not read /no/such/file.json"),
        "{missing}"
    );
    assert_eq!(
        ok(&flagstore(&store, &["dump"])),
        before,
        "the store is unchanged"
    );
}

#[test]
fn bad_urls_are_one_line_errors_without_secrets() {
    for (url, start) in [
        (
            "memcached://h",
            "error: store-url: invalid configuration: unknown store type \"memcached\"",
        ),
        (
            "redis://app:Sup3rSecret@h:notaport",
            "error: redis: invalid configuration: \"redis://app:***@h:notaport\" is not a valid Redis URL",
        ),
        (
            "redis://app:Sup3rSecret@h?db=2",
            "error: redis: invalid configuration: unknown option \"db\" in \"redis://app:***@h\"",
        ),
        (
            "dynamodb://flags?endpoint=ftp://x",
            "error: dynamodb: invalid configuration: url \"ftp://x\" is not an http:// or https:// URL",
        ),
        (
            "redis://:Sup3rSecret/PW@h?prefix=a&prefix=b",
            "error: redis: invalid configuration: option \"prefix\" is given twice in \"redis://:***@h\"",
        ),
        (
            "consul://Sup3rSecret@h",
            "error: consul: invalid configuration: \"consul://***@h\": a consul URL takes no user or token",
        ),
    ] {
        let err = failure(&flagstore(url, &["ls"]));
        assert!(err.starts_with(start), "{url}: {err}");
        assert!(!err.contains("Sup3rSecret"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_servers_fail_fast_with_a_clear_error() {
    for url in [
        format!("redis://127.0.0.1:{}", free_port()),
        format!("consul://127.0.0.1:{}", free_port()),
        format!(
            "dynamodb://flags?endpoint=http://127.0.0.1:{}&region=us-east-1",
            free_port()
        ),
    ] {
        let started = Instant::now();
        let err = failure(&flagstore(&url, &["status"]));
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{url} took {:?}",
            started.elapsed()
        );
        assert!(err.contains("does not answer"), "{url}: {err}");
        let err = failure(&flagstore(&url, &["ls"]));
        assert!(
            err.contains("failed") || err.contains("timed out"),
            "{url}: {err}"
        );
    }
}

#[test]
fn inspection_commands() {
    let dir = tempfile::tempdir().unwrap();
    let store = sqlite_url(dir.path());
    // Commands that only read never create a store.
    for command in [&["status"][..], &["ls"], &["dump"], &["get", "flags", "x"]] {
        let err = failure(&flagstore(&store, command));
        assert!(err.contains("does not exist"), "{command:?}: {err}");
    }
    assert!(!dir.path().join("flags.db").exists());
    ok(&flagstore(&store, &["load", EXAMPLE]));
    let status: Value =
        serde_json::from_str(&ok(&flagstore(&store, &["status", "--json"]))).unwrap();
    assert_eq!(status["initialized"], json!(true));
    assert_eq!(
        status["counts"]["features"],
        json!({"items": 7, "deleted": 0, "unreadable": 0})
    );
    assert_eq!(status["largest"][0]["key"], json!("checkout-v2"));
    let ls = ok(&flagstore(&store, &["ls", "segments"]));
    assert_eq!(
        ls,
        "segments   beta-testers                             v4\n"
    );
    let got = ok(&flagstore(&store, &["get", "flags", "maintenance-mode"]));
    // Exactly as the file had it, whitespace and all.
    assert!(
        got.starts_with("{\n      \"key\": \"maintenance-mode\", \"version\": 9,"),
        "{got}"
    );
    let err = failure(&flagstore(&store, &["get", "features", "nope"]));
    assert_eq!(err, "error: features/nope is not in the store\n");
    let bench: Value = serde_json::from_str(&ok(&flagstore(
        &store,
        &["bench", "--requests", "200", "--concurrency", "4", "--json"],
    )))
    .unwrap();
    assert_eq!(bench["flags"], json!(7));
    assert!(bench["cached"]["readsPerSecond"].as_f64().unwrap() > 0.0);
}

#[test]
fn the_demo_evaluates_the_examples() {
    let output = Command::new(env!("CARGO_BIN_EXE_flagstore"))
        .arg("demo")
        .env_remove("FLAGSTORE_URL")
        .output()
        .unwrap();
    let text = ok(&output);
    assert!(
        text.contains(r#"alice          banner-text     "Grüß Gott ☀ — Willkommen""#),
        "{text}"
    );
    assert!(text.contains(r#"{"kind":"PREREQUISITE_FAILED","prerequisiteKey":"checkout-v2"}"#));
}

/// A plain connection, to write as another program would.
async fn redis_conn(url: &str) -> flagstore_redis::redis::aio::MultiplexedConnection {
    flagstore_redis::redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Writes raw values into a Redis hash, as another program would.
async fn redis_hset(url: &str, hash: &str, pairs: &[(&str, &str)]) {
    use flagstore_redis::redis::AsyncCommands;
    let mut conn = redis_conn(url).await;
    for (field, value) in pairs {
        let _: () = conn.hset(hash, field, value).await.unwrap();
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_items_make_dump_and_copy_fail_unless_skipped() {
    let redis = Redis::start();
    let prefix = format!("bad{}", unique_run_id());
    let store = format!("{}?prefix={prefix}", redis.url());
    ok(&flagstore(&store, &["load", EXAMPLE]));
    redis_hset(
        redis.url(),
        &format!("{prefix}:features"),
        &[
            ("broken", "{truncated"),
            ("noversion", r#"{"key":"noversion"}"#),
        ],
    )
    .await;

    let dump = flagstore(&store, &["dump"]);
    let err = failure(&dump);
    assert!(dump.stdout.is_empty(), "no partial backup on stdout");
    assert!(
        err.contains("features/broken (item is not a JSON object)"),
        "{err}"
    );
    assert!(
        err.contains("features/noversion (item has no version)"),
        "{err}"
    );
    assert!(err.contains("--skip-invalid"), "{err}");
    let skipped = flagstore(&store, &["dump", "--skip-invalid"]);
    let dumped: Value = serde_json::from_str(&ok(&skipped)).unwrap();
    assert_eq!(dumped["flags"].as_object().unwrap().len(), 7);
    assert!(stderr(&skipped).contains("skipped the unreadable stored item features/broken"));

    let ls = flagstore(&store, &["ls"]);
    assert!(ok(&ls).contains("checkout-v2"));
    assert!(stderr(&ls).contains("skipped the unreadable stored item features/noversion"));
    let status: Value =
        serde_json::from_str(&ok(&flagstore(&store, &["status", "--json"]))).unwrap();
    assert_eq!(status["counts"]["features"]["unreadable"], json!(2));

    let dir = tempfile::tempdir().unwrap();
    let target = sqlite_url(dir.path());
    let err = failure(&flagstore(&store, &["copy", "--to", &target]));
    assert!(err.contains("nothing was written"), "{err}");
    assert!(
        !dir.path().join("flags.db").exists(),
        "the target was not touched"
    );
    ok(&flagstore(
        &store,
        &["copy", "--to", &target, "--skip-invalid"],
    ));
    assert_eq!(
        serde_json::from_str::<Value>(&ok(&flagstore(&target, &["dump"]))).unwrap(),
        dumped
    );
}

/// A flag data file holding one flag of `bytes` bytes beside the example's.
fn file_with_a_flag_of(dir: &Path, bytes: usize) -> String {
    let mut data: Value = serde_json::from_str(&std::fs::read_to_string(EXAMPLE).unwrap()).unwrap();
    let padding = "x".repeat(bytes - 60);
    data["flags"]["huge"] =
        json!({"key": "huge", "version": 1, "on": false, "description": padding});
    let path = dir.join("huge.json");
    std::fs::write(&path, data.to_string()).unwrap();
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_and_copy_refuse_items_over_the_backend_limit_before_writing() {
    let (db, consul) = (DynamoDb::start(), Consul::start());
    let dir = tempfile::tempdir().unwrap();
    let consul_url = format!(
        "{}?prefix=big{}",
        consul.address().replace("http://", "consul://"),
        unique_run_id()
    );
    for (store, bytes, backend) in [
        (dynamo_url(&db).await, 420_000, "DynamoDB's 409600-byte"),
        (consul_url, 530_000, "Consul's 524288-byte"),
    ] {
        ok(&flagstore(&store, &["load", EXAMPLE]));
        let before = ok(&flagstore(&store, &["dump"]));
        let big = file_with_a_flag_of(dir.path(), bytes);
        let err = failure(&flagstore(&store, &["load", &big]));
        assert!(err.contains("features/huge is "), "{err}");
        assert!(err.contains(backend), "{err}");
        assert!(err.contains("nothing was written"), "{err}");
        assert_eq!(ok(&flagstore(&store, &["dump"])), before, "{store}");

        // The same item arriving by copy from a store without that limit.
        let source = sqlite_url(&dir.path().join(format!("src{bytes}")));
        std::fs::create_dir_all(dir.path().join(format!("src{bytes}"))).unwrap();
        ok(&flagstore(&source, &["load", &big]));
        let err = failure(&flagstore(&source, &["copy", "--to", &store]));
        assert!(err.contains("features/huge is "), "{err}");
        assert_eq!(ok(&flagstore(&store, &["dump"])), before, "{store}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eval_reports_errors_instead_of_flag_not_found() {
    let redis = Redis::start();
    let run = unique_run_id();
    let context = ["--context", "alice"];

    // A corrupt flag, and one the SDK cannot parse.
    let store = format!("{}?prefix=ev{run}", redis.url());
    ok(&flagstore(&store, &["load", EXAMPLE]));
    redis_hset(
        redis.url(),
        &format!("ev{run}:features"),
        &[
            ("corrupt", "{truncated"),
            (
                "odd",
                r#"{"key":"odd","version":1,"on":true,"variations":"not a list"}"#,
            ),
        ],
    )
    .await;
    let err = failure(&flagstore(
        &store,
        &["eval", "corrupt", context[0], context[1]],
    ));
    assert!(
        err.contains("features/corrupt: the stored item is unreadable"),
        "{err}"
    );
    let err = failure(&flagstore(&store, &["eval", "odd", context[0], context[1]]));
    assert!(
        err.contains("features/odd is stored but the LaunchDarkly SDK cannot read it"),
        "{err}"
    );
    // A flag that is not there is an answer, not an error.
    let missing = ok(&flagstore(
        &store,
        &["eval", "nope", context[0], context[1], "--json"],
    ));
    assert!(missing.contains("FLAG_NOT_FOUND"), "{missing}");

    // A database error: the flags key holds a string, not a hash.
    let store = format!("{}?prefix=wt{run}", redis.url());
    ok(&flagstore(&store, &["load", EXAMPLE]));
    let _: () = flagstore_redis::redis::AsyncCommands::set(
        &mut redis_conn(redis.url()).await,
        format!("wt{run}:features"),
        "oops",
    )
    .await
    .unwrap();
    let err = failure(&flagstore(
        &store,
        &["eval", "checkout-v2", context[0], context[1]],
    ));
    assert!(
        err.contains("redis: get of features/checkout-v2 failed"),
        "{err}"
    );
    assert!(err.contains("WRONGTYPE"), "{err}");
}

#[test]
fn status_says_permission_denied_when_access_is_refused() {
    let redis = Redis::start_with_acl(&["user default off", "user app on >right-pw ~* &* +@all"]);
    let url = redis.url().replace("redis://", "redis://app:wr0ng-s3cret@");
    let output = flagstore(&url, &["status"]);
    let err = failure(&output);
    assert!(err.contains("permission denied"), "{err}");
    assert!(!err.contains("wr0ng-s3cret"), "{err}");
}

#[test]
fn library_logs_reach_stderr_as_rust_log_says_and_never_a_password() {
    let redis = Redis::start_with_acl(&["user default off", "user app on >right-pw ~* &* +@all"]);
    let url = redis.url().replace("redis://", "redis://app:right-pw@");
    let run = |rust_log: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_flagstore"));
        command
            .args(["--store", &url, "ls"])
            .env_remove("FLAGSTORE_URL");
        match rust_log {
            Some(filter) => command.env("RUST_LOG", filter),
            None => command.env_remove("RUST_LOG"),
        };
        command.output().unwrap()
    };
    // A debug log says which store was opened.
    let quiet = stderr(&run(None));
    assert!(!quiet.contains("DEBUG"), "{quiet}");
    let verbose = stderr(&run(Some("debug")));
    assert!(verbose.contains("DEBUG"), "{verbose}");
    assert!(
        verbose.contains("opened redis store at redis://app:***@"),
        "{verbose}"
    );
    assert!(!verbose.contains("right-pw"), "{verbose}");
}

#[test]
fn every_url_form_the_libraries_support_works() {
    let run = unique_run_id();
    // redis+unix://, with timeouts and a pool size as URL options.
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("redis.sock");
    let _redis = Redis::start_local(&["--unixsocket", socket.to_str().unwrap()]);
    let unix = format!(
        "redis+unix://{}?prefix=u{run}&connect_timeout=500ms&request_timeout=2s&pool_size=2",
        socket.display()
    );
    check_round_trip(&unix);

    // consul+https://, trusting the agent's private CA through CONSUL_CACERT.
    let consul = Consul::start_tls();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, consul.ca_pem()).unwrap();
    let https = format!(
        "{}?prefix=tls{run}&request_timeout=5s",
        consul.address().replace("https://", "consul+https://")
    );
    let cacert = [("CONSUL_CACERT", ca.to_str().unwrap())];
    ok(&flagstore_env(&https, &["load", EXAMPLE], &cacert));
    let ls = ok(&flagstore_env(&https, &["ls", "segments"], &cacert));
    assert_eq!(
        ls,
        "segments   beta-testers                             v4\n"
    );
    // Without the CA the agent's certificate is refused, in one line.
    let err = failure(&flagstore_env(&https, &["ls"], &[]));
    assert!(err.contains("consul:"), "{err}");

    // An option the backend does not take.
    let err = failure(&flagstore(&format!("{unix}&busy=1"), &["ls"]));
    assert!(err.contains("unknown option \"busy\""), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docker_compose_commands_work_as_written() {
    let (redis, db, consul) = (Redis::start(), DynamoDb::start(), Consul::start());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let compose = std::fs::read_to_string(root.join("docker-compose.yml")).unwrap();
    let commands: Vec<&str> = compose
        .lines()
        .filter_map(|line| line.strip_prefix("#   "))
        .filter(|line| line.contains("flagstore --store"))
        .collect();
    assert_eq!(commands.len(), 6, "{commands:?}");
    // The same commands, with the ports of this run's servers in place of the compose ones, and a
    // Redis database, DynamoDB table and Consul prefix of their own, in case the servers are
    // shared.
    let run = unique_run_id();
    let table = format!("compose{run}");
    let bin = Path::new(env!("CARGO_BIN_EXE_flagstore")).parent().unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    for command in commands {
        let command = command
            .replace("redis://localhost:6379", &redis.url_with_db(9))
            .replace("http://localhost:8000", db.endpoint())
            .replace("dynamodb://flags", &format!("dynamodb://{table}"))
            .replace(
                "consul://localhost:8500",
                &format!(
                    "{}?prefix=compose{run}",
                    consul.address().replace("http://", "consul://")
                ),
            );
        let output = Command::new("sh")
            .args(["-c", &command])
            .current_dir(&root)
            .env("PATH", &path)
            .env_remove("FLAGSTORE_URL")
            .env_remove("AWS_PROFILE")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .output()
            .unwrap();
        ok(&output);
    }
}

#[test]
fn cluster_and_sentinel_urls_work_everywhere_a_store_url_is_taken() {
    use flagstore_integration_tests::redis::{RedisCluster, RedisSentinel};
    let run = unique_run_id();
    let cluster = RedisCluster::start();
    let cluster_url = format!("{}?prefix={{cli{run}}}", cluster.url());
    check_round_trip(&cluster_url);
    let sentinel = RedisSentinel::start();
    let sentinel_url = format!("{}?prefix=cli{run}", sentinel.url());
    // copy --to takes them too, and the dumps agree.
    ok(&flagstore(&cluster_url, &["copy", "--to", &sentinel_url]));
    assert_eq!(
        ok(&flagstore(&sentinel_url, &["dump"])),
        ok(&flagstore(&cluster_url, &["dump"]))
    );
    // A prefix without a hash tag is refused for a cluster, in one line, password masked.
    let url = cluster
        .url()
        .replace("redis+cluster://", "redis+cluster://:Sup3rSecret@");
    let err = failure(&flagstore(&url, &["ls"]));
    assert!(
        err.contains("in cluster mode the prefix must hold a hash tag"),
        "{err}"
    );
    assert!(!err.contains("Sup3rSecret"), "{err}");
}

/// A running `flagstore watch --json`, its stdout lines arriving on a channel. Killed on drop.
struct Watcher {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Watcher {
    /// Starts watching `store`; the watcher, and what it said on stderr it follows.
    fn start(store: &str, extra: &[&str]) -> (Watcher, String) {
        use std::io::BufRead;
        let mut child = common::flagstore_command(store)
            .args(["watch", "--json"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // Ready once it says so on stderr: the feed is connected and the baseline read.
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        while !line.starts_with("watching ") {
            line.clear();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "watch ended");
            assert!(
                line.starts_with("watching ") || line.starts_with("serving /metrics"),
                "watch said: {line}"
            );
        }
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        let via = line
            .split(" via ")
            .nth(1)
            .unwrap_or_default()
            .trim()
            .to_owned();
        (Watcher { child, lines }, via)
    }

    fn next(&self) -> Value {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(10))
            .expect("a change line within 10 s");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_each_change_by_any_writer() {
    use flagstore::{Collection, Item, Kind, PersistentDataStore};
    let redis = Redis::start();
    let prefix = format!("watch{}", unique_run_id());
    let writer = flagstore_redis::RedisStore::builder()
        .url(redis.url())
        .prefix(&prefix)
        .build()
        .unwrap();
    let flag = |key: &str, version: u64| {
        Item::from_json(key, json!({"key": key, "version": version}).to_string()).unwrap()
    };
    writer
        .init(&[Collection::new(
            Kind::FEATURES,
            vec![flag("f", 1), flag("g", 1)],
        )])
        .await
        .unwrap();
    // Keyspace notifications, which the server announces only once the URL option lets the feed
    // turn them on; the default (client tracking) is watched in the SQLite and DynamoDB cases.
    let metrics = format!("127.0.0.1:{}", free_port());
    let (watcher, via) = Watcher::start(
        &format!(
            "{}?prefix={prefix}&feed=keyspace&keyspace_events=configure",
            redis.url()
        ),
        &["--metrics", &metrics],
    );
    assert!(via.contains("keyspace notifications"), "{via}");
    writer.upsert(&Kind::FEATURES, flag("f", 2)).await.unwrap();
    assert_eq!(
        watcher.next(),
        json!({"kind": "features", "key": "f", "version": 2, "deleted": false})
    );
    writer
        .upsert(&Kind::FEATURES, Item::tombstone("g", 2))
        .await
        .unwrap();
    assert_eq!(
        watcher.next(),
        json!({"kind": "features", "key": "g", "version": 2, "deleted": true})
    );
    // A re-init that drops g: f changed, g vanished (no version to show).
    writer
        .init(&[Collection::new(Kind::FEATURES, vec![flag("f", 3)])])
        .await
        .unwrap();
    assert_eq!(
        watcher.next(),
        json!({"kind": "features", "key": "f", "version": 3, "deleted": false})
    );
    assert_eq!(
        watcher.next(),
        json!({"kind": "features", "key": "g", "version": null, "deleted": true})
    );
    // The feed's metrics, scraped from the running process.
    let (code, page) = flagstore_integration_tests::http_get(&metrics, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(
        page.contains("flagstore_feed_connected{backend=\"redis\"} 1"),
        "{page}"
    );
    let changed = page
        .lines()
        .find_map(|l| {
            l.strip_prefix("flagstore_feed_events_total{backend=\"redis\",event=\"changed\"} ")
        })
        .and_then(|n| n.parse::<u64>().ok());
    assert!(changed.is_some_and(|n| n >= 3), "{page}");
}

#[test]
fn status_says_whether_the_change_feed_connects() {
    let redis = Redis::start();
    let store = format!(
        "{}?prefix=feed{}&keyspace_events=configure",
        redis.url(),
        unique_run_id()
    );
    ok(&flagstore(&store, &["load", EXAMPLE]));
    let report: Value =
        serde_json::from_str(&ok(&flagstore(&store, &["status", "--json"]))).unwrap();
    assert_eq!(report["changeFeed"]["connected"], json!(true));
    let via = report["changeFeed"]["via"].as_str().unwrap();
    assert!(via.contains("Redis client tracking"), "{via}");
    assert!(ok(&flagstore(&store, &["status"])).contains("change feed:  connected, via Redis"));

    let dir = tempfile::tempdir().unwrap();
    let sqlite = sqlite_url(dir.path());
    ok(&flagstore(&sqlite, &["load", EXAMPLE]));
    let report: Value =
        serde_json::from_str(&ok(&flagstore(&sqlite, &["status", "--json"]))).unwrap();
    assert_eq!(report["changeFeed"]["connected"], json!(true));
}

/// Every backend can be watched: SQLite and DynamoDB (moto, with its stream) name the item
/// that changed, and a deletion reads as one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_follows_sqlite_and_dynamodb_and_says_how() {
    use flagstore::{Item, Kind, PersistentDataStore};
    let flag = |key: &str, version: u64| {
        Item::from_json(key, json!({"key": key, "version": version}).to_string()).unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let sqlite = sqlite_url(dir.path());
    ok(&flagstore(&sqlite, &["load", EXAMPLE]));
    let moto = flagstore_integration_tests::moto::Moto::start();
    let table = format!("watch-{}", unique_run_id());
    let dynamo = format!(
        "dynamodb://{table}?endpoint={}&region=us-east-1",
        moto.endpoint()
    );
    ok(&flagstore(&dynamo, &["load", "--create-table", EXAMPLE]));

    let dynamo_writer: flagstore::DynStore =
        std::sync::Arc::new(moto.builder(&table).build().unwrap());
    let sqlite_writer = flagstore_url::open(&sqlite).unwrap();
    for (store, writer, feed) in [
        (&sqlite, sqlite_writer, "data_version"),
        (&dynamo, dynamo_writer, "DynamoDB stream"),
    ] {
        let (watcher, via) = Watcher::start(store, &[]);
        assert!(via.contains(feed), "{store}: {via}");
        writer
            .upsert(&Kind::FEATURES, flag("watched", 1))
            .await
            .unwrap();
        assert_eq!(
            watcher.next(),
            json!({"kind": "features", "key": "watched", "version": 1, "deleted": false})
        );
        writer
            .upsert(&Kind::FEATURES, Item::tombstone("watched", 2))
            .await
            .unwrap();
        assert_eq!(
            watcher.next(),
            json!({"kind": "features", "key": "watched", "version": 2, "deleted": true})
        );
    }
}

/// `big-segments load`, `get` and the status line, the same on Redis and DynamoDB; a bad file
/// changes nothing.
fn check_big_segments(store: &str) {
    ok(&flagstore(store, &["load", EXAMPLE]));
    let file = r#"{"beta.g2": {"included": ["alice", "bob"], "excluded": ["carol"]}, "staff.g1": {"included": ["alice"]}}"#;
    let loaded = ok(&flagstore_with_input(
        store,
        &["big-segments", "load", "-"],
        Some(file),
    ));
    assert!(loaded.contains("loaded 2 segments, 3 contexts"), "{loaded}");

    let alice: Value = serde_json::from_str(&ok(&flagstore(
        store,
        &["big-segments", "get", "alice", "--json"],
    )))
    .unwrap();
    assert_eq!(
        alice["contextHash"],
        json!(flagstore::big_segments::context_hash("alice"))
    );
    assert_eq!(alice["included"], json!(["beta.g2", "staff.g1"]));
    assert_eq!(alice["excluded"], json!([]));
    assert_eq!(alice["metadata"]["stale"], json!(false));
    let carol = ok(&flagstore(store, &["big-segments", "get", "carol"]));
    assert!(carol.contains("excluded from: beta.g2"), "{carol}");
    assert!(carol.contains("up to date"), "{carol}");
    // A file load is no synchronization from LaunchDarkly: fresh, but no cursor.
    let status: Value = serde_json::from_str(&ok(&flagstore(
        store,
        &["big-segments", "status", "--json"],
    )))
    .unwrap();
    assert_eq!(status["stale"], json!(false));
    assert_eq!(status["cursor"], Value::Null);
    let text = ok(&flagstore(store, &["big-segments", "status"]));
    assert!(text.contains("cursor:        none"), "{text}");

    // A bad file (a number among the keys) is refused with its line, and nothing changes.
    let bad = "{\n\"beta.g2\": {\"included\": [\"dave\", 7]}\n}";
    let message = failure(&flagstore_with_input(
        store,
        &["big-segments", "load", "-"],
        Some(bad),
    ));
    assert!(message.contains("line 2"), "{message}");
    let still: Value = serde_json::from_str(&ok(&flagstore(
        store,
        &["big-segments", "get", "alice", "--json"],
    )))
    .unwrap();
    assert_eq!(still["included"], json!(["beta.g2", "staff.g1"]));

    // A new load replaces the data set: bob is no longer anywhere.
    ok(&flagstore_with_input(
        store,
        &["big-segments", "load", "-"],
        Some(r#"{"beta.g3": {"included": ["alice"]}}"#),
    ));
    let bob: Value = serde_json::from_str(&ok(&flagstore(
        store,
        &["big-segments", "get", "bob", "--json"],
    )))
    .unwrap();
    assert_eq!(bob["included"], json!([]));

    let status: Value =
        serde_json::from_str(&ok(&flagstore(store, &["status", "--json"]))).unwrap();
    assert_eq!(status["bigSegments"]["stale"], json!(false), "{status}");
    assert!(ok(&flagstore(store, &["status"])).contains("big segments: synchronized at"));
}

#[test]
fn big_segments_on_redis() {
    let redis = Redis::start();
    check_big_segments(&format!("{}?prefix=bs{}", redis.url(), unique_run_id()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn big_segments_on_dynamodb() {
    let db = DynamoDb::start();
    let url = dynamo_url(&db).await;
    tokio::task::spawn_blocking(move || check_big_segments(&url))
        .await
        .unwrap();
}

#[test]
fn big_segments_are_refused_where_the_sdks_have_none() {
    let consul = Consul::start();
    let store = consul.address().replace("http://", "consul://");
    let message = failure(&flagstore(&store, &["big-segments", "get", "alice"]));
    assert!(
        message.contains("Big Segments live in Redis or DynamoDB"),
        "{message}"
    );
}

#[tokio::test]
async fn status_reports_an_unreadable_big_segments_sync_time_and_shows_the_rest() {
    use flagstore_redis::redis::AsyncCommands;
    let redis = Redis::start();
    let prefix = format!("bad_sync_{}", unique_run_id());
    let store = format!("{}?prefix={prefix}", redis.url());
    ok(&flagstore(&store, &["load", EXAMPLE]));
    let mut conn = redis_conn(redis.url()).await;
    let key = format!("{prefix}:big_segments_synchronized_on");
    let _: () = conn.set(&key, "yesterday").await.unwrap();

    let output = flagstore(&store, &["status", "--json"]);
    let report: Value = serde_json::from_str(&ok(&output)).unwrap();
    assert!(
        report["counts"]["features"]["items"].as_u64().unwrap() > 0,
        "{report}"
    );
    let unreadable = report["bigSegments"]["unreadable"].as_str().unwrap();
    assert!(
        unreadable.contains("\"yesterday\" is not a Unix time"),
        "{report}"
    );
    assert!(stderr(&output).contains("big segments metadata unreadable"));
    let text = ok(&flagstore(&store, &["status"]));
    assert!(text.contains("features:"), "{text}");
    assert!(text.contains("big segments: UNREADABLE"), "{text}");
}

#[test]
fn status_on_a_stalled_server_waits_one_request_timeout() {
    let redis = Redis::start_local(&[]);
    ok(&flagstore(redis.url(), &["load", EXAMPLE]));
    redis.pause();
    let started = Instant::now();
    let output = flagstore(&format!("{}?request_timeout=2s", redis.url()), &["status"]);
    let took = started.elapsed();
    redis.resume();
    let err = failure(&output);
    assert!(err.contains("does not answer"), "{err}");
    // One request timeout (2 s) plus the process's start; two would be over 4 s.
    assert!(took < Duration::from_millis(3500), "took {took:?}: {err}");
}

#[test]
fn eval_says_when_a_big_segment_made_the_answer_unreliable() {
    let redis = Redis::start();
    let store = format!("{}?prefix=bigeval_{}", redis.url(), unique_run_id());
    let dir = tempfile::tempdir().unwrap();
    let data = json!({
        "flags": {
            "beta": {
                "key": "beta", "version": 1, "on": true, "salt": "s",
                "variations": [false, true], "offVariation": 0, "fallthrough": {"variation": 0},
                "rules": [{"id": "r", "variation": 1, "trackEvents": false, "clauses": [
                    {"contextKind": "", "attribute": "", "op": "segmentMatch", "values": ["cohort"], "negate": false}
                ]}],
                "targets": [], "prerequisites": [], "trackEvents": false,
                "trackEventsFallthrough": false, "clientSide": false
            },
            "plain": {
                "key": "plain", "version": 1, "on": true, "salt": "s",
                "variations": [false, true], "offVariation": 0, "fallthrough": {"variation": 1},
                "rules": [], "targets": [], "prerequisites": [], "trackEvents": false,
                "trackEventsFallthrough": false, "clientSide": false
            }
        },
        "segments": {
            "cohort": {"key": "cohort", "version": 1, "unbounded": true, "generation": 2,
                       "included": [], "excluded": [], "rules": [], "salt": "s"}
        }
    });
    let file = dir.path().join("flags.json");
    std::fs::write(&file, data.to_string()).unwrap();
    ok(&flagstore(&store, &["load", file.to_str().unwrap()]));
    ok(&flagstore_with_input(
        &store,
        &["big-segments", "load", "-"],
        Some(r#"{"cohort.g2": {"included": ["alice"]}}"#),
    ));

    let output = flagstore(&store, &["eval", "beta", "--context", "alice", "--json"]);
    let answer: Value = serde_json::from_str(&ok(&output)).unwrap();
    assert_eq!(
        answer["reason"]["bigSegmentsStatus"],
        json!("NOT_CONFIGURED"),
        "{answer}"
    );
    let warning = stderr(&output);
    assert!(
        warning.contains("depends on Big Segment(s) cohort"),
        "{warning}"
    );

    // A flag that consults no Big Segment is answered without either.
    let output = flagstore(&store, &["eval", "plain", "--context", "alice", "--json"]);
    let answer: Value = serde_json::from_str(&ok(&output)).unwrap();
    assert_eq!(answer["value"], json!(true));
    assert!(
        answer["reason"].get("bigSegmentsStatus").is_none(),
        "{answer}"
    );
    assert!(stderr(&output).is_empty(), "{}", stderr(&output));
}

/// A data set of several pages (2,500 flags, a tombstone-free file) through `load`, `ls`,
/// `status` and `dump` on Redis (`HSCAN` pages) and SQLite (key-order pages): every flag listed
/// once, in key order, counted, and dumped back byte for byte.
#[test]
fn bulk_commands_read_many_pages_whole() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("many.json");
    let flags: serde_json::Map<String, Value> = (0..2_500)
        .map(|i| {
            let key = format!("flag-{i:04}");
            (
                key.clone(),
                json!({"key": key, "version": i + 1, "on": i % 2 == 0}),
            )
        })
        .collect();
    let text = json!({"flags": flags, "segments": {}}).to_string();
    std::fs::write(&file, &text).unwrap();
    let redis = Redis::start();
    for store in [
        sqlite_url(dir.path()),
        format!("{}?prefix=pages{}", redis.url(), unique_run_id()),
    ] {
        ok(&flagstore(&store, &["load", file.to_str().unwrap()]));
        let listed: Vec<Value> =
            serde_json::from_str(&ok(&flagstore(&store, &["ls", "--json"]))).unwrap();
        let keys: Vec<&str> = listed
            .iter()
            .map(|row| row["key"].as_str().unwrap())
            .collect();
        let expected: Vec<String> = (0..2_500).map(|i| format!("flag-{i:04}")).collect();
        assert_eq!(keys, expected, "{store}: every flag once, in key order");
        assert_eq!(listed[2_499]["version"], 2_500);
        let status: Value =
            serde_json::from_str(&ok(&flagstore(&store, &["status", "--json"]))).unwrap();
        assert_eq!(status["counts"]["features"]["items"], 2_500, "{store}");
        let dumped: Value = serde_json::from_str(&ok(&flagstore(&store, &["dump"]))).unwrap();
        let original: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(dumped, original, "{store}");
    }
}

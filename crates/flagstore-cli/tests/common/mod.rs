//! What every test of the binary shares.

use std::process::Command;
use std::time::Duration;

/// `flagstore --store STORE` in an environment of its own: no store, Redis or Consul settings
/// from the caller's, AWS test credentials (the DynamoDB emulator takes any).
pub(crate) fn flagstore_command(store: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_flagstore"));
    command
        .arg("--store")
        .arg(store)
        .env_remove("FLAGSTORE_URL")
        .env_remove("REDIS_URL")
        .env_remove("REDIS_PASSWORD")
        .env_remove("CONSUL_HTTP_TOKEN")
        .env_remove("CONSUL_CACERT")
        .env_remove("LD_SDK_KEY")
        .env_remove("AWS_PROFILE")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true");
    command
}

/// Runs `command` to its end (it must succeed; its output discarded) under Python's
/// `getrusage`: its wall time and its peak resident memory in bytes. For the benches.
#[allow(dead_code, reason = "the benches use it, the tests do not")]
pub(crate) fn measured(command: &Command) -> (Duration, u64) {
    let mut python = Command::new("python3");
    python.args([
        "-c",
        "import resource, subprocess, sys, time\n\
         started = time.monotonic()\n\
         code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode\n\
         elapsed = time.monotonic() - started\n\
         assert code == 0, code\n\
         print(elapsed, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)",
    ]);
    python.arg(command.get_program()).args(command.get_args());
    for (name, value) in command.get_envs() {
        match value {
            Some(value) => python.env(name, value),
            None => python.env_remove(name),
        };
    }
    let output = python.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).unwrap();
    let mut figures = text.split_whitespace();
    let seconds: f64 = figures.next().unwrap().parse().unwrap();
    let kb: u64 = figures.next().unwrap().parse().unwrap();
    (Duration::from_secs_f64(seconds), kb * 1024)
}

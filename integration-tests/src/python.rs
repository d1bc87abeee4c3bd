//! The LaunchDarkly Python SDK, for the cross-SDK tests.

use std::path::PathBuf;
use std::process::Command;

const INSTALL_HINT: &str = "no Python with the LaunchDarkly SDK: run scripts/install-servers.sh \
     (it makes a virtualenv at ~/.cache/flagstore/venv), or set FLAGSTORE_PYTHON to a Python that \
     has launchdarkly-server-sdk, redis, boto3 and python-consul";

/// A Python that can import the LaunchDarkly SDK and its store integrations:
/// `FLAGSTORE_PYTHON`, else `$FLAGSTORE_VENV/bin/python`, else `~/.cache/flagstore/venv/bin/python`.
pub fn python() -> PathBuf {
    let python = std::env::var_os("FLAGSTORE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let venv = std::env::var_os("FLAGSTORE_VENV")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                        .join(".cache/flagstore/venv")
                });
            venv.join("bin/python")
        });
    let usable = Command::new(&python)
        .args(["-c", "import ldclient, redis, boto3, consul"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(usable, "{INSTALL_HINT} (tried {})", python.display());
    python
}

/// Runs `integration-tests/python/ld_compat.py` with `args`; its standard output.
pub fn ld_compat(args: &[&str]) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/ld_compat.py");
    let output = Command::new(python())
        .arg(&script)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        output.status.success(),
        "ld_compat.py {} failed:\n{}",
        args.first().copied().unwrap_or_default(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// A fixture file of the integration tests.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

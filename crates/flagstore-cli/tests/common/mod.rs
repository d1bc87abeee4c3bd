//! What every test of the binary shares.

use std::process::Command;

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

//! Evaluations through the real LaunchDarkly SDK, in daemon mode.

use std::sync::Arc;

use flagstore::DynStore;
use flagstore_launchdarkly::LaunchDarklyStore;
pub(crate) use flagstore_launchdarkly::evaluation_json as evaluate;
use flagstore_launchdarkly::launchdarkly_server_sdk::{
    Client, ConfigBuilder, Context, ContextBuilder, NullEventProcessorBuilder,
    PersistentDataStoreBuilder,
};

use crate::CliError;

/// A daemon-mode client on `store`: it never talks to LaunchDarkly and reads every flag from the
/// store (no cache: the CLI evaluates once and exits).
pub(crate) fn daemon_client(store: DynStore) -> Result<Client, CliError> {
    let adapter = LaunchDarklyStore::from_arc(store)
        .map_err(|e| CliError::new(format!("could not start: {e}")))?;
    let mut builder = PersistentDataStoreBuilder::new(Arc::new(adapter));
    builder.no_caching();
    let config = ConfigBuilder::new("flagstore-cli")
        .daemon_mode(true)
        .event_processor(&NullEventProcessorBuilder::new())
        .data_store(&builder)
        .build()
        .map_err(|e| CliError::new(format!("could not configure the SDK: {e}")))?;
    let client = Client::build(config)
        .map_err(|e| CliError::new(format!("could not start the SDK: {e}")))?;
    client.start_with_default_executor();
    Ok(client)
}

/// A context from JSON (`{"kind":"user","key":"alice",…}`), or a bare user key.
pub(crate) fn parse_context(text: &str) -> Result<Context, CliError> {
    if text.trim_start().starts_with('{') {
        serde_json::from_str(text)
            .map_err(|e| CliError::new(format!("--context is not a valid context: {e}")))
    } else {
        ContextBuilder::new(text)
            .build()
            .map_err(|e| CliError::new(format!("--context is not a valid key: {e}")))
    }
}

//! The configuration file: several environments in one process, each with its SDK key (from an
//! environment variable or a file, never from the command line) and its stores.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flagstore::backend::parse_duration;
use flagstore_url::StoreUrl;
use serde::Deserialize;

use crate::SyncError;
use crate::sdk_key::SdkKey;
use crate::synchronizer::{Environment, SynchronizerBuilder};

/// A parsed configuration file (TOML):
///
/// ```toml
/// # All optional; these are the defaults.
/// stream_uri = "https://stream.launchdarkly.com"
/// base_uri = "https://sdk.launchdarkly.com"
/// polling = false
/// poll_interval = "30s"
/// read_timeout = "5m"
/// check_interval = "10s"
/// # listen = "0.0.0.0:8030"     # /status and /metrics; off unless given
///
/// [environments.production]
/// sdk_key_env = "LD_SDK_KEY_PRODUCTION"         # or sdk_key_file = "/run/secrets/ld-production"
/// store = "redis://cache:6379"                  # or stores = ["redis://…", "dynamodb://flags"]
/// prefix = "production"                         # for each store whose URL names none
///
/// [environments.staging]
/// sdk_key_file = "/run/secrets/ld-staging"
/// stores = ["redis+cluster://10.0.0.1:6379,10.0.0.2:6379?prefix={staging}"]
/// ```
///
/// Unknown settings are refused (a typo would otherwise be ignored), as is an SDK key written
/// into the file: it belongs in the environment or a secret file.
///
/// ```
/// use flagstore_sync::SyncConfig;
///
/// # let key_file = std::env::temp_dir().join(format!("flagstore-doc-key-{}", std::process::id()));
/// # std::fs::write(&key_file, "sdk-doc-0000\n").unwrap();
/// let config = SyncConfig::parse(&format!(r#"
///     listen = "127.0.0.1:8030"
///     [environments.production]
///     sdk_key_file = {key_file:?}
///     store = "sqlite:flags.db"
///     prefix = "production"
/// "#))?;
/// # std::fs::remove_file(&key_file).unwrap();
/// assert_eq!(config.listen(), Some("127.0.0.1:8030"));
/// assert_eq!(config.environments()[0].name(), "production");
/// # Ok::<(), flagstore_sync::SyncError>(())
/// ```
#[derive(Debug, Clone)]
pub struct SyncConfig {
    builder: SynchronizerBuilder,
    environments: Vec<Environment>,
    listen: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    stream_uri: Option<String>,
    base_uri: Option<String>,
    polling: Option<bool>,
    poll_interval: Option<String>,
    read_timeout: Option<String>,
    check_interval: Option<String>,
    listen: Option<String>,
    #[serde(default)]
    environments: BTreeMap<String, EnvironmentFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnvironmentFile {
    sdk_key_env: Option<String>,
    sdk_key_file: Option<PathBuf>,
    sdk_key: Option<toml::Value>,
    store: Option<String>,
    #[serde(default)]
    stores: Vec<String>,
    prefix: Option<String>,
}

impl SyncConfig {
    /// Reads the file at `path`.
    pub fn from_file(path: &Path) -> Result<SyncConfig, SyncError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SyncError::config(format!("cannot read {}: {e}", path.display())))?;
        Self::parse(&text)
            .map_err(|e| SyncError::config(format!("{}: {}", path.display(), message(&e))))
    }

    /// Parses a configuration, reading each environment's SDK key and parsing its store URLs.
    pub fn parse(text: &str) -> Result<SyncConfig, SyncError> {
        let file: File = toml::from_str(text).map_err(|e| SyncError::config(e.to_string()))?;
        let mut builder = SynchronizerBuilder::default();
        if let Some(uri) = file.stream_uri {
            builder = builder.stream_uri(uri);
        }
        if let Some(uri) = file.base_uri {
            builder = builder.base_uri(uri);
        }
        if let Some(polling) = file.polling {
            builder = builder.polling(polling);
        }
        if let Some(interval) = duration("poll_interval", file.poll_interval)? {
            builder = builder.poll_interval(interval);
        }
        if let Some(timeout) = duration("read_timeout", file.read_timeout)? {
            builder = builder.read_timeout(timeout);
        }
        if let Some(interval) = duration("check_interval", file.check_interval)? {
            builder = builder.check_interval(interval);
        }
        if file.environments.is_empty() {
            return Err(SyncError::config(
                "no environments: add an [environments.NAME] table",
            ));
        }
        let mut environments = Vec::new();
        for (name, env) in file.environments {
            environments.push(environment(&name, env)?);
        }
        Ok(SyncConfig {
            builder,
            environments,
            listen: file.listen,
        })
    }

    /// The address `/status` and `/metrics` are served on, if the file names one.
    pub fn listen(&self) -> Option<&str> {
        self.listen.as_deref()
    }

    /// The environments, by name.
    pub fn environments(&self) -> &[Environment] {
        &self.environments
    }

    /// A builder with the file's settings and environments, for more settings before
    /// [`build`](SynchronizerBuilder::build).
    pub fn builder(&self) -> SynchronizerBuilder {
        self.environments
            .iter()
            .cloned()
            .fold(self.builder.clone(), SynchronizerBuilder::environment)
    }
}

fn environment(name: &str, env: EnvironmentFile) -> Result<Environment, SyncError> {
    let fail = |message: String| SyncError::config(format!("environment {name:?}: {message}"));
    if env.sdk_key.is_some() {
        return Err(fail(
            "sdk_key is not read from the file; use sdk_key_env (an environment variable) or sdk_key_file"
                .to_owned(),
        ));
    }
    let key = match (env.sdk_key_env, env.sdk_key_file) {
        (Some(var), None) => SdkKey::from_env(&var),
        (None, Some(path)) => SdkKey::from_file(&path),
        (Some(_), Some(_)) => {
            return Err(fail(
                "give sdk_key_env or sdk_key_file, not both".to_owned(),
            ));
        }
        (None, None) => {
            return Err(fail(
                "no SDK key: give sdk_key_env or sdk_key_file".to_owned(),
            ));
        }
    }
    .map_err(|e| fail(message(&e)))?;
    let urls: Vec<String> = env.store.into_iter().chain(env.stores).collect();
    if urls.is_empty() {
        return Err(fail(
            "no store: give store = \"URL\" or stores = [\"URL\", …]".to_owned(),
        ));
    }
    let mut environment = Environment::new(name, key);
    for url in urls {
        let mut parsed = StoreUrl::parse(&url).map_err(|e| fail(e.to_string()))?;
        if let Some(prefix) = &env.prefix {
            parsed = parsed
                .with_default_prefix(prefix)
                .map_err(|e| fail(e.to_string()))?;
        }
        environment = environment.store(parsed);
    }
    Ok(environment)
}

fn duration(name: &str, value: Option<String>) -> Result<Option<Duration>, SyncError> {
    value
        .map(|text| {
            parse_duration(&text).ok_or_else(|| {
                SyncError::config(format!(
                    "{name} = {text:?} is not a duration; write it like 500ms, 30s or 5m"
                ))
            })
        })
        .transpose()
}

/// A configuration error's message without its "invalid sync configuration" lead, for nesting.
fn message(err: &SyncError) -> String {
    match err {
        SyncError::Config { message } => message.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn error(text: &str) -> String {
        SyncConfig::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn refuses_what_would_surprise() {
        assert!(error("polling = true\n").contains("no environments"));
        assert!(
            error("pol_interval = \"30s\"\n[environments.a]\n")
                .contains("unknown field `pol_interval`")
        );
        assert!(
            error("[environments.a]\nsdk_key = \"sdk-123\"\nstore = \"sqlite:x.db\"\n")
                .contains("sdk_key is not read from the file")
        );
        assert!(
            error("[environments.a]\nstore = \"sqlite:x.db\"\n")
                .contains("environment \"a\": no SDK key")
        );
        assert!(
            error("poll_interval = \"30 seconds\"\n[environments.a]\n")
                .contains("is not a duration")
        );
        let missing = error(
            "[environments.a]\nsdk_key_file = \"/nonexistent/key\"\nstore = \"sqlite:x.db\"\n",
        );
        assert!(
            missing.contains("cannot read the SDK key file /nonexistent/key"),
            "{missing}"
        );
    }

    #[test]
    fn keys_from_files_and_prefixes_for_each_store() {
        let dir =
            std::env::temp_dir().join(format!("flagstore-sync-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("key");
        std::fs::write(&key, "sdk-abcdefgh-0000-1111-2222\n").unwrap();
        let config = SyncConfig::parse(&format!(
            "[environments.prod]\nsdk_key_file = {:?}\nstores = [\"sqlite:a.db\", \"sqlite:b.db?prefix=own\"]\nprefix = \"prod\"\n",
            key.display().to_string()
        ))
        .unwrap();
        let env = &config.environments()[0];
        assert_eq!(env.name(), "prod");
        let shown = format!("{env:?}");
        assert!(shown.contains("sdk-********2222"), "{shown}");
        assert!(
            shown.contains("sqlite:a.db?prefix=prod") && shown.contains("sqlite:b.db?prefix=own"),
            "{shown}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

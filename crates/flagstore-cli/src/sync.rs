//! `flagstore sync`: LaunchDarkly → stores, with `/status` and `/metrics`.

use std::path::PathBuf;
use std::time::Duration;

use flagstore_sync::{Environment, SdkKey, SyncConfig, SynchronizerBuilder};
use flagstore_url::StoreUrl;

use crate::{CliError, DEFAULT_STORE};

/// The variable holding the SDK key when no configuration file is given.
const SDK_KEY_VAR: &str = "LD_SDK_KEY";

#[derive(Debug, clap::Args)]
pub(crate) struct SyncArgs {
    /// A TOML file of environments, each with its SDK key (from a variable or a file) and its
    /// stores; replaces --store and $LD_SDK_KEY.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The streaming service [default: https://stream.launchdarkly.com]; a Relay Proxy's works.
    #[arg(long)]
    stream_uri: Option<String>,
    /// The polling service [default: https://sdk.launchdarkly.com].
    #[arg(long)]
    base_uri: Option<String>,
    /// Poll instead of streaming.
    #[arg(long)]
    polling: bool,
    /// How often to poll (when polling, and while the stream is down), at least 30s [default: 30s].
    #[arg(long, value_parser = duration)]
    poll_interval: Option<Duration>,
    /// How often each store is checked for lost data (a Redis restarted empty) [default: 10s].
    #[arg(long, value_parser = duration)]
    check_interval: Option<Duration>,
    /// Drop and reopen a stream silent this long [default: 5m].
    #[arg(long, value_parser = duration)]
    read_timeout: Option<Duration>,
    /// Fetch everything once, write it, read it back, and exit: 0 only if every store holds
    /// exactly what was fetched. For cron jobs and webhook-triggered functions.
    #[arg(long, conflicts_with = "listen")]
    once: bool,
    /// Serve /status (the Relay Proxy's JSON) and /metrics (Prometheus) on this address, e.g.
    /// 127.0.0.1:8030.
    #[arg(long)]
    listen: Option<String>,
}

fn duration(text: &str) -> Result<Duration, String> {
    flagstore::backend::parse_duration(text)
        .ok_or_else(|| format!("{text:?} is not a duration; write it like 500ms, 30s or 5m"))
}

pub(crate) async fn run(store: Option<String>, args: SyncArgs) -> Result<(), CliError> {
    let (mut builder, listen) = match &args.config {
        Some(path) => {
            let config = SyncConfig::from_file(path)?;
            if store.is_some() {
                tracing::info!(
                    "--store / $FLAGSTORE_URL is not used: {} names the stores",
                    path.display()
                );
            }
            (config.builder(), config.listen().map(str::to_owned))
        }
        None => {
            let url = store.unwrap_or_else(|| DEFAULT_STORE.to_owned());
            let key = SdkKey::from_env(SDK_KEY_VAR).map_err(|e| {
                CliError::new(format!("{}; or give --config FILE", CliError::from(e)))
            })?;
            let env = Environment::new("default", key).store(StoreUrl::parse(&url)?);
            (SynchronizerBuilder::default().environment(env), None)
        }
    };
    if let Some(uri) = args.stream_uri {
        builder = builder.stream_uri(uri);
    }
    if let Some(uri) = args.base_uri {
        builder = builder.base_uri(uri);
    }
    if args.polling {
        builder = builder.polling(true);
    }
    if let Some(interval) = args.poll_interval {
        builder = builder.poll_interval(interval);
    }
    if let Some(interval) = args.check_interval {
        builder = builder.check_interval(interval);
    }
    if let Some(timeout) = args.read_timeout {
        builder = builder.read_timeout(timeout);
    }
    let sync = builder.build()?;

    if args.once {
        let mut failed = 0;
        for report in sync.sync_once().await {
            match report {
                Ok(report) => println!(
                    "{}: {} flags and {} segments written to {} store(s) and read back",
                    report.environment, report.flags, report.segments, report.stores
                ),
                Err(err) => {
                    failed += 1;
                    eprintln!("error: {}", CliError::from(err));
                }
            }
        }
        return match failed {
            0 => Ok(()),
            n => Err(CliError::new(format!("{n} environment(s) not synced"))),
        };
    }

    let listen = args.listen.or(listen);
    // Installed before anything is built: stores register their series when built.
    let render = match &listen {
        Some(_) => Some(crate::metrics::install()?),
        None => None,
    };
    let running = sync.start();
    if let (Some(address), Some(render)) = (&listen, render) {
        crate::metrics::serve(address, Some(running.subscribe()), render).await?;
    }
    let outcome = tokio::select! {
        () = running.all_off() => Err(CliError::new(
            "LaunchDarkly refused every environment's SDK key (see the errors above); nothing left to sync",
        )),
        signal = stop_signal() => signal.map(|name| tracing::info!("{name}: finishing the writes in progress")),
    };
    running.shutdown().await;
    outcome
}

/// Waits for SIGTERM (a service manager stopping the process) or SIGINT (Ctrl-C).
async fn stop_signal() -> Result<&'static str, CliError> {
    use tokio::signal::unix::{SignalKind, signal};
    let listen =
        |kind| signal(kind).map_err(|e| CliError::new(format!("cannot watch for signals: {e}")));
    let (mut term, mut int) = (
        listen(SignalKind::terminate())?,
        listen(SignalKind::interrupt())?,
    );
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

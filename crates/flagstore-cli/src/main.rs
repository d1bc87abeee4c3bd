//! `flagstore`: load, dump, inspect, copy, evaluate and benchmark persistent feature stores.

mod bench;
mod big_segments;
mod commands;
mod evaluate;
mod evaluation;
mod metrics;
mod store_url;
mod sync;
mod watch;

use std::fmt;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// The store used when neither --store nor $FLAGSTORE_URL names one.
const DEFAULT_STORE: &str = "sqlite:flagstore.db";

/// Load, inspect, copy, evaluate and benchmark LaunchDarkly persistent feature stores
/// (Redis, DynamoDB, Consul, SQLite), in the format every LaunchDarkly SDK shares.
#[derive(Debug, Parser)]
#[command(name = "flagstore", version, propagate_version = true)]
struct Cli {
    /// The store: redis://host:port[/db], rediss://…, dynamodb://TABLE[?endpoint=…&region=…],
    /// consul://host:port[?dc=…] or sqlite:PATH, each with an optional ?prefix=…
    /// [default: sqlite:flagstore.db]. Secrets come from $REDIS_URL (its password), AWS_* and
    /// $CONSUL_HTTP_TOKEN, never from logs.
    #[arg(long, global = true, env = "FLAGSTORE_URL", hide_env_values = true)]
    store: Option<String>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Initialize the store from a flag data file ({"flags":{…},"segments":{…}}), or - for stdin.
    /// Every item is checked first: a bad file changes nothing.
    Load {
        /// The data file, or - to read standard input.
        file: String,
        /// Create the DynamoDB table first if it does not exist (other backends need none).
        #[arg(long)]
        create_table: bool,
    },
    /// Print the store's flags and segments as a data file on stdout (live items only).
    /// Fails if any stored item is unreadable, unless --skip-invalid is given.
    Dump {
        /// Leave unreadable stored items out (each is named on stderr) instead of failing.
        #[arg(long)]
        skip_invalid: bool,
    },
    /// List keys and versions, of one kind (features, segments, …) or all.
    Ls {
        /// features (or flags), segments, or any other kind name.
        kind: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print one stored item's JSON exactly as stored.
    Get {
        /// features (or flags), segments, or any other kind name.
        kind: String,
        /// The item's key.
        key: String,
    },
    /// Copy every flag and segment (tombstones included) into another store, replacing its data.
    /// Fails before writing if any stored item is unreadable (unless --skip-invalid) or too
    /// large for the target.
    Copy {
        /// The target store URL.
        #[arg(long)]
        to: String,
        /// Create the target's DynamoDB table first if it does not exist.
        #[arg(long)]
        create_table: bool,
        /// Leave unreadable stored items out (each is named on stderr) instead of failing.
        #[arg(long)]
        skip_invalid: bool,
    },
    /// Whether the store is initialized, item counts, the largest items against the backend's
    /// size limit, and the round-trip latency.
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Evaluate a flag through the LaunchDarkly Rust SDK in daemon mode: value, variation, reason.
    ///
    /// The Rust SDK cannot read Big Segment memberships: when the evaluation consults an
    /// unbounded segment, its rules never match, a warning goes to stderr and the reason carries
    /// "bigSegmentsStatus":"NOT_CONFIGURED", as the other SDKs report it.
    Eval {
        /// The flag key.
        flag: String,
        /// The context as JSON ({"kind":"user","key":"alice","email":…}), or just a user key.
        #[arg(long)]
        context: String,
        /// Print {"value":…,"variationIndex":…,"reason":{…}} instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Measure read latency (p50/p90/p99/max) and throughput, uncached and through the cache.
    Bench {
        /// How many reads in each mode.
        #[arg(long, default_value_t = 2_000)]
        requests: usize,
        /// How many reads run at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Serve the cache's and the store's metrics (Prometheus) on this address while it runs.
        #[arg(long, value_name = "ADDRESS")]
        metrics: Option<String>,
    },
    /// Follow the store's change feed (Redis keyspace notifications, Consul blocking queries)
    /// and print one line per item that changed, whoever wrote it, until interrupted.
    /// A Redis server must announce keyspace events (notify-keyspace-events K$ghxe or KA); add
    /// ?keyspace_events=configure to the store URL to let flagstore turn them on.
    Watch {
        /// Print one JSON object per line: {"kind":…,"key":…,"version":N,"deleted":B}; deleted
        /// is true for a tombstone (with its version) and for an item that vanished (version
        /// null); version null with deleted false is an unreadable stored value.
        #[arg(long)]
        json: bool,
        /// Serve the change feed's metrics (Prometheus) on this address, e.g. 127.0.0.1:9090.
        #[arg(long, value_name = "ADDRESS")]
        metrics: Option<String>,
    },
    /// Big Segments (Redis, DynamoDB): load a membership file, or look up one context.
    BigSegments {
        #[command(subcommand)]
        command: BigSegmentsCommand,
    },
    /// Keep stores fed from LaunchDarkly, as the Relay Proxy's store role does: stream (or poll)
    /// each environment's flags and segments and write them byte for byte; repair a store that
    /// failed or was wiped; serve /status and /metrics with --listen.
    ///
    /// One environment: the store from --store ($FLAGSTORE_URL), the SDK key from $LD_SDK_KEY.
    /// Several: --config FILE (TOML; see the README's "Feeding the store"). Exits non-zero once
    /// LaunchDarkly has refused every SDK key; SIGTERM or Ctrl-C finish the write in progress
    /// and exit 0.
    Sync(Box<sync::SyncArgs>),
    /// Load the example flags into a store (a throwaway SQLite file unless --store is given) and
    /// show how the LaunchDarkly SDK evaluates them for the example contexts.
    Demo,
}

#[derive(Debug, Subcommand)]
enum BigSegmentsCommand {
    /// Replace the store's Big Segments data with a membership file (or - for stdin) and mark it
    /// synchronized now: {"SEGMENT_KEY.gGENERATION": {"included": [CONTEXT_KEY, ...],
    /// "excluded": [...]}, ...}. The whole file is checked first: a bad one changes nothing.
    Load {
        /// The membership file, or - to read standard input.
        file: String,
    },
    /// Show how fresh the Big Segments data is and the synchronizer's cursor (the version of
    /// the last patch applied, as `flagstore sync` and the Relay Proxy keep it).
    Status {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Show which big segments include and exclude a context, and how fresh the data is.
    Get {
        /// The context's key (its hash is what the store is keyed by).
        context_key: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Shows what the libraries log, on stderr: warnings and errors by default, as `RUST_LOG`
/// says otherwise (`RUST_LOG=debug`, `RUST_LOG=flagstore_redis=trace`, …). The libraries never
/// log a password or token.
fn log_to_stderr() {
    let filter = tracing_subscriber::EnvFilter::builder()
        .with_default_directive(tracing_subscriber::filter::LevelFilter::WARN.into())
        .from_env_lossy();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}

/// A failure, shown as one line.
#[derive(Debug)]
pub(crate) struct CliError(String);

impl CliError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        CliError(message.into())
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<flagstore_sync::DataError> for CliError {
    fn from(err: flagstore_sync::DataError) -> Self {
        CliError(err.to_string())
    }
}

impl From<flagstore_sync::SyncError> for CliError {
    fn from(err: flagstore_sync::SyncError) -> Self {
        CliError(flagstore::error::one_line(&err))
    }
}

impl From<flagstore::Error> for CliError {
    fn from(err: flagstore::Error) -> Self {
        CliError(flagstore::error::one_line(&err))
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    log_to_stderr();
    match commands::run(cli.store, cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

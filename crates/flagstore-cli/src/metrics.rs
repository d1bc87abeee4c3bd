//! `/metrics` for the long-running commands: the libraries' metrics in the Prometheus format.

use std::sync::Arc;

use flagstore_sync::RenderMetrics;

use crate::CliError;

/// Installs the Prometheus recorder; what renders its page. Call it before any store is built:
/// a store registers its series when it is built.
pub(crate) fn install() -> Result<RenderMetrics, CliError> {
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| CliError::new(format!("cannot set up the metrics: {e}")))?;
    Ok(Arc::new(move || handle.render()))
}

/// Binds `address` (failing at once if it is taken) and serves the metrics there; with
/// `status`, `/status` too.
pub(crate) async fn serve(
    address: &str,
    status: Option<tokio::sync::watch::Receiver<flagstore_sync::Status>>,
    render: RenderMetrics,
) -> Result<(), CliError> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .map_err(|e| CliError::new(format!("cannot listen on {address}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| CliError::new(format!("cannot listen on {address}: {e}")))?;
    let what = if status.is_some() {
        "/status and /metrics"
    } else {
        "/metrics"
    };
    eprintln!("serving {what} on http://{bound}");
    tokio::spawn(flagstore_sync::serve_http(listener, status, Some(render)));
    Ok(())
}

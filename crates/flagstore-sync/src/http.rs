//! The health endpoint: `GET /status` (the Relay Proxy's JSON) and `GET /metrics` (whatever the
//! application's metrics recorder renders, the Prometheus text format in the CLI).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::status::Status;

/// Renders the metrics page.
pub type RenderMetrics = Arc<dyn Fn() -> String + Send + Sync>;

/// Serves `/status` from `status` (see [`SyncHandle::subscribe`](crate::SyncHandle::subscribe))
/// and `/metrics` from `metrics`, each when given, on `listener` until the returned future is
/// dropped. Any other path is 404; a client that sends no request within 10 s is dropped.
///
/// ```no_run
/// # async fn run(running: &flagstore_sync::SyncHandle) -> std::io::Result<()> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8030").await?;
/// tokio::spawn(flagstore_sync::serve_http(listener, Some(running.subscribe()), None));
/// # Ok(())
/// # }
/// ```
pub async fn serve_http(
    listener: TcpListener,
    status: Option<watch::Receiver<Status>>,
    metrics: Option<RenderMetrics>,
) {
    loop {
        let (socket, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors, say: wait rather than spin.
                tracing::warn!("the status endpoint could not accept a connection: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let status = status.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = respond(&request, status.as_ref(), metrics.as_ref());
                async move { Ok::<_, Infallible>(response) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(socket), service)
                .await;
            if let Err(e) = served {
                tracing::debug!("a status endpoint connection ended: {e}");
            }
        });
    }
}

fn respond(
    request: &Request<Incoming>,
    status: Option<&watch::Receiver<Status>>,
    metrics: Option<&RenderMetrics>,
) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return answer(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET\n".to_owned(),
            TEXT,
        );
    }
    match (request.uri().path(), status, metrics) {
        ("/status", Some(status), _) => {
            let body = status.borrow().to_relay_json(env!("CARGO_PKG_VERSION"));
            answer(StatusCode::OK, body.to_string(), "application/json")
        }
        ("/metrics", _, Some(render)) => {
            answer(StatusCode::OK, render(), "text/plain; version=0.0.4")
        }
        _ => answer(StatusCode::NOT_FOUND, "not found\n".to_owned(), TEXT),
    }
}

const TEXT: &str = "text/plain; charset=utf-8";

fn answer(code: StatusCode, body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = code;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

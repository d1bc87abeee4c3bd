//! A fake LaunchDarkly for `flagstore sync` and the SDKs: plain HTTP on a free loopback port,
//! serving the server-side streaming endpoint (`GET /all`, server-sent events) and the polling
//! endpoint (`GET /sdk/latest-all`) from a data set the test controls, with scripted faults;
//! and the Big Segments endpoints: `GET /sdk/big-segments/revisions[?after=VERSION]` (the
//! patches after that version in the chain the test sets up) and the `GET /big-segments` stream.
//!
//! Every request must carry `Authorization: <SDK key>` exactly; any other gets 401. Each stream
//! opens with a `put` of the current data; [`patch`](FakeLaunchDarkly::patch) and
//! [`delete`](FakeLaunchDarkly::delete) change the data and send the event to every open stream.
//! It runs on a runtime of its own, so a test may block (on a child process, say) while it
//! serves.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

/// How many requests each endpoint has had.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    /// `GET /all`, answered or failed.
    pub streams: usize,
    /// `GET /sdk/latest-all`, answered or failed.
    pub polls: usize,
    /// `GET /sdk/big-segments/revisions`, answered or failed.
    pub big_segment_polls: usize,
    /// `GET /big-segments`, answered or failed.
    pub big_segment_streams: usize,
}

type Chunk = Result<Frame<Bytes>, std::io::Error>;

#[derive(Debug, Default)]
struct State {
    data: Value,
    streams: Vec<mpsc::UnboundedSender<Chunk>>,
    stream_faults: VecDeque<u16>,
    poll_faults: VecDeque<u16>,
    /// The Big Segments patches, in chain order.
    big_patches: Vec<Value>,
    big_streams: Vec<mpsc::UnboundedSender<Chunk>>,
    /// Answers the next Big Segments requests (either endpoint) with these statuses.
    big_faults: VecDeque<u16>,
}

#[derive(Debug)]
struct Shared {
    sdk_key: String,
    state: Mutex<State>,
    requests: watch::Sender<Requests>,
}

/// The fake service; stops when dropped.
#[derive(Debug)]
pub struct FakeLaunchDarkly {
    uri: String,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl FakeLaunchDarkly {
    /// Serves `data` (`{"flags": {…}, "segments": {…}}`) to clients that send `sdk_key`.
    pub fn start(sdk_key: &str, data: Value) -> FakeLaunchDarkly {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        // Bound here, not with block_on: the caller may be inside a runtime of its own.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let uri = format!("http://{}", listener.local_addr().unwrap());
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener).unwrap()
        };
        let shared = Arc::new(Shared {
            sdk_key: sdk_key.to_owned(),
            state: Mutex::new(State {
                data,
                ..State::default()
            }),
            requests: watch::Sender::new(Requests::default()),
        });
        let serving = shared.clone();
        runtime.spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let shared = serving.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let response = respond(&shared, &request);
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(socket), service)
                        .await;
                });
            }
        });
        FakeLaunchDarkly {
            uri,
            shared,
            runtime: Some(runtime),
        }
    }

    /// `http://127.0.0.1:PORT`: the stream URI and the base URI both.
    pub fn uri(&self) -> &str {
        &self.uri
    }

    /// The data set as a `put` or a poll would send it now.
    pub fn data(&self) -> Value {
        self.state().data.clone()
    }

    /// Replaces the data set; open streams hear nothing until they reconnect (or a `put`).
    pub fn set_data(&self, data: Value) {
        self.state().data = data;
    }

    /// Sends a `put` of the current data to every open stream.
    pub fn put(&self) {
        let mut state = self.state();
        let event = put_event(&state.data);
        send(&mut state, &event);
    }

    /// Stores `item` (a flag for `kind` "flags", a segment for "segments") and sends its `patch`.
    pub fn patch(&self, kind: &str, item: Value) {
        let key = item["key"].as_str().unwrap().to_owned();
        let mut state = self.state();
        state.data[kind][&key] = item.clone();
        let event = format!(
            "event: patch\ndata: {}\n\n",
            json!({"path": format!("/{kind}/{key}"), "data": item})
        );
        send(&mut state, &event);
    }

    /// Removes `key` and sends its `delete` at `version`.
    pub fn delete(&self, kind: &str, key: &str, version: u64) {
        let mut state = self.state();
        if let Some(section) = state.data[kind].as_object_mut() {
            section.remove(key);
        }
        let event = format!(
            "event: delete\ndata: {}\n\n",
            json!({"path": format!("/{kind}/{key}"), "version": version})
        );
        send(&mut state, &event);
    }

    /// Sends `text` as it is to every open stream: a heartbeat (`":\n"`), an unknown event, a
    /// malformed one.
    pub fn send_raw(&self, text: &str) {
        send(&mut self.state(), text);
    }

    /// Breaks every open stream mid-way, as a dropped connection does.
    pub fn drop_streams(&self) {
        for stream in self.state().streams.drain(..) {
            let _ = stream.send(Err(std::io::Error::other("dropped by the test")));
        }
    }

    /// Answers the next stream requests with these HTTP statuses, one each, in order.
    pub fn fail_streams(&self, statuses: &[u16]) {
        self.state().stream_faults.extend(statuses);
    }

    /// Answers the next poll requests with these HTTP statuses, one each, in order.
    pub fn fail_polls(&self, statuses: &[u16]) {
        self.state().poll_faults.extend(statuses);
    }

    /// Appends Big Segments patches to the chain the revisions endpoint serves; open
    /// `/big-segments` streams hear nothing of them.
    pub fn add_big_segment_patches(&self, patches: &[Value]) {
        self.state().big_patches.extend(patches.iter().cloned());
    }

    /// Appends patches to the chain and sends them, as one event, to every open
    /// `/big-segments` stream.
    pub fn stream_big_segment_patches(&self, patches: &[Value]) {
        let mut state = self.state();
        state.big_patches.extend(patches.iter().cloned());
        let event = format!("event: patch\ndata: {}\n\n", Value::from(patches.to_vec()));
        send_big(&mut state, &event);
    }

    /// Sends patches to every open `/big-segments` stream without adding them to the chain:
    /// a patch out of order, say.
    pub fn send_big_segment_patches_only(&self, patches: &[Value]) {
        let event = format!("event: patch\ndata: {}\n\n", Value::from(patches.to_vec()));
        send_big(&mut self.state(), &event);
    }

    /// Ends every open `/big-segments` stream, as a dropped connection does.
    pub fn drop_big_segment_streams(&self) {
        for stream in self.state().big_streams.drain(..) {
            let _ = stream.send(Err(std::io::Error::other("dropped by the test")));
        }
    }

    /// Answers the next Big Segments requests (revisions or stream) with these statuses.
    pub fn fail_big_segments(&self, statuses: &[u16]) {
        self.state().big_faults.extend(statuses);
    }

    /// How many requests each endpoint has had so far.
    pub fn requests(&self) -> Requests {
        *self.shared.requests.borrow()
    }

    /// Waits (up to 30 s) until the requests satisfy `done`.
    pub async fn wait_for_requests(&self, done: impl Fn(&Requests) -> bool) -> Requests {
        let mut rx = self.shared.requests.subscribe();
        let waited = tokio::time::timeout(Duration::from_secs(30), rx.wait_for(|r| done(r))).await;
        *waited
            .unwrap_or_else(|_| panic!("requests still {:?} after 30 s", self.requests()))
            .unwrap()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap()
    }
}

impl Drop for FakeLaunchDarkly {
    fn drop(&mut self) {
        self.state().streams.clear();
        self.state().big_streams.clear();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn put_event(data: &Value) -> String {
    format!(
        "event: put\ndata: {}\n\n",
        json!({"path": "/", "data": data})
    )
}

/// Sends to every open Big Segments stream, forgetting those that closed.
fn send_big(state: &mut State, text: &str) {
    let bytes = Bytes::from(text.to_owned());
    state
        .big_streams
        .retain(|stream| stream.send(Ok(Frame::data(bytes.clone()))).is_ok());
}

/// The patches of `chain` after the one whose version is `after` (all without one; none if
/// no patch has that version, as for a cursor the service does not know).
fn patches_after(chain: &[Value], after: Option<&str>) -> Vec<Value> {
    match after {
        None => chain.to_vec(),
        Some(after) => match chain.iter().position(|p| p["version"] == after) {
            Some(at) => chain[at + 1..].to_vec(),
            None => Vec::new(),
        },
    }
}

/// Answers the Big Segments endpoints.
fn respond_big_segments(
    shared: &Shared,
    request: &Request<Incoming>,
    stream: bool,
) -> Response<BoxBody<Bytes, std::io::Error>> {
    let count = || {
        shared.requests.send_modify(|r| {
            if stream {
                r.big_segment_streams += 1;
            } else {
                r.big_segment_polls += 1;
            }
        });
    };
    if !authorized(shared, request) {
        count();
        return status(StatusCode::UNAUTHORIZED);
    }
    let mut state = shared.state.lock().unwrap();
    if let Some(code) = state.big_faults.pop_front() {
        count();
        return status(StatusCode::from_u16(code).unwrap());
    }
    if !stream {
        let after = request.uri().query().and_then(|query| {
            url::form_urlencoded::parse(query.as_bytes())
                .find(|(name, _)| name == "after")
                .map(|(_, value)| value.into_owned())
        });
        let body = Value::from(patches_after(&state.big_patches, after.as_deref())).to_string();
        count();
        return json_response(body);
    }
    let (tx, rx) = mpsc::unbounded_channel();
    state.big_streams.push(tx);
    count();
    events_response(rx)
}

/// Whether the request carries the SDK key.
fn authorized(shared: &Shared, request: &Request<Incoming>) -> bool {
    request
        .headers()
        .get("authorization")
        .is_some_and(|key| key.as_bytes() == shared.sdk_key.as_bytes())
}

fn json_response(body: String) -> Response<BoxBody<Bytes, std::io::Error>> {
    let body = Full::new(Bytes::from(body));
    let mut response = Response::new(body.map_err(|never| match never {}).boxed());
    response
        .headers_mut()
        .insert("content-type", "application/json".parse().unwrap());
    response
}

/// A stream's response: whatever arrives on `events`.
fn events_response(
    events: mpsc::UnboundedReceiver<Chunk>,
) -> Response<BoxBody<Bytes, std::io::Error>> {
    let mut response = Response::new(BoxBody::new(Events(events)));
    response
        .headers_mut()
        .insert("content-type", "text/event-stream".parse().unwrap());
    response
}

/// Sends to every open stream, forgetting those that closed.
fn send(state: &mut State, text: &str) {
    let bytes = Bytes::from(text.to_owned());
    state
        .streams
        .retain(|stream| stream.send(Ok(Frame::data(bytes.clone()))).is_ok());
}

fn respond(
    shared: &Shared,
    request: &Request<Incoming>,
) -> Response<BoxBody<Bytes, std::io::Error>> {
    let path = request.uri().path();
    let stream = match path {
        "/all" => true,
        "/sdk/latest-all" => false,
        "/sdk/big-segments/revisions" => return respond_big_segments(shared, request, false),
        "/big-segments" => return respond_big_segments(shared, request, true),
        _ => return status(StatusCode::NOT_FOUND),
    };
    // Counted once answered (a stream once it receives what is sent next), so that a test
    // that waits for a request and then sends an event knows the client gets it.
    let count = || {
        shared.requests.send_modify(|r| {
            if stream {
                r.streams += 1;
            } else {
                r.polls += 1;
            }
        });
    };
    if !authorized(shared, request) {
        count();
        return status(StatusCode::UNAUTHORIZED);
    }
    let mut state = shared.state.lock().unwrap();
    let fault = if stream {
        state.stream_faults.pop_front()
    } else {
        state.poll_faults.pop_front()
    };
    if let Some(code) = fault {
        count();
        return status(StatusCode::from_u16(code).unwrap());
    }
    if !stream {
        let body = state.data.to_string();
        count();
        return json_response(body);
    }
    let (tx, rx) = mpsc::unbounded_channel();
    tx.send(Ok(Frame::data(Bytes::from(put_event(&state.data)))))
        .unwrap();
    state.streams.push(tx);
    count();
    events_response(rx)
}

fn status(code: StatusCode) -> Response<BoxBody<Bytes, std::io::Error>> {
    let mut response = Response::new(
        Full::new(Bytes::new())
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = code;
    response
}

/// A stream's body: whatever the test sends, until it drops the stream.
struct Events(mpsc::UnboundedReceiver<Chunk>);

impl Body for Events {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Chunk>> {
        self.0.poll_recv(cx)
    }
}

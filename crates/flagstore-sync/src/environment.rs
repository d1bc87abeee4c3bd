//! One environment's feed: the stream (or polling) from LaunchDarkly, the data in memory, and
//! the writers of its stores.

use std::time::Duration;

use flagstore::backend::Reconnect;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::big_segments::BigSegmentsSync;
use crate::data::is_big_segment;
use crate::metrics;
use crate::protocol::{self, Message};
use crate::source::{Failure, Source};
use crate::sse::{Event, Line};
use crate::status::{ConnectionState, LastError, Status, now_millis};
use crate::writer::{Memory, Write};

/// How the data arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// The `/all` stream, polling while it is down.
    Streaming,
    /// Polling only.
    Polling,
}

/// A stream that held this long counts as healthy: the next failure retries from the shortest
/// delay again.
pub(crate) const HEALTHY_STREAM: Duration = Duration::from_secs(60);

pub(crate) struct Feed {
    pub(crate) name: String,
    pub(crate) index: usize,
    pub(crate) source: Source,
    pub(crate) mode: Mode,
    pub(crate) poll_interval: Duration,
    pub(crate) first_retry: Duration,
    pub(crate) memory: Memory,
    pub(crate) writers: Vec<mpsc::UnboundedSender<Write>>,
    pub(crate) status: watch::Sender<Status>,
    /// When data last arrived (a put, a poll, a change).
    pub(crate) last_data: Option<Instant>,
    /// The Big Segments synchronizer, until the data first holds an unbounded segment: then
    /// it starts, and runs until `stop`.
    pub(crate) big_segments: Option<BigSegmentsSync>,
    /// Says when to stop: this feed, and the Big Segments synchronizer it starts.
    pub(crate) stop: watch::Receiver<bool>,
}

impl Feed {
    /// Runs until the environment is OFF or `stop` says so; then its writers finish what is
    /// queued.
    pub(crate) async fn run(mut self) {
        let mut stop = self.stop.clone();
        metrics::state(&self.name, ConnectionState::Initializing);
        if *stop.borrow() {
            return;
        }
        tokio::select! {
            () = self.feed() => {}
            _ = stop.wait_for(|stop| *stop) => {}
        }
    }

    async fn feed(&mut self) {
        match self.mode {
            Mode::Streaming => self.stream().await,
            Mode::Polling => self.poll_forever().await,
        }
    }

    async fn stream(&mut self) {
        let mut backoff = Reconnect::starting_at(self.first_retry);
        loop {
            let mut healthy_since = None;
            let failure = match self.source.stream().await {
                Ok(mut stream) => loop {
                    let line = match stream.next().await {
                        Ok(line) => line,
                        Err(failure) => break failure,
                    };
                    let Line::Event(Event { name, data }) = line else {
                        continue;
                    };
                    let message = match protocol::read_event(&name, data).await {
                        Ok(message) => message,
                        Err(e) => {
                            break Failure::Invalid(format!("a malformed {name} event: {e}"));
                        }
                    };
                    let put = matches!(message, Message::Put(_));
                    self.apply(message, event_name(&name));
                    if put {
                        healthy_since = Some(Instant::now());
                        self.set_state(ConnectionState::Valid, None);
                    }
                },
                Err(failure) => failure,
            };
            if healthy_since.is_some_and(|since| since.elapsed() >= HEALTHY_STREAM) {
                backoff.reset();
            }
            if self.failed(&failure) {
                return;
            }
            // While the stream is down, polling keeps the data from growing older than it would
            // in polling mode.
            if self
                .last_data
                .is_none_or(|at| at.elapsed() >= self.poll_interval)
            {
                match self.source.poll().await {
                    Ok(data) => {
                        tracing::info!(
                            "{}: polled the flag data while the stream is down",
                            self.name
                        );
                        self.apply(Message::Put(data), "put");
                        self.set_state(ConnectionState::Interrupted, None);
                    }
                    Err(failure) => {
                        if self.failed(&failure) {
                            return;
                        }
                    }
                }
            }
            tokio::time::sleep(backoff.next_delay()).await;
        }
    }

    async fn poll_forever(&mut self) {
        loop {
            match self.source.poll().await {
                Ok(data) => {
                    self.apply(Message::Put(data), "put");
                    self.set_state(ConnectionState::Valid, None);
                }
                Err(failure) => {
                    if self.failed(&failure) {
                        return;
                    }
                }
            }
            tokio::time::sleep(self.poll_interval).await;
        }
    }

    /// Records a failure; whether it is final (the environment is now OFF).
    fn failed(&self, failure: &Failure) -> bool {
        if failure.is_permanent() {
            tracing::error!(
                "{}: giving up on this environment: {failure}; SDK key {}",
                self.name,
                self.source.key
            );
            self.set_state(ConnectionState::Off, Some(failure.last_error()));
            return true;
        }
        tracing::warn!("{}: {failure}; retrying", self.name);
        metrics::reconnect(&self.name, failure.reason());
        let state = if self.last_data.is_some() {
            ConnectionState::Interrupted
        } else {
            ConnectionState::Initializing
        };
        self.set_state(state, Some(failure.last_error()));
        false
    }

    /// Applies a message to memory, then hands it to every store.
    fn apply(&mut self, message: Message, event: &'static str) {
        let now = now_millis();
        let write = match message {
            Message::Put(data) => {
                let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
                tracing::debug!(
                    "{}: received {} flags and {} segments",
                    self.name,
                    data.live_count(&flagstore::Kind::FEATURES),
                    data.live_count(&flagstore::Kind::SEGMENTS)
                );
                if memory.as_ref() == Some(&data) {
                    // A poll (or a reconnection's put) that brings nothing new: the stores hold
                    // it already, and one that lost it is caught by its own check.
                    drop(memory);
                    self.last_data = Some(Instant::now());
                    tracing::debug!("{}: the data is unchanged", self.name);
                    return;
                }
                metrics::updated(&self.name, &data, now);
                // Only looked for until the synchronizer has started: a put may be large.
                let big = self.big_segments.is_some() && data.has_big_segments();
                *memory = Some(data);
                drop(memory);
                if big {
                    self.start_big_segments();
                }
                Write::Init
            }
            Message::Upsert(kind, item) => {
                let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
                let Some(data) = memory.as_mut() else {
                    tracing::debug!("{}: a {event} before any put; ignored", self.name);
                    return;
                };
                if !data.upsert(&kind, item.clone()) {
                    tracing::debug!(
                        "{}: a {event} of {} {:?} at version {} is not newer; ignored",
                        self.name,
                        kind,
                        item.key(),
                        item.version()
                    );
                    return;
                }
                metrics::updated(&self.name, data, now);
                drop(memory);
                if self.big_segments.is_some()
                    && kind == flagstore::Kind::SEGMENTS
                    && is_big_segment(&item)
                {
                    self.start_big_segments();
                }
                Write::Upsert(kind, item)
            }
            Message::Ignored(what) => {
                tracing::debug!("{}: ignored {what}", self.name);
                return;
            }
        };
        self.last_data = Some(Instant::now());
        metrics::event(&self.name, event);
        self.status
            .send_modify(|status| status.environments[self.index].last_update = Some(now));
        for writer in &self.writers {
            // A writer ends only after the feed: sending cannot fail while this runs.
            let _ = writer.send(write.clone());
        }
    }

    /// Starts keeping Big Segments current, the first time the data holds one.
    fn start_big_segments(&mut self) {
        let Some(sync) = self.big_segments.take() else {
            return;
        };
        tracing::info!(
            "{}: the data holds Big Segments; keeping them current",
            self.name
        );
        tokio::spawn(sync.run(self.stop.clone()));
    }

    fn set_state(&self, state: ConnectionState, error: Option<LastError>) {
        let mut changed_state = false;
        self.status.send_if_modified(|status| {
            let connection = &mut status.environments[self.index].connection;
            changed_state = connection.state != state;
            if changed_state {
                connection.state = state;
                connection.state_since = now_millis();
            }
            let has_error = error.is_some();
            if has_error {
                connection.last_error = error;
            }
            changed_state || has_error
        });
        if changed_state {
            metrics::state(&self.name, state);
        }
    }
}

/// The metrics label of an event: one of a fixed set.
fn event_name(name: &str) -> &'static str {
    match name {
        "put" => "put",
        "patch" => "patch",
        "delete" => "delete",
        _ => "other",
    }
}

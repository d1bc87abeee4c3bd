//! One store of an environment, written by a task of its own so that a slow or dead store never
//! holds up the others. Whatever it misses (a failed write, a wipe) it makes up with a full
//! `init` from the environment's data in memory.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use flagstore::backend::Reconnect;
use flagstore::{DynStore, Item, Kind};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};

use crate::data::DataSet;
use crate::metrics;
use crate::status::{DataStoreState, ErrorKind, LastError, Status, now_millis};

/// What the environment asks of a store.
#[derive(Debug, Clone)]
pub(crate) enum Write {
    /// The data in memory was replaced: write all of it.
    Init,
    /// One item changed (it is in memory already).
    Upsert(Kind, Item),
}

/// The data an environment holds in memory: `None` until the first `put`.
pub(crate) type Memory = Arc<Mutex<Option<DataSet>>>;

/// The part of the status a writer owns.
#[derive(Debug, Clone)]
pub(crate) struct StatusSlot {
    pub(crate) status: watch::Sender<Status>,
    pub(crate) env_index: usize,
    pub(crate) env_name: String,
    pub(crate) store_index: usize,
}

impl StatusSlot {
    fn set(&self, state: DataStoreState, error: Option<LastError>) {
        self.status.send_if_modified(|status| {
            let store = &mut status.environments[self.env_index].stores[self.store_index];
            let changed = store.state != state || error.is_some();
            if store.state != state {
                store.state = state;
                store.state_since = now_millis();
            }
            if error.is_some() {
                store.last_error = error;
            }
            changed
        });
        metrics::store_valid(
            &self.env_name,
            self.store_index,
            state == DataStoreState::Valid,
        );
    }
}

pub(crate) struct Writer {
    pub(crate) store: DynStore,
    pub(crate) memory: Memory,
    pub(crate) writes: mpsc::UnboundedReceiver<Write>,
    pub(crate) slot: StatusSlot,
    /// How often a store that holds the data is asked whether it still does.
    pub(crate) check_interval: Duration,
}

impl Writer {
    /// Runs until the environment stops sending (everything queued is written first) or, while
    /// the store cannot be written, until `stop` says so.
    pub(crate) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut needs_init = true;
        let mut retry_at: Option<Instant> = None;
        let first_retry = Duration::from_secs(1).min(self.check_interval);
        let mut backoff = Reconnect::starting_at(first_retry);
        let mut check =
            tokio::time::interval_at(Instant::now() + self.check_interval, self.check_interval);
        check.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut stopping = *stop.borrow();
        // Whether the environment has data to write: not before its first put.
        let mut ready = false;
        loop {
            if ready && needs_init && retry_at.is_none() {
                if stopping {
                    return;
                }
                match self.init().await {
                    Ok(()) => {
                        needs_init = false;
                        backoff.reset();
                        self.slot.set(DataStoreState::Valid, None);
                    }
                    Err(error) => {
                        self.failed(error);
                        retry_at = self.retry_after(&mut backoff);
                    }
                }
            }
            tokio::select! {
                biased;
                write = self.writes.recv() => match write {
                    None => return,
                    Some(Write::Init) => {
                        ready = true;
                        needs_init = true;
                        retry_at = None;
                    }
                    Some(Write::Upsert(kind, item)) if !needs_init => {
                        if let Err(error) = self.store.upsert(&kind, item).await {
                            self.failed(error);
                            needs_init = true;
                            retry_at = self.retry_after(&mut backoff);
                        }
                    }
                    // The coming init writes it.
                    Some(Write::Upsert(..)) => {}
                },
                _ = stop.changed(), if !stopping => {
                    stopping = true;
                    if needs_init {
                        return;
                    }
                }
                () = sleep_until(retry_at), if needs_init && retry_at.is_some() && !stopping => {
                    retry_at = None;
                }
                _ = check.tick(), if !needs_init && !stopping => {
                    match self.store.is_initialized().await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(
                                "{}: the store {} lost its data (its $inited marker is gone); writing it again",
                                self.slot.env_name, self.store
                            );
                            self.slot.set(DataStoreState::Interrupted, Some(LastError {
                                kind: ErrorKind::StoreError,
                                status_code: None,
                                message: "the store lost its data (no $inited marker); rewritten from memory".to_owned(),
                                time: now_millis(),
                            }));
                            needs_init = true;
                            retry_at = None;
                        }
                        Err(error) => {
                            self.failed(error);
                            needs_init = true;
                            retry_at = self.retry_after(&mut backoff);
                        }
                    }
                }
            }
        }
    }

    /// When to write again after a failure: the backoff's next delay, at most the check
    /// interval.
    fn retry_after(&self, backoff: &mut Reconnect) -> Option<Instant> {
        Some(Instant::now() + backoff.next_delay().min(self.check_interval))
    }

    /// Writes the whole data set from memory.
    async fn init(&mut self) -> flagstore::Result<()> {
        // Everything queued so far is in memory already, so the init covers it.
        while self.writes.try_recv().is_ok() {}
        let collections = match &*self.memory.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(data) => data.to_collections(),
            None => return Ok(()),
        };
        self.store.init(&collections).await
    }

    fn failed(&self, error: flagstore::Error) {
        tracing::error!(
            "{}: writing to the store {} failed; the data stays in memory and is written again once it answers: {error}",
            self.slot.env_name,
            self.store
        );
        self.slot.set(
            DataStoreState::Interrupted,
            Some(LastError {
                kind: ErrorKind::StoreError,
                status_code: None,
                message: error.to_string(),
                time: now_millis(),
            }),
        );
    }
}

async fn sleep_until(at: Option<Instant>) {
    if let Some(at) = at {
        tokio::time::sleep_until(at).await;
    }
}

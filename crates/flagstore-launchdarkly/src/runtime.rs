//! The runtime the adapter runs stores on, apart from whatever runtime the SDK calls it from.

use std::fmt;
use std::future::Future;
use std::sync::mpsc;
use std::time::Duration;

use tokio::runtime::{Builder, Runtime};

/// A small multi-thread runtime owned by the adapter.
///
/// The SDK's store trait is synchronous and the SDK calls it from inside its own Tokio runtime,
/// where `Handle::block_on` panics. So each call is spawned here and the calling thread waits on a
/// channel: that works from a current-thread runtime, a multi-thread runtime, or no runtime, and
/// cannot deadlock the caller's runtime because the work runs on these threads.
pub(crate) struct StoreRuntime {
    runtime: Option<Runtime>,
}

impl StoreRuntime {
    pub(crate) fn new(threads: usize) -> std::io::Result<Self> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("flagstore-ld")
            .enable_all()
            .build()?;
        Ok(StoreRuntime {
            runtime: Some(runtime),
        })
    }

    /// Runs `work` here and waits for it; `None` if it has not finished within `limit` (the
    /// stores' own timeouts should always answer first: this is the last line of defence).
    pub(crate) fn run<T: Send + 'static>(
        &self,
        limit: Duration,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Option<T> {
        let runtime = self.runtime.as_ref()?;
        let (tx, rx) = mpsc::sync_channel(1);
        runtime.spawn(async move {
            // The receiver may have given up; nothing to do then.
            let _ = tx.send(work.await);
        });
        rx.recv_timeout(limit).ok()
    }
}

impl Drop for StoreRuntime {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside async code (where SDK clients are often
        // dropped); shutting down in the background never does.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl fmt::Debug for StoreRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreRuntime").finish_non_exhaustive()
    }
}

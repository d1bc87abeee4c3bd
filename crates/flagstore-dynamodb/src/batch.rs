//! BatchWriteItem with every request eventually written or an error: never silently dropped.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// What one BatchWriteItem call did.
pub(crate) enum Attempt<T, E> {
    /// These requests were not processed (empty: all written).
    Unprocessed(Vec<T>),
    /// The call was throttled as a whole; every request is still pending.
    Throttled,
    /// A failure retrying cannot fix.
    Failed(E),
}

/// Backoff between attempts: full jitter over an exponentially growing cap.
const FIRST_DELAY: Duration = Duration::from_millis(50);
const MAX_DELAY: Duration = Duration::from_secs(5);

/// Sends `requests` through `send` until none is left, retrying what comes back unprocessed (or
/// throttled) with exponential backoff and jitter. Gives up with `Err(Ok(n))`, `n` requests still
/// pending, once the next wait would pass `deadline`; a hard failure is `Err(Err(e))`.
pub(crate) async fn write_all<T, E, F, Fut>(
    mut requests: Vec<T>,
    deadline: Duration,
    mut send: F,
) -> Result<(), Result<usize, E>>
where
    T: Clone,
    F: FnMut(Vec<T>) -> Fut,
    Fut: Future<Output = Attempt<T, E>>,
{
    let give_up = Instant::now() + deadline;
    let mut cap = FIRST_DELAY;
    while !requests.is_empty() {
        match send(requests.clone()).await {
            Attempt::Unprocessed(rest) => requests = rest,
            Attempt::Throttled => {}
            Attempt::Failed(err) => return Err(Err(err)),
        }
        if requests.is_empty() {
            break;
        }
        let wait = cap.mul_f64(fastrand::f64());
        if Instant::now() + wait > give_up {
            return Err(Ok(requests.len()));
        }
        tracing::debug!(
            pending = requests.len(),
            ?wait,
            "DynamoDB left writes unprocessed; retrying"
        );
        tokio::time::sleep(wait).await;
        cap = (cap * 2).min(MAX_DELAY);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A sender that processes at most `per_call` requests per call, like a throttled table.
    fn partial(
        per_call: usize,
        log: Arc<Mutex<Vec<u32>>>,
    ) -> impl FnMut(Vec<u32>) -> std::future::Ready<Attempt<u32, &'static str>> {
        move |mut batch: Vec<u32>| {
            let rest = batch.split_off(per_call.min(batch.len()));
            log.lock().unwrap().extend(batch);
            std::future::ready(Attempt::Unprocessed(rest))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_unprocessed_items_until_all_are_written() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let requests: Vec<u32> = (0..25).collect();
        write_all(
            requests.clone(),
            Duration::from_secs(60),
            partial(4, log.clone()),
        )
        .await
        .unwrap();
        assert_eq!(
            *log.lock().unwrap(),
            requests,
            "each written once, in order"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_is_retried_and_a_deadline_ends_it_with_the_count() {
        let mut calls = 0;
        let result = write_all(vec![1, 2, 3], Duration::from_secs(3), |_| {
            calls += 1;
            std::future::ready(Attempt::<u32, &str>::Throttled)
        })
        .await;
        assert!(matches!(result, Err(Ok(3))), "all three reported pending");
        assert!(calls > 3, "backed off and retried {calls} times");
    }

    #[tokio::test(start_paused = true)]
    async fn hard_failures_stop_at_once() {
        let mut calls = 0;
        let result = write_all(vec![1], Duration::from_secs(60), |_| {
            calls += 1;
            std::future::ready(Attempt::<u32, &str>::Failed("validation"))
        })
        .await;
        assert!(matches!(result, Err(Err("validation"))));
        assert_eq!(calls, 1);
    }
}

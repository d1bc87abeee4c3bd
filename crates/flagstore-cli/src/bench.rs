//! `flagstore bench`: read latency and throughput, straight from the store and through the cache.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flagstore::{CachingStoreBuilder, DynStore, Kind, PersistentDataStore};
use serde_json::json;

use crate::CliError;

struct Run {
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Run {
    fn percentile(&self, p: f64) -> Duration {
        let last = self.latencies.len().saturating_sub(1);
        let index = ((last as f64) * p).round() as usize;
        self.latencies.get(index).copied().unwrap_or_default()
    }

    fn throughput(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }
}

/// `requests` reads of the store's flags, `concurrency` at a time, keys taken in turn.
async fn measure(
    store: DynStore,
    keys: Arc<Vec<String>>,
    requests: usize,
    concurrency: usize,
) -> Result<Run, CliError> {
    let started = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|worker| {
            let (store, keys) = (Arc::clone(&store), Arc::clone(&keys));
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut i = worker;
                while i < requests {
                    let at = Instant::now();
                    store.get(&Kind::FEATURES, &keys[i % keys.len()]).await?;
                    latencies.push(at.elapsed());
                    i += concurrency;
                }
                Ok::<_, flagstore::Error>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(requests);
    for worker in workers {
        let done = worker
            .await
            .map_err(|e| CliError::new(format!("a bench worker failed: {e}")))??;
        latencies.extend(done);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    Ok(Run { latencies, elapsed })
}

pub(crate) async fn run(
    store: DynStore,
    requests: usize,
    concurrency: usize,
    json: bool,
) -> Result<(), CliError> {
    if requests == 0 || concurrency == 0 {
        return Err(CliError::new(
            "--requests and --concurrency must be at least 1",
        ));
    }
    let keys: Vec<String> = store
        .get_all(&Kind::FEATURES)
        .await?
        .into_iter()
        .filter(|i| !i.is_deleted())
        .map(|i| i.key().to_owned())
        .collect();
    if keys.is_empty() {
        return Err(CliError::new(format!(
            "{store} holds no flags to read: load some first"
        )));
    }
    let keys = Arc::new(keys);
    let uncached = measure(Arc::clone(&store), Arc::clone(&keys), requests, concurrency).await?;
    let cache: DynStore = Arc::new(CachingStoreBuilder::from_arc(Arc::clone(&store)).build()?);
    // Warm the cache so the cached run measures hits.
    measure(Arc::clone(&cache), Arc::clone(&keys), keys.len(), 1).await?;
    let cached = measure(cache, Arc::clone(&keys), requests, concurrency).await?;

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    if json {
        let report = |run: &Run| {
            json!({"p50Ms": ms(run.percentile(0.5)), "p90Ms": ms(run.percentile(0.9)), "p99Ms": ms(run.percentile(0.99)),
                   "maxMs": ms(run.percentile(1.0)), "readsPerSecond": run.throughput()})
        };
        let out = json!({"store": store.to_string(), "flags": keys.len(), "requests": requests,
                         "concurrency": concurrency, "uncached": report(&uncached), "cached": report(&cached)});
        println!("{out}");
        return Ok(());
    }
    // Cache hits take well under a millisecond: microseconds show them.
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{store}: {requests} reads of {} flags, {concurrency} at a time",
        keys.len()
    );
    println!(
        "{:<9} {:>11} {:>11} {:>11} {:>11} {:>12}",
        "mode", "p50", "p90", "p99", "max", "reads/s"
    );
    for (name, run) in [("uncached", &uncached), ("cached", &cached)] {
        println!(
            "{name:<9} {:>8.1} µs {:>8.1} µs {:>8.1} µs {:>8.1} µs {:>12.0}",
            us(run.percentile(0.5)),
            us(run.percentile(0.9)),
            us(run.percentile(0.99)),
            us(run.percentile(1.0)),
            run.throughput()
        );
    }
    Ok(())
}

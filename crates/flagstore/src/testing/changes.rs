//! The conformance suite for change feeds ([`PersistentDataStore::changes`]): every store that
//! has one runs it, with a factory that can also restart its server.
//!
//! A feed is what lets a live cache keep entries for minutes, so what it promises is checked
//! here on real servers: it says `Connected` first; another instance's upsert, delete and init
//! arrive within [`CHANGE_BOUND`]; a write under another prefix is not reported as one under
//! this prefix; a dropped feed stops everything it started; a server restart is reported as
//! `Lost`, then `Connected` (which a reader takes as "everything changed"), and changes arrive
//! again after it.
//!
//! [`PersistentDataStore::changes`]: crate::PersistentDataStore::changes

use std::time::Duration;

use async_trait::async_trait;
use tokio::time::Instant;

use super::cases::{data_set, flag, segment};
use super::unique_run_id;
use crate::changes::{Change, ChangeFeed, FeedEvent};
use crate::{DynStore, Item, Kind};

/// How long another instance's write may take to arrive as an event.
pub const CHANGE_BOUND: Duration = Duration::from_secs(2);
/// How long a feed may take to connect, or to reconnect after a restart.
pub const CONNECT_BOUND: Duration = Duration::from_secs(30);
/// How long a dropped feed may take to stop everything it started.
pub const STOP_BOUND: Duration = Duration::from_secs(5);

/// Makes stores of one backend, with their change feeds set up, for [`run_changes`].
#[async_trait]
pub trait FeedFactory: Send + Sync {
    /// A new store instance (its own connections, like another process) whose items live under
    /// `prefix`, configured so that its [`changes`](crate::PersistentDataStore::changes) feed
    /// works on this server.
    async fn store(&self, prefix: &str) -> DynStore;

    /// Stops the server that holds `prefix` (for a Sentinel setup: the primary, so that another
    /// is promoted; for a cluster: the node serving the prefix's keys) and brings it back empty,
    /// as a server without persistence restarts. Returns once it answers again.
    async fn restart_server(&self, prefix: &str);
}

/// Runs every feed case, each under a prefix of its own.
pub async fn run_changes(factory: &dyn FeedFactory) {
    let run = unique_run_id();
    connects_first(factory, &format!("{run}_connects")).await;
    another_instances_writes_arrive(factory, &format!("{run}_writes")).await;
    other_prefixes_are_not_reported(factory, &format!("{run}_prefix")).await;
    a_dropped_feed_stops(factory, &format!("{run}_dropped")).await;
    a_restart_is_lost_then_connected(factory, &format!("{run}_restart")).await;
}

fn feed(store: &DynStore) -> ChangeFeed {
    store
        .changes()
        .unwrap_or_else(|| panic!("{store} has no change feed"))
}

/// The next event within `bound`, failing the case if none comes.
async fn next(feed: &mut ChangeFeed, bound: Duration, waiting_for: &str) -> FeedEvent {
    match tokio::time::timeout(bound, feed.next()).await {
        Ok(Some(event)) => event,
        Ok(None) => panic!("the feed ended while waiting for {waiting_for}"),
        Err(_) => panic!("no event within {bound:?} while waiting for {waiting_for}"),
    }
}

async fn connected(feed: &mut ChangeFeed) {
    match next(feed, CONNECT_BOUND, "Connected").await {
        FeedEvent::Connected => {}
        other => panic!("the first event is {other:?}, not Connected"),
    }
}

/// Whether `change` may be the report of a write to `key` of `kind`.
fn covers(change: &Change, kind: &Kind, key: &str) -> bool {
    match change {
        Change::Item {
            kind: k,
            key: changed,
        } => k == kind && changed == key,
        Change::Kind(k) => k == kind,
        Change::Everything => true,
    }
}

/// Waits until changes covering every `(kind, key)` in `writes` have arrived, within
/// [`CHANGE_BOUND`] of `since`. Any `Lost` fails the case.
async fn arrives(feed: &mut ChangeFeed, since: Instant, what: &str, writes: &[(&Kind, &str)]) {
    let mut missing: Vec<(&Kind, &str)> = writes.to_vec();
    while !missing.is_empty() {
        let left = CHANGE_BOUND.saturating_sub(since.elapsed());
        match next(feed, left, what).await {
            FeedEvent::Changed(change) => missing.retain(|(kind, key)| !covers(&change, kind, key)),
            FeedEvent::Connected => {}
            FeedEvent::Lost(err) => panic!("the feed was lost while waiting for {what}: {err}"),
        }
    }
}

/// The first event of a feed is `Connected`.
pub async fn connects_first(f: &dyn FeedFactory, prefix: &str) {
    let store = f.store(prefix).await;
    let mut feed = feed(&store);
    connected(&mut feed).await;
}

/// Another instance's upsert, delete and init arrive within [`CHANGE_BOUND`] each.
pub async fn another_instances_writes_arrive(f: &dyn FeedFactory, prefix: &str) {
    let reader = f.store(prefix).await;
    let writer = f.store(prefix).await;
    let mut feed = feed(&reader);
    connected(&mut feed).await;

    let started = Instant::now();
    writer.upsert(&Kind::FEATURES, flag("f", 1)).await.unwrap();
    arrives(&mut feed, started, "an upsert", &[(&Kind::FEATURES, "f")]).await;

    let started = Instant::now();
    let tombstone = Item::tombstone("f", 2);
    assert!(writer.upsert(&Kind::FEATURES, tombstone).await.unwrap());
    arrives(&mut feed, started, "a delete", &[(&Kind::FEATURES, "f")]).await;

    let started = Instant::now();
    let data = data_set(vec![flag("g", 1)], vec![segment("s", 1)]);
    writer.init(&data).await.unwrap();
    let both = [(&Kind::FEATURES, "g"), (&Kind::SEGMENTS, "s")];
    arrives(&mut feed, started, "an init", &both).await;
}

/// A write under another prefix is not reported: after one there (to flags) and one here (to
/// segments), the first change the feed reports is the one here. (A feed that can only say
/// [`Change::Everything`] passes whatever it reports first: it cannot tell the two apart.)
pub async fn other_prefixes_are_not_reported(f: &dyn FeedFactory, prefix: &str) {
    let reader = f.store(prefix).await;
    let mut feed = feed(&reader);
    connected(&mut feed).await;
    let elsewhere = f.store(&format!("{prefix}x")).await;
    elsewhere
        .upsert(&Kind::FEATURES, flag("other", 1))
        .await
        .unwrap();
    let here = f.store(prefix).await;
    here.upsert(&Kind::SEGMENTS, segment("mine", 1))
        .await
        .unwrap();
    match next(&mut feed, CHANGE_BOUND, "the write under this prefix").await {
        FeedEvent::Changed(change) => assert!(
            covers(&change, &Kind::SEGMENTS, "mine"),
            "reported {change:?} for a write under another prefix"
        ),
        other => panic!("expected the write under this prefix, got {other:?}"),
    }
}

/// A dropped feed stops its task and every task it started, within [`STOP_BOUND`]; so does one
/// dropped before it was ever read.
pub async fn a_dropped_feed_stops(f: &dyn FeedFactory, prefix: &str) {
    let store = f.store(prefix).await;
    let unread = feed(&store);
    let tracker = unread.tracker();
    drop(unread);
    assert!(
        tracker.has_ended(),
        "a feed never read left its loop behind"
    );

    let mut running = feed(&store);
    connected(&mut running).await;
    let tracker = running.tracker();
    assert!(!tracker.has_ended());
    drop(running);
    let started = Instant::now();
    while !tracker.has_ended() {
        assert!(
            started.elapsed() < STOP_BOUND,
            "a dropped feed still runs after {STOP_BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A server restart is reported as `Lost`, then `Connected`; after it, another instance's write
/// arrives again.
pub async fn a_restart_is_lost_then_connected(f: &dyn FeedFactory, prefix: &str) {
    let reader = f.store(prefix).await;
    let mut feed = feed(&reader);
    connected(&mut feed).await;
    f.restart_server(prefix).await;
    loop {
        match next(&mut feed, CONNECT_BOUND, "Lost after the restart").await {
            FeedEvent::Lost(_) => break,
            // A flush or a failover may be reported as a change before the connection drops.
            FeedEvent::Changed(_) => {}
            FeedEvent::Connected => panic!("Connected again before Lost: the restart went unseen"),
        }
    }
    loop {
        match next(&mut feed, CONNECT_BOUND, "Connected after the restart").await {
            FeedEvent::Connected => break,
            FeedEvent::Lost(_) | FeedEvent::Changed(_) => {}
        }
    }
    let writer = f.store(prefix).await;
    let started = Instant::now();
    writer
        .upsert(&Kind::FEATURES, flag("after", 1))
        .await
        .unwrap();
    let after = [(&Kind::FEATURES, "after")];
    arrives(&mut feed, started, "a write after the restart", &after).await;
}

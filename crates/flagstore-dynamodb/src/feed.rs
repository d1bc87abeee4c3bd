//! The change feed: the table's DynamoDB stream.
//!
//! Every write to the table, by any writer (another SDK, the Relay Proxy, `flagstore sync`),
//! becomes a stream record naming the record's keys, so a change is reported for exactly one
//! item ([`Change::Item`]), and the marker's for everything. The feed reads every open shard
//! from where the stream stood when it connected, follows a closed shard into its children, and
//! keeps only this prefix's records. The table must have a stream (`StreamSpecification`, any
//! view type; `KEYS_ONLY` is the cheapest): without one the feed says so, with how to enable it.
//!
//! DynamoDB Streams serves about five `GetRecords` calls per second per shard to all readers
//! together: each live reader polls every shard once per
//! [`stream_poll_interval`](crate::DynamoDbStoreBuilder::stream_poll_interval), so a fleet of
//! readers on one table gets throttled (the feed backs off, and changes arrive later) unless
//! the interval grows with it.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodbstreams::types::{Record, Shard, ShardIteratorType};
use flagstore::backend::{FeedSender, Reconnect};
use flagstore::changes::{Change, ChangeFeed, FeedEvent};
use flagstore::error::Operation;
use flagstore::{Error, Kind};

use crate::error::{BACKEND, from_sdk};
use crate::schema::{Namespaces, PARTITION_KEY, SORT_KEY};
use crate::store::ClientSource;

/// How often each shard is read by default.
pub(crate) const DEFAULT_STREAM_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How often the stream's shards are listed again, to find shards opened meanwhile (a shard
/// closing is noticed at once; DynamoDB also opens new shards beside it).
const SHARD_DISCOVERY: Duration = Duration::from_secs(30);
/// Error codes of `GetRecords` that mean the position in the shard is lost: the feed reconnects,
/// which a reader takes as "everything changed".
const POSITION_LOST: &[&str] = &["ExpiredIteratorException", "TrimmedDataAccessException"];
/// Error codes that mean "slow down".
const THROTTLED: &[&str] = &["LimitExceededException", "ThrottlingException"];

/// Everything a running feed needs; shared by every feed the store opens.
pub(crate) struct StreamFeed {
    pub(crate) source: Arc<ClientSource>,
    pub(crate) table: String,
    pub(crate) names: Namespaces,
    pub(crate) request_timeout: Duration,
    pub(crate) poll_interval: Duration,
}

impl StreamFeed {
    pub(crate) fn start(self: &Arc<Self>) -> ChangeFeed {
        let feed = Arc::clone(self);
        ChangeFeed::reconnecting(move |tx| {
            let feed = Arc::clone(&feed);
            async move { feed.follow(&tx).await }
        })
    }

    /// Finds the stream, positions a reader at the end of every open shard, and forwards this
    /// prefix's records until a call fails (the error) or the reader is gone (`None`).
    async fn follow(&self, tx: &FeedSender) -> Option<Error> {
        let dynamo = self.source.get().await;
        let arn = match self.stream_arn(dynamo).await {
            Ok(arn) => arn,
            Err(err) => return Some(err),
        };
        let Some(streams) = self.source.streams().await else {
            return Some(Error::config(
                BACKEND,
                "this store was given a DynamoDB client without a DynamoDB Streams client, so its change feed cannot read the table's stream: add stream_client() to the builder",
            ));
        };
        let shards = match self.shards(streams, &arn).await {
            Ok(shards) => shards,
            Err(err) => return Some(err),
        };
        let mut known: HashSet<String> = HashSet::new();
        // An iterator per shard being read: where it is read next.
        let mut reading = Vec::new();
        for shard in shards {
            let id = shard.shard_id().unwrap_or_default().to_owned();
            let open = shard
                .sequence_number_range()
                .is_none_or(|range| range.ending_sequence_number().is_none());
            if open {
                match self
                    .iterator(streams, &arn, &id, ShardIteratorType::Latest)
                    .await
                {
                    Ok(iterator) => reading.push(iterator),
                    Err(err) => return Some(err),
                }
            }
            known.insert(id);
        }
        let via = format!("the DynamoDB stream of table {:?}", self.table);
        if !tx.connected(via).await {
            return None;
        }
        let mut discovered = tokio::time::Instant::now();
        let mut throttled = Reconnect::new();
        loop {
            let mut closed = false;
            let mut still = Vec::with_capacity(reading.len());
            for iterator in reading {
                let request = streams.get_records().shard_iterator(&iterator);
                let answer = tokio::time::timeout(self.request_timeout, request.send()).await;
                let output = match answer {
                    Err(_) => {
                        return Some(Error::timeout(
                            BACKEND,
                            Operation::Watch,
                            self.request_timeout,
                        ));
                    }
                    Ok(Err(err)) if err.code().is_some_and(|c| THROTTLED.contains(&c)) => {
                        tokio::time::sleep(throttled.next_delay()).await;
                        still.push(iterator);
                        continue;
                    }
                    Ok(Err(err)) => return Some(stream_error(err)),
                    Ok(Ok(output)) => output,
                };
                throttled.reset();
                for record in output.records() {
                    if let Some(change) = self.change_for(record)
                        && !tx.send(FeedEvent::Changed(change)).await
                    {
                        return None;
                    }
                }
                match output.next_shard_iterator() {
                    Some(next) => still.push(next.to_owned()),
                    // A closed shard, read to its end: its children carry on.
                    None => closed = true,
                }
            }
            reading = still;
            if closed || discovered.elapsed() >= SHARD_DISCOVERY {
                discovered = tokio::time::Instant::now();
                let shards = match self.shards(streams, &arn).await {
                    Ok(shards) => shards,
                    Err(err) => return Some(err),
                };
                for shard in shards {
                    let id = shard.shard_id().unwrap_or_default().to_owned();
                    if known.contains(&id) {
                        continue;
                    }
                    // Opened after the feed connected: every record in it is new.
                    let from = ShardIteratorType::TrimHorizon;
                    match self.iterator(streams, &arn, &id, from).await {
                        Ok(iterator) => reading.push(iterator),
                        Err(err) => return Some(err),
                    }
                    known.insert(id);
                }
            }
            tokio::time::sleep(self.poll_interval).await;
        }
    }

    /// The table's current stream, or an error saying how to enable one.
    async fn stream_arn(&self, dynamo: &Client) -> Result<String, Error> {
        let op = Operation::Watch;
        let request = dynamo.describe_table().table_name(&self.table).send();
        let described = tokio::time::timeout(self.request_timeout, request)
            .await
            .map_err(|_| Error::timeout(BACKEND, op, self.request_timeout))?
            .map_err(|e| from_sdk(op, self.request_timeout, &self.table, e))?;
        let table = described.table();
        let enabled = table
            .and_then(|t| t.stream_specification())
            .is_some_and(|spec| spec.stream_enabled());
        match table.and_then(|t| t.latest_stream_arn()) {
            Some(arn) if enabled => Ok(arn.to_owned()),
            _ => Err(Error::config(
                BACKEND,
                format!(
                    "table {t:?} has no stream, so the change feed cannot follow it: enable one (StreamSpecification StreamEnabled=true, StreamViewType=KEYS_ONLY is enough), for example `aws dynamodb update-table --table-name {t} --stream-specification StreamEnabled=true,StreamViewType=KEYS_ONLY`; tables made by `flagstore load --create-table` or create_table() have one",
                    t = self.table
                ),
            )),
        }
    }

    /// Every shard of the stream, page by page.
    async fn shards(
        &self,
        streams: &aws_sdk_dynamodbstreams::Client,
        arn: &str,
    ) -> Result<Vec<Shard>, Error> {
        let mut shards = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let request = streams
                .describe_stream()
                .stream_arn(arn)
                .set_exclusive_start_shard_id(after.take())
                .send();
            let output = self.bounded(request).await?;
            let Some(description) = output.stream_description() else {
                return Ok(shards);
            };
            shards.extend(description.shards().iter().cloned());
            match description.last_evaluated_shard_id() {
                Some(last) => after = Some(last.to_owned()),
                None => return Ok(shards),
            }
        }
    }

    async fn iterator(
        &self,
        streams: &aws_sdk_dynamodbstreams::Client,
        arn: &str,
        shard: &str,
        from: ShardIteratorType,
    ) -> Result<String, Error> {
        let request = streams
            .get_shard_iterator()
            .stream_arn(arn)
            .shard_id(shard)
            .shard_iterator_type(from)
            .send();
        let output = self.bounded(request).await?;
        output.shard_iterator().map(str::to_owned).ok_or_else(|| {
            Error::database(
                BACKEND,
                Operation::Watch,
                format!("DynamoDB Streams gave no iterator for shard {shard}"),
            )
        })
    }

    /// `call` within the request timeout, its failure as an error of the feed.
    async fn bounded<T, E, R>(
        &self,
        call: impl Future<Output = Result<T, SdkError<E, R>>>,
    ) -> Result<T, Error>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        match tokio::time::timeout(self.request_timeout, call).await {
            Ok(result) => result.map_err(stream_error),
            Err(_) => Err(Error::timeout(
                BACKEND,
                Operation::Watch,
                self.request_timeout,
            )),
        }
    }

    /// What a stream record means for this store, if anything.
    fn change_for(&self, record: &Record) -> Option<Change> {
        let keys = record.dynamodb()?.keys()?;
        let namespace = keys.get(PARTITION_KEY)?.as_s().ok()?;
        let key = keys.get(SORT_KEY)?.as_s().ok()?;
        change_for_record(&self.names, namespace, key)
    }
}

/// The change a write to the record `(namespace, key)` is under `names`' prefix.
fn change_for_record(names: &Namespaces, namespace: &str, key: &str) -> Option<Change> {
    if namespace == names.inited() {
        return Some(Change::Everything);
    }
    let kind = if names.prefix().is_empty() {
        namespace
    } else {
        namespace.strip_prefix(names.prefix())?.strip_prefix(':')?
    };
    match kind {
        // Another prefix's ("{prefix}:more:features"), or Big Segments data.
        kind if kind.contains(':') || kind.is_empty() => None,
        "big_segments_metadata" | "big_segments_user" => None,
        "features" => Some(Change::Item {
            kind: Kind::FEATURES,
            key: key.to_owned(),
        }),
        "segments" => Some(Change::Item {
            kind: Kind::SEGMENTS,
            key: key.to_owned(),
        }),
        kind => Some(Change::Item {
            kind: Kind::new(kind.to_owned()),
            key: key.to_owned(),
        }),
    }
}

/// A DynamoDB Streams error as the feed's: the service's code and message, or the whole
/// context of a failure before any answer. A lost position says that the feed starts over.
fn stream_error<E, R>(err: SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let detail = match (err.code(), err.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        _ => DisplayErrorContext(&err).to_string(),
    };
    let detail = if err.code().is_some_and(|c| POSITION_LOST.contains(&c)) {
        format!("{detail} (the feed reconnects from the stream's end)")
    } else {
        detail
    };
    Error::database(
        BACKEND,
        Operation::Watch,
        format!("DynamoDB Streams: {detail}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_map_to_changes_of_this_prefix_only() {
        let names = Namespaces::new("prod".to_owned());
        let item = |kind: Kind, key: &str| {
            Some(Change::Item {
                kind,
                key: key.to_owned(),
            })
        };
        let change = |namespace: &str, key: &str| change_for_record(&names, namespace, key);
        assert_eq!(change("prod:features", "f"), item(Kind::FEATURES, "f"));
        assert_eq!(change("prod:segments", "s"), item(Kind::SEGMENTS, "s"));
        assert_eq!(
            change("prod:$inited", "prod:$inited"),
            Some(Change::Everything)
        );
        assert_eq!(change("prod:big_segments_user", "u"), None);
        assert_eq!(change("prodx:features", "f"), None);
        assert_eq!(change("prod:more:features", "f"), None);
        assert_eq!(change("features", "f"), None);

        let bare = Namespaces::new(String::new());
        assert_eq!(
            change_for_record(&bare, "features", "f"),
            item(Kind::FEATURES, "f")
        );
        assert_eq!(
            change_for_record(&bare, "$inited", "$inited"),
            Some(Change::Everything)
        );
        assert_eq!(change_for_record(&bare, "prod:features", "f"), None);
    }
}

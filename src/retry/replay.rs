//! Replay: re-drive dead-lettered deliveries into delivery.
//!
//! A replay reads the dead-letter topic from its start up to its end at the
//! moment the replay begins, keeps the records that match the filter, and
//! writes each one into the redrive topic, due now. The retry consumer then
//! delivers it like any retry: to the webhook as it is now (if it is still
//! the webhook the delivery was for), with the same `webhook-id`, its attempt
//! count and history carried on. A replayed delivery that fails again goes
//! through the tiers once more, from the first.
//!
//! Only deliveries can be replayed: a record that never was routed (invalid
//! JSON, no event type) has no webhook, and is counted as skipped.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::config::Config;
use crate::retry::codec::{self, headers as h};
use crate::retry::reason::{Class, Reason};
use crate::routing::pattern_matches;

/// Which dead letters to replay; every set field must match. It is also
/// `herald replay`'s flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ReplayFilter {
    /// Only this webhook's deliveries.
    #[arg(long)]
    pub webhook: Option<String>,
    /// The tenant of the webhook (or, for records that do not say, of the event).
    #[arg(long)]
    pub tenant: Option<String>,
    /// The webhook's incarnation (`created_at`): dead letters of an earlier
    /// webhook with the same id are not its own.
    #[arg(skip)]
    pub webhook_created_at: Option<OffsetDateTime>,
    /// Event type pattern: exact, `prefix.*` or `*`.
    #[arg(long)]
    pub event_type: Option<String>,
    /// Dead-letter reason, e.g. webhook_paused, retries_exhausted,
    /// endpoint_gone (repeatable: any of them; any reason when absent).
    #[arg(long = "reason", value_parser = parse_reason)]
    pub reasons: Vec<Reason>,
    /// Dead-lettered at or after this RFC 3339 time.
    #[arg(long, value_parser = parse_time)]
    pub since: Option<OffsetDateTime>,
    /// Dead-lettered before this RFC 3339 time.
    #[arg(long, value_parser = parse_time)]
    pub until: Option<OffsetDateTime>,
}

/// An RFC 3339 time given on the command line.
fn parse_time(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &Rfc3339).map_err(|e| format!("`{s}` is not an RFC 3339 time: {e}"))
}

/// A reason given on the command line: one Herald writes on dead letters.
fn parse_reason(s: &str) -> Result<Reason, String> {
    match s.parse::<Reason>() {
        Ok(reason) if reason.class() != Class::Redrive => Ok(reason),
        _ => Err(format!(
            "`{s}` is not a dead-letter reason; one of: {}",
            Reason::ALL
                .iter()
                .filter(|r| r.class() != Class::Redrive)
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

impl ReplayFilter {
    fn matches(&self, headers: &HashMap<String, String>) -> bool {
        let eq = |want: &Option<String>, key: &str| want.as_ref().is_none_or(|w| headers.get(key) == Some(w));
        let event_type_ok = self.event_type.as_ref().is_none_or(|pattern| {
            let t = headers.get(h::EVENT_TYPE).map(String::as_str).unwrap_or("");
            pattern_matches(pattern, t)
        });
        let at = headers
            .get(h::DEAD_LETTERED_AT)
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok());
        let time_ok = match (at, self.since, self.until) {
            (_, None, None) => true,
            (None, _, _) => false,
            (Some(at), since, until) => since.is_none_or(|s| at >= s) && until.is_none_or(|u| at < u),
        };
        let tenant_ok = self.tenant.as_ref().is_none_or(|want| {
            let tenant = headers.get(h::WEBHOOK_TENANT).or_else(|| headers.get(h::TENANT));
            tenant == Some(want)
        });
        let incarnation_ok = self.webhook_created_at.is_none_or(|want| {
            headers
                .get(h::WEBHOOK_CREATED_AT)
                .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
                .is_none_or(|at| at == want)
        });
        eq(&self.webhook, h::WEBHOOK_ID)
            && tenant_ok
            && incarnation_ok
            && (self.reasons.is_empty()
                || headers
                    .get(h::REASON)
                    .is_some_and(|r| self.reasons.iter().any(|want| want.as_str() == r)))
            && event_type_ok
            && time_ok
    }
}

/// What a replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Dead letters to read (the topic's size when the replay began).
    pub total: u64,
    /// Dead letters read.
    pub scanned: u64,
    /// Matching the filter.
    pub matched: u64,
    /// Matching but not deliveries (never routed, or a stub), so not replayable.
    pub skipped: u64,
    /// Matching deliveries re-driven by an earlier replay, not again (unless forced).
    pub already_redriven: u64,
    /// Written to the redrive topic (0 on a dry run).
    pub replayed: u64,
}

impl ReplaySummary {
    /// What a dry run would re-drive.
    pub fn would_replay(&self) -> u64 {
        self.matched - self.skipped - self.already_redriven
    }
}

/// How a replay runs; also `herald replay`'s flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::Args)]
pub struct ReplayOptions {
    /// Count what would be replayed, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Re-drive dead letters an earlier replay re-drove too (each is otherwise re-driven once).
    #[arg(long)]
    pub force: bool,
}

/// A replay that could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("redis (which dead letters were re-driven): {0}")]
    Redis(#[from] redis::RedisError),
}

/// What the reader thread tells the writer.
enum Read {
    /// A matching delivery.
    Delivery(Redrive),
    /// How far the reader is (scanned, matched, skipped not deliveries).
    Progress {
        total: u64,
        scanned: u64,
        matched: u64,
        skipped: u64,
    },
}

/// One dead letter to re-drive.
struct Redrive {
    partition: i32,
    offset: i64,
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    headers: OwnedHeaders,
}

/// Which dead letters were re-driven, so a second replay over the same range
/// skips them: a bitmap per 4,096 offsets of a dead-letter partition in Redis
/// (`{prefix}redriven:{topic}:{partition}:{offset / 4096}`), expiring with
/// the dead letters themselves (`dead_letter.retention`).
pub struct RedriveMarks {
    conn: redis::aio::ConnectionManager,
    prefix: String,
    topic: String,
    ttl: Duration,
    cache: HashMap<(i32, i64), Vec<u8>>,
}

/// Offsets per bitmap.
const MARK_BUCKET: i64 = 4096;

impl RedriveMarks {
    /// The marks of the dead-letter topic, in Redis.
    pub async fn connect(config: &Config) -> Result<RedriveMarks, ReplayError> {
        let client = config.redis.client()?;
        let conn = client
            .get_connection_manager_with_config(
                redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(5)))
                    .set_response_timeout(Some(Duration::from_secs(5))),
            )
            .await?;
        Ok(RedriveMarks {
            conn,
            prefix: config.redis.prefix.clone(),
            topic: config.dead_letter.topic.clone(),
            ttl: config.dead_letter.retention,
            cache: HashMap::new(),
        })
    }

    fn key(&self, partition: i32, bucket: i64) -> String {
        format!("{}redriven:{}:{partition}:{bucket}", self.prefix, self.topic)
    }

    /// Whether the dead letter at `partition`/`offset` was re-driven.
    pub async fn is_marked(&mut self, partition: i32, offset: i64) -> Result<bool, ReplayError> {
        let bucket = offset.div_euclid(MARK_BUCKET);
        if !self.cache.contains_key(&(partition, bucket)) {
            if self.cache.len() >= 64 {
                self.cache.clear();
            }
            let bits: Option<Vec<u8>> = redis::cmd("GET")
                .arg(self.key(partition, bucket))
                .query_async(&mut self.conn)
                .await?;
            self.cache.insert((partition, bucket), bits.unwrap_or_default());
        }
        let bits = &self.cache[&(partition, bucket)];
        let bit = offset.rem_euclid(MARK_BUCKET) as usize;
        // Redis numbers a string's bits from the most significant of its first byte.
        Ok(bits.get(bit / 8).is_some_and(|byte| byte & (0x80 >> (bit % 8)) != 0))
    }

    /// Marks dead letters as re-driven.
    pub async fn mark(&mut self, letters: &[(i32, i64)]) -> Result<(), ReplayError> {
        if letters.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        let mut keys = std::collections::BTreeSet::new();
        for &(partition, offset) in letters {
            let key = self.key(partition, offset.div_euclid(MARK_BUCKET));
            pipe.cmd("SETBIT")
                .arg(&key)
                .arg(offset.rem_euclid(MARK_BUCKET))
                .arg(1)
                .ignore();
            keys.insert(key);
        }
        for key in keys {
            pipe.cmd("EXPIRE").arg(key).arg(self.ttl.as_secs().max(1)).ignore();
        }
        let () = pipe.query_async(&mut self.conn).await?;
        for &(partition, offset) in letters {
            self.cache.remove(&(partition, offset.div_euclid(MARK_BUCKET)));
        }
        Ok(())
    }
}

/// Replays matching dead letters (or only counts them on a dry run), each
/// at most once unless forced; `progress` is called as records are read.
/// Redrive records are written with `producer` (the process's shared one).
pub async fn replay(
    config: &Config,
    producer: &FutureProducer,
    filter: &ReplayFilter,
    options: ReplayOptions,
    progress: impl Fn(&ReplaySummary) + Send + 'static,
) -> Result<ReplaySummary, ReplayError> {
    let redrive_topic = config.retry.redrive_topic.clone();
    let mut marks = RedriveMarks::connect(config).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Read>(256);
    let reader = {
        let config = config.clone();
        let filter = filter.clone();
        tokio::task::spawn_blocking(move || read(&config, &filter, tx))
    };
    let mut summary = ReplaySummary::default();
    // Acknowledgements awaited while later records are sent: a replay of
    // thousands is written in a moment, not one round trip at a time.
    let mut acks = futures::stream::FuturesUnordered::new();
    let mut written: Vec<(i32, i64)> = Vec::new();
    while let Some(read) = rx.recv().await {
        let item = match read {
            Read::Progress {
                total,
                scanned,
                matched,
                skipped,
            } => {
                (summary.total, summary.scanned, summary.matched, summary.skipped) = (total, scanned, matched, skipped);
                progress(&summary);
                continue;
            }
            Read::Delivery(item) => item,
        };
        if !options.force && marks.is_marked(item.partition, item.offset).await? {
            summary.already_redriven += 1;
            continue;
        }
        if options.dry_run {
            continue;
        }
        let ack = send_redrive(
            producer,
            &redrive_topic,
            item.key.as_deref(),
            &item.value,
            item.headers,
            &mut acks,
            |ack| {
                written.push(acknowledged(ack)?);
                Ok(())
            },
        )
        .await?;
        let at = (item.partition, item.offset);
        acks.push(async move { (at, ack.await) });
        while acks.len() >= MAX_UNACKNOWLEDGED {
            if let Some(ack) = acks.next().await {
                written.push(acknowledged(ack)?);
            }
        }
        if written.len() >= MARK_BATCH {
            summary.replayed += written.len() as u64;
            marks.mark(&written).await?;
            written.clear();
        }
    }
    while let Some(ack) = acks.next().await {
        written.push(acknowledged(ack)?);
    }
    summary.replayed += written.len() as u64;
    marks.mark(&written).await?;
    reader.await.expect("the reader does not panic")?;
    progress(&summary);
    Ok(summary)
}

/// Writes a redrive record to `topic` with `producer`; while the producer's
/// queue is full, takes acknowledgements from `acks` (each handed to
/// `acknowledged`) to make room. Returns the record's acknowledgement.
pub(crate) async fn send_redrive<F: std::future::Future>(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&[u8]>,
    value: &[u8],
    headers: OwnedHeaders,
    acks: &mut futures::stream::FuturesUnordered<F>,
    mut acknowledged: impl FnMut(F::Output) -> Result<(), ReplayError>,
) -> Result<rdkafka::producer::DeliveryFuture, ReplayError> {
    let mut record = FutureRecord::to(topic).payload(value).headers(headers);
    if let Some(key) = key {
        record = record.key(key);
    }
    loop {
        match producer.send_result(record) {
            Ok(ack) => return Ok(ack),
            // The producer's queue is full: wait for acknowledgements.
            Err((rdkafka::error::KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                match acks.next().await {
                    Some(ack) => acknowledged(ack)?,
                    None => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
            Err((e, _)) => return Err(e.into()),
        }
    }
}

/// Records written and not yet acknowledged, at most.
const MAX_UNACKNOWLEDGED: usize = 1000;
/// Re-driven dead letters marked in Redis at a time.
const MARK_BATCH: usize = 500;

type Ack = (
    (i32, i64),
    Result<rdkafka::producer::future_producer::OwnedDeliveryResult, futures::channel::oneshot::Canceled>,
);

/// One redrive record's acknowledgement: the dead letter it re-drove, or why not.
fn acknowledged((at, ack): Ack) -> Result<(i32, i64), ReplayError> {
    match ack {
        Ok(Ok(_)) => Ok(at),
        Ok(Err((e, _))) => Err(e.into()),
        Err(_) => Err(rdkafka::error::KafkaError::Canceled.into()),
    }
}

/// Reads the dead-letter topic up to its current end, sending matches on.
fn read(config: &Config, filter: &ReplayFilter, tx: tokio::sync::mpsc::Sender<Read>) -> Result<(), ReplayError> {
    let topic = &config.dead_letter.topic;
    let consumer: BaseConsumer =
        crate::kafka::consumer_config(&config.kafka, &format!("{}.replay", config.kafka.group_id))
            .set("enable.auto.commit", "false")
            .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(15))?;
    let mut ends = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    let mut total = 0;
    for p in metadata.topics().first().map(|t| t.partitions()).unwrap_or_default() {
        let (low, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(15))?;
        if high > low {
            ends.insert(p.id(), high);
            total += (high - low) as u64;
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(low))?;
        }
    }
    let (mut scanned, mut matched, mut skipped) = (0, 0, 0);
    let report = |scanned, matched, skipped| Read::Progress {
        total,
        scanned,
        matched,
        skipped,
    };
    if ends.is_empty() {
        let _ = tx.blocking_send(report(0, 0, 0));
        return Ok(());
    }
    consumer.assign(&tpl)?;
    while !ends.is_empty() {
        let Some(message) = consumer.poll(Duration::from_secs(1)) else {
            continue;
        };
        let message = message?;
        let end = ends.get(&message.partition()).copied().unwrap_or(0);
        if message.offset() >= end {
            // Written after the replay began: not part of it.
            continue;
        }
        if message.offset() + 1 >= end {
            ends.remove(&message.partition());
        }
        scanned += 1;
        let owned = crate::kafka::record_headers(&message);
        let headers: HashMap<String, String> = owned
            .iter()
            .map(|hd| {
                (
                    hd.name.clone(),
                    String::from_utf8_lossy(hd.value.as_deref().unwrap_or_default()).into_owned(),
                )
            })
            .collect();
        if filter.matches(&headers) {
            matched += 1;
            let raw: Vec<(&str, Option<&[u8]>)> =
                owned.iter().map(|hd| (hd.name.as_str(), hd.value.as_deref())).collect();
            if codec::is_redrivable(raw.iter().copied()) {
                let item = Redrive {
                    partition: message.partition(),
                    offset: message.offset(),
                    key: message.key().map(<[u8]>::to_vec),
                    value: message.payload().unwrap_or_default().to_vec(),
                    headers: codec::redrive(raw.iter().copied(), SystemTime::now()),
                };
                if tx.blocking_send(Read::Delivery(item)).is_err() {
                    return Ok(());
                }
            } else {
                skipped += 1;
            }
        }
        if scanned % 500 == 0 && tx.blocking_send(report(scanned, matched, skipped)).is_err() {
            return Ok(());
        }
    }
    let _ = tx.blocking_send(report(scanned, matched, skipped));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_reason_flag_is_a_dead_letter_reason() {
        assert_eq!(parse_reason("webhook_paused"), Ok(Reason::WebhookPaused));
        assert_eq!(parse_reason("invalid_json"), Ok(Reason::InvalidJson));
        for refused in ["bogus", "manual_retry"] {
            let err = parse_reason(refused).unwrap_err();
            assert!(
                err.starts_with(&format!("`{refused}` is not a dead-letter reason")),
                "{err}"
            );
            assert!(err.contains("retries_exhausted"), "{err}");
        }
    }

    #[test]
    fn filters_combine() {
        let letter = headers(&[
            (h::WEBHOOK_ID, "wh_1"),
            (h::TENANT, "acme"),
            (h::EVENT_TYPE, "tour.completed"),
            (h::REASON, "webhook_paused"),
            (h::DEAD_LETTERED_AT, "2025-03-01T10:00:00Z"),
        ]);
        let t = |s: &str| OffsetDateTime::parse(s, &Rfc3339).unwrap();
        assert!(ReplayFilter::default().matches(&letter));
        let f = ReplayFilter {
            webhook: Some("wh_1".into()),
            tenant: Some("acme".into()),
            webhook_created_at: None,
            event_type: Some("tour.*".into()),
            reasons: vec![Reason::WebhookPaused],
            since: Some(t("2025-03-01T00:00:00Z")),
            until: Some(t("2025-03-02T00:00:00Z")),
        };
        assert!(f.matches(&letter));
        // A reason written by a newer version: matched by no reason filter, by the others.
        let mut newer = letter.clone();
        newer.insert(h::REASON.into(), "written_by_a_newer_version".into());
        assert!(!f.matches(&newer));
        assert!(ReplayFilter {
            reasons: vec![],
            ..f.clone()
        }
        .matches(&newer));
        // The webhook's own tenant and incarnation, where the record says.
        let mut bound = letter.clone();
        bound.insert(h::WEBHOOK_TENANT.into(), "globex".into());
        bound.insert(h::WEBHOOK_CREATED_AT.into(), "2025-02-01T00:00:00.5Z".into());
        assert!(!f.matches(&bound), "the webhook's tenant wins over the event's");
        let globex = ReplayFilter {
            tenant: Some("globex".into()),
            webhook_created_at: Some(t("2025-02-01T00:00:00.5Z")),
            ..f.clone()
        };
        assert!(globex.matches(&bound));
        let recreated = ReplayFilter {
            webhook_created_at: Some(t("2025-02-02T00:00:00Z")),
            ..globex.clone()
        };
        assert!(!recreated.matches(&bound), "an earlier webhook with the same id");
        for other in [
            ReplayFilter {
                webhook: Some("wh_2".into()),
                ..f.clone()
            },
            ReplayFilter {
                tenant: Some("globex".into()),
                ..f.clone()
            },
            ReplayFilter {
                event_type: Some("survey.*".into()),
                ..f.clone()
            },
            ReplayFilter {
                event_type: Some("tour".into()),
                ..f.clone()
            },
            ReplayFilter {
                reasons: vec![Reason::RetriesExhausted],
                ..f.clone()
            },
            ReplayFilter {
                since: Some(t("2025-03-01T10:00:01Z")),
                ..f.clone()
            },
            ReplayFilter {
                until: Some(t("2025-03-01T10:00:00Z")),
                ..f.clone()
            },
        ] {
            assert!(!other.matches(&letter), "{other:?}");
        }
    }
}

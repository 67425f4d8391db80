//! Retry pending: deliver now what one webhook's failures wait for in the
//! retry tiers.
//!
//! A run takes a *cut*, a moment a little ahead of now, and records it on
//! the webhook's document (`retried_pending`) before anything else. From
//! then on every replica finishes, without an attempt, a retry of that
//! webhook waiting in a tier whose last attempt started before the cut and
//! that is due after it ([`retried_pending`]): the run writes each of those
//! to the redrive topic, where it is delivered at once with its
//! `webhook-id` and attempt count. The cut is ahead of now by the time the
//! document takes to reach every replica (`subscriptions.resync_interval`),
//! so no replica delivers a waiting copy the run re-drives; what comes due
//! before the cut is delivered as usual and is not re-driven. The run reads
//! the wait topics once the attempts started before the cut have had time
//! to end and be written (`delivery.max_queue_wait` +
//! `delivery.request_timeout`, and a few seconds).
//!
//! The same rule serves both sides: the run re-drives exactly the retries
//! its cut finishes and no earlier cut of the webhook did, once each (a
//! retry moved to the end of another wait topic while held out of order
//! has the same delivery id, and is re-driven once).

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::producer::FutureProducer;
use rdkafka::{Offset, TopicPartitionList};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::config::Config;
use crate::retry::codec::{self, headers as h};
use crate::retry::policy::retried_pending;
use crate::retry::replay::{send_redrive, ReplayError, ReplaySummary};

/// Cuts a webhook keeps at most; a run beyond is refused until the oldest
/// no longer matters (the longest wait of a tier after it).
pub const MAX_CUTS: usize = 16;

/// How far ahead of now a run's cut is: every replica has read the webhook's
/// document again by then (`subscriptions.resync_interval`, a second more).
pub fn cut_ahead(config: &Config) -> Duration {
    config.subscriptions.resync_interval + Duration::from_secs(1)
}

/// How long after its cut a run reads the wait topics: an attempt started
/// before the cut has ended and its retry is written by then.
pub fn settle_after_cut(config: &Config) -> Duration {
    config.delivery.max_queue_wait + config.delivery.request_timeout + Duration::from_secs(5)
}

/// How long a cut matters: the longest a retry waits in any wait topic
/// (and a minute for clocks). Older cuts straddle no waiting retry.
pub fn cut_lifetime(config: &Config) -> Duration {
    let waits = config.retry.wait_topics();
    waits.all().iter().map(|w| w.longest).max().unwrap_or_default() + crate::config::waits::RANGE_SLACK
}

/// The cuts of a webhook after a run at `cut`, or `None` when it keeps
/// [`MAX_CUTS`] that still matter.
pub fn with_cut(
    cuts: &[OffsetDateTime],
    cut: OffsetDateTime,
    now: OffsetDateTime,
    lifetime: Duration,
) -> Option<Vec<OffsetDateTime>> {
    let mut kept: Vec<OffsetDateTime> = cuts.iter().copied().filter(|c| *c + lifetime > now).collect();
    if kept.len() >= MAX_CUTS {
        return None;
    }
    kept.push(cut);
    kept.sort();
    Some(kept)
}

/// The cuts whose run finished, per webhook, in Redis
/// (`{prefix}retried_pending:{webhook}`, a set of cuts in Unix nanoseconds,
/// expiring with the cuts): a later run skips only what those re-drove, so a
/// run that failed or whose replica stopped is made good by the next one
/// (which may deliver again, with the same `webhook-id`, what it had written).
pub struct FinishedCuts {
    conn: redis::aio::ConnectionManager,
    prefix: String,
    ttl: Duration,
}

impl FinishedCuts {
    /// The finished cuts of the Redis that `conn` reaches.
    pub fn new(conn: redis::aio::ConnectionManager, config: &Config) -> FinishedCuts {
        FinishedCuts {
            conn,
            prefix: config.redis.prefix.clone(),
            ttl: cut_lifetime(config),
        }
    }

    fn key(&self, webhook: &str) -> String {
        format!("{}retried_pending:{webhook}", self.prefix)
    }

    /// Of `cuts`, those whose run finished.
    pub async fn finished(
        &self,
        webhook: &str,
        cuts: &[OffsetDateTime],
    ) -> Result<Vec<OffsetDateTime>, redis::RedisError> {
        let mut conn = self.conn.clone();
        let done: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.key(webhook))
            .query_async(&mut conn)
            .await?;
        Ok(cuts
            .iter()
            .copied()
            .filter(|c| done.contains(&c.unix_timestamp_nanos().to_string()))
            .collect())
    }

    /// Records that the run of `cut` finished.
    pub async fn mark(&self, webhook: &str, cut: OffsetDateTime) -> Result<(), redis::RedisError> {
        let mut conn = self.conn.clone();
        redis::pipe()
            .cmd("SADD")
            .arg(self.key(webhook))
            .arg(cut.unix_timestamp_nanos().to_string())
            .ignore()
            .cmd("EXPIRE")
            .arg(self.key(webhook))
            .arg(self.ttl.as_secs().max(1))
            .ignore()
            .query_async(&mut conn)
            .await
    }
}

/// What one run re-drives.
#[derive(Debug, Clone)]
pub struct PendingRun {
    pub webhook_id: String,
    /// The webhook's incarnation: retries of an earlier webhook with the same id are not its own.
    pub created_at: OffsetDateTime,
    /// This run's cut (a dry run: now).
    pub cut: OffsetDateTime,
    /// The webhook's earlier cuts: what they re-drove is not re-driven again.
    pub earlier: Vec<OffsetDateTime>,
    /// Only count.
    pub dry_run: bool,
}

/// One waiting retry to re-drive.
struct Waiting {
    key: Option<Vec<u8>>,
    value: Vec<u8>,
    headers: OwnedHeaders,
}

/// What the reader thread tells the writer.
enum Read {
    Retry(Waiting),
    Progress(ReplaySummary),
}

/// Runs `run`: waits for its cut to settle (not on a dry run), reads the
/// wait topics and writes each retry it selects to the redrive topic (a dry
/// run only counts them). In the summary, `matched` counts the webhook's
/// waiting retries the cut straddles, `already_redriven` those an earlier
/// cut re-drove and `replayed` those written.
pub async fn retry_pending(
    config: &Config,
    producer: &FutureProducer,
    finished: &FinishedCuts,
    run: PendingRun,
    progress: impl Fn(&ReplaySummary) + Send + 'static,
) -> Result<ReplaySummary, ReplayError> {
    if !run.dry_run {
        let ready = run.cut + settle_after_cut(config);
        let wait = (ready - OffsetDateTime::now_utc()).max(time::Duration::ZERO);
        tokio::time::sleep(wait.unsigned_abs()).await;
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Read>(256);
    let reader = {
        let (config, run) = (config.clone(), run.clone());
        tokio::task::spawn_blocking(move || read(&config, &run, tx))
    };
    let redrive_topic = config.retry.redrive_topic.clone();
    let mut summary = ReplaySummary::default();
    let mut acks = futures::stream::FuturesUnordered::new();
    while let Some(read) = rx.recv().await {
        let item = match read {
            Read::Progress(read) => {
                summary = ReplaySummary {
                    replayed: summary.replayed,
                    ..read
                };
                progress(&summary);
                continue;
            }
            Read::Retry(item) => item,
        };
        let ack = send_redrive(
            producer,
            &redrive_topic,
            item.key.as_deref(),
            &item.value,
            item.headers,
            &mut acks,
            |ack| acknowledged(ack, &mut summary),
        )
        .await?;
        acks.push(ack);
        while acks.len() >= MAX_UNACKNOWLEDGED {
            if let Some(ack) = acks.next().await {
                acknowledged(ack, &mut summary)?;
            }
        }
    }
    while let Some(ack) = acks.next().await {
        acknowledged(ack, &mut summary)?;
    }
    reader.await.expect("the reader does not panic")?;
    if !run.dry_run {
        finished.mark(&run.webhook_id, run.cut).await?;
    }
    progress(&summary);
    Ok(summary)
}

/// Records written and not yet acknowledged, at most.
const MAX_UNACKNOWLEDGED: usize = 1000;

type Ack = Result<rdkafka::producer::future_producer::OwnedDeliveryResult, futures::channel::oneshot::Canceled>;

fn acknowledged(ack: Ack, summary: &mut ReplaySummary) -> Result<(), ReplayError> {
    match ack {
        Ok(Ok(_)) => {
            summary.replayed += 1;
            Ok(())
        }
        Ok(Err((e, _))) => Err(e.into()),
        Err(_) => Err(rdkafka::error::KafkaError::Canceled.into()),
    }
}

/// A header's value as text.
fn text<'a>(headers: &'a HashMap<&str, &[u8]>, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| std::str::from_utf8(v).ok())
}

fn time_of(headers: &HashMap<&str, &[u8]>, name: &str) -> Option<OffsetDateTime> {
    text(headers, name).and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
}

/// Whether `run` re-drives a record with these headers, and why not.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Another webhook's, or not a waiting retry its cut straddles.
    Other,
    /// Re-driven by an earlier cut.
    Earlier,
    Redrive,
}

fn verdict(run: &PendingRun, headers: &HashMap<&str, &[u8]>) -> Verdict {
    if text(headers, h::WEBHOOK_ID) != Some(run.webhook_id.as_str())
        || time_of(headers, h::WEBHOOK_CREATED_AT) != Some(run.created_at)
    {
        return Verdict::Other;
    }
    let tier = text(headers, h::RETRY_TIER).and_then(|t| t.parse::<usize>().ok());
    let last = time_of(headers, h::LAST_ATTEMPT_AT);
    let Some(due) = text(headers, h::RETRY_DUE_AT)
        .and_then(|d| d.parse::<u64>().ok())
        .map(|ms| SystemTime::UNIX_EPOCH + Duration::from_millis(ms))
    else {
        return Verdict::Other;
    };
    if retried_pending(&[run.cut], tier, last, due).is_none() {
        return Verdict::Other;
    }
    match retried_pending(&run.earlier, tier, last, due) {
        Some(_) => Verdict::Earlier,
        None => Verdict::Redrive,
    }
}

/// Reads the wait topics from the retry group's committed offsets (what is
/// before them is finished) to their ends now, sending what `run` re-drives.
fn read(config: &Config, run: &PendingRun, tx: tokio::sync::mpsc::Sender<Read>) -> Result<(), ReplayError> {
    let group = config.retry.group_id(&config.kafka);
    let consumer: BaseConsumer = crate::kafka::consumer_config(&config.kafka, &group)
        .set("enable.auto.commit", "false")
        .create()?;
    let timeout = Duration::from_secs(15);
    let mut ends = HashMap::new();
    let mut starts = TopicPartitionList::new();
    let mut lows = HashMap::new();
    for topic in config.retry.wait_topics().names() {
        let metadata = consumer.fetch_metadata(Some(&topic), timeout)?;
        for p in metadata.topics().first().map(|t| t.partitions()).unwrap_or_default() {
            let (low, high) = consumer.fetch_watermarks(&topic, p.id(), timeout)?;
            if high > low {
                ends.insert((topic.clone(), p.id()), high);
                lows.insert((topic.clone(), p.id()), low);
                starts.add_partition(&topic, p.id());
            }
        }
    }
    let mut summary = ReplaySummary::default();
    if ends.is_empty() {
        let _ = tx.blocking_send(Read::Progress(summary));
        return Ok(());
    }
    let committed = consumer.committed_offsets(starts, timeout)?;
    let mut assignment = TopicPartitionList::new();
    for ((topic, partition), low) in &lows {
        let from = match committed.find_partition(topic, *partition).map(|e| e.offset()) {
            Some(Offset::Offset(n)) => n.max(*low),
            _ => *low,
        };
        let end = ends[&(topic.clone(), *partition)];
        if from >= end {
            ends.remove(&(topic.clone(), *partition));
            continue;
        }
        summary.total += (end - from) as u64;
        assignment.add_partition_offset(topic, *partition, Offset::Offset(from))?;
    }
    // A retry moved to another wait topic is read twice: re-driven once.
    let mut seen: HashSet<u64> = HashSet::new();
    consumer.assign(&assignment)?;
    while !ends.is_empty() {
        let Some(message) = consumer.poll(Duration::from_secs(1)) else {
            continue;
        };
        let message = message?;
        let at = (message.topic().to_owned(), message.partition());
        let Some(&end) = ends.get(&at) else { continue };
        if message.offset() >= end {
            continue;
        }
        if message.offset() + 1 >= end {
            ends.remove(&at);
        }
        summary.scanned += 1;
        let owned = crate::kafka::record_headers(&message);
        let raw: Vec<(&str, Option<&[u8]>)> = owned.iter().map(|hd| (hd.name.as_str(), hd.value.as_deref())).collect();
        let headers: HashMap<&str, &[u8]> = raw.iter().map(|(k, v)| (*k, v.unwrap_or_default())).collect();
        match verdict(run, &headers) {
            Verdict::Other => {}
            Verdict::Earlier => {
                summary.matched += 1;
                summary.already_redriven += 1;
            }
            Verdict::Redrive => {
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                text(&headers, h::DELIVERY_ID).hash(&mut hasher);
                if seen.insert(hasher.finish()) {
                    summary.matched += 1;
                    if !run.dry_run {
                        let item = Waiting {
                            key: message.key().map(<[u8]>::to_vec),
                            value: message.payload().unwrap_or_default().to_vec(),
                            headers: codec::redrive(raw.iter().copied(), SystemTime::now()),
                        };
                        if tx.blocking_send(Read::Retry(item)).is_err() {
                            return Ok(());
                        }
                    }
                }
            }
        }
        if summary.scanned % 500 == 0 && tx.blocking_send(Read::Progress(summary)).is_err() {
            return Ok(());
        }
    }
    let _ = tx.blocking_send(Read::Progress(summary));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn millis(t: OffsetDateTime) -> String {
        (t.unix_timestamp_nanos() / 1_000_000).to_string()
    }

    #[test]
    fn a_run_redrives_what_its_cut_straddles_and_no_earlier_cut_did() {
        let created = datetime!(2025-03-01 00:00:00.5 UTC);
        let created_text = created.format(&Rfc3339).unwrap();
        let run = PendingRun {
            webhook_id: "wh_1".into(),
            created_at: created,
            cut: datetime!(2025-03-02 12:00 UTC),
            earlier: vec![datetime!(2025-03-02 10:00 UTC)],
            dry_run: false,
        };
        let record = |webhook: &str, created: &str, tier: Option<&str>, last: &str, due: OffsetDateTime| {
            let due = millis(due);
            let mut pairs: Vec<(&str, Vec<u8>)> = vec![
                (h::WEBHOOK_ID, webhook.as_bytes().to_vec()),
                (h::WEBHOOK_CREATED_AT, created.as_bytes().to_vec()),
                (h::LAST_ATTEMPT_AT, last.as_bytes().to_vec()),
                (h::RETRY_DUE_AT, due.into_bytes()),
            ];
            if let Some(tier) = tier {
                pairs.push((h::RETRY_TIER, tier.as_bytes().to_vec()));
            }
            pairs
        };
        let judge = |pairs: Vec<(&str, Vec<u8>)>| {
            let headers: HashMap<&str, &[u8]> = pairs.iter().map(|(k, v)| (*k, v.as_slice())).collect();
            verdict(&run, &headers)
        };
        let due_later = datetime!(2025-03-02 13:00 UTC);
        let c = created_text.as_str();
        assert_eq!(
            judge(record("wh_1", c, Some("0"), "2025-03-02T11:30:00Z", due_later)),
            Verdict::Redrive
        );
        assert_eq!(
            judge(record("wh_1", c, Some("0"), "2025-03-02T09:30:00Z", due_later)),
            Verdict::Earlier,
            "failed before the earlier cut and due after it"
        );
        assert_eq!(
            judge(record(
                "wh_1",
                c,
                Some("0"),
                "2025-03-02T11:30:00Z",
                datetime!(2025-03-02 11:59 UTC)
            )),
            Verdict::Other,
            "due before the cut: delivered on time"
        );
        assert_eq!(
            judge(record("wh_1", c, Some("0"), "2025-03-02T12:00:01Z", due_later)),
            Verdict::Other,
            "failed after the cut"
        );
        assert_eq!(
            judge(record("wh_1", c, None, "2025-03-02T11:30:00Z", due_later)),
            Verdict::Other,
            "a redrive is delivered, never finished"
        );
        assert_eq!(
            judge(record("wh_2", c, Some("0"), "2025-03-02T11:30:00Z", due_later)),
            Verdict::Other
        );
        assert_eq!(
            judge(record(
                "wh_1",
                "2025-02-01T00:00:00Z",
                Some("0"),
                "2025-03-02T11:30:00Z",
                due_later
            )),
            Verdict::Other,
            "an earlier webhook with the same id"
        );
    }

    #[test]
    fn cuts_are_kept_while_they_matter_and_capped() {
        let now = datetime!(2025-03-10 00:00 UTC);
        let day = Duration::from_secs(86_400);
        let old = now - time::Duration::days(30);
        let recent = now - time::Duration::days(1);
        let cuts = with_cut(&[old, recent], now, now, 21 * day).unwrap();
        assert_eq!(cuts, vec![recent, now], "a cut older than the longest wait is dropped");
        let full: Vec<_> = (0..MAX_CUTS as i64)
            .map(|i| recent + time::Duration::minutes(i))
            .collect();
        assert_eq!(with_cut(&full, now, now, 21 * day), None);
    }
}

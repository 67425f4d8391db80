//! Where failures are written: retry tier topics, the redrive topic and the
//! dead-letter topic.
//!
//! A delivery that did not succeed goes to its next retry tier; one that ran
//! out of tiers, a record that cannot be routed, and a delivery to a paused
//! webhook go to the dead-letter topic; a manual retry or replay goes to the
//! redrive topic. The record format is [`crate::retry::codec`]'s. The producer
//! is idempotent with `acks=all`, and [`FailureSink::send`] only returns once
//! the broker has acknowledged the record: only then may the source offset be
//! committed.
//!
//! What the broker refuses is told apart:
//! - temporary errors (unreachable, timeouts) are retried with backoff, which
//!   holds the source offset rather than dropping anything;
//! - a record too large is written again without its optional diagnostics,
//!   and if still too large (or refused for what it is: invalid, against a
//!   policy), a stub pointing at the event's source position is
//!   dead-lettered instead, so the partition moves on. A stub carries no
//!   value, no key (its size and digest instead) and bounded headers, so it
//!   fits any broker; should one still be refused for what it is, that is
//!   final: logged with the source position, counted
//!   (`herald_failure_records_unwritable_total`) and committed past. No record
//!   is written again the same way after such a refusal;
//! - a retry or redrive topic that refuses every record (authorization,
//!   unknown topic) is replaced by the dead-letter topic; a dead-letter topic
//!   that does is waited for, with backoff and the alert
//!   `HeraldFailureRecordWritesFailing`: an operator's fix, not a record's
//!   fault, and dropping instead would lose every failure meanwhile;
//! - a producer that failed fatally is replaced by a new one.

use std::time::{Duration, Instant, SystemTime};

use backon::{BackoffBuilder, ExponentialBuilder};
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use tokio_util::sync::CancellationToken;

use crate::config::dead_letter::DeadLetterConfig;
use crate::event::SourceRecord;
use crate::kafka::{classify_produce_error, ProduceError, SharedProducer};
use crate::retry::codec::{self, headers, millis, Destination, FailureRecord, Size};
use crate::retry::reason::Reason;
use crate::telemetry::Telemetry;

/// Shutdown passed its deadline before the broker acknowledged the record;
/// the source offset stays uncommitted and the event is consumed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("abandoned before the dead-letter record was acknowledged")]
pub struct Abandoned;

/// The topics failure records go to.
#[derive(Debug, Clone)]
pub struct Topics {
    pub dead_letter: String,
    /// One per retry tier, in order.
    pub tiers: Vec<String>,
    pub redrive: String,
}

impl Topics {
    /// The topics the configuration names.
    pub fn of(config: &crate::config::Config) -> Topics {
        Topics {
            dead_letter: config.dead_letter.topic.clone(),
            tiers: config.retry.topics(),
            redrive: config.retry.redrive_topic.clone(),
        }
    }
}

/// Writes failure records and waits for their acknowledgement.
#[derive(Clone)]
pub struct FailureSink {
    producer: SharedProducer,
    topics: Topics,
    config: DeadLetterConfig,
    telemetry: Telemetry,
}

/// What one produce of a letter puts on the wire.
enum Wire {
    /// The letter encoded at this size.
    Letter(Size),
    /// A dead-letter stub for the letter, after the broker refused it as too large.
    Stub(String),
}

impl FailureSink {
    /// A sink writing through `producer`, retrying a failed write as `dead_letter.*` says.
    pub fn new(producer: SharedProducer, config: &DeadLetterConfig, topics: Topics, telemetry: Telemetry) -> Self {
        FailureSink {
            producer,
            topics,
            config: config.clone(),
            telemetry,
        }
    }

    /// The topics it writes.
    pub fn topics(&self) -> &Topics {
        &self.topics
    }

    fn backoff(&self) -> impl Iterator<Item = Duration> {
        ExponentialBuilder::default()
            .with_min_delay(self.config.produce_retry_min_delay)
            .with_max_delay(self.config.produce_retry_max_delay)
            .with_jitter()
            .without_max_times()
            .build()
    }

    /// Produces `letter` and waits for the broker's acknowledgement, retrying
    /// until it comes or `abort` is cancelled.
    pub async fn send(&self, mut letter: FailureRecord<'_>, abort: &CancellationToken) -> Result<(), Abandoned> {
        let now = SystemTime::now();
        let started = Instant::now();
        let mut wire = Wire::Letter(Size::Full);
        let mut backoff = self.backoff();
        loop {
            let topic = match (&wire, letter.destination) {
                (Wire::Stub(_), _) | (_, Destination::DeadLetter) => &self.topics.dead_letter,
                (_, Destination::Tier { tier, .. }) => &self.topics.tiers[tier],
                (_, Destination::Redrive) => &self.topics.redrive,
            };
            let (headers, value) = match &wire {
                Wire::Letter(size) => (codec::encode(&letter, now, *size), letter.record.value.as_ref()),
                Wire::Stub(refused) => (codec::stub(&letter, now, refused), &[][..]),
            };
            // A stub goes without the key, which can be as large as the record was.
            let key = match &wire {
                Wire::Letter(_) => letter.record.key.as_deref(),
                Wire::Stub(_) => None,
            };
            let error = match self.produce(topic, key, value, headers, now, abort).await? {
                Ok(()) => {
                    match (&wire, letter.destination) {
                        (Wire::Stub(_), _) => self
                            .telemetry
                            .dead_lettered(Reason::RecordTooLarge.as_str(), started.elapsed()),
                        (_, Destination::Tier { tier, due_at }) => {
                            self.telemetry.retry_scheduled(tier, due_at, started.elapsed())
                        }
                        (_, Destination::Redrive) => self.telemetry.redrive_written(started.elapsed()),
                        (_, Destination::DeadLetter) => {
                            self.telemetry.dead_lettered(letter.reason.as_str(), started.elapsed())
                        }
                    }
                    return Ok(());
                }
                Err(error) => error,
            };
            match (classify_produce_error(&error), &wire) {
                (ProduceError::TooLarge, Wire::Letter(Size::Full)) => {
                    self.telemetry.failure_record_downgraded("lean", topic, &error);
                    wire = Wire::Letter(Size::Lean);
                }
                (ProduceError::TooLarge, Wire::Letter(Size::Lean)) | (ProduceError::Invalid, Wire::Letter(_))
                    if letter.destination != Destination::DeadLetter =>
                {
                    // The tier or redrive topic takes no such record (its own
                    // max.message.bytes or policy): the dead-letter topic may,
                    // whole, before anything is dropped.
                    self.telemetry.failure_record_downgraded("dead_letter", topic, &error);
                    letter.detail = format!("{} (not retried: `{topic}` refused the record: {error})", letter.detail);
                    letter.destination = Destination::DeadLetter;
                    wire = Wire::Letter(Size::Full);
                }
                (ProduceError::TooLarge, Wire::Letter(Size::Lean)) | (ProduceError::Invalid, Wire::Letter(_)) => {
                    self.telemetry.failure_record_downgraded("stub", topic, &error);
                    wire = Wire::Stub(error.to_string());
                }
                (ProduceError::TooLarge | ProduceError::Invalid, Wire::Stub(_)) => {
                    // Nothing smaller is left to write: final, not a loop.
                    let record = letter.record;
                    self.telemetry.failure_record_unwritable(
                        (&record.topic, record.partition, record.offset),
                        topic,
                        &error,
                    );
                    return Ok(());
                }
                (ProduceError::Permanent, Wire::Letter(_)) if letter.destination != Destination::DeadLetter => {
                    // The tier or redrive topic refuses it for good: keep the
                    // delivery in the dead-letter topic rather than lose it.
                    self.telemetry.failure_record_downgraded("dead_letter", topic, &error);
                    letter.detail = format!("{} (not retried: `{topic}` refused the record: {error})", letter.detail);
                    letter.destination = Destination::DeadLetter;
                }
                (kind, _) => {
                    self.pause(&mut backoff, letter.reason.as_str(), &error, kind, abort)
                        .await?
                }
            }
        }
    }

    /// Waits before writing again after `error`: briefly after a fatal error
    /// (the producer was replaced), else the next backoff delay.
    async fn pause(
        &self,
        backoff: &mut impl Iterator<Item = Duration>,
        what: &str,
        error: &rdkafka::error::KafkaError,
        kind: ProduceError,
        abort: &CancellationToken,
    ) -> Result<(), Abandoned> {
        let delay = if kind == ProduceError::Fatal {
            self.config.produce_retry_min_delay
        } else {
            let delay = backoff.next().unwrap_or(self.config.produce_retry_max_delay);
            self.telemetry
                .failure_record_produce_failed(what, error, kind == ProduceError::Permanent, delay);
            delay
        };
        tokio::select! {
            _ = abort.cancelled() => Err(Abandoned),
            _ = tokio::time::sleep(delay) => Ok(()),
        }
    }

    /// Moves a waiting retry, unchanged but for `herald.retry.requeued` and
    /// `herald.retry.scheduled_at`, to the end of `topic`, and waits for the
    /// broker's acknowledgement.
    pub async fn requeue(
        &self,
        record: &SourceRecord,
        topic: &str,
        abort: &CancellationToken,
    ) -> Result<(), Abandoned> {
        let mut size = Size::Full;
        let mut stub: Option<String> = None;
        let mut backoff = self.backoff();
        loop {
            let now = SystemTime::now();
            let (to, key, value, headers) = match (&stub, size) {
                // Grown past the limit by its one more header: keep it, diagnostics aside.
                (None, Size::Full) => (
                    topic,
                    record.key.as_deref(),
                    &record.value[..],
                    codec::requeue(record, now),
                ),
                (None, Size::Lean) => (
                    topic,
                    record.key.as_deref(),
                    &record.value[..],
                    lean_requeue(record, now),
                ),
                // Not movable at all: it stays where it waits, and a stub says so.
                (Some(refused), _) => (
                    self.topics.dead_letter.as_str(),
                    None,
                    &[][..],
                    codec::unmoved_stub(record, now, refused),
                ),
            };
            let error = match self.produce(to, key, value, headers, now, abort).await? {
                Ok(()) => return Ok(()),
                Err(error) => error,
            };
            match (classify_produce_error(&error), &stub, size) {
                (ProduceError::TooLarge, None, Size::Full) => {
                    self.telemetry.failure_record_downgraded("lean", to, &error);
                    size = Size::Lean;
                }
                (ProduceError::TooLarge, None, Size::Lean) | (ProduceError::Invalid, None, _) => {
                    self.telemetry.failure_record_downgraded("stub", to, &error);
                    stub = Some(error.to_string());
                }
                (ProduceError::TooLarge | ProduceError::Invalid, Some(_), _) => {
                    self.telemetry.failure_record_unwritable(
                        (&record.topic, record.partition, record.offset),
                        to,
                        &error,
                    );
                    return Ok(());
                }
                (kind, _, _) => self.pause(&mut backoff, "requeue", &error, kind, abort).await?,
            }
        }
    }

    /// One produce; the outer `Err` when aborted, the inner one when refused.
    async fn produce(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        headers: OwnedHeaders,
        now: SystemTime,
        abort: &CancellationToken,
    ) -> Result<Result<(), rdkafka::error::KafkaError>, Abandoned> {
        let producer = self.producer.get();
        let mut record = FutureRecord::to(topic)
            .payload(value)
            .headers(headers)
            .timestamp(millis(now) as i64);
        if let Some(key) = key {
            record = record.key(key);
        }
        let result = tokio::select! {
            _ = abort.cancelled() => return Err(Abandoned),
            r = producer.send(record, Timeout::After(Duration::from_secs(30))) => r,
        };
        match result {
            Ok(_) => Ok(Ok(())),
            Err((error, _)) => {
                if classify_produce_error(&error) == ProduceError::Fatal {
                    self.recover_from(&producer);
                }
                Ok(Err(error))
            }
        }
    }

    fn recover_from(&self, used: &std::sync::Arc<rdkafka::producer::FutureProducer>) {
        match self.producer.recover(used) {
            Ok(Some(recreated)) => self.telemetry.producer_recreated(&recreated.code, &recreated.reason),
            Ok(None) => {}
            Err(e) => self.telemetry.producer_recreate_failed(&e),
        }
    }
}

/// [`codec::requeue`] without the optional diagnostics.
fn lean_requeue(record: &SourceRecord, now: SystemTime) -> OwnedHeaders {
    let mut slim = record.clone();
    slim.headers.retain(|h| {
        !matches!(
            h.name.as_str(),
            headers::HISTORY | headers::LAST_ERROR | headers::LAST_RESPONSE | headers::DETAIL
        )
    });
    codec::requeue(&slim, now)
}

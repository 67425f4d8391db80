//! Where failures are written: retry tier topics and the dead-letter topic.
//!
//! A delivery that did not succeed goes to its next retry tier; one that ran
//! out of tiers, a record that cannot be routed, and a delivery to a paused
//! webhook go to the dead-letter topic. Either way the record keeps the
//! original key, value and headers, plus `herald.*` headers saying what
//! happened (see `docs/dead-letter.md`), so a retry record is self-contained.
//! The producer is idempotent with `acks=all`, and [`FailureSink::send`] only
//! returns once the broker has acknowledged the record: only then may the
//! source offset be committed. While the broker refuses, it retries with
//! backoff, which holds the source offset (and, through the in-flight limit,
//! eventually the partition) rather than dropping anything.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use backon::{BackoffBuilder, ExponentialBuilder};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::config::DeadLetterConfig;
use crate::delivery::Attempt;
use crate::event::{EventMeta, SourceRecord};
use crate::telemetry::Telemetry;

/// Header names Herald adds; the original record's own `herald.*` headers
/// are dropped so a re-driven record never carries two histories.
pub mod headers {
    pub const PREFIX: &str = "herald.";
    pub const REASON: &str = "herald.reason";
    pub const DETAIL: &str = "herald.detail";
    pub const SOURCE_TOPIC: &str = "herald.source.topic";
    pub const SOURCE_PARTITION: &str = "herald.source.partition";
    pub const SOURCE_OFFSET: &str = "herald.source.offset";
    pub const SOURCE_TIMESTAMP: &str = "herald.source.timestamp";
    pub const EVENT_TYPE: &str = "herald.event.type";
    pub const EVENT_ID: &str = "herald.event.id";
    pub const TENANT: &str = "herald.tenant";
    pub const WEBHOOK_ID: &str = "herald.webhook.id";
    pub const DELIVERY_ID: &str = "herald.delivery.id";
    pub const ATTEMPT: &str = "herald.attempt";
    pub const FIRST_ATTEMPT_AT: &str = "herald.first_attempt.at";
    pub const LAST_ATTEMPT_AT: &str = "herald.last_attempt.at";
    pub const LAST_CLASS: &str = "herald.last.class";
    pub const LAST_STATUS: &str = "herald.last.status";
    pub const LAST_ERROR: &str = "herald.last.error";
    pub const LAST_RESPONSE: &str = "herald.last.response";
    pub const DEAD_LETTERED_AT: &str = "herald.dead_lettered.at";
    pub const HISTORY: &str = "herald.history";
    pub const RETRY_TIER: &str = "herald.retry.tier";
    pub const RETRY_DUE_AT: &str = "herald.retry.due_at";
    pub const REPLAYED_FROM_REASON: &str = "herald.replayed_from.reason";
}

/// Why a record is dead-lettered, besides the unroutable reasons.
pub mod reasons {
    pub const DELIVERY_FAILED: &str = "delivery_failed";
    pub const WEBHOOK_PAUSED: &str = "webhook_paused";
    pub const WEBHOOK_DISABLED: &str = "webhook_disabled";
    pub const WEBHOOK_DELETED: &str = "webhook_deleted";
    pub const RETRIES_EXHAUSTED: &str = "retries_exhausted";
    pub const ENDPOINT_GONE: &str = "endpoint_gone";

    /// Every reason above.
    pub const ALL: [&str; 7] = [
        DELIVERY_FAILED,
        WEBHOOK_PAUSED,
        WEBHOOK_DISABLED,
        WEBHOOK_DELETED,
        RETRIES_EXHAUSTED,
        INVALID_RETRY_RECORD,
        ENDPOINT_GONE,
    ];
    pub const INVALID_RETRY_RECORD: &str = "invalid_retry_record";
    /// Not a dead-letter reason: a retry record written by a manual retry.
    pub const MANUAL_RETRY: &str = "manual_retry";
}

/// The delivery a failure record is about.
pub struct DeliveryContext<'a> {
    pub webhook_id: &'a str,
    pub delivery_id: &'a str,
    /// Attempts made so far (0 when none was, e.g. for a paused webhook).
    pub attempts: u32,
    /// The last attempt, when this record follows one.
    pub last_attempt: Option<&'a Attempt>,
    pub first_attempt_at: Option<OffsetDateTime>,
    /// The `herald.history` of earlier attempts (a JSON array), if any.
    pub previous_history: Option<&'a str>,
}

/// Where a failure record goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// Retry tier `tier` (index into the schedule), due at `due_at`.
    Retry { tier: usize, due_at: SystemTime },
    /// The dead-letter topic.
    DeadLetter,
}

/// One failure record to write.
pub struct FailureRecord<'a> {
    pub destination: Destination,
    pub reason: &'a str,
    pub detail: String,
    /// The original record (for a retry: as first consumed from its source).
    pub record: &'a SourceRecord,
    pub meta: Option<&'a EventMeta>,
    pub delivery: Option<DeliveryContext<'a>>,
}

/// Shutdown passed its deadline before the broker acknowledged the record;
/// the source offset stays uncommitted and the event is consumed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("abandoned before the dead-letter record was acknowledged")]
pub struct Abandoned;

/// Writes failure records and waits for their acknowledgement.
#[derive(Clone)]
pub struct FailureSink {
    producer: FutureProducer,
    dead_letter_topic: String,
    tier_topics: Vec<String>,
    config: DeadLetterConfig,
    telemetry: Telemetry,
}

impl FailureSink {
    pub fn new(
        producer: FutureProducer,
        config: &DeadLetterConfig,
        tier_topics: Vec<String>,
        telemetry: Telemetry,
    ) -> Self {
        FailureSink {
            producer,
            dead_letter_topic: config.topic.clone(),
            tier_topics,
            config: config.clone(),
            telemetry,
        }
    }

    /// Produces `letter` and waits for the broker's acknowledgement, retrying
    /// until it comes or `abort` is cancelled.
    pub async fn send(&self, letter: FailureRecord<'_>, abort: &CancellationToken) -> Result<(), Abandoned> {
        let headers = build_headers(&letter);
        let topic = match letter.destination {
            Destination::Retry { tier, .. } => &self.tier_topics[tier],
            Destination::DeadLetter => &self.dead_letter_topic,
        };
        let started = Instant::now();
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(self.config.produce_retry_min_delay)
            .with_max_delay(self.config.produce_retry_max_delay)
            .with_jitter()
            .without_max_times()
            .build();
        loop {
            let mut record = FutureRecord::to(topic)
                .payload(letter.record.value.as_ref())
                .headers(headers.clone());
            if let Some(key) = &letter.record.key {
                record = record.key(key.as_ref());
            }
            let result = tokio::select! {
                _ = abort.cancelled() => return Err(Abandoned),
                r = self.producer.send(record, Timeout::After(Duration::from_secs(30))) => r,
            };
            match result {
                Ok(_) => {
                    match letter.destination {
                        Destination::Retry { tier, due_at } => {
                            self.telemetry.retry_scheduled(tier, due_at, started.elapsed())
                        }
                        Destination::DeadLetter => self.telemetry.dead_lettered(letter.reason, started.elapsed()),
                    }
                    return Ok(());
                }
                Err((error, _)) => {
                    let delay = backoff.next().unwrap_or(self.config.produce_retry_max_delay);
                    self.telemetry.dead_letter_produce_failed(letter.reason, &error, delay);
                    tokio::select! {
                        _ = abort.cancelled() => return Err(Abandoned),
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// Every attempt so far as a compact JSON array:
/// `[{"attempt":1,"at":"...","class":"5xx","status":503,"error":"..."}, ...]`.
fn history(d: &DeliveryContext<'_>) -> String {
    let mut entries: Vec<serde_json::Value> = d
        .previous_history
        .and_then(|h| serde_json::from_str(h).ok())
        .unwrap_or_default();
    if let Some(a) = d.last_attempt {
        let (status, error) = match &a.result {
            Ok(status) => (Some(*status), None),
            Err(f) => (f.status(), Some(f.describe())),
        };
        entries.push(serde_json::json!({
            "attempt": a.attempt,
            "at": rfc3339(a.started_at),
            "class": a.class(),
            "status": status,
            "error": error,
            "duration_ms": a.duration.as_millis() as u64,
        }));
    }
    serde_json::Value::Array(entries).to_string()
}

fn build_headers(letter: &FailureRecord<'_>) -> OwnedHeaders {
    let record = letter.record;
    let mut out = OwnedHeaders::new_with_capacity(record.headers.len() + 20);
    for h in &record.headers {
        if !h.name.starts_with(headers::PREFIX) {
            out = out.insert(Header {
                key: &h.name,
                value: h.value.as_deref(),
            });
        }
    }
    let mut add = |key: &str, value: &str| {
        out = std::mem::replace(&mut out, OwnedHeaders::new()).insert(Header {
            key,
            value: Some(value.as_bytes()),
        });
    };
    add(headers::REASON, letter.reason);
    add(headers::DETAIL, &letter.detail);
    add(headers::SOURCE_TOPIC, &record.topic);
    add(headers::SOURCE_PARTITION, &record.partition.to_string());
    add(headers::SOURCE_OFFSET, &record.offset.to_string());
    if let Some(ts) = record.timestamp_ms {
        add(headers::SOURCE_TIMESTAMP, &ts.to_string());
    }
    if let Some(meta) = letter.meta {
        add(headers::EVENT_TYPE, &meta.event_type);
        if let Some(id) = &meta.event_id {
            add(headers::EVENT_ID, id);
        }
        if let Some(tenant) = &meta.tenant {
            add(headers::TENANT, tenant);
        }
    }
    if let Some(d) = &letter.delivery {
        add(headers::WEBHOOK_ID, d.webhook_id);
        add(headers::DELIVERY_ID, d.delivery_id);
        if let Some(first) = d.first_attempt_at {
            add(headers::FIRST_ATTEMPT_AT, &rfc3339(first));
        }
        add(headers::ATTEMPT, &d.attempts.to_string());
        if let Some(attempt) = d.last_attempt {
            add(headers::LAST_ATTEMPT_AT, &rfc3339(attempt.started_at));
            add(headers::LAST_CLASS, attempt.class());
            match &attempt.result {
                Ok(status) => add(headers::LAST_STATUS, &status.to_string()),
                Err(failure) => {
                    if let Some(status) = failure.status() {
                        add(headers::LAST_STATUS, &status.to_string());
                    }
                    add(headers::LAST_ERROR, &failure.describe());
                }
            }
            if let Some(body) = &attempt.response_excerpt {
                add(headers::LAST_RESPONSE, body);
            }
        }
        add(headers::HISTORY, &history(d));
    }
    match letter.destination {
        Destination::Retry { tier, due_at } => {
            add(headers::RETRY_TIER, &tier.to_string());
            let due_ms = due_at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis());
            add(headers::RETRY_DUE_AT, &due_ms.to_string());
        }
        Destination::DeadLetter => add(headers::DEAD_LETTERED_AT, &rfc3339(OffsetDateTime::now_utc())),
    }
    out
}

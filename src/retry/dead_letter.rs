//! The dead-letter topic: where nothing is lost.
//!
//! A record that cannot be routed, and a delivery that did not succeed, is
//! written here with the original key, value and headers, plus `herald.*`
//! headers saying what happened (see `docs/dead-letter.md`). The producer is
//! idempotent with `acks=all`, and [`DeadLetterSink::send`] only returns once
//! the broker has acknowledged the record: only then may the source offset be
//! committed. While the broker refuses, it retries with backoff, which holds
//! the source partition's offset (and, through the in-flight limit,
//! eventually the partition) rather than dropping anything.

use std::time::{Duration, Instant};

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
}

/// Why a record is dead-lettered, besides the unroutable reasons.
pub mod reasons {
    pub const DELIVERY_FAILED: &str = "delivery_failed";
    pub const WEBHOOK_PAUSED: &str = "webhook_paused";
    pub const WEBHOOK_DISABLED: &str = "webhook_disabled";
}

/// The delivery a dead letter is about.
pub struct DeliveryContext<'a> {
    pub webhook_id: &'a str,
    pub delivery_id: &'a str,
    /// The last attempt, when one was made.
    pub last_attempt: Option<&'a Attempt>,
    pub first_attempt_at: Option<OffsetDateTime>,
}

/// One dead-letter record to write.
pub struct DeadLetter<'a> {
    pub reason: &'a str,
    pub detail: String,
    pub record: &'a SourceRecord,
    pub meta: Option<&'a EventMeta>,
    pub delivery: Option<DeliveryContext<'a>>,
}

/// Shutdown passed its deadline before the broker acknowledged the record;
/// the source offset stays uncommitted and the event is consumed again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("abandoned before the dead-letter record was acknowledged")]
pub struct Abandoned;

/// Writes dead-letter records and waits for their acknowledgement.
#[derive(Clone)]
pub struct DeadLetterSink {
    producer: FutureProducer,
    topic: String,
    config: DeadLetterConfig,
    telemetry: Telemetry,
}

impl DeadLetterSink {
    pub fn new(producer: FutureProducer, config: &DeadLetterConfig, telemetry: Telemetry) -> Self {
        DeadLetterSink {
            producer,
            topic: config.topic.clone(),
            config: config.clone(),
            telemetry,
        }
    }

    /// Produces `letter` and waits for the broker's acknowledgement, retrying
    /// until it comes or `abort` is cancelled.
    pub async fn send(&self, letter: DeadLetter<'_>, abort: &CancellationToken) -> Result<(), Abandoned> {
        let headers = build_headers(&letter);
        let started = Instant::now();
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(self.config.produce_retry_min_delay)
            .with_max_delay(self.config.produce_retry_max_delay)
            .with_jitter()
            .without_max_times()
            .build();
        loop {
            let mut record = FutureRecord::to(&self.topic)
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
                    self.telemetry.dead_lettered(letter.reason, started.elapsed());
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

fn build_headers(letter: &DeadLetter<'_>) -> OwnedHeaders {
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
        if let Some(attempt) = d.last_attempt {
            add(headers::ATTEMPT, &attempt.attempt.to_string());
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
        } else {
            add(headers::ATTEMPT, "0");
        }
    }
    add(headers::DEAD_LETTERED_AT, &rfc3339(OffsetDateTime::now_utc()));
    out
}

//! Reading a retry record back: what is due, for which webhook, and the
//! original event it carries.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::event::SourceRecord;
use crate::retry::sink::headers as h;

/// A retry record that lacks what Herald wrote into it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("retry record is missing or has an invalid `{0}` header")]
pub struct InvalidRetryRecord(pub &'static str);

/// What a retry record says about its delivery.
#[derive(Debug, Clone)]
pub struct RetryState {
    pub tier: usize,
    pub due_at: SystemTime,
    pub webhook_id: String,
    pub delivery_id: String,
    /// Attempts made so far.
    pub attempt: u32,
    pub first_attempt_at: Option<OffsetDateTime>,
    /// Earlier attempts, as the `herald.history` JSON array.
    pub history: Option<String>,
    /// The event as first consumed from its source topic.
    pub original: SourceRecord,
}

fn text<'a>(record: &'a SourceRecord, name: &'static str) -> Result<&'a str, InvalidRetryRecord> {
    record
        .header(name)
        .and_then(|v| std::str::from_utf8(v).ok())
        .ok_or(InvalidRetryRecord(name))
}

fn number<T: std::str::FromStr>(record: &SourceRecord, name: &'static str) -> Result<T, InvalidRetryRecord> {
    text(record, name)?.parse().map_err(|_| InvalidRetryRecord(name))
}

/// The due time of a retry record, if it has one.
pub fn due_at(record: &SourceRecord) -> Option<SystemTime> {
    let ms: u64 = number(record, h::RETRY_DUE_AT).ok()?;
    Some(UNIX_EPOCH + Duration::from_millis(ms))
}

impl RetryState {
    /// Decodes the `herald.*` headers of a record read from a tier topic.
    pub fn decode(record: &SourceRecord) -> Result<RetryState, InvalidRetryRecord> {
        let source_topic = text(record, h::SOURCE_TOPIC)?;
        let original = SourceRecord {
            topic: Arc::from(source_topic),
            partition: number(record, h::SOURCE_PARTITION)?,
            offset: number(record, h::SOURCE_OFFSET)?,
            timestamp_ms: number(record, h::SOURCE_TIMESTAMP).ok(),
            key: record.key.clone(),
            value: record.value.clone(),
            headers: record
                .headers
                .iter()
                .filter(|hd| !hd.name.starts_with(h::PREFIX))
                .cloned()
                .collect(),
        };
        Ok(RetryState {
            tier: number(record, h::RETRY_TIER)?,
            due_at: due_at(record).ok_or(InvalidRetryRecord(h::RETRY_DUE_AT))?,
            webhook_id: text(record, h::WEBHOOK_ID)?.to_owned(),
            delivery_id: text(record, h::DELIVERY_ID)?.to_owned(),
            attempt: number(record, h::ATTEMPT)?,
            first_attempt_at: text(record, h::FIRST_ATTEMPT_AT)
                .ok()
                .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok()),
            history: text(record, h::HISTORY).ok().map(str::to_owned),
            original,
        })
    }
}

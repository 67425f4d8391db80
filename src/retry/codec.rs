//! The retry and dead-letter record format, in one place.
//!
//! A failure record keeps the original record's key, value and headers, and
//! adds `herald.*` headers (UTF-8 text) saying what happened to the delivery
//! and, for a record that waits for a retry, when it is due. The format is
//! documented in `docs/dead-letter.md`; this module is the only code that
//! writes ([`encode`], [`requeue`], [`redrive`]) or reads ([`decode`],
//! [`due_at`]) it.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::message::{Header, OwnedHeaders};
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::delivery::{Attempt, Failure};
use crate::event::{EventMeta, SourceRecord};
use crate::retry::reason::Reason;
use crate::routing::ordering::OrderKey;
use crate::webhook::Webhook;

/// Header names Herald adds; the original record's own `herald.*` headers
/// are dropped so a re-driven record never carries two histories.
pub mod headers {
    /// Every header Herald adds begins with this.
    pub const PREFIX: &str = "herald.";
    /// Why the record was written: a [`Reason`](crate::retry::reason::Reason)'s wire string.
    pub const REASON: &str = "herald.reason";
    /// A sentence for people: the parse error, the HTTP status...
    pub const DETAIL: &str = "herald.detail";
    /// The topic the event came from.
    pub const SOURCE_TOPIC: &str = "herald.source.topic";
    /// The partition the event came from.
    pub const SOURCE_PARTITION: &str = "herald.source.partition";
    /// The offset the event came from.
    pub const SOURCE_OFFSET: &str = "herald.source.offset";
    /// The source record's timestamp, in epoch milliseconds.
    pub const SOURCE_TIMESTAMP: &str = "herald.source.timestamp";
    /// The event type the envelope rules found.
    pub const EVENT_TYPE: &str = "herald.event.type";
    /// The event id the envelope rules found.
    pub const EVENT_ID: &str = "herald.event.id";
    /// The event's time as its envelope writes it, when the rules name one.
    pub const EVENT_TIME: &str = "herald.event.time";
    /// The event's tenant, when the envelope rules found one.
    pub const TENANT: &str = "herald.tenant";
    /// The webhook the delivery is for.
    pub const WEBHOOK_ID: &str = "herald.webhook.id";
    /// The webhook's own tenant (absent for a webhook bound to none).
    pub const WEBHOOK_TENANT: &str = "herald.webhook.tenant";
    /// The webhook's `created_at`: which incarnation of the id the delivery is for.
    pub const WEBHOOK_CREATED_AT: &str = "herald.webhook.created_at";
    /// The `webhook-id` the receiver saw (or would have seen).
    pub const DELIVERY_ID: &str = "herald.delivery.id";
    /// Attempts made (`0` when none was, e.g. for a paused webhook).
    pub const ATTEMPT: &str = "herald.attempt";
    /// When the first attempt was made (RFC 3339).
    pub const FIRST_ATTEMPT_AT: &str = "herald.first_attempt.at";
    /// When the last attempt was made (RFC 3339).
    pub const LAST_ATTEMPT_AT: &str = "herald.last_attempt.at";
    /// How the last attempt ended: `2xx` ... `5xx`, `timeout`, `network`, `blocked`, `saturated` or `rate_limited`.
    pub const LAST_CLASS: &str = "herald.last.class";
    /// The last attempt's HTTP status, when there was a response.
    pub const LAST_STATUS: &str = "herald.last.status";
    /// What went wrong in the last attempt, for people.
    pub const LAST_ERROR: &str = "herald.last.error";
    /// The start of the last response's body (`delivery.max_response_bytes`).
    pub const LAST_RESPONSE: &str = "herald.last.response";
    /// Dead letters only: when the record was dead-lettered (RFC 3339).
    pub const DEAD_LETTERED_AT: &str = "herald.dead_lettered.at";
    /// Every attempt so far, as a JSON array of `{attempt, at, class, status, error, duration_ms}`.
    pub const HISTORY: &str = "herald.history";
    /// The tier whose attempt this record waits for (absent for a redrive).
    pub const RETRY_TIER: &str = "herald.retry.tier";
    /// When a retry or redrive record is due (epoch milliseconds).
    pub const RETRY_DUE_AT: &str = "herald.retry.due_at";
    /// When the due time was set (this record written, or moved).
    pub const RETRY_SCHEDULED_AT: &str = "herald.retry.scheduled_at";
    /// How many times the record was moved to the end of a wait topic.
    pub const RETRY_REQUEUED: &str = "herald.retry.requeued";
    /// On a retry record of an ordered webhook: the queue of its key
    /// (`retry::ordering`), 32 hex digits; it goes when it heads it.
    pub const ORDERING_KEY: &str = "herald.ordering.key";
    /// On a redrive made by a replay: the dead letter's reason.
    pub const REPLAYED_FROM_REASON: &str = "herald.replayed_from.reason";
    /// Present on a dead letter whose value was dropped because it was too large.
    pub const STUB: &str = "herald.stub";
    /// On a stub: the size of the original record's key, which a stub does
    /// not carry (a key can be as large as the broker allows)...
    pub const SOURCE_KEY_BYTES: &str = "herald.source.key_bytes";
    /// ...and its SHA-256, hex, to find the record by.
    pub const SOURCE_KEY_SHA256: &str = "herald.source.key_sha256";
}

use headers as h;

/// The webhook a delivery is for: its id, and the tenant and incarnation
/// (`created_at`) it had when the delivery was routed, so that a retry never
/// reaches another webhook that re-uses the id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding<'a> {
    pub webhook_id: &'a str,
    pub tenant: Option<&'a str>,
    pub created_at: Option<OffsetDateTime>,
}

impl<'a> Binding<'a> {
    /// The binding of `webhook` as it is now.
    pub fn of(webhook: &'a Webhook) -> Binding<'a> {
        Binding {
            webhook_id: &webhook.id,
            tenant: webhook.tenant.as_deref(),
            created_at: Some(webhook.created_at),
        }
    }
}

/// The delivery a failure record is about.
pub struct DeliveryContext<'a> {
    pub binding: Binding<'a>,
    pub delivery_id: &'a str,
    /// Attempts made so far (0 when none was, e.g. for a paused webhook).
    pub attempts: u32,
    /// The last attempt, when this record follows one.
    pub last_attempt: Option<&'a Attempt>,
    pub first_attempt_at: Option<OffsetDateTime>,
    /// The `herald.history` of earlier attempts (a JSON array), if any.
    pub previous_history: Option<&'a str>,
    /// The retry tier whose attempt this was (`None`: the first attempt or a redrive).
    pub tier: Option<usize>,
    /// The queue of its key, when its webhook orders deliveries and the
    /// record waits in it (written on tier records only).
    pub ordering: Option<&'a OrderKey>,
}

/// Where a failure record goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Destination {
    /// Retry tier `tier` (index into the schedule), due at `due_at`.
    Tier { tier: usize, due_at: SystemTime },
    /// The redrive topic, due now: a manual retry, a replay.
    Redrive,
    /// The dead-letter topic.
    DeadLetter,
}

/// One failure record to write.
pub struct FailureRecord<'a> {
    pub destination: Destination,
    pub reason: Reason,
    pub detail: String,
    /// The original record (for a retry: as first consumed from its source).
    pub record: &'a SourceRecord,
    pub meta: Option<&'a EventMeta>,
    pub delivery: Option<DeliveryContext<'a>>,
}

/// How much of a failure record to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// Everything.
    Full,
    /// Without the optional diagnostics (`herald.history`,
    /// `herald.last.response`, `herald.last.error`, a shortened detail): for a
    /// record the broker refused as too large.
    Lean,
}

/// Longest `herald.detail` in a [`Size::Lean`] record.
const LEAN_DETAIL: usize = 256;

/// `t` in milliseconds since the epoch, as the headers carry times.
pub fn millis(t: SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

fn from_millis(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// A record's headers, built once: made with room for all of them, and each
/// one inserted into it (`OwnedHeaders::insert` takes the headers and gives
/// them back, so each step does too: `out = out.add(...)`).
struct Out(OwnedHeaders);

impl Out {
    fn new(capacity: usize) -> Out {
        Out(OwnedHeaders::new_with_capacity(capacity))
    }

    #[must_use]
    fn raw(self, key: &str, value: Option<&[u8]>) -> Out {
        Out(self.0.insert(Header { key, value }))
    }

    #[must_use]
    fn add(self, key: &str, value: &str) -> Out {
        self.raw(key, Some(value.as_bytes()))
    }

    /// Where a stub's record is: its position, and its key by size and
    /// digest (a stub carries no key: one may be as large as the broker
    /// allows, and the stub must always fit).
    #[must_use]
    fn position(self, record: &SourceRecord) -> Out {
        let out = self
            .add(h::SOURCE_TOPIC, &record.topic)
            .add(h::SOURCE_PARTITION, &record.partition.to_string())
            .add(h::SOURCE_OFFSET, &record.offset.to_string());
        match &record.key {
            Some(key) => out
                .add(h::SOURCE_KEY_BYTES, &key.len().to_string())
                .add(h::SOURCE_KEY_SHA256, &hex::encode(Sha256::digest(key))),
            None => out,
        }
    }
}

fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Every attempt so far as a compact JSON array:
/// `[{"attempt":1,"at":"...","class":"5xx","status":503,"error":"..."}, ...]`.
fn history(d: &DeliveryContext<'_>) -> String {
    let mut entries: Vec<serde_json::Value> = d
        .previous_history
        .and_then(|h| serde_json::from_str(h).ok())
        .unwrap_or_default();
    // Consecutive waits of one kind (for a request slot, or for the rate)
    // are one entry: a delivery deferred again and again does not grow its
    // record.
    let last_class = entries.last().and_then(|e| e["class"].as_str()).map(str::to_owned);
    let repeated_wait =
        |a: &&Attempt| a.result.as_ref().is_err_and(Failure::is_wait) && last_class.as_deref() == Some(a.class());
    if let Some(a) = d.last_attempt.filter(|a| !repeated_wait(a)) {
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

/// The headers of `letter`, written at `now`.
pub fn encode(letter: &FailureRecord<'_>, now: SystemTime, size: Size) -> OwnedHeaders {
    let record = letter.record;
    let lean = size == Size::Lean;
    let mut out = Out::new(record.headers.len() + 24);
    for header in &record.headers {
        if !header.name.starts_with(h::PREFIX) {
            out = out.raw(&header.name, header.value.as_deref());
        }
    }
    out = out.add(h::REASON, letter.reason.as_str());
    out = out.add(
        h::DETAIL,
        if lean {
            cut(&letter.detail, LEAN_DETAIL)
        } else {
            &letter.detail
        },
    );
    out = out.add(h::SOURCE_TOPIC, &record.topic);
    out = out.add(h::SOURCE_PARTITION, &record.partition.to_string());
    out = out.add(h::SOURCE_OFFSET, &record.offset.to_string());
    if let Some(ts) = record.timestamp_ms {
        out = out.add(h::SOURCE_TIMESTAMP, &ts.to_string());
    }
    if let Some(meta) = letter.meta {
        out = out.add(h::EVENT_TYPE, &meta.event_type);
        if let Some(id) = &meta.event_id {
            out = out.add(h::EVENT_ID, id);
        }
        if let Some(time) = &meta.event_time {
            out = out.add(h::EVENT_TIME, time);
        }
        if let Some(tenant) = &meta.tenant {
            out = out.add(h::TENANT, tenant);
        }
    }
    if let Some(d) = &letter.delivery {
        out = out.add(h::WEBHOOK_ID, d.binding.webhook_id);
        if let Some(tenant) = d.binding.tenant {
            out = out.add(h::WEBHOOK_TENANT, tenant);
        }
        if let Some(created_at) = d.binding.created_at {
            out = out.add(h::WEBHOOK_CREATED_AT, &rfc3339(created_at));
        }
        out = out.add(h::DELIVERY_ID, d.delivery_id);
        if let Some(first) = d.first_attempt_at {
            out = out.add(h::FIRST_ATTEMPT_AT, &rfc3339(first));
        }
        out = out.add(h::ATTEMPT, &d.attempts.to_string());
        if let Some(attempt) = d.last_attempt {
            out = out.add(h::LAST_ATTEMPT_AT, &rfc3339(attempt.started_at));
            out = out.add(h::LAST_CLASS, attempt.class());
            match &attempt.result {
                Ok(status) => out = out.add(h::LAST_STATUS, &status.to_string()),
                Err(failure) => {
                    if let Some(status) = failure.status() {
                        out = out.add(h::LAST_STATUS, &status.to_string());
                    }
                    if !lean {
                        out = out.add(h::LAST_ERROR, &failure.describe());
                    }
                }
            }
            if let (Some(body), false) = (&attempt.response_excerpt, lean) {
                out = out.add(h::LAST_RESPONSE, body);
            }
        }
        if !lean {
            out = out.add(h::HISTORY, &history(d));
        }
    }
    match letter.destination {
        Destination::Tier { tier, due_at } => {
            if let Some(key) = letter.delivery.as_ref().and_then(|d| d.ordering) {
                out = out.add(h::ORDERING_KEY, &key.hex());
            }
            out = out.add(h::RETRY_TIER, &tier.to_string());
            out = out.add(h::RETRY_DUE_AT, &millis(due_at).to_string());
            out = out.add(h::RETRY_SCHEDULED_AT, &millis(now).to_string());
        }
        Destination::Redrive => {
            out = out.add(h::RETRY_DUE_AT, &millis(now).to_string());
            out = out.add(h::RETRY_SCHEDULED_AT, &millis(now).to_string());
        }
        Destination::DeadLetter => out = out.add(h::DEAD_LETTERED_AT, &rfc3339(OffsetDateTime::from(now))),
    }
    out.0
}

/// The headers of a dead-letter stub for `letter`, whose record was too
/// large to write even in its [`Size::Lean`] form: what it was and where the
/// event is (its source position), without its value or original headers.
pub fn stub(letter: &FailureRecord<'_>, now: SystemTime, refused: &str) -> OwnedHeaders {
    let record = letter.record;
    let mut out = Out::new(16);
    out = out.add(h::REASON, Reason::RecordTooLarge.as_str());
    out = out.add(
        h::DETAIL,
        &format!(
            "the {} record ({}: {}) was refused: {}; the event is at {}/{}/{} while the source topic retains it",
            match letter.destination {
                Destination::DeadLetter => "dead-letter",
                _ => "retry",
            },
            letter.reason,
            cut(&letter.detail, LEAN_DETAIL),
            cut(refused, LEAN_DETAIL),
            record.topic,
            record.partition,
            record.offset
        ),
    );
    out = out.add(h::STUB, &format!("value of {} bytes dropped", record.value.len()));
    out = out.position(record);
    if let Some(meta) = letter.meta {
        out = out.add(h::EVENT_TYPE, cut(&meta.event_type, LEAN_DETAIL));
        if let Some(tenant) = &meta.tenant {
            out = out.add(h::TENANT, cut(tenant, LEAN_DETAIL));
        }
    }
    if let Some(d) = &letter.delivery {
        out = out.add(h::WEBHOOK_ID, cut(d.binding.webhook_id, LEAN_DETAIL));
        if let Some(tenant) = d.binding.tenant {
            out = out.add(h::WEBHOOK_TENANT, cut(tenant, LEAN_DETAIL));
        }
        out = out.add(h::DELIVERY_ID, cut(d.delivery_id, LEAN_DETAIL));
        out = out.add(h::ATTEMPT, &d.attempts.to_string());
    }
    out = out.add(h::DEAD_LETTERED_AT, &rfc3339(OffsetDateTime::from(now)));
    out.0
}

/// The headers of `record` (a waiting retry) moved, unchanged otherwise, to
/// the end of a wait topic at `now`: the same due time, one more move.
pub fn requeue(record: &SourceRecord, now: SystemTime) -> OwnedHeaders {
    let moves = number::<u32>(record, h::RETRY_REQUEUED).unwrap_or(0);
    let mut out = Out::new(record.headers.len() + 2);
    for header in &record.headers {
        if header.name != h::RETRY_REQUEUED && header.name != h::RETRY_SCHEDULED_AT {
            out = out.raw(&header.name, header.value.as_deref());
        }
    }
    out = out.add(h::RETRY_SCHEDULED_AT, &millis(now).to_string());
    out = out.add(h::RETRY_REQUEUED, &(moves + 1).to_string());
    out.0
}

/// The headers of a dead-letter stub for a retry waiting at `record`'s
/// position in a wait topic that could not be moved to the end of another
/// (`refused`, even without its diagnostics): it stays where it is while
/// that topic retains it, and the stub says so, with the delivery it is.
pub fn unmoved_stub(record: &SourceRecord, now: SystemTime, refused: &str) -> OwnedHeaders {
    let mut out = Out::new(12);
    out = out.add(h::REASON, Reason::RecordTooLarge.as_str());
    out = out.add(
        h::DETAIL,
        &format!(
            "a retry waiting at {}/{}/{} could not be moved to another wait topic: {}; it stays there while \
             the topic retains it",
            record.topic,
            record.partition,
            record.offset,
            cut(refused, LEAN_DETAIL)
        ),
    );
    out = out.add(
        h::STUB,
        &format!("value of {} bytes left in the wait topic", record.value.len()),
    );
    out = out.position(record);
    for name in [
        h::WEBHOOK_ID,
        h::WEBHOOK_TENANT,
        h::DELIVERY_ID,
        h::ATTEMPT,
        h::EVENT_TYPE,
        h::TENANT,
    ] {
        if let Some(value) = record.header(name).and_then(|v| std::str::from_utf8(v).ok()) {
            out = out.add(name, cut(value, LEAN_DETAIL));
        }
    }
    out = out.add(h::DEAD_LETTERED_AT, &rfc3339(OffsetDateTime::from(now)));
    out.0
}

/// Whether a dead letter (by its headers) is a delivery that can be
/// re-driven: it names its webhook (with its incarnation) and delivery, and
/// carries its event.
pub fn is_redrivable<'a>(mut headers: impl Iterator<Item = (&'a str, Option<&'a [u8]>)>) -> bool {
    let (mut webhook, mut delivery, mut incarnation) = (false, false, false);
    for (key, _) in headers.by_ref() {
        match key {
            h::WEBHOOK_ID => webhook = true,
            h::DELIVERY_ID => delivery = true,
            h::WEBHOOK_CREATED_AT => incarnation = true,
            h::STUB => return false,
            _ => {}
        }
    }
    webhook && delivery && incarnation
}

/// The headers of a redrive record made from a dead letter's headers: due
/// `now`, with the delivery's id, attempts and history carried on and the
/// dead-letter reason kept as `herald.replayed_from.reason`.
pub fn redrive<'a>(dead_letter: impl Iterator<Item = (&'a str, Option<&'a [u8]>)>, now: SystemTime) -> OwnedHeaders {
    let mut out = Out::new(32);
    let mut reason = None;
    for (key, value) in dead_letter {
        match key {
            h::REASON => reason = value,
            h::DETAIL
            | h::RETRY_TIER
            | h::RETRY_DUE_AT
            | h::RETRY_SCHEDULED_AT
            | h::RETRY_REQUEUED
            | h::DEAD_LETTERED_AT
            | h::REPLAYED_FROM_REASON => {}
            _ => out = out.raw(key, value),
        }
    }
    out = out.add(h::RETRY_DUE_AT, &millis(now).to_string());
    out = out.add(h::RETRY_SCHEDULED_AT, &millis(now).to_string());
    if let Some(reason) = reason {
        out = out.raw(h::REPLAYED_FROM_REASON, Some(reason));
    }
    out.0
}

/// A retry record that lacks what Herald wrote into it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("retry record is missing or has an invalid `{0}` header")]
pub struct InvalidRetryRecord(pub &'static str);

/// What a retry record says about its delivery.
#[derive(Debug, Clone)]
pub struct RetryState {
    /// The tier whose attempt this is (`None`: a redrive, e.g. a manual retry
    /// or replay; failing again starts the tiers from the first).
    pub tier: Option<usize>,
    pub due_at: SystemTime,
    /// When the due time was set, if the record says.
    pub scheduled_at: Option<SystemTime>,
    /// Times the record was moved to the end of a wait topic.
    pub requeued: u32,
    pub webhook_id: String,
    pub webhook_tenant: Option<String>,
    /// The webhook's `created_at` when the delivery was routed (absent in
    /// records written before Herald recorded it).
    pub webhook_created_at: Option<OffsetDateTime>,
    pub delivery_id: String,
    /// Attempts made so far.
    pub attempt: u32,
    pub first_attempt_at: Option<OffsetDateTime>,
    /// When the attempt that sent it here started (`herald.last_attempt.at`).
    pub last_attempt_at: Option<OffsetDateTime>,
    /// Earlier attempts, as the `herald.history` JSON array.
    pub history: Option<String>,
    /// The reason of the dead letter this record re-drives, if it does.
    pub replayed_from: Option<String>,
    /// The queue of its key it waits in (`herald.ordering.key`), if any.
    pub ordering: Option<OrderKey>,
    /// The event as first consumed from its source topic.
    pub original: SourceRecord,
}

impl RetryState {
    /// The webhook this record was written for (id, tenant, incarnation).
    pub fn binding(&self) -> Binding<'_> {
        Binding {
            webhook_id: &self.webhook_id,
            tenant: self.webhook_tenant.as_deref(),
            created_at: self.webhook_created_at,
        }
    }

    /// The delivery it is about, as written again without an attempt (kept
    /// in the dead-letter topic, or waiting again), in `ordering`'s queue.
    pub fn context<'a>(&'a self, ordering: Option<&'a OrderKey>) -> DeliveryContext<'a> {
        DeliveryContext {
            binding: self.binding(),
            delivery_id: &self.delivery_id,
            attempts: self.attempt,
            last_attempt: None,
            first_attempt_at: self.first_attempt_at,
            previous_history: self.history.as_deref(),
            tier: self.tier,
            ordering,
        }
    }
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

fn time_of(record: &SourceRecord, name: &'static str) -> Result<Option<OffsetDateTime>, InvalidRetryRecord> {
    match record.header(name) {
        None => Ok(None),
        Some(_) => OffsetDateTime::parse(text(record, name)?, &Rfc3339)
            .map(Some)
            .map_err(|_| InvalidRetryRecord(name)),
    }
}

/// The due time of a retry record, if it has one.
pub fn due_at(record: &SourceRecord) -> Option<SystemTime> {
    number(record, h::RETRY_DUE_AT).ok().map(from_millis)
}

/// When a retry record's due time was set: its `herald.retry.scheduled_at`,
/// else the record's timestamp.
pub fn scheduled_at(record: &SourceRecord) -> Option<SystemTime> {
    number(record, h::RETRY_SCHEDULED_AT).ok().map(from_millis).or_else(|| {
        record
            .timestamp_ms
            .and_then(|ms| u64::try_from(ms).ok())
            .map(from_millis)
    })
}

/// Decodes the `herald.*` headers of a record read from a wait topic, where
/// `tiers` retry tiers are configured. Only Herald writes these topics, but
/// nothing in them is trusted further than it is checked: a record must name
/// the incarnation of its webhook (so that it reaches no webhook created
/// since under the same id) and a configured tier.
pub fn decode(record: &SourceRecord, tiers: usize) -> Result<RetryState, InvalidRetryRecord> {
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
    let tier = match record.header(h::RETRY_TIER) {
        None => None,
        Some(_) => Some(number(record, h::RETRY_TIER)?).filter(|t| *t < tiers),
    };
    if tier.is_none() && record.header(h::RETRY_TIER).is_some() {
        return Err(InvalidRetryRecord(h::RETRY_TIER));
    }
    Ok(RetryState {
        tier,
        due_at: due_at(record).ok_or(InvalidRetryRecord(h::RETRY_DUE_AT))?,
        scheduled_at: scheduled_at(record),
        requeued: number(record, h::RETRY_REQUEUED).unwrap_or(0),
        webhook_id: text(record, h::WEBHOOK_ID)?.to_owned(),
        webhook_tenant: record
            .header(h::WEBHOOK_TENANT)
            .map(|_| text(record, h::WEBHOOK_TENANT))
            .transpose()?
            .map(str::to_owned),
        webhook_created_at: Some(
            time_of(record, h::WEBHOOK_CREATED_AT)?.ok_or(InvalidRetryRecord(h::WEBHOOK_CREATED_AT))?,
        ),
        delivery_id: text(record, h::DELIVERY_ID)?.to_owned(),
        attempt: number(record, h::ATTEMPT)?,
        first_attempt_at: time_of(record, h::FIRST_ATTEMPT_AT).ok().flatten(),
        last_attempt_at: time_of(record, h::LAST_ATTEMPT_AT).ok().flatten(),
        history: text(record, h::HISTORY).ok().map(str::to_owned),
        replayed_from: text(record, h::REPLAYED_FROM_REASON).ok().map(str::to_owned),
        ordering: match record.header(h::ORDERING_KEY) {
            None => None,
            Some(_) => Some(
                text(record, h::ORDERING_KEY)
                    .ok()
                    .and_then(OrderKey::from_hex)
                    .ok_or(InvalidRetryRecord(h::ORDERING_KEY))?,
            ),
        },
        original,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::Failure;
    use crate::event::RecordHeader;
    use rdkafka::message::Headers;

    fn source() -> SourceRecord {
        SourceRecord {
            topic: "events".into(),
            partition: 2,
            offset: 41,
            timestamp_ms: Some(1_700_000_000_000),
            key: Some("k".into()),
            value: r#"{"event":"tour.completed"}"#.into(),
            headers: vec![
                RecordHeader {
                    name: "trace".into(),
                    value: Some("t-1".into()),
                },
                RecordHeader {
                    name: "herald.reason".into(),
                    value: Some("forged".into()),
                },
            ],
        }
    }

    fn meta() -> EventMeta {
        EventMeta {
            event_type: "tour.completed".into(),
            event_id: Some("evt_1".into()),
            event_time: None,
            tenant: Some("acme".into()),
            content_type: "application/json".into(),
            forward_headers: Vec::new(),
            id_source: None,
        }
    }

    fn attempt() -> Attempt {
        Attempt {
            delivery_id: "msg_1".into(),
            attempt: 2,
            started_at: OffsetDateTime::from_unix_timestamp(1_700_000_100).unwrap(),
            duration: Duration::from_millis(12),
            result: Err(Failure::Status {
                status: 503,
                retry_after: None,
            }),
            response_excerpt: Some("busy".into()),
            signed: None,
            response_headers: Vec::new(),
            details_withheld: false,
        }
    }

    /// When webhook `w` was created.
    fn incarnation() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_690_000_000).unwrap()
    }

    /// A delivery of webhook `w`, bound to no tenant.
    fn unbound<'a>(attempts: u32, last_attempt: Option<&'a Attempt>, history: Option<&'a str>) -> DeliveryContext<'a> {
        DeliveryContext {
            ordering: None,
            binding: Binding {
                webhook_id: "w",
                tenant: None,
                created_at: Some(incarnation()),
            },
            delivery_id: "msg_1",
            attempts,
            last_attempt,
            first_attempt_at: None,
            previous_history: history,
            tier: None,
        }
    }

    /// A delivery of webhook `orders` of tenant `acme`, on its first tier.
    fn of_orders(attempts: u32, last_attempt: Option<&Attempt>) -> DeliveryContext<'_> {
        DeliveryContext {
            ordering: None,
            binding: Binding {
                webhook_id: "orders",
                tenant: Some("acme"),
                created_at: Some(incarnation()),
            },
            delivery_id: "msg_1",
            attempts,
            last_attempt,
            first_attempt_at: None,
            previous_history: None,
            tier: Some(0),
        }
    }

    /// The record a consumer would read back, with `headers` and `record`'s key and value.
    fn read_back(record: &SourceRecord, headers: &OwnedHeaders, topic: &str) -> SourceRecord {
        SourceRecord {
            topic: topic.into(),
            partition: 0,
            offset: 7,
            timestamp_ms: Some(1_700_000_200_000),
            key: record.key.clone(),
            value: record.value.clone(),
            headers: headers
                .iter()
                .map(|hd| RecordHeader {
                    name: hd.key.to_owned(),
                    value: hd.value.map(bytes::Bytes::copy_from_slice),
                })
                .collect(),
        }
    }

    fn pairs(headers: &OwnedHeaders) -> Vec<(String, String)> {
        headers
            .iter()
            .map(|hd| {
                (
                    hd.key.to_owned(),
                    String::from_utf8_lossy(hd.value.unwrap_or_default()).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn consecutive_waits_for_a_request_slot_are_one_history_entry() {
        fn after(previous: &str, last: &Attempt) -> String {
            history(&DeliveryContext {
                ordering: None,
                binding: Binding {
                    webhook_id: "orders",
                    tenant: None,
                    created_at: None,
                },
                delivery_id: "msg_1",
                attempts: 1,
                last_attempt: Some(last),
                first_attempt_at: None,
                previous_history: Some(previous),
                tier: Some(0),
            })
        }
        let entries = |h: &str| serde_json::from_str::<Vec<serde_json::Value>>(h).unwrap().len();
        let mut waited = attempt();
        waited.result = Err(Failure::Saturated(crate::delivery::Limit::Endpoint));
        let once = after(r#"[{"attempt":1,"class":"5xx"}]"#, &waited);
        assert_eq!(entries(&once), 2, "the first wait is an entry");
        let again = after(&once, &waited);
        assert_eq!(entries(&again), 2, "a second wait in a row is not");
        assert_eq!(entries(&after(&again, &attempt())), 3, "an attempt after it is");
        // A wait for the rate is another kind: an entry after a wait for a
        // slot, and one however many follow it.
        let mut limited = attempt();
        limited.result = Err(Failure::RateLimited(crate::delivery::rate::RateLimited {
            per_second: 2.0,
        }));
        let rated = after(&again, &limited);
        assert_eq!(entries(&rated), 3);
        assert_eq!(entries(&after(&rated, &limited)), 3);
    }

    #[test]
    fn a_retry_record_round_trips() {
        let record = source();
        let meta = meta();
        let attempt = attempt();
        let created = OffsetDateTime::from_unix_timestamp(1_690_000_000).unwrap() + Duration::from_nanos(123_456_789);
        let now = from_millis(1_700_000_101_000);
        let due = now + Duration::from_secs(3600);
        let letter = FailureRecord {
            destination: Destination::Tier { tier: 1, due_at: due },
            reason: Reason::DeliveryFailed,
            detail: "endpoint answered HTTP 503".into(),
            record: &record,
            meta: Some(&meta),
            delivery: Some(DeliveryContext {
                ordering: None,
                binding: Binding {
                    webhook_id: "orders",
                    tenant: Some("acme"),
                    created_at: Some(created),
                },
                delivery_id: "msg_1",
                attempts: 2,
                last_attempt: Some(&attempt),
                first_attempt_at: Some(OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap()),
                previous_history: Some(r#"[{"attempt":1}]"#),
                tier: Some(0),
            }),
        };
        let headers = encode(&letter, now, Size::Full);
        let back = read_back(&record, &headers, "herald.retry.3h");
        let state = decode(&back, 3).unwrap();
        assert_eq!(state.tier, Some(1));
        assert_eq!(millis(state.due_at), millis(due));
        assert_eq!(state.scheduled_at.map(millis), Some(millis(now)));
        assert_eq!(state.requeued, 0);
        assert_eq!(state.webhook_id, "orders");
        assert_eq!(state.webhook_tenant.as_deref(), Some("acme"));
        assert_eq!(
            state.webhook_created_at,
            Some(created),
            "the incarnation keeps its nanoseconds"
        );
        assert_eq!(state.delivery_id, "msg_1");
        assert_eq!(state.attempt, 2);
        let history: Vec<serde_json::Value> = serde_json::from_str(state.history.as_deref().unwrap()).unwrap();
        assert_eq!(history.len(), 2);
        assert_eq!(history[1]["status"], 503);
        // The original record comes back as it was consumed, without forged herald headers.
        assert_eq!(&*state.original.topic, "events");
        assert_eq!((state.original.partition, state.original.offset), (2, 41));
        assert_eq!(state.original.timestamp_ms, Some(1_700_000_000_000));
        assert_eq!(state.original.value, record.value);
        assert_eq!(state.original.headers, vec![record.headers[0].clone()]);
    }

    /// Every header each writer puts on a record, in order, with a null
    /// value and a repeated name among the source's own.
    #[test]
    fn every_writer_puts_these_headers_in_this_order() {
        let mut record = source();
        record.headers.push(RecordHeader {
            name: "empty".into(),
            value: None,
        });
        record.headers.push(RecordHeader {
            name: "trace".into(),
            value: Some("t-2".into()),
        });
        let meta = meta();
        let attempt = attempt();
        let now = from_millis(1_700_000_101_000);
        let mut letter = FailureRecord {
            destination: Destination::Tier {
                tier: 1,
                due_at: now + Duration::from_secs(3600),
            },
            reason: Reason::DeliveryFailed,
            detail: "endpoint answered HTTP 503".into(),
            record: &record,
            meta: Some(&meta),
            delivery: Some(DeliveryContext {
                first_attempt_at: Some(OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap()),
                previous_history: Some(r#"[{"attempt":1}]"#),
                ..of_orders(2, Some(&attempt))
            }),
        };
        // `name=value`, or `name` alone for a null value.
        let written = |headers: &OwnedHeaders| -> Vec<String> {
            headers
                .iter()
                .map(|hd| match hd.value {
                    Some(v) => format!("{}={}", hd.key, String::from_utf8_lossy(v)),
                    None => hd.key.to_owned(),
                })
                .collect()
        };
        let retry = encode(&letter, now, Size::Full);
        let waiting = read_back(&record, &retry, "herald.retry.3h");
        letter.destination = Destination::DeadLetter;
        let dead = encode(&letter, now, Size::Lean);
        let later = from_millis(1_700_000_200_000);
        let made = [
            ("retry", retry),
            ("lean dead letter", dead),
            ("stub", stub(&letter, now, "too large")),
            ("requeue", requeue(&waiting, later)),
            ("unmoved stub", unmoved_stub(&waiting, later, "too large")),
            (
                "redrive",
                redrive(
                    encode(&letter, now, Size::Full).iter().map(|hd| (hd.key, hd.value)),
                    later,
                ),
            ),
        ];
        let retry: Vec<&str> = vec![
            "trace=t-1",
            "empty",
            "trace=t-2",
            "herald.reason=delivery_failed",
            "herald.detail=endpoint answered HTTP 503",
            "herald.source.topic=events",
            "herald.source.partition=2",
            "herald.source.offset=41",
            "herald.source.timestamp=1700000000000",
            "herald.event.type=tour.completed",
            "herald.event.id=evt_1",
            "herald.tenant=acme",
            "herald.webhook.id=orders",
            "herald.webhook.tenant=acme",
            "herald.webhook.created_at=2023-07-22T04:26:40Z",
            "herald.delivery.id=msg_1",
            "herald.first_attempt.at=2023-11-14T22:13:20Z",
            "herald.attempt=2",
            "herald.last_attempt.at=2023-11-14T22:15:00Z",
            "herald.last.class=5xx",
            "herald.last.status=503",
            "herald.last.error=endpoint answered HTTP 503",
            "herald.last.response=busy",
            r#"herald.history=[{"attempt":1},{"at":"2023-11-14T22:15:00Z","attempt":2,"class":"5xx","duration_ms":12,"error":"endpoint answered HTTP 503","status":503}]"#,
            "herald.retry.tier=1",
            "herald.retry.due_at=1700003701000",
            "herald.retry.scheduled_at=1700000101000",
        ];
        // The lean dead letter: the same up to the last status, then when.
        let mut dead = retry[..21].to_vec();
        dead.push("herald.dead_lettered.at=2023-11-14T22:15:01Z");
        // Requeued: rescheduled, and counted.
        let mut requeued = retry[..26].to_vec();
        requeued.extend(["herald.retry.scheduled_at=1700000200000", "herald.retry.requeued=1"]);
        // Redriven: without the failure and the tier, due at once.
        let mut redriven: Vec<&str> = retry[..3].iter().chain(&retry[5..24]).copied().collect();
        redriven.extend([
            "herald.retry.due_at=1700000200000",
            "herald.retry.scheduled_at=1700000200000",
            "herald.replayed_from.reason=delivery_failed",
        ]);
        let stub = vec![
            "herald.reason=record_too_large",
            "herald.detail=the dead-letter record (delivery_failed: endpoint answered HTTP 503) was refused: too \
             large; the event is at events/2/41 while the source topic retains it",
            "herald.stub=value of 26 bytes dropped",
            "herald.source.topic=events",
            "herald.source.partition=2",
            "herald.source.offset=41",
            "herald.source.key_bytes=1",
            "herald.source.key_sha256=8254c329a92850f6d539dd376f4816ee2764517da5e0235514af433164480d7a",
            "herald.event.type=tour.completed",
            "herald.tenant=acme",
            "herald.webhook.id=orders",
            "herald.webhook.tenant=acme",
            "herald.delivery.id=msg_1",
            "herald.attempt=2",
            "herald.dead_lettered.at=2023-11-14T22:15:01Z",
        ];
        let unmoved = vec![
            "herald.reason=record_too_large",
            "herald.detail=a retry waiting at herald.retry.3h/0/7 could not be moved to another wait topic: too \
             large; it stays there while the topic retains it",
            "herald.stub=value of 26 bytes left in the wait topic",
            "herald.source.topic=herald.retry.3h",
            "herald.source.partition=0",
            "herald.source.offset=7",
            "herald.source.key_bytes=1",
            "herald.source.key_sha256=8254c329a92850f6d539dd376f4816ee2764517da5e0235514af433164480d7a",
            "herald.webhook.id=orders",
            "herald.webhook.tenant=acme",
            "herald.delivery.id=msg_1",
            "herald.attempt=2",
            "herald.event.type=tour.completed",
            "herald.tenant=acme",
            "herald.dead_lettered.at=2023-11-14T22:16:40Z",
        ];
        let expected = [retry, dead, stub, requeued, unmoved, redriven];
        assert_eq!(made.len(), expected.len());
        for ((name, headers), expected) in made.iter().zip(expected) {
            assert_eq!(written(headers), expected, "{name}");
        }
    }

    #[test]
    fn lean_records_drop_only_the_optional_diagnostics() {
        let record = source();
        let meta = meta();
        let attempt = attempt();
        let long_history = format!("[{}]", vec!["{}"; 1000].join(","));
        let letter = FailureRecord {
            destination: Destination::Tier {
                tier: 0,
                due_at: SystemTime::now(),
            },
            reason: Reason::DeliveryFailed,
            detail: "x".repeat(10_000),
            record: &record,
            meta: Some(&meta),
            delivery: Some(unbound(1, Some(&attempt), Some(&long_history))),
        };
        let full = pairs(&encode(&letter, SystemTime::now(), Size::Full));
        let lean = pairs(&encode(&letter, SystemTime::now(), Size::Lean));
        let size = |p: &[(String, String)]| p.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        assert!(size(&lean) < size(&full) / 4, "{} vs {}", size(&lean), size(&full));
        let keys: Vec<&str> = lean.iter().map(|(k, _)| k.as_str()).collect();
        for gone in [h::HISTORY, h::LAST_ERROR, h::LAST_RESPONSE] {
            assert!(!keys.contains(&gone), "{gone}");
        }
        let back = read_back(&record, &encode(&letter, SystemTime::now(), Size::Lean), "t");
        let state = decode(&back, 3).expect("a lean record is still a retry record");
        assert_eq!(state.delivery_id, "msg_1");
        assert_eq!(back.header("trace"), Some(&b"t-1"[..]), "original headers are kept");
    }

    #[test]
    fn a_requeued_record_keeps_its_due_time_and_counts_moves() {
        let record = source();
        let due = from_millis(1_700_000_500_000);
        let letter = FailureRecord {
            destination: Destination::Tier { tier: 0, due_at: due },
            reason: Reason::DeliveryFailed,
            detail: String::new(),
            record: &record,
            meta: Some(&meta()),
            delivery: Some(unbound(1, None, None)),
        };
        let first = read_back(
            &record,
            &encode(&letter, from_millis(1_700_000_000_000), Size::Full),
            "r",
        );
        let moved = read_back(&first, &requeue(&first, from_millis(1_700_000_100_000)), "r");
        let again = read_back(&moved, &requeue(&moved, from_millis(1_700_000_200_000)), "r");
        let state = decode(&again, 3).unwrap();
        assert_eq!(state.due_at, due);
        assert_eq!(state.requeued, 2);
        assert_eq!(state.scheduled_at, Some(from_millis(1_700_000_200_000)));
        assert_eq!(
            again
                .headers
                .iter()
                .filter(|hd| hd.name == h::RETRY_SCHEDULED_AT)
                .count(),
            1
        );
    }

    #[test]
    fn a_dead_letter_is_redriven_due_now_with_its_delivery_carried_on() {
        let record = source();
        let meta = meta();
        let attempt = attempt();
        let letter = FailureRecord {
            destination: Destination::DeadLetter,
            reason: Reason::RetriesExhausted,
            detail: "endpoint answered HTTP 503".into(),
            record: &record,
            meta: Some(&meta),
            delivery: Some(DeliveryContext {
                tier: Some(4),
                ..of_orders(6, Some(&attempt))
            }),
        };
        let dead = encode(&letter, SystemTime::now(), Size::Full);
        assert!(is_redrivable(dead.iter().map(|hd| (hd.key, hd.value))));
        let now = from_millis(1_800_000_000_000);
        let redriven = read_back(
            &record,
            &redrive(dead.iter().map(|hd| (hd.key, hd.value)), now),
            "redrive",
        );
        let state = decode(&redriven, 3).unwrap();
        assert_eq!(state.tier, None, "a redrive starts the tiers again");
        assert_eq!(state.due_at, now);
        assert_eq!(state.attempt, 6);
        assert_eq!(state.delivery_id, "msg_1");
        assert_eq!(state.replayed_from.as_deref(), Some(Reason::RetriesExhausted.as_str()));
        assert!(redriven.header(h::REASON).is_none());
        assert!(redriven.header(h::DEAD_LETTERED_AT).is_none());
    }

    #[test]
    fn a_stub_points_at_the_source_and_is_not_redrivable() {
        let record = source();
        let meta = meta();
        let letter = FailureRecord {
            destination: Destination::Tier {
                tier: 0,
                due_at: SystemTime::now(),
            },
            reason: Reason::DeliveryFailed,
            detail: "endpoint answered HTTP 500".into(),
            record: &record,
            meta: Some(&meta),
            delivery: Some(unbound(1, None, None)),
        };
        let stub = stub(&letter, SystemTime::now(), "Broker: Message size too large");
        let p = pairs(&stub);
        let get = |k: &str| p.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
        assert_eq!(get(h::REASON), Some(Reason::RecordTooLarge.as_str()));
        assert_eq!(get(h::SOURCE_OFFSET), Some("41"));
        assert!(get(h::DETAIL).unwrap().contains("events/2/41"));
        assert!(get("trace").is_none(), "original headers are not copied");
        assert!(!is_redrivable(stub.iter().map(|hd| (hd.key, hd.value))));
        let key = record.key.as_deref().expect("the test record has a key");
        assert_eq!(get(h::SOURCE_KEY_BYTES), Some(key.len().to_string().as_str()));
        assert_eq!(get(h::SOURCE_KEY_SHA256).map(str::len), Some(64));
    }

    #[test]
    fn a_stub_stays_small_whatever_the_record_and_its_key() {
        let mut record = source();
        record.key = Some(vec![b'k'; 1_000_000].into());
        record.value = vec![b'v'; 1_000_000].into();
        record.headers.push(crate::event::RecordHeader {
            name: "big".into(),
            value: Some(vec![b'h'; 1_000_000].into()),
        });
        let meta = meta();
        let letter = FailureRecord {
            destination: Destination::DeadLetter,
            reason: Reason::DeliveryFailed,
            detail: "d".repeat(1_000_000),
            record: &record,
            meta: Some(&meta),
            delivery: Some(unbound(1, None, None)),
        };
        let size = |headers: &OwnedHeaders| -> usize {
            headers
                .iter()
                .map(|hd| hd.key.len() + hd.value.map_or(0, <[u8]>::len))
                .sum()
        };
        let stub = stub(&letter, SystemTime::now(), &"r".repeat(1_000_000));
        assert!(size(&stub) < 4096, "{} bytes", size(&stub));
        let unmoved = unmoved_stub(&record, SystemTime::now(), &"r".repeat(1_000_000));
        assert!(size(&unmoved) < 4096, "{} bytes", size(&unmoved));
        assert!(!is_redrivable(unmoved.iter().map(|hd| (hd.key, hd.value))));
    }

    #[test]
    fn records_without_what_herald_wrote_are_refused() {
        let mut record = source();
        assert_eq!(decode(&record, 3).unwrap_err(), InvalidRetryRecord(h::SOURCE_TOPIC));
        record.headers = vec![
            RecordHeader {
                name: h::SOURCE_TOPIC.into(),
                value: Some("events".into()),
            },
            RecordHeader {
                name: h::SOURCE_PARTITION.into(),
                value: Some("0".into()),
            },
            RecordHeader {
                name: h::SOURCE_OFFSET.into(),
                value: Some("1".into()),
            },
            RecordHeader {
                name: h::RETRY_DUE_AT.into(),
                value: Some("soon".into()),
            },
        ];
        assert_eq!(decode(&record, 3).unwrap_err(), InvalidRetryRecord(h::RETRY_DUE_AT));
        assert_eq!(due_at(&record), None);
    }

    /// A tier-1 retry record of webhook `w`, with its headers as `edit` leaves them.
    fn written(edit: impl FnOnce(&mut Vec<RecordHeader>)) -> SourceRecord {
        let record = source();
        let meta = meta();
        let letter = FailureRecord {
            destination: Destination::Tier {
                tier: 1,
                due_at: from_millis(1_700_000_101_000),
            },
            reason: Reason::DeliveryFailed,
            detail: "endpoint answered HTTP 503".into(),
            record: &record,
            meta: Some(&meta),
            delivery: Some(unbound(1, None, None)),
        };
        let mut back = read_back(&record, &encode(&letter, SystemTime::now(), Size::Full), "retry");
        edit(&mut back.headers);
        back
    }

    #[test]
    fn a_retry_record_must_name_its_webhook_s_incarnation_and_a_configured_tier() {
        assert!(decode(&written(|_| {}), 2).is_ok());
        let no_incarnation = written(|hs| hs.retain(|hd| hd.name != h::WEBHOOK_CREATED_AT));
        assert_eq!(
            decode(&no_incarnation, 2).unwrap_err(),
            InvalidRetryRecord(h::WEBHOOK_CREATED_AT),
            "a forged record names no incarnation: it could reach any webhook with that id"
        );
        assert_eq!(
            decode(&written(|_| {}), 1).unwrap_err(),
            InvalidRetryRecord(h::RETRY_TIER),
            "the second tier, where one is configured: no metric series of its own"
        );
    }

    #[test]
    fn a_dead_letter_keeps_the_event_time_its_envelope_gave() {
        let record = source();
        let header_for = |time: Option<&str>| {
            let mut meta = meta();
            meta.event_time = time.map(str::to_owned);
            let letter = FailureRecord {
                destination: Destination::DeadLetter,
                reason: Reason::RetriesExhausted,
                detail: "endpoint answered HTTP 503".into(),
                record: &record,
                meta: Some(&meta),
                delivery: Some(unbound(3, None, None)),
            };
            let back = read_back(&record, &encode(&letter, SystemTime::now(), Size::Full), "dlq");
            back.header(h::EVENT_TIME).map(<[u8]>::to_vec)
        };
        assert_eq!(
            header_for(Some("2026-12-05T10:00:00Z")).as_deref(),
            Some(&b"2026-12-05T10:00:00Z"[..])
        );
        assert_eq!(header_for(None), None, "no time, no header");
    }
}

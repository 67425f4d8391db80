//! One delivery attempt as the history keeps it.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::delivery::target::Target;
use crate::delivery::{text_prefix as truncated, Attempt, ATTEMPT_HEADER, USER_AGENT};
use crate::event::{Event, EventMeta};
use crate::retry::reason::Reason;

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Succeeded,
    Failed,
}

/// One attempt: when, what was sent, what came back.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AttemptRecord {
    /// This attempt's id.
    pub id: String,
    pub webhook_id: String,
    /// The webhook's tenant, whose history this is (the event may have named
    /// another, when it was redriven to this webhook).
    pub tenant: Option<String>,
    /// The delivery's `webhook-id`, the same on every attempt.
    pub delivery_id: String,
    pub event_type: String,
    pub event_id: Option<String>,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The retry tier it came from (1 = first tier), 0 for a first attempt.
    pub tier: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub duration_ms: u64,
    pub outcome: Outcome,
    /// `2xx`, `4xx`, `5xx`, `timeout`, `network`, `blocked`, `saturated`, `rate_limited`...
    pub class: String,
    /// Why it failed, when it did.
    pub error: Option<String>,
    pub request: RequestRecord,
    /// Absent when no response came (timeout, network error...).
    pub response: Option<ResponseRecord>,
    /// Where the event is in Kafka (the source record).
    pub source: SourceRef,
}

/// The request as sent. Values of the webhook's own headers (API keys) are
/// redacted.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RequestRecord {
    /// The destination, its path and query withheld (they may hold a
    /// secret); the webhook document has it whole.
    pub url: String,
    pub headers: BTreeMap<String, String>,
    pub body: String,
    /// The body's full size in bytes.
    pub body_bytes: usize,
    pub body_truncated: bool,
}

/// The response as received.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResponseRecord {
    pub status: u16,
    pub headers: BTreeMap<String, String>,
    /// The start of the body (`delivery.max_response_bytes` at most).
    pub body: Option<String>,
    pub body_truncated: bool,
    /// The headers and body are not kept: the destination is reachable only
    /// through an allowlist (`delivery.allowlisted_response_details`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub withheld: bool,
}

/// The Kafka position of the event.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SourceRef {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// One attempt as the pipeline hands it to the recorder: shared buffers (the
/// body, the target) and a few short strings, cheap to make on the delivery
/// path. The writer turns it into an [`AttemptRecord`] only if it keeps it.
#[derive(Debug, Clone)]
pub struct PendingAttempt {
    /// The attempt record's id, made when it is recorded so that its
    /// delivery's record can name it.
    pub id: String,
    pub target: Arc<Target>,
    pub meta: EventMeta,
    pub body: Bytes,
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    pub attempt: Attempt,
    pub tier: Option<usize>,
}

impl PendingAttempt {
    /// An attempt to record, cheap to make on the delivery path: the record is built later, off it.
    pub fn new(event: &Event, target: &Arc<Target>, attempt: &Attempt, tier: Option<usize>) -> PendingAttempt {
        PendingAttempt {
            id: format!("att_{}", hex::encode(rand::random::<[u8; 10]>())),
            target: target.clone(),
            meta: event.meta.clone(),
            body: event.record.value.clone(),
            topic: event.record.topic.clone(),
            partition: event.record.partition,
            offset: event.record.offset,
            attempt: attempt.clone(),
            tier,
        }
    }

    /// The webhook the attempt was for.
    pub fn webhook_id(&self) -> &str {
        self.target.id()
    }

    /// The bytes it keeps alive: the event's body (shared with the delivery,
    /// held alone once the delivery is done) and the response excerpt.
    pub fn size(&self) -> usize {
        self.body.len() + self.attempt.response_excerpt.as_ref().map_or(0, String::len) + 512
    }

    /// Whether the attempt succeeded.
    pub fn outcome(&self) -> Outcome {
        if self.attempt.succeeded() {
            Outcome::Succeeded
        } else {
            Outcome::Failed
        }
    }
}

impl AttemptBrief {
    /// The brief of a recorded attempt.
    pub fn of(pending: &PendingAttempt) -> AttemptBrief {
        let attempt = &pending.attempt;
        let (status, error) = match &attempt.result {
            Ok(status) => (Some(*status), None),
            Err(failure) => (failure.status(), Some(truncated(failure.describe().as_bytes(), 256).0)),
        };
        AttemptBrief {
            id: pending.id.clone(),
            attempt: attempt.attempt,
            at: attempt.started_at,
            duration_ms: attempt.duration.as_millis() as u64,
            outcome: pending.outcome(),
            class: attempt.class().to_owned(),
            status,
            error,
        }
    }
}

impl AttemptRecord {
    /// Builds the record of an attempt; bodies are cut at `max_body` bytes
    /// (`usize::MAX` keeps them whole).
    pub fn new(pending: &PendingAttempt, max_body: usize) -> AttemptRecord {
        let PendingAttempt {
            target,
            meta,
            body,
            attempt,
            ..
        } = pending;
        let mut headers = BTreeMap::new();
        headers.insert("content-type".to_owned(), meta.content_type.clone());
        headers.insert("user-agent".to_owned(), USER_AGENT.to_owned());
        headers.insert("webhook-id".to_owned(), attempt.delivery_id.clone());
        if let Some((timestamp, signature)) = &attempt.signed {
            headers.insert("webhook-timestamp".to_owned(), timestamp.to_string());
            headers.insert("webhook-signature".to_owned(), signature.clone());
        }
        headers.insert(ATTEMPT_HEADER.to_owned(), attempt.attempt.to_string());
        for name in target.webhook.headers.keys() {
            headers.insert(name.to_ascii_lowercase(), "[redacted]".to_owned());
        }
        for (name, value) in &meta.forward_headers {
            headers.insert(name.to_ascii_lowercase(), value.clone());
        }
        let (body_text, body_truncated) = truncated(body, max_body);
        let (error, status) = match &attempt.result {
            Ok(status) => (None, Some(*status)),
            Err(failure) => (Some(failure.describe()), failure.status()),
        };
        let response = status.map(|status| {
            let (body, body_truncated) = match &attempt.response_excerpt {
                Some(text) => {
                    let (b, t) = truncated(text.as_bytes(), max_body);
                    (Some(b), t)
                }
                None => (None, false),
            };
            ResponseRecord {
                status,
                headers: attempt.response_headers.iter().cloned().collect(),
                body,
                body_truncated,
                withheld: attempt.details_withheld,
            }
        });
        AttemptRecord {
            id: pending.id.clone(),
            webhook_id: target.id().to_owned(),
            tenant: target.webhook.tenant.clone(),
            delivery_id: attempt.delivery_id.clone(),
            event_type: meta.event_type.clone(),
            event_id: meta.event_id.clone(),
            attempt: attempt.attempt,
            tier: pending.tier.map_or(0, |t| t as u32 + 1),
            at: attempt.started_at,
            duration_ms: attempt.duration.as_millis() as u64,
            outcome: pending.outcome(),
            class: attempt.class().to_owned(),
            error,
            request: RequestRecord {
                url: crate::delivery::redact_url(&target.url),
                headers,
                body: body_text,
                body_bytes: body.len(),
                body_truncated,
            },
            response,
            source: SourceRef {
                topic: pending.topic.to_string(),
                partition: pending.partition,
                offset: pending.offset,
            },
        }
    }

    /// This record with bodies cut at `max` bytes; whether one was.
    pub fn truncate_bodies(&mut self, max: usize) -> bool {
        let mut cut = false;
        if self.request.body.len() > max {
            let (b, _) = truncated(self.request.body.as_bytes(), max);
            self.request.body = b;
            self.request.body_truncated = true;
            cut = true;
        }
        if let Some(response) = &mut self.response {
            if let Some(body) = &response.body {
                if body.len() > max {
                    response.body = Some(truncated(body.as_bytes(), max).0);
                    response.body_truncated = true;
                    cut = true;
                }
            }
        }
        cut
    }
}

/// Where a delivery (one event to one webhook) stands after its latest step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// An attempt succeeded.
    Delivered,
    /// An attempt failed; it waits in a retry tier (`next_attempt_at`).
    PendingRetry,
    /// It failed for good, or was refused: in the dead-letter topic
    /// (`reason`), for a replay.
    DeadLettered,
    /// Not attempted: the webhook was paused or disabled; kept in the
    /// dead-letter topic (`reason`) for a replay on resume.
    Kept,
}

/// What became of a delivery at one step, as the pipeline decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub status: DeliveryStatus,
    /// The dead-letter reason, for `dead_lettered` and `kept`.
    pub reason: Option<Reason>,
    /// When it is due again, for `pending_retry`.
    pub next_attempt_at: Option<OffsetDateTime>,
    /// The retry tier it waits in (1 = the first), for `pending_retry`.
    pub tier: Option<u32>,
}

impl Step {
    /// Delivered.
    pub fn delivered() -> Step {
        Step {
            status: DeliveryStatus::Delivered,
            reason: None,
            next_attempt_at: None,
            tier: None,
        }
    }

    /// Waiting in tier `tier` (0-based) until `due_at`.
    pub fn retry(tier: usize, due_at: std::time::SystemTime) -> Step {
        Step {
            status: DeliveryStatus::PendingRetry,
            reason: None,
            next_attempt_at: Some(OffsetDateTime::from(due_at)),
            tier: Some(tier as u32 + 1),
        }
    }

    /// In the dead-letter topic (`status` dead-lettered or kept) for `reason`.
    pub fn dead_letter(status: DeliveryStatus, reason: Reason) -> Step {
        Step {
            status,
            reason: Some(reason),
            next_attempt_at: None,
            tier: None,
        }
    }
}

/// One attempt as a delivery's history lists it; the whole record (request
/// and response) is at `GET .../deliveries/{id}` while the webhook's newest
/// attempts keep it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AttemptBrief {
    /// The attempt's id (its whole record's).
    pub id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub duration_ms: u64,
    pub outcome: Outcome,
    /// `2xx`, `4xx`, `5xx`, `timeout`, `network`, `blocked`, `saturated`, `rate_limited`...
    pub class: String,
    /// The response's status, when one came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why it failed, when it did (at most 256 bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One delivery: an event to one webhook, where it stands and its attempts.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct DeliveryRecord {
    /// The delivery's `webhook-id`, the same on every attempt.
    pub delivery_id: String,
    pub event_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    pub status: DeliveryStatus,
    /// Its dead-letter reason, when `dead_lettered` or `kept`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When its next attempt is due, when `pending_retry`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub next_attempt_at: Option<OffsetDateTime>,
    /// The retry tier it waits in (1 = the first), when `pending_retry`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<u32>,
    /// When Herald first recorded it.
    #[serde(with = "time::serde::rfc3339")]
    pub first_at: OffsetDateTime,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Its attempts, oldest first (the newest `MAX_ATTEMPTS_KEPT`).
    #[serde(default, deserialize_with = "list_or_empty_object")]
    pub attempts: Vec<AttemptBrief>,
}

/// Attempts a delivery's record lists at most (the newest).
pub const MAX_ATTEMPTS_KEPT: usize = 20;

/// A list, or `{}` (what Redis's Lua JSON writes for an empty one).
fn list_or_empty_object<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<AttemptBrief>, D::Error> {
    use serde::de::Error;
    match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::Array(items) => items
            .into_iter()
            .map(|item| serde_json::from_value(item).map_err(D::Error::custom))
            .collect(),
        serde_json::Value::Object(map) if map.is_empty() => Ok(Vec::new()),
        serde_json::Value::Null => Ok(Vec::new()),
        other => Err(D::Error::custom(format!("attempts: expected a list, got {other}"))),
    }
}

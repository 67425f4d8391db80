//! The pipeline: one record in, every delivery it causes finished.
//!
//! For a source record: recognise the envelope (or dead-letter it with the
//! reason), route it through the in-memory index, and deliver it to every
//! subscribed webhook concurrently. For a record from a retry tier: decode
//! what it carries and deliver it again to its webhook, as it is now. Either
//! way a delivery that does not succeed moves to the next retry tier, or to
//! the dead-letter topic when none is left. Only when all of that is
//! acknowledged is the record's completion finished, which is what lets
//! intake commit its offset: at-least-once, nothing lost, nothing silent.

use std::sync::Arc;
use std::time::SystemTime;

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::delivery::target::Target;
use crate::delivery::{delivery_id, Deliverer, Failure};
use crate::event::{Event, SourceRecord};
use crate::intake::flow::Completion;
use crate::intake::Dispatch;
use crate::retry::lifecycle::Lifecycle;
use crate::retry::record::RetryState;
use crate::retry::schedule::{parse_retry_after, Schedule};
use crate::retry::sink::{reasons, Abandoned, DeliveryContext, Destination, FailureRecord, FailureSink};
use crate::routing::envelope::Envelopes;
use crate::subscriptions::model::WebhookStatus;
use crate::subscriptions::sync::SubscriptionIndex;
use crate::telemetry::Telemetry;

/// The parts the pipeline wires together.
pub struct Pipeline {
    pub envelopes: Envelopes,
    pub index: Arc<SubscriptionIndex>,
    pub deliverer: Deliverer,
    pub failures: FailureSink,
    pub schedule: Schedule,
    /// Disables webhooks whose endpoint is gone (absent in tools that only deliver).
    pub lifecycle: Option<Arc<Lifecycle>>,
    /// Records every attempt for the delivery history and statistics.
    pub history: Option<Arc<crate::history::Recorder>>,
    pub telemetry: Telemetry,
    /// Cancelled when shutdown's drain deadline has passed: unfinished work is
    /// abandoned (left uncommitted), never reported as done.
    pub abort: CancellationToken,
}

/// Dispatches source records onto the runtime, one task per event.
pub struct Spawner(pub Arc<Pipeline>);

impl Dispatch for Spawner {
    fn dispatch(&self, record: SourceRecord, done: Completion) {
        let pipeline = self.0.clone();
        tokio::spawn(async move {
            let result = pipeline.process_source(record).await;
            pipeline.finish(result, done);
        });
    }
}

/// Dispatches due retry records onto the runtime.
pub struct RetrySpawner(pub Arc<Pipeline>);

impl Dispatch for RetrySpawner {
    fn dispatch(&self, record: SourceRecord, done: Completion) {
        let pipeline = self.0.clone();
        tokio::spawn(async move {
            let result = pipeline.process_retry(record).await;
            pipeline.finish(result, done);
        });
    }
}

/// One delivery to make.
struct Job<'a> {
    event: &'a Event,
    target: Arc<Target>,
    delivery_id: String,
    /// Attempts already made.
    attempts: u32,
    first_attempt_at: Option<OffsetDateTime>,
    history: Option<&'a str>,
    /// The tier this attempt comes from (`None` for the first attempt).
    tier: Option<usize>,
}

impl Pipeline {
    fn finish(&self, result: Result<(), Abandoned>, done: Completion) {
        if result.is_ok() {
            done.finish();
            self.telemetry.event_completed();
        } else {
            done.abandon();
            self.telemetry.event_abandoned();
        }
    }

    /// A record from a source topic: route it and deliver to every subscriber.
    pub async fn process_source(&self, record: SourceRecord) -> Result<(), Abandoned> {
        let meta = match self.envelopes.for_topic(&record.topic).recognise(&record) {
            Ok(meta) => meta,
            Err(why) => {
                self.telemetry.event_unroutable(&record, &why);
                return self.dead_letter(why.reason.as_str(), why.detail, &record).await;
            }
        };
        let targets = self.index.load().route(meta.tenant.as_deref(), &meta.event_type);
        if targets.is_empty() {
            self.telemetry.event_unmatched(&record, &meta.event_type);
            return Ok(());
        }
        let event = Event { record, meta };
        let jobs = targets.into_iter().map(|target| Job {
            delivery_id: delivery_id(&event, target.id()),
            event: &event,
            target,
            attempts: 0,
            first_attempt_at: None,
            history: None,
            tier: None,
        });
        let results = futures::future::join_all(jobs.map(|job| self.run(job))).await;
        results.into_iter().collect()
    }

    /// A due record from a retry tier: deliver it again to its webhook.
    pub async fn process_retry(&self, record: SourceRecord) -> Result<(), Abandoned> {
        let state = match RetryState::decode(&record) {
            Ok(state) => state,
            Err(e) => {
                self.telemetry.retry_record_invalid(&record, &e);
                return self
                    .dead_letter(reasons::INVALID_RETRY_RECORD, e.to_string(), &record)
                    .await;
            }
        };
        let late = SystemTime::now().duration_since(state.due_at).unwrap_or_default();
        self.telemetry.retry_taken_up(state.tier, late);
        let meta = match self
            .envelopes
            .for_topic(&state.original.topic)
            .recognise(&state.original)
        {
            Ok(meta) => meta,
            Err(why) => {
                self.telemetry.event_unroutable(&state.original, &why);
                return self.dead_letter(why.reason.as_str(), why.detail, &state.original).await;
            }
        };
        let event = Event {
            record: state.original,
            meta,
        };
        // The webhook as it is now: a new URL, secret or status is honoured.
        let Some(target) = self.index.load().get(&state.webhook_id) else {
            self.telemetry.delivery_not_attempted(&state.webhook_id, "deleted");
            let letter = FailureRecord {
                destination: Destination::DeadLetter,
                reason: reasons::WEBHOOK_DELETED,
                detail: "the webhook was deleted before its retry was due".into(),
                record: &event.record,
                meta: Some(&event.meta),
                delivery: Some(DeliveryContext {
                    webhook_id: &state.webhook_id,
                    delivery_id: &state.delivery_id,
                    attempts: state.attempt,
                    last_attempt: None,
                    first_attempt_at: state.first_attempt_at,
                    previous_history: state.history.as_deref(),
                }),
            };
            return self.failures.send(letter, &self.abort).await;
        };
        self.run(Job {
            event: &event,
            target,
            delivery_id: state.delivery_id.clone(),
            attempts: state.attempt,
            first_attempt_at: state.first_attempt_at,
            history: state.history.as_deref(),
            tier: Some(state.tier),
        })
        .await
    }

    async fn dead_letter(&self, reason: &str, detail: String, record: &SourceRecord) -> Result<(), Abandoned> {
        let letter = FailureRecord {
            destination: Destination::DeadLetter,
            reason,
            detail,
            record,
            meta: None,
            delivery: None,
        };
        self.failures.send(letter, &self.abort).await
    }

    /// One event to one webhook: delivered, or handed to the next tier or the
    /// dead-letter topic with the broker's acknowledgement.
    async fn run(&self, job: Job<'_>) -> Result<(), Abandoned> {
        let Job {
            event,
            target,
            delivery_id,
            attempts,
            first_attempt_at,
            history,
            tier,
        } = job;
        let context = |last_attempt, first_attempt_at| DeliveryContext {
            webhook_id: target.id(),
            delivery_id: &delivery_id,
            attempts,
            last_attempt,
            first_attempt_at,
            previous_history: history,
        };
        if target.webhook.status != WebhookStatus::Active {
            let status = target.webhook.status.as_str();
            self.telemetry.delivery_not_attempted(target.id(), status);
            let reason = if target.webhook.status == WebhookStatus::Paused {
                reasons::WEBHOOK_PAUSED
            } else {
                reasons::WEBHOOK_DISABLED
            };
            let letter = FailureRecord {
                destination: Destination::DeadLetter,
                reason,
                detail: format!("webhook is {status}; delivery kept for replay"),
                record: &event.record,
                meta: Some(&event.meta),
                delivery: Some(context(None, first_attempt_at)),
            };
            return self.failures.send(letter, &self.abort).await;
        }

        self.telemetry.delivery_started();
        let attempt = tokio::select! {
            attempt = self.deliverer.deliver(event, &target, delivery_id.clone(), attempts + 1) => attempt,
            _ = self.abort.cancelled() => return Err(Abandoned),
        };
        self.telemetry
            .delivery_finished(target.id(), &event.meta.event_type, tier, &attempt);
        if let Some(history) = &self.history {
            history.record(event, &target, &attempt, tier);
        }
        let Err(failure) = &attempt.result else {
            if let Some(lifecycle) = &self.lifecycle {
                lifecycle.delivery_succeeded(&target);
            }
            return Ok(());
        };
        if let Some(lifecycle) = &self.lifecycle {
            lifecycle.delivery_failed(&target, failure).await;
        }

        let next = self.schedule.next_tier(tier);
        let gone = failure.status() == Some(410);
        if gone {
            self.endpoint_gone(&target).await;
        }
        let (destination, reason) = match next {
            // 410 Gone: the endpoint said it will never accept this again.
            _ if gone => (Destination::DeadLetter, reasons::ENDPOINT_GONE),
            Some(next) => {
                let delay = self.schedule.delay(next, retry_after(failure), &mut rand::rng());
                let due_at = SystemTime::now() + delay;
                (Destination::Retry { tier: next, due_at }, reasons::DELIVERY_FAILED)
            }
            None if self.schedule.tiers.is_empty() => (Destination::DeadLetter, reasons::DELIVERY_FAILED),
            None => (Destination::DeadLetter, reasons::RETRIES_EXHAUSTED),
        };
        let first = first_attempt_at.unwrap_or(attempt.started_at);
        let letter = FailureRecord {
            destination,
            reason,
            detail: failure.describe(),
            record: &event.record,
            meta: Some(&event.meta),
            delivery: Some(DeliveryContext {
                attempts: attempts + 1,
                ..context(Some(&attempt), Some(first))
            }),
        };
        self.failures.send(letter, &self.abort).await
    }
}

impl Pipeline {
    /// Disables a webhook whose endpoint answered 410 Gone. A failure to do so
    /// is reported; the next 410 tries again.
    async fn endpoint_gone(&self, target: &Target) {
        let Some(lifecycle) = &self.lifecycle else { return };
        let reason = format!(
            "endpoint answered 410 Gone at {}",
            OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        );
        if let Err(e) = lifecycle.disable(target.id(), "gone", "webhook.disabled", reason).await {
            self.telemetry.lifecycle_error(target.id(), &e);
        }
    }
}

/// The endpoint's `Retry-After`, honoured on 429 and 503.
fn retry_after(failure: &Failure) -> Option<std::time::Duration> {
    match failure {
        Failure::Status {
            status: 429 | 503,
            retry_after: Some(value),
        } => parse_retry_after(value, SystemTime::now()),
        _ => None,
    }
}

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
use crate::delivery::{delivery_id, Deliverer};
use crate::event::{Event, SourceRecord};
use crate::history::record::{DeliveryStatus, Step};
use crate::intake::flow::Completion;
use crate::intake::Dispatch;
use crate::retry::codec::{self, Binding, DeliveryContext, Destination, FailureRecord, RetryState};
use crate::retry::policy::{retried_pending, AfterFailure, Kept, Policy};
use crate::retry::reason::{Class, Reason};
use crate::retry::sink::{Abandoned, FailureSink};
use crate::retry::wait::WaitTopics;
use crate::routing::envelope::Envelopes;
use crate::subscriptions::lifecycle::Lifecycle;
use crate::subscriptions::sync::SubscriptionIndex;
use crate::telemetry::{RetryFrom, Telemetry};

/// The parts the pipeline wires together.
pub struct Pipeline {
    pub envelopes: Envelopes,
    pub index: Arc<SubscriptionIndex>,
    pub deliverer: Arc<Deliverer>,
    pub failures: FailureSink,
    pub policy: Policy,
    pub waits: WaitTopics,
    /// Disables webhooks whose endpoint is gone (absent in tools that only deliver).
    pub lifecycle: Option<Arc<Lifecycle>>,
    /// Records every attempt for the delivery history and statistics.
    pub history: Option<Arc<crate::history::Recorder>>,
    pub telemetry: Telemetry,
    /// Cancelled when shutdown's drain deadline has passed: unfinished work is
    /// abandoned (left uncommitted), never reported as done.
    pub abort: CancellationToken,
}

/// What the source consumer hands its records to: each goes through the
/// pipeline in a task of its own.
pub struct SourceDispatch(pub Arc<Pipeline>);

impl Dispatch for SourceDispatch {
    fn dispatch(&self, record: SourceRecord, done: Completion) {
        let pipeline = self.0.clone();
        tokio::spawn(async move {
            let result = pipeline.process_source(record).await;
            pipeline.finish(result, done);
        });
    }
}

/// What the retry consumer hands its due records to (each through the
/// pipeline in a task of its own), and the ones held out of order (moved to
/// the end of a wait topic).
pub struct RetryDispatch(pub Arc<Pipeline>);

impl Dispatch for RetryDispatch {
    fn dispatch(&self, record: SourceRecord, done: Completion) {
        let pipeline = self.0.clone();
        tokio::spawn(async move {
            let result = pipeline.process_retry(record).await;
            pipeline.finish(result, done);
        });
    }

    fn requeue(&self, record: SourceRecord, done: Completion) {
        let pipeline = self.0.clone();
        tokio::spawn(async move {
            let result = pipeline.requeue(record).await;
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
    /// The tier this attempt comes from (`None` for a first attempt or a redrive).
    tier: Option<usize>,
    /// Where a retried attempt was read from.
    from: Option<RetryFrom>,
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
                return self.dead_letter(why.reason.into(), why.detail, &record).await;
            }
        };
        // The consumers join their group while the index loads; a record
        // taken meanwhile waits for it (an atomic load once it has loaded),
        // and the flow's limits pause its partition as records queue up.
        self.index.wait_loaded().await;
        let targets = self.index.route(meta.tenant.as_deref(), &meta.event_type);
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
            from: None,
        });
        let results = futures::future::join_all(jobs.map(|job| self.run(job))).await;
        results.into_iter().collect()
    }

    /// A due record from a wait topic: deliver it again to its webhook, as
    /// it is now, if it is still the webhook the delivery was routed to.
    pub async fn process_retry(&self, record: SourceRecord) -> Result<(), Abandoned> {
        let state = match codec::decode(&record, self.policy.schedule.tiers.len()) {
            Ok(state) => state,
            Err(e) => {
                self.telemetry.retry_record_invalid(&record, &e);
                return self
                    .dead_letter(Reason::InvalidRetryRecord, e.to_string(), &record)
                    .await;
            }
        };
        let now = SystemTime::now();
        let from = state.tier.map_or(RetryFrom::Redrive, RetryFrom::Tier);
        let meta = match self
            .envelopes
            .for_topic(&state.original.topic)
            .recognise(&state.original)
        {
            Ok(meta) => meta,
            Err(why) => {
                self.telemetry.event_unroutable(&state.original, &why);
                return self.dead_letter(why.reason.into(), why.detail, &state.original).await;
            }
        };
        let event = Event {
            record: state.original.clone(),
            meta,
        };
        // Crafted, or written by a replica whose clock is far ahead: never held for years.
        if let Err(e) = self.waits.check_range(&record.topic, state.due_at, now) {
            self.telemetry.retry_record_invalid(&record, &e);
            let kept = Kept {
                reason: Reason::InvalidRetryRecord,
                detail: e.to_string(),
                status: "invalid",
            };
            return self.keep(&event, kept, &state, state.binding()).await;
        }
        let late = now.duration_since(state.due_at).unwrap_or_default();
        self.telemetry.retry_taken_up(from, late);
        self.index.wait_loaded().await;
        let found = self.index.get(&state.webhook_id);
        if let Err(kept) = Policy::same_webhook(found.as_deref(), &state.binding(), &event.meta) {
            return self.keep(&event, kept, &state, state.binding()).await;
        }
        let target = found.expect("same_webhook found it");
        if let Some(cut) = retried_pending(
            &target.webhook.retried_pending,
            state.tier,
            state.last_attempt_at,
            state.due_at,
        ) {
            // Re-driven by retry pending: that copy is the one delivered.
            self.telemetry
                .retry_finished(&state.webhook_id, &state.delivery_id, cut);
            return Ok(());
        }
        self.run(Job {
            event: &event,
            target,
            delivery_id: state.delivery_id.clone(),
            attempts: state.attempt,
            first_attempt_at: state.first_attempt_at,
            history: state.history.as_deref(),
            tier: state.tier,
            from: Some(from),
        })
        .await
    }

    /// A retry held out of order is moved to the end of the wait topic
    /// where it is in order for what it has left to wait (or the redrive topic).
    pub async fn requeue(&self, record: SourceRecord) -> Result<(), Abandoned> {
        let wait = codec::due_at(&record)
            .and_then(|due| due.duration_since(SystemTime::now()).ok())
            .unwrap_or_default();
        let topic = self.waits.for_wait(wait).topic.clone();
        self.failures.requeue(&record, &topic, &self.abort).await
    }

    /// Keeps a retry's delivery in the dead-letter topic without an attempt.
    async fn keep(&self, event: &Event, kept: Kept, state: &RetryState, binding: Binding<'_>) -> Result<(), Abandoned> {
        let delivery = DeliveryContext {
            binding,
            delivery_id: &state.delivery_id,
            attempts: state.attempt,
            last_attempt: None,
            first_attempt_at: state.first_attempt_at,
            previous_history: state.history.as_deref(),
            tier: state.tier,
        };
        self.send_kept(event, kept, delivery).await
    }

    /// Dead-letters a delivery that is not attempted, with why.
    async fn send_kept(&self, event: &Event, kept: Kept, delivery: DeliveryContext<'_>) -> Result<(), Abandoned> {
        self.telemetry.delivery_not_attempted(
            delivery.binding.webhook_id,
            delivery.binding.tenant,
            kept.status,
            &kept.detail,
        );
        let letter = FailureRecord {
            destination: Destination::DeadLetter,
            reason: kept.reason,
            detail: kept.detail,
            record: &event.record,
            meta: Some(&event.meta),
            delivery: Some(delivery),
        };
        self.failures.send(letter, &self.abort).await
    }

    async fn dead_letter(&self, reason: Reason, detail: String, record: &SourceRecord) -> Result<(), Abandoned> {
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
            from,
        } = job;
        let context = |attempts, last_attempt, first_attempt_at| DeliveryContext {
            binding: Binding::of(&target.webhook),
            delivery_id: &delivery_id,
            attempts,
            last_attempt,
            first_attempt_at,
            previous_history: history,
            tier,
        };
        if let Err(kept) = Policy::accepts(&target) {
            if let Some(history) = &self.history {
                let status = match kept.reason.class() {
                    Class::Kept => DeliveryStatus::Kept,
                    _ => DeliveryStatus::DeadLettered,
                };
                history.record_kept(event, &target, &delivery_id, Step::dead_letter(status, kept.reason));
            }
            return self
                .send_kept(event, kept, context(attempts, None, first_attempt_at))
                .await;
        }

        self.telemetry.delivery_started();
        let attempt = tokio::select! {
            attempt = self.deliverer.deliver(event, &target, delivery_id.clone(), attempts + 1) => attempt,
            _ = self.abort.cancelled() => return Err(Abandoned),
        };
        let tenant = self
            .telemetry
            .tenant(&target.tenant_series, target.webhook.tenant.as_deref());
        self.telemetry
            .delivery_finished(target.id(), tenant, &event.meta.event_type, from, &attempt);
        let Err(failure) = &attempt.result else {
            if let Some(history) = &self.history {
                history.record(event, &target, &attempt, tier, Step::delivered());
            }
            if let Some(lifecycle) = &self.lifecycle {
                lifecycle.delivery_succeeded(&target);
            }
            return Ok(());
        };
        if let Some(lifecycle) = &self.lifecycle {
            lifecycle.delivery_failed(&target, failure).await;
        }
        let decision = self.policy.after_failure(
            failure,
            target.webhook.limits.final_statuses.as_deref(),
            tier,
            SystemTime::now(),
            &mut rand::rng(),
        );
        let (destination, reason, step) = match decision {
            AfterFailure::Retry { tier, due_at } => (
                Destination::Tier { tier, due_at },
                Reason::DeliveryFailed,
                Step::retry(tier, due_at),
            ),
            AfterFailure::DeadLetter { reason, disable } => {
                if disable {
                    self.endpoint_gone(&target).await;
                }
                (
                    Destination::DeadLetter,
                    reason,
                    Step::dead_letter(DeliveryStatus::DeadLettered, reason),
                )
            }
        };
        if let Some(history) = &self.history {
            history.record(event, &target, &attempt, tier, step);
        }
        let first = first_attempt_at.unwrap_or(attempt.started_at);
        let letter = FailureRecord {
            destination,
            reason,
            detail: failure.describe(),
            record: &event.record,
            meta: Some(&event.meta),
            delivery: Some(context(attempts + 1, Some(&attempt), Some(first))),
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
        if let Err(e) = lifecycle.disable(target.id(), "gone", "disabled", reason).await {
            self.telemetry.lifecycle_error(target.id(), &e);
        }
    }
}

//! The pipeline: one record in, every delivery it causes finished.
//!
//! For each record: recognise the envelope (or dead-letter it with the
//! reason), route it through the in-memory index, deliver it to every
//! subscribed webhook concurrently, and dead-letter each delivery that did not
//! succeed. Only when all of that is acknowledged is the record's completion
//! finished, which is what lets intake commit its offset: at-least-once, with
//! nothing lost and nothing silent.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::delivery::target::Target;
use crate::delivery::{delivery_id, Deliverer};
use crate::event::{Event, SourceRecord};
use crate::intake::flow::Completion;
use crate::intake::Dispatch;
use crate::retry::dead_letter::{reasons, Abandoned, DeadLetter, DeadLetterSink, DeliveryContext};
use crate::routing::envelope::Envelopes;
use crate::subscriptions::model::WebhookStatus;
use crate::subscriptions::sync::SubscriptionIndex;
use crate::telemetry::Telemetry;

/// The parts the pipeline wires together.
pub struct Pipeline {
    pub envelopes: Envelopes,
    pub index: Arc<SubscriptionIndex>,
    pub deliverer: Deliverer,
    pub dead_letters: DeadLetterSink,
    pub telemetry: Telemetry,
    /// Cancelled when shutdown's drain deadline has passed: unfinished work is
    /// abandoned (left uncommitted), never reported as done.
    pub abort: CancellationToken,
}

/// Dispatches records onto the runtime, one task per event.
pub struct Spawner(pub Arc<Pipeline>);

impl Dispatch for Spawner {
    fn dispatch(&self, record: SourceRecord, done: Completion) {
        let pipeline = self.0.clone();
        tokio::spawn(async move { pipeline.process(record, done).await });
    }
}

impl Pipeline {
    /// Processes one record to the end; finishes `done` only when every
    /// delivery succeeded or was dead-lettered with the broker's ack.
    pub async fn process(&self, record: SourceRecord, done: Completion) {
        let finished = self.process_record(record).await.is_ok();
        if finished {
            done.finish();
            self.telemetry.event_completed();
        } else {
            done.abandon();
            self.telemetry.event_abandoned();
        }
    }

    async fn process_record(&self, record: SourceRecord) -> Result<(), Abandoned> {
        let meta = match self.envelopes.for_topic(&record.topic).recognise(&record) {
            Ok(meta) => meta,
            Err(why) => {
                self.telemetry.event_unroutable(&record, &why);
                let letter = DeadLetter {
                    reason: why.reason.as_str(),
                    detail: why.detail,
                    record: &record,
                    meta: None,
                    delivery: None,
                };
                return self.dead_letters.send(letter, &self.abort).await;
            }
        };
        let targets = self.index.load().route(meta.tenant.as_deref(), &meta.event_type);
        if targets.is_empty() {
            self.telemetry.event_unmatched(&record, &meta.event_type);
            return Ok(());
        }
        let event = Event { record, meta };
        let results = futures::future::join_all(targets.into_iter().map(|t| self.deliver(&event, t))).await;
        results.into_iter().collect()
    }

    /// One event to one webhook: delivered, or kept in the dead-letter topic.
    async fn deliver(&self, event: &Event, target: Arc<Target>) -> Result<(), Abandoned> {
        let id = delivery_id(event, target.id());
        if target.webhook.status != WebhookStatus::Active {
            let status = target.webhook.status.as_str();
            self.telemetry.delivery_not_attempted(target.id(), status);
            let reason = if target.webhook.status == WebhookStatus::Paused {
                reasons::WEBHOOK_PAUSED
            } else {
                reasons::WEBHOOK_DISABLED
            };
            let letter = DeadLetter {
                reason,
                detail: format!("webhook is {status}; delivery kept for replay"),
                record: &event.record,
                meta: Some(&event.meta),
                delivery: Some(DeliveryContext {
                    webhook_id: target.id(),
                    delivery_id: &id,
                    last_attempt: None,
                    first_attempt_at: None,
                }),
            };
            return self.dead_letters.send(letter, &self.abort).await;
        }
        self.telemetry.delivery_started();
        let attempt = tokio::select! {
            attempt = self.deliverer.deliver(event, &target, id.clone(), 1) => attempt,
            _ = self.abort.cancelled() => return Err(Abandoned),
        };
        self.telemetry
            .delivery_finished(target.id(), &event.meta.event_type, &attempt);
        let Err(failure) = &attempt.result else {
            return Ok(());
        };
        let letter = DeadLetter {
            reason: reasons::DELIVERY_FAILED,
            detail: failure.describe(),
            record: &event.record,
            meta: Some(&event.meta),
            delivery: Some(DeliveryContext {
                webhook_id: target.id(),
                delivery_id: &id,
                last_attempt: Some(&attempt),
                first_attempt_at: Some(attempt.started_at),
            }),
        };
        self.dead_letters.send(letter, &self.abort).await
    }
}

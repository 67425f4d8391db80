//! The whole path of a delivery that did not succeed, in one place.
//!
//! The pipeline routes and delivers; whatever does not end in a 2xx comes
//! here with its event, its webhook and its attempt: [`Failures`] asks the
//! [`policy`](crate::retry::policy) where it goes, disables a webhook whose
//! endpoint is gone, counts the failure in the webhook's auto-disable streak,
//! records the step in the delivery history, writes the retry or dead-letter
//! record through the [`sink`](crate::retry::sink) and returns once the broker
//! has acknowledged it: only then may the source offset be committed.
//! Deliveries kept without an attempt (a paused or disabled webhook, a retry
//! whose webhook changed) and records that cannot be routed end here too, as
//! do retries moved to the end of a wait topic.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::config::waits::WaitTopics;
use crate::delivery::target::Target;
use crate::delivery::{Attempt, Failure};
use crate::event::{Event, SourceRecord};
use crate::intake::flow::Tp;
use crate::retry::codec::{self, Binding, DeliveryContext, Destination, FailureRecord, RetryState};
use crate::retry::ordering::Ordered;
use crate::retry::policy::{AfterFailure, Kept, Policy};
use crate::retry::reason::Reason;
use crate::retry::sink::{Abandoned, FailureSink};
use crate::routing::ordering::OrderKey;
use crate::subscriptions::lifecycle::Lifecycle;
use crate::telemetry::Telemetry;

/// Where what became of each delivery is recorded: the delivery history
/// (its recorder implements this). Recording never waits.
pub trait Journal: Send + Sync {
    /// An attempt from tier `tier` failed, and its delivery went where `went` says.
    fn failed(&self, event: &Event, target: &Arc<Target>, attempt: &Attempt, tier: Option<usize>, went: AfterFailure);
    /// A delivery was kept (dead-lettered) without an attempt, for `reason`.
    fn kept(&self, event: &Event, target: &Target, delivery_id: &str, reason: Reason);
}

/// One delivery of an event to a webhook, as far as it has come.
pub struct Delivery<'a> {
    pub event: &'a Event,
    pub target: Arc<Target>,
    pub delivery_id: String,
    /// Attempts already made.
    pub attempts: u32,
    pub first_attempt_at: Option<OffsetDateTime>,
    /// The history carried by the retry record it came from.
    pub history: Option<&'a str>,
    /// The tier this attempt comes from (`None` for a first attempt or a redrive).
    pub tier: Option<usize>,
    /// Its key's place, when its webhook orders deliveries by key.
    pub ordering: Option<OrderSlot>,
}

/// An ordered delivery's key, and whether it is in the key's queue
/// (`retry::ordering`).
#[derive(Debug, Clone)]
pub struct OrderSlot {
    pub key: OrderKey,
    /// The event's source partition and offset: its place in the queue.
    pub source: Tp,
    pub offset: i64,
    /// In the queue (its head), so to be taken out once finished.
    pub queued: bool,
}

/// What a dead letter of an ordered delivery adds to its detail.
const OVERTAKEN: &str = " (ordered by key: later events of its key are delivered without it)";

impl Delivery<'_> {
    fn context<'a>(
        &'a self,
        attempts: u32,
        last_attempt: Option<&'a Attempt>,
        first_attempt_at: Option<OffsetDateTime>,
    ) -> DeliveryContext<'a> {
        DeliveryContext {
            binding: Binding::of(&self.target.webhook),
            delivery_id: &self.delivery_id,
            attempts,
            last_attempt,
            first_attempt_at,
            previous_history: self.history,
            tier: self.tier,
            ordering: self.ordering.as_ref().map(|slot| &slot.key),
        }
    }
}

/// Carries out what the policy decides for deliveries that do not succeed.
pub struct Failures {
    pub sink: FailureSink,
    pub policy: Policy,
    pub waits: WaitTopics,
    /// Disables webhooks whose endpoint is gone or keeps failing (absent in
    /// tools that only deliver).
    pub lifecycle: Option<Arc<Lifecycle>>,
    /// Records each step in the delivery history.
    pub journal: Option<Arc<dyn Journal>>,
    /// The queues of ordered keys (absent in tools that only deliver).
    pub ordering: Option<Arc<Ordered>>,
    pub telemetry: Telemetry,
    /// Cancelled when shutdown's drain deadline has passed: a record not yet
    /// acknowledged is abandoned (its offset left uncommitted).
    pub abort: CancellationToken,
}

impl Failures {
    /// A failed attempt of `delivery`: decides where it goes, disables the
    /// webhook on 410 Gone, counts the failure in the webhook's streak,
    /// records the step and writes the retry or dead-letter record; returns
    /// what was decided once the broker has acknowledged the record.
    pub async fn after_failure(
        &self,
        delivery: &Delivery<'_>,
        attempt: &Attempt,
        failure: &Failure,
    ) -> Result<AfterFailure, Abandoned> {
        let target = &delivery.target;
        if let Some(lifecycle) = &self.lifecycle {
            // Counted off this path: the record below never waits for Redis.
            lifecycle.delivery_failed(target, failure);
        }
        let decision = self.policy.after_failure(
            failure,
            target.webhook.limits.final_statuses.as_deref(),
            delivery.tier,
            SystemTime::now(),
            &mut rand::rng(),
        );
        let (destination, reason) = match decision {
            AfterFailure::Retry { tier, due_at } | AfterFailure::Defer { tier, due_at } => {
                (Destination::Tier { tier, due_at }, Reason::DeliveryFailed)
            }
            AfterFailure::DeadLetter { reason, disable } => {
                if disable {
                    // Awaited (it is rare): once its dead letter is written,
                    // the webhook's later deliveries are kept, not attempted.
                    if let Some(lifecycle) = &self.lifecycle {
                        lifecycle.endpoint_gone(target).await;
                    }
                }
                (Destination::DeadLetter, reason)
            }
        };
        if let (Some(slot), Some(ordered)) = (&delivery.ordering, &self.ordering) {
            if let Destination::Tier { due_at, .. } = destination {
                // The key waits for it from before its retry record exists:
                // a crash in between leaves the source record uncommitted,
                // and read again it is found to be the head.
                ordered.block(&slot.key, &slot.source, slot.offset, due_at).await?;
            }
        }
        if let Some(journal) = &self.journal {
            journal.failed(delivery.event, target, attempt, delivery.tier, decision);
        }
        // A delivery deferred for want of a request slot was not sent: it
        // keeps its attempt count and its first attempt's time.
        let (made, first) = match decision {
            AfterFailure::Defer { .. } => (delivery.attempts, delivery.first_attempt_at),
            _ => (
                delivery.attempts + 1,
                Some(delivery.first_attempt_at.unwrap_or(attempt.started_at)),
            ),
        };
        let mut detail = failure.describe();
        if delivery.ordering.is_some() && destination == Destination::DeadLetter {
            detail.push_str(OVERTAKEN);
        }
        let letter = FailureRecord {
            destination,
            reason,
            detail,
            record: &delivery.event.record,
            meta: Some(&delivery.event.meta),
            delivery: Some(delivery.context(made, Some(attempt), first)),
        };
        self.sink.send(letter, &self.abort).await?;
        Ok(decision)
    }

    /// An ordered delivery not attempted because an earlier delivery of its
    /// key waits in a tier: written to the wait topic of `head_due` (the
    /// head's due time), its attempts unchanged, once in its key's queue.
    pub async fn park(&self, delivery: &Delivery<'_>, head_due: SystemTime) -> Result<(), Abandoned> {
        let context = delivery.context(delivery.attempts, None, delivery.first_attempt_at);
        self.send_waiting(delivery.event, context, head_due).await
    }

    /// A retry of an ordered key that came due before its turn: written
    /// again to wait for the head's due time `head_due`.
    pub async fn wait_again(
        &self,
        event: &Event,
        state: &RetryState,
        key: &OrderKey,
        head_due: SystemTime,
    ) -> Result<(), Abandoned> {
        self.send_waiting(event, state.context(Some(key)), head_due).await
    }

    /// Writes a delivery waiting for its key's head, due at `head_due`, to
    /// the wait topic of that time.
    async fn send_waiting(
        &self,
        event: &Event,
        delivery: DeliveryContext<'_>,
        head_due: SystemTime,
    ) -> Result<(), Abandoned> {
        let letter = FailureRecord {
            destination: self.wait_for(head_due),
            reason: Reason::DeliveryFailed,
            detail: "waiting for an earlier delivery of its key (ordered by key)".into(),
            record: &event.record,
            meta: Some(&event.meta),
            delivery: Some(delivery),
        };
        self.sink.send(letter, &self.abort).await
    }

    /// Where a delivery waiting for its key's head goes: just after the
    /// head is due, and at least `retry.ordering_recheck` from now (the
    /// head may be being attempted), in the tier whose waits that is in
    /// order with.
    fn wait_for(&self, head_due: SystemTime) -> Destination {
        let now = SystemTime::now();
        let recheck = self.ordering.as_ref().map_or(Duration::from_secs(5), |o| o.recheck());
        let due_at = (head_due + Duration::from_secs(1)).max(now + recheck);
        let wait = due_at.duration_since(now).unwrap_or_default();
        if self.policy.schedule.tiers.is_empty() {
            // No tier to wait in (nothing fails into one, so only a queue
            // left from an earlier configuration is waited for).
            return Destination::Redrive;
        }
        Destination::Tier {
            tier: self.waits.for_wait(wait).tier.unwrap_or(0),
            due_at,
        }
    }

    /// A delivery not attempted because its webhook does not take deliveries
    /// now (`kept`, from [`Policy::accepts`]): recorded and dead-lettered.
    pub async fn not_attempted(&self, delivery: &Delivery<'_>, kept: Kept) -> Result<(), Abandoned> {
        if let Some(journal) = &self.journal {
            journal.kept(delivery.event, &delivery.target, &delivery.delivery_id, kept.reason);
        }
        let context = delivery.context(delivery.attempts, None, delivery.first_attempt_at);
        self.send_kept(delivery.event, kept, context).await
    }

    /// A due retry kept in the dead-letter topic without an attempt (`kept`:
    /// its webhook changed, or the record is out of range).
    pub async fn keep_retry(&self, event: &Event, kept: Kept, state: &RetryState) -> Result<(), Abandoned> {
        self.send_kept(event, kept, state.context(None)).await
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
        self.sink.send(letter, &self.abort).await
    }

    /// Dead-letters a record that cannot be delivered at all (no envelope,
    /// an invalid retry record), with why.
    pub async fn unroutable(&self, reason: Reason, detail: String, record: &SourceRecord) -> Result<(), Abandoned> {
        let letter = FailureRecord {
            destination: Destination::DeadLetter,
            reason,
            detail,
            record,
            meta: None,
            delivery: None,
        };
        self.sink.send(letter, &self.abort).await
    }

    /// A retry held out of order is moved to the end of the wait topic
    /// where it is in order for what it has left to wait (or the redrive topic).
    pub async fn requeue(&self, record: &SourceRecord) -> Result<(), Abandoned> {
        let wait = codec::due_at(record)
            .and_then(|due| due.duration_since(SystemTime::now()).ok())
            .unwrap_or_default();
        let topic = self.waits.for_wait(wait).topic.clone();
        self.sink.requeue(record, &topic, &self.abort).await
    }
}

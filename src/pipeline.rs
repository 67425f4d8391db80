//! The pipeline: one record in, every delivery it causes finished.
//!
//! For a source record: recognise the envelope (or dead-letter it with the
//! reason), route it through the in-memory index, and deliver it to every
//! subscribed webhook concurrently. For a record from a retry tier: decode
//! what it carries and deliver it again to its webhook, as it is now. Either
//! way a delivery that does not succeed is handed to
//! [`Failures`], which moves it to the
//! next retry tier, or to the dead-letter topic when none is left, and
//! returns once the broker has acknowledged that. Only when every delivery
//! has finished is the record's completion finished, which is what lets
//! intake commit its offset: at-least-once, nothing lost, nothing silent.

use std::sync::Arc;
use std::time::SystemTime;

use tokio_util::sync::CancellationToken;

use crate::config::waits::WaitTopics;
use crate::delivery::{delivery_id, Deliverer};
use crate::event::{Event, SourceRecord};
use crate::history::record::Step;
use crate::intake::flow::Completion;
use crate::intake::flow::Tp;
use crate::intake::Dispatch;
use crate::retry::codec;
use crate::retry::codec::RetryState;
use crate::retry::failures::OrderSlot;
use crate::retry::failures::{Delivery, Failures};
use crate::retry::ordering::{InLine, Known, Place, Registration};
use crate::retry::policy::{retried_pending, AfterFailure, Kept, Policy};
use crate::retry::reason::Reason;
use crate::retry::sink::Abandoned;
use crate::routing::envelope::Envelopes;
use crate::routing::filter::Payload;
use crate::routing::ordering::OrderKey;
use crate::subscriptions::lifecycle::Lifecycle;
use crate::subscriptions::live::SubscriptionIndex;
use crate::telemetry::{RetryFrom, Telemetry};

/// The parts the pipeline wires together.
pub struct Pipeline {
    pub envelopes: Envelopes,
    pub index: Arc<SubscriptionIndex>,
    pub deliverer: Arc<Deliverer>,
    /// Everything after a delivery that does not succeed.
    pub failures: Failures,
    pub waits: WaitTopics,
    /// Ends a webhook's failure streak on success (absent in tools that only deliver).
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
        let line = pipeline.register(&done);
        tokio::spawn(async move {
            let result = caught(
                record,
                |record| pipeline.process_source(record, line),
                |record, panic| pipeline.panicked("source", record, panic),
            )
            .await;
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
        let line = pipeline.register(&done);
        tokio::spawn(async move {
            let result = caught(
                record,
                |record| pipeline.process_retry(record, line),
                |record, panic| pipeline.panicked("retry", record, panic),
            )
            .await;
            pipeline.finish(result, done);
        });
    }

    fn requeue(&self, record: SourceRecord, done: Completion) {
        let pipeline = self.0.clone();
        tokio::spawn(async move {
            let result = caught(
                record,
                |record| pipeline.requeue(record),
                |record, panic| pipeline.panicked("retry", record, panic),
            )
            .await;
            pipeline.finish(result, done);
        });
    }
}

/// Runs `work` on `record`. Should it panic (a bug in Herald, never bad
/// input, which is dead-lettered with its reason), `on_panic` gets the record
/// as read and the panic's message: without this, the record's completion
/// would be dropped unfinished and its partition would commit nothing more,
/// on every replica it moved to.
async fn caught<W, P>(
    record: SourceRecord,
    work: impl FnOnce(SourceRecord) -> W,
    on_panic: impl FnOnce(SourceRecord, String) -> P,
) -> Result<(), Abandoned>
where
    W: std::future::Future<Output = Result<(), Abandoned>>,
    P: std::future::Future<Output = Result<(), Abandoned>>,
{
    use futures::FutureExt;
    // The record's bytes are shared, not copied; only its headers' list is.
    let kept = record.clone();
    match std::panic::AssertUnwindSafe(work(record)).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_owned());
            Box::pin(on_panic(kept, message)).await
        }
    }
}

/// One delivery to make, and where a retried attempt was read from.
struct Job<'a> {
    delivery: Delivery<'a>,
    from: Option<RetryFrom>,
}

/// Where a delivery stands once [`Pipeline::run`] is done with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finished {
    /// Delivered, or dead-lettered: nothing of it is left.
    Done,
    /// Waiting in a retry tier, or carried on by a copy "retry pending"
    /// re-drove.
    Waiting,
}

/// A record's registration with its partition's ordering gate, and the
/// assignment that admitted it.
pub struct Line {
    registration: Registration,
    generation: u64,
}

impl Pipeline {
    /// Registers the record `done` admits with its partition's ordering
    /// gate, as it is dispatched (in offset order).
    fn register(&self, done: &Completion) -> Option<Line> {
        let ordered = self.failures.ordering.as_ref()?;
        Some(Line {
            registration: ordered.register(done.tp(), done.generation(), done.offset()),
            generation: done.generation(),
        })
    }

    fn finish(&self, result: Result<(), Abandoned>, done: Completion) {
        if result.is_ok() {
            done.finish();
            self.telemetry.event_completed();
        } else {
            done.abandon();
            self.telemetry.event_abandoned();
        }
    }

    /// Herald failed on `record` (`panic`, a bug): logged and counted, and
    /// the record, as read, dead-lettered as `internal_error` so that its
    /// partition moves on and nothing is dropped unseen. Deliveries of it
    /// already made are not undone.
    async fn panicked(&self, consumer: &'static str, record: SourceRecord, panic: String) -> Result<(), Abandoned> {
        self.telemetry.event_panicked(consumer, &record, &panic);
        let detail = format!("Herald failed on this record: {panic}");
        self.failures.unroutable(Reason::InternalError, detail, &record).await
    }

    /// A record from a source topic: route it and deliver to every subscriber.
    pub async fn process_source(&self, record: SourceRecord, line: Option<Line>) -> Result<(), Abandoned> {
        let recogniser = self.envelopes.for_topic(&record.topic);
        let (meta, parsed) = match recogniser.recognise_parsed(&record) {
            Ok(recognised) => recognised,
            Err(why) => {
                self.telemetry.event_unroutable(&record, &why);
                return Box::pin(self.failures.unroutable(why.reason.into(), why.detail, &record)).await;
            }
        };
        // The consumers join their group while the index loads; a record
        // taken meanwhile waits for it (an atomic load once it has loaded),
        // and the flow's limits pause its partition as records queue up.
        self.index.wait_loaded().await;
        // Filters read the body as the envelope rules parsed it (or parse
        // it once, for the first filter, when the rules did not).
        let payload = Payload::new(&record.value, parsed);
        let routed = self.index.route(meta.tenant.as_deref(), &meta.event_type, &payload);
        // Each webhook that orders by key, with the event's key, in line.
        let keys: Vec<Option<OrderKey>> = routed
            .targets
            .iter()
            .map(|target| {
                let ordering = target.webhook.ordering.as_ref()?;
                let key = ordering.key_of(&record, &payload)?;
                Some(OrderKey::new(target.id(), &record.topic, record.partition, key))
            })
            .collect();
        drop(payload);
        let (mut lines, generation) = match line {
            Some(line) => {
                let ordered: Vec<OrderKey> = keys.iter().flatten().cloned().collect();
                (line.registration.announce(&ordered).into_iter(), line.generation)
            }
            None => (Vec::new().into_iter(), 0),
        };
        if routed.filtered > 0 {
            self.telemetry
                .event_filtered(&record, &meta.event_type, routed.filtered);
        }
        let targets = routed.targets;
        if targets.is_empty() {
            if routed.filtered == 0 {
                self.telemetry.event_unmatched(&record, &meta.event_type);
            }
            return Ok(());
        }
        let event = Event { record, meta };
        let jobs = targets.into_iter().zip(keys).map(|(target, key)| {
            let job = Job {
                delivery: Delivery {
                    delivery_id: delivery_id(&event, target.id()),
                    event: &event,
                    target,
                    attempts: 0,
                    first_attempt_at: None,
                    history: None,
                    tier: None,
                    ordering: None,
                },
                from: None,
            };
            let place = key.and_then(|_| lines.next());
            async move {
                match place {
                    Some(place) => Box::pin(self.run_ordered(job, place, generation)).await,
                    None => self.run(job).await.map(drop),
                }
            }
        });
        let results = futures::future::join_all(jobs).await;
        results.into_iter().collect()
    }

    /// A first delivery to a webhook that orders by key: in its turn
    /// after the earlier deliveries of its key in this partition; parked
    /// behind them when one of them waits in a tier.
    async fn run_ordered(&self, mut job: Job<'_>, place: InLine, generation: u64) -> Result<(), Abandoned> {
        let Some(ordered) = self.failures.ordering.clone() else {
            return self.run(job).await.map(drop);
        };
        place.turn().await?;
        let record = &job.delivery.event.record;
        let source: Tp = (record.topic.clone(), record.partition);
        if !ordered.still_assigned(&source, generation) {
            // Its turn came after the partition was revoked.
            return Err(Abandoned);
        }
        let offset = record.offset;
        let key = place.key().clone();
        let mut queued = false;
        let known = ordered.known(&source, generation, &key, offset).await?;
        if known == Known::Delivered {
            // Read again after a crash or a rebalance, delivered before it.
            ordered.step("skipped");
            return Ok(());
        }
        if known == Known::Blocked {
            match ordered.park(&key, &source, offset, SystemTime::now()).await? {
                Place::Free => {}
                Place::Head => queued = true,
                Place::Done => {
                    ordered.step("skipped");
                    return Ok(());
                }
                Place::Behind(head_due) => {
                    ordered.step("parked");
                    job.delivery.ordering = Some(OrderSlot {
                        key,
                        source,
                        offset,
                        queued: true,
                    });
                    return self.failures.park(&job.delivery, head_due).await;
                }
            }
        }
        job.delivery.ordering = Some(OrderSlot {
            key: key.clone(),
            source: source.clone(),
            offset,
            queued,
        });
        let finished = self.run(job).await?;
        if finished == Finished::Done {
            // Kept before the next one of its key goes: read again, it is
            // skipped rather than delivered after that one.
            let kept = async {
                match queued {
                    true => ordered.pop(&key, &source, offset).await.map(drop),
                    false => ordered.mark(&source, &key, offset).await,
                }
            };
            if let Err(abandoned) = kept.await {
                place.hold();
                return Err(abandoned);
            }
        }
        drop(place);
        Ok(())
    }

    /// A due record from a wait topic: deliver it again to its webhook, as
    /// it is now, if it is still the webhook the delivery was routed to.
    pub async fn process_retry(&self, record: SourceRecord, line: Option<Line>) -> Result<(), Abandoned> {
        let state = match codec::decode(&record, self.failures.policy.schedule.tiers.len()) {
            Ok(state) => state,
            Err(e) => {
                self.telemetry.retry_record_invalid(&record, &e);
                return Box::pin(
                    self.failures
                        .unroutable(Reason::InvalidRetryRecord, e.to_string(), &record),
                )
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
                return Box::pin(self.failures.unroutable(why.reason.into(), why.detail, &state.original)).await;
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
            return Box::pin(self.failures.keep_retry(&event, kept, &state)).await;
        }
        // A record of an ordered key goes when it heads its key's queue.
        let mut place = None;
        let ordered = self.failures.ordering.clone();
        if let (Some(key), Some(ordered)) = (&state.ordering, &ordered) {
            let source: Tp = (state.original.topic.clone(), state.original.partition);
            let offset = state.original.offset;
            let in_line = line.and_then(|line| line.registration.announce(std::slice::from_ref(key)).pop());
            if let Some(in_line) = &in_line {
                in_line.turn().await?;
            }
            match Box::pin(ordered.claim(key, &source, offset)).await? {
                Place::Head | Place::Free => ordered.step("released"),
                Place::Done => {
                    ordered.step("skipped");
                    return Ok(());
                }
                Place::Behind(head_due) => {
                    ordered.step("waited");
                    return Box::pin(self.failures.wait_again(&event, &state, key, head_due)).await;
                }
            }
            place = Some((
                OrderSlot {
                    key: key.clone(),
                    source,
                    offset,
                    queued: true,
                },
                in_line,
            ));
        }
        let slot = place.as_ref().map(|(slot, _)| slot.clone());
        let finished = self.retry_now(&event, &state, from, now, slot).await?;
        if let (Some((slot, in_line)), Some(ordered)) = (place, &ordered) {
            if finished == Finished::Done {
                if let Err(abandoned) = Box::pin(ordered.pop(&slot.key, &slot.source, slot.offset)).await {
                    if let Some(in_line) = in_line {
                        in_line.hold();
                    }
                    return Err(abandoned);
                }
            }
            drop(in_line);
        }
        Ok(())
    }

    /// A due retry in its turn: delivered again if its webhook is still the
    /// one it was routed to.
    async fn retry_now(
        &self,
        event: &Event,
        state: &RetryState,
        from: RetryFrom,
        now: SystemTime,
        ordering: Option<OrderSlot>,
    ) -> Result<Finished, Abandoned> {
        let late = now.duration_since(state.due_at).unwrap_or_default();
        self.telemetry.retry_taken_up(from, late);
        self.index.wait_loaded().await;
        let found = self.index.get(&state.webhook_id);
        let target = match Policy::same_webhook(found, &state.binding(), &event.meta) {
            Ok(target) => target,
            Err(kept) => {
                Box::pin(self.failures.keep_retry(event, kept, state)).await?;
                return Ok(Finished::Done);
            }
        };
        if let Some(cut) = retried_pending(
            &target.webhook.retried_pending,
            state.tier,
            state.last_attempt_at,
            state.due_at,
        ) {
            // Re-driven by retry pending: that copy is the one delivered.
            self.telemetry
                .retry_finished(&state.webhook_id, &state.delivery_id, cut);
            // Not done: the copy carries it on (in its key's queue too).
            return Ok(Finished::Waiting);
        }
        self.run(Job {
            delivery: Delivery {
                event,
                target,
                delivery_id: state.delivery_id.clone(),
                attempts: state.attempt,
                first_attempt_at: state.first_attempt_at,
                history: state.history.as_deref(),
                // Deferred before its first attempt: that attempt, when it
                // fails, goes to the first tier as any first attempt does.
                tier: state.tier.filter(|_| state.attempt > 0),
                ordering,
            },
            from: Some(from),
        })
        .await
    }

    /// A retry held out of order is moved to the end of the wait topic
    /// where it is in order for what it has left to wait (or the redrive topic).
    pub async fn requeue(&self, record: SourceRecord) -> Result<(), Abandoned> {
        self.failures.requeue(&record).await
    }

    /// One event to one webhook: delivered, or handed to [`Failures`], which
    /// returns once the next tier or the dead-letter topic has acknowledged it.
    ///
    /// The rare paths' futures (a failure's, an ordered key's, a panic's)
    /// are boxed where they are awaited, here and in the callers: inline,
    /// every delivery's task would be as large as the largest of them (the
    /// failure path's 2 KB), and a task's future is copied whole when it is
    /// spawned, collected and finished.
    async fn run(&self, job: Job<'_>) -> Result<Finished, Abandoned> {
        let Job { delivery, from } = job;
        let Delivery { event, target, .. } = &delivery;
        if let Err(kept) = Policy::accepts(target) {
            Box::pin(self.failures.not_attempted(&delivery, kept)).await?;
            return Ok(Finished::Done);
        }

        self.telemetry.delivery_started();
        let attempt = tokio::select! {
            attempt = self.deliverer.deliver(event, target, delivery.delivery_id.clone(), delivery.attempts + 1) => attempt,
            _ = self.abort.cancelled() => return Err(Abandoned),
        };
        let tenant = self
            .telemetry
            .tenant(&target.tenant_series, target.webhook.tenant.as_deref());
        self.telemetry
            .delivery_finished(target.id(), tenant, &event.meta.event_type, from, &attempt);
        match &attempt.result {
            Ok(_) => {
                if let Some(history) = &self.history {
                    history.record(event, target, &attempt, delivery.tier, Step::delivered());
                }
                if let Some(lifecycle) = &self.lifecycle {
                    lifecycle.delivery_succeeded(target);
                }
                Ok(Finished::Done)
            }
            Err(failure) => {
                let went = Box::pin(self.failures.after_failure(&delivery, &attempt, failure)).await?;
                Ok(match went {
                    AfterFailure::DeadLetter { .. } => Finished::Done,
                    AfterFailure::Retry { .. } | AfterFailure::Defer { .. } => Finished::Waiting,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    fn record() -> SourceRecord {
        SourceRecord {
            topic: Arc::from("orders"),
            partition: 2,
            offset: 41,
            timestamp_ms: None,
            key: None,
            value: bytes::Bytes::from_static(br#"{"type":"order.paid"}"#),
            headers: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_panic_hands_the_record_as_read_and_the_message_on_and_its_outcome_is_the_record_s() {
        let seen = Mutex::new(None);
        let result = caught(
            record(),
            |record| async move {
                let found: Option<usize> = record.key.map(|k| k.len());
                found.expect("a bug");
                Ok(())
            },
            |record, panic| {
                *seen.lock() = Some((record.offset, record.value.clone(), panic));
                async { Ok(()) }
            },
        )
        .await;
        assert_eq!(result, Ok(()), "finished once the panic was handled");
        let (offset, value, panic) = seen.lock().take().expect("on_panic ran");
        assert_eq!((offset, &value[..]), (41, &br#"{"type":"order.paid"}"#[..]));
        assert_eq!(panic, "a bug");
        // A formatted message, and a handling that could not finish.
        let abandoned = caught(
            record(),
            |record| async move { panic!("offset {}", record.offset) },
            |_, panic| {
                assert_eq!(panic, "offset 41");
                async { Err(Abandoned) }
            },
        )
        .await;
        assert_eq!(abandoned, Err(Abandoned));
    }

    #[tokio::test]
    async fn work_that_does_not_panic_is_its_own_outcome() {
        let on_panic = |_, _| async { panic!("not called") };
        assert_eq!(caught(record(), |_| async { Ok(()) }, on_panic).await, Ok(()));
        assert_eq!(
            caught(record(), |_| async { Err(Abandoned) }, on_panic).await,
            Err(Abandoned)
        );
    }
}

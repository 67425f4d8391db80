//! Queues attempt records and counts off the delivery path, and writes them
//! in batches.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::producer::FutureRecord;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::history::HistoryConfig;
use crate::delivery::target::Target;
use crate::delivery::Attempt;
use crate::event::Event;
use crate::history::record::{AttemptBrief, AttemptRecord, DeliveryStatus, Outcome, PendingAttempt, Step};
use crate::history::store::{Counts, HistoryStore, Scope, StepRow};
use crate::retry::failures::Journal;
use crate::retry::policy::AfterFailure;
use crate::retry::reason::{Class, Reason};
use crate::telemetry::Telemetry;

/// Most records written in one Redis pipeline.
const BATCH: usize = 1000;

/// The handle the pipeline records attempts with.
pub struct Recorder {
    queue: Arc<Mutex<Queue>>,
    /// Wakes the writer early when the queue is half full.
    flush_soon: Arc<Notify>,
    limits: Limits,
    telemetry: Telemetry,
}

/// Bounds of the queue.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Attempts queued in all.
    capacity: usize,
    /// Bytes they may hold (bodies, mostly).
    capacity_bytes: usize,
    /// Attempts queued per webhook, unless `keep_all`.
    max_per_webhook: usize,
    /// The attempts topic wants every attempt, so none is superseded.
    keep_all: bool,
}

/// What became of a recorded attempt.
#[derive(Debug, PartialEq, Eq)]
enum Pushed {
    /// Queued; the queue has just become half full.
    Queued { half_full: bool },
    /// Queued in place of its webhook's oldest queued attempt.
    Superseded,
    /// Not queued: the queue is full.
    Dropped,
}

/// A step of a delivery waiting to be written to its record.
#[derive(Debug, Clone, serde::Serialize)]
struct PendingStep {
    delivery_id: String,
    event_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_id: Option<String>,
    status: DeliveryStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none", with = "time::serde::rfc3339::option")]
    next_attempt_at: Option<time::OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tier: Option<u32>,
    #[serde(with = "time::serde::rfc3339")]
    first_at: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: time::OffsetDateTime,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt: Option<AttemptBrief>,
}

impl PendingStep {
    fn new(
        event: &Event,
        delivery_id: &str,
        step: Step,
        at: time::OffsetDateTime,
        attempt: Option<AttemptBrief>,
    ) -> Self {
        PendingStep {
            delivery_id: delivery_id.to_owned(),
            event_type: event.meta.event_type.clone(),
            event_id: event.meta.event_id.clone(),
            status: step.status,
            reason: step.reason.map(Reason::as_str),
            next_attempt_at: step.next_attempt_at,
            tier: step.tier,
            first_at: at,
            updated_at: at,
            attempt,
        }
    }

    /// The bytes it holds, about.
    fn size(&self) -> usize {
        self.delivery_id.len() + self.event_type.len() + self.event_id.as_ref().map_or(0, String::len) + 384
    }
}

/// Attempts and delivery steps waiting to be written, by webhook, and the
/// counts to add.
#[derive(Default)]
struct Queue {
    attempts: HashMap<String, VecDeque<PendingAttempt>>,
    steps: HashMap<String, Vec<PendingStep>>,
    len: usize,
    /// Bytes held by the queued attempts (see [`PendingAttempt::size`]).
    bytes: usize,
    webhooks: HashMap<String, Counts>,
    tenants: HashMap<String, Counts>,
}

impl Queue {
    fn counts(&mut self) -> HashMap<Scope, Counts> {
        let webhooks = self.webhooks.drain().map(|(id, c)| (Scope::Webhook(id), c));
        let tenants = self.tenants.drain().map(|(t, c)| (Scope::Tenant(t), c));
        webhooks.chain(tenants).collect()
    }

    /// Counts an attempt for its webhook and the webhook's tenant. A
    /// tenant's statistics are its webhooks' deliveries: the event's own
    /// tenant does not count (a webhook of no tenant receives every tenant's
    /// events and counts in none), so no tenant sees counts of deliveries to
    /// webhooks that are not its own.
    fn count(&mut self, target: &Target, outcome: Outcome, at_ms: i64) {
        count(&mut self.webhooks, target.id(), outcome, at_ms);
        if let Some(tenant) = &target.webhook.tenant {
            count(&mut self.tenants, tenant, outcome, at_ms);
        }
    }

    fn push(&mut self, pending: PendingAttempt, limits: &Limits) -> Pushed {
        let size = pending.size();
        let waiting = self.attempts.get_mut(pending.webhook_id());
        match waiting {
            Some(waiting) if !limits.keep_all && waiting.len() >= limits.max_per_webhook => {
                let oldest = waiting.pop_front().map_or(0, |p| p.size());
                self.bytes = self.bytes - oldest + pending.size();
                waiting.push_back(pending);
                return Pushed::Superseded;
            }
            _ if self.len >= limits.capacity || self.bytes + pending.size() > limits.capacity_bytes => {
                return Pushed::Dropped
            }
            Some(waiting) => waiting.push_back(pending),
            None => {
                self.attempts
                    .insert(pending.webhook_id().to_owned(), VecDeque::from([pending]));
            }
        }
        self.len += 1;
        self.bytes += size;
        Pushed::Queued {
            half_full: self.len == limits.capacity / 2,
        }
    }

    /// Queues a delivery's step unless the queue is full (`false`).
    fn push_step(&mut self, webhook: &str, step: PendingStep, limits: &Limits) -> bool {
        let size = step.size();
        if self.len >= limits.capacity || self.bytes + size > limits.capacity_bytes {
            return false;
        }
        match self.steps.get_mut(webhook) {
            Some(steps) => steps.push(step),
            None => {
                self.steps.insert(webhook.to_owned(), vec![step]);
            }
        }
        self.len += 1;
        self.bytes += size;
        true
    }

    fn restore(&mut self, counts: HashMap<Scope, Counts>) {
        for (scope, c) in counts {
            let slot = match scope {
                Scope::Webhook(id) => self.webhooks.entry(id),
                Scope::Tenant(t) => self.tenants.entry(t),
            };
            slot.or_default().merge(c);
        }
    }
}

fn count(map: &mut HashMap<String, Counts>, key: &str, outcome: Outcome, at_ms: i64) {
    match map.get_mut(key) {
        Some(c) => c.add(outcome, at_ms),
        None => map.entry(key.to_owned()).or_default().add(outcome, at_ms),
    }
}

/// Orders a webhook's attempts by time when more than `keep` wait, and
/// returns the index from which they are the newest `keep`: Redis keeps only
/// those, so only those are written.
fn newest_last(waiting: &mut VecDeque<PendingAttempt>, keep: usize) -> usize {
    let from = waiting.len().saturating_sub(keep);
    if from > 0 {
        waiting.make_contiguous().sort_by_key(|p| p.attempt.started_at);
    }
    from
}

/// The background half: builds the kept records and writes them to Redis and
/// the attempts topic.
pub struct Writer {
    queue: Arc<Mutex<Queue>>,
    flush_soon: Arc<Notify>,
    store: HistoryStore,
    producer: Option<(crate::kafka::SharedProducer, String)>,
    max_body: usize,
    max_per_webhook: usize,
    flush_interval: Duration,
    telemetry: Telemetry,
}

impl Recorder {
    /// The recorder the pipeline hands attempts to, and the writer that drains its queue to Redis (and the attempts topic).
    pub fn new(
        config: &HistoryConfig,
        store: HistoryStore,
        producer: Option<crate::kafka::SharedProducer>,
        telemetry: Telemetry,
    ) -> (Arc<Recorder>, Writer) {
        let queue = Arc::new(Mutex::new(Queue::default()));
        let flush_soon = Arc::new(Notify::new());
        let producer = producer.zip(config.topic().map(str::to_owned));
        let recorder = Recorder {
            queue: queue.clone(),
            flush_soon: flush_soon.clone(),
            limits: Limits {
                capacity: config.queue_capacity,
                capacity_bytes: config.queue_capacity_bytes,
                max_per_webhook: config.max_per_webhook,
                keep_all: producer.is_some(),
            },
            telemetry: telemetry.clone(),
        };
        let writer = Writer {
            queue,
            flush_soon,
            store,
            producer,
            max_body: config.max_body_bytes,
            max_per_webhook: config.max_per_webhook,
            flush_interval: config.flush_interval,
            telemetry,
        };
        (Arc::new(recorder), writer)
    }

    /// Records one attempt: counted always, queued for history unless the
    /// queue is full (then dropped and counted). Never waits, and builds no
    /// record: that is the writer's work, for the attempts it keeps.
    ///
    /// Redis keeps the newest `history.max_per_webhook` attempts of a
    /// webhook, so unless the attempts topic wants every attempt, a webhook's
    /// queued attempts beyond that many are superseded by newer ones here
    /// rather than written and trimmed.
    ///
    /// `step` is what became of the delivery after the attempt; it goes to
    /// the delivery's record (one per event and webhook), with the
    /// attempt's brief.
    pub fn record(&self, event: &Event, target: &Arc<Target>, attempt: &Attempt, tier: Option<usize>, step: Step) {
        let pending = PendingAttempt::new(event, target, attempt, tier);
        let outcome = pending.outcome();
        let at_ms = crate::history::epoch_ms(attempt.started_at);
        let step = PendingStep::new(
            event,
            &attempt.delivery_id,
            step,
            attempt.started_at,
            Some(AttemptBrief::of(&pending)),
        );
        let (pushed, step_kept) = {
            let mut queue = self.queue.lock();
            queue.count(target, outcome, at_ms);
            let step_kept = queue.push_step(target.id(), step, &self.limits);
            (queue.push(pending, &self.limits), step_kept)
        };
        if !step_kept {
            self.telemetry.history_dropped();
        }
        match pushed {
            Pushed::Queued { half_full } => {
                if half_full {
                    self.flush_soon.notify_one();
                }
            }
            Pushed::Superseded => self.telemetry.history_superseded(),
            Pushed::Dropped => self.telemetry.history_dropped(),
        }
    }
}

impl Recorder {
    /// Records a delivery that was not attempted (its webhook paused or
    /// disabled) in its record, as `step` says: kept, and why.
    pub fn record_kept(&self, event: &Event, target: &Target, delivery_id: &str, step: Step) {
        let step = PendingStep::new(event, delivery_id, step, time::OffsetDateTime::now_utc(), None);
        let kept = {
            let mut queue = self.queue.lock();
            queue.push_step(target.id(), step, &self.limits)
        };
        if !kept {
            self.telemetry.history_dropped();
        }
    }
}

/// What [`crate::retry::failures`] records of a delivery that did not succeed.
impl Journal for Recorder {
    fn failed(&self, event: &Event, target: &Arc<Target>, attempt: &Attempt, tier: Option<usize>, went: AfterFailure) {
        let step = match went {
            AfterFailure::Retry { tier, due_at } | AfterFailure::Defer { tier, due_at } => Step::retry(tier, due_at),
            AfterFailure::DeadLetter { reason, .. } => Step::dead_letter(DeliveryStatus::DeadLettered, reason),
        };
        self.record(event, target, attempt, tier, step);
    }

    fn kept(&self, event: &Event, target: &Target, delivery_id: &str, reason: Reason) {
        let status = match reason.class() {
            Class::Kept => DeliveryStatus::Kept,
            _ => DeliveryStatus::DeadLettered,
        };
        self.record_kept(event, target, delivery_id, Step::dead_letter(status, reason));
    }
}

impl Writer {
    /// Writes every `flush_interval` (sooner when the queue is half full)
    /// until `shutdown`, then writes what is left.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.flush_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stopping = tokio::select! {
                _ = ticker.tick() => false,
                _ = self.flush_soon.notified() => false,
                _ = shutdown.cancelled() => true,
            };
            self.flush().await;
            if stopping {
                return;
            }
        }
    }

    async fn flush(&mut self) {
        let (attempts, steps, counts) = {
            let mut queue = self.queue.lock();
            queue.len = 0;
            queue.bytes = 0;
            (
                std::mem::take(&mut queue.attempts),
                std::mem::take(&mut queue.steps),
                queue.counts(),
            )
        };
        if attempts.is_empty() && steps.is_empty() && counts.is_empty() {
            return;
        }
        self.write_steps(steps).await;
        let mut acks = Vec::new();
        let mut rows = Vec::new();
        for (webhook, mut waiting) in attempts {
            let keep_from = newest_last(&mut waiting, self.max_per_webhook);
            for (i, pending) in waiting.iter().enumerate() {
                let kept = i >= keep_from;
                let (mut record, whole) = match &self.producer {
                    // The topic gets every attempt, bodies whole.
                    Some((producer, topic)) => {
                        let record = AttemptRecord::new(pending, usize::MAX);
                        let full = json_sized(&record, attempt_json_size(&record));
                        let kafka = FutureRecord::to(topic).key(webhook.as_bytes()).payload(&full);
                        let current = producer.get();
                        match current.send_result(kafka) {
                            Ok(ack) => acks.push(ack),
                            Err((e, _)) => {
                                if crate::kafka::classify_produce_error(&e) == crate::kafka::ProduceError::Fatal {
                                    match producer.recover(&current) {
                                        Ok(Some(r)) => self.telemetry.producer_recreated(&r.code, &r.reason),
                                        Ok(None) => {}
                                        Err(e) => self.telemetry.producer_recreate_failed(&e),
                                    }
                                }
                                self.telemetry.history_topic_failed(&e)
                            }
                        }
                        (record, Some(full))
                    }
                    None if kept => (AttemptRecord::new(pending, self.max_body), None),
                    None => continue,
                };
                if kept {
                    let cut = record.truncate_bodies(self.max_body);
                    let at_ms = crate::history::epoch_ms(record.at);
                    // Bodies within `max_body`: the topic's JSON is the same.
                    let json = match whole {
                        Some(whole) if !cut => whole,
                        _ => json_sized(&record, attempt_json_size(&record)),
                    };
                    rows.push((webhook.clone(), at_ms, json));
                }
            }
            if keep_from > 0 {
                self.telemetry.history_superseded_by(keep_from);
            }
        }
        if !acks.is_empty() {
            let telemetry = self.telemetry.clone();
            tokio::spawn(async move {
                for ack in futures::future::join_all(acks).await {
                    match ack {
                        Ok(Ok(_)) => {}
                        Ok(Err((e, _))) => telemetry.history_topic_failed(&e),
                        Err(_) => telemetry.history_topic_failed(&"the producer was dropped"),
                    }
                }
            });
        }
        let now_ms = crate::history::epoch_ms(time::OffsetDateTime::now_utc());
        // Counts go with the first pipeline (alone when no record is kept).
        let mut counts = counts;
        let mut chunks: Vec<&[(String, i64, Vec<u8>)]> = rows.chunks(BATCH).collect();
        if chunks.is_empty() {
            chunks.push(&[]);
        }
        for chunk in chunks {
            let with_counts = std::mem::take(&mut counts);
            match self.store.write(chunk, &with_counts, now_ms).await {
                Ok(()) => self.telemetry.history_written(chunk.len()),
                Err(e) => {
                    self.telemetry.history_write_failed(chunk.len(), &e);
                    // Counts are kept for the next flush; records are not.
                    self.queue.lock().restore(with_counts);
                }
            }
        }
    }
}

impl Writer {
    /// Writes delivery steps to their records, in batches of about
    /// [`BATCH`] steps; a batch Redis refuses is counted and lost (the
    /// records then miss a step, the deliveries are unaffected).
    async fn write_steps(&self, steps: HashMap<String, Vec<PendingStep>>) {
        let now_ms = crate::history::epoch_ms(time::OffsetDateTime::now_utc());
        let mut batch: Vec<(String, Vec<StepRow>)> = Vec::new();
        let mut in_batch = 0;
        let mut rows_of = steps.into_iter().peekable();
        while let Some((webhook, steps)) = rows_of.next() {
            let rows: Vec<StepRow> = steps
                .into_iter()
                .map(|step| {
                    let at_ms = crate::history::epoch_ms(step.updated_at);
                    let json = json_sized(&step, STEP_JSON_ROOM);
                    (at_ms, step.delivery_id, json)
                })
                .collect();
            in_batch += rows.len();
            batch.push((webhook, rows));
            if in_batch >= BATCH || rows_of.peek().is_none() {
                let n = in_batch;
                if let Err(e) = self.store.write_steps(&batch, now_ms).await {
                    self.telemetry.history_write_failed(n, &e);
                }
                batch.clear();
                in_batch = 0;
            }
        }
    }
}

/// Room in an attempt's JSON for everything but its bodies (its headers,
/// ids, times and outcome).
const ATTEMPT_JSON_ROOM: usize = 1024;

/// Room for a delivery step's JSON.
const STEP_JSON_ROOM: usize = 512;

/// Room for `record`'s JSON: its bodies, a quarter more for the escapes of
/// a JSON body's quotes, and the rest.
fn attempt_json_size(record: &AttemptRecord) -> usize {
    let bodies = record.request.body.len()
        + record
            .response
            .as_ref()
            .and_then(|r| r.body.as_ref())
            .map_or(0, String::len);
    bodies + bodies / 4 + ATTEMPT_JSON_ROOM
}

/// `value` as JSON, written into a buffer of `capacity` from the start:
/// grown from serde_json's 128 bytes, an attempt with a 1 KB body was
/// copied four times over (a tenth of the history writer's instructions).
fn json_sized(value: &impl serde::Serialize, capacity: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(capacity);
    serde_json::to_writer(&mut out, value).expect("records serialise");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::target::EndpointDefaults;
    use crate::event::{EventMeta, SourceRecord};
    use crate::webhook::tests::webhook;
    use time::OffsetDateTime;

    fn target(id: &str) -> Arc<Target> {
        target_of(id, None)
    }

    /// A webhook `id` of `tenant`.
    fn target_of(id: &str, tenant: Option<&str>) -> Arc<Target> {
        let defaults = EndpointDefaults {
            max_in_flight: 4,
            max_queue_wait: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
            default_rate: None,
        };
        let mut webhook = webhook(id, "https://example.com/", &["*"]);
        webhook.tenant = tenant.map(str::to_owned);
        Arc::new(Target::compile(webhook, &defaults, None).unwrap())
    }

    /// Attempt `n` (its offset) to `target`, started `n` seconds after the epoch.
    fn pending(target: &Arc<Target>, n: i64) -> PendingAttempt {
        let event = Event {
            record: SourceRecord {
                topic: Arc::from("events"),
                partition: 0,
                offset: n,
                timestamp_ms: None,
                key: None,
                value: bytes::Bytes::from_static(b"{}"),
                headers: Vec::new(),
            },
            meta: EventMeta {
                event_type: "a.b".into(),
                event_id: None,
                event_time: None,
                tenant: None,
                content_type: "application/json".into(),
                forward_headers: Vec::new(),
                id_source: None,
            },
        };
        let attempt = Attempt {
            delivery_id: format!("msg_{n}"),
            attempt: 1,
            started_at: OffsetDateTime::from_unix_timestamp(n).unwrap(),
            duration: Duration::from_millis(1),
            result: Ok(204),
            response_excerpt: None,
            signed: None,
            response_headers: Vec::new(),
            details_withheld: false,
        };
        PendingAttempt::new(&event, target, &attempt, None)
    }

    fn offsets(queue: &Queue, webhook: &str) -> Vec<i64> {
        queue.attempts[webhook].iter().map(|p| p.offset).collect()
    }

    #[test]
    fn attempts_count_for_the_webhooks_tenant_not_the_events() {
        let mut queue = Queue::default();
        // The events were acme's; the webhooks are globex's and no tenant's.
        queue.count(&target_of("g", Some("globex")), Outcome::Succeeded, 0);
        queue.count(&target_of("all", None), Outcome::Failed, 0);
        let counts = queue.counts();
        assert!(counts.contains_key(&Scope::Tenant("globex".into())));
        assert!(!counts.contains_key(&Scope::Tenant("acme".into())));
        assert_eq!(
            counts.keys().filter(|s| matches!(s, Scope::Tenant(_))).count(),
            1,
            "a webhook of no tenant counts in none"
        );
        assert!(counts.contains_key(&Scope::Webhook("all".into())));
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_too() {
        let one = pending(&target("a"), 0).size();
        let limits = Limits {
            capacity: 100,
            capacity_bytes: one * 3,
            max_per_webhook: 100,
            keep_all: false,
        };
        let a = target("a");
        let mut queue = Queue::default();
        for n in 0..3 {
            assert!(matches!(queue.push(pending(&a, n), &limits), Pushed::Queued { .. }));
        }
        assert_eq!(queue.bytes, one * 3);
        assert_eq!(
            queue.push(pending(&a, 3), &limits),
            Pushed::Dropped,
            "room for 100 attempts, not for their bytes"
        );
        assert_eq!(queue.len, 3);
    }

    #[test]
    fn a_busy_webhook_keeps_only_its_newest_attempts_queued() {
        let limits = Limits {
            capacity: 100,
            capacity_bytes: usize::MAX,
            max_per_webhook: 3,
            keep_all: false,
        };
        let (a, b) = (target("a"), target("b"));
        let mut queue = Queue::default();
        let results: Vec<Pushed> = (0..5).map(|n| queue.push(pending(&a, n), &limits)).collect();
        assert_eq!(results[..3], [const { Pushed::Queued { half_full: false } }; 3]);
        assert_eq!(results[3..], [Pushed::Superseded, Pushed::Superseded]);
        assert_eq!(offsets(&queue, "a"), [2, 3, 4]);
        assert_eq!(queue.push(pending(&b, 9), &limits), Pushed::Queued { half_full: false });
        // Superseded attempts free no room and take none.
        assert_eq!(queue.len, 4);
    }

    #[test]
    fn a_full_queue_drops_and_says_when_it_is_half_full() {
        let limits = Limits {
            capacity: 4,
            capacity_bytes: usize::MAX,
            max_per_webhook: 10,
            keep_all: false,
        };
        let (a, b) = (target("a"), target("b"));
        let mut queue = Queue::default();
        assert_eq!(queue.push(pending(&a, 0), &limits), Pushed::Queued { half_full: false });
        assert_eq!(queue.push(pending(&b, 1), &limits), Pushed::Queued { half_full: true });
        assert_eq!(queue.push(pending(&a, 2), &limits), Pushed::Queued { half_full: false });
        assert_eq!(queue.push(pending(&a, 3), &limits), Pushed::Queued { half_full: false });
        assert_eq!(queue.push(pending(&b, 4), &limits), Pushed::Dropped);
        assert_eq!(offsets(&queue, "a"), [0, 2, 3]);
        assert_eq!(offsets(&queue, "b"), [1]);
    }

    #[test]
    fn with_the_attempts_topic_every_attempt_is_queued() {
        let limits = Limits {
            capacity: 100,
            capacity_bytes: usize::MAX,
            max_per_webhook: 3,
            keep_all: true,
        };
        let a = target("a");
        let mut queue = Queue::default();
        for n in 0..10 {
            assert!(matches!(queue.push(pending(&a, n), &limits), Pushed::Queued { .. }));
        }
        assert_eq!(offsets(&queue, "a"), (0..10).collect::<Vec<_>>());
        // Only the newest three by start time go to Redis.
        let mut waiting: VecDeque<PendingAttempt> = [5, 1, 9, 3, 7].iter().map(|n| pending(&a, *n)).collect();
        let from = newest_last(&mut waiting, 3);
        let kept: Vec<i64> = waiting.iter().skip(from).map(|p| p.offset).collect();
        assert_eq!(kept, [5, 7, 9]);
        let mut few: VecDeque<PendingAttempt> = [2, 1].iter().map(|n| pending(&a, *n)).collect();
        assert_eq!(newest_last(&mut few, 3), 0);
    }
}

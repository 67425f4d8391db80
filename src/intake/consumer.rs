//! The consumer loop and its librdkafka context.
//!
//! rdkafka traps this code steps around:
//! - `store_offset` stores offset+1 but `store_offsets(tpl)` stores the offset
//!   as given: Herald always uses the latter with the *next* offset to consume.
//! - `pause` discards prefetched messages and `resume` fetches again from the
//!   position after the last record handed to the application, so nothing is
//!   skipped; a record that still arrives for a paused partition is admitted
//!   anyway (the limit is soft by at most one fetch).
//! - The rebalance callback runs inside `recv()` on a runtime worker; it
//!   blocks (via `block_in_place`) while revoked partitions drain, so the
//!   deliveries finishing them must run on other workers: Herald needs the
//!   multi-threaded runtime.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use tokio_util::time::{delay_queue, DelayQueue};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::ClientContext;
use tokio_util::sync::CancellationToken;

use crate::config::KafkaConfig;
use crate::event::{RecordHeader, SourceRecord};
use crate::intake::flow::{Actions, Flow, Tp};
use crate::intake::Dispatch;
use crate::telemetry::Telemetry;

/// Callbacks librdkafka makes into Herald.
pub struct IntakeContext {
    flow: Arc<Flow>,
    telemetry: Telemetry,
    revoke_drain_timeout: Duration,
    /// `consumer` label of this consumer's series.
    name: &'static str,
    /// Partitions whose lag was last reported.
    lag_reported: Mutex<HashSet<(String, i32)>>,
}

fn tps_of(tpl: &TopicPartitionList) -> Vec<Tp> {
    tpl.elements()
        .iter()
        .map(|e| (Arc::<str>::from(e.topic()), e.partition()))
        .collect()
}

fn named(tps: &[Tp]) -> Vec<(String, i32)> {
    tps.iter().map(|(t, p)| (t.to_string(), *p)).collect()
}

fn offsets_tpl(stores: &[(Tp, i64)]) -> KafkaResult<TopicPartitionList> {
    let mut tpl = TopicPartitionList::with_capacity(stores.len());
    for ((topic, partition), offset) in stores {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    Ok(tpl)
}

fn partitions_tpl(tps: &[Tp]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::with_capacity(tps.len());
    for (topic, partition) in tps {
        tpl.add_partition(topic, *partition);
    }
    tpl
}

impl ClientContext for IntakeContext {
    fn stats(&self, statistics: Statistics) {
        let mut current = HashSet::new();
        for (name, topic) in &statistics.topics {
            for (id, partition) in &topic.partitions {
                if *id < 0 || !partition.desired {
                    continue;
                }
                let lag = if partition.consumer_lag >= 0 {
                    partition.consumer_lag
                } else if partition.hi_offset >= 0 && partition.committed_offset >= 0 {
                    (partition.hi_offset - partition.committed_offset).max(0)
                } else {
                    continue;
                };
                self.telemetry.consumer_lag(self.name, name, *id, lag);
                current.insert((name.clone(), *id));
            }
        }
        // Series of partitions no longer assigned disappear; other consumers' stay.
        let mut reported = self.lag_reported.lock().unwrap_or_else(|p| p.into_inner());
        for (topic, partition) in reported.difference(&current) {
            self.telemetry.consumer_lag_gone(self.name, topic, *partition);
        }
        *reported = current;
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.telemetry.consumer_error(&format_args!("{error}: {reason}"));
    }
}

impl ConsumerContext for IntakeContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => self.revoke(consumer, tps_of(tpl)),
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => self.telemetry.rebalance_error(e),
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let tps = tps_of(tpl);
            self.flow.assign(&tps);
            self.telemetry
                .partitions_assigned(&named(&tps), self.flow.assigned().len());
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, _offsets: &TopicPartitionList) {
        match result {
            Ok(()) => self.telemetry.offsets_committed(Ok(())),
            // Nothing to commit is not a failure.
            Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => self.telemetry.offsets_committed(Err(&e)),
        }
    }
}

impl IntakeContext {
    /// Waits (bounded) for the revoked partitions' events, then stores and
    /// commits their finished prefix. Unfinished events are abandoned: the
    /// next owner consumes them again from the committed offset.
    fn revoke(&self, consumer: &BaseConsumer<Self>, tps: Vec<Tp>) {
        let lost = consumer.assignment_lost();
        if !lost {
            let deadline = Instant::now() + self.revoke_drain_timeout;
            let multi_threaded = tokio::runtime::Handle::try_current()
                .map(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
                .unwrap_or(false);
            if multi_threaded {
                tokio::task::block_in_place(|| self.flow.wait_drained(&tps, deadline));
            } else {
                self.flow.wait_drained(&tps, Instant::now());
            }
        }
        let (stores, abandoned) = self.flow.revoke(&tps);
        if !lost && !stores.is_empty() {
            match offsets_tpl(&stores) {
                Ok(tpl) => {
                    if let Err(e) = consumer.store_offsets(&tpl) {
                        self.telemetry.offset_store_failed(&e);
                    }
                    let result = consumer.commit(&tpl, CommitMode::Sync);
                    self.telemetry
                        .offsets_committed(result.as_ref().map(|_| ()).map_err(|e| e as _));
                }
                Err(e) => self.telemetry.offset_store_failed(&e),
            }
        }
        self.telemetry
            .partitions_revoked(&named(&tps), abandoned, self.flow.assigned().len());
    }
}

/// What one consumer reads, and whether it holds records until due.
pub struct ConsumerSpec {
    /// `consumer` metric label: `source` or `retry`.
    pub name: &'static str,
    pub group_id: String,
    pub topics: Vec<String>,
    /// When set, a record whose due time is in the future is held: its
    /// partition is paused and resumed at the due time (retry tiers).
    pub due: Option<fn(&SourceRecord) -> Option<SystemTime>>,
}

/// Records held until due for one partition, in offset order.
struct Held {
    generation: Option<u64>,
    records: VecDeque<SourceRecord>,
}

/// How long the flow may stay full (records left in librdkafka's queue)
/// before every partition is paused so that polling can go on: well inside
/// `max.poll.interval.ms`, and short enough that a rebalance waits little.
const PAUSE_ALL_AFTER: Duration = Duration::from_secs(1);

/// A consumer group member feeding a [`Dispatch`].
pub struct Intake {
    consumer: Arc<StreamConsumer<IntakeContext>>,
    /// A fetcher wake-up (see [`Intake::wake_fetcher`]) is under way.
    waking: Arc<AtomicBool>,
    flow: Arc<Flow>,
    telemetry: Telemetry,
    name: &'static str,
    due: Option<fn(&SourceRecord) -> Option<SystemTime>>,
    /// Topic names, shared by every record instead of allocated per record.
    topics: Vec<Arc<str>>,
    held: HashMap<Tp, Held>,
    timers: DelayQueue<Tp>,
    timer_keys: HashMap<Tp, delay_queue::Key>,
}

impl Intake {
    /// Creates the consumer and subscribes to `spec.topics`.
    pub fn new(config: &KafkaConfig, spec: ConsumerSpec, flow: Arc<Flow>, telemetry: Telemetry) -> KafkaResult<Intake> {
        let context = IntakeContext {
            flow: flow.clone(),
            telemetry: telemetry.clone(),
            revoke_drain_timeout: config.revoke_drain_timeout,
            name: spec.name,
            lag_reported: Mutex::new(HashSet::new()),
        };
        let consumer: StreamConsumer<IntakeContext> =
            crate::kafka::consumer_config(config, &spec.group_id).create_with_context(context)?;
        let topics: Vec<&str> = spec.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        Ok(Intake {
            consumer: Arc::new(consumer),
            waking: Arc::new(AtomicBool::new(false)),
            flow,
            telemetry,
            name: spec.name,
            due: spec.due,
            topics: spec.topics.iter().map(|t| Arc::from(t.as_str())).collect(),
            held: HashMap::new(),
            timers: DelayQueue::new(),
            timer_keys: HashMap::new(),
        })
    }

    /// Consumes until `shutdown`, then drains in-flight events for at most
    /// `drain_timeout`, commits, and leaves the group.
    pub async fn run(mut self, dispatch: Arc<dyn Dispatch>, shutdown: CancellationToken, drain_timeout: Duration) {
        // When the flow became full (no records taken), if it still is.
        let mut full_since: Option<tokio::time::Instant> = None;
        loop {
            let (full, globally_paused) = self.flow.fullness();
            full_since = match (full, full_since) {
                (false, _) => None,
                (true, None) => Some(tokio::time::Instant::now()),
                (true, since) => since,
            };
            let pause_all_at = full_since.map_or_else(tokio::time::Instant::now, |t| t + PAUSE_ALL_AFTER);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                // Full for long: pause everything and go on polling.
                _ = tokio::time::sleep_until(pause_all_at), if full && !globally_paused => {
                    let paused = self.flow.pause_all();
                    if !paused.is_empty() {
                        self.pause(&paused);
                        self.telemetry.partitions_paused(paused.len(), self.flow.paused_count());
                    }
                }
                _ = self.flow.woken() => {
                    self.telemetry.consumer_woke(self.name);
                    let actions = self.flow.take_actions();
                    self.apply(actions);
                }
                Some(expired) = self.timers.next(), if !self.timers.is_empty() => {
                    self.telemetry.consumer_woke(self.name);
                    let tp = expired.into_inner();
                    self.timer_keys.remove(&tp);
                    self.release(&tp, dispatch.as_ref());
                }
                message = self.consumer.recv(), if !full || globally_paused => {
                    self.telemetry.consumer_woke(self.name);
                    match message {
                        Ok(message) => {
                            let record = self.to_record(&message);
                            drop(message);
                            self.receive(record, dispatch.as_ref());
                        }
                        Err(e) => self.telemetry.consumer_error(&e),
                    }
                }
            }
        }
        self.shut_down(drain_timeout).await;
    }

    fn to_record(&self, message: &BorrowedMessage<'_>) -> SourceRecord {
        let topic = match self.topics.iter().find(|t| ***t == *message.topic()) {
            Some(t) => t.clone(),
            None => Arc::from(message.topic()),
        };
        to_record(topic, message)
    }

    /// A record arrived: admit it, or hold it until due.
    fn receive(&mut self, record: SourceRecord, dispatch: &dyn Dispatch) {
        let Some(due) = self.due else {
            return self.admit(record, dispatch);
        };
        let tp: Tp = (record.topic.clone(), record.partition);
        let generation = self.flow.generation(&tp);
        if let Some(held) = self.held.get_mut(&tp) {
            if held.generation == generation {
                // Records behind a held one wait behind it, in order.
                held.records.push_back(record);
                self.report_held();
                return;
            }
            // Held under an earlier assignment: that partition was revoked.
            self.held.remove(&tp);
        }
        match due(&record) {
            Some(at) if at > SystemTime::now() => {
                self.pause(std::slice::from_ref(&tp));
                self.schedule(&tp, at);
                self.held.insert(
                    tp,
                    Held {
                        generation,
                        records: VecDeque::from([record]),
                    },
                );
                self.report_held();
            }
            _ => self.admit(record, dispatch),
        }
    }

    /// A held partition's timer fired: admit what is due, then resume it or
    /// wait for the next due time.
    fn release(&mut self, tp: &Tp, dispatch: &dyn Dispatch) {
        let Some(due) = self.due else { return };
        let current = self.flow.generation(tp);
        let Some(mut held) = self.held.remove(tp) else { return };
        if held.generation != current {
            self.report_held();
            return;
        }
        while let Some(front) = held.records.front() {
            match due(front) {
                Some(at) if at > SystemTime::now() => {
                    self.schedule(tp, at);
                    self.held.insert(tp.clone(), held);
                    self.report_held();
                    return;
                }
                _ => {
                    let record = held.records.pop_front().expect("front exists");
                    self.admit(record, dispatch);
                }
            }
        }
        self.report_held();
        if current.is_some() && !self.flow.is_paused(tp) {
            if let Err(e) = self.consumer.resume(&partitions_tpl(std::slice::from_ref(tp))) {
                self.telemetry.consumer_error(&e);
            }
        }
    }

    fn schedule(&mut self, tp: &Tp, at: SystemTime) {
        let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
        match self.timer_keys.get(tp) {
            Some(key) => self.timers.reset(key, wait),
            None => {
                let key = self.timers.insert(tp.clone(), wait);
                self.timer_keys.insert(tp.clone(), key);
            }
        }
    }

    fn report_held(&self) {
        let n: usize = self.held.values().map(|h| h.records.len()).sum();
        self.telemetry.retry_records_waiting(n);
    }

    fn pause(&self, tps: &[Tp]) {
        if let Err(e) = self.consumer.pause(&partitions_tpl(tps)) {
            self.telemetry.consumer_error(&e);
        }
    }

    fn admit(&self, record: SourceRecord, dispatch: &dyn Dispatch) {
        self.telemetry.record_consumed(&record);
        let tp: Tp = (record.topic.clone(), record.partition);
        let (done, pause) = self.flow.admit(&tp, record.offset);
        if !pause.is_empty() {
            self.pause(&pause);
            self.telemetry.partitions_paused(pause.len(), self.flow.paused_count());
        }
        dispatch.dispatch(record, done);
    }

    fn apply(&self, actions: Actions) {
        if !actions.store.is_empty() {
            match offsets_tpl(&actions.store).and_then(|tpl| self.consumer.store_offsets(&tpl)) {
                Ok(()) => {}
                // A partition revoked meanwhile cannot be stored; its next owner re-reads.
                Err(e) => self.telemetry.offset_store_failed(&e),
            }
        }
        // A partition holding a record until due stays paused until then.
        let resume: Vec<Tp> = actions
            .resume
            .into_iter()
            .filter(|tp| !self.held.contains_key(tp))
            .collect();
        if !resume.is_empty() {
            let still_paused = self.flow.paused_count();
            if let Err(e) = self.consumer.resume(&partitions_tpl(&resume)) {
                self.telemetry.consumer_error(&e);
            }
            self.telemetry.partitions_paused(0, still_paused);
            if still_paused + resume.len() >= self.flow.assigned_count() {
                // Every partition was paused: the fetcher may be asleep.
                self.wake_fetcher(&resume[0]);
            }
        }
    }

    /// librdkafka's broker thread sleeps for up to a second when none of its
    /// partitions can be fetched, and resuming a partition does not wake it:
    /// with every partition paused by the limits, each resume would stall
    /// intake for up to a second. Any request through that thread wakes it,
    /// so a watermark query of a resumed partition (one small request, on a
    /// blocking thread, at most one at a time) gets fetching going at once.
    fn wake_fetcher(&self, tp: &Tp) {
        if self.waking.swap(true, Ordering::AcqRel) {
            return;
        }
        let (consumer, waking) = (self.consumer.clone(), self.waking.clone());
        let (topic, partition) = (tp.0.clone(), tp.1);
        tokio::task::spawn_blocking(move || {
            let _ = consumer.fetch_watermarks(&topic, partition, Duration::from_secs(5));
            waking.store(false, Ordering::Release);
        });
    }

    async fn shut_down(self, drain_timeout: Duration) {
        let assigned = self.flow.assigned();
        if !assigned.is_empty() {
            // Stop fetching; nothing more is admitted.
            let _ = self.consumer.pause(&partitions_tpl(&assigned));
        }
        let deadline = tokio::time::Instant::now() + drain_timeout;
        tracing::info!(
            in_flight = self.flow.in_flight(),
            "shutting down: draining in-flight events"
        );
        loop {
            self.apply(self.flow.take_actions());
            if self.flow.in_flight() == 0 {
                break;
            }
            tokio::select! {
                _ = self.flow.woken() => {}
                _ = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(
                        in_flight = self.flow.in_flight(),
                        "drain deadline passed; unfinished events stay uncommitted and will be delivered again"
                    );
                    break;
                }
            }
        }
        self.apply(self.flow.take_actions());
        let finished = self.flow.committable();
        if !finished.is_empty() {
            let result = offsets_tpl(&finished).and_then(|tpl| {
                self.consumer.store_offsets(&tpl)?;
                self.consumer.commit(&tpl, CommitMode::Sync)
            });
            self.telemetry
                .offsets_committed(result.as_ref().map(|_| ()).map_err(|e| e as _));
        }
        // Whatever is still in flight is abandoned now, so the revoke callback
        // that closing triggers has nothing to wait for. Closing leaves the
        // group; dropping polls until closed: keep it off the async workers.
        let (_, abandoned) = self.flow.revoke(&assigned);
        if abandoned > 0 {
            tracing::warn!(abandoned, "events left unfinished at shutdown");
        }
        let consumer = self.consumer;
        let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
        tracing::info!("left the consumer group");
    }
}

pub(crate) fn to_record(topic: Arc<str>, message: &BorrowedMessage<'_>) -> SourceRecord {
    let headers = message
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| RecordHeader {
                    name: h.key.to_owned(),
                    value: h.value.map(bytes::Bytes::copy_from_slice),
                })
                .collect()
        })
        .unwrap_or_default();
    SourceRecord {
        topic,
        partition: message.partition(),
        offset: message.offset(),
        timestamp_ms: message.timestamp().to_millis(),
        key: message.key().map(bytes::Bytes::copy_from_slice),
        value: message.payload().map(bytes::Bytes::copy_from_slice).unwrap_or_default(),
        headers,
    }
}

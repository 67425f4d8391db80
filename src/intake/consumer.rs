//! The consumer loop: it takes records, hands them on, holds those not yet
//! due ([`crate::intake::hold`]), pauses and resumes partitions, stores
//! offsets as events finish, checks its own progress
//! ([`crate::intake::watchdog`]), and drains at shutdown. The callbacks
//! librdkafka makes are in [`crate::intake::context`].
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

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::StreamExt;
use parking_lot::Mutex;
use tokio_util::time::{delay_queue, DelayQueue};

use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::topic_partition_list::Offset;
use tokio_util::sync::CancellationToken;

use crate::config::kafka::{GroupProtocol, KafkaConfig};
use crate::event::SourceRecord;
use crate::intake::context::{offsets_tpl, partitions_tpl, positions, IntakeContext};
use crate::intake::flow::{Actions, Completion, Flow, Fullness, Tp};
use crate::intake::hold::{record_size, Held, Holding, Timing, Waiting};
use crate::intake::offsets::{Offsets, Seen};
use crate::intake::watchdog::{self, Answer, Finding, Sight, Watchdog};
use crate::intake::Dispatch;
use crate::telemetry::{Expired, Telemetry};

/// What one consumer reads, and whether it holds records until due.
pub struct ConsumerSpec {
    /// `consumer` metric label: `source` or `retry`.
    pub name: &'static str,
    pub group_id: String,
    pub topics: Vec<String>,
    /// When set, records are held until due (the retry consumer).
    pub hold: Option<Holding>,
}

/// The longest a timer is armed for; a later due time re-arms it then.
const LONGEST_TIMER: Duration = Duration::from_secs(30 * 86_400);

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
    group_id: String,
    hold: Option<Holding>,
    /// Topic names, shared by every record instead of allocated per record.
    topics: Vec<Arc<str>>,
    held: HashMap<Tp, Held>,
    timers: DelayQueue<Tp>,
    timer_keys: HashMap<Tp, delay_queue::Key>,
    /// The flow's epoch when held records were last checked against the assignment.
    epoch: u64,
    offsets: Offsets,
    /// The progress check, its timer, and the answers to its broker queries
    /// (at most one outstanding).
    watchdog: Watchdog,
    checks: tokio::time::Interval,
    answers: (tokio::sync::mpsc::Sender<Answer>, tokio::sync::mpsc::Receiver<Answer>),
    checking: bool,
    /// When Herald last resumed each partition (the progress check gives a
    /// resumed partition a whole interval before judging it).
    resumed_at: HashMap<Tp, Instant>,
}

impl Intake {
    /// Creates the consumer and subscribes to `spec.topics`.
    pub fn new(config: &KafkaConfig, spec: ConsumerSpec, flow: Arc<Flow>, telemetry: Telemetry) -> KafkaResult<Intake> {
        let context = IntakeContext {
            flow: flow.clone(),
            telemetry: telemetry.clone(),
            revoke_drain_timeout: config.revoke_drain_timeout,
            name: spec.name,
            group_id: spec.group_id.clone(),
            lag_reported: Mutex::new(HashSet::new()),
            standby_when_up: config.group_protocol == GroupProtocol::Consumer,
        };
        let consumer: StreamConsumer<IntakeContext> =
            crate::kafka::consumer_config(config, &spec.group_id).create_with_context(context)?;
        let topics: Vec<&str> = spec.topics.iter().map(String::as_str).collect();
        consumer.subscribe(&topics)?;
        let every = config.progress_check_interval;
        let mut checks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Ok(Intake {
            consumer: Arc::new(consumer),
            waking: Arc::new(AtomicBool::new(false)),
            flow,
            telemetry,
            name: spec.name,
            group_id: spec.group_id,
            hold: spec.hold,
            topics: spec.topics.iter().map(|t| Arc::from(t.as_str())).collect(),
            held: HashMap::new(),
            timers: DelayQueue::new(),
            timer_keys: HashMap::new(),
            epoch: 0,
            offsets: Offsets::default(),
            watchdog: Watchdog::new(every, !config.statistics_interval.is_zero()),
            checks,
            answers: tokio::sync::mpsc::channel(1),
            checking: false,
            resumed_at: HashMap::new(),
        })
    }

    /// The client, for tools and tests that act on it as another part of the
    /// program could (pausing a partition by hand shows the progress check
    /// at work).
    pub fn client(&self) -> Arc<StreamConsumer<IntakeContext>> {
        self.consumer.clone()
    }

    /// Consumes until `shutdown`, then drains in-flight events for at most
    /// `drain_timeout`, commits, and leaves the group.
    pub async fn run(mut self, dispatch: Arc<dyn Dispatch>, shutdown: CancellationToken, drain_timeout: Duration) {
        // When the flow became full (no records taken), if it still is.
        let mut full_since: Option<tokio::time::Instant> = None;
        loop {
            self.forget_revoked();
            let Fullness {
                full,
                all_paused: globally_paused,
            } = self.flow.fullness();
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
                    self.bound_all_out_of_order(dispatch.as_ref());
                }
                Some(expired) = self.timers.next(), if !self.timers.is_empty() => {
                    self.telemetry.consumer_woke(self.name);
                    let tp = expired.into_inner();
                    self.timer_keys.remove(&tp);
                    self.release(&tp, dispatch.as_ref());
                }
                _ = self.checks.tick() => self.start_check(),
                Some(answer) = self.answers.1.recv() => self.finish_check(answer, dispatch.as_ref()),
                message = self.consumer.recv(), if !full || globally_paused => {
                    self.telemetry.consumer_woke(self.name);
                    match message {
                        Ok(message) => {
                            let record = self.to_record(&message);
                            drop(message);
                            self.receive(record, dispatch.as_ref());
                        }
                        Err(KafkaError::MessageConsumption(RDKafkaErrorCode::InconsistentGroupProtocol)) => {
                            self.telemetry.group_protocol_mismatch(self.name, &self.group_id);
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
        crate::kafka::to_record(topic, message)
    }

    /// A record arrived: admit it, or hold it until due.
    fn receive(&mut self, record: SourceRecord, dispatch: &dyn Dispatch) {
        if !self.check_offset(&record) {
            return;
        }
        let Some(hold) = &self.hold else {
            return self.admit(record, dispatch);
        };
        let (due, in_order) = match hold.policy.timing(&record, SystemTime::now()) {
            Timing::Now => return self.admit(record, dispatch),
            Timing::InOrder(at) => (at, true),
            Timing::OutOfOrder(at) => (at, false),
        };
        let tp: Tp = (record.topic.clone(), record.partition);
        let generation = self.flow.generation(&tp);
        self.forget_if_stale(&tp, generation);
        let done = self.flow.hold(&tp, record.offset, record_size(&record));
        let held = self.held.entry(tp.clone()).or_insert_with(|| Held::new(generation));
        held.insert(due, Waiting { record, done, in_order });
        self.schedule(&tp);
        if !in_order {
            self.bound_out_of_order(&tp, dispatch);
        }
        self.update_pause(&tp);
        self.report_held();
    }

    /// Pauses `tp` while it holds an in-order record or is full, and resumes
    /// it after (unless the flow's limits keep it paused).
    fn update_pause(&mut self, tp: &Tp) {
        let Some(held) = self.held.get_mut(tp) else { return };
        let wanted = held.wants_pause();
        if wanted == held.paused {
            return;
        }
        held.paused = wanted;
        if wanted {
            self.pause(std::slice::from_ref(tp));
        } else if self.flow.generation(tp).is_some() && !self.flow.is_paused(tp) {
            self.resume(std::slice::from_ref(tp));
        }
    }

    /// Whether `record` is to be worked on: not a copy of one already handed
    /// over. Also reports records deleted before they were read: in the wait
    /// topics, skipped offsets (Herald's idempotent producer leaves none);
    /// in every topic, a group's committed offset behind the log start when
    /// a partition's first record arrives (source topics may have gaps of
    /// their own: transaction markers, compaction).
    fn check_offset(&mut self, record: &SourceRecord) -> bool {
        let tp: Tp = (record.topic.clone(), record.partition);
        let generation = self.flow.generation(&tp);
        match self.offsets.see(&tp, generation, record.offset) {
            Seen::Again => {
                self.telemetry.record_repeated(self.name, record);
                return false;
            }
            Seen::Gap { from, to } if self.hold.is_some() => {
                self.telemetry
                    .records_expired(Expired::Retries, &record.topic, record.partition, from, to)
            }
            Seen::First => self.check_committed(tp, record.offset),
            _ => {}
        }
        true
    }

    /// Compares the group's committed offset of a partition whose first
    /// record arrived with the partition's log start (off the loop): the
    /// records between them were deleted before they were read, and the
    /// client skipped them (`auto.offset.reset`).
    fn check_committed(&self, tp: Tp, first: i64) {
        let (consumer, telemetry) = (self.consumer.clone(), self.telemetry.clone());
        let (waits, name) = (self.hold.is_some(), self.name);
        tokio::task::spawn_blocking(move || {
            let committed =
                consumer.committed_offsets(partitions_tpl(std::slice::from_ref(&tp)), Duration::from_secs(10));
            let offset = committed
                .ok()
                .and_then(|tpl| tpl.find_partition(&tp.0, tp.1).map(|e| e.offset()));
            let Some(Offset::Offset(committed)) = offset else {
                return;
            };
            if committed >= first {
                return;
            }
            // Where the log starts now; read after the first record, so at
            // most that record's offset unless more expired since.
            let log_start = match consumer.fetch_watermarks(&tp.0, tp.1, Duration::from_secs(10)) {
                Ok((low, _)) => low.min(first),
                Err(e) => return telemetry.expiry_check_failed(name, &tp.0, tp.1, &e),
            };
            if committed < log_start {
                let of = if waits { Expired::Retries } else { Expired::Events };
                telemetry.records_expired(of, &tp.0, tp.1, committed, log_start);
            }
        });
    }

    /// A held partition's timer fired: start what is due, then resume the
    /// partition when no in-order record waits any more.
    fn release(&mut self, tp: &Tp, dispatch: &dyn Dispatch) {
        let current = self.flow.generation(tp);
        if self.forget_if_stale(tp, current) {
            return;
        }
        let Some(held) = self.held.get_mut(tp) else { return };
        let due = held.take_due(SystemTime::now());
        for waiting in due {
            self.start(waiting.record, waiting.done, dispatch);
        }
        self.schedule(tp);
        self.bound_out_of_order(tp, dispatch);
        self.update_pause(tp);
        if self.held.get(tp).is_some_and(|h| h.by_due.is_empty() && !h.paused) {
            self.held.remove(tp);
        }
        self.report_held();
    }

    /// Keeps what a partition holds out of order within its bounds:
    /// - when too many records finished past the oldest of them (a crash
    ///   would deliver them again), that oldest one is moved to the end of a
    ///   wait topic, so it no longer holds the commit back;
    /// - when too many (or too many bytes) are held, the oldest is moved if it
    ///   is in order where it goes; if not, the partition is not read on
    ///   until some are due (moving it would only bring it back).
    fn bound_out_of_order(&mut self, tp: &Tp, dispatch: &dyn Dispatch) {
        let Some(hold) = self.hold.clone() else { return };
        loop {
            let Some(held) = self.held.get_mut(tp) else { return };
            let Some((&oldest, &due)) = held.out_of_order.first_key_value() else {
                held.full = false;
                return;
            };
            let redelivery = self.flow.finished_after(tp, oldest) >= hold.max_out_of_order as u64;
            let crowded = held.out_of_order.len() > hold.max_out_of_order
                || held.out_of_order_bytes > hold.max_out_of_order_bytes;
            let movable = redelivery
                || (crowded
                    && held
                        .by_due
                        .get(&(due, oldest))
                        .is_some_and(|w| hold.policy.moves_in_order(&w.record, SystemTime::now())));
            if !movable {
                held.full = crowded;
                return;
            }
            let Some(mut waiting) = held.remove((due, oldest)) else {
                return;
            };
            let pause = self.flow.start(&mut waiting.done);
            if !pause.is_empty() {
                self.pause(&pause);
                self.telemetry.partitions_paused(pause.len(), self.flow.paused_count());
            }
            self.telemetry.retry_requeued(&tp.0);
            self.telemetry.record_consumed(&waiting.record);
            dispatch.requeue(waiting.record, waiting.done);
        }
    }

    fn bound_all_out_of_order(&mut self, dispatch: &dyn Dispatch) {
        if self.hold.is_none() {
            return;
        }
        let tps: Vec<Tp> = self
            .held
            .iter()
            .filter(|(_, h)| !h.out_of_order.is_empty())
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in tps {
            self.bound_out_of_order(&tp, dispatch);
            self.update_pause(&tp);
        }
        self.report_held();
    }

    /// Drops (abandons) what is held for `tp` under an assignment other than
    /// `current`; returns whether it did. The next owner holds those records again.
    fn forget_if_stale(&mut self, tp: &Tp, current: Option<u64>) -> bool {
        match self.held.get(tp) {
            Some(held) if held.generation != current => {}
            _ => return false,
        }
        if let Some(held) = self.held.remove(tp) {
            held.abandon();
        }
        if let Some(key) = self.timer_keys.remove(tp) {
            self.timers.remove(&key);
        }
        self.report_held();
        true
    }

    /// After a rebalance, lets go of what is held for partitions no longer ours.
    fn forget_revoked(&mut self) {
        let epoch = self.flow.epoch();
        if epoch == self.epoch {
            return;
        }
        self.epoch = epoch;
        let tps: Vec<Tp> = self.held.keys().cloned().collect();
        for tp in tps {
            let current = self.flow.generation(&tp);
            self.forget_if_stale(&tp, current);
        }
        let flow = &self.flow;
        self.offsets.retain(|tp, g| flow.generation(tp) == g);
        self.resumed_at.retain(|tp, _| flow.generation(tp).is_some());
    }

    /// Arms `tp`'s timer for its earliest held record.
    fn schedule(&mut self, tp: &Tp) {
        let Some(at) = self.held.get(tp).and_then(Held::next_due) else {
            if let Some(key) = self.timer_keys.remove(tp) {
                self.timers.remove(&key);
            }
            return;
        };
        let wait = at
            .duration_since(SystemTime::now())
            .unwrap_or_default()
            .min(LONGEST_TIMER);
        match self.timer_keys.get(tp) {
            Some(key) => self.timers.reset(key, wait),
            None => {
                let key = self.timers.insert(tp.clone(), wait);
                self.timer_keys.insert(tp.clone(), key);
            }
        }
    }

    fn report_held(&self) {
        let (mut all, mut out_of_order) = (0, 0);
        for held in self.held.values() {
            all += held.by_due.len();
            out_of_order += held.out_of_order.len();
        }
        self.telemetry.retry_records_waiting(all, out_of_order);
    }

    fn pause(&self, tps: &[Tp]) {
        if let Err(e) = self.consumer.pause(&partitions_tpl(tps)) {
            self.telemetry.consumer_error(&e);
        }
    }

    fn resume(&mut self, tps: &[Tp]) {
        if let Err(e) = self.consumer.resume(&partitions_tpl(tps)) {
            self.telemetry.consumer_error(&e);
        }
        let now = Instant::now();
        for tp in tps {
            self.resumed_at.insert(tp.clone(), now);
        }
    }

    /// Asks the broker (off the loop) where the assigned partitions stand;
    /// [`Intake::finish_check`] takes the answer.
    fn start_check(&mut self) {
        self.pass_positions();
        if self.checking {
            return;
        }
        let tps = watchdog::generations(&self.flow.progress());
        if tps.is_empty() {
            return;
        }
        self.checking = true;
        let (consumer, answers) = (self.consumer.clone(), self.answers.0.clone());
        tokio::task::spawn_blocking(move || {
            let answer = watchdog::query_offsets(consumer.as_ref(), &tps);
            let _ = answers.blocking_send(answer);
        });
    }

    /// Lets the commit pass what the client read after the last record of
    /// each partition (transaction markers, see
    /// [`crate::intake::progress::PartitionProgress::pass_to`]). Between
    /// polls, so every record before the client's position was taken in.
    fn pass_positions(&mut self) {
        match self.consumer.position() {
            Ok(tpl) => self.flow.passed(&positions(&tpl)),
            Err(e) => self.telemetry.consumer_error(&e),
        }
        self.apply(self.flow.take_actions());
    }

    /// Takes in where the partitions stand, then repairs what the progress
    /// check finds: a partition meant to be read and not read is resumed, a
    /// retry held past its due time is released.
    fn finish_check(&mut self, answer: Answer, dispatch: &dyn Dispatch) {
        self.checking = false;
        match answer {
            Ok(observed) => {
                for (tp, generation, observed) in observed {
                    self.flow.observe_assigned(&tp, generation, observed);
                }
            }
            Err(e) => self.telemetry.progress_check_failed(self.name, &e),
        }
        let sights: Vec<Sight> = self
            .flow
            .progress()
            .into_iter()
            .map(|view| {
                let held = self
                    .held
                    .get(&view.tp)
                    .filter(|h| h.generation == Some(view.generation));
                Sight {
                    holding: held.is_some_and(|h| h.paused),
                    next_due: held.and_then(Held::next_due),
                    resumed_at: self.resumed_at.get(&view.tp).copied(),
                    view,
                }
            })
            .collect();
        let findings = self.watchdog.check(Instant::now(), SystemTime::now(), &sights);
        for sight in &sights {
            self.flow
                .note_read(&sight.view.tp, sight.view.generation, sight.view.read_to);
        }
        for finding in findings {
            match finding {
                Finding::NotRead {
                    tp,
                    generation,
                    read_to,
                    end,
                } => {
                    let times = self.flow.note_not_read(&tp, generation, read_to, end);
                    self.telemetry
                        .partition_not_read(self.name, (&tp.0, tp.1), (read_to, end), times);
                    self.resume(std::slice::from_ref(&tp));
                    self.wake_fetcher(&tp);
                }
                Finding::HeldPastDue { tp, due } => {
                    self.telemetry.retry_held_past_due(self.name, (&tp.0, tp.1), due);
                    self.release(&tp, dispatch);
                }
            }
        }
    }

    fn admit(&self, record: SourceRecord, dispatch: &dyn Dispatch) {
        self.telemetry.record_consumed(&record);
        let tp: Tp = (record.topic.clone(), record.partition);
        let (done, pause) = self.flow.admit(&tp, record.offset, record_size(&record));
        if !pause.is_empty() {
            self.pause(&pause);
            self.telemetry.partitions_paused(pause.len(), self.flow.paused_count());
        }
        dispatch.dispatch(record, done);
    }

    /// A held record is due: it becomes an event in flight.
    fn start(&self, record: SourceRecord, mut done: Completion, dispatch: &dyn Dispatch) {
        self.telemetry.record_consumed(&record);
        let pause = self.flow.start(&mut done);
        if !pause.is_empty() {
            self.pause(&pause);
            self.telemetry.partitions_paused(pause.len(), self.flow.paused_count());
        }
        dispatch.dispatch(record, done);
    }

    fn apply(&mut self, actions: Actions) {
        if !actions.store.is_empty() {
            match offsets_tpl(&actions.store).and_then(|tpl| self.consumer.store_offsets(&tpl)) {
                Ok(()) => {}
                // A partition revoked meanwhile cannot be stored; its next owner re-reads.
                Err(e) => self.telemetry.offset_store_failed(&e),
            }
        }
        // A partition holding an in-order record until due stays paused until then.
        let resume: Vec<Tp> = actions
            .resume
            .into_iter()
            .filter(|tp| !self.held.get(tp).is_some_and(|h| h.paused))
            .collect();
        if !resume.is_empty() {
            let still_paused = self.flow.paused_count();
            self.resume(&resume);
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
    /// (With another partition still fetchable, the thread is not asleep but
    /// waiting on that partition's long poll: `fetch.wait.max.ms`, which
    /// Herald keeps short for this, see `kafka::consumer_config`.)
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

    async fn shut_down(mut self, drain_timeout: Duration) {
        // Held records are not worked on: the next owner holds them again.
        let held: usize = self.held.drain().map(|(_, h)| h.abandon()).sum();
        if held > 0 {
            tracing::info!(held, "letting go of retries waiting until due");
        }
        self.report_held();
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
        self.pass_positions();
        let finished = self.flow.committable();
        if !finished.is_empty() {
            let result = offsets_tpl(&finished).and_then(|tpl| {
                self.consumer.store_offsets(&tpl)?;
                self.consumer.commit(&tpl, CommitMode::Sync)
            });
            self.telemetry
                .offsets_committed(result.as_ref().map(|_| ()).map_err(|e| e as _));
        }
        // A progress check still asking the broker holds the client: let it
        // answer (bounded), so that dropping the client below closes it.
        if self.checking {
            let _ = tokio::time::timeout(Duration::from_secs(35), self.answers.1.recv()).await;
        }
        // Whatever is still in flight is abandoned now, so the revoke callback
        // that closing triggers has nothing to wait for. Closing leaves the
        // group; dropping polls until closed: keep it off the async workers.
        let (_, abandoned) = self.flow.revoke(&assigned);
        if abandoned > 0 {
            tracing::warn!(abandoned, "events left unfinished at shutdown");
        }
        let consumer = self.consumer;
        if let Err(e) = tokio::task::spawn_blocking(move || drop(consumer)).await {
            self.telemetry.shutdown_failed("consumer_close", &e);
        }
        tracing::info!("left the consumer group");
    }
}

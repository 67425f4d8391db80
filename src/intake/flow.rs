//! Flow control between the consumer and the deliveries it starts.
//!
//! [`Flow`] is the one place that knows, per assigned partition, which events
//! are in flight. The consumer loop admits each record (and learns whether to
//! pause a partition); delivery tasks finish their [`Completion`] from any
//! thread; the loop then takes [`Actions`]: offsets to store (the contiguous
//! finished prefix) and partitions to resume. The rebalance callback waits
//! here for revoked partitions to drain.
//!
//! Limits never buffer: a partition with `max_in_flight_per_partition`
//! events in flight is paused until half have finished. Reaching
//! `max_in_flight` events, or `max_in_flight_bytes` of them, overall makes
//! the flow *full* (one event larger than the whole budget is still let
//! through, alone): the consumer loop stops
//! taking records (librdkafka's prefetch, bounded by
//! `queued.max.messages.kbytes`, waits) until a quarter of the budget is free
//! again. Pausing every partition instead would make librdkafka drop that
//! prefetch and fetch it again after each resume. Should the flow stay full
//! for long, the loop pauses every partition ([`Flow::pause_all`]) so that it
//! can go on polling (rebalances, `max.poll.interval.ms`) without admitting.
//!
//! Every assignment gets a new generation; a completion from an older one
//! (its partition was revoked and perhaps re-assigned meanwhile) is ignored,
//! so an abandoned event can never move a new owner's offsets.
//!
//! A consumer that holds records until they are due (the retry tiers)
//! registers each held record with [`Flow::hold`]: its offset then keeps the
//! commit from passing it, but it is not work in flight (it counts toward no
//! limit, and neither a rebalance nor shutdown waits for it) until
//! [`Flow::start`] turns it into an event in flight.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use parking_lot::{Condvar, Mutex, MutexGuard};
use tokio::sync::Notify;

use crate::intake::brokers::BrokerView;
use crate::intake::position::{Observed, PartitionPosition};
use crate::intake::progress::PartitionProgress;

/// A topic-partition.
pub type Tp = (Arc<str>, i32);

/// Limits on events in flight.
#[derive(Debug, Clone, Copy)]
pub struct FlowLimits {
    pub per_partition: usize,
    pub total: usize,
    /// Bytes of the events in flight (key, value and headers).
    pub bytes: usize,
}

impl FlowLimits {
    /// The limits `kafka.max_in_flight_per_partition`, `kafka.max_in_flight`
    /// and `kafka.max_in_flight_bytes` set for each consumer.
    pub fn of(kafka: &crate::config::kafka::KafkaConfig) -> FlowLimits {
        FlowLimits {
            per_partition: kafka.max_in_flight_per_partition,
            total: kafka.max_in_flight,
            bytes: kafka.max_in_flight_bytes,
        }
    }
}

#[derive(Debug)]
struct Partition {
    progress: PartitionProgress,
    generation: u64,
    paused: bool,
    /// Registered records held until due (not in flight yet).
    held: usize,
    /// When each event in flight started, and its size (held records are
    /// not in it).
    started: BTreeMap<i64, (Instant, usize)>,
    /// When an offset of this partition was last committed (or it was
    /// assigned, if none was since).
    last_commit: SystemTime,
    /// The offset last committed for it under this assignment (the next to
    /// read), if one was.
    committed_offset: Option<i64>,
    /// Its offsets, as the client and the broker last reported.
    position: PartitionPosition,
    /// Found not read by the progress check, and since when.
    not_read: Option<NotRead>,
}

impl Partition {
    fn new(generation: u64, paused: bool) -> Partition {
        Partition {
            progress: PartitionProgress::default(),
            generation,
            paused,
            held: 0,
            started: BTreeMap::new(),
            last_commit: SystemTime::now(),
            committed_offset: None,
            position: PartitionPosition::default(),
            not_read: None,
        }
    }

    /// Events in flight: registered and not held.
    fn active(&self) -> usize {
        self.progress.in_flight() - self.held
    }
}

#[derive(Debug, Default)]
struct State {
    partitions: HashMap<Tp, Partition>,
    /// Events in flight over all partitions (held records excluded).
    total: usize,
    /// Their bytes.
    bytes: usize,
    generation: u64,
    /// Changes whenever partitions are assigned or revoked.
    epoch: u64,
    /// `max_in_flight` reached: take no records until three quarters is free.
    full: bool,
    /// Every partition was paused because the flow stayed full.
    globally_paused: bool,
}

/// What the consumer loop should do after completions.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Actions {
    /// Offsets to store for commit (the next offset to consume).
    pub store: Vec<(Tp, i64)>,
    /// Partitions to resume.
    pub resume: Vec<Tp>,
}

/// How one assigned partition is doing, for metrics and `/status`.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionHealth {
    pub tp: Tp,
    /// Events in flight (started, unfinished).
    pub in_flight: usize,
    /// Records held until due.
    pub held: usize,
    /// How long the oldest event in flight has been (zero when none).
    pub oldest_unfinished: std::time::Duration,
    pub last_commit: SystemTime,
    /// Records behind the partition's end, as last reported.
    pub lag: Option<i64>,
    /// The progress check found it not read (see [`crate::intake::watchdog`]).
    pub not_read: Option<NotRead>,
}

/// A partition Herald meant to read that the client did not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotRead {
    /// When the progress check first found it so (this time round).
    pub since: SystemTime,
    /// How often it was found so, and resumed, since.
    pub times: u32,
    /// Where it was read to, and its end, when last found.
    pub read_to: i64,
    pub end: i64,
}

/// What the progress check needs of one assigned partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgressView {
    pub tp: Tp,
    pub generation: u64,
    /// Paused by the in-flight limits (or with every partition).
    pub paused: bool,
    /// How far it is known to have been read.
    pub read_to: Option<i64>,
    /// Its end offset.
    pub end: Option<i64>,
}

/// Shared flow state. See the module docs.
#[derive(Debug)]
pub struct Flow {
    state: Mutex<State>,
    drained: Condvar,
    wake: Notify,
    limits: FlowLimits,
    assigned_once: AtomicBool,
    brokers: BrokerView,
}

/// Proof that an event was admitted; finish it when every delivery it caused
/// is done. Dropping it unfinished leaves the offset uncommitted.
#[derive(Debug)]
pub struct Completion {
    flow: Arc<Flow>,
    tp: Tp,
    offset: i64,
    generation: u64,
    finished: bool,
    /// Registered by [`Flow::hold`] and not yet started.
    held: bool,
    /// The record's size, counted while it is in flight.
    bytes: usize,
}

impl Completion {
    /// The event is finished: its offset may become committable.
    pub fn finish(mut self) {
        self.finished = true;
        self.flow.finish(&self.tp, self.offset, self.generation, self.held);
    }

    /// The event was not finished (hard stop): its offset stays uncommitted.
    pub fn abandon(mut self) {
        self.finished = true;
    }

    /// The record's offset.
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// The record's partition.
    pub fn tp(&self) -> &Tp {
        &self.tp
    }

    /// The assignment of its partition that admitted it.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether the record is held (registered, not yet started).
    pub fn is_held(&self) -> bool {
        self.held
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        if !self.finished {
            tracing::error!(
                topic = %self.tp.0,
                partition = self.tp.1,
                offset = self.offset,
                "event dropped unfinished; its offset will not be committed"
            );
        }
    }
}

/// How full a flow is (see [`Flow::fullness`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fullness {
    /// `max_in_flight` is reached: the consumer takes no records.
    pub full: bool,
    /// Every partition is paused, because the flow stayed full.
    pub all_paused: bool,
}

impl Flow {
    /// A flow with no partition assigned yet.
    pub fn new(limits: FlowLimits) -> Arc<Flow> {
        Arc::new(Flow {
            state: Mutex::new(State::default()),
            drained: Condvar::new(),
            wake: Notify::new(),
            limits,
            assigned_once: AtomicBool::new(false),
            brokers: BrokerView::default(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock()
    }

    /// Partitions were assigned (fresh progress, new generation).
    pub fn assign(&self, tps: &[Tp]) {
        let mut state = self.lock();
        state.generation += 1;
        state.epoch += 1;
        let generation = state.generation;
        let paused = state.globally_paused;
        for tp in tps {
            if let Some(old) = state.partitions.insert(tp.clone(), Partition::new(generation, paused)) {
                state.total -= old.active();
            }
        }
        self.assigned_once.store(true, Ordering::Release);
    }

    /// The consumer is a member of its group with no partitions to read (a
    /// standby): ready, as if given an empty assignment. The consumer
    /// protocol (KIP-848) never tells a member of an empty assignment that
    /// did not change.
    pub fn joined_without_partitions(&self) {
        self.assigned_once.store(true, Ordering::Release);
    }

    /// The brokers as this consumer's client last saw them.
    pub fn brokers(&self) -> &BrokerView {
        &self.brokers
    }

    /// Whether the group has given this consumer an assignment (perhaps
    /// empty) yet.
    pub fn has_assignment(&self) -> bool {
        self.assigned_once.load(Ordering::Acquire)
    }

    /// How many partitions are currently tracked.
    pub fn assigned_count(&self) -> usize {
        self.lock().partitions.len()
    }

    /// Partitions currently tracked.
    pub fn assigned(&self) -> Vec<Tp> {
        self.lock().partitions.keys().cloned().collect()
    }

    /// Admits the record at `offset`, of `bytes`; returns its completion and
    /// the partitions to pause now.
    pub fn admit(self: &Arc<Self>, tp: &Tp, offset: i64, bytes: usize) -> (Completion, Vec<Tp>) {
        let mut state = self.lock();
        let (mut completion, _) = Self::register(self, &mut state, tp, offset, bytes);
        completion.held = false;
        let pause = self.count_started(&mut state, tp, offset, bytes);
        (completion, pause)
    }

    /// Registers the record at `offset` (of `bytes`) as held until due: the
    /// commit will not pass it, but it is not in flight until [`Flow::start`].
    pub fn hold(self: &Arc<Self>, tp: &Tp, offset: i64, bytes: usize) -> Completion {
        let mut state = self.lock();
        let (completion, part) = Self::register(self, &mut state, tp, offset, bytes);
        part.held += 1;
        completion
    }

    /// A held record is due: it becomes an event in flight. Returns the
    /// partitions to pause now.
    pub fn start(&self, done: &mut Completion) -> Vec<Tp> {
        if !done.held {
            return Vec::new();
        }
        done.held = false;
        let mut state = self.lock();
        match state.partitions.get_mut(&done.tp) {
            Some(part) if part.generation == done.generation => part.held -= 1,
            // Revoked meanwhile: the completion will be ignored anyway.
            _ => return Vec::new(),
        }
        self.count_started(&mut state, &done.tp, done.offset, done.bytes)
    }

    fn register<'s>(
        self: &Arc<Self>,
        state: &'s mut State,
        tp: &Tp,
        offset: i64,
        bytes: usize,
    ) -> (Completion, &'s mut Partition) {
        let current_generation = state.generation;
        let globally_paused = state.globally_paused;
        let part = state
            .partitions
            .entry(tp.clone())
            .or_insert_with(|| Partition::new(current_generation, globally_paused));
        part.progress.begin(offset);
        let completion = Completion {
            flow: self.clone(),
            tp: tp.clone(),
            offset,
            generation: part.generation,
            finished: false,
            held: true,
            bytes,
        };
        (completion, part)
    }

    /// Counts one more event in flight on `tp`; returns the partitions to pause.
    fn count_started(&self, state: &mut State, tp: &Tp, offset: i64, bytes: usize) -> Vec<Tp> {
        let mut pause = Vec::new();
        if let Some(part) = state.partitions.get_mut(tp) {
            part.started.insert(offset, (Instant::now(), bytes));
            if !part.paused && part.active() >= self.limits.per_partition {
                part.paused = true;
                pause.push(tp.clone());
            }
        }
        state.total += 1;
        state.bytes += bytes;
        if state.total >= self.limits.total || state.bytes >= self.limits.bytes {
            state.full = true;
        }
        pause
    }

    fn finish(&self, tp: &Tp, offset: i64, generation: u64, held: bool) {
        {
            let mut state = self.lock();
            let Some(part) = state.partitions.get_mut(tp) else {
                return;
            };
            if part.generation != generation || !part.progress.finish(offset) {
                return;
            }
            if held {
                part.held -= 1;
            } else {
                let bytes = part.started.remove(&offset).map_or(0, |(_, bytes)| bytes);
                state.total -= 1;
                state.bytes -= bytes;
            }
        }
        self.drained.notify_all();
        self.wake.notify_one();
    }

    /// Resolves when a completion may have produced actions.
    pub async fn woken(&self) {
        self.wake.notified().await
    }

    /// Offsets to store and partitions to resume since the last call.
    pub fn take_actions(&self) -> Actions {
        let mut state = self.lock();
        let state = &mut *state;
        if state.full && state.total <= self.limits.total * 3 / 4 && state.bytes <= self.limits.bytes / 4 * 3 {
            state.full = false;
            state.globally_paused = false;
        }
        let resume_below = self.limits.per_partition / 2;
        let mut actions = Actions::default();
        for (tp, part) in state.partitions.iter_mut() {
            if let Some(offset) = part.progress.take_advance() {
                actions.store.push((tp.clone(), offset));
            }
            if part.paused && !state.globally_paused && part.active() <= resume_below {
                part.paused = false;
                actions.resume.push(tp.clone());
            }
        }
        actions
    }

    #[cfg(test)]
    fn is_full(&self) -> bool {
        self.fullness().full
    }

    #[cfg(test)]
    fn is_globally_paused(&self) -> bool {
        self.fullness().all_paused
    }

    /// How full the flow is.
    pub fn fullness(&self) -> Fullness {
        let state = self.lock();
        Fullness {
            full: state.full,
            all_paused: state.globally_paused,
        }
    }

    /// The flow has stayed full for long: pauses every partition (returned)
    /// until a quarter of the budget is free, so the consumer can go on
    /// polling without admitting records.
    pub fn pause_all(&self) -> Vec<Tp> {
        let mut state = self.lock();
        let state = &mut *state;
        if !state.full || state.globally_paused {
            return Vec::new();
        }
        state.globally_paused = true;
        let mut pause = Vec::new();
        for (tp, p) in state.partitions.iter_mut() {
            if !p.paused {
                p.paused = true;
                pause.push(tp.clone());
            }
        }
        pause
    }

    /// The generation of `tp`'s current assignment, if it is assigned.
    pub fn generation(&self, tp: &Tp) -> Option<u64> {
        self.lock().partitions.get(tp).map(|p| p.generation)
    }

    /// Changes whenever partitions are assigned or revoked, so a consumer can
    /// tell when to look for records it holds of partitions it lost.
    pub fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    /// Records of `tp` past `offset` that are finished but cannot be
    /// committed yet because `offset` is not: what a crash would deliver again.
    pub fn finished_after(&self, tp: &Tp, offset: i64) -> u64 {
        self.lock()
            .partitions
            .get(tp)
            .map_or(0, |p| p.progress.finished_after(offset))
    }

    /// These partitions' offsets were committed: each the next to read.
    pub fn committed(&self, offsets: &[(Tp, i64)]) {
        let now = SystemTime::now();
        let mut state = self.lock();
        for (tp, offset) in offsets {
            if let Some(part) = state.partitions.get_mut(tp) {
                part.last_commit = now;
                part.committed_offset = Some(part.committed_offset.map_or(*offset, |c| c.max(*offset)));
            }
        }
    }

    /// The offset this member last committed for `tp` while it has it (a
    /// record before it is never read again by the group), if it did.
    pub fn committed_offset(&self, tp: &Tp) -> Option<i64> {
        self.lock().partitions.get(tp).and_then(|p| p.committed_offset)
    }

    /// The client's or the broker's latest figures for `tp`'s offsets.
    pub fn observe(&self, tp: &Tp, observed: Observed) {
        if let Some(part) = self.lock().partitions.get_mut(tp) {
            part.position.observe(observed);
        }
    }

    /// Like [`Flow::observe`], if `tp` is still under assignment `generation`
    /// (the figures were asked for before a rebalance).
    pub fn observe_assigned(&self, tp: &Tp, generation: u64, observed: Observed) {
        if let Some(part) = self.lock().partitions.get_mut(tp) {
            if part.generation == generation {
                part.position.observe(observed);
            }
        }
    }

    /// Every assigned partition as the progress check sees it. The flow
    /// being full counts as paused: nothing is taken from any partition then.
    pub fn progress(&self) -> Vec<ProgressView> {
        let state = self.lock();
        state
            .partitions
            .iter()
            .map(|(tp, p)| ProgressView {
                tp: tp.clone(),
                generation: p.generation,
                paused: p.paused || state.full || state.globally_paused,
                read_to: p.position.read_to(p.progress.next()),
                end: p.position.end(),
            })
            .collect()
    }

    /// The progress check found `tp` (under assignment `generation`) not
    /// read: read to `read_to`, records up to `end`. Returns how many times
    /// in a row it was found so.
    pub fn note_not_read(&self, tp: &Tp, generation: u64, read_to: i64, end: i64) -> u32 {
        let mut state = self.lock();
        let Some(part) = state.partitions.get_mut(tp).filter(|p| p.generation == generation) else {
            return 0;
        };
        let note = match part.not_read {
            Some(before) => NotRead {
                times: before.times + 1,
                read_to,
                end,
                ..before
            },
            None => NotRead {
                since: SystemTime::now(),
                times: 1,
                read_to,
                end,
            },
        };
        part.not_read = Some(note);
        note.times
    }

    /// `tp` is read to `read_to` now: a partition found not read before is
    /// read again once that moved.
    pub fn note_read(&self, tp: &Tp, generation: u64, read_to: Option<i64>) {
        let mut state = self.lock();
        let Some(part) = state.partitions.get_mut(tp).filter(|p| p.generation == generation) else {
            return;
        };
        if let (Some(note), Some(read_to)) = (part.not_read, read_to) {
            if read_to > note.read_to {
                part.not_read = None;
            }
        }
    }

    /// How every assigned partition is doing.
    pub fn health(&self) -> Vec<PartitionHealth> {
        let now = Instant::now();
        let state = self.lock();
        let mut out: Vec<PartitionHealth> = state
            .partitions
            .iter()
            .map(|(tp, p)| PartitionHealth {
                tp: tp.clone(),
                in_flight: p.active(),
                held: p.held,
                oldest_unfinished: p
                    .started
                    .values()
                    .map(|(t, _)| *t)
                    .min()
                    .map_or(std::time::Duration::ZERO, |t| now.duration_since(t)),
                last_commit: p.last_commit,
                lag: p.position.lag(),
                not_read: p.not_read,
            })
            .collect();
        out.sort_by(|a, b| a.tp.cmp(&b.tp));
        out
    }

    /// Whether the limits keep `tp` paused.
    pub fn is_paused(&self, tp: &Tp) -> bool {
        self.lock().partitions.get(tp).is_some_and(|p| p.paused)
    }

    /// Partitions currently paused by the limits.
    pub fn paused_count(&self) -> usize {
        self.lock().partitions.values().filter(|p| p.paused).count()
    }

    /// Events in flight over all partitions.
    pub fn in_flight(&self) -> usize {
        self.lock().total
    }

    /// Bytes of the events in flight.
    pub fn in_flight_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Blocks the calling thread until `tps` have nothing in flight or
    /// `deadline` passes; returns what is still in flight.
    pub fn wait_drained(&self, tps: &[Tp], deadline: Instant) -> usize {
        let mut state = self.lock();
        loop {
            let remaining: usize = tps
                .iter()
                .filter_map(|tp| state.partitions.get(tp))
                .map(Partition::active)
                .sum();
            let now = Instant::now();
            if remaining == 0 || now >= deadline {
                return remaining;
            }
            self.drained.wait_until(&mut state, deadline);
        }
    }

    /// Stops tracking `tps`; returns their final committable offsets and how
    /// many events were abandoned in flight (held records are not counted:
    /// the next owner holds them again).
    pub fn revoke(&self, tps: &[Tp]) -> (Vec<(Tp, i64)>, usize) {
        let mut state = self.lock();
        state.epoch += 1;
        let mut stores = Vec::new();
        let mut abandoned = 0;
        for tp in tps {
            if let Some(mut part) = state.partitions.remove(tp) {
                abandoned += part.active();
                state.total -= part.active();
                state.bytes -= part.started.values().map(|(_, bytes)| bytes).sum::<usize>();
                if let Some(offset) = part.progress.take_advance() {
                    stores.push((tp.clone(), offset));
                }
            }
        }
        (stores, abandoned)
    }

    /// Takes in the client's position of each partition (one past the last
    /// record or transaction marker it handed over; see
    /// [`PartitionProgress::pass_to`]). Called where every record before a
    /// position has been admitted or held: from the consumer loop between
    /// polls, and from the rebalance callback before a revoke.
    pub fn passed(&self, positions: &[(Tp, i64)]) {
        let mut state = self.lock();
        for (tp, position) in positions {
            if let Some(part) = state.partitions.get_mut(tp) {
                part.progress.pass_to(*position);
            }
        }
    }

    /// The committable offset of every tracked partition (for the final commit).
    pub fn committable(&self) -> Vec<(Tp, i64)> {
        self.lock()
            .partitions
            .iter()
            .filter_map(|(tp, p)| p.progress.committable().map(|o| (tp.clone(), o)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> Tp {
        ("t".into(), p)
    }

    fn flow(per_partition: usize, total: usize) -> Arc<Flow> {
        Flow::new(FlowLimits {
            per_partition,
            total,
            bytes: usize::MAX,
        })
    }

    #[test]
    fn a_position_past_the_last_record_is_stored_and_never_taken_for_another_assignment() {
        let f = flow(100, 1000);
        f.assign(&[tp(0)]);
        let (c0, _) = f.admit(&tp(0), 0, 1);
        c0.finish();
        assert_eq!(f.take_actions().store, vec![(tp(0), 1)]);
        // A commit marker at 1.
        f.passed(&[(tp(0), 2)]);
        assert_eq!(f.take_actions().store, vec![(tp(0), 2)]);
        // Given back: a position the client still reports from before is not taken.
        f.revoke(&[tp(0)]);
        f.passed(&[(tp(0), 9)]);
        assert_eq!(f.assigned_count(), 0, "a revoked partition is not tracked again");
        f.assign(&[tp(0)]);
        f.passed(&[(tp(0), 9)]);
        assert_eq!(f.take_actions().store, vec![]);
        assert_eq!(f.committable(), vec![]);
    }

    #[test]
    fn stores_the_contiguous_prefix_as_completions_arrive() {
        let f = flow(100, 1000);
        f.assign(&[tp(0)]);
        let (c0, _) = f.admit(&tp(0), 0, 1);
        let (c1, _) = f.admit(&tp(0), 1, 1);
        c1.finish();
        assert_eq!(f.take_actions().store, vec![]);
        c0.finish();
        assert_eq!(f.take_actions().store, vec![(tp(0), 2)]);
        assert_eq!(f.in_flight(), 0);
    }

    #[test]
    fn a_full_partition_is_paused_and_resumed_at_half() {
        let f = flow(4, 1000);
        f.assign(&[tp(0), tp(1)]);
        let mut held = Vec::new();
        for o in 0..3 {
            let (c, pause) = f.admit(&tp(0), o, 1);
            assert!(pause.is_empty());
            held.push(c);
        }
        let (c, pause) = f.admit(&tp(0), 3, 1);
        held.push(c);
        assert_eq!(pause, vec![tp(0)], "the fourth in flight pauses partition 0 only");
        held.remove(0).finish();
        assert!(f.take_actions().resume.is_empty(), "3 in flight: still above half");
        held.remove(0).finish();
        assert_eq!(f.take_actions().resume, vec![tp(0)]);
        assert_eq!(f.paused_count(), 0);
        held.into_iter().for_each(Completion::finish);
    }

    #[test]
    fn the_byte_budget_stops_intake_until_a_quarter_is_free() {
        let f = Flow::new(FlowLimits {
            per_partition: 100,
            total: 100,
            bytes: 1000,
        });
        f.assign(&[tp(0), tp(1)]);
        let (a, _) = f.admit(&tp(0), 0, 150);
        let (b, _) = f.admit(&tp(1), 0, 750);
        assert!(!f.is_full());
        assert_eq!(f.in_flight_bytes(), 900);
        let (c, pause) = f.admit(&tp(0), 1, 100);
        assert!(pause.is_empty() && f.is_full(), "1000 bytes: full, nothing paused");
        a.finish();
        f.take_actions();
        assert!(f.is_full(), "850 bytes: not yet a quarter free");
        b.finish();
        f.take_actions();
        assert!(!f.is_full(), "100 bytes");
        c.finish();
        // One event larger than the whole budget still goes, alone.
        let (big, _) = f.admit(&tp(0), 2, 5000);
        assert!(f.is_full());
        // Held records count once started, and a revoke gives their bytes back.
        let mut held = f.hold(&tp(1), 1, 300);
        assert_eq!(f.in_flight_bytes(), 5000);
        f.start(&mut held);
        assert_eq!(f.in_flight_bytes(), 5300);
        f.revoke(&[tp(1)]);
        assert_eq!(f.in_flight_bytes(), 5000);
        big.finish();
        held.finish();
        assert_eq!(f.in_flight_bytes(), 0);
    }

    #[test]
    fn the_global_limit_stops_intake_without_pausing() {
        let f = flow(100, 8);
        f.assign(&[tp(0), tp(1), tp(2)]);
        let mut held = Vec::new();
        for o in 0..7 {
            let (c, pause) = f.admit(&tp(o as i32 % 2), o, 1);
            assert!(pause.is_empty());
            held.push(c);
        }
        assert!(!f.is_full());
        let (c, pause) = f.admit(&tp(1), 10, 1);
        held.push(c);
        assert!(pause.is_empty(), "reaching the global limit pauses nothing");
        assert!(f.is_full(), "the eighth fills the flow");
        held.remove(0).finish();
        assert!(f.take_actions().resume.is_empty());
        assert!(f.is_full(), "7 of 8 in flight is above three quarters");
        held.remove(0).finish();
        assert!(f.take_actions().resume.is_empty(), "nothing was paused");
        assert!(!f.is_full(), "6 of 8: intake goes on");
        held.into_iter().for_each(Completion::finish);
    }

    #[test]
    fn a_flow_that_stays_full_pauses_every_partition_until_a_quarter_is_free() {
        let f = flow(4, 8);
        f.assign(&[tp(0), tp(1), tp(2)]);
        let mut held = Vec::new();
        // Partition 0 reaches its own limit; two each on 1 and 2 fill the flow.
        for (p, o) in [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (2, 0), (2, 1)] {
            held.push(f.admit(&tp(p), o, 1).0);
        }
        assert!(f.is_full());
        let mut paused = f.pause_all();
        paused.sort();
        assert_eq!(paused, vec![tp(1), tp(2)], "partition 0 was already paused");
        assert!(f.is_globally_paused());
        assert!(f.pause_all().is_empty(), "only once");
        // Partition 1's two finish: 6 of 8, the flow opens again; partition 0
        // (4 of 4 in flight) stays paused by its own limit.
        held.remove(4).finish();
        held.remove(4).finish();
        let mut resumed = f.take_actions().resume;
        resumed.sort();
        assert_eq!(resumed, vec![tp(1), tp(2)]);
        assert!(!f.is_full() && !f.is_globally_paused());
        assert!(f.is_paused(&tp(0)));
        held.into_iter().for_each(Completion::finish);
    }

    #[test]
    fn revoke_returns_the_finished_prefix_and_ignores_late_completions() {
        let f = flow(100, 1000);
        f.assign(&[tp(0)]);
        let (c5, _) = f.admit(&tp(0), 5, 1);
        let (c6, _) = f.admit(&tp(0), 6, 1);
        let (c7, _) = f.admit(&tp(0), 7, 1);
        c5.finish();
        c7.finish();
        let (stores, abandoned) = f.revoke(&[tp(0)]);
        assert_eq!(stores, vec![(tp(0), 6)], "6 is unfinished: commit up to it, not past");
        assert_eq!(abandoned, 1);
        assert_eq!(f.in_flight(), 0);

        // Re-assigned: the late completion of the old generation changes nothing.
        f.assign(&[tp(0)]);
        let (n6, _) = f.admit(&tp(0), 6, 1);
        c6.finish();
        assert_eq!(f.in_flight(), 1);
        assert_eq!(f.take_actions().store, vec![]);
        n6.finish();
        assert_eq!(f.take_actions().store, vec![(tp(0), 7)]);
    }

    #[test]
    fn held_records_pin_the_commit_but_are_not_in_flight() {
        let f = flow(2, 3);
        f.assign(&[tp(0)]);
        let mut h0 = f.hold(&tp(0), 0, 1);
        let h1 = f.hold(&tp(0), 1, 1);
        assert!(h0.is_held());
        let (c2, pause) = f.admit(&tp(0), 2, 1);
        assert!(pause.is_empty(), "held records count toward no limit");
        assert_eq!(f.in_flight(), 1);
        c2.finish();
        assert_eq!(f.take_actions().store, vec![], "offset 0 is held: nothing committable");
        assert_eq!(f.finished_after(&tp(0), 0), 1);
        assert_eq!(
            f.wait_drained(&[tp(0)], Instant::now()),
            0,
            "a rebalance does not wait for held records"
        );
        // Started: now it is work in flight, counted toward the limits.
        let pause = f.start(&mut h0);
        assert!(!h0.is_held());
        assert!(pause.is_empty());
        assert_eq!(f.in_flight(), 1);
        assert!(f.start(&mut h0).is_empty(), "starting twice counts once");
        assert_eq!(f.in_flight(), 1);
        h0.finish();
        assert_eq!(f.take_actions().store, vec![(tp(0), 1)]);
        // A held record finished without starting (moved elsewhere) releases the commit.
        h1.finish();
        assert_eq!(f.take_actions().store, vec![(tp(0), 3)]);
        assert_eq!(f.in_flight(), 0);
    }

    #[test]
    fn revoking_abandons_held_records_without_counting_them() {
        let f = flow(10, 10);
        let before = f.epoch();
        f.assign(&[tp(0)]);
        assert_ne!(f.epoch(), before);
        let h = f.hold(&tp(0), 0, 1);
        let (c, _) = f.admit(&tp(0), 1, 1);
        let epoch = f.epoch();
        let (stores, abandoned) = f.revoke(&[tp(0)]);
        assert_ne!(f.epoch(), epoch);
        assert!(stores.is_empty());
        assert_eq!(abandoned, 1, "only the event in flight");
        assert_eq!(f.in_flight(), 0);
        h.abandon();
        c.finish();
        assert_eq!(
            f.in_flight(),
            0,
            "a late completion of a revoked partition changes nothing"
        );
    }

    #[test]
    fn health_reports_the_oldest_event_in_flight_and_the_last_commit() {
        let f = flow(10, 10);
        f.assign(&[tp(0), tp(1)]);
        let assigned = f.health();
        assert_eq!(assigned.len(), 2);
        assert_eq!(assigned[0].oldest_unfinished, std::time::Duration::ZERO);
        assert_eq!(assigned[0].lag, None);
        let (c0, _) = f.admit(&tp(0), 0, 1);
        std::thread::sleep(std::time::Duration::from_millis(30));
        let (c1, _) = f.admit(&tp(0), 1, 1);
        let mut held = f.hold(&tp(0), 2, 1);
        let h = &f.health()[0];
        assert_eq!((h.in_flight, h.held), (2, 1));
        assert!(h.oldest_unfinished >= std::time::Duration::from_millis(30), "{h:?}");
        c0.finish();
        let h = &f.health()[0];
        assert!(
            h.oldest_unfinished < std::time::Duration::from_millis(30),
            "the next oldest: {h:?}"
        );
        c1.finish();
        assert_eq!(
            f.health()[0].oldest_unfinished,
            std::time::Duration::ZERO,
            "a held record is not in flight"
        );
        f.start(&mut held);
        assert_eq!(f.health()[0].in_flight, 1);
        held.finish();

        let before = f.health()[1].last_commit;
        std::thread::sleep(std::time::Duration::from_millis(5));
        f.committed(&[(tp(1), 5)]);
        assert_eq!(f.committed_offset(&tp(1)), Some(5));
        f.observe(&tp(1), Observed::from_client(10, 0, 3, -1));
        let h = &f.health()[1];
        assert!(h.last_commit > before);
        assert_eq!(h.lag, Some(7));
    }

    #[test]
    fn the_progress_check_sees_pauses_read_positions_and_notes_what_it_found() {
        let f = flow(2, 1000);
        f.assign(&[tp(0), tp(1)]);
        let (_c0, _) = f.admit(&tp(0), 10, 1);
        let (_c1, pause) = f.admit(&tp(0), 11, 1);
        assert_eq!(pause, vec![tp(0)]);
        f.observe(&tp(1), Observed::from_client(50, 0, 20, -1001));
        let views = f.progress();
        let (v0, v1) = (
            &views.iter().find(|v| v.tp == tp(0)).unwrap(),
            &views.iter().find(|v| v.tp == tp(1)).unwrap(),
        );
        assert!(v0.paused, "at its in-flight cap");
        assert_eq!(v0.read_to, Some(12), "handed to Herald");
        assert_eq!((v1.paused, v1.read_to, v1.end), (false, Some(20), Some(50)));

        let g = v1.generation;
        assert_eq!(f.note_not_read(&tp(1), g, 20, 50), 1);
        assert_eq!(f.note_not_read(&tp(1), g, 20, 55), 2);
        assert_eq!(
            f.note_not_read(&tp(1), g + 1, 20, 55),
            0,
            "another assignment's finding"
        );
        let noted = f.health()[1].not_read.expect("noted");
        assert_eq!((noted.times, noted.read_to, noted.end), (2, 20, 55));
        f.note_read(&tp(1), g, Some(20));
        assert!(f.health()[1].not_read.is_some(), "not read further yet");
        f.note_read(&tp(1), g, Some(21));
        assert_eq!(f.health()[1].not_read, None, "read again");
    }

    #[test]
    fn waiting_for_a_drain_returns_when_completions_arrive() {
        let f = flow(100, 1000);
        f.assign(&[tp(0)]);
        let (c, _) = f.admit(&tp(0), 0, 1);
        let waiter = {
            let f = f.clone();
            std::thread::spawn(move || f.wait_drained(&[tp(0)], Instant::now() + std::time::Duration::from_secs(30)))
        };
        c.finish();
        assert_eq!(waiter.join().unwrap(), 0);
    }

    #[test]
    fn waiting_for_a_drain_gives_up_at_the_deadline() {
        let f = flow(100, 1000);
        f.assign(&[tp(0)]);
        let (c, _) = f.admit(&tp(0), 0, 1);
        assert_eq!(f.wait_drained(&[tp(0)], Instant::now()), 1);
        c.abandon();
    }
}

//! Per-key ordering across retries (`"ordering"` on a webhook;
//! `routing::ordering` says what the key is).
//!
//! Deliveries of one key to one webhook, from one source partition, go one
//! at a time in the partition's order. Two mechanisms keep it so:
//!
//! - In memory, per consumed partition, a [`Gate`] lets each ordered
//!   delivery start only when every earlier record of the partition has
//!   been routed and every earlier delivery of its key there has finished
//!   (succeeded, or been written to a tier or the dead-letter topic). Each
//!   record is registered as it is dispatched, in offset order, so the
//!   tasks' own order does not matter.
//! - In Redis, per key, a queue of the source offsets still to deliver
//!   (`{prefix}order:{key}`, with their due times, and per source partition
//!   the set of its keys that have one). A delivery that fails creates the
//!   queue (*blocks* the key) before its retry record is written; while it
//!   exists, later events of the key are not attempted but *parked*: added
//!   to the queue, then written to the wait topic of the head's due time,
//!   after which the source offset commits. A record of the queue that
//!   comes due is attempted only when it is the queue's head; otherwise it
//!   waits again until the head's due time. When the head succeeds, or is
//!   dead-lettered (its dead letter says that the key went on without it),
//!   it leaves the queue and the next one goes; the last one deletes it.
//!
//! Each finished delivery is *marked* (per source partition, the key's last
//! offset delivered; the head's pop marks it too) before the next one of
//! its key goes, so that a record read again after a crash or a rebalance
//! and delivered already is skipped rather than delivered after a later
//! one. Marks are written in batches by one task; those below the
//! committed offset are dropped.
//!
//! The source partition's owner keeps the set of its blocked keys in memory
//! (read from Redis once per assignment with the marks, then kept by what
//! it does), so a key that never failed costs only its marks. Every queue operation is
//! one Lua script, idempotent by offset, so a replica killed anywhere
//! leaves a state that the records not yet committed bring back: the
//! source record of a failed head is read again and found to be the head;
//! a parked record written twice is delivered by whichever copy comes
//! first and skipped by the other. While Redis does not answer, the
//! ordered deliveries that need it wait (the commands are tried again),
//! and nothing of the key is delivered out of turn.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, SystemTime};

use backon::{BackoffBuilder, ExponentialBuilder};
use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::intake::flow::{Flow, Tp};
use crate::retry::codec::millis;
use crate::retry::sink::Abandoned;
use crate::routing::ordering::OrderKey;
use crate::telemetry::Telemetry;

static SCRIPT: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(include_str!("ordering.lua")));

/// What the queue of a key said about one offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// There is no queue: the key is not blocked.
    Free,
    /// It is the queue's head: its turn.
    Head,
    /// Behind the head, which is due at this time.
    Behind(SystemTime),
    /// Not in the queue: delivered or dead-lettered already.
    Done,
}

/// The ordering state: in-memory gates and blocked keys, and the queues in
/// Redis. One per process, shared by the source and retry consumers.
pub struct Ordered {
    conn: ConnectionManager,
    prefix: String,
    /// How long a queue is kept after it was last touched: as long as a
    /// record of it can wait in a wait topic.
    ttl: Duration,
    /// `retry.ordering_recheck`.
    recheck: Duration,
    gates: Mutex<HashMap<Tp, Arc<Gate>>>,
    assigned: Mutex<HashMap<Tp, Arc<Assigned>>>,
    marks: Arc<Marks>,
    telemetry: Telemetry,
    abort: CancellationToken,
}

/// What an ordered delivery's key is, as its partition's owner knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// Delivered already (at or after this offset) by an earlier owner of
    /// the partition: a record read again after a crash or a rebalance.
    Delivered,
    /// The key has a queue: a delivery of it waits in a tier.
    Blocked,
    /// Neither: its turn is now.
    Free,
}

impl Ordered {
    /// Queues under `prefix` in the Redis behind `conn`, kept `ttl` after
    /// their last change; `abort` ends commands still being tried.
    pub fn new(
        conn: ConnectionManager,
        prefix: &str,
        ttl: Duration,
        recheck: Duration,
        telemetry: Telemetry,
        abort: CancellationToken,
    ) -> Ordered {
        let ttl = ttl.max(Duration::from_secs(1));
        Ordered {
            marks: Arc::new(Marks {
                store: Store {
                    conn: conn.clone(),
                    telemetry: telemetry.clone(),
                    abort: abort.clone(),
                },
                prefix: prefix.to_owned(),
                ttl,
                pending: Mutex::new(Pending::default()),
                wake: Notify::new(),
                flushed: watch::Sender::new(0),
                writer: std::sync::OnceLock::new(),
                committed: std::sync::OnceLock::new(),
            }),
            conn,
            prefix: prefix.to_owned(),
            ttl,
            recheck,
            gates: Mutex::new(HashMap::new()),
            assigned: Mutex::new(HashMap::new()),
            telemetry,
            abort,
        }
    }

    /// Where the source consumer's commits are seen: the marks of records
    /// before a partition's committed offset are dropped, as no owner reads
    /// those records again.
    pub fn with_commits(self, flow: Arc<Flow>) -> Ordered {
        let _ = self.marks.committed.set(flow);
        self
    }

    /// The shortest a delivery waiting for its key's turn waits before it
    /// looks again (`retry.ordering_recheck`).
    pub fn recheck(&self) -> Duration {
        self.recheck
    }

    /// Whether this replica still reads the source partition `tp` under
    /// assignment `generation`. A delivery whose turn comes after its
    /// partition was revoked (its earlier one outlasted the revoke's drain)
    /// must not go: the next owner delivers it, after the earlier one.
    pub fn still_assigned(&self, tp: &Tp, generation: u64) -> bool {
        self.marks
            .committed
            .get()
            .is_none_or(|flow| flow.generation(tp) == Some(generation))
    }

    // ---- in memory --------------------------------------------------

    /// Registers the record at `offset` of `tp`, dispatched now (in offset
    /// order) by the assignment `generation`.
    pub fn register(&self, tp: &Tp, generation: u64, offset: i64) -> Registration {
        let gate = self.gates.lock().entry(tp.clone()).or_default().clone();
        {
            let mut state = gate.state.lock();
            if state.generation != generation {
                state.reset(generation);
            }
            state.unannounced.insert(offset);
        }
        Registration {
            gate,
            generation,
            offset,
            open: true,
        }
    }

    /// What is known of `key` of the source partition `tp` for its record
    /// at `offset`: read from Redis once per assignment `generation` (the
    /// blocked keys and the marks of the deliveries made since the last
    /// commit), then kept by what this replica does.
    pub async fn known(&self, tp: &Tp, generation: u64, key: &OrderKey, offset: i64) -> Result<Known, Abandoned> {
        let assigned = self.assigned_of(tp, generation);
        let loaded = assigned
            .loaded
            .get_or_try_init(|| async {
                let index = self.index_key(tp);
                let marks = self.marks.key(tp);
                let (blocked, marked): (Vec<String>, Vec<(String, f64)>) = self
                    .retried("load", || {
                        let mut conn = self.conn.clone();
                        let mut pipe = redis::pipe();
                        pipe.cmd("SMEMBERS").arg(&index);
                        pipe.cmd("ZRANGE").arg(&marks).arg(0).arg(-1).arg("WITHSCORES");
                        async move { pipe.query_async(&mut conn).await }
                    })
                    .await?;
                Ok::<_, Abandoned>(Loaded {
                    blocked: Mutex::new(blocked.iter().filter_map(|m| OrderKey::from_hex(m)).collect()),
                    // Scores are offsets, exact in a double below 2^53.
                    #[allow(clippy::cast_possible_truncation)]
                    marks: marked
                        .iter()
                        .filter_map(|(m, offset)| Some((OrderKey::from_hex(m)?, *offset as i64)))
                        .collect(),
                })
            })
            .await?;
        if loaded.marks.get(key).is_some_and(|marked| *marked >= offset) {
            return Ok(Known::Delivered);
        }
        if loaded.blocked.lock().contains(key) {
            return Ok(Known::Blocked);
        }
        Ok(Known::Free)
    }

    fn assigned_of(&self, tp: &Tp, generation: u64) -> Arc<Assigned> {
        let mut all = self.assigned.lock();
        let entry = all
            .entry(tp.clone())
            .or_insert_with(|| Arc::new(Assigned::new(generation)));
        if entry.generation != generation {
            *entry = Arc::new(Assigned::new(generation));
        }
        entry.clone()
    }

    /// Records what this replica did to `key` of `tp`: blocked it or found
    /// it free. Only a loaded set is changed (an unloaded one reads Redis).
    fn note(&self, tp: &Tp, key: &OrderKey, blocked: bool) {
        let entry = self.assigned.lock().get(tp).cloned();
        if let Some(loaded) = entry.as_ref().and_then(|a| a.loaded.get()) {
            let mut keys = loaded.blocked.lock();
            if blocked {
                keys.insert(key.clone());
            } else {
                keys.remove(key);
            }
        }
    }

    /// The delivery of `key` at `offset` of the source partition `tp` is
    /// finished: returns once that is kept in Redis, so that the record,
    /// read again after a crash or a rebalance, is not delivered again
    /// after a later one of its key. Marks are written in batches, as many
    /// as came in while the one before was written.
    pub async fn mark(&self, tp: &Tp, key: &OrderKey, offset: i64) -> Result<(), Abandoned> {
        let batch = {
            let mut pending = self.marks.pending.lock();
            pending.marks.entry(tp.clone()).or_default().push((key.clone(), offset));
            pending.batch
        };
        self.marks
            .writer
            .get_or_init(|| tokio::spawn(self.marks.clone().write()));
        self.marks.wake.notify_one();
        let mut flushed = self.marks.flushed.subscribe();
        tokio::select! {
            done = flushed.wait_for(|flushed| *flushed > batch) => done.map(drop).map_err(|_| Abandoned),
            _ = self.abort.cancelled() => Err(Abandoned),
        }
    }

    // ---- in Redis ----------------------------------------------------

    fn index_key(&self, tp: &Tp) -> String {
        format!("{}order:idx:{}:{}", self.prefix, tp.0, tp.1)
    }

    async fn queue(
        &self,
        op: &'static str,
        key: &OrderKey,
        source: &Tp,
        offset: i64,
        due: SystemTime,
    ) -> Result<(i64, i64), Abandoned> {
        let name = key.hex();
        let queue = format!("{}order:{name}", self.prefix);
        let dues = format!("{queue}:due");
        let index = self.index_key(source);
        let marks = self.marks.key(source);
        let ttl = self.ttl.as_secs();
        let due = millis(due) as u64;
        self.retried(op, || {
            let mut conn = self.conn.clone();
            let mut invocation = SCRIPT.key(&queue);
            invocation.key(&dues).key(&index).key(&marks);
            invocation.arg(op).arg(offset).arg(due).arg(&name).arg(ttl);
            async move { invocation.invoke_async::<(i64, i64)>(&mut conn).await }
        })
        .await
    }

    async fn retried<T, F, Fut>(&self, op: &'static str, command: F) -> Result<T, Abandoned>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        self.marks.store.retried(op, command).await
    }

    /// A later event of a blocked key: its place (queued behind the head,
    /// due at `due` once parked; or free, the head, or done already).
    pub async fn park(&self, key: &OrderKey, source: &Tp, offset: i64, due: SystemTime) -> Result<Place, Abandoned> {
        let (outcome, head_due) = self.queue("park", key, source, offset, due).await?;
        let place = place(outcome, head_due, Place::Free);
        if place == Place::Free {
            self.note(source, key, false);
        }
        Ok(place)
    }

    /// A delivery of the key failed and waits in a tier until `due`: the
    /// key is blocked until it is finished.
    pub async fn block(&self, key: &OrderKey, source: &Tp, offset: i64, due: SystemTime) -> Result<(), Abandoned> {
        self.queue("block", key, source, offset, due).await?;
        self.note(source, key, true);
        Ok(())
    }

    /// A record of the key's queue came due: its place.
    pub async fn claim(&self, key: &OrderKey, source: &Tp, offset: i64) -> Result<Place, Abandoned> {
        let (outcome, head_due) = self.queue("claim", key, source, offset, SystemTime::now()).await?;
        Ok(place(outcome, head_due, Place::Done))
    }

    /// The delivery at `offset` is finished: it is marked (as
    /// [`Ordered::mark`] does) and the next one of the key goes. Returns
    /// how many are left in the queue.
    pub async fn pop(&self, key: &OrderKey, source: &Tp, offset: i64) -> Result<usize, Abandoned> {
        let (emptied, left) = self.queue("pop", key, source, offset, SystemTime::now()).await?;
        if emptied == 1 {
            self.note(source, key, false);
        }
        Ok(usize::try_from(left).unwrap_or(0))
    }

    /// Counts a step of an ordered delivery.
    pub fn step(&self, step: &'static str) {
        self.telemetry.ordering_step(step);
    }
}

fn place(outcome: i64, head_due: i64, zero: Place) -> Place {
    match outcome {
        1 => Place::Head,
        2 => Place::Behind(SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(head_due).unwrap_or(0))),
        3 => Place::Done,
        _ => zero,
    }
}

/// What one assignment of a source partition read from Redis once: the
/// keys that have a queue (then kept by what this replica does) and the
/// marks of deliveries made past the committed offset.
struct Assigned {
    generation: u64,
    loaded: tokio::sync::OnceCell<Loaded>,
}

struct Loaded {
    blocked: Mutex<HashSet<OrderKey>>,
    /// Per key, the last offset delivered.
    marks: HashMap<OrderKey, i64>,
}

impl Assigned {
    fn new(generation: u64) -> Assigned {
        Assigned {
            generation,
            loaded: tokio::sync::OnceCell::new(),
        }
    }
}

/// Commands to Redis, tried again until they succeed or shutdown ends them.
struct Store {
    conn: ConnectionManager,
    telemetry: Telemetry,
    abort: CancellationToken,
}

impl Store {
    /// Runs `command` until it succeeds, waiting longer between tries, or
    /// until shutdown's drain deadline.
    async fn retried<T, F, Fut>(&self, op: &'static str, mut command: F) -> Result<T, Abandoned>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let mut backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_secs(5))
            .with_jitter()
            .without_max_times()
            .build();
        loop {
            let result = tokio::select! {
                r = tokio::time::timeout(Duration::from_secs(5), command()) => r,
                _ = self.abort.cancelled() => return Err(Abandoned),
            };
            match result {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) => self.telemetry.ordering_store_failed(op, &e),
                Err(_) => self.telemetry.ordering_store_failed(op, &"timed out after 5 s"),
            }
            let wait = backoff.next().unwrap_or(Duration::from_secs(5));
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.abort.cancelled() => return Err(Abandoned),
            }
        }
    }
}

/// The marks of finished ordered deliveries: per source partition a sorted
/// set (`{prefix}order:done:{topic}:{partition}`) of keys scored by the
/// last offset of theirs delivered, written by one task in batches.
struct Marks {
    store: Store,
    prefix: String,
    ttl: Duration,
    pending: Mutex<Pending>,
    wake: Notify,
    /// How many batches are written: a mark of batch `n` is kept once it
    /// is above `n`.
    flushed: watch::Sender<u64>,
    writer: std::sync::OnceLock<tokio::task::JoinHandle<()>>,
    committed: std::sync::OnceLock<Arc<Flow>>,
}

#[derive(Default)]
struct Pending {
    /// The batch the marks below go in.
    batch: u64,
    marks: HashMap<Tp, Vec<(OrderKey, i64)>>,
}

impl Marks {
    fn key(&self, tp: &Tp) -> String {
        format!("{}order:done:{}:{}", self.prefix, tp.0, tp.1)
    }

    /// Writes what is pending, batch after batch, until shutdown.
    async fn write(self: Arc<Marks>) {
        let mut pruned: HashMap<Tp, i64> = HashMap::new();
        loop {
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = self.store.abort.cancelled() => return,
            }
            loop {
                let (batch, marks) = {
                    let mut pending = self.pending.lock();
                    if pending.marks.is_empty() {
                        break;
                    }
                    let batch = pending.batch;
                    pending.batch += 1;
                    (batch, std::mem::take(&mut pending.marks))
                };
                let mut pipe = redis::pipe();
                let ttl = self.ttl.as_secs();
                for (tp, marks) in &marks {
                    let key = self.key(tp);
                    // GT: a mark only moves forward, whoever writes last.
                    let zadd = pipe.cmd("ZADD").arg(&key).arg("GT");
                    for (order_key, offset) in marks {
                        zadd.arg(*offset).arg(order_key.hex());
                    }
                    zadd.ignore();
                    pipe.cmd("EXPIRE").arg(&key).arg(ttl).ignore();
                    // Records before the committed offset are not read again.
                    let committed = self.committed.get().and_then(|flow| flow.committed_offset(tp));
                    if let Some(committed) = committed.filter(|c| pruned.get(tp).is_none_or(|p| c > p)) {
                        pipe.cmd("ZREMRANGEBYSCORE")
                            .arg(&key)
                            .arg("-inf")
                            .arg(format!("({committed}"))
                            .ignore();
                        pruned.insert(tp.clone(), committed);
                    }
                }
                let written = self
                    .store
                    .retried("mark", || {
                        let mut conn = self.store.conn.clone();
                        let pipe = pipe.clone();
                        async move { pipe.query_async::<()>(&mut conn).await }
                    })
                    .await;
                if written.is_err() {
                    return;
                }
                self.flushed.send_replace(batch + 1);
            }
        }
    }
}

/// Turn-taking for the ordered deliveries of one consumed partition. Each
/// waiting delivery is woken alone, when its turn may have come: by the
/// one before it of its key leaving, or by the last earlier record being
/// routed; never by what other deliveries do.
#[derive(Default)]
pub struct Gate {
    state: Mutex<GateState>,
}

#[derive(Default)]
struct GateState {
    generation: u64,
    /// Records dispatched whose keys are not known yet.
    unannounced: BTreeSet<i64>,
    /// Per key, the deliveries waiting or in their turn, by offset, each
    /// with what wakes it.
    queues: HashMap<OrderKey, BTreeMap<i64, Arc<Notify>>>,
    /// Deliveries first of their key that wait for earlier records to be
    /// routed, by offset.
    unrouted_before: BTreeMap<i64, Arc<Notify>>,
}

impl GateState {
    /// A new assignment: what the old one left is abandoned, and every
    /// waiter is woken to find it so.
    fn reset(&mut self, generation: u64) {
        for queue in self.queues.values() {
            queue.values().for_each(|n| n.notify_one());
        }
        *self = GateState {
            generation,
            ..GateState::default()
        };
    }

    /// `offset` is routed (or will never be): the deliveries that waited
    /// only for it and records before it may go.
    fn routed(&mut self, offset: i64) {
        let was_first = self.unannounced.first() == Some(&offset);
        self.unannounced.remove(&offset);
        if !was_first {
            return;
        }
        let Some(&next) = self.unannounced.first() else {
            std::mem::take(&mut self.unrouted_before)
                .into_values()
                .for_each(|n| n.notify_one());
            return;
        };
        // Those at or before the next unrouted record may go now.
        let later = self.unrouted_before.split_off(&(next + 1));
        std::mem::replace(&mut self.unrouted_before, later)
            .into_values()
            .for_each(|n| n.notify_one());
    }
}

/// A record registered with its partition's gate; announce its keys once
/// routed. Dropped unannounced, it holds nothing up.
pub struct Registration {
    gate: Arc<Gate>,
    generation: u64,
    offset: i64,
    open: bool,
}

impl Registration {
    /// The record's ordered deliveries are of `keys`: each gets its place
    /// in line, in the order of `keys`.
    pub fn announce(mut self, keys: &[OrderKey]) -> Vec<InLine> {
        self.open = false;
        let mut state = self.gate.state.lock();
        if state.generation != self.generation {
            return keys
                .iter()
                .map(|key| InLine::stale(self.gate.clone(), key.clone(), self.offset))
                .collect();
        }
        let lines = keys
            .iter()
            .map(|key| {
                let wake = Arc::new(Notify::new());
                state
                    .queues
                    .entry(key.clone())
                    .or_default()
                    .insert(self.offset, wake.clone());
                InLine {
                    gate: self.gate.clone(),
                    generation: self.generation,
                    key: key.clone(),
                    offset: self.offset,
                    wake,
                    held: false,
                }
            })
            .collect();
        state.routed(self.offset);
        lines
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if self.open {
            let mut state = self.gate.state.lock();
            if state.generation == self.generation {
                state.routed(self.offset);
            }
        }
    }
}

/// An ordered delivery's place in its partition's line for its key;
/// dropping it (once the delivery is finished) lets the next one go.
pub struct InLine {
    gate: Arc<Gate>,
    generation: u64,
    key: OrderKey,
    offset: i64,
    wake: Arc<Notify>,
    /// Left in line when dropped: the key's later deliveries here wait for
    /// the partition's next assignment.
    held: bool,
}

impl InLine {
    fn stale(gate: Arc<Gate>, key: OrderKey, offset: i64) -> InLine {
        InLine {
            gate,
            generation: u64::MAX,
            key,
            offset,
            wake: Arc::new(Notify::new()),
            held: false,
        }
    }

    /// Its delivery was abandoned (shutdown) before what it did was kept:
    /// the key's later deliveries in this assignment must not go after it.
    pub fn hold(mut self) {
        self.held = true;
    }

    /// Waits for its turn; `Err` when its partition was assigned anew
    /// meanwhile (the record is abandoned: the new owner delivers it).
    pub async fn turn(&self) -> Result<(), Abandoned> {
        loop {
            {
                let mut state = self.gate.state.lock();
                if state.generation != self.generation {
                    return Err(Abandoned);
                }
                let first = state
                    .queues
                    .get(&self.key)
                    .and_then(|q| q.first_key_value())
                    .map(|(offset, _)| *offset)
                    == Some(self.offset);
                if first {
                    if state.unannounced.range(..self.offset).next().is_none() {
                        return Ok(());
                    }
                    state.unrouted_before.insert(self.offset, self.wake.clone());
                }
                // Not first: the one before it wakes it when it leaves.
            }
            // A wake-up sent since the check above is kept for this.
            self.wake.notified().await;
        }
    }

    /// The key it waits for.
    pub fn key(&self) -> &OrderKey {
        &self.key
    }
}

impl Drop for InLine {
    fn drop(&mut self) {
        let mut state = self.gate.state.lock();
        if state.generation != self.generation || self.held {
            return;
        }
        state.unrouted_before.remove(&self.offset);
        if let Some(queue) = state.queues.get_mut(&self.key) {
            queue.remove(&self.offset);
            match queue.first_key_value() {
                Some((_, next)) => next.notify_one(),
                None => {
                    state.queues.remove(&self.key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp() -> Tp {
        (Arc::from("orders"), 0)
    }

    fn key(n: u8) -> OrderKey {
        OrderKey([n; 16])
    }

    fn gates() -> Ordered {
        let client = redis::Client::open("redis://127.0.0.1:1/").unwrap();
        let conn = crate::config::redis::RedisConfig::lazy_connection(&client).unwrap();
        Ordered::new(
            conn,
            "t:",
            Duration::from_secs(60),
            Duration::from_secs(5),
            Telemetry::new(&[], 10),
            CancellationToken::new(),
        )
    }

    async fn turn_now(line: &InLine) -> bool {
        tokio::time::timeout(Duration::from_millis(50), line.turn())
            .await
            .is_ok()
    }

    #[tokio::test]
    async fn a_key_s_deliveries_go_in_offset_order_whatever_order_their_tasks_route_in() {
        let o = gates();
        let r1 = o.register(&tp(), 1, 10);
        let r2 = o.register(&tp(), 1, 11);
        let r3 = o.register(&tp(), 1, 12);
        // The third is routed first: it waits for the two before it.
        let third = r3.announce(&[key(1)]).pop().unwrap();
        assert!(!turn_now(&third).await, "earlier records are not routed yet");
        let second = r2.announce(&[key(1)]).pop().unwrap();
        assert!(!turn_now(&second).await);
        // The first has no ordered delivery of the key: the second goes.
        drop(r1.announce(&[]));
        assert!(turn_now(&second).await);
        assert!(!turn_now(&third).await, "behind the second");
        drop(second);
        assert!(turn_now(&third).await);
    }

    #[tokio::test]
    async fn other_keys_do_not_wait_and_a_record_dropped_unrouted_holds_nothing_up() {
        let o = gates();
        let r1 = o.register(&tp(), 1, 1);
        let r2 = o.register(&tp(), 1, 2);
        let r3 = o.register(&tp(), 1, 3);
        let a = r2.announce(&[key(1)]).pop().unwrap();
        let b = r3.announce(&[key(2)]).pop().unwrap();
        assert!(!turn_now(&b).await, "record 1 is not routed");
        drop(r1); // failed before routing (e.g. dead-lettered)
        assert!(turn_now(&a).await);
        assert!(turn_now(&b).await, "another key does not wait for key 1");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hot_key_s_waiters_go_one_after_another_in_offset_order() {
        let o = gates();
        let registered: Vec<Registration> = (0..200).map(|n| o.register(&tp(), 1, n)).collect();
        let went = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        // Routed in reverse, the waiters spawned in any order.
        for (n, r) in registered.into_iter().enumerate().rev() {
            let line = r.announce(&[key(7)]).pop().unwrap();
            let went = went.clone();
            tasks.push(tokio::spawn(async move {
                line.turn().await.unwrap();
                went.lock().push(n);
                tokio::task::yield_now().await;
                drop(line);
            }));
        }
        for task in tasks {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .unwrap()
                .unwrap();
        }
        assert_eq!(*went.lock(), (0..200).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_new_assignment_abandons_the_old_one_s_waiters() {
        let o = gates();
        let r1 = o.register(&tp(), 1, 1);
        let r2 = o.register(&tp(), 1, 2);
        let waiting = r2.announce(&[key(1)]).pop().unwrap();
        let _first = r1.announce(&[key(1)]);
        let handle = tokio::spawn(async move { waiting.turn().await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _new = o.register(&tp(), 2, 1);
        let result = tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(result, Err(Abandoned));
    }

    #[tokio::test]
    async fn a_delivery_held_when_abandoned_keeps_its_key_s_later_ones_waiting_until_a_new_assignment() {
        let o = gates();
        let r1 = o.register(&tp(), 1, 1);
        let r2 = o.register(&tp(), 1, 2);
        let first = r1.announce(&[key(1)]).pop().unwrap();
        let second = r2.announce(&[key(1)]).pop().unwrap();
        assert!(turn_now(&first).await);
        // Abandoned before its mark was kept: the next one must not go.
        first.hold();
        assert!(!turn_now(&second).await);
        let handle = tokio::spawn(async move { second.turn().await });
        let _new = o.register(&tp(), 2, 1);
        let result = tokio::time::timeout(Duration::from_secs(5), handle)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(result, Err(Abandoned), "the new owner delivers it");
    }

    #[tokio::test]
    async fn a_partition_revoked_is_no_longer_assigned_to_the_deliveries_that_wait_in_it() {
        use crate::intake::flow::FlowLimits;
        let flow = Flow::new(FlowLimits {
            per_partition: 10,
            total: 10,
            bytes: usize::MAX,
        });
        flow.assign(&[tp()]);
        let generation = flow.generation(&tp()).unwrap();
        let o = gates().with_commits(flow.clone());
        assert!(o.still_assigned(&tp(), generation));
        flow.revoke(&[tp()]);
        assert!(!o.still_assigned(&tp(), generation), "revoked");
        flow.assign(&[tp()]);
        assert!(!o.still_assigned(&tp(), generation), "assigned again: a new generation");
        assert!(o.still_assigned(&tp(), flow.generation(&tp()).unwrap()));
    }
}

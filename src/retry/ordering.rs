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
//! The source partition's owner keeps the set of its blocked keys in memory
//! (read from Redis once per assignment, then kept by what it does), so a
//! key that never failed costs no Redis command. Every queue operation is
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
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::intake::flow::Tp;
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
    blocked: Mutex<HashMap<Tp, Arc<Blocked>>>,
    telemetry: Telemetry,
    abort: CancellationToken,
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
        Ordered {
            conn,
            prefix: prefix.to_owned(),
            ttl: ttl.max(Duration::from_secs(1)),
            recheck,
            gates: Mutex::new(HashMap::new()),
            blocked: Mutex::new(HashMap::new()),
            telemetry,
            abort,
        }
    }

    /// The shortest a delivery waiting for its key's turn waits before it
    /// looks again (`retry.ordering_recheck`).
    pub fn recheck(&self) -> Duration {
        self.recheck
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

    /// Whether `key` of the source partition `tp` is blocked, as this
    /// replica knows it (read from Redis once per assignment `generation`).
    pub async fn is_blocked(&self, tp: &Tp, generation: u64, key: &OrderKey) -> Result<bool, Abandoned> {
        let blocked = self.blocked_of(tp, generation);
        let keys = blocked
            .keys
            .get_or_try_init(|| async {
                let name = self.index_key(tp);
                let members: Vec<String> = self
                    .retried("load", || {
                        let mut conn = self.conn.clone();
                        let name = name.clone();
                        async move { redis::cmd("SMEMBERS").arg(name).query_async(&mut conn).await }
                    })
                    .await?;
                let keys: HashSet<OrderKey> = members.iter().filter_map(|m| OrderKey::from_hex(m)).collect();
                Ok::<_, Abandoned>(Mutex::new(keys))
            })
            .await?;
        let found = keys.lock().contains(key);
        Ok(found)
    }

    fn blocked_of(&self, tp: &Tp, generation: u64) -> Arc<Blocked> {
        let mut all = self.blocked.lock();
        let entry = all
            .entry(tp.clone())
            .or_insert_with(|| Arc::new(Blocked::new(generation)));
        if entry.generation != generation {
            *entry = Arc::new(Blocked::new(generation));
        }
        entry.clone()
    }

    /// Records what this replica did to `key` of `tp`: blocked it or found
    /// it free. Only a loaded set is changed (an unloaded one reads Redis).
    fn note(&self, tp: &Tp, key: &OrderKey, blocked: bool) {
        let entry = self.blocked.lock().get(tp).cloned();
        if let Some(keys) = entry.as_ref().and_then(|b| b.keys.get()) {
            let mut keys = keys.lock();
            if blocked {
                keys.insert(key.clone());
            } else {
                keys.remove(key);
            }
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
        let ttl = self.ttl.as_secs();
        let due = millis(due) as u64;
        self.retried(op, || {
            let mut conn = self.conn.clone();
            let mut invocation = SCRIPT.key(&queue);
            invocation.key(&dues).key(&index);
            invocation.arg(op).arg(offset).arg(due).arg(&name).arg(ttl);
            async move { invocation.invoke_async::<(i64, i64)>(&mut conn).await }
        })
        .await
    }

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

    /// The delivery at `offset` is finished: the next one of the key goes.
    /// Returns how many are left in the queue.
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

/// The keys of one source partition that have a queue, as this replica
/// knows them, for one assignment.
struct Blocked {
    generation: u64,
    keys: tokio::sync::OnceCell<Mutex<HashSet<OrderKey>>>,
}

impl Blocked {
    fn new(generation: u64) -> Blocked {
        Blocked {
            generation,
            keys: tokio::sync::OnceCell::new(),
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
}

impl InLine {
    fn stale(gate: Arc<Gate>, key: OrderKey, offset: i64) -> InLine {
        InLine {
            gate,
            generation: u64::MAX,
            key,
            offset,
            wake: Arc::new(Notify::new()),
        }
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
        if state.generation != self.generation {
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
}

//! Rate limits per webhook, held across replicas (`limits.rate`,
//! `delivery.default_rate`; docs/rate-limits.md).
//!
//! Each webhook with a rate has one token bucket in Redis
//! (`{prefix}rate:{webhook id}`): `per_second` tokens a second on Redis's
//! clock, at most `burst` kept. A replica never asks Redis for each
//! delivery: when its own tokens for a webhook run out it leases a block
//! (as many as it has deliveries waiting, at most a tenth of a second's
//! worth or the burst), spends them at once and drops what it could not
//! spend within [`LEASE_TTL`], never giving any back. The bucket counted
//! every token when it was leased, so the receiver sees at most `per_second`
//! over any second beyond the burst, plus what was leased just before the
//! second began and sent in it: one block per replica at most.
//!
//! Deliveries waiting for a token queue in order, one lease at a time per
//! webhook and replica; one that would wait past `delivery.max_queue_wait`
//! gives up without being sent ([`RateLimited`]) and waits in its retry tier
//! with its attempt count unchanged, as a delivery finding no request slot
//! does, so a limited webhook never holds its partitions.
//!
//! A `429` halves the webhook's rate in the bucket, for every replica, down
//! to [`MIN_FACTOR`] of it, and the rate comes back linearly over
//! `delivery.rate_recovery` after the last one.
//!
//! While Redis does not answer, a replica keeps a bucket of its own at its
//! share of the rate: the rate divided by the replicas that leased the
//! webhook's tokens within [`SHARE_WINDOW`], as the last lease counted them,
//! so the replicas together still keep to the rate. The bucket starts
//! empty when the replica had leased before (what it leased last is already
//! spent) and holds its share of the burst at most.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use tokio::time::Instant;

use crate::telemetry::Telemetry;
use crate::webhook::RateLimit;

/// How long leased tokens may wait to be spent before they are dropped.
pub const LEASE_TTL: Duration = Duration::from_secs(1);

/// How long a lease may take before the replica limits on its own.
const LEASE_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a replica limits on its own after a lease got no answer in
/// [`LEASE_TIMEOUT`], before it asks Redis again: a frozen Redis would hold
/// each delivery that asks.
const LOCAL_AFTER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a replica limits on its own after a lease failed at once (a
/// connection refused or broken): asking again costs nothing, and the
/// connection is opened again meanwhile.
const LOCAL_AFTER_ERROR: Duration = Duration::from_secs(1);

/// A replica that leased a webhook's tokens within this long counts as one
/// of those sharing its rate.
pub const SHARE_WINDOW: Duration = Duration::from_secs(10);

/// The share of a second a lease asks for at most (a tenth: 5 tokens at 50
/// a second).
const LEASE_SPAN: f64 = 0.1;

/// The lowest a run of `429`s takes a webhook's rate to: 1/64 of it.
pub const MIN_FACTOR: f64 = 1.0 / 64.0;

static LEASE: LazyLock<redis::Script> = LazyLock::new(|| redis::Script::new(include_str!("rate_lease.lua")));

/// Why a delivery was not sent: its webhook's rate would have held it past
/// `delivery.max_queue_wait`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimited {
    /// The rate in force (per second), lowered after a `429`.
    pub per_second: f64,
}

// A rate is a finite number (checked where it is set), so equal to itself.
impl Eq for RateLimited {}

/// Leases tokens from the buckets in Redis.
#[derive(Clone)]
pub struct Leases {
    conn: ConnectionManager,
    prefix: String,
    recovery: Duration,
    telemetry: Telemetry,
    /// This replica's id in the buckets (random, new at each start).
    replica: String,
}

/// What a lease got.
struct Lease {
    granted: u32,
    wait: Duration,
    per_second: f64,
    /// The replicas that leased the webhook's tokens within
    /// [`SHARE_WINDOW`], this one included.
    replicas: u32,
}

impl Leases {
    /// Leases from the buckets under `prefix`; a rate lowered by a `429`
    /// comes back over `recovery`.
    pub fn new(conn: ConnectionManager, prefix: &str, recovery: Duration, telemetry: Telemetry) -> Leases {
        Leases {
            conn,
            prefix: prefix.to_owned(),
            recovery,
            telemetry,
            replica: hex::encode(rand::random::<[u8; 8]>()),
        }
    }

    fn key(&self, webhook: &str) -> String {
        format!("{}rate:{webhook}", self.prefix)
    }

    /// A lease asked once more when the first fails: a connection that
    /// broke while Redis was away reports its error to the first request
    /// after Redis is back, and is opened again meanwhile.
    async fn lease_again_on_error(&self, webhook: &str, limit: RateLimit, want: u32) -> redis::RedisResult<Lease> {
        match self.lease(webhook, limit, want, false).await {
            Err(_) => self.lease(webhook, limit, want, false).await,
            lease => lease,
        }
    }

    async fn lease(&self, webhook: &str, limit: RateLimit, want: u32, slow: bool) -> redis::RedisResult<Lease> {
        let burst = limit.burst();
        // Kept while it may still hold a debt, a lowered rate or a burst
        // not yet refilled.
        let ttl = (f64::from(burst) / limit.per_second * 2_000.0).max(self.recovery.as_millis() as f64 * 2.0);
        let (granted, wait_ms, per_second, replicas): (u32, u64, String, u32) = LEASE
            .key(self.key(webhook))
            .arg(limit.per_second)
            .arg(burst)
            .arg(want)
            .arg(if slow { "1" } else { "0" })
            .arg(self.recovery.as_millis().max(1) as u64)
            .arg(MIN_FACTOR)
            .arg(ttl.ceil() as u64)
            .arg(&self.replica)
            .arg(SHARE_WINDOW.as_millis() as u64)
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(Lease {
            granted,
            wait: Duration::from_millis(wait_ms),
            per_second: per_second.parse().unwrap_or(limit.per_second),
            replicas: replicas.max(1),
        })
    }
}

/// One webhook's rate limit in one replica: the tokens it holds, and the
/// deliveries waiting for one. Kept across index updates while the limit
/// is unchanged.
#[derive(Debug)]
pub struct RateGate {
    limit: RateLimit,
    /// Held by the delivery asking for tokens; the others queue behind it,
    /// in order.
    tokens: tokio::sync::Mutex<Held>,
    waiting: AtomicUsize,
    /// The rate in force as the last lease said (lower after a `429`).
    per_second: Mutex<f64>,
}

/// Tokens leased and not yet spent, and a bucket of this replica's own for
/// when Redis does not answer.
#[derive(Debug)]
struct Held {
    tokens: u32,
    until: Instant,
    /// This replica's own bucket: its tokens and when they were counted.
    local: Option<(f64, Instant)>,
    /// Until when the last failed lease sends this replica to its own
    /// bucket.
    redis_down_until: Option<Instant>,
    /// The replicas sharing the rate, as the last lease counted them (1
    /// before any lease).
    replicas: u32,
    /// Whether a lease ever answered: the tokens it gave are spent, so the
    /// replica's own bucket starts empty.
    leased: bool,
}

/// Counts a delivery as waiting while it is held.
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl RateGate {
    /// A gate for `limit`, holding no token yet.
    pub fn new(limit: RateLimit) -> RateGate {
        RateGate {
            limit,
            tokens: tokio::sync::Mutex::new(Held {
                tokens: 0,
                until: Instant::now(),
                local: None,
                redis_down_until: None,
                replicas: 1,
                leased: false,
            }),
            waiting: AtomicUsize::new(0),
            per_second: Mutex::new(limit.per_second),
        }
    }

    /// The limit it holds.
    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// The rate in force, per second.
    pub fn per_second(&self) -> f64 {
        *self.per_second.lock()
    }

    /// Waits for a token of `webhook`'s rate, until `deadline` at most.
    /// Gives up at once when the deliveries already waiting would take the
    /// rate past the deadline.
    pub async fn acquire(&self, leases: Option<&Leases>, webhook: &str, deadline: Instant) -> Result<(), RateLimited> {
        let ahead = self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = Waiting(&self.waiting);
        let per_second = self.per_second();
        let limited = RateLimited { per_second };
        let queue = Duration::from_secs_f64(ahead as f64 / per_second);
        if Instant::now() + queue > deadline {
            return Err(limited);
        }
        let Ok(mut held) = tokio::time::timeout_at(deadline, self.tokens.lock()).await else {
            return Err(RateLimited {
                per_second: self.per_second(),
            });
        };
        loop {
            let now = Instant::now();
            if held.tokens > 0 && now < held.until {
                held.tokens -= 1;
                return Ok(());
            }
            held.tokens = 0;
            let per_second = self.per_second();
            let span = (per_second * LEASE_SPAN).ceil().max(1.0) as u32;
            let want = span
                .min(self.limit.burst())
                .min(self.waiting.load(Ordering::Relaxed).max(1) as u32);
            let leases = leases.filter(|_| held.redis_down_until.is_none_or(|t| now >= t));
            let wait = match leases {
                Some(leases) => {
                    match tokio::time::timeout(LEASE_TIMEOUT, leases.lease_again_on_error(webhook, self.limit, want))
                        .await
                        .map_err(|_| ("no answer within 1 s".to_owned(), LOCAL_AFTER_TIMEOUT))
                        .and_then(|answer| answer.map_err(|e| (e.to_string(), LOCAL_AFTER_ERROR)))
                    {
                        Ok(lease) => {
                            if held.local.is_some() {
                                tracing::info!(webhook, "Redis answers again: rate tokens are leased from its bucket");
                            }
                            held.redis_down_until = None;
                            held.local = None;
                            held.replicas = lease.replicas;
                            held.leased = true;
                            *self.per_second.lock() = lease.per_second;
                            if lease.granted > 0 {
                                held.tokens = lease.granted - 1;
                                held.until = Instant::now() + LEASE_TTL;
                                return Ok(());
                            }
                            lease.wait
                        }
                        Err((e, local_for)) => {
                            if held.local.is_none() {
                                tracing::warn!(
                                    webhook,
                                    error = %e,
                                    replicas = held.replicas,
                                    "cannot lease rate tokens from Redis; this replica keeps to its share of the \
                                     webhook's rate on its own until Redis answers"
                                );
                            }
                            held.redis_down_until = Some(now + local_for);
                            local_take(&mut held, self.limit, now)
                        }
                    }
                }
                None => local_take(&mut held, self.limit, now),
            };
            if wait.is_zero() {
                return Ok(());
            }
            if Instant::now() + wait > deadline {
                return Err(RateLimited {
                    per_second: self.per_second(),
                });
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// A `429` from the receiver: lowers the webhook's rate for every
    /// replica (a lease asking for nothing, with the 429 said). Without
    /// Redis nothing is lowered: each replica keeps the full rate.
    pub async fn slow_down(&self, leases: &Leases, webhook: &str) {
        match leases.lease(webhook, self.limit, 0, true).await {
            Ok(lease) => {
                *self.per_second.lock() = lease.per_second;
                leases.telemetry.rate_slowed(webhook, lease.per_second);
            }
            Err(e) => tracing::warn!(webhook, error = %e, "cannot lower the rate in Redis after a 429"),
        }
    }
}

/// Takes a token from this replica's own bucket, filled at its share of the
/// rate up to its share of the burst (one token at least): zero when it had
/// one, else how long until it has.
fn local_take(held: &mut Held, limit: RateLimit, now: Instant) -> Duration {
    let share = f64::from(held.replicas.max(1));
    let per_second = limit.per_second / share;
    let burst = (f64::from(limit.burst()) / share).ceil().max(1.0);
    let first = if held.leased { 0.0 } else { burst };
    let (tokens, at) = held.local.unwrap_or((first, now));
    let tokens = (tokens + now.duration_since(at).as_secs_f64() * per_second).min(burst);
    if tokens >= 1.0 {
        held.local = Some((tokens - 1.0, now));
        Duration::ZERO
    } else {
        held.local = Some((tokens, now));
        Duration::from_secs_f64((1.0 - tokens) / per_second)
    }
}

/// The gate for `limit`, kept from `previous` when its limit is the same.
pub fn gate(limit: Option<RateLimit>, previous: Option<&Arc<RateGate>>) -> Option<Arc<RateGate>> {
    let limit = limit?;
    match previous {
        Some(p) if p.limit == limit => Some(p.clone()),
        _ => Some(Arc::new(RateGate::new(limit))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(per_second: f64, burst: u32) -> RateLimit {
        RateLimit {
            per_second,
            burst: Some(burst),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn without_redis_a_replica_limits_on_its_own_after_the_burst() {
        let gate = RateGate::new(limit(10.0, 3));
        let began = Instant::now();
        let deadline = began + Duration::from_secs(60);
        for _ in 0..3 {
            gate.acquire(None, "w", deadline).await.unwrap();
        }
        assert_eq!(Instant::now(), began, "the burst goes at once");
        for _ in 0..10 {
            gate.acquire(None, "w", deadline).await.unwrap();
        }
        let took = Instant::now() - began;
        assert!(
            took >= Duration::from_millis(990) && took <= Duration::from_millis(1010),
            "{took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_delivery_that_would_wait_past_its_deadline_gives_up_without_waiting() {
        let gate = Arc::new(RateGate::new(limit(1.0, 1)));
        let now = Instant::now();
        gate.acquire(None, "w", now + Duration::from_secs(5)).await.unwrap();
        // The next token is a second away: past a deadline half a second off.
        let e = gate.acquire(None, "w", now + Duration::from_millis(500)).await;
        assert_eq!(e, Err(RateLimited { per_second: 1.0 }));
        assert_eq!(Instant::now(), now, "it gave up at once");
    }

    #[tokio::test]
    async fn while_redis_does_not_answer_a_replica_limits_on_its_own() {
        // Nothing listens on port 1: every lease fails at once.
        let client = redis::Client::open("redis://127.0.0.1:1/").unwrap();
        let conn = crate::config::redis::RedisConfig::lazy_connection(&client).unwrap();
        let leases = Leases::new(conn, "t:", Duration::from_secs(60), Telemetry::new(&[], 10));
        let gate = RateGate::new(limit(100.0, 2));
        let began = Instant::now();
        let deadline = began + Duration::from_secs(30);
        for _ in 0..5 {
            gate.acquire(Some(&leases), "w", deadline).await.unwrap();
        }
        // The burst of 2, then 3 at 100 a second.
        assert!(began.elapsed() >= Duration::from_millis(25), "{:?}", began.elapsed());
        assert!(
            gate.tokens.lock().await.redis_down_until.is_some(),
            "Redis is left alone for a while"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn on_its_own_a_replica_that_shared_the_rate_keeps_to_its_share_from_an_empty_bucket() {
        let gate = RateGate::new(limit(30.0, 6));
        {
            let mut held = gate.tokens.lock().await;
            held.replicas = 3;
            held.leased = true;
        }
        let began = Instant::now();
        let deadline = began + Duration::from_secs(60);
        for _ in 0..10 {
            gate.acquire(None, "w", deadline).await.unwrap();
        }
        // 10 a second, the first token a tenth of a second in: no burst.
        assert_eq!(Instant::now() - began, Duration::from_secs(1));
        // Idle, it keeps at most its share of the burst (2 of 6).
        tokio::time::advance(Duration::from_secs(10)).await;
        let idle = Instant::now();
        for _ in 0..3 {
            gate.acquire(None, "w", deadline).await.unwrap();
        }
        assert_eq!(Instant::now() - idle, Duration::from_millis(100));
    }

    #[test]
    fn a_gate_is_kept_while_its_limit_is_unchanged() {
        let first = gate(Some(limit(5.0, 2)), None).unwrap();
        let same = gate(Some(limit(5.0, 2)), Some(&first)).unwrap();
        assert!(Arc::ptr_eq(&first, &same));
        let other = gate(Some(limit(6.0, 2)), Some(&first)).unwrap();
        assert!(!Arc::ptr_eq(&first, &other));
        assert!(gate(None, Some(&first)).is_none());
    }
}

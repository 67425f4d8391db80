//! Herald's capacity at a large number of webhooks, against a small baseline
//! measured the same way in the same run. Run it with `scripts/capacity`
//! (which starts a broker and Redis, builds in release mode and passes the
//! addresses).
//!
//!     capacity --brokers 127.0.0.1:PORT --herald target/release/herald [--webhooks 1000000]
//!              [--baseline 10] [--resync-interval 30s] [--events 20000] [--rounds 5] [--fetch-wait-ms 10]
//!              [--redis redis://127.0.0.1:6379/14] [--json FILE] [--work-dir DIR]
//!              [--engine LABEL] [--commit REV] [--broker-pid PID]
//!
//! The harness owns the Redis database of `--redis` (14 by default; it
//! refuses database 0): it FLUSHDBs it at the start and at the end. Each size
//! has its own key prefix there (`capacity{N}:`), so both sizes' Heralds can
//! run side by side.
//!
//! For each size (the `--baseline` first, then `--webhooks`):
//! - the webhooks are written as any service may write them
//!   (docs/subscriptions.md: the document, the id set and the tenant set),
//!   1,000 per round trip, with a fixed mix: 5,000 tenants, 20,000 event
//!   types, each webhook bound to one tenant and subscribed to one type, one
//!   in ten to `tour.*` as well, a `whsec_` secret of 32 bytes and an
//!   `x-api-key` header each. The same generator (deterministic, so every run
//!   writes the same documents) makes both sizes. Redis's `used_memory`
//!   before and after is reported. Herald's own marker `tenants:indexed` is
//!   not written, so once ready it adds every webhook to its tenant set
//!   again (as on a store no replica has indexed yet): the harness waits
//!   for that audit to finish and reports how long it took. Ten "routed"
//!   webhooks, counted in neither size and bound to no tenant, subscribe to
//!   `capacity.routed.0`..`.9` and point at this process's receiver on
//!   127.0.0.1;
//! - `herald run` is started as a child process, configured by `HERALD_...`
//!   variables only (its own source topic and consumer group per run), and
//!   measured:
//!   - ready time: from spawn until `/readyz` answers 200 (polled every 20 ms),
//!     and within it the time until `/readyz` says the subscription index has
//!     loaded (Herald joins its consumer group meanwhile; Tansu holds a new
//!     group's first join about 3 s with the session timeout set here, so
//!     that is the least ready time);
//!   - RSS when ready (VmRSS);
//!   - the one-time fill of the tenant sets, waited for;
//!   - an idle window of two resync intervals, no events and no changes:
//!     CPU in cores, the median and the peak of VmRSS sampled every 100 ms
//!     (the peak also counts VmHWM, so the load's own peak is in it), and
//!     the peak against RSS when ready;
//!   - change propagation: 20 webhooks created the contract's way (one
//!     MULTI: SET, SADD, SADD to the tenant set, PUBLISH), each timed from
//!     the write until `/readyz` counts it (polled every 2 ms: the count is
//!     the index routing uses, so it is counted once it is routable), then
//!     the same 20 deleted (DEL, SREM, SREM, PUBLISH);
//!   - Herald is left running.
//!
//! Then, for `--rounds` rounds, each size in turn (its Herald delivering
//! while the other's is idle, so both runs of a round see the same machine):
//! `--events` Jimo-envelope records of 1 KB, each of one of the ten routed
//! types in turn (so each reaches exactly one webhook), produced to the size's
//! source topic as one burst (Herald then drains a backlog rather than
//! following the producer); the wall time from the first produce until the
//! receiver has counted every delivery, deliveries per second, and Herald's
//! CPU seconds per 1,000 deliveries over that time. Each run starts once
//! Herald's CPU has settled (sampled every 250 ms). The large size against
//! the baseline is the median of the rounds' ratios. Both Heralds are then
//! stopped with SIGTERM and waited for.
//!
//! A table (one row per size, with the median delivery figures, and the
//! large size's throughput and CPU per delivery against the baseline, round
//! by round) is printed, and the same as JSON to
//! `--json`, with how busy the machine was in each phase (wall times and
//! throughput depend on it; Herald's own CPU and memory much less).
//!
//! Traffic goes to 127.0.0.1 only: the generated webhooks' hosts
//! (`hooks.tenant-00042.example.com`) are never called, since no event of
//! theirs is produced.

#[path = "common/machine.rs"]
mod machine;

use machine::machine_jiffies;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use base64::Engine;
use comfy_table::{CellAlignment, Table};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::ClientConfig;
use redis::aio::MultiplexedConnection;
use serde::Serialize;
use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The mix of the generated webhooks.
const TENANTS: u64 = 5_000;
const EVENT_TYPES: u64 = 20_000;
/// One webhook in this many also subscribes to `tour.*`.
const TOUR_EVERY: u64 = 10;
/// Webhooks pointed at the receiver, one per routed event type.
const ROUTED: usize = 10;
/// Webhook documents written per round trip, and round trips in flight.
const WRITE_BATCH: u64 = 1_000;
const WRITES_IN_FLIGHT: usize = 4;
/// Webhooks created, then deleted, to time change propagation.
const CHANGES: u64 = 20;
/// Records produced without waiting for their acknowledgement (within
/// librdkafka's default queue of 100,000): the whole run reaches the broker
/// as a burst in well under a second, so Herald drains a backlog at its own
/// pace instead of following this process's producing on the same cores.
const PRODUCE_IN_FLIGHT: usize = 50_000;
/// Partitions of the source topic.
const PARTITIONS: i32 = 6;
/// Herald's consumers' `session.timeout.ms` (see [`Harness::spawn`]).
const SESSION_TIMEOUT_MS: u64 = 6_000;
/// Key prefix Herald is configured with (the default).
/// Full re-syncs Herald has completed (its Prometheus counter).
const FULL_SYNCS: &str = "herald_subscription_syncs_total{kind=\"full\"}";
/// Sampling and polling intervals.
const READY_POLL: Duration = Duration::from_millis(20);
const IDLE_SAMPLE: Duration = Duration::from_millis(100);
const CHANGE_POLL: Duration = Duration::from_millis(2);
const SETTLE_SAMPLE: Duration = Duration::from_millis(250);
/// Herald counts as settled after a re-sync when its CPU stays below this
/// for two samples in a row (idle, it uses a few hundredths of a core).
const SETTLED_CORES: f64 = 0.2;
/// Deadlines: start-up (loading the index), one change, the whole delivery
/// run, stopping after SIGTERM, and one Redis command.
const READY_TIMEOUT: Duration = Duration::from_secs(600);
const CHANGE_TIMEOUT: Duration = Duration::from_secs(300);
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(1800);
const STOP_TIMEOUT: Duration = Duration::from_secs(120);
const REDIS_TIMEOUT: Duration = Duration::from_secs(60);

// Event types are `area.subject.action`: 20 x 25 x 40 = EVENT_TYPES.
#[rustfmt::skip]
const AREAS: [&str; 20] = [
    "tour", "survey", "checklist", "banner", "hint", "user", "team", "billing", "invoice", "crm", "deal", "ticket",
    "chat", "recorder", "project", "task", "report", "audit", "export", "catalog",
];
#[rustfmt::skip]
const SUBJECTS: [&str; 25] = [
    "step", "item", "record", "comment", "attachment", "member", "role", "session", "page", "form", "answer",
    "question", "plan", "payment", "refund", "contact", "company", "note", "label", "view", "file", "link",
    "widget", "schedule", "reminder",
];
#[rustfmt::skip]
const ACTIONS: [&str; 40] = [
    "created", "updated", "deleted", "completed", "started", "skipped", "dismissed", "viewed", "clicked",
    "submitted", "approved", "rejected", "assigned", "unassigned", "archived", "restored", "published",
    "unpublished", "shared", "exported", "imported", "renamed", "moved", "copied", "locked", "unlocked", "expired",
    "renewed", "failed", "succeeded", "opened", "closed", "reopened", "merged", "split", "tagged", "untagged",
    "paused", "resumed", "scheduled",
];
const PURPOSES: [&str; 10] = [
    "CRM sync",
    "Slack alerts",
    "Data warehouse",
    "Zapier",
    "Audit trail",
    "Billing bridge",
    "Product analytics",
    "Support desk",
    "Email automation",
    "Internal dashboard",
];
const PATHS: [&str; 4] = ["webhooks", "hooks/herald", "api/v1/events", "integrations/jimo"];

/// Event type `j` of the mix.
fn event_type(j: u64) -> String {
    let j = j as usize;
    format!(
        "{}.{}.{}",
        AREAS[j % AREAS.len()],
        SUBJECTS[(j / AREAS.len()) % SUBJECTS.len()],
        ACTIONS[(j / (AREAS.len() * SUBJECTS.len())) % ACTIONS.len()]
    )
}

/// SplitMix64: a cheap, well-spread stream of numbers from a seed, so the
/// same index always makes the same webhook and runs write the same data.
struct Draws(u64);

impl Draws {
    fn new(index: u64) -> Draws {
        Draws(index.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ 0x6A09_E667_F3BC_C908)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

fn rfc3339_ms(epoch_ms: u64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(epoch_ms as i128 * 1_000_000)
        .expect("a time in range")
        .format(&Rfc3339)
        .expect("RFC 3339 formats")
}

/// Milliseconds, to the microsecond.
fn millis(d: Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}

fn epoch_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// One webhook document of the mix, as another service would write it.
struct Generated {
    id: String,
    /// Bound to one tenant; the routed webhooks are bound to none.
    tenant: Option<String>,
    json: String,
}

impl Generated {
    /// Webhook `index` of the mix, created at `created_ms` (spread over 2024
    /// when `None`).
    fn mix(index: u64, created_ms: Option<u64>) -> Generated {
        const YEAR_2024_MS: u64 = 1_704_067_200_000;
        let mut d = Draws::new(index);
        let created = created_ms.unwrap_or(YEAR_2024_MS + d.next() % (366 * 86_400_000));
        let updated = created + d.next() % (60 * 86_400_000);
        let id = format!("wh_{created:012x}{:016x}", d.next());
        let tenant = format!("tenant-{:05}", d.next() % TENANTS);
        let event = event_type(d.next() % EVENT_TYPES);
        let mut events = vec![event.clone()];
        if d.next() % TOUR_EVERY == 0 {
            events.push("tour.*".into());
        }
        let key: Vec<u8> = (0..4).flat_map(|_| d.next().to_le_bytes()).collect();
        let secret = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key));
        let purpose = PURPOSES[(d.next() % PURPOSES.len() as u64) as usize];
        let path = PATHS[(d.next() % PATHS.len() as u64) as usize];
        let api_key = format!("k_live_{:016x}{:016x}", d.next(), d.next());
        let json = json!({
            "id": id,
            "tenant": tenant,
            "name": format!("{purpose} ({event})"),
            "url": format!("https://hooks.{tenant}.example.com/{path}/{id}"),
            "events": events,
            "status": "active",
            "secrets": [secret],
            "headers": {"x-api-key": api_key},
            "created_at": rfc3339_ms(created),
            "updated_at": rfc3339_ms(updated),
            "status_changed_at": rfc3339_ms(created),
        })
        .to_string();
        Generated {
            id,
            tenant: Some(tenant),
            json,
        }
    }

    /// Routed webhook `k`: no tenant, `capacity.routed.{k}`, the receiver.
    fn routed(k: usize, receiver: SocketAddr) -> Generated {
        let id = format!("capacity-routed-{k}");
        let now = rfc3339_ms(epoch_ms());
        let key: [u8; 32] = rand::random();
        let json = json!({
            "id": id,
            "name": format!("capacity receiver {k}"),
            "url": format!("http://{receiver}/routed/{k}"),
            "events": [routed_type(k)],
            "status": "active",
            "secrets": [format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key))],
            "headers": {"x-api-key": format!("k_test_{k}")},
            "created_at": now,
            "updated_at": now,
        })
        .to_string();
        Generated { id, tenant: None, json }
    }
}

fn routed_type(k: usize) -> String {
    format!("capacity.routed.{k}")
}

/// The contract's key names (docs/subscriptions.md), for one size's prefix.
#[derive(Clone)]
struct Keys {
    prefix: String,
}

impl Keys {
    /// Each size's webhooks under their own prefix, so both sizes' Heralds
    /// run side by side on the same database.
    fn of_size(webhooks: u64) -> Keys {
        Keys {
            prefix: format!("capacity{webhooks}:"),
        }
    }
    fn webhook(&self, id: &str) -> String {
        format!("{}webhook:{id}", self.prefix)
    }
    fn ids(&self) -> String {
        format!("{}webhooks", self.prefix)
    }
    fn changes(&self) -> String {
        format!("{}webhooks:changed", self.prefix)
    }
    fn tenant(&self, tenant: &str) -> String {
        format!("{}tenant:{tenant}:webhooks", self.prefix)
    }
}

/// Writes webhooks to Redis. Seeding happens before Herald starts, so there
/// is nobody to announce to: documents and sets are pipelined (not one
/// transaction each) and Herald's full load at start reads them. Changes
/// while it runs are one `MULTI` each, as the contract asks.
struct Store {
    conn: MultiplexedConnection,
    keys: Keys,
}

impl Store {
    async fn flush(&mut self) -> anyhow::Result<()> {
        let () = redis::cmd("FLUSHDB").query_async(&mut self.conn).await?;
        Ok(())
    }

    /// Redis's `used_memory`, in bytes.
    async fn used_memory(&mut self) -> anyhow::Result<u64> {
        let info: String = redis::cmd("INFO").arg("memory").query_async(&mut self.conn).await?;
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .and_then(|v| v.trim().parse().ok())
            .context("INFO memory has no used_memory")
    }

    /// Writes `webhooks` as `WRITE_BATCH` documents per round trip.
    async fn seed(&self, webhooks: impl Iterator<Item = Generated>) -> anyhow::Result<()> {
        let mut pending = FuturesUnordered::new();
        let mut webhooks = webhooks.peekable();
        while webhooks.peek().is_some() {
            let mut pipe = redis::pipe();
            let mut ids = Vec::with_capacity(WRITE_BATCH as usize);
            for w in webhooks.by_ref().take(WRITE_BATCH as usize) {
                pipe.set(self.keys.webhook(&w.id), w.json).ignore();
                if let Some(tenant) = &w.tenant {
                    pipe.sadd(self.keys.tenant(tenant), &w.id).ignore();
                }
                ids.push(w.id);
            }
            pipe.sadd(self.keys.ids(), ids).ignore();
            let mut conn = self.conn.clone();
            pending.push(async move { pipe.query_async::<()>(&mut conn).await });
            if pending.len() >= WRITES_IN_FLIGHT {
                pending.next().await.transpose()?;
            }
        }
        while let Some(written) = pending.next().await {
            written?;
        }
        Ok(())
    }

    /// Creates a webhook the contract's way: one transaction, announced.
    async fn create(&mut self, w: &Generated) -> anyhow::Result<()> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .set(self.keys.webhook(&w.id), &w.json)
            .ignore()
            .sadd(self.keys.ids(), &w.id)
            .ignore();
        if let Some(tenant) = &w.tenant {
            pipe.sadd(self.keys.tenant(tenant), &w.id).ignore();
        }
        let () = pipe
            .publish(self.keys.changes(), &w.id)
            .ignore()
            .query_async(&mut self.conn)
            .await?;
        Ok(())
    }

    /// Deletes a webhook the contract's way: one transaction, announced.
    async fn delete(&mut self, w: &Generated) -> anyhow::Result<()> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(self.keys.webhook(&w.id))
            .ignore()
            .srem(self.keys.ids(), &w.id)
            .ignore();
        if let Some(tenant) = &w.tenant {
            pipe.srem(self.keys.tenant(tenant), &w.id).ignore();
        }
        let () = pipe
            .publish(self.keys.changes(), &w.id)
            .ignore()
            .query_async(&mut self.conn)
            .await?;
        Ok(())
    }
}

/// The routed webhooks' endpoint: answers 204, counts arrivals per webhook
/// (`/routed/{k}`) and in all, and wakes whoever waits for a count.
#[derive(Clone)]
struct Receiver {
    per_webhook: Arc<[AtomicU64; ROUTED]>,
    /// Requests to any other path (none expected).
    unexpected: Arc<AtomicU64>,
    arrived: tokio::sync::watch::Sender<u64>,
}

impl Receiver {
    fn new() -> Receiver {
        Receiver {
            per_webhook: Arc::new(std::array::from_fn(|_| AtomicU64::new(0))),
            unexpected: Arc::default(),
            arrived: tokio::sync::watch::Sender::new(0),
        }
    }

    fn reset(&self) {
        self.per_webhook.iter().for_each(|c| c.store(0, Ordering::SeqCst));
        self.unexpected.store(0, Ordering::SeqCst);
        self.arrived.send_replace(0);
    }
}

async fn receive(State(r): State<Receiver>, uri: Uri, _body: Bytes) -> StatusCode {
    let webhook = uri
        .path()
        .strip_prefix("/routed/")
        .and_then(|k| k.parse::<usize>().ok())
        .and_then(|k| r.per_webhook.get(k));
    match webhook {
        Some(count) => count.fetch_add(1, Ordering::SeqCst),
        None => r.unexpected.fetch_add(1, Ordering::SeqCst),
    };
    r.arrived.send_modify(|n| *n += 1);
    StatusCode::NO_CONTENT
}

/// A 1 KB Jimo-envelope record of event type `event` (the default envelope
/// rules read `/event` and `/time`).
fn record_body(event: &str, n: u64) -> Vec<u8> {
    let mut out = format!(
        r#"{{"event":"{event}","version":"0","time":{},"n":{n},"pad":""#,
        epoch_ms()
    )
    .into_bytes();
    out.resize(1024 - 2, b'x');
    out.extend_from_slice(b"\"}");
    out
}

/// The machine's CPU use over a phase (from /proc/stat), so each figure can
/// be read against what else was running: the machine may be shared.
struct MachineBusy((u64, u64));

impl MachineBusy {
    fn start() -> MachineBusy {
        MachineBusy(machine_jiffies())
    }

    /// Percent of all CPUs busy since `start`.
    fn pct(&self) -> f64 {
        let (busy, total) = machine_jiffies();
        100.0 * busy.saturating_sub(self.0 .0) as f64 / total.saturating_sub(self.0 .1).max(1) as f64
    }
}

/// CPU and memory of a process, from /proc.
struct Proc {
    pid: u32,
    /// Clock ticks per second (`getconf CLK_TCK`).
    ticks: f64,
}

impl Proc {
    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(format!("/proc/{}/{file}", self.pid)).unwrap_or_default()
    }

    /// utime + stime, in seconds.
    fn cpu_seconds(&self) -> f64 {
        let stat = self.read("stat");
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
        let field = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        (field(11) + field(12)) / self.ticks
    }

    fn status_mb(&self, field: &str) -> f64 {
        self.read("status")
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    }

    fn rss_mb(&self) -> f64 {
        self.status_mb("VmRSS:")
    }

    fn hwm_mb(&self) -> f64 {
        self.status_mb("VmHWM:")
    }
}

/// What `/readyz` says.
struct Readiness {
    ready: bool,
    /// The subscription index has loaded (the consumers start after it).
    loaded: bool,
    webhooks: u64,
}

/// A running `herald run`.
struct Herald {
    child: tokio::process::Child,
    proc: Proc,
    ops: SocketAddr,
    http: reqwest::Client,
    log: PathBuf,
    spawned: Instant,
}

impl Herald {
    async fn readyz(&self) -> Option<Readiness> {
        let response = self.http.get(format!("http://{}/readyz", self.ops)).send().await.ok()?;
        let ready = response.status() == StatusCode::OK;
        let body: serde_json::Value = serde_json::from_slice(&response.bytes().await.ok()?).ok()?;
        Some(Readiness {
            ready,
            loaded: body.get("subscriptions_loaded")?.as_bool()?,
            webhooks: body.get("webhooks")?.as_u64()?,
        })
    }

    /// The value of one sample of `/metrics` (name with its labels), if any.
    async fn metric(&self, series: &str) -> Option<f64> {
        let text = self
            .http
            .get(format!("http://{}/metrics", self.ops))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    /// Fails when Herald has exited, quoting the end of its log.
    fn check_running(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            bail!(
                "herald exited ({status}); the end of {}:\n{}",
                self.log.display(),
                tail.join("\n")
            );
        }
        Ok(())
    }

    /// Polls `/readyz` every `every` until `done` holds.
    async fn poll_readyz(
        &mut self,
        every: Duration,
        timeout: Duration,
        what: &str,
        mut done: impl FnMut(&Readiness) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.readyz().await.is_some_and(|r| done(&r)) {
                return Ok(());
            }
            self.check_running()?;
            ensure!(Instant::now() < deadline, "{what}: not seen within {timeout:?}");
        }
    }

    /// Stops Herald with SIGTERM; how long it took to exit.
    async fn stop(mut self) -> anyhow::Result<f64> {
        let start = Instant::now();
        std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.proc.pid.to_string())
            .status()
            .context("kill -TERM")?;
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                ensure!(status.success(), "herald exited with {status} after SIGTERM");
                Ok(start.elapsed().as_secs_f64())
            }
            Err(_) => {
                self.child.kill().await?;
                bail!("herald did not stop within {STOP_TIMEOUT:?} of SIGTERM")
            }
        }
    }
}

/// A median and a maximum, with every sample kept.
#[derive(Serialize)]
struct Spread {
    median: f64,
    max: f64,
    samples: Vec<f64>,
}

impl Spread {
    fn of(mut samples: Vec<f64>) -> Spread {
        samples.sort_by(f64::total_cmp);
        let n = samples.len();
        let median = match n {
            0 => f64::NAN,
            _ if n % 2 == 1 => samples[n / 2],
            _ => (samples[n / 2 - 1] + samples[n / 2]) / 2.0,
        };
        Spread {
            median,
            max: samples.last().copied().unwrap_or(f64::NAN),
            samples,
        }
    }
}

/// Redis's side of one size.
#[derive(Serialize)]
struct RedisFigures {
    write_s: f64,
    used_memory_before_mb: f64,
    used_memory_after_mb: f64,
    /// After minus before, over the size's webhooks and the routed ones.
    bytes_per_webhook: f64,
}

/// The idle window.
#[derive(Serialize)]
struct Idle {
    window_s: f64,
    samples: usize,
    cores: f64,
    steady_rss_mb: f64,
    peak_rss_mb: f64,
    peak_to_ready: f64,
    machine_busy_pct: f64,
    /// Full re-syncs completed during the window, from
    /// `herald_subscription_syncs_total{kind="full"}` (when Herald exports it).
    full_resyncs: Option<f64>,
}

/// Routing and delivery of `events` records.
#[derive(Serialize)]
struct Delivery {
    /// How long Herald's CPU took to settle before it began.
    settle_s: f64,
    events: u64,
    wall_s: f64,
    deliveries_per_s: f64,
    cpu_s_per_1000: f64,
    herald_cores: f64,
    /// The broker's CPU (when its pid is given) and the machine's.
    broker_cores: Option<f64>,
    machine_busy_pct: f64,
    /// Full re-syncs (audits) completed during the run.
    full_resyncs: Option<f64>,
}

/// Everything measured at one size.
#[derive(Serialize)]
struct SizeFigures {
    webhooks: u64,
    redis: RedisFigures,
    /// From spawn until `/readyz` says the subscription index has loaded.
    loaded_s: f64,
    /// ...and until it answers 200 (the consumer group has assigned
    /// partitions too: joined while the index loads).
    ready_s: f64,
    /// The machine's CPU use from spawn to ready.
    load_machine_busy_pct: f64,
    rss_ready_mb: f64,
    /// VmHWM when ready: the peak of loading.
    hwm_ready_mb: f64,
    /// From ready until the one-time fill of the tenant sets was done.
    fill_s: f64,
    idle: Idle,
    create_ms: Spread,
    delete_ms: Spread,
    /// One per round; the sizes take turns.
    delivery: Vec<Delivery>,
    stop_s: f64,
}

impl SizeFigures {
    fn deliveries_per_s(&self) -> Spread {
        Spread::of(self.delivery.iter().map(|d| d.deliveries_per_s).collect())
    }
    fn cpu_s_per_1000(&self) -> Spread {
        Spread::of(self.delivery.iter().map(|d| d.cpu_s_per_1000).collect())
    }
}

struct Harness {
    brokers: String,
    herald: PathBuf,
    redis_url: String,
    resync: String,
    resync_interval: Duration,
    events: u64,
    fetch_wait_ms: u64,
    work_dir: PathBuf,
    receiver: Receiver,
    receiver_addr: SocketAddr,
    producer: FutureProducer,
    http: reqwest::Client,
    run_id: String,
    ticks: f64,
    broker_pid: Option<u32>,
}

impl Harness {
    async fn store(&self, keys: Keys) -> anyhow::Result<Store> {
        let client = redis::Client::open(self.redis_url.as_str())?;
        // Redis serves one command at a time: a FLUSHDB of a million keys, or
        // Herald reading a million ids in one reply, holds the others well
        // past the client's default 500 ms.
        let config = redis::AsyncConnectionConfig::new().set_response_timeout(Some(REDIS_TIMEOUT));
        Ok(Store {
            conn: client.get_multiplexed_async_connection_with_config(&config).await?,
            keys,
        })
    }

    async fn topic(&self, name: &str) -> anyhow::Result<()> {
        let config = herald::Config::from_toml_overlay(&format!("[kafka]\nbrokers = \"{}\"", self.brokers))?;
        herald::kafka::create_topics(&config.kafka, &[name.to_owned()], PARTITIONS).await?;
        Ok(())
    }

    /// `herald run` for `name`'s topic and group, configured by environment
    /// variables only (any `HERALD_...` of this process's own is not passed on).
    fn spawn(&self, name: &str, keys: &Keys) -> anyhow::Result<Herald> {
        let ops = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let log = self.work_dir.join(format!("{name}.log"));
        let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let port = self.receiver_addr.port();
        let mut command = tokio::process::Command::new(&self.herald);
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("HERALD_") {
                command.env_remove(key);
            }
        }
        command
            .env_remove("RUST_LOG")
            .env("HERALD_KAFKA__BROKERS", &self.brokers)
            .env("HERALD_KAFKA__GROUP_ID", name)
            .env("HERALD_KAFKA__TOPICS", format!("[\"{name}\"]"))
            .env("HERALD_KAFKA__CREATE_MISSING_TOPICS", "true")
            // Tansu holds an empty fetch for the whole fetch.wait.max.ms (see
            // examples/bench.rs); the default 500 ms would bound delivery.
            .env(
                "HERALD_KAFKA__CONSUMER_PROPERTIES__FETCH__WAIT__MAX__MS",
                self.fetch_wait_ms.to_string(),
            )
            // Tansu holds a new group's first join for about half the session
            // timeout: 23 s at librdkafka's default 45 s, 3 s at this
            // (Kafka's smallest by default). Ready time then measures Herald.
            .env(
                "HERALD_KAFKA__CONSUMER_PROPERTIES__SESSION__TIMEOUT__MS",
                SESSION_TIMEOUT_MS.to_string(),
            )
            .env("HERALD_REDIS__URL", &self.redis_url)
            .env("HERALD_REDIS__PREFIX", &keys.prefix)
            .env("HERALD_SUBSCRIPTIONS__RESYNC_INTERVAL", &self.resync)
            .env("HERALD_DEAD_LETTER__TOPIC", format!("{name}-dlq"))
            .env("HERALD_RETRY__TIERS", "[]")
            .env("HERALD_RETRY__REDRIVE_TOPIC", format!("{name}-redrive"))
            .env("HERALD_SYSTEM_EVENTS__TOPIC", "")
            .env("HERALD_HISTORY__TOPIC", "")
            .env("HERALD_DELIVERY__ALLOW_CIDRS", r#"["127.0.0.0/8"]"#)
            .env("HERALD_DELIVERY__ALLOW_PORTS", format!("[80, 443, 8080, 8443, {port}]"))
            .env("HERALD_OPS__LISTEN", ops.to_string())
            // No admin.tokens: the management API is not served.
            .env("HERALD_ADMIN__TOKENS", "[]")
            .env("HERALD_LOG__LEVEL", "info")
            .arg("run")
            .stdout(out.try_clone()?)
            .stderr(out)
            .kill_on_drop(true);
        let spawned = Instant::now();
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", self.herald.display()))?;
        let pid = child.id().context("herald has a pid")?;
        Ok(Herald {
            child,
            proc: Proc { pid, ticks: self.ticks },
            ops,
            http: self.http.clone(),
            log,
            spawned,
        })
    }

    /// Every measurement at one size but delivery; its Herald is left
    /// running for the delivery rounds.
    async fn measure(&self, webhooks: u64) -> anyhow::Result<(SizeFigures, Herald, String)> {
        let name = format!("capacity-{}-{webhooks}", self.run_id);
        let keys = Keys::of_size(webhooks);
        let mut store = self.store(keys.clone()).await?;
        let before = store.used_memory().await?;
        eprintln!("  writing {webhooks} webhooks and {ROUTED} routed ones...");
        let start = Instant::now();
        store.seed((0..webhooks).map(|i| Generated::mix(i, None))).await?;
        store
            .seed((0..ROUTED).map(|k| Generated::routed(k, self.receiver_addr)))
            .await?;
        let write_s = start.elapsed().as_secs_f64();
        let after = store.used_memory().await?;
        eprintln!("  written in {write_s:.1} s");
        let redis = RedisFigures {
            write_s,
            used_memory_before_mb: before as f64 / 1_048_576.0,
            used_memory_after_mb: after as f64 / 1_048_576.0,
            bytes_per_webhook: after.saturating_sub(before) as f64 / (webhooks + ROUTED as u64) as f64,
        };
        self.topic(&name).await?;
        self.receiver.reset();

        eprintln!("  starting herald...");
        let load_busy = MachineBusy::start();
        let mut herald = self.spawn(&name, &keys)?;
        let spawned = herald.spawned;
        let mut loaded_s = None;
        herald
            .poll_readyz(READY_POLL, READY_TIMEOUT, "/readyz 200", |r| {
                if r.loaded {
                    loaded_s.get_or_insert(spawned.elapsed().as_secs_f64());
                }
                r.ready
            })
            .await?;
        let ready_s = spawned.elapsed().as_secs_f64();
        let load_machine_busy_pct = load_busy.pct();
        let rss_ready_mb = herald.proc.rss_mb();
        let hwm_ready_mb = herald.proc.hwm_mb();
        let loaded = herald.readyz().await.context("/readyz after ready")?.webhooks;
        let expected = webhooks + ROUTED as u64;
        ensure!(
            loaded == expected,
            "herald loaded {loaded} webhooks, not {expected}: see {} for invalid documents",
            herald.log.display()
        );

        eprintln!("  ready in {ready_s:.2} s; filling the tenant sets...");
        let fill_s = self.tenant_sets_filled(&mut herald).await?;
        eprintln!("  filled in {fill_s:.2} s; idle for {:?}...", self.resync_interval * 2);
        let idle = self.idle(&mut herald, rss_ready_mb).await?;

        eprintln!("  change propagation ({CHANGES} creates, {CHANGES} deletes)...");
        let (create_ms, delete_ms) = self.changes(&mut herald, &mut store, webhooks, expected).await?;

        let figures = SizeFigures {
            webhooks,
            redis,
            loaded_s: loaded_s.unwrap_or(ready_s),
            ready_s,
            load_machine_busy_pct,
            rss_ready_mb,
            hwm_ready_mb,
            fill_s,
            idle,
            create_ms,
            delete_ms,
            delivery: Vec::new(),
            stop_s: f64::NAN,
        };
        Ok((figures, herald, name))
    }

    /// Waits for the audit that fills the tenant sets once (the harness does
    /// not write Herald's marker that they are complete): the second full
    /// sync, after the first load. Its seconds from now.
    async fn tenant_sets_filled(&self, herald: &mut Herald) -> anyhow::Result<f64> {
        let start = Instant::now();
        let deadline = start + READY_TIMEOUT;
        while herald.metric(FULL_SYNCS).await.unwrap_or(0.0) < 2.0 {
            herald.check_running()?;
            ensure!(
                Instant::now() < deadline,
                "the tenant sets not filled within {READY_TIMEOUT:?}"
            );
            tokio::time::sleep(SETTLE_SAMPLE).await;
        }
        Ok(start.elapsed().as_secs_f64())
    }

    /// Two resync intervals with nothing to do, sampling memory every 100 ms.
    async fn idle(&self, herald: &mut Herald, rss_ready_mb: f64) -> anyhow::Result<Idle> {
        let window = self.resync_interval * 2;
        let syncs_before = herald.metric(FULL_SYNCS).await;
        let mut samples = Vec::new();
        let mut tick = tokio::time::interval(IDLE_SAMPLE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let cpu_before = herald.proc.cpu_seconds();
        let busy = MachineBusy::start();
        let start = Instant::now();
        while start.elapsed() < window {
            tick.tick().await;
            herald.check_running()?;
            samples.push(herald.proc.rss_mb());
        }
        let wall = start.elapsed().as_secs_f64();
        let cores = (herald.proc.cpu_seconds() - cpu_before) / wall;
        let machine_busy_pct = busy.pct();
        let syncs_after = herald.metric(FULL_SYNCS).await;
        let peak_rss_mb = samples.iter().copied().fold(herald.proc.hwm_mb(), f64::max);
        let count = samples.len();
        Ok(Idle {
            window_s: wall,
            samples: count,
            cores,
            steady_rss_mb: Spread::of(samples).median,
            peak_rss_mb,
            peak_to_ready: peak_rss_mb / rss_ready_mb,
            machine_busy_pct,
            full_resyncs: syncs_before.zip(syncs_after).map(|(b, a)| a - b),
        })
    }

    /// Creates `CHANGES` webhooks, then deletes them, each timed from its
    /// write until `/readyz` counts it. `loaded` webhooks are there before.
    async fn changes(
        &self,
        herald: &mut Herald,
        store: &mut Store,
        webhooks: u64,
        loaded: u64,
    ) -> anyhow::Result<(Spread, Spread)> {
        // Indexes past the seeded ones: new ids, of the same mix.
        let created: Vec<Generated> = (0..CHANGES)
            .map(|k| Generated::mix(webhooks + k, Some(epoch_ms())))
            .collect();
        let mut create_ms = Vec::new();
        for (k, w) in created.iter().enumerate() {
            let want = loaded + k as u64 + 1;
            let start = Instant::now();
            store.create(w).await?;
            herald
                .poll_readyz(CHANGE_POLL, CHANGE_TIMEOUT, "a created webhook", |r| r.webhooks == want)
                .await?;
            create_ms.push(millis(start.elapsed()));
        }
        let mut delete_ms = Vec::new();
        for (k, w) in created.iter().enumerate() {
            let want = loaded + CHANGES - k as u64 - 1;
            let start = Instant::now();
            store.delete(w).await?;
            herald
                .poll_readyz(CHANGE_POLL, CHANGE_TIMEOUT, "a deleted webhook", |r| r.webhooks == want)
                .await?;
            delete_ms.push(millis(start.elapsed()));
        }
        Ok((Spread::of(create_ms), Spread::of(delete_ms)))
    }

    /// Samples Herald's CPU until it stays below `SETTLED_CORES` for two
    /// samples in a row (a re-sync's tail: freeing the previous index), at
    /// most one resync interval; the seconds it took.
    async fn settle(&self, herald: &mut Herald) -> anyhow::Result<f64> {
        let start = Instant::now();
        let mut tick = tokio::time::interval(SETTLE_SAMPLE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        let (mut last, mut last_at, mut quiet) = (herald.proc.cpu_seconds(), Instant::now(), 0);
        while quiet < 2 && start.elapsed() < self.resync_interval {
            tick.tick().await;
            herald.check_running()?;
            let (now, now_at) = (herald.proc.cpu_seconds(), Instant::now());
            let cores = (now - last) / now_at.duration_since(last_at).as_secs_f64();
            quiet = if cores < SETTLED_CORES { quiet + 1 } else { 0 };
            (last, last_at) = (now, now_at);
        }
        Ok(start.elapsed().as_secs_f64())
    }

    /// Produces `events` records to `topic`, round-robin over the routed
    /// types, and waits until the receiver has them all. It starts once
    /// Herald's CPU has settled (an audit's tail); full re-syncs completed
    /// meanwhile are reported.
    async fn deliver(&self, herald: &mut Herald, topic: &str) -> anyhow::Result<Delivery> {
        let n = self.events;
        let settle_s = self.settle(herald).await?;
        self.receiver.reset();
        let mut arrived = self.receiver.arrived.subscribe();
        let syncs_before = herald.metric(FULL_SYNCS).await;
        let broker = self.broker_pid.map(|pid| Proc { pid, ticks: self.ticks });
        let broker_before = broker.as_ref().map(Proc::cpu_seconds);
        let busy = MachineBusy::start();
        let cpu_before = herald.proc.cpu_seconds();
        let start = Instant::now();
        let mut pending = FuturesUnordered::new();
        for i in 0..n {
            let payload = record_body(&routed_type((i % ROUTED as u64) as usize), i);
            let key = i.to_string();
            let record = FutureRecord::to(topic).key(&key).payload(&payload);
            pending.push(self.producer.send_result(record).map_err(|(e, _)| e)?);
            if pending.len() >= PRODUCE_IN_FLIGHT {
                if let Some(Ok(Err((e, _)))) = pending.next().await {
                    bail!("producing: {e}");
                }
            }
        }
        while let Some(result) = pending.next().await {
            if let Ok(Err((e, _))) = result {
                bail!("producing: {e}");
            }
        }
        self.producer.flush(Timeout::After(Duration::from_secs(60)))?;
        let all = matches!(
            tokio::time::timeout(DELIVERY_TIMEOUT, arrived.wait_for(|&c| c >= n)).await,
            Ok(Ok(_))
        );
        let wall_s = start.elapsed().as_secs_f64();
        let cpu = herald.proc.cpu_seconds() - cpu_before;
        let machine_busy_pct = busy.pct();
        let broker_cores = broker
            .zip(broker_before)
            .map(|(b, before)| (b.cpu_seconds() - before) / wall_s);
        herald.check_running()?;
        let syncs_after = herald.metric(FULL_SYNCS).await;
        ensure!(
            all,
            "only {} of {n} deliveries arrived within {DELIVERY_TIMEOUT:?}",
            *arrived.borrow()
        );
        // Each event reaches exactly one webhook: anything else means the
        // figures count something other than one delivery per event.
        let unexpected = self.receiver.unexpected.load(Ordering::SeqCst);
        ensure!(unexpected == 0, "{unexpected} requests to an unexpected path");
        for (k, count) in self.receiver.per_webhook.iter().enumerate() {
            let want = n / ROUTED as u64 + u64::from((k as u64) < n % ROUTED as u64);
            let got = count.load(Ordering::SeqCst);
            ensure!(got == want, "routed webhook {k} received {got} deliveries, not {want}");
        }
        Ok(Delivery {
            settle_s,
            events: n,
            wall_s,
            deliveries_per_s: n as f64 / wall_s,
            cpu_s_per_1000: cpu / n as f64 * 1000.0,
            herald_cores: cpu / wall_s,
            broker_cores,
            machine_busy_pct,
            full_resyncs: syncs_before.zip(syncs_after).map(|(b, a)| a - b),
        })
    }
}

/// Refuses a Redis URL that does not name a database other than 0: the
/// harness flushes it, and 0 is where Herald keeps webhooks by default.
fn check_owned_database(redis_url: &str) -> anyhow::Result<()> {
    let url = url::Url::parse(redis_url).with_context(|| format!("--redis {redis_url}"))?;
    let db = url.path().trim_start_matches('/');
    ensure!(
        !db.is_empty() && db.parse::<u32>().is_ok_and(|db| db != 0),
        "--redis {redis_url}: name a database other than 0 for the harness to own and flush, \
         e.g. redis://127.0.0.1:6379/14"
    );
    Ok(())
}

/// Clock ticks per second, the unit of /proc/PID/stat's CPU times.
fn clock_ticks() -> anyhow::Result<f64> {
    let out = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .context("getconf CLK_TCK")?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("getconf CLK_TCK printed no number")
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The printed table: one row per size, then the large size against the baseline.
fn print_table(sizes: &[SizeFigures], header: &str) {
    let mut table = Table::new();
    table.load_preset(comfy_table::presets::ASCII_MARKDOWN);
    table.set_header(vec![
        "webhooks",
        "loaded s",
        "ready s",
        "RSS ready MB",
        "steady RSS MB",
        "peak RSS MB (x ready)",
        "idle cores",
        "create ms med/max",
        "delete ms med/max",
        "deliveries/s (median)",
        "CPU s/1k deliveries (median)",
    ]);
    for s in sizes {
        table.add_row(vec![
            s.webhooks.to_string(),
            format!("{:.2}", s.loaded_s),
            format!("{:.2}", s.ready_s),
            format!("{:.1}", s.rss_ready_mb),
            format!("{:.1}", s.idle.steady_rss_mb),
            format!("{:.1} (x{:.2})", s.idle.peak_rss_mb, s.idle.peak_to_ready),
            format!("{:.3}", s.idle.cores),
            format!("{:.1}/{:.1}", s.create_ms.median, s.create_ms.max),
            format!("{:.1}/{:.1}", s.delete_ms.median, s.delete_ms.max),
            format!("{:.0}", s.deliveries_per_s().median),
            format!("{:.3}", s.cpu_s_per_1000().median),
        ]);
    }
    for column in table.column_iter_mut() {
        column.set_cell_alignment(CellAlignment::Right);
    }
    println!("\n{header}\n{table}");
    for s in sizes {
        let count = |n: Option<f64>| n.map_or("-".to_owned(), |n| format!("{n:.0}"));
        println!(
            "{:>9} webhooks  Redis: +{:.1} MB ({:.0} B per webhook), written in {:.1} s\n\
             {:>20}load: peak RSS {:.1} MB, index loaded {:.2} s after spawn, machine {:.0}% busy\n\
             {:>20}tenant sets filled {:.2} s after ready\n\
             {:>20}idle: {} full re-syncs in {:.0} s, machine {:.0}% busy\n\
             {:>20}stopped {:.2} s after SIGTERM",
            s.webhooks,
            s.redis.used_memory_after_mb - s.redis.used_memory_before_mb,
            s.redis.bytes_per_webhook,
            s.redis.write_s,
            "",
            s.hwm_ready_mb,
            s.loaded_s,
            s.load_machine_busy_pct,
            "",
            s.fill_s,
            "",
            count(s.idle.full_resyncs),
            s.idle.window_s,
            s.idle.machine_busy_pct,
            "",
            s.stop_s,
        );
        for (round, d) in s.delivery.iter().enumerate() {
            let broker = d
                .broker_cores
                .map_or(String::new(), |c| format!(", broker {c:.2} cores"));
            println!(
                "{:>20}delivery round {}: {:.0}/s, {:.3} CPU s/1k, {:.2} s (settled {:.2} s), Herald {:.2} cores{broker}, \
                 machine {:.0}% busy, {} full re-syncs during it",
                "",
                round + 1,
                d.deliveries_per_s,
                d.cpu_s_per_1000,
                d.wall_s,
                d.settle_s,
                d.herald_cores,
                d.machine_busy_pct,
                count(d.full_resyncs),
            );
        }
    }
}

/// The large size against the baseline, round by round (each round's two
/// runs back to back, so both saw the same machine): throughput, and CPU
/// per delivery.
fn ratios(baseline: &SizeFigures, large: &SizeFigures) -> (Spread, Spread) {
    let rounds = baseline.delivery.iter().zip(&large.delivery);
    let throughput = rounds
        .clone()
        .map(|(b, l)| l.deliveries_per_s / b.deliveries_per_s)
        .collect();
    let cpu = rounds.map(|(b, l)| l.cpu_s_per_1000 / b.cpu_s_per_1000).collect();
    (Spread::of(throughput), Spread::of(cpu))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut brokers = "127.0.0.1:39392".to_owned();
    let mut herald = PathBuf::from("target/release/herald");
    let (mut webhooks, mut baseline, mut events, mut rounds) = (1_000_000u64, 10u64, 20_000u64, 5u32);
    let mut resync = "30s".to_owned();
    let mut redis_url = "redis://127.0.0.1:6379/14".to_owned();
    let mut json_out = PathBuf::from("target/capacity/results.json");
    let mut work_dir = PathBuf::from("target/capacity");
    let (mut engine, mut commit, mut broker_pid) = ("unknown".to_owned(), None, None);
    let mut fetch_wait_ms = 10u64;
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--brokers" => brokers = value()?,
            "--herald" => herald = PathBuf::from(value()?),
            "--webhooks" => webhooks = value()?.parse()?,
            "--baseline" => baseline = value()?.parse()?,
            "--resync-interval" => resync = value()?,
            "--events" => events = value()?.parse()?,
            "--rounds" => rounds = value()?.parse()?,
            "--fetch-wait-ms" => fetch_wait_ms = value()?.parse()?,
            "--redis" => redis_url = value()?,
            "--json" => json_out = PathBuf::from(value()?),
            "--work-dir" => work_dir = PathBuf::from(value()?),
            "--engine" => engine = value()?,
            "--commit" => commit = Some(value()?),
            "--broker-pid" => broker_pid = Some(value()?.parse()?),
            other => bail!("unknown argument {other}"),
        }
    }
    check_owned_database(&redis_url)?;
    let resync_interval = humantime::parse_duration(&resync).with_context(|| format!("--resync-interval {resync}"))?;
    ensure!(events > 0, "--events must be at least 1");
    ensure!(rounds > 0, "--rounds must be at least 1");
    ensure!(baseline != webhooks, "--baseline and --webhooks must differ");
    std::fs::create_dir_all(&work_dir)?;
    if let Some(dir) = json_out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }

    let receiver = Receiver::new();
    let app = axum::Router::new().fallback(receive).with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let receiver_addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "2")
        .create()?;
    let harness = Harness {
        brokers,
        herald,
        redis_url,
        resync,
        resync_interval,
        events,
        fetch_wait_ms,
        work_dir,
        receiver,
        receiver_addr,
        producer,
        http: reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(5))
            .build()?,
        run_id: format!("{:08x}", rand::random::<u32>()),
        ticks: clock_ticks()?,
        broker_pid,
    };

    let mut sizes = Vec::new();
    let mut heralds = Vec::new();
    let outcome = async {
        harness.store(Keys::of_size(0)).await?.flush().await?;
        eprintln!("flushed {}", harness.redis_url);
        for n in [baseline, webhooks] {
            eprintln!("{n} webhooks...");
            let (figures, herald, name) = harness
                .measure(n)
                .await
                .with_context(|| format!("measuring {n} webhooks"))?;
            sizes.push(figures);
            heralds.push((herald, name));
        }
        // Both Heralds run; the sizes take turns, one delivering while the
        // other is idle, so each round compares them on the same machine.
        for round in 1..=rounds {
            for (figures, (herald, name)) in sizes.iter_mut().zip(&mut heralds) {
                eprintln!(
                    "round {round} of {rounds}: {} webhooks, routing and delivering {} events...",
                    figures.webhooks, harness.events
                );
                let delivery = harness
                    .deliver(herald, name)
                    .await
                    .with_context(|| format!("delivering with {} webhooks", figures.webhooks))?;
                figures.delivery.push(delivery);
            }
        }
        for (figures, (herald, _)) in sizes.iter_mut().zip(heralds.drain(..)) {
            figures.stop_s = herald.stop().await?;
        }
        anyhow::Ok(())
    }
    .await;
    drop(heralds);
    // The database is the harness's: leave it empty, whatever happened.
    let flushed = match harness.store(Keys::of_size(0)).await {
        Ok(mut store) => store.flush().await,
        Err(e) => Err(e),
    };
    match &flushed {
        Ok(()) => eprintln!("flushed {}", harness.redis_url),
        Err(e) => eprintln!("could not flush {}: {e:#}", harness.redis_url),
    }
    outcome?;
    flushed?;

    let header = format!(
        "Herald capacity: {webhooks} webhooks against {baseline} ({TENANTS} tenants, {EVENT_TYPES} event types, \
         1 in {TOUR_EVERY} also tour.*); resync {}; {events} events of 1 KB to {ROUTED} routed webhooks; \
         {} cores; broker: {engine}; fetch.wait.max.ms {fetch_wait_ms}, session.timeout.ms {SESSION_TIMEOUT_MS}",
        harness.resync,
        num_cpus()
    );
    print_table(&sizes, &header);
    let (throughput, cpu) = ratios(&sizes[0], &sizes[1]);
    let list = |s: &Spread| {
        s.samples
            .iter()
            .map(|r| format!("x{r:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!(
        "{webhooks} webhooks against {baseline}, median of {rounds} rounds: throughput x{:.2} ({}), \
         CPU per delivery x{:.2} ({})",
        throughput.median,
        list(&throughput),
        cpu.median,
        list(&cpu),
    );
    let result = json!({
        "commit": commit,
        "engine": engine,
        "cores": num_cpus(),
        "fetch_wait_max_ms": fetch_wait_ms,
        "session_timeout_ms": SESSION_TIMEOUT_MS,
        "resync_interval": harness.resync,
        "mix": {
            "tenants": TENANTS,
            "event_types": EVENT_TYPES,
            "tour_every": TOUR_EVERY,
            "routed_webhooks": ROUTED,
            "record_bytes": 1024,
            "changes": CHANGES,
        },
        "baseline": &sizes[0],
        "large": &sizes[1],
        "rounds": rounds,
        "large_against_baseline": {"throughput": throughput, "cpu_per_delivery": cpu},
    });
    write_json(&json_out, &result)?;
    Ok(())
}

fn write_json(path: &Path, value: &serde_json::Value) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)?)
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

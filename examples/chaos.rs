//! The chaos suite (run by `scripts/chaos`): a stream of events over three
//! topics of four partitions each, on a three-node Apache Kafka cluster,
//! delivered by three Herald replicas in one group to receivers on
//! 127.0.0.1, while faults drawn from a seed (printed, so a run can be
//! replayed) are injected, one at a time and overlapping. Then it checks
//! what arrived and prints figures; it exits 1 when an event is lost, a
//! duplicate is not explained by what was in flight, a retry came early,
//! the lag did not come back or `limited` received more in a second than
//! its bound.
//!
//!     chaos --nodes .local/chaos.nodes --kafka-libs DIR --herald target/release/herald
//!           [--events 100000] [--rate 200] [--seed N] [--short]
//!           [--redis-port 6390] [--work-dir DIR]
//!
//! `--short` runs 6000 events at 50/s with a few faults (about five minutes).
//!
//! Webhooks, each subscribed to every event: `ok` (204), `slow` (204 after
//! 50 ms), `flaky` (503 to every first attempt, so every event goes through
//! the first retry tier) and `odd`, a raw TCP receiver that answers 204
//! except while a fault makes it accept and never answer, trickle its
//! response a byte every half second, reset the connection, or answer 200
//! with a 50 MB body; `limited` (204), held to a rate limit of 1.5 times the
//! events' rate. Another, `late` (204), is added while Redis is frozen.
//!
//! Faults: a replica killed with `kill -9` and restarted 20 s later (ten
//! times); two replicas stopped and started (3 -> 1 -> 3 -> 1 -> 3, 30 s
//! each); the leader of a source partition killed and restarted; the active
//! KRaft controller killed and restarted; a node frozen with SIGSTOP for 30 s;
//! the whole cluster killed and restarted 15 s later; the suite's own
//! redis-server killed and restarted (its append-only file kept, as an
//! operator's would be); Redis frozen with SIGSTOP for 20 s while the suite,
//! as another writer, adds the webhook `late`; Redis flushed and the webhooks
//! written again 15 s later; a 5xx storm on `ok` and `slow` (half the
//! webhooks) for 60 s; `odd` hanging, trickling, resetting and answering a
//! 50 MB body for 30 s each. Faults on the Kafka nodes take turns (one node
//! down at a time, as min.insync.replicas 2 of 3 allows), and so do faults on
//! Redis; the others overlap freely.
//!
//! Checks: every event produced reached every webhook with a 2xx at least
//! once, or was dead-lettered (the reason printed); duplicates, whether
//! each kept its first `webhook-id`, and that each is explained by a record
//! of its event in flight (at or past the committed offset, sampled every
//! second) when a fault that may replay began; no retry arrived before its tier's
//! delay had passed since the attempt before it was sent (its
//! `webhook-timestamp`); `late` received every event produced from 15 s after
//! it was written; every request is written to `arrivals.csv`; the source partitions' lag (the group's
//! committed offsets against the high watermarks) back to 0, and how long
//! after the last fault healed; each replica slot's peak RSS (VmHWM, over
//! its restarts); deliveries/s while a fault was active and while none was.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use parking_lot::Mutex;
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[path = "common/fleet.rs"]
mod fleet;
use fleet::Replica;

/// Source topics, each of [`PARTITIONS`] partitions.
const TOPICS: [&str; 3] = ["orders", "users", "billing"];
const PARTITIONS: i32 = 4;

/// The webhooks, each named after how its receiver answers.
const WEBHOOKS: [&str; 5] = ["ok", "slow", "flaky", "odd", LIMITED];

/// The webhook held to a rate limit ([`limited_rate`]).
const LIMITED: &str = "limited";

/// The webhooks a 5xx storm fails: half of them.
const STORMED: [&str; 2] = ["ok", "slow"];

/// The webhooks whose retries are checked for coming early: all of them. A
/// delivery that finds no request slot (its endpoint's in-flight limit full
/// while `odd` hangs) is not an attempt: it waits in its tier with its
/// attempt count unchanged, so every attempt a retry follows was one its
/// receiver read.
const JUDGED: [&str; 5] = WEBHOOKS;

/// The webhook added while Redis is frozen: every event produced from
/// [`LATE_SETTLE`] after the write went through must reach it.
const LATE: &str = "late";

/// How long after its write the added webhook must be in every replica's
/// index: past `subscriptions.resync_interval` (10 s), which heals a missed
/// announcement.
const LATE_SETTLE: Duration = Duration::from_secs(15);

/// How long Redis stays flushed before the suite writes the webhooks again:
/// past `subscriptions.resync_interval`, so every replica reads the change
/// log in the gap, finds it gone and reads an empty Redis.
const FLUSH_GAP: Duration = Duration::from_secs(15);

/// The body `odd` answers with while it sends a large one.
const BIG_BODY: u64 = 50 * 1024 * 1024;

/// Retry tiers: a delivery failing through a 60 s storm succeeds on its
/// fourth attempt (at +2, +32, +92 s).
const TIERS: [u64; 4] = [2, 30, 60, 120];

/// Herald's whole-request deadline here: a receiver that never answers
/// fails a delivery after it.
const REQUEST_TIMEOUT_S: u64 = 5;

/// A replica killed with kill -9 stays down this long: past its session
/// timeout (10 s), so the crash and the return are two rebalances.
const REPLICA_DOWN: Duration = Duration::from_secs(20);

/// How long after a fault healed the records it left in flight may still be
/// read again: a restarted replica joins the group and takes partitions back
/// from the others (a rebalance) within it.
const REPLAY_SLACK: Duration = Duration::from_secs(60);

/// How long after the last fault healed the lag must be back to 0.
const LAG_BOUND: Duration = Duration::from_secs(300);

/// The rate of [`LIMITED`]: half again the events' rate, so that its
/// backlog after a fault drains, with a burst of a quarter of a second's.
fn limited_rate(events_per_second: u64) -> herald::webhook::RateLimit {
    let per_second = events_per_second as f64 * 1.5;
    herald::webhook::RateLimit {
        per_second,
        burst: Some((per_second / 4.0).ceil() as u32),
    }
}

/// One request a receiver answered (or failed on purpose).
#[derive(Clone)]
struct Arrival {
    seq: u64,
    attempt: u32,
    webhook_id: String,
    /// When the receiver read it.
    at: Instant,
    /// The same, in milliseconds since the epoch.
    wall_ms: u64,
    /// Its `webhook-timestamp`: when Herald sent it, in seconds.
    sent_s: u64,
    ok: bool,
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `t` in milliseconds since the epoch.
fn wall_ms(t: Instant) -> u64 {
    let now = Instant::now();
    if t <= now {
        now_ms().saturating_sub(now.duration_since(t).as_millis() as u64)
    } else {
        now_ms() + t.duration_since(now).as_millis() as u64
    }
}

/// How `odd` answers.
const NORMAL: u8 = 0;
const HANG: u8 = 1;
const TRICKLE: u8 = 2;
const RESET: u8 = 3;
const BIG: u8 = 4;

#[derive(Clone, Default)]
struct Receivers {
    arrivals: Arc<Mutex<HashMap<String, Vec<Arrival>>>>,
    storm: Arc<AtomicBool>,
    odd: Arc<AtomicU8>,
    /// Of the large bodies `odd` began, the most bytes written before
    /// Herald closed the connection, and how many were written whole.
    big_most: Arc<AtomicU64>,
    big_whole: Arc<AtomicU64>,
    /// When this process's runtime was held up ([`watch_stalls`]): the end
    /// of each stall and how long it lasted. Requests that reached a
    /// receiver meanwhile are stamped at its end.
    stalls: Arc<Mutex<Vec<(Instant, Duration)>>>,
}

impl Receivers {
    fn record(&self, webhook: &str, arrival: Arrival) {
        self.arrivals
            .lock()
            .entry(webhook.to_owned())
            .or_default()
            .push(arrival);
    }

    /// The events `webhook` answered 2xx to.
    fn succeeded(&self, webhook: &str) -> HashSet<u64> {
        self.arrivals
            .lock()
            .get(webhook)
            .map(|a| a.iter().filter(|a| a.ok).map(|a| a.seq).collect())
            .unwrap_or_default()
    }
}

fn seq_of(body: &[u8]) -> u64 {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["seq"].as_u64())
        .unwrap_or(u64::MAX)
}

async fn receive(
    State(r): State<Receivers>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    let attempt = header("herald-attempt").parse().unwrap_or(1);
    let path = uri.path().trim_start_matches('/').to_owned();
    if path == "slow" {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stormed = STORMED.contains(&path.as_str()) && r.storm.load(Ordering::Relaxed);
    let ok = !stormed && (path != "flaky" || attempt > 1);
    let arrival = Arrival {
        seq: seq_of(&body),
        attempt,
        webhook_id: header("webhook-id").to_owned(),
        at: Instant::now(),
        wall_ms: now_ms(),
        sent_s: header("webhook-timestamp").parse().unwrap_or(0),
        ok,
    };
    r.record(&path, arrival);
    if ok {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Notes every stall of the receivers' runtime longer than 20 ms: a task
/// that sleeps 10 ms at a time and finds itself woken late. A loaded
/// machine holds this process up now and then, and the requests that
/// reached the receivers over the stall are stamped together at its end.
async fn watch_stalls(stalls: Arc<Mutex<Vec<(Instant, Duration)>>>) {
    const TICK: Duration = Duration::from_millis(10);
    loop {
        let before = Instant::now();
        tokio::time::sleep(TICK).await;
        let late = before.elapsed().saturating_sub(TICK);
        if late > Duration::from_millis(20) {
            stalls.lock().push((Instant::now(), late));
        }
    }
}

/// `odd`'s receiver: HTTP/1.1 by hand, so that it can misbehave below HTTP.
async fn odd_server(listener: tokio::net::TcpListener, r: Receivers) {
    loop {
        if let Ok((socket, _)) = listener.accept().await {
            let r = r.clone();
            tokio::spawn(async move {
                let _ = odd_connection(socket, r).await;
            });
        }
    }
}

async fn odd_connection(mut socket: tokio::net::TcpStream, r: Receivers) -> std::io::Result<()> {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = socket.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let header = |name: &str| {
            head.lines()
                .filter_map(|l| l.split_once(':'))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim().to_owned())
                .unwrap_or_default()
        };
        let length: usize = header("content-length").parse().unwrap_or(0);
        while buf.len() < head_end + length {
            let n = socket.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let mode = r.odd.load(Ordering::Relaxed);
        let arrival = Arrival {
            seq: seq_of(&buf[head_end..head_end + length]),
            attempt: header("herald-attempt").parse().unwrap_or(1),
            webhook_id: header("webhook-id"),
            at: Instant::now(),
            wall_ms: now_ms(),
            sent_s: header("webhook-timestamp").parse().unwrap_or(0),
            ok: mode == NORMAL || mode == BIG,
        };
        buf.drain(..head_end + length);
        r.record("odd", arrival);
        match mode {
            HANG => {
                tokio::time::sleep(Duration::from_secs(120)).await;
                return Ok(());
            }
            TRICKLE => {
                for b in b"HTTP/1.1 204 No Content\r\n\r\n" {
                    socket.write_all(&[*b]).await?;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            BIG => {
                socket
                    .write_all(format!("HTTP/1.1 200 OK\r\ncontent-length: {BIG_BODY}\r\n\r\n").as_bytes())
                    .await?;
                let block = [b'x'; 64 * 1024];
                let mut written = 0u64;
                while written < BIG_BODY {
                    if socket.write_all(&block).await.is_err() {
                        r.big_most.fetch_max(written, Ordering::Relaxed);
                        return Ok(());
                    }
                    written += block.len() as u64;
                }
                r.big_most.fetch_max(written, Ordering::Relaxed);
                r.big_whole.fetch_add(1, Ordering::Relaxed);
            }
            RESET => {
                // SO_LINGER 0: closing sends a RST.
                #[allow(deprecated)]
                socket.set_linger(Some(Duration::ZERO))?;
                return Ok(());
            }
            _ => socket.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await?,
        }
    }
}

struct Args {
    nodes: PathBuf,
    kafka_libs: String,
    herald: String,
    redis_server: String,
    redis_port: u16,
    work_dir: PathBuf,
    events: u64,
    rate: u64,
    seed: u64,
    short: bool,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        nodes: ".local/chaos.nodes".into(),
        kafka_libs: String::new(),
        herald: "target/release/herald".into(),
        redis_server: "redis-server".into(),
        redis_port: 6390,
        work_dir: std::env::temp_dir().join("herald-chaos"),
        events: 100_000,
        rate: 200,
        seed: rand::random::<u32>() as u64,
        short: false,
    };
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    if let Some(i) = argv.iter().position(|a| a == "--short") {
        argv.remove(i);
        a.short = true;
        a.events = 6_000;
        a.rate = 50;
    }
    for pair in argv.chunks(2) {
        let value = pair.get(1).cloned().unwrap_or_default();
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| anyhow::anyhow!("{} needs a number, not {value:?}", pair[0]))
        };
        match pair[0].as_str() {
            "--nodes" => a.nodes = value.clone().into(),
            "--kafka-libs" => a.kafka_libs = value.clone(),
            "--herald" => a.herald = value.clone(),
            "--redis-server" => a.redis_server = value.clone(),
            "--redis-port" => a.redis_port = number()? as u16,
            "--work-dir" => a.work_dir = value.clone().into(),
            "--events" => a.events = number()?,
            "--rate" => a.rate = number()?.max(1),
            "--seed" => a.seed = number()?,
            other => anyhow::bail!("unknown argument {other} (see the top of examples/chaos.rs)"),
        }
    }
    Ok(a)
}

/// One Kafka node of the cluster, from the nodes file `start_kafka_cluster`
/// writes (`ID HOST:PORT DIR` a line).
struct Node {
    id: i32,
    address: String,
    dir: PathBuf,
}

impl Node {
    fn pid(&self) -> Option<u32> {
        let name = self.dir.file_name()?.to_string_lossy().into_owned();
        std::fs::read_to_string(self.dir.with_file_name(format!("{name}.pid")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn signal(&self, sig: &str) {
        if let Some(pid) = self.pid() {
            fleet::signal_pid(pid, sig);
        }
    }

    fn listening(&self) -> bool {
        std::net::TcpStream::connect(&self.address).is_ok()
    }

    async fn kill(&self) {
        self.signal("KILL");
        for _ in 0..300 {
            if !self.listening() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts it again on its data, detached, and waits until it has started.
    async fn restart(&self) -> anyhow::Result<()> {
        let log = self.dir.join("server.log");
        std::fs::write(&log, "")?;
        let status = std::process::Command::new("setsid")
            .arg("-f")
            .arg(self.dir.join("run"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()?;
        anyhow::ensure!(status.success(), "node {} not launched", self.id);
        let deadline = Instant::now() + Duration::from_secs(180);
        while Instant::now() < deadline {
            if std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("Kafka Server started")
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        anyhow::bail!("node {} did not start within 180 s (see {})", self.id, log.display())
    }
}

fn read_nodes(file: &Path) -> anyhow::Result<Vec<Node>> {
    let text = std::fs::read_to_string(file).map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let nodes: Vec<Node> = text
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            Some(Node {
                id: f.first()?.parse().ok()?,
                address: (*f.get(1)?).to_owned(),
                dir: PathBuf::from(f.get(2)?),
            })
        })
        .collect();
    anyhow::ensure!(nodes.len() == 3, "{}: three nodes expected", file.display());
    Ok(nodes)
}

/// A fault as it happened: what, when it began and when it healed.
struct Happened {
    fault: Fault,
    what: String,
    began: Instant,
    healed: Instant,
}

/// A replica slot: the process now running in it, and the highest VmHWM of
/// the processes that ran in it.
#[derive(Default)]
struct Slot {
    replica: Option<Replica>,
    busy: bool,
    peak_kb: u64,
}

impl Slot {
    fn sample(&mut self) {
        if let Some(pid) = self.replica.as_ref().and_then(|r| r.child.id()) {
            self.peak_kb = self.peak_kb.max(fleet::status_kb(pid, "VmHWM:"));
        }
    }
}

/// What the faults share.
struct Chaos {
    id: String,
    args: Args,
    brokers: String,
    nodes: Vec<Node>,
    receivers: Receivers,
    config: PathBuf,
    slots: tokio::sync::Mutex<Vec<Slot>>,
    redis: tokio::sync::Mutex<Option<tokio::process::Child>>,
    /// Faults on Kafka nodes hold it: one node down at a time.
    cluster: tokio::sync::Mutex<()>,
    /// Faults on `odd` hold it.
    odd: tokio::sync::Mutex<()>,
    /// Faults on Redis hold it: one at a time.
    redis_turn: tokio::sync::Mutex<()>,
    /// Set while Redis is flushed and not yet written again: replicas are
    /// not started then (a replica starting on an empty Redis has no
    /// webhook to keep; docs/reliability.md).
    flushed: AtomicBool,
    /// The webhook documents as the suite wrote them (it writes them again
    /// after a flush), with their `created_at`.
    hooks: Mutex<Vec<herald::webhook::Webhook>>,
    /// The HTTP receivers' address.
    http: std::net::SocketAddr,
    /// Events handed to the producer so far.
    produced: AtomicU64,
    /// The first event `late` must receive, once it was added.
    late_from: Mutex<Option<u64>>,
    /// Herald's groups' committed offsets, sampled ([`sample_committed`]).
    committed: Mutex<Vec<Committed>>,
    began: Instant,
    happened: Mutex<Vec<Happened>>,
}

impl Chaos {
    fn topic(&self, name: &str) -> String {
        format!("{}.{name}", self.id)
    }

    fn say(&self, what: &str) {
        println!("{:>6.1}s {what}", self.began.elapsed().as_secs_f64());
    }

    fn done(&self, fault: Fault, what: String, began: Instant) {
        self.say(&format!("healed: {what}"));
        self.happened.lock().push(Happened {
            fault,
            what,
            began,
            healed: Instant::now(),
        });
    }

    fn config(&self) -> String {
        let topics: Vec<String> = TOPICS.iter().map(|t| format!("\"{}\"", self.topic(t))).collect();
        let tiers: Vec<String> = TIERS
            .iter()
            .map(|s| {
                format!(
                    "{{ topic = \"{}\", delay = \"{s}s\" }}",
                    self.topic(&format!("retry.{s}s"))
                )
            })
            .collect();
        format!(
            r#"
[kafka]
brokers = "{brokers}"
group_id = "{id}"
topics = [{topics}]
statistics_interval = "1s"
progress_check_interval = "5s"
[kafka.consumer_properties]
"session.timeout.ms" = "10000"
"heartbeat.interval.ms" = "1000"
{shared}request_timeout = "{timeout}s"
[retry]
jitter = 0.0
redrive_topic = "{redrive}"
tiers = [{tiers}]
[shutdown]
drain_timeout = "10s"
"#,
            brokers = self.brokers,
            id = self.id,
            topics = topics.join(", "),
            shared = fleet::shared_config(
                &self.id,
                &format!("redis://127.0.0.1:{}/0", self.args.redis_port),
                &self.topic("dlq"),
                &self.topic("system")
            ),
            timeout = REQUEST_TIMEOUT_S,
            redrive = self.topic("redrive"),
            tiers = tiers.join(", "),
        )
    }

    /// A connection to the suite's Redis, as another writer of the contract.
    async fn store(&self) -> anyhow::Result<herald::subscriptions::store::SubscriptionStore> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/0", self.args.redis_port))?;
        Ok(herald::subscriptions::store::SubscriptionStore::connect(&client, &format!("{}:", self.id)).await?)
    }

    /// Writes a webhook document as the contract says (document, id set,
    /// change log, announcement), again until Redis takes it.
    async fn write_hook(&self, hook: &herald::webhook::Webhook) {
        loop {
            let written = match self.store().await {
                Ok(store) => store.put(hook).await.map_err(anyhow::Error::from),
                Err(e) => Err(e),
            };
            match written {
                Ok(()) => return,
                Err(e) => {
                    self.say(&format!("writing webhook {}: {e:#}; again in 1 s", hook.id));
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Waits while Redis is flushed and not yet written again.
    async fn wait_unflushed(&self) {
        while self.flushed.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn start_replica(&self, n: usize) -> Replica {
        let log = self.args.work_dir.join(format!("replica-{n}.log"));
        fleet::start(&self.args.herald, &self.config, &log)
    }

    async fn start_redis(&self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.args.work_dir.join("redis.log"))?;
        let child = tokio::process::Command::new(&self.args.redis_server)
            .args(["--bind", "127.0.0.1", "--port", &self.args.redis_port.to_string()])
            .args(["--save", "", "--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(&self.args.work_dir)
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| anyhow::anyhow!("{} does not start: {e}", self.args.redis_server))?;
        *self.redis.lock().await = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if redis_ping(self.args.redis_port) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!("redis-server on port {} did not answer", self.args.redis_port)
    }
}

fn redis_ping(port: u16) -> bool {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let mut buf = [0u8; 64];
    s.write_all(b"PING\r\n").is_ok() && s.read(&mut buf).is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    KillReplica,
    Scale,
    KillLeader,
    KillController,
    FreezeNode,
    RestartCluster,
    RestartRedis,
    FreezeRedis,
    FlushRedis,
    Storm,
    Hang,
    Trickle,
    Reset,
    BigBody,
}

impl Fault {
    /// Whether Herald's groups may read records again after it: a replica
    /// gone or a rebalance (its records since the last commit go to another
    /// member), or a broker down or frozen (commits may not reach the
    /// coordinator; a member may be timed out of the group).
    fn replays(self) -> bool {
        matches!(
            self,
            Fault::KillReplica
                | Fault::Scale
                | Fault::KillLeader
                | Fault::KillController
                | Fault::FreezeNode
                | Fault::RestartCluster
        )
    }
}

/// The faults of a run and when each begins (seconds into production).
fn schedule(rng: &mut rand::rngs::StdRng, short: bool, seconds: f64) -> Vec<(f64, Fault)> {
    let mut plan = Vec::new();
    let at = |rng: &mut rand::rngs::StdRng, from: f64, to: f64| rng.random_range(from * seconds..to * seconds);
    let kills = if short { 2 } else { 10 };
    for i in 0..kills {
        // Spread over the run, one a slice, at a random moment of it.
        let slice = 0.75 / kills as f64;
        plan.push((
            at(rng, 0.05 + slice * i as f64, 0.05 + slice * (i + 1) as f64),
            Fault::KillReplica,
        ));
    }
    let others: &[Fault] = if short {
        &[
            Fault::Storm,
            Fault::RestartRedis,
            Fault::FreezeRedis,
            Fault::FlushRedis,
            Fault::KillLeader,
            Fault::RestartCluster,
            Fault::Reset,
            Fault::BigBody,
        ]
    } else {
        &[
            Fault::Scale,
            Fault::KillLeader,
            Fault::KillController,
            Fault::FreezeNode,
            Fault::RestartCluster,
            Fault::RestartRedis,
            Fault::FreezeRedis,
            Fault::FlushRedis,
            Fault::Storm,
            Fault::Hang,
            Fault::Trickle,
            Fault::Reset,
            Fault::BigBody,
        ]
    };
    for f in others {
        // Redis frozen early enough that events are produced long after
        // the webhook it adds settled.
        let to = if matches!(f, Fault::FreezeRedis) { 0.4 } else { 0.7 };
        plan.push((at(rng, 0.1, to), *f));
    }
    plan.sort_by(|a, b| a.0.total_cmp(&b.0));
    plan
}

async fn inject(chaos: Arc<Chaos>, fault: Fault, seed: u64) -> anyhow::Result<()> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    match fault {
        Fault::KillReplica => kill_replica(&chaos, &mut rng).await,
        Fault::Scale => scale(&chaos).await,
        Fault::KillLeader => {
            let _turn = chaos.cluster.lock().await;
            let topic = chaos.topic(TOPICS[rng.random_range(0..TOPICS.len())]);
            let partition = rng.random_range(0..PARTITIONS);
            let leader = leader_of(&chaos.brokers, &topic, partition).await?;
            kill_node(&chaos, fault, leader, &format!("leader of {topic}/{partition}")).await
        }
        Fault::KillController => {
            let _turn = chaos.cluster.lock().await;
            let controller = active_controller(&chaos.brokers, &chaos.args.kafka_libs).await?;
            kill_node(&chaos, fault, controller, "active controller").await
        }
        Fault::FreezeNode => {
            let _turn = chaos.cluster.lock().await;
            let node = &chaos.nodes[rng.random_range(0..chaos.nodes.len())];
            let what = format!("node {} frozen (SIGSTOP) for 30 s", node.id);
            chaos.say(&what);
            let began = Instant::now();
            node.signal("STOP");
            tokio::time::sleep(Duration::from_secs(30)).await;
            node.signal("CONT");
            chaos.done(fault, what, began);
            wait_in_sync(&chaos.brokers).await;
            Ok(())
        }
        Fault::RestartCluster => {
            let _turn = chaos.cluster.lock().await;
            let what = "whole cluster (three nodes) killed (kill -9), restarted 15 s later".to_owned();
            chaos.say(&what);
            let began = Instant::now();
            futures::future::join_all(chaos.nodes.iter().map(Node::kill)).await;
            tokio::time::sleep(Duration::from_secs(15)).await;
            for r in futures::future::join_all(chaos.nodes.iter().map(Node::restart)).await {
                r?;
            }
            chaos.done(fault, what, began);
            wait_in_sync(&chaos.brokers).await;
            Ok(())
        }
        Fault::FreezeRedis => {
            let _turn = chaos.redis_turn.lock().await;
            let Some(pid) = chaos.redis.lock().await.as_ref().and_then(|c| c.id()) else {
                anyhow::bail!("no redis-server running");
            };
            let what = format!("redis-server frozen (SIGSTOP) for 20 s; webhook `{LATE}` added meanwhile");
            chaos.say(&what);
            let began = Instant::now();
            fleet::signal_pid(pid, "STOP");
            // Another writer adds a webhook while Redis is frozen: its write
            // waits for Redis.
            let late = herald::webhook::Webhook::new(LATE, LATE, &format!("http://{}/{LATE}", chaos.http), &["*"]);
            chaos.hooks.lock().push(late.clone());
            let writer = {
                let chaos = chaos.clone();
                tokio::spawn(async move { chaos.write_hook(&late).await })
            };
            tokio::time::sleep(Duration::from_secs(20)).await;
            fleet::signal_pid(pid, "CONT");
            writer.await?;
            chaos.say(&format!("webhook `{LATE}` written"));
            chaos.done(fault, what, began);
            tokio::time::sleep(LATE_SETTLE).await;
            let from = chaos.produced.load(Ordering::Relaxed);
            *chaos.late_from.lock() = Some(from);
            chaos.say(&format!("`{LATE}` must receive every event from {from} on"));
            Ok(())
        }
        Fault::FlushRedis => {
            // Not while a Kafka fault may stop consumption: events must be
            // routed during the gap for it to show anything.
            let _kafka = chaos.cluster.lock().await;
            let _turn = chaos.redis_turn.lock().await;
            let what = format!(
                "Redis flushed (FLUSHALL), the webhooks written again {} s later",
                FLUSH_GAP.as_secs()
            );
            chaos.say(&what);
            let began = Instant::now();
            chaos.flushed.store(true, Ordering::Relaxed);
            let client = redis::Client::open(format!("redis://127.0.0.1:{}/0", chaos.args.redis_port))?;
            let mut conn = client.get_multiplexed_async_connection().await?;
            let () = redis::cmd("FLUSHALL").query_async(&mut conn).await?;
            tokio::time::sleep(FLUSH_GAP).await;
            let hooks = chaos.hooks.lock().clone();
            for hook in &hooks {
                chaos.write_hook(hook).await;
            }
            chaos.flushed.store(false, Ordering::Relaxed);
            chaos.done(fault, what, began);
            Ok(())
        }
        Fault::RestartRedis => {
            let _turn = chaos.redis_turn.lock().await;
            let what = "redis-server killed (kill -9), restarted 5 s later".to_owned();
            chaos.say(&what);
            let began = Instant::now();
            if let Some(mut child) = chaos.redis.lock().await.take() {
                child.kill().await?;
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
            chaos.start_redis().await?;
            chaos.done(fault, what, began);
            Ok(())
        }
        Fault::Storm => {
            let what = format!("5xx storm on {STORMED:?} for 60 s");
            chaos.say(&what);
            let began = Instant::now();
            chaos.receivers.storm.store(true, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(60)).await;
            chaos.receivers.storm.store(false, Ordering::Relaxed);
            chaos.done(fault, what, began);
            Ok(())
        }
        Fault::Hang | Fault::Trickle | Fault::Reset | Fault::BigBody => {
            let (mode, how) = match fault {
                Fault::Hang => (HANG, "accepts and never answers"),
                Fault::Trickle => (TRICKLE, "trickles its response a byte every 500 ms"),
                Fault::BigBody => (BIG, "answers 200 with a 50 MB body"),
                _ => (RESET, "resets every connection"),
            };
            let _turn = chaos.odd.lock().await;
            let what = format!("odd {how}, for 30 s");
            chaos.say(&what);
            let began = Instant::now();
            chaos.receivers.odd.store(mode, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(30)).await;
            chaos.receivers.odd.store(NORMAL, Ordering::Relaxed);
            chaos.done(fault, what, began);
            Ok(())
        }
    }
}

async fn kill_replica(chaos: &Chaos, rng: &mut rand::rngs::StdRng) -> anyhow::Result<()> {
    // A running replica no other fault holds, while another runs (a
    // scale-down may stop that one a moment later: then none runs for a
    // while).
    let (n, mut victim) = loop {
        let mut slots = chaos.slots.lock().await;
        let running = slots.iter().filter(|s| s.replica.is_some()).count();
        let free: Vec<usize> = (0..slots.len())
            .filter(|i| slots[*i].replica.is_some() && !slots[*i].busy)
            .collect();
        if running >= 2 && !free.is_empty() {
            let n = free[rng.random_range(0..free.len())];
            slots[n].sample();
            slots[n].busy = true;
            break (n, slots[n].replica.take().expect("running"));
        }
        drop(slots);
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let what = format!(
        "replica {n} killed (kill -9), restarted {} s later",
        REPLICA_DOWN.as_secs()
    );
    chaos.say(&what);
    let began = Instant::now();
    fleet::signal(&victim, "KILL");
    let _ = victim.child.wait().await;
    tokio::time::sleep(REPLICA_DOWN).await;
    chaos.wait_unflushed().await;
    let mut slots = chaos.slots.lock().await;
    slots[n].replica = Some(chaos.start_replica(n));
    slots[n].busy = false;
    drop(slots);
    chaos.done(Fault::KillReplica, what, began);
    Ok(())
}

/// Stops (SIGTERM) the replica in slot `n`, waiting for it to exit.
async fn stop_replica(chaos: &Chaos, n: usize) {
    let replica = {
        let mut slots = chaos.slots.lock().await;
        slots[n].sample();
        slots[n].replica.take()
    };
    if let Some(mut r) = replica {
        fleet::signal(&r, "TERM");
        if tokio::time::timeout(Duration::from_secs(40), r.child.wait())
            .await
            .is_err()
        {
            chaos.say(&format!("replica {n} did not exit within 40 s of SIGTERM: killed"));
            let _ = r.child.kill().await;
        }
    }
}

async fn scale(chaos: &Chaos) -> anyhow::Result<()> {
    loop {
        let mut slots = chaos.slots.lock().await;
        if slots[1..].iter().all(|s| s.replica.is_some() && !s.busy) {
            slots[1].busy = true;
            slots[2].busy = true;
            break;
        }
        drop(slots);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let what = "scaled 3 -> 1 -> 3 -> 1 -> 3 (replicas 1 and 2 stopped and started, 30 s each)".to_owned();
    chaos.say(&what);
    let began = Instant::now();
    for round in 0..2 {
        chaos.say(&format!("scale 3 -> 1 ({})", round + 1));
        stop_replica(chaos, 1).await;
        stop_replica(chaos, 2).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
        chaos.say(&format!("scale 1 -> 3 ({})", round + 1));
        chaos.wait_unflushed().await;
        let mut slots = chaos.slots.lock().await;
        for n in [1, 2] {
            slots[n].replica = Some(chaos.start_replica(n));
        }
        drop(slots);
        tokio::time::sleep(Duration::from_secs(30)).await;
    }
    let mut slots = chaos.slots.lock().await;
    slots[1].busy = false;
    slots[2].busy = false;
    drop(slots);
    chaos.done(Fault::Scale, what, began);
    Ok(())
}

async fn kill_node(chaos: &Chaos, fault: Fault, id: i32, role: &str) -> anyhow::Result<()> {
    let node = chaos
        .nodes
        .iter()
        .find(|n| n.id == id)
        .ok_or_else(|| anyhow::anyhow!("no node {id} in the cluster"))?;
    let what = format!("node {id} ({role}) killed (kill -9), restarted 15 s later");
    chaos.say(&what);
    let began = Instant::now();
    node.kill().await;
    tokio::time::sleep(Duration::from_secs(15)).await;
    node.restart().await?;
    chaos.done(fault, what, began);
    wait_in_sync(&chaos.brokers).await;
    Ok(())
}

/// A group's committed offsets as one answer gave them, stamped with the
/// moment the answer came back: each is an offset committed by then.
struct Committed {
    at: Instant,
    offsets: Offsets,
}

/// Committed offsets per topic and partition.
type Offsets = HashMap<(String, i32), i64>;

/// Where a record is (topic, partition, offset), and when it was written
/// (ms since the epoch).
type Place = (String, i32, i64, u64);

/// The records each event was read from: its source record, and the retry
/// records Herald wrote for it per webhook id.
#[derive(Default)]
struct Records {
    source: HashMap<u64, Place>,
    produced_at: HashMap<u64, Instant>,
    retries: HashMap<(String, u64), Vec<Place>>,
}

impl Records {
    /// The records of `seq` at `webhook`.
    fn of(&self, webhook: &str, seq: u64) -> impl Iterator<Item = &Place> {
        self.source
            .get(&seq)
            .into_iter()
            .chain(self.retries.get(&(webhook.to_owned(), seq)).into_iter().flatten())
    }
}

impl Chaos {
    /// The retry topics (the tiers and the redrive topic), of three
    /// partitions each.
    fn retry_topics(&self) -> Vec<String> {
        TIERS
            .iter()
            .map(|s| self.topic(&format!("retry.{s}s")))
            .chain([self.topic("redrive")])
            .collect()
    }

    /// The offsets committed at `t` or before, as the last sample taken by
    /// then gave each (a partition no sample has is at 0): a record at or
    /// past its partition's may be read again.
    fn committed_at(&self, t: Instant) -> Offsets {
        let mut out = HashMap::new();
        for c in self.committed.lock().iter().filter(|c| c.at <= t) {
            out.extend(c.offsets.iter().map(|(k, v)| (k.clone(), *v)));
        }
        out
    }
}

/// Samples the committed offsets of Herald's two groups (the source
/// consumers' and the tier consumers') every second until aborted.
async fn sample_committed(chaos: Arc<Chaos>) -> anyhow::Result<()> {
    let groups = [
        (
            chaos.id.clone(),
            TOPICS.iter().map(|t| chaos.topic(t)).collect::<Vec<_>>(),
            PARTITIONS,
        ),
        (format!("{}.retry", chaos.id), chaos.retry_topics(), 3),
    ];
    let mut clients = Vec::new();
    for (group, topics, partitions) in groups {
        let client: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &chaos.brokers)
            .set("group.id", &group)
            .set("enable.auto.commit", "false")
            .create()?;
        let mut tpl = rdkafka::TopicPartitionList::new();
        for t in &topics {
            for p in 0..partitions {
                tpl.add_partition(t, p);
            }
        }
        clients.push((Arc::new(client), tpl));
    }
    loop {
        for (client, tpl) in &clients {
            let (client, tpl) = (client.clone(), tpl.clone());
            let answer =
                tokio::task::spawn_blocking(move || client.committed_offsets(tpl, Duration::from_secs(5))).await;
            if let Ok(Ok(list)) = answer {
                let offsets = list
                    .elements()
                    .into_iter()
                    .filter_map(|e| match e.offset() {
                        rdkafka::Offset::Offset(o) => Some(((e.topic().to_owned(), e.partition()), o)),
                        _ => None,
                    })
                    .collect();
                chaos.committed.lock().push(Committed {
                    at: Instant::now(),
                    offsets,
                });
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn metadata_client(brokers: &str) -> anyhow::Result<BaseConsumer> {
    Ok(ClientConfig::new().set("bootstrap.servers", brokers).create()?)
}

async fn leader_of(brokers: &str, topic: &str, partition: i32) -> anyhow::Result<i32> {
    let client = metadata_client(brokers)?;
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let metadata = client.fetch_metadata(Some(&topic), Duration::from_secs(10))?;
        metadata
            .topics()
            .first()
            .and_then(|t| t.partitions().iter().find(|p| p.id() == partition))
            .map(|p| p.leader())
            .ok_or_else(|| anyhow::anyhow!("no partition {topic}/{partition}"))
    })
    .await?
}

/// The active KRaft controller, as Kafka's `kafka-metadata-quorum` reports it.
async fn active_controller(brokers: &str, libs: &str) -> anyhow::Result<i32> {
    let out = tokio::process::Command::new("java")
        .arg("-cp")
        .arg(format!("{libs}/*"))
        .arg("org.apache.kafka.tools.MetadataQuorumCommand")
        .args(["--bootstrap-server", brokers, "describe", "--status"])
        .output()
        .await?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("LeaderId:"))
        .and_then(|id| id.trim().parse().ok())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no LeaderId from MetadataQuorumCommand: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// Waits (up to 180 s) until every partition has its three replicas in sync.
async fn wait_in_sync(brokers: &str) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline {
        let Ok(client) = metadata_client(brokers) else { return };
        let in_sync = tokio::task::spawn_blocking(move || {
            client.fetch_metadata(None, Duration::from_secs(5)).is_ok_and(|m| {
                m.brokers().len() == 3
                    && m.topics()
                        .iter()
                        .flat_map(|t| t.partitions())
                        .all(|p| p.isr().len() == 3 && p.leader() >= 0)
            })
        })
        .await
        .unwrap_or(false);
        if in_sync {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Waits until every node's metadata has every one of `topics` with a
/// leader for each partition (a replica started before exits on a missing
/// topic).
async fn wait_topics(brokers: &str, topics: Vec<String>) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    for address in brokers.split(',') {
        loop {
            let client = metadata_client(address)?;
            let topics = topics.clone();
            let ready = tokio::task::spawn_blocking(move || {
                client.fetch_metadata(None, Duration::from_secs(5)).is_ok_and(|m| {
                    topics.iter().all(|t| {
                        m.topics().iter().any(|mt| {
                            mt.name() == t
                                && mt.error().is_none()
                                && !mt.partitions().is_empty()
                                && mt.partitions().iter().all(|p| p.leader() >= 0)
                        })
                    })
                })
            })
            .await?;
            if ready {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "topics not in {address}'s metadata within 120 s"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    Ok(())
}

/// The group's lag on the source partitions: high watermark minus committed
/// offset, summed (None when the cluster does not answer).
fn source_lag(consumer: &BaseConsumer, topics: &[String]) -> Option<i64> {
    let mut tpl = rdkafka::TopicPartitionList::new();
    for t in topics {
        for p in 0..PARTITIONS {
            tpl.add_partition(t, p);
        }
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(5)).ok()?;
    let mut lag = 0;
    for e in committed.elements() {
        let (low, high) = consumer
            .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(5))
            .ok()?;
        let at = match e.offset() {
            rdkafka::Offset::Offset(o) => o,
            _ => low,
        };
        lag += (high - at).max(0);
    }
    Some(lag)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args()?;
    let nodes = read_nodes(&args.nodes)?;
    let brokers = nodes.iter().map(|n| n.address.as_str()).collect::<Vec<_>>().join(",");
    let _ = std::fs::remove_dir_all(&args.work_dir);
    std::fs::create_dir_all(&args.work_dir)?;

    let receivers = Receivers::default();
    tokio::spawn(watch_stalls(receivers.stalls.clone()));
    let app = axum::Router::new().fallback(receive).with_state(receivers.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let http = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    let odd_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let odd = odd_listener.local_addr()?;
    tokio::spawn(odd_server(odd_listener, receivers.clone()));

    let id = format!("chaos-{:08x}", rand::random::<u32>());
    let config = args.work_dir.join("herald.toml");
    let chaos = Arc::new(Chaos {
        id,
        brokers,
        nodes,
        receivers: receivers.clone(),
        config,
        slots: tokio::sync::Mutex::new((0..3).map(|_| Slot::default()).collect()),
        redis: tokio::sync::Mutex::new(None),
        cluster: tokio::sync::Mutex::new(()),
        odd: tokio::sync::Mutex::new(()),
        redis_turn: tokio::sync::Mutex::new(()),
        flushed: AtomicBool::new(false),
        hooks: Mutex::new(Vec::new()),
        http,
        produced: AtomicU64::new(0),
        late_from: Mutex::new(None),
        committed: Mutex::new(Vec::new()),
        began: Instant::now(),
        happened: Mutex::new(Vec::new()),
        args,
    });
    let seconds = chaos.args.events as f64 / chaos.args.rate as f64;
    println!(
        "chaos run {} seed {}: {} events at {}/s ({seconds:.0} s) over {} topics x {PARTITIONS} partitions, \
         webhooks {WEBHOOKS:?}; work dir {}",
        chaos.id,
        chaos.args.seed,
        chaos.args.events,
        chaos.args.rate,
        TOPICS.len(),
        chaos.args.work_dir.display()
    );
    println!(
        "replay: scripts/chaos --seed {} --events {} --rate {}{}",
        chaos.args.seed,
        chaos.args.events,
        chaos.args.rate,
        if chaos.args.short { " --short" } else { "" }
    );

    chaos.start_redis().await?;
    let kafka = herald::Config::from_toml_overlay(&format!("[kafka]\nbrokers = \"{}\"", chaos.brokers))?.kafka;
    let sources: Vec<String> = TOPICS.iter().map(|t| chaos.topic(t)).collect();
    herald::kafka::create_topics(&kafka, &sources, PARTITIONS).await?;
    herald::kafka::create_topics(&kafka, &[chaos.topic("system")], 1).await?;
    let keep = |name: String, days: u64| herald::kafka::TopicSpec {
        name,
        create_retention: Some(Duration::from_secs(days * 86_400)),
        min_retention: None,
    };
    let mut kept = vec![keep(chaos.topic("dlq"), 30), keep(chaos.topic("redrive"), 1)];
    kept.extend(TIERS.iter().map(|s| keep(chaos.topic(&format!("retry.{s}s")), 1)));
    herald::kafka::create_topics_with(&kafka, &kept, 3).await?;
    let store = chaos.store().await?;
    for name in WEBHOOKS {
        let addr = if name == "odd" { odd } else { http };
        let url = format!("http://{addr}/{name}");
        let mut hook = herald::webhook::Webhook::new(name, name, &url, &["*"]);
        if name == LIMITED {
            hook.limits.rate = Some(limited_rate(chaos.args.rate));
        }
        store.put(&hook).await?;
        chaos.hooks.lock().push(hook);
    }
    let mut all: Vec<String> = sources.clone();
    all.extend(kept.iter().map(|t| t.name.clone()));
    all.push(chaos.topic("system"));
    wait_topics(&chaos.brokers, all).await?;
    std::fs::write(&chaos.config, chaos.config())?;
    {
        let mut slots = chaos.slots.lock().await;
        for (n, slot) in slots.iter_mut().enumerate() {
            slot.replica = Some(chaos.start_replica(n));
        }
        for slot in slots.iter() {
            fleet::wait_ready(slot.replica.as_ref().expect("started")).await;
        }
    }
    chaos.say("three replicas ready");
    let committed_sampler = tokio::spawn(sample_committed(chaos.clone()));

    // Peak RSS, sampled.
    let sampler = {
        let chaos = chaos.clone();
        tokio::spawn(async move {
            loop {
                for slot in chaos.slots.lock().await.iter_mut() {
                    slot.sample();
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };

    let mut rng = rand::rngs::StdRng::seed_from_u64(chaos.args.seed);
    let plan = schedule(&mut rng, chaos.args.short, seconds);
    let produce_began = Instant::now();
    let mut faults = Vec::new();
    for (at, fault) in &plan {
        let (chaos, fault, seed, at) = (chaos.clone(), *fault, rng.random::<u64>(), *at);
        faults.push(tokio::spawn(async move {
            tokio::time::sleep_until((produce_began + Duration::from_secs_f64(at)).into()).await;
            if let Err(e) = inject(chaos.clone(), fault, seed).await {
                chaos.say(&format!("fault {fault:?} failed: {e:#}"));
            }
        }));
    }
    println!(
        "plan (seconds into production): {}",
        plan.iter()
            .map(|(at, f)| format!("{at:.0} {f:?}"))
            .collect::<Vec<_>>()
            .join(", ")
    );

    // Production: every event acknowledged by the cluster (acks=all,
    // idempotent) is one every webhook must receive.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &chaos.brokers)
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "300000")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let tick = Duration::from_secs_f64(1.0 / chaos.args.rate as f64);
    let mut pending = Vec::with_capacity(chaos.args.events as usize);
    let mut records = Records::default();
    for seq in 0..chaos.args.events {
        let topic = &sources[(seq % TOPICS.len() as u64) as usize];
        let partition = ((seq / TOPICS.len() as u64) % PARTITIONS as u64) as i32;
        let body = format!(r#"{{"event":"chaos.tick","version":"0","seq":{seq}}}"#);
        let key = seq.to_string();
        loop {
            match producer.send_result(FutureRecord::to(topic).payload(&body).key(&key).partition(partition)) {
                Ok(delivery) => {
                    pending.push((seq, delivery));
                    records.produced_at.insert(seq, Instant::now());
                    chaos.produced.store(seq + 1, Ordering::Relaxed);
                    break;
                }
                Err((e, _)) => {
                    chaos.say(&format!("producing {seq}: {e}; again in 100 ms"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        tokio::time::sleep_until((produce_began + tick * (seq + 1) as u32).into()).await;
    }
    let mut sent: Vec<u64> = Vec::new();
    let mut unsent = 0;
    for (seq, delivery) in pending {
        match delivery.await {
            Ok(Ok(d)) => {
                sent.push(seq);
                let topic = sources[(seq % TOPICS.len() as u64) as usize].clone();
                let written = records.produced_at.get(&seq).map_or(0, |t| wall_ms(*t));
                records.source.insert(seq, (topic, d.partition, d.offset, written));
            }
            _ => unsent += 1,
        }
    }
    let produce_ended = Instant::now();
    chaos.say(&format!(
        "stopped producing: {} events acknowledged, {unsent} not (those are not counted)",
        sent.len()
    ));
    for f in faults {
        let _ = f.await;
    }
    let last_healed = chaos
        .happened
        .lock()
        .iter()
        .map(|h| h.healed)
        .max()
        .unwrap_or(produce_ended)
        .max(produce_ended);
    chaos.say("every fault healed; waiting for deliveries and the lag");

    // The lag back to 0, and every event delivered (or dead-lettered).
    let lag_client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &chaos.brokers)
        .set("group.id", &chaos.id)
        .set("enable.auto.commit", "false")
        .create()?;
    let lag_client = Arc::new(lag_client);
    let mut lag_zero_at: Option<Instant> = None;
    let deadline = last_healed + Duration::from_secs(TIERS.iter().sum::<u64>() + 300);
    let mut dead = HashMap::new();
    let mut last_dead_read = Instant::now();
    let late_from = *chaos.late_from.lock();
    let missing = |dead: &HashMap<String, Vec<fleet::DeadLetter>>| -> usize {
        WEBHOOKS
            .iter()
            .map(|w| (*w, 0))
            .chain(late_from.map(|from| (LATE, from)))
            .map(|(w, from)| {
                let done = receivers.succeeded(w);
                let letters: HashSet<u64> = dead
                    .get(w)
                    .map(|l: &Vec<fleet::DeadLetter>| l.iter().map(|l| l.seq).collect())
                    .unwrap_or_default();
                sent.iter()
                    .filter(|s| **s >= from && !done.contains(s) && !letters.contains(s))
                    .count()
            })
            .sum()
    };
    loop {
        if lag_zero_at.is_none() {
            let (client, topics) = (lag_client.clone(), sources.clone());
            let lag = tokio::task::spawn_blocking(move || source_lag(&client, &topics)).await?;
            if lag == Some(0) {
                lag_zero_at = Some(Instant::now());
                chaos.say("source lag 0");
            }
        }
        let now_missing = missing(&dead);
        if now_missing > 0 && last_dead_read.elapsed() > Duration::from_secs(30) {
            dead = fleet::dead_letters(&chaos.brokers, &chaos.topic("dlq"), 3).await;
            last_dead_read = Instant::now();
        }
        if (now_missing == 0 && lag_zero_at.is_some()) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    dead = fleet::dead_letters(&chaos.brokers, &chaos.topic("dlq"), 3).await;
    sampler.abort();
    committed_sampler.abort();
    for topic in chaos.retry_topics() {
        for r in fleet::read_topic(&chaos.brokers, &topic, 3).await {
            if let Some(seq) = r.seq {
                records
                    .retries
                    .entry((r.header("herald.webhook.id"), seq))
                    .or_default()
                    .push((topic.clone(), r.partition, r.offset, r.timestamp_ms.max(0) as u64));
            }
        }
    }
    let mut slots = chaos.slots.lock().await;
    for slot in slots.iter_mut() {
        slot.sample();
    }
    if let Err(e) = write_arrivals(&chaos) {
        println!("writing the arrivals: {e}");
    }
    let failed = report(
        &chaos,
        &sent,
        &records,
        &dead,
        &slots,
        produce_began,
        produce_ended,
        last_healed,
        lag_zero_at,
    );
    for slot in slots.iter_mut() {
        if let Some(r) = slot.replica.as_mut() {
            fleet::signal(r, "TERM");
            let _ = tokio::time::timeout(Duration::from_secs(30), r.child.wait()).await;
        }
    }
    if let Some(mut redis) = chaos.redis.lock().await.take() {
        let _ = redis.kill().await;
    }
    if failed {
        println!(
            "\nFAILED (seed {}; replica logs in {})",
            chaos.args.seed,
            chaos.args.work_dir.display()
        );
        std::process::exit(1);
    }
    Ok(())
}

/// Every request the receivers read, as CSV in the work directory
/// (arrivals.csv: webhook, seq, attempt, webhook-id, sent s, arrived ms, ok),
/// for a failed run to be looked into.
fn write_arrivals(chaos: &Chaos) -> std::io::Result<()> {
    let file = std::fs::File::create(chaos.args.work_dir.join("arrivals.csv"))?;
    let mut out = std::io::BufWriter::new(file);
    writeln!(out, "webhook,seq,attempt,webhook_id,sent_s,arrived_ms,ok")?;
    for (w, list) in chaos.receivers.arrivals.lock().iter() {
        for a in list {
            writeln!(
                out,
                "{w},{},{},{},{},{},{}",
                a.seq, a.attempt, a.webhook_id, a.sent_s, a.wall_ms, a.ok
            )?;
        }
    }
    out.flush()
}

/// Prints the figures; true when something is lost, a retry came early or
/// the lag did not come back within [`LAG_BOUND`].
#[allow(clippy::too_many_arguments)]
fn report(
    chaos: &Chaos,
    sent: &[u64],
    records: &Records,
    dead: &HashMap<String, Vec<fleet::DeadLetter>>,
    slots: &[Slot],
    produce_began: Instant,
    produce_ended: Instant,
    last_healed: Instant,
    lag_zero_at: Option<Instant>,
) -> bool {
    let arrivals = chaos.receivers.arrivals.lock();
    let happened = chaos.happened.lock();
    // The faults after which records may be read again, each with the
    // offsets committed when it began and the end of the time it may
    // replay in: a record in flight at it is one at or past its partition's
    // committed offset, written before that end.
    let replaying: Vec<(&Happened, Offsets, Instant)> = happened
        .iter()
        .filter(|h| h.fault.replays())
        .map(|h| (h, chaos.committed_at(h.began), h.healed + REPLAY_SLACK))
        .collect();
    let in_flight = |place: &Place, committed: &Offsets, end: Instant| {
        let (topic, partition, offset, written) = place;
        *offset >= committed.get(&(topic.clone(), *partition)).copied().unwrap_or(0) && *written <= wall_ms(end)
    };
    // While `odd` answered 50 MB bodies, an answer it counted as 2xx may
    // have been one Herald gave up reading.
    let big_bodies: Vec<&Happened> = happened.iter().filter(|h| matches!(h.fault, Fault::BigBody)).collect();
    let empty = Vec::new();
    let mut lost = 0;
    let mut duplicates_total = 0;
    let mut replayed_total = 0;
    let mut unread_total = 0;
    let mut unexplained_total = 0;
    let mut bound = 0;
    let mut id_changed_total = 0;
    let mut early_total = 0;
    println!("\nwebhook  sent     delivered  dead-lettered  lost  duplicates  webhook-id changed  retries  early");
    // `late` is judged on the events from the one it must receive on.
    let late_from = *chaos.late_from.lock();
    let judged_from = WEBHOOKS
        .iter()
        .map(|w| (*w, 0))
        .chain(late_from.map(|from| (LATE, from)));
    for (w, from) in judged_from {
        let sent: Vec<u64> = sent.iter().copied().filter(|s| *s >= from).collect();
        let list = arrivals.get(w).unwrap_or(&empty);
        let done: HashSet<u64> = list.iter().filter(|a| a.ok && a.seq >= from).map(|a| a.seq).collect();
        let letters: HashSet<u64> = dead
            .get(w)
            .map(|l| l.iter().map(|l| l.seq).collect())
            .unwrap_or_default();
        let missing: Vec<u64> = sent
            .iter()
            .copied()
            .filter(|s| !done.contains(s) && !letters.contains(s))
            .collect();
        let successes = list.iter().filter(|a| a.ok && a.seq >= from).count();
        // Per event: its webhook-ids, and of each attempt the earliest
        // send (webhook-timestamp, s) and the earliest arrival (ms).
        let mut ids: HashMap<u64, HashSet<&str>> = HashMap::new();
        let mut firsts: HashMap<u64, BTreeMap<u32, (u64, u64)>> = HashMap::new();
        for a in list {
            ids.entry(a.seq).or_default().insert(&a.webhook_id);
            let first = firsts
                .entry(a.seq)
                .or_default()
                .entry(a.attempt)
                .or_insert((a.sent_s, a.wall_ms));
            *first = (first.0.min(a.sent_s), first.1.min(a.wall_ms));
        }
        let changed = ids.values().filter(|s| s.len() > 1).count();
        // Each duplicate must be explained: a record of its event (the
        // source record, or a retry record for this webhook) was in flight
        // at a fault that may replay and its last 2xx came after the fault
        // began; or `odd` counted a 50 MB answer Herald gave up reading.
        // Its first 2xx may come long after the fault: the copies of a
        // record read again go through retries, and through a rate limit's
        // deferrals, with the rest of the webhook's backlog (`limited`
        // worked off a whole-cluster restart's for a minute past its
        // replay time in seed 43682185).
        let mut oks: HashMap<u64, Vec<Instant>> = HashMap::new();
        for a in list.iter().filter(|a| a.ok && a.seq >= from) {
            oks.entry(a.seq).or_default().push(a.at);
        }
        let (mut replayed, mut unread, mut unexplained) = (0, 0, Vec::new());
        for (seq, times) in &oks {
            let extra = times.len() - 1;
            if extra == 0 {
                continue;
            }
            let last = *times.iter().max().expect("one at least");
            let mut by_replay = 0;
            for (h, committed, end) in &replaying {
                if last >= h.began {
                    by_replay += records.of(w, *seq).filter(|p| in_flight(p, committed, *end)).count();
                }
            }
            let by_unread = if w == "odd" {
                times
                    .iter()
                    .filter(|t| big_bodies.iter().any(|h| **t >= h.began && **t <= h.healed))
                    .count()
            } else {
                0
            };
            let r = extra.min(by_replay);
            let u = (extra - r).min(by_unread);
            replayed += r;
            unread += u;
            if r + u < extra {
                unexplained.push((*seq, extra - r - u));
            }
        }
        // The bound: every record of this webhook's events in flight at
        // each fault that may replay.
        for (_, committed, end) in &replaying {
            bound += sent
                .iter()
                .map(|seq| records.of(w, *seq).filter(|p| in_flight(p, committed, *end)).count())
                .sum::<usize>();
        }
        if !unexplained.is_empty() {
            println!(
                "  duplicates at {w} no fault explains (event, extra deliveries): {:?}{}",
                &unexplained[..unexplained.len().min(20)],
                if unexplained.len() > 20 { " ..." } else { "" }
            );
        }
        replayed_total += replayed;
        unread_total += unread;
        unexplained_total += unexplained.iter().map(|(_, n)| n).sum::<usize>();
        // A retry is early when it arrived before the attempt before it was
        // sent plus its tier's delay: Herald sent that attempt no earlier
        // than its webhook-timestamp and failed it no earlier than that, so
        // this never blames a receiver slow to read a request.
        let mut retries = 0;
        let mut early = 0;
        for (seq, attempts) in &firsts {
            for (k, (_, arrived_ms)) in attempts {
                let Some((before_s, _)) = k.checked_sub(1).and_then(|p| attempts.get(&p)) else {
                    continue;
                };
                retries += 1;
                let due_s = TIERS[(*k as usize - 2).min(TIERS.len() - 1)];
                if JUDGED.contains(&w) && *arrived_ms < (before_s + due_s) * 1000 {
                    early += 1;
                    if early <= 5 {
                        println!(
                            "  early retry at {w}: event {seq} attempt {k} arrived {:.3} s after attempt {} was sent (tier {due_s} s)",
                            (*arrived_ms as f64 / 1000.0) - *before_s as f64,
                            k - 1
                        );
                    }
                }
            }
        }
        let early_text = if JUDGED.contains(&w) {
            early.to_string()
        } else {
            "(not judged)".to_owned()
        };
        println!(
            "{w:<8} {:<8} {:<10} {:<14} {:<5} {:<11} {:<19} {retries:<8} {early_text}",
            sent.len(),
            done.len(),
            letters.len(),
            missing.len(),
            successes - done.len(),
            changed
        );
        if !missing.is_empty() {
            println!(
                "  lost at {w}: {:?}{}",
                &missing[..missing.len().min(20)],
                if missing.len() > 20 { " ..." } else { "" }
            );
        }
        let mut reasons: BTreeMap<&str, usize> = BTreeMap::new();
        for l in dead.get(w).map(Vec::as_slice).unwrap_or_default() {
            *reasons.entry(l.reason.as_str()).or_default() += 1;
        }
        if !reasons.is_empty() {
            println!("  dead-lettered at {w}, by reason: {reasons:?}");
        }
        lost += missing.len();
        duplicates_total += successes - done.len();
        id_changed_total += changed;
        early_total += early;
    }

    match late_from {
        Some(from) => println!(
            "`{LATE}` (added while Redis was frozen) judged from event {from} on; it received {} events before",
            arrivals
                .get(LATE)
                .map(|l| l
                    .iter()
                    .filter(|a| a.ok && a.seq < from)
                    .map(|a| a.seq)
                    .collect::<HashSet<_>>()
                    .len())
                .unwrap_or(0)
        ),
        None => println!("`{LATE}` not judged (Redis was not frozen, or too late in the run)"),
    }
    // The limited webhook's requests in any second: within the limit, the
    // burst and a lease per replica while Redis answered. While a Redis
    // fault lasted (and 5 s after, as replicas ask again) the bucket may
    // have been flushed full (a burst more), and replicas Redis did not
    // answer kept to their shares of the rate on their own, each with its
    // share of the burst, while the others leased the whole rate: at most
    // the rate and a burst more (docs/rate-limits.md). A window also
    // allows, for each stall of the receivers' runtime that ended in it,
    // the requests the rate sends over the stall (stamped at its end,
    // they may have reached the receiver before the window began).
    let rate = limited_rate(chaos.args.rate);
    let lease = ((rate.per_second * 0.1).ceil() as u64).min(u64::from(rate.burst()));
    let rate_bound = rate.per_second + f64::from(rate.burst()) + (3 * lease) as f64;
    let fault_bound = rate_bound + rate.per_second + 2.0 * f64::from(rate.burst()) + 3.0;
    let redis_faults: Vec<(Instant, Instant)> = happened
        .iter()
        .filter(|h| matches!(h.fault, Fault::RestartRedis | Fault::FreezeRedis | Fault::FlushRedis))
        .map(|h| (h.began, h.healed + Duration::from_secs(5)))
        .collect();
    let mut requests: Vec<Instant> = arrivals
        .get(LIMITED)
        .map(|l| l.iter().map(|a| a.at).collect())
        .unwrap_or_default();
    requests.sort();
    let stalls = chaos.receivers.stalls.lock().clone();
    let (mut most_calm, mut most_redis, mut start) = (0, 0, 0);
    let (mut calm_over, mut redis_over, mut stalled_windows) = (false, false, 0);
    for end in 0..requests.len() {
        while requests[end].duration_since(requests[start]) >= Duration::from_secs(1) {
            start += 1;
        }
        let window = (requests[start], requests[end]);
        let count = end - start + 1;
        let stalled: f64 = stalls
            .iter()
            .filter(|(at, _)| *at >= window.0 && *at <= window.1)
            .map(|(_, late)| (late.as_secs_f64() * rate.per_second).ceil())
            .sum();
        if stalled > 0.0 && count as f64 > rate_bound {
            stalled_windows += 1;
        }
        if redis_faults.iter().any(|(b, h)| window.1 >= *b && window.0 <= *h) {
            most_redis = most_redis.max(count);
            redis_over |= count as f64 > fault_bound + stalled;
        } else {
            most_calm = most_calm.max(count);
            calm_over |= count as f64 > rate_bound + stalled;
        }
    }
    let longest = stalls.iter().map(|(_, late)| *late).max().unwrap_or_default();
    println!(
        "receivers' runtime held up {} times over 20 ms (longest {} ms); {stalled_windows} windows of `{LIMITED}` \
         past the bound were allowed the requests sent over such a stall",
        stalls.len(),
        longest.as_millis()
    );
    println!(
        "`{LIMITED}` ({} a second, burst {}): at most {most_calm} requests in any second while Redis answered \
         (bound {rate_bound:.0}{}), {most_redis} in a second overlapping a Redis fault (bound {fault_bound:.0}{})",
        rate.per_second,
        rate.burst(),
        if calm_over { ": OVER" } else { "" },
        if redis_over { ": OVER" } else { "" }
    );
    let rate_over = calm_over || redis_over;
    let big_most = chaos.receivers.big_most.load(Ordering::Relaxed);
    println!(
        "50 MB bodies: at most {:.1} MB of one written before Herald closed the connection, {} written whole",
        big_most as f64 / 1_048_576.0,
        chaos.receivers.big_whole.load(Ordering::Relaxed)
    );
    println!(
        "duplicates {duplicates_total}: {replayed_total} of events with a record in flight (at or past the \
         committed offset) when a replica or broker fault began, {unread_total} answered by `odd` with a \
         50 MB body, {unexplained_total} unexplained; bound (records in flight at the {} faults that may \
         replay, per webhook) {bound}",
        replaying.len()
    );
    // Deliveries/s while a fault was active, and while none was, over
    // production.
    let in_fault = |t: Instant| happened.iter().any(|h| t >= h.began && t < h.healed);
    let (mut during, mut between) = (0u64, 0u64);
    for a in arrivals.values().flatten() {
        if a.ok && a.at >= produce_began && a.at < produce_ended {
            if in_fault(a.at) {
                during += 1;
            } else {
                between += 1;
            }
        }
    }
    let step = Duration::from_millis(100);
    let (mut fault_time, mut calm_time) = (Duration::ZERO, Duration::ZERO);
    let mut t = produce_began;
    while t < produce_ended {
        if in_fault(t) {
            fault_time += step;
        } else {
            calm_time += step;
        }
        t += step;
    }
    let rate = |n: u64, d: Duration| if d.is_zero() { 0.0 } else { n as f64 / d.as_secs_f64() };
    println!(
        "\ndeliveries/s (2xx, all webhooks) while producing: {:.0} during faults ({:.0} s), {:.0} between ({:.0} s)",
        rate(during, fault_time),
        fault_time.as_secs_f64(),
        rate(between, calm_time),
        calm_time.as_secs_f64()
    );
    let lag_after = lag_zero_at.map(|z| z.saturating_duration_since(last_healed));
    println!(
        "source lag back to 0: {} after the last fault healed (bound {} s)",
        lag_after.map_or("never".to_owned(), |d| format!("{:.0} s", d.as_secs_f64())),
        LAG_BOUND.as_secs()
    );
    let peaks: Vec<String> = slots
        .iter()
        .enumerate()
        .map(|(n, s)| format!("replica {n} {:.0} MB", s.peak_kb as f64 / 1024.0))
        .collect();
    println!("peak RSS (VmHWM): {}", peaks.join(", "));
    println!("\nfaults ({}):", happened.len());
    let mut sorted: Vec<&Happened> = happened.iter().collect();
    sorted.sort_by_key(|h| h.began);
    for h in sorted {
        println!(
            "  {:>6.1}s - {:>6.1}s  {}",
            h.began.duration_since(produce_began).as_secs_f64(),
            h.healed.duration_since(produce_began).as_secs_f64(),
            h.what
        );
    }
    println!(
        "\nsummary: seed {} events {} faults {} lost {lost} duplicates {duplicates_total} \
         (webhook-id changed {id_changed_total}, unexplained {unexplained_total}, bound {bound}) early retries \
         {early_total} rate-limited most a second {most_calm} (bound {rate_bound:.0}), {most_redis} in Redis \
         faults (bound {fault_bound:.0}) lag recovery {} peak RSS {}",
        chaos.args.seed,
        sent.len(),
        happened.len(),
        lag_after.map_or("never".to_owned(), |d| format!("{:.0} s", d.as_secs_f64())),
        peaks.join(", ")
    );
    lost > 0 || early_total > 0 || unexplained_total > 0 || rate_over || lag_after.is_none_or(|d| d > LAG_BOUND)
}

//! Herald's end-to-end benchmark, with this machine's own ceilings measured
//! in the same run. Run it with `scripts/bench` (which starts a broker and
//! Redis, builds in release mode and passes the addresses).
//!
//!     bench --brokers 127.0.0.1:PORT --herald target/release/herald [--events 20000] [--json FILE]
//!           [--broker-pid PID] [--engine LABEL] [--large-events 1000000] [--large-webhooks 10000]
//!           [--waiting-retries 1000] [--due-retries 100000] [--no-latency] [--fetch-wait-ms 10]
//!           [--tls-hosts 1000] [--tls-events 100000] [--ordered-events 20000]
//!           [--history-topic] [--work-dir DIR] [--redis URL]
//!
//! It measures, each on a fresh backlog of `--events` 1 KB records:
//! - ceiling (a): the receiver driven directly over HTTP at the same concurrency;
//! - ceiling (b): the broker alone: a consumer reading the backlog, no HTTP;
//! - ceiling (c): a null pipeline: consume and POST each record, nothing else;
//! - Herald (its own process) draining the backlog with fan-out 1 and 10;
//! - latency from publish to arrival, open loop, of the null pipeline and of
//!   Herald: at the highest of a ladder of rates (from a quarter of fan-out
//!   1's) where the null pipeline's p99 is under 10 ms, and at 50 events/s;
//! - Herald's peak RSS and CPU seconds per 1,000 deliveries;
//! - Herald's CPU while retries wait in a delay topic, against idle;
//! - a one-partition retry tier holding `--due-retries` retries, all due,
//!   drained against the source path draining as many events from one
//!   partition in the same run;
//! - Herald's peak RSS draining a large backlog (`--large-events`) spread over
//!   many webhooks (`--large-webhooks`);
//! - fan-out 1 to `--tls-hosts` HTTPS receivers, each its own address
//!   (127.0.0.2 on) with a certificate a CA made for the run signed (trusted
//!   through `delivery.ca_file`), over `--tls-events` events, against the
//!   same run over plain HTTP to one host: deliveries/s, TLS handshakes full
//!   and resumed, connections open at most at once, peak RSS;
//! - fan-out 1 to a webhook with `"ordering": "key"` over `--ordered-events`
//!   events (keyed), with 1,000 keys and with one hot key, each against the
//!   same backlog to an unordered webhook in the same run;
//! - with `--history-topic`, fan-out 1 and 10 again with `history.topic`
//!   on (every attempt in full to a Kafka topic), against the same without;
//! - where the CPU went in each phase: the machine, Herald, the broker, and
//!   this process (receiver, producer, null pipeline).
//!
//! Every Herald figure is also printed as a ratio to the ceilings.

#[path = "common/machine.rs"]
mod machine;
#[path = "common/tls_receivers.rs"]
mod tls_receivers;

use machine::machine_jiffies;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use futures::StreamExt;
use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Message};
use serde_json::json;
use tokio::sync::Semaphore;

/// Herald's own `fetch.wait.max.ms` (`kafka::consumer_config`): the
/// ceilings' consumers use it too unless `--fetch-wait-ms` says otherwise.
const HERALD_FETCH_WAIT_MS: u64 = 20;

const CONCURRENCY: usize = 16;

fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

/// A receiver counting arrivals and, for bodies carrying `"sent_us":N`, the
/// publish-to-arrival latency.
#[derive(Clone, Default)]
struct Receiver {
    count: Arc<AtomicU64>,
    first_us: Arc<AtomicU64>,
    last_us: Arc<AtomicU64>,
    latencies_us: Arc<Mutex<Vec<u64>>>,
    /// Requests answered 500 (paths under `/fail`).
    failed: Arc<AtomicU64>,
    /// The longest time between two arrivals: a stall of the pipeline.
    max_gap_us: Arc<AtomicU64>,
}

impl Receiver {
    fn reset(&self) {
        self.count.store(0, Ordering::SeqCst);
        self.first_us.store(0, Ordering::SeqCst);
        self.last_us.store(0, Ordering::SeqCst);
        self.latencies_us.lock().clear();
        self.failed.store(0, Ordering::SeqCst);
        self.max_gap_us.store(0, Ordering::SeqCst);
    }

    async fn wait(&self, n: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.count.load(Ordering::SeqCst) < n {
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    /// Seconds between the first and the last arrival.
    fn span(&self) -> f64 {
        let (f, l) = (
            self.first_us.load(Ordering::SeqCst),
            self.last_us.load(Ordering::SeqCst),
        );
        (l.saturating_sub(f)) as f64 / 1e6
    }
}

async fn receive(State(r): State<Receiver>, uri: axum::http::Uri, body: Bytes) -> StatusCode {
    if uri.path().starts_with("/fail") {
        r.failed.fetch_add(1, Ordering::SeqCst);
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let now = now_us();
    r.count.fetch_add(1, Ordering::SeqCst);
    let _ = r.first_us.compare_exchange(0, now, Ordering::SeqCst, Ordering::SeqCst);
    let previous = r.last_us.fetch_max(now, Ordering::SeqCst);
    if previous != 0 {
        r.max_gap_us.fetch_max(now.saturating_sub(previous), Ordering::SeqCst);
    }
    if let Some(pos) = memchr_find(&body, b"\"sent_us\":") {
        let digits: String = body[pos + 10..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .map(|&b| b as char)
            .collect();
        if let Ok(sent) = digits.parse::<u64>() {
            r.latencies_us.lock().push(now.saturating_sub(sent));
        }
    }
    StatusCode::NO_CONTENT
}

fn memchr_find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The HTTP client of the ceilings (a) and (c): hyper's pooled client, the
/// one Herald delivers with (here without TLS, the SSRF resolver, or
/// anything Herald does around a request).
type CeilingClient =
    hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, http_body_util::Full<Bytes>>;

fn ceiling_client() -> CeilingClient {
    let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
    tcp.set_nodelay(true);
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_timer(hyper_util::rt::TokioTimer::new())
        .build(tcp)
}

/// POSTs `body` to `uri`, as a prepared request.
fn post(client: &CeilingClient, uri: &http::Uri, body: Bytes) -> hyper_util::client::legacy::ResponseFuture {
    let mut request = http::Request::new(http_body_util::Full::new(body));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = uri.clone();
    client.request(request)
}

/// The null pipeline's sending half: POSTs each record's payload to the
/// receiver as it comes, at most `CONCURRENCY` at once.
struct NullSender {
    client: CeilingClient,
    uri: http::Uri,
    slots: Arc<Semaphore>,
}

impl NullSender {
    fn new(receiver: SocketAddr) -> NullSender {
        NullSender {
            client: ceiling_client(),
            uri: format!("http://{receiver}/null").parse().unwrap(),
            slots: Arc::new(Semaphore::new(CONCURRENCY)),
        }
    }

    /// Waits for a free slot, then sends `payload` without waiting for the answer.
    async fn send(&self, payload: &[u8]) {
        let permit = self.slots.clone().acquire_owned().await.unwrap();
        let sent = post(&self.client, &self.uri, Bytes::copy_from_slice(payload));
        tokio::spawn(async move {
            let _ = sent.await;
            drop(permit);
        });
    }
}

fn body(n: u64, sent_us: Option<u64>) -> Vec<u8> {
    typed_body("bench.tick", n, sent_us)
}

/// A 1 KB record of event type `event`.
fn typed_body(event: &str, n: u64, sent_us: Option<u64>) -> Vec<u8> {
    let head = match sent_us {
        Some(s) => format!(r#"{{"event":"{event}","version":"0","n":{n},"sent_us":{s},"pad":""#),
        None => format!(r#"{{"event":"{event}","version":"0","n":{n},"pad":""#),
    };
    let mut out = head.into_bytes();
    out.resize(1024 - 2, b'x');
    out.extend_from_slice(b"\"}");
    out
}

/// A phase's figures by name.
type Figures = BTreeMap<String, f64>;

fn figures<const N: usize>(pairs: [(&str, f64); N]) -> Figures {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// Where the CPU went during a phase: the machine as a whole (from
/// /proc/stat) and each process of interest (utime + stime), so a figure can
/// be read against what bound it.
struct Usage {
    machine: (u64, u64),
    procs: Vec<(&'static str, u32, f64)>,
    started: Instant,
}

impl Usage {
    fn start(procs: &[(&'static str, Option<u32>)]) -> Usage {
        Usage {
            machine: machine_jiffies(),
            procs: procs
                .iter()
                .filter_map(|(name, pid)| pid.map(|pid| (*name, pid, cpu_seconds(pid))))
                .collect(),
            started: Instant::now(),
        }
    }

    /// `machine_busy_pct` and `<name>_cores` (CPU seconds per second).
    fn finish(&self) -> Figures {
        let wall = self.started.elapsed().as_secs_f64();
        let (busy, total) = machine_jiffies();
        let mut out = Figures::new();
        let (db, dt) = (busy - self.machine.0, total - self.machine.1);
        out.insert("machine_busy_pct".into(), 100.0 * db as f64 / dt.max(1) as f64);
        for (name, pid, before) in &self.procs {
            out.insert(format!("{name}_cores"), (cpu_seconds(*pid) - before) / wall);
        }
        out
    }
}

/// What a drain took: Herald's CPU seconds and peak RSS, where the CPU went,
/// and the seconds from the first to the last delivery.
struct Drained {
    cpu: f64,
    rss: f64,
    used: Figures,
    span: f64,
}

struct Bench {
    brokers: String,
    redis: String,
    herald: PathBuf,
    events: u64,
    receiver: Receiver,
    receiver_addr: SocketAddr,
    producer: FutureProducer,
    run_id: String,
    /// librdkafka `fetch.wait.max.ms` for Herald and the null pipeline, when
    /// set (`--fetch-wait-ms`): how long the broker may hold a fetch that has
    /// no data. Apache Kafka answers as soon as data arrives, so the default
    /// (librdkafka's, 500 ms) costs no latency there.
    fetch_wait_ms: Option<u64>,
    /// The broker's process, for its CPU use (when known).
    broker_pid: Option<u32>,
    /// Where each Herald's configuration and log are written.
    work_dir: PathBuf,
    /// The log of the Herald started last (shown when it exits early).
    herald_log: Mutex<PathBuf>,
    /// `history.topic` of the Heralds started (empty: off, the default of
    /// every phase but the one measuring it).
    history_topic: Mutex<String>,
}

impl Bench {
    /// Starts measuring CPU: the machine, the broker, this process (the
    /// receiver and the producer) and, when given, Herald.
    fn usage(&self, herald: Option<u32>) -> Usage {
        Usage::start(&self.usage_pids(herald))
    }

    fn usage_pids(&self, herald: Option<u32>) -> [(&'static str, Option<u32>); 3] {
        [
            ("herald", herald),
            ("broker", self.broker_pid),
            ("bench", Some(std::process::id())),
        ]
    }

    fn config(&self) -> herald::Config {
        herald::Config::from_toml_overlay(&format!("[kafka]\nbrokers = \"{}\"", self.brokers)).unwrap()
    }

    /// A dead-letter topic, kept as long as Herald requires (it refuses to
    /// start with a dead-letter topic that keeps records less than 30 days).
    async fn dead_letter_topic(&self, name: &str) -> String {
        let topic = format!("bench-{}-{name}", self.run_id);
        let spec = herald::kafka::TopicSpec {
            name: topic.clone(),
            create_retention: Some(Duration::from_secs(30 * 86_400)),
            min_retention: None,
        };
        herald::kafka::create_topics_with(&self.config().kafka, &[spec], 1)
            .await
            .unwrap();
        topic
    }

    /// Fails the run at once, with the end of Herald's log, when `child`
    /// has exited: a phase must never wait for deliveries that cannot come.
    fn check_running(&self, child: &mut tokio::process::Child) {
        if let Ok(Some(status)) = child.try_wait() {
            let log = self.herald_log.lock().clone();
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            eprintln!("Herald exited ({status}); the end of {}:", log.display());
            for line in tail.iter().rev() {
                eprintln!("  {line}");
            }
            panic!("Herald exited during the benchmark ({status})");
        }
    }

    /// Waits until the receiver has `n` requests, while `child` runs.
    async fn wait_while_running(&self, child: &mut tokio::process::Child, n: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.receiver.wait(n, Duration::from_millis(500)).await {
            self.check_running(child);
            if Instant::now() > deadline {
                return false;
            }
        }
        true
    }

    async fn topic(&self, name: &str, partitions: i32) -> String {
        let topic = format!("bench-{}-{name}", self.run_id);
        herald::kafka::create_topics(&self.config().kafka, std::slice::from_ref(&topic), partitions)
            .await
            .unwrap();
        topic
    }

    /// `--events` records on `topic`; records produced a second.
    async fn backlog(&self, topic: &str) -> f64 {
        self.events as f64 / self.produce_backlog(topic, self.events, |n| body(n, None)).await
    }

    /// `events` records `payload(n)` on `topic`, pipelined; the seconds it
    /// took until the broker acknowledged them all.
    async fn produce_backlog(&self, topic: &str, events: u64, payload: impl Fn(u64) -> Vec<u8>) -> f64 {
        self.produce_keyed(topic, events, |n| n.to_string(), payload).await
    }

    /// `events` records `payload(n)` with key `key(n)` on `topic`,
    /// pipelined; the seconds it took until the broker acknowledged them all.
    async fn produce_keyed(
        &self,
        topic: &str,
        events: u64,
        key: impl Fn(u64) -> String,
        payload: impl Fn(u64) -> Vec<u8>,
    ) -> f64 {
        let start = Instant::now();
        let mut pending = futures::stream::FuturesUnordered::new();
        for n in 0..events {
            let payload = payload(n);
            let key = key(n);
            let record = FutureRecord::to(topic).key(&key).payload(&payload);
            pending.push(self.producer.send_result(record).map_err(|(e, _)| e).unwrap());
            if pending.len() >= 2000 {
                pending.next().await;
            }
        }
        while pending.next().await.is_some() {}
        self.producer.flush(Timeout::After(Duration::from_secs(60))).unwrap();
        start.elapsed().as_secs_f64()
    }

    /// (a) The receiver alone, driven by an HTTP client at `CONCURRENCY`.
    async fn http_ceiling(&self) -> (f64, Figures) {
        self.receiver.reset();
        let usage = self.usage(None);
        let client = ceiling_client();
        let uri: http::Uri = format!("http://{}/direct", self.receiver_addr).parse().unwrap();
        let sem = Arc::new(Semaphore::new(CONCURRENCY));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for n in 0..self.events {
            let permit = sem.clone().acquire_owned().await.unwrap();
            let sent = post(&client, &uri, Bytes::from(body(n, None)));
            tasks.push(tokio::spawn(async move {
                let _ = sent.await;
                drop(permit);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        (self.events as f64 / start.elapsed().as_secs_f64(), usage.finish())
    }

    /// (b) The broker alone: read the backlog, nothing else.
    async fn broker_ceiling(&self, topic: &str) -> (f64, Figures) {
        let pids = self.usage_pids(None);
        let (brokers, topic, n) = (self.brokers.clone(), topic.to_owned(), self.events);
        let fetch_wait = self.fetch_wait_ms;
        let group = format!("bench-{}-broker", self.run_id);
        tokio::task::spawn_blocking(move || {
            let c: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &brokers)
                .set("group.id", &group)
                .set("auto.offset.reset", "earliest")
                .set(
                    "fetch.wait.max.ms",
                    fetch_wait.unwrap_or(HERALD_FETCH_WAIT_MS).to_string(),
                )
                .create()
                .unwrap();
            c.subscribe(&[&topic]).unwrap();
            let (mut got, mut first) = (0u64, None);
            while got < n {
                if let Some(Ok(_)) = c.poll(Duration::from_millis(100)) {
                    // Measured from the first record: the group join is not the broker's rate.
                    first.get_or_insert_with(|| (Instant::now(), Usage::start(&pids)));
                    got += 1;
                }
            }
            let (first, usage) = first.unwrap();
            (n as f64 / first.elapsed().as_secs_f64(), usage.finish())
        })
        .await
        .unwrap()
    }

    /// (c) The null pipeline: consume and POST each record; no routing,
    /// signing or offset tracking.
    async fn null_pipeline(&self, topic: &str) -> (f64, Figures) {
        self.receiver.reset();
        let consumer = self.null_consumer("null");
        consumer.subscribe(&[topic]).unwrap();
        let sender = NullSender::new(self.receiver_addr);
        let mut usage = None;
        for _ in 0..self.events {
            let m = consumer.recv().await.unwrap();
            usage.get_or_insert_with(|| self.usage(None));
            sender.send(m.payload().unwrap_or_default()).await;
        }
        self.receiver.wait(self.events, Duration::from_secs(600)).await;
        (self.events as f64 / self.receiver.span(), usage.unwrap().finish())
    }

    /// The null pipeline's consumer, of group `bench-RUN-{group}`.
    fn null_consumer(&self, group: &str) -> StreamConsumer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.brokers)
            .set("group.id", format!("bench-{}-{group}", self.run_id))
            .set("auto.offset.reset", "earliest")
            .set("enable.auto.commit", "false")
            .set(
                "fetch.wait.max.ms",
                self.fetch_wait_ms.unwrap_or(HERALD_FETCH_WAIT_MS).to_string(),
            )
            .create()
            .unwrap()
    }

    async fn webhooks(&self, prefix: &str, fanout: usize) {
        self.webhooks_with(prefix, fanout, "wh", |_| "bench.*".to_owned()).await
    }

    /// `count` webhooks at `/{path}/{i}`, webhook `i` subscribed to `pattern(i)`.
    async fn webhooks_with(&self, prefix: &str, count: usize, path: &str, pattern: impl Fn(usize) -> String) {
        let base = format!("http://{}/{path}", self.receiver_addr);
        self.webhooks_to(prefix, count, |i| format!("{base}/{i}"), pattern)
            .await
    }

    /// `count` webhooks, webhook `i` at `url(i)` subscribed to `pattern(i)`.
    async fn webhooks_to(
        &self,
        prefix: &str,
        count: usize,
        url: impl Fn(usize) -> String,
        pattern: impl Fn(usize) -> String,
    ) {
        let client = redis::Client::open(self.redis.as_str()).unwrap();
        let store = herald::subscriptions::store::SubscriptionStore::connect(&client, prefix)
            .await
            .unwrap();
        let mut pending = futures::stream::FuturesUnordered::new();
        for i in 0..count {
            let w = herald::webhook::Webhook::new(
                &format!("bench-{i}"),
                &format!("bench {i}"),
                &url(i),
                &[pattern(i).as_str()],
            );
            let store = &store;
            pending.push(async move { store.put(&w).await.unwrap() });
            if pending.len() >= 64 {
                pending.next().await;
            }
        }
        while pending.next().await.is_some() {}
    }

    fn start_herald(&self, topic: &str, prefix: &str, dlq: &str) -> (tokio::process::Child, SocketAddr) {
        self.start_herald_with(topic, prefix, dlq, "[retry]\ntiers = []\n")
    }

    /// Herald with the benchmark's settings plus `extra` (TOML sections).
    fn start_herald_with(
        &self,
        topic: &str,
        prefix: &str,
        dlq: &str,
        extra: &str,
    ) -> (tokio::process::Child, SocketAddr) {
        self.start_herald_delivering(topic, prefix, dlq, "", extra)
    }

    /// [`Bench::start_herald_with`], with `delivery` (keys) in `[delivery]`.
    fn start_herald_delivering(
        &self,
        topic: &str,
        prefix: &str,
        dlq: &str,
        delivery: &str,
        extra: &str,
    ) -> (tokio::process::Child, SocketAddr) {
        self.start_herald_wrapped(&[], topic, prefix, dlq, delivery, extra)
    }

    /// [`Bench::start_herald_delivering`], Herald run by `wrapper` (a
    /// command and its arguments, e.g. valgrind) when it is not empty.
    fn start_herald_wrapped(
        &self,
        wrapper: &[String],
        topic: &str,
        prefix: &str,
        dlq: &str,
        delivery: &str,
        extra: &str,
    ) -> (tokio::process::Child, SocketAddr) {
        let ops = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let config = format!(
            "[kafka]\nbrokers = \"{b}\"\ngroup_id = \"{p}group\"\ntopics = [\"{topic}\"]\ncreate_missing_topics = true\n\
             [redis]\nurl = \"{r}\"\nprefix = \"{p}\"\n[dead_letter]\ntopic = \"{dlq}\"\n\
             [system_events]\ntopic = \"\"\n[history]\ntopic = \"{history}\"\n\
             [delivery]\nallow_cidrs = [\"127.0.0.0/8\"]\nallow_ports = [\"1-65535\"]\n{delivery}[ops]\nlisten = \"{ops}\"\n[log]\nlevel = \"warn\"\n\
             {fetch_wait}{extra}",
            fetch_wait = match self.fetch_wait_ms {
                Some(ms) => format!("[kafka.consumer_properties]\n\"fetch.wait.max.ms\" = \"{ms}\"\n"),
                None => String::new(),
            },
            b = self.brokers,
            r = self.redis,
            p = prefix,
            history = self.history_topic.lock(),
        );
        let path = self.work_dir.join(format!("{prefix}herald.toml").replace(':', "-"));
        std::fs::write(&path, config).unwrap();
        // Herald's own log (warnings, e.g. each failed delivery) goes to a file.
        let log = std::fs::File::create(path.with_extension("log")).unwrap();
        *self.herald_log.lock() = path.with_extension("log");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = tokio::process::Command::new(program);
                command.args(args).arg(&self.herald);
                command
            }
            None => tokio::process::Command::new(&self.herald),
        };
        let child = command
            .arg("--config")
            .arg(&path)
            .arg("run")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("herald starts");
        (child, ops)
    }

    /// Drains a backlog through Herald with `fanout` webhooks.
    async fn herald_drain(&self, fanout: usize) -> Figures {
        let phase = if self.history_topic.lock().is_empty() {
            format!("fanout{fanout}")
        } else {
            format!("fanout{fanout}h")
        };
        let topic = self.topic(&phase, 6).await;
        let dlq = self.dead_letter_topic(&format!("{phase}-dlq")).await;
        self.backlog(&topic).await;
        let prefix = format!("bench:{}:{phase}:", self.run_id);
        self.webhooks(&prefix, fanout).await;
        self.receiver.reset();
        let (child, _ops) = self.start_herald(&topic, &prefix, &dlq);
        let want = self.events * fanout as u64;
        let Drained { cpu, rss, used, span } = self.drain(child, want).await;
        let mut out = figures([
            (
                "longest_stall_ms",
                self.receiver.max_gap_us.load(Ordering::SeqCst) as f64 / 1000.0,
            ),
            ("deliveries_per_s", want as f64 / span),
            ("events_per_s", self.events as f64 / span),
            ("cpu_s_per_1000_deliveries", cpu / want as f64 * 1000.0),
            ("peak_rss_mb", rss),
        ]);
        out.extend(used);
        out
    }

    /// Waits until Herald (`child`) has made `want` deliveries, then stops it.
    /// CPU is read from the first delivery on: start-up and the group join
    /// are not part of the rate.
    async fn drain(&self, mut child: tokio::process::Child, want: u64) -> Drained {
        let pid = child.id().unwrap();
        self.wait_while_running(&mut child, 1, Duration::from_secs(120)).await;
        let usage = self.usage(Some(pid));
        let cpu_before = cpu_seconds(pid);
        let done = self
            .wait_while_running(&mut child, want, Duration::from_secs(3600))
            .await;
        let cpu = cpu_seconds(pid) - cpu_before;
        let rss = peak_rss_mb(pid);
        let used = usage.finish();
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        let _ = child.wait().await;
        assert!(done, "Herald did not deliver {want} within the time limit");
        Drained {
            cpu,
            rss,
            used,
            span: self.receiver.span(),
        }
    }

    /// Herald's instructions per delivery, which do not drift with the
    /// neighbours as time does: a backlog of `events` drained at fan-out
    /// `fanout` by Herald run under valgrind's callgrind, instructions
    /// counted (all threads) only from the first delivery on, until every
    /// delivery was made; divided by the deliveries made meanwhile.
    async fn instructions(&self, events: u64, fanout: usize) -> Figures {
        let topic = self.topic(&format!("instructions{fanout}"), 6).await;
        let dlq = self.dead_letter_topic(&format!("instructions{fanout}-dlq")).await;
        self.produce_backlog(&topic, events, |n| body(n, None)).await;
        let prefix = format!("bench:{}:i{fanout}:", self.run_id);
        self.webhooks(&prefix, fanout).await;
        self.receiver.reset();
        let out = self.work_dir.join(format!("callgrind-{}-{fanout}.out", self.run_id));
        let wrapper = [
            "valgrind".to_owned(),
            "--tool=callgrind".to_owned(),
            "--instr-atstart=no".to_owned(),
            format!("--callgrind-out-file={}", out.display()),
        ];
        // Tens of times slower under valgrind: no delivery may time out
        // waiting for a request slot or an answer.
        let patient = "max_queue_wait = \"1h\"\nrequest_timeout = \"10m\"\n";
        let (mut child, _ops) =
            self.start_herald_wrapped(&wrapper, &topic, &prefix, &dlq, patient, "[retry]\ntiers = []\n");
        let pid = child.id().unwrap();
        let want = events * fanout as u64;
        assert!(
            self.wait_while_running(&mut child, 1, Duration::from_secs(600)).await,
            "no delivery under valgrind within 10 minutes"
        );
        callgrind_control("--instr=on", pid);
        let from = self.receiver.count.load(Ordering::SeqCst);
        let done = self
            .wait_while_running(&mut child, want, Duration::from_secs(3600))
            .await;
        callgrind_control("--instr=off", pid);
        let to = self.receiver.count.load(Ordering::SeqCst);
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        let _ = child.wait().await;
        assert!(done, "Herald under valgrind did not deliver {want}");
        let text = std::fs::read_to_string(&out).unwrap_or_else(|e| panic!("{}: {e}", out.display()));
        // `totals:` sums every part of the run (`summary:` only the last).
        let total: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("totals:"))
            .and_then(|t| t.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no totals in {}", out.display()));
        eprintln!(
            "  fan-out {fanout}: callgrind's counts in {} (callgrind_annotate reads them)",
            out.display()
        );
        let counted = to.saturating_sub(from).max(1);
        figures([
            ("fanout", fanout as f64),
            ("deliveries_counted", counted as f64),
            ("instructions_per_delivery", total / counted as f64),
        ])
    }

    async fn wait_ready(&self, child: &mut tokio::process::Child, ops: SocketAddr) {
        let ready = format!("http://{ops}/readyz");
        let deadline = Instant::now() + Duration::from_secs(120);
        while !reqwest::get(&ready)
            .await
            .map(|r| r.status().is_success())
            .unwrap_or(false)
        {
            self.check_running(child);
            assert!(Instant::now() < deadline, "Herald not ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// One webhook with `"ordering": "key"` draining `events` records over
    /// `keys` keys, against the same backlog drained by an unordered webhook
    /// in the same run (fan-out 1 both, a receiver that answers at once).
    async fn ordered(&self, events: u64, keys: u64) -> Figures {
        let mut out = figures([("events", events as f64), ("keys", keys as f64)]);
        for ordered in [false, true] {
            let label = if ordered { "ordered" } else { "unordered" };
            let topic = self.topic(&format!("{label}{keys}"), 6).await;
            let dlq = self.dead_letter_topic(&format!("{label}{keys}-dlq")).await;
            self.produce_keyed(&topic, events, |n| format!("k{}", n % keys), |n| body(n, None))
                .await;
            let prefix = format!("bench:{}:{label}{keys}:", self.run_id);
            let client = redis::Client::open(self.redis.as_str()).unwrap();
            let store = herald::subscriptions::store::SubscriptionStore::connect(&client, &prefix)
                .await
                .unwrap();
            let url = format!("http://{}/{label}", self.receiver_addr);
            let mut w = herald::webhook::Webhook::new("bench-0", "bench 0", &url, &["bench.*"]);
            if ordered {
                w.ordering = Some(herald::routing::ordering::Ordering::RecordKey);
            }
            store.put(&w).await.unwrap();
            self.receiver.reset();
            let (child, _ops) = self.start_herald(&topic, &prefix, &dlq);
            let Drained { cpu, span, .. } = self.drain(child, events).await;
            out.insert(format!("{label}_deliveries_per_s"), events as f64 / span);
            out.insert(
                format!("{label}_cpu_s_per_1000_deliveries"),
                cpu / events as f64 * 1000.0,
            );
        }
        let ratio = out["ordered_deliveries_per_s"] / out["unordered_deliveries_per_s"];
        out.insert("ordered_to_unordered_ratio".into(), ratio);
        out
    }

    /// Memory with a large backlog and many webhooks: `events` records spread
    /// over `webhooks` event types, webhook `i` subscribed to type `i`
    /// (fan-out 1, every webhook busy). Herald starts only when the whole
    /// backlog is in the broker; its peak RSS is read when it is drained.
    async fn large_backlog(&self, events: u64, webhooks: usize) -> Figures {
        let topic = self.topic("large", 6).await;
        let dlq = self.dead_letter_topic("large-dlq").await;
        let prefix = format!("bench:{}:large:", self.run_id);
        self.webhooks_with(&prefix, webhooks, "large", |i| format!("bench.e{i}"))
            .await;
        let produced_in = self.typed_backlog(&topic, events, webhooks).await;
        self.receiver.reset();
        let (mut child, ops) = self.start_herald(&topic, &prefix, &dlq);
        let pid = child.id().unwrap();
        self.wait_ready(&mut child, ops).await;
        let rss_ready = current_rss_mb(pid);
        let Drained { cpu, rss, used, span } = self.drain(child, events).await;
        let mut out = figures([
            ("events", events as f64),
            ("webhooks", webhooks as f64),
            ("produce_s", produced_in),
            ("deliveries_per_s", events as f64 / span),
            ("cpu_s_per_1000_deliveries", cpu / events as f64 * 1000.0),
            ("rss_ready_mb", rss_ready),
            ("peak_rss_mb", rss),
        ]);
        out.extend(used);
        out
    }

    /// `events` records on `topic`, event `n` of type `bench.e{n % types}`;
    /// how long producing them took, in seconds.
    async fn typed_backlog(&self, topic: &str, events: u64, types: usize) -> f64 {
        self.produce_backlog(topic, events, |n| {
            typed_body(&format!("bench.e{}", n % types as u64), n, None)
        })
        .await
    }

    /// Fan-out 1 over `hosts` HTTPS receivers, each its own address, webhook
    /// `i` at receiver `i` subscribed to type `bench.e{i}`; then the same
    /// events over plain HTTP, every webhook at the one receiver of the
    /// other phases.
    async fn tls_hosts(&self, events: u64, hosts: usize) -> Figures {
        let app = axum::Router::new().fallback(receive).with_state(self.receiver.clone());
        let receivers = tls_receivers::TlsReceivers::start(hosts, app, &self.work_dir).await;
        let pattern = |i: usize| format!("bench.e{i}");
        let mut out = Figures::new();
        for tls in [true, false] {
            let name = if tls { "tls" } else { "plain" };
            let topic = self.topic(&format!("hosts-{name}"), 6).await;
            let dlq = self.dead_letter_topic(&format!("hosts-{name}-dlq")).await;
            let prefix = format!("bench:{}:hosts-{name}:", self.run_id);
            if tls {
                let addrs = &receivers.addrs;
                self.webhooks_to(&prefix, hosts, |i| format!("https://{}/tls/{i}", addrs[i]), pattern)
                    .await;
            } else {
                self.webhooks_with(&prefix, hosts, "plain", pattern).await;
            }
            self.typed_backlog(&topic, events, hosts).await;
            self.receiver.reset();
            let delivery = if tls {
                format!("ca_file = \"{}\"\n", receivers.ca_file.display())
            } else {
                String::new()
            };
            let (mut child, ops) =
                self.start_herald_delivering(&topic, &prefix, &dlq, &delivery, "[retry]\ntiers = []\n");
            self.wait_ready(&mut child, ops).await;
            let Drained { cpu, rss, span, .. } = self.drain(child, events).await;
            out.insert(format!("{name}_deliveries_per_s"), events as f64 / span);
            out.insert(
                format!("{name}_cpu_s_per_1000_deliveries"),
                cpu / events as f64 * 1000.0,
            );
            out.insert(format!("{name}_peak_rss_mb"), rss);
        }
        let c = &receivers.counts;
        out.insert("hosts".into(), hosts as f64);
        out.insert("events".into(), events as f64);
        out.insert(
            "tls_to_plain_ratio".into(),
            out["tls_deliveries_per_s"] / out["plain_deliveries_per_s"],
        );
        out.insert("handshakes_full".into(), c.full.load(Ordering::Relaxed) as f64);
        out.insert("handshakes_resumed".into(), c.resumed.load(Ordering::Relaxed) as f64);
        out.insert("handshakes_refused".into(), c.refused.load(Ordering::Relaxed) as f64);
        out.insert(
            "connections_open_at_most".into(),
            c.most_open.load(Ordering::Relaxed) as f64,
        );
        out
    }

    /// What retries cost while they wait: every delivery fails (HTTP 500)
    /// into a one-hour tier, then Herald's CPU is read over `seconds` with
    /// all of them waiting, against the same span with none.
    async fn waiting_retries(&self, count: u64, seconds: u64) -> Figures {
        let topic = self.topic("waiting", 6).await;
        let dlq = self.dead_letter_topic("waiting-dlq").await;
        let tier = self.topic("waiting-retry-1h", 6).await;
        let prefix = format!("bench:{}:waiting:", self.run_id);
        self.webhooks_with(&prefix, 1, "fail", |_| "bench.*".to_owned()).await;
        let extra = format!("[retry]\ntiers = [{{ topic = \"{tier}\", delay = \"1h\" }}]\njitter = 0.0\n");
        let (mut child, ops) = self.start_herald_with(&topic, &prefix, &dlq, &extra);
        let pid = child.id().unwrap();
        self.wait_ready(&mut child, ops).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let idle = self.usage(Some(pid));
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let idle = idle.finish();
        self.receiver.reset();
        for n in 0..count {
            let payload = body(n, None);
            let key = n.to_string();
            let _ = self
                .producer
                .send_result(FutureRecord::to(&topic).key(&key).payload(&payload));
        }
        self.producer.flush(Timeout::After(Duration::from_secs(60))).unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.receiver.failed.load(Ordering::SeqCst) < count && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Let the failures reach the tier and Herald settle on the wait.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let waiting = self.usage(Some(pid));
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        let waiting = waiting.finish();
        let failed = self.receiver.failed.load(Ordering::SeqCst);
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status();
        let _ = child.wait().await;
        figures([
            ("retries_waiting", failed as f64),
            ("seconds", seconds as f64),
            ("herald_cores_idle", idle["herald_cores"]),
            ("herald_cores_waiting", waiting["herald_cores"]),
        ])
    }

    /// `count` events `writer(n)` puts on `topic`, pipelined.
    async fn produce(
        &self,
        topic: &str,
        count: u64,
        record: impl Fn(u64) -> (Vec<u8>, rdkafka::message::OwnedHeaders),
    ) {
        let mut pending = futures::stream::FuturesUnordered::new();
        for n in 0..count {
            let (payload, headers) = record(n);
            let key = n.to_string();
            let r = FutureRecord::to(topic).key(&key).payload(&payload).headers(headers);
            pending.push(self.producer.send_result(r).map_err(|(e, _)| e).unwrap());
            if pending.len() >= 2000 {
                pending.next().await;
            }
        }
        while pending.next().await.is_some() {}
        self.producer.flush(Timeout::After(Duration::from_secs(60))).unwrap();
    }

    /// A tier partition holding `count` retries that are all due, drained
    /// by Herald, against the source path draining `count` events from one
    /// partition (fan-out 1, same webhook) in the same run.
    async fn due_retries(&self, count: u64) -> Figures {
        use herald::retry::codec::{self, Binding, DeliveryContext, Destination, FailureRecord, Size};
        let source = self.topic("due-source", 1).await;
        let dlq = self.dead_letter_topic("due-dlq").await;
        let tier = self.topic("due-retry-1h", 1).await;
        let redrive = self.topic("due-redrive", 1).await;
        let prefix = format!("bench:{}:due:", self.run_id);
        self.webhooks_with(&prefix, 1, "due", |_| "bench.*".to_owned()).await;
        let extra = format!(
            "[retry]\ntiers = [{{ topic = \"{tier}\", delay = \"1h\" }}]\njitter = 0.0\nredrive_topic = \"{redrive}\"\n"
        );
        self.produce(&source, count, |n| {
            (body(n, None), rdkafka::message::OwnedHeaders::new())
        })
        .await;
        self.receiver.reset();
        let (child, _) = self.start_herald_with(&source, &prefix, &dlq, &extra);
        let from_source = self.drain(child, count).await;

        // Written as Herald writes a failed delivery's retry, due a minute
        // ago, bound to the webhook as it was created.
        let client = redis::Client::open(self.redis.as_str()).unwrap();
        let webhook = herald::subscriptions::store::SubscriptionStore::connect(&client, &prefix)
            .await
            .unwrap()
            .get("bench-0")
            .await
            .unwrap()
            .expect("the webhook just stored");
        let meta = herald::event::EventMeta {
            event_type: "bench.tick".into(),
            event_id: None,
            event_time: None,
            tenant: None,
            content_type: "application/json".into(),
            forward_headers: Vec::new(),
            id_source: None,
        };
        let due = SystemTime::now() - Duration::from_secs(60);
        let retry = |n: u64| {
            let record = herald::event::SourceRecord {
                topic: source.as_str().into(),
                partition: 0,
                offset: n as i64,
                timestamp_ms: None,
                key: None,
                value: body(n, None).into(),
                headers: Vec::new(),
            };
            let delivery_id = format!("msg_due_{n}");
            let letter = FailureRecord {
                destination: Destination::Tier { tier: 0, due_at: due },
                reason: herald::retry::reason::Reason::DeliveryFailed,
                detail: "endpoint answered HTTP 500".into(),
                record: &record,
                meta: Some(&meta),
                delivery: Some(DeliveryContext {
                    binding: Binding::of(&webhook),
                    delivery_id: &delivery_id,
                    attempts: 1,
                    last_attempt: None,
                    first_attempt_at: None,
                    previous_history: None,
                    tier: None,
                    ordering: None,
                }),
            };
            let headers = codec::encode(&letter, due - Duration::from_secs(3600), Size::Full);
            (record.value.to_vec(), headers)
        };
        self.produce(&tier, count, retry).await;
        self.receiver.reset();
        let (child, _) = self.start_herald_with(&source, &prefix, &dlq, &extra);
        let from_tier = self.drain(child, count).await;
        let rate = |d: &Drained| count as f64 / d.span;
        figures([
            ("retries", count as f64),
            ("source_deliveries_per_s", rate(&from_source)),
            ("tier_deliveries_per_s", rate(&from_tier)),
            ("tier_to_source_ratio", rate(&from_tier) / rate(&from_source)),
            ("source_cpu_s_per_1000", from_source.cpu / count as f64 * 1000.0),
            ("tier_cpu_s_per_1000", from_tier.cpu / count as f64 * 1000.0),
            ("tier_peak_rss_mb", from_tier.rss),
        ])
    }

    /// Open-loop latency of Herald at `rate` events/s for `seconds`, fan-out 1.
    async fn latency(&self, rate: f64, seconds: u64) -> Figures {
        let topic = self.topic(&format!("latency{}", rate as u64), 6).await;
        let dlq = self.dead_letter_topic(&format!("latency{}-dlq", rate as u64)).await;
        let prefix = format!("bench:{}:l{}:", self.run_id, rate as u64);
        self.webhooks(&prefix, 1).await;
        let (mut child, ops) = self.start_herald(&topic, &prefix, &dlq);
        self.wait_ready(&mut child, ops).await;
        let figures = self.open_loop(&topic, rate, seconds).await;
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(child.id().unwrap().to_string())
            .status();
        let _ = child.wait().await;
        figures
    }

    /// Open-loop latency of the null pipeline (c) at `rate` events/s for
    /// `seconds`: the floor Herald's latency is read against. Its consumer
    /// is assigned the topic's partitions (no group join to wait for) and
    /// POSTs each record as it comes, at most `CONCURRENCY` at once.
    async fn null_latency(&self, rate: f64, seconds: u64) -> Figures {
        let topic = self.topic(&format!("null-latency{}", rate as u64), 6).await;
        let consumer = self.null_consumer("null-latency");
        let mut partitions = rdkafka::TopicPartitionList::new();
        for p in 0..6 {
            partitions
                .add_partition_offset(&topic, p, rdkafka::Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&partitions).unwrap();
        let sender = NullSender::new(self.receiver_addr);
        let pipeline = tokio::spawn(async move {
            loop {
                let m = consumer.recv().await.unwrap();
                sender.send(m.payload().unwrap_or_default()).await;
            }
        });
        let figures = self.open_loop(&topic, rate, seconds).await;
        pipeline.abort();
        figures
    }

    /// Publishes `rate` events/s to `topic` for `seconds`, each on time
    /// whatever the arrivals (open loop), and reads the publish-to-arrival
    /// latencies at the receiver.
    async fn open_loop(&self, topic: &str, rate: f64, seconds: u64) -> Figures {
        // One record on each partition first, and the open loop starts once
        // all have arrived: the consumer (Herald's or the null pipeline's)
        // has then looked up every partition's position, which the first
        // records of a fresh assignment would otherwise wait for.
        self.receiver.reset();
        for p in 0..6i32 {
            let payload = body(u64::from(p.unsigned_abs()), None);
            let record = FutureRecord::<(), _>::to(topic).partition(p).payload(&payload);
            self.producer.send(record, Timeout::Never).await.unwrap();
        }
        assert!(
            self.receiver.wait(6, Duration::from_secs(60)).await,
            "the consumer never fetched the warm-up records"
        );
        self.receiver.reset();
        let total = (rate * seconds as f64) as u64;
        let interval = Duration::from_secs_f64(1.0 / rate);
        let start = tokio::time::Instant::now();
        for n in 0..total {
            tokio::time::sleep_until(start + interval.mul_f64(n as f64)).await;
            let payload = body(n, Some(now_us()));
            let key = n.to_string();
            let record = FutureRecord::to(topic).key(&key).payload(&payload);
            let _ = self.producer.send_result(record);
        }
        self.receiver.wait(total, Duration::from_secs(120)).await;
        let mut l = self.receiver.latencies_us.lock().clone();
        l.sort_unstable();
        let q = |p: f64| l[((l.len() as f64 * p) as usize).min(l.len() - 1)] as f64 / 1000.0;
        figures([
            ("rate_per_s", rate),
            ("p50_ms", q(0.50)),
            ("p95_ms", q(0.95)),
            ("p99_ms", q(0.99)),
            ("max_ms", *l.last().unwrap() as f64 / 1000.0),
            ("delivered", l.len() as f64),
        ])
    }

    /// Herald's latency against the null pipeline's at `rate`: Herald's
    /// figures, with the null pipeline's beside them as `null_*`.
    async fn latency_against_null(&self, rate: f64, null: Figures) -> Figures {
        let mut herald = self.latency(rate, LATENCY_SECONDS).await;
        for (k, v) in null {
            if k != "rate_per_s" {
                herald.insert(format!("null_{k}"), v);
            }
        }
        herald
    }
}

/// How long each open-loop latency measurement publishes.
const LATENCY_SECONDS: u64 = 10;

/// The null pipeline's p99 under which a rate counts as unloaded for the
/// latency target (Herald's p99 at most 5 ms above the null pipeline's, at a
/// rate where the latter is under 10 ms).
const UNLOADED_P99_MS: f64 = 10.0;

/// The rates tried for the latency target, highest first: a quarter of
/// fan-out 1's rate, halved until the null pipeline's p99 is under
/// `UNLOADED_P99_MS` (never below 100/s), each rounded to a hundred.
fn latency_rates(fanout1_events_per_s: f64) -> Vec<f64> {
    let mut rates = Vec::new();
    let mut rate = fanout1_events_per_s / 4.0;
    while rates.len() < 5 {
        let rounded = ((rate / 100.0).round() * 100.0).max(100.0);
        if rates.last() != Some(&rounded) {
            rates.push(rounded);
        }
        if rounded <= 100.0 {
            break;
        }
        rate /= 2.0;
    }
    rates
}

/// Sends `option` (`--instr=on` or `--instr=off`) to the callgrind run as
/// `pid`, and waits for it to be taken.
fn callgrind_control(option: &str, pid: u32) {
    let status = std::process::Command::new("callgrind_control")
        .arg(option)
        .arg(pid.to_string())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("callgrind_control runs (valgrind is installed)");
    assert!(status.success(), "callgrind_control {option} {pid}: {status}");
}

fn proc_field(pid: u32, file: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default()
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = proc_field(pid, "stat");
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 =
        f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0) + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn peak_rss_mb(pid: u32) -> f64 {
    status_mb(pid, "VmHWM:")
}

fn current_rss_mb(pid: u32) -> f64 {
    status_mb(pid, "VmRSS:")
}

fn status_mb(pid: u32, field: &str) -> f64 {
    proc_field(pid, "status")
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut brokers = String::new();
    let mut herald = PathBuf::from("target/release/herald");
    let (mut events, mut large_events, mut large_webhooks, mut waiting) =
        (20_000u64, 1_000_000u64, 10_000usize, 1_000u64);
    let (mut json_out, mut broker_pid, mut engine) = (None, None, "unknown".to_owned());
    let mut redis = "redis://127.0.0.1:6379/0".to_string();
    let mut work_dir = std::env::temp_dir();
    let mut latency = true;
    let mut due_retries = 100_000u64;
    let (mut tls_hosts, mut tls_events) = (1_000usize, 100_000u64);
    let mut ordered_events = 20_000u64;
    let mut instruction_events = 0u64;
    let mut history_topic = false;
    // Unset: the client's default, with which Apache Kafka answers a fetch as
    // soon as data arrives. (A broker that holds an empty fetch for the whole
    // wait, as Tansu did, needs it short.)
    let mut fetch_wait_ms: Option<u64> = None;
    while let Some(a) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{a} needs a value"));
        match a.as_str() {
            "--brokers" => brokers = value(),
            "--broker-pid" => broker_pid = Some(value().parse().unwrap()),
            "--engine" => engine = value(),
            "--redis" => redis = value(),
            "--herald" => herald = PathBuf::from(value()),
            "--events" => events = value().parse().unwrap(),
            "--large-events" => large_events = value().parse().unwrap(),
            "--large-webhooks" => large_webhooks = value().parse().unwrap(),
            "--waiting-retries" => waiting = value().parse().unwrap(),
            "--due-retries" => due_retries = value().parse().unwrap(),
            "--tls-hosts" => tls_hosts = value().parse().unwrap(),
            "--tls-events" => tls_events = value().parse().unwrap(),
            "--ordered-events" => ordered_events = value().parse().unwrap(),
            "--instructions" => instruction_events = value().parse().unwrap(),
            "--no-latency" => latency = false,
            "--history-topic" => history_topic = true,
            "--json" => json_out = Some(PathBuf::from(value())),
            "--work-dir" => work_dir = PathBuf::from(value()),
            "--fetch-wait-ms" => fetch_wait_ms = Some(value().parse().unwrap()),
            other => panic!("unknown argument {other}"),
        }
    }
    let receiver = Receiver::default();
    let app = axum::Router::new().fallback(receive).with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "2")
        .create()
        .unwrap();
    let bench = Bench {
        brokers,
        redis,
        herald,
        events,
        receiver,
        receiver_addr,
        producer,
        run_id: format!("{:08x}", rand::random::<u32>()),
        fetch_wait_ms,
        broker_pid,
        work_dir,
        herald_log: Mutex::new(PathBuf::new()),
        history_topic: Mutex::new(String::new()),
    };

    eprintln!("ceilings ({events} records of 1 KB, concurrency {CONCURRENCY})...");
    let (http, http_use) = bench.http_ceiling().await;
    let ceiling_topic = bench.topic("ceiling", 6).await;
    let produce = bench.backlog(&ceiling_topic).await;
    let (broker, broker_use) = bench.broker_ceiling(&ceiling_topic).await;
    let (null, null_use) = bench.null_pipeline(&ceiling_topic).await;
    let tightest = http.min(broker).min(null);
    eprintln!("Herald, fan-out 1...");
    let f1 = bench.herald_drain(1).await;
    eprintln!("Herald, fan-out 10...");
    let f10 = bench.herald_drain(10).await;
    let with_history_topic = if history_topic {
        eprintln!("Herald, fan-out 1 and 10 with history.topic on...");
        *bench.history_topic.lock() = format!("bench-{}-attempts", bench.run_id);
        let figures = [bench.herald_drain(1).await, bench.herald_drain(10).await];
        bench.history_topic.lock().clear();
        Some(figures)
    } else {
        None
    };
    // The rates tried for the latency target, and the null pipeline's p99 at each.
    let mut ladder: Vec<(f64, f64)> = Vec::new();
    let latencies = if latency {
        let mut chosen = None;
        for rate in latency_rates(f1["events_per_s"]) {
            eprintln!("null pipeline latency at {rate:.0}/s...");
            let null = bench.null_latency(rate, LATENCY_SECONDS).await;
            let unloaded = null["p99_ms"] < UNLOADED_P99_MS;
            ladder.push((rate, null["p99_ms"]));
            chosen = Some((rate, null));
            if unloaded {
                break;
            }
        }
        let (rate, null) = chosen.unwrap();
        eprintln!("Herald latency at {rate:.0}/s, then the null pipeline's and Herald's at 50/s...");
        let loaded = bench.latency_against_null(rate, null).await;
        let null_light = bench.null_latency(50.0, LATENCY_SECONDS).await;
        vec![loaded, bench.latency_against_null(50.0, null_light).await]
    } else {
        Vec::new()
    };
    let waiting = if waiting > 0 {
        eprintln!("{waiting} retries waiting in a delay topic...");
        Some(bench.waiting_retries(waiting, 10).await)
    } else {
        None
    };
    let due = if due_retries > 0 {
        eprintln!("a tier partition of {due_retries} due retries, against the source path...");
        Some(bench.due_retries(due_retries).await)
    } else {
        None
    };
    let large = if large_events > 0 {
        eprintln!("backlog of {large_events} events for {large_webhooks} webhooks...");
        Some(bench.large_backlog(large_events, large_webhooks).await)
    } else {
        None
    };
    let hosts = if tls_hosts > 0 && tls_events > 0 {
        eprintln!("{tls_events} events to {tls_hosts} HTTPS receivers, then over plain HTTP to one...");
        Some(bench.tls_hosts(tls_events, tls_hosts).await)
    } else {
        None
    };
    let ordered = if ordered_events > 0 {
        eprintln!("{ordered_events} keyed events to an ordered webhook and an unordered one, 1,000 keys, then one...");
        vec![
            bench.ordered(ordered_events, 1_000).await,
            bench.ordered(ordered_events, 1).await,
        ]
    } else {
        Vec::new()
    };

    let instructions = if instruction_events > 0 {
        eprintln!("{instruction_events} events under callgrind, fan-out 1 and 10 (instructions per delivery)...");
        vec![
            bench.instructions(instruction_events, 1).await,
            bench.instructions(instruction_events, 10).await,
        ]
    } else {
        Vec::new()
    };

    let row = |name: String, value: String, note: String| println!("{name:<46} {value:>14}   {note}");
    println!(
        "\nHerald benchmark: {events} events of 1 KB; receiver on 127.0.0.1; {} cores; broker: {engine}; fetch.wait.max.ms {}",
        num_cpus(),
        fetch_wait_ms.map_or(format!("{HERALD_FETCH_WAIT_MS} (Herald's default)"), |ms| ms.to_string())
    );
    row(
        "ceiling (a) HTTP receiver alone, req/s".into(),
        format!("{http:.0}"),
        String::new(),
    );
    row(
        "broker produce, records/s".into(),
        format!("{produce:.0}"),
        String::new(),
    );
    row(
        "ceiling (b) broker alone, records/s".into(),
        format!("{broker:.0}"),
        String::new(),
    );
    row(
        "ceiling (c) null pipeline, records/s".into(),
        format!("{null:.0}"),
        String::new(),
    );
    for (name, r) in [("fan-out 1", &f1), ("fan-out 10", &f10)] {
        let d = r["deliveries_per_s"];
        row(
            format!("Herald {name}, deliveries/s"),
            format!("{d:.0}"),
            format!(
                "{:.0}% of null pipeline, {:.0}% of tightest ceiling",
                100.0 * d / null,
                100.0 * d / tightest
            ),
        );
        row(
            format!("Herald {name}, events/s"),
            format!("{:.0}", r["events_per_s"]),
            String::new(),
        );
        row(
            format!("Herald {name}, CPU s per 1,000 deliveries"),
            format!("{:.3}", r["cpu_s_per_1000_deliveries"]),
            String::new(),
        );
        row(
            format!("Herald {name}, peak RSS MB"),
            format!("{:.1}", r["peak_rss_mb"]),
            String::new(),
        );
        row(
            format!("Herald {name}, longest stall ms"),
            format!("{:.1}", r["longest_stall_ms"]),
            "longest time without an arrival".into(),
        );
    }
    if let Some(with) = &with_history_topic {
        for ((name, off), on) in [("fan-out 1", &f1), ("fan-out 10", &f10)].into_iter().zip(with) {
            row(
                format!("Herald {name} with history.topic, deliveries/s"),
                format!("{:.0}", on["deliveries_per_s"]),
                format!(
                    "{:.0}% of the same without it",
                    100.0 * on["deliveries_per_s"] / off["deliveries_per_s"]
                ),
            );
            row(
                format!("Herald {name} with history.topic, CPU s per 1,000"),
                format!("{:.3}", on["cpu_s_per_1000_deliveries"]),
                format!(
                    "{:+.0}% against the same without it ({:.3})",
                    100.0 * (on["cpu_s_per_1000_deliveries"] / off["cpu_s_per_1000_deliveries"] - 1.0),
                    off["cpu_s_per_1000_deliveries"]
                ),
            );
        }
    }
    if !ladder.is_empty() {
        let tried: Vec<String> = ladder
            .iter()
            .map(|(rate, p99)| format!("{rate:.0}/s {p99:.1}"))
            .collect();
        row(
            "null pipeline p99 ms by rate".into(),
            String::new(),
            match ladder.last() {
                Some((_, p99)) if *p99 < UNLOADED_P99_MS => format!(
                    "{} (latency measured at the first under {UNLOADED_P99_MS} ms)",
                    tried.join(", ")
                ),
                _ => format!(
                    "{} (none under {UNLOADED_P99_MS} ms: latency measured at the lowest)",
                    tried.join(", ")
                ),
            },
        );
    }
    for l in &latencies {
        row(
            format!("latency at {:.0}/s: p50/p95/p99/max ms", l["rate_per_s"]),
            format!(
                "{:.1}/{:.1}/{:.1}/{:.1}",
                l["p50_ms"], l["p95_ms"], l["p99_ms"], l["max_ms"]
            ),
            format!(
                "null pipeline {:.1}/{:.1}/{:.1}/{:.1}; p99 {:+.1} ms",
                l["null_p50_ms"],
                l["null_p95_ms"],
                l["null_p99_ms"],
                l["null_max_ms"],
                l["p99_ms"] - l["null_p99_ms"]
            ),
        );
    }
    if let Some(w) = &waiting {
        row(
            format!("Herald CPU, idle / {:.0} retries waiting", w["retries_waiting"]),
            format!("{:.4}/{:.4}", w["herald_cores_idle"], w["herald_cores_waiting"]),
            format!("cores, over {:.0} s each", w["seconds"]),
        );
    }
    if let Some(d) = &due {
        row(
            format!("{:.0} due retries, one tier partition, deliveries/s", d["retries"]),
            format!("{:.0}", d["tier_deliveries_per_s"]),
            format!(
                "{:.0}% of the source path's {:.0}/s (one partition, same run)",
                100.0 * d["tier_to_source_ratio"],
                d["source_deliveries_per_s"]
            ),
        );
        row(
            "due retries, CPU s per 1,000 deliveries".into(),
            format!("{:.3}", d["tier_cpu_s_per_1000"]),
            format!("{:.3} on the source path", d["source_cpu_s_per_1000"]),
        );
    }
    if let Some(l) = &large {
        let what = format!("{:.0} events, {:.0} webhooks", l["events"], l["webhooks"]);
        row(
            format!("{what}: peak RSS MB"),
            format!("{:.1}", l["peak_rss_mb"]),
            format!("{:.1} MB when ready", l["rss_ready_mb"]),
        );
        row(
            format!("{what}: deliveries/s"),
            format!("{:.0}", l["deliveries_per_s"]),
            String::new(),
        );
    }

    if let Some(h) = &hosts {
        let what = format!("{:.0} events to {:.0} HTTPS hosts", h["events"], h["hosts"]);
        row(
            format!("{what}: deliveries/s"),
            format!("{:.0}", h["tls_deliveries_per_s"]),
            format!(
                "{:.0}% of the same over plain HTTP to one host ({:.0}/s)",
                100.0 * h["tls_to_plain_ratio"],
                h["plain_deliveries_per_s"]
            ),
        );
        row(
            format!("{what}: CPU s per 1,000 deliveries"),
            format!("{:.3}", h["tls_cpu_s_per_1000_deliveries"]),
            format!("{:.3} over plain HTTP", h["plain_cpu_s_per_1000_deliveries"]),
        );
        row(
            format!("{what}: TLS handshakes full/resumed"),
            format!("{:.0}/{:.0}", h["handshakes_full"], h["handshakes_resumed"]),
            format!(
                "{:.0} refused; at most {:.0} connections open at once",
                h["handshakes_refused"], h["connections_open_at_most"]
            ),
        );
        row(
            format!("{what}: peak RSS MB"),
            format!("{:.1}", h["tls_peak_rss_mb"]),
            format!("{:.1} over plain HTTP", h["plain_peak_rss_mb"]),
        );
    }

    for o in &ordered {
        let what = format!(
            "ordered webhook, {:.0} key{}",
            o["keys"],
            if o["keys"] == 1.0 { "" } else { "s" }
        );
        row(
            format!("{what}: deliveries/s"),
            format!("{:.0}", o["ordered_deliveries_per_s"]),
            format!(
                "{:.0}% of the same events unordered ({:.0}/s)",
                100.0 * o["ordered_to_unordered_ratio"],
                o["unordered_deliveries_per_s"]
            ),
        );
        row(
            format!("{what}: CPU s per 1,000 deliveries"),
            format!("{:.3}", o["ordered_cpu_s_per_1000_deliveries"]),
            format!("{:.3} unordered", o["unordered_cpu_s_per_1000_deliveries"]),
        );
    }

    for i in &instructions {
        row(
            format!("Herald fan-out {:.0}, instructions per delivery", i["fanout"]),
            format!("{:.0}", i["instructions_per_delivery"]),
            format!("callgrind, over {:.0} deliveries", i["deliveries_counted"]),
        );
    }

    println!("\nwhere the CPU went (cores busy; the machine has {})", num_cpus());
    println!(
        "{:<22} {:>9} {:>8} {:>8} {:>8}",
        "phase", "machine", "herald", "broker", "bench"
    );
    let phases: Vec<(&str, &Figures)> = [
        ("(a) HTTP alone", Some(&http_use)),
        ("(b) broker alone", Some(&broker_use)),
        ("(c) null pipeline", Some(&null_use)),
        ("Herald fan-out 1", Some(&f1)),
        ("Herald fan-out 10", Some(&f10)),
        ("large backlog", large.as_ref()),
    ]
    .into_iter()
    .filter_map(|(n, f)| f.map(|f| (n, f)))
    .collect();
    for (name, f) in &phases {
        let cores = |k: &str| f.get(k).map_or("-".to_owned(), |v| format!("{v:.2}"));
        println!(
            "{name:<22} {:>8.0}% {:>8} {:>8} {:>8}",
            f["machine_busy_pct"],
            cores("herald_cores"),
            cores("broker_cores"),
            cores("bench_cores")
        );
    }
    let result = json!({
        "engine": engine,
        "cores": num_cpus(),
        "events": events,
        "fetch_wait_max_ms": fetch_wait_ms,
        "record_bytes": 1024,
        "concurrency": CONCURRENCY,
        "ceilings": {"http_req_per_s": http, "broker_produce_per_s": produce, "broker_consume_per_s": broker, "null_pipeline_per_s": null},
        "ceiling_usage": {"http": http_use, "broker": broker_use, "null_pipeline": null_use},
        "herald": {"fanout_1": f1, "fanout_10": f10},
        "herald_history_topic": with_history_topic.as_ref().map(|[f1, f10]| json!({"fanout_1": f1, "fanout_10": f10})),
        "latency": latencies,
        "latency_ladder": ladder.iter().map(|(rate, p99)| json!({"rate_per_s": rate, "null_p99_ms": p99})).collect::<Vec<_>>(),
        "waiting_retries": waiting,
        "due_retries": due,
        "large_backlog": large,
        "tls_hosts": hosts,
        "ordered": ordered,
        "instructions": instructions,
    });
    if let Some(path) = json_out {
        std::fs::write(&path, serde_json::to_string_pretty(&result).unwrap()).unwrap();
        eprintln!("wrote {}", path.display());
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

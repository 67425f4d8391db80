//! Test helpers: real broker, real Redis, real HTTP receivers on 127.0.0.1.
//!
//! Every test gets its own topics, consumer group and Redis key prefix from
//! [`TestEnv::new`], so tests run in parallel. The broker address comes from
//! `HERALD_TEST_BROKERS` (set by `scripts/test`, which starts one).

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use herald::config::Config;
use herald::subscriptions::store::SubscriptionStore;
use herald::webhook::Webhook;
use herald::Application;
use parking_lot::Mutex;
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Brokers chosen by the test binary (the cluster tests), over
/// `HERALD_TEST_BROKERS`.
static BROKERS: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Points every helper of this test binary at `brokers`.
#[allow(dead_code)] // the cluster tests' (tests/cluster)
pub fn use_brokers(brokers: &str) {
    let chosen = BROKERS.get_or_init(|| brokers.to_owned());
    assert_eq!(chosen, brokers, "one set of brokers per test binary");
}

pub fn brokers() -> String {
    if let Some(chosen) = BROKERS.get() {
        return chosen.clone();
    }
    std::env::var("HERALD_TEST_BROKERS").expect(
        "HERALD_TEST_BROKERS is not set: run the suite with scripts/test, which starts a broker, \
         or point it at a Kafka-compatible broker",
    )
}

pub fn redis_url() -> String {
    std::env::var("HERALD_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379/0".into())
}

/// The Python interpreter with the `standardwebhooks` library.
pub fn python() -> String {
    std::env::var("HERALD_TEST_PYTHON").expect("HERALD_TEST_PYTHON is not set: run the suite with scripts/test")
}

pub fn unique(name: &str) -> String {
    format!("{name}-{:08x}", rand::random::<u32>())
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Fast session timeouts for the classic group protocol (a member that
/// dies is noticed within seconds).
const CLASSIC_GROUP_TIMINGS: &str = "\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n";

/// The overlay line choosing KIP-848's consumer group protocol.
pub const CONSUMER_PROTOCOL: &str = "group_protocol = \"consumer\"";

/// Isolated names and configuration for one test.
pub struct TestEnv {
    pub topics: Vec<String>,
    pub group: String,
    pub prefix: String,
    pub dlq: String,
    /// The redrive topic (manual retries, replays).
    pub redrive: String,
    /// The system events topic.
    pub system: String,
    pub redis_url: String,
    /// TOML overlaid on the defaults (tests may append to it).
    pub overlay: String,
    /// Retry tiers: (topic, delay in ms, max_delay in ms). None by default:
    /// failures go straight to the dead-letter topic.
    pub tiers: Vec<(String, u64, Option<u64>)>,
}

/// A retry tier of a test: how long a failed delivery waits in it, and
/// optionally the longest it may wait when the endpoint asks for more
/// (`Retry-After`), in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Tier {
    pub delay_ms: u64,
    pub max_delay_ms: Option<u64>,
}

impl Tier {
    pub const fn after_ms(delay_ms: u64) -> Tier {
        Tier {
            delay_ms,
            max_delay_ms: None,
        }
    }

    pub const fn at_most_ms(self, max_delay_ms: u64) -> Tier {
        Tier {
            max_delay_ms: Some(max_delay_ms),
            ..self
        }
    }
}

impl TestEnv {
    /// A connection to the test's Redis, to write as another service would.
    pub async fn redis(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.redis_url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Creates `topics` (with `partitions` each) and a dead-letter topic.
    pub async fn new(name: &str, topics: &[&str], partitions: i32) -> TestEnv {
        let id = unique(name);
        let topics: Vec<String> = topics.iter().map(|t| format!("{id}.{t}")).collect();
        let dlq = format!("{id}.dlq");
        let redrive = format!("{id}.redrive");
        let system = format!("{id}.system");
        let mut all = topics.clone();
        all.push(system.clone());
        create_topics(&all, partitions).await;
        // Kept as long as Herald needs (it checks at start).
        create_topics_keeping(std::slice::from_ref(&dlq), partitions, Duration::from_secs(30 * 86_400)).await;
        create_topics_keeping(std::slice::from_ref(&redrive), partitions, Duration::from_secs(86_400)).await;
        let env = TestEnv {
            group: format!("{id}-group"),
            prefix: format!("test:{id}:"),
            redis_url: redis_url(),
            overlay: String::new(),
            tiers: Vec::new(),
            system,
            dlq,
            redrive,
            topics,
        };
        env
    }

    /// Adds these retry tiers, their topics of one partition each.
    pub async fn with_tiers(self, tiers: &[Tier]) -> TestEnv {
        self.with_tiers_of(tiers, 1).await
    }

    /// Adds these retry tiers, their topics of `partitions_each` partitions.
    pub async fn with_tiers_of(mut self, tiers: &[Tier], partitions_each: i32) -> TestEnv {
        let base = self.dlq.trim_end_matches(".dlq").to_owned();
        self.tiers = tiers
            .iter()
            .enumerate()
            .map(|(i, tier)| (format!("{base}.retry.{}", i + 1), tier.delay_ms, tier.max_delay_ms))
            .collect();
        let topics: Vec<String> = self.tiers.iter().map(|t| t.0.clone()).collect();
        create_topics_keeping(&topics, partitions_each, Duration::from_secs(86_400)).await;
        self
    }

    pub fn topic(&self) -> &str {
        &self.topics[0]
    }

    /// Waits until Herald has finished every record written so far to the
    /// topics it reads: the source group has committed to the end of each
    /// source topic, then the retry group to the end of the redrive topic and
    /// of each tier, in that order (a record finishes only after what it
    /// writes to the next is written). Herald commits a partition's offset
    /// only past records whose every delivery has ended (sent, dead-lettered
    /// or written to a tier), and delivers the events of one partition
    /// concurrently, so this, not a later event's delivery, shows that
    /// nothing written before can still be delivered. A record waiting in a
    /// tier holds it until it is due and sent.
    pub async fn wait_finished(&self) {
        let retry_group = format!("{}.retry", self.group);
        let source = self.topics.iter().map(|t| (self.group.as_str(), t));
        let retry = std::iter::once(&self.redrive)
            .chain(self.tiers.iter().map(|t| &t.0))
            .map(|t| (retry_group.as_str(), t));
        let topics: Vec<(&str, &String)> = source.chain(retry).collect();
        eventually(
            Duration::from_secs(30),
            "Herald to finish every record written so far",
            || async {
                for (group, topic) in &topics {
                    if !finished(group, topic).await? {
                        return None;
                    }
                }
                Some(())
            },
        )
        .await
    }

    /// The configuration file: defaults, test isolation, loopback allowed,
    /// fast group timings, then this test's `overlay`.
    pub fn config_toml(&self) -> String {
        let topics = self
            .topics
            .iter()
            .map(|t| format!("\"{t}\""))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            r#"
[kafka]
brokers = "{brokers}"
group_id = "{group}"
topics = [{topics}]
statistics_interval = "1s"
progress_check_interval = "2s"
revoke_drain_timeout = "5s"
[kafka.consumer_properties]
{CLASSIC_GROUP_TIMINGS}"max.poll.interval.ms" = "20000"
[redis]
url = "{redis}"
prefix = "{prefix}"
[subscriptions]
resync_interval = "2s"
reconnect_min_delay = "50ms"
reconnect_max_delay = "500ms"
[dead_letter]
topic = "{dlq}"
[system_events]
topic = "{system}"
[history]
topic = ""
flush_interval = "50ms"
[delivery]
allow_cidrs = ["127.0.0.0/8"]
allow_ports = ["1-65535"]
allowlisted_response_details = true
request_timeout = "5s"
[ops]
listen = "127.0.0.1:0"
[shutdown]
drain_timeout = "10s"
[log]
level = "warn"
[retry]
jitter = 0.0
redrive_topic = "{redrive}"
tiers = [{tiers}]
"#,
            tiers = self
                .tiers
                .iter()
                .map(|(topic, delay, max)| match max {
                    Some(max) => format!("{{ topic = \"{topic}\", delay = \"{delay}ms\", max_delay = \"{max}ms\" }}"),
                    None => format!("{{ topic = \"{topic}\", delay = \"{delay}ms\" }}"),
                })
                .collect::<Vec<_>>()
                .join(", "),
            brokers = brokers(),
            CLASSIC_GROUP_TIMINGS = CLASSIC_GROUP_TIMINGS,
            group = self.group,
            redis = self.redis_url,
            prefix = self.prefix,
            dlq = self.dlq,
            redrive = self.redrive,
            system = self.system,
        )
    }

    /// [`TestEnv::config_toml`], then `overlay`, then `extra` (each may set
    /// any table again).
    pub fn config(&self, extra: &str) -> Config {
        let mut base = self.config_toml();
        if [self.overlay.as_str(), extra]
            .iter()
            .any(|o| o.contains(CONSUMER_PROTOCOL))
        {
            // The broker times the consumer protocol's sessions.
            base = base.replace(CLASSIC_GROUP_TIMINGS, "");
        }
        Config::from_toml_overlays(&[&base, &self.overlay, extra]).expect("valid test configuration")
    }

    pub async fn store(&self) -> SubscriptionStore {
        let client = redis::Client::open(self.redis_url.as_str()).unwrap();
        SubscriptionStore::connect(&client, &self.prefix).await.unwrap()
    }

    pub async fn spawn(&self, extra: &str) -> RunningApp {
        RunningApp::start(self.config(extra)).await
    }

    /// Starts Herald without waiting for it to become ready.
    pub async fn spawn_unready(&self, extra: &str) -> RunningApp {
        RunningApp::start_unready(self.config(extra)).await
    }
}

pub async fn create_topics(topics: &[String], partitions: i32) {
    let config = Config::from_toml_overlay(&format!("[kafka]\nbrokers = \"{}\"", brokers())).unwrap();
    herald::kafka::create_topics(&config.kafka, topics, partitions)
        .await
        .expect("topics created");
}

/// Creates `topics` with `retention.ms` set to `retention`.
pub async fn create_topics_keeping(topics: &[String], partitions: i32, retention: Duration) {
    let config = Config::from_toml_overlay(&format!("[kafka]\nbrokers = \"{}\"", brokers())).unwrap();
    let specs: Vec<herald::kafka::TopicSpec> = topics
        .iter()
        .map(|t| herald::kafka::TopicSpec {
            name: t.clone(),
            create_retention: Some(retention),
            min_retention: None,
        })
        .collect();
    herald::kafka::create_topics_with(&config.kafka, &specs, partitions)
        .await
        .expect("topics created");
}

/// A receiver answering 204, and webhook `id` sending it every event of `env`.
pub async fn receiving_all(env: &TestEnv, id: &str) -> TestReceiver {
    let receiver = TestReceiver::ok().await;
    env.store()
        .await
        .put(&webhook(id, &receiver.url("/"), &["*"]))
        .await
        .unwrap();
    receiver
}

/// A test's topics with one retry tier of `tier_ms`, and a webhook `flaky`
/// (every event) whose receiver answers 503 to each first attempt.
pub async fn failing_once(name: &str, tier_ms: u64) -> (TestEnv, TestReceiver) {
    let env = TestEnv::new(name, &["events"], 1)
        .await
        .with_tiers(&[Tier::after_ms(tier_ms)])
        .await;
    let receiver = TestReceiver::start(failing(1, 503, None)).await;
    env.store()
        .await
        .put(&webhook("flaky", &receiver.url("/"), &["*"]))
        .await
        .unwrap();
    (env, receiver)
}

/// A webhook with one fresh secret, active, subscribed to `events`.
pub fn webhook(id: &str, url: &str, events: &[&str]) -> Webhook {
    Webhook::new(id, &format!("{id} test webhook"), url, events)
}

/// Herald running in this process.
pub struct RunningApp {
    pub ops: SocketAddr,
    /// The management API, when tokens are configured.
    pub admin: Option<SocketAddr>,
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
    /// Why the run ended, when it ended with an error.
    ended: Arc<Mutex<Option<String>>>,
}

impl RunningApp {
    pub async fn start(config: Config) -> RunningApp {
        let running = RunningApp::start_unready(config).await;
        running.wait_ready().await;
        running
    }

    pub async fn start_unready(config: Config) -> RunningApp {
        herald::telemetry::logging::init(&config.log);
        let app = Application::build(config).await.expect("application builds");
        let ops = app.ops_addr();
        let admin = app.admin_addr();
        let shutdown = CancellationToken::new();
        let ended = Arc::new(Mutex::new(None));
        let why = ended.clone();
        let run = app.run_until_stopped(shutdown.clone());
        let handle = tokio::spawn(async move {
            let result = run.await;
            if let Err(e) = &result {
                *why.lock() = Some(format!("{e:#}"));
            }
            result
        });
        RunningApp {
            ops,
            admin,
            shutdown,
            handle,
            ended,
        }
    }

    /// Waits until the replica's index holds `n` webhooks.
    pub async fn wait_webhooks(&self, n: u64) {
        eventually(
            Duration::from_secs(10),
            "the index to hold the webhooks",
            || async move { (self.readyz().await["webhooks"] == n).then_some(()) },
        )
        .await;
    }

    /// Waits until the replica's index holds `n` webhooks of `status`.
    pub async fn wait_status(&self, status: &str, n: u64) {
        let series = format!(r#"herald_webhooks{{status="{status}"}}"#);
        eventually(Duration::from_secs(10), "the index to have the status", || async {
            (self.metric(&series).await == n as f64).then_some(())
        })
        .await;
    }

    /// How many times the replica has applied changes; after a change, pass
    /// it to [`RunningApp::wait_applied`].
    pub async fn changes_applied(&self) -> f64 {
        self.metric(r#"herald_subscription_syncs_total{kind="change"}"#).await
    }

    /// Waits until the replica has applied a change since `before`.
    pub async fn wait_applied(&self, before: f64) {
        eventually(Duration::from_secs(10), "the change to reach the replica", || async {
            (self.changes_applied().await > before).then_some(())
        })
        .await;
    }

    /// `/readyz`'s body.
    pub async fn readyz(&self) -> serde_json::Value {
        let body = reqwest::get(format!("http://{}/readyz", self.ops))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        serde_json::from_str(&body).unwrap()
    }

    /// Waits until /readyz answers 200: generously, since a consumer's first
    /// join on a cluster just formed waits for the group coordinator to
    /// load. Fails at once when Herald's run ends, with its error; a timeout
    /// names what /readyz and /status said last.
    pub async fn wait_ready(&self) {
        let url = format!("http://{}/readyz", self.ops);
        let last = parking_lot::Mutex::new(String::new());
        let ready = tokio::time::timeout(
            Duration::from_secs(90),
            eventually(Duration::from_secs(120), "Herald to become ready", || {
                let (url, last) = (url.clone(), &last);
                async move {
                    if self.handle.is_finished() {
                        return Some(());
                    }
                    let reply = reqwest::get(&url).await.ok()?;
                    let ok = reply.status().is_success();
                    *last.lock() = reply.text().await.unwrap_or_default();
                    ok.then_some(())
                }
            }),
        )
        .await;
        assert!(
            !self.handle.is_finished(),
            "Herald stopped before it was ready: {}",
            self.ended.lock().as_deref().unwrap_or("without an error")
        );
        if ready.is_err() {
            let status = match reqwest::get(format!("http://{}/status", self.ops)).await {
                Ok(reply) => reply.text().await.unwrap_or_default(),
                Err(e) => e.to_string(),
            };
            panic!(
                "Herald did not become ready in 90 s; /readyz said: {}; /status said: {status}",
                last.lock()
            );
        }
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.ops))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of a metric series, e.g. `herald_deliveries_total{class="2xx",outcome="succeeded"}`.
    pub async fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics().await, series)
    }

    /// Waits until the metric `series` reads `value`.
    pub async fn wait_metric(&self, series: &str, value: f64) {
        eventually(
            Duration::from_secs(30),
            &format!("{series} to read {value}"),
            || async { (self.metric(series).await == value).then_some(()) },
        )
        .await
    }

    /// Herald is still running: it has not stopped or failed on its own.
    #[allow(dead_code)] // the cluster tests' (tests/cluster)
    pub fn is_running(&self) -> bool {
        !self.handle.is_finished()
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.expect("app task").expect("app stops cleanly");
    }
}

/// The value of a metric series on the `/metrics` served at `ops`.
pub async fn metric_at(ops: SocketAddr, series: &str) -> f64 {
    let text = reqwest::get(format!("http://{ops}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metric_value(&text, series)
}

/// The value of `series` in a Prometheus text exposition (0 when absent).
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

/// Herald as its own process (for kill -9 and signal tests).
pub struct HeraldProcess {
    pub child: tokio::process::Child,
    /// Where its /metrics, /healthz and /readyz are served.
    pub ops: SocketAddr,
    /// Where its management API is served, when its configuration has tokens.
    pub admin: SocketAddr,
    _config: tempfile::NamedTempFile,
}

impl HeraldProcess {
    pub fn spawn(config_toml: &str) -> HeraldProcess {
        use std::io::Write;
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(config_toml.as_bytes()).unwrap();
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
        };
        let (ops, admin) = (free(), free());
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .arg("--config")
            .arg(file.path())
            .arg("run")
            .env("RUST_LOG", "warn")
            .env("HERALD_OPS__LISTEN", ops.to_string())
            .env("HERALD_ADMIN__LISTEN", admin.to_string())
            .kill_on_drop(true)
            .spawn()
            .expect("herald starts");
        HeraldProcess {
            child,
            ops,
            admin,
            _config: file,
        }
    }

    /// Waits until it is ready (index loaded, assignment received), so a
    /// signal sent next finds its handlers installed.
    pub async fn wait_ready(&self) {
        let url = format!("http://{}/readyz", self.ops);
        eventually(Duration::from_secs(60), "the Herald process to become ready", || {
            let url = url.clone();
            async move { reqwest::get(&url).await.ok()?.status().is_success().then_some(()) }
        })
        .await;
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

/// How a [`TestReceiver`] answers.
#[derive(Clone, Debug)]
pub enum Behaviour {
    Status(u16),
    /// Answers after a delay.
    Delay(Duration, u16),
    /// Redirects to the given path.
    Redirect(String),
    /// Never answers.
    Hang,
    /// Holds every request until the gate [`gate`] made opens, and for at
    /// least 100 ms, then answers 204: requests sent at once are open at
    /// once, so [`TestReceiver::most_at_once`] sees them.
    Gated(tokio::sync::watch::Receiver<bool>),
    /// The n-th request gets the n-th status; the last one repeats.
    Sequence(Vec<u16>),
    /// Answers `status` (with `Retry-After` when given) to attempts up to
    /// `attempts` (the `herald-attempt` header), 204 after.
    FailAttempts {
        attempts: u32,
        status: u16,
        retry_after: Option<String>,
    },
}

/// A [`Behaviour::Gated`] receiver's behaviour and its gate: `send(true)`
/// opens it, for the held requests and every later one.
pub fn gate() -> (tokio::sync::watch::Sender<bool>, Behaviour) {
    let (open, gate) = tokio::sync::watch::channel(false);
    (open, Behaviour::Gated(gate))
}

/// Answers `status` (with `Retry-After` when given) to the first `attempts`
/// attempts of each delivery, 204 after.
pub fn failing(attempts: u32, status: u16, retry_after: Option<&str>) -> Behaviour {
    Behaviour::FailAttempts {
        attempts,
        status,
        retry_after: retry_after.map(str::to_owned),
    }
}

/// One request a receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub at: std::time::Instant,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    pub fn attempt(&self) -> u32 {
        self.header("herald-attempt").parse().unwrap()
    }
}

#[derive(Clone)]
struct ReceiverState {
    received: Arc<Mutex<Vec<Received>>>,
    behaviour: Arc<Mutex<Behaviour>>,
    /// Requests not yet answered, and the most there ever were.
    open_requests: Arc<Mutex<(usize, usize)>>,
}

/// Counts one request as open until it is answered (or abandoned).
struct OpenRequest(Arc<Mutex<(usize, usize)>>);

impl OpenRequest {
    fn new(open: &Arc<Mutex<(usize, usize)>>) -> OpenRequest {
        let mut counts = open.lock();
        counts.0 += 1;
        counts.1 = counts.1.max(counts.0);
        OpenRequest(open.clone())
    }
}

impl Drop for OpenRequest {
    fn drop(&mut self) {
        self.0.lock().0 -= 1;
    }
}

/// An HTTP server on 127.0.0.1 recording what it is sent.
pub struct TestReceiver {
    pub addr: SocketAddr,
    state: ReceiverState,
    _server: JoinHandle<()>,
}

impl TestReceiver {
    pub async fn start(behaviour: Behaviour) -> TestReceiver {
        let state = ReceiverState {
            received: Arc::default(),
            behaviour: Arc::new(Mutex::new(behaviour)),
            open_requests: Arc::default(),
        };
        let app = axum::Router::new().fallback(handle).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        TestReceiver {
            addr,
            state,
            _server: server,
        }
    }

    pub async fn ok() -> TestReceiver {
        Self::start(Behaviour::Status(204)).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Changes how later requests are answered.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.state.behaviour.lock() = behaviour;
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().clone()
    }

    pub fn count(&self) -> usize {
        self.state.received.lock().len()
    }

    /// The most requests it has had open (received, not yet answered) at
    /// once.
    pub fn most_at_once(&self) -> usize {
        self.state.open_requests.lock().1
    }

    /// Waits until at least `n` requests arrived; returns them.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        eventually(timeout, &format!("{n} requests at {}", self.addr), || async {
            let r = self.received();
            (r.len() >= n).then_some(r)
        })
        .await
    }
}

async fn handle(State(state): State<ReceiverState>, uri: axum::http::Uri, headers: HeaderMap, body: Bytes) -> Response {
    let attempt: u32 = headers
        .get("herald-attempt")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let _open = OpenRequest::new(&state.open_requests);
    let index = state.received.lock().len();
    state.received.lock().push(Received {
        at: std::time::Instant::now(),
        path: uri.path().to_owned(),
        headers,
        body,
    });
    let behaviour = state.behaviour.lock().clone();
    match behaviour {
        Behaviour::Status(s) => StatusCode::from_u16(s).unwrap().into_response(),
        Behaviour::Delay(d, s) => {
            tokio::time::sleep(d).await;
            StatusCode::from_u16(s).unwrap().into_response()
        }
        Behaviour::Redirect(to) => (StatusCode::FOUND, [("location", to)]).into_response(),
        Behaviour::Sequence(statuses) => {
            let s = statuses[index.min(statuses.len() - 1)];
            StatusCode::from_u16(s).unwrap().into_response()
        }
        Behaviour::FailAttempts {
            attempts,
            status,
            retry_after,
        } => {
            if attempt > attempts {
                return StatusCode::NO_CONTENT.into_response();
            }
            let status = StatusCode::from_u16(status).unwrap();
            match retry_after {
                Some(ra) => (status, [("retry-after", ra)]).into_response(),
                None => status.into_response(),
            }
        }
        Behaviour::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        Behaviour::Gated(mut gate) => {
            let held_until = tokio::time::Instant::now() + Duration::from_millis(100);
            // A gate dropped with the test opens nothing: the request hangs.
            if gate.wait_for(|open| *open).await.is_err() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep_until(held_until).await;
            StatusCode::NO_CONTENT.into_response()
        }
    }
}

/// Produces test records.
pub struct Publisher {
    producer: FutureProducer,
}

impl Publisher {
    pub fn new() -> Publisher {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("linger.ms", "5")
            .create()
            .expect("producer");
        Publisher { producer }
    }

    pub async fn send(&self, topic: &str, key: Option<&str>, value: &[u8], headers: &[(&str, &str)]) {
        let mut h = OwnedHeaders::new();
        for (k, v) in headers {
            h = h.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut record = FutureRecord::to(topic).payload(value).headers(h);
        if let Some(key) = key {
            record = record.key(key);
        }
        self.producer
            .send(record, Timeout::After(Duration::from_secs(30)))
            .await
            .map_err(|(e, _)| e)
            .expect("record produced");
    }

    pub async fn json(&self, topic: &str, value: &str) {
        self.send(topic, None, value.as_bytes(), &[]).await
    }

    /// Publishes `value` as an event of `tenant`, in the `tenant` header that
    /// [`TENANT_HEADER_RULES`] read.
    pub async fn tenant_event(&self, topic: &str, tenant: &str, value: &[u8]) {
        self.send(topic, None, value, &[("tenant", tenant)]).await
    }
}

/// Envelope rules for tests of tenants: the Jimo envelope, the tenant in a
/// `tenant` header (see [`Publisher::tenant_event`]).
pub const TENANT_HEADER_RULES: &str = "[envelope.default]\npreset = \"jimo\"\ntenant = \"header:tenant\"\n";

/// A record read back from a topic.
#[derive(Debug, Clone)]
pub struct ReadRecord {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: BTreeMap<String, String>,
}

impl ReadRecord {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
}

/// Reads every record of `topic` (all partitions, from the start) until at
/// least `n` were read or `timeout` passes.
pub async fn read_topic(topic: &str, n: usize, timeout: Duration) -> Vec<ReadRecord> {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("group.id", unique("reader"))
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10)).unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in metadata.topics()[0].partitions() {
            tpl.add_partition_offset(&topic, p.id(), Offset::Beginning).unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let deadline = std::time::Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < n && std::time::Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                let headers = m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(ReadRecord {
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
        }
        out
    })
    .await
    .unwrap()
}

/// The group's committed offset per partition of `topic` (-1001 when none).
pub async fn committed(group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    try_committed(group, topic, partitions)
        .await
        .expect("the group's committed offsets")
}

/// [`committed`], `None` while the cluster cannot say (a broker failing).
pub async fn try_committed(group: &str, topic: &str, partitions: i32) -> Option<Vec<i64>> {
    let (group, topic) = (group.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("group.id", &group)
            .create()
            .ok()?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(&topic, p);
        }
        let committed = consumer.committed_offsets(tpl, Duration::from_secs(10)).ok()?;
        (0..partitions)
            .map(|p| match committed.find_partition(&topic, p)?.offset() {
                Offset::Offset(o) => Some(o),
                _ => Some(-1001),
            })
            .collect()
    })
    .await
    .unwrap()
}

/// Whether `group` has committed every record written so far to `topic`
/// (`None` while the cluster cannot say).
async fn finished(group: &str, topic: &str) -> Option<bool> {
    let partitions = {
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers()).create().ok()?;
            let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10)).ok()?;
            Some(metadata.topics().first()?.partitions().len() as i32)
        })
        .await
        .unwrap()?
    };
    let ends = try_end_offsets(topic, partitions).await?;
    let committed = try_committed(group, topic, partitions).await?;
    Some(ends.iter().zip(&committed).all(|(end, done)| *end == 0 || done >= end))
}

/// Sets `topic`'s `max.message.bytes` to `bytes`.
pub async fn set_max_message_bytes(topic: &str, bytes: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let change = AlterConfig::new(ResourceSpecifier::Topic(topic)).set("max.message.bytes", bytes);
    let results = admin
        .alter_configs(
            &[change],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap();
    for r in results {
        r.unwrap();
    }
}

/// The end offset of each partition of `topic`.
pub async fn end_offsets(topic: &str, partitions: i32) -> Vec<i64> {
    try_end_offsets(topic, partitions)
        .await
        .expect("the topic's end offsets")
}

/// [`end_offsets`], `None` while the cluster cannot say.
pub async fn try_end_offsets(topic: &str, partitions: i32) -> Option<Vec<i64>> {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers()).create().ok()?;
        (0..partitions)
            .map(|p| {
                consumer
                    .fetch_watermarks(&topic, p, Duration::from_secs(10))
                    .ok()
                    .map(|w| w.1)
            })
            .collect()
    })
    .await
    .unwrap()
}

/// A path under the repository.
pub fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

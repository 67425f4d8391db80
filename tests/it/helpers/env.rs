//! Each test's own topics, consumer group and Redis key prefix ([`TestEnv`]),
//! the services it runs against, and the webhooks and receivers most tests
//! start with.

use std::path::PathBuf;
use std::time::Duration;

use herald::config::Config;
use herald::subscriptions::store::SubscriptionStore;
use herald::webhook::Webhook;

use super::*;

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
                    if !topics::finished(group, topic).await? {
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

/// A path under the repository.
pub fn repo_path(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(rel)
}

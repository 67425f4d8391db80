//! Configuration: one typed struct, layered `config/default.toml` -> the
//! operator's file -> `HERALD_...` environment variables.
//!
//! The defaults live in `config/default.toml` (compiled into the binary, so a
//! deployment cannot run with a default that differs from the documented one),
//! every key is documented there, and [`Config::load`] rejects an invalid value
//! with a message naming the key, before anything is started.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use ipnet::IpNet;
use serde::Deserialize;

pub use crate::routing::envelope::EnvelopeConfig;

pub mod catalog;
pub mod connector;
pub mod token_quality;
pub mod waits;

/// Largest page a list endpoint of the management API returns
/// (`admin.default_page_size` may not exceed it).
pub const MAX_PAGE_SIZE: usize = 500;

/// The documented defaults, shipped as `config/default.toml`.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// Environment variables with this prefix override file values; `__` separates
/// nesting levels, e.g. `HERALD_KAFKA__GROUP_ID=herald-eu`.
pub const ENV_PREFIX: &str = "HERALD_";

/// A configuration value that cannot be used, naming the key at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The files or environment could not be read or do not have the right shape.
    #[error("invalid configuration: {0}")]
    Parse(#[from] Box<figment::Error>),
    /// A value parsed, but is not acceptable.
    #[error("invalid configuration value for `{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Herald's whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub kafka: KafkaConfig,
    pub redis: RedisConfig,
    pub subscriptions: SubscriptionsConfig,
    pub envelope: EnvelopeConfig,
    pub delivery: DeliveryConfig,
    pub dead_letter: DeadLetterConfig,
    pub retry: RetryConfig,
    pub system_events: SystemEventsConfig,
    pub auto_disable: AutoDisableConfig,
    pub ops: OpsConfig,
    /// `[http]`, the operations listener's name in 0.1: read into
    /// `[ops]` when given (see [`Config::notices`]), never used itself.
    #[serde(default, rename = "http")]
    _renamed_http: Option<serde::de::IgnoredAny>,
    pub history: HistoryConfig,
    pub admin: AdminConfig,
    pub portal: PortalConfig,
    pub log: LogConfig,
    pub shutdown: ShutdownConfig,
    /// What the configuration should change (keys under an old name), for
    /// the log once logging is set up.
    #[serde(skip)]
    pub notices: Vec<String>,
}

/// The source consumer group, and the producer that writes retry and
/// dead-letter records, system events and the attempts topic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// `group.id`: replicas sharing it split the partitions between them.
    pub group_id: String,
    /// Source topics carrying domain events.
    pub topics: Vec<String>,
    /// librdkafka properties passed through to the consumer and producer.
    #[serde(default, deserialize_with = "properties")]
    pub properties: BTreeMap<String, String>,
    /// librdkafka properties for the consumer only.
    #[serde(default, deserialize_with = "properties")]
    pub consumer_properties: BTreeMap<String, String>,
    /// librdkafka properties for the producer only.
    #[serde(default, deserialize_with = "properties")]
    pub producer_properties: BTreeMap<String, String>,
    /// Events in flight per partition before that partition is paused.
    pub max_in_flight_per_partition: usize,
    /// Events in flight over all partitions before every partition is paused.
    pub max_in_flight: usize,
    /// Bytes of those events (per consumer: source and retry) before the same.
    pub max_in_flight_bytes: usize,
    /// How long a revoked partition's in-flight events may take to finish.
    #[serde(with = "humantime_serde")]
    pub revoke_drain_timeout: Duration,
    /// How often librdkafka reports statistics (consumer lag); 0 disables.
    #[serde(with = "humantime_serde")]
    pub statistics_interval: Duration,
    /// How often each consumer checks that the partitions it means to read
    /// are read, and refreshes the end offsets of paused ones (lag).
    #[serde(with = "humantime_serde")]
    pub progress_check_interval: Duration,
    /// Which consumer group protocol the consumers speak.
    pub group_protocol: GroupProtocol,
    /// Create the topics Herald writes (dead letters, retry tiers, redrive,
    /// system events, attempts) at start-up when they do not exist.
    pub create_missing_topics: bool,
    /// Partitions of topics Herald creates itself.
    pub created_topic_partitions: i32,
}

/// The consumer group protocol (`kafka.group_protocol`).
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GroupProtocol {
    /// The classic protocol (every broker), with the cooperative sticky
    /// assignor: a rebalance moves only the partitions that change hands.
    Classic,
    /// KIP-848's consumer protocol (`group.protocol=consumer`, Apache Kafka
    /// 4.0 and later): the broker assigns, incrementally, and a member's
    /// session timeout is the broker's setting.
    Consumer,
}

/// librdkafka consumer properties the consumer protocol refuses: the broker
/// owns the session, the heartbeat and the assignment.
pub const CLASSIC_ONLY_PROPERTIES: [&str; 4] = [
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "partition.assignment.strategy",
    "group.protocol.type",
];

/// A librdkafka property value as written: text, a number or boolean, or a
/// nested table (TOML `sasl.username = ...` and the environment variable
/// `HERALD_KAFKA__PROPERTIES__SASL__USERNAME` both nest).
#[derive(Deserialize)]
#[serde(untagged)]
enum Property {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Table(BTreeMap<String, Property>),
}

fn flatten(prefix: &str, table: BTreeMap<String, Property>, out: &mut BTreeMap<String, String>) {
    for (key, value) in table {
        let key = if prefix.is_empty() {
            key
        } else {
            format!("{prefix}.{key}")
        };
        match value {
            Property::Text(s) => {
                out.insert(key, s);
            }
            Property::Int(i) => {
                out.insert(key, i.to_string());
            }
            Property::Float(f) => {
                out.insert(key, f.to_string());
            }
            Property::Bool(b) => {
                out.insert(key, b.to_string());
            }
            Property::Table(t) => flatten(&key, t, out),
        }
    }
}

/// librdkafka properties, flattened to dotted names.
fn properties<'de, D: serde::Deserializer<'de>>(d: D) -> Result<BTreeMap<String, String>, D::Error> {
    let table = BTreeMap::<String, Property>::deserialize(d)?;
    let mut out = BTreeMap::new();
    flatten("", table, &mut out);
    Ok(out)
}

/// Where subscriptions are stored.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db`.
    pub url: String,
    /// Prefix of every key and channel Herald reads or writes.
    pub prefix: String,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.redacted_url())
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl RedisConfig {
    /// A client for `url`. Its connections send only the commands Herald
    /// uses: the client library's `CLIENT SETINFO` (a label in `CLIENT LIST`)
    /// is left out, so the ACL user of deploy/k8s/redis-acl.conf needs no
    /// permission for it and Redis logs no refusal on every connection.
    pub fn client(&self) -> redis::RedisResult<redis::Client> {
        use redis::IntoConnectionInfo;
        let info = self.url.as_str().into_connection_info()?;
        let settings = info.redis_settings().clone().set_skip_set_lib_name();
        redis::Client::open(info.set_redis_settings(settings))
    }

    /// How Herald's connections behave: 5 s to connect, 5 s for a reply,
    /// two reconnection attempts per failed command (the next command tries
    /// again, so a Redis that comes back is used again).
    pub fn connection_config() -> redis::aio::ConnectionManagerConfig {
        redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(std::time::Duration::from_secs(5)))
            .set_response_timeout(Some(std::time::Duration::from_secs(5)))
            .set_number_of_retries(2)
    }

    /// A connection made at its first command, not now: a process started
    /// before Redis starts anyway, and its commands fail (and are retried by
    /// their callers) until Redis is reached.
    pub fn lazy_connection(client: &redis::Client) -> redis::RedisResult<redis::aio::ConnectionManager> {
        redis::aio::ConnectionManager::new_lazy_with_config(client.clone(), Self::connection_config())
    }

    /// `url` as it may be shown in errors and logs: without its password.
    pub fn redacted_url(&self) -> String {
        match url::Url::parse(&self.url) {
            Ok(mut url) => {
                if url.password().is_some() {
                    let _ = url.set_password(Some("***"));
                }
                url.to_string()
            }
            Err(_) => "(an unparsable redis.url)".to_owned(),
        }
    }
}

/// How the in-memory subscription index follows Redis.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionsConfig {
    /// How often the change log is read, so a missed change announcement
    /// heals.
    #[serde(with = "humantime_serde")]
    pub resync_interval: Duration,
    /// How often every document is read again, for writers that neither log
    /// nor announce their changes; zero: never (still at start and after a
    /// reconnect or a gap in the log).
    #[serde(with = "humantime_serde")]
    pub audit_interval: Duration,
    /// Webhooks kept prepared for delivery (parsed URL, keyed signers,
    /// headers, request slots); others are prepared when first used.
    pub prepared_webhooks: usize,
    /// First delay before reconnecting to Redis.
    #[serde(with = "humantime_serde")]
    pub reconnect_min_delay: Duration,
    /// Longest delay between reconnection attempts.
    #[serde(with = "humantime_serde")]
    pub reconnect_max_delay: Duration,
}

/// The HTTP client that calls the receivers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Name resolution deadline, apart from the connection's.
    #[serde(with = "humantime_serde")]
    pub resolve_timeout: Duration,
    /// How long a name's addresses are kept once looked up.
    #[serde(with = "humantime_serde")]
    pub resolve_cache_ttl: Duration,
    /// Whole-request deadline, including reading the response.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Concurrent requests over all endpoints.
    pub max_in_flight: usize,
    /// Concurrent requests to one endpoint (a webhook may set a lower one).
    pub max_in_flight_per_endpoint: usize,
    /// Concurrent requests of one tenant's webhooks (those without a tenant
    /// share one such bucket); freed slots go to the tenant holding the fewest.
    pub max_in_flight_per_tenant: usize,
    /// Concurrent requests to one destination host and port, over every
    /// webhook and tenant.
    pub max_in_flight_per_host: usize,
    /// Per-host exceptions to `max_in_flight_per_host`, by host name.
    #[serde(default)]
    pub max_in_flight_by_host: BTreeMap<String, usize>,
    /// How long a delivery may wait for a free slot at its endpoint before it
    /// fails as `saturated`, so a slow or dead endpoint cannot hold a partition.
    #[serde(with = "humantime_serde")]
    pub max_queue_wait: Duration,
    /// Bytes of the response body read (and kept for diagnostics).
    pub max_response_bytes: usize,
    /// Networks that are reachable even though the SSRF policy blocks them.
    #[serde(default)]
    pub allow_cidrs: Vec<IpNet>,
    /// Networks that only the named tenant's webhooks may reach, beyond
    /// `allow_cidrs`.
    #[serde(default)]
    pub tenant_allow_cidrs: BTreeMap<String, Vec<IpNet>>,
    /// Destination ports a webhook URL may name (explicitly or by its scheme).
    pub allow_ports: Vec<PortRange>,
    /// Keep the response headers and body of a destination that the SSRF
    /// policy refuses by default and only an allowlist opens, in delivery
    /// history and test results. Off, only the status is shown, so the API
    /// cannot be used to read internal services.
    pub allowlisted_response_details: bool,
    /// Idle pooled connections kept per host.
    pub pool_max_idle_per_host: usize,
    #[serde(with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
}

/// A destination port, or an inclusive range of them (`443` or `"8000-8999"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    /// Whether `port` is in the range (both ends included).
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(u16),
            Range(String),
        }
        let invalid = |text: &str| {
            serde::de::Error::custom(format!(
                "invalid port range {text:?}: expected a port (443) or \"first-last\" (\"8000-8999\")"
            ))
        };
        match Raw::deserialize(deserializer)? {
            Raw::One(port) => Ok(PortRange {
                first: port,
                last: port,
            }),
            Raw::Range(text) => {
                let (first, last) = text.split_once('-').unwrap_or((&text, &text));
                let first: u16 = first.trim().parse().map_err(|_| invalid(&text))?;
                let last: u16 = last.trim().parse().map_err(|_| invalid(&text))?;
                if first > last {
                    return Err(invalid(&text));
                }
                Ok(PortRange { first, last })
            }
        }
    }
}

/// Where deliveries that did not succeed, and unusable events, are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterConfig {
    pub topic: String,
    /// How long dead letters are kept for replay: `retention.ms` of the topic
    /// when Herald creates it, and the least an existing topic must keep.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
    /// First delay before retrying a failed produce.
    #[serde(with = "humantime_serde")]
    pub produce_retry_min_delay: Duration,
    #[serde(with = "humantime_serde")]
    pub produce_retry_max_delay: Duration,
}

/// Retry tiers: one Kafka delay topic per tier.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Tiers in order; empty sends failures straight to the dead-letter topic.
    pub tiers: Vec<Tier>,
    /// Fraction of each delay added or removed at random (0.1 = +-10%).
    pub jitter: f64,
    /// Consumer group of the tier consumers (default: `{kafka.group_id}.retry`).
    #[serde(default)]
    pub group_id: Option<String>,
    /// Topic of deliveries due now: manual retries and replays.
    pub redrive_topic: String,
    /// `retention.ms` of the redrive topic when Herald creates it.
    #[serde(default, with = "humantime_serde")]
    pub redrive_retention: Option<Duration>,
    /// Per partition: retries held aside out of order, and retries delivered
    /// past the oldest of them, before it is moved to the end of a topic.
    pub max_out_of_order: usize,
    /// Per partition: bytes of retries held aside out of order.
    pub max_out_of_order_bytes: usize,
    /// HTTP statuses that end a delivery at once (dead-lettered as
    /// `final_status`) instead of being retried; 410 always does.
    #[serde(default)]
    pub final_statuses: Vec<u16>,
}

impl RetryConfig {
    /// The tier consumers' group.
    pub fn group_id(&self, kafka: &KafkaConfig) -> String {
        self.group_id
            .clone()
            .unwrap_or_else(|| format!("{}.retry", kafka.group_id))
    }

    /// The tier topics, in order.
    pub fn topics(&self) -> Vec<String> {
        self.tiers.iter().map(|t| t.topic.clone()).collect()
    }

    /// Every topic where retries wait: the tiers, then the redrive topic.
    pub fn wait_topics(&self) -> waits::WaitTopics {
        waits::WaitTopics::new(self)
    }
}

/// One retry tier, as configured.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// The delay topic.
    pub topic: String,
    /// How long after the failure the retry is due.
    #[serde(with = "humantime_serde")]
    pub delay: Duration,
    /// The longest a `Retry-After` may push the retry (default: 3 x delay).
    #[serde(default, with = "humantime_serde")]
    pub max_delay: Option<Duration>,
    /// `retention.ms` of the topic when Herald creates it (default: twice
    /// the longest wait in it); at least the longest wait.
    #[serde(default, with = "humantime_serde")]
    pub retention: Option<Duration>,
}

impl Tier {
    /// The upper bound for a `Retry-After`.
    pub fn max_delay(&self) -> Duration {
        self.max_delay.unwrap_or(self.delay * 3).max(self.delay)
    }
}

/// When Herald disables a failing webhook by itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoDisableConfig {
    /// Failing continuously for this long disables it ("0s": never).
    #[serde(with = "humantime_serde")]
    pub after: Duration,
    /// This many consecutive failed deliveries disable it (0: no limit).
    pub consecutive_failures: u64,
}

/// System events (`webhook.disabled`, ...).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemEventsConfig {
    /// Topic they are published to; empty disables them.
    pub topic: String,
    /// The envelope style they are written in.
    pub envelope: SystemEnvelope,
    /// A tenant bound to a catalog gets them in its catalog's envelope.
    pub follow_tenant_catalog: bool,
    /// Events waiting to be published (retried ones included); beyond, a
    /// new one is given up at once.
    pub max_pending: usize,
    /// How long after it was made an event is still retried.
    #[serde(with = "humantime_serde")]
    pub retry_for: Duration,
}

/// The envelope styles Herald writes its system events in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SystemEnvelope {
    /// `{"event": "webhook.created", "version": "0", "time": <ms>, ...}`
    Jimo,
    /// `{"event_time", "event_type": "WEBHOOK_CREATED", "current_context", "data"}`
    Iam,
    /// `{"id", "type": "webhook.created", "created_at", "data"}`
    Jam,
}

impl SystemEnvelope {
    /// The style of a catalog's `envelope`, when Herald writes it.
    pub fn of_catalog(envelope: &str) -> Option<SystemEnvelope> {
        match envelope {
            "jimo" => Some(SystemEnvelope::Jimo),
            "iam" => Some(SystemEnvelope::Iam),
            "jam" => Some(SystemEnvelope::Jam),
            _ => None,
        }
    }

    /// The event type of `webhook.<action>` in this style.
    pub fn event_type(self, action: &str) -> String {
        match self {
            SystemEnvelope::Iam => format!("WEBHOOK_{}", action.to_ascii_uppercase()),
            SystemEnvelope::Jimo | SystemEnvelope::Jam => format!("webhook.{action}"),
        }
    }
}

/// Changes made through the API that are announced as `webhook.<action>`.
pub const ANNOUNCED_ACTIONS: [&str; 6] = ["created", "updated", "deleted", "paused", "resumed", "secret_rotated"];

/// Every `webhook.<action>` system event: those, and the lifecycle's.
pub fn system_event_actions() -> impl Iterator<Item = &'static str> {
    ANNOUNCED_ACTIONS.into_iter().chain(["disabled", "auto_disabled"])
}

/// Every system event type, in every style (`webhook.created`, `WEBHOOK_CREATED`, ...).
pub fn system_event_types() -> impl Iterator<Item = String> {
    [SystemEnvelope::Jimo, SystemEnvelope::Iam]
        .into_iter()
        .flat_map(|style| system_event_actions().map(move |a| style.event_type(a)))
}

impl SystemEventsConfig {
    /// The topic, or `None` when system events are off (an empty `topic`).
    pub fn topic(&self) -> Option<&str> {
        (!self.topic.trim().is_empty()).then_some(self.topic.as_str())
    }
}

/// The operations listener (`/metrics`, `/healthz`, `/readyz`, `/status`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpsConfig {
    pub listen: SocketAddr,
    /// Connections held at once.
    pub max_connections: usize,
    /// For a request's head, and for the next request on a kept-alive connection.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// For handling a request until its response head.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// A partition is reported stalled on `/status` when its oldest event in
    /// flight is older than this, or records wait and nothing was committed
    /// for this long.
    #[serde(with = "humantime_serde")]
    pub stall_after: Duration,
    /// Tenants given delivery series of their own on `/metrics`, the first
    /// this replica delivers for; the others are counted together under
    /// `tenant="(other)"`.
    pub max_tenant_series: usize,
}

/// Delivery history and statistics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    pub enabled: bool,
    pub max_per_webhook: usize,
    /// Deliveries (one per event and webhook, with their attempts' briefs)
    /// kept per webhook.
    pub max_deliveries_per_webhook: usize,
    #[serde(with = "humantime_serde")]
    pub max_age: Duration,
    pub max_body_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    pub queue_capacity: usize,
    /// Bytes the queued attempts may hold (their event bodies, mostly).
    pub queue_capacity_bytes: usize,
    /// Topic of full attempt records; empty disables it.
    pub topic: String,
}

impl HistoryConfig {
    /// The attempts topic, or `None` when the history or its topic is off.
    pub fn topic(&self) -> Option<&str> {
        (self.enabled && !self.topic.trim().is_empty()).then_some(self.topic.as_str())
    }
}

/// The management API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Connections held at once (API and portal).
    pub max_connections: usize,
    /// For a request's head, and for the next request on a kept-alive connection.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// For handling a request (its body included) until its response head.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Bearer tokens; none disables the API.
    #[serde(default)]
    pub tokens: Vec<AdminToken>,
    /// How long a rotated-out secret keeps signing.
    #[serde(with = "humantime_serde")]
    pub secret_rotation_overlap: Duration,
    pub max_body_bytes: usize,
    pub default_page_size: usize,
    /// Catalog for tenants not bound to one; empty allows any event type.
    #[serde(default)]
    pub default_catalog: String,
    /// Extra catalog files.
    #[serde(default)]
    pub catalog_files: Vec<std::path::PathBuf>,
    /// The built-in catalogs and `catalog_files`, read once when the
    /// configuration is checked.
    #[serde(skip)]
    pub catalogs: Arc<catalog::Catalogs>,
    /// JSON files of connectors offered besides the built-in ones.
    #[serde(default)]
    pub connector_files: Vec<std::path::PathBuf>,
    /// The built-in connectors and `connector_files`, read with the catalogs.
    #[serde(skip)]
    pub connectors: Arc<connector::Connectors>,
    /// Per-tenant settings.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantConfig>,
    /// Webhooks a tenant may create through the API (a tenant's own
    /// `max_webhooks` overrides it).
    pub max_webhooks_per_tenant: usize,
    /// Live tokens a tenant may hold through the API (`POST
    /// /v1/tenants/{tenant}/tokens`); tokens in `tokens` are not counted.
    pub max_tokens_per_tenant: usize,
    /// Replays running at once over every replica (one per webhook at most).
    pub max_replays: usize,
    /// Of those, at most this many for one tenant's webhooks.
    pub max_replays_per_tenant: usize,
    /// Dry runs (`"dry_run": true`) running at once over every replica,
    /// capped apart from replays so that counting never holds a replay's
    /// place.
    pub max_dry_runs: usize,
    /// Of those, at most this many for one tenant's webhooks.
    pub max_dry_runs_per_tenant: usize,
}

impl AdminConfig {
    /// Reads the built-in catalogs and `catalog_files`.
    fn load_catalogs(&self) -> Result<catalog::Catalogs, ConfigError> {
        catalog::Catalogs::load(&self.catalog_files)
            .map_err(|e| ConfigError::invalid("admin.catalog_files", e.to_string()))
    }

    /// Whether the management API is on: at least one token is configured.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }
}

/// A bearer token of the management API.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    /// Shown in logs and system events instead of the token.
    pub name: String,
    pub token: String,
    /// Limits the token to this tenant's webhooks; none sees every tenant.
    #[serde(default)]
    pub tenant: Option<String>,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminToken")
            .field("name", &self.name)
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

/// Settings of one tenant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// The catalog its webhooks' event patterns must match; "" allows any.
    #[serde(default)]
    pub catalog: String,
    /// Its webhook quota, instead of `admin.max_webhooks_per_tenant`.
    #[serde(default)]
    pub max_webhooks: Option<usize>,
    /// Who may frame its portal pages, instead of `portal.frame_ancestors`.
    #[serde(default)]
    pub frame_ancestors: Option<Vec<String>>,
}

/// The webhook portal: pages reached through signed, short-lived links.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortalConfig {
    /// Signs the links (HMAC-SHA256); empty turns the portal off.
    pub signing_key: String,
    /// How long a link works when its request does not say.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// The longest a link may work.
    #[serde(with = "humantime_serde")]
    pub max_session_ttl: Duration,
    /// Live sessions one tenant may hold at once (the operators' sessions
    /// count as one more tenant); a new one beyond is refused (429).
    pub max_sessions_per_tenant: usize,
    /// Where users reach the portal; links are paths when empty.
    pub public_url: String,
    /// CSP `frame-ancestors` sources, unless a tenant has its own.
    pub frame_ancestors: Vec<String>,
}

impl std::fmt::Debug for PortalConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortalConfig")
            .field("signing_key", &if self.signing_key.is_empty() { "" } else { "***" })
            .field("session_ttl", &self.session_ttl)
            .field("max_session_ttl", &self.max_session_ttl)
            .field("max_sessions_per_tenant", &self.max_sessions_per_tenant)
            .field("public_url", &self.public_url)
            .field("frame_ancestors", &self.frame_ancestors)
            .finish()
    }
}

impl PortalConfig {
    /// Whether the portal is on: a signing key is configured.
    pub fn enabled(&self) -> bool {
        !self.signing_key.is_empty()
    }
}

/// Shortest accepted portal signing key.
pub const MIN_PORTAL_KEY_LEN: usize = 32;

/// Sections renamed, as (old, new): the old name is still read.
const RENAMED_SECTIONS: [(&str, &str); 1] = [("http", "ops")];

/// Shortest accepted API token.
pub const MIN_TOKEN_LEN: usize = 24;

/// How to make a token that passes, for the errors that refuse one.
const GENERATE_TOKEN: &str = "generate one with `openssl rand -hex 32`";

/// Log output.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A `tracing` filter, e.g. `info,herald=debug`; `RUST_LOG` wins when set.
    pub level: String,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

/// Shutdown behaviour.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShutdownConfig {
    /// How long in-flight events may take to finish once shutdown starts.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Config {
    /// Loads defaults, then `file` (when given), then the environment, and
    /// validates the result.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_TOML));
        if let Some(file) = file {
            if !file.exists() {
                return Err(ConfigError::invalid(
                    "--config",
                    format!("file {} does not exist", file.display()),
                ));
            }
            figment = figment.merge(Toml::file(file));
        }
        // Only `HERALD_SECTION__KEY` variables are configuration; others with
        // the prefix (`HERALD_CONFIG`, the test suite's) are not.
        let env = Env::prefixed(ENV_PREFIX)
            .filter(|key| key.as_str().contains("__"))
            .split("__");
        Self::from_figment(figment.merge(env))
    }

    /// Builds a configuration from defaults overlaid with a TOML string; used
    /// by tests and tools that assemble configuration in code.
    pub fn from_toml_overlay(overlay: &str) -> Result<Config, ConfigError> {
        Self::from_toml_overlays(&[overlay])
    }

    /// Like [`Config::from_toml_overlay`] with several layers, last wins.
    pub fn from_toml_overlays(overlays: &[&str]) -> Result<Config, ConfigError> {
        let figment = overlays.iter().fold(Figment::from(Toml::string(DEFAULT_TOML)), |f, o| {
            f.merge(Toml::string(o))
        });
        Self::from_figment(figment)
    }

    fn from_figment(figment: Figment) -> Result<Config, ConfigError> {
        let (figment, notices) = Self::read_renamed(figment);
        let mut config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        config.notices = notices;
        Ok(config)
    }

    /// Reads sections given under an old name as the new one (the old
    /// name's values win: defaults only use the new one), with a notice for
    /// each.
    fn read_renamed(mut figment: Figment) -> (Figment, Vec<String>) {
        let mut notices = Vec::new();
        for (old, new) in RENAMED_SECTIONS {
            if let Ok(values) = figment.find_value(old) {
                figment = figment.merge(figment::providers::Serialized::default(new, values));
                notices.push(format!(
                    "configuration section `[{old}]` is now `[{new}]` (HERALD_{}__* is HERALD_{}__*); \
                     the old name is still read, but will not be after the next major version",
                    old.to_uppercase(),
                    new.to_uppercase()
                ));
            }
        }
        (figment, notices)
    }

    /// `[portal]`.
    fn validate_portal(&self) -> Result<(), ConfigError> {
        let p = &self.portal;
        if p.enabled() && p.signing_key.len() < MIN_PORTAL_KEY_LEN {
            return Err(ConfigError::invalid(
                "portal.signing_key",
                format!("must be at least {MIN_PORTAL_KEY_LEN} characters; {GENERATE_TOKEN}"),
            ));
        }
        // Anyone given a link holds a message signed with this key: a key
        // that was not drawn at random can be found offline from one.
        if let Some(weak) = p
            .enabled()
            .then(|| token_quality::check(&p.signing_key).err())
            .flatten()
        {
            return Err(ConfigError::invalid(
                "portal.signing_key",
                format!("{weak}, so it is not a random key; {GENERATE_TOKEN}"),
            ));
        }
        nonzero("portal.session_ttl", p.session_ttl)?;
        positive("portal.max_sessions_per_tenant", p.max_sessions_per_tenant)?;
        if p.max_session_ttl < p.session_ttl {
            return Err(ConfigError::invalid(
                "portal.max_session_ttl",
                "must be at least portal.session_ttl",
            ));
        }
        if !p.public_url.is_empty() {
            let url = url::Url::parse(&p.public_url)
                .map_err(|e| ConfigError::invalid("portal.public_url", format!("is not a URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ConfigError::invalid("portal.public_url", "must be http or https"));
            }
        }
        let sources = std::iter::once(("portal.frame_ancestors".to_owned(), &p.frame_ancestors)).chain(
            self.admin.tenants.iter().filter_map(|(t, c)| {
                Some((
                    format!("admin.tenants.\"{t}\".frame_ancestors"),
                    c.frame_ancestors.as_ref()?,
                ))
            }),
        );
        for (key, list) in sources {
            check_frame_ancestors(list).map_err(|m| ConfigError::invalid(key, m))?;
        }
        Ok(())
    }

    /// `[admin]`: limits, tokens, tenants and their catalogs.
    fn validate_admin(&mut self) -> Result<(), ConfigError> {
        let a = &self.admin;
        positive("admin.max_replays", a.max_replays)?;
        positive("admin.max_webhooks_per_tenant", a.max_webhooks_per_tenant)?;
        for (tenant, t) in &a.tenants {
            if let Some(max) = t.max_webhooks {
                positive(&format!("admin.tenants.{tenant}.max_webhooks"), max)?;
            }
        }
        positive("admin.max_replays_per_tenant", a.max_replays_per_tenant)?;
        positive("admin.max_dry_runs", a.max_dry_runs)?;
        positive("admin.max_dry_runs_per_tenant", a.max_dry_runs_per_tenant)?;
        positive("admin.max_tokens_per_tenant", a.max_tokens_per_tenant)?;
        let mut names = std::collections::BTreeSet::new();
        let mut tokens = std::collections::BTreeSet::new();
        for (i, t) in a.tokens.iter().enumerate() {
            let key = format!("admin.tokens[{i}]");
            if t.name.trim().is_empty() || !names.insert(t.name.as_str()) {
                return Err(ConfigError::invalid(
                    format!("{key}.name"),
                    "must be non-empty and unique",
                ));
            }
            if t.token.len() < MIN_TOKEN_LEN || t.token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(ConfigError::invalid(
                    format!("{key}.token"),
                    format!("must be at least {MIN_TOKEN_LEN} characters without white space; {GENERATE_TOKEN}"),
                ));
            }
            if let Err(weak) = token_quality::check(&t.token) {
                return Err(ConfigError::invalid(
                    format!("{key}.token"),
                    format!("{weak}, so it is not a random token; {GENERATE_TOKEN}"),
                ));
            }
            if !tokens.insert(t.token.as_str()) {
                return Err(ConfigError::invalid(format!("{key}.token"), "is used by another token"));
            }
            if t.tenant.as_deref().is_some_and(|t| t.trim().is_empty()) {
                return Err(ConfigError::invalid(format!("{key}.tenant"), "must not be empty"));
            }
        }
        nonzero("admin.secret_rotation_overlap", a.secret_rotation_overlap)?;
        positive("admin.max_body_bytes", a.max_body_bytes)?;
        if a.default_page_size == 0 || a.default_page_size > MAX_PAGE_SIZE {
            return Err(ConfigError::invalid(
                "admin.default_page_size",
                format!("must be 1 to {}", MAX_PAGE_SIZE),
            ));
        }
        let catalogs = a.load_catalogs()?;
        if !a.default_catalog.is_empty() && catalogs.get(&a.default_catalog).is_none() {
            return Err(ConfigError::invalid(
                "admin.default_catalog",
                format!("no catalog named `{}`", a.default_catalog),
            ));
        }
        for (tenant, t) in &a.tenants {
            if !t.catalog.is_empty() && catalogs.get(&t.catalog).is_none() {
                return Err(ConfigError::invalid(
                    format!("admin.tenants.\"{tenant}\".catalog"),
                    format!("no catalog named `{}`", t.catalog),
                ));
            }
        }
        let connectors = connector::Connectors::load(&self.admin.connector_files, &catalogs)
            .map_err(|e| ConfigError::invalid("admin.connector_files", e.to_string()))?;
        self.admin.catalogs = Arc::new(catalogs);
        self.admin.connectors = Arc::new(connectors);
        Ok(())
    }

    /// Checks what types alone cannot say.
    /// Checks every section; the first problem found is named by its key.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        self.validate_kafka()?;
        self.validate_redis()?;
        self.validate_envelope()?;
        self.validate_delivery()?;
        self.validate_dead_letter()?;
        self.validate_retry()?;
        self.validate_history()?;
        self.validate_admin()?;
        self.validate_portal()?;
        if self.system_events.max_pending == 0 {
            return Err(ConfigError::invalid("system_events.max_pending", "must be at least 1"));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| ConfigError::invalid("log.level", e.to_string()))?;
        Ok(())
    }

    /// `[kafka]`, and the dead-letter topic against the sources.
    fn validate_kafka(&self) -> Result<(), ConfigError> {
        let k = &self.kafka;
        if k.brokers.trim().is_empty() {
            return Err(ConfigError::invalid("kafka.brokers", "must not be empty"));
        }
        if k.group_id.trim().is_empty() {
            return Err(ConfigError::invalid("kafka.group_id", "must not be empty"));
        }
        if k.topics.is_empty() || k.topics.iter().any(|t| t.trim().is_empty()) {
            return Err(ConfigError::invalid(
                "kafka.topics",
                "must list at least one non-empty topic",
            ));
        }
        if k.topics.contains(&self.dead_letter.topic) {
            return Err(ConfigError::invalid(
                "dead_letter.topic",
                "must not also be a source topic (failures would loop)",
            ));
        }
        positive("kafka.max_in_flight_per_partition", k.max_in_flight_per_partition)?;
        positive("kafka.max_in_flight", k.max_in_flight)?;
        positive("kafka.max_in_flight_bytes", k.max_in_flight_bytes)?;
        if k.created_topic_partitions < 1 {
            return Err(ConfigError::invalid(
                "kafka.created_topic_partitions",
                "must be at least 1",
            ));
        }
        nonzero("kafka.progress_check_interval", k.progress_check_interval)?;
        if k.properties.contains_key("group.protocol") || k.consumer_properties.contains_key("group.protocol") {
            return Err(ConfigError::invalid(
                "kafka.consumer_properties.\"group.protocol\"",
                "is chosen with kafka.group_protocol (classic or consumer)",
            ));
        }
        if k.group_protocol == GroupProtocol::Consumer {
            for key in CLASSIC_ONLY_PROPERTIES {
                if k.properties.contains_key(key) || k.consumer_properties.contains_key(key) {
                    return Err(ConfigError::invalid(
                        format!("kafka.consumer_properties.\"{key}\""),
                        "belongs to the classic group protocol; with kafka.group_protocol = \"consumer\" \
                         the broker sets it (group.consumer.* broker settings)",
                    ));
                }
            }
        }
        for key in ["enable.auto.offset.store", "group.id", "bootstrap.servers"] {
            if k.properties.contains_key(key) || k.consumer_properties.contains_key(key) {
                return Err(ConfigError::invalid(
                    format!("kafka.properties.\"{key}\""),
                    "is set by Herald itself and cannot be overridden",
                ));
            }
        }
        Ok(())
    }

    /// `[redis]` and `[subscriptions]`.
    fn validate_redis(&self) -> Result<(), ConfigError> {
        if self.redis.prefix.is_empty() {
            return Err(ConfigError::invalid("redis.prefix", "must not be empty"));
        }
        redis::parse_redis_url(&self.redis.url)
            .ok_or_else(|| ConfigError::invalid("redis.url", "is not a redis:// URL"))?;
        nonzero("subscriptions.resync_interval", self.subscriptions.resync_interval)?;
        positive("subscriptions.prepared_webhooks", self.subscriptions.prepared_webhooks)?;
        nonzero(
            "subscriptions.reconnect_min_delay",
            self.subscriptions.reconnect_min_delay,
        )?;
        if self.subscriptions.reconnect_max_delay < self.subscriptions.reconnect_min_delay {
            return Err(ConfigError::invalid(
                "subscriptions.reconnect_max_delay",
                "must not be shorter than subscriptions.reconnect_min_delay",
            ));
        }
        Ok(())
    }

    /// `[envelope]`: every topic's rules compile.
    fn validate_envelope(&self) -> Result<(), ConfigError> {
        self.envelope
            .default
            .compile()
            .map_err(|e| ConfigError::invalid("envelope.default", e.to_string()))?;
        for (topic, rules) in &self.envelope.topics {
            rules
                .compile()
                .map_err(|e| ConfigError::invalid(format!("envelope.topics.\"{topic}\""), e.to_string()))?;
        }
        Ok(())
    }

    /// `[delivery]`.
    fn validate_delivery(&self) -> Result<(), ConfigError> {
        let d = &self.delivery;
        nonzero("delivery.connect_timeout", d.connect_timeout)?;
        nonzero("delivery.resolve_timeout", d.resolve_timeout)?;
        nonzero("delivery.resolve_cache_ttl", d.resolve_cache_ttl)?;
        nonzero("delivery.request_timeout", d.request_timeout)?;
        positive("delivery.max_in_flight", d.max_in_flight)?;
        positive("delivery.max_in_flight_per_endpoint", d.max_in_flight_per_endpoint)?;
        positive("delivery.max_in_flight_per_tenant", d.max_in_flight_per_tenant)?;
        positive("delivery.max_in_flight_per_host", d.max_in_flight_per_host)?;
        for (host, n) in &d.max_in_flight_by_host {
            positive(&format!("delivery.max_in_flight_by_host.\"{host}\""), *n)?;
        }
        if d.allow_ports.is_empty() {
            return Err(ConfigError::invalid(
                "delivery.allow_ports",
                "must name at least one port (\"1-65535\" allows every port)",
            ));
        }
        nonzero("delivery.max_queue_wait", d.max_queue_wait)?;
        Ok(())
    }

    /// `[dead_letter]`, `[shutdown]` and `[ops]`.
    fn validate_dead_letter(&self) -> Result<(), ConfigError> {
        if self.dead_letter.topic.trim().is_empty() {
            return Err(ConfigError::invalid("dead_letter.topic", "must not be empty"));
        }
        nonzero(
            "dead_letter.produce_retry_min_delay",
            self.dead_letter.produce_retry_min_delay,
        )?;
        nonzero("shutdown.drain_timeout", self.shutdown.drain_timeout)?;
        nonzero("ops.stall_after", self.ops.stall_after)?;
        let (ops, admin) = (&self.ops, &self.admin);
        for (section, connections, head, request) in [
            ("ops", ops.max_connections, ops.header_read_timeout, ops.request_timeout),
            (
                "admin",
                admin.max_connections,
                admin.header_read_timeout,
                admin.request_timeout,
            ),
        ] {
            positive(&format!("{section}.max_connections"), connections)?;
            nonzero(&format!("{section}.header_read_timeout"), head)?;
            nonzero(&format!("{section}.request_timeout"), request)?;
        }
        Ok(())
    }

    /// `[retry]`: tiers, the redrive topic, and the retention each needs.
    fn validate_retry(&self) -> Result<(), ConfigError> {
        let k = &self.kafka;
        let r = &self.retry;
        if !(0.0..1.0).contains(&r.jitter) {
            return Err(ConfigError::invalid("retry.jitter", "must be at least 0 and below 1"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, tier) in r.tiers.iter().enumerate() {
            let key = format!("retry.tiers[{i}]");
            if tier.topic.trim().is_empty() {
                return Err(ConfigError::invalid(format!("{key}.topic"), "must not be empty"));
            }
            if !seen.insert(tier.topic.as_str())
                || tier.topic == self.dead_letter.topic
                || k.topics.contains(&tier.topic)
            {
                return Err(ConfigError::invalid(
                    format!("{key}.topic"),
                    "must differ from every other tier, source and dead-letter topic",
                ));
            }
            nonzero(&format!("{key}.delay"), tier.delay)?;
            if tier.max_delay.is_some_and(|m| m < tier.delay) {
                return Err(ConfigError::invalid(
                    format!("{key}.max_delay"),
                    "must not be shorter than the delay",
                ));
            }
        }
        if r.redrive_topic.trim().is_empty() {
            return Err(ConfigError::invalid("retry.redrive_topic", "must not be empty"));
        }
        if seen.contains(r.redrive_topic.as_str())
            || r.redrive_topic == self.dead_letter.topic
            || k.topics.contains(&r.redrive_topic)
        {
            return Err(ConfigError::invalid(
                "retry.redrive_topic",
                "must differ from every tier, source and dead-letter topic",
            ));
        }
        positive("retry.max_out_of_order", r.max_out_of_order)?;
        positive("retry.max_out_of_order_bytes", r.max_out_of_order_bytes)?;
        for status in &r.final_statuses {
            if !(300..=599).contains(status) {
                return Err(ConfigError::invalid(
                    "retry.final_statuses",
                    format!("{status} is not a failure status (300 to 599)"),
                ));
            }
        }
        for (i, wait) in r.wait_topics().all().iter().enumerate() {
            if wait.retention < wait.longest + waits::RANGE_SLACK {
                let key = match wait.tier {
                    Some(_) => format!("retry.tiers[{i}].retention"),
                    None => "retry.redrive_retention".to_owned(),
                };
                return Err(ConfigError::invalid(
                    key,
                    format!(
                        "must keep records at least as long as one may wait there ({}, plus a minute)",
                        humantime::format_duration(wait.longest)
                    ),
                ));
            }
        }
        nonzero("dead_letter.retention", self.dead_letter.retention)?;
        if r.group_id.as_deref() == Some(k.group_id.as_str()) {
            return Err(ConfigError::invalid(
                "retry.group_id",
                "must differ from kafka.group_id (the tier consumers are a group of their own)",
            ));
        }
        Ok(())
    }

    /// `[history]`.
    fn validate_history(&self) -> Result<(), ConfigError> {
        let k = &self.kafka;
        let h = &self.history;
        positive("history.max_per_webhook", h.max_per_webhook)?;
        positive("history.max_deliveries_per_webhook", h.max_deliveries_per_webhook)?;
        nonzero("history.max_age", h.max_age)?;
        nonzero("history.flush_interval", h.flush_interval)?;
        positive("history.queue_capacity", h.queue_capacity)?;
        positive("history.queue_capacity_bytes", h.queue_capacity_bytes)?;
        if h.topic()
            .is_some_and(|t| t == self.dead_letter.topic || k.topics.iter().any(|s| s == t))
        {
            return Err(ConfigError::invalid(
                "history.topic",
                "must differ from the source and dead-letter topics",
            ));
        }
        Ok(())
    }
}

/// Whether `list` is a CSP `frame-ancestors` source list Herald can put in
/// a header as it is: at least one source, each one word without `;` or `,`.
pub fn check_frame_ancestors(list: &[String]) -> Result<(), String> {
    if list.is_empty() {
        return Err("must name at least one source (\"'none'\" for no one)".into());
    }
    if list.len() > MAX_FRAME_ANCESTORS {
        return Err(format!("must name at most {MAX_FRAME_ANCESTORS} sources"));
    }
    match list.iter().find(|s| {
        s.is_empty()
            || s.len() > 256
            || s.contains([';', ','])
            || s.chars().any(|c| c.is_whitespace() || c.is_control())
    }) {
        Some(bad) => Err(format!("`{bad}` is not one CSP source")),
        None => Ok(()),
    }
}

/// The most sources a `frame_ancestors` list may name.
pub const MAX_FRAME_ANCESTORS: usize = 32;

fn positive(key: &str, value: usize) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::invalid(key, "must be at least 1"));
    }
    Ok(())
}

fn nonzero(key: &str, value: Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(ConfigError::invalid(key, "must be longer than 0s"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_load_and_validate() {
        let config = Config::from_toml_overlay("").expect("defaults are valid");
        assert_eq!(config.kafka.group_id, "herald");
        assert_eq!(config.dead_letter.topic, "herald.dlq");
        let delays: Vec<u64> = config.retry.tiers.iter().map(|t| t.delay.as_secs()).collect();
        assert_eq!(
            delays,
            [3600, 3 * 3600, 86400, 3 * 86400, 7 * 86400],
            "1h, 3h, 1d, 3d, 1w"
        );
        assert!(config.delivery.allow_cidrs.is_empty(), "SSRF-safe by default");
    }

    #[test]
    fn an_invalid_value_names_its_key() {
        let err = Config::from_toml_overlay("[kafka]\nmax_in_flight = 0").unwrap_err();
        assert!(err.to_string().contains("kafka.max_in_flight"), "{err}");

        let err = Config::from_toml_overlay("[delivery]\nrequest_timeout = \"soon\"").unwrap_err();
        assert!(err.to_string().contains("request_timeout"), "{err}");

        let err = Config::from_toml_overlay("[kafka]\nbrokerz = \"x\"").unwrap_err();
        assert!(err.to_string().contains("brokerz"), "{err}");

        let err = Config::from_toml_overlay("[envelope.topics.t]\nevent_type = \"nonsense\"").unwrap_err();
        assert!(err.to_string().contains("envelope.topics.t.event_type"), "{err}");
    }

    #[test]
    fn properties_may_be_dotted_nested_or_quoted() {
        let config = Config::from_toml_overlay(
            "[kafka.properties]\n\"security.protocol\" = \"SASL_SSL\"\nsasl.mechanisms = \"PLAIN\"\n\
             [kafka.consumer_properties]\nfetch.wait.max.ms = 100\nenable.partition.eof = false",
        )
        .unwrap();
        assert_eq!(config.kafka.properties["security.protocol"], "SASL_SSL");
        assert_eq!(config.kafka.properties["sasl.mechanisms"], "PLAIN");
        assert_eq!(config.kafka.consumer_properties["fetch.wait.max.ms"], "100");
        assert_eq!(config.kafka.consumer_properties["enable.partition.eof"], "false");
    }

    #[test]
    fn herald_controlled_properties_cannot_be_overridden() {
        let err = Config::from_toml_overlay("[kafka.properties]\n\"enable.auto.offset.store\" = \"true\"").unwrap_err();
        assert!(err.to_string().contains("enable.auto.offset.store"), "{err}");
    }

    #[test]
    fn retry_tiers_are_checked() {
        let tiers = |t: &str| Config::from_toml_overlay(&format!("[retry]\ntiers = [{t}]"));
        assert!(tiers("").is_ok(), "no tiers: failures go to the dead-letter topic");
        assert!(tiers("{ topic = \"r1\", delay = \"1s\" }").is_ok());
        let err = tiers("{ topic = \"herald.dlq\", delay = \"1s\" }").unwrap_err();
        assert!(err.to_string().contains("retry.tiers[0].topic"), "{err}");
        let err = tiers("{ topic = \"a\", delay = \"1s\" }, { topic = \"a\", delay = \"2s\" }").unwrap_err();
        assert!(err.to_string().contains("retry.tiers[1].topic"), "{err}");
        let err = tiers("{ topic = \"a\", delay = \"0s\" }").unwrap_err();
        assert!(err.to_string().contains("retry.tiers[0].delay"), "{err}");
        let err = Config::from_toml_overlay("[retry]\njitter = 1.5").unwrap_err();
        assert!(err.to_string().contains("retry.jitter"), "{err}");
    }

    #[test]
    fn retention_redrive_and_final_statuses_are_checked() {
        let err = |overlay: &str| Config::from_toml_overlay(overlay).unwrap_err().to_string();
        assert!(
            err("[retry]\ntiers = [{ topic = \"a\", delay = \"1h\", retention = \"2h\" }]")
                .contains("retry.tiers[0].retention")
        );
        assert!(
            Config::from_toml_overlay("[retry]\ntiers = [{ topic = \"a\", delay = \"1h\", retention = \"4h\" }]")
                .is_ok()
        );
        assert!(err("[retry]\nredrive_topic = \"herald.retry.1h\"").contains("retry.redrive_topic"));
        assert!(err("[retry]\nredrive_topic = \"herald.dlq\"").contains("retry.redrive_topic"));
        assert!(err("[retry]\nredrive_retention = \"1h\"").contains("retry.redrive_retention"));
        assert!(err("[retry]\nfinal_statuses = [200]").contains("retry.final_statuses"));
        assert!(err("[retry]\nmax_out_of_order = 0").contains("retry.max_out_of_order"));
        assert!(err("[dead_letter]\nretention = \"0s\"").contains("dead_letter.retention"));
        let config = Config::from_toml_overlay("[retry]\nfinal_statuses = [400, 422]").unwrap();
        assert_eq!(config.retry.final_statuses, [400, 422]);
    }

    #[test]
    fn the_redis_password_never_shows() {
        let config =
            Config::from_toml_overlay("[redis]\nurl = \"redis://herald:s3cr3t-pass@redis.internal:6380/2\"").unwrap();
        let shown = config.redis.redacted_url();
        assert_eq!(shown, "redis://herald:***@redis.internal:6380/2");
        assert!(!format!("{config:?}").contains("s3cr3t-pass"), "nor in debug output");
    }

    #[test]
    fn the_redis_client_keeps_the_url_and_sends_no_client_setinfo() {
        let config =
            Config::from_toml_overlay("[redis]\nurl = \"redis://herald:s3cr3t-pass@redis.internal:6380/2\"").unwrap();
        let client = config.redis.client().unwrap();
        let settings = client.get_connection_info().redis_settings();
        assert_eq!(
            (settings.username(), settings.password(), settings.db()),
            (Some("herald"), Some("s3cr3t-pass"), 2)
        );
        assert!(
            settings.skip_set_lib_name(),
            "no CLIENT SETINFO, which the ACL does not allow"
        );
    }

    #[test]
    fn the_dead_letter_topic_cannot_be_a_source() {
        let err = Config::from_toml_overlay("[kafka]\ntopics = [\"herald.dlq\"]").unwrap_err();
        assert!(err.to_string().contains("dead_letter.topic"), "{err}");
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's test jail returns its own error type
    fn environment_overrides_files() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("HERALD_KAFKA__GROUP_ID", "from-env");
            jail.set_env("HERALD_DELIVERY__ALLOW_CIDRS", "[\"127.0.0.0/8\"]");
            jail.set_env("HERALD_CONFIG", "herald.toml");
            jail.set_env("HERALD_TEST_BROKERS", "elsewhere:9092");
            jail.set_env("HERALD_KAFKA__PROPERTIES__SASL__USERNAME", "herald");
            jail.set_env("HERALD_KAFKA__CONSUMER_PROPERTIES__SESSION__TIMEOUT__MS", "6000");
            jail.create_file("herald.toml", "[kafka]\ngroup_id = \"from-file\"\nbrokers = \"b:9092\"")?;
            let config = Config::load(Some(Path::new("herald.toml"))).expect("loads");
            assert_eq!(config.kafka.group_id, "from-env");
            assert_eq!(config.kafka.brokers, "b:9092");
            assert_eq!(config.delivery.allow_cidrs.len(), 1);
            assert_eq!(config.kafka.properties["sasl.username"], "herald");
            assert_eq!(config.kafka.consumer_properties["session.timeout.ms"], "6000");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn the_operations_listener_is_read_under_its_old_name_with_a_notice() {
        let current = Config::from_toml_overlay("[ops]\nlisten = \"127.0.0.1:9001\"").unwrap();
        assert_eq!(current.ops.listen.port(), 9001);
        assert!(current.notices.is_empty());
        let old = Config::from_toml_overlay("[http]\nlisten = \"127.0.0.1:9002\"").unwrap();
        assert_eq!(old.ops.listen.port(), 9002);
        assert_eq!(
            old.ops.stall_after, current.ops.stall_after,
            "the rest keeps its default"
        );
        assert_eq!(old.notices.len(), 1);
        assert!(old.notices[0].contains("`[http]` is now `[ops]`"), "{:?}", old.notices);
        let err = Config::from_toml_overlay(
            "[kafka]\ngroup_protocol = \"consumer\"\n[kafka.consumer_properties]\n\"session.timeout.ms\" = \"6000\"",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("kafka.consumer_properties.\"session.timeout.ms\""),
            "{err}"
        );
        assert!(err.contains("the broker sets it"), "{err}");
        let err = Config::from_toml_overlay("[kafka.consumer_properties]\n\"group.protocol\" = \"consumer\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("kafka.group_protocol"), "{err}");
        for weak in ["a".repeat(32), "change-me-change-me-change-me-change-me".to_owned()] {
            let err = Config::from_toml_overlay(&format!("[portal]\nsigning_key = \"{weak}\""))
                .unwrap_err()
                .to_string();
            assert!(err.contains("portal.signing_key"), "{err}");
            assert!(err.contains("not a random key"), "{err}");
        }
        let err = Config::from_toml_overlay("[kafka]\nprogress_check_interval = \"0s\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("kafka.progress_check_interval"), "{err}");
        let invalid = Config::from_toml_overlay("[http]\nstall_after = \"0s\"").unwrap_err();
        assert!(invalid.to_string().contains("ops.stall_after"), "{invalid}");
        figment::Jail::expect_with(|jail| {
            jail.set_env("HERALD_HTTP__LISTEN", "127.0.0.1:9003");
            let config = Config::load(None).expect("loads");
            assert_eq!(config.ops.listen.port(), 9003);
            assert!(config.notices[0].contains("HERALD_OPS__*"), "{:?}", config.notices);
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn admin_tokens_come_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "HERALD_ADMIN__TOKENS",
                r#"[{name="ops", token="ops-5c0e9a3f71d2b846e0a7"}, {name="acme", token="acme-b29f61d07c4e8a35f1c6", tenant="acme"}]"#,
            );
            let config = Config::load(None).expect("loads");
            assert!(config.admin.enabled());
            assert_eq!(config.admin.tokens[1].tenant.as_deref(), Some("acme"));
            assert!(
                !format!("{:?}", config.admin.tokens).contains("5c0e9a3f"),
                "tokens are not in debug output"
            );
            Ok(())
        });
    }

    #[test]
    fn the_catalogs_are_read_with_the_configuration() {
        let config = Config::from_toml_overlay("").unwrap();
        let names: Vec<&str> = config.admin.catalogs.all().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["iam", "jam", "jimo"]);
    }

    #[test]
    fn admin_settings_are_checked() {
        let err = |overlay: &str| Config::from_toml_overlay(overlay).unwrap_err().to_string();
        assert!(err("[admin]\ntokens = [{ name = \"a\", token = \"short\" }]").contains("admin.tokens[0].token"));
        let dup = "[admin]\ntokens = [{ name = \"a\", token = \"9e4d1f7a0c3b6e2d58a1f4c7\" }, { name = \"a\", token = \"2b7f0e9c4a1d6f3e85c2a0b9\" }]";
        assert!(err(dup).contains("admin.tokens[1].name"));
        let same = "[admin]\ntokens = [{ name = \"a\", token = \"9e4d1f7a0c3b6e2d58a1f4c7\" }, { name = \"b\", token = \"9e4d1f7a0c3b6e2d58a1f4c7\" }]";
        assert!(err(same).contains("admin.tokens[1].token"));
        for placeholder in ["change-me-to-32-random-characters", "compose-admin-token-change-me"] {
            let e = err(&format!(
                "[admin]\ntokens = [{{ name = \"ops\", token = \"{placeholder}\" }}]"
            ));
            assert!(e.contains("`admin.tokens[0].token`"), "{e}");
            assert!(e.contains("placeholder"), "{e}");
            assert!(e.contains("openssl rand -hex 32"), "{e}");
            assert!(!e.contains(placeholder), "the token itself is not shown: {e}");
        }
        let e = err("[admin]\ntokens = [{ name = \"ops\", token = \"ops-token-0123456789abcdef\" }]");
        assert!(
            e.contains("consecutive characters") && e.contains("openssl rand -hex 32"),
            "{e}"
        );
        assert!(err("[admin]\ndefault_catalog = \"nope\"").contains("admin.default_catalog"));
        assert!(err("[admin.tenants]\nacme = { catalog = \"nope\" }").contains("admin.tenants.\"acme\".catalog"));
        assert!(err("[admin]\ndefault_page_size = 0").contains("admin.default_page_size"));
        assert!(Config::from_toml_overlay("[admin.tenants]\nacme = { catalog = \"jimo\" }").is_ok());
    }
}

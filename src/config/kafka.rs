//! `[kafka]`: the source consumer group and the producer, with the
//! librdkafka properties passed through to them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::{nonzero, positive, ConfigError};

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

impl KafkaConfig {
    /// Checks `[kafka]`: the group, the source topics, the in-flight limits,
    /// and the librdkafka properties Herald sets itself or that the group
    /// protocol refuses.
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        let k = self;
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
        for key in [
            "enable.auto.offset.store",
            "isolation.level",
            "group.id",
            "bootstrap.servers",
        ] {
            if k.properties.contains_key(key) || k.consumer_properties.contains_key(key) {
                return Err(ConfigError::invalid(
                    format!("kafka.properties.\"{key}\""),
                    "is set by Herald itself and cannot be overridden",
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

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
        let err = Config::from_toml_overlay("[kafka.consumer_properties]\n\"isolation.level\" = \"read_uncommitted\"")
            .unwrap_err();
        assert!(err.to_string().contains("isolation.level"), "{err}");
    }

    #[test]
    fn the_group_protocol_and_its_properties_are_checked() {
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
        let err = Config::from_toml_overlay("[kafka]\nprogress_check_interval = \"0s\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("kafka.progress_check_interval"), "{err}");
    }
}

//! `[retry]`: the retry tiers (one Kafka delay topic each) and the redrive
//! topic, with the retention each needs.

use std::time::Duration;

use serde::Deserialize;

use super::kafka::KafkaConfig;
use super::waits;
use super::{nonzero, positive, ConfigError};

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
    /// The shortest a delivery waiting for its key's turn (a webhook with
    /// `ordering`) waits before it looks again, while the head is attempted.
    #[serde(with = "humantime_serde")]
    pub ordering_recheck: Duration,
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

impl RetryConfig {
    /// Checks `[retry]`: the jitter, the tiers and the redrive topic (each
    /// a topic of its own, apart from `kafka`'s sources and the
    /// `dead_letter` topic), the retention each needs, the final statuses and
    /// the tier consumers' group.
    pub(super) fn check(&self, kafka: &KafkaConfig, dead_letter: &str) -> Result<(), ConfigError> {
        let k = kafka;
        let r = self;
        if !(0.0..1.0).contains(&r.jitter) {
            return Err(ConfigError::invalid("retry.jitter", "must be at least 0 and below 1"));
        }
        let mut seen = std::collections::BTreeSet::new();
        for (i, tier) in r.tiers.iter().enumerate() {
            let key = format!("retry.tiers[{i}]");
            if tier.topic.trim().is_empty() {
                return Err(ConfigError::invalid(format!("{key}.topic"), "must not be empty"));
            }
            if !seen.insert(tier.topic.as_str()) || tier.topic == dead_letter || k.topics.contains(&tier.topic) {
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
            || r.redrive_topic == dead_letter
            || k.topics.contains(&r.redrive_topic)
        {
            return Err(ConfigError::invalid(
                "retry.redrive_topic",
                "must differ from every tier, source and dead-letter topic",
            ));
        }
        positive("retry.max_out_of_order", r.max_out_of_order)?;
        positive("retry.max_out_of_order_bytes", r.max_out_of_order_bytes)?;
        nonzero("retry.ordering_recheck", r.ordering_recheck)?;
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
        if r.group_id.as_deref() == Some(k.group_id.as_str()) {
            return Err(ConfigError::invalid(
                "retry.group_id",
                "must differ from kafka.group_id (the tier consumers are a group of their own)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

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
        assert!(err("[retry]\nordering_recheck = \"0s\"").contains("retry.ordering_recheck"));
        assert!(err("[dead_letter]\nretention = \"0s\"").contains("dead_letter.retention"));
        let config = Config::from_toml_overlay("[retry]\nfinal_statuses = [400, 422]").unwrap();
        assert_eq!(config.retry.final_statuses, [400, 422]);
    }
}

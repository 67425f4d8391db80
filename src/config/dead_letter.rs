//! `[dead_letter]`: where deliveries that did not succeed, and unusable
//! events, are kept.

use std::time::Duration;

use serde::Deserialize;

use super::{nonzero, ConfigError};

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

impl DeadLetterConfig {
    /// Checks `[dead_letter]`: a topic that is not one of the `sources`
    /// (failures would loop), a retention, and a produce retry delay.
    pub(super) fn check(&self, sources: &[String]) -> Result<(), ConfigError> {
        if self.topic.trim().is_empty() {
            return Err(ConfigError::invalid("dead_letter.topic", "must not be empty"));
        }
        if sources.contains(&self.topic) {
            return Err(ConfigError::invalid(
                "dead_letter.topic",
                "must not also be a source topic (failures would loop)",
            ));
        }
        nonzero("dead_letter.produce_retry_min_delay", self.produce_retry_min_delay)?;
        nonzero("dead_letter.retention", self.retention)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn the_dead_letter_topic_cannot_be_a_source() {
        let err = Config::from_toml_overlay("[kafka]\ntopics = [\"herald.dlq\"]").unwrap_err();
        assert!(err.to_string().contains("dead_letter.topic"), "{err}");
    }
}

//! `[history]`: delivery history and statistics, and the attempts topic.

use std::time::Duration;

use serde::Deserialize;

use super::{nonzero, positive, ConfigError};

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

impl HistoryConfig {
    /// Checks `[history]`: the limits, and an attempts topic that is
    /// neither one of the `sources` nor the `dead_letter` topic.
    pub(super) fn check(&self, sources: &[String], dead_letter: &str) -> Result<(), ConfigError> {
        let h = self;
        positive("history.max_per_webhook", h.max_per_webhook)?;
        positive("history.max_deliveries_per_webhook", h.max_deliveries_per_webhook)?;
        nonzero("history.max_age", h.max_age)?;
        nonzero("history.flush_interval", h.flush_interval)?;
        positive("history.queue_capacity", h.queue_capacity)?;
        positive("history.queue_capacity_bytes", h.queue_capacity_bytes)?;
        if h.topic()
            .is_some_and(|t| t == dead_letter || sources.iter().any(|s| s == t))
        {
            return Err(ConfigError::invalid(
                "history.topic",
                "must differ from the source and dead-letter topics",
            ));
        }
        Ok(())
    }
}

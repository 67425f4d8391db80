//! `[subscriptions]`: how the in-memory subscription index follows Redis.

use std::time::Duration;

use serde::Deserialize;

use super::{nonzero, positive, ConfigError};

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

impl SubscriptionsConfig {
    /// Checks `[subscriptions]`: the intervals and the reconnection delays.
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        nonzero("subscriptions.resync_interval", self.resync_interval)?;
        positive("subscriptions.prepared_webhooks", self.prepared_webhooks)?;
        nonzero("subscriptions.reconnect_min_delay", self.reconnect_min_delay)?;
        if self.reconnect_max_delay < self.reconnect_min_delay {
            return Err(ConfigError::invalid(
                "subscriptions.reconnect_max_delay",
                "must not be shorter than subscriptions.reconnect_min_delay",
            ));
        }
        Ok(())
    }
}

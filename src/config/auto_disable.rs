//! `[auto_disable]`: when Herald disables a failing webhook by itself.

use std::time::Duration;

use serde::Deserialize;

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

//! The topics where retries wait, as the configuration lays them out: one
//! per retry tier and the redrive topic, each with the band of waits its
//! records are written with, the longest any may wait, and the retention
//! that needs. How a waiting record is then held and delivered is
//! `retry::wait`'s.

use std::time::{Duration, SystemTime};

use crate::config::retry::RetryConfig;

/// Slack for clocks and rounding when a record's wait is compared with its
/// topic's band.
pub const BAND_TOLERANCE: Duration = Duration::from_secs(2);

/// How far beyond its topic's longest wait a due time may be (clock skew
/// between replicas) before the record is refused as out of range.
pub const RANGE_SLACK: Duration = Duration::from_secs(60);

/// The retention a wait topic gets by default: twice the longest wait in
/// it, at least a day.
fn default_retention(longest: Duration) -> Duration {
    (longest * 2).max(Duration::from_secs(86_400))
}

/// One topic where retries wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitTopic {
    pub topic: String,
    /// The tier it belongs to; `None` for the redrive topic.
    pub tier: Option<usize>,
    /// The band of waits its records are written with: delay x (1 +- jitter)
    /// for a tier, zero for the redrive topic.
    pub shortest: Duration,
    pub longest_in_order: Duration,
    /// The longest any record may wait in it (a `Retry-After` up to the
    /// tier's `max_delay`; for the redrive topic, the longest of any tier).
    pub longest: Duration,
    /// The retention it needs, and gets when Herald creates it.
    pub retention: Duration,
}

impl WaitTopic {
    /// Whether a record waiting `wait` from when it was written is in order here.
    pub fn in_band(&self, wait: Duration) -> bool {
        wait + BAND_TOLERANCE >= self.shortest && wait <= self.longest_in_order + BAND_TOLERANCE
    }
}

/// Every wait topic: the tiers in order, then the redrive topic.
#[derive(Debug, Clone)]
pub struct WaitTopics {
    topics: Vec<WaitTopic>,
}

/// A due time further ahead than the topic it was read from allows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("due in {}, beyond the longest wait of `{topic}` ({})", humantime::format_duration(*.wait), humantime::format_duration(*.longest))]
pub struct OutOfRange {
    pub topic: String,
    pub wait: Duration,
    pub longest: Duration,
}

impl WaitTopics {
    /// The wait topics `retry` implies: its tiers, then the redrive topic.
    pub fn new(retry: &RetryConfig) -> WaitTopics {
        let mut topics: Vec<WaitTopic> = retry
            .tiers
            .iter()
            .enumerate()
            .map(|(i, tier)| {
                let longest_in_order = tier.delay.mul_f64(1.0 + retry.jitter);
                let longest = longest_in_order.max(tier.max_delay());
                WaitTopic {
                    topic: tier.topic.clone(),
                    tier: Some(i),
                    shortest: tier.delay.mul_f64(1.0 - retry.jitter),
                    longest_in_order,
                    longest,
                    retention: tier.retention.unwrap_or(default_retention(longest)),
                }
            })
            .collect();
        let longest = topics.iter().map(|t| t.longest).max().unwrap_or_default();
        topics.push(WaitTopic {
            topic: retry.redrive_topic.clone(),
            tier: None,
            shortest: Duration::ZERO,
            longest_in_order: Duration::ZERO,
            longest,
            retention: retry.redrive_retention.unwrap_or(default_retention(longest)),
        });
        WaitTopics { topics }
    }

    /// Every wait topic, tiers first.
    pub fn all(&self) -> &[WaitTopic] {
        &self.topics
    }

    /// Every wait topic's name, the redrive topic last.
    pub fn names(&self) -> Vec<String> {
        self.topics.iter().map(|t| t.topic.clone()).collect()
    }

    /// The wait topic called `topic`.
    pub fn get(&self, topic: &str) -> Option<&WaitTopic> {
        self.topics.iter().find(|t| t.topic == topic)
    }

    /// The redrive topic (manual retries and replays).
    pub fn redrive(&self) -> &WaitTopic {
        self.topics.last().expect("the redrive topic is always there")
    }

    /// Where a record with `wait` left before it is due waits when moved: the
    /// tier in whose band the wait falls (in order there), else the redrive
    /// topic (out of order there, never early in a paused partition).
    pub fn for_wait(&self, wait: Duration) -> &WaitTopic {
        self.topics
            .iter()
            .find(|t| t.tier.is_some() && t.shortest <= wait && wait <= t.longest_in_order)
            .unwrap_or_else(|| self.redrive())
    }

    /// Checks that a record read from `topic` is not due further ahead than
    /// any record there may be.
    pub fn check_range(&self, topic: &str, due: SystemTime, now: SystemTime) -> Result<(), OutOfRange> {
        let Some(t) = self.get(topic) else { return Ok(()) };
        let wait = due.duration_since(now).unwrap_or_default();
        if wait > t.longest + RANGE_SLACK {
            return Err(OutOfRange {
                topic: topic.to_owned(),
                wait,
                longest: t.longest,
            });
        }
        Ok(())
    }
}

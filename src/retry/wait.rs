//! Where retries wait, and when a waiting record may be delivered.
//!
//! Records wait in Kafka topics: one per retry tier, and the redrive topic
//! for what is due now (manual retries, replays). A tier's records are
//! written with a due time of "now + the tier's delay, jittered", so in a
//! tier partition they are in due order up to the jitter band: the tier
//! consumer can pause a partition behind its head record until that is due,
//! at no cost, and nothing behind it waits past the top of its own band.
//!
//! A record due later than its topic's band (a `Retry-After` beyond it) would
//! hold back everything behind it; it is *out of order*. The consumer holds
//! such records aside and reads on ([`crate::intake::consumer::Timing`]),
//! and moves one to the end of a wait topic ([`WaitTopics::for_wait`]) when
//! too many are held or too much was delivered past it.

use std::time::{Duration, SystemTime};

use crate::config::RetryConfig;
use crate::event::SourceRecord;
use crate::intake::consumer::{HoldPolicy, Timing};
use crate::retry::codec;

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

    pub fn names(&self) -> Vec<String> {
        self.topics.iter().map(|t| t.topic.clone()).collect()
    }

    pub fn get(&self, topic: &str) -> Option<&WaitTopic> {
        self.topics.iter().find(|t| t.topic == topic)
    }

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

impl HoldPolicy for WaitTopics {
    fn moves_in_order(&self, record: &SourceRecord, now: SystemTime) -> bool {
        let wait = codec::due_at(record)
            .and_then(|due| due.duration_since(now).ok())
            .unwrap_or_default();
        self.for_wait(wait).tier.is_some()
    }

    fn timing(&self, record: &SourceRecord, now: SystemTime) -> Timing {
        let (Some(topic), Some(due)) = (self.get(&record.topic), codec::due_at(record)) else {
            // Not Herald's record: delivery says why it cannot be used.
            return Timing::Now;
        };
        if due <= now || self.check_range(&record.topic, due, now).is_err() {
            // Due, or out of range (delivery dead-letters it).
            return Timing::Now;
        }
        let scheduled = codec::scheduled_at(record).unwrap_or(now);
        let wait = due.duration_since(scheduled).unwrap_or_default();
        if topic.in_band(wait) {
            Timing::InOrder(due)
        } else {
            Timing::OutOfOrder(due)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::event::RecordHeader;

    fn waits(jitter: f64) -> WaitTopics {
        let config = Config::from_toml_overlay(&format!(
            "[retry]\njitter = {jitter}\ntiers = [{{ topic = \"r1\", delay = \"1h\" }}, \
             {{ topic = \"r2\", delay = \"3h\", max_delay = \"4h\" }}]"
        ))
        .unwrap();
        WaitTopics::new(&config.retry)
    }

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000 + secs)
    }

    fn record(topic: &str, scheduled: SystemTime, due: SystemTime) -> SourceRecord {
        let ms = |t: SystemTime| codec::millis(t).to_string();
        SourceRecord {
            topic: topic.into(),
            partition: 0,
            offset: 0,
            timestamp_ms: None,
            key: None,
            value: Default::default(),
            headers: vec![
                RecordHeader {
                    name: codec::headers::RETRY_DUE_AT.into(),
                    value: Some(ms(due).into()),
                },
                RecordHeader {
                    name: codec::headers::RETRY_SCHEDULED_AT.into(),
                    value: Some(ms(scheduled).into()),
                },
            ],
        }
    }

    #[test]
    fn bands_longest_waits_and_retention_follow_the_schedule() {
        let w = waits(0.1);
        let r1 = w.get("r1").unwrap();
        assert_eq!(r1.shortest, Duration::from_secs(3240));
        assert_eq!(r1.longest_in_order, Duration::from_secs(3960));
        assert_eq!(r1.longest, Duration::from_secs(3 * 3600), "3 x delay by default");
        assert_eq!(r1.retention, Duration::from_secs(86_400), "at least a day");
        let r2 = w.get("r2").unwrap();
        assert_eq!(r2.longest, Duration::from_secs(4 * 3600));
        let week = Config::from_toml_overlay("").unwrap().retry.wait_topics();
        let w1 = week.get("herald.retry.1w").unwrap();
        assert_eq!(w1.longest, Duration::from_secs(21 * 86_400), "3 x 7d under Retry-After");
        assert_eq!(w1.retention, Duration::from_secs(42 * 86_400), "twice the longest wait");
        assert_eq!(week.redrive().retention, Duration::from_secs(42 * 86_400));
        let redrive = w.redrive();
        assert_eq!(redrive.topic, "herald.retry.redrive");
        assert_eq!(redrive.tier, None);
        assert_eq!(
            redrive.longest,
            Duration::from_secs(4 * 3600),
            "anything may be moved there"
        );
        assert_eq!(redrive.retention, Duration::from_secs(86_400), "at least a day");
    }

    #[test]
    fn records_in_their_band_wait_in_order_and_others_aside() {
        let w = waits(0.1);
        let now = at(0);
        let h = Duration::from_secs(3600);
        // Written now for an hour (+-10%): in order.
        assert_eq!(w.timing(&record("r1", now, now + h), now), Timing::InOrder(now + h));
        let late = now + h.mul_f64(1.1);
        assert_eq!(w.timing(&record("r1", now, late), now), Timing::InOrder(late));
        // A Retry-After of two hours in the one-hour tier: out of order.
        assert_eq!(
            w.timing(&record("r1", now, now + 2 * h), now),
            Timing::OutOfOrder(now + 2 * h)
        );
        // Read later than written: judged by the wait it was written with.
        let written = at(0);
        let read = written + Duration::from_secs(1800);
        assert_eq!(
            w.timing(&record("r1", written, written + h), read),
            Timing::InOrder(written + h)
        );
        // Due: now.
        assert_eq!(w.timing(&record("r1", now, now), now), Timing::Now);
        assert_eq!(w.timing(&record("r1", at(0), at(5)), at(10)), Timing::Now);
        // The redrive topic is in order only for what is due at once.
        assert_eq!(
            w.timing(&record("herald.retry.redrive", now, now + Duration::from_secs(1)), now),
            Timing::InOrder(now + Duration::from_secs(1))
        );
        assert_eq!(
            w.timing(&record("herald.retry.redrive", now, now + h), now),
            Timing::OutOfOrder(now + h)
        );
    }

    #[test]
    fn a_far_future_due_time_is_not_held() {
        let w = waits(0.1);
        let now = at(0);
        let years = now + Duration::from_secs(5 * 365 * 86_400);
        assert_eq!(
            w.timing(&record("r1", now, years), now),
            Timing::Now,
            "delivery refuses it"
        );
        let err = w.check_range("r1", years, now).unwrap_err();
        assert_eq!(err.topic, "r1");
        assert!(
            err.to_string().contains("beyond the longest wait of `r1` (3h)"),
            "{err}"
        );
        assert!(
            w.check_range("r1", now + Duration::from_secs(3 * 3600 + 30), now)
                .is_ok(),
            "slack for skew"
        );
        assert!(w.check_range("unknown", years, now).is_ok());
    }

    #[test]
    fn a_moved_record_waits_where_it_is_in_order_or_in_the_redrive_topic() {
        let w = waits(0.1);
        let m = |mins: u64| Duration::from_secs(mins * 60);
        assert_eq!(w.for_wait(m(60)).topic, "r1");
        assert_eq!(w.for_wait(m(55)).topic, "r1");
        assert_eq!(w.for_wait(m(170)).topic, "r2");
        assert_eq!(
            w.for_wait(m(10)).topic,
            "herald.retry.redrive",
            "never early behind an hour's records"
        );
        assert_eq!(w.for_wait(m(90)).topic, "herald.retry.redrive");
        assert_eq!(w.for_wait(m(239)).topic, "herald.retry.redrive");
    }

    #[test]
    fn moving_a_record_helps_only_when_it_is_in_order_where_it_goes() {
        let w = waits(0.1);
        let now = at(0);
        let m = |mins: u64| Duration::from_secs(mins * 60);
        assert!(
            w.moves_in_order(&record("r1", now, now + m(180)), now),
            "into the 3h tier's band"
        );
        assert!(
            !w.moves_in_order(&record("r1", now, now + m(100)), now),
            "only the redrive topic"
        );
        assert!(!w.moves_in_order(&record("herald.retry.redrive", now, now + m(5)), now));
    }

    #[test]
    fn with_no_tiers_the_redrive_topic_still_exists() {
        let config = Config::from_toml_overlay("[retry]\ntiers = []").unwrap();
        let w = WaitTopics::new(&config.retry);
        assert_eq!(w.all().len(), 1);
        assert_eq!(w.redrive().longest, Duration::ZERO);
        assert_eq!(w.for_wait(Duration::from_secs(5)).topic, w.redrive().topic);
    }
}

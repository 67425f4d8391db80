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
//! such records aside and reads on ([`crate::intake::hold::Timing`]),
//! and moves one to the end of a wait topic ([`WaitTopics::for_wait`]) when
//! too many are held or too much was delivered past it.

use std::time::SystemTime;

use crate::config::waits::WaitTopics;
use crate::event::SourceRecord;
use crate::intake::hold::{HoldPolicy, Timing};
use crate::retry::codec;

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
    use std::time::Duration;

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

//! When a failed delivery is tried again.
//!
//! Each retry tier is a Kafka topic with a fixed delay (by default 1 h, 3 h,
//! 1 d, 3 d, 1 w, as the webhook pages Herald serves promise). A failed
//! delivery moves to the next tier with a due time of now + the tier's delay,
//! jittered so that a mass failure does not come back as one burst. When the
//! endpoint asked for more time (`Retry-After` on a 429 or 503), the due time
//! is at least that, but never later than the tier's `max_delay`.

use std::time::{Duration, SystemTime};

use rand::Rng;

use crate::config::retry::Tier;

/// The retry schedule: tiers in order, and the jitter fraction.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub tiers: Vec<Tier>,
    /// Fraction of the delay added or removed at random, e.g. 0.1 for +-10%.
    pub jitter: f64,
}

impl Schedule {
    /// The schedule `retry` configures.
    pub fn of(retry: &crate::config::retry::RetryConfig) -> Schedule {
        Schedule {
            tiers: retry.tiers.clone(),
            jitter: retry.jitter,
        }
    }

    /// The delay before the retry in `tier`, given the endpoint's
    /// `Retry-After` (if any) and a random draw for the jitter.
    pub fn delay(&self, tier: usize, retry_after: Option<Duration>, rng: &mut impl Rng) -> Duration {
        let t = &self.tiers[tier];
        let factor = if self.jitter > 0.0 {
            1.0 + rng.random_range(-self.jitter..=self.jitter)
        } else {
            1.0
        };
        let jittered = t.delay.mul_f64(factor);
        match retry_after {
            Some(asked) => jittered.max(asked.min(t.max_delay())),
            None => jittered,
        }
    }

    /// The tier after `current` (`None` = first failure), or `None` when
    /// retries are exhausted.
    pub fn next_tier(&self, current: Option<usize>) -> Option<usize> {
        let next = current.map_or(0, |c| c + 1);
        (next < self.tiers.len()).then_some(next)
    }
}

/// Parses a `Retry-After` value: delay seconds, or an HTTP date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn schedule(jitter: f64) -> Schedule {
        Schedule {
            tiers: vec![
                Tier {
                    topic: "r1".into(),
                    delay: Duration::from_secs(3600),
                    max_delay: None,
                    retention: None,
                },
                Tier {
                    topic: "r2".into(),
                    delay: Duration::from_secs(3 * 3600),
                    max_delay: Some(Duration::from_secs(4 * 3600)),
                    retention: None,
                },
            ],
            jitter,
        }
    }

    #[test]
    fn tiers_follow_each_other_then_run_out() {
        let s = schedule(0.0);
        assert_eq!(s.next_tier(None), Some(0));
        assert_eq!(s.next_tier(Some(0)), Some(1));
        assert_eq!(s.next_tier(Some(1)), None);
        let empty = Schedule {
            tiers: vec![],
            jitter: 0.0,
        };
        assert_eq!(empty.next_tier(None), None);
    }

    #[test]
    fn jitter_stays_within_its_bounds_and_varies() {
        let s = schedule(0.1);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let delays: Vec<Duration> = (0..1000).map(|_| s.delay(0, None, &mut rng)).collect();
        let (lo, hi) = (Duration::from_secs(3240), Duration::from_secs(3960));
        assert!(delays.iter().all(|d| *d >= lo && *d <= hi));
        let min = delays.iter().min().unwrap();
        let max = delays.iter().max().unwrap();
        assert!(*max - *min > Duration::from_secs(600), "jitter spreads retries out");
    }

    #[test]
    fn retry_after_extends_the_delay_up_to_the_tier_maximum() {
        let s = schedule(0.0);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let h = |n: u64| Duration::from_secs(n * 3600);
        assert_eq!(
            s.delay(0, Some(Duration::from_secs(60)), &mut rng),
            h(1),
            "never sooner than the tier"
        );
        assert_eq!(s.delay(0, Some(h(2)), &mut rng), h(2));
        assert_eq!(
            s.delay(0, Some(h(10)), &mut rng),
            h(3),
            "clamped to 3 x delay by default"
        );
        assert_eq!(
            s.delay(1, Some(h(10)), &mut rng),
            h(4),
            "clamped to the configured max_delay"
        );
    }

    #[test]
    fn retry_after_parses_seconds_and_http_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(300));
        assert_eq!(parse_retry_after(&later, now), Some(Duration::from_secs(300)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(300));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(parse_retry_after("-5", now), None);
    }
}

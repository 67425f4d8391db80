//! Where one assigned partition stands, as far as the client and the broker
//! say: its end, its start, the group's committed offset and where the
//! client fetches next.
//!
//! Two sources feed it. librdkafka's statistics (every
//! `kafka.statistics_interval`) know the fetch position, but they learn a
//! partition's end only from fetch responses: a paused partition's end is
//! stale, and so would be its lag, exactly while records pile up behind a
//! held retry. The progress check ([`crate::intake::watchdog`]) asks the
//! broker for the end, start and committed offsets of every assigned
//! partition, paused or not. Each value is kept as the latest or the
//! furthest seen, so neither source can take the other's newer figure back.

/// Offsets of one partition, each known or not.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Observed {
    /// One past the last record (the high watermark, or the last stable
    /// offset under `read_committed`).
    pub end: Option<i64>,
    /// The first record still in the log.
    pub start: Option<i64>,
    /// The group's committed offset (the next record to read after a restart).
    pub committed: Option<i64>,
    /// The next offset the client fetches (statistics only).
    pub fetch: Option<i64>,
}

impl Observed {
    /// Reads librdkafka's numbers, where a negative value means "not known".
    pub fn from_client(end: i64, start: i64, committed: i64, fetch: i64) -> Observed {
        let known = |v: i64| (v >= 0).then_some(v);
        Observed {
            end: known(end),
            start: known(start),
            committed: known(committed),
            fetch: known(fetch),
        }
    }
}

/// What is known of one partition's offsets under one assignment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartitionPosition {
    seen: Observed,
}

impl PartitionPosition {
    /// Takes in a new observation. Ends, starts and commits only move
    /// forward (a stale report never moves them back); the fetch position
    /// is the latest reported, since a pause legitimately moves it back to
    /// the last record handed over.
    pub fn observe(&mut self, new: Observed) {
        let furthest = |old: Option<i64>, new: Option<i64>| match (old, new) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.seen.end = furthest(self.seen.end, new.end);
        self.seen.start = furthest(self.seen.start, new.start);
        self.seen.committed = furthest(self.seen.committed, new.committed);
        self.seen.fetch = new.fetch.or(self.seen.fetch);
    }

    /// Records between the committed offset and the end; from the log
    /// start when the group never committed (where `auto.offset.reset =
    /// earliest` starts). `None` while the end is not known.
    pub fn lag(&self) -> Option<i64> {
        let end = self.seen.end?;
        let from = self.seen.committed.or(self.seen.start).unwrap_or(0);
        Some((end - from).max(0))
    }

    /// The furthest point this partition is known to have been read to:
    /// what was committed, fetched, or `handed` to Herald (one past the
    /// highest record), or else the log start.
    pub fn read_to(&self, handed: Option<i64>) -> Option<i64> {
        [self.seen.committed, self.seen.fetch, handed]
            .into_iter()
            .flatten()
            .max()
            .or(self.seen.start)
    }

    /// The end offset, when known.
    pub fn end(&self) -> Option<i64> {
        self.seen.end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(end: i64, start: i64, committed: i64, fetch: i64) -> Observed {
        Observed::from_client(end, start, committed, fetch)
    }

    #[test]
    fn lag_counts_from_the_committed_offset_or_else_the_log_start() {
        let mut p = PartitionPosition::default();
        assert_eq!(p.lag(), None, "the end is not known yet");
        p.observe(observed(100, 0, 40, -1));
        assert_eq!(p.lag(), Some(60));
        let mut never = PartitionPosition::default();
        // librdkafka reports -1001 for "no committed offset".
        never.observe(observed(100, 30, -1001, -1001));
        assert_eq!(never.lag(), Some(70), "records before the log start are gone");
        let mut unknown_start = PartitionPosition::default();
        unknown_start.observe(observed(2, -1, -1001, -1));
        assert_eq!(unknown_start.lag(), Some(2));
    }

    #[test]
    fn a_stale_end_from_a_paused_partition_never_takes_a_fresh_one_back() {
        let mut p = PartitionPosition::default();
        // The broker says 1,382 records; the paused client still says 270.
        p.observe(Observed {
            end: Some(1382),
            committed: Some(260),
            ..Observed::default()
        });
        p.observe(observed(270, 0, 260, 260));
        assert_eq!(p.lag(), Some(1122));
        assert_eq!(p.end(), Some(1382));
    }

    #[test]
    fn the_read_position_is_the_furthest_known_and_the_fetch_position_may_move_back() {
        let mut p = PartitionPosition::default();
        assert_eq!(p.read_to(None), None);
        p.observe(observed(50, 10, -1001, -1001));
        assert_eq!(p.read_to(None), Some(10), "nothing read: the log start");
        assert_eq!(p.read_to(Some(12)), Some(12));
        p.observe(observed(50, 10, 20, 45));
        assert_eq!(p.read_to(Some(30)), Some(45), "prefetched ahead of Herald");
        // Paused: librdkafka fetches again from the last record handed over.
        p.observe(observed(50, 10, 20, 30));
        assert_eq!(p.read_to(Some(30)), Some(30));
        p.observe(observed(50, 10, 20, -1001));
        assert_eq!(
            p.read_to(None),
            Some(30),
            "an unknown fetch position keeps the last one"
        );
    }
}

//! Which offset of one partition may be committed.
//!
//! Events of a partition finish out of order (one slow endpoint, many fast
//! ones), but Kafka keeps a single committed offset per partition. The only
//! safe value is the contiguous completed prefix: the lowest offset still in
//! flight, or one past the highest consumed when nothing is. Committing
//! anything later could skip an unfinished event after a crash.

use std::collections::BTreeSet;

/// In-flight offsets of one partition and the offset last handed to Kafka.
#[derive(Debug, Default, Clone)]
pub struct PartitionProgress {
    in_flight: BTreeSet<i64>,
    /// One past the highest offset consumed.
    next: Option<i64>,
    /// The first offset consumed: committing it again would change nothing.
    start: Option<i64>,
    /// The last offset stored for commit.
    stored: Option<i64>,
}

impl PartitionProgress {
    /// An event at `offset` was consumed.
    pub fn begin(&mut self, offset: i64) {
        self.in_flight.insert(offset);
        self.start.get_or_insert(offset);
        self.next = Some(self.next.map_or(offset + 1, |n| n.max(offset + 1)));
    }

    /// The event at `offset` is finished; `false` when it was not in flight.
    pub fn finish(&mut self, offset: i64) -> bool {
        self.in_flight.remove(&offset)
    }

    /// One past the highest offset consumed, if any was.
    pub fn next(&self) -> Option<i64> {
        self.next
    }

    /// Events in flight.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Offsets past `offset` that were consumed and are finished (an upper
    /// bound where the log has gaps): what a crash before `offset` finishes
    /// would deliver again.
    pub fn finished_after(&self, offset: i64) -> u64 {
        let Some(next) = self.next else { return 0 };
        let consumed = (next - offset - 1).max(0) as u64;
        let unfinished = self.in_flight.range(offset + 1..).count() as u64;
        consumed.saturating_sub(unfinished)
    }

    /// The client has handed over everything before `position` (one past the
    /// last record or transaction marker it read). Offsets between the last
    /// record consumed and `position` hold no record Herald could work on
    /// (transaction markers, an aborted transaction's records), so the
    /// commit passes them too: a transactional producer's partition then
    /// ends at lag 0, as it does for Kafka's own consumers. Taken only once
    /// a record was consumed under this assignment, never from a position
    /// the client may still hold from an earlier one.
    pub fn pass_to(&mut self, position: i64) {
        if let Some(next) = self.next.as_mut() {
            *next = (*next).max(position);
        }
    }

    /// The offset to commit: the next offset to consume after restart.
    pub fn committable(&self) -> Option<i64> {
        self.in_flight.first().copied().or(self.next)
    }

    /// The committable offset when it moved since last taken.
    pub fn take_advance(&mut self) -> Option<i64> {
        let c = self.committable()?;
        let floor = self.stored.or(self.start)?;
        if c <= floor {
            return None;
        }
        self.stored = Some(c);
        Some(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_consumed_nothing_to_commit() {
        let mut p = PartitionProgress::default();
        assert_eq!(p.committable(), None);
        assert_eq!(p.take_advance(), None);
    }

    #[test]
    fn commits_only_the_contiguous_finished_prefix() {
        let mut p = PartitionProgress::default();
        for o in 10..15 {
            p.begin(o);
        }
        assert_eq!(p.committable(), Some(10));
        assert!(p.finish(12));
        assert!(p.finish(13));
        assert_eq!(p.committable(), Some(10), "10 is unfinished: nothing past it");
        assert!(p.finish(10));
        assert_eq!(p.committable(), Some(11));
        assert!(p.finish(11));
        assert_eq!(p.committable(), Some(14));
        assert!(p.finish(14));
        assert_eq!(p.committable(), Some(15), "all done: one past the last");
        assert_eq!(p.in_flight(), 0);
    }

    #[test]
    fn gaps_in_offsets_are_skipped_over() {
        // Compacted topics and transaction markers leave gaps.
        let mut p = PartitionProgress::default();
        p.begin(3);
        p.begin(9);
        p.finish(9);
        assert_eq!(p.committable(), Some(3));
        p.finish(3);
        assert_eq!(p.committable(), Some(10));
    }

    #[test]
    fn the_commit_passes_markers_after_the_last_record_once_it_is_finished() {
        let mut p = PartitionProgress::default();
        p.pass_to(40);
        assert_eq!(p.committable(), None, "nothing consumed: a position alone is not taken");
        p.begin(10);
        p.begin(11);
        p.finish(10);
        assert_eq!(p.take_advance(), Some(11), "10 finished, 11 in flight");
        // A commit marker at 12: the client's position is 13.
        p.pass_to(13);
        assert_eq!(p.committable(), Some(11), "11 is still in flight: nothing past it");
        p.finish(11);
        assert_eq!(p.take_advance(), Some(13), "past the marker");
        p.pass_to(12);
        assert_eq!(p.committable(), Some(13), "never backwards");
        p.begin(14);
        assert_eq!(p.committable(), Some(14));
    }

    #[test]
    fn advances_are_reported_once_and_never_backwards() {
        let mut p = PartitionProgress::default();
        p.begin(0);
        p.begin(1);
        assert_eq!(p.take_advance(), None, "nothing finished: nothing new to commit");
        p.finish(1);
        assert_eq!(p.take_advance(), None, "0 still in flight");
        p.finish(0);
        assert_eq!(p.take_advance(), Some(2));
        // A re-consumed older offset (after a seek) cannot move the commit back.
        p.begin(1);
        assert_eq!(p.take_advance(), None);
    }

    #[test]
    fn counts_what_is_finished_past_an_unfinished_offset() {
        let mut p = PartitionProgress::default();
        assert_eq!(p.finished_after(0), 0);
        for o in 10..20 {
            p.begin(o);
        }
        assert_eq!(p.finished_after(10), 0);
        for o in [11, 12, 15] {
            p.finish(o);
        }
        assert_eq!(p.finished_after(10), 3);
        assert_eq!(p.finished_after(12), 1, "only 15 is finished past 12");
        assert_eq!(p.finished_after(19), 0);
    }

    #[test]
    fn unknown_offsets_are_not_finished() {
        let mut p = PartitionProgress::default();
        p.begin(1);
        assert!(!p.finish(2));
        assert!(p.finish(1));
        assert!(!p.finish(1));
    }

    #[test]
    fn randomised_orders_never_commit_past_an_unfinished_offset() {
        use rand::seq::SliceRandom;
        let mut rng = rand::rng();
        for _ in 0..200 {
            let mut p = PartitionProgress::default();
            let offsets: Vec<i64> = (0..50).collect();
            offsets.iter().for_each(|&o| p.begin(o));
            let mut order = offsets.clone();
            order.shuffle(&mut rng);
            let mut done = BTreeSet::new();
            for o in order {
                p.finish(o);
                done.insert(o);
                let c = p.committable().unwrap();
                assert!(
                    (0..c).all(|x| done.contains(&x)),
                    "committed {c} past an unfinished offset"
                );
                assert!(c == 50 || !done.contains(&c));
            }
            assert_eq!(p.committable(), Some(50));
        }
    }
}

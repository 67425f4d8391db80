//! The progress check: each consumer makes sure that what it means to read
//! is read, and that what it holds until due comes out when due.
//!
//! Whether a partition is fetched is state librdkafka keeps per partition,
//! apart from Herald's own idea of it. Should the two ever disagree (it
//! keeps a partition paused across a revoke and an assignment back to the
//! same member, for one), the partition stays unread with nothing to show for
//! it but a lag that grows, and a paused partition's lag is not even
//! refreshed by the client. So every `kafka.progress_check_interval` each
//! consumer asks the broker for the end, start and committed offsets of the
//! partitions it is assigned (one small request per broker, off the consumer
//! loop; this also keeps the lag of paused partitions true) and compares them
//! with what Herald meant and what was read:
//!
//! - *not read*: Herald meant to read the partition at this check and the
//!   previous one and did not resume it in between, records wait past the
//!   point it was read to, and that point has not moved for a whole
//!   interval. The partition is resumed, and the finding logged, counted and
//!   shown on `/status`. Resuming a partition that is not paused changes
//!   nothing, so a repair can do no harm; a partition found again after a
//!   repair (records the client cannot decode, say) keeps being counted.
//! - *held past due*: a retry held until due whose due time passed by a
//!   whole interval (its timer is lost): it is released.
//!
//! "Read to" is the furthest of the committed offset, the client's fetch
//! position (from its statistics: it passes transaction markers, which
//! Herald never sees) and the records handed to Herald. Without statistics
//! (`kafka.statistics_interval = "0s"`) the fetch position is unknown and the
//! not-read check is off, since a trailing transaction marker would look
//! like an unread record.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaResult;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};

use crate::intake::flow::{ProgressView, Tp};
use crate::intake::position::Observed;

/// How long the broker is given to answer a progress check's queries.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// One partition as a check sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sight {
    pub view: ProgressView,
    /// Holding a retry until due, or held records fill its bounds: not to be read.
    pub holding: bool,
    /// When Herald last resumed it.
    pub resumed_at: Option<Instant>,
    /// The earliest due time of what it holds.
    pub next_due: Option<SystemTime>,
}

impl Sight {
    fn wants_read(&self) -> bool {
        !self.view.paused && !self.holding
    }
}

/// What a check found wrong with one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Meant to be read, records waiting past `read_to` up to `end`, and
    /// nothing read for a whole interval.
    NotRead {
        tp: Tp,
        generation: u64,
        read_to: i64,
        end: i64,
    },
    /// Holds a retry due at `due`, an interval ago or more.
    HeldPastDue { tp: Tp, due: SystemTime },
}

/// What the previous check saw of a partition.
#[derive(Debug, Clone, Copy)]
struct Seen {
    generation: u64,
    at: Instant,
    wanted: bool,
    read_to: Option<i64>,
}

/// The check's memory from one round to the next.
#[derive(Debug)]
pub struct Watchdog {
    interval: Duration,
    /// Whether read positions include the client's fetch position
    /// (statistics on): the not-read check needs it.
    knows_fetch_positions: bool,
    seen: HashMap<Tp, Seen>,
}

impl Watchdog {
    /// A check run every `interval`.
    pub fn new(interval: Duration, knows_fetch_positions: bool) -> Watchdog {
        Watchdog {
            interval,
            knows_fetch_positions,
            seen: HashMap::new(),
        }
    }

    /// How often the check runs.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Compares what is seen now (`at`, wall clock `now`) with the previous
    /// check. Partitions not among `sights` are forgotten.
    pub fn check(&mut self, at: Instant, now: SystemTime, sights: &[Sight]) -> Vec<Finding> {
        let mut findings = Vec::new();
        let mut seen = HashMap::with_capacity(sights.len());
        for sight in sights {
            let view = &sight.view;
            if let Some(due) = sight.next_due {
                if now.duration_since(due).is_ok_and(|late| late >= self.interval) {
                    findings.push(Finding::HeldPastDue {
                        tp: view.tp.clone(),
                        due,
                    });
                }
            }
            let before = self.seen.get(&view.tp).filter(|b| b.generation == view.generation);
            let unread = match (before, view.read_to, view.end) {
                (Some(before), Some(read_to), Some(end)) => {
                    self.knows_fetch_positions
                        && before.wanted
                        && sight.wants_read()
                        && sight.resumed_at.is_none_or(|r| r <= before.at)
                        && before.read_to == Some(read_to)
                        && end > read_to
                }
                _ => false,
            };
            if unread {
                if let (Some(read_to), Some(end)) = (view.read_to, view.end) {
                    findings.push(Finding::NotRead {
                        tp: view.tp.clone(),
                        generation: view.generation,
                        read_to,
                        end,
                    });
                }
            }
            seen.insert(
                view.tp.clone(),
                Seen {
                    generation: view.generation,
                    at,
                    wanted: sight.wants_read(),
                    read_to: view.read_to,
                },
            );
        }
        self.seen = seen;
        findings
    }
}

/// Asks the broker for the end, start and committed offsets of `tps` (each
/// with its assignment's generation). Blocking: run it off the loop.
pub fn query_offsets<C: Consumer<X>, X: rdkafka::consumer::ConsumerContext>(
    consumer: &C,
    tps: &[(Tp, u64)],
) -> KafkaResult<Vec<(Tp, u64, Observed)>> {
    let at = |offset: Offset| -> KafkaResult<TopicPartitionList> {
        let mut tpl = TopicPartitionList::with_capacity(tps.len());
        for ((topic, partition), _) in tps {
            tpl.add_partition_offset(topic, *partition, offset)?;
        }
        Ok(tpl)
    };
    let offset_of = |tpl: &TopicPartitionList, (topic, partition): &Tp| match tpl
        .find_partition(topic, *partition)
        .map(|e| (e.error(), e.offset()))
    {
        Some((Ok(()), Offset::Offset(o))) if o >= 0 => Some(o),
        _ => None,
    };
    // A timestamp of End (-1) or Beginning (-2) asks ListOffsets for the
    // partition's end or start: one request per leader for all of them.
    let ends = consumer.offsets_for_times(at(Offset::End)?, QUERY_TIMEOUT)?;
    let starts = consumer.offsets_for_times(at(Offset::Beginning)?, QUERY_TIMEOUT)?;
    let committed = consumer.committed_offsets(at(Offset::Invalid)?, QUERY_TIMEOUT)?;
    Ok(tps
        .iter()
        .map(|(tp, generation)| {
            let observed = Observed {
                end: offset_of(&ends, tp),
                start: offset_of(&starts, tp),
                committed: offset_of(&committed, tp),
                fetch: None,
            };
            (tp.clone(), *generation, observed)
        })
        .collect())
}

/// The answer to one check's queries, handed back to the consumer loop.
pub type Answer = KafkaResult<Vec<(Tp, u64, Observed)>>;

/// The partitions a check asks about, each with its assignment's generation.
pub fn generations(views: &[ProgressView]) -> Vec<(Tp, u64)> {
    views.iter().map(|v| (v.tp.clone(), v.generation)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn tp() -> Tp {
        (Arc::from("t"), 0)
    }

    fn sight(generation: u64, paused: bool, read_to: i64, end: i64) -> Sight {
        Sight {
            view: ProgressView {
                tp: tp(),
                generation,
                paused,
                read_to: Some(read_to),
                end: Some(end),
            },
            holding: false,
            resumed_at: None,
            next_due: None,
        }
    }

    fn not_read(read_to: i64, end: i64) -> Vec<Finding> {
        vec![Finding::NotRead {
            tp: tp(),
            generation: 1,
            read_to,
            end,
        }]
    }

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn a_partition_meant_to_be_read_that_does_not_move_while_records_wait_is_found() {
        let mut w = Watchdog::new(SECOND, true);
        let (t0, now) = (Instant::now(), SystemTime::now());
        assert!(
            w.check(t0, now, &[sight(1, false, 260, 1382)]).is_empty(),
            "once is not enough"
        );
        assert_eq!(
            w.check(t0 + SECOND, now, &[sight(1, false, 260, 1446)]),
            not_read(260, 1446)
        );
        assert_eq!(
            w.check(t0 + 2 * SECOND, now, &[sight(1, false, 260, 1446)]),
            not_read(260, 1446),
            "found again while it stays so"
        );
    }

    #[test]
    fn reading_waiting_for_nothing_or_paused_on_purpose_is_fine() {
        let (t0, now) = (Instant::now(), SystemTime::now());
        let mut w = Watchdog::new(SECOND, true);
        w.check(t0, now, &[sight(1, false, 10, 20)]);
        assert!(
            w.check(t0 + SECOND, now, &[sight(1, false, 15, 20)]).is_empty(),
            "moving"
        );
        assert!(
            w.check(t0 + 2 * SECOND, now, &[sight(1, false, 20, 20)]).is_empty(),
            "caught up"
        );
        assert!(w.check(t0 + 3 * SECOND, now, &[sight(1, false, 20, 20)]).is_empty());
        // Paused by the in-flight cap, at this check or the one before.
        assert!(w.check(t0 + 4 * SECOND, now, &[sight(1, true, 20, 30)]).is_empty());
        assert!(w.check(t0 + 5 * SECOND, now, &[sight(1, false, 20, 30)]).is_empty());
        // Holding a retry until due.
        let mut holding = sight(1, false, 20, 30);
        holding.holding = true;
        assert!(w.check(t0 + 6 * SECOND, now, &[holding.clone()]).is_empty());
        assert!(w.check(t0 + 7 * SECOND, now, &[holding]).is_empty());
    }

    #[test]
    fn a_resume_since_the_last_check_or_a_new_assignment_starts_the_count_again() {
        let (t0, now) = (Instant::now(), SystemTime::now());
        let mut w = Watchdog::new(SECOND, true);
        w.check(t0, now, &[sight(1, false, 10, 20)]);
        let mut resumed = sight(1, false, 10, 20);
        resumed.resumed_at = Some(t0 + SECOND / 2);
        assert!(w.check(t0 + SECOND, now, &[resumed.clone()]).is_empty(), "just resumed");
        assert_eq!(w.check(t0 + 2 * SECOND, now, &[resumed]), not_read(10, 20));
        assert!(
            w.check(t0 + 3 * SECOND, now, &[sight(2, false, 10, 20)]).is_empty(),
            "assigned anew"
        );
    }

    #[test]
    fn without_fetch_positions_nothing_is_judged_unread() {
        let (t0, now) = (Instant::now(), SystemTime::now());
        let mut w = Watchdog::new(SECOND, false);
        w.check(t0, now, &[sight(1, false, 10, 11)]);
        assert!(w.check(t0 + SECOND, now, &[sight(1, false, 10, 11)]).is_empty());
    }

    #[test]
    fn a_retry_held_an_interval_past_its_due_time_is_found() {
        let (t0, now) = (Instant::now(), SystemTime::now());
        let mut w = Watchdog::new(SECOND, true);
        let mut held = sight(1, false, 5, 6);
        held.holding = true;
        held.next_due = Some(now - SECOND / 2);
        assert!(
            w.check(t0, now, &[held.clone()]).is_empty(),
            "just due: its timer fires"
        );
        held.next_due = Some(now - 2 * SECOND);
        assert_eq!(
            w.check(t0 + SECOND, now, &[held]),
            vec![Finding::HeldPastDue {
                tp: tp(),
                due: now - 2 * SECOND
            }]
        );
    }
}

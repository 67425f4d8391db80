//! What the offsets a partition hands over say.
//!
//! Within one assignment librdkafka hands each offset of a partition over
//! once, in order. A record handed over again can only be a broker's fault
//! (it is dropped: its first copy is already being worked on). In a topic
//! only Herald writes, with an idempotent producer and no transactions, the
//! offsets have no gaps: a gap means records were deleted (retention) before
//! they were read.

use std::collections::HashMap;

use crate::intake::flow::Tp;

/// What one record's offset says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// The first record of its partition in this assignment.
    First,
    /// The one after the last.
    Next,
    /// At or before the last one: handed over again.
    Again,
    /// Offsets `from..to` were skipped.
    Gap { from: i64, to: i64 },
}

/// The last offset handed over, per partition and assignment.
#[derive(Debug, Default)]
pub struct Offsets {
    last: HashMap<Tp, (Option<u64>, i64)>,
}

impl Offsets {
    /// Notes `offset` of `tp` under assignment `generation`.
    pub fn see(&mut self, tp: &Tp, generation: Option<u64>, offset: i64) -> Seen {
        match self.last.get_mut(tp) {
            Some((g, last)) if *g == generation => {
                if offset <= *last {
                    return Seen::Again;
                }
                let expected = *last + 1;
                *last = offset;
                if offset > expected {
                    Seen::Gap {
                        from: expected,
                        to: offset,
                    }
                } else {
                    Seen::Next
                }
            }
            _ => {
                self.last.insert(tp.clone(), (generation, offset));
                Seen::First
            }
        }
    }

    /// Forgets partitions no longer assigned under the same generation.
    pub fn retain(&mut self, keep: impl Fn(&Tp, Option<u64>) -> bool) {
        self.last.retain(|tp, (g, _)| keep(tp, *g));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> Tp {
        ("t".into(), p)
    }

    #[test]
    fn order_repeats_and_gaps_are_told_apart() {
        let mut o = Offsets::default();
        assert_eq!(o.see(&tp(0), Some(1), 5), Seen::First);
        assert_eq!(o.see(&tp(0), Some(1), 6), Seen::Next);
        assert_eq!(o.see(&tp(0), Some(1), 6), Seen::Again);
        assert_eq!(o.see(&tp(0), Some(1), 3), Seen::Again);
        assert_eq!(o.see(&tp(0), Some(1), 10), Seen::Gap { from: 7, to: 10 });
        assert_eq!(o.see(&tp(0), Some(1), 11), Seen::Next);
        assert_eq!(o.see(&tp(1), Some(1), 0), Seen::First, "partitions are apart");
        // A new assignment starts again, wherever the committed offset is.
        assert_eq!(o.see(&tp(0), Some(2), 4), Seen::First);
        assert_eq!(o.see(&tp(0), Some(2), 5), Seen::Next);
    }

    #[test]
    fn forgotten_partitions_start_again() {
        let mut o = Offsets::default();
        o.see(&tp(0), Some(1), 5);
        o.see(&tp(1), Some(1), 5);
        o.retain(|tp, _| tp.1 == 1);
        assert_eq!(o.see(&tp(0), Some(1), 9), Seen::First);
        assert_eq!(o.see(&tp(1), Some(1), 9), Seen::Gap { from: 6, to: 9 });
    }
}

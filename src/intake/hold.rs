//! Holding records until due (the retry consumer): when a record may be
//! delivered ([`HoldPolicy`], [`Timing`]), and one partition's records held
//! until then (`Held`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::event::SourceRecord;
use crate::intake::flow::Completion;

/// When a record read by a holding consumer (the retry consumer) may be
/// delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// Now.
    Now,
    /// At this time, and the records behind it in its partition are due no
    /// earlier (up to the small disorder its topic allows): the partition is
    /// paused until then, at no cost.
    InOrder(SystemTime),
    /// At this time, but it is out of order (later than its topic's records
    /// usually wait, e.g. after a long `Retry-After`): it is held aside while
    /// the partition is read on, so it delays nothing behind it.
    OutOfOrder(SystemTime),
}

/// Decides when records may be delivered; see [`Timing`].
pub trait HoldPolicy: Send + Sync + 'static {
    fn timing(&self, record: &SourceRecord, now: SystemTime) -> Timing;

    /// Whether moving `record` (held out of order) to the end of a wait
    /// topic would take it out of its partition's out-of-order records: it
    /// would be in order where it goes. Otherwise moving it to make room
    /// would only bring it back.
    fn moves_in_order(&self, record: &SourceRecord, now: SystemTime) -> bool;
}

/// How a holding consumer holds records.
#[derive(Clone)]
pub struct Holding {
    pub policy: Arc<dyn HoldPolicy>,
    /// Per partition: records held aside out of order, and records finished
    /// past the oldest of them (delivered again should the process crash),
    /// beyond which that oldest record is moved to the end of a wait topic
    /// ([`Dispatch::requeue`](crate::intake::Dispatch::requeue)).
    pub max_out_of_order: usize,
    /// Per partition: bytes of records held aside beyond which the oldest is moved.
    pub max_out_of_order_bytes: usize,
}

/// One record held until due.
pub(crate) struct Waiting {
    pub(crate) record: SourceRecord,
    pub(crate) done: Completion,
    pub(crate) in_order: bool,
}

/// The records of one partition held until due. Each is registered with the
/// flow ([`Flow::hold`]), so no commit passes it.
pub(crate) struct Held {
    pub(crate) generation: Option<u64>,
    pub(crate) by_due: BTreeMap<(SystemTime, i64), Waiting>,
    /// Held records in order: while there is one, the partition is paused.
    pub(crate) in_order: usize,
    /// Held records out of order, by offset, with their due time.
    pub(crate) out_of_order: BTreeMap<i64, SystemTime>,
    pub(crate) out_of_order_bytes: usize,
    /// Out of order records fill their bounds and none can be moved usefully:
    /// the partition is not read on until some are due.
    pub(crate) full: bool,
    /// Paused by this consumer (an in-order record waits, or it is full).
    pub(crate) paused: bool,
}

impl Held {
    pub(crate) fn new(generation: Option<u64>) -> Held {
        Held {
            generation,
            by_due: BTreeMap::new(),
            in_order: 0,
            out_of_order: BTreeMap::new(),
            out_of_order_bytes: 0,
            full: false,
            paused: false,
        }
    }

    /// Whether the partition should not be read on.
    pub(crate) fn wants_pause(&self) -> bool {
        self.in_order > 0 || self.full
    }

    pub(crate) fn insert(&mut self, due: SystemTime, waiting: Waiting) {
        if waiting.in_order {
            self.in_order += 1;
        } else {
            self.out_of_order.insert(waiting.record.offset, due);
            self.out_of_order_bytes += record_size(&waiting.record);
        }
        self.by_due.insert((due, waiting.record.offset), waiting);
    }

    pub(crate) fn remove(&mut self, key: (SystemTime, i64)) -> Option<Waiting> {
        let waiting = self.by_due.remove(&key)?;
        if waiting.in_order {
            self.in_order -= 1;
        } else {
            self.out_of_order.remove(&key.1);
            self.out_of_order_bytes -= record_size(&waiting.record);
        }
        Some(waiting)
    }

    /// Removes and returns every record due at `now`, earliest first.
    pub(crate) fn take_due(&mut self, now: SystemTime) -> Vec<Waiting> {
        let mut due = Vec::new();
        while let Some((&key, _)) = self.by_due.first_key_value() {
            if key.0 > now {
                break;
            }
            due.extend(self.remove(key));
        }
        due
    }

    pub(crate) fn next_due(&self) -> Option<SystemTime> {
        self.by_due.first_key_value().map(|(k, _)| k.0)
    }

    pub(crate) fn abandon(self) -> usize {
        let n = self.by_due.len();
        for (_, waiting) in self.by_due {
            waiting.done.abandon();
        }
        n
    }
}

pub(crate) fn record_size(record: &SourceRecord) -> usize {
    record.value.len()
        + record.key.as_ref().map_or(0, |k| k.len())
        + record
            .headers
            .iter()
            .map(|h| h.name.len() + h.value.as_ref().map_or(0, |v| v.len()))
            .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::event::RecordHeader;
    use crate::intake::flow::{Flow, FlowLimits, Tp};

    fn tp() -> Tp {
        ("wait".into(), 0)
    }

    fn flow() -> Arc<Flow> {
        let flow = Flow::new(FlowLimits {
            per_partition: 100,
            total: 100,
            bytes: usize::MAX,
        });
        flow.assign(&[tp()]);
        flow
    }

    /// A record at `offset` of 10 value bytes, a 3-byte key and a header of 4.
    fn waiting(flow: &Arc<Flow>, offset: i64, in_order: bool) -> Waiting {
        let record = SourceRecord {
            topic: tp().0,
            partition: 0,
            offset,
            timestamp_ms: None,
            key: Some(bytes::Bytes::from_static(b"key")),
            value: bytes::Bytes::from_static(b"0123456789"),
            headers: vec![RecordHeader {
                name: "h".into(),
                value: Some(b"abc".to_vec().into()),
            }],
        };
        let done = flow.hold(&tp(), offset, record_size(&record));
        Waiting { record, done, in_order }
    }

    fn at(seconds: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
    }

    #[test]
    fn records_come_out_when_due_earliest_first_then_by_offset() {
        let flow = flow();
        let mut held = Held::new(Some(1));
        held.insert(at(30), waiting(&flow, 1, false));
        held.insert(at(10), waiting(&flow, 3, true));
        held.insert(at(10), waiting(&flow, 2, true));
        held.insert(at(20), waiting(&flow, 4, false));
        assert_eq!(held.next_due(), Some(at(10)));
        assert!(held.take_due(at(9)).is_empty(), "nothing is due early");
        let due: Vec<i64> = held.take_due(at(20)).iter().map(|w| w.record.offset).collect();
        assert_eq!(due, [2, 3, 4]);
        assert_eq!(held.next_due(), Some(at(30)));
        assert_eq!(held.by_due.len(), 1);
    }

    #[test]
    fn an_in_order_record_pauses_the_partition_until_it_is_taken() {
        let flow = flow();
        let mut held = Held::new(None);
        assert!(!held.wants_pause());
        held.insert(at(10), waiting(&flow, 1, true));
        assert!(
            held.wants_pause(),
            "an in-order record waits: the partition is not read on"
        );
        held.insert(at(5), waiting(&flow, 2, false));
        held.take_due(at(5));
        assert!(held.wants_pause(), "taking the out-of-order one changes nothing");
        held.take_due(at(10));
        assert!(!held.wants_pause());
        held.full = true;
        assert!(held.wants_pause(), "a full partition is not read on either");
    }

    #[test]
    fn out_of_order_records_are_counted_by_offset_and_bytes() {
        let flow = flow();
        let mut held = Held::new(None);
        held.insert(at(50), waiting(&flow, 7, false));
        held.insert(at(40), waiting(&flow, 8, false));
        held.insert(at(10), waiting(&flow, 9, true));
        assert_eq!(held.out_of_order.keys().copied().collect::<Vec<_>>(), [7, 8]);
        assert_eq!(held.out_of_order_bytes, 2 * (10 + 3 + 1 + 3));
        assert_eq!(held.in_order, 1);
        let moved = held.remove((at(50), 7)).expect("held");
        assert_eq!(moved.record.offset, 7);
        assert!(held.remove((at(50), 7)).is_none(), "only once");
        assert_eq!(held.out_of_order_bytes, 10 + 3 + 1 + 3);
        held.take_due(at(60));
        assert_eq!((held.out_of_order_bytes, held.in_order), (0, 0));
        assert!(held.out_of_order.is_empty());
    }

    #[test]
    fn abandoned_records_are_never_committed() {
        let flow = flow();
        let (first, _) = flow.admit(&tp(), 0, 1);
        let mut held = Held::new(None);
        held.insert(at(10), waiting(&flow, 1, true));
        held.insert(at(20), waiting(&flow, 2, false));
        first.finish();
        assert_eq!(held.abandon(), 2);
        assert_eq!(
            flow.committable(),
            vec![(tp(), 1)],
            "the commit stops before the first abandoned record"
        );
    }
}

//! Intake: the Kafka consumer group.
//!
//! Intake knows Kafka, not HTTP. It consumes the source topics, hands each
//! record with a [`flow::Completion`] to a [`Dispatch`], and stores offsets
//! only as events finish (`enable.auto.offset.store=false`; librdkafka's
//! periodic commit then commits what was stored). Back-pressure pauses
//! partitions; rebalances drain revoked partitions within a deadline; shutdown
//! stops fetching, drains, commits and leaves the group.

pub mod brokers;
pub mod consumer;
pub mod context;
pub mod flow;
pub mod hold;
pub mod offsets;
pub mod position;
pub mod progress;
pub mod watchdog;

use crate::event::SourceRecord;
use flow::Completion;

/// Where intake sends records: routing and delivery, behind one call.
pub trait Dispatch: Send + Sync + 'static {
    /// Starts work on `record`; `done` is finished when it is all done.
    fn dispatch(&self, record: SourceRecord, done: Completion);

    /// Moves `record`, held out of order until due, to the end of a wait
    /// topic; `done` is finished once the broker has it. Only holding
    /// consumers call this; by default the record is dispatched.
    fn requeue(&self, record: SourceRecord, done: Completion) {
        self.dispatch(record, done);
    }
}

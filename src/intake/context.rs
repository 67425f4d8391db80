//! The callbacks librdkafka makes into a consumer: statistics (each
//! partition's lag and health, the brokers' connections), errors, rebalances (draining revoked
//! partitions within a deadline, then committing what finished; setting the
//! pause of each partition assigned) and commits.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::ClientContext;

use crate::intake::flow::{Flow, Tp};
use crate::intake::position::Observed;
use crate::telemetry::{PartitionGauges, Telemetry};

/// Callbacks librdkafka makes into Herald.
pub struct IntakeContext {
    pub(crate) flow: Arc<Flow>,
    pub(crate) telemetry: Telemetry,
    pub(crate) revoke_drain_timeout: Duration,
    /// `consumer` label of this consumer's series.
    pub(crate) name: &'static str,
    /// Its consumer group.
    pub(crate) group_id: String,
    /// Partitions whose lag was last reported.
    pub(crate) lag_reported: Mutex<HashSet<(String, i32)>>,
    /// Under the consumer protocol a member given no partitions hears of no
    /// assignment at all: it counts as a standby once its group coordinator
    /// has answered its heartbeats for a while.
    pub(crate) standby_when_up: bool,
}

/// How long the group must have been up (heartbeats answered) before a
/// member the consumer protocol gave nothing counts as a standby; its first
/// heartbeat is answered within milliseconds, with its assignment if any.
const STANDBY_AFTER_UP_MS: i64 = 2000;

fn tps_of(tpl: &TopicPartitionList) -> Vec<Tp> {
    tpl.elements()
        .iter()
        .map(|e| (Arc::<str>::from(e.topic()), e.partition()))
        .collect()
}

fn named(tps: &[Tp]) -> Vec<(String, i32)> {
    tps.iter().map(|(t, p)| (t.to_string(), *p)).collect()
}

/// The offsets a list carries (a consumer's positions, what a commit
/// committed), skipping partitions without one or with an error.
pub(crate) fn positions(tpl: &TopicPartitionList) -> Vec<(Tp, i64)> {
    tpl.elements()
        .iter()
        .filter(|e| e.error().is_ok())
        .filter_map(|e| match e.offset() {
            Offset::Offset(offset) => Some(((Arc::<str>::from(e.topic()), e.partition()), offset)),
            _ => None,
        })
        .collect()
}

pub(crate) fn offsets_tpl(stores: &[(Tp, i64)]) -> KafkaResult<TopicPartitionList> {
    let mut tpl = TopicPartitionList::with_capacity(stores.len());
    for ((topic, partition), offset) in stores {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    Ok(tpl)
}

pub(crate) fn partitions_tpl(tps: &[Tp]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::with_capacity(tps.len());
    for (topic, partition) in tps {
        tpl.add_partition(topic, *partition);
    }
    tpl
}

impl ClientContext for IntakeContext {
    /// Every `kafka.statistics_interval`: each assigned partition's lag,
    /// the age of its oldest event in flight and when it last committed.
    fn stats(&self, statistics: Statistics) {
        for (name, topic) in &statistics.topics {
            for (id, partition) in &topic.partitions {
                if *id < 0 || !partition.desired {
                    continue;
                }
                // The end a read_committed consumer can read to: the last
                // stable offset, which an open transaction holds back (the
                // high watermark would count its records as unread, and the
                // progress check would take the wait for a stall). The
                // progress check's ListOffsets answers the same.
                let observed = Observed::from_client(
                    partition.ls_offset,
                    partition.lo_offset,
                    partition.committed_offset,
                    partition.next_offset,
                );
                self.flow.observe(&(Arc::from(name.as_str()), *id), observed);
            }
        }
        let brokers = crate::intake::brokers::seen_in(&statistics);
        let up = brokers.iter().filter(|b| b.up()).count();
        let unreachable = brokers.iter().filter(|b| b.unreachable()).count();
        self.telemetry.kafka_brokers(self.name, up, unreachable);
        self.flow.brokers().set(brokers);
        if let Some(group) = &statistics.cgrp {
            if self.standby_when_up && group.state == "up" && group.stateage >= STANDBY_AFTER_UP_MS {
                self.flow.joined_without_partitions();
            }
        }
        self.telemetry.in_flight_bytes(self.name, self.flow.in_flight_bytes());
        let health = self.flow.health();
        let mut current = HashSet::new();
        for h in &health {
            self.telemetry.partition_health(
                self.name,
                (&h.tp.0, h.tp.1),
                PartitionGauges {
                    lag: h.lag,
                    oldest_unfinished: h.oldest_unfinished,
                    last_commit: h.last_commit,
                },
            );
            current.insert((h.tp.0.to_string(), h.tp.1));
        }
        // Series of partitions no longer assigned disappear; other consumers' stay.
        let mut reported = self.lag_reported.lock();
        for (topic, partition) in reported.difference(&current) {
            self.telemetry.partition_health_gone(self.name, topic, *partition);
        }
        *reported = current;
    }

    fn error(&self, error: KafkaError, reason: &str) {
        match error {
            KafkaError::Global(RDKafkaErrorCode::InconsistentGroupProtocol) => {
                self.telemetry.group_protocol_mismatch(self.name, &self.group_id)
            }
            _ => self.telemetry.consumer_error(&format_args!("{error}: {reason}")),
        }
    }
}

impl ConsumerContext for IntakeContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => self.revoke(consumer, tps_of(tpl)),
            Rebalance::Assign(_) => {}
            Rebalance::Error(e) => self.telemetry.rebalance_error(e),
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let tps = tps_of(tpl);
            self.flow.assign(&tps);
            self.set_pauses(consumer, &tps);
            self.telemetry
                .partitions_assigned(&named(&tps), self.flow.assigned().len());
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        self.flow.committed(&positions(offsets));
        match result {
            Ok(()) => self.telemetry.offsets_committed(Ok(())),
            // Nothing to commit is not a failure.
            Err(KafkaError::ConsumerCommit(rdkafka::types::RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => self.telemetry.offsets_committed(Err(&e)),
        }
    }
}

impl IntakeContext {
    /// librdkafka keeps a partition's pause across a revoke and an
    /// assignment: a partition this member had paused (behind a retry held
    /// until due, or at the in-flight cap) and is given back would never be
    /// fetched again, its records left unread for good. Herald decides each
    /// assigned partition's pause afresh instead: paused only while every
    /// partition is (the flow stayed full), read otherwise.
    fn set_pauses(&self, consumer: &BaseConsumer<Self>, tps: &[Tp]) {
        let (paused, read): (Vec<Tp>, Vec<Tp>) = tps.iter().cloned().partition(|tp| self.flow.is_paused(tp));
        if !read.is_empty() {
            if let Err(e) = consumer.resume(&partitions_tpl(&read)) {
                self.telemetry.consumer_error(&e);
            }
        }
        if !paused.is_empty() {
            if let Err(e) = consumer.pause(&partitions_tpl(&paused)) {
                self.telemetry.consumer_error(&e);
            }
        }
    }

    /// Waits (bounded) for the revoked partitions' events, then stores and
    /// commits their finished prefix. Unfinished events are abandoned: the
    /// next owner consumes them again from the committed offset.
    fn revoke(&self, consumer: &BaseConsumer<Self>, tps: Vec<Tp>) {
        let lost = consumer.assignment_lost();
        if !lost {
            let deadline = Instant::now() + self.revoke_drain_timeout;
            let multi_threaded = tokio::runtime::Handle::try_current()
                .map(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
                .unwrap_or(false);
            if multi_threaded {
                tokio::task::block_in_place(|| self.flow.wait_drained(&tps, deadline));
            } else {
                self.flow.wait_drained(&tps, Instant::now());
            }
        }
        if !lost {
            // Inside a poll: every record before the positions was taken in.
            match consumer.position() {
                Ok(tpl) => self.flow.passed(&positions(&tpl)),
                Err(e) => self.telemetry.consumer_error(&e),
            }
        }
        let (stores, abandoned) = self.flow.revoke(&tps);
        if !lost && !stores.is_empty() {
            match offsets_tpl(&stores) {
                Ok(tpl) => {
                    if let Err(e) = consumer.store_offsets(&tpl) {
                        self.telemetry.offset_store_failed(&e);
                    }
                    let result = consumer.commit(&tpl, CommitMode::Sync);
                    self.telemetry
                        .offsets_committed(result.as_ref().map(|_| ()).map_err(|e| e as _));
                }
                Err(e) => self.telemetry.offset_store_failed(&e),
            }
        }
        self.telemetry
            .partitions_revoked(&named(&tps), abandoned, self.flow.assigned().len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_stored_as_given_the_next_offset_to_consume() {
        let stores = vec![(("a".into(), 0), 42), (("b".into(), 3), 7)];
        let tpl = offsets_tpl(&stores).unwrap();
        let got: Vec<(String, i32, Offset)> = tpl
            .elements()
            .iter()
            .map(|e| (e.topic().to_owned(), e.partition(), e.offset()))
            .collect();
        assert_eq!(
            got,
            [
                ("a".to_owned(), 0, Offset::Offset(42)),
                ("b".to_owned(), 3, Offset::Offset(7))
            ],
            "store_offsets(tpl) stores what it is given: no +1 here"
        );
    }

    #[test]
    fn partitions_go_to_librdkafka_and_back_unchanged() {
        let tps: Vec<Tp> = vec![("events".into(), 0), ("events".into(), 5), ("other".into(), 1)];
        let tpl = partitions_tpl(&tps);
        assert_eq!(tps_of(&tpl), tps);
        assert_eq!(named(&tps)[1], ("events".to_owned(), 5));
        assert!(tpl.elements().iter().all(|e| e.offset() == Offset::Invalid));
    }
}

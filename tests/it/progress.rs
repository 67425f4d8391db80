//! The progress check: a partition paused behind Herald's back (the failure
//! a client keeping a pause across a rebalance causes) is found, resumed and
//! counted, and its records are read.

use std::sync::Arc;
use std::time::Duration;

use herald::event::SourceRecord;
use herald::intake::consumer::{ConsumerSpec, Intake};
use herald::intake::flow::{Completion, Flow, FlowLimits};
use herald::intake::Dispatch;
use herald::telemetry::Telemetry;
use parking_lot::Mutex;
use rdkafka::consumer::Consumer;
use rdkafka::TopicPartitionList;
use tokio_util::sync::CancellationToken;

use crate::helpers::*;

/// Finishes every record at once, noting its offset.
#[derive(Default)]
struct Offsets(Mutex<Vec<i64>>);

impl Dispatch for Offsets {
    fn dispatch(&self, record: SourceRecord, done: Completion) {
        self.0.lock().push(record.offset);
        done.finish();
    }
}

impl Offsets {
    fn count(&self) -> usize {
        self.0.lock().len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_paused_behind_heralds_back_is_found_resumed_and_counted() {
    let env = TestEnv::new("progress", &["events"], 1).await;
    let config = env.config("[kafka]\nprogress_check_interval = \"1s\"\n");
    let telemetry = Telemetry::new(&config.kafka.topics, config.ops.max_tenant_series);
    let spec = ConsumerSpec {
        name: "source",
        group_id: env.group.clone(),
        topics: env.topics.clone(),
        hold: None,
    };
    let flow = Flow::new(FlowLimits::of(&config.kafka));
    let intake = Intake::new(&config.kafka, spec, flow, telemetry.clone()).unwrap();
    let client = intake.client();
    let offsets = Arc::new(Offsets::default());
    let shutdown = CancellationToken::new();
    let run = tokio::spawn(intake.run(offsets.clone(), shutdown.clone(), Duration::from_secs(5)));

    let publisher = Publisher::new();
    publisher.json(env.topic(), "{}").await;
    eventually(Duration::from_secs(30), "the first record", || async {
        (offsets.count() == 1).then_some(())
    })
    .await;
    let series = r#"herald_partition_stalls_total{cause="not_read",consumer="source"}"#;
    assert_eq!(metric_value(&telemetry.metrics.render(), series), 0.0);

    // Paused by another hand: Herald meant to read it.
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(env.topic(), 0);
    client.pause(&tpl).unwrap();
    publisher.json(env.topic(), "{}").await;
    publisher.json(env.topic(), "{}").await;

    eventually(Duration::from_secs(30), "the records behind the pause", || async {
        (offsets.count() == 3).then_some(())
    })
    .await;
    assert_eq!(*offsets.0.lock(), [0, 1, 2]);
    assert!(metric_value(&telemetry.metrics.render(), series) >= 1.0);
    shutdown.cancel();
    run.await.unwrap();
}

//! Rebalances with work waiting: a partition paused when it is revoked and
//! assigned back to the same member (librdkafka keeps a pause across an
//! assignment) must be read again, whether it was paused by a retry held
//! until due or by the in-flight caps; and the lag of a paused partition
//! stays true.
//!
//! Each case runs under the eager assignor (`range`: every rebalance revokes
//! everything and assigns it again, mostly to the same member) and under
//! Herald's default (cooperative incremental: only what changes hands
//! moves). Members join and leave as replicas of an operator's group do, at a
//! low rate, so no later record wakes a forgotten partition.

use std::time::Duration;

use crate::helpers::*;

const EVENT: &str = r#"{"event":"invoice.paid","version":"0","time":1740133769000}"#;

/// The overlay choosing the assignor; empty for Herald's default.
fn assignor(name: Option<&str>) -> String {
    match name {
        Some(name) => format!("[kafka.consumer_properties]\n\"partition.assignment.strategy\" = \"{name}\"\n"),
        None => String::new(),
    }
}

/// The overlay choosing KIP-848's consumer group protocol.
fn consumer_protocol() -> String {
    format!("[kafka]\n{CONSUMER_PROTOCOL}\n")
}

/// A second member joins both of `app`'s groups, receives its share, and
/// leaves again: two rebalances each.
async fn join_and_leave(env: &TestEnv, app: &RunningApp, overlay: &str) {
    let other = env.spawn(overlay).await;
    // Each group has settled with it before it goes: it was given its share
    // (perhaps none), and every partition has one owner again.
    let owned = |ready: &serde_json::Value, consumer: &str| ready["consumers"][consumer]["partitions"].as_u64();
    let total = |consumer: &str| match consumer {
        "source" => env.topics.len() as u64,
        _ => env.tiers.len() as u64 + 1,
    };
    eventually(
        Duration::from_secs(30),
        "both groups to settle with a second member",
        || async {
            let (mine, theirs) = (app.readyz().await, other.readyz().await);
            let settled = ["source", "retry"].into_iter().all(|c| {
                theirs["consumers"][c]["assignment_received"] == true
                    && owned(&mine, c).zip(owned(&theirs, c)).map(|(a, b)| a + b) == Some(total(c))
            });
            settled.then_some(())
        },
    )
    .await;
    other.stop().await;
}

/// The partitions were read because their pause followed ownership, not
/// because the progress check had to repair them.
async fn assert_no_stalls(app: &RunningApp) {
    let text = app.metrics().await;
    for consumer in ["source", "retry"] {
        for cause in ["not_read", "held_past_due"] {
            let series = format!(r#"herald_partition_stalls_total{{cause="{cause}",consumer="{consumer}"}}"#);
            assert_eq!(metric_value(&text, &series), 0.0, "{series}");
        }
    }
}

async fn a_held_retry_survives_a_rebalance(name: &str, overlay: String) {
    let (env, receiver) = failing_once(name, 8000).await;
    let app = env.spawn(&overlay).await;
    Publisher::new().json(env.topic(), EVENT).await;
    let first = receiver.wait_for(1, Duration::from_secs(30)).await[0].at;
    eventually(Duration::from_secs(10), "the retry to be held until due", || async {
        (app.metric("herald_retry_records_waiting").await == 1.0).then_some(())
    })
    .await;

    // While the tier partition is paused behind its held record.
    join_and_leave(&env, &app, &overlay).await;

    let got = receiver.wait_for(2, Duration::from_secs(60)).await;
    let waited = got[1].at - first;
    assert!(waited >= Duration::from_millis(8000), "never early: {waited:?}");
    assert_eq!(got[1].attempt(), 2);
    assert_eq!(got[1].header("webhook-id"), got[0].header("webhook-id"));
    assert_no_stalls(&app).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_retry_is_delivered_after_its_partition_is_revoked_and_assigned_back_eagerly() {
    a_held_retry_survives_a_rebalance("rebal-held-eager", assignor(Some("range"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_retry_is_delivered_after_a_member_joins_and_leaves_under_the_default_protocol() {
    a_held_retry_survives_a_rebalance("rebal-held-coop", assignor(None)).await;
}

async fn a_capped_partition_survives_a_rebalance(name: &str, overlay: String) {
    let mut env = TestEnv::new(name, &["events"], 1).await;
    env.overlay = "[kafka]\nmax_in_flight_per_partition = 1\n".into();
    let receiver = TestReceiver::start(Behaviour::Delay(Duration::from_secs(2), 204)).await;
    env.store()
        .await
        .put(&webhook("slow", &receiver.url("/"), &["*"]))
        .await
        .unwrap();
    let app = env.spawn(&overlay).await;
    let publisher = Publisher::new();
    for i in 0..3 {
        let event = format!(r#"{{"event":"invoice.paid","version":"0","n":{i}}}"#);
        publisher.json(env.topic(), &event).await;
    }
    // The first is in flight and the partition paused by the cap of one.
    receiver.wait_for(1, Duration::from_secs(30)).await;

    join_and_leave(&env, &app, &overlay).await;

    let got = eventually(Duration::from_secs(60), "all three events", || async {
        let mut seen: Vec<String> = receiver
            .received()
            .iter()
            .map(|r| String::from_utf8_lossy(&r.body).into_owned())
            .collect();
        seen.sort();
        seen.dedup();
        (seen.len() == 3).then_some(seen)
    })
    .await;
    assert!(got.iter().all(|body| body.contains("invoice.paid")), "{got:?}");
    assert_no_stalls(&app).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_retry_is_delivered_after_a_member_joins_and_leaves_under_the_consumer_protocol() {
    a_held_retry_survives_a_rebalance("rebal-held-848", consumer_protocol()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_paused_by_the_in_flight_cap_is_read_again_after_an_eager_rebalance() {
    a_capped_partition_survives_a_rebalance("rebal-cap-eager", assignor(Some("range"))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_paused_by_the_in_flight_cap_is_read_again_under_the_default_protocol() {
    a_capped_partition_survives_a_rebalance("rebal-cap-coop", assignor(None)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_paused_by_the_in_flight_cap_is_read_again_under_the_consumer_protocol() {
    a_capped_partition_survives_a_rebalance("rebal-cap-848", consumer_protocol()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lag_of_a_tier_partition_paused_behind_a_held_retry_counts_what_was_written_since() {
    let (env, receiver) = failing_once("rebal-lag", 30_000).await;
    let app = env.spawn("").await;
    let publisher = Publisher::new();
    publisher.json(env.topic(), EVENT).await;
    eventually(Duration::from_secs(10), "the first retry to be held", || async {
        (app.metric("herald_retry_records_waiting").await == 1.0).then_some(())
    })
    .await;
    // Two more retries are written behind it while the partition is paused.
    publisher.json(env.topic(), EVENT).await;
    publisher.json(env.topic(), EVENT).await;
    receiver.wait_for(3, Duration::from_secs(20)).await;
    let tier = &env.tiers[0].0;
    // The third retry is written once its first attempt has failed.
    eventually(Duration::from_secs(20), "three retries in the tier", || async {
        (end_offsets(tier, 1).await == [3]).then_some(())
    })
    .await;
    let series = format!(r#"herald_consumer_lag_messages{{consumer="retry",partition="0",topic="{tier}"}}"#);
    app.wait_metric(&series, 3.0).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_meeting_members_of_the_eager_assignors_is_refused_while_they_go_on() {
    let env = TestEnv::new("rebal-mixed", &["events"], 1).await;
    let receiver = TestReceiver::ok().await;
    env.store()
        .await
        .put(&webhook("ok", &receiver.url("/"), &["*"]))
        .await
        .unwrap();
    // A replica of a version that used the eager assignors.
    let old = env.spawn(&assignor(Some("range,roundrobin"))).await;
    let new = env.spawn_unready("").await;
    eventually(
        Duration::from_secs(30),
        "the group to refuse the new replica",
        || async { (new.metric("herald_consumer_errors_total").await > 0.0).then_some(()) },
    )
    .await;
    let ready = new.readyz().await;
    assert_eq!(ready["ready"], false, "{ready}");
    assert_eq!(ready["consumers"]["source"]["assignment_received"], false);
    // The old member keeps every partition and delivers.
    Publisher::new().json(env.topic(), EVENT).await;
    receiver.wait_for(1, Duration::from_secs(30)).await;
    // Once it has gone, the new one is given the partitions.
    old.stop().await;
    new.wait_ready().await;
    Publisher::new().json(env.topic(), EVENT).await;
    receiver.wait_for(2, Duration::from_secs(30)).await;
    new.stop().await;
}

/// Partitions added to a source topic while Herald reads it (an operator
/// making room for more replicas): the events written to them before Herald
/// learns of them are delivered, none lost, and the group commits there.
/// Herald learns of them at its next metadata refresh (every 30 s; it took
/// librdkafka's default of 5 minutes before), so well inside 150 s.
async fn events_on_added_partitions_are_delivered(name: &str, overlay: String) {
    let env = TestEnv::new(name, &["events"], 1).await;
    let receiver = receiving_all(&env, "all").await;
    let app = env.spawn(&overlay).await;
    let publisher = Publisher::new();
    publisher.json(env.topic(), EVENT).await;
    receiver.wait_for(1, Duration::from_secs(30)).await;
    add_partitions(env.topic(), 3).await;
    let started = std::time::Instant::now();
    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    for partition in 1..3 {
        let record = rdkafka::producer::FutureRecord::<(), _>::to(env.topic())
            .partition(partition)
            .payload(EVENT);
        producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .expect("produced to an added partition");
    }
    receiver.wait_for(3, Duration::from_secs(150)).await;
    eprintln!("events on the added partitions delivered after {:?}", started.elapsed());
    env.wait_finished().await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_on_partitions_added_to_a_running_group_are_delivered_under_the_default_protocol() {
    events_on_added_partitions_are_delivered("added-partitions", assignor(None)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_on_partitions_added_to_a_running_group_are_delivered_under_the_consumer_protocol() {
    events_on_added_partitions_are_delivered("added-partitions-848", consumer_protocol()).await;
}

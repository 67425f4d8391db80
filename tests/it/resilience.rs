//! Replicas crash, scale and stop without losing events.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::helpers::*;

/// Event number -> the webhook-ids it arrived with.
fn arrivals(receiver: &TestReceiver) -> BTreeMap<u64, BTreeSet<String>> {
    let mut out: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for r in receiver.received() {
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        out.entry(body["n"].as_u64().unwrap())
            .or_default()
            .insert(r.header("webhook-id").to_owned());
    }
    out
}

async fn publish_numbered(topic: &str, range: std::ops::Range<u64>) {
    let publisher = Publisher::new();
    let sends = range.map(|n| {
        let publisher = &publisher;
        async move {
            let body = format!(r#"{{"event":"load.test","version":"0","n":{n}}}"#);
            publisher.send(topic, Some(&n.to_string()), body.as_bytes(), &[]).await
        }
    });
    // Bounded concurrency keeps the producer queue small.
    futures::stream::iter(sends)
        .buffer_unordered(500)
        .collect::<Vec<()>>()
        .await;
}

use futures::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_nothing_and_duplicates_share_their_id() {
    const EVENTS: u64 = 10_000;
    let env = TestEnv::new("crash", &["events"], 3).await;
    // A little latency per request keeps Herald busy long enough to be killed mid-stream.
    let receiver = TestReceiver::start(Behaviour::Delay(Duration::from_millis(5), 204)).await;
    env.store()
        .await
        .put(&webhook("all", &receiver.url("/"), &["*"]))
        .await
        .unwrap();
    publish_numbered(env.topic(), 0..EVENTS).await;

    let mut first = HeraldProcess::spawn(&env.config_toml());
    receiver.wait_for(1_500, Duration::from_secs(60)).await;
    first.signal("KILL");
    first.child.wait().await.unwrap();
    let at_kill = arrivals(&receiver).len() as u64;
    assert!(
        at_kill < EVENTS,
        "the kill must land mid-stream (all {EVENTS} were already delivered)"
    );

    let mut second = HeraldProcess::spawn(&env.config_toml());
    let seen = eventually(
        Duration::from_secs(180),
        "every event to arrive after the restart",
        || async {
            let seen = arrivals(&receiver);
            (seen.len() as u64 == EVENTS).then_some(seen)
        },
    )
    .await;
    second.wait_ready().await;
    second.signal("TERM");
    assert!(second.child.wait().await.unwrap().success());

    assert_eq!(
        seen.keys().copied().collect::<Vec<_>>(),
        (0..EVENTS).collect::<Vec<_>>()
    );
    for (n, ids) in &seen {
        assert_eq!(ids.len(), 1, "event {n} arrived with different webhook-ids: {ids:?}");
    }
    let total = receiver.count() as u64;
    eprintln!(
        "kill -9 after {at_kill} events; {total} deliveries for {EVENTS} events ({} duplicates)",
        total - EVENTS
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_split_the_partitions_and_deliver_everything() {
    let env = TestEnv::new("replicas", &["events"], 4).await;
    let receiver = TestReceiver::ok().await;
    env.store()
        .await
        .put(&webhook("all", &receiver.url("/"), &["*"]))
        .await
        .unwrap();
    let a = env.spawn("").await;
    let b = env.spawn("").await;
    eventually(
        Duration::from_secs(60),
        "the group to settle with both replicas",
        || async {
            let (pa, pb) = (
                a.metric("herald_partitions_assigned").await,
                b.metric("herald_partitions_assigned").await,
            );
            (pa > 0.0 && pb > 0.0 && pa + pb == 4.0).then_some(())
        },
    )
    .await;

    publish_numbered(env.topic(), 0..400).await;
    let seen = eventually(Duration::from_secs(60), "all 400 events", || async {
        let seen = arrivals(&receiver);
        (seen.len() == 400).then_some(seen)
    })
    .await;
    assert!(seen.values().all(|ids| ids.len() == 1));
    let series = r#"herald_deliveries_total{class="2xx",outcome="succeeded"}"#;
    let (da, db) = (a.metric(series).await, b.metric(series).await);
    assert!(da > 0.0 && db > 0.0, "both replicas delivered ({da} + {db})");
    assert_eq!(da + db, receiver.count() as f64);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_deliveries_commits_and_exits_0() {
    let env = TestEnv::new("sigterm", &["events"], 2).await;
    let receiver = TestReceiver::start(Behaviour::Delay(Duration::from_millis(1500), 200)).await;
    env.store()
        .await
        .put(&webhook("slow", &receiver.url("/"), &["*"]))
        .await
        .unwrap();
    publish_numbered(env.topic(), 0..20).await;

    let mut herald = HeraldProcess::spawn(&env.config_toml());
    herald.wait_ready().await;
    // Requests are in flight (each takes 1.5 s) when the signal arrives.
    receiver.wait_for(1, Duration::from_secs(30)).await;
    herald.signal("TERM");
    let status = tokio::time::timeout(Duration::from_secs(30), herald.child.wait())
        .await
        .expect("Herald exits within its drain deadline")
        .unwrap();
    assert!(status.success(), "exit status {status:?}");

    // Everything that was in flight finished, and exactly that was committed.
    let delivered: BTreeSet<u64> = arrivals(&receiver).into_keys().collect();
    let at_exit = committed(&env.group, env.topic(), 2).await;
    let ends = end_offsets(env.topic(), 2).await;
    let committed_events: i64 = at_exit.iter().map(|&c| c.max(0)).sum();
    assert!(committed_events > 0, "offsets were committed: {at_exit:?}");
    assert_eq!(
        committed_events as usize,
        delivered.len(),
        "the committed offsets cover exactly the delivered events (committed {at_exit:?}, ends {ends:?})"
    );

    // A restart delivers the rest, and only the rest.
    let mut again = HeraldProcess::spawn(&env.config_toml());
    again.wait_ready().await;
    eventually(Duration::from_secs(60), "the remaining events", || async {
        (arrivals(&receiver).len() == 20).then_some(())
    })
    .await;
    again.signal("TERM");
    assert!(again.child.wait().await.unwrap().success());
    assert_eq!(receiver.count(), 20, "nothing was delivered twice");
    assert_eq!(committed(&env.group, env.topic(), 2).await, ends);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_partitions_resume_without_skipping_or_repeating_records() {
    // Five events in flight per partition: the partitions pause and resume
    // dozens of times while 300 events drain through a slowish endpoint.
    // librdkafka drops prefetched records on pause; none may be lost.
    let env = TestEnv::new("backpressure", &["events"], 2).await;
    let receiver = TestReceiver::start(Behaviour::Delay(Duration::from_millis(20), 204)).await;
    env.store()
        .await
        .put(&webhook("all", &receiver.url("/"), &["*"]))
        .await
        .unwrap();
    publish_numbered(env.topic(), 0..300).await;
    let app = env
        .spawn("[kafka]\nmax_in_flight_per_partition = 5\nmax_in_flight = 8")
        .await;
    let seen = eventually(Duration::from_secs(60), "all 300 events", || async {
        let seen = arrivals(&receiver);
        (seen.len() == 300).then_some(seen)
    })
    .await;
    assert_eq!(seen.len(), 300);
    assert_eq!(receiver.count(), 300, "no record was delivered twice");
    assert!(
        app.metric("herald_partition_pauses_total").await >= 10.0,
        "back-pressure paused the partitions"
    );
    eventually(Duration::from_secs(10), "offsets committed to the end", || async {
        (committed(&env.group, env.topic(), 2).await == end_offsets(env.topic(), 2).await).then_some(())
    })
    .await;
    // Lag is reported per assigned partition and drops to zero.
    eventually(Duration::from_secs(10), "the lag gauge to reach zero", || async {
        let text = app.metrics().await;
        let lags: Vec<f64> = (0..2)
            .map(|p| {
                metric_value(
                    &text,
                    &format!(
                        "herald_consumer_lag_messages{{consumer=\"source\",partition=\"{p}\",topic=\"{}\"}}",
                        env.topic()
                    ),
                )
            })
            .collect();
        let present = (0..2).all(|p| text.contains(&format!("partition=\"{p}\",topic=\"{}\"", env.topic())));
        (present && lags.iter().all(|&l| l == 0.0)).then_some(())
    })
    .await;
    app.stop().await;
}

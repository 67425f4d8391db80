//! A stuck partition is visible: its lag counts what waits behind the
//! committed offset (from the log start when nothing was committed), the age
//! of its oldest event in flight grows, its last commit stays put, and
//! `/status` names it.

use std::time::Duration;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_partition_shows_its_lag_and_an_ageing_event_while_its_commit_stays_put() {
    let env = TestEnv::new("stuck", &["events"], 1).await;
    let hangs = TestReceiver::start(Behaviour::Hang).await;
    let fine = TestReceiver::ok().await;
    let store = env.store().await;
    store
        .put(&webhook("hangs", &hangs.url("/"), &["stuck.*"]))
        .await
        .unwrap();
    store.put(&webhook("fine", &fine.url("/"), &["fine.*"])).await.unwrap();
    // The bounds raised: the hung request is never given up on.
    let app = env
        .spawn("[delivery]\nrequest_timeout = \"1h\"\nmax_queue_wait = \"1h\"\n[ops]\nstall_after = \"2s\"\n")
        .await;
    let publisher = Publisher::new();
    publisher
        .json(env.topic(), r#"{"event":"stuck.thing","version":"0"}"#)
        .await;
    hangs.wait_for(1, Duration::from_secs(20)).await;
    // A later event of the same partition is delivered, but cannot be committed past the first.
    publisher
        .json(env.topic(), r#"{"event":"fine.thing","version":"0"}"#)
        .await;
    fine.wait_for(1, Duration::from_secs(20)).await;

    let series = |name: &str| format!(r#"{name}{{consumer="source",partition="0",topic="{}"}}"#, env.topic());
    let (lag, oldest, committed_at) = (
        series("herald_consumer_lag_messages"),
        series("herald_oldest_unfinished_seconds"),
        series("herald_partition_last_commit_timestamp_seconds"),
    );
    let first = eventually(Duration::from_secs(20), "the partition's health", || async {
        let text = app.metrics().await;
        let (l, o, c) = (
            metric_value(&text, &lag),
            metric_value(&text, &oldest),
            metric_value(&text, &committed_at),
        );
        (l == 2.0 && o > 0.0 && c > 0.0).then_some((o, c))
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let text = app.metrics().await;
    assert_eq!(
        metric_value(&text, &lag),
        2.0,
        "never committed: both records count, from the log start"
    );
    let aged = metric_value(&text, &oldest);
    assert!(aged >= first.0 + 2.0, "the oldest event ages: {} then {aged}", first.0);
    assert_eq!(
        metric_value(&text, &committed_at),
        first.1,
        "no commit since the assignment"
    );
    assert_eq!(
        committed(&env.group, env.topic(), 1).await,
        [-1001],
        "the group committed nothing (read with an independent client)"
    );

    let status = reqwest::get(format!("http://{}/status", app.ops)).await.unwrap();
    assert_eq!(status.status(), 503);
    let body: serde_json::Value = serde_json::from_str(&status.text().await.unwrap()).unwrap();
    assert_eq!(body["stalled_partitions"], 1, "{body}");
    let partition = &body["consumers"]["source"]["partitions"][0];
    assert_eq!(partition["topic"], env.topic());
    assert_eq!(partition["lag"], 2);
    assert_eq!(partition["in_flight"], 1);
    assert!(
        partition["stalled"].as_str().unwrap().contains("in flight for"),
        "{partition}"
    );
    // The broker is fine: named, connected, not what holds the partition.
    let broker = &body["consumers"]["source"]["brokers"][0];
    assert_eq!(broker["address"], brokers(), "{body}");
    assert_eq!(
        (&broker["state"], &broker["unreachable"]),
        (&"UP".into(), &false.into()),
        "{broker}"
    );
    // Liveness and readiness are not about progress.
    assert_eq!(
        reqwest::get(format!("http://{}/readyz", app.ops))
            .await
            .unwrap()
            .status(),
        200
    );
    app.stop().await;
}

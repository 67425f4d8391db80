//! A due retry is delivered when it is due, whatever else its wait topic
//! holds: single-partition tier topics, a real broker.

use std::collections::BTreeSet;
use std::time::Duration;

use herald::retry::codec::headers as h;
use reqwest::Method;
use serde_json::json;

use crate::api::*;
use crate::helpers::*;

fn event(kind: &str, n: usize) -> String {
    format!(r#"{{"event":"{kind}.happened","version":"0","time":1,"id":"evt_{kind}_{n}"}}"#)
}

/// A one-partition tier with two webhooks: `slow` (its first attempt
/// answered 429/503 with `Retry-After: retry_after`) and `quick` (500 once).
/// Herald runs with `overlay`; one `slow.*` event is published and its retry
/// is in the tier before this returns, so it heads the tier's partition.
async fn slow_retry_first(
    env: &TestEnv,
    status: u16,
    retry_after: &str,
    overlay: &str,
) -> (RunningApp, TestReceiver, TestReceiver, Publisher) {
    let slow = TestReceiver::start(failing(1, status, Some(retry_after))).await;
    let quick = TestReceiver::start(failing(1, 500, None)).await;
    let store = env.store().await;
    store.put(&webhook("slow", &slow.url("/"), &["slow.*"])).await.unwrap();
    store
        .put(&webhook("quick", &quick.url("/"), &["quick.*"]))
        .await
        .unwrap();
    let app = env.spawn(overlay).await;
    let publisher = Publisher::new();
    publisher.json(env.topic(), &event("slow", 0)).await;
    eventually(Duration::from_secs(20), "the slow retry in the tier", || async {
        (app.metric(r#"herald_retries_scheduled_total{tier="1"}"#).await == 1.0).then_some(())
    })
    .await;
    (app, slow, quick, publisher)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_retry_after_holds_back_no_other_webhooks_retry() {
    let env = TestEnv::new("order-ra", &["events"], 1)
        .await
        .with_tiers(&[Tier::after_ms(3000).at_most_ms(120_000)])
        .await;
    // Asks for 12 s, four times the tier's delay; the other fails plainly.
    let (app, slow, quick, publisher) = slow_retry_first(&env, 429, "12", "").await;
    publisher.json(env.topic(), &event("quick", 0)).await;

    let got = quick.wait_for(2, Duration::from_secs(30)).await;
    let gap = got[1].at - got[0].at;
    assert!(gap >= Duration::from_secs(3), "never early: {gap:?}");
    assert!(
        gap <= Duration::from_secs(5),
        "due in 3 s, held back by another webhook's Retry-After: {gap:?}"
    );
    assert_eq!(slow.count(), 1, "the slow one is not due yet");
    let got = slow.wait_for(2, Duration::from_secs(30)).await;
    let gap = got[1].at - got[0].at;
    assert!(gap >= Duration::from_secs(12), "Retry-After honoured: {gap:?}");
    assert!(gap <= Duration::from_secs(14), "and not later: {gap:?}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_retry_arrives_at_once_while_the_tier_holds_a_retry_due_in_an_hour() {
    let env = TestEnv::new("order-manual", &["events"], 1)
        .await
        .with_tiers(&[Tier::after_ms(3_600_000)])
        .await;
    let stuck = TestReceiver::start(Behaviour::Status(500)).await;
    let fine = TestReceiver::ok().await;
    let store = env.store().await;
    store
        .put(&webhook("stuck", &stuck.url("/"), &["stuck.*"]))
        .await
        .unwrap();
    store.put(&webhook("fine", &fine.url("/"), &["fine.*"])).await.unwrap();
    let app = env.spawn(&admin_overlay("24h")).await;
    let api = Api::new(&app);
    let publisher = Publisher::new();
    publisher.json(env.topic(), &event("stuck", 0)).await;
    eventually(Duration::from_secs(20), "a retry due in an hour", || async {
        (app.metric("herald_retry_records_waiting").await == 1.0).then_some(())
    })
    .await;
    publisher.json(env.topic(), &event("fine", 0)).await;
    let first = fine.wait_for(1, Duration::from_secs(20)).await;
    let attempt = eventually(Duration::from_secs(10), "the attempt in the history", || async {
        let page = api.ok(Method::GET, "/v1/webhooks/fine/deliveries", OPS, None).await;
        page["data"][0]["id"].as_str().map(str::to_owned)
    })
    .await;

    let asked = std::time::Instant::now();
    let retried = api
        .ok(
            Method::POST,
            &format!("/v1/webhooks/fine/deliveries/{attempt}/retry"),
            OPS,
            None,
        )
        .await;
    assert_eq!(retried["delivery_id"], first[0].header("webhook-id"));
    let got = fine.wait_for(2, Duration::from_secs(20)).await;
    let took = got[1].at.duration_since(asked);
    assert!(
        took <= Duration::from_secs(5),
        "a manual retry waits for nothing: {took:?}"
    );
    assert_eq!(got[1].header("webhook-id"), first[0].header("webhook-id"));
    assert_eq!(got[1].attempt(), 2);
    assert_eq!(stuck.count(), 1, "the hour's retry is not delivered early");
    assert_eq!(app.metric("herald_redrives_total").await, 1.0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_of_a_thousand_arrives_at_once_and_survives_kill_9() {
    const KEPT: usize = 1000;
    let env = TestEnv::new("order-replay", &["events"], 1)
        .await
        .with_tiers(&[Tier::after_ms(3_600_000)])
        .await;
    let stuck = TestReceiver::start(Behaviour::Status(500)).await;
    // Slow enough (two at a time, 10 ms each) that a kill lands mid-replay.
    let kept = TestReceiver::start(Behaviour::Delay(Duration::from_millis(10), 204)).await;
    let store = env.store().await;
    store
        .put(&webhook("stuck", &stuck.url("/"), &["stuck.*"]))
        .await
        .unwrap();
    let mut paused = webhook("kept", &kept.url("/"), &["kept.*"]);
    paused.status = herald::webhook::WebhookStatus::Paused;
    paused.limits.max_in_flight = Some(2);
    store.put(&paused).await.unwrap();
    let config = env.config_toml() + &admin_overlay("24h");

    let mut first = HeraldProcess::spawn(&config);
    first.wait_ready().await;
    let publisher = Publisher::new();
    publisher.json(env.topic(), &event("stuck", 0)).await;
    for n in 0..KEPT {
        publisher.json(env.topic(), &event("kept", n)).await;
    }
    let letters = read_topic(&env.dlq, KEPT, Duration::from_secs(60)).await;
    let kept_ids: BTreeSet<String> = letters.iter().map(|l| l.header(h::DELIVERY_ID).to_owned()).collect();
    assert_eq!(kept_ids.len(), KEPT);
    assert_eq!(stuck.count(), 1);

    let api = Api::at(first.admin);
    let resumed = api
        .ok(
            Method::POST,
            "/v1/webhooks/kept/resume",
            OPS,
            Some(json!({"replay": true})),
        )
        .await;
    let job = resumed["replay"]["id"].as_str().unwrap().to_owned();
    let started = std::time::Instant::now();
    eventually(Duration::from_secs(60), "the replay to be written", || async {
        let job = api.ok(Method::GET, &format!("/v1/replays/{job}"), OPS, None).await;
        (job["state"] == "done").then_some(())
    })
    .await;
    kept.wait_for(200, Duration::from_secs(30)).await;
    first.signal("KILL");
    first.child.wait().await.unwrap();
    let before_kill = kept.count();
    assert!(before_kill < KEPT, "killed in the middle ({before_kill} delivered)");

    let mut second = HeraldProcess::spawn(&config);
    let got = eventually(Duration::from_secs(120), "every kept delivery", || async {
        let got = kept.received();
        let ids: BTreeSet<String> = got.iter().map(|r| r.header("webhook-id").to_owned()).collect();
        (ids.len() >= KEPT).then_some(ids)
    })
    .await;
    let took = started.elapsed();
    assert_eq!(
        got, kept_ids,
        "every replayed delivery arrives with its own id; none lost"
    );
    assert!(
        took < Duration::from_secs(120),
        "the replay did not wait for the tier's hour: {took:?}"
    );
    assert_eq!(stuck.count(), 1, "the retry due in an hour is not delivered early");
    second.wait_ready().await;
    second.signal("TERM");
    assert!(second.child.wait().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_held_out_of_order_is_moved_once_enough_was_delivered_past_it_and_is_still_on_time() {
    let env = TestEnv::new("order-bound", &["events"], 1)
        .await
        .with_tiers(&[Tier::after_ms(2000).at_most_ms(120_000)])
        .await;
    // Asks for 8 s, out of order in a 2 s tier; three others pass it by.
    let (app, slow, quick, publisher) = slow_retry_first(&env, 503, "8", "[retry]\nmax_out_of_order = 2").await;
    for n in 0..3 {
        publisher.json(env.topic(), &event("quick", n)).await;
    }
    // Two retries delivered past it: it is moved (to the redrive topic, as no
    // tier's band fits what it has left to wait), so a crash would not
    // deliver them again.
    eventually(Duration::from_secs(20), "the slow retry to be moved", || async {
        let series = format!(r#"herald_retry_requeued_total{{topic="{}"}}"#, env.tiers[0].0);
        (app.metric(&series).await >= 1.0).then_some(())
    })
    .await;
    let got = slow.wait_for(2, Duration::from_secs(30)).await;
    let gap = got[1].at - got[0].at;
    assert!(gap >= Duration::from_secs(8), "never early: {gap:?}");
    assert!(gap <= Duration::from_secs(10), "on time though moved: {gap:?}");
    assert_eq!(got[1].header("webhook-id"), got[0].header("webhook-id"));
    let got = quick.wait_for(6, Duration::from_secs(20)).await;
    assert!(got.iter().filter(|r| r.attempt() == 2).count() == 3);
    env.wait_finished().await;
    assert_eq!((slow.count(), quick.count()), (2, 6), "each retried once, no more");
    app.stop().await;
}

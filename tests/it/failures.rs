//! Nothing is lost and nothing is silent: failed deliveries, unroutable and
//! malformed records, SSRF refusals, redirects and timeouts all end in the
//! dead-letter topic with their metadata, are counted, and the service goes on.

use std::time::Duration;

use herald::retry::codec::headers as h;

use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_and_unroutable_records_are_dead_lettered_and_the_service_goes_on() {
    let env = TestEnv::new("dlq", &["events"], 1).await;
    let failing = TestReceiver::start(Behaviour::Status(500)).await;
    let healthy = TestReceiver::ok().await;
    let store = env.store().await;
    store
        .put(&webhook("failing", &failing.url("/hook"), &["tour.*"]))
        .await
        .unwrap();
    store
        .put(&webhook("healthy", &healthy.url("/hook"), &["tour.completed"]))
        .await
        .unwrap();
    let app = env.spawn("").await;

    let publisher = Publisher::new();
    let event = r#"{"event":"tour.completed","version":"0","time":1740133769000}"#;
    publisher
        .send(env.topic(), Some("k1"), event.as_bytes(), &[("trace-id", "abc")])
        .await;
    publisher.json(env.topic(), "{this is not json").await;
    publisher.json(env.topic(), r#"{"version":"0","time":1}"#).await;
    publisher
        .json(env.topic(), r#"{"event":"tour.started","version":"0"}"#)
        .await;

    let letters = read_topic(&env.dlq, 4, Duration::from_secs(20)).await;
    assert_eq!(letters.len(), 4, "{letters:#?}");

    let failed: Vec<&ReadRecord> = letters
        .iter()
        .filter(|r| r.header(h::REASON) == "delivery_failed")
        .collect();
    assert_eq!(failed.len(), 2, "the failing webhook's two deliveries");
    let first = failed
        .iter()
        .find(|r| r.value == event.as_bytes())
        .expect("the original bytes are kept");
    assert_eq!(first.key.as_deref(), Some(&b"k1"[..]), "the original key is kept");
    assert_eq!(first.header("trace-id"), "abc", "the original headers are kept");
    assert_eq!(first.header(h::WEBHOOK_ID), "failing");
    assert!(first.header(h::DELIVERY_ID).starts_with("msg_"));
    assert_eq!(first.header(h::ATTEMPT), "1");
    assert_eq!(first.header(h::LAST_STATUS), "500");
    assert_eq!(first.header(h::LAST_CLASS), "5xx");
    assert_eq!(first.header(h::EVENT_TYPE), "tour.completed");
    assert_eq!(first.header(h::SOURCE_TOPIC), env.topic());
    assert_eq!(first.header(h::SOURCE_OFFSET), "0");
    let delivered = failing.received();
    let sent_id = delivered
        .iter()
        .find(|r| r.body == event.as_bytes())
        .unwrap()
        .header("webhook-id")
        .to_owned();
    assert_eq!(
        first.header(h::DELIVERY_ID),
        sent_id,
        "the dead letter carries the id receivers saw"
    );

    let reasons: Vec<&str> = letters.iter().map(|r| r.header(h::REASON)).collect();
    assert!(reasons.contains(&"invalid_json"), "{reasons:?}");
    assert!(reasons.contains(&"missing_event_type"), "{reasons:?}");
    let malformed = letters.iter().find(|r| r.header(h::REASON) == "invalid_json").unwrap();
    assert_eq!(malformed.value, b"{this is not json");
    assert!(!malformed.header(h::DETAIL).is_empty());

    // The healthy webhook got its event and the service still runs.
    healthy.wait_for(1, Duration::from_secs(5)).await;
    publisher.json(env.topic(), event).await;
    healthy.wait_for(2, Duration::from_secs(10)).await;

    assert_eq!(
        app.metric(r#"herald_events_unroutable_total{reason="invalid_json"}"#)
            .await,
        1.0
    );
    assert_eq!(
        app.metric(r#"herald_events_unroutable_total{reason="missing_event_type"}"#)
            .await,
        1.0
    );
    eventually(
        Duration::from_secs(10),
        "the metrics to count every dead letter",
        || async {
            (app.metric(r#"herald_dead_letters_total{reason="delivery_failed"}"#)
                .await
                == 3.0)
                .then_some(())
        },
    )
    .await;
    assert!(
        app.metric(r#"herald_deliveries_total{class="5xx",outcome="failed"}"#)
            .await
            >= 2.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_policy_refuses_loopback_destinations() {
    let env = TestEnv::new("ssrf", &["events"], 1).await;
    let receiver = TestReceiver::ok().await;
    let store = env.store().await;
    // By name and by address literal, in IPv4 and IPv4-mapped IPv6 form.
    let port = receiver.addr.port();
    store
        .put(&webhook("by-name", &format!("http://localhost:{port}/x"), &["*"]))
        .await
        .unwrap();
    store
        .put(&webhook("by-ip", &format!("http://127.0.0.1:{port}/x"), &["*"]))
        .await
        .unwrap();
    store
        .put(&webhook(
            "mapped",
            &format!("http://[::ffff:127.0.0.1]:{port}/x"),
            &["*"],
        ))
        .await
        .unwrap();
    // The production default: no allowlist.
    let app = env.spawn("[delivery]\nallow_cidrs = []").await;

    Publisher::new().json(env.topic(), r#"{"event":"a.b"}"#).await;
    let letters = read_topic(&env.dlq, 3, Duration::from_secs(20)).await;
    assert_eq!(letters.len(), 3);
    for letter in &letters {
        assert_eq!(letter.header(h::LAST_CLASS), "blocked", "{letter:?}");
        assert!(letter.header(h::LAST_ERROR).contains("SSRF"), "{letter:?}");
    }
    assert_eq!(receiver.count(), 0, "nothing reached the loopback receiver");
    assert_eq!(
        app.metric(r#"herald_deliveries_total{class="blocked",outcome="failed"}"#)
            .await,
        3.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_not_followed_and_timeouts_fail() {
    let env = TestEnv::new("redirect", &["events"], 1).await;
    let redirecting = TestReceiver::start(Behaviour::Redirect("/elsewhere".into())).await;
    let slow = TestReceiver::start(Behaviour::Delay(Duration::from_secs(3), 204)).await;
    let store = env.store().await;
    store
        .put(&webhook("redirecting", &redirecting.url("/hook"), &["*"]))
        .await
        .unwrap();
    let mut w = webhook("slow", &slow.url("/hook"), &["*"]);
    w.limits.timeout_ms = Some(300);
    store.put(&w).await.unwrap();
    let app = env.spawn("").await;

    Publisher::new().json(env.topic(), r#"{"event":"a.b"}"#).await;
    let letters = read_topic(&env.dlq, 2, Duration::from_secs(20)).await;
    let class_of = |id: &str| {
        letters
            .iter()
            .find(|l| l.header(h::WEBHOOK_ID) == id)
            .map(|l| l.header(h::LAST_CLASS).to_owned())
    };
    assert_eq!(class_of("redirecting").as_deref(), Some("3xx"));
    assert_eq!(class_of("slow").as_deref(), Some("timeout"));
    let paths: Vec<String> = redirecting.received().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/hook"], "the redirect target is never requested");
    assert_eq!(
        app.metric(r#"herald_deliveries_total{class="timeout",outcome="failed"}"#)
            .await,
        1.0
    );
    assert_eq!(
        app.metric(r#"herald_deliveries_total{class="3xx",outcome="failed"}"#)
            .await,
        1.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_does_not_stall_healthy_ones() {
    let env = TestEnv::new("stall", &["events"], 1).await;
    let dead = TestReceiver::start(Behaviour::Hang).await;
    let healthy = TestReceiver::ok().await;
    let store = env.store().await;
    let mut w = webhook("dead", &dead.url("/"), &["*"]);
    w.limits.max_in_flight = Some(1);
    store.put(&w).await.unwrap();
    store.put(&webhook("healthy", &healthy.url("/"), &["*"])).await.unwrap();
    // The dead endpoint holds each request for a minute, and only 10 events
    // may be in flight on the partition: without a bound on how long a
    // delivery waits for one endpoint, it would pause the partition after 10.
    let app = env
        .spawn(
            "[delivery]\nrequest_timeout = \"60s\"\nmax_queue_wait = \"1s\"\n\
             [kafka]\nmax_in_flight_per_partition = 10\n\
             [shutdown]\ndrain_timeout = \"1s\"",
        )
        .await;

    let publisher = Publisher::new();
    for i in 0..40 {
        publisher
            .json(env.topic(), &format!(r#"{{"event":"a.b","n":{i}}}"#))
            .await;
    }
    // Far sooner than any dead delivery could time out.
    healthy.wait_for(40, Duration::from_secs(20)).await;
    // One request hangs; every other delivery to the dead endpoint gives up
    // waiting for it after a second and is kept.
    let letters = read_topic(&env.dlq, 39, Duration::from_secs(20)).await;
    assert_eq!(letters.len(), 39);
    assert!(letters
        .iter()
        .all(|l| l.header(h::LAST_CLASS) == "saturated" && l.header(h::WEBHOOK_ID) == "dead"));
    assert_eq!(
        app.metric(r#"herald_deliveries_total{class="saturated",outcome="failed"}"#)
            .await,
        39.0
    );
    assert_eq!(dead.count(), 1, "only limits.max_in_flight requests were sent to it");
    assert_eq!(healthy.count(), 40);
    // One event stays unfinished; stopping abandons it (uncommitted).
    app.stop().await;
}

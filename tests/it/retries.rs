//! Retry tiers as Kafka delay topics (seconds-scale here), then the
//! dead-letter topic.

use std::collections::BTreeMap;
use std::time::Duration;

use herald::retry::codec::headers as h;
use herald::retry::reason::Reason;

use crate::helpers::*;

const EVENT: &str = r#"{"event":"invoice.paid","version":"0","time":1740133769000}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_failing_twice_arrives_three_times_with_one_id_spaced_by_the_tiers() {
    let env = TestEnv::new("retry-ok", &["events"], 1)
        .await
        .with_tiers(&[Tier::after_ms(1000), Tier::after_ms(2000), Tier::after_ms(3000)])
        .await;
    let receiver = TestReceiver::start(failing(2, 500, None)).await;
    env.store()
        .await
        .put(&webhook("flaky", &receiver.url("/"), &["*"]))
        .await
        .unwrap();
    let app = env.spawn("").await;
    Publisher::new().json(env.topic(), EVENT).await;

    let got = receiver.wait_for(3, Duration::from_secs(30)).await;
    assert_eq!(got.iter().map(Received::attempt).collect::<Vec<_>>(), [1, 2, 3]);
    let ids: Vec<&str> = got.iter().map(|r| r.header("webhook-id")).collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one webhook-id on every attempt: {ids:?}"
    );
    assert!(got.iter().all(|r| r.body == EVENT.as_bytes()));
    // Never early: each retry waits at least its tier's delay (jitter is 0 here).
    assert!(
        got[1].at - got[0].at >= Duration::from_millis(1000),
        "{:?}",
        got[1].at - got[0].at
    );
    assert!(
        got[2].at - got[1].at >= Duration::from_millis(2000),
        "{:?}",
        got[2].at - got[1].at
    );

    eventually(Duration::from_secs(5), "the retry metrics", || async {
        let text = app.metrics().await;
        let ok = metric_value(&text, r#"herald_retries_scheduled_total{tier="1"}"#) == 1.0
            && metric_value(&text, r#"herald_retries_scheduled_total{tier="2"}"#) == 1.0
            && metric_value(&text, r#"herald_retry_attempts_total{outcome="succeeded",tier="2"}"#) == 1.0
            && metric_value(&text, r#"herald_retry_lateness_seconds_count{tier="1"}"#) == 1.0;
        ok.then_some(())
    })
    .await;
    env.wait_finished().await;
    assert_eq!(receiver.count(), 3, "nothing after the success");
    assert!(read_topic(&env.dlq, 1, Duration::from_secs(2)).await.is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_always_fails_ends_in_the_dead_letter_topic_with_its_history() {
    let env = TestEnv::new("retry-dlq", &["events"], 1)
        .await
        .with_tiers(&[Tier::after_ms(500), Tier::after_ms(500)])
        .await;
    let receiver = TestReceiver::start(failing(u32::MAX, 503, None)).await;
    env.store()
        .await
        .put(&webhook("down", &receiver.url("/"), &["*"]))
        .await
        .unwrap();
    let app = env.spawn("").await;
    Publisher::new()
        .send(env.topic(), Some("key-1"), EVENT.as_bytes(), &[("trace", "t-1")])
        .await;

    let letters = read_topic(&env.dlq, 1, Duration::from_secs(30)).await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.header(h::REASON), "retries_exhausted");
    assert_eq!(letter.header(h::ATTEMPT), "3");
    assert_eq!(letter.header(h::LAST_STATUS), "503");
    assert_eq!(letter.header(h::SOURCE_TOPIC), env.topic());
    assert_eq!(letter.header("trace"), "t-1", "the original headers survive every tier");
    assert_eq!(letter.key.as_deref(), Some(&b"key-1"[..]));
    assert_eq!(letter.value, EVENT.as_bytes());
    let history: Vec<serde_json::Value> = serde_json::from_str(letter.header(h::HISTORY)).unwrap();
    assert_eq!(history.len(), 3, "{history:?}");
    for (i, entry) in history.iter().enumerate() {
        assert_eq!(entry["attempt"], i as u64 + 1);
        assert_eq!(entry["status"], 503);
        assert_eq!(entry["class"], "5xx");
    }
    let got = receiver.received();
    assert_eq!(got.len(), 3);
    assert_eq!(letter.header(h::DELIVERY_ID), got[0].header("webhook-id"));
    assert_eq!(
        app.metric(r#"herald_dead_letters_total{reason="retries_exhausted"}"#)
            .await,
        1.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_within_the_tier_bounds() {
    let env = TestEnv::new("retry-after", &["events"], 1)
        .await
        .with_tiers(&[Tier::after_ms(500).at_most_ms(3000)])
        .await;
    let asks_two = TestReceiver::start(failing(1, 429, Some("2"))).await;
    let asks_too_much = TestReceiver::start(failing(1, 503, Some("3600"))).await;
    let not_on_500 = TestReceiver::start(failing(1, 500, Some("3600"))).await;
    let store = env.store().await;
    store.put(&webhook("two", &asks_two.url("/"), &["*"])).await.unwrap();
    store
        .put(&webhook("much", &asks_too_much.url("/"), &["*"]))
        .await
        .unwrap();
    store
        .put(&webhook("plain", &not_on_500.url("/"), &["*"]))
        .await
        .unwrap();
    let app = env.spawn("").await;
    Publisher::new().json(env.topic(), EVENT).await;

    let gap = |r: Vec<Received>| r[1].at - r[0].at;
    let two = gap(asks_two.wait_for(2, Duration::from_secs(30)).await);
    let much = gap(asks_too_much.wait_for(2, Duration::from_secs(30)).await);
    let plain = gap(not_on_500.wait_for(2, Duration::from_secs(30)).await);
    assert!(
        two >= Duration::from_secs(2),
        "Retry-After: 2 waits at least 2 s ({two:?})"
    );
    assert!(
        much >= Duration::from_secs(3),
        "clamped to max_delay, not sooner ({much:?})"
    );
    assert!(
        much < Duration::from_secs(60),
        "clamped to max_delay, not an hour ({much:?})"
    );
    assert!(plain >= Duration::from_millis(500), "{plain:?}");
    assert!(
        plain < Duration::from_secs(60),
        "Retry-After is only honoured on 429 and 503 ({plain:?})"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_retries_survive_kill_9_and_are_delivered_when_due_never_early() {
    const EVENTS: u64 = 50;
    let env = TestEnv::new("retry-crash", &["events"], 2)
        .await
        .with_tiers_of(&[Tier::after_ms(4000)], 2)
        .await;
    let receiver = TestReceiver::start(failing(1, 500, None)).await;
    env.store()
        .await
        .put(&webhook("w", &receiver.url("/"), &["*"]))
        .await
        .unwrap();
    let publisher = Publisher::new();
    for n in 0..EVENTS {
        let body = format!(r#"{{"event":"invoice.paid","n":{n}}}"#);
        publisher
            .send(env.topic(), Some(&n.to_string()), body.as_bytes(), &[])
            .await;
    }
    let mut first = HeraldProcess::spawn(&env.config_toml());
    receiver.wait_for(EVENTS as usize, Duration::from_secs(60)).await;
    // The source offsets advance only once each retry record is acknowledged:
    // wait for that, then kill while every retry is still waiting in its tier.
    eventually(
        Duration::from_secs(30),
        "the failures to be committed into the tier",
        || async {
            let committed: i64 = committed(&env.group, env.topic(), 2)
                .await
                .iter()
                .map(|c| c.max(&0))
                .sum();
            (committed == EVENTS as i64).then_some(())
        },
    )
    .await;
    first.signal("KILL");
    first.child.wait().await.unwrap();
    assert!(
        receiver.received().iter().all(|r| r.attempt() == 1),
        "killed before any retry was due"
    );

    let mut second = HeraldProcess::spawn(&env.config_toml());
    let got = receiver.wait_for(2 * EVENTS as usize, Duration::from_secs(60)).await;
    second.wait_ready().await;
    second.signal("TERM");
    assert!(second.child.wait().await.unwrap().success());

    let mut by_event: BTreeMap<String, Vec<&Received>> = BTreeMap::new();
    for r in &got {
        by_event
            .entry(String::from_utf8_lossy(&r.body).into_owned())
            .or_default()
            .push(r);
    }
    assert_eq!(by_event.len(), EVENTS as usize, "every event arrived");
    for (event, arrivals) in by_event {
        let first = arrivals.iter().find(|r| r.attempt() == 1).expect("first attempt");
        let retry = arrivals
            .iter()
            .find(|r| r.attempt() == 2)
            .unwrap_or_else(|| panic!("{event} was not retried"));
        assert_eq!(first.header("webhook-id"), retry.header("webhook-id"));
        assert!(
            retry.at - first.at >= Duration::from_secs(4),
            "{event} retried early: {:?}",
            retry.at - first.at
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_retries_cost_no_wakeups() {
    let env = TestEnv::new("retry-idle", &["events"], 3)
        .await
        .with_tiers_of(&[Tier::after_ms(3_600_000)], 3)
        .await;
    let receiver = TestReceiver::start(Behaviour::Status(500)).await;
    env.store()
        .await
        .put(&webhook("down", &receiver.url("/"), &["*"]))
        .await
        .unwrap();
    let app = env.spawn("").await;
    let publisher = Publisher::new();
    for n in 0..200 {
        let body = format!(r#"{{"event":"invoice.paid","n":{n}}}"#);
        publisher
            .send(env.topic(), Some(&n.to_string()), body.as_bytes(), &[])
            .await;
    }
    eventually(Duration::from_secs(30), "200 retries waiting in the tier", || async {
        (app.metric(r#"herald_retries_scheduled_total{tier="1"}"#).await == 200.0).then_some(())
    })
    .await;
    // Each tier partition holds its head record; the rest stay in Kafka.
    let waiting = eventually(
        Duration::from_secs(10),
        "the tier partitions to hold their heads",
        || async {
            let w = app.metric("herald_retry_records_waiting").await;
            (w >= 3.0).then_some(w)
        },
    )
    .await;
    assert!(waiting <= 3.0, "one record per partition in memory, not {waiting}");

    let wakeups = r#"herald_consumer_wakeups_total{consumer="retry"}"#;
    let before = app.metric(wakeups).await;
    // A window with nothing due: the retry consumer must not wake at all.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        app.metric(wakeups).await,
        before,
        "the retry consumer woke while nothing was due"
    );
    assert_eq!(receiver.count(), 200, "no retry was made early");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_the_webhook_announces_it_and_keeps_later_deliveries() {
    let mut env = TestEnv::new("gone", &["events"], 1)
        .await
        .with_tiers(&[Tier::after_ms(500)])
        .await;
    env.overlay = "[envelope.default]\npreset = \"jimo\"\ntenant = \"header:tenant\"".into();
    let gone = TestReceiver::start(Behaviour::Status(410)).await;
    let store = env.store().await;
    let mut w = webhook("gone", &gone.url("/"), &["*"]);
    w.tenant = Some("acme".into());
    store.put(&w).await.unwrap();
    let app = env.spawn("").await;
    let publisher = Publisher::new();
    let acme = [("tenant", "acme")];
    publisher.send(env.topic(), None, EVENT.as_bytes(), &acme).await;

    // Disabled at once, with the reason, through the store (every replica hears it).
    let disabled = eventually(Duration::from_secs(20), "the webhook to be disabled", || async {
        let w = env.store().await.get("gone").await.unwrap().unwrap();
        (w.status == herald::webhook::WebhookStatus::Disabled).then_some(w)
    })
    .await;
    assert!(
        disabled.status_reason.as_deref().unwrap().contains("410"),
        "{disabled:?}"
    );
    assert_eq!(
        disabled.status_by,
        Some(herald::webhook::StatusBy::Herald),
        "its tenant may resume it once the receiver is fixed"
    );

    // The system event, in the Jimo envelope style.
    let events = read_topic(&env.system, 1, Duration::from_secs(10)).await;
    let event: serde_json::Value = serde_json::from_slice(&events[0].value).unwrap();
    assert_eq!(event["event"], "webhook.disabled");
    assert_eq!(event["webhook"]["id"], "gone");
    assert_eq!(event["tenant"], "acme");
    assert!(event["reason"].as_str().unwrap().contains("410"));

    // That delivery is not retried; later ones are kept, not attempted.
    eventually(
        Duration::from_secs(10),
        "the index to see the webhook disabled",
        || async { (app.metric(r#"herald_webhooks{status="disabled"}"#).await == 1.0).then_some(()) },
    )
    .await;
    publisher.send(env.topic(), None, EVENT.as_bytes(), &acme).await;
    let letters = read_topic(&env.dlq, 2, Duration::from_secs(20)).await;
    let reasons: Vec<&str> = letters.iter().map(|l| l.header(h::REASON)).collect();
    assert_eq!(reasons, ["endpoint_gone", "webhook_disabled"]);
    assert_eq!(gone.count(), 1, "one request, never retried");
    assert_eq!(
        app.metric(r#"herald_webhooks_disabled_total{reason="gone"}"#).await,
        1.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_webhooks_deliveries_are_kept_and_replayed_on_resume_with_their_ids() {
    use herald::retry::replay::{replay, ReplayFilter, ReplayOptions};
    use herald::webhook::WebhookStatus;

    let env = TestEnv::new("replay", &["events"], 1)
        .await
        .with_tiers(&[Tier::after_ms(500)])
        .await;
    let receiver = TestReceiver::ok().await;
    let other = TestReceiver::ok().await;
    let store = env.store().await;
    let mut w = webhook("paused", &receiver.url("/"), &["*"]);
    w.status = WebhookStatus::Paused;
    store.put(&w).await.unwrap();
    store.put(&webhook("other", &other.url("/"), &["*"])).await.unwrap();
    let app = env.spawn("").await;
    let publisher = Publisher::new();
    for n in 0..5 {
        publisher
            .json(env.topic(), &format!(r#"{{"event":"invoice.paid","n":{n}}}"#))
            .await;
    }
    other.wait_for(5, Duration::from_secs(20)).await;
    let kept = read_topic(&env.dlq, 5, Duration::from_secs(20)).await;
    assert_eq!(kept.len(), 5);
    assert!(kept.iter().all(|l| l.header(h::REASON) == "webhook_paused"));
    assert_eq!(receiver.count(), 0);

    // Resume, then replay what was kept while paused.
    w.status = WebhookStatus::Active;
    store.put(&w).await.unwrap();
    let filter = ReplayFilter {
        webhook: Some("paused".into()),
        reasons: vec![Reason::WebhookPaused],
        ..Default::default()
    };
    let config = env.config("");
    let dry = ReplayOptions {
        dry_run: true,
        force: false,
    };
    let counted = replay(&config, &producer(&config), &filter, dry, |_| {}).await.unwrap();
    assert_eq!(
        (counted.scanned, counted.matched, counted.replayed),
        (5, 5, 0),
        "a dry run changes nothing"
    );
    env.wait_finished().await;
    assert_eq!(receiver.count(), 0, "a dry run sends nothing");
    let done = replay(&config, &producer(&config), &filter, ReplayOptions::default(), |_| {})
        .await
        .unwrap();
    assert_eq!(done.replayed, 5);

    let got = receiver.wait_for(5, Duration::from_secs(20)).await;
    let mut kept_ids: Vec<&str> = kept.iter().map(|l| l.header(h::DELIVERY_ID)).collect();
    let mut got_ids: Vec<&str> = got.iter().map(|r| r.header("webhook-id")).collect();
    kept_ids.sort();
    got_ids.sort();
    assert_eq!(got_ids, kept_ids, "replayed deliveries keep their ids");
    assert!(got.iter().all(|r| r.attempt() == 1), "the first real attempt");
    assert_eq!(other.count(), 5, "other webhooks are not replayed to");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_deliveries_replay_once_the_endpoint_heals() {
    use herald::retry::replay::{replay, ReplayFilter, ReplayOptions};

    let env = TestEnv::new("replay-dlq", &["events"], 1)
        .await
        .with_tiers(&[Tier::after_ms(300)])
        .await;
    let receiver = TestReceiver::start(failing(2, 500, None)).await;
    env.store()
        .await
        .put(&webhook("w", &receiver.url("/"), &["*"]))
        .await
        .unwrap();
    let app = env.spawn("").await;
    Publisher::new().json(env.topic(), EVENT).await;
    let letters = read_topic(&env.dlq, 1, Duration::from_secs(20)).await;
    assert_eq!(letters[0].header(h::REASON), "retries_exhausted");

    let filter = ReplayFilter {
        reasons: vec![Reason::RetriesExhausted],
        ..Default::default()
    };
    let done = replay(
        &env.config(""),
        &producer(&env.config("")),
        &filter,
        ReplayOptions::default(),
        |_| {},
    )
    .await
    .unwrap();
    assert_eq!(done.replayed, 1);
    let got = receiver.wait_for(3, Duration::from_secs(20)).await;
    assert_eq!(got.iter().map(Received::attempt).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(got
        .iter()
        .all(|r| r.header("webhook-id") == got[0].header("webhook-id")));
    app.stop().await;
}

async fn status_of(env: &TestEnv, id: &str) -> herald::webhook::Webhook {
    env.store().await.get(id).await.unwrap().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_failures_auto_disable_and_a_success_resets_the_streak() {
    use herald::webhook::WebhookStatus;
    let env = TestEnv::new("auto-disable", &["events"], 1).await;
    // Fails twice, succeeds, then fails for good.
    let flaky = TestReceiver::start(Behaviour::Sequence(vec![500, 500, 204, 500])).await;
    env.store()
        .await
        .put(&webhook("flaky", &flaky.url("/"), &["*"]))
        .await
        .unwrap();
    let app = env.spawn("[auto_disable]\nconsecutive_failures = 3").await;
    let publisher = Publisher::new();
    // One at a time, so the answers come in the sequence's order. (The
    // count is the one expected, not read after publishing, which a
    // delivery arriving first would push one past it.)
    for n in 1..=4 {
        publisher.json(env.topic(), EVENT).await;
        flaky.wait_for(n, Duration::from_secs(30)).await;
    }
    // 500, 500, 204, 500: the success ended the first streak.
    assert_eq!(status_of(&env, "flaky").await.status, WebhookStatus::Active);
    for _ in 0..2 {
        publisher.json(env.topic(), EVENT).await;
    }
    let disabled = eventually(Duration::from_secs(20), "the webhook to be auto-disabled", || async {
        let w = status_of(&env, "flaky").await;
        (w.status == WebhookStatus::Disabled).then_some(w)
    })
    .await;
    assert!(disabled
        .status_reason
        .unwrap()
        .contains("3 consecutive deliveries failed"));
    let events = read_topic(&env.system, 1, Duration::from_secs(10)).await;
    let event: serde_json::Value = serde_json::from_slice(&events[0].value).unwrap();
    assert_eq!(event["event"], "webhook.auto_disabled");
    assert_eq!(event["webhook"]["id"], "flaky");
    assert_eq!(flaky.count(), 6);
    assert_eq!(
        app.metric(r#"herald_webhooks_disabled_total{reason="auto"}"#).await,
        1.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_continuously_for_the_period_auto_disables() {
    use herald::webhook::WebhookStatus;
    let env = TestEnv::new("auto-period", &["events"], 1).await;
    let down = TestReceiver::start(Behaviour::Status(503)).await;
    env.store()
        .await
        .put(&webhook("down", &down.url("/"), &["*"]))
        .await
        .unwrap();
    let app = env.spawn("[auto_disable]\nafter = \"1s\"").await;
    let publisher = Publisher::new();
    publisher.json(env.topic(), EVENT).await;
    down.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(
        status_of(&env, "down").await.status,
        WebhookStatus::Active,
        "one failure is not a period"
    );
    let started = std::time::Instant::now();
    // Keep failing until the streak is a second old.
    let disabled = eventually(Duration::from_secs(20), "the webhook to be auto-disabled", || async {
        publisher.json(env.topic(), EVENT).await;
        let w = status_of(&env, "down").await;
        (w.status == WebhookStatus::Disabled).then_some(w)
    })
    .await;
    assert!(started.elapsed() >= Duration::from_millis(900), "not before the period");
    assert!(disabled.status_reason.unwrap().contains("failed continuously"));
    app.stop().await;
}

/// Forwards connections to the test Redis until frozen; then nothing more
/// passes either way, and the connections stay open: a Redis that does not
/// answer.
struct FreezingProxy {
    addr: std::net::SocketAddr,
    frozen: tokio::sync::watch::Sender<bool>,
}

impl FreezingProxy {
    async fn start() -> FreezingProxy {
        let redis = url::Url::parse(&redis_url()).unwrap();
        let upstream = format!("{}:{}", redis.host_str().unwrap(), redis.port().unwrap_or(6379));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (frozen, watch) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                let ((client_in, client_out), (server_in, server_out)) = (client.into_split(), server.into_split());
                tokio::spawn(Self::pump(client_in, server_out, watch.clone()));
                tokio::spawn(Self::pump(server_in, client_out, watch.clone()));
            }
        });
        FreezingProxy { addr, frozen }
    }

    async fn pump(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        mut frozen: tokio::sync::watch::Receiver<bool>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut buffer = vec![0; 16 * 1024];
        loop {
            let n = match from.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            // Frozen: held until thawed, which a test that froze it never does.
            if frozen.wait_for(|frozen| !*frozen).await.is_err() {
                return;
            }
            if to.write_all(&buffer[..n]).await.is_err() {
                return;
            }
        }
    }

    fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    fn thaw(&self) {
        self.frozen.send_replace(false);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_deliverys_retry_is_written_while_redis_does_not_answer_and_the_streak_counts_it_later() {
    use std::sync::Arc;

    use herald::delivery::target::Target;
    use herald::delivery::{Attempt, Failure};
    use herald::event::{Event, SourceRecord};
    use herald::kafka::SharedProducer;
    use herald::retry::failures::{Delivery, Failures};
    use herald::retry::policy::{AfterFailure, Policy};
    use herald::retry::schedule::Schedule;
    use herald::retry::sink::{FailureSink, Topics};
    use herald::routing::envelope::Envelopes;
    use herald::subscriptions::lifecycle::{AutoDisable, Lifecycle};
    use herald::subscriptions::store::SubscriptionStore;
    use herald::subscriptions::system::SystemEvents;
    use herald::telemetry::Telemetry;
    use tokio_util::sync::CancellationToken;

    let env = TestEnv::new("streak-off-path", &["events"], 1)
        .await
        .with_tiers(&[Tier::after_ms(60_000)])
        .await;
    let config = env.config("[auto_disable]\nconsecutive_failures = 3");
    let telemetry = Telemetry::new(&[], 1);
    // The streak is counted through a Redis that will stop answering, on a
    // connection that waits for an answer as long as it takes.
    let proxy = FreezingProxy::start().await;
    let client = redis::Client::open(proxy.url()).unwrap();
    let conn = redis::aio::ConnectionManager::new_with_config(
        client.clone(),
        redis::aio::ConnectionManagerConfig::new().set_response_timeout(None),
    )
    .await
    .unwrap();
    let store = SubscriptionStore::over(&client, conn, &env.prefix);
    let hook = webhook("slow-streak", "http://127.0.0.1:9/", &["*"]);
    store.put(&hook).await.unwrap();
    let producer = SharedProducer::new(&config.kafka).unwrap();
    let lifecycle = Lifecycle {
        store,
        auto_disable: AutoDisable {
            after: Duration::ZERO,
            consecutive_failures: 3,
        },
        events: SystemEvents::start(producer.clone(), &config.system_events, None, telemetry.clone()),
        telemetry: telemetry.clone(),
    };
    let failures = Failures {
        sink: FailureSink::new(producer, &config.dead_letter, Topics::of(&config), telemetry.clone()),
        policy: Policy {
            schedule: Schedule::of(&config.retry),
            final_statuses: config.retry.final_statuses.clone(),
        },
        waits: config.retry.wait_topics(),
        lifecycle: Some(Arc::new(lifecycle)),
        journal: None,
        ordering: None,
        telemetry,
        abort: CancellationToken::new(),
    };
    let target = Arc::new(Target::compile(hook, &(&config.delivery).into(), None).unwrap());
    let record = SourceRecord {
        topic: env.topic().into(),
        partition: 0,
        offset: 7,
        timestamp_ms: None,
        key: None,
        value: EVENT.as_bytes().to_vec().into(),
        headers: Vec::new(),
    };
    let meta = Envelopes::new(&config.envelope)
        .unwrap()
        .for_topic(env.topic())
        .recognise(&record)
        .unwrap();
    let event = Event { record, meta };
    let failure = Failure::Status {
        status: 500,
        retry_after: None,
    };
    let attempt = Attempt {
        delivery_id: "slow-streak-1".into(),
        attempt: 1,
        started_at: time::OffsetDateTime::now_utc(),
        duration: Duration::from_millis(3),
        result: Err(failure.clone()),
        response_excerpt: None,
        signed: None,
        response_headers: Vec::new(),
        details_withheld: false,
    };
    let delivery = Delivery {
        event: &event,
        target,
        delivery_id: "slow-streak-1".into(),
        attempts: 0,
        first_attempt_at: None,
        history: None,
        tier: None,
        ordering: None,
    };

    proxy.freeze();
    // Each record is written and acknowledged while the streak's write waits.
    for _ in 0..3 {
        let went = tokio::time::timeout(
            Duration::from_secs(60),
            failures.after_failure(&delivery, &attempt, &failure),
        )
        .await
        .expect("the retry record is written without waiting for the streak in Redis")
        .unwrap();
        assert!(matches!(went, AfterFailure::Retry { tier: 0, .. }), "{went:?}");
    }
    let written = read_topic(&env.tiers[0].0, 3, Duration::from_secs(20)).await;
    assert_eq!(written.len(), 3);
    assert!(written.iter().all(|r| r.header(h::DELIVERY_ID) == "slow-streak-1"));
    assert!(written.iter().all(|r| r.header(h::REASON) == "delivery_failed"));

    // Redis answers again: the failures that came while it did not are
    // counted too, and the third ends the webhook's allowance.
    proxy.thaw();
    let disabled = eventually(Duration::from_secs(20), "the webhook to be auto-disabled", || async {
        let w = status_of(&env, "slow-streak").await;
        (w.status == herald::webhook::WebhookStatus::Disabled).then_some(w)
    })
    .await;
    assert_eq!(
        disabled.status_reason.as_deref(),
        Some("3 consecutive deliveries failed (last: endpoint answered HTTP 500)")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streak_counts_failures_written_together_but_not_those_before_the_last_success() {
    let env = TestEnv::new("streak-writes", &["events"], 1).await;
    let store = env.store().await;
    assert_eq!(store.record_failures("w", 1_000, 2).await.unwrap(), (2, 1_000));
    assert_eq!(store.record_failures("w", 2_000, 3).await.unwrap(), (5, 1_000));
    store.record_success("w", 3_000).await.unwrap();
    // Written after the success but counted before it: of the streak it ended.
    assert_eq!(store.record_failures("w", 2_500, 1).await.unwrap(), (0, 2_500));
    assert_eq!(store.record_failures("w", 4_000, 1).await.unwrap(), (1, 4_000));
    assert_eq!(store.record_failures("w", 5_000, 2).await.unwrap(), (3, 4_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_retry_goes_to_the_webhook_as_it_is_now() {
    let env = TestEnv::new("retry-moved", &["events"], 1)
        .await
        .with_tiers(&[Tier::after_ms(1500)])
        .await;
    let old = TestReceiver::start(Behaviour::Status(500)).await;
    let new = TestReceiver::ok().await;
    let store = env.store().await;
    let mut w = webhook("moving", &old.url("/old"), &["*"]);
    store.put(&w).await.unwrap();
    let app = env.spawn("").await;
    Publisher::new().json(env.topic(), EVENT).await;
    let first = old.wait_for(1, Duration::from_secs(20)).await;

    // Moved and re-keyed while the retry waits.
    w.url = new.url("/new");
    let rotated = herald::webhook::generate_secret();
    w.secrets = vec![rotated.clone()];
    store.put(&w).await.unwrap();
    let retried = new.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(retried[0].attempt(), 2);
    assert_eq!(retried[0].header("webhook-id"), first[0].header("webhook-id"));
    let expected = herald::delivery::signing::Signer::new(&[rotated]).unwrap().sign(
        retried[0].header("webhook-id"),
        retried[0].header("webhook-timestamp").parse().unwrap(),
        &retried[0].body,
    );
    assert_eq!(
        retried[0].header("webhook-signature"),
        expected,
        "signed with the current secret"
    );
    assert_eq!(old.count(), 1);
    app.stop().await;
}

fn producer(config: &herald::config::Config) -> rdkafka::producer::FutureProducer {
    herald::kafka::producer_config(&config.kafka).create().unwrap()
}

/// A delivery that found no request slot within `delivery.max_queue_wait`
/// was never sent: it waits in its tier and comes back with its attempt
/// count unchanged, as often as it must. Herald's own backlog never uses up
/// a receiver's retries, nor shows it a later attempt number than it saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_that_found_no_request_slot_keeps_its_retries_and_its_attempt_number() {
    const EVENTS: usize = 6;
    let env = TestEnv::new("retry-saturated", &["events"], 1)
        .await
        .with_tiers_of(&[Tier::after_ms(1000)], 1)
        .await;
    // One request at a time, each answered after 1.5 s; a delivery waits
    // 300 ms for the slot: most are deferred, several times each.
    let receiver = TestReceiver::start(Behaviour::Delay(Duration::from_millis(1500), 204)).await;
    let mut w = webhook("w", &receiver.url("/"), &["*"]);
    w.limits.max_in_flight = Some(1);
    env.store().await.put(&w).await.unwrap();
    let app = env.spawn("[delivery]\nmax_queue_wait = \"300ms\"").await;
    let publisher = Publisher::new();
    for n in 0..EVENTS {
        publisher
            .json(env.topic(), &format!(r#"{{"event":"invoice.paid","n":{n}}}"#))
            .await;
    }
    let got = receiver.wait_for(EVENTS, Duration::from_secs(120)).await;
    env.wait_finished().await;
    let deferred = app
        .metric(r#"herald_deliveries_total{class="saturated",outcome="failed"}"#)
        .await;
    assert!(deferred >= EVENTS as f64, "deliveries waited for the slot: {deferred}");
    assert_eq!(receiver.count(), EVENTS, "each event sent once");
    assert!(
        got.iter().all(|r| r.attempt() == 1),
        "the first request of each is attempt 1: {:?}",
        got.iter().map(Received::attempt).collect::<Vec<_>>()
    );
    assert_eq!(end_offsets(&env.dlq, 1).await, vec![0], "nothing dead-lettered");
    app.stop().await;
}

//! The failure path under interference: a webhook id re-used by another
//! tenant, a record too large for the retry topic, a document broken by
//! another writer, a crafted due time, connections refused or reset, and
//! statuses that are final.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use herald::retry::codec::headers as h;
use reqwest::Method;
use serde_json::json;
use sha2::Digest;

use crate::api::*;
use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_re_created_id_never_receives_the_old_webhooks_retries_or_dead_letters() {
    let mut env = TestEnv::new("recreated", &["events"], 1)
        .await
        .with_tiers(&[Tier::after_ms(3000)])
        .await;
    env.overlay = TENANT_HEADER_RULES.into();
    let acme_receiver = TestReceiver::start(Behaviour::Status(500)).await;
    let globex_receiver = TestReceiver::ok().await;
    let store = env.store().await;
    let mut acme = webhook("orders", &acme_receiver.url("/acme"), &["order.*"]);
    acme.tenant = Some("acme".into());
    store.put(&acme).await.unwrap();
    let app = env.spawn(&admin_overlay("24h")).await;
    let publisher = Publisher::new();
    publisher
        .tenant_event(env.topic(), "acme", br#"{"event":"order.paid","version":"0","time":1}"#)
        .await;
    acme_receiver.wait_for(1, Duration::from_secs(20)).await;
    eventually(Duration::from_secs(20), "acme's retry to wait in the tier", || async {
        (app.metric(r#"herald_retries_scheduled_total{tier="1"}"#).await == 1.0).then_some(())
    })
    .await;

    // acme deletes `orders`; globex creates its own `orders`, for everything.
    assert!(store.delete("orders").await.unwrap());
    let mut globex = webhook("orders", &globex_receiver.url("/globex"), &["*"]);
    globex.tenant = Some("globex".into());
    store.put(&globex).await.unwrap();

    let letters = read_topic(&env.dlq, 1, Duration::from_secs(20)).await;
    assert_eq!(letters[0].header(h::REASON), "webhook_deleted", "{:?}", letters[0]);
    assert_eq!(letters[0].header(h::WEBHOOK_TENANT), "acme");
    assert_eq!(letters[0].header(h::TENANT), "acme");
    env.wait_finished().await;
    assert_eq!(globex_receiver.count(), 0, "globex never gets acme's event");
    assert_eq!(acme_receiver.count(), 1);

    // Nor through a replay of what its id was dead-lettered with.
    let api = Api::new(&app);
    let job = api
        .ok(
            Method::POST,
            "/v1/webhooks/orders/replay",
            GLOBEX,
            Some(json!({"reasons": ["webhook_deleted"]})),
        )
        .await;
    let job = job["id"].as_str().unwrap().to_owned();
    let done = eventually(Duration::from_secs(30), "the replay to finish", || async {
        let job = api.ok(Method::GET, &format!("/v1/replays/{job}"), GLOBEX, None).await;
        (job["state"] != "running").then_some(job)
    })
    .await;
    assert_eq!(
        (done["matched"].as_u64(), done["replayed"].as_u64()),
        (Some(0), Some(0)),
        "{done}"
    );
    env.wait_finished().await;
    assert_eq!(globex_receiver.count(), 0);

    // globex's own events still reach it.
    publisher
        .tenant_event(
            env.topic(),
            "globex",
            br#"{"event":"order.paid","version":"0","time":2}"#,
        )
        .await;
    globex_receiver.wait_for(1, Duration::from_secs(20)).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_too_large_for_the_retry_topic_is_dead_lettered_as_a_stub_and_the_partition_moves_on() {
    let env = TestEnv::new("too-large", &["events"], 1)
        .await
        .with_tiers(&[Tier::after_ms(1000)])
        .await;
    let big = TestReceiver::start(Behaviour::Status(500)).await;
    let small = TestReceiver::ok().await;
    let store = env.store().await;
    store.put(&webhook("big", &big.url("/"), &["big.*"])).await.unwrap();
    store
        .put(&webhook("small", &small.url("/"), &["small.*"]))
        .await
        .unwrap();
    // Herald's producer takes records up to 100,000 bytes; the event itself
    // is just under it, so with Herald's headers it is not.
    let app = env
        .spawn("[kafka.producer_properties]\n\"message.max.bytes\" = \"100000\"\n")
        .await;
    let pad = "x".repeat(99_800);
    let publisher = Publisher::new();
    publisher
        .json(
            env.topic(),
            &format!(r#"{{"event":"big.thing","version":"0","pad":"{pad}"}}"#),
        )
        .await;
    publisher
        .json(env.topic(), r#"{"event":"small.thing","version":"0"}"#)
        .await;

    small.wait_for(1, Duration::from_secs(20)).await;
    let letters = read_topic(&env.dlq, 1, Duration::from_secs(20)).await;
    let stub = &letters[0];
    assert_eq!(stub.header(h::REASON), "record_too_large");
    assert_eq!(stub.header(h::SOURCE_TOPIC), env.topic());
    assert_eq!(stub.header(h::SOURCE_OFFSET), "0");
    assert_eq!(stub.header(h::WEBHOOK_ID), "big");
    assert!(stub.header(h::STUB).contains("dropped"), "{stub:?}");
    assert!(
        stub.value.is_empty(),
        "the stub points at the event instead of carrying it"
    );
    assert!(stub.header(h::DETAIL).contains(&format!("{}/0/0", env.topic())));
    // The source partition moved past both records.
    eventually(Duration::from_secs(20), "the source offset to be committed", || async {
        (committed(&env.group, env.topic(), 1).await == [2]).then_some(())
    })
    .await;
    // Lean in the tier, whole then lean in the dead-letter topic (the
    // producer's limit is everyone's), then the stub.
    let downgrades = |to: &str| format!(r#"herald_failure_record_downgrades_total{{to="{to}"}}"#);
    assert_eq!(app.metric(&downgrades("lean")).await, 2.0);
    assert_eq!(app.metric(&downgrades("dead_letter")).await, 1.0);
    assert_eq!(app.metric(&downgrades("stub")).await, 1.0);
    assert_eq!(big.count(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_broken_by_another_writer_keeps_delivering_from_its_last_good_version() {
    let env = TestEnv::new("broken-doc", &["events"], 1).await;
    let receiver = TestReceiver::ok().await;
    let store = env.store().await;
    store.put(&webhook("w", &receiver.url("/"), &["*"])).await.unwrap();
    let app = env.spawn("[subscriptions]\naudit_interval = \"1s\"").await;
    let publisher = Publisher::new();
    let event = r#"{"event":"tour.completed","version":"0"}"#;
    publisher.json(env.topic(), event).await;
    receiver.wait_for(1, Duration::from_secs(20)).await;

    // Another service writes something that is not a webhook, and says so.
    let mut conn = env.redis().await;
    let () = redis::pipe()
        .set(format!("{}webhook:w", env.prefix), r#"{"id":"w","url":42}"#)
        .publish(format!("{}webhooks:changed", env.prefix), "w")
        .query_async(&mut conn)
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the broken document to be seen", || async {
        (app.metric("herald_subscription_records_invalid_total").await >= 1.0).then_some(())
    })
    .await;
    publisher.json(env.topic(), event).await;
    receiver.wait_for(2, Duration::from_secs(20)).await;
    // Still after audits re-read every document (every second here): two
    // finish, so one has read it from the start.
    let audits = r#"herald_subscription_syncs_total{kind="full"}"#;
    let before = app.metric(audits).await;
    eventually(Duration::from_secs(20), "two audits to finish", || async {
        (app.metric(audits).await >= before + 2.0).then_some(())
    })
    .await;
    publisher.json(env.topic(), event).await;
    receiver.wait_for(3, Duration::from_secs(20)).await;
    assert!(app.metric("herald_subscription_records_invalid_total").await >= 2.0);
    assert_eq!(app.metric(r#"herald_webhooks{status="active"}"#).await, 1.0);
    let unmatched = format!(r#"herald_events_unmatched_total{{topic="{}"}}"#, env.topic());
    assert_eq!(
        app.metric(&unmatched).await,
        0.0,
        "never committed as having no subscriber"
    );

    // Deleted for real: the last good version goes too.
    assert!(store.delete("w").await.unwrap());
    eventually(Duration::from_secs(10), "the webhook to leave the index", || async {
        (app.metric(r#"herald_webhooks{status="active"}"#).await == 0.0).then_some(())
    })
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_due_years_ahead_is_dead_lettered_not_held() {
    let env = TestEnv::new("far-future", &["events"], 1)
        .await
        .with_tiers(&[Tier::after_ms(1000)])
        .await;
    let receiver = TestReceiver::start(failing(1, 500, None)).await;
    let w = webhook("w", &receiver.url("/"), &["*"]);
    env.store().await.put(&w).await.unwrap();
    let created = w
        .created_at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let app = env.spawn("").await;
    let ms = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_millis().to_string();
    let now = SystemTime::now();
    let years = now + Duration::from_secs(5 * 365 * 86_400);
    let event = r#"{"event":"tour.completed","version":"0"}"#;
    // Crafted (or written by a replica whose clock is years ahead).
    Publisher::new()
        .send(
            &env.tiers[0].0,
            None,
            event.as_bytes(),
            &[
                (h::SOURCE_TOPIC, env.topic()),
                (h::SOURCE_PARTITION, "0"),
                (h::SOURCE_OFFSET, "0"),
                (h::WEBHOOK_ID, "w"),
                (h::WEBHOOK_CREATED_AT, &created),
                (h::DELIVERY_ID, "msg_crafted"),
                (h::ATTEMPT, "1"),
                (h::RETRY_TIER, "0"),
                (h::RETRY_DUE_AT, &ms(years)),
                (h::RETRY_SCHEDULED_AT, &ms(now)),
            ],
        )
        .await;
    let letters = read_topic(&env.dlq, 1, Duration::from_secs(20)).await;
    assert_eq!(letters[0].header(h::REASON), "invalid_retry_record");
    assert!(
        letters[0].header(h::DETAIL).contains("beyond the longest wait"),
        "{}",
        letters[0].header(h::DETAIL)
    );
    assert_eq!(
        letters[0].header(h::DELIVERY_ID),
        "msg_crafted",
        "kept with its delivery"
    );
    // The service goes on: a normal retry still works.
    Publisher::new().json(env.topic(), event).await;
    let got = receiver.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(got[1].attempt(), 2);
    app.stop().await;
}

/// A port where nothing listens: connecting is refused.
fn refusing_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/")
}

/// A server that accepts connections and resets them at once.
async fn resetting_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            // Linger 0: closing sends RST instead of FIN (and never blocks,
            // which is what the deprecation warns of for other values).
            #[allow(deprecated)]
            let _ = stream.set_linger(Some(Duration::ZERO));
            drop(stream);
        }
    });
    format!("http://{addr}/")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_reset_connections_are_network_failures_and_are_retried() {
    let env = TestEnv::new("network", &["events"], 1)
        .await
        .with_tiers(&[Tier::after_ms(500)])
        .await;
    let store = env.store().await;
    store.put(&webhook("refused", &refusing_url(), &["*"])).await.unwrap();
    store
        .put(&webhook("reset", &resetting_url().await, &["*"]))
        .await
        .unwrap();
    let app = env.spawn("").await;
    Publisher::new()
        .json(env.topic(), r#"{"event":"tour.completed","version":"0"}"#)
        .await;
    let letters = read_topic(&env.dlq, 2, Duration::from_secs(30)).await;
    for id in ["refused", "reset"] {
        let letter = letters
            .iter()
            .find(|l| l.header(h::WEBHOOK_ID) == id)
            .unwrap_or_else(|| panic!("no dead letter for {id}: {letters:?}"));
        assert_eq!(letter.header(h::REASON), "retries_exhausted", "{id}");
        assert_eq!(letter.header(h::ATTEMPT), "2", "{id}: retried once through the tier");
        assert_eq!(letter.header(h::LAST_CLASS), "network", "{id}");
        let history: Vec<serde_json::Value> = serde_json::from_str(letter.header(h::HISTORY)).unwrap();
        assert!(history.iter().all(|a| a["class"] == "network"), "{id}: {history:?}");
    }
    assert_eq!(
        app.metric(r#"herald_deliveries_total{class="network",outcome="failed"}"#)
            .await,
        4.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_statuses_end_a_delivery_at_once_globally_and_per_webhook() {
    let env = TestEnv::new("final", &["events"], 1)
        .await
        .with_tiers(&[Tier::after_ms(500)])
        .await;
    let unprocessable = TestReceiver::start(Behaviour::Status(422)).await;
    let bad = TestReceiver::start(Behaviour::Status(400)).await;
    let retried = TestReceiver::start(failing(1, 422, None)).await;
    let store = env.store().await;
    store
        .put(&webhook("unprocessable", &unprocessable.url("/"), &["*"]))
        .await
        .unwrap();
    let mut own = webhook("bad", &bad.url("/"), &["*"]);
    own.limits.final_statuses = Some(vec![400]);
    store.put(&own).await.unwrap();
    let mut none = webhook("retried", &retried.url("/"), &["*"]);
    none.limits.final_statuses = Some(vec![]);
    store.put(&none).await.unwrap();
    let app = env.spawn("[retry]\nfinal_statuses = [422]").await;
    Publisher::new()
        .json(env.topic(), r#"{"event":"tour.completed","version":"0"}"#)
        .await;
    let letters = read_topic(&env.dlq, 2, Duration::from_secs(20)).await;
    for id in ["unprocessable", "bad"] {
        let letter = letters.iter().find(|l| l.header(h::WEBHOOK_ID) == id).unwrap();
        assert_eq!(letter.header(h::REASON), "final_status", "{id}");
        assert_eq!(letter.header(h::ATTEMPT), "1", "{id}: not retried");
    }
    // The webhook's own empty list replaces the global one: 422 is retried.
    let got = retried.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(got[1].attempt(), 2);
    env.wait_finished().await;
    assert_eq!((unprocessable.count(), bad.count()), (1, 1));
    assert_eq!(
        app.metric(r#"herald_dead_letters_total{reason="final_status"}"#).await,
        2.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_statuses_are_set_through_the_command_line_without_losing_other_limits() {
    let env = TestEnv::new("final-cli", &["events"], 1).await;
    let app = env.spawn(&admin_overlay("24h")).await;
    let api = Api::new(&app);
    let cli = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(args)
            .env("HERALD_API_URL", &api.base)
            .env("HERALD_API_TOKEN", OPS)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    };
    cli(&[
        "webhooks",
        "create",
        "--id",
        "cli",
        "--name",
        "cli",
        "--url",
        "https://example.com/hook",
        "--event",
        "*",
        "--max-in-flight",
        "3",
        "--final-statuses",
        "400,422",
    ]);
    let limits = |w: serde_json::Value| w["limits"].clone();
    let w = api.ok(Method::GET, "/v1/webhooks/cli", OPS, None).await;
    assert_eq!(limits(w), json!({"max_in_flight": 3, "final_statuses": [400, 422]}));
    cli(&["webhooks", "update", "cli", "--final-statuses", "none"]);
    let w = api.ok(Method::GET, "/v1/webhooks/cli", OPS, None).await;
    assert_eq!(
        limits(w),
        json!({"max_in_flight": 3, "final_statuses": []}),
        "only what was asked changes"
    );
    cli(&["webhooks", "update", "cli", "--final-statuses", "default"]);
    let w = api.ok(Method::GET, "/v1/webhooks/cli", OPS, None).await;
    assert_eq!(limits(w), json!({"max_in_flight": 3}));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_whose_key_fills_the_limit_is_dead_lettered_as_a_stub_without_its_key_and_the_partition_moves_on() {
    let env = TestEnv::new("big-key", &["events"], 1).await;
    let receiver = receiving_all(&env, "all").await;
    let app = env
        .spawn("[kafka.producer_properties]\n\"message.max.bytes\" = \"100000\"\n")
        .await;
    // Any publisher can write this: a key just under the producer's limit,
    // and a value that is no event (so it is dead-lettered with its key).
    let key = "k".repeat(99_800);
    let publisher = Publisher::new();
    publisher.send(env.topic(), Some(&key), br#"{"no":"type"}"#, &[]).await;
    publisher
        .json(env.topic(), r#"{"event":"good.thing","version":"0"}"#)
        .await;

    receiver.wait_for(1, Duration::from_secs(30)).await;
    let letters = read_topic(&env.dlq, 1, Duration::from_secs(20)).await;
    let stub = &letters[0];
    assert_eq!(stub.header(h::REASON), "record_too_large");
    assert_eq!(stub.key, None, "a stub never carries the key");
    assert_eq!(stub.header(h::SOURCE_KEY_BYTES), "99800");
    let digest = sha2::Sha256::digest(key.as_bytes());
    assert_eq!(stub.header(h::SOURCE_KEY_SHA256), hex::encode(digest));
    assert_eq!(stub.header(h::SOURCE_OFFSET), "0");
    eventually(
        Duration::from_secs(20),
        "the source offset to move past both",
        || async { (committed(&env.group, env.topic(), 1).await == [2]).then_some(()) },
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stub_the_broker_still_refuses_is_final_counted_and_committed_past() {
    use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
    let env = TestEnv::new("stub-refused", &["events"], 1).await;
    let receiver = receiving_all(&env, "all").await;
    // The dead-letter topic takes no record of more than 100 bytes: not
    // even a stub fits.
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let retention = (30 * 86_400_000u64).to_string();
    let alter = AlterConfig::new(ResourceSpecifier::Topic(&env.dlq))
        .set("max.message.bytes", "100")
        .set("retention.ms", &retention);
    for result in admin.alter_configs(&[alter], &AdminOptions::new()).await.unwrap() {
        result.unwrap();
    }
    let app = env.spawn("").await;
    let publisher = Publisher::new();
    publisher.json(env.topic(), r#"{"no":"type"}"#).await;
    publisher
        .json(env.topic(), r#"{"event":"good.thing","version":"0"}"#)
        .await;

    receiver.wait_for(1, Duration::from_secs(30)).await;
    eventually(
        Duration::from_secs(30),
        "the source offset to move past both",
        || async { (committed(&env.group, env.topic(), 1).await == [2]).then_some(()) },
    )
    .await;
    assert_eq!(app.metric("herald_failure_records_unwritable_total").await, 1.0);
    assert!(read_topic(&env.dlq, 1, Duration::from_secs(2)).await.is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_too_large_for_its_tier_topic_alone_is_dead_lettered_whole() {
    use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
    let (env, receiver) = failing_once("tier-limit", 500).await;
    let tier = env.tiers[0].0.clone();
    // The broker takes records of up to 4,000 bytes in the tier topic only.
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let alter = AlterConfig::new(ResourceSpecifier::Topic(&tier))
        .set("max.message.bytes", "4000")
        .set("retention.ms", "86400000");
    for result in admin.alter_configs(&[alter], &AdminOptions::new()).await.unwrap() {
        result.unwrap();
    }
    let app = env.spawn("").await;
    // Random hex: about 8,000 bytes however the producer compresses it.
    let pad: String = (0..8000).map(|_| format!("{:02x}", rand::random::<u8>())).collect();
    let event = format!(r#"{{"event":"big.thing","version":"0","pad":"{pad}"}}"#);
    Publisher::new().json(env.topic(), &event).await;
    receiver.wait_for(1, Duration::from_secs(30)).await;

    let letters = read_topic(&env.dlq, 1, Duration::from_secs(30)).await;
    let letter = &letters[0];
    assert_eq!(letter.value, event.as_bytes(), "the event, whole");
    assert_eq!(letter.header(h::WEBHOOK_ID), "flaky");
    assert!(letter.header(h::STUB).is_empty(), "not a stub: {letter:?}");
    assert!(
        letter
            .header(h::DETAIL)
            .contains(&format!("`{tier}` refused the record")),
        "{}",
        letter.header(h::DETAIL)
    );
    app.wait_metric(r#"herald_failure_record_downgrades_total{to="dead_letter"}"#, 1.0)
        .await;
    assert_eq!(
        app.metric(r#"herald_failure_record_downgrades_total{to="stub"}"#).await,
        0.0
    );
    eventually(Duration::from_secs(20), "the source offset to be committed", || async {
        (committed(&env.group, env.topic(), 1).await == [1]).then_some(())
    })
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_record_naming_no_incarnation_reaches_no_webhook() {
    let (env, receiver) = failing_once("forged-retry", 500).await;
    let app = env.spawn("").await;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    // Written by someone other than Herald: it names the webhook, not which
    // incarnation of it.
    Publisher::new()
        .send(
            &env.tiers[0].0,
            None,
            br#"{"event":"tour.completed","version":"0"}"#,
            &[
                (h::SOURCE_TOPIC, env.topic()),
                (h::SOURCE_PARTITION, "0"),
                (h::SOURCE_OFFSET, "0"),
                (h::WEBHOOK_ID, "flaky"),
                (h::DELIVERY_ID, "msg_forged"),
                (h::ATTEMPT, "1"),
                (h::RETRY_TIER, "0"),
                (h::RETRY_DUE_AT, &now),
                (h::RETRY_SCHEDULED_AT, &now),
            ],
        )
        .await;
    let letters = read_topic(&env.dlq, 1, Duration::from_secs(30)).await;
    assert_eq!(letters[0].header(h::REASON), "invalid_retry_record");
    assert!(
        letters[0].header(h::DETAIL).contains(h::WEBHOOK_CREATED_AT),
        "{:?}",
        letters[0]
    );
    assert_eq!(receiver.count(), 0, "nothing was sent to the webhook");
    app.stop().await;
}

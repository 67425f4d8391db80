//! Delivery history by event: one record per event and webhook, where it
//! stands (delivered, pending retry, dead-lettered, kept while paused), its
//! attempts beneath, filtered and paged through the management API.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::api::*;
use crate::helpers::*;

const ENVELOPE: &str = "\n[envelope.default]\npreset = \"jimo\"\ntenant = \"/tenant\"\nevent_id = \"/id\"\n";

const PORTAL: &str = "[portal]\nsigning_key = \"history-portal-key-3b8e1f6a0c9d7254e1b6\"\n";

fn event(kind: &str, id: &str) -> String {
    format!(r#"{{"event":"{kind}","version":"0","time":1,"id":"{id}","tenant":"acme"}}"#)
}

async fn create(api: &Api, name: &str, url: &str, events: &[&str], limits: Value) -> String {
    let body = json!({"name": name, "tenant": "acme", "url": url, "events": events, "limits": limits});
    let created = api.ok(Method::POST, "/v1/webhooks", OPS, Some(body)).await;
    format!("/v1/webhooks/{}", created["id"].as_str().unwrap())
}

/// The webhook's deliveries as the API lists them with `query`.
async fn deliveries(api: &Api, path: &str, query: &str) -> Vec<Value> {
    let page = api.ok(Method::GET, &format!("{path}/events{query}"), ACME, None).await;
    page["data"].as_array().unwrap().clone()
}

/// Waits until the webhook's only delivery stands as `status`.
async fn standing(api: &Api, path: &str, status: &str) -> Value {
    eventually(Duration::from_secs(30), &format!("a delivery {status}"), || async {
        let list = deliveries(api, path, "").await;
        (list.len() == 1 && list[0]["status"] == status).then(|| list[0].clone())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_event_has_one_delivery_record_with_its_status_and_attempts_beneath() {
    let env = TestEnv::new("history-events", &["events"], 1)
        .await
        .with_tiers(&[Tier::after_ms(4000)])
        .await;
    let app = env.spawn(&(admin_overlay("24h") + ENVELOPE + PORTAL)).await;
    let api = Api::new(&app);
    // Fails each delivery's first attempt, accepts the second.
    let flaky = TestReceiver::start(Behaviour::FailAttempts {
        attempts: 1,
        status: 500,
        retry_after: None,
    })
    .await;
    let refusing = TestReceiver::start(Behaviour::Status(400)).await;
    let ok = TestReceiver::ok().await;
    let retried = create(&api, "retried", &flaky.url("/r"), &["tour.*"], json!({})).await;
    let refused = create(
        &api,
        "refused",
        &refusing.url("/f"),
        &["checklist.*"],
        json!({"final_statuses": [400]}),
    )
    .await;
    let paused = create(&api, "paused", &ok.url("/p"), &["survey.*"], json!({})).await;
    api.ok(Method::POST, &format!("{paused}/pause"), ACME, None).await;
    app.wait_webhooks(3).await;
    let publisher = Publisher::new();
    for (kind, id) in [
        ("tour.completed", "evt_1"),
        ("checklist.completed", "evt_2"),
        ("survey.completed", "evt_3"),
    ] {
        publisher.json(env.topic(), &event(kind, id)).await;
    }

    // The first attempt failed: the delivery waits in the first tier.
    let pending = standing(&api, &retried, "pending_retry").await;
    assert_eq!(pending["tier"], 1, "{pending}");
    assert!(pending["next_attempt_at"].is_string(), "{pending}");
    assert_eq!(pending["event_type"], "tour.completed");
    assert_eq!(pending["event_id"], "evt_1");
    assert_eq!(pending["attempts"].as_array().unwrap().len(), 1, "{pending}");
    assert_eq!(pending["attempts"][0]["status"], 500);
    // Then it is delivered: one record, both attempts beneath, oldest first.
    let delivered = standing(&api, &retried, "delivered").await;
    assert_eq!(delivered["delivery_id"], pending["delivery_id"]);
    let attempts = delivered["attempts"].as_array().unwrap();
    let seen: Vec<(u64, &str, u64)> = attempts
        .iter()
        .map(|a| {
            (
                a["attempt"].as_u64().unwrap(),
                a["outcome"].as_str().unwrap(),
                a["status"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(seen, [(1, "failed", 500), (2, "succeeded", 204)]);
    assert!(delivered.get("next_attempt_at").is_none(), "{delivered}");
    assert_eq!(
        flaky.received()[0].headers["webhook-id"],
        delivered["delivery_id"].as_str().unwrap(),
        "the record is named by the webhook-id the receiver saw"
    );
    // Its whole attempts are a request away.
    let whole = api
        .ok(
            Method::GET,
            &format!("{retried}/deliveries/{}", attempts[1]["id"].as_str().unwrap()),
            ACME,
            None,
        )
        .await;
    assert_eq!(whole["response"]["status"], 204);

    // A final status: dead-lettered at once, with its reason.
    let dead = standing(&api, &refused, "dead_lettered").await;
    assert_eq!(dead["reason"], "final_status");
    assert_eq!(dead["attempts"][0]["class"], "4xx");
    // Paused: kept, not attempted.
    let kept = standing(&api, &paused, "kept").await;
    assert_eq!(kept["reason"], "webhook_paused");
    assert_eq!(kept["attempts"], json!([]));
    assert_eq!(ok.count(), 0);

    // Filters, one delivery by its id, and tenants.
    assert_eq!(deliveries(&api, &retried, "?status=delivered").await.len(), 1);
    assert!(deliveries(&api, &retried, "?status=pending_retry").await.is_empty());
    assert!(deliveries(&api, &retried, "?event_type=checklist.*").await.is_empty());
    assert_eq!(deliveries(&api, &retried, "?event_type=tour.*").await.len(), 1);
    assert!(deliveries(&api, &retried, "?since=2999-01-01T00:00:00Z")
        .await
        .is_empty());
    let one = api
        .ok(
            Method::GET,
            &format!("{retried}/events/{}", delivered["delivery_id"].as_str().unwrap()),
            ACME,
            None,
        )
        .await;
    assert_eq!(one["status"], "delivered");
    assert_problem(
        &api.call(Method::GET, &format!("{retried}/events"), GLOBEX, None).await,
        404,
        None,
    );

    // The tenant's portal shows the same, one line per event.
    let session = api
        .ok(
            Method::POST,
            "/v1/tenants/acme/portal-sessions",
            ACME,
            Some(json!({"capability": "read_only"})),
        )
        .await;
    let link = format!("{}{}", api.base, session["url"].as_str().unwrap());
    let page = |path: &str, query: &str| {
        let url = format!(
            "{link}webhooks/{}/events{query}",
            path.trim_start_matches("/v1/webhooks/")
        );
        async move { reqwest::get(url).await.unwrap().text().await.unwrap() }
    };
    let shown = page(&retried, "").await;
    assert!(
        shown.contains("Delivered") && shown.contains("#1 failed (500)") && shown.contains("#2 succeeded (204)"),
        "{shown}"
    );
    assert!(page(&refused, "").await.contains("Failed (final_status)"));
    assert!(page(&paused, "?status=kept").await.contains("Kept while not active"));
    assert!(page(&paused, "?status=delivered").await.contains("No events here"));
    app.stop().await;
}

/// What a webhook's deliveries cost in Redis, and that they stay within
/// `history.max_deliveries_per_webhook` however many there are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhooks_delivery_records_are_bounded_and_their_memory_is_measured() {
    const EVENTS: usize = 1000;
    let env = TestEnv::new("history-bounded", &["events"], 1).await;
    let keep = 600;
    let app = env
        .spawn(&(admin_overlay("24h") + ENVELOPE + &format!("[history]\nmax_deliveries_per_webhook = {keep}\n")))
        .await;
    let api = Api::new(&app);
    let ok = TestReceiver::ok().await;
    let path = create(&api, "busy", &ok.url("/b"), &["tour.*"], json!({})).await;
    app.wait_webhooks(1).await;
    let publisher = Publisher::new();
    for i in 0..EVENTS {
        publisher
            .json(env.topic(), &event("tour.completed", &format!("evt_{i}")))
            .await;
    }
    ok.wait_for(EVENTS, Duration::from_secs(60)).await;
    let id = path.trim_start_matches("/v1/webhooks/");
    let client = redis::Client::open(env.redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let (zset, hash) = (
        format!("{}deliveries:{id}", env.prefix),
        format!("{}delivery:{id}", env.prefix),
    );
    let kept: usize = eventually(Duration::from_secs(20), "the records written and trimmed", || {
        let (mut conn, hash) = (conn.clone(), hash.clone());
        async move {
            let n: usize = redis::cmd("HLEN").arg(&hash).query_async(&mut conn).await.unwrap();
            (n == keep).then_some(n)
        }
    })
    .await;
    let card: usize = redis::cmd("ZCARD").arg(&zset).query_async(&mut conn).await.unwrap();
    assert_eq!((kept, card), (keep, keep), "the newest {keep} of {EVENTS} are kept");
    let mut bytes = 0u64;
    for key in [&zset, &hash] {
        let used: u64 = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg(key)
            .arg("SAMPLES")
            .arg(0)
            .query_async(&mut conn)
            .await
            .unwrap();
        bytes += used;
    }
    let per_thousand = bytes as f64 * 1000.0 / keep as f64;
    println!("history: {keep} delivered deliveries (one attempt each) take {bytes} bytes in Redis, {per_thousand:.0} bytes per 1,000");
    assert!(
        per_thousand < 2_000_000.0,
        "a delivered delivery's record is small: {per_thousand:.0} bytes per 1,000"
    );
    // The list reads the newest (the last events published) first.
    let first = deliveries(&api, &path, "?limit=1").await;
    let n: usize = first[0]["event_id"].as_str().unwrap()["evt_".len()..].parse().unwrap();
    assert!(n >= EVENTS - keep, "{first:?}");
    app.stop().await;
}

//! Retry pending: a webhook's failures waiting in the tiers are delivered
//! now, once each, and their waiting copies are finished when they come due,
//! across a restart; another webhook's retries keep their schedule.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::api::*;
use crate::helpers::*;

/// Short enough for a test, long enough for the run to cut before it.
const TIER_MS: u64 = 45_000;

/// What delays a run: the cut is a few seconds ahead, and the topics are
/// read once attempts begun before it have ended.
pub const FAST: &str = r#"
[delivery]
max_queue_wait = "1s"
request_timeout = "2s"
"#;

fn event(kind: &str, n: usize) -> String {
    format!(r#"{{"event":"{kind}","version":"0","time":1,"id":"evt_{n}"}}"#)
}

fn ids(requests: &[Received]) -> BTreeSet<String> {
    requests.iter().map(|r| r.header("webhook-id").to_owned()).collect()
}

/// Starts a retry pending of `w` (a dry run or not) and waits until it ends.
async fn retry_pending(api: &Api, dry_run: bool) -> Value {
    let job = api
        .ok(
            Method::POST,
            "/v1/webhooks/w/retry-pending",
            OPS,
            Some(json!({ "dry_run": dry_run })),
        )
        .await;
    finished(api, &job).await
}

async fn finished(api: &Api, job: &Value) -> Value {
    let path = format!("/v1/replays/{}", job["id"].as_str().unwrap());
    eventually(Duration::from_secs(120), "the job to finish", || async {
        let job = api.ok(Method::GET, &path, OPS, None).await;
        (job["state"] != "running").then_some(job)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_pending_delivers_waiting_failures_now_once_even_across_a_restart() {
    let env = TestEnv::new("retry-pending", &["events"], 1)
        .await
        .with_tiers(&[Tier::after_ms(TIER_MS)])
        .await;
    let fixed = TestReceiver::start(Behaviour::Status(500)).await;
    let other = TestReceiver::start(Behaviour::Status(500)).await;
    let store = env.store().await;
    store.put(&webhook("w", &fixed.url("/"), &["tour.*"])).await.unwrap();
    store.put(&webhook("o", &other.url("/"), &["survey.*"])).await.unwrap();
    let overlay = admin_overlay("24h") + FAST;
    let app = env.spawn(&overlay).await;
    let api = Api::new(&app);
    let publisher = Publisher::new();
    for n in 0..3 {
        publisher.json(env.topic(), &event("tour.completed", n)).await;
    }
    for n in 3..5 {
        publisher.json(env.topic(), &event("survey.completed", n)).await;
    }
    let first = fixed.wait_for(3, Duration::from_secs(20)).await;
    other.wait_for(2, Duration::from_secs(20)).await;
    let tier = env.tiers[0].0.clone();
    eventually(
        Duration::from_secs(20),
        "the five failures to wait in the tier",
        || async { (end_offsets(&tier, 1).await[0] == 5).then_some(()) },
    )
    .await;
    fixed.set_behaviour(Behaviour::Status(204));
    other.set_behaviour(Behaviour::Status(204));

    // Another tenant's token does not see the webhook.
    let refused = api
        .call(Method::POST, "/v1/webhooks/w/retry-pending", GLOBEX, Some(json!({})))
        .await;
    assert_eq!(refused.status.as_u16(), 404, "{}", refused.body);

    // Only an active webhook's: a paused one's would be kept, not delivered.
    let mut paused = webhook("p", &other.url("/"), &["none"]);
    paused.status = herald::webhook::WebhookStatus::Paused;
    store.put(&paused).await.unwrap();
    let refused = api.call(Method::POST, "/v1/webhooks/p/retry-pending", OPS, None).await;
    assert_problem(&refused, 409, None);

    // The command line counts them.
    let cli = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["deliveries", "retry-pending", "w", "--dry-run"])
        .env("HERALD_API_URL", &api.base)
        .env("HERALD_API_TOKEN", OPS)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&cli.stderr);
    assert!(cli.status.success(), "{stderr}");
    assert!(stderr.contains("retry pending rpl_"), "{stderr}");
    assert!(stderr.contains("would re-drive 3)"), "{stderr}");

    // A dry run counts the three and changes nothing.
    let dry = retry_pending(&api, true).await;
    assert_eq!(
        (
            dry["state"].as_str(),
            dry["kind"].as_str(),
            dry["would_replay"].as_u64()
        ),
        (Some("done"), Some("retry_pending"), Some(3)),
        "{dry}"
    );
    assert_eq!(dry["replayed"], 0, "{dry}");
    assert!(store.get("w").await.unwrap().unwrap().retried_pending.is_empty());
    assert_eq!(fixed.count(), 3, "a dry run delivers nothing");

    // The run delivers each now, with its webhook-id.
    // (With no body: not a dry run.)
    let job = api.ok(Method::POST, "/v1/webhooks/w/retry-pending", OPS, None).await;
    // One job of a webhook at a time, a replay or a retry pending.
    let busy = api
        .call(Method::POST, "/v1/webhooks/w/replay", OPS, Some(json!({})))
        .await;
    assert_problem(&busy, 429, None);
    assert!(
        busy.body["detail"]
            .as_str()
            .unwrap()
            .contains(job["id"].as_str().unwrap()),
        "{}",
        busy.body
    );
    let job = finished(&api, &job).await;
    assert_eq!(job["state"], "done", "{job}");
    assert_eq!(job["replayed"], 3, "{job}");
    let all = fixed.wait_for(6, Duration::from_secs(20)).await;
    assert_eq!(ids(&all[3..]), ids(&first), "the same webhook-ids");
    assert_eq!(other.count(), 2, "the other webhook's retries wait for their time");
    assert_eq!(store.get("w").await.unwrap().unwrap().retried_pending.len(), 1);
    assert_eq!(
        app.metric(r#"herald_admin_changes_total{action="retried_pending"}"#)
            .await,
        1.0,
        "the run, not the dry runs"
    );

    // Restarted before the waiting copies come due: they are finished, not
    // delivered again, while the other webhook's are delivered on schedule.
    app.stop().await;
    let app = env.spawn(&overlay).await;
    other.wait_for(4, Duration::from_secs(TIER_MS / 1000 + 30)).await;
    env.wait_finished().await;
    assert_eq!(
        fixed.count(),
        6,
        "nothing delivered twice: {:?}",
        ids(&fixed.received())
    );
    assert_eq!(app.metric("herald_retries_finished_total").await, 3.0);

    // A second run finds nothing left: what the first re-drove is not re-driven again.
    let api = Api::new(&app);
    let again = retry_pending(&api, true).await;
    assert_eq!(again["would_replay"], 0, "{again}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_pending_of_an_ordered_webhook_delivers_the_head_now_and_the_key_then_in_order() {
    let env = TestEnv::new("retry-pending-ordered", &["events"], 1)
        .await
        .with_tiers(&[Tier::after_ms(TIER_MS)])
        .await;
    let receiver = TestReceiver::start(Behaviour::Status(500)).await;
    let store = env.store().await;
    let mut w = webhook("w", &receiver.url("/"), &["tour.*"]);
    w.ordering = Some(herald::routing::ordering::Ordering::RecordKey);
    store.put(&w).await.unwrap();
    let app = env.spawn(&(admin_overlay("24h") + FAST)).await;
    let api = Api::new(&app);
    let publisher = Publisher::new();
    // The first fails and waits in the tier; the second is parked behind it.
    for n in 0..2 {
        publisher
            .send(env.topic(), Some("k"), event("tour.completed", n).as_bytes(), &[])
            .await;
    }
    receiver.wait_for(1, Duration::from_secs(20)).await;
    app.wait_metric(r#"herald_ordering_steps_total{step="parked"}"#, 1.0)
        .await;
    assert_eq!(receiver.count(), 1, "the second waits behind the first");
    receiver.set_behaviour(Behaviour::Status(204));

    // The run re-drives the failed head now; the parked one is not a
    // failure, and follows it.
    let run = retry_pending(&api, false).await;
    assert_eq!(run["replayed"], 1, "{run}");
    let got = receiver.wait_for(3, Duration::from_secs(120)).await;
    // The head's copy in the tier, when it comes due, is finished, not
    // delivered again, and does not let the key go a second time.
    tokio::time::sleep(Duration::from_millis(TIER_MS + 10_000)).await;
    let got_after = receiver.received();
    let order: Vec<String> = got_after
        .iter()
        .map(|r| {
            let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            body["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(order, ["evt_0", "evt_0", "evt_1"], "{order:?}");
    assert_eq!(got.len(), 3);
    app.stop().await;
}

//! Replays that do what they say: a resume replays only its own pause, a
//! dead letter is re-driven once unless forced, and a replay is visible
//! through every replica.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::api::*;
use crate::helpers::*;

fn event(n: usize) -> String {
    format!(r#"{{"event":"tour.completed","version":"0","time":1,"id":"evt_{n}"}}"#)
}

fn ids(receiver: &TestReceiver) -> BTreeSet<String> {
    receiver
        .received()
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_resume_replays_only_what_its_own_pause_kept() {
    let env = TestEnv::new("resume-twice", &["events"], 1).await;
    let receiver = TestReceiver::ok().await;
    env.store()
        .await
        .put(&webhook("w", &receiver.url("/"), &["*"]))
        .await
        .unwrap();
    let app = env.spawn(&admin_overlay("24h")).await;
    let api = Api::new(&app);
    let publisher = Publisher::new();

    for (round, range) in [(1, 0..3), (2, 3..5)] {
        api.ok(Method::POST, "/v1/webhooks/w/pause", OPS, None).await;
        eventually(Duration::from_secs(10), "the index to see the pause", || async {
            (app.metric(r#"herald_webhooks{status="paused"}"#).await == 1.0).then_some(())
        })
        .await;
        let kept_before = end_offsets(&env.dlq, 1).await[0];
        for n in range.clone() {
            publisher.json(env.topic(), &event(n)).await;
        }
        let kept = range.len() as i64;
        eventually(Duration::from_secs(20), "the events to be kept", || async {
            (end_offsets(&env.dlq, 1).await[0] == kept_before + kept).then_some(())
        })
        .await;
        let resumed = api
            .ok(
                Method::POST,
                "/v1/webhooks/w/resume",
                OPS,
                Some(json!({"replay": true})),
            )
            .await;
        let done = api.replay_finished(&resumed["replay"], OPS).await;
        assert_eq!(done["state"], "done", "{done}");
        assert_eq!(
            done["replayed"], kept,
            "round {round}: only this pause's {kept}: {done}"
        );
        let total = range.end;
        receiver.wait_for(total, Duration::from_secs(20)).await;
        env.wait_finished().await;
        assert_eq!(receiver.count(), total, "round {round}: exactly {kept} more");
        assert_eq!(ids(&receiver).len(), total, "round {round}: no delivery twice");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_redriven_once_unless_forced() {
    let env = TestEnv::new("redrive-once", &["events"], 1).await;
    // No tiers: failures are dead-lettered at once.
    let receiver = TestReceiver::start(Behaviour::Status(500)).await;
    env.store()
        .await
        .put(&webhook("w", &receiver.url("/"), &["*"]))
        .await
        .unwrap();
    let app = env.spawn(&admin_overlay("24h")).await;
    let api = Api::new(&app);
    let publisher = Publisher::new();
    for n in 0..4 {
        publisher.json(env.topic(), &event(n)).await;
    }
    read_topic(&env.dlq, 4, Duration::from_secs(20)).await;
    receiver.set_behaviour(Behaviour::Status(204));

    let replay = |force: bool| {
        let api = &api;
        async move {
            let job = api
                .ok(
                    Method::POST,
                    "/v1/webhooks/w/replay",
                    OPS,
                    Some(json!({"reasons": ["delivery_failed"], "force": force})),
                )
                .await;
            api.replay_finished(&job, OPS).await
        }
    };
    let first = replay(false).await;
    assert_eq!(
        (first["replayed"].as_u64(), first["already_redriven"].as_u64()),
        (Some(4), Some(0))
    );
    assert_eq!(first["total"], first["scanned"], "{first}");
    receiver.wait_for(8, Duration::from_secs(20)).await;

    let second = replay(false).await;
    assert_eq!(
        (second["replayed"].as_u64(), second["already_redriven"].as_u64()),
        (Some(0), Some(4)),
        "the same range again re-drives nothing: {second}"
    );
    env.wait_finished().await;
    assert_eq!(receiver.count(), 8, "nothing re-driven twice");

    let forced = replay(true).await;
    assert_eq!(forced["replayed"], 4, "{forced}");
    receiver.wait_for(12, Duration::from_secs(20)).await;

    // The command line shares the marks: a dry run counts nothing left to do,
    // and its progress is a plain line when not on a terminal.
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut file, (env.config_toml() + &admin_overlay("24h")).as_bytes()).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .arg("--config")
        .arg(file.path())
        .args(["replay", "--webhook", "w", "--reason", "delivery_failed", "--dry-run"])
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains("0 would be replayed"), "{stdout}");
    assert!(stdout.contains("4 were re-driven before"), "{stdout}");
    assert!(stderr.contains("read 4 of 4 dead letters"), "{stderr}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_started_through_one_replica_is_read_through_another() {
    let env = TestEnv::new("replay-replicas", &["events"], 2).await;
    let receiver = TestReceiver::ok().await;
    let mut paused = webhook("w", &receiver.url("/"), &["*"]);
    paused.status = herald::webhook::WebhookStatus::Paused;
    env.store().await.put(&paused).await.unwrap();
    let one = env.spawn(&admin_overlay("24h")).await;
    let two = env.spawn(&admin_overlay("24h")).await;
    let publisher = Publisher::new();
    for n in 0..3 {
        publisher.json(env.topic(), &event(n)).await;
    }
    read_topic(&env.dlq, 3, Duration::from_secs(20)).await;

    let (api_one, api_two) = (Api::new(&one), Api::new(&two));
    let resumed = api_one
        .ok(
            Method::POST,
            "/v1/webhooks/w/resume",
            OPS,
            Some(json!({"replay": true})),
        )
        .await;
    let id = resumed["replay"]["id"].as_str().unwrap().to_owned();
    let through_two = api_two.replay_finished(&resumed["replay"], OPS).await;
    assert_eq!(through_two["id"], id.as_str());
    assert_eq!(through_two["state"], "done", "{through_two}");
    assert_eq!(through_two["replayed"], 3);
    // Tenancy holds there too.
    assert_eq!(
        api_two
            .call(Method::GET, &format!("/v1/replays/{id}"), ACME, None)
            .await
            .status,
        404
    );
    receiver.wait_for(3, Duration::from_secs(20)).await;
    one.stop().await;
    two.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_has_one_replay_at_a_time_however_its_path_names_it() {
    let env = TestEnv::new("replay-spelling", &["events"], 1).await;
    let app = env.spawn(&admin_overlay("24h")).await;
    let api = Api::new(&app);
    let receiver = TestReceiver::ok().await;
    let created = api
        .create(
            ACME,
            json!({"uid": "orders", "name": "orders", "url": receiver.url("/"), "events": ["*"]}),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_ne!(id, "orders", "the id is not the uid");
    api.ok(Method::POST, "/v1/webhooks/orders/pause", ACME, None).await;
    // A replay of it runs on another replica (its place, as that replica took it).
    let mut redis = env.redis().await;
    let lease = (std::time::SystemTime::now() + Duration::from_secs(600))
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let _: () = redis::pipe()
        .cmd("ZADD")
        .arg(format!("{}replays:running", env.prefix))
        .arg(lease)
        .arg("rpl_elsewhere")
        .ignore()
        .cmd("HSET")
        .arg(format!("{}replays:running:owners", env.prefix))
        .arg("rpl_elsewhere")
        .arg(format!("{id}\nacme"))
        .ignore()
        .query_async(&mut redis)
        .await
        .unwrap();

    // Resumed with a replay through its uid: the running one is named.
    let reply = api
        .call(
            Method::POST,
            "/v1/webhooks/orders/resume",
            ACME,
            Some(json!({"replay": true})),
        )
        .await;
    assert_problem(&reply, 429, None);
    assert!(
        reply.body["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("rpl_elsewhere"),
        "{:?}",
        reply.body
    );
    app.stop().await;
}

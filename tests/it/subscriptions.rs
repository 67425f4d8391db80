//! Webhooks written to Redis take effect within a second, without restart,
//! and delivery survives a Redis restart.

use std::process::Stdio;
use std::time::Duration;

use herald::retry::codec::headers as h;
use herald::webhook::WebhookStatus;

use crate::helpers::*;

const EVENT: &str = r#"{"event":"tour.completed","version":"0","time":1740133769000}"#;

async fn publish_until(publisher: &Publisher, topic: &str, what: &str, done: impl Fn() -> bool) {
    // Each change must show within a second of being announced; publishing
    // every 100 ms and waiting up to 1 s after the write checks exactly that.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    loop {
        publisher.json(topic, EVENT).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if done() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not take effect within a second"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_paused_changed_and_deleted_webhooks_take_effect_within_a_second() {
    let env = TestEnv::new("live", &["events"], 1).await;
    let first = TestReceiver::ok().await;
    let second = TestReceiver::ok().await;
    // A long resync interval: changes must arrive through announcements.
    let app = env.spawn("[subscriptions]\nresync_interval = \"1h\"").await;
    let publisher = Publisher::new();
    let store = env.store().await;

    let mut w = webhook("live", &first.url("/"), &["tour.*"]);
    store.put(&w).await.unwrap();
    publish_until(&publisher, env.topic(), "adding a webhook", || first.count() > 0).await;

    w.status = WebhookStatus::Paused;
    store.put(&w).await.unwrap();
    app.wait_status("paused", 1).await;
    let before = first.count();
    publisher.json(env.topic(), EVENT).await;
    let paused = read_topic(&env.dlq, 1, Duration::from_secs(10)).await;
    assert_eq!(
        paused[0].header(h::REASON),
        "webhook_paused",
        "a paused webhook's delivery is kept"
    );
    assert_eq!(first.count(), before, "nothing is delivered while paused");

    w.status = WebhookStatus::Active;
    w.url = second.url("/moved");
    store.put(&w).await.unwrap();
    publish_until(&publisher, env.topic(), "resuming with a new URL", || {
        second.count() > 0
    })
    .await;
    let first_total = first.count();

    store.delete("live").await.unwrap();
    app.wait_webhooks(0).await;
    let second_total = second.count();
    publisher.json(env.topic(), EVENT).await;
    eventually(Duration::from_secs(5), "the event to be consumed", || async {
        (app.metric(&format!("herald_events_unmatched_total{{topic=\"{}\"}}", env.topic()))
            .await
            >= 1.0)
            .then_some(())
    })
    .await;
    assert_eq!(second.count(), second_total, "a deleted webhook receives nothing");
    assert_eq!(first.count(), first_total);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_records_are_skipped_and_named() {
    let env = TestEnv::new("malformed", &["events"], 1).await;
    let receiver = TestReceiver::ok().await;
    let mut conn = env.redis().await;
    let key = format!("{}webhook:broken", env.prefix);
    let () = redis::pipe()
        .set(&key, "{\"id\":\"broken\",\"url\":")
        .sadd(format!("{}webhooks", env.prefix), "broken")
        .query_async(&mut conn)
        .await
        .unwrap();
    env.store()
        .await
        .put(&webhook("good", &receiver.url("/"), &["*"]))
        .await
        .unwrap();
    let app = env.spawn("").await;
    // Counted at every sync that reads it (a re-sync may have run already).
    assert!(app.metric("herald_subscription_records_invalid_total").await >= 1.0);
    assert_eq!(app.metric(r#"herald_webhooks{status="active"}"#).await, 1.0);
    Publisher::new().json(env.topic(), EVENT).await;
    receiver.wait_for(1, Duration::from_secs(10)).await;
    app.stop().await;
}

/// A Redis server of this test's own, so restarting it disturbs no other test.
struct OwnRedis {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl OwnRedis {
    fn start() -> OwnRedis {
        let mut redis = OwnRedis::not_started();
        redis.restart();
        redis
    }

    /// A port and a directory for a server started later ([`OwnRedis::restart`]).
    fn not_started() -> OwnRedis {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        OwnRedis {
            port,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        }
    }

    fn restart(&mut self) {
        // Append-only persistence, as a production Redis keeps its data.
        let child = std::process::Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/test installs it)");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_continues_while_redis_restarts() {
    let mut redis = OwnRedis::start();
    let mut env = TestEnv::new("redis-restart", &["events"], 1).await;
    env.redis_url = redis.url();
    let receiver = TestReceiver::ok().await;
    env.store()
        .await
        .put(&webhook("before", &receiver.url("/before"), &["*"]))
        .await
        .unwrap();
    let app = env.spawn("").await;
    let publisher = Publisher::new();

    redis.kill();
    eventually(Duration::from_secs(10), "Herald to notice Redis is gone", || async {
        (app.metric("herald_redis_up").await == 0.0).then_some(())
    })
    .await;
    for _ in 0..5 {
        publisher.json(env.topic(), EVENT).await;
    }
    receiver.wait_for(5, Duration::from_secs(10)).await;

    redis.restart();
    eventually(Duration::from_secs(15), "Herald to reconnect to Redis", || async {
        (app.metric("herald_redis_up").await == 1.0).then_some(())
    })
    .await;
    // Changes made after the restart are followed again.
    env.store()
        .await
        .put(&webhook("after", &receiver.url("/after"), &["*"]))
        .await
        .unwrap();
    publish_until(&publisher, env.topic(), "a webhook added after the restart", || {
        receiver.received().iter().any(|r| r.path == "/after")
    })
    .await;
    assert!(
        app.metric(r#"herald_subscription_errors_total{stage="subscribe"}"#)
            .await
            + app.metric(r#"herald_subscription_errors_total{stage="connect"}"#).await
            >= 1.0
    );
    app.stop().await;
}

/// A replica started while Redis is down starts anyway: its API answers 503
/// and its consumers wait for the index, then both work once Redis is back,
/// and the event taken meanwhile is delivered, not dropped as unmatched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_while_redis_is_down_serves_once_it_is_back() {
    use crate::api::{admin_overlay, assert_problem, Api, OPS};
    use reqwest::Method;
    let mut redis = OwnRedis::start();
    let mut env = TestEnv::new("redis-later", &["events"], 1).await;
    env.redis_url = redis.url();
    let receiver = TestReceiver::ok().await;
    env.store()
        .await
        .put(&webhook("before", &receiver.url("/before"), &["*"]))
        .await
        .unwrap();
    redis.kill();

    let app = env.spawn_unready(&admin_overlay("24h")).await;
    let api = Api::new(&app);
    let create = serde_json::json!({"id": "later", "name": "later", "url": receiver.url("/later"), "events": ["*"]});
    let refused = api.call(Method::POST, "/v1/webhooks", OPS, Some(create.clone())).await;
    assert_problem(&refused, 503, None);
    // Configured tokens authenticate without Redis; a token issued through
    // the API cannot be checked, which is not the same as wrong: 503, not 401.
    let catalogs = api.call(Method::GET, "/v1/catalogs", OPS, None).await;
    assert_eq!(catalogs.status, reqwest::StatusCode::OK, "{}", catalogs.body);
    let issued = format!("hrld_{}", "x".repeat(43));
    assert_problem(&api.call(Method::GET, "/v1/catalogs", &issued, None).await, 503, None);
    assert_problem(
        &api.call(Method::GET, "/v1/catalogs", "not-a-token", None).await,
        401,
        None,
    );
    let publisher = Publisher::new();
    publisher.json(env.topic(), EVENT).await;
    // Nothing is routed before the index loads: the event is delivered once
    // Redis is back, and the end shows it was never found unmatched.
    assert_eq!(app.readyz().await["subscriptions_loaded"], false);
    assert_eq!(receiver.count(), 0);

    redis.restart();
    eventually(Duration::from_secs(20), "the API to reach Redis", || {
        let (api, create) = (&api, create.clone());
        async move {
            let reply = api.call(Method::POST, "/v1/webhooks", OPS, Some(create)).await;
            reply.status.is_success().then_some(())
        }
    })
    .await;
    app.wait_ready().await;
    app.wait_webhooks(2).await;
    publisher.json(env.topic(), EVENT).await;
    // The first event reaches `later` too when the index loaded after the
    // API created it: which of the two Redis served first is not fixed.
    let got = receiver.wait_for(3, Duration::from_secs(20)).await;
    let to = |path: &str| got.iter().filter(|r| r.path == path).count();
    assert_eq!(to("/before"), 2, "the first event reached the webhook Redis held");
    assert!(to("/later") >= 1);
    let unmatched = format!(r#"herald_events_unmatched_total{{topic="{}"}}"#, env.topic());
    assert_eq!(app.metric(&unmatched).await, 0.0);
    app.stop().await;
}

/// Concurrent read-modify-write changes (API requests on several replicas,
/// Herald disabling a webhook) never overwrite one another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_are_never_lost() {
    let env = TestEnv::new("subs-cas", &["events"], 1).await;
    let store = env.store().await;
    store
        .put(&webhook("cas", "http://127.0.0.1:9/", &["base"]))
        .await
        .unwrap();
    let changes = (0..20).map(|i| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .update("cas", |current| {
                    let mut next = current.clone();
                    next.events.push(format!("e{i}"));
                    Ok::<_, std::convert::Infallible>(Some(next))
                })
                .await
                .unwrap()
                .unwrap()
        })
    });
    for change in futures::future::join_all(changes).await {
        change.unwrap();
    }
    let stored = store.get("cas").await.unwrap().unwrap();
    assert_eq!(stored.events.len(), 21, "{:?}", stored.events);
    for i in 0..20 {
        assert!(stored.events.contains(&format!("e{i}")));
    }
    let missing = store
        .update("nope", |_| Ok::<_, std::convert::Infallible>(None))
        .await
        .unwrap();
    assert!(missing.is_none());
}

/// Writes `webhook` as another service would: the document and the id set,
/// then, when asked, the change log entry and the announcement.
async fn write_as_another_service(env: &TestEnv, webhook: &herald::webhook::Webhook, log: bool, announce: bool) {
    let mut conn = env.redis().await;
    let mut pipe = redis::pipe();
    pipe.atomic()
        .set(
            format!("{}webhook:{}", env.prefix, webhook.id),
            serde_json::to_string(webhook).unwrap(),
        )
        .ignore()
        .sadd(format!("{}webhooks", env.prefix), &webhook.id)
        .ignore();
    if log {
        pipe.cmd("XADD")
            .arg(format!("{}webhooks:log", env.prefix))
            .arg("MAXLEN")
            .arg("~")
            .arg(100_000)
            .arg("*")
            .arg("id")
            .arg(&webhook.id)
            .ignore();
    }
    if announce {
        pipe.publish(format!("{}webhooks:changed", env.prefix), &webhook.id)
            .ignore();
    }
    let () = pipe.query_async(&mut conn).await.unwrap();
}

async fn redis_del(env: &TestEnv, key: &str) {
    let mut conn = env.redis().await;
    let () = redis::cmd("DEL").arg(key).query_async(&mut conn).await.unwrap();
}

const FULL_SYNCS: &str = r#"herald_subscription_syncs_total{kind="full"}"#;

/// Waits for the audit that fills the tenant sets once on a fresh prefix
/// (after the first read's own full sync); returns the count of full syncs
/// then. No other audit runs unless something calls for one.
async fn after_the_tenant_sets_are_filled(app: &RunningApp) -> f64 {
    eventually(Duration::from_secs(10), "the tenant sets to be filled", || async {
        let full = app.metric(FULL_SYNCS).await;
        (full >= 2.0).then_some(full)
    })
    .await
}

/// Publishes an event every 100 ms until `receiver` has one more than it had,
/// for at most `within`.
async fn deliver_within(publisher: &Publisher, env: &TestEnv, receiver: &TestReceiver, within: Duration, what: &str) {
    let deadline = tokio::time::Instant::now() + within;
    let before = receiver.count();
    while receiver.count() == before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: nothing delivered within {within:?}"
        );
        publisher.json(env.topic(), EVENT).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_whose_announcement_was_missed_is_read_from_the_change_log() {
    let env = TestEnv::new("log", &["events"], 1).await;
    let receiver = TestReceiver::ok().await;
    // Audits off: only the log can bring the change.
    let app = env
        .spawn("[subscriptions]\nresync_interval = \"300ms\"\naudit_interval = \"0s\"")
        .await;
    let full = after_the_tenant_sets_are_filled(&app).await;
    write_as_another_service(&env, &webhook("logged", &receiver.url("/"), &["tour.*"]), true, false).await;
    deliver_within(
        &Publisher::new(),
        &env,
        &receiver,
        Duration::from_secs(5),
        "a logged change",
    )
    .await;
    assert_eq!(
        app.metric(FULL_SYNCS).await,
        full,
        "read from the log, without reading every document again"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_behind_many_log_entries_of_one_webhook_is_read_at_the_next_log_read() {
    let env = TestEnv::new("logpages", &["events"], 1).await;
    let receiver = TestReceiver::ok().await;
    let app = env
        .spawn("[subscriptions]\nresync_interval = \"1s\"\naudit_interval = \"0s\"")
        .await;
    let full = after_the_tenant_sets_are_filled(&app).await;
    // One webhook changed 10,000 times (ten pages of the log naming a single
    // id), then another: reading a page at a time per log read, the second
    // would wait ten seconds.
    let busy = webhook("busy", &receiver.url("/busy"), &["survey.*"]);
    write_as_another_service(&env, &busy, true, false).await;
    let mut conn = env.redis().await;
    let mut pipe = redis::pipe();
    for _ in 0..10_000 {
        pipe.cmd("XADD")
            .arg(format!("{}webhooks:log", env.prefix))
            .arg("*")
            .arg("id")
            .arg("busy")
            .ignore();
    }
    let () = pipe.query_async(&mut conn).await.unwrap();
    write_as_another_service(&env, &webhook("logged", &receiver.url("/"), &["tour.*"]), true, false).await;
    deliver_within(
        &Publisher::new(),
        &env,
        &receiver,
        Duration::from_secs(5),
        "a change behind ten pages of the log",
    )
    .await;
    assert_eq!(app.metric(FULL_SYNCS).await, full, "read from the log");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_taken_while_the_index_loads_wait_for_it_instead_of_going_unmatched() {
    let env = TestEnv::new("beforeload", &["events"], 1).await;
    let receiver = TestReceiver::ok().await;
    let mut conn = env.redis().await;
    // Another service broke the id set: the first load fails, and is
    // retried, until it is mended. The webhook's document is there.
    let ids = format!("{}webhooks", env.prefix);
    let hook = webhook("early", &receiver.url("/"), &["tour.*"]);
    let () = redis::pipe()
        .set(&ids, "not a set")
        .ignore()
        .set(
            format!("{}webhook:early", env.prefix),
            serde_json::to_string(&hook).unwrap(),
        )
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    let app = env
        .spawn_unready("[subscriptions]\nreconnect_min_delay = \"100ms\"\nreconnect_max_delay = \"300ms\"")
        .await;
    // The consumer joins its group while the index cannot load, and takes
    // the record.
    eventually(
        Duration::from_secs(30),
        "partitions assigned before the load",
        || async {
            let ready = app.readyz().await;
            (ready["group_assignment_received"] == true).then_some(())
        },
    )
    .await;
    assert_eq!(app.readyz().await["subscriptions_loaded"], false);
    Publisher::new().json(env.topic(), EVENT).await;
    let consumed = format!(r#"herald_events_consumed_total{{topic="{}"}}"#, env.topic());
    eventually(Duration::from_secs(10), "the record to be taken", || async {
        (app.metric(&consumed).await >= 1.0).then_some(())
    })
    .await;
    // Taken and held, not finished: whatever is routed happens after the
    // load (and the end shows nothing was found unmatched).
    assert_eq!(app.metric("herald_events_in_flight").await, 1.0);
    assert_eq!(receiver.count(), 0, "nothing routed before the index has loaded");
    assert_eq!(app.metric("herald_events_completed_total").await, 0.0);

    let () = redis::pipe()
        .del(&ids)
        .ignore()
        .sadd(&ids, "early")
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    receiver.wait_for(1, Duration::from_secs(15)).await;
    app.wait_ready().await;
    let unmatched = format!(r#"herald_events_unmatched_total{{topic="{}"}}"#, env.topic());
    assert_eq!(app.metric(&unmatched).await, 0.0, "routed once loaded, not before");
    assert_eq!(receiver.count(), 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gap_in_the_change_log_reads_every_document_again() {
    let env = TestEnv::new("loggap", &["events"], 1).await;
    let receiver = TestReceiver::ok().await;
    let app = env
        .spawn("[subscriptions]\nresync_interval = \"300ms\"\naudit_interval = \"0s\"")
        .await;
    let full = after_the_tenant_sets_are_filled(&app).await;
    // The log is lost (trimmed past what this replica read, or Redis lost
    // it), and a change is neither logged nor announced.
    redis_del(&env, &format!("{}webhooks:log", env.prefix)).await;
    write_as_another_service(
        &env,
        &webhook("unlogged", &receiver.url("/"), &["tour.*"]),
        false,
        false,
    )
    .await;
    deliver_within(
        &Publisher::new(),
        &env,
        &receiver,
        Duration::from_secs(5),
        "a change behind a gap",
    )
    .await;
    assert!(app.metric(FULL_SYNCS).await > full, "found by an audit");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audits_catch_silent_writers_and_parse_only_what_changed() {
    let env = TestEnv::new("audit", &["events"], 1).await;
    let receiver = TestReceiver::ok().await;
    let store = env.store().await;
    for i in 0..50 {
        store
            .put(&webhook(&format!("quiet{i}"), &receiver.url("/quiet"), &["survey.*"]))
            .await
            .unwrap();
    }
    let app = env
        .spawn("[subscriptions]\nresync_interval = \"1h\"\naudit_interval = \"1s\"")
        .await;
    let changed = r#"herald_subscription_documents_read_total{result="changed"}"#;
    let unchanged = r#"herald_subscription_documents_read_total{result="unchanged"}"#;
    assert_eq!(app.metric(changed).await, 50.0);
    // A writer that neither logs nor announces.
    write_as_another_service(&env, &webhook("silent", &receiver.url("/"), &["tour.*"]), false, false).await;
    deliver_within(
        &Publisher::new(),
        &env,
        &receiver,
        Duration::from_secs(5),
        "a silent change",
    )
    .await;
    eventually(Duration::from_secs(5), "a second audit", || async {
        (app.metric(unchanged).await >= 101.0).then_some(())
    })
    .await;
    // Parsed: the 50 at start and the one that changed, each once.
    assert_eq!(
        app.metric(changed).await,
        51.0,
        "unchanged documents are not parsed again"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flushed_redis_keeps_routing_with_the_index_until_the_webhooks_are_written_again() {
    let env = TestEnv::new("flushed", &["events"], 1).await;
    let receiver = TestReceiver::ok().await;
    let store = env.store().await;
    let kept = webhook("kept", &receiver.url("/"), &["tour.*"]);
    store.put(&kept).await.unwrap();
    let app = env
        .spawn("[subscriptions]\nresync_interval = \"300ms\"\naudit_interval = \"0s\"")
        .await;
    let full = after_the_tenant_sets_are_filled(&app).await;
    // Redis loses everything (FLUSHALL; here every key of the prefix, as
    // the Redis is shared): the next log read finds the log gone and reads
    // every document again, and finds none.
    let mut conn = env.redis().await;
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}*", env.prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    let () = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await.unwrap();
    eventually(Duration::from_secs(10), "an audit of the emptied Redis", || async {
        (app.metric(FULL_SYNCS).await > full).then_some(())
    })
    .await;
    let publisher = Publisher::new();
    let within = Duration::from_secs(5);
    deliver_within(&publisher, &env, &receiver, within, "an event while Redis is empty").await;
    assert_eq!(
        app.metric(&format!(r#"herald_events_unmatched_total{{topic="{}"}}"#, env.topic()))
            .await,
        0.0,
        "no event routed to no one while Redis was empty"
    );
    // Written again by the writer that owns it: it goes on as before.
    store.put(&kept).await.unwrap();
    deliver_within(&publisher, &env, &receiver, within, "an event once written again").await;
    app.stop().await;
}

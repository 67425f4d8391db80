//! No tenant can starve, probe or overload another: delivery slots shared by
//! tenant and by destination host, ports and networks per tenant, responses
//! of internal destinations withheld, replays capped, memory in bytes.

use std::time::Duration;

use axum::response::IntoResponse;
use reqwest::Method;
use serde_json::json;

use crate::api::*;
use crate::helpers::*;

/// Jimo events carrying their tenant in `/tenant`.
const TENANT_ENVELOPE: &str = "\n[envelope.default]\npreset = \"jimo\"\ntenant = \"/tenant\"\n";

/// A test environment whose events carry a tenant, with the management API.
async fn tenant_env(name: &str) -> TestEnv {
    let mut env = TestEnv::new(name, &["events"], 1).await;
    env.overlay = format!("{}{TENANT_ENVELOPE}", admin_overlay("24h"));
    env
}

fn jimo(event: &str, tenant: &str, id: &str) -> String {
    format!(r#"{{"event":"{event}","version":"0","time":1,"id":"{id}","tenant":"{tenant}"}}"#)
}

async fn put(env: &TestEnv, id: &str, tenant: Option<&str>, url: &str) {
    put_for(env, id, tenant, url, &["*"]).await
}

async fn put_for(env: &TestEnv, id: &str, tenant: Option<&str>, url: &str, events: &[&str]) {
    let mut w = webhook(id, url, events);
    w.tenant = tenant.map(str::to_owned);
    env.store().await.put(&w).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_with_hanging_endpoints_never_holds_another_tenants_deliveries() {
    let env = tenant_env("fair-tenants").await;
    // Four slots in all, two per tenant; waits long enough that, without the
    // tenant's share, the other tenant would wait for the hanging requests.
    let app = env
        .spawn(
            "[delivery]\nmax_in_flight = 4\nmax_in_flight_per_tenant = 2\nmax_queue_wait = \"30s\"\nrequest_timeout = \"30s\"",
        )
        .await;
    let (open, held) = gate();
    let hanging = TestReceiver::start(held).await;
    let healthy = TestReceiver::ok().await;
    put(&env, "acme-slow", Some("acme"), &hanging.url("/slow")).await;
    put(&env, "globex", Some("globex"), &healthy.url("/ok")).await;
    app.wait_webhooks(2).await;

    let publisher = Publisher::new();
    for i in 0..10 {
        publisher
            .json(env.topic(), &jimo("tour.started", "acme", &format!("a{i}")))
            .await;
    }
    hanging.wait_for(2, Duration::from_secs(20)).await;
    publisher.json(env.topic(), &jimo("tour.started", "globex", "g1")).await;
    healthy.wait_for(1, Duration::from_secs(10)).await;
    // The hanging tenant never got more than its share, though slots were
    // free: its endpoint answers at last, and saw at most two requests at
    // once in all ten.
    open.send(true).unwrap();
    env.wait_finished().await;
    assert_eq!(hanging.count(), 10);
    assert_eq!(hanging.most_at_once(), 2, "acme holds at most max_in_flight_per_tenant");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wait_for_a_shared_slot_counts_in_max_queue_wait() {
    let env = TestEnv::new("fair-deadline", &["events"], 1).await;
    // One slot in all; a delivery may wait a second for it, while the request
    // holding it hangs for half a minute.
    let app = env
        .spawn("[delivery]\nmax_in_flight = 1\nmax_queue_wait = \"1s\"\nrequest_timeout = \"30s\"")
        .await;
    let hanging = TestReceiver::start(Behaviour::Hang).await;
    let healthy = TestReceiver::ok().await;
    put_for(&env, "slow", None, &hanging.url("/slow"), &["slow.*"]).await;
    put_for(&env, "fast", None, &healthy.url("/fast"), &["fast.*"]).await;
    app.wait_webhooks(2).await;
    let publisher = Publisher::new();
    publisher
        .json(env.topic(), r#"{"event":"slow.one","version":"0"}"#)
        .await;
    hanging.wait_for(1, Duration::from_secs(20)).await;
    let started = std::time::Instant::now();
    publisher
        .json(env.topic(), r#"{"event":"fast.one","version":"0"}"#)
        .await;
    let letters = read_topic(&env.dlq, 1, Duration::from_secs(20)).await;
    assert_eq!(letters[0].header("herald.webhook.id"), "fast");
    assert_eq!(letters[0].header("herald.last.class"), "saturated");
    assert!(
        letters[0]
            .header("herald.last.error")
            .contains("delivery.max_in_flight"),
        "names the limit: {}",
        letters[0].header("herald.last.error")
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "failed at max_queue_wait, not after the hanging request's timeout"
    );
    assert_eq!(healthy.count(), 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_destination_host_gets_at_most_its_share_over_every_webhook() {
    let env = TestEnv::new("fair-host", &["events"], 1).await;
    let app = env
        .spawn("[delivery]\nmax_in_flight_per_host = 3\nmax_queue_wait = \"30s\"\nrequest_timeout = \"30s\"")
        .await;
    // Ten webhooks, one victim host, which holds requests until it is let go.
    let (open, held) = gate();
    let victim = TestReceiver::start(held).await;
    for i in 0..10 {
        put(&env, &format!("w{i}"), None, &victim.url(&format!("/{i}"))).await;
    }
    app.wait_webhooks(10).await;
    Publisher::new()
        .json(env.topic(), r#"{"event":"tour.started","version":"0"}"#)
        .await;
    victim.wait_for(3, Duration::from_secs(20)).await;
    open.send(true).unwrap();
    env.wait_finished().await;
    assert_eq!(victim.count(), 10);
    assert_eq!(
        victim.most_at_once(),
        3,
        "one event to ten webhooks: three requests at a time reach the host"
    );
    app.stop().await;
}

/// The per-host cap counts the address connected to, not the host as a URL
/// spells it: an IP literal in another form, a name that resolves there, the
/// name with a final dot or in capitals are all one destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_gets_at_most_its_share_however_its_urls_spell_it() {
    let env = TestEnv::new("fair-address", &["events"], 1).await;
    let app = env
        .spawn("[delivery]\nmax_in_flight_per_host = 2\nmax_queue_wait = \"3s\"\nrequest_timeout = \"60s\"")
        .await;
    let victim = TestReceiver::start(Behaviour::Hang).await;
    let port = victim.addr.port();
    let spellings = [
        "127.0.0.1",
        "localhost",
        "LocalHost.",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "127.1",
        "0x7f.0.0.1",
    ];
    for (i, host) in spellings.iter().enumerate() {
        put(&env, &format!("w{i}"), None, &format!("http://{host}:{port}/{i}")).await;
    }
    app.wait_webhooks(spellings.len() as u64).await;
    Publisher::new()
        .json(env.topic(), r#"{"event":"tour.started","version":"0"}"#)
        .await;
    // Two hang at the victim; every other one waits for a slot and gives up.
    let saturated = r#"herald_deliveries_total{class="saturated",outcome="failed"}"#;
    let gave_up = eventually(
        Duration::from_secs(60),
        "the deliveries without a slot to give up",
        || async {
            let n = app.metric(saturated).await;
            (n >= (spellings.len() - 2) as f64).then_some(n)
        },
    )
    .await;
    assert_eq!(
        (victim.count(), gave_up),
        (2, (spellings.len() - 2) as f64),
        "seven spellings of one address: two requests at a time reach it"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_ports_and_a_tenants_own_networks_are_reached() {
    let env = tenant_env("egress").await;
    let receiver = TestReceiver::ok().await;
    let port = receiver.addr.port();
    // Loopback is open to acme alone; every port allowed but 9.
    let app = env
        .spawn("[delivery]\nallow_cidrs = []\ntenant_allow_cidrs = { acme = [\"127.0.0.0/8\"] }\nallow_ports = [\"10-65535\"]")
        .await;
    let api = Api::new(&app);

    let create = |token, url: String| {
        let api = &api;
        async move {
            api.call(
                Method::POST,
                "/v1/webhooks",
                token,
                Some(json!({"name": "w", "url": url, "events": ["tour.*"]})),
            )
            .await
        }
    };
    let reply = create(GLOBEX, receiver.url("/globex")).await;
    assert_problem(&reply, 422, Some("url"));
    assert!(
        reply.body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("loopback"),
        "{}",
        reply.body
    );
    let reply = create(ACME, "http://127.0.0.1:9/".into()).await;
    assert_problem(&reply, 422, Some("url"));
    assert!(
        reply.body["errors"][0]["message"].as_str().unwrap().contains("port 9"),
        "{}",
        reply.body
    );
    let reply = create(ACME, receiver.url("/acme")).await;
    assert_eq!(reply.status, 201, "{}", reply.body);

    // A webhook written by another service is held to the same rules.
    put(&env, "globex-direct", Some("globex"), &receiver.url("/globex")).await;
    app.wait_webhooks(2).await;
    let publisher = Publisher::new();
    publisher.json(env.topic(), &jimo("tour.started", "acme", "e1")).await;
    publisher.json(env.topic(), &jimo("tour.started", "globex", "e2")).await;
    let got = receiver.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].path, "/acme");
    let letters = read_topic(&env.dlq, 1, Duration::from_secs(20)).await;
    assert_eq!(letters[0].header("herald.webhook.id"), "globex-direct");
    assert_eq!(letters[0].header("herald.last.class"), "blocked");
    assert_eq!(receiver.count(), 1, "nothing reached loopback for globex, port {port}");
    app.stop().await;
}

/// Answers like an internal service would: headers and a body worth reading.
async fn internal_service() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let app = axum::Router::new().fallback(|| async {
        (
            axum::http::StatusCode::OK,
            [("x-internal-version", "build-7f3a")],
            "internal inventory: db-password-ish-content",
        )
            .into_response()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (
        addr,
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() }),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_of_destinations_only_an_allowlist_opens_are_withheld() {
    let env = tenant_env("withheld").await;
    let (addr, _server) = internal_service().await;
    let app = env.spawn("[delivery]\nallowlisted_response_details = false").await;
    let api = Api::new(&app);
    api.ok(
        Method::POST,
        "/v1/webhooks",
        ACME,
        Some(json!({"uid": "probe", "name": "probe", "url": format!("http://{addr}/"), "events": ["*"]})),
    )
    .await;

    let test = api
        .ok(
            Method::POST,
            "/v1/webhooks/probe/test",
            ACME,
            Some(json!({"event_type": "tour.started"})),
        )
        .await;
    assert_eq!(test["status"], 200, "{test}");
    assert_eq!(test["response_withheld"], true, "{test}");
    assert!(test["response_body"].is_null(), "{test}");
    assert_eq!(test["response_headers"], json!({}), "{test}");

    app.wait_webhooks(1).await;
    Publisher::new()
        .json(env.topic(), &jimo("tour.started", "acme", "e1"))
        .await;
    let page = eventually(Duration::from_secs(20), "the attempt in the history", || async {
        let page = api.ok(Method::GET, "/v1/webhooks/probe/deliveries", ACME, None).await;
        (!page["data"].as_array().unwrap().is_empty()).then_some(page)
    })
    .await;
    let text = page.to_string();
    assert!(
        !text.contains("internal inventory") && !text.contains("build-7f3a"),
        "{text}"
    );
    assert_eq!(page["data"][0]["response"]["status"], 200, "{page}");
    assert_eq!(page["data"][0]["response"]["withheld"], true, "{page}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replays_are_capped_per_webhook_per_tenant_and_in_all() {
    let env = tenant_env("replay-caps").await;
    let app = env.spawn("[admin]\nmax_replays = 3\nmax_replays_per_tenant = 2").await;
    let api = Api::new(&app);
    // Named by the operator, so the test knows their ids.
    for id in ["a1", "a2", "a3"] {
        api.ok(
            Method::POST,
            "/v1/webhooks",
            OPS,
            Some(json!({"id": id, "tenant": "globex", "name": id, "url": "https://example.com/", "events": ["*"]})),
        )
        .await;
    }
    api.ok(
        Method::POST,
        "/v1/webhooks",
        OPS,
        Some(json!({"id": "o1", "name": "o1", "url": "https://example.com/", "events": ["*"]})),
    )
    .await;
    // Replays running elsewhere (other replicas): a1's and a9's (globex), and
    // one whose replica stopped long ago (its lease ran out).
    let client = redis::Client::open(env.redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let running = format!("{}replays:running", env.prefix);
    let owners = format!("{}replays:running:owners", env.prefix);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let elsewhere = |job: &'static str, owner: &'static str, lease_ms: i64| {
        let mut pipe = redis::pipe();
        pipe.cmd("ZADD")
            .arg(&running)
            .arg(now_ms + lease_ms)
            .arg(job)
            .ignore()
            .cmd("HSET")
            .arg(&owners)
            .arg(job)
            .arg(owner)
            .ignore();
        pipe
    };
    let () = elsewhere("rpl_a1", "a1\nglobex", 600_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    let () = elsewhere("rpl_a9", "a9\nglobex", 600_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    let () = elsewhere("rpl_lost", "zz\ninitech", -1_000)
        .query_async(&mut conn)
        .await
        .unwrap();

    let replay = |id: &'static str, token: &'static str| {
        let api = &api;
        async move {
            api.call(
                Method::POST,
                &format!("/v1/webhooks/{id}/replay"),
                token,
                Some(json!({})),
            )
            .await
        }
    };
    let detail = |reply: &Reply| reply.body["detail"].as_str().unwrap_or_default().to_owned();
    // One per webhook, over every replica.
    let reply = replay("a1", GLOBEX).await;
    assert_problem(&reply, 429, None);
    assert!(detail(&reply).contains("rpl_a1"), "{}", reply.body);
    assert_eq!(reply.headers.get("retry-after").unwrap(), "30");
    // Resume with replay is refused the same way, and changes nothing.
    api.ok(Method::POST, "/v1/webhooks/a1/pause", GLOBEX, None).await;
    let reply = api
        .call(
            Method::POST,
            "/v1/webhooks/a1/resume",
            GLOBEX,
            Some(json!({"replay": true})),
        )
        .await;
    assert_problem(&reply, 429, None);
    let a1 = api.ok(Method::GET, "/v1/webhooks/a1", GLOBEX, None).await;
    assert_eq!(a1["status"], "paused");
    // Two of globex's run: a third is refused.
    let reply = replay("a2", GLOBEX).await;
    assert_problem(&reply, 429, None);
    assert!(detail(&reply).contains("max_replays_per_tenant"), "{}", reply.body);
    // Three in all (the lost one no longer counts): refused for anyone.
    let () = elsewhere("rpl_x", "x1\ninitech", 600_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    let reply = replay("o1", OPS).await;
    assert_problem(&reply, 429, None);
    assert!(detail(&reply).contains("admin.max_replays"), "{}", reply.body);
    // One finishes elsewhere: o1's starts, runs, and frees its place.
    let () = redis::cmd("ZREM")
        .arg(&running)
        .arg("rpl_x")
        .query_async(&mut conn)
        .await
        .unwrap();
    let started = replay("o1", OPS).await;
    assert_eq!(started.status, 202, "{}", started.body);
    eventually(
        Duration::from_secs(30),
        "the finished replay frees its place",
        || async {
            let members: Vec<String> = redis::cmd("ZRANGE")
                .arg(&running)
                .arg(0)
                .arg(-1)
                .query_async(&mut conn.clone())
                .await
                .unwrap();
            (members == vec!["rpl_a1".to_owned(), "rpl_a9".to_owned()]).then_some(())
        },
    )
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_runs_are_capped_apart_and_never_hold_a_replays_place() {
    let env = tenant_env("dry-run-caps").await;
    let app = env
        .spawn("[admin]\nmax_replays = 1\nmax_replays_per_tenant = 1\nmax_dry_runs = 2\nmax_dry_runs_per_tenant = 1")
        .await;
    let api = Api::new(&app);
    for (id, tenant) in [("a1", Some("globex")), ("a2", Some("globex")), ("o1", None)] {
        let mut body = json!({"id": id, "name": id, "url": "https://example.com/", "events": ["*"]});
        if let Some(tenant) = tenant {
            body["tenant"] = json!(tenant);
        }
        api.ok(Method::POST, "/v1/webhooks", OPS, Some(body)).await;
    }
    let client = redis::Client::open(env.redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // A job running on another replica, in the pool `pool`.
    let elsewhere = |pool: &str, job: &str, owner: &str| {
        let mut conn = conn.clone();
        let mut pipe = redis::pipe();
        pipe.cmd("ZADD")
            .arg(format!("{}{pool}:running", env.prefix))
            .arg(now_ms + 600_000)
            .arg(job)
            .ignore()
            .cmd("HSET")
            .arg(format!("{}{pool}:running:owners", env.prefix))
            .arg(job)
            .arg(owner)
            .ignore();
        async move {
            let () = pipe.query_async(&mut conn).await.unwrap();
        }
    };
    let start = |id: &'static str, token: &'static str, dry_run: bool| {
        let api = &api;
        async move {
            api.call(
                Method::POST,
                &format!("/v1/webhooks/{id}/replay"),
                token,
                Some(json!({"dry_run": dry_run})),
            )
            .await
        }
    };
    let detail = |reply: &Reply| reply.body["detail"].as_str().unwrap_or_default().to_owned();

    // Every replay place is taken (another tenant's): a dry run still runs.
    elsewhere("replays", "rpl_x", "x1\ninitech").await;
    let refused = start("a2", GLOBEX, false).await;
    assert_problem(&refused, 429, None);
    assert!(detail(&refused).contains("admin.max_replays"), "{}", refused.body);
    let dry = start("a1", GLOBEX, true).await;
    assert_eq!(dry.status, 202, "a dry run needs no replay place: {}", dry.body);
    let job = dry.body["id"].as_str().unwrap().to_owned();
    eventually(Duration::from_secs(30), "the dry run finishes", || async {
        let job = api.ok(Method::GET, &format!("/v1/replays/{job}"), GLOBEX, None).await;
        (job["state"] == "done").then_some(())
    })
    .await;

    // Dry runs have caps of their own: per tenant, and in all.
    elsewhere("replays:dry", "rpl_d1", "a9\nglobex").await;
    let reply = start("a2", GLOBEX, true).await;
    assert_problem(&reply, 429, None);
    assert!(
        detail(&reply).contains("admin.max_dry_runs_per_tenant"),
        "{}",
        reply.body
    );
    elsewhere("replays:dry", "rpl_d2", "z1\ninitech").await;
    let reply = start("o1", OPS, true).await;
    assert_problem(&reply, 429, None);
    assert!(
        detail(&reply).contains("2 dry runs are running (admin.max_dry_runs)"),
        "{}",
        reply.body
    );

    // With every dry-run place taken, a replay starts once a replay place is free.
    let () = redis::cmd("ZREM")
        .arg(format!("{}replays:running", env.prefix))
        .arg("rpl_x")
        .query_async(&mut conn)
        .await
        .unwrap();
    let replay = start("a1", GLOBEX, false).await;
    assert_eq!(replay.status, 202, "dry runs hold no replay place: {}", replay.body);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_in_flight_are_bounded_in_bytes() {
    let env = TestEnv::new("flow-bytes", &["events"], 1).await;
    // 64 KiB events, a 256 KiB budget: four (or five: the one that reaches
    // the budget goes too) in flight, though the endpoint takes sixteen.
    let app = env
        .spawn("[kafka]\nmax_in_flight_bytes = 262144\n[delivery]\nmax_queue_wait = \"30s\"\nrequest_timeout = \"30s\"")
        .await;
    let (open, held) = gate();
    let hanging = TestReceiver::start(held).await;
    put(&env, "big", None, &hanging.url("/big")).await;
    app.wait_webhooks(1).await;
    let padding = "x".repeat(64 * 1024);
    let publisher = Publisher::new();
    for i in 0..12 {
        publisher
            .json(
                env.topic(),
                &format!(r#"{{"event":"tour.started","version":"0","id":"e{i}","pad":"{padding}"}}"#),
            )
            .await;
    }
    hanging.wait_for(4, Duration::from_secs(20)).await;
    eventually(Duration::from_secs(10), "the bytes in flight to be counted", || async {
        (app.metric("herald_in_flight_bytes{consumer=\"source\"}").await >= 4.0 * 65536.0).then_some(())
    })
    .await;
    // Let every request be answered: never more than the budget's at once.
    open.send(true).unwrap();
    env.wait_finished().await;
    assert_eq!(hanging.count(), 12);
    let n = hanging.most_at_once();
    assert!((4..=5).contains(&n), "{n} events in flight at once");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_creates_webhooks_up_to_its_quota() {
    let env = tenant_env("quota").await;
    let mut conn = env.redis().await;
    // Written by another service before the tenant sets existed.
    let mut older = webhook("older", "https://example.com/older", &["*"]);
    older.tenant = Some("globex".into());
    let () = redis::pipe()
        .set(
            format!("{}webhook:older", env.prefix),
            serde_json::to_string(&older).unwrap(),
        )
        .sadd(format!("{}webhooks", env.prefix), "older")
        .query_async(&mut conn)
        .await
        .unwrap();
    let app = env
        .spawn("[admin.tenants.globex]\nmax_webhooks = 3\n[admin]\nmax_webhooks_per_tenant = 50")
        .await;
    let api = Api::new(&app);
    let create = |token: &'static str, id: &'static str| {
        let api = &api;
        async move {
            api.call(
                Method::POST,
                "/v1/webhooks",
                token,
                Some(json!({"uid": id, "name": id, "url": "https://example.com/", "events": ["*"]})),
            )
            .await
        }
    };
    // The older one counts: two more, not three.
    assert_eq!(create(GLOBEX, "g1").await.status, 201);
    assert_eq!(create(GLOBEX, "g2").await.status, 201);
    let refused = create(GLOBEX, "g3").await;
    assert_problem(&refused, 403, None);
    assert!(
        refused.body["type"].as_str().unwrap().ends_with("quota-exceeded"),
        "{}",
        refused.body
    );
    assert!(
        refused.body["detail"].as_str().unwrap().contains("3 webhooks"),
        "{}",
        refused.body
    );
    // Another tenant is not affected.
    assert_eq!(create(ACME, "a1").await.status, 201);
    // Deleting frees a place, through the API...
    api.ok(Method::DELETE, "/v1/webhooks/g1", GLOBEX, None).await;
    assert_eq!(create(GLOBEX, "g3").await.status, 201);
    assert_problem(&create(GLOBEX, "g4").await, 403, None);
    // ...or by another writer, which never touches the tenant's set.
    let () = redis::pipe()
        .del(format!("{}webhook:older", env.prefix))
        .srem(format!("{}webhooks", env.prefix), "older")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(create(GLOBEX, "g4").await.status, 201);
    assert_problem(&create(GLOBEX, "g5").await, 403, None);
    // Redis loses the sets (a restart without persistence, a flush): the
    // next read of the change log notices and fills them again, and the
    // quota holds.
    let () = redis::pipe()
        .del(format!("{}tenant:globex:webhooks", env.prefix))
        .del(format!("{}tenants:indexed", env.prefix))
        .query_async(&mut conn)
        .await
        .unwrap();
    eventually(Duration::from_secs(10), "the tenant sets filled again", || async {
        let n: usize = redis::cmd("SCARD")
            .arg(format!("{}tenant:globex:webhooks", env.prefix))
            .query_async(&mut conn.clone())
            .await
            .unwrap();
        (n == 3).then_some(())
    })
    .await;
    assert_problem(&create(GLOBEX, "g5").await, 403, None);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_list_reads_only_its_own_documents_and_follows_other_writers() {
    let env = tenant_env("tenant-index").await;
    // No periodic re-sync during the test: only what a list reads touches a document.
    let app = env.spawn("[subscriptions]\nresync_interval = \"1h\"").await;
    let api = Api::new(&app);
    // Named by the operator, so the test knows their documents' keys.
    for (tenant, id) in [("acme", "a1"), ("acme", "a2"), ("globex", "g1")] {
        api.ok(
            Method::POST,
            "/v1/webhooks",
            OPS,
            Some(json!({"id": id, "tenant": tenant, "name": id, "url": "https://example.com/", "events": ["*"]})),
        )
        .await;
    }
    // Another service writes, and announces, a webhook of acme's.
    let mut conn = env.redis().await;
    let mut direct = webhook("a3", "https://example.com/", &["*"]);
    direct.tenant = Some("acme".into());
    let () = redis::pipe()
        .atomic()
        .set(
            format!("{}webhook:a3", env.prefix),
            serde_json::to_string(&direct).unwrap(),
        )
        .sadd(format!("{}webhooks", env.prefix), "a3")
        .publish(format!("{}webhooks:changed", env.prefix), "a3")
        .query_async(&mut conn)
        .await
        .unwrap();
    let listed = |token: &'static str| {
        let api = &api;
        async move {
            let page = api.ok(Method::GET, "/v1/webhooks", token, None).await;
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    eventually(
        Duration::from_secs(5),
        "the other writer's webhook in acme's list",
        || async { (listed(ACME).await == ["a1", "a2", "a3"]).then_some(()) },
    )
    .await;

    // A document is read when it is listed: globex's is not, by acme's list.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    listed(ACME).await;
    let idle = |id: &'static str| {
        let key = format!("{}webhook:{id}", env.prefix);
        let mut conn = conn.clone();
        async move {
            let seconds: i64 = redis::cmd("OBJECT")
                .arg("IDLETIME")
                .arg(key)
                .query_async(&mut conn)
                .await
                .unwrap();
            seconds
        }
    };
    assert!(idle("a1").await < 2, "acme's own document was read");
    assert!(idle("g1").await >= 2, "globex's document was not read by acme's list");

    // The other writer deletes it: gone from the list and from the quota's count.
    let () = redis::pipe()
        .atomic()
        .del(format!("{}webhook:a3", env.prefix))
        .srem(format!("{}webhooks", env.prefix), "a3")
        .publish(format!("{}webhooks:changed", env.prefix), "a3")
        .query_async(&mut conn)
        .await
        .unwrap();
    eventually(Duration::from_secs(5), "a3 out of acme's set", || async {
        let members: Vec<String> = redis::cmd("SMEMBERS")
            .arg(format!("{}tenant:acme:webhooks", env.prefix))
            .query_async(&mut conn.clone())
            .await
            .unwrap();
        (members.len() == 2).then_some(())
    })
    .await;
    assert_eq!(listed(ACME).await, ["a1", "a2"]);
    assert_eq!(listed(GLOBEX).await, ["g1"]);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_pings_share_the_replicas_request_slots() {
    let env = tenant_env("ping-slots").await;
    let app = env
        .spawn("[delivery]\nmax_in_flight = 1\nmax_queue_wait = \"1s\"\nrequest_timeout = \"30s\"")
        .await;
    let api = Api::new(&app);
    let hanging = TestReceiver::start(Behaviour::Hang).await;
    let healthy = TestReceiver::ok().await;
    put(&env, "slow", Some("globex"), &hanging.url("/slow")).await;
    api.ok(
        Method::POST,
        "/v1/webhooks",
        ACME,
        Some(json!({"uid": "pinged", "name": "p", "url": healthy.url("/p"), "events": ["tour.*"]})),
    )
    .await;
    app.wait_webhooks(2).await;
    Publisher::new()
        .json(env.topic(), &jimo("tour.started", "globex", "e1"))
        .await;
    hanging.wait_for(1, Duration::from_secs(20)).await;
    // The only slot is held by globex's hanging delivery: the ping waits its
    // max_queue_wait, like any delivery, instead of going around the limit.
    let ping = api
        .ok(
            Method::POST,
            "/v1/webhooks/pinged/test",
            ACME,
            Some(json!({"event_type": "tour.started"})),
        )
        .await;
    assert_eq!(ping["class"], "saturated", "{ping}");
    assert_eq!(healthy.count(), 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_sharing_a_host_reuse_as_many_connections_as_the_host_may_use_at_once() {
    let env = TestEnv::new("shared-host-pool", &["events"], 1).await;
    // Ten webhooks of 16 requests each on one host, capped at 64 at once:
    // more than the 32 connections a host kept idle before the pool
    // followed the cap.
    let app = env.spawn("[delivery]\nmax_in_flight_per_host = 64").await;
    let receiver = TestReceiver::start(Behaviour::Delay(Duration::from_millis(20), 204)).await;
    for i in 0..10 {
        put(&env, &format!("w{i}"), None, &receiver.url(&format!("/w{i}"))).await;
    }
    app.wait_webhooks(10).await;
    // Waves: each keeps the host at its cap, then leaves every connection
    // idle, as bursts of events do. A pool keeping fewer idle than were
    // busy closes the rest, and the next wave opens them again.
    let publisher = Publisher::new();
    let (waves, per_wave) = (5, 20);
    for wave in 0..waves {
        for i in 0..per_wave {
            publisher
                .json(
                    env.topic(),
                    &format!(r#"{{"event":"tour.started","version":"0","id":"e{wave}-{i}"}}"#),
                )
                .await;
        }
        receiver
            .wait_for((wave + 1) * per_wave * 10, Duration::from_secs(60))
            .await;
        // Answered (20 ms) and back in the pool.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (at_once, connections) = (receiver.most_at_once(), receiver.connections());
    assert!(at_once <= 64, "the host's cap: {at_once} at once");
    // Each wave reuses the last one's connections; a few more may open when
    // a request is sent before a finished one's connection is back in the
    // pool.
    assert!(
        connections <= at_once + at_once / 2,
        "{connections} connections in {waves} waves of at most {at_once} requests at once"
    );
    app.stop().await;
}

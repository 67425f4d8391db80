//! What must not leak: secrets in a webhook's URL, the Redis password,
//! metric series of a caller's choosing, and anything of one tenant to
//! another (its catalog, its statistics, which webhook ids it uses).

use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use crate::api::*;
use crate::helpers::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_in_a_webhook_url_never_leaves_the_webhook_document() {
    let env = TestEnv::new("url-secret", &["events"], 1)
        .await
        .with_tiers(&[Tier::after_ms(300)])
        .await;
    let app = env.spawn(&admin_overlay("24h")).await;
    let api = Api::new(&app);
    // Slack- and Discord-style: the path and query are the credential. Nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/services/T0/B0/credential-in-path-7f3a?token=credential-in-query-9c1e");
    api.ok(
        Method::POST,
        "/v1/webhooks",
        OPS,
        Some(json!({"id": "slack", "name": "slack", "url": url, "events": ["*"]})),
    )
    .await;
    app.wait_webhooks(1).await;
    Publisher::new()
        .json(env.topic(), r#"{"event":"tour.completed","version":"0"}"#)
        .await;

    let letters = read_topic(&env.dlq, 1, Duration::from_secs(30)).await;
    assert_eq!(letters[0].header("herald.last.class"), "network");
    assert!(
        letters[0]
            .header("herald.last.error")
            .contains(&format!("127.0.0.1:{port}/…")),
        "the origin is named: {}",
        letters[0].header("herald.last.error")
    );
    let mut seen = Vec::new();
    for letter in &letters {
        for (name, value) in &letter.headers {
            seen.push(format!("dead letter {name}: {value}"));
        }
    }
    for event in read_topic(&env.system, 1, Duration::from_secs(10)).await {
        seen.push(format!("system event: {}", String::from_utf8_lossy(&event.value)));
    }
    let history = eventually(Duration::from_secs(10), "two attempts in the history", || async {
        let page = api.ok(Method::GET, "/v1/webhooks/slack/deliveries", OPS, None).await;
        (page["data"].as_array().unwrap().len() == 2).then_some(page)
    })
    .await;
    seen.push(format!("history: {history}"));
    let test = api
        .ok(
            Method::POST,
            "/v1/webhooks/slack/test",
            OPS,
            Some(json!({"event_type": "tour.completed"})),
        )
        .await;
    assert_eq!(test["class"], "network");
    seen.push(format!("test ping: {test}"));
    seen.push(format!("metrics: {}", app.metrics().await));
    for place in &seen {
        assert!(!place.contains("credential-in"), "leaked: {place}");
    }
    // The document itself keeps it, for the owner.
    let webhook = api.ok(Method::GET, "/v1/webhooks/slack", OPS, None).await;
    assert_eq!(webhook["url"], url.as_str());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_password_never_reaches_an_error() {
    let env = TestEnv::new("redis-secret", &["events"], 1).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The test configuration has its own [redis] table: the URL comes from the environment.
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut file, (env.config_toml() + &admin_overlay("24h")).as_bytes()).unwrap();
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .arg("--config")
            .arg(file.path())
            .arg("api")
            .env(
                "HERALD_REDIS__URL",
                format!("redis://:topsecretpw@127.0.0.1:{closed}/0"),
            )
            .env("HERALD_ADMIN__LISTEN", "127.0.0.1:0")
            .output(),
    )
    .await
    .expect("herald api gives up on an unreachable Redis")
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("cannot connect to Redis at redis://:***@127.0.0.1"),
        "{stderr}"
    );
    assert!(!stderr.contains("topsecretpw"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_own_http_methods_make_no_metric_series() {
    let env = TestEnv::new("methods", &["events"], 1).await;
    let app = env.spawn(&admin_overlay("24h")).await;
    let api = Api::new(&app);
    for method in ["ZZPROBE1", "ZZPROBE2"] {
        let reply = api
            .raw(
                Method::from_bytes(method.as_bytes()).unwrap(),
                "/v1/webhooks",
                None,
                None,
            )
            .await;
        assert!(reply.status.is_client_error(), "{method}: {}", reply.status);
    }
    let text = app.metrics().await;
    assert!(!text.contains("ZZPROBE"), "a caller chose series");
    assert!(text.contains(r#"method="other""#));
    app.stop().await;
}

/// Catalogs per tenant: acme is bound to `jimo` (in [`admin_overlay`]),
/// globex to `iam`.
fn catalogs_overlay() -> String {
    admin_overlay("24h") + "[admin.tenants.globex]\ncatalog = \"iam\"\n"
}

fn names(list: &serde_json::Value) -> Vec<&str> {
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_token_sees_and_uses_only_its_own_catalog() {
    let env = TestEnv::new("catalogs", &["events"], 1).await;
    let app = env.spawn(&catalogs_overlay()).await;
    let api = Api::new(&app);
    let receiver = TestReceiver::ok().await;

    let all = api.ok(Method::GET, "/v1/catalogs", OPS, None).await;
    assert_eq!(names(&all), ["iam", "jam", "jimo"]);
    assert_eq!(names(&api.ok(Method::GET, "/v1/catalogs", ACME, None).await), ["jimo"]);
    assert_eq!(names(&api.ok(Method::GET, "/v1/catalogs", GLOBEX, None).await), ["iam"]);
    api.ok(Method::GET, "/v1/catalogs/iam", GLOBEX, None).await;
    api.ok(Method::GET, "/v1/catalogs/iam", OPS, None).await;
    // Another tenant's catalog, and one nobody's, answer alike.
    let missing = api.call(Method::GET, "/v1/catalogs/none", ACME, None).await;
    assert_problem(&missing, 404, None);
    for (token, other) in [(ACME, "iam"), (ACME, "jam"), (GLOBEX, "jimo")] {
        let reply = api
            .call(Method::GET, &format!("/v1/catalogs/{other}"), token, None)
            .await;
        assert_problem(&reply, 404, None);
        assert_eq!(
            (&reply.body["type"], &reply.body["title"]),
            (&missing.body["type"], &missing.body["title"])
        );
    }

    // Event patterns are checked against the tenant's own catalog.
    let create = |token: &'static str, events: serde_json::Value| {
        let body = json!({"name": "n", "url": receiver.url("/c"), "events": events});
        api.call(Method::POST, "/v1/webhooks", token, Some(body))
    };
    assert_problem(&create(GLOBEX, json!(["tour.*"])).await, 422, Some("events"));
    assert_problem(&create(ACME, json!(["USER_*"])).await, 422, Some("events"));
    let globex = create(GLOBEX, json!(["USER_*"])).await;
    assert_eq!(globex.status.as_u16(), 201, "{}", globex.body);
    let acme = create(ACME, json!(["tour.*"])).await;
    assert_eq!(acme.status.as_u16(), 201, "{}", acme.body);

    // A test ping sends only an example of the webhook's own catalog to a
    // tenant token: another catalog's examples are not read out through it.
    let ping = |token: &'static str, created: &serde_json::Value, event_type: &str| {
        let path = format!("/v1/webhooks/{}/test", created["id"].as_str().unwrap());
        let body = json!({"event_type": event_type});
        let api = &api;
        async move { api.call(Method::POST, &path, token, Some(body)).await }
    };
    assert_problem(
        &ping(GLOBEX, &globex.body, "tour.completed").await,
        422,
        Some("event_type"),
    );
    assert_problem(&ping(ACME, &acme.body, "USER_CREATED").await, 422, Some("event_type"));
    assert_eq!(receiver.count(), 0, "no example of another catalog was sent");
    let own = ping(GLOBEX, &globex.body, "USER_CREATED").await;
    assert_eq!(own.body["succeeded"], true, "{}", own.body);
    // An admin token may ping with any catalog's example.
    let any = ping(OPS, &globex.body, "tour.completed").await;
    assert_eq!(any.body["succeeded"], true, "{}", any.body);
    assert_eq!(receiver.count(), 2);
    app.stop().await;
}

/// The tenant statistics of `tenant`, read with its own token.
async fn tenant_stats(api: &Api, tenant: &str, token: &str) -> (u64, u64) {
    let stats = api
        .ok(Method::GET, &format!("/v1/tenants/{tenant}/stats"), token, None)
        .await;
    let hour = &stats["last_hour"];
    (hour["succeeded"].as_u64().unwrap(), hour["failed"].as_u64().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_statistics_count_the_deliveries_of_the_tenants_own_webhooks() {
    let mut env = TestEnv::new("tenant-stats", &["events"], 1).await;
    env.overlay = TENANT_HEADER_RULES.into();
    let app = env.spawn(&admin_overlay("24h")).await;
    let api = Api::new(&app);
    let (everyone, globex_receiver) = (TestReceiver::ok().await, TestReceiver::ok().await);
    // The platform's own webhook of no tenant receives every tenant's events.
    let global = api
        .create(
            OPS,
            json!({"name": "audit", "url": everyone.url("/all"), "events": ["*"]}),
        )
        .await;
    let globex = api
        .create(
            GLOBEX,
            json!({"name": "orders", "url": globex_receiver.url("/g"), "events": ["order.*"]}),
        )
        .await;
    app.wait_webhooks(2).await;

    // An event of acme goes to the platform's webhook...
    Publisher::new()
        .tenant_event(env.topic(), "acme", br#"{"event":"order.paid","version":"0","time":1}"#)
        .await;
    everyone.wait_for(1, Duration::from_secs(20)).await;
    // ...and is delivered again to globex's webhook, through the call that
    // manual retries and replays use (bound to globex's webhook, the event
    // still acme's).
    let config = env.config(&admin_overlay("24h"));
    let record = herald::kafka::read_record(&config.kafka, env.topic(), 0, 0)
        .await
        .unwrap()
        .expect("the event is retained");
    let meta = herald::routing::envelope::Envelopes::new(&config.envelope)
        .unwrap()
        .for_topic(env.topic())
        .recognise(&record)
        .unwrap();
    assert_eq!(meta.tenant.as_deref(), Some("acme"));
    let globex_webhook = env
        .store()
        .await
        .get(globex["id"].as_str().unwrap())
        .await
        .unwrap()
        .unwrap();
    let sink = herald::retry::sink::FailureSink::new(
        herald::kafka::SharedProducer::new(&config.kafka).unwrap(),
        &config.dead_letter,
        herald::retry::sink::Topics::of(&config),
        herald::telemetry::Telemetry::new(&config.kafka.topics, config.ops.max_tenant_series),
    );
    let again = herald::retry::redrive::Again {
        record: &record,
        meta: &meta,
        binding: herald::retry::codec::Binding::of(&globex_webhook),
        delivery_id: "msg_acme_event_for_globex",
        attempts: 1,
        by: "ops",
    };
    herald::retry::redrive::deliver_again(&sink, again, &tokio_util::sync::CancellationToken::new())
        .await
        .unwrap();
    globex_receiver.wait_for(1, Duration::from_secs(20)).await;

    // Once both webhooks' own statistics show their delivery (a tenant's
    // counts are written in the same flush), the tenants' are final.
    for (webhook, token) in [(&global, OPS), (&globex, GLOBEX)] {
        let path = format!("/v1/webhooks/{}/stats", webhook["id"].as_str().unwrap());
        eventually(Duration::from_secs(10), "the webhook's statistics", || async {
            let stats = api.ok(Method::GET, &path, token, None).await;
            (stats["last_hour"]["succeeded"] == 1).then_some(())
        })
        .await;
    }
    assert_eq!(
        tenant_stats(&api, "acme", ACME).await,
        (0, 0),
        "acme has no webhook: no delivery is its own"
    );
    assert_eq!(tenant_stats(&api, "globex", GLOBEX).await, (1, 0));
    // The attempt is in globex's history, as globex's.
    let path = format!("/v1/webhooks/{}/deliveries", globex["id"].as_str().unwrap());
    let history = api.ok(Method::GET, &path, GLOBEX, None).await;
    assert_eq!(history["data"][0]["tenant"], "globex", "{history}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_never_learns_which_ids_other_tenants_use() {
    let env = TestEnv::new("tenant-ids", &["events"], 1).await;
    let app = env.spawn(&admin_overlay("24h")).await;
    let api = Api::new(&app);
    let receiver = TestReceiver::ok().await;
    let url = receiver.url("/ids");
    let post = |token: &'static str, body: serde_json::Value| api.call(Method::POST, "/v1/webhooks", token, Some(body));
    // An operator chose the id `acme-orders` for one of acme's webhooks.
    let taken = post(
        OPS,
        json!({"id": "acme-orders", "tenant": "acme", "name": "n", "url": url, "events": ["*"]}),
    )
    .await;
    assert_eq!(taken.status.as_u16(), 201, "{}", taken.body);

    // globex asking for that id, and for one nobody uses, gets one answer.
    let with_id = |id: &str| json!({"id": id, "name": "n", "url": url, "events": ["*"]});
    let on_taken = post(GLOBEX, with_id("acme-orders")).await;
    let on_free = post(GLOBEX, with_id("nobody-uses-this")).await;
    assert_eq!(
        (on_taken.status, &on_taken.body),
        (on_free.status, &on_free.body),
        "an id taken in another tenant answers as a free one"
    );
    assert_problem(&on_taken, 422, Some("id"));
    let globex_list = api.ok(Method::GET, "/v1/webhooks", GLOBEX, None).await;
    assert_eq!(globex_list["data"], json!([]));

    // Tenants name their webhooks with uids, each tenant its own: the same
    // uid in two tenants names two webhooks.
    let with_uid = |uid: &str, events: &str| json!({"uid": uid, "name": "n", "url": url, "events": [events]});
    let acme = post(ACME, with_uid("orders", "tour.*")).await;
    let globex = post(GLOBEX, with_uid("orders", "order.*")).await;
    assert_eq!(
        (acme.status.as_u16(), globex.status.as_u16()),
        (201, 201),
        "{} {}",
        acme.body,
        globex.body
    );
    assert_ne!(acme.body["id"], globex.body["id"]);
    assert_eq!(
        (&acme.body["uid"], &globex.body["uid"]),
        (&json!("orders"), &json!("orders"))
    );
    // A retried create within the tenant is a conflict (nothing is created twice).
    assert_problem(&post(ACME, with_uid("orders", "tour.*")).await, 409, None);

    // Each tenant's uid names its own webhook in every path.
    let by_uid = |token: &'static str| api.call(Method::GET, "/v1/webhooks/orders", token, None);
    assert_eq!(by_uid(ACME).await.body["id"], acme.body["id"]);
    assert_eq!(by_uid(GLOBEX).await.body["events"], json!(["order.*"]));
    let changed = api
        .ok(
            Method::PATCH,
            "/v1/webhooks/orders",
            GLOBEX,
            Some(json!({"name": "renamed"})),
        )
        .await;
    assert_eq!(changed["id"], globex.body["id"]);
    api.ok(Method::GET, "/v1/webhooks/orders/stats", GLOBEX, None).await;

    // Another tenant's webhooks, by id or uid, answer as missing ones do.
    let missing = api
        .call(Method::GET, "/v1/webhooks/nobody-uses-this", GLOBEX, None)
        .await;
    assert_problem(&missing, 404, None);
    let acme_id = acme.body["id"].as_str().unwrap();
    for path in [
        "/v1/webhooks/acme-orders".to_owned(),
        format!("/v1/webhooks/{acme_id}"),
        format!("/v1/webhooks/{acme_id}/secret"),
    ] {
        let reply = api.call(Method::GET, &path, GLOBEX, None).await;
        assert_problem(&reply, 404, None);
        assert_eq!(reply.body["type"], missing.body["type"], "{path}");
    }
    // An operator cannot take the ids uids are given.
    assert_problem(&post(OPS, with_id(acme_id)).await, 422, Some("id"));

    // Deleting by uid frees the uid for the tenant alone.
    let deleted = api.call(Method::DELETE, "/v1/webhooks/orders", ACME, None).await;
    assert_eq!(deleted.status.as_u16(), 204);
    assert_problem(&by_uid(ACME).await, 404, None);
    assert_eq!(by_uid(GLOBEX).await.status.as_u16(), 200);
    let again = post(ACME, with_uid("orders", "tour.*")).await;
    assert_eq!(again.status.as_u16(), 201, "{}", again.body);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_with_a_key_twice_is_dead_lettered_never_delivered() {
    let mut env = TestEnv::new("duplicate-keys", &["events"], 1).await;
    env.overlay = "[envelope.default]\npreset = \"jam\"\n".into();
    let (to_a, to_b) = (TestReceiver::ok().await, TestReceiver::ok().await);
    let store = env.store().await;
    store.put(&webhook("a", &to_a.url("/a"), &["a"])).await.unwrap();
    store.put(&webhook("b", &to_b.url("/b"), &["b"])).await.unwrap();
    let app = env.spawn("").await;
    // Herald would read `a` (the first); most receivers read `b` (the last).
    let ambiguous = br#"{"type":"a","type":"b"}"#;
    let publisher = Publisher::new();
    publisher.send(env.topic(), Some("k"), ambiguous, &[]).await;
    publisher.json(env.topic(), r#"{"type":"b","id":"evt_after"}"#).await;

    let letters = read_topic(&env.dlq, 1, Duration::from_secs(20)).await;
    assert_eq!(letters.len(), 1, "dead-lettered");
    let letter = &letters[0];
    assert_eq!(letter.header(herald::retry::codec::headers::REASON), "ambiguous_json");
    assert_eq!(letter.value, ambiguous, "kept byte for byte");
    assert!(
        letter
            .header(herald::retry::codec::headers::DETAIL)
            .contains("`type` appears more than once"),
        "{:?}",
        letter
    );
    // The next event goes through; the ambiguous one reached neither subscriber.
    let got = to_b.wait_for(1, Duration::from_secs(20)).await;
    assert!(got[0].body.ends_with(br#""evt_after"}"#));
    assert_eq!(
        app.metric(r#"herald_events_unroutable_total{reason="ambiguous_json"}"#)
            .await,
        1.0
    );
    // A record is routed or dead-lettered, never both: with its dead letter
    // read, it can reach no receiver any more.
    assert_eq!((to_a.count(), to_b.count()), (0, 1));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_document_is_missing_to_a_tenant_token() {
    let env = TestEnv::new("tenant-malformed", &["events"], 1).await;
    let mut conn = env.redis().await;
    let () = redis::pipe()
        .set(format!("{}webhook:broken", env.prefix), "{\"id\":\"broken\",\"url\":")
        .sadd(format!("{}webhooks", env.prefix), "broken")
        .query_async(&mut conn)
        .await
        .unwrap();
    let app = env.spawn(&admin_overlay("24h")).await;
    let api = Api::new(&app);
    let missing = api.call(Method::GET, "/v1/webhooks/nothing-here", ACME, None).await;
    let broken = api.call(Method::GET, "/v1/webhooks/broken", ACME, None).await;
    assert_problem(&broken, 404, None);
    assert_eq!(
        broken.body["title"], missing.body["title"],
        "as a missing one: {}",
        broken.body
    );
    // An operator is told it is broken.
    assert_eq!(
        api.call(Method::GET, "/v1/webhooks/broken", OPS, None).await.status,
        503
    );
    app.stop().await;
}

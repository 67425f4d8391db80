//! Tenants and their tokens made at run time: kept in Redis (token digests
//! only), made on one replica and holding on another at once, configured
//! ones read-only, deletes that take the tokens along, and documents that
//! another writer broke.

use std::time::Duration;

use redis::AsyncCommands;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::api::*;
use crate::helpers::*;

const PORTAL_KEY: &str = "tenants-portal-key-4f1d9a7c2e6b8035";

fn overlay() -> String {
    admin_overlay("24h")
        + &format!("[portal]\nsigning_key = \"{PORTAL_KEY}\"\n")
        + "[envelope.default]\npreset = \"jimo\"\ntenant = \"/tenant\"\n"
}

/// Every string stored under `prefix`, whatever its key's type.
async fn everything_stored(env: &TestEnv) -> String {
    let mut conn = env.redis().await;
    let keys: Vec<String> = conn.keys(format!("{}*", env.prefix)).await.unwrap();
    let mut all = String::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query_async(&mut conn).await.unwrap();
        let values: Vec<String> = match kind.as_str() {
            "string" => vec![conn.get(&key).await.unwrap()],
            "hash" => {
                let h: std::collections::HashMap<String, String> = conn.hgetall(&key).await.unwrap();
                h.into_iter().flat_map(|(k, v)| [k, v]).collect()
            }
            "set" => conn.smembers(&key).await.unwrap(),
            "zset" => conn.zrange(&key, 0, -1).await.unwrap(),
            _ => Vec::new(),
        };
        all.push_str(&key);
        all.push('\n');
        for v in values {
            all.push_str(&v);
            all.push('\n');
        }
    }
    all
}

/// The `frame-ancestors` a portal page answers with.
async fn frame_ancestors(base: &str, url: &str) -> String {
    let url = if url.starts_with('/') {
        format!("{base}{url}")
    } else {
        url.to_owned()
    };
    let page = reqwest::get(&url).await.unwrap();
    assert_eq!(page.status(), StatusCode::OK, "{url}");
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    csp.split(';')
        .map(str::trim)
        .find_map(|d| d.strip_prefix("frame-ancestors "))
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_and_its_token_made_on_one_replica_hold_on_another_at_once() {
    let env = TestEnv::new("tenants-replicas", &["events"], 1).await;
    let one = env.spawn(&overlay()).await;
    let other = ApiOnly::start(&env, &overlay()).await;
    let (a, b) = (Api::new(&one), &other.api);

    // Created on one replica, with its own catalog, quota and framing.
    let settings = json!({"catalog": "jimo", "max_webhooks": 2, "frame_ancestors": ["https://app.initech.example"]});
    let created = a
        .call(Method::PUT, "/v1/tenants/initech", OPS, Some(settings.clone()))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    assert_eq!(created.body["source"], "api");
    assert_eq!(created.body["catalog"], "jimo");
    assert_eq!(created.body["max_webhooks"], 2);
    assert_eq!(created.body["created_by"], "ops");
    assert_eq!(created.body["webhooks"], 0);
    let again = a.call(Method::PUT, "/v1/tenants/initech", OPS, Some(settings)).await;
    assert_eq!(again.status, StatusCode::OK, "the same PUT again changes nothing");
    assert_eq!(again.body["created_at"], created.body["created_at"]);

    let issued = a
        .call(
            Method::POST,
            "/v1/tenants/initech/tokens",
            OPS,
            Some(json!({"name": "ci"})),
        )
        .await;
    assert_eq!(issued.status, StatusCode::CREATED, "{}", issued.body);
    let token = issued.body["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("hrld_") && token.len() > 40, "{token}");
    let unused = a.ok(Method::GET, "/v1/tenants/initech/tokens", OPS, None).await;
    assert_eq!(unused["data"][0]["last_used_at"], Value::Null, "{unused}");
    let stored = everything_stored(&env).await;
    assert!(
        !stored.contains(&token["hrld_".len()..]),
        "Redis holds only the token's digest"
    );
    assert!(stored.contains(&hex::encode(<sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()))));

    // The other replica knows the token and the tenant's settings at once.
    let own = b.ok(Method::GET, "/v1/tenants/initech", &token, None).await;
    assert_eq!(own["max_webhooks"], 2);
    assert_problem(&b.call(Method::GET, "/v1/tenants/acme", &token, None).await, 404, None);
    assert_problem(&b.call(Method::GET, "/v1/tenants", &token, None).await, 403, None);
    assert_problem(
        &b.call(
            Method::PUT,
            "/v1/tenants/initech",
            &token,
            Some(json!({"max_webhooks": 900})),
        )
        .await,
        403,
        None,
    );
    assert_problem(
        &b.call(
            Method::POST,
            "/v1/tenants/initech/tokens",
            &token,
            Some(json!({"name": "mine"})),
        )
        .await,
        403,
        None,
    );
    let receiver = TestReceiver::start(Behaviour::Status(200)).await;
    let hook = |n: u32, events: Value| json!({"name": format!("h{n}"), "url": receiver.url(&format!("/h{n}")), "events": events});
    assert_problem(
        &b.call(
            Method::POST,
            "/v1/webhooks",
            &token,
            Some(hook(0, json!(["invoice.paid"]))),
        )
        .await,
        422,
        Some("events"),
    );
    for n in 1..=2 {
        let webhook = b.create(&token, hook(n, json!(["tour.*"]))).await;
        assert_eq!(webhook["tenant"], "initech");
    }
    let over = b
        .call(Method::POST, "/v1/webhooks", &token, Some(hook(3, json!(["tour.*"]))))
        .await;
    assert_problem(&over, 403, None);

    // A new quota set on one replica holds on the other from its next
    // request; the settings not named stay as they were.
    let patched = a
        .ok(
            Method::PATCH,
            "/v1/tenants/initech",
            OPS,
            Some(json!({"max_webhooks": 3})),
        )
        .await;
    assert_eq!(patched["catalog"], "jimo", "{patched}");
    assert_eq!(patched["frame_ancestors"], json!(["https://app.initech.example"]));
    assert_eq!(patched["updated_by"], "ops");
    b.create(&token, hook(3, json!(["tour.*"]))).await;
    let webhooks = b.ok(Method::GET, "/v1/webhooks", &token, None).await;
    assert_eq!(webhooks["data"].as_array().unwrap().len(), 3);
    let theirs = a.ok(Method::GET, "/v1/webhooks", ACME, None).await;
    assert!(
        theirs["data"].as_array().unwrap().is_empty(),
        "acme sees none of initech's"
    );

    // The pipeline delivers to the webhooks of a tenant made at run time.
    one.wait_webhooks(3).await;
    Publisher::new()
        .json(
            env.topic(),
            r#"{"event":"tour.completed","version":"0","time":1,"id":"evt_t1","tenant":"initech"}"#,
        )
        .await;
    receiver.wait_for(3, Duration::from_secs(20)).await;

    // The tenant's portal pages take its framing setting, changed at run time.
    let session = b
        .ok(Method::POST, "/v1/tenants/initech/portal-sessions", &token, None)
        .await;
    let url = session["url"].as_str().unwrap();
    assert_eq!(frame_ancestors(&a.base, url).await, "https://app.initech.example");
    a.ok(
        Method::PATCH,
        "/v1/tenants/initech",
        OPS,
        Some(json!({"frame_ancestors": ["'self'"]})),
    )
    .await;
    assert_eq!(frame_ancestors(&b.base, url).await, "'self'");
    // `null` returns a setting to the deployment's default.
    let reset = a
        .ok(
            Method::PATCH,
            "/v1/tenants/initech",
            OPS,
            Some(json!({"frame_ancestors": null})),
        )
        .await;
    assert_eq!(reset["settings"], json!({"catalog": "jimo", "max_webhooks": 3}));

    // Listed without the token; revoked on one replica, refused on the other.
    let tokens = eventually(Duration::from_secs(5), "the token's use to be noted", || async {
        let tokens = a.ok(Method::GET, "/v1/tenants/initech/tokens", OPS, None).await;
        tokens["data"][0]["last_used_at"].is_string().then_some(tokens)
    })
    .await;
    assert_eq!(tokens["data"][0]["name"], "ci");
    assert_eq!(tokens["data"][0]["last4"], token[token.len() - 4..]);
    assert!(!tokens.to_string().contains(&token));
    let revoked = a.call(Method::DELETE, "/v1/tenants/initech/tokens/ci", OPS, None).await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    assert_problem(&b.call(Method::GET, "/v1/webhooks", &token, None).await, 401, None);
    assert_problem(&a.call(Method::GET, "/v1/webhooks", &token, None).await, 401, None);
    assert_problem(
        &a.call(Method::DELETE, "/v1/tenants/initech/tokens/ci", OPS, None).await,
        404,
        None,
    );
    // Tokens from the configuration keep working beside them.
    b.ok(Method::GET, "/v1/webhooks", ACME, None).await;
    assert_eq!(
        one.metric("herald_admin_changes_total{action=\"token_revoked\"}").await,
        1.0
    );
    assert_eq!(
        one.metric("herald_admin_changes_total{action=\"tenant_created\"}")
            .await,
        1.0
    );
    other.stop().await;
    one.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_is_deleted_only_without_webhooks_and_its_tokens_go_with_it() {
    let env = TestEnv::new("tenants-delete", &["events"], 1).await;
    let app = env.spawn(&overlay()).await;
    let api = Api::new(&app);
    api.ok(Method::PUT, "/v1/tenants/hooli", OPS, Some(json!({}))).await;
    let mut tokens = Vec::new();
    for name in ["one", "two"] {
        let issued = api
            .ok(
                Method::POST,
                "/v1/tenants/hooli/tokens",
                OPS,
                Some(json!({"name": name})),
            )
            .await;
        tokens.push(issued["token"].as_str().unwrap().to_owned());
    }
    let webhook = api
        .create(
            &tokens[0],
            json!({"name": "h", "url": "http://127.0.0.1:9/h", "events": ["tour.completed"]}),
        )
        .await;
    let id = webhook["id"].as_str().unwrap();
    let session = api
        .ok(Method::POST, "/v1/tenants/hooli/portal-sessions", &tokens[1], None)
        .await;
    let link = format!("{}{}", api.base, session["url"].as_str().unwrap());
    assert_eq!(reqwest::get(&link).await.unwrap().status(), StatusCode::OK);
    let refused = api.call(Method::DELETE, "/v1/tenants/hooli", OPS, None).await;
    assert_problem(&refused, 409, None);
    assert!(
        refused.body["detail"].as_str().unwrap().contains("1 webhook"),
        "{}",
        refused.body
    );
    api.ok(Method::GET, "/v1/webhooks", &tokens[1], None).await;

    let deleted = api
        .call(Method::DELETE, &format!("/v1/webhooks/{id}"), &tokens[0], None)
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    // An id left in its set by another writer (document deleted straight
    // from Redis, or moved to another tenant) does not block the delete.
    let mut conn = env.redis().await;
    let mut moved = herald::webhook::Webhook::new("wh_moved", "moved", "http://127.0.0.1:9/m", &["tour.completed"]);
    moved.tenant = Some("initech".into());
    let () = redis::pipe()
        .set(
            format!("{}webhook:wh_moved", env.prefix),
            serde_json::to_string(&moved).unwrap(),
        )
        .sadd(format!("{}tenant:hooli:webhooks", env.prefix), &["wh_gone", "wh_moved"])
        .query_async(&mut conn)
        .await
        .unwrap();
    let deleted = api.call(Method::DELETE, "/v1/tenants/hooli", OPS, None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.body);
    for token in &tokens {
        assert_problem(&api.call(Method::GET, "/v1/webhooks", token, None).await, 401, None);
    }
    assert_problem(&api.call(Method::GET, "/v1/tenants/hooli", OPS, None).await, 404, None);
    // Its open portal link ends with it: it can no longer write for a
    // tenant that is gone.
    assert_eq!(reqwest::get(&link).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let stored = everything_stored(&env).await;
    assert!(!stored.contains("tenant:hooli:"), "{stored}");
    assert!(!stored.contains(&format!("{}token:", env.prefix)), "{stored}");

    // Made again under the same name, it starts without the old tokens, and
    // the old link stays dead.
    api.ok(Method::PUT, "/v1/tenants/hooli", OPS, Some(json!({}))).await;
    assert_eq!(reqwest::get(&link).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_problem(
        &api.call(Method::GET, "/v1/webhooks", &tokens[0], None).await,
        401,
        None,
    );
    let listed = api.ok(Method::GET, "/v1/tenants/hooli/tokens", OPS, None).await;
    assert_eq!(listed["data"], json!([]));

    // A webhook write whose tenant is deleted at the same moment: the write
    // checks the registration in the same script, so it never lands.
    let client = redis::Client::open(env.redis_url.as_str()).unwrap();
    let store = herald::subscriptions::store::SubscriptionStore::connect(&client, &env.prefix)
        .await
        .unwrap();
    let mut orphan = herald::webhook::Webhook::new("wh_orphan", "orphan", "http://127.0.0.1:9/o", &["tour.completed"]);
    orphan.tenant = Some("gone".into());
    let registered = format!("{}tenant:gone:settings", env.prefix);
    let created = store.create_within(&orphan, Some(10), Some(&registered)).await.unwrap();
    assert_eq!(created, herald::subscriptions::store::Created::NoTenant);
    assert!(store.get("wh_orphan").await.unwrap().is_none());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn configured_tenants_are_read_only_and_every_setting_is_checked() {
    let env = TestEnv::new("tenants-checks", &["events"], 1).await;
    let limited = overlay().replace("[admin.tenants]", "max_tokens_per_tenant = 2\n[admin.tenants]");
    let served = ApiOnly::start(&env, &limited).await;
    let api = &served.api;

    // The configured tenant is listed, and refuses changes through the API.
    let only = api.ok(Method::GET, "/v1/tenants", OPS, None).await;
    assert_eq!(only["data"].as_array().unwrap().len(), 1, "{only}");
    assert_eq!(only["data"][0]["source"], "config");
    let acme = api.ok(Method::GET, "/v1/tenants/acme", OPS, None).await;
    assert_eq!(acme["source"], "config");
    assert_eq!(acme["catalog"], "jimo");
    assert_problem(
        &api.call(Method::PUT, "/v1/tenants/acme", OPS, Some(json!({}))).await,
        409,
        None,
    );
    assert_problem(
        &api.call(Method::DELETE, "/v1/tenants/acme", OPS, None).await,
        409,
        None,
    );
    // It may hold issued tokens beside its configured one, which stays put.
    let issued = api
        .ok(
            Method::POST,
            "/v1/tenants/acme/tokens",
            OPS,
            Some(json!({"name": "deploy"})),
        )
        .await;
    let token = issued["token"].as_str().unwrap();
    let mine = api.ok(Method::GET, "/v1/tenants/acme", token, None).await;
    assert_eq!(mine["name"], "acme");
    let listed = api.ok(Method::GET, "/v1/tenants/acme/tokens", OPS, None).await;
    let names: Vec<(&str, &str)> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap(), t["source"].as_str().unwrap()))
        .collect();
    assert_eq!(names, [("acme-portal", "config"), ("deploy", "api")]);
    assert_problem(
        &api.call(Method::DELETE, "/v1/tenants/acme/tokens/acme-portal", OPS, None)
            .await,
        409,
        None,
    );
    assert_problem(
        &api.call(
            Method::POST,
            "/v1/tenants/acme/tokens",
            OPS,
            Some(json!({"name": "acme-portal"})),
        )
        .await,
        409,
        None,
    );
    assert_problem(
        &api.call(
            Method::POST,
            "/v1/tenants/acme/tokens",
            OPS,
            Some(json!({"name": "deploy"})),
        )
        .await,
        409,
        None,
    );
    api.ok(
        Method::POST,
        "/v1/tenants/acme/tokens",
        OPS,
        Some(json!({"name": "second"})),
    )
    .await;
    let third = api
        .call(
            Method::POST,
            "/v1/tenants/acme/tokens",
            OPS,
            Some(json!({"name": "third"})),
        )
        .await;
    assert_problem(&third, 409, None);
    assert!(third.body["detail"].as_str().unwrap().contains("max_tokens_per_tenant"));
    // A tenant known only from a token's `tenant` is not one to issue to.
    assert_problem(
        &api.call(
            Method::POST,
            "/v1/tenants/globex/tokens",
            OPS,
            Some(json!({"name": "x"})),
        )
        .await,
        404,
        None,
    );

    // Settings are checked before anything is written.
    let put = |name: &'static str, body: Value| api.call(Method::PUT, name, OPS, Some(body));
    assert_problem(&put("/v1/tenants/bad%20name", json!({})).await, 422, Some("name"));
    assert_problem(
        &put("/v1/tenants/t1", json!({"catalog": "nope"})).await,
        422,
        Some("catalog"),
    );
    assert_problem(
        &put("/v1/tenants/t1", json!({"max_webhooks": 0})).await,
        422,
        Some("max_webhooks"),
    );
    assert_problem(
        &put(
            "/v1/tenants/t1",
            json!({"frame_ancestors": ["https://a.example; script-src *"]}),
        )
        .await,
        422,
        Some("frame_ancestors"),
    );
    assert_problem(
        &put("/v1/tenants/t1", json!({"colour": "red"})).await,
        422,
        Some("colour"),
    );
    assert_problem(&api.call(Method::GET, "/v1/tenants/t1", OPS, None).await, 404, None);
    assert_problem(
        &api.call(
            Method::POST,
            "/v1/tenants/acme/tokens",
            OPS,
            Some(json!({"name": "old", "expires_at": "2020-01-01T00:00:00Z"})),
        )
        .await,
        422,
        Some("expires_at"),
    );

    // Changes of different settings at the same moment, on the same tenant,
    // are all kept.
    for round in 0..10 {
        api.ok(Method::PUT, "/v1/tenants/busy", OPS, Some(json!({}))).await;
        let catalog = api.call(Method::PATCH, "/v1/tenants/busy", OPS, Some(json!({"catalog": "jam"})));
        let quota = api.call(Method::PATCH, "/v1/tenants/busy", OPS, Some(json!({"max_webhooks": 9})));
        let (one, two) = tokio::join!(catalog, quota);
        assert!(
            one.status.is_success() && two.status.is_success(),
            "{} {}",
            one.body,
            two.body
        );
        let busy = api.ok(Method::GET, "/v1/tenants/busy", OPS, None).await;
        assert_eq!(
            busy["settings"],
            json!({"catalog": "jam", "max_webhooks": 9}),
            "round {round}"
        );
    }
    assert_problem(
        &api.call(Method::PATCH, "/v1/tenants/acme", OPS, Some(json!({}))).await,
        409,
        None,
    );
    assert_problem(
        &api.call(Method::PATCH, "/v1/tenants/nobody", OPS, Some(json!({})))
            .await,
        404,
        None,
    );
    assert_problem(
        &api.call(Method::PATCH, "/v1/tenants/busy", OPS, Some(json!({"catalog": "nope"})))
            .await,
        422,
        Some("catalog"),
    );
    api.ok(Method::DELETE, "/v1/tenants/busy", OPS, None).await;

    // Pages in name order, configured and created tenants merged.
    for name in ["t05", "t02", "t04", "t01", "t03"] {
        api.ok(Method::PUT, &format!("/v1/tenants/{name}"), OPS, Some(json!({})))
            .await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/tenants?limit=2&cursor={c}"),
            None => "/v1/tenants?limit=2".to_owned(),
        };
        let page = api.ok(Method::GET, &path, OPS, None).await;
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 2);
        seen.extend(data.iter().map(|t| t["name"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ["acme", "t01", "t02", "t03", "t04", "t05"]);

    // A token that expires stops working by itself.
    let soon = (time::OffsetDateTime::now_utc() + Duration::from_secs(2))
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    api.ok(Method::PUT, "/v1/tenants/t01", OPS, Some(json!({}))).await;
    let brief = api
        .ok(
            Method::POST,
            "/v1/tenants/t01/tokens",
            OPS,
            Some(json!({"name": "brief", "expires_at": soon})),
        )
        .await;
    let brief = brief["token"].as_str().unwrap();
    api.ok(Method::GET, "/v1/webhooks", brief, None).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_problem(&api.call(Method::GET, "/v1/webhooks", brief, None).await, 401, None);

    // Documents broken by another writer are named, not trusted.
    let mut conn = env.redis().await;
    let () = conn
        .hset(format!("{}tenant:t02:settings", env.prefix), "settings", "{not json")
        .await
        .unwrap();
    let broken = api.call(Method::GET, "/v1/tenants/t02", OPS, None).await;
    assert_problem(&broken, 503, None);
    assert!(
        broken.body["detail"].as_str().unwrap().contains("t02"),
        "{}",
        broken.body
    );
    let write = api
        .call(
            Method::POST,
            "/v1/webhooks",
            OPS,
            Some(json!({"name": "h", "tenant": "t02", "url": "http://127.0.0.1:9/h", "events": ["tour.completed"]})),
        )
        .await;
    assert_problem(&write, 503, None);
    let fixed = api.call(Method::PUT, "/v1/tenants/t02", OPS, Some(json!({}))).await;
    assert_eq!(fixed.status, StatusCode::OK, "a PUT replaces a broken document");
    let forged = format!("hrld_{}", "A".repeat(43));
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(forged.as_bytes()));
    let () = conn
        .set(format!("{}token:{digest}", env.prefix), "{\"tenant\":")
        .await
        .unwrap();
    assert_problem(&api.call(Method::GET, "/v1/webhooks", &forged, None).await, 401, None);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_event_id_of_two_tenants_names_two_deliveries_and_one_event_published_twice_one() {
    let env = TestEnv::new("id-per-tenant", &["events"], 1).await;
    // An operator's webhook, of no tenant: it receives every tenant's events.
    let receiver = receiving_all(&env, "ops").await;
    let rules = "[envelope.default]\npreset = \"jam\"\ntenant = \"header:tenant\"\n";
    let app = env.spawn(rules).await;
    let publisher = Publisher::new();
    let evt = br#"{"id":"evt_1","type":"invoice.paid","created_at":"2026-12-05T00:00:00Z","data":{}}"#;
    publisher.tenant_event(env.topic(), "acme", evt).await;
    publisher.tenant_event(env.topic(), "globex", evt).await;
    publisher.tenant_event(env.topic(), "acme", evt).await;
    let got = receiver.wait_for(3, Duration::from_secs(30)).await;
    // Delivered concurrently, in any order: two ids, one of them twice.
    let mut counts = std::collections::BTreeMap::new();
    for r in &got {
        *counts.entry(r.header("webhook-id").to_owned()).or_insert(0) += 1;
    }
    let mut seen: Vec<i32> = counts.values().copied().collect();
    seen.sort();
    assert_eq!(
        seen,
        [1, 2],
        "acme's evt_1 and globex's are two events, acme's published twice one: {counts:?}"
    );
    app.stop().await;
}

/// A portal link lives no longer than the token that asked for it: revoking
/// a token ends the sessions it made at once (their keys go too), and only
/// those; a token that expires takes its sessions along.
#[tokio::test(flavor = "multi_thread")]
async fn revoking_a_token_ends_the_portal_sessions_it_made() {
    let env = TestEnv::new("tenants-sessions", &["events"], 1).await;
    let served = ApiOnly::start(&env, &overlay()).await;
    let api = &served.api;
    api.ok(Method::PUT, "/v1/tenants/initech", OPS, Some(json!({}))).await;
    let issue = |body: Value| async move {
        let issued = api
            .ok(Method::POST, "/v1/tenants/initech/tokens", OPS, Some(body))
            .await;
        issued["token"].as_str().unwrap().to_owned()
    };
    let backend = issue(json!({"name": "backend"})).await;
    let other = issue(json!({"name": "other"})).await;
    let session = |token: String, body: Value| async move {
        let made = api
            .ok(Method::POST, "/v1/tenants/initech/portal-sessions", &token, Some(body))
            .await;
        let link = format!("{}{}", api.base, made["url"].as_str().unwrap());
        (link, made)
    };
    let status = |link: String| async move { reqwest::get(&link).await.unwrap().status() };
    let backends = [
        session(backend.clone(), json!({})).await,
        session(
            backend.clone(),
            json!({"capability": "read_only", "ttl_seconds": 86_400}),
        )
        .await,
    ];
    let kept = [
        session(other.clone(), json!({})).await.0,
        session(OPS.to_owned(), json!({})).await.0,
    ];
    for link in backends.iter().map(|(l, _)| l).chain(&kept) {
        assert_eq!(status(link.clone()).await, StatusCode::OK, "{link}");
    }

    let revoked = api
        .call(Method::DELETE, "/v1/tenants/initech/tokens/backend", OPS, None)
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT, "{}", revoked.body);
    let mut conn = env.redis().await;
    for (link, made) in &backends {
        assert_eq!(status(link.clone()).await, StatusCode::UNAUTHORIZED, "{link}");
        let key = format!("{}portal:session:{}", env.prefix, made["id"].as_str().unwrap());
        let left: bool = conn.exists(&key).await.unwrap();
        assert!(!left, "{key} is gone with the token");
    }
    for link in &kept {
        assert_eq!(
            status(link.clone()).await,
            StatusCode::OK,
            "another token's session: {link}"
        );
    }

    // A token that expires: its session, asked for an hour, ends with it.
    let rfc3339 = &time::format_description::well_known::Rfc3339;
    let token_expiry = time::OffsetDateTime::now_utc() + time::Duration::seconds(5);
    let short = issue(json!({"name": "short", "expires_at": token_expiry.format(rfc3339).unwrap()})).await;
    let (link, made) = session(short, json!({"ttl_seconds": 3_600})).await;
    let session_expiry = time::OffsetDateTime::parse(made["expires_at"].as_str().unwrap(), rfc3339).unwrap();
    assert!(session_expiry <= token_expiry, "{made}");
    assert_eq!(status(link.clone()).await, StatusCode::OK);
    eventually(Duration::from_secs(20), "the session to end with its token", || async {
        (status(link.clone()).await == StatusCode::UNAUTHORIZED).then_some(())
    })
    .await;
    served.stop().await;
}

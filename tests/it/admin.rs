//! The management API against a running Herald: real Redis, real broker,
//! real receivers.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::api::*;
use crate::helpers::*;
use crate::standard_webhooks::verifies;

/// Herald with the API on, a receiver answering 204, and a webhook (made by
/// the ops token) sending every event matching `events` to it at `path`;
/// returns the webhook's API path.
async fn api_with_webhook(
    env: &TestEnv,
    overlap: &str,
    path: &str,
    events: &[&str],
) -> (RunningApp, Api, TestReceiver, String) {
    let app = env.spawn(&admin_overlay(overlap)).await;
    let api = Api::new(&app);
    let receiver = TestReceiver::ok().await;
    let body = json!({"name": path, "url": receiver.url(path), "events": events});
    let created = api.ok(Method::POST, "/v1/webhooks", OPS, Some(body)).await;
    let webhook = format!("/v1/webhooks/{}", created["id"].as_str().unwrap());
    (app, api, receiver, webhook)
}

fn system_events_of(records: &[ReadRecord], webhook: &str) -> Vec<String> {
    records
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.value).unwrap())
        .filter(|v| v["webhook"]["id"] == webhook)
        .map(|v| v["event"].as_str().unwrap().to_owned())
        .collect()
}

/// The management API alone, a receiver's URL for the webhooks it creates,
/// and the webhook `Tours` that the acme tenant's token created (its path).
async fn api_with_acme_webhook(env: &TestEnv) -> (ApiOnly, String, String) {
    let served = ApiOnly::start(env, &admin_overlay("24h")).await;
    let url = "http://127.0.0.1:9/hook".to_owned();
    let body = json!({"name": "Tours", "url": url, "events": ["tour.*", "survey.completed"],
                      "headers": {"x-api-key": "k1"}});
    let created = served.api.create(ACME, body).await;
    let path = format!("/v1/webhooks/{}", created["id"].as_str().unwrap());
    (served, url, path)
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_without_a_known_token_are_refused() {
    let env = TestEnv::new("admin-auth", &["events"], 1).await;
    let served = ApiOnly::start(&env, &admin_overlay("24h")).await;
    let api = &served.api;
    let reply = api.raw(Method::GET, "/v1/webhooks", None, None).await;
    assert_problem(&reply, 401, None);
    assert_eq!(reply.headers.get("www-authenticate").unwrap(), "Bearer");
    assert_problem(
        &api.call(Method::GET, "/v1/webhooks", "not-a-token", None).await,
        401,
        None,
    );
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_token_creates_in_its_own_tenant_and_no_other_tenant_sees_it() {
    let env = TestEnv::new("admin-create", &["events"], 1).await;
    let served = ApiOnly::start(&env, &admin_overlay("24h")).await;
    let api = &served.api;
    let url = "http://127.0.0.1:9/hook";
    let created = api
        .call(
            Method::POST,
            "/v1/webhooks",
            ACME,
            Some(
                json!({"name": "Tours", "url": url, "events": ["tour.*", "survey.completed"],
                        "headers": {"x-api-key": "k1"}}),
            ),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("wh_"));
    assert_eq!(
        created.headers.get("location").unwrap().to_str().unwrap(),
        format!("/v1/webhooks/{id}")
    );
    assert_eq!(created.body["tenant"], "acme");
    assert_eq!(created.body["status"], "active");
    assert!(
        created.body.get("secrets").is_none(),
        "secrets are not part of the webhook view"
    );
    let path = format!("/v1/webhooks/{id}");
    assert_eq!(api.ok(Method::GET, &path, ACME, None).await["name"], "Tours");
    assert_eq!(api.ok(Method::GET, &path, OPS, None).await["name"], "Tours");
    // Another tenant's webhook does not exist for them.
    assert_problem(&api.call(Method::GET, &path, GLOBEX, None).await, 404, None);
    assert_problem(&api.call(Method::DELETE, &path, GLOBEX, None).await, 404, None);
    let reply = api
        .call(
            Method::POST,
            "/v1/webhooks",
            ACME,
            Some(json!({"tenant": "globex", "name": "x", "url": url, "events": ["*"]})),
        )
        .await;
    assert_problem(&reply, 422, Some("tenant"));
    // A tenant token never chooses an id (it names its webhooks with a uid,
    // see `security::a_tenant_never_learns_which_ids_other_tenants_use`).
    let reply = api
        .call(
            Method::POST,
            "/v1/webhooks",
            ACME,
            Some(json!({"id": id, "name": "x", "url": url, "events": ["*"]})),
        )
        .await;
    assert_problem(&reply, 422, Some("id"));
    assert!(
        served
            .metric(r#"herald_admin_requests_total{method="GET",route="/v1/webhooks/{id}",status="404"}"#)
            .await
            >= 1.0,
        "requests are counted by route template"
    );
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_webhooks_are_refused_naming_what_is_wrong() {
    let env = TestEnv::new("admin-refusals", &["events"], 1).await;
    let served = ApiOnly::start(&env, &admin_overlay("24h")).await;
    let api = &served.api;
    let url = "http://127.0.0.1:9/hook";
    let post = |body: Value| api.call(Method::POST, "/v1/webhooks", ACME, Some(body));
    let base = json!({"name": "n", "url": url, "events": ["tour.completed"]});
    let with = |k: &str, v: Value| {
        let mut b = base.clone();
        b[k] = v;
        b
    };
    assert_problem(&post(with("colour", json!("red"))).await, 422, Some("colour"));
    assert_problem(
        &post(with("events", json!("tour.completed"))).await,
        422,
        Some("events"),
    );
    assert_problem(
        &post(with("events", json!(["tour.exploded"]))).await,
        422,
        Some("events"),
    );
    assert_problem(
        &post(with("events", json!(["USER_CREATED"]))).await,
        422,
        Some("events"),
    );
    assert_problem(&post(with("events", json!([]))).await, 422, Some("events"));
    assert_problem(&post(with("url", json!("not a url"))).await, 422, Some("url"));
    assert_problem(&post(with("url", json!("ftp://example.com/x"))).await, 422, Some("url"));
    // A loopback destination the policy refuses (this test allows only 127.0.0.0/8).
    let reply = post(with("url", json!("http://[::1]:9/hook"))).await;
    assert_problem(&reply, 422, Some("url"));
    assert!(
        reply.body["detail"].as_str().unwrap().contains("SSRF"),
        "{}",
        reply.body
    );
    assert_problem(&post(with("name", json!(""))).await, 422, Some("name"));
    assert_problem(&post(with("secret", json!("not-a-secret"))).await, 422, Some("secret"));
    assert_problem(
        &post(with("headers", json!({"webhook-id": "x"}))).await,
        422,
        Some("headers"),
    );
    assert_problem(
        &post(with("limits", json!({"max_in_flight": 0}))).await,
        422,
        Some("limits"),
    );
    let reply = api
        .raw(
            Method::POST,
            "/v1/webhooks",
            Some(ACME),
            Some(("application/json", b"{\"name\":".to_vec())),
        )
        .await;
    assert_problem(&reply, 400, None);
    let reply = api
        .raw(
            Method::POST,
            "/v1/webhooks",
            Some(ACME),
            Some(("text/plain", b"{}".to_vec())),
        )
        .await;
    assert_problem(&reply, 415, None);
    let reply = post(with("name", json!("x".repeat(8192)))).await;
    assert_problem(&reply, 413, None);
    assert_problem(&api.call(Method::GET, "/v1/nothing-here", ACME, None).await, 404, None);
    assert_eq!(
        api.ok(Method::GET, "/v1/webhooks", OPS, None).await["data"],
        json!([]),
        "nothing was created"
    );
    served.stop().await;
}

/// Header values (API keys) are write-only: set and replaced through the
/// API, never read back by any token; a change that gives `null` for a
/// header keeps its stored value, so a client that reads a webhook and
/// writes its headers back keeps them all.
#[tokio::test(flavor = "multi_thread")]
async fn header_values_are_write_only_and_a_webhook_written_back_keeps_them() {
    let env = TestEnv::new("admin-headers", &["events"], 1).await;
    let (served, _, path) = api_with_acme_webhook(&env).await;
    let api = &served.api;
    let id = path.rsplit('/').next().unwrap().to_owned();
    let stored = || async { env.store().await.get(&id).await.unwrap().unwrap().headers };
    let pairs = |p: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
        p.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    };
    api.ok(
        Method::PATCH,
        &path,
        ACME,
        Some(json!({"headers": {"x-api-key": "k1-secret", "x-team": "t1-secret"}})),
    )
    .await;

    // Names only, to the tenant's token and to an admin token, in the
    // webhook and in the list.
    for token in [ACME, OPS] {
        let read = api.call(Method::GET, &path, token, None).await;
        assert_eq!(read.body["headers"], json!({"x-api-key": null, "x-team": null}));
        let list = api.call(Method::GET, "/v1/webhooks", token, None).await;
        for body in [&read.body, &list.body] {
            assert!(!body.to_string().contains("-secret"), "a value read back: {body}");
        }
    }

    // Read, change something else, write the headers back: both kept.
    let read = api.ok(Method::GET, &path, ACME, None).await;
    let written_back = api
        .ok(
            Method::PATCH,
            &path,
            ACME,
            Some(json!({"name": "Renamed", "headers": read["headers"]})),
        )
        .await;
    assert!(!written_back.to_string().contains("-secret"), "{written_back}");
    assert_eq!(
        stored().await,
        pairs(&[("x-api-key", "k1-secret"), ("x-team", "t1-secret")])
    );

    // A value replaces; `null` keeps (whatever the name's case); a header
    // left out is removed.
    api.ok(
        Method::PATCH,
        &path,
        ACME,
        Some(json!({"headers": {"x-api-key": "k2-secret", "X-Team": null}})),
    )
    .await;
    assert_eq!(
        stored().await,
        pairs(&[("X-Team", "t1-secret"), ("x-api-key", "k2-secret")])
    );
    api.ok(
        Method::PATCH,
        &path,
        ACME,
        Some(json!({"headers": {"x-api-key": null}})),
    )
    .await;
    assert_eq!(stored().await, pairs(&[("x-api-key", "k2-secret")]));

    // `null` for a header that has no value to keep is refused, and changes nothing.
    assert_problem(
        &api.call(
            Method::PATCH,
            &path,
            ACME,
            Some(json!({"headers": {"x-api-key": null, "x-new": null}})),
        )
        .await,
        422,
        Some("headers"),
    );
    assert_eq!(stored().await, pairs(&[("x-api-key", "k2-secret")]));
    served.stop().await;
}

/// Update, pause, resume and delete one webhook: each is checked, and each
/// is announced on the system topic in order.
#[tokio::test(flavor = "multi_thread")]
async fn a_webhooks_changes_are_checked_and_announced_in_order() {
    let env = TestEnv::new("admin-changes", &["events"], 1).await;
    let (served, _, path) = api_with_acme_webhook(&env).await;
    let api = &served.api;

    // Update: present fields replace, others stay; validation applies again.
    let updated = api
        .ok(
            Method::PATCH,
            &path,
            ACME,
            Some(json!({"name": "Tours and posts", "events": ["tour.*", "post.*"]})),
        )
        .await;
    assert_eq!(updated["name"], "Tours and posts");
    assert_eq!(updated["events"], json!(["tour.*", "post.*"]));
    assert_eq!(updated["headers"], json!({"x-api-key": null}), "names only");
    assert_problem(
        &api.call(Method::PATCH, &path, ACME, Some(json!({"status": "paused"})))
            .await,
        422,
        Some("status"),
    );
    assert_problem(
        &api.call(Method::PATCH, &path, ACME, Some(json!({"events": ["nope"]})))
            .await,
        422,
        Some("events"),
    );
    assert_problem(
        &api.call(Method::PATCH, &path, ACME, Some(json!({"url": "http://[::1]/"})))
            .await,
        422,
        Some("url"),
    );

    // Pause and resume.
    let paused = api.ok(Method::POST, &format!("{path}/pause"), ACME, None).await;
    assert_eq!(paused["status"], "paused");
    assert_eq!(paused["status_reason"], "paused by `acme-portal`");
    let resumed = api.ok(Method::POST, &format!("{path}/resume"), ACME, None).await;
    assert_eq!(resumed["webhook"]["status"], "active");
    assert_eq!(resumed["replay"], Value::Null);

    // Delete.
    let reply = api.call(Method::DELETE, &path, ACME, None).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_problem(&api.call(Method::GET, &path, ACME, None).await, 404, None);
    assert_problem(&api.call(Method::DELETE, &path, ACME, None).await, 404, None);

    // Every change was announced on the system topic, in order.
    let id = path.trim_start_matches("/v1/webhooks/");
    let records = read_topic(&env.system, 5, Duration::from_secs(20)).await;
    assert_eq!(
        system_events_of(&records, id),
        [
            "webhook.created",
            "webhook.updated",
            "webhook.paused",
            "webhook.resumed",
            "webhook.deleted"
        ]
    );
    let created_event: Value = serde_json::from_slice(&records[0].value).unwrap();
    assert_eq!(created_event["tenant"], "acme");
    assert!(created_event["reason"].as_str().unwrap().contains("acme-portal"));
    served.stop().await;
}

/// Who paused or disabled a webhook decides who may resume it: its tenant
/// resumes what it or Herald did, and only an operator what an operator did
/// (through the API, or as another writer of the document).
#[tokio::test(flavor = "multi_thread")]
async fn a_tenant_resumes_what_it_paused_but_never_what_an_operator_paused_or_disabled() {
    let env = TestEnv::new("admin-status-by", &["events"], 1).await;
    let (served, _, path) = api_with_acme_webhook(&env).await;
    let api = &served.api;
    let (pause, resume) = (format!("{path}/pause"), format!("{path}/resume"));
    let refused = |reply: &Reply, why: &str| {
        assert_problem(reply, 403, None);
        let detail = reply.body["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("only an operator may resume it") && detail.contains(why),
            "{}",
            reply.body
        );
    };

    // The tenant's own pause: the tenant resumes it.
    let paused = api.ok(Method::POST, &pause, ACME, None).await;
    assert_eq!(paused["status_by"], "tenant");
    let resumed = api.ok(Method::POST, &resume, ACME, None).await;
    assert_eq!(resumed["webhook"]["status"], "active");
    assert_eq!(resumed["webhook"]["status_by"], Value::Null);

    // An operator's pause: the tenant can neither resume it (with or without
    // a replay) nor make it its own by pausing again; the operator resumes it.
    let paused = api.ok(Method::POST, &pause, OPS, None).await;
    assert_eq!(paused["status_by"], "operator");
    refused(&api.call(Method::POST, &resume, ACME, None).await, "paused by `ops`");
    refused(
        &api.call(Method::POST, &resume, ACME, Some(json!({"replay": true})))
            .await,
        "paused by `ops`",
    );
    let again = api.ok(Method::POST, &pause, ACME, None).await;
    assert_eq!(again["status_by"], "operator");
    refused(&api.call(Method::POST, &resume, ACME, None).await, "paused");
    let still = api.ok(Method::GET, &path, ACME, None).await;
    assert_eq!(still["status"], "paused");
    api.ok(Method::POST, &resume, OPS, None).await;

    // The tenant pauses, an operator takes the pause over: the operator's.
    api.ok(Method::POST, &pause, ACME, None).await;
    let taken = api.ok(Method::POST, &pause, OPS, None).await;
    assert_eq!(taken["status_by"], "operator");
    refused(&api.call(Method::POST, &resume, ACME, None).await, "paused by `ops`");
    api.ok(Method::POST, &resume, OPS, None).await;

    // Another writer disables it with a reason and no `status_by` (as a
    // writer that does not know the field would): an operator's.
    let id = path.trim_start_matches("/v1/webhooks/");
    let store = env.store().await;
    let mut w = store.get(id).await.unwrap().unwrap();
    w.status = herald::webhook::WebhookStatus::Disabled;
    w.status_reason = Some("abuse report #42".into());
    w.status_by = None;
    store.put(&w).await.unwrap();
    let shown = api.ok(Method::GET, &path, ACME, None).await;
    assert_eq!(shown["status_by"], "operator");
    refused(&api.call(Method::POST, &resume, ACME, None).await, "abuse report #42");
    let resumed = api.ok(Method::POST, &resume, OPS, None).await;
    assert_eq!(resumed["webhook"]["status"], "active");
    served.stop().await;
}

/// Listing: tenants see their own; filters; cursor paging in id order.
#[tokio::test(flavor = "multi_thread")]
async fn webhooks_are_listed_per_tenant_with_filters_and_cursor_paging() {
    let env = TestEnv::new("admin-list", &["events"], 1).await;
    let (served, url, _) = api_with_acme_webhook(&env).await;
    let api = &served.api;
    let mut globex_ids = Vec::new();
    for i in 0..5 {
        let w = api
            .ok(
                Method::POST,
                "/v1/webhooks",
                GLOBEX,
                Some(json!({"name": format!("g{i}"), "url": url, "events": [format!("thing.{i}")]})),
            )
            .await;
        globex_ids.push(w["id"].as_str().unwrap().to_owned());
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/v1/webhooks?limit=2&cursor={c}"),
            None => "/v1/webhooks?limit=2".to_owned(),
        };
        let page = api.ok(Method::GET, &q, GLOBEX, None).await;
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= 2);
        seen.extend(data.iter().map(|w| w["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, globex_ids, "every page in creation order, nothing twice");
    let acme_list = api.ok(Method::GET, "/v1/webhooks", ACME, None).await;
    assert_eq!(acme_list["data"].as_array().unwrap().len(), 1);
    let acme_asks_globex = api.ok(Method::GET, "/v1/webhooks?tenant=globex", ACME, None).await;
    assert_eq!(acme_asks_globex["data"], json!([]));
    let all = api.ok(Method::GET, "/v1/webhooks?limit=500", OPS, None).await;
    assert_eq!(all["data"].as_array().unwrap().len(), 6);
    let by_event = api.ok(Method::GET, "/v1/webhooks?event=thing.3", OPS, None).await;
    assert_eq!(by_event["data"][0]["id"], globex_ids[3].as_str());
    assert_eq!(by_event["data"].as_array().unwrap().len(), 1);
    let by_status = api.ok(Method::GET, "/v1/webhooks?status=paused", OPS, None).await;
    assert_eq!(by_status["data"], json!([]));
    assert_problem(
        &api.call(Method::GET, "/v1/webhooks?limit=0", OPS, None).await,
        400,
        None,
    );
    assert_problem(
        &api.call(Method::GET, "/v1/webhooks?cursor=%%%", OPS, None).await,
        400,
        None,
    );
    assert_problem(
        &api.call(Method::GET, "/v1/webhooks?status=sleeping", OPS, None).await,
        400,
        None,
    );
    assert!(served.metric(r#"herald_admin_changes_total{action="created"}"#).await >= 6.0);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn catalogs_are_listed_and_the_openapi_document_is_served() {
    let env = TestEnv::new("admin-catalogs", &["events"], 1).await;
    let served = ApiOnly::start(&env, &admin_overlay("24h")).await;
    let api = &served.api;
    // An admin token sees every catalog (a tenant token its own, see
    // `security::a_tenant_token_sees_and_uses_only_its_own_catalog`).
    let catalogs = api.ok(Method::GET, "/v1/catalogs", OPS, None).await;
    let counts: Vec<(String, u64)> = catalogs["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["name"].as_str().unwrap().to_owned(),
                c["event_count"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        [("iam".to_owned(), 91), ("jam".to_owned(), 2), ("jimo".to_owned(), 40)]
    );
    let jimo = api.ok(Method::GET, "/v1/catalogs/jimo", ACME, None).await;
    assert_eq!(jimo["events"].as_array().unwrap().len(), 40);
    assert_problem(&api.call(Method::GET, "/v1/catalogs/none", ACME, None).await, 404, None);

    // The OpenAPI document is served without a token and is the committed one.
    let served_doc = reqwest::get(format!("{}/v1/openapi.json", api.base)).await.unwrap();
    assert!(served_doc.status().is_success());
    let served_doc: Value = serde_json::from_str(&served_doc.text().await.unwrap()).unwrap();
    let committed: Value =
        serde_json::from_str(&std::fs::read_to_string(repo_path("docs/openapi.json")).unwrap()).unwrap();
    assert!(
        served_doc == committed,
        "the served OpenAPI document differs from docs/openapi.json"
    );
    served.stop().await;
}

/// A webhook created through the API is routed once its change is
/// announced, without waiting for a periodic read of the change log (an hour
/// away here, so only the announcement can bring it within the test's 10 s).
/// Prints how long after the API's answer the replica applied the change,
/// and how long until an event published then was delivered.
#[tokio::test(flavor = "multi_thread")]
async fn a_webhook_created_through_the_api_is_routed_from_its_announcement_before_any_resync() {
    let env = TestEnv::new("admin-live", &["events"], 1).await;
    let overlay = format!("{}\n[subscriptions]\nresync_interval = \"1h\"\n", admin_overlay("24h"));
    let app = env.spawn(&overlay).await;
    let api = Api::new(&app);
    let receiver = TestReceiver::ok().await;
    let before = app.changes_applied().await;
    let body = json!({"name": "/in", "url": receiver.url("/in"), "events": ["tour.*"]});
    api.ok(Method::POST, "/v1/webhooks", OPS, Some(body)).await;
    let answered = std::time::Instant::now();
    app.wait_applied(before).await;
    let applied = answered.elapsed();
    let publisher = Publisher::new();
    publisher
        .json(
            env.topic(),
            r#"{"event":"tour.completed","version":"0","time":1740133769000,"id":"evt_live"}"#,
        )
        .await;
    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    let delivered = got[0].at - answered;
    println!(
        "from the API's answer: the change applied after {applied:?} (polled every 50 ms), \
         the first event delivered after {delivered:?}"
    );
    assert_eq!(got[0].path, "/in");
    assert!(!got[0].header("webhook-signature").is_empty());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_keeps_deliveries_and_resume_replays_them_with_the_same_ids() {
    let env = TestEnv::new("admin-pause", &["events"], 1)
        .await
        .with_tiers(&[Tier::after_ms(60_000)])
        .await;
    let (app, api, receiver, path) = api_with_webhook(&env, "24h", "/p", &["*"]).await;
    api.ok(Method::POST, &format!("{path}/pause"), OPS, None).await;
    app.wait_status("paused", 1).await;

    let publisher = Publisher::new();
    for i in 0..3 {
        publisher
            .json(
                env.topic(),
                &format!(r#"{{"event":"tour.completed","version":"0","time":1,"id":"evt_p{i}"}}"#),
            )
            .await;
    }
    let kept = read_topic(&env.dlq, 3, Duration::from_secs(20)).await;
    assert_eq!(kept.len(), 3);
    assert!(kept.iter().all(|r| r.header("herald.reason") == "webhook_paused"));
    assert_eq!(receiver.count(), 0, "nothing is delivered while paused");

    let resumed = api
        .ok(
            Method::POST,
            &format!("{path}/resume"),
            OPS,
            Some(json!({"replay": true})),
        )
        .await;
    assert_eq!(resumed["webhook"]["status"], "active");
    let job = resumed["replay"]["id"].as_str().unwrap().to_owned();
    let done = eventually(Duration::from_secs(30), "the replay to finish", || async {
        let job = api.ok(Method::GET, &format!("/v1/replays/{job}"), OPS, None).await;
        (job["state"] != "running").then_some(job)
    })
    .await;
    assert_eq!(done["state"], "done", "{done}");
    assert_eq!(
        (done["matched"].as_u64(), done["replayed"].as_u64()),
        (Some(3), Some(3))
    );
    // Another tenant cannot read the replay.
    assert_eq!(
        api.call(Method::GET, &format!("/v1/replays/{job}"), ACME, None)
            .await
            .status,
        404
    );

    let got = receiver.wait_for(3, Duration::from_secs(20)).await;
    let mut delivered: Vec<&str> = got.iter().map(|r| r.header("webhook-id")).collect();
    let mut kept_ids: Vec<&str> = kept.iter().map(|r| r.header("herald.delivery.id")).collect();
    delivered.sort_unstable();
    kept_ids.sort_unstable();
    assert_eq!(delivered, kept_ids, "replayed deliveries keep their webhook-id");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_secret_overlaps_with_the_previous_one_then_replaces_it() {
    let env = TestEnv::new("admin-rotate", &["events"], 1).await;
    let (app, api, receiver, path) = api_with_webhook(&env, "4s", "/r", &["*"]).await;
    app.wait_webhooks(1).await;
    let old = api.ok(Method::GET, &format!("{path}/secret"), OPS, None).await;
    let old_secret = old["secret"].as_str().unwrap().to_owned();
    assert_eq!(old["previous"], json!([]));
    assert_problem(
        &api.call(
            Method::POST,
            &format!("{path}/secret"),
            OPS,
            Some(json!({"secret": "whsec_short"})),
        )
        .await,
        422,
        Some("secret"),
    );

    let applied = app.changes_applied().await;
    let rotated = api.ok(Method::POST, &format!("{path}/secret"), OPS, None).await;
    let new_secret = rotated["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, old_secret);
    assert_eq!(rotated["previous"][0]["secret"], old_secret.as_str());
    let publisher = Publisher::new();
    app.wait_applied(applied).await;
    publisher
        .json(env.topic(), r#"{"event":"a","version":"0","time":1,"id":"evt_during"}"#)
        .await;
    let during = receiver.wait_for(1, Duration::from_secs(10)).await.remove(0);
    let sig = during.header("webhook-signature");
    assert_eq!(sig.split(' ').count(), 2, "{sig}");
    assert!(verifies(&new_secret, &during), "the new secret verifies");
    assert!(verifies(&old_secret, &during), "the old secret still verifies");

    // After the overlap only the new secret signs.
    tokio::time::sleep(Duration::from_secs(4)).await;
    publisher
        .json(env.topic(), r#"{"event":"a","version":"0","time":1,"id":"evt_after"}"#)
        .await;
    let after = receiver.wait_for(2, Duration::from_secs(10)).await.remove(1);
    let sig = after.header("webhook-signature");
    assert_eq!(sig.split(' ').count(), 1, "{sig}");
    assert!(verifies(&new_secret, &after));
    assert!(!verifies(&old_secret, &after), "the old secret no longer verifies");
    let now = api.ok(Method::GET, &format!("{path}/secret"), OPS, None).await;
    assert_eq!(now["previous"], json!([]), "an expired secret is no longer listed");

    let records = read_topic(&env.system, 2, Duration::from_secs(20)).await;
    assert!(system_events_of(&records, path.trim_start_matches("/v1/webhooks/"))
        .contains(&"webhook.secret_rotated".to_owned()));
    app.stop().await;
}

/// One delivery really made to a webhook of tenant acme: its first attempt
/// failed (500), its retry from the tier succeeded, and the history holds
/// both.
struct Delivered {
    env: TestEnv,
    app: RunningApp,
    api: Api,
    receiver: TestReceiver,
    publisher: Publisher,
    /// The webhook's API path.
    path: String,
    attempts_topic: String,
    /// The history's first page: the two attempts, newest first.
    page: Value,
}

async fn delivered_after_one_failure(name: &str) -> Delivered {
    let env = TestEnv::new(name, &["events"], 1)
        .await
        .with_tiers(&[Tier::after_ms(1000)])
        .await;
    let attempts_topic = env.dlq.replace(".dlq", ".attempts");
    create_topics(std::slice::from_ref(&attempts_topic), 1).await;
    let overlay = admin_overlay("24h")
        + "\n[envelope.default]\npreset = \"jimo\"\ntenant = \"/tenant\"\n"
        + &format!("[history]\ntopic = \"{attempts_topic}\"\n");
    let app = env.spawn(&overlay).await;
    let api = Api::new(&app);
    // Fails the first attempt of each delivery, accepts the second.
    let receiver = TestReceiver::start(Behaviour::FailAttempts {
        attempts: 1,
        status: 500,
        retry_after: None,
    })
    .await;
    let body = json!({"name": "h", "tenant": "acme", "url": receiver.url("/h"), "events": ["tour.*"]});
    let created = api.ok(Method::POST, "/v1/webhooks", OPS, Some(body)).await;
    let path = format!("/v1/webhooks/{}", created["id"].as_str().unwrap());
    app.wait_webhooks(1).await;
    let publisher = Publisher::new();
    publisher
        .json(
            env.topic(),
            r#"{"event":"tour.completed","version":"0","time":1,"id":"evt_h1","tenant":"acme"}"#,
        )
        .await;
    receiver.wait_for(2, Duration::from_secs(20)).await;

    // History: newest first, both attempts of one delivery, with their responses.
    let page = eventually(Duration::from_secs(10), "two attempts in the history", || async {
        let page = api.ok(Method::GET, &format!("{path}/deliveries"), ACME, None).await;
        (page["data"].as_array().unwrap().len() == 2).then_some(page)
    })
    .await;
    Delivered {
        env,
        app,
        api,
        receiver,
        publisher,
        path,
        attempts_topic,
        page,
    }
}

/// The history of a delivery: every attempt in full, paged, on the attempts
/// topic too, counted in the statistics, and forgotten with its webhook.
#[tokio::test(flavor = "multi_thread")]
async fn the_history_shows_every_attempt_in_full_and_the_statistics_count_them() {
    let Delivered {
        app,
        api,
        receiver,
        path,
        attempts_topic,
        page,
        ..
    } = delivered_after_one_failure("admin-history").await;
    let (second, first) = (&page["data"][0], &page["data"][1]);
    assert_eq!(
        (first["attempt"].as_u64(), second["attempt"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(first["delivery_id"], second["delivery_id"]);
    assert_eq!(first["outcome"], "failed");
    assert_eq!(first["response"]["status"], 500);
    assert_eq!(second["outcome"], "succeeded");
    assert_eq!(second["response"]["status"], 204);
    assert_eq!(second["tier"], 1);
    assert_eq!(second["event_type"], "tour.completed");
    // The path and query are withheld (they may hold a secret).
    assert_eq!(second["request"]["url"], format!("http://{}/…", receiver.addr));
    assert!(second["request"]["body"].as_str().unwrap().contains("evt_h1"));
    let delivered = receiver.received();
    assert_eq!(
        second["request"]["headers"]["webhook-id"],
        delivered[1].header("webhook-id")
    );
    assert_eq!(
        second["request"]["headers"]["webhook-signature"],
        delivered[1].header("webhook-signature")
    );
    let failed = api
        .ok(Method::GET, &format!("{path}/deliveries?status=failed"), ACME, None)
        .await;
    assert_eq!(failed["data"].as_array().unwrap().len(), 1);
    let paged = api
        .ok(Method::GET, &format!("{path}/deliveries?limit=1"), ACME, None)
        .await;
    assert_eq!(paged["data"][0]["id"], second["id"]);
    let cursor = paged["next_cursor"].as_str().unwrap();
    let rest = api
        .ok(
            Method::GET,
            &format!("{path}/deliveries?limit=1&cursor={cursor}"),
            ACME,
            None,
        )
        .await;
    assert_eq!(rest["data"][0]["id"], first["id"]);
    assert_eq!(rest["next_cursor"], Value::Null);
    // A time range: the attempts were made in the last minute.
    let at = |offset: time::Duration| {
        (time::OffsetDateTime::now_utc() + offset)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap()
            .replace('+', "%2B")
    };
    let recent = api
        .ok(
            Method::GET,
            &format!("{path}/deliveries?since={}", at(time::Duration::minutes(-5))),
            ACME,
            None,
        )
        .await;
    assert_eq!(recent["data"].as_array().unwrap().len(), 2);
    let older = api
        .ok(
            Method::GET,
            &format!("{path}/deliveries?until={}", at(time::Duration::minutes(-5))),
            ACME,
            None,
        )
        .await;
    assert_eq!(older["data"], json!([]));
    assert_problem(
        &api.call(Method::GET, &format!("{path}/deliveries?since=yesterday"), ACME, None)
            .await,
        400,
        None,
    );
    let one = api
        .ok(
            Method::GET,
            &format!("{path}/deliveries/{}", first["id"].as_str().unwrap()),
            ACME,
            None,
        )
        .await;
    assert_eq!(one["id"], first["id"]);
    assert_problem(
        &api.call(Method::GET, &format!("{path}/deliveries"), GLOBEX, None).await,
        404,
        None,
    );
    // Every attempt, in full, on the attempts topic too.
    let published = read_topic(&attempts_topic, 2, Duration::from_secs(20)).await;
    let published: Vec<Value> = published
        .iter()
        .map(|r| serde_json::from_slice(&r.value).unwrap())
        .collect();
    assert_eq!(published.len(), 2);
    assert!(published.iter().all(|a| a["delivery_id"] == first["delivery_id"]));
    assert!(published[0]["request"]["body"].as_str().unwrap().contains("evt_h1"));

    // Statistics match the deliveries made, per webhook and per tenant.
    let stats = eventually(Duration::from_secs(10), "statistics", || async {
        let s = api.ok(Method::GET, &format!("{path}/stats"), ACME, None).await;
        (s["last_hour"]["succeeded"] == 1 && s["last_hour"]["failed"] == 1).then_some(s)
    })
    .await;
    assert_eq!(stats["last_hour"]["success_rate"], 0.5);
    assert_eq!(stats["last_week"]["succeeded"], 1);
    let hourly = stats["hourly"].as_array().unwrap();
    assert_eq!(hourly.len(), 168, "every hour of the week");
    let counted = |k: &str| hourly.iter().map(|h| h[k].as_u64().unwrap()).sum::<u64>();
    assert_eq!((counted("succeeded"), counted("failed")), (1, 1));
    let last_two = |k: &str| hourly[166][k].as_u64().unwrap() + hourly[167][k].as_u64().unwrap();
    assert_eq!(
        (last_two("succeeded"), last_two("failed")),
        (1, 1),
        "the current hour is last"
    );
    assert!(stats["last_success_at"].is_string() && stats["last_failure_at"].is_string());
    let tenant = api.ok(Method::GET, "/v1/tenants/acme/stats", ACME, None).await;
    assert_eq!(
        (
            tenant["last_day"]["succeeded"].as_u64(),
            tenant["last_day"]["failed"].as_u64()
        ),
        (Some(1), Some(1))
    );
    assert_problem(
        &api.call(Method::GET, "/v1/tenants/acme/stats", GLOBEX, None).await,
        404,
        None,
    );

    // Deleting the webhook forgets its history and statistics.
    assert_eq!(
        api.call(Method::DELETE, &path, ACME, None).await.status,
        StatusCode::NO_CONTENT
    );
    let again = json!({"id": path.trim_start_matches("/v1/webhooks/"), "name": "h", "tenant": "acme", "url": receiver.url("/h"), "events": ["tour.*"]});
    api.ok(Method::POST, "/v1/webhooks", OPS, Some(again)).await;
    assert_eq!(
        api.ok(Method::GET, &format!("{path}/deliveries"), ACME, None).await["data"],
        json!([])
    );
    let fresh = api.ok(Method::GET, &format!("{path}/stats"), ACME, None).await;
    assert_eq!(
        (
            fresh["last_week"]["succeeded"].as_u64(),
            fresh["last_success_at"].as_str()
        ),
        (Some(0), None)
    );
    app.stop().await;
}

/// A manual retry sends the same delivery again; a bulk replay re-delivers
/// what exhausted its tier once the endpoint is back.
#[tokio::test(flavor = "multi_thread")]
async fn a_manual_retry_and_a_replay_deliver_the_same_delivery_again() {
    let Delivered {
        env,
        app,
        api,
        receiver,
        publisher,
        path,
        page,
        ..
    } = delivered_after_one_failure("admin-retry").await;
    let first = &page["data"][1];
    // Manual retry: the same webhook-id again, as attempt 3.
    let retried = api
        .call(
            Method::POST,
            &format!("{path}/deliveries/{}/retry", first["id"].as_str().unwrap()),
            ACME,
            None,
        )
        .await;
    assert_eq!(retried.status, StatusCode::ACCEPTED, "{}", retried.body);
    let got = receiver.wait_for(3, Duration::from_secs(20)).await;
    assert_eq!(got[2].header("webhook-id"), got[0].header("webhook-id"));
    assert_eq!(got[2].attempt(), 3);

    // Bulk replay of failed deliveries: a delivery that exhausted its tier...
    receiver.set_behaviour(Behaviour::Status(503));
    publisher
        .json(
            env.topic(),
            r#"{"event":"tour.started","version":"0","time":1,"id":"evt_h2","tenant":"acme"}"#,
        )
        .await;
    let letters = read_topic(&env.dlq, 1, Duration::from_secs(20)).await;
    assert_eq!(letters[0].header("herald.reason"), "retries_exhausted");
    // ...is delivered again, with its id, once the endpoint is back.
    receiver.set_behaviour(Behaviour::Status(204));
    let before = receiver.count();
    // A dry run counts, and sends nothing.
    let counted = api
        .ok(
            Method::POST,
            &format!("{path}/replay"),
            ACME,
            Some(json!({"since": "2020-01-01T00:00:00Z", "dry_run": true})),
        )
        .await;
    let counted = api.replay_finished(&counted, ACME).await;
    assert_eq!(
        (
            counted["dry_run"].as_bool(),
            counted["would_replay"].as_u64(),
            counted["replayed"].as_u64()
        ),
        (Some(true), Some(1), Some(0)),
        "{counted}"
    );
    env.wait_finished().await;
    assert_eq!(receiver.count(), before, "a dry run sends nothing");
    let started = api
        .call(
            Method::POST,
            &format!("{path}/replay"),
            ACME,
            Some(json!({"since": "2020-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{}", started.body);
    let job = started.body["id"].as_str().unwrap().to_owned();
    let done = eventually(Duration::from_secs(30), "the replay", || async {
        let j = api.ok(Method::GET, &format!("/v1/replays/{job}"), ACME, None).await;
        (j["state"] != "running").then_some(j)
    })
    .await;
    assert_eq!(
        (done["state"].as_str(), done["replayed"].as_u64()),
        (Some("done"), Some(1)),
        "{done}"
    );
    let got = receiver.wait_for(before + 1, Duration::from_secs(20)).await;
    assert_eq!(
        got[before].header("webhook-id"),
        letters[0].header("herald.delivery.id")
    );
    // History is written a flush after the attempt: wait for it, so that the
    // deletion below cannot be overtaken by this attempt's record.
    let replayed_id = letters[0].header("herald.delivery.id").to_owned();
    eventually(
        Duration::from_secs(10),
        "the replayed attempt in the history",
        || async {
            let page = api
                .ok(
                    Method::GET,
                    &format!("{path}/deliveries?delivery_id={replayed_id}"),
                    ACME,
                    None,
                )
                .await;
            page["data"]
                .as_array()
                .is_some_and(|d| d.iter().any(|a| a["outcome"] == "succeeded"))
                .then_some(())
        },
    )
    .await;
    assert_problem(
        &api.call(
            Method::POST,
            &format!("{path}/replay"),
            ACME,
            Some(json!({"reasons": ["bogus"]})),
        )
        .await,
        422,
        Some("reasons"),
    );
    app.stop().await;
}

/// A test ping sends the catalog's example, signed, and shows the answer.
#[tokio::test(flavor = "multi_thread")]
async fn a_test_ping_sends_the_catalog_example_signed() {
    let env = TestEnv::new("admin-ping", &["events"], 1).await;
    let served = ApiOnly::start(&env, &admin_overlay("24h")).await;
    let api = &served.api;
    let receiver = TestReceiver::ok().await;
    let body = json!({"name": "p", "tenant": "acme", "url": receiver.url("/p"), "events": ["tour.*"]});
    let created = api.ok(Method::POST, "/v1/webhooks", OPS, Some(body)).await;
    let path = format!("/v1/webhooks/{}", created["id"].as_str().unwrap());
    // Test ping: the catalog's example, signed, and the receiver's answer.
    let result = api
        .ok(
            Method::POST,
            &format!("{path}/test"),
            ACME,
            Some(json!({"event_type": "tour.completed"})),
        )
        .await;
    assert_eq!(
        (result["succeeded"].as_bool(), result["status"].as_u64()),
        (Some(true), Some(204)),
        "{result}"
    );
    let ping = receiver.received().pop().unwrap();
    assert_eq!(ping.header("webhook-id"), result["delivery_id"].as_str().unwrap());
    let sent: Value = serde_json::from_slice(&ping.body).unwrap();
    assert_eq!(sent["event"], "tour.completed");
    let secret = api.ok(Method::GET, &format!("{path}/secret"), ACME, None).await;
    assert!(verifies(secret["secret"].as_str().unwrap(), &ping));
    assert_problem(
        &api.call(
            Method::POST,
            &format!("{path}/test"),
            ACME,
            Some(json!({"event_type": "no.such"})),
        )
        .await,
        422,
        Some("event_type"),
    );
    assert_eq!(receiver.count(), 1, "one request per ping");
    served.stop().await;
}

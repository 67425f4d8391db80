//! Payload filters on a running Herald: a filtered webhook receives exactly
//! the events whose body passes its filter, the API refuses an invalid one
//! naming where it is wrong, and one another writer stored invalid costs
//! only its own webhook.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::api::*;
use crate::helpers::*;

const FILTER: &str = r#"{"/data/plan": {"in": ["pro", "team"]}, "/amount": {">": 100}}"#;

/// The `n` of each event a receiver got.
fn numbers(receiver: &TestReceiver) -> BTreeSet<u64> {
    receiver
        .received()
        .iter()
        .map(|r| serde_json::from_slice::<Value>(&r.body).unwrap()["n"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filtered_webhook_receives_exactly_the_matching_events_and_an_unfiltered_one_all() {
    let env = TestEnv::new("filters", &["events"], 2).await;
    let app = env.spawn(&admin_overlay("24h")).await;
    let api = Api::new(&app);
    let filtered = TestReceiver::ok().await;
    let all = TestReceiver::ok().await;
    let created = api
        .create(
            OPS,
            json!({"name": "pro", "url": filtered.url("/pro"), "events": ["tour.*"],
                   "filter": serde_json::from_str::<Value>(FILTER).unwrap()}),
        )
        .await;
    assert_eq!(created["filter"], serde_json::from_str::<Value>(FILTER).unwrap());
    api.create(
        OPS,
        json!({"name": "all", "url": all.url("/all"), "events": ["tour.*"]}),
    )
    .await;
    app.wait_webhooks(2).await;

    // Plans and amounts of every kind the filter meets: matching, at the
    // bound, of another type, missing, nested deeper, escaped.
    let plans = [
        json!("pro"),
        json!("team"),
        json!("free"),
        json!("Pro"),
        json!(null),
        json!(["pro"]),
    ];
    let amounts = [
        json!(150),
        json!(100),
        json!(100.5),
        json!(1e3),
        json!("150"),
        json!(99),
    ];
    let publisher = Publisher::new();
    let mut expected = BTreeSet::new();
    let mut n = 0u64;
    for plan in &plans {
        for amount in &amounts {
            n += 1;
            let body = json!({"event": "tour.completed", "version": "0", "time": 1, "n": n,
                              "data": {"plan": plan}, "amount": amount});
            let plan_ok = plan == "pro" || plan == "team";
            let amount_ok = amount.as_f64().is_some_and(|a| a > 100.0);
            if plan_ok && amount_ok {
                expected.insert(n);
            }
            publisher.json(env.topic(), &body.to_string()).await;
        }
    }
    // Missing fields, and an escaped string that reads as "team".
    for body in [
        json!({"event": "tour.completed", "version": "0", "time": 1, "amount": 500}),
        json!({"event": "tour.completed", "version": "0", "time": 1, "data": {}}),
    ] {
        n += 1;
        let mut body = body;
        body["n"] = n.into();
        publisher.json(env.topic(), &body.to_string()).await;
    }
    n += 1;
    let escaped = format!(
        r#"{{"event":"tour.completed","version":"0","time":1,"n":{n},"data":{{"plan":"t\u0065am"}},"amount":101}}"#
    );
    expected.insert(n);
    publisher.json(env.topic(), &escaped).await;
    // An event of a type neither subscribes to.
    publisher
        .json(
            env.topic(),
            r#"{"event":"survey.completed","version":"0","time":1,"n":0}"#,
        )
        .await;

    all.wait_for(n as usize, Duration::from_secs(30)).await;
    env.wait_finished().await;
    assert_eq!(
        numbers(&all),
        (1..=n).collect(),
        "the unfiltered webhook receives every event"
    );
    assert_eq!(numbers(&filtered), expected, "exactly the matching events");
    assert_eq!(filtered.count(), expected.len(), "each once");
    assert_eq!(expected.len(), 7, "the test covers matches and mismatches");

    // Turned-away events are no deliveries: counted as filtered only.
    let topic = env.topic();
    let turned_away = (n as usize - expected.len()) as f64;
    assert_eq!(
        app.metric(&format!(r#"herald_deliveries_filtered_total{{topic="{topic}"}}"#))
            .await,
        turned_away
    );
    assert_eq!(
        app.metric(r#"herald_deliveries_total{class="2xx",outcome="succeeded"}"#)
            .await,
        (n as usize + expected.len()) as f64,
        "an attempt per delivery, none for what was filtered"
    );
    assert_eq!(
        app.metric(&format!(r#"herald_events_unmatched_total{{topic="{topic}"}}"#))
            .await,
        1.0,
        "only the survey event had no subscriber"
    );
    assert_eq!(end_offsets(&env.dlq, 2).await, vec![0, 0], "nothing was kept");

    // The filter removed through the API: every event reaches it again.
    let path = format!("/v1/webhooks/{}", created["id"].as_str().unwrap());
    let before = app.changes_applied().await;
    let changed = api.ok(Method::PATCH, &path, OPS, Some(json!({"filter": null}))).await;
    assert_eq!(changed["filter"], Value::Null);
    app.wait_applied(before).await;
    publisher
        .json(
            env.topic(),
            r#"{"event":"tour.completed","version":"0","time":1,"n":1000}"#,
        )
        .await;
    eventually(Duration::from_secs(20), "the unfiltered event", || async {
        numbers(&filtered).contains(&1000).then_some(())
    })
    .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_filter_is_refused_by_the_api_naming_the_field() {
    let env = TestEnv::new("filters-api", &["events"], 1).await;
    let served = ApiOnly::start(&env, &admin_overlay("24h")).await;
    let api = &served.api;
    let base = json!({"name": "n", "url": "http://127.0.0.1:9/hook", "events": ["tour.completed"]});
    let with = |filter: Value| {
        let mut b = base.clone();
        b["filter"] = filter;
        b
    };
    let post = |body: Value| api.call(Method::POST, "/v1/webhooks", ACME, Some(body));
    let reply = post(with(json!({"/amount": {">": true}}))).await;
    assert_problem(&reply, 422, Some("filter./amount.>"));
    assert_eq!(reply.body["errors"][0]["message"], "expects a number or a string");
    for (filter, field) in [
        (json!({"amount": {"=": 1}}), "filter.amount"),
        (json!({"/a~2": {"=": 1}}), "filter./a~2"),
        (json!({"/plan": {"like": "p%"}}), "filter./plan.like"),
        (json!({"/plan": {"in": "pro"}}), "filter./plan.in"),
        (json!({"/plan": {"in": [1, {"x": 1}]}}), "filter./plan.in[1]"),
        (json!({"/plan": {"exists": 1}}), "filter./plan.exists"),
        (json!({"/plan": {}}), "filter./plan"),
        (json!({}), "filter"),
        (json!("/plan"), "filter"),
    ] {
        assert_problem(&post(with(filter.clone())).await, 422, Some(field));
    }
    let many: serde_json::Map<String, Value> = (0..21)
        .map(|i| (format!("/p{i:02}"), json!({"exists": true})))
        .collect();
    assert_problem(&post(with(Value::Object(many))).await, 422, Some("filter./p20"));
    assert_eq!(
        api.ok(Method::GET, "/v1/webhooks", OPS, None).await["data"],
        json!([]),
        "nothing was created"
    );

    // A change: refused the same way, and the stored filter kept.
    let created = served.api.create(ACME, with(json!({"/plan": {"=": "pro"}}))).await;
    let path = format!("/v1/webhooks/{}", created["id"].as_str().unwrap());
    let reply = api
        .call(
            Method::PATCH,
            &path,
            ACME,
            Some(json!({"filter": {"/plan": {"not_in": []}}})),
        )
        .await;
    assert_problem(&reply, 422, Some("filter./plan.not_in"));
    assert_eq!(
        api.ok(Method::GET, &path, ACME, None).await["filter"],
        json!({"/plan": {"=": "pro"}})
    );
    let changed = api
        .ok(
            Method::PATCH,
            &path,
            ACME,
            Some(json!({"filter": {"/amount": {">=": 100.0}}})),
        )
        .await;
    assert_eq!(changed["filter"], json!({"/amount": {">=": 100.0}}));
    let changed = api
        .ok(Method::PATCH, &path, ACME, Some(json!({"name": "renamed"})))
        .await;
    assert_eq!(changed["filter"], json!({"/amount": {">=": 100.0}}), "absent: kept");
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_filter_written_into_redis_skips_only_its_webhook() {
    let env = TestEnv::new("filters-redis", &["events"], 1).await;
    let bad = TestReceiver::ok().await;
    let good = TestReceiver::ok().await;
    // Another writer's document, valid but for its filter.
    let mut doc = serde_json::to_value(webhook("bad", &bad.url("/"), &["*"])).unwrap();
    doc["filter"] = json!({"/amount": {">": true}});
    let mut conn = env.redis().await;
    let () = redis::pipe()
        .set(format!("{}webhook:bad", env.prefix), doc.to_string())
        .sadd(format!("{}webhooks", env.prefix), "bad")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut filtered = webhook("good", &good.url("/"), &["*"]);
    filtered.filter = Some(herald::routing::filter::Filter::parse_named(r#"{"/n": {">": 1}}"#).unwrap());
    env.store().await.put(&filtered).await.unwrap();
    let app = env.spawn("").await;
    assert!(app.metric("herald_subscription_records_invalid_total").await >= 1.0);
    assert_eq!(app.metric(r#"herald_webhooks{status="active"}"#).await, 1.0);
    let publisher = Publisher::new();
    for n in 1..=3 {
        let event = format!(r#"{{"event":"tour.completed","version":"0","time":1,"n":{n}}}"#);
        publisher.json(env.topic(), &event).await;
    }
    good.wait_for(2, Duration::from_secs(20)).await;
    env.wait_finished().await;
    assert_eq!(numbers(&good), [2, 3].into(), "the other webhook's filter holds");
    assert_eq!(bad.count(), 0, "the webhook with the invalid filter is skipped");
    app.stop().await;
}

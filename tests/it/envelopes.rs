//! Each seed envelope and CloudEvents (binary and structured) reaches exactly
//! the subscribed webhooks, with the body byte for byte and tenants respected.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::helpers::*;

const JIMO: &str = r#"{"event": "tour.completed", "version": "0", "time": 1740133769000, "experience": {"uid": "550433b7", "title": "Onboarding"},  "user": {"uid": "17de6523"}}"#;
const IAM: &str = r#"{"event_time":"2025-02-21T08:15:03Z","event_type":"USER_CREATED","current_context":{"tenant_id":"acme"},"data":{"email":"a@example.com"}}"#;
const JAM: &str = r#"{
  "id": "evt_12345",
  "type": "intercom.recorder.recorded",
  "created_at": "2025-09-09T12:00:00Z",
  "data": {"conversationId": "215470686832743", "recording_url": "https://jam.dev/r/rec_12345"}
}"#;
const CE_STRUCTURED: &str = r#"{"specversion":"1.0","type":"com.example.order.paid","source":"/orders","id":"ord-1","time":"2025-01-01T00:00:00Z","datacontenttype":"application/json","data":{"total":42}}"#;
const CE_BINARY_DATA: &str = r#"{"user":"u-7"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_envelope_reaches_exactly_its_subscribers_byte_for_byte() {
    let mut env = TestEnv::new("envelopes", &["jimo", "iam", "jam", "ce"], 1).await;
    env.overlay = format!(
        r#"
[envelope.topics."{jimo}"]
preset = "jimo"
[envelope.topics."{iam}"]
preset = "iam"
tenant = "/current_context/tenant_id"
[envelope.topics."{jam}"]
preset = "jam"
tenant = "header:tenant"
[envelope.topics."{ce}"]
preset = "cloudevents"
"#,
        jimo = env.topics[0],
        iam = env.topics[1],
        jam = env.topics[2],
        ce = env.topics[3],
    );
    let receiver = TestReceiver::ok().await;
    let store = env.store().await;
    let subscriptions: &[(&str, Option<&str>, &[&str])] = &[
        ("tours", None, &["tour.*"]),
        ("tour-completed", None, &["tour.completed"]),
        ("surveys", None, &["survey.*"]),
        ("iam-acme", Some("acme"), &["USER_*"]),
        ("iam-globex", Some("globex"), &["USER_CREATED"]),
        (
            "jam",
            None,
            &["intercom.recorder.recorded", "intercom.recorder.opted_out"],
        ),
        ("jam-acme", Some("acme"), &["intercom.*"]),
        ("orders", None, &["com.example.order.*"]),
        ("users-ce", None, &["com.example.user.created"]),
        ("everything", None, &["*"]),
    ];
    for (id, tenant, events) in subscriptions {
        let mut w = webhook(id, &receiver.url(&format!("/{id}")), events);
        w.tenant = tenant.map(str::to_owned);
        store.put(&w).await.unwrap();
    }
    let app = env.spawn("").await;

    let publisher = Publisher::new();
    publisher.json(&env.topics[0], JIMO).await;
    publisher.json(&env.topics[1], IAM).await;
    publisher
        .send(&env.topics[2], None, JAM.as_bytes(), &[("tenant", "globex")])
        .await;
    publisher
        .send(
            &env.topics[3],
            None,
            CE_STRUCTURED.as_bytes(),
            &[("content-type", "application/cloudevents+json; charset=utf-8")],
        )
        .await;
    publisher
        .send(
            &env.topics[3],
            Some("u-7"),
            CE_BINARY_DATA.as_bytes(),
            &[
                ("ce_specversion", "1.0"),
                ("ce_type", "com.example.user.created"),
                ("ce_source", "/users"),
                ("ce_id", "user-7-created"),
                ("content-type", "application/json"),
            ],
        )
        .await;

    // Expected (path, body) pairs: tenant-bound webhooks see only their tenant.
    let expected: Vec<(&str, &str)> = vec![
        ("/tours", JIMO),
        ("/tour-completed", JIMO),
        ("/everything", JIMO),
        ("/iam-acme", IAM),
        ("/everything", IAM),
        ("/jam", JAM),
        ("/everything", JAM),
        ("/orders", CE_STRUCTURED),
        ("/everything", CE_STRUCTURED),
        ("/users-ce", CE_BINARY_DATA),
        ("/everything", CE_BINARY_DATA),
    ];
    receiver.wait_for(expected.len(), Duration::from_secs(20)).await;
    // Every record finished: a wrongly routed extra delivery has been made.
    env.wait_finished().await;
    let received = receiver.received();

    let mut got: Vec<(String, Vec<u8>)> = received.iter().map(|r| (r.path.clone(), r.body.to_vec())).collect();
    let mut want: Vec<(String, Vec<u8>)> = expected
        .iter()
        .map(|(p, b)| (p.to_string(), b.as_bytes().to_vec()))
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "each event reaches exactly its subscribers, byte for byte");

    let by_path: BTreeMap<&str, &Received> = received
        .iter()
        .filter(|r| r.path != "/everything")
        .map(|r| (r.path.as_str(), r))
        .collect();
    assert_eq!(
        by_path["/orders"].header("content-type"),
        "application/cloudevents+json; charset=utf-8"
    );
    let binary = by_path["/users-ce"];
    assert_eq!(binary.header("content-type"), "application/json");
    assert_eq!(binary.header("ce-type"), "com.example.user.created");
    assert_eq!(binary.header("ce-source"), "/users");
    assert_eq!(binary.header("ce-id"), "user-7-created");
    for r in &received {
        assert!(r.header("webhook-id").starts_with("msg_"));
        assert!(r.header("webhook-signature").starts_with("v1,"));
        assert!(r.header("user-agent").starts_with("Herald/"));
        let ts: i64 = r.header("webhook-timestamp").parse().unwrap();
        assert!((ts - time::OffsetDateTime::now_utc().unix_timestamp()).abs() < 60);
    }
    assert_eq!(
        app.metric(&format!("herald_events_consumed_total{{topic=\"{}\"}}", env.topics[3]))
            .await,
        2.0
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_headers_are_sent_and_ids_are_stable_per_event_and_webhook() {
    let mut env = TestEnv::new("headers", &["events"], 1).await;
    env.overlay = "[envelope.default]\npreset = \"jam\"".into();
    let receiver = TestReceiver::ok().await;
    let store = env.store().await;
    let mut w = webhook("with-key", &receiver.url("/a"), &["*"]);
    w.headers.insert("x-api-key".into(), "key-123".into());
    store.put(&w).await.unwrap();
    store.put(&webhook("other", &receiver.url("/b"), &["*"])).await.unwrap();
    let app = env.spawn("").await;

    let publisher = Publisher::new();
    let jam = |id: &str| format!(r#"{{"id":"{id}","type":"intercom.recorder.opted_out","data":{{}}}}"#);
    publisher.json(env.topic(), &jam("evt_1")).await;
    publisher.json(env.topic(), &jam("evt_1")).await; // the same event, published twice
    publisher.json(env.topic(), &jam("evt_2")).await;
    let received = receiver.wait_for(6, Duration::from_secs(20)).await;

    let ids = |path: &str, event: &str| -> Vec<String> {
        received
            .iter()
            .filter(|r| r.path == path && std::str::from_utf8(&r.body).unwrap().contains(event))
            .map(|r| r.header("webhook-id").to_owned())
            .collect()
    };
    let a1 = ids("/a", "evt_1");
    assert_eq!(a1.len(), 2);
    assert_eq!(a1[0], a1[1], "the same event gets the same id at the same webhook");
    let b1 = ids("/b", "evt_1");
    assert_ne!(a1[0], b1[0], "another webhook gets another id");
    assert_ne!(a1[0], ids("/a", "evt_2")[0], "another event gets another id");

    assert!(received
        .iter()
        .filter(|r| r.path == "/a")
        .all(|r| r.header("x-api-key") == "key-123"));
    assert!(received
        .iter()
        .filter(|r| r.path == "/b")
        .all(|r| r.header("x-api-key").is_empty()));
    app.stop().await;
}

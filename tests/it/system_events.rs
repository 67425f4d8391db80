//! System events (`webhook.created`, ...) end to end: written in the
//! configured envelope style, routed to their own tenant's webhooks only,
//! and published again when the broker first refuses them.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::api::*;
use crate::helpers::*;

const WAIT: Duration = Duration::from_secs(30);

/// Kafka topics consumed (the test's own and its system topic), and envelope
/// `rules` for the system topic.
fn consuming_system_events(env: &TestEnv, rules: &str) -> String {
    format!(
        "[kafka]\ntopics = [\"{}\", \"{system}\"]\n[envelope.topics.\"{system}\"]\n{rules}\n",
        env.topic(),
        system = env.system,
    )
}

/// The header rules that read every style (docs/envelopes.md#system-events).
const HEADER_RULES: &str = "event_type = \"header:event-type\"\nevent_id = \"header:event-id\"\n\
                            event_time = \"header:event-time\"\ntenant = \"header:tenant\"";

fn body(r: &Received) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

/// Creates a webhook with `token` sending `events` to `receiver`; its id.
async fn create(api: &Api, token: &str, name: &str, receiver: &TestReceiver, events: &[&str]) -> String {
    let created = api
        .create(token, json!({"name": name, "url": receiver.url("/"), "events": events}))
        .await;
    created["id"].as_str().unwrap().to_owned()
}

/// A tenant's webhook subscribed to the system events receives its own
/// tenant's `webhook.created` in the configured style, found by that style's
/// own tenant rule; another tenant's receives none of them, and an
/// operator's webhook (no tenant) receives every tenant's.
#[tokio::test(flavor = "multi_thread")]
async fn a_tenants_webhook_receives_its_own_system_events_in_each_envelope_style() {
    // (style, the system topic's rules, pattern, type pointer, type, tenant pointer)
    let styles = [
        (
            "jimo",
            "preset = \"jimo\"\ntenant = \"/tenant\"",
            "webhook.*",
            "/event",
            "webhook.created",
            "/tenant",
        ),
        (
            "iam",
            "preset = \"iam\"\ntenant = \"/current_context/tenant_id\"",
            "WEBHOOK_*",
            "/event_type",
            "WEBHOOK_CREATED",
            "/current_context/tenant_id",
        ),
        (
            "jam",
            "preset = \"jam\"\ntenant = \"/data/tenant\"",
            "webhook.*",
            "/type",
            "webhook.created",
            "/data/tenant",
        ),
    ];
    for (style, rules, pattern, type_at, created_type, tenant_at) in styles {
        let env = TestEnv::new(&format!("sys-{style}"), &["events"], 1).await;
        let overlay = format!(
            "{}{}[system_events]\nenvelope = \"{style}\"\n",
            admin_overlay("24h"),
            consuming_system_events(&env, rules)
        );
        let app = env.spawn(&overlay).await;
        let api = Api::new(&app);
        let (acme, globex, ops) = (
            TestReceiver::ok().await,
            TestReceiver::ok().await,
            TestReceiver::ok().await,
        );
        // acme is bound to the jimo catalog: the system events are allowed anyway.
        create(&api, ACME, "acme-system", &acme, &[pattern]).await;
        let globex_hook = create(&api, GLOBEX, "globex-system", &globex, &[pattern]).await;
        let ops_hook = create(&api, OPS, "ops-system", &ops, &[pattern]).await;
        app.wait_webhooks(3).await;

        // acme makes another webhook: its webhook.created reaches acme's.
        let silent = TestReceiver::ok().await;
        let watched = create(&api, ACME, "watched", &silent, &["tour.completed"]).await;
        let id_at = match style {
            "jimo" => "/webhook/id",
            "iam" => "/data/webhook_id",
            _ => "/data/webhook/id",
        };
        let about = |r: &Received, id: &str| body(r).pointer(id_at) == Some(&json!(id));
        let got = eventually(WAIT, "acme's webhook.created at acme's webhook", || async {
            acme.received().into_iter().find(|r| about(r, &watched))
        })
        .await;
        let event = body(&got);
        assert_eq!(event.pointer(type_at), Some(&json!(created_type)), "{style}: {event}");
        assert_eq!(event.pointer(tenant_at), Some(&json!("acme")), "{style}: {event}");
        match style {
            "jimo" => assert_eq!(event["version"], "0"),
            "iam" => {
                assert!(event["event_time"].as_str().unwrap().ends_with('Z'), "{event}");
                assert_eq!(event["data"]["action"], "created");
            }
            _ => assert!(event["id"].as_str().unwrap().starts_with("sys_"), "{event}"),
        }

        // A marker: globex changes its own webhook, so globex's receiver is
        // sent an event routed after acme's.
        api.ok(
            Method::PATCH,
            &format!("/v1/webhooks/{globex_hook}"),
            GLOBEX,
            Some(json!({"name": "globex-system-2"})),
        )
        .await;
        let updated_type = created_type.replace("created", "updated").replace("CREATED", "UPDATED");
        eventually(WAIT, "globex's marker at globex's webhook", || async {
            globex
                .received()
                .iter()
                .any(|r| body(r).pointer(type_at) == Some(&json!(updated_type)))
                .then_some(())
        })
        .await;
        for r in globex.received() {
            let event = body(&r);
            assert_eq!(event.pointer(tenant_at), Some(&json!("globex")), "{style}: {event}");
        }
        for r in acme.received() {
            let event = body(&r);
            assert_eq!(event.pointer(tenant_at), Some(&json!("acme")), "{style}: {event}");
        }
        // The operator's webhook sees both tenants' events.
        eventually(WAIT, "every tenant's events at the operator's webhook", || async {
            let seen = ops.received();
            (seen.iter().any(|r| about(r, &watched)) && seen.iter().any(|r| about(r, &globex_hook))).then_some(())
        })
        .await;
        assert!(acme.received().iter().all(|r| !about(r, &ops_hook)), "{style}");
        assert_eq!(silent.count(), 0);
        app.stop().await;
    }
}

/// With `follow_tenant_catalog`, a tenant bound to the IAM catalog gets its
/// system events in the IAM envelope while another gets the deployment's
/// (Jimo) style on the same topic: the header rules route both.
#[tokio::test(flavor = "multi_thread")]
async fn system_events_follow_a_tenants_catalog_envelope_on_one_topic() {
    let env = TestEnv::new("sys-catalog", &["events"], 1).await;
    let overlay = format!(
        "{}{}[system_events]\nenvelope = \"jimo\"\nfollow_tenant_catalog = true\n",
        admin_overlay("24h").replace("acme = { catalog = \"jimo\" }", "acme = { catalog = \"iam\" }"),
        consuming_system_events(&env, HEADER_RULES)
    );
    let app = env.spawn(&overlay).await;
    let api = Api::new(&app);
    let (acme, globex) = (TestReceiver::ok().await, TestReceiver::ok().await);
    create(&api, ACME, "acme-system", &acme, &["WEBHOOK_*"]).await;
    create(&api, GLOBEX, "globex-system", &globex, &["webhook.*"]).await;
    app.wait_webhooks(2).await;
    let silent = TestReceiver::ok().await;
    let acme_watched = create(&api, ACME, "watched", &silent, &["USER_CREATED"]).await;
    let globex_watched = create(&api, GLOBEX, "watched", &silent, &["tour.completed"]).await;

    let got = eventually(WAIT, "acme's WEBHOOK_CREATED", || async {
        acme.received()
            .into_iter()
            .find(|r| body(r)["data"]["webhook_id"] == acme_watched.as_str())
    })
    .await;
    let event = body(&got);
    assert_eq!(event["event_type"], "WEBHOOK_CREATED", "{event}");
    assert_eq!(event["current_context"]["tenant_id"], "acme", "{event}");
    let got = eventually(WAIT, "globex's webhook.created", || async {
        globex
            .received()
            .into_iter()
            .find(|r| body(r)["webhook"]["id"] == globex_watched.as_str())
    })
    .await;
    let event = body(&got);
    assert_eq!(event["event"], "webhook.created", "{event}");
    assert_eq!(event["tenant"], "globex", "{event}");
    // Each saw only its own tenant's.
    assert!(acme
        .received()
        .iter()
        .all(|r| body(r)["current_context"]["tenant_id"] == "acme"));
    assert!(globex.received().iter().all(|r| body(r)["tenant"] == "globex"));
    assert_eq!(silent.count(), 0);
    app.stop().await;
}

/// The broker refuses the system topic's records (they are larger than it
/// accepts) until an operator raises its limit: the event waits, is tried
/// again, and is published once the broker accepts it; nothing is lost.
#[tokio::test(flavor = "multi_thread")]
async fn a_system_event_the_broker_refuses_at_first_is_published_when_it_accepts() {
    let env = TestEnv::new("sys-retry", &["events"], 1).await;
    set_max_message_bytes(&env.system, "80").await;
    let served = ApiOnly::start(&env, &admin_overlay("24h")).await;
    let api = &served.api;
    let receiver = TestReceiver::ok().await;
    let id = create(api, ACME, "refused", &receiver, &["tour.completed"]).await;

    eventually(WAIT, "the refused event to be tried again", || async {
        (served.metric("herald_system_event_retries_total").await >= 2.0).then_some(())
    })
    .await;
    assert_eq!(served.metric("herald_system_events_pending").await, 1.0);
    assert_eq!(served.metric("herald_system_event_errors_total").await, 0.0);

    set_max_message_bytes(&env.system, "1048588").await;
    let records = read_topic(&env.system, 1, WAIT).await;
    let event: Value = serde_json::from_slice(&records[0].value).unwrap();
    assert_eq!(event["event"], "webhook.created");
    assert_eq!(event["webhook"]["id"], id.as_str());
    assert_eq!(records[0].header("tenant"), "acme");
    assert_eq!(records[0].header("event-type"), "webhook.created");
    eventually(WAIT, "nothing left pending", || async {
        (served.metric("herald_system_events_pending").await == 0.0).then_some(())
    })
    .await;
    assert_eq!(served.metric("herald_system_event_errors_total").await, 0.0);
    served.stop().await;
}

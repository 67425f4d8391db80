//! Deliveries by tenant on /metrics: a failing tenant's failures and a
//! healthy tenant's successes under their own `tenant` labels, summing to
//! the totals, deliveries not attempted by tenant too, and the tenants
//! beyond `ops.max_tenant_series` under `(other)`.

use herald::webhook::WebhookStatus;

use crate::helpers::*;

const ORDER: &[u8] = br#"{"event":"order.paid","version":"0","time":1}"#;

/// acme's failed deliveries (its receiver answers 500).
const ACME_FAILED: &str = r#"herald_tenant_deliveries_total{class="5xx",outcome="failed",tenant="acme"}"#;

/// The successful deliveries of `tenant`'s label.
fn succeeded(tenant: &str) -> String {
    format!(r#"herald_tenant_deliveries_total{{class="2xx",outcome="succeeded",tenant="{tenant}"}}"#)
}

/// The sum of the samples of `family` whose labels include every one of
/// `labels` (written `name="value"`).
fn sum(text: &str, family: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter_map(|l| l.strip_prefix(family)?.strip_prefix('{'))
        .filter_map(|l| l.split_once("} "))
        .filter(|(set, _)| labels.iter().all(|want| set.split(',').any(|l| l == *want)))
        .map(|(_, value)| value.trim().parse::<f64>().unwrap())
        .sum()
}

/// Herald (configured with `extra`) delivering to webhooks `acme-orders`
/// (its receiver answers 500) and `globex-orders` (204), each subscribed to
/// its tenant's orders; no retry tiers, so each event is one attempt.
async fn two_tenants(name: &str, extra: &str) -> (TestEnv, RunningApp, TestReceiver, TestReceiver) {
    let mut env = TestEnv::new(name, &["events"], 1).await;
    env.overlay = TENANT_HEADER_RULES.into();
    let failing = TestReceiver::start(Behaviour::Status(500)).await;
    let healthy = TestReceiver::ok().await;
    let store = env.store().await;
    for (tenant, receiver) in [("acme", &failing), ("globex", &healthy)] {
        let mut w = webhook(&format!("{tenant}-orders"), &receiver.url("/"), &["order.*"]);
        w.tenant = Some(tenant.into());
        store.put(&w).await.unwrap();
    }
    let app = env.spawn(extra).await;
    app.wait_webhooks(2).await;
    (env, app, failing, healthy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_tenant_shows_its_failures_and_another_its_successes_under_their_own_labels() {
    let (env, app, failing, healthy) = two_tenants("tenant-metrics", "").await;
    let publisher = Publisher::new();
    for _ in 0..3 {
        publisher.tenant_event(env.topic(), "acme", ORDER).await;
    }
    for _ in 0..2 {
        publisher.tenant_event(env.topic(), "globex", ORDER).await;
    }
    app.wait_metric(ACME_FAILED, 3.0).await;
    app.wait_metric(&succeeded("globex"), 2.0).await;
    assert_eq!((failing.count(), healthy.count()), (3, 2));

    let text = app.metrics().await;
    let deliveries = |labels: &[&str]| sum(&text, "herald_tenant_deliveries_total", labels);
    assert_eq!(deliveries(&[r#"tenant="acme""#, r#"outcome="succeeded""#]), 0.0);
    assert_eq!(deliveries(&[r#"tenant="globex""#, r#"outcome="failed""#]), 0.0);
    assert_eq!(deliveries(&[r#"tenant="(none)""#]), 0.0);
    assert_eq!(deliveries(&[r#"tenant="(other)""#]), 0.0);
    let latencies = |tenant: &str, outcome: &str| {
        let labels = [tenant, outcome];
        sum(&text, "herald_tenant_delivery_duration_seconds_count", &labels)
    };
    assert_eq!(latencies(r#"tenant="acme""#, r#"outcome="failed""#), 3.0);
    assert_eq!(latencies(r#"tenant="globex""#, r#"outcome="succeeded""#), 2.0);
    // Summed over tenants, the series are the totals they break down.
    for (family, labels) in [
        ("herald_deliveries_total", &[r#"outcome="failed""#][..]),
        ("herald_deliveries_total", &[r#"outcome="succeeded""#][..]),
        ("herald_delivery_duration_seconds_count", &[][..]),
    ] {
        let by_tenant = family.replacen("herald_", "herald_tenant_", 1);
        assert_eq!(
            sum(&text, &by_tenant, labels),
            sum(&text, family, labels),
            "{family} {labels:?}"
        );
    }
    assert_eq!(sum(&text, "herald_deliveries_total", &[]), 5.0);

    // globex pauses its webhook: what it is not sent is counted as its own.
    let store = env.store().await;
    let mut paused = store.get("globex-orders").await.unwrap().unwrap();
    paused.status = WebhookStatus::Paused;
    store.put(&paused).await.unwrap();
    app.wait_status("paused", 1).await;
    publisher.tenant_event(env.topic(), "globex", ORDER).await;
    app.wait_metric(
        r#"herald_tenant_deliveries_not_attempted_total{status="paused",tenant="globex"}"#,
        1.0,
    )
    .await;
    let text = app.metrics().await;
    assert_eq!(sum(&text, "herald_tenant_deliveries_not_attempted_total", &[]), 1.0);
    assert_eq!(sum(&text, "herald_deliveries_not_attempted_total", &[]), 1.0);
    assert_eq!(healthy.count(), 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_beyond_max_tenant_series_are_counted_under_other() {
    let (env, app, _failing, _healthy) = two_tenants("tenant-metrics-cap", "[ops]\nmax_tenant_series = 1\n").await;
    let publisher = Publisher::new();
    // acme's delivery finishes first, so acme takes the one place.
    publisher.tenant_event(env.topic(), "acme", ORDER).await;
    app.wait_metric(ACME_FAILED, 1.0).await;
    for _ in 0..2 {
        publisher.tenant_event(env.topic(), "globex", ORDER).await;
    }
    app.wait_metric(&succeeded("(other)"), 2.0).await;
    publisher.tenant_event(env.topic(), "acme", ORDER).await;
    app.wait_metric(ACME_FAILED, 2.0).await;

    let text = app.metrics().await;
    assert!(
        !text.contains(r#"tenant="globex""#),
        "globex has no series of its own:\n{text}"
    );
    assert_eq!(
        sum(&text, "herald_tenant_deliveries_total", &[r#"tenant="(other)""#]),
        2.0
    );
    assert_eq!(
        sum(
            &text,
            "herald_tenant_delivery_duration_seconds_count",
            &[r#"tenant="(other)""#]
        ),
        2.0
    );
    assert_eq!(
        sum(&text, "herald_tenant_deliveries_total", &[]),
        sum(&text, "herald_deliveries_total", &[])
    );
    app.stop().await;
}

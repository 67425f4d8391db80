//! Receivers serving HTTPS with certificates an internal CA signed: trusted
//! through `delivery.ca_file`, refused without it; and receivers that
//! require a client certificate (mutual TLS), which a webhook's
//! `tls_client` presents.

use std::time::Duration;

use herald::retry::codec::headers as h;
use reqwest::Method;
use serde_json::{json, Value};

use crate::api::*;
use crate::cli::Herald;
use crate::helpers::*;

/// A receiver serving HTTPS with a certificate `receiver_ca` signed, a
/// webhook to it, and Herald trusting `trusted` through `delivery.ca_file`.
async fn herald_trusting(name: &str, receiver_ca: &TestCa, trusted: &TestCa) -> (TestEnv, TestReceiver, RunningApp) {
    let env = TestEnv::new(name, &["events"], 1).await;
    let dir = tempfile::tempdir().unwrap();
    let ca_file = trusted.write_pem(dir.path());
    let receiver = TestReceiver::start_tls(Behaviour::Status(204), receiver_ca).await;
    env.store()
        .await
        .put(&webhook("internal", &receiver.url("/hook"), &["*"]))
        .await
        .unwrap();
    // The file is read at start: it may go once Herald runs.
    let app = env
        .spawn(&format!("[delivery]\nca_file = \"{}\"", ca_file.display()))
        .await;
    (env, receiver, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_whose_certificate_an_internal_ca_signed_gets_its_events_once_delivery_ca_file_names_that_ca() {
    let ca = TestCa::new("Herald test receivers CA");
    let (env, receiver, app) = herald_trusting("https-ca", &ca, &ca).await;
    assert!(receiver.url("/hook").starts_with("https://localhost:"));

    three_events_reach(&env, &receiver, &app).await;
    app.stop().await;
}

/// Three events published reach `receiver`'s `/hook`, signed, each once.
async fn three_events_reach(env: &TestEnv, receiver: &TestReceiver, app: &RunningApp) {
    for n in 0..3 {
        Publisher::new()
            .json(env.topic(), &format!(r#"{{"event":"a.b","n":{n}}}"#))
            .await;
    }
    let got = receiver.wait_for(3, Duration::from_secs(30)).await;
    assert_eq!(got.len(), 3);
    for r in &got {
        assert_eq!(r.path, "/hook");
        assert!(r.header("webhook-signature").starts_with("v1,"), "{r:?}");
    }
    assert_eq!(
        app.metric(r#"herald_deliveries_total{class="2xx",outcome="succeeded"}"#)
            .await,
        3.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_delivery_ca_file_a_certificate_no_trusted_ca_signed_fails_the_delivery_naming_the_issuer() {
    // Trusting another CA does not trust this one.
    let (env, receiver, app) = herald_trusting(
        "https-untrusted",
        &TestCa::new("Herald test receivers CA"),
        &TestCa::new("Another CA"),
    )
    .await;

    Publisher::new().json(env.topic(), r#"{"event":"a.b"}"#).await;
    let letters = read_topic(&env.dlq, 1, Duration::from_secs(30)).await;
    assert_eq!(letters.len(), 1);
    let letter = &letters[0];
    assert_eq!(letter.header(h::LAST_CLASS), "network", "{letter:?}");
    assert!(
        letter.header(h::LAST_ERROR).contains("UnknownIssuer"),
        "the error names the certificate's problem: {letter:?}"
    );
    assert_eq!(receiver.count(), 0, "no request was sent over the refused connection");
    app.stop().await;
}

/// A receiver requiring a client certificate that `clients` signed, and
/// Herald trusting its server's CA, with the management API on.
async fn herald_and_mtls_receiver(name: &str, clients: &TestCa) -> (TestEnv, TestReceiver, RunningApp) {
    let env = TestEnv::new(name, &["events"], 1).await;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("Herald test receivers CA");
    let ca_file = ca.write_pem(dir.path());
    let receiver = TestReceiver::start_mtls(Behaviour::Status(204), &ca, clients).await;
    let app = env
        .spawn(&format!(
            "[delivery]\nca_file = \"{}\"\n{}",
            ca_file.display(),
            admin_overlay("24h")
        ))
        .await;
    (env, receiver, app)
}

/// A `tls_client` as the API takes it.
fn tls_client((certificate, key): &(String, String)) -> Value {
    json!({"certificate": certificate, "key": key})
}

/// The lines of a PEM key's body (never shown anywhere).
fn key_lines(key: &str) -> Vec<&str> {
    key.lines().filter(|l| !l.starts_with("-----")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_requiring_client_certificates_gets_the_events_of_a_webhook_presenting_one_its_ca_signed() {
    let clients = TestCa::new("Herald test clients CA");
    let (env, receiver, app) = herald_and_mtls_receiver("mtls-ok", &clients).await;
    let api = Api::new(&app);
    let identity = clients.client("herald billing");
    let created = api
        .create(
            OPS,
            json!({"id": "mtls", "name": "mtls", "url": receiver.url("/hook"), "events": ["*"], "tls_client": tls_client(&identity)}),
        )
        .await;
    assert_eq!(created["tls_client"]["key"], Value::Null, "{created}");
    app.wait_webhooks(1).await;

    three_events_reach(&env, &receiver, &app).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_without_a_client_certificate_fails_at_a_receiver_that_requires_one_as_a_network_failure_naming_it() {
    let clients = TestCa::new("Herald test clients CA");
    let (env, receiver, app) = herald_and_mtls_receiver("mtls-none", &clients).await;
    let api = Api::new(&app);
    api.create(
        OPS,
        json!({"id": "plain", "name": "plain", "url": receiver.url("/hook"), "events": ["*"]}),
    )
    .await;
    // A certificate the receiver's client CA did not sign is refused too.
    let stranger = TestCa::new("Another CA").client("herald billing");
    api.create(
        OPS,
        json!({"id": "stranger", "name": "stranger", "url": receiver.url("/other"), "events": ["*"], "tls_client": tls_client(&stranger)}),
    )
    .await;
    app.wait_webhooks(2).await;

    Publisher::new().json(env.topic(), r#"{"event":"a.b"}"#).await;
    let letters = read_topic(&env.dlq, 2, Duration::from_secs(60)).await;
    assert_eq!(letters.len(), 2);
    for letter in &letters {
        assert_eq!(letter.header(h::LAST_CLASS), "network", "{letter:?}");
        // The receiver's TLS alert: no certificate, or one of a CA it does
        // not trust.
        let alert = match letter.header(h::WEBHOOK_ID) {
            "plain" => "received fatal alert: CertificateRequired",
            "stranger" => "received fatal alert: UnknownCA",
            other => panic!("a letter of {other}"),
        };
        let error = letter.header(h::LAST_ERROR);
        assert!(error.contains(alert), "the error names the TLS problem: {error}");
    }
    assert_eq!(receiver.count(), 0, "no request was sent over a refused connection");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_and_the_cli_show_a_webhooks_client_certificate_and_never_its_key() {
    let clients = TestCa::new("Herald test clients CA");
    let (env, receiver, app) = herald_and_mtls_receiver("mtls-shown", &clients).await;
    let api = Api::new(&app);
    let identity = clients.client("herald billing");
    let fingerprint = herald::webhook::certificate_fingerprint(&identity.0).unwrap();
    let created = api
        .create(
            OPS,
            json!({"id": "shown", "name": "shown", "url": receiver.url("/hook"), "events": ["*"], "tls_client": tls_client(&identity)}),
        )
        .await;
    let expected = json!({"certificate": identity.0, "sha256": fingerprint, "key": null});
    assert_eq!(created["tls_client"], expected);
    let read = api.ok(Method::GET, "/v1/webhooks/shown", OPS, None).await;
    assert_eq!(read["tls_client"], expected);
    let list = api.ok(Method::GET, "/v1/webhooks", OPS, None).await;
    assert_eq!(list["data"][0]["tls_client"], expected);

    let herald = Herald::new(&env, &app, Some(OPS));
    let table = herald.ok(&["webhooks", "get", "shown"]).await.stdout;
    assert!(
        table.contains(&format!("certificate sha256 {fingerprint}")) && table.contains("key (hidden)"),
        "{table}"
    );
    let listed = herald.ok(&["webhooks", "list", "--json"]).await.stdout;
    let shown = [
        created.to_string(),
        read.to_string(),
        list.to_string(),
        table.clone(),
        listed.clone(),
    ];
    for text in &shown {
        for line in key_lines(&identity.1) {
            assert!(!text.contains(line), "the key is shown: {text}");
        }
    }

    // From files with the CLI; `none` removes; the API's `null` too.
    let dir = tempfile::tempdir().unwrap();
    let other = clients.client("herald billing, renewed");
    let (cert_file, key_file) = (dir.path().join("client.pem"), dir.path().join("client.key"));
    std::fs::write(&cert_file, &other.0).unwrap();
    std::fs::write(&key_file, &other.1).unwrap();
    let (cert_arg, key_arg) = (cert_file.to_str().unwrap(), key_file.to_str().unwrap());
    let changed = herald
        .ok(&[
            "webhooks",
            "update",
            "shown",
            "--client-cert",
            cert_arg,
            "--client-key",
            key_arg,
            "--json",
        ])
        .await
        .json();
    let renewed = herald::webhook::certificate_fingerprint(&other.0).unwrap();
    assert_eq!(changed["tls_client"]["sha256"], renewed.as_str(), "{changed}");
    let stored = env.store().await.get("shown").await.unwrap().unwrap();
    assert_eq!(
        stored.tls_client.as_ref().map(|t| &t.key),
        Some(&other.1),
        "stored as given"
    );
    let removed = herald
        .ok(&["webhooks", "update", "shown", "--client-cert", "none", "--json"])
        .await
        .json();
    assert_eq!(removed["tls_client"], Value::Null, "{removed}");
    let url = receiver.url("/cli");
    let mut create: Vec<&str> = "webhooks create --id cli --name cli --event * --json"
        .split(' ')
        .collect();
    create.extend(["--url", &url, "--client-cert", cert_arg, "--client-key", key_arg]);
    let created = herald.ok(&create).await.json();
    assert_eq!(created["tls_client"]["sha256"], renewed.as_str(), "{created}");
    let patched = api
        .ok(
            Method::PATCH,
            "/v1/webhooks/cli",
            OPS,
            Some(json!({"tls_client": null})),
        )
        .await;
    assert_eq!(patched["tls_client"], Value::Null);
    assert!(env
        .store()
        .await
        .get("cli")
        .await
        .unwrap()
        .unwrap()
        .tls_client
        .is_none());
    let lonely = herald
        .fails(&["webhooks", "update", "cli", "--client-cert", cert_arg])
        .await;
    assert!(lonely.contains("--client-key"), "{lonely}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_and_key_that_tls_cannot_use_are_refused_with_422_naming_the_field() {
    let clients = TestCa::new("Herald test clients CA");
    let (_env, receiver, app) = herald_and_mtls_receiver("mtls-refused", &clients).await;
    let api = Api::new(&app);
    let (certificate, _) = clients.client("one");
    let (_, other_key) = clients.client("two");
    let create = |tls: Value| json!({"id": "refused", "name": "refused", "url": receiver.url("/hook"), "events": ["*"], "tls_client": tls});
    let mismatched = api
        .call(
            Method::POST,
            "/v1/webhooks",
            OPS,
            Some(create(json!({"certificate": certificate, "key": other_key}))),
        )
        .await;
    assert_problem(&mismatched, 422, Some("tls_client.key"));
    for line in key_lines(&other_key) {
        assert!(!mismatched.body.to_string().contains(line), "{}", mismatched.body);
    }
    let not_pem = api
        .call(
            Method::POST,
            "/v1/webhooks",
            OPS,
            Some(create(json!({"certificate": "MIIB...", "key": other_key}))),
        )
        .await;
    assert_problem(&not_pem, 422, Some("tls_client.certificate"));

    let fine = clients.client("three");
    api.create(OPS, create(tls_client(&fine))).await;
    let patched = api
        .call(
            Method::PATCH,
            "/v1/webhooks/refused",
            OPS,
            Some(json!({"tls_client": {"certificate": fine.0, "key": other_key}})),
        )
        .await;
    assert_problem(&patched, 422, Some("tls_client.key"));
    let kept = api.ok(Method::GET, "/v1/webhooks/refused", OPS, None).await;
    assert_eq!(
        kept["tls_client"]["sha256"],
        herald::webhook::certificate_fingerprint(&fine.0).unwrap().as_str()
    );
    app.stop().await;
}

#[path = "../../examples/common/tls_receivers.rs"]
mod tls_receivers;

/// TLS sessions with more receiver hosts than rustls's default cache holds
/// are kept and resumed: 64 receivers, each its own address (127.0.0.2 on)
/// and certificate, get an event each on a connection closed after it
/// (`pool_max_idle_per_host = 0`), then a second event each, on a new
/// connection that resumes the first one's session from the shared cache
/// (`delivery.tls_session_cache`, 1,024 hosts). rustls's default, what
/// Herald's clients kept before, holds 256 tickets, 8 to a host: the
/// sessions of 32 hosts, so the first hosts' sessions were gone by the time
/// their second event went.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_with_more_receiver_hosts_than_rustls_keeps_by_default_are_resumed_when_connections_reopen() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    const HOSTS: usize = 64;
    let env = TestEnv::new("tls-sessions", &["events"], 1).await;
    let dir = tempfile::tempdir().unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    let router = axum::Router::new().fallback(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        async { axum::http::StatusCode::NO_CONTENT }
    });
    let receivers = tls_receivers::TlsReceivers::start(HOSTS, router, dir.path()).await;
    let store = env.store().await;
    for (n, addr) in receivers.addrs.iter().enumerate() {
        store
            .put(&webhook(&format!("host-{n}"), &format!("https://{addr}/hook"), &["*"]))
            .await
            .unwrap();
    }
    let app = env
        .spawn(&format!(
            "[delivery]\nca_file = \"{}\"\npool_max_idle_per_host = 0",
            receivers.ca_file.display()
        ))
        .await;
    let counts = &receivers.counts;
    for round in 1..=2 {
        Publisher::new()
            .json(env.topic(), &format!(r#"{{"event":"a.b","round":{round}}}"#))
            .await;
        let received = &received;
        eventually(
            Duration::from_secs(120),
            &format!("round {round}'s {HOSTS} requests"),
            || async move { (received.load(Ordering::Relaxed) >= round * HOSTS).then_some(()) },
        )
        .await;
    }
    let (full, resumed) = (
        counts.full.load(Ordering::Relaxed) as usize,
        counts.resumed.load(Ordering::Relaxed) as usize,
    );
    assert_eq!(counts.refused.load(Ordering::Relaxed), 0);
    assert_eq!(
        full + resumed,
        2 * HOSTS,
        "a connection per request: {full} full, {resumed} resumed"
    );
    assert_eq!(
        resumed, HOSTS,
        "every second connection resumed: {full} full, {resumed} resumed"
    );
    app.stop().await;
}

//! Receivers serving HTTPS with certificates an internal CA signed: trusted
//! through `delivery.ca_file`, refused without it.

use std::time::Duration;

use herald::retry::codec::headers as h;

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
    app.stop().await;
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

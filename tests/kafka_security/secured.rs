//! Connecting to a secured cluster with the settings docs/operations.md
//! gives, being refused at start with the reason when they are wrong, and
//! what a write the ACLs deny does to deliveries.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::helpers::*;

const EVENT: &str = r#"{"event":"invoice.paid","version":"0","time":1740133769000}"#;

/// The secured broker: its super-user listener's port (the others follow
/// it) and its certificates.
struct Secured {
    port: u16,
    tls: PathBuf,
}

/// How Herald connects.
#[derive(Debug, Clone, Copy)]
enum Listener {
    SaslPlaintext,
    Ssl,
    SaslSsl,
}

fn secured() -> Secured {
    let address = std::env::var("HERALD_TEST_SECURE_KAFKA").expect(
        "HERALD_TEST_SECURE_KAFKA is not set: run these tests with scripts/test, which starts a secured \
         broker (start_secure_kafka in scripts/lib.sh)",
    );
    let port = address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("host:port");
    let tls = std::env::var("HERALD_TEST_SECURE_KAFKA_TLS").expect("HERALD_TEST_SECURE_KAFKA_TLS");
    // Tests set up topics and ACLs as the super user.
    use_brokers(&address);
    Secured {
        port,
        tls: PathBuf::from(tls),
    }
}

impl Secured {
    /// Herald's `[kafka]` overlay for `listener`, as user `herald` with
    /// `password`, trusting `ca` (a file in the test CA's directory).
    fn overlay(&self, listener: Listener, password: &str, ca: &str) -> String {
        let (offset, protocol) = match listener {
            Listener::SaslPlaintext => (1, "SASL_PLAINTEXT"),
            Listener::Ssl => (2, "SSL"),
            Listener::SaslSsl => (3, "SASL_SSL"),
        };
        let mut properties = format!("\"security.protocol\" = \"{protocol}\"\n");
        if !matches!(listener, Listener::Ssl) {
            properties += &format!(
                "\"sasl.mechanisms\" = \"SCRAM-SHA-512\"\n\"sasl.username\" = \"herald\"\n\
                 \"sasl.password\" = \"{password}\"\n"
            );
        }
        if !matches!(listener, Listener::SaslPlaintext) {
            properties += &format!("\"ssl.ca.location\" = \"{}\"\n", self.tls.join(ca).display());
        }
        format!(
            "[kafka]\nbrokers = \"127.0.0.1:{}\"\n[kafka.properties]\n{properties}",
            self.port + offset
        )
    }

    /// Runs Kafka's own ACL tool as the super user.
    fn acls(&self, args: &[&str]) {
        let libs = std::env::var("HERALD_TEST_KAFKA_LIBS").expect("HERALD_TEST_KAFKA_LIBS (set by scripts/test)");
        let out = Command::new("java")
            .arg("-cp")
            .arg(format!("{libs}/*"))
            .arg("org.apache.kafka.tools.AclCommand")
            .args(["--bootstrap-server", &format!("127.0.0.1:{}", self.port)])
            .args(args)
            .output()
            .expect("java runs");
        assert!(
            out.status.success(),
            "kafka-acls {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Denies user `herald` writing to `topic` (or lifts that).
    fn deny_write(&self, topic: &str, deny: bool) {
        let change: &[&str] = if deny { &["--add"] } else { &["--remove", "--force"] };
        let acl = [
            "--deny-principal",
            "User:herald",
            "--operation",
            "Write",
            "--topic",
            topic,
        ];
        self.acls(&[change, &acl[..]].concat());
    }

    /// Allows user `herald` everything on `env`'s topics and groups (named
    /// after the test), and nothing else.
    fn allow_own(&self, env: &TestEnv) {
        let id = env.group.trim_end_matches("-group");
        self.acls(&[
            "--add",
            "--allow-principal",
            "User:herald",
            "--operation",
            "All",
            "--topic",
            &format!("{id}."),
            "--group",
            &env.group,
            "--resource-pattern-type",
            "prefixed",
        ]);
    }
}

async fn delivers_through(name: &str, listener: Listener) {
    let secured = secured();
    let (env, receiver) = failing_once(name, 500).await;
    secured.allow_own(&env);
    let app = env.spawn(&secured.overlay(listener, "herald-password", "ca.pem")).await;
    Publisher::new().json(env.topic(), EVENT).await;
    let got = receiver.wait_for(2, Duration::from_secs(60)).await;
    assert_eq!(
        (got[0].attempt(), got[1].attempt()),
        (1, 2),
        "read, retried through the tier"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herald_delivers_and_retries_over_sasl_ssl_as_a_principal_allowed_only_its_own_topics_and_groups() {
    delivers_through("sec-sasl-ssl", Listener::SaslSsl).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herald_delivers_and_retries_over_sasl_scram_without_tls() {
    delivers_through("sec-sasl", Listener::SaslPlaintext).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn herald_delivers_and_retries_over_tls() {
    delivers_through("sec-tls", Listener::Ssl).await;
}

/// Why Herald refuses to start with `overlay`.
async fn refusal(env: &TestEnv, overlay: &str) -> String {
    let app = herald::Application::build(env.config(overlay))
        .await
        .expect("the configuration is valid; the broker is asked at start");
    let run = app.run_until_stopped(tokio_util::sync::CancellationToken::new());
    match tokio::time::timeout(Duration::from_secs(90), run).await {
        Ok(Err(e)) => format!("{e:#}"),
        Ok(Ok(())) => panic!("Herald ran and stopped with {overlay}"),
        Err(_) => panic!("Herald did not refuse to start within 90 s with {overlay}"),
    }
}

/// Why Herald, allowed its topics, refuses to start over SASL_SSL with
/// `password`, trusting `ca`.
async fn refused_with(name: &str, password: &str, ca: &str) -> String {
    let secured = secured();
    let (env, _receiver) = failing_once(name, 500).await;
    secured.allow_own(&env);
    let message = refusal(&env, &secured.overlay(Listener::SaslSsl, password, ca)).await;
    println!("{message}");
    message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_stops_herald_at_start_saying_authentication_failed() {
    let message = refused_with("sec-password", "not-the-password", "ca.pem").await;
    assert!(message.contains("SASL authentication error"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_certificate_no_trusted_ca_signed_stops_herald_at_start_saying_so() {
    let message = refused_with("sec-untrusted", "herald-password", "other-ca.pem").await;
    assert!(message.contains("certificate verify failed"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_tier_the_acls_close_to_herald_sends_its_retries_to_the_dead_letter_topic_saying_why() {
    let secured = secured();
    let (env, receiver) = failing_once("sec-deny-tier", 500).await;
    secured.allow_own(&env);
    let tier = env.tiers[0].0.clone();
    secured.deny_write(&tier, true);
    let app = env
        .spawn(&secured.overlay(Listener::SaslSsl, "herald-password", "ca.pem"))
        .await;
    Publisher::new().json(env.topic(), EVENT).await;
    receiver.wait_for(1, Duration::from_secs(30)).await;

    let letters = read_topic(&env.dlq, 1, Duration::from_secs(60)).await;
    let letter = &letters[0];
    assert_eq!(letter.header("herald.webhook.id"), "flaky", "{letter:?}");
    let detail = letter.header("herald.detail");
    assert!(detail.contains(&format!("`{tier}` refused the record")), "{detail}");
    assert!(
        detail.contains("TopicAuthorizationFailed") || detail.contains("authoriz"),
        "{detail}"
    );
    app.wait_metric(r#"herald_failure_record_downgrades_total{to="dead_letter"}"#, 1.0)
        .await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_topic_the_acls_close_holds_its_event_visibly_until_they_open_and_loses_nothing() {
    let secured = secured();
    let env = TestEnv::new("sec-deny-dlq", &["events"], 1).await;
    let receiver = TestReceiver::start(Behaviour::Status(410)).await;
    env.store()
        .await
        .put(&webhook("gone", &receiver.url("/"), &["*"]))
        .await
        .unwrap();
    secured.allow_own(&env);
    secured.deny_write(&env.dlq, true);
    let overlay = secured.overlay(Listener::SaslSsl, "herald-password", "ca.pem") + "[ops]\nstall_after = \"2s\"\n";
    let app = env.spawn(&overlay).await;
    Publisher::new().json(env.topic(), EVENT).await;
    receiver.wait_for(1, Duration::from_secs(30)).await;

    // The dead letter is refused: counted, the partition shown stalled on
    // /status, its offset uncommitted.
    eventually(Duration::from_secs(30), "the refusals to be counted", || async {
        (app.metric("herald_failure_record_produce_errors_total").await >= 1.0).then_some(())
    })
    .await;
    let status = eventually(
        Duration::from_secs(30),
        "/status to show the partition stalled",
        || async {
            let body = reqwest::get(format!("http://{}/status", app.ops))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            let status: serde_json::Value = serde_json::from_str(&body).ok()?;
            (status["stalled_partitions"] == 1).then_some(status)
        },
    )
    .await;
    assert_eq!(
        status["consumers"]["source"]["partitions"][0]["in_flight"], 1,
        "{status}"
    );
    assert_eq!(committed(&env.group, env.topic(), 1).await, [-1001]);

    // Allowed again, the dead letter is written and the event committed.
    secured.deny_write(&env.dlq, false);
    let letters = read_topic(&env.dlq, 1, Duration::from_secs(60)).await;
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].header("herald.webhook.id"), "gone");
    eventually(Duration::from_secs(30), "the event to be committed", || async {
        (committed(&env.group, env.topic(), 1).await == [1]).then_some(())
    })
    .await;
    assert_eq!(receiver.count(), 1, "delivered once, dead-lettered once");
    app.stop().await;
}

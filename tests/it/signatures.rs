//! Herald's signatures verify with the official Standard Webhooks library
//! (Python), which Herald's code has nothing in common with.

use std::time::Duration;

use herald::webhook::generate_secret;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::helpers::*;

struct PythonReceiver {
    port: u16,
    out: tempfile::NamedTempFile,
    _child: tokio::process::Child,
}

impl PythonReceiver {
    async fn start(secrets: &[&str]) -> PythonReceiver {
        let out = tempfile::NamedTempFile::new().unwrap();
        let mut cmd = tokio::process::Command::new(python());
        cmd.arg(repo_path("scripts/receiver.py"))
            .args(["--port", "0", "--out"])
            .arg(out.path());
        for s in secrets {
            cmd.args(["--secret", s]);
        }
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("python receiver starts");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("receiver announces its port")
            .unwrap()
            .unwrap();
        let port = first.strip_prefix("listening on ").unwrap().parse().unwrap();
        PythonReceiver {
            port,
            out,
            _child: child,
        }
    }

    fn records(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.out.path())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_verify_with_the_standard_webhooks_library_for_every_secret() {
    let mut env = TestEnv::new("signatures", &["events"], 1).await;
    env.overlay = "[envelope.default]\npreset = \"iam\"".into();
    let (new, old, unrelated) = (generate_secret(), generate_secret(), generate_secret());
    let receiver = PythonReceiver::start(&[&new, &old, &unrelated]).await;
    let mut w = webhook(
        "rotating",
        &format!("http://127.0.0.1:{}/hook", receiver.port),
        &["USER_*"],
    );
    w.secrets = vec![new.clone(), old.clone()];
    env.store().await.put(&w).await.unwrap();
    let app = env.spawn("").await;

    let bodies = [
        r#"{"event_time":"2025-02-21T08:15:03Z","event_type":"USER_CREATED","current_context":{},"data":{"name":"Zoë ✓"}}"#,
        r#"{"event_type":"USER_DELETED","data":{"nested":{"list":[1,2.5e3,"x\"y"]}}}"#,
    ];
    let publisher = Publisher::new();
    for body in bodies {
        publisher.json(env.topic(), body).await;
    }
    let records = eventually(Duration::from_secs(20), "two verified deliveries", || async {
        let r = receiver.records();
        (r.len() >= 2).then_some(r)
    })
    .await;
    for record in &records {
        assert_eq!(
            record["verified_with"],
            serde_json::json!([0, 1]),
            "both the new and the old secret verify, the unrelated one does not: {record}"
        );
        let signature = record["headers"]["webhook-signature"].as_str().unwrap();
        assert_eq!(signature.split(' ').count(), 2, "one signature per secret");
        assert!(
            bodies.contains(&record["body"].as_str().unwrap()),
            "the body arrives byte for byte"
        );
    }
    app.stop().await;
}

//! Herald's signatures verify with the Standard Webhooks libraries for
//! Python, Node.js and Rust, which Herald's code has nothing in common with,
//! for every secret a webhook signs with; an unrelated secret, a changed body
//! and a changed timestamp verify with none.

use std::time::Duration;

use axum::http::HeaderValue;
use herald::webhook::generate_secret;

use crate::helpers::*;
use crate::standard_webhooks::{verify_each, Check};

/// A CloudEvent in binary mode whose data is not UTF-8 text (Herald reads
/// nothing in it and sends it as published).
const BLOB: &[u8] = b"\x00\xff\xfe binary \xc3\x28 data";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signatures_verify_with_the_standard_webhooks_libraries_for_every_secret() {
    let mut env = TestEnv::new("signatures", &["iam", "ce"], 1).await;
    env.overlay = format!(
        "[envelope.topics.\"{}\"]\npreset = \"iam\"\n[envelope.topics.\"{}\"]\npreset = \"cloudevents\"\n",
        env.topics[0], env.topics[1]
    );
    let (new, old, unrelated) = (generate_secret(), generate_secret(), generate_secret());
    let receiver = TestReceiver::ok().await;
    let mut w = webhook(
        "rotating",
        &receiver.url("/hook"),
        &["USER_*", "com.example.blob.stored"],
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
        publisher.json(&env.topics[0], body).await;
    }
    publisher
        .send(
            &env.topics[1],
            None,
            BLOB,
            &[
                ("ce_specversion", "1.0"),
                ("ce_type", "com.example.blob.stored"),
                ("ce_source", "/blobs"),
                ("ce_id", "blob-1"),
                ("content-type", "application/octet-stream"),
            ],
        )
        .await;
    let received = receiver.wait_for(3, Duration::from_secs(20)).await;
    assert!(received.iter().any(|r| r.body == BLOB), "the CloudEvent is delivered");

    for request in &received {
        let signature = request.header("webhook-signature");
        assert_eq!(signature.split(' ').count(), 2, "one signature per secret");
        assert!(
            bodies.iter().any(|b| b.as_bytes() == request.body) || request.body == BLOB,
            "the body arrives byte for byte"
        );
        // The same request with one byte of the body changed, and with its
        // timestamp a second later (still within the libraries' tolerance).
        let mut body = request.body.to_vec();
        let last = body.len() - 1;
        body[last] ^= 0x01;
        let mut later = request.headers.clone();
        let timestamp: i64 = request.header("webhook-timestamp").parse().unwrap();
        later.insert("webhook-timestamp", HeaderValue::from(timestamp + 1));
        let as_sent = |secret| Check {
            secret,
            headers: &request.headers,
            body: &request.body,
        };
        let checks = [
            ("the new secret", as_sent(&new), true),
            ("the old secret", as_sent(&old), true),
            ("an unrelated secret", as_sent(&unrelated), false),
            (
                "a changed body",
                Check {
                    secret: &new,
                    headers: &request.headers,
                    body: &body,
                },
                false,
            ),
            (
                "a changed timestamp",
                Check {
                    secret: &new,
                    headers: &later,
                    body: &request.body,
                },
                false,
            ),
        ];
        let verdicts = verify_each(&checks.iter().map(|c| c.1.clone()).collect::<Vec<_>>());
        let text = std::str::from_utf8(&request.body).is_ok();
        for ((what, _, verifies), verdicts) in checks.iter().zip(&verdicts) {
            for (library, verdict) in verdicts.each() {
                // The Python and Rust libraries decode the body as UTF-8
                // before they compute the signature, so they refuse a body
                // that is not text whatever its signature: only the npm
                // package verifies the bytes as they are.
                let expected = *verifies && (text || library == "node");
                assert_eq!(
                    verdict.is_ok(),
                    expected,
                    "{library} with {what}: {verdict:?}, for the request with {}",
                    String::from_utf8_lossy(&request.body)
                );
            }
            if !text {
                assert!(
                    verdicts.python.as_ref().unwrap_err().starts_with("UnicodeDecodeError"),
                    "{verdicts:?}"
                );
                assert!(
                    verdicts.rust.as_ref().unwrap_err().starts_with("InvalidPayload"),
                    "{verdicts:?}"
                );
            }
        }
    }
    app.stop().await;
}

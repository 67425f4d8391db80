//! Herald's requests checked by the Standard Webhooks libraries a receiver
//! verifies them with, none of which shares code with Herald: the Python one
//! (PyPI `standardwebhooks`) and the Node.js one (npm `standardwebhooks`), run
//! as a receiver in those languages would, and the Rust crate
//! (crates.io `standardwebhooks`) in this process. The scripts they run are in
//! `tests/it/standard_webhooks/`.

use std::io::Write;
use std::process::{Command, Stdio};

use axum::http::HeaderMap;
use base64::Engine;
use serde_json::{json, Value};

use crate::helpers::*;

/// One request as a receiver got it, and a secret to verify it with.
#[derive(Clone)]
pub struct Check<'a> {
    pub secret: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// What each library said of one [`Check`]: `Ok` when the request verifies
/// with the secret, else the library's error.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdicts {
    pub python: Result<(), String>,
    pub node: Result<(), String>,
    pub rust: Result<(), String>,
}

impl Verdicts {
    /// Each library's name and verdict.
    pub fn each(&self) -> [(&'static str, &Result<(), String>); 3] {
        [("python", &self.python), ("node", &self.node), ("rust", &self.rust)]
    }
}

/// The directory of the npm package `standardwebhooks`, which `scripts/test`
/// installs.
fn node_package() -> String {
    std::env::var("HERALD_TEST_STANDARDWEBHOOKS_JS").expect(
        "HERALD_TEST_STANDARDWEBHOOKS_JS names the npm package standardwebhooks: run the suite with scripts/test",
    )
}

/// Runs `program args` with `checks` as JSON on stdin; its answer is a JSON
/// list of one result per check (null: verified, or the error).
fn run(program: &str, args: &[String], checks: &Value) -> Vec<Result<(), String>> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program} starts: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(checks.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Option<String>> = serde_json::from_slice(&out.stdout).unwrap();
    results.into_iter().map(|r| r.map_or(Ok(()), Err)).collect()
}

/// Verifies each check with the three libraries.
pub fn verify_each(checks: &[Check]) -> Vec<Verdicts> {
    let input: Value = checks
        .iter()
        .map(|c| {
            let headers: serde_json::Map<String, Value> = c
                .headers
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_owned(), json!(v.to_str().ok()?))))
                .collect();
            json!({
                "secret": c.secret,
                "headers": headers,
                "body": base64::engine::general_purpose::STANDARD.encode(c.body),
            })
        })
        .collect();
    let scripts = repo_path("tests/it/standard_webhooks");
    let python = run(&python(), &[scripts.join("verify.py").display().to_string()], &input);
    let node = run(
        "node",
        &[scripts.join("verify.js").display().to_string(), node_package()],
        &input,
    );
    checks
        .iter()
        .zip(python.into_iter().zip(node))
        .map(|(c, (python, node))| Verdicts {
            python,
            node,
            rust: standardwebhooks::Webhook::new(c.secret)
                .and_then(|w| w.verify(c.body, c.headers))
                .map_err(|e| format!("{e:?}: {e}")),
        })
        .collect()
}

/// Whether `request` verifies with `secret`: true when every library
/// verifies it, false when none does. Libraries that disagree fail the test.
pub fn verifies(secret: &str, request: &Received) -> bool {
    let verdicts = verify_each(&[Check {
        secret,
        headers: &request.headers,
        body: &request.body,
    }])
    .remove(0);
    let oks: Vec<bool> = verdicts.each().iter().map(|(_, v)| v.is_ok()).collect();
    assert!(
        oks.iter().all(|&ok| ok == oks[0]),
        "the Standard Webhooks libraries disagree: {verdicts:?}"
    );
    oks[0]
}

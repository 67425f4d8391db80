//! A client of the management API for tests, and the tokens the tests use.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::*;

pub const OPS: &str = "ops-5c2cf58c9f1a2aedc0a315c8";
pub const ACME: &str = "acme-598e8c0db748b5493ce16061";
pub const GLOBEX: &str = "globex-56fe63af063ccfb0c3292200";

pub fn admin_overlay(overlap: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"
max_body_bytes = 4096
secret_rotation_overlap = "{overlap}"
tokens = [
  {{ name = "ops", token = "{OPS}" }},
  {{ name = "acme-portal", token = "{ACME}", tenant = "acme" }},
  {{ name = "globex-portal", token = "{GLOBEX}", tenant = "globex" }},
]
[admin.tenants]
acme = {{ catalog = "jimo" }}
"#
    )
}

/// A client of one running API.
pub struct Api {
    pub base: String,
    http: reqwest::Client,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Api {
    pub fn new(app: &RunningApp) -> Api {
        Api::at(app.admin.expect("the API is on"))
    }

    /// A client of the API served at `addr`.
    pub fn at(addr: std::net::SocketAddr) -> Api {
        Api {
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
        }
    }

    pub async fn raw(&self, method: Method, path: &str, token: Option<&str>, body: Option<(&str, Vec<u8>)>) -> Reply {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some((content_type, bytes)) = body {
            req = req.header("content-type", content_type).body(bytes);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON ({status}): {text}"))
        };
        Reply { status, headers, body }
    }

    pub async fn call(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> Reply {
        let body = body.map(|b| ("application/json", serde_json::to_vec(&b).unwrap()));
        self.raw(method, path, Some(token), body).await
    }

    /// Creates a webhook with `token`; the webhook as the API shows it.
    pub async fn create(&self, token: &str, body: Value) -> Value {
        self.ok(Method::POST, "/v1/webhooks", token, Some(body)).await
    }

    pub async fn ok(&self, method: Method, path: &str, token: &str, body: Option<Value>) -> Value {
        let reply = self.call(method.clone(), path, token, body).await;
        assert!(
            reply.status.is_success(),
            "{method} {path}: {} {}",
            reply.status,
            reply.body
        );
        reply.body
    }

    /// Waits until the replay `job` (as the API returned it) stops running;
    /// returns it as it then is.
    pub async fn replay_finished(&self, job: &Value, token: &str) -> Value {
        let path = format!("/v1/replays/{}", job["id"].as_str().unwrap());
        eventually(std::time::Duration::from_secs(30), "the replay to finish", || async {
            let job = self.ok(Method::GET, &path, token, None).await;
            (job["state"] != "running").then_some(job)
        })
        .await
    }
}

/// A problem reply with this status naming this field.
pub fn assert_problem(reply: &Reply, status: u16, field: Option<&str>) {
    assert_eq!(reply.status.as_u16(), status, "{}", reply.body);
    assert_eq!(
        reply.headers.get("content-type").unwrap(),
        "application/problem+json",
        "{}",
        reply.body
    );
    assert_eq!(reply.body["status"], status);
    if let Some(field) = field {
        assert_eq!(reply.body["errors"][0]["field"], field, "{}", reply.body);
    }
}

/// The management API alone (`herald api`) in this process: no consumers,
/// so it is ready at once; for tests of the API itself.
pub struct ApiOnly {
    pub api: Api,
    ops: std::net::SocketAddr,
    shutdown: tokio_util::sync::CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl ApiOnly {
    /// Serves `env`'s configuration with `overlay` over it.
    pub async fn start(env: &TestEnv, overlay: &str) -> ApiOnly {
        let config = env.config(overlay);
        herald::telemetry::logging::init(&config.log);
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ops = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = Api::at(admin.local_addr().unwrap());
        let ops_addr = ops.local_addr().unwrap();
        let shutdown = tokio_util::sync::CancellationToken::new();
        let handle = tokio::spawn(herald::app::serve_api(config, admin, ops, shutdown.clone()));
        ApiOnly {
            api,
            ops: ops_addr,
            shutdown,
            handle,
        }
    }

    /// The value of a metric series on its `/metrics`.
    pub async fn metric(&self, series: &str) -> f64 {
        metric_at(self.ops, series).await
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.expect("API task").expect("the API stops cleanly");
    }
}

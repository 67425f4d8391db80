//! Herald under test: in this process ([`RunningApp`]) or as its own
//! ([`HeraldProcess`]), and its metrics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use herald::config::Config;
use herald::Application;
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::*;

/// Herald running in this process.
pub struct RunningApp {
    pub ops: SocketAddr,
    /// The management API, when tokens are configured.
    pub admin: Option<SocketAddr>,
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
    /// Why the run ended, when it ended with an error.
    ended: Arc<Mutex<Option<String>>>,
}

impl RunningApp {
    pub async fn start(config: Config) -> RunningApp {
        let running = RunningApp::start_unready(config).await;
        running.wait_ready().await;
        running
    }

    pub async fn start_unready(config: Config) -> RunningApp {
        herald::telemetry::logging::init(&config.log);
        let app = Application::build(config).await.expect("application builds");
        let ops = app.ops_addr();
        let admin = app.admin_addr();
        let shutdown = CancellationToken::new();
        let ended = Arc::new(Mutex::new(None));
        let why = ended.clone();
        let run = app.run_until_stopped(shutdown.clone());
        let handle = tokio::spawn(async move {
            let result = run.await;
            if let Err(e) = &result {
                *why.lock() = Some(format!("{e:#}"));
            }
            result
        });
        RunningApp {
            ops,
            admin,
            shutdown,
            handle,
            ended,
        }
    }

    /// Waits until the replica's index holds `n` webhooks.
    pub async fn wait_webhooks(&self, n: u64) {
        eventually(
            Duration::from_secs(10),
            "the index to hold the webhooks",
            || async move { (self.readyz().await["webhooks"] == n).then_some(()) },
        )
        .await;
    }

    /// Waits until the replica's index holds `n` webhooks of `status`.
    pub async fn wait_status(&self, status: &str, n: u64) {
        let series = format!(r#"herald_webhooks{{status="{status}"}}"#);
        eventually(Duration::from_secs(10), "the index to have the status", || async {
            (self.metric(&series).await == n as f64).then_some(())
        })
        .await;
    }

    /// How many times the replica has applied changes; after a change, pass
    /// it to [`RunningApp::wait_applied`].
    pub async fn changes_applied(&self) -> f64 {
        self.metric(r#"herald_subscription_syncs_total{kind="change"}"#).await
    }

    /// Waits until the replica has applied a change since `before`.
    pub async fn wait_applied(&self, before: f64) {
        eventually(Duration::from_secs(10), "the change to reach the replica", || async {
            (self.changes_applied().await > before).then_some(())
        })
        .await;
    }

    /// `/readyz`'s body.
    pub async fn readyz(&self) -> serde_json::Value {
        let body = reqwest::get(format!("http://{}/readyz", self.ops))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        serde_json::from_str(&body).unwrap()
    }

    /// Waits until /readyz answers 200: generously, since a consumer's first
    /// join on a cluster just formed waits for the group coordinator to
    /// load. Fails at once when Herald's run ends, with its error; a timeout
    /// names what /readyz and /status said last.
    pub async fn wait_ready(&self) {
        let url = format!("http://{}/readyz", self.ops);
        let last = parking_lot::Mutex::new(String::new());
        let ready = tokio::time::timeout(
            Duration::from_secs(90),
            eventually(Duration::from_secs(120), "Herald to become ready", || {
                let (url, last) = (url.clone(), &last);
                async move {
                    if self.handle.is_finished() {
                        return Some(());
                    }
                    let reply = reqwest::get(&url).await.ok()?;
                    let ok = reply.status().is_success();
                    *last.lock() = reply.text().await.unwrap_or_default();
                    ok.then_some(())
                }
            }),
        )
        .await;
        assert!(
            !self.handle.is_finished(),
            "Herald stopped before it was ready: {}",
            self.ended.lock().as_deref().unwrap_or("without an error")
        );
        if ready.is_err() {
            let status = match reqwest::get(format!("http://{}/status", self.ops)).await {
                Ok(reply) => reply.text().await.unwrap_or_default(),
                Err(e) => e.to_string(),
            };
            panic!(
                "Herald did not become ready in 90 s; /readyz said: {}; /status said: {status}",
                last.lock()
            );
        }
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.ops))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of a metric series, e.g. `herald_deliveries_total{class="2xx",outcome="succeeded"}`.
    pub async fn metric(&self, series: &str) -> f64 {
        metric_value(&self.metrics().await, series)
    }

    /// Waits until the metric `series` reads `value`.
    pub async fn wait_metric(&self, series: &str, value: f64) {
        eventually(
            Duration::from_secs(30),
            &format!("{series} to read {value}"),
            || async { (self.metric(series).await == value).then_some(()) },
        )
        .await
    }

    /// Herald is still running: it has not stopped or failed on its own.
    #[allow(dead_code)] // the cluster tests' (tests/cluster)
    pub fn is_running(&self) -> bool {
        !self.handle.is_finished()
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.expect("app task").expect("app stops cleanly");
    }
}

/// The value of a metric series on the `/metrics` served at `ops`.
pub async fn metric_at(ops: SocketAddr, series: &str) -> f64 {
    let text = reqwest::get(format!("http://{ops}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metric_value(&text, series)
}

/// The value of `series` in a Prometheus text exposition (0 when absent).
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}

/// Herald as its own process (for kill -9 and signal tests).
pub struct HeraldProcess {
    pub child: tokio::process::Child,
    /// Where its /metrics, /healthz and /readyz are served.
    pub ops: SocketAddr,
    /// Where its management API is served, when its configuration has tokens.
    pub admin: SocketAddr,
    _config: tempfile::NamedTempFile,
}

impl HeraldProcess {
    pub fn spawn(config_toml: &str) -> HeraldProcess {
        use std::io::Write;
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(config_toml.as_bytes()).unwrap();
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
        };
        let (ops, admin) = (free(), free());
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .arg("--config")
            .arg(file.path())
            .arg("run")
            .env("RUST_LOG", "warn")
            .env("HERALD_OPS__LISTEN", ops.to_string())
            .env("HERALD_ADMIN__LISTEN", admin.to_string())
            .kill_on_drop(true)
            .spawn()
            .expect("herald starts");
        HeraldProcess {
            child,
            ops,
            admin,
            _config: file,
        }
    }

    /// Waits until it is ready (index loaded, assignment received), so a
    /// signal sent next finds its handlers installed.
    pub async fn wait_ready(&self) {
        let url = format!("http://{}/readyz", self.ops);
        eventually(Duration::from_secs(60), "the Herald process to become ready", || {
            let url = url.clone();
            async move { reqwest::get(&url).await.ok()?.status().is_success().then_some(()) }
        })
        .await;
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    pub fn signal(&self, signal: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap();
        assert!(status.success());
    }
}

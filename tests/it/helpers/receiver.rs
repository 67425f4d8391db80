//! HTTP receivers on 127.0.0.1 that record what they are sent and answer
//! as a test asks ([`TestReceiver`], [`Behaviour`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use tokio::task::JoinHandle;

use super::*;

/// How a [`TestReceiver`] answers.
#[derive(Clone, Debug)]
pub enum Behaviour {
    Status(u16),
    /// Answers after a delay.
    Delay(Duration, u16),
    /// Redirects to the given path.
    Redirect(String),
    /// Never answers.
    Hang,
    /// Holds every request until the gate [`gate`] made opens, and for at
    /// least 100 ms, then answers 204: requests sent at once are open at
    /// once, so [`TestReceiver::most_at_once`] sees them.
    Gated(tokio::sync::watch::Receiver<bool>),
    /// The n-th request gets the n-th status; the last one repeats.
    Sequence(Vec<u16>),
    /// Answers `status` (with `Retry-After` when given) to attempts up to
    /// `attempts` (the `herald-attempt` header), 204 after.
    FailAttempts {
        attempts: u32,
        status: u16,
        retry_after: Option<String>,
    },
    /// Answers 500 to this share of requests (per mille), chosen at
    /// random, 204 to the others.
    FailRandomly(u32),
}

/// A [`Behaviour::Gated`] receiver's behaviour and its gate: `send(true)`
/// opens it, for the held requests and every later one.
pub fn gate() -> (tokio::sync::watch::Sender<bool>, Behaviour) {
    let (open, gate) = tokio::sync::watch::channel(false);
    (open, Behaviour::Gated(gate))
}

/// Answers `status` (with `Retry-After` when given) to the first `attempts`
/// attempts of each delivery, 204 after.
pub fn failing(attempts: u32, status: u16, retry_after: Option<&str>) -> Behaviour {
    Behaviour::FailAttempts {
        attempts,
        status,
        retry_after: retry_after.map(str::to_owned),
    }
}

/// One request a receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub at: std::time::Instant,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Answered with a failure by [`Behaviour::FailRandomly`].
    pub failed_randomly: bool,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }

    pub fn attempt(&self) -> u32 {
        self.header("herald-attempt").parse().unwrap()
    }
}

#[derive(Clone)]
struct ReceiverState {
    received: Arc<Mutex<Vec<Received>>>,
    behaviour: Arc<Mutex<Behaviour>>,
    /// Requests not yet answered, and the most there ever were.
    open_requests: Arc<Mutex<(usize, usize)>>,
    /// Connections accepted.
    connections: Arc<std::sync::atomic::AtomicUsize>,
}

/// Counts one request as open until it is answered (or abandoned).
struct OpenRequest(Arc<Mutex<(usize, usize)>>);

impl OpenRequest {
    fn new(open: &Arc<Mutex<(usize, usize)>>) -> OpenRequest {
        let mut counts = open.lock();
        counts.0 += 1;
        counts.1 = counts.1.max(counts.0);
        OpenRequest(open.clone())
    }
}

impl Drop for OpenRequest {
    fn drop(&mut self) {
        self.0.lock().0 -= 1;
    }
}

impl ReceiverState {
    /// A receiver's state, and the app that records into it and answers.
    fn app(behaviour: Behaviour) -> (ReceiverState, axum::Router) {
        let state = ReceiverState {
            received: Arc::default(),
            behaviour: Arc::new(Mutex::new(behaviour)),
            open_requests: Arc::default(),
            connections: Arc::default(),
        };
        let app = axum::Router::new().fallback(handle).with_state(state.clone());
        (state, app)
    }
}

/// An HTTP server on 127.0.0.1 recording what it is sent.
pub struct TestReceiver {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`, or `https://localhost:PORT`.
    base: String,
    state: ReceiverState,
    _server: JoinHandle<()>,
}

impl TestReceiver {
    pub async fn start(behaviour: Behaviour) -> TestReceiver {
        let (state, app) = ReceiverState::app(behaviour);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = state.connections.clone();
        let listener = axum::serve::ListenerExt::tap_io(listener, move |_| {
            connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        TestReceiver {
            addr,
            base: format!("http://{addr}"),
            state,
            _server: server,
        }
    }

    /// A receiver serving HTTPS with a certificate `ca` signed for
    /// `localhost`; [`TestReceiver::url`] names it by that name.
    pub async fn start_tls(behaviour: Behaviour, ca: &TestCa) -> TestReceiver {
        Self::serving_tls(behaviour, ca.server_config()).await
    }

    /// [`TestReceiver::start_tls`], requiring a client certificate that
    /// `clients` signed: a client without one is refused in the handshake.
    pub async fn start_mtls(behaviour: Behaviour, ca: &TestCa, clients: &TestCa) -> TestReceiver {
        Self::serving_tls(behaviour, ca.server_config_requiring(clients)).await
    }

    async fn serving_tls(behaviour: Behaviour, config: std::sync::Arc<rustls::ServerConfig>) -> TestReceiver {
        let (state, app) = ReceiverState::app(behaviour);
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = state.connections.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    continue;
                };
                connections.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    // A client refusing the certificate ends its handshake.
                    let Ok(tls) = acceptor.accept(socket).await else {
                        return;
                    };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        TestReceiver {
            addr,
            base: format!("https://localhost:{}", addr.port()),
            state,
            _server: server,
        }
    }

    pub async fn ok() -> TestReceiver {
        Self::start(Behaviour::Status(204)).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Changes how later requests are answered.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *self.state.behaviour.lock() = behaviour;
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().clone()
    }

    pub fn count(&self) -> usize {
        self.state.received.lock().len()
    }

    /// The most requests it has had open (received, not yet answered) at
    /// once.
    pub fn most_at_once(&self) -> usize {
        self.state.open_requests.lock().1
    }

    /// The connections it has accepted.
    pub fn connections(&self) -> usize {
        self.state.connections.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits until at least `n` requests arrived; returns them.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        eventually(timeout, &format!("{n} requests at {}", self.addr), || async {
            let r = self.received();
            (r.len() >= n).then_some(r)
        })
        .await
    }
}

async fn handle(State(state): State<ReceiverState>, uri: axum::http::Uri, headers: HeaderMap, body: Bytes) -> Response {
    let attempt: u32 = headers
        .get("herald-attempt")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let _open = OpenRequest::new(&state.open_requests);
    let index = state.received.lock().len();
    let behaviour = state.behaviour.lock().clone();
    let failed_randomly =
        matches!(behaviour, Behaviour::FailRandomly(per_mille) if rand::random::<u32>() % 1000 < per_mille);
    state.received.lock().push(Received {
        failed_randomly,
        at: std::time::Instant::now(),
        path: uri.path().to_owned(),
        headers,
        body,
    });
    match behaviour {
        Behaviour::Status(s) => StatusCode::from_u16(s).unwrap().into_response(),
        Behaviour::Delay(d, s) => {
            tokio::time::sleep(d).await;
            StatusCode::from_u16(s).unwrap().into_response()
        }
        Behaviour::Redirect(to) => (StatusCode::FOUND, [("location", to)]).into_response(),
        Behaviour::Sequence(statuses) => {
            let s = statuses[index.min(statuses.len() - 1)];
            StatusCode::from_u16(s).unwrap().into_response()
        }
        Behaviour::FailAttempts {
            attempts,
            status,
            retry_after,
        } => {
            if attempt > attempts {
                return StatusCode::NO_CONTENT.into_response();
            }
            let status = StatusCode::from_u16(status).unwrap();
            match retry_after {
                Some(ra) => (status, [("retry-after", ra)]).into_response(),
                None => status.into_response(),
            }
        }
        Behaviour::FailRandomly(_) => {
            if failed_randomly {
                StatusCode::INTERNAL_SERVER_ERROR.into_response()
            } else {
                StatusCode::NO_CONTENT.into_response()
            }
        }
        Behaviour::Hang => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        Behaviour::Gated(mut gate) => {
            let held_until = tokio::time::Instant::now() + Duration::from_millis(100);
            // A gate dropped with the test opens nothing: the request hangs.
            if gate.wait_for(|open| *open).await.is_err() {
                std::future::pending::<()>().await;
            }
            tokio::time::sleep_until(held_until).await;
            StatusCode::NO_CONTENT.into_response()
        }
    }
}

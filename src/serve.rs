//! Serving HTTP with limits, for the management API (with the portal, which
//! browsers reach) and the operations listener.
//!
//! Both face clients Herald does not control, and a replica's memory and
//! file descriptors are what its deliveries need: a client that opens
//! connections and never finishes a request must not take them. So each
//! listener
//! - holds at most `max_connections` at once: past that, a new connection is
//!   accepted and closed at once (counted), so the backlog never fills with
//!   them either;
//! - closes a connection whose request head does not arrive within
//!   `header_read_timeout`, which also bounds how long a kept-alive
//!   connection may sit idle between requests (hyper starts the same timer
//!   when it waits for the next request);
//! - answers 408 to a request not handled within `request_timeout`, a slow
//!   body included. A response that streams (the portal's live tail) is not
//!   cut: the timeout ends when its head is sent.
//!
//! On shutdown it stops accepting, lets the requests under way finish for a
//! few seconds, and closes the rest.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::telemetry::Metrics;

/// How long requests under way may take to finish once shutdown begins.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What one listener allows its clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections held at once.
    pub max_connections: usize,
    /// For a request's head (line and headers), and for the next request on
    /// a kept-alive connection.
    pub header_read_timeout: Duration,
    /// For handling a request, its body included, until the response head.
    pub request_timeout: Duration,
}

impl Limits {
    /// What the operations listener allows (`ops.*`).
    pub fn of_ops(ops: &crate::config::ops::OpsConfig) -> Limits {
        Limits {
            max_connections: ops.max_connections,
            header_read_timeout: ops.header_read_timeout,
            request_timeout: ops.request_timeout,
        }
    }

    /// What the management API's listener allows (`admin.*`).
    pub fn of_admin(admin: &crate::config::admin::AdminConfig) -> Limits {
        Limits {
            max_connections: admin.max_connections,
            header_read_timeout: admin.header_read_timeout,
            request_timeout: admin.request_timeout,
        }
    }
}

/// Raises the process's open-file limit as far as the system allows, and
/// says when the listeners' caps with `sockets_for_deliveries` (and some
/// room for Kafka, Redis and files) could still exceed it: a flood of API
/// connections must never leave a delivery without a socket. Returns the
/// limit now in force, if it could be read.
pub fn reserve_descriptors(listeners: &[Limits], sockets_for_deliveries: usize) -> Option<u64> {
    /// Kafka brokers, Redis, log files, the binary's own: a generous allowance.
    const OTHERS: u64 = 256;
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read or raise the open-file limit");
            return None;
        }
    };
    let needed =
        listeners.iter().map(|l| l.max_connections as u64).sum::<u64>() + sockets_for_deliveries as u64 + OTHERS;
    if limit < needed {
        tracing::warn!(
            limit,
            needed,
            "the open-file limit is below what the listeners' max_connections, delivery.max_in_flight and \
             Kafka and Redis may need at once: raise it (ulimit -n, the container's nofile) or lower \
             admin.max_connections"
        );
    }
    Some(limit)
}

/// Serves `router` on `listener` within `limits` until `shutdown`. `name`
/// labels the listener's metrics (`admin`, `ops`).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    name: &'static str,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let router = router.layer(tower_http::timeout::TimeoutLayer::with_status_code(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        limits.request_timeout,
    ));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let open = metrics.http_connections.with_label_values(&[name]);
    let refused = metrics.http_connections_refused.with_label_values(&[name]);
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of descriptors, or a connection reset before it was
                // accepted: wait a little rather than spin.
                Err(e) => {
                    tracing::warn!(listener = name, error = %e, "could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused.inc();
            drop(stream);
            continue;
        };
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .keep_alive(true);
        let connection = http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(router.clone()));
        let connection = graceful.watch(connection);
        let open = open.clone();
        open.inc();
        tokio::spawn(async move {
            // Errors here are the client's (a reset, a timeout): nothing to do.
            let _ = connection.await;
            open.dec();
            drop(slot);
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::info!(listener = name, "connections still open at shutdown are closed");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_file_limit_is_raised_as_far_as_the_system_allows() {
        let (soft, hard) = rlimit::Resource::NOFILE.get().unwrap();
        let limits = Limits {
            max_connections: 1024,
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
        };
        let now = reserve_descriptors(&[limits], 512).expect("readable on Linux");
        assert!(now >= soft, "never lowered: {soft} -> {now}");
        assert_eq!(now, rlimit::Resource::NOFILE.get().unwrap().0, "in force");
        assert!(now <= hard);
    }
}

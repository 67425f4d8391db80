//! The operational HTTP listener: `/metrics`, `/healthz`, `/readyz`, `/status`.
//!
//! Liveness only says the process serves HTTP. Readiness says this replica is
//! doing its job: the subscription index has loaded from Redis and the
//! consumer group has given it an assignment. A replica with an empty
//! assignment (more replicas than partitions) is still ready: it is a healthy
//! standby, and a rolling update must not wait on it forever. Neither says
//! whether its partitions progress: `/status` does, per assigned partition,
//! and names those that stalled (a restart would not help them; see
//! docs/operations.md).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::intake::flow::Flow;
use crate::subscriptions::live::SubscriptionIndex;
use crate::telemetry::Metrics;

/// What the handlers read.
#[derive(Clone)]
pub struct OpsState {
    pub metrics: Metrics,
    pub index: Arc<SubscriptionIndex>,
    /// The source consumer's flow (readiness).
    pub flow: Arc<Flow>,
    /// Every consumer's flow, by name (`/status`).
    pub consumers: Vec<(&'static str, Arc<Flow>)>,
    /// When a partition counts as stalled.
    pub stall_after: Duration,
}

/// The router, separate from serving so tests can call it directly.
pub fn router(state: OpsState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .with_state(state)
}

/// The listener of `herald api` (the management API alone): `/metrics` and
/// `/healthz`, and `/readyz` as soon as it serves (there is no index to
/// load nor partitions to receive; a request that needs an unreachable
/// Redis answers 503 itself).
pub fn api_router(metrics: Metrics) -> Router {
    Router::new()
        .route("/metrics", get(api_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { Json(json!({"ready": true})) }))
        .with_state(metrics)
}

async fn api_metrics(State(metrics): State<Metrics>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], metrics.render())
}

/// Serves `router` within `limits` until `shutdown` is cancelled.
pub async fn serve_router(
    listener: TcpListener,
    router: Router,
    limits: crate::serve::Limits,
    metrics: Metrics,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    crate::serve::serve(listener, router, limits, "ops", metrics, shutdown).await
}

/// Serves within `limits` until `shutdown` is cancelled.
pub async fn serve(
    listener: TcpListener,
    state: OpsState,
    limits: crate::serve::Limits,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let metrics = state.metrics.clone();
    serve_router(listener, router(state), limits, metrics, shutdown).await
}

async fn metrics(State(state): State<OpsState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        state.metrics.render(),
    )
}

async fn readyz(State(state): State<OpsState>) -> impl IntoResponse {
    let index_loaded = state.index.is_loaded();
    let assigned = state.flow.has_assignment();
    // Each consumer's group: whether it was given its (perhaps empty)
    // assignment yet, and how many partitions it holds. Only the source's
    // gates readiness; the retry group's follows it within moments.
    let consumers: serde_json::Map<String, serde_json::Value> = state
        .consumers
        .iter()
        .map(|(name, flow)| {
            let group = json!({
                "assignment_received": flow.has_assignment(),
                "partitions": flow.assigned_count(),
            });
            (name.to_string(), group)
        })
        .collect();
    let body = json!({
        "ready": index_loaded && assigned,
        "subscriptions_loaded": index_loaded,
        "webhooks": state.index.len(),
        "group_assignment_received": assigned,
        "partitions": state.flow.assigned().len(),
        "consumers": consumers,
    });
    let status = if index_loaded && assigned {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

/// Why a partition counts as stalled, if it does.
fn stalled(h: &crate::intake::flow::PartitionHealth, stall_after: Duration, now: SystemTime) -> Option<String> {
    if let Some(n) = h.not_read {
        let since = now.duration_since(n.since).unwrap_or_default();
        return Some(format!(
            "{} records wait past offset {} but the client reads none; resumed {} times in {}",
            n.end - n.read_to,
            n.read_to,
            n.times,
            humantime::format_duration(Duration::from_secs(since.as_secs()))
        ));
    }
    if h.oldest_unfinished > stall_after {
        return Some(format!(
            "an event has been in flight for {}",
            humantime::format_duration(Duration::from_secs(h.oldest_unfinished.as_secs()))
        ));
    }
    let quiet = now.duration_since(h.last_commit).unwrap_or_default();
    match h.lag {
        Some(lag) if lag > 0 && h.held == 0 && quiet > stall_after => Some(format!(
            "{lag} records wait and nothing was committed for {}",
            humantime::format_duration(Duration::from_secs(quiet.as_secs()))
        )),
        _ => None,
    }
}

/// Every assigned partition of every consumer: lag, events in flight and
/// held, the oldest one's age, the last commit, and whether it stalled; and
/// the brokers each consumer's client sees, with their connection state.
/// 200 when none stalled, 503 otherwise (for a probe that should page, not
/// restart).
async fn status(State(state): State<OpsState>) -> impl IntoResponse {
    let now = SystemTime::now();
    let mut stalled_count = 0;
    let consumers: serde_json::Map<String, serde_json::Value> = state
        .consumers
        .iter()
        .map(|(name, flow)| {
            let partitions: Vec<serde_json::Value> = flow
                .health()
                .iter()
                .map(|h| {
                    let why = stalled(h, state.stall_after, now);
                    stalled_count += usize::from(why.is_some());
                    let committed = time::OffsetDateTime::from(h.last_commit)
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default();
                    json!({
                        "topic": &*h.tp.0,
                        "partition": h.tp.1,
                        "lag": h.lag,
                        "in_flight": h.in_flight,
                        "held_until_due": h.held,
                        "oldest_unfinished_seconds": h.oldest_unfinished.as_secs_f64(),
                        "last_commit": committed,
                        "seconds_since_commit": now.duration_since(h.last_commit).unwrap_or_default().as_secs(),
                        "not_read_repairs": h.not_read.map_or(0, |n| n.times),
                        "stalled": why,
                    })
                })
                .collect();
            let brokers: Vec<serde_json::Value> = flow
                .brokers()
                .get()
                .iter()
                .map(|b| {
                    json!({
                        "id": b.id,
                        "address": b.address,
                        "state": b.state,
                        "unreachable": b.unreachable(),
                        "seconds_in_state": b.for_time.as_secs(),
                        "requests_waiting": b.waiting,
                        "seconds_since_answer": b.silent.map(|s| s.as_secs()),
                    })
                })
                .collect();
            (
                name.to_string(),
                json!({ "partitions": partitions, "brokers": brokers }),
            )
        })
        .collect();
    let body = json!({
        "stalled_partitions": stalled_count,
        "stall_after_seconds": state.stall_after.as_secs(),
        "consumers": consumers,
    });
    let code = if stalled_count == 0 {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::intake::flow::PartitionHealth;

    fn health(oldest: u64, lag: Option<i64>, held: usize, quiet: u64, now: SystemTime) -> PartitionHealth {
        PartitionHealth {
            tp: ("t".into(), 0),
            in_flight: 1,
            held,
            oldest_unfinished: Duration::from_secs(oldest),
            last_commit: now - Duration::from_secs(quiet),
            lag,
            not_read: None,
        }
    }

    #[test]
    fn a_partition_stalls_on_an_old_event_or_on_waiting_records_and_no_commit() {
        let now = SystemTime::now();
        let bound = Duration::from_secs(120);
        assert_eq!(
            stalled(&health(5, Some(10), 0, 5, now), bound, now),
            None,
            "busy and progressing"
        );
        assert_eq!(
            stalled(&health(0, Some(0), 0, 3600, now), bound, now),
            None,
            "idle: nothing waits"
        );
        assert!(stalled(&health(300, Some(1), 0, 5, now), bound, now)
            .unwrap()
            .contains("in flight for 5m"));
        assert!(stalled(&health(0, Some(3), 0, 600, now), bound, now)
            .unwrap()
            .contains("3 records wait and nothing was committed for 10m"));
        assert_eq!(
            stalled(&health(0, Some(3), 2, 600, now), bound, now),
            None,
            "retries held until due are waiting, not stalled"
        );
        assert_eq!(
            stalled(&health(0, None, 0, 600, now), bound, now),
            None,
            "lag not known yet"
        );
        let mut unread = health(0, Some(1190), 0, 5, now);
        unread.not_read = Some(crate::intake::flow::NotRead {
            since: now - Duration::from_secs(45),
            times: 2,
            read_to: 256,
            end: 1446,
        });
        assert_eq!(
            stalled(&unread, bound, now).unwrap(),
            "1190 records wait past offset 256 but the client reads none; resumed 2 times in 45s",
            "found by the progress check: at once, whatever stall_after says"
        );
    }
}

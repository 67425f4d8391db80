//! The operational HTTP listener: `/metrics`, `/healthz`, `/readyz`.
//!
//! Liveness only says the process serves HTTP. Readiness says this replica is
//! doing its job: the subscription index has loaded from Redis and the
//! consumer group has given it an assignment. A replica with an empty
//! assignment (more replicas than partitions) is still ready: it is a healthy
//! standby, and a rolling update must not wait on it forever.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::intake::flow::Flow;
use crate::subscriptions::sync::SubscriptionIndex;
use crate::telemetry::Metrics;

/// What the handlers read.
#[derive(Clone)]
pub struct OpsState {
    pub metrics: Metrics,
    pub index: Arc<SubscriptionIndex>,
    pub flow: Arc<Flow>,
}

/// The router, separate from serving so tests can call it directly.
pub fn router(state: OpsState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Serves until `shutdown` is cancelled.
pub async fn serve(listener: TcpListener, state: OpsState, shutdown: CancellationToken) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
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
    let body = json!({
        "ready": index_loaded && assigned,
        "subscriptions_loaded": index_loaded,
        "webhooks": state.index.load().len(),
        "group_assignment_received": assigned,
        "partitions": state.flow.assigned().len(),
    });
    let status = if index_loaded && assigned {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

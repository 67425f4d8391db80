//! A webhook's delivery history by event: one record per event delivered
//! (or kept) to it, where it stands, and its attempts beneath.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use crate::admin::auth::Caller;
use crate::admin::deliveries::{history, page, redis_error};
use crate::admin::extract::{ApiPath, ApiQuery};
use crate::admin::problem::Problem;
use crate::admin::webhooks::load;
use crate::admin::AdminState;
use crate::history::record::{DeliveryRecord, DeliveryStatus};
use crate::routing::pattern_matches;

/// Filters and paging of a webhook's deliveries.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// Only deliveries that stand so.
    pub status: Option<DeliveryStatus>,
    /// Only deliveries of events of this type (exact, `prefix.*` or `*`).
    pub event_type: Option<String>,
    /// Only deliveries first recorded at or after this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub since: Option<OffsetDateTime>,
    /// Only deliveries first recorded before this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub until: Option<OffsetDateTime>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size (1 to 500; default `admin.default_page_size`).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
}

/// A page of deliveries, newest (by first record) first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryPage {
    pub data: Vec<DeliveryRecord>,
    pub next_cursor: Option<String>,
}

/// A webhook's deliveries, one per event: `delivered`, `pending_retry`
/// (with when it is due next), `dead_lettered` or `kept` (while the webhook
/// was paused or disabled), each with its attempts beneath.
#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}/events",
    tag = "deliveries",
    params(("id" = String, Path, description = "Webhook id"), EventQuery),
    responses((status = 200, description = "A page of deliveries", body = DeliveryPage))
)]
pub async fn list(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<EventQuery>,
) -> Result<Json<DeliveryPage>, Problem> {
    let limit = crate::admin::page_size(&state, query.limit)?;
    let id = load(&state, &caller, &id).await?.id;
    let deliveries = history(&state)?.deliveries(&id).await.map_err(redis_error)?;
    let event_type = query.event_type.filter(|e| !e.is_empty());
    let (data, next_cursor) = page(
        deliveries,
        query.cursor.as_deref(),
        limit,
        |d| &d.delivery_id,
        |d| {
            query.status.is_none_or(|s| d.status == s)
                && event_type.as_ref().is_none_or(|p| pattern_matches(p, &d.event_type))
                && query.since.is_none_or(|t| d.first_at >= t)
                && query.until.is_none_or(|t| d.first_at < t)
        },
    )?;
    Ok(Json(DeliveryPage { data, next_cursor }))
}

/// One delivery of an event to the webhook, by its `webhook-id`.
#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}/events/{delivery_id}",
    tag = "deliveries",
    params(("id" = String, Path, description = "Webhook id"), ("delivery_id" = String, Path, description = "The delivery's `webhook-id` (`msg_...`)")),
    responses((status = 200, description = "The delivery", body = DeliveryRecord))
)]
pub async fn get(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath((id, delivery_id)): ApiPath<(String, String)>,
) -> Result<Json<DeliveryRecord>, Problem> {
    let id = load(&state, &caller, &id).await?.id;
    history(&state)?
        .deliveries(&id)
        .await
        .map_err(redis_error)?
        .into_iter()
        .find(|d| d.delivery_id == delivery_id)
        .map(Json)
        .ok_or_else(|| Problem::not_found("delivery", &delivery_id))
}

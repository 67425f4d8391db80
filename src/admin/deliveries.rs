//! A webhook's deliveries: history, statistics, manual retry, bulk replay
//! and test pings.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;
use utoipa::{IntoParams, ToSchema};

use crate::admin::auth::Caller;
use crate::admin::extract::{ApiJson, ApiPath, ApiQuery, OptionalJson};
use crate::admin::jobs::{Pool, ReplayJob, Work};
use crate::admin::problem::Problem;
use crate::admin::webhooks::{change_loaded, load};
use crate::admin::AdminState;
use crate::delivery::target::{EndpointDefaults, Target};
use crate::event::{Event, EventMeta, SourceRecord};
use crate::history::record::{AttemptRecord, Outcome};
use crate::history::store::{Scope, Stats};
use crate::history::HistoryStore;
use crate::retry::codec::Binding;
use crate::retry::pending::{self, PendingRun};
use crate::retry::reason::Reason;
use crate::retry::redrive::{deliver_again, Again};
use crate::retry::replay::{ReplayFilter, ReplayOptions};
use crate::routing::pattern_matches;
use crate::webhook::WebhookStatus;

/// The history store, or 404 when history is off.
pub(crate) fn history(state: &AdminState) -> Result<&HistoryStore, Problem> {
    state.history().ok_or_else(|| {
        Problem::new(
            StatusCode::NOT_FOUND,
            "history-disabled",
            "Delivery history is off",
            Some("history.enabled is false on this deployment".into()),
        )
    })
}

/// A history read or write Redis refused.
pub(crate) fn redis_error(e: redis::RedisError) -> Problem {
    Problem::unavailable("delivery history", &e)
}

/// Filters and paging of the delivery history.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// Only attempts with this outcome.
    pub status: Option<Outcome>,
    /// Only attempts of events of this type (exact, `prefix.*` or `*`).
    pub event_type: Option<String>,
    /// Only attempts of this delivery (`webhook-id`).
    pub delivery_id: Option<String>,
    /// Only attempts made at or after this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub since: Option<OffsetDateTime>,
    /// Only attempts made before this time (RFC 3339).
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[param(value_type = Option<String>, format = DateTime)]
    pub until: Option<OffsetDateTime>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size (1 to 500; default `admin.default_page_size`).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
}

/// A page of attempts, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptPage {
    pub data: Vec<AttemptRecord>,
    pub next_cursor: Option<String>,
}

/// A webhook's delivery attempts, newest first: time, attempt number,
/// outcome, duration, the request (headers and body) and the response
/// (status, headers, body), bodies cut at `history.max_body_bytes`.
#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}/deliveries",
    tag = "deliveries",
    params(("id" = String, Path, description = "Webhook id"), DeliveryQuery),
    responses((status = 200, description = "A page of attempts", body = AttemptPage))
)]
pub async fn list(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<DeliveryQuery>,
) -> Result<Json<AttemptPage>, Problem> {
    let limit = crate::admin::page_size(&state, query.limit)?;
    let id = load(&state, &caller, &id).await?.id;
    let attempts = history(&state)?.attempts(&id).await.map_err(redis_error)?;
    let event_type = query.event_type.filter(|e| !e.is_empty());
    let delivery = query.delivery_id.filter(|d| !d.is_empty());
    let (data, next_cursor) = page(
        attempts,
        query.cursor.as_deref(),
        limit,
        |a| &a.id,
        |a| {
            query.status.is_none_or(|s| a.outcome == s)
                && event_type.as_ref().is_none_or(|p| pattern_matches(p, &a.event_type))
                && delivery.as_ref().is_none_or(|d| a.delivery_id == *d)
                && query.since.is_none_or(|t| a.at >= t)
                && query.until.is_none_or(|t| a.at < t)
        },
    )?;
    Ok(Json(AttemptPage { data, next_cursor }))
}

/// A page of `items` (newest first): those after `cursor` (the key of the
/// last item of the previous page) that `keep`, at most `limit`, and the
/// cursor of the next page when there is one.
pub(crate) fn page<T>(
    items: Vec<T>,
    cursor: Option<&str>,
    limit: usize,
    key: impl Fn(&T) -> &str,
    keep: impl Fn(&T) -> bool,
) -> Result<(Vec<T>, Option<String>), Problem> {
    let start = match cursor.filter(|c| !c.is_empty()) {
        None => 0,
        Some(cursor) => {
            items
                .iter()
                .position(|item| key(item) == cursor)
                .ok_or_else(|| Problem::bad_request("`cursor` is not in this webhook's history"))?
                + 1
        }
    };
    let mut matching = items.into_iter().skip(start).filter(|item| keep(item));
    let data: Vec<T> = matching.by_ref().take(limit).collect();
    let next_cursor = match matching.next() {
        Some(_) => data.last().map(|item| key(item).to_owned()),
        None => None,
    };
    Ok((data, next_cursor))
}

/// One attempt.
#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}/deliveries/{attempt_id}",
    tag = "deliveries",
    params(("id" = String, Path, description = "Webhook id"), ("attempt_id" = String, Path, description = "Attempt id (`att_...`)")),
    responses((status = 200, description = "The attempt", body = AttemptRecord))
)]
pub async fn get(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath((id, attempt_id)): ApiPath<(String, String)>,
) -> Result<Json<AttemptRecord>, Problem> {
    let id = load(&state, &caller, &id).await?.id;
    find(&state, &id, &attempt_id).await.map(Json)
}

async fn find(state: &AdminState, id: &str, attempt_id: &str) -> Result<AttemptRecord, Problem> {
    history(state)?
        .attempts(id)
        .await
        .map_err(redis_error)?
        .into_iter()
        .find(|a| a.id == attempt_id)
        .ok_or_else(|| Problem::not_found("attempt", attempt_id))
}

/// A delivery scheduled again.
#[derive(Debug, Serialize, ToSchema)]
pub struct Retried {
    /// The `webhook-id` the new attempt carries: the same as before.
    pub delivery_id: String,
    /// Attempts already made; the next is this plus one.
    pub attempts: u32,
}

/// Delivers an attempt's event again, now, with the same `webhook-id`: the
/// event is read back from Kafka and goes through the redrive topic (due at
/// once, whatever the retry tiers hold) to the webhook as it is now.
#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/deliveries/{attempt_id}/retry",
    tag = "deliveries",
    params(("id" = String, Path, description = "Webhook id"), ("attempt_id" = String, Path, description = "Any attempt of the delivery")),
    responses(
        (status = 202, description = "Scheduled", body = Retried),
        (status = 409, description = "The event is no longer retained by Kafka", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn retry(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath((id, attempt_id)): ApiPath<(String, String)>,
) -> Result<(StatusCode, Json<Retried>), Problem> {
    let webhook = load(&state, &caller, &id).await?;
    let id = webhook.id.clone();
    let attempt = find(&state, &id, &attempt_id).await?;
    let attempts = history(&state)?
        .attempts(&id)
        .await
        .map_err(redis_error)?
        .iter()
        .filter(|a| a.delivery_id == attempt.delivery_id)
        .map(|a| a.attempt)
        .max()
        .unwrap_or(attempt.attempt);
    let source = &attempt.source;
    let record = crate::kafka::read_record(&state.config().kafka, &source.topic, source.partition, source.offset)
        .await
        .map_err(|e| Problem::unavailable("Kafka cluster", &e))?
        .ok_or_else(|| {
            Problem::conflict(format!(
                "the event ({}/{}/{}) is no longer retained by Kafka",
                source.topic, source.partition, source.offset
            ))
        })?;
    let meta = state
        .envelopes()
        .for_topic(&record.topic)
        .recognise(&record)
        .map_err(|why| Problem::conflict(format!("the event can no longer be read: {}", why.detail)))?;
    let again = Again {
        record: &record,
        meta: &meta,
        binding: Binding::of(&webhook),
        delivery_id: &attempt.delivery_id,
        attempts,
        by: &caller.name,
    };
    deliver_again(state.failures(), again, &CancellationToken::new())
        .await
        .map_err(|_| Problem::unavailable("Kafka cluster", &"the retry record was not acknowledged"))?;
    state.telemetry().admin_change("retried", &id, &caller.name);
    Ok((
        StatusCode::ACCEPTED,
        Json(Retried {
            delivery_id: attempt.delivery_id,
            attempts,
        }),
    ))
}

/// Which failed deliveries to replay.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplayRequest {
    /// Dead-lettered at or after this time.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub since: Option<OffsetDateTime>,
    /// Dead-lettered before this time.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub until: Option<OffsetDateTime>,
    /// Dead-letter reasons to replay; default the failed ones:
    /// `retries_exhausted`, `delivery_failed`, `endpoint_gone`, `final_status`.
    #[serde(default, deserialize_with = "delivery_reasons")]
    #[schema(schema_with = delivery_reasons_schema)]
    pub reasons: Option<Vec<Reason>>,
    /// Re-drive dead letters an earlier replay re-drove too (each is
    /// otherwise re-driven once).
    #[serde(default)]
    pub force: bool,
    /// Only count what would be re-delivered (`would_replay` in the job),
    /// and re-deliver nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// Reads `reasons`: dead-letter reasons of deliveries, the error naming
/// the first that is not one (at `reasons`, not at its index).
fn delivery_reasons<'de, D: serde::Deserializer<'de>>(de: D) -> Result<Option<Vec<Reason>>, D::Error> {
    let Some(given) = Option::<Vec<String>>::deserialize(de)? else {
        return Ok(None);
    };
    given
        .iter()
        .map(|r| match r.parse::<Reason>() {
            Ok(reason) if reason.of_delivery() => Ok(reason),
            _ => Err(serde::de::Error::custom(format!(
                "`{r}` is not a dead-letter reason of deliveries"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// `reasons` in the OpenAPI document: the dead-letter reasons of deliveries, enumerated.
fn delivery_reasons_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, SchemaType, Type};
    let values = Reason::ALL.iter().filter(|r| r.of_delivery()).map(|r| r.as_str());
    ArrayBuilder::new()
        .schema_type(SchemaType::from_iter([Type::Array, Type::Null]))
        .items(ObjectBuilder::new().schema_type(Type::String).enum_values(Some(values)))
        .description(Some(format!(
            "Dead-letter reasons to replay; default the failed ones ({}):\n{}",
            Reason::failed()
                .map(|r| format!("`{r}`"))
                .collect::<Vec<_>>()
                .join(", "),
            Reason::ALL
                .iter()
                .filter(|r| r.of_delivery())
                .map(|r| format!("- `{r}`: {}", r.description()))
                .collect::<Vec<_>>()
                .join("\n")
        )))
        .build()
}

/// Re-delivers a webhook's failed deliveries (kept in the dead-letter topic)
/// in a time range, with their original `webhook-id`s, as a background job.
#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/replay",
    tag = "deliveries",
    params(("id" = String, Path, description = "Webhook id")),
    request_body = ReplayRequest,
    responses(
        (status = 202, description = "Started; follow it at /v1/replays/{id}", body = ReplayJob),
        (status = 429, description = "A replay (or, for a dry run, a dry run) of this webhook is running, or too many of the tenant's or in all (admin.max_replays; dry runs: admin.max_dry_runs); try again after Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn replay(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<ReplayRequest>,
) -> Result<(StatusCode, Json<ReplayJob>), Problem> {
    let webhook = load(&state, &caller, &id).await?;
    let id = webhook.id.clone();
    if let (Some(since), Some(until)) = (body.since, body.until) {
        if until <= since {
            return Err(Problem::invalid("until", "must be later than `since`"));
        }
    }
    let reasons = body.reasons.unwrap_or_else(|| Reason::failed().collect());
    let filter = ReplayFilter {
        webhook: Some(id.clone()),
        tenant: webhook.tenant.clone(),
        webhook_created_at: Some(webhook.created_at),
        reasons,
        since: body.since,
        until: body.until,
        ..Default::default()
    };
    let admitted = state
        .jobs()
        .admit(state.config(), Pool::of(body.dry_run), &id, webhook.tenant.as_deref())
        .await?;
    let job = state
        .jobs()
        .start(
            admitted,
            &state,
            &id,
            webhook.tenant.clone(),
            Work::Replay {
                filter,
                options: ReplayOptions {
                    dry_run: body.dry_run,
                    force: body.force,
                },
            },
        )
        .await?;
    if !body.dry_run {
        state.telemetry().admin_change("replayed", &id, &caller.name);
    }
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// Whether to retry a webhook's pending deliveries or only count them.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPendingRequest {
    /// Only count what would be delivered now (`would_replay` in the job),
    /// and change nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// Delivers now, once each, the webhook's failed deliveries waiting in the
/// retry tiers, with their `webhook-id`s and attempt counts, as a
/// background job; when a waiting copy comes due later it is finished, not
/// delivered again. The webhook must be active.
#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/retry-pending",
    tag = "deliveries",
    params(("id" = String, Path, description = "Webhook id")),
    request_body = RetryPendingRequest,
    responses(
        (status = 202, description = "Started; follow it at /v1/replays/{id}", body = ReplayJob),
        (status = 409, description = "The webhook is paused or disabled (resume it first), or it kept 16 retry-pending runs within the longest retry wait", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "A replay or retry pending (for a dry run, a dry run) of this webhook is running, or too many of the tenant's or in all (admin.max_replays; dry runs: admin.max_dry_runs); try again after Retry-After", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn retry_pending(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    OptionalJson(body): OptionalJson<RetryPendingRequest>,
) -> Result<(StatusCode, Json<ReplayJob>), Problem> {
    let body = body.unwrap_or_default();
    let webhook = load(&state, &caller, &id).await?;
    let id = webhook.id.clone();
    let not_active = |w: &crate::webhook::Webhook| {
        (w.status != WebhookStatus::Active).then(|| {
            Problem::conflict(format!(
                "the webhook is {}: its deliveries would be kept, not delivered; resume it first",
                w.status.as_str()
            ))
        })
    };
    if let Some(problem) = not_active(&webhook) {
        return Err(problem);
    }
    let admitted = state
        .jobs()
        .admit(state.config(), Pool::of(body.dry_run), &id, webhook.tenant.as_deref())
        .await?;
    let config = state.config();
    let finished = state.jobs().finished_cuts(config);
    let now = OffsetDateTime::now_utc();
    let (webhook, cut) = if body.dry_run {
        (webhook, now)
    } else {
        // The cut is on the webhook before anything is re-driven: from then
        // on no replica delivers a waiting copy the run re-drives.
        let cut = now + pending::cut_ahead(config);
        let lifetime = pending::cut_lifetime(config);
        let (webhook, _) = change_loaded(&state, webhook, &id, |current| {
            if let Some(problem) = not_active(current) {
                return Err(problem);
            }
            let mut next = current.clone();
            next.retried_pending =
                pending::with_cut(&current.retried_pending, cut, now, lifetime).ok_or_else(|| {
                    Problem::conflict(format!(
                        "{} retry-pending runs of this webhook are within the longest retry wait; \
                     try again when the oldest is older than that",
                        pending::MAX_CUTS
                    ))
                })?;
            Ok(Some(next))
        })
        .await?;
        (webhook, cut)
    };
    let earlier: Vec<OffsetDateTime> = webhook.retried_pending.iter().copied().filter(|c| *c != cut).collect();
    let earlier = finished
        .finished(&id, &earlier)
        .await
        .map_err(|e| Problem::unavailable("replay jobs (Redis)", &e))?;
    let run = PendingRun {
        webhook_id: id.clone(),
        created_at: webhook.created_at,
        cut,
        earlier,
        dry_run: body.dry_run,
    };
    let job = state
        .jobs()
        .start(admitted, &state, &id, webhook.tenant.clone(), Work::RetryPending(run))
        .await?;
    if !body.dry_run {
        state.telemetry().admin_change("retried_pending", &id, &caller.name);
    }
    Ok((StatusCode::ACCEPTED, Json(job)))
}

/// Success and failure counts of a webhook over the last hour, day and week.
#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}/stats",
    tag = "deliveries",
    params(("id" = String, Path, description = "Webhook id")),
    responses((status = 200, description = "The statistics", body = Stats))
)]
pub async fn webhook_stats(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<Stats>, Problem> {
    let id = load(&state, &caller, &id).await?.id;
    stats_of(&state, Scope::Webhook(id)).await
}

/// Success and failure counts of all of a tenant's deliveries.
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/stats",
    tag = "deliveries",
    params(("tenant" = String, Path, description = "Tenant")),
    responses((status = 200, description = "The statistics", body = Stats))
)]
pub async fn tenant_stats(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(tenant): ApiPath<String>,
) -> Result<Json<Stats>, Problem> {
    if !caller.can_access(Some(&tenant)) {
        return Err(Problem::not_found("tenant", &tenant));
    }
    stats_of(&state, Scope::Tenant(tenant)).await
}

async fn stats_of(state: &AdminState, scope: Scope) -> Result<Json<Stats>, Problem> {
    let stats = history(state)?
        .stats(&scope, OffsetDateTime::now_utc())
        .await
        .map_err(redis_error)?;
    Ok(Json(stats))
}

/// Which example event to send.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestRequest {
    /// An event type of the webhook's tenant's catalog (an admin token may
    /// also name one of any other catalog); its example payload is sent.
    #[schema(min_length = 1)]
    pub event_type: String,
}

/// What the receiver answered to a test.
#[derive(Debug, Serialize, ToSchema)]
pub struct TestResult {
    /// The `webhook-id` of the test request.
    pub delivery_id: String,
    pub succeeded: bool,
    /// `2xx`, `4xx`, `timeout`, `network`, `blocked`...
    pub class: String,
    pub status: Option<u16>,
    pub duration_ms: u64,
    pub error: Option<String>,
    pub response_headers: std::collections::BTreeMap<String, String>,
    pub response_body: Option<String>,
    /// The response headers and body are not shown: the destination is
    /// reachable only through an allowlist (`delivery.allowlisted_response_details`).
    pub response_withheld: bool,
}

/// Sends a catalog's example event of the chosen type to the webhook, signed
/// like any delivery, and returns the receiver's response. Works for paused
/// webhooks too; not retried, not counted in the statistics.
#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/test",
    tag = "deliveries",
    params(("id" = String, Path, description = "Webhook id")),
    request_body = TestRequest,
    responses((status = 200, description = "The receiver's answer (a failed delivery is still 200)", body = TestResult))
)]
pub async fn test(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<TestRequest>,
) -> Result<Json<TestResult>, Problem> {
    let webhook = load(&state, &caller, &id).await?;
    // The webhook's own catalog first; other catalogs only for a caller that
    // may see them (an admin token), so a ping never reads out another
    // tenant's catalog.
    let own = state.tenant(webhook.tenant.as_deref()).await?.catalog;
    let example = own
        .as_ref()
        .and_then(|c| c.event(&body.event_type))
        .or_else(|| {
            caller
                .tenant
                .is_none()
                .then(|| state.catalogs().example(&body.event_type))
                .flatten()
        })
        .ok_or_else(|| Problem::invalid("event_type", format!("`{}` is in no catalog", body.event_type)))?;
    let payload = serde_json::to_vec(&example.example).expect("JSON values serialise");
    let defaults = EndpointDefaults::from(&state.config().delivery);
    let target = Target::compile(webhook.clone(), &defaults, None).map_err(|e| Problem::conflict(e.to_string()))?;
    let delivery_id = format!("msg_test_{}", hex::encode(rand::random::<[u8; 12]>()));
    let event = Event {
        record: SourceRecord {
            topic: "herald.test".into(),
            partition: 0,
            offset: 0,
            timestamp_ms: None,
            key: None,
            value: payload.into(),
            headers: Vec::new(),
        },
        meta: EventMeta {
            event_type: body.event_type.clone(),
            event_id: None,
            event_time: None,
            tenant: webhook.tenant.clone(),
            content_type: "application/json".into(),
            forward_headers: Vec::new(),
            id_source: None,
        },
    };
    let attempt = state
        .deliverer()
        .deliver_with(&event, &target, delivery_id.clone(), 1, true)
        .await;
    let (succeeded, status, error) = match &attempt.result {
        Ok(status) => (true, Some(*status), None),
        Err(failure) => (false, failure.status(), Some(failure.describe())),
    };
    Ok(Json(TestResult {
        delivery_id,
        succeeded,
        class: attempt.class().to_owned(),
        status,
        duration_ms: attempt.duration.as_millis() as u64,
        error,
        response_headers: attempt.response_headers.iter().cloned().collect(),
        response_body: attempt.response_excerpt.clone(),
        response_withheld: attempt.details_withheld,
    }))
}

//! `/v1/webhooks`: create, list, read, change, pause, resume, delete, and
//! the signing secret.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use crate::admin::auth::Caller;
use crate::admin::jobs::ReplayJob;
use crate::admin::problem::{ApiJson, ApiPath, ApiQuery, OptionalJson, Problem};
use crate::admin::{AdminState, MAX_PAGE_SIZE};
use crate::retry::codec::reasons;
use crate::retry::replay::ReplayFilter;
use crate::subscriptions::store::{Created, StoreError, UpdateError};
use crate::webhook::{
    decode_secret, generate_secret, pattern_matches, uid_id, validate_uid, ExpiringSecret, Limits, Webhook,
    WebhookStatus, UID_ID_PREFIX,
};

/// Longest webhook name.
pub const MAX_NAME_LEN: usize = 256;
/// Longest value of a custom header.
pub const MAX_HEADER_VALUE_LEN: usize = 4096;
/// Longest URL.
pub const MAX_URL_LEN: usize = 2048;

/// A webhook as the API shows it: everything but the secrets.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookView {
    pub id: String,
    /// The tenant whose events it receives; none receives every tenant's.
    pub tenant: Option<String>,
    /// The name its tenant chose for it at creation, unique within the
    /// tenant; a tenant token may use it in place of the id in paths.
    pub uid: Option<String>,
    pub name: String,
    pub url: String,
    /// Event type patterns: exact (`tour.completed`), prefix (`tour.*`) or `*`.
    pub events: Vec<String>,
    pub status: WebhookStatus,
    /// Why the status is what it is, e.g. why Herald disabled it.
    pub status_reason: Option<String>,
    /// When the status last changed, if known.
    #[serde(with = "time::serde::rfc3339::option")]
    pub status_changed_at: Option<OffsetDateTime>,
    /// Extra request headers, e.g. an API key.
    pub headers: BTreeMap<String, String>,
    pub limits: Limits,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

impl From<&Webhook> for WebhookView {
    fn from(w: &Webhook) -> Self {
        WebhookView {
            id: w.id.clone(),
            tenant: w.tenant.clone(),
            uid: w.uid.clone(),
            name: w.name.clone(),
            url: w.url.clone(),
            events: w.events.clone(),
            status: w.status,
            status_reason: w.status_reason.clone(),
            status_changed_at: w.status_changed_at,
            headers: w.headers.clone(),
            limits: w.limits.clone(),
            created_at: w.created_at,
            updated_at: w.updated_at,
        }
    }
}

/// A new webhook.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Admin tokens only: its id (letters, digits, `_-.:`, up to 128, not
    /// beginning `wh_u`); generated when absent. Ids are one namespace across
    /// tenants, so a tenant token never chooses one (422): it names its
    /// webhooks with `uid`.
    #[serde(default)]
    #[schema(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    pub id: Option<String>,
    /// A name of the caller's choosing (letters, digits, `_-.`, up to 128),
    /// unique within the webhook's tenant: creating a uid the tenant already
    /// uses answers 409, so a retried request is safe, and another tenant's
    /// uids are never in the way. A tenant token may use it in place of the
    /// id in every path.
    #[serde(default)]
    #[schema(pattern = r"^[A-Za-z0-9_.-]{1,128}$")]
    pub uid: Option<String>,
    /// Whose events it receives. A tenant token may only name its own tenant
    /// (and gets it when this is absent).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128)]
    pub tenant: Option<String>,
    #[schema(min_length = 1, max_length = 256)]
    pub name: String,
    /// `https://` (or `http://`) endpoint; private, loopback and link-local
    /// destinations are refused unless `delivery.allow_cidrs` permits them.
    #[schema(min_length = 1, max_length = 2048)]
    pub url: String,
    /// Event type patterns; with a catalog bound to the tenant, each must
    /// match at least one of its event types.
    #[schema(min_items = 1, max_items = 256)]
    pub events: Vec<String>,
    /// Extra request headers (e.g. `{"x-api-key": "..."}`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The signing secret (`whsec_` + base64 of 24 to 64 bytes); generated
    /// when absent. Read it back with `GET /v1/webhooks/{id}/secret`.
    #[serde(default)]
    #[schema(pattern = "^whsec_[A-Za-z0-9+/]{32,88}={0,2}$")]
    pub secret: Option<String>,
    #[serde(default)]
    pub limits: LimitsInput,
}

/// Changes to a webhook: the fields present replace the current ones.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    #[serde(default)]
    #[schema(min_length = 1, max_length = 256)]
    pub name: Option<String>,
    #[serde(default)]
    #[schema(min_length = 1, max_length = 2048)]
    pub url: Option<String>,
    #[serde(default)]
    #[schema(min_items = 1, max_items = 256)]
    pub events: Option<Vec<String>>,
    #[serde(default)]
    pub headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub limits: Option<LimitsInput>,
}

/// Per-endpoint limits; each may only tighten the global setting.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsInput {
    /// Concurrent requests to this endpoint.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub max_in_flight: Option<usize>,
    /// Request deadline for this endpoint, in milliseconds.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub timeout_ms: Option<u64>,
    /// HTTP statuses (300 to 599) that end a delivery at once (dead-lettered
    /// as `final_status`) instead of being retried; replaces the deployment's
    /// `retry.final_statuses` for this webhook. 410 Gone is always final.
    #[serde(default)]
    #[schema(max_items = 64)]
    pub final_statuses: Option<Vec<FailureStatus>>,
}

/// An HTTP status that is a failure: 300 to 599.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(minimum = 300, maximum = 599)]
pub struct FailureStatus(pub u16);

impl From<LimitsInput> for Limits {
    fn from(l: LimitsInput) -> Limits {
        Limits {
            max_in_flight: l.max_in_flight,
            timeout_ms: l.timeout_ms,
            final_statuses: l
                .final_statuses
                .map(|statuses| statuses.into_iter().map(|s| s.0).collect()),
        }
    }
}

/// Filters and paging of the webhook list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only this tenant's webhooks.
    pub tenant: Option<String>,
    /// Only webhooks with this status.
    pub status: Option<WebhookStatus>,
    /// Only webhooks that receive this event type.
    pub event: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size (1 to 500; default `admin.default_page_size`).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
}

/// One page of webhooks, in id order (generated ids sort by creation time).
#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookPage {
    pub data: Vec<WebhookView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Resume options.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeWebhook {
    /// Also re-deliver what was kept (dead-lettered as `webhook_paused` or
    /// `webhook_disabled`) during the pause or disablement this ends; what an
    /// earlier replay re-drove is not re-driven again.
    #[serde(default)]
    pub replay: bool,
}

/// A resumed webhook, and the replay started when asked for.
#[derive(Debug, Serialize, ToSchema)]
pub struct Resumed {
    pub webhook: WebhookView,
    pub replay: Option<ReplayJob>,
}

/// Rotation options.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// The new secret; generated when absent.
    #[serde(default)]
    #[schema(pattern = "^whsec_[A-Za-z0-9+/]{32,88}={0,2}$")]
    pub secret: Option<String>,
}

/// A webhook's signing secrets.
#[derive(Debug, Serialize, ToSchema)]
pub struct SecretView {
    /// The current secret: receivers verify with it.
    pub secret: String,
    /// Rotated-out secrets still signing (a second signature) until
    /// `expires_at`.
    pub previous: Vec<PreviousSecret>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PreviousSecret {
    pub secret: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

pub(crate) fn store_error(e: StoreError) -> Problem {
    match e {
        StoreError::Invalid(invalid) => Problem::invalid(invalid.field, invalid.message),
        other => Problem::unavailable("subscription store", &other),
    }
}

/// The webhook a path names, if the caller may see it; 404 otherwise. A path
/// names a webhook by its id, or, for a tenant token, by a uid of its own
/// tenant. Either way another tenant's webhooks answer as missing ones do,
/// after the same lookups. Handlers go on with the webhook's id, never the
/// path's.
pub(crate) async fn load(state: &AdminState, caller: &Caller, id: &str) -> Result<Webhook, Problem> {
    // A malformed document cannot show whose it is: to a tenant token it is
    // as missing as any other tenant's (an operator sees the error).
    let get = |id: String| async move {
        match state.store().get(&id).await {
            Ok(found) => Ok(found),
            Err(StoreError::InvalidRecord { .. }) if caller.tenant.is_some() => Ok(None),
            Err(e) => Err(store_error(e)),
        }
    };
    if let Some(w) = get(id.to_owned()).await? {
        if caller.can_access(w.tenant.as_deref()) {
            return Ok(w);
        }
    }
    if let Some(tenant) = &caller.tenant {
        if validate_uid(id).is_ok() {
            let named = get(uid_id(Some(tenant), id)).await?;
            if let Some(w) = named {
                if caller.can_access(w.tenant.as_deref()) && w.uid.as_deref() == Some(id) {
                    return Ok(w);
                }
            }
        }
    }
    Err(Problem::not_found("webhook", id))
}

/// Applies `change` to the webhook `id` (which the caller must be allowed to
/// see) with a compare-and-set, so a concurrent change (another request, or
/// Herald disabling the webhook) is never overwritten. Returns the webhook
/// and whether it changed.
pub(crate) async fn change(
    state: &AdminState,
    caller: &Caller,
    id: &str,
    mut f: impl FnMut(&Webhook) -> Result<Option<Webhook>, Problem>,
) -> Result<(Webhook, bool), Problem> {
    let loaded = load(state, caller, id).await?;
    let mut changed = false;
    let result = state
        .store()
        .update(&loaded.id, |current| {
            let next = f(current)?;
            changed = next.is_some();
            Ok(next)
        })
        .await;
    match result {
        Ok(Some(webhook)) => Ok((webhook, changed)),
        Ok(None) => Err(Problem::not_found("webhook", id)),
        Err(UpdateError::Rejected(problem)) => Err(problem),
        Err(UpdateError::Store(e)) => Err(store_error(e)),
    }
}

/// A fresh id that sorts by creation time: milliseconds, then random bits.
/// Within one process the time part is strictly increasing (a second id in
/// the same millisecond borrows the next one, as monotonic ULIDs do), so ids
/// created one after another on a replica always list in that order.
fn new_id() -> String {
    static LAST_MS: AtomicU64 = AtomicU64::new(0);
    let now = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as u64;
    let previous = LAST_MS
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| Some(now.max(last + 1)))
        .unwrap_or_else(|last| last);
    let ms = now.max(previous + 1);
    format!("wh_{ms:012x}{}", hex::encode(rand::random::<[u8; 8]>()))
}

/// The id of a new webhook. Ids are one namespace for every tenant, so only
/// an admin token (which sees them all) may choose one; a tenant names its
/// webhooks with a uid, from which, with the tenant, the id is derived. No
/// answer to a create can then tell a tenant that an id is used elsewhere.
fn chosen_id(caller: &Caller, tenant: Option<&str>, id: Option<String>, uid: Option<&str>) -> Result<String, Problem> {
    match (id, uid) {
        (Some(_), _) if caller.tenant.is_some() => Err(Problem::invalid(
            "id",
            "is chosen by Herald for a tenant token; name the webhook with `uid`",
        )),
        (Some(_), Some(_)) => Err(Problem::invalid("uid", "cannot be given with `id`")),
        (Some(id), None) if id.starts_with(UID_ID_PREFIX) => Err(Problem::invalid(
            "id",
            format!("must not begin `{UID_ID_PREFIX}`: those are the ids of webhooks created with a `uid`"),
        )),
        (Some(id), None) => Ok(id),
        (None, Some(uid)) => {
            validate_uid(uid).map_err(|m| Problem::invalid("uid", m))?;
            Ok(uid_id(tenant, uid))
        }
        (None, None) => Ok(new_id()),
    }
}

/// Checks what the API adds to the store's own validation: lengths, the
/// destination policy and the tenant's catalog.
fn check(state: &AdminState, webhook: &Webhook) -> Result<(), Problem> {
    if webhook.name.trim().is_empty() || webhook.name.chars().count() > MAX_NAME_LEN {
        return Err(Problem::invalid(
            "name",
            format!("must be 1 to {MAX_NAME_LEN} characters"),
        ));
    }
    if webhook.name.chars().any(char::is_control) {
        return Err(Problem::invalid("name", "must not contain control characters"));
    }
    if webhook.url.len() > MAX_URL_LEN {
        return Err(Problem::invalid("url", format!("must be at most {MAX_URL_LEN} bytes")));
    }
    for (name, value) in &webhook.headers {
        if value.len() > MAX_HEADER_VALUE_LEN {
            return Err(Problem::invalid(
                "headers",
                format!("the value of `{name}` is longer than {MAX_HEADER_VALUE_LEN} bytes"),
            ));
        }
    }
    webhook.validate().map_err(|e| Problem::invalid(e.field, e.message))?;
    check_destination(state, &webhook.url, webhook.tenant.as_deref())?;
    if let Some(catalog) = crate::admin::catalog::of_tenant(state, webhook.tenant.as_deref()) {
        for pattern in &webhook.events {
            if !catalog.allows(pattern) {
                return Err(Problem::invalid(
                    "events",
                    format!("`{pattern}` matches no event type of the `{}` catalog", catalog.name),
                ));
            }
        }
    }
    Ok(())
}

/// Refuses destinations the SSRF policy would refuse at delivery time, where
/// that can be known without a DNS lookup: IP literals and `localhost`.
/// Names are checked again on every connection, on the addresses resolved.
fn check_destination(state: &AdminState, url: &str, tenant: Option<&str>) -> Result<(), Problem> {
    let url = url::Url::parse(url).map_err(|e| Problem::invalid("url", format!("is not a URL: {e}")))?;
    state
        .policy(tenant)
        .check_url(&url)
        .map_err(|blocked| Problem::invalid("url", blocked.to_string()))?;
    if let Some(url::Host::Domain(host)) = url.host() {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if host == "localhost" || host.ends_with(".localhost") {
            state
                .policy(tenant)
                .check(IpAddr::V4(Ipv4Addr::LOCALHOST))
                .map_err(|blocked| Problem::invalid("url", format!("`{host}` is loopback: {blocked}")))?;
        }
    }
    Ok(())
}

/// Creates a webhook.
#[utoipa::path(
    post,
    path = "/v1/webhooks",
    tag = "webhooks",
    request_body = CreateWebhook,
    responses(
        (status = 201, description = "Created", body = WebhookView, headers(("location" = String, description = "The webhook's URL"))),
        (status = 403, description = "The tenant has its quota of webhooks", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The uid is taken in the tenant, or (admin tokens) the id", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    State(state): State<AdminState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateWebhook>,
) -> Result<Response, Problem> {
    let tenant = match (&caller.tenant, body.tenant) {
        (Some(own), Some(asked)) if *own != asked => {
            return Err(Problem::invalid("tenant", "must be the token's own tenant"));
        }
        (Some(own), _) => Some(own.clone()),
        (None, asked) => asked,
    };
    if let Some(secret) = &body.secret {
        decode_secret(secret).map_err(|m| Problem::invalid("secret", m.to_string()))?;
    }
    let id = chosen_id(&caller, tenant.as_deref(), body.id, body.uid.as_deref())?;
    let now = OffsetDateTime::now_utc();
    let webhook = Webhook {
        id,
        tenant,
        uid: body.uid,
        name: body.name,
        url: body.url,
        events: body.events,
        status: WebhookStatus::Active,
        status_reason: None,
        status_changed_at: Some(now),
        secrets: vec![body.secret.unwrap_or_else(generate_secret)],
        previous_secrets: Vec::new(),
        headers: body.headers,
        created_at: now,
        updated_at: now,
        limits: body.limits.into(),
    };
    check(&state, &webhook)?;
    let admin = &state.config().admin;
    let quota = webhook.tenant.as_deref().map(|t| {
        admin
            .tenants
            .get(t)
            .and_then(|c| c.max_webhooks)
            .unwrap_or(admin.max_webhooks_per_tenant)
    });
    match state
        .store()
        .create_within(&webhook, quota)
        .await
        .map_err(store_error)?
    {
        Created::Created => {}
        Created::Exists => {
            // Only ever about the caller's own tenant (a uid), or, for an
            // admin token, which sees every tenant, an id.
            return Err(Problem::conflict(match &webhook.uid {
                Some(uid) => format!("this tenant already has a webhook `{uid}`"),
                None => format!("a webhook `{}` already exists", webhook.id),
            }));
        }
        Created::OverQuota => {
            return Err(Problem::new(
                StatusCode::FORBIDDEN,
                "quota-exceeded",
                "Quota exceeded",
                Some(format!(
                    "the tenant has its quota of {} webhooks; delete one first, or ask an operator \
                     (admin.max_webhooks_per_tenant, admin.tenants.<tenant>.max_webhooks)",
                    quota.unwrap_or_default()
                )),
            ));
        }
    }
    state.announce("created", &webhook, &caller.name);
    let location = format!("/v1/webhooks/{}", webhook.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(WebhookView::from(&webhook)),
    )
        .into_response())
}

/// Lists webhooks, a page at a time.
#[utoipa::path(
    get,
    path = "/v1/webhooks",
    tag = "webhooks",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of webhooks", body = WebhookPage),
    )
)]
pub async fn list(
    State(state): State<AdminState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Json<WebhookPage>, Problem> {
    let ListQuery {
        tenant,
        status,
        event,
        cursor,
        limit,
    } = query;
    let present = |v: Option<String>| v.filter(|v| !v.is_empty());
    let query = ListQuery {
        tenant: present(tenant),
        status,
        event: present(event),
        cursor: present(cursor),
        limit,
    };
    let limit = query.limit.unwrap_or(state.config().admin.default_page_size);
    if limit == 0 || limit > MAX_PAGE_SIZE {
        return Err(Problem::bad_request(format!("`limit` must be 1 to {MAX_PAGE_SIZE}")));
    }
    let after = match &query.cursor {
        None => None,
        Some(c) => {
            Some(decode_cursor(c).ok_or_else(|| Problem::bad_request("`cursor` is not a cursor this API issued"))?)
        }
    };
    // A tenant token lists its own tenant whatever it asks for.
    let tenant = match (&caller.tenant, &query.tenant) {
        (Some(own), Some(asked)) if own != asked => {
            return Ok(Json(WebhookPage {
                data: Vec::new(),
                next_cursor: None,
            }))
        }
        (Some(own), _) => Some(own.clone()),
        (None, asked) => asked.clone(),
    };
    // A tenant's own set when the store has them (only its documents are
    // read); every id otherwise. Each document is checked either way.
    let own = match &tenant {
        Some(t) => state.store().tenant_ids(t).await.map_err(store_error)?,
        None => None,
    };
    let mut ids = match own {
        Some(ids) => ids,
        None => state.store().ids().await.map_err(store_error)?,
    };
    ids.sort_unstable();
    let start = after.as_ref().map_or(0, |a| ids.partition_point(|id| id <= a));
    let mut data = Vec::with_capacity(limit);
    let mut next_cursor = None;
    let batch = limit.clamp(50, MAX_PAGE_SIZE);
    'pages: for chunk in ids[start..].chunks(batch) {
        for loaded in state.store().get_many(chunk).await.map_err(store_error)? {
            let crate::subscriptions::store::Loaded::Webhook(w) = loaded else {
                continue;
            };
            let keep = tenant.as_ref().is_none_or(|t| w.tenant.as_ref() == Some(t))
                && query.status.is_none_or(|s| w.status == s)
                && query
                    .event
                    .as_ref()
                    .is_none_or(|e| w.events.iter().any(|p| pattern_matches(p, e)));
            if !keep {
                continue;
            }
            if data.len() == limit {
                next_cursor = data.last().map(|v: &WebhookView| encode_cursor(&v.id));
                break 'pages;
            }
            data.push(WebhookView::from(&*w));
        }
    }
    Ok(Json(WebhookPage { data, next_cursor }))
}

fn encode_cursor(id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("after:{id}"))
}

fn decode_cursor(cursor: &str) -> Option<String> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(cursor).ok()?;
    String::from_utf8(bytes).ok()?.strip_prefix("after:").map(str::to_owned)
}

/// Reads a webhook.
#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id")),
    responses(
        (status = 200, description = "The webhook", body = WebhookView),
    )
)]
pub async fn get(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<WebhookView>, Problem> {
    let webhook = load(&state, &caller, &id).await?;
    Ok(Json(WebhookView::from(&webhook)))
}

/// Changes a webhook's name, URL, events, headers or limits.
#[utoipa::path(
    patch,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id")),
    request_body = UpdateWebhook,
    responses(
        (status = 200, description = "The changed webhook", body = WebhookView),
    )
)]
pub async fn update(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiJson(body): ApiJson<UpdateWebhook>,
) -> Result<Json<WebhookView>, Problem> {
    let now = OffsetDateTime::now_utc();
    let (webhook, _) = change(&state, &caller, &id, |current| {
        let mut next = current.clone();
        if let Some(name) = &body.name {
            next.name = name.clone();
        }
        if let Some(url) = &body.url {
            next.url = url.clone();
        }
        if let Some(events) = &body.events {
            next.events = events.clone();
        }
        if let Some(headers) = &body.headers {
            next.headers = headers.clone();
        }
        if let Some(limits) = &body.limits {
            next.limits = limits.clone().into();
        }
        next.updated_at = now;
        check(&state, &next)?;
        Ok(Some(next))
    })
    .await?;
    state.announce("updated", &webhook, &caller.name);
    Ok(Json(WebhookView::from(&webhook)))
}

/// Deletes a webhook. Its pending retries go to the dead-letter topic as
/// `webhook_deleted` when they come due.
#[utoipa::path(
    delete,
    path = "/v1/webhooks/{id}",
    tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id")),
    responses(
        (status = 204, description = "Deleted"),
    )
)]
pub async fn delete(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, Problem> {
    let webhook = load(&state, &caller, &id).await?;
    let id = webhook.id.clone();
    if !state.store().delete(&id).await.map_err(store_error)? {
        return Err(Problem::not_found("webhook", &id));
    }
    if let Some(history) = state.history() {
        if let Err(e) = history.delete(&id, OffsetDateTime::now_utc()).await {
            tracing::warn!(webhook = %id, error = %e, "history of a deleted webhook not removed (it expires with history.max_age)");
        }
    }
    state.announce("deleted", &webhook, &caller.name);
    Ok(StatusCode::NO_CONTENT)
}

/// Pauses a webhook: its deliveries are not attempted but kept in the
/// dead-letter topic (`webhook_paused`), for a replay on resume.
#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/pause",
    tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id")),
    responses(
        (status = 200, description = "The paused webhook (pausing a paused webhook changes nothing)", body = WebhookView),
        (status = 409, description = "The webhook is disabled; resume it instead", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn pause(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<WebhookView>, Problem> {
    let now = OffsetDateTime::now_utc();
    let (webhook, changed) = change(&state, &caller, &id, |current| match current.status {
        WebhookStatus::Paused => Ok(None),
        WebhookStatus::Disabled => Err(Problem::conflict(format!(
            "webhook `{id}` is disabled ({}); resume it to deliver again",
            current.status_reason.as_deref().unwrap_or("no reason recorded")
        ))),
        WebhookStatus::Active => {
            let mut next = current.clone();
            next.status = WebhookStatus::Paused;
            next.status_reason = Some(format!("paused by `{}`", caller.name));
            next.status_changed_at = Some(now);
            next.updated_at = now;
            Ok(Some(next))
        }
    })
    .await?;
    if changed {
        state.announce("paused", &webhook, &caller.name);
    }
    Ok(Json(WebhookView::from(&webhook)))
}

/// How much earlier than a pause's start a resume's replay looks, for the
/// clocks of replicas that dead-lettered its deliveries.
const KEPT_SINCE_SLACK: time::Duration = time::Duration::minutes(1);

/// Resumes a paused or disabled webhook, optionally replaying what was kept
/// while it was not active.
#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/resume",
    tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id")),
    request_body(content = Option<ResumeWebhook>, description = "Optional; `{\"replay\": true}` re-delivers what was kept"),
    responses(
        (status = 200, description = "The active webhook, and the replay started", body = Resumed),
        (status = 429, description = "With `replay`: a replay of this webhook is running, or too many (admin.max_replays); nothing was changed", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn resume(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    OptionalJson(body): OptionalJson<ResumeWebhook>,
) -> Result<Json<Resumed>, Problem> {
    let body = body.unwrap_or_default();
    // A replay's place is taken first: refused, nothing changes.
    let admitted = match body.replay {
        true => {
            let current = load(&state, &caller, &id).await?;
            Some(
                state
                    .jobs()
                    .admit(state.config(), &id, current.tenant.as_deref())
                    .await?,
            )
        }
        false => None,
    };
    let now = OffsetDateTime::now_utc();
    // When the pause (or disablement) being ended began.
    let mut kept_since = None;
    let (webhook, changed) = change(&state, &caller, &id, |current| {
        if current.status == WebhookStatus::Active {
            return Ok(None);
        }
        kept_since = current.status_changed_at;
        let mut next = current.clone();
        next.status = WebhookStatus::Active;
        next.status_reason = None;
        next.status_changed_at = Some(now);
        next.updated_at = now;
        Ok(Some(next))
    })
    .await?;
    let id = webhook.id.clone();
    if changed {
        // A re-enabled webhook starts a new failure streak.
        state.store().reset_health(&id).await.map_err(store_error)?;
        state.announce("resumed", &webhook, &caller.name);
    }
    // What was kept during this pause: dead-lettered since it began (less a
    // minute for replicas' clocks), until now. Resuming an active webhook
    // replays what was kept before it became active. Either way a dead
    // letter already re-driven is not re-driven again.
    let replay_window = if changed {
        (kept_since.map(|t| t - KEPT_SINCE_SLACK), Some(now))
    } else {
        (None, webhook.status_changed_at)
    };
    let replay = match admitted {
        None => None,
        Some(admitted) => {
            let filter = ReplayFilter {
                webhook: Some(id.clone()),
                tenant: webhook.tenant.clone(),
                webhook_created_at: Some(webhook.created_at),
                reasons: reasons::KEPT.iter().map(|r| r.to_string()).collect(),
                since: replay_window.0,
                until: replay_window.1,
                ..Default::default()
            };
            Some(
                state
                    .jobs()
                    .start(admitted, &state, &id, webhook.tenant.clone(), filter, false)
                    .await?,
            )
        }
    };
    Ok(Json(Resumed {
        webhook: WebhookView::from(&webhook),
        replay,
    }))
}

fn secret_view(webhook: &Webhook) -> SecretView {
    let now = OffsetDateTime::now_utc();
    let mut secrets = webhook.secrets.iter();
    SecretView {
        secret: secrets.next().cloned().unwrap_or_default(),
        previous: secrets
            .map(|s| PreviousSecret {
                secret: s.clone(),
                // Extra current secrets written by other tools sign until removed.
                expires_at: time::macros::datetime!(9999-12-31 0:00 UTC),
            })
            .chain(
                webhook
                    .previous_secrets
                    .iter()
                    .filter(|p| p.expires_at > now)
                    .map(|p: &ExpiringSecret| PreviousSecret {
                        secret: p.secret.clone(),
                        expires_at: p.expires_at,
                    }),
            )
            .collect(),
    }
}

/// Reads the signing secret receivers verify with.
#[utoipa::path(
    get,
    path = "/v1/webhooks/{id}/secret",
    tag = "secrets",
    params(("id" = String, Path, description = "Webhook id")),
    responses(
        (status = 200, description = "The secrets", body = SecretView),
    )
)]
pub async fn get_secret(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<SecretView>, Problem> {
    let webhook = load(&state, &caller, &id).await?;
    Ok(Json(secret_view(&webhook)))
}

/// Rotates the signing secret: the new one signs at once, the previous one
/// keeps signing (a second signature) for `admin.secret_rotation_overlap`.
#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/secret",
    tag = "secrets",
    params(("id" = String, Path, description = "Webhook id")),
    request_body(content = Option<RotateSecret>, description = "Optional; `{\"secret\": \"whsec_...\"}` sets the new secret"),
    responses(
        (status = 200, description = "The new secrets", body = SecretView),
    )
)]
pub async fn rotate_secret(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    OptionalJson(body): OptionalJson<RotateSecret>,
) -> Result<Json<SecretView>, Problem> {
    let body = body.unwrap_or_default();
    if let Some(secret) = &body.secret {
        decode_secret(secret).map_err(|m| Problem::invalid("secret", m.to_string()))?;
    }
    let new = body.secret.unwrap_or_else(generate_secret);
    let now = OffsetDateTime::now_utc();
    let overlap = state.config().admin.secret_rotation_overlap;
    let (webhook, _) = change(&state, &caller, &id, |current| {
        if current.secrets.contains(&new) {
            return Err(Problem::invalid("secret", "is already the current secret"));
        }
        let mut next = current.clone();
        next.rotate_secret(new.clone(), now + overlap, now);
        next.updated_at = now;
        Ok(Some(next))
    })
    .await?;
    state.announce("secret_rotated", &webhook, &caller.name);
    Ok(Json(secret_view(&webhook)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_made_one_after_another_sort_in_that_order() {
        let ids: Vec<String> = (0..2_000).map(|_| new_id()).collect();
        assert!(ids.iter().all(|id| id.starts_with("wh_") && id.len() == 3 + 12 + 16));
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids are strictly increasing");
    }
}

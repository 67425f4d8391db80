//! `/v1/webhooks` and `/v1/webhooks/{id}`: create, list, read, change and
//! delete webhooks.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use super::{change_loaded, check, load, store_error, CreateWebhook, UpdateWebhook, WebhookView};
use crate::admin::auth::Caller;
use crate::admin::extract::{ApiJson, ApiPath, ApiQuery};
use crate::admin::problem::Problem;
use crate::admin::tenants::Source;
use crate::admin::AdminState;
use crate::config::admin::MAX_PAGE_SIZE;
use crate::routing::pattern_matches;
use crate::subscriptions::store::Created;
use crate::webhook::{decode_secret, generate_secret, uid_id, validate_uid, Webhook, WebhookStatus, UID_ID_PREFIX};

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

/// Where the ids of webhooks created without an id or uid come from: `wh_`
/// and a ULID (48 bits of milliseconds, then 80 random bits) in lower case,
/// so ids sort by creation time, also after ids of the earlier form (`wh_`,
/// 12 hex digits of milliseconds, 16 random), whose time digits sort below a
/// ULID's of the same moment. Within one replica the ULIDs are monotonic: a
/// second id in the same millisecond is the first plus one, so ids created
/// one after another always list in that order.
#[derive(Debug, Default)]
pub(crate) struct WebhookIds(parking_lot::Mutex<ulid::Generator>);

impl WebhookIds {
    /// A fresh id, greater than every id this generator made before.
    pub(crate) fn next(&self) -> String {
        let mut generator = self.0.lock();
        // After the last ULID of a millisecond (random bits all ones) comes
        // the first of the next, still in order.
        let ulid = generator
            .generate()
            .unwrap_or_else(|overflow| overflow.commit_overflow_increment());
        format!("wh_{}", ulid.to_string().to_ascii_lowercase())
    }
}

/// The id of a new webhook. Ids are one namespace for every tenant, so only
/// an admin token (which sees them all) may choose one; a tenant names its
/// webhooks with a uid, from which, with the tenant, the id is derived. No
/// answer to a create can then tell a tenant that an id is used elsewhere.
fn chosen_id(
    ids: &WebhookIds,
    caller: &Caller,
    tenant: Option<&str>,
    id: Option<String>,
    uid: Option<&str>,
) -> Result<String, Problem> {
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
        (None, None) => Ok(ids.next()),
    }
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
    let webhook = create_webhook(&state, &caller, body).await?;
    let location = format!("/v1/webhooks/{}", webhook.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(WebhookView::from(&webhook)),
    )
        .into_response())
}

/// Creates a webhook as `caller` (checked, within the tenant's quota, and
/// announced): what [`create`] and the portal's form do.
pub(crate) async fn create_webhook(
    state: &AdminState,
    caller: &Caller,
    body: CreateWebhook,
) -> Result<Webhook, Problem> {
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
    let id = chosen_id(
        state.webhook_ids(),
        caller,
        tenant.as_deref(),
        body.id,
        body.uid.as_deref(),
    )?;
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
        status_by: None,
        retried_pending: Vec::new(),
        secrets: vec![body.secret.unwrap_or_else(generate_secret)],
        previous_secrets: Vec::new(),
        headers: body.headers,
        created_at: now,
        updated_at: now,
        limits: body.limits.into(),
        filter: body.filter,
        tls_client: body.tls_client.map(Into::into),
        ordering: body.ordering,
    };
    let settings = state.tenant(webhook.tenant.as_deref()).await?;
    check(state, &webhook, settings.catalog.as_deref())?;
    let quota = webhook.tenant.as_ref().map(|_| settings.max_webhooks);
    // A tenant made through the API must still exist when the webhook is
    // written: a delete of the tenant at the same moment wins or loses whole.
    let registered = webhook
        .tenant
        .as_deref()
        .filter(|_| settings.source == Source::Api)
        .map(|t| state.registry().keys().settings(t));
    match state
        .store()
        .create_within(&webhook, quota, registered.as_deref())
        .await
        .map_err(store_error)?
    {
        Created::Created => {}
        Created::NoTenant => {
            return Err(Problem::not_found(
                "tenant",
                webhook.tenant.as_deref().unwrap_or_default(),
            ));
        }
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
    Ok(webhook)
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
    let limit = crate::admin::page_size(&state, query.limit)?;
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

/// Changes a webhook's name, URL, events, headers, limits, filter, client certificate or ordering.
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
    let loaded = load(&state, &caller, &id).await?;
    let settings = state.tenant(loaded.tenant.as_deref()).await?;
    let (webhook, _) = change_loaded(&state, loaded, &id, |current| {
        let mut next = body.apply(current)?;
        next.updated_at = now;
        check(&state, &next, settings.catalog.as_deref())?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_made_one_after_another_are_unique_and_sort_in_that_order() {
        let ids = WebhookIds::default();
        // They take a few milliseconds: most share theirs with others.
        let made: Vec<String> = (0..20_000).map(|_| ids.next()).collect();
        for id in &made {
            let ulid = id.strip_prefix("wh_").expect("ids start wh_");
            assert_eq!(ulid.len(), 26, "{id}");
            assert!(
                ulid.bytes().all(|b| b.is_ascii_digit() || b.is_ascii_lowercase()),
                "{id}"
            );
            assert!(ulid::Ulid::from_string(ulid).is_ok(), "{id}");
            assert!(!id.starts_with(UID_ID_PREFIX), "{id}");
        }
        let valid = Webhook::new(&made[0], "n", "https://example.com/", &["*"]).validate();
        assert!(valid.is_ok(), "{valid:?}");
        assert!(made.windows(2).all(|w| w[0] < w[1]), "ids are strictly increasing");
        let unique: std::collections::HashSet<&String> = made.iter().collect();
        assert_eq!(unique.len(), made.len());
    }

    #[test]
    fn generated_ids_sort_after_ids_of_the_earlier_form_made_before_them() {
        let now_ms = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as u64;
        let earlier = format!("wh_{now_ms:012x}{}", "f".repeat(16));
        let id = WebhookIds::default().next();
        assert!(id > earlier, "{id} sorts before {earlier}");
    }
}

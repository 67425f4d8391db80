//! The webhook portal: the pages a product shows its customers to manage
//! their webhooks, served under `/portal` next to the management API.
//!
//! A page is reached through a link from `POST
//! /v1/tenants/{tenant}/portal-sessions`: `/portal/s/{token}/...`, the token
//! signed by `portal.signing_key` ([`crate::admin::portal_sessions`]). The
//! token is in the path, not a cookie, so the pages work in a third-party
//! iframe; every page is sent with `Referrer-Policy: no-referrer` so it
//! never leaves through a link. Pages call the management API's own
//! handlers as the session's tenant, so they check, store and announce
//! exactly what the API does. Every change is a form POST carrying a token
//! derived from the session (CSRF), then a redirect to a page that says
//! what happened.

mod views;

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, RawPathParams, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use redis::AsyncCommands;
use sha2::Sha256;

use crate::admin::auth::Caller;
use crate::admin::extract::{ApiPath, ApiQuery, OptionalJson};
use crate::admin::portal_sessions::{self, Capability, Claims};
use crate::admin::problem::Problem;
use crate::admin::webhooks::crud::{self, ListQuery};
use crate::admin::webhooks::secrets::RotateSecret;
use crate::admin::webhooks::status::ResumeWebhook;
use crate::admin::webhooks::{secrets, status, CreateWebhook, UpdateWebhook, WebhookView};
use crate::admin::AdminState;

/// The stylesheet, served from the binary.
const CSS: &str = include_str!("portal.css");

/// Largest form accepted (a webhook with every event type of a catalog).
const MAX_FORM_BYTES: usize = 256 * 1024;

/// The portal's routes, to serve beside the management API's.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/portal/assets/portal.css", get(css))
        .route("/portal/s/{token}", get(to_list))
        .route("/portal/s/{token}/", get(list))
        .route("/portal/s/{token}/webhooks/new", get(new_form))
        .route("/portal/s/{token}/webhooks", post(create))
        .route("/portal/s/{token}/webhooks/{id}", get(detail))
        .route("/portal/s/{token}/webhooks/{id}/edit", get(edit_form).post(update))
        .route("/portal/s/{token}/webhooks/{id}/pause", post(pause))
        .route("/portal/s/{token}/webhooks/{id}/resume", post(resume))
        .route(
            "/portal/s/{token}/webhooks/{id}/delete",
            get(confirm_delete).post(delete),
        )
        .route("/portal/s/{token}/webhooks/{id}/secret", get(secret))
        .route("/portal/s/{token}/webhooks/{id}/secret/rotate", post(rotate))
        .route("/portal/s/{token}/webhooks/{id}/deliveries", get(deliveries))
        .route("/portal/s/{token}/webhooks/{id}/deliveries/{attempt}", get(attempt))
        .route(
            "/portal/s/{token}/webhooks/{id}/deliveries/{attempt}/retry",
            post(retry),
        )
        .route("/portal/s/{token}/webhooks/{id}/replay", get(replay_form).post(replay))
        .route("/portal/s/{token}/webhooks/{id}/replays/{job}", get(replay_job))
        .route("/portal/s/{token}/webhooks/{id}/test", get(test_form).post(test))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::admin::observe,
        ))
        .with_state(state)
}

/// A verified portal session.
#[derive(Debug, Clone)]
pub struct Session {
    pub claims: Claims,
    /// Where its pages are: `/portal/s/{token}` (under `portal.public_url`'s path).
    pub base: String,
    /// The CSRF token its forms carry.
    pub csrf: String,
    /// The CSP `frame-ancestors` of its pages.
    frame_ancestors: String,
}

impl Session {
    /// The API caller it acts as: its tenant, named after who made it.
    fn caller(&self) -> Caller {
        Caller {
            name: format!("{} (portal)", self.claims.by),
            tenant: self.claims.ten.clone(),
        }
    }

    /// Whether it may change anything.
    pub fn manages(&self) -> bool {
        self.claims.cap == Capability::Manage
    }

    /// Whether it may see and change webhook `id`.
    fn may_see(&self, id: &str) -> bool {
        self.claims.wh.as_deref().is_none_or(|only| only == id)
    }

    /// A path under the session, e.g. `webhooks/new`.
    pub fn path(&self, rest: &str) -> String {
        format!("{}/{rest}", self.base)
    }
}

/// Why a page cannot be shown, as a page.
#[derive(Debug)]
pub struct PageError {
    status: StatusCode,
    title: &'static str,
    detail: String,
    session: Option<Box<Session>>,
}

impl PageError {
    fn new(status: StatusCode, title: &'static str, detail: impl Into<String>) -> PageError {
        PageError {
            status,
            title,
            detail: detail.into(),
            session: None,
        }
    }

    fn with(mut self, session: &Session) -> PageError {
        self.session = Some(Box::new(session.clone()));
        self
    }

    fn not_found(session: &Session) -> PageError {
        PageError::new(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such webhook here. It may have been deleted; go back to the list.",
        )
        .with(session)
    }

    fn read_only(session: &Session) -> PageError {
        PageError::new(
            StatusCode::FORBIDDEN,
            "Read only",
            "This link lets you look, not change anything. Ask for a link that can manage webhooks.",
        )
        .with(session)
    }
}

impl From<(Problem, &Session)> for PageError {
    fn from((problem, session): (Problem, &Session)) -> PageError {
        let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status == StatusCode::NOT_FOUND {
            return PageError::not_found(session);
        }
        let detail = match status {
            StatusCode::SERVICE_UNAVAILABLE => "Webhooks cannot be read right now. Try again in a minute.".to_owned(),
            _ => problem.detail.unwrap_or(problem.title),
        };
        PageError::new(status, "Something went wrong", detail).with(session)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let session = self.session.as_deref();
        html(self.status, session, views::error(session, self.title, &self.detail))
    }
}

/// A page with the portal's headers: a strict CSP (no script at all; styles
/// only from the portal), framing as the tenant allows, no referrer, no cache.
fn html(status: StatusCode, session: Option<&Session>, markup: maud::Markup) -> Response {
    let frame_ancestors = session.map_or("'none'", |s| s.frame_ancestors.as_str());
    let csp = format!(
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; \
         frame-ancestors {frame_ancestors}"
    );
    let mut response = (status, markup).into_response();
    let headers = response.headers_mut();
    if let Ok(csp) = HeaderValue::from_str(&csp) {
        headers.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn csrf_of(key: &[u8], sid: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(b"portal-csrf:");
    mac.update(sid.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

impl FromRequestParts<AdminState> for Session {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Self, Self::Rejection> {
        let invalid = || {
            PageError::new(
                StatusCode::UNAUTHORIZED,
                "This link no longer works",
                "It has expired or was revoked. Open the webhooks page again from the product that sent you here.",
            )
        };
        let config = state.config();
        if !config.portal.enabled() {
            return Err(PageError::new(StatusCode::NOT_FOUND, "Not found", "The portal is off."));
        }
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| invalid())?;
        let token = params
            .iter()
            .find(|(name, _)| *name == "token")
            .map(|(_, v)| v.to_owned())
            .ok_or_else(invalid)?;
        let key = config.portal.signing_key.as_bytes();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = portal_sessions::verify(key, &token, now).map_err(|_| invalid())?;
        let mut conn = state.redis();
        let live: bool = conn
            .exists(portal_sessions::session_key(&config.redis.prefix, &claims.sid))
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "portal: cannot check a session");
                PageError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Try again in a minute",
                    "Webhooks cannot be read right now.",
                )
            })?;
        if !live {
            return Err(invalid());
        }
        let frame_ancestors = claims
            .ten
            .as_ref()
            .and_then(|t| config.admin.tenants.get(t))
            .and_then(|t| t.frame_ancestors.as_ref())
            .unwrap_or(&config.portal.frame_ancestors)
            .join(" ");
        let prefix = url::Url::parse(&config.portal.public_url)
            .map(|u| u.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        Ok(Session {
            csrf: csrf_of(key, &claims.sid),
            base: format!("{prefix}/portal/s/{token}"),
            claims,
            frame_ancestors,
        })
    }
}

/// A submitted form: its fields, in order (a name may repeat).
struct Form(Vec<(String, String)>);

impl Form {
    /// Parses `body`, and refuses it unless it carries `session`'s CSRF token.
    fn checked(body: &Bytes, session: &Session) -> Result<Form, PageError> {
        let fields: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
        let presented = fields.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v.as_bytes());
        let expected = session.csrf.as_bytes();
        let same = presented.is_some_and(|p| {
            p.len() == expected.len() && p.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
        });
        if !same {
            return Err(PageError::new(
                StatusCode::FORBIDDEN,
                "The form has expired",
                "Open the page again and resend the form.",
            )
            .with(session));
        }
        Ok(Form(fields))
    }

    fn one(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Custom headers from the `header_name` / `header_value` rows; a row
    /// with an empty name is ignored.
    fn headers(&self) -> Vec<(String, String)> {
        self.all("header_name")
            .into_iter()
            .zip(self.all("header_value"))
            .filter(|(name, _)| !name.trim().is_empty())
            .map(|(name, value)| (name.trim().to_owned(), value))
            .collect()
    }

    /// Event types: the ticked ones, and any typed in `events_text`.
    fn events(&self) -> Vec<String> {
        let mut events = self.all("event");
        if let Some(text) = self.one("events_text") {
            events.extend(
                text.split([',', '\n'])
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(str::to_owned),
            );
        }
        events.dedup();
        events
    }
}

/// What a page says happened (`?done=...` after a change).
#[derive(serde::Deserialize)]
struct Done {
    done: Option<String>,
}

fn done_message(done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "created" => "Webhook created. Events are sent to it from now on.",
        "updated" => "Changes saved.",
        "paused" => "Webhook paused. Its events are kept for when you resume it.",
        "resumed" => "Webhook resumed.",
        "replaying" => "Webhook resumed. What was kept while it was paused is being delivered again.",
        "deleted" => "Webhook deleted.",
        "rotated" => "New secret made. The previous one keeps signing for a while; see below.",
        "retried" => "The delivery is being sent again. Its new attempt appears here in a moment.",
        _ => return None,
    })
}

fn see_other(to: String) -> Response {
    Redirect::to(&to).into_response()
}

async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        CSS,
    )
}

async fn to_list(session: Session) -> Response {
    see_other(session.path(""))
}

async fn list(
    State(state): State<AdminState>,
    session: Session,
    Query(done): Query<Done>,
) -> Result<Response, PageError> {
    let caller = session.caller();
    let webhooks: Vec<WebhookView> = match &session.claims.wh {
        Some(only) => {
            let view = crud::get(State(state.clone()), caller.clone(), ApiPath(only.clone()))
                .await
                .map_err(|p| PageError::from((p, &session)))?;
            vec![view.0]
        }
        None => {
            let query = ListQuery {
                tenant: None,
                status: None,
                event: None,
                cursor: None,
                limit: Some(crate::config::MAX_PAGE_SIZE),
            };
            let page = crud::list(State(state.clone()), caller.clone(), ApiQuery(query))
                .await
                .map_err(|p| PageError::from((p, &session)))?;
            page.0.data
        }
    };
    let mut rows = Vec::with_capacity(webhooks.len());
    for w in webhooks {
        let stats =
            crate::admin::deliveries::webhook_stats(State(state.clone()), caller.clone(), ApiPath(w.id.clone()))
                .await
                .ok()
                .map(|Json(s)| s);
        rows.push((w, stats));
    }
    let connectors = crate::admin::catalog::connectors_for(&state, session.claims.ten.as_deref());
    let markup = views::list(&session, &rows, &connectors, done_message(done.done.as_deref()));
    Ok(html(StatusCode::OK, Some(&session), markup))
}

#[derive(serde::Deserialize)]
struct NewQuery {
    #[serde(default)]
    connector: String,
}

/// The connector `name`, if the session is offered it.
fn connector_of(
    state: &AdminState,
    session: &Session,
    name: &str,
) -> Option<std::sync::Arc<crate::config::connector::Connector>> {
    crate::admin::catalog::connectors_for(state, session.claims.ten.as_deref())
        .into_iter()
        .find(|c| c.name == name)
        .cloned()
}

async fn new_form(
    State(state): State<AdminState>,
    session: Session,
    Query(query): Query<NewQuery>,
) -> Result<Response, PageError> {
    if !session.manages() || session.claims.wh.is_some() {
        return Err(PageError::read_only(&session));
    }
    let catalog = catalog_of(&state, session.claims.ten.as_deref());
    let connector = connector_of(&state, &session, &query.connector);
    let values = match &connector {
        // A connector fills in what it knows; the header values are the user's.
        Some(c) => views::FormValues {
            tenant: String::new(),
            name: c.title.clone(),
            url: c.url.clone(),
            events: c.events.clone(),
            headers: c.headers.keys().map(|k| (k.clone(), String::new())).collect(),
        },
        None => views::FormValues::default(),
    };
    let markup = views::webhook_form(&session, catalog.as_deref(), &values, None, connector.as_deref());
    Ok(html(StatusCode::OK, Some(&session), markup))
}

async fn create(State(state): State<AdminState>, session: Session, body: Bytes) -> Result<Response, PageError> {
    let form = Form::checked(&body, &session)?;
    if !session.manages() || session.claims.wh.is_some() {
        return Err(PageError::read_only(&session));
    }
    let values = views::FormValues {
        name: form.one("name").unwrap_or_default().trim().to_owned(),
        url: form.one("url").unwrap_or_default().trim().to_owned(),
        events: form.events(),
        headers: form.headers(),
        tenant: form.one("tenant").unwrap_or_default().trim().to_owned(),
    };
    // An operators' session names the tenant; a tenant's session is its own.
    let tenant = (session.claims.ten.is_none() && !values.tenant.is_empty()).then(|| values.tenant.clone());
    let body = CreateWebhook {
        id: None,
        uid: None,
        tenant,
        name: values.name.clone(),
        url: values.url.clone(),
        events: values.events.clone(),
        headers: values.headers.iter().cloned().collect::<BTreeMap<_, _>>(),
        secret: None,
        limits: Default::default(),
    };
    match crud::create_webhook(&state, &session.caller(), body).await {
        Ok(webhook) => Ok(see_other(
            session.path(&format!("webhooks/{}?done=created", webhook.id)),
        )),
        Err(problem) if problem.status == 422 || problem.status == 409 || problem.status == 403 => {
            let catalog = catalog_of(&state, session.claims.ten.as_deref());
            let connector = connector_of(&state, &session, form.one("connector").unwrap_or_default());
            let markup = views::webhook_form(
                &session,
                catalog.as_deref(),
                &values,
                Some(&problem),
                connector.as_deref(),
            );
            Ok(html(StatusCode::UNPROCESSABLE_ENTITY, Some(&session), markup))
        }
        Err(problem) => Err(PageError::from((problem, &session))),
    }
}

/// Webhook `id` as the session may see it.
async fn webhook_of(state: &AdminState, session: &Session, id: &str) -> Result<WebhookView, PageError> {
    if !session.may_see(id) {
        return Err(PageError::not_found(session));
    }
    crud::get(State(state.clone()), session.caller(), ApiPath(id.to_owned()))
        .await
        .map(|Json(w)| w)
        .map_err(|p| PageError::from((p, session)))
}

/// The catalog `tenant`'s webhooks pick events from, if it has one. An
/// operators' session creating a webhook has no tenant yet: none.
fn catalog_of(state: &AdminState, tenant: Option<&str>) -> Option<std::sync::Arc<crate::config::catalog::Catalog>> {
    tenant.and_then(|t| crate::admin::catalog::of_tenant(state, Some(t)).cloned())
}

/// Webhook `id`, if the session may see and change it (`deletes`: and
/// delete it, which a one-webhook session may not).
async fn managed_webhook(
    state: &AdminState,
    session: &Session,
    id: &str,
    deletes: bool,
) -> Result<WebhookView, PageError> {
    let webhook = webhook_of(state, session, id).await?;
    if !session.manages() || (deletes && session.claims.wh.is_some()) {
        return Err(PageError::read_only(session));
    }
    Ok(webhook)
}

/// A submitted change to webhook `id`: the form, once its CSRF token and the
/// session's right to the change are checked.
async fn change_form(
    state: &AdminState,
    session: &Session,
    id: &str,
    body: &Bytes,
    deletes: bool,
) -> Result<(Form, WebhookView), PageError> {
    let form = Form::checked(body, session)?;
    let webhook = managed_webhook(state, session, id, deletes).await?;
    Ok((form, webhook))
}

async fn detail(
    State(state): State<AdminState>,
    session: Session,
    Path((_, id)): Path<(String, String)>,
    Query(done): Query<Done>,
) -> Result<Response, PageError> {
    let webhook = webhook_of(&state, &session, &id).await?;
    let stats = crate::admin::deliveries::webhook_stats(State(state.clone()), session.caller(), ApiPath(id))
        .await
        .ok()
        .map(|Json(s)| s);
    let catalog = catalog_of(&state, webhook.tenant.as_deref());
    let markup = views::detail(
        &session,
        &webhook,
        stats.as_ref(),
        catalog.as_deref(),
        done_message(done.done.as_deref()),
    );
    Ok(html(StatusCode::OK, Some(&session), markup))
}

async fn edit_form(
    State(state): State<AdminState>,
    session: Session,
    Path((_, id)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let webhook = managed_webhook(&state, &session, &id, false).await?;
    let catalog = catalog_of(&state, webhook.tenant.as_deref());
    let values = views::FormValues {
        tenant: webhook.tenant.clone().unwrap_or_default(),
        name: webhook.name.clone(),
        url: webhook.url.clone(),
        events: webhook.events.clone(),
        // Values are write-only: the form shows names, and keeps a value
        // left empty.
        headers: webhook.headers.keys().map(|k| (k.clone(), String::new())).collect(),
    };
    let markup = views::edit_form(&session, &webhook, catalog.as_deref(), &values, None);
    Ok(html(StatusCode::OK, Some(&session), markup))
}

async fn update(
    State(state): State<AdminState>,
    session: Session,
    Path((_, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, PageError> {
    let (form, webhook) = change_form(&state, &session, &id, &body, false).await?;
    let values = views::FormValues {
        tenant: webhook.tenant.clone().unwrap_or_default(),
        name: form.one("name").unwrap_or_default().trim().to_owned(),
        url: form.one("url").unwrap_or_default().trim().to_owned(),
        events: form.events(),
        headers: form.headers(),
    };
    // A header left empty keeps its value; one removed from the form is gone.
    let headers: BTreeMap<String, String> = values
        .headers
        .iter()
        .map(|(name, value)| {
            let kept = if value.is_empty() {
                webhook.headers.get(name).cloned().unwrap_or_default()
            } else {
                value.clone()
            };
            (name.clone(), kept)
        })
        .collect();
    let change = UpdateWebhook {
        name: Some(values.name.clone()),
        url: Some(values.url.clone()),
        events: Some(values.events.clone()),
        headers: Some(headers),
        limits: None,
    };
    let result = crud::update(
        State(state.clone()),
        session.caller(),
        ApiPath(id.clone()),
        crate::admin::extract::ApiJson(change),
    )
    .await;
    match result {
        Ok(_) => Ok(see_other(session.path(&format!("webhooks/{id}?done=updated")))),
        Err(problem) if problem.status == 422 => {
            let catalog = catalog_of(&state, webhook.tenant.as_deref());
            let markup = views::edit_form(&session, &webhook, catalog.as_deref(), &values, Some(&problem));
            Ok(html(StatusCode::UNPROCESSABLE_ENTITY, Some(&session), markup))
        }
        Err(problem) => Err(PageError::from((problem, &session))),
    }
}

async fn pause(
    State(state): State<AdminState>,
    session: Session,
    Path((_, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, PageError> {
    change_form(&state, &session, &id, &body, false).await?;
    let Json(_paused) = status::pause(State(state.clone()), session.caller(), ApiPath(id.clone()))
        .await
        .map_err(|p| PageError::from((p, &session)))?;
    Ok(see_other(session.path(&format!("webhooks/{id}?done=paused"))))
}

async fn resume(
    State(state): State<AdminState>,
    session: Session,
    Path((_, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, PageError> {
    let (form, _) = change_form(&state, &session, &id, &body, false).await?;
    let replay = form.one("replay") == Some("yes");
    let resumed = status::resume(
        State(state.clone()),
        session.caller(),
        ApiPath(id.clone()),
        OptionalJson(Some(ResumeWebhook { replay })),
    )
    .await
    .map_err(|p| PageError::from((p, &session)))?;
    let done = if resumed.0.replay.is_some() {
        "replaying"
    } else {
        "resumed"
    };
    Ok(see_other(session.path(&format!("webhooks/{id}?done={done}"))))
}

async fn confirm_delete(
    State(state): State<AdminState>,
    session: Session,
    Path((_, id)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let webhook = webhook_of(&state, &session, &id).await?;
    if !session.manages() || session.claims.wh.is_some() {
        return Err(PageError::read_only(&session));
    }
    Ok(html(
        StatusCode::OK,
        Some(&session),
        views::confirm_delete(&session, &webhook),
    ))
}

async fn delete(
    State(state): State<AdminState>,
    session: Session,
    Path((_, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, PageError> {
    change_form(&state, &session, &id, &body, true).await?;
    crud::delete(State(state.clone()), session.caller(), ApiPath(id))
        .await
        .map_err(|p| PageError::from((p, &session)))?;
    Ok(see_other(session.path("?done=deleted")))
}

async fn secret(
    State(state): State<AdminState>,
    session: Session,
    Path((_, id)): Path<(String, String)>,
    Query(done): Query<Done>,
) -> Result<Response, PageError> {
    let webhook = managed_webhook(&state, &session, &id, false).await?;
    let Json(secrets) = secrets::get_secret(State(state.clone()), session.caller(), ApiPath(id))
        .await
        .map_err(|p| PageError::from((p, &session)))?;
    let overlap = state.config().admin.secret_rotation_overlap;
    let markup = views::secret(
        &session,
        &webhook,
        &secrets,
        overlap,
        done_message(done.done.as_deref()),
    );
    Ok(html(StatusCode::OK, Some(&session), markup))
}

async fn rotate(
    State(state): State<AdminState>,
    session: Session,
    Path((_, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, PageError> {
    change_form(&state, &session, &id, &body, false).await?;
    let Json(_rotated) = secrets::rotate_secret(
        State(state.clone()),
        session.caller(),
        ApiPath(id.clone()),
        OptionalJson(Some(RotateSecret { secret: None })),
    )
    .await
    .map_err(|p| PageError::from((p, &session)))?;
    Ok(see_other(session.path(&format!("webhooks/{id}/secret?done=rotated"))))
}

/// The delivery log's filters and page, as the query string carries them.
#[derive(Debug, Default, serde::Deserialize)]
pub struct LogQuery {
    /// `succeeded` or `failed`; anything else (or nothing) is both.
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub event_type: String,
    #[serde(default)]
    pub delivery_id: String,
    /// `datetime-local` values, read as UTC.
    #[serde(default)]
    pub since: String,
    #[serde(default)]
    pub until: String,
    #[serde(default)]
    pub cursor: String,
    /// Refresh the page every few seconds (the live tail).
    #[serde(default)]
    pub live: Option<String>,
    #[serde(default)]
    pub done: Option<String>,
}

/// How many attempts a page of the log shows.
const LOG_PAGE: usize = 25;

/// A `datetime-local` value (`2026-11-29T07:30`, seconds optional) as UTC.
pub fn parse_local(value: &str) -> Option<time::OffsetDateTime> {
    let value = value.trim();
    let with_seconds = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let without = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]");
    time::PrimitiveDateTime::parse(value, with_seconds)
        .or_else(|_| time::PrimitiveDateTime::parse(value, without))
        .ok()
        .map(time::PrimitiveDateTime::assume_utc)
}

async fn deliveries(
    State(state): State<AdminState>,
    session: Session,
    Path((_, id)): Path<(String, String)>,
    Query(query): Query<LogQuery>,
) -> Result<Response, PageError> {
    let webhook = webhook_of(&state, &session, &id).await?;
    let mut problems = Vec::new();
    let mut time_of = |field: &'static str, value: &str| {
        if value.trim().is_empty() {
            return None;
        }
        let parsed = parse_local(value);
        if parsed.is_none() {
            problems.push(format!("{field}: `{value}` is not a date and time"));
        }
        parsed
    };
    let since = time_of("From", &query.since);
    let until = time_of("Until", &query.until);
    let filters = crate::admin::deliveries::DeliveryQuery {
        status: match query.status.as_str() {
            "succeeded" => Some(crate::history::record::Outcome::Succeeded),
            "failed" => Some(crate::history::record::Outcome::Failed),
            _ => None,
        },
        event_type: Some(query.event_type.trim().to_owned()).filter(|e| !e.is_empty()),
        delivery_id: Some(query.delivery_id.trim().to_owned()).filter(|d| !d.is_empty()),
        since,
        until,
        cursor: Some(query.cursor.clone()).filter(|c| !c.is_empty()),
        limit: Some(LOG_PAGE),
    };
    let page = crate::admin::deliveries::list(State(state.clone()), session.caller(), ApiPath(id), ApiQuery(filters))
        .await
        .map_err(|p| PageError::from((p, &session)))?
        .0;
    let markup = views::deliveries(
        &session,
        &webhook,
        &query,
        &page,
        &problems,
        done_message(query.done.as_deref()),
    );
    Ok(html(StatusCode::OK, Some(&session), markup))
}

async fn attempt(
    State(state): State<AdminState>,
    session: Session,
    Path((_, id, attempt_id)): Path<(String, String, String)>,
) -> Result<Response, PageError> {
    let webhook = webhook_of(&state, &session, &id).await?;
    let Json(record) = crate::admin::deliveries::get(State(state.clone()), session.caller(), ApiPath((id, attempt_id)))
        .await
        .map_err(|p| PageError::from((p, &session)))?;
    Ok(html(
        StatusCode::OK,
        Some(&session),
        views::attempt(&session, &webhook, &record),
    ))
}

async fn retry(
    State(state): State<AdminState>,
    session: Session,
    Path((_, id, attempt_id)): Path<(String, String, String)>,
    body: Bytes,
) -> Result<Response, PageError> {
    change_form(&state, &session, &id, &body, false).await?;
    let (_, Json(_retried)) = crate::admin::deliveries::retry(
        State(state.clone()),
        session.caller(),
        ApiPath((id.clone(), attempt_id)),
    )
    .await
    .map_err(|p| PageError::from((p, &session)))?;
    Ok(see_other(
        session.path(&format!("webhooks/{id}/deliveries?done=retried")),
    ))
}

async fn replay_form(
    State(state): State<AdminState>,
    session: Session,
    Path((_, id)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let webhook = managed_webhook(&state, &session, &id, false).await?;
    let since = time::OffsetDateTime::now_utc() - time::Duration::days(1);
    Ok(html(
        StatusCode::OK,
        Some(&session),
        views::replay_form(&session, &webhook, since, None),
    ))
}

/// Starts a replay of the failed deliveries since the form's time: a dry
/// run (a count) first, unless the form says to send them.
async fn replay(
    State(state): State<AdminState>,
    session: Session,
    Path((_, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, PageError> {
    let (form, webhook) = change_form(&state, &session, &id, &body, false).await?;
    let since_text = form.one("since").unwrap_or_default().to_owned();
    let Some(since) = parse_local(&since_text) else {
        let default = time::OffsetDateTime::now_utc() - time::Duration::days(1);
        let markup = views::replay_form(
            &session,
            &webhook,
            default,
            Some("Choose the date and time to replay from."),
        );
        return Ok(html(StatusCode::UNPROCESSABLE_ENTITY, Some(&session), markup));
    };
    let dry_run = form.one("send") != Some("yes");
    let request = crate::admin::deliveries::ReplayRequest {
        since: Some(since),
        until: None,
        reasons: None,
        force: false,
        dry_run,
    };
    let (_, Json(job)) = crate::admin::deliveries::replay(
        State(state.clone()),
        session.caller(),
        ApiPath(id.clone()),
        crate::admin::extract::ApiJson(request),
    )
    .await
    .map_err(|p| PageError::from((p, &session)))?;
    let since = url::form_urlencoded::byte_serialize(since_text.as_bytes()).collect::<String>();
    Ok(see_other(
        session.path(&format!("webhooks/{id}/replays/{}?since={since}", job.id)),
    ))
}

#[derive(serde::Deserialize)]
struct JobQuery {
    #[serde(default)]
    since: String,
}

async fn replay_job(
    State(state): State<AdminState>,
    session: Session,
    Path((_, id, job_id)): Path<(String, String, String)>,
    Query(query): Query<JobQuery>,
) -> Result<Response, PageError> {
    let webhook = managed_webhook(&state, &session, &id, false).await?;
    let Json(job) = crate::admin::jobs::get_replay(State(state.clone()), session.caller(), ApiPath(job_id))
        .await
        .map_err(|p| PageError::from((p, &session)))?;
    if job.webhook_id != webhook.id {
        return Err(PageError::not_found(&session));
    }
    Ok(html(
        StatusCode::OK,
        Some(&session),
        views::replay_job(&session, &webhook, &job, &query.since),
    ))
}

/// The catalog's event types the webhook receives, to send as a test.
fn testable(catalog: Option<&crate::config::catalog::Catalog>, webhook: &WebhookView) -> Vec<String> {
    catalog.map_or_else(Vec::new, |c| {
        c.events
            .iter()
            .filter(|e| {
                webhook
                    .events
                    .iter()
                    .any(|p| crate::webhook::pattern_matches(p, &e.event_type))
            })
            .map(|e| e.event_type.clone())
            .collect()
    })
}

async fn test_form(
    State(state): State<AdminState>,
    session: Session,
    Path((_, id)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let webhook = managed_webhook(&state, &session, &id, false).await?;
    let types = testable(catalog_of(&state, webhook.tenant.as_deref()).as_deref(), &webhook);
    Ok(html(
        StatusCode::OK,
        Some(&session),
        views::test(&session, &webhook, &types, None),
    ))
}

async fn test(
    State(state): State<AdminState>,
    session: Session,
    Path((_, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, PageError> {
    let (form, webhook) = change_form(&state, &session, &id, &body, false).await?;
    let types = testable(catalog_of(&state, webhook.tenant.as_deref()).as_deref(), &webhook);
    let event_type = form.one("event_type").unwrap_or_default().to_owned();
    let request = crate::admin::deliveries::TestRequest { event_type };
    let Json(result) = crate::admin::deliveries::test(
        State(state.clone()),
        session.caller(),
        ApiPath(id),
        crate::admin::extract::ApiJson(request),
    )
    .await
    .map_err(|p| PageError::from((p, &session)))?;
    Ok(html(
        StatusCode::OK,
        Some(&session),
        views::test(&session, &webhook, &types, Some(&result)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(cap: Capability) -> Session {
        Session {
            claims: Claims {
                sid: "ps_1".into(),
                ten: Some("acme".into()),
                cap,
                wh: None,
                exp: i64::MAX,
                by: "acme-portal".into(),
            },
            base: "/portal/s/t".into(),
            csrf: csrf_of(b"k", "ps_1"),
            frame_ancestors: "'self'".into(),
        }
    }

    #[test]
    fn a_form_needs_the_sessions_csrf_token() {
        let s = session(Capability::Manage);
        let good = format!("csrf={}&name=a", s.csrf);
        assert!(Form::checked(&Bytes::from(good), &s).is_ok());
        assert!(Form::checked(&Bytes::from("name=a"), &s).is_err());
        let other = format!("csrf={}&name=a", csrf_of(b"k", "ps_2"));
        assert!(
            Form::checked(&Bytes::from(other), &s).is_err(),
            "another session's token"
        );
    }

    #[test]
    fn forms_give_their_repeated_fields_and_header_rows() {
        let s = session(Capability::Manage);
        let body = format!(
            "csrf={}&event=a.b&event=c.*&events_text=d%0Ae%2Cf&header_name=X-Key&header_value=v1&header_name=&header_value=ignored&header_name=+X-Two+&header_value=",
            s.csrf
        );
        let form = Form::checked(&Bytes::from(body), &s).unwrap();
        assert_eq!(form.events(), ["a.b", "c.*", "d", "e", "f"]);
        assert_eq!(
            form.headers(),
            [
                ("X-Key".to_owned(), "v1".to_owned()),
                ("X-Two".to_owned(), String::new())
            ]
        );
    }

    #[test]
    fn pages_forbid_scripts_and_framing_by_others() {
        let s = session(Capability::ReadOnly);
        let response = html(StatusCode::OK, Some(&s), maud::html! { p { "x" } });
        let csp = response.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.starts_with("default-src 'none';"), "{csp}");
        assert!(csp.ends_with("frame-ancestors 'self'"), "{csp}");
        assert!(!csp.contains("script-src"), "no script source at all: {csp}");
        assert_eq!(response.headers()[header::REFERRER_POLICY], "no-referrer");
        let anonymous = html(StatusCode::NOT_FOUND, None, maud::html! {});
        let csp = anonymous.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.ends_with("frame-ancestors 'none'"), "{csp}");
    }
}

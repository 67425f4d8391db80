//! A webhook's deliveries: the log and its filters, one attempt in full,
//! send one again, send failed ones again (counted first), test events.

use super::webhooks::{catalog_of, change_form, managed_webhook, webhook_of};
use super::*;

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
pub(super) const LOG_PAGE: usize = 25;

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

pub(super) async fn deliveries(
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

pub(super) async fn attempt(
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

pub(super) async fn retry(
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

pub(super) async fn replay_form(
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
pub(super) async fn replay(
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

/// Starts a retry pending: a dry run (a count) first, unless the form says
/// to send them.
pub(super) async fn retry_pending(
    State(state): State<AdminState>,
    session: Session,
    Path((_, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, PageError> {
    let (form, _) = change_form(&state, &session, &id, &body, false).await?;
    let request = crate::admin::deliveries::RetryPendingRequest {
        dry_run: form.one("send") != Some("yes"),
    };
    let (_, Json(job)) = crate::admin::deliveries::retry_pending(
        State(state.clone()),
        session.caller(),
        ApiPath(id.clone()),
        crate::admin::extract::OptionalJson(Some(request)),
    )
    .await
    .map_err(|p| PageError::from((p, &session)))?;
    Ok(see_other(session.path(&format!("webhooks/{id}/replays/{}", job.id))))
}

#[derive(serde::Deserialize)]
pub(super) struct JobQuery {
    #[serde(default)]
    since: String,
}

pub(super) async fn replay_job(
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
pub(super) fn testable(catalog: Option<&crate::config::catalog::Catalog>, webhook: &WebhookView) -> Vec<String> {
    catalog.map_or_else(Vec::new, |c| {
        c.events
            .iter()
            .filter(|e| {
                webhook
                    .events
                    .iter()
                    .any(|p| crate::routing::pattern_matches(p, &e.event_type))
            })
            .map(|e| e.event_type.clone())
            .collect()
    })
}

pub(super) async fn test_form(
    State(state): State<AdminState>,
    session: Session,
    Path((_, id)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let webhook = managed_webhook(&state, &session, &id, false).await?;
    let types = testable(
        catalog_of(&state, &session, webhook.tenant.as_deref())
            .await?
            .as_deref(),
        &webhook,
    );
    Ok(html(
        StatusCode::OK,
        Some(&session),
        views::test(&session, &webhook, &types, None),
    ))
}

pub(super) async fn test(
    State(state): State<AdminState>,
    session: Session,
    Path((_, id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, PageError> {
    let (form, webhook) = change_form(&state, &session, &id, &body, false).await?;
    let types = testable(
        catalog_of(&state, &session, webhook.tenant.as_deref())
            .await?
            .as_deref(),
        &webhook,
    );
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

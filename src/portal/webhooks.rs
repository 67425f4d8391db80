//! The webhook pages: the list, create (also from a connector), the
//! webhook itself, edit, pause, resume, delete and the signing secret.

use super::*;
use crate::admin::webhooks::{FailureStatus, LimitsInput};
use crate::routing::filter::Filter;
use crate::routing::ordering::Ordering;
use crate::webhook::RateLimit;

/// Webhooks on one page of the list.
pub(super) const LIST_PAGE: usize = 25;

/// The list's page and what the previous page did.
#[derive(serde::Deserialize)]
pub(super) struct ListPage {
    done: Option<String>,
    #[serde(default)]
    cursor: String,
}

pub(super) async fn list(
    State(state): State<AdminState>,
    session: Session,
    Query(page): Query<ListPage>,
) -> Result<Response, PageError> {
    let caller = session.caller();
    let (webhooks, next) = match &session.claims.wh {
        Some(only) => {
            let view = crud::get(State(state.clone()), caller.clone(), ApiPath(only.clone()))
                .await
                .map_err(|p| PageError::from((p, &session)))?;
            (vec![session.shown(view.0)], None)
        }
        None => {
            let query = ListQuery {
                tenant: None,
                status: None,
                event: None,
                cursor: Some(page.cursor.clone()).filter(|c| !c.is_empty()),
                limit: Some(LIST_PAGE),
            };
            let listed = crud::list(State(state.clone()), caller.clone(), ApiQuery(query))
                .await
                .map_err(|p| PageError::from((p, &session)))?
                .0;
            let shown = listed.data.into_iter().map(|w| session.shown(w)).collect();
            (shown, listed.next_cursor)
        }
    };
    // The rows' statistics are read at once, not one after another.
    let stats = futures::future::join_all(webhooks.iter().map(|w| {
        let (state, caller, id) = (state.clone(), caller.clone(), w.id.clone());
        async move {
            crate::admin::deliveries::webhook_stats(State(state), caller, ApiPath(id))
                .await
                .ok()
                .map(|Json(s)| s)
        }
    }))
    .await;
    let rows: Vec<_> = webhooks.into_iter().zip(stats).collect();
    let pages = views::Pages {
        next: next.map(|c| {
            session.path(&format!(
                "?cursor={}",
                url::form_urlencoded::byte_serialize(c.as_bytes()).collect::<String>()
            ))
        }),
        first: (!page.cursor.is_empty()).then(|| session.path("")),
    };
    let connectors = crate::admin::catalog::connectors_for(&state, session.claims.ten.as_deref())
        .await
        .map_err(|p| PageError::from((p, &session)))?;
    let connectors: Vec<_> = connectors.iter().collect();
    let markup = views::list(&session, &rows, &pages, &connectors, done_message(page.done.as_deref()));
    Ok(html(StatusCode::OK, Some(&session), markup))
}

#[derive(serde::Deserialize)]
pub(super) struct NewQuery {
    #[serde(default)]
    connector: String,
}

/// The connector `name`, if the session is offered it.
pub(super) async fn connector_of(
    state: &AdminState,
    session: &Session,
    name: &str,
) -> Result<Option<std::sync::Arc<crate::config::connector::Connector>>, PageError> {
    Ok(
        crate::admin::catalog::connectors_for(state, session.claims.ten.as_deref())
            .await
            .map_err(|p| PageError::from((p, session)))?
            .into_iter()
            .find(|c| c.name == name),
    )
}

pub(super) async fn new_form(
    State(state): State<AdminState>,
    session: Session,
    Query(query): Query<NewQuery>,
) -> Result<Response, PageError> {
    if !session.manages() || session.claims.wh.is_some() {
        return Err(PageError::read_only(&session));
    }
    let catalog = catalog_of(&state, &session, session.claims.ten.as_deref()).await?;
    let connector = connector_of(&state, &session, &query.connector).await?;
    let values = match &connector {
        // A connector fills in what it knows; the header values are the user's.
        Some(c) => views::FormValues {
            tenant: String::new(),
            name: c.title.clone(),
            url: c.url.clone(),
            events: c.events.clone(),
            headers: c.headers.keys().map(|k| (k.clone(), String::new())).collect(),
            ..Default::default()
        },
        None => views::FormValues::default(),
    };
    let tenants = known_tenants(&state, &session).await;
    let markup = views::webhook_form(
        &session,
        catalog.as_deref(),
        &values,
        None,
        connector.as_deref(),
        &tenants,
    );
    Ok(html(StatusCode::OK, Some(&session), markup))
}

pub(super) async fn create(
    State(state): State<AdminState>,
    session: Session,
    body: Bytes,
) -> Result<Response, PageError> {
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
        filter: form.one("filter").unwrap_or_default().trim().to_owned(),
        rate: form.one("rate").unwrap_or_default().trim().to_owned(),
        burst: form.one("burst").unwrap_or_default().trim().to_owned(),
        ordering: form.one("ordering").unwrap_or_default().trim().to_owned(),
        ordering_pointer: form.one("ordering_pointer").unwrap_or_default().trim().to_owned(),
    };
    // An operators' session names the tenant; a tenant's session is its own.
    let tenant = (session.claims.ten.is_none() && !values.tenant.is_empty()).then(|| values.tenant.clone());
    let typed = typed_of(&values);
    let created = match typed {
        Ok((filter, rate, ordering)) => {
            let body = CreateWebhook {
                id: None,
                uid: None,
                tenant,
                name: values.name.clone(),
                url: values.url.clone(),
                events: values.events.clone(),
                headers: values.headers.iter().cloned().collect::<BTreeMap<_, _>>(),
                secret: None,
                limits: LimitsInput {
                    rate,
                    ..Default::default()
                },
                filter,
                // Client certificates are set through the API or the CLI.
                tls_client: None,
                ordering,
            };
            crud::create_webhook(&state, &session.caller(), body).await
        }
        Err(problem) => Err(problem),
    };
    match created {
        Ok(webhook) => Ok(see_other(
            session.path(&format!("webhooks/{}?done=created", webhook.id)),
        )),
        Err(problem) if problem.status == 422 || problem.status == 409 || problem.status == 403 => {
            let catalog = catalog_of(&state, &session, session.claims.ten.as_deref()).await?;
            let connector = connector_of(&state, &session, form.one("connector").unwrap_or_default()).await?;
            let tenants = known_tenants(&state, &session).await;
            let markup = views::webhook_form(
                &session,
                catalog.as_deref(),
                &values,
                Some(&problem),
                connector.as_deref(),
                &tenants,
            );
            Ok(html(StatusCode::UNPROCESSABLE_ENTITY, Some(&session), markup))
        }
        Err(problem) => Err(PageError::from((problem, &session))),
    }
}

/// The payload filter typed in the form (none when left empty), or the
/// API's refusal of it, naming where it is wrong as the API would.
fn filter_of(text: &str) -> Result<Option<Filter>, Problem> {
    if text.is_empty() {
        return Ok(None);
    }
    Filter::parse_named(text)
        .map(Some)
        .map_err(|e| Problem::invalid(e.field, e.message))
}

/// The filter, the rate limit and the ordering the form holds as text.
type Typed = (Option<Filter>, Option<RateLimit>, Option<Ordering>);

/// The form's typed fields read as the API takes them, or the first
/// refusal, named as the API names it.
fn typed_of(values: &views::FormValues) -> Result<Typed, Problem> {
    Ok((filter_of(&values.filter)?, rate_of(values)?, ordering_of(values)?))
}

/// The ordering chosen in the form (none for "nothing"), or why it is
/// refused, named as the API names it. The pointer is read only when
/// ordering by a value in the body.
pub(super) fn ordering_of(values: &views::FormValues) -> Result<Option<Ordering>, Problem> {
    let refused = |message: String| Problem::invalid("ordering", message);
    let pointer = values.ordering_pointer.as_str();
    match values.ordering.as_str() {
        "" => Ok(None),
        "key" => Ok(Some(Ordering::RecordKey)),
        "pointer" if pointer.trim().is_empty() => Err(refused(
            "give the JSON pointer of the value to order by, e.g. `/data/customer_id`".into(),
        )),
        "pointer" => Ordering::pointer(pointer)
            .map(Some)
            .map_err(|why| refused(format!("`{pointer}` {why}"))),
        other => Err(refused(format!("`{other}` is not a choice of this form"))),
    }
}

/// The rate limit typed in the form (none when both fields are empty), or
/// why it is refused, named as the API names it.
fn rate_of(values: &views::FormValues) -> Result<Option<RateLimit>, Problem> {
    let (rate, burst) = (values.rate.as_str(), values.burst.as_str());
    if rate.is_empty() && burst.is_empty() {
        return Ok(None);
    }
    let refused = |message: &str| Problem::invalid("limits.rate", message);
    if rate.is_empty() {
        return Err(refused("a burst needs a rate: how many requests a second"));
    }
    let per_second = rate
        .parse::<f64>()
        .map_err(|_| refused("requests a second must be a number, such as 0.5 or 20"))?;
    let burst = match burst {
        "" => None,
        b => Some(
            b.parse::<u32>()
                .map_err(|_| refused("the burst must be a whole number from 1"))?,
        ),
    };
    let limit = RateLimit { per_second, burst };
    limit.check().map_err(|m| refused(&m))?;
    Ok(Some(limit))
}

/// Webhook `id` as the session may see it.
pub(super) async fn webhook_of(state: &AdminState, session: &Session, id: &str) -> Result<WebhookView, PageError> {
    if !session.may_see(id) {
        return Err(PageError::not_found(session));
    }
    crud::get(State(state.clone()), session.caller(), ApiPath(id.to_owned()))
        .await
        .map(|Json(w)| session.shown(w))
        .map_err(|p| PageError::from((p, session)))
}

/// The tenants an operators' session may pick from when creating a webhook
/// (configured and created ones, the first page); none for a tenant's own
/// session, or when they cannot be read (the field still takes any name).
async fn known_tenants(state: &AdminState, session: &Session) -> Vec<String> {
    if session.claims.ten.is_some() {
        return Vec::new();
    }
    let query = crate::admin::tenants::api::TenantQuery {
        cursor: None,
        limit: Some(crate::config::admin::MAX_PAGE_SIZE),
    };
    match crate::admin::tenants::api::list(
        State(state.clone()),
        session.caller(),
        crate::admin::extract::ApiQuery(query),
    )
    .await
    {
        Ok(Json(page)) => page.data.into_iter().map(|t| t.name).collect(),
        Err(problem) => {
            tracing::warn!(detail = ?problem.detail, "portal: cannot list the tenants");
            Vec::new()
        }
    }
}

/// The catalog `tenant`'s webhooks pick events from, if it has one. An
/// operators' session creating a webhook has no tenant yet: none.
pub(super) async fn catalog_of(
    state: &AdminState,
    session: &Session,
    tenant: Option<&str>,
) -> Result<Option<std::sync::Arc<crate::config::catalog::Catalog>>, PageError> {
    let Some(tenant) = tenant else { return Ok(None) };
    state
        .tenant(Some(tenant))
        .await
        .map(|t| t.catalog)
        .map_err(|p| PageError::from((p, session)))
}

/// Webhook `id`, if the session may see and change it (`deletes`: and
/// delete it, which a one-webhook session may not).
pub(super) async fn managed_webhook(
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
pub(super) async fn change_form(
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

pub(super) async fn detail(
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
    let catalog = catalog_of(&state, &session, webhook.tenant.as_deref()).await?;
    let markup = views::detail(
        &session,
        &webhook,
        stats.as_ref(),
        catalog.as_deref(),
        done_message(done.done.as_deref()),
    );
    Ok(html(StatusCode::OK, Some(&session), markup))
}

pub(super) async fn edit_form(
    State(state): State<AdminState>,
    session: Session,
    Path((_, id)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let webhook = managed_webhook(&state, &session, &id, false).await?;
    let catalog = catalog_of(&state, &session, webhook.tenant.as_deref()).await?;
    let values = views::FormValues {
        tenant: webhook.tenant.clone().unwrap_or_default(),
        name: webhook.name.clone(),
        url: webhook.url.clone(),
        events: webhook.events.clone(),
        // Values are write-only: the form shows names, and keeps a value
        // left empty.
        headers: webhook.headers.keys().map(|k| (k.clone(), String::new())).collect(),
        filter: webhook
            .filter
            .as_ref()
            .map(|f| serde_json::to_string_pretty(f).unwrap_or_default())
            .unwrap_or_default(),
        rate: webhook
            .limits
            .rate
            .map(|r| r.per_second.to_string())
            .unwrap_or_default(),
        burst: webhook
            .limits
            .rate
            .and_then(|r| r.burst)
            .map(|b| b.to_string())
            .unwrap_or_default(),
        ordering: match &webhook.ordering {
            None => "",
            Some(Ordering::RecordKey) => "key",
            Some(Ordering::Pointer { .. }) => "pointer",
        }
        .to_owned(),
        ordering_pointer: match &webhook.ordering {
            Some(Ordering::Pointer { pointer, .. }) => pointer.clone(),
            _ => String::new(),
        },
    };
    let markup = views::edit_form(&session, &webhook, catalog.as_deref(), &values, None);
    Ok(html(StatusCode::OK, Some(&session), markup))
}

pub(super) async fn update(
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
        filter: form.one("filter").unwrap_or_default().trim().to_owned(),
        rate: form.one("rate").unwrap_or_default().trim().to_owned(),
        burst: form.one("burst").unwrap_or_default().trim().to_owned(),
        ordering: form.one("ordering").unwrap_or_default().trim().to_owned(),
        ordering_pointer: form.one("ordering_pointer").unwrap_or_default().trim().to_owned(),
    };
    // A header left empty keeps its value (as the API's `null` does); one
    // removed from the form is gone.
    let headers: BTreeMap<String, Option<String>> = values
        .headers
        .iter()
        .map(|(name, value)| (name.clone(), Some(value.clone()).filter(|v| !v.is_empty())))
        .collect();
    let result = match typed_of(&values) {
        Ok((filter, rate, ordering)) => {
            // The form edits the rate; the webhook's other limits (set
            // through the API) are sent back as they are.
            let limits = LimitsInput {
                max_in_flight: webhook.limits.max_in_flight,
                timeout_ms: webhook.limits.timeout_ms,
                final_statuses: webhook
                    .limits
                    .final_statuses
                    .as_ref()
                    .map(|s| s.iter().copied().map(FailureStatus).collect()),
                rate,
            };
            let change = UpdateWebhook {
                name: Some(values.name.clone()),
                url: Some(values.url.clone()),
                events: Some(values.events.clone()),
                headers: Some(headers),
                limits: Some(limits),
                // An emptied field removes the filter.
                filter: Some(filter),
                // Kept: the form does not carry client certificates.
                tls_client: None,
                // "Nothing" removes the ordering.
                ordering: Some(ordering),
            };
            crud::update(
                State(state.clone()),
                session.caller(),
                ApiPath(id.clone()),
                crate::admin::extract::ApiJson(change),
            )
            .await
            .map(drop)
        }
        Err(problem) => Err(problem),
    };
    match result {
        Ok(_) => Ok(see_other(session.path(&format!("webhooks/{id}?done=updated")))),
        Err(problem) if problem.status == 422 => {
            let catalog = catalog_of(&state, &session, webhook.tenant.as_deref()).await?;
            let markup = views::edit_form(&session, &webhook, catalog.as_deref(), &values, Some(&problem));
            Ok(html(StatusCode::UNPROCESSABLE_ENTITY, Some(&session), markup))
        }
        Err(problem) => Err(PageError::from((problem, &session))),
    }
}

pub(super) async fn pause(
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

pub(super) async fn resume(
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

pub(super) async fn confirm_delete(
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

pub(super) async fn delete(
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

pub(super) async fn secret(
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

pub(super) async fn rotate(
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

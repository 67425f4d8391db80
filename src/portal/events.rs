//! A webhook's deliveries by event: where each stands, its attempts beneath.

use super::webhooks::webhook_of;
use super::*;
use crate::history::record::DeliveryStatus;

/// The page's filters and place, as the query string carries them.
#[derive(Debug, Default, serde::Deserialize)]
pub struct EventsQuery {
    /// `delivered`, `pending_retry`, `dead_lettered` or `kept`; anything
    /// else (or nothing) is every status.
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub event_type: String,
    #[serde(default)]
    pub cursor: String,
}

/// The statuses the page filters by, as the API names them.
fn status_of(value: &str) -> Option<DeliveryStatus> {
    serde_json::from_value(serde_json::Value::String(value.to_owned())).ok()
}

pub(super) async fn events(
    State(state): State<AdminState>,
    session: Session,
    Path((_, id)): Path<(String, String)>,
    Query(query): Query<EventsQuery>,
) -> Result<Response, PageError> {
    let webhook = webhook_of(&state, &session, &id).await?;
    let filters = crate::admin::events::EventQuery {
        status: status_of(&query.status),
        event_type: Some(query.event_type.trim().to_owned()).filter(|e| !e.is_empty()),
        since: None,
        until: None,
        cursor: Some(query.cursor.clone()).filter(|c| !c.is_empty()),
        limit: Some(super::deliveries::LOG_PAGE),
    };
    let page = crate::admin::events::list(State(state.clone()), session.caller(), ApiPath(id), ApiQuery(filters))
        .await
        .map_err(|p| PageError::from((p, &session)))?
        .0;
    Ok(html(
        StatusCode::OK,
        Some(&session),
        views::events(&session, &webhook, &query, &page),
    ))
}

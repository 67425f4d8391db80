//! `/v1/webhooks/{id}/pause` and `/resume`: stop deliveries, keeping what
//! arrives meanwhile, and start them again with a replay of it.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::{change, load, store_error, WebhookView};
use crate::admin::auth::Caller;
use crate::admin::extract::{ApiPath, OptionalJson};
use crate::admin::jobs::{Pool, ReplayJob, Work};
use crate::admin::problem::Problem;
use crate::admin::AdminState;
use crate::retry::reason::Reason;
use crate::retry::replay::{ReplayFilter, ReplayOptions};
use crate::webhook::{StatusBy, WebhookStatus};

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

/// Who a caller changes a status as.
fn status_by(caller: &Caller) -> StatusBy {
    match caller.tenant {
        Some(_) => StatusBy::Tenant,
        None => StatusBy::Operator,
    }
}

/// Pauses a webhook: its deliveries are not attempted but kept in the
/// dead-letter topic (`webhook_paused`), for a replay on resume. An
/// operator's pause of a webhook its tenant paused makes it the operator's
/// (`status_by`): only an operator may then resume it.
#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/pause",
    tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id")),
    responses(
        (status = 200, description = "The paused webhook (pausing a paused webhook changes nothing, but an admin token's pause of a webhook its tenant paused makes it the operators')", body = WebhookView),
        (status = 409, description = "The webhook is disabled; resume it instead", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn pause(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<WebhookView>, Problem> {
    let now = OffsetDateTime::now_utc();
    let by = status_by(&caller);
    let (webhook, changed) = change(&state, &caller, &id, |current| match current.status {
        WebhookStatus::Paused if by == StatusBy::Operator && current.status_set_by() != Some(StatusBy::Operator) => {
            // The operator takes the pause over; it keeps its start, so that
            // a resume's replay still covers all of it.
            let mut next = current.clone();
            next.status_by = Some(StatusBy::Operator);
            next.status_reason = Some(format!("paused by `{}`", caller.name));
            next.updated_at = now;
            Ok(Some(next))
        }
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
            next.status_by = Some(by);
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

/// 403 when `caller` is a tenant's and an operator set `webhook`'s status.
fn operator_only(caller: &Caller, webhook: &crate::webhook::Webhook) -> Result<(), Problem> {
    if caller.tenant.is_none() || webhook.status_set_by() != Some(StatusBy::Operator) {
        return Ok(());
    }
    Err(Problem::new(
        axum::http::StatusCode::FORBIDDEN,
        "forbidden",
        "Forbidden",
        Some(format!(
            "webhook `{}` was {} by an operator ({}); only an operator may resume it",
            webhook.id,
            webhook.status.as_str(),
            webhook.status_reason.as_deref().unwrap_or("no reason recorded")
        )),
    ))
}

/// How much earlier than a pause's start a resume's replay looks, for the
/// clocks of replicas that dead-lettered its deliveries.
const KEPT_SINCE_SLACK: time::Duration = time::Duration::minutes(1);

/// Resumes a paused or disabled webhook, optionally replaying what was kept
/// while it was not active. A tenant token resumes only what its tenant or
/// Herald paused or disabled (`status_by`); what an operator did, only an
/// admin token undoes.
#[utoipa::path(
    post,
    path = "/v1/webhooks/{id}/resume",
    tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id")),
    request_body(content = Option<ResumeWebhook>, description = "Optional; `{\"replay\": true}` re-delivers what was kept"),
    responses(
        (status = 200, description = "The active webhook, and the replay started", body = Resumed),
        (status = 403, description = "A tenant token, and an operator paused or disabled the webhook (`status_by`); nothing was changed", body = Problem, content_type = "application/problem+json"),
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
    // Refused before anything is taken (and again at the write, which reads
    // the stored document afresh).
    let current = load(&state, &caller, &id).await?;
    operator_only(&caller, &current)?;
    // A replay's place is taken first: refused, nothing changes. It is the
    // webhook's place whichever way the path names it (id or uid).
    let admitted = match body.replay {
        true => Some(
            state
                .jobs()
                .admit(state.config(), Pool::Replays, &current.id, current.tenant.as_deref())
                .await?,
        ),
        false => None,
    };
    let now = OffsetDateTime::now_utc();
    // When the pause (or disablement) being ended began.
    let mut kept_since = None;
    let (webhook, changed) = change(&state, &caller, &id, |current| {
        if current.status == WebhookStatus::Active {
            return Ok(None);
        }
        operator_only(&caller, current)?;
        kept_since = current.status_changed_at;
        let mut next = current.clone();
        next.status = WebhookStatus::Active;
        next.status_reason = None;
        next.status_by = None;
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
                reasons: Reason::kept().collect(),
                since: replay_window.0,
                until: replay_window.1,
                ..Default::default()
            };
            Some(
                state
                    .jobs()
                    .start(
                        admitted,
                        &state,
                        &id,
                        webhook.tenant.clone(),
                        Work::Replay {
                            filter,
                            options: ReplayOptions::default(),
                        },
                    )
                    .await?,
            )
        }
    };
    Ok(Json(Resumed {
        webhook: WebhookView::from(&webhook),
        replay,
    }))
}

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
use crate::admin::jobs::{Pool, ReplayJob};
use crate::admin::problem::Problem;
use crate::admin::AdminState;
use crate::retry::codec::reasons;
use crate::retry::replay::{ReplayFilter, ReplayOptions};
use crate::webhook::WebhookStatus;

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
    // A replay's place is taken first: refused, nothing changes. It is the
    // webhook's place whichever way the path names it (id or uid).
    let admitted = match body.replay {
        true => {
            let current = load(&state, &caller, &id).await?;
            Some(
                state
                    .jobs()
                    .admit(state.config(), Pool::Replays, &current.id, current.tenant.as_deref())
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
                    .start(
                        admitted,
                        &state,
                        &id,
                        webhook.tenant.clone(),
                        filter,
                        ReplayOptions::default(),
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

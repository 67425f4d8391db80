//! `/v1/webhooks/{id}/secret`: the signing secrets, and their rotation with
//! an overlap in which the previous secret signs too.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::{change, load};
use crate::admin::auth::Caller;
use crate::admin::extract::{ApiPath, OptionalJson};
use crate::admin::problem::Problem;
use crate::admin::AdminState;
use crate::webhook::{decode_secret, generate_secret, ExpiringSecret, Webhook};

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
/// A rotated-out secret that still signs until `expires_at`.
pub struct PreviousSecret {
    pub secret: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
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

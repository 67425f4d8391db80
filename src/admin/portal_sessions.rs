//! `/v1/tenants/{tenant}/portal-sessions`: short-lived links to the webhook
//! portal, for a product to show its customers their webhooks.
//!
//! A link carries a token: its claims (session id, tenant, capability, an
//! optional webhook, expiry, who made it) and their HMAC-SHA256 under
//! `portal.signing_key`, so any replica can check it without a lookup of
//! its own. Each session also has a Redis key that lives as long as it does;
//! revoking deletes it, and a page checks it on every request. A tenant
//! holds at most `portal.max_sessions_per_tenant` live sessions, and a
//! session made by an issued token ends when that token is revoked, and no
//! later than it expires ([`crate::admin::session_store`]).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::admin::auth::Caller;
use crate::admin::extract::{ApiPath, OptionalJson};
use crate::admin::problem::Problem;
use crate::admin::session_store::{self, NewSession, Recorded};
use crate::admin::AdminState;
use crate::config::Config;

/// What a portal session may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Capability {
    /// Create, change, pause, resume and delete webhooks, see and rotate secrets.
    Manage,
    /// See webhooks and their deliveries; change nothing, see no secret.
    ReadOnly,
}

/// A new portal session.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePortalSession {
    /// `manage` (default) or `read_only`.
    #[serde(default)]
    pub capability: Option<Capability>,
    /// Only this webhook (its id): the session sees no other and creates none.
    #[serde(default)]
    pub webhook: Option<String>,
    /// How long the link works, in seconds (default `portal.session_ttl`,
    /// at most `portal.max_session_ttl`).
    #[serde(default)]
    #[schema(minimum = 1)]
    pub ttl_seconds: Option<u64>,
}

/// A portal session: the link to give the user.
#[derive(Debug, Serialize, ToSchema)]
pub struct PortalSession {
    /// Names the session, to revoke it.
    pub id: String,
    /// Its tenant; none for an operators' session (every tenant).
    pub tenant: Option<String>,
    pub capability: Capability,
    /// The one webhook the session sees, if it is limited to one.
    pub webhook: Option<String>,
    /// The link: under `portal.public_url`, or a path on the API's address.
    pub url: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

/// What a portal token says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Session id.
    pub sid: String,
    /// Tenant; none for an operators' session, which sees every tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ten: Option<String>,
    /// Capability.
    pub cap: Capability,
    /// The one webhook, if limited to one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wh: Option<String>,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// The name of the token that made the session (for what the session changes).
    pub by: String,
    /// For a tenant created through the API, when it was (RFC 3339): the
    /// session ends when that tenant is deleted, and does not come back
    /// with a new tenant of the same name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inc: Option<String>,
}

/// What Redis keeps of a live session: everything its link claims (the
/// key also expires with it), and the digest of the issued token that made
/// it, which its link does not carry. A link is honoured only when its
/// claims are exactly these: the signature proves who signed a link, the
/// stored session what was issued, so a link re-signed with claims of its
/// own (a leaked or guessed key) opens nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ten: Option<String>,
    pub cap: Capability,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wh: Option<String>,
    pub by: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inc: Option<String>,
    pub exp: i64,
    /// The SHA-256 digest (hex) of the issued token that made it, to end
    /// it when that token is revoked; none for a configured token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tok: Option<String>,
}

impl Stored {
    /// What to keep of a session issued with `claims` (by a configured token).
    pub fn of(claims: &Claims) -> Stored {
        Stored {
            ten: claims.ten.clone(),
            cap: claims.cap,
            wh: claims.wh.clone(),
            by: claims.by.clone(),
            inc: claims.inc.clone(),
            exp: claims.exp,
            tok: None,
        }
    }

    /// The same session, made by the issued token with `digest`.
    pub fn made_by(self, digest: Option<String>) -> Stored {
        Stored { tok: digest, ..self }
    }

    /// A stored session, or `None` for a value that is not one (written by a
    /// version that kept only the tenant: its links are refused).
    pub fn parse(raw: &str) -> Option<Stored> {
        serde_json::from_str(raw).ok()
    }

    /// Whether `claims` are exactly what was issued.
    pub fn matches(&self, claims: &Claims) -> bool {
        Stored::of(claims).made_by(self.tok.clone()) == *self
    }

    /// The stored value.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a stored session serialises")
    }
}

/// The incarnation of a tenant created through the API, as claims carry it.
pub fn incarnation(tenant: &crate::admin::tenants::Effective) -> Option<String> {
    tenant
        .created_at
        .filter(|_| tenant.source == crate::admin::tenants::Source::Api)
        .and_then(|at| at.format(&time::format_description::well_known::Rfc3339).ok())
}

/// Why a portal token is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the link is malformed")]
    Malformed,
    #[error("the link's signature does not match")]
    BadSignature,
    #[error("the link has expired")]
    Expired,
}

/// `claims` signed with `key`: `base64url(json).base64url(hmac)`.
pub fn sign(key: &[u8], claims: &Claims) -> String {
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialise"));
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(payload.as_bytes());
    format!("{payload}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

/// The claims of `token` if `key` signed it and it has not expired at `now`
/// (seconds since the epoch). The signature is compared in constant time.
pub fn verify(key: &[u8], token: &str, now: i64) -> Result<Claims, TokenError> {
    let (payload, signature) = token.split_once('.').ok_or(TokenError::Malformed)?;
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| TokenError::Malformed)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(payload.as_bytes());
    mac.verify_slice(&signature).map_err(|_| TokenError::BadSignature)?;
    let json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| TokenError::Malformed)?;
    let claims: Claims = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
    if claims.exp <= now {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

/// 429: `tenant` (none: the operators) holds `max` live sessions, the
/// first of which expires in `wait_ms`. No live session is ended to make
/// room (its user may be on its pages); the caller is told how to end one.
fn full(tenant: Option<&str>, max: usize, wait_ms: i64) -> Problem {
    let wait = u64::try_from(wait_ms.max(0) / 1_000 + 1).unwrap_or(1);
    let whose = tenant.map_or("the operators".to_owned(), |t| format!("tenant `{t}`"));
    Problem::too_many(format!(
        "{whose} has {max} live portal sessions (portal.max_sessions_per_tenant); end one with \
         DELETE /v1/portal-sessions/{{id}} (revoking a token ends the sessions it made), or try again \
         when the next one expires, in {wait} s"
    ))
    .retry_after(wait)
}

/// `at` in milliseconds since the epoch.
fn millis(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// The key of a live session in Redis (deleted when revoked).
pub fn session_key(prefix: &str, sid: &str) -> String {
    format!("{prefix}portal:session:{sid}")
}

/// The link to a session's pages.
pub fn link(config: &Config, token: &str) -> String {
    format!("{}/portal/s/{token}/", config.portal.public_url.trim_end_matches('/'))
}

fn portal_off() -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        "portal-off",
        "The portal is off",
        Some("set portal.signing_key to turn it on (docs/portal.md)".into()),
    )
}

/// Creates a portal session: a link that shows the tenant's webhooks for a
/// while, to give (or embed in an iframe for) one of its users.
#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/portal-sessions",
    tag = "portal",
    params(("tenant" = String, Path, description = "Tenant")),
    request_body(content = Option<CreatePortalSession>, description = "Optional; a `manage` session of `portal.session_ttl` by default"),
    responses(
        (status = 201, description = "The session and its link", body = PortalSession),
        (status = 404, description = "No such tenant for this token, or the portal is off (portal.signing_key is empty)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The tenant holds portal.max_sessions_per_tenant live sessions; Retry-After says when the next one expires", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(tenant): ApiPath<String>,
    OptionalJson(body): OptionalJson<CreatePortalSession>,
) -> Result<(StatusCode, Json<PortalSession>), Problem> {
    if !caller.can_access(Some(&tenant)) {
        return Err(Problem::not_found("tenant", &tenant));
    }
    start(&state, &caller, Some(tenant), body.unwrap_or_default()).await
}

/// Creates an operators' portal session: the same pages across every
/// tenant (admin tokens only).
#[utoipa::path(
    post,
    path = "/v1/portal-sessions",
    tag = "portal",
    request_body(content = Option<CreatePortalSession>, description = "Optional; a `manage` session of `portal.session_ttl` by default"),
    responses(
        (status = 201, description = "The session and its link", body = PortalSession),
        (status = 403, description = "Not an admin token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The portal is off (portal.signing_key is empty)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The operators hold portal.max_sessions_per_tenant live sessions; Retry-After says when the next one expires", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn create_for_operators(
    State(state): State<AdminState>,
    caller: Caller,
    OptionalJson(body): OptionalJson<CreatePortalSession>,
) -> Result<(StatusCode, Json<PortalSession>), Problem> {
    caller.require_admin(
        "a session across tenants (a tenant token makes its tenant's: POST /v1/tenants/{tenant}/portal-sessions)",
    )?;
    start(&state, &caller, None, body.unwrap_or_default()).await
}

async fn start(
    state: &AdminState,
    caller: &Caller,
    tenant: Option<String>,
    body: CreatePortalSession,
) -> Result<(StatusCode, Json<PortalSession>), Problem> {
    let config = state.config();
    if !config.portal.enabled() {
        return Err(portal_off());
    }
    let ttl = match body.ttl_seconds {
        None => config.portal.session_ttl,
        Some(0) => return Err(Problem::invalid("ttl_seconds", "must be at least 1")),
        Some(s) if s > config.portal.max_session_ttl.as_secs() => {
            return Err(Problem::invalid(
                "ttl_seconds",
                format!(
                    "must be at most {} (portal.max_session_ttl)",
                    config.portal.max_session_ttl.as_secs()
                ),
            ))
        }
        Some(s) => std::time::Duration::from_secs(s),
    };
    let now = OffsetDateTime::now_utc();
    // A session made by an issued token ends no later than that token.
    let ttl = match caller.issued.as_ref().and_then(|t| t.expires_at) {
        Some(at) => ttl.min(std::time::Duration::try_from(at - now).unwrap_or_default()),
        None => ttl,
    }
    .max(std::time::Duration::from_secs(1));
    if let Some(id) = &body.webhook {
        let webhook = crate::admin::webhooks::load(state, caller, id).await?;
        if tenant.is_some() && webhook.tenant != tenant {
            return Err(Problem::invalid("webhook", "is not a webhook of this tenant"));
        }
    }
    let incarnation = match tenant.as_deref() {
        Some(t) => incarnation(&state.tenant(Some(t)).await?),
        None => None,
    };
    let sid = format!("ps_{}", hex::encode(rand::random::<[u8; 12]>()));
    let expires_at = now + ttl;
    let claims = Claims {
        sid: sid.clone(),
        ten: tenant.clone(),
        cap: body.capability.unwrap_or(Capability::Manage),
        wh: body.webhook.clone(),
        exp: expires_at.unix_timestamp(),
        by: caller.name.clone(),
        inc: incarnation,
    };
    let max = config.portal.max_sessions_per_tenant;
    let session = NewSession {
        sid: &sid,
        tenant: tenant.as_deref(),
        stored: Stored::of(&claims)
            .made_by(caller.issued.as_ref().map(|t| t.digest.clone()))
            .to_json(),
        expires_ms: millis(expires_at),
        ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
        token_key: caller.issued.as_ref().map(|t| state.registry().keys().token(&t.digest)),
        max,
    };
    let mut conn = state.redis();
    match session_store::record(&mut conn, &config.redis.prefix, millis(now), &session)
        .await
        .map_err(|e| Problem::unavailable("portal sessions", &e))?
    {
        Recorded::Made => {}
        // Revoked since this request was let in.
        Recorded::TokenGone => return Err(Problem::unauthorized()),
        Recorded::Full { next_expiry_ms } => return Err(full(tenant.as_deref(), max, next_expiry_ms - millis(now))),
    }
    let token = sign(config.portal.signing_key.as_bytes(), &claims);
    Ok((
        StatusCode::CREATED,
        Json(PortalSession {
            id: sid,
            tenant,
            capability: claims.cap,
            webhook: claims.wh,
            url: link(config, &token),
            expires_at,
        }),
    ))
}

/// Revokes a portal session: its link stops working at once, on every replica.
#[utoipa::path(
    delete,
    path = "/v1/portal-sessions/{id}",
    tag = "portal",
    params(("id" = String, Path, description = "Session id")),
    responses((status = 204, description = "Revoked"))
)]
pub async fn revoke(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, Problem> {
    let key = session_key(&state.config().redis.prefix, &id);
    let mut conn = state.redis();
    let stored: Option<String> = conn
        .get(&key)
        .await
        .map_err(|e| Problem::unavailable("portal sessions", &e))?;
    // Its tenant ("" for an operators' session); a value written by a version
    // that kept only the tenant is the tenant.
    let tenant = stored.map(|raw| match Stored::parse(&raw) {
        Some(session) => session.ten.unwrap_or_default(),
        None => raw,
    });
    // An operators' session is an admin token's to revoke.
    let allowed = |t: &str| {
        if t.is_empty() {
            caller.tenant.is_none()
        } else {
            caller.can_access(Some(t))
        }
    };
    match tenant {
        Some(t) if allowed(&t) => {
            let tenant = Some(t.as_str()).filter(|t| !t.is_empty());
            session_store::forget(&mut conn, &state.config().redis.prefix, tenant, &id)
                .await
                .map_err(|e| Problem::unavailable("portal sessions", &e))?;
            Ok(StatusCode::NO_CONTENT)
        }
        _ => Err(Problem::not_found("portal session", &id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            sid: "ps_1".into(),
            ten: Some("acme".into()),
            cap: Capability::ReadOnly,
            wh: Some("wh_1".into()),
            exp: 2_000,
            by: "acme-portal".into(),
            inc: None,
        }
    }

    #[test]
    fn a_session_is_honoured_only_as_it_was_issued() {
        let issued = claims();
        let stored = Stored::parse(&Stored::of(&issued).to_json()).expect("round trip");
        assert!(stored.matches(&issued));
        let changed = [
            Claims {
                cap: Capability::Manage,
                ..claims()
            },
            Claims { ten: None, ..claims() },
            Claims { wh: None, ..claims() },
            Claims {
                by: "ops".into(),
                ..claims()
            },
            Claims {
                inc: Some("2026-01-01T00:00:00Z".into()),
                ..claims()
            },
            Claims {
                exp: claims().exp + 86_400,
                ..claims()
            },
        ];
        for c in &changed {
            assert!(!stored.matches(c), "{c:?}");
        }
        let by_token = Stored::of(&issued).made_by(Some("ab12".into()));
        let kept = Stored::parse(&by_token.to_json()).expect("round trip");
        assert_eq!(kept.tok.as_deref(), Some("ab12"), "the token kept, not in the link");
        assert!(kept.matches(&issued));
        assert_eq!(Stored::parse("acme"), None, "a tenant alone, as kept before: refused");
        assert_eq!(Stored::parse(""), None);
    }

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let key = b"0123456789abcdef0123456789abcdef";
        let token = sign(key, &claims());
        assert_eq!(verify(key, &token, 1_999), Ok(claims()));
        assert_eq!(verify(key, &token, 2_000), Err(TokenError::Expired));
    }

    #[test]
    fn a_changed_or_foreign_token_is_refused() {
        let key = b"0123456789abcdef0123456789abcdef";
        let token = sign(key, &claims());
        assert_eq!(
            verify(b"another key, just as long as that", &token, 0),
            Err(TokenError::BadSignature)
        );
        // The same signature over claims naming another tenant.
        let (_, signature) = token.split_once('.').unwrap();
        let mut other = claims();
        other.ten = Some("globex".into());
        let forged = format!(
            "{}.{signature}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&other).unwrap())
        );
        assert_eq!(verify(key, &forged, 0), Err(TokenError::BadSignature));
        assert_eq!(verify(key, "no-dot", 0), Err(TokenError::Malformed));
        assert_eq!(verify(key, "a.!!!", 0), Err(TokenError::Malformed));
        assert_eq!(verify(key, "", 0), Err(TokenError::Malformed));
    }
}

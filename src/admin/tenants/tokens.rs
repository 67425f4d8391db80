//! `/v1/tenants/{tenant}/tokens`: issue, list and revoke a tenant's API
//! tokens. A token is shown once, when it is issued; Redis keeps its
//! SHA-256 digest, under which a request's token is looked up.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use utoipa::ToSchema;

use super::registry::{Issued, TokenRecord};
use super::{check_name, registry_error, Source};
use crate::admin::auth::Caller;
use crate::admin::extract::{ApiJson, ApiPath};
use crate::admin::problem::Problem;
use crate::admin::AdminState;

/// What every issued token starts with, so a request's token is looked up in
/// Redis only when it can be one, and a leaked token is easy to recognise
/// (secret scanners, logs).
pub const TOKEN_PREFIX: &str = "hrld_";

/// A fresh token: the prefix and 32 random bytes, base64url.
pub fn generate() -> String {
    format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()))
}

/// The hex SHA-256 digest a token is kept and looked up under.
pub fn digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// How often one replica writes down that a token was used.
const NOTE_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
/// The most tokens one replica remembers noting.
const MAX_NOTED: usize = 10_000;

/// When this replica last wrote down each issued token's use, so a busy
/// token costs one Redis write a minute, not one per request.
#[derive(Debug, Default)]
pub struct Uses(parking_lot::Mutex<std::collections::HashMap<String, std::time::Instant>>);

impl Uses {
    /// Whether a use of the token with `digest` at `now` should be written
    /// down (and remembers that it was).
    pub fn due(&self, digest: &str, now: std::time::Instant) -> bool {
        let mut noted = self.0.lock();
        if noted
            .get(digest)
            .is_some_and(|at| now.saturating_duration_since(*at) < NOTE_EVERY)
        {
            return false;
        }
        if noted.len() >= MAX_NOTED {
            noted.retain(|_, at| now.saturating_duration_since(*at) < NOTE_EVERY);
            if noted.len() >= MAX_NOTED {
                noted.clear();
            }
        }
        noted.insert(digest.to_owned(), now);
        true
    }
}

/// A token to issue.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueToken {
    /// Unique among the tenant's tokens: 1 to 64 letters, digits, `-`, `_`
    /// or `.`. Logs and system events name the caller `{tenant}/{name}`.
    #[schema(min_length = 1, max_length = 64, pattern = "^[A-Za-z0-9._-]+$")]
    pub name: String,
    /// When it stops working (RFC 3339); none: when it is revoked.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

/// A token just issued: the only time `token` is shown.
#[derive(Debug, Serialize, ToSchema)]
pub struct IssuedToken {
    pub tenant: String,
    pub name: String,
    /// The bearer token. Store it now: Herald keeps only its digest.
    pub token: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

/// A tenant's token, without the token.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    pub name: String,
    /// `config` (`admin.tokens`, read-only here) or `api`.
    pub source: Source,
    /// The token's last four characters; none for a configured one.
    pub last4: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub created_at: Option<OffsetDateTime>,
    pub created_by: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    /// When a request last came with it, to the minute; none for a
    /// configured one, or one not used since it was issued.
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_used_at: Option<OffsetDateTime>,
}

/// A tenant's tokens.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    pub data: Vec<TokenView>,
}

/// The source of a tenant's settings if tokens may be issued to it: it is
/// configured or was created through the API.
async fn existing(state: &AdminState, tenant: &str) -> Result<Source, Problem> {
    let source = state.tenant(Some(tenant)).await?.source;
    if source == Source::Default {
        return Err(Problem::not_found("tenant", tenant));
    }
    Ok(source)
}

/// Issues a token of the tenant (admin tokens only). It works on every
/// replica at once.
#[utoipa::path(
    post,
    path = "/v1/tenants/{tenant}/tokens",
    tag = "tenants",
    params(("tenant" = String, Path, description = "Tenant name")),
    request_body = IssueToken,
    responses(
        (status = 201, description = "The token, shown this once", body = IssuedToken),
        (status = 403, description = "Not an admin token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The tenant has a token of that name, or admin.max_tokens_per_tenant tokens", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn issue(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(tenant): ApiPath<String>,
    ApiJson(body): ApiJson<IssueToken>,
) -> Result<(StatusCode, Json<IssuedToken>), Problem> {
    caller.require_admin("issuing a tenant token")?;
    let source = existing(&state, &tenant).await?;
    check_name("name", &body.name)?;
    let now = OffsetDateTime::now_utc();
    if body.expires_at.is_some_and(|at| at <= now) {
        return Err(Problem::invalid("expires_at", "must be in the future"));
    }
    let admin = &state.config().admin;
    if admin
        .tokens
        .iter()
        .any(|t| t.name == body.name && t.tenant.as_deref() == Some(&tenant))
    {
        return Err(Problem::conflict(format!(
            "tenant `{tenant}` has a configured token `{}`; choose another name",
            body.name
        )));
    }
    let token = generate();
    let record = TokenRecord {
        tenant: tenant.clone(),
        name: body.name.clone(),
        last4: token[token.len() - 4..].to_owned(),
        created_at: now,
        created_by: caller.name.clone(),
        expires_at: body.expires_at,
    };
    let max = admin.max_tokens_per_tenant;
    match state
        .registry()
        .issue(&record, &digest(&token), source == Source::Api, max)
        .await
        .map_err(registry_error)?
    {
        Issued::Issued => {}
        Issued::NameTaken => {
            return Err(Problem::conflict(format!(
                "tenant `{tenant}` has a token `{}`; revoke it first or choose another name",
                body.name
            )))
        }
        Issued::TooMany => {
            return Err(Problem::conflict(format!(
                "tenant `{tenant}` has {max} tokens (admin.max_tokens_per_tenant); revoke one first"
            )))
        }
        Issued::NoTenant => return Err(Problem::not_found("tenant", &tenant)),
    }
    state
        .telemetry()
        .tenant_change("token_issued", &tenant, Some(&body.name), &caller.name);
    Ok((
        StatusCode::CREATED,
        Json(IssuedToken {
            tenant,
            name: record.name,
            token,
            created_at: now,
            expires_at: record.expires_at,
        }),
    ))
}

/// Lists the tenant's tokens, configured and issued, never the tokens
/// themselves (admin tokens only).
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}/tokens",
    tag = "tenants",
    params(("tenant" = String, Path, description = "Tenant name")),
    responses(
        (status = 200, description = "Its tokens", body = TokenList),
        (status = 403, description = "Not an admin token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(tenant): ApiPath<String>,
) -> Result<Json<TokenList>, Problem> {
    caller.require_admin("listing a tenant's tokens")?;
    existing(&state, &tenant).await?;
    let mut data: Vec<TokenView> = state
        .config()
        .admin
        .tokens
        .iter()
        .filter(|t| t.tenant.as_deref() == Some(&tenant))
        .map(|t| TokenView {
            name: t.name.clone(),
            source: Source::Config,
            last4: None,
            created_at: None,
            created_by: None,
            expires_at: None,
            last_used_at: None,
        })
        .collect();
    let issued = state.registry().tokens(&tenant).await.map_err(registry_error)?;
    data.extend(issued.into_iter().map(|(r, last_used_at)| TokenView {
        name: r.name,
        source: Source::Api,
        last4: Some(r.last4),
        created_at: Some(r.created_at),
        created_by: Some(r.created_by),
        expires_at: r.expires_at,
        last_used_at,
    }));
    Ok(Json(TokenList { data }))
}

/// Revokes a token issued through the API: every replica refuses it from
/// the next request on (admin tokens only).
#[utoipa::path(
    delete,
    path = "/v1/tenants/{tenant}/tokens/{name}",
    tag = "tenants",
    params(
        ("tenant" = String, Path, description = "Tenant name"),
        ("name" = String, Path, description = "Token name"),
    ),
    responses(
        (status = 204, description = "Revoked"),
        (status = 403, description = "Not an admin token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A configured token (admin.tokens): remove it there", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn revoke(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath((tenant, name)): ApiPath<(String, String)>,
) -> Result<StatusCode, Problem> {
    caller.require_admin("revoking a tenant token")?;
    if state
        .config()
        .admin
        .tokens
        .iter()
        .any(|t| t.name == name && t.tenant.as_deref() == Some(&tenant))
    {
        return Err(Problem::conflict(format!(
            "`{name}` is a configured token (admin.tokens); remove it there"
        )));
    }
    if !state.registry().revoke(&tenant, &name).await.map_err(registry_error)? {
        return Err(Problem::not_found("token", &name));
    }
    state
        .telemetry()
        .tenant_change("token_revoked", &tenant, Some(&name), &caller.name);
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_token_is_written_down_once_a_minute_and_memory_stays_bounded() {
        let uses = Uses::default();
        let start = std::time::Instant::now();
        assert!(uses.due("a", start));
        assert!(!uses.due("a", start + std::time::Duration::from_secs(59)));
        assert!(uses.due("b", start), "each token on its own");
        assert!(uses.due("a", start + NOTE_EVERY));
        for i in 0..MAX_NOTED * 2 {
            uses.due(&i.to_string(), start + NOTE_EVERY);
        }
        assert!(uses.0.lock().len() <= MAX_NOTED);
    }

    #[test]
    fn tokens_are_random_prefixed_and_kept_as_digests() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 43, "32 bytes, base64url without padding");
        assert!(a[TOKEN_PREFIX.len()..]
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(digest(&a).len(), 64);
        assert_ne!(digest(&a), digest(&b));
        assert!(!digest(&a).contains(&a[TOKEN_PREFIX.len()..]));
        assert!(
            crate::config::token_quality::check(&a).is_ok(),
            "as strong as a configured token must be"
        );
    }
}

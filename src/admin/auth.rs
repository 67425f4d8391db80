//! Bearer-token authentication.
//!
//! Tokens come from `admin.tokens`, or were issued to a tenant through the
//! API. Only the configured tokens' SHA-256 digests are kept in memory, and
//! a presented token is compared against every one of them without an early
//! exit, so response time says nothing about how close a guess was. Issued
//! tokens (prefix `hrld_`) are looked up in Redis by their digest on every
//! request, so a revocation holds at once on every replica; while Redis is
//! down they get 503, and configured tokens keep working.
//! A token bound to a tenant acts for that tenant only; another tenant's
//! objects answer 404, exactly as missing ones do.

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};

use crate::admin::problem::Problem;
use crate::admin::tenants::registry::RegistryError;
use crate::admin::tenants::tokens::{digest, TOKEN_PREFIX};
use crate::admin::AdminState;
use crate::config::admin::AdminToken;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's name (for logs and system events).
    pub name: String,
    /// `None`: every tenant.
    pub tenant: Option<String>,
    /// The token, if it was issued through the API: what the caller makes
    /// to outlive the request (a portal session) ends with it.
    pub issued: Option<IssuedToken>,
}

/// An issued token, as what it makes needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// Its SHA-256 digest (hex), the key it is kept under.
    pub digest: String,
    /// When it stops working, if it does.
    pub expires_at: Option<time::OffsetDateTime>,
}

impl Caller {
    /// 403 unless the caller holds an admin token; `what` names the
    /// operation it asked for.
    pub fn require_admin(&self, what: &str) -> Result<(), Problem> {
        if self.tenant.is_some() {
            return Err(Problem::new(
                axum::http::StatusCode::FORBIDDEN,
                "forbidden",
                "Forbidden",
                Some(format!("{what} needs an admin token")),
            ));
        }
        Ok(())
    }

    /// Whether the caller may see an object of `tenant`.
    pub fn can_access(&self, tenant: Option<&str>) -> bool {
        match &self.tenant {
            None => true,
            Some(own) => tenant == Some(own.as_str()),
        }
    }
}

/// The configured tokens, as digests.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    entries: Vec<([u8; 32], Caller)>,
}

impl Tokens {
    /// The configured tokens, kept as digests (a comparison takes the same time whatever it finds).
    pub fn new(tokens: &[AdminToken]) -> Tokens {
        Tokens {
            entries: tokens
                .iter()
                .map(|t| {
                    (
                        Sha256::digest(t.token.as_bytes()).into(),
                        Caller {
                            name: t.name.clone(),
                            tenant: t.tenant.clone(),
                            issued: None,
                        },
                    )
                })
                .collect(),
        }
    }

    /// The caller a presented token belongs to.
    pub fn authenticate(&self, presented: &str) -> Option<&Caller> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for (known, caller) in &self.entries {
            let diff = known.iter().zip(digest.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some(caller);
            }
        }
        found
    }
}

impl FromRequestParts<AdminState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Self, Self::Rejection> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            });
        if let Some(presented) = presented {
            if let Some(caller) = state.tokens().authenticate(presented) {
                return Ok(caller.clone());
            }
            if presented.starts_with(TOKEN_PREFIX) {
                let digest = digest(presented);
                match state.registry().token(&digest).await {
                    Ok(Some(record)) => {
                        state.note_token_use(&digest, &record.tenant, &record.name);
                        return Ok(Caller {
                            name: format!("{}/{}", record.tenant, record.name),
                            tenant: Some(record.tenant),
                            issued: Some(IssuedToken {
                                digest,
                                expires_at: record.expires_at,
                            }),
                        });
                    }
                    Ok(None) => {}
                    // Not a wrong token: say so, or a client would drop a good one.
                    Err(RegistryError::Redis(e)) => return Err(Problem::unavailable("token store", &e)),
                    Err(broken) => tracing::error!(error = %broken, "admin API: a token record cannot be read"),
                }
            }
        }
        state.telemetry().admin_unauthorized();
        Err(Problem::unauthorized())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(name: &str, token: &str, tenant: Option<&str>) -> AdminToken {
        AdminToken {
            name: name.into(),
            token: token.into(),
            tenant: tenant.map(Into::into),
        }
    }

    #[test]
    fn tokens_map_to_their_callers_and_nothing_else_does() {
        let tokens = Tokens::new(&[
            token("ops", "ops-8d3b5f0e2a9c71d4e6b0", None),
            token("acme", "acme-f41c7a92e0d6b3a58c1e", Some("acme")),
        ]);
        assert_eq!(tokens.authenticate("ops-8d3b5f0e2a9c71d4e6b0").unwrap().name, "ops");
        let acme = tokens.authenticate("acme-f41c7a92e0d6b3a58c1e").unwrap();
        assert_eq!(acme.tenant.as_deref(), Some("acme"));
        assert!(tokens.authenticate("acme-f41c7a92e0d6b3a58c1E").is_none());
        assert!(tokens.authenticate("").is_none());
    }

    #[test]
    fn a_tenant_caller_reaches_only_its_own_tenant() {
        let admin = Caller {
            name: "ops".into(),
            tenant: None,
            issued: None,
        };
        let acme = Caller {
            name: "acme".into(),
            tenant: Some("acme".into()),
            issued: None,
        };
        assert!(admin.can_access(None) && admin.can_access(Some("globex")));
        assert!(acme.can_access(Some("acme")));
        assert!(!acme.can_access(Some("globex")));
        assert!(!acme.can_access(None));
    }
}

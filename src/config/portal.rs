//! `[portal]`: the webhook portal's signing key, sessions, address and
//! framing.

use std::time::Duration;

use serde::Deserialize;

use super::token_quality::{self, GENERATE_TOKEN};
use super::{nonzero, positive, ConfigError};

/// The webhook portal: pages reached through signed, short-lived links.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortalConfig {
    /// Signs the links (HMAC-SHA256); empty turns the portal off.
    pub signing_key: String,
    /// How long a link works when its request does not say.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// The longest a link may work.
    #[serde(with = "humantime_serde")]
    pub max_session_ttl: Duration,
    /// Live sessions one tenant may hold at once (the operators' sessions
    /// count as one more tenant); a new one beyond is refused (429).
    pub max_sessions_per_tenant: usize,
    /// Where users reach the portal; links are paths when empty.
    pub public_url: String,
    /// CSP `frame-ancestors` sources, unless a tenant has its own.
    pub frame_ancestors: Vec<String>,
}

impl std::fmt::Debug for PortalConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortalConfig")
            .field("signing_key", &if self.signing_key.is_empty() { "" } else { "***" })
            .field("session_ttl", &self.session_ttl)
            .field("max_session_ttl", &self.max_session_ttl)
            .field("max_sessions_per_tenant", &self.max_sessions_per_tenant)
            .field("public_url", &self.public_url)
            .field("frame_ancestors", &self.frame_ancestors)
            .finish()
    }
}

impl PortalConfig {
    /// Whether the portal is on: a signing key is configured.
    pub fn enabled(&self) -> bool {
        !self.signing_key.is_empty()
    }
}

/// Shortest accepted portal signing key.
pub const MIN_PORTAL_KEY_LEN: usize = 32;

impl PortalConfig {
    /// Checks `[portal]`: a random signing key when the portal is on, the
    /// session lifetimes and quota, the public URL and the framing sources.
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        let p = self;
        if p.enabled() && p.signing_key.len() < MIN_PORTAL_KEY_LEN {
            return Err(ConfigError::invalid(
                "portal.signing_key",
                format!("must be at least {MIN_PORTAL_KEY_LEN} characters; {GENERATE_TOKEN}"),
            ));
        }
        // Anyone given a link holds a message signed with this key: a key
        // that was not drawn at random can be found offline from one.
        if let Some(weak) = p
            .enabled()
            .then(|| token_quality::check(&p.signing_key).err())
            .flatten()
        {
            return Err(ConfigError::invalid(
                "portal.signing_key",
                format!("{weak}, so it is not a random key; {GENERATE_TOKEN}"),
            ));
        }
        nonzero("portal.session_ttl", p.session_ttl)?;
        positive("portal.max_sessions_per_tenant", p.max_sessions_per_tenant)?;
        if p.max_session_ttl < p.session_ttl {
            return Err(ConfigError::invalid(
                "portal.max_session_ttl",
                "must be at least portal.session_ttl",
            ));
        }
        if !p.public_url.is_empty() {
            let url = url::Url::parse(&p.public_url)
                .map_err(|e| ConfigError::invalid("portal.public_url", format!("is not a URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(ConfigError::invalid("portal.public_url", "must be http or https"));
            }
        }
        check_frame_ancestors(&p.frame_ancestors).map_err(|m| ConfigError::invalid("portal.frame_ancestors", m))
    }
}

/// Whether `list` is a CSP `frame-ancestors` source list Herald can put in
/// a header as it is: at least one source, each one word without `;` or `,`.
pub fn check_frame_ancestors(list: &[String]) -> Result<(), String> {
    if list.is_empty() {
        return Err("must name at least one source (\"'none'\" for no one)".into());
    }
    if list.len() > MAX_FRAME_ANCESTORS {
        return Err(format!("must name at most {MAX_FRAME_ANCESTORS} sources"));
    }
    match list.iter().find(|s| {
        s.is_empty()
            || s.len() > 256
            || s.contains([';', ','])
            || s.chars().any(|c| c.is_whitespace() || c.is_control())
    }) {
        Some(bad) => Err(format!("`{bad}` is not one CSP source")),
        None => Ok(()),
    }
}

/// The most sources a `frame_ancestors` list may name.
pub const MAX_FRAME_ANCESTORS: usize = 32;

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn a_signing_key_not_drawn_at_random_is_refused() {
        for weak in ["a".repeat(32), "change-me-change-me-change-me-change-me".to_owned()] {
            let err = Config::from_toml_overlay(&format!("[portal]\nsigning_key = \"{weak}\""))
                .unwrap_err()
                .to_string();
            assert!(err.contains("portal.signing_key"), "{err}");
            assert!(err.contains("not a random key"), "{err}");
        }
    }
}

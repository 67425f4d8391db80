//! `[admin]`: the management API's listener, tokens, limits and tenants,
//! and the catalogs and connectors it offers (read from their files at
//! load).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::portal::check_frame_ancestors;
use super::token_quality::{self, GENERATE_TOKEN};
use super::{catalog, check_listener, connector, nonzero, positive, ConfigError};

/// Largest page a list endpoint of the management API returns
/// (`admin.default_page_size` may not exceed it).
pub const MAX_PAGE_SIZE: usize = 500;

/// Shortest accepted API token.
pub const MIN_TOKEN_LEN: usize = 24;

/// The management API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Connections held at once (API and portal).
    pub max_connections: usize,
    /// For a request's head, and for the next request on a kept-alive connection.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// For handling a request (its body included) until its response head.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Bearer tokens; none disables the API.
    #[serde(default)]
    pub tokens: Vec<AdminToken>,
    /// How long a rotated-out secret keeps signing.
    #[serde(with = "humantime_serde")]
    pub secret_rotation_overlap: Duration,
    pub max_body_bytes: usize,
    pub default_page_size: usize,
    /// Catalog for tenants not bound to one; empty allows any event type.
    #[serde(default)]
    pub default_catalog: String,
    /// Extra catalog files.
    #[serde(default)]
    pub catalog_files: Vec<std::path::PathBuf>,
    /// The built-in catalogs and `catalog_files`, read once when the
    /// configuration is loaded.
    #[serde(skip)]
    pub catalogs: Arc<catalog::Catalogs>,
    /// JSON files of connectors offered besides the built-in ones.
    #[serde(default)]
    pub connector_files: Vec<std::path::PathBuf>,
    /// The built-in connectors and `connector_files`, read with the catalogs.
    #[serde(skip)]
    pub connectors: Arc<connector::Connectors>,
    /// Per-tenant settings.
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantConfig>,
    /// Webhooks a tenant may create through the API (a tenant's own
    /// `max_webhooks` overrides it).
    pub max_webhooks_per_tenant: usize,
    /// Live tokens a tenant may hold through the API (`POST
    /// /v1/tenants/{tenant}/tokens`); tokens in `tokens` are not counted.
    pub max_tokens_per_tenant: usize,
    /// Replays running at once over every replica (one per webhook at most).
    pub max_replays: usize,
    /// Of those, at most this many for one tenant's webhooks.
    pub max_replays_per_tenant: usize,
    /// Dry runs (`"dry_run": true`) running at once over every replica,
    /// capped apart from replays so that counting never holds a replay's
    /// place.
    pub max_dry_runs: usize,
    /// Of those, at most this many for one tenant's webhooks.
    pub max_dry_runs_per_tenant: usize,
}

/// A bearer token of the management API.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    /// Shown in logs and system events instead of the token.
    pub name: String,
    pub token: String,
    /// Limits the token to this tenant's webhooks; none sees every tenant.
    #[serde(default)]
    pub tenant: Option<String>,
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminToken")
            .field("name", &self.name)
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

/// Settings of one tenant.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    /// The catalog its webhooks' event patterns must match; "" allows any.
    #[serde(default)]
    pub catalog: String,
    /// Its webhook quota, instead of `admin.max_webhooks_per_tenant`.
    #[serde(default)]
    pub max_webhooks: Option<usize>,
    /// Who may frame its portal pages, instead of `portal.frame_ancestors`.
    #[serde(default)]
    pub frame_ancestors: Option<Vec<String>>,
}

impl AdminConfig {
    /// Whether the management API is on: at least one token is configured.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Reads the built-in catalogs and `catalog_files`, then the built-in
    /// connectors and `connector_files` (checked against those catalogs).
    pub(super) fn read_files(&mut self) -> Result<(), ConfigError> {
        let catalogs = catalog::Catalogs::load(&self.catalog_files)
            .map_err(|e| ConfigError::invalid("admin.catalog_files", e.to_string()))?;
        let connectors = connector::Connectors::load(&self.connector_files, &catalogs)
            .map_err(|e| ConfigError::invalid("admin.connector_files", e.to_string()))?;
        self.catalogs = Arc::new(catalogs);
        self.connectors = Arc::new(connectors);
        Ok(())
    }

    /// Checks `[admin]`: the listener's limits, the quotas, the tokens
    /// (named once, long, random and unique), the page size, and that every
    /// catalog named (by default or by a tenant) is one of the catalogs read,
    /// and each tenant's framing sources.
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        let a = self;
        check_listener("admin", a.max_connections, a.header_read_timeout, a.request_timeout)?;
        positive("admin.max_replays", a.max_replays)?;
        positive("admin.max_webhooks_per_tenant", a.max_webhooks_per_tenant)?;
        for (tenant, t) in &a.tenants {
            if let Some(max) = t.max_webhooks {
                positive(&format!("admin.tenants.{tenant}.max_webhooks"), max)?;
            }
        }
        positive("admin.max_replays_per_tenant", a.max_replays_per_tenant)?;
        positive("admin.max_dry_runs", a.max_dry_runs)?;
        positive("admin.max_dry_runs_per_tenant", a.max_dry_runs_per_tenant)?;
        positive("admin.max_tokens_per_tenant", a.max_tokens_per_tenant)?;
        let mut names = std::collections::BTreeSet::new();
        let mut tokens = std::collections::BTreeSet::new();
        for (i, t) in a.tokens.iter().enumerate() {
            let key = format!("admin.tokens[{i}]");
            if t.name.trim().is_empty() || !names.insert(t.name.as_str()) {
                return Err(ConfigError::invalid(
                    format!("{key}.name"),
                    "must be non-empty and unique",
                ));
            }
            if t.token.len() < MIN_TOKEN_LEN || t.token.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(ConfigError::invalid(
                    format!("{key}.token"),
                    format!("must be at least {MIN_TOKEN_LEN} characters without white space; {GENERATE_TOKEN}"),
                ));
            }
            if let Err(weak) = token_quality::check(&t.token) {
                return Err(ConfigError::invalid(
                    format!("{key}.token"),
                    format!("{weak}, so it is not a random token; {GENERATE_TOKEN}"),
                ));
            }
            if !tokens.insert(t.token.as_str()) {
                return Err(ConfigError::invalid(format!("{key}.token"), "is used by another token"));
            }
            if t.tenant.as_deref().is_some_and(|t| t.trim().is_empty()) {
                return Err(ConfigError::invalid(format!("{key}.tenant"), "must not be empty"));
            }
        }
        nonzero("admin.secret_rotation_overlap", a.secret_rotation_overlap)?;
        positive("admin.max_body_bytes", a.max_body_bytes)?;
        if a.default_page_size == 0 || a.default_page_size > MAX_PAGE_SIZE {
            return Err(ConfigError::invalid(
                "admin.default_page_size",
                format!("must be 1 to {}", MAX_PAGE_SIZE),
            ));
        }
        if !a.default_catalog.is_empty() && a.catalogs.get(&a.default_catalog).is_none() {
            return Err(ConfigError::invalid(
                "admin.default_catalog",
                format!("no catalog named `{}`", a.default_catalog),
            ));
        }
        for (tenant, t) in &a.tenants {
            if !t.catalog.is_empty() && a.catalogs.get(&t.catalog).is_none() {
                return Err(ConfigError::invalid(
                    format!("admin.tenants.\"{tenant}\".catalog"),
                    format!("no catalog named `{}`", t.catalog),
                ));
            }
        }
        for (tenant, t) in &a.tenants {
            if let Some(list) = &t.frame_ancestors {
                check_frame_ancestors(list)
                    .map_err(|m| ConfigError::invalid(format!("admin.tenants.\"{tenant}\".frame_ancestors"), m))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    #[allow(clippy::result_large_err)]
    fn admin_tokens_come_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env(
                "HERALD_ADMIN__TOKENS",
                r#"[{name="ops", token="ops-5c0e9a3f71d2b846e0a7"}, {name="acme", token="acme-b29f61d07c4e8a35f1c6", tenant="acme"}]"#,
            );
            let config = Config::load(None).expect("loads");
            assert!(config.admin.enabled());
            assert_eq!(config.admin.tokens[1].tenant.as_deref(), Some("acme"));
            assert!(
                !format!("{:?}", config.admin.tokens).contains("5c0e9a3f"),
                "tokens are not in debug output"
            );
            Ok(())
        });
    }

    #[test]
    fn the_catalogs_are_read_with_the_configuration() {
        let config = Config::from_toml_overlay("").unwrap();
        let names: Vec<&str> = config.admin.catalogs.all().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["iam", "jam", "jimo"]);
    }

    #[test]
    fn admin_settings_are_checked() {
        let err = |overlay: &str| Config::from_toml_overlay(overlay).unwrap_err().to_string();
        assert!(err("[admin]\ntokens = [{ name = \"a\", token = \"short\" }]").contains("admin.tokens[0].token"));
        let dup = "[admin]\ntokens = [{ name = \"a\", token = \"9e4d1f7a0c3b6e2d58a1f4c7\" }, { name = \"a\", token = \"2b7f0e9c4a1d6f3e85c2a0b9\" }]";
        assert!(err(dup).contains("admin.tokens[1].name"));
        let same = "[admin]\ntokens = [{ name = \"a\", token = \"9e4d1f7a0c3b6e2d58a1f4c7\" }, { name = \"b\", token = \"9e4d1f7a0c3b6e2d58a1f4c7\" }]";
        assert!(err(same).contains("admin.tokens[1].token"));
        for placeholder in ["change-me-to-32-random-characters", "compose-admin-token-change-me"] {
            let e = err(&format!(
                "[admin]\ntokens = [{{ name = \"ops\", token = \"{placeholder}\" }}]"
            ));
            assert!(e.contains("`admin.tokens[0].token`"), "{e}");
            assert!(e.contains("placeholder"), "{e}");
            assert!(e.contains("openssl rand -hex 32"), "{e}");
            assert!(!e.contains(placeholder), "the token itself is not shown: {e}");
        }
        let e = err("[admin]\ntokens = [{ name = \"ops\", token = \"ops-token-0123456789abcdef\" }]");
        assert!(
            e.contains("consecutive characters") && e.contains("openssl rand -hex 32"),
            "{e}"
        );
        assert!(err("[admin]\ndefault_catalog = \"nope\"").contains("admin.default_catalog"));
        assert!(err("[admin.tenants]\nacme = { catalog = \"nope\" }").contains("admin.tenants.\"acme\".catalog"));
        assert!(err("[admin]\ndefault_page_size = 0").contains("admin.default_page_size"));
        assert!(Config::from_toml_overlay("[admin.tenants]\nacme = { catalog = \"jimo\" }").is_ok());
    }
}

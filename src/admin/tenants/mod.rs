//! Tenants and their tokens at run time.
//!
//! A tenant's settings (its catalog, webhook quota and who may frame its
//! portal pages) come from `admin.tenants` in the configuration, or from the
//! registry in Redis for tenants created through `PUT /v1/tenants/{name}`;
//! a tenant in neither takes the deployment's defaults. Configured tenants
//! win, and are read-only through the API. Tenant tokens are issued and
//! revoked through `/v1/tenants/{name}/tokens`; only their digests are kept.
//! Both are read from Redis on each request, so a change holds on every
//! replica at once and nothing needs a restart.

pub mod api;
pub mod registry;
pub mod tokens;

use std::sync::Arc;

use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;

use crate::admin::problem::Problem;
use crate::admin::AdminState;
use crate::config::admin::TenantConfig;
use crate::config::catalog::Catalog;
use crate::config::Config;
use registry::{RegistryError, TenantSettings};

/// The longest tenant or token name.
pub const MAX_NAME_LEN: usize = 64;

/// Where a tenant's settings come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// `admin.tenants` in the configuration (read-only through the API).
    Config,
    /// Created through the API, kept in Redis.
    Api,
    /// Neither: the deployment's defaults.
    Default,
}

/// A tenant's settings as they apply now.
#[derive(Debug, Clone)]
pub struct Effective {
    pub source: Source,
    /// What was set (the configured entry, or the stored one).
    pub settings: TenantSettings,
    /// The catalog its webhooks subscribe from; `None` allows any event type.
    pub catalog: Option<Arc<Catalog>>,
    pub max_webhooks: usize,
    pub frame_ancestors: Vec<String>,
    /// When a tenant made through the API was created: which incarnation of
    /// the name this is (a tenant deleted and created again is another).
    pub created_at: Option<time::OffsetDateTime>,
}

impl From<&TenantConfig> for TenantSettings {
    fn from(c: &TenantConfig) -> TenantSettings {
        TenantSettings {
            catalog: Some(c.catalog.clone()),
            max_webhooks: c.max_webhooks,
            frame_ancestors: c.frame_ancestors.clone(),
        }
    }
}

/// `settings` applied over the deployment's defaults. A catalog this
/// replica has not loaded (removed from `admin.catalog_files` after a
/// tenant was bound to it) is an error, never "any event type".
pub fn resolve(config: &Config, source: Source, settings: TenantSettings) -> Result<Effective, Problem> {
    let admin = &config.admin;
    let name = settings.catalog.as_deref().unwrap_or(&admin.default_catalog);
    let catalog = if name.is_empty() {
        None
    } else {
        Some(admin.catalogs.get(name).cloned().ok_or_else(|| {
            tracing::error!(
                catalog = name,
                "a tenant is bound to a catalog this replica has not loaded"
            );
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "catalog-missing",
                "Catalog missing",
                Some(format!(
                    "the tenant is bound to catalog `{name}`, which this deployment does not load; \
                     an operator must add it (admin.catalog_files) or bind the tenant to another"
                )),
            )
        })?)
    };
    Ok(Effective {
        source,
        catalog,
        max_webhooks: settings.max_webhooks.unwrap_or(admin.max_webhooks_per_tenant),
        frame_ancestors: settings
            .frame_ancestors
            .clone()
            .unwrap_or_else(|| config.portal.frame_ancestors.clone()),
        settings,
        created_at: None,
    })
}

/// Whether `name` may name a tenant or a token: 1 to 64 letters, digits,
/// `-`, `_` or `.`, so it reads the same in a path, a key and a log line.
pub fn check_name(field: &str, name: &str) -> Result<(), Problem> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !matches!(name, "." | "..");
    if ok {
        Ok(())
    } else {
        Err(Problem::invalid(
            field,
            format!("must be 1 to {MAX_NAME_LEN} letters, digits, `-`, `_` or `.`"),
        ))
    }
}

pub(crate) fn registry_error(e: RegistryError) -> Problem {
    match e {
        RegistryError::Contended(name) => Problem::conflict(format!(
            "tenant `{name}` kept changing while this change was made; try again"
        )),
        RegistryError::Redis(e) => Problem::unavailable("tenant registry", &e),
        RegistryError::Broken { what, error } => {
            tracing::error!(%what, %error, "tenant registry: a stored document cannot be read");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "broken-document",
                "Stored document unreadable",
                Some(format!(
                    "the {what} in Redis cannot be read; an operator must fix or replace it"
                )),
            )
        }
    }
}

impl AdminState {
    /// The settings of `tenant` as they apply now: configured, stored or the
    /// defaults (a webhook of no tenant takes the defaults). Redis is read
    /// only for a tenant that is not configured.
    pub(crate) async fn tenant(&self, tenant: Option<&str>) -> Result<Effective, Problem> {
        let config = self.config();
        let Some(name) = tenant else {
            return resolve(config, Source::Default, TenantSettings::default());
        };
        if let Some(c) = config.admin.tenants.get(name) {
            return resolve(config, Source::Config, c.into());
        }
        match self.registry().get(name).await.map_err(registry_error)? {
            Some(stored) => {
                let mut effective = resolve(config, Source::Api, stored.settings)?;
                effective.created_at = stored.created_at;
                Ok(effective)
            }
            None => resolve(config, Source::Default, TenantSettings::default()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_plain_words() {
        for good in ["acme", "acme-eu.2", "A_b", &"x".repeat(MAX_NAME_LEN)] {
            assert!(check_name("name", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            ".",
            "..",
            "a b",
            "a/b",
            "a:b",
            "é",
            "a\n",
            &"x".repeat(MAX_NAME_LEN + 1),
        ] {
            let problem = check_name("name", bad).unwrap_err();
            assert_eq!(problem.errors[0].field, "name", "{bad:?}");
        }
    }

    #[test]
    fn settings_follow_the_defaults_where_they_are_not_set() {
        let config = Config::from_toml_overlay(
            "[admin]\ndefault_catalog = \"jam\"\nmax_webhooks_per_tenant = 7\n[portal]\nframe_ancestors = [\"'self'\"]",
        )
        .unwrap();
        config.validate().unwrap();
        let defaults = resolve(&config, Source::Api, TenantSettings::default()).unwrap();
        assert_eq!(defaults.catalog.unwrap().name, "jam");
        assert_eq!(defaults.max_webhooks, 7);
        assert_eq!(defaults.frame_ancestors, ["'self'"]);

        let own = resolve(
            &config,
            Source::Api,
            TenantSettings {
                catalog: Some(String::new()),
                max_webhooks: Some(2),
                frame_ancestors: Some(vec!["https://app.example".into()]),
            },
        )
        .unwrap();
        assert!(
            own.catalog.is_none(),
            "\"\" allows any event type, whatever the default"
        );
        assert_eq!(own.max_webhooks, 2);
        assert_eq!(own.frame_ancestors, ["https://app.example"]);

        let gone = resolve(
            &config,
            Source::Api,
            TenantSettings {
                catalog: Some("removed".into()),
                ..TenantSettings::default()
            },
        )
        .unwrap_err();
        assert_eq!(gone.status, 503);
        assert!(gone.detail.unwrap().contains("`removed`"));
    }

    #[test]
    fn a_configured_tenant_reads_as_its_entry() {
        let entry = TenantConfig {
            catalog: String::new(),
            max_webhooks: Some(3),
            frame_ancestors: None,
        };
        let settings = TenantSettings::from(&entry);
        assert_eq!(
            settings.catalog.as_deref(),
            Some(""),
            "a configured tenant without a catalog allows any"
        );
        assert_eq!(settings.max_webhooks, Some(3));
    }
}

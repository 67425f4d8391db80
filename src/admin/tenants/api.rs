//! `/v1/tenants` and `/v1/tenants/{tenant}`: list, create or change, read
//! and delete tenants.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::{IntoParams, ToSchema};

use super::registry::{Changed, Deleted, StoredTenant, TenantSettings};
use super::{check_name, registry_error, resolve, Effective, Source};
use crate::admin::auth::Caller;
use crate::admin::extract::{present, ApiJson, ApiPath, ApiQuery};
use crate::admin::problem::Problem;
use crate::admin::AdminState;
use crate::config::portal::check_frame_ancestors;
use crate::config::Config;

/// A tenant: what was set, what applies, and how many webhooks it has.
#[derive(Debug, Serialize, ToSchema)]
pub struct Tenant {
    pub name: String,
    /// `config` (read-only here: `admin.tenants`) or `api`.
    pub source: Source,
    /// What was set; a field left out follows the deployment's default.
    pub settings: TenantSettings,
    /// The catalog its webhooks subscribe from now; none allows any event type.
    pub catalog: Option<String>,
    /// Its webhook quota now.
    pub max_webhooks: usize,
    /// Who may frame its portal pages now.
    pub frame_ancestors: Vec<String>,
    /// Its webhooks; none until a replica has indexed them by tenant.
    pub webhooks: Option<usize>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub created_at: Option<OffsetDateTime>,
    pub created_by: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub updated_at: Option<OffsetDateTime>,
    pub updated_by: Option<String>,
}

impl Tenant {
    fn new(name: &str, effective: Effective, stored: Option<&StoredTenant>, webhooks: Option<usize>) -> Tenant {
        Tenant {
            name: name.into(),
            source: effective.source,
            catalog: effective.catalog.map(|c| c.name.clone()),
            max_webhooks: effective.max_webhooks,
            frame_ancestors: effective.frame_ancestors,
            settings: effective.settings,
            webhooks,
            created_at: stored.and_then(|s| s.created_at),
            created_by: stored.and_then(|s| s.created_by.clone()),
            updated_at: stored.and_then(|s| s.updated_at),
            updated_by: stored.and_then(|s| s.updated_by.clone()),
        }
    }
}

/// Paging of the tenant list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TenantQuery {
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Page size (1 to 500; default `admin.default_page_size`).
    #[param(minimum = 1, maximum = 500)]
    pub limit: Option<usize>,
}

/// One page of tenants, in name order.
#[derive(Debug, Serialize, ToSchema)]
pub struct TenantPage {
    pub data: Vec<Tenant>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

fn configured(name: &str) -> Problem {
    Problem::conflict(format!(
        "tenant `{name}` is defined in the configuration (admin.tenants.{name}); change it there"
    ))
}

/// Checks settings sent for a tenant.
fn check_settings(config: &Config, settings: &TenantSettings) -> Result<(), Problem> {
    if let Some(catalog) = settings.catalog.as_deref() {
        if !catalog.is_empty() && config.admin.catalogs.get(catalog).is_none() {
            return Err(Problem::invalid(
                "catalog",
                format!("no catalog named `{catalog}` (GET /v1/catalogs lists them)"),
            ));
        }
    }
    if let Some(max) = settings.max_webhooks {
        if max == 0 || max > 1_000_000 {
            return Err(Problem::invalid("max_webhooks", "must be 1 to 1000000"));
        }
    }
    if let Some(list) = &settings.frame_ancestors {
        check_frame_ancestors(list).map_err(|m| Problem::invalid("frame_ancestors", m))?;
    }
    Ok(())
}

/// Lists the tenants: those configured and those created through the API,
/// in name order (admin tokens only).
#[utoipa::path(
    get,
    path = "/v1/tenants",
    tag = "tenants",
    params(TenantQuery),
    responses(
        (status = 200, description = "A page of tenants", body = TenantPage),
        (status = 403, description = "Not an admin token", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn list(
    State(state): State<AdminState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<TenantQuery>,
) -> Result<Json<TenantPage>, Problem> {
    caller.require_admin("listing tenants")?;
    let config = state.config();
    let limit = crate::admin::page_size(&state, query.limit)?;
    let after = query.cursor.as_deref();
    let (stored, more_stored) = state.registry().list(after, limit).await.map_err(registry_error)?;
    // The configured names after the cursor, merged with the stored ones (a
    // name in both is the configured tenant).
    let configured = config
        .admin
        .tenants
        .range::<str, _>((
            after.map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded),
            std::ops::Bound::Unbounded,
        ))
        .take(limit + 1);
    let mut merged: std::collections::BTreeMap<&str, Option<&StoredTenant>> = std::collections::BTreeMap::new();
    for (name, _) in configured {
        merged.insert(name.as_str(), None);
    }
    let last_stored = stored.last().map(|t| t.name.as_str());
    for tenant in &stored {
        merged.entry(tenant.name.as_str()).or_insert(Some(tenant));
    }
    // Beyond the last stored name read, more stored names may sort first.
    if more_stored {
        if let Some(last) = last_stored {
            merged.retain(|name, _| *name <= last);
        }
    }
    let more = merged.len() > limit || more_stored;
    let page: Vec<(&str, Option<&StoredTenant>)> = merged.into_iter().take(limit).collect();
    let names: Vec<&str> = page.iter().map(|(n, _)| *n).collect();
    let counts = state.registry().webhook_counts(&names).await.map_err(registry_error)?;
    let mut data = Vec::with_capacity(page.len());
    for (i, (name, stored)) in page.iter().enumerate() {
        let effective = match stored {
            None => resolve(config, Source::Config, (&config.admin.tenants[*name]).into()),
            Some(s) => resolve(config, Source::Api, s.settings.clone()),
        }?;
        let webhooks = counts.as_ref().map(|c| c[i]);
        data.push(Tenant::new(name, effective, *stored, webhooks));
    }
    let next_cursor = more.then(|| page.last().map(|(n, _)| (*n).to_owned())).flatten();
    Ok(Json(TenantPage { data, next_cursor }))
}

/// One tenant: an admin token reads any, a tenant token its own.
#[utoipa::path(
    get,
    path = "/v1/tenants/{tenant}",
    tag = "tenants",
    params(("tenant" = String, Path, description = "Tenant name")),
    responses((status = 200, description = "The tenant", body = Tenant))
)]
pub async fn get(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Tenant>, Problem> {
    if !caller.can_access(Some(&name)) {
        return Err(Problem::not_found("tenant", &name));
    }
    read(&state, &name)
        .await?
        .map(Json)
        .ok_or_else(|| Problem::not_found("tenant", &name))
}

async fn read(state: &AdminState, name: &str) -> Result<Option<Tenant>, Problem> {
    let config = state.config();
    let registry = state.registry();
    let (effective, stored) = if let Some(c) = config.admin.tenants.get(name) {
        (resolve(config, Source::Config, c.into())?, None)
    } else {
        match registry.get(name).await.map_err(registry_error)? {
            Some(s) => (resolve(config, Source::Api, s.settings.clone())?, Some(s)),
            None => return Ok(None),
        }
    };
    let webhooks = registry
        .webhook_counts(&[name])
        .await
        .map_err(registry_error)?
        .map(|c| c[0]);
    Ok(Some(Tenant::new(name, effective, stored.as_ref(), webhooks)))
}

/// Creates a tenant, or replaces its settings (admin tokens only). Each
/// replica applies the change from its next request on.
#[utoipa::path(
    put,
    path = "/v1/tenants/{tenant}",
    tag = "tenants",
    params(("tenant" = String, Path, description = "Tenant name: 1 to 64 letters, digits, `-`, `_` or `.`", pattern = "^[A-Za-z0-9._-]{1,64}$")),
    request_body = TenantSettings,
    responses(
        (status = 200, description = "Its settings were replaced", body = Tenant),
        (status = 201, description = "The tenant was created", body = Tenant),
        (status = 403, description = "Not an admin token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The tenant is defined in the configuration", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn put(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(settings): ApiJson<TenantSettings>,
) -> Result<(StatusCode, Json<Tenant>), Problem> {
    caller.require_admin("creating or changing a tenant")?;
    check_name("name", &name)?;
    let config = state.config();
    if config.admin.tenants.contains_key(&name) {
        return Err(configured(&name));
    }
    check_settings(config, &settings)?;
    let created = state
        .registry()
        .put(&name, &settings, &caller.name)
        .await
        .map_err(registry_error)?;
    let action = if created { "tenant_created" } else { "tenant_updated" };
    state.telemetry().tenant_change(action, &name, None, &caller.name);
    let tenant = read(&state, &name)
        .await?
        .ok_or_else(|| Problem::conflict(format!("tenant `{name}` was deleted meanwhile")))?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(tenant)))
}

/// Settings to change; a field left out stays as it is, `null` returns it
/// to the deployment's default.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantPatch {
    /// The catalog its webhooks subscribe from; "" allows any event type.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, max_length = 64)]
    pub catalog: Option<Option<String>>,
    /// Webhooks it may create.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<usize>, minimum = 1, maximum = 1000000)]
    pub max_webhooks: Option<Option<usize>>,
    /// Who may frame its portal pages.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<String>>, min_items = 1, max_items = 32)]
    pub frame_ancestors: Option<Option<Vec<String>>>,
}

impl TenantPatch {
    fn apply(&self, mut settings: TenantSettings) -> TenantSettings {
        if let Some(catalog) = &self.catalog {
            settings.catalog.clone_from(catalog);
        }
        if let Some(max) = self.max_webhooks {
            settings.max_webhooks = max;
        }
        if let Some(list) = &self.frame_ancestors {
            settings.frame_ancestors.clone_from(list);
        }
        settings
    }
}

/// Changes some of a tenant's settings (admin tokens only); concurrent
/// changes of different settings are all kept.
#[utoipa::path(
    patch,
    path = "/v1/tenants/{tenant}",
    tag = "tenants",
    params(("tenant" = String, Path, description = "Tenant name")),
    request_body = TenantPatch,
    responses(
        (status = 200, description = "The changed tenant", body = Tenant),
        (status = 403, description = "Not an admin token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The tenant is defined in the configuration", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn patch(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
    ApiJson(patch): ApiJson<TenantPatch>,
) -> Result<Json<Tenant>, Problem> {
    caller.require_admin("changing a tenant")?;
    let config = state.config();
    if config.admin.tenants.contains_key(&name) {
        return Err(configured(&name));
    }
    let changed = state
        .registry()
        .change(&name, &caller.name, |current| {
            let next = patch.apply(current);
            check_settings(config, &next).map(|()| next)
        })
        .await
        .map_err(registry_error)?;
    match changed {
        Changed::Changed => {}
        Changed::Missing => return Err(Problem::not_found("tenant", &name)),
        Changed::Refused(problem) => return Err(problem),
    }
    state
        .telemetry()
        .tenant_change("tenant_updated", &name, None, &caller.name);
    read(&state, &name)
        .await?
        .map(Json)
        .ok_or_else(|| Problem::not_found("tenant", &name))
}

/// Deletes a tenant created through the API and revokes its tokens (admin
/// tokens only). A tenant with webhooks is kept: delete them first.
#[utoipa::path(
    delete,
    path = "/v1/tenants/{tenant}",
    tag = "tenants",
    params(("tenant" = String, Path, description = "Tenant name")),
    responses(
        (status = 204, description = "Deleted; its tokens no longer work"),
        (status = 403, description = "Not an admin token", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "It has webhooks, or is defined in the configuration", body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn delete(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, Problem> {
    caller.require_admin("deleting a tenant")?;
    if state.config().admin.tenants.contains_key(&name) {
        return Err(configured(&name));
    }
    match state.registry().delete(&name).await.map_err(registry_error)? {
        Deleted::Deleted => {
            state
                .telemetry()
                .tenant_change("tenant_deleted", &name, None, &caller.name);
            Ok(StatusCode::NO_CONTENT)
        }
        Deleted::Missing => Err(Problem::not_found("tenant", &name)),
        Deleted::HasWebhooks(n) => Err(Problem::conflict(format!(
            "tenant `{name}` has {n} webhook(s); delete them first (GET /v1/webhooks?tenant={name})"
        ))),
    }
}

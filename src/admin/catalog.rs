//! The event catalogs' API: a tenant's catalog, or every catalog for an
//! operator. The catalogs themselves are configuration
//! ([`crate::config::catalog`]).

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::admin::auth::Caller;
use crate::admin::extract::ApiPath;
use crate::admin::problem::Problem;
use crate::admin::AdminState;
use crate::config::catalog::Catalog;
use crate::config::connector::Connector;

/// A catalog without its events.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CatalogSummary {
    pub name: String,
    pub title: String,
    pub description: String,
    pub envelope: String,
    pub event_count: usize,
}

/// The catalogs.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CatalogList {
    pub data: Vec<CatalogSummary>,
}

/// The catalogs `caller` may see: every one for an admin token, only its
/// tenant's own for a tenant token (which of the others exist is none of its
/// business, so they answer as missing ones do).
pub(crate) async fn visible(state: &AdminState, caller: &Caller) -> Result<Vec<Arc<Catalog>>, Problem> {
    Ok(match &caller.tenant {
        None => state.catalogs().all().cloned().collect(),
        Some(tenant) => state.tenant(Some(tenant)).await?.catalog.into_iter().collect(),
    })
}

/// Lists the event catalogs the token may see.
///
/// Every catalog for an admin token; the tenant's own (if it has one) for a
/// tenant token.
#[utoipa::path(
    get,
    path = "/v1/catalogs",
    tag = "catalogs",
    responses(
        (status = 200, description = "The catalogs the token may see", body = CatalogList),
    )
)]
pub async fn list_catalogs(State(state): State<AdminState>, caller: Caller) -> Result<Json<CatalogList>, Problem> {
    Ok(Json(CatalogList {
        data: visible(&state, &caller)
            .await?
            .into_iter()
            .map(|c| CatalogSummary {
                name: c.name.clone(),
                title: c.title.clone(),
                description: c.description.clone(),
                envelope: c.envelope.clone(),
                event_count: c.events.len(),
            })
            .collect(),
    }))
}

/// One catalog with every event type, its description and an example payload.
///
/// A tenant token reads only its tenant's catalog: any other answers 404, as
/// a missing one does.
#[utoipa::path(
    get,
    path = "/v1/catalogs/{name}",
    tag = "catalogs",
    params(("name" = String, Path, description = "Catalog name, e.g. `jimo`")),
    responses(
        (status = 200, description = "The catalog", body = Catalog),
    )
)]
pub async fn get_catalog(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Catalog>, Problem> {
    visible(&state, &caller)
        .await?
        .into_iter()
        .find(|c| c.name == name)
        .map(|c| Json(Catalog::clone(&c)))
        .ok_or_else(|| Problem::not_found("catalog", &name))
}

/// The connectors a caller is offered: every one for an admin token; for a
/// tenant, those of its catalog and those for every tenant.
pub(crate) async fn connectors_for(state: &AdminState, tenant: Option<&str>) -> Result<Vec<Arc<Connector>>, Problem> {
    let connectors = &state.config().admin.connectors;
    Ok(match tenant {
        None => connectors.offered(None).into_iter().cloned().collect(),
        Some(t) => {
            let catalog = state.tenant(Some(t)).await?.catalog;
            let name = catalog.as_ref().map_or("", |c| c.name.as_str());
            connectors.offered(Some(name)).into_iter().cloned().collect()
        }
    })
}

/// The connectors.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConnectorList {
    pub data: Vec<Connector>,
}

/// Lists the connectors the token is offered: presets for a webhook to a
/// known product (its events preselected, the headers it needs).
#[utoipa::path(
    get,
    path = "/v1/connectors",
    tag = "catalogs",
    responses(
        (status = 200, description = "The connectors the token is offered", body = ConnectorList),
    )
)]
pub async fn list_connectors(State(state): State<AdminState>, caller: Caller) -> Result<Json<ConnectorList>, Problem> {
    Ok(Json(ConnectorList {
        data: connectors_for(&state, caller.tenant.as_deref())
            .await?
            .into_iter()
            .map(|c| Connector::clone(&c))
            .collect(),
    }))
}

/// One connector; one a tenant token is not offered answers 404.
#[utoipa::path(
    get,
    path = "/v1/connectors/{name}",
    tag = "catalogs",
    params(("name" = String, Path, description = "Connector name, e.g. `intercom-fin`")),
    responses(
        (status = 200, description = "The connector", body = Connector),
    )
)]
pub async fn get_connector(
    State(state): State<AdminState>,
    caller: Caller,
    ApiPath(name): ApiPath<String>,
) -> Result<Json<Connector>, Problem> {
    connectors_for(&state, caller.tenant.as_deref())
        .await?
        .into_iter()
        .find(|c| c.name == name)
        .map(|c| Json(Connector::clone(&c)))
        .ok_or_else(|| Problem::not_found("connector", &name))
}

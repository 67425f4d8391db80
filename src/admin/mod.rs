//! The management API (`/v1`): what a product's webhook page, or a
//! customer's script, calls to manage webhooks.
//!
//! It talks to the subscription store (the same keys and change
//! announcements the pipeline follows), the delivery history, the replay
//! library and the system event producer. Two routes use the pipeline's
//! parts, so they behave as real deliveries: a test ping is sent by the
//! delivery client, and a manual retry reads the event with the envelope
//! rules and hands it to the failure sink as a retry record, which the
//! pipeline then delivers. Nothing here consumes. Every route is
//! described by `utoipa` annotations next to its handler, and the OpenAPI
//! document generated from them is served at `/v1/openapi.json` and
//! committed as `docs/openapi.json` (a test keeps the two equal).

pub mod auth;
pub mod catalog;
pub mod deliveries;
pub mod events;
pub mod extract;
pub mod jobs;
pub mod portal_sessions;
pub mod problem;
pub mod session_store;
pub mod tenants;
pub mod webhooks;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::config::catalog::Catalogs;
use crate::config::Config;
use crate::delivery::ssrf::AddressPolicy;
use crate::subscriptions::store::SubscriptionStore;
use crate::subscriptions::system::SystemEvents;
use crate::telemetry::Telemetry;
use auth::Tokens;
use problem::Problem;

use crate::config::admin::MAX_PAGE_SIZE;

/// A list's page size: `asked`, else `admin.default_page_size`; 400 unless
/// it is 1 to [`MAX_PAGE_SIZE`].
pub fn page_size(state: &AdminState, asked: Option<usize>) -> Result<usize, Problem> {
    let limit = asked.unwrap_or(state.config().admin.default_page_size);
    if limit == 0 || limit > MAX_PAGE_SIZE {
        return Err(Problem::bad_request(format!("`limit` must be 1 to {MAX_PAGE_SIZE}")));
    }
    Ok(limit)
}

/// Changes made through the API (`action` label; the first six are also
/// announced as the system event `webhook.<action>`; the last five are
/// changes to tenants and their tokens).
pub const ACTIONS: [&str; 14] = {
    const OTHERS: [&str; 8] = [
        "retried",
        "replayed",
        "retried_pending",
        "tenant_created",
        "tenant_updated",
        "tenant_deleted",
        "token_issued",
        "token_revoked",
    ];
    let announced = crate::config::system_events::ANNOUNCED_ACTIONS;
    let mut all = [""; 14];
    let mut i = 0;
    while i < all.len() {
        all[i] = if i < announced.len() {
            announced[i]
        } else {
            OTHERS[i - announced.len()]
        };
        i += 1;
    }
    all
};

/// What the handlers share.
#[derive(Clone)]
pub struct AdminState(Arc<Inner>);

struct Inner {
    config: Arc<Config>,
    store: SubscriptionStore,
    history: Option<crate::history::HistoryStore>,
    deliverer: Arc<crate::delivery::Deliverer>,
    envelopes: crate::routing::envelope::Envelopes,
    failures: crate::retry::sink::FailureSink,
    events: SystemEvents,
    catalogs: Arc<Catalogs>,
    tokens: Tokens,
    egress: crate::delivery::ssrf::Egress,
    producer: crate::kafka::SharedProducer,
    telemetry: Telemetry,
    jobs: jobs::Jobs,
    registry: tenants::registry::Registry,
    token_uses: tenants::tokens::Uses,
    webhook_ids: webhooks::crud::WebhookIds,
    redis: redis::aio::ConnectionManager,
}

/// What [`AdminState::new`] is built from: the parts the pipeline uses too
/// when the API runs beside it (`herald run`), so test pings share its HTTP
/// client and request slots and retries go through its failure sink.
pub struct AdminParts {
    pub store: SubscriptionStore,
    pub history: Option<crate::history::HistoryStore>,
    pub producer: crate::kafka::SharedProducer,
    /// For replay jobs' state.
    pub redis: redis::aio::ConnectionManager,
    pub telemetry: Telemetry,
    pub deliverer: Arc<crate::delivery::Deliverer>,
    pub envelopes: crate::routing::envelope::Envelopes,
    pub failures: crate::retry::sink::FailureSink,
    pub events: SystemEvents,
    /// Read when the configuration was loaded.
    pub catalogs: Arc<Catalogs>,
}

impl AdminState {
    /// The handlers' state, from the configuration and the parts it shares.
    pub fn new(config: Arc<Config>, parts: AdminParts) -> AdminState {
        let prefix = config.redis.prefix.clone();
        AdminState(Arc::new(Inner {
            tokens: Tokens::new(&config.admin.tokens),
            egress: crate::delivery::ssrf::Egress::new(&config.delivery),
            events: parts.events,
            producer: parts.producer,
            catalogs: parts.catalogs,
            store: parts.store,
            history: parts.history,
            deliverer: parts.deliverer,
            envelopes: parts.envelopes,
            failures: parts.failures,
            config,
            telemetry: parts.telemetry,
            jobs: jobs::Jobs::new(parts.redis.clone(), &prefix),
            registry: tenants::registry::Registry::new(parts.redis.clone(), &prefix),
            token_uses: tenants::tokens::Uses::default(),
            webhook_ids: webhooks::crud::WebhookIds::default(),
            redis: parts.redis,
        }))
    }

    /// The tokens requests authenticate with.
    pub fn tokens(&self) -> &Tokens {
        &self.0.tokens
    }

    /// Where requests and changes are reported.
    pub fn telemetry(&self) -> &Telemetry {
        &self.0.telemetry
    }

    pub(crate) fn config(&self) -> &Config {
        &self.0.config
    }

    pub(crate) fn store(&self) -> &SubscriptionStore {
        &self.0.store
    }

    pub(crate) fn history(&self) -> Option<&crate::history::HistoryStore> {
        self.0.history.as_ref()
    }

    pub(crate) fn deliverer(&self) -> &crate::delivery::Deliverer {
        &self.0.deliverer
    }

    pub(crate) fn envelopes(&self) -> &crate::routing::envelope::Envelopes {
        &self.0.envelopes
    }

    pub(crate) fn failures(&self) -> &crate::retry::sink::FailureSink {
        &self.0.failures
    }

    pub(crate) fn catalogs(&self) -> &Catalogs {
        &self.0.catalogs
    }

    /// The SSRF policy of `tenant`'s webhooks.
    pub(crate) fn policy(&self, tenant: Option<&str>) -> &AddressPolicy {
        self.0.egress.policy(tenant)
    }

    /// The producer shared by everything the API writes to Kafka.
    pub(crate) fn producer(&self) -> &crate::kafka::SharedProducer {
        &self.0.producer
    }

    /// A handle on the shared Redis connection.
    pub(crate) fn redis(&self) -> redis::aio::ConnectionManager {
        self.0.redis.clone()
    }

    pub(crate) fn jobs(&self) -> &jobs::Jobs {
        &self.0.jobs
    }

    /// Where generated webhook ids come from.
    pub(crate) fn webhook_ids(&self) -> &webhooks::crud::WebhookIds {
        &self.0.webhook_ids
    }

    /// Tenants and tenant tokens made through the API.
    pub(crate) fn registry(&self) -> &tenants::registry::Registry {
        &self.0.registry
    }

    /// Notes, at most once a minute per token and replica and without
    /// holding up the request, that an issued token was used.
    pub(crate) fn note_token_use(&self, digest: &str, tenant: &str, name: &str) {
        if !self.0.token_uses.due(digest, Instant::now()) {
            return;
        }
        let registry = self.0.registry.clone();
        let (tenant, name) = (tenant.to_owned(), name.to_owned());
        tokio::spawn(async move {
            if let Err(e) = registry.touch(&tenant, &name, time::OffsetDateTime::now_utc()).await {
                tracing::debug!(error = %e, tenant, token = name, "cannot note a token's use");
            }
        });
    }

    pub(crate) fn config_arc(&self) -> Arc<Config> {
        self.0.config.clone()
    }

    /// Publishes `webhook.<action>` without holding up the response
    /// (retried, bounded: [`SystemEvents`]).
    pub(crate) fn announce(&self, action: &'static str, webhook: &crate::webhook::Webhook, by: &str) {
        self.0.telemetry.admin_change(action, &webhook.id, by);
        let reason = format!("{action} through the management API by `{by}`");
        self.0.events.emit(action, webhook, &reason);
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald management API",
        description = "Webhooks, their signing secrets, event catalogs and replays. \
Authenticate with `Authorization: Bearer <token>`; a tenant token sees only its tenant. \
Errors are `application/problem+json` (RFC 9457).",
        license(name = "Apache-2.0", identifier = "Apache-2.0")
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(Problem)),
    tags(
        (name = "webhooks", description = "Create, change, pause and delete webhooks"),
        (name = "secrets", description = "Read and rotate signing secrets"),
        (name = "deliveries", description = "Delivery history, statistics, manual retry, replay and test pings"),
        (name = "catalogs", description = "The event types a webhook can subscribe to, and connectors: presets for known products"),
        (name = "replays", description = "Re-deliver what was kept while a webhook was paused or failing"),
        (name = "portal", description = "Short-lived links to the webhook portal's pages"),
        (name = "tenants", description = "Tenants, their settings and their API tokens")
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The error responses every operation shares, added to the document from
/// what each operation is (instead of repeated on every handler): 400 and
/// 401 everywhere, 404 where a path names an object, 413/415/422 where there
/// is a request body, 503 everywhere (an issued token is looked up in Redis,
/// and most operations read it).
fn add_common_errors(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::path::HttpMethod;
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    let problem = |description: &str| {
        ResponseBuilder::new()
            .description(description)
            .content(
                "application/problem+json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("Problem")))
                    .build(),
            )
            .build()
    };
    for (path, item) in doc.paths.paths.iter_mut() {
        let names_object = path.contains('{');
        for method in [
            HttpMethod::Get,
            HttpMethod::Post,
            HttpMethod::Put,
            HttpMethod::Patch,
            HttpMethod::Delete,
        ] {
            let operation = match method {
                HttpMethod::Get => item.get.as_mut(),
                HttpMethod::Post => item.post.as_mut(),
                HttpMethod::Put => item.put.as_mut(),
                HttpMethod::Patch => item.patch.as_mut(),
                _ => item.delete.as_mut(),
            };
            let Some(operation) = operation else { continue };
            let has_body = operation.request_body.is_some();
            let responses = &mut operation.responses.responses;
            let mut add = |status: &str, description: &str| {
                responses
                    .entry(status.to_owned())
                    .or_insert_with(|| problem(description).into());
            };
            add("400", "Malformed JSON, or an invalid query or path value");
            add("401", "Missing or unknown bearer token");
            if names_object {
                add("404", "No such object (or another tenant's)");
            }
            if has_body {
                add("413", "Body larger than admin.max_body_bytes");
                add("415", "Body not sent as application/json");
                add("422", "A field is invalid; `errors` names it");
            }
            add("503", "Redis is unavailable");
        }
    }
}

fn api() -> OpenApiRouter<AdminState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(webhooks::crud::create, webhooks::crud::list))
        .routes(routes!(
            webhooks::crud::get,
            webhooks::crud::update,
            webhooks::crud::delete
        ))
        .routes(routes!(webhooks::status::pause))
        .routes(routes!(webhooks::status::resume))
        .routes(routes!(webhooks::secrets::get_secret, webhooks::secrets::rotate_secret))
        .routes(routes!(deliveries::list))
        .routes(routes!(events::list))
        .routes(routes!(events::get))
        .routes(routes!(deliveries::get))
        .routes(routes!(deliveries::retry))
        .routes(routes!(deliveries::replay))
        .routes(routes!(deliveries::retry_pending))
        .routes(routes!(deliveries::webhook_stats))
        .routes(routes!(deliveries::tenant_stats))
        .routes(routes!(deliveries::test))
        .routes(routes!(jobs::get_replay))
        .routes(routes!(catalog::list_catalogs))
        .routes(routes!(catalog::get_catalog))
        .routes(routes!(catalog::list_connectors))
        .routes(routes!(catalog::get_connector))
        .routes(routes!(portal_sessions::create))
        .routes(routes!(portal_sessions::create_for_operators))
        .routes(routes!(portal_sessions::revoke))
        .routes(routes!(tenants::api::list))
        .routes(routes!(
            tenants::api::get,
            tenants::api::put,
            tenants::api::patch,
            tenants::api::delete
        ))
        .routes(routes!(tenants::tokens::issue, tenants::tokens::list))
        .routes(routes!(tenants::tokens::revoke))
}

/// The OpenAPI document of the API.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = api().split_for_parts().1;
    add_common_errors(&mut doc);
    doc
}

/// The API's router.
pub fn router(state: AdminState) -> Router {
    let (routes, mut doc) = api().split_for_parts();
    add_common_errors(&mut doc);
    let doc = Arc::new(doc.to_pretty_json().expect("the OpenAPI document serialises"));
    let limit = state.config().admin.max_body_bytes;
    routes
        .route("/v1/healthz", axum::routing::get(|| async { "ok\n" }))
        .route(
            "/v1/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        doc.as_str().to_owned(),
                    )
                }
            }),
        )
        .fallback(|| async { Problem::route_not_found() })
        .method_not_allowed_fallback(|| async { Problem::method_not_allowed() })
        .layer(axum::extract::DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Counts and times every request by its route template.
pub(crate) async fn observe(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method()).to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await.into_response();
    state
        .telemetry()
        .admin_request(&method, &route, response.status().as_u16(), started.elapsed());
    response
}

/// The `method` label: the methods the API serves, or `other`, so that a
/// caller cannot create series with methods of its own.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Serves the API, and `beside` it (the portal's pages), until `shutdown`
/// is cancelled.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    beside: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let (limits, metrics) = (
        crate::serve::Limits::of_admin(&state.config().admin),
        state.0.telemetry.metrics.clone(),
    );
    let app = router(state.clone()).merge(beside);
    // System events announced by the last requests are published by their
    // owner's shutdown (SystemEvents::close).
    crate::serve::serve(listener, app, limits, "admin", metrics, shutdown).await
}

#[cfg(test)]
mod tests {
    #[test]
    fn methods_of_a_callers_own_are_one_label() {
        use axum::http::Method;
        assert_eq!(super::method_label(&Method::GET), "GET");
        assert_eq!(super::method_label(&Method::PATCH), "PATCH");
        let probe = Method::from_bytes(b"ZZPROBE1").unwrap();
        assert_eq!(super::method_label(&probe), "other");
    }

    #[test]
    fn the_committed_openapi_document_is_the_generated_one() {
        let generated = super::openapi().to_pretty_json().unwrap() + "\n";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
        if std::env::var_os("HERALD_WRITE_OPENAPI").is_some() {
            std::fs::write(path, &generated).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == generated,
            "docs/openapi.json is stale: run `HERALD_WRITE_OPENAPI=1 cargo test --lib openapi` (or `herald openapi > docs/openapi.json`)"
        );
    }
}

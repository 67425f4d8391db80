//! The webhook portal: the pages a product shows its customers to manage
//! their webhooks, served under `/portal` next to the management API.
//!
//! A page is reached through a link from `POST
//! /v1/tenants/{tenant}/portal-sessions`: `/portal/s/{token}/...`, the token
//! signed by `portal.signing_key` ([`crate::admin::portal_sessions`]). The
//! token is in the path, not a cookie, so the pages work in a third-party
//! iframe; every page is sent with `Referrer-Policy: no-referrer` so it
//! never leaves through a link. Pages call the management API's own
//! handlers as the session's tenant, so they check, store and announce
//! exactly what the API does. Every change is a form POST carrying a token
//! derived from the session (CSRF), then a redirect to a page that says
//! what happened.

mod deliveries;
pub mod events;
mod session;
mod views;
mod webhooks;

use session::Form;
pub use session::Session;

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, RawPathParams, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use redis::AsyncCommands;
use sha2::Sha256;

use crate::admin::auth::Caller;
use crate::admin::extract::{ApiPath, ApiQuery, OptionalJson};
use crate::admin::portal_sessions::{self, Capability, Claims};
use crate::admin::problem::Problem;
use crate::admin::webhooks::crud::{self, ListQuery};
use crate::admin::webhooks::secrets::RotateSecret;
use crate::admin::webhooks::status::ResumeWebhook;
use crate::admin::webhooks::{secrets, status, CreateWebhook, UpdateWebhook, WebhookView};
use crate::admin::AdminState;

/// The stylesheet, served from the binary.
const CSS: &str = include_str!("portal.css");

/// Largest form accepted (a webhook with every event type of a catalog).
const MAX_FORM_BYTES: usize = 256 * 1024;

/// The portal's routes, to serve beside the management API's.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/portal/assets/portal.css", get(css))
        .route("/portal/{*rest}", axum::routing::any(no_such_page))
        .route("/portal/s/{token}", get(to_list))
        .route("/portal/s/{token}/", get(webhooks::list))
        .route("/portal/s/{token}/webhooks/new", get(webhooks::new_form))
        .route("/portal/s/{token}/webhooks", post(webhooks::create))
        .route("/portal/s/{token}/webhooks/{id}", get(webhooks::detail))
        .route(
            "/portal/s/{token}/webhooks/{id}/edit",
            get(webhooks::edit_form).post(webhooks::update),
        )
        .route("/portal/s/{token}/webhooks/{id}/pause", post(webhooks::pause))
        .route("/portal/s/{token}/webhooks/{id}/resume", post(webhooks::resume))
        .route(
            "/portal/s/{token}/webhooks/{id}/delete",
            get(webhooks::confirm_delete).post(webhooks::delete),
        )
        .route("/portal/s/{token}/webhooks/{id}/secret", get(webhooks::secret))
        .route("/portal/s/{token}/webhooks/{id}/secret/rotate", post(webhooks::rotate))
        .route(
            "/portal/s/{token}/webhooks/{id}/deliveries",
            get(deliveries::deliveries),
        )
        .route("/portal/s/{token}/webhooks/{id}/events", get(events::events))
        .route(
            "/portal/s/{token}/webhooks/{id}/deliveries/{attempt}",
            get(deliveries::attempt),
        )
        .route(
            "/portal/s/{token}/webhooks/{id}/deliveries/{attempt}/retry",
            post(deliveries::retry),
        )
        .route(
            "/portal/s/{token}/webhooks/{id}/replay",
            get(deliveries::replay_form).post(deliveries::replay),
        )
        .route(
            "/portal/s/{token}/webhooks/{id}/retry-pending",
            post(deliveries::retry_pending),
        )
        .route(
            "/portal/s/{token}/webhooks/{id}/replays/{job}",
            get(deliveries::replay_job),
        )
        .route(
            "/portal/s/{token}/webhooks/{id}/test",
            get(deliveries::test_form).post(deliveries::test),
        )
        .layer(axum::extract::DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            crate::admin::observe,
        ))
        .with_state(state)
}

/// Why a page cannot be shown, as a page.
#[derive(Debug)]
pub struct PageError {
    status: StatusCode,
    title: &'static str,
    detail: String,
    session: Option<Box<Session>>,
}

impl PageError {
    fn new(status: StatusCode, title: &'static str, detail: impl Into<String>) -> PageError {
        PageError {
            status,
            title,
            detail: detail.into(),
            session: None,
        }
    }

    fn with(mut self, session: &Session) -> PageError {
        self.session = Some(Box::new(session.clone()));
        self
    }

    fn not_found(session: &Session) -> PageError {
        PageError::new(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such webhook here. It may have been deleted; go back to the list.",
        )
        .with(session)
    }

    fn read_only(session: &Session) -> PageError {
        PageError::new(
            StatusCode::FORBIDDEN,
            "Read only",
            "This link lets you look, not change anything. Ask for a link that can manage webhooks.",
        )
        .with(session)
    }
}

impl From<(Problem, &Session)> for PageError {
    fn from((problem, session): (Problem, &Session)) -> PageError {
        let status = StatusCode::from_u16(problem.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if problem.kind.ends_with("/history-disabled") {
            return PageError::new(
                StatusCode::NOT_FOUND,
                "No delivery history",
                "This service does not keep a history of deliveries.",
            )
            .with(session);
        }
        if status == StatusCode::NOT_FOUND {
            return PageError::not_found(session);
        }
        let detail = match status {
            StatusCode::SERVICE_UNAVAILABLE => "Webhooks cannot be read right now. Try again in a minute.".to_owned(),
            _ => problem.detail.unwrap_or(problem.title),
        };
        PageError::new(status, "Something went wrong", detail).with(session)
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let session = self.session.as_deref();
        html(self.status, session, views::error(session, self.title, &self.detail))
    }
}

/// A page with the portal's headers: a strict CSP (no script at all; styles
/// only from the portal), framing as the tenant allows, no referrer, no cache.
fn html(status: StatusCode, session: Option<&Session>, markup: maud::Markup) -> Response {
    let frame_ancestors = session.map_or("'none'", |s| s.frame_ancestors.as_str());
    let mut response = (status, markup).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, csp(frame_ancestors));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The portal's Content-Security-Policy, framing allowed to
/// `frame_ancestors`. A setting that cannot be written into the header
/// (a stored value no check let through) closes framing rather than
/// dropping the policy.
fn csp(frame_ancestors: &str) -> HeaderValue {
    let policy = |ancestors: &str| {
        format!(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; base-uri 'none'; \
             frame-ancestors {ancestors}"
        )
    };
    HeaderValue::from_str(&policy(frame_ancestors)).unwrap_or_else(|_| {
        tracing::warn!(
            frame_ancestors,
            "portal: a frame_ancestors setting does not fit in a header; framing refused"
        );
        HeaderValue::from_str(&policy("'none'")).expect("the strict policy is a valid header")
    })
}

/// What a page says happened (`?done=...` after a change).
#[derive(serde::Deserialize)]
struct Done {
    done: Option<String>,
}

fn done_message(done: Option<&str>) -> Option<&'static str> {
    Some(match done? {
        "created" => "Webhook created. Events are sent to it from now on.",
        "updated" => "Changes saved.",
        "paused" => "Webhook paused. Its events are kept for when you resume it.",
        "resumed" => "Webhook resumed.",
        "replaying" => "Webhook resumed. What was kept while it was paused is being delivered again.",
        "deleted" => "Webhook deleted.",
        "rotated" => "New secret made. The previous one keeps signing for a while; see below.",
        "retried" => "The delivery is being sent again. Its new attempt appears here in a moment.",
        _ => return None,
    })
}

fn see_other(to: String) -> Response {
    Redirect::to(&to).into_response()
}

async fn css() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        CSS,
    )
}

/// Any other path under `/portal`: a page, not the API's JSON problem.
async fn no_such_page() -> PageError {
    PageError::new(
        StatusCode::NOT_FOUND,
        "Not found",
        "There is no such page. Open the webhooks page again from the product that sent you here.",
    )
}

async fn to_list(session: Session) -> Response {
    see_other(session.path(""))
}

#[cfg(test)]
mod tests {
    use super::session::csrf_of;
    use super::*;

    #[test]
    fn a_framing_setting_that_breaks_the_header_closes_framing_and_keeps_the_policy() {
        let good = csp("https://app.acme.example");
        assert!(good
            .to_str()
            .unwrap()
            .ends_with("frame-ancestors https://app.acme.example"));
        let page = html(
            StatusCode::OK,
            Some(&Session {
                frame_ancestors: "https://a.example\r\nSet-Cookie: x=1".into(),
                ..session(Capability::ReadOnly)
            }),
            page_body(),
        );
        let policy = page.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(policy.starts_with("default-src 'none'"), "{policy}");
        assert!(policy.ends_with("frame-ancestors 'none'"), "{policy}");
    }

    fn page_body() -> maud::Markup {
        maud::html! { p { "page" } }
    }

    fn session(cap: Capability) -> Session {
        Session {
            claims: Claims {
                sid: "ps_1".into(),
                ten: Some("acme".into()),
                cap,
                wh: None,
                exp: i64::MAX,
                by: "acme-portal".into(),
                inc: None,
            },
            base: "/portal/s/t".into(),
            csrf: csrf_of(b"k", "ps_1"),
            frame_ancestors: "'self'".into(),
        }
    }

    /// A field of [`Webhook`](crate::webhook::Webhook) is written in several
    /// places: the document (serde), the packed index entry and the reader
    /// that packs a document in place, the API's view and its OpenAPI
    /// schema, docs/subscriptions.md, the CLI's table and this portal's
    /// page. Each either carries the field or leaves it out on purpose,
    /// named here; a new field does not compile until it is named below.
    #[test]
    fn every_field_of_a_webhook_is_in_each_of_its_mirrors_or_left_out_on_purpose() {
        use crate::subscriptions::packed::{Document, Packed};
        use crate::webhook::{ExpiringSecret, Limits, StatusBy, Webhook, WebhookStatus};
        use time::macros::datetime;

        let mut w = crate::webhook::tests::webhook("wh_1", "https://hooks.example.com/in", &["tour.*"]);
        w.tenant = Some("acme".into());
        w.uid = Some("crm-hook".into());
        w.status = WebhookStatus::Paused;
        w.status_reason = Some("receiver maintenance".into());
        w.status_changed_at = Some(datetime!(2026-03-04 05:06:07 UTC));
        w.status_by = Some(StatusBy::Tenant);
        w.retried_pending = vec![datetime!(2026-03-05 00:00 UTC)];
        w.previous_secrets = vec![ExpiringSecret {
            secret: w.secrets[0].clone(),
            expires_at: datetime!(2026-03-06 00:00 UTC),
        }];
        w.headers.insert("x-api-key".into(), "k_live_1".into());
        w.limits = Limits {
            max_in_flight: Some(2),
            timeout_ms: Some(900),
            final_statuses: Some(vec![422]),
            rate: Some(crate::webhook::RateLimit {
                per_second: 0.5,
                burst: Some(3),
            }),
        };
        w.filter = Some(
            crate::routing::filter::Filter::parse_named(
                r#"{"/data/plan": {"in": ["pro", "team"]}, "/amount": {">": 100}}"#,
            )
            .unwrap(),
        );
        w.tls_client = Some(crate::webhook::tests::tls_client("acme client"));
        w.ordering = Some(crate::routing::ordering::Ordering::parse(r#"{"key":"/data/customer"}"#).unwrap());
        w.created_at = datetime!(2026-01-02 03:04:05 UTC);
        // No `..`: a field added to `Webhook` stops this from compiling
        // until it is set above and placed in the lists below.
        let Webhook {
            id: _,
            tenant: _,
            uid: _,
            name: _,
            url: _,
            events: _,
            status: _,
            status_reason: _,
            status_changed_at: _,
            status_by: _,
            retried_pending: _,
            secrets: _,
            previous_secrets: _,
            headers: _,
            created_at: _,
            updated_at: _,
            limits: _,
            filter: _,
            tls_client: _,
            ordering: _,
        } = &w;
        let json = serde_json::to_value(&w).unwrap();
        let fields: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            fields.len(),
            20,
            "every field is set, so the document shows it: {fields:?}"
        );

        // The packed entry, from the webhook and from its document read in place.
        assert_eq!(Packed::pack(&w).unpack().unwrap(), w);
        let bytes = serde_json::to_vec(&w).unwrap();
        assert_eq!(Document::parse(&bytes).unwrap().pack().unpack().unwrap(), w);

        // What each mirror leaves out, and why.
        let secrets = ["secrets", "previous_secrets"]; // shown only by the secrets endpoints
        let not_in_view = [&secrets[..], &["retried_pending"]].concat(); // Herald's bookkeeping
        let not_in_cli = not_in_view.clone();
        let not_in_portal = [
            &not_in_view[..],
            // The portal shows what a receiver's owner acts on: status and
            // its reason (status_by decides the resume form), the endpoint,
            // events, header names, the filter, the rate limit (of the
            // limits, the one a receiver's owner sets), the ordering and
            // when it was created.
            &["uid", "status_changed_at", "status_by", "updated_at"],
            // A client certificate comes with its private key, which is not
            // pasted into a browser's form: it is set through the API or
            // the CLI (from files), and shown by them.
            &["tls_client"],
        ]
        .concat();

        let view = WebhookView::from(&w);
        let shown = serde_json::to_value(&view).unwrap();
        let openapi: serde_json::Value =
            serde_json::from_str(include_str!("../../docs/openapi.json")).expect("docs/openapi.json");
        let schema = &openapi["components"]["schemas"]["WebhookView"]["properties"];
        let subscriptions = include_str!("../../docs/subscriptions.md");
        let table = crate::cli::tables::webhook_table(&shown);
        let mut operator = session(Capability::Manage);
        operator.claims.ten = None;
        let page = views::detail(&operator, &view, None, None, None).into_string();
        // The client key is in no mirror but the document; its certificate
        // is in the view and the table.
        let tls = w.tls_client.as_ref().unwrap();
        let key_line = tls.key.lines().nth(1).unwrap();
        for (mirror, text) in [
            ("view", shown.to_string()),
            ("table", table.clone()),
            ("page", page.clone()),
        ] {
            assert!(!text.contains(key_line), "the {mirror} holds the client key");
        }
        let fingerprint = crate::webhook::certificate_fingerprint(&tls.certificate).unwrap();
        assert_eq!(shown["tls_client"]["sha256"], fingerprint.as_str());
        assert!(table.contains(&fingerprint), "{table}");
        let on_page = |field: &str| match field {
            "id" => page.contains("wh_1"),
            "tenant" => page.contains("acme"),
            "name" => page.contains(&w.name),
            "url" => page.contains("https://hooks.example.com/in"),
            "events" => page.contains("tour.*"),
            "status" => page.contains("status paused"),
            "status_reason" => page.contains("receiver maintenance"),
            "headers" => page.contains("x-api-key"),
            "created_at" => page.contains("2026-01-02 03:04 UTC"),
            "filter" => page.contains("/data/plan") && page.contains("Payload filter"),
            "limits" => page.contains("At most 0.5 requests a second, 3 at once"),
            "ordering" => page.contains("Delivery order") && page.contains("<code>/data/customer</code>"),
            other => panic!("the portal's page is not known to show `{other}`"),
        };
        for field in fields {
            let doc_row = subscriptions.contains(&format!("| `{field}`"))
                || subscriptions.contains(&format!("`, `{field}` |"))
                || subscriptions.contains(&format!("| `{field}."));
            assert!(doc_row, "docs/subscriptions.md has a row for `{field}`");
            let in_view = !not_in_view.contains(&field);
            assert_eq!(shown.get(field).is_some(), in_view, "the API view and `{field}`");
            assert_eq!(schema.get(field).is_some(), in_view, "the OpenAPI schema and `{field}`");
            let row = table
                .lines()
                .any(|l| l.trim_start_matches(['│', ' ']).split_whitespace().next() == Some(field));
            assert_eq!(
                row,
                !not_in_cli.contains(&field),
                "the CLI's table and `{field}`:\n{table}"
            );
            if !not_in_portal.contains(&field) {
                assert!(on_page(field), "the portal's page shows `{field}`");
            }
        }
    }

    #[test]
    fn a_form_needs_the_sessions_csrf_token() {
        let s = session(Capability::Manage);
        let good = format!("csrf={}&name=a", s.csrf);
        assert!(Form::checked(&Bytes::from(good), &s).is_ok());
        assert!(Form::checked(&Bytes::from("name=a"), &s).is_err());
        let other = format!("csrf={}&name=a", csrf_of(b"k", "ps_2"));
        assert!(
            Form::checked(&Bytes::from(other), &s).is_err(),
            "another session's token"
        );
    }

    #[test]
    fn the_form_orders_by_nothing_the_record_key_or_a_pointer_and_a_refusal_names_ordering() {
        use crate::routing::ordering::Ordering;
        let chosen = |ordering: &str, pointer: &str| {
            webhooks::ordering_of(&views::FormValues {
                ordering: ordering.into(),
                ordering_pointer: pointer.into(),
                ..Default::default()
            })
        };
        assert_eq!(chosen("", "").unwrap(), None);
        assert_eq!(chosen("key", "").unwrap(), Some(Ordering::RecordKey));
        assert_eq!(
            chosen("pointer", "/data/customer").unwrap(),
            Some(Ordering::parse(r#"{"key":"/data/customer"}"#).unwrap())
        );
        // The pointer is read only when ordering by a value in the body.
        assert_eq!(chosen("", "/data/customer").unwrap(), None);
        assert_eq!(chosen("key", "/data/customer").unwrap(), Some(Ordering::RecordKey));
        for (ordering, pointer, expected) in [
            ("pointer", "", "give the JSON pointer"),
            ("pointer", "data/customer", "is not a JSON pointer"),
            ("pointer", "/a~2", "`~` must be followed"),
            ("keys", "", "not a choice"),
        ] {
            let refused = chosen(ordering, pointer).unwrap_err();
            assert_eq!((refused.status, refused.errors[0].field.as_str()), (422, "ordering"));
            assert!(refused.errors[0].message.contains(expected), "{refused:?}");
        }

        // The form shows the choice, and a refusal next to the field.
        let s = session(Capability::Manage);
        let values = views::FormValues {
            ordering: "pointer".into(),
            ordering_pointer: "data/customer".into(),
            ..Default::default()
        };
        let refused = chosen("pointer", "data/customer").unwrap_err();
        let page = views::webhook_form(&s, None, &values, Some(&refused), None, &[]).into_string();
        assert!(page.contains(r#"<option value="pointer" selected>"#), "{page}");
        assert!(page.contains(r#"value="data/customer""#), "{page}");
        assert!(page.contains(r#"id="ordering-error""#), "{page}");
        assert!(page.contains(r##"href="#field-ordering">Delivery order: "##), "{page}");
    }

    #[test]
    fn forms_give_their_repeated_fields_and_header_rows() {
        let s = session(Capability::Manage);
        let body = format!(
            "csrf={}&event=a.b&event=c.*&events_text=d%0Ae%2Cf&header_name=X-Key&header_value=v1&header_name=&header_value=ignored&header_name=+X-Two+&header_value=",
            s.csrf
        );
        let form = Form::checked(&Bytes::from(body), &s).unwrap();
        assert_eq!(form.events(), ["a.b", "c.*", "d", "e", "f"]);
        assert_eq!(
            form.headers(),
            [
                ("X-Key".to_owned(), "v1".to_owned()),
                ("X-Two".to_owned(), String::new())
            ]
        );
    }

    #[test]
    fn api_problems_become_pages_that_say_what_happened() {
        let s = session(Capability::Manage);
        let page = |p: Problem| {
            let e = PageError::from((p, &s));
            (e.status.as_u16(), e.title, e.detail)
        };
        let off = Problem::new(
            StatusCode::NOT_FOUND,
            "history-disabled",
            "Delivery history is off",
            None,
        );
        assert_eq!(page(off).1, "No delivery history");
        assert_eq!(page(Problem::not_found("webhook", "w")).1, "Not found");
        let down = page(Problem::unavailable("subscription store", &"refused"));
        assert_eq!((down.0, down.2.contains("Try again")), (503, true));
        let quota = Problem::new(
            StatusCode::FORBIDDEN,
            "quota-exceeded",
            "Quota exceeded",
            Some("delete one first".into()),
        );
        assert_eq!(page(quota).2, "delete one first");
    }

    #[test]
    fn pages_forbid_scripts_and_framing_by_others() {
        let s = session(Capability::ReadOnly);
        let response = html(StatusCode::OK, Some(&s), maud::html! { p { "x" } });
        let csp = response.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.starts_with("default-src 'none';"), "{csp}");
        assert!(csp.ends_with("frame-ancestors 'self'"), "{csp}");
        assert!(!csp.contains("script-src"), "no script source at all: {csp}");
        assert_eq!(response.headers()[header::REFERRER_POLICY], "no-referrer");
        let anonymous = html(StatusCode::NOT_FOUND, None, maud::html! {});
        let csp = anonymous.headers()[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.ends_with("frame-ancestors 'none'"), "{csp}");
    }
}

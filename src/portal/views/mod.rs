//! The portal's pages, as maud templates: every value is escaped, and the
//! pages carry no script. Plain forms and links keep them keyboard and
//! screen-reader friendly; the stylesheet lays them out down to phone width.

use std::collections::BTreeMap;
use std::time::Duration;

use maud::{html, Markup, DOCTYPE};
use time::OffsetDateTime;

use crate::admin::deliveries::{AttemptPage, TestResult};
use crate::admin::jobs::{JobKind, JobState, ReplayJob};
use crate::admin::problem::Problem;
use crate::admin::webhooks::secrets::SecretView;
use crate::admin::webhooks::WebhookView;
use crate::config::catalog::{Catalog, CatalogEvent};
use crate::config::connector::Connector;
use crate::history::record::{AttemptRecord, Outcome};
use crate::history::store::Stats;
use crate::routing::ordering::Ordering;
use crate::webhook::{StatusBy, WebhookStatus};

mod deliveries;
mod events;
mod webhooks;

pub use deliveries::{attempt, deliveries, replay_form, replay_job, test};
pub use events::events;
pub use webhooks::{confirm_delete, detail, edit_form, list, secret, webhook_form};

use super::deliveries::LogQuery;
use super::Session;

/// Links to the list's other pages.
#[derive(Debug, Default)]
pub struct Pages {
    /// The next page, when there is one.
    pub next: Option<String>,
    /// The first page, when this is not it.
    pub first: Option<String>,
}

/// What a webhook form shows (as typed, when sent back with an error).
#[derive(Debug, Default, Clone)]
pub struct FormValues {
    /// The tenant (chosen in an operators' session only).
    pub tenant: String,
    pub name: String,
    pub url: String,
    pub events: Vec<String>,
    pub headers: Vec<(String, String)>,
    /// The payload filter as JSON text; empty for none.
    pub filter: String,
    /// The rate limit: requests a second and the burst, as typed; both
    /// empty for none.
    pub rate: String,
    pub burst: String,
    /// What deliveries are ordered by: empty for nothing, `key` for the
    /// record key, `pointer` for the value at `ordering_pointer`.
    pub ordering: String,
    /// The JSON pointer to order by, as typed; used with `pointer` only.
    pub ordering_pointer: String,
}

pub(super) fn when(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// `d` in the largest whole unit: "1 day", "36 hours", "90 seconds".
pub(super) fn span_of(d: Duration) -> String {
    let secs = d.as_secs();
    let (n, unit) = [(86_400, "day"), (3_600, "hour"), (60, "minute")]
        .into_iter()
        .find(|(u, _)| secs >= *u && secs % u == 0)
        .map_or((secs, "second"), |(u, name)| (secs / u, name));
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// A status reason without the backticks the API puts around names.
pub(super) fn plain(reason: &str) -> String {
    reason.replace('`', "")
}

pub(super) fn rate(r: Option<f64>) -> String {
    r.map_or_else(|| "no deliveries".to_owned(), |r| format!("{:.1}%", r * 100.0))
}

pub(super) fn status_text(status: WebhookStatus) -> &'static str {
    match status {
        WebhookStatus::Active => "Active",
        WebhookStatus::Paused => "Paused",
        WebhookStatus::Disabled => "Disabled",
    }
}

pub(super) fn layout(session: Option<&Session>, title: &str, body: Markup) -> Markup {
    layout_refreshing(session, title, None, body)
}

/// A page that reloads itself every `refresh` seconds (a running replay, the
/// live delivery log): a meta refresh, since the pages carry no script.
pub(super) fn layout_refreshing(session: Option<&Session>, title: &str, refresh: Option<u32>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if let Some(secs) = refresh {
                    meta http-equiv="refresh" content=(secs);
                }
                title { (title) " · Webhooks" }
                link rel="stylesheet" href="/portal/assets/portal.css";
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" {
                    @if let Some(s) = session {
                        a class="brand" href=(s.path("")) { "Webhooks" }
                        @match &s.claims.ten {
                            Some(t) => span class="tenant" { (t) },
                            None => span class="badge" { "Operator: every tenant" },
                        }
                        @if !s.manages() {
                            span class="badge" { "Read only" }
                        }
                    } @else {
                        span class="brand" { "Webhooks" }
                    }
                }
                main id="main" { (body) }
                @if let Some(s) = session {
                    footer {
                        p {
                            "This link works until "
                            (OffsetDateTime::from_unix_timestamp(s.claims.exp).map(when).unwrap_or_default())
                            "."
                        }
                    }
                }
            }
        }
    }
}

pub(super) fn notice(done: Option<&str>) -> Markup {
    html! {
        @if let Some(message) = done {
            p class="notice" role="status" { (message) }
        }
    }
}

pub(super) fn csrf(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

pub(super) fn problem_summary(problem: Option<&Problem>) -> Markup {
    html! {
        @if let Some(p) = problem {
            div class="error-summary" role="alert" tabindex="-1" {
                h2 { "The webhook was not saved" }
                ul {
                    @if p.errors.is_empty() {
                        li { (p.detail.as_deref().unwrap_or(&p.title)) }
                    }
                    @for e in &p.errors {
                        li {
                            a href={"#field-" (e.field.split('.').next().unwrap_or(&e.field))} {
                                (field_label(&e.field))
                                // Where in the filter: `/amount.>`.
                                @if let Some(at) = e.field.strip_prefix("filter.") { " " code { (at) } }
                                ": " (e.message)
                            }
                        }
                    }
                }
            }
        }
    }
}

pub(super) fn field_label(field: &str) -> &str {
    match field.split('.').next().unwrap_or(field) {
        "tenant" => "Tenant",
        "name" => "Name",
        "url" => "Endpoint URL",
        "events" => "Events",
        "headers" => "Custom headers",
        "filter" => "Payload filter",
        "limits" | "limits.rate" => "Rate limit",
        "ordering" => "Delivery order",
        other => other,
    }
}

pub(super) fn headers_table(caption: &str, headers: &BTreeMap<String, String>) -> Markup {
    html! {
        @if headers.is_empty() {
            p { "No headers kept." }
        } @else {
            table class="headers" {
                caption { (caption) }
                tbody {
                    @for (name, value) in headers {
                        tr { th scope="row" { code { (name) } } td class="url" { (value) } }
                    }
                }
            }
        }
    }
}

/// A page that says what went wrong and what to do.
pub fn error(session: Option<&Session>, title: &str, detail: &str) -> Markup {
    layout(
        session,
        title,
        html! {
            h1 { (title) }
            p { (detail) }
            @if let Some(s) = session {
                p { a href=(s.path("")) { "Back to your webhooks" } }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_in_their_largest_whole_unit() {
        assert_eq!(span_of(Duration::from_secs(86_400)), "1 day");
        assert_eq!(span_of(Duration::from_secs(36 * 3_600)), "36 hours");
        assert_eq!(span_of(Duration::from_secs(90)), "90 seconds");
        assert_eq!(span_of(Duration::from_secs(120)), "2 minutes");
    }
}

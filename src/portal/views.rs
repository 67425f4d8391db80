//! The portal's pages, as maud templates: every value is escaped, and the
//! pages carry no script. Plain forms and links keep them keyboard and
//! screen-reader friendly; the stylesheet lays them out down to phone width.

use std::collections::BTreeMap;
use std::time::Duration;

use maud::{html, Markup, DOCTYPE};
use time::OffsetDateTime;

use crate::admin::deliveries::{AttemptPage, TestResult};
use crate::admin::jobs::{JobState, ReplayJob};
use crate::admin::problem::Problem;
use crate::admin::webhooks::secrets::SecretView;
use crate::admin::webhooks::WebhookView;
use crate::config::catalog::{Catalog, CatalogEvent};
use crate::config::connector::Connector;
use crate::history::record::{AttemptRecord, Outcome};
use crate::history::store::Stats;
use crate::webhook::WebhookStatus;

use super::{LogQuery, Session};

/// What a webhook form shows (as typed, when sent back with an error).
#[derive(Debug, Default, Clone)]
pub struct FormValues {
    /// The tenant (chosen in an operators' session only).
    pub tenant: String,
    pub name: String,
    pub url: String,
    pub events: Vec<String>,
    pub headers: Vec<(String, String)>,
}

fn when(t: OffsetDateTime) -> String {
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
fn span_of(d: Duration) -> String {
    let secs = d.as_secs();
    let (n, unit) = [(86_400, "day"), (3_600, "hour"), (60, "minute")]
        .into_iter()
        .find(|(u, _)| secs >= *u && secs % u == 0)
        .map_or((secs, "second"), |(u, name)| (secs / u, name));
    format!("{n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// A status reason without the backticks the API puts around names.
fn plain(reason: &str) -> String {
    reason.replace('`', "")
}

fn rate(r: Option<f64>) -> String {
    r.map_or_else(|| "no deliveries".to_owned(), |r| format!("{:.1}%", r * 100.0))
}

fn status_text(status: WebhookStatus) -> &'static str {
    match status {
        WebhookStatus::Active => "Active",
        WebhookStatus::Paused => "Paused",
        WebhookStatus::Disabled => "Disabled",
    }
}

fn layout(session: Option<&Session>, title: &str, body: Markup) -> Markup {
    layout_refreshing(session, title, None, body)
}

/// A page that reloads itself every `refresh` seconds (a running replay, the
/// live delivery log): a meta refresh, since the pages carry no script.
fn layout_refreshing(session: Option<&Session>, title: &str, refresh: Option<u32>, body: Markup) -> Markup {
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

fn notice(done: Option<&str>) -> Markup {
    html! {
        @if let Some(message) = done {
            p class="notice" role="status" { (message) }
        }
    }
}

fn csrf(session: &Session) -> Markup {
    html! { input type="hidden" name="csrf" value=(session.csrf); }
}

/// The webhooks of the session, with their status and health.
pub fn list(
    session: &Session,
    rows: &[(WebhookView, Option<Stats>)],
    connectors: &[&std::sync::Arc<Connector>],
    done: Option<&str>,
) -> Markup {
    let can_create = session.manages() && session.claims.wh.is_none();
    let operator = session.claims.ten.is_none();
    layout(
        Some(session),
        "Webhooks",
        html! {
            (notice(done))
            div class="heading" {
                h1 { "Webhooks" }
                @if can_create {
                    a class="button" href=(session.path("webhooks/new")) { "New webhook" }
                }
            }
            @if can_create && !connectors.is_empty() {
                section aria-labelledby="connectors-heading" class="connectors" {
                    h2 id="connectors-heading" { "Connect a product" }
                    ul {
                        @for c in connectors {
                            li {
                                a href=(session.path(&format!("webhooks/new?connector={}", c.name))) { (c.title) }
                                span class="description" { (c.description) }
                            }
                        }
                    }
                }
            }
            @if rows.is_empty() {
                div class="empty" {
                    h2 { "No webhooks yet" }
                    p { "A webhook sends the events you choose to a URL of yours, signed so that you can check they came from us." }
                    @if can_create {
                        p { a href=(session.path("webhooks/new")) { "Create your first webhook" } }
                    }
                }
            } @else {
                table {
                    caption class="visually-hidden" { "Your webhooks, their status and how their deliveries went in the last 24 hours" }
                    thead {
                        tr {
                            th scope="col" { "Name" }
                            @if operator { th scope="col" { "Tenant" } }
                            th scope="col" { "Endpoint" }
                            th scope="col" { "Status" }
                            th scope="col" { "Succeeded (24 h)" }
                            th scope="col" { "Last failure" }
                        }
                    }
                    tbody {
                        @for (w, stats) in rows {
                            tr {
                                td data-label="Name" { a href=(session.path(&format!("webhooks/{}", w.id))) { (w.name) } }
                                @if operator { td data-label="Tenant" { (w.tenant.as_deref().unwrap_or("none")) } }
                                td data-label="Endpoint" class="url" { (w.url) }
                                td data-label="Status" {
                                    span class={"status " (w.status.as_str())} { (status_text(w.status)) }
                                    @if let Some(reason) = &w.status_reason {
                                        @if w.status != WebhookStatus::Active {
                                            span class="reason" { (plain(reason)) }
                                        }
                                    }
                                }
                                td data-label="Succeeded (24 h)" { (stats.as_ref().map_or_else(|| "—".to_owned(), |s| rate(s.last_day.success_rate))) }
                                td data-label="Last failure" {
                                    (stats.as_ref().and_then(|s| s.last_failure_at).map_or_else(|| "none".to_owned(), when))
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

fn problem_summary(problem: Option<&Problem>) -> Markup {
    html! {
        @if let Some(p) = problem {
            div class="error-summary" role="alert" tabindex="-1" {
                h2 { "The webhook was not saved" }
                ul {
                    @if p.errors.is_empty() {
                        li { (p.detail.as_deref().unwrap_or(&p.title)) }
                    }
                    @for e in &p.errors {
                        li { a href={"#field-" (e.field.split('.').next().unwrap_or(&e.field))} { (field_label(&e.field)) ": " (e.message) } }
                    }
                }
            }
        }
    }
}

fn field_label(field: &str) -> &str {
    match field.split('.').next().unwrap_or(field) {
        "tenant" => "Tenant",
        "name" => "Name",
        "url" => "Endpoint URL",
        "events" => "Events",
        "headers" => "Custom headers",
        other => other,
    }
}

/// A catalog's events by category, in the catalog's order within each.
fn categories(catalog: &Catalog) -> BTreeMap<&str, Vec<&CatalogEvent>> {
    let mut by_category: BTreeMap<&str, Vec<&CatalogEvent>> = BTreeMap::new();
    for e in &catalog.events {
        by_category.entry(e.category.as_str()).or_default().push(e);
    }
    by_category
}

fn event_picker(catalog: Option<&Catalog>, chosen: &[String]) -> Markup {
    html! {
        @match catalog {
            Some(catalog) => {
                fieldset id="field-events" class="events" {
                    legend { "Events" }
                    p class="hint" { "Choose the events to receive. You can change this later." }
                    @for (category, events) in &categories(catalog) {
                        fieldset class="category" {
                            legend { (category) }
                            @for e in events {
                                @let id = format!("event-{}", e.event_type.replace('.', "-"));
                                div class="check" {
                                    input type="checkbox" name="event" id=(id) value=(e.event_type) checked[chosen.contains(&e.event_type)];
                                    label for=(id) {
                                        code { (e.event_type) }
                                        span class="description" { (e.description) }
                                    }
                                }
                                details class="example" {
                                    summary { "Example payload of " (e.event_type) }
                                    pre { code { (serde_json::to_string_pretty(&e.example).unwrap_or_default()) } }
                                }
                            }
                        }
                    }
                    @let other: Vec<&String> = chosen.iter().filter(|c| !catalog.events.iter().any(|e| &e.event_type == *c)).collect();
                    label for="events-text" { "Or patterns, one per line (" code { "prefix.*" } " for every event type that begins " code { "prefix." } ")" }
                    textarea id="events-text" name="events_text" rows="2" {
                        @for (i, c) in other.iter().enumerate() { @if i > 0 { "\n" } (c) }
                    }
                }
            }
            None => {
                div class="field" id="field-events" {
                    label for="events-text" { "Events" }
                    p class="hint" id="events-hint" { "Event types, one per line: exact (" code { "order.paid" } "), a prefix (" code { "order.*" } ") or " code { "*" } " for all." }
                    textarea id="events-text" name="events_text" rows="4" aria-describedby="events-hint" required {
                        @for (i, c) in chosen.iter().enumerate() { @if i > 0 { "\n" } (c) }
                    }
                }
            }
        }
    }
}

fn header_rows(values: &FormValues, editing: bool, connector: Option<&Connector>) -> Markup {
    let mut rows = values.headers.clone();
    rows.extend(std::iter::repeat_n((String::new(), String::new()), 2));
    html! {
        fieldset id="field-headers" class="headers" {
            legend { "Custom headers" }
            p class="hint" {
                "Sent with every request, e.g. an API key your endpoint checks. Values are write-only: they are never shown again."
                @if editing { " Leave a value empty to keep it; clear the name to remove the header." }
            }
            @for (i, (name, value)) in rows.iter().enumerate() {
                div class="header-row" {
                    div class="field" {
                        label for={"header-name-" (i)} { "Header name" }
                        input type="text" id={"header-name-" (i)} name="header_name" value=(name) autocomplete="off";
                    }
                    div class="field" {
                        label for={"header-value-" (i)} { "Value" }
                        input type="password" id={"header-value-" (i)} name="header_value" value=(value) autocomplete="new-password"
                            placeholder=[if editing && !name.is_empty() {
                                Some("unchanged")
                            } else {
                                connector.and_then(|c| c.headers.get(name)).map(String::as_str)
                            }];
                    }
                }
            }
        }
    }
}

fn form_fields(
    session: &Session,
    catalog: Option<&Catalog>,
    values: &FormValues,
    editing: bool,
    connector: Option<&Connector>,
) -> Markup {
    let url_hint = connector
        .map(|c| c.url_hint.as_str())
        .filter(|h| !h.is_empty())
        .unwrap_or("Where events are sent, as POST requests; use HTTPS.");
    html! {
        @if let Some(c) = connector {
            input type="hidden" name="connector" value=(c.name);
        }
        @if session.claims.ten.is_none() && !editing {
            div class="field" id="field-tenant" {
                label for="tenant" { "Tenant" }
                p class="hint" id="tenant-hint" { "Whose events it receives; leave empty for every tenant's." }
                input type="text" id="tenant" name="tenant" value=(values.tenant) maxlength="128" aria-describedby="tenant-hint" autocomplete="off";
            }
        }
        div class="field" id="field-name" {
            label for="name" { "Name" }
            input type="text" id="name" name="name" value=(values.name) required maxlength="256" autocomplete="off";
        }
        div class="field" id="field-url" {
            label for="url" { "Endpoint URL" }
            p class="hint" id="url-hint" { (url_hint) }
            input type="url" id="url" name="url" value=(values.url) required maxlength="2048" aria-describedby="url-hint" placeholder="https://example.com/webhooks";
        }
        (event_picker(catalog, &values.events))
        (header_rows(values, editing, connector))
    }
}

/// The form that creates a webhook.
pub fn webhook_form(
    session: &Session,
    catalog: Option<&Catalog>,
    values: &FormValues,
    problem: Option<&Problem>,
    connector: Option<&Connector>,
) -> Markup {
    let title = connector.map_or_else(|| "New webhook".to_owned(), |c| format!("New webhook: {}", c.title));
    layout(
        Some(session),
        &title,
        html! {
            h1 { (title) }
            @if let Some(c) = connector {
                p class="connector" { (c.description) }
            }
            (problem_summary(problem))
            form method="post" action=(session.path("webhooks")) {
                (csrf(session))
                (form_fields(session, catalog, values, false, connector))
                div class="actions" {
                    button type="submit" { "Create webhook" }
                    a href=(session.path("")) { "Cancel" }
                }
            }
        },
    )
}

/// The form that changes a webhook.
pub fn edit_form(
    session: &Session,
    webhook: &WebhookView,
    catalog: Option<&Catalog>,
    values: &FormValues,
    problem: Option<&Problem>,
) -> Markup {
    let here = format!("webhooks/{}", webhook.id);
    layout(
        Some(session),
        &format!("Edit {}", webhook.name),
        html! {
            h1 { "Edit " (webhook.name) }
            (problem_summary(problem))
            form method="post" action=(session.path(&format!("{here}/edit"))) {
                (csrf(session))
                (form_fields(session, catalog, values, true, None))
                div class="actions" {
                    button type="submit" { "Save changes" }
                    a href=(session.path(&here)) { "Cancel" }
                }
            }
        },
    )
}

/// One webhook: what it receives, how it is doing, and what can be done.
pub fn detail(
    session: &Session,
    w: &WebhookView,
    stats: Option<&Stats>,
    catalog: Option<&Catalog>,
    done: Option<&str>,
) -> Markup {
    let here = format!("webhooks/{}", w.id);
    let described = |pattern: &str| catalog.and_then(|c| c.event(pattern)).map(|e| e.description.clone());
    layout(
        Some(session),
        &w.name,
        html! {
            (notice(done))
            p class="back" { a href=(session.path("")) { "All webhooks" } }
            h1 { (w.name) }
            dl class="facts" {
                @if session.claims.ten.is_none() {
                    dt { "Tenant" } dd { (w.tenant.as_deref().unwrap_or("none: every tenant's events")) }
                }
                dt { "Endpoint" } dd class="url" { (w.url) }
                dt { "Status" }
                dd {
                    span class={"status " (w.status.as_str())} { (status_text(w.status)) }
                    @if let Some(reason) = &w.status_reason { @if w.status != WebhookStatus::Active { " — " (plain(reason)) } }
                }
                dt { "Created" } dd { (when(w.created_at)) }
                dt { "Webhook id" } dd { code { (w.id) } }
            }
            section aria-labelledby="events-heading" {
                h2 id="events-heading" { "Events" }
                ul class="event-list" {
                    @for e in &w.events {
                        li {
                            code { (e) }
                            @if let Some(d) = described(e) { " — " (d) }
                        }
                    }
                }
            }
            section aria-labelledby="headers-heading" {
                h2 id="headers-heading" { "Custom headers" }
                @if w.headers.is_empty() {
                    p { "None." }
                } @else {
                    ul {
                        @for name in w.headers.keys() {
                            li { code { (name) } ": " span class="hidden-value" { "value hidden" } }
                        }
                    }
                }
            }
            section aria-labelledby="health-heading" {
                h2 id="health-heading" { "Deliveries" }
                p { a href=(session.path(&format!("{here}/deliveries"))) { "Delivery log" } }
                @match stats {
                    Some(s) => {
                        (chart(s))
                        dl class="facts" {
                            dt { "Last 24 hours" } dd { (s.last_day.succeeded) " succeeded, " (s.last_day.failed) " failed (" (rate(s.last_day.success_rate)) ")" }
                            dt { "Last 7 days" } dd { (s.last_week.succeeded) " succeeded, " (s.last_week.failed) " failed (" (rate(s.last_week.success_rate)) ")" }
                            dt { "Last success" } dd { (s.last_success_at.map_or_else(|| "never".to_owned(), when)) }
                            dt { "Last failure" } dd { (s.last_failure_at.map_or_else(|| "never".to_owned(), when)) }
                        }
                    }
                    None => { p { "No delivery statistics are kept." } }
                }
            }
            @if session.manages() {
                section aria-labelledby="actions-heading" class="manage" {
                    h2 id="actions-heading" { "Manage" }
                    ul class="links" {
                        li { a href=(session.path(&format!("{here}/edit"))) { "Edit name, endpoint, events and headers" } }
                        li { a href=(session.path(&format!("{here}/secret"))) { "Signing secret" } }
                        li { a href=(session.path(&format!("{here}/test"))) { "Send a test event" } }
                        li { a href=(session.path(&format!("{here}/replay"))) { "Send failed deliveries again" } }
                        @if session.claims.wh.is_none() {
                            li { a href=(session.path(&format!("{here}/delete"))) { "Delete this webhook" } }
                        }
                    }
                    @if w.status == WebhookStatus::Active {
                        form method="post" action=(session.path(&format!("{here}/pause"))) {
                            (csrf(session))
                            p class="hint" { "While paused, events are kept, not sent; resuming can send them then." }
                            button type="submit" class="secondary" { "Pause deliveries" }
                        }
                    } @else {
                        form method="post" action=(session.path(&format!("{here}/resume"))) {
                            (csrf(session))
                            div class="check" {
                                input type="checkbox" id="replay" name="replay" value="yes" checked;
                                label for="replay" { "Also send what was kept while it was " (w.status.as_str()) }
                            }
                            button type="submit" { "Resume deliveries" }
                        }
                    }
                }
            }
        },
    )
}

/// Asks before a webhook is deleted.
pub fn confirm_delete(session: &Session, w: &WebhookView) -> Markup {
    let here = format!("webhooks/{}", w.id);
    layout(
        Some(session),
        &format!("Delete {}", w.name),
        html! {
            h1 { "Delete " (w.name) "?" }
            p { "Events stop being sent to " span class="url" { (w.url) } " at once, and its delivery history is deleted. This cannot be undone." }
            form method="post" action=(session.path(&format!("{here}/delete"))) {
                (csrf(session))
                div class="actions" {
                    button type="submit" class="danger" { "Delete webhook" }
                    a href=(session.path(&here)) { "Keep it" }
                }
            }
        },
    )
}

/// The signing secrets, and rotation.
pub fn secret(
    session: &Session,
    w: &WebhookView,
    secrets: &SecretView,
    overlap: Duration,
    done: Option<&str>,
) -> Markup {
    let here = format!("webhooks/{}", w.id);
    layout(
        Some(session),
        &format!("Secret of {}", w.name),
        html! {
            (notice(done))
            p class="back" { a href=(session.path(&here)) { (w.name) } }
            h1 { "Signing secret" }
            p { "Every request carries a " code { "webhook-signature" } " header made with this secret (Standard Webhooks). Check it before trusting a request." }
            h2 { "Signs now" }
            p { code class="secret" { (secrets.secret) } }
            @if !secrets.previous.is_empty() {
                h2 { "Also signing until it expires" }
                ul {
                    @for p in &secrets.previous {
                        li { code class="secret" { (p.secret) } " until " (when(p.expires_at)) }
                    }
                }
            }
            h2 { "Rotate" }
            p { "A new secret signs from now on. The current one keeps signing too for " (span_of(overlap)) ", so you can switch your endpoint over without missing a request." }
            form method="post" action=(session.path(&format!("{here}/secret/rotate"))) {
                (csrf(session))
                button type="submit" class="secondary" { "Rotate secret" }
            }
        },
    )
}

/// Succeeded and failed deliveries per 24 hours over the last 7 days, as bars
/// (an SVG drawn here: the pages carry no script), with the numbers in a
/// table for screen readers and for reading exactly.
fn chart(stats: &Stats) -> Markup {
    let days: Vec<(String, u64, u64)> = stats
        .hourly
        .chunks(24)
        .map(|day| {
            let label = day.last().map_or_else(String::new, |h| {
                format!("{:02}-{:02}", u8::from(h.hour.month()), h.hour.day())
            });
            let (s, f) = day.iter().fold((0, 0), |(s, f), h| (s + h.succeeded, f + h.failed));
            (label, s, f)
        })
        .collect();
    let most = days.iter().map(|(_, s, f)| s + f).max().unwrap_or(0).max(1);
    let (width, height, bar) = (560u64, 160u64, 56u64);
    let step = width / days.len().max(1) as u64;
    html! {
        figure class="chart" {
            svg viewBox={"0 0 " (width) " " (height + 24)} role="img" aria-labelledby="chart-title" {
                title id="chart-title" { "Deliveries per 24 hours over the last 7 days" }
                @for (i, (label, s, f)) in days.iter().enumerate() {
                    @let x = i as u64 * step + (step - bar) / 2;
                    @let sh = s * height / most;
                    @let fh = f * height / most;
                    rect class="ok" x=(x) y=(height - sh) width=(bar) height=(sh) {}
                    rect class="failed" x=(x) y=(height - sh - fh) width=(bar) height=(fh) {}
                    text x=(x + bar / 2) y=(height + 18) text-anchor="middle" { (label) }
                }
            }
            figcaption {
                "Each bar is 24 hours, the last one ending now. "
                span class="key ok" { "Succeeded" } " " span class="key failed" { "Failed" }
            }
            table class="chart-numbers" {
                caption class="visually-hidden" { "Deliveries per 24 hours" }
                thead { tr { th scope="col" { "24 hours to (UTC)" } th scope="col" { "Succeeded" } th scope="col" { "Failed" } } }
                tbody {
                    @for (label, s, f) in &days {
                        tr { td { (label) } td { (s) } td { (f) } }
                    }
                }
            }
        }
    }
}

fn local_input(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

fn outcome_text(a: &AttemptRecord) -> String {
    match (a.outcome, &a.response) {
        (Outcome::Succeeded, Some(r)) => format!("Succeeded ({})", r.status),
        (Outcome::Failed, Some(r)) => format!("Failed ({})", r.status),
        (Outcome::Succeeded, None) => "Succeeded".to_owned(),
        (Outcome::Failed, None) => format!("Failed ({})", a.class),
    }
}

/// The delivery log: filters, attempts newest first, older pages, and a
/// live tail that reloads the first page.
pub fn deliveries(
    session: &Session,
    w: &WebhookView,
    query: &LogQuery,
    page: &AttemptPage,
    problems: &[String],
    done: Option<&str>,
) -> Markup {
    let here = format!("webhooks/{}", w.id);
    let live = query.live.is_some() && query.cursor.is_empty();
    let filters = |cursor: Option<&str>, live: bool| {
        let mut pairs = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [
            ("status", &query.status),
            ("event_type", &query.event_type),
            ("delivery_id", &query.delivery_id),
            ("since", &query.since),
            ("until", &query.until),
        ] {
            if !v.is_empty() {
                pairs.append_pair(k, v);
            }
        }
        if let Some(c) = cursor {
            pairs.append_pair("cursor", c);
        }
        if live {
            pairs.append_pair("live", "1");
        }
        session.path(&format!("{here}/deliveries?{}", pairs.finish()))
    };
    layout_refreshing(
        Some(session),
        &format!("Deliveries of {}", w.name),
        live.then_some(5),
        html! {
            (notice(done))
            p class="back" { a href=(session.path(&here)) { (w.name) } }
            h1 { "Delivery log" }
            @if !problems.is_empty() {
                div class="error-summary" role="alert" {
                    h2 { "Some filters were not used" }
                    ul { @for p in problems { li { (p) } } }
                }
            }
            form method="get" action=(session.path(&format!("{here}/deliveries"))) class="filters" {
                div class="field" {
                    label for="status" { "Outcome" }
                    select id="status" name="status" {
                        option value="" selected[query.status.is_empty()] { "All" }
                        option value="succeeded" selected[query.status == "succeeded"] { "Succeeded" }
                        option value="failed" selected[query.status == "failed"] { "Failed" }
                    }
                }
                div class="field" {
                    label for="event_type" { "Event type" }
                    input type="text" id="event_type" name="event_type" value=(query.event_type) placeholder="tour.*";
                }
                div class="field" {
                    label for="since" { "From (UTC)" }
                    input type="datetime-local" id="since" name="since" value=(query.since);
                }
                div class="field" {
                    label for="until" { "Until (UTC)" }
                    input type="datetime-local" id="until" name="until" value=(query.until);
                }
                div class="field" {
                    label for="delivery_id" { "Delivery id" }
                    input type="text" id="delivery_id" name="delivery_id" value=(query.delivery_id) placeholder="msg_...";
                }
                div class="actions" { button type="submit" class="secondary" { "Filter" } }
            }
            p class="live" {
                @if live {
                    span role="status" { "Live: this page reloads every 5 seconds. " }
                    a href=(filters(None, false)) { "Stop live updates" }
                } @else if query.cursor.is_empty() {
                    a href=(filters(None, true)) { "Follow new attempts live" }
                }
            }
            @if page.data.is_empty() {
                div class="empty" {
                    h2 { "No attempts here" }
                    p { "Attempts appear as events are delivered. Filters may hide some; the history keeps the latest attempts of each webhook for a week." }
                }
            } @else {
                table {
                    caption class="visually-hidden" { "Delivery attempts, newest first" }
                    thead {
                        tr {
                            th scope="col" { "When (UTC)" }
                            th scope="col" { "Event" }
                            th scope="col" { "Attempt" }
                            th scope="col" { "Outcome" }
                            th scope="col" { "Time" }
                        }
                    }
                    tbody {
                        @for a in &page.data {
                            tr {
                                td data-label="When (UTC)" { a href=(session.path(&format!("{here}/deliveries/{}", a.id))) { (when(a.at)) } }
                                td data-label="Event" { code { (a.event_type) } }
                                td data-label="Attempt" { (a.attempt) }
                                td data-label="Outcome" {
                                    span class={"status " (if a.outcome == Outcome::Succeeded { "active" } else { "disabled" })} { (outcome_text(a)) }
                                }
                                td data-label="Time" { (a.duration_ms) " ms" }
                            }
                        }
                    }
                }
                @if let Some(next) = &page.next_cursor {
                    p { a href=(filters(Some(next), false)) { "Older attempts" } }
                }
            }
        },
    )
}

fn headers_table(caption: &str, headers: &BTreeMap<String, String>) -> Markup {
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

/// One attempt: the request as sent, the response, and a retry.
pub fn attempt(session: &Session, w: &WebhookView, a: &AttemptRecord) -> Markup {
    let here = format!("webhooks/{}", w.id);
    layout(
        Some(session),
        &format!("Attempt {} of {}", a.attempt, a.event_type),
        html! {
            p class="back" { a href=(session.path(&format!("{here}/deliveries"))) { "Delivery log" } }
            h1 { "Attempt " (a.attempt) " of " code { (a.event_type) } }
            dl class="facts" {
                dt { "When" } dd { (when(a.at)) }
                dt { "Outcome" } dd { (outcome_text(a)) " in " (a.duration_ms) " ms" }
                @if let Some(error) = &a.error { dt { "Error" } dd { (error) } }
                dt { "Delivery id" } dd { code { (a.delivery_id) } }
                @if let Some(id) = &a.event_id { dt { "Event id" } dd { code { (id) } } }
            }
            @if session.manages() {
                form method="post" action=(session.path(&format!("{here}/deliveries/{}/retry", a.id))) {
                    (csrf(session))
                    p class="hint" { "Sends this event again now, with the same delivery id, so your endpoint can tell it is the same delivery." }
                    button type="submit" class="secondary" { "Send again" }
                }
            }
            section aria-labelledby="request-heading" {
                h2 id="request-heading" { "Request" }
                p { "POST " span class="url" { (a.request.url) } }
                (headers_table("Request headers (the values of your custom headers are hidden)", &a.request.headers))
                h3 { "Body (" (a.request.body_bytes) " bytes)" }
                pre { code { (a.request.body) } }
            }
            section aria-labelledby="response-heading" {
                h2 id="response-heading" { "Response" }
                @match &a.response {
                    None => p { "No response came." },
                    Some(r) if r.withheld => p { "Status " (r.status) ". The headers and body of this endpoint's responses are not kept." },
                    Some(r) => {
                        p { "Status " (r.status) }
                        (headers_table("Response headers", &r.headers))
                        h3 { "Body" @if r.body_truncated { " (the start)" } }
                        @match &r.body {
                            Some(body) if !body.is_empty() => pre { code { (body) } },
                            _ => p { "Empty." },
                        }
                    }
                }
            }
        },
    )
}

/// Choose since when failed deliveries are sent again (counted first).
pub fn replay_form(session: &Session, w: &WebhookView, since: OffsetDateTime, problem: Option<&str>) -> Markup {
    let here = format!("webhooks/{}", w.id);
    layout(
        Some(session),
        &format!("Send again: {}", w.name),
        html! {
            p class="back" { a href=(session.path(&here)) { (w.name) } }
            h1 { "Send failed deliveries again" }
            @if let Some(p) = problem {
                div class="error-summary" role="alert" { h2 { "Not started" } ul { li { a href="#since" { (p) } } } }
            }
            p { "Deliveries that failed for good (every retry used, or an answer that ends retries) are kept. Once your endpoint works again, send them again, with their original delivery ids. First you see how many there are." }
            form method="post" action=(session.path(&format!("{here}/replay"))) {
                (csrf(session))
                div class="field" {
                    label for="since" { "Failed since (UTC)" }
                    input type="datetime-local" id="since" name="since" value=(local_input(since)) required;
                }
                button type="submit" { "Count them" }
            }
        },
    )
}

/// A replay: its progress while it runs (the page reloads), then what it
/// found or sent; after a count, the button that sends them.
pub fn replay_job(session: &Session, w: &WebhookView, job: &ReplayJob, since: &str) -> Markup {
    let here = format!("webhooks/{}", w.id);
    let running = job.state == JobState::Running;
    layout_refreshing(
        Some(session),
        "Replay",
        running.then_some(2),
        html! {
            p class="back" { a href=(session.path(&here)) { (w.name) } }
            h1 { @if job.dry_run { "Counting failed deliveries" } @else { "Sending failed deliveries again" } }
            @match job.state {
                JobState::Running => {
                    p role="status" { "Reading kept deliveries: " (job.scanned) " of " (job.total) " read, " (job.matched) " of this webhook so far. This page reloads by itself." }
                }
                JobState::Failed => {
                    div class="error-summary" role="alert" {
                        h2 { "It stopped" }
                        p { (job.error.as_deref().unwrap_or("an unknown error")) ". Try again in a minute." }
                    }
                }
                JobState::Done => {
                    @if job.dry_run {
                        @let n = job.would_replay.unwrap_or(0);
                        p role="status" {
                            (n) " failed " (if n == 1 { "delivery" } else { "deliveries" }) " since " (since.replace('T', " ")) " UTC can be sent again"
                            @if job.already_redriven > 0 { " (" (job.already_redriven) " were sent again before and are left alone)" }
                            "."
                        }
                        @if n > 0 {
                            form method="post" action=(session.path(&format!("{here}/replay"))) {
                                (csrf(session))
                                input type="hidden" name="since" value=(since);
                                input type="hidden" name="send" value="yes";
                                button type="submit" { "Send " (n) " again" }
                            }
                        }
                    } @else {
                        p role="status" { "Done: " (job.replayed) " sent again. They appear in the delivery log as they are delivered." }
                        p { a href=(session.path(&format!("{here}/deliveries"))) { "Delivery log" } }
                    }
                }
            }
        },
    )
}

/// Send a catalog example to the endpoint, and what it answered.
pub fn test(session: &Session, w: &WebhookView, types: &[String], result: Option<&TestResult>) -> Markup {
    let here = format!("webhooks/{}", w.id);
    layout(
        Some(session),
        &format!("Test {}", w.name),
        html! {
            p class="back" { a href=(session.path(&here)) { (w.name) } }
            h1 { "Send a test event" }
            @if let Some(r) = result {
                section aria-labelledby="result-heading" class={"result " (if r.succeeded { "passed" } else { "failed" })} {
                    h2 id="result-heading" role="status" {
                        @if r.succeeded { "Your endpoint accepted it" } @else { "Your endpoint did not accept it" }
                    }
                    dl class="facts" {
                        dt { "Status" } dd { (r.status.map_or_else(|| r.class.clone(), |s| s.to_string())) }
                        dt { "Time" } dd { (r.duration_ms) " ms" }
                        @if let Some(e) = &r.error { dt { "Error" } dd { (e) } }
                        dt { "Delivery id" } dd { code { (r.delivery_id) } }
                    }
                    @if r.response_withheld {
                        p { "The response's headers and body are not shown for this endpoint." }
                    } @else {
                        (headers_table("Response headers", &r.response_headers))
                        @if let Some(body) = r.response_body.as_ref().filter(|b| !b.is_empty()) {
                            h3 { "Response body" }
                            pre { code { (body) } }
                        }
                    }
                }
            }
            @if types.is_empty() {
                p { "There is no example of the events this webhook receives to send." }
            } @else {
                form method="post" action=(session.path(&format!("{here}/test"))) {
                    (csrf(session))
                    div class="field" {
                        label for="event_type" { "Event" }
                        p class="hint" id="event-hint" { "Its example payload is sent, signed like every delivery." }
                        select id="event_type" name="event_type" aria-describedby="event-hint" {
                            @for t in types { option value=(t) { (t) } }
                        }
                    }
                    button type="submit" { "Send test event" }
                }
            }
        },
    )
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

//! The portal's pages, as maud templates: every value is escaped, and the
//! pages carry no script. Plain forms and links keep them keyboard and
//! screen-reader friendly; the stylesheet lays them out down to phone width.

use std::collections::BTreeMap;
use std::time::Duration;

use maud::{html, Markup, DOCTYPE};
use time::OffsetDateTime;

use crate::admin::problem::Problem;
use crate::admin::webhooks::secrets::SecretView;
use crate::admin::webhooks::WebhookView;
use crate::config::catalog::{Catalog, CatalogEvent};
use crate::history::store::Stats;
use crate::webhook::WebhookStatus;

use super::Session;

/// What a webhook form shows (as typed, when sent back with an error).
#[derive(Debug, Default, Clone)]
pub struct FormValues {
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
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Webhooks" }
                link rel="stylesheet" href="/portal/assets/portal.css";
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header class="top" {
                    @if let Some(s) = session {
                        a class="brand" href=(s.path("")) { "Webhooks" }
                        span class="tenant" { (s.claims.ten) }
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
pub fn list(session: &Session, rows: &[(WebhookView, Option<Stats>)], done: Option<&str>) -> Markup {
    let can_create = session.manages() && session.claims.wh.is_none();
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
                    label for="events-text" { "Or patterns, one per line (" code { "tour.*" } " for every tour event)" }
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

fn header_rows(values: &FormValues, editing: bool) -> Markup {
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
                            placeholder=[(editing && !name.is_empty()).then_some("unchanged")];
                    }
                }
            }
        }
    }
}

fn form_fields(catalog: Option<&Catalog>, values: &FormValues, editing: bool) -> Markup {
    html! {
        div class="field" id="field-name" {
            label for="name" { "Name" }
            input type="text" id="name" name="name" value=(values.name) required maxlength="256" autocomplete="off";
        }
        div class="field" id="field-url" {
            label for="url" { "Endpoint URL" }
            p class="hint" id="url-hint" { "Where events are sent, as POST requests; use HTTPS." }
            input type="url" id="url" name="url" value=(values.url) required maxlength="2048" aria-describedby="url-hint" placeholder="https://example.com/webhooks";
        }
        (event_picker(catalog, &values.events))
        (header_rows(values, editing))
    }
}

/// The form that creates a webhook.
pub fn webhook_form(
    session: &Session,
    catalog: Option<&Catalog>,
    values: &FormValues,
    problem: Option<&Problem>,
) -> Markup {
    layout(
        Some(session),
        "New webhook",
        html! {
            h1 { "New webhook" }
            (problem_summary(problem))
            form method="post" action=(session.path("webhooks")) {
                (csrf(session))
                (form_fields(catalog, values, false))
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
                (form_fields(catalog, values, true))
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
                @match stats {
                    Some(s) => {
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

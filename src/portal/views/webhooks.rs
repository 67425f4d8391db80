//! The webhook pages' templates.

use super::*;

/// The webhooks of the session, with their status and health.
pub fn list(
    session: &Session,
    rows: &[(WebhookView, Option<Stats>)],
    pages: &Pages,
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
                nav aria-label="Pages" class="pages" {
                    @if let Some(first) = &pages.first { a href=(first) { "First page" } }
                    @if let Some(next) = &pages.next { a href=(next) { "Next page" } }
                }
            }
        },
    )
}

/// A catalog's events by category, in the catalog's order within each.
pub(super) fn categories(catalog: &Catalog) -> BTreeMap<&str, Vec<&CatalogEvent>> {
    let mut by_category: BTreeMap<&str, Vec<&CatalogEvent>> = BTreeMap::new();
    for e in &catalog.events {
        by_category.entry(e.category.as_str()).or_default().push(e);
    }
    by_category
}

pub(super) fn event_picker(catalog: Option<&Catalog>, chosen: &[String]) -> Markup {
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

pub(super) fn header_rows(values: &FormValues, editing: bool, connector: Option<&Connector>) -> Markup {
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

/// The payload filter's field, with what is wrong with it next to it.
pub(super) fn filter_field(values: &FormValues, problem: Option<&Problem>) -> Markup {
    let error = problem
        .into_iter()
        .flat_map(|p| &p.errors)
        .find(|e| e.field == "filter" || e.field.starts_with("filter."));
    let described = if error.is_some() {
        "filter-error filter-hint"
    } else {
        "filter-hint"
    };
    html! {
        div class="field" id="field-filter" {
            label for="filter" { "Payload filter (optional)" }
            p class="hint" id="filter-hint" {
                "Only events whose body matches are sent. JSON pointers into the event, each with its conditions, e.g. "
                code { r#"{"/data/plan": {"in": ["pro", "team"]}, "/amount": {">": 100}}"# }
                ". Operators: " code { "= != in not_in > >= < <= exists" } ". Leave empty to receive every event of the types above."
            }
            @if let Some(e) = error {
                p class="field-error" id="filter-error" { (e.field) ": " (e.message) }
            }
            textarea id="filter" name="filter" rows="4" spellcheck="false" autocomplete="off"
                aria-describedby=(described) aria-invalid=[error.map(|_| "true")] { (values.filter) }
        }
    }
}

/// The rate limit's fields, with what is wrong with them next to them.
pub(super) fn rate_field(values: &FormValues, problem: Option<&Problem>) -> Markup {
    let error = problem
        .into_iter()
        .flat_map(|p| &p.errors)
        .find(|e| e.field == "limits" || e.field.starts_with("limits."));
    let described = if error.is_some() {
        "rate-error rate-hint"
    } else {
        "rate-hint"
    };
    html! {
        fieldset class="field" id="field-limits" {
            legend { "Rate limit (optional)" }
            p class="hint" id="rate-hint" {
                "At most this many requests a second reach the endpoint, however many of our servers send them; "
                "fractions are allowed (0.0167 is about one a minute). The burst is how many may go at once after a quiet time (1 if empty). "
                "A 429 answer slows them down for a while. Leave both empty for no limit."
            }
            @if let Some(e) = error {
                p class="field-error" id="rate-error" { (e.message) }
            }
            label for="rate" { "Requests a second" }
            input type="text" id="rate" name="rate" inputmode="decimal" autocomplete="off" value=(values.rate)
                aria-describedby=(described) aria-invalid=[error.map(|_| "true")];
            label for="burst" { "Burst" }
            input type="text" id="burst" name="burst" inputmode="numeric" autocomplete="off" value=(values.burst)
                aria-describedby="rate-hint";
        }
    }
}

/// The ordering's fields (what deliveries are ordered by, and the pointer
/// when it is a value in the body), with what is wrong next to them.
pub(super) fn ordering_field(values: &FormValues, problem: Option<&Problem>) -> Markup {
    let error = problem
        .into_iter()
        .flat_map(|p| &p.errors)
        .find(|e| e.field == "ordering" || e.field.starts_with("ordering."));
    let described = if error.is_some() {
        "ordering-error ordering-hint"
    } else {
        "ordering-hint"
    };
    let chosen = values.ordering.as_str();
    html! {
        fieldset class="field" id="field-ordering" {
            legend { "Delivery order (optional)" }
            p class="hint" id="ordering-hint" {
                "Events with the same key are sent one at a time, in their partition's order, retries included. "
                "Events without a key are sent as they come. "
                "The key is the event's record key (its Kafka message key), or the value at a JSON pointer into its body."
            }
            @if let Some(e) = error {
                p class="field-error" id="ordering-error" { (e.message) }
            }
            label for="ordering" { "Order by" }
            select id="ordering" name="ordering" aria-describedby=(described) aria-invalid=[error.map(|_| "true")] {
                option value="" selected[chosen.is_empty()] { "Nothing: send events as they come" }
                option value="key" selected[chosen == "key"] { "The record key" }
                option value="pointer" selected[chosen == "pointer"] { "A value in the body (JSON pointer)" }
            }
            label for="ordering-pointer" { "JSON pointer" }
            p class="hint" id="ordering-pointer-hint" {
                "Where the value is, e.g. " code { "/data/customer_id" } "; used only when ordering by a value in the body."
            }
            input type="text" id="ordering-pointer" name="ordering_pointer" value=(values.ordering_pointer)
                spellcheck="false" autocomplete="off" maxlength="256" placeholder="/data/customer_id"
                aria-describedby="ordering-pointer-hint";
        }
    }
}

/// The fields of the create and edit forms; `problem`: why the last
/// submission was refused.
pub(super) fn form_fields(
    session: &Session,
    catalog: Option<&Catalog>,
    values: &FormValues,
    editing: bool,
    connector: Option<&Connector>,
    tenants: &[String],
    problem: Option<&Problem>,
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
                input type="text" id="tenant" name="tenant" value=(values.tenant) maxlength="128" aria-describedby="tenant-hint" autocomplete="off" list="known-tenants";
                datalist id="known-tenants" {
                    @for t in tenants { option value=(t) {} }
                }
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
        (filter_field(values, problem))
        (rate_field(values, problem))
        (ordering_field(values, problem))
    }
}

/// The form that creates a webhook.
pub fn webhook_form(
    session: &Session,
    catalog: Option<&Catalog>,
    values: &FormValues,
    problem: Option<&Problem>,
    connector: Option<&Connector>,
    tenants: &[String],
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
                (form_fields(session, catalog, values, false, connector, tenants, problem))
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
                (form_fields(session, catalog, values, true, None, &[], problem))
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
            section aria-labelledby="filter-heading" {
                h2 id="filter-heading" { "Payload filter" }
                @match &w.filter {
                    Some(filter) => {
                        p { "Only events whose body matches this are sent:" }
                        pre { code { (serde_json::to_string_pretty(filter).unwrap_or_default()) } }
                    }
                    None => { p { "None: every event of its types is sent." } }
                }
            }
            section aria-labelledby="rate-heading" {
                h2 id="rate-heading" { "Rate limit" }
                @match &w.limits.rate {
                    Some(rate) => {
                        p {
                            "At most " (rate.per_second) " requests a second, " (rate.burst()) " at once after a quiet time; "
                            "lowered for a while after a 429 answer."
                        }
                    }
                    None => { p { "None." } }
                }
            }
            section aria-labelledby="ordering-heading" {
                h2 id="ordering-heading" { "Delivery order" }
                @match &w.ordering {
                    Some(Ordering::RecordKey) => {
                        p {
                            "Events with the same record key are sent one at a time, in their partition's order, "
                            "retries included. Events without a key are sent as they come."
                        }
                    }
                    Some(Ordering::Pointer { pointer, .. }) => {
                        p {
                            "Events with the same value at " code { (pointer) } " in their body are sent one at a time, "
                            "in their partition's order, retries included. Events without a value there are sent as they come."
                        }
                    }
                    None => { p { "None: events are sent as they come." } }
                }
            }
            section aria-labelledby="health-heading" {
                h2 id="health-heading" { "Deliveries" }
                p {
                    a href=(session.path(&format!("{here}/events"))) { "Events and their deliveries" }
                    " · "
                    a href=(session.path(&format!("{here}/deliveries"))) { "Delivery log" }
                }
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
                        li { a href=(session.path(&format!("{here}/edit"))) { "Edit name, endpoint, events, headers, filter, rate limit and delivery order" } }
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
                    } @else if session.claims.ten.is_some() && w.status_by == Some(StatusBy::Operator) {
                        p class="hint" {
                            "Your operator " (w.status.as_str()) " this webhook; only they can resume it. Its events are kept meanwhile."
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
pub(super) fn chart(stats: &Stats) -> Markup {
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

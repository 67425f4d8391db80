//! The deliveries-by-event page's template.

use super::*;
use crate::admin::events::DeliveryPage;
use crate::history::record::{DeliveryRecord, DeliveryStatus};
use crate::portal::events::EventsQuery;

/// Where a delivery stands, in words, and the badge class it is shown with.
fn standing(d: &DeliveryRecord) -> (String, &'static str) {
    match d.status {
        DeliveryStatus::Delivered => ("Delivered".to_owned(), "active"),
        DeliveryStatus::PendingRetry => (
            match d.next_attempt_at {
                Some(next) => format!("Retrying at {}", when(next)),
                None => "Retrying".to_owned(),
            },
            "paused",
        ),
        DeliveryStatus::DeadLettered => (
            format!("Failed ({})", d.reason.as_deref().unwrap_or("no reason recorded")),
            "disabled",
        ),
        DeliveryStatus::Kept => ("Kept while not active".to_owned(), "paused"),
    }
}

/// A webhook's deliveries by event, newest first, each with its attempts.
pub fn events(session: &Session, w: &WebhookView, query: &EventsQuery, page: &DeliveryPage) -> Markup {
    let here = format!("webhooks/{}", w.id);
    let older = |cursor: &str| {
        let mut pairs = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in [("status", &query.status), ("event_type", &query.event_type)] {
            if !v.is_empty() {
                pairs.append_pair(k, v);
            }
        }
        pairs.append_pair("cursor", cursor);
        session.path(&format!("{here}/events?{}", pairs.finish()))
    };
    let statuses = [
        ("", "All"),
        ("delivered", "Delivered"),
        ("pending_retry", "Retrying"),
        ("dead_lettered", "Failed"),
        ("kept", "Kept while not active"),
    ];
    layout(
        Some(session),
        &format!("Events sent to {}", w.name),
        html! {
            p class="back" { a href=(session.path(&here)) { (w.name) } }
            h1 { "Events and their deliveries" }
            p { "Each event sent to this webhook, where its delivery stands, and its attempts. The " a href=(session.path(&format!("{here}/deliveries"))) { "delivery log" } " lists every attempt in full." }
            form method="get" action=(session.path(&format!("{here}/events"))) class="filters" {
                div class="field" {
                    label for="status" { "Status" }
                    select id="status" name="status" {
                        @for (value, label) in statuses {
                            option value=(value) selected[query.status == value] { (label) }
                        }
                    }
                }
                div class="field" {
                    label for="event_type" { "Event type" }
                    input type="text" id="event_type" name="event_type" value=(query.event_type) placeholder="tour.*";
                }
                div class="actions" { button type="submit" class="secondary" { "Filter" } }
            }
            @if page.data.is_empty() {
                div class="empty" {
                    h2 { "No events here" }
                    p { "Events appear as they are sent to this webhook. Filters may hide some; the latest events of each webhook are kept for a week." }
                }
            } @else {
                table {
                    caption class="visually-hidden" { "Events sent to this webhook, newest first" }
                    thead {
                        tr {
                            th scope="col" { "First sent (UTC)" }
                            th scope="col" { "Event" }
                            th scope="col" { "Status" }
                            th scope="col" { "Attempts" }
                        }
                    }
                    tbody {
                        @for d in &page.data {
                            @let (text, class) = standing(d);
                            tr {
                                td data-label="First sent (UTC)" { (when(d.first_at)) }
                                td data-label="Event" {
                                    code { (d.event_type) }
                                    @if let Some(id) = &d.event_id { br; span class="hint" { (id) } }
                                }
                                td data-label="Status" { span class={"status " (class)} { (text) } }
                                td data-label="Attempts" {
                                    @if d.attempts.is_empty() {
                                        "None"
                                    } @else {
                                        ol class="attempts" {
                                            @for a in &d.attempts {
                                                li {
                                                    a href=(session.path(&format!("{here}/deliveries/{}", a.id))) {
                                                        "#" (a.attempt) " "
                                                        (match (a.outcome, a.status) {
                                                            (Outcome::Succeeded, Some(s)) => format!("succeeded ({s})"),
                                                            (Outcome::Failed, Some(s)) => format!("failed ({s})"),
                                                            (Outcome::Succeeded, None) => "succeeded".to_owned(),
                                                            (Outcome::Failed, None) => format!("failed ({})", a.class),
                                                        })
                                                    }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                @if let Some(next) = &page.next_cursor {
                    p { a href=(older(next)) { "Older events" } }
                }
            }
        },
    )
}

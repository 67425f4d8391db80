//! The delivery pages' templates.

use super::*;

pub(super) fn local_input(t: OffsetDateTime) -> String {
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

pub(super) fn outcome_text(a: &AttemptRecord) -> String {
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
            p { "Every attempt, newest first. " a href=(session.path(&format!("{here}/events"))) { "Events and their deliveries" } " shows one line per event." }
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
            h2 { "Failed deliveries waiting to be retried" }
            p { "Deliveries that failed recently wait to be retried on a schedule (after an hour, then three hours, a day, three days and a week). Once your endpoint works again, send them now, with their original delivery ids: each is sent once, and not again when its retry comes due. First you see how many there are." }
            form method="post" action=(session.path(&format!("{here}/retry-pending"))) {
                (csrf(session))
                button type="submit" { "Count waiting deliveries" }
            }
        },
    )
}

/// A replay: its progress while it runs (the page reloads), then what it
/// found or sent; after a count, the button that sends them.
pub fn replay_job(session: &Session, w: &WebhookView, job: &ReplayJob, since: &str) -> Markup {
    let here = format!("webhooks/{}", w.id);
    let running = job.state == JobState::Running;
    let pending = job.kind == JobKind::RetryPending;
    layout_refreshing(
        Some(session),
        if pending { "Retry pending" } else { "Replay" },
        running.then_some(2),
        html! {
            p class="back" { a href=(session.path(&here)) { (w.name) } }
            h1 {
                @match (pending, job.dry_run) {
                    (false, true) => "Counting failed deliveries",
                    (false, false) => "Sending failed deliveries again",
                    (true, true) => "Counting deliveries waiting to be retried",
                    (true, false) => "Sending waiting deliveries now",
                }
            }
            @match job.state {
                JobState::Running => {
                    @if pending && !job.dry_run && job.total == 0 {
                        p role="status" { "Starting: deliveries that fail in the next few seconds are included. This page reloads by itself." }
                    } @else {
                        p role="status" { "Reading " (if pending { "waiting" } else { "kept" }) " deliveries: " (job.scanned) " of " (job.total) " read, " (job.matched) " of this webhook so far. This page reloads by itself." }
                    }
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
                        @let (action, form_since) = if pending { ("retry-pending", None) } else { ("replay", Some(since)) };
                        p role="status" {
                            @let noun = if n == 1 { "delivery" } else { "deliveries" };
                            @if pending { (n) " " (noun) " waiting to be retried can be sent now" } @else { (n) " failed " (noun) " since " (since.replace('T', " ")) " UTC can be sent again" }
                            @if job.already_redriven > 0 { " (" (job.already_redriven) " were sent again before and are left alone)" }
                            "."
                        }
                        @if n > 0 {
                            form method="post" action=(session.path(&format!("{here}/{action}"))) {
                                (csrf(session))
                                @if let Some(since) = form_since { input type="hidden" name="since" value=(since); }
                                input type="hidden" name="send" value="yes";
                                button type="submit" { @if pending { "Send " (n) " now" } @else { "Send " (n) " again" } }
                            }
                        }
                    } @else {
                        p role="status" { "Done: " (job.replayed) " sent " (if pending { "now" } else { "again" }) ". They appear in the delivery log as they are delivered." }
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

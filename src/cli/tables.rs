//! What the command line prints: the API's answers as tables (or its JSON
//! with `--json`), and a replay's progress.

use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{ContentArrangement, Table};
use serde_json::Value;

/// A JSON value as a cell: `-` for null, lists joined by commas.
pub(crate) fn text_of(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(text_of).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

fn table(headers: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(headers.iter().copied());
    t
}

/// Prints `value` as JSON, or through `render` as a table.
pub fn print(value: &Value, json: bool, render: impl Fn(&Value) -> String) {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(value).expect("JSON values serialise")
        );
    } else {
        println!("{}", render(value));
    }
}

/// A list of webhooks as a table.
pub fn webhooks_table(page: &Value) -> String {
    let mut t = table(&["ID", "NAME", "TENANT", "STATUS", "EVENTS", "URL"]);
    for w in page["data"].as_array().into_iter().flatten() {
        t.add_row(vec![
            text_of(&w["id"]),
            text_of(&w["name"]),
            text_of(&w["tenant"]),
            text_of(&w["status"]),
            text_of(&w["events"]),
            text_of(&w["url"]),
        ]);
    }
    t.to_string()
}

/// A list of tenants as a table.
pub fn tenants_table(page: &Value) -> String {
    let mut t = table(&["NAME", "SOURCE", "CATALOG", "WEBHOOKS", "MAX WEBHOOKS"]);
    for x in page["data"].as_array().into_iter().flatten() {
        t.add_row(vec![
            text_of(&x["name"]),
            text_of(&x["source"]),
            text_of(&x["catalog"]),
            text_of(&x["webhooks"]),
            text_of(&x["max_webhooks"]),
        ]);
    }
    t.to_string()
}

/// One tenant as a two-column table.
pub fn tenant_table(x: &Value) -> String {
    let mut t = table(&["FIELD", "VALUE"]);
    for key in [
        "name",
        "source",
        "catalog",
        "max_webhooks",
        "frame_ancestors",
        "webhooks",
        "created_at",
        "created_by",
        "updated_at",
        "updated_by",
    ] {
        t.add_row(vec![key.to_owned(), text_of(&x[key])]);
    }
    t.to_string()
}

/// A tenant's tokens as a table.
pub fn tokens_table(list: &Value) -> String {
    let mut t = table(&["NAME", "SOURCE", "ENDS WITH", "CREATED", "BY", "EXPIRES", "LAST USED"]);
    for x in list["data"].as_array().into_iter().flatten() {
        t.add_row(vec![
            text_of(&x["name"]),
            text_of(&x["source"]),
            text_of(&x["last4"]),
            text_of(&x["created_at"]),
            text_of(&x["created_by"]),
            text_of(&x["expires_at"]),
            text_of(&x["last_used_at"]),
        ]);
    }
    t.to_string()
}

/// One webhook as a two-column table.
pub fn webhook_table(w: &Value) -> String {
    let mut t = table(&["FIELD", "VALUE"]);
    for key in [
        "id",
        "uid",
        "name",
        "tenant",
        "url",
        "events",
        "status",
        "status_reason",
        "status_by",
        "status_changed_at",
        "created_at",
        "updated_at",
    ] {
        t.add_row(vec![key.to_owned(), text_of(&w[key])]);
    }
    // Values are write-only: the API shows names only.
    let headers = w["headers"].as_object().map(|h| {
        h.keys()
            .map(|k| format!("{k} (value hidden)"))
            .collect::<Vec<_>>()
            .join("\n")
    });
    t.add_row(vec![
        "headers".to_owned(),
        headers.filter(|h| !h.is_empty()).unwrap_or("-".into()),
    ]);
    if w["limits"].as_object().is_some_and(|l| !l.is_empty()) {
        t.add_row(vec!["limits".to_owned(), w["limits"].to_string()]);
    }
    if w["filter"].is_object() {
        t.add_row(vec!["filter".to_owned(), w["filter"].to_string()]);
    }
    // As --ordering takes it: `key`, or the pointer.
    let ordering = match &w["ordering"] {
        Value::Null => None,
        Value::String(key) if key == "key" => Some("key (the Kafka record key)".to_owned()),
        Value::Object(o) if o.get("key").is_some_and(Value::is_string) => Some(format!(
            "{} (the value at this JSON pointer in the body)",
            text_of(&o["key"])
        )),
        other => Some(other.to_string()),
    };
    if let Some(ordering) = ordering {
        t.add_row(vec!["ordering".to_owned(), ordering]);
    }
    // The certificate by its fingerprint (the API shows its PEM); the key
    // is never shown.
    if w["tls_client"].is_object() {
        t.add_row(vec![
            "tls_client".to_owned(),
            format!(
                "certificate sha256 {}\nkey (hidden)",
                text_of(&w["tls_client"]["sha256"])
            ),
        ]);
    }
    t.to_string()
}

/// Signing secrets as a table.
pub fn secret_table(s: &Value) -> String {
    let mut t = table(&["SECRET", "SIGNS UNTIL"]);
    t.add_row(vec![text_of(&s["secret"]), "current".to_owned()]);
    for p in s["previous"].as_array().into_iter().flatten() {
        t.add_row(vec![text_of(&p["secret"]), text_of(&p["expires_at"])]);
    }
    t.to_string()
}

/// Catalogs, or one catalog's events.
pub fn catalogs_table(v: &Value) -> String {
    if let Some(events) = v["events"].as_array() {
        let mut t = table(&["TYPE", "CATEGORY", "DESCRIPTION"]);
        for e in events {
            t.add_row(vec![
                text_of(&e["type"]),
                text_of(&e["category"]),
                text_of(&e["description"]),
            ]);
        }
        return t.to_string();
    }
    let mut t = table(&["NAME", "TITLE", "EVENTS", "ENVELOPE", "DESCRIPTION"]);
    for c in v["data"].as_array().into_iter().flatten() {
        t.add_row(vec![
            text_of(&c["name"]),
            text_of(&c["title"]),
            text_of(&c["event_count"]),
            text_of(&c["envelope"]),
            text_of(&c["description"]),
        ]);
    }
    t.to_string()
}

/// A replay's progress on standard error: a bar with rate and ETA on a
/// terminal, a plain line every few seconds otherwise (logs, CI).
pub struct ReplayProgress {
    bar: Option<indicatif::ProgressBar>,
    last_line: parking_lot::Mutex<Option<std::time::Instant>>,
}

/// How often the plain line is written.
const PLAIN_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

impl ReplayProgress {
    /// A bar when standard error is a terminal.
    pub fn new() -> ReplayProgress {
        use std::io::IsTerminal;
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:30} {pos}/{len} dead letters read  {per_sec}  ETA {eta}  {msg}",
                )
                .expect("a valid template"),
            );
            bar
        });
        ReplayProgress {
            bar,
            last_line: parking_lot::Mutex::new(None),
        }
    }

    /// Shows where the replay is; `done` for the last time.
    pub fn update(&self, total: u64, scanned: u64, matched: u64, replayed: u64, done: bool) {
        let detail = format!("matched {matched}, replayed {replayed}");
        match &self.bar {
            Some(bar) => {
                bar.set_length(total);
                bar.set_position(scanned);
                bar.set_message(detail);
                if done {
                    bar.finish();
                }
            }
            None => {
                let mut last = self.last_line.lock();
                if done || last.is_none_or(|at| at.elapsed() >= PLAIN_EVERY) {
                    eprintln!("read {scanned} of {total} dead letters, {detail}");
                    *last = Some(std::time::Instant::now());
                }
            }
        }
    }
}

impl Default for ReplayProgress {
    fn default() -> Self {
        ReplayProgress::new()
    }
}

/// A replay job's outcome as one line.
pub fn replay_line(job: &Value) -> String {
    let kind = match job["kind"].as_str() {
        Some("retry_pending") => "retry pending",
        _ => "replay",
    };
    let would = match job["would_replay"].as_u64() {
        Some(n) => format!(", would re-drive {n}"),
        None => String::new(),
    };
    format!(
        "{kind} {}: {} (scanned {}, matched {}, replayed {}, re-driven before {}{would})",
        text_of(&job["id"]),
        text_of(&job["state"]),
        text_of(&job["scanned"]),
        text_of(&job["matched"]),
        text_of(&job["replayed"]),
        text_of(&job["already_redriven"]),
    )
}

/// Delivery attempts as a table.
pub fn attempts_table(page: &Value) -> String {
    let mut t = table(&["ATTEMPT ID", "AT", "DELIVERY", "#", "EVENT", "OUTCOME", "STATUS", "MS"]);
    for a in page["data"].as_array().into_iter().flatten() {
        t.add_row(vec![
            text_of(&a["id"]),
            text_of(&a["at"]),
            text_of(&a["delivery_id"]),
            text_of(&a["attempt"]),
            text_of(&a["event_type"]),
            format!("{} ({})", text_of(&a["outcome"]), text_of(&a["class"])),
            text_of(&a["response"]["status"]),
            text_of(&a["duration_ms"]),
        ]);
    }
    t.to_string()
}

/// A page of deliveries by event: one row each, its attempts in one cell.
pub fn events_table(page: &Value) -> String {
    let mut t = table(&["DELIVERY", "FIRST AT", "EVENT", "STATUS", "ATTEMPTS"]);
    for d in page["data"].as_array().into_iter().flatten() {
        let status = match (d["status"].as_str(), &d["reason"], &d["next_attempt_at"]) {
            (Some("pending_retry"), _, next) if next.is_string() => format!("pending_retry (next {})", text_of(next)),
            (Some(status), reason, _) if reason.is_string() => format!("{status} ({})", text_of(reason)),
            _ => text_of(&d["status"]),
        };
        let attempts = d["attempts"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                let answer = match &a["status"] {
                    Value::Null => text_of(&a["class"]),
                    status => text_of(status),
                };
                format!("#{} {} {answer}", text_of(&a["attempt"]), text_of(&a["outcome"]))
            })
            .collect::<Vec<_>>()
            .join("\n");
        t.add_row(vec![
            text_of(&d["delivery_id"]),
            text_of(&d["first_at"]),
            text_of(&d["event_type"]),
            status,
            attempts,
        ]);
    }
    t.to_string()
}

/// One attempt: summary, then the request and the response.
pub fn attempt_table(a: &Value) -> String {
    let mut t = table(&["FIELD", "VALUE"]);
    for key in [
        "id",
        "delivery_id",
        "event_type",
        "event_id",
        "attempt",
        "tier",
        "at",
        "duration_ms",
        "outcome",
        "class",
        "error",
    ] {
        t.add_row(vec![key.to_owned(), text_of(&a[key])]);
    }
    let headers = |h: &Value| {
        h.as_object()
            .map(|h| {
                h.iter()
                    .map(|(k, v)| format!("{k}: {}", text_of(v)))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default()
    };
    t.add_row(vec![
        "request".to_owned(),
        format!(
            "POST {}\n{}",
            text_of(&a["request"]["url"]),
            headers(&a["request"]["headers"])
        ),
    ]);
    t.add_row(vec!["request body".to_owned(), text_of(&a["request"]["body"])]);
    if a["response"].is_object() {
        t.add_row(vec![
            "response".to_owned(),
            format!(
                "{}\n{}",
                text_of(&a["response"]["status"]),
                headers(&a["response"]["headers"])
            ),
        ]);
        t.add_row(vec!["response body".to_owned(), text_of(&a["response"]["body"])]);
    }
    t.to_string()
}

/// Statistics as a table.
pub fn stats_table(s: &Value) -> String {
    let mut t = table(&["WINDOW", "SUCCEEDED", "FAILED", "SUCCESS RATE"]);
    for (label, key) in [
        ("last hour", "last_hour"),
        ("last day", "last_day"),
        ("last week", "last_week"),
    ] {
        let w = &s[key];
        let rate = w["success_rate"]
            .as_f64()
            .map_or("-".to_owned(), |r| format!("{:.1}%", r * 100.0));
        t.add_row(vec![
            label.to_owned(),
            text_of(&w["succeeded"]),
            text_of(&w["failed"]),
            rate,
        ]);
    }
    format!(
        "{t}\nlast success: {}\nlast failure: {}",
        text_of(&s["last_success_at"]),
        text_of(&s["last_failure_at"])
    )
}

/// A test ping's result.
pub fn test_table(r: &Value) -> String {
    let mut t = table(&["FIELD", "VALUE"]);
    for key in [
        "delivery_id",
        "succeeded",
        "class",
        "status",
        "duration_ms",
        "error",
        "response_body",
    ] {
        t.add_row(vec![key.to_owned(), text_of(&r[key])]);
    }
    t.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_show_the_fields_and_never_panic_on_missing_ones() {
        let page = json!({"data": [{"id": "wh_1", "name": "n", "status": "active", "events": ["a", "b.*"], "url": "https://x.test/"}]});
        let out = webhooks_table(&page);
        assert!(
            out.contains("wh_1") && out.contains("a, b.*") && out.contains("https://x.test/"),
            "{out}"
        );
        assert!(webhook_table(&json!({})).contains("status"));
        assert!(catalogs_table(&json!({"events": [{"type": "tour.completed"}]})).contains("tour.completed"));
        assert!(
            secret_table(&json!({"secret": "whsec_x", "previous": [{"secret": "whsec_y", "expires_at": "t"}]}))
                .contains("whsec_y")
        );
    }

    #[test]
    fn the_webhook_table_shows_the_ordering_as_the_flag_takes_it() {
        let row = |ordering: Value| {
            webhook_table(&json!({ "ordering": ordering }))
                .lines()
                .find(|l| l.contains("ordering"))
                .map(str::to_owned)
        };
        assert_eq!(row(Value::Null), None);
        assert!(row(json!("key")).unwrap().contains("key (the Kafka record key)"));
        let by_pointer = row(json!({"key": "/data/customer"})).unwrap();
        assert!(by_pointer.contains("/data/customer (the value at"), "{by_pointer}");
    }
}

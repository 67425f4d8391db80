//! The webhook portal in a real browser (headless Chromium through
//! chromedriver) against a real Herald, broker and Redis: the forms, what a
//! session may see and do, escaping, and an accessibility check (axe-core)
//! of every page. Screenshots go to target/portal/.

use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::Method;
use serde_json::{json, Value};

use crate::api::*;
use crate::helpers::*;

const SIGNING_KEY: &str = "portal-test-key-6f1d0c9a2b7e4f3a8c5d";

/// The API overlay with the portal on; acme may be framed by its own app.
fn portal_overlay() -> String {
    admin_overlay("24h").replace(
        r#"acme = { catalog = "jimo" }"#,
        r#"acme = { catalog = "jimo", frame_ancestors = ["https://app.acme.example"] }
jamco = { catalog = "jam" }"#,
    ) + &format!(
        "[portal]\nsigning_key = \"{SIGNING_KEY}\"\n[envelope.default]\npreset = \"jimo\"\ntenant = \"/tenant\"\n"
    )
}

/// A page's text.
async fn page_text(http: &reqwest::Client, url: String) -> String {
    http.get(url).send().await.unwrap().text().await.unwrap()
}

/// Posts a form; the status answered (redirects not followed by `http`).
async fn post_form(http: &reqwest::Client, url: String, body: String) -> u16 {
    submit_form(http, url, body).await.status().as_u16()
}

/// Posts a form; the reply.
async fn submit_form(http: &reqwest::Client, url: String, body: String) -> reqwest::Response {
    http.post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap()
}

/// A client that shows redirects instead of following them.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The session's CSRF token, from a page with a form.
fn csrf_of(page: &str) -> String {
    page.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("a form with the session's token: {page}"))
        .to_owned()
}

/// A session's link, as the API gives it, made absolute.
async fn session(api: &Api, token: &str, tenant: &str, body: Value) -> (String, Value) {
    let created = api
        .ok(
            Method::POST,
            &format!("/v1/tenants/{tenant}/portal-sessions"),
            token,
            Some(body),
        )
        .await;
    (format!("{}{}", api.base, created["url"].as_str().unwrap()), created)
}

/// Headless Chromium, driven through its own chromedriver.
struct Browser {
    client: Client,
    _driver: tokio::process::Child,
}

impl Browser {
    async fn start() -> Browser {
        let driver_path = std::env::var("HERALD_TEST_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = tokio::process::Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver is installed (scripts/test installs it)");
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000"]}),
        );
        let client = eventually(Duration::from_secs(20), "chromedriver to start a session", || {
            let caps = caps.clone();
            async move {
                // chromedriver is on loopback: plain HTTP, no TLS stack.
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps)
                    .connect(&format!("http://127.0.0.1:{port}"))
                    .await
                    .ok()
            }
        })
        .await;
        Browser {
            client,
            _driver: driver,
        }
    }

    async fn go(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// The page's visible text. A page that reloads itself (a running
    /// replay, the live log) may be between two loads: asked again then.
    async fn text(&self) -> String {
        eventually(Duration::from_secs(10), "a page to read", || async {
            self.client.find(Locator::Css("body")).await.ok()?.text().await.ok()
        })
        .await
    }

    async fn fill(&self, css: &str, value: &str) {
        let field = self.client.find(Locator::Css(css)).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(value).await.unwrap();
    }

    /// Clicks what does not leave the page (a checkbox).
    async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    /// Clicks `locator` and waits for the page it leads to.
    async fn navigate(&self, locator: Locator<'_>) {
        let old = self.client.find(Locator::Css("html")).await.unwrap();
        self.client
            .find(locator)
            .await
            .unwrap_or_else(|e| panic!("nothing at {locator:?}: {e}"))
            .click()
            .await
            .unwrap();
        eventually(Duration::from_secs(10), "the next page", || {
            let old = old.clone();
            async move {
                let gone = old.text().await.is_err();
                let ready = self.client.execute("return document.readyState", vec![]).await.ok()? == json!("complete");
                (gone && ready).then_some(())
            }
        })
        .await;
    }

    /// Submits the form whose button `css` names.
    async fn submit(&self, css: &str) {
        self.navigate(Locator::Css(css)).await;
    }

    /// Follows the link that reads `link_text`.
    async fn follow(&self, link_text: &str) {
        self.navigate(Locator::LinkText(link_text)).await;
    }

    async fn has(&self, css: &str) -> bool {
        !self.client.find_all(Locator::Css(css)).await.unwrap().is_empty()
    }

    /// The webhook page's deliveries chart once its last 24 hours count
    /// `total` attempts (the history is written a moment after each): the
    /// (succeeded, failed) of each 24 hours in its table, oldest first, after
    /// checking that each bar is drawn to those numbers.
    async fn chart(&self, page: &str, total: u64) -> Vec<(u64, u64)> {
        let read = || async {
            self.go(page).await;
            let chart = self
                .client
                .execute(
                    "const heights = css => [...document.querySelectorAll(css)]
                         .map(r => Number(r.getAttribute('height')));
                     return {
                       rows: [...document.querySelectorAll('table.chart-numbers tbody tr')]
                         .map(tr => [...tr.cells].map(td => td.textContent)),
                       ok: heights('svg[role=img] rect.ok'),
                       failed: heights('svg[role=img] rect.failed'),
                     };",
                    vec![],
                )
                .await
                .unwrap();
            let counts: Vec<(u64, u64)> = chart["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|row| {
                    (
                        row[1].as_str().unwrap().parse().unwrap(),
                        row[2].as_str().unwrap().parse().unwrap(),
                    )
                })
                .collect();
            (chart, counts)
        };
        let (chart, counts) = eventually(Duration::from_secs(10), "the chart to count every attempt", || async {
            let (chart, counts) = read().await;
            (counts.last().is_some_and(|(s, f)| s + f >= total)).then_some((chart, counts))
        })
        .await;
        let most = counts.iter().map(|(s, f)| s + f).max().unwrap().max(1);
        let drawn: Vec<(u64, u64)> = counts.iter().map(|(s, f)| (s * 160 / most, f * 160 / most)).collect();
        let bars: Vec<(u64, u64)> = chart["ok"]
            .as_array()
            .unwrap()
            .iter()
            .zip(chart["failed"].as_array().unwrap())
            .map(|(ok, failed)| (ok.as_u64().unwrap(), failed.as_u64().unwrap()))
            .collect();
        assert_eq!(bars, drawn, "each bar is drawn to its numbers {counts:?}");
        counts
    }

    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        let dir = repo_path("target/portal");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    /// Runs axe-core in the page; fails on any serious or critical violation.
    async fn check_accessibility(&self, page: &str) {
        let axe = std::fs::read_to_string(
            std::env::var("HERALD_TEST_AXE")
                .expect("HERALD_TEST_AXE names axe.min.js: run the suite with scripts/test"),
        )
        .unwrap();
        self.client.execute(&axe, vec![]).await.unwrap();
        let violations = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, {resultTypes: ['violations']})
                    .then(r => done(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
                        nodes: v.nodes.map(n => n.html)}))))
                    .catch(e => done([{id: 'axe-failed', impact: 'critical', help: String(e)}]));",
                vec![],
            )
            .await
            .unwrap();
        let serious: Vec<&Value> = violations
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| matches!(v["impact"].as_str(), Some("serious" | "critical")))
            .collect();
        assert!(serious.is_empty(), "{page}: accessibility violations: {serious:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_is_created_changed_paused_and_deleted_in_the_portal() {
    let env = TestEnv::new("portal-manage", &["events"], 1).await;
    let app = env.spawn(&portal_overlay()).await;
    let api = Api::new(&app);
    let receiver = TestReceiver::ok().await;
    let (link, created) = session(&api, ACME, "acme", json!({})).await;
    assert_eq!(created["capability"], "manage");
    let browser = Browser::start().await;

    // An empty list says what a webhook is and how to make one.
    browser.go(&link).await;
    assert!(browser.text().await.contains("No webhooks yet"));
    browser.check_accessibility("empty list").await;
    browser.screenshot("01-empty-list").await;

    // Create through the form: catalog events by category, a write-only header.
    browser.follow("New webhook").await;
    assert!(browser.text().await.contains("Tour"), "the jimo catalog's categories");
    browser.check_accessibility("new webhook form").await;
    browser.screenshot("02-new-webhook").await;
    browser.fill("#name", "Tours to CRM").await;
    browser.fill("#url", &receiver.url("/crm")).await;
    browser.click("#event-tour-completed").await;
    browser.fill("#header-name-0", "X-Api-Key").await;
    browser.fill("#header-value-0", "k-7f3e9a1c").await;
    browser.submit("button[type=submit]").await;
    let text = browser.text().await;
    assert!(text.contains("Webhook created"), "{text}");
    assert!(text.contains("Tours to CRM") && text.contains("X-Api-Key") && text.contains("value hidden"));
    assert!(
        !browser.client.source().await.unwrap().contains("k-7f3e9a1c"),
        "header values are write-only"
    );
    browser.check_accessibility("webhook").await;
    browser.screenshot("03-webhook").await;
    let url = browser.client.current_url().await.unwrap();
    let id = url.path().rsplit('/').next().unwrap().to_owned();
    let stored = api.ok(Method::GET, &format!("/v1/webhooks/{id}"), OPS, None).await;
    assert_eq!(
        (&stored["tenant"], &stored["events"], &stored["headers"]),
        (&json!("acme"), &json!(["tour.completed"]), &json!({"X-Api-Key": null}))
    );
    let stored_headers = || async { env.store().await.get(&id).await.unwrap().unwrap().headers };
    assert_eq!(
        stored_headers().await,
        [("X-Api-Key".to_owned(), "k-7f3e9a1c".to_owned())].into()
    );

    // It receives events.
    app.wait_webhooks(1).await;
    let publisher = Publisher::new();
    let event =
        |n: u32| format!(r#"{{"event":"tour.completed","version":"0","time":1,"id":"evt_p{n}","tenant":"acme"}}"#);
    publisher.json(env.topic(), &event(1)).await;
    let got = receiver.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(got[0].header("x-api-key"), "k-7f3e9a1c");

    // Pause keeps what arrives; resume with replay sends it.
    browser.submit("form[action$='/pause'] button").await;
    assert!(browser.text().await.contains("Webhook paused"));
    app.wait_status("paused", 1).await;
    publisher.json(env.topic(), &event(2)).await;
    eventually(Duration::from_secs(20), "the event to be kept", || async {
        (end_offsets(&env.dlq, 1).await[0] == 1).then_some(())
    })
    .await;
    assert_eq!(receiver.count(), 1);
    assert!(browser.has("#replay:checked").await, "replay is offered, ticked");
    browser.screenshot("04-paused").await;
    browser.submit("form[action$='/resume'] button").await;
    assert!(browser.text().await.contains("being delivered again"));
    let got = receiver.wait_for(2, Duration::from_secs(30)).await;
    assert!(
        String::from_utf8_lossy(&got[1].body).contains("evt_p2"),
        "the kept event"
    );

    // The secret: shown, rotated; the previous one is listed while it still signs.
    browser.follow("Signing secret").await;
    let old = browser
        .client
        .find(Locator::Css("code.secret"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(old.starts_with("whsec_"), "{old}");
    browser.check_accessibility("secret").await;
    browser.submit("form[action$='/secret/rotate'] button").await;
    let text = browser.text().await;
    assert!(
        text.contains("New secret made") && text.contains("Also signing until"),
        "{text}"
    );
    let secrets = browser.client.find_all(Locator::Css("code.secret")).await.unwrap();
    assert_eq!(secrets.len(), 2);
    assert_ne!(secrets[0].text().await.unwrap(), old);
    assert_eq!(secrets[1].text().await.unwrap(), old);
    browser.screenshot("05-secret").await;

    // The delivery log: every attempt, its request and response in full.
    // The chart counts what happened: evt_p1 and the kept evt_p2 delivered,
    // today, nothing in the six days before.
    let page = format!("{link}webhooks/{id}");
    let week = |today: (u64, u64)| [vec![(0, 0); 6], vec![today]].concat();
    assert_eq!(browser.chart(&page, 2).await, week((2, 0)), "the deliveries chart");
    browser.check_accessibility("webhook with its chart").await;
    browser.follow("Delivery log").await;
    let log = browser.client.current_url().await.unwrap().to_string();
    eventually(Duration::from_secs(10), "both attempts in the log", || async {
        browser.go(&log).await;
        (browser.client.find_all(Locator::Css("tbody tr")).await.ok()?.len() == 2).then_some(())
    })
    .await;
    browser.check_accessibility("delivery log").await;
    browser.screenshot("10-delivery-log").await;
    // The same deliveries by event: one line each, delivered at the first attempt.
    let events = format!("{link}webhooks/{id}/events");
    eventually(Duration::from_secs(10), "both events on the events page", || async {
        browser.go(&events).await;
        let mut rows = Vec::new();
        for row in browser.client.find_all(Locator::Css("tbody tr")).await.ok()? {
            rows.push(row.text().await.ok()?);
        }
        (rows.len() == 2
            && rows
                .iter()
                .all(|row| row.contains("Delivered") && row.contains("#1 succeeded (204)")))
        .then_some(())
    })
    .await;
    browser.check_accessibility("events and their deliveries").await;
    browser.screenshot("10b-events").await;
    browser.go(&log).await;
    browser.navigate(Locator::Css("tbody tr:last-child a")).await;
    let text = browser.text().await;
    assert!(
        text.contains("evt_p1") && text.contains("Status 204") && text.contains("webhook-signature"),
        "{text}"
    );
    browser.check_accessibility("attempt").await;
    browser.screenshot("11-attempt").await;
    browser.submit("form[action$='/retry'] button").await;
    assert!(browser.text().await.contains("being sent again"));
    let got = receiver.wait_for(3, Duration::from_secs(30)).await;
    assert_eq!(
        got[2].header("webhook-id"),
        got[0].header("webhook-id"),
        "the same delivery id"
    );
    browser
        .go(&format!("{link}webhooks/{id}/deliveries?status=failed"))
        .await;
    assert!(browser.text().await.contains("No attempts here"));
    browser.go(&format!("{link}webhooks/{id}/deliveries")).await;
    browser.follow("Follow new attempts live").await;
    assert!(browser.has("meta[http-equiv=refresh]").await, "the live tail reloads");

    // A test event: the catalog's example, and what the endpoint answered.
    browser.go(&format!("{link}webhooks/{id}")).await;
    browser.follow("Send a test event").await;
    browser.check_accessibility("test form").await;
    browser.submit("button[type=submit]").await;
    let text = browser.text().await;
    assert!(
        text.contains("Your endpoint accepted it") && text.contains("204"),
        "{text}"
    );
    browser.check_accessibility("test result").await;
    browser.screenshot("12-test").await;
    receiver.wait_for(4, Duration::from_secs(10)).await;

    // Failed deliveries: counted first, then sent again with their ids.
    receiver.set_behaviour(Behaviour::Status(500));
    let dead_before = end_offsets(&env.dlq, 1).await[0];
    publisher.json(env.topic(), &event(3)).await;
    eventually(Duration::from_secs(20), "the failed delivery to be kept", || async {
        (end_offsets(&env.dlq, 1).await[0] > dead_before).then_some(())
    })
    .await;
    receiver.set_behaviour(Behaviour::Status(204));
    let before = receiver.count();
    // evt_p1 sent again succeeded (a test event is not a delivery), evt_p3 failed.
    assert_eq!(browser.chart(&page, 4).await, week((3, 1)), "the chart with a failure");
    browser.follow("Send failed deliveries again").await;
    browser.check_accessibility("replay form").await;
    browser.submit("button[type=submit]").await;
    let counted = eventually(Duration::from_secs(30), "the count", || async {
        let text = browser.text().await;
        text.contains("can be sent again").then_some(text)
    })
    .await;
    assert!(counted.contains("1 failed delivery since"), "{counted}");
    browser.check_accessibility("replay count").await;
    browser.screenshot("13-replay-count").await;
    assert_eq!(receiver.count(), before, "counting sends nothing");
    browser.submit("button[type=submit]").await;
    eventually(Duration::from_secs(30), "the replay", || async {
        browser.text().await.contains("1 sent again").then_some(())
    })
    .await;
    let got = receiver.wait_for(before + 1, Duration::from_secs(30)).await;
    assert!(String::from_utf8_lossy(&got[before].body).contains("evt_p3"));
    assert_eq!(
        browser.chart(&page, 5).await,
        week((4, 1)),
        "the chart after the replay"
    );

    // Edit: a refused URL says what to fix; a name with markup stays text;
    // a header value left empty is kept.
    browser.go(&format!("{}webhooks/{id}/edit", link)).await;
    browser.fill("#url", "ftp://example.com/hook").await;
    browser.submit("button[type=submit]").await;
    let text = browser.text().await;
    assert!(
        text.contains("The webhook was not saved") && text.contains("Endpoint URL"),
        "{text}"
    );
    browser.check_accessibility("edit with an error").await;
    browser.screenshot("06-edit-error").await;
    browser.fill("#url", &receiver.url("/crm")).await;
    browser
        .fill("#name", "<script>window.injected = 1</script> Tours")
        .await;
    browser.submit("button[type=submit]").await;
    assert!(browser
        .text()
        .await
        .contains("<script>window.injected = 1</script> Tours"));
    assert_eq!(
        browser
            .client
            .execute("return window.injected === undefined", vec![])
            .await
            .unwrap(),
        json!(true),
        "markup in a name is shown, not run"
    );
    assert_eq!(
        stored_headers().await,
        [("X-Api-Key".to_owned(), "k-7f3e9a1c".to_owned())].into(),
        "the empty value kept the header"
    );

    // A payload filter: one the API refuses is shown again with what is
    // wrong next to its field; a good one is stored and shown.
    browser.go(&format!("{link}webhooks/{id}/edit")).await;
    browser.fill("#filter", r#"{"/amount": {">": true}}"#).await;
    browser.submit("button[type=submit]").await;
    let next_to_it = browser
        .client
        .find(Locator::Css("#field-filter #filter-error"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(next_to_it, "filter./amount.>: expects a number or a string");
    let text = browser.text().await;
    assert!(text.contains("Payload filter /amount.>: expects a number"), "{text}");
    browser.check_accessibility("edit with a refused filter").await;
    browser.screenshot("06b-filter-error").await;
    browser
        .fill("#filter", r#"{"/data/plan": {"in": ["pro", "team"]}}"#)
        .await;
    browser.submit("button[type=submit]").await;
    let text = browser.text().await;
    assert!(text.contains("Changes saved") && text.contains("/data/plan"), "{text}");
    assert_eq!(
        api.ok(Method::GET, &format!("/v1/webhooks/{id}"), OPS, None).await["filter"],
        json!({"/data/plan": {"in": ["pro", "team"]}})
    );
    browser.check_accessibility("webhook with a filter").await;

    // A rate limit: one out of bounds is shown again with what is wrong
    // next to it; a good one is stored with the webhook's other limits kept.
    api.ok(
        Method::PATCH,
        &format!("/v1/webhooks/{id}"),
        OPS,
        Some(json!({"limits": {"max_in_flight": 3}})),
    )
    .await;
    browser.go(&format!("{link}webhooks/{id}/edit")).await;
    browser.fill("#rate", "0").await;
    browser.submit("button[type=submit]").await;
    let next_to_it = browser
        .client
        .find(Locator::Css("#field-limits #rate-error"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(next_to_it.contains("`per_second` must be from"), "{next_to_it}");
    browser.check_accessibility("edit with a refused rate").await;
    browser.screenshot("06c-rate-error").await;
    browser.fill("#rate", "2.5").await;
    browser.fill("#burst", "4").await;
    browser.submit("button[type=submit]").await;
    let text = browser.text().await;
    assert!(
        text.contains("Changes saved") && text.contains("At most 2.5 requests a second, 4 at once"),
        "{text}"
    );
    assert_eq!(
        api.ok(Method::GET, &format!("/v1/webhooks/{id}"), OPS, None).await["limits"],
        json!({"max_in_flight": 3, "rate": {"per_second": 2.5, "burst": 4}})
    );
    browser.screenshot("06d-rate-limit").await;

    // Ordering by a value in the body: a pointer that is not one is shown
    // again with what is wrong next to it; a good one is stored.
    browser.go(&format!("{link}webhooks/{id}/edit")).await;
    browser.click("#ordering option[value=pointer]").await;
    browser.fill("#ordering-pointer", "data/customer").await;
    browser.submit("button[type=submit]").await;
    let next_to_it = browser
        .client
        .find(Locator::Css("#field-ordering #ordering-error"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(next_to_it.contains("JSON pointer"), "{next_to_it}");
    browser.check_accessibility("edit with a refused ordering").await;
    browser
        .client
        .execute("document.querySelector('#field-ordering').scrollIntoView()", vec![])
        .await
        .unwrap();
    browser.screenshot("06e-ordering-error").await;
    browser.click("#ordering option[value=pointer]").await;
    browser.fill("#ordering-pointer", "/data/customer").await;
    browser.submit("button[type=submit]").await;
    let text = browser.text().await;
    assert!(
        text.contains("Changes saved") && text.contains("Events with the same value at /data/customer"),
        "{text}"
    );
    let stored = api.ok(Method::GET, &format!("/v1/webhooks/{id}"), OPS, None).await;
    assert_eq!(stored["ordering"], json!({"key": "/data/customer"}), "{stored}");
    assert_eq!(
        stored["limits"],
        json!({"max_in_flight": 3, "rate": {"per_second": 2.5, "burst": 4}}),
        "the other limits are kept"
    );
    browser
        .client
        .execute("document.querySelector('#ordering-heading').scrollIntoView()", vec![])
        .await
        .unwrap();
    browser.screenshot("06f-ordering").await;

    // At phone width the list still reads (a card per webhook).
    browser.client.set_window_size(390, 844).await.unwrap();
    browser.go(&link).await;
    browser.check_accessibility("list at phone width").await;
    browser.screenshot("07-list-phone").await;
    browser.client.set_window_size(1280, 1000).await.unwrap();

    // Delete, after confirmation.
    browser.go(&format!("{}webhooks/{id}", link)).await;
    browser.follow("Delete this webhook").await;
    browser.check_accessibility("delete confirmation").await;
    browser.submit("button.danger").await;
    let text = browser.text().await;
    assert!(
        text.contains("Webhook deleted") && text.contains("No webhooks yet"),
        "{text}"
    );
    assert_eq!(
        api.call(Method::GET, &format!("/v1/webhooks/{id}"), OPS, None)
            .await
            .status,
        404
    );
    browser.client.close().await.unwrap();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_sees_only_its_tenant_and_a_read_only_one_changes_nothing() {
    let env = TestEnv::new("portal-limits", &["events"], 1).await;
    let served = ApiOnly::start(&env, &portal_overlay()).await;
    let api = &served.api;
    let hook = |id: &str, tenant: &str| json!({"id": id, "tenant": tenant, "name": id, "url": "https://example.com/h", "events": ["*"]});
    api.ok(Method::POST, "/v1/webhooks", OPS, Some(hook("acme-1", "acme")))
        .await;
    api.ok(Method::POST, "/v1/webhooks", OPS, Some(hook("acme-2", "acme")))
        .await;
    api.ok(Method::POST, "/v1/webhooks", OPS, Some(hook("globex-1", "globex")))
        .await;
    let http = no_redirects();
    let browser = Browser::start().await;

    // A long list comes a page at a time.
    for n in 0..26 {
        api.ok(
            Method::POST,
            "/v1/webhooks",
            OPS,
            Some(hook(&format!("many-{n:02}"), "many")),
        )
        .await;
    }
    let (many, _) = session(api, OPS, "many", json!({"capability": "read_only"})).await;
    browser.go(&many).await;
    assert_eq!(
        browser.client.find_all(Locator::Css("tbody tr")).await.unwrap().len(),
        25
    );
    assert!(!browser.text().await.contains("many-25"));
    browser.follow("Next page").await;
    assert_eq!(
        browser.client.find_all(Locator::Css("tbody tr")).await.unwrap().len(),
        1
    );
    assert!(browser.text().await.contains("many-25"));
    browser.follow("First page").await;
    assert!(browser.text().await.contains("many-00"));

    // Read only: sees, but has no form and every change is refused.
    let (read_only, _) = session(api, ACME, "acme", json!({"capability": "read_only"})).await;
    browser.go(&read_only).await;
    let text = browser.text().await;
    assert!(
        text.contains("acme-1") && text.contains("acme-2") && text.contains("Read only"),
        "{text}"
    );
    assert!(!text.contains("globex-1"), "another tenant's webhook is not listed");
    assert!(!browser.has("a.button").await, "no New webhook");
    browser.check_accessibility("read-only list").await;
    browser.screenshot("08-read-only").await;
    browser.go(&format!("{read_only}webhooks/acme-1")).await;
    assert!(!browser.has("form").await && !browser.text().await.contains("Manage"));
    browser.go(&format!("{read_only}webhooks/new")).await;
    assert!(browser.text().await.contains("This link lets you look"));
    let pause = http
        .post(format!("{read_only}webhooks/acme-1/pause"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("csrf=guess")
        .send()
        .await
        .unwrap();
    assert_eq!(pause.status(), 403);
    assert_eq!(
        api.ok(Method::GET, "/v1/webhooks/acme-1", OPS, None).await["status"],
        "active"
    );

    // A manage session: another tenant's webhook is not found, by page or form.
    let (manage, _) = session(api, OPS, "acme", json!({})).await;
    let page = http.get(format!("{manage}webhooks/globex-1")).send().await.unwrap();
    assert_eq!(page.status(), 404);
    let nowhere = http.get(format!("{manage}no/such/page")).send().await.unwrap();
    assert_eq!(nowhere.status(), 404);
    assert!(nowhere.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(nowhere.text().await.unwrap().contains("There is no such page"));
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_owned();
    assert!(csp.ends_with("frame-ancestors https://app.acme.example"), "{csp}");
    let csrf = csrf_of(&page_text(&http, format!("{manage}webhooks/acme-1")).await);
    let foreign = http
        .post(format!("{manage}webhooks/globex-1/pause"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 404);
    assert_eq!(
        api.ok(Method::GET, "/v1/webhooks/globex-1", OPS, None).await["status"],
        "active"
    );
    let forged = http
        .post(format!("{manage}webhooks/acme-1/pause"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("csrf=0000")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403, "a form without the session's token is refused");
    let paused = http
        .post(format!("{manage}webhooks/acme-1/pause"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status(), 303);
    let stored = api.ok(Method::GET, "/v1/webhooks/acme-1", OPS, None).await;
    assert_eq!(stored["status_reason"], "paused by `ops (portal)`");

    // A session for one webhook sees only that one, and cannot delete it.
    let (one, _) = session(api, ACME, "acme", json!({"webhook": "acme-2"})).await;
    browser.go(&one).await;
    let text = browser.text().await;
    assert!(text.contains("acme-2") && !text.contains("acme-1"), "{text}");
    assert_eq!(
        http.get(format!("{one}webhooks/acme-1")).send().await.unwrap().status(),
        404
    );
    assert_eq!(
        http.get(format!("{one}webhooks/acme-2/delete"))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );

    // Operators: every tenant's webhooks, and a webhook made for any tenant.
    api.ok(Method::PUT, "/v1/tenants/initech", OPS, Some(json!({}))).await;
    let operators = api.ok(Method::POST, "/v1/portal-sessions", OPS, Some(json!({}))).await;
    assert_eq!(operators["tenant"], Value::Null);
    let everything = format!("{}{}", api.base, operators["url"].as_str().unwrap());
    browser.go(&everything).await;
    let text = browser.text().await;
    assert!(
        text.contains("acme-1") && text.contains("globex-1") && text.contains("Operator"),
        "{text}"
    );
    browser.check_accessibility("operators' list").await;
    browser.screenshot("14-operators").await;
    browser.follow("New webhook").await;
    // The tenants it knows are offered (configured ones and those made
    // through the API); any other name may still be typed.
    let offered: Vec<String> = browser
        .client
        .execute(
            "return [...document.querySelectorAll('#known-tenants option')].map(o => o.value)",
            vec![],
        )
        .await
        .map(|v| serde_json::from_value(v).unwrap())
        .unwrap();
    assert_eq!(offered, ["acme", "initech", "jamco"]);
    browser.fill("#tenant", "globex").await;
    browser.fill("#name", "Globex billing").await;
    browser.fill("#url", "https://example.com/billing").await;
    browser.fill("#events-text", "invoice.*").await;
    browser.submit("button[type=submit]").await;
    assert!(browser.text().await.contains("Webhook created"));
    let listed = api.ok(Method::GET, "/v1/webhooks?tenant=globex", OPS, None).await;
    let made = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "Globex billing")
        .cloned();
    assert_eq!(made.map(|w| w["events"].clone()), Some(json!(["invoice.*"])));
    let refused = api
        .call(Method::POST, "/v1/portal-sessions", ACME, Some(json!({})))
        .await;
    assert_problem(&refused, 403, None);
    let path = format!("/v1/portal-sessions/{}", operators["id"].as_str().unwrap());
    assert_problem(&api.call(Method::DELETE, &path, ACME, None).await, 404, None);
    assert_eq!(api.call(Method::DELETE, &path, OPS, None).await.status, 204);
    assert_eq!(http.get(&everything).send().await.unwrap().status(), 401);

    // Connectors: offered to the tenants of their catalog, the form filled in.
    browser.go(&read_only).await;
    let (acme_manage, _) = session(api, ACME, "acme", json!({})).await;
    browser.go(&acme_manage).await;
    assert!(
        !browser.text().await.contains("Intercom Fin"),
        "not offered to a jimo tenant"
    );
    let (jam, _) = session(api, OPS, "jamco", json!({})).await;
    browser.go(&jam).await;
    browser.follow("Intercom Fin").await;
    let text = browser.text().await;
    assert!(
        text.contains("New webhook: Intercom Fin") && text.contains("Paste the URL you copied from Intercom"),
        "{text}"
    );
    assert!(browser.has("#event-intercom-recorder-recorded:checked").await);
    assert!(browser.has("#event-intercom-recorder-opted_out:checked").await);
    browser.check_accessibility("connector form").await;
    browser.screenshot("15-connector").await;
    browser.fill("#url", "https://api.intercom.example/fin/hooks/k1").await;
    browser.submit("button[type=submit]").await;
    assert!(browser.text().await.contains("Webhook created"));
    let jam_hooks = api.ok(Method::GET, "/v1/webhooks?tenant=jamco", OPS, None).await;
    assert_eq!(
        jam_hooks["data"][0]["events"],
        json!(["intercom.recorder.recorded", "intercom.recorder.opted_out"])
    );
    assert_eq!(jam_hooks["data"][0]["name"], "Intercom Fin");
    let all = api.ok(Method::GET, "/v1/connectors", OPS, None).await;
    assert_eq!(all["data"][0]["name"], "intercom-fin");
    assert_eq!(
        api.ok(Method::GET, "/v1/connectors", ACME, None).await["data"],
        json!([])
    );
    assert_problem(
        &api.call(Method::GET, "/v1/connectors/intercom-fin", ACME, None).await,
        404,
        None,
    );

    // Refused sessions: another tenant's token, a webhook of another tenant.
    let other = api
        .call(
            Method::POST,
            "/v1/tenants/acme/portal-sessions",
            GLOBEX,
            Some(json!({})),
        )
        .await;
    assert_problem(&other, 404, None);
    let wrong = api
        .call(
            Method::POST,
            "/v1/tenants/acme/portal-sessions",
            OPS,
            Some(json!({"webhook": "globex-1"})),
        )
        .await;
    assert_problem(&wrong, 422, Some("webhook"));

    // Revoked, and expired, links stop working.
    let (revoked, created) = session(api, ACME, "acme", json!({})).await;
    assert_eq!(http.get(&revoked).send().await.unwrap().status(), 200);
    let path = format!("/v1/portal-sessions/{}", created["id"].as_str().unwrap());
    assert_problem(&api.call(Method::DELETE, &path, GLOBEX, None).await, 404, None);
    assert_eq!(api.call(Method::DELETE, &path, ACME, None).await.status, 204);
    let gone = http.get(&revoked).send().await.unwrap();
    assert_eq!(gone.status(), 401);
    assert!(gone.text().await.unwrap().contains("no longer works"));
    let (short, _) = session(api, ACME, "acme", json!({"ttl_seconds": 1})).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(http.get(&short).send().await.unwrap().status(), 401);
    browser.go(&short).await;
    browser.check_accessibility("expired link").await;
    browser.screenshot("09-expired").await;
    browser.client.close().await.unwrap();
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_signed_again_with_claims_of_its_own_opens_nothing() {
    use herald::admin::portal_sessions::{sign, verify, Capability, Claims};
    let env = TestEnv::new("portal-forged", &["events"], 1).await;
    let served = ApiOnly::start(&env, &portal_overlay()).await;
    let api = &served.api;
    let hook = json!({"id": "globex-1", "tenant": "globex", "name": "Globex", "url": "https://example.com/g", "events": ["*"]});
    api.ok(Method::POST, "/v1/webhooks", OPS, Some(hook)).await;
    let (link, _) = session(api, ACME, "acme", json!({"capability": "read_only"})).await;
    let http = reqwest::Client::new();
    assert_eq!(http.get(&link).send().await.unwrap().status(), 200, "as issued");

    // acme holds its own read-only link; suppose it also has the key (a
    // weak one found offline, or one leaked): it signs claims of its own.
    let token = link.split("/portal/s/").nth(1).unwrap().trim_end_matches('/');
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let issued = verify(SIGNING_KEY.as_bytes(), token, now).unwrap();
    let forgeries = [
        Claims {
            cap: Capability::Manage,
            ..issued.clone()
        },
        Claims {
            ten: None,
            cap: Capability::Manage,
            by: "ops".into(),
            ..issued.clone()
        },
        Claims {
            ten: Some("globex".into()),
            ..issued.clone()
        },
        Claims {
            wh: Some("globex-1".into()),
            ..issued.clone()
        },
        Claims {
            exp: issued.exp + 86_400,
            ..issued.clone()
        },
    ];
    let base = link.split("/portal/s/").next().unwrap().to_owned();
    for forged in &forgeries {
        let url = format!("{base}/portal/s/{}/", sign(SIGNING_KEY.as_bytes(), forged));
        let page = http.get(&url).send().await.unwrap();
        let page_status = page.status();
        assert_eq!(page_status, 401, "{forged:?}");
        let secret = http
            .get(format!(
                "{base}/portal/s/{}/webhooks/globex-1/secret",
                sign(SIGNING_KEY.as_bytes(), forged)
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(secret.status(), 401, "{forged:?}");
    }
    assert_eq!(
        http.get(&link).send().await.unwrap().status(),
        200,
        "the real one still works"
    );
    served.stop().await;
}

/// A URL's path and query are often its credential (Slack's, Discord's):
/// a read-only session sees only its scheme, host and port on every page
/// that names the endpoint, the delivery log included, while a session that
/// manages the webhook still edits the URL whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_session_sees_a_webhook_url_without_its_path_or_query() {
    let env = TestEnv::new("portal-url", &["events"], 1).await;
    let app = env.spawn(&portal_overlay()).await;
    let api = Api::new(&app);
    let receiver = TestReceiver::ok().await;
    let secret_url = receiver.url("/services/T0/B0/SLACKSECRET?token=QSECRET");
    let origin = receiver.url("/");
    let shown = format!("{}/…", origin.trim_end_matches('/'));
    let hook = json!({"id": "slack", "tenant": "acme", "name": "Slack", "url": secret_url, "events": ["tour.*"]});
    api.ok(Method::POST, "/v1/webhooks", OPS, Some(hook)).await;
    app.wait_webhooks(1).await;
    Publisher::new()
        .json(
            env.topic(),
            r#"{"event":"tour.completed","version":"0","time":1,"id":"evt_url1","tenant":"acme"}"#,
        )
        .await;
    receiver.wait_for(1, Duration::from_secs(20)).await;
    let attempt = eventually(Duration::from_secs(20), "the attempt in the history", || async {
        let page = api.ok(Method::GET, "/v1/webhooks/slack/deliveries", ACME, None).await;
        page["data"][0]["id"].as_str().map(str::to_owned)
    })
    .await;

    let http = reqwest::Client::new();
    let page = |url: String| {
        let http = &http;
        async move {
            let reply = http.get(&url).send().await.unwrap();
            (reply.status().as_u16(), reply.text().await.unwrap())
        }
    };
    let read_only = [
        session(&api, ACME, "acme", json!({"capability": "read_only"})).await.0,
        session(
            &api,
            ACME,
            "acme",
            json!({"capability": "read_only", "webhook": "slack"}),
        )
        .await
        .0,
        {
            let created = api
                .ok(
                    Method::POST,
                    "/v1/portal-sessions",
                    OPS,
                    Some(json!({"capability": "read_only"})),
                )
                .await;
            format!("{}{}", api.base, created["url"].as_str().unwrap())
        },
    ];
    for link in &read_only {
        // (The delivery log's list names no URL; an attempt names the one it was sent to.)
        for (rest, names_it) in [
            (String::new(), true),
            ("webhooks/slack".to_owned(), true),
            ("webhooks/slack/deliveries".to_owned(), false),
            (format!("webhooks/slack/deliveries/{attempt}"), true),
        ] {
            let (status, body) = page(format!("{link}{rest}")).await;
            assert_eq!(status, 200, "{rest}: {body}");
            for secret in ["SLACKSECRET", "QSECRET", "/services/"] {
                assert!(!body.contains(secret), "{rest} shows `{secret}` to a read-only session");
            }
            assert_eq!(
                body.contains(&shown),
                names_it,
                "{rest} names the endpoint by its origin: {body}"
            );
        }
        for rest in ["webhooks/slack/edit", "webhooks/slack/delete", "webhooks/slack/secret"] {
            let (status, body) = page(format!("{link}{rest}")).await;
            assert_eq!(status, 403, "{rest}");
            assert!(!body.contains("SLACKSECRET"), "{rest}");
        }
    }

    // A session that manages the webhook edits its URL, so sees it whole.
    let (manage, _) = session(&api, ACME, "acme", json!({})).await;
    let (status, edit) = page(format!("{manage}webhooks/slack/edit")).await;
    assert_eq!(status, 200);
    assert!(edit.contains("SLACKSECRET?token=QSECRET"), "{edit}");
    let (_, detail) = page(format!("{manage}webhooks/slack")).await;
    assert!(detail.contains("SLACKSECRET"), "{detail}");
    app.stop().await;
}

/// A tenant holds at most `portal.max_sessions_per_tenant` live sessions,
/// whichever tokens made them; beyond, 429 says how to end one and when the
/// next expires, and no live link is ended to make room. Other tenants and
/// the operators count on their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_sessions_are_capped_per_tenant() {
    use redis::AsyncCommands;
    let env = TestEnv::new("portal-cap", &["events"], 1).await;
    let overlay = portal_overlay().replace("[portal]\n", "[portal]\nmax_sessions_per_tenant = 3\n");
    let served = ApiOnly::start(&env, &overlay).await;
    let api = &served.api;
    let ask = |token: &'static str, path: &'static str, body: Value| async move {
        api.call(Method::POST, path, token, Some(body)).await
    };
    let acme = "/v1/tenants/acme/portal-sessions";
    let first = ask(ACME, acme, json!({"ttl_seconds": 2})).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let mut links = Vec::new();
    for _ in 0..2 {
        let made = ask(ACME, acme, json!({})).await;
        assert_eq!(made.status, 201, "{}", made.body);
        links.push((
            made.body["id"].as_str().unwrap().to_owned(),
            format!("{}{}", api.base, made.body["url"].as_str().unwrap()),
        ));
    }

    // Full: refused, whichever token asks, with what to do and when.
    for token in [ACME, OPS] {
        let refused = ask(token, acme, json!({})).await;
        assert_problem(&refused, 429, None);
        let detail = refused.body["detail"].as_str().unwrap();
        assert!(
            detail.contains("portal.max_sessions_per_tenant") && detail.contains("DELETE /v1/portal-sessions/"),
            "{detail}"
        );
        let retry_after: u64 = refused.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(
            (1..=3).contains(&retry_after),
            "the first session ends first: {retry_after}"
        );
    }
    let mut conn = env.redis().await;
    let keys: Vec<String> = conn.keys(format!("{}portal:session:*", env.prefix)).await.unwrap();
    assert_eq!(keys.len(), 3, "refused requests leave no key: {keys:?}");
    for (_, link) in &links {
        assert_eq!(reqwest::get(link).await.unwrap().status(), 200, "no live link is ended");
    }

    // Another tenant, and the operators, count on their own.
    assert_eq!(
        ask(GLOBEX, "/v1/tenants/globex/portal-sessions", json!({}))
            .await
            .status,
        201
    );
    assert_eq!(ask(OPS, "/v1/portal-sessions", json!({})).await.status, 201);

    // A session revoked, or expired, makes room.
    let (revoked, _) = &links[0];
    let gone = api
        .call(Method::DELETE, &format!("/v1/portal-sessions/{revoked}"), ACME, None)
        .await;
    assert_eq!(gone.status, 204);
    assert_eq!(
        ask(ACME, acme, json!({})).await.status,
        201,
        "in the revoked one's place"
    );
    assert_problem(&ask(ACME, acme, json!({})).await, 429, None);
    eventually(Duration::from_secs(20), "the expired session's place", || async {
        (ask(ACME, acme, json!({})).await.status == 201).then_some(())
    })
    .await;
    served.stop().await;
}

/// A webhook an operator paused is resumed by no tenant's portal session:
/// its page says so instead of offering the form, and a posted resume is
/// refused and changes nothing (pages read over HTTP, no browser).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_portal_cannot_resume_what_an_operator_paused() {
    let env = TestEnv::new("portal-status-by", &["events"], 1).await;
    let app = env.spawn(&portal_overlay()).await;
    let api = Api::new(&app);
    let hook =
        json!({"id": "held", "tenant": "acme", "name": "Held", "url": "http://127.0.0.1:9/", "events": ["tour.*"]});
    api.ok(Method::POST, "/v1/webhooks", OPS, Some(hook)).await;
    api.ok(Method::POST, "/v1/webhooks/held/pause", OPS, None).await;
    let (link, _) = session(&api, ACME, "acme", json!({"capability": "manage"})).await;
    let http = no_redirects();
    let page = page_text(&http, format!("{link}webhooks/held")).await;
    assert!(page.contains("only they can resume it"), "{page}");
    assert!(!page.contains("/resume\""), "no resume form: {page}");
    let csrf = csrf_of(&page_text(&http, format!("{link}webhooks/held/edit")).await);
    let resumed = post_form(
        &http,
        format!("{link}webhooks/held/resume"),
        format!("csrf={csrf}&replay=yes"),
    )
    .await;
    assert_eq!(resumed, 403);
    let stored = api.ok(Method::GET, "/v1/webhooks/held", OPS, None).await;
    assert_eq!(
        (&stored["status"], &stored["status_by"]),
        (&json!("paused"), &json!("operator"))
    );

    // The operators' own portal resumes it.
    let created = api
        .ok(
            Method::POST,
            "/v1/portal-sessions",
            OPS,
            Some(json!({"capability": "manage"})),
        )
        .await;
    let ops_link = format!("{}{}", api.base, created["url"].as_str().unwrap());
    let ops_page = page_text(&http, format!("{ops_link}webhooks/held")).await;
    assert!(ops_page.contains("/resume\""), "{ops_page}");

    // What the tenant paused, the same form and token resume.
    api.ok(Method::POST, "/v1/webhooks/held/resume", OPS, None).await;
    api.ok(Method::POST, "/v1/webhooks/held/pause", ACME, None).await;
    let resumed = post_form(
        &http,
        format!("{link}webhooks/held/resume"),
        format!("csrf={csrf}&replay=yes"),
    )
    .await;
    assert_eq!(resumed, 303);
    let stored = api.ok(Method::GET, "/v1/webhooks/held", OPS, None).await;
    assert_eq!(stored["status"], "active");
    app.stop().await;
}

/// The replay page offers the deliveries waiting in the retry tiers: a
/// count first, then a button that sends them now (pages read over HTTP).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_portal_sends_deliveries_waiting_to_be_retried_now() {
    let env = TestEnv::new("portal-retry-pending", &["events"], 1)
        .await
        .with_tiers(&[Tier::after_ms(3_600_000)])
        .await;
    let receiver = TestReceiver::start(Behaviour::Status(500)).await;
    let app = env.spawn(&(portal_overlay() + crate::retry_pending::FAST)).await;
    let api = Api::new(&app);
    let hook = json!({"id": "w", "tenant": "acme", "name": "Waiting", "url": receiver.url("/"), "events": ["tour.*"]});
    api.ok(Method::POST, "/v1/webhooks", OPS, Some(hook)).await;
    let publisher = Publisher::new();
    for n in 0..2 {
        let event = format!(r#"{{"event":"tour.completed","version":"0","time":1,"id":"evt_{n}","tenant":"acme"}}"#);
        publisher.json(env.topic(), &event).await;
    }
    receiver.wait_for(2, Duration::from_secs(20)).await;
    let tier = env.tiers[0].0.clone();
    eventually(Duration::from_secs(20), "the failures to wait in the tier", || async {
        (end_offsets(&tier, 1).await[0] == 2).then_some(())
    })
    .await;
    receiver.set_behaviour(Behaviour::Status(204));

    let (link, _) = session(&api, ACME, "acme", json!({"capability": "manage"})).await;
    let http = no_redirects();
    let page = page_text(&http, format!("{link}webhooks/w/replay")).await;
    assert!(page.contains("/retry-pending\""), "{page}");
    let csrf = csrf_of(&page);
    let start = |body: String| {
        let http = http.clone();
        let url = format!("{link}webhooks/w/retry-pending");
        let base = api.base.clone();
        async move {
            let reply = submit_form(&http, url, body).await;
            assert_eq!(reply.status(), 303);
            let to = reply.headers()["location"].to_str().unwrap().to_owned();
            format!("{base}{to}")
        }
    };
    let wait_page = |url: String, text: &'static str| {
        let http = http.clone();
        async move {
            eventually(Duration::from_secs(60), text, || async {
                let page = page_text(&http, url.clone()).await;
                page.contains(text).then_some(page)
            })
            .await
        }
    };
    let counted = start(format!("csrf={csrf}")).await;
    wait_page(counted, "2 deliveries waiting to be retried can be sent now").await;
    let sent = start(format!("csrf={csrf}&send=yes")).await;
    wait_page(sent, "Done: 2 sent now").await;
    receiver.wait_for(4, Duration::from_secs(20)).await;
    app.stop().await;
}

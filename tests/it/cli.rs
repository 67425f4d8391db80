//! The `herald` command line against a running management API: the
//! commands' JSON bodies, pagination, merged limits, replay following and
//! error reporting, run as the binary an operator runs.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::api::*;
use crate::helpers::*;

/// The `herald` binary, pointed at one API and one configuration.
pub struct Herald {
    api: String,
    token: Option<&'static str>,
    config: tempfile::NamedTempFile,
}

/// What one command did.
pub struct Ran {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn json(&self) -> Value {
        assert!(self.ok, "the command failed: {}", self.stderr);
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

impl Herald {
    pub fn new(env: &TestEnv, app: &RunningApp, token: Option<&'static str>) -> Herald {
        let mut config = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut config, env.config_toml().as_bytes()).unwrap();
        Herald {
            api: Api::new(app).base,
            token,
            config,
        }
    }

    pub async fn run(&self, args: &[&str]) -> Ran {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"));
        command
            .arg("--config")
            .arg(self.config.path())
            .args(args)
            .env("HERALD_API_URL", &self.api)
            .env("RUST_LOG", "warn")
            .env_remove("HERALD_API_TOKEN");
        if let Some(token) = self.token {
            command.env("HERALD_API_TOKEN", token);
        }
        let output = tokio::time::timeout(Duration::from_secs(60), command.output())
            .await
            .expect("the command ends")
            .unwrap();
        Ran {
            ok: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Runs a command that must succeed.
    pub async fn ok(&self, args: &[&str]) -> Ran {
        let ran = self.run(args).await;
        assert!(ran.ok, "herald {}: {}", args.join(" "), ran.stderr);
        ran
    }

    /// Runs a command that must fail; its error output.
    pub async fn fails(&self, args: &[&str]) -> String {
        let ran = self.run(args).await;
        assert!(!ran.ok, "herald {} succeeded: {}", args.join(" "), ran.stdout);
        ran.stderr
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_created_listed_changed_and_deleted_from_the_command_line() {
    let env = TestEnv::new("cli-webhooks", &["events"], 1).await;
    let app = env.spawn(&admin_overlay("24h")).await;
    let herald = Herald::new(&env, &app, Some(OPS));

    // A create body from a file, with flags over its fields.
    let mut body = tempfile::NamedTempFile::new().unwrap();
    let file = json!({"name": "from the file", "url": "https://example.com/a", "events": ["tour.*"], "headers": {"X-Team": "growth"}});
    std::io::Write::write_all(&mut body, file.to_string().as_bytes()).unwrap();
    let path = body.path().to_str().unwrap();
    let created = herald
        .ok(&[
            "webhooks", "create", "--file", path, "--id", "w1", "--name", "first", "--json",
        ])
        .await
        .json();
    assert_eq!(
        (
            &created["id"],
            &created["name"],
            &created["events"],
            &created["headers"]
        ),
        (
            &json!("w1"),
            &json!("first"),
            &json!(["tour.*"]),
            &json!({"X-Team": null})
        ),
        "the file's fields, the flags over them (header values are write-only): {created}"
    );
    for (id, event) in [("w2", "a"), ("w3", "b")] {
        let table = herald
            .ok(&[
                "webhooks",
                "create",
                "--id",
                id,
                "--name",
                id,
                "--url",
                "https://example.com/b",
                "--event",
                event,
                "--header",
                "X-Key=k1",
            ])
            .await;
        assert!(
            table.stdout.contains(id) && table.stdout.contains("X-Key (value hidden)") && !table.stdout.contains("k1"),
            "{}",
            table.stdout
        );
    }

    // Every page with --all; one page and a hint without.
    let all = herald
        .ok(&["webhooks", "list", "--all", "--limit", "1", "--json"])
        .await
        .json();
    let mut ids: Vec<&str> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["w1", "w2", "w3"], "{all}");
    assert_eq!(all["next_cursor"], Value::Null);
    let one_page = herald.ok(&["webhooks", "list", "--limit", "1"]).await;
    let rows = ["w1", "w2", "w3"]
        .iter()
        .filter(|id| one_page.stdout.contains(*id))
        .count();
    assert_eq!(rows, 1, "{}", one_page.stdout);
    assert!(one_page.stderr.contains("more: --all"), "{}", one_page.stderr);

    // A change sends only what was asked for.
    let updated = herald
        .ok(&[
            "webhooks", "update", "w2", "--name", "renamed", "--event", "c", "--event", "d.*", "--json",
        ])
        .await
        .json();
    assert_eq!(
        (&updated["name"], &updated["events"]),
        (&json!("renamed"), &json!(["c", "d.*"]))
    );
    assert_eq!(updated["url"], "https://example.com/b", "unchanged");
    // A header named without a value keeps its value; one given is set; one
    // not named is removed.
    herald
        .ok(&["webhooks", "update", "w2", "--header", "X-Key", "--header", "X-New=n1"])
        .await;
    let stored = env.store().await.get("w2").await.unwrap().unwrap();
    assert_eq!(
        stored.headers,
        [
            ("X-Key".to_owned(), "k1".to_owned()),
            ("X-New".to_owned(), "n1".to_owned())
        ]
        .into(),
    );
    herald.ok(&["webhooks", "update", "w2", "--header", "X-New"]).await;
    let stored = env.store().await.get("w2").await.unwrap().unwrap();
    assert_eq!(stored.headers, [("X-New".to_owned(), "n1".to_owned())].into());
    // A payload filter: set, shown in the table, refused naming where it is
    // wrong, removed with `none`.
    let filter = r#"{"/data/plan": {"in": ["pro", "team"]}, "/amount": {">": 100}}"#;
    let table = herald
        .ok(&["webhooks", "update", "w2", "--filter", filter])
        .await
        .stdout;
    assert!(table.contains("filter") && table.contains("/data/plan"), "{table}");
    let stored = env.store().await.get("w2").await.unwrap().unwrap();
    assert_eq!(
        serde_json::to_value(&stored.filter).unwrap(),
        serde_json::from_str::<serde_json::Value>(filter).unwrap()
    );
    let refused = herald
        .fails(&["webhooks", "update", "w2", "--filter", r#"{"/amount": {">": true}}"#])
        .await;
    assert!(refused.contains("filter./amount.>"), "{refused}");
    let refused = herald.fails(&["webhooks", "update", "w2", "--filter", "[1]"]).await;
    assert!(refused.contains("a filter is a JSON object"), "{refused}");
    herald.ok(&["webhooks", "update", "w2", "--filter", "none"]).await;
    assert_eq!(env.store().await.get("w2").await.unwrap().unwrap().filter, None);
    // A rate limit: set with its burst, refused out of bounds naming it,
    // removed with `none`.
    herald
        .ok(&["webhooks", "update", "w2", "--rate", "0.5", "--burst", "3"])
        .await;
    let stored = env.store().await.get("w2").await.unwrap().unwrap();
    assert_eq!(
        stored.limits.rate.map(|r| (r.per_second, r.burst)),
        Some((0.5, Some(3)))
    );
    let refused = herald.fails(&["webhooks", "update", "w2", "--rate", "200000"]).await;
    assert!(refused.contains("422") && refused.contains("`rate`"), "{refused}");
    let refused = herald.fails(&["webhooks", "update", "w2", "--burst", "3"]).await;
    assert!(refused.contains("--rate"), "--burst goes with --rate: {refused}");
    herald.ok(&["webhooks", "update", "w2", "--rate", "none"]).await;
    assert_eq!(env.store().await.get("w2").await.unwrap().unwrap().limits.rate, None);
    // Ordering: by the record key, then by a value in the body (shown in
    // the table), a pointer that is not one refused by the API, removed
    // with `none`.
    herald.ok(&["webhooks", "update", "w2", "--ordering", "key"]).await;
    let stored = env.store().await.get("w2").await.unwrap().unwrap();
    assert_eq!(stored.ordering, Some(herald::routing::ordering::Ordering::RecordKey));
    let table = herald
        .ok(&["webhooks", "update", "w2", "--ordering", "/data/customer"])
        .await
        .stdout;
    assert!(
        table.contains("ordering") && table.contains("/data/customer"),
        "{table}"
    );
    let stored = env.store().await.get("w2").await.unwrap().unwrap();
    assert_eq!(
        serde_json::to_value(&stored.ordering).unwrap(),
        serde_json::json!({"key": "/data/customer"})
    );
    let refused = herald.fails(&["webhooks", "update", "w2", "--ordering", "/a~2"]).await;
    assert!(refused.contains("422") && refused.contains("ordering"), "{refused}");
    herald.ok(&["webhooks", "update", "w2", "--ordering", "none"]).await;
    assert_eq!(env.store().await.get("w2").await.unwrap().unwrap().ordering, None);
    let nothing = herald.fails(&["webhooks", "update", "w2"]).await;
    assert!(nothing.contains("nothing to change"), "{nothing}");

    // Secrets: shown, rotated with the old one listed until the overlap ends.
    let secret = herald.ok(&["webhooks", "secret", "w1", "--json"]).await.json();
    let old = secret["secret"].as_str().unwrap().to_owned();
    assert!(old.starts_with("whsec_"), "{secret}");
    let rotated = herald.ok(&["webhooks", "rotate-secret", "w1"]).await;
    assert!(rotated.stdout.contains(&old), "{}", rotated.stdout);
    let now = herald.ok(&["webhooks", "secret", "w1", "--json"]).await.json();
    assert_ne!(now["secret"], old.as_str());
    assert_eq!(now["previous"][0]["secret"], old.as_str());

    // Delete, then the webhook is gone.
    let deleted = herald.ok(&["webhooks", "delete", "w2"]).await;
    assert_eq!(deleted.stdout.trim(), "deleted webhook w2");
    let gone = herald.fails(&["webhooks", "get", "w2"]).await;
    assert!(gone.contains("404"), "{gone}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_name_the_field_and_fail_the_command() {
    let env = TestEnv::new("cli-refusals", &["events"], 1).await;
    let app = env.spawn(&admin_overlay("24h")).await;
    let herald = Herald::new(&env, &app, Some(OPS));
    let invalid = herald
        .fails(&[
            "webhooks",
            "create",
            "--name",
            "x",
            "--url",
            "not a url",
            "--event",
            "a",
        ])
        .await;
    assert!(invalid.contains("422") && invalid.contains("url:"), "{invalid}");
    let status = herald
        .fails(&[
            "webhooks",
            "create",
            "--name",
            "x",
            "--url",
            "https://example.com/",
            "--event",
            "a",
            "--final-statuses",
            "200",
        ])
        .await;
    assert!(status.contains("not an HTTP status from 300 to 599"), "{status}");

    let anonymous = Herald::new(&env, &app, None);
    let no_token = anonymous.fails(&["webhooks", "list"]).await;
    assert!(no_token.contains("no API token"), "{no_token}");
    let tenant = Herald::new(&env, &app, Some(GLOBEX));
    let api = Api::new(&app);
    api.ok(
        Method::POST,
        "/v1/webhooks",
        OPS,
        Some(json!({"id": "acme-only", "tenant": "acme", "name": "a", "url": "https://example.com/", "events": ["*"]})),
    )
    .await;
    let other = tenant.fails(&["webhooks", "get", "acme-only"]).await;
    assert!(other.contains("404"), "another tenant's webhook is not found: {other}");
    assert!(
        !other.contains(OPS) && !other.contains(GLOBEX),
        "no token in errors: {other}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_webhooks_events_are_counted_and_replayed_from_the_command_line() {
    let env = TestEnv::new("cli-replay", &["events"], 1).await;
    let receiver = TestReceiver::ok().await;
    let app = env.spawn(&admin_overlay("24h")).await;
    let herald = Herald::new(&env, &app, Some(OPS));
    let url = receiver.url("/");
    herald
        .ok(&[
            "webhooks", "create", "--id", "kept", "--name", "kept", "--url", &url, "--event", "*",
        ])
        .await;
    app.wait_webhooks(1).await;
    herald.ok(&["webhooks", "pause", "kept"]).await;
    app.wait_status("paused", 1).await;
    let publisher = Publisher::new();
    for n in 0..3 {
        publisher
            .json(
                env.topic(),
                &format!(r#"{{"event":"a","version":"0","time":1,"id":"evt_{n}"}}"#),
            )
            .await;
    }
    eventually(Duration::from_secs(20), "the events to be kept", || async {
        (end_offsets(&env.dlq, 1).await[0] == 3).then_some(())
    })
    .await;

    // `herald replay` reads the dead-letter topic itself: a dry run counts.
    let dry = herald
        .ok(&["replay", "--webhook", "kept", "--reason", "webhook_paused", "--dry-run"])
        .await;
    assert!(
        dry.stdout
            .contains("dry run: 3 of 3 dead letters match; 3 would be replayed"),
        "{}",
        dry.stdout
    );
    let other = herald
        .ok(&["replay", "--reason", "retries_exhausted", "--dry-run"])
        .await;
    assert!(other.stdout.contains("dry run: 0 of 3"), "{}", other.stdout);
    assert_eq!(receiver.count(), 0, "a dry run sends nothing");

    // Resume with a replay, followed until it ends.
    let resumed = herald.ok(&["webhooks", "resume", "kept", "--replay"]).await;
    assert!(resumed.stdout.contains("active"), "{}", resumed.stdout);
    assert!(
        resumed.stderr.contains(": done (") && resumed.stderr.contains("replayed 3"),
        "{}",
        resumed.stderr
    );
    receiver.wait_for(3, Duration::from_secs(20)).await;

    // The history of those deliveries, one attempt in full, statistics.
    let attempts = eventually(Duration::from_secs(10), "the attempts to be recorded", || async {
        let page = herald.ok(&["deliveries", "list", "kept", "--json"]).await.json();
        (page["data"].as_array().map(Vec::len) == Some(3)).then_some(page)
    })
    .await;
    let attempt = attempts["data"][0]["id"].as_str().unwrap().to_owned();
    let shown = herald.ok(&["deliveries", "show", "kept", &attempt]).await;
    assert!(
        shown.stdout.contains("succeeded") && shown.stdout.contains("204"),
        "{}",
        shown.stdout
    );
    let stats = herald.ok(&["deliveries", "stats", "kept", "--json"]).await.json();
    assert_eq!(stats["last_hour"]["succeeded"], 3, "{stats}");
    // By event: each kept while paused, then delivered by the replay, one
    // record with its attempt.
    let events = eventually(Duration::from_secs(10), "the deliveries to stand delivered", || async {
        let page = herald.ok(&["deliveries", "events", "kept", "--json"]).await.json();
        let data = page["data"].as_array().cloned().unwrap_or_default();
        (data.len() == 3 && data.iter().all(|d| d["status"] == "delivered")).then_some(data)
    })
    .await;
    assert!(events.iter().all(|d| d["attempts"].as_array().unwrap().len() == 1));
    let table = herald
        .ok(&["deliveries", "events", "kept", "--status", "delivered"])
        .await;
    assert!(
        table.stdout.contains(first_delivery(&events)) && table.stdout.contains("#1 succeeded 204"),
        "{}",
        table.stdout
    );

    // A manual retry sends the same delivery again.
    let retried = herald.ok(&["deliveries", "retry", "kept", &attempt]).await;
    assert!(retried.stdout.contains("scheduled again"), "{}", retried.stdout);
    let got = receiver.wait_for(4, Duration::from_secs(20)).await;
    let first = attempts["data"][0]["delivery_id"].as_str().unwrap();
    assert_eq!(got[3].header("webhook-id"), first);

    // A replay of failed deliveries leaves what a pause kept alone.
    let failed = herald.ok(&["deliveries", "replay", "kept"]).await;
    assert!(
        failed.stderr.contains(": done (") && failed.stderr.contains("matched 0"),
        "{}",
        failed.stderr
    );
    let bad_time = herald
        .fails(&["deliveries", "replay", "kept", "--since", "yesterday"])
        .await;
    assert!(bad_time.contains("since"), "{bad_time}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogs_and_test_pings_from_the_command_line() {
    let env = TestEnv::new("cli-catalog", &["events"], 1).await;
    let receiver = TestReceiver::ok().await;
    let app = env.spawn(&admin_overlay("24h")).await;
    let herald = Herald::new(&env, &app, Some(ACME));
    let catalogs = herald.ok(&["catalog", "list"]).await;
    assert!(catalogs.stdout.contains("jimo"), "{}", catalogs.stdout);
    let jimo = herald.ok(&["catalog", "list", "jimo", "--json"]).await.json();
    let types: Vec<&str> = jimo["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert!(types.contains(&"tour.completed"), "{jimo}");

    let url = receiver.url("/");
    let created = herald
        .ok(&[
            "webhooks", "create", "--name", "pinged", "--url", &url, "--event", "tour.*", "--json",
        ])
        .await
        .json();
    let id = created["id"].as_str().unwrap();
    assert_eq!(created["tenant"], "acme", "a tenant token creates in its tenant");
    let ping = herald
        .ok(&["deliveries", "test", id, "--event-type", "tour.completed", "--json"])
        .await
        .json();
    assert_eq!(
        (ping["succeeded"].as_bool(), ping["status"].as_u64()),
        (Some(true), Some(204)),
        "{ping}"
    );
    let sent: Value = serde_json::from_slice(&receiver.wait_for(1, Duration::from_secs(10)).await[0].body).unwrap();
    assert_eq!(sent["event"], "tour.completed");
    let unknown = herald
        .fails(&["deliveries", "test", id, "--event-type", "no.such"])
        .await;
    assert!(unknown.contains("event_type"), "{unknown}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_link_is_printed_for_a_tenant() {
    let env = TestEnv::new("cli-portal", &["events"], 1).await;
    let overlay = admin_overlay("24h") + "[portal]\nsigning_key = \"cli-portal-key-0b8e2f4a6c1d3e5f7a9b\"\n";
    let app = env.spawn(&overlay).await;
    let herald = Herald::new(&env, &app, Some(ACME));
    let session = herald
        .ok(&["portal", "acme", "--read-only", "--ttl-seconds", "600", "--json"])
        .await
        .json();
    assert_eq!(session["capability"], "read_only");
    let url = session["url"].as_str().unwrap();
    assert!(
        url.starts_with(&herald.api),
        "an absolute link on the API's address: {url}"
    );
    let page = reqwest::get(url).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Read only"));
    let shown = herald.ok(&["portal", "acme"]).await;
    assert!(
        shown.stdout.starts_with("http://") && shown.stdout.contains("manage"),
        "{}",
        shown.stdout
    );
    let other = herald.fails(&["portal", "globex"]).await;
    assert!(
        other.contains("404"),
        "a tenant token links only its own tenant: {other}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_and_their_tokens_are_managed_from_the_command_line() {
    let env = TestEnv::new("cli-tenants", &["events"], 1).await;
    let app = env.spawn(&admin_overlay("24h")).await;
    let herald = Herald::new(&env, &app, Some(OPS));

    let created = herald
        .ok(&[
            "tenants",
            "put",
            "umbrella",
            "--catalog",
            "jam",
            "--max-webhooks",
            "5",
            "--json",
        ])
        .await
        .json();
    assert_eq!(
        (&created["source"], &created["catalog"], &created["max_webhooks"]),
        (&json!("api"), &json!("jam"), &json!(5))
    );
    let framed = herald
        .ok(&[
            "tenants",
            "put",
            "umbrella",
            "--frame-ancestor",
            "https://a.example",
            "--frame-ancestor",
            "'self'",
            "--json",
        ])
        .await
        .json();
    assert_eq!(framed["frame_ancestors"], json!(["https://a.example", "'self'"]));
    assert_eq!(
        framed["settings"],
        json!({"frame_ancestors": ["https://a.example", "'self'"]}),
        "a put replaces every setting"
    );
    let updated = herald
        .ok(&["tenants", "update", "umbrella", "--max-webhooks", "7", "--json"])
        .await
        .json();
    assert_eq!(
        updated["settings"],
        json!({"max_webhooks": 7, "frame_ancestors": ["https://a.example", "'self'"]}),
        "an update keeps what it does not name"
    );
    let reset = herald
        .ok(&["tenants", "update", "umbrella", "--reset", "frame-ancestors", "--json"])
        .await
        .json();
    assert_eq!(reset["settings"], json!({"max_webhooks": 7}));
    let listed = herald.ok(&["tenants", "list"]).await.stdout;
    assert!(
        listed.contains("umbrella") && listed.contains("acme") && listed.contains("config"),
        "{listed}"
    );

    let issued = herald
        .ok(&["tenants", "issue-token", "umbrella", "backend"])
        .await
        .stdout;
    let token = issued.lines().next().unwrap().trim().to_owned();
    assert!(
        token.starts_with("hrld_"),
        "the token comes first, alone on its line: {issued}"
    );
    assert!(issued.contains("shown once"));
    let tokens = herald.ok(&["tenants", "tokens", "umbrella"]).await.stdout;
    assert!(
        tokens.contains("backend") && tokens.contains(&token[token.len() - 4..]),
        "{tokens}"
    );
    assert!(!tokens.contains(&token));

    // The issued token works with the same command line.
    let tenant_cli = Herald::new(&env, &app, Some(Box::leak(token.clone().into_boxed_str())));
    let own = tenant_cli.ok(&["tenants", "show", "umbrella", "--json"]).await.json();
    assert_eq!(own["name"], "umbrella");
    let refused = tenant_cli.fails(&["tenants", "list"]).await;
    assert!(refused.contains("403") && refused.contains("admin token"), "{refused}");

    let busy = herald
        .ok(&[
            "webhooks",
            "create",
            "--tenant",
            "umbrella",
            "--name",
            "w",
            "--url",
            "https://example.com/u",
            "--event",
            "bug.created",
            "--json",
        ])
        .await
        .json();
    let kept = herald.fails(&["tenants", "delete", "umbrella"]).await;
    assert!(kept.contains("409") && kept.contains("1 webhook"), "{kept}");
    herald.ok(&["webhooks", "delete", busy["id"].as_str().unwrap()]).await;
    herald.ok(&["tenants", "revoke-token", "umbrella", "backend"]).await;
    let gone = tenant_cli.fails(&["tenants", "show", "umbrella"]).await;
    assert!(gone.contains("401"), "{gone}");
    herald.ok(&["tenants", "delete", "umbrella"]).await;
    let missing = herald.fails(&["tenants", "show", "umbrella"]).await;
    assert!(missing.contains("404"), "{missing}");
    app.stop().await;
}

/// The first delivery's id in a list of deliveries.
fn first_delivery(events: &[serde_json::Value]) -> &str {
    events[0]["delivery_id"].as_str().unwrap()
}

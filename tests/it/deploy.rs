//! deploy/ holds what the code needs: every Herald metric the dashboards and
//! alerts name exists in a running Herald's /metrics, every admin token
//! written in the repository passes Herald's start-up check, and the Redis
//! ACL of deploy/k8s/redis-acl.conf lets Herald do all its work (nothing it
//! sends shows up refused in Redis's ACL log). What the deployment files
//! themselves must keep is checked by scripts/deploy_policy.py.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use reqwest::Method;
use serde_json::json;

use herald::subscriptions::store::SubscriptionStore;

use crate::api::*;
use crate::helpers::*;

fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("herald_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let name = &text[start..end];
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|base| base.ends_with("_seconds")))
            .unwrap_or(name);
        names.insert(family.to_owned());
        i = end;
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_in_the_alerts_and_dashboard_exists() {
    let env = TestEnv::new("drift", &["events"], 1)
        .await
        .with_tiers(&[Tier::after_ms(60_000), Tier::after_ms(120_000)])
        .await;
    let app = env.spawn("").await;
    // Lag series appear once the group has committed an offset.
    Publisher::new()
        .json(env.topic(), r#"{"event":"nobody.listens"}"#)
        .await;
    let exposition = eventually(std::time::Duration::from_secs(20), "consumer lag series", || async {
        let text = app.metrics().await;
        text.contains("herald_consumer_lag_messages{").then_some(text)
    })
    .await;
    let exported: BTreeSet<String> = exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .map(str::to_owned)
        .collect();

    let mut referenced = BTreeSet::new();
    for file in [
        "deploy/prometheus/alerts.yml",
        "deploy/prometheus/alerts_test.yml",
        "deploy/grafana/dashboards/herald.json",
        "docs/operations.md",
    ] {
        let text = std::fs::read_to_string(repo_path(file)).unwrap();
        // The table of renamed metrics names the old ones on purpose.
        let text = text.split("## Renamed metrics").next().unwrap_or_default();
        let names = metric_names(text);
        assert!(!names.is_empty(), "{file} names no metric");
        referenced.extend(names);
    }
    let missing: Vec<&String> = referenced.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "named in deploy/ or docs/ but not exported: {missing:?}"
    );
    // The delivery series by tenant are exported before any delivery, with
    // their two fixed tenant labels, and the dashboard and alerts use them.
    let by_tenant: Vec<&String> = exported.iter().filter(|n| n.starts_with("herald_tenant_")).collect();
    assert_eq!(by_tenant.len(), 3, "{by_tenant:?}");
    for name in by_tenant {
        assert!(referenced.contains(name), "{name} is named nowhere in deploy/ or docs/");
        for tenant in ["(none)", "(other)"] {
            let label = format!("tenant=\"{tenant}\"");
            assert!(
                exposition
                    .lines()
                    .filter_map(|l| l.strip_prefix(name.as_str()))
                    .any(|rest| rest.starts_with(['{', '_']) && rest.contains(&label)),
                "{name} has no series of tenant {tenant}"
            );
        }
    }
    for file in ["deploy/prometheus/alerts.yml", "deploy/grafana/dashboards/herald.json"] {
        let text = std::fs::read_to_string(repo_path(file)).unwrap();
        assert!(
            text.contains("herald_tenant_deliveries_total"),
            "{file} shows no tenant"
        );
    }
    app.stop().await;
}

/// The values given to an admin token on `line`: `token = "..."`,
/// `token="..."` (also backslash-escaped, in shell), and `..._TOKEN=...` or
/// `..._TOKEN: ...` (environment). Templates (`$VAR`, `${VAR:?...}`,
/// `<...>`, `...`) are not tokens and are left out.
fn written_tokens(line: &str) -> Vec<&str> {
    let mut values = Vec::new();
    for (key, separators) in [("token", &['='][..]), ("_TOKEN", &['=', ':'][..])] {
        for (at, _) in line.match_indices(key) {
            let before = &line[..at];
            if before
                .rfind("${")
                .is_some_and(|open| before.rfind('}').is_none_or(|close| close < open))
            {
                continue;
            }
            let Some(value) = line[at + key.len()..].trim_start().strip_prefix(separators) else {
                continue;
            };
            let value = value.trim_start().trim_start_matches(['\\', '"', '\'']);
            let value = &value[..value
                .find(['"', '\'', '\\', ' ', ',', '}', ')', '`'])
                .unwrap_or(value.len())];
            if !value.is_empty() && !value.contains(['$', '<', '{']) && !value.contains("...") {
                values.push(value);
            }
        }
    }
    values
}

/// Every admin token written out in the repository (configuration, compose,
/// manifests, scripts, docs, examples) passes Herald's start-up check: none
/// is a placeholder an operator could copy into production, and none stops
/// a documented setup from starting.
#[test]
fn every_token_written_in_the_repository_passes_the_start_up_check() {
    // The forms tokens were written in.
    assert_eq!(
        written_tokens(r#"tokens = [{ name = "local", token = "local-admin-token-change-me" }]"#),
        ["local-admin-token-change-me"]
    );
    assert_eq!(
        written_tokens(r#"  HERALD_ADMIN__TOKENS: '[{name="ops", token="change-me-to-32-random-characters"}]'"#),
        ["change-me-to-32-random-characters"]
    );
    assert_eq!(
        written_tokens("export HERALD_API_TOKEN=local-admin-token-change-me"),
        ["local-admin-token-change-me"]
    );
    assert_eq!(
        written_tokens("      HERALD_API_TOKEN: compose-admin-token-change-me"),
        ["compose-admin-token-change-me"]
    );
    assert!(written_tokens(r#"HERALD_ADMIN__TOKENS="[{name=\"local\", token=\"$HERALD_API_TOKEN\"}]""#).is_empty());

    let mut files = vec![repo_path("docker-compose.yml"), repo_path("README.md")];
    let mut dirs: Vec<_> = ["config", "deploy", "docs", "examples", "scripts"]
        .iter()
        .map(|d| repo_path(d))
        .collect();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    let mut refused = Vec::new();
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for (n, line) in text.lines().enumerate() {
            for token in written_tokens(line) {
                let why = match herald::config::token_quality::check(token) {
                    _ if token.len() < herald::config::admin::MIN_TOKEN_LEN => "is too short".to_owned(),
                    Err(weak) => weak.to_string(),
                    Ok(()) => continue,
                };
                refused.push(format!("{}:{}: `{token}` {why}", file.display(), n + 1));
            }
        }
    }
    assert!(refused.is_empty(), "tokens Herald refuses:\n{}", refused.join("\n"));
}

/// A Redis ACL user made from deploy/k8s/redis-acl.conf for one test's key
/// prefix, deleted when dropped.
struct AclUser {
    name: String,
    /// `redis.url` that connects as this user, to database 1 (so that
    /// Herald selects it, as with any database but 0).
    url: String,
    /// The same database as the default user, for what other writers do.
    writer_url: String,
    admin_url: String,
}

impl AclUser {
    async fn create(env: &TestEnv) -> AclUser {
        let text = std::fs::read_to_string(repo_path("deploy/k8s/redis-acl.conf")).unwrap();
        // The file's keys and channel are under the default prefix `herald:`;
        // this test's are under its own.
        let rules: Vec<String> = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .flat_map(str::split_whitespace)
            .map(|rule| match rule.strip_prefix('~').or_else(|| rule.strip_prefix('&')) {
                Some(pattern) => {
                    let pattern = pattern
                        .strip_prefix("herald:")
                        .expect("every key and channel is under herald:");
                    format!("{}{}{pattern}", &rule[..1], env.prefix)
                }
                None => rule.to_owned(),
            })
            .collect();
        assert!(rules.iter().any(|r| r.starts_with('+')), "no command in the ACL file");
        let name = unique("herald-acl");
        let password = format!("{:032x}", rand::random::<u128>());
        let client = redis::Client::open(env.redis_url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let () = redis::cmd("ACL")
            .arg("SETUSER")
            .arg(&name)
            .arg("reset")
            .arg("on")
            .arg(format!(">{password}"))
            .arg(&rules)
            .query_async(&mut conn)
            .await
            .expect("Redis accepts every rule of deploy/k8s/redis-acl.conf");
        let mut url = url::Url::parse(&env.redis_url).unwrap();
        url.set_path("/1");
        let writer_url = url.to_string();
        url.set_username(&name).unwrap();
        url.set_password(Some(&password)).unwrap();
        AclUser {
            name,
            url: url.to_string(),
            writer_url,
            admin_url: env.redis_url.clone(),
        }
    }

    /// What Redis refused this user since it was created: `(reason, object)`,
    /// e.g. `("command", "keys")` or `("key", "herald:other")`.
    async fn refusals(&self) -> Vec<(String, String)> {
        let client = redis::Client::open(self.admin_url.as_str()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let entries: Vec<HashMap<String, redis::Value>> = redis::cmd("ACL")
            .arg("LOG")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .unwrap();
        let text = |v: Option<&redis::Value>| match v {
            Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            other => format!("{other:?}"),
        };
        entries
            .iter()
            .filter(|e| text(e.get("username")) == self.name)
            .map(|e| (text(e.get("reason")), text(e.get("object"))))
            .collect()
    }
}

impl Drop for AclUser {
    fn drop(&mut self) {
        if let Ok(mut conn) = redis::Client::open(self.admin_url.as_str()).and_then(|c| c.get_connection()) {
            let _: Result<i64, _> = redis::cmd("ACL").arg("DELUSER").arg(&self.name).query(&mut conn);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_acl_user_can_do_all_the_work_and_nothing_more() {
    let env = TestEnv::new("redis-acl", &["events"], 1).await;
    let user = AclUser::create(&env).await;
    // Redis forgets its scripts when it restarts; so that Herald has to load
    // its own (SCRIPT LOAD) as it would then, empty the script cache.
    let mut conn = env.redis().await;
    let () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut conn).await.unwrap();
    let event = |n: u32| format!(r#"{{"event":"tour.completed","version":"0","time":1,"id":"evt_acl{n}"}}"#);

    // Webhooks written by another writer before Herald starts: loaded at
    // start. Both rate-limited (leases from Redis); one answers 429, which
    // lowers its rate in Redis.
    let failing = TestReceiver::start(Behaviour::Status(429)).await;
    let ok = TestReceiver::ok().await;
    let writer = redis::Client::open(user.writer_url.as_str()).unwrap();
    let store = SubscriptionStore::connect(&writer, &env.prefix).await.unwrap();
    let limited = |id: &str, url: &str| {
        let mut w = webhook(id, url, &["tour.*"]);
        w.limits.rate = Some(herald::webhook::RateLimit {
            per_second: 50.0,
            burst: Some(5),
        });
        w
    };
    store.put(&limited("failing", &failing.url("/"))).await.unwrap();
    store.put(&limited("seeded", &ok.url("/"))).await.unwrap();
    let portal = "[portal]\nsigning_key = \"acl-portal-key-7d1e5b9a3c0f42861b6e\"\n";
    let app = env
        .spawn(&(admin_overlay("24h") + portal + &format!("[redis]\nurl = \"{}\"\n", user.url)))
        .await;
    let api = Api::new(&app);
    let publisher = Publisher::new();

    // Delivered to both: one succeeds, one fails (its failure streak is
    // counted) and is dead-lettered; both are recorded in the history.
    publisher.json(env.topic(), &event(1)).await;
    ok.wait_for(1, Duration::from_secs(20)).await;
    failing.wait_for(1, Duration::from_secs(20)).await;
    read_topic(&env.dlq, 1, Duration::from_secs(20)).await;
    let history = eventually(Duration::from_secs(10), "the delivery in the history", || async {
        let page = api.ok(Method::GET, "/v1/webhooks/seeded/deliveries", OPS, None).await;
        (page["data"].as_array().unwrap().len() == 1).then_some(page)
    })
    .await;
    assert_eq!(history["data"][0]["outcome"], "succeeded", "{history}");
    let stats = api.ok(Method::GET, "/v1/webhooks/seeded/stats", OPS, None).await;
    assert_eq!(stats["last_hour"]["succeeded"], 1, "{stats}");
    app.wait_metric("herald_rate_slowdowns_total", 1.0).await;

    // The API creates, lists, changes and deletes a webhook; the change feed
    // brings each change to the pipeline.
    let changes = app.metric(r#"herald_subscription_syncs_total{kind="change"}"#).await;
    let created = api
        .ok(
            Method::POST,
            "/v1/webhooks",
            OPS,
            Some(json!({"id": "created", "name": "c", "url": ok.url("/c"), "events": ["tour.*"]})),
        )
        .await;
    assert_eq!(created["id"], "created");
    let list = api.ok(Method::GET, "/v1/webhooks", OPS, None).await;
    let mut ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["created", "failing", "seeded"], "{list}");
    api.ok(
        Method::PATCH,
        "/v1/webhooks/created",
        OPS,
        Some(json!({"name": "changed"})),
    )
    .await;
    eventually(
        Duration::from_secs(10),
        "the change feed to announce both changes",
        || async {
            (app.metric(r#"herald_subscription_syncs_total{kind="change"}"#).await >= changes + 2.0).then_some(())
        },
    )
    .await;
    publisher.json(env.topic(), &event(2)).await;
    eventually(Duration::from_secs(20), "the created webhook's delivery", || async {
        ok.received().iter().any(|r| r.path == "/c").then_some(())
    })
    .await;
    api.ok(Method::DELETE, "/v1/webhooks/created", OPS, None).await;
    assert_eq!(
        api.call(Method::GET, "/v1/webhooks/created", OPS, None).await.status,
        404
    );
    // A tenant's webhook: counted against its quota, listed from its set,
    // deleted from it.
    api.ok(
        Method::POST,
        "/v1/webhooks",
        ACME,
        Some(json!({"uid": "acme-1", "name": "a", "url": ok.url("/a"), "events": ["tour.*"]})),
    )
    .await;
    let own = api.ok(Method::GET, "/v1/webhooks", ACME, None).await;
    assert_eq!(own["data"][0]["uid"], "acme-1", "{own}");
    api.ok(Method::DELETE, "/v1/webhooks/acme-1", ACME, None).await;

    // A replay re-drives the two dead letters (both events failed there)
    // once, and its marks say so afterwards.
    failing.set_behaviour(Behaviour::Status(204));
    let replay = || {
        let api = &api;
        async move {
            let job = api
                .ok(
                    Method::POST,
                    "/v1/webhooks/failing/replay",
                    OPS,
                    Some(json!({"reasons": ["delivery_failed"]})),
                )
                .await;
            api.replay_finished(&job, OPS).await
        }
    };
    let first = replay().await;
    assert_eq!(
        (first["state"].as_str(), first["replayed"].as_u64()),
        (Some("done"), Some(2)),
        "{first}"
    );
    failing.wait_for(4, Duration::from_secs(20)).await;
    let second = replay().await;
    assert_eq!(
        (second["replayed"].as_u64(), second["already_redriven"].as_u64()),
        (Some(0), Some(2)),
        "{second}"
    );

    // A tenant and its token made at run time, used, and a portal session
    // it makes, opened and ended with the token's revocation.
    api.ok(Method::PUT, "/v1/tenants/initech", OPS, Some(json!({}))).await;
    let issued = api
        .ok(
            Method::POST,
            "/v1/tenants/initech/tokens",
            OPS,
            Some(json!({"name": "backend"})),
        )
        .await;
    let token = issued["token"].as_str().unwrap().to_owned();
    api.ok(Method::GET, "/v1/webhooks", &token, None).await;
    let made = api
        .ok(
            Method::POST,
            "/v1/tenants/initech/portal-sessions",
            &token,
            Some(json!({})),
        )
        .await;
    let link = format!("{}{}", api.base, made["url"].as_str().unwrap());
    assert_eq!(reqwest::get(&link).await.unwrap().status(), 200);
    api.call(Method::DELETE, "/v1/tenants/initech/tokens/backend", OPS, None)
        .await;
    assert_eq!(reqwest::get(&link).await.unwrap().status(), 401);

    // Nothing went wrong quietly: no Redis error in any loop, and Redis
    // refused nothing this user sent.
    for series in [
        r#"herald_subscription_errors_total{stage="subscribe"}"#,
        r#"herald_subscription_errors_total{stage="load"}"#,
        r#"herald_history_records_total{result="write_failed"}"#,
        "herald_lifecycle_errors_total",
    ] {
        assert_eq!(app.metric(series).await, 0.0, "{series}");
    }
    assert_eq!(app.metric("herald_redis_up").await, 1.0);
    app.stop().await;
    assert_eq!(
        user.refusals().await,
        Vec::<(String, String)>::new(),
        "Redis refused these to Herald"
    );

    // And the user can do nothing else: no other command, key or channel.
    let mut conn = redis::Client::open(user.url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for args in [
        vec!["KEYS", "*"],
        vec!["FLUSHDB"],
        vec!["CONFIG", "GET", "requirepass"],
        vec!["GET", "another-service:session"],
        vec!["PUBLISH", "another-service:events", "x"],
    ] {
        let reply: redis::RedisResult<redis::Value> = redis::cmd(args[0]).arg(&args[1..]).query_async(&mut conn).await;
        assert!(
            reply.as_ref().is_err_and(|e| e.to_string().contains("no permissions")),
            "{args:?}: {reply:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_acl_user_can_keep_a_key_s_deliveries_in_order() {
    let env = TestEnv::new("redis-acl-order", &["events"], 1)
        .await
        .with_tiers(&[Tier::after_ms(1000)])
        .await;
    let user = AclUser::create(&env).await;
    let mut conn = env.redis().await;
    let () = redis::cmd("SCRIPT").arg("FLUSH").query_async(&mut conn).await.unwrap();
    // Each delivery's first attempt fails: the key is blocked, the next
    // event parked behind it, and both go in order from the tier.
    let receiver = TestReceiver::start(failing(1, 500, None)).await;
    let writer = redis::Client::open(user.writer_url.as_str()).unwrap();
    let store = SubscriptionStore::connect(&writer, &env.prefix).await.unwrap();
    let mut ordered = webhook("ordered", &receiver.url("/"), &["*"]);
    ordered.ordering = Some(herald::routing::ordering::Ordering::RecordKey);
    store.put(&ordered).await.unwrap();
    let app = env.spawn(&format!("[redis]\nurl = \"{}\"\n", user.url)).await;
    let publisher = Publisher::new();
    for n in 0..2 {
        let body = format!(r#"{{"event":"a.b","n":{n}}}"#);
        publisher.send(env.topic(), Some("k"), body.as_bytes(), &[]).await;
    }
    let got = receiver.wait_for(4, Duration::from_secs(60)).await;
    let order: Vec<String> = got
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).into_owned())
        .collect();
    assert!(
        order[0].contains(r#""n":0"#) && order[1].contains(r#""n":0"#),
        "{order:?}"
    );
    assert!(
        order[2].contains(r#""n":1"#) && order[3].contains(r#""n":1"#),
        "{order:?}"
    );
    assert_eq!(app.metric("herald_ordering_store_errors_total").await, 0.0);
    app.stop().await;
    assert_eq!(
        user.refusals().await,
        Vec::<(String, String)>::new(),
        "Redis refused these to Herald"
    );
}

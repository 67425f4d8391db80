//! `herald`: parses arguments and configuration, then calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use herald::client::{self, encode, ApiClient};
use herald::config::Config;
use herald::{tools, Application};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(name = "herald", version, about = "Kafka-native webhook delivery")]
struct Cli {
    /// Configuration file layered over config/default.toml (HERALD_... variables override both).
    #[arg(long, short, global = true, env = "HERALD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Consume events and deliver webhooks until SIGTERM/SIGINT.
    Run,
    /// Serve only the management API (no consuming), e.g. as its own deployment.
    Api,
    /// Print the management API's OpenAPI document.
    Openapi,
    /// Check the configuration and exit (status 2 and the key at fault when invalid).
    CheckConfig {
        /// Also check the topics Herald writes against kafka.brokers: they
        /// exist (or will be created) and keep records at least as long as
        /// one may wait there.
        #[arg(long)]
        broker: bool,
    },
    /// Manage webhooks through the management API.
    Webhooks {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: WebhooksCommand,
    },
    /// A webhook's delivery history, through the management API.
    Deliveries {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: DeliveriesCommand,
    },
    /// Read the event catalogs through the management API.
    Catalog {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: CatalogCommand,
    },
    /// Publish each line of a JSON Lines file as one Kafka record.
    Publish {
        #[arg(long)]
        topic: String,
        /// JSON Lines file; each non-empty line is one record value.
        file: PathBuf,
        /// Header added to every record, as NAME=VALUE (repeatable).
        #[arg(long = "header", value_parser = parse_header)]
        headers: Vec<(String, String)>,
        /// JSON pointer whose value becomes the record key, e.g. /id.
        #[arg(long)]
        key_pointer: Option<String>,
    },
    /// Re-drive dead-lettered deliveries (same webhook-id) through the redrive topic, due now.
    Replay {
        /// Only this webhook's deliveries.
        #[arg(long)]
        webhook: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
        /// Event type pattern: exact, `prefix.*` or `*`.
        #[arg(long)]
        event_type: Option<String>,
        /// Dead-letter reason, e.g. webhook_paused, retries_exhausted, endpoint_gone (repeatable: any of them).
        #[arg(long = "reason")]
        reasons: Vec<String>,
        /// Dead-lettered at or after this RFC 3339 time.
        #[arg(long, value_parser = parse_time)]
        since: Option<time::OffsetDateTime>,
        /// Dead-lettered before this RFC 3339 time.
        #[arg(long, value_parser = parse_time)]
        until: Option<time::OffsetDateTime>,
        /// Count what would be replayed, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Re-drive dead letters an earlier replay re-drove too (each is otherwise re-driven once).
        #[arg(long)]
        force: bool,
    },
    /// Create Kafka topics (existing ones are left alone).
    CreateTopics {
        topics: Vec<String>,
        #[arg(long, default_value_t = 3)]
        partitions: i32,
    },
}

/// Where the management API is.
#[derive(clap::Args)]
struct ApiArgs {
    /// Base URL of the management API.
    #[arg(long, env = "HERALD_API_URL", default_value = "http://127.0.0.1:8080", global = true)]
    api_url: String,
    /// Bearer token (one of admin.tokens).
    #[arg(long, env = "HERALD_API_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

/// A webhook's own limits.
#[derive(clap::Args, Default)]
struct LimitArgs {
    /// Concurrent requests to this endpoint (may lower delivery.max_in_flight_per_endpoint).
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// Request deadline for this endpoint, in milliseconds (may lower delivery.request_timeout).
    #[arg(long)]
    timeout_ms: Option<u64>,
    /// Statuses that end a delivery without retries: `400,422`; `none` retries
    /// every failure; `default` follows retry.final_statuses. 410 is always final.
    #[arg(long, value_parser = parse_final_statuses)]
    final_statuses: Option<FinalStatuses>,
}

/// `--final-statuses`.
#[derive(Clone, Debug)]
enum FinalStatuses {
    Default,
    These(Vec<u16>),
}

fn parse_final_statuses(s: &str) -> Result<FinalStatuses, String> {
    match s.trim() {
        "default" => Ok(FinalStatuses::Default),
        "none" => Ok(FinalStatuses::These(Vec::new())),
        list => list
            .split(',')
            .map(|c| {
                c.trim()
                    .parse::<u16>()
                    .ok()
                    .filter(|c| (300..=599).contains(c))
                    .ok_or_else(|| format!("`{c}` is not an HTTP status from 300 to 599"))
            })
            .collect::<Result<Vec<u16>, String>>()
            .map(FinalStatuses::These),
    }
}

impl LimitArgs {
    fn given(&self) -> bool {
        self.max_in_flight.is_some() || self.timeout_ms.is_some() || self.final_statuses.is_some()
    }

    /// `limits` with these flags applied.
    fn apply(&self, limits: &mut serde_json::Map<String, Value>) {
        if let Some(n) = self.max_in_flight {
            limits.insert("max_in_flight".into(), n.into());
        }
        if let Some(ms) = self.timeout_ms {
            limits.insert("timeout_ms".into(), ms.into());
        }
        match &self.final_statuses {
            None => {}
            Some(FinalStatuses::Default) => {
                limits.remove("final_statuses");
            }
            Some(FinalStatuses::These(codes)) => {
                limits.insert("final_statuses".into(), codes.clone().into());
            }
        }
    }
}

#[derive(Subcommand)]
enum WebhooksCommand {
    /// Create a webhook from flags, or from a JSON file with the API's create body.
    Create {
        #[arg(long, required_unless_present = "file")]
        name: Option<String>,
        #[arg(long, required_unless_present = "file")]
        url: Option<String>,
        /// Event type pattern (repeatable): `tour.completed`, `tour.*`, `*`.
        #[arg(long = "event", required_unless_present = "file")]
        events: Vec<String>,
        #[arg(long)]
        tenant: Option<String>,
        /// Extra request header, as NAME=VALUE (repeatable).
        #[arg(long = "header", value_parser = parse_header)]
        headers: Vec<(String, String)>,
        /// The signing secret (`whsec_...`); generated when absent.
        #[arg(long)]
        secret: Option<String>,
        /// The webhook's id (admin tokens only); generated when absent.
        #[arg(long)]
        id: Option<String>,
        /// A name of your own for the webhook, unique within its tenant
        /// (usable in place of the id with a tenant token).
        #[arg(long)]
        uid: Option<String>,
        #[command(flatten)]
        limits: LimitArgs,
        /// JSON file holding the create body (flags override its fields).
        #[arg(long)]
        file: Option<PathBuf>,
    },
    /// List webhooks (every page with --all).
    List {
        #[arg(long)]
        tenant: Option<String>,
        /// active, paused or disabled.
        #[arg(long)]
        status: Option<String>,
        /// Only webhooks receiving this event type.
        #[arg(long)]
        event: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
        /// Follow the cursor through every page.
        #[arg(long)]
        all: bool,
    },
    /// Show one webhook.
    Get { id: String },
    /// Change a webhook's name, URL, events, headers or limits.
    Update {
        id: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        url: Option<String>,
        /// Replaces the event patterns (repeatable).
        #[arg(long = "event")]
        events: Vec<String>,
        /// Replaces the headers, as NAME=VALUE (repeatable).
        #[arg(long = "header", value_parser = parse_header)]
        headers: Vec<(String, String)>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Pause deliveries (they are kept for a replay on resume).
    Pause { id: String },
    /// Resume deliveries.
    Resume {
        id: String,
        /// Re-deliver what was kept during this pause or disablement, and follow the replay.
        #[arg(long)]
        replay: bool,
    },
    /// Delete a webhook.
    Delete { id: String },
    /// Show the signing secret(s).
    Secret { id: String },
    /// Rotate the signing secret; the previous one keeps signing for admin.secret_rotation_overlap.
    RotateSecret {
        id: String,
        /// The new secret; generated when absent.
        #[arg(long)]
        secret: Option<String>,
    },
}

#[derive(Subcommand)]
enum DeliveriesCommand {
    /// A webhook's attempts, newest first.
    List {
        webhook: String,
        /// succeeded or failed.
        #[arg(long)]
        status: Option<String>,
        /// Event type pattern.
        #[arg(long)]
        event_type: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
    },
    /// One attempt with its request and response.
    Show { webhook: String, attempt: String },
    /// Deliver an attempt's event again now (same webhook-id).
    Retry { webhook: String, attempt: String },
    /// Re-deliver a webhook's failed deliveries, and follow the replay.
    Replay {
        webhook: String,
        /// Dead-lettered at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Dead-lettered before this RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        /// Re-drive dead letters an earlier replay re-drove too (each is otherwise re-driven once).
        #[arg(long)]
        force: bool,
    },
    /// Success and failure counts over the last hour, day and week.
    Stats {
        webhook: Option<String>,
        /// A tenant's counts instead of a webhook's.
        #[arg(long, conflicts_with = "webhook", required_unless_present = "webhook")]
        tenant: Option<String>,
    },
    /// Send a catalog's example event to the webhook and show the answer.
    Test {
        webhook: String,
        #[arg(long)]
        event_type: String,
    },
}

#[derive(Subcommand)]
enum CatalogCommand {
    /// List the catalogs, or one catalog's event types.
    List { name: Option<String> },
}

fn parse_time(s: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("`{s}` is not an RFC 3339 time: {e}"))
}

fn parse_header(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{s}` is not NAME=VALUE"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("herald: {e}");
            return ExitCode::from(2);
        }
    };
    herald::telemetry::logging::init(&config.log);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("herald: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The services log their fatal error (log collectors read it there);
    // command-line tools only print it once.
    let service = matches!(cli.command, Command::Run | Command::Api);
    match runtime.block_on(execute(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if service {
                tracing::error!("{e:#}");
            }
            eprintln!("herald: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Run => {
            let shutdown = herald::app::shutdown_on_signals();
            let app = Application::build(config).await?;
            tracing::info!(ops = %app.ops_addr(), admin = ?app.admin_addr(), version = env!("CARGO_PKG_VERSION"), "herald starting");
            app.run_until_stopped(shutdown).await
        }
        Command::Api => herald::admin::run_standalone(config, herald::app::shutdown_on_signals()).await,
        Command::Openapi => {
            println!("{}", herald::admin::openapi().to_pretty_json()?);
            Ok(())
        }
        Command::CheckConfig { broker } => {
            // The values are not printed: pass-through properties may hold credentials.
            println!("configuration is valid");
            if broker {
                let check = herald::app::check_topics(&config).await?;
                for topic in &check.to_create {
                    println!("topic {topic} is missing; herald run creates it (kafka.create_missing_topics)");
                }
                for u in &check.unverified {
                    println!(
                        "topic {}: cannot verify that it keeps records long enough: {}",
                        u.topic, u.why
                    );
                }
                println!("topics are ready");
            }
            Ok(())
        }
        Command::Webhooks { api, command } => webhooks(api, command).await,
        Command::Deliveries { api, command } => deliveries(api, command).await,
        Command::Catalog { api, command } => {
            let client = ApiClient::new(&api.api_url, api.token)?;
            let CatalogCommand::List { name } = command;
            let path = match name {
                Some(name) => format!("/v1/catalogs/{}", encode(&name)),
                None => "/v1/catalogs".to_owned(),
            };
            client::print(&client.get(&path).await?, api.json, client::catalogs_table);
            Ok(())
        }
        Command::Publish {
            topic,
            file,
            headers,
            key_pointer,
        } => {
            let options = tools::PublishOptions {
                topic: &topic,
                file: &file,
                headers: &headers,
                key_pointer: key_pointer.as_deref(),
            };
            let n = tools::publish(&config, options).await?;
            println!("published {n} records to {topic}");
            Ok(())
        }
        Command::Replay {
            webhook,
            tenant,
            event_type,
            reasons,
            since,
            until,
            dry_run,
            force,
        } => {
            let filter = herald::retry::replay::ReplayFilter {
                webhook,
                tenant,
                event_type,
                reasons,
                since,
                until,
                ..Default::default()
            };
            let shown = std::sync::Arc::new(client::ReplayProgress::new());
            let progress = {
                let shown = shown.clone();
                move |s: &herald::retry::replay::ReplaySummary| {
                    shown.update(s.total, s.scanned, s.matched, s.replayed, false)
                }
            };
            let options = herald::retry::replay::ReplayOptions { dry_run, force };
            let producer: rdkafka::producer::FutureProducer = herald::kafka::producer_config(&config.kafka).create()?;
            let summary = herald::retry::replay::replay(&config, &producer, &filter, options, progress).await?;
            shown.update(summary.total, summary.scanned, summary.matched, summary.replayed, true);
            if dry_run {
                println!(
                    "dry run: {} of {} dead letters match; {} would be replayed \
                     ({} are not deliveries, {} were re-driven before{})",
                    summary.matched,
                    summary.scanned,
                    summary.would_replay(),
                    summary.skipped,
                    summary.already_redriven,
                    if force { " and would be again" } else { "" }
                );
            } else {
                println!(
                    "replayed {} of {} matching dead letters ({} scanned; {} are not deliveries; \
                     {} were re-driven before, skipped: --force re-drives them)",
                    summary.replayed, summary.matched, summary.scanned, summary.skipped, summary.already_redriven
                );
            }
            Ok(())
        }
        Command::CreateTopics { topics, partitions } => {
            tools::create_topics(&config, &topics, partitions).await?;
            println!("topics ready: {}", topics.join(", "));
            Ok(())
        }
    }
}

async fn webhooks(api: ApiArgs, command: WebhooksCommand) -> anyhow::Result<()> {
    let client = ApiClient::new(&api.api_url, api.token)?;
    let headers_json = |headers: Vec<(String, String)>| {
        Value::Object(headers.into_iter().map(|(k, v)| (k, Value::String(v))).collect())
    };
    let one = |v: &Value| client::print(v, api.json, client::webhook_table);
    match command {
        WebhooksCommand::Create {
            name,
            url,
            events,
            tenant,
            headers,
            secret,
            id,
            uid,
            limits,
            file,
        } => {
            let mut body = match file {
                Some(file) => {
                    let text = std::fs::read_to_string(&file)
                        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?;
                    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{} is not JSON: {e}", file.display()))?
                }
                None => json!({}),
            };
            let obj = body
                .as_object_mut()
                .ok_or_else(|| anyhow::anyhow!("the create body must be a JSON object"))?;
            let mut set = |k: &str, v: Option<Value>| {
                if let Some(v) = v {
                    obj.insert(k.to_owned(), v);
                }
            };
            set("name", name.map(Value::from));
            set("url", url.map(Value::from));
            set("events", (!events.is_empty()).then(|| Value::from(events)));
            set("tenant", tenant.map(Value::from));
            set("headers", (!headers.is_empty()).then(|| headers_json(headers)));
            set("secret", secret.map(Value::from));
            set("id", id.map(Value::from));
            set("uid", uid.map(Value::from));
            if limits.given() {
                let mut current = obj
                    .get("limits")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                limits.apply(&mut current);
                obj.insert("limits".into(), Value::Object(current));
            }
            one(&client.post("/v1/webhooks", Some(&body)).await?);
        }
        WebhooksCommand::List {
            tenant,
            status,
            event,
            limit,
            all,
        } => {
            let query = client::query(&[
                ("tenant", tenant),
                ("status", status),
                ("event", event),
                ("limit", limit.map(|l| l.to_string())),
            ]);
            let mut data = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let mut q = query.clone();
                if let Some(c) = &cursor {
                    q.push(format!("cursor={}", encode(c)));
                }
                let page = client.get(&format!("/v1/webhooks{}", client::query_suffix(&q))).await?;
                data.extend(page["data"].as_array().cloned().unwrap_or_default());
                cursor = page["next_cursor"].as_str().map(str::to_owned);
                if !all || cursor.is_none() {
                    break;
                }
            }
            let page = json!({"data": data, "next_cursor": cursor});
            client::print(&page, api.json, client::webhooks_table);
            if !api.json {
                if let Some(c) = cursor {
                    eprintln!("more: --all, or the API with cursor={c}");
                }
            }
        }
        WebhooksCommand::Get { id } => one(&client.get(&format!("/v1/webhooks/{}", encode(&id))).await?),
        WebhooksCommand::Update {
            id,
            name,
            url,
            events,
            headers,
            limits,
        } => {
            let mut body = serde_json::Map::new();
            if limits.given() {
                // The API replaces limits whole: change only what was asked.
                let current = client.get(&format!("/v1/webhooks/{}", encode(&id))).await?;
                let mut merged = current["limits"].as_object().cloned().unwrap_or_default();
                limits.apply(&mut merged);
                body.insert("limits".into(), Value::Object(merged));
            }
            if let Some(name) = name {
                body.insert("name".into(), name.into());
            }
            if let Some(url) = url {
                body.insert("url".into(), url.into());
            }
            if !events.is_empty() {
                body.insert("events".into(), events.into());
            }
            if !headers.is_empty() {
                body.insert("headers".into(), headers_json(headers));
            }
            if body.is_empty() {
                anyhow::bail!(
                    "nothing to change: pass --name, --url, --event, --header, --max-in-flight, --timeout-ms or --final-statuses"
                );
            }
            let path = format!("/v1/webhooks/{}", encode(&id));
            let v = client
                .call(reqwest::Method::PATCH, &path, Some(&Value::Object(body)))
                .await?;
            one(&v.unwrap_or(Value::Null));
        }
        WebhooksCommand::Pause { id } => one(&client
            .post(&format!("/v1/webhooks/{}/pause", encode(&id)), None)
            .await?),
        WebhooksCommand::Resume { id, replay } => {
            let body = json!({ "replay": replay });
            let resumed = client
                .post(&format!("/v1/webhooks/{}/resume", encode(&id)), Some(&body))
                .await?;
            if api.json {
                client::print(&resumed, true, |_| String::new());
            } else {
                one(&resumed["webhook"]);
            }
            if let Some(job_id) = resumed["replay"]["id"].as_str() {
                follow_replay(&client, job_id).await?;
            }
        }
        WebhooksCommand::Delete { id } => {
            client
                .call(reqwest::Method::DELETE, &format!("/v1/webhooks/{}", encode(&id)), None)
                .await?;
            println!("deleted webhook {id}");
        }
        WebhooksCommand::Secret { id } => {
            let v = client.get(&format!("/v1/webhooks/{}/secret", encode(&id))).await?;
            client::print(&v, api.json, client::secret_table);
        }
        WebhooksCommand::RotateSecret { id, secret } => {
            let body = secret.map(|s| json!({ "secret": s }));
            let v = client
                .post(&format!("/v1/webhooks/{}/secret", encode(&id)), body.as_ref())
                .await?;
            client::print(&v, api.json, client::secret_table);
        }
    }
    Ok(())
}

/// Shows a replay's progress until it ends.
async fn follow_replay(client: &ApiClient, job_id: &str) -> anyhow::Result<()> {
    let shown = client::ReplayProgress::new();
    loop {
        let job = client.get(&format!("/v1/replays/{}", encode(job_id))).await?;
        let n = |k: &str| job[k].as_u64().unwrap_or(0);
        let done = job["state"] != "running";
        shown.update(n("total"), n("scanned"), n("matched"), n("replayed"), done);
        if done {
            eprintln!("{}", client::replay_line(&job));
            if job["state"] == "failed" {
                anyhow::bail!("replay failed: {}", job["error"]);
            }
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

async fn deliveries(api: ApiArgs, command: DeliveriesCommand) -> anyhow::Result<()> {
    let client = ApiClient::new(&api.api_url, api.token)?;
    let webhook_path = |id: &str| format!("/v1/webhooks/{}", encode(id));
    match command {
        DeliveriesCommand::List {
            webhook,
            status,
            event_type,
            limit,
        } => {
            let query = client::query(&[
                ("status", status),
                ("event_type", event_type),
                ("limit", limit.map(|l| l.to_string())),
            ]);
            let page = client
                .get(&format!(
                    "{}/deliveries{}",
                    webhook_path(&webhook),
                    client::query_suffix(&query)
                ))
                .await?;
            client::print(&page, api.json, client::attempts_table);
        }
        DeliveriesCommand::Show { webhook, attempt } => {
            let a = client
                .get(&format!("{}/deliveries/{}", webhook_path(&webhook), encode(&attempt)))
                .await?;
            client::print(&a, api.json, client::attempt_table);
        }
        DeliveriesCommand::Retry { webhook, attempt } => {
            let r = client
                .post(
                    &format!("{}/deliveries/{}/retry", webhook_path(&webhook), encode(&attempt)),
                    None,
                )
                .await?;
            client::print(&r, api.json, |r| {
                format!(
                    "delivery {} scheduled again (attempt {})",
                    r["delivery_id"].as_str().unwrap_or("?"),
                    r["attempts"].as_u64().unwrap_or(0) + 1
                )
            });
        }
        DeliveriesCommand::Replay {
            webhook,
            since,
            until,
            force,
        } => {
            let mut body = serde_json::Map::new();
            if force {
                body.insert("force".into(), true.into());
            }
            if let Some(since) = since {
                body.insert("since".into(), since.into());
            }
            if let Some(until) = until {
                body.insert("until".into(), until.into());
            }
            let job = client
                .post(
                    &format!("{}/replay", webhook_path(&webhook)),
                    Some(&Value::Object(body)),
                )
                .await?;
            follow_replay(&client, job["id"].as_str().unwrap_or_default()).await?;
        }
        DeliveriesCommand::Stats { webhook, tenant } => {
            let path = match (webhook, tenant) {
                (_, Some(tenant)) => format!("/v1/tenants/{}/stats", encode(&tenant)),
                (Some(webhook), None) => format!("{}/stats", webhook_path(&webhook)),
                (None, None) => anyhow::bail!("name a webhook or --tenant"),
            };
            client::print(&client.get(&path).await?, api.json, client::stats_table);
        }
        DeliveriesCommand::Test { webhook, event_type } => {
            let r = client
                .post(
                    &format!("{}/test", webhook_path(&webhook)),
                    Some(&json!({ "event_type": event_type })),
                )
                .await?;
            client::print(&r, api.json, client::test_table);
        }
    }
    Ok(())
}

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

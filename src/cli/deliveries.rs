//! `herald deliveries ...`: a webhook's delivery history, retries, replays,
//! statistics and test pings, through the management API.

use clap::Subcommand;
use serde_json::{json, Value};

use super::api_client::{encode, query, query_suffix, ApiClient};
use super::tables::{
    attempt_table, attempts_table, events_table, print, replay_line, stats_table, test_table, ReplayProgress,
};
use super::ApiArgs;

/// `herald deliveries` commands.
#[derive(Subcommand)]
pub enum DeliveriesCommand {
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
    /// A webhook's deliveries by event, newest first: where each stands
    /// (delivered, pending_retry, dead_lettered, kept) and its attempts.
    Events {
        webhook: String,
        /// delivered, pending_retry, dead_lettered or kept.
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
    /// Deliver now, once each, the webhook's failed deliveries waiting in the
    /// retry tiers (same webhook-id; their waiting copies are then finished,
    /// not delivered again), and follow the job.
    RetryPending {
        webhook: String,
        /// Only count what would be delivered now.
        #[arg(long)]
        dry_run: bool,
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

/// A page of a webhook's history (`list`: `deliveries` or `events`).
async fn listed(
    client: &ApiClient,
    webhook_path: &str,
    list: &str,
    status: Option<String>,
    event_type: Option<String>,
    limit: Option<usize>,
) -> anyhow::Result<Value> {
    let query = query(&[
        ("status", status),
        ("event_type", event_type),
        ("limit", limit.map(|l| l.to_string())),
    ]);
    client
        .get(&format!("{webhook_path}/{list}{}", query_suffix(&query)))
        .await
}

/// Runs one `herald deliveries` command, printing its outcome.
pub async fn run(api: ApiArgs, command: DeliveriesCommand) -> anyhow::Result<()> {
    let client = ApiClient::new(&api.api_url, api.token)?;
    let webhook_path = |id: &str| format!("/v1/webhooks/{}", encode(id));
    match command {
        DeliveriesCommand::List {
            webhook,
            status,
            event_type,
            limit,
        } => {
            let page = listed(
                &client,
                &webhook_path(&webhook),
                "deliveries",
                status,
                event_type,
                limit,
            )
            .await?;
            print(&page, api.json, attempts_table);
        }
        DeliveriesCommand::Events {
            webhook,
            status,
            event_type,
            limit,
        } => {
            let page = listed(&client, &webhook_path(&webhook), "events", status, event_type, limit).await?;
            print(&page, api.json, events_table);
        }
        DeliveriesCommand::Show { webhook, attempt } => {
            let a = client
                .get(&format!("{}/deliveries/{}", webhook_path(&webhook), encode(&attempt)))
                .await?;
            print(&a, api.json, attempt_table);
        }
        DeliveriesCommand::Retry { webhook, attempt } => {
            let r = client
                .post(
                    &format!("{}/deliveries/{}/retry", webhook_path(&webhook), encode(&attempt)),
                    None,
                )
                .await?;
            print(&r, api.json, |r| {
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
        DeliveriesCommand::RetryPending { webhook, dry_run } => {
            let job = client
                .post(
                    &format!("{}/retry-pending", webhook_path(&webhook)),
                    Some(&serde_json::json!({ "dry_run": dry_run })),
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
            print(&client.get(&path).await?, api.json, stats_table);
        }
        DeliveriesCommand::Test { webhook, event_type } => {
            let r = client
                .post(
                    &format!("{}/test", webhook_path(&webhook)),
                    Some(&json!({ "event_type": event_type })),
                )
                .await?;
            print(&r, api.json, test_table);
        }
    }
    Ok(())
}

/// Shows a replay's progress until it ends.
pub(crate) async fn follow_replay(client: &ApiClient, job_id: &str) -> anyhow::Result<()> {
    let shown = ReplayProgress::new();
    loop {
        let job = client.get(&format!("/v1/replays/{}", encode(job_id))).await?;
        let n = |k: &str| job[k].as_u64().unwrap_or(0);
        let done = job["state"] != "running";
        shown.update(n("total"), n("scanned"), n("matched"), n("replayed"), done);
        if done {
            eprintln!("{}", replay_line(&job));
            if job["state"] == "failed" {
                anyhow::bail!("replay failed: {}", job["error"]);
            }
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

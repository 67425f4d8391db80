//! The `herald` command line: the services (`run`, `api`), configuration
//! checks, the management API's client (`webhooks`, `deliveries`,
//! `tenants`, `catalog`) and Kafka-side operator commands (`publish`, `replay`,
//! `create-topics`). `main.rs` only parses, loads the configuration and
//! starts the runtime.

pub mod api_client;
pub mod deliveries;
pub mod replay;
pub mod tables;
pub mod tenants;
pub mod topics;
pub mod webhooks;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Config;
use crate::retry::replay::{ReplayFilter, ReplayOptions};
use crate::Application;
use api_client::{encode, ApiClient};

/// `herald`'s arguments.
#[derive(Parser)]
#[command(name = "herald", version, about = "Kafka-native webhook delivery")]
pub struct Cli {
    /// Configuration file layered over config/default.toml (HERALD_... variables override both).
    #[arg(long, short, global = true, env = "HERALD_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// `herald` commands.
#[derive(Subcommand)]
pub enum Command {
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
        command: Box<webhooks::WebhooksCommand>,
    },
    /// A webhook's delivery history, through the management API.
    Deliveries {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: deliveries::DeliveriesCommand,
    },
    /// Manage tenants and their API tokens through the management API.
    Tenants {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: tenants::TenantsCommand,
    },
    /// Read the event catalogs through the management API.
    Catalog {
        #[command(flatten)]
        api: ApiArgs,
        #[command(subcommand)]
        command: CatalogCommand,
    },
    /// Print a link to a tenant's webhook portal (a new portal session).
    Portal {
        #[command(flatten)]
        api: ApiArgs,
        tenant: String,
        /// A session that can look but change nothing.
        #[arg(long)]
        read_only: bool,
        /// Only this webhook (its id).
        #[arg(long)]
        webhook: Option<String>,
        /// How long the link works, in seconds (default portal.session_ttl).
        #[arg(long)]
        ttl_seconds: Option<u64>,
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
        #[command(flatten)]
        filter: ReplayFilter,
        #[command(flatten)]
        options: ReplayOptions,
    },
    /// Create Kafka topics (existing ones are left alone); with no topic
    /// named, the topics Herald writes (dead letters, retry tiers, redrive,
    /// system events, attempts), each with the retention it needs.
    CreateTopics {
        topics: Vec<String>,
        #[arg(long, default_value_t = 3)]
        partitions: i32,
        /// Also raise the retention of those that exist and keep records
        /// for less than a record may wait there (and stop compacting
        /// them), keeping their other settings.
        #[arg(long)]
        fix_retention: bool,
    },
}

/// Where the management API is.
#[derive(clap::Args)]
pub struct ApiArgs {
    /// Base URL of the management API.
    #[arg(long, env = "HERALD_API_URL", default_value = "http://127.0.0.1:8080", global = true)]
    pub api_url: String,
    /// Bearer token (one of admin.tokens).
    #[arg(long, env = "HERALD_API_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// `herald catalog` commands.
#[derive(Subcommand)]
pub enum CatalogCommand {
    /// List the catalogs, or one catalog's event types.
    List { name: Option<String> },
}

pub(crate) fn parse_header(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("`{s}` is not NAME=VALUE"))
}

/// Runs `command` with `config` (loaded from `--config`).
pub async fn execute(command: Command, config: Config) -> anyhow::Result<()> {
    match command {
        Command::Run => {
            let shutdown = crate::app::shutdown_on_signals();
            let app = Application::build(config).await?;
            tracing::info!(ops = %app.ops_addr(), admin = ?app.admin_addr(), version = env!("CARGO_PKG_VERSION"), "herald starting");
            app.run_until_stopped(shutdown).await
        }
        Command::Api => crate::app::run_api(config, crate::app::shutdown_on_signals()).await,
        Command::Openapi => {
            println!("{}", crate::admin::openapi().to_pretty_json()?);
            Ok(())
        }
        Command::CheckConfig { broker } => {
            // The values are not printed: pass-through properties may hold credentials.
            println!("configuration is valid");
            if broker {
                let check = crate::app::check_topics(&config).await?;
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
        Command::Webhooks { api, command } => webhooks::run(api, *command).await,
        Command::Deliveries { api, command } => deliveries::run(api, command).await,
        Command::Tenants { api, command } => tenants::run(api, command).await,
        Command::Catalog { api, command } => {
            let client = ApiClient::new(&api.api_url, api.token)?;
            let CatalogCommand::List { name } = command;
            let path = match name {
                Some(name) => format!("/v1/catalogs/{}", encode(&name)),
                None => "/v1/catalogs".to_owned(),
            };
            tables::print(&client.get(&path).await?, api.json, tables::catalogs_table);
            Ok(())
        }
        Command::Portal {
            api,
            tenant,
            read_only,
            webhook,
            ttl_seconds,
        } => {
            let client = ApiClient::new(&api.api_url, api.token)?;
            let mut body = serde_json::json!({"capability": if read_only { "read_only" } else { "manage" }});
            if let Some(webhook) = webhook {
                body["webhook"] = webhook.into();
            }
            if let Some(ttl) = ttl_seconds {
                body["ttl_seconds"] = ttl.into();
            }
            let path = format!("/v1/tenants/{}/portal-sessions", encode(&tenant));
            let mut session = client.post(&path, Some(&body)).await?;
            // A path (no portal.public_url) is on the API's own address.
            if let Some(url) = session["url"].as_str().filter(|u| u.starts_with('/')) {
                session["url"] = format!("{}{url}", api.api_url.trim_end_matches('/')).into();
            }
            tables::print(&session, api.json, |s| {
                format!(
                    "{}\n(session {}, {}, until {})",
                    s["url"].as_str().unwrap_or_default(),
                    s["id"].as_str().unwrap_or_default(),
                    s["capability"].as_str().unwrap_or_default(),
                    s["expires_at"].as_str().unwrap_or_default()
                )
            });
            Ok(())
        }
        Command::Publish {
            topic,
            file,
            headers,
            key_pointer,
        } => {
            let options = topics::PublishOptions {
                topic: &topic,
                file: &file,
                headers: &headers,
                key_pointer: key_pointer.as_deref(),
            };
            let n = topics::publish(&config, options).await?;
            println!("published {n} records to {topic}");
            Ok(())
        }
        Command::Replay { filter, options } => replay::run(&config, &filter, options).await,
        Command::CreateTopics {
            topics,
            partitions,
            fix_retention,
        } => {
            for line in topics::create_topics(&config, &topics, partitions, fix_retention).await? {
                println!("{line}");
            }
            Ok(())
        }
    }
}

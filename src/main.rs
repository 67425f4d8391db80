//! `herald`: parses arguments and configuration, then calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use herald::config::Config;
use herald::{tools, Application};

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
    /// Check the configuration and exit (status 2 and the key at fault when invalid).
    CheckConfig,
    /// Read and write webhooks in the Redis subscription store.
    Webhooks {
        #[command(subcommand)]
        command: WebhooksCommand,
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
    /// Re-drive dead-lettered deliveries (same webhook-id) through the first retry tier.
    Replay {
        /// Only this webhook's deliveries.
        #[arg(long)]
        webhook: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
        /// Event type pattern: exact, `prefix.*` or `*`.
        #[arg(long)]
        event_type: Option<String>,
        /// Dead-letter reason, e.g. webhook_paused, retries_exhausted, endpoint_gone.
        #[arg(long)]
        reason: Option<String>,
        /// Dead-lettered at or after this RFC 3339 time.
        #[arg(long, value_parser = parse_time)]
        since: Option<time::OffsetDateTime>,
        /// Dead-lettered before this RFC 3339 time.
        #[arg(long, value_parser = parse_time)]
        until: Option<time::OffsetDateTime>,
        /// Count what would be replayed, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Create Kafka topics (existing ones are left alone).
    CreateTopics {
        topics: Vec<String>,
        #[arg(long, default_value_t = 3)]
        partitions: i32,
    },
}

#[derive(Subcommand)]
enum WebhooksCommand {
    /// Create or replace webhooks from a JSON file (one object or an array).
    Put { file: PathBuf },
    /// List webhooks as JSON (secrets and header values redacted).
    List {
        #[arg(long)]
        show_secrets: bool,
    },
    /// Delete a webhook.
    Delete { id: String },
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
    match runtime.block_on(execute(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
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
            tracing::info!(ops = %app.ops_addr(), version = env!("CARGO_PKG_VERSION"), "herald starting");
            app.run_until_stopped(shutdown).await
        }
        Command::CheckConfig => {
            // The values are not printed: pass-through properties may hold credentials.
            println!("configuration is valid");
            Ok(())
        }
        Command::Webhooks { command } => match command {
            WebhooksCommand::Put { file } => {
                for id in tools::put_webhooks(&config, &file).await? {
                    println!("stored webhook {id}");
                }
                Ok(())
            }
            WebhooksCommand::List { show_secrets } => {
                let list = tools::list_webhooks(&config, show_secrets).await?;
                println!("{}", serde_json::to_string_pretty(&list)?);
                Ok(())
            }
            WebhooksCommand::Delete { id } => {
                if tools::delete_webhook(&config, &id).await? {
                    println!("deleted webhook {id}");
                    Ok(())
                } else {
                    anyhow::bail!("no webhook {id}")
                }
            }
        },
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
            reason,
            since,
            until,
            dry_run,
        } => {
            let filter = herald::retry::replay::ReplayFilter {
                webhook,
                tenant,
                event_type,
                reason,
                since,
                until,
            };
            let progress = |s: &herald::retry::replay::ReplaySummary| {
                eprint!("\rscanned {} dead letters, {} matching", s.scanned, s.matched);
            };
            let summary = herald::retry::replay::replay(&config, &filter, dry_run, progress).await?;
            eprintln!();
            if dry_run {
                println!(
                    "dry run: {} of {} dead letters match; {} would be replayed ({} are not deliveries)",
                    summary.matched,
                    summary.scanned,
                    summary.matched - summary.skipped,
                    summary.skipped
                );
            } else {
                println!(
                    "replayed {} of {} matching dead letters ({} scanned; {} are not deliveries)",
                    summary.replayed, summary.matched, summary.scanned, summary.skipped
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

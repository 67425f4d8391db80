//! Command-line helpers for operators and the local setup: publish events,
//! create topics. They use the service's own Kafka configuration. Webhooks
//! are managed through the management API (`herald webhooks ...`).

use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

use crate::config::Config;

/// Options of [`publish`].
pub struct PublishOptions<'a> {
    pub topic: &'a str,
    /// JSON Lines: each non-empty line is one record value.
    pub file: &'a Path,
    /// Headers added to every record.
    pub headers: &'a [(String, String)],
    /// A JSON pointer whose value becomes the record key.
    pub key_pointer: Option<&'a str>,
}

/// Publishes each line of a JSON Lines file as one record; returns how many.
pub async fn publish(config: &Config, options: PublishOptions<'_>) -> anyhow::Result<usize> {
    let producer: FutureProducer = crate::kafka::producer_config(&config.kafka)
        .create()
        .context("cannot create the Kafka producer")?;
    let file = std::fs::File::open(options.file).with_context(|| format!("cannot read {}", options.file.display()))?;
    let mut sent = 0;
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let key = match options.key_pointer {
            Some(p) => {
                let v: serde_json::Value =
                    serde_json::from_str(&line).with_context(|| format!("line {} is not JSON", n + 1))?;
                v.pointer(p).map(|k| match k {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
            }
            None => None,
        };
        let mut headers = OwnedHeaders::new();
        for (k, v) in options.headers {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut record = FutureRecord::to(options.topic).payload(line.as_str()).headers(headers);
        if let Some(key) = &key {
            record = record.key(key.as_str());
        }
        if let Err((e, _)) = producer.send(record, Timeout::After(Duration::from_secs(30))).await {
            bail!("line {}: the broker did not accept the record: {e}", n + 1);
        }
        sent += 1;
    }
    producer.flush(Duration::from_secs(10))?;
    Ok(sent)
}

/// Creates the named `topics` (existing ones are left alone); or, when none
/// are named, the topics Herald writes, with the retention each needs,
/// checking (or with `fix_retention`, raising) the retention of those that
/// exist. Returns what it did, a line each.
pub async fn create_topics(
    config: &Config,
    topics: &[String],
    partitions: i32,
    fix_retention: bool,
) -> anyhow::Result<Vec<String>> {
    if !topics.is_empty() {
        if fix_retention {
            bail!("--fix-retention applies to the topics Herald writes: name no topic");
        }
        crate::kafka::create_topics(&config.kafka, topics, partitions).await?;
        return Ok(vec![format!("topics ready: {}", topics.join(", "))]);
    }
    let specs = crate::app::written_topics(config);
    let names: Vec<&str> = specs.iter().map(|t| t.name.as_str()).collect();
    let missing = crate::kafka::missing_topics(&config.kafka, &names).await?;
    let mut done = Vec::new();
    if !missing.is_empty() {
        let new: Vec<_> = specs.iter().filter(|t| missing.contains(&t.name)).cloned().collect();
        crate::kafka::create_topics_with(&config.kafka, &new, partitions).await?;
        done.push(format!("created: {}", missing.join(", ")));
    }
    if fix_retention {
        for raised in crate::kafka::raise_retention(&config.kafka, &specs).await? {
            let from = raised.from_ms.map_or("unknown".to_owned(), |ms| ms.to_string());
            let policy = raised
                .compacted
                .map(|p| format!(", cleanup.policy {p} -> delete"))
                .unwrap_or_default();
            done.push(format!(
                "raised: {} retention.ms {from} -> {}{policy}",
                raised.topic, raised.to_ms
            ));
        }
    }
    for unverified in crate::kafka::verify_retention(&config.kafka, &specs).await? {
        done.push(format!("unverified: {} ({})", unverified.topic, unverified.why));
    }
    done.push(format!("topics ready: {}", names.join(", ")));
    Ok(done)
}

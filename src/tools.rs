//! Command-line helpers for operators and the local setup: write webhooks
//! through the subscription store, publish events, create topics.
//!
//! They use the same store and Kafka configuration as the service, so what
//! they write is exactly what the pipeline reads.

use std::io::BufRead;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use time::OffsetDateTime;

use crate::config::Config;
use crate::subscriptions::model::Webhook;
use crate::subscriptions::store::SubscriptionStore;

async fn store(config: &Config) -> anyhow::Result<SubscriptionStore> {
    let client = redis::Client::open(config.redis.url.as_str()).context("invalid redis.url")?;
    SubscriptionStore::connect(&client, &config.redis.prefix)
        .await
        .with_context(|| format!("cannot connect to Redis at {}", config.redis.url))
}

/// Creates or replaces webhooks from a JSON file holding one webhook or an
/// array of them. `created_at`/`updated_at` may be omitted and default to now.
pub async fn put_webhooks(config: &Config, file: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text).context("the file is not JSON")?;
    let items = match value {
        serde_json::Value::Array(items) => items,
        other => vec![other],
    };
    let store = store(config).await?;
    let now = time::format_description::well_known::Rfc3339;
    let now = OffsetDateTime::now_utc().format(&now).expect("formats");
    let mut ids = Vec::new();
    for mut item in items {
        if let Some(obj) = item.as_object_mut() {
            obj.entry("created_at").or_insert_with(|| now.clone().into());
            obj.insert("updated_at".into(), now.clone().into());
        }
        let webhook: Webhook = serde_json::from_value(item).context("not a webhook document")?;
        store
            .put(&webhook)
            .await
            .with_context(|| format!("cannot store webhook {}", webhook.id))?;
        ids.push(webhook.id);
    }
    Ok(ids)
}

/// Every webhook, secrets redacted unless `show_secrets`.
pub async fn list_webhooks(config: &Config, show_secrets: bool) -> anyhow::Result<Vec<serde_json::Value>> {
    let store = store(config).await?;
    let mut out = Vec::new();
    for id in store.ids().await? {
        if let Some(w) = store.get(&id).await? {
            out.push(present(&w, show_secrets));
        }
    }
    Ok(out)
}

fn present(webhook: &Webhook, show_secrets: bool) -> serde_json::Value {
    let mut v = serde_json::to_value(webhook).expect("a webhook serialises");
    if !show_secrets {
        v["secrets"] = serde_json::json!(webhook.secrets.iter().map(|_| "whsec_…").collect::<Vec<_>>());
        if let Some(h) = v["headers"].as_object_mut() {
            h.values_mut().for_each(|x| *x = "…".into());
        }
    }
    v
}

/// Deletes a webhook; `false` when there was none.
pub async fn delete_webhook(config: &Config, id: &str) -> anyhow::Result<bool> {
    Ok(store(config).await?.delete(id).await?)
}

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

/// Creates topics (existing ones are left alone).
pub async fn create_topics(config: &Config, topics: &[String], partitions: i32) -> anyhow::Result<()> {
    crate::kafka::create_topics(&config.kafka, topics, partitions).await?;
    Ok(())
}

//! librdkafka client configuration and topic provisioning, shared by the
//! source consumer, the dead-letter producer and the tools.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;

use crate::config::KafkaConfig;

/// Properties common to every client: brokers plus the pass-through ones.
fn base(config: &KafkaConfig) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &config.brokers);
    cc.set("client.id", "herald");
    for (k, v) in &config.properties {
        cc.set(k, v);
    }
    cc
}

/// The source consumer: offsets are stored by Herald only when an event is
/// finished (`enable.auto.offset.store=false`) and committed from there.
pub fn consumer_config(config: &KafkaConfig, group_id: &str) -> ClientConfig {
    let mut cc = base(config);
    cc.set("group.id", group_id);
    cc.set("enable.auto.commit", "true");
    cc.set("auto.commit.interval.ms", "1000");
    cc.set("auto.offset.reset", "earliest");
    cc.set("enable.partition.eof", "false");
    // librdkafka prefetches up to 64 MiB per consumer by default; Herald's own
    // in-flight caps decide how much work is held, so a smaller prefetch
    // (still seconds of records) keeps memory bounded. Overridable.
    cc.set("queued.max.messages.kbytes", "16384");
    // When that prefetch is full (Herald's in-flight limit reached, records
    // waiting), librdkafka looks again only after fetch.queue.backoff.ms
    // (default 1 s): a drained queue would idle for the rest of it.
    cc.set("fetch.queue.backoff.ms", "50");
    if !config.statistics_interval.is_zero() {
        cc.set(
            "statistics.interval.ms",
            config.statistics_interval.as_millis().to_string(),
        );
    }
    for (k, v) in &config.consumer_properties {
        cc.set(k, v);
    }
    // Not overridable: at-least-once depends on it (validated in config).
    cc.set("enable.auto.offset.store", "false");
    cc
}

/// The dead-letter producer: idempotent, acknowledged by all in-sync replicas.
pub fn producer_config(config: &KafkaConfig) -> ClientConfig {
    let mut cc = base(config);
    cc.set("enable.idempotence", "true");
    cc.set("acks", "all");
    cc.set("linger.ms", "5");
    cc.set("compression.type", "lz4");
    for (k, v) in &config.producer_properties {
        cc.set(k, v);
    }
    cc
}

/// A topic that is missing and could not be created.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("cannot read cluster metadata from {brokers}: {source}")]
    Metadata {
        brokers: String,
        #[source]
        source: rdkafka::error::KafkaError,
    },
    #[error("topic `{0}` does not exist; create it, or set kafka.create_missing_topics = true")]
    Missing(String),
    #[error("could not create topic `{topic}`: {reason}")]
    Create { topic: String, reason: String },
}

/// Makes sure `topics` exist, creating the missing ones when `create` is set.
pub async fn ensure_topics(config: &KafkaConfig, topics: &[&str], create: bool) -> Result<(), TopicError> {
    let missing = missing_topics(config, topics).await?;
    if missing.is_empty() {
        return Ok(());
    }
    if !create {
        return Err(TopicError::Missing(missing.join(", ")));
    }
    create_topics(config, &missing, config.created_topic_partitions).await
}

/// Creates topics with `partitions` partitions; existing ones are left alone.
pub async fn create_topics(config: &KafkaConfig, topics: &[String], partitions: i32) -> Result<(), TopicError> {
    let admin: AdminClient<DefaultClientContext> = base(config).create().map_err(|e| TopicError::Metadata {
        brokers: config.brokers.clone(),
        source: e,
    })?;
    let new: Vec<NewTopic> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(-1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&new, &options)
        .await
        .map_err(|e| TopicError::Create {
            topic: topics.join(", "),
            reason: e.to_string(),
        })?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(TopicError::Create {
                    topic,
                    reason: code.to_string(),
                })
            }
        }
    }
    Ok(())
}

async fn missing_topics(config: &KafkaConfig, topics: &[&str]) -> Result<Vec<String>, TopicError> {
    let cc = base(config);
    let brokers = config.brokers.clone();
    let wanted: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = cc.create().map_err(|e| TopicError::Metadata {
            brokers: brokers.clone(),
            source: e,
        })?;
        let metadata = consumer
            .fetch_metadata(None, Duration::from_secs(15))
            .map_err(|e| TopicError::Metadata { brokers, source: e })?;
        let present: Vec<&str> = metadata
            .topics()
            .iter()
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.name())
            .collect();
        Ok(wanted.into_iter().filter(|t| !present.contains(&t.as_str())).collect())
    })
    .await
    .expect("metadata task does not panic")
}

/// Reads the record at `offset` of `topic`/`partition`, if the broker still
/// has it (`None` once retention has removed it).
pub async fn read_record(
    config: &KafkaConfig,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<Option<crate::event::SourceRecord>, rdkafka::error::KafkaError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    let mut cc = base(config);
    cc.set("group.id", "herald.reader");
    cc.set("enable.auto.commit", "false");
    cc.set("enable.partition.eof", "true");
    for (k, v) in &config.consumer_properties {
        cc.set(k, v);
    }
    let topic: std::sync::Arc<str> = std::sync::Arc::from(topic);
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = cc.create()?;
        let (low, high) = consumer.fetch_watermarks(&topic, partition, Duration::from_secs(10))?;
        if offset < low || offset >= high {
            return Ok(None);
        }
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(&topic, partition, rdkafka::Offset::Offset(offset))?;
        consumer.assign(&tpl)?;
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(500)) {
                Some(Ok(m)) if m.offset() == offset => {
                    return Ok(Some(crate::intake::consumer::to_record(topic.clone(), &m)))
                }
                Some(Ok(m)) if m.offset() > offset => return Ok(None),
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return Ok(None),
                Some(Err(e)) => return Err(e),
                _ => {}
            }
        }
        Ok(None)
    })
    .await
    .expect("the reader does not panic")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_and_sasl_clusters_are_supported() {
        let mut config = crate::config::Config::from_toml_overlay("").unwrap().kafka;
        for (k, v) in [
            ("security.protocol", "SASL_SSL"),
            ("sasl.mechanisms", "SCRAM-SHA-512"),
            ("sasl.username", "herald"),
            ("sasl.password", "secret"),
        ] {
            config.properties.insert(k.into(), v.into());
        }
        // Creating a client checks the properties; no connection is made.
        let consumer: Result<BaseConsumer, _> = consumer_config(&config, "g").create();
        assert!(consumer.is_ok(), "{:?}", consumer.err());
        let producer: Result<rdkafka::producer::BaseProducer, _> = producer_config(&config).create();
        assert!(producer.is_ok(), "{:?}", producer.err());
    }
}

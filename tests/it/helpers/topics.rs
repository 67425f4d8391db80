//! Reading what Herald wrote to Kafka: records, committed and end offsets,
//! topic settings.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::*;

/// A record read back from a topic.
#[derive(Debug, Clone)]
pub struct ReadRecord {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: BTreeMap<String, String>,
}

impl ReadRecord {
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
}

/// Reads every record of `topic` (all partitions, from the start) until at
/// least `n` were read or `timeout` passes.
pub async fn read_topic(topic: &str, n: usize, timeout: Duration) -> Vec<ReadRecord> {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("group.id", unique("reader"))
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10)).unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in metadata.topics()[0].partitions() {
            tpl.add_partition_offset(&topic, p.id(), Offset::Beginning).unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let deadline = std::time::Instant::now() + timeout;
        let mut out = Vec::new();
        while out.len() < n && std::time::Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                let headers = m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| {
                                (
                                    h.key.to_owned(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(ReadRecord {
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
        }
        out
    })
    .await
    .unwrap()
}

/// The group's committed offset per partition of `topic` (-1001 when none).
pub async fn committed(group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    try_committed(group, topic, partitions)
        .await
        .expect("the group's committed offsets")
}

/// [`committed`], `None` while the cluster cannot say (a broker failing).
pub async fn try_committed(group: &str, topic: &str, partitions: i32) -> Option<Vec<i64>> {
    let (group, topic) = (group.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers())
            .set("group.id", &group)
            .create()
            .ok()?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(&topic, p);
        }
        let committed = consumer.committed_offsets(tpl, Duration::from_secs(10)).ok()?;
        (0..partitions)
            .map(|p| match committed.find_partition(&topic, p)?.offset() {
                Offset::Offset(o) => Some(o),
                _ => Some(-1001),
            })
            .collect()
    })
    .await
    .unwrap()
}

/// Whether `group` has committed every record written so far to `topic`
/// (`None` while the cluster cannot say).
pub(super) async fn finished(group: &str, topic: &str) -> Option<bool> {
    let partitions = {
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers()).create().ok()?;
            let metadata = consumer.fetch_metadata(Some(&topic), Duration::from_secs(10)).ok()?;
            Some(metadata.topics().first()?.partitions().len() as i32)
        })
        .await
        .unwrap()?
    };
    let ends = try_end_offsets(topic, partitions).await?;
    let committed = try_committed(group, topic, partitions).await?;
    Some(ends.iter().zip(&committed).all(|(end, done)| *end == 0 || done >= end))
}

/// Sets `topic`'s `max.message.bytes` to `bytes`.
pub async fn set_max_message_bytes(topic: &str, bytes: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let change = AlterConfig::new(ResourceSpecifier::Topic(topic)).set("max.message.bytes", bytes);
    let results = admin
        .alter_configs(
            &[change],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap();
    for r in results {
        r.unwrap();
    }
}

/// The end offset of each partition of `topic`.
pub async fn end_offsets(topic: &str, partitions: i32) -> Vec<i64> {
    try_end_offsets(topic, partitions)
        .await
        .expect("the topic's end offsets")
}

/// [`end_offsets`], `None` while the cluster cannot say.
pub async fn try_end_offsets(topic: &str, partitions: i32) -> Option<Vec<i64>> {
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers()).create().ok()?;
        (0..partitions)
            .map(|p| {
                consumer
                    .fetch_watermarks(&topic, p, Duration::from_secs(10))
                    .ok()
                    .map(|w| w.1)
            })
            .collect()
    })
    .await
    .unwrap()
}

/// Grows `topic` to `partitions` partitions.
pub async fn add_partitions(topic: &str, partitions: usize) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .create()
        .unwrap();
    let results = admin
        .create_partitions(
            &[rdkafka::admin::NewPartitions::new(topic, partitions)],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .unwrap();
    for r in results {
        r.expect("partitions added");
    }
}

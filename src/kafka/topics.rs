//! The topics Herald writes (dead letters, retry tiers, the redrive topic,
//! system events, attempts): created with the retention they need, checked
//! at start, and brought up to it on request (`herald create-topics
//! --fix-retention`).

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;

use super::base;
use crate::config::kafka::KafkaConfig;

/// A topic Herald writes, with the retention it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    pub name: String,
    /// `retention.ms` set when Herald creates it.
    pub create_retention: Option<Duration>,
    /// The least an existing topic must keep records for: the longest a
    /// record may wait there before it is read (or replayed).
    pub min_retention: Option<Duration>,
}

impl TopicSpec {
    /// A topic with no retention requirement.
    pub fn plain(name: &str) -> TopicSpec {
        TopicSpec {
            name: name.to_owned(),
            create_retention: None,
            min_retention: None,
        }
    }
}

/// A topic that is missing, could not be created, or would lose records.
#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error(
        "cannot read cluster metadata from {brokers}: {source}{}",
        heard.as_deref().map(|h| format!("; the client reported: {h}")).unwrap_or_default()
    )]
    Metadata {
        brokers: String,
        #[source]
        source: rdkafka::error::KafkaError,
        /// The last error the client reported while trying: why it could
        /// not connect (authentication, a certificate), which the request
        /// itself only reports as a transport failure.
        heard: Option<Box<str>>,
    },
    #[error("topic `{0}` does not exist; create it, or set kafka.create_missing_topics = true")]
    Missing(String),
    #[error("could not create topic `{topic}`: {reason}")]
    Create { topic: String, reason: String },
    #[error(
        "topic `{topic}` keeps records for {} (retention.ms = {retention_ms}), but a record may wait there for \
         up to {}: it could expire before it is delivered or replayed. Raise its retention.ms to at least {} \
         ({FIX})",
        humantime::format_duration(Duration::from_millis(*.retention_ms as u64)),
        humantime::format_duration(*.needed),
        needed.as_millis()
    )]
    Retention {
        topic: String,
        retention_ms: i64,
        needed: Duration,
    },
    #[error(
        "topic `{topic}` has cleanup.policy = {policy}: compaction keeps one record per key and would drop \
         waiting retries and dead letters; use cleanup.policy = delete ({FIX})"
    )]
    Compacted { topic: String, policy: String },
    #[error("could not change the settings of topic `{topic}`: {reason}")]
    Alter { topic: String, reason: String },
}

/// How an operator fixes a topic Herald refuses, named in the refusal.
const FIX: &str = "`herald create-topics --fix-retention` with this configuration sets what Herald needs and \
                   keeps the topic's other settings; docs/operations.md#checking-topics-before-a-deployment";

/// What the broker says about a topic's retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// `retention.ms` (-1: forever).
    pub ms: Option<i64>,
    pub cleanup_policy: Option<String>,
    /// `retention.bytes` (-1: no limit).
    pub bytes: Option<i64>,
}

impl Retention {
    /// Whether records of a topic with this retention live at least `needed`.
    pub fn check(&self, topic: &str, needed: Duration) -> Result<(), TopicError> {
        if let Some(policy) = &self.cleanup_policy {
            if policy.split(',').any(|p| p.trim() == "compact") {
                return Err(TopicError::Compacted {
                    topic: topic.to_owned(),
                    policy: policy.clone(),
                });
            }
        }
        match self.ms {
            Some(ms) if ms >= 0 && (ms as u128) < needed.as_millis() => Err(TopicError::Retention {
                topic: topic.to_owned(),
                retention_ms: ms,
                needed,
            }),
            _ => Ok(()),
        }
    }
}

/// What [`ensure_topics`] could not verify (the broker did not say), for a warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unverified {
    pub topic: String,
    pub why: String,
}

/// Makes sure `topics` exist (creating the missing ones when `create` is
/// set, with their retention) and that the existing ones keep records long
/// enough. Returns what could not be verified.
pub async fn ensure_topics(
    config: &KafkaConfig,
    topics: &[TopicSpec],
    create: bool,
) -> Result<Vec<Unverified>, TopicError> {
    let names: Vec<&str> = topics.iter().map(|t| t.name.as_str()).collect();
    let missing = missing_topics(config, &names).await?;
    if !missing.is_empty() {
        if !create {
            return Err(TopicError::Missing(missing.join(", ")));
        }
        let specs: Vec<TopicSpec> = topics.iter().filter(|t| missing.contains(&t.name)).cloned().collect();
        create_topics_with(config, &specs, config.created_topic_partitions).await?;
    }
    verify_retention(config, topics).await
}

/// Checks that those of `topics` with a retention requirement keep records
/// long enough (and are not compacted); returns what the broker did not say.
pub async fn verify_retention(config: &KafkaConfig, topics: &[TopicSpec]) -> Result<Vec<Unverified>, TopicError> {
    let checked: Vec<&TopicSpec> = topics.iter().filter(|t| t.min_retention.is_some()).collect();
    if checked.is_empty() {
        return Ok(Vec::new());
    }
    let names: Vec<&str> = checked.iter().map(|t| t.name.as_str()).collect();
    let retentions = describe_retention(config, &names).await;
    let mut unverified = Vec::new();
    for (spec, retention) in checked.into_iter().zip(retentions) {
        match retention {
            Ok(r) => {
                r.check(&spec.name, spec.min_retention.unwrap_or_default())?;
                if let Some(bytes) = r.bytes.filter(|b| *b >= 0) {
                    unverified.push(Unverified {
                        topic: spec.name.clone(),
                        why: format!("retention.bytes = {bytes} may delete records before retention.ms does"),
                    });
                }
            }
            Err(why) => unverified.push(Unverified {
                topic: spec.name.clone(),
                why,
            }),
        }
    }
    Ok(unverified)
}

/// The retention of each of `topics`, or why it could not be read.
pub async fn describe_retention(config: &KafkaConfig, topics: &[&str]) -> Vec<Result<Retention, String>> {
    use rdkafka::admin::{ConfigResourceResult, ResourceSpecifier};
    let admin: AdminClient<DefaultClientContext> = match base(config).create() {
        Ok(a) => a,
        Err(e) => return topics.iter().map(|_| Err(e.to_string())).collect(),
    };
    let specifiers: Vec<ResourceSpecifier<'_>> = topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(15)));
    let results: Vec<ConfigResourceResult> = match admin.describe_configs(&specifiers, &options).await {
        Ok(r) => r,
        Err(e) => {
            return topics
                .iter()
                .map(|_| Err(format!("describe configs failed: {e}")))
                .collect()
        }
    };
    let mut out: Vec<Result<Retention, String>> = results
        .into_iter()
        .map(|r| match r {
            Ok(resource) => {
                let number = |name: &str| {
                    resource
                        .get(name)
                        .and_then(|e| e.value.as_deref())
                        .and_then(|v| v.trim().parse::<i64>().ok())
                };
                let retention = Retention {
                    ms: number("retention.ms"),
                    cleanup_policy: resource.get("cleanup.policy").and_then(|e| e.value.clone()),
                    bytes: number("retention.bytes"),
                };
                if retention.ms.is_none() {
                    Err("the broker does not report retention.ms".to_owned())
                } else {
                    Ok(retention)
                }
            }
            Err(code) => Err(format!("describe configs failed: {code}")),
        })
        .collect();
    out.resize_with(topics.len(), || Err("the broker did not describe it".to_owned()));
    out
}

/// Creates topics with `partitions` partitions; existing ones are left alone.
pub async fn create_topics(config: &KafkaConfig, topics: &[String], partitions: i32) -> Result<(), TopicError> {
    let specs: Vec<TopicSpec> = topics.iter().map(|t| TopicSpec::plain(t)).collect();
    create_topics_with(config, &specs, partitions).await
}

/// How long [`create_topics_with`] waits for created topics to show in the
/// cluster's metadata.
const VISIBLE_WITHIN: Duration = Duration::from_secs(30);

/// Creates topics with `partitions` partitions and their retention;
/// existing ones are left alone. Returns once every one of them is in the
/// cluster's metadata: the controller answers a creation before the brokers
/// list the topic, and a replica started in that moment (`herald
/// create-topics` then `herald run`) would find its retry topics missing and
/// refuse to start.
pub async fn create_topics_with(config: &KafkaConfig, topics: &[TopicSpec], partitions: i32) -> Result<(), TopicError> {
    create_only(config, topics, partitions).await?;
    let names: Vec<&str> = topics.iter().map(|t| t.name.as_str()).collect();
    let deadline = tokio::time::Instant::now() + VISIBLE_WITHIN;
    loop {
        let missing = missing_topics(config, &names).await?;
        if missing.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(TopicError::Create {
                topic: missing.join(", "),
                reason: format!(
                    "created, but not in the cluster's metadata after {}",
                    humantime::format_duration(VISIBLE_WITHIN)
                ),
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asks the cluster to create `topics`; the creation may not be visible yet.
async fn create_only(config: &KafkaConfig, topics: &[TopicSpec], partitions: i32) -> Result<(), TopicError> {
    let admin: AdminClient<DefaultClientContext> = base(config).create().map_err(|e| TopicError::Metadata {
        brokers: config.brokers.clone(),
        source: e,
        heard: None,
    })?;
    let retention: Vec<Option<String>> = topics
        .iter()
        .map(|t| t.create_retention.map(|r| r.as_millis().to_string()))
        .collect();
    let new: Vec<NewTopic> = topics
        .iter()
        .zip(&retention)
        .map(|(t, ms)| {
            let topic = NewTopic::new(&t.name, partitions, TopicReplication::Fixed(-1));
            match ms {
                Some(ms) => topic.set("retention.ms", ms).set("cleanup.policy", "delete"),
                None => topic,
            }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(&new, &options)
        .await
        .map_err(|e| TopicError::Create {
            topic: topics.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", "),
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

/// A client context keeping the last error librdkafka reported: why a
/// connection failed (a refused password, an untrusted certificate) is said
/// only there, while the request that needed the connection fails as a
/// transport failure.
#[derive(Default)]
struct Heard(parking_lot::Mutex<Option<String>>);

impl Heard {
    fn last(&self) -> Option<Box<str>> {
        self.0.lock().as_deref().map(Box::from)
    }
}

impl rdkafka::ClientContext for Heard {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::debug!(%error, reason, "Kafka client error while reading metadata");
        *self.0.lock() = Some(reason.to_owned());
    }
}

impl rdkafka::consumer::ConsumerContext for Heard {}

/// Those of `topics` the cluster does not have.
pub async fn missing_topics(config: &KafkaConfig, topics: &[&str]) -> Result<Vec<String>, TopicError> {
    let cc = base(config);
    let brokers = config.brokers.clone();
    let wanted: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer<Heard> =
            cc.create_with_context(Heard::default())
                .map_err(|e| TopicError::Metadata {
                    brokers: brokers.clone(),
                    source: e,
                    heard: None,
                })?;
        let metadata = consumer.fetch_metadata(None, Duration::from_secs(15)).map_err(|e| {
            // The client reports its errors as it is polled.
            let _ = consumer.poll(Duration::from_millis(100));
            TopicError::Metadata {
                brokers,
                source: e,
                heard: consumer.context().last(),
            }
        })?;
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

/// A topic whose settings `raise_retention` brought up to what Herald needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Raised {
    pub topic: String,
    /// `retention.ms` before, and after.
    pub from_ms: Option<i64>,
    pub to_ms: u128,
    /// `cleanup.policy` before, when it compacted.
    pub compacted: Option<String>,
}

/// The `kafka-configs` line that gives `topic` the settings `spec` needs,
/// for operators who change topics with Kafka's own tools.
pub fn fix_command(config: &KafkaConfig, spec: &TopicSpec) -> String {
    let ms = spec
        .create_retention
        .or(spec.min_retention)
        .unwrap_or_default()
        .as_millis();
    format!(
        "kafka-configs.sh --bootstrap-server {} --alter --entity-type topics --entity-name {} \
         --add-config retention.ms={ms},cleanup.policy=delete",
        config.brokers, spec.name
    )
}

/// Brings those of `topics` that exist and keep records for less than they
/// must (or compact them) up to what Herald needs: `retention.ms` as Herald
/// creates the topic, `cleanup.policy = delete`. The broker's AlterConfigs
/// replaces a topic's whole set of settings, so the topic's other settings
/// are read and written back with the change; a topic with a setting the
/// broker will not show (a sensitive one) is left alone, with the
/// `kafka-configs` line that changes it instead.
pub async fn raise_retention(config: &KafkaConfig, topics: &[TopicSpec]) -> Result<Vec<Raised>, TopicError> {
    use rdkafka::admin::{AlterConfig, ConfigSource, ResourceSpecifier};
    let checked: Vec<&TopicSpec> = topics.iter().filter(|t| t.min_retention.is_some()).collect();
    let names: Vec<&str> = checked.iter().map(|t| t.name.as_str()).collect();
    let missing = missing_topics(config, &names).await?;
    let checked: Vec<&TopicSpec> = checked.into_iter().filter(|t| !missing.contains(&t.name)).collect();
    if checked.is_empty() {
        return Ok(Vec::new());
    }
    let admin: AdminClient<DefaultClientContext> = base(config).create().map_err(|e| TopicError::Metadata {
        brokers: config.brokers.clone(),
        source: e,
        heard: None,
    })?;
    let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(15)));
    let specifiers: Vec<ResourceSpecifier<'_>> = checked.iter().map(|t| ResourceSpecifier::Topic(&t.name)).collect();
    let described = admin
        .describe_configs(&specifiers, &options)
        .await
        .map_err(|e| TopicError::Alter {
            topic: names.join(", "),
            reason: format!("cannot read its settings: {e}"),
        })?;
    // What to write per topic: its own settings, then Herald's.
    let mut writes: Vec<(Vec<(String, String)>, Raised)> = Vec::new();
    for (spec, resource) in checked.iter().zip(described) {
        let resource = resource.map_err(|code| TopicError::Alter {
            topic: spec.name.clone(),
            reason: format!("cannot read its settings: {code}"),
        })?;
        let number = |name: &str| {
            resource
                .get(name)
                .and_then(|e| e.value.as_deref()?.trim().parse::<i64>().ok())
        };
        let current = Retention {
            ms: number("retention.ms"),
            cleanup_policy: resource.get("cleanup.policy").and_then(|e| e.value.clone()),
            bytes: number("retention.bytes"),
        };
        if current
            .check(&spec.name, spec.min_retention.unwrap_or_default())
            .is_ok()
        {
            continue;
        }
        let own: Vec<&rdkafka::admin::ConfigEntry> = resource
            .entries
            .iter()
            .filter(|e| e.source == ConfigSource::DynamicTopic)
            .collect();
        if own.iter().any(|e| e.is_sensitive || e.value.is_none()) {
            return Err(TopicError::Alter {
                topic: spec.name.clone(),
                reason: format!(
                    "it has a setting the broker does not show, which rewriting its settings would lose; run: {}",
                    fix_command(config, spec)
                ),
            });
        }
        let to_ms = spec
            .create_retention
            .or(spec.min_retention)
            .unwrap_or_default()
            .as_millis();
        let mut settings: Vec<(String, String)> = own
            .iter()
            .filter(|e| e.name != "retention.ms" && e.name != "cleanup.policy")
            .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
            .collect();
        settings.push(("retention.ms".into(), to_ms.to_string()));
        settings.push(("cleanup.policy".into(), "delete".into()));
        let compacted = current
            .cleanup_policy
            .filter(|p| p.split(',').any(|p| p.trim() == "compact"));
        let raised = Raised {
            topic: spec.name.clone(),
            from_ms: current.ms,
            to_ms,
            compacted,
        };
        writes.push((settings, raised));
    }
    if writes.is_empty() {
        return Ok(Vec::new());
    }
    let alters: Vec<AlterConfig<'_>> = writes
        .iter()
        .map(|(settings, raised)| {
            settings.iter().fold(
                AlterConfig::new(ResourceSpecifier::Topic(&raised.topic)),
                |a, (k, v)| a.set(k, v),
            )
        })
        .collect();
    let results = admin
        .alter_configs(&alters, &options)
        .await
        .map_err(|e| TopicError::Alter {
            topic: names.join(", "),
            reason: e.to_string(),
        })?;
    for result in results {
        if let Err((resource, code)) = result {
            return Err(TopicError::Alter {
                topic: format!("{resource:?}"),
                reason: code.to_string(),
            });
        }
    }
    Ok(writes.into_iter().map(|(_, raised)| raised).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_shorter_than_the_longest_wait_is_refused() {
        let week = Duration::from_secs(7 * 86_400);
        let r = |ms: i64, policy: &str| Retention {
            ms: Some(ms),
            cleanup_policy: Some(policy.into()),
            bytes: Some(-1),
        };
        assert!(r(-1, "delete").check("t", week).is_ok(), "forever is long enough");
        assert!(r(week.as_millis() as i64 * 3, "delete").check("t", week).is_ok());
        let err = r(week.as_millis() as i64, "delete")
            .check("herald.retry.1w", week * 3)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`herald.retry.1w` keeps records for 7days"), "{err}");
        assert!(err.contains("up to 21days"), "{err}");
        assert!(err.contains("at least 1814400000"), "{err}");
        let err = r(-1, "compact,delete").check("t", week).unwrap_err().to_string();
        assert!(err.contains("cleanup.policy = compact,delete"), "{err}");
        let unknown = Retention {
            ms: None,
            cleanup_policy: None,
            bytes: None,
        };
        assert!(unknown.check("t", week).is_ok(), "nothing said, nothing refused");
    }
}

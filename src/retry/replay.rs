//! Replay: re-drive dead-lettered deliveries into delivery.
//!
//! A replay reads the dead-letter topic from its start up to its end at the
//! moment the replay begins, keeps the records that match the filter, and
//! writes each one into the redrive topic, due now. The retry consumer then
//! delivers it like any retry: to the webhook as it is now (if it is still
//! the webhook the delivery was for), with the same `webhook-id`, its attempt
//! count and history carried on. A replayed delivery that fails again goes
//! through the tiers once more, from the first.
//!
//! Only deliveries can be replayed: a record that never was routed (invalid
//! JSON, no event type) has no webhook, and is counted as skipped.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;
use rdkafka::{Offset, TopicPartitionList};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::config::Config;
use crate::retry::codec::{self, headers as h};
use crate::subscriptions::model::pattern_matches;

/// Which dead letters to replay; every set field must match.
#[derive(Debug, Clone, Default)]
pub struct ReplayFilter {
    pub webhook: Option<String>,
    /// The tenant of the webhook (or, for records that do not say, of the event).
    pub tenant: Option<String>,
    /// The webhook's incarnation (`created_at`): dead letters of an earlier
    /// webhook with the same id are not its own.
    pub webhook_created_at: Option<OffsetDateTime>,
    /// An event type pattern: exact, `prefix.*` or `*`.
    pub event_type: Option<String>,
    /// `herald.reason` is one of these (any when empty), e.g.
    /// `webhook_paused` or `retries_exhausted`.
    pub reasons: Vec<String>,
    /// Dead-lettered at or after.
    pub since: Option<OffsetDateTime>,
    /// Dead-lettered before.
    pub until: Option<OffsetDateTime>,
}

impl ReplayFilter {
    fn matches(&self, headers: &HashMap<String, String>) -> bool {
        let eq = |want: &Option<String>, key: &str| want.as_ref().is_none_or(|w| headers.get(key) == Some(w));
        let event_type_ok = self.event_type.as_ref().is_none_or(|pattern| {
            let t = headers.get(h::EVENT_TYPE).map(String::as_str).unwrap_or("");
            pattern_matches(pattern, t)
        });
        let at = headers
            .get(h::DEAD_LETTERED_AT)
            .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok());
        let time_ok = match (at, self.since, self.until) {
            (_, None, None) => true,
            (None, _, _) => false,
            (Some(at), since, until) => since.is_none_or(|s| at >= s) && until.is_none_or(|u| at < u),
        };
        let tenant_ok = self.tenant.as_ref().is_none_or(|want| {
            let tenant = headers.get(h::WEBHOOK_TENANT).or_else(|| headers.get(h::TENANT));
            tenant == Some(want)
        });
        let incarnation_ok = self.webhook_created_at.is_none_or(|want| {
            headers
                .get(h::WEBHOOK_CREATED_AT)
                .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
                .is_none_or(|at| at == want)
        });
        eq(&self.webhook, h::WEBHOOK_ID)
            && tenant_ok
            && incarnation_ok
            && (self.reasons.is_empty() || headers.get(h::REASON).is_some_and(|r| self.reasons.contains(r)))
            && event_type_ok
            && time_ok
    }
}

/// What a replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReplaySummary {
    /// Dead letters read.
    pub scanned: u64,
    /// Matching the filter.
    pub matched: u64,
    /// Matching but not deliveries (never routed), so not replayable.
    pub skipped: u64,
    /// Written to the redrive topic (0 on a dry run).
    pub replayed: u64,
}

/// A replay that could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
}

/// Replays matching dead letters (or only counts them when `dry_run`);
/// `progress` is called as records are read.
pub async fn replay(
    config: &Config,
    filter: &ReplayFilter,
    dry_run: bool,
    progress: impl Fn(&ReplaySummary) + Send + 'static,
) -> Result<ReplaySummary, ReplayError> {
    let redrive_topic = config.retry.redrive_topic.clone();
    let producer: FutureProducer = crate::kafka::producer_config(&config.kafka).create()?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(Option<Vec<u8>>, Vec<u8>, OwnedHeaders)>(256);
    let reader = {
        let config = config.clone();
        let filter = filter.clone();
        tokio::task::spawn_blocking(move || read(&config, &filter, tx, progress))
    };
    let mut replayed = 0;
    while let Some((key, value, headers)) = rx.recv().await {
        if dry_run {
            continue;
        }
        let mut record = FutureRecord::to(&redrive_topic).payload(&value).headers(headers);
        if let Some(key) = &key {
            record = record.key(key);
        }
        producer
            .send(record, Timeout::After(Duration::from_secs(30)))
            .await
            .map_err(|(e, _)| e)?;
        replayed += 1;
    }
    producer.flush(Timeout::After(Duration::from_secs(30)))?;
    let mut summary = reader.await.expect("the reader does not panic")?;
    summary.replayed = replayed;
    Ok(summary)
}

/// Reads the dead-letter topic up to its current end, sending matches on.
fn read(
    config: &Config,
    filter: &ReplayFilter,
    tx: tokio::sync::mpsc::Sender<(Option<Vec<u8>>, Vec<u8>, OwnedHeaders)>,
    progress: impl Fn(&ReplaySummary),
) -> Result<ReplaySummary, ReplayError> {
    let topic = &config.dead_letter.topic;
    let consumer: BaseConsumer =
        crate::kafka::consumer_config(&config.kafka, &format!("{}.replay", config.kafka.group_id))
            .set("enable.auto.commit", "false")
            .create()?;
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(15))?;
    let mut ends = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in metadata.topics().first().map(|t| t.partitions()).unwrap_or_default() {
        let (low, high) = consumer.fetch_watermarks(topic, p.id(), Duration::from_secs(15))?;
        if high > low {
            ends.insert(p.id(), high);
            tpl.add_partition_offset(topic, p.id(), Offset::Offset(low))?;
        }
    }
    let mut summary = ReplaySummary::default();
    if ends.is_empty() {
        return Ok(summary);
    }
    consumer.assign(&tpl)?;
    while !ends.is_empty() {
        let Some(message) = consumer.poll(Duration::from_secs(1)) else {
            continue;
        };
        let message = message?;
        if message.offset() + 1 >= ends.get(&message.partition()).copied().unwrap_or(0) {
            ends.remove(&message.partition());
        }
        summary.scanned += 1;
        let headers: HashMap<String, String> = message
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|hd| {
                        (
                            hd.key.to_owned(),
                            String::from_utf8_lossy(hd.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        if filter.matches(&headers) {
            summary.matched += 1;
            let raw: Vec<(&str, Option<&[u8]>)> = message
                .headers()
                .map(|hs| hs.iter().map(|hd| (hd.key, hd.value)).collect())
                .unwrap_or_default();
            if codec::is_redrivable(raw.iter().copied()) {
                let out = codec::redrive(raw.iter().copied(), SystemTime::now());
                let item = (
                    message.key().map(<[u8]>::to_vec),
                    message.payload().unwrap_or_default().to_vec(),
                    out,
                );
                if tx.blocking_send(item).is_err() {
                    break;
                }
            } else {
                summary.skipped += 1;
            }
        }
        if summary.scanned % 500 == 0 {
            progress(&summary);
        }
    }
    progress(&summary);
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn filters_combine() {
        let letter = headers(&[
            (h::WEBHOOK_ID, "wh_1"),
            (h::TENANT, "acme"),
            (h::EVENT_TYPE, "tour.completed"),
            (h::REASON, "webhook_paused"),
            (h::DEAD_LETTERED_AT, "2025-03-01T10:00:00Z"),
        ]);
        let t = |s: &str| OffsetDateTime::parse(s, &Rfc3339).unwrap();
        assert!(ReplayFilter::default().matches(&letter));
        let f = ReplayFilter {
            webhook: Some("wh_1".into()),
            tenant: Some("acme".into()),
            webhook_created_at: None,
            event_type: Some("tour.*".into()),
            reasons: vec!["webhook_paused".into()],
            since: Some(t("2025-03-01T00:00:00Z")),
            until: Some(t("2025-03-02T00:00:00Z")),
        };
        assert!(f.matches(&letter));
        // The webhook's own tenant and incarnation, where the record says.
        let mut bound = letter.clone();
        bound.insert(h::WEBHOOK_TENANT.into(), "globex".into());
        bound.insert(h::WEBHOOK_CREATED_AT.into(), "2025-02-01T00:00:00.5Z".into());
        assert!(!f.matches(&bound), "the webhook's tenant wins over the event's");
        let globex = ReplayFilter {
            tenant: Some("globex".into()),
            webhook_created_at: Some(t("2025-02-01T00:00:00.5Z")),
            ..f.clone()
        };
        assert!(globex.matches(&bound));
        let recreated = ReplayFilter {
            webhook_created_at: Some(t("2025-02-02T00:00:00Z")),
            ..globex.clone()
        };
        assert!(!recreated.matches(&bound), "an earlier webhook with the same id");
        for other in [
            ReplayFilter {
                webhook: Some("wh_2".into()),
                ..f.clone()
            },
            ReplayFilter {
                tenant: Some("globex".into()),
                ..f.clone()
            },
            ReplayFilter {
                event_type: Some("survey.*".into()),
                ..f.clone()
            },
            ReplayFilter {
                event_type: Some("tour".into()),
                ..f.clone()
            },
            ReplayFilter {
                reasons: vec!["retries_exhausted".into()],
                ..f.clone()
            },
            ReplayFilter {
                since: Some(t("2025-03-01T10:00:01Z")),
                ..f.clone()
            },
            ReplayFilter {
                until: Some(t("2025-03-01T10:00:00Z")),
                ..f.clone()
            },
        ] {
            assert!(!other.matches(&letter), "{other:?}");
        }
    }
}

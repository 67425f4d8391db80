//! librdkafka client configuration, the shared producer and records read
//! from messages, for the consumers, the failure path and the tools; the
//! topics Herald writes are provisioned in `topics` (src/kafka/topics.rs).

mod topics;

pub use topics::*;

use std::sync::Arc;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::{FutureProducer, Producer as _};

use crate::config::kafka::{GroupProtocol, KafkaConfig};
use crate::event::{RecordHeader, SourceRecord};

/// Properties common to every client: brokers plus the pass-through ones.
pub(crate) fn base(config: &KafkaConfig) -> ClientConfig {
    let mut cc = ClientConfig::new();
    cc.set("bootstrap.servers", &config.brokers);
    cc.set("client.id", "herald");
    for (k, v) in &config.properties {
        cc.set(k, v);
    }
    cc
}

/// How often each consumer refreshes the metadata of the topics it reads
/// (librdkafka's default is 300000).
const METADATA_REFRESH_MS: &str = "30000";

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
    // A partition Herald paused at its in-flight cap and resumes is fetched
    // again only in the broker thread's next fetch request, and one fetch is
    // in flight at a time: while another of the consumer's partitions is
    // idle (the redrive topic beside a tier, quiet source partitions), that
    // request is a long poll the broker holds for fetch.wait.max.ms. At the
    // default 500 ms a busy partition stalled that long per cap (due retries
    // drained at a fifth of the source path's rate); 20 ms costs an idle
    // consumer 50 small fetches a second per broker (docs/benchmarks.md).
    cc.set("fetch.wait.max.ms", "20");
    // The client learns of partitions added to a topic it reads (and of a
    // source topic created after Herald started) only from its periodic
    // metadata refresh, every 5 minutes by default: events written there
    // waited that long. A refresh is one small request per client.
    cc.set("topic.metadata.refresh.interval.ms", METADATA_REFRESH_MS);
    if !config.statistics_interval.is_zero() {
        cc.set(
            "statistics.interval.ms",
            config.statistics_interval.as_millis().to_string(),
        );
    }
    match config.group_protocol {
        // Incremental rebalancing: a member joining or leaving moves only the
        // partitions that change hands; the others keep delivering (the
        // eager assignors revoke every partition of every member first).
        GroupProtocol::Classic => cc.set("partition.assignment.strategy", "cooperative-sticky"),
        GroupProtocol::Consumer => cc.set("group.protocol", "consumer"),
    };
    for (k, v) in &config.consumer_properties {
        cc.set(k, v);
    }
    // Not overridable (validated in config): at-least-once depends on the
    // first; on the second, that no receiver gets an event of a transaction
    // its producer aborted (librdkafka's default, set here so that it stays).
    cc.set("enable.auto.offset.store", "false");
    cc.set("isolation.level", "read_committed");
    cc
}

/// The dead-letter producer: idempotent, acknowledged by all in-sync replicas.
pub fn producer_config(config: &KafkaConfig) -> ClientConfig {
    let mut cc = base(config);
    cc.set("enable.idempotence", "true");
    cc.set("acks", "all");
    cc.set("linger.ms", "5");
    cc.set("compression.type", "lz4");
    // librdkafka buffers up to 1 GiB of unacknowledged records by default;
    // with 1 MB events that alone would exceed a replica's memory. Writers
    // wait (QueueFull is retried) when 64 MiB are outstanding.
    cc.set("queue.buffering.max.kbytes", "65536");
    for (k, v) in &config.producer_properties {
        cc.set(k, v);
    }
    cc
}

/// The producer every writer of a process shares, replaced when it fails
/// fatally.
///
/// An idempotent producer can fail fatally (e.g. the broker lost track of its
/// sequence numbers); librdkafka then refuses every later produce with
/// `Fatal`. A writer that sees such an error calls [`SharedProducer::recover`]:
/// the first to do so replaces the producer with a new one, and every writer
/// then goes on with it. Records the failed producer had not delivered are
/// reported failed to their writers, which write them again.
#[derive(Clone)]
pub struct SharedProducer {
    current: std::sync::Arc<arc_swap::ArcSwap<FutureProducer>>,
    config: std::sync::Arc<ClientConfig>,
}

/// Why the producer was replaced.
#[derive(Debug, Clone)]
pub struct Recreated {
    pub code: RDKafkaErrorCode,
    pub reason: String,
}

impl SharedProducer {
    /// Creates the producer from Herald's producer configuration.
    pub fn new(config: &KafkaConfig) -> rdkafka::error::KafkaResult<SharedProducer> {
        Self::from_client_config(producer_config(config))
    }

    /// Creates the producer from `config` as given.
    pub fn from_client_config(config: ClientConfig) -> rdkafka::error::KafkaResult<SharedProducer> {
        let producer: FutureProducer = config.create()?;
        Ok(SharedProducer {
            current: std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(producer)),
            config: std::sync::Arc::new(config),
        })
    }

    /// The current producer.
    pub fn get(&self) -> std::sync::Arc<FutureProducer> {
        self.current.load_full()
    }

    /// After a produce through `used` failed: when `used` has failed fatally
    /// and is still the current producer, replaces it and says why. Returns
    /// `Ok(None)` when there was nothing to do (not fatal, or another writer
    /// replaced it already).
    pub fn recover(&self, used: &std::sync::Arc<FutureProducer>) -> rdkafka::error::KafkaResult<Option<Recreated>> {
        let Some((code, reason)) = used.client().fatal_error() else {
            return Ok(None);
        };
        let fresh: FutureProducer = self.config.create()?;
        let previous = self.current.compare_and_swap(used, std::sync::Arc::new(fresh));
        if !std::sync::Arc::ptr_eq(&previous, used) {
            // Another writer replaced it first; the producer just made is dropped.
            return Ok(None);
        }
        Ok(Some(Recreated { code, reason }))
    }

    /// Waits up to `timeout` for the current producer's queued records.
    pub fn flush(&self, timeout: Duration) -> rdkafka::error::KafkaResult<()> {
        use rdkafka::producer::Producer;
        self.get().flush(timeout)
    }
}

/// What a failed produce means for the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProduceError {
    /// The record (with its key and headers) exceeds what the producer or
    /// the broker accepts; writing it again the same way will fail again.
    TooLarge,
    /// The producer failed fatally: replace it ([`SharedProducer::recover`]).
    Fatal,
    /// The destination refuses every record for good (authorization, an
    /// unknown topic): write it elsewhere, or wait for an operator.
    Permanent,
    /// The destination refuses this record for what it is (an invalid
    /// record or timestamp, a policy): writing it again the same way fails
    /// again.
    Invalid,
    /// Worth trying again after a pause (the broker is unreachable, a leader
    /// is moving, a timeout).
    Temporary,
}

/// Classifies a produce error.
pub fn classify_produce_error(error: &rdkafka::error::KafkaError) -> ProduceError {
    use rdkafka::error::KafkaError;
    let code = match error {
        KafkaError::MessageProduction(code) => *code,
        KafkaError::Global(code) => *code,
        _ => return ProduceError::Temporary,
    };
    match code {
        RDKafkaErrorCode::MessageSizeTooLarge
        | RDKafkaErrorCode::MessageBatchTooLarge
        | RDKafkaErrorCode::InvalidMessageSize => ProduceError::TooLarge,
        RDKafkaErrorCode::Fatal => ProduceError::Fatal,
        RDKafkaErrorCode::TopicAuthorizationFailed
        | RDKafkaErrorCode::ClusterAuthorizationFailed
        | RDKafkaErrorCode::UnknownTopic
        | RDKafkaErrorCode::UnknownPartition
        | RDKafkaErrorCode::InvalidRequiredAcks => ProduceError::Permanent,
        RDKafkaErrorCode::InvalidRecord | RDKafkaErrorCode::InvalidTimestamp | RDKafkaErrorCode::PolicyViolation => {
            ProduceError::Invalid
        }
        _ => ProduceError::Temporary,
    }
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
                Some(Ok(m)) if m.offset() == offset => return Ok(Some(to_record(topic.clone(), &m))),
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

/// A consumed message as Herald's record of it (its bytes copied, so the
/// message can be released).
pub fn to_record(topic: Arc<str>, message: &BorrowedMessage<'_>) -> SourceRecord {
    let headers = record_headers(message);
    SourceRecord {
        topic,
        partition: message.partition(),
        offset: message.offset(),
        timestamp_ms: message.timestamp().to_millis(),
        key: message.key().map(bytes::Bytes::copy_from_slice),
        value: message.payload().map(bytes::Bytes::copy_from_slice).unwrap_or_default(),
        headers,
    }
}

/// The headers of `message`. A header name that is not UTF-8 (any client
/// but Java's can write one) is read with its invalid bytes replaced by
/// U+FFFD: rdkafka's own header reader panics on it, which would stop the
/// partition at that record on every replica, at every restart (or a
/// replay at that dead letter).
pub fn record_headers(message: &BorrowedMessage<'_>) -> Vec<RecordHeader> {
    use rdkafka::bindings as rd;
    use rdkafka::types::RDKafkaRespErr;
    let mut headers: *mut rd::rd_kafka_headers_t = std::ptr::null_mut();
    // SAFETY: `message.ptr()` is the live message `message` borrows;
    // librdkafka hands back its headers (owned by the message, valid while
    // it is) or an error when it has none. Each name is a NUL-terminated
    // string and each value `size` bytes (or null), owned by the headers;
    // both are copied before `message` can be released.
    #[allow(unsafe_code)]
    unsafe {
        if rd::rd_kafka_message_headers(message.ptr(), &mut headers) != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR
            || headers.is_null()
        {
            return Vec::new();
        }
        let count = rd::rd_kafka_header_cnt(headers);
        let mut out = Vec::with_capacity(count);
        for idx in 0..count {
            let (mut name, mut value, mut size) = (std::ptr::null(), std::ptr::null(), 0usize);
            if rd::rd_kafka_header_get_all(headers, idx, &mut name, &mut value, &mut size)
                != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR
                || name.is_null()
            {
                break;
            }
            out.push(RecordHeader {
                name: std::ffi::CStr::from_ptr(name).to_string_lossy().into_owned(),
                value: (!value.is_null())
                    .then(|| bytes::Bytes::copy_from_slice(std::slice::from_raw_parts(value.cast::<u8>(), size))),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::consumer::BaseConsumer;

    #[test]
    fn the_producer_buffers_64_mib_not_librdkafkas_gibibyte() {
        let config = crate::config::Config::from_toml_overlays(&[]).unwrap();
        let producer = producer_config(&config.kafka);
        assert_eq!(producer.get("queue.buffering.max.kbytes"), Some("65536"));
        let overridden = crate::config::Config::from_toml_overlays(&[
            "[kafka.producer_properties]\n\"queue.buffering.max.kbytes\" = \"131072\"",
        ])
        .unwrap();
        assert_eq!(
            producer_config(&overridden.kafka).get("queue.buffering.max.kbytes"),
            Some("131072")
        );
    }

    #[test]
    fn a_consumer_polls_briefly_unless_told_otherwise() {
        let kafka = crate::config::Config::from_toml_overlay("").unwrap().kafka;
        assert_eq!(consumer_config(&kafka, "g").get("fetch.wait.max.ms"), Some("20"));
        let told =
            crate::config::Config::from_toml_overlay("[kafka.consumer_properties]\n\"fetch.wait.max.ms\" = \"500\"")
                .unwrap()
                .kafka;
        assert_eq!(consumer_config(&told, "g").get("fetch.wait.max.ms"), Some("500"));
    }

    #[test]
    fn consumers_rebalance_incrementally_under_either_group_protocol() {
        let classic = crate::config::Config::from_toml_overlay("").unwrap().kafka;
        let cc = consumer_config(&classic, "g");
        assert_eq!(cc.get("partition.assignment.strategy"), Some("cooperative-sticky"));
        assert_eq!(cc.get("group.protocol"), None);
        let chosen = crate::config::Config::from_toml_overlay(
            "[kafka.consumer_properties]\n\"partition.assignment.strategy\" = \"range\"",
        )
        .unwrap()
        .kafka;
        assert_eq!(
            consumer_config(&chosen, "g").get("partition.assignment.strategy"),
            Some("range"),
            "an operator's choice wins"
        );
        let kip848 = crate::config::Config::from_toml_overlay("[kafka]\ngroup_protocol = \"consumer\"")
            .unwrap()
            .kafka;
        let cc = consumer_config(&kip848, "g");
        assert_eq!(cc.get("group.protocol"), Some("consumer"));
        assert_eq!(cc.get("partition.assignment.strategy"), None, "the broker assigns");
        let consumer: Result<BaseConsumer, _> = cc.create();
        assert!(consumer.is_ok(), "{:?}", consumer.err());
    }

    #[test]
    fn produce_errors_are_classified() {
        use rdkafka::error::KafkaError;
        let e = |code| classify_produce_error(&KafkaError::MessageProduction(code));
        assert_eq!(e(RDKafkaErrorCode::MessageSizeTooLarge), ProduceError::TooLarge);
        assert_eq!(e(RDKafkaErrorCode::MessageBatchTooLarge), ProduceError::TooLarge);
        assert_eq!(e(RDKafkaErrorCode::Fatal), ProduceError::Fatal);
        assert_eq!(e(RDKafkaErrorCode::TopicAuthorizationFailed), ProduceError::Permanent);
        assert_eq!(e(RDKafkaErrorCode::UnknownTopic), ProduceError::Permanent);
        assert_eq!(e(RDKafkaErrorCode::InvalidRecord), ProduceError::Invalid);
        assert_eq!(e(RDKafkaErrorCode::PolicyViolation), ProduceError::Invalid);
        assert_eq!(e(RDKafkaErrorCode::MessageTimedOut), ProduceError::Temporary);
        assert_eq!(e(RDKafkaErrorCode::QueueFull), ProduceError::Temporary);
        assert_eq!(e(RDKafkaErrorCode::BrokerTransportFailure), ProduceError::Temporary);
        assert_eq!(classify_produce_error(&KafkaError::Canceled), ProduceError::Temporary);
    }

    #[tokio::test]
    async fn a_fatally_failed_producer_is_replaced_once() {
        use rdkafka::producer::FutureRecord;
        let mut config = crate::config::Config::from_toml_overlay("").unwrap().kafka;
        // Nothing listens there: the test never needs a broker.
        config.brokers = "127.0.0.1:1".into();
        let shared = SharedProducer::new(&config).unwrap();
        let used = shared.get();
        assert!(shared.recover(&used).unwrap().is_none(), "nothing to recover from");
        let reason = std::ffi::CString::new("sequence lost").unwrap();
        // SAFETY: the pointer is the live client of `used`; librdkafka only
        // records the error (a test hook of its own).
        #[allow(unsafe_code)]
        let rc = unsafe {
            rdkafka::bindings::rd_kafka_test_fatal_error(
                used.client().native_ptr(),
                rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                reason.as_ptr(),
            )
        };
        assert_eq!(rc, rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR);
        let refused = used
            .send(FutureRecord::<str, str>::to("t").payload("x"), Duration::ZERO)
            .await
            .unwrap_err()
            .0;
        assert_eq!(classify_produce_error(&refused), ProduceError::Fatal);
        let other_writer = shared.clone();
        let recreated = shared.recover(&used).unwrap().expect("replaced");
        assert_eq!(recreated.code, RDKafkaErrorCode::OutOfOrderSequenceNumber);
        assert!(recreated.reason.contains("sequence lost"), "{}", recreated.reason);
        assert!(
            other_writer.recover(&used).unwrap().is_none(),
            "a second writer seeing the same failure does not replace it again"
        );
        let fresh = other_writer.get();
        assert!(
            !std::sync::Arc::ptr_eq(&fresh, &used),
            "every clone sees the new producer"
        );
        assert!(fresh.client().fatal_error().is_none());
    }
}

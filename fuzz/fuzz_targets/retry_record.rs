//! A record read from a wait topic or the dead-letter topic, with any
//! headers: Herald writes these topics, but an operator's tool or another
//! version may too. Decoding never panics, never lets a `herald.*` header
//! through into the event as delivered, and a dead letter judged
//! re-drivable yields a record that reads back with its delivery's id.
#![no_main]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arbitrary::Arbitrary;
use bytes::Bytes;
use herald::event::{RecordHeader, SourceRecord};
use herald::retry::codec::{self, headers as h};
use libfuzzer_sys::fuzz_target;
use rdkafka::message::Headers;

/// The names Herald reads, so that inputs reach past the first check; any
/// other name is the input's own.
const NAMES: &[&str] = &[
    h::REASON,
    h::DETAIL,
    h::SOURCE_TOPIC,
    h::SOURCE_PARTITION,
    h::SOURCE_OFFSET,
    h::SOURCE_TIMESTAMP,
    h::EVENT_TYPE,
    h::EVENT_ID,
    h::TENANT,
    h::WEBHOOK_ID,
    h::WEBHOOK_TENANT,
    h::WEBHOOK_CREATED_AT,
    h::DELIVERY_ID,
    h::ATTEMPT,
    h::FIRST_ATTEMPT_AT,
    h::LAST_ATTEMPT_AT,
    h::HISTORY,
    h::RETRY_TIER,
    h::RETRY_DUE_AT,
    h::RETRY_SCHEDULED_AT,
    h::RETRY_REQUEUED,
    h::REPLAYED_FROM_REASON,
    h::STUB,
];

#[derive(Debug, Arbitrary)]
enum Name<'a> {
    Known(u8),
    Other(&'a str),
}

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    headers: Vec<(Name<'a>, Option<&'a [u8]>)>,
    tiers: u8,
    timestamp_ms: Option<i64>,
}

fn record(headers: Vec<RecordHeader>, timestamp_ms: Option<i64>) -> SourceRecord {
    SourceRecord {
        topic: Arc::from("herald.retry.1m"),
        partition: 0,
        offset: 0,
        timestamp_ms,
        key: None,
        value: Bytes::from_static(b"{}"),
        headers,
    }
}

/// A record as Herald writes it to a wait topic, which inputs change.
fn written() -> Vec<(&'static str, &'static [u8])> {
    vec![
        (h::SOURCE_TOPIC, b"events"),
        (h::SOURCE_PARTITION, b"3"),
        (h::SOURCE_OFFSET, b"41"),
        (h::SOURCE_TIMESTAMP, b"1767225000000"),
        (h::EVENT_TYPE, b"tour.completed"),
        (h::WEBHOOK_ID, b"wh_1"),
        (h::WEBHOOK_TENANT, b"acme"),
        (h::WEBHOOK_CREATED_AT, b"2026-01-01T00:00:00Z"),
        (h::DELIVERY_ID, b"msg_1"),
        (h::ATTEMPT, b"2"),
        (h::FIRST_ATTEMPT_AT, b"2026-01-01T00:00:01.5Z"),
        (h::LAST_ATTEMPT_AT, b"2026-01-01T00:01:01Z"),
        (
            h::HISTORY,
            br#"[{"at":"2026-01-01T00:00:01Z","class":"status","status":503}]"#,
        ),
        (h::RETRY_TIER, b"1"),
        (h::RETRY_DUE_AT, b"1767225660000"),
        (h::RETRY_SCHEDULED_AT, b"1767225600000"),
        (h::REASON, b"retries_exhausted"),
        (
            "traceparent",
            b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ),
    ]
}

fuzz_target!(|input: Input<'_>| {
    // Each input header replaces the value of the written one of its name
    // (or drops it, without a value), or is added after them.
    let mut headers: Vec<RecordHeader> = written()
        .into_iter()
        .map(|(name, value)| RecordHeader {
            name: name.to_owned(),
            value: Some(Bytes::from_static(value)),
        })
        .collect();
    for (name, value) in &input.headers {
        let value = value.map(Bytes::copy_from_slice);
        match name {
            Name::Known(i) => {
                let name = NAMES[usize::from(*i) % NAMES.len()];
                match (headers.iter().position(|hd| hd.name == name), value) {
                    (Some(at), None) => {
                        headers.remove(at);
                    }
                    (Some(at), Some(value)) => headers[at].value = Some(value),
                    (None, value) => headers.push(RecordHeader {
                        name: name.to_owned(),
                        value,
                    }),
                }
            }
            // A consumer reads a header name up to its first NUL
            // (librdkafka hands names over as C strings), so no record
            // Herald reads has one.
            Name::Other(name) => headers.push(RecordHeader {
                name: name.split('\0').next().unwrap_or_default().to_owned(),
                value,
            }),
        }
    }
    let tiers = usize::from(input.tiers % 6);
    let wait = record(headers.clone(), input.timestamp_ms);
    if let Ok(state) = codec::decode(&wait, tiers) {
        assert!(state.tier.is_none_or(|t| t < tiers));
        assert!(state.original.headers.iter().all(|hd| !hd.name.starts_with(h::PREFIX)));
    }
    let _ = codec::due_at(&wait);
    let _ = codec::scheduled_at(&wait);

    let pairs = || headers.iter().map(|hd| (hd.name.as_str(), hd.value.as_deref()));
    let redrivable = codec::is_redrivable(pairs());
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
    let redriven = codec::redrive(pairs(), now);
    let back: Vec<RecordHeader> = redriven
        .iter()
        .map(|hd| RecordHeader {
            name: hd.key.to_owned(),
            value: hd.value.map(Bytes::copy_from_slice),
        })
        .collect();
    let again = record(back, None);
    assert_eq!(codec::due_at(&again), Some(now), "a redrive is due now");
    if let (true, Ok(state)) = (redrivable, codec::decode(&again, tiers)) {
        assert_eq!(
            Some(state.delivery_id.as_bytes()),
            wait.header(h::DELIVERY_ID),
            "a redrive keeps its delivery id"
        );
        assert!(state.tier.is_none(), "a redrive starts the tiers again");
    }
});

//! A webhook's ordering: which events must reach it one at a time, in order.
//!
//! `"ordering": "key"` orders the events that share a Kafka record key;
//! `"ordering": {"key": "/data/customer_id"}` those whose bodies hold the
//! same value at a JSON pointer (RFC 6901). Either way the order is that of
//! the events' source partition, so it is kept per webhook, source
//! topic-partition and key ([`OrderKey`]). An event without a key (a record
//! without one, a body without the pointer or not JSON) is not ordered.
//! What keeps the order across retries is in the retry module
//! (`retry::ordering`).

use serde::de::{self, Deserializer};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::event::SourceRecord;
use crate::routing::filter::{pointer_tokens, Payload, MAX_POINTER_LEN};
use crate::routing::json::Document;

/// What a webhook orders its deliveries by. Valid by construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ordering {
    /// The Kafka record key.
    RecordKey,
    /// The value at a JSON pointer into the event's body.
    Pointer {
        /// As written (escaped), for writing it back.
        pointer: String,
        /// Its reference tokens, unescaped.
        tokens: Box<[String]>,
    },
}

impl Ordering {
    /// The ordering by the value at `pointer`, or why `pointer` cannot be one.
    pub fn pointer(pointer: &str) -> Result<Ordering, String> {
        if pointer.is_empty() {
            return Err("must point into the body (`\"\"` is the whole body): e.g. `/data/customer_id`".into());
        }
        let tokens = pointer_tokens(pointer)?;
        Ok(Ordering::Pointer {
            pointer: pointer.to_owned(),
            tokens,
        })
    }

    /// Parses the JSON form (`"key"` or `{"key": "/pointer"}`), naming what
    /// is wrong in the message.
    pub fn parse(text: &str) -> Result<Ordering, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    /// The key `record` is ordered by (`payload` is its body), or `None`
    /// when it has none and goes unordered.
    pub fn key_of<'a>(&self, record: &'a SourceRecord, payload: &Payload<'a>) -> Option<EventKey<'a>> {
        match self {
            Ordering::RecordKey => record.key.as_deref().map(EventKey::Record),
            Ordering::Pointer { tokens, .. } => {
                let document: &Document<'a> = payload.document()?;
                let value = document.follow(tokens.iter())?;
                let text = value.get();
                (text != "null").then_some(EventKey::Value(text))
            }
        }
    }
}

/// The key of one event, borrowed from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKey<'a> {
    /// A record key's bytes.
    Record(&'a [u8]),
    /// A JSON value as written in the body.
    Value(&'a str),
}

/// Where an ordered delivery waits its turn: one webhook, one source
/// topic-partition, one key, named by a digest of the four (keys can be
/// long and binary; the digest is what Redis and the retry records hold).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrderKey(pub [u8; 16]);

impl OrderKey {
    /// The queue of `key` for `webhook` in `topic`'s `partition`.
    pub fn new(webhook: &str, topic: &str, partition: i32, key: EventKey<'_>) -> OrderKey {
        let mut hash = Sha256::new();
        hash.update(webhook.as_bytes());
        hash.update([0]);
        hash.update(topic.as_bytes());
        hash.update([0]);
        hash.update(partition.to_be_bytes());
        match key {
            EventKey::Record(bytes) => {
                hash.update([b'r']);
                hash.update(bytes);
            }
            EventKey::Value(text) => {
                hash.update([b'v']);
                hash.update(text.as_bytes());
            }
        }
        let digest = hash.finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        OrderKey(out)
    }

    /// Lower-case hex, as the `herald.ordering.key` header and Redis hold it.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Reads the hex form back.
    pub fn from_hex(text: &str) -> Option<OrderKey> {
        let mut out = [0u8; 16];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(OrderKey(out))
    }
}

impl Serialize for Ordering {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Ordering::RecordKey => s.serialize_str("key"),
            Ordering::Pointer { pointer, .. } => {
                let mut map = s.serialize_map(Some(1))?;
                map.serialize_entry("key", pointer)?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Ordering {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Ordering, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Written {
            Word(String),
            Object(std::collections::BTreeMap<String, serde_json::Value>),
        }
        const EXPECTED: &str = "must be \"key\" (the Kafka record key) or {\"key\": \"/json/pointer\"}";
        match Written::deserialize(d).map_err(|_| de::Error::custom(EXPECTED))? {
            Written::Word(word) if word == "key" => Ok(Ordering::RecordKey),
            Written::Word(_) => Err(de::Error::custom(EXPECTED)),
            Written::Object(map) => {
                let mut fields = map.into_iter();
                match (fields.next(), fields.next()) {
                    (Some((name, serde_json::Value::String(pointer))), None) if name == "key" => {
                        Ordering::pointer(&pointer).map_err(|why| de::Error::custom(format!("key {why}")))
                    }
                    _ => Err(de::Error::custom(EXPECTED)),
                }
            }
        }
    }
}

impl utoipa::PartialSchema for Ordering {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AdditionalProperties, ObjectBuilder, OneOfBuilder, Type};
        let pointer = ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^/([^~]|~[01])*$"))
            .max_length(Some(MAX_POINTER_LEN))
            .description(Some(
                "An RFC 6901 JSON pointer into the event body, e.g. `/data/customer_id`.",
            ));
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .enum_values(Some(["key"]))
                    .description(Some("By the Kafka record key.")),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Object)
                    .property("key", pointer)
                    .required("key")
                    .additional_properties(Some(AdditionalProperties::FreeForm(false)))
                    .description(Some("By the value at a JSON pointer into the event body.")),
            )
            .description(Some(
                "Ordered delivery: deliveries of events with the same key reach the webhook one at a time, in \
                 their source partition's order, retries included. The key is the Kafka record key (`\"key\"`) \
                 or the value at a JSON pointer into the body (`{\"key\": \"/data/customer_id\"}`, compared as \
                 written); the order is kept per webhook, source topic-partition and key. An event without a key \
                 (no record key; nothing or `null` at the pointer, or a body that is not JSON) is delivered \
                 unordered. `null` (or absent) for none. See docs/subscriptions.md#ordered-delivery.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for Ordering {}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn record(key: Option<&'static [u8]>, value: &'static str) -> SourceRecord {
        SourceRecord {
            topic: Arc::from("orders"),
            partition: 0,
            offset: 1,
            timestamp_ms: None,
            key: key.map(bytes::Bytes::from_static),
            value: bytes::Bytes::from_static(value.as_bytes()),
            headers: Vec::new(),
        }
    }

    #[test]
    fn both_forms_read_and_write_back_as_written() {
        for text in [r#""key""#, r#"{"key":"/data/customer_id"}"#, r#"{"key":"/a~1b/0"}"#] {
            let ordering = Ordering::parse(text).unwrap();
            assert_eq!(serde_json::to_string(&ordering).unwrap(), text);
        }
    }

    #[test]
    fn anything_else_is_refused_with_what_is_expected() {
        for text in [
            r#""keys""#,
            r#"true"#,
            r#"{}"#,
            r#"{"key":"/a","other":1}"#,
            r#"{"pointer":"/a"}"#,
            r#"{"key":1}"#,
        ] {
            let why = Ordering::parse(text).unwrap_err();
            assert!(why.contains("must be \"key\""), "{text}: {why}");
        }
        let why = Ordering::parse(r#"{"key":"data"}"#).unwrap_err();
        assert!(why.contains("key is not a JSON pointer"), "{why}");
        let why = Ordering::parse(r#"{"key":""}"#).unwrap_err();
        assert!(why.contains("must point into the body"), "{why}");
        let why = Ordering::parse(r#"{"key":"/a~2"}"#).unwrap_err();
        assert!(why.contains("`~` must be followed"), "{why}");
    }

    #[test]
    fn an_event_s_key_is_its_record_key_or_the_value_at_the_pointer() {
        let by_key = Ordering::RecordKey;
        let by_customer = Ordering::parse(r#"{"key":"/data/customer"}"#).unwrap();
        let r = record(Some(b"k1"), r#"{"data":{"customer":"c_9"}}"#);
        let payload = Payload::new(&r.value, None);
        assert_eq!(by_key.key_of(&r, &payload), Some(EventKey::Record(b"k1")));
        assert_eq!(by_customer.key_of(&r, &payload), Some(EventKey::Value(r#""c_9""#)));
        // None where there is none: no record key, no value, null, not JSON.
        for (key, body) in [
            (None, r#"{"data":{}}"#),
            (None, r#"{"data":{"customer":null}}"#),
            (None, "not json"),
        ] {
            let r = record(key, body);
            let payload = Payload::new(&r.value, None);
            assert_eq!(by_key.key_of(&r, &payload), None);
            assert_eq!(by_customer.key_of(&r, &payload), None, "{body}");
        }
    }

    #[test]
    fn queues_differ_by_webhook_partition_and_key_and_a_value_is_not_a_record_key() {
        let a = OrderKey::new("wh_1", "orders", 0, EventKey::Record(b"k"));
        assert_eq!(a, OrderKey::new("wh_1", "orders", 0, EventKey::Record(b"k")));
        for other in [
            OrderKey::new("wh_2", "orders", 0, EventKey::Record(b"k")),
            OrderKey::new("wh_1", "orders", 1, EventKey::Record(b"k")),
            OrderKey::new("wh_1", "order", 0, EventKey::Record(b"k")),
            OrderKey::new("wh_1", "orders", 0, EventKey::Record(b"j")),
            OrderKey::new("wh_1", "orders", 0, EventKey::Value("k")),
        ] {
            assert_ne!(a, other);
        }
        assert_eq!(OrderKey::from_hex(&a.hex()), Some(a));
        assert_eq!(OrderKey::from_hex("zz"), None);
    }
}

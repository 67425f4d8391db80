//! The unit of work handed from intake to routing and delivery.
//!
//! A [`SourceRecord`] is what Kafka gave us, owned so that it can outlive the
//! consumer's buffer while deliveries run; an [`Event`] adds what the envelope
//! rules found in it. The deliveries an event fans out to run in its task and
//! borrow it, so the body is held once however many webhooks receive it.

use std::sync::Arc;

use bytes::Bytes;

/// One Kafka header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    pub name: String,
    pub value: Option<Bytes>,
}

/// A Kafka record, as consumed.
#[derive(Debug, Clone)]
pub struct SourceRecord {
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
    /// Record timestamp in milliseconds since the epoch, when the broker gave one.
    pub timestamp_ms: Option<i64>,
    pub key: Option<Bytes>,
    pub value: Bytes,
    pub headers: Vec<RecordHeader>,
}

impl SourceRecord {
    /// The first header called `name` (case-sensitive, as Kafka headers are).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|h| h.name == name)
            .and_then(|h| h.value.as_deref())
    }
}

/// What the envelope rules found in a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMeta {
    pub event_type: String,
    /// The envelope's own event id, when the rules name one.
    pub event_id: Option<String>,
    /// The event time as the envelope writes it (RFC 3339 or epoch millis).
    pub event_time: Option<String>,
    pub tenant: Option<String>,
    /// `content-type` of the HTTP request.
    pub content_type: String,
    /// Extra HTTP headers carried from the record (CloudEvents `ce-*`).
    pub forward_headers: Vec<(String, String)>,
    /// What the event id is unique within besides the tenant: a
    /// CloudEvent's `source` (ids are unique per source).
    pub id_source: Option<String>,
}

/// A recognised event: the record and its metadata.
#[derive(Debug)]
pub struct Event {
    pub record: SourceRecord,
    pub meta: EventMeta,
}

impl Event {
    /// The identity of this event used to derive delivery ids: the envelope's
    /// event id where there is one, with what makes it unique (its tenant;
    /// a CloudEvent's source), else its position in Kafka, which is just as
    /// stable across retries, restarts and replicas. The same event
    /// published twice keeps one identity; two tenants' (or sources')
    /// `evt_1` are two.
    pub fn identity(&self) -> String {
        let (tenant, source) = (&self.meta.tenant, &self.meta.id_source);
        match &self.meta.event_id {
            // As before tenants and sources were part of it.
            Some(id) if tenant.is_none() && source.is_none() => format!("id:{id}"),
            // JSON: no id, tenant or source can pass for another split.
            Some(id) => format!(
                "ids:{}",
                serde_json::to_string(&(id, tenant, source)).expect("strings serialise")
            ),
            None => format!(
                "pos:{}/{}/{}",
                self.record.topic, self.record.partition, self.record.offset
            ),
        }
    }
}

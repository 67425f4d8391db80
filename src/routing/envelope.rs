//! Recognising events: where an event's type, id, time and tenant are.
//!
//! Every product wraps its events differently (the Jimo, IAM and Jam
//! envelopes in the brief, CloudEvents on Kafka), and Herald must carry each
//! one unchanged. So the envelope is configuration: per topic, each field comes
//! from a JSON pointer into the value, a Kafka header, or the record key, with
//! presets for the known envelopes. The body itself is never rewritten.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use crate::event::{EventMeta, SourceRecord};
use crate::routing::json::{self, Document, ParseError};

/// The longest event type accepted (longer is almost certainly not a type).
pub const MAX_EVENT_TYPE_LEN: usize = 256;

/// Where one field of the envelope comes from.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub enum Source {
    /// An RFC 6901 JSON pointer into the record value, e.g. `/event`.
    Pointer(String),
    /// A Kafka header, e.g. `header:ce_type`.
    Header(String),
    /// The record key.
    Key,
}

impl TryFrom<String> for Source {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        if s.starts_with('/') {
            Ok(Source::Pointer(s))
        } else if let Some(name) = s.strip_prefix("header:") {
            if name.is_empty() {
                Err("`header:` needs a header name".into())
            } else {
                Ok(Source::Header(name.to_owned()))
            }
        } else if s == "key" {
            Ok(Source::Key)
        } else {
            Err(format!(
                "`{s}` is not a rule: use a JSON pointer (`/event`), `header:NAME` or `key`"
            ))
        }
    }
}

/// A known envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// `{"event": "tour.completed", "version": "0", "time": 1740133769000, ...}`
    Jimo,
    /// `{"event_time": ..., "event_type": "USER_CREATED", "current_context": ..., "data": ...}`
    Iam,
    /// `{"id": "evt_12345", "type": "...", "created_at": "...", "data": {...}}`
    Jam,
    /// CloudEvents on Kafka, binary (`ce_*` headers) or structured mode.
    Cloudevents,
}

/// Envelope rules as configured: a preset and explicit overrides.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeRules {
    pub preset: Option<Preset>,
    pub event_type: Option<Source>,
    pub event_id: Option<Source>,
    pub event_time: Option<Source>,
    pub tenant: Option<Source>,
}

/// A rule set that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RulesError {
    #[error("no event_type rule: set `preset` or `event_type`")]
    NoEventType,
}

/// Why a record could not be recognised as an event. Each variant is a
/// dead-letter reason and a metric label, so the set is closed and small.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::EnumIter)]
pub enum UnroutableReason {
    /// The rules read JSON and the value is not valid JSON.
    InvalidJson,
    /// The rules read JSON and an object of the value has a key twice:
    /// receivers' parsers may read another occurrence than Herald would, so
    /// Herald does not route it at all.
    AmbiguousJson,
    /// The event type is absent, not a string, empty or too long.
    MissingEventType,
    /// A field that must be text (header, key) is not UTF-8.
    NotUtf8,
    /// The CloudEvents rules found neither binary nor structured mode.
    NotCloudEvent,
    /// The event id, time or tenant (or a CloudEvent's source) is a JSON
    /// object or array: no text to route or identify the event by.
    InvalidField,
}

impl UnroutableReason {
    /// Stable label used in metrics and the `herald.reason` header (the
    /// same as its `retry::reason::Reason`'s, which a test there checks).
    pub fn as_str(self) -> &'static str {
        match self {
            UnroutableReason::InvalidJson => "invalid_json",
            UnroutableReason::AmbiguousJson => "ambiguous_json",
            UnroutableReason::MissingEventType => "missing_event_type",
            UnroutableReason::NotUtf8 => "not_utf8",
            UnroutableReason::NotCloudEvent => "not_cloudevent",
            UnroutableReason::InvalidField => "invalid_field",
        }
    }
}

/// A record that is not a usable event, with a human-readable detail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", reason.as_str())]
pub struct Unroutable {
    pub reason: UnroutableReason,
    pub detail: String,
}

impl Unroutable {
    fn new(reason: UnroutableReason, detail: impl Into<String>) -> Self {
        Unroutable {
            reason,
            detail: detail.into(),
        }
    }
}

/// Field rules after applying the preset.
#[derive(Debug, Clone)]
pub struct Fields {
    event_type: Source,
    event_id: Option<Source>,
    event_time: Option<Source>,
    tenant: Option<Source>,
}

impl Fields {
    fn reads_json(&self) -> bool {
        let is_ptr = |s: &Option<Source>| matches!(s, Some(Source::Pointer(_)));
        matches!(self.event_type, Source::Pointer(_))
            || is_ptr(&self.event_id)
            || is_ptr(&self.event_time)
            || is_ptr(&self.tenant)
    }
}

/// Rules ready to apply to records.
#[derive(Debug, Clone)]
pub enum Recogniser {
    /// Fields found by their rules.
    Plain(Fields),
    /// CloudEvents: structured mode when the content type says so, else binary
    /// mode from `ce_*` headers. `tenant` is an optional extra rule.
    CloudEvents { tenant: Option<Source> },
}

const CE_STRUCTURED: &str = "application/cloudevents+json";
const CE_BATCH: &str = "application/cloudevents-batch+json";

impl EnvelopeRules {
    /// Resolves the preset and overrides into a [`Recogniser`].
    pub fn compile(&self) -> Result<Recogniser, RulesError> {
        let ptr = |p: &str| Some(Source::Pointer(p.to_owned()));
        let (event_type, event_id, event_time) = match self.preset {
            Some(Preset::Cloudevents) => {
                return Ok(Recogniser::CloudEvents {
                    tenant: self.tenant.clone(),
                })
            }
            Some(Preset::Jimo) => (ptr("/event"), None, ptr("/time")),
            Some(Preset::Iam) => (ptr("/event_type"), None, ptr("/event_time")),
            Some(Preset::Jam) => (ptr("/type"), ptr("/id"), ptr("/created_at")),
            None => (None, None, None),
        };
        Ok(Recogniser::Plain(Fields {
            event_type: self.event_type.clone().or(event_type).ok_or(RulesError::NoEventType)?,
            event_id: self.event_id.clone().or(event_id),
            event_time: self.event_time.clone().or(event_time),
            tenant: self.tenant.clone(),
        }))
    }
}

impl Recogniser {
    /// Whether these rules can find an event's tenant.
    pub fn finds_tenant(&self) -> bool {
        match self {
            Recogniser::Plain(fields) => fields.tenant.is_some(),
            Recogniser::CloudEvents { tenant } => tenant.is_some(),
        }
    }

    /// Finds the event's metadata in `record`.
    pub fn recognise(&self, record: &SourceRecord) -> Result<EventMeta, Unroutable> {
        self.recognise_parsed(record).map(|(meta, _)| meta)
    }

    /// Finds the event's metadata in `record`, with its body as a
    /// [`Document`] when the rules parsed it to read them: payload filters
    /// read the same document rather than parse the body again.
    pub fn recognise_parsed<'r>(&self, record: &'r SourceRecord) -> Result<Recognised<'r>, Unroutable> {
        match self {
            Recogniser::Plain(fields) => recognise_plain(fields, record),
            Recogniser::CloudEvents { tenant } => recognise_cloudevent(tenant.as_ref(), record),
        }
    }
}

/// What the rules found, and the body as a document when they parsed it.
pub type Recognised<'r> = (EventMeta, Option<Document<'r>>);

fn recognise_plain<'r>(fields: &Fields, record: &'r SourceRecord) -> Result<Recognised<'r>, Unroutable> {
    let doc = if fields.reads_json() {
        Some(parse_json(record)?)
    } else {
        None
    };
    let read = |source: &Source, field: &str| read_field(source, field, record, doc.as_ref());
    // An event type must be a string where JSON says what it is.
    let event_type = match &fields.event_type {
        Source::Pointer(p) => doc.as_ref().and_then(|d| d.pointer(p)).and_then(json::string),
        other => read(other, "event type")?,
    };
    let event_type = checked_type(event_type)?;
    let content_type = record
        .header("content-type")
        .and_then(|v| std::str::from_utf8(v).ok())
        .unwrap_or("application/json")
        .to_owned();
    let meta = EventMeta {
        event_type,
        event_id: optional(fields.event_id.as_ref(), "event id", read)?,
        event_time: optional(fields.event_time.as_ref(), "event time", read)?,
        tenant: optional(fields.tenant.as_ref(), "tenant", read)?,
        content_type,
        forward_headers: Vec::new(),
        id_source: None,
    };
    Ok((meta, doc))
}

fn recognise_cloudevent<'r>(tenant: Option<&Source>, record: &'r SourceRecord) -> Result<Recognised<'r>, Unroutable> {
    let content_type = record
        .header("content-type")
        .map(|v| {
            std::str::from_utf8(v)
                .map_err(|_| Unroutable::new(UnroutableReason::NotUtf8, "header `content-type` is not UTF-8"))
        })
        .transpose()?;
    let media_type = content_type.map(|ct| ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase());

    if media_type.as_deref() == Some(CE_STRUCTURED) {
        let doc = parse_json(record)?;
        let field = |pointer: &str, field: &str| pointer_text(&doc, pointer, field);
        let event_type = checked_type(doc.pointer("/type").and_then(json::string))?;
        let tenant = match tenant {
            Some(source) => read_field(source, "tenant", record, Some(&doc))?,
            None => None,
        };
        let meta = EventMeta {
            event_type,
            event_id: field("/id", "event id")?,
            event_time: field("/time", "event time")?,
            tenant,
            content_type: content_type.unwrap_or(CE_STRUCTURED).to_owned(),
            forward_headers: Vec::new(),
            id_source: field("/source", "source")?,
        };
        return Ok((meta, Some(doc)));
    }
    if media_type.as_deref() == Some(CE_BATCH) {
        return Err(Unroutable::new(
            UnroutableReason::NotCloudEvent,
            "CloudEvents batch mode is not supported on Kafka; publish one event per record",
        ));
    }
    if record.header("ce_type").is_none() && record.header("ce_specversion").is_none() {
        return Err(Unroutable::new(
            UnroutableReason::NotCloudEvent,
            "neither a `ce_type` header (binary mode) nor content-type application/cloudevents+json (structured mode)",
        ));
    }
    let header_text =
        |name: &str| -> Result<Option<String>, Unroutable> { record.header(name).map(|v| utf8(v, name)).transpose() };
    let event_type = checked_type(header_text("ce_type")?)?;
    let mut forward_headers = Vec::new();
    for h in &record.headers {
        if let (Some(attr), Some(value)) = (h.name.strip_prefix("ce_"), h.value.as_deref()) {
            forward_headers.push((format!("ce-{attr}"), utf8(value, &h.name)?));
        }
    }
    let (tenant, doc) = match tenant {
        Some(source @ Source::Pointer(_)) => {
            let doc = parse_json(record)?;
            (read_field(source, "tenant", record, Some(&doc))?, Some(doc))
        }
        Some(source) => (read_field(source, "tenant", record, None)?, None),
        None => (None, None),
    };
    let meta = EventMeta {
        event_type,
        event_id: header_text("ce_id")?,
        event_time: header_text("ce_time")?,
        tenant,
        content_type: content_type.unwrap_or("application/json").to_owned(),
        forward_headers,
        id_source: header_text("ce_source")?,
    };
    Ok((meta, doc))
}

fn parse_json(record: &SourceRecord) -> Result<Document<'_>, Unroutable> {
    Document::parse(&record.value).map_err(|e| match e {
        ParseError::Invalid(e) => Unroutable::new(UnroutableReason::InvalidJson, e.to_string()),
        ParseError::DuplicateKey(d) => Unroutable::new(UnroutableReason::AmbiguousJson, d.to_string()),
    })
}

fn read_field(
    source: &Source,
    field: &str,
    record: &SourceRecord,
    doc: Option<&Document<'_>>,
) -> Result<Option<String>, Unroutable> {
    match source {
        Source::Pointer(p) => match doc {
            Some(doc) => pointer_text(doc, p, field),
            None => Ok(None),
        },
        Source::Header(name) => record.header(name).map(|v| utf8(v, name)).transpose(),
        Source::Key => record.key.as_deref().map(|k| utf8(k, "key")).transpose(),
    }
}

fn optional(
    source: Option<&Source>,
    field: &str,
    read: impl Fn(&Source, &str) -> Result<Option<String>, Unroutable>,
) -> Result<Option<String>, Unroutable> {
    match source {
        Some(s) => read(s, field),
        None => Ok(None),
    }
}

/// The text of the value at `pointer` (a string's, or a number's or
/// boolean's JSON text); `None` when there is none or it is `null`. An
/// object or an array is refused rather than read as absent: an event whose
/// tenant is `{"id": "acme"}` would otherwise be routed as an event of no
/// tenant, and one whose id is an array delivered under another identity.
/// The detail names the field and the pointer, never the value.
fn pointer_text(doc: &Document<'_>, pointer: &str, field: &str) -> Result<Option<String>, Unroutable> {
    let Some(value) = doc.pointer(pointer) else {
        return Ok(None);
    };
    let kind = match value.get().as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        _ => return Ok(json::scalar_text(value)),
    };
    Err(Unroutable::new(
        UnroutableReason::InvalidField,
        format!("the {field} at `{pointer}` is {kind}, not text"),
    ))
}

fn utf8(bytes: &[u8], what: &str) -> Result<String, Unroutable> {
    std::str::from_utf8(bytes)
        .map(str::to_owned)
        .map_err(|_| Unroutable::new(UnroutableReason::NotUtf8, format!("`{what}` is not UTF-8")))
}

fn checked_type(value: Option<String>) -> Result<String, Unroutable> {
    match value {
        None => Err(Unroutable::new(
            UnroutableReason::MissingEventType,
            "the event type is missing or not a string",
        )),
        Some(t) if t.is_empty() => Err(Unroutable::new(
            UnroutableReason::MissingEventType,
            "the event type is empty",
        )),
        Some(t) if t.len() > MAX_EVENT_TYPE_LEN => Err(Unroutable::new(
            UnroutableReason::MissingEventType,
            format!("the event type is longer than {MAX_EVENT_TYPE_LEN} bytes"),
        )),
        Some(t) => Ok(t),
    }
}

/// Rules that find an event's type, id, time and tenant (`[envelope]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvelopeConfig {
    /// Rules for topics not listed under `topics`.
    pub default: EnvelopeRules,
    /// Rules per source topic.
    #[serde(default)]
    pub topics: BTreeMap<String, EnvelopeRules>,
}

impl EnvelopeConfig {
    /// Checks `[envelope]`: every topic's rules compile. The first that do
    /// not are named by their key (`envelope.default`,
    /// `envelope.topics."<topic>"`).
    pub fn check(&self) -> Result<(), (String, RulesError)> {
        self.default.compile().map_err(|e| ("envelope.default".to_owned(), e))?;
        for (topic, rules) in &self.topics {
            rules
                .compile()
                .map_err(|e| (format!("envelope.topics.\"{topic}\""), e))?;
        }
        Ok(())
    }
}

/// The recogniser of every configured topic.
#[derive(Debug, Clone)]
pub struct Envelopes {
    default: Arc<Recogniser>,
    topics: BTreeMap<String, Arc<Recogniser>>,
}

impl Envelopes {
    /// Compiles the configured rules.
    pub fn new(config: &EnvelopeConfig) -> Result<Envelopes, RulesError> {
        let mut topics = BTreeMap::new();
        for (topic, rules) in &config.topics {
            topics.insert(topic.clone(), Arc::new(rules.compile()?));
        }
        Ok(Envelopes {
            default: Arc::new(config.default.compile()?),
            topics,
        })
    }

    /// The rules for `topic`.
    pub fn for_topic(&self, topic: &str) -> &Recogniser {
        self.topics.get(topic).unwrap_or(&self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::RecordHeader;
    use bytes::Bytes;

    fn record(value: &str, headers: &[(&str, &str)]) -> SourceRecord {
        SourceRecord {
            topic: "t".into(),
            partition: 0,
            offset: 7,
            timestamp_ms: None,
            key: Some(Bytes::from_static(b"tenant-k")),
            value: Bytes::copy_from_slice(value.as_bytes()),
            headers: headers
                .iter()
                .map(|(n, v)| RecordHeader {
                    name: (*n).into(),
                    value: Some(Bytes::copy_from_slice(v.as_bytes())),
                })
                .collect(),
        }
    }

    fn preset(p: Preset) -> Recogniser {
        EnvelopeRules {
            preset: Some(p),
            ..Default::default()
        }
        .compile()
        .unwrap()
    }

    #[test]
    fn the_body_parsed_to_read_the_rules_is_handed_on() {
        let event = record(r#"{"event":"tour.completed","data":{"plan":"pro"}}"#, &[("type", "a")]);
        let (_, doc) = preset(Preset::Jimo).recognise_parsed(&event).unwrap();
        assert_eq!(doc.unwrap().pointer("/data/plan").unwrap().get(), r#""pro""#);
        let headers_only = EnvelopeRules {
            event_type: Some(Source::Header("type".into())),
            ..Default::default()
        };
        let (meta, doc) = headers_only.compile().unwrap().recognise_parsed(&event).unwrap();
        assert_eq!(meta.event_type, "a");
        assert!(doc.is_none(), "not parsed: filters parse it if they need it");
    }

    #[test]
    fn jimo_envelope() {
        let meta = preset(Preset::Jimo)
            .recognise(&record(
                r#"{"event":"tour.completed","version":"0","time":1740133769000}"#,
                &[],
            ))
            .unwrap();
        assert_eq!(meta.event_type, "tour.completed");
        assert_eq!(meta.event_time.as_deref(), Some("1740133769000"));
        assert_eq!(meta.event_id, None);
        assert_eq!(meta.content_type, "application/json");
    }

    #[test]
    fn iam_envelope() {
        let meta = preset(Preset::Iam)
            .recognise(&record(
                r#"{"event_time":"2025-02-21T08:15:03Z","event_type":"USER_CREATED","current_context":{},"data":{}}"#,
                &[],
            ))
            .unwrap();
        assert_eq!(meta.event_type, "USER_CREATED");
        assert_eq!(meta.event_time.as_deref(), Some("2025-02-21T08:15:03Z"));
    }

    #[test]
    fn jam_envelope() {
        let meta = preset(Preset::Jam)
            .recognise(&record(
                r#"{"id":"evt_12345","type":"intercom.recorder.recorded","created_at":"2025-09-09T12:00:00Z","data":{}}"#,
                &[],
            ))
            .unwrap();
        assert_eq!(meta.event_type, "intercom.recorder.recorded");
        assert_eq!(meta.event_id.as_deref(), Some("evt_12345"));
    }

    #[test]
    fn overrides_take_precedence_over_the_preset() {
        let rules = EnvelopeRules {
            preset: Some(Preset::Iam),
            tenant: Some(Source::Key),
            event_id: Some(Source::Header("x-id".into())),
            ..Default::default()
        };
        let meta = rules
            .compile()
            .unwrap()
            .recognise(&record(r#"{"event_type":"A"}"#, &[("x-id", "abc")]))
            .unwrap();
        assert_eq!(meta.tenant.as_deref(), Some("tenant-k"));
        assert_eq!(meta.event_id.as_deref(), Some("abc"));
    }

    #[test]
    fn header_only_rules_do_not_require_json() {
        let rules = EnvelopeRules {
            event_type: Some(Source::Header("type".into())),
            ..Default::default()
        };
        let meta = rules
            .compile()
            .unwrap()
            .recognise(&record(
                "plain text body",
                &[("type", "a.b"), ("content-type", "text/plain")],
            ))
            .unwrap();
        assert_eq!(meta.event_type, "a.b");
        assert_eq!(meta.content_type, "text/plain");
        // Nor is such a body checked for repeated keys: Herald reads nothing in it.
        let meta = rules
            .compile()
            .unwrap()
            .recognise(&record(r#"{"a":1,"a":2}"#, &[("type", "a.b")]))
            .unwrap();
        assert_eq!(meta.event_type, "a.b");
    }

    #[test]
    fn unusable_records_say_why() {
        let jimo = preset(Preset::Jimo);
        let reason = |r: Result<EventMeta, Unroutable>| r.unwrap_err().reason;
        assert_eq!(
            reason(jimo.recognise(&record("{not json", &[]))),
            UnroutableReason::InvalidJson
        );
        assert_eq!(
            reason(jimo.recognise(&record(r#"{"type":"x"}"#, &[]))),
            UnroutableReason::MissingEventType
        );
        assert_eq!(
            reason(jimo.recognise(&record(r#"{"event":7}"#, &[]))),
            UnroutableReason::MissingEventType
        );
        assert_eq!(
            reason(jimo.recognise(&record(r#"{"event":""}"#, &[]))),
            UnroutableReason::MissingEventType
        );
        let long = format!(r#"{{"event":"{}"}}"#, "a".repeat(MAX_EVENT_TYPE_LEN + 1));
        assert_eq!(
            reason(jimo.recognise(&record(&long, &[]))),
            UnroutableReason::MissingEventType
        );
        let ce = preset(Preset::Cloudevents);
        assert_eq!(
            reason(ce.recognise(&record("{}", &[]))),
            UnroutableReason::NotCloudEvent
        );
    }

    #[test]
    fn an_id_time_or_tenant_that_is_an_object_or_array_is_not_read_as_absent() {
        let iam = EnvelopeRules {
            preset: Some(Preset::Iam),
            tenant: Some(Source::Pointer("/current_context/tenant_id".into())),
            ..Default::default()
        }
        .compile()
        .unwrap();
        let why = iam
            .recognise(&record(
                r#"{"event_type":"USER_CREATED","current_context":{"tenant_id":{"id":"acme"}}}"#,
                &[],
            ))
            .unwrap_err();
        assert_eq!(why.reason, UnroutableReason::InvalidField);
        assert_eq!(
            why.detail,
            "the tenant at `/current_context/tenant_id` is an object, not text"
        );
        let jam = preset(Preset::Jam);
        for (value, field) in [
            (r#"{"id":["evt_1"],"type":"a.b"}"#, "event id"),
            (r#"{"id":"evt_1","type":"a.b","created_at":{"s":1}}"#, "event time"),
        ] {
            let why = jam.recognise(&record(value, &[])).unwrap_err();
            assert_eq!(why.reason, UnroutableReason::InvalidField, "{value}");
            assert!(why.detail.starts_with(&format!("the {field} at")), "{}", why.detail);
        }
        let ce = preset(Preset::Cloudevents);
        let structured = [("content-type", CE_STRUCTURED)];
        for value in [
            r#"{"specversion":"1.0","type":"a.b","id":{},"source":"/s"}"#,
            r#"{"specversion":"1.0","type":"a.b","id":"1","source":["/s"]}"#,
        ] {
            let why = ce.recognise(&record(value, &structured)).unwrap_err();
            assert_eq!(why.reason, UnroutableReason::InvalidField, "{value}");
        }
        // Null is absent; a number or boolean is its JSON text; a string
        // that is not a time is kept as written.
        let meta = jam
            .recognise(&record(r#"{"id":null,"type":"a.b","created_at":"yesterday-ish"}"#, &[]))
            .unwrap();
        assert_eq!(meta.event_id, None);
        assert_eq!(meta.event_time.as_deref(), Some("yesterday-ish"));
        let meta = jam
            .recognise(&record(r#"{"id":42,"type":"a.b","created_at":true}"#, &[]))
            .unwrap();
        assert_eq!(meta.event_id.as_deref(), Some("42"));
        assert_eq!(meta.event_time.as_deref(), Some("true"));
        assert!(<UnroutableReason as strum::IntoEnumIterator>::iter().any(|r| r == UnroutableReason::InvalidField));
    }

    #[test]
    fn a_key_twice_is_never_routed_by_either_occurrence() {
        let reason = |r: &Recogniser, value: &str, headers: &[(&str, &str)]| {
            let why = r.recognise(&record(value, headers)).unwrap_err();
            assert!(why.detail.contains("appears more than once"), "{}", why.detail);
            why.reason
        };
        let jimo = preset(Preset::Jimo);
        assert_eq!(
            reason(&jimo, r#"{"event":"a","event":"b"}"#, &[]),
            UnroutableReason::AmbiguousJson
        );
        // In the tenant's object, or anywhere else in the body.
        let iam = EnvelopeRules {
            preset: Some(Preset::Iam),
            tenant: Some(Source::Pointer("/current_context/tenant/id".into())),
            ..Default::default()
        }
        .compile()
        .unwrap();
        let tenant_twice = r#"{"event_type":"USER_CREATED","current_context":{"tenant":{"id":"acme","id":"globex"}}}"#;
        assert_eq!(reason(&iam, tenant_twice, &[]), UnroutableReason::AmbiguousJson);
        let data_twice = r#"{"id":"e","type":"x.y","data":{"amount":1,"amount":2}}"#;
        assert_eq!(
            reason(&preset(Preset::Jam), data_twice, &[]),
            UnroutableReason::AmbiguousJson
        );
        let ce = r#"{"specversion":"1.0","type":"a","type":"b","id":"1","source":"/s"}"#;
        assert_eq!(
            reason(&preset(Preset::Cloudevents), ce, &[("content-type", CE_STRUCTURED)]),
            UnroutableReason::AmbiguousJson
        );
        assert_eq!(UnroutableReason::AmbiguousJson.as_str(), "ambiguous_json");
        assert!(<UnroutableReason as strum::IntoEnumIterator>::iter().any(|r| r == UnroutableReason::AmbiguousJson));
    }

    #[test]
    fn cloudevents_binary_mode() {
        let meta = preset(Preset::Cloudevents)
            .recognise(&record(
                r#"{"user":"u1"}"#,
                &[
                    ("ce_specversion", "1.0"),
                    ("ce_type", "com.example.user.created"),
                    ("ce_id", "A234-1234"),
                    ("ce_source", "/users"),
                    ("ce_time", "2018-04-05T17:31:00Z"),
                    ("content-type", "application/json"),
                ],
            ))
            .unwrap();
        assert_eq!(meta.event_type, "com.example.user.created");
        assert_eq!(meta.event_id.as_deref(), Some("A234-1234"));
        assert_eq!(meta.event_time.as_deref(), Some("2018-04-05T17:31:00Z"));
        assert!(meta.forward_headers.contains(&("ce-source".into(), "/users".into())));
        assert!(meta.forward_headers.contains(&("ce-specversion".into(), "1.0".into())));
    }

    #[test]
    fn cloudevents_structured_mode() {
        let meta = preset(Preset::Cloudevents)
            .recognise(&record(
                r#"{"specversion":"1.0","type":"com.example.order.paid","id":"o-1","source":"/o","time":"2018-04-05T17:31:00Z","data":{}}"#,
                &[("content-type", "application/cloudevents+json; charset=utf-8")],
            ))
            .unwrap();
        assert_eq!(meta.event_type, "com.example.order.paid");
        assert_eq!(meta.event_id.as_deref(), Some("o-1"));
        assert_eq!(meta.content_type, "application/cloudevents+json; charset=utf-8");
        assert!(meta.forward_headers.is_empty());
    }

    #[test]
    fn source_syntax() {
        assert_eq!(
            Source::try_from("/a/b".to_string()).unwrap(),
            Source::Pointer("/a/b".into())
        );
        assert_eq!(
            Source::try_from("header:x".to_string()).unwrap(),
            Source::Header("x".into())
        );
        assert_eq!(Source::try_from("key".to_string()).unwrap(), Source::Key);
        assert!(Source::try_from("header:".to_string()).is_err());
        assert!(Source::try_from("event".to_string()).is_err());
        assert_eq!(EnvelopeRules::default().compile().unwrap_err(), RulesError::NoEventType);
    }
}

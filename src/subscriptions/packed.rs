//! A webhook held in memory in one compact allocation.
//!
//! A replica keeps every webhook so that routing never asks Redis, and a
//! platform may have a million of them. A [`Webhook`] as parsed (a dozen
//! `String`s, a `BTreeMap`, timestamps) costs about a kilobyte; packed with
//! postcard into one byte slice it costs about what its JSON does without the
//! field names. It is unpacked when a delivery needs it, and kept unpacked
//! only for the webhooks in use (see `subscriptions::live`).
//!
//! The id comes first, so the index reads it without unpacking the rest.
//!
//! A document read from Redis goes straight into its packed form through a
//! [`Document`], which borrows its strings from the JSON: a replica's first
//! read of a million documents allocates once per webhook, not a dozen times.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use serde::de::{MapAccess, SeqAccess, Visitor};

use crate::routing::filter::Filter;
use crate::routing::ordering::Ordering;
use crate::webhook::{ExpiringSecret, Fields, Limits, RateLimit, StatusBy, TlsClient, Webhook, WebhookStatus};

/// The packed layout. Every field is written, in this order; timestamps are
/// Unix nanoseconds (UTC), statuses their index in [`WebhookStatus::ALL`],
/// `status_by` its index in [`STATUS_BY`].
#[derive(Serialize, Deserialize)]
struct Layout<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow)]
    tenant: Option<Cow<'a, str>>,
    #[serde(borrow)]
    uid: Option<Cow<'a, str>>,
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    url: Cow<'a, str>,
    #[serde(borrow)]
    events: Vec<Cow<'a, str>>,
    status: u8,
    #[serde(borrow)]
    status_reason: Option<Cow<'a, str>>,
    status_changed_at: Option<i128>,
    status_by: Option<u8>,
    #[serde(borrow)]
    secrets: Vec<Cow<'a, str>>,
    #[serde(borrow)]
    previous_secrets: Vec<(Cow<'a, str>, i128)>,
    #[serde(borrow)]
    headers: Vec<(Cow<'a, str>, Cow<'a, str>)>,
    created_at: i128,
    updated_at: i128,
    max_in_flight: Option<u64>,
    timeout_ms: Option<u64>,
    final_statuses: Option<Vec<u16>>,
    rate: Option<(f64, Option<u32>)>,
    retried_pending: Vec<i128>,
    /// The payload filter as JSON (written by [`filter_text`]).
    #[serde(borrow)]
    filter: Option<Cow<'a, str>>,
    /// The client certificate chain and its key, PEM.
    #[serde(borrow)]
    tls_client: Option<(Cow<'a, str>, Cow<'a, str>)>,
    /// The ordering as JSON (`"key"` or `{"key": "/pointer"}`).
    #[serde(borrow)]
    ordering: Option<Cow<'a, str>>,
}

/// The fields routing needs: the start of the layout, read without the rest.
#[derive(Deserialize)]
struct Head<'a> {
    id: &'a str,
    tenant: Option<&'a str>,
    _uid: Option<&'a str>,
    _name: &'a str,
    _url: &'a str,
    events: Vec<&'a str>,
    status: u8,
}

/// What the routing index needs of a packed webhook.
#[derive(Debug, PartialEq, Eq)]
pub struct Routing<'a> {
    pub id: &'a str,
    pub tenant: Option<&'a str>,
    pub events: Vec<&'a str>,
    pub status: WebhookStatus,
}

/// A webhook packed into one allocation.
#[derive(Clone, PartialEq, Eq)]
pub struct Packed(Box<[u8]>);

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Packed({}, {} bytes)", self.id(), self.0.len())
    }
}

/// A packed webhook that cannot be read back (a bug, never bad input: only
/// [`Packed::pack`] makes them).
#[derive(Debug, thiserror::Error)]
#[error("packed webhook unreadable: {0}")]
pub struct Unreadable(#[from] postcard::Error);

fn cow(s: &str) -> Cow<'_, str> {
    Cow::Borrowed(s)
}

fn nanos(t: OffsetDateTime) -> i128 {
    t.unix_timestamp_nanos()
}

fn status_index(status: WebhookStatus) -> u8 {
    WebhookStatus::ALL.iter().position(|s| *s == status).unwrap_or(0) as u8
}

/// Every [`StatusBy`], in the order their packed index names them.
const STATUS_BY: [StatusBy; 3] = [StatusBy::Herald, StatusBy::Tenant, StatusBy::Operator];

fn status_by_index(by: StatusBy) -> u8 {
    STATUS_BY.iter().position(|b| *b == by).unwrap_or(2) as u8
}

/// Writes `layout` into one allocation, sized once: its strings plus a few
/// bytes of lengths and numbers.
fn write(layout: &Layout<'_>) -> Packed {
    let strings = layout.id.len()
        + layout.name.len()
        + layout.url.len()
        + layout.tenant.as_ref().map_or(0, |t| t.len())
        + layout.uid.as_ref().map_or(0, |t| t.len())
        + layout.events.iter().map(|e| e.len()).sum::<usize>()
        + layout.secrets.iter().map(|e| e.len()).sum::<usize>()
        + layout.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
        + layout.filter.as_ref().map_or(0, |f| f.len())
        + layout.tls_client.as_ref().map_or(0, |(c, k)| c.len() + k.len())
        + layout.ordering.as_ref().map_or(0, |o| o.len());
    let bytes = postcard::to_extend(layout, Vec::with_capacity(strings + 96)).expect("a webhook always packs");
    Packed(bytes.into_boxed_slice())
}

/// An ordering as the packed layout holds it: its JSON.
fn ordering_text(ordering: &Ordering) -> Cow<'static, str> {
    Cow::Owned(serde_json::to_string(ordering).expect("an ordering always serialises"))
}

/// A filter as the packed layout holds it: its JSON, as it writes back.
fn filter_text(filter: &Filter) -> Cow<'static, str> {
    Cow::Owned(serde_json::to_string(filter).expect("a filter always serialises"))
}

fn time(n: i128) -> Result<OffsetDateTime, Unreadable> {
    OffsetDateTime::from_unix_timestamp_nanos(n).map_err(|_| Unreadable(postcard::Error::DeserializeBadEncoding))
}

impl Packed {
    /// Packs `webhook`.
    pub fn pack(webhook: &Webhook) -> Packed {
        write(&Layout {
            id: cow(&webhook.id),
            tenant: webhook.tenant.as_deref().map(cow),
            uid: webhook.uid.as_deref().map(cow),
            name: cow(&webhook.name),
            url: cow(&webhook.url),
            events: webhook.events.iter().map(|e| cow(e)).collect(),
            status: status_index(webhook.status),
            status_reason: webhook.status_reason.as_deref().map(cow),
            status_changed_at: webhook.status_changed_at.map(nanos),
            status_by: webhook.status_by.map(status_by_index),
            secrets: webhook.secrets.iter().map(|s| cow(s)).collect(),
            previous_secrets: webhook
                .previous_secrets
                .iter()
                .map(|p| (cow(&p.secret), nanos(p.expires_at)))
                .collect(),
            headers: webhook.headers.iter().map(|(k, v)| (cow(k), cow(v))).collect(),
            created_at: nanos(webhook.created_at),
            updated_at: nanos(webhook.updated_at),
            max_in_flight: webhook.limits.max_in_flight.map(|m| m as u64),
            timeout_ms: webhook.limits.timeout_ms,
            final_statuses: webhook.limits.final_statuses.clone(),
            rate: webhook.limits.rate.map(|r| (r.per_second, r.burst)),
            retried_pending: webhook.retried_pending.iter().copied().map(nanos).collect(),
            filter: webhook.filter.as_ref().map(filter_text),
            tls_client: webhook.tls_client.as_ref().map(|t| (cow(&t.certificate), cow(&t.key))),
            ordering: webhook.ordering.as_ref().map(ordering_text),
        })
    }

    /// The webhook's id, read without unpacking the rest.
    pub fn id(&self) -> &str {
        std::str::from_utf8(self.id_bytes()).unwrap_or("")
    }

    /// The id's bytes: its length (a LEB128 varint, as postcard writes it)
    /// then the bytes, read without checking them again.
    pub fn id_bytes(&self) -> &[u8] {
        let mut len = 0usize;
        for (i, byte) in self.0.iter().enumerate().take(5) {
            len |= usize::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return self.0.get(i + 1..i + 1 + len).unwrap_or(&[]);
            }
        }
        &[]
    }

    /// Its id, tenant, event patterns and status, without unpacking the rest.
    pub fn routing(&self) -> Result<Routing<'_>, Unreadable> {
        let (head, _) = postcard::take_from_bytes::<Head<'_>>(&self.0)?;
        Ok(Routing {
            id: head.id,
            tenant: head.tenant,
            events: head.events,
            status: *WebhookStatus::ALL
                .get(usize::from(head.status))
                .ok_or(Unreadable(postcard::Error::DeserializeBadEnum))?,
        })
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Unpacks the webhook.
    pub fn unpack(&self) -> Result<Webhook, Unreadable> {
        let l: Layout<'_> = postcard::from_bytes(&self.0)?;
        let own = |c: Cow<'_, str>| c.into_owned();
        Ok(Webhook {
            id: own(l.id),
            tenant: l.tenant.map(own),
            uid: l.uid.map(own),
            name: own(l.name),
            url: own(l.url),
            events: l.events.into_iter().map(own).collect(),
            status: *WebhookStatus::ALL
                .get(usize::from(l.status))
                .ok_or(Unreadable(postcard::Error::DeserializeBadEnum))?,
            status_reason: l.status_reason.map(own),
            status_changed_at: l.status_changed_at.map(time).transpose()?,
            status_by: l
                .status_by
                .map(|i| STATUS_BY.get(usize::from(i)).copied())
                .map(|by| by.ok_or(Unreadable(postcard::Error::DeserializeBadEnum)))
                .transpose()?,
            retried_pending: l
                .retried_pending
                .into_iter()
                .map(time)
                .collect::<Result<_, Unreadable>>()?,
            secrets: l.secrets.into_iter().map(own).collect(),
            previous_secrets: l
                .previous_secrets
                .into_iter()
                .map(|(secret, at)| {
                    Ok(ExpiringSecret {
                        secret: own(secret),
                        expires_at: time(at)?,
                    })
                })
                .collect::<Result<_, Unreadable>>()?,
            headers: l
                .headers
                .into_iter()
                .map(|(k, v)| (own(k), own(v)))
                .collect::<BTreeMap<_, _>>(),
            created_at: time(l.created_at)?,
            updated_at: time(l.updated_at)?,
            limits: Limits {
                max_in_flight: l.max_in_flight.map(|m| m as usize),
                timeout_ms: l.timeout_ms,
                final_statuses: l.final_statuses,
                rate: l.rate.map(|(per_second, burst)| RateLimit { per_second, burst }),
            },
            filter: l
                .filter
                .map(|text| serde_json::from_str(&text))
                .transpose()
                .map_err(|_| Unreadable(postcard::Error::DeserializeBadEncoding))?,
            tls_client: l.tls_client.map(|(certificate, key)| TlsClient {
                certificate: own(certificate),
                key: own(key),
            }),
            ordering: l
                .ordering
                .map(|text| serde_json::from_str(&text))
                .transpose()
                .map_err(|_| Unreadable(postcard::Error::DeserializeBadEncoding))?,
        })
    }
}

/// A string of a document, borrowed from the JSON unless it had escapes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Str<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(V)
    }
}

impl Str<'_> {
    fn cow(&self) -> Cow<'_, str> {
        Cow::Borrowed(&self.0)
    }
}

/// A `uid` read as [`Webhook`] reads it: a string, or none for anything
/// else another writer put in a field of that name.
#[derive(Default)]
struct Lenient<'a>(Option<Str<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for Lenient<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Lenient<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Lenient(Some(Str(Cow::Borrowed(v)))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Lenient(Some(Str(Cow::Owned(v.to_owned())))))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Lenient(Some(Str(Cow::Owned(v)))))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Lenient(None))
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                Lenient::deserialize(d)
            }
            // Read as values, not skipped: as `Webhook` reads them (a
            // `serde_json::Value`), a string that is not UTF-8 refuses the
            // document, which skipping would not notice.
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<serde_json::Value>()?.is_some() {}
                Ok(Lenient(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<String, serde_json::Value>()?.is_some() {}
                Ok(Lenient(None))
            }
        }
        deserializer.deserialize_any(V)
    }
}

/// Headers in name order, the last of a repeated name kept (as a
/// `BTreeMap` reads them).
#[derive(Default)]
struct Headers<'a>(Vec<(Str<'a>, Str<'a>)>);

impl<'de: 'a, 'a> Deserialize<'de> for Headers<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Headers<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut headers: Vec<(Str<'de>, Str<'de>)> = Vec::with_capacity(map.size_hint().unwrap_or(0));
                while let Some(entry) = map.next_entry()? {
                    headers.push(entry);
                }
                // Stable: of equal names, the last written stays last and is kept.
                headers.sort_by(|a, b| a.0.cmp(&b.0));
                headers.reverse();
                headers.dedup_by(|later, kept| later.0 == kept.0);
                headers.reverse();
                Ok(Headers(headers))
            }
        }
        deserializer.deserialize_map(V)
    }
}

#[derive(Deserialize)]
struct Previous<'a> {
    #[serde(borrow)]
    secret: Str<'a>,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
}

/// A webhook document read in place: the fields of [`Webhook`], read by the
/// same rules, its strings borrowed from the JSON. [`Document::pack`] makes
/// the same bytes as [`Packed::pack`] of the `Webhook` the JSON reads as.
#[derive(Deserialize)]
pub struct Document<'a> {
    #[serde(borrow)]
    id: Str<'a>,
    #[serde(default, borrow)]
    tenant: Option<Str<'a>>,
    #[serde(default, borrow)]
    uid: Lenient<'a>,
    #[serde(borrow)]
    name: Str<'a>,
    #[serde(borrow)]
    url: Str<'a>,
    #[serde(borrow)]
    events: Vec<Str<'a>>,
    status: WebhookStatus,
    #[serde(default, borrow)]
    status_reason: Option<Str<'a>>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    status_changed_at: Option<OffsetDateTime>,
    #[serde(default, borrow)]
    status_by: Lenient<'a>,
    #[serde(default)]
    retried_pending: Vec<Rfc3339Time>,
    #[serde(borrow)]
    secrets: Vec<Str<'a>>,
    #[serde(default, borrow)]
    previous_secrets: Vec<Previous<'a>>,
    #[serde(default, borrow)]
    headers: Headers<'a>,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    filter: Option<Filter>,
    #[serde(default, borrow)]
    tls_client: Option<TlsClientDocument<'a>>,
    #[serde(default)]
    ordering: Option<Ordering>,
}

/// `tls_client` read in place.
#[derive(Deserialize)]
struct TlsClientDocument<'a> {
    #[serde(borrow)]
    certificate: Str<'a>,
    #[serde(borrow)]
    key: Str<'a>,
}

/// An RFC 3339 time in a document's list.
#[derive(Deserialize)]
struct Rfc3339Time(#[serde(with = "time::serde::rfc3339")] OffsetDateTime);

impl<'a> Document<'a> {
    /// Reads `json` (not yet checked: see [`check`](crate::webhook::check)).
    pub fn parse(json: &'a [u8]) -> Result<Document<'a>, serde_json::Error> {
        serde_json::from_slice(json)
    }

    /// The webhook's status.
    pub fn status(&self) -> WebhookStatus {
        self.status
    }

    /// Its payload filter, compiled as it was read.
    pub fn filter(&self) -> Option<&Filter> {
        self.filter.as_ref()
    }

    /// Packs the document.
    pub fn pack(&self) -> Packed {
        write(&Layout {
            id: self.id.cow(),
            tenant: self.tenant.as_ref().map(Str::cow),
            uid: self.uid.0.as_ref().map(Str::cow),
            name: self.name.cow(),
            url: self.url.cow(),
            events: self.events.iter().map(Str::cow).collect(),
            status: status_index(self.status),
            status_reason: self.status_reason.as_ref().map(Str::cow),
            status_changed_at: self.status_changed_at.map(nanos),
            status_by: self
                .status_by
                .0
                .as_ref()
                .map(|by| status_by_index(StatusBy::parse(&by.0))),
            secrets: self.secrets.iter().map(Str::cow).collect(),
            previous_secrets: self
                .previous_secrets
                .iter()
                .map(|p| (p.secret.cow(), nanos(p.expires_at)))
                .collect(),
            headers: self.headers.0.iter().map(|(k, v)| (k.cow(), v.cow())).collect(),
            created_at: nanos(self.created_at),
            updated_at: nanos(self.updated_at),
            max_in_flight: self.limits.max_in_flight.map(|m| m as u64),
            timeout_ms: self.limits.timeout_ms,
            final_statuses: self.limits.final_statuses.clone(),
            rate: self.limits.rate.map(|r| (r.per_second, r.burst)),
            retried_pending: self.retried_pending.iter().map(|t| nanos(t.0)).collect(),
            filter: self.filter.as_ref().map(filter_text),
            tls_client: self.tls_client.as_ref().map(|t| (t.certificate.cow(), t.key.cow())),
            ordering: self.ordering.as_ref().map(ordering_text),
        })
    }
}

impl Fields for Document<'_> {
    fn id(&self) -> &str {
        &self.id.0
    }
    fn tenant(&self) -> Option<&str> {
        self.tenant.as_ref().map(|t| &*t.0)
    }
    fn url(&self) -> &str {
        &self.url.0
    }
    fn events(&self) -> impl ExactSizeIterator<Item = &str> {
        self.events.iter().map(|e| &*e.0)
    }
    fn secrets(&self) -> impl ExactSizeIterator<Item = &str> {
        self.secrets.iter().map(|e| &*e.0)
    }
    fn previous_secrets(&self) -> impl ExactSizeIterator<Item = &str> {
        self.previous_secrets.iter().map(|p| &*p.secret.0)
    }
    fn headers(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.headers.0.iter().map(|(k, v)| (&*k.0, &*v.0))
    }
    fn limits(&self) -> &Limits {
        &self.limits
    }
    fn tls_client(&self) -> Option<(&str, &str)> {
        self.tls_client.as_ref().map(|t| (&*t.certificate.0, &*t.key.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::tests::webhook;
    use time::macros::datetime;

    #[test]
    fn every_field_survives_packing() {
        let mut w = webhook("wh_1", "https://example.com/hook?q=1", &["tour.*", "survey.completed"]);
        w.tenant = Some("acme".into());
        w.uid = Some("crm".into());
        w.status = WebhookStatus::Disabled;
        w.status_reason = Some("410 Gone".into());
        w.status_changed_at = Some(datetime!(2025-03-01 10:00:00.123456789 UTC));
        w.status_by = Some(StatusBy::Herald);
        w.retried_pending = vec![
            datetime!(2025-03-01 11:00:00.5 UTC),
            datetime!(2025-03-02 11:00:00.25 UTC),
        ];
        w.previous_secrets = vec![ExpiringSecret {
            secret: w.secrets[0].clone(),
            expires_at: datetime!(2025-03-02 10:00 UTC),
        }];
        w.headers.insert("x-api-key".into(), "k_live_123".into());
        w.limits = Limits {
            max_in_flight: Some(3),
            timeout_ms: Some(2500),
            final_statuses: Some(vec![400, 422]),
            rate: Some(crate::webhook::RateLimit {
                per_second: 0.5,
                burst: Some(3),
            }),
        };
        w.filter = Some(Filter::parse_named(r#"{"/data/plan":{"in":["pro","team"]},"/amount":{">":100.0}}"#).unwrap());
        w.tls_client = Some(crate::webhook::tests::tls_client("wh_1 client"));
        let packed = Packed::pack(&w);
        assert_eq!(packed.id(), "wh_1");
        let long = webhook(&"x".repeat(128), "https://example.com/", &["*"]);
        assert_eq!(Packed::pack(&long).id(), long.id, "a length of two varint bytes");
        assert_eq!(
            packed.routing().unwrap(),
            Routing {
                id: "wh_1",
                tenant: Some("acme"),
                events: vec!["tour.*", "survey.completed"],
                status: WebhookStatus::Disabled,
            }
        );
        assert_eq!(packed.unpack().unwrap(), w);

        // Optional fields absent, and a webhook of no tenant.
        let plain = webhook("wh_2", "http://example.com/", &["*"]);
        assert_eq!(Packed::pack(&plain).unpack().unwrap(), plain);
    }

    #[test]
    fn a_packed_webhook_is_smaller_than_its_json() {
        let mut w = webhook(
            "wh_0000042",
            "https://hooks.tenant-00042.example.com/webhooks/42",
            &["event.00042"],
        );
        w.tenant = Some("tenant-00042".into());
        w.headers.insert("x-api-key".into(), "key-00042-abcdef".into());
        let json = serde_json::to_vec(&w).unwrap();
        let packed = Packed::pack(&w);
        assert!(
            packed.len() * 3 < json.len() * 2,
            "{} bytes packed, {} as JSON",
            packed.len(),
            json.len()
        );
    }
}

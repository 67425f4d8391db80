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

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::subscriptions::model::{ExpiringSecret, Limits, Webhook, WebhookStatus};

/// The packed layout. Every field is written, in this order; timestamps are
/// Unix nanoseconds (UTC), statuses their index in [`WebhookStatus::ALL`].
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

fn time(n: i128) -> Result<OffsetDateTime, Unreadable> {
    OffsetDateTime::from_unix_timestamp_nanos(n).map_err(|_| Unreadable(postcard::Error::DeserializeBadEncoding))
}

impl Packed {
    /// Packs `webhook`.
    pub fn pack(webhook: &Webhook) -> Packed {
        let layout = Layout {
            id: cow(&webhook.id),
            tenant: webhook.tenant.as_deref().map(cow),
            uid: webhook.uid.as_deref().map(cow),
            name: cow(&webhook.name),
            url: cow(&webhook.url),
            events: webhook.events.iter().map(|e| cow(e)).collect(),
            status: WebhookStatus::ALL
                .iter()
                .position(|s| *s == webhook.status)
                .unwrap_or(0) as u8,
            status_reason: webhook.status_reason.as_deref().map(cow),
            status_changed_at: webhook.status_changed_at.map(nanos),
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
        };
        // Sized once: the strings plus a few bytes of lengths and numbers.
        let strings = webhook.id.len()
            + webhook.name.len()
            + webhook.url.len()
            + webhook.tenant.as_ref().map_or(0, String::len)
            + webhook.events.iter().map(String::len).sum::<usize>()
            + webhook.secrets.iter().map(String::len).sum::<usize>()
            + webhook.headers.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>();
        let bytes = postcard::to_extend(&layout, Vec::with_capacity(strings + 96)).expect("a webhook always packs");
        Packed(bytes.into_boxed_slice())
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
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subscriptions::model::tests::webhook;
    use time::macros::datetime;

    #[test]
    fn every_field_survives_packing() {
        let mut w = webhook("wh_1", "https://example.com/hook?q=1", &["tour.*", "survey.completed"]);
        w.tenant = Some("acme".into());
        w.uid = Some("crm".into());
        w.status = WebhookStatus::Disabled;
        w.status_reason = Some("410 Gone".into());
        w.status_changed_at = Some(datetime!(2025-03-01 10:00:00.123456789 UTC));
        w.previous_secrets = vec![ExpiringSecret {
            secret: w.secrets[0].clone(),
            expires_at: datetime!(2025-03-02 10:00 UTC),
        }];
        w.headers.insert("x-api-key".into(), "k_live_123".into());
        w.limits = Limits {
            max_in_flight: Some(3),
            timeout_ms: Some(2500),
            final_statuses: Some(vec![400, 422]),
        };
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

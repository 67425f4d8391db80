//! Why a retry, redrive or dead-letter record was written: the value of its
//! `herald.reason` header.
//!
//! Every reason is a variant of [`Reason`], with its wire string (the header
//! value, which must never change: dead letters already in topics are read
//! back by replays), its [`Class`], whether a replay re-drives it and a
//! sentence for people. `docs/dead-letter.md` lists them in a table that a
//! test compares with [`Reason::ALL`].

use std::fmt;
use std::str::FromStr;

use strum::VariantArray;

use crate::routing::envelope::UnroutableReason;

/// Why a record was written to a wait topic, the redrive topic or the
/// dead-letter topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, VariantArray, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Reason {
    /// The delivery failed in the last retry tier too.
    RetriesExhausted,
    /// The delivery failed and no retry tiers are configured; also the
    /// reason of every retry record.
    DeliveryFailed,
    /// The endpoint answered a status its `final_statuses` end a delivery with.
    FinalStatus,
    /// The endpoint answered 410 Gone: not retried, and the webhook is disabled.
    EndpointGone,
    /// The webhook was deleted while its retry waited (or its id now names another webhook).
    WebhookDeleted,
    /// The webhook no longer subscribes to the event's type.
    WebhookUnsubscribed,
    /// The webhook is paused; the delivery is kept for a replay.
    WebhookPaused,
    /// The webhook is disabled; the delivery is kept for a replay.
    WebhookDisabled,
    /// A record in a wait topic lacks Herald's headers, or is due further ahead than its topic allows.
    InvalidRetryRecord,
    /// A stub: the record was too large for the broker even without its diagnostics.
    RecordTooLarge,
    /// Unroutable: the record value is not valid JSON.
    InvalidJson,
    /// Unroutable: an object of the record value has a key twice.
    AmbiguousJson,
    /// Unroutable: no event type where the rules look.
    MissingEventType,
    /// Unroutable: a header or key the rules read is not UTF-8.
    NotUtf8,
    /// Unroutable: neither binary nor structured CloudEvents mode.
    #[strum(serialize = "not_cloudevent")]
    NotCloudEvent,
    /// Unroutable: an event id, time or tenant is a JSON object or array.
    InvalidField,
    /// Herald failed on the record (a bug, logged with its panic): kept as read.
    InternalError,
    /// Not a dead-letter reason: a redrive record written by a manual retry.
    ManualRetry,
}

/// What kind of record a reason is written on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// A delivery that was attempted and failed.
    Failed,
    /// A delivery kept, not attempted, while its webhook was not active.
    Kept,
    /// A delivery whose webhook is gone or no longer wants the event.
    Dropped,
    /// A delivery's record that is not usable as written (invalid, or a stub).
    InvalidRecord,
    /// Not a delivery's: a record that could not be routed at all.
    Unroutable,
    /// Not a dead letter: a redrive record.
    Redrive,
}

impl Reason {
    /// Every reason, in the order of `docs/dead-letter.md`.
    pub const ALL: &'static [Reason] = Reason::VARIANTS;

    /// The `herald.reason` header value, also the metric label.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// What kind of record it is written on.
    pub fn class(self) -> Class {
        match self {
            Reason::RetriesExhausted | Reason::DeliveryFailed | Reason::FinalStatus | Reason::EndpointGone => {
                Class::Failed
            }
            Reason::WebhookPaused | Reason::WebhookDisabled => Class::Kept,
            Reason::WebhookDeleted | Reason::WebhookUnsubscribed => Class::Dropped,
            Reason::InvalidRetryRecord | Reason::RecordTooLarge => Class::InvalidRecord,
            Reason::InvalidJson
            | Reason::AmbiguousJson
            | Reason::MissingEventType
            | Reason::NotUtf8
            | Reason::NotCloudEvent
            | Reason::InvalidField
            | Reason::InternalError => Class::Unroutable,
            Reason::ManualRetry => Class::Redrive,
        }
    }

    /// A dead-letter reason of a delivery (one a replay can be asked for):
    /// not an unroutable record's, not a redrive's.
    pub fn of_delivery(self) -> bool {
        !matches!(self.class(), Class::Unroutable | Class::Redrive)
    }

    /// Whether a replay re-drives a dead letter with this reason: a
    /// delivery's, with its value (a `record_too_large` stub has none and
    /// is counted as skipped).
    pub fn replayable(self) -> bool {
        self.of_delivery() && self != Reason::RecordTooLarge
    }

    /// The reasons a replay takes when none is given: failed deliveries.
    pub fn failed() -> impl Iterator<Item = Reason> {
        Reason::ALL.iter().copied().filter(|r| r.class() == Class::Failed)
    }

    /// The reasons of deliveries kept while a webhook was not active.
    pub fn kept() -> impl Iterator<Item = Reason> {
        Reason::ALL.iter().copied().filter(|r| r.class() == Class::Kept)
    }

    /// When the reason is written, for people (`docs/dead-letter.md`).
    pub fn description(self) -> &'static str {
        match self {
            Reason::RetriesExhausted => "the delivery failed in the last retry tier too",
            Reason::DeliveryFailed => "the delivery failed and no retry tiers are configured",
            Reason::FinalStatus => "the endpoint answered a status its final statuses end a delivery with",
            Reason::EndpointGone => "the endpoint answered 410 Gone: not retried, and the webhook is disabled",
            Reason::WebhookDeleted => {
                "the webhook was deleted while its retry waited (or its id now names another webhook)"
            }
            Reason::WebhookUnsubscribed => "the webhook no longer subscribes to the event's type",
            Reason::WebhookPaused => "the webhook is paused; the delivery is kept for replay",
            Reason::WebhookDisabled => "the webhook is disabled; the delivery is kept for replay",
            Reason::InvalidRetryRecord => {
                "a record in a wait topic lacks Herald's headers or is due further ahead than the topic allows"
            }
            Reason::RecordTooLarge => "a stub: the record was too large for the broker even without its diagnostics",
            Reason::InvalidJson => "the envelope rules read JSON and the record value is not valid JSON",
            Reason::AmbiguousJson => "an object in the record value has a key twice",
            Reason::MissingEventType => "no event type where the envelope rules look",
            Reason::NotUtf8 => "a header or key the envelope rules read is not UTF-8",
            Reason::NotCloudEvent => "the cloudevents preset found neither binary nor structured mode",
            Reason::InvalidField => "an event id, time or tenant the envelope rules read is a JSON object or array",
            Reason::InternalError => {
                "Herald failed on the record (a bug, logged with its panic); the record is kept as read: publish it again once fixed"
            }
            Reason::ManualRetry => "not a dead-letter reason: a redrive record written by a manual retry",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A `herald.reason` value this version does not know (a typo, or a
/// record written by a newer version).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a reason Herald knows")]
pub struct UnknownReason(pub String);

impl FromStr for Reason {
    type Err = UnknownReason;

    fn from_str(s: &str) -> Result<Reason, UnknownReason> {
        Reason::ALL
            .iter()
            .copied()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownReason(s.to_owned()))
    }
}

/// Each unroutable reason is a dead-letter reason (an exhaustive match: a
/// new one does not build until it is a [`Reason`] too).
impl From<UnroutableReason> for Reason {
    fn from(why: UnroutableReason) -> Reason {
        match why {
            UnroutableReason::InvalidJson => Reason::InvalidJson,
            UnroutableReason::AmbiguousJson => Reason::AmbiguousJson,
            UnroutableReason::MissingEventType => Reason::MissingEventType,
            UnroutableReason::NotUtf8 => Reason::NotUtf8,
            UnroutableReason::NotCloudEvent => Reason::NotCloudEvent,
            UnroutableReason::InvalidField => Reason::InvalidField,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::IntoEnumIterator;

    /// The header values in topics today: a replay reads them back, so none may change.
    #[test]
    fn wire_strings_are_stable() {
        let wire: Vec<&str> = Reason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(
            wire,
            [
                "retries_exhausted",
                "delivery_failed",
                "final_status",
                "endpoint_gone",
                "webhook_deleted",
                "webhook_unsubscribed",
                "webhook_paused",
                "webhook_disabled",
                "invalid_retry_record",
                "record_too_large",
                "invalid_json",
                "ambiguous_json",
                "missing_event_type",
                "not_utf8",
                "not_cloudevent",
                "invalid_field",
                "internal_error",
                "manual_retry",
            ]
        );
    }

    #[test]
    fn parses_its_own_strings_and_names_an_unknown_one() {
        for reason in Reason::ALL {
            assert_eq!(reason.as_str().parse::<Reason>(), Ok(*reason));
        }
        let err = "written_by_a_newer_version".parse::<Reason>().unwrap_err();
        assert!(err.to_string().contains("`written_by_a_newer_version`"), "{err}");
    }

    #[test]
    fn classes_keep_the_sets_replays_and_status_use() {
        let failed: Vec<&str> = Reason::failed().map(Reason::as_str).collect();
        assert_eq!(
            failed,
            ["retries_exhausted", "delivery_failed", "final_status", "endpoint_gone"]
        );
        let kept: Vec<&str> = Reason::kept().map(Reason::as_str).collect();
        assert_eq!(kept, ["webhook_paused", "webhook_disabled"]);
        let of_delivery = Reason::ALL.iter().filter(|r| r.of_delivery()).count();
        assert_eq!(of_delivery, 10);
        assert!(!Reason::RecordTooLarge.replayable());
        assert!(!Reason::InvalidJson.replayable());
        assert!(!Reason::ManualRetry.replayable());
        assert!(Reason::WebhookPaused.replayable());
    }

    #[test]
    fn every_unroutable_reason_is_a_reason() {
        for why in UnroutableReason::iter() {
            assert_eq!(Reason::from(why).class(), Class::Unroutable);
            assert_eq!(Reason::from(why).as_str(), why.as_str());
        }
    }

    /// The reasons `docs/dead-letter.md` lists in its table of the
    /// dead-letter topic (the first column's names).
    fn documented() -> Vec<String> {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/dead-letter.md");
        let doc = std::fs::read_to_string(path).expect("docs/dead-letter.md is readable");
        let section = doc
            .split("\n## The dead-letter topic\n")
            .nth(1)
            .expect("docs/dead-letter.md has a section `The dead-letter topic`");
        let table = section
            .lines()
            .skip_while(|l| !l.starts_with("| `herald.reason`"))
            .skip(2)
            .take_while(|l| l.starts_with('|'));
        table
            .flat_map(|row| {
                let first = row.split('|').nth(1).unwrap_or_default();
                first
                    .split(',')
                    .map(|name| name.trim().trim_matches('`').to_owned())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Adding a reason without documenting it fails here.
    #[test]
    fn the_dead_letter_doc_lists_every_reason() {
        let documented = documented();
        let dead_letter: Vec<&str> = Reason::ALL
            .iter()
            .filter(|r| r.class() != Class::Redrive)
            .map(|r| r.as_str())
            .collect();
        for reason in &dead_letter {
            assert!(
                documented.iter().any(|d| d == reason),
                "`{reason}` is missing from docs/dead-letter.md's table of reasons"
            );
        }
        for name in &documented {
            assert!(
                dead_letter.contains(&name.as_str()),
                "docs/dead-letter.md lists `{name}`, which is not a dead-letter reason"
            );
        }
        let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/dead-letter.md")).unwrap();
        for reason in Reason::ALL.iter().filter(|r| r.class() == Class::Redrive) {
            assert!(
                doc.contains(&format!("`{reason}`")),
                "`{reason}` is missing from docs/dead-letter.md"
            );
        }
    }
}

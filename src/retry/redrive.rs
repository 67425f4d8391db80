//! Delivering something again, now.
//!
//! A redrive record goes to the redrive topic, due at once: the retry
//! consumer delivers it as soon as it reads it, whatever the tier topics
//! hold. It carries the delivery's id (the `webhook-id` the receiver
//! de-duplicates on), its attempt count and the webhook it is bound to; the
//! tiers start again from the first should it fail.

use tokio_util::sync::CancellationToken;

use crate::event::{EventMeta, SourceRecord};
use crate::retry::codec::{Binding, DeliveryContext, Destination, FailureRecord};
use crate::retry::reason::Reason;
use crate::retry::sink::{Abandoned, FailureSink};

/// One delivery to make again.
pub struct Again<'a> {
    /// The event as consumed from its source topic.
    pub record: &'a SourceRecord,
    pub meta: &'a EventMeta,
    pub binding: Binding<'a>,
    pub delivery_id: &'a str,
    /// Attempts made so far.
    pub attempts: u32,
    /// Who asked, for the record's detail.
    pub by: &'a str,
}

/// Writes `again` to the redrive topic and waits for the broker's acknowledgement.
pub async fn deliver_again(sink: &FailureSink, again: Again<'_>, abort: &CancellationToken) -> Result<(), Abandoned> {
    let letter = FailureRecord {
        destination: Destination::Redrive,
        reason: Reason::ManualRetry,
        detail: format!("delivered again at the request of `{}`", again.by),
        record: again.record,
        meta: Some(again.meta),
        delivery: Some(DeliveryContext {
            ordering: None,
            binding: again.binding,
            delivery_id: again.delivery_id,
            attempts: again.attempts,
            last_attempt: None,
            first_attempt_at: None,
            previous_history: None,
            tier: None,
        }),
    };
    sink.send(letter, abort).await
}

//! Delivery history and statistics: what the management API shows about a
//! webhook's deliveries.
//!
//! Every attempt becomes an [`AttemptRecord`] (the request as sent, the
//! response as received, bodies truncated at `history.max_body_bytes`) and a
//! count in per-minute and per-hour buckets. Neither is on the delivery's
//! path: the [`Recorder`] queues what each attempt shares with its event (no
//! copy, no serialisation) in memory (bounded; beyond it an attempt is dropped
//! and counted, never the delivery held), and a writer builds the records and
//! writes them in batches, one Redis pipeline per flush; counters are summed
//! in memory and never dropped. Redis keeps a webhook's newest
//! `history.max_per_webhook` attempts, so older queued ones are superseded
//! rather than written and trimmed. The full records (bodies untruncated) of
//! every attempt also go to `history.topic` for anyone who wants them.
//!
//! Redis keys (prefix `P`):
//! - `P attempts:{webhook}`: sorted set of attempt JSON by time (ms), trimmed to
//!   `history.max_per_webhook` and `history.max_age`, expiring with the latter;
//! - `P stats:{scope}:m:{minute}` and `P stats:{scope}:h:{hour}`: hashes of
//!   `succeeded`/`failed` counts per minute (kept 2 h) and per hour (kept 8 d),
//!   where scope is `webhook:{id}` or `tenant:{tenant}`;
//! - `P stats:{scope}:last`: `succeeded_at`/`failed_at` (epoch ms);
//! - `P deliveries:{webhook}` and `P delivery:{webhook}`: the webhook's
//!   deliveries, one per event, by first time (a sorted set of `webhook-id`s)
//!   and their records (a hash of `webhook-id` to a
//!   [`DeliveryRecord`](record::DeliveryRecord) as JSON: where it stands and
//!   its attempts' briefs), updated by one script per flush from each
//!   attempt's or kept delivery's [`Step`](record::Step), trimmed to
//!   `history.max_deliveries_per_webhook` and `history.max_age`.

pub mod record;
pub mod recorder;
pub mod store;

pub use record::AttemptRecord;

/// Milliseconds since the epoch.
pub fn epoch_ms(t: time::OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}
pub use recorder::Recorder;
pub use store::HistoryStore;

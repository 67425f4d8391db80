//! Where failed deliveries go: retry tiers as Kafka delay topics, then the
//! dead-letter topic.
//!
//! [`schedule`] decides when a retry is due, [`sink`] writes retry and
//! dead-letter records (acknowledged before any source offset is committed),
//! and [`record`] reads a retry record back when its tier consumer holds it
//! until due (see `intake::consumer`).

pub mod lifecycle;
pub mod record;
pub mod replay;
pub mod schedule;
pub mod sink;

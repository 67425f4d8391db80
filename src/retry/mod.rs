//! Where failed deliveries go. Until retry tiers exist, every failure and
//! every unusable record goes to the dead-letter topic, acknowledged before
//! its source offset is committed.

pub mod dead_letter;

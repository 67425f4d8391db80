//! Everything after a failed attempt: when it is tried again, where it waits
//! meanwhile, and where it ends when it is not.
//!
//! [`failures`] is the one way in for a delivery that did not succeed: it
//! asks [`policy`], carries the decision out (disabling a webhook whose
//! endpoint is gone, counting the auto-disable streak, the history step) and
//! writes the record through [`sink`]. [`reason`] says why a record was
//! written; [`policy`] decides (final statuses, 410, the tiers, Retry-After,
//! a webhook that changed);
//! [`schedule`] computes due times; [`wait`] knows the topics retries wait in
//! and when a waiting record may be delivered; [`codec`] is the record
//! format; [`sink`] writes records and waits for the broker's
//! acknowledgement; [`redrive`] delivers something again now (manual retry)
//! and [`replay`] re-drives dead letters; [`pending`] delivers now what a
//! webhook's failures wait for in the tiers.

pub mod codec;
pub mod failures;
pub mod ordering;
pub mod pending;
pub mod policy;
pub mod reason;
pub mod redrive;
pub mod replay;
pub mod schedule;
pub mod sink;
pub mod wait;

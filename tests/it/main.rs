//! Integration tests: one binary, real broker, real Redis, real receivers.
//! Run them with `scripts/test`, which starts what they need.

mod helpers;

mod admin;
mod deploy;
mod envelopes;
mod failures;
mod resilience;
mod retries;
mod signatures;
mod subscriptions;

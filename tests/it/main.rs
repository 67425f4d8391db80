//! Integration tests: one binary, real broker, real Redis, real receivers.
//! Run them with `scripts/test`, which starts what they need.

mod helpers;

mod admin;
mod api;
mod bad_input;
mod cli;
mod codecs;
mod deploy;
mod envelopes;
mod failure_path;
mod failures;
mod fairness;
mod filters;
mod flood;
mod history;
mod https;
mod key_ordering;
mod ordering;
mod portal;
mod progress;
mod rate_limits;
mod rebalance;
mod replays;
mod resilience;
mod retention;
mod retries;
mod retry_pending;
mod security;
mod signatures;
mod standard_webhooks;
mod stuck;
mod subscriptions;
mod system_events;
mod tenant_metrics;
mod tenants;

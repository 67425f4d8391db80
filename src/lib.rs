//! Herald: Kafka-native webhook delivery.
//!
//! The modules follow one event's path: [`intake`] consumes it from Kafka,
//! [`routing`] recognises its envelope and finds its webhooks in the
//! [`subscriptions`] index, [`delivery`] signs and sends it, [`retry`] keeps
//! what failed, and [`telemetry`] reports every step. [`app`] wires them;
//! [`pipeline`] is the per-event glue; [`tools`] backs the command-line
//! helpers.

pub mod admin;
pub mod app;
pub mod client;
pub mod config;
pub mod delivery;
pub mod event;
pub mod history;
pub mod intake;
pub mod kafka;
pub mod pipeline;
pub mod retry;
pub mod routing;
pub mod subscriptions;
pub mod telemetry;
pub mod tools;

pub use app::Application;
pub use config::Config;

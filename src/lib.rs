//! Herald: Kafka-native webhook delivery.
//!
//! The modules follow one event's path: [`intake`] consumes it from Kafka,
//! [`routing`] recognises its envelope and finds its webhooks in the
//! [`subscriptions`] index, [`delivery`] signs and sends it, [`retry`] keeps
//! what failed, [`history`] records every attempt, and [`telemetry`] reports
//! every step. Beneath them, [`event`] holds the shared record types,
//! [`webhook`] the webhook document (the Redis contract), [`config`] the
//! configuration and [`kafka`] the Kafka clients. [`app`] wires them and
//! [`ops`] serves their health, through [`serve`] (HTTP with limits, for
//! every listener); [`pipeline`] is the per-event glue;
//! [`admin`] serves the management API; [`cli`] is the `herald` command
//! line, with the API's client and the operator commands that talk to Kafka
//! directly.
//! Imports between modules go one way (`scripts/check-imports` keeps it so).
//!
//! Locks: state shared between threads is behind `parking_lot`'s `Mutex`,
//! `RwLock` and `Condvar`, never std's (clippy.toml refuses them, in tests
//! and examples too). A std lock is poisoned by a panic while it is held,
//! and Herald goes on after a panic in one event (it is dead-lettered as
//! `internal_error`), so each use of a std lock had to choose between
//! panicking from then on and going on with the data, and the uses chose
//! differently. Going on is the choice everywhere: the critical sections
//! update counts, maps and queues in memory and call nothing that fails half
//! way, so a panic leaves at most one update half made, which costs less
//! than a replica whose every later use of that lock panics.

pub mod admin;
pub mod app;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod event;
pub mod history;
pub mod intake;
pub mod kafka;
pub mod ops;
pub mod pipeline;
pub mod portal;
pub mod retry;
pub mod routing;
pub mod serve;
pub mod subscriptions;
pub mod telemetry;
pub mod webhook;

pub use app::Application;
pub use config::Config;

//! Test helpers: real broker, real Redis, real HTTP receivers on 127.0.0.1.
//!
//! Every test gets its own topics, consumer group and Redis key prefix from
//! [`TestEnv::new`], so tests run in parallel. The broker address comes from
//! `HERALD_TEST_BROKERS` (set by `scripts/test`, which starts one).
//!
//! One file per thing helped with; the tests name them all through this
//! module (`use crate::helpers::*`).

mod app;
mod env;
mod publisher;
mod receiver;
mod tls;
mod topics;
mod wait;

pub use app::*;
pub use env::*;
pub use publisher::*;
pub use receiver::*;
pub use tls::*;
pub use topics::*;
pub use wait::*;

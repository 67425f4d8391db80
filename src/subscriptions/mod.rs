//! Subscriptions: webhooks stored in Redis and followed in memory.
//!
//! [`model`] is the documented record, [`store`] the only code touching its
//! keys, and [`sync`] keeps the pipeline's in-memory index current.

pub mod model;
pub mod store;
pub mod sync;

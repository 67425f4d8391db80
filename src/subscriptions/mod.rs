//! Subscriptions: webhooks stored in Redis and followed in memory.
//!
//! [`model`] is the documented record, [`store`] the only code touching its
//! keys, [`sync`] keeps the pipeline's in-memory index current, and
//! [`lifecycle`] changes a webhook's status when deliveries say so (410 Gone,
//! a long failure streak) and announces it.

pub mod lifecycle;
pub mod model;
pub mod store;
pub mod sync;

//! Subscriptions: webhooks stored in Redis and followed in memory.
//!
//! The documented record is [`crate::webhook`]; [`store`] is the only code
//! touching its keys, [`live`] the index the pipeline routes with ([`index`]
//! of webhooks held [`packed`], prepared for delivery when used), [`sync`]
//! keeps it current, and [`lifecycle`] changes a webhook's status when
//! deliveries say so (410 Gone, a long failure streak) and announces it.

pub mod index;
pub mod lifecycle;
pub mod live;
pub mod packed;
pub mod store;
pub mod sync;
pub mod system;

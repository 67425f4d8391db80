//! Routing: from a record to the webhooks it goes to.
//!
//! Routing knows envelopes and subscriptions, not Kafka or HTTP: given a
//! record it finds the event's type, id, time and tenant ([`envelope`]), and
//! answers "these webhooks" from memory ([`index`]).

pub mod envelope;
pub mod index;
pub mod json;

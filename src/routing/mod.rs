//! Routing: what an event is and which patterns it matches.
//!
//! Routing knows envelopes, not Kafka, HTTP or webhooks: given a record it
//! finds the event's type, id, time and tenant ([`envelope`], reading JSON
//! with [`json`]), says whether an event type matches a pattern, and whether
//! an event's body passes a webhook's payload [`filter`]. The
//! index that answers "these webhooks" from memory is the subscriptions'
//! (`subscriptions::index`).

pub mod envelope;
pub mod filter;
pub mod json;
pub mod ordering;

/// Whether `event_type` matches `pattern` (exact, `prefix*` or `*`). The
/// routing index answers the same question for every webhook at once.
pub fn pattern_matches(pattern: &str, event_type: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => event_type.starts_with(prefix),
        None => event_type == pattern,
    }
}

/// An event type pattern: exact, prefix (`tour.*`, `USER_*`) or `*`.
pub fn validate_pattern(pattern: &str) -> Result<(), &'static str> {
    if pattern.is_empty() {
        return Err("is empty");
    }
    if pattern.len() > envelope::MAX_EVENT_TYPE_LEN {
        return Err("is too long");
    }
    if let Some(pos) = pattern.find('*') {
        if pos != pattern.len() - 1 {
            return Err("may only have `*` at its end");
        }
    }
    if pattern.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("must not contain white space");
    }
    Ok(())
}

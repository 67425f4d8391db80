//! `[system_events]`: the events Herald publishes about webhooks
//! (`webhook.disabled`, ...), and the envelope styles it writes them in.

use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;

/// System events (`webhook.disabled`, ...).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SystemEventsConfig {
    /// Topic they are published to; empty disables them.
    pub topic: String,
    /// The envelope style they are written in.
    pub envelope: SystemEnvelope,
    /// A tenant bound to a catalog gets them in its catalog's envelope.
    pub follow_tenant_catalog: bool,
    /// Events waiting to be published (retried ones included); beyond, a
    /// new one is given up at once.
    pub max_pending: usize,
    /// How long after it was made an event is still retried.
    #[serde(with = "humantime_serde")]
    pub retry_for: Duration,
}

/// The envelope styles Herald writes its system events in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SystemEnvelope {
    /// `{"event": "webhook.created", "version": "0", "time": <ms>, ...}`
    Jimo,
    /// `{"event_time", "event_type": "WEBHOOK_CREATED", "current_context", "data"}`
    Iam,
    /// `{"id", "type": "webhook.created", "created_at", "data"}`
    Jam,
}

impl SystemEnvelope {
    /// The style of a catalog's `envelope`, when Herald writes it.
    pub fn of_catalog(envelope: &str) -> Option<SystemEnvelope> {
        match envelope {
            "jimo" => Some(SystemEnvelope::Jimo),
            "iam" => Some(SystemEnvelope::Iam),
            "jam" => Some(SystemEnvelope::Jam),
            _ => None,
        }
    }

    /// The event type of `webhook.<action>` in this style.
    pub fn event_type(self, action: &str) -> String {
        match self {
            SystemEnvelope::Iam => format!("WEBHOOK_{}", action.to_ascii_uppercase()),
            SystemEnvelope::Jimo | SystemEnvelope::Jam => format!("webhook.{action}"),
        }
    }
}

/// Changes made through the API that are announced as `webhook.<action>`.
pub const ANNOUNCED_ACTIONS: [&str; 6] = ["created", "updated", "deleted", "paused", "resumed", "secret_rotated"];

/// Every `webhook.<action>` system event: those, and the lifecycle's.
pub fn system_event_actions() -> impl Iterator<Item = &'static str> {
    ANNOUNCED_ACTIONS.into_iter().chain(["disabled", "auto_disabled"])
}

/// Every system event type, in every style (`webhook.created`, `WEBHOOK_CREATED`, ...).
pub fn system_event_types() -> impl Iterator<Item = String> {
    [SystemEnvelope::Jimo, SystemEnvelope::Iam]
        .into_iter()
        .flat_map(|style| system_event_actions().map(move |a| style.event_type(a)))
}

impl SystemEventsConfig {
    /// The topic, or `None` when system events are off (an empty `topic`).
    pub fn topic(&self) -> Option<&str> {
        (!self.topic.trim().is_empty()).then_some(self.topic.as_str())
    }
}

impl SystemEventsConfig {
    /// Checks `[system_events]`: room for at least one pending event.
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        if self.max_pending == 0 {
            return Err(ConfigError::invalid("system_events.max_pending", "must be at least 1"));
        }
        Ok(())
    }
}

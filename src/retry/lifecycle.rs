//! Webhook lifecycle decisions made by delivery outcomes, and the system
//! events announcing them.
//!
//! An endpoint answering 410 Gone says it will never accept another request:
//! Herald disables the webhook at once (status `disabled`, with the reason),
//! through the subscription store so every replica hears of it, and publishes
//! a `webhook.disabled` system event. System events are ordinary events in
//! the Jimo envelope style on `system_events.topic`; add that topic to
//! `kafka.topics` to route them to webhooks like any other event.

use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use serde_json::json;
use time::OffsetDateTime;

use crate::subscriptions::model::{Webhook, WebhookStatus};
use crate::subscriptions::store::{StoreError, SubscriptionStore};
use crate::telemetry::Telemetry;

/// Applies lifecycle decisions and publishes system events.
pub struct Lifecycle {
    pub store: SubscriptionStore,
    pub producer: FutureProducer,
    /// Where system events go; `None` disables them.
    pub system_topic: Option<String>,
    pub telemetry: Telemetry,
}

/// A lifecycle change that could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("system event not acknowledged: {0}")]
    Publish(rdkafka::error::KafkaError),
}

impl Lifecycle {
    /// Disables `webhook_id` because of `reason` (`kind` is the metric label,
    /// e.g. `gone`). Already disabled or deleted webhooks are left alone.
    pub async fn disable(&self, webhook_id: &str, kind: &'static str, reason: String) -> Result<(), LifecycleError> {
        let Some(mut webhook) = self.store.get(webhook_id).await? else {
            return Ok(());
        };
        if webhook.status == WebhookStatus::Disabled {
            return Ok(());
        }
        webhook.status = WebhookStatus::Disabled;
        webhook.status_reason = Some(reason.clone());
        webhook.updated_at = OffsetDateTime::now_utc();
        self.store.put(&webhook).await?;
        self.telemetry.webhook_disabled(webhook_id, kind, &reason);
        self.publish("webhook.disabled", &webhook, &reason).await
    }

    /// Publishes a system event about `webhook`.
    pub async fn publish(&self, event: &str, webhook: &Webhook, reason: &str) -> Result<(), LifecycleError> {
        let Some(topic) = &self.system_topic else { return Ok(()) };
        let body = system_event(event, webhook, reason);
        let record = FutureRecord::to(topic).key(webhook.id.as_str()).payload(&body);
        self.producer
            .send(record, Timeout::After(Duration::from_secs(30)))
            .await
            .map_err(|(e, _)| LifecycleError::Publish(e))?;
        Ok(())
    }
}

/// A system event body: `{"event", "version", "time", "id", "tenant", "webhook", "reason"}`.
pub fn system_event(event: &str, webhook: &Webhook, reason: &str) -> String {
    let now = OffsetDateTime::now_utc();
    json!({
        "event": event,
        "version": "0",
        "time": now.unix_timestamp_nanos() / 1_000_000,
        "id": format!("sys_{}", hex::encode(rand::random::<[u8; 12]>())),
        "tenant": webhook.tenant,
        "webhook": {
            "id": webhook.id,
            "name": webhook.name,
            "url": webhook.url,
            "status": webhook.status.as_str(),
        },
        "reason": reason,
    })
    .to_string()
}

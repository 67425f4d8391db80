//! Webhook lifecycle decisions made by delivery outcomes, and the system
//! events announcing them.
//!
//! An endpoint answering 410 Gone says it will never accept another request:
//! Herald disables the webhook at once (status `disabled`, with the reason),
//! through the subscription store so every replica hears of it, and publishes
//! a `webhook.disabled` system event. An endpoint failing continuously for
//! `auto_disable.after`, or for `auto_disable.consecutive_failures`
//! deliveries, is disabled the same way with a `webhook.auto_disabled` event.
//! The failure streak lives in Redis, shared by all replicas; a success only
//! writes there when this replica saw the streak, or once a minute. System events are ordinary events in
//! the Jimo envelope style on `system_events.topic`; add that topic to
//! `kafka.topics` to route them to webhooks like any other event.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

use rdkafka::producer::FutureRecord;
use rdkafka::util::Timeout;
use serde_json::json;
use time::OffsetDateTime;

use crate::delivery::target::Target;
use crate::delivery::Failure;
use crate::subscriptions::store::{StoreError, SubscriptionStore};
use crate::telemetry::Telemetry;
use crate::webhook::{StatusBy, Webhook, WebhookStatus};

/// When a failing webhook is disabled; zero turns a rule off.
#[derive(Debug, Clone, Copy, Default)]
pub struct AutoDisable {
    pub after: Duration,
    pub consecutive_failures: u64,
}

impl AutoDisable {
    fn enabled(&self) -> bool {
        !self.after.is_zero() || self.consecutive_failures > 0
    }
}

/// How often a success is written when this replica saw no failure streak.
const SUCCESS_WRITE_INTERVAL_MS: i64 = 60_000;

/// Applies lifecycle decisions and publishes system events.
pub struct Lifecycle {
    pub store: SubscriptionStore,
    pub auto_disable: AutoDisable,
    pub events: SystemEvents,
    pub telemetry: Telemetry,
}

/// Publishes system events (`webhook.disabled`, `webhook.created`, ...) to
/// `system_events.topic`, keyed by webhook id so one webhook's events stay in
/// order.
#[derive(Clone)]
pub struct SystemEvents {
    producer: crate::kafka::SharedProducer,
    /// `None` disables them.
    topic: Option<String>,
}

impl SystemEvents {
    /// System events to `topic` (none when `None`).
    pub fn new(producer: crate::kafka::SharedProducer, topic: Option<String>) -> SystemEvents {
        SystemEvents { producer, topic }
    }

    /// Enqueues `event` about `webhook` now (so events of one webhook keep
    /// their order) and returns the broker's acknowledgement to await, or
    /// `None` when system events are off.
    pub fn enqueue(
        &self,
        event: &str,
        webhook: &Webhook,
        reason: &str,
    ) -> Result<Option<rdkafka::producer::DeliveryFuture>, LifecycleError> {
        let Some(topic) = &self.topic else { return Ok(None) };
        let body = system_event(event, webhook, reason);
        let record = FutureRecord::to(topic).key(webhook.id.as_str()).payload(&body);
        match self.producer.get().send_result(record) {
            Ok(ack) => Ok(Some(ack)),
            Err((e, _)) => Err(LifecycleError::Publish(e)),
        }
    }

    /// Waits up to `timeout` for the events still being published.
    pub fn flush(&self, timeout: Duration) -> rdkafka::error::KafkaResult<()> {
        self.producer.flush(timeout)
    }

    /// Publishes `event` about `webhook` and waits for the broker's ack.
    pub async fn publish(&self, event: &str, webhook: &Webhook, reason: &str) -> Result<(), LifecycleError> {
        let Some(topic) = &self.topic else { return Ok(()) };
        let body = system_event(event, webhook, reason);
        let record = FutureRecord::to(topic).key(webhook.id.as_str()).payload(&body);
        self.producer
            .get()
            .send(record, Timeout::After(Duration::from_secs(30)))
            .await
            .map_err(|(e, _)| LifecycleError::Publish(e))?;
        Ok(())
    }
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
    pub async fn disable(
        &self,
        webhook_id: &str,
        kind: &'static str,
        event: &str,
        reason: String,
    ) -> Result<(), LifecycleError> {
        let now = OffsetDateTime::now_utc();
        let mut changed = false;
        let updated = self
            .store
            .update(webhook_id, |current| {
                if current.status == WebhookStatus::Disabled {
                    changed = false;
                    return Ok::<_, std::convert::Infallible>(None);
                }
                let mut next = current.clone();
                next.status = WebhookStatus::Disabled;
                next.status_reason = Some(reason.clone());
                next.status_by = Some(StatusBy::Herald);
                next.status_changed_at = Some(now);
                next.updated_at = now;
                changed = true;
                Ok(Some(next))
            })
            .await
            .map_err(|e| match e {
                crate::subscriptions::store::UpdateError::Store(e) => e,
                crate::subscriptions::store::UpdateError::Rejected(never) => match never {},
            })?;
        let Some(webhook) = updated.filter(|_| changed) else {
            return Ok(());
        };
        self.telemetry.webhook_disabled(webhook_id, kind, &reason);
        self.publish(event, &webhook, &reason).await
    }

    /// A delivery to `target` succeeded: end its failure streak, if any.
    pub fn delivery_succeeded(self: &Arc<Self>, target: &Target) {
        if !self.auto_disable.enabled() {
            return;
        }
        let now = now_ms();
        let health = &target.health;
        let last = health.last_success_write_ms.load(Ordering::Relaxed);
        if !health.suspect.load(Ordering::Relaxed) && now - last < SUCCESS_WRITE_INTERVAL_MS {
            return;
        }
        health.suspect.store(false, Ordering::Relaxed);
        health.last_success_write_ms.store(now, Ordering::Relaxed);
        let (this, id) = (self.clone(), target.id().to_owned());
        // Off the delivery's path: nothing waits for this write.
        tokio::spawn(async move {
            if let Err(e) = this.store.record_success(&id, now).await {
                this.telemetry.lifecycle_error(&id, &e);
            }
        });
    }

    /// A delivery to `target` failed: extend its streak and disable the
    /// webhook when the streak is too long.
    pub async fn delivery_failed(&self, target: &Target, failure: &Failure) {
        // Waiting for Herald's own endpoint slot says nothing of the endpoint.
        if !self.auto_disable.enabled() || matches!(failure, Failure::Saturated(_)) {
            return;
        }
        target.health.suspect.store(true, Ordering::Relaxed);
        let now = now_ms();
        let (failures, since) = match self.store.record_failure(target.id(), now).await {
            Ok(streak) => streak,
            Err(e) => return self.telemetry.lifecycle_error(target.id(), &e),
        };
        let rule = self.auto_disable;
        let failing_for = Duration::from_millis((now - since).max(0) as u64);
        let reason = if rule.consecutive_failures > 0 && failures >= rule.consecutive_failures {
            format!(
                "{failures} consecutive deliveries failed (last: {})",
                failure.describe()
            )
        } else if !rule.after.is_zero() && failing_for >= rule.after {
            format!(
                "deliveries failed continuously for {} (last: {})",
                humantime::format_duration(Duration::from_secs(failing_for.as_secs())),
                failure.describe()
            )
        } else {
            return;
        };
        if let Err(e) = self.disable(target.id(), "auto", "webhook.auto_disabled", reason).await {
            self.telemetry.lifecycle_error(target.id(), &e);
        }
    }

    /// Publishes a system event about `webhook`.
    pub async fn publish(&self, event: &str, webhook: &Webhook, reason: &str) -> Result<(), LifecycleError> {
        self.events.publish(event, webhook, reason).await
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
            // Routed to other webhooks (a global one sees every tenant's): the
            // URL's path and query may hold a secret.
            "url": crate::delivery::redact_url_text(&webhook.url),
            "status": webhook.status.as_str(),
        },
        "reason": reason,
    })
    .to_string()
}

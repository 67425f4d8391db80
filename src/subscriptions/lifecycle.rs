//! Webhook lifecycle decisions made by delivery outcomes, and the system
//! events announcing them.
//!
//! An endpoint answering 410 Gone says it will never accept another request:
//! Herald disables the webhook at once (status `disabled`, with the reason),
//! through the subscription store so every replica hears of it, and publishes
//! a `webhook.disabled` system event. An endpoint failing continuously for
//! `auto_disable.after`, or for `auto_disable.consecutive_failures`
//! deliveries, is disabled the same way with a `webhook.auto_disabled` event.
//! The failure streak lives in Redis, shared by all replicas, and is written
//! off the delivery's path: a success only writes there when this replica
//! saw the streak, or once a minute; failures are written by one task per
//! webhook at a time, the failures meanwhile added up in its next write, so a
//! failed delivery's retry record never waits for Redis. A 410 Gone disables
//! at once, before the delivery's dead-letter record is written: it is rare,
//! and its later deliveries are then kept rather than attempted. System
//! events are published by [`SystemEvents`] (`crate::subscriptions::system`).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

use time::OffsetDateTime;

use crate::delivery::target::Target;
use crate::delivery::Failure;
use crate::subscriptions::store::{StoreError, SubscriptionStore};
use crate::subscriptions::system::SystemEvents;
use crate::telemetry::Telemetry;
use crate::webhook::{StatusBy, WebhookStatus};

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

/// A lifecycle change that could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Lifecycle {
    /// Disables `webhook_id` because of `reason` (`kind` is the metric label,
    /// e.g. `gone`). Already disabled or deleted webhooks are left alone.
    pub async fn disable(
        &self,
        webhook_id: &str,
        kind: &'static str,
        action: &str,
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
        self.events.emit(action, &webhook, &reason);
        Ok(())
    }

    /// Disables a webhook whose endpoint answered 410 Gone. A failure to do so
    /// is reported; the next 410 tries again.
    pub async fn endpoint_gone(&self, target: &Target) {
        let reason = format!(
            "endpoint answered 410 Gone at {}",
            OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        );
        if let Err(e) = self.disable(target.id(), "gone", "disabled", reason).await {
            self.telemetry.lifecycle_error(target.id(), &e);
        }
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
        // Failures not yet written came before this success, which ends their streak.
        health.unwritten_failures.store(0, Ordering::SeqCst);
        health.last_success_write_ms.store(now, Ordering::Relaxed);
        let (this, id) = (self.clone(), target.id().to_owned());
        // Off the delivery's path: nothing waits for this write.
        tokio::spawn(async move {
            if let Err(e) = this.store.record_success(&id, now).await {
                this.telemetry.lifecycle_error(&id, &e);
            }
        });
    }

    /// A delivery to `target` failed: extend its streak, which disables the
    /// webhook when it is too long. The streak is written off the delivery's
    /// path, as a success is: the failure's retry or dead-letter record never
    /// waits for Redis. One write per webhook is under way at a time; the
    /// failures meanwhile are counted together in the next.
    pub fn delivery_failed(self: &Arc<Self>, target: &Arc<Target>, failure: &Failure) {
        // Waiting for Herald's own endpoint slot says nothing of the endpoint.
        if !self.auto_disable.enabled() || failure.is_wait() {
            return;
        }
        let health = &target.health;
        health.suspect.store(true, Ordering::Relaxed);
        *health.last_failure.lock() = Some(failure.describe());
        health.unwritten_failures.fetch_add(1, Ordering::SeqCst);
        if health.writing_failures.swap(true, Ordering::SeqCst) {
            return; // the write under way takes this one too
        }
        let (this, target) = (self.clone(), target.clone());
        tokio::spawn(async move { this.write_failures(&target).await });
    }

    /// Writes `target`'s uncounted failures to its streak until none is left.
    async fn write_failures(&self, target: &Target) {
        let health = &target.health;
        loop {
            let count = health.unwritten_failures.swap(0, Ordering::SeqCst);
            if count == 0 {
                health.writing_failures.store(false, Ordering::SeqCst);
                // A failure counted since the swap saw the flag still set and
                // left itself to this task: take it, unless another task has.
                if health.unwritten_failures.load(Ordering::SeqCst) == 0
                    || health.writing_failures.swap(true, Ordering::SeqCst)
                {
                    return;
                }
                continue;
            }
            let last = health.last_failure.lock().clone().unwrap_or_default();
            self.count_failures(target.id(), count, &last).await;
        }
    }

    /// Counts `count` failures, the newest described by `last`, in the
    /// streak of `webhook_id`, and disables it when the streak is too long.
    async fn count_failures(&self, webhook_id: &str, count: u64, last: &str) {
        let now = now_ms();
        let (failures, since) = match self.store.record_failures(webhook_id, now, count).await {
            Ok(streak) => streak,
            Err(e) => return self.telemetry.lifecycle_error(webhook_id, &e),
        };
        let rule = self.auto_disable;
        let failing_for = Duration::from_millis((now - since).max(0) as u64);
        let reason = if rule.consecutive_failures > 0 && failures >= rule.consecutive_failures {
            format!("{failures} consecutive deliveries failed (last: {last})")
        } else if !rule.after.is_zero() && failing_for >= rule.after {
            format!(
                "deliveries failed continuously for {} (last: {last})",
                humantime::format_duration(Duration::from_secs(failing_for.as_secs())),
            )
        } else {
            return;
        };
        if let Err(e) = self.disable(webhook_id, "auto", "auto_disabled", reason).await {
            self.telemetry.lifecycle_error(webhook_id, &e);
        }
    }
}

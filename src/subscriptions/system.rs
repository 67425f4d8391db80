//! System events: `webhook.created`, `webhook.disabled`, ... published to
//! `system_events.topic`, where Herald routes them to webhooks like any
//! other event when the topic is in `kafka.topics`.
//!
//! Each is written in the deployment's envelope style
//! (`system_events.envelope`), or, with `follow_tenant_catalog`, in the
//! envelope of its tenant's catalog. Whatever the style, the record carries
//! the Kafka headers `event-type`, `event-id`, `event-time` and (for a
//! webhook of a tenant) `tenant`, so one set of header rules recognises every
//! style on one topic and routes each event to its own tenant's webhooks.
//!
//! Publishing never holds up its caller: an event waits in a bounded queue
//! (`max_pending`) for one task that publishes it, keyed by webhook id, and
//! tries again with a backoff until it is acknowledged or `retry_for` has
//! passed since it was made. An event given up (that bound, a full queue, or
//! still waiting at shutdown) is counted and logged with its body.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use parking_lot::Mutex;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;
use serde_json::{json, Value};
use time::OffsetDateTime;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::system_events::{SystemEnvelope, SystemEventsConfig};
use crate::kafka::SharedProducer;
use crate::telemetry::Telemetry;
use crate::webhook::Webhook;

/// Finds the envelope style of a tenant's catalog: `None` when the tenant is
/// bound to no catalog, or to one whose envelope Herald does not write.
pub type TenantStyle = Arc<dyn Fn(String) -> BoxFuture<'static, Result<Option<SystemEnvelope>, String>> + Send + Sync>;

/// The first pause after a failed attempt; it doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How long the tenant's catalog may take to be read.
const CATALOG_WAIT: Duration = Duration::from_secs(5);
/// Events published together, their acknowledgements awaited together.
const BATCH: usize = 64;

/// Publishes system events. Cheap to clone; every clone feeds one queue.
#[derive(Clone)]
pub struct SystemEvents {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    tx: mpsc::Sender<Pending>,
    closing: CancellationToken,
    worker: Mutex<Option<tokio::task::JoinHandle<()>>>,
    style: SystemEnvelope,
    telemetry: Telemetry,
}

/// One system event waiting to be published.
struct Pending {
    action: String,
    id: String,
    at: OffsetDateTime,
    made: Instant,
    webhook: Facts,
    reason: String,
    /// Decided when it is first published (a tenant's catalog may be read).
    style: Option<SystemEnvelope>,
}

/// What a system event says of its webhook.
struct Facts {
    id: String,
    tenant: Option<String>,
    name: String,
    /// Routed to other webhooks (a global one sees every tenant's): the
    /// URL's path and query may hold a secret.
    url: String,
    status: &'static str,
    events: Vec<String>,
}

impl SystemEvents {
    /// System events off: nothing is published.
    pub fn off() -> SystemEvents {
        SystemEvents { inner: None }
    }

    /// Starts the publishing task (none when `config.topic` is empty).
    /// `tenant_style` is asked only with `follow_tenant_catalog`.
    pub fn start(
        producer: SharedProducer,
        config: &SystemEventsConfig,
        tenant_style: Option<TenantStyle>,
        telemetry: Telemetry,
    ) -> SystemEvents {
        let Some(topic) = config.topic() else {
            return SystemEvents::off();
        };
        let (tx, rx) = mpsc::channel(config.max_pending.max(1));
        let closing = CancellationToken::new();
        let worker = Worker {
            producer,
            topic: topic.to_owned(),
            style: config.envelope,
            tenant_style: tenant_style.filter(|_| config.follow_tenant_catalog),
            retry_for: config.retry_for,
            telemetry: telemetry.clone(),
        };
        let handle = tokio::spawn(worker.run(rx, closing.clone()));
        SystemEvents {
            inner: Some(Arc::new(Inner {
                tx,
                closing,
                worker: Mutex::new(Some(handle)),
                style: config.envelope,
                telemetry,
            })),
        }
    }

    /// Queues `webhook.<action>` about `webhook` (in order with the events
    /// queued before it); never waits. A full queue, or one closed at
    /// shutdown, gives the event up: counted and logged with its body.
    pub fn emit(&self, action: &str, webhook: &Webhook, reason: &str) {
        let Some(inner) = &self.inner else { return };
        let pending = Pending {
            action: action.to_owned(),
            id: format!("sys_{}", hex::encode(rand::random::<[u8; 12]>())),
            at: OffsetDateTime::now_utc(),
            made: Instant::now(),
            webhook: Facts {
                id: webhook.id.clone(),
                tenant: webhook.tenant.clone(),
                name: webhook.name.clone(),
                url: crate::delivery::redact_url_text(&webhook.url),
                status: webhook.status.as_str(),
                events: webhook.events.clone(),
            },
            reason: reason.to_owned(),
            style: None,
        };
        match inner.tx.try_send(pending) {
            Ok(()) => inner.telemetry.metrics.system_events_pending.inc(),
            Err(e) => {
                let (why, pending) = match e {
                    mpsc::error::TrySendError::Full(p) => ("system_events.max_pending events are waiting", p),
                    mpsc::error::TrySendError::Closed(p) => ("Herald is stopping", p),
                };
                let body = pending.body(inner.style);
                inner
                    .telemetry
                    .system_event_lost(&pending.event_type(inner.style), &pending.webhook.id, &body, &why);
            }
        }
    }

    /// At shutdown: publishes what is queued for up to [`SHUTDOWN_WAIT`],
    /// then gives up the rest (each counted and logged with its body).
    /// Events emitted afterwards are given up at once.
    pub async fn close(&self) {
        let Some(inner) = &self.inner else { return };
        let handle = inner.worker.lock().take();
        let Some(handle) = handle else { return };
        inner.closing.cancel();
        // The worker itself stops at the deadline; this only bounds a stuck one.
        match tokio::time::timeout(SHUTDOWN_WAIT + Duration::from_secs(5), handle).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => inner.telemetry.shutdown_failed("system_events", &e),
            Err(_) => inner
                .telemetry
                .shutdown_failed("system_events", &"the publishing task did not stop in time"),
        }
    }
}

struct Worker {
    producer: SharedProducer,
    topic: String,
    style: SystemEnvelope,
    tenant_style: Option<TenantStyle>,
    retry_for: Duration,
    telemetry: Telemetry,
}

/// When the worker gives up what it still holds: [`SHUTDOWN_WAIT`] after
/// `closing` was first seen cancelled.
struct Stop {
    closing: CancellationToken,
    at: std::sync::OnceLock<tokio::time::Instant>,
}

impl Stop {
    /// The deadline, once Herald is stopping.
    fn deadline(&self) -> Option<tokio::time::Instant> {
        self.closing
            .is_cancelled()
            .then(|| *self.at.get_or_init(|| tokio::time::Instant::now() + SHUTDOWN_WAIT))
    }

    /// Resolves when the deadline has passed (Herald stopping, then
    /// [`SHUTDOWN_WAIT`] more).
    async fn passed(&self) {
        self.closing.cancelled().await;
        if let Some(at) = self.deadline() {
            tokio::time::sleep_until(at).await;
        }
    }
}

impl Worker {
    async fn run(self, mut rx: mpsc::Receiver<Pending>, closing: CancellationToken) {
        let stop = Stop {
            closing,
            at: std::sync::OnceLock::new(),
        };
        loop {
            let first = tokio::select! {
                biased;
                _ = stop.closing.cancelled() => break,
                next = rx.recv() => match next {
                    Some(p) => p,
                    None => return,
                },
            };
            let batch = take_batch(first, &mut rx);
            self.publish(batch, &stop).await;
        }
        // Shutdown: nothing more is taken; what waits gets until the deadline.
        rx.close();
        while let Some(first) = rx.recv().await {
            let batch = take_batch(first, &mut rx);
            self.publish(batch, &stop).await;
        }
    }

    /// Publishes `batch` in order, trying failed events again (still in
    /// order) until each is acknowledged or given up.
    async fn publish(&self, mut todo: Vec<Pending>, stop: &Stop) {
        let mut backoff = MIN_BACKOFF;
        loop {
            if stop.deadline().is_some_and(|at| at <= tokio::time::Instant::now()) {
                for pending in todo {
                    self.lost(pending, &"still waiting at shutdown");
                }
                return;
            }
            let mut failed = Vec::new();
            let mut sends = Vec::with_capacity(todo.len());
            for mut pending in todo {
                if pending.style.is_none() {
                    match self.style_of(pending.webhook.tenant.as_deref()).await {
                        Ok(style) => pending.style = Some(style),
                        Err(e) => {
                            self.telemetry.system_event_retry(
                                &pending.event_type(self.style),
                                &pending.webhook.id,
                                &format!("the tenant's catalog cannot be read: {e}"),
                            );
                            failed.push(pending);
                            continue;
                        }
                    }
                }
                let ack = self.send(&pending);
                sends.push((pending, ack));
            }
            let acks = futures::future::join_all(sends.iter_mut().map(|(_, ack)| ack));
            let results = tokio::select! {
                results = acks => Some(results),
                _ = stop.passed() => None,
            };
            let Some(results) = results else {
                for (pending, _) in sends {
                    self.lost(pending, &"still not acknowledged at shutdown");
                }
                for pending in failed {
                    self.lost(pending, &"still waiting at shutdown");
                }
                return;
            };
            let mut resent = Vec::new();
            for ((pending, _), result) in sends.into_iter().zip(results) {
                match result {
                    Ok(()) => self.telemetry.metrics.system_events_pending.dec(),
                    Err(e) => {
                        self.telemetry
                            .system_event_retry(&pending.event_type(self.style), &pending.webhook.id, &e);
                        resent.push(pending);
                    }
                }
            }
            // In their original order: those that failed before sending came first.
            failed.extend(resent);
            failed.sort_by_key(|p| p.made);
            todo = Vec::new();
            for pending in failed {
                if pending.made.elapsed() >= self.retry_for {
                    self.lost(pending, &"not acknowledged within system_events.retry_for");
                } else {
                    todo.push(pending);
                }
            }
            if todo.is_empty() {
                return;
            }
            // A shutdown cuts the pause short: one more try before the deadline.
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.closing.cancelled(), if stop.deadline().is_none() => {}
                _ = stop.passed() => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Sends `pending` and returns its acknowledgement.
    fn send(&self, pending: &Pending) -> BoxFuture<'static, Result<(), String>> {
        let style = pending.style.unwrap_or(self.style);
        let body = pending.body(style);
        let event_type = pending.event_type(style);
        let time = pending.time_text();
        let mut headers = OwnedHeaders::new()
            .insert(Header {
                key: "event-type",
                value: Some(event_type.as_str()),
            })
            .insert(Header {
                key: "event-id",
                value: Some(pending.id.as_str()),
            })
            .insert(Header {
                key: "event-time",
                value: Some(time.as_str()),
            });
        if let Some(tenant) = &pending.webhook.tenant {
            headers = headers.insert(Header {
                key: "tenant",
                value: Some(tenant.as_str()),
            });
        }
        let record = FutureRecord::to(&self.topic)
            .key(pending.webhook.id.as_str())
            .payload(&body)
            .headers(headers);
        let used = self.producer.get();
        // Enqueued now, in order; a full producer queue is a failed attempt.
        let sent = used.send_result(record).map_err(|(e, _)| e);
        let shared = self.producer.clone();
        Box::pin(async move {
            let error = match sent {
                Err(e) => e,
                Ok(ack) => match ack.await {
                    Ok(Ok(_)) => return Ok(()),
                    Ok(Err((e, _))) => e,
                    Err(_) => return Err("the producer was dropped".to_owned()),
                },
            };
            if crate::kafka::classify_produce_error(&error) == crate::kafka::ProduceError::Fatal {
                if let Err(again) = shared.recover(&used) {
                    return Err(format!("{error}; the producer cannot be replaced: {again}"));
                }
            }
            Err(error.to_string())
        })
    }

    async fn style_of(&self, tenant: Option<&str>) -> Result<SystemEnvelope, String> {
        let (Some(find), Some(tenant)) = (&self.tenant_style, tenant) else {
            return Ok(self.style);
        };
        let found = tokio::time::timeout(CATALOG_WAIT, find(tenant.to_owned()))
            .await
            .map_err(|_| format!("no answer within {CATALOG_WAIT:?}"))??;
        Ok(found.unwrap_or(self.style))
    }

    fn lost(&self, pending: Pending, why: &dyn std::fmt::Display) {
        self.telemetry.metrics.system_events_pending.dec();
        let style = pending.style.unwrap_or(self.style);
        self.telemetry.system_event_lost(
            &pending.event_type(style),
            &pending.webhook.id,
            &pending.body(style),
            why,
        );
    }
}

/// How long queued events may still be published once Herald stops.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

fn take_batch(first: Pending, rx: &mut mpsc::Receiver<Pending>) -> Vec<Pending> {
    let mut batch = vec![first];
    while batch.len() < BATCH {
        match rx.try_recv() {
            Ok(p) => batch.push(p),
            Err(_) => break,
        }
    }
    batch
}

impl Pending {
    fn event_type(&self, style: SystemEnvelope) -> String {
        style.event_type(&self.action)
    }

    /// RFC 3339 in UTC with milliseconds, as the IAM and Jam envelopes write times.
    fn time_text(&self) -> String {
        let format =
            time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
        self.at
            .to_offset(time::UtcOffset::UTC)
            .format(&format)
            .unwrap_or_else(|_| self.at.unix_timestamp().to_string())
    }

    fn webhook_json(&self) -> Value {
        let w = &self.webhook;
        json!({
            "id": w.id,
            "name": w.name,
            "url": w.url,
            "status": w.status,
            "events": w.events,
        })
    }

    /// The body in `style`.
    fn body(&self, style: SystemEnvelope) -> String {
        let event_type = self.event_type(style);
        match style {
            SystemEnvelope::Jimo => json!({
                "event": event_type,
                "version": "0",
                "time": self.at.unix_timestamp_nanos() / 1_000_000,
                "id": self.id,
                "tenant": self.webhook.tenant,
                "webhook": self.webhook_json(),
                "reason": self.reason,
            }),
            SystemEnvelope::Iam => json!({
                "event_time": self.time_text(),
                "event_type": event_type,
                "current_context": {
                    "tenant_id": self.webhook.tenant,
                    "event_id": self.id,
                },
                "data": {
                    "webhook_id": self.webhook.id,
                    "name": self.webhook.name,
                    "url": self.webhook.url,
                    "status": self.webhook.status,
                    "events": self.webhook.events,
                    "action": self.action,
                    "reason": self.reason,
                },
            }),
            SystemEnvelope::Jam => json!({
                "id": self.id,
                "type": event_type,
                "created_at": self.time_text(),
                "data": {
                    "tenant": self.webhook.tenant,
                    "webhook": self.webhook_json(),
                    "reason": self.reason,
                },
            }),
        }
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(tenant: Option<&str>) -> Pending {
        Pending {
            action: "auto_disabled".into(),
            id: "sys_1".into(),
            at: time::macros::datetime!(2025-03-04 09:45:16.5 UTC),
            made: Instant::now(),
            webhook: Facts {
                id: "wh_1".into(),
                tenant: tenant.map(str::to_owned),
                name: "n".into(),
                url: "https://example.com/".into(),
                status: "disabled",
                events: vec!["*".into()],
            },
            reason: "r".into(),
            style: None,
        }
    }

    /// Nothing answers at the broker's address: a full queue gives an event
    /// up at once, and a shutdown gives up what still waits after
    /// [`SHUTDOWN_WAIT`], each counted; nothing is left pending.
    #[tokio::test]
    async fn a_full_queue_and_a_shutdown_give_events_up_counted() {
        let config = crate::config::Config::from_toml_overlay(
            "[kafka]\nbrokers = \"127.0.0.1:1\"\n[system_events]\nmax_pending = 1",
        )
        .unwrap();
        let telemetry = Telemetry::new(&config.kafka.topics, config.ops.max_tenant_series);
        let producer = SharedProducer::new(&config.kafka).unwrap();
        let events = SystemEvents::start(producer, &config.system_events, None, telemetry.clone());
        let webhook = crate::webhook::tests::webhook("wh_1", "https://example.com/", &["*"]);
        let metrics = &telemetry.metrics;
        // The worker has not run yet (one thread): one waits, two are refused.
        for _ in 0..3 {
            events.emit("created", &webhook, "r");
        }
        assert_eq!(metrics.system_event_errors.get(), 2);
        assert_eq!(metrics.system_events_pending.get(), 1);
        let started = Instant::now();
        events.close().await;
        assert!(started.elapsed() >= SHUTDOWN_WAIT, "{:?}", started.elapsed());
        assert_eq!(metrics.system_event_errors.get(), 3);
        assert_eq!(metrics.system_events_pending.get(), 0);
        // After the shutdown, an event is given up at once.
        events.emit("deleted", &webhook, "r");
        assert_eq!(metrics.system_event_errors.get(), 4);
    }

    #[test]
    fn each_style_writes_its_envelope_with_the_tenant_where_its_rule_reads_it() {
        let p = pending(Some("acme"));
        let jimo: Value = serde_json::from_str(&p.body(SystemEnvelope::Jimo)).unwrap();
        assert_eq!(jimo["event"], "webhook.auto_disabled");
        assert_eq!(jimo["time"], 1_741_081_516_500_i64);
        assert_eq!(jimo["tenant"], "acme");
        assert_eq!(jimo["webhook"]["id"], "wh_1");
        let iam: Value = serde_json::from_str(&p.body(SystemEnvelope::Iam)).unwrap();
        assert_eq!(iam["event_type"], "WEBHOOK_AUTO_DISABLED");
        assert_eq!(iam["event_time"], "2025-03-04T09:45:16.500Z");
        assert_eq!(iam["current_context"]["tenant_id"], "acme");
        assert_eq!(iam["data"]["webhook_id"], "wh_1");
        assert_eq!(iam["data"]["action"], "auto_disabled");
        let jam: Value = serde_json::from_str(&p.body(SystemEnvelope::Jam)).unwrap();
        assert_eq!(jam["type"], "webhook.auto_disabled");
        assert_eq!(jam["id"], "sys_1");
        assert_eq!(jam["created_at"], "2025-03-04T09:45:16.500Z");
        assert_eq!(jam["data"]["tenant"], "acme");
        let none: Value = serde_json::from_str(&pending(None).body(SystemEnvelope::Iam)).unwrap();
        assert_eq!(none["current_context"]["tenant_id"], Value::Null);
    }
}

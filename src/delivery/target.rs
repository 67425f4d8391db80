//! A webhook prepared for delivery.
//!
//! Everything a delivery needs that does not depend on the event is computed
//! once, when the subscription index is built: the parsed URL, the keyed
//! signers, the request headers, the endpoint's concurrency limiter. The hot
//! path only clones a few `Arc`s.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use url::Url;

use crate::delivery::signing::Signer;
use crate::subscriptions::model::{Webhook, WebhookStatus};

/// Endpoint-wide limits from configuration.
#[derive(Debug, Clone, Copy)]
pub struct EndpointDefaults {
    pub max_in_flight: usize,
    pub max_queued: usize,
    pub request_timeout: Duration,
}

/// Bounds the requests in flight to one endpoint, and how many deliveries may
/// wait for it. Shared across index rebuilds while the limit is unchanged, so
/// an edit to a webhook does not reset its concurrency.
#[derive(Debug)]
pub struct EndpointLimiter {
    permits: Arc<Semaphore>,
    capacity: usize,
    queued: AtomicUsize,
    max_queued: usize,
}

/// The endpoint already has as many deliveries waiting as it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Saturated;

impl EndpointLimiter {
    pub fn new(capacity: usize, max_queued: usize) -> Self {
        EndpointLimiter {
            permits: Arc::new(Semaphore::new(capacity)),
            capacity,
            queued: AtomicUsize::new(0),
            max_queued,
        }
    }

    /// Waits for a request slot, or fails at once when too many deliveries are
    /// already waiting.
    pub async fn acquire(&self) -> Result<OwnedSemaphorePermit, Saturated> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(permit);
        }
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.max_queued {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(Saturated);
        }
        let permit = self.permits.clone().acquire_owned().await;
        self.queued.fetch_sub(1, Ordering::AcqRel);
        // The semaphore is never closed.
        permit.map_err(|_| Saturated)
    }

    /// Deliveries waiting for a slot now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

/// A webhook as delivery sees it.
#[derive(Debug)]
pub struct Target {
    pub webhook: Webhook,
    pub url: Url,
    pub signer: Signer,
    /// The webhook's own headers, validated.
    pub headers: HeaderMap,
    pub timeout: Duration,
    pub limiter: Arc<EndpointLimiter>,
}

impl Target {
    /// Prepares `webhook`; `previous` is the same webhook's target in the last
    /// index, whose limiter is kept when its capacity is unchanged.
    pub fn compile(webhook: Webhook, defaults: &EndpointDefaults, previous: Option<&Target>) -> Result<Target, String> {
        webhook.validate().map_err(|e| e.to_string())?;
        let url = Url::parse(&webhook.url).map_err(|e| e.to_string())?;
        let signer = Signer::new(&webhook.secrets)?;
        let mut headers = HeaderMap::with_capacity(webhook.headers.len());
        for (name, value) in &webhook.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| e.to_string())?;
            let mut value = HeaderValue::from_str(value).map_err(|e| e.to_string())?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        let capacity = webhook
            .limits
            .max_in_flight
            .map_or(defaults.max_in_flight, |m| m.min(defaults.max_in_flight));
        let timeout = webhook
            .limits
            .timeout_ms
            .map_or(defaults.request_timeout, |ms| Duration::from_millis(ms).min(defaults.request_timeout));
        let limiter = match previous {
            Some(p) if p.limiter.capacity == capacity && p.limiter.max_queued == defaults.max_queued => p.limiter.clone(),
            _ => Arc::new(EndpointLimiter::new(capacity, defaults.max_queued)),
        };
        Ok(Target {
            webhook,
            url,
            signer,
            headers,
            timeout,
            limiter,
        })
    }

    pub fn id(&self) -> &str {
        &self.webhook.id
    }

    pub fn is_active(&self) -> bool {
        self.webhook.status == WebhookStatus::Active
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subscriptions::model::tests::webhook;

    const DEFAULTS: EndpointDefaults = EndpointDefaults {
        max_in_flight: 8,
        max_queued: 2,
        request_timeout: Duration::from_secs(10),
    };

    #[tokio::test]
    async fn waiting_is_bounded() {
        let limiter = Arc::new(EndpointLimiter::new(1, 2));
        let held = limiter.acquire().await.unwrap();
        let waiter = || {
            let l = limiter.clone();
            tokio::spawn(async move { l.acquire().await.map(drop) })
        };
        let (w1, w2) = (waiter(), waiter());
        while limiter.queued() < 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(limiter.acquire().await.map(drop), Err(Saturated), "a third waiter is refused");
        drop(held);
        assert!(w1.await.unwrap().is_ok());
        assert!(w2.await.unwrap().is_ok());
        assert_eq!(limiter.queued(), 0);
    }

    #[test]
    fn limits_only_tighten_and_limiters_survive_unrelated_edits() {
        let mut w = webhook("wh", "https://example.com/", &["*"]);
        w.limits.max_in_flight = Some(100);
        w.limits.timeout_ms = Some(60_000);
        let t = Target::compile(w.clone(), &DEFAULTS, None).unwrap();
        assert_eq!(t.limiter.capacity, 8);
        assert_eq!(t.timeout, Duration::from_secs(10));

        w.name = "renamed".into();
        let t2 = Target::compile(w.clone(), &DEFAULTS, Some(&t)).unwrap();
        assert!(Arc::ptr_eq(&t.limiter, &t2.limiter));

        w.limits.max_in_flight = Some(2);
        let t3 = Target::compile(w, &DEFAULTS, Some(&t2)).unwrap();
        assert!(!Arc::ptr_eq(&t2.limiter, &t3.limiter));
        assert_eq!(t3.limiter.capacity, 2);
    }
}

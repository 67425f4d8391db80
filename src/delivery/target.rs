//! A webhook prepared for delivery.
//!
//! Everything a delivery needs that does not depend on the event is computed
//! once, when the subscription index is built: the parsed URL and the URI a
//! request is sent to, the keyed signers, the request headers, the
//! endpoint's concurrency limiter. The hot
//! path only clones a few `Arc`s.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue, USER_AGENT};
use parking_lot::Mutex;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use url::Url;

use crate::delivery::rate::RateGate;
use crate::delivery::signing::Signer;
use crate::telemetry::TenantSeriesCache;
use crate::webhook::{InvalidWebhook, RateLimit, SecretError, Webhook, WebhookStatus};

/// Endpoint-wide limits from configuration.
#[derive(Debug, Clone, Copy)]
pub struct EndpointDefaults {
    pub max_in_flight: usize,
    pub max_queue_wait: Duration,
    pub request_timeout: Duration,
    /// `delivery.default_rate`: the rate of webhooks that set none.
    pub default_rate: Option<RateLimit>,
}

impl From<&crate::config::delivery::DeliveryConfig> for EndpointDefaults {
    fn from(delivery: &crate::config::delivery::DeliveryConfig) -> EndpointDefaults {
        EndpointDefaults {
            max_in_flight: delivery.max_in_flight_per_endpoint,
            max_queue_wait: delivery.max_queue_wait,
            request_timeout: delivery.request_timeout,
            default_rate: delivery.default_rate,
        }
    }
}

/// Bounds the requests in flight to one endpoint, and how long a delivery
/// may wait for one of them. Shared across index rebuilds while the limit is
/// unchanged, so an edit to a webhook does not reset its concurrency.
#[derive(Debug)]
pub struct EndpointLimiter {
    permits: Arc<Semaphore>,
    capacity: usize,
    max_wait: Duration,
    queued: AtomicUsize,
}

/// No request slot became free at the endpoint within the wait limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Saturated;

impl EndpointLimiter {
    /// `capacity` requests at once; a delivery waits at most `max_wait` for a slot.
    pub fn new(capacity: usize, max_wait: Duration) -> Self {
        EndpointLimiter {
            permits: Arc::new(Semaphore::new(capacity)),
            capacity,
            max_wait,
            queued: AtomicUsize::new(0),
        }
    }

    /// Waits for a request slot, at most the configured time.
    pub async fn acquire(&self) -> Result<OwnedSemaphorePermit, Saturated> {
        self.acquire_until(tokio::time::Instant::now() + self.max_wait).await
    }

    /// The longest a delivery may wait for its slots (`delivery.max_queue_wait`).
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// Waits for a request slot until `deadline` at most.
    pub async fn acquire_until(&self, deadline: tokio::time::Instant) -> Result<OwnedSemaphorePermit, Saturated> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(permit);
        }
        self.queued.fetch_add(1, Ordering::AcqRel);
        let waited = tokio::time::timeout_at(deadline, self.permits.clone().acquire_owned()).await;
        self.queued.fetch_sub(1, Ordering::AcqRel);
        match waited {
            Ok(Ok(permit)) => Ok(permit),
            // Timed out (or the semaphore closed, which never happens).
            _ => Err(Saturated),
        }
    }

    /// Deliveries waiting for a slot now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

/// What this replica knows of an endpoint's failure streak, so that
/// successes only reach Redis when a streak may need ending (and at most once
/// a minute otherwise, to end streaks other replicas saw), and failures reach
/// it one write at a time, off the delivery's path.
#[derive(Debug, Default)]
pub struct EndpointHealth {
    /// A failure was recorded and no success since.
    pub suspect: AtomicBool,
    /// When a success was last written (epoch ms).
    pub last_success_write_ms: AtomicI64,
    /// Failures not yet counted in the streak in Redis.
    pub unwritten_failures: AtomicU64,
    /// A task is writing this endpoint's failures to its streak.
    pub writing_failures: AtomicBool,
    /// The newest failure, as an auto-disable's reason names it.
    pub last_failure: Mutex<Option<String>>,
}

/// The HTTP client of a webhook with a client certificate (`tls_client`):
/// built at its first delivery, with the SSRF policy of its tenant, and kept
/// by the webhook's next versions while its tenant and certificate are
/// unchanged. Prepared webhooks are a bounded cache, so are these clients.
pub struct TlsClientSlot {
    /// SHA-256 of the tenant, the certificate and the key.
    identity: [u8; 32],
    pub(super) client: OnceLock<Result<super::Client, String>>,
}

impl std::fmt::Debug for TlsClientSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TlsClientSlot(built: {})", self.client.get().is_some())
    }
}

impl TlsClientSlot {
    /// The slot of `webhook`'s client certificate, if it has one:
    /// `previous`'s when it is for the same tenant and identity.
    fn of(webhook: &Webhook, previous: Option<&Arc<TlsClientSlot>>) -> Option<Arc<TlsClientSlot>> {
        use sha2::{Digest, Sha256};
        let tls = webhook.tls_client.as_ref()?;
        let mut hash = Sha256::new();
        hash.update(webhook.tenant.as_deref().map_or(&b"\0"[..], str::as_bytes));
        hash.update([0]);
        hash.update(tls.digest());
        let identity: [u8; 32] = hash.finalize().into();
        match previous {
            Some(p) if p.identity == identity => Some(p.clone()),
            _ => Some(Arc::new(TlsClientSlot {
                identity,
                client: OnceLock::new(),
            })),
        }
    }
}

/// A webhook as delivery sees it.
#[derive(Debug)]
pub struct Target {
    pub webhook: Webhook,
    pub url: Url,
    /// `url` as the request's URI.
    pub uri: http::Uri,
    pub signer: Signer,
    /// The headers every request carries: the webhook's own, validated, and
    /// Herald's `user-agent`.
    pub headers: HeaderMap,
    pub timeout: Duration,
    pub limiter: Arc<EndpointLimiter>,
    /// Its rate limit (its own, else the deployment's), if any.
    pub rate: Option<Arc<RateGate>>,
    pub health: Arc<EndpointHealth>,
    /// Its keys in the shared slots: tenant, and destination as its URL
    /// names it ([`host_key`](crate::delivery::shares::host_key)).
    pub tenant_key: Arc<str>,
    pub host_key: Arc<str>,
    /// The host name to resolve (none for an IP literal), lower case, and
    /// the port: a named host is counted by the address it resolves to.
    pub host_name: Option<(Arc<str>, u16)>,
    /// Its tenant's delivery series, resolved at its first delivery.
    pub tenant_series: TenantSeriesCache,
    /// Its own HTTP client, when it presents a client certificate.
    pub tls_client: Option<Arc<TlsClientSlot>>,
}

/// Why a webhook cannot be prepared for delivery.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error(transparent)]
    Invalid(#[from] InvalidWebhook),
    #[error("`url` is not a URL: {0}")]
    Url(#[from] url::ParseError),
    #[error("`url` cannot be requested: {0}")]
    Uri(#[from] http::uri::InvalidUri),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("header `{0}` cannot be sent")]
    Header(String),
}

impl Target {
    /// Prepares `webhook`; `previous` is the same webhook's target in the last
    /// index, whose limiter is kept when its capacity is unchanged.
    pub fn compile(
        webhook: Webhook,
        defaults: &EndpointDefaults,
        previous: Option<&Target>,
    ) -> Result<Target, CompileError> {
        webhook.validate()?;
        let url = Url::parse(&webhook.url)?;
        let signer = Signer::with_expiring(&webhook.secrets, &webhook.previous_secrets)?;
        // `validate` refused a URL that is no URI.
        let uri: http::Uri = url.as_str().parse()?;
        let mut headers = HeaderMap::with_capacity(webhook.headers.len() + 1);
        for (name, value) in &webhook.headers {
            let unsendable = || CompileError::Header(name.clone());
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| unsendable())?;
            let mut value = HeaderValue::from_str(value).map_err(|_| unsendable())?;
            value.set_sensitive(true);
            headers.insert(name, value);
        }
        // Reserved: no webhook's header is named so.
        headers.insert(USER_AGENT, HeaderValue::from_static(crate::delivery::USER_AGENT));
        let capacity = webhook
            .limits
            .max_in_flight
            .map_or(defaults.max_in_flight, |m| m.min(defaults.max_in_flight));
        let timeout = webhook.limits.timeout_ms.map_or(defaults.request_timeout, |ms| {
            Duration::from_millis(ms).min(defaults.request_timeout)
        });
        let limiter = match previous {
            Some(p) if p.limiter.capacity == capacity && p.limiter.max_wait == defaults.max_queue_wait => {
                p.limiter.clone()
            }
            _ => Arc::new(EndpointLimiter::new(capacity, defaults.max_queue_wait)),
        };
        let health = previous.map(|p| p.health.clone()).unwrap_or_default();
        let rate = crate::delivery::rate::gate(
            webhook.limits.rate.or(defaults.default_rate),
            previous.and_then(|p| p.rate.as_ref()),
        );
        let tls_client = TlsClientSlot::of(&webhook, previous.and_then(|p| p.tls_client.as_ref()));
        Ok(Target {
            tls_client,
            rate,
            health,
            tenant_key: crate::delivery::shares::tenant_key(webhook.tenant.as_deref()),
            host_key: crate::delivery::shares::host_key(&url),
            host_name: match url.host() {
                Some(url::Host::Domain(name)) => Some((
                    Arc::from(crate::delivery::shares::host_name(name)),
                    url.port_or_known_default().unwrap_or(0),
                )),
                _ => None,
            },
            tenant_series: TenantSeriesCache::default(),
            webhook,
            url,
            uri,
            signer,
            headers,
            timeout,
            limiter,
        })
    }

    /// The webhook's id.
    pub fn id(&self) -> &str {
        &self.webhook.id
    }

    /// Whether the webhook is active (not paused nor disabled).
    pub fn is_active(&self) -> bool {
        self.webhook.status == WebhookStatus::Active
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::tests::webhook;

    const DEFAULTS: EndpointDefaults = EndpointDefaults {
        max_in_flight: 8,
        max_queue_wait: Duration::from_millis(100),
        request_timeout: Duration::from_secs(10),
        default_rate: None,
    };

    #[tokio::test(start_paused = true)]
    async fn waiting_is_bounded_in_time() {
        let limiter = Arc::new(EndpointLimiter::new(1, Duration::from_secs(5)));
        let held = limiter.acquire().await.unwrap();
        // Released within the wait limit: the waiter gets the slot.
        let waiter = {
            let l = limiter.clone();
            tokio::spawn(async move { l.acquire().await.map(drop) })
        };
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(limiter.queued(), 1);
        drop(held);
        assert_eq!(waiter.await.unwrap(), Ok(()));

        // Never released: the waiter gives up after exactly the limit.
        let held = limiter.acquire().await.unwrap();
        let started = tokio::time::Instant::now();
        assert_eq!(limiter.acquire().await.map(drop), Err(Saturated));
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert_eq!(limiter.queued(), 0);
        drop(held);
    }

    #[test]
    fn a_webhook_that_cannot_be_prepared_says_which_field() {
        let w = webhook("w", "ftp://example.com/", &["*"]);
        match Target::compile(w, &DEFAULTS, None) {
            Err(CompileError::Invalid(e)) => assert_eq!(e.field, "url"),
            other => panic!("{other:?}"),
        }
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

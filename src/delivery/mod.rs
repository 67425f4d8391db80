//! Delivery: one signed HTTP request of one event to one webhook.
//!
//! Delivery knows HTTP and signing, not Kafka: given an event and a target it
//! returns an [`Attempt`] saying what happened. Success is any 2xx; anything
//! else is a failure with a class that tells an operator where to look
//! (status class, timeout, network, blocked by the SSRF policy, an endpoint
//! saturated with waiting deliveries, or one held by its rate limit).

mod client;
pub mod rate;
pub mod shares;
pub mod signing;
pub mod ssrf;
pub mod target;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::config::delivery::DeliveryConfig;
use crate::event::Event;
use client::{Client, SendError, TlsBase};
pub use shares::Limit;
use shares::{HostSlots, TenantSlots};
use ssrf::Egress;
use target::Target;

/// The attempt number (1 for the first), so receivers can tell retries apart.
pub const ATTEMPT_HEADER: &str = "herald-attempt";

/// `user-agent` of every request.
pub const USER_AGENT: &str = concat!("Herald/", env!("CARGO_PKG_VERSION"));

/// Standard Webhooks' headers, and the attempt's.
const WEBHOOK_ID: HeaderName = HeaderName::from_static("webhook-id");
const WEBHOOK_TIMESTAMP: HeaderName = HeaderName::from_static("webhook-timestamp");
const WEBHOOK_SIGNATURE: HeaderName = HeaderName::from_static("webhook-signature");
const HERALD_ATTEMPT: HeaderName = HeaderName::from_static(ATTEMPT_HEADER);

/// The `webhook-id` of an event's delivery to a webhook: a pure function of
/// the event's identity and the webhook id, so it is the same on every
/// attempt, replay and replica, and receivers can de-duplicate on it.
pub fn delivery_id(event: &Event, webhook_id: &str) -> String {
    let mut hash = Sha256::new();
    hash.update(event.identity().as_bytes());
    hash.update(b"\n");
    hash.update(webhook_id.as_bytes());
    let digest = hash.finalize();
    format!("msg_{}", hex::encode(&digest[..16]))
}

/// Why a delivery did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The endpoint answered with a non-2xx status.
    Status {
        status: u16,
        /// The `Retry-After` header, as sent.
        retry_after: Option<String>,
    },
    /// No complete response within the deadline.
    Timeout,
    /// Connection, TLS or protocol error.
    Network(String),
    /// The destination address is refused by the SSRF policy.
    Blocked(String),
    /// No request slot became free within `delivery.max_queue_wait`: at the
    /// endpoint, its host, the tenant's share or the replica's.
    Saturated(Limit),
    /// The webhook's rate limit would have held it past
    /// `delivery.max_queue_wait`: not sent.
    RateLimited(rate::RateLimited),
}

impl Failure {
    /// The `class` metric label.
    pub fn class(&self) -> &'static str {
        match self {
            Failure::Status { status, .. } => status_class(*status),
            Failure::Timeout => "timeout",
            Failure::Network(_) => "network",
            Failure::Blocked(_) => "blocked",
            Failure::Saturated(_) => "saturated",
            Failure::RateLimited(_) => "rate_limited",
        }
    }

    /// A one-line description for logs and dead-letter headers.
    pub fn describe(&self) -> String {
        match self {
            Failure::Status { status, .. } => format!("endpoint answered HTTP {status}"),
            Failure::Timeout => "no response within the request timeout".into(),
            Failure::Network(e) => e.clone(),
            Failure::Blocked(e) => e.clone(),
            Failure::Saturated(limit) => format!(
                "no free request slot for {} within delivery.max_queue_wait ({})",
                limit.describe(),
                limit.key()
            ),
            Failure::RateLimited(r) => format!(
                "held by the webhook's rate limit ({} a second now) past delivery.max_queue_wait",
                r.per_second
            ),
        }
    }

    /// Whether the delivery was not sent for want of a request slot or of
    /// its rate: it waits in its tier, not counted as an attempt.
    pub fn is_wait(&self) -> bool {
        matches!(self, Failure::Saturated(_) | Failure::RateLimited(_))
    }

    /// The HTTP status, when there was a response.
    pub fn status(&self) -> Option<u16> {
        match self {
            Failure::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

fn status_class(status: u16) -> &'static str {
    match status {
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        500..=599 => "5xx",
        _ => "network",
    }
}

/// What one delivery attempt did.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub delivery_id: String,
    pub attempt: u32,
    pub started_at: OffsetDateTime,
    pub duration: Duration,
    /// The 2xx status, or why it failed.
    pub result: Result<u16, Failure>,
    /// The start of the response body, for diagnostics.
    pub response_excerpt: Option<String>,
    /// The `webhook-timestamp` and `webhook-signature` sent, when a request was made.
    pub signed: Option<(i64, String)>,
    /// The response's headers (only kept when the deliverer records history).
    pub response_headers: Vec<(String, String)>,
    /// The response's headers and body were not kept: the destination is
    /// reachable only through an allowlist
    /// (`delivery.allowlisted_response_details`).
    pub details_withheld: bool,
}

/// At most this many response headers are kept, each value at most
/// [`MAX_KEPT_HEADER_VALUE`] bytes.
pub const MAX_KEPT_HEADERS: usize = 32;
/// Longest response header value kept, in bytes.
pub const MAX_KEPT_HEADER_VALUE: usize = 256;

impl crate::telemetry::AttemptReport for Attempt {
    fn delivery_id(&self) -> &str {
        &self.delivery_id
    }
    fn number(&self) -> u32 {
        self.attempt
    }
    fn duration(&self) -> Duration {
        self.duration
    }
    fn class(&self) -> &'static str {
        Attempt::class(self)
    }
    fn result(&self) -> Result<u16, String> {
        self.result.as_ref().copied().map_err(Failure::describe)
    }
}

impl Attempt {
    /// Whether the endpoint answered 2xx.
    pub fn succeeded(&self) -> bool {
        self.result.is_ok()
    }

    /// The `class` metric label.
    pub fn class(&self) -> &'static str {
        match &self.result {
            Ok(status) => status_class(*status),
            Err(failure) => failure.class(),
        }
    }
}

/// Addresses of a name one attempt connects to at most, each after the one
/// before refused the connection: each may take `delivery.connect_timeout`.
const MAX_ADDRESSES_TRIED: usize = 3;

/// Makes deliveries: one pooled HTTP client shared by every delivery (and
/// one for each tenant with networks of its own, whose resolver admits
/// them), and one for each webhook that presents a client certificate,
/// held by its [`Target`].
pub struct Deliverer {
    config: DeliveryConfig,
    tls: TlsBase,
    shared: Client,
    tenant_clients: HashMap<String, Client>,
    tenants: Arc<TenantSlots>,
    hosts: Arc<HostSlots>,
    max_response_bytes: usize,
    /// Keep response headers in each [`Attempt`] (for delivery history).
    keep_response_headers: bool,
    /// Keep the response of destinations only an allowlist opens.
    allowlisted_details: bool,
    /// Where rate limits lease their tokens; without it each replica
    /// limits on its own.
    leases: Option<rate::Leases>,
}

impl Deliverer {
    /// Builds the clients: SSRF-guarded resolution, no redirects, no proxy.
    pub fn new(config: &DeliveryConfig) -> Result<Deliverer, String> {
        let egress = Egress::new(config);
        let tls = TlsBase::new(config);
        let tenant_clients = egress
            .tenants()
            .map(|(tenant, policy)| Ok((tenant.to_owned(), Client::new(config, &tls, policy)?)))
            .collect::<Result<_, String>>()?;
        Ok(Deliverer {
            config: config.clone(),
            shared: Client::new(config, &tls, egress.shared())?,
            tls,
            tenant_clients,
            tenants: TenantSlots::new(config.max_in_flight, config.max_in_flight_per_tenant),
            hosts: HostSlots::new(
                config.max_in_flight_per_host,
                config.max_in_flight_by_host.clone().into_iter().collect(),
            ),
            max_response_bytes: config.max_response_bytes,
            keep_response_headers: false,
            allowlisted_details: config.allowlisted_response_details,
            leases: None,
        })
    }

    /// Holds webhooks' rate limits across replicas through the buckets in
    /// Redis.
    pub fn with_rate_leases(mut self, leases: rate::Leases) -> Deliverer {
        self.leases = Some(leases);
        self
    }

    /// Keeps response headers in every [`Attempt`], for delivery history.
    pub fn keeping_response_headers(mut self) -> Deliverer {
        self.keep_response_headers = true;
        self
    }

    /// Delivers `event` to `target` once. Waits for a slot at the endpoint,
    /// at its host and in the tenant's share of the replica's, all of them
    /// together for no longer than the endpoint's queue allows.
    pub fn deliver<'a>(
        &'a self,
        event: &'a Event,
        target: &'a Target,
        delivery_id: String,
        attempt: u32,
    ) -> impl std::future::Future<Output = Attempt> + 'a {
        // `send` itself, not a future around it: one state machine less to
        // build and move per delivery.
        self.send(event, target, delivery_id, attempt, self.keep_response_headers, true)
    }

    /// [`Deliverer::deliver`], keeping the response's headers or not
    /// whatever the deliverer does, and outside the webhook's rate limit:
    /// a test ping, sent at once and shown to whoever asked.
    pub async fn deliver_with(
        &self,
        event: &Event,
        target: &Target,
        delivery_id: String,
        attempt: u32,
        keep_response_headers: bool,
    ) -> Attempt {
        self.send(event, target, delivery_id, attempt, keep_response_headers, false)
            .await
    }

    /// Sends one attempt; `rated`: within the webhook's rate limit, which a
    /// `429` then lowers.
    async fn send(
        &self,
        event: &Event,
        target: &Target,
        delivery_id: String,
        attempt: u32,
        keep_response_headers: bool,
        rated: bool,
    ) -> Attempt {
        let started_at = OffsetDateTime::now_utc();
        let clock = Instant::now();
        let finish = |result: Result<u16, Failure>, response_excerpt: Option<String>| Attempt {
            delivery_id: delivery_id.clone(),
            attempt,
            started_at,
            duration: clock.elapsed(),
            result,
            response_excerpt,
            signed: None,
            response_headers: Vec::new(),
            details_withheld: false,
        };
        let client = match self.client_of(target) {
            Ok(client) => client,
            Err(failure) => return finish(Err(failure), None),
        };
        if let Err(refused) = client.policy.check_url(&target.url) {
            return finish(Err(Failure::Blocked(refused.to_string())), None);
        }
        let deadline = tokio::time::Instant::now() + target.limiter.max_wait();
        // The rate first: a delivery waiting for its turn holds no slot.
        let rate = target.rate.as_ref().filter(|_| rated);
        if let Some(gate) = rate {
            // Boxed: only rate-limited webhooks pay for its larger state.
            let acquired = Box::pin(gate.acquire(self.leases.as_ref(), target.id(), deadline));
            if let Err(limited) = acquired.await {
                return finish(Err(Failure::RateLimited(limited)), None);
            }
        }
        // The narrowest first, so a shared slot is only held by a request
        // that is otherwise ready to go; the shared ones never one while
        // waiting for the other.
        let Ok(_endpoint_permit) = target.limiter.acquire_until(deadline).await else {
            return finish(Err(Failure::Saturated(Limit::Endpoint)), None);
        };
        // Each try connects to one address, counted under it at its host;
        // an address that refuses the connection (nothing was sent) passes
        // the request on to the next, until each has been tried.
        let mut refusals = 0;
        let (_shared_permits, clock, timestamp, signature, sent) = loop {
            let (host, resolved) = match self.destination(client, target).await {
                Ok(destination) => destination,
                Err(failure) => return finish(Err(failure), None),
            };
            let shared = shares::acquire_shared(&self.tenants, &self.hosts, &target.tenant_key, &host, deadline);
            let permits = match shared.await {
                Ok(permits) => permits,
                Err(limit) => return finish(Err(Failure::Saturated(limit)), None),
            };
            // Time spent queueing is not part of the request's own duration.
            let clock = Instant::now();
            let timestamp = OffsetDateTime::now_utc().unix_timestamp();
            let signature = target.signer.sign(&delivery_id, timestamp, &event.record.value);
            let request = Self::build_request(event, target, &delivery_id, attempt, timestamp, &signature);
            let sent = client.send(request, target.timeout).await;
            if let (Err(e), Some((resolved, ip))) = (&sent, &resolved) {
                if e.is_connect() && ssrf::find_blocked(e).is_none() {
                    resolved.move_past(*ip);
                    refusals += 1;
                    if refusals < resolved.len().min(MAX_ADDRESSES_TRIED) {
                        continue;
                    }
                }
            }
            break (permits, clock, timestamp, signature, sent);
        };
        let mut response_headers = Vec::new();
        let mut details_withheld = false;
        let (result, excerpt) = match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                let retry_after = response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                details_withheld = !self.allowlisted_details
                    && client::remote_addr(&response).is_some_and(|addr| ssrf::opened_by_allowlist(addr.ip()));
                let excerpt = if details_withheld {
                    None
                } else {
                    if keep_response_headers {
                        response_headers = kept_headers(response.headers());
                    }
                    // Within the request's timeout, as its head was.
                    let deadline = tokio::time::Instant::from_std(clock) + target.timeout;
                    self.read_excerpt(response.into_body(), deadline).await
                };
                if let (429, Some(gate), Some(leases)) = (status, rate, &self.leases) {
                    // Every replica slows down, without holding this attempt.
                    let (gate, leases, id) = (gate.clone(), leases.clone(), target.id().to_owned());
                    tokio::spawn(async move { gate.slow_down(&leases, &id).await });
                }
                if (200..300).contains(&status) {
                    (Ok(status), excerpt)
                } else {
                    (Err(Failure::Status { status, retry_after }), excerpt)
                }
            }
            Err(e) => (Err(classify(&e, &target.url)), None),
        };
        Attempt {
            delivery_id,
            attempt,
            started_at,
            duration: clock.elapsed(),
            result,
            response_excerpt: excerpt,
            signed: Some((timestamp, signature)),
            response_headers,
            details_withheld,
        }
    }

    /// What a request to `target` is counted under at its host: an IP
    /// literal's address, or a named host's (unless it has a cap of its
    /// own), which the request then connects to; with the name's addresses,
    /// and the one counted, to move past it when it refuses.
    async fn destination(
        &self,
        client: &Client,
        target: &Target,
    ) -> Result<(Arc<str>, Option<(Arc<ssrf::Resolved>, IpAddr)>), Failure> {
        let Some((name, port)) = &target.host_name else {
            return Ok((target.host_key.clone(), None));
        };
        if self.hosts.has_own_cap(name) {
            return Ok((target.host_key.clone(), None));
        }
        match client.resolver.resolve_name(name).await {
            Ok(resolved) => {
                let ip = resolved.current().ip();
                Ok((shares::address_key(SocketAddr::new(ip, *port)), Some((resolved, ip))))
            }
            Err(e) => Err(match ssrf::find_blocked(e.as_ref()) {
                Some(blocked) => Failure::Blocked(blocked.to_string()),
                None => Failure::Network(format!("resolving {name}: {}", error_chain(e.as_ref()))),
            }),
        }
    }

    /// The client whose resolver applies `target`'s tenant's policy: the
    /// shared one (or its tenant's), or the webhook's own when it presents a
    /// client certificate, built at its first delivery on the same policy
    /// and resolver.
    fn client_of<'a>(&'a self, target: &'a Target) -> Result<&'a Client, Failure> {
        let base = target
            .webhook
            .tenant
            .as_deref()
            .and_then(|t| self.tenant_clients.get(t))
            .unwrap_or(&self.shared);
        let (Some(slot), Some(tls)) = (&target.tls_client, &target.webhook.tls_client) else {
            return Ok(base);
        };
        slot.client
            .get_or_init(|| {
                base.presenting(&self.config, &self.tls, tls)
                    .map_err(|e| format!("the webhook's client certificate cannot be used: {e}"))
            })
            .as_ref()
            .map_err(|e| Failure::Network(e.clone()))
    }

    /// The signed request of `event` to `target`: the target's prepared URI
    /// and headers (its own and `user-agent`), the event's forwarded
    /// headers, and Standard Webhooks' three.
    fn build_request(
        event: &Event,
        target: &Target,
        delivery_id: &str,
        attempt: u32,
        timestamp: i64,
        signature: &str,
    ) -> http::Request<client::Body> {
        let mut request = http::Request::new(client::Body::new(event.record.value.clone()));
        *request.method_mut() = http::Method::POST;
        *request.uri_mut() = target.uri.clone();
        let headers = request.headers_mut();
        headers.reserve(target.headers.len() + event.meta.forward_headers.len() + 5);
        headers.extend(target.headers.iter().map(|(name, value)| (name.clone(), value.clone())));
        for (name, value) in &event.meta.forward_headers {
            if let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
                headers.append(name, value);
            }
        }
        let content_type = HeaderValue::from_str(&event.meta.content_type)
            .unwrap_or_else(|_| HeaderValue::from_static("application/json"));
        headers.insert(CONTENT_TYPE, content_type);
        // A delivery id is `msg_` and hex, a signature base64 and spaces:
        // always valid header values.
        let text = |value: &str| HeaderValue::from_str(value).unwrap_or_else(|_| HeaderValue::from_static(""));
        headers.insert(WEBHOOK_ID, text(delivery_id));
        headers.insert(WEBHOOK_TIMESTAMP, HeaderValue::from(timestamp));
        headers.insert(WEBHOOK_SIGNATURE, text(signature));
        headers.insert(HERALD_ATTEMPT, HeaderValue::from(attempt));
        request
    }

    /// Reads at most `max_response_bytes` of the body, for diagnostics.
    async fn read_excerpt(&self, body: hyper::body::Incoming, deadline: tokio::time::Instant) -> Option<String> {
        let buf = client::read_body(body, self.max_response_bytes, deadline).await;
        if buf.is_empty() {
            None
        } else {
            Some(String::from_utf8_lossy(&buf).into_owned())
        }
    }
}

/// The failure a request that got no response is, naming its destination
/// by its origin only (a path or query may be a credential).
fn classify(err: &SendError, url: &url::Url) -> Failure {
    if let Some(blocked) = ssrf::find_blocked(err) {
        Failure::Blocked(blocked.to_string())
    } else if err.is_timeout() {
        Failure::Timeout
    } else {
        let mut text = error_chain(err);
        if let Some(fault) = err.connection_fault().filter(|f| !text.contains(f.as_str())) {
            text.push_str(&format!(" (the connection had failed: {fault})"));
        }
        Failure::Network(format!("sending to {}: {text}", redact_url(url)))
    }
}

/// Response headers worth keeping in a delivery's history, bounded.
fn kept_headers(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .take(MAX_KEPT_HEADERS)
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                text_prefix(value.as_bytes(), MAX_KEPT_HEADER_VALUE).0,
            )
        })
        .collect()
}

/// `bytes` as text, at most `max` bytes (a character cut in two is left out;
/// invalid UTF-8 becomes U+FFFD), and whether anything was cut.
pub fn text_prefix(bytes: &[u8], max: usize) -> (String, bool) {
    let cut = bytes.len() > max;
    let head = &bytes[..bytes.len().min(max)];
    let text = match std::str::from_utf8(head) {
        Ok(text) => text.to_owned(),
        // Only an incomplete character at the very end: drop it.
        Err(e) if cut && e.error_len().is_none() => String::from_utf8_lossy(&head[..e.valid_up_to()]).into_owned(),
        Err(_) => String::from_utf8_lossy(head).into_owned(),
    };
    (text, cut)
}

/// An error and its sources on one line (a client's own message hides the
/// cause).
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}

/// A URL as it may be shown anywhere but the webhook document itself: its
/// scheme, host and port, with any path or query replaced by `/…`
/// (`https://hooks.slack.com/…`). Credentials in a URL are never valid in a
/// webhook, and are dropped too.
pub fn redact_url(url: &url::Url) -> String {
    let mut out = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        out.push_str(&format!(":{port}"));
    }
    if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
        out.push_str("/…");
    } else {
        out.push('/');
    }
    out
}

/// [`redact_url`] of a URL given as text (what cannot be parsed is withheld).
pub fn redact_url_text(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(url) => redact_url(&url),
        Err(_) => "(an unparsable URL)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::Webhook;

    #[test]
    fn text_prefixes_keep_characters_whole() {
        assert_eq!(text_prefix(b"hello", 10), ("hello".to_owned(), false));
        assert_eq!(text_prefix(b"hello", 3), ("hel".to_owned(), true));
        let (text, cut) = text_prefix("héllo".as_bytes(), 2);
        assert_eq!((text.as_str(), cut), ("h", true));
        assert_eq!(text_prefix(b"", 0), (String::new(), false));
    }

    #[test]
    fn urls_keep_only_their_origin() {
        let r = |u: &str| redact_url_text(u);
        assert_eq!(
            r("https://hooks.slack.com/services/T000/B000/credential-in-path-7f3a"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(r("https://example.com/hook?token=SECRET"), "https://example.com/…");
        assert_eq!(r("http://127.0.0.1:8080/"), "http://127.0.0.1:8080/");
        assert_eq!(r("https://u:p@example.com/x"), "https://example.com/…");
        assert_eq!(r("not a url"), "(an unparsable URL)");
    }

    /// A deliverer whose policy opens loopback, every port, and its defaults.
    fn loopback_deliverer() -> (Deliverer, target::EndpointDefaults) {
        let config = crate::config::Config::from_toml_overlay(
            "[delivery]\nallow_cidrs = [\"127.0.0.0/8\"]\nallow_ports = [\"1-65535\"]",
        )
        .unwrap()
        .delivery;
        (
            Deliverer::new(&config).unwrap(),
            target::EndpointDefaults::from(&config),
        )
    }

    #[tokio::test]
    async fn a_delivery_refused_a_connection_names_the_origin_and_the_cause_never_the_path() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let (deliverer, defaults) = loopback_deliverer();
        let url = format!("http://127.0.0.1:{port}/services/T0/B0/credential-in-path-7f3a?token=credential-in-query");
        let target = Target::compile(crate::webhook::tests::webhook("w", &url, &["*"]), &defaults, None).unwrap();
        let attempt = deliverer
            .deliver(&event(Some("evt_1"), 1), &target, "msg_1".into(), 1)
            .await;
        let Err(Failure::Network(text)) = &attempt.result else {
            panic!("{:?}", attempt.result);
        };
        assert!(!text.contains("credential-in"), "{text}");
        assert!(
            text.starts_with(&format!("sending to http://127.0.0.1:{port}/…: ")),
            "{text}"
        );
        assert!(text.to_lowercase().contains("connection refused"), "{text}");
    }

    #[tokio::test]
    async fn a_receiver_that_never_answers_is_a_timeout_at_the_webhooks_own() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accepts, reads, never answers.
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let (deliverer, defaults) = loopback_deliverer();
        let mut webhook = crate::webhook::tests::webhook("w", &format!("http://{addr}/"), &["*"]);
        webhook.limits.timeout_ms = Some(300);
        let target = Target::compile(webhook, &defaults, None).unwrap();
        let attempt = deliverer
            .deliver(&event(Some("evt_1"), 1), &target, "msg_1".into(), 1)
            .await;
        assert_eq!(attempt.result, Err(Failure::Timeout));
        assert!(attempt.duration >= Duration::from_millis(300), "{:?}", attempt.duration);
    }

    use crate::event::{EventMeta, SourceRecord};
    use bytes::Bytes;

    fn event(id: Option<&str>, offset: i64) -> Event {
        Event {
            record: SourceRecord {
                topic: "events".into(),
                partition: 2,
                offset,
                timestamp_ms: None,
                key: None,
                value: Bytes::from_static(b"{}"),
                headers: vec![],
            },
            meta: EventMeta {
                event_type: "a".into(),
                event_id: id.map(str::to_owned),
                event_time: None,
                tenant: None,
                content_type: "application/json".into(),
                forward_headers: vec![],
                id_source: None,
            },
        }
    }

    #[test]
    fn delivery_ids_are_stable_and_distinct() {
        let a = delivery_id(&event(Some("evt_1"), 5), "wh_a");
        assert_eq!(
            a,
            delivery_id(&event(Some("evt_1"), 99), "wh_a"),
            "envelope id wins over position"
        );
        assert_ne!(a, delivery_id(&event(Some("evt_1"), 5), "wh_b"));
        assert_ne!(a, delivery_id(&event(Some("evt_2"), 5), "wh_a"));
        let p = delivery_id(&event(None, 5), "wh_a");
        assert_eq!(p, delivery_id(&event(None, 5), "wh_a"));
        assert_ne!(p, delivery_id(&event(None, 6), "wh_a"));
        assert!(a.starts_with("msg_") && a.len() == 36, "{a}");
    }

    #[test]
    fn an_event_id_names_one_event_within_its_tenant_and_source() {
        let of = |id: &str, tenant: Option<&str>, source: Option<&str>, offset: i64| {
            let mut e = event(Some(id), offset);
            e.meta.tenant = tenant.map(str::to_owned);
            e.meta.id_source = source.map(str::to_owned);
            delivery_id(&e, "wh_ops")
        };
        // At a webhook of no tenant, receiving every tenant's events.
        assert_ne!(of("evt_1", Some("acme"), None, 1), of("evt_1", Some("globex"), None, 2));
        assert_ne!(of("1", None, Some("/a"), 1), of("1", None, Some("/b"), 2));
        assert_ne!(of("evt_1", Some("acme"), None, 1), of("evt_1", None, None, 1));
        // Published twice, one event keeps one id.
        assert_eq!(
            of("evt_1", Some("acme"), Some("/a"), 1),
            of("evt_1", Some("acme"), Some("/a"), 9)
        );
        // An id of no tenant or source keeps the id it always had.
        let mut hash = Sha256::new();
        hash.update(b"id:evt_1\nwh_ops");
        assert_eq!(
            of("evt_1", None, None, 1),
            format!("msg_{}", hex::encode(&hash.finalize()[..16]))
        );
        // No split of one passes for another.
        assert_ne!(of("a\",\"b", None, Some("c"), 1), of("a", Some("b\",\"c"), None, 1));
    }

    #[test]
    fn a_webhook_presenting_a_client_certificate_gets_a_client_of_its_own_on_its_tenants_policy_built_once() {
        use crate::delivery::target::{EndpointDefaults, Target};
        use crate::webhook::tests::{tls_client, webhook};
        let config = crate::config::Config::from_toml_overlay(
            "[delivery]\nallow_cidrs = []\n[delivery.tenant_allow_cidrs]\nacme = [\"10.1.0.0/16\"]",
        )
        .unwrap()
        .delivery;
        let deliverer = Deliverer::new(&config).unwrap();
        let defaults = EndpointDefaults::from(&config);
        let internal: IpAddr = "10.1.2.3".parse().unwrap();
        let compile = |w: &Webhook, previous: Option<&Target>| Target::compile(w.clone(), &defaults, previous).unwrap();
        let client_of = |t: &Target| deliverer.client_of(t).map(|c| c as *const Client).unwrap();

        let mut acme = webhook("acme", "https://hooks.example.com/", &["*"]);
        acme.tenant = Some("acme".into());
        let plain = compile(&acme, None);
        acme.tls_client = Some(tls_client("acme client"));
        let first = compile(&acme, Some(&plain));
        let own = client_of(&first);
        assert_ne!(own, client_of(&plain), "a client of its own");
        let policy = &deliverer.client_of(&first).unwrap().policy;
        assert!(policy.check(internal).is_ok(), "its tenant's networks stay open to it");

        // Built once: a later version with the same certificate keeps it.
        acme.name = "renamed".into();
        let second = compile(&acme, Some(&first));
        assert_eq!(client_of(&second), own);
        // A new certificate, or another tenant, is another client.
        acme.tls_client = Some(tls_client("acme client, renewed"));
        let renewed = compile(&acme, Some(&second));
        assert_ne!(client_of(&renewed), own);
        let mut other = acme.clone();
        other.tenant = Some("globex".into());
        let globex = compile(&other, Some(&renewed));
        assert_ne!(client_of(&globex), client_of(&renewed));
        let policy = &deliverer.client_of(&globex).unwrap().policy;
        assert!(policy.check(internal).is_err(), "another tenant's networks are not");
        // No certificate: the shared client (or its tenant's) as ever.
        other.tls_client = None;
        let shared = compile(&other, Some(&globex));
        assert_eq!(client_of(&shared), &deliverer.shared as *const Client);
    }

    #[test]
    fn failures_have_classes() {
        let status = |s| {
            Failure::Status {
                status: s,
                retry_after: None,
            }
            .class()
        };
        assert_eq!(status(301), "3xx");
        assert_eq!(status(404), "4xx");
        assert_eq!(status(503), "5xx");
        assert_eq!(Failure::Timeout.class(), "timeout");
        assert_eq!(Failure::Saturated(Limit::Tenant).class(), "saturated");
        assert_eq!(Failure::Blocked("x".into()).class(), "blocked");
    }
}

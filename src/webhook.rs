//! The webhook document: the Redis contract other services may write.
//!
//! `{prefix}webhook:{id}` holds one [`Webhook`] as JSON; `{prefix}webhooks` is
//! the set of ids; every change is announced by publishing the id on
//! `{prefix}webhooks:changed`. The contract is documented in
//! `docs/subscriptions.md`. Unknown fields are accepted (and kept by Herald's
//! own writes only if modelled), so writers can add fields without breaking
//! running replicas.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::routing::filter::Filter;
use crate::routing::ordering::Ordering;
use crate::routing::validate_pattern;

/// Secrets are `whsec_` followed by the base64 of the key.
pub const SECRET_PREFIX: &str = "whsec_";
/// Key sizes accepted by Standard Webhooks.
pub const SECRET_BYTES: std::ops::RangeInclusive<usize> = 24..=64;
/// Bounds that keep one record from costing much memory or header space.
pub const MAX_ID_LEN: usize = 128;
/// Most event patterns of one webhook.
pub const MAX_EVENTS: usize = 256;
/// Most custom headers of one webhook.
pub const MAX_HEADERS: usize = 32;
/// Most signing secrets at once (the current one and those rotated out).
pub const MAX_SECRETS: usize = 8;
/// Longest `uid`.
pub const MAX_UID_LEN: usize = 128;
/// How the id of a webhook created with a `uid` begins (see [`uid_id`]).
pub const UID_ID_PREFIX: &str = "wh_u";
/// Longest `tls_client.certificate` and `tls_client.key`, in bytes each.
pub const MAX_TLS_CLIENT_PEM: usize = 16 * 1024;
/// Most certificates in `tls_client.certificate` (the client's and the
/// intermediates a receiver needs to check it).
pub const MAX_TLS_CLIENT_CHAIN: usize = 8;

/// Request headers a webhook may not set: they are Herald's or the transport's.
pub const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "user-agent",
    "transfer-encoding",
    "connection",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "herald-attempt",
];

/// Whether Herald delivers to a webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WebhookStatus {
    /// Deliveries are made.
    Active,
    /// Paused by its owner: deliveries are not attempted, but kept.
    Paused,
    /// Disabled by Herald or an operator (e.g. endpoint gone): deliveries are
    /// not attempted, but kept.
    Disabled,
}

impl WebhookStatus {
    /// The status as stored and shown (`active`, `paused`, `disabled`).
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookStatus::Active => "active",
            WebhookStatus::Paused => "paused",
            WebhookStatus::Disabled => "disabled",
        }
    }

    /// Every status.
    pub const ALL: [WebhookStatus; 3] = [WebhookStatus::Active, WebhookStatus::Paused, WebhookStatus::Disabled];
}

/// Who set a webhook's status (`status_by`), and so who may set it back: a
/// webhook paused or disabled by an operator is resumed only by an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum StatusBy {
    /// Herald itself (the endpoint answered 410 Gone, or failed for too
    /// long): its tenant may resume it once the receiver is fixed.
    Herald,
    /// A token of the webhook's tenant, or its tenant's portal session.
    Tenant,
    /// An admin token, an operators' portal session, or another writer of
    /// the document. Also what any other value reads as, and what a paused
    /// or disabled webhook with no `status_by` (written before Herald
    /// recorded it) counts as.
    Operator,
}

impl StatusBy {
    /// The value as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusBy::Herald => "herald",
            StatusBy::Tenant => "tenant",
            StatusBy::Operator => "operator",
        }
    }

    /// `status_by` as written: Herald's own values, anything else an
    /// operator's.
    pub fn parse(s: &str) -> StatusBy {
        match s {
            "herald" => StatusBy::Herald,
            "tenant" => StatusBy::Tenant,
            _ => StatusBy::Operator,
        }
    }
}

/// A webhook's rate limit, held for the webhook as a whole however many
/// replicas deliver to it (docs/rate-limits.md).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RateLimit {
    /// Requests a second on average; may be fractional (`0.0167` is about
    /// one a minute). From 1/86400 (one a day) to 100000.
    #[schema(minimum = 0.0000116, maximum = 100000)]
    pub per_second: f64,
    /// Requests that may go at once after a quiet time, beyond the rate
    /// (1 when absent). From 1 to 10000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 10000)]
    pub burst: Option<u32>,
}

impl RateLimit {
    /// The lowest rate: one request a day.
    pub const MIN_PER_SECOND: f64 = 1.0 / 86_400.0;
    /// The highest rate.
    pub const MAX_PER_SECOND: f64 = 100_000.0;
    /// The largest burst.
    pub const MAX_BURST: u32 = 10_000;

    /// The burst, 1 when not given.
    pub fn burst(&self) -> u32 {
        self.burst.unwrap_or(1)
    }

    /// What is wrong with it, if anything.
    pub fn check(&self) -> Result<(), String> {
        if !self.per_second.is_finite()
            || self.per_second < Self::MIN_PER_SECOND
            || self.per_second > Self::MAX_PER_SECOND
        {
            return Err(format!(
                "`per_second` must be from {:.7} (one a day) to {}",
                Self::MIN_PER_SECOND,
                Self::MAX_PER_SECOND
            ));
        }
        if self.burst.is_some_and(|b| b == 0 || b > Self::MAX_BURST) {
            return Err(format!("`burst` must be from 1 to {}", Self::MAX_BURST));
        }
        Ok(())
    }
}

/// Optional per-endpoint limits; each may only tighten the global setting.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Limits {
    /// Concurrent requests to this endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub max_in_flight: Option<usize>,
    /// Request deadline for this endpoint, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1)]
    pub timeout_ms: Option<u64>,
    /// HTTP statuses (300 to 599) that end a delivery to this endpoint at
    /// once instead of being retried; replaces `retry.final_statuses` for it.
    /// 410 Gone is always final.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_items = 64)]
    pub final_statuses: Option<Vec<u16>>,
    /// At most this many requests a second to this endpoint, over every
    /// replica; replaces `delivery.default_rate` for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateLimit>,
}

/// One webhook subscription: the document other writers share
/// (docs/subscriptions.md).
///
/// A field added here is written in every mirror of the webhook, or left out
/// of it on purpose: the packed index entry (`Layout`, `Packed::pack` and
/// `unpack`, and `Document`, which packs a document in place, in
/// src/subscriptions/packed.rs), the API's `WebhookView` and its create and
/// update bodies (src/admin/webhooks/), the OpenAPI document
/// (docs/openapi.json, from `herald openapi`), the CLI's table
/// (src/cli/tables.rs), the portal's page and form (src/portal/views/) and
/// docs/subscriptions.md. The test
/// `portal::tests::every_field_of_a_webhook_is_in_each_of_its_mirrors_or_left_out_on_purpose`
/// does not compile until a new field is named in it, and fails while a
/// mirror neither carries it nor lists it as left out.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
pub struct Webhook {
    pub id: String,
    /// When set, the webhook only receives events of this tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// The name its tenant chose for it, unique within that tenant; the id
    /// is then derived from both ([`uid_id`]). Read leniently: a writer's own
    /// `uid` field of another shape is ignored, never a reason to skip the
    /// webhook.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "lenient_uid")]
    pub uid: Option<String>,
    pub name: String,
    pub url: String,
    /// Event type patterns: `tour.completed`, `tour.*` (prefix) or `*`.
    pub events: Vec<String>,
    pub status: WebhookStatus,
    /// Why the status is what it is (e.g. why Herald disabled it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_reason: Option<String>,
    /// When the status last changed (absent in documents written before
    /// Herald recorded it): a resume with replay re-delivers what was kept
    /// since then.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub status_changed_at: Option<OffsetDateTime>,
    /// Who set the status ([`StatusBy`]); none while active, and in documents
    /// written before Herald recorded it. Read leniently: a string not
    /// Herald's own reads as `operator`, any other value as none.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "lenient_status_by"
    )]
    pub status_by: Option<StatusBy>,
    /// When "retry pending" ran for this webhook (its cuts, oldest first):
    /// a retry waiting in a tier whose last attempt was before a cut and
    /// that is due after it was re-driven by that run, so it is finished
    /// when it comes due, not delivered again. Kept while a tier retry may
    /// still straddle them (the longest wait of a tier).
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "rfc3339_list")]
    pub retried_pending: Vec<OffsetDateTime>,
    /// Signing secrets, newest first; each signs every request while listed.
    pub secrets: Vec<String>,
    /// Secrets replaced by a rotation, still signing until their expiry so
    /// receivers can switch to the new secret without missing a request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous_secrets: Vec<ExpiringSecret>,
    /// Extra request headers, e.g. an API key.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "is_default")]
    pub limits: Limits,
    /// Which events of its types it receives, by values in their body
    /// (`routing::filter`); none receives them all. Checked as it is read:
    /// a document with an invalid filter does not read as a webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Filter>,
    /// The client certificate Herald presents to receivers that ask for one
    /// (mutual TLS); none presents no certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client: Option<TlsClient>,
    /// Deliveries of events with the same key reach it one at a time, in
    /// their source partition's order, retries included
    /// (`routing::ordering`); none delivers them as they come.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ordering: Option<Ordering>,
}

/// A client certificate chain and its private key, both PEM. The key is a
/// secret: it is stored in the document and used for delivery, never shown
/// by the API, the CLI, the portal, logs or events.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsClient {
    /// The client's certificate first, then any intermediates, PEM.
    pub certificate: String,
    /// The certificate's private key, PEM (PKCS #8, PKCS #1 or SEC 1).
    pub key: String,
}

impl fmt::Debug for TlsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fingerprint = certificate_fingerprint(&self.certificate);
        write!(
            f,
            "TlsClient(certificate sha256 {}, key redacted)",
            fingerprint.as_deref().unwrap_or("unreadable")
        )
    }
}

impl TlsClient {
    /// The TLS configuration `builder` makes presenting this chain and key
    /// (what delivery presents to receivers that ask): refused when the
    /// PEM does not parse, or the key does not sign for the certificate.
    pub fn present(
        &self,
        builder: rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>,
    ) -> Result<rustls::ClientConfig, String> {
        use rustls_pki_types::pem::PemObject;
        let chain = rustls_pki_types::CertificateDer::pem_slice_iter(self.certificate.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("certificate: {e}"))?;
        let key =
            rustls_pki_types::PrivateKeyDer::from_pem_slice(self.key.as_bytes()).map_err(|e| format!("key: {e}"))?;
        builder.with_client_auth_cert(chain, key).map_err(|e| e.to_string())
    }

    /// SHA-256 of the chain and the key, naming this identity without
    /// holding it (clients are shared by identity).
    pub fn digest(&self) -> [u8; 32] {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        hash.update(self.certificate.as_bytes());
        hash.update([0]);
        hash.update(self.key.as_bytes());
        hash.finalize().into()
    }
}

/// The SHA-256 fingerprint of the first certificate of a PEM chain (of its
/// DER, as `openssl x509 -fingerprint -sha256` shows it, in lower-case hex
/// without colons), if there is one.
pub fn certificate_fingerprint(pem: &str) -> Option<String> {
    use rustls_pki_types::pem::PemObject;
    use sha2::{Digest, Sha256};
    let first = rustls_pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()?
        .ok()?;
    Some(hex::encode(Sha256::digest(first.as_ref())))
}

/// Whether `certificate` is a PEM chain of 1 to [`MAX_TLS_CLIENT_CHAIN`]
/// certificates and `key` one PEM private key that is the first
/// certificate's, such that a TLS client can be built with them (as
/// delivery builds it); the error names the field, never the key.
pub fn check_tls_client(certificate: &str, key: &str) -> Result<(), InvalidWebhook> {
    use rustls_pki_types::pem::{PemObject, SectionKind};
    const CERTIFICATE: &str = "tls_client.certificate";
    const KEY: &str = "tls_client.key";
    for (field, pem) in [(CERTIFICATE, certificate), (KEY, key)] {
        if pem.len() > MAX_TLS_CLIENT_PEM {
            return Err(invalid(field, format!("must be at most {MAX_TLS_CLIENT_PEM} bytes")));
        }
    }
    let sections = |field: &'static str, pem: &str| {
        <(SectionKind, Vec<u8>)>::pem_slice_iter(pem.as_bytes())
            .map(|section| section.map(|(kind, _)| kind))
            .collect::<Result<Vec<SectionKind>, _>>()
            .map_err(|e| invalid(field, format!("is not PEM: {e}")))
    };
    let chain = sections(CERTIFICATE, certificate)?;
    if chain.is_empty() || chain.len() > MAX_TLS_CLIENT_CHAIN {
        return Err(invalid(
            CERTIFICATE,
            format!("must hold 1 to {MAX_TLS_CLIENT_CHAIN} PEM certificates (`-----BEGIN CERTIFICATE-----`)"),
        ));
    }
    if chain.iter().any(|kind| *kind != SectionKind::Certificate) {
        return Err(invalid(
            CERTIFICATE,
            "must hold certificates only (the key goes in `key`)",
        ));
    }
    let keys = sections(KEY, key)?;
    let is_key = |kind: &SectionKind| {
        matches!(
            kind,
            SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey
        )
    };
    if keys.len() != 1 || !is_key(&keys[0]) {
        return Err(invalid(
            KEY,
            "must hold one unencrypted PEM private key (`PRIVATE KEY`, `RSA PRIVATE KEY` or `EC PRIVATE KEY`)",
        ));
    }
    let tls = TlsClient {
        certificate: certificate.to_owned(),
        key: key.to_owned(),
    };
    // What delivery does with them: a key that does not sign for the
    // certificate, or that TLS cannot use, fails here.
    tls_builder()
        .and_then(|builder| tls.present(builder))
        .map(drop)
        .map_err(|cause| {
            invalid(
                KEY,
                format!("is not a private key TLS can use with `certificate`: {cause}"),
            )
        })
}

/// A client configuration builder trusting nothing, to check a client
/// certificate with.
fn tls_builder() -> Result<rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>, String> {
    Ok(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(rustls::RootCertStore::empty()),
    )
}

/// A list of RFC 3339 times.
mod rfc3339_list {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use time::format_description::well_known::Rfc3339;
    use time::OffsetDateTime;

    /// Writes the times as RFC 3339 strings.
    pub fn serialize<S: Serializer>(times: &[OffsetDateTime], s: S) -> Result<S::Ok, S::Error> {
        let text: Result<Vec<String>, _> = times.iter().map(|t| t.format(&Rfc3339)).collect();
        text.map_err(serde::ser::Error::custom)?.serialize(s)
    }

    /// Reads a list of RFC 3339 strings.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<OffsetDateTime>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|t| OffsetDateTime::parse(t, &Rfc3339).map_err(serde::de::Error::custom))
            .collect()
    }
}

/// A secret that signs until `expires_at`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpiringSecret {
    pub secret: String,
    #[serde(with = "time::serde::rfc3339")]
    pub expires_at: OffsetDateTime,
}

impl fmt::Debug for ExpiringSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExpiringSecret(redacted, expires {})", self.expires_at)
    }
}

fn is_default(limits: &Limits) -> bool {
    *limits == Limits::default()
}

/// Secrets and header values (API keys) never reach a log line.
impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("uid", &self.uid)
            .field("name", &self.name)
            .field("url", &self.url)
            .field("events", &self.events)
            .field("status", &self.status)
            .field("secrets", &format_args!("[{} redacted]", self.secrets.len()))
            .field("previous_secrets", &self.previous_secrets)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("limits", &self.limits)
            .field("filter", &self.filter)
            .field("tls_client", &self.tls_client)
            .field("ordering", &self.ordering)
            .finish()
    }
}

/// A field of a webhook that is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{field}` {message}")]
pub struct InvalidWebhook {
    pub field: &'static str,
    pub message: String,
}

fn invalid(field: &'static str, message: impl Into<String>) -> InvalidWebhook {
    InvalidWebhook {
        field,
        message: message.into(),
    }
}

impl Webhook {
    /// An active webhook with one fresh secret, created now.
    pub fn new(id: &str, name: &str, url: &str, events: &[&str]) -> Webhook {
        let now = OffsetDateTime::now_utc();
        Webhook {
            id: id.into(),
            tenant: None,
            uid: None,
            name: name.into(),
            url: url.into(),
            events: events.iter().map(|e| e.to_string()).collect(),
            status: WebhookStatus::Active,
            status_reason: None,
            status_changed_at: None,
            status_by: None,
            retried_pending: Vec::new(),
            secrets: vec![generate_secret()],
            previous_secrets: Vec::new(),
            headers: BTreeMap::new(),
            created_at: now,
            updated_at: now,
            limits: Limits::default(),
            filter: None,
            tls_client: None,
            ordering: None,
        }
    }

    /// Checks everything the pipeline relies on; a record failing this is
    /// skipped (and reported), never half-used.
    pub fn validate(&self) -> Result<(), InvalidWebhook> {
        check(self)
    }
}

/// The fields of a webhook that [`check`] reads, whatever holds them: a
/// [`Webhook`], or a document read straight into its packed form
/// (`subscriptions::packed`).
pub trait Fields {
    fn id(&self) -> &str;
    fn tenant(&self) -> Option<&str>;
    fn url(&self) -> &str;
    fn events(&self) -> impl ExactSizeIterator<Item = &str>;
    fn secrets(&self) -> impl ExactSizeIterator<Item = &str>;
    fn previous_secrets(&self) -> impl ExactSizeIterator<Item = &str>;
    fn headers(&self) -> impl ExactSizeIterator<Item = (&str, &str)>;
    fn limits(&self) -> &Limits;
    /// The client certificate chain and key, PEM.
    fn tls_client(&self) -> Option<(&str, &str)>;
}

impl Fields for Webhook {
    fn id(&self) -> &str {
        &self.id
    }
    fn tenant(&self) -> Option<&str> {
        self.tenant.as_deref()
    }
    fn url(&self) -> &str {
        &self.url
    }
    fn events(&self) -> impl ExactSizeIterator<Item = &str> {
        self.events.iter().map(String::as_str)
    }
    fn secrets(&self) -> impl ExactSizeIterator<Item = &str> {
        self.secrets.iter().map(String::as_str)
    }
    fn previous_secrets(&self) -> impl ExactSizeIterator<Item = &str> {
        self.previous_secrets.iter().map(|p| p.secret.as_str())
    }
    fn headers(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
    fn limits(&self) -> &Limits {
        &self.limits
    }
    fn tls_client(&self) -> Option<(&str, &str)> {
        self.tls_client
            .as_ref()
            .map(|t| (t.certificate.as_str(), t.key.as_str()))
    }
}

/// Checks everything the pipeline relies on; a record failing this is
/// skipped (and reported), never half-used.
pub fn check(webhook: &impl Fields) -> Result<(), InvalidWebhook> {
    let id = webhook.id();
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(invalid("id", format!("must be 1 to {MAX_ID_LEN} characters")));
    }
    if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.:".contains(&b)) {
        return Err(invalid("id", "may only contain letters, digits, `_`, `-`, `.` and `:`"));
    }
    if let Some(tenant) = webhook.tenant() {
        if tenant.is_empty() || tenant.len() > MAX_ID_LEN {
            return Err(invalid("tenant", format!("must be 1 to {MAX_ID_LEN} characters")));
        }
    }
    let url = url::Url::parse(webhook.url()).map_err(|e| invalid("url", format!("is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("url", "must use http or https"));
    }
    if url.host().is_none() {
        return Err(invalid("url", "must name a host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("url", "must not carry credentials; use `headers`"));
    }
    // What delivery sends the request to: a URL the HTTP client cannot
    // take (one longer than 65,534 bytes) would never be delivered.
    if let Err(e) = url.as_str().parse::<http::Uri>() {
        return Err(invalid("url", format!("cannot be requested: {e}")));
    }
    let events = webhook.events();
    if events.len() == 0 || events.len() > MAX_EVENTS {
        return Err(invalid("events", format!("must list 1 to {MAX_EVENTS} patterns")));
    }
    for pattern in events {
        validate_pattern(pattern).map_err(|m| invalid("events", format!("`{pattern}` {m}")))?;
    }
    let secrets = webhook.secrets();
    if secrets.len() == 0 || secrets.len() > MAX_SECRETS {
        return Err(invalid("secrets", format!("must list 1 to {MAX_SECRETS} secrets")));
    }
    for secret in secrets {
        // The message names the problem, never the secret.
        check_secret(secret).map_err(|m| invalid("secrets", m.to_string()))?;
    }
    let previous = webhook.previous_secrets();
    if previous.len() > MAX_SECRETS {
        return Err(invalid(
            "previous_secrets",
            format!("must list at most {MAX_SECRETS} secrets"),
        ));
    }
    for secret in previous {
        check_secret(secret).map_err(|m| invalid("previous_secrets", m.to_string()))?;
    }
    let headers = webhook.headers();
    if headers.len() > MAX_HEADERS {
        return Err(invalid("headers", format!("must have at most {MAX_HEADERS} entries")));
    }
    for (name, value) in headers {
        if RESERVED_HEADERS.iter().any(|r| r.eq_ignore_ascii_case(name)) {
            return Err(invalid("headers", format!("`{name}` is set by Herald")));
        }
        if !is_header_name(name) {
            return Err(invalid("headers", format!("`{name}` is not a valid header name")));
        }
        if !is_header_value(value) {
            return Err(invalid(
                "headers",
                format!("the value of `{name}` is not a valid header value"),
            ));
        }
    }
    let limits = webhook.limits();
    if limits.max_in_flight == Some(0) {
        return Err(invalid("limits", "`max_in_flight` must be at least 1"));
    }
    if let Some(statuses) = &limits.final_statuses {
        if statuses.len() > 64 {
            return Err(invalid("limits", "`final_statuses` may list at most 64 statuses"));
        }
        if let Some(s) = statuses.iter().find(|s| !(300..=599).contains(*s)) {
            return Err(invalid(
                "limits",
                format!("`final_statuses`: {s} is not a failure status (300 to 599)"),
            ));
        }
    }
    if limits.timeout_ms == Some(0) {
        return Err(invalid("limits", "`timeout_ms` must be at least 1"));
    }
    if let Some(rate) = &limits.rate {
        rate.check().map_err(|m| invalid("limits", format!("`rate`: {m}")))?;
    }
    if let Some((certificate, key)) = webhook.tls_client() {
        check_tls_client(certificate, key)?;
    }
    Ok(())
}

impl Webhook {
    /// Who set the current status, for deciding who may change it back:
    /// none while active; an operator's when the document does not say (it
    /// was written before Herald recorded it, or by another writer).
    pub fn status_set_by(&self) -> Option<StatusBy> {
        match self.status {
            WebhookStatus::Active => None,
            _ => Some(self.status_by.unwrap_or(StatusBy::Operator)),
        }
    }

    /// Replaces the signing secret with `new`: every current secret keeps
    /// signing until `expires_at`; previous secrets already expired, and the
    /// oldest beyond the limit, are dropped.
    pub fn rotate_secret(&mut self, new: String, expires_at: OffsetDateTime, now: OffsetDateTime) {
        let retired = std::mem::replace(&mut self.secrets, vec![new]);
        let mut previous: Vec<ExpiringSecret> = retired
            .into_iter()
            .map(|secret| ExpiringSecret { secret, expires_at })
            .collect();
        previous.extend(self.previous_secrets.drain(..).filter(|p| p.expires_at > now));
        previous.truncate(MAX_SECRETS);
        self.previous_secrets = previous;
    }
}

/// A `uid` as written by Herald: a string. Anything else another writer put
/// in a field of that name is not Herald's, and reads as none.
fn lenient_uid<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::String(uid) => Some(uid),
        _ => None,
    })
}

/// A `status_by` as [`StatusBy::parse`] reads it; a value that is not a
/// string reads as none, which on a paused or disabled webhook counts as an
/// operator's (see [`Webhook::status_set_by`]).
fn lenient_status_by<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<StatusBy>, D::Error> {
    Ok(match serde_json::Value::deserialize(deserializer)? {
        serde_json::Value::String(by) => Some(StatusBy::parse(&by)),
        _ => None,
    })
}

/// A `uid`: 1 to [`MAX_UID_LEN`] letters, digits, `_`, `-` or `.`.
pub fn validate_uid(uid: &str) -> Result<(), String> {
    if uid.is_empty() || uid.len() > MAX_UID_LEN {
        return Err(format!("must be 1 to {MAX_UID_LEN} characters"));
    }
    if !uid.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b)) {
        return Err("may only contain letters, digits, `_`, `-` and `.`".into());
    }
    Ok(())
}

/// The id of the webhook of `tenant` (none: the webhooks of no tenant) named
/// `uid`: `wh_u` and the first 32 hex digits of SHA-256 of the tenant, a
/// newline and the uid. Ids of webhooks created with a uid are therefore
/// namespaced by tenant: two tenants' equal uids never name the same id, and
/// neither tenant can find out about the other's.
pub fn uid_id(tenant: Option<&str>, uid: &str) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(tenant.unwrap_or("").as_bytes());
    hash.update(b"\n");
    hash.update(uid.as_bytes());
    let digest = hash.finalize();
    format!("{UID_ID_PREFIX}{}", hex::encode(&digest[..16]))
}

/// Whether `secret` is a `whsec_` secret [`decode_secret`] accepts, with
/// its message when not; decoded on the stack, since documents are checked
/// by the million.
fn check_secret(secret: &str) -> Result<(), SecretError> {
    let mut key = [0u8; 96];
    match secret.strip_prefix(SECRET_PREFIX) {
        Some(encoded) if encoded.len() <= 128 => {
            match base64::engine::general_purpose::STANDARD.decode_slice(encoded, &mut key) {
                Ok(len) if SECRET_BYTES.contains(&len) => Ok(()),
                _ => decode_secret(secret).map(drop),
            }
        }
        _ => decode_secret(secret).map(drop),
    }
}

/// Whether `name` is a header name (an RFC 9110 token), as
/// `http::HeaderName::from_bytes` accepts it.
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 1 << 16
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether `value` is a header value, as `http::HeaderValue::from_str`
/// accepts it: no control characters but tab.
fn is_header_value(value: &str) -> bool {
    value.bytes().all(|b| (b >= 32 && b != 127) || b == b'\t')
}

/// Why a secret is refused; the message names the problem, never the
/// secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("a secret must start with `whsec_`")]
    Prefix,
    #[error("a secret is not valid base64 after its prefix")]
    Base64,
    #[error("a secret must decode to 24 to 64 bytes")]
    Length,
}

/// The key bytes of a `whsec_...` secret.
pub fn decode_secret(secret: &str) -> Result<Vec<u8>, SecretError> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).ok_or(SecretError::Prefix)?;
    let key = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| SecretError::Base64)?;
    if !SECRET_BYTES.contains(&key.len()) {
        return Err(SecretError::Length);
    }
    Ok(key)
}

/// A new random secret, `whsec_` + base64 of 32 random bytes.
pub fn generate_secret() -> String {
    let key: [u8; 32] = rand::random();
    format!(
        "{SECRET_PREFIX}{}",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn webhook(id: &str, url: &str, events: &[&str]) -> Webhook {
        Webhook::new(id, &format!("{id} name"), url, events)
    }

    /// A self-signed client certificate for `name`, and its key.
    pub fn tls_client(name: &str) -> TlsClient {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let certificate = params.self_signed(&key).unwrap();
        TlsClient {
            certificate: certificate.pem(),
            key: key.serialize_pem(),
        }
    }

    #[test]
    fn a_client_certificate_is_checked_as_delivery_uses_it_and_refusals_name_the_field() {
        let mut w = webhook("wh", "https://example.com/", &["a"]);
        let good = tls_client("billing client");
        w.tls_client = Some(good.clone());
        w.validate().unwrap();
        let json = serde_json::to_string(&w).unwrap();
        assert_eq!(serde_json::from_str::<Webhook>(&json).unwrap(), w);
        // What is accepted builds the client configuration delivery builds.
        let config = good.present(tls_builder().unwrap());
        assert!(config.is_ok(), "{:?}", config.err());

        let other = tls_client("another client");
        let refused = |certificate: &str, key: &str| {
            let e = check_tls_client(certificate, key).unwrap_err();
            if let Some(line) = key.lines().nth(1) {
                assert!(!e.message.contains(line), "the key is never echoed: {e}");
            }
            (e.field, e.message)
        };
        let (field, message) = refused(&good.certificate, &other.key);
        assert_eq!(field, "tls_client.key");
        assert!(message.contains("certificate"), "{message}");
        assert_eq!(refused("not pem", &good.key).0, "tls_client.certificate");
        assert_eq!(refused("", &good.key).0, "tls_client.certificate");
        assert_eq!(
            refused(&good.key, &good.key).0,
            "tls_client.certificate",
            "a key is not a certificate"
        );
        let both = format!("{}{}", good.certificate, good.key);
        assert_eq!(refused(&both, &good.key).0, "tls_client.certificate");
        assert_eq!(refused(&good.certificate, "").0, "tls_client.key");
        assert_eq!(refused(&good.certificate, &good.certificate).0, "tls_client.key");
        let two_keys = format!("{}{}", good.key, other.key);
        assert_eq!(refused(&good.certificate, &two_keys).0, "tls_client.key");
        let broken = good.key.replacen("MI", "!!", 1);
        assert_eq!(refused(&good.certificate, &broken).0, "tls_client.key");
        let long = format!("{}{}", good.certificate, " ".repeat(MAX_TLS_CLIENT_PEM));
        assert_eq!(refused(&long, &good.key).0, "tls_client.certificate");
        let chain = good.certificate.repeat(MAX_TLS_CLIENT_CHAIN + 1);
        assert_eq!(refused(&chain, &good.key).0, "tls_client.certificate");
        // Through the document's check, as every reader runs it.
        w.tls_client = Some(TlsClient {
            certificate: good.certificate.clone(),
            key: other.key.clone(),
        });
        assert_eq!(w.validate().unwrap_err().field, "tls_client.key");
    }

    #[test]
    fn debug_output_never_holds_the_client_key() {
        let mut w = webhook("wh", "https://example.com/", &["a"]);
        let tls = tls_client("c");
        w.tls_client = Some(tls.clone());
        let debug = format!("{w:?}");
        let body = tls.key.lines().nth(1).unwrap();
        assert!(!debug.contains(body), "{debug}");
        let fingerprint = certificate_fingerprint(&tls.certificate).unwrap();
        assert_eq!(fingerprint.len(), 64);
        assert!(debug.contains(&fingerprint), "{debug}");
    }

    #[test]
    fn who_set_a_status_reads_leniently_and_fails_closed() {
        let doc = |extra: &str| {
            format!(
                r#"{{"id":"a","name":"n","url":"http://x.test/","events":["*"],"secrets":[],
                "created_at":"2025-01-01T00:00:00Z","updated_at":"2025-01-01T00:00:00Z",{extra}}}"#
            )
        };
        let read = |extra: &str| serde_json::from_str::<Webhook>(&doc(extra)).unwrap();
        let by = |extra: &str| read(extra).status_set_by();
        assert_eq!(
            by(r#""status":"active","status_by":"tenant""#),
            None,
            "active: nobody's"
        );
        assert_eq!(by(r#""status":"paused","status_by":"tenant""#), Some(StatusBy::Tenant));
        assert_eq!(
            by(r#""status":"disabled","status_by":"herald""#),
            Some(StatusBy::Herald)
        );
        assert_eq!(
            by(r#""status":"disabled","status_by":"operator""#),
            Some(StatusBy::Operator)
        );
        // Anything else, or nothing, is an operator's.
        assert_eq!(
            by(r#""status":"disabled","status_by":"abuse desk""#),
            Some(StatusBy::Operator)
        );
        assert_eq!(by(r#""status":"disabled","status_by":7"#), Some(StatusBy::Operator));
        assert_eq!(by(r#""status":"paused""#), Some(StatusBy::Operator));
        // Written back as read.
        let w = read(r#""status":"paused","status_by":"tenant""#);
        assert_eq!(serde_json::to_value(&w).unwrap()["status_by"], "tenant");
    }

    #[test]
    fn a_valid_webhook_round_trips_through_json() {
        let mut w = webhook("wh_1", "https://example.com/hook", &["tour.*", "USER_CREATED", "*"]);
        w.headers.insert("x-api-key".into(), "k".into());
        w.limits.max_in_flight = Some(4);
        w.filter = Some(Filter::parse_named(r#"{"/data/plan":{"in":["pro","team"]},"/amount":{">":100}}"#).unwrap());
        w.validate().unwrap();
        let json = serde_json::to_string(&w).unwrap();
        assert!(
            json.contains(r#""filter":{"/data/plan":{"in":["pro","team"]},"/amount":{">":100}}"#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<Webhook>(&json).unwrap(), w);
    }

    #[test]
    fn a_rate_outside_its_bounds_is_refused_naming_it() {
        let with = |per_second: f64, burst: Option<u32>| {
            let mut w = webhook("wh_1", "https://example.com/hook", &["*"]);
            w.limits.rate = Some(RateLimit { per_second, burst });
            w.validate().map_err(|e| format!("{}: {}", e.field, e.message))
        };
        assert_eq!(with(0.0167, None), Ok(()), "about one a minute");
        assert_eq!(with(RateLimit::MIN_PER_SECOND, Some(1)), Ok(()));
        assert_eq!(with(RateLimit::MAX_PER_SECOND, Some(RateLimit::MAX_BURST)), Ok(()));
        for (per_second, burst) in [
            (0.0, None),
            (-1.0, None),
            (f64::NAN, None),
            (f64::INFINITY, None),
            (RateLimit::MIN_PER_SECOND / 2.0, None),
            (100_001.0, None),
            (5.0, Some(0)),
            (5.0, Some(RateLimit::MAX_BURST + 1)),
        ] {
            let e = with(per_second, burst).unwrap_err();
            assert!(e.starts_with("limits: `rate`: "), "{per_second} {burst:?}: {e}");
        }
    }

    #[test]
    fn unknown_fields_from_other_writers_are_accepted() {
        let json = r#"{"id":"a","name":"n","url":"http://x.test/","events":["*"],"status":"paused",
            "secrets":["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"],"created_at":"2025-01-01T00:00:00Z",
            "updated_at":"2025-01-01T00:00:00Z","owner_team":"billing"}"#;
        let w: Webhook = serde_json::from_str(json).unwrap();
        assert_eq!(w.status, WebhookStatus::Paused);
        w.validate().unwrap();
    }

    #[test]
    fn a_uid_of_another_writers_shape_is_ignored_and_a_string_kept() {
        let doc = |uid: &str| {
            format!(
                r#"{{"id":"a","uid":{uid},"name":"n","url":"http://x.test/","events":["*"],"status":"active",
                "secrets":["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"],"created_at":"2025-01-01T00:00:00Z",
                "updated_at":"2025-01-01T00:00:00Z"}}"#
            )
        };
        let read = |uid: &str| serde_json::from_str::<Webhook>(&doc(uid)).unwrap().uid;
        assert_eq!(read(r#"{"team":7}"#), None);
        assert_eq!(read("42"), None);
        assert_eq!(read("null"), None);
        assert_eq!(read(r#""orders""#).as_deref(), Some("orders"));
    }

    #[test]
    fn uid_ids_are_namespaced_by_tenant() {
        let acme = uid_id(Some("acme"), "orders");
        assert!(acme.starts_with(UID_ID_PREFIX) && acme.len() == UID_ID_PREFIX.len() + 32);
        assert_eq!(acme, uid_id(Some("acme"), "orders"), "stable");
        assert_ne!(acme, uid_id(Some("globex"), "orders"));
        assert_ne!(acme, uid_id(None, "orders"));
        // The separator keeps the tenant and the uid apart.
        assert_ne!(uid_id(Some("a"), "b.c"), uid_id(Some("a.b"), "c"));
        let mut w = webhook(&acme, "https://example.com/", &["*"]);
        w.uid = Some("orders".into());
        w.validate().unwrap();
        assert!(validate_uid("orders-2025.v1_a").is_ok());
        assert!(validate_uid("").is_err());
        assert!(validate_uid("a:b").is_err());
        assert!(validate_uid(&"a".repeat(MAX_UID_LEN + 1)).is_err());
    }

    #[test]
    fn invalid_fields_are_named() {
        let base = webhook("wh", "https://example.com/", &["a"]);
        let field = |f: &dyn Fn(&mut Webhook)| {
            let mut w = base.clone();
            f(&mut w);
            w.validate().unwrap_err().field
        };
        assert_eq!(field(&|w| w.id = "has space".into()), "id");
        assert_eq!(field(&|w| w.url = "ftp://x/".into()), "url");
        assert_eq!(field(&|w| w.url = "https://u:p@x/".into()), "url");
        assert_eq!(
            field(&|w| w.url = format!("https://x.test/{}", "a".repeat(70_000))),
            "url",
            "longer than a request can name"
        );
        assert_eq!(field(&|w| w.events = vec![]), "events");
        assert_eq!(field(&|w| w.events = vec!["a*b".into()]), "events");
        assert_eq!(field(&|w| w.secrets = vec![]), "secrets");
        assert_eq!(field(&|w| w.secrets = vec!["nope".into()]), "secrets");
        assert_eq!(field(&|w| w.secrets = vec!["whsec_c2hvcnQ=".into()]), "secrets");
        assert_eq!(
            field(&|w| {
                w.headers.insert("webhook-id".into(), "x".into());
            }),
            "headers"
        );
        assert_eq!(
            field(&|w| {
                w.headers.insert("x".into(), "bad\nvalue".into());
            }),
            "headers"
        );
        assert_eq!(field(&|w| w.limits.max_in_flight = Some(0)), "limits");
    }

    #[test]
    fn header_rules_are_those_of_the_http_crate() {
        use reqwest::header::{HeaderName, HeaderValue};
        for b in 0..=255u8 {
            let one = [b];
            let Ok(s) = std::str::from_utf8(&one) else { continue };
            assert_eq!(is_header_name(s), HeaderName::from_bytes(&one).is_ok(), "name byte {b}");
            assert_eq!(is_header_value(s), HeaderValue::from_str(s).is_ok(), "value byte {b}");
            let inside = format!("a{s}b");
            assert_eq!(
                is_header_value(&inside),
                HeaderValue::from_str(&inside).is_ok(),
                "value byte {b}"
            );
        }
        for s in ["", "x-api-key", "X-Api-Key", "a b", "é", "key:"] {
            assert_eq!(is_header_name(s), HeaderName::from_bytes(s.as_bytes()).is_ok(), "{s:?}");
        }
        for s in ["", "é", "k_live_123", "a\tb", "a\u{7f}"] {
            assert_eq!(is_header_value(s), HeaderValue::from_str(s).is_ok(), "{s:?}");
        }
        let long = "a".repeat(1 << 16);
        assert_eq!(is_header_name(&long), HeaderName::from_bytes(long.as_bytes()).is_ok());
    }

    #[test]
    fn secrets_are_checked_as_decode_secret_reads_them() {
        let key = |n: usize| {
            format!(
                "{SECRET_PREFIX}{}",
                base64::engine::general_purpose::STANDARD.encode(vec![7u8; n])
            )
        };
        for secret in [
            key(23),
            key(24),
            key(32),
            key(64),
            key(65),
            key(200),
            "whsec_".into(),
            "whsec_!!!!".into(),
            "nope".into(),
            format!("{}=", key(32)),
            format!("whsec_{}", "A".repeat(129)),
        ] {
            assert_eq!(check_secret(&secret), decode_secret(&secret).map(drop), "{secret}");
        }
    }

    #[test]
    fn rotation_keeps_the_old_secret_until_expiry_and_forgets_expired_ones() {
        let mut w = webhook("wh", "https://example.com/", &["a"]);
        let first = w.secrets[0].clone();
        let now = OffsetDateTime::now_utc();
        let day = time::Duration::days(1);
        w.previous_secrets.push(ExpiringSecret {
            secret: generate_secret(),
            expires_at: now - day,
        });
        let second = generate_secret();
        w.rotate_secret(second.clone(), now + day, now);
        assert_eq!(w.secrets, vec![second]);
        assert_eq!(
            w.previous_secrets,
            vec![ExpiringSecret {
                secret: first,
                expires_at: now + day
            }]
        );
        w.validate().unwrap();
        let json = serde_json::to_string(&w).unwrap();
        assert_eq!(serde_json::from_str::<Webhook>(&json).unwrap(), w);
    }

    #[test]
    fn debug_output_redacts_secrets_and_header_values() {
        let mut w = webhook("wh", "https://example.com/", &["a"]);
        w.headers.insert("x-api-key".into(), "super-secret-key".into());
        let old = w.secrets[0].clone();
        let now = OffsetDateTime::now_utc();
        w.rotate_secret(generate_secret(), now, now);
        let debug = format!("{w:?}");
        assert!(!debug.contains(&w.secrets[0]), "{debug}");
        assert!(!debug.contains(&old), "{debug}");
        assert!(!debug.contains("super-secret-key"), "{debug}");
        assert!(debug.contains("x-api-key"));
    }
}

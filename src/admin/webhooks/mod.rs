//! `/v1/webhooks`: what the webhook routes share (the webhook as the API
//! shows and takes it, the lookups and checks every route makes), and the
//! routes by resource: [`crud`] (create, list, read, change, delete),
//! [`status`] (pause, resume) and [`secrets`] (read, rotate).

pub mod crud;
pub mod secrets;
pub mod status;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::admin::auth::Caller;
use crate::admin::extract::present;
use crate::admin::problem::Problem;
use crate::admin::AdminState;
use crate::config::catalog::Catalog;
use crate::routing::filter::Filter;
use crate::routing::ordering::Ordering;
use crate::subscriptions::store::{StoreError, UpdateError};
use crate::webhook::{
    certificate_fingerprint, uid_id, validate_uid, Limits, RateLimit, StatusBy, TlsClient, Webhook, WebhookStatus,
};

/// Longest webhook name.
pub const MAX_NAME_LEN: usize = 256;
/// Longest value of a custom header.
pub const MAX_HEADER_VALUE_LEN: usize = 4096;
/// Longest URL.
pub const MAX_URL_LEN: usize = 2048;

/// A webhook as the API shows it: everything but the secrets.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct WebhookView {
    pub id: String,
    /// The tenant whose events it receives; none receives every tenant's.
    pub tenant: Option<String>,
    /// The name its tenant chose for it at creation, unique within the
    /// tenant; a tenant token may use it in place of the id in paths.
    pub uid: Option<String>,
    pub name: String,
    pub url: String,
    /// Event type patterns: exact (`tour.completed`), prefix (`tour.*`) or `*`.
    pub events: Vec<String>,
    pub status: WebhookStatus,
    /// Why the status is what it is, e.g. why Herald disabled it.
    pub status_reason: Option<String>,
    /// When the status last changed, if known.
    #[serde(with = "time::serde::rfc3339::option")]
    pub status_changed_at: Option<OffsetDateTime>,
    /// Who paused or disabled it (none while active): `herald` and `tenant`
    /// the tenant may resume, `operator` only an admin token.
    pub status_by: Option<StatusBy>,
    /// Extra request headers (e.g. an API key) by name. Their values are
    /// write-only: each is shown as `null`, and a change that gives `null`
    /// for a header keeps its stored value.
    #[schema(inline)]
    pub headers: BTreeMap<String, Withheld>,
    pub limits: Limits,
    /// Its payload filter: only events whose body passes it are delivered
    /// (none: every event of its types).
    pub filter: Option<Filter>,
    /// The client certificate Herald presents to a receiver that asks for
    /// one (mutual TLS); none presents no certificate. Its key is never
    /// shown.
    pub tls_client: Option<TlsClientView>,
    /// Ordered delivery: deliveries of events with the same key (`"key"`:
    /// the Kafka record key; `{"key": "/pointer"}`: the value at a JSON
    /// pointer into the body) reach it one at a time, in their source
    /// partition's order, retries included. None: delivered as they come.
    pub ordering: Option<Ordering>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// A header value as the API shows it: never, as `null`. Header values are
/// usually credentials (an API key the receiver checks); whoever holds a
/// token of the tenant sets and replaces them, and has no need to read them
/// back, so a leaked token or a read-only screen cannot show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Withheld;

impl utoipa::PartialSchema for Withheld {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::Null)
            .description(Some("The value, withheld: header values are write-only."))
            .into()
    }
}

impl ToSchema for Withheld {}

/// A webhook's client certificate as the API shows it: the chain, which
/// is public (its subject and expiry read with `openssl x509 -noout
/// -subject -enddate`), and the first certificate's fingerprint; never the
/// private key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct TlsClientView {
    /// The certificate chain, PEM, as it was given.
    pub certificate: String,
    /// SHA-256 of the first certificate (its DER), lower-case hex: what
    /// `openssl x509 -noout -fingerprint -sha256` shows, without colons.
    pub sha256: Option<String>,
    /// The private key, withheld: always `null`. It is write-only, as
    /// signing secrets are outside their own endpoints.
    #[schema(inline)]
    pub key: Withheld,
}

impl From<&TlsClient> for TlsClientView {
    fn from(t: &TlsClient) -> TlsClientView {
        TlsClientView {
            certificate: t.certificate.clone(),
            sha256: certificate_fingerprint(&t.certificate),
            key: Withheld,
        }
    }
}

/// A client certificate and its key, as a create or a change gives them.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsClientInput {
    /// The client certificate first, then any intermediates the receiver
    /// needs, PEM (`-----BEGIN CERTIFICATE-----`); up to 8 certificates.
    #[schema(max_length = 16384)]
    pub certificate: String,
    /// The certificate's private key, PEM and unencrypted (`PRIVATE KEY`,
    /// `RSA PRIVATE KEY` or `EC PRIVATE KEY`). Write-only: never shown.
    #[schema(max_length = 16384)]
    pub key: String,
}

impl From<TlsClientInput> for TlsClient {
    fn from(t: TlsClientInput) -> TlsClient {
        TlsClient {
            certificate: t.certificate,
            key: t.key,
        }
    }
}

impl From<&Webhook> for WebhookView {
    fn from(w: &Webhook) -> Self {
        WebhookView {
            id: w.id.clone(),
            tenant: w.tenant.clone(),
            uid: w.uid.clone(),
            name: w.name.clone(),
            url: w.url.clone(),
            events: w.events.clone(),
            status: w.status,
            status_reason: w.status_reason.clone(),
            status_changed_at: w.status_changed_at,
            status_by: w.status_set_by(),
            headers: w.headers.keys().map(|name| (name.clone(), Withheld)).collect(),
            limits: w.limits.clone(),
            filter: w.filter.clone(),
            tls_client: w.tls_client.as_ref().map(TlsClientView::from),
            ordering: w.ordering.clone(),
            created_at: w.created_at,
            updated_at: w.updated_at,
        }
    }
}

/// A new webhook.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Admin tokens only: its id (letters, digits, `_-.:`, up to 128, not
    /// beginning `wh_u`); generated when absent. Ids are one namespace across
    /// tenants, so a tenant token never chooses one (422): it names its
    /// webhooks with `uid`.
    #[serde(default)]
    #[schema(pattern = r"^[A-Za-z0-9_.:-]{1,128}$")]
    pub id: Option<String>,
    /// A name of the caller's choosing (letters, digits, `_-.`, up to 128),
    /// unique within the webhook's tenant: creating a uid the tenant already
    /// uses answers 409, so a retried request is safe, and another tenant's
    /// uids are never in the way. A tenant token may use it in place of the
    /// id in every path.
    #[serde(default)]
    #[schema(pattern = r"^[A-Za-z0-9_.-]{1,128}$")]
    pub uid: Option<String>,
    /// Whose events it receives. A tenant token may only name its own tenant
    /// (and gets it when this is absent).
    #[serde(default)]
    #[schema(min_length = 1, max_length = 128)]
    pub tenant: Option<String>,
    #[schema(min_length = 1, max_length = 256)]
    pub name: String,
    /// `https://` (or `http://`) endpoint; private, loopback and link-local
    /// destinations are refused unless `delivery.allow_cidrs` permits them.
    #[schema(min_length = 1, max_length = 2048)]
    pub url: String,
    /// Event type patterns; with a catalog bound to the tenant, each must
    /// match at least one of its event types.
    #[schema(min_items = 1, max_items = 256)]
    pub events: Vec<String>,
    /// Extra request headers (e.g. `{"x-api-key": "..."}`). Their values
    /// are write-only: the webhook as read shows each name with `null`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The signing secret (`whsec_` + base64 of 24 to 64 bytes); generated
    /// when absent. Read it back with `GET /v1/webhooks/{id}/secret`.
    #[serde(default)]
    #[schema(pattern = "^whsec_[A-Za-z0-9+/]{32,88}={0,2}$")]
    pub secret: Option<String>,
    #[serde(default)]
    pub limits: LimitsInput,
    /// Delivers only the events whose body passes it, e.g.
    /// `{"/data/plan": {"in": ["pro", "team"]}, "/amount": {">": 100}}`;
    /// none (or `null`) delivers every event of its types. A filter that
    /// is not valid answers 422 naming where (`filter./amount.>`).
    #[serde(default)]
    pub filter: Option<Filter>,
    /// A client certificate and its key, presented to a receiver that
    /// requires one (mutual TLS). The key is write-only. A pair TLS cannot
    /// use (not PEM, a key that is not the certificate's) answers 422
    /// naming `tls_client.certificate` or `tls_client.key`.
    #[serde(default)]
    pub tls_client: Option<TlsClientInput>,
    /// Ordered delivery: `"key"` delivers the events with the same Kafka
    /// record key one at a time, in their partition's order, retries
    /// included; `{"key": "/data/customer_id"}` does so for the events with
    /// the same value at that JSON pointer into the body. None (or `null`):
    /// delivered as they come. Anything else answers 422 naming `ordering`.
    #[serde(default)]
    pub ordering: Option<Ordering>,
}

/// Changes to a webhook: the fields present replace the current ones.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    #[serde(default)]
    #[schema(min_length = 1, max_length = 256)]
    pub name: Option<String>,
    #[serde(default)]
    #[schema(min_length = 1, max_length = 2048)]
    pub url: Option<String>,
    #[serde(default)]
    #[schema(min_items = 1, max_items = 256)]
    pub events: Option<Vec<String>>,
    /// The headers from now on: each named header with the value given, or
    /// with its stored value when the value is `null` (values are never
    /// read back, so a webhook read and written back keeps them); a header
    /// not named is removed.
    #[serde(default)]
    pub headers: Option<BTreeMap<String, Option<String>>>,
    #[serde(default)]
    pub limits: Option<LimitsInput>,
    /// A new payload filter; `null` removes it (every event of its types
    /// is delivered again).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Filter>)]
    pub filter: Option<Option<Filter>>,
    /// A new client certificate and key (both, replacing the stored pair);
    /// `null` removes them (no certificate is presented any more).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<TlsClientInput>)]
    pub tls_client: Option<Option<TlsClientInput>>,
    /// A new ordering (`"key"` or `{"key": "/json/pointer"}`); `null`
    /// removes it (deliveries go as they come again).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Ordering>)]
    pub ordering: Option<Option<Ordering>>,
}

impl UpdateWebhook {
    /// `current` with this change applied: the fields present replace
    /// theirs (`null` removes an optional one), the others are kept. Not
    /// yet checked as a whole.
    pub(crate) fn apply(&self, current: &Webhook) -> Result<Webhook, Problem> {
        let mut next = current.clone();
        if let Some(name) = &self.name {
            next.name = name.clone();
        }
        if let Some(url) = &self.url {
            next.url = url.clone();
        }
        if let Some(events) = &self.events {
            next.events = events.clone();
        }
        if let Some(headers) = &self.headers {
            next.headers = headers_after(&current.headers, headers)?;
        }
        if let Some(limits) = &self.limits {
            next.limits = limits.clone().into();
        }
        if let Some(filter) = &self.filter {
            next.filter.clone_from(filter);
        }
        if let Some(tls_client) = &self.tls_client {
            next.tls_client = tls_client.clone().map(Into::into);
        }
        if let Some(ordering) = &self.ordering {
            next.ordering.clone_from(ordering);
        }
        Ok(next)
    }
}

/// The headers a change asks for, over the `stored` ones: a value sets or
/// replaces a header; `null` keeps the value stored under that name (names
/// compared as HTTP does, without case), and is refused for a header that
/// has none; a header not named is removed.
pub(crate) fn headers_after(
    stored: &BTreeMap<String, String>,
    asked: &BTreeMap<String, Option<String>>,
) -> Result<BTreeMap<String, String>, Problem> {
    asked
        .iter()
        .map(|(name, value)| {
            let value = match value {
                Some(value) => value.clone(),
                None => stored
                    .get(name)
                    .or_else(|| {
                        stored
                            .iter()
                            .find(|(stored, _)| stored.eq_ignore_ascii_case(name))
                            .map(|(_, v)| v)
                    })
                    .cloned()
                    .ok_or_else(|| {
                        Problem::invalid(
                            "headers",
                            format!("`{name}` has no stored value to keep (`null`): give its value"),
                        )
                    })?,
            };
            Ok((name.clone(), value))
        })
        .collect()
}

/// Per-endpoint limits; each may only tighten the global setting.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsInput {
    /// Concurrent requests to this endpoint.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub max_in_flight: Option<usize>,
    /// Request deadline for this endpoint, in milliseconds.
    #[serde(default)]
    #[schema(minimum = 1)]
    pub timeout_ms: Option<u64>,
    /// HTTP statuses (300 to 599) that end a delivery at once (dead-lettered
    /// as `final_status`) instead of being retried; replaces the deployment's
    /// `retry.final_statuses` for this webhook. 410 Gone is always final.
    #[serde(default)]
    #[schema(max_items = 64)]
    pub final_statuses: Option<Vec<FailureStatus>>,
    /// At most `per_second` requests a second (fractional allowed) with
    /// `burst` at once, for the webhook as a whole however many replicas
    /// deliver; replaces the deployment's `delivery.default_rate`.
    #[serde(default)]
    pub rate: Option<RateLimit>,
}

/// An HTTP status that is a failure: 300 to 599.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(transparent)]
#[schema(minimum = 300, maximum = 599)]
pub struct FailureStatus(pub u16);

impl From<LimitsInput> for Limits {
    fn from(l: LimitsInput) -> Limits {
        Limits {
            max_in_flight: l.max_in_flight,
            timeout_ms: l.timeout_ms,
            final_statuses: l
                .final_statuses
                .map(|statuses| statuses.into_iter().map(|s| s.0).collect()),
            rate: l.rate,
        }
    }
}

pub(crate) fn store_error(e: StoreError) -> Problem {
    match e {
        StoreError::Invalid(invalid) => Problem::invalid(invalid.field, invalid.message),
        other => Problem::unavailable("subscription store", &other),
    }
}

/// The webhook a path names, if the caller may see it; 404 otherwise. A path
/// names a webhook by its id, or, for a tenant token, by a uid of its own
/// tenant. Either way another tenant's webhooks answer as missing ones do,
/// after the same lookups. Handlers go on with the webhook's id, never the
/// path's.
pub(crate) async fn load(state: &AdminState, caller: &Caller, id: &str) -> Result<Webhook, Problem> {
    // A malformed document cannot show whose it is: to a tenant token it is
    // as missing as any other tenant's (an operator sees the error).
    let get = |id: String| async move {
        match state.store().get(&id).await {
            Ok(found) => Ok(found),
            Err(StoreError::InvalidRecord { .. }) if caller.tenant.is_some() => Ok(None),
            Err(e) => Err(store_error(e)),
        }
    };
    if let Some(w) = get(id.to_owned()).await? {
        if caller.can_access(w.tenant.as_deref()) {
            return Ok(w);
        }
    }
    if let Some(tenant) = &caller.tenant {
        if validate_uid(id).is_ok() {
            let named = get(uid_id(Some(tenant), id)).await?;
            if let Some(w) = named {
                if caller.can_access(w.tenant.as_deref()) && w.uid.as_deref() == Some(id) {
                    return Ok(w);
                }
            }
        }
    }
    Err(Problem::not_found("webhook", id))
}

/// Applies `change` to the webhook `id` (which the caller must be allowed to
/// see) with a compare-and-set, so a concurrent change (another request, or
/// Herald disabling the webhook) is never overwritten. Returns the webhook
/// and whether it changed.
pub(crate) async fn change(
    state: &AdminState,
    caller: &Caller,
    id: &str,
    f: impl FnMut(&Webhook) -> Result<Option<Webhook>, Problem>,
) -> Result<(Webhook, bool), Problem> {
    let loaded = load(state, caller, id).await?;
    change_loaded(state, loaded, id, f).await
}

/// [`change`] of a webhook the caller has already loaded (and so may see).
pub(crate) async fn change_loaded(
    state: &AdminState,
    loaded: Webhook,
    id: &str,
    mut f: impl FnMut(&Webhook) -> Result<Option<Webhook>, Problem>,
) -> Result<(Webhook, bool), Problem> {
    let mut changed = false;
    let result = state
        .store()
        .update(&loaded.id, |current| {
            let next = f(current)?;
            changed = next.is_some();
            Ok(next)
        })
        .await;
    match result {
        Ok(Some(webhook)) => Ok((webhook, changed)),
        Ok(None) => Err(Problem::not_found("webhook", id)),
        Err(UpdateError::Rejected(problem)) => Err(problem),
        Err(UpdateError::Store(e)) => Err(store_error(e)),
    }
}

/// Checks what the API adds to the store's own validation: lengths, the
/// destination policy and the tenant's catalog (`catalog`: none allows any
/// event type).
fn check(state: &AdminState, webhook: &Webhook, catalog: Option<&Catalog>) -> Result<(), Problem> {
    if webhook.name.trim().is_empty() || webhook.name.chars().count() > MAX_NAME_LEN {
        return Err(Problem::invalid(
            "name",
            format!("must be 1 to {MAX_NAME_LEN} characters"),
        ));
    }
    if webhook.name.chars().any(char::is_control) {
        return Err(Problem::invalid("name", "must not contain control characters"));
    }
    if webhook.url.len() > MAX_URL_LEN {
        return Err(Problem::invalid("url", format!("must be at most {MAX_URL_LEN} bytes")));
    }
    for (name, value) in &webhook.headers {
        if value.len() > MAX_HEADER_VALUE_LEN {
            return Err(Problem::invalid(
                "headers",
                format!("the value of `{name}` is longer than {MAX_HEADER_VALUE_LEN} bytes"),
            ));
        }
    }
    webhook.validate().map_err(|e| Problem::invalid(e.field, e.message))?;
    check_destination(state, &webhook.url, webhook.tenant.as_deref())?;
    if let Some(catalog) = catalog {
        for pattern in &webhook.events {
            if !catalog.allows(pattern) {
                return Err(Problem::invalid(
                    "events",
                    format!("`{pattern}` matches no event type of the `{}` catalog", catalog.name),
                ));
            }
        }
    }
    Ok(())
}

/// Refuses destinations the SSRF policy would refuse at delivery time, where
/// that can be known without a DNS lookup: IP literals and `localhost`.
/// Names are checked again on every connection, on the addresses resolved.
fn check_destination(state: &AdminState, url: &str, tenant: Option<&str>) -> Result<(), Problem> {
    let url = url::Url::parse(url).map_err(|e| Problem::invalid("url", format!("is not a URL: {e}")))?;
    state
        .policy(tenant)
        .check_url(&url)
        .map_err(|blocked| Problem::invalid("url", blocked.to_string()))?;
    if let Some(url::Host::Domain(host)) = url.host() {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if host == "localhost" || host.ends_with(".localhost") {
            state
                .policy(tenant)
                .check(IpAddr::V4(Ipv4Addr::LOCALHOST))
                .map_err(|blocked| Problem::invalid("url", format!("`{host}` is loopback: {blocked}")))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::extract::parse_json;

    const CREATE: &str = r#""name":"n","url":"https://example.com/","events":["*"]"#;

    fn create(extra: &str) -> Result<CreateWebhook, Problem> {
        parse_json(format!("{{{CREATE}{extra}}}").as_bytes())
    }

    fn change(body: &str) -> Result<UpdateWebhook, Problem> {
        parse_json(body.as_bytes())
    }

    #[test]
    fn a_create_takes_an_ordering_in_either_form_and_none_without_one() {
        let by_customer = Ordering::parse(r#"{"key":"/data/customer"}"#).unwrap();
        assert_eq!(
            create(r#","ordering":"key""#).unwrap().ordering,
            Some(Ordering::RecordKey)
        );
        assert_eq!(
            create(r#","ordering":{"key":"/data/customer"}"#).unwrap().ordering,
            Some(by_customer)
        );
        assert_eq!(create(r#","ordering":null"#).unwrap().ordering, None);
        assert_eq!(create("").unwrap().ordering, None);
    }

    #[test]
    fn an_ordering_that_is_not_one_is_refused_with_422_naming_ordering() {
        for (ordering, expected) in [
            (r#""keys""#, "must be \"key\""),
            (r#""Key""#, "must be \"key\""),
            ("true", "must be \"key\""),
            ("{}", "must be \"key\""),
            (r#"{"key":"/a","other":1}"#, "must be \"key\""),
            (r#"{"pointer":"/a"}"#, "must be \"key\""),
            (r#"{"key":"data/customer"}"#, "key is not a JSON pointer"),
            (r#"{"key":""}"#, "must point into the body"),
            (r#"{"key":"/a~2"}"#, "`~` must be followed"),
        ] {
            for refused in [
                create(&format!(r#","ordering":{ordering}"#)).unwrap_err(),
                change(&format!(r#"{{"ordering":{ordering}}}"#)).unwrap_err(),
            ] {
                assert_eq!(refused.status, 422, "{ordering}: {refused:?}");
                assert_eq!(refused.errors.len(), 1, "{ordering}: {refused:?}");
                assert_eq!(refused.errors[0].field, "ordering", "{ordering}: {refused:?}");
                assert!(refused.errors[0].message.contains(expected), "{ordering}: {refused:?}");
            }
        }
    }

    #[test]
    fn a_change_sets_or_replaces_the_ordering_null_removes_it_and_absent_keeps_it() {
        let mut w = crate::webhook::tests::webhook("wh_1", "https://example.com/", &["*"]);
        w.filter = Some(Filter::parse_named(r#"{"/amount": {">": 100}}"#).unwrap());
        let apply = |w: &Webhook, body: &str| change(body).unwrap().apply(w).unwrap();

        let keyed = apply(&w, r#"{"ordering":"key"}"#);
        assert_eq!(keyed.ordering, Some(Ordering::RecordKey));
        assert_eq!(keyed.filter, w.filter, "the other fields are kept");
        keyed.validate().unwrap();

        let by_customer = apply(&keyed, r#"{"ordering":{"key":"/data/customer"}}"#);
        assert_eq!(
            by_customer.ordering,
            Some(Ordering::parse(r#"{"key":"/data/customer"}"#).unwrap())
        );

        let renamed = apply(&by_customer, r#"{"name":"renamed"}"#);
        assert_eq!(renamed.name, "renamed");
        assert_eq!(renamed.ordering, by_customer.ordering, "absent: kept");

        let unordered = apply(&renamed, r#"{"ordering":null}"#);
        assert_eq!(unordered.ordering, None, "null: removed");
        assert_eq!(unordered.filter, w.filter);
        assert_eq!(change("{}").unwrap().ordering, None);
        assert_eq!(change(r#"{"ordering":null}"#).unwrap().ordering, Some(None));
    }

    #[test]
    fn the_view_shows_the_ordering_as_the_document_holds_it() {
        let mut w = crate::webhook::tests::webhook("wh_1", "https://example.com/", &["*"]);
        let shown = |w: &Webhook| serde_json::to_value(WebhookView::from(w)).unwrap()["ordering"].clone();
        assert_eq!(shown(&w), serde_json::Value::Null);
        w.ordering = Some(Ordering::RecordKey);
        assert_eq!(shown(&w), serde_json::json!("key"));
        w.ordering = Some(Ordering::parse(r#"{"key":"/data/customer"}"#).unwrap());
        assert_eq!(shown(&w), serde_json::json!({"key": "/data/customer"}));
    }
}

//! A portal session: the link's token checked on every request (signature,
//! expiry, not revoked, and its claims exactly those the session was issued
//! with), what it may do, and the forms it sends (CSRF).

use super::*;

/// A verified portal session.
#[derive(Debug, Clone)]
pub struct Session {
    pub claims: Claims,
    /// Where its pages are: `/portal/s/{token}` (under `portal.public_url`'s path).
    pub base: String,
    /// The CSRF token its forms carry.
    pub csrf: String,
    /// The CSP `frame-ancestors` of its pages.
    pub(super) frame_ancestors: String,
}

impl Session {
    /// The API caller it acts as: its tenant, named after who made it.
    pub(super) fn caller(&self) -> Caller {
        Caller {
            name: format!("{} (portal)", self.claims.by),
            tenant: self.claims.ten.clone(),
            issued: None,
        }
    }

    /// Whether it may change anything.
    pub fn manages(&self) -> bool {
        self.claims.cap == Capability::Manage
    }

    /// `webhook` as this session shows it. A read-only session sees the URL
    /// as Herald shows it everywhere but the webhook's document: scheme,
    /// host and port, the path and query (often the credential itself, as
    /// in Slack's or Discord's URLs) withheld. A managing session changes
    /// the URL, so it sees it whole. Every page takes its webhooks from
    /// here, so list, page, forms and delivery log agree.
    pub(super) fn shown(&self, mut webhook: WebhookView) -> WebhookView {
        if !self.manages() {
            webhook.url = crate::delivery::redact_url_text(&webhook.url);
        }
        webhook
    }

    /// Whether it may see and change webhook `id`.
    pub(super) fn may_see(&self, id: &str) -> bool {
        self.claims.wh.as_deref().is_none_or(|only| only == id)
    }

    /// A path under the session, e.g. `webhooks/new`.
    pub fn path(&self, rest: &str) -> String {
        format!("{}/{rest}", self.base)
    }
}

pub(super) fn csrf_of(key: &[u8], sid: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(b"portal-csrf:");
    mac.update(sid.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

impl FromRequestParts<AdminState> for Session {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AdminState) -> Result<Self, Self::Rejection> {
        let invalid = || {
            PageError::new(
                StatusCode::UNAUTHORIZED,
                "This link no longer works",
                "It has expired or was revoked. Open the webhooks page again from the product that sent you here.",
            )
        };
        let config = state.config();
        if !config.portal.enabled() {
            return Err(PageError::new(StatusCode::NOT_FOUND, "Not found", "The portal is off."));
        }
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| invalid())?;
        let token = params
            .iter()
            .find(|(name, _)| *name == "token")
            .map(|(_, v)| v.to_owned())
            .ok_or_else(invalid)?;
        let key = config.portal.signing_key.as_bytes();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = portal_sessions::verify(key, &token, now).map_err(|_| invalid())?;
        let mut conn = state.redis();
        let stored: Option<String> = conn
            .get(portal_sessions::session_key(&config.redis.prefix, &claims.sid))
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "portal: cannot check a session");
                PageError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Try again in a minute",
                    "Webhooks cannot be read right now.",
                )
            })?;
        // Live, and issued exactly as the link claims: the signature alone
        // does not make a link what it says.
        let issued = stored.as_deref().and_then(portal_sessions::Stored::parse);
        if !issued.is_some_and(|s| s.matches(&claims)) {
            return Err(invalid());
        }
        // The tenant's own setting as it is now: a change through the API
        // holds from the next page on.
        let frame_ancestors = match &claims.ten {
            None => config.portal.frame_ancestors.join(" "),
            Some(t) => {
                let tenant = state.tenant(Some(t)).await.map_err(|p| {
                    tracing::warn!(problem = ?p.detail, "portal: cannot read a tenant's settings");
                    PageError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "Try again in a minute",
                        "Webhooks cannot be read right now.",
                    )
                })?;
                // Its tenant, created through the API, was deleted since (and
                // maybe created again, for someone else).
                if claims.inc.is_some() && portal_sessions::incarnation(&tenant) != claims.inc {
                    return Err(invalid());
                }
                // Stored settings are checked as they are read, as when
                // they were written: one that fails frames nowhere.
                match crate::config::portal::check_frame_ancestors(&tenant.frame_ancestors) {
                    Ok(()) => tenant.frame_ancestors.join(" "),
                    Err(why) => {
                        tracing::warn!(tenant = %t, %why, "portal: a stored frame_ancestors setting is invalid; framing refused");
                        "'none'".to_owned()
                    }
                }
            }
        };
        let prefix = url::Url::parse(&config.portal.public_url)
            .map(|u| u.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        Ok(Session {
            csrf: csrf_of(key, &claims.sid),
            base: format!("{prefix}/portal/s/{token}"),
            claims,
            frame_ancestors,
        })
    }
}

/// A submitted form: its fields, in order (a name may repeat).
pub(super) struct Form(Vec<(String, String)>);

impl Form {
    /// Parses `body`, and refuses it unless it carries `session`'s CSRF token.
    pub(super) fn checked(body: &Bytes, session: &Session) -> Result<Form, PageError> {
        let fields: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
        let presented = fields.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v.as_bytes());
        let expected = session.csrf.as_bytes();
        let same = presented.is_some_and(|p| {
            p.len() == expected.len() && p.iter().zip(expected).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
        });
        if !same {
            return Err(PageError::new(
                StatusCode::FORBIDDEN,
                "The form has expired",
                "Open the page again and resend the form.",
            )
            .with(session));
        }
        Ok(Form(fields))
    }

    pub(super) fn one(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub(super) fn all(&self, name: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Custom headers from the `header_name` / `header_value` rows; a row
    /// with an empty name is ignored.
    pub(super) fn headers(&self) -> Vec<(String, String)> {
        self.all("header_name")
            .into_iter()
            .zip(self.all("header_value"))
            .filter(|(name, _)| !name.trim().is_empty())
            .map(|(name, value)| (name.trim().to_owned(), value))
            .collect()
    }

    /// Event types: the ticked ones, and any typed in `events_text`.
    pub(super) fn events(&self) -> Vec<String> {
        let mut events = self.all("event");
        if let Some(text) = self.one("events_text") {
            events.extend(
                text.split([',', '\n'])
                    .map(str::trim)
                    .filter(|e| !e.is_empty())
                    .map(str::to_owned),
            );
        }
        events.dedup();
        events
    }
}

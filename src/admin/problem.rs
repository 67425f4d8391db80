//! Errors as `application/problem+json` (RFC 9457); the extractors whose
//! rejections are problems too are in [`crate::admin::extract`].

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

/// A problem detail (RFC 9457).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong in this request.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The fields at fault, for validation problems.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    /// A 429's `Retry-After` in seconds, when the limit says (else 30).
    #[serde(skip)]
    pub retry_after: Option<u64>,
}

/// One field at fault.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldError {
    /// The field's name (a path such as `limits.timeout_ms` for nested ones).
    pub field: String,
    pub message: String,
}

const TYPE_BASE: &str = "https://herald.dev/problems/";

/// `Retry-After` of a 429: long work (a replay) is what is limited.
const RETRY_AFTER_SECONDS: &str = "30";

impl Problem {
    /// A problem of `kind` (the last segment of its `type` URI).
    pub fn new(status: StatusCode, kind: &str, title: &str, detail: impl Into<Option<String>>) -> Problem {
        Problem {
            kind: format!("{TYPE_BASE}{kind}"),
            title: title.into(),
            status: status.as_u16(),
            detail: detail.into(),
            errors: Vec::new(),
            retry_after: None,
        }
    }

    /// 401: no token, or one that is not configured.
    pub fn unauthorized() -> Problem {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "Missing or unknown bearer token",
            Some("send `Authorization: Bearer <token>` with a token from admin.tokens, or one issued to a tenant (POST /v1/tenants/{tenant}/tokens)".into()),
        )
    }

    /// 404 for the `what` called `id` (or another tenant's: the answer is the same).
    pub fn not_found(what: &str, id: &str) -> Problem {
        Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            Some(format!("no {what} `{id}`")),
        )
    }

    /// 404 for a path no route serves.
    pub fn route_not_found() -> Problem {
        Problem::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            Some("no such endpoint".into()),
        )
    }

    /// 405 for a method the route does not serve.
    pub fn method_not_allowed() -> Problem {
        Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method-not-allowed",
            "Method not allowed",
            None,
        )
    }

    /// A field is not acceptable (422).
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Problem {
        let (field, message) = (field.into(), message.into());
        let mut p = Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-field",
            "Invalid request",
            Some(format!("`{field}` {message}")),
        );
        p.errors.push(FieldError { field, message });
        p
    }

    /// 400 with `detail`: a request that cannot be read.
    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::BAD_REQUEST,
            "bad-request",
            "Bad request",
            Some(detail.into()),
        )
    }

    /// 409 with `detail`: the request conflicts with what is stored.
    pub fn conflict(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::CONFLICT, "conflict", "Conflict", Some(detail.into()))
    }

    /// A limit on concurrent work was reached; the response says when to
    /// try again (`Retry-After`).
    pub fn too_many(detail: impl Into<String>) -> Problem {
        Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too-many-requests",
            "Too many requests",
            Some(detail.into()),
        )
    }

    /// This problem with `Retry-After: seconds` (at least 1).
    pub fn retry_after(mut self, seconds: u64) -> Problem {
        self.retry_after = Some(seconds.max(1));
        self
    }

    /// A dependency (Redis, Kafka) failed; the message is logged, the client
    /// gets a generic one.
    pub fn unavailable(what: &str, error: &dyn std::fmt::Display) -> Problem {
        tracing::error!(error = %error, "admin API: {what} unavailable");
        Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Service unavailable",
            Some(format!("the {what} is unavailable; try again")),
        )
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).expect("a problem serialises");
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            let seconds = self
                .retry_after
                .map_or(RETRY_AFTER_SECONDS.to_owned(), |s| s.to_string());
            if let Ok(value) = HeaderValue::from_str(&seconds) {
                headers.insert(header::RETRY_AFTER, value);
            }
        }
        response
    }
}

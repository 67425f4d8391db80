//! The request extractors of the API (JSON bodies, query strings, paths)
//! whose rejections are [`Problem`]s, so every refusal names what was wrong
//! in the same `application/problem+json` shape as the handlers' own.

use axum::body::Bytes;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use serde::de::DeserializeOwned;

use crate::admin::problem::Problem;

/// A field of a change that is present: `Some(None)` when it is `null`
/// (`#[serde(default, deserialize_with = "present")]`), so that a change
/// tells "leave it" (absent) from "remove it" (`null`).
pub fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(d).map(Some)
}

/// `Json<T>` whose rejections are problems naming the field at fault.
pub struct ApiJson<T>(pub T);

fn is_json(content_type: Option<&HeaderValue>) -> bool {
    let Some(Ok(ct)) = content_type.map(|v| v.to_str()) else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Deserialises `bytes`, naming the path of the first field at fault.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = match serde_path_to_error::deserialize(&mut de) {
        Ok(v) => v,
        Err(e) => {
            let inner = e.inner();
            if inner.is_syntax() || inner.is_eof() {
                return Err(Problem::bad_request(format!("the body is not valid JSON: {inner}")));
            }
            let message = inner.to_string();
            let message = message.split(" at line ").next().unwrap_or(&message).to_owned();
            let path = e.path().to_string();
            let field = if path == "." {
                message
                    .strip_prefix("unknown field `")
                    .and_then(|m| m.split('`').next())
                    .unwrap_or("body")
                    .to_owned()
            } else {
                path
            };
            return Err(Problem::invalid(field, message));
        }
    };
    de.end()
        .map_err(|e| Problem::bad_request(format!("the body is not valid JSON: {e}")))?;
    Ok(value)
}

/// The body of a JSON request: checks the content type and the size limit.
async fn json_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, Problem> {
    if !is_json(req.headers().get(header::CONTENT_TYPE)) {
        return Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            "Unsupported media type",
            Some("send the body as `Content-Type: application/json`".into()),
        ));
    }
    match Bytes::from_request(req, state).await {
        Ok(b) => Ok(b),
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload-too-large",
            "Payload too large",
            Some("the body is larger than admin.max_body_bytes".into()),
        )),
        Err(rejection) => Err(Problem::bad_request(rejection.body_text())),
    }
}

/// Every request body of this API is an object (serde alone would also
/// build a struct from an array).
fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    match bytes.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => parse_json(bytes),
        Some(_) => Err(Problem::invalid("body", "must be a JSON object")),
        None => Err(Problem::bad_request("the body is empty")),
    }
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = json_body(req, state).await?;
        parse_object(&bytes).map(ApiJson)
    }
}

/// An optional JSON object body: no body, or `null`, is `None`.
pub struct OptionalJson<T>(pub Option<T>);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for OptionalJson<T> {
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let has_body = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .is_some_and(|l| l.as_bytes() != b"0")
            || req.headers().contains_key(header::TRANSFER_ENCODING);
        if !has_body {
            return Ok(OptionalJson(None));
        }
        let bytes = json_body(req, state).await?;
        if bytes.trim_ascii() == b"null" {
            return Ok(OptionalJson(None));
        }
        parse_object(&bytes).map(|v| OptionalJson(Some(v)))
    }
}

/// `Query<T>` whose rejections are problems.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(ApiQuery(value)),
            Err(QueryRejection::FailedToDeserializeQueryString(e)) => Err(Problem::new(
                StatusCode::BAD_REQUEST,
                "invalid-query",
                "Invalid query string",
                Some(e.body_text()),
            )),
            Err(other) => Err(Problem::bad_request(other.body_text())),
        }
    }
}

/// `Path<T>` whose rejections are problems.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(PathRejection::FailedToDeserializePathParams(e)) => Err(Problem::bad_request(e.body_text())),
            Err(other) => Err(Problem::bad_request(other.body_text())),
        }
    }
}

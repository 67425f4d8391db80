//! The management API's HTTP client, used by `herald webhooks ...`,
//! `herald deliveries ...` and `herald catalog ...`. It only speaks HTTP to
//! `/v1`, so it works against any replica.

use anyhow::{bail, Context};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::tables::text_of;

/// Where the API is and how to authenticate.
pub struct ApiClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client of the API at `base`; refuses to go on without a token.
    pub fn new(base: &str, token: Option<String>) -> anyhow::Result<ApiClient> {
        let token = token
            .filter(|t| !t.is_empty())
            .context("no API token: pass --token or set HERALD_API_TOKEN")?;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .context("cannot build the HTTP client")?;
        Ok(ApiClient {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http,
        })
    }

    /// Calls the API; a problem response becomes an error naming its detail
    /// and fields. `None` for 204.
    pub async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> anyhow::Result<Option<Value>> {
        let url = format!("{}{path}", self.base);
        let mut request = self.http.request(method.clone(), &url).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(body).expect("JSON values serialise"));
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the management API at {}", self.base))?;
        let status = response.status();
        if status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let text = response.text().await.context("cannot read the API's response")?;
        let value: Value = serde_json::from_str(&text).with_context(|| {
            format!(
                "{method} {path}: {status}, not JSON: {}",
                text.chars().take(200).collect::<String>()
            )
        })?;
        if !status.is_success() {
            let mut message = format!(
                "{method} {path}: {status}: {}",
                value["detail"].as_str().or(value["title"].as_str()).unwrap_or("")
            );
            for e in value["errors"].as_array().into_iter().flatten() {
                message.push_str(&format!("\n  {}: {}", text_of(&e["field"]), text_of(&e["message"])));
            }
            bail!(message);
        }
        Ok(Some(value))
    }

    /// `GET path`: the answer's JSON (null for 204).
    pub async fn get(&self, path: &str) -> anyhow::Result<Value> {
        Ok(self.call(Method::GET, path, None).await?.unwrap_or(Value::Null))
    }

    /// `POST path` with `body`: the answer's JSON (null for 204).
    pub async fn post(&self, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        Ok(self.call(Method::POST, path, body).await?.unwrap_or(Value::Null))
    }
}

/// Percent-encodes one path segment or query value.
pub fn encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// `key=value` pairs of the values present, encoded.
pub fn query(pairs: &[(&str, Option<String>)]) -> Vec<String> {
    pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", encode(v))))
        .collect()
}

/// `?a=1&b=2`, or nothing when there are no pairs.
pub fn query_suffix(pairs: &[String]) -> String {
    if pairs.is_empty() {
        String::new()
    } else {
        format!("?{}", pairs.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode("a/b c"), "a%2Fb+c");
        assert_eq!(
            query(&[("a", Some("x y".into())), ("b", None), ("c", Some("1".into()))]),
            ["a=x+y", "c=1"]
        );
        assert_eq!(query_suffix(&[]), "");
        assert_eq!(query_suffix(&["a=1".into(), "b=2".into()]), "?a=1&b=2");
    }
}

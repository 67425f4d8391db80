//! Connectors: presets for a webhook to a known product (Jam's "Intercom
//! Fin"), offered in the portal's "New webhook" and by `GET /v1/connectors`.
//! The shipped ones are in `config/connectors/` (built into the binary);
//! `admin.connector_files` adds an operator's own.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::config::catalog::Catalogs;

/// The connectors built into the binary.
const BUILT_IN: [(&str, &str); 1] = [(
    "intercom-fin (built in)",
    include_str!("../../config/connectors/intercom-fin.json"),
)];

/// A preset for a webhook to a known product.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Connector {
    /// Letters, digits, `_` or `-`.
    pub name: String,
    pub title: String,
    /// What the webhook does for the user.
    pub description: String,
    /// Only tenants bound to this catalog are offered it; "" offers it to
    /// every tenant.
    #[serde(default)]
    pub catalog: String,
    /// The endpoint, or "" when the user pastes one from the product.
    #[serde(default)]
    pub url: String,
    /// Where the user finds the endpoint.
    #[serde(default)]
    pub url_hint: String,
    /// The event types (or patterns) preselected.
    pub events: Vec<String>,
    /// Headers the product needs, by name, with what to put in each.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// A connector that cannot be used, and where it came from.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {problem}")]
pub struct ConnectorError {
    pub origin: String,
    pub problem: String,
}

/// Every connector, by name.
#[derive(Debug, Clone, Default)]
pub struct Connectors {
    by_name: BTreeMap<String, Arc<Connector>>,
}

impl Connectors {
    /// The built-in connectors plus `files`, checked against `catalogs`; a
    /// name may be defined only once.
    pub fn load(files: &[PathBuf], catalogs: &Catalogs) -> Result<Connectors, ConnectorError> {
        let mut sources: Vec<(String, String)> = BUILT_IN.iter().map(|(o, t)| (o.to_string(), t.to_string())).collect();
        for file in files {
            let text = std::fs::read_to_string(file).map_err(|e| ConnectorError {
                origin: file.display().to_string(),
                problem: format!("cannot read it: {e}"),
            })?;
            sources.push((file.display().to_string(), text));
        }
        let mut by_name = BTreeMap::new();
        for (origin, text) in sources {
            let fail = |problem: String| ConnectorError {
                origin: origin.clone(),
                problem,
            };
            let connector: Connector = serde_json::from_str(&text).map_err(|e| fail(e.to_string()))?;
            connector.check(catalogs).map_err(fail)?;
            let name = connector.name.clone();
            if by_name.insert(name.clone(), Arc::new(connector)).is_some() {
                return Err(fail(format!("a connector named `{name}` is already defined")));
            }
        }
        Ok(Connectors { by_name })
    }

    /// The connector called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Connector>> {
        self.by_name.get(name)
    }

    /// The connectors offered to a tenant bound to `catalog` (none: every
    /// connector, for an operator).
    pub fn offered(&self, catalog: Option<&str>) -> Vec<&Arc<Connector>> {
        self.by_name
            .values()
            .filter(|c| catalog.is_none_or(|name| c.catalog.is_empty() || c.catalog == name))
            .collect()
    }
}

impl Connector {
    fn check(&self, catalogs: &Catalogs) -> Result<(), String> {
        if self.name.is_empty()
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b))
        {
            return Err("`name` must be letters, digits, `_` or `-`".into());
        }
        if self.title.trim().is_empty() {
            return Err("`title` must not be empty".into());
        }
        if self.events.is_empty() {
            return Err("`events` must name at least one event type".into());
        }
        for pattern in &self.events {
            crate::routing::validate_pattern(pattern).map_err(|why| format!("event `{pattern}` {why}"))?;
        }
        if !self.catalog.is_empty() {
            let catalog = catalogs
                .get(&self.catalog)
                .ok_or_else(|| format!("no catalog named `{}`", self.catalog))?;
            if let Some(p) = self.events.iter().find(|p| !catalog.allows(p)) {
                return Err(format!("`{p}` matches no event type of the `{}` catalog", self.catalog));
            }
        }
        if !self.url.is_empty() {
            let url = url::Url::parse(&self.url).map_err(|e| format!("`url` is not a URL: {e}"))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err("`url` must use http or https".into());
            }
        }
        for name in self.headers.keys() {
            axum::http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("`{name}` is not a header name"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_connector_loads_and_is_offered_to_jams_tenants_only() {
        let catalogs = Catalogs::load(&[]).unwrap();
        let connectors = Connectors::load(&[], &catalogs).unwrap();
        let fin = connectors.get("intercom-fin").unwrap();
        assert_eq!(
            fin.events,
            ["intercom.recorder.recorded", "intercom.recorder.opted_out"]
        );
        assert_eq!(connectors.offered(Some("jam")).len(), 1);
        assert!(connectors.offered(Some("jimo")).is_empty());
        assert_eq!(connectors.offered(None).len(), 1, "operators see every connector");
    }

    #[test]
    fn a_connector_that_does_not_fit_its_catalog_is_refused() {
        let catalogs = Catalogs::load(&[]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, json: serde_json::Value| {
            let path = dir.path().join(name);
            std::fs::write(&path, json.to_string()).unwrap();
            path
        };
        let base = serde_json::json!({"name": "crm", "title": "CRM", "description": "d", "catalog": "jimo", "events": ["tour.*"]});
        let good = write("good.json", base.clone());
        assert!(Connectors::load(std::slice::from_ref(&good), &catalogs).is_ok());
        let mut wrong = base.clone();
        wrong["events"] = serde_json::json!(["invoice.paid"]);
        let err = Connectors::load(&[write("wrong.json", wrong)], &catalogs).unwrap_err();
        assert!(
            err.to_string().contains("matches no event type of the `jimo` catalog"),
            "{err}"
        );
        let err = Connectors::load(&[good.clone(), good], &catalogs).unwrap_err();
        assert!(err.to_string().contains("already defined"), "{err}");
        let mut bad_url = base;
        bad_url["url"] = "ftp://x".into();
        let err = Connectors::load(&[write("url.json", bad_url)], &catalogs).unwrap_err();
        assert!(err.to_string().contains("http or https"), "{err}");
    }
}

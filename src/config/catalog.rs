//! Event catalogs: the event types a product publishes, each with a
//! description and an example payload in that product's envelope.
//!
//! The Jimo, IAM and Jam catalogs ship in `config/catalogs/` and are compiled
//! into the binary; `admin.catalog_files` adds more. A tenant bound to a
//! catalog (`admin.tenants.<tenant>.catalog`) may only subscribe to patterns
//! that match at least one of its event types; the test ping sends a
//! catalog's example payload. A tenant token sees only its tenant's catalog:
//! the others answer as missing ones do.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::routing::pattern_matches;

/// The catalogs shipped with Herald.
const BUILT_IN: [(&str, &str); 3] = [
    (
        "config/catalogs/jimo.json",
        include_str!("../../config/catalogs/jimo.json"),
    ),
    (
        "config/catalogs/iam.json",
        include_str!("../../config/catalogs/iam.json"),
    ),
    (
        "config/catalogs/jam.json",
        include_str!("../../config/catalogs/jam.json"),
    ),
];

/// One product's event types.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// Identifier used in configuration and URLs, e.g. `jimo`.
    pub name: String,
    /// Human name of the product.
    pub title: String,
    pub description: String,
    /// The envelope the examples use (`jimo`, `iam`, `jam`, `cloudevents`).
    pub envelope: String,
    pub events: Vec<CatalogEvent>,
}

/// One event type.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CatalogEvent {
    /// The event type exactly as it is published, e.g. `tour.completed`.
    #[serde(rename = "type")]
    pub event_type: String,
    pub category: String,
    pub description: String,
    /// A complete example payload in the product's envelope.
    #[schema(value_type = Object)]
    pub example: serde_json::Value,
}

/// A catalog that cannot be used, and where it came from (a file, or a
/// built-in catalog's name).
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {problem}")]
pub struct CatalogError {
    pub origin: String,
    pub problem: CatalogProblem,
}

/// What is wrong with a catalog.
#[derive(Debug, thiserror::Error)]
pub enum CatalogProblem {
    #[error("cannot read it: {0}")]
    Read(std::io::Error),
    #[error("{0}")]
    Json(serde_json::Error),
    #[error("`name` must be letters, digits, `_` or `-`")]
    Name,
    #[error("event type `{event_type}` {why}")]
    EventType { event_type: String, why: &'static str },
    #[error("event type `{0}` is a pattern")]
    Pattern(String),
    #[error("event type `{0}` is listed twice")]
    Repeated(String),
    #[error("a catalog named `{0}` is already defined")]
    Defined(String),
}

impl Catalog {
    fn parse(origin: &str, text: &str) -> Result<Catalog, CatalogError> {
        let fail = |problem| CatalogError {
            origin: origin.to_owned(),
            problem,
        };
        let catalog: Catalog = serde_json::from_str(text).map_err(|e| fail(CatalogProblem::Json(e)))?;
        if catalog.name.is_empty()
            || !catalog
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b))
        {
            return Err(fail(CatalogProblem::Name));
        }
        let mut seen = std::collections::BTreeSet::new();
        for event in &catalog.events {
            crate::routing::validate_pattern(&event.event_type).map_err(|why| {
                fail(CatalogProblem::EventType {
                    event_type: event.event_type.clone(),
                    why,
                })
            })?;
            if event.event_type.ends_with('*') {
                return Err(fail(CatalogProblem::Pattern(event.event_type.clone())));
            }
            if !seen.insert(event.event_type.as_str()) {
                return Err(fail(CatalogProblem::Repeated(event.event_type.clone())));
            }
        }
        Ok(catalog)
    }

    /// Whether a webhook of a tenant bound to this catalog may use `pattern`:
    /// `*`, or a pattern matching at least one listed event type or one of
    /// Herald's own system event types (`webhook.*`, `WEBHOOK_*`), which
    /// every catalog allows.
    pub fn allows(&self, pattern: &str) -> bool {
        pattern == "*"
            || self.events.iter().any(|e| pattern_matches(pattern, &e.event_type))
            || super::system_events::system_event_types().any(|t| pattern_matches(pattern, &t))
    }

    /// The catalog's entry for `event_type`.
    pub fn event(&self, event_type: &str) -> Option<&CatalogEvent> {
        self.events.iter().find(|e| e.event_type == event_type)
    }
}

/// Every catalog by name.
#[derive(Debug, Clone, Default)]
pub struct Catalogs {
    by_name: BTreeMap<String, Arc<Catalog>>,
}

impl Catalogs {
    /// The built-in catalogs plus `files`; a name may be defined only once.
    pub fn load(files: &[PathBuf]) -> Result<Catalogs, CatalogError> {
        let mut sources: Vec<(String, String)> = BUILT_IN
            .iter()
            .map(|(origin, text)| (origin.to_string(), text.to_string()))
            .collect();
        for file in files {
            let text = std::fs::read_to_string(file).map_err(|e| CatalogError {
                origin: file.display().to_string(),
                problem: CatalogProblem::Read(e),
            })?;
            sources.push((file.display().to_string(), text));
        }
        let mut by_name = BTreeMap::new();
        for (origin, text) in sources {
            let catalog = Catalog::parse(&origin, &text)?;
            let name = catalog.name.clone();
            if by_name.insert(name.clone(), Arc::new(catalog)).is_some() {
                return Err(CatalogError {
                    origin,
                    problem: CatalogProblem::Defined(name),
                });
            }
        }
        Ok(Catalogs { by_name })
    }

    /// The catalog called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<Catalog>> {
        self.by_name.get(name)
    }

    /// Every catalog, by name.
    pub fn all(&self) -> impl Iterator<Item = &Arc<Catalog>> {
        self.by_name.values()
    }

    /// An example payload for `event_type`, from the first catalog listing it
    /// (the webhook's own catalog is asked first by the caller, and only an
    /// admin token gets this far).
    pub fn example(&self, event_type: &str) -> Option<&CatalogEvent> {
        self.by_name.values().find_map(|c| c.event(event_type))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_catalogs_load_with_the_seed_documents_counts() {
        let catalogs = Catalogs::load(&[]).unwrap();
        let count = |name: &str| catalogs.get(name).unwrap().events.len();
        // Jimo's event reference lists 40 event types in seven groups.
        assert_eq!(count("jimo"), 40);
        assert_eq!(count("iam"), 91);
        assert_eq!(count("jam"), 2);
        let jimo = catalogs.get("jimo").unwrap();
        let completed = jimo.event("tour.completed").unwrap();
        assert_eq!(completed.example["event"], "tour.completed");
        let iam = catalogs.get("iam").unwrap();
        assert!(iam.event("WEBHOOK_CREATED").is_some());
        assert_eq!(iam.event("USER_CREATED").unwrap().example["event_type"], "USER_CREATED");
    }

    #[test]
    fn every_example_carries_its_own_event_type() {
        let catalogs = Catalogs::load(&[]).unwrap();
        for catalog in catalogs.all() {
            let field = match catalog.envelope.as_str() {
                "jimo" => "event",
                "iam" => "event_type",
                _ => "type",
            };
            for event in &catalog.events {
                assert_eq!(event.example[field], event.event_type.as_str(), "{}", catalog.name);
            }
        }
    }

    #[test]
    fn patterns_must_match_a_listed_event() {
        let catalogs = Catalogs::load(&[]).unwrap();
        let jimo = catalogs.get("jimo").unwrap();
        assert!(jimo.allows("*"));
        assert!(jimo.allows("tour.*"));
        assert!(jimo.allows("tour.completed"));
        assert!(!jimo.allows("tour.exploded"));
        assert!(!jimo.allows("USER_*"));
        // Herald's own system events, in either naming, whatever the catalog.
        assert!(jimo.allows("webhook.*"));
        assert!(jimo.allows("webhook.auto_disabled"));
        assert!(catalogs.get("jam").unwrap().allows("WEBHOOK_PAUSED"));
        assert!(!jimo.allows("webhook.exploded"));
    }

    #[test]
    fn extra_catalog_files_load_and_may_not_reuse_a_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shop.json");
        std::fs::write(
            &path,
            r#"{"name":"shop","title":"Shop","description":"d","envelope":"jam",
               "events":[{"type":"order.paid","category":"Orders","description":"d","example":{"type":"order.paid"}}]}"#,
        )
        .unwrap();
        let catalogs = Catalogs::load(std::slice::from_ref(&path)).unwrap();
        assert!(catalogs.get("shop").unwrap().allows("order.*"));
        std::fs::write(
            &path,
            r#"{"name":"jimo","title":"x","description":"d","envelope":"jimo","events":[]}"#,
        )
        .unwrap();
        let error = Catalogs::load(&[path]).unwrap_err();
        assert!(
            matches!(error.problem, CatalogProblem::Defined(ref name) if name == "jimo"),
            "{error}"
        );
        assert!(error.to_string().contains("already defined"));
    }
}

//! The in-memory subscription index: which webhooks an event goes to.
//!
//! Built from every webhook in Redis and swapped atomically when they change,
//! so routing an event is a few hash lookups and no Redis round trip. Per
//! tenant scope (webhooks bound to a tenant, and the global scope of webhooks
//! bound to none) it keeps exact event types, prefix patterns (`tour.*`) keyed
//! by prefix, and catch-all (`*`) webhooks. Paused and disabled webhooks stay
//! in the index: their events are dead-lettered with the reason instead of
//! vanishing.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::delivery::target::Target;
use crate::subscriptions::model::WebhookStatus;

#[derive(Debug, Default)]
struct Scope {
    exact: HashMap<String, Vec<u32>>,
    /// Prefix (pattern without its `*`) -> webhooks.
    prefixes: HashMap<String, Vec<u32>>,
    /// Distinct prefix lengths, so a lookup probes each length once.
    prefix_lens: Vec<usize>,
    all: Vec<u32>,
}

impl Scope {
    fn add(&mut self, pattern: &str, webhook: u32) {
        if pattern == "*" {
            self.all.push(webhook);
        } else if let Some(prefix) = pattern.strip_suffix('*') {
            self.prefixes.entry(prefix.to_owned()).or_default().push(webhook);
        } else {
            self.exact.entry(pattern.to_owned()).or_default().push(webhook);
        }
    }

    fn seal(&mut self) {
        let lens: BTreeSet<usize> = self.prefixes.keys().map(String::len).collect();
        self.prefix_lens = lens.into_iter().collect();
    }

    fn collect(&self, event_type: &str, out: &mut Vec<u32>) {
        out.extend_from_slice(&self.all);
        if let Some(ids) = self.exact.get(event_type) {
            out.extend_from_slice(ids);
        }
        for &len in &self.prefix_lens {
            if len > event_type.len() {
                break;
            }
            if let Some(prefix) = event_type.get(..len) {
                if let Some(ids) = self.prefixes.get(prefix) {
                    out.extend_from_slice(ids);
                }
            }
        }
    }
}

/// An immutable snapshot of every webhook, indexed for routing.
#[derive(Debug, Default)]
pub struct Index {
    targets: Vec<Arc<Target>>,
    by_id: HashMap<String, u32>,
    global: Scope,
    tenants: HashMap<String, Scope>,
}

impl Index {
    /// Indexes `targets` (one per webhook id).
    pub fn build(targets: impl IntoIterator<Item = Arc<Target>>) -> Index {
        let mut index = Index::default();
        for target in targets {
            let n = index.targets.len() as u32;
            let scope = match &target.webhook.tenant {
                Some(tenant) => index.tenants.entry(tenant.clone()).or_default(),
                None => &mut index.global,
            };
            for pattern in &target.webhook.events {
                scope.add(pattern, n);
            }
            index.by_id.insert(target.webhook.id.clone(), n);
            index.targets.push(target);
        }
        index.global.seal();
        index.tenants.values_mut().for_each(Scope::seal);
        index
    }

    /// The webhooks subscribed to `event_type`: the global ones, plus those of
    /// `tenant` when the event has one. Each webhook appears once.
    pub fn route(&self, tenant: Option<&str>, event_type: &str) -> Vec<Arc<Target>> {
        let mut ids = Vec::new();
        self.global.collect(event_type, &mut ids);
        if let Some(scope) = tenant.and_then(|t| self.tenants.get(t)) {
            scope.collect(event_type, &mut ids);
        }
        if ids.len() > 1 {
            ids.sort_unstable();
            ids.dedup();
        }
        ids.into_iter().map(|i| self.targets[i as usize].clone()).collect()
    }

    /// The webhook with this id, whatever its status.
    pub fn get(&self, id: &str) -> Option<Arc<Target>> {
        self.by_id.get(id).map(|&i| self.targets[i as usize].clone())
    }

    /// Every target, in no particular order.
    pub fn targets(&self) -> &[Arc<Target>] {
        &self.targets
    }

    /// How many webhooks have `status`.
    pub fn count(&self, status: WebhookStatus) -> usize {
        self.targets.iter().filter(|t| t.webhook.status == status).count()
    }

    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::target::EndpointDefaults;
    use crate::subscriptions::model::tests::webhook;
    use std::time::Duration;

    fn target(id: &str, tenant: Option<&str>, events: &[&str]) -> Arc<Target> {
        let mut w = webhook(id, "https://example.com/", events);
        w.tenant = tenant.map(str::to_owned);
        let defaults = EndpointDefaults {
            max_in_flight: 4,
            max_queue_wait: Duration::from_secs(1),
            request_timeout: Duration::from_secs(1),
        };
        Arc::new(Target::compile(w, &defaults, None).unwrap())
    }

    fn ids(index: &Index, tenant: Option<&str>, event_type: &str) -> Vec<String> {
        let mut v: Vec<String> = index
            .route(tenant, event_type)
            .iter()
            .map(|t| t.id().to_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn exact_prefix_and_catch_all_patterns() {
        let index = Index::build([
            target("exact", None, &["tour.completed"]),
            target("prefix", None, &["tour.*"]),
            target("upper", None, &["USER_*"]),
            target("all", None, &["*"]),
            target("both", None, &["tour.*", "tour.completed"]),
        ]);
        assert_eq!(ids(&index, None, "tour.completed"), ["all", "both", "exact", "prefix"]);
        assert_eq!(ids(&index, None, "tour.started"), ["all", "both", "prefix"]);
        assert_eq!(ids(&index, None, "tour."), ["all", "both", "prefix"]);
        assert_eq!(ids(&index, None, "tour"), ["all"]);
        assert_eq!(ids(&index, None, "USER_CREATED"), ["all", "upper"]);
        assert_eq!(ids(&index, None, "survey.completed"), ["all"]);
    }

    #[test]
    fn tenant_bound_webhooks_only_see_their_tenant() {
        let index = Index::build([
            target("acme", Some("acme"), &["*"]),
            target("globex", Some("globex"), &["tour.*"]),
            target("global", None, &["tour.completed"]),
        ]);
        assert_eq!(ids(&index, Some("acme"), "tour.completed"), ["acme", "global"]);
        assert_eq!(ids(&index, Some("globex"), "tour.completed"), ["global", "globex"]);
        assert_eq!(ids(&index, None, "tour.completed"), ["global"]);
        assert_eq!(ids(&index, Some("initech"), "tour.completed"), ["global"]);
    }

    #[test]
    fn multibyte_event_types_do_not_split_characters() {
        let index = Index::build([target("p", None, &["é*"]), target("q", None, &["ab*"])]);
        assert_eq!(ids(&index, None, "éa"), ["p"]);
        assert_eq!(ids(&index, None, "aé"), Vec::<String>::new());
    }

    #[test]
    fn counts_by_status() {
        let index = Index::build([target("a", None, &["*"]), target("b", None, &["*"])]);
        assert_eq!(index.count(WebhookStatus::Active), 2);
        assert_eq!(index.count(WebhookStatus::Paused), 0);
        assert_eq!(index.len(), 2);
        assert_eq!(index.get("b").unwrap().id(), "b");
        assert!(index.get("c").is_none());
    }
}

//! The in-memory subscription index: which webhooks an event goes to.
//!
//! It holds every webhook (packed, see `subscriptions::packed`) and is
//! changed in place, one webhook at a time, so that following a change costs
//! work in proportion to the change, not to the number of webhooks. Per
//! tenant scope (webhooks bound to a tenant, and the global scope of webhooks
//! bound to none) it keeps exact event types, prefix patterns (`tour.*`)
//! keyed by prefix, and catch-all (`*`) webhooks, so routing an event is a
//! few hash lookups whatever the number of webhooks. Paused and disabled
//! webhooks stay in the index: their events are dead-lettered with the
//! reason instead of vanishing.
//!
//! Webhooks live in numbered slots; the postings name slots (`u32`), and
//! event patterns and tenant names are stored once however many webhooks
//! use them.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;
use std::sync::Arc;

use hashbrown::hash_map::EntryRef;
use hashbrown::{HashMap as FastMap, HashTable};
use smallvec::SmallVec;

use crate::routing::filter::Filter;
use crate::subscriptions::packed::{Packed, Routing, Unreadable};
use crate::webhook::WebhookStatus;

/// The webhooks (slots) of one pattern in one scope; most have one or two.
type Postings = SmallVec<[u32; 2]>;

/// One webhook in the index.
#[derive(Debug)]
pub struct Entry {
    pub packed: Packed,
    /// Digest of the document it was read from: a document read again with
    /// the same digest is unchanged and is not parsed again.
    pub digest: u64,
    pub status: WebhookStatus,
    /// The full read (generation) that last confirmed it.
    pub seen: u32,
    /// Its payload filter, compiled when it entered the index (none for
    /// most webhooks: they cost no more than a pointer for it).
    pub filter: Option<Box<Filter>>,
}

#[derive(Debug, Default)]
struct Scope {
    exact: HashMap<Arc<str>, Postings>,
    /// Prefix (pattern without its `*`) -> webhooks.
    prefixes: HashMap<Arc<str>, Postings>,
    /// Distinct prefix lengths, with how many prefixes have each, so a lookup
    /// probes each length once.
    prefix_lens: BTreeMap<usize, u32>,
    all: Vec<u32>,
}

fn remove_slot(postings: &mut Postings, slot: u32) {
    if let Some(i) = postings.iter().position(|&s| s == slot) {
        postings.swap_remove(i);
    }
}

impl Scope {
    fn collect(&self, event_type: &str, out: &mut Vec<u32>) {
        out.extend_from_slice(&self.all);
        if let Some(slots) = self.exact.get(event_type) {
            out.extend_from_slice(slots);
        }
        for &len in self.prefix_lens.keys() {
            if len > event_type.len() {
                break;
            }
            if let Some(prefix) = event_type.get(..len) {
                if let Some(slots) = self.prefixes.get(prefix) {
                    out.extend_from_slice(slots);
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.prefixes.is_empty() && self.all.is_empty()
    }
}

/// Strings stored once (event patterns, prefixes, tenants), counted so the
/// last user frees them.
#[derive(Debug, Default)]
struct Interner(FastMap<Arc<str>, usize, std::hash::RandomState>);

impl Interner {
    fn get(&mut self, s: &str) -> Arc<str> {
        match self.0.entry_ref(s) {
            EntryRef::Occupied(mut known) => {
                *known.get_mut() += 1;
                known.key().clone()
            }
            EntryRef::Vacant(new) => {
                let key: Arc<str> = Arc::from(s);
                new.insert_with_key(key.clone(), 1);
                key
            }
        }
    }

    fn release(&mut self, s: &str) {
        if let Some(n) = self.0.get_mut(s) {
            *n -= 1;
            if *n == 0 {
                self.0.remove(s);
            }
        }
    }
}

/// Every webhook, indexed for routing.
#[derive(Debug, Default)]
pub struct Index {
    slots: Vec<Option<Entry>>,
    free: Vec<u32>,
    by_id: HashTable<u32>,
    hasher: std::hash::RandomState,
    global: Scope,
    tenants: HashMap<Arc<str>, Scope>,
    strings: Interner,
    counts: [usize; 3],
}

/// Where a pattern goes in a scope.
enum Kind<'a> {
    All,
    Prefix(&'a str),
    Exact(&'a str),
}

fn kind(pattern: &str) -> Kind<'_> {
    if pattern == "*" {
        Kind::All
    } else if let Some(prefix) = pattern.strip_suffix('*') {
        Kind::Prefix(prefix)
    } else {
        Kind::Exact(pattern)
    }
}

fn status_slot(status: WebhookStatus) -> usize {
    WebhookStatus::ALL.iter().position(|s| *s == status).unwrap_or(0)
}

impl Index {
    /// An empty index.
    pub fn new() -> Index {
        Index::default()
    }

    /// Makes room for `n` more webhooks.
    pub fn reserve(&mut self, n: usize) {
        self.slots.reserve(n);
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.by_id.reserve(n, |&s| {
            hasher.hash_one(slots[s as usize].as_ref().map_or(&[][..], |e| e.packed.id_bytes()))
        });
    }

    fn hash(&self, id: &str) -> u64 {
        self.hasher.hash_one(id.as_bytes())
    }

    fn slot_of(&self, id: &str) -> Option<u32> {
        let slots = &self.slots;
        self.by_id
            .find(self.hash(id), |&s| {
                slots[s as usize]
                    .as_ref()
                    .is_some_and(|e| e.packed.id_bytes() == id.as_bytes())
            })
            .copied()
    }

    /// The webhook with this id, whatever its status.
    pub fn get(&self, id: &str) -> Option<&Entry> {
        self.slot_of(id).and_then(|s| self.entry(s))
    }

    /// The webhook in `slot`.
    pub fn entry(&self, slot: u32) -> Option<&Entry> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    /// Puts `entry` in the index, replacing the webhook with the same id;
    /// returns the one replaced. A packed webhook that cannot be read is
    /// refused (it never can be: only `Packed::pack` makes them).
    pub fn upsert(&mut self, entry: Entry) -> Result<Option<Entry>, Unreadable> {
        let new = entry.packed.routing()?;
        let status = entry.status;
        let Some(slot) = self.slot_of(new.id) else {
            let slot = match self.free.pop() {
                Some(s) => s,
                None => {
                    self.slots.push(None);
                    (self.slots.len() - 1) as u32
                }
            };
            let hash = self.hash(new.id);
            self.add_postings(&new, slot);
            self.slots[slot as usize] = Some(entry);
            let (slots, hasher) = (&self.slots, &self.hasher);
            self.by_id.insert_unique(hash, slot, |&s| {
                hasher.hash_one(slots[s as usize].as_ref().map_or(&[][..], |e| e.packed.id_bytes()))
            });
            self.counts[status_slot(status)] += 1;
            return Ok(None);
        };
        let old = self.slots[slot as usize].take().expect("indexed slots are filled");
        self.counts[status_slot(old.status)] -= 1;
        self.counts[status_slot(status)] += 1;
        let before = old.packed.routing()?;
        if before.tenant != new.tenant || before.events != new.events {
            self.remove_postings(&before, slot);
            self.add_postings(&new, slot);
        }
        self.slots[slot as usize] = Some(entry);
        Ok(Some(old))
    }

    /// Removes the webhook with this id; returns it.
    pub fn remove(&mut self, id: &str) -> Option<Entry> {
        let hash = self.hash(id);
        let slots = &self.slots;
        let found = self
            .by_id
            .find_entry(hash, |&s| {
                slots[s as usize]
                    .as_ref()
                    .is_some_and(|e| e.packed.id_bytes() == id.as_bytes())
            })
            .ok()?;
        let (slot, _) = found.remove();
        let old = self.slots[slot as usize].take().expect("indexed slots are filled");
        if let Ok(routing) = old.packed.routing() {
            self.remove_postings(&routing, slot);
        }
        self.counts[status_slot(old.status)] -= 1;
        self.free.push(slot);
        Some(old)
    }

    /// Marks the webhook with this id as confirmed by read `generation`.
    pub fn confirm(&mut self, id: &str, generation: u32) {
        if let Some(slot) = self.slot_of(id) {
            if let Some(e) = self.slots[slot as usize].as_mut() {
                e.seen = generation;
            }
        }
    }

    /// The ids of webhooks not confirmed by read `generation`.
    pub fn unconfirmed(&self, generation: u32) -> Vec<String> {
        self.slots
            .iter()
            .flatten()
            .filter(|e| e.seen != generation)
            .map(|e| e.packed.id().to_owned())
            .collect()
    }

    fn scope_mut(&mut self, tenant: Option<&str>) -> &mut Scope {
        match tenant {
            None => &mut self.global,
            Some(t) => {
                if !self.tenants.contains_key(t) {
                    let key = self.strings.get(t);
                    self.tenants.insert(key, Scope::default());
                }
                self.tenants.get_mut(t).expect("just made")
            }
        }
    }

    fn add_postings(&mut self, routing: &Routing<'_>, slot: u32) {
        let keys: SmallVec<[Option<Arc<str>>; 2]> = routing
            .events
            .iter()
            .map(|pattern| match kind(pattern) {
                Kind::All => None,
                Kind::Prefix(p) | Kind::Exact(p) => Some(self.strings.get(p)),
            })
            .collect();
        let scope = self.scope_mut(routing.tenant);
        for (pattern, key) in routing.events.iter().zip(keys) {
            match (kind(pattern), key) {
                (Kind::Prefix(p), Some(key)) => {
                    let postings = scope.prefixes.entry(key).or_default();
                    if postings.is_empty() {
                        *scope.prefix_lens.entry(p.len()).or_default() += 1;
                    }
                    postings.push(slot);
                }
                (Kind::Exact(_), Some(key)) => scope.exact.entry(key).or_default().push(slot),
                _ => scope.all.push(slot),
            }
        }
    }

    fn remove_postings(&mut self, routing: &Routing<'_>, slot: u32) {
        let Some(scope) = (match routing.tenant {
            None => Some(&mut self.global),
            Some(t) => self.tenants.get_mut(t),
        }) else {
            return;
        };
        let mut released = Vec::new();
        for pattern in &routing.events {
            match kind(pattern) {
                Kind::All => scope.all.retain(|&s| s != slot),
                Kind::Exact(p) => {
                    if let Some(postings) = scope.exact.get_mut(p) {
                        remove_slot(postings, slot);
                        if postings.is_empty() {
                            scope.exact.remove(p);
                        }
                        released.push(p);
                    }
                }
                Kind::Prefix(p) => {
                    if let Some(postings) = scope.prefixes.get_mut(p) {
                        remove_slot(postings, slot);
                        if postings.is_empty() {
                            scope.prefixes.remove(p);
                            if let Some(n) = scope.prefix_lens.get_mut(&p.len()) {
                                *n -= 1;
                                if *n == 0 {
                                    scope.prefix_lens.remove(&p.len());
                                }
                            }
                        }
                        released.push(p);
                    }
                }
            }
        }
        if let Some(t) = routing.tenant {
            if self.tenants.get(t).is_some_and(Scope::is_empty) {
                self.tenants.remove(t);
                self.strings.release(t);
            }
        }
        for p in released {
            self.strings.release(p);
        }
    }

    /// The slots of the webhooks subscribed to `event_type`: the global
    /// ones, plus those of `tenant` when the event has one. Each appears once.
    pub fn route(&self, tenant: Option<&str>, event_type: &str, out: &mut Vec<u32>) {
        self.global.collect(event_type, out);
        if let Some(scope) = tenant.and_then(|t| self.tenants.get(t)) {
            scope.collect(event_type, out);
        }
        if out.len() > 1 {
            out.sort_unstable();
            out.dedup();
        }
    }

    /// How many webhooks have `status`.
    pub fn count(&self, status: WebhookStatus) -> usize {
        self.counts[status_slot(status)]
    }

    /// How many webhooks of each status.
    pub fn counts(&self) -> [(&'static str, usize); 3] {
        WebhookStatus::ALL.map(|s| (s.as_str(), self.count(s)))
    }

    /// Webhooks indexed, whatever their status.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no webhook is indexed.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::tests::webhook;
    use crate::webhook::Webhook;

    fn entry(w: &Webhook) -> Entry {
        Entry {
            packed: Packed::pack(w),
            digest: 0,
            status: w.status,
            seen: 0,
            filter: w.filter.clone().map(Box::new),
        }
    }

    fn hook(id: &str, tenant: Option<&str>, events: &[&str]) -> Webhook {
        let mut w = webhook(id, "https://example.com/", events);
        w.tenant = tenant.map(str::to_owned);
        w
    }

    fn build(webhooks: &[Webhook]) -> Index {
        let mut index = Index::new();
        for w in webhooks {
            index.upsert(entry(w)).unwrap();
        }
        index
    }

    fn ids(index: &Index, tenant: Option<&str>, event_type: &str) -> Vec<String> {
        let mut slots = Vec::new();
        index.route(tenant, event_type, &mut slots);
        let mut v: Vec<String> = slots
            .iter()
            .map(|&s| index.entry(s).unwrap().packed.id().to_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn exact_prefix_and_catch_all_patterns() {
        let index = build(&[
            hook("exact", None, &["tour.completed"]),
            hook("prefix", None, &["tour.*"]),
            hook("upper", None, &["USER_*"]),
            hook("all", None, &["*"]),
            hook("both", None, &["tour.*", "tour.completed"]),
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
        let index = build(&[
            hook("acme", Some("acme"), &["*"]),
            hook("globex", Some("globex"), &["tour.*"]),
            hook("global", None, &["tour.completed"]),
        ]);
        assert_eq!(ids(&index, Some("acme"), "tour.completed"), ["acme", "global"]);
        assert_eq!(ids(&index, Some("globex"), "tour.completed"), ["global", "globex"]);
        assert_eq!(ids(&index, None, "tour.completed"), ["global"]);
        assert_eq!(ids(&index, Some("initech"), "tour.completed"), ["global"]);
    }

    #[test]
    fn multibyte_event_types_do_not_split_characters() {
        let index = build(&[hook("p", None, &["é*"]), hook("q", None, &["ab*"])]);
        assert_eq!(ids(&index, None, "éa"), ["p"]);
        assert_eq!(ids(&index, None, "aé"), Vec::<String>::new());
    }

    #[test]
    fn counts_by_status() {
        let mut paused = hook("b", None, &["*"]);
        paused.status = WebhookStatus::Paused;
        let mut index = build(&[hook("a", None, &["*"]), paused.clone()]);
        assert_eq!(index.count(WebhookStatus::Active), 1);
        assert_eq!(index.count(WebhookStatus::Paused), 1);
        assert_eq!(index.len(), 2);
        assert_eq!(index.get("b").unwrap().packed.id(), "b");
        assert!(index.get("c").is_none());

        paused.status = WebhookStatus::Active;
        index.upsert(entry(&paused)).unwrap();
        assert_eq!(index.count(WebhookStatus::Active), 2);
        assert_eq!(index.count(WebhookStatus::Paused), 0);
        index.remove("a").unwrap();
        assert_eq!(index.count(WebhookStatus::Active), 1);
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn changes_move_a_webhook_between_patterns_and_tenants() {
        let mut index = build(&[
            hook("a", Some("acme"), &["tour.*"]),
            hook("b", Some("acme"), &["tour.completed"]),
        ]);
        // Narrowed, then moved to another tenant, then deleted.
        index.upsert(entry(&hook("a", Some("acme"), &["survey.done"]))).unwrap();
        assert_eq!(ids(&index, Some("acme"), "tour.completed"), ["b"]);
        assert_eq!(ids(&index, Some("acme"), "survey.done"), ["a"]);
        let old = index
            .upsert(entry(&hook("a", Some("globex"), &["survey.done"])))
            .unwrap();
        assert_eq!(old.unwrap().packed.routing().unwrap().tenant, Some("acme"));
        assert!(ids(&index, Some("acme"), "survey.done").is_empty());
        assert_eq!(ids(&index, Some("globex"), "survey.done"), ["a"]);
        assert!(index.remove("a").is_some());
        assert!(index.remove("a").is_none());
        assert!(ids(&index, Some("globex"), "survey.done").is_empty());
        // Nothing is left of what only `a` used: the empty scope, its
        // patterns, the prefix length, the tenant's name.
        assert!(!index.tenants.contains_key("globex"));
        assert!(index.global.prefix_lens.is_empty());
        assert!(!index.strings.0.contains_key("survey.done"));
        assert!(!index.strings.0.contains_key("tour."));
        assert!(index.strings.0.contains_key("tour.completed"));

        // A freed slot is used again, without routing to the old webhook.
        index.upsert(entry(&hook("c", None, &["x"]))).unwrap();
        assert_eq!(index.slots.len(), 2);
        assert_eq!(ids(&index, None, "x"), ["c"]);
        assert_eq!(ids(&index, Some("acme"), "tour.completed"), ["b"]);
    }

    #[test]
    fn matches_a_rebuilt_index_after_many_random_changes() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let tenants = [None, Some("t1"), Some("t2")];
        let patterns = ["a", "a.b", "a.*", "b.*", "*", "b.c", "ab*"];
        let mut live = Index::new();
        let mut truth: BTreeMap<String, Webhook> = BTreeMap::new();
        for _ in 0..2000 {
            let id = format!("w{}", rng.random_range(0..40));
            if rng.random_bool(0.2) {
                assert_eq!(live.remove(&id).is_some(), truth.remove(&id).is_some());
                continue;
            }
            let n = rng.random_range(1..4);
            let events: Vec<&str> = (0..n).map(|_| patterns[rng.random_range(0..patterns.len())]).collect();
            let w = hook(&id, tenants[rng.random_range(0..3)], &events);
            live.upsert(entry(&w)).unwrap();
            truth.insert(id, w);
        }
        let rebuilt = build(&truth.values().cloned().collect::<Vec<_>>());
        assert_eq!(live.len(), truth.len());
        for tenant in tenants {
            for event in ["a", "a.b", "a.c", "b.c", "ab", "abc", "z"] {
                assert_eq!(
                    ids(&live, tenant, event),
                    ids(&rebuilt, tenant, event),
                    "{tenant:?} {event}"
                );
            }
        }
    }
}

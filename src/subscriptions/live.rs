//! The live subscription index the pipeline routes with.
//!
//! It holds every webhook packed (see [`packed`](super::packed)) in the
//! routing [`Index`], changed in place by the sync loop, and prepares a
//! webhook for delivery ([`Target`]: parsed URL, keyed signers, headers, the
//! endpoint's request slots) when a delivery first needs it. Prepared
//! webhooks are kept in a bounded cache (`subscriptions.prepared_webhooks`),
//! so the busy ones cost nothing per delivery and memory grows with the
//! webhooks in use, not with every webhook stored. A prepared webhook in use
//! by a delivery is never evicted, so an endpoint always has one set of
//! request slots; an edit keeps them when its limit is unchanged.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use quick_cache::sync::Cache;
use quick_cache::{Lifecycle, UnitWeighter};
use tokio::sync::Notify;

use crate::delivery::target::{EndpointDefaults, Target};
use crate::routing::filter::Payload;
use crate::subscriptions::index::{Entry, Index};
use crate::telemetry::Telemetry;

/// A prepared webhook, with the digest of the document it was prepared from.
type Prepared = (u64, Arc<Target>);

/// Keeps prepared webhooks that a delivery holds.
#[derive(Clone, Copy, Default)]
struct InUse;

impl Lifecycle<Box<str>, Prepared> for InUse {
    type RequestState = ();

    fn is_pinned(&self, _key: &Box<str>, value: &Prepared) -> bool {
        Arc::strong_count(&value.1) > 1
    }

    fn begin_request(&self) -> Self::RequestState {}

    fn on_evict(&self, _state: &mut Self::RequestState, _key: Box<str>, _value: Prepared) {}
}

/// Where an event goes: the webhooks it is delivered to, and how many
/// others subscribed to its type and turned it away by their filter.
pub struct Routed {
    pub targets: Vec<Arc<Target>>,
    pub filtered: usize,
}

/// The current index, shared by the pipeline (reads) and the sync loop
/// (changes).
pub struct SubscriptionIndex {
    index: RwLock<Index>,
    prepared: Cache<Box<str>, Prepared, UnitWeighter, quick_cache::DefaultHashBuilder, InUse>,
    /// Held while preparing a webhook, so two deliveries never prepare the
    /// same one at once (which would give its endpoint two sets of slots).
    preparing: Mutex<()>,
    defaults: EndpointDefaults,
    telemetry: Option<Telemetry>,
    /// Set once the first full load has completed.
    loaded: Latch,
    /// Set once the first load has begun: Redis was reached.
    reached: Latch,
}

/// A flag set once, that tasks can wait for.
#[derive(Default)]
struct Latch {
    set: AtomicBool,
    notify: Notify,
}

impl Latch {
    fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }

    async fn wait(&self) {
        // Once set, every record passes here: one load, nothing else.
        if self.is_set() {
            return;
        }
        loop {
            let notified = self.notify.notified();
            if self.is_set() {
                return;
            }
            notified.await;
        }
    }

    fn set(&self) {
        if !self.set.swap(true, Ordering::AcqRel) {
            self.notify.notify_waiters();
        }
    }
}

impl SubscriptionIndex {
    /// An empty index preparing at most `capacity` webhooks at once (more
    /// only while deliveries hold them).
    pub fn new(defaults: EndpointDefaults, capacity: usize, telemetry: Option<Telemetry>) -> Arc<SubscriptionIndex> {
        let capacity = capacity.max(1);
        Arc::new(SubscriptionIndex {
            index: RwLock::new(Index::new()),
            prepared: Cache::with(
                capacity,
                capacity as u64,
                UnitWeighter,
                quick_cache::DefaultHashBuilder::default(),
                InUse,
            ),
            preparing: Mutex::new(()),
            defaults,
            telemetry,
            loaded: Latch::default(),
            reached: Latch::default(),
        })
    }

    /// The index as it is now.
    pub fn read(&self) -> RwLockReadGuard<'_, Index> {
        self.index.read()
    }

    /// The index, to change (the sync loop does).
    pub fn write(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write()
    }

    /// The webhooks subscribed to `event_type` (of `tenant`, when the event
    /// has one) whose payload filter, if they have one, the event's body
    /// (`payload`) passes, prepared for delivery. A webhook whose filter
    /// turns the event away is not prepared: the event is no delivery of it.
    pub fn route(&self, tenant: Option<&str>, event_type: &str, payload: &Payload<'_>) -> Routed {
        let index = self.read();
        let mut slots = Vec::new();
        index.route(tenant, event_type, &mut slots);
        let mut filtered = 0;
        let targets = slots
            .into_iter()
            .filter_map(|slot| {
                let entry = index.entry(slot)?;
                if entry.filter.as_ref().is_some_and(|f| !f.matches(payload)) {
                    filtered += 1;
                    return None;
                }
                self.prepare(entry)
            })
            .collect();
        Routed { targets, filtered }
    }

    /// The webhook with this id, whatever its status, prepared for delivery.
    pub fn get(&self, id: &str) -> Option<Arc<Target>> {
        let index = self.read();
        index.get(id).and_then(|e| self.prepare(e))
    }

    /// How many webhooks the index holds.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many webhooks are prepared now.
    pub fn prepared(&self) -> usize {
        self.prepared.len()
    }

    /// Forgets the prepared form of a webhook that was deleted. Deliveries
    /// holding it finish with it.
    pub(crate) fn forget(&self, id: &str) {
        self.prepared.remove(id);
    }

    fn prepare(&self, entry: &Entry) -> Option<Arc<Target>> {
        let id = entry.packed.id();
        if let Some((digest, target)) = self.prepared.get(id) {
            if digest == entry.digest {
                return Some(target);
            }
        }
        let _one_at_a_time = self.preparing.lock();
        let previous = match self.prepared.get(id) {
            Some((digest, target)) if digest == entry.digest => return Some(target),
            other => other.map(|(_, t)| t),
        };
        let compiled = entry.packed.unpack().map_err(|e| e.to_string()).and_then(|webhook| {
            Target::compile(webhook, &self.defaults, previous.as_deref()).map_err(|e| e.to_string())
        });
        match compiled {
            Ok(target) => {
                let target = Arc::new(target);
                self.prepared.insert(id.into(), (entry.digest, target.clone()));
                Some(target)
            }
            Err(reason) => {
                // Every stored webhook was checked when it was read, so this
                // is a bug; it is reported, and the event goes on to the
                // webhook's other subscribers.
                if let Some(t) = &self.telemetry {
                    t.subscription_record_invalid(id, &reason, false);
                }
                None
            }
        }
    }

    /// Whether a full load has completed at least once.
    pub fn is_loaded(&self) -> bool {
        self.loaded.is_set()
    }

    /// Waits until the first full load has completed.
    pub async fn wait_loaded(&self) {
        self.loaded.wait().await
    }

    pub(crate) fn mark_loaded(&self) {
        self.loaded.set()
    }

    /// Waits until the first load has begun: Redis has been reached.
    pub async fn wait_reached(&self) {
        self.reached.wait().await
    }

    pub(crate) fn mark_reached(&self) {
        self.reached.set()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subscriptions::packed::Packed;
    use crate::webhook::tests::webhook;
    use std::time::Duration;

    const DEFAULTS: EndpointDefaults = EndpointDefaults {
        max_in_flight: 4,
        max_queue_wait: Duration::from_secs(1),
        request_timeout: Duration::from_secs(1),
        default_rate: None,
    };

    fn put(live: &SubscriptionIndex, w: &crate::webhook::Webhook, digest: u64) {
        live.write()
            .upsert(Entry {
                packed: Packed::pack(w),
                digest,
                status: w.status,
                seen: 0,
                filter: w.filter.clone().map(Box::new),
            })
            .unwrap();
    }

    /// The webhooks an event with body `{}` of `event_type` goes to.
    fn route(live: &SubscriptionIndex, event_type: &str) -> Vec<Arc<Target>> {
        live.route(None, event_type, &Payload::new(b"{}", None)).targets
    }

    #[test]
    fn a_webhook_whose_filter_turns_an_event_away_is_not_prepared_for_it() {
        use crate::routing::filter::Filter;
        let live = SubscriptionIndex::new(DEFAULTS, 4, None);
        let mut pro = webhook("pro", "https://example.com/", &["e"]);
        pro.filter = Some(Filter::parse_named(r#"{"/plan": {"=": "pro"}}"#).unwrap());
        put(&live, &pro, 1);
        put(&live, &webhook("all", "https://example.com/", &["e"]), 1);
        let ids = |body: &[u8]| {
            let routed = live.route(None, "e", &Payload::new(body, None));
            let mut ids: Vec<String> = routed.targets.iter().map(|t| t.id().to_owned()).collect();
            ids.sort();
            (ids, routed.filtered)
        };
        assert_eq!(ids(br#"{"plan":"free"}"#), (vec!["all".to_owned()], 1));
        assert_eq!(live.prepared(), 1, "the filtered webhook was not prepared");
        assert_eq!(ids(br#"{"plan":"pro"}"#), (vec!["all".to_owned(), "pro".to_owned()], 0));
        assert_eq!(ids(b"not json"), (vec!["all".to_owned()], 1));
    }

    #[test]
    fn webhooks_are_prepared_when_used_and_kept_within_the_budget() {
        let live = SubscriptionIndex::new(DEFAULTS, 4, None);
        for i in 0..100 {
            put(
                &live,
                &webhook(&format!("wh_{i}"), "https://example.com/", &[&format!("e{i}")]),
                1,
            );
        }
        assert_eq!(live.len(), 100);
        assert_eq!(live.prepared(), 0, "nothing is prepared before it is used");
        let first = route(&live, "e1").pop().unwrap();
        assert_eq!(first.id(), "wh_1");
        assert!(
            Arc::ptr_eq(&first, &live.get("wh_1").unwrap()),
            "prepared once, then reused"
        );
        for i in 0..100 {
            assert_eq!(route(&live, &format!("e{i}")).len(), 1);
        }
        assert!(live.prepared() <= 5, "{} prepared", live.prepared());
    }

    #[test]
    fn a_webhook_in_use_keeps_its_request_slots_and_an_edit_takes_effect() {
        let live = SubscriptionIndex::new(DEFAULTS, 2, None);
        let mut w = webhook("busy", "https://example.com/", &["e"]);
        put(&live, &w, 1);
        let held = live.get("busy").unwrap();
        // Many other webhooks go through the cache meanwhile.
        for i in 0..50 {
            put(&live, &webhook(&format!("o{i}"), "https://example.com/", &["o"]), 1);
        }
        for _ in 0..3 {
            assert_eq!(route(&live, "o").len(), 50);
        }
        let again = live.get("busy").unwrap();
        assert!(Arc::ptr_eq(&held.limiter, &again.limiter), "in use: never evicted");

        // An edit is prepared afresh, keeping the endpoint's slots.
        w.url = "https://example.org/".into();
        put(&live, &w, 2);
        let edited = live.get("busy").unwrap();
        assert_eq!(edited.url.as_str(), "https://example.org/");
        assert!(Arc::ptr_eq(&held.limiter, &edited.limiter));
    }
}

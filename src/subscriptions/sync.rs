//! Keeps the in-memory subscription index in step with Redis.
//!
//! The loop subscribes to the change channel first and then loads everything,
//! so no change made during the load is missed; each announced id is re-read
//! and the index rebuilt and swapped atomically. A full reload runs
//! periodically and after every reconnect, which heals any announcement missed
//! while disconnected. While Redis is unreachable the pipeline keeps routing
//! with the last index; the loop reconnects with jittered exponential backoff.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use futures::{FutureExt, StreamExt};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::config::SubscriptionsConfig;
use crate::delivery::target::{EndpointDefaults, Target};
use crate::routing::index::Index;
use crate::subscriptions::model::WebhookStatus;
use crate::subscriptions::store::{Keys, Loaded, StoreError, SubscriptionStore};
use crate::telemetry::Telemetry;

/// The current index, shared by the pipeline (reads) and the sync loop (swaps).
#[derive(Default)]
pub struct SubscriptionIndex {
    current: ArcSwap<Index>,
    loaded: AtomicBool,
    loaded_notify: Notify,
}

impl SubscriptionIndex {
    pub fn new() -> Arc<SubscriptionIndex> {
        Arc::new(SubscriptionIndex::default())
    }

    /// The current snapshot.
    pub fn load(&self) -> arc_swap::Guard<Arc<Index>> {
        self.current.load()
    }

    /// Whether a full load has completed at least once.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Waits until the first full load has completed.
    pub async fn wait_loaded(&self) {
        loop {
            let notified = self.loaded_notify.notified();
            if self.is_loaded() {
                return;
            }
            notified.await;
        }
    }

    fn publish(&self, index: Index, full: bool) {
        self.current.store(Arc::new(index));
        if full && !self.loaded.swap(true, Ordering::AcqRel) {
            self.loaded_notify.notify_waiters();
        }
    }
}

/// Everything the sync loop needs.
pub struct SyncTask {
    pub client: redis::Client,
    pub prefix: String,
    pub config: SubscriptionsConfig,
    pub defaults: EndpointDefaults,
    pub index: Arc<SubscriptionIndex>,
    pub telemetry: Telemetry,
}

/// The loop's own copy of every compiled webhook, by id.
struct State {
    targets: BTreeMap<String, Arc<Target>>,
    /// The store's tenant sets are known to hold every webhook.
    tenants_indexed: bool,
}

enum Disconnect {
    Shutdown,
    Lost(&'static str, String),
}

impl SyncTask {
    /// Runs until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut state = State {
            targets: BTreeMap::new(),
            tenants_indexed: false,
        };
        let mut backoff = self.backoff();
        loop {
            match self.connected_cycle(&mut state, &shutdown, &mut backoff).await {
                Disconnect::Shutdown => return,
                Disconnect::Lost(stage, error) => {
                    self.telemetry.redis_connected(false);
                    let delay = backoff.next().unwrap_or(self.config.reconnect_max_delay);
                    self.telemetry.subscription_error(stage, &error, Some(delay));
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    fn backoff(&self) -> ExponentialBackoff {
        ExponentialBuilder::default()
            .with_min_delay(self.config.reconnect_min_delay)
            .with_max_delay(self.config.reconnect_max_delay)
            .with_jitter()
            .without_max_times()
            .build()
    }

    /// Connects, loads everything, then follows announcements until the
    /// connection is lost or shutdown.
    async fn connected_cycle(
        &self,
        state: &mut State,
        shutdown: &CancellationToken,
        backoff: &mut ExponentialBackoff,
    ) -> Disconnect {
        let keys = Keys::new(self.prefix.clone());
        let mut pubsub = match self.client.get_async_pubsub().await {
            Ok(p) => p,
            Err(e) => return Disconnect::Lost("connect", e.to_string()),
        };
        if let Err(e) = pubsub.subscribe(keys.changes()).await {
            return Disconnect::Lost("subscribe", e.to_string());
        }
        let store = match SubscriptionStore::connect(&self.client, &self.prefix).await {
            Ok(s) => s,
            Err(e) => return Disconnect::Lost("connect", e.to_string()),
        };
        if let Err(e) = self.full_reload(&store, state).await {
            return Disconnect::Lost("load", e.to_string());
        }
        self.telemetry.redis_connected(true);
        *backoff = self.backoff();

        let mut messages = pubsub.on_message();
        let mut resync = tokio::time::interval(self.config.resync_interval);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        resync.reset();
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return Disconnect::Shutdown,
                message = messages.next() => {
                    let Some(message) = message else {
                        return Disconnect::Lost("subscribe", "change feed connection closed".into());
                    };
                    let mut changed = BTreeSet::new();
                    changed.insert(String::from_utf8_lossy(message.get_payload_bytes()).into_owned());
                    // Take every announcement already waiting, to apply them in one swap.
                    while let Some(Some(more)) = messages.next().now_or_never() {
                        changed.insert(String::from_utf8_lossy(more.get_payload_bytes()).into_owned());
                    }
                    if let Err(e) = self.apply_changes(&store, state, changed).await {
                        return Disconnect::Lost("load", e.to_string());
                    }
                }
                _ = resync.tick() => {
                    if let Err(e) = self.full_reload(&store, state).await {
                        return Disconnect::Lost("load", e.to_string());
                    }
                }
            }
        }
    }

    async fn full_reload(&self, store: &SubscriptionStore, state: &mut State) -> Result<(), StoreError> {
        let loaded = store.load_all().await?;
        // Filled once per prefix (one EXISTS per full load shows whether Redis
        // still has them); after that, only the changes this load finds.
        let follow = match store.index_tenants_once(&loaded).await {
            Ok(filled) => {
                let follow = state.tenants_indexed && !filled;
                state.tenants_indexed = true;
                follow
            }
            Err(e) => {
                tracing::warn!(error = %e, "tenant sets not checked; the next full load retries");
                state.tenants_indexed
            }
        };
        let mut targets = BTreeMap::new();
        for record in loaded {
            if let Some((id, target)) = self.compile(record, state) {
                targets.insert(id, target);
            }
        }
        let previous = std::mem::replace(&mut state.targets, targets);
        if follow {
            let ids: BTreeSet<&String> = previous.keys().chain(state.targets.keys()).collect();
            self.follow_tenants(store, &previous, &state.targets, ids).await;
        }
        self.publish(state, true);
        Ok(())
    }

    /// Keeps the store's tenant sets in step with the webhooks among `ids`
    /// whose tenant changed between `before` and `after` (created, deleted
    /// or moved, by any writer), so a tenant's list and quota see them.
    async fn follow_tenants<'a>(
        &self,
        store: &SubscriptionStore,
        before: &BTreeMap<String, Arc<Target>>,
        after: &BTreeMap<String, Arc<Target>>,
        ids: impl IntoIterator<Item = &'a String>,
    ) {
        let tenant = |map: &BTreeMap<String, Arc<Target>>, id: &str| map.get(id).and_then(|t| t.webhook.tenant.clone());
        let moves: Vec<(String, Option<String>, Option<String>)> = ids
            .into_iter()
            .filter_map(|id| {
                let (old, new) = (tenant(before, id), tenant(after, id));
                (old != new).then(|| (id.clone(), old, new))
            })
            .collect();
        if moves.is_empty() {
            return;
        }
        if let Err(e) = store.move_tenants(&moves).await {
            tracing::warn!(error = %e, webhooks = moves.len(), "tenant sets not updated; the next full sync retries");
        }
    }

    async fn apply_changes(
        &self,
        store: &SubscriptionStore,
        state: &mut State,
        ids: BTreeSet<String>,
    ) -> Result<(), StoreError> {
        let ids: Vec<String> = ids.into_iter().collect();
        let loaded = store.get_many(&ids).await?;
        let mut before = BTreeMap::new();
        for (id, record) in ids.iter().zip(loaded) {
            let old = match self.compile(record, state) {
                Some((id, target)) => state.targets.insert(id, target),
                None => state.targets.remove(id),
            };
            if let Some(old) = old {
                before.insert(id.clone(), old);
            }
        }
        if state.tenants_indexed {
            self.follow_tenants(store, &before, &state.targets, &ids).await;
        }
        self.publish(state, false);
        Ok(())
    }

    /// A record ready for the index, or `None` (deleted, or invalid and never
    /// seen valid). A document that stops being usable (another writer broke
    /// it) keeps its last good version in the index, so its events are still
    /// delivered, not committed as having no subscriber; the error is logged
    /// and counted at every sync until it is fixed or deleted.
    fn compile(&self, record: Loaded, state: &State) -> Option<(String, Arc<Target>)> {
        let (id, key, reason) = match record {
            Loaded::Webhook(webhook) => {
                let previous = state.targets.get(&webhook.id).map(Arc::as_ref);
                let id = webhook.id.clone();
                match Target::compile(*webhook, &self.defaults, previous) {
                    Ok(target) => return Some((id, Arc::new(target))),
                    Err(reason) => {
                        let key = Keys::new(self.prefix.clone()).webhook(&id);
                        (id, key, reason)
                    }
                }
            }
            Loaded::Invalid { id, key, reason } => (id, key, reason),
            Loaded::Missing(_) => return None,
        };
        let last_good = state.targets.get(&id).cloned();
        self.telemetry
            .subscription_record_invalid(&key, &reason, last_good.is_some());
        last_good.map(|target| (id, target))
    }

    fn publish(&self, state: &State, full: bool) {
        let index = Index::build(state.targets.values().cloned());
        let counts = WebhookStatus::ALL.map(|s| (s.as_str(), index.count(s)));
        self.index.publish(index, full);
        self.telemetry
            .subscriptions_synced(if full { "full" } else { "change" }, counts);
    }
}

//! Keeps the live subscription index in step with Redis, doing work in
//! proportion to what changed, not to the number of webhooks.
//!
//! - At start the loop subscribes to the change channel, notes the change
//!   log's last entry, then reads every document (an audit, below). The
//!   replica is ready when that read completes.
//! - Each announced id is read again and applied within a second.
//! - Every `subscriptions.resync_interval` the change log
//!   (`{prefix}webhooks:log`) is read from the last entry applied: one small
//!   read when nothing changed, and it heals announcements missed while
//!   disconnected. When the entry read last is no longer in the log (the log
//!   was trimmed past it, or lost with Redis), an audit runs.
//! - An audit scans the id set in batches and reads every document, but
//!   parses only those whose bytes changed (a digest per webhook) and changes
//!   only those webhooks; webhooks whose id was not found are removed at the
//!   end. Announcements and the log are served between its batches. Audits
//!   run at start, after a reconnect, on a gap in the log, and every
//!   `subscriptions.audit_interval` for writers that neither log nor
//!   announce.
//!
//! While Redis is unreachable the pipeline keeps routing with what it has;
//! the loop reconnects with jittered exponential backoff.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};
use futures::{FutureExt, StreamExt, TryStreamExt};
use tokio_util::sync::CancellationToken;

use crate::config::subscriptions::SubscriptionsConfig;
use crate::subscriptions::index::Entry;
use crate::subscriptions::store::{decode_packed, Keys, StoreError, SubscriptionStore};
use crate::telemetry::Telemetry;

use crate::subscriptions::live::SubscriptionIndex;

/// Ids read per step of an audit (`SSCAN ... COUNT`, then one `MGET`).
const AUDIT_BATCH: usize = 1000;
/// Ids read per step of the first read, which nothing waits on.
const LOAD_BATCH: usize = 4000;
/// Batches of the first read fetched and parsed at once.
const LOAD_AHEAD: usize = 4;
/// Change log entries read per round trip.
const LOG_BATCH: usize = 1000;

/// Everything the sync loop needs.
pub struct SyncTask {
    pub client: redis::Client,
    pub prefix: String,
    pub config: SubscriptionsConfig,
    pub index: Arc<SubscriptionIndex>,
    pub telemetry: Telemetry,
}

/// A read of every document, one batch at a time.
#[derive(Debug)]
struct Audit {
    cursor: u64,
    generation: u32,
    /// The tenant sets are being filled by this read.
    fill_tenants: bool,
    /// Ids the scan returned (some may come twice).
    found: usize,
}

/// What the loop remembers across reconnects.
#[derive(Debug, Default)]
struct State {
    /// The last change log entry applied; `None` before the first read.
    log: Option<String>,
    /// The generation of the latest audit; webhooks it (or a change applied
    /// during it) confirmed carry it.
    generation: u32,
    audit: Option<Audit>,
    /// The store's tenant sets are known to hold every webhook.
    tenants_indexed: bool,
}

enum Disconnect {
    Shutdown,
    Lost(&'static str, String),
}

/// What woke the loop.
enum Wake {
    Announced(Vec<String>),
    ReadLog,
    StartAudit,
    AuditStep,
}

impl SyncTask {
    /// Runs until `shutdown` is cancelled.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut state = State::default();
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

    /// Connects, catches up, then follows announcements, the log and audits
    /// until the connection is lost or shutdown.
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
        let caught_up = async {
            if !self.index.is_loaded() {
                // The first read (again, if the last attempt failed part way):
                // the log's tail first, so whatever changes during the read
                // is applied after it.
                let started = std::time::Instant::now();
                self.index.mark_reached();
                tracing::info!("loading subscriptions from Redis");
                state.log = Some(store.log_tail().await?);
                self.load_everything(&store, state).await?;
                self.catch_up(&store, state).await?;
                self.index.mark_loaded();
                tracing::info!(
                    webhooks = self.index.len(),
                    seconds = started.elapsed().as_secs_f64(),
                    "subscriptions loaded"
                );
                Ok(())
            } else {
                // Announcements of writers that do not log may have been
                // missed while disconnected.
                self.catch_up(&store, state).await?;
                if state.audit.is_none() {
                    self.start_audit(&store, state).await?;
                }
                Ok(())
            }
        };
        let caught_up: Result<(), StoreError> = tokio::select! {
            r = caught_up => r,
            _ = shutdown.cancelled() => return Disconnect::Shutdown,
        };
        if let Err(e) = caught_up {
            return Disconnect::Lost("load", e.to_string());
        }
        self.telemetry.redis_connected(true);
        *backoff = self.backoff();

        let mut messages = pubsub.on_message();
        let mut resync = tokio::time::interval(self.config.resync_interval);
        resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        resync.reset();
        // Zero: never; an interval still needs a period.
        let audits_on = !self.config.audit_interval.is_zero();
        let mut audits = tokio::time::interval(self.config.audit_interval.max(Duration::from_secs(1)));
        audits.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        audits.reset();
        loop {
            let auditing = state.audit.is_some();
            // Announcements first, then the log, then the next audit batch.
            let wake = tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Disconnect::Shutdown,
                message = messages.next() => {
                    let Some(message) = message else {
                        return Disconnect::Lost("subscribe", "change feed connection closed".into());
                    };
                    let mut changed = BTreeSet::new();
                    changed.insert(String::from_utf8_lossy(message.get_payload_bytes()).into_owned());
                    // Take every announcement already waiting, to apply them at once.
                    while let Some(Some(more)) = messages.next().now_or_never() {
                        changed.insert(String::from_utf8_lossy(more.get_payload_bytes()).into_owned());
                    }
                    Wake::Announced(changed.into_iter().collect())
                }
                _ = resync.tick() => Wake::ReadLog,
                _ = audits.tick(), if audits_on && !auditing => Wake::StartAudit,
                _ = std::future::ready(()), if auditing => Wake::AuditStep,
            };
            let done = match wake {
                Wake::Announced(ids) => self.apply_ids(&store, state, &ids).await,
                Wake::ReadLog => match self.catch_up(&store, state).await {
                    Ok(()) => self.check_tenant_sets(&store, state).await,
                    Err(e) => Err(e),
                },
                Wake::StartAudit => self.start_audit(&store, state).await,
                Wake::AuditStep => self.audit_step(&store, state).await,
            };
            if let Err(e) = done {
                return Disconnect::Lost("load", e.to_string());
            }
        }
    }

    /// Applies the change log from the last entry applied. A gap (the entry
    /// is no longer there) starts an audit from the log's current tail.
    async fn catch_up(&self, store: &SubscriptionStore, state: &mut State) -> Result<(), StoreError> {
        loop {
            let Some(from) = state.log.clone() else { return Ok(()) };
            let Some(entries) = store.log_after(&from, LOG_BATCH).await? else {
                tracing::warn!(
                    after = %from,
                    "the change log no longer holds the last change read; reading every webhook again"
                );
                state.log = Some(store.log_tail().await?);
                state.audit = None;
                return self.start_audit(store, state).await;
            };
            let Some(last) = entries.last() else { return Ok(()) };
            let last = last.at.clone();
            // A full page may have more behind it, even when its entries
            // name few webhooks (one changed many times).
            let full = entries.len() >= LOG_BATCH;
            let ids: BTreeSet<String> = entries.into_iter().filter_map(|e| e.webhook).collect();
            let ids: Vec<String> = ids.into_iter().collect();
            if !ids.is_empty() {
                self.apply_ids(store, state, &ids).await?;
            }
            state.log = Some(last);
            if !full {
                return Ok(());
            }
        }
    }

    /// Starts an audit that fills the tenant sets again when Redis lost them
    /// (a restart without persistence, a flush: the marker is gone too).
    async fn check_tenant_sets(&self, store: &SubscriptionStore, state: &mut State) -> Result<(), StoreError> {
        if !state.tenants_indexed || state.audit.is_some() || store.tenants_indexed().await? {
            return Ok(());
        }
        tracing::warn!("the tenant sets are gone from Redis; reading every webhook to fill them again");
        self.start_audit(store, state).await
    }

    async fn start_audit(&self, store: &SubscriptionStore, state: &mut State) -> Result<(), StoreError> {
        // Filled once per prefix (one EXISTS per audit shows whether Redis
        // still has them); after that, followed change by change.
        let indexed = store.tenants_indexed().await?;
        state.tenants_indexed = indexed;
        state.generation = state.generation.wrapping_add(1);
        state.audit = Some(Audit {
            cursor: 0,
            generation: state.generation,
            fill_tenants: !indexed,
            found: 0,
        });
        Ok(())
    }

    /// Reads one batch of the audit; at the end, removes the webhooks whose
    /// id it did not find.
    async fn audit_step(&self, store: &SubscriptionStore, state: &mut State) -> Result<(), StoreError> {
        let Some(audit) = &state.audit else { return Ok(()) };
        let (cursor, fill) = (audit.cursor, audit.fill_tenants);
        let (next, ids) = store.scan_ids(cursor, AUDIT_BATCH).await?;
        let docs = store.get_raw(&ids).await?;
        self.apply_docs(store, state, &ids, docs).await;
        if fill {
            let members: Vec<(String, String)> = {
                let index = self.index.read();
                ids.iter()
                    .filter_map(|id| {
                        let entry = index.get(id)?;
                        let tenant = entry.packed.routing().ok()?.tenant?.to_owned();
                        Some((tenant, id.clone()))
                    })
                    .collect()
            };
            let members: Vec<(&str, &str)> = members.iter().map(|(t, i)| (t.as_str(), i.as_str())).collect();
            store.add_to_tenant_sets(&members).await?;
        }
        let Some(audit) = state.audit.as_mut() else {
            return Ok(());
        };
        audit.cursor = next;
        audit.found += ids.len();
        if next != 0 {
            return Ok(());
        }
        self.finish_audit(store, state).await
    }

    /// Ends the audit: what it did not find is gone, unless it found no
    /// webhook at all. Redis emptied (flushed, or restarted without its
    /// data) is not every webhook deleted: the index is kept, and routes as
    /// before, until the webhooks are written again (each write applies) or
    /// an audit finds some. Deletions that are logged or announced apply
    /// one by one as ever, so only a writer that deletes the last webhooks
    /// without either leaves them indexed.
    async fn finish_audit(&self, store: &SubscriptionStore, state: &mut State) -> Result<(), StoreError> {
        let Some(audit) = state.audit.take() else { return Ok(()) };
        let gone = self.index.read().unconfirmed(audit.generation);
        if audit.found == 0 && !gone.is_empty() {
            tracing::warn!(
                kept = gone.len(),
                "Redis holds no webhook while the index holds some (flushed, or restarted without its data?); \
                 the index is kept until webhooks are written again"
            );
            self.telemetry.subscriptions_synced("full", self.index.read().counts());
            return Ok(());
        }
        if !gone.is_empty() {
            let docs = vec![None; gone.len()];
            self.apply_docs(store, state, &gone, docs).await;
        }
        if audit.fill_tenants {
            match store.mark_tenants_indexed().await {
                Ok(()) => state.tenants_indexed = true,
                Err(e) => {
                    tracing::warn!(error = %e, "tenant sets not marked complete; the next audit fills them again")
                }
            }
        }
        self.telemetry.subscriptions_synced("full", self.index.read().counts());
        Ok(())
    }

    async fn apply_ids(&self, store: &SubscriptionStore, state: &mut State, ids: &[String]) -> Result<(), StoreError> {
        let docs = store.get_raw(ids).await?;
        self.apply_docs(store, state, ids, docs).await;
        self.telemetry
            .subscriptions_synced("change", self.index.read().counts());
        Ok(())
    }

    /// Applies the documents read for `ids` (`None`: none stored). A
    /// document whose digest is the one indexed is unchanged and not parsed.
    async fn apply_docs(&self, store: &SubscriptionStore, state: &State, ids: &[String], docs: Vec<Option<Vec<u8>>>) {
        let indexed = {
            let index = self.index.read();
            ids.iter().map(|id| index.get(id).map(|e| e.digest)).collect()
        };
        let batch = Batch::read(ids.to_vec(), docs, indexed, state.generation);
        self.apply_batch(store, state, batch).await;
    }

    /// Applies a batch read. A document that stops being usable (another
    /// writer broke it) keeps its last good version in the index, so its
    /// events are still delivered, not committed as having no subscriber;
    /// the error is logged and counted each time it is read, until it is
    /// fixed or deleted.
    async fn apply_batch(&self, store: &SubscriptionStore, state: &State, batch: Batch) {
        let generation = batch.generation;
        let mut moves = Vec::new();
        let mut invalid = Vec::new();
        let mut counts = [0u64; 4];
        for (_, read) in &batch.read {
            counts[match read {
                Read::Unchanged => 0,
                Read::Webhook { .. } => 1,
                Read::Invalid(_) => 2,
                Read::Missing => 3,
            }] += 1;
        }
        self.telemetry
            .subscription_documents_read(counts, self.index.prepared());
        {
            let mut index = self.index.write();
            for (id, read) in batch.read {
                let before = || {
                    index
                        .get(&id)
                        .and_then(|e| e.packed.routing().ok())
                        .map(|r| r.tenant.map(str::to_owned))
                };
                let (old, new) = match read {
                    Read::Unchanged => {
                        index.confirm(&id, generation);
                        continue;
                    }
                    Read::Invalid(reason) => {
                        let kept = index.get(&id).is_some();
                        index.confirm(&id, generation);
                        invalid.push((id, reason, kept));
                        continue;
                    }
                    Read::Missing => {
                        let old = before().flatten();
                        if index.remove(&id).is_none() {
                            continue;
                        }
                        self.index.forget(&id);
                        (old, None)
                    }
                    Read::Webhook { entry, tenant } => match index.upsert(entry) {
                        Ok(Some(old)) => (
                            old.packed.routing().ok().and_then(|r| r.tenant.map(str::to_owned)),
                            tenant,
                        ),
                        Ok(None) => (None, tenant),
                        Err(e) => {
                            invalid.push((id, e.to_string(), false));
                            continue;
                        }
                    },
                };
                if old != new {
                    moves.push((id, old, new));
                }
            }
        }
        for (id, reason, kept) in invalid {
            self.telemetry
                .subscription_record_invalid(&store.keys().webhook(&id), &reason, kept);
        }
        // Keep the store's tenant sets in step with webhooks whose tenant
        // changed (created, deleted or moved, by any writer), so a tenant's
        // list and quota see them. While they are being filled, the fill
        // adds what is there.
        if state.tenants_indexed && !moves.is_empty() {
            if let Err(e) = store.move_tenants(&moves).await {
                tracing::warn!(error = %e, webhooks = moves.len(), "tenant sets not updated; the next audit retries");
            }
        }
    }

    /// The first read of every document, as fast as Redis serves them:
    /// batches are fetched and parsed a few at a time, on other threads,
    /// while earlier ones are indexed.
    async fn load_everything(&self, store: &SubscriptionStore, state: &mut State) -> Result<(), StoreError> {
        self.start_audit(store, state).await?;
        let Some(mut audit) = state.audit.take() else {
            return Ok(());
        };
        // Filling the tenant sets (once per prefix) waits until the replica
        // is ready: an audit right after the load does it.
        let fill_after = std::mem::take(&mut audit.fill_tenants);
        let generation = audit.generation;
        let expected = store.count_ids().await?;
        self.index.write().reserve(expected);
        // Batches are fetched and parsed by a task of their own, so the next
        // ones are on their way while this one indexes the last. The scan has
        // a connection of its own, so its small replies are not held behind
        // the documents' large ones, and the documents come over two, so that
        // two tasks parse their replies.
        let scanner = store.with_own_connection().await?;
        let fetchers = [store.clone(), store.with_own_connection().await?];
        let (sender, mut fetched) = tokio::sync::mpsc::channel(LOAD_AHEAD);
        let fetching = tokio::spawn(async move {
            let scans = futures::stream::try_unfold((scanner, Some(0u64)), |(store, cursor)| async move {
                let Some(cursor) = cursor else { return Ok(None) };
                let (next, ids) = store.scan_ids(cursor, LOAD_BATCH).await?;
                Ok::<_, StoreError>(Some((ids, (store, (next != 0).then_some(next)))))
            });
            let mut turn = 0usize;
            let mut batches = std::pin::pin!(scans
                .map_ok(move |ids| {
                    turn += 1;
                    let store = fetchers[turn % fetchers.len()].clone();
                    async move {
                        let docs = store.get_raw(&ids).await?;
                        let empty = vec![None; ids.len()];
                        tokio::task::spawn_blocking(move || Batch::read(ids, docs, empty, generation))
                            .await
                            .map_err(|e| StoreError::Task(e.to_string()))
                    }
                })
                .try_buffered(LOAD_AHEAD));
            // Ends at the first error (sent on) or when the load stops listening.
            while let Some(batch) = batches.next().await {
                let failed = batch.is_err();
                if sender.send(batch).await.is_err() || failed {
                    break;
                }
            }
        });
        while let Some(batch) = fetched.recv().await {
            self.apply_batch(store, state, batch?).await;
        }
        // The channel also closes when the task died: then the load is not whole.
        fetching.await.map_err(|e| StoreError::Task(e.to_string()))?;
        state.audit = Some(Audit { cursor: 0, ..audit });
        self.finish_audit(store, state).await?;
        if fill_after {
            self.start_audit(store, state).await?;
        }
        Ok(())
    }
}

/// What one document read turned out to be.
enum Read {
    /// The same bytes as the webhook indexed.
    Unchanged,
    Webhook {
        entry: Entry,
        tenant: Option<String>,
    },
    Invalid(String),
    Missing,
}

/// Documents read and parsed, ready to apply.
struct Batch {
    generation: u32,
    read: Vec<(String, Read)>,
}

impl Batch {
    /// Parses `docs` (read for `ids`), skipping those whose digest is the one
    /// `indexed`.
    fn read(ids: Vec<String>, docs: Vec<Option<Vec<u8>>>, indexed: Vec<Option<u64>>, generation: u32) -> Batch {
        let read = ids
            .into_iter()
            .zip(docs)
            .zip(indexed)
            .map(|((id, doc), indexed)| {
                let Some(doc) = doc else { return (id, Read::Missing) };
                let digest = xxhash_rust::xxh3::xxh3_64(&doc);
                if indexed == Some(digest) {
                    return (id, Read::Unchanged);
                }
                let read = match decode_packed(&id, &doc) {
                    Ok(checked) => Read::Webhook {
                        entry: Entry {
                            packed: checked.packed,
                            digest,
                            status: checked.status,
                            seen: generation,
                            filter: checked.filter,
                        },
                        tenant: checked.tenant,
                    },
                    Err(reason) => Read::Invalid(reason),
                };
                (id, read)
            })
            .collect();
        Batch { generation, read }
    }
}

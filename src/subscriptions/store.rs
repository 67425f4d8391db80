//! The subscription store: the only code that reads or writes webhook keys.
//!
//! Keys (with the configured prefix, `herald:` by default):
//! - `{prefix}webhook:{id}`: the webhook document as JSON;
//! - `{prefix}webhooks`: the set of ids;
//! - `{prefix}webhooks:changed`: channel on which every change publishes the id;
//! - `{prefix}webhooks:log`: stream to which every change appends the id.
//!
//! Writes are one `MULTI` transaction (document, set, log entry, announcement), so a
//! reader never sees an id without its document, and every replica hears of
//! every change. Herald's pipeline, its tools and the admin API all go through
//! this module; other services may write the same keys following
//! `docs/subscriptions.md`.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::AsyncCommands;

use crate::routing::filter::Filter;
use crate::subscriptions::packed::{Document, Packed};
use crate::webhook::{check, Fields, InvalidWebhook, Webhook, WebhookStatus};

/// Creates a webhook within its tenant's quota and announces it
/// (store_create.lua after tenant_set_prune.lua, built once).
static CREATE: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(concat!(
        include_str!("tenant_set_prune.lua"),
        include_str!("store_create.lua")
    ))
});

/// Writes a webhook if its document is still the one read, and announces it (store_update.lua, built once).
static UPDATE: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("store_update.lua")));

/// Counts failed deliveries in a webhook's failure streak (store_record_failures.lua, built once).
static RECORD_FAILURES: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("store_record_failures.lua")));

/// Deletes a webhook and its id from its tenant's set, and announces it (store_delete.lua, built once).
static DELETE: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("store_delete.lua")));

/// How many keys one command names when many are read or written (`MGET`,
/// `SADD`, `SREM` in chunks).
const CHUNK: usize = 500;

/// About how many entries the change log keeps (`XADD ... MAXLEN ~`). A
/// replica that falls further behind than this reads every document again.
pub const LOG_LENGTH: usize = 100_000;

/// One entry of the change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The stream entry id (`ms-seq`).
    pub at: String,
    /// The webhook that changed; `None` for an entry naming none (the mark a
    /// replica writes in an empty log).
    pub webhook: Option<String>,
}

/// The key names for one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// The keys under `prefix` (`redis.prefix`).
    pub fn new(prefix: impl Into<String>) -> Self {
        Keys { prefix: prefix.into() }
    }

    /// `{prefix}webhook:{id}`
    pub fn webhook(&self, id: &str) -> String {
        format!("{}webhook:{id}", self.prefix)
    }

    /// `{prefix}webhooks`
    pub fn ids(&self) -> String {
        format!("{}webhooks", self.prefix)
    }

    /// `{prefix}webhooks:changed`
    pub fn changes(&self) -> String {
        format!("{}webhooks:changed", self.prefix)
    }

    /// `{prefix}webhooks:log`: a stream with one entry (field `id`) per change,
    /// so a replica reads what changed since it last looked.
    pub fn log(&self) -> String {
        format!("{}webhooks:log", self.prefix)
    }

    /// `{prefix}tenant:{tenant}:webhooks`: the ids of a tenant's webhooks,
    /// kept by Herald's writes (for the per-tenant quota).
    pub fn tenant(&self, tenant: &str) -> String {
        format!("{}tenant:{tenant}:webhooks", self.prefix)
    }

    /// `{prefix}tenants:indexed`: set once every webhook written before the
    /// tenant sets existed has been added to its set.
    pub fn tenants_indexed(&self) -> String {
        format!("{}tenants:indexed", self.prefix)
    }

    /// `{prefix}health:{id}`: the webhook's failure streak (a hash of
    /// `failures`, `first_failure_at`, `last_success_at`, epoch ms).
    pub fn health(&self, id: &str) -> String {
        format!("{}health:{id}", self.prefix)
    }
}

/// What [`SubscriptionStore::create_within`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Created,
    /// A webhook with that id exists.
    Exists,
    /// The tenant has its quota of webhooks.
    OverQuota,
    /// The key that had to exist (the tenant's registration) does not.
    NoTenant,
}

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("invalid webhook: {0}")]
    Invalid(#[from] InvalidWebhook),
    #[error("webhook record {key} is unusable: {reason}")]
    InvalidRecord { key: String, reason: String },
    #[error("webhook {0} kept changing under a compare-and-set; try again")]
    Contended(String),
    #[error("reading webhook documents stopped: {0}")]
    Task(String),
}

/// An [`SubscriptionStore::update`] that did not happen.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError<E> {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The change itself refused.
    #[error("change refused")]
    Rejected(E),
}

/// How often [`SubscriptionStore::update`] retries a compare-and-set.
const UPDATE_ATTEMPTS: usize = 20;

/// One record read from Redis: usable, or the reason it is not.
#[derive(Debug)]
pub enum Loaded {
    Webhook(Box<Webhook>),
    /// The key exists but its content is unusable; reported, and the last
    /// good version of the webhook (if any) goes on being used.
    Invalid {
        id: String,
        key: String,
        reason: String,
    },
    /// The id has no document (deleted).
    Missing(String),
}

/// Reads and writes webhooks in Redis.
#[derive(Clone)]
pub struct SubscriptionStore {
    client: redis::Client,
    conn: ConnectionManager,
    keys: Keys,
}

impl SubscriptionStore {
    /// Connects to Redis. The connection reconnects by itself after errors.
    pub async fn connect(client: &redis::Client, prefix: &str) -> Result<SubscriptionStore, StoreError> {
        let config = crate::config::redis::RedisConfig::connection_config();
        let conn = client.get_connection_manager_with_config(config).await?;
        Ok(SubscriptionStore::over(client, conn, prefix))
    }

    /// The store over a connection shared with other parts (`conn`, made
    /// from `client`).
    pub fn over(client: &redis::Client, conn: ConnectionManager, prefix: &str) -> SubscriptionStore {
        SubscriptionStore {
            client: client.clone(),
            conn,
            keys: Keys::new(prefix),
        }
    }

    /// The same store over a connection of its own: commands on one
    /// connection are answered in order, so a small one sent on another is
    /// not held behind large replies, and each connection's replies are
    /// parsed by its own task.
    pub async fn with_own_connection(&self) -> Result<SubscriptionStore, StoreError> {
        SubscriptionStore::connect(&self.client, &self.keys.prefix).await
    }

    /// The keys it reads and writes.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Creates or replaces a webhook and announces the change.
    pub async fn put(&self, webhook: &Webhook) -> Result<(), StoreError> {
        webhook.validate()?;
        let json = serde_json::to_string(webhook).expect("a webhook serialises to JSON");
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .set(self.keys.webhook(&webhook.id), json)
            .ignore()
            .sadd(self.keys.ids(), &webhook.id)
            .ignore();
        if let Some(tenant) = &webhook.tenant {
            pipe.sadd(self.keys.tenant(tenant), &webhook.id).ignore();
        }
        pipe.cmd("XADD")
            .arg(self.keys.log())
            .arg("MAXLEN")
            .arg("~")
            .arg(LOG_LENGTH)
            .arg("*")
            .arg("id")
            .arg(&webhook.id)
            .ignore();
        let () = pipe
            .publish(self.keys.changes(), &webhook.id)
            .ignore()
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Creates a webhook unless one with its id exists (`false` then), and
    /// announces it.
    pub async fn create(&self, webhook: &Webhook) -> Result<bool, StoreError> {
        Ok(self.create_within(webhook, None, None).await? == Created::Created)
    }

    /// Creates a webhook unless one with its id exists, or its tenant already
    /// has `quota` webhooks, or key `registered` (when given) is missing, and
    /// announces it.
    pub async fn create_within(
        &self,
        webhook: &Webhook,
        quota: Option<usize>,
        registered: Option<&str>,
    ) -> Result<Created, StoreError> {
        webhook.validate()?;
        let json = serde_json::to_string(webhook).expect("a webhook serialises to JSON");
        // At the quota, members whose document is gone or names another
        // tenant (written by someone else since) are dropped before
        // counting again, so the set never refuses on stale ids.
        let script = &*CREATE;
        let tenant = webhook.tenant.as_deref().unwrap_or("");
        let mut conn = self.conn.clone();
        let created: i64 = script
            .key(self.keys.webhook(&webhook.id))
            .key(self.keys.ids())
            .key(self.keys.health(&webhook.id))
            .key(self.keys.changes())
            .key(self.keys.tenant(tenant))
            .key(self.keys.log())
            .arg(json)
            .arg(&webhook.id)
            .arg(quota.unwrap_or(0))
            .arg(tenant)
            .arg(self.keys.webhook(""))
            .arg(LOG_LENGTH)
            .arg(registered.unwrap_or(""))
            .invoke_async(&mut conn)
            .await?;
        Ok(match created {
            1 => Created::Created,
            0 => Created::Exists,
            -2 => Created::NoTenant,
            _ => Created::OverQuota,
        })
    }

    /// Whether every webhook was once added to its tenant's set (the
    /// marker a replica sets after doing so at a full load). Redis losing the
    /// sets (a restart without persistence, a flush) loses the marker too.
    pub async fn tenants_indexed(&self) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        Ok(conn.exists(self.keys.tenants_indexed()).await?)
    }

    /// Adds webhooks to their tenants' sets: `(tenant, id)`.
    pub async fn add_to_tenant_sets(&self, members: &[(&str, &str)]) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        for chunk in members.chunks(CHUNK) {
            let mut pipe = redis::pipe();
            for (tenant, id) in chunk {
                pipe.sadd(self.keys.tenant(tenant), *id).ignore();
            }
            let () = pipe.query_async(&mut conn).await?;
        }
        Ok(())
    }

    /// Records that every webhook is in its tenant's set.
    pub async fn mark_tenants_indexed(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let () = conn.set(self.keys.tenants_indexed(), 1).await?;
        Ok(())
    }

    /// The change log's last entry id; in an empty log, the id of a mark
    /// written now, so a replica always has a place to read on from.
    pub async fn log_tail(&self) -> Result<String, StoreError> {
        let mut conn = self.conn.clone();
        let last: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(self.keys.log())
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await?;
        if let Some(entry) = last.ids.into_iter().next() {
            return Ok(entry.id);
        }
        let id: String = redis::cmd("XADD")
            .arg(self.keys.log())
            .arg("MAXLEN")
            .arg("~")
            .arg(LOG_LENGTH)
            .arg("*")
            .arg("mark")
            .arg(1)
            .query_async(&mut conn)
            .await?;
        Ok(id)
    }

    /// Up to `count` change log entries after `from`, or `None` when `from`
    /// is no longer in the log (trimmed, or the log was lost): whatever
    /// changed since may not be listed, and every document must be read.
    pub async fn log_after(&self, from: &str, count: usize) -> Result<Option<Vec<LogEntry>>, StoreError> {
        let mut conn = self.conn.clone();
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg(self.keys.log())
            .arg(from)
            .arg("+")
            .arg("COUNT")
            .arg(count + 1)
            .query_async(&mut conn)
            .await?;
        let mut entries = reply.ids.into_iter();
        match entries.next() {
            Some(first) if first.id == from => {}
            _ => return Ok(None),
        }
        Ok(Some(
            entries
                .map(|e| LogEntry {
                    webhook: e.get::<String>("id"),
                    at: e.id,
                })
                .collect(),
        ))
    }

    /// One step of a scan of the id set: the next cursor (0 when done) and
    /// some ids (`SSCAN`: every id present throughout is returned at least
    /// once, and some may come twice).
    pub async fn scan_ids(&self, cursor: u64, count: usize) -> Result<(u64, Vec<String>), StoreError> {
        let mut conn = self.conn.clone();
        let (next, ids): (u64, Vec<String>) = redis::cmd("SSCAN")
            .arg(self.keys.ids())
            .arg(cursor)
            .arg("COUNT")
            .arg(count)
            .query_async(&mut conn)
            .await?;
        Ok((next, ids))
    }

    /// How many ids the id set holds.
    pub async fn count_ids(&self) -> Result<usize, StoreError> {
        let mut conn = self.conn.clone();
        Ok(conn.scard(self.keys.ids()).await?)
    }

    /// The stored documents of `ids`, as bytes, in order.
    pub async fn get_raw(&self, ids: &[String]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        let mut conn = self.conn.clone();
        let keys: Vec<String> = ids.iter().map(|id| self.keys.webhook(id)).collect();
        Ok(match keys.len() {
            0 => Vec::new(),
            1 => vec![conn.get(&keys[0]).await?],
            _ => conn.mget(&keys).await?,
        })
    }

    /// Applies `change` to the webhook as stored and writes the result only if
    /// nobody wrote it in between (a compare-and-set on the stored document,
    /// retried on conflict), so a change made by another replica or the API
    /// at the same moment is never overwritten. `change` returns `Ok(None)`
    /// to leave the webhook as it is. `Ok(None)` when there is no webhook.
    pub async fn update<E>(
        &self,
        id: &str,
        mut change: impl FnMut(&Webhook) -> Result<Option<Webhook>, E>,
    ) -> Result<Option<Webhook>, UpdateError<E>> {
        let script = &*UPDATE;
        use backon::BackoffBuilder;
        let mut backoff = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(2))
            .with_max_delay(Duration::from_millis(200))
            .with_jitter()
            .with_max_times(UPDATE_ATTEMPTS)
            .build();
        loop {
            let mut conn = self.conn.clone();
            let raw: Option<String> = conn.get(self.keys.webhook(id)).await.map_err(StoreError::from)?;
            let Some(raw) = raw else { return Ok(None) };
            let current = match decode(id, self.keys.webhook(id), Some(raw.as_bytes())) {
                Loaded::Webhook(w) => *w,
                Loaded::Missing(_) => return Ok(None),
                Loaded::Invalid { key, reason, .. } => return Err(StoreError::InvalidRecord { key, reason }.into()),
            };
            let Some(next) = change(&current).map_err(UpdateError::Rejected)? else {
                return Ok(Some(current));
            };
            next.validate().map_err(StoreError::from)?;
            let json = serde_json::to_string(&next).expect("a webhook serialises to JSON");
            let written: i64 = script
                .key(self.keys.webhook(id))
                .key(self.keys.ids())
                .key(self.keys.changes())
                .key(self.keys.log())
                .arg(&raw)
                .arg(json)
                .arg(id)
                .arg(LOG_LENGTH)
                .invoke_async(&mut conn)
                .await
                .map_err(StoreError::from)?;
            if written == 1 {
                return Ok(Some(next));
            }
            // Someone wrote in between: wait a little (jittered, so
            // contenders spread out) and apply the change to what is there now.
            match backoff.next() {
                Some(delay) => tokio::time::sleep(delay).await,
                None => return Err(StoreError::Contended(id.to_owned()).into()),
            }
        }
    }

    /// Forgets a webhook's failure streak (when it is re-enabled).
    pub async fn reset_health(&self, id: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let () = conn.del(self.keys.health(id)).await?;
        Ok(())
    }

    /// Counts `count` failed deliveries in the webhook's failure streak;
    /// returns the streak's length and when it began (epoch ms). A success
    /// recorded since the streak began starts a new one; failures counted at
    /// a time before the last success (written late, the success sooner)
    /// belong to the streak it ended and are not counted (`(0, now_ms)`).
    pub async fn record_failures(&self, id: &str, now_ms: i64, count: u64) -> Result<(u64, i64), StoreError> {
        let script = &*RECORD_FAILURES;
        let mut conn = self.conn.clone();
        let (n, first): (u64, i64) = script
            .key(self.keys.health(id))
            .arg(now_ms)
            .arg(count)
            .invoke_async(&mut conn)
            .await?;
        Ok((n, first))
    }

    /// Records a successful delivery, which ends any failure streak.
    pub async fn record_success(&self, id: &str, now_ms: i64) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let () = conn.hset(self.keys.health(id), "last_success_at", now_ms).await?;
        Ok(())
    }

    /// Moves webhooks between tenant sets: `(id, from, to)`.
    pub async fn move_tenants(&self, moves: &[(String, Option<String>, Option<String>)]) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        for chunk in moves.chunks(CHUNK) {
            let mut pipe = redis::pipe();
            for (id, from, to) in chunk {
                if let Some(from) = from {
                    pipe.srem(self.keys.tenant(from), id).ignore();
                }
                if let Some(to) = to {
                    pipe.sadd(self.keys.tenant(to), id).ignore();
                }
            }
            let () = pipe.query_async(&mut conn).await?;
        }
        Ok(())
    }

    /// The ids of `tenant`'s webhooks as its set holds them, or `None` while
    /// the sets are not complete (no replica has indexed the store yet).
    pub async fn tenant_ids(&self, tenant: &str) -> Result<Option<Vec<String>>, StoreError> {
        let mut conn = self.conn.clone();
        let (indexed, mut ids): (bool, Vec<String>) = redis::pipe()
            .exists(self.keys.tenants_indexed())
            .smembers(self.keys.tenant(tenant))
            .query_async(&mut conn)
            .await?;
        if !indexed {
            return Ok(None);
        }
        ids.sort();
        Ok(Some(ids))
    }

    /// Deletes a webhook (and its id from its tenant's set) and announces
    /// it; `false` when it did not exist.
    pub async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        let script = &*DELETE;
        let tenant_key = self.keys.tenant("\u{0}");
        let (before, after) = tenant_key.split_once('\u{0}').expect("the tenant is in the key");
        let mut conn = self.conn.clone();
        let deleted: i64 = script
            .key(self.keys.webhook(id))
            .key(self.keys.health(id))
            .key(self.keys.ids())
            .key(self.keys.changes())
            .key(self.keys.log())
            .arg(id)
            .arg(before)
            .arg(after)
            .arg(LOG_LENGTH)
            .invoke_async(&mut conn)
            .await?;
        Ok(deleted > 0)
    }

    /// One webhook, if it exists.
    pub async fn get(&self, id: &str) -> Result<Option<Webhook>, StoreError> {
        match self.get_many(&[id.to_owned()]).await?.pop() {
            Some(Loaded::Webhook(w)) => Ok(Some(*w)),
            Some(Loaded::Invalid { key, reason, .. }) => Err(StoreError::InvalidRecord { key, reason }),
            _ => Ok(None),
        }
    }

    /// The ids in `{prefix}webhooks`.
    pub async fn ids(&self) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        let mut ids: Vec<String> = conn.smembers(self.keys.ids()).await?;
        ids.sort();
        Ok(ids)
    }

    /// Reads the given webhooks, in order.
    pub async fn get_many(&self, ids: &[String]) -> Result<Vec<Loaded>, StoreError> {
        let mut out = Vec::with_capacity(ids.len());
        let mut conn = self.conn.clone();
        for chunk in ids.chunks(CHUNK) {
            let keys: Vec<String> = chunk.iter().map(|id| self.keys.webhook(id)).collect();
            let docs: Vec<Option<Vec<u8>>> = if keys.len() == 1 {
                vec![conn.get(&keys[0]).await?]
            } else {
                conn.mget(&keys).await?
            };
            for ((id, key), doc) in chunk.iter().zip(keys).zip(docs) {
                out.push(decode(id, key, doc.as_deref()));
            }
        }
        Ok(out)
    }
}

/// Why a document is not a webhook, naming the field and position but never
/// the value: serde's own messages quote what they found, which may be a
/// secret written in the wrong place.
fn document_error(e: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let inner = e.inner();
    let what = match inner.classify() {
        serde_json::error::Category::Syntax => "not valid JSON",
        serde_json::error::Category::Eof => "cut short",
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Data => "a field is missing or has the wrong type or value",
    };
    let path = e.path().to_string();
    let at = if path == "." {
        String::new()
    } else {
        format!(" at `{path}`")
    };
    format!(
        "not a webhook document: {what}{at} (line {}, column {})",
        inner.line(),
        inner.column()
    )
}

/// Reads the document stored for `id` under `key` (`None`: no document).
pub fn decode(id: &str, key: String, doc: Option<&[u8]>) -> Loaded {
    let Some(doc) = doc else {
        return Loaded::Missing(id.to_owned());
    };
    // The plain parser is the fast path; the one tracking paths runs only to
    // name where a document is broken.
    let webhook: Webhook = match serde_json::from_slice(doc) {
        Ok(w) => w,
        Err(_) => {
            let mut de = serde_json::Deserializer::from_slice(doc);
            let reason = match serde_path_to_error::deserialize::<_, Webhook>(&mut de) {
                Ok(_) => "not a webhook document".to_owned(),
                Err(e) => document_error(&e),
            };
            return Loaded::Invalid {
                id: id.to_owned(),
                key,
                reason,
            };
        }
    };
    if webhook.id != id {
        return Loaded::Invalid {
            id: id.to_owned(),
            key,
            reason: format!("its id `{}` does not match the key", webhook.id),
        };
    }
    if let Err(e) = webhook.validate() {
        return Loaded::Invalid {
            id: id.to_owned(),
            key,
            reason: e.to_string(),
        };
    }
    Loaded::Webhook(Box::new(webhook))
}

/// A document read straight into its packed form.
pub struct Checked {
    pub packed: Packed,
    pub status: WebhookStatus,
    pub tenant: Option<String>,
    /// Its payload filter, compiled as the document was read.
    pub filter: Option<Box<Filter>>,
}

/// Reads the document stored for `id` into its packed form, accepting and
/// refusing exactly what [`decode`] does, without building a [`Webhook`]:
/// the path of every document a replica reads. Errs with the reason.
pub fn decode_packed(id: &str, doc: &[u8]) -> Result<Checked, String> {
    let document = match Document::parse(doc) {
        Ok(document) => document,
        // `decode` names what is wrong (and would read anything the
        // borrowing reader does not).
        Err(_) => {
            return match decode(id, String::new(), Some(doc)) {
                Loaded::Webhook(webhook) => Ok(Checked {
                    packed: Packed::pack(&webhook),
                    status: webhook.status,
                    tenant: webhook.tenant,
                    filter: webhook.filter.map(Box::new),
                }),
                Loaded::Invalid { reason, .. } => Err(reason),
                Loaded::Missing(_) => Err("no document".into()),
            }
        }
    };
    if document.id() != id {
        return Err(format!("its id `{}` does not match the key", document.id()));
    }
    check(&document).map_err(|e| e.to_string())?;
    Ok(Checked {
        packed: document.pack(),
        status: document.status(),
        tenant: document.tenant().map(str::to_owned),
        filter: document.filter().cloned().map(Box::new),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(doc: &str) -> String {
        match decode("w", "p:webhook:w".into(), Some(doc.as_bytes())) {
            Loaded::Invalid { reason, .. } => reason,
            _ => panic!("{doc} decoded"),
        }
    }

    /// Documents of every shape: `decode_packed` accepts what `decode`
    /// accepts, packs it to the same bytes, and refuses the rest with the
    /// same reason.
    #[test]
    fn the_packed_reader_reads_as_the_webhook_reader() {
        let base = serde_json::json!({
            "id": "w", "name": "n", "url": "https://example.com/h?q=1", "events": ["tour.*", "a.b"],
            "status": "active", "secrets": ["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"],
            "created_at": "2025-01-01T00:00:00.123456789Z", "updated_at": "2025-01-02T03:04:05+02:00",
        });
        let with = |f: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
            let mut doc = base.as_object().unwrap().clone();
            f(&mut doc);
            serde_json::to_string(&doc).unwrap()
        };
        use serde_json::json;
        let mut docs = vec![
            with(&|_| {}),
            with(&|d| {
                d.insert("tenant".into(), json!("acme"));
                d.insert("uid".into(), json!("crm"));
                d.insert("status".into(), json!("disabled"));
                d.insert("status_reason".into(), json!("410 \"Gone\"\n"));
                d.insert("status_changed_at".into(), json!("2025-03-01T10:00:00Z"));
                d.insert(
                    "headers".into(),
                    json!({"x-b": "2", "X-A": "1", "x-api-key": "k\u{e9}y"}),
                );
                d.insert(
                    "previous_secrets".into(),
                    json!([{"secret": "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD", "expires_at": "2025-01-03T00:00:00Z"}]),
                );
                d.insert(
                    "limits".into(),
                    json!({"max_in_flight": 3, "timeout_ms": 2500, "final_statuses": [400]}),
                );
                d.insert("owner_team".into(), json!({"nested": [1, 2, {"x": null}]}));
            }),
            with(&|d| {
                d.insert("uid".into(), json!({"team": [7]}));
            }),
            with(&|d| {
                d.insert("uid".into(), json!(42));
            }),
            with(&|d| {
                d.insert("status".into(), json!("paused"));
                d.insert("status_by".into(), json!("tenant"));
            }),
            with(&|d| {
                d.insert("status".into(), json!("disabled"));
                d.insert("status_by".into(), json!("herald"));
            }),
            with(&|d| {
                d.insert("status".into(), json!("disabled"));
                d.insert("status_by".into(), json!("abuse desk"));
            }),
            with(&|d| {
                d.insert("status".into(), json!("paused"));
                d.insert("status_by".into(), json!({"team": "ops"}));
            }),
            with(&|d| {
                d.insert("uid".into(), json!(null));
                d.insert("tenant".into(), json!(null));
                d.insert("status_changed_at".into(), json!(null));
            }),
            with(&|d| {
                d.insert("name".into(), json!("with \\ escapes \u{1F600} \t"));
                d.insert("events".into(), json!(["caf\u{e9}.*"]));
            }),
            // Refused, each for its own reason.
            with(&|d| {
                d.insert("id".into(), json!("other"));
            }),
            with(&|d| {
                d.insert("url".into(), json!("ftp://example.com/"));
            }),
            with(&|d| {
                d.insert("headers".into(), json!({"webhook-id": "x"}));
            }),
            with(&|d| {
                d.insert("headers".into(), json!({"x": null}));
            }),
            with(&|d| {
                d.insert("events".into(), json!([]));
            }),
            with(&|d| {
                d.insert("status".into(), json!("sleeping"));
            }),
            with(&|d| {
                d.insert("created_at".into(), json!("yesterday"));
            }),
            with(&|d| {
                d.insert("secrets".into(), json!(["whsec_c2hvcnQ="]));
            }),
            with(&|d| {
                d.remove("updated_at");
            }),
            with(&|d| {
                d.insert("limits".into(), json!({"max_in_flight": 0}));
            }),
            with(&|d| {
                d.insert("filter".into(), json!({"/amount": {">": "x"}, "/plan": {"!=": true}}));
            }),
            with(&|d| {
                d.insert("filter".into(), json!(null));
            }),
            with(&|d| {
                d.insert("filter".into(), json!({"/amount": {">": true}}));
            }),
            with(&|d| {
                d.insert("filter".into(), json!({"amount": {"=": 1}}));
            }),
            with(&|d| {
                d.insert("filter".into(), json!({}));
            }),
            "[]".into(),
            "{\"id\":".into(),
        ];
        // A repeated header name: the last is kept, as a map reads it; and a
        // repeated field is refused by both.
        docs.push(with(&|_| {}).replacen('{', r#"{"headers":{"x-k":"first","x-k":"last"},"#, 1));
        docs.push(with(&|_| {}).replacen('{', r#"{"name":"again","#, 1));
        // A filter as another writer spaces it packs as Herald writes it.
        docs.push(with(&|_| {}).replacen(
            '{',
            r#"{"filter": { "/data/plan" : {"in": [ "pro", "team" ]}, "/amount": {">": 1e2, "<=": 1000.0} },"#,
            1,
        ));
        let mut accepted = 0;
        for doc in &docs {
            let packed = decode_packed("w", doc.as_bytes());
            match decode("w", String::new(), Some(doc.as_bytes())) {
                Loaded::Webhook(webhook) => {
                    accepted += 1;
                    let packed = packed.unwrap_or_else(|e| panic!("{doc}: {e}"));
                    assert_eq!(packed.packed, Packed::pack(&webhook), "{doc}");
                    assert_eq!(packed.status, webhook.status);
                    assert_eq!(packed.tenant, webhook.tenant);
                    assert_eq!(packed.filter.as_deref(), webhook.filter.as_ref(), "{doc}");
                }
                Loaded::Invalid { reason, .. } => {
                    assert_eq!(packed.err(), Some(reason), "{doc}");
                }
                Loaded::Missing(_) => unreachable!(),
            }
        }
        assert_eq!(
            accepted, 14,
            "the twelve valid shapes, the repeated header and the spaced filter"
        );
        let kept = decode_packed("w", docs[docs.len() - 3].as_bytes()).unwrap();
        assert_eq!(kept.packed.unpack().unwrap().headers["x-k"], "last");
    }

    /// Found by fuzzing (fuzz/corpus/webhook_document keeps the input): a
    /// `uid` that is not a string, holding a string that is not UTF-8, was
    /// refused by the webhook reader and read by the packed one.
    #[test]
    fn a_uid_holding_invalid_utf8_is_refused_by_both_readers_alike() {
        let base = r#"{"id":"w","name":"n","url":"https://example.com/","events":["*"],"status":"paused",
            "secrets":["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"],"created_at":"2025-01-01T00:00:00Z",
            "updated_at":"2025-01-01T00:00:00Z","#;
        // Each field as the JSON before and after its string's bytes, which
        // are not UTF-8 (a Rust string literal cannot hold them).
        const NOT_UTF8: [u8; 3] = [0xff, 0xfe, 0x80];
        for (before, after) in [
            (r#""uid":[{"expires_at":"2025-01-03T00:00:"#, r#""}]}"#),
            (r#""uid":{"a":""#, r#""}}"#),
            (r#""status_by":[""#, r#""]}"#),
        ] {
            let field = format!("{before}<not UTF-8>{after}");
            let doc = [base.as_bytes(), before.as_bytes(), &NOT_UTF8, after.as_bytes()].concat();
            let webhook = match decode("w", "p:webhook:w".into(), Some(&doc)) {
                Loaded::Invalid { reason, .. } => reason,
                _ => panic!("{field}: decoded"),
            };
            assert_eq!(decode_packed("w", &doc).err(), Some(webhook), "{field}");
        }
    }

    #[test]
    fn a_broken_document_is_named_without_echoing_its_values() {
        let misplaced = r#"{"id":"w","name":"n","url":"https://example.com/","events":["*"],
            "status":"whsec_SUPERSECRETVALUE","secrets":[],"created_at":"2025-01-01T00:00:00Z",
            "updated_at":"2025-01-01T00:00:00Z"}"#;
        let why = reason(misplaced);
        assert!(!why.contains("SUPERSECRET"), "{why}");
        assert!(why.contains("at `status`"), "{why}");
        let wrong_type = r#"{"id":"w","secrets":"whsec_SUPERSECRETVALUE"}"#;
        let why = reason(wrong_type);
        assert!(!why.contains("SUPERSECRET"), "{why}");
        assert!(why.contains("line 1"), "{why}");
        assert!(reason("{\"id\":").contains("cut short"));
        let bad_filter = r#"{"id":"w","name":"n","url":"https://example.com/","events":["*"],"status":"active",
            "secrets":["whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD"],"created_at":"2025-01-01T00:00:00Z",
            "updated_at":"2025-01-01T00:00:00Z","filter":{"/amount":{">":true}}}"#;
        let why = reason(bad_filter);
        assert!(why.contains("at `filter./amount.>`"), "{why}");
        assert!(reason("nonsense").contains("not valid JSON"));
    }
}

//! Tenants and tenant tokens kept in Redis, written through the API and read
//! by every replica on each request (nothing is cached, so a change or a
//! revocation holds on every replica at once).
//!
//! | key | type | content |
//! |---|---|---|
//! | `P` + `tenants:registered` | sorted set (all scores 0) | the names of the tenants created through the API, in name order |
//! | `P` + `tenant:` + name + `:settings` | hash | `settings` (JSON), `created_at`, `created_by`, `updated_at`, `updated_by` |
//! | `P` + `tenant:` + name + `:tokens` | hash | token name to the SHA-256 digest (hex) of the token |
//! | `P` + `tenant:` + name + `:tokens:used` | hash | token name to when it was last used (RFC 3339, to the minute) |
//! | `P` + `token:` + digest | string | the token's record (JSON); expires with the token |
//!
//! Every change that touches more than one key is one Lua script (the
//! registry_*.lua files beside this one, each built once), so a replica that
//! stops half way, or two operators at once, never leave a token of a deleted
//! tenant or a tenant without its index entry.

use std::sync::LazyLock;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::subscriptions::store::Keys as StoreKeys;

/// Creates a tenant or replaces its settings (registry_put.lua, built once).
static PUT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("registry_put.lua")));

/// Writes a tenant's settings if they are still the ones read (registry_change.lua, built once).
static CHANGE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("registry_change.lua")));

/// Deletes a tenant without webhooks, its tokens and its portal sessions
/// (registry_delete.lua after the tenant set's pruning and the ending of
/// sessions, built once).
static DELETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("../../subscriptions/tenant_set_prune.lua"),
        include_str!("../session_end.lua"),
        include_str!("registry_delete.lua")
    ))
});

/// Stores a token within its tenant's allowance (registry_issue.lua, built once).
static ISSUE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("registry_issue.lua")));

/// Notes when a listed token was used (registry_touch.lua, built once).
static TOUCH: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("registry_touch.lua")));

/// Revokes a token and ends the portal sessions it made (registry_revoke.lua
/// after the ending of sessions, built once).
static REVOKE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("../session_end.lua"),
        include_str!("registry_revoke.lua")
    ))
});

/// A tenant's own settings; each one left out follows the deployment's
/// default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantSettings {
    /// The catalog its webhooks subscribe from (`GET /v1/catalogs`); "" allows
    /// any event type; left out: `admin.default_catalog`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(max_length = 64)]
    pub catalog: Option<String>,
    /// Webhooks it may create; left out: `admin.max_webhooks_per_tenant`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000000)]
    pub max_webhooks: Option<usize>,
    /// Who may frame its portal pages (CSP `frame-ancestors` sources, e.g.
    /// `https://app.example.com`); left out: `portal.frame_ancestors`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_items = 1, max_items = 32)]
    pub frame_ancestors: Option<Vec<String>>,
}

/// A tenant created through the API, as stored.
#[derive(Debug, Clone)]
pub struct StoredTenant {
    pub name: String,
    pub settings: TenantSettings,
    pub created_at: Option<OffsetDateTime>,
    pub created_by: Option<String>,
    pub updated_at: Option<OffsetDateTime>,
    pub updated_by: Option<String>,
}

/// A tenant token's record (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub tenant: String,
    pub name: String,
    /// The token's last four characters, to tell tokens apart.
    pub last4: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub created_by: String,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

/// A registry read or write failed.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error(transparent)]
    Redis(#[from] redis::RedisError),
    /// A stored document that does not parse (written by someone else).
    #[error("the stored {what} cannot be read: {error}")]
    Broken { what: String, error: String },
    /// Other writers changed the same tenant every time it was read.
    #[error("tenant `{0}` kept changing while it was being changed")]
    Contended(String),
}

/// What changing a tenant's settings did.
#[derive(Debug)]
pub enum Changed<E> {
    Changed,
    Missing,
    /// The change was refused (by the caller's check of the result).
    Refused(E),
}

/// What deleting a tenant did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deleted {
    Deleted,
    Missing,
    /// It still has webhooks.
    HasWebhooks(usize),
}

/// What creating a token did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Issued {
    Issued,
    /// The tenant has a live token of that name.
    NameTaken,
    /// The tenant has `admin.max_tokens_per_tenant` live tokens.
    TooMany,
    /// The tenant was deleted meanwhile.
    NoTenant,
}

/// The key names.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// The keys under `prefix` (`redis.prefix`).
    pub fn new(prefix: &str) -> Keys {
        Keys { prefix: prefix.into() }
    }

    /// `P` + `tenants:registered`
    pub fn names(&self) -> String {
        format!("{}tenants:registered", self.prefix)
    }

    /// `P` + `tenant:{name}:settings`
    pub fn settings(&self, tenant: &str) -> String {
        format!("{}tenant:{tenant}:settings", self.prefix)
    }

    /// `P` + `tenant:{name}:tokens`
    pub fn tokens(&self, tenant: &str) -> String {
        format!("{}tenant:{tenant}:tokens", self.prefix)
    }

    /// `P` + `tenant:{name}:tokens:used`: token name to when a replica last
    /// saw it used (RFC 3339; written at most once a minute per replica).
    pub fn used(&self, tenant: &str) -> String {
        format!("{}tenant:{tenant}:tokens:used", self.prefix)
    }

    /// `P` + `token:{digest}`
    pub fn token(&self, digest: &str) -> String {
        format!("{}token:{digest}", self.prefix)
    }

    /// The sorted set of `tenant`'s live portal sessions.
    pub fn portal_sessions(&self, tenant: &str) -> String {
        crate::admin::session_store::live_key(&self.prefix, Some(tenant))
    }

    /// What a portal session's key starts with (its id follows).
    pub fn portal_session_prefix(&self) -> String {
        crate::admin::portal_sessions::session_key(&self.prefix, "")
    }
}

/// The registry over the shared connection.
#[derive(Clone)]
pub struct Registry {
    conn: ConnectionManager,
    keys: Keys,
    store: StoreKeys,
}

/// A stored settings document, read as leniently as webhook documents are:
/// a field it does not know (written by a newer version during a rolling
/// upgrade, or by another writer) is ignored, not a broken document.
#[derive(Deserialize)]
struct StoredSettings {
    #[serde(default)]
    catalog: Option<String>,
    #[serde(default)]
    max_webhooks: Option<usize>,
    #[serde(default)]
    frame_ancestors: Option<Vec<String>>,
}

fn parse_settings(tenant: &str, raw: &str) -> Result<TenantSettings, RegistryError> {
    let stored: StoredSettings = serde_json::from_str(raw).map_err(|e| RegistryError::Broken {
        what: format!("settings of tenant `{tenant}`"),
        error: e.to_string(),
    })?;
    Ok(TenantSettings {
        catalog: stored.catalog,
        max_webhooks: stored.max_webhooks,
        frame_ancestors: stored.frame_ancestors,
    })
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .expect("a UTC time formats")
}

fn parse_time(value: Option<&String>) -> Option<OffsetDateTime> {
    value.and_then(|v| OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339).ok())
}

impl Registry {
    /// The registry under `prefix`.
    pub fn new(conn: ConnectionManager, prefix: &str) -> Registry {
        Registry {
            conn,
            keys: Keys::new(prefix),
            store: StoreKeys::new(prefix),
        }
    }

    /// Its key names.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    fn decode(name: &str, fields: std::collections::HashMap<String, String>) -> Result<StoredTenant, RegistryError> {
        let raw = fields.get("settings").map_or("{}", String::as_str);
        let settings = parse_settings(name, raw)?;
        Ok(StoredTenant {
            name: name.into(),
            settings,
            created_at: parse_time(fields.get("created_at")),
            created_by: fields.get("created_by").cloned(),
            updated_at: parse_time(fields.get("updated_at")),
            updated_by: fields.get("updated_by").cloned(),
        })
    }

    /// Tenant `name` as stored, or `None`.
    pub async fn get(&self, name: &str) -> Result<Option<StoredTenant>, RegistryError> {
        let mut conn = self.conn.clone();
        let fields: std::collections::HashMap<String, String> = conn.hgetall(self.keys.settings(name)).await?;
        if fields.is_empty() {
            return Ok(None);
        }
        Self::decode(name, fields).map(Some)
    }

    /// Up to `limit` stored tenants whose names sort after `after`, with
    /// whether more follow.
    pub async fn list(&self, after: Option<&str>, limit: usize) -> Result<(Vec<StoredTenant>, bool), RegistryError> {
        let mut conn = self.conn.clone();
        let min = after.map_or_else(|| "-".to_owned(), |a| format!("({a}"));
        let names: Vec<String> = redis::cmd("ZRANGEBYLEX")
            .arg(self.keys.names())
            .arg(min)
            .arg("+")
            .arg("LIMIT")
            .arg(0)
            .arg(limit + 1)
            .query_async(&mut conn)
            .await?;
        let more = names.len() > limit;
        let names = &names[..names.len().min(limit)];
        if names.is_empty() {
            return Ok((Vec::new(), false));
        }
        let mut pipe = redis::pipe();
        for name in names {
            pipe.hgetall(self.keys.settings(name));
        }
        let all: Vec<std::collections::HashMap<String, String>> = pipe.query_async(&mut conn).await?;
        let mut tenants = Vec::with_capacity(names.len());
        for (name, fields) in names.iter().zip(all) {
            // Deleted between the two reads: not listed.
            if !fields.is_empty() {
                tenants.push(Self::decode(name, fields)?);
            }
        }
        Ok((tenants, more))
    }

    /// Creates tenant `name` or replaces its settings; `true` when it was
    /// created.
    pub async fn put(&self, name: &str, settings: &TenantSettings, by: &str) -> Result<bool, RegistryError> {
        let script = &*PUT;
        let mut conn = self.conn.clone();
        let created: i64 = script
            .key(self.keys.settings(name))
            .key(self.keys.names())
            .arg(serde_json::to_string(settings).expect("settings serialise"))
            .arg(rfc3339(OffsetDateTime::now_utc()))
            .arg(by)
            .arg(name)
            .invoke_async(&mut conn)
            .await?;
        Ok(created == 1)
    }

    /// Changes tenant `name`'s settings to what `f` makes of them. The write
    /// happens only if nobody changed them since they were read; otherwise
    /// they are read again and `f` runs again, so concurrent changes of
    /// different settings are never lost.
    pub async fn change<E>(
        &self,
        name: &str,
        by: &str,
        mut f: impl FnMut(TenantSettings) -> Result<TenantSettings, E>,
    ) -> Result<Changed<E>, RegistryError> {
        let script = &*CHANGE;
        let mut conn = self.conn.clone();
        for _ in 0..8 {
            let raw: Option<String> = conn.hget(self.keys.settings(name), "settings").await?;
            let Some(raw) = raw else { return Ok(Changed::Missing) };
            let current = parse_settings(name, &raw)?;
            let next = match f(current) {
                Ok(next) => next,
                Err(e) => return Ok(Changed::Refused(e)),
            };
            let written: i64 = script
                .key(self.keys.settings(name))
                .arg(&raw)
                .arg(serde_json::to_string(&next).expect("settings serialise"))
                .arg(rfc3339(OffsetDateTime::now_utc()))
                .arg(by)
                .invoke_async(&mut conn)
                .await?;
            if written == 1 {
                return Ok(Changed::Changed);
            }
        }
        Err(RegistryError::Contended(name.into()))
    }

    /// Deletes tenant `name` and revokes its tokens, unless it has webhooks;
    /// its portal sessions end with it.
    /// Members of its webhook set whose document is gone or names another
    /// tenant are dropped first, so a stale id never blocks a delete. The
    /// set holds every webhook Herald's API wrote for the tenant; webhooks
    /// other writers put straight into Redis join it once a replica sees
    /// them (within a second of their announcement).
    pub async fn delete(&self, name: &str) -> Result<Deleted, RegistryError> {
        let script = &*DELETE;
        let mut conn = self.conn.clone();
        let result: i64 = script
            .key(self.keys.settings(name))
            .key(self.keys.names())
            .key(self.store.tenant(name))
            .key(self.keys.tokens(name))
            .key(self.keys.used(name))
            .key(self.keys.portal_sessions(name))
            .arg(name)
            .arg(self.store.webhook(""))
            .arg(self.keys.token(""))
            .arg(self.keys.portal_session_prefix())
            .invoke_async(&mut conn)
            .await?;
        Ok(match result {
            0 => Deleted::Deleted,
            -3 => Deleted::Missing,
            n => Deleted::HasWebhooks(usize::try_from(n).unwrap_or(usize::MAX)),
        })
    }

    /// Stores a token of `record.tenant` by its digest. `registered`: the
    /// tenant is one created through the API, which must still exist (a
    /// token is never left behind by a delete running at the same moment).
    /// Entries of expired tokens are dropped before the name and the
    /// number are checked.
    pub async fn issue(
        &self,
        record: &TokenRecord,
        digest: &str,
        registered: bool,
        max: usize,
    ) -> Result<Issued, RegistryError> {
        let script = &*ISSUE;
        let expires_ms = record.expires_at.map_or(0, |at| {
            i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
        });
        let mut conn = self.conn.clone();
        let result: i64 = script
            .key(self.keys.settings(&record.tenant))
            .key(self.keys.tokens(&record.tenant))
            .key(self.keys.token(digest))
            .key(self.keys.used(&record.tenant))
            .arg(&record.name)
            .arg(digest)
            .arg(serde_json::to_string(record).expect("a token record serialises"))
            .arg(if registered { "1" } else { "0" })
            .arg(self.keys.token(""))
            .arg(max)
            .arg(expires_ms)
            .invoke_async(&mut conn)
            .await?;
        Ok(match result {
            1 => Issued::Issued,
            0 => Issued::NameTaken,
            -1 => Issued::TooMany,
            _ => Issued::NoTenant,
        })
    }

    /// The live tokens of `tenant`, in name order, with when each was last
    /// used (none: not since it was issued).
    pub async fn tokens(&self, tenant: &str) -> Result<Vec<(TokenRecord, Option<OffsetDateTime>)>, RegistryError> {
        let mut conn = self.conn.clone();
        let (entries, used): (
            std::collections::BTreeMap<String, String>,
            std::collections::HashMap<String, String>,
        ) = redis::pipe()
            .hgetall(self.keys.tokens(tenant))
            .hgetall(self.keys.used(tenant))
            .query_async(&mut conn)
            .await?;
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = entries.values().map(|d| self.keys.token(d)).collect();
        let docs: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
        let mut records = Vec::new();
        for ((name, _), doc) in entries.iter().zip(docs) {
            // An expired token's entry stays until the next issue or revoke.
            let Some(doc) = doc else { continue };
            let record: TokenRecord = serde_json::from_str(&doc).map_err(|e| RegistryError::Broken {
                what: format!("record of token `{name}` of tenant `{tenant}`"),
                error: e.to_string(),
            })?;
            records.push((record, parse_time(used.get(name))));
        }
        Ok(records)
    }

    /// Notes that `tenant`'s token `name` was used at `at`. Only a token that
    /// is still listed is noted, so a revoke at the same moment leaves no
    /// entry behind.
    pub async fn touch(&self, tenant: &str, name: &str, at: OffsetDateTime) -> Result<(), RegistryError> {
        let script = &*TOUCH;
        let mut conn = self.conn.clone();
        let _: i64 = script
            .key(self.keys.tokens(tenant))
            .key(self.keys.used(tenant))
            .arg(name)
            .arg(rfc3339(at))
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Revokes `tenant`'s token `name` at once, and ends the portal
    /// sessions it made, in one script; `false` when it has none.
    pub async fn revoke(&self, tenant: &str, name: &str) -> Result<bool, RegistryError> {
        let script = &*REVOKE;
        let mut conn = self.conn.clone();
        let revoked: i64 = script
            .key(self.keys.tokens(tenant))
            .key(self.keys.used(tenant))
            .key(self.keys.portal_sessions(tenant))
            .arg(name)
            .arg(self.keys.token(""))
            .arg(self.keys.portal_session_prefix())
            .invoke_async(&mut conn)
            .await?;
        Ok(revoked == 1)
    }

    /// The record of the token with `digest`, if it is live.
    pub async fn token(&self, digest: &str) -> Result<Option<TokenRecord>, RegistryError> {
        let mut conn = self.conn.clone();
        let doc: Option<String> = conn.get(self.keys.token(digest)).await?;
        let Some(doc) = doc else { return Ok(None) };
        let record: TokenRecord = serde_json::from_str(&doc).map_err(|e| RegistryError::Broken {
            what: format!("token record `{}`", self.keys.token(digest)),
            error: e.to_string(),
        })?;
        if record.expires_at.is_some_and(|at| at <= OffsetDateTime::now_utc()) {
            return Ok(None);
        }
        Ok(Some(record))
    }

    /// How many webhooks each tenant's set holds, in one round trip; `None`
    /// while no replica has indexed them.
    pub async fn webhook_counts(&self, tenants: &[&str]) -> Result<Option<Vec<usize>>, RegistryError> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.exists(self.store.tenants_indexed());
        for tenant in tenants {
            pipe.scard(self.store.tenant(tenant));
        }
        // EXISTS answers 0 or 1, so the whole reply is integers.
        let mut counts: Vec<usize> = pipe.query_async(&mut conn).await?;
        let indexed = counts.remove(0) == 1;
        Ok(indexed.then_some(counts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_settings_ignore_fields_they_do_not_know_and_name_wrong_ones() {
        let read = parse_settings("acme", r#"{"max_webhooks": 3, "added_later": true}"#).unwrap();
        assert_eq!(read.max_webhooks, Some(3));
        let broken = parse_settings("acme", r#"{"max_webhooks": "many"}"#).unwrap_err();
        assert!(broken.to_string().contains("tenant `acme`"), "{broken}");
    }
}

//! Where portal sessions live in Redis, and how many there are.
//!
//! Each session has its own key, holding what it was issued with and
//! expiring with it ([`crate::admin::portal_sessions`]). Each tenant (and
//! the operators, as one more) also has a sorted set of its live sessions by
//! expiry: it caps how many a tenant holds at once
//! (`portal.max_sessions_per_tenant`), and it is how the sessions of a
//! revoked token or a deleted tenant are found and ended in the same script
//! that revokes or deletes (those scripts start with session_end.lua). A
//! session is recorded only while the issued token that asks for it is still
//! live, in one script, so a session made at the moment its token is revoked
//! is either ended with it or never made.

use redis::aio::ConnectionManager;

use crate::admin::portal_sessions::session_key;

/// Records a portal session within its tenant's cap (session_record.lua, built once).
static RECORD: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(include_str!("session_record.lua")));

/// `P` + `portal:sessions:tenant:{tenant}` (or `portal:sessions:operators`):
/// the sorted set of a tenant's live session ids, scored by expiry (ms).
pub fn live_key(prefix: &str, tenant: Option<&str>) -> String {
    match tenant {
        Some(t) => format!("{prefix}portal:sessions:tenant:{t}"),
        None => format!("{prefix}portal:sessions:operators"),
    }
}

/// A session to record.
pub(crate) struct NewSession<'a> {
    pub sid: &'a str,
    pub tenant: Option<&'a str>,
    /// What the session's key holds.
    pub stored: String,
    /// Its expiry, milliseconds since the epoch.
    pub expires_ms: i64,
    /// Its time to live in milliseconds.
    pub ttl_ms: u64,
    /// The key of the issued token that asks for it: it must still be live.
    pub token_key: Option<String>,
    /// `portal.max_sessions_per_tenant`.
    pub max: usize,
}

/// What recording a session did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recorded {
    /// The session is recorded: its link works.
    Made,
    /// The tenant holds its most live sessions; the first of them expires
    /// at this time (milliseconds since the epoch).
    Full { next_expiry_ms: i64 },
    /// The issued token that asked was revoked meanwhile.
    TokenGone,
}

/// Records `session` unless its tenant holds `max` live sessions (expired
/// ones and ones revoked by id are dropped from the count first) or its
/// token is gone.
pub(crate) async fn record(
    conn: &mut ConnectionManager,
    prefix: &str,
    now_ms: i64,
    session: &NewSession<'_>,
) -> redis::RedisResult<Recorded> {
    let script = &*RECORD;
    let mut invocation = script.prepare_invoke();
    invocation
        .key(session_key(prefix, session.sid))
        .key(live_key(prefix, session.tenant));
    if let Some(token) = &session.token_key {
        invocation.key(token);
    }
    let (outcome, at): (i64, i64) = invocation
        .arg(&session.stored)
        .arg(session.ttl_ms.max(1))
        .arg(session.expires_ms)
        .arg(now_ms)
        .arg(session.max)
        .arg(if session.token_key.is_some() { "1" } else { "0" })
        .arg(session_key(prefix, ""))
        .arg(session.sid)
        .invoke_async(conn)
        .await?;
    Ok(match outcome {
        1 => Recorded::Made,
        0 => Recorded::Full { next_expiry_ms: at },
        _ => Recorded::TokenGone,
    })
}

/// Ends session `sid` of `tenant` (revoked by id).
pub(crate) async fn forget(
    conn: &mut ConnectionManager,
    prefix: &str,
    tenant: Option<&str>,
    sid: &str,
) -> redis::RedisResult<()> {
    let () = redis::pipe()
        .atomic()
        .del(session_key(prefix, sid))
        .ignore()
        .zrem(live_key(prefix, tenant), sid)
        .ignore()
        .query_async(conn)
        .await?;
    Ok(())
}

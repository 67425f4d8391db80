//! The history store: the only code that reads or writes history keys.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use redis::aio::ConnectionManager;
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::history::record::{AttemptRecord, DeliveryRecord, Outcome, MAX_ATTEMPTS_KEPT};

/// Minute buckets are kept this long (the last hour is read from them).
const MINUTE_BUCKETS_TTL: i64 = 2 * 3600;
/// Hour buckets are kept this long (the last week is read from them).
const HOUR_BUCKETS_TTL: i64 = 8 * 24 * 3600;

/// Whose statistics: one webhook, or a whole tenant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Webhook(String),
    Tenant(String),
}

impl Scope {
    fn key(&self) -> String {
        match self {
            Scope::Webhook(id) => format!("webhook:{id}"),
            Scope::Tenant(t) => format!("tenant:{t}"),
        }
    }
}

/// Counts to add to one scope, by minute (epoch minutes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// minute -> (succeeded, failed)
    pub by_minute: BTreeMap<i64, (u64, u64)>,
    pub last_succeeded_ms: Option<i64>,
    pub last_failed_ms: Option<i64>,
}

impl Counts {
    /// Counts one attempt made at `at_ms`.
    pub fn add(&mut self, outcome: Outcome, at_ms: i64) {
        let slot = self.by_minute.entry(at_ms.div_euclid(60_000)).or_default();
        match outcome {
            Outcome::Succeeded => {
                slot.0 += 1;
                self.last_succeeded_ms = self.last_succeeded_ms.max(Some(at_ms));
            }
            Outcome::Failed => {
                slot.1 += 1;
                self.last_failed_ms = self.last_failed_ms.max(Some(at_ms));
            }
        }
    }

    /// Adds `other`'s counts (of another webhook of the same tenant, say).
    pub fn merge(&mut self, other: Counts) {
        for (minute, (s, f)) in other.by_minute {
            let slot = self.by_minute.entry(minute).or_default();
            slot.0 += s;
            slot.1 += f;
        }
        self.last_succeeded_ms = self.last_succeeded_ms.max(other.last_succeeded_ms);
        self.last_failed_ms = self.last_failed_ms.max(other.last_failed_ms);
    }
}

/// Succeeded and failed deliveries over one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, ToSchema)]
pub struct Window {
    pub succeeded: u64,
    pub failed: u64,
    /// succeeded / (succeeded + failed); absent with no deliveries.
    pub success_rate: Option<f64>,
}

impl Window {
    fn of(succeeded: u64, failed: u64) -> Window {
        let total = succeeded + failed;
        Window {
            succeeded,
            failed,
            success_rate: (total > 0).then(|| succeeded as f64 / total as f64),
        }
    }
}

/// Delivery statistics of a webhook or tenant.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Stats {
    /// The last 60 minutes.
    pub last_hour: Window,
    /// The last 24 hours (by whole hours, the current one included).
    pub last_day: Window,
    /// The last 7 days (by whole hours, the current one included).
    pub last_week: Window,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_success_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_failure_at: Option<OffsetDateTime>,
    /// Deliveries per hour over the last 7 days, oldest first: 168 hours,
    /// the current one last.
    pub hourly: Vec<HourCount>,
}

/// Deliveries in one hour.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct HourCount {
    /// When the hour began.
    #[serde(with = "time::serde::rfc3339")]
    pub hour: OffsetDateTime,
    pub succeeded: u64,
    pub failed: u64,
}

/// Reads and writes history keys.
#[derive(Clone)]
pub struct HistoryStore {
    conn: ConnectionManager,
    prefix: String,
    max_per_webhook: usize,
    max_deliveries_per_webhook: usize,
    max_age: Duration,
}

/// One step of a delivery to write: its time (ms), its id (`webhook-id`),
/// and the step as JSON (a [`DeliveryRecord`]'s fields, with `updated_ms`
/// and at most one `attempt`).
pub type StepRow = (i64, String, Vec<u8>);

/// [`APPLY_STEPS`], built once.
static APPLY: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(APPLY_STEPS));

/// Applies delivery steps, several webhooks at once. KEYS: per webhook its
/// deliveries' sorted set (by first time) and hash (id -> record). ARGV:
/// now (ms), deliveries kept per webhook, their age (ms), attempts kept per
/// delivery, then per webhook the number of its steps and each step's time,
/// id and JSON. A step older than what a record holds (replicas flush at
/// different moments) adds its attempt without changing the status.
const APPLY_STEPS: &str = r#"
local now, keep, max_age, max_attempts = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local a = 5
for k = 1, #KEYS, 2 do
  local zset, hash = KEYS[k], KEYS[k + 1]
  local n = tonumber(ARGV[a]); a = a + 1
  for _ = 1, n do
    local at, id, step = tonumber(ARGV[a]), ARGV[a + 1], cjson.decode(ARGV[a + 2]); a = a + 3
    local attempt = step.attempt
    step.attempt = nil
    local current = redis.call('HGET', hash, id)
    local record
    if current then
      record = cjson.decode(current)
      if at >= (tonumber(record.updated_ms) or 0) then
        record.status, record.reason, record.next_attempt_at, record.tier = step.status, step.reason, step.next_attempt_at, step.tier
        record.updated_at, record.updated_ms = step.updated_at, at
      end
    else
      record = step
      record.updated_ms = at
      record.attempts = {}
      redis.call('ZADD', zset, at, id)
    end
    if attempt then
      local list = record.attempts
      if type(list) ~= 'table' then list = {} end
      table.insert(list, attempt)
      table.sort(list, function(x, y) return (tonumber(x.attempt) or 0) < (tonumber(y.attempt) or 0) end)
      while #list > max_attempts do table.remove(list, 1) end
      record.attempts = list
    end
    redis.call('HSET', hash, id, cjson.encode(record))
  end
  local old = redis.call('ZRANGEBYSCORE', zset, '-inf', '(' .. (now - max_age))
  local over = redis.call('ZCARD', zset) - #old - keep
  if over > 0 then
    for _, id in ipairs(redis.call('ZRANGE', zset, #old, #old + over - 1)) do table.insert(old, id) end
  end
  for i = 1, #old, 500 do
    local part = {unpack(old, i, math.min(i + 499, #old))}
    redis.call('ZREM', zset, unpack(part))
    redis.call('HDEL', hash, unpack(part))
  end
  redis.call('PEXPIRE', zset, max_age)
  redis.call('PEXPIRE', hash, max_age)
end
return 0
"#;

impl HistoryStore {
    /// The store over `conn`, a connection shared with other parts.
    pub fn over(conn: ConnectionManager, prefix: &str, max_per_webhook: usize, max_age: Duration) -> HistoryStore {
        HistoryStore {
            conn,
            prefix: prefix.to_owned(),
            max_per_webhook,
            max_deliveries_per_webhook: max_per_webhook,
            max_age,
        }
    }

    /// Keeps `n` deliveries per webhook (the newest by first time).
    pub fn keeping_deliveries(mut self, n: usize) -> HistoryStore {
        self.max_deliveries_per_webhook = n;
        self
    }

    fn deliveries_keys(&self, webhook: &str) -> (String, String) {
        (
            format!("{}deliveries:{webhook}", self.prefix),
            format!("{}delivery:{webhook}", self.prefix),
        )
    }

    /// Applies delivery steps, by webhook, in one script.
    pub async fn write_steps(&self, steps: &[(String, Vec<StepRow>)], now_ms: i64) -> Result<(), redis::RedisError> {
        if steps.is_empty() {
            return Ok(());
        }
        let script = &*APPLY;
        let mut invocation = script.prepare_invoke();
        invocation
            .arg(now_ms)
            .arg(self.max_deliveries_per_webhook)
            .arg(self.max_age.as_millis() as i64)
            .arg(MAX_ATTEMPTS_KEPT);
        for (webhook, rows) in steps {
            let (zset, hash) = self.deliveries_keys(webhook);
            invocation.key(zset).key(hash).arg(rows.len());
            for (at_ms, id, json) in rows {
                invocation.arg(*at_ms).arg(id).arg(json);
            }
        }
        let mut conn = self.conn.clone();
        let _: i64 = invocation.invoke_async(&mut conn).await?;
        Ok(())
    }

    /// Every kept delivery of `webhook`, newest (by first time) first.
    pub async fn deliveries(&self, webhook: &str) -> Result<Vec<DeliveryRecord>, redis::RedisError> {
        let (zset, hash) = self.deliveries_keys(webhook);
        let mut conn = self.conn.clone();
        let ids: Vec<String> = redis::cmd("ZRANGE")
            .arg(&zset)
            .arg(0)
            .arg(-1)
            .arg("REV")
            .query_async(&mut conn)
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let raw: Vec<Option<String>> = redis::cmd("HMGET").arg(&hash).arg(&ids).query_async(&mut conn).await?;
        Ok(raw
            .iter()
            .flatten()
            .filter_map(|json| serde_json::from_str(json).ok())
            .collect())
    }

    fn attempts_key(&self, webhook: &str) -> String {
        format!("{}attempts:{webhook}", self.prefix)
    }

    fn stats_key(&self, scope: &Scope, part: &str) -> String {
        format!("{}stats:{}:{part}", self.prefix, scope.key())
    }

    /// Writes a batch: attempt records (JSON, truncated already) and counts,
    /// in one pipeline, trimming each touched webhook's history.
    pub async fn write(
        &self,
        records: &[(String, i64, Vec<u8>)],
        counts: &HashMap<Scope, Counts>,
        now_ms: i64,
    ) -> Result<(), redis::RedisError> {
        let mut pipe = redis::pipe();
        let mut touched = std::collections::BTreeSet::new();
        for (webhook, at_ms, json) in records {
            pipe.zadd(self.attempts_key(webhook), json, *at_ms).ignore();
            touched.insert(webhook.as_str());
        }
        let max_age_ms = self.max_age.as_millis() as i64;
        for webhook in touched {
            let key = self.attempts_key(webhook);
            pipe.cmd("ZREMRANGEBYSCORE")
                .arg(&key)
                .arg("-inf")
                .arg(format!("({}", now_ms - max_age_ms))
                .ignore();
            pipe.zremrangebyrank(&key, 0, -(self.max_per_webhook as isize) - 1)
                .ignore();
            pipe.pexpire(&key, max_age_ms).ignore();
        }
        for (scope, c) in counts {
            let mut hours: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
            for (minute, (s, f)) in &c.by_minute {
                let key = self.stats_key(scope, &format!("m:{minute}"));
                incr(&mut pipe, &key, *s, *f, MINUTE_BUCKETS_TTL);
                let slot = hours.entry(minute.div_euclid(60)).or_default();
                slot.0 += s;
                slot.1 += f;
            }
            for (hour, (s, f)) in hours {
                let key = self.stats_key(scope, &format!("h:{hour}"));
                incr(&mut pipe, &key, s, f, HOUR_BUCKETS_TTL);
            }
            let last = self.stats_key(scope, "last");
            // Keep the later time when replicas race: a tiny script would do,
            // but times a few ms apart are equivalent for "last success".
            if let Some(ms) = c.last_succeeded_ms {
                pipe.hset(&last, "succeeded_at", ms).ignore();
            }
            if let Some(ms) = c.last_failed_ms {
                pipe.hset(&last, "failed_at", ms).ignore();
            }
        }
        if pipe.is_empty() {
            // Nothing kept and no count moved: Redis refuses an empty pipeline.
            return Ok(());
        }
        let mut conn = self.conn.clone();
        let () = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    /// Every kept attempt of `webhook`, newest first.
    pub async fn attempts(&self, webhook: &str) -> Result<Vec<AttemptRecord>, redis::RedisError> {
        let mut conn = self.conn.clone();
        let raw: Vec<String> = redis::cmd("ZRANGE")
            .arg(self.attempts_key(webhook))
            .arg(0)
            .arg(-1)
            .arg("REV")
            .query_async(&mut conn)
            .await?;
        Ok(raw
            .iter()
            .filter_map(|json| match serde_json::from_str(json) {
                Ok(record) => Some(record),
                Err(e) => {
                    tracing::warn!(webhook, error = %e, "unreadable attempt record skipped");
                    None
                }
            })
            .collect())
    }

    /// Forgets a webhook's history and statistics (every bucket that can
    /// still exist), so a webhook created again with the same id starts afresh.
    pub async fn delete(&self, webhook: &str, now: OffsetDateTime) -> Result<(), redis::RedisError> {
        let scope = Scope::Webhook(webhook.to_owned());
        let minute = (now.unix_timestamp_nanos() / 60_000_000_000) as i64;
        let hour = minute.div_euclid(60);
        let (deliveries, by_id) = self.deliveries_keys(webhook);
        let mut keys = vec![
            self.attempts_key(webhook),
            self.stats_key(&scope, "last"),
            deliveries,
            by_id,
        ];
        keys.extend((minute - MINUTE_BUCKETS_TTL / 60..=minute).map(|m| self.stats_key(&scope, &format!("m:{m}"))));
        keys.extend((hour - HOUR_BUCKETS_TTL / 3600..=hour).map(|h| self.stats_key(&scope, &format!("h:{h}"))));
        let mut conn = self.conn.clone();
        let () = redis::cmd("DEL").arg(keys).query_async(&mut conn).await?;
        Ok(())
    }

    /// Statistics of `scope` as of `now`.
    pub async fn stats(&self, scope: &Scope, now: OffsetDateTime) -> Result<Stats, redis::RedisError> {
        let now_ms = crate::history::epoch_ms(now);
        let minute = now_ms.div_euclid(60_000);
        let hour = minute.div_euclid(60);
        let mut pipe = redis::pipe();
        for m in (minute - 59)..=minute {
            pipe.cmd("HMGET")
                .arg(self.stats_key(scope, &format!("m:{m}")))
                .arg("succeeded")
                .arg("failed");
        }
        for h in (hour - 167)..=hour {
            pipe.cmd("HMGET")
                .arg(self.stats_key(scope, &format!("h:{h}")))
                .arg("succeeded")
                .arg("failed");
        }
        pipe.cmd("HMGET")
            .arg(self.stats_key(scope, "last"))
            .arg("succeeded_at")
            .arg("failed_at");
        let mut conn = self.conn.clone();
        let rows: Vec<(Option<u64>, Option<u64>)> = pipe.query_async(&mut conn).await?;
        let (minutes, rest) = rows.split_at(60);
        let (hours, last) = rest.split_at(168);
        let sum = |rows: &[(Option<u64>, Option<u64>)]| {
            rows.iter()
                .fold((0, 0), |(s, f), (a, b)| (s + a.unwrap_or(0), f + b.unwrap_or(0)))
        };
        let (hs, hf) = sum(minutes);
        let (ds, df) = sum(&hours[168 - 24..]);
        let (ws, wf) = sum(hours);
        let at =
            |ms: Option<u64>| ms.and_then(|ms| OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).ok());
        Ok(Stats {
            last_hour: Window::of(hs, hf),
            last_day: Window::of(ds, df),
            last_week: Window::of(ws, wf),
            last_success_at: at(last[0].0),
            last_failure_at: at(last[0].1),
            hourly: hours
                .iter()
                .zip((hour - 167)..=hour)
                .map(|((s, f), h)| HourCount {
                    hour: OffsetDateTime::from_unix_timestamp(h * 3_600).unwrap_or(OffsetDateTime::UNIX_EPOCH),
                    succeeded: s.unwrap_or(0),
                    failed: f.unwrap_or(0),
                })
                .collect(),
        })
    }
}

fn incr(pipe: &mut redis::Pipeline, key: &str, succeeded: u64, failed: u64, ttl: i64) {
    if succeeded > 0 {
        pipe.hincr(key, "succeeded", succeeded).ignore();
    }
    if failed > 0 {
        pipe.hincr(key, "failed", failed).ignore();
    }
    pipe.expire(key, ttl).ignore();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_fall_into_minutes_and_keep_the_latest_times() {
        let mut c = Counts::default();
        c.add(Outcome::Succeeded, 60_000 * 10 + 5);
        c.add(Outcome::Failed, 60_000 * 10 + 7);
        c.add(Outcome::Succeeded, 60_000 * 11);
        let mut other = Counts::default();
        other.add(Outcome::Succeeded, 60_000 * 10 + 1);
        c.merge(other);
        assert_eq!(c.by_minute[&10], (2, 1));
        assert_eq!(c.by_minute[&11], (1, 0));
        assert_eq!(c.last_succeeded_ms, Some(60_000 * 11));
        assert_eq!(c.last_failed_ms, Some(60_000 * 10 + 7));
    }

    #[tokio::test]
    async fn a_write_of_nothing_sends_nothing() {
        // Nothing answers on port 1: a command sent would fail.
        let client = redis::Client::open("redis://127.0.0.1:1/").unwrap();
        let conn = crate::config::redis::RedisConfig::lazy_connection(&client).unwrap();
        let store = HistoryStore::over(conn, "t:", 10, Duration::from_secs(60));
        store.write(&[], &HashMap::new(), 0).await.unwrap();
        let idle = HashMap::from([(Scope::Webhook("w".to_owned()), Counts::default())]);
        store.write(&[], &idle, 0).await.unwrap();
    }

    #[test]
    fn a_window_without_deliveries_has_no_rate() {
        assert_eq!(Window::of(0, 0).success_rate, None);
        assert_eq!(Window::of(3, 1).success_rate, Some(0.75));
    }
}

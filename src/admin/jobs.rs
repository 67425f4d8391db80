//! Replay jobs started through the API: a replay scans the dead-letter topic,
//! which takes a while, so it runs in the background and its progress is read
//! with `GET /v1/replays/{id}`.
//!
//! A job's state lives in Redis (`{prefix}replay:{id}`, kept for
//! [`JOB_TTL`]), written by the replica running it as it goes, so any replica
//! a load balancer picks answers for it. A job whose replica stopped before
//! it finished (no update for [`STALE_AFTER`]) reads as failed; starting the
//! replay again re-drives only what it had not.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use parking_lot::Mutex;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::admin::auth::Caller;
use crate::admin::extract::ApiPath;
use crate::admin::problem::Problem;
use crate::admin::AdminState;
use crate::config::Config;
use crate::retry::pending::{FinishedCuts, PendingRun};
use crate::retry::replay::{ReplayFilter, ReplayOptions, ReplaySummary};

/// How long a job's state is kept after its last update.
pub const JOB_TTL: Duration = Duration::from_secs(7 * 86_400);
/// A running job not updated for this long has lost its replica.
pub const STALE_AFTER: Duration = Duration::from_secs(120);
/// How often a running job's state is written even without progress.
const HEARTBEAT: Duration = Duration::from_secs(30);

/// Where a replay is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Running,
    Done,
    Failed,
}

/// What a job re-drives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    /// Dead letters (`POST .../replay`, a resume with replay).
    #[default]
    Replay,
    /// Retries waiting in the tiers (`POST .../retry-pending`).
    RetryPending,
}

/// What a job runs.
pub enum Work {
    /// Re-drives the dead letters `filter` selects.
    Replay {
        filter: ReplayFilter,
        options: ReplayOptions,
    },
    /// Re-drives the retries a retry-pending cut straddles.
    RetryPending(PendingRun),
}

impl Work {
    fn dry_run(&self) -> bool {
        match self {
            Work::Replay { options, .. } => options.dry_run,
            Work::RetryPending(run) => run.dry_run,
        }
    }

    fn kind(&self) -> JobKind {
        match self {
            Work::Replay { .. } => JobKind::Replay,
            Work::RetryPending(_) => JobKind::RetryPending,
        }
    }
}

/// A replay (or retry pending) and its progress.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReplayJob {
    pub id: String,
    pub webhook_id: String,
    /// What it re-drives: dead letters (`replay`) or retries waiting in
    /// the tiers (`retry_pending`, where `total` and `scanned` count wait
    /// topic records and `matched` the webhook's retries due after the cut).
    #[serde(default)]
    pub kind: JobKind,
    pub state: JobState,
    /// Dead letters to read (the topic's size when the replay began).
    pub total: u64,
    /// Dead letters read so far.
    pub scanned: u64,
    /// Of those, matching this replay.
    pub matched: u64,
    /// Matching, but re-driven by an earlier replay: not again.
    pub already_redriven: u64,
    /// Written back for delivery.
    pub replayed: u64,
    /// Only counted, nothing written back.
    #[serde(default)]
    pub dry_run: bool,
    /// A dry run's count: what a replay would write back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub would_replay: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
}

/// A job as stored: what the API shows, plus what it does not.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Stored {
    #[serde(flatten)]
    job: ReplayJob,
    tenant: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

/// Replay jobs, in Redis.
#[derive(Clone)]
pub struct Jobs {
    conn: ConnectionManager,
    prefix: String,
}

/// Which places a job takes: replays and dry runs are capped apart, so that
/// counting (which writes nothing) never holds a place a replay needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pool {
    /// `admin.max_replays`, `admin.max_replays_per_tenant`.
    Replays,
    /// `admin.max_dry_runs`, `admin.max_dry_runs_per_tenant`.
    DryRuns,
}

impl Pool {
    /// The pool of a replay with these options.
    pub fn of(dry_run: bool) -> Pool {
        match dry_run {
            true => Pool::DryRuns,
            false => Pool::Replays,
        }
    }

    /// Its caps (in all, per tenant) and the configuration keys naming them.
    fn caps(self, config: &Config) -> ((usize, &'static str), (usize, &'static str)) {
        let a = &config.admin;
        match self {
            Pool::Replays => (
                (a.max_replays, "admin.max_replays"),
                (a.max_replays_per_tenant, "admin.max_replays_per_tenant"),
            ),
            Pool::DryRuns => (
                (a.max_dry_runs, "admin.max_dry_runs"),
                (a.max_dry_runs_per_tenant, "admin.max_dry_runs_per_tenant"),
            ),
        }
    }

    /// What a job of this pool is called in a refusal.
    fn noun(self) -> &'static str {
        match self {
            Pool::Replays => "replay",
            Pool::DryRuns => "dry run",
        }
    }
}

/// A place among the running replays (`admin.max_replays`) or dry runs
/// (`admin.max_dry_runs`), held from before the job is started until it
/// finishes. Dropped without starting one, it frees its place.
pub struct Admitted {
    id: String,
    pool: Pool,
    jobs: Jobs,
    started: bool,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        if self.started {
            return;
        }
        let (jobs, id, pool) = (self.jobs.clone(), std::mem::take(&mut self.id), self.pool);
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { jobs.release(pool, &id).await });
        }
    }
}

/// [`ADMIT`], built once.
static ADMISSION: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(ADMIT));

/// Takes a place among the running replays when the caps allow, after
/// dropping those whose lease ran out (their replica stopped).
const ADMIT: &str = r#"
local expired = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, job in ipairs(expired) do redis.call('HDEL', KEYS[2], job) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
local running = redis.call('ZRANGE', KEYS[1], 0, -1)
local same_tenant = 0
for _, job in ipairs(running) do
  local owner = redis.call('HGET', KEYS[2], job)
  if owner then
    local cut = string.find(owner, '\n', 1, true)
    if string.sub(owner, 1, cut - 1) == ARGV[4] then return {'webhook', job} end
    if string.sub(owner, cut + 1) == ARGV[5] then same_tenant = same_tenant + 1 end
  end
end
if #running >= tonumber(ARGV[6]) then return {'total', ''} end
if same_tenant >= tonumber(ARGV[7]) then return {'tenant', ''} end
redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + tonumber(ARGV[2]), ARGV[3])
redis.call('HSET', KEYS[2], ARGV[3], ARGV[4] .. '\n' .. ARGV[5])
return {'ok', ''}
"#;

/// A job's state could not be read or written.
fn redis_problem(e: redis::RedisError) -> Problem {
    Problem::unavailable("replay jobs (Redis)", &e)
}

impl Jobs {
    /// Replay jobs whose state is kept in Redis under `prefix`, so every replica sees them.
    pub fn new(conn: ConnectionManager, prefix: &str) -> Jobs {
        Jobs {
            conn,
            prefix: prefix.to_owned(),
        }
    }

    fn key(&self, id: &str) -> String {
        format!("{}replay:{id}", self.prefix)
    }

    /// A pool's running jobs (a sorted set of job ids by lease end) and
    /// whose they are (a hash of job id to `webhook\ntenant`).
    fn running_keys(&self, pool: Pool) -> (String, String) {
        let name = match pool {
            Pool::Replays => "replays",
            Pool::DryRuns => "replays:dry",
        };
        (
            format!("{}{name}:running", self.prefix),
            format!("{}{name}:running:owners", self.prefix),
        )
    }

    /// A place in `pool` for a job on `webhook_id`, or 429 naming the cap
    /// reached.
    pub async fn admit(
        &self,
        config: &Config,
        pool: Pool,
        webhook_id: &str,
        tenant: Option<&str>,
    ) -> Result<Admitted, Problem> {
        let id = format!("rpl_{}", hex::encode(rand::random::<[u8; 10]>()));
        let ((total, total_key), (per_tenant, per_tenant_key)) = pool.caps(config);
        let (running, owners) = self.running_keys(pool);
        let mut conn = self.conn.clone();
        let (verdict, other): (String, String) = ADMISSION
            .key(running)
            .key(owners)
            .arg(now_ms())
            .arg(STALE_AFTER.as_millis() as u64)
            .arg(&id)
            .arg(webhook_id)
            .arg(tenant.unwrap_or(""))
            .arg(total)
            .arg(per_tenant)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_problem)?;
        let refused = match verdict.as_str() {
            "ok" => {
                return Ok(Admitted {
                    id,
                    pool,
                    jobs: self.clone(),
                    started: false,
                })
            }
            "webhook" => format!(
                "{} {other} of this webhook is still running; follow it at /v1/replays/{other} \
                 and start another when it is done",
                pool.noun()
            ),
            "tenant" => format!(
                "{per_tenant} {}s of this tenant's webhooks are running ({per_tenant_key}); \
                 try again when one is done",
                pool.noun()
            ),
            _ => format!(
                "{total} {}s are running ({total_key}); try again when one is done",
                pool.noun()
            ),
        };
        tracing::info!(webhook = webhook_id, cap = %verdict, kind = pool.noun(), "replay refused: too many running");
        Err(Problem::too_many(refused))
    }

    /// Extends a running job's place for another [`STALE_AFTER`].
    async fn renew(&self, pool: Pool, id: &str) {
        let (running, _) = self.running_keys(pool);
        let mut conn = self.conn.clone();
        let renewed: Result<i64, _> = redis::cmd("ZADD")
            .arg(running)
            .arg("XX")
            .arg(now_ms() + STALE_AFTER.as_millis() as i64)
            .arg(id)
            .query_async(&mut conn)
            .await;
        if let Err(e) = renewed {
            tracing::warn!(job = %id, error = %e, "replay lease not renewed");
        }
    }

    /// Frees a job's place.
    async fn release(&self, pool: Pool, id: &str) {
        let (running, owners) = self.running_keys(pool);
        let mut conn = self.conn.clone();
        let released: Result<(), _> = redis::pipe()
            .cmd("ZREM")
            .arg(running)
            .arg(id)
            .ignore()
            .cmd("HDEL")
            .arg(owners)
            .arg(id)
            .ignore()
            .query_async(&mut conn)
            .await;
        if let Err(e) = released {
            tracing::warn!(job = %id, error = %e, "replay place not freed; it frees itself in 2 minutes");
        }
    }

    async fn save(&self, stored: &Stored) -> Result<(), redis::RedisError> {
        let json = serde_json::to_string(stored).expect("a job serialises");
        let mut conn = self.conn.clone();
        redis::cmd("SET")
            .arg(self.key(&stored.job.id))
            .arg(json)
            .arg("EX")
            .arg(JOB_TTL.as_secs())
            .query_async(&mut conn)
            .await
    }

    /// Starts `work` for `webhook_id` in the background; returns the job as
    /// it starts.
    pub async fn start(
        &self,
        mut admitted: Admitted,
        state: &AdminState,
        webhook_id: &str,
        tenant: Option<String>,
        work: Work,
    ) -> Result<ReplayJob, Problem> {
        let now = OffsetDateTime::now_utc();
        let dry_run = work.dry_run();
        let stored = Stored {
            job: ReplayJob {
                id: admitted.id.clone(),
                webhook_id: webhook_id.to_owned(),
                kind: work.kind(),
                state: JobState::Running,
                total: 0,
                scanned: 0,
                matched: 0,
                already_redriven: 0,
                replayed: 0,
                dry_run,
                would_replay: None,
                error: None,
                started_at: now,
                finished_at: None,
            },
            tenant,
            updated_at: now,
        };
        self.save(&stored).await.map_err(redis_problem)?;
        admitted.started = true;
        let pool = admitted.pool;
        debug_assert_eq!(pool, Pool::of(dry_run), "a job runs in the pool it was admitted to");
        let snapshot = stored.job.clone();
        let producer = state.producer().clone();
        let shared = Arc::new(Mutex::new(stored));
        let config = state.config_arc();
        let jobs = self.clone();
        // Progress is written at most once a second, and at least every
        // HEARTBEAT while the job runs.
        let (dirty_tx, mut dirty_rx) = tokio::sync::watch::channel(());
        let progress = {
            let shared = shared.clone();
            move |s: &ReplaySummary| {
                let mut stored = shared.lock();
                apply(&mut stored.job, s);
                let _ = dirty_tx.send(());
            }
        };
        let writer = {
            let (jobs, shared) = (jobs.clone(), shared.clone());
            tokio::spawn(async move {
                loop {
                    let changed = tokio::time::timeout(HEARTBEAT, dirty_rx.changed()).await;
                    if matches!(changed, Ok(Err(_))) {
                        return;
                    }
                    let mut stored = shared.lock().clone();
                    stored.updated_at = OffsetDateTime::now_utc();
                    if let Err(e) = jobs.save(&stored).await {
                        tracing::warn!(job = %stored.job.id, error = %e, "replay progress not saved");
                    }
                    jobs.renew(pool, &stored.job.id).await;
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
        };
        tokio::spawn(async move {
            let result = match work {
                Work::Replay { filter, options } => {
                    crate::retry::replay::replay(&config, &producer.get(), &filter, options, progress).await
                }
                Work::RetryPending(run) => {
                    let finished = FinishedCuts::new(jobs.conn.clone(), &config);
                    crate::retry::pending::retry_pending(&config, &producer.get(), &finished, run, progress).await
                }
            };
            writer.abort();
            jobs.release(pool, &admitted.id).await;
            let mut stored = shared.lock().clone();
            let now = OffsetDateTime::now_utc();
            stored.job.finished_at = Some(now);
            stored.updated_at = now;
            match result {
                Ok(summary) => {
                    stored.job.state = JobState::Done;
                    apply(&mut stored.job, &summary);
                    tracing::info!(job = %stored.job.id, webhook = %stored.job.webhook_id, replayed = summary.replayed, already_redriven = summary.already_redriven, "replay finished");
                }
                Err(e) => {
                    stored.job.state = JobState::Failed;
                    stored.job.error = Some(e.to_string());
                    tracing::error!(job = %stored.job.id, webhook = %stored.job.webhook_id, error = %e, "replay failed");
                }
            }
            if let Err(e) = jobs.save(&stored).await {
                tracing::error!(job = %stored.job.id, error = %e, "replay result not saved");
            }
        });
        Ok(snapshot)
    }

    /// Which retry-pending cuts of a webhook finished their run.
    pub fn finished_cuts(&self, config: &Config) -> FinishedCuts {
        FinishedCuts::new(self.conn.clone(), config)
    }

    /// A job and its tenant, as any replica sees it.
    async fn get(&self, id: &str) -> Result<Option<(ReplayJob, Option<String>)>, Problem> {
        let mut conn = self.conn.clone();
        let raw: Option<String> = redis::cmd("GET")
            .arg(self.key(id))
            .query_async(&mut conn)
            .await
            .map_err(redis_problem)?;
        let Some(stored) = raw.and_then(|r| serde_json::from_str::<Stored>(&r).ok()) else {
            return Ok(None);
        };
        let mut job = stored.job;
        let quiet = OffsetDateTime::now_utc() - stored.updated_at;
        if job.state == JobState::Running && quiet > STALE_AFTER {
            job.state = JobState::Failed;
            job.error = Some(
                match job.kind {
                    JobKind::Replay => {
                        "the replica running this replay stopped before it finished; start it again \
                                        (what it re-drove is not re-driven twice)"
                    }
                    JobKind::RetryPending => {
                        "the replica running this retry pending stopped before it finished; \
                                              start it again (what it had re-driven may be delivered again, with \
                                              the same webhook-id)"
                    }
                }
                .into(),
            );
        }
        Ok(Some((job, stored.tenant)))
    }
}

fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

fn apply(job: &mut ReplayJob, s: &ReplaySummary) {
    job.total = s.total;
    job.scanned = s.scanned;
    job.matched = s.matched;
    job.already_redriven = s.already_redriven;
    job.replayed = s.replayed;
    if job.dry_run {
        job.would_replay = Some(s.would_replay());
    }
}

/// A replay's progress, from any replica.
#[utoipa::path(
    get,
    path = "/v1/replays/{id}",
    tag = "replays",
    params(("id" = String, Path, description = "The replay's id, as returned when it was started")),
    responses(
        (status = 200, description = "The replay", body = ReplayJob),
    )
)]
pub async fn get_replay(
    state: axum::extract::State<AdminState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<ReplayJob>, Problem> {
    match state.jobs().get(&id).await? {
        Some((job, tenant)) if caller.can_access(tenant.as_deref()) => Ok(Json(job)),
        _ => Err(Problem::not_found("replay", &id)),
    }
}

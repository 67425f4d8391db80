//! Replay jobs started through the API: a replay scans the dead-letter topic,
//! which takes a while, so it runs in the background and its progress is read
//! with `GET /v1/replays/{id}`.
//!
//! A job's state lives in Redis (`{prefix}replay:{id}`, kept for
//! [`JOB_TTL`]), written by the replica running it as it goes, so any replica
//! a load balancer picks answers for it. A job whose replica stopped before
//! it finished (no update for [`STALE_AFTER`]) reads as failed; starting the
//! replay again re-drives only what it had not.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::admin::auth::Caller;
use crate::admin::problem::{ApiPath, Problem};
use crate::admin::AdminState;
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

/// A replay and its progress.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ReplayJob {
    pub id: String,
    pub webhook_id: String,
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

/// A job's state could not be read or written.
fn redis_problem(e: redis::RedisError) -> Problem {
    Problem::unavailable("replay jobs (Redis)", &e)
}

impl Jobs {
    pub fn new(conn: ConnectionManager, prefix: &str) -> Jobs {
        Jobs {
            conn,
            prefix: prefix.to_owned(),
        }
    }

    fn key(&self, id: &str) -> String {
        format!("{}replay:{id}", self.prefix)
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

    /// Starts replaying what `filter` selects for `webhook_id` in the
    /// background; returns the job as it starts.
    pub async fn start(
        &self,
        state: &AdminState,
        webhook_id: &str,
        tenant: Option<String>,
        filter: ReplayFilter,
        force: bool,
    ) -> Result<ReplayJob, Problem> {
        let now = OffsetDateTime::now_utc();
        let stored = Stored {
            job: ReplayJob {
                id: format!("rpl_{}", hex::encode(rand::random::<[u8; 10]>())),
                webhook_id: webhook_id.to_owned(),
                state: JobState::Running,
                total: 0,
                scanned: 0,
                matched: 0,
                already_redriven: 0,
                replayed: 0,
                error: None,
                started_at: now,
                finished_at: None,
            },
            tenant,
            updated_at: now,
        };
        self.save(&stored).await.map_err(redis_problem)?;
        let snapshot = stored.job.clone();
        let shared = Arc::new(Mutex::new(stored));
        let config = state.config_arc();
        let jobs = self.clone();
        // Progress is written at most once a second, and at least every
        // HEARTBEAT while the job runs.
        let (dirty_tx, mut dirty_rx) = tokio::sync::watch::channel(());
        let progress = {
            let shared = shared.clone();
            move |s: &ReplaySummary| {
                let mut stored = shared.lock().expect("job lock");
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
                    let mut stored = shared.lock().expect("job lock").clone();
                    stored.updated_at = OffsetDateTime::now_utc();
                    if let Err(e) = jobs.save(&stored).await {
                        tracing::warn!(job = %stored.job.id, error = %e, "replay progress not saved");
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            })
        };
        tokio::spawn(async move {
            let options = ReplayOptions { dry_run: false, force };
            let result = crate::retry::replay::replay(&config, &filter, options, progress).await;
            writer.abort();
            let mut stored = shared.lock().expect("job lock").clone();
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
                "the replica running this replay stopped before it finished; start it again \
                 (what it re-drove is not re-driven twice)"
                    .into(),
            );
        }
        Ok(Some((job, stored.tenant)))
    }
}

fn apply(job: &mut ReplayJob, s: &ReplaySummary) {
    job.total = s.total;
    job.scanned = s.scanned;
    job.matched = s.matched;
    job.already_redriven = s.already_redriven;
    job.replayed = s.replayed;
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

//! Replay jobs started through the API: a replay scans the dead-letter topic,
//! which takes a while, so it runs in the background and its progress is read
//! with `GET /v1/replays/{id}`. Jobs live in the memory of the replica that
//! started them; the most recent [`KEPT_JOBS`] are kept.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use axum::Json;
use serde::Serialize;
use time::OffsetDateTime;
use utoipa::ToSchema;

use crate::admin::auth::Caller;
use crate::admin::problem::{ApiPath, Problem};
use crate::admin::AdminState;
use crate::retry::replay::{ReplayFilter, ReplaySummary};

/// How many jobs are remembered.
pub const KEPT_JOBS: usize = 1000;

/// Where a replay is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Running,
    Done,
    Failed,
}

/// A replay and its progress.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ReplayJob {
    pub id: String,
    pub webhook_id: String,
    #[serde(skip)]
    tenant: Option<String>,
    pub state: JobState,
    /// Dead letters read so far.
    pub scanned: u64,
    /// Of those, matching this replay.
    pub matched: u64,
    /// Written back for delivery (known when done).
    pub replayed: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
}

/// The jobs of this replica.
#[derive(Default)]
pub struct Jobs {
    jobs: Mutex<VecDeque<Arc<Mutex<ReplayJob>>>>,
}

impl Jobs {
    /// Starts replaying what `filter` selects for `webhook_id`.
    pub fn start(
        &self,
        state: &AdminState,
        webhook_id: &str,
        tenant: Option<String>,
        filter: ReplayFilter,
    ) -> ReplayJob {
        let job = ReplayJob {
            id: format!("rpl_{}", hex::encode(rand::random::<[u8; 10]>())),
            webhook_id: webhook_id.to_owned(),
            tenant,
            state: JobState::Running,
            scanned: 0,
            matched: 0,
            replayed: 0,
            error: None,
            started_at: OffsetDateTime::now_utc(),
            finished_at: None,
        };
        let snapshot = job.clone();
        let shared = Arc::new(Mutex::new(job));
        {
            let mut jobs = self.jobs.lock().expect("jobs lock");
            if jobs.len() >= KEPT_JOBS {
                jobs.pop_front();
            }
            jobs.push_back(shared.clone());
        }
        let config = state.config_arc();
        let progress = {
            let shared = shared.clone();
            move |s: &ReplaySummary| {
                let mut job = shared.lock().expect("job lock");
                job.scanned = s.scanned;
                job.matched = s.matched;
            }
        };
        tokio::spawn(async move {
            let result = crate::retry::replay::replay(&config, &filter, false, progress).await;
            let mut job = shared.lock().expect("job lock");
            job.finished_at = Some(OffsetDateTime::now_utc());
            match result {
                Ok(summary) => {
                    job.state = JobState::Done;
                    job.scanned = summary.scanned;
                    job.matched = summary.matched;
                    job.replayed = summary.replayed;
                    tracing::info!(job = %job.id, webhook = %job.webhook_id, replayed = summary.replayed, "replay finished");
                }
                Err(e) => {
                    job.state = JobState::Failed;
                    job.error = Some(e.to_string());
                    tracing::error!(job = %job.id, webhook = %job.webhook_id, error = %e, "replay failed");
                }
            }
        });
        snapshot
    }

    pub fn get(&self, id: &str) -> Option<ReplayJob> {
        let jobs = self.jobs.lock().expect("jobs lock");
        jobs.iter()
            .map(|j| j.lock().expect("job lock"))
            .find(|j| j.id == id)
            .map(|j| j.clone())
    }
}

/// A replay's progress.
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
    match state.jobs().get(&id) {
        Some(job) if caller.can_access(job.tenant.as_deref()) => Ok(Json(job)),
        _ => Err(Problem::not_found("replay", &id)),
    }
}

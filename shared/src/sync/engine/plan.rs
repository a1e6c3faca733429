//! Planning a run (what the trigger does): one job, one log per entity, the first
//! chunk of each entity's pull or push on the queue.

use super::*;

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Another run of the config is in progress.
    #[error("a run of this config is in progress ({0})")]
    Busy(JobId),
    /// The config is paused.
    #[error("the config is paused")]
    Paused,
    /// Nothing to run (no entity in both the request and the config).
    #[error("{0}")]
    Invalid(String),
    /// The queue failed.
    #[error("{0}")]
    Internal(String),
    /// The store failed (a throttle or conflict past its retries can be retried).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a trigger asks for.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    /// Narrower than the config's direction (None: the config's).
    pub direction: Option<SyncDirection>,
    /// A subset of the config's entities (None: all).
    pub entities: Option<Vec<Entity>>,
    /// `manual`, `schedule`, `retry`.
    pub trigger: String,
    /// Only these records (a retry): the phases to redo, each with its ids (CRM ids
    /// for pull, app record ids for push). Empty: a full run.
    pub only: Vec<(Phase, Vec<String>)>,
    /// Of a targeted pull's ids, those the CRM said were deleted (a webhook): each the
    /// read-back does not find is applied as a deletion. A record it finds (restored
    /// since) is pulled like the others.
    pub gone: Vec<String>,
}

/// A started run.
#[derive(Debug, Clone)]
pub struct Started {
    /// The run.
    pub job_id: JobId,
    /// One log per entity.
    pub logs: Vec<SyncLog>,
}

/// Plans a run of `config` and enqueues its first chunks.
pub async fn start(
    app: &App,
    queue: &Publisher,
    config: &SyncConfig,
    req: RunRequest,
) -> Result<Started, StartError> {
    if config.status == ConfigStatus::Paused {
        return Err(StartError::Paused);
    }
    let direction = match req.direction {
        Some(d) if config.direction.covers(d) => d,
        Some(d) => {
            return Err(StartError::Invalid(format!(
                "the config syncs {:?}, not {:?}",
                config.direction, d
            )));
        }
        None => config.direction,
    };
    let entities: Vec<Entity> = match &req.entities {
        Some(wanted) => {
            if let Some(e) = wanted.iter().find(|e| !config.entities.contains(e)) {
                return Err(StartError::Invalid(format!("the config does not sync {e}")));
            }
            wanted.clone()
        }
        None => config.entities.clone(),
    };
    if entities.is_empty() {
        return Err(StartError::Invalid("no entity to sync".into()));
    }
    let runs = Runs::new(app.table.clone());
    let job = JobId::generate();
    if runs
        .start_job(&config.tenant, &config.id, &job, entities.len() as i64)
        .await?
        .is_none()
    {
        let holder = runs
            .active_job(&config.tenant, &config.id)
            .await?
            .unwrap_or_else(|| job.clone());
        return Err(StartError::Busy(holder));
    }
    let at = now();
    let mut logs = Vec::new();
    let mut tasks = Vec::new();
    for entity in entities {
        let log = SyncLog {
            id: SyncLogId::generate(),
            tenant: config.tenant.clone(),
            config_id: config.id.clone(),
            job_id: job.clone(),
            entity,
            direction: direction.as_str().into(),
            trigger: req.trigger.clone(),
            status: RunStatus::Running,
            stage: if direction.pulls() {
                "pulling"
            } else {
                "pushing"
            }
            .into(),
            estimated_total: None,
            counts: crate::sync::runs::COUNTERS
                .iter()
                .map(|c| ((*c).to_owned(), 0))
                .collect(),
            pending: 1,
            error: None,
            error_code: None,
            started_at: at,
            updated_at: at,
            finished_at: None,
        };
        // A retry: one task per phase with failed records, all under this log.
        if !req.only.is_empty() {
            let mut log = log;
            log.pending = req.only.len() as i64;
            runs.create_log(&log).await?;
            for (phase, ids) in &req.only {
                tasks.push(Task {
                    tenant: config.tenant.clone(),
                    config_id: config.id.clone(),
                    job_id: job.clone(),
                    log_id: log.id.clone(),
                    entity,
                    phase: *phase,
                    seq: 0,
                    cursor: None,
                    push_cursor: None,
                    then_push: false,
                    only: Some(ids.clone()),
                    gone: if *phase == Phase::Pull {
                        req.gone.clone()
                    } else {
                        Vec::new()
                    },
                });
            }
            logs.push(log);
            continue;
        }
        runs.create_log(&log).await?;
        let phase = if direction.pulls() {
            Phase::Pull
        } else {
            Phase::Push
        };
        let mut task = Task {
            tenant: config.tenant.clone(),
            config_id: config.id.clone(),
            job_id: job.clone(),
            log_id: log.id.clone(),
            entity,
            phase,
            seq: 0,
            cursor: None,
            push_cursor: None,
            then_push: phase == Phase::Pull && direction.pushes(),
            only: None,
            gone: Vec::new(),
        };
        match phase {
            Phase::Pull => {
                let mut c: Cursor = runs
                    .checkpoint(&config.tenant, &config.id, entity, Phase::Pull)
                    .await?
                    .unwrap_or_default();
                if c.page.is_none() {
                    c.pass_started_ms = unix_ms(at);
                    c.high_water_ms = 0;
                }
                task.cursor = Some(c);
            }
            Phase::Push => task.push_cursor = Some(push_start(&runs, config, entity, at).await?),
        }
        tasks.push(task);
        logs.push(log);
    }
    let messages: Vec<SyncMessage> = tasks
        .into_iter()
        .map(|t| SyncMessage::Chunk(Box::new(t)))
        .collect();
    queue
        .send_all(&messages)
        .await
        .map_err(|e| StartError::Internal(e.to_string()))?;
    Ok(Started { job_id: job, logs })
}

pub(super) async fn push_start(
    runs: &Runs,
    config: &SyncConfig,
    entity: Entity,
    at: OffsetDateTime,
) -> Result<PushCursor, StoreError> {
    let mut c: PushCursor = runs
        .checkpoint(&config.tenant, &config.id, entity, Phase::Push)
        .await?
        .unwrap_or_default();
    if c.page.is_none() {
        c.pass_started = sortable_time(at - time::Duration::milliseconds(5 * OVERLAP_MS));
    }
    Ok(c)
}

pub(super) fn unix_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

//! The sync engine: planning a run (the trigger) and doing one chunk of it (the
//! worker).
//!
//! A run of a config is one job with one log per entity. Each entity's work is a
//! chain of SQS messages ([`Task`]): pull chunks walk the CRM from the checkpoint,
//! push chunks walk the app's records (all of them the first time, then the change
//! feed). A chunk handles a bounded number of pages, saves its position, and hands on
//! the rest as the next message, so no invocation walks 100,000 records and a killed
//! worker resumes from its last checkpoint. Every step is idempotent: app records a
//! pull creates have ids derived from their CRM record, CRM records a push creates
//! carry the app record's id (found again if the link write was lost), and links are
//! written after the writes they record.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};

use time::OffsetDateTime;

use super::behind::WriteBehind;
use super::config::{ConfigStatus, Configs, SyncConfig, SyncDirection};
use super::conflict::{self, Direction, Side, Strategy, Values};
use super::crm::{CrmClient, CrmError, CrmKind, CrmRecord, Cursor, WriteOutcome};
use super::links::{Link, Links};
use super::mapping::Mapper;
use super::purge;
use super::records::{LinkedRecord, Record, Records, Source, normalise_key};
use super::runs::{
    Phase, Progress, PushCursor, RecordError, RunStatus, Runs, StoredConflict, SyncLog, Task,
    conflict_id,
};
use super::schema::Entity;
use crate::app::App;
use crate::domain::{JobId, RecordId, SyncLogId, now, sortable_time};
use crate::metrics::{Context, Dimension, Metric};
use crate::queue::Publisher;
use crate::store::StoreError;

/// Pages one chunk handles before it hands on (a pull's 12,000 records take about 11 s
/// at HubSpot's pace; a push page is 500 records, so the wall time bounds it first).
/// Every hand-on costs a queue round trip and a new chunk's set-up.
pub const PAGES_PER_CHUNK: usize = 120;
/// Wall time one chunk works before it hands on.
pub const CHUNK_TIME: Duration = Duration::from_secs(40);
/// How far a completed pass's next start reaches back (clock skew between systems).
const OVERLAP_MS: i64 = 2_000;
/// App records read per push page (five CRM batches; a DynamoDB page of compact
/// records stays far under 1 MB).
const PUSH_PAGE: i32 = 500;
/// How the log's error starts when a chunk failed transiently and its message is
/// retried (the run can still complete).
const RETRY_NOTE: &str = "retrying after: ";

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
            counts: super::runs::COUNTERS
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
    queue
        .send_all(&tasks)
        .await
        .map_err(|e| StartError::Internal(e.to_string()))?;
    Ok(Started { job_id: job, logs })
}

async fn push_start(
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

fn unix_ms(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000_000) as i64
}

/// How a chunk ended, for the worker's answer to SQS.
#[derive(Debug)]
pub enum ChunkError {
    /// Retry the message later (provider or store trouble); progress is checkpointed.
    Retry(String),
}

/// Everything one chunk works with.
struct Chunk<'a> {
    queue: &'a Publisher,
    task: &'a Task,
    config: SyncConfig,
    mapper: Mapper,
    records: Records,
    links: Links,
    runs: Runs,
    crm: CrmClient<'a>,
    progress: Progress,
    errors: Vec<RecordError>,
    provider: String,
    /// The push's store writes (links, checkpoints and counts) behind its CRM requests.
    behind: WriteBehind,
    /// Where conflicts are told.
    events: crate::events::EventPublisher,
}

/// Does one chunk of a run: the worker's unit of work.
pub async fn run_chunk(
    app: &App,
    queue: &Publisher,
    task: &Task,
    request_id: &str,
) -> Result<(), ChunkError> {
    let runs = Runs::new(app.table.clone());
    let retry = |e: StoreError| ChunkError::Retry(e.to_string());
    let config = Configs::new(app.table.clone())
        .get(&task.tenant, &task.config_id)
        .await
        .map_err(retry)?;
    let Some(config) = config else {
        // An earlier delivery of this message may have written before it failed: the
        // purge goes again (see `purge`), and the chain of chunks ends here.
        purge::recheck(app, queue, &task.tenant, &task.config_id, &[task.entity])
            .await
            .map_err(|e| ChunkError::Retry(e.to_string()))?;
        return close(
            app,
            &runs,
            task,
            0,
            Progress::default(),
            Some("the sync config was deleted"),
        )
        .await;
    };
    if config.status == ConfigStatus::Paused {
        return close(app, &runs, task, 0, Progress::default(), Some("paused")).await;
    }
    let Some(kind) = CrmKind::of(&config.provider) else {
        return close(
            app,
            &runs,
            task,
            0,
            Progress::default(),
            Some("the provider does not sync records"),
        )
        .await;
    };
    let crm = match CrmClient::new(
        app,
        kind,
        task.tenant.clone(),
        config.connection_id.clone(),
        "sync-worker",
        request_id,
    ) {
        Ok(c) => c,
        Err(e) => return Err(ChunkError::Retry(e.to_string())),
    };
    let mut chunk = Chunk {
        queue,
        task,
        mapper: Mapper::new(config.mappings_of(task.entity)),
        records: Records::new(app.table.clone()),
        links: Links::new(app.table.clone(), &task.tenant, &config.id, task.entity),
        runs: runs.clone(),
        crm,
        progress: Progress::default(),
        errors: Vec::new(),
        provider: config.provider.clone(),
        config,
        behind: WriteBehind::default(),
        events: app.events.clone(),
    };
    let outcome = match task.phase {
        Phase::Pull => chunk.pull().await,
        Phase::Push => chunk.push().await,
    };
    let (requests, rate_limited) = chunk.crm.take_counts();
    chunk.progress.add("requests", requests);
    chunk.progress.add("rate_limited", rate_limited);
    // Write, then check: every write of this chunk is done; a config deleted meanwhile
    // gets its purge again, after them (see `purge`).
    let deleted = !purge::recheck(app, queue, &task.tenant, &task.config_id, &[task.entity])
        .await
        .map_err(|e| ChunkError::Retry(e.to_string()))?;
    // A transient failure redoes everything since the last checkpoint: its record
    // errors and counts come again then.
    let redone = matches!(&outcome, Err(e) if e.is_transient());
    if !chunk.errors.is_empty() && !redone {
        chunk
            .runs
            .record_errors(&task.tenant, &task.log_id, &chunk.errors)
            .await
            .map_err(retry)?;
    }
    match outcome {
        Ok(_) if deleted => {
            close(
                app,
                &runs,
                task,
                0,
                chunk.progress,
                Some("the sync config was deleted"),
            )
            .await
        }
        Ok(next) => {
            let handed_on = i64::from(next.is_some());
            if let Some(next) = next {
                chunk
                    .queue
                    .send(&next)
                    .await
                    .map_err(|e| ChunkError::Retry(e.to_string()))?;
            }
            close(app, &runs, task, handed_on, chunk.progress, None).await
        }
        Err(e) if e.is_transient() => {
            // Pages already done were counted as they were checkpointed; the message
            // comes back and resumes from the checkpoint, so of the rest only the
            // requests made count now.
            let mut p = Progress::default();
            for counter in ["requests", "rate_limited"] {
                let n = chunk.progress.counts.get(counter).copied().unwrap_or(0);
                p.add(counter, n);
            }
            p.error = Some(format!("{RETRY_NOTE}{e}"));
            runs.progress(&task.tenant, &task.log_id, &p)
                .await
                .map_err(retry)?;
            Err(ChunkError::Retry(e.to_string()))
        }
        Err(e) => {
            let mut p = std::mem::take(&mut chunk.progress);
            if let CrmError::ScopesMissing(missing) = &e {
                // Not transient: the message is acknowledged, the connection shows
                // what to reconnect for, and the dashboard hears of it.
                p.error_code = Some("scopes_missing");
                crate::scopes::mark_missing(
                    app,
                    &task.tenant,
                    &chunk.config.connection_id,
                    missing,
                    "sync-worker",
                    request_id,
                )
                .await
                .map_err(retry)?;
            }
            close(app, &runs, task, 0, p, Some(&e.to_string())).await
        }
    }
}

/// Records the chunk's completion; the chunk that empties the log closes it.
async fn close(
    app: &App,
    runs: &Runs,
    task: &Task,
    handed_on: i64,
    mut progress: Progress,
    error: Option<&str>,
) -> Result<(), ChunkError> {
    let retry = |e: StoreError| ChunkError::Retry(e.to_string());
    if let Some(e) = error {
        progress.error = Some(e.to_owned());
    }
    let Some(log) = runs
        .complete_chunk(
            &task.tenant,
            &task.log_id,
            &task.chunk_id(),
            handed_on,
            &progress,
        )
        .await
        .map_err(retry)?
    else {
        return Ok(()); // a redelivery of a chunk already recorded
    };
    emit_metrics(task, &progress);
    if log.pending > 0 {
        return Ok(());
    }
    let failed = log.counts.get("failed").copied().unwrap_or(0);
    let status = match (&log.error, error) {
        (_, Some(_)) if log.counts.get("processed").copied().unwrap_or(0) == 0 => RunStatus::Failed,
        // A refusal the run cannot get past (missing scopes) fails it however far
        // it got.
        _ if log.error_code.is_some() => RunStatus::Failed,
        // A chunk that failed and then succeeded on redelivery left only a note.
        (Some(e), _) if !e.starts_with(RETRY_NOTE) => RunStatus::Partial,
        _ if failed > 0 => RunStatus::Partial,
        _ => RunStatus::Completed,
    };
    runs.close_log(
        &task.tenant,
        &task.config_id,
        &task.job_id,
        &task.log_id,
        status,
    )
    .await
    .map_err(retry)?;
    publish_run(app, task, status, &log.counts).await;
    Ok(())
}

/// Tells the bus a run ended (`integration.sync.run.completed`, with a partial run's
/// status, or `…failed`), so dispatch chains and the dashboard can act on it. Best
/// effort: the log is closed either way; a failure is logged.
async fn publish_run(
    app: &App,
    task: &Task,
    status: RunStatus,
    counts: &std::collections::BTreeMap<String, u64>,
) {
    let detail_type = match status {
        RunStatus::Failed => crate::events::SYNC_RUN_FAILED,
        _ => crate::events::SYNC_RUN_COMPLETED,
    };
    let detail = serde_json::json!({
        "tenant_id": task.tenant.as_str(),
        "config_id": task.config_id.as_str(),
        "job_id": task.job_id.as_str(),
        "log_id": task.log_id.as_str(),
        "entity": task.entity,
        "status": status,
        "counts": counts,
    });
    if let Err(e) = app.events.publish(detail_type, &detail).await {
        tracing::warn!(log_id = %task.log_id, error = %e, "run event not published");
    }
}

/// Tells the bus of a conflict opened for review (`integration.sync.conflict.opened`:
/// ids only, never values) — new, or open again after it was settled; one found open
/// again is not told twice. Best effort, like the run events.
async fn publish_conflict(events: &crate::events::EventPublisher, task: &Task, c: &StoredConflict) {
    let detail = serde_json::json!({
        "tenant_id": task.tenant.as_str(),
        "config_id": task.config_id.as_str(),
        "entity": task.entity,
        "conflict_id": c.id.as_str(),
        "record_id": c.record_id.as_str(),
    });
    if let Err(e) = events
        .publish(crate::events::CONFLICT_OPENED, &detail)
        .await
    {
        tracing::warn!(conflict = %c.id, error = %e, "conflict event not published");
    }
}

impl Chunk<'_> {
    fn next_task(&self, phase: Phase) -> Task {
        Task {
            seq: if phase == self.task.phase {
                self.task.seq + 1
            } else {
                0
            },
            phase,
            cursor: None,
            push_cursor: None,
            only: None,
            ..self.task.clone()
        }
    }

    // ---------------------------------------------------------------------- pull

    async fn pull(&mut self) -> Result<Option<Task>, CrmError> {
        let entity = self.task.entity;
        if let Some(ids) = self.task.only.clone() {
            let fields = self.mapper.crm_fields();
            let records = self.crm.read(entity, &ids, &fields).await?;
            self.pull_page(records).await?;
            return Ok(None);
        }
        let fields = self.mapper.crm_fields();
        let filters: Vec<_> = self.config.filters_of(entity).cloned().collect();
        let filter_refs: Vec<_> = filters.iter().collect();
        let mut cursor = self.task.cursor.clone().unwrap_or_default();
        let started = Instant::now();
        let mut pages = 0;
        let mut page = self
            .crm
            .pull(entity, &cursor, &fields, &filter_refs)
            .await?;
        // Up to two pages are written at once, while the next one is fetched; each
        // page's checkpoint is saved once it and every page before it are written.
        let mut writing: Option<PageWrite> = None;
        loop {
            if let Some(total) = page.total {
                self.progress.estimated_total = Some(total);
            }
            let next = page.next.take();
            let records = std::mem::take(&mut page.records);
            pages += 1;
            let more = next.is_some() && pages < PAGES_PER_CHUNK && started.elapsed() < CHUNK_TIME;
            let footprint = self.footprint(&records);
            if let Some(before) = writing.take_if(|w| !w.footprint.is_disjoint(&footprint)) {
                // The same CRM record (or key) as the page being written: wait for it.
                self.page_written(before).await?;
            }
            let this = PageWrite {
                task: {
                    let ctx = self.snapshot();
                    tokio::spawn(async move { ctx.pull_page(records).await })
                },
                after: match &next {
                    Some(n) => After::Page(n.clone()),
                    None => After::Pass(cursor.clone()),
                },
                footprint,
            };
            let before = writing.replace(this);
            let fetched = if more {
                let next_cursor = next.clone().unwrap_or_default();
                let (written, fetched) = tokio::join!(
                    wait_written(before),
                    self.crm.pull(entity, &next_cursor, &fields, &filter_refs)
                );
                match written {
                    Ok(done) => self.checkpoint_pull(done).await,
                    Err(e) => Err(e),
                }
                .and(fetched.map(Some))
            } else {
                match wait_written(before).await {
                    Ok(done) => self.checkpoint_pull(done).await.map(|()| None),
                    Err(e) => Err(e),
                }
            };
            let fetched = match fetched {
                Ok(f) => f,
                Err(e) => {
                    // The page still being written finishes first (no checkpoint).
                    let _ = wait_written(writing.take()).await;
                    return Err(e);
                }
            };
            match fetched {
                Some(f) => {
                    cursor = next.unwrap_or_default();
                    page = f;
                }
                None => {
                    if let Some(last) = writing.take() {
                        self.page_written(last).await?;
                    }
                    let Some(n) = next else {
                        if self.task.then_push {
                            let mut t = self.next_task(Phase::Push);
                            t.then_push = false;
                            t.push_cursor = Some(
                                push_start(&self.runs, &self.config, entity, now())
                                    .await
                                    .map_err(store)?,
                            );
                            self.progress.stage = Some("pushing");
                            return Ok(Some(t));
                        }
                        return Ok(None);
                    };
                    let mut t = self.next_task(Phase::Pull);
                    t.cursor = Some(n);
                    return Ok(Some(t));
                }
            }
        }
    }

    /// What a page written in the background may touch: its CRM records, the app
    /// records they carry the id of, and their keys (email, domain).
    fn footprint(&self, records: &[CrmRecord]) -> HashSet<String> {
        let entity = self.task.entity;
        let marker = self.crm.kind().marker();
        let mut out = HashSet::with_capacity(records.len() * 3);
        for r in records {
            out.insert(format!("c{}", r.id));
            if let Some(id) = r.values.get(marker) {
                out.insert(format!("a{id}"));
            }
            // A record whose transform overflows fails on its own page; no key here.
            if let Ok(values) = self.mapper.to_app(&r.values)
                && let Some(Some(k)) = values.get(entity.key_field())
            {
                out.insert(format!("k{}", normalise_key(entity, k)));
            }
        }
        out
    }

    /// Waits for a page written in the background, then saves its checkpoint.
    async fn page_written(&mut self, write: PageWrite) -> Result<(), CrmError> {
        let done = wait_written(Some(write)).await?;
        self.checkpoint_pull(done).await
    }

    /// Counts a written page and saves the checkpoint after it (at the end of a pass,
    /// once the pass's deletes are applied).
    async fn checkpoint_pull(&mut self, done: Option<Written>) -> Result<(), CrmError> {
        let Some((progress, errors, after)) = done else {
            return Ok(());
        };
        self.merge(progress, errors);
        let checkpoint = match after {
            After::Page(next) => next,
            After::Pass(cursor) => self.finish_pull_pass(&cursor).await?,
        };
        self.runs
            .save_checkpoint(
                &self.task.tenant,
                &self.config.id,
                self.task.entity,
                Phase::Pull,
                &checkpoint,
            )
            .await
            .map_err(store)?;
        self.flush_progress().await
    }

    /// The end of a pull pass: deletes since the last pass, then where the next pass
    /// starts.
    async fn finish_pull_pass(&mut self, cursor: &Cursor) -> Result<Cursor, CrmError> {
        let entity = self.task.entity;
        let pass_started = if cursor.pass_started_ms > 0 {
            cursor.pass_started_ms
        } else {
            unix_ms(now())
        };
        let deleted = if cursor.since_ms.is_some() || cursor.deletes_since_ms > 0 {
            self.crm
                .deleted_since(entity, cursor.deletes_since_ms.max(1))
                .await?
        } else {
            Vec::new()
        };
        if !deleted.is_empty() {
            self.apply_crm_deletes(&deleted).await?;
        }
        let since = if cursor.high_water_ms > 0 {
            cursor.high_water_ms.min(pass_started)
        } else {
            pass_started
        } - OVERLAP_MS;
        Ok(Cursor {
            since_ms: Some(since),
            page: None,
            high_water_ms: 0,
            pass_started_ms: 0,
            deletes_since_ms: pass_started - OVERLAP_MS,
        })
    }

    async fn apply_crm_deletes(&mut self, deleted: &[(String, i64)]) -> Result<(), CrmError> {
        let entity = self.task.entity;
        // Pull-created records have derived ids; others are found through the links.
        let mut candidates: Vec<RecordId> = deleted
            .iter()
            .map(|(id, _)| derived_id(self.task, &self.config, id))
            .collect();
        let gone: BTreeSet<&str> = deleted.iter().map(|(id, _)| id.as_str()).collect();
        for (sk, link) in self.links.all().await.map_err(store)? {
            if link.crm_id.as_deref().is_some_and(|c| gone.contains(c))
                && let Ok(id) = RecordId::parse(&sk)
            {
                candidates.push(id);
            }
        }
        candidates.sort();
        candidates.dedup();
        let links = self.links.get_many(&candidates).await.map_err(store)?;
        let records = self
            .records
            .get_many(&self.task.tenant, entity, &candidates)
            .await
            .map_err(store)?;
        let mut changed_links = Vec::new();
        for r in records {
            let Some(mut link) = links.get(r.id.as_str()).cloned() else {
                continue;
            };
            if !link.crm_id.as_deref().is_some_and(|c| gone.contains(c)) || link.crm_deleted {
                continue;
            }
            link.crm_deleted = true;
            if self.config.options.propagate_deletes && r.deleted_at.is_none() {
                let mut r = r.clone();
                let old_key = r.key();
                r.deleted_at = Some(now());
                r.updated_at = now();
                r.version += 1;
                r.rev += 1;
                match self.records.save(&r, old_key.as_deref()).await {
                    Ok(()) => self.progress.add("deleted", 1),
                    Err(StoreError::ConditionFailed) => {
                        return Err(CrmError::Transient("a record changed meanwhile".into()));
                    }
                    Err(e) => return Err(store(e)),
                }
                link.app_deleted = true;
            } else {
                self.progress.add("skipped", 1);
            }
            changed_links.push((r.id.clone(), link));
        }
        self.links.put_many(&changed_links).await.map_err(store)
    }

    fn snapshot(&self) -> PullContext {
        PullContext {
            events: self.events.clone(),
            task: self.task.clone(),
            config: self.config.clone(),
            mapper: self.mapper.clone(),
            records: self.records.clone(),
            links: self.links.clone(),
            runs: self.runs.clone(),
            provider: self.provider.clone(),
        }
    }

    fn merge(&mut self, p: Progress, errors: Vec<RecordError>) {
        for (k, v) in p.counts {
            self.progress.add(k, v);
        }
        self.errors.extend(errors);
    }

    async fn flush_progress(&mut self) -> Result<(), CrmError> {
        let (progress, errors) = self.take_progress();
        flush(&self.runs, self.task, &progress, &errors)
            .await
            .map_err(store)
    }

    /// The counts and record errors since the last flush (with the requests made).
    fn take_progress(&mut self) -> (Progress, Vec<RecordError>) {
        let mut p = std::mem::take(&mut self.progress);
        let (requests, rate_limited) = self.crm.take_counts();
        p.add("requests", requests);
        p.add("rate_limited", rate_limited);
        (p, std::mem::take(&mut self.errors))
    }

    /// Queues `write` behind the push's earlier store writes: they go out in order
    /// while the next CRM request is under way.
    async fn write_behind(
        &mut self,
        write: impl Future<Output = Result<(), StoreError>> + Send + 'static,
    ) -> Result<(), CrmError> {
        self.behind.push(write).await.map_err(store)
    }

    /// Waits for the queued store writes.
    async fn settle_writes(&mut self) -> Result<(), CrmError> {
        self.behind.settle().await.map_err(store)
    }

    async fn pull_page(&mut self, records: Vec<CrmRecord>) -> Result<(), CrmError> {
        let (p, e) = self.snapshot().pull_page(records).await?;
        self.merge(p, e);
        Ok(())
    }

    // ---------------------------------------------------------------------- push

    async fn push(&mut self) -> Result<Option<Task>, CrmError> {
        let outcome = self.push_pages().await;
        // Writes still in flight finish (or fail) before the chunk reports: a
        // checkpoint is only ever saved after the links it covers.
        let written = self.settle_writes().await;
        let next = outcome?;
        written?;
        Ok(next)
    }

    async fn push_pages(&mut self) -> Result<Option<Task>, CrmError> {
        let entity = self.task.entity;
        if let Some(ids) = self.task.only.clone() {
            self.crm.ensure_marker(entity).await?;
            let ids: Vec<RecordId> = ids.iter().filter_map(|i| RecordId::parse(i).ok()).collect();
            let records = self
                .records
                .get_many(&self.task.tenant, entity, &ids)
                .await
                .map_err(store)?;
            let links = self.links.get_many(&ids).await.map_err(store)?;
            self.push_page(records, links).await?;
            return Ok(None);
        }
        let mut cursor = self.task.push_cursor.clone().unwrap_or_default();
        let started = Instant::now();
        let mut pages = 0;
        let tenant = &self.task.tenant;
        // The first page is read while the CRM is asked about the marker.
        let (marker, first) = tokio::join!(
            self.crm.ensure_marker(entity),
            push_read(
                &self.records,
                &self.links,
                tenant,
                entity,
                &cursor.since,
                &cursor.page,
            )
        );
        marker?;
        let mut page = first.map_err(store)?;
        // Records pushed by this chunk: one seen again (changed during the push, so
        // later in the change feed) is read again once its link is written.
        let mut pushed: HashSet<String> = HashSet::new();
        loop {
            pages += 1;
            let more =
                page.cursor.is_some() && pages < PAGES_PER_CHUNK && started.elapsed() < CHUNK_TIME;
            let records = std::mem::take(&mut page.records);
            let mut links = std::mem::take(&mut page.links);
            if records.iter().any(|r| pushed.contains(r.id.as_str())) {
                self.settle_writes().await?;
                let ids: Vec<RecordId> = records.iter().map(|r| r.id.clone()).collect();
                links = self.links.get_many(&ids).await.map_err(store)?;
            }
            pushed.extend(records.iter().map(|r| r.id.to_string()));
            // Read the next page and its links while this one is pushed.
            let next = if more {
                let (records_store, links_store) = (self.records.clone(), self.links.clone());
                let tenant = self.task.tenant.clone();
                let (since, after) = (cursor.since.clone(), page.cursor.clone());
                let (done, next) = tokio::join!(self.push_page(records, links), async move {
                    push_read(
                        &records_store,
                        &links_store,
                        &tenant,
                        entity,
                        &since,
                        &after,
                    )
                    .await
                });
                done?;
                Some(next.map_err(store)?)
            } else {
                self.push_page(records, links).await?;
                None
            };
            cursor.page = page.cursor.take();
            let checkpoint = if cursor.page.is_some() {
                cursor.clone()
            } else {
                PushCursor {
                    since: Some(cursor.pass_started.clone()),
                    page: None,
                    pass_started: String::new(),
                }
            };
            // The checkpoint and the page's counts follow its links, behind the next
            // page's CRM writes.
            let (runs, task, config_id) =
                (self.runs.clone(), self.task.clone(), self.config.id.clone());
            let (progress, errors) = self.take_progress();
            self.write_behind(async move {
                runs.save_checkpoint(&task.tenant, &config_id, entity, Phase::Push, &checkpoint)
                    .await?;
                flush(&runs, &task, &progress, &errors).await
            })
            .await?;
            if cursor.page.is_none() {
                return Ok(None);
            }
            match next {
                Some(n) => page = n,
                None => {
                    let mut t = self.next_task(Phase::Push);
                    t.push_cursor = Some(cursor);
                    return Ok(Some(t));
                }
            }
        }
    }

    async fn push_page(
        &mut self,
        records: Vec<Record>,
        links: BTreeMap<String, Link>,
    ) -> Result<(), CrmError> {
        if records.is_empty() {
            return Ok(());
        }
        let entity = self.task.entity;
        let filters: Vec<_> = self.config.filters_of(entity).cloned().collect();
        let bidirectional = self.config.direction == SyncDirection::Bidirectional;
        let directions = self.mapper.directions();
        let mut creates: Vec<Create> = Vec::new();
        let mut updates: Vec<(Record, Link, Values)> = Vec::new();
        let mut deletes: Vec<(RecordId, Link)> = Vec::new();
        for r in records {
            let link = links.get(r.id.as_str()).cloned();
            if r.deleted_at.is_some() {
                if let Some(l) = link
                    && l.crm_id.is_some()
                    && !l.crm_deleted
                    && !l.app_deleted
                {
                    deletes.push((r.id.clone(), l));
                }
                continue;
            }
            let app_values = self.mapper.app_values(&r.fields);
            let crm_view = match self.mapper.to_crm(&app_values, &r.fields) {
                Ok(v) => v,
                Err(e) => {
                    self.transform_failed(Some(&r.id), None, &e);
                    continue;
                }
            };
            let passes = filters
                .iter()
                .all(|f| f.matches(crm_view.get(&f.field).and_then(|v| v.as_deref())));
            match link {
                Some(l) if l.crm_id.is_some() && !l.crm_deleted && !l.app_deleted => {
                    let changed: Values = directions
                        .iter()
                        .filter(|(f, d)| {
                            matches!(d, Direction::Push | Direction::Bidirectional)
                                && !l.conflicted.contains(f)
                                && app_values.get(f) != l.base.get(f).or(Some(&None))
                        })
                        .map(|(f, _)| (f.clone(), app_values.get(f).cloned().flatten()))
                        .collect();
                    if changed.is_empty() {
                        continue;
                    }
                    self.progress.add("processed", 1);
                    updates.push((r, l, changed));
                }
                Some(l) if l.crm_deleted || l.app_deleted => {}
                _ => {
                    if !self.config.options.create_missing || !passes {
                        self.progress.add("skipped", 1);
                        continue;
                    }
                    self.progress.add("processed", 1);
                    creates.push((r, app_values, crm_view));
                }
            }
        }
        let mut new_links: Vec<(RecordId, Link)> = Vec::new();
        // Creates: each CRM record carries the app id; a clash means an earlier attempt
        // created it (or the CRM already has one with the same unique email). Without
        // the marker field, records are first looked up by key.
        if !creates.is_empty() {
            let marked = self.crm.has_marker(entity);
            for batch in creates.chunks(self.crm.kind().batch_size()) {
                let batch: Vec<&Create> = if marked {
                    batch.iter().collect()
                } else {
                    self.unmarked_creates(batch, &mut new_links).await?
                };
                if batch.is_empty() {
                    self.store_links(std::mem::take(&mut new_links)).await?;
                    continue;
                }
                let inputs: Vec<(String, BTreeMap<String, Option<String>>)> = batch
                    .iter()
                    .map(|(r, _, crm_view)| {
                        let mut out = crm_view.clone();
                        out.retain(|_, v| v.is_some());
                        (r.id.to_string(), out)
                    })
                    .collect();
                let outcomes = self.crm.create(entity, &inputs).await?;
                let mut find = Vec::new();
                for ((r, values, _), outcome) in batch.iter().zip(outcomes) {
                    match outcome {
                        WriteOutcome::Done(crm_id) => {
                            self.progress.add("created", 1);
                            self.progress.add("pushed", 1);
                            new_links.push((r.id.clone(), pushed_link(crm_id, values)));
                        }
                        WriteOutcome::Exists(Some(crm_id)) => {
                            // Linked with an empty base: the next pull reconciles both.
                            self.progress.add("skipped", 1);
                            new_links.push((
                                r.id.clone(),
                                Link {
                                    crm_id: Some(crm_id),
                                    ..Link::default()
                                },
                            ));
                        }
                        WriteOutcome::Exists(None) => find.push((r.id.clone(), values.clone())),
                        WriteOutcome::Failed(message) => {
                            self.progress.add("failed", 1);
                            self.errors.push(RecordError {
                                phase: Phase::Push,
                                record_id: Some(r.id.to_string()),
                                crm_id: None,
                                message,
                                at: now(),
                            });
                        }
                    }
                }
                if !find.is_empty() {
                    let found = if marked {
                        let app_ids: Vec<String> =
                            find.iter().map(|(id, _)| id.to_string()).collect();
                        self.crm.find_by_marker(entity, &app_ids).await?
                    } else {
                        self.find_created_by_key(&batch, &find).await?
                    };
                    for (id, values) in find {
                        match found.get(id.as_str()) {
                            Some(crm_id) => {
                                self.progress.add("created", 1);
                                self.progress.add("pushed", 1);
                                new_links.push((id, pushed_link(crm_id.clone(), &values)));
                            }
                            None => {
                                self.progress.add("failed", 1);
                                self.errors.push(RecordError {
                                    phase: Phase::Push,
                                    record_id: Some(id.to_string()),
                                    crm_id: None,
                                    message: "the CRM reported a duplicate it does not show".into(),
                                    at: now(),
                                });
                            }
                        }
                    }
                }
                self.store_links(std::mem::take(&mut new_links)).await?;
            }
        }
        // Updates: in a bidirectional config, the CRM's current values are read first
        // so a change made there since the last pull is a conflict, not overwritten.
        if !updates.is_empty() {
            let mut current: BTreeMap<String, CrmRecord> = BTreeMap::new();
            if bidirectional {
                let crm_ids: Vec<String> = updates
                    .iter()
                    .filter_map(|(_, l, _)| l.crm_id.clone())
                    .collect();
                for rec in self
                    .crm
                    .read(entity, &crm_ids, &self.mapper.crm_fields())
                    .await?
                {
                    current.insert(rec.id.clone(), rec);
                }
            }
            let mut writes: Vec<(String, BTreeMap<String, Option<String>>)> = Vec::new();
            let mut pending: Vec<(RecordId, Link, Values)> = Vec::new();
            for (r, mut link, changed) in updates {
                let Some(crm_id) = link.crm_id.clone() else {
                    continue;
                };
                let mut to_push = changed.clone();
                if bidirectional {
                    let Some(now_crm) = current.get(&crm_id) else {
                        // Gone from the CRM: the next pull's delete check settles it.
                        self.progress.add("skipped", 1);
                        continue;
                    };
                    let crm_values = match self.mapper.to_app(&now_crm.values) {
                        Ok(v) => v,
                        Err(e) => {
                            self.transform_failed(Some(&r.id), Some(&crm_id), &e);
                            continue;
                        }
                    };
                    let app_values = self.mapper.app_values(&r.fields);
                    let plan = conflict::reconcile(
                        &directions,
                        &link.base,
                        Side {
                            values: &app_values,
                            modified_at: r.updated_at,
                        },
                        Side {
                            values: &crm_values,
                            modified_at: ms_time(now_crm.modified_ms),
                        },
                        self.config.conflict_strategy,
                    );
                    self.progress
                        .add("conflicts_resolved", plan.resolved as u64);
                    // A conflict already under review (open or ignored) is not
                    // detected again; a new field in conflict reopens it with all.
                    let new_fields = plan
                        .conflicts
                        .iter()
                        .filter(|c| !link.conflicted.contains(&c.field))
                        .count();
                    if new_fields > 0 {
                        self.store_conflict(&r, &crm_id, &plan.conflicts, new_fields)
                            .await?;
                        for c in &plan.conflicts {
                            link.conflicted.insert(c.field.clone());
                        }
                    }
                    to_push = plan.push;
                    // CRM-side changes are left for the next pull (it owns app writes).
                }
                if to_push.is_empty() {
                    new_links.push((r.id.clone(), link));
                    continue;
                }
                let crm_values = match self.mapper.to_crm(&to_push, &r.fields) {
                    Ok(v) => v,
                    Err(e) => {
                        self.transform_failed(Some(&r.id), Some(&crm_id), &e);
                        continue;
                    }
                };
                writes.push((crm_id, crm_values));
                pending.push((r.id.clone(), link, to_push));
            }
            for (batch, links_batch) in writes
                .chunks(self.crm.kind().batch_size())
                .zip(pending.chunks(self.crm.kind().batch_size()))
            {
                let outcomes = self.crm.update(entity, batch).await?;
                for ((id, link, pushed), outcome) in links_batch.iter().cloned().zip(outcomes) {
                    let mut link = link;
                    match outcome {
                        WriteOutcome::Done(_) => {
                            for (f, v) in pushed {
                                link.base.insert(f, v);
                            }
                            self.progress.add("updated", 1);
                            self.progress.add("pushed", 1);
                        }
                        WriteOutcome::Failed(m) if m.contains("gone") => {
                            link.crm_deleted = true;
                            self.progress.add("skipped", 1);
                        }
                        other => {
                            let message = match other {
                                WriteOutcome::Failed(m) => outcome_message(&m),
                                _ => None,
                            }
                            .unwrap_or_else(|| "refused".into());
                            self.progress.add("failed", 1);
                            self.errors.push(RecordError {
                                phase: Phase::Push,
                                record_id: Some(id.to_string()),
                                crm_id: link.crm_id.clone(),
                                message,
                                at: now(),
                            });
                        }
                    }
                    new_links.push((id, link));
                }
                self.store_links(std::mem::take(&mut new_links)).await?;
            }
        }
        if !deletes.is_empty() {
            let ids: Vec<String> = deletes
                .iter()
                .filter_map(|(_, l)| l.crm_id.clone())
                .collect();
            if self.config.options.propagate_deletes {
                self.crm.delete(entity, &ids).await?;
                self.progress.add("deleted", ids.len() as u64);
            } else {
                self.progress.add("skipped", ids.len() as u64);
            }
            for (id, mut l) in deletes {
                l.app_deleted = true;
                new_links.push((id, l));
            }
        }
        self.store_links(new_links).await
    }

    /// The key (email / domain) a create sends the CRM (its CRM view), lower-cased.
    fn crm_key(&self, crm_view: &Values) -> Option<String> {
        let field = self.crm.kind().key_field(self.task.entity);
        crm_view
            .get(field)
            .cloned()
            .flatten()
            .map(|k| k.trim().to_lowercase())
            .filter(|k| !k.is_empty())
    }

    /// Creates where the CRM has no marker field (a HubSpot grant without schema
    /// write): a record whose key the CRM already holds is linked to that record (an
    /// earlier attempt made it, or it was there), one without a key is not created
    /// (it could not be found again after a lost answer); the rest are returned.
    async fn unmarked_creates<'r>(
        &mut self,
        batch: &'r [Create],
        links: &mut Vec<(RecordId, Link)>,
    ) -> Result<Vec<&'r Create>, CrmError> {
        let keyed: Vec<(&Create, Option<String>)> = batch
            .iter()
            .map(|item| (item, self.crm_key(&item.2)))
            .collect();
        let keys: Vec<String> = keyed.iter().filter_map(|(_, k)| k.clone()).collect();
        let found = self.crm.find_by_key(self.task.entity, &keys).await?;
        let mut out = Vec::new();
        for (item, key) in keyed {
            let Some(key) = key else {
                self.progress.add("failed", 1);
                self.errors.push(RecordError {
                    phase: Phase::Push,
                    record_id: Some(item.0.id.to_string()),
                    crm_id: None,
                    message: format!(
                        "not created: without the marker field (the connection lacks schema \
                         write) a record needs its {} to be created exactly once",
                        self.crm.kind().key_field(self.task.entity)
                    ),
                    at: now(),
                });
                continue;
            };
            match found.get(&key) {
                Some(crm_id) => {
                    // Linked with an empty base: the next pull reconciles both.
                    self.progress.add("skipped", 1);
                    links.push((
                        item.0.id.clone(),
                        Link {
                            crm_id: Some(crm_id.clone()),
                            ..Link::default()
                        },
                    ));
                }
                None => out.push(item),
            }
        }
        Ok(out)
    }

    /// For creates the CRM refused as duplicates without naming the record: app id →
    /// CRM id, found by key.
    async fn find_created_by_key(
        &mut self,
        batch: &[&Create],
        find: &[(RecordId, Values)],
    ) -> Result<BTreeMap<String, String>, CrmError> {
        let mut key_of: BTreeMap<String, String> = BTreeMap::new();
        for (id, _) in find {
            if let Some((_, _, crm_view)) = batch.iter().find(|(r, _, _)| r.id == *id)
                && let Some(k) = self.crm_key(crm_view)
            {
                key_of.insert(k, id.to_string());
            }
        }
        let keys: Vec<String> = key_of.keys().cloned().collect();
        let found = self.crm.find_by_key(self.task.entity, &keys).await?;
        Ok(found
            .into_iter()
            .filter_map(|(k, crm_id)| key_of.get(&k).map(|id| (id.clone(), crm_id)))
            .collect())
    }

    /// A push record whose transform passed its cap: it fails alone.
    fn transform_failed(
        &mut self,
        record: Option<&RecordId>,
        crm_id: Option<&str>,
        e: &super::mapping::TransformFailed,
    ) {
        self.progress.add("processed", 1);
        self.progress.add("failed", 1);
        self.errors.push(RecordError {
            phase: Phase::Push,
            record_id: record.map(ToString::to_string),
            crm_id: crm_id.map(str::to_owned),
            message: e.to_string(),
            at: now(),
        });
    }

    /// Writes links behind the next CRM request.
    async fn store_links(&mut self, links: Vec<(RecordId, Link)>) -> Result<(), CrmError> {
        if links.is_empty() {
            return Ok(());
        }
        let store = self.links.clone();
        self.write_behind(async move { store.put_many(&links).await })
            .await
    }

    async fn store_conflict(
        &mut self,
        r: &Record,
        crm_id: &str,
        fields: &[conflict::FieldConflict],
        new_fields: usize,
    ) -> Result<(), CrmError> {
        self.progress.add("conflicts_detected", new_fields as u64);
        let c = StoredConflict {
            id: conflict_id(&self.config.id, self.task.entity, &r.id),
            config_id: self.config.id.clone(),
            provider: self.provider.clone(),
            entity: self.task.entity,
            record_id: r.id.clone(),
            crm_id: crm_id.to_owned(),
            fields: fields.to_vec(),
            status: "open".into(),
            detected_at: now(),
            settled_at: None,
            resolution: BTreeMap::new(),
        };
        if self
            .runs
            .put_conflict(&self.task.tenant, &c)
            .await
            .map_err(store)?
        {
            publish_conflict(&self.events, self.task, &c).await;
        }
        Ok(())
    }
}

/// Stores a chunk's record errors and counts on its log.
async fn flush(
    runs: &Runs,
    task: &Task,
    progress: &Progress,
    errors: &[RecordError],
) -> Result<(), StoreError> {
    if !errors.is_empty() {
        runs.record_errors(&task.tenant, &task.log_id, errors)
            .await?;
    }
    runs.progress(&task.tenant, &task.log_id, progress).await?;
    emit_metrics(task, progress);
    Ok(())
}

/// The records synced and failed of `progress`, once it is recorded on the log (so
/// a redelivered chunk is not counted twice).
fn emit_metrics(task: &Task, progress: &Progress) {
    let count = |name| progress.counts.get(name).copied().unwrap_or(0);
    crate::metrics::emit(
        &[
            (Dimension::Entity, task.entity.as_str()),
            (Dimension::Direction, task.phase.as_str()),
        ],
        &[
            (
                Metric::RecordsSynced,
                count("created") + count("updated") + count("deleted"),
            ),
            (Metric::SyncFailures, count("failed")),
        ],
        &[(Context::LogId, task.log_id.as_str())],
    );
}

fn outcome_message(m: &str) -> Option<String> {
    (!m.is_empty()).then(|| m.to_owned())
}

fn pushed_link(crm_id: String, values: &Values) -> Link {
    Link {
        crm_id: Some(crm_id),
        base: values.clone(),
        ..Link::default()
    }
}

fn ms_time(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

fn store(e: StoreError) -> CrmError {
    CrmError::Store(e)
}

/// The id of the app record a pull creates for CRM record `crm_id`.
fn derived_id(task: &Task, config: &SyncConfig, crm_id: &str) -> RecordId {
    RecordId::derived(&[
        task.tenant.as_str(),
        config.id.as_str(),
        task.entity.as_str(),
        crm_id,
    ])
}

/// A pull page being written in the background.
struct PageWrite {
    task: tokio::task::JoinHandle<Result<(Progress, Vec<RecordError>), CrmError>>,
    after: After,
    footprint: HashSet<String>,
}

/// Where a pull stands once a page is written.
enum After {
    /// The next page of the pass.
    Page(Cursor),
    /// The pass's end (from the cursor of its last page).
    Pass(Cursor),
}

type Written = (Progress, Vec<RecordError>, After);

/// A push create: the record, its app values and the CRM values it sends.
type Create = (Record, Values, Values);

/// Waits for a page written in the background (if any): its counts and errors.
async fn wait_written(write: Option<PageWrite>) -> Result<Option<Written>, CrmError> {
    let Some(w) = write else {
        return Ok(None);
    };
    let (progress, errors) = w
        .task
        .await
        .map_err(|e| CrmError::Internal(format!("a page write stopped: {e}")))??;
    Ok(Some((progress, errors, w.after)))
}

/// A page of app records to push, with their links.
struct PushPage {
    records: Vec<Record>,
    links: BTreeMap<String, Link>,
    cursor: Option<String>,
}

/// A page of app records for a push (all of them in id order for a full pass, else
/// the change feed from `since`) and their links.
async fn push_read(
    records: &Records,
    links: &Links,
    tenant: &crate::domain::TenantId,
    entity: Entity,
    since: &Option<String>,
    after: &Option<String>,
) -> Result<PushPage, StoreError> {
    let page = match since {
        None => {
            records
                .scan_partition(tenant, entity, PUSH_PAGE, after.as_deref())
                .await?
        }
        Some(since) => {
            records
                .changes(tenant, entity, since, PUSH_PAGE, after.as_deref())
                .await?
        }
    };
    let ids: Vec<RecordId> = page.items.iter().map(|r| r.id.clone()).collect();
    Ok(PushPage {
        links: links.get_many(&ids).await?,
        records: page.items,
        cursor: page.cursor,
    })
}

/// What writing one pull page needs (owned, so it can run beside the next fetch).
struct PullContext {
    events: crate::events::EventPublisher,
    task: Task,
    config: SyncConfig,
    mapper: Mapper,
    records: Records,
    links: Links,
    runs: Runs,
    provider: String,
}

impl PullContext {
    async fn pull_page(
        &self,
        page: Vec<CrmRecord>,
    ) -> Result<(Progress, Vec<RecordError>), CrmError> {
        let mut progress = Progress::default();
        let mut errors = Vec::new();
        if page.is_empty() {
            return Ok((progress, errors));
        }
        let entity = self.task.entity;
        let tenant = &self.task.tenant;
        let at = now();
        let source = Source {
            origin: self.provider.clone(),
            config_id: Some(self.config.id.to_string()),
            at,
        };
        let marker = CrmKind::of(&self.provider)
            .map(|k| k.marker())
            .unwrap_or_default();
        // 1. Which app record each CRM record belongs to: the id it carries (Conduit
        //    created it), the id derived from it (a pull created the app record), or
        //    an app record with the same key (email / domain).
        let mut candidate: Vec<RecordId> = Vec::with_capacity(page.len());
        for rec in &page {
            let carried = rec
                .values
                .get(marker)
                .and_then(|id| RecordId::parse(id).ok());
            candidate
                .push(carried.unwrap_or_else(|| derived_id(&self.task, &self.config, &rec.id)));
        }
        let mut lookup: Vec<RecordId> = candidate.clone();
        lookup.sort();
        lookup.dedup();
        let mut links = self.links.get_many(&lookup).await.map_err(store)?;
        let mut existing: BTreeMap<String, Record> = self
            .records
            .get_many(tenant, entity, &lookup)
            .await
            .map_err(store)?
            .into_iter()
            .map(|r| (r.id.to_string(), r))
            .collect();
        let key_field = entity.key_field();
        let mut crm_values: Vec<Values> = Vec::with_capacity(page.len());
        // Records whose transform passed its cap fail alone (by page index).
        let mut overflowed: BTreeMap<usize, super::mapping::TransformFailed> = BTreeMap::new();
        let mut want_keys: Vec<String> = Vec::new();
        for (i, rec) in page.iter().enumerate() {
            let values = match self.mapper.to_app(&rec.values) {
                Ok(v) => v,
                Err(e) => {
                    overflowed.insert(i, e);
                    Values::new()
                }
            };
            if !existing.contains_key(candidate[i].as_str())
                && let Some(Some(k)) = values.get(key_field)
            {
                want_keys.push(normalise_key(entity, k));
            }
            crm_values.push(values);
        }
        if !want_keys.is_empty() {
            want_keys.sort();
            want_keys.dedup();
            let by_key = self
                .records
                .ids_by_key(tenant, entity, &want_keys)
                .await
                .map_err(store)?;
            if !by_key.is_empty() {
                let ids: Vec<RecordId> = by_key.values().cloned().collect();
                let found = self
                    .records
                    .get_many(tenant, entity, &ids)
                    .await
                    .map_err(store)?;
                let found_links = self.links.get_many(&ids).await.map_err(store)?;
                for r in found {
                    // Only records not already linked to another CRM record here (a
                    // push without the marker field linked its creates to these).
                    if found_links
                        .get(r.id.as_str())
                        .and_then(|l| l.crm_id.as_deref())
                        .is_some_and(|c| !page.iter().any(|rec| rec.id == c))
                    {
                        continue;
                    }
                    if let Some(k) = r.key()
                        && by_key.get(&k) == Some(&r.id)
                    {
                        for (i, rec) in page.iter().enumerate() {
                            let _ = rec;
                            let wants = crm_values[i]
                                .get(key_field)
                                .and_then(|v| v.as_deref())
                                .map(|v| normalise_key(entity, v));
                            if wants.as_deref() == Some(k.as_str())
                                && !existing.contains_key(candidate[i].as_str())
                            {
                                candidate[i] = r.id.clone();
                            }
                        }
                        existing.insert(r.id.to_string(), r);
                    }
                }
                for (k, v) in found_links {
                    links.entry(k).or_insert(v);
                }
            }
        }
        // 2. Decide per record.
        let directions = self.mapper.directions();
        let pull_fields: Vec<&str> = directions
            .iter()
            .filter(|(_, d)| matches!(d, Direction::Pull | Direction::Bidirectional))
            .map(|(f, _)| f.as_str())
            .collect();
        let mut new_records: Vec<Record> = Vec::new();
        let mut saves: Vec<(Record, Option<String>)> = Vec::new();
        let mut new_links: Vec<(RecordId, Link)> = Vec::new();
        let mut conflicts: Vec<StoredConflict> = Vec::new();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        for (i, rec) in page.iter().enumerate() {
            let id = candidate[i].clone();
            if !seen.insert(id.to_string()) {
                continue; // the same record twice in one page (re-anchored search)
            }
            progress.add("processed", 1);
            if let Some(e) = overflowed.get(&i) {
                progress.add("failed", 1);
                errors.push(RecordError {
                    phase: Phase::Pull,
                    record_id: None,
                    crm_id: Some(rec.id.clone()),
                    message: e.to_string(),
                    at,
                });
                continue;
            }
            let values = &crm_values[i];
            let link = links.get(id.as_str()).cloned();
            match existing.get(id.as_str()).cloned() {
                None => {
                    if !self.config.options.create_missing {
                        progress.add("skipped", 1);
                        continue;
                    }
                    let mut r = Record::new(id.clone(), tenant.clone(), entity, at);
                    for f in &pull_fields {
                        r.set(f, values.get(*f).and_then(|v| v.as_deref()), &source);
                    }
                    r.version = 1;
                    r.rev = 1;
                    r.links.insert(
                        self.config.id.to_string(),
                        LinkedRecord {
                            provider: self.provider.clone(),
                            connection_id: self.config.connection_id.to_string(),
                            crm_id: rec.id.clone(),
                        },
                    );
                    // Fields the pull does not write (push-only) are empty in the new
                    // record; so is their base, or the push would take the gap for an
                    // app-side change and empty them in the CRM.
                    let base: Values = values
                        .iter()
                        .map(|(f, v)| {
                            let pulled = pull_fields.contains(&f.as_str());
                            (f.clone(), if pulled { v.clone() } else { None })
                        })
                        .collect();
                    new_links.push((
                        id,
                        Link {
                            crm_id: Some(rec.id.clone()),
                            base,
                            synced_version: 1,
                            crm_modified_ms: rec.modified_ms,
                            ..Link::default()
                        },
                    ));
                    progress.add("created", 1);
                    progress.add("pulled", 1);
                    new_records.push(r);
                }
                Some(r) if r.deleted_at.is_some() => {
                    progress.add("skipped", 1);
                }
                Some(mut r) => {
                    let mut link = link.unwrap_or_default();
                    if link.crm_id.as_deref().is_some_and(|c| c != rec.id) {
                        // The app record is linked to another CRM record (a duplicate
                        // on the CRM side): leave this one alone.
                        progress.add("skipped", 1);
                        continue;
                    }
                    let fresh_link = link.crm_id.is_none();
                    link.crm_id = Some(rec.id.clone());
                    link.crm_deleted = false;
                    if !fresh_link
                        && rec.modified_ms <= link.crm_modified_ms
                        && link.base == *values
                    {
                        progress.add("skipped", 1);
                        continue;
                    }
                    let app_values = self.mapper.app_values(&r.fields);
                    let mut strategy = self.config.conflict_strategy;
                    if fresh_link && strategy == Strategy::ManualReview {
                        // Linking by key: fill gaps both ways, CRM wins real differences.
                        strategy = Strategy::CrmWins;
                    }
                    let plan = conflict::reconcile(
                        &directions,
                        &link.base,
                        Side {
                            values: &app_values,
                            modified_at: r.updated_at,
                        },
                        Side {
                            values,
                            modified_at: ms_time(rec.modified_ms),
                        },
                        strategy,
                    );
                    progress.add("conflicts_resolved", plan.resolved as u64);
                    let old_key = r.key();
                    let mut changed = false;
                    for (f, v) in &plan.pull {
                        if !link.conflicted.contains(f) {
                            changed |= r.set(f, v.as_deref(), &source);
                        }
                    }
                    // The base becomes the CRM's values, except open conflicts: fields
                    // the app changed are then pushed by the push phase.
                    let mut base = values.clone();
                    for f in &link.conflicted {
                        if let Some(old) = link.base.get(f) {
                            base.insert(f.clone(), old.clone());
                        }
                    }
                    // Push-only fields keep their base: a CRM-side change to one is
                    // not pulled, and must not look like an app-side change either.
                    for (f, _) in directions
                        .iter()
                        .filter(|(f, _)| !pull_fields.contains(&f.as_str()))
                    {
                        base.insert(f.clone(), link.base.get(f).cloned().flatten());
                    }
                    // A conflict already under review (open or ignored) is not
                    // detected again; a new field in conflict reopens it with all.
                    let new_fields = plan
                        .conflicts
                        .iter()
                        .filter(|c| !link.conflicted.contains(&c.field))
                        .count();
                    if new_fields > 0 {
                        progress.add("conflicts_detected", new_fields as u64);
                        for c in &plan.conflicts {
                            link.conflicted.insert(c.field.clone());
                            base.insert(
                                c.field.clone(),
                                link.base.get(&c.field).cloned().flatten(),
                            );
                        }
                        conflicts.push(StoredConflict {
                            id: conflict_id(&self.config.id, entity, &r.id),
                            config_id: self.config.id.clone(),
                            provider: self.provider.clone(),
                            entity,
                            record_id: r.id.clone(),
                            crm_id: rec.id.clone(),
                            fields: plan.conflicts.clone(),
                            status: "open".into(),
                            detected_at: at,
                            settled_at: None,
                            resolution: BTreeMap::new(),
                        });
                    }
                    link.base = base;
                    link.crm_modified_ms = rec.modified_ms;
                    let newly_linked = !r.links.contains_key(self.config.id.as_str());
                    if newly_linked {
                        r.links.insert(
                            self.config.id.to_string(),
                            LinkedRecord {
                                provider: self.provider.clone(),
                                connection_id: self.config.connection_id.to_string(),
                                crm_id: rec.id.clone(),
                            },
                        );
                    }
                    if changed {
                        r.version += 1;
                        r.updated_at = at;
                        progress.add("updated", 1);
                        progress.add("pulled", 1);
                    } else {
                        progress.add("skipped", 1);
                    }
                    if changed || newly_linked {
                        r.rev += 1;
                        link.synced_version = r.version;
                        saves.push((r, old_key));
                    }
                    new_links.push((id, link));
                }
            }
        }
        // 3. Write: new records (ids nobody else writes) in batches, changed records
        //    conditionally, then the links that record it all.
        self.records.put_new(&new_records).await.map_err(store)?;
        let results = futures::future::join_all(saves.iter().map(|(r, old_key)| async move {
            (r, self.records.save(r, old_key.as_deref()).await)
        }))
        .await;
        let mut lost: BTreeSet<String> = BTreeSet::new();
        for (r, result) in results {
            match result {
                Ok(()) => {}
                Err(StoreError::ConditionFailed) => {
                    // Edited meanwhile: the link is not advanced, so the next pull
                    // reconciles this record again against the new app values.
                    lost.insert(r.id.to_string());
                    progress.add("failed", 1);
                    errors.push(RecordError {
                        phase: Phase::Pull,
                        record_id: Some(r.id.to_string()),
                        crm_id: r
                            .links
                            .get(self.config.id.as_str())
                            .map(|l| l.crm_id.clone()),
                        message: "the app record changed during the sync; retried next run".into(),
                        at,
                    });
                }
                Err(e) => return Err(store(e)),
            }
        }
        new_links.retain(|(id, _)| !lost.contains(id.as_str()));
        for c in &conflicts {
            if self.runs.put_conflict(tenant, c).await.map_err(store)? {
                publish_conflict(&self.events, &self.task, c).await;
            }
        }
        self.links.put_many(&new_links).await.map_err(store)?;
        Ok((progress, errors))
    }
}

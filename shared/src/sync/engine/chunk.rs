//! Doing one chunk (what the worker does): load the config, pull or push pages until
//! the chunk's budget is spent, hand on the rest, and close the log when its last
//! chunk is done; the progress and record errors a chunk reports.

use super::*;

impl Chunk<'_> {
    pub(super) fn next_task(&self, phase: Phase) -> Task {
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

    pub(super) fn merge(&mut self, p: Progress, errors: Vec<RecordError>) {
        if self.task.phase == Phase::Pull
            && ["created", "updated", "deleted"]
                .iter()
                .any(|k| p.counts.get(*k).is_some_and(|n| *n > 0))
        {
            self.app_changed = true;
        }
        for (k, v) in p.counts {
            self.progress.add(k, v);
        }
        self.errors.extend(errors);
    }

    pub(super) async fn flush_progress(&mut self) -> Result<(), CrmError> {
        let (progress, errors) = self.take_progress();
        flush(&self.runs, self.task, &progress, &errors)
            .await
            .map_err(store)
    }

    /// The counts and record errors since the last flush (with the requests made).
    pub(super) fn take_progress(&mut self) -> (Progress, Vec<RecordError>) {
        let mut p = std::mem::take(&mut self.progress);
        let (requests, rate_limited) = self.crm.take_counts();
        p.add("requests", requests);
        p.add("rate_limited", rate_limited);
        (p, std::mem::take(&mut self.errors))
    }

    /// Queues `write` behind the push's earlier store writes: they go out in order
    /// while the next CRM request is under way.
    pub(super) async fn write_behind(
        &mut self,
        write: impl Future<Output = Result<(), StoreError>> + Send + 'static,
    ) -> Result<(), CrmError> {
        self.behind.push(write).await.map_err(store)
    }

    /// Waits for the queued store writes.
    pub(super) async fn settle_writes(&mut self) -> Result<(), CrmError> {
        self.behind.settle().await.map_err(store)
    }
}

/// Does one chunk of a run: the worker's unit of work. `redelivered`: the queue has
/// delivered this message before (an earlier attempt may have written to the CRM
/// without recording it).
pub async fn run_chunk(
    app: &App,
    queue: &Publisher,
    task: &Task,
    request_id: &str,
    redelivered: bool,
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
    if associated_running(&runs, &config, task)
        .await
        .map_err(retry)?
    {
        // Deals wait for this run's companies and contacts (their links translate the
        // deals' associations): the same chunk comes back shortly.
        queue
            .send_delayed(&SyncMessage::Chunk(Box::new(task.clone())), ASSOCIATED_WAIT)
            .await
            .map_err(|e| ChunkError::Retry(e.to_string()))?;
        return Ok(());
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
    let mut crm = match CrmClient::new(
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
    crm.set_redelivered(redelivered);
    let crowded = task.phase == Phase::Pull
        && Configs::new(app.table.clone())
            .list(&task.tenant)
            .await
            .map_err(retry)?
            .iter()
            .any(|c| {
                c.id != config.id
                    && c.status == ConfigStatus::Active
                    && c.direction.pulls()
                    && c.entities.contains(&task.entity)
            });
    let mapper = Mapper::new(config.mappings_of(task.entity));
    let mut chunk = Chunk {
        queue,
        task,
        assoc: assoc::Assoc::of(task.entity, &mapper),
        mapper,
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
        app_changed: false,
        crowded,
        bulk: Default::default(),
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
            if chunk.app_changed {
                // Multi-way: what this CRM changed in the app reaches every other CRM
                // a realtime config pushes it to now (not this one: no echo).
                crate::sync::realtime::push_change(
                    app,
                    chunk.queue,
                    &task.tenant,
                    task.entity,
                    Some(&task.config_id),
                )
                .await;
            }
            let handed_on = i64::from(next.is_some());
            if let Some(next) = next {
                chunk
                    .queue
                    .send(&SyncMessage::Chunk(Box::new(next)))
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

/// Seconds a deal chunk waits for its run's companies and contacts before it looks
/// again.
const ASSOCIATED_WAIT: i32 = 2;

/// How long a deal run waits for them at most (a stuck log does not hold it forever).
const ASSOCIATED_WAIT_MAX: time::Duration = time::Duration::minutes(15);

/// Whether `task` is the first chunk of a phase of an entity with associations (deals)
/// whose run also syncs the associated entities (companies, contacts) and they are not
/// through that phase yet: a deal pull starts once their pulls are done, a deal push
/// once they are done, so the links that translate associations exist.
async fn associated_running(
    runs: &Runs,
    config: &SyncConfig,
    task: &Task,
) -> Result<bool, StoreError> {
    let before: Vec<Entity> = task
        .entity
        .associated()
        .iter()
        .copied()
        .filter(|e| config.entities.contains(e))
        .collect();
    if before.is_empty() || task.seq != 0 || task.only.is_some() {
        return Ok(false);
    }
    let logs = runs.logs(&task.tenant, Some(&config.id), 10, None).await?;
    let started = logs
        .items
        .iter()
        .find(|l| l.id == task.log_id)
        .map(|l| l.started_at);
    if started.is_some_and(|at| now() - at > ASSOCIATED_WAIT_MAX) {
        return Ok(false);
    }
    Ok(logs.items.iter().any(|l| {
        l.job_id == task.job_id
            && before.contains(&l.entity)
            && l.status == RunStatus::Running
            && (task.phase == Phase::Push || l.stage == "pulling")
    }))
}

/// Records the chunk's completion; the chunk that empties the log closes it.
pub(super) async fn close(
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
pub(super) async fn publish_run(
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
pub(super) async fn publish_conflict(
    events: &crate::events::EventPublisher,
    task: &Task,
    c: &StoredConflict,
) {
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

/// Stores a chunk's record errors and counts on its log.
pub(super) async fn flush(
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
pub(super) fn emit_metrics(task: &Task, progress: &Progress) {
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

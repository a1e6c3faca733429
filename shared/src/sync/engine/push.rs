//! The push: walk the app's records (all of them the first time, then the change
//! feed), create, update and delete their CRM records in the CRM's batches, and link
//! what was written.

use super::*;
use crate::sync::crm::{BulkOp, WriteValues};

impl Chunk<'_> {
    pub(super) async fn push(&mut self) -> Result<Option<Task>, CrmError> {
        let outcome = self.push_pages().await;
        // Writes still in flight finish (or fail) before the chunk reports: a
        // checkpoint is only ever saved after the links it covers.
        let written = self.settle_writes().await;
        let next = outcome?;
        written?;
        Ok(next)
    }

    pub(super) async fn push_pages(&mut self) -> Result<Option<Task>, CrmError> {
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
        self.bulk = BulkJobs {
            at: None,
            resumed: self.bulk_resumed(&mut cursor).await?,
        };
        self.crm.set_full_pass(cursor.since.is_none());
        let started = Instant::now();
        let mut pages = 0;
        let tenant = &self.task.tenant;
        let size = push_page_size(self.crm.kind());
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
                size,
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
            // Where this page starts: a bulk job it starts is checkpointed there.
            self.bulk.at = Some(cursor.clone());
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
                        size,
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
                    bulk: BTreeMap::new(),
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

    /// Bulk jobs an earlier delivery of this chunk started for one of its pages (its
    /// checkpoint, or the run's starting cursor, names them); `cursor` keeps none.
    async fn bulk_resumed(
        &mut self,
        cursor: &mut PushCursor,
    ) -> Result<Option<PushCursor>, CrmError> {
        if !cursor.bulk.is_empty() {
            let resumed = cursor.clone();
            cursor.bulk.clear();
            return Ok(Some(resumed));
        }
        if self.crm.kind().bulk_min().is_none() {
            return Ok(None);
        }
        let saved: Option<PushCursor> = self
            .runs
            .checkpoint(
                &self.task.tenant,
                &self.config.id,
                self.task.entity,
                Phase::Push,
            )
            .await
            .map_err(store)?;
        Ok(saved.filter(|s| {
            !s.bulk.is_empty() && s.since == cursor.since && s.pass_started == cursor.pass_started
        }))
    }

    /// Pushes one page of app records (see [`PagePush`]).
    pub(super) async fn push_page(
        &mut self,
        records: Vec<Record>,
        links: BTreeMap<String, Link>,
    ) -> Result<(), CrmError> {
        self.associations_to_push(&records).await?;
        let mut store = ChunkStore {
            behind: &mut self.behind,
            links: &self.links,
            runs: &self.runs,
            events: &self.events,
            task: self.task,
            bulk: &mut self.bulk,
        };
        PagePush {
            task: self.task,
            config: &self.config,
            mapper: &self.mapper,
            assoc: &self.assoc,
            provider: &self.provider,
            crm: &mut self.crm,
            store: &mut store,
            progress: &mut self.progress,
            errors: &mut self.errors,
        }
        .run(records, links)
        .await
    }
}

/// What a push page asks of the CRM: the CRM client's narrow port (a fake CRM in the
/// unit tests).
pub(super) trait CrmWrites {
    /// Which CRM (its batch size, key fields).
    fn kind(&self) -> CrmKind;
    /// Whether the object carries the marker field (known once ensured).
    fn has_marker(&self, entity: Entity) -> bool;
    /// Creates records, one outcome each.
    async fn create(
        &mut self,
        entity: Entity,
        inputs: &[(String, WriteValues)],
    ) -> Result<Vec<WriteOutcome>, CrmError>;
    /// Updates records by CRM id, one outcome each.
    async fn update(
        &mut self,
        entity: Entity,
        inputs: &[(String, WriteValues)],
    ) -> Result<Vec<WriteOutcome>, CrmError>;
    /// Reads records by CRM id (missing ones left out).
    async fn read(
        &mut self,
        entity: Entity,
        ids: &[String],
        fields: &[String],
    ) -> Result<Vec<CrmRecord>, CrmError>;
    /// App id → CRM id of the records carrying these app ids.
    async fn find_by_marker(
        &mut self,
        entity: Entity,
        app_ids: &[String],
    ) -> Result<BTreeMap<String, String>, CrmError>;
    /// Key → CRM id of the records holding these keys.
    async fn find_by_key(
        &mut self,
        entity: Entity,
        keys: &[String],
    ) -> Result<BTreeMap<String, String>, CrmError>;
    /// Deletes records by CRM id.
    async fn delete(&mut self, entity: Entity, ids: &[String]) -> Result<(), CrmError>;
    /// The fewest writes of one kind sent through the CRM's bulk API (None: none).
    fn bulk_min(&self) -> Option<usize> {
        None
    }
    /// Starts a bulk job of `op` over `rows` (app id or CRM id, values); its id.
    async fn bulk_submit(
        &mut self,
        _entity: Entity,
        _op: BulkOp,
        _rows: &[(String, WriteValues)],
    ) -> Result<String, CrmError> {
        Err(CrmError::Internal("no bulk API".into()))
    }
    /// Waits for bulk job `job` of `rows`: one outcome per row, in order.
    async fn bulk_collect(
        &mut self,
        _entity: Entity,
        _op: BulkOp,
        _job: &str,
        _rows: &[(String, WriteValues)],
    ) -> Result<Vec<WriteOutcome>, CrmError> {
        Err(CrmError::Internal("no bulk API".into()))
    }
}

impl CrmWrites for CrmClient<'_> {
    fn kind(&self) -> CrmKind {
        CrmClient::kind(self)
    }

    fn has_marker(&self, entity: Entity) -> bool {
        CrmClient::has_marker(self, entity)
    }

    async fn create(
        &mut self,
        entity: Entity,
        inputs: &[(String, WriteValues)],
    ) -> Result<Vec<WriteOutcome>, CrmError> {
        CrmClient::create(self, entity, inputs).await
    }

    async fn update(
        &mut self,
        entity: Entity,
        inputs: &[(String, WriteValues)],
    ) -> Result<Vec<WriteOutcome>, CrmError> {
        CrmClient::update(self, entity, inputs).await
    }

    async fn read(
        &mut self,
        entity: Entity,
        ids: &[String],
        fields: &[String],
    ) -> Result<Vec<CrmRecord>, CrmError> {
        CrmClient::read(self, entity, ids, fields).await
    }

    async fn find_by_marker(
        &mut self,
        entity: Entity,
        app_ids: &[String],
    ) -> Result<BTreeMap<String, String>, CrmError> {
        CrmClient::find_by_marker(self, entity, app_ids).await
    }

    async fn find_by_key(
        &mut self,
        entity: Entity,
        keys: &[String],
    ) -> Result<BTreeMap<String, String>, CrmError> {
        CrmClient::find_by_key(self, entity, keys).await
    }

    async fn delete(&mut self, entity: Entity, ids: &[String]) -> Result<(), CrmError> {
        CrmClient::delete(self, entity, ids).await
    }

    fn bulk_min(&self) -> Option<usize> {
        CrmClient::kind(self).bulk_min()
    }

    async fn bulk_submit(
        &mut self,
        entity: Entity,
        op: BulkOp,
        rows: &[(String, WriteValues)],
    ) -> Result<String, CrmError> {
        CrmClient::bulk_submit(self, entity, op, rows).await
    }

    async fn bulk_collect(
        &mut self,
        entity: Entity,
        op: BulkOp,
        job: &str,
        rows: &[(String, WriteValues)],
    ) -> Result<Vec<WriteOutcome>, CrmError> {
        CrmClient::bulk_collect(self, entity, op, job, rows).await
    }
}

/// Where a push page's links and conflicts go.
pub(super) trait PushStore {
    /// Writes links (behind the next CRM request, in the chunk).
    async fn store_links(&mut self, links: Vec<(RecordId, Link)>) -> Result<(), CrmError>;
    /// Stores a conflict and, when it is new or changed, tells the bus.
    async fn open_conflict(&mut self, c: StoredConflict) -> Result<(), CrmError>;
    /// The bulk job of `op` an earlier delivery started for this page, if any.
    fn bulk_job(&self, _op: BulkOp) -> Option<String> {
        None
    }
    /// Records that this page started bulk job `job` of `op` (in its checkpoint, behind
    /// the earlier store writes).
    async fn bulk_started(&mut self, _op: BulkOp, _job: &str) -> Result<(), CrmError> {
        Ok(())
    }
}

/// A push page's bulk jobs: where the page starts (its checkpoint, with the jobs it
/// started) and the jobs an earlier delivery started, with the page they were for.
#[derive(Debug, Default)]
pub(super) struct BulkJobs {
    /// The page being pushed: its start, and the jobs it started.
    at: Option<PushCursor>,
    /// What an earlier delivery checkpointed (jobs and the page they are for).
    resumed: Option<PushCursor>,
}

/// The chunk's side of [`PushStore`]: links behind the CRM requests, conflicts in the
/// runs store and on the bus.
pub(super) struct ChunkStore<'s> {
    behind: &'s mut WriteBehind,
    links: &'s Links,
    runs: &'s Runs,
    events: &'s crate::events::EventPublisher,
    task: &'s Task,
    bulk: &'s mut BulkJobs,
}

impl PushStore for ChunkStore<'_> {
    fn bulk_job(&self, op: BulkOp) -> Option<String> {
        let at = self.bulk.at.as_ref()?;
        if let Some(job) = at.bulk.get(op.as_str()) {
            return Some(job.clone());
        }
        self.bulk
            .resumed
            .as_ref()
            .filter(|r| r.page == at.page && r.since == at.since)
            .and_then(|r| r.bulk.get(op.as_str()).cloned())
    }

    async fn bulk_started(&mut self, op: BulkOp, job: &str) -> Result<(), CrmError> {
        let Some(at) = self.bulk.at.as_mut() else {
            return Ok(());
        };
        at.bulk.insert(op.as_str().to_owned(), job.to_owned());
        let (runs, task, checkpoint) = (self.runs.clone(), self.task.clone(), at.clone());
        self.behind
            .push(async move {
                runs.save_checkpoint(
                    &task.tenant,
                    &task.config_id,
                    task.entity,
                    Phase::Push,
                    &checkpoint,
                )
                .await
            })
            .await
            .map_err(super::store)
    }

    async fn store_links(&mut self, links: Vec<(RecordId, Link)>) -> Result<(), CrmError> {
        if links.is_empty() {
            return Ok(());
        }
        let store = self.links.clone();
        self.behind
            .push(async move { store.put_many(&links).await })
            .await
            .map_err(super::store)
    }

    async fn open_conflict(&mut self, c: StoredConflict) -> Result<(), CrmError> {
        if self
            .runs
            .put_conflict(&self.task.tenant, &c)
            .await
            .map_err(super::store)?
        {
            publish_conflict(self.events, self.task, &c).await;
        }
        Ok(())
    }
}

/// One page of app records pushed: classified into creates, updates and deletes, sent
/// in the CRM's batches, linked. It reaches the CRM and the store through their ports.
pub(super) struct PagePush<'p, C, S> {
    pub task: &'p Task,
    pub config: &'p SyncConfig,
    pub mapper: &'p Mapper,
    pub assoc: &'p super::assoc::Assoc,
    pub provider: &'p str,
    pub crm: &'p mut C,
    pub store: &'p mut S,
    pub progress: &'p mut Progress,
    pub errors: &'p mut Vec<RecordError>,
}

impl<C: CrmWrites, S: PushStore> PagePush<'_, C, S> {
    pub(super) async fn run(
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
            let mut crm_view = match self.mapper.to_crm(&app_values, &r.fields) {
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
                    if let Err(message) = self.assoc.to_crm(&mut crm_view) {
                        self.association_failed(&r.id, None, message);
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
            // Enough creates for the CRM's bulk API: one job (upserts by the marker).
            let bulk = marked && self.crm.bulk_min().is_some_and(|min| creates.len() >= min);
            let size = if bulk {
                creates.len()
            } else {
                self.crm.kind().batch_size()
            };
            for batch in creates.chunks(size) {
                let batch: Vec<&Create> = if marked {
                    batch.iter().collect()
                } else {
                    self.unmarked_creates(batch, &mut new_links).await?
                };
                if batch.is_empty() {
                    self.store
                        .store_links(std::mem::take(&mut new_links))
                        .await?;
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
                let outcomes = if bulk {
                    self.bulk_write(BulkOp::Upsert, &inputs).await?
                } else {
                    self.crm.create(entity, &inputs).await?
                };
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
                self.store
                    .store_links(std::mem::take(&mut new_links))
                    .await?;
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
                    let crm_values = match self
                        .mapper
                        .to_app(&self.assoc.to_app_lenient(&now_crm.values))
                    {
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
                        self.open_conflict(&r, &crm_id, &plan.conflicts, new_fields)
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
                let mut crm_values = match self.mapper.to_crm(&to_push, &r.fields) {
                    Ok(v) => v,
                    Err(e) => {
                        self.transform_failed(Some(&r.id), Some(&crm_id), &e);
                        continue;
                    }
                };
                if let Err(message) = self.assoc.to_crm(&mut crm_values) {
                    self.association_failed(&r.id, Some(&link), message);
                    new_links.push((r.id.clone(), link));
                    continue;
                }
                writes.push((crm_id, crm_values));
                pending.push((r.id.clone(), link, to_push));
            }
            // Enough updates for the CRM's bulk API: one job.
            let bulk = self.crm.bulk_min().is_some_and(|min| writes.len() >= min);
            let size = if bulk {
                writes.len().max(1)
            } else {
                self.crm.kind().batch_size()
            };
            for (batch, links_batch) in writes.chunks(size).zip(pending.chunks(size)) {
                let outcomes = if bulk {
                    self.bulk_write(BulkOp::Update, batch).await?
                } else {
                    self.crm.update(entity, batch).await?
                };
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
                self.store
                    .store_links(std::mem::take(&mut new_links))
                    .await?;
            }
        }
        if !deletes.is_empty() {
            let ids: Vec<String> = deletes
                .iter()
                .filter_map(|(_, l)| l.crm_id.clone())
                .collect();
            if !self.config.options.propagate_deletes {
                self.progress.add("skipped", ids.len() as u64);
            } else if self.crm.bulk_min().is_some_and(|min| ids.len() >= min) {
                // Enough for the CRM's bulk API: one delete job, its failed rows the
                // run's record errors (a record already gone counts as deleted).
                let rows: Vec<(String, WriteValues)> = ids
                    .iter()
                    .map(|id| (id.clone(), WriteValues::new()))
                    .collect();
                let outcomes = self.bulk_write(BulkOp::Delete, &rows).await?;
                let app_ids = deletes
                    .iter()
                    .filter(|(_, l)| l.crm_id.is_some())
                    .map(|(id, _)| id);
                for ((crm_id, app_id), outcome) in ids.iter().zip(app_ids).zip(outcomes) {
                    match outcome {
                        WriteOutcome::Failed(m) if !m.starts_with("ENTITY_IS_DELETED") => {
                            self.progress.add("failed", 1);
                            self.errors.push(RecordError {
                                phase: Phase::Push,
                                record_id: Some(app_id.to_string()),
                                crm_id: Some(crm_id.clone()),
                                message: m,
                                at: now(),
                            });
                        }
                        _ => self.progress.add("deleted", 1),
                    }
                }
            } else {
                self.crm.delete(entity, &ids).await?;
                self.progress.add("deleted", ids.len() as u64);
            }
            for (id, mut l) in deletes {
                l.app_deleted = true;
                new_links.push((id, l));
            }
        }
        self.store.store_links(new_links).await
    }

    /// Writes `rows` through one bulk job of `op`: the job an earlier delivery of this
    /// page started, or a new one (checkpointed before it is waited for).
    pub(super) async fn bulk_write(
        &mut self,
        op: BulkOp,
        rows: &[(String, WriteValues)],
    ) -> Result<Vec<WriteOutcome>, CrmError> {
        let entity = self.task.entity;
        let job = match self.store.bulk_job(op) {
            Some(job) => job,
            None => {
                let job = self.crm.bulk_submit(entity, op, rows).await?;
                self.store.bulk_started(op, &job).await?;
                job
            }
        };
        self.crm.bulk_collect(entity, op, &job, rows).await
    }

    /// The key (email / domain) a create sends the CRM (its CRM view), lower-cased.
    pub(super) fn crm_key(&self, crm_view: &Values) -> Option<String> {
        let field = self.crm.kind().key_field(self.task.entity)?;
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
    pub(super) async fn unmarked_creates<'r>(
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
                    message: match self.crm.kind().key_field(self.task.entity) {
                        Some(key) => format!(
                            "not created: without the marker field (the connection lacks \
                             schema write) a record needs its {key} to be created exactly once"
                        ),
                        None => format!(
                            "not created: {} have no key, so without the marker field (the \
                             connection lacks schema write) a create could not be found again",
                            self.task.entity
                        ),
                    },
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
    pub(super) async fn find_created_by_key(
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

    /// A push record naming an associated record the CRM does not have under this
    /// config: it fails alone, nothing of it is written.
    fn association_failed(&mut self, id: &RecordId, link: Option<&Link>, message: String) {
        self.progress.add("failed", 1);
        self.errors.push(RecordError {
            phase: Phase::Push,
            record_id: Some(id.to_string()),
            crm_id: link.and_then(|l| l.crm_id.clone()),
            message,
            at: now(),
        });
    }

    /// A push record whose transform passed its cap: it fails alone.
    pub(super) fn transform_failed(
        &mut self,
        record: Option<&RecordId>,
        crm_id: Option<&str>,
        e: &crate::sync::mapping::TransformFailed,
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

    /// Counts and stores a conflict found before an update.
    async fn open_conflict(
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
            provider: self.provider.to_owned(),
            entity: self.task.entity,
            record_id: r.id.clone(),
            crm_id: crm_id.to_owned(),
            fields: fields.to_vec(),
            status: "open".into(),
            detected_at: now(),
            settled_at: None,
            resolution: BTreeMap::new(),
        };
        self.store.open_conflict(c).await
    }
}

/// A push create: the record, its app values and the CRM values it sends.
pub(super) type Create = (Record, Values, Values);

/// A page of app records to push, with their links.
pub(super) struct PushPage {
    records: Vec<Record>,
    links: BTreeMap<String, Link>,
    cursor: Option<String>,
}

/// App records a push page reads for `kind`: five of its batches, at most
/// [`PUSH_PAGE`] — a page is the unit between checkpoints (and between the chunk's time
/// checks), so a CRM that writes slowly (Pipedrive: a record a request) gets smaller
/// pages and a chunk stays well inside the worker's time limit.
pub(super) fn push_page_size(kind: CrmKind) -> i32 {
    if let Some(page) = kind.bulk_page() {
        // A page that can fill a bulk job.
        return i32::try_from(page).unwrap_or(PUSH_PAGE).max(1);
    }
    i32::try_from(kind.batch_size().saturating_mul(5))
        .unwrap_or(PUSH_PAGE)
        .clamp(1, PUSH_PAGE)
}

/// A page of app records for a push (all of them in id order for a full pass, else
/// the change feed from `since`) and their links.
pub(super) async fn push_read(
    records: &Records,
    links: &Links,
    tenant: &crate::domain::TenantId,
    entity: Entity,
    since: &Option<String>,
    after: &Option<String>,
    size: i32,
) -> Result<PushPage, StoreError> {
    let page = match since {
        None => {
            records
                .scan_partition(tenant, entity, size, after.as_deref())
                .await?
        }
        Some(since) => {
            records
                .changes(tenant, entity, since, size, after.as_deref())
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

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::super::memory::{self, person};
    use super::*;

    /// A CRM that answers what the test says and remembers what it was asked.
    #[derive(Default)]
    struct FakeCrm {
        marked: bool,
        creates: VecDeque<WriteOutcome>,
        updates: VecDeque<WriteOutcome>,
        records: BTreeMap<String, CrmRecord>,
        by_marker: BTreeMap<String, String>,
        by_key: BTreeMap<String, String>,
        created: Vec<(String, WriteValues)>,
        updated: Vec<(String, WriteValues)>,
        deleted: Vec<String>,
        /// The fewest writes it takes through its bulk API (None: none).
        bulk_min: Option<usize>,
        /// Bulk jobs submitted: (op, rows).
        submitted: Vec<(BulkOp, usize)>,
        /// Bulk jobs collected.
        collected: Vec<String>,
    }

    impl CrmWrites for FakeCrm {
        fn kind(&self) -> CrmKind {
            CrmKind::of("hubspot").unwrap()
        }

        fn has_marker(&self, _entity: Entity) -> bool {
            self.marked
        }

        async fn create(
            &mut self,
            _entity: Entity,
            inputs: &[(String, WriteValues)],
        ) -> Result<Vec<WriteOutcome>, CrmError> {
            self.created.extend(inputs.iter().cloned());
            Ok(inputs
                .iter()
                .map(|(id, _)| {
                    self.creates
                        .pop_front()
                        .unwrap_or_else(|| WriteOutcome::Done(format!("crm-{id}")))
                })
                .collect())
        }

        async fn update(
            &mut self,
            _entity: Entity,
            inputs: &[(String, WriteValues)],
        ) -> Result<Vec<WriteOutcome>, CrmError> {
            self.updated.extend(inputs.iter().cloned());
            Ok(inputs
                .iter()
                .map(|(id, _)| {
                    self.updates
                        .pop_front()
                        .unwrap_or_else(|| WriteOutcome::Done(id.clone()))
                })
                .collect())
        }

        async fn read(
            &mut self,
            _entity: Entity,
            ids: &[String],
            _fields: &[String],
        ) -> Result<Vec<CrmRecord>, CrmError> {
            Ok(ids
                .iter()
                .filter_map(|id| self.records.get(id).cloned())
                .collect())
        }

        async fn find_by_marker(
            &mut self,
            _entity: Entity,
            app_ids: &[String],
        ) -> Result<BTreeMap<String, String>, CrmError> {
            Ok(app_ids
                .iter()
                .filter_map(|a| Some((a.clone(), self.by_marker.get(a)?.clone())))
                .collect())
        }

        async fn find_by_key(
            &mut self,
            _entity: Entity,
            keys: &[String],
        ) -> Result<BTreeMap<String, String>, CrmError> {
            Ok(keys
                .iter()
                .filter_map(|k| Some((k.clone(), self.by_key.get(k)?.clone())))
                .collect())
        }

        async fn delete(&mut self, _entity: Entity, ids: &[String]) -> Result<(), CrmError> {
            self.deleted.extend(ids.iter().cloned());
            Ok(())
        }

        fn bulk_min(&self) -> Option<usize> {
            self.bulk_min
        }

        async fn bulk_submit(
            &mut self,
            _entity: Entity,
            op: BulkOp,
            rows: &[(String, WriteValues)],
        ) -> Result<String, CrmError> {
            self.submitted.push((op, rows.len()));
            Ok(format!("job-{}", self.submitted.len()))
        }

        async fn bulk_collect(
            &mut self,
            entity: Entity,
            op: BulkOp,
            job: &str,
            rows: &[(String, WriteValues)],
        ) -> Result<Vec<WriteOutcome>, CrmError> {
            self.collected.push(job.to_owned());
            match op {
                BulkOp::Upsert => self.create(entity, rows).await,
                BulkOp::Update => self.update(entity, rows).await,
                BulkOp::Delete => {
                    let ids: Vec<String> = rows.iter().map(|(id, _)| id.clone()).collect();
                    self.delete(entity, &ids).await?;
                    Ok(ids.into_iter().map(WriteOutcome::Done).collect())
                }
            }
        }
    }

    /// Links and conflicts as the page stores them, and the bulk jobs it checkpointed.
    #[derive(Default)]
    struct Stash {
        links: BTreeMap<String, Link>,
        conflicts: Vec<StoredConflict>,
        bulk: BTreeMap<&'static str, String>,
    }

    impl PushStore for Stash {
        fn bulk_job(&self, op: BulkOp) -> Option<String> {
            self.bulk.get(op.as_str()).cloned()
        }

        async fn bulk_started(&mut self, op: BulkOp, job: &str) -> Result<(), CrmError> {
            self.bulk.insert(op.as_str(), job.to_owned());
            Ok(())
        }

        async fn store_links(&mut self, links: Vec<(RecordId, Link)>) -> Result<(), CrmError> {
            for (id, l) in links {
                self.links.insert(id.to_string(), l);
            }
            Ok(())
        }

        async fn open_conflict(&mut self, c: StoredConflict) -> Result<(), CrmError> {
            self.conflicts.push(c);
            Ok(())
        }
    }

    /// Pushes `records` (with `links`) through a [`PagePush`] of a fresh config.
    async fn push(
        direction: SyncDirection,
        crm: &mut FakeCrm,
        records: Vec<Record>,
        links: BTreeMap<String, Link>,
        propagate_deletes: bool,
    ) -> (Stash, Progress, Vec<RecordError>) {
        push_with(
            direction,
            crm,
            Stash::default(),
            records,
            links,
            propagate_deletes,
        )
        .await
    }

    /// [`push`] with a store that may already hold a page's bulk jobs.
    async fn push_with(
        direction: SyncDirection,
        crm: &mut FakeCrm,
        mut stash: Stash,
        records: Vec<Record>,
        links: BTreeMap<String, Link>,
        propagate_deletes: bool,
    ) -> (Stash, Progress, Vec<RecordError>) {
        let mut config = memory::config(direction);
        config.options.propagate_deletes = propagate_deletes;
        let task = memory::task(&config, Phase::Push);
        let mapper = Mapper::new(config.mappings_of(Entity::Contacts));
        let (mut progress, mut errors) = (Progress::default(), Vec::new());
        PagePush {
            task: &task,
            config: &config,
            mapper: &mapper,
            assoc: &super::super::assoc::Assoc::default(),
            provider: "hubspot",
            crm,
            store: &mut stash,
            progress: &mut progress,
            errors: &mut errors,
        }
        .run(records, links)
        .await
        .unwrap();
        (stash, progress, errors)
    }

    fn count(p: &Progress, name: &str) -> u64 {
        p.counts.get(name).copied().unwrap_or(0)
    }

    #[tokio::test]
    async fn creates_carry_the_app_id_and_every_outcome_is_linked_or_reported() {
        let people: Vec<Record> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| person(RecordId::generate(), &format!("{n}@example.com"), n))
            .collect();
        let mut crm = FakeCrm {
            marked: true,
            creates: VecDeque::from([
                WriteOutcome::Done("crm-a".into()),
                WriteOutcome::Exists(Some("crm-b".into())),
                WriteOutcome::Exists(None),
                WriteOutcome::Failed("INVALID_EMAIL".into()),
            ]),
            ..FakeCrm::default()
        };
        crm.by_marker
            .insert(people[2].id.to_string(), "crm-c".into());
        let (stash, progress, errors) = push(
            SyncDirection::Push,
            &mut crm,
            people.clone(),
            BTreeMap::new(),
            false,
        )
        .await;
        // Each create sent its app id as the marker.
        assert_eq!(crm.created.len(), 4);
        for ((app_id, values), r) in crm.created.iter().zip(&people) {
            assert_eq!(app_id, r.id.as_str());
            assert_eq!(
                values["email"].as_deref(),
                r.fields.get("email").map(String::as_str)
            );
        }
        assert_eq!(count(&progress, "created"), 2, "{progress:?}");
        assert_eq!(count(&progress, "skipped"), 1);
        assert_eq!(count(&progress, "failed"), 1);
        let link = |r: &Record| stash.links.get(r.id.as_str()).cloned();
        assert_eq!(link(&people[0]).unwrap().crm_id.as_deref(), Some("crm-a"));
        assert_eq!(
            link(&people[0]).unwrap().base["first_name"].as_deref(),
            Some("a")
        );
        // An existing record is linked with an empty base (the next pull reconciles).
        assert_eq!(link(&people[1]).unwrap().crm_id.as_deref(), Some("crm-b"));
        assert!(link(&people[1]).unwrap().base.is_empty());
        // A duplicate without a name is found by its marker.
        assert_eq!(link(&people[2]).unwrap().crm_id.as_deref(), Some("crm-c"));
        assert!(link(&people[3]).is_none());
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].message, "INVALID_EMAIL");
        assert_eq!(errors[0].record_id.as_deref(), Some(people[3].id.as_str()));
    }

    #[tokio::test]
    async fn without_the_marker_creates_are_looked_up_by_key_first() {
        let known = person(RecordId::generate(), "Known@Example.com", "K");
        let new = person(RecordId::generate(), "new@example.com", "N");
        let mut keyless = person(RecordId::generate(), "x@example.com", "X");
        keyless.fields.remove("email");
        let mut crm = FakeCrm::default();
        crm.by_key
            .insert("known@example.com".into(), "crm-known".into());
        let (stash, progress, errors) = push(
            SyncDirection::Push,
            &mut crm,
            vec![known.clone(), new.clone(), keyless.clone()],
            BTreeMap::new(),
            false,
        )
        .await;
        assert_eq!(crm.created.len(), 1, "only the new one is created");
        assert_eq!(crm.created[0].0, new.id.to_string());
        assert_eq!(
            stash.links[known.id.as_str()].crm_id.as_deref(),
            Some("crm-known")
        );
        assert!(stash.links.contains_key(new.id.as_str()));
        assert!(!stash.links.contains_key(keyless.id.as_str()));
        assert_eq!(count(&progress, "failed"), 1);
        assert!(errors[0].message.contains("without the marker field"));
    }

    #[tokio::test]
    async fn updates_send_only_app_changes_and_a_crm_side_change_is_a_conflict() {
        let mut r = person(RecordId::generate(), "ada@example.com", "Adeline");
        r.updated_at = now();
        let base: Values = [
            ("email", "ada@example.com"),
            ("first_name", "Ada"),
            ("phone", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), Some(v.to_owned())))
        .collect();
        let links = BTreeMap::from([(
            r.id.to_string(),
            Link {
                crm_id: Some("crm-1".into()),
                base: base.clone(),
                synced_version: 1,
                ..Link::default()
            },
        )]);
        // One way: the app's new name goes out; its cleared phone too.
        let mut crm = FakeCrm::default();
        let (stash, progress, _) = push(
            SyncDirection::Push,
            &mut crm,
            vec![r.clone()],
            links.clone(),
            false,
        )
        .await;
        assert_eq!(crm.updated.len(), 1);
        let (crm_id, sent) = &crm.updated[0];
        assert_eq!(crm_id, "crm-1");
        assert_eq!(sent["first_name"].as_deref(), Some("Adeline"));
        assert_eq!(sent.get("phone"), Some(&None));
        assert!(!sent.contains_key("email"), "unchanged fields are not sent");
        assert_eq!(count(&progress, "updated"), 1);
        let link = &stash.links[r.id.as_str()];
        assert_eq!(link.base["first_name"].as_deref(), Some("Adeline"));

        // Both ways: the CRM changed the name too since the last sync (later than the
        // app, last write wins): nothing is overwritten there, and the conflict waits
        // for the next pull rather than being pushed.
        let mut crm = FakeCrm::default();
        crm.records.insert(
            "crm-1".into(),
            CrmRecord {
                id: "crm-1".into(),
                values: BTreeMap::from([
                    ("email".to_owned(), "ada@example.com".to_owned()),
                    ("first_name".to_owned(), "Ada Lovelace".to_owned()),
                    ("phone".to_owned(), "1".to_owned()),
                ]),
                modified_ms: (now().unix_timestamp() + 60) * 1000,
            },
        );
        let (_, _, _) = push(
            SyncDirection::Bidirectional,
            &mut crm,
            vec![r.clone()],
            links,
            false,
        )
        .await;
        assert_eq!(crm.updated.len(), 1, "the phone still goes out");
        let sent = &crm.updated[0].1;
        assert_eq!(sent.get("phone"), Some(&None));
        assert!(
            !sent.contains_key("first_name"),
            "the CRM's later name stays: {sent:?}"
        );
    }

    #[tokio::test]
    async fn a_record_gone_from_the_crm_is_marked_and_app_deletes_follow_the_option() {
        let kept = person(RecordId::generate(), "k@example.com", "Changed");
        let mut gone = person(RecordId::generate(), "g@example.com", "G");
        gone.deleted_at = Some(now());
        let link = |crm_id: &str| Link {
            crm_id: Some(crm_id.into()),
            base: BTreeMap::from([("first_name".to_owned(), Some("Old".to_owned()))]),
            synced_version: 1,
            ..Link::default()
        };
        let links = BTreeMap::from([
            (kept.id.to_string(), link("crm-k")),
            (gone.id.to_string(), link("crm-g")),
        ]);
        for propagate in [false, true] {
            let mut crm = FakeCrm {
                updates: VecDeque::from([WriteOutcome::Failed("gone".into())]),
                ..FakeCrm::default()
            };
            let (stash, progress, errors) = push(
                SyncDirection::Push,
                &mut crm,
                vec![kept.clone(), gone.clone()],
                links.clone(),
                propagate,
            )
            .await;
            assert!(errors.is_empty(), "{errors:?}");
            assert!(stash.links[kept.id.as_str()].crm_deleted);
            assert!(stash.links[gone.id.as_str()].app_deleted);
            if propagate {
                assert_eq!(crm.deleted, ["crm-g"]);
                assert_eq!(count(&progress, "deleted"), 1);
            } else {
                assert!(crm.deleted.is_empty());
                assert_eq!(count(&progress, "skipped"), 2, "{progress:?}");
            }
        }
    }

    #[tokio::test]
    async fn enough_writes_go_through_one_bulk_job_checkpointed_before_it_is_collected() {
        let people: Vec<Record> = ["a", "b", "c"]
            .iter()
            .map(|n| person(RecordId::generate(), &format!("{n}@example.com"), n))
            .collect();
        let mut crm = FakeCrm {
            marked: true,
            bulk_min: Some(3),
            creates: VecDeque::from([
                WriteOutcome::Done("crm-a".into()),
                WriteOutcome::Failed(
                    "REQUIRED_FIELD_MISSING: Required fields are missing: [LastName]".into(),
                ),
                WriteOutcome::Done("crm-c".into()),
            ]),
            ..FakeCrm::default()
        };
        let (stash, progress, errors) = push(
            SyncDirection::Push,
            &mut crm,
            people.clone(),
            BTreeMap::new(),
            false,
        )
        .await;
        assert_eq!(crm.submitted, vec![(BulkOp::Upsert, 3)]);
        assert_eq!(crm.collected, vec!["job-1".to_owned()]);
        assert_eq!(stash.bulk.get("upsert").map(String::as_str), Some("job-1"));
        assert_eq!(count(&progress, "created"), 2, "{progress:?}");
        assert_eq!(count(&progress, "failed"), 1);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].record_id.as_deref(), Some(people[1].id.as_str()));
        assert!(errors[0].message.starts_with("REQUIRED_FIELD_MISSING"));
        assert_eq!(
            stash.links[people[2].id.as_str()].crm_id.as_deref(),
            Some("crm-c")
        );

        // The page pushed again after a redelivery collects the job it checkpointed.
        let mut again = FakeCrm {
            marked: true,
            bulk_min: Some(3),
            ..FakeCrm::default()
        };
        let resumed = Stash {
            bulk: BTreeMap::from([("upsert", "job-7".to_owned())]),
            ..Stash::default()
        };
        let (_, progress, _) = push_with(
            SyncDirection::Push,
            &mut again,
            resumed,
            people.clone(),
            BTreeMap::new(),
            false,
        )
        .await;
        assert!(again.submitted.is_empty());
        assert_eq!(again.collected, vec!["job-7".to_owned()]);
        assert_eq!(count(&progress, "created"), 3);

        // Fewer writes than the bulk minimum stay on the batch writes.
        let mut few = FakeCrm {
            marked: true,
            bulk_min: Some(4),
            ..FakeCrm::default()
        };
        push(
            SyncDirection::Push,
            &mut few,
            people,
            BTreeMap::new(),
            false,
        )
        .await;
        assert!(few.submitted.is_empty() && few.collected.is_empty());
        assert_eq!(few.created.len(), 3);
    }

    #[test]
    fn push_pages_are_five_batches_of_the_crm_at_most_five_hundred_records() {
        for kind in CrmKind::all() {
            let size = push_page_size(kind);
            if let Some(bulk) = kind.bulk_page() {
                // A CRM with a bulk API reads pages that can fill a job.
                assert_eq!(size, i32::try_from(bulk).unwrap(), "{kind:?}");
                assert!(bulk >= kind.bulk_min().unwrap_or(0), "{kind:?}");
                continue;
            }
            assert!((1..=PUSH_PAGE).contains(&size), "{kind:?}: {size}");
            let five = i32::try_from(kind.batch_size() * 5).unwrap();
            assert_eq!(size, five.min(PUSH_PAGE), "{kind:?}");
        }
        let pipedrive = CrmKind::of("pipedrive").unwrap();
        assert!(push_page_size(pipedrive) <= 100);
    }
}

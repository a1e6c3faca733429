//! The pull: read the CRM page by page from the checkpoint, write each page to the
//! app (beside the next page's fetch), apply the CRM's deletes when a pass completes.

use super::*;

impl Chunk<'_> {
    pub(super) async fn pull(&mut self) -> Result<Option<Task>, CrmError> {
        let entity = self.task.entity;
        if let Some(ids) = self.task.only.clone() {
            let fields = self.mapper.crm_fields();
            let records = self.crm.read(entity, &ids, &fields).await?;
            // Deletions a webhook reported, confirmed by the read-back not finding them
            // (a record restored since is read like the others).
            let found: BTreeSet<&str> = records.iter().map(|r| r.id.as_str()).collect();
            let at = unix_ms(now());
            let gone: Vec<(String, i64)> = self
                .task
                .gone
                .iter()
                .filter(|id| !found.contains(id.as_str()))
                .map(|id| (id.clone(), at))
                .collect();
            let records = self.associations_pulled(records).await?;
            self.pull_page(records).await?;
            if !gone.is_empty() {
                self.apply_crm_deletes(&gone).await?;
            }
            return Ok(None);
        }
        let fields = self.mapper.crm_fields();
        let filters: Vec<_> = self.config.filters_of(entity).cloned().collect();
        let filter_refs: Vec<_> = filters.iter().collect();
        let mut cursor = self.task.cursor.clone().unwrap_or_default();
        if let Some(saved) = self.bulk_pass_resumed(&cursor).await? {
            cursor = saved;
        }
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
            let mut next = page.next.take();
            if page.restarted {
                // The CRM lost its change position: this pass ends with a sweep.
                cursor.sweep = true;
                if let Some(n) = next.as_mut() {
                    n.sweep = true;
                }
            }
            let records = self
                .associations_pulled(std::mem::take(&mut page.records))
                .await?;
            if !page.deleted.is_empty() {
                // Deletions the CRM's change tracking reports: after every earlier
                // page is written (a record changed there, then deleted here).
                if let Some(before) = writing.take() {
                    self.page_written(before).await?;
                }
                let deleted = std::mem::take(&mut page.deleted);
                self.apply_crm_deletes(&deleted).await?;
            }
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
                    None => After::Pass(Cursor {
                        delta: page.resume.take().or_else(|| cursor.delta.clone()),
                        ..cursor.clone()
                    }),
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

    /// For a CRM with a bulk API, the checkpoint an earlier delivery of this chunk saved
    /// further into the same full pass (a query job it started, and how far its results
    /// were read): resuming there polls that job instead of starting another.
    async fn bulk_pass_resumed(&self, cursor: &Cursor) -> Result<Option<Cursor>, CrmError> {
        if cursor.page.is_some()
            || cursor.since_ms.is_some()
            || self.crm.kind().bulk_min().is_none()
        {
            return Ok(None);
        }
        let saved: Option<Cursor> = self
            .runs
            .checkpoint(
                &self.task.tenant,
                &self.config.id,
                self.task.entity,
                Phase::Pull,
            )
            .await
            .map_err(store)?;
        Ok(saved.filter(|s| {
            s.page.is_some() && s.since_ms.is_none() && s.pass_started_ms == cursor.pass_started_ms
        }))
    }

    /// What a page written in the background may touch: its CRM records, the app
    /// records they carry the id of, and their keys (email, domain).
    pub(super) fn footprint(&self, records: &[CrmRecord]) -> HashSet<String> {
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
                && let Some(key_field) = entity.key_field()
                && let Some(Some(k)) = values.get(key_field)
            {
                out.insert(format!("k{}", normalise_key(entity, k)));
            }
        }
        out
    }

    /// Waits for a page written in the background, then saves its checkpoint.
    pub(super) async fn page_written(&mut self, write: PageWrite) -> Result<(), CrmError> {
        let done = wait_written(Some(write)).await?;
        self.checkpoint_pull(done).await
    }

    /// Counts a written page and saves the checkpoint after it (at the end of a pass,
    /// once the pass's deletes are applied).
    pub(super) async fn checkpoint_pull(&mut self, done: Option<Written>) -> Result<(), CrmError> {
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
    pub(super) async fn finish_pull_pass(&mut self, cursor: &Cursor) -> Result<Cursor, CrmError> {
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
        if cursor.sweep {
            let gone = self.sweep_linked().await?;
            if !gone.is_empty() {
                self.apply_crm_deletes(&gone).await?;
            }
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
            delta: cursor.delta.clone(),
            sweep: false,
        })
    }

    /// The CRM records linked in this config that the CRM no longer has (read back in
    /// its batches), as deletions now: for a pass whose CRM lost its change position.
    pub(super) async fn sweep_linked(&mut self) -> Result<Vec<(String, i64)>, CrmError> {
        let linked: Vec<String> = self
            .links
            .all()
            .await
            .map_err(store)?
            .into_values()
            .filter(|l| !l.crm_deleted && !l.app_deleted)
            .filter_map(|l| l.crm_id)
            .collect();
        let found: BTreeSet<String> = self
            .crm
            .read(self.task.entity, &linked, &[])
            .await?
            .into_iter()
            .map(|r| r.id)
            .collect();
        let at = unix_ms(now());
        Ok(linked
            .into_iter()
            .filter(|id| !found.contains(id))
            .map(|id| (id, at))
            .collect())
    }

    pub(super) async fn apply_crm_deletes(
        &mut self,
        deleted: &[(String, i64)],
    ) -> Result<(), CrmError> {
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

    /// A page writer for `entity` (an associated one) with its `mapper`: what a deal
    /// pull uses to pull a company or contact not linked yet.
    pub(super) fn snapshot_for(&self, entity: Entity, mapper: Mapper) -> PullContext {
        let mut task = self.task.clone();
        task.entity = entity;
        PullContext {
            task: task.clone(),
            config: self.config.clone(),
            mapper,
            provider: self.provider.clone(),
            // Another pull may be making the same person: claim keys first.
            crowded: true,
            store: matching::Stored {
                records: self.records.clone(),
                links: Links::new(
                    self.links.table.clone(),
                    &self.task.tenant,
                    &self.config.id,
                    entity,
                ),
                runs: self.runs.clone(),
                events: self.events.clone(),
                task,
            },
        }
    }

    pub(super) fn snapshot(&self) -> PullContext {
        PullContext {
            task: self.task.clone(),
            config: self.config.clone(),
            mapper: self.mapper.clone(),
            provider: self.provider.clone(),
            crowded: self.crowded,
            store: matching::Stored {
                records: self.records.clone(),
                links: self.links.clone(),
                runs: self.runs.clone(),
                events: self.events.clone(),
                task: self.task.clone(),
            },
        }
    }

    pub(super) async fn pull_page(&mut self, records: Vec<CrmRecord>) -> Result<(), CrmError> {
        let (p, e) = self.snapshot().pull_page(records).await?;
        self.merge(p, e);
        Ok(())
    }

    // ---------------------------------------------------------------------- push
}

/// A pull page being written in the background.
pub(super) struct PageWrite {
    task: tokio::task::JoinHandle<Result<(Progress, Vec<RecordError>), CrmError>>,
    after: After,
    footprint: HashSet<String>,
}

/// Where a pull stands once a page is written.
pub(super) enum After {
    /// The next page of the pass.
    Page(Cursor),
    /// The pass's end (from the cursor of its last page).
    Pass(Cursor),
}

pub(super) type Written = (Progress, Vec<RecordError>, After);

/// Waits for a page written in the background (if any): its counts and errors.
pub(super) async fn wait_written(write: Option<PageWrite>) -> Result<Option<Written>, CrmError> {
    let Some(w) = write else {
        return Ok(None);
    };
    let (progress, errors) = w
        .task
        .await
        .map_err(|e| CrmError::Internal(format!("a page write stopped: {e}")))??;
    Ok(Some((progress, errors, w.after)))
}

/// What a pull page writes, past what matching reads: the store's narrow port, so
/// the page pipeline (matching, reconciling, conditional writes and their retries) is
/// unit-tested in memory.
pub(super) trait PageStore: matching::MatchStore {
    /// Writes new records and their key markers; `claiming`: each claims its key
    /// first, and the ids of those whose key a live record holds are answered, not
    /// written.
    async fn put_new(
        &self,
        records: &[Record],
        claiming: bool,
    ) -> Result<Vec<RecordId>, StoreError>;

    /// Saves a record read at revision `r.rev - 1` (`ConditionFailed` if it moved on).
    async fn save(&self, r: &Record, old_key: Option<&str>) -> Result<(), StoreError>;

    /// Writes this config's links.
    async fn put_links(&self, links: &[(RecordId, Link)]) -> Result<(), StoreError>;

    /// Stores a conflict and, when it is new or changed, tells the bus.
    async fn open_conflict(&self, c: &StoredConflict) -> Result<(), StoreError>;
}

impl PageStore for matching::Stored {
    async fn put_new(
        &self,
        records: &[Record],
        claiming: bool,
    ) -> Result<Vec<RecordId>, StoreError> {
        if claiming {
            self.records.put_new_claiming(records).await
        } else {
            self.records.put_new(records).await.map(|()| Vec::new())
        }
    }

    async fn save(&self, r: &Record, old_key: Option<&str>) -> Result<(), StoreError> {
        self.records.save(r, old_key).await
    }

    async fn put_links(&self, links: &[(RecordId, Link)]) -> Result<(), StoreError> {
        self.links.put_many(links).await
    }

    async fn open_conflict(&self, c: &StoredConflict) -> Result<(), StoreError> {
        if self.runs.put_conflict(&self.task.tenant, c).await? {
            publish_conflict(&self.events, &self.task, c).await;
        }
        Ok(())
    }
}

/// What writing one pull page needs (owned, so it can run beside the next fetch).
pub(super) struct PullContext<S = matching::Stored> {
    task: Task,
    config: SyncConfig,
    mapper: Mapper,
    provider: String,
    crowded: bool,
    store: S,
}

/// Times a pull page's record is reconciled again when its app record changed between
/// the read and the conditional write (another config's pull of the same person, an
/// API edit); past them it fails for this run and the next run retries it.
const WRITE_ATTEMPTS: usize = 3;
/// Changed records saved at once: each save is a conditional write of its own, and a
/// page of thousands (a Bulk result) all at once would open as many connections as
/// records — past Lambda's 1,024 file descriptors, and a flood DynamoDB's partition
/// answers with throttles anyway.
const SAVES_AT_ONCE: usize = 16;

/// Adds `other`'s counts to `progress`.
fn absorb(progress: &mut Progress, other: Progress) {
    for (name, n) in other.counts {
        progress.add(name, n);
    }
}

impl<S: PageStore> PullContext<S> {
    pub(super) async fn pull_page(
        &self,
        page: Vec<CrmRecord>,
    ) -> Result<(Progress, Vec<RecordError>), CrmError> {
        let mut progress = Progress::default();
        let mut errors = Vec::new();
        let mut page = page;
        for attempt in 1..=WRITE_ATTEMPTS {
            let (p, e, again) = self
                .pull_page_once(page, attempt > 1, attempt == WRITE_ATTEMPTS)
                .await?;
            absorb(&mut progress, p);
            errors.extend(e);
            if again.is_empty() {
                break;
            }
            page = again;
        }
        Ok((progress, errors))
    }

    /// Reconciles and writes a page once; answers the CRM records whose app record
    /// changed before its write (unless `last`: then they fail). `again`: the records
    /// were counted as processed by an earlier attempt.
    async fn pull_page_once(
        &self,
        page: Vec<CrmRecord>,
        again: bool,
        last: bool,
    ) -> Result<(Progress, Vec<RecordError>, Vec<CrmRecord>), CrmError> {
        let mut progress = Progress::default();
        let mut errors = Vec::new();
        if page.is_empty() {
            return Ok((progress, errors, Vec::new()));
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
        let mut crm_values: Vec<Values> = Vec::with_capacity(page.len());
        // Records whose transform passed its cap fail alone (by page index).
        let mut overflowed: BTreeMap<usize, crate::sync::mapping::TransformFailed> =
            BTreeMap::new();
        for (i, rec) in page.iter().enumerate() {
            crm_values.push(self.mapper.to_app(&rec.values).unwrap_or_else(|e| {
                overflowed.insert(i, e);
                Values::new()
            }));
        }
        // 1. Which app record each CRM record belongs to.
        let matching::Matched {
            candidate,
            existing,
            links,
        } = matching::match_page(
            &self.store,
            tenant,
            entity,
            marker,
            &page,
            &crm_values,
            |crm_id| derived_id(&self.task, &self.config, crm_id),
        )
        .await
        .map_err(store)?;
        // 2. Decide per record.
        let directions = self.mapper.directions();
        let pull_fields: Vec<&str> = directions
            .iter()
            .filter(|(_, d)| matches!(d, Direction::Pull | Direction::Bidirectional))
            .map(|(f, _)| f.as_str())
            .collect();
        // New records, with their page index.
        let mut new_records: Vec<(Record, usize)> = Vec::new();
        // Changed records, with the counts they add once written and their page index.
        let mut saves: Vec<(Record, Option<String>, Progress, usize)> = Vec::new();
        let mut new_links: Vec<(RecordId, Link)> = Vec::new();
        let mut conflicts: Vec<StoredConflict> = Vec::new();
        let mut seen: BTreeSet<String> = BTreeSet::new();
        for (i, rec) in page.iter().enumerate() {
            let id = candidate[i].clone();
            if !seen.insert(id.to_string()) {
                continue; // the same record twice in one page (re-anchored search)
            }
            if !again {
                progress.add("processed", 1);
            }
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
                    new_records.push((r, i));
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
                    // What this record adds to the counts, once it is written.
                    let mut mine = Progress::default();
                    mine.add("conflicts_resolved", plan.resolved as u64);
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
                        mine.add("conflicts_detected", new_fields as u64);
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
                        mine.add("updated", 1);
                        mine.add("pulled", 1);
                    } else {
                        mine.add("skipped", 1);
                    }
                    if changed || newly_linked {
                        r.rev += 1;
                        link.synced_version = r.version;
                        saves.push((r, old_key, mine, i));
                    } else {
                        absorb(&mut progress, mine);
                    }
                    new_links.push((id, link));
                }
            }
        }
        // 3. Write: new records (ids nobody else writes) in batches, changed records
        //    conditionally, then the links that record it all.
        let (fresh, fresh_at): (Vec<Record>, Vec<usize>) = new_records.into_iter().unzip();
        let mut lost: BTreeSet<String> = BTreeSet::new();
        let mut retry: Vec<CrmRecord> = Vec::new();
        let taken = self
            .store
            .put_new(&fresh, self.crowded)
            .await
            .map_err(store)?;
        for (r, i) in fresh.iter().zip(fresh_at) {
            if !taken.contains(&r.id) {
                progress.add("created", 1);
                progress.add("pulled", 1);
                continue;
            }
            // Another config's pull made the person meanwhile: matched to it again.
            lost.insert(r.id.to_string());
            if last {
                progress.add("failed", 1);
                errors.push(RecordError {
                    phase: Phase::Pull,
                    record_id: None,
                    crm_id: page.get(i).map(|rec| rec.id.clone()),
                    message: "another record took this record's key during the sync; \
                              retried next run"
                        .into(),
                    at,
                });
            } else {
                retry.extend(page.get(i).cloned());
            }
        }
        use futures::StreamExt as _;
        let results: Vec<_> = futures::stream::iter(saves)
            .map(|(r, old_key, mine, i)| async move {
                let result = self.store.save(&r, old_key.as_deref()).await;
                (r, mine, i, result)
            })
            .buffered(SAVES_AT_ONCE)
            .collect()
            .await;
        for (r, mine, i, result) in results {
            match result {
                Ok(()) => absorb(&mut progress, mine),
                Err(StoreError::ConditionFailed) if !last => {
                    // Edited meanwhile: reconciled again against the new app values.
                    lost.insert(r.id.to_string());
                    retry.extend(page.get(i).cloned());
                }
                Err(StoreError::ConditionFailed) => {
                    // Still edited: the link is not advanced, so the next pull
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
        conflicts.retain(|c| !lost.contains(c.record_id.as_str()));
        for c in &conflicts {
            self.store.open_conflict(c).await.map_err(store)?;
        }
        self.store.put_links(&new_links).await.map_err(store)?;
        Ok((progress, errors, retry))
    }
}

#[cfg(test)]
mod tests {
    use super::super::memory::{self, Memory, person};
    use super::*;

    fn context(store: Memory, crowded: bool) -> PullContext<Memory> {
        let config = memory::config(SyncDirection::Bidirectional);
        PullContext {
            mapper: Mapper::new(config.mappings_of(Entity::Contacts)),
            task: memory::task(&config, Phase::Pull),
            config,
            provider: "hubspot".into(),
            crowded,
            store,
        }
    }

    fn crm(id: &str, email: &str, first: &str, modified_ms: i64) -> CrmRecord {
        CrmRecord {
            id: id.into(),
            values: BTreeMap::from([
                ("email".to_owned(), email.to_owned()),
                ("first_name".to_owned(), first.to_owned()),
            ]),
            modified_ms,
        }
    }

    /// A record pulled before (linked, base as the CRM had it), now changed in the CRM.
    fn linked(ctx: &PullContext<Memory>, crm_id: &str) -> RecordId {
        let id = derived_id(&ctx.task, &ctx.config, crm_id);
        ctx.store
            .insert(person(id.clone(), "ada@example.com", "Ada"));
        let base: Values = [
            ("email", Some("ada@example.com")),
            ("first_name", Some("Ada")),
            ("phone", None),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.map(str::to_owned)))
        .collect();
        ctx.store.links.lock().unwrap().insert(
            id.to_string(),
            Link {
                crm_id: Some(crm_id.into()),
                base,
                synced_version: 1,
                crm_modified_ms: 1,
                ..Link::default()
            },
        );
        id
    }

    #[tokio::test]
    async fn a_write_that_loses_to_an_edit_is_reconciled_again() {
        let ctx = context(Memory::default(), false);
        let id = linked(&ctx, "c1");
        *ctx.store.interfere.lock().unwrap() = 1;
        let page = vec![crm("c1", "ada@example.com", "Adeline", 2)];
        let (progress, errors) = ctx.pull_page(page).await.unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(progress.counts.get("processed"), Some(&1));
        assert_eq!(progress.counts.get("updated"), Some(&1));
        assert_eq!(progress.counts.get("failed"), None);
        // Both changes: the CRM's name and the edit that got there first.
        let r = ctx.store.record(&id);
        assert_eq!(r.fields["first_name"], "Adeline");
        assert_eq!(r.fields["phone"], "+15550000");
        assert_eq!(
            ctx.store.links.lock().unwrap()[id.as_str()].crm_modified_ms,
            2
        );
    }

    #[tokio::test]
    async fn a_write_that_keeps_losing_fails_for_this_run_only() {
        let ctx = context(Memory::default(), false);
        let id = linked(&ctx, "c1");
        *ctx.store.interfere.lock().unwrap() = WRITE_ATTEMPTS;
        let page = vec![crm("c1", "ada@example.com", "Adeline", 2)];
        let (progress, errors) = ctx.pull_page(page).await.unwrap();
        assert_eq!(progress.counts.get("processed"), Some(&1));
        assert_eq!(progress.counts.get("failed"), Some(&1));
        assert_eq!(progress.counts.get("updated"), None);
        assert_eq!(errors.len(), 1);
        assert!(errors[0].message.contains("changed during the sync"));
        // The link is not advanced: the next run reconciles the record again.
        assert_eq!(
            ctx.store.links.lock().unwrap()[id.as_str()].crm_modified_ms,
            1
        );
        assert_eq!(ctx.store.record(&id).fields["first_name"], "Ada");
    }

    #[tokio::test]
    async fn a_person_another_pull_made_meanwhile_is_linked_not_made_twice() {
        let ctx = context(Memory::default(), true);
        let theirs = person(RecordId::generate(), "bob@example.com", "Bob");
        *ctx.store.claimed_meanwhile.lock().unwrap() = Some(theirs.clone());
        let page = vec![crm("c2", "Bob@Example.com", "Bob", 5)];
        let (progress, errors) = ctx.pull_page(page).await.unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(progress.counts.get("processed"), Some(&1));
        assert_eq!(progress.counts.get("created"), None);
        assert_eq!(ctx.store.records.lock().unwrap().len(), 1, "one record");
        let links = ctx.store.links.lock().unwrap();
        assert_eq!(links[theirs.id.as_str()].crm_id.as_deref(), Some("c2"));
        let mine = derived_id(&ctx.task, &ctx.config, "c2");
        assert!(!links.contains_key(mine.as_str()));
    }

    #[tokio::test]
    async fn without_a_race_new_people_are_created_under_derived_ids() {
        let ctx = context(Memory::default(), true);
        let page = vec![
            crm("c3", "cy@example.com", "Cy", 5),
            crm("c4", "di@example.com", "Di", 5),
        ];
        let (progress, errors) = ctx.pull_page(page).await.unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(progress.counts.get("created"), Some(&2));
        for crm_id in ["c3", "c4"] {
            let id = derived_id(&ctx.task, &ctx.config, crm_id);
            assert_eq!(
                ctx.store.links.lock().unwrap()[id.as_str()]
                    .crm_id
                    .as_deref(),
                Some(crm_id)
            );
        }
    }

    #[tokio::test]
    async fn a_record_deleted_in_the_app_is_not_pulled_back() {
        let ctx = context(Memory::default(), false);
        // Pushed by this config without the marker, then deleted in the app.
        let mut gone = person(RecordId::generate(), "eve@example.com", "Eve");
        gone.deleted_at = Some(now());
        ctx.store.insert(gone.clone());
        ctx.store.links.lock().unwrap().insert(
            gone.id.to_string(),
            Link {
                crm_id: Some("c5".into()),
                ..Link::default()
            },
        );
        let page = vec![crm("c5", "eve@example.com", "Eve", 9)];
        let (progress, errors) = ctx.pull_page(page).await.unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(progress.counts.get("skipped"), Some(&1));
        assert_eq!(progress.counts.get("created"), None);
        assert_eq!(ctx.store.records.lock().unwrap().len(), 1);
        assert!(ctx.store.record(&gone.id).deleted_at.is_some());
    }
}

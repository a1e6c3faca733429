//! Sync-run items: logs (with their by-config index), the run hold, checkpoints,
//! record errors and conflicts, and the update expressions that count a log's chunks
//! exactly once (see `sync::runs`).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::keys::{
    conflicts as conflict_pk, record_errors as error_pk, sync_logs as log_pk,
    sync_logs_of_config as log_by_config, sync_state as sync_pk,
};
use super::{
    Keyed, Listing, Page, QueryOpts, StoreError, Table, Value, Write, keep_readable, keys,
};
use crate::domain::{ConflictId, JobId, SyncConfigId, SyncLogId, TenantId, now};
use crate::sync::runs::{
    ACTIVE_HOLD, ConflictQuery, LogQuery, Phase, Progress, RecordError, RunStatus, StoredConflict,
    SyncLog,
};
use crate::sync::schema::Entity;

#[derive(Serialize, Deserialize)]
struct LogItem {
    pk: String,
    sk: String,
    gsi1pk: String,
    gsi1sk: String,
    #[serde(flatten)]
    log: SyncLog,
}

/// The run store.
#[derive(Clone, Debug)]
pub struct Runs {
    table: Table,
}

#[derive(Serialize, Deserialize)]
struct Active {
    pk: String,
    sk: String,
    job_id: JobId,
    open_logs: i64,
    until: i64,
    /// DynamoDB removes a hold nothing released a day after it lapsed (a trigger that
    /// died before enqueueing its run, of a config deleted meanwhile).
    #[serde(default)]
    ttl: i64,
}

#[derive(Serialize, Deserialize)]
struct CheckpointItem {
    pk: String,
    sk: String,
    cursor: String,
    #[serde(with = "time::serde::rfc3339")]
    at: OffsetDateTime,
}

impl Runs {
    /// Runs in `table`.
    pub fn new(table: Table) -> Self {
        Self { table }
    }

    /// Stores a new log.
    pub async fn create_log(&self, log: &SyncLog) -> Result<(), StoreError> {
        self.table
            .insert(&LogItem {
                pk: log_pk(&log.tenant),
                sk: log.id.to_string(),
                gsi1pk: log_by_config(&log.tenant, &log.config_id),
                gsi1sk: log.id.to_string(),
                log: log.clone(),
            })
            .await
    }

    /// One log.
    pub async fn log(
        &self,
        tenant: &TenantId,
        id: &SyncLogId,
    ) -> Result<Option<SyncLog>, StoreError> {
        let item: Option<LogItem> = self.table.get(&log_pk(tenant), id.as_str()).await?;
        Ok(item.map(|i| i.log))
    }

    /// A page of logs, newest first (of one config, or of the tenant).
    pub async fn logs(
        &self,
        tenant: &TenantId,
        config: Option<&SyncConfigId>,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Page<SyncLog>, StoreError> {
        let (index, pk) = match config {
            Some(c) => (Some("gsi1"), log_by_config(tenant, c)),
            None => (None, log_pk(tenant)),
        };
        let page: Page<LogItem> = self
            .table
            .query(
                index,
                &pk,
                QueryOpts {
                    limit: Some(limit),
                    cursor,
                    descending: true,
                    ..Default::default()
                },
            )
            .await?;
        // The by-config index may lag the run's writes: its logs are read again from
        // the table, so a run's counts and status are never older than the table's.
        let items = match index {
            Some(_) => self.current(page.items).await?,
            None => page.items,
        };
        Ok(Page {
            items: items.into_iter().map(|i| i.log).collect(),
            cursor: page.cursor,
        })
    }

    /// Logs an index answered, as the table holds them now (in the index's order).
    async fn current(&self, found: Vec<LogItem>) -> Result<Vec<LogItem>, StoreError> {
        let keys: Vec<(String, String)> =
            found.iter().map(|i| (i.pk.clone(), i.sk.clone())).collect();
        let fresh: Vec<LogItem> = self.table.batch_get(&keys, true).await?;
        let mut by_sk: HashMap<String, LogItem> =
            fresh.into_iter().map(|i| (i.sk.clone(), i)).collect();
        Ok(found
            .into_iter()
            .filter_map(|i| by_sk.remove(&i.sk))
            .collect())
    }

    /// Adds a chunk's progress (no completion).
    pub async fn progress(
        &self,
        tenant: &TenantId,
        id: &SyncLogId,
        p: &Progress,
    ) -> Result<(), StoreError> {
        self.apply(tenant, id, p, None).await.map(|_| ())
    }

    /// Records a chunk's completion once: adds its progress, adds `handed_on` chunks
    /// and removes itself from `pending`. Returns the log after the update, or None if
    /// this chunk was already recorded (a redelivery).
    pub async fn complete_chunk(
        &self,
        tenant: &TenantId,
        id: &SyncLogId,
        chunk: &str,
        handed_on: i64,
        p: &Progress,
    ) -> Result<Option<SyncLog>, StoreError> {
        match self
            .apply(tenant, id, p, Some((chunk, handed_on - 1)))
            .await
        {
            Ok(log) => Ok(Some(log)),
            Err(StoreError::ConditionFailed) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn apply(
        &self,
        tenant: &TenantId,
        id: &SyncLogId,
        p: &Progress,
        chunk: Option<(&str, i64)>,
    ) -> Result<SyncLog, StoreError> {
        let mut sets = vec!["updated_at = :now".to_owned()];
        let mut adds = Vec::new();
        let mut values: Vec<(String, Value)> =
            vec![(":now".into(), Value::S(crate::domain::rfc3339(now())))];
        let mut names: Vec<(String, String)> = Vec::new();
        for (i, (name, n)) in p.counts.iter().enumerate() {
            names.push((format!("#c{i}"), (*name).to_owned()));
            adds.push(format!("counts.#c{i} :c{i}"));
            values.push((format!(":c{i}"), Value::N(n.to_string())));
        }
        if let Some(t) = p.estimated_total {
            sets.push("estimated_total = :total".into());
            values.push((":total".into(), Value::N(t.to_string())));
        }
        if let Some(stage) = p.stage {
            sets.push("stage = :stage".into());
            values.push((":stage".into(), Value::S(stage.to_owned())));
        }
        if let Some(e) = &p.error {
            sets.push("#error = :error".into());
            names.push(("#error".into(), "error".into()));
            values.push((":error".into(), Value::S(e.chars().take(500).collect())));
        }
        if let Some(code) = p.error_code {
            sets.push("error_code = :error_code".into());
            values.push((":error_code".into(), Value::S(code.to_owned())));
        }
        let mut condition = "attribute_exists(pk)".to_owned();
        if let Some((chunk_id, delta)) = chunk {
            adds.push("pending :delta".into());
            adds.push("done :chunk".into());
            values.push((":delta".into(), Value::N(delta.to_string())));
            values.push((":chunk".into(), Value::Ss(vec![chunk_id.to_owned()])));
            values.push((":chunk_id".into(), Value::S(chunk_id.to_owned())));
            condition.push_str(" AND NOT contains(done, :chunk_id)");
        }
        let mut update = format!("SET {}", sets.join(", "));
        if !adds.is_empty() {
            update.push_str(&format!(" ADD {}", adds.join(", ")));
        }
        // Logs are created with every counter present, so ADD can reach into the map.
        let values_ref: Vec<(&str, Value)> = values
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        let names_ref: Vec<(&str, &str)> = names
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let item: LogItem = self
            .table
            .update(
                &log_pk(tenant),
                id.as_str(),
                &update,
                &condition,
                values_ref,
                &names_ref,
            )
            .await?;
        Ok(item.log)
    }

    /// Closes a log whose chunks are all done and counts it off its job's hold on the
    /// config in one transaction, so a run never shows finished while its config is
    /// still held, and a failure between the two cannot leave the hold behind until it
    /// lapses. The hold of the job's last log is then deleted; left at zero (that
    /// delete failed), it no longer holds the config ([`Runs::start_job`]).
    pub async fn close_log(
        &self,
        tenant: &TenantId,
        config: &SyncConfigId,
        job: &JobId,
        id: &SyncLogId,
        status: RunStatus,
    ) -> Result<(), StoreError> {
        let at = Value::S(crate::domain::rfc3339(now()));
        let finish = Write::UpdateIf {
            pk: log_pk(tenant),
            sk: id.as_str().to_owned(),
            update: FINISH,
            condition: "#status = :running",
            values: vec![
                (":status", Value::S(status_name(status))),
                (":done", Value::S("done".into())),
                (":at", at),
                (":running", Value::S("running".into())),
            ],
            names: vec![("#status", "status")],
        };
        let count_off = Write::UpdateIf {
            pk: sync_pk(tenant, config),
            sk: keys::RUN_HOLD_SK.to_owned(),
            update: "ADD open_logs :minus",
            condition: "job_id = :job",
            values: vec![
                (":minus", Value::N("-1".into())),
                (":job", Value::S(job.to_string())),
            ],
            names: Vec::new(),
        };
        match self.table.transact(vec![finish, count_off]).await {
            Ok(()) => {}
            // Closed already (a redelivery), or the hold lapsed and is no longer this
            // job's: close the log alone if it is still open.
            Err(StoreError::ConditionFailed) => {
                return self.finish(tenant, id, status).await.map(|_| ());
            }
            Err(e) => return Err(e),
        }
        match self
            .table
            .take::<Active>(
                &sync_pk(tenant, config),
                keys::RUN_HOLD_SK,
                "job_id = :job AND open_logs <= :zero",
                vec![
                    (":job", Value::S(job.to_string())),
                    (":zero", Value::N("0".into())),
                ],
                &[],
            )
            .await
        {
            Ok(_) | Err(StoreError::ConditionFailed) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Closes a log whose chunks are all done (once: only while it is running).
    pub async fn finish(
        &self,
        tenant: &TenantId,
        id: &SyncLogId,
        status: RunStatus,
    ) -> Result<Option<SyncLog>, StoreError> {
        let at = now();
        let result: Result<LogItem, StoreError> = self
            .table
            .update(
                &log_pk(tenant),
                id.as_str(),
                FINISH,
                "#status = :running",
                vec![
                    (":status", Value::S(status_name(status))),
                    (":done", Value::S("done".into())),
                    (":at", Value::S(crate::domain::rfc3339(at))),
                    (":running", Value::S("running".into())),
                ],
                &[("#status", "status")],
            )
            .await;
        match result {
            Ok(item) => Ok(Some(item.log)),
            Err(StoreError::ConditionFailed) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Takes the config for a run with `logs` entity logs; None if another run holds it.
    /// A hold that lapsed, or whose logs are all closed ([`Runs::close_log`]), holds
    /// nothing.
    pub async fn start_job(
        &self,
        tenant: &TenantId,
        config: &SyncConfigId,
        job: &JobId,
        logs: i64,
    ) -> Result<Option<()>, StoreError> {
        let now_s = now().unix_timestamp();
        let until = now_s + ACTIVE_HOLD.whole_seconds();
        let taken: Result<Active, StoreError> = self
            .table
            .update(
                &sync_pk(tenant, config),
                keys::RUN_HOLD_SK,
                "SET job_id = :job, open_logs = :logs, #until = :until, #ttl = :ttl \
                 REMOVE followup",
                "attribute_not_exists(pk) OR #until < :now OR open_logs <= :zero",
                vec![
                    (":job", Value::S(job.to_string())),
                    (":logs", Value::num(logs)),
                    (":until", Value::num(until)),
                    (":ttl", Value::num(until + 86_400)),
                    (":now", Value::num(now_s)),
                    (":zero", Value::num(0)),
                ],
                &[("#until", "until"), ("#ttl", "ttl")],
            )
            .await;
        match taken {
            Ok(_) => Ok(Some(())),
            Err(StoreError::ConditionFailed) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The job currently holding the config, if any (not lapsed, a log still open).
    pub async fn active_job(
        &self,
        tenant: &TenantId,
        config: &SyncConfigId,
    ) -> Result<Option<JobId>, StoreError> {
        let item: Option<Active> = self
            .table
            .get(&sync_pk(tenant, config), keys::RUN_HOLD_SK)
            .await?;
        Ok(item
            .filter(|a| a.until >= now().unix_timestamp() && a.open_logs > 0)
            .map(|a| a.job_id))
    }

    /// Asks the run holding the config for a follow-up: true if this call is the first
    /// to ask (the caller then schedules it), false if one was asked for already; None
    /// if no run holds the config any more.
    pub async fn ask_followup(
        &self,
        tenant: &TenantId,
        config: &SyncConfigId,
    ) -> Result<Option<bool>, StoreError> {
        let result: Result<Active, StoreError> = self
            .table
            .update(
                &sync_pk(tenant, config),
                keys::RUN_HOLD_SK,
                "SET followup = :yes",
                "attribute_exists(pk) AND attribute_not_exists(followup) AND #until >= :now",
                vec![
                    (":yes", Value::Bool(true)),
                    (":now", Value::N(now().unix_timestamp().to_string())),
                ],
                &[("#until", "until")],
            )
            .await;
        match result {
            Ok(_) => Ok(Some(true)),
            Err(StoreError::ConditionFailed) => {
                Ok(self.active_job(tenant, config).await?.map(|_| false))
            }
            Err(e) => Err(e),
        }
    }

    /// One of the job's logs closed; the last one releases the config.
    pub async fn log_closed(
        &self,
        tenant: &TenantId,
        config: &SyncConfigId,
        job: &JobId,
    ) -> Result<(), StoreError> {
        let result: Result<Active, StoreError> = self
            .table
            .update(
                &sync_pk(tenant, config),
                keys::RUN_HOLD_SK,
                "ADD open_logs :minus",
                "job_id = :job",
                vec![
                    (":minus", Value::N("-1".into())),
                    (":job", Value::S(job.to_string())),
                ],
                &[],
            )
            .await;
        match result {
            Ok(a) if a.open_logs <= 0 => {
                match self
                    .table
                    .take::<Active>(
                        &sync_pk(tenant, config),
                        keys::RUN_HOLD_SK,
                        "job_id = :job",
                        vec![(":job", Value::S(job.to_string()))],
                        &[],
                    )
                    .await
                {
                    Ok(_) | Err(StoreError::ConditionFailed) => Ok(()),
                    Err(e) => Err(e),
                }
            }
            Ok(_) | Err(StoreError::ConditionFailed) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The saved position of (config, entity, phase).
    pub async fn checkpoint<T: serde::de::DeserializeOwned>(
        &self,
        tenant: &TenantId,
        config: &SyncConfigId,
        entity: Entity,
        phase: Phase,
    ) -> Result<Option<T>, StoreError> {
        let item: Option<CheckpointItem> = self
            .table
            .get(
                &sync_pk(tenant, config),
                &keys::checkpoint(entity, phase.as_str()),
            )
            .await?;
        item.map(|i| serde_json::from_str(&i.cursor).map_err(super::conversion))
            .transpose()
    }

    /// Saves the position of (config, entity, phase).
    pub async fn save_checkpoint<T: Serialize>(
        &self,
        tenant: &TenantId,
        config: &SyncConfigId,
        entity: Entity,
        phase: Phase,
        cursor: &T,
    ) -> Result<(), StoreError> {
        self.table
            .put(&CheckpointItem {
                pk: sync_pk(tenant, config),
                sk: keys::checkpoint(entity, phase.as_str()),
                cursor: serde_json::to_string(cursor).map_err(super::conversion)?,
                at: now(),
            })
            .await
    }

    /// Records failed records of a log (one item each; a retry overwrites).
    pub async fn record_errors(
        &self,
        tenant: &TenantId,
        log: &SyncLogId,
        errors: &[RecordError],
    ) -> Result<(), StoreError> {
        let mut puts = Vec::with_capacity(errors.len());
        for e in errors {
            let reference = e
                .record_id
                .as_deref()
                .or(e.crm_id.as_deref())
                .unwrap_or("unknown");
            puts.push(super::to_item(&Keyed {
                pk: error_pk(tenant, log),
                sk: keys::record_error(e.phase.as_str(), reference),
                item: e,
            })?);
        }
        self.table.batch_write(puts, Vec::new()).await
    }

    /// The failed records of a log.
    pub async fn errors(
        &self,
        tenant: &TenantId,
        log: &SyncLogId,
    ) -> Result<Vec<RecordError>, StoreError> {
        let items: Vec<Keyed<RecordError>> =
            self.table.query_all(&error_pk(tenant, log), "").await?;
        Ok(items.into_iter().map(|k| k.item).collect())
    }

    /// Stores (or refreshes) an open conflict.
    pub async fn put_conflict(
        &self,
        tenant: &TenantId,
        c: &StoredConflict,
    ) -> Result<bool, StoreError> {
        let keyed = Keyed {
            pk: conflict_pk(tenant),
            sk: c.id.to_string(),
            item: c,
        };
        // True when this opens the conflict (new, or settled before): what the bus is
        // told; a conflict found open again is only brought up to date.
        let item = super::to_item(&keyed)?;
        match self
            .table
            .put_if(
                item,
                "attribute_not_exists(pk) OR #st <> :open",
                Some(("#st", "status")),
                Some((":open", Value::S("open".into()))),
            )
            .await
        {
            Ok(()) => Ok(true),
            Err(StoreError::ConditionFailed) => self.table.put(&keyed).await.map(|()| false),
            Err(e) => Err(e),
        }
    }

    /// Saves a change to a conflict that must still exist (a deleted config's purge may
    /// have removed it meanwhile: then `ConditionFailed`, and nothing is re-created).
    pub async fn update_conflict(
        &self,
        tenant: &TenantId,
        c: &StoredConflict,
    ) -> Result<(), StoreError> {
        let item = super::to_item(&Keyed {
            pk: conflict_pk(tenant),
            sk: c.id.to_string(),
            item: c,
        })?;
        self.table
            .put_if(item, "attribute_exists(pk)", None, None)
            .await
    }

    /// The ids of every conflict of one config, read consistently (the purge's sweep
    /// must see every conflict written before it began).
    pub async fn conflict_ids_of(
        &self,
        tenant: &TenantId,
        config: &SyncConfigId,
    ) -> Result<Vec<ConflictId>, StoreError> {
        let mut ids = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page: Page<Keyed<StoredConflict>> = self
                .table
                .query(
                    None,
                    &conflict_pk(tenant),
                    QueryOpts {
                        cursor: cursor.as_deref(),
                        filter: Some((
                            "config_id = :config",
                            vec![(":config", Value::S(config.to_string()))],
                        )),
                        consistent: true,
                        ..Default::default()
                    },
                )
                .await?;
            ids.extend(page.items.into_iter().map(|k| k.item.id));
            match page.cursor {
                Some(c) => cursor = Some(c),
                None => return Ok(ids),
            }
        }
    }

    /// Deletes a deleted config's run state: its hold, the checkpoints of both
    /// phases of `entities` and its conflicts (read consistently; see `sync::purge`).
    pub async fn forget_config(
        &self,
        tenant: &TenantId,
        config: &SyncConfigId,
        entities: &[Entity],
    ) -> Result<(), StoreError> {
        let state = sync_pk(tenant, config);
        let mut deletes = vec![(state.clone(), keys::RUN_HOLD_SK.to_owned())];
        for entity in entities {
            for phase in [Phase::Pull, Phase::Push] {
                deletes.push((state.clone(), keys::checkpoint(*entity, phase.as_str())));
            }
        }
        deletes.extend(
            self.conflict_ids_of(tenant, config)
                .await?
                .into_iter()
                .map(|id| (conflict_pk(tenant), id.to_string())),
        );
        self.table.batch_write(Vec::new(), deletes).await
    }

    /// One conflict.
    pub async fn conflict(
        &self,
        tenant: &TenantId,
        id: &ConflictId,
    ) -> Result<Option<StoredConflict>, StoreError> {
        let item: Option<Keyed<StoredConflict>> =
            self.table.get(&conflict_pk(tenant), id.as_str()).await?;
        Ok(item.map(|k| k.item))
    }

    /// Every conflict of a tenant.
    pub async fn conflicts(&self, tenant: &TenantId) -> Result<Vec<StoredConflict>, StoreError> {
        let items: Vec<Keyed<StoredConflict>> =
            self.table.query_all(&conflict_pk(tenant), "").await?;
        Ok(items.into_iter().map(|k| k.item).collect())
    }
}

/// How many queries one listing may take to fill a page past filtered-out items.
const FILL_ROUNDS: usize = 8;

/// The smallest or largest log id of a run started at `t` (log ids are ULIDs, so they
/// sort by start time).
fn log_id_bound(t: OffsetDateTime, upper: bool) -> String {
    let ms = u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
    let random = if upper { u128::MAX } else { 0 };
    let id = ulid::Ulid::from_parts(ms, random);
    format!("slog_{}", id.to_string().to_lowercase())
}

impl Runs {
    /// A page of logs, newest first, filtered as `q` says.
    pub async fn search_logs(
        &self,
        tenant: &TenantId,
        q: &LogQuery<'_>,
    ) -> Result<Listing<SyncLog>, StoreError> {
        let (index, pk) = match q.config {
            Some(c) => (Some("gsi1"), log_by_config(tenant, c)),
            None => (None, log_pk(tenant)),
        };
        let from = log_id_bound(q.from.unwrap_or(OffsetDateTime::UNIX_EPOCH), false);
        let to = log_id_bound(
            q.to.unwrap_or_else(|| now() + time::Duration::days(1)),
            true,
        );
        self.fill(
            index,
            &pk,
            Some((&from, &to)),
            true,
            q.limit,
            q.cursor,
            |i: &LogItem| {
                q.status.is_none_or(|s| i.log.status == s)
                    && q.entity.is_none_or(|e| i.log.entity == e)
            },
        )
        .await
        .map(|page| Listing {
            items: page.items.into_iter().map(|i| i.log).collect(),
            cursor: page.cursor,
            skipped: page.skipped,
        })
    }

    /// A page of conflicts, filtered as `q` says.
    pub async fn search_conflicts(
        &self,
        tenant: &TenantId,
        q: &ConflictQuery<'_>,
    ) -> Result<Listing<StoredConflict>, StoreError> {
        self.fill(
            None,
            &conflict_pk(tenant),
            None,
            false,
            q.limit,
            q.cursor,
            |k: &Keyed<StoredConflict>| {
                let c = &k.item;
                q.status.is_none_or(|s| c.status == s)
                    && q.config.is_none_or(|id| &c.config_id == id)
                    && q.entity.is_none_or(|e| c.entity == e)
                    && q.record.is_none_or(|r| &c.record_id == r)
            },
        )
        .await
        .map(|page| Listing {
            items: page.items.into_iter().map(|k| k.item).collect(),
            cursor: page.cursor,
            skipped: page.skipped,
        })
    }

    /// Fills a page of up to `limit` items that `keep`, querying at most
    /// [`FILL_ROUNDS`] times; each query asks for no more than the page still lacks,
    /// so the cursor never skips an item. Items that do not convert are left out and
    /// named in `skipped` (their sort key is their id), so one bad item never fails
    /// the listing.
    #[allow(clippy::too_many_arguments)]
    async fn fill<T: serde::de::DeserializeOwned>(
        &self,
        index: Option<&str>,
        pk: &str,
        between: Option<(&str, &str)>,
        descending: bool,
        limit: i32,
        cursor: Option<&str>,
        keep: impl Fn(&T) -> bool,
    ) -> Result<Listing<T>, StoreError> {
        let limit = limit.max(1);
        let mut items: Vec<T> = Vec::new();
        let mut skipped = Vec::new();
        let mut cursor = cursor.map(str::to_owned);
        for _ in 0..FILL_ROUNDS {
            let want = limit - items.len() as i32;
            let page = self
                .table
                .query_lenient::<T>(
                    index,
                    pk,
                    QueryOpts {
                        between,
                        limit: Some(want),
                        cursor: cursor.as_deref(),
                        descending,
                        ..Default::default()
                    },
                )
                .await?;
            let read = keep_readable(page.items, "", "sync listing", &mut skipped);
            items.extend(read.into_iter().filter(|i| keep(i)));
            cursor = page.cursor;
            if cursor.is_none() || items.len() as i32 + skipped.len() as i32 >= limit {
                break;
            }
        }
        Ok(Listing {
            items,
            cursor,
            skipped,
        })
    }
}

/// The update that closes a log (its status, stage and end time).
const FINISH: &str = "SET #status = :status, stage = :done, finished_at = :at, updated_at = :at";

/// A run status as stored.
fn status_name(status: RunStatus) -> String {
    serde_json::to_value(status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "completed".into())
}

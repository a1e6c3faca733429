//! Sync runs: the work messages, the logs that count a run of one entity (and tell
//! when all of its chunks are done), checkpoints, per-record errors and conflicts.
//!
//! Stored by `store::runs` (keys in `store::keys`).
//!
//! A log counts its outstanding chunks (`pending`): the trigger sets it to 1, a chunk
//! that hands on work adds what it enqueued before it subtracts itself, and a chunk's
//! completion is recorded once (`done` holds the chunk ids), so a redelivered message
//! neither double-counts nor closes the log early. The chunk that brings `pending` to
//! zero closes the log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::conflict::FieldConflict;
use super::crm::Cursor;
use super::schema::Entity;
use crate::domain::{ConflictId, JobId, RecordId, SyncConfigId, SyncLogId, TenantId};

pub use crate::store::runs::Runs;

/// Which way a chunk moves records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// CRM → app.
    Pull,
    /// App → CRM.
    Push,
}

impl Phase {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pull => "pull",
            Phase::Push => "push",
        }
    }
}

/// Where a push stands: a full walk of the records (by id) or the change feed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushCursor {
    /// Change-feed position to start from; None: every record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// The store's paging cursor within the pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
    /// The change-feed position when the pass started.
    #[serde(default)]
    pub pass_started: String,
    /// Bulk jobs the page at `page` started, by operation (`upsert`, `update`): the
    /// page, pushed again after a redelivery, collects them instead of starting others.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bulk: BTreeMap<String, String>,
}

/// One unit of sync work: an SQS message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Task {
    /// The tenant.
    pub tenant: TenantId,
    /// The config.
    pub config_id: SyncConfigId,
    /// The run.
    pub job_id: JobId,
    /// The run's log for this entity.
    pub log_id: SyncLogId,
    /// The entity.
    pub entity: Entity,
    /// Pull or push.
    pub phase: Phase,
    /// The chunk's number within (log, phase).
    pub seq: u32,
    /// Pull position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<Cursor>,
    /// Push position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_cursor: Option<PushCursor>,
    /// After the pull completes, push (bidirectional runs).
    #[serde(default)]
    pub then_push: bool,
    /// Only these records (a retry of failed ones): CRM ids for a pull, record ids for
    /// a push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only: Option<Vec<String>>,
    /// Of a targeted pull's `only` ids, those the CRM reported deleted (webhooks):
    /// the ones the read-back does not find are applied as deletions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gone: Vec<String>,
}

impl Task {
    /// The chunk's id within its log.
    pub fn chunk_id(&self) -> String {
        format!("{}:{}", self.phase.as_str(), self.seq)
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Chunks are outstanding.
    Running,
    /// Everything synced.
    Completed,
    /// Some records failed (see the record errors) or a phase stopped early.
    Partial,
    /// The run could not proceed (connection unusable, config gone).
    Failed,
}

/// Counters of a log (all ADDed by chunks).
pub const COUNTERS: [&str; 12] = [
    "processed",
    "created",
    "updated",
    "deleted",
    "skipped",
    "failed",
    "conflicts_detected",
    "conflicts_resolved",
    "pulled",
    "pushed",
    "requests",
    "rate_limited",
];

/// The log of one run of one entity.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncLog {
    /// Its id.
    pub id: SyncLogId,
    /// The tenant.
    pub tenant: TenantId,
    /// The config.
    pub config_id: SyncConfigId,
    /// The run.
    pub job_id: JobId,
    /// The entity.
    pub entity: Entity,
    /// `pull`, `push` or `bidirectional`.
    pub direction: String,
    /// `manual`, `schedule` or `retry`.
    pub trigger: String,
    /// Where it stands.
    pub status: RunStatus,
    /// `pulling`, `pushing`, `done`.
    pub stage: String,
    /// The provider's count of records to pull, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_total: Option<u64>,
    /// Counters.
    #[serde(default)]
    pub counts: BTreeMap<String, u64>,
    /// Outstanding chunks.
    #[serde(default)]
    pub pending: i64,
    /// Why the run failed or stopped early.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The failure's stable code, when it is one the caller acts on
    /// (`scopes_missing`: reconnect the connection with the missing scopes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// Start.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// Last progress.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// End.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub finished_at: Option<OffsetDateTime>,
}

/// What a chunk adds to its log.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Counter increments.
    pub counts: BTreeMap<&'static str, u64>,
    /// A new estimate of the total.
    pub estimated_total: Option<u64>,
    /// The stage now.
    pub stage: Option<&'static str>,
    /// An error to record on the log.
    pub error: Option<String>,
    /// The error's stable code (fails the log).
    pub error_code: Option<&'static str>,
}

impl Progress {
    /// Adds `n` to counter `name`.
    pub fn add(&mut self, name: &'static str, n: u64) {
        if n > 0 {
            *self.counts.entry(name).or_default() += n;
        }
    }
}

/// A record that failed in a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordError {
    /// Pull or push.
    pub phase: Phase,
    /// The app record, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record_id: Option<String>,
    /// The CRM record, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crm_id: Option<String>,
    /// What went wrong (the provider's message; never a value or a secret).
    pub message: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// A stored conflict, waiting for review.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredConflict {
    /// Its id (one per config, entity and record).
    pub id: ConflictId,
    /// The config.
    pub config_id: SyncConfigId,
    /// The provider.
    pub provider: String,
    /// The entity.
    pub entity: Entity,
    /// The app record.
    pub record_id: RecordId,
    /// The CRM record.
    pub crm_id: String,
    /// The fields in conflict.
    pub fields: Vec<FieldConflict>,
    /// `open`, `resolved`, `ignored`.
    pub status: String,
    /// Detected.
    #[serde(with = "time::serde::rfc3339")]
    pub detected_at: OffsetDateTime,
    /// Settled.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub settled_at: Option<OffsetDateTime>,
    /// How it was settled (field → app|crm|custom).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub resolution: BTreeMap<String, String>,
}

/// How long a run holds its config before another may start (a crashed run's hold
/// lapses).
pub const ACTIVE_HOLD: time::Duration = time::Duration::minutes(30);

/// How to list logs.
#[derive(Debug, Clone, Default)]
pub struct LogQuery<'a> {
    /// Only this config's.
    pub config: Option<&'a SyncConfigId>,
    /// Only logs in this state.
    pub status: Option<RunStatus>,
    /// Only this entity's.
    pub entity: Option<Entity>,
    /// Only runs started at or after this.
    pub from: Option<OffsetDateTime>,
    /// Only runs started at or before this.
    pub to: Option<OffsetDateTime>,
    /// Page size.
    pub limit: i32,
    /// Continue after a previous page.
    pub cursor: Option<&'a str>,
}

/// How to list conflicts.
#[derive(Debug, Clone, Default)]
pub struct ConflictQuery<'a> {
    /// Only conflicts in this state (`open`, `resolved`, `ignored`); None: all.
    pub status: Option<&'a str>,
    /// Only this config's.
    pub config: Option<&'a SyncConfigId>,
    /// Only this entity's.
    pub entity: Option<Entity>,
    /// Only this record's.
    pub record: Option<&'a RecordId>,
    /// Page size.
    pub limit: i32,
    /// Continue after a previous page.
    pub cursor: Option<&'a str>,
}

/// The id of the conflict of one record under one config.
pub fn conflict_id(config: &SyncConfigId, entity: Entity, record: &RecordId) -> ConflictId {
    ConflictId::derived(&[config.as_str(), entity.as_str(), record.as_str()])
}

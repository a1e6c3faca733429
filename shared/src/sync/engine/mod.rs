//! The sync engine: planning a run (the trigger, [`plan`]) and doing one chunk of it
//! (the worker, [`chunk`]): a chunk pulls ([`pull`]) or pushes ([`push`]); which app
//! record a CRM record is, is [`matching`]'s.
//!
//! The page work goes through narrow ports and is unit-tested in memory
//! (`memory.rs`): a pull page's pipeline — matching, reconciling, the conditional
//! writes and their retries, key claims, links and conflicts — reaches the store
//! through `matching::MatchStore` (what it reads) and `pull::PageStore` (what it
//! writes); a push page (`push::PagePush`: creates, lookups of lost creates, updates
//! with their conflict check, deletes) reaches the CRM through `push::CrmWrites` and
//! the store through `push::PushStore`, with a fake CRM in its tests. The chunk around
//! them (CRM paging, checkpoints, run logs) speaks to the concrete store and
//! `CrmClient`.
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

use super::behind::WriteBehind;
use super::config::{ConfigStatus, Configs, SyncConfig, SyncDirection};
use super::conflict::{self, Direction, Side, Strategy, Values};
use super::crm::{CrmClient, CrmError, CrmKind, CrmRecord, Cursor, WriteOutcome};
use super::links::{Link, Links};
use super::mapping::Mapper;
use super::message::SyncMessage;
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
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

mod assoc;
mod chunk;
mod matching;
#[cfg(test)]
mod memory;
mod plan;
mod pull;
mod push;

pub use chunk::run_chunk;
use chunk::{flush, publish_conflict};
pub use plan::{RunRequest, StartError, Started, start};
use plan::{push_start, unix_ms};

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
    /// App records this chunk's pull created or changed (the other CRMs' realtime
    /// pushes carry them on: the app is the hub).
    app_changed: bool,
    /// Another active config of the tenant pulls this entity (another CRM): a person
    /// new to the app may be created by both pulls at once, so new records claim
    /// their key first.
    crowded: bool,
    /// The push page's bulk jobs (checkpointed, found again by a redelivery).
    bulk: push::BulkJobs,
    /// The entity's associations and the ids known to translate them.
    assoc: assoc::Assoc,
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

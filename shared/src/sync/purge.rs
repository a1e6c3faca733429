//! What a deleted sync config leaves behind, removed in the background: its links (a
//! config can have a hundred thousand, too many for the API call that deletes it), the
//! link summaries on the app records, its checkpoints, its run hold and its conflicts.
//! Its logs and their per-record errors stay, as history (counts, ids and messages,
//! never CRM values); the app records its pulls created are the tenant's and stay too.
//!
//! The config API enqueues one [`Purge`] on the sync queue; the worker does a page of
//! links per message and hands the rest on as the same message. Every step can run
//! twice: deleting what is gone, or unlinking an unlinked record, changes nothing.
//!
//! ## A run that interleaves with the delete
//! A chunk reads its config when it starts and may then write for up to a chunk's time
//! (links, checkpoints, conflicts, link summaries), and a trigger may have read the
//! config just before the delete. Writes cannot be conditioned on the config (links go
//! out in batches, which take no condition), so every writer of a config's items
//! **writes, then checks**: after its last write it reads the config again (strongly
//! consistent) and, if it is gone, enqueues this purge again ([`recheck`]). Either
//! - the check found the config: the check, and so every write before it, happened
//!   before the delete, and the delete happened before its purge was enqueued; the
//!   purge's reads are strongly consistent and it runs until its queries come back
//!   empty, so it sees and removes those writes; or
//! - the check found it gone: the writer enqueued a purge after its writes, which sees
//!   and removes them.
//!
//! A chunk that fails or is killed after writing did not check, but its message comes
//! back, and a chunk that starts without its config enqueues the purge too (a chain
//! of chunks ends there). A trigger's hold and logs are released by its first chunks,
//! which find the config gone; a hold nothing releases expires by TTL. Conflict
//! updates (resolve, ignore) only change a conflict that still exists.

use futures::StreamExt as _;
use serde::{Deserialize, Serialize};

use super::config::Configs;
use super::links;
use super::records::Records;
use super::runs::Runs;
use super::schema::Entity;
use crate::app::App;
use crate::domain::{RecordId, SyncConfigId, TenantId};
use crate::queue::{Publisher, QueueError};
use crate::store::StoreError;
use crate::sync::message::SyncMessage;

/// Links removed per message.
const LINKS_PER_MESSAGE: i32 = 500;
/// How often a record changed concurrently is read again.
const ATTEMPTS: usize = 4;
/// Records unlinked at once.
const SAVES_AT_ONCE: usize = 8;

/// The clean-up of one deleted config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Purge {
    /// The tenant.
    pub tenant: TenantId,
    /// The deleted config.
    pub config_id: SyncConfigId,
    /// The entities it synced.
    pub entities: Vec<Entity>,
}

/// Why a purge step, or a writer's check, failed (the message is retried).
#[derive(Debug, thiserror::Error)]
pub enum PurgeError {
    /// The table failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The queue failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

/// Whether the config still exists, checked after a writer's last write to its items:
/// if it is gone, the purge is enqueued again to remove what was just written (see the
/// module doc). Returns whether the config exists.
pub async fn recheck(
    app: &App,
    queue: &Publisher,
    tenant: &TenantId,
    config: &SyncConfigId,
    entities: &[Entity],
) -> Result<bool, PurgeError> {
    if Configs::new(app.table.clone())
        .get(tenant, config)
        .await?
        .is_some()
    {
        return Ok(true);
    }
    let purge = Purge {
        tenant: tenant.clone(),
        config_id: config.clone(),
        entities: entities.to_vec(),
    };
    queue.send(&SyncMessage::Purge(purge)).await?;
    Ok(false)
}

/// Does a page of the clean-up; enqueues the rest as the same message.
pub async fn run(app: &App, queue: &Publisher, p: &Purge) -> Result<(), PurgeError> {
    // Only a deleted config's items go (a stray message for a live one does nothing).
    if Configs::new(app.table.clone())
        .get(&p.tenant, &p.config_id)
        .await?
        .is_some()
    {
        tracing::info!(config = %p.config_id, "a purge of a config that exists (its delete failed) was ignored");
        return Ok(());
    }
    let records = Records::new(app.table.clone());
    for entity in &p.entities {
        let links = links::Links::new(app.table.clone(), &p.tenant, &p.config_id, *entity);
        let page = links.some_ids(LINKS_PER_MESSAGE).await?;
        if page.is_empty() {
            continue;
        }
        let ids: Vec<RecordId> = page
            .iter()
            .filter_map(|k| RecordId::parse(k).ok())
            .collect();
        unlink(&records, p, *entity, &ids).await?;
        links.remove(&page).await?;
        // Whatever is left of this partition (or the next entity's) is the next
        // message's.
        queue.send(&SyncMessage::Purge(p.clone())).await?;
        return Ok(());
    }
    Ok(Runs::new(app.table.clone())
        .forget_config(&p.tenant, &p.config_id, &p.entities)
        .await?)
}

/// Removes the config's link summary from each of these records.
async fn unlink(
    records: &Records,
    p: &Purge,
    entity: Entity,
    ids: &[RecordId],
) -> Result<(), StoreError> {
    let config = p.config_id.as_str();
    let mut pending: Vec<RecordId> = ids.to_vec();
    for _ in 0..ATTEMPTS {
        if pending.is_empty() {
            return Ok(());
        }
        let linked: Vec<_> = records
            .get_many(&p.tenant, entity, &pending)
            .await?
            .into_iter()
            .filter_map(|mut r| {
                r.links.remove(config)?;
                r.rev += 1;
                Some(r)
            })
            .collect();
        // Distinct records: saved a few at once (a purge of a large config is a long
        // chain of these pages).
        let saved: Vec<Result<(), (RecordId, StoreError)>> = futures::stream::iter(linked)
            .map(|r| async move {
                // The key marker stays where it is (a deleted record holds none).
                let key = if r.deleted_at.is_some() {
                    None
                } else {
                    r.key()
                };
                records
                    .save(&r, key.as_deref())
                    .await
                    .map_err(|e| (r.id.clone(), e))
            })
            .buffer_unordered(SAVES_AT_ONCE)
            .collect()
            .await;
        let mut stale = Vec::new();
        for outcome in saved {
            match outcome {
                Ok(()) => {}
                Err((id, StoreError::ConditionFailed)) => stale.push(id),
                Err((_, e)) => return Err(e),
            }
        }
        pending = stale;
    }
    if pending.is_empty() {
        Ok(())
    } else {
        Err(StoreError::ConditionFailed)
    }
}

//! What a deleted sync config leaves behind, removed in the background: its links (a
//! config can have a hundred thousand, too many for the API call that deletes it), the
//! link summaries on the app records, its checkpoints, its run hold and its conflicts.
//! Its logs stay, as history.
//!
//! The config API enqueues one [`Purge`] on the sync queue; the worker does a page of
//! links per message and hands the rest on as the same message. Every step can run
//! twice: deleting what is gone, or unlinking an unlinked record, changes nothing.

use serde::{Deserialize, Serialize};

use super::links;
use super::records::Records;
use super::runs::{ConflictQuery, Phase, Runs};
use super::schema::Entity;
use crate::app::App;
use crate::domain::{RecordId, SyncConfigId, TenantId};
use crate::queue::Publisher;
use crate::store::{Page, QueryOpts, StoreError};

/// Links removed per message.
const LINKS_PER_MESSAGE: i32 = 500;
/// How often a record changed concurrently is read again.
const ATTEMPTS: usize = 4;

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

/// The queue message: `{"purge": {…}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeMessage {
    /// The work.
    pub purge: Purge,
}

#[derive(Deserialize)]
struct LinkKey {
    sk: String,
}

/// Does a page of the clean-up; enqueues the rest as the same message.
pub async fn run(app: &App, queue: &Publisher, p: &Purge) -> Result<(), StoreError> {
    let records = Records::new(app.table.clone());
    for entity in &p.entities {
        let pk = links::partition(&p.tenant, &p.config_id, *entity);
        let page: Page<LinkKey> = app
            .table
            .query(
                None,
                &pk,
                QueryOpts {
                    limit: Some(LINKS_PER_MESSAGE),
                    ..Default::default()
                },
            )
            .await?;
        if page.items.is_empty() {
            continue;
        }
        let ids: Vec<RecordId> = page
            .items
            .iter()
            .filter_map(|k| RecordId::parse(&k.sk).ok())
            .collect();
        unlink(&records, p, *entity, &ids).await?;
        let deletes: Vec<(String, String)> =
            page.items.into_iter().map(|k| (pk.clone(), k.sk)).collect();
        app.table.batch_write(Vec::new(), deletes).await?;
        // Whatever is left of this partition (or the next entity's) is the next
        // message's.
        queue
            .send(&PurgeMessage { purge: p.clone() })
            .await
            .map_err(|e| StoreError::Service(e.to_string()))?;
        return Ok(());
    }
    let runs = Runs::new(app.table.clone());
    let sync_pk = format!("SYNC#{}#{}", p.tenant, p.config_id);
    let mut deletes = vec![(sync_pk.clone(), "ACTIVE".to_owned())];
    for entity in &p.entities {
        for phase in [Phase::Pull, Phase::Push] {
            deletes.push((sync_pk.clone(), format!("CKPT#{entity}#{}", phase.as_str())));
        }
    }
    let mut cursor: Option<String> = None;
    loop {
        let page = runs
            .search_conflicts(
                &p.tenant,
                &ConflictQuery {
                    config: Some(&p.config_id),
                    limit: 200,
                    cursor: cursor.as_deref(),
                    ..Default::default()
                },
            )
            .await?;
        deletes.extend(
            page.items
                .iter()
                .map(|c| (format!("SYNCCONF#{}", p.tenant), c.id.to_string())),
        );
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    app.table.batch_write(Vec::new(), deletes).await
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
        let mut stale = Vec::new();
        for mut r in records.get_many(&p.tenant, entity, &pending).await? {
            if r.links.remove(config).is_none() {
                continue;
            }
            r.rev += 1;
            // The key marker stays where it is (a deleted record holds none).
            let key = if r.deleted_at.is_some() {
                None
            } else {
                r.key()
            };
            match records.save(&r, key.as_deref()).await {
                Ok(()) => {}
                Err(StoreError::ConditionFailed) => stale.push(r.id.clone()),
                Err(e) => return Err(e),
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

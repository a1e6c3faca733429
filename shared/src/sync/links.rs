//! Links: which CRM record an app record is paired with under a sync config, and what
//! both sides held when they last agreed (the base the conflict check compares with).
//!
//! Stored by `store::links`, keyed by config, entity and record id.
//!
//! A link is written only by its config's worker, after the CRM write it records, so a
//! worker killed between the two redoes the CRM write idempotently: updates carry the
//! same values, and creates are found again by the record id the CRM record carries
//! (its `conduit_id` property / `Conduit_Id__c` field).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::conflict::Values;
use super::schema::Entity;
use crate::domain::{RecordId, SyncConfigId, TenantId};
use crate::store::{StoreError, Table};

/// A link between an app record and a CRM record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// The CRM record (None until a create went through).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crm_id: Option<String>,
    /// The mapped values both sides held at the last sync (app field names).
    #[serde(default)]
    pub base: Values,
    /// The app record's field version the base reflects.
    #[serde(default)]
    pub synced_version: u64,
    /// The CRM record's modification time at the last sync (Unix ms).
    #[serde(default)]
    pub crm_modified_ms: i64,
    /// Fields with an open conflict (kept out of both directions until resolved).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub conflicted: BTreeSet<String>,
    /// The CRM record was deleted (and the delete was not propagated).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub crm_deleted: bool,
    /// The app record was deleted and the delete propagated (or not wanted).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub app_deleted: bool,
}

/// The links of one config and entity (stored by `store::links`).
#[derive(Clone, Debug)]
pub struct Links {
    pub(crate) table: Table,
    pub(crate) tenant: TenantId,
    pub(crate) config: SyncConfigId,
    pub(crate) entity: Entity,
}

impl Links {
    /// The links of `config` for `entity`.
    pub fn new(table: Table, tenant: &TenantId, config: &SyncConfigId, entity: Entity) -> Self {
        Self {
            table,
            tenant: tenant.clone(),
            config: config.clone(),
            entity,
        }
    }
}

/// A live link of a record, as the records view shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Linked {
    /// The sync config that keeps it.
    pub config_id: SyncConfigId,
    /// The provider.
    pub provider: String,
    /// The connection.
    pub connection_id: String,
    /// The CRM record.
    pub crm_id: String,
}

/// The live links of `ids` under every config of `configs` that syncs `entity`, by
/// record id: links made by pulls and by pushes alike, without those whose CRM or app
/// record is gone (a deleted config's links are not read).
pub async fn linked(
    table: &Table,
    tenant: &TenantId,
    entity: Entity,
    configs: &[super::config::SyncConfig],
    ids: &[RecordId],
) -> Result<BTreeMap<String, Vec<Linked>>, StoreError> {
    let mut out: BTreeMap<String, Vec<Linked>> = BTreeMap::new();
    if ids.is_empty() {
        return Ok(out);
    }
    for config in configs.iter().filter(|c| c.entities.contains(&entity)) {
        let links = Links::new(table.clone(), tenant, &config.id, entity)
            .get_many(ids)
            .await?;
        for (record, link) in links {
            let Some(crm_id) = link
                .crm_id
                .filter(|_| !link.crm_deleted && !link.app_deleted)
            else {
                continue;
            };
            out.entry(record).or_default().push(Linked {
                config_id: config.id.clone(),
                provider: config.provider.clone(),
                connection_id: config.connection_id.to_string(),
                crm_id,
            });
        }
    }
    Ok(out)
}

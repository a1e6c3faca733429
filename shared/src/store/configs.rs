//! Sync-config items: a config in its tenant's partition, and its entity claims: one
//! item per (connection, entity) naming the config that syncs it. Two configs syncing
//! the same CRM object of one connection would each link and create records on their
//! own and duplicate them; the claim makes that impossible, even for concurrent
//! creates. The config API writes a config, its claims and its audit entry in one
//! transaction; the worker, scheduler and conflict review read configs here too.

use serde::{Deserialize, Serialize};

use super::keys::{entity_claim as claim_sk, sync_config as sk};
use super::{
    Keyed, Listing, Skipped, StoreError, Table, Write, audit, keys, list_page, split_listing,
    to_item,
};
use crate::audit::AuditEntry;
use crate::domain::{SyncConfigId, TenantId};
use crate::sync::config::SyncConfig;
use crate::sync::schema::Entity;

#[derive(Serialize, Deserialize)]
struct Claim {
    config_id: SyncConfigId,
}

/// Why a config write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Another config already syncs this entity of the connection.
    #[error("{entity} of the connection are synced by {config}")]
    Claimed {
        /// The entity.
        entity: Entity,
        /// The config that syncs it.
        config: SyncConfigId,
    },
    /// The config changed (or vanished) since it was read.
    #[error("the config changed since it was read")]
    Stale,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The config store.
#[derive(Clone, Debug)]
pub struct Configs {
    table: Table,
}

/// Whether a config item read from `tenant`'s partition is the config its key names
/// (a copied or misplaced item is never used).
fn belongs(tenant: &TenantId, k: &Keyed<SyncConfig>) -> bool {
    k.item.tenant == *tenant && k.sk == sk(&k.item.id)
}

fn keyed(c: &SyncConfig) -> Keyed<&SyncConfig> {
    Keyed {
        pk: keys::tenant(&c.tenant),
        sk: sk(&c.id),
        item: c,
    }
}

fn claim(c: &SyncConfig, entity: Entity) -> Result<Write, StoreError> {
    Ok(Write::Insert(to_item(&Keyed {
        pk: keys::tenant(&c.tenant),
        sk: claim_sk(&c.connection_id, entity),
        item: Claim {
            config_id: c.id.clone(),
        },
    })?))
}

fn release(c: &SyncConfig, entity: Entity) -> Write {
    Write::Delete {
        pk: keys::tenant(&c.tenant),
        sk: claim_sk(&c.connection_id, entity),
        must_exist: false,
    }
}

impl Configs {
    /// Configs in `table`.
    pub fn new(table: Table) -> Self {
        Self { table }
    }

    /// One config.
    pub async fn get(
        &self,
        tenant: &TenantId,
        id: &SyncConfigId,
    ) -> Result<Option<SyncConfig>, StoreError> {
        let item: Option<Keyed<SyncConfig>> =
            self.table.get(&keys::tenant(tenant), &sk(id)).await?;
        Ok(item
            .filter(|k| belongs(tenant, k) && k.item.id == *id)
            .map(|k| k.item))
    }

    /// Every config of a tenant, oldest first; configs that cannot be read or are
    /// misplaced are left out (and logged by key).
    pub async fn list(&self, tenant: &TenantId) -> Result<Vec<SyncConfig>, StoreError> {
        Ok(self.listing(tenant).await?.0)
    }

    /// Every config of a tenant, oldest first, with the items left out by id.
    pub async fn listing(
        &self,
        tenant: &TenantId,
    ) -> Result<(Vec<SyncConfig>, Vec<Skipped>), StoreError> {
        let items = self
            .table
            .query_all_lenient::<Keyed<SyncConfig>>(&keys::tenant(tenant), keys::SYNC_CONFIG_PREFIX)
            .await?;
        Ok(split_listing(
            items,
            keys::SYNC_CONFIG_PREFIX,
            "sync config",
            |k| belongs(tenant, k),
        ))
    }

    /// One page of a tenant's configs, oldest first, from `cursor` (a previous page's),
    /// with the items of the page left out by id.
    pub async fn page(
        &self,
        tenant: &TenantId,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Listing<SyncConfig>, StoreError> {
        list_page(
            &self.table,
            &keys::tenant(tenant),
            keys::SYNC_CONFIG_PREFIX,
            (limit, cursor),
            "sync config",
            |k| belongs(tenant, k),
        )
        .await
    }

    /// Stores a new config on its own, without claims or audit (tests' and
    /// benchmarks' set-up; the config API uses [`Configs::create`]).
    pub async fn insert(&self, c: &SyncConfig) -> Result<(), StoreError> {
        self.table.insert(&keyed(c)).await
    }

    /// Saves a changed config whose stored version is `c.version - 1` and whose
    /// entities did not change (its claims stay as they are).
    pub async fn replace(&self, c: &SyncConfig) -> Result<(), StoreError> {
        self.table
            .replace(&keyed(c), c.version.saturating_sub(1))
            .await
    }

    /// Names the config holding a claim `c` wanted, if another one does.
    async fn claimant(&self, c: &SyncConfig, entities: &[Entity]) -> Option<WriteError> {
        for &entity in entities {
            let held: Option<Keyed<Claim>> = self
                .table
                .get(
                    &keys::tenant(&c.tenant),
                    &claim_sk(&c.connection_id, entity),
                )
                .await
                .ok()
                .flatten();
            if let Some(h) = held
                && h.item.config_id != c.id
            {
                return Some(WriteError::Claimed {
                    entity,
                    config: h.item.config_id,
                });
            }
        }
        None
    }

    /// Stores a new config, its claims and its audit entry.
    pub async fn create(&self, c: &SyncConfig, entry: &AuditEntry) -> Result<(), WriteError> {
        let mut writes = vec![Write::Insert(to_item(&keyed(c))?), audit::insert(entry)?];
        for &e in &c.entities {
            writes.push(claim(c, e)?);
        }
        match self.table.transact(writes).await {
            Ok(()) => Ok(()),
            Err(StoreError::ConditionFailed) => Err(self
                .claimant(c, &c.entities)
                .await
                .unwrap_or(WriteError::Stale)),
            Err(e) => Err(e.into()),
        }
    }

    /// Saves `next` over `prev` (which must still be stored at its version), moving
    /// the claims of entities added or removed, with its audit entry.
    pub async fn save(
        &self,
        prev: &SyncConfig,
        next: &SyncConfig,
        entry: &AuditEntry,
    ) -> Result<(), WriteError> {
        let mut writes = vec![
            Write::Replace(to_item(&keyed(next))?, prev.version),
            audit::insert(entry)?,
        ];
        let added = next.entities_added_since(prev);
        for &e in &added {
            writes.push(claim(next, e)?);
        }
        for e in prev.entities.iter().filter(|e| !next.entities.contains(e)) {
            writes.push(release(prev, *e));
        }
        match self.table.transact(writes).await {
            Ok(()) => Ok(()),
            Err(StoreError::ConditionFailed) => Err(self
                .claimant(next, &added)
                .await
                .unwrap_or(WriteError::Stale)),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes a config (which must exist) with its claims, with its audit entry.
    pub async fn delete(&self, c: &SyncConfig, entry: &AuditEntry) -> Result<(), WriteError> {
        let mut writes = vec![
            Write::Delete {
                pk: keys::tenant(&c.tenant),
                sk: sk(&c.id),
                must_exist: true,
            },
            audit::insert(entry)?,
        ];
        for &e in &c.entities {
            writes.push(release(c, e));
        }
        match self.table.transact(writes).await {
            Ok(()) => Ok(()),
            Err(StoreError::ConditionFailed) => Err(WriteError::Stale),
            Err(e) => Err(e.into()),
        }
    }
}

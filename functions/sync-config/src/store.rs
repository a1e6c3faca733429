//! Config writes, each in one transaction with its audit entry and the config's
//! entity claims: one item per (connection, entity) naming the config that syncs it.
//! Two configs syncing the same CRM object of one connection would each link and
//! create records on their own and duplicate them; the claim makes that impossible,
//! even for concurrent creates.

use conduit::audit::AuditEntry;
use conduit::domain::{SyncConfigId, TenantId};
use conduit::store::{Keyed, StoreError, Table, Write, keys, to_item};
use conduit::sync::config::{CONFIG_PREFIX, Configs, SyncConfig};
use conduit::sync::schema::Entity;
use serde::{Deserialize, Serialize};

use keys::entity_claim as claim_sk;

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

/// Sync configs with their claims.
pub struct ConfigStore {
    table: Table,
    configs: Configs,
}

impl ConfigStore {
    /// Configs kept in `table`.
    pub fn new(table: Table) -> Self {
        Self {
            configs: Configs::new(table.clone()),
            table,
        }
    }

    /// One config of a tenant.
    pub async fn get(
        &self,
        tenant: &TenantId,
        id: &SyncConfigId,
    ) -> Result<Option<SyncConfig>, StoreError> {
        self.configs.get(tenant, id).await
    }

    /// One page of a tenant's configs, oldest first, with the page's items left out
    /// by id.
    pub async fn page(
        &self,
        tenant: &TenantId,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<conduit::store::Listing<SyncConfig>, StoreError> {
        self.configs.page(tenant, limit, cursor).await
    }

    fn item(c: &SyncConfig) -> Result<Write, StoreError> {
        Ok(Write::Insert(to_item(&Keyed {
            pk: keys::tenant(&c.tenant),
            sk: format!("{CONFIG_PREFIX}{}", c.id),
            item: c,
        })?))
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
    pub async fn create(&self, c: &SyncConfig, audit: &AuditEntry) -> Result<(), WriteError> {
        let mut writes = vec![Self::item(c)?, audit.to_write()?];
        for &e in &c.entities {
            writes.push(Self::claim(c, e)?);
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
        audit: &AuditEntry,
    ) -> Result<(), WriteError> {
        let item = match Self::item(next)? {
            Write::Insert(item) => Write::Replace(item, prev.version),
            other => other,
        };
        let mut writes = vec![item, audit.to_write()?];
        let added: Vec<Entity> = next
            .entities
            .iter()
            .copied()
            .filter(|e| !prev.entities.contains(e))
            .collect();
        for &e in &added {
            writes.push(Self::claim(next, e)?);
        }
        for e in prev.entities.iter().filter(|e| !next.entities.contains(e)) {
            writes.push(Self::release(prev, *e));
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
    pub async fn delete(&self, c: &SyncConfig, audit: &AuditEntry) -> Result<(), WriteError> {
        let mut writes = vec![
            Write::Delete {
                pk: keys::tenant(&c.tenant),
                sk: format!("{CONFIG_PREFIX}{}", c.id),
                must_exist: true,
            },
            audit.to_write()?,
        ];
        for &e in &c.entities {
            writes.push(Self::release(c, e));
        }
        match self.table.transact(writes).await {
            Ok(()) => Ok(()),
            Err(StoreError::ConditionFailed) => Err(WriteError::Stale),
            Err(e) => Err(e.into()),
        }
    }
}

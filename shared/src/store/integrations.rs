//! Integration items and assistants' integration settings, in their tenant's
//! partition: an integration at `T#{tenant}` / `INTEG#{id}`, an assistant's settings
//! at `ASSIST#{assistant}`. Writes carry their audit entry in one transaction, and a
//! change is conditional on the version read.

use super::keys::{assistant as assistant_sk, integration as sk};
use super::{
    Keyed, Listing, Skipped, StoreError, Table, Write, audit, keys, list_page, split_listing,
    to_item,
};
use crate::audit::AuditEntry;
use crate::dispatch::integration::{AssistantSettings, Integration};
use crate::domain::{IntegrationId, TenantId};

/// The integration store.
#[derive(Clone, Debug)]
pub struct Integrations {
    table: Table,
}

fn belongs(tenant: &TenantId, k: &Keyed<Integration>) -> bool {
    k.item.tenant == *tenant && k.sk == sk(&k.item.id)
}

fn keyed(i: &Integration) -> Keyed<&Integration> {
    Keyed {
        pk: keys::tenant(&i.tenant),
        sk: sk(&i.id),
        item: i,
    }
}

fn settings_keyed(s: &AssistantSettings) -> Keyed<&AssistantSettings> {
    Keyed {
        pk: keys::tenant(&s.tenant),
        sk: assistant_sk(&s.assistant_id),
        item: s,
    }
}

impl Integrations {
    /// Integrations in `table`.
    pub fn new(table: Table) -> Self {
        Self { table }
    }

    /// One integration.
    pub async fn get(
        &self,
        tenant: &TenantId,
        id: &IntegrationId,
    ) -> Result<Option<Integration>, StoreError> {
        let item: Option<Keyed<Integration>> =
            self.table.get(&keys::tenant(tenant), &sk(id)).await?;
        Ok(item.filter(|k| belongs(tenant, k)).map(|k| k.item))
    }

    /// Every integration of a tenant (oldest first), with those left out by id.
    pub async fn all(
        &self,
        tenant: &TenantId,
    ) -> Result<(Vec<Integration>, Vec<Skipped>), StoreError> {
        let items = self
            .table
            .query_all_lenient::<Keyed<Integration>>(
                &keys::tenant(tenant),
                keys::INTEGRATION_PREFIX,
            )
            .await?;
        Ok(split_listing(
            items,
            keys::INTEGRATION_PREFIX,
            "integration",
            |k| belongs(tenant, k),
        ))
    }

    /// One page of a tenant's integrations, oldest first.
    pub async fn page(
        &self,
        tenant: &TenantId,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<Listing<Integration>, StoreError> {
        list_page(
            &self.table,
            &keys::tenant(tenant),
            keys::INTEGRATION_PREFIX,
            (limit, cursor),
            "integration",
            |k| belongs(tenant, k),
        )
        .await
    }

    /// Stores a new integration with its audit entry.
    pub async fn create(&self, i: &Integration, entry: &AuditEntry) -> Result<(), StoreError> {
        self.table
            .transact(vec![
                Write::Insert(to_item(&keyed(i))?),
                audit::insert(entry)?,
            ])
            .await
    }

    /// Saves `next` over the version `prev_version` with its audit entry
    /// (`ConditionFailed` if it changed meanwhile).
    pub async fn save(
        &self,
        next: &Integration,
        prev_version: u64,
        entry: &AuditEntry,
    ) -> Result<(), StoreError> {
        self.table
            .transact(vec![
                Write::Replace(to_item(&keyed(next))?, prev_version),
                audit::insert(entry)?,
            ])
            .await
    }

    /// Saves an integration's own bookkeeping (a webhook endpoint's failure state)
    /// without an audit entry, over the version read.
    pub async fn save_state(
        &self,
        next: &Integration,
        prev_version: u64,
    ) -> Result<(), StoreError> {
        self.table.replace(&keyed(next), prev_version).await
    }

    /// Deletes an integration (at the version read) with its audit entry.
    pub async fn delete(&self, i: &Integration, entry: &AuditEntry) -> Result<(), StoreError> {
        self.table
            .transact(vec![
                Write::DeleteIf {
                    pk: keys::tenant(&i.tenant),
                    sk: sk(&i.id),
                    condition: "version = :v",
                    value: Some((":v", super::Value::num(i.version))),
                },
                audit::insert(entry)?,
            ])
            .await
    }

    /// An assistant's settings, if it has any.
    pub async fn assistant(
        &self,
        tenant: &TenantId,
        assistant_id: &str,
    ) -> Result<Option<AssistantSettings>, StoreError> {
        let item: Option<Keyed<AssistantSettings>> = self
            .table
            .get(&keys::tenant(tenant), &assistant_sk(assistant_id))
            .await?;
        Ok(item
            .filter(|k| k.item.tenant == *tenant && k.item.assistant_id == assistant_id)
            .map(|k| k.item))
    }

    /// Saves an assistant's settings: new when `prev_version` is None, else over that
    /// version; with the audit entry.
    pub async fn save_assistant(
        &self,
        s: &AssistantSettings,
        prev_version: Option<u64>,
        entry: &AuditEntry,
    ) -> Result<(), StoreError> {
        let item = to_item(&settings_keyed(s))?;
        let write = match prev_version {
            None => Write::Insert(item),
            Some(v) => Write::Replace(item, v),
        };
        self.table
            .transact(vec![write, audit::insert(entry)?])
            .await
    }

    /// Whether a tenant has anything stored in its partition (a connection, an
    /// integration, settings): a tenant with nothing is unknown to Conduit.
    pub async fn tenant_known(&self, tenant: &TenantId) -> Result<bool, StoreError> {
        let page = self
            .table
            .query_lenient::<Keyed<serde_json::Value>>(
                None,
                &keys::tenant(tenant),
                super::QueryOpts {
                    limit: Some(1),
                    ..Default::default()
                },
            )
            .await?;
        Ok(!page.items.is_empty())
    }
}

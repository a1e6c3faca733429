//! App-credential items: a tenant's own OAuth app for a provider, in the tenant's
//! partition; each change is written with its audit entry.

use super::{Keyed, StoreError, Table, Write, audit, keys, to_item};
use crate::app_credentials::AppCredentials;
use crate::audit::AuditEntry;
use crate::domain::TenantId;

fn keyed(creds: &AppCredentials) -> Keyed<&AppCredentials> {
    Keyed {
        pk: keys::tenant(&creds.tenant),
        sk: keys::app_credentials(&creds.provider),
        item: creds,
    }
}

/// App-credential storage.
#[derive(Clone, Debug)]
pub struct AppCredentialStore {
    table: Table,
}

impl AppCredentialStore {
    /// App credentials kept in `table`.
    pub fn new(table: Table) -> Self {
        Self { table }
    }

    /// A tenant's app for `provider`.
    pub async fn get(
        &self,
        tenant: &TenantId,
        provider: &str,
    ) -> Result<Option<AppCredentials>, StoreError> {
        let item = self
            .table
            .get::<Keyed<AppCredentials>>(&keys::tenant(tenant), &keys::app_credentials(provider))
            .await?;
        // An item naming another tenant or provider than its key (copied, restored
        // wrongly) is never used: its secret would open under its own attributes.
        Ok(item.and_then(|k| {
            if k.item.tenant == *tenant && k.item.provider == provider {
                Some(k.item)
            } else {
                tracing::error!(
                    tenant = %tenant,
                    key = %k.sk,
                    "app credentials item names another tenant or provider than its key; ignored"
                );
                None
            }
        }))
    }

    /// Writes `next`: creates it when `prev_version` is None, else replaces that
    /// version; with its audit entry, atomically.
    pub async fn save(
        &self,
        next: &AppCredentials,
        prev_version: Option<u64>,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        let item = to_item(&keyed(next))?;
        let write = match prev_version {
            None => Write::Insert(item),
            Some(v) => Write::Replace(item, v),
        };
        self.table
            .transact(vec![write, audit::insert(audit)?])
            .await
    }

    /// Deletes a tenant's app for `provider` with its audit entry.
    pub async fn delete(
        &self,
        tenant: &TenantId,
        provider: &str,
        audit: &AuditEntry,
    ) -> Result<(), StoreError> {
        self.table
            .transact(vec![
                Write::Delete {
                    pk: keys::tenant(tenant),
                    sk: keys::app_credentials(provider),
                    must_exist: true,
                },
                audit::insert(audit)?,
            ])
            .await
    }
}

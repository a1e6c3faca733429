//! A tenant's own OAuth app for a provider ("bring your own app"): client id and
//! redirect URI in the clear, client secret sealed for (tenant, provider).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::audit::AuditEntry;
use crate::crypto::{SealContext, Sealed};
use crate::domain::{TenantId, UserId};
use crate::store::{Keyed, StoreError, Table, Write, keys, to_item};

/// A tenant's OAuth app for one provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppCredentials {
    /// Its tenant.
    pub tenant: TenantId,
    /// Provider id.
    pub provider: String,
    /// The app's client id.
    pub client_id: String,
    /// The client secret, sealed.
    pub client_secret: Sealed,
    /// The secret, masked, for display.
    pub client_secret_masked: String,
    /// The redirect URI registered with the provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redirect_uri: Option<String>,
    /// Scopes to request instead of the catalogue's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<String>>,
    /// The app's settings from the catalogue's `app_fields` (a custom provider's
    /// endpoints and client authentication), validated.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub settings: std::collections::BTreeMap<String, String>,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Last change.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Who changed it last.
    pub updated_by: UserId,
    /// Optimistic-concurrency version.
    pub version: u64,
}

/// Where a tenant's app secret for `provider` is bound.
pub fn seal_context(tenant: &TenantId, provider: &str) -> SealContext {
    SealContext::new(tenant, format!("app-credentials/{provider}"))
}

impl AppCredentials {
    fn keyed(&self) -> Keyed<&Self> {
        Keyed {
            pk: keys::tenant(&self.tenant),
            sk: keys::app_credentials(&self.provider),
            item: self,
        }
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
        let item = to_item(&next.keyed())?;
        let write = match prev_version {
            None => Write::Insert(item),
            Some(v) => Write::Replace(item, v),
        };
        self.table.transact(vec![write, audit.to_write()?]).await
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
                audit.to_write()?,
            ])
            .await
    }
}

//! A tenant's own OAuth app for a provider ("bring your own app"): client id and
//! redirect URI in the clear, client secret sealed for (tenant, provider).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::crypto::{SealContext, Sealed};
use crate::domain::{TenantId, UserId};

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

pub use crate::store::app_credentials::AppCredentialStore;

//! Connections: a tenant's link to one provider account, with its settings in the
//! clear and its secrets sealed; and their storage, where each change is written in
//! one transaction with its audit entry and the account's uniqueness marker.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::crypto::{SealContext, Sealed};
use crate::domain::{ConnectionId, ConnectionStatus, Identity, Label, Principal, TenantId, UserId};

pub use crate::store::connections::{Connections, Listing, WriteError, under_key};

/// A failure recorded on a connection (never holds provider bodies or secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    /// Stable code (`credentials_rejected`, `provider_unavailable`, …).
    pub code: String,
    /// What happened.
    pub message: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
}

/// Where an OAuth connection's client app comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppSource {
    /// The tenant's own app credentials.
    Tenant,
    /// The platform's default app (Secrets Manager).
    Platform,
}

/// The token lifecycle of an OAuth connection (never the tokens themselves: those are
/// in the sealed secrets as `access_token` and `refresh_token`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenState {
    /// Which app the grant belongs to.
    pub app: AppSource,
    /// When the access token expires, when the provider said (Salesforce does not).
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires_at: Option<OffsetDateTime>,
    /// When the scheduled sweep should next look at it (refresh, or check a token
    /// without an expiry); none when it has no refresh token.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub refresh_due: Option<OffsetDateTime>,
    /// The last successful refresh.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub refreshed_at: Option<OffsetDateTime>,
    /// When a token without an expiry was last confirmed active (introspection).
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub validated_at: Option<OffsetDateTime>,
    /// Refresh failures since the last success.
    #[serde(default)]
    pub failures: u32,
    /// +1 for every new access token: tells a caller whose token got a 401 whether
    /// someone already replaced it.
    #[serde(default)]
    pub generation: u64,
    /// Whether a refresh token is held.
    pub has_refresh_token: bool,
}

/// A stored connection.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Connection {
    /// The connection's id.
    pub id: ConnectionId,
    /// Its tenant.
    pub tenant: TenantId,
    /// Provider id from the catalogue.
    pub provider: String,
    /// Auth method id from the catalogue.
    pub auth_method: String,
    /// Connection kind within the provider (Google `gmail` / `calendar`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Display label.
    pub label: Label,
    /// Current status.
    pub status: ConnectionStatus,
    /// Non-secret settings (subdomain, email, base URL, instance URL…).
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// Masked forms of the secret fields, for display.
    #[serde(default)]
    pub masked: BTreeMap<String, String>,
    /// The secret fields, sealed for (tenant, `connection/{id}`).
    pub secrets: Sealed,
    /// Who the connection acts as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<Identity>,
    /// Granted scopes (OAuth).
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Scopes the provider said were missing at run time (an admin narrowed the
    /// grant): the dashboard asks for a reconnect; a reconnect clears them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes_missing: Vec<String>,
    /// The provider account, for one connection per account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_key: Option<String>,
    /// The last failure, cleared by a success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,
    /// When the credentials were last checked against the provider.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub checked_at: Option<OffsetDateTime>,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Who created it.
    pub created_by: UserId,
    /// Last change.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Who changed it last.
    pub updated_by: UserId,
    /// Optimistic-concurrency version, +1 per change.
    pub version: u64,
    /// OAuth: the token lifecycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<TokenState>,
    /// A personal connection's user (Google's Gmail and Calendar): only they see it in
    /// full and use it; others of the tenant see that it exists, and admins may delete
    /// it. `None`: the tenant's connection, managed by its admins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<UserId>,
    /// A personal connection's owner lets the tenant's automations act with it: the
    /// dispatch steps that name them, or the assistants they own
    /// (`gmail.send_summary`, `calendar.create_follow_up`). Only the owner changes it;
    /// it is never set on the tenant's connections.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_automations: bool,
    /// Who holds the refresh lease (one refresher at a time), if anyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_holder: Option<String>,
    /// Until when the lease holds (Unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<i64>,
}

/// What a caller may have of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Everything the role allows: the tenant's connections, or the caller's own
    /// personal one.
    Full,
    /// That it exists (owner, kind, status, connected address), and, for an admin,
    /// deleting it: another user's personal connection seen by an admin.
    Existence,
    /// Nothing: another user's personal connection seen by a member.
    Hidden,
}

impl Connection {
    /// What `who` may have of this connection.
    pub fn reach(&self, who: &Principal) -> Reach {
        match &self.owner {
            None => Reach::Full,
            Some(owner) if *owner == who.user => Reach::Full,
            Some(_) if who.is_admin() => Reach::Existence,
            Some(_) => Reach::Hidden,
        }
    }

    /// Where its secrets are bound.
    pub fn seal_context(&self) -> SealContext {
        seal_context(&self.tenant, &self.id)
    }

    /// When the scheduled sweep should look at this connection: only connections in
    /// use (connected or paused) with a refresh token are in the index.
    pub fn refresh_due(&self) -> Option<OffsetDateTime> {
        let in_use = matches!(
            self.status,
            ConnectionStatus::Connected | ConnectionStatus::Paused
        );
        self.token
            .as_ref()
            .filter(|t| in_use && t.has_refresh_token)
            .and_then(|t| t.refresh_due)
    }
}

/// The seal context of connection `id`'s secrets.
pub fn seal_context(tenant: &TenantId, id: &ConnectionId) -> SealContext {
    SealContext::new(tenant, format!("connection/{id}"))
}

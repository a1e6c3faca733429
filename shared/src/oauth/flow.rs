//! Pending OAuth flows: what `start` promised and `callback` must find.
//!
//! A flow is stored under the SHA-256 of its state (the state itself is never stored),
//! lives ten minutes (DynamoDB TTL removes leftovers; expiry is also checked on use),
//! and is consumed exactly once: the callback deletes it with a condition that it
//! exists, belongs to the provider in the URL and has not expired, and gets the item in
//! the same atomic step. A replayed, expired or foreign state finds nothing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::connections::AppSource;
use crate::crypto::{SealContext, Sealed};
use crate::domain::{ConnectionId, TenantId, UserId};

/// How long a started flow may take.
pub const FLOW_TTL: time::Duration = time::Duration::minutes(10);

/// A started OAuth flow.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingFlow {
    /// The tenant connecting.
    pub tenant: TenantId,
    /// The user who started it (an admin, or the owner of a personal connection).
    pub user: UserId,
    /// The connection is the user's own ([`crate::providers::AuthMethod::personal`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub personal: bool,
    /// Provider id.
    pub provider: String,
    /// Connection kind (Google gmail/calendar).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Label for the new connection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Requested scopes.
    pub scopes: Vec<String>,
    /// The redirect URI sent to the provider (the code exchange repeats it).
    pub redirect_uri: String,
    /// Where the browser goes when the flow ends (already checked against the
    /// allow-list).
    pub return_to: String,
    /// The connection's settings chosen at start (Salesforce environment, Zoho data
    /// centre, Zendesk subdomain, …) and the app's settings (custom endpoints).
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// Which app the flow uses.
    pub app: AppSource,
    /// The PKCE verifier, sealed for (tenant, `oauth-flow/{state hash}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verifier: Option<Sealed>,
    /// Reconnecting this connection, when the admin asked to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<ConnectionId>,
    /// When it was started.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it stops being accepted (Unix seconds; also the DynamoDB TTL).
    pub ttl: i64,
}

/// The hash a flow is stored under.
pub fn state_hash(state: &str) -> String {
    let digest = Sha256::digest(state.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Where a flow's verifier is sealed.
pub fn seal_context(tenant: &TenantId, state_hash: &str) -> SealContext {
    SealContext::new(tenant, format!("oauth-flow/{state_hash}"))
}

pub use crate::store::oauth::Flows;

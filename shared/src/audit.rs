//! The audit log: who did what to which item of which tenant, when, and how it
//! ended. Entries are written in the same transaction as the change they describe
//! (so no change goes unaudited), and never hold a secret value.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::domain::{AuditId, Principal, TenantId};

/// How long audit entries are kept.
pub const RETENTION_DAYS: i64 = 730;

/// How an audited operation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It happened.
    Success,
    /// It was attempted and failed (the code says why).
    Failure,
    /// The caller was not allowed to.
    Denied,
}

/// One audit entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditEntry {
    /// The entry's id.
    pub id: AuditId,
    /// The tenant it belongs to.
    pub tenant: TenantId,
    /// Who acted (user id, or `system:<function>`).
    pub actor: String,
    /// The actor's role, for users.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// What was done, e.g. `connection.create`.
    pub action: String,
    /// What it was done to, e.g. `connection/con_…`.
    pub target: String,
    /// How it ended.
    pub outcome: Outcome,
    /// The error code of a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The request it came from.
    pub request_id: String,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Non-secret facts (provider, fields changed, status before/after).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub details: serde_json::Map<String, serde_json::Value>,
    /// DynamoDB TTL (epoch seconds).
    #[serde(default)]
    pub ttl: i64,
}

impl AuditEntry {
    /// An entry for an action by a user.
    pub fn by(p: &Principal, request_id: &str, action: &str, target: impl Into<String>) -> Self {
        let at = crate::domain::now();
        Self {
            id: AuditId::generate(),
            tenant: p.tenant.clone(),
            actor: p.user.to_string(),
            role: Some(p.role.as_str().to_owned()),
            action: action.to_owned(),
            target: target.into(),
            outcome: Outcome::Success,
            code: None,
            request_id: request_id.to_owned(),
            at,
            details: serde_json::Map::new(),
            ttl: (at + time::Duration::days(RETENTION_DAYS)).unix_timestamp(),
        }
    }

    /// An entry for an action Conduit took on its own (`system:token-refresh`).
    pub fn system(
        tenant: &TenantId,
        actor: &str,
        request_id: &str,
        action: &str,
        target: impl Into<String>,
    ) -> Self {
        let at = crate::domain::now();
        Self {
            id: AuditId::generate(),
            tenant: tenant.clone(),
            actor: format!("system:{actor}"),
            role: None,
            action: action.to_owned(),
            target: target.into(),
            outcome: Outcome::Success,
            code: None,
            request_id: request_id.to_owned(),
            at,
            details: serde_json::Map::new(),
            ttl: (at + time::Duration::days(RETENTION_DAYS)).unix_timestamp(),
        }
    }

    /// Marks the entry as a failure with `code`.
    pub fn failed(mut self, outcome: Outcome, code: &str) -> Self {
        self.outcome = outcome;
        self.code = Some(code.to_owned());
        self
    }

    /// Adds a non-secret detail.
    pub fn detail(mut self, key: &str, value: impl Serialize) -> Self {
        if let Ok(v) = serde_json::to_value(value) {
            self.details.insert(key.to_owned(), v);
        }
        self
    }
}

pub use crate::store::audit::AuditLog;

//! Whether a connection's granted scopes cover what it is about to be used for, and
//! the 409 `scopes_missing` that names the missing scopes and the reconnect call
//! that asks for them.
//!
//! The catalogue says what each use needs (`providers.yaml`, `scopes.uses`); the
//! connection holds what the provider granted (read from the token response or the
//! provider's token info at connect time, narrowed when the provider refuses a call
//! for a missing scope). Connections whose grants Conduit cannot read (API keys,
//! custom providers) are not checked: the provider's answer at run time decides.

use serde::Serialize;
use serde_json::json;

use crate::app::App;
use crate::audit::AuditEntry;
use crate::connections::{Connection, Connections, WriteError};
use crate::domain::{ConnectionId, TenantId, now, rfc3339};
use crate::http::ApiError;
use crate::providers::{Catalogue, render};
use crate::store::StoreError;
use crate::sync::config::SyncDirection;
use crate::sync::schema::Entity;

/// A connection lacks scopes a use needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopesMissing {
    /// The provider id.
    pub provider: String,
    /// The connection.
    pub connection_id: String,
    /// The scopes it lacks, in catalogue order.
    pub missing: Vec<String>,
    /// The uses that were checked: what a reconnect asks for.
    pub uses: Vec<String>,
}

/// The uses a sync of `entities` in `direction` stands for (`sync:contacts:pull`…).
pub fn sync_uses(direction: SyncDirection, entities: &[Entity]) -> Vec<String> {
    entities
        .iter()
        .map(|e| format!("sync:{}:{}", e.as_str(), direction.as_str()))
        .collect()
}

/// Checks that `conn`'s granted scopes cover what `uses` need. Connections without a
/// scope model, and uses the catalogue does not list, are not checked.
pub fn check(
    catalogue: &Catalogue,
    conn: &Connection,
    uses: &[String],
) -> Result<(), ScopesMissing> {
    let Some(model) = catalogue
        .provider(&conn.provider)
        .and_then(|p| p.auth_method(Some(&conn.auth_method)))
        .and_then(|m| m.scope_model(conn.kind.as_deref()))
        .filter(|m| !m.free_form)
    else {
        return Ok(());
    };
    let fill = |s: &str| {
        render(s, |n| conn.settings.get(n).map(String::as_str)).unwrap_or_else(|_| s.to_owned())
    };
    let Ok(needed) = model.for_uses(uses, false, &fill) else {
        return Ok(());
    };
    let missing = model.missing(&needed, &conn.scopes, &fill);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(ScopesMissing {
            provider: conn.provider.clone(),
            connection_id: conn.id.to_string(),
            missing,
            uses: uses.to_vec(),
        })
    }
}

/// The event detail of `integration.connection.scopes_missing`.
#[derive(Debug, Serialize)]
struct ScopesMissingEvent<'a> {
    tenant_id: &'a str,
    connection_id: &'a str,
    provider: &'a str,
    missing_scopes: &'a [String],
    at: String,
}

/// How often marking a connection is retried when another write got there first.
const MARK_ATTEMPTS: u32 = 5;

/// Records that the provider refused `connection` for missing `scopes` (an admin
/// narrowed the grant): they leave its granted scopes and join `scopes_missing`
/// (the dashboard asks for a reconnect; config checks see them missing), with an
/// audit entry and an `integration.connection.scopes_missing` event. Once per
/// narrowing: a connection already marked is left as it is.
pub async fn mark_missing(
    app: &App,
    tenant: &TenantId,
    connection: &ConnectionId,
    scopes: &[String],
    actor: &str,
    request_id: &str,
) -> Result<(), StoreError> {
    let store = Connections::new(app.table.clone());
    for _ in 0..MARK_ATTEMPTS {
        let Some(prev) = store.get(tenant, connection).await? else {
            return Ok(());
        };
        let new: Vec<String> = scopes
            .iter()
            .filter(|s| !prev.scopes_missing.contains(s))
            .cloned()
            .collect();
        // HubSpot names the scopes; a refusal that names none still marks the grant.
        if !scopes.is_empty() && new.is_empty() {
            return Ok(());
        }
        let mut next = prev.clone();
        next.scopes.retain(|s| !scopes.contains(s));
        next.scopes_missing.extend(new);
        if scopes.is_empty() && next.scopes_missing.is_empty() {
            next.scopes_missing.push("unknown".into());
        }
        next.updated_at = now();
        next.version = prev.version + 1;
        let audit = AuditEntry::system(
            tenant,
            actor,
            request_id,
            "connection.scopes_missing",
            format!("connection/{connection}"),
        )
        .detail("provider", &prev.provider)
        .detail("missing_scopes", &next.scopes_missing);
        match store.save(&prev, &next, &audit).await {
            Ok(()) => {
                let detail = ScopesMissingEvent {
                    tenant_id: tenant.as_str(),
                    connection_id: connection.as_str(),
                    provider: &prev.provider,
                    missing_scopes: &next.scopes_missing,
                    at: rfc3339(next.updated_at),
                };
                if let Err(e) = app
                    .events
                    .publish(crate::events::SCOPES_MISSING, &detail)
                    .await
                {
                    tracing::error!(connection_id = %connection, error = %e, "scopes_missing event not published");
                }
                return Ok(());
            }
            Err(WriteError::Stale) | Err(WriteError::Duplicate(_)) => continue,
            Err(WriteError::Store(e)) => return Err(e),
        }
    }
    Err(StoreError::ConditionFailed)
}

impl From<ScopesMissing> for ApiError {
    fn from(m: ScopesMissing) -> Self {
        let extra = json!({
            "missing_scopes": m.missing,
            "reconnect": {
                "method": "POST",
                "path": format!("/v1/oauth/{}/start", m.provider),
                "body": { "connection_id": m.connection_id, "uses": m.uses },
            },
        });
        ApiError::ConflictWith {
            code: "scopes_missing",
            message: format!(
                "connection {} was not granted {}; reconnect it to add them",
                m.connection_id,
                m.missing.join(", ")
            ),
            extra: match extra {
                serde_json::Value::Object(map) => map,
                _ => serde_json::Map::new(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ConnectionId, ConnectionStatus, Label, TenantId, UserId, now};

    fn conn(provider: &str, method: &str, scopes: &[&str]) -> Connection {
        let at = now();
        Connection {
            id: ConnectionId::generate(),
            tenant: TenantId::parse("t1").unwrap(),
            provider: provider.into(),
            auth_method: method.into(),
            kind: None,
            label: Label::lossy("x"),
            status: ConnectionStatus::Connected,
            settings: Default::default(),
            masked: Default::default(),
            secrets: crate::crypto::Sealed {
                v: 1,
                edk: String::new(),
                nonce: String::new(),
                ct: String::new(),
            },
            identity: None,
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            scopes_missing: Vec::new(),
            account_key: None,
            last_error: None,
            checked_at: None,
            created_at: at,
            created_by: UserId::parse("u").unwrap(),
            updated_at: at,
            updated_by: UserId::parse("u").unwrap(),
            version: 1,
            token: None,
            lease_holder: None,
            lease_until: None,
            allow_automations: false,
            owner: None,
        }
    }

    #[test]
    fn a_read_only_grant_cannot_push_and_the_error_says_how_to_reconnect() {
        let c = Catalogue::get().unwrap();
        let read_only = conn("hubspot", "oauth2", &["oauth", "crm.objects.contacts.read"]);
        let pull = sync_uses(SyncDirection::Pull, &[Entity::Contacts]);
        assert_eq!(check(c, &read_only, &pull), Ok(()));
        let both = sync_uses(
            SyncDirection::Bidirectional,
            &[Entity::Contacts, Entity::Companies],
        );
        let missing = check(c, &read_only, &both).unwrap_err();
        assert_eq!(
            missing.missing,
            [
                "crm.objects.contacts.write",
                "crm.objects.companies.read",
                "crm.objects.companies.write"
            ]
        );
        let e = ApiError::from(missing);
        assert_eq!(e.status(), 409);
        assert_eq!(e.code(), "scopes_missing");
        // An API-key connection's grant is unknown: not checked.
        let key = conn("hubspot", "private_app", &[]);
        assert_eq!(check(c, &key, &both), Ok(()));
    }
}

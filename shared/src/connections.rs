//! Connections: a tenant's link to one provider account, with its settings in the
//! clear and its secrets sealed; and their storage, where each change is written in
//! one transaction with its audit entry and the account's uniqueness marker.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::audit::AuditEntry;
use crate::crypto::{SealContext, Sealed};
use crate::domain::{
    ConnectionId, ConnectionStatus, Identity, Label, TenantId, UserId, sortable_time,
};
use crate::store::{Keyed, Skipped, StoreError, Table, Write, keys, split_listing, to_item};

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
    /// Who holds the refresh lease (one refresher at a time), if anyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_holder: Option<String>,
    /// Until when the lease holds (Unix milliseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_until: Option<i64>,
}

/// A connection as stored: its keys, and its place in the refresh index when the
/// scheduled sweep should look at it.
#[derive(Serialize)]
struct ConnectionItem<'a> {
    pk: String,
    sk: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    gsi1pk: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    gsi1sk: Option<String>,
    #[serde(flatten)]
    item: &'a Connection,
}

impl Connection {
    /// Where its secrets are bound.
    pub fn seal_context(&self) -> SealContext {
        seal_context(&self.tenant, &self.id)
    }

    fn keyed(&self) -> ConnectionItem<'_> {
        let due = self.refresh_due();
        ConnectionItem {
            pk: keys::tenant(&self.tenant),
            sk: keys::connection(&self.id),
            gsi1pk: due.map(|_| keys::token_due(keys::token_due_shard(&self.id))),
            gsi1sk: due.map(|t| format!("{}#{}#{}", sortable_time(t), self.tenant, self.id)),
            item: self,
        }
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

    /// Writes the item whatever is there (first load, benchmarks' bulk set-up).
    pub fn to_item(&self) -> Result<crate::store::Item, StoreError> {
        to_item(&self.keyed())
    }

    fn marker(&self) -> Option<Keyed<Marker>> {
        self.account_key.as_ref().map(|acct| Keyed {
            pk: keys::tenant(&self.tenant),
            sk: keys::account_marker(&self.provider, acct),
            item: Marker {
                connection_id: self.id.clone(),
            },
        })
    }
}

/// The connection an item read from `tenant`'s partition holds, or `None` when the
/// item names another tenant or id than its key (a bad restore, a key bug, a copy):
/// such an item is never shown or used, and its secrets are never opened, since its
/// own attributes would choose the decryption context. Logged by key, never by value.
pub fn under_key(tenant: &TenantId, k: Keyed<Connection>) -> Option<Connection> {
    if !belongs(tenant, &k) {
        tracing::error!(
            tenant = %tenant,
            key = %k.sk,
            "connection item names another tenant or id than its key; ignored"
        );
        return None;
    }
    Some(k.item)
}

fn belongs(tenant: &TenantId, k: &Keyed<Connection>) -> bool {
    k.pk == keys::tenant(tenant) && k.item.tenant == *tenant && k.sk == keys::connection(&k.item.id)
}

/// A tenant's connections as listed: those read, and those left out by id.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// The connections, oldest first.
    pub connections: Vec<Connection>,
    /// Items that could not be read or are misplaced.
    pub skipped: Vec<Skipped>,
}

/// The seal context of connection `id`'s secrets.
pub fn seal_context(tenant: &TenantId, id: &ConnectionId) -> SealContext {
    SealContext::new(tenant, format!("connection/{id}"))
}

/// Claims a provider account for one connection of a tenant.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Marker {
    connection_id: ConnectionId,
}

/// Why a connection write failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Another connection of the tenant already acts as this provider account.
    #[error("a connection to this account exists: {0}")]
    Duplicate(ConnectionId),
    /// The connection changed (or vanished) since it was read.
    #[error("the connection changed since it was read")]
    Stale,
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Connection storage.
#[derive(Clone, Debug)]
pub struct Connections {
    table: Table,
}

impl Connections {
    /// Connections kept in `table`.
    pub fn new(table: Table) -> Self {
        Self { table }
    }

    /// A tenant's connection by id.
    pub async fn get(
        &self,
        tenant: &TenantId,
        id: &ConnectionId,
    ) -> Result<Option<Connection>, StoreError> {
        let item = self
            .table
            .get::<Keyed<Connection>>(&keys::tenant(tenant), &keys::connection(id))
            .await?;
        Ok(item.and_then(|k| under_key(tenant, k)))
    }

    /// Every connection of a tenant, oldest first; items that cannot be read or are
    /// misplaced are left out and named in [`Listing::skipped`].
    pub async fn list(&self, tenant: &TenantId) -> Result<Listing, StoreError> {
        let items = self
            .table
            .query_all_lenient::<Keyed<Connection>>(&keys::tenant(tenant), keys::CONNECTION_PREFIX)
            .await?;
        let (connections, skipped) =
            split_listing(items, keys::CONNECTION_PREFIX, "connection", |k| {
                belongs(tenant, k)
            });
        Ok(Listing {
            connections,
            skipped,
        })
    }

    /// One page of a tenant's connections, oldest first, from `cursor` (a previous
    /// page's); items that cannot be read or are misplaced are left out and named.
    pub async fn page(
        &self,
        tenant: &TenantId,
        limit: i32,
        cursor: Option<&str>,
    ) -> Result<crate::store::Listing<Connection>, StoreError> {
        crate::store::list_page(
            &self.table,
            &keys::tenant(tenant),
            keys::CONNECTION_PREFIX,
            (limit, cursor),
            "connection",
            |k| belongs(tenant, k),
        )
        .await
    }

    /// The connection of a tenant that holds a provider account, if any.
    pub async fn owner_of(
        &self,
        tenant: &TenantId,
        provider: &str,
        account_key: &str,
    ) -> Result<Option<ConnectionId>, StoreError> {
        Ok(self
            .table
            .get::<Keyed<Marker>>(
                &keys::tenant(tenant),
                &keys::account_marker(provider, account_key),
            )
            .await?
            .map(|m| m.item.connection_id))
    }

    /// The connection holding a provider account under a marker written before
    /// account keys were hashed (see `Connector::legacy_account_key`), if any. A key
    /// too long for a DynamoDB sort key was never written, so it is not looked up.
    pub async fn legacy_owner(
        &self,
        tenant: &TenantId,
        provider: &str,
        legacy_key: &str,
    ) -> Result<Option<ConnectionId>, StoreError> {
        let sk = keys::account_marker(provider, legacy_key);
        if sk.len() > keys::MAX_SORT_KEY_BYTES {
            return Ok(None);
        }
        Ok(self
            .table
            .get::<Keyed<Marker>>(&keys::tenant(tenant), &sk)
            .await?
            .map(|m| m.item.connection_id))
    }

    async fn existing_owner(&self, conn: &Connection) -> Option<ConnectionId> {
        let marker = conn.marker()?;
        self.table
            .get::<Keyed<Marker>>(&marker.pk, &marker.sk)
            .await
            .ok()
            .flatten()
            .map(|m| m.item.connection_id)
            .filter(|id| *id != conn.id)
    }

    /// Creates a connection, its account marker and its audit entry, atomically.
    pub async fn create(&self, conn: &Connection, audit: &AuditEntry) -> Result<(), WriteError> {
        let mut writes = vec![Write::Insert(to_item(&conn.keyed())?), audit.to_write()?];
        if let Some(m) = conn.marker() {
            writes.push(Write::Insert(to_item(&m)?));
        }
        match self.table.transact(writes).await {
            Ok(()) => Ok(()),
            Err(StoreError::ConditionFailed) => match self.existing_owner(conn).await {
                Some(owner) => Err(WriteError::Duplicate(owner)),
                None => Err(WriteError::Stale),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// Saves `next` over `prev` (which must still be current), moving the account
    /// marker if the account changed, with its audit entry, atomically.
    pub async fn save(
        &self,
        prev: &Connection,
        next: &Connection,
        audit: &AuditEntry,
    ) -> Result<(), WriteError> {
        let mut writes = vec![
            Write::Replace(to_item(&next.keyed())?, prev.version),
            audit.to_write()?,
        ];
        if prev.account_key != next.account_key {
            if let Some(old) = prev.marker() {
                writes.push(Write::Delete {
                    pk: old.pk,
                    sk: old.sk,
                    must_exist: false,
                });
            }
            if let Some(new) = next.marker() {
                writes.push(Write::Insert(to_item(&new)?));
            }
        }
        match self.table.transact(writes).await {
            Ok(()) => Ok(()),
            Err(StoreError::ConditionFailed) => match self.existing_owner(next).await {
                Some(owner) if prev.account_key != next.account_key => {
                    Err(WriteError::Duplicate(owner))
                }
                _ => Err(WriteError::Stale),
            },
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes a connection (which must still be at its version) with its marker,
    /// recording the audit entry, atomically. The sealed secrets go with the item.
    pub async fn delete(&self, conn: &Connection, audit: &AuditEntry) -> Result<(), WriteError> {
        let mut writes = vec![
            Write::Delete {
                pk: keys::tenant(&conn.tenant),
                sk: keys::connection(&conn.id),
                must_exist: true,
            },
            audit.to_write()?,
        ];
        if let Some(m) = conn.marker() {
            writes.push(Write::Delete {
                pk: m.pk,
                sk: m.sk,
                must_exist: false,
            });
        }
        match self.table.transact(writes).await {
            Ok(()) => Ok(()),
            Err(StoreError::ConditionFailed) => Err(WriteError::Stale),
            Err(e) => Err(e.into()),
        }
    }
}

//! Connection items: a connection under its tenant's partition, in the token-refresh
//! index while the sweep should look at it, and the uniqueness marker of its provider
//! account; each change is written in one transaction with its audit entry.

use serde::{Deserialize, Serialize};

use super::{Item, Keyed, Skipped, StoreError, Table, Write, audit, keys, split_listing, to_item};
use crate::audit::AuditEntry;
use crate::connections::Connection;
use crate::domain::{ConnectionId, TenantId, sortable_time};

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

fn keyed(conn: &Connection) -> ConnectionItem<'_> {
    let due = conn.refresh_due();
    ConnectionItem {
        pk: keys::tenant(&conn.tenant),
        sk: keys::connection(&conn.id),
        gsi1pk: due.map(|_| keys::token_due(keys::token_due_shard(&conn.id))),
        gsi1sk: due.map(|t| keys::token_due_entry(&sortable_time(t), &conn.tenant, &conn.id)),
        item: conn,
    }
}

/// The provider account a tenant's connection acts in, as the provider's webhooks name
/// it (a HubSpot portal id); personal connections are never found by account.
fn webhook_account(conn: &Connection) -> Option<&str> {
    if conn.owner.is_some() {
        return None;
    }
    conn.identity
        .as_ref()
        .and_then(|i| i.account.as_deref())
        .map(str::trim)
        .filter(|a| !a.is_empty() && a.len() <= 256)
}

/// A connection's entry in the index of its provider account (`ACCT#{provider}#{account}`
/// / `{tenant}#{id}`), written in the same transaction as the connection: where a
/// provider's webhook finds the tenants it is about, strongly consistent.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct AccountEntry {
    tenant: TenantId,
    connection_id: ConnectionId,
}

fn account_entry(conn: &Connection) -> Option<Keyed<AccountEntry>> {
    webhook_account(conn).map(|account| Keyed {
        pk: keys::provider_account(&conn.provider, account),
        sk: keys::provider_account_entry(&conn.tenant, &conn.id),
        item: AccountEntry {
            tenant: conn.tenant.clone(),
            connection_id: conn.id.clone(),
        },
    })
}

impl Connection {
    /// The connection as an item, with its keys and refresh-index attributes (to write
    /// it whatever is there: benchmarks' and tests' bulk set-up).
    pub fn to_item(&self) -> Result<Item, StoreError> {
        item(self)
    }
}

/// A connection as an item, with its keys and refresh-index attributes.
pub(crate) fn item(conn: &Connection) -> Result<Item, StoreError> {
    to_item(&keyed(conn))
}

/// The uniqueness marker of the connection's provider account, if it has one.
fn marker(conn: &Connection) -> Option<Keyed<Marker>> {
    conn.account_key.as_ref().map(|acct| Keyed {
        pk: keys::tenant(&conn.tenant),
        sk: keys::account_marker(&conn.provider, acct),
        item: Marker {
            connection_id: conn.id.clone(),
        },
    })
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
    pub(super) table: Table,
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

    /// The tenants' connections acting in `provider`'s account `account` (a HubSpot
    /// portal), from the provider-account index (at most 1,000). Entries that do not
    /// read are skipped.
    pub async fn by_account(
        &self,
        provider: &str,
        account: &str,
    ) -> Result<Vec<(TenantId, ConnectionId)>, StoreError> {
        let pk = keys::provider_account(provider, account);
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = self
                .table
                .query_lenient::<Keyed<AccountEntry>>(
                    None,
                    &pk,
                    crate::store::QueryOpts {
                        limit: Some(100),
                        cursor: cursor.as_deref(),
                        consistent: true,
                        ..Default::default()
                    },
                )
                .await?;
            out.extend(page.items.into_iter().filter_map(|r| {
                let k = r.into_result().ok()?;
                // An entry is only taken for the connection its key names.
                (k.sk == keys::provider_account_entry(&k.item.tenant, &k.item.connection_id))
                    .then_some((k.item.tenant, k.item.connection_id))
            }));
            match page.cursor {
                Some(c) if out.len() < 1000 => cursor = Some(c),
                _ => return Ok(out),
            }
        }
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

    /// `user`'s personal connection of `kind` through the provider's OAuth `method`
    /// (one per user, method and kind), if they have one.
    pub async fn personal(
        &self,
        tenant: &TenantId,
        provider: &str,
        method: &str,
        user: &crate::domain::UserId,
        kind: &str,
    ) -> Result<Option<Connection>, StoreError> {
        let key = crate::connector::personal_key(method, user, Some(kind));
        let Some(id) = self.owner_of(tenant, provider, &key).await? else {
            return Ok(None);
        };
        Ok(self
            .get(tenant, &id)
            .await?
            .filter(|c| c.owner.as_ref() == Some(user) && c.kind.as_deref() == Some(kind)))
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
        let marker = marker(conn)?;
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
        let mut writes = vec![Write::Insert(item(conn)?), audit::insert(audit)?];
        if let Some(m) = marker(conn) {
            writes.push(Write::Insert(to_item(&m)?));
        }
        if let Some(e) = account_entry(conn) {
            writes.push(Write::Put(to_item(&e)?));
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
            Write::Replace(item(next)?, prev.version),
            audit::insert(audit)?,
        ];
        if prev.account_key != next.account_key {
            if let Some(old) = marker(prev) {
                writes.push(Write::Delete {
                    pk: old.pk,
                    sk: old.sk,
                    must_exist: false,
                });
            }
            if let Some(new) = marker(next) {
                writes.push(Write::Insert(to_item(&new)?));
            }
        }
        // The account index follows the account (and is written again on every save,
        // so a connection made before the index existed gets its entry).
        let (old_entry, new_entry) = (account_entry(prev), account_entry(next));
        if let Some(old) = old_entry
            && new_entry.as_ref().is_none_or(|n| n.pk != old.pk)
        {
            writes.push(Write::Delete {
                pk: old.pk,
                sk: old.sk,
                must_exist: false,
            });
        }
        if let Some(e) = new_entry {
            writes.push(Write::Put(to_item(&e)?));
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
            audit::insert(audit)?,
        ];
        if let Some(m) = marker(conn) {
            writes.push(Write::Delete {
                pk: m.pk,
                sk: m.sk,
                must_exist: false,
            });
        }
        if let Some(e) = account_entry(conn) {
            writes.push(Write::Delete {
                pk: e.pk,
                sk: e.sk,
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

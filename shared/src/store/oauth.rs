//! OAuth items: pending flows (by the hash of their state, consumed once), the refresh
//! lease on a connection, a refresh's save with its failure record, and the
//! token-refresh index the sweep reads.

use time::OffsetDateTime;

use super::connections::{Connections, item, under_key};
use super::{Keyed, QueryOpts, StoreError, Table, Value, Write, audit, keys, to_item};
use crate::audit::AuditEntry;
use crate::connections::Connection;
use crate::domain::{ConnectionId, TenantId, sortable_time};
use crate::oauth::flow::{PendingFlow, state_hash};
use crate::oauth::lifecycle::TokenFailure;

/// Pending-flow storage.
#[derive(Clone, Debug)]
pub struct Flows {
    table: Table,
}

impl Flows {
    /// Flows kept in `table`.
    pub fn new(table: Table) -> Self {
        Self { table }
    }

    /// Stores a new flow under its state's hash.
    pub async fn put(&self, state_hash: &str, flow: &PendingFlow) -> Result<(), StoreError> {
        self.table
            .insert(&Keyed {
                pk: keys::oauth_flow(state_hash),
                sk: keys::OAUTH_FLOW_SK.to_owned(),
                item: flow,
            })
            .await
    }

    /// Consumes the flow of `state` for `provider`, once. `None` when there is no such
    /// unexpired flow for that provider (replayed, expired, foreign or made up).
    pub async fn take(
        &self,
        state: &str,
        provider: &str,
        now: OffsetDateTime,
    ) -> Result<Option<(String, PendingFlow)>, StoreError> {
        let hash = state_hash(state);
        match self
            .table
            .take::<Keyed<PendingFlow>>(
                &keys::oauth_flow(&hash),
                keys::OAUTH_FLOW_SK,
                "attribute_exists(pk) AND provider = :provider AND #ttl > :now",
                vec![
                    (":provider", Value::S(provider.to_owned())),
                    (":now", Value::num(now.unix_timestamp())),
                ],
                &[("#ttl", "ttl")],
            )
            .await
        {
            Ok(k) => Ok(Some((hash, k.item))),
            Err(StoreError::ConditionFailed) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The refresh lease and the token-refresh index of connections.
impl Connections {
    /// Takes the refresh lease for `holder` until `until` (Unix ms) unless another
    /// holder's lease is still valid at `now` (Unix ms): the connection as it is now,
    /// `None` if its item is misplaced; `ConditionFailed` when it is held or gone.
    pub(crate) async fn lease(
        &self,
        tenant: &TenantId,
        id: &ConnectionId,
        holder: &str,
        now: i64,
        until: i64,
    ) -> Result<Option<Connection>, StoreError> {
        let k = self
            .table
            .update::<Keyed<Connection>>(
                &keys::tenant(tenant),
                &keys::connection(id),
                "SET lease_holder = :h, lease_until = :until, version = version + :one",
                "attribute_exists(pk) AND (attribute_not_exists(lease_until) OR lease_until < :now)",
                vec![
                    (":h", Value::S(holder.to_owned())),
                    (":until", Value::num(until)),
                    (":now", Value::num(now)),
                    (":one", Value::num(1)),
                ],
                &[],
            )
            .await?;
        Ok(under_key(tenant, k))
    }

    /// Drops `holder`'s lease without changing the tokens: the connection after, `None`
    /// if its item is misplaced; `ConditionFailed` unless `holder` holds it.
    pub(crate) async fn release(
        &self,
        conn: &Connection,
        holder: &str,
    ) -> Result<Option<Connection>, StoreError> {
        let k = self
            .table
            .update::<Keyed<Connection>>(
                &keys::tenant(&conn.tenant),
                &keys::connection(&conn.id),
                "REMOVE lease_holder, lease_until SET version = version + :one",
                "lease_holder = :h",
                vec![(":h", Value::S(holder.to_owned())), (":one", Value::num(1))],
                &[],
            )
            .await?;
        Ok(under_key(&conn.tenant, k))
    }

    /// Saves a refreshed `next` over version `expected` (`ConditionFailed` if it
    /// changed): one conditional put, or a transaction when a failure record and an
    /// audit entry go with it.
    pub(crate) async fn save_refreshed(
        &self,
        next: &Connection,
        expected: u64,
        failure: Option<&TokenFailure>,
        entry: Option<&AuditEntry>,
    ) -> Result<(), StoreError> {
        let conn = item(next)?;
        if failure.is_none() && entry.is_none() {
            return self.table.replace_item(conn, expected).await;
        }
        let mut writes = vec![Write::Replace(conn, expected)];
        if let Some(f) = failure {
            writes.push(Write::Insert(to_item(&Keyed {
                pk: keys::tenant(&next.tenant),
                sk: keys::token_failure(&f.connection_id, &sortable_time(f.at)),
                item: f,
            })?));
        }
        if let Some(e) = entry {
            writes.push(audit::insert(e)?);
        }
        self.table.transact(writes).await
    }

    /// Every connection the refresh index says is due by `at`, from every shard.
    pub(crate) async fn due_for_refresh(
        &self,
        at: OffsetDateTime,
    ) -> Result<Vec<(TenantId, ConnectionId)>, StoreError> {
        // `~` sorts after every `#{tenant}#{id}` suffix: all of instant `at` is due.
        let upper = format!("{}~", sortable_time(at));
        let mut due = Vec::new();
        for shard in 0..keys::TOKEN_DUE_SHARDS {
            let pk = keys::token_due(shard);
            let mut cursor: Option<String> = None;
            loop {
                let page = self
                    .table
                    .query::<Keyed<Connection>>(
                        Some("gsi1"),
                        &pk,
                        QueryOpts {
                            between: Some(("0", &upper)),
                            cursor: cursor.as_deref(),
                            limit: Some(500),
                            ..Default::default()
                        },
                    )
                    .await?;
                due.extend(page.items.into_iter().map(|k| (k.item.tenant, k.item.id)));
                match page.cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
        }
        Ok(due)
    }
}

//! The rate-schedule item of a connection's shared request budget: the earliest time
//! the next request may start (`tat`, Unix ms). Moved by a compare-and-swap (sync's
//! takers), or by one write that never loses a race (dispatch's): an idle schedule
//! claimed by a conditional set, a busy one advanced by an atomic add (DynamoDB
//! serialises them, so concurrent takers get consecutive slots instead of retrying).

use serde::Deserialize;

use super::{StoreError, Table, Value, keys};
use crate::domain::{ConnectionId, TenantId};

#[derive(Deserialize)]
struct Item {
    #[serde(default)]
    tat: i64,
}

/// Where a connection's schedule is kept.
#[derive(Debug, Clone)]
pub struct RateSchedule {
    table: Table,
    pk: String,
}

impl RateSchedule {
    /// The schedule of `connection`, kept in `table`.
    pub fn new(table: Table, tenant: &TenantId, connection: &ConnectionId) -> Self {
        Self {
            table,
            pk: keys::rate(tenant, connection),
        }
    }

    /// The schedule's `tat`; 0 when nothing was scheduled yet.
    pub async fn read(&self) -> Result<i64, StoreError> {
        let item: Option<Item> = self.table.get(&self.pk, keys::RATE_SK).await?;
        Ok(item.map_or(0, |i| i.tat))
    }

    /// Moves the schedule from `old` to `new`; false if someone else moved it first.
    pub async fn swap(&self, old: i64, new: i64) -> Result<bool, StoreError> {
        let values = vec![(":new", Value::num(new)), (":old", Value::num(old))];
        let cond = "attribute_not_exists(tat) OR tat = :old";
        Ok(self.set("SET tat = :new", cond, values).await?.is_some())
    }

    /// Claims an idle schedule: sets it to `new` if it is absent or earlier than
    /// `floor`; false when it is busy (at or after `floor`).
    pub async fn claim_idle(&self, floor: i64, new: i64) -> Result<bool, StoreError> {
        let values = vec![(":new", Value::num(new)), (":floor", Value::num(floor))];
        let cond = "attribute_not_exists(tat) OR tat < :floor";
        Ok(self.set("SET tat = :new", cond, values).await?.is_some())
    }

    /// Advances a scheduled `tat` by `interval` atomically; the new `tat`, or `None`
    /// when nothing is scheduled yet.
    pub async fn advance(&self, interval: i64) -> Result<Option<i64>, StoreError> {
        let values = vec![(":interval", Value::num(interval))];
        self.set("ADD tat :interval", "attribute_exists(tat)", values)
            .await
    }

    /// Applies `update` if `condition` holds: the new `tat`, or `None` when it does not.
    async fn set(
        &self,
        update: &str,
        condition: &str,
        values: Vec<(&str, Value)>,
    ) -> Result<Option<i64>, StoreError> {
        let result: Result<Item, StoreError> = self
            .table
            .update(&self.pk, keys::RATE_SK, update, condition, values, &[])
            .await;
        match result {
            Ok(item) => Ok(Some(item.tat)),
            Err(StoreError::ConditionFailed) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

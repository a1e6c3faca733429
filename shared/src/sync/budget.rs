//! One request budget per connection, shared by every worker that calls the provider
//! for it, kept in DynamoDB (not per process).
//!
//! The budget is a GCRA schedule: the item holds the earliest time the next request
//! may start (`tat`, Unix ms). Taking a slot moves it one interval on with a
//! conditional write, so concurrent workers interleave instead of bursting; a provider's
//! 429 pushes it past the provider's `Retry-After` for everyone. The interval is the
//! provider's window divided by its allowance, with a 2% margin, so no window of the
//! provider's length ever holds more than its allowance.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::Deserialize;

use crate::domain::{ConnectionId, TenantId};
use crate::providers::Provider;
use crate::store::{StoreError, Table};

/// How long one taker may wait for its slot before it gives up (and its message is
/// retried later): far more than any provider's window.
pub const MAX_WAIT: Duration = Duration::from_secs(60);

/// A connection's shared request budget.
#[derive(Debug)]
pub struct Budget {
    table: Table,
    pk: String,
    interval_ms: i64,
    known_tat: Option<i64>,
}

#[derive(Deserialize)]
struct Item {
    #[serde(default)]
    tat: i64,
}

const SK: &str = "BUDGET";

/// The spacing of requests for a provider: its window over its allowance, +2%.
pub fn interval_for(provider: &Provider) -> Duration {
    let limit = &provider.rate_limit;
    match limit.requests.zip(limit.window_seconds) {
        Some((requests, window)) if requests > 0 => {
            Duration::from_micros(u64::from(window) * 1_020_000 / u64::from(requests))
        }
        // Only a daily allowance: pace at 50 requests a second.
        _ => Duration::from_millis(20),
    }
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

impl Budget {
    /// The budget of a connection, spacing requests by `interval`.
    pub fn new(
        table: Table,
        tenant: &TenantId,
        connection: &ConnectionId,
        interval: Duration,
    ) -> Self {
        Self {
            table,
            pk: format!("RATE#{tenant}#{connection}"),
            interval_ms: interval.as_millis().max(1) as i64,
            known_tat: None,
        }
    }

    async fn read(&self) -> Result<i64, StoreError> {
        let item: Option<Item> = self.table.get(&self.pk, SK).await?;
        Ok(item.map_or(0, |i| i.tat))
    }

    /// Moves the schedule from `old` to `new`; false if someone else moved it first.
    async fn swap(&self, old: i64, new: i64) -> Result<bool, StoreError> {
        let result: Result<Item, StoreError> = self
            .table
            .update(
                &self.pk,
                SK,
                "SET tat = :new",
                "attribute_not_exists(tat) OR tat = :old",
                vec![
                    (":new", AttributeValue::N(new.to_string())),
                    (":old", AttributeValue::N(old.to_string())),
                ],
                &[],
            )
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(StoreError::ConditionFailed) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Takes the next slot and waits for it. Fails if the wait would exceed
    /// [`MAX_WAIT`] (the caller retries the work later) or the store fails.
    pub async fn acquire(&mut self) -> Result<(), BudgetError> {
        for _ in 0..50 {
            let old = match self.known_tat {
                Some(t) => t,
                None => self.read().await?,
            };
            let now = now_ms();
            let start = old.max(now);
            if start - now > MAX_WAIT.as_millis() as i64 {
                self.known_tat = None;
                return Err(BudgetError::Exhausted(Duration::from_millis(
                    (start - now) as u64,
                )));
            }
            if self.swap(old, start + self.interval_ms).await? {
                self.known_tat = Some(start + self.interval_ms);
                if start > now {
                    tokio::time::sleep(Duration::from_millis((start - now) as u64)).await;
                }
                return Ok(());
            }
            self.known_tat = None;
        }
        Err(BudgetError::Contended)
    }

    /// The provider refused a request for `wait`: nobody starts another before then.
    pub async fn hold_off(&mut self, wait: Duration) -> Result<(), BudgetError> {
        let until = now_ms() + wait.as_millis() as i64;
        for _ in 0..20 {
            let old = match self.known_tat {
                Some(t) => t,
                None => self.read().await?,
            };
            if old >= until {
                return Ok(());
            }
            if self.swap(old, until).await? {
                self.known_tat = Some(until);
                return Ok(());
            }
            self.known_tat = None;
        }
        Err(BudgetError::Contended)
    }
}

/// The budget could not give a slot.
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    /// The next slot is further away than a worker may wait.
    #[error("the connection's request budget is used up for the next {0:?}")]
    Exhausted(Duration),
    /// Too many workers raced for slots.
    #[error("the connection's request budget is contended")]
    Contended,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

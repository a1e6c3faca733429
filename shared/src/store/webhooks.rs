//! Webhook items: a config's changed and deleted CRM ids waiting for their targeted
//! pull (one item per config and entity; string sets, so a burst of events about the
//! same records coalesces into one set and repeats are free), and the requests
//! already taken (a replay finds its own).
//!
//! The first event of a batch finds the item without ids and enqueues the pull; the
//! later ones only add to the sets. The worker reads the sets, starts the pull, and
//! removes exactly what it took; ids added meanwhile stay for the next pull. Past
//! [`MAX_WAITING`] ids an item stops growing and is marked `full`: the pull is then an
//! incremental one from the config's checkpoint, which reads every change anyway.

use std::collections::{BTreeSet, HashMap};

use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};

use super::{StoreError, Table, condition_or, keys, service};
use crate::domain::{SyncConfigId, TenantId};
use crate::sync::schema::Entity;

/// Most ids one config's item holds before it is marked `full`.
pub const MAX_WAITING: usize = 2_000;
/// An item whose pull was enqueued longer ago than this (ms) and still holds ids is
/// enqueued again by the next event (its message was lost or went to the DLQ).
pub const REQUEUE_AFTER_MS: i64 = 120_000;
/// How long an item lives without being touched (s): a config deleted with ids
/// waiting leaves nothing forever.
const ITEM_TTL_SECS: i64 = 24 * 3600;

/// The ids waiting for one config's targeted pull.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Waiting {
    /// Records to read again.
    pub changed: BTreeSet<String>,
    /// Records the CRM reported deleted.
    pub deleted: BTreeSet<String>,
    /// Too many ids came: pull incrementally instead.
    pub full: bool,
}

impl Waiting {
    /// Nothing waits.
    pub fn is_empty(&self) -> bool {
        self.changed.is_empty() && self.deleted.is_empty() && !self.full
    }
}

/// Webhook storage.
#[derive(Clone, Debug)]
pub struct WebhookStore {
    table: Table,
}

fn set_of(item: &HashMap<String, AttributeValue>, name: &str) -> BTreeSet<String> {
    match item.get(name) {
        Some(AttributeValue::Ss(v)) => v.iter().cloned().collect(),
        _ => BTreeSet::new(),
    }
}

fn num_of(item: &HashMap<String, AttributeValue>, name: &str) -> Option<i64> {
    match item.get(name) {
        Some(AttributeValue::N(n)) => n.parse().ok(),
        _ => None,
    }
}

fn waiting_of(item: &HashMap<String, AttributeValue>) -> Waiting {
    Waiting {
        changed: set_of(item, "changed"),
        deleted: set_of(item, "deleted"),
        full: matches!(item.get("full"), Some(AttributeValue::Bool(true))),
    }
}

fn ss(ids: &BTreeSet<String>) -> AttributeValue {
    AttributeValue::Ss(ids.iter().cloned().collect())
}

impl WebhookStore {
    /// Webhook items kept in `table`.
    pub fn new(table: Table) -> Self {
        Self { table }
    }

    /// An update of a config's item.
    fn update_of(
        &self,
        tenant: &TenantId,
        config: &SyncConfigId,
        entity: Entity,
    ) -> aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder {
        self.table
            .client()
            .update_item()
            .table_name(self.table.name())
            .set_key(Some(Self::key(tenant, config, entity)))
    }

    fn key(
        tenant: &TenantId,
        config: &SyncConfigId,
        entity: Entity,
    ) -> HashMap<String, AttributeValue> {
        let (pk, sk) = keys::webhook_changes(tenant, config, entity);
        HashMap::from([
            ("pk".to_owned(), AttributeValue::S(pk)),
            ("sk".to_owned(), AttributeValue::S(sk)),
        ])
    }

    /// Adds ids to a config's waiting sets at `now_ms`. True when the caller should
    /// enqueue the pull: nothing waited before, or the pull enqueued for what waited
    /// is overdue.
    pub async fn add(
        &self,
        tenant: &TenantId,
        config: &SyncConfigId,
        entity: Entity,
        changed: &BTreeSet<String>,
        deleted: &BTreeSet<String>,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        if changed.is_empty() && deleted.is_empty() {
            return Ok(false);
        }
        let mut adds = Vec::new();
        let mut values = HashMap::from([
            (":now".to_owned(), AttributeValue::N(now_ms.to_string())),
            (
                ":ttl".to_owned(),
                AttributeValue::N((now_ms / 1000 + ITEM_TTL_SECS).to_string()),
            ),
            (
                ":cap".to_owned(),
                AttributeValue::N(MAX_WAITING.to_string()),
            ),
        ]);
        if !changed.is_empty() {
            adds.push("changed :c");
            values.insert(":c".to_owned(), ss(changed));
        }
        if !deleted.is_empty() {
            adds.push("deleted :d");
            values.insert(":d".to_owned(), ss(deleted));
        }
        let update = format!(
            "SET queued = if_not_exists(queued, :now), #ttl = :ttl ADD {}",
            adds.join(", ")
        );
        let out = self
            .update_of(tenant, config, entity)
            .update_expression(update)
            .condition_expression(
                "(attribute_not_exists(changed) OR size(changed) < :cap) AND \
                 (attribute_not_exists(deleted) OR size(deleted) < :cap)",
            )
            .expression_attribute_names("#ttl", "ttl")
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllOld)
            .send()
            .await
            .map_err(condition_or);
        let old = match out {
            Ok(out) => out.attributes.unwrap_or_default(),
            Err(StoreError::ConditionFailed) => {
                // Too many waiting: the pull reads every change from the checkpoint.
                self.update_of(tenant, config, entity)
                    .update_expression("SET #full = :t")
                    .expression_attribute_names("#full", "full")
                    .expression_attribute_values(":t", AttributeValue::Bool(true))
                    .send()
                    .await
                    .map_err(service)?;
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        let waited = !waiting_of(&old).is_empty();
        // No `queued`: the message for what waits was never sent ([`Self::unmark_queued`]).
        let overdue = num_of(&old, "queued").is_none_or(|q| now_ms - q > REQUEUE_AFTER_MS);
        if waited && overdue {
            self.mark_queued(tenant, config, entity, now_ms).await?;
        }
        Ok(!waited || overdue)
    }

    /// Notes that the pull [`Self::add`] asked for was not enqueued after all (the queue
    /// refused it): the next event enqueues it, whenever it comes.
    pub async fn unmark_queued(
        &self,
        tenant: &TenantId,
        config: &SyncConfigId,
        entity: Entity,
    ) -> Result<(), StoreError> {
        self.set_queued(tenant, config, entity, None).await
    }

    /// Notes that a pull was enqueued for what waits at `now_ms`.
    pub async fn mark_queued(
        &self,
        tenant: &TenantId,
        config: &SyncConfigId,
        entity: Entity,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        self.set_queued(tenant, config, entity, Some(now_ms)).await
    }

    /// Sets (or, with `None`, removes) when a pull was enqueued for what waits; an item
    /// gone meanwhile (its pull took everything) is left gone.
    async fn set_queued(
        &self,
        tenant: &TenantId,
        config: &SyncConfigId,
        entity: Entity,
        at_ms: Option<i64>,
    ) -> Result<(), StoreError> {
        let update = self
            .update_of(tenant, config, entity)
            .condition_expression("attribute_exists(pk)");
        let update = match at_ms {
            Some(at) => update
                .update_expression("SET queued = :now")
                .expression_attribute_values(":now", AttributeValue::N(at.to_string())),
            None => update.update_expression("REMOVE queued"),
        };
        match update.send().await.map_err(condition_or) {
            Ok(_) | Err(StoreError::ConditionFailed) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// What waits (strongly consistent).
    pub async fn waiting(
        &self,
        tenant: &TenantId,
        config: &SyncConfigId,
        entity: Entity,
    ) -> Result<Waiting, StoreError> {
        let out = self
            .table
            .client()
            .get_item()
            .table_name(self.table.name())
            .set_key(Some(Self::key(tenant, config, entity)))
            .consistent_read(true)
            .send()
            .await
            .map_err(service)?;
        Ok(out.item.as_ref().map(waiting_of).unwrap_or_default())
    }

    /// Removes what a pull took; what was added meanwhile stays. Returns what still
    /// waits (the item is deleted when nothing does).
    pub async fn remove(
        &self,
        tenant: &TenantId,
        config: &SyncConfigId,
        entity: Entity,
        taken: &Waiting,
        now_ms: i64,
    ) -> Result<Waiting, StoreError> {
        let mut parts = Vec::new();
        let mut values =
            HashMap::from([(":now".to_owned(), AttributeValue::N(now_ms.to_string()))]);
        if !taken.changed.is_empty() {
            parts.push("changed :c");
            values.insert(":c".to_owned(), ss(&taken.changed));
        }
        if !taken.deleted.is_empty() {
            parts.push("deleted :d");
            values.insert(":d".to_owned(), ss(&taken.deleted));
        }
        let mut update = String::from("SET queued = :now");
        if taken.full {
            update.push_str(" REMOVE #full");
        }
        if !parts.is_empty() {
            update.push_str(" DELETE ");
            update.push_str(&parts.join(", "));
        }
        let mut req = self
            .update_of(tenant, config, entity)
            .update_expression(update)
            .condition_expression("attribute_exists(pk)")
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew);
        if taken.full {
            req = req.expression_attribute_names("#full", "full");
        }
        let left = match req.send().await.map_err(condition_or) {
            Ok(out) => out.attributes.as_ref().map(waiting_of).unwrap_or_default(),
            Err(StoreError::ConditionFailed) => return Ok(Waiting::default()),
            Err(e) => return Err(e),
        };
        if left.is_empty() {
            // Gone only while still empty: an event adding now keeps its ids.
            let deleted = self
                .table
                .client()
                .delete_item()
                .table_name(self.table.name())
                .set_key(Some(Self::key(tenant, config, entity)))
                .condition_expression(
                    "attribute_not_exists(changed) AND attribute_not_exists(deleted) AND attribute_not_exists(#full)",
                )
                .expression_attribute_names("#full", "full")
                .send()
                .await
                .map_err(condition_or);
            match deleted {
                Ok(_) => {}
                Err(StoreError::ConditionFailed) => {
                    return self.waiting(tenant, config, entity).await;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(left)
    }

    /// Forgets a config's waiting ids (paused, deleted, no longer realtime).
    pub async fn clear(
        &self,
        tenant: &TenantId,
        config: &SyncConfigId,
        entity: Entity,
    ) -> Result<(), StoreError> {
        let (pk, sk) = keys::webhook_changes(tenant, config, entity);
        self.table.delete(&pk, &sk, None).await
    }

    /// Takes a webhook request by the digest of its signature for `ttl_secs` past
    /// `now_ms`: false when it was taken before (a replay).
    pub async fn first_sight(
        &self,
        provider: &str,
        digest: &str,
        now_ms: i64,
        ttl_secs: i64,
    ) -> Result<bool, StoreError> {
        let (pk, sk) = keys::webhook_seen(provider, digest);
        let item = HashMap::from([
            ("pk".to_owned(), AttributeValue::S(pk)),
            ("sk".to_owned(), AttributeValue::S(sk)),
            (
                "ttl".to_owned(),
                AttributeValue::N((now_ms / 1000 + ttl_secs).to_string()),
            ),
        ]);
        // A TTL-expired item may linger until DynamoDB removes it: it no longer counts.
        match self
            .table
            .put_if(
                item,
                "attribute_not_exists(pk) OR #ttl < :now",
                Some(("#ttl", "ttl")),
                Some((":now", super::Value::num(now_ms / 1000))),
            )
            .await
        {
            Ok(()) => Ok(true),
            Err(StoreError::ConditionFailed) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives a request [`WebhookStore::first_sight`] took back: its work failed after
    /// the take, so the provider's retry of it is not a replay.
    pub async fn forget(&self, provider: &str, digest: &str) -> Result<(), StoreError> {
        let (pk, sk) = keys::webhook_seen(provider, digest);
        self.table.delete(&pk, &sk, None).await
    }
}

//! Provider webhooks become targeted pulls.
//!
//! A verified event batch names changed and deleted records per provider account and
//! entity. [`enqueue`] finds the connections to that account (the provider-account
//! index), and of their tenants' configs those that pull the entity in realtime; each
//! such config's ids go into its waiting sets ([`WebhookStore`]), and the first ids
//! of a quiet config enqueue one [`HookPull`] on the sync queue. [`pull`] (the sync
//! worker) starts a pull run of exactly the waiting ids — read back from the CRM, so
//! an event says only *which* records to look at, never what they hold, and a forged
//! or stale event can at most cause a read — then removes what it took. A config busy
//! with another run tries again shortly; what arrives meanwhile joins the same pull.
//!
//! Echoes: Conduit's own writes to the CRM come back as events too. Their read-back
//! finds the values the link's base already holds, so the pull writes nothing and
//! pushes nothing back (the run counts them as skipped).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::config::{ConfigStatus, Configs, Frequency, SyncConfig, SyncDirection};
use super::engine::{self, RunRequest, StartError};
use super::message::SyncMessage;
use super::runs::Phase;
use super::schema::Entity;
use crate::app::App;
use crate::domain::{ConnectionId, SyncConfigId, TenantId};
use crate::queue::Publisher;
use crate::store::connections::Connections;
use crate::store::webhooks::{Waiting, WebhookStore};

/// How long a pull whose config is busy waits before it tries again.
pub const BUSY_DELAY: Duration = Duration::from_secs(2);
/// Most ids one targeted pull reads; the rest wait for the next one.
pub const PULL_MAX: usize = 500;

/// A config's webhook changes to pull.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookPull {
    /// The tenant.
    pub tenant: TenantId,
    /// The config.
    pub config_id: SyncConfigId,
    /// The entity.
    pub entity: Entity,
}

/// One account's changes of one entity, as a provider's batch reads.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountChanges {
    /// Records to read again.
    pub changed: BTreeSet<String>,
    /// Records the provider reported deleted.
    pub deleted: BTreeSet<String>,
}

/// What became of a batch's changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Routed {
    /// Connections the batch's accounts matched.
    pub connections: usize,
    /// Realtime configs that got ids.
    pub configs: usize,
    /// Pulls enqueued (the others join a pull already waiting).
    pub pulls_enqueued: usize,
}

fn pulls_in_realtime(c: &SyncConfig, connection: &ConnectionId, entity: Entity) -> bool {
    c.connection_id == *connection
        && c.frequency == Frequency::Realtime
        && c.status == ConfigStatus::Active
        && c.direction.pulls()
        && c.entities.contains(&entity)
}

/// Routes a verified batch's changes (per provider account and entity) to the realtime
/// configs pulling them. `tenant`: only that tenant's connections (a tenant's own app
/// signed the batch). Errors are the store's or the queue's: the caller answers 5xx
/// and the provider sends the batch again (ids already added are simply added again).
pub async fn enqueue(
    app: &App,
    queue: &Publisher,
    provider: &str,
    tenant: Option<&TenantId>,
    changes: &BTreeMap<(String, Entity), AccountChanges>,
    now_ms: i64,
) -> Result<Routed, String> {
    let connections = Connections::new(app.table.clone());
    let store = WebhookStore::new(app.table.clone());
    let configs = Configs::new(app.table.clone());
    let mut routed = Routed::default();
    let mut listed: BTreeMap<TenantId, Vec<SyncConfig>> = BTreeMap::new();
    for ((account, entity), c) in changes {
        let found = connections
            .by_account(provider, account)
            .await
            .map_err(|e| e.to_string())?;
        for (t, connection) in found
            .into_iter()
            .filter(|(t, _)| tenant.is_none_or(|only| only == t))
        {
            routed.connections += 1;
            if !listed.contains_key(&t) {
                let all = configs.list(&t).await.map_err(|e| e.to_string())?;
                listed.insert(t.clone(), all);
            }
            let Some(all) = listed.get(&t) else { continue };
            for config in all
                .iter()
                .filter(|cfg| pulls_in_realtime(cfg, &connection, *entity))
            {
                routed.configs += 1;
                if to_config(&store, queue, config, *entity, c, now_ms).await? {
                    routed.pulls_enqueued += 1;
                }
            }
        }
    }
    Ok(routed)
}

/// Adds one config's changes to what waits for its pull; true when this enqueued the
/// pull.
async fn to_config(
    store: &WebhookStore,
    queue: &Publisher,
    config: &SyncConfig,
    entity: Entity,
    c: &AccountChanges,
    now_ms: i64,
) -> Result<bool, String> {
    let first = store
        .add(
            &config.tenant,
            &config.id,
            entity,
            &c.changed,
            &c.deleted,
            now_ms,
        )
        .await
        .map_err(|e| e.to_string())?;
    if first {
        let message = SyncMessage::Webhook(HookPull {
            tenant: config.tenant.clone(),
            config_id: config.id.clone(),
            entity,
        });
        if let Err(e) = queue.send(&message).await {
            // Nothing is queued for what now waits: the provider's retry (the route
            // answers 503) or the next event enqueues it.
            if let Err(unmark) = store
                .unmark_queued(&config.tenant, &config.id, entity)
                .await
            {
                tracing::error!(error = %unmark, "noting an unsent webhook pull failed");
            }
            return Err(e.to_string());
        }
    }
    Ok(first)
}

/// Routes a verified batch that names its config (the webhooks Conduit created for
/// it): nothing when the config no longer pulls the entity in realtime.
pub async fn enqueue_for_config(
    app: &App,
    queue: &Publisher,
    config: &SyncConfig,
    changes: &BTreeMap<Entity, AccountChanges>,
    now_ms: i64,
) -> Result<Routed, String> {
    let store = WebhookStore::new(app.table.clone());
    let mut routed = Routed {
        connections: 1,
        ..Routed::default()
    };
    for (entity, c) in changes {
        if !pulls_in_realtime(config, &config.connection_id, *entity) {
            continue;
        }
        routed.configs = 1;
        if to_config(&store, queue, config, *entity, c, now_ms).await? {
            routed.pulls_enqueued += 1;
        }
    }
    Ok(routed)
}

/// What a [`HookPull`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pulled {
    /// A run started for this many ids (0: an incremental pull, too many came).
    Started(usize),
    /// The config is busy: tried again shortly.
    Busy,
    /// Nothing to do (nothing waits, or the config no longer pulls in realtime).
    Nothing,
}

/// Starts the targeted pull of what waits for a config (the sync worker).
pub async fn pull(app: &App, queue: &Publisher, h: &HookPull) -> Result<Pulled, String> {
    let store = WebhookStore::new(app.table.clone());
    let config = Configs::new(app.table.clone())
        .get(&h.tenant, &h.config_id)
        .await
        .map_err(|e| e.to_string())?;
    let Some(config) = config.filter(|c| pulls_in_realtime(c, &c.connection_id, h.entity)) else {
        store
            .clear(&h.tenant, &h.config_id, h.entity)
            .await
            .map_err(|e| e.to_string())?;
        return Ok(Pulled::Nothing);
    };
    let waiting = store
        .waiting(&h.tenant, &h.config_id, h.entity)
        .await
        .map_err(|e| e.to_string())?;
    if waiting.is_empty() {
        return Ok(Pulled::Nothing);
    }
    let taken = take(&waiting);
    let mut request = RunRequest {
        direction: Some(SyncDirection::Pull),
        entities: Some(vec![h.entity]),
        trigger: "webhook".into(),
        ..Default::default()
    };
    let count = if taken.full {
        0
    } else {
        let ids: Vec<String> = taken.changed.union(&taken.deleted).cloned().collect();
        request.gone = taken.deleted.iter().cloned().collect();
        let n = ids.len();
        request.only = vec![(Phase::Pull, ids)];
        n
    };
    match engine::start(app, queue, &config, request).await {
        Ok(_) => {}
        Err(StartError::Busy(_)) => {
            again(queue, h, BUSY_DELAY).await?;
            return Ok(Pulled::Busy);
        }
        Err(StartError::Paused) => {
            store
                .clear(&h.tenant, &h.config_id, h.entity)
                .await
                .map_err(|e| e.to_string())?;
            return Ok(Pulled::Nothing);
        }
        Err(e) => return Err(format!("{e:?}")),
    }
    let now_ms = crate::domain::now().unix_timestamp_nanos() as i64 / 1_000_000;
    let left = store
        .remove(&h.tenant, &h.config_id, h.entity, &taken, now_ms)
        .await
        .map_err(|e| e.to_string())?;
    if !left.is_empty() {
        // Ids that came while this pull started: the next pull, once this run ends.
        again(queue, h, BUSY_DELAY).await?;
    }
    Ok(Pulled::Started(count))
}

/// Up to [`PULL_MAX`] of what waits (deletions first: they are few and final).
fn take(waiting: &Waiting) -> Waiting {
    if waiting.full {
        return Waiting {
            full: true,
            ..waiting.clone()
        };
    }
    let deleted: BTreeSet<String> = waiting.deleted.iter().take(PULL_MAX).cloned().collect();
    let room = PULL_MAX - deleted.len();
    Waiting {
        changed: waiting.changed.iter().take(room).cloned().collect(),
        deleted,
        full: false,
    }
}

async fn again(queue: &Publisher, h: &HookPull, delay: Duration) -> Result<(), String> {
    queue
        .send_delayed(&SyncMessage::Webhook(h.clone()), delay.as_secs() as i32)
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize, prefix: &str) -> BTreeSet<String> {
        (0..n).map(|i| format!("{prefix}{i:05}")).collect()
    }

    #[test]
    fn a_pull_takes_at_most_its_share_deletions_first() {
        let w = Waiting {
            changed: ids(900, "c"),
            deleted: ids(30, "d"),
            full: false,
        };
        let t = take(&w);
        assert_eq!(t.deleted.len(), 30);
        assert_eq!(t.changed.len(), PULL_MAX - 30);
        assert!(t.changed.is_subset(&w.changed));
        let full = take(&Waiting {
            full: true,
            ..Waiting::default()
        });
        assert!(full.full && full.changed.is_empty());
    }
}

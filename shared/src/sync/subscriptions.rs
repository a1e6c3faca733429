//! Webhook subscriptions Conduit creates in the CRM for its realtime configs, where the
//! CRM has a per-account API for them (Pipedrive; see `Dialect::subscribes`).
//!
//! A config that pulls in realtime and is active has one webhook per entity, sending
//! to `{public base}/v1/webhooks/{provider}/{tenant}/{config}` with HTTP basic
//! credentials Conduit made for it (user `conduit`, a random 256-bit password, sealed
//! for the tenant). Pausing it, making it pull on a schedule, or deleting it removes
//! them; adding an entity adds one. The registration (`T#{tenant}` /
//! `HOOKREG#{config}`) is saved after every webhook created, so a failure midway leaves
//! no webhook Conduit does not know of. A failure never fails the config's change: the
//! config still pulls every minute, and the next change of the config tries again.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::config::{ConfigStatus, Frequency, SyncConfig};
use super::crm::{CrmClient, CrmKind};
use super::schema::Entity;
use crate::app::App;
use crate::crypto::{SealContext, Sealed};
use crate::domain::{ConnectionId, SyncConfigId, TenantId};
use crate::store::{Keyed, StoreError, keys};

/// The basic-auth user of every webhook Conduit creates.
pub const USER: &str = "conduit";

/// A config's webhooks in its CRM.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registration {
    /// The tenant.
    pub tenant: TenantId,
    /// The config.
    pub config_id: SyncConfigId,
    /// Its connection when the webhooks were made.
    pub connection_id: ConnectionId,
    /// The provider.
    pub provider: String,
    /// Webhook id per entity.
    pub hooks: BTreeMap<Entity, String>,
    /// The basic-auth password, sealed for the tenant.
    pub password: Sealed,
    /// When the first webhook was made.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
}

/// Where a registration's password is bound.
pub fn seal_context(tenant: &TenantId, config: &SyncConfigId) -> SealContext {
    SealContext::new(tenant, format!("webhook/{config}"))
}

fn key(tenant: &TenantId, config: &SyncConfigId) -> (String, String) {
    (keys::tenant(tenant), keys::webhook_registration(config))
}

/// A config's registration, if it has one.
pub async fn registration(
    app: &App,
    tenant: &TenantId,
    config: &SyncConfigId,
) -> Result<Option<Registration>, StoreError> {
    let (pk, sk) = key(tenant, config);
    let item: Option<Keyed<Registration>> = app.table.get(&pk, &sk).await?;
    Ok(item
        .map(|k| k.item)
        .filter(|r| r.tenant == *tenant && r.config_id == *config))
}

async fn save(app: &App, r: &Registration) -> Result<(), StoreError> {
    let (pk, sk) = key(&r.tenant, &r.config_id);
    app.table.put(&Keyed { pk, sk, item: r }).await
}

async fn remove(app: &App, tenant: &TenantId, config: &SyncConfigId) -> Result<(), StoreError> {
    let (pk, sk) = key(tenant, config);
    app.table.delete(&pk, &sk, None).await
}

/// Whether `config` should have webhooks (when its CRM takes them).
pub fn wanted(config: &SyncConfig) -> bool {
    config.frequency == Frequency::Realtime
        && config.status == ConfigStatus::Active
        && config.direction.pulls()
}

/// What [`reconcile`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Reconciled {
    /// Webhooks created.
    pub created: usize,
    /// Webhooks removed.
    pub removed: usize,
}

/// Brings a config's webhooks in step with it (`gone`: the config is being deleted).
/// The caller logs or audits a failure; the config itself stands either way.
pub async fn reconcile(
    app: &App,
    config: &SyncConfig,
    gone: bool,
    actor: &str,
    request_id: &str,
) -> Result<Reconciled, String> {
    let Some(kind) = CrmKind::of(&config.provider) else {
        return Ok(Reconciled::default());
    };
    let existing = registration(app, &config.tenant, &config.id)
        .await
        .map_err(|e| e.to_string())?;
    let want = !gone && wanted(config);
    let mut done = Reconciled::default();
    if existing.is_none() && !want {
        return Ok(done);
    }
    let mut client = CrmClient::new(
        app,
        kind,
        config.tenant.clone(),
        config.connection_id.clone(),
        actor,
        request_id,
    )
    .map_err(|e| e.to_string())?;
    if !client.subscribes() {
        return Ok(done);
    }
    let mut reg = match existing {
        Some(r) => r,
        None => {
            let mut raw = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut raw);
            let password = URL_SAFE_NO_PAD.encode(raw);
            Registration {
                tenant: config.tenant.clone(),
                config_id: config.id.clone(),
                connection_id: config.connection_id.clone(),
                provider: config.provider.clone(),
                hooks: BTreeMap::new(),
                password: app
                    .envelope
                    .seal(
                        &seal_context(&config.tenant, &config.id),
                        password.as_bytes(),
                    )
                    .await
                    .map_err(|e| e.to_string())?,
                created_at: crate::domain::now(),
            }
        }
    };
    // Webhooks no longer wanted (or of another connection) go first.
    let keep = |e: &Entity| {
        want && config.entities.contains(e) && reg.connection_id == config.connection_id
    };
    let stale: Vec<(Entity, String)> = reg
        .hooks
        .iter()
        .filter(|(e, _)| !keep(e))
        .map(|(e, id)| (*e, id.clone()))
        .collect();
    for (entity, id) in stale {
        client.unsubscribe(&id).await.map_err(|e| e.to_string())?;
        reg.hooks.remove(&entity);
        done.removed += 1;
        save(app, &reg).await.map_err(|e| e.to_string())?;
    }
    if !want {
        remove(app, &config.tenant, &config.id)
            .await
            .map_err(|e| e.to_string())?;
        return Ok(done);
    }
    reg.connection_id = config.connection_id.clone();
    let missing: Vec<Entity> = config
        .entities
        .iter()
        .filter(|e| !reg.hooks.contains_key(e))
        .copied()
        .collect();
    if missing.is_empty() {
        return Ok(done);
    }
    let base = app
        .config
        .public_base_url
        .as_ref()
        .ok_or("CONDUIT_PUBLIC_BASE_URL is not set")?;
    let url = format!(
        "{}/v1/webhooks/{}/{}/{}",
        base.as_str().trim_end_matches('/'),
        config.provider,
        config.tenant,
        config.id
    );
    let password = app
        .envelope
        .open(&seal_context(&config.tenant, &config.id), &reg.password)
        .await
        .map_err(|e| e.to_string())?;
    let password = String::from_utf8(password.to_vec()).map_err(|e| e.to_string())?;
    for entity in missing {
        let id = client
            .subscribe(entity, &url, (USER, &password))
            .await
            .map_err(|e| e.to_string())?;
        reg.hooks.insert(entity, id);
        done.created += 1;
        save(app, &reg).await.map_err(|e| e.to_string())?;
    }
    Ok(done)
}

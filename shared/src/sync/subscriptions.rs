//! Webhook subscriptions Conduit creates in the CRM for its realtime configs, where the
//! CRM has a per-account API for them (Pipedrive's webhooks, Zoho's notification
//! channels; see `Dialect::subscribes`).
//!
//! A config that pulls in realtime and is active has one webhook per entity, sending
//! to `{public base}/v1/webhooks/{provider}/{tenant}/{config}` with HTTP basic
//! credentials Conduit made for it (user `conduit`, a random 256-bit password, sealed
//! for the tenant). Pausing it, making it pull on a schedule, or deleting it removes
//! them; adding an entity adds one. The registration (`T#{tenant}` /
//! `HOOKREG#{config}`) is saved after every webhook created, so a failure midway leaves
//! no webhook Conduit does not know of. A failure never fails the config's change: the
//! config still pulls every minute, and the next change of the config tries again.
//!
//! The config's every-minute scheduled run keeps them up ([`maintain`]): webhooks the
//! CRM lost (removed by hand in Pipedrive) are made again, and subscriptions that
//! expire (Zoho's channels live at most a week) are renewed once less than
//! [`RENEW_MARGIN`] of their life is left. Zoho's channel `token`, Dynamics 365's
//! header secret and Salesforce's URL key are the same sealed password.
//!
//! What the CRM's admin makes by hand ([`ByHand`]: Salesforce's outbound messages
//! always, Dynamics 365's endpoint when the connection's user may not register it) is
//! pointed at what [`admin_endpoint`] shows; its key outlives a pause, and a hook made
//! by hand ([`BY_HAND`]) is neither checked nor removed by Conduit.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::config::{ConfigStatus, Frequency, SyncConfig};
use super::crm::{ByHand, CrmClient, CrmError, CrmKind};
use super::schema::Entity;
use crate::app::App;
use crate::crypto::{SealContext, Sealed};
use crate::domain::{ConnectionId, SyncConfigId, TenantId};
use crate::store::{Keyed, StoreError, keys};

/// The basic-auth user of every webhook Conduit creates.
pub const USER: &str = "conduit";

/// The hook id of an entity whose subscription the CRM's admin makes by hand because
/// the connection's user may not ([`ByHand::WhenRefused`]): Conduit neither removes
/// nor checks it; the route takes what it sends.
pub const BY_HAND: &str = "by-hand";

/// How long before its expiry a subscription is renewed: a day, so a day of failed
/// renewals (the CRM down, a revoked grant) still leaves time.
pub const RENEW_MARGIN: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

fn ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
}

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
    /// The basic-auth password (Zoho: the channel token), sealed for the tenant.
    pub password: Sealed,
    /// When each expiring subscription expires (Unix ms; none for those that do not).
    #[serde(default)]
    pub expires: BTreeMap<Entity, i64>,
    /// When the CRM was last asked which of them it still has (Unix ms; 0: never).
    #[serde(default)]
    pub checked_at: i64,
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
    let mut client = client(app, kind, config, actor, request_id)?;
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
                expires: BTreeMap::new(),
                checked_at: 0,
            }
        }
    };
    // What the CRM's admin set up by hand keeps its key while the config is paused or
    // pulls on a schedule: its messages are acknowledged and ignored (no entity is
    // hooked), and what the admin entered works again on resume. Only deleting the
    // config forgets it.
    let sticky = match client.by_hand() {
        ByHand::Always => true,
        ByHand::WhenRefused { .. } => reg.hooks.values().any(|id| id == BY_HAND),
        ByHand::Never => false,
    };
    // Webhooks no longer wanted (or of another connection) go first.
    // (A hook made by hand stays through a pause too: the admin's registration is
    // still there.)
    let keep = |e: &Entity, id: &str| {
        (want || (!gone && id == BY_HAND))
            && config.entities.contains(e)
            && reg.connection_id == config.connection_id
    };
    let stale: Vec<(Entity, String)> = reg
        .hooks
        .iter()
        .filter(|(e, id)| !keep(e, id))
        .map(|(e, id)| (*e, id.clone()))
        .collect();
    for (entity, id) in stale {
        if id != BY_HAND {
            client.unsubscribe(&id).await.map_err(|e| e.to_string())?;
        }
        reg.hooks.remove(&entity);
        reg.expires.remove(&entity);
        done.removed += 1;
        save(app, &reg).await.map_err(|e| e.to_string())?;
    }
    if !want {
        if !gone && sticky {
            save(app, &reg).await.map_err(|e| e.to_string())?;
        } else {
            remove(app, &config.tenant, &config.id)
                .await
                .map_err(|e| e.to_string())?;
        }
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
    let url = hook_url(app, config)?;
    let password = password(app, &reg).await?;
    let lifetime = client.subscription_lifetime();
    for (i, &entity) in missing.iter().enumerate() {
        let at = now_ms();
        let id = match client.subscribe(entity, &url, (USER, &password)).await {
            Ok(id) => id,
            Err(e @ CrmError::ScopesMissing(_))
                if matches!(client.by_hand(), ByHand::WhenRefused { .. }) =>
            {
                // The connection's user may not: the admin registers them by hand
                // with what the config's webhook endpoint shows; the config pulls
                // every minute meanwhile.
                for e in &missing[i..] {
                    reg.hooks.insert(*e, BY_HAND.to_owned());
                }
                save(app, &reg).await.map_err(|e| e.to_string())?;
                return Err(format!(
                    "{e}; the CRM's admin can register the webhook by hand with what \
                     GET /v1/sync/configs/{}/webhook-endpoint shows",
                    config.id
                ));
            }
            Err(e) => return Err(e.to_string()),
        };
        reg.hooks.insert(entity, id);
        if let Some(l) = lifetime {
            reg.expires.insert(entity, at + ms(l));
        }
        done.created += 1;
        save(app, &reg).await.map_err(|e| e.to_string())?;
    }
    Ok(done)
}

/// A client of the config's connection.
fn client<'a>(
    app: &'a App,
    kind: CrmKind,
    config: &SyncConfig,
    actor: &'a str,
    request_id: &str,
) -> Result<CrmClient<'a>, String> {
    CrmClient::new(
        app,
        kind,
        config.tenant.clone(),
        config.connection_id.clone(),
        actor,
        request_id,
    )
    .map_err(|e| e.to_string())
}

/// Where a config's webhooks send: `{public base}/v1/webhooks/{provider}/{tenant}/{config}`.
fn hook_url(app: &App, config: &SyncConfig) -> Result<String, String> {
    let base = app
        .config
        .public_base_url
        .as_ref()
        .ok_or("CONDUIT_PUBLIC_BASE_URL is not set")?;
    Ok(format!(
        "{}/v1/webhooks/{}/{}/{}",
        base.as_str().trim_end_matches('/'),
        config.provider,
        config.tenant,
        config.id
    ))
}

/// Where the CRM's admin points what Conduit does not create itself (see
/// [`admin_endpoint`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminEndpoint {
    /// The config's route (Salesforce: with the key as its last segment).
    pub url: String,
    /// The header to send and its value, the key (Dynamics 365).
    pub header: Option<(&'static str, String)>,
}

/// Where the CRM's admin points what Conduit cannot create itself: Salesforce's
/// outbound messages (the config's route with its key), or Dynamics 365's endpoint when
/// the connection's user may not register it (the route, and the key as the header's
/// value). `None` when the config has no such registration. The key is a secret: only
/// admins are shown it.
pub async fn admin_endpoint(
    app: &App,
    config: &SyncConfig,
) -> Result<Option<AdminEndpoint>, String> {
    let Some(kind) = CrmKind::of(&config.provider) else {
        return Ok(None);
    };
    let Some(reg) = registration(app, &config.tenant, &config.id)
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(None);
    };
    let url = hook_url(app, config)?;
    match kind.by_hand() {
        ByHand::Always => {
            let key = password(app, &reg).await?;
            Ok(Some(AdminEndpoint {
                url: format!("{url}/{key}"),
                header: None,
            }))
        }
        ByHand::WhenRefused { header } if reg.hooks.values().any(|id| id == BY_HAND) => {
            let key = password(app, &reg).await?;
            Ok(Some(AdminEndpoint {
                url,
                header: Some((header, key)),
            }))
        }
        _ => Ok(None),
    }
}

/// A registration's password (Zoho: channel token), opened.
pub async fn password(app: &App, reg: &Registration) -> Result<String, String> {
    let password = app
        .envelope
        .open(&seal_context(&reg.tenant, &reg.config_id), &reg.password)
        .await
        .map_err(|e| e.to_string())?;
    String::from_utf8(password.to_vec()).map_err(|e| e.to_string())
}

/// The entities whose subscriptions expire within [`RENEW_MARGIN`] of `now_ms`.
fn due(reg: &Registration, now_ms: i64) -> Vec<(Entity, String)> {
    reg.hooks
        .iter()
        .filter(|(e, _)| {
            reg.expires
                .get(e)
                .is_some_and(|at| *at - now_ms < ms(RENEW_MARGIN))
        })
        .map(|(e, id)| (*e, id.clone()))
        .collect()
}

/// Removes from the CRM the webhooks of every config of a connection about to be
/// deleted (while its grant still works); answers how many. Each config's failure is
/// logged and the others go on: the connection's deletion stands either way.
pub async fn release_connection(
    app: &App,
    tenant: &TenantId,
    connection: &ConnectionId,
    actor: &str,
    request_id: &str,
) -> Result<usize, String> {
    let configs = super::config::Configs::new(app.table.clone())
        .list(tenant)
        .await
        .map_err(|e| e.to_string())?;
    let mut removed = 0;
    for config in configs.iter().filter(|c| c.connection_id == *connection) {
        match reconcile(app, config, true, actor, request_id).await {
            Ok(done) => removed += done.removed,
            Err(e) => {
                tracing::warn!(config = %config.id, error = %e, "removing a config's webhooks with its connection failed")
            }
        }
    }
    Ok(removed)
}

/// How often the every-minute run asks the CRM whether the config's webhooks are still
/// there.
pub const HEAL_EVERY: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// What [`maintain`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Maintained {
    /// Webhooks made again after the CRM lost them.
    pub healed: usize,
    /// Subscriptions renewed before their expiry.
    pub renewed: usize,
}

/// The config's every-minute upkeep of its webhooks: those the CRM no longer has (an
/// admin removed them by hand) are made again, at most every [`HEAL_EVERY`], where the
/// CRM lists them; those near their expiry are renewed ([`renew_due`]).
pub async fn maintain(
    app: &App,
    config: &SyncConfig,
    actor: &str,
    request_id: &str,
) -> Result<Maintained, String> {
    Ok(Maintained {
        healed: heal(app, config, actor, request_id).await?,
        renewed: renew_due(app, config, actor, request_id).await?,
    })
}

/// The CRM and registration of a config that should have webhooks and has them, made
/// through its current connection (anything else is [`reconcile`]'s to settle).
async fn held(app: &App, config: &SyncConfig) -> Result<Option<(CrmKind, Registration)>, String> {
    if !wanted(config) {
        return Ok(None);
    }
    let Some(kind) = CrmKind::of(&config.provider) else {
        return Ok(None);
    };
    let reg = registration(app, &config.tenant, &config.id)
        .await
        .map_err(|e| e.to_string())?;
    Ok(reg
        .filter(|r| r.connection_id == config.connection_id)
        .map(|r| (kind, r)))
}

async fn heal(
    app: &App,
    config: &SyncConfig,
    actor: &str,
    request_id: &str,
) -> Result<usize, String> {
    let Some((kind, mut reg)) = held(app, config).await? else {
        return Ok(0);
    };
    let now = now_ms();
    if now - reg.checked_at < ms(HEAL_EVERY) {
        return Ok(0);
    }
    let mut client = client(app, kind, config, actor, request_id)?;
    let Some(live) = client
        .live_subscriptions()
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(0);
    };
    reg.checked_at = now;
    let lost: Vec<Entity> = reg
        .hooks
        .iter()
        .filter(|(_, id)| *id != BY_HAND && !live.contains(*id))
        .map(|(e, _)| *e)
        .collect();
    for e in &lost {
        reg.hooks.remove(e);
        reg.expires.remove(e);
    }
    save(app, &reg).await.map_err(|e| e.to_string())?;
    if lost.is_empty() {
        return Ok(0);
    }
    Ok(reconcile(app, config, false, actor, request_id)
        .await?
        .created)
}

/// Renews the config's subscriptions that expire within [`RENEW_MARGIN`] (the config's
/// every-minute scheduled run calls it); answers how many. A config that should have
/// none is left to [`reconcile`].
pub async fn renew_due(
    app: &App,
    config: &SyncConfig,
    actor: &str,
    request_id: &str,
) -> Result<usize, String> {
    let Some((kind, mut reg)) = held(app, config).await? else {
        return Ok(0);
    };
    let due = due(&reg, now_ms());
    if due.is_empty() {
        return Ok(0);
    }
    let mut client = client(app, kind, config, actor, request_id)?;
    let Some(lifetime) = client.subscription_lifetime() else {
        return Ok(0);
    };
    let url = hook_url(app, config)?;
    let password = password(app, &reg).await?;
    let mut renewed = 0;
    for (entity, id) in due {
        let at = now_ms();
        client
            .renew(entity, &id, &url, (USER, &password))
            .await
            .map_err(|e| e.to_string())?;
        reg.expires.insert(entity, at + ms(lifetime));
        renewed += 1;
        save(app, &reg).await.map_err(|e| e.to_string())?;
    }
    Ok(renewed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_subscriptions_near_their_expiry_are_due() {
        let now = 1_700_000_000_000;
        let reg = Registration {
            tenant: TenantId::parse("acme").unwrap(),
            config_id: SyncConfigId::generate(),
            connection_id: ConnectionId::generate(),
            provider: "zoho".into(),
            hooks: [
                (Entity::Contacts, "1".to_owned()),
                (Entity::Companies, "2".to_owned()),
            ]
            .into(),
            password: Sealed {
                v: 1,
                edk: String::new(),
                nonce: String::new(),
                ct: String::new(),
            },
            expires: [(Entity::Contacts, now + ms(RENEW_MARGIN) - 1)].into(),
            checked_at: 0,
            created_at: OffsetDateTime::UNIX_EPOCH,
        };
        assert_eq!(due(&reg, now), vec![(Entity::Contacts, "1".to_owned())]);
        assert!(due(&reg, now - 10).is_empty());
    }
}

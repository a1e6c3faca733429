//! Realtime configs push an app change as it happens: a write through the records API
//! starts a push run of every active realtime config of the tenant that pushes the
//! record's entity. The run walks the change feed from its checkpoint, so it carries
//! every change made since the last push.
//!
//! A write made while a run holds the config asks that run for a follow-up: the first
//! such write puts one delayed [`FollowUp`] on the sync queue (later ones see it asked
//! for), and the worker starts the push when it comes due — again asking the run then
//! in progress, if any. So a burst of writes costs one extra run, not one each. The
//! config's every-minute schedule also pulls.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::config::{ConfigStatus, Configs, Frequency, SyncConfig, SyncDirection};
use super::engine::{self, RunRequest, StartError};
use super::message::SyncMessage;
use super::runs::Runs;
use super::schema::Entity;
use crate::app::App;
use crate::domain::{JobId, SyncConfigId, TenantId};
use crate::queue::Publisher;

/// How long a follow-up waits on the queue before it tries again.
pub const FOLLOW_UP_DELAY: Duration = Duration::from_secs(2);

/// A push to start once the run in progress has finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowUp {
    /// The tenant.
    pub tenant: TenantId,
    /// The config.
    pub config_id: SyncConfigId,
    /// The entity changed.
    pub entity: Entity,
}

/// What became of one config's push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pushed {
    /// A run started.
    Started(JobId),
    /// The run in progress follows up.
    FollowUp,
    /// Nothing to do (paused, deleted, no longer realtime).
    Nothing,
}

fn realtime_push(c: &SyncConfig, entity: Entity) -> bool {
    c.frequency == Frequency::Realtime
        && c.status == ConfigStatus::Active
        && c.direction.pushes()
        && c.entities.contains(&entity)
}

/// Starts the pushes an app change to `entity` calls for — of every realtime config
/// but `except` (the config whose pull made the change: its CRM has it). Never fails
/// the write that called it: problems are logged.
pub async fn push_change(
    app: &App,
    queue: &Publisher,
    tenant: &TenantId,
    entity: Entity,
    except: Option<&SyncConfigId>,
) -> Vec<Pushed> {
    let configs = match Configs::new(app.table.clone()).list(tenant).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "realtime push: reading the sync configs failed");
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for config in configs
        .iter()
        .filter(|c| realtime_push(c, entity) && Some(&c.id) != except)
    {
        match push(app, queue, config, entity).await {
            Ok(p) => out.push(p),
            Err(e) => tracing::error!(config = %config.id, error = %e, "realtime push failed"),
        }
    }
    out
}

/// A follow-up came due: push now, or ask the run in progress to follow up.
pub async fn follow_up(app: &App, queue: &Publisher, f: &FollowUp) -> Result<Pushed, String> {
    let config = Configs::new(app.table.clone())
        .get(&f.tenant, &f.config_id)
        .await
        .map_err(|e| e.to_string())?;
    match config {
        Some(c) if realtime_push(&c, f.entity) => push(app, queue, &c, f.entity).await,
        _ => Ok(Pushed::Nothing),
    }
}

async fn push(
    app: &App,
    queue: &Publisher,
    config: &SyncConfig,
    entity: Entity,
) -> Result<Pushed, String> {
    let runs = Runs::new(app.table.clone());
    // A run may end between a refused start and the follow-up request: try again.
    for _ in 0..3 {
        let request = RunRequest {
            direction: Some(SyncDirection::Push),
            entities: Some(vec![entity]),
            trigger: "realtime".into(),
            only: Vec::new(),
            gone: Vec::new(),
        };
        match engine::start(app, queue, config, request).await {
            Ok(run) => return Ok(Pushed::Started(run.job_id)),
            Err(StartError::Paused) => return Ok(Pushed::Nothing),
            Err(StartError::Busy(_)) => {}
            Err(e) => return Err(format!("{e:?}")),
        }
        match runs
            .ask_followup(&config.tenant, &config.id)
            .await
            .map_err(|e| e.to_string())?
        {
            Some(true) => {
                let message = SyncMessage::Realtime(FollowUp {
                    tenant: config.tenant.clone(),
                    config_id: config.id.clone(),
                    entity,
                });
                queue
                    .send_delayed(&message, FOLLOW_UP_DELAY.as_secs() as i32)
                    .await
                    .map_err(|e| e.to_string())?;
                return Ok(Pushed::FollowUp);
            }
            Some(false) => return Ok(Pushed::FollowUp),
            None => continue,
        }
    }
    Ok(Pushed::FollowUp)
}

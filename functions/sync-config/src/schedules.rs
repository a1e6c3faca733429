//! One EventBridge Scheduler schedule per sync config that runs by itself: named after
//! the config id, in the sync schedule group, invoking the sync trigger with the
//! config as its input; enabled while the config is active, disabled while it is
//! paused; absent for manual configs.
//!
//! Every change is an upsert or a delete that tolerates a missing schedule, so a
//! change interrupted half-way (or a schedule removed by hand) is healed by the next
//! change of the config.

use aws_sdk_scheduler::Client;
use aws_sdk_scheduler::error::ProvideErrorMetadata;
use aws_sdk_scheduler::types::{
    DeadLetterConfig, FlexibleTimeWindow, FlexibleTimeWindowMode, RetryPolicy, ScheduleState,
    Target,
};
use conduit::sync::config::{ConfigStatus, SyncConfig};
use serde_json::json;

use crate::settings::Settings;

/// The source name the trigger sees in a scheduled run's input.
pub const SOURCE: &str = "conduit.schedule";

/// A schedule change failed.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// A setting the schedule needs is missing.
    #[error("setting {0} is not configured")]
    NotConfigured(&'static str),
    /// EventBridge Scheduler failed.
    #[error("scheduler: {0}")]
    Service(String),
}

/// The schedule of a config.
pub fn name(c: &SyncConfig) -> String {
    c.id.to_string()
}

/// What the schedule passes to the sync trigger.
pub fn input(c: &SyncConfig) -> String {
    json!({
        "source": SOURCE,
        "tenant": c.tenant.as_str(),
        "config_id": c.id.as_str(),
    })
    .to_string()
}

/// The schedule's state for the config's status.
pub fn state(c: &SyncConfig) -> ScheduleState {
    match c.status {
        ConfigStatus::Active => ScheduleState::Enabled,
        ConfigStatus::Paused => ScheduleState::Disabled,
    }
}

fn service_error<E: ProvideErrorMetadata>(what: &str, e: &E) -> ScheduleError {
    ScheduleError::Service(format!(
        "{what}: {} {}",
        e.code().unwrap_or("error"),
        e.message().unwrap_or_default()
    ))
}

/// The schedules of sync configs.
pub struct Schedules<'a> {
    client: &'a Client,
    settings: &'a Settings,
}

impl<'a> Schedules<'a> {
    /// Schedules through `client`, placed as `settings` say.
    pub fn new(client: &'a Client, settings: &'a Settings) -> Self {
        Self { client, settings }
    }

    /// Makes the config's schedule match it: created or updated when it runs by
    /// itself (expression, state), deleted when it is manual.
    pub async fn apply(&self, c: &SyncConfig) -> Result<(), ScheduleError> {
        let Some(expression) = c.frequency.schedule_expression() else {
            return self.remove(c).await;
        };
        let t = self
            .settings
            .target()
            .map_err(ScheduleError::NotConfigured)?;
        let target = Target::builder()
            .arn(t.trigger_arn)
            .role_arn(t.role_arn)
            .input(input(c))
            // A missed run is superseded by the next one; keep retries short.
            .retry_policy(
                RetryPolicy::builder()
                    .maximum_retry_attempts(3)
                    .maximum_event_age_in_seconds(900)
                    .build(),
            )
            // What could not be delivered after those retries is kept, not dropped.
            .dead_letter_config(DeadLetterConfig::builder().arn(t.dead_letter_arn).build())
            .build()
            .map_err(|e| ScheduleError::Service(e.to_string()))?;
        let window = FlexibleTimeWindow::builder()
            .mode(FlexibleTimeWindowMode::Off)
            .build()
            .map_err(|e| ScheduleError::Service(e.to_string()))?;
        let description = format!("Conduit sync config {} of tenant {}", c.id, c.tenant);
        let name = name(c);
        for _ in 0..2 {
            let updated = self
                .client
                .update_schedule()
                .name(&name)
                .group_name(t.group)
                .schedule_expression(&expression)
                .schedule_expression_timezone("UTC")
                .flexible_time_window(window.clone())
                .target(target.clone())
                .state(state(c))
                .description(&description)
                .send()
                .await;
            match updated {
                Ok(_) => return Ok(()),
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|e| e.is_resource_not_found_exception()) => {}
                Err(e) => return Err(service_error("UpdateSchedule", &e)),
            }
            let created = self
                .client
                .create_schedule()
                .name(&name)
                .group_name(t.group)
                .schedule_expression(&expression)
                .schedule_expression_timezone("UTC")
                .flexible_time_window(window.clone())
                .target(target.clone())
                .state(state(c))
                .description(&description)
                .send()
                .await;
            match created {
                Ok(_) => return Ok(()),
                // Created concurrently: update it to this config's state.
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|e| e.is_conflict_exception()) => {}
                Err(e) => return Err(service_error("CreateSchedule", &e)),
            }
        }
        Err(ScheduleError::Service(
            "the schedule changed concurrently".into(),
        ))
    }

    /// Deletes the config's schedule; one that does not exist is fine.
    pub async fn remove(&self, c: &SyncConfig) -> Result<(), ScheduleError> {
        // Without a group there cannot be a schedule to delete.
        let Some(group) = self.settings.schedule_group.as_deref() else {
            return Ok(());
        };
        match self
            .client
            .delete_schedule()
            .name(name(c))
            .group_name(group)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(service_error("DeleteSchedule", &e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use conduit::domain::{ConnectionId, SyncConfigId, TenantId, UserId, now};
    use conduit::sync::config::{Frequency, SyncDirection, SyncOptions};
    use conduit::sync::conflict::Strategy;
    use conduit::sync::schema::Entity;

    fn config() -> SyncConfig {
        SyncConfig {
            id: SyncConfigId::generate(),
            tenant: TenantId::parse("acme").unwrap(),
            connection_id: ConnectionId::generate(),
            provider: "hubspot".into(),
            name: "n".into(),
            direction: SyncDirection::Bidirectional,
            frequency: Frequency::Hourly,
            entities: vec![Entity::Contacts],
            filters: vec![],
            conflict_strategy: Strategy::LastWriteWins,
            options: SyncOptions::default(),
            status: ConfigStatus::Active,
            mappings: vec![],
            schedule_name: None,
            last_job: None,
            created_at: now(),
            created_by: UserId::parse("u").unwrap(),
            updated_at: now(),
            version: 1,
        }
    }

    #[test]
    fn the_input_names_tenant_and_config() {
        let c = config();
        let v: serde_json::Value = serde_json::from_str(&input(&c)).unwrap();
        assert_eq!(v["source"], SOURCE);
        assert_eq!(v["tenant"], "acme");
        assert_eq!(v["config_id"], c.id.as_str());
        assert_eq!(name(&c), c.id.as_str());
        assert!(name(&c).len() <= 64);
    }

    #[test]
    fn paused_configs_have_disabled_schedules() {
        let mut c = config();
        assert_eq!(state(&c), ScheduleState::Enabled);
        c.status = ConfigStatus::Paused;
        assert_eq!(state(&c), ScheduleState::Disabled);
    }
}

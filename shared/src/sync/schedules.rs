//! One EventBridge Scheduler schedule per sync config that runs by itself: named after
//! the config id, in the sync schedule group, invoking the sync-runs function with the
//! config as its input; enabled while the config is active, disabled while it is
//! paused; absent for manual configs.
//!
//! Every change is an upsert or a delete that tolerates a missing schedule, so a
//! change interrupted half-way (or a schedule removed by hand) is healed by the next
//! change of the config.

pub use crate::schedule::ScheduleError;
use crate::schedule::{Settings, Spec};
use crate::sync::config::{ConfigStatus, SyncConfig};
use aws_sdk_scheduler::Client;
use aws_sdk_scheduler::types::ScheduleState;
use serde_json::json;

pub use crate::schedule::SOURCE;

/// The schedule of a config.
pub fn name(c: &SyncConfig) -> String {
    c.id.to_string()
}

/// What the schedule passes to the sync-runs function.
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

/// The schedules of sync configs.
pub struct Schedules<'a>(crate::schedule::Schedules<'a>);

impl<'a> Schedules<'a> {
    /// Schedules through `client`, placed as `settings` say.
    pub fn new(client: &'a Client, settings: &'a Settings) -> Self {
        Self(crate::schedule::Schedules::new(client, settings))
    }

    /// Makes the config's schedule match it: created or updated when it runs by
    /// itself (expression, state), deleted when it is manual.
    pub async fn apply(&self, c: &SyncConfig) -> Result<(), ScheduleError> {
        let Some(expression) = c.frequency.schedule_expression() else {
            return self.remove(c).await;
        };
        self.0
            .apply(&Spec {
                name: name(c),
                expression,
                enabled: state(c) == ScheduleState::Enabled,
                input: input(c),
                description: format!("Conduit sync config {} of tenant {}", c.id, c.tenant),
            })
            .await
    }

    /// Deletes the config's schedule; one that does not exist is fine.
    pub async fn remove(&self, c: &SyncConfig) -> Result<(), ScheduleError> {
        self.0.remove(&name(c)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{ConnectionId, SyncConfigId, TenantId, UserId, now};
    use crate::sync::config::{Frequency, SyncDirection, SyncOptions};
    use crate::sync::conflict::Strategy;
    use crate::sync::schema::Entity;

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

//! Conduit's own EventBridge Scheduler schedules: a sync config's runs and an
//! integration's knowledge-base imports. Each is one schedule in the sync schedule
//! group, named after what it runs, invoking the sync-runs function with an input
//! that names it (`{"source":"conduit.schedule","tenant",…}`); enabled or disabled with
//! what it runs, absent when that runs only on demand.
//!
//! Where they live and what they invoke are settings read from the function's
//! environment (through [`crate::config::Config::env`], so the dev host's in-process
//! functions get them too). Each is optional: what runs only on demand needs none, and
//! what needs a schedule fails with an internal error naming the missing one.
//!
//! Every change is an upsert or a delete that tolerates a missing schedule, so a
//! change interrupted half-way (or a schedule removed by hand) is healed by the next
//! change of what it runs.

use std::collections::BTreeMap;

use aws_sdk_scheduler::Client;
use aws_sdk_scheduler::error::ProvideErrorMetadata;
use aws_sdk_scheduler::types::{
    DeadLetterConfig, FlexibleTimeWindow, FlexibleTimeWindowMode, RetryPolicy, ScheduleState,
    Target as SchedulerTarget,
};

use crate::config::ConfigError;

/// The source name the trigger sees in a scheduled run's input.
pub const SOURCE: &str = "conduit.schedule";

/// `CONDUIT_SYNC_SCHEDULE_GROUP`: the schedule group of the sync schedules.
pub const SCHEDULE_GROUP: &str = "CONDUIT_SYNC_SCHEDULE_GROUP";
/// `CONDUIT_SYNC_SCHEDULER_ROLE_ARN`: the role the schedules invoke the trigger as.
pub const SCHEDULER_ROLE_ARN: &str = "CONDUIT_SYNC_SCHEDULER_ROLE_ARN";
/// `CONDUIT_SYNC_RUNS_ARN`: the sync-runs function the schedules invoke.
pub const TRIGGER_ARN: &str = "CONDUIT_SYNC_RUNS_ARN";
/// `CONDUIT_SYNC_SCHEDULE_DLQ_ARN`: the SQS queue a schedule sends an event it could
/// not deliver to.
pub const DEAD_LETTER_ARN: &str = "CONDUIT_SYNC_SCHEDULE_DLQ_ARN";

/// The schedule settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// The schedule group's name.
    pub schedule_group: Option<String>,
    /// The scheduler role's ARN.
    pub scheduler_role_arn: Option<String>,
    /// The sync-runs function's ARN.
    pub trigger_arn: Option<String>,
    /// The schedules' dead-letter queue's ARN.
    pub dead_letter_arn: Option<String>,
}

/// What a schedule needs, all present.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The schedule group's name.
    pub group: &'a str,
    /// The scheduler role's ARN.
    pub role_arn: &'a str,
    /// The sync-runs function's ARN.
    pub trigger_arn: &'a str,
    /// The dead-letter queue's ARN.
    pub dead_letter_arn: &'a str,
}

impl Settings {
    /// Reads the settings from a function environment; a present but malformed one
    /// is an error naming it.
    pub fn from_env(env: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let get = |name: &'static str| {
            env.get(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let arn = |name: &'static str| -> Result<Option<String>, ConfigError> {
            match get(name) {
                Some(v) if !v.starts_with("arn:") || v.split(':').count() < 6 => {
                    Err(ConfigError::Invalid {
                        name,
                        reason: "expected an ARN".into(),
                    })
                }
                other => Ok(other),
            }
        };
        let schedule_group = get(SCHEDULE_GROUP);
        if let Some(g) = &schedule_group
            && (g.len() > 64
                || !g
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(ConfigError::Invalid {
                name: SCHEDULE_GROUP,
                reason: "expected a schedule group name ([0-9a-zA-Z-_.]{1,64})".into(),
            });
        }
        Ok(Self {
            schedule_group,
            scheduler_role_arn: arn(SCHEDULER_ROLE_ARN)?,
            trigger_arn: arn(TRIGGER_ARN)?,
            dead_letter_arn: arn(DEAD_LETTER_ARN)?,
        })
    }

    /// Everything a schedule needs, or the name of the first missing setting.
    pub fn target(&self) -> Result<Target<'_>, &'static str> {
        Ok(Target {
            group: self.schedule_group.as_deref().ok_or(SCHEDULE_GROUP)?,
            role_arn: self
                .scheduler_role_arn
                .as_deref()
                .ok_or(SCHEDULER_ROLE_ARN)?,
            trigger_arn: self.trigger_arn.as_deref().ok_or(TRIGGER_ARN)?,
            dead_letter_arn: self.dead_letter_arn.as_deref().ok_or(DEAD_LETTER_ARN)?,
        })
    }
}

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

fn service_error<E: ProvideErrorMetadata>(what: &str, e: &E) -> ScheduleError {
    ScheduleError::Service(format!(
        "{what}: {} {}",
        e.code().unwrap_or("error"),
        e.message().unwrap_or_default()
    ))
}

/// One schedule as it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// Its name in the group (at most 64 characters).
    pub name: String,
    /// `rate(…)` or `cron(…)`.
    pub expression: String,
    /// Whether it fires.
    pub enabled: bool,
    /// The trigger's input (JSON).
    pub input: String,
    /// What it is, for people.
    pub description: String,
}

/// The schedules, through a Scheduler client.
pub struct Schedules<'a> {
    client: &'a Client,
    settings: &'a Settings,
}

impl<'a> Schedules<'a> {
    /// Schedules through `client`, placed as `settings` say.
    pub fn new(client: &'a Client, settings: &'a Settings) -> Self {
        Self { client, settings }
    }

    /// Makes the schedule `spec.name` be `spec`: updated, or created if missing.
    pub async fn apply(&self, spec: &Spec) -> Result<(), ScheduleError> {
        let t = self
            .settings
            .target()
            .map_err(ScheduleError::NotConfigured)?;
        let target = SchedulerTarget::builder()
            .arn(t.trigger_arn)
            .role_arn(t.role_arn)
            .input(&spec.input)
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
        let state = if spec.enabled {
            ScheduleState::Enabled
        } else {
            ScheduleState::Disabled
        };
        for _ in 0..2 {
            let updated = self
                .client
                .update_schedule()
                .name(&spec.name)
                .group_name(t.group)
                .schedule_expression(&spec.expression)
                .schedule_expression_timezone("UTC")
                .flexible_time_window(window.clone())
                .target(target.clone())
                .state(state.clone())
                .description(&spec.description)
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
                .name(&spec.name)
                .group_name(t.group)
                .schedule_expression(&spec.expression)
                .schedule_expression_timezone("UTC")
                .flexible_time_window(window.clone())
                .target(target.clone())
                .state(state.clone())
                .description(&spec.description)
                .send()
                .await;
            match created {
                Ok(_) => return Ok(()),
                // Created concurrently: update it to this state.
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

    /// Deletes the schedule `name`; one that does not exist is fine.
    pub async fn remove(&self, name: &str) -> Result<(), ScheduleError> {
        // Without a group there cannot be a schedule to delete.
        let Some(group) = self.settings.schedule_group.as_deref() else {
            return Ok(());
        };
        match self
            .client
            .delete_schedule()
            .name(name)
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

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn reads_them_all() {
        let s = Settings::from_env(&env(&[
            (SCHEDULE_GROUP, "conduit-sync"),
            (SCHEDULER_ROLE_ARN, "arn:aws:iam::123456789012:role/r"),
            (
                TRIGGER_ARN,
                "arn:aws:lambda:eu-west-1:123456789012:function:conduit-sync-runs",
            ),
            (
                DEAD_LETTER_ARN,
                "arn:aws:sqs:eu-west-1:123456789012:conduit-ScheduleDeadLetterQueue",
            ),
        ]))
        .unwrap();
        let t = s.target().unwrap();
        assert_eq!(t.group, "conduit-sync");
        assert!(t.dead_letter_arn.ends_with("ScheduleDeadLetterQueue"));
        assert!(t.trigger_arn.ends_with("sync-runs"));
    }

    #[test]
    fn missing_ones_are_named_when_needed() {
        let s = Settings::from_env(&env(&[(SCHEDULE_GROUP, "g")])).unwrap();
        assert_eq!(s.target().unwrap_err(), SCHEDULER_ROLE_ARN);
        assert_eq!(Settings::default().target().unwrap_err(), SCHEDULE_GROUP);
    }

    #[test]
    fn malformed_ones_are_refused() {
        let e = Settings::from_env(&env(&[(TRIGGER_ARN, "sync-runs")])).unwrap_err();
        assert!(e.to_string().contains(TRIGGER_ARN), "{e}");
        let e = Settings::from_env(&env(&[(SCHEDULE_GROUP, "a b")])).unwrap_err();
        assert!(e.to_string().contains(SCHEDULE_GROUP), "{e}");
    }
}

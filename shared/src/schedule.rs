//! This function's own settings: where the per-config EventBridge Scheduler schedules
//! live and what they invoke. Read from the function's environment (through
//! [`conduit::config::Config::env`], so the dev host's in-process functions get them
//! too). Each is optional: a config that runs only when triggered needs none, and a
//! config that needs a schedule fails with an internal error naming the missing one.

use std::collections::BTreeMap;

use conduit::config::ConfigError;

/// `CONDUIT_SYNC_SCHEDULE_GROUP`: the schedule group of the sync schedules.
pub const SCHEDULE_GROUP: &str = "CONDUIT_SYNC_SCHEDULE_GROUP";
/// `CONDUIT_SYNC_SCHEDULER_ROLE_ARN`: the role the schedules invoke the trigger as.
pub const SCHEDULER_ROLE_ARN: &str = "CONDUIT_SYNC_SCHEDULER_ROLE_ARN";
/// `CONDUIT_SYNC_TRIGGER_ARN`: the sync-trigger function the schedules invoke.
pub const TRIGGER_ARN: &str = "CONDUIT_SYNC_TRIGGER_ARN";
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
    /// The sync-trigger function's ARN.
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
    /// The sync-trigger function's ARN.
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
                "arn:aws:lambda:eu-west-1:123456789012:function:conduit-sync-trigger",
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
        assert!(t.trigger_arn.ends_with("sync-trigger"));
    }

    #[test]
    fn missing_ones_are_named_when_needed() {
        let s = Settings::from_env(&env(&[(SCHEDULE_GROUP, "g")])).unwrap();
        assert_eq!(s.target().unwrap_err(), SCHEDULER_ROLE_ARN);
        assert_eq!(Settings::default().target().unwrap_err(), SCHEDULE_GROUP);
    }

    #[test]
    fn malformed_ones_are_refused() {
        let e = Settings::from_env(&env(&[(TRIGGER_ARN, "sync-trigger")])).unwrap_err();
        assert!(e.to_string().contains(TRIGGER_ARN), "{e}");
        let e = Settings::from_env(&env(&[(SCHEDULE_GROUP, "a b")])).unwrap_err();
        assert!(e.to_string().contains(SCHEDULE_GROUP), "{e}");
    }
}

//! EventBridge Scheduler schedules, fired locally: the schedules the functions create
//! (with `aws-sdk-scheduler`, on moto) in the stack's `AWS::Scheduler::ScheduleGroup`s
//! invoke their Lambda target when they are due, as EventBridge Scheduler would.
//!
//! When schedules run (`LocalEnvOptions::run_schedules`, `devhost up`), the dev host
//! lists the schedules of every schedule group of the stack each second, reads the
//! enabled ones (`GetSchedule`, again only when one changes) and fires each that is
//! due: `rate(…)`, `cron(…)` and `at(…)` as [`crate::cron`] evaluates them, counting
//! from when the schedule was created or the dev host started, whichever is later
//! (nothing missed before is caught up), within `StartDate`/`EndDate`. With
//! `schedule_every`, `rate(…)` schedules fire that often instead. Firing invokes the
//! target's function — found by the target ARN's function name: the function's
//! `FunctionName`, `{StackName}-{binary}` or `{StackName}-{LogicalId}` — with the
//! target's `Input` as the event (its context attributes such as
//! `<aws.scheduler.scheduled-time>` filled in; `{}` without `Input`). A target that is
//! no function of the stack with an event handler is logged as an error. Runs of one
//! schedule never overlap; an `at(…)` schedule with `ActionAfterCompletion: DELETE` is
//! deleted after it fired.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use aws_sdk_scheduler::primitives::DateTime;
use rand::RngCore;
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};
use tokio::sync::{Mutex, watch};
use tokio::task::JoinHandle;

use crate::cron::{SchedulerExpression, fixed_offset};
use crate::invoker::{EventFunction, EventFunctions};
use crate::schedule::summary;
use crate::stack::LocalStack;

/// How often the schedules are listed when they run.
const TICK: Duration = Duration::from_secs(1);
/// How long [`SchedulerRunner::shutdown`] lets firings in progress finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// An EventBridge Scheduler schedule as the dev host sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerSchedule {
    /// The schedule group's name.
    pub group: String,
    /// The schedule's name.
    pub name: String,
    /// Its ARN.
    pub arn: Option<String>,
    /// `ScheduleExpression`, e.g. `rate(1 hour)`.
    pub expression: String,
    /// `ScheduleExpressionTimezone`, if any.
    pub timezone: Option<String>,
    /// `State`: `ENABLED` or `DISABLED` (a schedule without one is enabled).
    pub state: String,
    /// The target's ARN (a Lambda function's, for Conduit).
    pub target_arn: String,
    /// The role the target is invoked as.
    pub role_arn: String,
    /// The target's `Input`, if any.
    pub input: Option<String>,
    /// The logical id of the stack's function the target resolves to, if it does.
    pub function: Option<String>,
    /// `StartDate`.
    pub start_date: Option<OffsetDateTime>,
    /// `EndDate`.
    pub end_date: Option<OffsetDateTime>,
    /// When it was created.
    pub created: Option<OffsetDateTime>,
    /// When it last changed.
    pub modified: Option<OffsetDateTime>,
    /// `ActionAfterCompletion` (`NONE`, `DELETE`), if any.
    pub action_after_completion: Option<String>,
}

impl SchedulerSchedule {
    /// Whether the schedule is enabled.
    pub fn is_enabled(&self) -> bool {
        self.state != "DISABLED"
    }
}

/// What the loop knows of one schedule.
struct Tracked {
    schedule: SchedulerSchedule,
    expression: Result<SchedulerExpression, String>,
    offset: UtcOffset,
    anchor: OffsetDateTime,
    /// Firings up to here have been considered.
    checked_until: OffsetDateTime,
    running: Arc<AtomicBool>,
}

struct Shared {
    client: aws_sdk_scheduler::Client,
    /// The stack's schedule groups: logical id → name.
    groups: BTreeMap<String, String>,
    functions: EventFunctions,
    /// Function names a target ARN may carry → the function's logical id.
    names: BTreeMap<String, String>,
    every: Option<Duration>,
    started: OffsetDateTime,
    tracked: Mutex<HashMap<(String, String), Tracked>>,
    warned: StdMutex<BTreeSet<String>>,
}

/// Lists and fires the stack's Scheduler schedules; cheap to clone.
#[derive(Clone)]
pub struct SchedulerSchedules {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SchedulerSchedules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerSchedules")
            .field("groups", &self.shared.groups)
            .finish()
    }
}

/// The loop firing due schedules; it stops on [`SchedulerRunner::shutdown`] or drop.
pub struct SchedulerRunner {
    schedules: SchedulerSchedules,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for SchedulerRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SchedulerRunner")
            .field("schedules", &self.schedules)
            .field("running", &self.task.is_some())
            .finish()
    }
}

impl SchedulerRunner {
    /// Prepares the stack's schedule groups and, with `run` (and at least one group),
    /// starts the loop that fires due schedules; `every` replaces the period of
    /// `rate(…)` schedules.
    pub fn start(
        stack: &LocalStack,
        functions: &EventFunctions,
        run: bool,
        every: Option<Duration>,
    ) -> Self {
        let mut names = BTreeMap::new();
        for function in functions.iter() {
            let id = &function.logical_id;
            for name in [
                stack.ref_value(id).ok(),
                Some(format!("{}-{}", stack.stack_name(), function.binary)),
                Some(format!("{}-{id}", stack.stack_name())),
            ]
            .into_iter()
            .flatten()
            {
                names.entry(name).or_insert_with(|| id.clone());
            }
        }
        let groups = stack.schedule_groups();
        let schedules = SchedulerSchedules {
            shared: Arc::new(Shared {
                client: aws_sdk_scheduler::Client::new(stack.sdk_config()),
                groups,
                functions: functions.clone(),
                names,
                every: every.map(|e| e.max(Duration::from_secs(1))),
                started: OffsetDateTime::now_utc(),
                tracked: Mutex::new(HashMap::new()),
                warned: StdMutex::new(BTreeSet::new()),
            }),
        };
        let (stop, stopped) = watch::channel(false);
        let groups: Vec<&String> = schedules.shared.groups.values().collect();
        let task = if run && !groups.is_empty() {
            tracing::info!(target: "devhost", groups = ?groups, "EventBridge Scheduler schedules of these groups run locally");
            Some(tokio::spawn(run_loop(schedules.shared.clone(), stopped)))
        } else {
            if !groups.is_empty() {
                tracing::info!(target: "devhost", groups = ?groups, "EventBridge Scheduler schedules are not fired: schedules are off (devhost up runs them)");
            }
            None
        };
        Self {
            schedules,
            stop,
            task,
        }
    }

    /// The handle that lists and fires schedules.
    pub fn schedules(&self) -> SchedulerSchedules {
        self.schedules.clone()
    }

    /// Stops the loop; lets a firing in progress finish (up to 5 s).
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for SchedulerRunner {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn run_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut ticks = tokio::time::interval(TICK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    let mut firings: Vec<JoinHandle<()>> = Vec::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = ticks.tick() => {}
        }
        if *stop.borrow() {
            break;
        }
        firings.retain(|f| !f.is_finished());
        match tick(&shared).await {
            Ok(started) => {
                failing = false;
                firings.extend(started);
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(target: "devhost", error = %format!("{error:#}"), "listing the Scheduler schedules failed; retrying");
                }
                failing = true;
            }
        }
    }
    for mut firing in firings {
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut firing)
            .await
            .is_err()
        {
            firing.abort();
        }
    }
}

/// One look at every schedule: fires those due since the last look.
async fn tick(shared: &Arc<Shared>) -> Result<Vec<JoinHandle<()>>> {
    let listed = shared.list().await?;
    let now = OffsetDateTime::now_utc();
    let mut tracked = shared.tracked.lock().await;
    let keys: BTreeSet<(String, String)> =
        listed.iter().map(|s| (s.0.clone(), s.1.clone())).collect();
    tracked.retain(|key, _| keys.contains(key));
    let mut started = Vec::new();
    for (group, name, modified) in listed {
        let key = (group, name);
        let stale = tracked
            .get(&key)
            .is_none_or(|t| t.schedule.modified != modified || modified.is_none());
        if stale {
            let schedule = match shared.get(&key.0, &key.1).await {
                Ok(schedule) => schedule,
                Err(error) => {
                    // Deleted between the list and the read, most likely.
                    tracing::debug!(target: "devhost", group = %key.0, schedule = %key.1, error = %format!("{error:#}"), "reading a schedule failed");
                    continue;
                }
            };
            let checked_until = match tracked.get(&key) {
                Some(previous) => previous.checked_until,
                None => schedule
                    .created
                    .map_or(shared.started, |c| c.max(shared.started)),
            };
            let entry = shared.track(schedule, checked_until, tracked.get(&key));
            tracked.insert(key.clone(), entry);
        }
        let Some(entry) = tracked.get_mut(&key) else {
            continue;
        };
        let from = entry.checked_until;
        entry.checked_until = now;
        if !entry.schedule.is_enabled() {
            continue;
        }
        let expression = match &entry.expression {
            Ok(expression) => expression,
            Err(error) => {
                shared.warn_once(
                    &format!("expr:{}/{}:{}", key.0, key.1, entry.schedule.expression),
                    || tracing::warn!(target: "devhost", group = %key.0, schedule = %key.1, error = %error, "Scheduler schedule not fired locally: its expression is not understood"),
                );
                continue;
            }
        };
        let Some(at) = due(
            &entry.schedule,
            expression,
            from,
            now,
            entry.anchor,
            entry.offset,
        ) else {
            continue;
        };
        if entry.running.swap(true, Ordering::SeqCst) {
            tracing::info!(target: "devhost", group = %key.0, schedule = %key.1, "Scheduler schedule skipped: its previous run is still going");
            continue;
        }
        let shared = shared.clone();
        let schedule = entry.schedule.clone();
        let running = entry.running.clone();
        let one_time = matches!(expression, SchedulerExpression::At(_));
        started.push(tokio::spawn(async move {
            // The outcome is logged by `fire`.
            let _ = shared.fire(&schedule, at).await;
            running.store(false, Ordering::SeqCst);
            if one_time && schedule.action_after_completion.as_deref() == Some("DELETE") {
                shared.delete_after_completion(&schedule).await;
            }
        }));
    }
    Ok(started)
}

/// The firing of `schedule` in (`from`, `until`], within its start and end dates.
fn due(
    schedule: &SchedulerSchedule,
    expression: &SchedulerExpression,
    from: OffsetDateTime,
    until: OffsetDateTime,
    anchor: OffsetDateTime,
    offset: UtcOffset,
) -> Option<OffsetDateTime> {
    let from = match schedule.start_date {
        Some(start) if start > from => start - time::Duration::nanoseconds(1),
        _ => from,
    };
    let at = expression.due_between(from, until, anchor, offset)?;
    match schedule.end_date {
        Some(end) if at > end => None,
        _ => Some(at),
    }
}

impl Shared {
    fn warn_once(&self, key: &str, warn: impl FnOnce()) {
        let fresh = self
            .warned
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(key.to_owned());
        if fresh {
            warn();
        }
    }

    fn track(
        &self,
        schedule: SchedulerSchedule,
        checked_until: OffsetDateTime,
        previous: Option<&Tracked>,
    ) -> Tracked {
        let mut expression =
            SchedulerExpression::parse(&schedule.expression).map_err(|e| format!("{e:#}"));
        let mut anchor = schedule
            .start_date
            .or(schedule.created)
            .unwrap_or(checked_until);
        if let (Some(every), Ok(SchedulerExpression::Rate(_))) = (self.every, &expression) {
            expression = Ok(SchedulerExpression::Rate(every));
            anchor = previous.map_or(checked_until, |p| p.anchor);
        }
        let offset = match schedule.timezone.as_deref() {
            None => UtcOffset::UTC,
            Some(zone) => fixed_offset(zone).unwrap_or_else(|| {
                self.warn_once(&format!("zone:{zone}"), || {
                    tracing::warn!(target: "devhost", zone, schedule = %schedule.name, "ScheduleExpressionTimezone is not a fixed offset; the local scheduler evaluates it as UTC");
                });
                UtcOffset::UTC
            }),
        };
        Tracked {
            schedule,
            expression,
            offset,
            anchor,
            checked_until,
            running: previous
                .map_or_else(|| Arc::new(AtomicBool::new(false)), |p| p.running.clone()),
        }
    }

    fn group_name<'a>(&'a self, group: &'a str) -> &'a str {
        self.groups.get(group).map_or(group, String::as_str)
    }

    /// (group, name, last modified) of every schedule of the stack's groups.
    async fn list(&self) -> Result<Vec<(String, String, Option<OffsetDateTime>)>> {
        let mut out = Vec::new();
        for group in self.groups.values() {
            let mut token: Option<String> = None;
            loop {
                let page = self
                    .client
                    .list_schedules()
                    .group_name(group)
                    .set_next_token(token.take())
                    .send()
                    .await
                    .map_err(sdk_error)
                    .with_context(|| format!("listing the schedules of group {group}"))?;
                for s in page.schedules() {
                    // moto's filter is the group name; check it all the same.
                    if s.group_name().is_some_and(|g| g != group) {
                        continue;
                    }
                    if let Some(name) = s.name() {
                        out.push((
                            group.clone(),
                            name.to_owned(),
                            s.last_modification_date().and_then(to_time),
                        ));
                    }
                }
                match page.next_token() {
                    Some(next) if !next.is_empty() => token = Some(next.to_owned()),
                    _ => break,
                }
            }
        }
        Ok(out)
    }

    async fn get(&self, group: &str, name: &str) -> Result<SchedulerSchedule> {
        let out = self
            .client
            .get_schedule()
            .group_name(group)
            .name(name)
            .send()
            .await
            .map_err(sdk_error)
            .with_context(|| format!("reading schedule {group}/{name}"))?;
        let target = out
            .target()
            .ok_or_else(|| anyhow!("schedule {group}/{name} has no target"))?;
        let target_arn = target.arn().to_owned();
        Ok(SchedulerSchedule {
            group: out.group_name().unwrap_or(group).to_owned(),
            name: out.name().unwrap_or(name).to_owned(),
            arn: out.arn().map(str::to_owned),
            expression: out.schedule_expression().unwrap_or_default().to_owned(),
            timezone: out.schedule_expression_timezone().map(str::to_owned),
            state: out.state().map_or("ENABLED", |s| s.as_str()).to_owned(),
            function: self.target(&target_arn).ok().map(|f| f.logical_id.clone()),
            target_arn,
            role_arn: target.role_arn().to_owned(),
            input: target.input().map(str::to_owned),
            start_date: out.start_date().and_then(to_time),
            end_date: out.end_date().and_then(to_time),
            created: out.creation_date().and_then(to_time),
            modified: out.last_modification_date().and_then(to_time),
            action_after_completion: out.action_after_completion().map(|a| a.as_str().to_owned()),
        })
    }

    /// The stack's function a target ARN (or name) designates.
    fn target(&self, target: &str) -> Result<Arc<EventFunction>> {
        let name = match target.strip_prefix("arn:") {
            None => target,
            Some(_) => {
                let parts: Vec<&str> = target.split(':').collect();
                match parts.as_slice() {
                    [_, _, "lambda", _, _, "function", name, ..] => *name,
                    _ => bail!("target {target} is not a Lambda function"),
                }
            }
        };
        let id = self.names.get(name).ok_or_else(|| {
            anyhow!(
                "target {target} is no function of the stack with an event handler (known: {})",
                self.names.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        self.functions
            .get(id)
            .ok_or_else(|| anyhow!("function {id} has no event handler"))
    }

    /// Invokes the schedule's target as if it fired at `at`; logs the outcome.
    async fn fire(&self, schedule: &SchedulerSchedule, at: OffsetDateTime) -> Result<Value> {
        let function = match self.target(&schedule.target_arn) {
            Ok(function) => function,
            Err(error) => {
                tracing::error!(target: "devhost", group = %schedule.group, schedule = %schedule.name, error = %format!("{error:#}"), "Scheduler schedule fired, but its target cannot be invoked locally");
                return Err(error);
            }
        };
        let payload = match payload(schedule, at) {
            Ok(payload) => payload,
            Err(error) => {
                tracing::error!(target: "devhost", group = %schedule.group, schedule = %schedule.name, function = %function.logical_id, error = %format!("{error:#}"), "Scheduler schedule fired, but its Input is not JSON");
                return Err(error);
            }
        };
        let started = Instant::now();
        let result = function
            .invoke(payload, crate::trace::TraceHeader::new_root())
            .await
            .into_result(&function.logical_id);
        let ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok(value) => tracing::info!(
                target: "devhost",
                group = %schedule.group,
                schedule = %schedule.name,
                function = %function.logical_id,
                ms,
                result = %summary(value),
                "Scheduler schedule fired"
            ),
            Err(error) => tracing::error!(
                target: "devhost",
                group = %schedule.group,
                schedule = %schedule.name,
                function = %function.logical_id,
                ms,
                error = %format!("{error:#}"),
                "Scheduler schedule's run failed"
            ),
        }
        result
    }

    async fn delete_after_completion(&self, schedule: &SchedulerSchedule) {
        let deleted = self
            .client
            .delete_schedule()
            .group_name(&schedule.group)
            .name(&schedule.name)
            .send()
            .await;
        if let Err(error) = deleted {
            tracing::warn!(target: "devhost", group = %schedule.group, schedule = %schedule.name, error = %sdk_error(error), "deleting a completed one-time schedule failed");
        }
    }
}

impl SchedulerSchedules {
    /// Every schedule of the stack's schedule groups (enabled or not), by group and
    /// name.
    pub async fn list(&self) -> Result<Vec<SchedulerSchedule>> {
        let mut out = Vec::new();
        for (group, name, _) in self.shared.list().await? {
            match self.shared.get(&group, &name).await {
                Ok(schedule) => out.push(schedule),
                Err(error) => {
                    tracing::debug!(target: "devhost", %group, schedule = %name, error = %format!("{error:#}"), "a listed schedule could not be read")
                }
            }
        }
        out.sort_by(|a, b| (&a.group, &a.name).cmp(&(&b.group, &b.name)));
        Ok(out)
    }

    /// Fires the schedule `name` of `group` (its name, or the logical id of one of the
    /// stack's schedule groups) now, whatever its expression and state; returns the
    /// target function's result.
    pub async fn fire(&self, group: &str, name: &str) -> Result<Value> {
        let group = self.shared.group_name(group);
        let schedule = self.shared.get(group, name).await?;
        self.shared.fire(&schedule, OffsetDateTime::now_utc()).await
    }
}

/// The event a schedule's target receives: its `Input` with the context attributes
/// filled in, as JSON (`{}` without `Input`).
fn payload(schedule: &SchedulerSchedule, at: OffsetDateTime) -> Result<Value> {
    let Some(input) = &schedule.input else {
        return Ok(json!({}));
    };
    let at = at.replace_nanosecond(0).unwrap_or(at);
    let time = at
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned());
    let text = input
        .replace(
            "<aws.scheduler.schedule-arn>",
            schedule.arn.as_deref().unwrap_or_default(),
        )
        .replace("<aws.scheduler.scheduled-time>", &time)
        .replace("<aws.scheduler.execution-id>", &execution_id())
        .replace("<aws.scheduler.attempt-number>", "1");
    serde_json::from_str(&text).map_err(|e| {
        anyhow!(
            "the target's Input is not JSON ({:?} error at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        )
    })
}

/// A fresh execution id (a random version 4 UUID).
fn execution_id() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn to_time(value: &DateTime) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(value.as_nanos()).ok()
}

fn sdk_error(err: impl std::error::Error) -> anyhow::Error {
    anyhow!("{}", aws_sdk_scheduler::error::DisplayErrorContext(err))
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    fn schedule(expression: &str) -> SchedulerSchedule {
        SchedulerSchedule {
            group: "g".into(),
            name: "n".into(),
            arn: Some("arn:aws:scheduler:us-east-1:123456789012:schedule/g/n".into()),
            expression: expression.into(),
            timezone: None,
            state: "ENABLED".into(),
            target_arn: "arn:aws:lambda:us-east-1:123456789012:function:s-sync-runs".into(),
            role_arn: "arn:aws:iam::123456789012:role/r".into(),
            input: None,
            function: None,
            start_date: None,
            end_date: None,
            created: None,
            modified: None,
            action_after_completion: None,
        }
    }

    #[test]
    fn due_checks_respect_start_and_end_dates() {
        let s = schedule("rate(1 minute)");
        let e = SchedulerExpression::parse(&s.expression).unwrap();
        let anchor = datetime!(2026-11-21 12:00:00 UTC);
        let utc = UtcOffset::UTC;
        let at = |from, until, s: &SchedulerSchedule| due(s, &e, from, until, anchor, utc);
        assert_eq!(
            at(
                datetime!(2026-11-21 12:00:30 UTC),
                datetime!(2026-11-21 12:01:00 UTC),
                &s
            ),
            Some(datetime!(2026-11-21 12:01:00 UTC))
        );
        assert_eq!(
            at(
                datetime!(2026-11-21 12:01:00 UTC),
                datetime!(2026-11-21 12:01:59 UTC),
                &s
            ),
            None
        );
        let mut ended = s.clone();
        ended.end_date = Some(datetime!(2026-11-21 12:00:59 UTC));
        assert_eq!(
            at(
                datetime!(2026-11-21 12:00:30 UTC),
                datetime!(2026-11-21 12:01:00 UTC),
                &ended
            ),
            None
        );
        let mut later = s.clone();
        later.start_date = Some(datetime!(2026-11-21 12:03:00 UTC));
        assert_eq!(
            at(
                datetime!(2026-11-21 12:00:30 UTC),
                datetime!(2026-11-21 12:02:30 UTC),
                &later
            ),
            None
        );
        assert_eq!(
            at(
                datetime!(2026-11-21 12:02:30 UTC),
                datetime!(2026-11-21 12:03:00 UTC),
                &later
            ),
            Some(datetime!(2026-11-21 12:03:00 UTC))
        );
    }

    #[test]
    fn payloads_are_the_input_with_context_attributes() {
        let mut s = schedule("rate(1 hour)");
        assert_eq!(
            payload(&s, datetime!(2026-11-21 12:00:00 UTC)).unwrap(),
            json!({})
        );
        s.input = Some(
            r#"{"config":"c1","at":"<aws.scheduler.scheduled-time>","arn":"<aws.scheduler.schedule-arn>","try":"<aws.scheduler.attempt-number>","id":"<aws.scheduler.execution-id>"}"#
                .into(),
        );
        let p = payload(&s, datetime!(2026-11-21 12:00:00.5 UTC)).unwrap();
        assert_eq!(p["config"], "c1");
        assert_eq!(p["at"], "2026-11-21T12:00:00Z");
        assert_eq!(p["arn"], s.arn.clone().unwrap());
        assert_eq!(p["try"], "1");
        assert_eq!(p["id"].as_str().unwrap().len(), 36);
        s.input = Some("not json".into());
        assert!(payload(&s, datetime!(2026-11-21 12:00:00 UTC)).is_err());
    }
}

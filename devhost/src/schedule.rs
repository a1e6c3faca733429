//! The template's `Schedule` events, run locally: each enabled `rate(…)` schedule of a
//! function with a registered event handler fires every period (first firing one
//! period after start), with a fresh EventBridge "Scheduled Event" as its event — the
//! JSON a deployed function receives. `cron(…)` and disabled schedules are listed, not
//! run. A function's runs (its timers' and [`Scheduler::run_now`]'s) overlap up to its
//! template `ReservedConcurrentExecutions`, without limit when it has none (a timer
//! waits for its own run before its next firing): a firing that finds every reserved
//! place taken is skipped, as Lambda throttles it (EventBridge would retry it later;
//! the next firing comes soon enough).
//!
//! [`Scheduler::run_now`] fires a function's schedule immediately through the same path
//! (tests run the token sweep this way).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use conduit::app::App;
use rand::RngCore;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::invoke::{call_event_handler, function_app, function_timeout};
use crate::registry::{EventHandler, FunctionRegistry};
use crate::stack::LocalStack;
use crate::template::{Schedule, ScheduleExpression};
use crate::trace::TraceHeader;

/// How long [`Scheduler::shutdown`] lets a run in progress finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How the scheduler runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedulerOptions {
    /// Fire the enabled rate schedules (off: only [`Scheduler::run_now`] runs them).
    pub run: bool,
    /// Fire every rate schedule this often instead of its template rate (for demos).
    pub every: Option<Duration>,
}

/// One function's schedules and what runs them.
struct Job {
    logical_id: String,
    binary: String,
    handler: EventHandler,
    app: App,
    timeout: Duration,
    schedules: Vec<Schedule>,
    /// Its `ReservedConcurrentExecutions`, as permits held for the length of a run;
    /// `None`: not reserved, runs are never throttled.
    reserved: Option<Semaphore>,
    rule_prefix: String,
    region: String,
    account_id: String,
}

/// The local scheduler; its timers stop on [`Scheduler::shutdown`] or drop.
pub struct Scheduler {
    jobs: BTreeMap<String, Arc<Job>>,
    listed: Vec<Schedule>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("functions", &self.jobs.keys().collect::<Vec<_>>())
            .field("timers", &self.tasks.len())
            .finish()
    }
}

impl Scheduler {
    /// Prepares every schedule of `stack`'s template whose function has an event
    /// handler in `functions` (each with its own `App`, as a deployed function has),
    /// and, when `options.run` is set, starts their timers. Logs one line per
    /// schedule: run, or listed and why not.
    pub fn start(
        stack: &LocalStack,
        functions: &FunctionRegistry,
        options: SchedulerOptions,
    ) -> Result<Self> {
        let template = stack.template();
        let listed = template.schedules();
        let mut jobs = BTreeMap::new();
        for function in template.functions.values() {
            if function.schedules.is_empty() {
                continue;
            }
            let Some(handler) = functions.get_event(&function.binary) else {
                tracing::warn!(
                    target: "devhost",
                    function = %function.logical_id,
                    binary = %function.binary,
                    "schedule listed but not run locally: no event handler registered"
                );
                continue;
            };
            let app = function_app(stack, &function.logical_id)?;
            let rule_prefix = format!("{}-{}", stack.stack_name(), function.logical_id);
            jobs.insert(
                function.logical_id.clone(),
                Arc::new(Job {
                    logical_id: function.logical_id.clone(),
                    binary: function.binary.clone(),
                    handler,
                    app,
                    timeout: function_timeout(function),
                    schedules: function.schedules.clone(),
                    reserved: function
                        .reserved_concurrency
                        .map(|n| Semaphore::new(n as usize)),
                    rule_prefix,
                    region: stack.region().to_owned(),
                    account_id: stack.account_id().to_owned(),
                }),
            );
        }

        let (stop, _) = watch::channel(false);
        let mut tasks = Vec::new();
        for job in jobs.values() {
            for schedule in &job.schedules {
                let reason = match (&schedule.expression, schedule.enabled) {
                    (_, false) => Some("disabled in the template"),
                    (ScheduleExpression::Cron(_), true) => {
                        Some("cron schedules are not run locally")
                    }
                    (ScheduleExpression::Rate(_), true) if !options.run => {
                        Some("schedules are off (devhost up runs them)")
                    }
                    (ScheduleExpression::Rate(_), true) => None,
                };
                if let Some(reason) = reason {
                    tracing::info!(
                        target: "devhost",
                        function = %job.logical_id,
                        schedule = %schedule.event,
                        expression = %schedule.expression,
                        "schedule listed but not run locally: {reason}"
                    );
                    continue;
                }
                let Some(rate) = schedule.expression.period() else {
                    continue;
                };
                let period = options.every.unwrap_or(rate).max(Duration::from_secs(1));
                tracing::info!(
                    target: "devhost",
                    function = %job.logical_id,
                    schedule = %schedule.event,
                    expression = %schedule.expression,
                    every_s = period.as_secs(),
                    "schedule runs locally"
                );
                tasks.push(tokio::spawn(timer(
                    job.clone(),
                    schedule.clone(),
                    period,
                    stop.subscribe(),
                )));
            }
        }
        Ok(Self {
            jobs,
            listed,
            stop,
            tasks,
        })
    }

    /// Every schedule of the template (run or not).
    pub fn schedules(&self) -> &[Schedule] {
        &self.listed
    }

    /// Fires the first schedule of `function` (logical id or binary name) now, with a
    /// fresh scheduled event, through the path the timers use; waits for a run in
    /// progress to finish first. Returns the handler's JSON result.
    pub async fn run_now(&self, function: &str) -> Result<Value> {
        let job = self
            .jobs
            .get(function)
            .or_else(|| self.jobs.values().find(|j| j.binary == function))
            .ok_or_else(|| {
                anyhow!(
                    "no scheduled function {function} with an event handler; scheduled: {}",
                    self.jobs.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            })?;
        let schedule = job
            .schedules
            .first()
            .ok_or_else(|| anyhow!("{} has no Schedule event", job.logical_id))?;
        // Waits for a place rather than being throttled: the caller asked for this run.
        let _running = match &job.reserved {
            Some(reserved) => Some(reserved.acquire().await?),
            None => None,
        };
        job.fire(schedule).await
    }

    /// Stops the timers, lets a run in progress finish (up to 5 s), then returns.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for mut task in std::mem::take(&mut self.tasks) {
            if tokio::time::timeout(SHUTDOWN_GRACE, &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Job {
    /// One run: the event EventBridge would send for `schedule`, through the handler.
    async fn fire(&self, schedule: &Schedule) -> Result<Value> {
        let event = match &schedule.input {
            Some(input) => serde_json::from_str(input)
                .with_context(|| format!("the Input of schedule {}", schedule.event))?,
            None => scheduled_event(
                &self.region,
                &self.account_id,
                &rule_arn(
                    &self.region,
                    &self.account_id,
                    &self.rule_prefix,
                    &schedule.event,
                ),
                OffsetDateTime::now_utc(),
            ),
        };
        let started = Instant::now();
        let result = call_event_handler(
            &self.handler,
            &self.app,
            event,
            self.timeout,
            &self.logical_id,
            TraceHeader::new_root(),
        )
        .await;
        let ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok(value) => tracing::info!(
                target: "devhost",
                function = %self.logical_id,
                schedule = %schedule.event,
                ms,
                result = %summary(value),
                "scheduled run"
            ),
            Err(error) => tracing::error!(
                target: "devhost",
                function = %self.logical_id,
                schedule = %schedule.event,
                ms,
                error = %format!("{error:#}"),
                "scheduled run failed"
            ),
        }
        result
    }
}

async fn timer(
    job: Arc<Job>,
    schedule: Schedule,
    period: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = ticks.tick() => {}
        }
        if *stop.borrow() {
            return;
        }
        let _running = match job.reserved.as_ref().map(Semaphore::try_acquire) {
            None => None,
            Some(Ok(permit)) => Some(permit),
            Some(Err(_)) => {
                tracing::info!(
                    target: "devhost",
                    function = %job.logical_id,
                    schedule = %schedule.event,
                    "scheduled run throttled: its reserved concurrency is in use"
                );
                continue;
            }
        };
        // The outcome is logged by `fire`; the timer keeps going either way.
        let _ = job.fire(&schedule).await;
    }
}

/// The ARN of the EventBridge rule SAM creates for a schedule (`{prefix}{Event}`,
/// within the 64 characters a rule name may have).
pub fn rule_arn(region: &str, account_id: &str, prefix: &str, event: &str) -> String {
    let name: String = format!("{prefix}{event}").chars().take(64).collect();
    format!("arn:aws:events:{region}:{account_id}:rule/{name}")
}

/// An EventBridge "Scheduled Event" exactly as AWS sends it to the rule's target.
pub fn scheduled_event(
    region: &str,
    account_id: &str,
    rule_arn: &str,
    at: OffsetDateTime,
) -> Value {
    let at = at.replace_nanosecond(0).unwrap_or(at);
    let time = at
        .format(&Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".to_owned());
    json!({
        "version": "0",
        "id": uuid_v4(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": account_id,
        "time": time,
        "region": region,
        "resources": [rule_arn],
        "detail": {},
    })
}

/// A random (version 4) UUID, as EventBridge event ids are.
fn uuid_v4() -> String {
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

/// A one-line summary of a run's result that cannot carry a secret: the numbers and
/// booleans of a JSON object (`due=3 refreshed=2 …`); other shapes by size only.
pub fn summary(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let fields: Vec<String> = map
                .iter()
                .filter_map(|(k, v)| match v {
                    Value::Number(n) => Some(format!("{k}={n}")),
                    Value::Bool(b) => Some(format!("{k}={b}")),
                    _ => None,
                })
                .collect();
            if fields.is_empty() {
                format!("an object with {} fields", map.len())
            } else {
                fields.join(" ")
            }
        }
        Value::Array(items) => format!("a list of {} items", items.len()),
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(_) => "a string".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduled_events_look_like_eventbridge_ones() {
        let at = time::macros::datetime!(2026-11-21 12:00:00.123 UTC);
        let arn = rule_arn(
            "us-east-1",
            "123456789012",
            "conduit-local-TokenRefreshFunction",
            "Sweep",
        );
        assert_eq!(
            arn,
            "arn:aws:events:us-east-1:123456789012:rule/conduit-local-TokenRefreshFunctionSweep"
        );
        let event = scheduled_event("us-east-1", "123456789012", &arn, at);
        let id = event["id"].as_str().unwrap().to_owned();
        assert_eq!(id.len(), 36);
        assert_eq!(id.as_bytes()[14], b'4');
        assert_eq!(
            event,
            json!({
                "version": "0",
                "id": id,
                "detail-type": "Scheduled Event",
                "source": "aws.events",
                "account": "123456789012",
                "time": "2026-11-21T12:00:00Z",
                "region": "us-east-1",
                "resources": [arn],
                "detail": {},
            })
        );
        assert_ne!(
            scheduled_event("us-east-1", "1", &arn, at)["id"],
            event["id"]
        );
        let long = rule_arn("r", "a", &"x".repeat(80), "E");
        assert_eq!(long.rsplit('/').next().unwrap().len(), 64);
    }

    #[test]
    fn the_sample_event_is_a_scheduled_event() {
        let path = crate::paths::repo_root()
            .unwrap()
            .join("events/token-refresh/scheduled.json");
        let sample: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let fresh = scheduled_event(
            "us-east-1",
            "123456789012",
            "arn:aws:events:us-east-1:123456789012:rule/x",
            OffsetDateTime::now_utc(),
        );
        let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
        assert_eq!(keys(&sample), keys(&fresh));
        assert_eq!(sample["detail-type"], "Scheduled Event");
        assert_eq!(sample["source"], "aws.events");
        assert!(OffsetDateTime::parse(sample["time"].as_str().unwrap(), &Rfc3339).is_ok());
    }

    #[test]
    fn summaries_hold_numbers_only() {
        let report = json!({"due": 3, "refreshed": 2, "note": "secret-ish", "ok": true});
        assert_eq!(summary(&report), "due=3 ok=true refreshed=2");
        assert_eq!(summary(&json!({"token": "abc"})), "an object with 1 fields");
        assert_eq!(summary(&json!(["a", "b"])), "a list of 2 items");
        assert_eq!(summary(&json!("abc")), "a string");
    }
}

//! The dispatcher: runs one event's chain, step by step, with one effect per step under
//! at-least-once delivery.
//!
//! Every delivery of an event names the same dispatch ([`DispatchId::for_event`]); the
//! first creates it with its resolved chain, the others find it. A lease (stored, with
//! a version condition) lets one invocation run it at a time; a finished step is never
//! run again. Within a step, each request's effect stays single: a provider that takes
//! an idempotency key gets one (the same on every attempt), an upsert is repeatable by
//! itself, and for the rest the step records the request as in flight before sending
//! it, so after a cut-off attempt (a timeout, a 5xx, a killed worker) the template's
//! lookup runs first and a found record counts as done. 429s, 5xx and timeouts are
//! retried with backoff under the connection's shared rate budget (the one sync uses);
//! a wait longer than the invocation can afford is stored (`waiting`, in the due index)
//! and picked up by the minute's sweep. A permanent 4xx fails the step; the chain then
//! goes on or stops, per the integration's `on_failure`.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use time::OffsetDateTime;

use super::creations::Creations;
use super::inbound::DispatchEvent;
use super::integration::{AssistantSettings, Integration, WEBHOOK, resolve_chain};
use super::log::{
    Dispatch, DispatchStatus, Lease, Origin, RequestSummary, Step, StepError, StepStatus,
};
use super::reads::Reads;
use super::render::{RenderedRequest, Renderer};
use super::template::{self, Action, ContextParts, Idempotency, Outputs, RequestTemplate};
use crate::app::App;
use crate::domain::{DispatchId, TenantId};
use crate::oauth::lifecycle::{Credentials, TokenError, Tokens};
use crate::store::StoreError;
use crate::store::dispatches::Dispatches;
use crate::store::integrations::Integrations;
use crate::sync::budget::{Budget, interval_for, tolerance_for};

/// How long a lease lasts (longer than one invocation's work on a dispatch).
const LEASE: Duration = Duration::from_secs(90);
/// A wait this long or shorter is slept in the invocation; longer ones are stored.
const MAX_INLINE_WAIT: Duration = Duration::from_secs(20);
/// 429s one request sits out before the attempt counts as failed.
const RATE_LIMIT_RETRIES: u32 = 10;
/// A provider call's timeout.
const CALL_TIMEOUT: Duration = Duration::from_secs(25);
/// How long a webhook endpoint may fail before it is disabled.
const WEBHOOK_DISABLE_AFTER: time::Duration = time::Duration::days(5);

static RENDERER: LazyLock<Renderer> = LazyLock::new(Renderer::new);

/// What became of an event or a resumed dispatch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handled {
    /// Ran to an end (or was already at one).
    Done(DispatchId, DispatchStatus),
    /// A step waits for its next attempt (the sweep picks it up).
    Waiting(DispatchId),
    /// Another invocation holds it; that one finishes it.
    Busy(DispatchId),
    /// The tenant is unknown to Conduit: nothing stored, no integration.
    UnknownTenant,
}

/// Why an event could not be handled now (the message comes back).
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The dispatch names an event that is gone or unreadable.
    #[error("the dispatch's event is missing or unreadable")]
    EventMissing,
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

fn clip(s: &str) -> String {
    s.chars().take(300).collect()
}

fn fail(code: &str, message: impl Into<String>, status: Option<u16>) -> StepError {
    StepError {
        code: code.to_owned(),
        message: clip(&message.into()),
        status,
    }
}

/// The dispatcher of one invocation.
pub struct Dispatcher<'a> {
    app: &'a App,
    store: Dispatches,
    integrations: Integrations,
    holder: String,
    deadline: Instant,
    call_timeout: Duration,
    /// What this dispatcher's invocation has read (shared by its events).
    reads: Arc<Reads>,
    /// The invocation's creations, written together (none: each alone).
    creations: Option<Arc<Creations>>,
}

/// How one request went.
enum Sent {
    /// 2xx, with the answer (JSON, or null).
    Ok(Value, u16),
    /// Not done: try again after the wait (429, or 503 with Retry-After before any effect).
    RateLimited(Option<Duration>),
    /// Maybe done: a 5xx or a cut-off call.
    Unknown(StepError),
    /// Refused for good (4xx), or the connection cannot be used.
    Permanent(StepError),
}

impl<'a> Dispatcher<'a> {
    /// A dispatcher acting as `holder` (the invocation's request id), working until
    /// `deadline` (the invocation's, less a margin).
    pub fn new(app: &'a App, holder: impl Into<String>, deadline: Instant) -> Self {
        Self {
            app,
            store: Dispatches::new(app.table.clone()),
            integrations: Integrations::new(app.table.clone()),
            holder: holder.into(),
            deadline,
            call_timeout: CALL_TIMEOUT,
            reads: Arc::new(Reads::new()),
            creations: None,
        }
    }

    /// The same, sharing `reads` with the invocation's other dispatchers (its other
    /// events read the tenant's integrations and connections once between them).
    pub fn with_reads(mut self, reads: Arc<Reads>) -> Self {
        self.reads = reads;
        self
    }

    /// The same, writing its dispatches' creations with those of the invocation's
    /// other dispatchers that create theirs at the same moment.
    pub fn with_creations(mut self, creations: Arc<Creations>) -> Self {
        self.creations = Some(creations);
        self
    }

    /// The same, with provider calls cut off after `timeout` (an API route that runs a
    /// dispatch inline has less time than the queue's invocation).
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Dispatches one event: resolves its chain (first delivery), then runs what is
    /// left of it.
    pub async fn event(&self, event: &DispatchEvent) -> Result<Handled, DispatchError> {
        let tenant = event.tenant();
        let id = DispatchId::for_event(tenant, event.event_id(), event.occurred_at());
        // The chain is resolved and the dispatch created in one conditional write; a
        // later delivery of the same event finds it there and goes on with it.
        let read = self.reads.integrations(&self.integrations, tenant).await?;
        let integrations = read.integrations.as_slice();
        if !read.known {
            return match self.store.get(tenant, &id).await? {
                Some(d) => Box::pin(self.run(d, event, &[], false)).await,
                None => Ok(Handled::UnknownTenant),
            };
        }
        let assistant = match event.assistant_id() {
            Some(a) => self.reads.assistant(&self.integrations, tenant, a).await?,
            None => None,
        };
        let mut d = new_dispatch(
            id.clone(),
            event,
            integrations,
            assistant.as_deref(),
            Origin::Event,
        );
        d.lease = Some(self.lease());
        // The first step's in-flight mark goes with the creation.
        let mut marked = d
            .steps
            .iter()
            .position(|s| !s.status.is_final())
            .is_some_and(|first| premark(&mut d, first, integrations));
        let envelope = event.to_envelope();
        let created = match &self.creations {
            Some(creations) => creations.create(&d, &envelope).await?,
            None => self.store.create(&d, &envelope).await?,
        };
        if !created {
            d = self
                .store
                .get(tenant, &id)
                .await?
                .ok_or(StoreError::ConditionFailed)?;
            marked = false;
        }
        Box::pin(self.run(d, event, integrations, marked)).await
    }

    /// Starts a dispatch of one integration alone (`send` / `test` with send), logged
    /// like any other.
    pub async fn single(
        &self,
        integration: &Integration,
        event: &DispatchEvent,
        origin: Origin,
    ) -> Result<Handled, DispatchError> {
        let id = DispatchId::generate();
        let mut d = new_dispatch(id, event, &[], None, origin);
        d.steps = vec![Step::pending(
            integration,
            integration.priority,
            integration.overrides.clone(),
        )];
        d.settle();
        d.lease = Some(self.lease());
        self.store.create(&d, &event.to_envelope()).await?;
        Box::pin(self.run(d, event, std::slice::from_ref(integration), false)).await
    }

    /// Resumes a stored dispatch (the due sweep, a retry).
    pub async fn resume(
        &self,
        tenant: &TenantId,
        id: &DispatchId,
    ) -> Result<Handled, DispatchError> {
        let Some(d) = self.store.get(tenant, id).await? else {
            return Err(DispatchError::EventMissing);
        };
        let envelope = self
            .store
            .event(tenant, id)
            .await?
            .ok_or(DispatchError::EventMissing)?;
        let event =
            DispatchEvent::from_envelope(&envelope).map_err(|_| DispatchError::EventMissing)?;
        self.run(d, &event, &[], false).await
    }

    /// Sets a dispatch's failed steps (and the steps a failure skipped) back to
    /// pending, so the next run tries them again; finished steps stay finished.
    pub async fn reset_failed(
        &self,
        tenant: &TenantId,
        id: &DispatchId,
    ) -> Result<Option<Dispatch>, DispatchError> {
        let Some(mut d) = self.store.get(tenant, id).await? else {
            return Ok(None);
        };
        let prev = d.version;
        for s in &mut d.steps {
            if matches!(s.status, StepStatus::Failed | StepStatus::Skipped) {
                if s.error.as_ref().is_some_and(|e| e.code == MAYBE_SENT) {
                    // Sent at most once, its outcome unknown: whoever retries it has
                    // chosen to send it again.
                    s.progress.in_flight = None;
                    s.progress.in_flight_at = None;
                }
                s.status = StepStatus::Pending;
                s.attempts = 0;
                s.error = None;
                s.next_attempt_at = None;
                s.finished_at = None;
            }
        }
        d.finished_at = None;
        d.settle();
        d.version += 1;
        d.updated_at = now();
        self.store.save(&d, prev).await?;
        Ok(Some(d))
    }

    /// A lease held by this invocation from now.
    fn lease(&self) -> Lease {
        Lease {
            holder: self.holder.clone(),
            until: ms(now()) + LEASE.as_millis() as i64,
        }
    }

    /// Runs what is left of `d`; `known`: the tenant's integrations as just read (a
    /// step's integration not among them is read from the store); `marked`: the first
    /// step left was marked in flight by this invocation's last write ([`premark`]).
    async fn run(
        &self,
        mut d: Dispatch,
        event: &DispatchEvent,
        known: &[Integration],
        marked: bool,
    ) -> Result<Handled, DispatchError> {
        let at = ms(now());
        if d.status.is_final() {
            return Ok(Handled::Done(d.id.clone(), d.status));
        }
        let mine = d.lease.as_ref().is_some_and(|l| l.holder == self.holder);
        if d.lease.as_ref().is_some_and(|l| !mine && l.until > at) {
            return Ok(Handled::Busy(d.id.clone()));
        }
        // A dispatch just created carries this invocation's lease already; one found
        // is taken over (its holder's lease ran out, or this is that holder's message
        // delivered again: SQS redelivers a message only once its invocation is over).
        if !(mine && d.version == 1) {
            let prev = d.version;
            d.lease = Some(self.lease());
            d.version += 1;
            match self.store.save(&d, prev).await {
                Ok(()) => {}
                Err(StoreError::ConditionFailed) => return Ok(Handled::Busy(d.id.clone())),
                Err(e) => return Err(e.into()),
            }
        }
        let mut stopped = false;
        // What templates see of the event, built once for every step.
        let event_json = event.context();
        // A step that just ended goes to its integration's log with the next save.
        let mut unlogged: Option<Step> = None;
        // The step whose in-flight mark this invocation stored without sending yet.
        let mut marked = if marked {
            d.steps.iter().position(|s| !s.status.is_final())
        } else {
            None
        };
        for i in 0..d.steps.len() {
            let step = &d.steps[i];
            if step.status.is_final() {
                stopped |= step.status == StepStatus::Failed
                    && step.on_failure == super::integration::OnFailure::Stop;
                continue;
            }
            if stopped {
                let s = &mut d.steps[i];
                s.status = StepStatus::Skipped;
                s.error = Some(fail(
                    "chain_stopped",
                    "an earlier step failed and stops the chain",
                    None,
                ));
                continue;
            }
            if step.status == StepStatus::Waiting
                && step.next_attempt_at.is_some_and(|due| due > ms(now()))
            {
                break;
            }
            let run = self.step(&mut d, i, (event, &event_json), known, marked == Some(i));
            Box::pin(run).await?;
            let s = &d.steps[i];
            if s.status.is_final() {
                unlogged = Some(s.clone());
            }
            match s.status {
                StepStatus::Waiting => break,
                StepStatus::Failed => {
                    stopped = s.on_failure == super::integration::OnFailure::Stop;
                }
                _ => {}
            }
            // Each finished step is stored before the next starts: a worker killed
            // between steps resumes after the last one stored, never redoing it. (The
            // last step's state goes with the dispatch's final save below.)
            if i + 1 < d.steps.len() {
                // The next step's in-flight mark, when it needs one, goes with this save
                // rather than in a write of its own.
                marked = (!stopped && premark(&mut d, i + 1, known)).then_some(i + 1);
                let prev = d.version;
                d.version += 1;
                d.updated_at = now();
                self.store
                    .save_logged(&d, prev, unlogged.take().as_ref())
                    .await?;
            }
        }
        d.settle();
        if d.status.is_final() {
            d.finished_at = Some(now());
        }
        d.lease = None;
        d.updated_at = now();
        let prev = d.version;
        d.version += 1;
        self.store
            .save_logged(&d, prev, unlogged.take().as_ref())
            .await?;
        Ok(match d.status {
            DispatchStatus::Waiting | DispatchStatus::Running => Handled::Waiting(d.id),
            status => Handled::Done(d.id, status),
        })
    }

    /// Saves the dispatch as it stands (progress within a step), keeping the lease.
    async fn checkpoint(&self, d: &mut Dispatch) -> Result<(), DispatchError> {
        let prev = d.version;
        d.version += 1;
        d.updated_at = now();
        self.store.save(d, prev).await?;
        Ok(())
    }

    /// Runs step `i` until it succeeds, fails for good, or must wait.
    async fn step(
        &self,
        d: &mut Dispatch,
        i: usize,
        event: (&DispatchEvent, &Value),
        known: &[Integration],
        marked: bool,
    ) -> Result<(), DispatchError> {
        let started = Instant::now();
        if d.steps[i].started_at.is_none() {
            d.steps[i].started_at = Some(now());
        }
        let id = &d.steps[i].integration_id;
        let integration = match known.iter().find(|i| i.id == *id) {
            Some(found) => Some(found.clone()),
            None => self.integrations.get(&d.tenant, id).await?,
        };
        let outcome = match integration {
            None => Err(fail(
                "integration_deleted",
                "the integration was deleted",
                None,
            )),
            Some(integration) => self.attempts(d, i, event, &integration, marked).await?,
        };
        let s = &mut d.steps[i];
        s.duration_ms += started.elapsed().as_millis() as u64;
        match outcome {
            Ok(Some(outputs)) => {
                s.status = StepStatus::Succeeded;
                s.external_id = outputs.get("id").cloned();
                s.external_url = outputs.get("url").cloned();
                s.outputs = outputs;
                s.error = None;
                finish(s, crate::metrics::Metric::DispatchStepsSucceeded);
            }
            Ok(None) => {} // waiting: the attempt loop set the time
            Err(e) => {
                s.status = StepStatus::Failed;
                s.error = Some(e);
                finish(s, crate::metrics::Metric::DispatchStepsFailed);
                tracing::warn!(dispatch = %d.id, integration = %s.integration_id, code = %s.error.as_ref().map_or("", |e| e.code.as_str()), "dispatch step failed");
            }
        }
        Ok(())
    }

    /// Attempts of one step: Ok(Some(outputs)) when done, Ok(None) when it must wait,
    /// Err when it failed for good.
    async fn attempts(
        &self,
        d: &mut Dispatch,
        i: usize,
        (event, event_json): (&DispatchEvent, &Value),
        integration: &Integration,
        mut marked: bool,
    ) -> Result<Result<Option<BTreeMap<String, String>>, StepError>, DispatchError> {
        let kb_import = template::catalogue()
            .get(&integration.provider)
            .and_then(|t| t.action(&integration.action))
            .is_some_and(|a| a.kb_import);
        if kb_import {
            return self.import_kb(d, i, integration).await;
        }
        let connection = match &integration.acting_user {
            None => integration.connection_id.clone(),
            Some(acting) => match self.acting_connection(integration, acting, event).await? {
                Ok(id) => Some(id),
                Err(e) => return Ok(Err(e)),
            },
        };
        let mut target = match Target::of(self.app, integration, connection) {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        let action = match target.action(integration, &d.steps[i].overrides) {
            Ok(a) => a,
            Err(e) => return Ok(Err(e)),
        };
        let connection = target.open(self, integration).await;
        let connection = match connection {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        let key = format!("{}:{}", event.event_id(), integration.id);
        let settings: Map<String, Value> = integration.settings.clone().into_iter().collect();
        let steps = d.outputs();
        let mut ctx = template::render_context(ContextParts {
            event: event_json,
            action: &action,
            settings: &settings,
            connection: &connection,
            steps: &steps,
            idempotency_key: &key,
        });
        for (name, value) in &d.steps[i].progress.captures {
            if let Some(c) = Arc::make_mut(&mut ctx)
                .get_mut("captures")
                .and_then(Value::as_object_mut)
            {
                c.insert(name.clone(), value.clone());
            }
        }
        let missing = template::missing_required(&action, &ctx);
        if !missing.is_empty() {
            return Ok(Err(fail(
                "missing_fields",
                format!(
                    "the event lacks what the action needs: {}",
                    missing.join(", ")
                ),
                None,
            )));
        }
        let policy = integration.retry;
        loop {
            d.steps[i].attempts += 1;
            let attempt = d.steps[i].attempts;
            let requests = self.requests(d, i, &action, &mut ctx, &mut target, &mut marked);
            match Box::pin(requests).await? {
                Ok(()) => {
                    let outputs = match RENDERER.outputs(&action, &ctx) {
                        Ok(o) => o,
                        Err(e) => return Ok(Err(fail("render_failed", e.to_string(), None))),
                    };
                    target.succeeded(self, integration).await;
                    return Ok(Ok(Some(outputs)));
                }
                Err(Retry::Never(e)) => {
                    target.failed(self, integration, d).await;
                    return Ok(Err(e));
                }
                Err(Retry::After(e, wait)) => {
                    if attempt >= policy.max_attempts {
                        target.failed(self, integration, d).await;
                        return Ok(Err(e));
                    }
                    let backoff = jitter(policy.backoff(attempt + 1)).max(wait.unwrap_or_default());
                    if backoff <= MAX_INLINE_WAIT
                        && Instant::now() + backoff + self.call_timeout < self.deadline
                    {
                        tokio::time::sleep(backoff).await;
                        continue;
                    }
                    let s = &mut d.steps[i];
                    s.status = StepStatus::Waiting;
                    s.error = Some(e);
                    s.next_attempt_at = Some(ms(now()) + backoff.as_millis() as i64);
                    return Ok(Ok(None));
                }
            }
        }
    }

    /// An inbound step: starts an import of the integration's knowledge base (run by
    /// the sync worker; its progress is the source's status). A run already under way
    /// serves this event too. A queue that cannot be reached is retried as the
    /// integration's retry policy says.
    async fn import_kb(
        &self,
        d: &mut Dispatch,
        i: usize,
        integration: &Integration,
    ) -> Result<Result<Option<BTreeMap<String, String>>, StepError>, DispatchError> {
        use crate::kb::run::{self, RunError, StartError};
        d.steps[i].attempts += 1;
        let attempt = d.steps[i].attempts;
        let publisher = match crate::queue::sync_queue(self.app) {
            Ok(p) => p,
            Err(e) => return Ok(Err(fail("not_configured", e.to_string(), None))),
        };
        let unavailable = match run::start_integration(self.app, &publisher, integration, None)
            .await
        {
            Ok(status) => {
                let run_id = status.run.map(|r| r.run_id).unwrap_or_default();
                let outputs = BTreeMap::from([
                    ("id".to_owned(), run_id),
                    ("status".to_owned(), "started".to_owned()),
                ]);
                return Ok(Ok(Some(outputs)));
            }
            Err(StartError::Run(RunError::Busy | RunError::Changed)) => {
                let running = run::status(self.app, &integration.tenant, &integration.id)
                    .await?
                    .and_then(|s| s.run)
                    .map(|r| r.run_id)
                    .unwrap_or_default();
                let outputs = BTreeMap::from([
                    ("id".to_owned(), running),
                    ("status".to_owned(), "already_running".to_owned()),
                ]);
                return Ok(Ok(Some(outputs)));
            }
            Err(StartError::NotASource(m)) => return Ok(Err(fail("integration_invalid", m, None))),
            Err(StartError::Run(RunError::Store(e))) => return Err(e.into()),
            Err(StartError::Run(RunError::Queue(e))) => {
                fail("queue_unavailable", e.to_string(), None)
            }
        };
        let policy = integration.retry;
        if attempt >= policy.max_attempts {
            return Ok(Err(unavailable));
        }
        let backoff = jitter(policy.backoff(attempt + 1));
        let s = &mut d.steps[i];
        s.status = StepStatus::Waiting;
        s.error = Some(unavailable);
        s.next_attempt_at = Some(ms(now()) + backoff.as_millis() as i64);
        Ok(Ok(None))
    }

    /// The personal connection an integration acting as a user runs with: the named
    /// user's, or the event's assistant owner's, of the action's kind — only while its
    /// owner allows automations (checked at every attempt, so withdrawing it stops the
    /// next one).
    async fn acting_connection(
        &self,
        integration: &Integration,
        acting: &super::integration::ActingUser,
        event: &DispatchEvent,
    ) -> Result<Result<crate::domain::ConnectionId, StepError>, DispatchError> {
        let Some(user) = acting.user_for(event) else {
            return Ok(Err(fail(
                "missing_fields",
                "the event names no assistant owner (assistant_owner_id) to act as",
                None,
            )));
        };
        let kind = template::catalogue()
            .get(&integration.provider)
            .and_then(|t| t.action(&integration.action))
            .and_then(|a| a.connection_kind.clone());
        let method = self
            .app
            .catalogue
            .provider(&integration.provider)
            .and_then(|p| crate::oauth::connect::oauth_method(p).ok());
        let (Some(kind), Some(method)) = (kind, method) else {
            return Ok(Err(fail(
                "integration_invalid",
                "this action does not act as a user",
                None,
            )));
        };
        let found = crate::connections::Connections::new(self.app.table.clone())
            .personal(
                &integration.tenant,
                &integration.provider,
                &method.id,
                user,
                &kind,
            )
            .await?;
        match found {
            None => Ok(Err(fail(
                "personal_connection_missing",
                format!("user {user} has no {kind} connection of their own"),
                None,
            ))),
            Some(c) if !c.allow_automations => Ok(Err(fail(
                "automations_not_allowed",
                format!("user {user} does not let automations use their {kind} connection"),
                None,
            ))),
            Some(c) => Ok(Ok(c.id)),
        }
    }

    /// The action's requests from where the step stands; `marked`: the first one's
    /// in-flight mark was stored by this invocation, nothing sent yet (cleared once it
    /// is).
    async fn requests(
        &self,
        d: &mut Dispatch,
        i: usize,
        action: &Action,
        ctx: &mut Arc<Value>,
        target: &mut Target<'_>,
        marked: &mut bool,
    ) -> Result<Result<(), Retry>, DispatchError> {
        let start = d.steps[i].progress.done;
        for (k, req) in action.requests.iter().enumerate().skip(start) {
            let unsent = std::mem::take(marked) && k == start;
            if let Some(cond) = &req.skip_if {
                match RENDERER.condition(cond, ctx) {
                    Ok(true) => {
                        d.steps[i].progress.done = k + 1;
                        continue;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        return Ok(Err(Retry::Never(fail(
                            "render_failed",
                            e.to_string(),
                            None,
                        ))));
                    }
                }
            }
            let lookup = matches!(req.idempotency, Some(Idempotency::Lookup { .. }));
            let once = matches!(req.idempotency, Some(Idempotency::AtMostOnce));
            if once && d.steps[i].progress.in_flight == Some(k) && !unsent {
                // An earlier attempt was sent and never answered: it may have landed.
                return Ok(Err(Retry::Never(maybe_sent(
                    "an earlier attempt was cut off".into(),
                    None,
                ))));
            }
            if lookup && d.steps[i].progress.in_flight == Some(k) && !unsent {
                // An earlier attempt sent this effect without learning how it went.
                match self.lookup(req, ctx, target).await {
                    Ok(true) => {
                        self.captured(d, i, k, ctx);
                        continue;
                    }
                    Ok(false) => {
                        // Not found proves nothing while a cut-off attempt may still
                        // land: the lookup is trusted once it no longer can.
                        if let Some(wait) = unsettled(&d.steps[i].progress, self.call_timeout) {
                            return Ok(Err(Retry::After(
                                fail(
                                    "unknown_outcome",
                                    "an earlier attempt was cut off and may still land; \
                                     looking again once it cannot",
                                    None,
                                ),
                                Some(wait),
                            )));
                        }
                    }
                    Err(e) => return Ok(Err(e)),
                }
            }
            let rendered = match RENDERER.render_request(req, ctx) {
                Ok(r) => r,
                Err(e) => {
                    return Ok(Err(Retry::Never(fail(
                        "render_failed",
                        e.to_string(),
                        None,
                    ))));
                }
            };
            if (lookup || once) && d.steps[i].progress.in_flight != Some(k) {
                d.steps[i].progress.in_flight = Some(k);
                d.steps[i].progress.in_flight_at = Some(ms(now()));
                d.steps[i].progress.in_flight_answered = false;
                self.checkpoint(d).await?;
            }
            d.steps[i].request = Some(target.summary(&rendered));
            match target.send(self, &rendered).await {
                Sent::Ok(answer, status) => {
                    if let Some(r) = d.steps[i].request.as_mut() {
                        r.status = Some(status);
                    }
                    RENDERER.capture(req, &answer, ctx);
                    self.captured(d, i, k, ctx);
                }
                Sent::RateLimited(wait) => {
                    if req.effect && (lookup || once) {
                        // Refused before it was done: no lookup needed next time.
                        d.steps[i].progress.in_flight = None;
                        d.steps[i].progress.in_flight_at = None;
                    }
                    return Ok(Err(Retry::After(
                        fail("rate_limited", "the provider asked to slow down", Some(429)),
                        wait,
                    )));
                }
                Sent::Unknown(e) => {
                    if let Some(r) = d.steps[i].request.as_mut() {
                        r.status = e.status;
                    }
                    if once {
                        return Ok(Err(Retry::Never(maybe_sent(e.message, e.status))));
                    }
                    if lookup {
                        // Answered (a 5xx): the provider is done with it. Cut off: it
                        // may still land, counted from now.
                        let p = &mut d.steps[i].progress;
                        p.in_flight_answered = e.status.is_some();
                        p.in_flight_at = Some(ms(now()));
                    }
                    return Ok(Err(Retry::After(e, None)));
                }
                Sent::Permanent(e) => {
                    if let Some(r) = d.steps[i].request.as_mut() {
                        r.status = e.status;
                    }
                    return Ok(Err(Retry::Never(e)));
                }
            }
        }
        Ok(Ok(()))
    }

    /// Records request `k` of step `i` as done with the captures so far.
    fn captured(&self, d: &mut Dispatch, i: usize, k: usize, ctx: &Value) {
        let p = &mut d.steps[i].progress;
        p.done = k + 1;
        p.in_flight = None;
        p.in_flight_at = None;
        p.in_flight_answered = false;
        if let Some(c) = ctx.get("captures").and_then(Value::as_object) {
            p.captures = c.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        }
    }

    /// Runs a lookup request: whether the effect is already there (its id captured).
    async fn lookup(
        &self,
        req: &RequestTemplate,
        ctx: &mut Arc<Value>,
        target: &mut Target<'_>,
    ) -> Result<bool, Retry> {
        let Some(Idempotency::Lookup { request, .. }) = &req.idempotency else {
            return Ok(false);
        };
        let rendered = RENDERER
            .render_request(request, ctx)
            .map_err(|e| Retry::Never(fail("render_failed", e.to_string(), None)))?;
        match target.send(self, &rendered).await {
            Sent::Ok(answer, _) => RENDERER
                .lookup_found(req, &answer, ctx)
                .map(|found| found.is_some())
                .map_err(|e| Retry::Never(fail("render_failed", e.to_string(), None))),
            Sent::RateLimited(wait) => Err(Retry::After(
                fail("rate_limited", "the provider asked to slow down", Some(429)),
                wait,
            )),
            Sent::Unknown(e) => Err(Retry::After(
                fail(
                    "unknown_outcome",
                    format!("the lookup before a retry failed: {}", e.message),
                    e.status,
                ),
                None,
            )),
            Sent::Permanent(e) => Err(Retry::Never(e)),
        }
    }
}

/// The code of an effect sent at most once whose outcome is unknown.
pub const MAYBE_SENT: &str = "maybe_sent";

/// An effect sent at most once (Gmail's send) whose attempt was cut off or answered
/// with a 5xx: it may have landed, so it is not sent again by itself; an operator's
/// retry (`POST …/retry`) sends it again.
fn maybe_sent(why: String, status: Option<u16>) -> StepError {
    fail(
        MAYBE_SENT,
        format!("{why}; it may have been sent, so it is not sent again unless retried by hand"),
        status,
    )
}

/// A step that ended: its finish time and its metric.
fn finish(s: &mut Step, metric: crate::metrics::Metric) {
    s.next_attempt_at = None;
    s.finished_at = Some(now());
    crate::metrics::count(metric, &s.provider, None);
}

/// Why an attempt ended early.
enum Retry {
    /// Try again after the backoff (at least the wait, when the provider gave one).
    After(StepError, Option<Duration>),
    /// Give up.
    Never(StepError),
}

fn jitter(base: Duration) -> Duration {
    let ms = base.as_millis() as u64;
    Duration::from_millis(ms * 3 / 4 + rand::random::<u64>() % (ms / 2 + 1))
}

fn new_dispatch(
    id: DispatchId,
    event: &DispatchEvent,
    integrations: &[Integration],
    assistant: Option<&AssistantSettings>,
    origin: Origin,
) -> Dispatch {
    let at = now();
    let steps = resolve_chain(integrations, assistant, event)
        .into_iter()
        .map(|s| Step::pending(s.integration, s.priority, s.overrides))
        .collect();
    let mut d = Dispatch {
        id,
        tenant: event.tenant().clone(),
        event_type: event.trigger(),
        event_id: event.event_id().to_owned(),
        assistant_id: event.assistant_id().map(str::to_owned),
        occurred_at: event.occurred_at(),
        received_at: at,
        updated_at: at,
        finished_at: None,
        origin,
        status: DispatchStatus::Running,
        steps,
        lease: None,
        due_at: None,
        version: 1,
    };
    d.settle();
    if d.status.is_final() {
        d.finished_at = Some(at);
    }
    d
}

/// A connection's side of a step: its tokens, credentials and rate budget.
struct Connected<'a> {
    tokens: Tokens<'a>,
    creds: Option<Credentials>,
    budget: Budget,
    provider: String,
    connection: crate::domain::ConnectionId,
    tenant: TenantId,
}

/// Where a step's requests go: a connection (with its tokens and rate budget), or a
/// webhook endpoint.
enum Target<'a> {
    Connection(Box<Connected<'a>>),
    Webhook {
        url: String,
        keys: Vec<Arc<super::webhook::SigningKey>>,
    },
}

impl<'a> Target<'a> {
    fn of(
        app: &'a App,
        integration: &Integration,
        connection: Option<crate::domain::ConnectionId>,
    ) -> Result<Self, StepError> {
        if integration.provider == WEBHOOK {
            let Some(w) = &integration.webhook else {
                return Err(fail(
                    "integration_invalid",
                    "a webhook without an endpoint",
                    None,
                ));
            };
            if w.disabled_at.is_some() {
                return Err(fail(
                    "endpoint_disabled",
                    "the endpoint was disabled after failing for days",
                    None,
                ));
            }
            return Ok(Self::Webhook {
                url: w.url.clone(),
                keys: Vec::new(),
            });
        }
        let connection =
            connection.ok_or_else(|| fail("integration_invalid", "no connection", None))?;
        let provider = app
            .catalogue
            .provider(&integration.provider)
            .ok_or_else(|| {
                fail(
                    "integration_invalid",
                    "the provider is not in the catalogue",
                    None,
                )
            })?;
        Ok(Self::Connection(Box::new(Connected {
            tokens: Tokens::new(app, "dispatch", format!("dispatch-{}", integration.id)),
            creds: None,
            budget: Budget::new(
                app.table.clone(),
                &integration.tenant,
                &connection,
                interval_for(provider),
                tolerance_for(provider),
            )
            .without_look_ahead(),
            provider: integration.provider.clone(),
            connection,
            tenant: integration.tenant.clone(),
        })))
    }

    /// The action to run: the template's (the Custom API's from the integration's own
    /// request), with the step's payload overrides.
    fn action(
        &self,
        integration: &Integration,
        overrides: &BTreeMap<String, Value>,
    ) -> Result<Cow<'static, Action>, StepError> {
        let base: Cow<'static, Action> = match &integration.request {
            Some(custom) => {
                let request = template::validate_custom_request(custom).map_err(|p| {
                    fail(
                        "integration_invalid",
                        p.first()
                            .map_or(String::new(), |p| format!("{}: {}", p.field, p.message)),
                        None,
                    )
                })?;
                Cow::Owned(Action {
                    id: integration.action.clone(),
                    title: String::new(),
                    description: String::new(),
                    events: Vec::new(),
                    requires: Vec::new(),
                    settings: Vec::new(),
                    requests: vec![request],
                    outputs: Outputs {
                        id: custom.outputs.contains_key("id").then(|| "id".to_owned()),
                        url: None,
                    },
                    connection_kind: None,
                    kb_import: false,
                })
            }
            None => template::catalogue()
                .get(&integration.provider)
                .and_then(|t| t.action(&integration.action))
                .map(Cow::Borrowed)
                .ok_or_else(|| {
                    fail(
                        "integration_invalid",
                        "the template action no longer exists",
                        None,
                    )
                })?,
        };
        if overrides.is_empty() {
            // The action as it stands: a catalogue action is borrowed, not copied for
            // every step.
            return Ok(base);
        }
        let overrides: Map<String, Value> = overrides.clone().into_iter().collect();
        base.with_overrides(&overrides)
            .map(Cow::Owned)
            .map_err(|p| {
                fail(
                    "render_failed",
                    p.first()
                        .map_or(String::new(), |p| format!("{}: {}", p.field, p.message)),
                    None,
                )
            })
    }

    /// Opens what the requests need — the connection's credentials, or the endpoint's
    /// signing keys (its secrets still in use, each opened once per invocation: see
    /// [`Reads::signing_key`]) — and returns `connection` for the render
    /// context.
    async fn open(
        &mut self,
        d: &Dispatcher<'_>,
        integration: &Integration,
    ) -> Result<Value, StepError> {
        let app = d.app;
        match self {
            Self::Webhook { url, keys } => {
                let at = now();
                for secret in integration
                    .webhook
                    .iter()
                    .flat_map(|w| &w.secrets)
                    .filter(|s| s.expires_at.is_none_or(|e| e > at))
                {
                    let key = d.reads.signing_key(integration, &secret.id, || async {
                        let ctx = webhook_seal_context(integration, &secret.id);
                        let plain =
                            app.envelope.open(&ctx, &secret.sealed).await.map_err(|_| {
                                fail(
                                    "secret_unavailable",
                                    "the endpoint's signing secret could not be opened",
                                    None,
                                )
                            })?;
                        std::str::from_utf8(&plain)
                            .ok()
                            .and_then(|shown| super::webhook::parse_secret(shown).ok())
                            .ok_or_else(|| {
                                fail(
                                    "secret_unavailable",
                                    "the endpoint's signing secret is malformed",
                                    None,
                                )
                            })
                    });
                    keys.push(key.await?);
                }
                if keys.is_empty() {
                    return Err(fail(
                        "secret_unavailable",
                        "the endpoint has no signing secret",
                        None,
                    ));
                }
                Ok(json!({ "api_base": url }))
            }
            Self::Connection(conn) => {
                let Connected {
                    tokens,
                    creds,
                    tenant,
                    connection,
                    ..
                } = &mut **conn;
                let c = d
                    .reads
                    .credentials(tokens, tenant, connection)
                    .await
                    .map_err(token_failure)?;
                let identity = c.connection.identity.clone().unwrap_or_default();
                // The account a path names: a setting where the provider has one
                // (Chatwoot's account id), else the account the check found.
                let account = c
                    .connection
                    .settings
                    .get("account_id")
                    .cloned()
                    .or_else(|| identity.account.clone());
                // The provider's own address (what a person opens), never the
                // deployment's redirect of it: templates build record links from it.
                let api_base = app
                    .catalogue
                    .provider(&c.connection.provider)
                    .and_then(|p| Some((p, p.auth_method(Some(&c.connection.auth_method))?)))
                    .and_then(|(provider, method)| {
                        crate::connector::Connector {
                            provider,
                            method,
                            fields: &c.fields,
                            origin_override: None,
                        }
                        .api_base()
                        .ok()
                    });
                let out = json!({
                    "id": c.connection.id.as_str(),
                    "api_base": api_base,
                    "provider": c.connection.provider,
                    "account_id": account,
                    "account_name": c.connection.label.as_str(),
                    "identity": identity,
                    "settings": c.connection.settings,
                });
                *creds = Some(Credentials::clone(&c));
                Ok(out)
            }
        }
    }

    fn summary(&self, r: &RenderedRequest) -> RequestSummary {
        let host = match self {
            Self::Webhook { url, .. } => url::Url::parse(url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_default(),
            Self::Connection(c) => c.provider.clone(),
        };
        RequestSummary {
            method: r.method.to_string(),
            host,
            path: r.path.chars().take(256).collect(),
            status: None,
        }
    }

    async fn send(&mut self, d: &Dispatcher<'_>, r: &RenderedRequest) -> Sent {
        match self {
            Self::Webhook { .. } => self.deliver(d, r).await,
            Self::Connection(_) => self.call(r, d).await,
        }
    }

    async fn call(&mut self, r: &RenderedRequest, d: &Dispatcher<'_>) -> Sent {
        let timeout = d.call_timeout;
        let Self::Connection(conn) = self else {
            return Sent::Permanent(fail("internal", "not a connection", None));
        };
        let Connected {
            tokens,
            creds,
            budget,
            provider,
            ..
        } = &mut **conn;
        let mut limited = 0;
        loop {
            if let Err(e) = budget.acquire().await {
                tracing::warn!(error = %e, "the rate budget could not be taken");
                return Sent::RateLimited(Some(Duration::from_secs(1)));
            }
            let Some(c) = creds.as_mut() else {
                return Sent::Permanent(fail("connection_unusable", "no credentials", None));
            };
            let csrf = if r.csrf {
                match csrf_token(tokens, c, timeout).await {
                    Ok(t) => Some(t),
                    Err(sent) => return sent,
                }
            } else {
                None
            };
            let generation = c.generation();
            let sent = tokens
                .send_using(c, |connector, http| {
                    let url = match &r.origin {
                        // The provider's own host for this API (redirected to the
                        // sandbox locally, as every catalogue host is).
                        Some(origin) => connector.endpoint(&format!("{origin}{}", r.path)),
                        None => connector.url(&r.path),
                    }
                    .map_err(|e| e.to_string())?;
                    let mut req = http
                        .request(r.method.clone(), url)
                        .timeout(timeout)
                        .header(reqwest::header::ACCEPT, "application/json");
                    if !r.query.is_empty() {
                        req = req.query(&r.query);
                    }
                    for (name, value) in &r.headers {
                        req = req.header(name.as_str(), value.as_str());
                    }
                    if let Some((token, cookies)) = &csrf {
                        req = req.header("x-csrf-token", token.as_str());
                        if !cookies.is_empty() {
                            req = req.header(reqwest::header::COOKIE, cookies.as_str());
                        }
                    }
                    if let Some(body) = &r.body {
                        req = req.json(body);
                    }
                    Ok(req)
                })
                .await;
            if c.generation() != generation {
                // Refreshed after a 401: the invocation's other events use these.
                d.reads.refreshed(c);
            }
            let resp = match sent {
                Ok(resp) => resp,
                Err(TokenError::Unavailable(why)) => {
                    return Sent::Unknown(fail("timeout", why, None));
                }
                Err(e) => return Sent::Permanent(token_failure(e)),
            };
            let status = resp.status().as_u16();
            let retry_after = crate::egress::retry_after(resp.headers());
            let text = match resp.text().await {
                Ok(t) => t,
                Err(e) => {
                    return Sent::Unknown(fail(
                        "timeout",
                        format!("reading the answer: {}", e.without_url()),
                        Some(status),
                    ));
                }
            };
            if status == 429 {
                crate::metrics::count(crate::metrics::Metric::ProviderRateLimited, provider, None);
                limited += 1;
                let wait = retry_after.unwrap_or(Duration::from_secs(2));
                let _ = budget.hold_off(wait).await;
                if limited <= RATE_LIMIT_RETRIES && wait <= MAX_INLINE_WAIT {
                    continue;
                }
                return Sent::RateLimited(Some(wait));
            }
            return classify(status, &text, retry_after);
        }
    }

    async fn deliver(&mut self, d: &Dispatcher<'_>, r: &RenderedRequest) -> Sent {
        let Self::Webhook { url, keys } = self else {
            return Sent::Permanent(fail("internal", "not a webhook", None));
        };
        let message_id = r
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("webhook-id"))
            .map_or("", |(_, v)| v.as_str());
        let body = r.body.clone().unwrap_or(Value::Null);
        let payload = match serde_json::to_vec(&body) {
            Ok(p) => p,
            Err(e) => return Sent::Permanent(fail("render_failed", e.to_string(), None)),
        };
        let timestamp = now().unix_timestamp();
        let refs: Vec<&super::webhook::SigningKey> = keys.iter().map(|k| &**k).collect();
        let signature = match super::webhook::sign(&refs, message_id, timestamp, &payload) {
            Ok(s) => s,
            Err(e) => return Sent::Permanent(fail("integration_invalid", e.to_string(), None)),
        };
        // Locally, an endpoint on the provider sandbox's receiver host goes to the
        // sandbox (deployments have no origin override, so nothing is rewritten there).
        let target = match url::Url::parse(url) {
            Ok(u) if u.host_str().is_some_and(|h| h.ends_with(".sandbox.test")) => {
                crate::egress::rewrite_origin(url, d.app.config.provider_origin_override.as_ref())
            }
            _ => url.clone(),
        };
        let req = d
            .app
            .http
            .post(target.as_str())
            .timeout(Duration::from_secs(15))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", message_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(payload);
        let resp = match d.app.http.send(req).await {
            Ok(r) => r,
            Err(e) => {
                return Sent::Unknown(fail(
                    "timeout",
                    format!("endpoint unreachable: {}", e.without_url()),
                    None,
                ));
            }
        };
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Sent::Ok(Value::Null, status);
        }
        let retry_after = crate::egress::retry_after(resp.headers());
        // Standard Webhooks: any other answer is a failure to retry (a receiver
        // de-duplicates by webhook-id); 410 Gone says the endpoint is no more.
        if status == 410 {
            return Sent::Permanent(fail(
                "endpoint_gone",
                "the endpoint answered 410 Gone",
                Some(status),
            ));
        }
        if status == 429 {
            return Sent::RateLimited(retry_after);
        }
        Sent::Unknown(fail(
            "endpoint_failed",
            format!("the endpoint answered {status}"),
            Some(status),
        ))
    }

    /// Bookkeeping after a success (a webhook endpoint's failure streak ends).
    async fn succeeded(&self, d: &Dispatcher<'_>, integration: &Integration) {
        if let Self::Webhook { .. } = self
            && integration
                .webhook
                .as_ref()
                .is_some_and(|w| w.failing_since.is_some())
        {
            let mut next = integration.clone();
            if let Some(w) = next.webhook.as_mut() {
                w.failing_since = None;
            }
            next.version += 1;
            if let Err(e) = d.integrations.save_state(&next, integration.version).await {
                tracing::warn!(integration = %integration.id, error = %e, "webhook state not saved");
            }
        }
    }

    /// Bookkeeping after a step failed for good: a webhook endpoint failing for days
    /// is disabled, with an event.
    async fn failed(&self, d: &Dispatcher<'_>, integration: &Integration, _dispatch: &Dispatch) {
        let Self::Webhook { .. } = self else { return };
        let Some(w) = &integration.webhook else {
            return;
        };
        let at = now();
        let since = w.failing_since.unwrap_or(at);
        let mut next = integration.clone();
        let disable = at - since >= WEBHOOK_DISABLE_AFTER;
        if let Some(nw) = next.webhook.as_mut() {
            nw.failing_since = Some(since);
            if disable {
                nw.disabled_at = Some(at);
            }
        }
        if w.failing_since.is_some() && !disable {
            return;
        }
        next.version += 1;
        if let Err(e) = d.integrations.save_state(&next, integration.version).await {
            tracing::warn!(integration = %integration.id, error = %e, "webhook state not saved");
            return;
        }
        if disable {
            let detail = json!({
                "tenant_id": integration.tenant.as_str(),
                "integration_id": integration.id.as_str(),
                "failing_since": since.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
            });
            if let Err(e) = d
                .app
                .events
                .publish(crate::events::WEBHOOK_DISABLED, &detail)
                .await
            {
                tracing::error!(integration = %integration.id, error = %e, "endpoint-disabled event not published");
            }
        }
    }
}

/// Marks step `i`'s next request in flight when it is sent as soon as the step starts
/// and its outcome, if cut off, is found by a lookup (see `requests`): the write about
/// to be made (the dispatch's creation, the save of the step before) then carries the
/// mark the step would otherwise store in a write of its own just before sending.
/// Stored and not yet sent, the mark is what the step's own write would have left had
/// the worker stopped right after it: a later run looks the effect up first. Whether
/// it marked.
fn premark(d: &mut Dispatch, i: usize, known: &[Integration]) -> bool {
    let Some(step) = d.steps.get_mut(i) else {
        return false;
    };
    if step.status != StepStatus::Pending || step.progress.in_flight.is_some() {
        return false;
    }
    let Some(integration) = known.iter().find(|n| n.id == step.integration_id) else {
        return false;
    };
    if integration.request.is_some() {
        return false; // a Custom API request carries an idempotency key
    }
    let k = step.progress.done;
    let first = template::catalogue()
        .get(&integration.provider)
        .and_then(|t| t.action(&integration.action))
        .and_then(|a| a.requests.get(k));
    let Some(req) = first else {
        return false;
    };
    let marked = matches!(
        req.idempotency,
        Some(Idempotency::Lookup { .. } | Idempotency::AtMostOnce)
    );
    if req.skip_if.is_some() || !marked {
        return false;
    }
    let p = &mut step.progress;
    p.in_flight = Some(k);
    p.in_flight_at = Some(ms(now()));
    p.in_flight_answered = false;
    true
}

/// How long a lookup that found nothing must still wait before it proves the effect
/// was not made: an attempt that was cut off (a timeout, a lost connection, a killed
/// worker) may land at the provider after its client gave up, for up to a call's timeout
/// (`call_timeout`, the same for every invocation) and as long again, counted from when
/// it was cut off (or sent, for a killed worker). None when the lookup is proof now (the
/// attempt was answered, or that time is past).
fn unsettled(p: &super::log::Progress, call_timeout: Duration) -> Option<Duration> {
    if p.in_flight_answered {
        return None;
    }
    let until = p.in_flight_at? + (call_timeout * 2).as_millis() as i64;
    let left = until - ms(now());
    (left > 0).then(|| Duration::from_millis(left as u64))
}

/// SAP's CSRF handshake: a GET of the service root with `x-csrf-token: Fetch`
/// returns the token and the session cookies every write must carry.
async fn csrf_token(
    tokens: &Tokens<'_>,
    creds: &mut Credentials,
    timeout: Duration,
) -> Result<(String, String), Sent> {
    let resp = tokens
        .send_using(creds, |connector, http| {
            let url = connector.url("/").map_err(|e| e.to_string())?;
            Ok(http
                .get(url)
                .timeout(timeout)
                .header("x-csrf-token", "Fetch"))
        })
        .await
        .map_err(|e| match e {
            TokenError::Unavailable(why) => Sent::Unknown(fail("timeout", why, None)),
            e => Sent::Permanent(token_failure(e)),
        })?;
    let token = resp
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .filter(|t| !t.is_empty() && !t.eq_ignore_ascii_case("required"))
        .map(str::to_owned)
        .ok_or_else(|| {
            Sent::Permanent(fail(
                "csrf_failed",
                "the service gave no CSRF token",
                Some(resp.status().as_u16()),
            ))
        })?;
    let cookies: Vec<String> = resp
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|c| c.split(';').next().map(str::to_owned))
        .collect();
    Ok((token, cookies.join("; ")))
}

fn token_failure(e: TokenError) -> StepError {
    match e {
        TokenError::NeedsReauth => fail(
            "connection_unusable",
            "the connection needs to be reconnected",
            None,
        ),
        TokenError::NotFound => fail("connection_unusable", "the connection was deleted", None),
        TokenError::Unusable(why) => fail("connection_unusable", why, None),
        TokenError::Unavailable(why) => fail("timeout", why, None),
        other => fail("connection_unusable", other.to_string(), None),
    }
}

/// A provider's answer: 2xx is done (its JSON, or null for an empty body); 5xx and
/// 408 may have done it; other 4xx refused it.
fn classify(status: u16, text: &str, retry_after: Option<Duration>) -> Sent {
    if (200..300).contains(&status) {
        let answer = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(text).unwrap_or(Value::Null)
        };
        // Zoho answers a refused record inside a 2xx: `data[0].status` is "error".
        if answer.pointer("/data/0/status").and_then(Value::as_str) == Some("error") {
            return Sent::Permanent(fail("rejected", provider_message(text), Some(status)));
        }
        return Sent::Ok(answer, status);
    }
    let message = provider_message(text);
    match status {
        503 if retry_after.is_some() => Sent::RateLimited(retry_after),
        408 | 500..=599 => Sent::Unknown(fail("provider_error", message, Some(status))),
        401 | 403 => Sent::Permanent(fail("unauthorized", message, Some(status))),
        _ => Sent::Permanent(fail("rejected", message, Some(status))),
    }
}

/// The provider's own words from an error body (its message fields), clipped; never
/// the whole body (it may echo what was sent).
fn provider_message(text: &str) -> String {
    let Ok(v) = serde_json::from_str::<Value>(text) else {
        return "the provider refused the request".to_owned();
    };
    let pick = |v: &Value| -> Option<String> {
        for p in [
            "/message",
            "/error/message/value",
            "/error/message",
            "/description",
            "/error",
            "/0/message",
            "/data/0/message",
            "/errors/0/message",
        ] {
            if let Some(s) = v.pointer(p).and_then(Value::as_str) {
                return Some(s.to_owned());
            }
        }
        None
    };
    clip(&pick(&v).unwrap_or_else(|| "the provider refused the request".to_owned()))
}

/// The sealing context of a webhook endpoint's secret: bound to its tenant, its
/// integration and the secret's id.
pub fn webhook_seal_context(
    integration: &Integration,
    secret_id: &str,
) -> crate::crypto::SealContext {
    crate::crypto::SealContext::new(
        &integration.tenant,
        format!("webhook#{}#{secret_id}", integration.id),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::log::Progress;

    #[test]
    fn a_lookup_miss_is_proof_only_once_a_cut_off_attempt_can_no_longer_land() {
        let at = ms(now());
        let cut_off = Progress {
            in_flight: Some(0),
            in_flight_at: Some(at),
            ..Progress::default()
        };
        let wait = unsettled(&cut_off, CALL_TIMEOUT).expect("a wait");
        assert!(wait > CALL_TIMEOUT && wait <= CALL_TIMEOUT * 2, "{wait:?}");
        // Long ago: proof now.
        let old = Progress {
            in_flight_at: Some(at - (CALL_TIMEOUT * 2).as_millis() as i64 - 1),
            ..cut_off.clone()
        };
        assert_eq!(unsettled(&old, CALL_TIMEOUT), None);
        // Answered with a 5xx: the provider is done with it.
        let answered = Progress {
            in_flight_answered: true,
            ..cut_off.clone()
        };
        assert_eq!(unsettled(&answered, CALL_TIMEOUT), None);
        // Marked before this field existed: as before, proof now.
        let unmarked = Progress {
            in_flight_at: None,
            ..cut_off
        };
        assert_eq!(unsettled(&unmarked, CALL_TIMEOUT), None);
    }
}

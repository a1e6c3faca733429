//! The event dispatcher. Two kinds of invocation:
//!
//! - an SQS batch from the dispatch queue: each message is an EventBridge event (a
//!   product event or one of Conduit's, delivered by the bus's rules) or a request to
//!   resume a stored dispatch (`{"resume": …}`, from the sweep or `POST
//!   /v1/dispatches/{id}/retry`). Each runs its chain ([`conduit::dispatch::engine`]).
//!   An event straight from the bus has no message group: it is first sent back to the
//!   queue grouped by its tenant (one batch send per batch), so the fair queue shares
//!   the workers between tenants.
//!   A message that is not a dispatchable event, or whose tenant Conduit does not know,
//!   goes to the dead-letter queue at once with its reason (a `reason` attribute) and is
//!   acknowledged: never dropped silently, never retried into a crash loop. A failure
//!   of our own (the store) reports the message, so SQS delivers it again (and after
//!   the queue's receive limit, moves it to the dead-letter queue).
//! - the minute's schedule (`{"kind": "due_retries"}`): the dispatches whose waiting
//!   step is due go back on the queue as resume messages (a fresh invocation per
//!   message, so a long backoff is never a Lambda → SQS → Lambda chain).

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
use conduit::app::App;
use conduit::dispatch::creations::Creations;
use conduit::dispatch::engine::{Dispatcher, Handled};
use conduit::dispatch::inbound::DispatchEvent;
use conduit::dispatch::reads::Reads;
use conduit::domain::{DispatchId, TenantId};
use conduit::queue::{Publisher, TenantWork};
use conduit::store::dispatches::Dispatches;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// Messages handled at once within one batch (each is one tenant's chain; a slow
/// provider holds one slot, not the batch).
pub const CONCURRENCY: usize = 10;
/// Work stops being taken this long before the invocation's deadline.
const MARGIN: Duration = Duration::from_secs(30);
/// The function's timeout as the template sets it (the deadline of an invocation).
const TIMEOUT: Duration = Duration::from_secs(120);
/// Due dispatches queued by one sweep.
const SWEEP_MAX: usize = 1000;

/// A request to go on with a stored dispatch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resume {
    /// The tenant.
    pub tenant_id: TenantId,
    /// The dispatch.
    pub dispatch_id: DispatchId,
}

/// The message form of [`Resume`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResumeMessage {
    /// What to resume.
    pub resume: Resume,
}

impl TenantWork for ResumeMessage {
    fn tenant(&self) -> &str {
        self.resume.tenant_id.as_str()
    }
}

fn error(e: impl std::fmt::Display) -> lambda_runtime::Error {
    lambda_runtime::Error::from(e.to_string())
}

/// Handles one invocation: an SQS batch (answers `{"batchItemFailures": [...]}`) or the
/// schedule's sweep (answers `{"queued": n}`).
pub async fn handle_event(app: &App, event: Value) -> Result<Value, lambda_runtime::Error> {
    if event.get("kind").and_then(Value::as_str) == Some("due_retries") {
        return sweep(app).await;
    }
    let batch: SqsEvent =
        serde_json::from_value(event).map_err(|e| error(format!("not an SQS event: {e}")))?;
    let dlq = conduit::queue::dispatch_dlq(app).map_err(error)?;
    let deadline = Instant::now() + TIMEOUT.saturating_sub(MARGIN);
    let dlq = &dlq;
    // Events straight from the bus carry no group (an EventBridge rule cannot set one
    // on a standard queue): they go back on the queue grouped by tenant, so the queue
    // shares its workers fairly between tenants (SQS fair queues) and one tenant's
    // burst or slow chain never holds up another's events.
    let (ungrouped, records): (Vec<_>, Vec<_>) = batch
        .records
        .into_iter()
        .map(|r| (tenant_to_group(&r), r))
        .partition(|(tenant, _)| tenant.is_some());
    let mut failures = regroup(app, ungrouped).await;
    // The batch's events share what they read (a batch is mostly one tenant's), and
    // the creations of their dispatches go in shared writes.
    let reads = Arc::new(Reads::new());
    let reads = &reads;
    let creations = Arc::new(Creations::new(Dispatches::new(app.table.clone())));
    let creations = &creations;
    let run: Vec<String> = futures::stream::iter(records.into_iter().map(|(_, r)| r))
        .map(|record| async move {
            let id = record.message_id.clone().unwrap_or_default();
            let body = record.body.as_deref().unwrap_or_default();
            match Box::pin(message(app, dlq, (reads, creations), &id, body, deadline)).await {
                Ok(()) => None,
                Err(why) => {
                    tracing::warn!(message_id = %id, reason = %why, "dispatch message will be retried");
                    Some(id)
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .filter_map(|f| async move { f })
        .collect()
        .await;
    failures.extend(run);
    Ok(json!({
        "batchItemFailures": failures
            .into_iter()
            .map(|id| json!({ "itemIdentifier": id }))
            .collect::<Vec<_>>()
    }))
}

/// The tenant of a record to put back on the queue under its group: a well-formed
/// event that came without one. (Malformed ones go to the dead-letter queue as they
/// are; resume messages are always sent grouped.)
fn tenant_to_group(record: &SqsMessage) -> Option<TenantId> {
    if record.attributes.contains_key("MessageGroupId") {
        return None;
    }
    let json: Value = serde_json::from_str(record.body.as_deref()?).ok()?;
    if json.get("resume").is_some() {
        return None;
    }
    DispatchEvent::from_envelope(&json)
        .ok()
        .map(|e| e.tenant().clone())
}

/// Sends the ungrouped events back grouped by tenant; the ids of those that could not
/// be sent (they come back from the queue and are tried again).
async fn regroup(app: &App, records: Vec<(Option<TenantId>, SqsMessage)>) -> Vec<String> {
    if records.is_empty() {
        return Vec::new();
    }
    let ids = || {
        records
            .iter()
            .map(|(_, r)| r.message_id.clone().unwrap_or_default())
            .collect::<Vec<_>>()
    };
    let queue = match conduit::queue::dispatch_queue(app) {
        Ok(q) => q,
        Err(e) => {
            tracing::error!(error = %e, "events not regrouped: no dispatch queue");
            return ids();
        }
    };
    let bodies: Vec<(String, String)> = records
        .iter()
        .filter_map(|(tenant, r)| Some((r.body.clone()?, tenant.as_ref()?.as_str().to_owned())))
        .collect();
    match queue.send_bodies(&bodies).await {
        Ok(()) => {
            tracing::debug!(events = bodies.len(), "events regrouped by tenant");
            Vec::new()
        }
        Err(e) => {
            tracing::warn!(error = %e, "events not regrouped; they will be retried");
            ids()
        }
    }
}

/// One message: Ok when it is done with (dispatched, waiting, or set aside), Err when
/// it must come back.
async fn message(
    app: &App,
    dlq: &Publisher,
    (reads, creations): (&Arc<Reads>, &Arc<Creations>),
    id: &str,
    body: &str,
    deadline: Instant,
) -> Result<(), String> {
    let dispatcher = Dispatcher::new(app, format!("sqs-{id}"), deadline)
        .with_reads(Arc::clone(reads))
        .with_creations(Arc::clone(creations));
    let json: Value = match serde_json::from_str(body) {
        Ok(v) => v,
        Err(_) => return set_aside(dlq, id, body, "-", "the message is not JSON").await,
    };
    if json.get("resume").is_some() {
        let Ok(m) = serde_json::from_value::<ResumeMessage>(json) else {
            return set_aside(
                dlq,
                id,
                body,
                "-",
                "a resume message without a tenant and dispatch id",
            )
            .await;
        };
        return match Box::pin(dispatcher.resume(&m.resume.tenant_id, &m.resume.dispatch_id)).await {
            Ok(h) => {
                log(&h);
                Ok(())
            }
            Err(conduit::dispatch::engine::DispatchError::EventMissing) => {
                set_aside(
                    dlq,
                    id,
                    body,
                    m.resume.tenant_id.as_str(),
                    "the dispatch or its event is gone",
                )
                .await
            }
            Err(e) => Err(e.to_string()),
        };
    }
    let event = match DispatchEvent::from_envelope(&json) {
        Ok(e) => e,
        Err(invalid) => {
            let tenant = json
                .pointer("/detail/tenant_id")
                .and_then(Value::as_str)
                .and_then(|t| TenantId::parse(t).ok());
            let group = tenant.as_ref().map_or("-", TenantId::as_str);
            return set_aside(dlq, id, body, group, &invalid.to_string()).await;
        }
    };
    match Box::pin(dispatcher.event(&event)).await {
        Ok(Handled::UnknownTenant) => {
            set_aside(
                dlq,
                id,
                body,
                event.tenant().as_str(),
                "unknown tenant: Conduit has nothing stored for it",
            )
            .await
        }
        Ok(h) => {
            log(&h);
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    }
}

fn log(h: &Handled) {
    match h {
        Handled::Done(id, status) => {
            tracing::info!(dispatch = %id, status = status.as_str(), "dispatch done")
        }
        Handled::Waiting(id) => tracing::info!(dispatch = %id, "dispatch waits for a retry"),
        Handled::Busy(id) => {
            tracing::info!(dispatch = %id, "dispatch is being run by another invocation")
        }
        Handled::UnknownTenant => {}
    }
}

/// Sends a message to the dead-letter queue with its reason; Err (the message comes
/// back) only if that send fails, so nothing is lost.
async fn set_aside(
    dlq: &Publisher,
    id: &str,
    body: &str,
    group: &str,
    reason: &str,
) -> Result<(), String> {
    tracing::error!(message_id = %id, reason = %reason, "dispatch message set aside in the dead-letter queue");
    dlq.set_aside(body, group, reason)
        .await
        .map_err(|e| format!("could not set the message aside: {e}"))
}

/// Queues a resume message for every due dispatch.
async fn sweep(app: &App) -> Result<Value, lambda_runtime::Error> {
    let queue = conduit::queue::dispatch_queue(app).map_err(error)?;
    let now = time::OffsetDateTime::now_utc();
    let now_ms = i64::try_from(now.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
    let due = conduit::store::dispatches::Dispatches::new(app.table.clone())
        .due(now_ms, SWEEP_MAX)
        .await
        .map_err(error)?;
    let messages: Vec<ResumeMessage> = due
        .into_iter()
        .map(|(tenant_id, dispatch_id)| ResumeMessage {
            resume: Resume {
                tenant_id,
                dispatch_id,
            },
        })
        .collect();
    queue.send_all(&messages).await.map_err(error)?;
    tracing::info!(queued = messages.len(), "due dispatches queued");
    Ok(json!({ "queued": messages.len() }))
}

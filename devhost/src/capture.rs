//! What Conduit publishes on EventBridge, captured locally: an SQS queue and, on each
//! event bus of the stack, a rule matching Conduit's source with the queue as target
//! (moto delivers EventBridge → SQS as AWS does). [`EventCapture::drain`] reads the
//! queue; everything read stays in memory (newest last, the last
//! [`MAX_KEPT`]) for [`EventCapture::all`] and the dev host's `GET /_devhost/events`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, QueueAttributeName};
use serde_json::{Value, json};
use tokio::sync::Mutex;

use crate::stack::LocalStack;

/// The source the capture rule matches: every event Conduit publishes.
pub const CAPTURED_SOURCE: &str = conduit::events::SOURCE;
/// How many captured events are kept in memory.
pub const MAX_KEPT: usize = 1000;
/// How often [`EventCapture::wait_for`] polls the queue.
const POLL_EVERY: Duration = Duration::from_millis(200);

/// The capture of a stack's events; cheap to clone (clones share the queue and the
/// history).
#[derive(Clone)]
pub struct EventCapture {
    inner: Result<Arc<Inner>, Arc<str>>,
}

struct Inner {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    history: Mutex<History>,
}

#[derive(Default)]
struct History {
    events: VecDeque<Value>,
    /// How many of `events` [`EventCapture::drain`] has already returned.
    drained: usize,
}

impl std::fmt::Debug for EventCapture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.inner {
            Ok(inner) => f
                .debug_struct("EventCapture")
                .field("queue_url", &inner.queue_url)
                .finish(),
            Err(reason) => f.debug_tuple("EventCapture::Off").field(reason).finish(),
        }
    }
}

impl EventCapture {
    /// A capture that captures nothing; every read fails with `reason`.
    pub fn off(reason: impl Into<String>) -> Self {
        Self {
            inner: Err(Arc::from(reason.into())),
        }
    }

    /// Creates (or reuses) the queue `{stack}-devhost-events` and, on every
    /// `AWS::Events::EventBus` of the stack, the rule `{stack}-devhost-capture`
    /// matching `{"source": ["conduit.integrations"]}` with the queue as its target.
    /// Fails when the stack has no event bus.
    pub async fn install(stack: &LocalStack) -> Result<Self> {
        let buses: Vec<String> = stack
            .template()
            .resources
            .values()
            .filter(|r| r.kind == "AWS::Events::EventBus")
            .map(|r| stack.ref_value(&r.logical_id))
            .collect::<Result<_>>()
            .context("naming the stack's event buses")?;
        if buses.is_empty() {
            bail!("the template has no AWS::Events::EventBus to capture events from");
        }
        let aws = stack.sdk_config();
        let sqs = aws_sdk_sqs::Client::new(aws);
        let queue_name = format!("{}-devhost-events", stack.stack_name());
        let queue_url = sqs
            .create_queue()
            .queue_name(&queue_name)
            .send()
            .await
            .map_err(sdk_error)
            .with_context(|| format!("creating the capture queue {queue_name}"))?
            .queue_url
            .ok_or_else(|| anyhow!("SQS returned no URL for {queue_name}"))?;
        let queue_arn = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(sdk_error)
            .with_context(|| format!("reading the ARN of {queue_name}"))?
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .ok_or_else(|| anyhow!("SQS returned no ARN for {queue_name}"))?;

        let events = aws_sdk_eventbridge::Client::new(aws);
        let rule = format!("{}-devhost-capture", stack.stack_name());
        let pattern = json!({ "source": [CAPTURED_SOURCE] }).to_string();
        for bus in &buses {
            events
                .put_rule()
                .name(&rule)
                .event_bus_name(bus)
                .event_pattern(&pattern)
                .description("devhost: copies Conduit's events to a queue for local inspection")
                .send()
                .await
                .map_err(sdk_error)
                .with_context(|| format!("creating the capture rule {rule} on {bus}"))?;
            let target = aws_sdk_eventbridge::types::Target::builder()
                .id("devhost-capture")
                .arn(&queue_arn)
                .build()
                .context("building the capture rule's target")?;
            let out = events
                .put_targets()
                .rule(&rule)
                .event_bus_name(bus)
                .targets(target)
                .send()
                .await
                .map_err(sdk_error)
                .with_context(|| format!("pointing the capture rule {rule} at {queue_name}"))?;
            if out.failed_entry_count() > 0 {
                bail!("EventBridge refused the capture rule's target on {bus}");
            }
        }
        tracing::debug!(target: "devhost", queue = %queue_name, buses = ?buses, "capturing Conduit's events");
        Ok(Self {
            inner: Ok(Arc::new(Inner {
                sqs,
                queue_url,
                history: Mutex::new(History::default()),
            })),
        })
    }

    /// Whether events are captured.
    pub fn is_on(&self) -> bool {
        self.inner.is_ok()
    }

    fn inner(&self) -> Result<&Inner> {
        self.inner
            .as_deref()
            .map_err(|reason| anyhow!("events are not captured: {reason}"))
    }

    /// The events that arrived since the last `drain` (EventBridge envelopes as the
    /// rule delivers them: `version`, `id`, `detail-type`, `source`, `time`, `region`,
    /// `resources`, `detail` — moto leaves out `account`), oldest first. Reads and deletes
    /// everything currently in the queue.
    pub async fn drain(&self) -> Result<Vec<Value>> {
        let inner = self.inner()?;
        let mut history = inner.history.lock().await;
        inner.receive_all(&mut history).await?;
        let fresh: Vec<Value> = history
            .events
            .iter()
            .skip(history.drained)
            .cloned()
            .collect();
        history.drained = history.events.len();
        Ok(fresh)
    }

    /// Every event captured so far (the last [`MAX_KEPT`]), oldest first, after
    /// reading the queue. Does not change what [`EventCapture::drain`] returns next.
    pub async fn all(&self) -> Result<Vec<Value>> {
        let inner = self.inner()?;
        let mut history = inner.history.lock().await;
        inner.receive_all(&mut history).await?;
        Ok(history.events.iter().cloned().collect())
    }

    /// Waits up to `timeout` for an event with this `detail-type` whose `detail`
    /// satisfies `predicate`, among those [`EventCapture::drain`] has not returned yet;
    /// returns it without consuming anything.
    pub async fn wait_for(
        &self,
        detail_type: &str,
        predicate: impl Fn(&Value) -> bool,
        timeout: Duration,
    ) -> Result<Value> {
        let inner = self.inner()?;
        let deadline = Instant::now() + timeout;
        loop {
            {
                let mut history = inner.history.lock().await;
                inner.receive_all(&mut history).await?;
                let found = history
                    .events
                    .iter()
                    .skip(history.drained)
                    .find(|e| {
                        e.get("detail-type").and_then(Value::as_str) == Some(detail_type)
                            && predicate(e.get("detail").unwrap_or(&Value::Null))
                    })
                    .cloned();
                if let Some(event) = found {
                    return Ok(event);
                }
                if Instant::now() >= deadline {
                    let seen: Vec<&str> = history
                        .events
                        .iter()
                        .skip(history.drained)
                        .filter_map(|e| e.get("detail-type").and_then(Value::as_str))
                        .collect();
                    bail!(
                        "no matching {detail_type} event within {:?}; undrained events: {seen:?}",
                        timeout
                    );
                }
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }
}

impl Inner {
    /// Moves everything in the queue into `history`.
    async fn receive_all(&self, history: &mut History) -> Result<()> {
        loop {
            let out = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .send()
                .await
                .map_err(sdk_error)
                .context("reading the event capture queue")?;
            let messages = out.messages();
            if messages.is_empty() {
                return Ok(());
            }
            let mut done = Vec::new();
            for (i, message) in messages.iter().enumerate() {
                match message.body().map(serde_json::from_str::<Value>) {
                    Some(Ok(event)) => {
                        history.events.push_back(event);
                        if history.events.len() > MAX_KEPT {
                            history.events.pop_front();
                            history.drained = history.drained.saturating_sub(1);
                        }
                    }
                    _ => {
                        tracing::warn!(target: "devhost", "dropped a captured message that is not JSON")
                    }
                }
                if let Some(handle) = message.receipt_handle() {
                    done.push(
                        DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(handle)
                            .build()
                            .context("building a capture queue delete")?,
                    );
                }
            }
            if !done.is_empty() {
                self.sqs
                    .delete_message_batch()
                    .queue_url(&self.queue_url)
                    .set_entries(Some(done))
                    .send()
                    .await
                    .map_err(sdk_error)
                    .context("deleting read messages from the event capture queue")?;
            }
        }
    }
}

fn sdk_error(err: impl std::error::Error) -> anyhow::Error {
    anyhow!("{}", aws_sdk_sqs::error::DisplayErrorContext(err))
}

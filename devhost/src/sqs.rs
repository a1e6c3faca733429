//! The template's `SQS` events, run locally the way Lambda's event source mappings run
//! them: pollers receive batches from each queue (long polls of at most 1 s, up to
//! `BatchSize`, gathering for `MaximumBatchingWindowInSeconds` when given), hand the
//! function an SQS event exactly as Lambda sends it, and settle the batch from what the
//! function returns:
//!
//! - it returns, without `ReportBatchItemFailures`: every message is deleted;
//! - it returns `{"batchItemFailures": [{"itemIdentifier": messageId}, …]}` with
//!   `ReportBatchItemFailures`: all but those are deleted (an empty or null list, `{}`
//!   or `null` mean none failed; an unknown, empty or missing id, or a response of
//!   another shape, fails the whole batch, as Lambda does);
//! - it fails (an error, a panic, its timeout, or a kill planned with
//!   [`crate::invoker::KillSwitch`]): nothing is deleted.
//!
//! Messages not deleted become visible again after the queue's visibility timeout, and
//! the queue's redrive policy moves them to its dead-letter queue after
//! `maxReceiveCount` receives (moto does this itself, on receive, as SQS does).
//! [`QueueOptions::retry_delay`] is a local-only speed-up: failed messages are made
//! visible again after that delay instead of the visibility timeout.
//!
//! Up to `ScalingConfig.MaximumConcurrency` batches of one event source are in flight at
//! once (default [`DEFAULT_CONCURRENCY`], at most the function's
//! `ReservedConcurrentExecutions`). Each invocation is logged with the function, the
//! number of messages, how many failed and how long it took — never a message body.
//!
//! Recursive loop detection ([`crate::trace`]): each message's `AWSTraceHeader` says
//! which chain it continues; the invocation runs with that chain's trace header (of a
//! batch, the message furthest along its chain), so what the function sends carries
//! it on. A message that would invoke a function more than 16 times in one chain,
//! when the function's `RecursiveLoop` is not `Allow`, is stopped as Lambda stops it:
//! it is not handed to the function, it moves to the queue's dead-letter queue (or is
//! dropped when the queue has none), a warning is logged and the event source's
//! `recursive_invocations_dropped` (Lambda's `RecursiveInvocationsDropped`) counts it.
//!
//! Fair queues: messages sent with a `MessageGroupId` to a standard queue make it an
//! SQS fair queue, where the group is the tenant. moto delivers them in send order, so
//! the pollers play SQS's part: once received messages carry groups, they look up to
//! [`FAIR_LOOKAHEAD`] messages into the queue, hold what they received (in flight
//! in moto) and hand the function, one message at a time, the held message of the
//! group with the fewest messages in flight (the earliest received among equals); a
//! message without a group is a group of its own. So a tenant with a backlog never
//! holds back another tenant's message that is within the look-ahead. Not reproduced:
//! SQS only reorders once a tenant counts as noisy (over 10% of the messages in flight
//! and at least 30 of them, or over 10% of the processing time) and sees the whole
//! backlog; here the fewest-in-flight rule always applies and sees 100 messages. A
//! held message is handed back to the queue (visible at once) after half the queue's
//! visibility timeout, so that it is never delivered twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use aws_lambda_events::encodings::Base64Data;
use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage, SqsMessageAttribute};
use aws_sdk_sqs::types::{
    ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry, Message,
    MessageSystemAttributeName, QueueAttributeName,
};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::invoker::{EventFunction, EventFunctions, Outcome};
use crate::stack::LocalStack;
use crate::trace::{self, TraceHeader};

/// Batches of one event source in flight at once when the template sets no
/// `ScalingConfig.MaximumConcurrency`.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// The longest a poller's `ReceiveMessage` waits for messages.
const LONG_POLL_SECS: i32 = 1;
/// Numbers the batches being invoked (diagnostics).
static BATCH_IDS: AtomicU64 = AtomicU64::new(0);
/// The longest one SQS request of the pollers may take (a long poll is one second).
const SQS_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`QueuePollers::shutdown`] lets invocations in progress finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a poller waits after SQS failed it before trying again.
const ERROR_BACKOFF: Duration = Duration::from_secs(1);
/// How often [`QueueMonitor::wait_queues_idle`] looks.
const IDLE_POLL: Duration = Duration::from_millis(50);
/// How long [`QueueMonitor::dead_letters`] hides the messages it reads while it reads.
const PEEK_VISIBILITY_SECS: i32 = 30;
/// How many messages of a fair queue (messages with groups) the pollers of one event
/// source hold to choose from.
pub const FAIR_LOOKAHEAD: usize = 100;
/// A queue's visibility timeout when SQS does not say (SQS's default).
const DEFAULT_VISIBILITY: Duration = Duration::from_secs(30);

/// Whether and how the queues are polled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueOptions {
    /// Poll the template's SQS event sources into their functions (default: on).
    pub run: bool,
    /// Local-only speed-up: make the messages of a failed invocation visible again
    /// after this delay (`ChangeMessageVisibility`) instead of the queue's visibility
    /// timeout. `None` (default): as in AWS, they wait out the visibility timeout.
    pub retry_delay: Option<Duration>,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            run: true,
            retry_delay: None,
        }
    }
}

/// How many messages a queue holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct QueueDepth {
    /// Messages available to receive (`ApproximateNumberOfMessages`).
    pub visible: u64,
    /// Messages received and neither deleted nor visible again
    /// (`ApproximateNumberOfMessagesNotVisible`).
    pub in_flight: u64,
    /// Messages sent with a delay that has not passed
    /// (`ApproximateNumberOfMessagesDelayed`).
    pub delayed: u64,
}

impl QueueDepth {
    /// Whether the queue holds nothing at all.
    pub fn is_empty(&self) -> bool {
        self.visible == 0 && self.in_flight == 0 && self.delayed == 0
    }
}

/// One SQS event source of the template, polled into its function.
struct Source {
    function: Arc<EventFunction>,
    event: String,
    /// The logical id of the queue, when it is one of the stack's.
    queue_id: Option<String>,
    queue_url: String,
    queue_arn: String,
    batch_size: usize,
    batching_window: Option<Duration>,
    report_batch_item_failures: bool,
    concurrency: usize,
    running: AtomicUsize,
    /// The batches being invoked now, by id: since when, and what (for diagnostics).
    under_way: Mutex<BTreeMap<u64, (Instant, String)>>,
    invocations: AtomicU64,
    messages: AtomicU64,
    failed_messages: AtomicU64,
    failed_invocations: AtomicU64,
    /// Messages stopped as recursive loops.
    recursive_dropped: AtomicU64,
    /// Fair queue emulation: what the pollers hold and what is in flight per group.
    fair: Mutex<FairShare>,
    /// How long a message may be held before it goes back to the queue.
    hold_limit: Duration,
}

/// The messages of a fair queue the pollers of one event source hold, and how many of
/// each group the function has in hand.
#[derive(Default)]
struct FairShare {
    /// Received and not yet handed to the function, oldest first.
    held: Vec<Held>,
    /// Handed to the function and not yet settled, by group.
    in_flight: BTreeMap<String, usize>,
}

struct Held {
    message: Message,
    group: String,
    received: Instant,
}

impl FairShare {
    fn hold(&mut self, messages: Vec<Message>) {
        let received = Instant::now();
        for message in messages {
            self.held.push(Held {
                group: group_key(&message),
                message,
                received,
            });
        }
    }

    /// Takes out the messages held `limit` or longer.
    fn take_stale(&mut self, limit: Duration) -> Vec<Message> {
        let (stale, fresh): (Vec<Held>, Vec<Held>) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|h| h.received.elapsed() >= limit);
        self.held = fresh;
        stale.into_iter().map(|h| h.message).collect()
    }

    /// Up to `n` held messages, each from the group with the fewest messages in
    /// flight (the earliest received among equals), now counted in flight.
    fn pick(&mut self, n: usize) -> Vec<Message> {
        let mut batch = Vec::new();
        while batch.len() < n {
            let Some(i) = (0..self.held.len()).min_by_key(|&i| {
                let group = &self.held[i].group;
                (self.in_flight.get(group).copied().unwrap_or(0), i)
            }) else {
                break;
            };
            let held = self.held.remove(i);
            *self.in_flight.entry(held.group).or_default() += 1;
            batch.push(held.message);
        }
        batch
    }

    /// The function is done with messages of these groups.
    fn settle(&mut self, groups: &[String]) {
        for group in groups {
            if let Some(n) = self.in_flight.get_mut(group) {
                *n -= 1;
                if *n == 0 {
                    self.in_flight.remove(group);
                }
            }
        }
    }
}

/// A message's `MessageGroupId`, if it was sent with one.
fn group_of(message: &Message) -> Option<&str> {
    message
        .attributes()
        .and_then(|a| a.get(&MessageSystemAttributeName::MessageGroupId))
        .map(String::as_str)
}

/// The group a message counts in: its `MessageGroupId`, else a group of its own.
fn group_key(message: &Message) -> String {
    match group_of(message) {
        Some(group) => format!("group:{group}"),
        None => format!("message:{}", message.message_id().unwrap_or_default()),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Shared {
    sqs: aws_sdk_sqs::Client,
    region: String,
    /// The stack's queues by logical id: (URL, ARN).
    queues: BTreeMap<String, (String, String)>,
    sources: Vec<Arc<Source>>,
    retry_delay: Option<Duration>,
    /// Whether the pollers run at all ([`QueueOptions::run`]).
    polling: bool,
    paused: watch::Sender<bool>,
}

/// Reads the queues and steers the pollers; cheap to clone.
#[derive(Clone)]
pub struct QueueMonitor {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for QueueMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueMonitor")
            .field("queues", &self.shared.queues.keys().collect::<Vec<_>>())
            .field("sources", &self.shared.sources.len())
            .finish()
    }
}

/// The running pollers; they stop on [`QueuePollers::shutdown`] or drop.
pub struct QueuePollers {
    monitor: QueueMonitor,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for QueuePollers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueuePollers")
            .field("monitor", &self.monitor)
            .field("pollers", &self.tasks.len())
            .finish()
    }
}

impl QueuePollers {
    /// Finds every `SQS` event of `stack`'s template whose function is in `functions`
    /// (logging those that are not: no event handler registered) and, with
    /// `options.run`, starts its pollers.
    pub async fn start(
        stack: &LocalStack,
        functions: &EventFunctions,
        options: QueueOptions,
    ) -> Result<Self> {
        // A request moto never answers would hold a poller (and its batch, invisible
        // for the queue's visibility timeout) for good: each attempt is bounded and
        // retried, as the event source mapping's own requests are.
        let config = aws_sdk_sqs::config::Builder::from(stack.sdk_config())
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .operation_attempt_timeout(SQS_ATTEMPT_TIMEOUT)
                    .build(),
            )
            .build();
        let sqs = aws_sdk_sqs::Client::from_conf(config);
        let queues = stack.queues();
        let mut sources = Vec::new();
        for def in stack.template().functions.values() {
            for source in &def.sqs_sources {
                let Some(function) = functions.get(&def.logical_id) else {
                    tracing::warn!(
                        target: "devhost",
                        function = %def.logical_id,
                        binary = %def.binary,
                        event = %source.event,
                        "SQS event source not polled: no event handler registered"
                    );
                    continue;
                };
                if !source.enabled {
                    tracing::info!(target: "devhost", function = %def.logical_id, event = %source.event, "SQS event source disabled in the template: not polled");
                    continue;
                }
                let arn = stack.resolve_text(&source.queue).with_context(|| {
                    format!(
                        "resolving the Queue of the SQS event {} of {}",
                        source.event, def.logical_id
                    )
                })?;
                let (queue_id, queue_url) = match queues.iter().find(|(_, (_, a))| *a == arn) {
                    Some((id, (url, _))) => (Some(id.clone()), url.clone()),
                    None => (None, queue_url_of(&sqs, &arn).await?),
                };
                let mut concurrency = source
                    .maximum_concurrency
                    .map_or(DEFAULT_CONCURRENCY, |n| n as usize);
                if let Some(reserved) = def.reserved_concurrency {
                    concurrency = concurrency.min(reserved as usize);
                }
                let visibility = visibility_of(&sqs, &queue_url).await.with_context(|| {
                    format!(
                        "reading the visibility timeout of the queue of {}",
                        def.logical_id
                    )
                })?;
                sources.push(Arc::new(Source {
                    function,
                    event: source.event.clone(),
                    queue_id,
                    queue_url,
                    queue_arn: arn,
                    batch_size: source.batch_size as usize,
                    batching_window: source.batching_window.filter(|w| !w.is_zero()),
                    report_batch_item_failures: source.report_batch_item_failures,
                    concurrency,
                    running: AtomicUsize::new(0),
                    under_way: Mutex::new(BTreeMap::new()),
                    invocations: AtomicU64::new(0),
                    messages: AtomicU64::new(0),
                    failed_messages: AtomicU64::new(0),
                    failed_invocations: AtomicU64::new(0),
                    recursive_dropped: AtomicU64::new(0),
                    fair: Mutex::default(),
                    hold_limit: (visibility / 2).max(Duration::from_secs(1)),
                }));
            }
        }
        let (paused, _) = watch::channel(false);
        let monitor = QueueMonitor {
            shared: Arc::new(Shared {
                sqs,
                region: stack.region().to_owned(),
                queues,
                sources,
                retry_delay: options.retry_delay,
                polling: options.run,
                paused,
            }),
        };
        let (stop, _) = watch::channel(false);
        let mut tasks = Vec::new();
        for source in &monitor.shared.sources {
            let queue = source.queue_id.as_deref().unwrap_or(&source.queue_arn);
            if !options.run {
                tracing::info!(target: "devhost", function = %source.function.logical_id, queue, "SQS event source not polled: queue polling is off");
                continue;
            }
            tracing::info!(
                target: "devhost",
                function = %source.function.logical_id,
                event = %source.event,
                queue,
                batch_size = source.batch_size,
                concurrency = source.concurrency,
                "SQS event source polled locally"
            );
            for _ in 0..source.concurrency {
                tasks.push(tokio::spawn(poller(
                    monitor.shared.clone(),
                    source.clone(),
                    stop.subscribe(),
                    monitor.shared.paused.subscribe(),
                )));
            }
        }
        Ok(Self {
            monitor,
            stop,
            tasks,
        })
    }

    /// The handle that reads the queues and steers the pollers.
    pub fn monitor(&self) -> QueueMonitor {
        self.monitor.clone()
    }

    /// Stops polling; lets invocations in progress finish and settle (up to 5 s), then
    /// returns.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
        for mut task in std::mem::take(&mut self.tasks) {
            if tokio::time::timeout_at(deadline, &mut task).await.is_err() {
                task.abort();
            }
        }
    }
}

impl Drop for QueuePollers {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The URL of the queue with this ARN (`arn:aws:sqs:region:account:name`).
async fn queue_url_of(sqs: &aws_sdk_sqs::Client, arn: &str) -> Result<String> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(_), Some("sqs"), Some(_), Some(account), Some(name)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        bail!("{arn:?} is not an SQS queue ARN");
    };
    sqs.get_queue_url()
        .queue_name(name)
        .queue_owner_aws_account_id(account)
        .send()
        .await
        .map_err(sdk_error)
        .with_context(|| format!("finding the queue {arn}"))?
        .queue_url
        .ok_or_else(|| anyhow!("SQS returned no URL for {arn}"))
}

/// One poller: receive a batch, invoke, settle; again until stopped.
async fn poller(
    shared: Arc<Shared>,
    source: Arc<Source>,
    mut stop: watch::Receiver<bool>,
    mut paused: watch::Receiver<bool>,
) {
    let mut failing = false;
    loop {
        if *stop.borrow() {
            let held: Vec<Message> = std::mem::take(&mut lock(&source.fair).held)
                .into_iter()
                .map(|h| h.message)
                .collect();
            release(&shared, &source, &held, Duration::ZERO).await;
            return;
        }
        if *paused.borrow() {
            tokio::select! {
                _ = stop.changed() => {}
                _ = paused.changed() => {}
            }
            continue;
        }
        // A receive under way is not cut short: the messages it returns would stay
        // hidden for the visibility timeout.
        let batch = match next_batch(&shared, &source).await {
            Ok(batch) => {
                failing = false;
                batch
            }
            Err(error) => {
                if !failing {
                    tracing::warn!(target: "devhost", function = %source.function.logical_id, queue = %source.queue_arn, error = %format!("{error:#}"), "polling the queue failed; retrying");
                }
                failing = true;
                tokio::select! {
                    _ = stop.changed() => {}
                    _ = tokio::time::sleep(ERROR_BACKOFF) => {}
                }
                continue;
            }
        };
        if batch.is_empty() {
            continue;
        }
        // Paused while receiving: hold the batch (in flight) until resumed.
        while *paused.borrow() && !*stop.borrow() {
            tokio::select! {
                _ = stop.changed() => {}
                _ = paused.changed() => {}
            }
        }
        if *stop.borrow() {
            // Stopping: leave them for the next poller (after the visibility timeout,
            // or at once with a retry delay).
            release(&shared, &source, &batch, Duration::ZERO).await;
            return;
        }
        source.running.fetch_add(1, Ordering::SeqCst);
        let groups: Vec<String> = batch.iter().map(group_key).collect();
        let ticket = BATCH_IDS.fetch_add(1, Ordering::Relaxed);
        let what: Vec<String> = batch
            .iter()
            .map(|m| m.body().unwrap_or_default().chars().take(160).collect())
            .collect();
        lock(&source.under_way).insert(ticket, (Instant::now(), what.join(" | ")));
        process(&shared, &source, batch).await;
        lock(&source.under_way).remove(&ticket);
        lock(&source.fair).settle(&groups);
        source.running.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The next batch to invoke: what [`receive_batch`] returns while no message carries
/// a group; on a fair queue, the held messages [`FairShare::pick`] chooses after a
/// look further into the queue (see the module doc).
async fn next_batch(shared: &Shared, source: &Source) -> Result<Vec<Message>> {
    let holding = !lock(&source.fair).held.is_empty();
    let received = if holding {
        Vec::new()
    } else {
        receive_batch(shared, source).await?
    };
    if !holding && received.iter().all(|m| group_of(m).is_none()) {
        return Ok(received);
    }
    let mut incoming = received;
    while lock(&source.fair).held.len() + incoming.len() < FAIR_LOOKAHEAD {
        // What is already received is handed out even when looking further fails.
        match receive(shared, source, 10, 0).await {
            Ok(more) if !more.is_empty() => incoming.extend(more),
            _ => break,
        }
    }
    let (batch, stale) = {
        let mut fair = lock(&source.fair);
        fair.hold(incoming);
        let stale = fair.take_stale(source.hold_limit);
        (fair.pick(source.batch_size), stale)
    };
    release(shared, source, &stale, Duration::ZERO).await;
    Ok(batch)
}

/// Up to `BatchSize` messages: what one long poll returns or, with a batching window,
/// what arrives until the batch is full or the window (counted from the first message)
/// closes.
async fn receive_batch(shared: &Shared, source: &Source) -> Result<Vec<Message>> {
    let mut batch = receive(shared, source, source.batch_size.min(10), LONG_POLL_SECS).await?;
    let Some(window) = source.batching_window else {
        return Ok(batch);
    };
    if batch.is_empty() {
        return Ok(batch);
    }
    let deadline = Instant::now() + window;
    while batch.len() < source.batch_size {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let wait = if left >= Duration::from_secs(1) { 1 } else { 0 };
        let more = receive(
            shared,
            source,
            (source.batch_size - batch.len()).min(10),
            wait,
        )
        .await?;
        if more.is_empty() && wait == 0 {
            tokio::time::sleep(left.min(Duration::from_millis(100))).await;
        }
        batch.extend(more);
    }
    Ok(batch)
}

async fn receive(
    shared: &Shared,
    source: &Source,
    count: usize,
    wait_secs: i32,
) -> Result<Vec<Message>> {
    let out = shared
        .sqs
        .receive_message()
        .queue_url(&source.queue_url)
        .max_number_of_messages(count.clamp(1, 10) as i32)
        .wait_time_seconds(wait_secs)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .message_attribute_names("All")
        .send()
        .await
        .map_err(sdk_error)?;
    Ok(out.messages.unwrap_or_default())
}

/// Invokes the function on one batch (less the messages loop detection stops) and
/// settles it.
async fn process(shared: &Shared, source: &Source, batch: Vec<Message>) {
    let function = &source.function.logical_id;
    let mut trace: Option<TraceHeader> = None;
    let mut kept = Vec::with_capacity(batch.len());
    let mut stopped = Vec::new();
    for message in batch {
        let header = message
            .attributes()
            .and_then(|a| a.get(&MessageSystemAttributeName::AwsTraceHeader))
            .map(String::as_str);
        let (chain, stop) = trace::admit(header, function, source.function.recursive_loop);
        if stop {
            stopped.push((message, chain));
            continue;
        }
        if trace
            .as_ref()
            .is_none_or(|t| chain.invocations(function) > t.invocations(function))
        {
            trace = Some(chain);
        }
        kept.push(message);
    }
    if !stopped.is_empty() {
        stop_recursion(shared, source, &stopped).await;
    }
    let Some(trace) = trace else {
        return;
    };
    let batch = kept;
    let ids: Vec<String> = batch
        .iter()
        .map(|m| m.message_id().unwrap_or_default().to_owned())
        .collect();
    let event = sqs_event(&batch, &source.queue_arn, &shared.region);
    let started = Instant::now();
    let outcome = source.function.invoke(event, trace).await;
    let ms = started.elapsed().as_millis() as u64;
    let verdict = match &outcome {
        Outcome::Returned(value) => judge(value, source.report_batch_item_failures, &ids),
        Outcome::Failed(error) => Verdict::BatchFailed(format!("{error:#}")),
        Outcome::Killed(_) => Verdict::BatchFailed("killed (kill_next_invocations)".to_owned()),
    };
    let failed: BTreeSet<usize> = match &verdict {
        Verdict::Partial(failed) => failed.clone(),
        Verdict::BatchFailed(_) => (0..batch.len()).collect(),
    };
    let done: Vec<&Message> = batch
        .iter()
        .enumerate()
        .filter(|(i, _)| !failed.contains(i))
        .map(|(_, m)| m)
        .collect();
    let retry: Vec<&Message> = batch
        .iter()
        .enumerate()
        .filter(|(i, _)| failed.contains(i))
        .map(|(_, m)| m)
        .collect();
    delete(shared, source, &done).await;
    if let Some(delay) = shared.retry_delay
        && !retry.is_empty()
    {
        release_refs(shared, source, &retry, delay).await;
    }

    source.invocations.fetch_add(1, Ordering::Relaxed);
    source
        .messages
        .fetch_add(batch.len() as u64, Ordering::Relaxed);
    source
        .failed_messages
        .fetch_add(retry.len() as u64, Ordering::Relaxed);
    let queue = source.queue_id.as_deref().unwrap_or(&source.queue_arn);
    match verdict {
        Verdict::BatchFailed(error) => {
            source.failed_invocations.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                target: "devhost",
                function = %source.function.logical_id,
                queue,
                messages = batch.len(),
                failed = retry.len(),
                ms,
                error = %error,
                "SQS batch failed; its messages return to the queue"
            );
        }
        Verdict::Partial(_) => tracing::info!(
            target: "devhost",
            function = %source.function.logical_id,
            queue,
            messages = batch.len(),
            failed = retry.len(),
            ms,
            "SQS batch"
        ),
    }
}

/// Stops messages that would continue a recursive loop: each moves to the queue's
/// dead-letter queue (sent there with its body and message attributes, then deleted
/// here) or, when the queue has none, is deleted. If that fails they stay, come back
/// after the visibility timeout and are stopped again.
async fn stop_recursion(shared: &Shared, source: &Source, stopped: &[(Message, TraceHeader)]) {
    let function = &source.function.logical_id;
    let queue = source.queue_id.as_deref().unwrap_or(&source.queue_arn);
    let target = match redrive_target(&shared.sqs, &source.queue_url, queue).await {
        Ok(target) => target,
        Err(error) => {
            tracing::warn!(target: "devhost", function = %function, queue, error = %format!("{error:#}"), "reading the redrive policy failed; the stopped messages stay in the queue");
            return;
        }
    };
    let mut settled = Vec::new();
    for (message, chain) in stopped {
        if let Some(dlq) = &target {
            let sent = shared
                .sqs
                .send_message()
                .queue_url(dlq)
                .message_body(message.body().unwrap_or_default())
                .set_message_attributes(message.message_attributes().cloned())
                .send()
                .await;
            if let Err(error) = sent {
                tracing::warn!(target: "devhost", function = %function, queue, error = %sdk_error(error), "moving a stopped message to the dead-letter queue failed; it stays in the queue");
                continue;
            }
        }
        source.recursive_dropped.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            target: "devhost",
            function = %function,
            queue,
            message_id = message.message_id().unwrap_or_default(),
            trace_root = chain.root(),
            invocations = chain.invocations(function),
            limit = trace::CHAIN_LIMIT,
            moved_to = if target.is_some() { "dead-letter queue" } else { "nowhere (dropped)" },
            "recursive loop detected: invocation stopped (RecursiveInvocationsDropped); set RecursiveLoop: Allow if the chain is intended"
        );
        settled.push(message);
    }
    delete(shared, source, &settled).await;
}

/// What becomes of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    /// These messages (by index) failed; the others are done.
    Partial(BTreeSet<usize>),
    /// Every message failed, for this reason.
    BatchFailed(String),
}

/// Reads a function's response to a batch of messages with these ids, as Lambda does.
fn judge(response: &Value, report_batch_item_failures: bool, ids: &[String]) -> Verdict {
    let failures = match response {
        Value::Object(map) => map.get("batchItemFailures"),
        Value::Null => None,
        _ if !report_batch_item_failures => None,
        _ => {
            return Verdict::BatchFailed(
                "invalid batch response: not a {\"batchItemFailures\": […]} object".to_owned(),
            );
        }
    };
    if !report_batch_item_failures {
        if failures
            .and_then(Value::as_array)
            .is_some_and(|f| !f.is_empty())
        {
            tracing::warn!(target: "devhost", "batchItemFailures ignored: the SQS event source does not set FunctionResponseTypes: [ReportBatchItemFailures]; every message is deleted");
        }
        return Verdict::Partial(BTreeSet::new());
    }
    let items = match failures {
        None | Some(Value::Null) => return Verdict::Partial(BTreeSet::new()),
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Verdict::BatchFailed(
                "invalid batch response: batchItemFailures is not a list".to_owned(),
            );
        }
    };
    let mut failed = BTreeSet::new();
    for item in items {
        let id = item.get("itemIdentifier").and_then(Value::as_str);
        match id.and_then(|id| ids.iter().position(|x| !id.is_empty() && x == id)) {
            Some(i) => {
                failed.insert(i);
            }
            None => {
                return Verdict::BatchFailed(
                    "invalid batch response: an itemIdentifier is missing, empty or not a messageId of the batch"
                        .to_owned(),
                );
            }
        }
    }
    Verdict::Partial(failed)
}

/// The SQS event Lambda sends for `batch` from the queue `queue_arn`.
pub fn sqs_event(batch: &[Message], queue_arn: &str, region: &str) -> Value {
    let mut event = SqsEvent::default();
    event.records = batch
        .iter()
        .map(|m| sqs_record(m, queue_arn, region))
        .collect();
    let mut value = serde_json::to_value(&event).unwrap_or_else(|_| json!({"Records": []}));
    // Lambda leaves out what a message does not have.
    if let Some(records) = value.get_mut("Records").and_then(Value::as_array_mut) {
        for record in records {
            let Some(record) = record.as_object_mut() else {
                continue;
            };
            if record.get("md5OfMessageAttributes") == Some(&Value::Null) {
                record.remove("md5OfMessageAttributes");
            }
            if let Some(attributes) = record
                .get_mut("messageAttributes")
                .and_then(Value::as_object_mut)
            {
                for attribute in attributes.values_mut() {
                    if let Some(attribute) = attribute.as_object_mut() {
                        attribute.retain(|_, v| !v.is_null());
                    }
                }
            }
        }
    }
    value
}

fn sqs_record(message: &Message, queue_arn: &str, region: &str) -> SqsMessage {
    let mut record = SqsMessage::default();
    record.message_id = message.message_id().map(str::to_owned);
    record.receipt_handle = message.receipt_handle().map(str::to_owned);
    record.body = message.body().map(str::to_owned);
    record.md5_of_body = message.md5_of_body().map(str::to_owned);
    record.md5_of_message_attributes = message.md5_of_message_attributes().map(str::to_owned);
    record.attributes = message
        .attributes()
        .map(|a| {
            a.iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    record.message_attributes = message
        .message_attributes()
        .map(|attributes| {
            attributes
                .iter()
                .map(|(name, value)| {
                    let mut attribute = SqsMessageAttribute::default();
                    attribute.string_value = value.string_value().map(str::to_owned);
                    attribute.binary_value = value.binary_value().map(|b| base64_data(b.as_ref()));
                    attribute.string_list_values = value.string_list_values().to_vec();
                    attribute.binary_list_values = value
                        .binary_list_values()
                        .iter()
                        .map(|b| base64_data(b.as_ref()))
                        .collect();
                    attribute.data_type = Some(value.data_type().to_owned());
                    (name.clone(), attribute)
                })
                .collect()
        })
        .unwrap_or_default();
    record.event_source = Some("aws:sqs".to_owned());
    record.event_source_arn = Some(queue_arn.to_owned());
    record.aws_region = Some(region.to_owned());
    record
}

fn base64_data(bytes: &[u8]) -> Base64Data {
    let mut data = Base64Data::default();
    data.extend_from_slice(bytes);
    data
}

async fn delete(shared: &Shared, source: &Source, messages: &[&Message]) {
    for chunk in messages.chunks(10) {
        let entries: Vec<DeleteMessageBatchRequestEntry> = chunk
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle()?)
                    .build()
                    .ok()
            })
            .collect();
        if entries.is_empty() {
            continue;
        }
        let sent = shared
            .sqs
            .delete_message_batch()
            .queue_url(&source.queue_url)
            .set_entries(Some(entries))
            .send()
            .await;
        match sent {
            Ok(out) if out.failed().is_empty() => {}
            Ok(out) => tracing::warn!(
                target: "devhost",
                function = %source.function.logical_id,
                failed = out.failed().len(),
                "SQS refused to delete processed messages (visibility timeout passed?); they will be delivered again"
            ),
            Err(error) => tracing::warn!(
                target: "devhost",
                function = %source.function.logical_id,
                error = %sdk_error(error),
                "deleting processed messages failed; they will be delivered again"
            ),
        }
    }
}

/// Makes `messages` visible again after `delay`.
async fn release(shared: &Shared, source: &Source, messages: &[Message], delay: Duration) {
    let refs: Vec<&Message> = messages.iter().collect();
    release_refs(shared, source, &refs, delay).await;
}

async fn release_refs(shared: &Shared, source: &Source, messages: &[&Message], delay: Duration) {
    let seconds = i32::try_from(delay.as_secs())
        .unwrap_or(i32::MAX)
        .min(43_200);
    for chunk in messages.chunks(10) {
        let entries: Vec<ChangeMessageVisibilityBatchRequestEntry> = chunk
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                ChangeMessageVisibilityBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(m.receipt_handle()?)
                    .visibility_timeout(seconds)
                    .build()
                    .ok()
            })
            .collect();
        if entries.is_empty() {
            continue;
        }
        if let Err(error) = shared
            .sqs
            .change_message_visibility_batch()
            .queue_url(&source.queue_url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            tracing::warn!(target: "devhost", function = %source.function.logical_id, error = %sdk_error(error), "making failed messages visible again failed; they wait out the visibility timeout");
        }
    }
}

impl QueueMonitor {
    fn queue_url(&self, logical_id: &str) -> Result<&str> {
        self.shared
            .queues
            .get(logical_id)
            .map(|(url, _)| url.as_str())
            .ok_or_else(|| {
                anyhow!(
                    "no queue {logical_id} in the stack; queues: {}",
                    self.shared
                        .queues
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
    }

    /// How many messages the stack's queue `logical_id` holds.
    pub async fn queue_depth(&self, logical_id: &str) -> Result<QueueDepth> {
        let url = self.queue_url(logical_id)?;
        depth_of(&self.shared.sqs, url)
            .await
            .with_context(|| format!("reading the depth of {logical_id}"))
    }

    /// Waits up to `timeout` until every polled queue is empty (nothing visible, in
    /// flight or delayed) and no invocation of a poller is running. Failed messages
    /// stay in flight for the queue's visibility timeout unless
    /// [`QueueOptions::retry_delay`] is set; while the pollers are paused, a queue with
    /// messages never becomes idle. With no polled queue it returns at once.
    pub async fn wait_queues_idle(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let urls: BTreeSet<&str> = self
            .shared
            .sources
            .iter()
            .filter(|_| self.shared.polling)
            .map(|s| s.queue_url.as_str())
            .collect();
        loop {
            let running: usize = self
                .shared
                .sources
                .iter()
                .map(|s| s.running.load(Ordering::SeqCst))
                .sum();
            let mut busy = Vec::new();
            for url in &urls {
                let depth = depth_of(&self.shared.sqs, url).await?;
                if !depth.is_empty() {
                    busy.push(format!(
                        "{} visible={} in_flight={} delayed={}",
                        self.name_of(url),
                        depth.visible,
                        depth.in_flight,
                        depth.delayed
                    ));
                }
            }
            // Read again: an invocation that began while the queues were read holds
            // messages that were in flight then.
            let running_after: usize = self
                .shared
                .sources
                .iter()
                .map(|s| s.running.load(Ordering::SeqCst))
                .sum();
            if busy.is_empty() && running == 0 && running_after == 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let under_way: Vec<String> = self
                    .shared
                    .sources
                    .iter()
                    .flat_map(|s| {
                        lock(&s.under_way)
                            .values()
                            .map(|(since, what)| {
                                format!(
                                    "{} for {} ms on {what}",
                                    s.function.logical_id,
                                    since.elapsed().as_millis()
                                )
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect();
                bail!(
                    "the queues did not become idle within {} ms: {} invocation(s) running; {}; under way: {}",
                    timeout.as_millis(),
                    running.max(running_after),
                    if busy.is_empty() {
                        "the queues are empty".to_owned()
                    } else {
                        busy.join("; ")
                    },
                    if under_way.is_empty() {
                        "none".to_owned()
                    } else {
                        under_way.join("; ")
                    }
                );
            }
            tokio::time::sleep(IDLE_POLL).await;
        }
    }

    fn name_of<'a>(&'a self, url: &'a str) -> &'a str {
        self.shared
            .queues
            .iter()
            .find(|(_, (u, _))| u == url)
            .map_or(url, |(id, _)| id.as_str())
    }

    /// The URL of the dead-letter queue of `logical_id` (its redrive policy's target),
    /// or of `logical_id` itself when it has no redrive policy.
    async fn dead_letter_url(&self, logical_id: &str) -> Result<String> {
        let url = self.queue_url(logical_id)?;
        Ok(redrive_target(&self.shared.sqs, url, logical_id)
            .await?
            .unwrap_or_else(|| url.to_owned()))
    }

    /// The bodies of the messages in the dead-letter queue of `logical_id` (the queue
    /// its redrive policy names; a queue without one is read itself), oldest first as
    /// SQS returns them, left in the queue. Reading receives them (their receive count
    /// goes up) and makes them visible again at once.
    pub async fn dead_letters(&self, logical_id: &str) -> Result<Vec<String>> {
        let url = self.dead_letter_url(logical_id).await?;
        let messages = self.receive_everything(&url, PEEK_VISIBILITY_SECS).await?;
        let refs: Vec<&Message> = messages.iter().collect();
        for chunk in refs.chunks(10) {
            let entries: Vec<ChangeMessageVisibilityBatchRequestEntry> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, m)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(m.receipt_handle()?)
                        .visibility_timeout(0)
                        .build()
                        .ok()
                })
                .collect();
            if entries.is_empty() {
                continue;
            }
            self.shared
                .sqs
                .change_message_visibility_batch()
                .queue_url(&url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(sdk_error)
                .context("making dead letters visible again")?;
        }
        Ok(bodies(&messages))
    }

    /// Like [`QueueMonitor::dead_letters`], but deletes what it returns.
    pub async fn drain_dead_letters(&self, logical_id: &str) -> Result<Vec<String>> {
        let url = self.dead_letter_url(logical_id).await?;
        let messages = self.receive_everything(&url, PEEK_VISIBILITY_SECS).await?;
        let refs: Vec<&Message> = messages.iter().collect();
        for chunk in refs.chunks(10) {
            let entries: Vec<DeleteMessageBatchRequestEntry> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, m)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(m.receipt_handle()?)
                        .build()
                        .ok()
                })
                .collect();
            if entries.is_empty() {
                continue;
            }
            self.shared
                .sqs
                .delete_message_batch()
                .queue_url(&url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(sdk_error)
                .context("deleting dead letters")?;
        }
        Ok(bodies(&messages))
    }

    /// Receives every visible message of `url`, hiding each for `visibility` seconds.
    async fn receive_everything(&self, url: &str, visibility: i32) -> Result<Vec<Message>> {
        let mut all = Vec::new();
        loop {
            let out = self
                .shared
                .sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .wait_time_seconds(0)
                .visibility_timeout(visibility)
                .send()
                .await
                .map_err(sdk_error)
                .context("reading the dead-letter queue")?;
            let messages = out.messages.unwrap_or_default();
            if messages.is_empty() {
                return Ok(all);
            }
            all.extend(messages);
        }
    }

    /// Stops the pollers invoking their functions: invocations in progress finish, a
    /// batch received meanwhile is held (in flight) until [`QueueMonitor::resume_pollers`].
    pub fn pause_pollers(&self) {
        let _ = self.shared.paused.send(true);
    }

    /// Lets paused pollers take batches again.
    pub fn resume_pollers(&self) {
        let _ = self.shared.paused.send(false);
    }

    /// Every queue of the stack with its depth, and every polled event source with
    /// its counters: what `GET /_devhost/queues` shows.
    pub async fn report(&self) -> Result<Value> {
        let mut queues = Vec::new();
        for (id, (url, arn)) in &self.shared.queues {
            let depth = depth_of(&self.shared.sqs, url)
                .await
                .with_context(|| format!("reading the depth of {id}"))?;
            let polled_by: Vec<&str> = self
                .shared
                .sources
                .iter()
                .filter(|s| &s.queue_url == url)
                .map(|s| s.function.logical_id.as_str())
                .collect();
            queues.push(json!({
                "queue": id,
                "url": url,
                "arn": arn,
                "visible": depth.visible,
                "in_flight": depth.in_flight,
                "delayed": depth.delayed,
                "polled_by": polled_by,
            }));
        }
        let sources: Vec<Value> = self
            .shared
            .sources
            .iter()
            .map(|s| {
                json!({
                    "function": s.function.logical_id,
                    "event": s.event,
                    "queue": s.queue_id.as_deref().unwrap_or(&s.queue_arn),
                    "batch_size": s.batch_size,
                    "batching_window_s": s.batching_window.map(|w| w.as_secs()),
                    "report_batch_item_failures": s.report_batch_item_failures,
                    "concurrency": s.concurrency,
                    "running": s.running.load(Ordering::SeqCst),
                    "invocations": s.invocations.load(Ordering::Relaxed),
                    "failed_invocations": s.failed_invocations.load(Ordering::Relaxed),
                    "messages": s.messages.load(Ordering::Relaxed),
                    "failed_messages": s.failed_messages.load(Ordering::Relaxed),
                    "recursive_invocations_dropped": s.recursive_dropped.load(Ordering::Relaxed),
                    "fair_held": lock(&s.fair).held.len(),
                    "function_cpu_ms": s.function.cpu().as_secs_f64() * 1000.0,
                })
            })
            .collect();
        Ok(json!({
            "polling": self.shared.polling,
            "paused": *self.shared.paused.borrow(),
            "retry_delay_ms": self.shared.retry_delay.map(|d| d.as_millis() as u64),
            "queues": queues,
            "event_sources": sources,
        }))
    }
}

/// The URL of the dead-letter queue the redrive policy of the queue at `url` (called
/// `name` in errors) names, if it has one.
async fn redrive_target(
    sqs: &aws_sdk_sqs::Client,
    url: &str,
    name: &str,
) -> Result<Option<String>> {
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::RedrivePolicy)
        .send()
        .await
        .map_err(sdk_error)
        .with_context(|| format!("reading the redrive policy of {name}"))?;
    let Some(policy) = attributes
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::RedrivePolicy))
        .filter(|p| !p.trim().is_empty())
    else {
        return Ok(None);
    };
    let policy: Value = serde_json::from_str(policy)
        .with_context(|| format!("the redrive policy of {name} is not JSON"))?;
    let target = policy
        .get("deadLetterTargetArn")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("the redrive policy of {name} has no deadLetterTargetArn"))?;
    queue_url_of(sqs, target).await.map(Some)
}

fn bodies(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m.body().unwrap_or_default().to_owned())
        .collect()
}

/// The queue's `VisibilityTimeout`.
async fn visibility_of(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<Duration> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::VisibilityTimeout)
        .send()
        .await
        .map_err(sdk_error)?;
    Ok(out
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::VisibilityTimeout))
        .and_then(|v| v.parse().ok())
        .map_or(DEFAULT_VISIBILITY, Duration::from_secs))
}

async fn depth_of(sqs: &aws_sdk_sqs::Client, url: &str) -> Result<QueueDepth> {
    let out = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .map_err(sdk_error)?;
    let count = |name: QueueAttributeName| -> u64 {
        out.attributes()
            .and_then(|a| a.get(&name))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(QueueDepth {
        visible: count(QueueAttributeName::ApproximateNumberOfMessages),
        in_flight: count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        delayed: count(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
    })
}

fn sdk_error(err: impl std::error::Error) -> anyhow::Error {
    anyhow!("{}", aws_sdk_sqs::error::DisplayErrorContext(err))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> Vec<String> {
        vec!["m1".into(), "m2".into(), "m3".into()]
    }

    fn grouped(id: &str, group: Option<&str>) -> Message {
        let mut message = Message::builder().message_id(id);
        if let Some(group) = group {
            message = message.attributes(MessageSystemAttributeName::MessageGroupId, group);
        }
        message.build()
    }

    fn ids_of(batch: &[Message]) -> Vec<&str> {
        batch.iter().filter_map(Message::message_id).collect()
    }

    #[test]
    fn fair_picks_go_to_the_group_with_the_fewest_in_flight() {
        let mut fair = FairShare::default();
        fair.hold(vec![
            grouped("a1", Some("a")),
            grouped("a2", Some("a")),
            grouped("a3", Some("a")),
            grouped("b1", Some("b")),
            grouped("n1", None),
        ]);
        assert_eq!(ids_of(&fair.pick(1)), ["a1"]);
        // a has one in flight: b's and the ungrouped message's groups have none.
        assert_eq!(ids_of(&fair.pick(2)), ["b1", "n1"]);
        assert_eq!(ids_of(&fair.pick(1)), ["a2"]);
        fair.settle(&["group:a".to_owned(), "group:a".to_owned()]);
        assert!(!fair.in_flight.contains_key("group:a"));
        fair.hold(vec![grouped("b2", Some("b")), grouped("c1", Some("c"))]);
        // a: 0 in flight, b: 1, c: 0 — a3 was received first.
        assert_eq!(ids_of(&fair.pick(3)), ["a3", "c1", "b2"]);
        assert!(fair.pick(1).is_empty());
        fair.hold(vec![grouped("late", Some("a"))]);
        assert!(fair.take_stale(Duration::from_secs(60)).is_empty());
        assert_eq!(ids_of(&fair.take_stale(Duration::ZERO)), ["late"]);
        assert!(fair.held.is_empty());
    }

    #[test]
    fn batch_responses_are_read_as_lambda_reads_them() {
        let none = Verdict::Partial(BTreeSet::new());
        for ok in [
            json!(null),
            json!({}),
            json!({"batchItemFailures": []}),
            json!({"batchItemFailures": null}),
            json!({"other": 1}),
        ] {
            assert_eq!(judge(&ok, true, &ids()), none, "{ok}");
        }
        assert_eq!(
            judge(
                &json!({"batchItemFailures": [{"itemIdentifier": "m3"}, {"itemIdentifier": "m1"}]}),
                true,
                &ids()
            ),
            Verdict::Partial(BTreeSet::from([0, 2]))
        );
        for bad in [
            json!({"batchItemFailures": [{"itemIdentifier": "nope"}]}),
            json!({"batchItemFailures": [{"itemIdentifier": ""}]}),
            json!({"batchItemFailures": [{"itemIdentifier": null}]}),
            json!({"batchItemFailures": [{"id": "m1"}]}),
            json!({"batchItemFailures": "m1"}),
            json!("ok"),
            json!([1]),
        ] {
            assert!(
                matches!(judge(&bad, true, &ids()), Verdict::BatchFailed(_)),
                "{bad}"
            );
        }
        // Without ReportBatchItemFailures the response is not read.
        assert_eq!(
            judge(
                &json!({"batchItemFailures": [{"itemIdentifier": "m1"}]}),
                false,
                &ids()
            ),
            none
        );
        assert_eq!(judge(&json!("anything"), false, &ids()), none);
    }

    #[test]
    fn events_look_like_lambdas() {
        use aws_sdk_sqs::types::MessageAttributeValue;
        let message = Message::builder()
            .message_id("059f36b4-87a3-44ab-83d2-661975830a7d")
            .receipt_handle("AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a")
            .body("{\"n\":1}")
            .md5_of_body("e4e68fb7bd0e697a0ae8f1bb342846b3")
            .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "1")
            .attributes(MessageSystemAttributeName::SentTimestamp, "1545082649183")
            .message_attributes(
                "kind",
                MessageAttributeValue::builder()
                    .data_type("String")
                    .string_value("full")
                    .build()
                    .unwrap(),
            )
            .build();
        let event = sqs_event(
            &[message],
            "arn:aws:sqs:us-east-1:123456789012:q",
            "us-east-1",
        );
        assert_eq!(
            event,
            json!({"Records": [{
                "messageId": "059f36b4-87a3-44ab-83d2-661975830a7d",
                "receiptHandle": "AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a",
                "body": "{\"n\":1}",
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1545082649183"},
                "messageAttributes": {"kind": {
                    "stringValue": "full",
                    "stringListValues": [],
                    "binaryListValues": [],
                    "dataType": "String"
                }},
                "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:q",
                "awsRegion": "us-east-1"
            }]})
        );
        let parsed: SqsEvent = serde_json::from_value(event).unwrap();
        assert_eq!(parsed.records[0].body.as_deref(), Some("{\"n\":1}"));
    }
}

//! The template's event-driven functions as the dev host's event sources call them (the
//! SQS pollers of [`crate::sqs`] and the EventBridge Scheduler schedules of
//! [`crate::scheduler`]): each function with a registered event handler, with its own
//! `App` and template timeout, and a [`KillSwitch`] that makes chosen invocations crash
//! as a Lambda timeout or a dying runtime would.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use conduit::app::App;
use serde_json::Value;

use crate::invoke::{call_event_handler, function_app, function_timeout};
use crate::registry::{EventHandler, FunctionRegistry};
use crate::stack::LocalStack;
use crate::template::RecursiveLoop;
use crate::trace::TraceHeader;

/// Makes the next invocations of a function crash (see
/// [`KillSwitch::kill_next_invocations`]); cheap to clone, clones share the plan.
#[derive(Debug, Clone, Default)]
pub struct KillSwitch {
    planned: Arc<Mutex<HashMap<String, VecDeque<Kill>>>>,
}

/// When a planned kill strikes: `after` into the run, or at `signal`, if sooner.
#[derive(Debug, Clone)]
struct Kill {
    after: Duration,
    signal: Option<Arc<tokio::sync::Notify>>,
}

impl KillSwitch {
    /// The next `count` invocations of `binary` by the dev host's event sources are
    /// killed `after` into their run: a handler still running then is cancelled (its
    /// future dropped, as a Lambda timeout or crash stops it); one that finished sooner
    /// has its result thrown away, as if the runtime died before reporting it. Either
    /// way the invocation fails, so a queue's messages are not deleted and come back.
    /// Adds to kills planned earlier.
    pub fn kill_next_invocations(&self, binary: &str, count: usize, after: Duration) {
        let mut planned = self
            .planned
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        planned
            .entry(binary.to_owned())
            .or_default()
            .extend(std::iter::repeat_n(
                Kill {
                    after,
                    signal: None,
                },
                count,
            ));
    }

    /// The next invocation of `binary` is killed when `signal` is notified (at most
    /// `after` into its run): a test kills it at a point of its progress it observes
    /// (a provider request counted), not at a time the machine's load would move.
    pub fn kill_next_invocation_on(
        &self,
        binary: &str,
        signal: Arc<tokio::sync::Notify>,
        after: Duration,
    ) {
        let mut planned = self
            .planned
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        planned
            .entry(binary.to_owned())
            .or_default()
            .push_back(Kill {
                after,
                signal: Some(signal),
            });
    }

    /// How many kills of `binary` are still planned.
    pub fn planned(&self, binary: &str) -> usize {
        self.planned
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(binary)
            .map_or(0, VecDeque::len)
    }

    fn take(&self, binary: &str) -> Option<Kill> {
        self.planned
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get_mut(binary)
            .and_then(VecDeque::pop_front)
    }
}

/// How an invocation ended.
#[derive(Debug)]
pub enum Outcome {
    /// The handler returned this JSON.
    Returned(Value),
    /// The handler returned an error, panicked or timed out.
    Failed(anyhow::Error),
    /// The [`KillSwitch`] killed it this long into its run.
    Killed(Duration),
}

impl Outcome {
    /// The result as the caller of a synchronous invoke sees it.
    pub fn into_result(self, name: &str) -> Result<Value> {
        match self {
            Outcome::Returned(value) => Ok(value),
            Outcome::Failed(error) => Err(error),
            Outcome::Killed(after) => Err(anyhow!(
                "{name} was killed {} ms into its run (kill_next_invocations)",
                after.as_millis()
            )),
        }
    }
}

/// A template function with an event handler, ready to invoke.
pub struct EventFunction {
    /// The logical id.
    pub logical_id: String,
    /// The build binary name.
    pub binary: String,
    /// Whether Lambda stops it when it continues a recursive loop.
    pub recursive_loop: RecursiveLoop,
    handler: EventHandler,
    app: App,
    timeout: Duration,
    kills: KillSwitch,
    /// CPU time spent polling its invocations (ns; see [`EventFunction::cpu`]).
    cpu_ns: AtomicU64,
}

/// The CPU time the calling thread has used (user and system), in nanoseconds.
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for clock_gettime to fill.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0;
    }
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

impl std::fmt::Debug for EventFunction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventFunction")
            .field("logical_id", &self.logical_id)
            .field("binary", &self.binary)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl EventFunction {
    /// Runs the handler once on `event` as Lambda would (bounded by the function's
    /// timeout, a panic a failure, its AWS requests carrying `trace`), unless the kill
    /// switch has a kill planned for it.
    pub async fn invoke(&self, event: Value, trace: TraceHeader) -> Outcome {
        let mut handler = Box::pin(call_event_handler(
            &self.handler,
            &self.app,
            event,
            self.timeout,
            &self.logical_id,
            trace,
        ));
        // Each poll of the handler is timed on the polling thread's CPU clock: the
        // function's own work, whichever worker thread runs it, apart from the dev host's
        // and the in-process sandbox's.
        let run = std::future::poll_fn(move |cx| {
            let before = thread_cpu_ns();
            let polled = handler.as_mut().poll(cx);
            self.cpu_ns
                .fetch_add(thread_cpu_ns().saturating_sub(before), Ordering::Relaxed);
            polled
        });
        let Some(kill) = self.kills.take(&self.binary) else {
            return match run.await {
                Ok(value) => Outcome::Returned(value),
                Err(error) => Outcome::Failed(error),
            };
        };
        let started = Instant::now();
        let strike = async {
            match &kill.signal {
                Some(signal) => {
                    tokio::select! {
                        _ = signal.notified() => {}
                        _ = tokio::time::sleep(kill.after) => {}
                    }
                }
                None => tokio::time::sleep(kill.after).await,
            }
        };
        tokio::pin!(strike);
        // Dropping the future at the strike cancels the handler where it stands; one
        // that finished sooner has its result thrown away at the strike.
        tokio::select! {
            _ = run => strike.await,
            () = &mut strike => {}
        }
        let after = started.elapsed();
        tracing::warn!(
            target: "devhost",
            function = %self.logical_id,
            after_ms = after.as_millis() as u64,
            "invocation killed (kill_next_invocations)"
        );
        Outcome::Killed(after)
    }
}

impl EventFunction {
    /// The CPU time its invocations have used so far: every poll of their handlers'
    /// futures (their SDK calls' signing, encoding and decoding, rendering, the
    /// dispatcher's logic, the system calls made inside them). Not counted: tasks the
    /// handlers spawn and the connection tasks of their HTTP clients, which write and
    /// read the sockets.
    pub fn cpu(&self) -> Duration {
        Duration::from_nanos(self.cpu_ns.load(Ordering::Relaxed))
    }
}

/// Every function of the stack with a registered event handler, by logical id.
#[derive(Debug, Clone, Default)]
pub struct EventFunctions {
    by_id: BTreeMap<String, Arc<EventFunction>>,
}

impl EventFunctions {
    /// Builds each function of `stack`'s template that has an event handler in
    /// `functions`, with the `App` its template environment gives it.
    pub fn new(
        stack: &LocalStack,
        functions: &FunctionRegistry,
        kills: &KillSwitch,
    ) -> Result<Self> {
        let mut by_id = BTreeMap::new();
        for function in stack.template().functions.values() {
            let Some(handler) = functions.get_event(&function.binary) else {
                continue;
            };
            let app = function_app(stack, &function.logical_id).with_context(|| {
                format!("preparing {} for its event sources", function.logical_id)
            })?;
            by_id.insert(
                function.logical_id.clone(),
                Arc::new(EventFunction {
                    logical_id: function.logical_id.clone(),
                    binary: function.binary.clone(),
                    recursive_loop: function.recursive_loop,
                    handler,
                    app,
                    timeout: function_timeout(function),
                    kills: kills.clone(),
                    cpu_ns: AtomicU64::new(0),
                }),
            );
        }
        Ok(Self { by_id })
    }

    /// The function with this logical id, if it has an event handler.
    pub fn get(&self, logical_id: &str) -> Option<Arc<EventFunction>> {
        self.by_id.get(logical_id).cloned()
    }

    /// Every function with an event handler.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<EventFunction>> {
        self.by_id.values()
    }
}

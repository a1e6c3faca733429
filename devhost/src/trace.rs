//! X-Ray trace headers carried from invocation to invocation, and Lambda's recursive
//! loop detection built on them.
//!
//! In AWS, Lambda gives every invocation a trace header (`_X_AMZN_TRACE_ID`); the AWS
//! SDK for Rust's `RecursionDetectionInterceptor` copies it into the `X-Amzn-Trace-Id`
//! header of each request the function makes, SQS keeps it with a sent message as the
//! `AWSTraceHeader` system attribute, and Lambda reads it back when that message
//! invokes a function. The header's `Lineage` counts how many times each function has
//! been invoked in one chain; when a function is invoked more than
//! [`CHAIN_LIMIT`] times in one chain and its `RecursiveLoop` is not `Allow`, Lambda
//! stops that invocation (for SQS: the message goes to the queue's dead-letter queue,
//! or is dropped without one) and counts it in `RecursiveInvocationsDropped`.
//!
//! The dev host runs every function in one process, many invocations at once, so a
//! process-wide environment variable cannot carry the header. Instead each invocation
//! runs inside [`within`] (a task-local), and [`traced_http_client`] wraps the SDK's
//! HTTP client so that every request made inside it carries the header, as the
//! interceptor does in Lambda. moto does not turn that header into `AWSTraceHeader`
//! as SQS does, so the same wrapper adds it to `SendMessage` requests (moto keeps
//! what is sent explicitly). Not reproduced: work a handler moves to a spawned task
//! (`tokio::spawn`) leaves the scope and carries no header (in Lambda the variable
//! is process-wide), and moto keeps no system attributes on `SendMessageBatch`, so a
//! batch-sent message starts a new chain locally.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
    SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::HttpRequest;
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use rand::RngCore;
use serde_json::{Value, json};

use crate::template::RecursiveLoop;

/// Invocations of one function in one chain that Lambda lets run; the next is stopped.
pub const CHAIN_LIMIT: u32 = 16;
/// The HTTP header the SDK sends the trace in.
pub const TRACE_HEADER: &str = "x-amzn-trace-id";
/// The SQS system attribute that keeps a message's trace header.
pub const SQS_TRACE_ATTRIBUTE: &str = "AWSTraceHeader";

/// An X-Ray trace header: `Root=…;Parent=…;Sampled=…;Lineage=…`, where `Lineage` lists
/// `{function hash}:{invocations}` per function of the chain, joined by `|`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceHeader {
    root: String,
    parent: String,
    sampled: bool,
    /// Invocations so far in this chain, by [`function_key`].
    lineage: BTreeMap<String, u32>,
}

impl TraceHeader {
    /// The header of an invocation that continues no chain (an HTTP request, a
    /// schedule, a message sent without a trace).
    pub fn new_root() -> Self {
        let mut rng = rand::thread_rng();
        let secs = time::OffsetDateTime::now_utc().unix_timestamp();
        let mut id = [0u8; 12];
        rng.fill_bytes(&mut id);
        Self {
            root: format!("1-{secs:08x}-{}", hex(&id)),
            parent: new_parent(),
            sampled: false,
            lineage: BTreeMap::new(),
        }
    }

    /// Reads a header; `None` when it has no `Root` (then it continues nothing). A
    /// malformed `Lineage` entry is left out, as it would count for no function.
    pub fn parse(text: &str) -> Option<Self> {
        let mut root = None;
        let mut parent = None;
        let mut sampled = false;
        let mut lineage = BTreeMap::new();
        for field in text.split(';') {
            let Some((key, value)) = field.trim().split_once('=') else {
                continue;
            };
            match key {
                "Root" if !value.is_empty() => root = Some(value.to_owned()),
                "Parent" => parent = Some(value.to_owned()),
                "Sampled" => sampled = value == "1",
                "Lineage" => {
                    for entry in value.split('|') {
                        if let Some((function, count)) = entry.rsplit_once(':')
                            && let Ok(count) = count.parse::<u32>()
                            && !function.is_empty()
                        {
                            lineage.insert(function.to_owned(), count);
                        }
                    }
                }
                _ => {}
            }
        }
        Some(Self {
            root: root?,
            parent: parent.unwrap_or_else(new_parent),
            sampled,
            lineage,
        })
    }

    /// The header of the invocation of `function` that this message or request
    /// causes: the same chain, one more invocation of `function`.
    pub fn invoking(&self, function: &str) -> Self {
        let mut next = self.clone();
        next.parent = new_parent();
        *next.lineage.entry(function_key(function)).or_default() += 1;
        next
    }

    /// How many times `function` has been invoked in this chain.
    pub fn invocations(&self, function: &str) -> u32 {
        self.lineage
            .get(&function_key(function))
            .copied()
            .unwrap_or(0)
    }

    /// The chain's root id.
    pub fn root(&self) -> &str {
        &self.root
    }
}

impl fmt::Display for TraceHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Root={};Parent={};Sampled={}",
            self.root,
            self.parent,
            u8::from(self.sampled)
        )?;
        if !self.lineage.is_empty() {
            let entries: Vec<String> = self
                .lineage
                .iter()
                .map(|(function, count)| format!("{function}:{count}"))
                .collect();
            write!(f, ";Lineage={}", entries.join("|"))?;
        }
        Ok(())
    }
}

/// The invocation of `function` that a message with this `AWSTraceHeader` (or none)
/// causes: its trace header, and whether Lambda stops it as a recursive loop.
pub fn admit(header: Option<&str>, function: &str, policy: RecursiveLoop) -> (TraceHeader, bool) {
    let trace = header
        .and_then(TraceHeader::parse)
        .unwrap_or_else(TraceHeader::new_root)
        .invoking(function);
    let stopped = policy == RecursiveLoop::Terminate && trace.invocations(function) > CHAIN_LIMIT;
    (trace, stopped)
}

/// An 8-hex-digit hash naming a function in `Lineage` (FNV-1a: stable across runs).
fn function_key(function: &str) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in function.bytes() {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("{hash:08x}")
}

fn new_parent() -> String {
    let mut id = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut id);
    hex(&id)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

tokio::task_local! {
    static CURRENT: TraceHeader;
    static OPEN: Arc<AtomicUsize>;
}

/// File descriptors a Lambda execution environment may hold open (Lambda's quota).
/// One invocation runs in an environment at a time, so the dev host counts the AWS
/// requests each invocation has open and refuses the one past this many as Lambda's
/// kernel would refuse its socket: `EMFILE`. A lower bound of what Lambda counts: the
/// connections the pool keeps idle, files and provider sockets are not counted.
pub const FD_LIMIT: usize = 1_024;

/// Runs `invocation` as one invocation with this trace header: the AWS requests it
/// makes (through [`traced_sdk_config`]) carry it, and are refused past
/// [`FD_LIMIT`] open at once.
pub async fn within<F: Future>(trace: TraceHeader, invocation: F) -> F::Output {
    let open = Arc::new(AtomicUsize::new(0));
    OPEN.scope(open, CURRENT.scope(trace, invocation)).await
}

/// The trace header of the invocation running on this task, if any.
pub fn current() -> Option<TraceHeader> {
    CURRENT.try_with(Clone::clone).ok()
}

/// `inner` wrapped so that requests made inside [`within`] carry the invocation's
/// trace header (see the module doc).
pub fn traced_http_client(inner: SharedHttpClient) -> SharedHttpClient {
    SharedHttpClient::new(TracedClient { inner })
}

#[derive(Debug)]
struct TracedClient {
    inner: SharedHttpClient,
}

impl HttpClient for TracedClient {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        SharedHttpConnector::new(TracedConnector {
            inner: self.inner.http_connector(settings, components),
        })
    }
}

#[derive(Debug)]
struct TracedConnector {
    inner: SharedHttpConnector,
}

impl HttpConnector for TracedConnector {
    fn call(&self, mut request: HttpRequest) -> HttpConnectorFuture {
        if let Some(trace) = current() {
            stamp(&mut request, &trace.to_string());
        }
        let Ok(open) = OPEN.try_with(Arc::clone) else {
            return self.inner.call(request);
        };
        let Some(slot) = Socket::open(open) else {
            tracing::warn!(
                limit = FD_LIMIT,
                "an invocation opened more AWS connections at once than Lambda's file-descriptor limit"
            );
            return HttpConnectorFuture::ready(Err(ConnectorError::io(Box::new(
                std::io::Error::from_raw_os_error(EMFILE),
            ))));
        };
        let call = self.inner.call(request);
        HttpConnectorFuture::new(async move {
            let answer = call.await;
            drop(slot);
            answer
        })
    }
}

/// `errno` of a process out of file descriptors.
const EMFILE: i32 = 24;

/// One of an invocation's open requests, counted until dropped.
struct Socket(Arc<AtomicUsize>);

impl Socket {
    /// A slot among the invocation's [`FD_LIMIT`], if one is free.
    fn open(open: Arc<AtomicUsize>) -> Option<Self> {
        if open.fetch_add(1, Ordering::SeqCst) >= FD_LIMIT {
            open.fetch_sub(1, Ordering::SeqCst);
            return None;
        }
        Some(Self(open))
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Adds the trace header as the SDK's interceptor does, and to an SQS `SendMessage`
/// body as the `AWSTraceHeader` SQS would keep. The body changes after signing: moto
/// does not check signatures.
fn stamp(request: &mut HttpRequest, trace: &str) {
    if !request.headers().contains_key(TRACE_HEADER) {
        request.headers_mut().insert(TRACE_HEADER, trace.to_owned());
    }
    if request.headers().get("x-amz-target") != Some("AmazonSQS.SendMessage") {
        return;
    }
    let Some(stamped) = request
        .body()
        .bytes()
        .and_then(|body| with_trace_attribute(body, trace))
    else {
        return;
    };
    request
        .headers_mut()
        .insert("content-length", stamped.len().to_string());
    *request.body_mut() = SdkBody::from(stamped);
}

/// A `SendMessage` JSON body with `MessageSystemAttributes.AWSTraceHeader` set to
/// `trace`, unless it is not JSON or already names one.
fn with_trace_attribute(body: &[u8], trace: &str) -> Option<Vec<u8>> {
    let mut value: Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object_mut()?;
    let attributes = object
        .entry("MessageSystemAttributes")
        .or_insert_with(|| json!({}))
        .as_object_mut()?;
    if attributes.contains_key(SQS_TRACE_ATTRIBUTE) {
        return None;
    }
    attributes.insert(
        SQS_TRACE_ATTRIBUTE.to_owned(),
        json!({"DataType": "String", "StringValue": trace}),
    );
    serde_json::to_vec(&value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_count_per_function() {
        let first = TraceHeader::new_root().invoking("Worker");
        assert_eq!(first.invocations("Worker"), 1);
        assert_eq!(first.invocations("Other"), 0);
        let text = first.to_string();
        assert!(text.starts_with("Root=1-"), "{text}");
        let read = TraceHeader::parse(&text).unwrap();
        assert_eq!(read, first);
        let next = read.invoking("Worker").invoking("Other");
        assert_eq!(next.root(), first.root());
        assert_eq!(next.invocations("Worker"), 2);
        assert_eq!(next.invocations("Other"), 1);
        assert_eq!(TraceHeader::parse(&next.to_string()).unwrap(), next);
        // X-Ray's own headers (no Lineage) start a count; no Root, no chain.
        let xray = TraceHeader::parse(
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1",
        )
        .unwrap();
        assert_eq!(xray.invocations("Worker"), 0);
        assert!(TraceHeader::parse("Parent=53995c3f42cd8ad8;Sampled=1").is_none());
        assert!(TraceHeader::parse("").is_none());
        let junk = TraceHeader::parse("Root=1-a-b;Lineage=:3|x:y|abc:2").unwrap();
        assert_eq!(junk.lineage.len(), 1);
    }

    #[test]
    fn the_seventeenth_invocation_of_a_chain_is_stopped_unless_allowed() {
        let mut header: Option<String> = None;
        for n in 1..=CHAIN_LIMIT {
            let (trace, stopped) = admit(header.as_deref(), "Worker", RecursiveLoop::Terminate);
            assert_eq!(trace.invocations("Worker"), n);
            assert!(!stopped, "invocation {n}");
            header = Some(trace.to_string());
        }
        let (_, stopped) = admit(header.as_deref(), "Worker", RecursiveLoop::Terminate);
        assert!(stopped);
        let (trace, stopped) = admit(header.as_deref(), "Worker", RecursiveLoop::Allow);
        assert!(!stopped);
        assert_eq!(trace.invocations("Worker"), CHAIN_LIMIT + 1);
        // Another function's count is its own.
        let (_, stopped) = admit(header.as_deref(), "Other", RecursiveLoop::Terminate);
        assert!(!stopped);
        // No header: a new chain.
        let (trace, stopped) = admit(None, "Worker", RecursiveLoop::Terminate);
        assert!(!stopped);
        assert_eq!(trace.invocations("Worker"), 1);
    }

    #[test]
    fn send_message_bodies_get_the_trace_attribute_once() {
        let body = br#"{"QueueUrl":"q","MessageBody":"{}"}"#;
        let stamped: Value =
            serde_json::from_slice(&with_trace_attribute(body, "Root=1-a-b").unwrap()).unwrap();
        assert_eq!(
            stamped["MessageSystemAttributes"]["AWSTraceHeader"],
            json!({"DataType": "String", "StringValue": "Root=1-a-b"})
        );
        assert_eq!(stamped["MessageBody"], "{}");
        let again = serde_json::to_vec(&stamped).unwrap();
        assert!(with_trace_attribute(&again, "Root=1-c-d").is_none());
        assert!(with_trace_attribute(b"Action=SendMessage", "Root=1-a-b").is_none());
    }

    #[tokio::test]
    async fn the_current_trace_is_the_invocations() {
        assert!(current().is_none());
        let trace = TraceHeader::new_root().invoking("Worker");
        let seen = within(trace.clone(), async { current() }).await;
        assert_eq!(seen, Some(trace));
    }

    /// A connector whose answers wait until the test lets them through.
    #[derive(Debug)]
    struct Gate(Arc<tokio::sync::Semaphore>);

    impl HttpConnector for Gate {
        fn call(&self, _: HttpRequest) -> HttpConnectorFuture {
            let gate = Arc::clone(&self.0);
            HttpConnectorFuture::new(async move {
                let _pass = gate
                    .acquire()
                    .await
                    .map_err(|e| ConnectorError::other(Box::new(e), None))?;
                Ok(aws_smithy_runtime_api::http::Response::new(
                    200.try_into().unwrap(),
                    SdkBody::empty(),
                ))
            })
        }
    }

    #[tokio::test]
    async fn an_invocation_past_lambdas_file_descriptors_is_refused() {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let connector = TracedConnector {
            inner: SharedHttpConnector::new(Gate(Arc::clone(&gate))),
        };
        let call = || connector.call(HttpRequest::get("http://127.0.0.1/").unwrap());
        let trace = TraceHeader::new_root().invoking("Worker");
        within(trace.clone(), async {
            let open: Vec<_> = (0..FD_LIMIT).map(|_| call()).collect();
            let refused = call().await.expect_err("past the limit");
            let io = std::error::Error::source(&refused)
                .and_then(|e| e.downcast_ref::<std::io::Error>())
                .map(std::io::Error::raw_os_error);
            assert_eq!(io, Some(Some(EMFILE)), "{refused:?}");
            // Answered requests give their descriptors back.
            gate.add_permits(FD_LIMIT + 1);
            for answer in futures::future::join_all(open).await {
                assert_eq!(answer.unwrap().status().as_u16(), 200);
            }
            assert_eq!(call().await.unwrap().status().as_u16(), 200);
        })
        .await;
        // Outside an invocation (the test's own set-up) nothing is counted, and
        // another invocation has its own count.
        let outside: Vec<_> = (0..=FD_LIMIT).map(|_| call()).collect();
        let again = within(trace, async { call().await.map(|r| r.status().as_u16()) });
        gate.add_permits(FD_LIMIT + 2);
        assert_eq!(again.await.unwrap(), 200);
        assert!(
            futures::future::join_all(outside)
                .await
                .iter()
                .all(Result::is_ok)
        );
    }
}

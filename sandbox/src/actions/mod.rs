//! Stand-ins for the dispatch actions (issue 13): the endpoints Conduit's integration
//! templates call, one module per provider, strict on auth, scopes, required fields,
//! enums and lengths, answering with each provider's own error body.
//!
//! Every action request goes through `serve`: it is counted under its route name,
//! delayed by the configured latency, checked against the provider's rate limit (the
//! catalogue's `rate_limit`, or an override), answered by a pending generic fault or an
//! action fault knob ([`ActionFault`]), else by the route's handler; then recorded
//! ([`Received`]) with the record it created. Route tables map
//! `(method, path pattern relative to the provider's API base)` to a handler.

// Handlers and their checks return the finished provider response as their error, as the
// provider stand-ins do (`#[allow]`ed one by one there); here nearly every helper does.
#![allow(clippy::result_large_err)]

pub(crate) mod admin;
mod chatwoot;
mod custom;
mod dynamics;
mod freshdesk;
mod genesys;
mod hubspot;
mod pipedrive;
mod salesforce;
mod sap;
mod store;
mod technologyone;
mod zendesk;
mod zoho;

use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::Value;
use sha2::{Digest, Sha256};

pub use store::{
    ActionFault, ActionFaultKind, DEFAULT_HOLD_MS, DispatchStore, FaultKnob, MAX_RECEIVED,
    Received, StoredRecord,
};
pub(crate) use store::{Replay, take_knob};

use crate::providers::ProviderRequest;
use crate::ratelimit::{Policy, Usage, Verdict};
use crate::state::{Provider, SandboxState};
use crate::wire;

/// What a handler produced: the answer and the record it created, if any.
pub(crate) struct Outcome {
    pub(crate) response: Response,
    pub(crate) created: Option<Value>,
}

impl From<Response> for Outcome {
    fn from(response: Response) -> Self {
        Outcome {
            response,
            created: None,
        }
    }
}

impl Outcome {
    /// An answer that created `record`.
    pub(crate) fn created(response: Response, record: Value) -> Self {
        Outcome {
            response,
            created: Some(record),
        }
    }
}

/// What a handler sees.
pub(crate) struct Ctx<'a> {
    pub(crate) provider: Provider,
    pub(crate) state: &'a SandboxState,
    pub(crate) req: &'a ProviderRequest,
    /// The `{}` segments of the route pattern, in order, percent-decoded.
    pub(crate) params: Vec<String>,
    /// How long the answer will be held (a `timeout` fault), so idempotency keys can be
    /// "in flight" meanwhile.
    pub(crate) held_ms: u64,
}

impl Ctx<'_> {
    /// Until when a request answered now stays in flight (epoch milliseconds).
    pub(crate) fn in_flight_until_ms(&self) -> i64 {
        crate::clock::now_ms() + i64::try_from(self.held_ms).unwrap_or(i64::MAX / 2)
    }
}

impl Ctx<'_> {
    /// The i-th path parameter ("" when absent).
    pub(crate) fn param(&self, i: usize) -> &str {
        self.params.get(i).map_or("", String::as_str)
    }

    /// A query parameter, decoded.
    pub(crate) fn query(&self, name: &str) -> Option<String> {
        wire::query_param(self.req.query.as_deref(), name)
    }

    /// A request header as text.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        wire::header(&self.req.headers, name)
    }

    /// The body as JSON; `Err` with the parser's message when it is not JSON.
    pub(crate) fn json(&self) -> Result<Value, String> {
        serde_json::from_slice(&self.req.body).map_err(|e| e.to_string())
    }

    /// Keeps a created record of this provider and host.
    pub(crate) fn insert(&self, collection: &str, id: &str, record: &Value) {
        self.state.dispatch_store().insert(
            self.provider,
            &self.req.host,
            collection,
            id,
            record.clone(),
        );
    }

    /// The records of a collection at this host, oldest first.
    pub(crate) fn list(&self, collection: &str) -> Vec<Value> {
        self.state
            .dispatch_store()
            .collection(self.provider, &self.req.host, collection)
            .map(|r| r.record.clone())
            .collect()
    }

    /// The records of a collection that the provider's search index holds already:
    /// those older than the provider's index delay ([`SandboxState::set_index_delay`]).
    pub(crate) fn list_indexed(&self, collection: &str) -> Vec<Value> {
        let store = self.state.dispatch_store();
        let delay = store
            .index_delay_ms
            .get(&self.provider)
            .copied()
            .unwrap_or(0);
        let cutoff = crate::clock::now_ms() - delay;
        store
            .collection(self.provider, &self.req.host, collection)
            .filter(|r| delay == 0 || r.created_ms <= cutoff)
            .map(|r| r.record.clone())
            .collect()
    }

    /// One record of a collection at this host.
    pub(crate) fn find(&self, collection: &str, id: &str) -> Option<Value> {
        self.state
            .dispatch_store()
            .record(self.provider, &self.req.host, collection, id)
            .map(|r| r.record.clone())
    }

    /// Replaces a stored record; false when there is none with that id.
    pub(crate) fn replace(&self, collection: &str, id: &str, record: &Value) -> bool {
        let mut store = self.state.dispatch_store();
        match store.record_mut(self.provider, &self.req.host, collection, id) {
            Some(stored) => {
                stored.record = record.clone();
                true
            }
            None => false,
        }
    }

    /// The next number of a per-provider counter starting at `start` (numeric ids).
    pub(crate) fn next_number(&self, counter: &str, start: u64) -> u64 {
        let key = format!("{}:{counter}", self.provider.as_str());
        self.state.dispatch_store().next_number(&key, start)
    }
}

type Handler = fn(&Ctx<'_>) -> Outcome;

/// One route of a provider's action table.
pub(crate) struct RouteDef {
    pub(crate) method: Method,
    /// Path relative to the API base; `{}` matches one segment.
    pub(crate) pattern: &'static str,
    pub(crate) name: &'static str,
    pub(crate) handler: Handler,
}

/// Shorthand for a [`RouteDef`].
pub(crate) const fn def(
    method: Method,
    pattern: &'static str,
    name: &'static str,
    handler: Handler,
) -> RouteDef {
    RouteDef {
        method,
        pattern,
        name,
        handler,
    }
}

/// A matched action route.
pub(crate) struct Action {
    name: &'static str,
    handler: Handler,
    params: Vec<String>,
}

/// The `{}` segments of `path` when it matches `pattern` (segment by segment).
fn match_path(pattern: &str, path: &str) -> Option<Vec<String>> {
    let mut params = Vec::new();
    let mut pattern_parts = pattern.split('/');
    let mut path_parts = path.split('/');
    loop {
        match (pattern_parts.next(), path_parts.next()) {
            (None, None) => return Some(params),
            // Percent-decoded; a `+` stays a `+` (this is a path, not a form).
            (Some("{}"), Some(seg)) if !seg.is_empty() => params.push(
                url::form_urlencoded::parse(format!("x={}", seg.replace('+', "%2B")).as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default(),
            ),
            (Some(p), Some(seg)) if p == seg => {}
            _ => return None,
        }
    }
}

/// The action route `req` asks for, if `provider` serves it as a dispatch action.
pub(crate) fn route(
    provider: Provider,
    state: &SandboxState,
    req: &ProviderRequest,
) -> Option<Action> {
    if provider == Provider::Custom {
        return custom::route(state, req);
    }
    // An environment switched to the contact/account record stand-in serves `contacts`
    // there (one store for sync), not as the dispatch actions' contacts.
    if provider == Provider::Dynamics365
        && crate::providers::dynamics365_crm::serves_contact_collection(state, req)
    {
        return None;
    }
    let (rest, table): (String, &[RouteDef]) = match provider {
        Provider::Genesys => (genesys::api_path(req)?, genesys::ROUTES),
        Provider::Sap => (sap::api_path(req)?, sap::ROUTES),
        Provider::Technologyone => (technologyone::api_path(req)?, technologyone::ROUTES),
        Provider::Zendesk => (zendesk::api_path(req)?, zendesk::ROUTES),
        Provider::Freshdesk => (freshdesk::api_path(req)?, freshdesk::ROUTES),
        Provider::Salesforce => (salesforce::api_path(req)?, salesforce::ROUTES),
        Provider::Hubspot => (req.path.clone(), hubspot::ROUTES),
        Provider::Pipedrive => (pipedrive::api_path(req)?, pipedrive::ROUTES),
        Provider::Zoho => (zoho::api_path(req)?, zoho::ROUTES),
        Provider::Dynamics365 => (dynamics::api_path(req)?, dynamics::ROUTES),
        Provider::Chatwoot => (chatwoot::api_path(req)?, chatwoot::ROUTES),
        _ => return None,
    };
    table.iter().find_map(|def| {
        if def.method != req.method {
            return None;
        }
        let params = match_path(def.pattern, &rest)?;
        Some(Action {
            name: def.name,
            handler: def.handler,
            params,
        })
    })
}

/// The catalogue's `rate_limit` per provider (shared/providers.yaml): requests per window.
fn catalogue_limit(provider: Provider) -> Option<(u64, u64)> {
    match provider {
        Provider::Genesys => Some((300, 60)),
        Provider::Sap => Some((100, 1)),
        Provider::Technologyone | Provider::Chatwoot | Provider::Custom => Some((60, 60)),
        Provider::Zendesk => Some((700, 60)),
        Provider::Freshdesk => Some((200, 60)),
        Provider::Pipedrive => Some((80, 2)),
        Provider::Zoho => Some((100, 60)),
        Provider::Dynamics365 => Some((6000, 300)),
        // HubSpot counts in its own authorize(); Salesforce has a daily org allowance.
        _ => None,
    }
}

/// The limiter key of a request: provider, host and a digest of its credential headers
/// (the catalogue's scopes are per account or per token: one credential, one budget).
fn limiter_key(provider: Provider, req: &ProviderRequest) -> String {
    let mut digest = Sha256::new();
    for name in ["authorization", "api_access_token", "x-api-token"] {
        if let Some(value) = req.headers.get(name) {
            digest.update(value.as_bytes());
        }
    }
    let hash = digest.finalize();
    let short: String = hash.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("dispatch:{}:{}:{short}", provider.as_str(), req.host)
}

/// The provider's throttle answer: its 429 with `Retry-After` (Salesforce: 403
/// `REQUEST_LIMIT_EXCEEDED`, which has no `Retry-After`).
pub(crate) fn throttled(provider: Provider, route: &str, retry_after: u64) -> Response {
    if provider == Provider::Salesforce {
        return salesforce::limit_exceeded();
    }
    let fault = crate::state::Fault {
        retry_after_secs: retry_after.max(1),
        ..crate::state::Fault::new(429, 1)
    };
    let response = crate::providers::fault_response(provider, route, &fault);
    if response.headers().contains_key("retry-after") {
        response
    } else {
        wire::with_retry_after(response, retry_after.max(1))
    }
}

/// A forced error answer in the provider's shape.
fn forced(provider: Provider, route: &str, status: u16, retry_after: u64) -> Response {
    let fault = crate::state::Fault {
        retry_after_secs: retry_after,
        ..crate::state::Fault::new(status, 1)
    };
    crate::providers::fault_response(provider, route, &fault)
}

/// Serves one action request (see the module documentation for the order of checks).
pub(crate) async fn serve(
    state: &SandboxState,
    req: &ProviderRequest,
    provider: Provider,
    action: Action,
) -> Response {
    state.record_call(action.name);
    let mut seen = Seen {
        state,
        req,
        provider,
        route: action.name,
        seq: state.dispatch_store().next_seq(),
        action: true,
        usage: None,
        at_ms: crate::clock::now_ms(),
    };
    let latency = state.latency_for(provider);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let limit = {
        let store = state.dispatch_store();
        store.limits.get(&provider).copied()
    }
    .or_else(|| catalogue_limit(provider));
    if let Some((requests, window)) = limit {
        let policy = [Policy::rolling(
            "DISPATCH",
            requests,
            Duration::from_secs(window),
        )];
        let key = limiter_key(provider, req);
        let verdict = state.with_limiter(|l| l.acquire(&key, &policy, Instant::now()));
        seen.usage = verdict.usage().first().copied();
        if let Verdict::Denied { retry_after, .. } = verdict {
            let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
            let response = throttled(provider, action.name, secs);
            return seen.record(response, None, Some("rate_limit"));
        }
    }
    if let Some(fault) = state.take_fault(provider, action.name) {
        let response = crate::providers::fault_response(provider, action.name, &fault);
        return seen.record(response, None, Some("status"));
    }
    let fault = state.dispatch_store().take_fault(provider, action.name);
    let held_ms = fault
        .as_ref()
        .filter(|f| f.knob.kind == ActionFaultKind::Timeout)
        .map_or(0, |f| {
            u64::try_from(f.knob.hold().as_millis()).unwrap_or(u64::MAX)
        });
    let ctx = Ctx {
        provider,
        state,
        req,
        params: action.params,
        held_ms,
    };
    let Some(fault) = fault.map(|f| f.knob) else {
        let outcome = (action.handler)(&ctx);
        return seen.record(outcome.response, outcome.created, None);
    };
    let forced_status = || {
        forced(
            provider,
            action.name,
            fault.status_or_default(),
            fault.retry_after_secs,
        )
    };
    let (response, created) = match fault.kind {
        ActionFaultKind::Status => (forced_status(), None),
        ActionFaultKind::RateLimit => (
            throttled(provider, action.name, fault.retry_after_secs),
            None,
        ),
        ActionFaultKind::Timeout | ActionFaultKind::Drop => {
            let outcome = (action.handler)(&ctx);
            (outcome.response, outcome.created)
        }
        ActionFaultKind::AfterEffect => (forced_status(), (action.handler)(&ctx).created),
    };
    let status = response.status();
    // Recorded before any hold: a client that gives up drops this future, and the effect
    // must be on record anyway (that is what makes lookups needed).
    let response = seen.record(response, created, Some(fault.kind.as_str()));
    match fault.kind {
        ActionFaultKind::Timeout => {
            tokio::time::sleep(fault.hold()).await;
            response
        }
        ActionFaultKind::Drop => dropped(status),
        _ => response,
    }
}

/// Records a request to one of the provider's other routes (the CRM, identity and
/// record-sync stand-ins), so a chain's order can be read across them: no created record,
/// and no body over [`MAX_OTHER_BODY`] bytes. OAuth routes are never recorded (their
/// bodies and queries carry client secrets, codes and tokens).
pub(crate) fn record_other(
    state: &SandboxState,
    req: &ProviderRequest,
    provider: Provider,
    route: &'static str,
    response: Response,
) -> Response {
    if route.contains("oauth") {
        return response;
    }
    let seen = Seen {
        state,
        req,
        provider,
        route,
        seq: state.dispatch_store().next_seq(),
        action: false,
        usage: None,
        at_ms: crate::clock::now_ms(),
    };
    seen.record(response, None, None)
}

/// The largest body of a non-action request that is recorded (larger ones are recorded
/// as a note of their size: record-sync batches would otherwise fill memory).
pub const MAX_OTHER_BODY: usize = 16 * 1024;

/// An answer whose body fails after its head: the client sees the connection drop.
fn dropped(status: StatusCode) -> Response {
    let failing = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "sandbox fault: connection dropped",
        ))
    });
    let mut response = Response::new(Body::from_stream(failing));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static("application/json"),
    );
    response
}

/// Header names whose values are credentials and never recorded.
const SECRET_HEADERS: [&str; 7] = [
    "authorization",
    "cookie",
    "api_access_token",
    "x-api-token",
    "x-api-key",
    "x-csrf-token",
    "proxy-authorization",
];

/// Query parameters that carry credentials.
const SECRET_PARAMS: [&str; 3] = ["api_token", "access_token", "token"];

/// The rate-limit headers a provider sends on every answer (Zendesk `X-Rate-Limit*`,
/// Freshdesk `X-Ratelimit-*`, Pipedrive `x-ratelimit-*`, Dataverse
/// `x-ms-ratelimit-burst-remaining-xrm-requests`); Genesys removed its own in 2021, the
/// others send none.
fn rate_headers(provider: Provider, usage: &Usage, mut response: Response) -> Response {
    let reset = usage.reset_after.as_secs() + u64::from(usage.reset_after.subsec_nanos() > 0);
    let pairs: Vec<(&'static str, u64)> = match provider {
        Provider::Zendesk => vec![
            ("x-rate-limit", usage.limit),
            ("x-rate-limit-remaining", usage.remaining),
        ],
        Provider::Freshdesk => vec![
            ("x-ratelimit-total", usage.limit),
            ("x-ratelimit-remaining", usage.remaining),
            ("x-ratelimit-used-currentrequest", 1),
        ],
        Provider::Pipedrive => vec![
            ("x-ratelimit-limit", usage.limit),
            ("x-ratelimit-remaining", usage.remaining),
            ("x-ratelimit-reset", reset),
        ],
        Provider::Dynamics365 => vec![(
            "x-ms-ratelimit-burst-remaining-xrm-requests",
            usage.remaining,
        )],
        _ => Vec::new(),
    };
    for (name, value) in pairs {
        response
            .headers_mut()
            .insert(name, axum::http::HeaderValue::from(value));
    }
    response
}

/// One action request being served, for its record.
struct Seen<'a> {
    state: &'a SandboxState,
    req: &'a ProviderRequest,
    provider: Provider,
    route: &'static str,
    seq: u64,
    /// True for action routes (bodies always recorded); false for the provider's others.
    action: bool,
    /// The rate-limit budget after this request, for the provider's headers.
    usage: Option<Usage>,
    /// When serving began, epoch ms.
    at_ms: i64,
}

impl Seen<'_> {
    /// Records the exchange (with the record it created and the fault that shaped it)
    /// and hands the answer back intact.
    fn record(&self, response: Response, created: Option<Value>, fault: Option<&str>) -> Response {
        let response = match &self.usage {
            Some(usage) => rate_headers(self.provider, usage, response),
            None => response,
        };
        let req = self.req;
        let headers = req
            .headers
            .iter()
            .filter(|(name, _)| !SECRET_HEADERS.contains(&name.as_str()))
            .filter_map(|(name, value)| {
                Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
            })
            .collect();
        let query = req
            .query
            .as_deref()
            .map(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .into_owned()
                    .filter(|(k, _)| !SECRET_PARAMS.contains(&k.as_str()))
                    .collect()
            })
            .unwrap_or_default();
        let body = if req.body.len() > MAX_OTHER_BODY && !self.action {
            Value::String(format!("({} bytes, not recorded)", req.body.len()))
        } else {
            serde_json::from_slice(&req.body)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&req.body).into_owned()))
        };
        let entry = Received {
            seq: self.seq,
            provider: self.provider,
            route: self.route.to_owned(),
            method: req.method.as_str().to_owned(),
            host: req.host.clone(),
            path: req.path.clone(),
            query,
            headers,
            body,
            status: response.status().as_u16(),
            created,
            fault: fault.map(str::to_owned),
            at_ms: self.at_ms,
        };
        self.state.dispatch_store().push_received(entry);
        response
    }
}

/// The time now as RFC 3339 with milliseconds (`2026-12-05T03:40:12.000Z`).
pub(crate) fn now_rfc3339() -> String {
    now_rfc3339_at(crate::clock::now_ms())
}

/// An epoch-milliseconds time as RFC 3339 with milliseconds.
pub(crate) fn now_rfc3339_at(ms: i64) -> String {
    crate::providers::hubspot_crm::rfc3339(ms)
}

/// `n` random bytes as lower-case hex.
pub(crate) fn random_hex(n: usize) -> String {
    (0..n)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

/// The JSON type name of a value, for type-mismatch messages.
pub(crate) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A non-empty string field of an object.
pub(crate) fn str_field<'a>(object: &'a Value, name: &str) -> Option<&'a str> {
    object.get(name)?.as_str().filter(|s| !s.trim().is_empty())
}

/// Whether an id field (a JSON number or string) is `id`.
pub(crate) fn id_matches(value: &Value, id: &str) -> bool {
    value.as_str() == Some(id) || (value.is_u64() && id.parse::<u64>().ok() == value.as_u64())
}

/// Whether `needle` occurs in any string inside `value` (the lookups' marker search).
pub(crate) fn contains_text(value: &Value, needle: &str) -> bool {
    match value {
        Value::String(s) => s.contains(needle),
        Value::Array(items) => items.iter().any(|v| contains_text(v, needle)),
        Value::Object(map) => map.values().any(|v| contains_text(v, needle)),
        _ => false,
    }
}

impl SandboxState {
    /// Every request the action stand-ins received, in arrival order (all providers, or
    /// one).
    pub fn dispatch_requests(&self, provider: Option<Provider>) -> Vec<Received> {
        self.dispatch_store()
            .received
            .iter()
            .filter(|r| provider.is_none_or(|p| r.provider == p))
            .cloned()
            .collect()
    }

    /// Every record the action stand-ins created, oldest first (all providers, or one;
    /// all collections, or one).
    pub fn dispatch_records(
        &self,
        provider: Option<Provider>,
        collection: Option<&str>,
    ) -> Vec<StoredRecord> {
        self.dispatch_store()
            .records
            .iter()
            .filter(|r| provider.is_none_or(|p| r.provider == p))
            .filter(|r| collection.is_none_or(|c| r.collection == c))
            .cloned()
            .collect()
    }

    /// Queues an action fault knob (see [`ActionFault`]).
    pub fn add_action_fault(&self, fault: ActionFault) -> Result<(), String> {
        fault.knob.validate()?;
        self.dispatch_store().faults.push(fault);
        Ok(())
    }

    /// The pending action fault knobs.
    pub fn action_faults(&self) -> Vec<ActionFault> {
        self.dispatch_store().faults.clone()
    }

    /// Clears the action fault knobs (of one provider, or all).
    pub fn clear_action_faults(&self, provider: Option<Provider>) {
        self.dispatch_store()
            .faults
            .retain(|f| provider.is_some_and(|p| f.provider != p));
    }

    /// Ends every SAP CSRF session (as a session timeout does): the next write with an
    /// earlier token answers 403 `x-csrf-token: Required` until a new token is fetched.
    /// Returns how many sessions ended.
    pub fn expire_csrf_tokens(&self) -> usize {
        let mut store = self.dispatch_store();
        let ended = store.csrf.len();
        store.csrf.clear();
        ended
    }

    /// Makes a provider's search lag: records stay out of its search answers for
    /// `delay` after they are created (Freshdesk: "a few minutes"; HubSpot: seconds).
    /// Zero turns the lag off (the default).
    pub fn set_index_delay(&self, provider: Provider, delay: Duration) {
        let ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        let mut store = self.dispatch_store();
        if ms == 0 {
            store.index_delay_ms.remove(&provider);
        } else {
            store.index_delay_ms.insert(provider, ms);
        }
    }

    /// Overrides a provider's action rate limit: `requests` per `window_secs` per
    /// credential (`None` restores the catalogue's).
    pub fn set_action_limit(&self, provider: Provider, limit: Option<(u64, u64)>) {
        let mut store = self.dispatch_store();
        match limit {
            Some(limit) => store.limits.insert(provider, limit),
            None => store.limits.remove(&provider),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_segments() {
        assert_eq!(
            match_path("/a/{}/b", "/a/x%20y/b"),
            Some(vec!["x y".to_owned()])
        );
        assert_eq!(match_path("/a/{}/b", "/a//b"), None);
        assert_eq!(match_path("/a/{}", "/a/x/b"), None);
        assert_eq!(match_path("/a", "/a"), Some(vec![]));
        assert_eq!(
            match_path("/k/{}", "/k/evt_01%3Aint+1"),
            Some(vec!["evt_01:int+1".to_owned()])
        );
    }

    #[test]
    fn share_faults_stay_and_count_faults_run_out() {
        let mut store = DispatchStore::default();
        let mut fault = ActionFault::new(Provider::Zendesk, ActionFaultKind::Status);
        fault.knob.count = Some(2);
        store.faults.push(fault);
        assert!(
            store
                .take_fault(Provider::Zendesk, "zendesk.ticket_create")
                .is_some()
        );
        assert!(store.take_fault(Provider::Genesys, "genesys.x").is_none());
        assert!(
            store
                .take_fault(Provider::Zendesk, "zendesk.ticket_create")
                .is_some()
        );
        assert!(
            store
                .take_fault(Provider::Zendesk, "zendesk.ticket_create")
                .is_none()
        );
        let mut always = ActionFault::new(Provider::Sap, ActionFaultKind::Drop);
        always.knob.share = Some(1.0);
        store.faults.push(always);
        for _ in 0..3 {
            assert!(store.take_fault(Provider::Sap, "sap.x").is_some());
        }
        let mut bad = FaultKnob::new(ActionFaultKind::Status);
        bad.share = Some(1.5);
        assert!(bad.validate().is_err());
        bad.share = None;
        bad.status = Some(200);
        assert!(bad.validate().is_err());
    }
}

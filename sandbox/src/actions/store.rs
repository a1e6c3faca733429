//! What the dispatch-action stand-ins keep: every request they received (in arrival
//! order, across providers), the records they created, idempotency replays, CSRF
//! sessions, fault knobs and rate-limit overrides.

use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::state::Provider;

/// One request an action stand-in received, with its answer and the record it created.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Received {
    /// Arrival number, increasing across every provider (so chains can be ordered).
    pub seq: u64,
    /// The provider.
    pub provider: Provider,
    /// The route name, e.g. `genesys.external_contact_note_create`.
    pub route: String,
    /// HTTP method.
    pub method: String,
    /// Provider host.
    pub host: String,
    /// Provider path (percent-encoded as received).
    pub path: String,
    /// Decoded query pairs (credential parameters such as `api_token` removed).
    pub query: Vec<(String, String)>,
    /// Request headers, lower-case names, without credentials (`authorization`, `cookie`,
    /// `api_access_token`, `x-api-token`, `x-csrf-token` values are dropped).
    pub headers: BTreeMap<String, String>,
    /// The body: JSON when it parses, else the text.
    pub body: Value,
    /// The status answered.
    pub status: u16,
    /// The record created by this request (also when the answer was a forced failure).
    pub created: Option<Value>,
    /// The fault knob that shaped the answer, if any (`status`, `rate_limit`, …).
    pub fault: Option<String>,
    /// When the stand-in began to serve it (before any latency knob and the rate
    /// limit), epoch milliseconds.
    pub at_ms: i64,
}

/// A record created by an action stand-in.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StoredRecord {
    /// The provider.
    pub provider: Provider,
    /// The host it lives at (records of one tenant are not seen from another).
    pub host: String,
    /// The collection, e.g. `notes`, `ServiceRequestCollection`, `Task`.
    pub collection: String,
    /// The provider-shaped id.
    pub id: String,
    /// Arrival number of the request that created it.
    pub seq: u64,
    /// When it was created, epoch milliseconds.
    pub created_ms: i64,
    /// The record as the provider would return it.
    pub record: Value,
}

/// What a fault knob does to the requests it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionFaultKind {
    /// Answer `status` (default 503) in the provider's error shape; nothing is created.
    Status,
    /// Answer the provider's throttle (429 with `Retry-After`; Salesforce 403
    /// `REQUEST_LIMIT_EXCEEDED`); nothing is created.
    RateLimit,
    /// Serve it (the record is created at once), then hold the answer for `hold_ms`
    /// (default 35 s, longer than a client's timeout): the client gives up not knowing.
    Timeout,
    /// Serve it (the record is created), then answer `status` (default 500) instead.
    AfterEffect,
    /// Serve it (the record is created), then drop the connection mid-answer.
    Drop,
}

impl ActionFaultKind {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ActionFaultKind::Status => "status",
            ActionFaultKind::RateLimit => "rate_limit",
            ActionFaultKind::Timeout => "timeout",
            ActionFaultKind::AfterEffect => "after_effect",
            ActionFaultKind::Drop => "drop",
        }
    }
}

/// How often a fault knob fires and what it answers; shared by the action routes
/// ([`ActionFault`]) and the webhook receivers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultKnob {
    /// What happens.
    pub kind: ActionFaultKind,
    /// Status for `status` (default 503) and `after_effect` (default 500), 400–599.
    #[serde(default)]
    pub status: Option<u16>,
    /// How many matching requests get it (default 1 unless `share` is given).
    #[serde(default)]
    pub count: Option<u32>,
    /// Instead of `count`: the fraction (0–1] of matching requests that get it, until
    /// the knobs are cleared.
    #[serde(default)]
    pub share: Option<f64>,
    /// `Retry-After` seconds on 429 and 503 answers.
    #[serde(default = "default_retry_after")]
    pub retry_after_secs: u64,
    /// How long `timeout` holds the request, in milliseconds (default 35,000).
    #[serde(default)]
    pub hold_ms: Option<u64>,
}

fn default_retry_after() -> u64 {
    1
}

/// Default hold of a `timeout` fault: longer than the 30 s maximum client timeout.
pub const DEFAULT_HOLD_MS: u64 = 35_000;

impl FaultKnob {
    /// A knob of `kind` for the next matching request.
    pub fn new(kind: ActionFaultKind) -> Self {
        Self {
            kind,
            status: None,
            count: None,
            share: None,
            retry_after_secs: default_retry_after(),
            hold_ms: None,
        }
    }

    /// Checks the knob's numbers; the error says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(status) = self.status
            && !(400..=599).contains(&status)
        {
            return Err(format!("status must be between 400 and 599, got {status}"));
        }
        match (self.count, self.share) {
            (Some(_), Some(_)) => Err("give count or share, not both".to_owned()),
            (Some(0), None) => Err("count must be at least 1".to_owned()),
            (None, Some(share)) if !(share > 0.0 && share <= 1.0) => {
                Err("share must be in (0, 1]".to_owned())
            }
            _ => Ok(()),
        }
    }

    /// The status a `status` or `after_effect` fault answers.
    pub fn status_or_default(&self) -> u16 {
        self.status.unwrap_or(match self.kind {
            ActionFaultKind::AfterEffect => 500,
            _ => 503,
        })
    }

    /// How long a `timeout` fault holds the request.
    pub fn hold(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.hold_ms.unwrap_or(DEFAULT_HOLD_MS))
    }
}

/// Takes one use of the first knob in `knobs` that `applies`: a `share` knob fires by
/// chance and stays; a `count` knob is used up.
pub(crate) fn take_knob<T: Clone>(
    knobs: &mut Vec<T>,
    applies: impl Fn(&T) -> bool,
    knob: impl Fn(&mut T) -> &mut FaultKnob,
) -> Option<T> {
    let index = knobs.iter().position(applies)?;
    let entry = knobs.get_mut(index)?;
    let k = knob(entry);
    if let Some(share) = k.share {
        return (rand::random::<f64>() < share).then(|| entry.clone());
    }
    let left = k.count.unwrap_or(1).saturating_sub(1);
    k.count = Some(left);
    let taken = entry.clone();
    if left == 0 {
        knobs.remove(index);
    }
    Some(taken)
}

/// A fault knob for the action routes of one provider (optionally one route).
///
/// As JSON the knob's fields sit beside these:
/// `{"provider":"zendesk","route":"zendesk.ticket_create","kind":"after_effect","count":1}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionFault {
    /// The provider whose action routes it applies to.
    pub provider: Provider,
    /// Only this route name (e.g. `zendesk.ticket_create`); every action route when absent.
    #[serde(default)]
    pub route: Option<String>,
    /// What it does and how often.
    #[serde(flatten)]
    pub knob: FaultKnob,
}

impl ActionFault {
    /// A fault of `kind` for the next request of `provider`'s action routes.
    pub fn new(provider: Provider, kind: ActionFaultKind) -> Self {
        Self {
            provider,
            route: None,
            knob: FaultKnob::new(kind),
        }
    }
}

/// A CSRF session (SAP): the token and the session cookie issued together.
#[derive(Clone, Debug)]
pub(crate) struct CsrfSession {
    pub(crate) host: String,
    pub(crate) cookie: String,
}

/// A stored answer for an idempotency key (Zendesk).
#[derive(Clone, Debug)]
pub(crate) struct Replay {
    pub(crate) fingerprint: Vec<u8>,
    pub(crate) status: u16,
    pub(crate) body: Value,
    pub(crate) location: Option<String>,
    pub(crate) stored_ms: i64,
    /// Until when the first request is still "being processed" (a `timeout` fault holds
    /// its answer): a repeat before then is refused with 409.
    pub(crate) in_flight_until_ms: i64,
}

impl Replay {
    /// Whether the first request of this key is still being answered.
    pub(crate) fn in_flight(&self) -> bool {
        crate::clock::now_ms() < self.in_flight_until_ms
    }
}

/// The dispatch-action stand-ins' data; reset with the sandbox.
#[derive(Debug, Default)]
pub struct DispatchStore {
    pub(crate) seq: u64,
    pub(crate) numbers: BTreeMap<String, u64>,
    pub(crate) received: VecDeque<Received>,
    pub(crate) records: Vec<StoredRecord>,
    pub(crate) faults: Vec<ActionFault>,
    pub(crate) limits: BTreeMap<Provider, (u64, u64)>,
    /// How long new records stay invisible to a provider's search (its index lag).
    pub(crate) index_delay_ms: BTreeMap<Provider, i64>,
    pub(crate) idempotency: HashMap<String, Replay>,
    pub(crate) csrf: HashMap<String, CsrfSession>,
    pub(crate) receivers: crate::webhooks::Receivers,
}

/// How many received requests are kept (the oldest go first): a 10,000-event bench with
/// 3-step chains makes 30,000.
pub const MAX_RECEIVED: usize = 50_000;

impl DispatchStore {
    /// Keeps a received request, dropping the oldest past [`MAX_RECEIVED`].
    pub(crate) fn push_received(&mut self, entry: Received) {
        if self.received.len() == MAX_RECEIVED {
            self.received.pop_front();
        }
        self.received.push_back(entry);
    }

    /// The next arrival number.
    pub(crate) fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// The next number of a named counter, starting at `start`.
    pub(crate) fn next_number(&mut self, counter: &str, start: u64) -> u64 {
        let slot = self.numbers.entry(counter.to_owned()).or_insert(start - 1);
        *slot += 1;
        *slot
    }

    /// Keeps a created record.
    pub(crate) fn insert(
        &mut self,
        provider: Provider,
        host: &str,
        collection: &str,
        id: &str,
        record: Value,
    ) {
        let seq = self.seq;
        self.records.push(StoredRecord {
            provider,
            host: host.to_owned(),
            collection: collection.to_owned(),
            id: id.to_owned(),
            seq,
            created_ms: crate::clock::now_ms(),
            record,
        });
    }

    /// The records of one collection, oldest first.
    pub(crate) fn collection<'a>(
        &'a self,
        provider: Provider,
        host: &'a str,
        collection: &'a str,
    ) -> impl Iterator<Item = &'a StoredRecord> + 'a {
        self.records
            .iter()
            .filter(move |r| r.provider == provider && r.host == host && r.collection == collection)
    }

    /// One record by id, to change it.
    pub(crate) fn record_mut(
        &mut self,
        provider: Provider,
        host: &str,
        collection: &str,
        id: &str,
    ) -> Option<&mut StoredRecord> {
        self.records.iter_mut().find(|r| {
            r.provider == provider && r.host == host && r.collection == collection && r.id == id
        })
    }

    /// One record by id.
    pub(crate) fn record<'a>(
        &'a self,
        provider: Provider,
        host: &'a str,
        collection: &'a str,
        id: &str,
    ) -> Option<&'a StoredRecord> {
        self.collection(provider, host, collection)
            .find(|r| r.id == id)
    }

    /// Takes one use of the first knob matching the provider and route.
    pub(crate) fn take_fault(&mut self, provider: Provider, route: &str) -> Option<ActionFault> {
        take_knob(
            &mut self.faults,
            |f| f.provider == provider && f.route.as_deref().is_none_or(|r| r == route),
            |f| &mut f.knob,
        )
    }
}

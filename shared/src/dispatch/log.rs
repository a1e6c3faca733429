//! The dispatch log: one [`Dispatch`] per event (or per manual send), holding each step
//! of its chain with its state — what the dispatcher stores around every call so a
//! redelivered or resumed event skips what is finished — and what the API shows:
//! status, the request summary (never a secret), the created record's id and URL,
//! attempts, duration and error.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::integration::{Integration, OnFailure, TriggerEvent};
use crate::domain::{DispatchId, IntegrationId, TenantId};

/// How long a dispatch is kept (then DynamoDB's TTL removes it).
pub const RETENTION_DAYS: i64 = 30;

/// Where a dispatch came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// An event on the bus (the product's or Conduit's).
    Event,
    /// `POST /v1/integrations/{id}/send`.
    Send,
    /// `POST /v1/integrations/{id}/test` with `send: true`.
    Test,
}

/// A dispatch's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DispatchStatus {
    /// Steps are running.
    Running,
    /// A step waits for its next attempt.
    Waiting,
    /// Every step succeeded (or the chain was empty).
    Succeeded,
    /// Some steps failed, and the chain went on past them.
    Partial,
    /// A step failed and stopped the chain, or every step failed.
    Failed,
}

impl DispatchStatus {
    /// Whether nothing more will happen without a retry.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Partial | Self::Failed)
    }
    /// Its name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Waiting => "waiting",
            Self::Succeeded => "succeeded",
            Self::Partial => "partial",
            Self::Failed => "failed",
        }
    }
}

/// A step's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// Not started.
    Pending,
    /// Waiting for its next attempt.
    Waiting,
    /// Done: its effect happened once.
    Succeeded,
    /// Given up (a permanent error, or its attempts used up).
    Failed,
    /// Not run: an earlier step stopped the chain, or its integration is gone.
    Skipped,
}

impl StepStatus {
    /// Whether the step is finished.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Skipped)
    }
}

/// What a step sent, for people: never a header value, query or body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestSummary {
    /// The method.
    pub method: String,
    /// The host.
    pub host: String,
    /// The path (ids of the event may appear; no query string).
    pub path: String,
    /// The answer's status, if one came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

/// Why a step failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepError {
    /// A stable code: `rate_limited`, `provider_error`, `timeout`, `rejected`,
    /// `unauthorized`, `render_failed`, `missing_fields`, `connection_unusable`,
    /// `integration_deleted`, `endpoint_disabled`, `unknown_outcome`.
    pub code: String,
    /// What happened (the provider's message, clipped; never a secret).
    pub message: String,
    /// The provider's status, if it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

/// Where a step's requests stand, so a resumed step neither repeats nor loses one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Requests of the action finished (answered or skipped).
    #[serde(default)]
    pub done: usize,
    /// Values captured from their answers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub captures: BTreeMap<String, serde_json::Value>,
    /// A request that was sent without a known outcome (the attempt was cut off):
    /// before it is sent again, its lookup runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight: Option<usize>,
    /// When that request was sent (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub in_flight_at: Option<i64>,
    /// Whether it was answered (a 5xx: the provider is done with it) rather than cut
    /// off (a timeout, a lost connection, a killed worker: it may still land).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub in_flight_answered: bool,
}

/// One step of a chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    /// The integration.
    pub integration_id: IntegrationId,
    /// Its name when the chain was resolved.
    pub name: String,
    /// Its provider.
    pub provider: String,
    /// Its action.
    pub action: String,
    /// Its priority for this event.
    pub priority: u32,
    /// What its failure does.
    pub on_failure: OnFailure,
    /// Payload overrides for this event (the assistant's over the integration's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub overrides: BTreeMap<String, serde_json::Value>,
    /// Its state.
    pub status: StepStatus,
    /// Attempts made.
    #[serde(default)]
    pub attempts: u32,
    /// When its first attempt started.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub started_at: Option<OffsetDateTime>,
    /// When it finished.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// Time spent in its attempts, in milliseconds.
    #[serde(default)]
    pub duration_ms: u64,
    /// The last request it sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestSummary>,
    /// The created record's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// The created record's URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_url: Option<String>,
    /// Outputs for later steps (`steps.<key>.outputs`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, String>,
    /// Why it failed (or why its last attempt did, while waiting).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StepError>,
    /// Its requests' progress.
    #[serde(default)]
    pub progress: Progress,
    /// When its next attempt is due (Unix ms), while waiting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<i64>,
}

impl Step {
    /// A pending step for `integration` at `priority` with `overrides`.
    pub fn pending(
        integration: &Integration,
        priority: u32,
        overrides: BTreeMap<String, serde_json::Value>,
    ) -> Self {
        Self {
            integration_id: integration.id.clone(),
            name: integration.name.clone(),
            provider: integration.provider.clone(),
            action: integration.action.clone(),
            priority,
            on_failure: integration.on_failure,
            overrides,
            status: StepStatus::Pending,
            attempts: 0,
            started_at: None,
            finished_at: None,
            duration_ms: 0,
            request: None,
            external_id: None,
            external_url: None,
            outputs: BTreeMap::new(),
            error: None,
            progress: Progress::default(),
            next_attempt_at: None,
        }
    }

    /// The key later steps use for its outputs: `{provider}_{action}` (the first
    /// step of that pair in the chain) — `steps.genesys_log_call.outputs.id`.
    pub fn key(&self) -> String {
        format!("{}_{}", self.provider, self.action)
    }
}

/// Who is running a dispatch, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The holder (an invocation's id).
    pub holder: String,
    /// Until when (Unix ms).
    pub until: i64,
}

/// One event's run through its chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Dispatch {
    /// Its id (derived from the event: every delivery names the same dispatch).
    pub id: DispatchId,
    /// The tenant.
    pub tenant: TenantId,
    /// The event's type.
    pub event_type: TriggerEvent,
    /// The event's id.
    pub event_id: String,
    /// The event's assistant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assistant_id: Option<String>,
    /// When the event happened.
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    /// When Conduit first received it.
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// When its last step finished.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    /// Where it came from.
    pub origin: Origin,
    /// Its state.
    pub status: DispatchStatus,
    /// Its chain.
    pub steps: Vec<Step>,
    /// Who runs it now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// When a waiting step is next due (Unix ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<i64>,
    /// Its version (each save is conditional on the one read).
    pub version: u64,
}

impl Dispatch {
    /// The status its steps add up to.
    pub fn settle(&mut self) {
        let all_final = self.steps.iter().all(|s| s.status.is_final());
        self.due_at = self
            .steps
            .iter()
            .filter(|s| s.status == StepStatus::Waiting)
            .filter_map(|s| s.next_attempt_at)
            .min();
        self.status = if !all_final {
            if self.due_at.is_some() {
                DispatchStatus::Waiting
            } else {
                DispatchStatus::Running
            }
        } else {
            let failed = self
                .steps
                .iter()
                .filter(|s| s.status == StepStatus::Failed)
                .count();
            let stopped = self
                .steps
                .iter()
                .any(|s| s.status == StepStatus::Failed && s.on_failure == OnFailure::Stop);
            match failed {
                0 => DispatchStatus::Succeeded,
                _ if stopped || failed == self.steps.len() => DispatchStatus::Failed,
                _ => DispatchStatus::Partial,
            }
        };
    }

    /// Outputs of its finished steps by key, for templates (`steps`).
    pub fn outputs(&self) -> serde_json::Value {
        let mut steps = serde_json::Map::new();
        for s in self
            .steps
            .iter()
            .filter(|s| s.status == StepStatus::Succeeded)
        {
            steps
                .entry(s.key())
                .or_insert_with(|| serde_json::json!({ "outputs": s.outputs }));
            steps
                .entry(s.integration_id.to_string())
                .or_insert_with(|| serde_json::json!({ "outputs": s.outputs }));
        }
        serde_json::Value::Object(steps)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn step(status: StepStatus, on_failure: OnFailure) -> Step {
        Step {
            integration_id: IntegrationId::generate(),
            name: "n".into(),
            provider: "hubspot".into(),
            action: "log_call".into(),
            priority: 1,
            on_failure,
            overrides: BTreeMap::new(),
            status,
            attempts: 1,
            started_at: None,
            finished_at: None,
            duration_ms: 0,
            request: None,
            external_id: None,
            external_url: None,
            outputs: BTreeMap::from([("id".to_owned(), "42".to_owned())]),
            error: None,
            progress: Progress::default(),
            next_attempt_at: (status == StepStatus::Waiting).then_some(5),
        }
    }

    pub(crate) fn dispatch(steps: Vec<Step>) -> Dispatch {
        let at = OffsetDateTime::UNIX_EPOCH;
        Dispatch {
            id: DispatchId::generate(),
            tenant: TenantId::parse("acme").unwrap(),
            event_type: TriggerEvent::ConversationEnded,
            event_id: "e".into(),
            assistant_id: None,
            occurred_at: at,
            received_at: at,
            updated_at: at,
            finished_at: None,
            origin: Origin::Event,
            status: DispatchStatus::Running,
            steps,
            lease: None,
            due_at: None,
            version: 1,
        }
    }

    #[test]
    fn the_status_adds_up_its_steps() {
        use OnFailure::*;
        use StepStatus::*;
        for (steps, want) in [
            (vec![], DispatchStatus::Succeeded),
            (
                vec![(Succeeded, Continue), (Pending, Continue)],
                DispatchStatus::Running,
            ),
            (
                vec![(Succeeded, Continue), (Waiting, Continue)],
                DispatchStatus::Waiting,
            ),
            (
                vec![(Failed, Continue), (Succeeded, Continue)],
                DispatchStatus::Partial,
            ),
            (
                vec![(Failed, Stop), (Skipped, Continue)],
                DispatchStatus::Failed,
            ),
            (vec![(Failed, Continue)], DispatchStatus::Failed),
        ] {
            let mut d = dispatch(steps.into_iter().map(|(s, f)| step(s, f)).collect());
            d.settle();
            assert_eq!(d.status, want);
        }
    }

    #[test]
    fn outputs_are_keyed_by_provider_action_and_by_integration() {
        let d = dispatch(vec![step(StepStatus::Succeeded, OnFailure::Continue)]);
        let out = d.outputs();
        assert_eq!(out["hubspot_log_call"]["outputs"]["id"], "42");
        assert_eq!(
            out[d.steps[0].integration_id.as_str()]["outputs"]["id"],
            "42"
        );
    }
}

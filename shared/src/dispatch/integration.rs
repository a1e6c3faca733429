//! Outbound integrations: a tenant's "when this happens, do that with this connection"
//! — a template action of a provider (or a webhook endpoint), the events that trigger
//! it with their conditions, its place in the chain (priority, lower first), what
//! happens when it fails, and per-assistant settings that switch integrations on or
//! off, reorder them or override their payload for one assistant.
//!
//! Chains are resolved here from plain data ([`resolve_chain`]); templates are rendered
//! by [`super::template`], calls made by [`super::engine`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::event::{Channel, Direction, EventType};
use super::inbound::DispatchEvent;
use crate::domain::{ConnectionId, IntegrationId, TenantId, UserId};

/// The provider id of the webhook destination (not a catalogue provider: it has no
/// connection, only an endpoint URL and its signing secrets).
pub const WEBHOOK: &str = "webhook";
/// The most integrations a tenant may have.
pub const MAX_INTEGRATIONS: usize = 100;
/// The most triggers one integration may have.
pub const MAX_TRIGGERS: usize = 10;
/// The longest integration name.
pub const MAX_NAME: usize = 100;
/// The highest priority number (lower runs first).
pub const MAX_PRIORITY: u32 = 1000;
/// The most payload overrides of one integration.
pub const MAX_OVERRIDES: usize = 50;
/// The most attempts one step may make.
pub const MAX_ATTEMPTS: u32 = 10;

/// What may trigger an integration: the product's events and Conduit's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum TriggerEvent {
    /// A conversation ended.
    #[serde(rename = "conversation_ended")]
    ConversationEnded,
    /// A caller asked to be contacted.
    #[serde(rename = "contact_request")]
    ContactRequest,
    /// A conversation was handed to a human.
    #[serde(rename = "escalation")]
    Escalation,
    /// A conversation scored low.
    #[serde(rename = "low_score")]
    LowScore,
    /// A knowledge base should be imported.
    #[serde(rename = "kb_sync")]
    KbSync,
    /// A connection needs an admin to reconnect it.
    #[serde(rename = "connection.reauth_required")]
    ReauthRequired,
    /// A sync run completed.
    #[serde(rename = "sync.run.completed")]
    SyncRunCompleted,
    /// A sync run failed.
    #[serde(rename = "sync.run.failed")]
    SyncRunFailed,
    /// A sync found a conflict for review.
    #[serde(rename = "conflict.opened")]
    ConflictOpened,
}

impl TriggerEvent {
    /// Every trigger, in the API's order.
    pub const ALL: [TriggerEvent; 9] = [
        Self::ConversationEnded,
        Self::ContactRequest,
        Self::Escalation,
        Self::LowScore,
        Self::KbSync,
        Self::ReauthRequired,
        Self::SyncRunCompleted,
        Self::SyncRunFailed,
        Self::ConflictOpened,
    ];

    /// Its name in the API and in templates' `events`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConversationEnded => "conversation_ended",
            Self::ContactRequest => "contact_request",
            Self::Escalation => "escalation",
            Self::LowScore => "low_score",
            Self::KbSync => "kb_sync",
            Self::ReauthRequired => "connection.reauth_required",
            Self::SyncRunCompleted => "sync.run.completed",
            Self::SyncRunFailed => "sync.run.failed",
            Self::ConflictOpened => "conflict.opened",
        }
    }

    /// Reads a name given in the API.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// The product event type, for the product's events.
    pub fn product(self) -> Option<EventType> {
        Some(match self {
            Self::ConversationEnded => EventType::ConversationEnded,
            Self::ContactRequest => EventType::ContactRequest,
            Self::Escalation => EventType::Escalation,
            Self::LowScore => EventType::LowScore,
            Self::KbSync => EventType::KbSync,
            _ => return None,
        })
    }

    /// The trigger of a product event type.
    pub fn of_product(kind: EventType) -> Self {
        match kind {
            EventType::ConversationEnded => Self::ConversationEnded,
            EventType::ContactRequest => Self::ContactRequest,
            EventType::Escalation => Self::Escalation,
            EventType::LowScore => Self::LowScore,
            EventType::KbSync => Self::KbSync,
        }
    }
}

impl std::fmt::Display for TriggerEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Conditions a trigger's event must meet (all of them; an empty list means any).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    /// `low_score`: the score must be below this (0–100); required for `low_score`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score_below: Option<f64>,
    /// The conversation's channel is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<Channel>,
    /// The conversation's direction is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub directions: Vec<Direction>,
    /// The event's assistant is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assistants: Vec<String>,
    /// Each of these custom fields has exactly this value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_fields: BTreeMap<String, serde_json::Value>,
}

/// One event type that runs an integration, with its conditions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Trigger {
    /// The event type.
    pub event: TriggerEvent,
    /// What the event must meet.
    #[serde(default)]
    pub conditions: Conditions,
}

impl Trigger {
    /// Whether `event` runs this trigger.
    pub fn matches(&self, event: &DispatchEvent) -> bool {
        if event.trigger() != self.event {
            return false;
        }
        let c = &self.conditions;
        let conversation = event.conversation();
        if let Some(limit) = c.score_below {
            match conversation.and_then(|c| c.score) {
                Some(score) if score < limit => {}
                _ => return false,
            }
        }
        if !c.channels.is_empty()
            && !conversation.is_some_and(|conv| c.channels.contains(&conv.channel))
        {
            return false;
        }
        if !c.directions.is_empty()
            && !conversation
                .and_then(|conv| conv.direction)
                .is_some_and(|d| c.directions.contains(&d))
        {
            return false;
        }
        if !c.assistants.is_empty()
            && !event
                .assistant_id()
                .is_some_and(|a| c.assistants.iter().any(|x| x == a))
        {
            return false;
        }
        c.custom_fields
            .iter()
            .all(|(name, want)| event.custom_field(name) == Some(want))
    }
}

/// What a failed step does to the rest of its chain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnFailure {
    /// The later steps still run.
    #[default]
    Continue,
    /// The later steps are skipped.
    Stop,
}

/// How a step is retried on 429, 5xx and timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1–10).
    pub max_attempts: u32,
    /// The first wait, in seconds (1–3600); each later wait doubles, with jitter.
    pub initial_backoff_seconds: u32,
    /// The longest wait, in seconds (1–86400).
    pub max_backoff_seconds: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff_seconds: 2,
            max_backoff_seconds: 3600,
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `next` (2 = the first retry), without jitter.
    pub fn backoff(&self, next: u32) -> std::time::Duration {
        let exp = next.saturating_sub(2).min(20);
        let secs = u64::from(self.initial_backoff_seconds).saturating_mul(1 << exp);
        std::time::Duration::from_secs(secs.min(u64::from(self.max_backoff_seconds)))
    }
}

/// One signing secret of a webhook endpoint, sealed with the tenant's key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointSecret {
    /// Its id (shown, never the secret).
    pub id: String,
    /// The sealed `whsec_…` text.
    pub sealed: crate::crypto::Sealed,
    /// When it was made.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When it stops being used (set when a newer secret replaces it).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
}

/// How an integration imports a knowledge base.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KbSourceSettings {
    /// An incremental import this often (minutes, 15 to 10,080), through an
    /// EventBridge Scheduler schedule; none: only on demand and on `kb_sync` events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_minutes: Option<u32>,
    /// A Custom API integration's list request, paging and mapping (required for one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom: Option<crate::kb::custom::CustomSource>,
    /// Salesforce: the rich-text field of `Knowledge__kav` that holds the body (default
    /// `Answer__c`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_field: Option<String>,
}

/// A webhook destination's endpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WebhookEndpoint {
    /// Where deliveries go (public https).
    pub url: String,
    /// Its signing secrets: the newest first; an older one until it expires.
    pub secrets: Vec<EndpointSecret>,
    /// Since when every delivery has failed (reset by a success).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub failing_since: Option<OffsetDateTime>,
    /// When it was disabled for failing too long.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub disabled_at: Option<OffsetDateTime>,
}

/// Whose personal connection an integration acts with: a named user of the tenant,
/// or the owner of the assistant an event names (the event's `assistant_owner_id`).
/// Exactly one of the two.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActingUser {
    /// This user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<UserId>,
    /// The owner of the event's assistant.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub assistant_owner: bool,
}

impl ActingUser {
    /// The user it names for `event`, if the event says (None: the event names no
    /// assistant owner).
    pub fn user_for<'a>(&'a self, event: &'a DispatchEvent) -> Option<&'a UserId> {
        match &self.user_id {
            Some(u) => Some(u),
            None => event.assistant_owner(),
        }
    }
}

/// An outbound integration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Integration {
    /// Its id.
    pub id: IntegrationId,
    /// Its tenant.
    pub tenant: TenantId,
    /// A name for people.
    pub name: String,
    /// The provider (a catalogue id, or [`WEBHOOK`]).
    pub provider: String,
    /// The template action it runs.
    pub action: String,
    /// The connection it calls (every provider but the webhook, unless it acts as a
    /// user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<ConnectionId>,
    /// Whose personal connection it acts with, for an action that acts as a user
    /// (`gmail.send_summary`, `calendar.create_follow_up`) and names no connection:
    /// resolved when it runs, used only while its owner allows automations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acting_user: Option<ActingUser>,
    /// What runs it.
    pub triggers: Vec<Trigger>,
    /// Its place in a chain: lower runs first.
    pub priority: u32,
    /// Whether it runs at all (an assistant's settings may override it).
    pub enabled: bool,
    /// The action's settings (queue ids, authors…).
    #[serde(default)]
    pub settings: BTreeMap<String, serde_json::Value>,
    /// Payload overrides: body fields (top-level names) → templates.
    #[serde(default)]
    pub overrides: BTreeMap<String, serde_json::Value>,
    /// What a failure does to the chain.
    #[serde(default)]
    pub on_failure: OnFailure,
    /// How failures are retried.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// The Custom API action's request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<super::template::CustomRequest>,
    /// The webhook destination's endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookEndpoint>,
    /// How it imports a knowledge base (`POST /v1/integrations/{id}/import-kb`), for an
    /// integration of a knowledge-base source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kb_source: Option<KbSourceSettings>,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Who created it.
    pub created_by: UserId,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Its version (optimistic concurrency; `ETag`).
    pub version: u64,
}

impl Integration {
    /// Whether a trigger of this integration matches `event`.
    pub fn triggered_by(&self, event: &DispatchEvent) -> bool {
        self.triggers.iter().any(|t| t.matches(event))
    }
}

/// One assistant's setting for one integration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssistantOverride {
    /// On or off for this assistant (absent: the integration's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Its priority for this assistant (absent: the integration's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u32>,
    /// Payload overrides for this assistant, over the integration's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub overrides: BTreeMap<String, serde_json::Value>,
}

/// An assistant's integration settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssistantSettings {
    /// The tenant.
    pub tenant: TenantId,
    /// The assistant.
    pub assistant_id: String,
    /// Per integration.
    pub integrations: BTreeMap<IntegrationId, AssistantOverride>,
    /// When they last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Version.
    pub version: u64,
}

/// One step of a resolved chain.
#[derive(Debug, Clone, PartialEq)]
pub struct ChainStep<'a> {
    /// The integration.
    pub integration: &'a Integration,
    /// Its priority for this event.
    pub priority: u32,
    /// Its payload overrides for this event (the assistant's over the integration's).
    pub overrides: BTreeMap<String, serde_json::Value>,
}

/// The chain `event` runs: the tenant's integrations it triggers, enabled for its
/// assistant (the assistant's settings, or the tenant's defaults without them), by
/// priority, then by creation (ids are time-ordered). Integrations of another tenant
/// never run, whatever is passed in.
pub fn resolve_chain<'a>(
    integrations: &'a [Integration],
    assistant: Option<&AssistantSettings>,
    event: &DispatchEvent,
) -> Vec<ChainStep<'a>> {
    let tenant = event.tenant();
    let assistant = assistant
        .filter(|a| a.tenant == *tenant && Some(a.assistant_id.as_str()) == event.assistant_id());
    let mut steps: Vec<ChainStep<'a>> = integrations
        .iter()
        .filter(|i| i.tenant == *tenant)
        .filter_map(|i| {
            let o = assistant.and_then(|a| a.integrations.get(&i.id));
            let enabled = o.and_then(|o| o.enabled).unwrap_or(i.enabled);
            if !enabled || i.webhook.as_ref().is_some_and(|w| w.disabled_at.is_some()) {
                return None;
            }
            if !i.triggered_by(event) {
                return None;
            }
            let mut overrides = i.overrides.clone();
            if let Some(o) = o {
                overrides.extend(o.overrides.clone());
            }
            Some(ChainStep {
                integration: i,
                priority: o.and_then(|o| o.priority).unwrap_or(i.priority),
                overrides,
            })
        })
        .collect();
    steps.sort_by(|a, b| (a.priority, &a.integration.id).cmp(&(b.priority, &b.integration.id)));
    steps
}

/// One problem of an integration's input, by field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The field's path (`triggers[0].conditions.score_below`).
    pub field: String,
    /// What is wrong (never the value).
    pub message: String,
}

/// The checks of an integration that need no template or store: name, triggers,
/// priority, retry policy and override count. The template's own checks (action,
/// events it suits, settings, override templates) come from [`super::template`].
pub fn check_shape(i: &Integration) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut add = |field: &str, message: &str| {
        out.push(Problem {
            field: field.to_owned(),
            message: message.to_owned(),
        })
    };
    let name = i.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        add("name", "1 to 100 characters, no control characters");
    }
    if i.triggers.is_empty() || i.triggers.len() > MAX_TRIGGERS {
        add("triggers", "1 to 10 triggers");
    }
    for (n, t) in i.triggers.iter().enumerate() {
        let c = &t.conditions;
        match (t.event, c.score_below) {
            (TriggerEvent::LowScore, None) => add(
                &format!("triggers[{n}].conditions.score_below"),
                "required for low_score: the threshold below which a score triggers",
            ),
            (_, Some(s)) if !(0.0..=100.0).contains(&s) || s.is_nan() => add(
                &format!("triggers[{n}].conditions.score_below"),
                "from 0 to 100",
            ),
            _ => {}
        }
        let conversational = t.event.product().is_some_and(|k| k != EventType::KbSync);
        if !conversational
            && (c.score_below.is_some() || !c.channels.is_empty() || !c.directions.is_empty())
        {
            add(
                &format!("triggers[{n}].conditions"),
                "score, channel and direction conditions need a conversation event",
            );
        }
        if c.assistants.len() > 100 || c.custom_fields.len() > 20 {
            add(
                &format!("triggers[{n}].conditions"),
                "at most 100 assistants and 20 custom fields",
            );
        }
        if c.custom_fields
            .values()
            .any(|v| v.is_object() || v.is_array())
        {
            add(
                &format!("triggers[{n}].conditions.custom_fields"),
                "values are strings, numbers, booleans or null",
            );
        }
        if i.triggers[..n]
            .iter()
            .any(|e| e.event == t.event && e.conditions == t.conditions)
        {
            add(&format!("triggers[{n}]"), "the same trigger twice");
        }
    }
    if i.priority > MAX_PRIORITY {
        add("priority", "from 0 to 1000 (lower runs first)");
    }
    let r = &i.retry;
    if !(1..=MAX_ATTEMPTS).contains(&r.max_attempts) {
        add("retry.max_attempts", "from 1 to 10");
    }
    if !(1..=3600).contains(&r.initial_backoff_seconds) {
        add("retry.initial_backoff_seconds", "from 1 to 3600");
    }
    if !(1..=86_400).contains(&r.max_backoff_seconds)
        || r.max_backoff_seconds < r.initial_backoff_seconds
    {
        add(
            "retry.max_backoff_seconds",
            "from 1 to 86400, and at least initial_backoff_seconds",
        );
    }
    if i.overrides.len() > MAX_OVERRIDES {
        add("overrides", "at most 50 overrides");
    }
    match (i.provider == WEBHOOK, &i.connection_id, &i.acting_user) {
        (true, Some(_), _) => add(
            "connection_id",
            "a webhook has an endpoint URL, not a connection",
        ),
        (true, None, Some(_)) => add("acting_user", "a webhook acts as no user"),
        (false, None, None) => add(
            "connection_id",
            "required for this provider (or acting_user, for an action that acts as a user)",
        ),
        (false, Some(_), Some(_)) => add(
            "acting_user",
            "either a connection or a user to act as, not both",
        ),
        _ => {}
    }
    if let Some(a) = &i.acting_user
        && a.user_id.is_some() == a.assistant_owner
    {
        add(
            "acting_user",
            "exactly one of user_id or assistant_owner: true",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(kind: &str, score: Option<f64>, assistant: Option<&str>) -> DispatchEvent {
        let mut detail = json!({
            "schema_version": 1, "type": kind, "event_id": "evt_1", "tenant_id": "acme",
            "occurred_at": "2026-12-05T10:00:00Z",
            "conversation": {"id": "c1", "channel": "voice", "direction": "inbound"},
            "custom_fields": {"plan": "gold"}
        });
        if let Some(s) = score {
            detail["conversation"]["score"] = json!(s);
        }
        if let Some(a) = assistant {
            detail["assistant_id"] = json!(a);
        }
        DispatchEvent::from_envelope(&json!({
            "id": "eb-1", "source": "conduit.product", "detail-type": kind,
            "time": "2026-12-05T10:00:01Z", "detail": detail
        }))
        .unwrap()
    }

    fn integration(tenant: &str, priority: u32, triggers: Vec<Trigger>) -> Integration {
        let at = OffsetDateTime::UNIX_EPOCH;
        Integration {
            id: IntegrationId::generate(),
            tenant: TenantId::parse(tenant).unwrap(),
            name: "x".into(),
            provider: "hubspot".into(),
            action: "log_call".into(),
            connection_id: Some(ConnectionId::generate()),
            acting_user: None,
            triggers,
            priority,
            enabled: true,
            settings: BTreeMap::new(),
            overrides: BTreeMap::new(),
            on_failure: OnFailure::Continue,
            retry: RetryPolicy::default(),
            request: None,
            webhook: None,
            kb_source: None,
            created_at: at,
            created_by: UserId::parse("u").unwrap(),
            updated_at: at,
            version: 1,
        }
    }

    fn on(event: TriggerEvent) -> Trigger {
        Trigger {
            event,
            conditions: Conditions::default(),
        }
    }

    #[test]
    fn a_chain_is_the_matching_integrations_by_priority_of_the_events_tenant_only() {
        let ended = on(TriggerEvent::ConversationEnded);
        let all = vec![
            integration("acme", 30, vec![ended.clone()]),
            integration("acme", 10, vec![ended.clone()]),
            integration("other", 5, vec![ended.clone()]),
            integration("acme", 20, vec![on(TriggerEvent::Escalation)]),
            integration("acme", 20, vec![ended.clone()]),
        ];
        let e = event("conversation_ended", None, None);
        let chain: Vec<u32> = resolve_chain(&all, None, &e)
            .iter()
            .map(|s| s.priority)
            .collect();
        assert_eq!(chain, [10, 20, 30]);
        assert!(
            resolve_chain(&all, None, &e)
                .iter()
                .all(|s| s.integration.tenant.as_str() == "acme")
        );
    }

    #[test]
    fn low_score_runs_below_its_threshold_only() {
        let mut t = on(TriggerEvent::LowScore);
        t.conditions.score_below = Some(50.0);
        let all = vec![integration("acme", 1, vec![t])];
        assert_eq!(
            resolve_chain(&all, None, &event("low_score", Some(49.5), None)).len(),
            1
        );
        assert!(resolve_chain(&all, None, &event("low_score", Some(50.0), None)).is_empty());
        assert!(
            check_shape(&integration("acme", 1, vec![on(TriggerEvent::LowScore)]))
                .iter()
                .any(|p| p.field == "triggers[0].conditions.score_below")
        );
    }

    #[test]
    fn an_assistant_switches_reorders_and_overrides_and_others_use_the_defaults() {
        let ended = on(TriggerEvent::ConversationEnded);
        let mut all = vec![
            integration("acme", 10, vec![ended.clone()]),
            integration("acme", 20, vec![ended.clone()]),
            integration("acme", 30, vec![ended.clone()]),
        ];
        all[2].enabled = false;
        all[0].overrides.insert("subject".into(), json!("default"));
        let mut per = BTreeMap::new();
        per.insert(
            all[0].id.clone(),
            AssistantOverride {
                priority: Some(40),
                overrides: BTreeMap::from([("subject".into(), json!("mine"))]),
                ..Default::default()
            },
        );
        per.insert(
            all[1].id.clone(),
            AssistantOverride {
                enabled: Some(false),
                ..Default::default()
            },
        );
        per.insert(
            all[2].id.clone(),
            AssistantOverride {
                enabled: Some(true),
                ..Default::default()
            },
        );
        let settings = AssistantSettings {
            tenant: TenantId::parse("acme").unwrap(),
            assistant_id: "asst_1".into(),
            integrations: per,
            updated_at: OffsetDateTime::UNIX_EPOCH,
            version: 1,
        };
        let mine = event("conversation_ended", None, Some("asst_1"));
        let chain = resolve_chain(&all, Some(&settings), &mine);
        assert_eq!(
            chain.iter().map(|s| s.priority).collect::<Vec<_>>(),
            [30, 40]
        );
        assert_eq!(chain[1].overrides["subject"], "mine");
        // Another assistant (and an event without one) gets the tenant's defaults.
        for e in [
            event("conversation_ended", None, Some("asst_2")),
            event("conversation_ended", None, None),
        ] {
            let chain = resolve_chain(&all, Some(&settings), &e);
            assert_eq!(
                chain.iter().map(|s| s.priority).collect::<Vec<_>>(),
                [10, 20]
            );
            assert_eq!(chain[0].overrides["subject"], "default");
        }
    }

    #[test]
    fn filters_on_channel_assistant_and_custom_fields() {
        let mut t = on(TriggerEvent::ConversationEnded);
        t.conditions.channels = vec![Channel::Chat];
        assert!(!t.matches(&event("conversation_ended", None, None)));
        t.conditions.channels = vec![Channel::Voice, Channel::Chat];
        t.conditions.assistants = vec!["asst_1".into()];
        assert!(!t.matches(&event("conversation_ended", None, None)));
        assert!(t.matches(&event("conversation_ended", None, Some("asst_1"))));
        t.conditions
            .custom_fields
            .insert("plan".into(), json!("silver"));
        assert!(!t.matches(&event("conversation_ended", None, Some("asst_1"))));
        t.conditions
            .custom_fields
            .insert("plan".into(), json!("gold"));
        assert!(t.matches(&event("conversation_ended", None, Some("asst_1"))));
    }

    #[test]
    fn backoff_doubles_to_its_ceiling() {
        let r = RetryPolicy {
            max_attempts: 10,
            initial_backoff_seconds: 5,
            max_backoff_seconds: 60,
        };
        let waits: Vec<u64> = (2..=7).map(|n| r.backoff(n).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 60, 60]);
    }
}

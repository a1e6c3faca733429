//! Product events in (schema version 1): what the product's services put on Conduit's
//! bus when a conversation ends, a caller asks to be contacted, a conversation is
//! escalated or scores low, or a knowledge base should be synced. The detail of the
//! EventBridge event is this JSON; anything else is refused with every problem named by
//! its JSON path (the dispatcher sends it to the dead-letter queue with that reason).
//!
//! ```json
//! {"schema_version": 1, "type": "conversation_ended", "event_id": "evt_01…",
//!  "tenant_id": "acme", "assistant_id": "asst_7", "assistant_owner_id": "user_42",
//!  "occurred_at": "2026-12-05T10:00:00Z",
//!  "conversation": {"id": "conv_9", "channel": "voice", "direction": "inbound",
//!    "started_at": "…", "ended_at": "…", "duration_seconds": 312,
//!    "from_number": "+61255550100", "to_number": "+61255550199",
//!    "transcript_url": "https://…", "summary": "…", "sentiment": "positive", "score": 82},
//!  "contact": {"name": "Ada", "email": "ada@example.com", "phone": "+61…",
//!    "crm_ids": {"hubspot": "901"}},
//!  "custom_fields": {"plan": "gold"}}
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::domain::{TenantId, UserId};

/// The schema version this build reads.
pub const SCHEMA_VERSION: u32 = 1;
/// The longest summary kept (a transcript travels by URL, not inline).
pub const MAX_SUMMARY: usize = 20_000;
/// What an id must look like.
const ID_RULE: &str = "1–128 characters of letters, digits and - _ : .";
/// Custom fields an event may carry.
pub const MAX_CUSTOM_FIELDS: usize = 50;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// A conversation ended.
    ConversationEnded,
    /// A caller asked to be contacted.
    ContactRequest,
    /// A conversation was handed to a human.
    Escalation,
    /// A conversation scored low (its score is in the conversation).
    LowScore,
    /// A knowledge base should be imported.
    KbSync,
}

/// The channel a conversation took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// A phone call.
    Voice,
    /// Web or app chat.
    Chat,
    /// Text messages.
    Sms,
    /// Email.
    Email,
    /// A messaging app (WhatsApp, Messenger…).
    Messaging,
}

/// Who started the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// The customer reached the assistant.
    Inbound,
    /// The assistant reached the customer.
    Outbound,
}

/// The overall sentiment an analysis gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sentiment {
    /// Positive.
    Positive,
    /// Neutral.
    Neutral,
    /// Negative.
    Negative,
    /// Mixed.
    Mixed,
}

/// The conversation an event is about.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conversation {
    /// The product's conversation id.
    pub id: String,
    /// Its channel.
    pub channel: Channel,
    /// Who started it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// When it started.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub started_at: Option<OffsetDateTime>,
    /// When it ended.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub ended_at: Option<OffsetDateTime>,
    /// How long it lasted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<u32>,
    /// The caller's number (E.164).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_number: Option<String>,
    /// The number called (E.164).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_number: Option<String>,
    /// Where the transcript is (https).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript_url: Option<String>,
    /// The summary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// The sentiment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sentiment: Option<Sentiment>,
    /// The quality score, 0–100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
}

/// The person the conversation was with.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    /// Their name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Their email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Their phone (E.164).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Their ids in the tenant's CRMs, by provider id.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub crm_ids: BTreeMap<String, String>,
}

/// One product event (schema version 1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductEvent {
    /// Always [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// The producer's id of this event (deliveries of one event share it).
    pub event_id: String,
    /// The tenant.
    pub tenant_id: TenantId,
    /// The assistant that handled it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assistant_id: Option<String>,
    /// The user who owns that assistant (a user id of the tenant): the steps that act
    /// as the assistant's owner (`gmail.send_summary` with `acting_user.assistant_owner`)
    /// use this user's personal connection, if they allow automations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assistant_owner_id: Option<UserId>,
    /// When it happened.
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: OffsetDateTime,
    /// The conversation (every type but `kb_sync`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<Conversation>,
    /// The contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contact: Option<Contact>,
    /// The tenant's own fields (scalars only).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom_fields: BTreeMap<String, serde_json::Value>,
}

/// One problem of an event: where (a JSON path like `conversation.score`) and what.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The path of the field (`event` for the whole).
    pub field: String,
    /// What is wrong (never the value itself).
    pub message: String,
}

/// An event that cannot be dispatched, with every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid event: {}", .0.iter().map(|p| format!("{}: {}", p.field, p.message)).collect::<Vec<_>>().join("; "))]
pub struct InvalidEvent(pub Vec<Problem>);

fn problem(field: &str, message: impl Into<String>) -> Problem {
    Problem {
        field: field.to_owned(),
        message: message.into(),
    }
}

impl ProductEvent {
    /// Reads an event from its JSON detail: the shape first (unknown fields refused),
    /// then the rules the shape cannot say.
    pub fn parse(detail: &serde_json::Value) -> Result<Self, InvalidEvent> {
        let event: ProductEvent = serde_path_to_error::deserialize(detail).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." {
                "event".to_owned()
            } else {
                path
            };
            let message = crate::http::sanitize_serde_message(&e.into_inner().to_string());
            InvalidEvent(vec![problem(&field, message)])
        })?;
        let problems = event.problems();
        if problems.is_empty() {
            Ok(event)
        } else {
            Err(InvalidEvent(problems))
        }
    }

    fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        if self.schema_version != SCHEMA_VERSION {
            out.push(problem(
                "schema_version",
                format!("this dispatcher reads schema version {SCHEMA_VERSION}"),
            ));
        }
        if !token(&self.event_id, 128) {
            out.push(problem("event_id", ID_RULE));
        }
        if let Some(a) = &self.assistant_id
            && !token(a, 128)
        {
            out.push(problem("assistant_id", ID_RULE));
        }
        match (&self.conversation, self.kind) {
            (None, EventType::KbSync) => {}
            (None, _) => out.push(problem(
                "conversation",
                "required for every event type but kb_sync",
            )),
            (Some(c), kind) => conversation_problems(c, kind, &mut out),
        }
        if let Some(c) = &self.contact {
            if let Some(e) = &c.email
                && !(e.len() <= 254
                    && e.split_once('@')
                        .is_some_and(|(l, d)| !l.is_empty() && d.contains('.')))
            {
                out.push(problem("contact.email", "not an email address"));
            }
            if let Some(p) = &c.phone
                && !e164(p)
            {
                out.push(problem(
                    "contact.phone",
                    "not an E.164 number (+ and 8–15 digits)",
                ));
            }
            for (provider, id) in &c.crm_ids {
                if !token(provider, 64) || id.is_empty() || id.len() > 256 {
                    out.push(problem(
                        &format!(
                            "contact.crm_ids.{}",
                            provider.chars().take(64).collect::<String>()
                        ),
                        "a provider id and a CRM id of 1–256 characters",
                    ));
                }
            }
        }
        if self.custom_fields.len() > MAX_CUSTOM_FIELDS {
            out.push(problem(
                "custom_fields",
                format!("at most {MAX_CUSTOM_FIELDS} fields"),
            ));
        }
        for (name, value) in &self.custom_fields {
            if value.is_object() || value.is_array() {
                out.push(problem(
                    &format!(
                        "custom_fields.{}",
                        name.chars().take(64).collect::<String>()
                    ),
                    "a string, number, boolean or null",
                ));
            }
        }
        out
    }
}

fn conversation_problems(c: &Conversation, kind: EventType, out: &mut Vec<Problem>) {
    if !token(&c.id, 128) {
        out.push(problem("conversation.id", ID_RULE));
    }
    for (field, number) in [
        ("conversation.from_number", &c.from_number),
        ("conversation.to_number", &c.to_number),
    ] {
        if let Some(n) = number
            && !e164(n)
        {
            out.push(problem(field, "not an E.164 number (+ and 8–15 digits)"));
        }
    }
    if let Some(u) = &c.transcript_url
        && !url::Url::parse(u).is_ok_and(|u| u.scheme() == "https" && u.host().is_some())
    {
        out.push(problem("conversation.transcript_url", "an https URL"));
    }
    if c.summary
        .as_ref()
        .is_some_and(|s| s.chars().count() > MAX_SUMMARY)
    {
        out.push(problem(
            "conversation.summary",
            format!("at most {MAX_SUMMARY} characters"),
        ));
    }
    if let (Some(start), Some(end)) = (c.started_at, c.ended_at)
        && end < start
    {
        out.push(problem("conversation.ended_at", "before started_at"));
    }
    match c.score {
        Some(s) if !(0.0..=100.0).contains(&s) => {
            out.push(problem("conversation.score", "from 0 to 100"));
        }
        None if kind == EventType::LowScore => {
            out.push(problem("conversation.score", "required for low_score"));
        }
        _ => {}
    }
}

/// 1–`max` characters of `[A-Za-z0-9-_:.]`.
fn token(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'))
}

/// `+` and 8–15 digits.
fn e164(s: &str) -> bool {
    s.strip_prefix('+')
        .is_some_and(|d| (8..=15).contains(&d.len()) && d.chars().all(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ended() -> serde_json::Value {
        json!({
            "schema_version": 1, "type": "conversation_ended", "event_id": "evt_01",
            "tenant_id": "acme", "assistant_id": "asst_7", "occurred_at": "2026-12-05T10:00:00Z",
            "conversation": {"id": "conv_9", "channel": "voice", "direction": "inbound",
                "started_at": "2026-12-05T09:55:00Z", "ended_at": "2026-12-05T10:00:00Z",
                "duration_seconds": 300, "from_number": "+61255550100", "to_number": "+61255550199",
                "transcript_url": "https://files.example.com/t/conv_9", "summary": "Wants a callback.",
                "sentiment": "positive", "score": 82},
            "contact": {"name": "Ada", "email": "ada@example.com", "phone": "+61255550100",
                "crm_ids": {"hubspot": "901"}},
            "custom_fields": {"plan": "gold", "seats": 12}
        })
    }

    #[test]
    fn a_documented_event_reads_and_round_trips() {
        let event = ProductEvent::parse(&ended()).unwrap();
        assert_eq!(event.kind, EventType::ConversationEnded);
        assert_eq!(event.conversation.as_ref().unwrap().score, Some(82.0));
        let again = ProductEvent::parse(&serde_json::to_value(&event).unwrap()).unwrap();
        assert_eq!(again, event);
        let kb = json!({"schema_version": 1, "type": "kb_sync", "event_id": "e", "tenant_id": "acme",
            "occurred_at": "2026-12-05T10:00:00Z"});
        assert_eq!(ProductEvent::parse(&kb).unwrap().kind, EventType::KbSync);
    }

    #[test]
    fn every_problem_is_named_by_its_path_without_its_value() {
        let mut bad = ended();
        bad["conversation"]["score"] = json!(140);
        bad["conversation"]["from_number"] = json!("0255550100");
        bad["conversation"]["transcript_url"] = json!("http://files.example.com/t");
        bad["contact"]["email"] = json!("ada");
        bad["custom_fields"]["nested"] = json!({"a": 1});
        let InvalidEvent(problems) = ProductEvent::parse(&bad).unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "conversation.from_number",
                "conversation.transcript_url",
                "conversation.score",
                "contact.email",
                "custom_fields.nested"
            ]
        );
        // The shape: an unknown field, a wrong type, a missing field, an unknown type.
        for (patch, field) in [
            (json!({"secret_token": "hunter2"}), "event"),
            (json!({"event_id": 7}), "event_id"),
            (json!({"type": "meeting_booked"}), "type"),
            (json!({"occurred_at": "yesterday"}), "occurred_at"),
            (json!({"tenant_id": "a|b"}), "tenant_id"),
        ] {
            let mut bad = ended();
            for (k, v) in patch.as_object().unwrap() {
                bad[k] = v.clone();
            }
            let err = ProductEvent::parse(&bad).unwrap_err();
            assert_eq!(err.0.len(), 1, "{err}");
            assert!(
                err.0[0].field.starts_with(field) || field == "event",
                "{err}"
            );
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
        let mut missing = ended();
        missing.as_object_mut().unwrap().remove("tenant_id");
        assert!(
            ProductEvent::parse(&missing)
                .unwrap_err()
                .to_string()
                .contains("tenant_id")
        );
    }

    #[test]
    fn type_rules_low_score_needs_a_score_and_conversations_are_required() {
        let mut low = ended();
        low["type"] = json!("low_score");
        low["conversation"].as_object_mut().unwrap().remove("score");
        let err = ProductEvent::parse(&low).unwrap_err();
        assert_eq!(
            err.0,
            vec![problem("conversation.score", "required for low_score")]
        );
        let mut bare = ended();
        bare.as_object_mut().unwrap().remove("conversation");
        assert_eq!(
            ProductEvent::parse(&bare).unwrap_err().0[0].field,
            "conversation"
        );
        let mut v2 = ended();
        v2["schema_version"] = json!(2);
        assert_eq!(
            ProductEvent::parse(&v2).unwrap_err().0[0].field,
            "schema_version"
        );
    }
}

//! What the dispatch queue carries: EventBridge events as the bus's rules deliver them
//! (the whole envelope — `id`, `source`, `detail-type`, `time`, `detail`), either a
//! product event (source [`PRODUCT_SOURCE`], detail per [`super::event`]) or one of
//! Conduit's own (source [`crate::events::SOURCE`]). Anything else is refused with every
//! problem by path, so the dispatcher can send it to the dead-letter queue with its
//! reason.

use serde_json::{Value, json};
use time::OffsetDateTime;

use super::event::{Conversation, InvalidEvent, Problem, ProductEvent};
use super::integration::TriggerEvent;
use crate::domain::TenantId;

/// The `source` product services put their events with.
pub const PRODUCT_SOURCE: &str = "conduit.product";

/// Conduit's own events that are dispatchable, by detail-type.
pub const CONDUIT_TYPES: [(&str, TriggerEvent); 4] = [
    (crate::events::REAUTH_REQUIRED, TriggerEvent::ReauthRequired),
    (
        crate::events::SYNC_RUN_COMPLETED,
        TriggerEvent::SyncRunCompleted,
    ),
    (crate::events::SYNC_RUN_FAILED, TriggerEvent::SyncRunFailed),
    (crate::events::CONFLICT_OPENED, TriggerEvent::ConflictOpened),
];

/// The largest detail read (EventBridge's own entry limit is 256 KB).
pub const MAX_DETAIL_BYTES: usize = 256 * 1024;

/// An event to dispatch.
#[derive(Debug, Clone, PartialEq)]
pub enum DispatchEvent {
    /// From the product.
    Product {
        /// EventBridge's id of this put.
        envelope_id: String,
        /// The event.
        event: Box<ProductEvent>,
    },
    /// Conduit's own.
    Conduit {
        /// EventBridge's id (the event's id: Conduit puts each event once).
        envelope_id: String,
        /// What happened.
        kind: TriggerEvent,
        /// Whose.
        tenant: TenantId,
        /// When.
        occurred_at: OffsetDateTime,
        /// The ids and codes it carries.
        detail: Value,
    },
}

fn problem(field: &str, message: &str) -> Problem {
    Problem {
        field: field.to_owned(),
        message: message.to_owned(),
    }
}

fn refuse(field: &str, message: &str) -> InvalidEvent {
    InvalidEvent(vec![problem(field, message)])
}

impl DispatchEvent {
    /// Reads one EventBridge event (the JSON a rule delivers to the queue).
    pub fn from_envelope(envelope: &Value) -> Result<Self, InvalidEvent> {
        let obj = envelope
            .as_object()
            .ok_or_else(|| refuse("event", "an EventBridge event (a JSON object)"))?;
        let text = |name: &str| obj.get(name).and_then(Value::as_str);
        let envelope_id = text("id")
            .filter(|id| !id.is_empty() && id.len() <= 128)
            .ok_or_else(|| refuse("id", "EventBridge's event id is missing"))?
            .to_owned();
        let source = text("source").ok_or_else(|| refuse("source", "missing"))?;
        let detail_type = text("detail-type").ok_or_else(|| refuse("detail-type", "missing"))?;
        let detail = obj
            .get("detail")
            .filter(|d| d.is_object())
            .ok_or_else(|| refuse("detail", "a JSON object"))?;
        if serde_json::to_string(detail).map_or(usize::MAX, |s| s.len()) > MAX_DETAIL_BYTES {
            return Err(refuse("detail", "larger than 256 KB"));
        }
        if source == PRODUCT_SOURCE {
            let event = ProductEvent::parse(detail)?;
            let kind = serde_json::to_value(event.kind).ok();
            if kind.as_ref().and_then(Value::as_str) != Some(detail_type) {
                return Err(refuse("detail-type", "differs from the detail's type"));
            }
            return Ok(Self::Product {
                envelope_id,
                event: Box::new(event),
            });
        }
        if source != crate::events::SOURCE {
            return Err(refuse("source", "not a source the dispatcher reads"));
        }
        let kind = CONDUIT_TYPES
            .iter()
            .find(|(t, _)| *t == detail_type)
            .map(|(_, k)| *k)
            .ok_or_else(|| refuse("detail-type", "not a dispatchable Conduit event"))?;
        let tenant = detail
            .get("tenant_id")
            .and_then(Value::as_str)
            .ok_or_else(|| refuse("detail.tenant_id", "missing"))
            .and_then(|t| {
                TenantId::parse(t).map_err(|_| refuse("detail.tenant_id", "not a tenant id"))
            })?;
        let occurred_at = text("time")
            .and_then(|t| {
                OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
            })
            .ok_or_else(|| refuse("time", "an RFC 3339 time"))?;
        Ok(Self::Conduit {
            envelope_id,
            kind,
            tenant,
            occurred_at,
            detail: detail.clone(),
        })
    }

    /// The trigger it is.
    pub fn trigger(&self) -> TriggerEvent {
        match self {
            Self::Product { event, .. } => TriggerEvent::of_product(event.kind),
            Self::Conduit { kind, .. } => *kind,
        }
    }

    /// Its tenant.
    pub fn tenant(&self) -> &TenantId {
        match self {
            Self::Product { event, .. } => &event.tenant_id,
            Self::Conduit { tenant, .. } => tenant,
        }
    }

    /// The id deliveries of this event share: the producer's `event_id`, or
    /// EventBridge's id for Conduit's own events.
    pub fn event_id(&self) -> &str {
        match self {
            Self::Product { event, .. } => &event.event_id,
            Self::Conduit { envelope_id, .. } => envelope_id,
        }
    }

    /// When it happened.
    pub fn occurred_at(&self) -> OffsetDateTime {
        match self {
            Self::Product { event, .. } => event.occurred_at,
            Self::Conduit { occurred_at, .. } => *occurred_at,
        }
    }

    /// Its assistant, if a product event names one.
    pub fn assistant_id(&self) -> Option<&str> {
        match self {
            Self::Product { event, .. } => event.assistant_id.as_deref(),
            Self::Conduit { .. } => None,
        }
    }

    /// The owner of its assistant, if a product event names one.
    pub fn assistant_owner(&self) -> Option<&crate::domain::UserId> {
        match self {
            Self::Product { event, .. } => event.assistant_owner_id.as_ref(),
            Self::Conduit { .. } => None,
        }
    }

    /// Its conversation, if it has one.
    pub fn conversation(&self) -> Option<&Conversation> {
        match self {
            Self::Product { event, .. } => event.conversation.as_ref(),
            Self::Conduit { .. } => None,
        }
    }

    /// A custom field of a product event.
    pub fn custom_field(&self, name: &str) -> Option<&Value> {
        match self {
            Self::Product { event, .. } => event.custom_fields.get(name),
            Self::Conduit { .. } => None,
        }
    }

    /// What templates see of the event: the event's own JSON (a product event's fields,
    /// or `detail` for Conduit's) with `type`, `event_id`, `tenant_id` and `occurred_at`
    /// always present.
    pub fn context(&self) -> Value {
        let at = self
            .occurred_at()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        match self {
            Self::Product { event, .. } => {
                let mut v = serde_json::to_value(event).unwrap_or_else(|_| json!({}));
                // An absent field is absent to templates (`default()` fills it), never null.
                drop_nulls(&mut v);
                if let Some(o) = v.as_object_mut() {
                    o.entry("custom_fields").or_insert_with(|| json!({}));
                    o.entry("contact").or_insert_with(|| json!({}));
                    o.insert("occurred_at".into(), json!(at));
                }
                v
            }
            Self::Conduit {
                kind,
                tenant,
                detail,
                envelope_id,
                ..
            } => json!({
                "type": kind.as_str(),
                "event_id": envelope_id,
                "tenant_id": tenant.as_str(),
                "occurred_at": at,
                "detail": detail,
            }),
        }
    }

    /// The JSON stored with a dispatch, from which [`DispatchEvent::from_envelope`]
    /// reads it again (a retry or resumed step renders from it).
    pub fn to_envelope(&self) -> Value {
        let at = self
            .occurred_at()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        match self {
            Self::Product { envelope_id, event } => json!({
                "id": envelope_id,
                "source": PRODUCT_SOURCE,
                "detail-type": self.trigger().as_str(),
                "time": at,
                "detail": serde_json::to_value(event).unwrap_or_else(|_| json!({})),
            }),
            Self::Conduit {
                envelope_id,
                kind,
                detail,
                ..
            } => json!({
                "id": envelope_id,
                "source": crate::events::SOURCE,
                "detail-type": CONDUIT_TYPES.iter().find(|(_, k)| k == kind).map_or("", |(t, _)| *t),
                "time": at,
                "detail": detail,
            }),
        }
    }
}

/// Removes null members of objects, at every depth.
fn drop_nulls(v: &mut Value) {
    match v {
        Value::Object(o) => {
            o.retain(|_, x| !x.is_null());
            o.values_mut().for_each(drop_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(drop_nulls),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended() -> Value {
        json!({
            "version": "0", "id": "eb-1", "source": "conduit.product",
            "detail-type": "conversation_ended", "time": "2026-12-05T10:00:01Z",
            "account": "123456789012", "region": "ap-southeast-2", "resources": [],
            "detail": {"schema_version": 1, "type": "conversation_ended", "event_id": "evt_1",
                "tenant_id": "acme", "occurred_at": "2026-12-05T10:00:00Z",
                "conversation": {"id": "c1", "channel": "voice"}}
        })
    }

    #[test]
    fn product_and_conduit_events_read_and_round_trip() {
        let e = DispatchEvent::from_envelope(&ended()).unwrap();
        assert_eq!(e.trigger(), TriggerEvent::ConversationEnded);
        assert_eq!(e.event_id(), "evt_1");
        assert_eq!(DispatchEvent::from_envelope(&e.to_envelope()).unwrap(), e);
        let ctx = e.context();
        assert_eq!(ctx["conversation"]["channel"], "voice");
        assert_eq!(ctx["custom_fields"], json!({}));
        // Absent times are absent, not null (templates' `default()` fills them).
        assert!(ctx["conversation"].get("started_at").is_none(), "{ctx}");

        let reauth = json!({"id": "eb-2", "source": "conduit.integrations",
            "detail-type": "integration.connection.reauth_required", "time": "2026-12-05T10:00:01Z",
            "detail": {"tenant_id": "acme", "connection_id": "con_x", "provider": "hubspot", "reason": "invalid_grant"}});
        let e = DispatchEvent::from_envelope(&reauth).unwrap();
        assert_eq!(e.trigger(), TriggerEvent::ReauthRequired);
        assert_eq!(e.context()["detail"]["provider"], "hubspot");
        assert_eq!(DispatchEvent::from_envelope(&e.to_envelope()).unwrap(), e);
    }

    #[test]
    fn what_is_not_a_dispatchable_event_is_refused_by_path() {
        for (patch, field) in [
            (json!({"source": "aws.s3"}), "source"),
            (json!({"detail-type": "escalation"}), "detail-type"),
            (json!({"detail": "text"}), "detail"),
            (json!({"id": ""}), "id"),
        ] {
            let mut bad = ended();
            for (k, v) in patch.as_object().unwrap() {
                bad[k] = v.clone();
            }
            let err = DispatchEvent::from_envelope(&bad).unwrap_err();
            assert_eq!(err.0[0].field, field, "{err}");
        }
        let mut bad = ended();
        bad["detail"]["conversation"]["score"] = json!(400);
        assert_eq!(
            DispatchEvent::from_envelope(&bad).unwrap_err().0[0].field,
            "conversation.score"
        );
        assert!(DispatchEvent::from_envelope(&json!([1])).is_err());
        let unknown = json!({"id": "eb-3", "source": "conduit.integrations",
            "detail-type": "integration.connection.scopes_missing", "time": "2026-12-05T10:00:01Z",
            "detail": {"tenant_id": "acme"}});
        assert_eq!(
            DispatchEvent::from_envelope(&unknown).unwrap_err().0[0].field,
            "detail-type"
        );
    }
}

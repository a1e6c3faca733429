//! Pipedrive webhooks (general webhooks, version 2.0), which Conduit creates itself
//! for a realtime config (`sync::subscriptions`).
//!
//! **Verification**: Pipedrive signs nothing; the webhook carries the HTTP basic
//! credentials Conduit set when it created it (`http_auth_user`/`http_auth_password`),
//! compared in constant time. The URL names the config, so credentials are per config.
//!
//! **Events**: one per request, `{"data": {…}|null, "previous": {…}|null, "meta":
//! {"action": "create"|"change"|"delete", "entity": "person"|"organization"|…,
//! "entity_id": "…", "id": "…", "attempt": n, "company_id", "user_id", "webhook_id",
//! "change_source": "app"|"api", "timestamp", "version": "2.0", …}}`. Only `meta` is
//! read: the record is read back from Pipedrive, never taken from the body. A body
//! without `meta.action`, `meta.entity` or `meta.entity_id` is refused whole; events of
//! objects record sync does not read (deals, activities, …) are ignored.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;
use subtle::ConstantTimeEq;

use super::WebhookError;
use super::hubspot::Change;
use crate::sync::schema::Entity;

/// Checks an `Authorization: Basic …` header against the webhook's credentials.
pub fn check_auth(header: Option<&str>, user: &str, password: &str) -> Result<(), WebhookError> {
    let given = header
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .ok_or(WebhookError::MissingHeader("authorization"))?;
    let encoded = given
        .strip_prefix("Basic ")
        .or_else(|| given.strip_prefix("basic "))
        .ok_or(WebhookError::BadCredentials)?;
    let decoded = STANDARD
        .decode(encoded.trim())
        .map_err(|_| WebhookError::BadCredentials)?;
    let expected = format!("{user}:{password}");
    if bool::from(decoded.as_slice().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(WebhookError::BadCredentials)
    }
}

/// One event, as record sync reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The entity and change, when record sync reads the object.
    pub change: Option<(Entity, Change)>,
    /// The record's id.
    pub entity_id: String,
    /// The event's id and attempt: the same pair twice is a replay.
    pub key: String,
}

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.trim().is_empty() && s.len() <= 64 => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Reads one event (the whole body).
pub fn parse(body: &[u8]) -> Result<Event, WebhookError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| WebhookError::Malformed(e.to_string()))?;
    let meta = v
        .get("meta")
        .filter(|m| m.is_object())
        .ok_or_else(|| WebhookError::Malformed("no meta object".into()))?;
    let field = |name: &str| {
        text(meta.get(name))
            .ok_or_else(|| WebhookError::Malformed(format!("meta.{name} is missing")))
    };
    let action = field("action")?;
    let entity = field("entity")?;
    let entity_id = field("entity_id")?;
    if !entity_id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(WebhookError::Malformed(
            "meta.entity_id is not a Pipedrive id".into(),
        ));
    }
    let id = text(meta.get("id")).unwrap_or_default();
    let attempt = text(meta.get("attempt")).unwrap_or_default();
    let entity = match entity.as_str() {
        "person" => Some(Entity::Contacts),
        "organization" => Some(Entity::Companies),
        _ => None,
    };
    let change = match action.as_str() {
        "create" | "change" => Some(Change::Changed),
        "delete" => Some(Change::Deleted),
        _ => None,
    };
    Ok(Event {
        change: entity.zip(change),
        key: format!("{id}#{attempt}#{entity_id}"),
        entity_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn basic_credentials_must_match_exactly() {
        let good = format!("Basic {}", STANDARD.encode("conduit:s3cret"));
        assert_eq!(check_auth(Some(&good), "conduit", "s3cret"), Ok(()));
        let bad = format!("Basic {}", STANDARD.encode("conduit:s3cre"));
        assert_eq!(
            check_auth(Some(&bad), "conduit", "s3cret"),
            Err(WebhookError::BadCredentials)
        );
        assert_eq!(
            check_auth(Some("Bearer x"), "conduit", "s3cret"),
            Err(WebhookError::BadCredentials)
        );
        assert_eq!(
            check_auth(None, "conduit", "s3cret"),
            Err(WebhookError::MissingHeader("authorization"))
        );
    }

    #[test]
    fn events_read_their_meta_only() {
        let body = json!({"data": {"id": 7, "name": "x"}, "previous": null, "meta": {
            "action": "change", "entity": "person", "entity_id": "7", "id": "ev-1",
            "attempt": 1, "version": "2.0"}});
        let e = parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(e.change, Some((Entity::Contacts, Change::Changed)));
        assert_eq!(e.entity_id, "7");
        let deal = json!({"meta": {"action": "delete", "entity": "deal", "entity_id": 3}});
        assert_eq!(parse(deal.to_string().as_bytes()).unwrap().change, None);
        let org = json!({"meta": {"action": "delete", "entity": "organization", "entity_id": 3}});
        assert_eq!(
            parse(org.to_string().as_bytes()).unwrap().change,
            Some((Entity::Companies, Change::Deleted))
        );
        for bad in [
            json!({"data": {}}),
            json!({"meta": {"action": "change", "entity": "person"}}),
            json!({"meta": {"action": "change", "entity": "person", "entity_id": "7; drop"}}),
            json!([1]),
        ] {
            assert!(parse(bad.to_string().as_bytes()).is_err(), "{bad}");
        }
    }
}

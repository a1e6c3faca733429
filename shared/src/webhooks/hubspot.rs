//! HubSpot webhooks (the app's webhook subscriptions, Webhooks API v3).
//!
//! **Verification** ("Validating requests", signature v3): `X-HubSpot-Signature-v3` is
//! the base64 HMAC-SHA256, keyed with the app's client secret, of the UTF-8 string
//! `method + uri + body + timestamp`, where `uri` is the full request URI with the
//! URL-encoded characters HubSpot lists decoded (`%3A :`, `%2F /`, `%3F ?`, `%40 @`,
//! `%21 !`, `%24 $`, `%27 '`, `%28 (`, `%29 )`, `%2A *`, `%2C ,`, `%3B ;`) and
//! `timestamp` is `X-HubSpot-Request-Timestamp` (Unix ms). A timestamp more than five
//! minutes old is refused (HubSpot's rule); so is one more than five minutes ahead
//! (a clock that far off is not HubSpot's). The comparison is constant-time. The older
//! v1/v2 signatures carry no timestamp and are not accepted.
//!
//! **Events**: the body is a JSON array of up to 100 events (HubSpot batches them),
//! each `{eventId, subscriptionId, portalId, appId, occurredAt, subscriptionType,
//! attemptNumber, objectId, changeSource, sourceId?, propertyName?, propertyValue?}`;
//! `subscriptionType` is `{object}.{change}` (`contact.creation`,
//! `contact.propertyChange`, `contact.deletion`, `contact.privacyDeletion`,
//! `contact.merge`, `contact.restore`, `contact.associationChange`, the same for
//! `company` and `deal`), or a generic `object.{change}` whose `objectTypeId` names the
//! object (`0-1`, `0-2`, `0-3`). Merges carry `primaryObjectId` and `mergedObjectIds`
//! (the merged records are gone); association changes carry no `objectId` but
//! `fromObjectId`, `toObjectId` and `associationType` — a deal's (its company or
//! contact changed) is read as a change of the deal, other objects' associations are
//! not synced fields. A batch is read whole or refused: an event record sync reads
//! without its ids, or any event with the wrong types, refuses the batch (nothing of it
//! is acted on; HubSpot retries it). Events of objects or changes Conduit does not sync
//! are counted as ignored.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::WebhookError;
use crate::sync::schema::Entity;

/// The signature header.
pub const SIGNATURE: &str = "x-hubspot-signature-v3";
/// The timestamp header.
pub const TIMESTAMP: &str = "x-hubspot-request-timestamp";
/// How far a request's timestamp may be from now (ms).
pub const WINDOW_MS: i64 = 5 * 60 * 1000;
/// Events one batch may hold (HubSpot sends at most 100).
pub const BATCH_MAX: usize = 100;

/// The request URI as HubSpot signs it: the listed URL-encoded characters decoded
/// (others, such as `%20`, stay as they are).
pub fn signed_uri(uri: &str) -> String {
    const DECODED: [(&str, char); 12] = [
        ("3A", ':'),
        ("2F", '/'),
        ("3F", '?'),
        ("40", '@'),
        ("21", '!'),
        ("24", '$'),
        ("27", '\''),
        ("28", '('),
        ("29", ')'),
        ("2A", '*'),
        ("2C", ','),
        ("3B", ';'),
    ];
    let mut out = String::with_capacity(uri.len());
    let mut rest = uri;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let code = rest.get(at + 1..at + 3).map(str::to_ascii_uppercase);
        match code.and_then(|c| DECODED.iter().find(|(k, _)| *k == c)) {
            Some((_, ch)) => {
                out.push(*ch);
                rest = &rest[at + 3..];
            }
            None => {
                out.push('%');
                rest = &rest[at + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The v3 signature of a request (base64).
pub fn sign(secret: &[u8], method: &str, uri: &str, body: &[u8], timestamp: &str) -> String {
    // HMAC takes a key of any length: this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"));
    mac.update(method.as_bytes());
    mac.update(signed_uri(uri).as_bytes());
    mac.update(body);
    mac.update(timestamp.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Verifies a request's v3 signature and timestamp against the app's client secret
/// at `now_ms`: the timestamp first (a stale request is refused without computing
/// anything), then the signature.
pub fn verify(
    secret: &[u8],
    method: &str,
    uri: &str,
    body: &[u8],
    timestamp: Option<&str>,
    signature: Option<&str>,
    now_ms: i64,
) -> Result<(), WebhookError> {
    let timestamp = timestamp
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(WebhookError::MissingHeader(TIMESTAMP))?;
    let signature = signature
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or(WebhookError::MissingHeader(SIGNATURE))?;
    let at: i64 = timestamp.parse().map_err(|_| WebhookError::BadTimestamp)?;
    let off = now_ms.saturating_sub(at);
    if off.abs() > WINDOW_MS {
        return Err(WebhookError::Stale(off / 1000));
    }
    let expected = sign(secret, method, uri, body, timestamp);
    if bool::from(expected.as_bytes().ct_eq(signature.as_bytes())) {
        Ok(())
    } else {
        Err(WebhookError::BadSignature)
    }
}

/// One event of a batch, as HubSpot sends it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// The event's id (a retried batch repeats it).
    pub event_id: u64,
    /// The subscription that sent it.
    pub subscription_id: u64,
    /// The HubSpot account.
    pub portal_id: u64,
    /// The app.
    pub app_id: u64,
    /// When the change happened (Unix ms).
    pub occurred_at: i64,
    /// `{object}.{change}`.
    pub subscription_type: String,
    /// Which delivery attempt this is (0 first).
    #[serde(default)]
    pub attempt_number: u32,
    /// The record (absent from association-change events, which name both ends).
    #[serde(default)]
    pub object_id: Option<u64>,
    /// The object type of a generic `object.*` subscription's event (`0-1` contacts,
    /// `0-2` companies, `0-3` deals).
    #[serde(default)]
    pub object_type_id: Option<String>,
    /// An association change's record on this subscription's side.
    #[serde(default)]
    pub from_object_id: Option<u64>,
    /// An association change's other record.
    #[serde(default)]
    pub to_object_id: Option<u64>,
    /// An association change's kind (`DEAL_TO_COMPANY`, `CONTACT_TO_COMPANY`, …).
    #[serde(default)]
    pub association_type: Option<String>,
    /// A merge's surviving record.
    #[serde(default)]
    pub primary_object_id: Option<u64>,
    /// A merge's records merged into the primary (gone).
    #[serde(default)]
    pub merged_object_ids: Option<Vec<u64>>,
    /// What made the change (`CRM_UI`, `API`, `INTEGRATION`, `IMPORT`, …).
    #[serde(default)]
    pub change_source: Option<String>,
    /// Who made it (an app's changes: its app id).
    #[serde(default)]
    pub source_id: Option<String>,
    /// The property changed (property changes).
    #[serde(default)]
    pub property_name: Option<String>,
}

/// What an event says happened to its record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Created, changed, restored or merged into: read it.
    Changed,
    /// Deleted (or deleted for privacy): gone.
    Deleted,
}

impl Event {
    /// The entity this event's subscription is about, if record sync keeps it: the
    /// legacy `{object}.{change}` types, or a generic `object.{change}` with its
    /// `objectTypeId`.
    fn entity(&self) -> Option<(Entity, &str)> {
        let (object, change) = self.subscription_type.split_once('.')?;
        let entity = match (object, self.object_type_id.as_deref()) {
            ("contact", _) | ("object", Some("0-1")) => Entity::Contacts,
            ("company", _) | ("object", Some("0-2")) => Entity::Companies,
            ("deal", _) | ("object", Some("0-3")) => Entity::Deals,
            _ => return None,
        };
        Some((entity, change))
    }

    /// What this event says happened to which records of a synced entity — empty when
    /// record sync does not read it; an error when an event record sync reads lacks the
    /// ids its type carries.
    /// - creation, property change, restore: the record changed; deletion and privacy
    ///   deletion: gone;
    /// - merge: the surviving record changed, the merged ones gone;
    /// - association change of a deal (its company or contact): the deal changed (its
    ///   association fields are read again); contacts' and companies' associations are
    ///   not synced fields, so theirs are not read.
    pub fn changes(&self) -> Result<Vec<(Entity, Change, u64)>, WebhookError> {
        let Some((entity, change)) = self.entity() else {
            return Ok(Vec::new());
        };
        let missing = |what: &str| {
            WebhookError::Malformed(format!(
                "event {}: a {} without {what}",
                self.event_id, self.subscription_type
            ))
        };
        let object = || self.object_id.ok_or_else(|| missing("objectId"));
        Ok(match change {
            "creation" | "propertyChange" | "restore" => {
                vec![(entity, Change::Changed, object()?)]
            }
            "deletion" | "privacyDeletion" => vec![(entity, Change::Deleted, object()?)],
            "merge" => {
                let primary = match self.primary_object_id {
                    Some(id) => id,
                    None => object()?,
                };
                let mut out = vec![(entity, Change::Changed, primary)];
                out.extend(
                    self.merged_object_ids
                        .iter()
                        .flatten()
                        .filter(|id| **id != primary)
                        .map(|id| (entity, Change::Deleted, *id)),
                );
                out
            }
            "associationChange" if entity == Entity::Deals => {
                let from = self.from_object_id.ok_or_else(|| missing("fromObjectId"))?;
                vec![(entity, Change::Changed, from)]
            }
            _ => Vec::new(),
        })
    }
}

/// A batch's changed and deleted record ids of one account and entity.
pub use crate::sync::webhook::AccountChanges as Changes;

/// A batch read: the changes per (portal, entity), and the events not about synced
/// records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    /// Changes per account and entity, events of one record coalesced (a deletion wins
    /// over changes before it; a restore or change after a deletion wins over it).
    pub changes: BTreeMap<(String, Entity), Changes>,
    /// Events of objects or changes record sync does not read.
    pub ignored: usize,
    /// The batch's event ids (for recognising a batch seen before).
    pub event_ids: BTreeSet<u64>,
}

/// Reads a batch (the whole body), refusing it whole if any event is not HubSpot's
/// shape.
pub fn parse(body: &[u8]) -> Result<Batch, WebhookError> {
    let events: Vec<Event> =
        serde_json::from_slice(body).map_err(|e| WebhookError::Malformed(e.to_string()))?;
    if events.is_empty() {
        return Err(WebhookError::Malformed("no events".into()));
    }
    if events.len() > BATCH_MAX {
        return Err(WebhookError::Malformed(format!(
            "{} events (HubSpot sends at most {BATCH_MAX})",
            events.len()
        )));
    }
    let mut ordered = events;
    ordered.sort_by_key(|e| (e.occurred_at, e.event_id));
    let mut batch = Batch::default();
    for e in ordered {
        batch.event_ids.insert(e.event_id);
        let changes = e.changes()?;
        if changes.is_empty() {
            batch.ignored += 1;
        }
        for (entity, change, id) in changes {
            let id = id.to_string();
            let slot = batch
                .changes
                .entry((e.portal_id.to_string(), entity))
                .or_default();
            match change {
                Change::Changed => {
                    slot.deleted.remove(&id);
                    slot.changed.insert(id);
                }
                Change::Deleted => {
                    slot.changed.remove(&id);
                    slot.deleted.insert(id);
                }
            }
        }
    }
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const SECRET: &[u8] = b"yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy";
    const URI: &str = "https://hooks.conduit.example/v1/webhooks/hubspot";
    const NOW: i64 = 1_765_000_000_000;

    fn signed(body: &[u8], at: i64) -> (String, String) {
        let ts = at.to_string();
        (sign(SECRET, "POST", URI, body, &ts), ts)
    }

    #[test]
    fn the_signature_is_hmac_sha256_over_method_uri_body_and_timestamp() {
        // Computed independently: python3 -c "import hmac,hashlib,base64;
        // print(base64.b64encode(hmac.new(b'yyyyyyyy-yyyy-yyyy-yyyy-yyyyyyyyyyyy',
        // b'POSThttps://hooks.conduit.example/v1/webhooks/hubspot[]1765000000000',
        // hashlib.sha256).digest()).decode())"
        assert_eq!(
            sign(SECRET, "POST", URI, b"[]", "1765000000000"),
            "hGhSfkk4Q+MT1ncQfHG1kmmseZMGwYgUpYtRdK1hNy8="
        );
    }

    #[test]
    fn a_signed_fresh_request_passes_and_any_change_to_it_fails() {
        let body = br#"[{"eventId":1}]"#;
        let (sig, ts) = signed(body, NOW - 1_000);
        let ok = |method: &str, uri: &str, body: &[u8], ts: &str, sig: &str| {
            verify(SECRET, method, uri, body, Some(ts), Some(sig), NOW)
        };
        assert_eq!(ok("POST", URI, body, &ts, &sig), Ok(()));
        let bad = Err(WebhookError::BadSignature);
        assert_eq!(ok("POST", URI, br#"[{"eventId":2}]"#, &ts, &sig), bad);
        assert_eq!(ok("GET", URI, body, &ts, &sig), bad);
        assert_eq!(ok("POST", &format!("{URI}?x=1"), body, &ts, &sig), bad);
        let other_ts = (NOW - 2_000).to_string();
        assert_eq!(ok("POST", URI, body, &other_ts, &sig), bad);
        let wrong_key = sign(b"another-secret", "POST", URI, body, &ts);
        assert_eq!(ok("POST", URI, body, &ts, &wrong_key), bad);
    }

    #[test]
    fn stale_future_and_missing_timestamps_are_refused_before_the_signature() {
        let body = b"[]";
        let (sig, ts) = signed(body, NOW - WINDOW_MS - 1);
        assert_eq!(
            verify(SECRET, "POST", URI, body, Some(&ts), Some(&sig), NOW),
            Err(WebhookError::Stale(300))
        );
        let (sig, ts) = signed(body, NOW + WINDOW_MS + 1_000);
        assert!(matches!(
            verify(SECRET, "POST", URI, body, Some(&ts), Some(&sig), NOW),
            Err(WebhookError::Stale(_))
        ));
        let (sig, ts) = signed(body, NOW - WINDOW_MS);
        assert_eq!(
            verify(SECRET, "POST", URI, body, Some(&ts), Some(&sig), NOW),
            Ok(())
        );
        assert_eq!(
            verify(SECRET, "POST", URI, body, None, Some(&sig), NOW),
            Err(WebhookError::MissingHeader(TIMESTAMP))
        );
        assert_eq!(
            verify(SECRET, "POST", URI, body, Some(&ts), Some(" "), NOW),
            Err(WebhookError::MissingHeader(SIGNATURE))
        );
        assert_eq!(
            verify(SECRET, "POST", URI, body, Some("soon"), Some(&sig), NOW),
            Err(WebhookError::BadTimestamp)
        );
    }

    #[test]
    fn the_uri_is_signed_with_hubspots_listed_characters_decoded() {
        assert_eq!(
            signed_uri("https://x.example/h?a=b%3Ac%2Cd%20e%40f%2af%zz%"),
            "https://x.example/h?a=b:c,d%20e@f*f%zz%"
        );
        let encoded = format!("{URI}?portal%3D1%3B2");
        let decoded = format!("{URI}?portal%3D1;2");
        assert_eq!(
            sign(SECRET, "POST", &encoded, b"[]", "1"),
            sign(SECRET, "POST", &decoded, b"[]", "1")
        );
    }

    fn event(id: u64, kind: &str, object: u64, at: i64) -> serde_json::Value {
        json!({
            "eventId": id, "subscriptionId": 7, "portalId": 62515, "appId": 99,
            "occurredAt": at, "subscriptionType": kind, "attemptNumber": 0,
            "objectId": object, "changeSource": "CRM_UI",
            "propertyName": "firstname", "propertyValue": "Ada"
        })
    }

    #[test]
    fn a_batch_coalesces_per_account_and_entity_and_orders_by_time() {
        let body = json!([
            event(1, "contact.propertyChange", 11, 100),
            event(2, "contact.propertyChange", 11, 101),
            event(3, "contact.creation", 12, 102),
            // Deleted, then restored: changed.
            event(5, "contact.restore", 13, 105),
            event(4, "contact.deletion", 13, 104),
            event(6, "company.privacyDeletion", 21, 106),
            event(7, "deal.creation", 31, 107),
            event(8, "contact.associationChange", 11, 108),
            event(9, "ticket.creation", 41, 109),
        ]);
        let batch = parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(batch.ignored, 2);
        assert_eq!(batch.event_ids.len(), 9);
        let contacts = &batch.changes[&("62515".to_owned(), Entity::Contacts)];
        let ids = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>();
        assert_eq!(ids(&contacts.changed), ["11", "12", "13"]);
        assert!(contacts.deleted.is_empty());
        let companies = &batch.changes[&("62515".to_owned(), Entity::Companies)];
        assert_eq!(ids(&companies.deleted), ["21"]);
        let deals = &batch.changes[&("62515".to_owned(), Entity::Deals)];
        assert_eq!(ids(&deals.changed), ["31"]);
    }

    #[test]
    fn association_merge_and_generic_events_are_read_by_their_own_ids() {
        let association = |id: u64, kind: &str, from: u64, to: u64, what: &str| {
            json!({
                "eventId": id, "subscriptionId": 8, "portalId": 62515, "appId": 99,
                "occurredAt": 200 + id, "subscriptionType": kind, "attemptNumber": 0,
                "changeSource": "USER", "associationType": what,
                "fromObjectId": from, "toObjectId": to,
                "associationRemoved": false, "isPrimaryAssociation": true
            })
        };
        let mut merge = event(3, "contact.merge", 11, 203);
        merge["primaryObjectId"] = json!(11);
        merge["mergedObjectIds"] = json!([12, 13]);
        let mut generic = event(4, "object.creation", 77, 204);
        generic["objectTypeId"] = json!("0-3");
        let mut other = event(5, "object.creation", 78, 205);
        other["objectTypeId"] = json!("0-5");
        let body = json!([
            association(1, "deal.associationChange", 31, 21, "DEAL_TO_COMPANY"),
            association(2, "company.associationChange", 21, 31, "COMPANY_TO_DEAL"),
            merge,
            generic,
            other,
        ]);
        let batch = parse(body.to_string().as_bytes()).unwrap();
        // The company's side of the association, and a ticket, are not read.
        assert_eq!(batch.ignored, 2);
        let ids = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>();
        let deals = &batch.changes[&("62515".to_owned(), Entity::Deals)];
        assert_eq!(ids(&deals.changed), ["31", "77"]);
        let contacts = &batch.changes[&("62515".to_owned(), Entity::Contacts)];
        assert_eq!(ids(&contacts.changed), ["11"]);
        assert_eq!(ids(&contacts.deleted), ["12", "13"]);
        assert!(
            !batch
                .changes
                .contains_key(&("62515".to_owned(), Entity::Companies))
        );

        // An event record sync reads without the id its type carries refuses the
        // batch; one it does not read need not have it.
        let mut bare = association(1, "deal.associationChange", 31, 21, "DEAL_TO_COMPANY");
        bare.as_object_mut().unwrap().remove("fromObjectId");
        assert!(matches!(
            parse(json!([bare]).to_string().as_bytes()),
            Err(WebhookError::Malformed(_))
        ));
        let mut unread = event(1, "ticket.creation", 1, 1);
        unread.as_object_mut().unwrap().remove("objectId");
        assert_eq!(
            parse(json!([unread]).to_string().as_bytes())
                .unwrap()
                .ignored,
            1
        );
    }

    #[test]
    fn a_batch_not_in_hubspots_shape_is_refused_whole() {
        for body in [
            "".to_owned(),
            "{}".to_owned(),
            "[]".to_owned(),
            json!([{"eventId": 1}]).to_string(),
            json!([{"eventId": 1, "subscriptionId": 7, "portalId": 1, "appId": 1,
                    "occurredAt": 1, "subscriptionType": "contact.creation"}])
            .to_string(),
            json!([event(1, "contact.creation", 11, 1), {"eventId": "x"}]).to_string(),
            json!([{"eventId": 1, "subscriptionId": 7, "portalId": 1, "appId": 1,
                    "occurredAt": 1, "subscriptionType": "contact.creation",
                    "objectId": -4}])
            .to_string(),
            serde_json::Value::Array(
                (0..=BATCH_MAX as u64)
                    .map(|i| event(i, "contact.creation", i, 1))
                    .collect(),
            )
            .to_string(),
        ] {
            assert!(
                matches!(parse(body.as_bytes()), Err(WebhookError::Malformed(_))),
                "{body}"
            );
        }
    }
}

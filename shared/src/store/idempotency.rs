//! Idempotency keys: a client that sends `Idempotency-Key` with a POST may send the
//! same request again (after a timeout, a dropped connection) and get the first
//! answer instead of a second effect.
//!
//! Rules:
//! - A key is scoped by tenant + route + key, and lives 24 hours ([`TTL_SECS`]).
//! - The first request claims the key with one conditional put (in flight); a second
//!   one while the first runs is refused (`InFlight`), one with another request under
//!   the same key too (`Reused`): the request is its fingerprint — method, route, path,
//!   query and canonical JSON body ([`fingerprint`]).
//! - A success (2xx) is stored as status, a few headers and the body, the body sealed
//!   under the tenant's KMS data key (some answers hold secrets, e.g. the OAuth start's
//!   single-use `state`), and replayed to the same request. Anything else releases the
//!   claim, so the request can be tried again: refusals change nothing, and a failure
//!   of ours or the provider's may pass on retry.
//! - A claim whose request died (Lambda timeout, crash) is taken over after
//!   [`LEASE_SECS`]; an item past its TTL counts as absent, since DynamoDB deletes
//!   expired items only eventually.

use std::collections::BTreeMap;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::crypto::{CryptoError, DataKeySource, Envelope, SealContext, Sealed};
use crate::domain::TenantId;
use crate::store::{Keyed, StoreError, Table, condition_or, to_item};

/// How long a key and its answer are kept (24 hours).
pub const TTL_SECS: i64 = 24 * 60 * 60;
/// How long an in-flight claim holds before another request may take it over: longer
/// than any request can run (API Gateway gives up on an integration after 30 s).
pub const LEASE_SECS: i64 = 60;
/// The longest key accepted.
pub const MAX_KEY_CHARS: usize = 255;
/// The response headers stored with an answer and replayed.
pub const REPLAYED_HEADERS: [&str; 3] = ["content-type", "etag", "location"];

/// A client's idempotency key: 1 to 255 printable ASCII characters, not only spaces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Validates a key; the message never repeats it.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        if raw.trim().is_empty() {
            return Err("Idempotency-Key must not be empty");
        }
        if raw.len() > MAX_KEY_CHARS {
            return Err("Idempotency-Key must be at most 255 characters");
        }
        if !raw.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
            return Err("Idempotency-Key must be printable ASCII");
        }
        Ok(Self(raw.to_owned()))
    }

    /// The key as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What one key is scoped by.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    /// The caller's tenant.
    pub tenant: &'a TenantId,
    /// The route key, e.g. `POST /v1/connections`.
    pub route: &'a str,
    /// The client's key.
    pub key: &'a IdempotencyKey,
}

/// SHA-256 (hex) over length-prefixed parts: no separator a part could hold joins them.
fn digest(parts: &[&[u8]]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hash.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The item key of a scope: its own partition (`IDEM#{tenant}#{sha256(route, key)}`),
/// so keys never crowd a tenant's partition, and one short length whatever the key.
pub fn item_key(scope: &Scope<'_>) -> (String, String) {
    let hash = digest(&[scope.route.as_bytes(), scope.key.as_str().as_bytes()]);
    super::keys::idempotency(scope.tenant, &hash)
}

/// Where a stored answer's body is sealed: bound to the tenant and to its key.
fn seal_context(scope: &Scope<'_>) -> SealContext {
    let (pk, _) = item_key(scope);
    SealContext::new(scope.tenant, format!("idempotency/{pk}"))
}

/// The request a key was first used with: method, route, path, query and body, the
/// body as canonical JSON (keys sorted, no whitespace) when it is JSON, so the same
/// object sent with its keys in another order is the same request.
pub fn fingerprint(method: &str, route: &str, path: &str, query: &str, body: &[u8]) -> String {
    let canonical = serde_json::from_slice::<serde_json::Value>(body)
        .map(|v| {
            let mut out = String::new();
            canonical_json(&v, &mut out);
            out.into_bytes()
        })
        .unwrap_or_else(|_| body.to_vec());
    digest(&[
        method.as_bytes(),
        route.as_bytes(),
        path.as_bytes(),
        query.as_bytes(),
        &canonical,
    ])
}

fn canonical_json(v: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match v {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical_json(&map[k], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// A stored answer, as replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The stored headers ([`REPLAYED_HEADERS`]), lowercase names.
    pub headers: BTreeMap<String, String>,
    /// The body.
    pub body: Vec<u8>,
}

/// What [`Idempotency::begin`] found.
#[derive(Debug)]
pub enum Begin {
    /// The key is ours: run the request, then [`Idempotency::complete`] or
    /// [`Idempotency::release`].
    Claimed(Ticket),
    /// The same request already succeeded: its answer.
    Replay(Answer),
    /// The key was used with another request.
    Reused,
    /// The same request is running now.
    InFlight,
}

/// A held claim on a key.
#[derive(Debug)]
pub struct Ticket {
    pk: String,
    sk: String,
    claim: String,
    fingerprint: String,
    context: SealContext,
}

/// Idempotency failures (all ours: the caller's mistakes are [`Begin`] outcomes).
#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    /// The table failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored answer did not seal or open.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum State {
    InFlight,
    Done,
}

/// The stored item.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    state: State,
    fingerprint: String,
    claim: String,
    claimed_at: i64,
    ttl: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    headers: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body: Option<Sealed>,
}

/// Idempotency keys kept in the table.
#[derive(Debug, Clone)]
pub struct Idempotency {
    table: Table,
}

fn now_secs() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

impl Idempotency {
    /// Keys kept in `table`.
    pub fn new(table: Table) -> Self {
        Self { table }
    }

    /// Claims `scope` for the request `fingerprint`, or says why not.
    pub async fn begin<S: DataKeySource>(
        &self,
        envelope: &Envelope<S>,
        scope: &Scope<'_>,
        fingerprint: &str,
    ) -> Result<Begin, IdempotencyError> {
        let (pk, sk) = item_key(scope);
        // Twice at most: a key that expired or was released between our failed claim
        // and our read is claimed on the second pass.
        for _ in 0..2 {
            let now = now_secs();
            let claim = ulid::Ulid::new().to_string();
            let entry = Entry {
                state: State::InFlight,
                fingerprint: fingerprint.to_owned(),
                claim: claim.clone(),
                claimed_at: now,
                ttl: now + TTL_SECS,
                status: None,
                headers: BTreeMap::new(),
                body: None,
            };
            match self.claim(&pk, &sk, &entry, now).await {
                Ok(()) => {
                    return Ok(Begin::Claimed(Ticket {
                        pk,
                        sk,
                        claim,
                        fingerprint: fingerprint.to_owned(),
                        context: seal_context(scope),
                    }));
                }
                Err(StoreError::ConditionFailed) => {}
                Err(e) => return Err(e.into()),
            }
            let Some(found) = self.table.get::<Keyed<Entry>>(&pk, &sk).await? else {
                continue;
            };
            let found = found.item;
            if found.ttl <= now {
                continue;
            }
            if found.fingerprint != fingerprint {
                return Ok(Begin::Reused);
            }
            match (found.state, found.status) {
                (State::Done, Some(status)) => {
                    let body = match &found.body {
                        Some(sealed) => envelope.open(&seal_context(scope), sealed).await?.to_vec(),
                        None => Vec::new(),
                    };
                    return Ok(Begin::Replay(Answer {
                        status,
                        headers: found.headers,
                        body,
                    }));
                }
                (State::InFlight, _) if found.claimed_at + LEASE_SECS <= now => continue,
                _ => return Ok(Begin::InFlight),
            }
        }
        Ok(Begin::InFlight)
    }

    /// Puts the claim unless a live entry holds the key: absent, past its TTL, or an
    /// in-flight claim past its lease.
    async fn claim(&self, pk: &str, sk: &str, entry: &Entry, now: i64) -> Result<(), StoreError> {
        self.put(pk, sk, entry)?
            .condition_expression(
                "attribute_not_exists(pk) OR #ttl <= :now \
                 OR (#state = :in_flight AND claimed_at <= :stale)",
            )
            .expression_attribute_names("#ttl", "ttl")
            .expression_attribute_names("#state", "state")
            .expression_attribute_values(":now", AttributeValue::N(now.to_string()))
            .expression_attribute_values(":in_flight", AttributeValue::S("in_flight".into()))
            .expression_attribute_values(
                ":stale",
                AttributeValue::N((now - LEASE_SECS).to_string()),
            )
            .send()
            .await
            .map_err(condition_or)?;
        Ok(())
    }

    /// A put of `entry` under its key, for the caller to add its condition.
    fn put(
        &self,
        pk: &str,
        sk: &str,
        entry: &Entry,
    ) -> Result<aws_sdk_dynamodb::operation::put_item::builders::PutItemFluentBuilder, StoreError>
    {
        let item = to_item(&Keyed {
            pk: pk.to_owned(),
            sk: sk.to_owned(),
            item: entry,
        })?;
        Ok(self
            .table
            .client()
            .put_item()
            .table_name(self.table.name())
            .set_item(Some(item)))
    }

    /// Stores the answer of a claimed request for replay, if the claim is still ours.
    pub async fn complete<S: DataKeySource>(
        &self,
        envelope: &Envelope<S>,
        ticket: Ticket,
        answer: &Answer,
    ) -> Result<(), IdempotencyError> {
        let body = match answer.body.is_empty() {
            true => None,
            false => Some(envelope.seal(&ticket.context, &answer.body).await?),
        };
        let now = now_secs();
        let entry = Entry {
            state: State::Done,
            fingerprint: ticket.fingerprint,
            claim: ticket.claim.clone(),
            claimed_at: now,
            ttl: now + TTL_SECS,
            status: Some(answer.status),
            headers: answer.headers.clone(),
            body,
        };
        self.put(&ticket.pk, &ticket.sk, &entry)?
            .condition_expression("claim = :claim")
            .expression_attribute_values(":claim", AttributeValue::S(ticket.claim))
            .send()
            .await
            .map_err(condition_or)?;
        Ok(())
    }

    /// Gives a claimed key back (the request did not succeed), if the claim is still
    /// ours.
    pub async fn release(&self, ticket: Ticket) -> Result<(), IdempotencyError> {
        let result = self
            .table
            .client()
            .delete_item()
            .table_name(self.table.name())
            .key("pk", AttributeValue::S(ticket.pk))
            .key("sk", AttributeValue::S(ticket.sk))
            .condition_expression("claim = :claim")
            .expression_attribute_values(":claim", AttributeValue::S(ticket.claim))
            .send()
            .await
            .map_err(condition_or);
        match result {
            // Taken over after the lease: no longer ours to release.
            Ok(_) | Err(StoreError::ConditionFailed) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_bounded_printable_and_not_blank() {
        assert!(IdempotencyKey::parse("8e03978e-40d5-43e8-bc93-6894a57f9324").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
        for bad in ["", "   ", "tab\there", "new\nline", "caf\u{e9}"] {
            assert!(IdempotencyKey::parse(bad).is_err(), "{bad:?}");
        }
        let e = IdempotencyKey::parse(&"k".repeat(256)).unwrap_err();
        assert!(!e.contains("kkk"));
    }

    #[test]
    fn item_keys_are_scoped_by_tenant_route_and_key() {
        let t = TenantId::parse("acme").unwrap();
        let other = TenantId::parse("globex").unwrap();
        let k = IdempotencyKey::parse("abc").unwrap();
        let k2 = IdempotencyKey::parse("abd").unwrap();
        let key = |tenant, route, key| item_key(&Scope { tenant, route, key });
        let base = key(&t, "POST /v1/connections", &k);
        assert!(base.0.starts_with("IDEM#acme#"));
        assert_eq!(base.0.len(), "IDEM#acme#".len() + 64);
        assert_ne!(base, key(&other, "POST /v1/connections", &k));
        assert_ne!(base, key(&t, "POST /v1/sync/configs", &k));
        assert_ne!(base, key(&t, "POST /v1/connections", &k2));
        // Parts never run into each other.
        let a = IdempotencyKey::parse("sabc").unwrap();
        assert_ne!(
            key(&t, "POST /v1/connection", &a),
            key(&t, "POST /v1/connections", &k)
        );
    }

    #[test]
    fn fingerprints_read_json_canonically() {
        let f = |body: &str| fingerprint("POST", "POST /v1/x", "/v1/x", "", body.as_bytes());
        assert_eq!(
            f(r#"{"a":1,"b":{"d":[1,2],"c":"x"}}"#),
            f(" {\"b\": {\"c\": \"x\", \"d\": [1, 2]}, \"a\": 1}\n")
        );
        assert_ne!(f(r#"{"a":1}"#), f(r#"{"a":2}"#));
        assert_ne!(f(r#"{"a":[1,2]}"#), f(r#"{"a":[2,1]}"#));
        assert_ne!(
            fingerprint("POST", "POST /v1/x/{id}", "/v1/x/1", "", b"{}"),
            fingerprint("POST", "POST /v1/x/{id}", "/v1/x/2", "", b"{}")
        );
        assert_eq!(f("not json"), f("not json"));
        assert_ne!(f("not json"), f("not json "));
    }
}

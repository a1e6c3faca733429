//! A webhook receiver following Standard Webhooks 1.0.0
//! (<https://www.standardwebhooks.com>), for Conduit's webhook destination.
//!
//! The control API registers a receiver with one or more `whsec_` secrets (several
//! during a rotation) and answers its URL: `https://webhooks.sandbox.test/r/{id}`
//! (served at `/webhooks.sandbox.test/r/{id}` like every provider host). A delivery is
//! valid when `webhook-id`, `webhook-timestamp` and `webhook-signature` are present, the
//! timestamp is within the tolerance (5 minutes by default) of now, and one of the
//! space-separated `v1,<base64>` signatures equals base64(HMAC-SHA256(key,
//! "{id}.{timestamp}.{body}")) for one of the secrets, whose key is the base64-decoded
//! part after `whsec_` (compared in constant time). Valid: 204; not: 401 with
//! `{"error":"…reason…"}`. Every delivery is recorded, duplicates (a `webhook-id` seen
//! before) too, with the number of times that id arrived. Fault knobs ([`FaultKnob`])
//! act like the action routes' ones.
//!
//! This is an implementation independent of Conduit's signer (`conduit::dispatch`):
//! the sandbox checks what Conduit sends.

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::actions::{ActionFaultKind, FaultKnob, take_knob};
use crate::providers::ProviderRequest;
use crate::state::SandboxState;
use crate::wire;

/// The host the receivers are served at.
pub const HOST: &str = "webhooks.sandbox.test";

/// Route name counted for deliveries.
pub const DELIVERY_ROUTE: &str = "webhooks.delivery";

/// Default timestamp tolerance, in seconds (the libraries' 5 minutes).
pub const DEFAULT_TOLERANCE_SECS: u64 = 300;

/// Shortest and longest secret, in bytes (the spec: 24 to 64).
const SECRET_BYTES: std::ops::RangeInclusive<usize> = 24..=64;

/// One delivery that reached a receiver.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Delivery {
    /// The `webhook-id` header, if any.
    pub webhook_id: Option<String>,
    /// The `webhook-timestamp` header, if any.
    pub timestamp: Option<String>,
    /// Whether the signature checked out (and the headers and timestamp too).
    pub valid: bool,
    /// Why it was refused, when it was.
    pub reason: Option<String>,
    /// How many deliveries with this `webhook-id` arrived so far, this one included.
    pub attempt: u32,
    /// Whether an earlier delivery had the same `webhook-id`.
    pub duplicate: bool,
    /// The status answered.
    pub status: u16,
    /// The fault knob that shaped the answer, if any.
    pub fault: Option<String>,
    /// The body: JSON when it parses, else the text.
    pub body: Value,
    /// The request's content type.
    pub content_type: Option<String>,
    /// When it arrived, epoch milliseconds.
    pub received_ms: i64,
}

/// A registered receiver, as the control API shows it (never its secrets).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReceiverView {
    /// Its id, `rcv_{n}`.
    pub id: String,
    /// The URL to give Conduit: `https://webhooks.sandbox.test/r/{id}`.
    pub url: String,
    /// The same receiver's path on the sandbox, `/webhooks.sandbox.test/r/{id}`.
    pub sandbox_path: String,
    /// How many secrets it accepts.
    pub secrets: usize,
    /// Timestamp tolerance, seconds.
    pub tolerance_secs: u64,
    /// Deliveries, oldest first.
    pub deliveries: Vec<Delivery>,
    /// Distinct valid `webhook-id`s received (what a deduplicating consumer processes).
    pub unique_valid: usize,
}

#[derive(Clone, Debug)]
struct Receiver {
    id: String,
    keys: Vec<Vec<u8>>,
    tolerance_secs: u64,
    deliveries: Vec<Delivery>,
    faults: Vec<FaultKnob>,
}

/// The registered receivers.
#[derive(Clone, Debug, Default)]
pub struct Receivers {
    next: u64,
    list: Vec<Receiver>,
}

/// The HMAC key of a `whsec_` secret, or why it is not one.
pub fn secret_key(secret: &str) -> Result<Vec<u8>, String> {
    let encoded = secret
        .strip_prefix("whsec_")
        .ok_or_else(|| "a secret starts with whsec_".to_owned())?;
    let key = STANDARD
        .decode(encoded)
        .map_err(|_| "the part after whsec_ is not base64".to_owned())?;
    if !SECRET_BYTES.contains(&key.len()) {
        return Err(format!(
            "a secret has 24 to 64 bytes, this one {}",
            key.len()
        ));
    }
    Ok(key)
}

/// The `v1` signature of a message: base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")).
pub fn sign(key: &[u8], id: &str, timestamp: &str, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        // HMAC takes keys of any length; this arm is unreachable in practice.
        return String::new();
    };
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Checks one delivery's headers and body against `keys` at `now_secs`; the error is
/// the reason for the 401.
pub fn verify(
    keys: &[Vec<u8>],
    tolerance_secs: u64,
    now_secs: i64,
    id: Option<&str>,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
) -> Result<(), String> {
    let id = id
        .filter(|v| !v.is_empty())
        .ok_or("missing webhook-id header")?;
    let timestamp = timestamp
        .filter(|v| !v.is_empty())
        .ok_or("missing webhook-timestamp header")?;
    let signature = signature
        .filter(|v| !v.is_empty())
        .ok_or("missing webhook-signature header")?;
    let sent: i64 = timestamp
        .parse()
        .map_err(|_| "webhook-timestamp is not an integer number of seconds")?;
    let tolerance = i64::try_from(tolerance_secs).unwrap_or(i64::MAX);
    if sent < now_secs.saturating_sub(tolerance) {
        return Err("webhook-timestamp is too old".to_owned());
    }
    if sent > now_secs.saturating_add(tolerance) {
        return Err("webhook-timestamp is too far in the future".to_owned());
    }
    let mut any_v1 = false;
    for entry in signature.split(' ').filter(|e| !e.is_empty()) {
        let Some((version, encoded)) = entry.split_once(',') else {
            continue;
        };
        if version != "v1" {
            continue;
        }
        any_v1 = true;
        let Ok(given) = STANDARD.decode(encoded) else {
            continue;
        };
        for key in keys {
            let expected = STANDARD
                .decode(sign(key, id, timestamp, body))
                .unwrap_or_default();
            if bool::from(expected.ct_eq(&given)) {
                return Ok(());
            }
        }
    }
    if any_v1 {
        Err("no matching signature".to_owned())
    } else {
        Err("webhook-signature has no v1 signature".to_owned())
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Receivers {
    fn view(receiver: &Receiver) -> ReceiverView {
        let mut valid_ids: Vec<&str> = receiver
            .deliveries
            .iter()
            .filter(|d| d.valid)
            .filter_map(|d| d.webhook_id.as_deref())
            .collect();
        valid_ids.sort_unstable();
        valid_ids.dedup();
        ReceiverView {
            id: receiver.id.clone(),
            url: format!("https://{HOST}/r/{}", receiver.id),
            sandbox_path: format!("/{HOST}/r/{}", receiver.id),
            secrets: receiver.keys.len(),
            tolerance_secs: receiver.tolerance_secs,
            deliveries: receiver.deliveries.clone(),
            unique_valid: valid_ids.len(),
        }
    }
}

impl SandboxState {
    /// Registers a webhook receiver accepting any of `secrets` (`whsec_…`), with the
    /// timestamp tolerance (default 5 minutes); answers it with its URL.
    pub fn add_webhook_receiver(
        &self,
        secrets: &[String],
        tolerance_secs: Option<u64>,
    ) -> Result<ReceiverView, String> {
        if secrets.is_empty() {
            return Err("give at least one secret".to_owned());
        }
        let keys = secrets
            .iter()
            .map(|s| secret_key(s))
            .collect::<Result<Vec<_>, _>>()?;
        let mut store = self.dispatch_store();
        let receivers = &mut store.receivers;
        receivers.next += 1;
        let receiver = Receiver {
            id: format!("rcv_{}", receivers.next),
            keys,
            tolerance_secs: tolerance_secs.unwrap_or(DEFAULT_TOLERANCE_SECS),
            deliveries: Vec::new(),
            faults: Vec::new(),
        };
        let view = Receivers::view(&receiver);
        receivers.list.push(receiver);
        Ok(view)
    }

    /// Replaces a receiver's secrets (a rotation: give the new and the old one during the
    /// overlap). `None` when there is no such receiver.
    pub fn set_webhook_secrets(&self, id: &str, secrets: &[String]) -> Option<Result<(), String>> {
        let keys = secrets
            .iter()
            .map(|s| secret_key(s))
            .collect::<Result<Vec<_>, _>>();
        let mut store = self.dispatch_store();
        let receiver = store.receivers.list.iter_mut().find(|r| r.id == id)?;
        Some(match keys {
            Ok(keys) if !keys.is_empty() => {
                receiver.keys = keys;
                Ok(())
            }
            Ok(_) => Err("give at least one secret".to_owned()),
            Err(e) => Err(e),
        })
    }

    /// A receiver with its deliveries.
    pub fn webhook_receiver(&self, id: &str) -> Option<ReceiverView> {
        let store = self.dispatch_store();
        store
            .receivers
            .list
            .iter()
            .find(|r| r.id == id)
            .map(Receivers::view)
    }

    /// Every receiver.
    pub fn webhook_receivers(&self) -> Vec<ReceiverView> {
        let store = self.dispatch_store();
        store.receivers.list.iter().map(Receivers::view).collect()
    }

    /// Queues a fault knob on a receiver; `None` when there is no such receiver.
    pub fn add_webhook_fault(&self, id: &str, knob: FaultKnob) -> Option<Result<(), String>> {
        let mut store = self.dispatch_store();
        let receiver = store.receivers.list.iter_mut().find(|r| r.id == id)?;
        Some(knob.validate().map(|()| receiver.faults.push(knob)))
    }
}

fn refusal(status: StatusCode, reason: &str) -> Response {
    wire::json(status, json!({ "error": reason }))
}

/// Serves a delivery to `/webhooks.sandbox.test/r/{id}`.
pub(crate) async fn receive(state: &SandboxState, req: &ProviderRequest) -> Response {
    state.record_call(DELIVERY_ROUTE);
    let id = req.path.strip_prefix("/r/").unwrap_or_default().to_owned();
    let found = {
        let mut store = state.dispatch_store();
        store
            .receivers
            .list
            .iter_mut()
            .find(|r| r.id == id)
            .map(|r| {
                let fault = take_knob(&mut r.faults, |_| true, |k| k);
                (r.keys.clone(), r.tolerance_secs, fault)
            })
    };
    let Some((keys, tolerance, fault)) = found else {
        return refusal(StatusCode::NOT_FOUND, "no such receiver");
    };
    if req.method != axum::http::Method::POST {
        return refusal(StatusCode::METHOD_NOT_ALLOWED, "deliveries are POSTs");
    }
    let latency = state.latency_for(crate::state::Provider::Custom);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let header = |name: &str| wire::header(&req.headers, name).map(str::to_owned);
    let webhook_id = header("webhook-id");
    let timestamp = header("webhook-timestamp");
    let checked = verify(
        &keys,
        tolerance,
        now_secs(),
        webhook_id.as_deref(),
        timestamp.as_deref(),
        header("webhook-signature").as_deref(),
        &req.body,
    );
    let (mut response, refused_early) = match (&fault, &checked) {
        (Some(knob), _) if knob.kind == ActionFaultKind::Status => (
            status_answer(knob.status_or_default(), knob.retry_after_secs),
            true,
        ),
        (Some(knob), _) if knob.kind == ActionFaultKind::RateLimit => {
            (status_answer(429, knob.retry_after_secs), true)
        }
        (_, Ok(())) => (StatusCode::NO_CONTENT.into_response(), false),
        (_, Err(reason)) => (refusal(StatusCode::UNAUTHORIZED, reason), false),
    };
    let valid = checked.is_ok() && !refused_early;
    if valid
        && let Some(knob) = &fault
        && knob.kind == ActionFaultKind::AfterEffect
    {
        response = status_answer(knob.status_or_default(), knob.retry_after_secs);
    }
    let status = response.status().as_u16();
    {
        let mut store = state.dispatch_store();
        if let Some(receiver) = store.receivers.list.iter_mut().find(|r| r.id == id) {
            let earlier = webhook_id.as_deref().map_or(0, |wid| {
                receiver
                    .deliveries
                    .iter()
                    .filter(|d| d.webhook_id.as_deref() == Some(wid))
                    .count()
            });
            receiver.deliveries.push(Delivery {
                webhook_id,
                timestamp,
                valid,
                reason: checked.err(),
                attempt: u32::try_from(earlier + 1).unwrap_or(u32::MAX),
                duplicate: earlier > 0,
                status,
                fault: fault.as_ref().map(|k| k.kind.as_str().to_owned()),
                body: serde_json::from_slice(&req.body).unwrap_or_else(|_| {
                    Value::String(String::from_utf8_lossy(&req.body).into_owned())
                }),
                content_type: wire::header(&req.headers, "content-type").map(str::to_owned),
                received_ms: crate::clock::now_ms(),
            });
        }
    }
    match &fault {
        Some(knob) if knob.kind == ActionFaultKind::Drop => dropped(),
        Some(knob) if knob.kind == ActionFaultKind::Timeout => {
            // Recorded already: a sender that gives up still leaves the delivery here.
            tokio::time::sleep(knob.hold()).await;
            response
        }
        _ => response,
    }
}

fn status_answer(status: u16, retry_after: u64) -> Response {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    let response = refusal(code, wire::reason(code));
    if matches!(status, 429 | 503) {
        wire::with_retry_after(response, retry_after)
    } else {
        response
    }
}

fn dropped() -> Response {
    let failing = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "sandbox fault: connection dropped",
        ))
    });
    Response::new(Body::from_stream(failing))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The specification's published test vector.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: &str = "1614265330";
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signs_the_specification_vector() {
        let key = secret_key(SECRET).unwrap();
        assert_eq!(format!("v1,{}", sign(&key, ID, TS, BODY)), SIGNATURE);
    }

    #[test]
    fn verifies_the_vector_within_tolerance_only() {
        let keys = vec![secret_key(SECRET).unwrap()];
        let at = 1_614_265_330;
        let check = |now: i64, sig: &str, body: &[u8]| {
            verify(&keys, 300, now, Some(ID), Some(TS), Some(sig), body)
        };
        assert_eq!(check(at, SIGNATURE, BODY), Ok(()));
        assert_eq!(check(at + 300, SIGNATURE, BODY), Ok(()));
        assert_eq!(
            check(at + 301, SIGNATURE, BODY),
            Err("webhook-timestamp is too old".into())
        );
        assert!(check(at - 301, SIGNATURE, BODY).is_err());
        assert_eq!(
            check(at, SIGNATURE, br#"{"test": 2432232315}"#),
            Err("no matching signature".into())
        );
        // Several signatures (a rotation): any match will do; unknown versions are skipped.
        let many = format!("v1a,xyz v1,AAAA {SIGNATURE}");
        assert_eq!(check(at, &many, BODY), Ok(()));
        assert_eq!(
            check(at, "v1a,abc", BODY),
            Err("webhook-signature has no v1 signature".into())
        );
        assert_eq!(
            verify(&keys, 300, at, None, Some(TS), Some(SIGNATURE), BODY),
            Err("missing webhook-id header".into())
        );
    }

    #[test]
    fn secrets_must_be_whsec_base64_of_24_to_64_bytes() {
        assert!(secret_key("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").is_err());
        assert!(secret_key("whsec_!!!").is_err());
        assert!(secret_key(&format!("whsec_{}", STANDARD.encode([7u8; 16]))).is_err());
        assert!(secret_key(&format!("whsec_{}", STANDARD.encode([7u8; 65]))).is_err());
        assert!(secret_key(&format!("whsec_{}", STANDARD.encode([7u8; 32]))).is_ok());
    }
}

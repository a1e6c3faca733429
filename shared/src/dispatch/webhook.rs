//! Signatures of the webhook destination, as the Standard Webhooks specification (1.0.0)
//! defines them, so a subscriber verifies Conduit's deliveries with any of its libraries:
//! `webhook-id` (the same on every retry of a message), `webhook-timestamp` (Unix seconds
//! of the attempt) and `webhook-signature`, a space-separated list of `v1,` + base64
//! HMAC-SHA256 over `{id}.{timestamp}.{body}`, one per secret in use (two while a
//! rotation overlaps). A secret is `whsec_` + base64 of 24–64 random bytes, shown once.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// The prefix of a shown secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a new secret (the specification asks for 24 to 64).
const SECRET_BYTES: usize = 32;
/// How far a delivery's timestamp may be from the receiver's clock (the libraries' 5
/// minutes), against replays.
pub const TOLERANCE_SECS: i64 = 300;

/// One endpoint secret's key (the decoded bytes; never printed).
pub struct SigningKey(SecretBox<Vec<u8>>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

/// Why a secret or a delivery was refused (never quoting the secret or a signature).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// Not `whsec_` + base64 of 24–64 bytes.
    #[error("a webhook secret is whsec_ followed by base64 of 24 to 64 bytes")]
    BadSecret,
    /// A message id may not contain `.` (it is part of the signed content).
    #[error("a webhook message id must be non-empty and must not contain '.'")]
    BadId,
    /// A header is missing or malformed.
    #[error("the {0} header is missing or malformed")]
    BadHeader(&'static str),
    /// The timestamp is outside the tolerance.
    #[error("the webhook timestamp is more than {TOLERANCE_SECS} s from now")]
    Stale,
    /// No listed signature matches any key.
    #[error("no webhook signature matches")]
    NoMatch,
}

/// A new endpoint secret as shown to its owner once (`whsec_…`), and its key.
pub fn new_secret() -> (SecretString, SigningKey) {
    let mut bytes = vec![0u8; SECRET_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let shown = format!("{SECRET_PREFIX}{}", STANDARD.encode(&bytes));
    (
        SecretString::from(shown),
        SigningKey(SecretBox::new(Box::new(bytes))),
    )
}

/// The key of a shown secret (with or without its `whsec_` prefix).
pub fn parse_secret(shown: &str) -> Result<SigningKey, WebhookError> {
    let encoded = shown.strip_prefix(SECRET_PREFIX).unwrap_or(shown);
    let bytes = STANDARD
        .decode(encoded)
        .map_err(|_| WebhookError::BadSecret)?;
    if !(24..=64).contains(&bytes.len()) {
        return Err(WebhookError::BadSecret);
    }
    Ok(SigningKey(SecretBox::new(Box::new(bytes))))
}

fn check_id(id: &str) -> Result<(), WebhookError> {
    if id.is_empty() || id.contains('.') || id.chars().any(char::is_whitespace) {
        return Err(WebhookError::BadId);
    }
    Ok(())
}

fn mac(key: &SigningKey, id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes a key of any length: this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.0.expose_secret())
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"));
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `webhook-signature` header of one delivery attempt: one `v1,` entry per key, in
/// the order given (the new secret first while a rotation overlaps).
pub fn sign(
    keys: &[&SigningKey],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, WebhookError> {
    check_id(id)?;
    Ok(keys
        .iter()
        .map(|k| {
            let tag = mac(k, id, timestamp, body).finalize().into_bytes();
            format!("v1,{}", STANDARD.encode(tag))
        })
        .collect::<Vec<_>>()
        .join(" "))
}

/// Checks a delivery as a subscriber does (the sandbox's receiver): the timestamp within
/// [`TOLERANCE_SECS`] of `now`, and some `v1` signature of the header matching some key,
/// compared in constant time. Entries of other versions are ignored.
pub fn verify(
    keys: &[&SigningKey],
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now: i64,
) -> Result<(), WebhookError> {
    check_id(id).map_err(|_| WebhookError::BadHeader("webhook-id"))?;
    let at: i64 = timestamp
        .trim()
        .parse()
        .map_err(|_| WebhookError::BadHeader("webhook-timestamp"))?;
    if (now - at).abs() > TOLERANCE_SECS {
        return Err(WebhookError::Stale);
    }
    let given: Vec<Vec<u8>> = signatures
        .split_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|b64| STANDARD.decode(b64).ok())
        .collect();
    if given.is_empty() {
        return Err(WebhookError::BadHeader("webhook-signature"));
    }
    for key in keys {
        let expected = mac(key, id, at, body).finalize().into_bytes();
        if given
            .iter()
            .any(|g| bool::from(g.as_slice().ct_eq(expected.as_slice())))
        {
            return Ok(());
        }
    }
    Err(WebhookError::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The specification's published test vector.
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const AT: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signs_like_the_specifications_test_vector() {
        let key = parse_secret(SECRET).unwrap();
        assert_eq!(sign(&[&key], ID, AT, BODY).unwrap(), SIGNATURE);
        verify(&[&key], ID, "1614265330", SIGNATURE, BODY, AT + 10).unwrap();
        // Without the prefix too, as some dashboards show it.
        let bare = parse_secret(&SECRET[SECRET_PREFIX.len()..]).unwrap();
        assert_eq!(sign(&[&bare], ID, AT, BODY).unwrap(), SIGNATURE);
    }

    #[test]
    fn a_rotation_sends_both_signatures_and_either_key_verifies() {
        let old = parse_secret(SECRET).unwrap();
        let (shown, new) = new_secret();
        assert!(shown.expose_secret().starts_with(SECRET_PREFIX));
        let header = sign(&[&new, &old], ID, AT, BODY).unwrap();
        let entries: Vec<&str> = header.split(' ').collect();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1], SIGNATURE);
        verify(&[&old], ID, "1614265330", &header, BODY, AT).unwrap();
        verify(&[&new], ID, "1614265330", &header, BODY, AT).unwrap();
        // A new secret is a fresh one, and parses back to the same key.
        let again = parse_secret(shown.expose_secret()).unwrap();
        assert_eq!(sign(&[&again], ID, AT, BODY), sign(&[&new], ID, AT, BODY));
        assert_ne!(new_secret().0.expose_secret(), shown.expose_secret());
    }

    #[test]
    fn tampering_replays_and_bad_headers_are_refused() {
        let key = parse_secret(SECRET).unwrap();
        let ts = "1614265330";
        let altered = br#"{"test": 2432232315}"#;
        assert_eq!(
            verify(&[&key], ID, ts, SIGNATURE, altered, AT),
            Err(WebhookError::NoMatch)
        );
        assert_eq!(
            verify(&[&key], "msg_other", ts, SIGNATURE, BODY, AT),
            Err(WebhookError::NoMatch)
        );
        assert_eq!(
            verify(&[&key], ID, ts, SIGNATURE, BODY, AT + TOLERANCE_SECS + 1),
            Err(WebhookError::Stale)
        );
        assert_eq!(
            verify(&[&key], ID, "soon", SIGNATURE, BODY, AT),
            Err(WebhookError::BadHeader("webhook-timestamp"))
        );
        assert_eq!(
            verify(&[&key], ID, ts, "v2,abc", BODY, AT),
            Err(WebhookError::BadHeader("webhook-signature"))
        );
        assert_eq!(
            verify(&[&key], "a.b", ts, SIGNATURE, BODY, AT),
            Err(WebhookError::BadHeader("webhook-id"))
        );
        assert_eq!(sign(&[&key], "a.b", AT, BODY), Err(WebhookError::BadId));
        for bad in ["whsec_not base64!", "whsec_c2hvcnQ=", ""] {
            assert!(matches!(parse_secret(bad), Err(WebhookError::BadSecret)));
        }
        // Errors and the key's Debug never carry the secret.
        assert_eq!(format!("{key:?}"), "SigningKey(..)");
        let text = WebhookError::BadSecret.to_string();
        assert!(!text.contains("MfKQ9r8"));
    }
}

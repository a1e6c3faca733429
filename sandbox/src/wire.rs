//! Small helpers shared by the provider stand-ins: reading credentials from a request and
//! writing JSON answers.

use axum::http::header::{AUTHORIZATION, RETRY_AFTER};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// A JSON response with the given status.
pub(crate) fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// Adds `Retry-After: secs` to a response.
pub(crate) fn with_retry_after(mut response: Response, secs: u64) -> Response {
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(secs));
    response
}

/// Adds `Retry-After: secs` to a 429 or 503 answer (the statuses providers send it with).
pub(crate) fn with_retry_after_on_throttle(response: Response, secs: u64) -> Response {
    if matches!(
        response.status(),
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
        with_retry_after(response, secs)
    } else {
        response
    }
}

/// A header's value as text, if present and printable.
pub(crate) fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

/// The `(user, password)` pair of an `Authorization: Basic …` header.
///
/// The pair is split at the first `:` (RFC 7617), so a Zendesk user such as
/// `admin@acme.test/token` keeps its slash and the token may contain colons.
pub(crate) fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = header(headers, AUTHORIZATION.as_str())?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// The token of an `Authorization: Bearer …` header.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = header(headers, AUTHORIZATION.as_str())?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// The first value of a query-string parameter, percent-decoded.
pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.into_owned())
}

/// A random identifier formatted like a version-4 UUID, as HubSpot's `correlationId`.
pub(crate) fn correlation_id() -> String {
    let n: u128 = rand::random();
    // Set the version (4) and variant (10xx) bits so it parses as a real UUID.
    let n = (n & !(0xf << 76)) | (0x4 << 76);
    let n = (n & !(0x3 << 62)) | (0x2 << 62);
    let hex = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The canonical reason phrase of a status, e.g. "Service Unavailable".
pub(crate) fn reason(status: StatusCode) -> &'static str {
    status.canonical_reason().unwrap_or("Error")
}

/// A reason phrase as a snake_case code, e.g. "service_unavailable".
pub(crate) fn snake_reason(status: StatusCode) -> String {
    reason(status)
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_ascii_lowercase)
        .collect::<Vec<_>>()
        .join("_")
}

/// A reason phrase as a CamelCase code, e.g. "ServiceUnavailable".
pub(crate) fn camel_reason(status: StatusCode) -> String {
    reason(status)
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase()
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn basic_splits_at_first_colon() {
        let encoded = STANDARD.encode("admin@acme.test/token:abc:def");
        let pair = basic_credentials(&auth(&format!("basic {encoded}")));
        assert_eq!(
            pair,
            Some(("admin@acme.test/token".to_owned(), "abc:def".to_owned()))
        );
    }

    #[test]
    fn malformed_basic_is_none() {
        assert_eq!(basic_credentials(&auth("Basic !!!not-base64")), None);
        assert_eq!(basic_credentials(&auth("Basic")), None);
        let no_colon = STANDARD.encode("nocolon");
        assert_eq!(basic_credentials(&auth(&format!("Basic {no_colon}"))), None);
        assert_eq!(basic_credentials(&HeaderMap::new()), None);
    }

    #[test]
    fn bearer_needs_scheme_and_token() {
        assert_eq!(bearer_token(&auth("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&auth("bearer  abc ")), Some("abc"));
        assert_eq!(bearer_token(&auth("Bearer ")), None);
        assert_eq!(bearer_token(&auth("Token abc")), None);
    }

    #[test]
    fn query_param_decodes() {
        assert_eq!(
            query_param(Some("a=1&api_token=x%2By"), "api_token"),
            Some("x+y".to_owned())
        );
        assert_eq!(query_param(Some("a=1"), "api_token"), None);
        assert_eq!(query_param(None, "api_token"), None);
    }

    #[test]
    fn correlation_id_is_uuid_shaped() {
        let id = correlation_id();
        let parts: Vec<&str> = id.split('-').collect();
        assert_eq!(
            parts.iter().map(|p| p.len()).collect::<Vec<_>>(),
            [8, 4, 4, 4, 12]
        );
        assert!(parts[2].starts_with('4'));
        assert!(matches!(&parts[3][..1], "8" | "9" | "a" | "b"));
    }

    #[test]
    fn reason_codes() {
        let status = StatusCode::SERVICE_UNAVAILABLE;
        assert_eq!(snake_reason(status), "service_unavailable");
        assert_eq!(camel_reason(status), "ServiceUnavailable");
        assert_eq!(
            camel_reason(StatusCode::TOO_MANY_REQUESTS),
            "TooManyRequests"
        );
    }
}

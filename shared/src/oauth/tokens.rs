//! What a grant means for a connection: its sealed token secrets, the settings the
//! token response carries (checked against the catalogue's allowed hosts), and when
//! the token must be refreshed or re-checked.

use std::collections::BTreeMap;

use secrecy::{ExposeSecret, SecretString};
use time::{Duration, OffsetDateTime};

use super::client::{Grant, OAuthError};
use crate::connections::{AppSource, TokenState};
use crate::providers::AuthMethod;

/// Refresh this long before expiry at most (tokens living less than twice this are
/// refreshed at half-life). The sweep runs every five minutes, so a token is always
/// refreshed at least five minutes before it expires.
pub const REFRESH_LEAD: Duration = Duration::minutes(10);

/// A token without an expiry (Salesforce) is re-checked by introspection this often.
pub const CHECK_INTERVAL: Duration = Duration::minutes(30);

/// The token secrets of a connection, as sealed.
pub fn secrets(
    grant: &Grant,
    previous_refresh: Option<&SecretString>,
) -> BTreeMap<String, SecretString> {
    let mut out = BTreeMap::new();
    out.insert(
        "access_token".to_owned(),
        SecretString::from(grant.access_token.expose_secret().to_owned()),
    );
    // A provider that sends no refresh token on refresh keeps the old one valid;
    // one that rotates sends the new one, which replaces it.
    if let Some(r) = grant.refresh_token.as_ref().or(previous_refresh) {
        out.insert(
            "refresh_token".to_owned(),
            SecretString::from(r.expose_secret().to_owned()),
        );
    }
    out
}

/// The token lifecycle after a grant or a refresh at `now`.
pub fn state(
    method: &AuthMethod,
    grant: &Grant,
    has_refresh_token: bool,
    app: AppSource,
    now: OffsetDateTime,
    previous: Option<&TokenState>,
) -> TokenState {
    let ttl = grant
        .expires_in
        .filter(|s| *s > 0)
        .map(|s| Duration::seconds(i64::try_from(s.min(10 * 365 * 86_400)).unwrap_or(0)));
    let expires_at = ttl.map(|ttl| now + ttl);
    let mut token = TokenState {
        app,
        expires_at,
        refresh_due: None,
        refreshed_at: Some(now),
        validated_at: Some(now),
        failures: 0,
        generation: previous.map_or(1, |p| p.generation + 1),
        has_refresh_token,
    };
    token.refresh_due = due(method, &token, ttl);
    token
}

/// When the sweep should next look at a token.
pub fn due(
    method: &AuthMethod,
    token: &TokenState,
    ttl: Option<Duration>,
) -> Option<OffsetDateTime> {
    if !token.has_refresh_token {
        return None;
    }
    match (token.expires_at, ttl) {
        (Some(at), Some(ttl)) => {
            Some(at - REFRESH_LEAD.min(Duration::seconds(ttl.whole_seconds() / 2)))
        }
        (Some(at), None) => Some(at - REFRESH_LEAD),
        // No expiry given: check it by introspection when the provider can.
        (None, _) if method.introspect_url.is_some() => token
            .validated_at
            .or(token.refreshed_at)
            .map(|t| t + CHECK_INTERVAL),
        (None, _) => None,
    }
}

/// Whether a caller about to use the token should refresh it first.
pub fn needs_refresh(token: &TokenState, now: OffsetDateTime) -> bool {
    match token.expires_at {
        Some(at) => {
            let lead = token
                .refreshed_at
                .map(|r: OffsetDateTime| {
                    let life: Duration = at - r;
                    Duration::seconds(life.whole_seconds() / 2).min(REFRESH_LEAD)
                })
                .unwrap_or(REFRESH_LEAD);
            now >= at - lead
        }
        None => false,
    }
}

/// The connection settings a token response carries (Salesforce `instance_url`, Zoho
/// and Pipedrive `api_domain`), each an https origin on the catalogue's allowed hosts.
pub fn settings(
    method: &AuthMethod,
    grant: &Grant,
) -> Result<BTreeMap<String, String>, OAuthError> {
    let mut out = BTreeMap::new();
    for setting in &method.token_settings {
        let Some(value) = grant.extra.get(&setting.from).and_then(|v| v.as_str()) else {
            continue;
        };
        let origin = allowed_origin(value, &setting.allowed_hosts).ok_or_else(|| {
            OAuthError::Malformed(format!(
                "the token response's {} is not an allowed host",
                setting.from
            ))
        })?;
        out.insert(setting.name.clone(), origin);
    }
    Ok(out)
}

/// `https://host` when `value` is an https URL (no credentials, default port) whose
/// host matches one of `allowed` (`*.example.com` matches any subdomain).
pub fn allowed_origin(value: &str, allowed: &[String]) -> Option<String> {
    let url = url::Url::parse(value).ok()?;
    if url.scheme() != "https"
        || !url.username().is_empty()
        || url.password().is_some()
        || url.port().is_some()
    {
        return None;
    }
    let host = url.host_str()?.to_ascii_lowercase();
    let ok = allowed
        .iter()
        .any(|pattern| match pattern.strip_prefix("*.") {
            Some(suffix) => host
                .strip_suffix(suffix)
                .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
            None => host == *pattern,
        });
    ok.then(|| format!("https://{host}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_hosts_are_exact_or_subdomains() {
        let sf = vec!["*.salesforce.com".to_owned(), "*.force.com".to_owned()];
        assert_eq!(
            allowed_origin("https://acme.my.salesforce.com/", &sf).as_deref(),
            Some("https://acme.my.salesforce.com")
        );
        assert!(allowed_origin("https://salesforce.com", &sf).is_none());
        assert!(allowed_origin("https://evil-salesforce.com", &sf).is_none());
        assert!(allowed_origin("https://acme.salesforce.com.evil.io", &sf).is_none());
        assert!(allowed_origin("http://acme.my.salesforce.com", &sf).is_none());
        assert!(allowed_origin("https://u:p@acme.my.salesforce.com", &sf).is_none());
        assert!(allowed_origin("https://acme.my.salesforce.com:8443", &sf).is_none());
        let zoho = vec!["www.zohoapis.eu".to_owned()];
        assert!(allowed_origin("https://www.zohoapis.eu", &zoho).is_some());
        assert!(allowed_origin("https://x.www.zohoapis.eu", &zoho).is_none());
    }

    #[test]
    fn refresh_comes_before_expiry() {
        let now = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
        let token = TokenState {
            app: AppSource::Platform,
            expires_at: Some(now + Duration::minutes(30)),
            refresh_due: None,
            refreshed_at: Some(now),
            validated_at: Some(now),
            failures: 0,
            generation: 1,
            has_refresh_token: true,
        };
        assert!(!needs_refresh(&token, now + Duration::minutes(19)));
        assert!(needs_refresh(&token, now + Duration::minutes(20)));
        // A one-minute token is refreshed at half-life.
        let short = TokenState {
            expires_at: Some(now + Duration::minutes(1)),
            ..token
        };
        assert!(!needs_refresh(&short, now + Duration::seconds(29)));
        assert!(needs_refresh(&short, now + Duration::seconds(30)));
    }
}

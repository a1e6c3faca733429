//! Calls a provider with a connection's credentials: builds the URL from the
//! catalogue's templates and the connection's settings, puts the credentials on the
//! request as the catalogue says, and runs the provider's "who am I" check.

use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{HeaderName, HeaderValue};
use url::Url;

use crate::domain::Identity;
use crate::providers::{Apply, AuthMethod, FieldType, Fields, Provider, render};

/// The largest check response read.
const MAX_CHECK_BODY: usize = 1024 * 1024;

/// What a credentials check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CheckOutcome {
    /// The provider accepted the credentials; this is who they act as.
    Verified(Identity),
    /// The provider refused the credentials (401/403/404 on the check endpoint).
    Rejected {
        /// The provider's status.
        status: u16,
    },
    /// The provider is rate limiting; try again later.
    RateLimited {
        /// Seconds to wait, when the provider said.
        retry_after: Option<u64>,
    },
    /// The provider could not be reached or failed (5xx, timeout, bad body).
    Unavailable(String),
}

/// A connection's view of its provider.
pub struct Connector<'a> {
    /// The provider.
    pub provider: &'a Provider,
    /// The auth method in use.
    pub method: &'a AuthMethod,
    /// The connection's settings and secrets.
    pub fields: &'a Fields,
    /// Local use only: where catalogue hosts are sent instead.
    pub origin_override: Option<&'a Url>,
}

/// A URL could not be built from the templates (a field is missing).
#[derive(Debug, thiserror::Error)]
#[error("cannot build the provider URL: {0}")]
pub struct UrlBuildError(String);

impl Connector<'_> {
    /// Builds a URL from a catalogue template (an endpoint of the method) with this
    /// connection's values; catalogue hosts go to the sandbox when configured so.
    pub fn endpoint(&self, template: &str) -> Result<String, UrlBuildError> {
        self.render(template)
    }

    fn render(&self, template: &str) -> Result<String, UrlBuildError> {
        let url = render(template, |name| self.fields.value(name))
            .map_err(|e| UrlBuildError(e.to_string()))?;
        // Catalogue hosts may be redirected to the sandbox by deployment config; a URL
        // that starts with a tenant-supplied URL field is the tenant's and never is.
        let tenant_url = template
            .strip_prefix('{')
            .and_then(|rest| rest.split('}').next())
            .and_then(|name| self.method.field(name))
            .is_some_and(|f| f.kind == FieldType::Url);
        Ok(if tenant_url {
            url
        } else {
            crate::egress::rewrite_origin(&url, self.origin_override)
        })
    }

    /// The API base URL for this connection.
    pub fn api_base(&self) -> Result<String, UrlBuildError> {
        self.render(self.method.api_base(self.provider))
    }

    /// A URL for `path` under the API base.
    pub fn url(&self, path: &str) -> Result<String, UrlBuildError> {
        Ok(format!(
            "{}{}",
            self.api_base()?.trim_end_matches('/'),
            path
        ))
    }

    /// The check endpoint's URL.
    pub fn check_url(&self) -> Result<String, UrlBuildError> {
        let check = &self.method.check;
        if check.absolute {
            self.render(&check.path)
        } else {
            let path = render(&check.path, |name| self.fields.value(name))
                .map_err(|e| UrlBuildError(e.to_string()))?;
            self.url(&path)
        }
    }

    /// Puts the credentials on a request (api_key and basic methods).
    pub fn authorize(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::RequestBuilder, UrlBuildError> {
        let fill = |t: &str| {
            render(t, |name| self.fields.value(name)).map_err(|e| UrlBuildError(e.to_string()))
        };
        let sensitive = |v: String| -> Result<HeaderValue, UrlBuildError> {
            let mut v = HeaderValue::from_str(&v)
                .map_err(|_| UrlBuildError("credential is not a valid header value".into()))?;
            v.set_sensitive(true);
            Ok(v)
        };
        Ok(match &self.method.apply {
            Some(Apply::Basic { username, password }) => {
                let pair = format!("{}:{}", fill(username)?, fill(password)?);
                let value = format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                );
                req.header(reqwest::header::AUTHORIZATION, sensitive(value)?)
            }
            Some(Apply::Bearer(token)) => req.header(
                reqwest::header::AUTHORIZATION,
                sensitive(format!("Bearer {}", fill(token)?))?,
            ),
            Some(Apply::Header { name, value }) => {
                let name = HeaderName::from_bytes(fill(name)?.as_bytes())
                    .map_err(|_| UrlBuildError("invalid header name".into()))?;
                req.header(name, sensitive(fill(value)?)?)
            }
            Some(Apply::Query { name, value }) => req.query(&[(fill(name)?, fill(value)?)]),
            // OAuth methods send the access token as a bearer unless they say otherwise.
            None if self.method.kind == crate::providers::AuthType::Oauth2 => req.header(
                reqwest::header::AUTHORIZATION,
                sensitive(format!("Bearer {}", fill("{access_token}")?))?,
            ),
            None => req,
        })
    }

    /// Tests the credentials against the provider's check endpoint.
    pub async fn check(&self, http: &crate::egress::Egress) -> CheckOutcome {
        self.check_detail(http).await.0
    }

    /// Like [`Connector::check`], also reading the granted scopes where the check
    /// response lists them (HubSpot's token info).
    pub async fn check_detail(
        &self,
        http: &crate::egress::Egress,
    ) -> (CheckOutcome, Option<Vec<String>>) {
        let mut scopes = None;
        let outcome = self.check_inner(http, &mut scopes).await;
        (outcome, scopes)
    }

    async fn check_inner(
        &self,
        http: &crate::egress::Egress,
        scopes: &mut Option<Vec<String>>,
    ) -> CheckOutcome {
        let url = match self.check_url() {
            Ok(u) => u,
            Err(e) => return CheckOutcome::Unavailable(e.to_string()),
        };
        let req = match self.authorize(
            http.get(&url)
                .header(reqwest::header::ACCEPT, "application/json"),
        ) {
            Ok(r) => r,
            Err(e) => return CheckOutcome::Unavailable(e.to_string()),
        };
        let resp = match http.send(req).await {
            Ok(r) => r,
            // The URL may carry credentials (query auth): never let it into messages.
            Err(e) if e.is_timeout() => {
                return CheckOutcome::Unavailable("provider timed out".into());
            }
            Err(e) => {
                return CheckOutcome::Unavailable(format!(
                    "provider unreachable: {}",
                    e.without_url()
                ));
            }
        };
        let status = resp.status().as_u16();
        match status {
            200..=299 => {}
            401 | 403 | 404 => return CheckOutcome::Rejected { status },
            429 => {
                crate::metrics::count(
                    crate::metrics::Metric::ProviderRateLimited,
                    &self.provider.id,
                    None,
                );
                let retry_after = resp
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse().ok());
                return CheckOutcome::RateLimited { retry_after };
            }
            300..=399 => {
                return CheckOutcome::Unavailable(format!("provider redirected ({status})"));
            }
            _ => return CheckOutcome::Unavailable(format!("provider answered {status}")),
        }
        if self.method.check.format.as_deref() == Some("xml") {
            return CheckOutcome::Verified(Identity::default());
        }
        let body = match read_capped(resp, MAX_CHECK_BODY).await {
            Ok(b) => b,
            Err(e) => return CheckOutcome::Unavailable(e),
        };
        let json: serde_json::Value = match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(_) => {
                return CheckOutcome::Unavailable(
                    "provider answered a body that is not JSON".into(),
                );
            }
        };
        let p = &self.method.check.identity;
        let pick = |ptr: &Option<String>| {
            ptr.as_deref()
                .and_then(|ptr| json.pointer(ptr))
                .and_then(scalar)
        };
        *scopes = p
            .scopes
            .as_deref()
            .and_then(|ptr| json.pointer(ptr))
            .map(scope_list);
        if self.method.check.require_id && pick(&p.id).is_none() {
            return CheckOutcome::Rejected { status };
        }
        CheckOutcome::Verified(Identity {
            id: pick(&p.id),
            email: pick(&p.email),
            name: pick(&p.name),
            account: pick(&p.account),
        })
    }

    /// A key naming the provider account a connection acts as, to keep one
    /// connection per account: SHA-256 (hex) over the length-prefixed auth method, API
    /// base and account (or user) id. Parts are never joined by a separator or cut, so
    /// two different accounts never share a key whatever their parts hold, and the key
    /// has one short length (DynamoDB caps sort keys at 1,024 bytes).
    pub fn account_key(&self, identity: &Identity) -> Option<String> {
        let (base, who) = self.account_parts(identity)?;
        Some(hashed_key(&[self.method.id.as_str(), base.as_str(), who]))
    }

    /// The key markers written before [`Connector::account_key`] used (parts joined by
    /// `|`, cut at 512 characters), read only so an account connected then still
    /// counts as taken; a connection's marker moves to the new key when it is saved.
    pub fn legacy_account_key(&self, identity: &Identity) -> Option<String> {
        let (base, who) = self.account_parts(identity)?;
        Some(
            format!("{}|{}|{}", self.method.id, base, who)
                .chars()
                .take(512)
                .collect(),
        )
    }

    fn account_parts<'i>(&self, identity: &'i Identity) -> Option<(String, &'i str)> {
        let who = identity.account.as_ref().or(identity.id.as_ref())?;
        let base = self.api_base().ok()?;
        let base = base
            .split("://")
            .nth(1)
            .unwrap_or(&base)
            .to_ascii_lowercase();
        Some((base.trim_end_matches('/').to_owned(), who.as_str()))
    }
}

/// Marks account keys of the hashed form (legacy keys never start with it: they start
/// with an auth method id followed by `|`).
const ACCOUNT_KEY_VERSION: &str = "v2.";

/// Scopes as a provider lists them: an array of strings or one space-separated string.
fn scope_list(v: &serde_json::Value) -> Vec<String> {
    match v {
        serde_json::Value::Array(items) => items
            .iter()
            .filter_map(|s| s.as_str())
            .take(200)
            .map(|s| s.chars().take(256).collect())
            .collect(),
        serde_json::Value::String(s) => s
            .split_whitespace()
            .take(200)
            .map(|s| s.chars().take(256).collect())
            .collect(),
        _ => Vec::new(),
    }
}

fn scalar(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.chars().take(256).collect()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

async fn read_capped(mut resp: reqwest::Response, cap: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(20), resp.chunk()).await {
            Err(_) => return Err("provider timed out".into()),
            Ok(Err(e)) => return Err(format!("provider body failed: {}", e.without_url())),
            Ok(Ok(None)) => return Ok(body),
            Ok(Ok(Some(chunk))) => {
                if body.len() + chunk.len() > cap {
                    return Err("provider body too large".into());
                }
                body.extend_from_slice(&chunk);
            }
        }
    }
}

/// The account key of a personal connection ([`crate::providers::AuthMethod::personal`]):
/// one per user, auth method and kind, whichever provider account the user signs in
/// with (two users may connect one shared mailbox; one user has one Gmail).
pub fn personal_key(method: &str, owner: &crate::domain::UserId, kind: Option<&str>) -> String {
    hashed_key(&["personal", method, kind.unwrap_or(""), owner.as_str()])
}

/// SHA-256 (hex) over length-prefixed parts, versioned: never ambiguous, one short
/// length whatever the parts hold.
fn hashed_key(parts: &[&str]) -> String {
    use sha2::Digest as _;
    let mut hash = sha2::Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part.as_bytes());
    }
    let hex: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("{ACCOUNT_KEY_VERSION}{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Catalogue;

    fn key(base: &str, account: &str) -> String {
        let catalogue = Catalogue::get().unwrap();
        let provider = catalogue.provider("custom_api").unwrap();
        let method = provider.auth_method(Some("bearer")).unwrap();
        let fields = Fields {
            public: [("base_url".to_owned(), base.to_owned())].into(),
            secret: Default::default(),
        };
        let connector = Connector {
            provider,
            method,
            fields: &fields,
            origin_override: None,
        };
        let identity = Identity {
            account: Some(account.to_owned()),
            ..Default::default()
        };
        connector.account_key(&identity).unwrap()
    }

    #[test]
    fn account_keys_are_unambiguous_and_short() {
        // A separator inside a part moves no boundary.
        assert_ne!(
            key("https://api.example.com/k1|x", "y"),
            key("https://api.example.com/k1", "x|y")
        );
        // Parts past the old 512-character cut still count.
        let long = format!("https://api.example.com/{}", "a".repeat(600));
        assert_ne!(key(&long, "one"), key(&long, "two"));
        // 400 emoji (1,600 bytes) still make a key that fits a sort key.
        let emoji = "😀".repeat(400);
        let k = key("https://api.example.com", &emoji);
        assert!(crate::store::keys::account_marker("custom_api", &k).len() < 128);
        // Stable: the same account is the same key.
        assert_eq!(
            key("https://API.example.com/", "7"),
            key("https://api.example.com", "7")
        );
    }
}

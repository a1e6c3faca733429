//! The one way every dialect reaches its CRM: a request under the connection's API base,
//! with the token from the token lifecycle ([`Tokens::credentials`], a refresh after a
//! 401) and a slot from the connection's shared [`Budget`].
//!
//! A 429 holds the budget off for the provider's `Retry-After` and retries the same
//! request, so a rate-limit storm slows a sync down and never fails it (unless the
//! dialect says the answer means a long exhaustion, such as a daily limit, or the
//! `Retry-After` is 15 minutes or more — a spent daily budget); 5xx answers,
//! timeouts and unreadable success bodies are retried with jittered backoff, then
//! reported as transient (the message is retried later from its checkpoint). Refusals
//! are classified by the dialect's [`Wire`] hooks: missing scopes, exhausted allowance,
//! the human message of the provider's error body.

use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::CrmError;
use crate::domain::{ConnectionId, TenantId};
use crate::oauth::lifecycle::{Credentials, TokenError, Tokens};
use crate::sync::budget::{Budget, BudgetError};

/// How many times one request is tried on 5xx / network failures.
const ATTEMPTS: u32 = 4;
/// How many 429s one request sits out before giving up (then: transient).
const RATE_LIMIT_RETRIES: u32 = 30;
/// How long credentials are reused before the lifecycle is asked again.
const CREDENTIALS_TTL: Duration = Duration::from_secs(60);
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);
/// A 429's `Retry-After` from which on the allowance counts as exhausted.
const LONG_RETRY_AFTER: Duration = Duration::from_secs(15 * 60);

/// What a 429 means, by the dialect's reading of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimited {
    /// A short window is full: wait and retry.
    Wait,
    /// A long allowance (a day's) is used up: retrying now is pointless.
    Exhausted,
}

/// How a CRM's wire answers are read: the parts of the transport that differ by CRM.
pub trait Wire: Send + Sync {
    /// The catalogue provider (metrics).
    fn provider(&self) -> &'static str;

    /// The response header reporting the provider's usage, if any (kept as
    /// [`Transport::usage`]).
    fn usage_header(&self) -> Option<&'static str> {
        None
    }

    /// What a 429 without `Retry-After` means, from its body.
    fn rate_limited(&self, _body: &str) -> RateLimited {
        RateLimited::Wait
    }

    /// A refusal that is not a plain [`CrmError::Rejected`]: missing scopes, an
    /// exhausted allowance. `body` is the parsed JSON, when it is JSON.
    fn refusal(&self, status: StatusCode, body: Option<&Value>, text: &str) -> Option<CrmError>;

    /// The human part of an error body (never a credential), clipped.
    fn error_message(&self, body: &Value) -> String;

    /// Whether a non-2xx answer is to be read rather than refused (HubSpot's 207 for a
    /// batch with some failures; Zoho's 400 whose `data` holds every record's
    /// failure).
    fn answers(&self, _status: StatusCode, _body: Option<&Value>) -> bool {
        false
    }
}

/// Where a request goes.
#[derive(Debug, Clone, Copy)]
pub enum Target<'p> {
    /// A path under the connection's API base.
    Api(&'p str),
    /// A path from the API base's origin and root (Salesforce's `nextRecordsUrl`,
    /// `/services/data/…`): it must start with `root`.
    Root {
        /// The path, as the provider gave it.
        path: &'p str,
        /// The segment the API base and the path share (`/services/`).
        root: &'static str,
    },
    /// An absolute URL the provider gave (OData `@odata.nextLink` / `deltaLink`): it
    /// must be under the API base (its origin and path), or it is not followed.
    Link(&'p str),
}

/// `scheme://host[:port]` of a URL.
fn origin(url: &str) -> Option<&str> {
    let after_scheme = url.find("://")? + 3;
    let end = url[after_scheme..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| after_scheme + i);
    Some(&url[..end])
}

/// Whether `url` is under the API base `base` (same origin, and the base's path a
/// prefix of the URL's path).
fn under(url: &str, base: &str) -> bool {
    let base = base.trim_end_matches('/');
    let (Some(url_origin), Some(base_origin)) = (origin(url), origin(base)) else {
        return false;
    };
    if !url_origin.eq_ignore_ascii_case(base_origin) {
        return false;
    }
    let (url_rest, base_rest) = (&url[url_origin.len()..], &base[base_origin.len()..]);
    url_rest
        .strip_prefix(base_rest)
        .is_some_and(|tail| tail.is_empty() || tail.starts_with(['/', '?']))
}

/// A request body.
#[derive(Clone, Copy)]
enum Payload<'b> {
    None,
    Json(&'b Value),
    Raw {
        content_type: &'b str,
        body: &'b str,
    },
    /// No body, and the answer read as text (CSV results).
    Text,
}

/// What a call came to.
enum Answered {
    Json(Value),
    Raw(RawAnswer),
}

/// A successful answer read as text ([`Transport::call_raw`]).
#[derive(Debug, Clone)]
pub struct RawAnswer {
    /// HTTP status (2xx).
    pub status: u16,
    /// The `Content-Type` header (empty when absent).
    pub content_type: String,
    /// The body.
    pub text: String,
    /// The answer's headers (Salesforce's `Sforce-Locator` of a results set).
    pub headers: reqwest::header::HeaderMap,
}

/// One connection's CRM transport.
pub struct Transport<'a> {
    wire: &'static dyn Wire,
    tenant: TenantId,
    connection: ConnectionId,
    tokens: Tokens<'a>,
    creds: Option<(Credentials, Instant)>,
    budget: Budget,
    /// Requests sent (including retries).
    pub requests: u64,
    /// 429s sat out.
    pub rate_limited: u64,
    /// The provider's latest usage report ([`Wire::usage_header`]).
    pub usage: Option<String>,
}

fn jitter(base: Duration) -> Duration {
    let ms = base.as_millis() as u64;
    Duration::from_millis(ms / 2 + rand::thread_rng().gen_range(0..=ms / 2 + 1))
}

/// At most 300 characters of a provider's text.
pub fn clip(s: &str) -> String {
    s.chars().take(300).collect()
}

impl From<BudgetError> for CrmError {
    fn from(e: BudgetError) -> Self {
        Self::Transient(e.to_string())
    }
}

impl<'a> Transport<'a> {
    /// A transport for `connection` of `tenant`.
    pub fn new(
        wire: &'static dyn Wire,
        tokens: Tokens<'a>,
        tenant: TenantId,
        connection: ConnectionId,
        budget: Budget,
    ) -> Self {
        Self {
            wire,
            tenant,
            connection,
            tokens,
            creds: None,
            budget,
            requests: 0,
            rate_limited: 0,
            usage: None,
        }
    }

    /// The connection this transport serves.
    pub fn connection(&self) -> &ConnectionId {
        &self.connection
    }

    /// The connection's current credentials (reused for a minute).
    pub async fn credentials(&mut self) -> Result<Credentials, CrmError> {
        if let Some((creds, at)) = self.creds.take()
            && at.elapsed() < CREDENTIALS_TTL
        {
            return Ok(creds);
        }
        self.tokens
            .credentials(&self.tenant, &self.connection)
            .await
            .map_err(token_error)
    }

    /// Gives credentials back for reuse.
    pub fn keep(&mut self, creds: Credentials) {
        self.creds = Some((creds, Instant::now()));
    }

    /// One API call, JSON in and out (`Null` for an empty answer).
    pub async fn call(
        &mut self,
        method: Method,
        target: Target<'_>,
        query: &[(&str, String)],
        body: Option<&Value>,
        headers: &[(&str, String)],
    ) -> Result<Value, CrmError> {
        let payload = body.map_or(Payload::None, Payload::Json);
        match self
            .exchange(method, target, query, payload, headers)
            .await?
        {
            Answered::Json(v) => Ok(v),
            Answered::Raw(_) => Err(CrmError::Internal("a raw answer to a JSON call".into())),
        }
    }

    /// One API call with a body of another content type (OData `$batch`), answered as
    /// text: the same token, budget, 429 and retry handling as [`Transport::call`]; a
    /// 2xx answer is returned whatever its content (the caller parses it), a refusal is
    /// classified as for JSON calls.
    pub async fn call_raw(
        &mut self,
        method: Method,
        target: Target<'_>,
        content_type: &str,
        body: &str,
        headers: &[(&str, String)],
    ) -> Result<RawAnswer, CrmError> {
        let payload = Payload::Raw { content_type, body };
        match self.exchange(method, target, &[], payload, headers).await? {
            Answered::Raw(a) => Ok(a),
            Answered::Json(_) => Err(CrmError::Internal("a JSON answer to a raw call".into())),
        }
    }

    /// One call without a body whose 2xx answer is read as text (CSV results), with
    /// the same token, budget, 429 and retry handling as [`Transport::call`].
    pub async fn call_text(
        &mut self,
        method: Method,
        target: Target<'_>,
        query: &[(&str, String)],
        headers: &[(&str, String)],
    ) -> Result<RawAnswer, CrmError> {
        match self
            .exchange(method, target, query, Payload::Text, headers)
            .await?
        {
            Answered::Raw(a) => Ok(a),
            Answered::Json(_) => Err(CrmError::Internal("a JSON answer to a text call".into())),
        }
    }

    async fn exchange(
        &mut self,
        method: Method,
        target: Target<'_>,
        query: &[(&str, String)],
        payload: Payload<'_>,
        headers: &[(&str, String)],
    ) -> Result<Answered, CrmError> {
        let mut failures = 0u32;
        let mut limited = 0u32;
        loop {
            self.budget.acquire().await?;
            let mut creds = self.credentials().await?;
            self.requests += 1;
            let sent = self
                .tokens
                .send_using(&mut creds, |connector, http| {
                    let url = match target {
                        Target::Api(path) => connector.url(path).map_err(|e| e.to_string())?,
                        Target::Root { path, root } => {
                            if !path.starts_with(root) {
                                return Err("a paging locator outside the API".to_owned());
                            }
                            let base = connector.api_base().map_err(|e| e.to_string())?;
                            let origin = base.find(root).map_or(base.as_str(), |i| &base[..i]);
                            format!("{origin}{path}")
                        }
                        Target::Link(url) => {
                            let base = connector.api_base().map_err(|e| e.to_string())?;
                            // The link names the provider's host; locally it goes where
                            // the API base goes.
                            let url = crate::egress::rewrite_origin(url, connector.origin_override);
                            if !under(&url, &base) {
                                return Err("a link outside the API".to_owned());
                            }
                            url
                        }
                    };
                    let mut req = http.request(method.clone(), url).timeout(REQUEST_TIMEOUT);
                    if !headers
                        .iter()
                        .any(|(n, _)| n.eq_ignore_ascii_case("accept"))
                    {
                        req = req.header(reqwest::header::ACCEPT, "application/json");
                    }
                    for (name, value) in headers {
                        req = req.header(*name, value.as_str());
                    }
                    if !query.is_empty() {
                        req = req.query(query);
                    }
                    match payload {
                        Payload::None | Payload::Text => {}
                        Payload::Json(body) => req = req.json(body),
                        Payload::Raw { content_type, body } => {
                            req = req
                                .header(reqwest::header::CONTENT_TYPE, content_type)
                                .body(body.to_owned());
                        }
                    }
                    Ok(req)
                })
                .await;
            let resp = match sent {
                Ok(resp) => {
                    self.keep(creds);
                    resp
                }
                Err(TokenError::Unavailable(why)) => {
                    self.keep(creds);
                    failures += 1;
                    if failures >= ATTEMPTS {
                        return Err(CrmError::Transient(why));
                    }
                    tokio::time::sleep(jitter(Duration::from_millis(250 << failures))).await;
                    continue;
                }
                Err(e) => return Err(token_error(e)),
            };
            let status = resp.status();
            if let Some(usage) = self
                .wire
                .usage_header()
                .and_then(|h| resp.headers().get(h))
                .and_then(|v| v.to_str().ok())
            {
                self.usage = Some(clip(usage));
            }
            let answer_headers = resp.headers().clone();
            let content_type = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let text = match resp.text().await {
                Ok(t) => t,
                Err(e) => {
                    failures += 1;
                    if failures >= ATTEMPTS {
                        return Err(CrmError::Transient(format!(
                            "reading the answer: {}",
                            e.without_url()
                        )));
                    }
                    tokio::time::sleep(jitter(Duration::from_millis(250 << failures))).await;
                    continue;
                }
            };
            if status == StatusCode::TOO_MANY_REQUESTS {
                self.rate_limited += 1;
                crate::metrics::count(
                    crate::metrics::Metric::ProviderRateLimited,
                    self.wire.provider(),
                    Some(self.connection.as_str()),
                );
                limited += 1;
                if limited > RATE_LIMIT_RETRIES {
                    return Err(CrmError::Transient("rate limited for too long".into()));
                }
                let wait = match retry_after {
                    // A wait this long is a spent daily allowance (Pipedrive's token
                    // budget answers until midnight UTC): sitting it out is pointless.
                    Some(s) if s >= LONG_RETRY_AFTER.as_secs() => {
                        return Err(CrmError::LimitExhausted(format!(
                            "the provider's allowance is spent for {} more minutes",
                            s.div_ceil(60)
                        )));
                    }
                    Some(s) => Duration::from_secs(s.clamp(1, 60)),
                    None if self.wire.rate_limited(&text) == RateLimited::Exhausted => {
                        return Err(CrmError::LimitExhausted(
                            "the provider's daily request limit is reached".into(),
                        ));
                    }
                    None => Duration::from_secs(1),
                };
                self.budget.hold_off(jitter(wait) + wait / 2).await?;
                continue;
            }
            if status.is_server_error() {
                failures += 1;
                if failures >= ATTEMPTS {
                    return Err(CrmError::Transient(format!(
                        "{} after {ATTEMPTS} attempts",
                        status.as_u16()
                    )));
                }
                let wait = retry_after
                    .map(|s| Duration::from_secs(s.min(30)))
                    .unwrap_or(Duration::from_millis(250 << failures));
                tokio::time::sleep(jitter(wait)).await;
                continue;
            }
            if status.is_success() && matches!(payload, Payload::Raw { .. } | Payload::Text) {
                return Ok(Answered::Raw(RawAnswer {
                    status: status.as_u16(),
                    content_type,
                    text,
                    headers: answer_headers,
                }));
            }
            // 204 and 304 (nothing modified since): no records.
            if status == StatusCode::NO_CONTENT
                || status == StatusCode::NOT_MODIFIED
                || (status.is_success() && text.trim().is_empty())
            {
                return Ok(Answered::Json(Value::Null));
            }
            let parsed: Result<Value, _> = serde_json::from_str(&text);
            if status.is_success() {
                return match parsed {
                    Ok(v) => Ok(Answered::Json(v)),
                    Err(_) => {
                        failures += 1;
                        if failures >= ATTEMPTS {
                            return Err(CrmError::Malformed("the answer is not JSON".into()));
                        }
                        continue;
                    }
                };
            }
            if let Some(refused) = self.wire.refusal(status, parsed.as_ref().ok(), &text) {
                return Err(refused);
            }
            let message = parsed
                .as_ref()
                .map(|v| self.wire.error_message(v))
                .unwrap_or_else(|_| clip(&text));
            if status == StatusCode::UNAUTHORIZED {
                return Err(CrmError::Auth(message));
            }
            if self.wire.answers(status, parsed.as_ref().ok()) {
                return parsed
                    .map(Answered::Json)
                    .map_err(|_| CrmError::Malformed(format!("{} without JSON", status.as_u16())));
            }
            return Err(CrmError::Rejected {
                status: status.as_u16(),
                message,
            });
        }
    }
}

/// What a token lifecycle failure means for a CRM call.
pub fn token_error(e: TokenError) -> CrmError {
    match e {
        TokenError::NotFound => CrmError::Auth("the connection no longer exists".into()),
        TokenError::NeedsReauth => {
            CrmError::Auth("the connection needs to be re-authorised".into())
        }
        TokenError::Unusable(why) => CrmError::Auth(why.to_owned()),
        TokenError::Unavailable(why) => CrmError::Transient(why),
        TokenError::Changed => CrmError::Transient("the connection changed".into()),
        TokenError::Internal(why) => CrmError::Internal(why),
        TokenError::Store(e) => CrmError::Store(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_scheme_host_and_port() {
        assert_eq!(
            origin("https://acme.crm.dynamics.com/api/data/v9.2/contacts?$x=1"),
            Some("https://acme.crm.dynamics.com")
        );
        assert_eq!(
            origin("http://127.0.0.1:8080"),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(origin("https://a.b?q"), Some("https://a.b"));
        assert_eq!(origin("/relative/path"), None);
        assert_ne!(
            origin("https://acme.crm.dynamics.com.evil.test/api"),
            origin("https://acme.crm.dynamics.com/api")
        );
    }

    #[test]
    fn links_are_followed_only_under_the_api_base() {
        let base = "https://acme.crm.dynamics.com/api/data/v9.2";
        assert!(under(
            "https://acme.crm.dynamics.com/api/data/v9.2/contacts?$deltatoken=1",
            base
        ));
        assert!(under("https://ACME.crm.dynamics.com/api/data/v9.2", base));
        assert!(!under(
            "https://acme.crm.dynamics.com/api/data/v9.21/x",
            base
        ));
        assert!(!under("https://acme.crm.dynamics.com/other", base));
        assert!(!under("https://evil.test/api/data/v9.2/contacts", base));
        // Locally every host goes to one origin: the host is in the path.
        let local = "http://127.0.0.1:9/acme.crm.dynamics.com/api/data/v9.2";
        assert!(under(
            "http://127.0.0.1:9/acme.crm.dynamics.com/api/data/v9.2/contacts",
            local
        ));
        assert!(!under(
            "http://127.0.0.1:9/other.crm.dynamics.com/api/data/v9.2/contacts",
            local
        ));
    }
}

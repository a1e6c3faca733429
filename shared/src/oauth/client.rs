//! Talking to a provider's OAuth endpoints: the authorize URL, the code exchange and
//! the refresh (through the `oauth2` crate), revocation and introspection — over our
//! SSRF-guarded HTTP client, which never follows redirects.
//!
//! Provider answers are classified into what the token lifecycle acts on: the grant is
//! gone ([`OAuthError::Grant`]), the app is wrong ([`OAuthError::Client`]), try again
//! later ([`OAuthError::Transient`]). Error messages hold codes, never bodies or tokens.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    ExtraTokenFields, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, RefreshToken,
    RequestTokenError, Scope, StandardRevocableToken, StandardTokenResponse, TokenResponse,
    TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::connections::AppSource;
use crate::connector::Connector;
use crate::egress::Egress;
use crate::providers::{AuthMethod, ClientAuth, Fields, Provider, RevokeStyle};

/// The largest token-endpoint body read.
const MAX_BODY: usize = 64 * 1024;
/// How long one token-endpoint call may take.
const TIMEOUT: Duration = Duration::from_secs(15);

/// The OAuth client app a flow or a refresh uses.
pub struct ClientApp {
    /// The tenant's own app or the platform's.
    pub source: AppSource,
    /// Client id.
    pub client_id: String,
    /// Client secret.
    pub client_secret: SecretString,
    /// The redirect URI registered with the provider, when the app says.
    pub redirect_uri: Option<String>,
    /// Scopes the app asks for instead of the catalogue's.
    pub scopes: Option<Vec<String>>,
    /// App-level settings (a custom provider's endpoints, client authentication).
    pub settings: BTreeMap<String, String>,
}

impl std::fmt::Debug for ClientApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientApp")
            .field("source", &self.source)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl ClientApp {
    /// How this app authenticates at the token endpoint: the app's setting (custom
    /// providers) or the catalogue's.
    pub fn client_auth(&self, method: &AuthMethod) -> ClientAuth {
        match self.settings.get("client_auth").map(String::as_str) {
            Some("request_body") => ClientAuth::RequestBody,
            Some("basic") => ClientAuth::Basic,
            _ => method.client_auth.unwrap_or(ClientAuth::RequestBody),
        }
    }
}

/// What a token endpoint granted.
pub struct Grant {
    /// The access token.
    pub access_token: SecretString,
    /// The refresh token, when one was sent.
    pub refresh_token: Option<SecretString>,
    /// Seconds until the access token expires, when the provider said.
    pub expires_in: Option<u64>,
    /// Granted scopes, when the provider said.
    pub scopes: Option<Vec<String>>,
    /// The response's other fields (instance_url, api_domain, hub_id, id_token, …).
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl std::fmt::Debug for Grant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grant")
            .field("expires_in", &self.expires_in)
            .field("has_refresh_token", &self.refresh_token.is_some())
            .field("extra", &self.extra.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Why an OAuth call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OAuthError {
    /// The provider no longer honours the grant (invalid_grant, revoked, expired code).
    #[error("the provider rejected the grant ({code})")]
    Grant {
        /// The provider's error code.
        code: String,
    },
    /// The provider rejected the client app (invalid_client, unauthorized_client).
    #[error("the provider rejected the OAuth app ({code})")]
    Client {
        /// The provider's error code.
        code: String,
    },
    /// The provider refused the request for another reason (invalid_scope, …).
    #[error("the provider refused the request ({code})")]
    Refused {
        /// The provider's error code.
        code: String,
    },
    /// Try again later: 5xx, 429, timeout, network failure.
    #[error("the provider is unavailable: {reason}")]
    Transient {
        /// What happened.
        reason: String,
        /// Seconds to wait, when the provider said.
        retry_after: Option<u64>,
    },
    /// The provider answered something that is not an OAuth response.
    #[error("the provider's answer was not understood: {0}")]
    Malformed(String),
    /// A URL could not be built or is not allowed.
    #[error("{0}")]
    Config(String),
}

impl OAuthError {
    /// A stable code for logs, failure records and the API.
    pub fn code(&self) -> &str {
        match self {
            Self::Grant { .. } => "grant_revoked",
            Self::Client { .. } => "client_rejected",
            Self::Refused { .. } => "request_refused",
            Self::Transient { .. } => "provider_unavailable",
            Self::Malformed(_) => "provider_malformed",
            Self::Config(_) => "oauth_config",
        }
    }
}

/// The rest of a token response, kept as JSON.
#[derive(Clone, Default, Deserialize, Serialize)]
pub struct ExtraFields {
    #[serde(flatten)]
    fields: BTreeMap<String, serde_json::Value>,
}

impl std::fmt::Debug for ExtraFields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Values may hold an id_token: names only.
        f.debug_list().entries(self.fields.keys()).finish()
    }
}

impl ExtraTokenFields for ExtraFields {}

type TokenResp = StandardTokenResponse<ExtraFields, BasicTokenType>;
type Client = oauth2::Client<
    BasicErrorResponse,
    TokenResp,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

/// A provider's OAuth endpoints for one connection (or pending flow): the catalogue's
/// templates filled with its settings, sent to the sandbox when configured so.
pub struct Endpoints<'a> {
    /// The provider.
    pub provider: &'a Provider,
    /// Its OAuth method.
    pub method: &'a AuthMethod,
    /// Settings (and, after the exchange, tokens) filling the templates.
    pub fields: &'a Fields,
    /// Local use: where catalogue hosts are sent.
    pub origin_override: Option<&'a url::Url>,
}

impl Endpoints<'_> {
    fn connector(&self) -> Connector<'_> {
        Connector {
            provider: self.provider,
            method: self.method,
            fields: self.fields,
            origin_override: self.origin_override,
        }
    }

    fn url(&self, template: Option<&str>, what: &str) -> Result<String, OAuthError> {
        let template =
            template.ok_or_else(|| OAuthError::Config(format!("the provider has no {what}")))?;
        self.connector()
            .endpoint(template)
            .map_err(|e| OAuthError::Config(format!("{what}: {e}")))
    }

    fn client(&self, app: &ClientApp, redirect_uri: Option<&str>) -> Result<Client, OAuthError> {
        let auth = AuthUrl::new(self.url(self.method.authorize_url.as_deref(), "authorize URL")?)
            .map_err(|_| OAuthError::Config("the authorize URL is not a URL".into()))?;
        let token = TokenUrl::new(self.url(self.method.token_url.as_deref(), "token URL")?)
            .map_err(|_| OAuthError::Config("the token URL is not a URL".into()))?;
        let redirect = redirect_uri
            .map(|r| {
                RedirectUrl::new(r.to_owned())
                    .map_err(|_| OAuthError::Config("the redirect URI is not a URL".into()))
            })
            .transpose()?;
        let auth_type = match app.client_auth(self.method) {
            ClientAuth::Basic => oauth2::AuthType::BasicAuth,
            ClientAuth::RequestBody => oauth2::AuthType::RequestBody,
        };
        let client = oauth2::Client::new(ClientId::new(app.client_id.clone()))
            .set_client_secret(ClientSecret::new(
                app.client_secret.expose_secret().to_owned(),
            ))
            .set_auth_uri(auth)
            .set_token_uri(token)
            .set_auth_type(auth_type);
        Ok(match redirect {
            Some(r) => client.set_redirect_uri(r),
            None => client,
        })
    }

    /// The URL the browser is sent to, with state, scopes, PKCE challenge and the
    /// catalogue's extra parameters.
    pub fn authorize_url(
        &self,
        app: &ClientApp,
        redirect_uri: &str,
        state: &str,
        scopes: &[String],
        challenge: Option<PkceCodeChallenge>,
    ) -> Result<String, OAuthError> {
        let client = self.client(app, Some(redirect_uri))?;
        let state = state.to_owned();
        let mut req = client
            .authorize_url(move || CsrfToken::new(state))
            .add_scopes(scopes.iter().map(|s| Scope::new(s.clone())));
        if let Some(challenge) = challenge {
            req = req.set_pkce_challenge(challenge);
        }
        for (k, v) in &self.method.authorize_params {
            req = req.add_extra_param(k.as_str(), v.as_str());
        }
        let (url, _) = req.url();
        Ok(url.to_string())
    }

    /// Exchanges an authorization code (with the PKCE verifier, when one was used).
    pub async fn exchange_code(
        &self,
        http: &Egress,
        app: &ClientApp,
        redirect_uri: &str,
        code: &str,
        verifier: Option<&SecretString>,
    ) -> Result<Grant, OAuthError> {
        let client = self.client(app, Some(redirect_uri))?;
        let mut req = client.exchange_code(AuthorizationCode::new(code.to_owned()));
        if let Some(v) = verifier {
            req = req.set_pkce_verifier(PkceCodeVerifier::new(v.expose_secret().to_owned()));
        }
        let sender = Sender::new(http);
        let result = req.request_async(&sender).await;
        sender.finish(result)
    }

    /// Trades a refresh token for a new access token.
    pub async fn refresh(
        &self,
        http: &Egress,
        app: &ClientApp,
        refresh_token: &SecretString,
    ) -> Result<Grant, OAuthError> {
        let client = self.client(app, None)?;
        let token = RefreshToken::new(refresh_token.expose_secret().to_owned());
        let req = client.exchange_refresh_token(&token);
        let sender = Sender::new(http);
        let result = req.request_async(&sender).await;
        sender.finish(result)
    }

    /// Revokes the grant at the provider, in the provider's own way. `Ok(false)` when
    /// the provider has no revocation endpoint.
    pub async fn revoke(&self, http: &Egress, app: &ClientApp) -> Result<bool, OAuthError> {
        let Some(template) = self.method.revoke_url.as_deref() else {
            return Ok(false);
        };
        // A custom provider without a revocation URL leaves the template unfilled.
        let Ok(url) = self.connector().endpoint(template) else {
            return Ok(false);
        };
        let access = self.fields.secret.get("access_token");
        let refresh = self.fields.secret.get("refresh_token");
        let req = match self.method.revoke_style {
            RevokeStyle::Path => http.delete(&url),
            RevokeStyle::Bearer => {
                let token = access.ok_or_else(|| OAuthError::Config("no access token".into()))?;
                http.delete(&url).header(
                    reqwest::header::AUTHORIZATION,
                    sensitive(&format!("Bearer {}", token.expose_secret()))?,
                )
            }
            RevokeStyle::Query | RevokeStyle::Rfc7009 => {
                let (token, hint) = match (refresh, access) {
                    (Some(r), _) => (r, "refresh_token"),
                    (None, Some(a)) => (a, "access_token"),
                    (None, None) => return Err(OAuthError::Config("no token to revoke".into())),
                };
                let form = [("token", token.expose_secret()), ("token_type_hint", hint)];
                if self.method.revoke_style == RevokeStyle::Query {
                    http.post(&url).query(&form[..1])
                } else {
                    post_form(http, &url, app, self.method, &form)?
                }
            }
        };
        let resp = send_capped(http, req).await?;
        match resp.status {
            200..=299 => Ok(true),
            // Already gone at the provider: what revocation wanted.
            400 | 401 | 404 if resp.already_gone(self.method.revoke_style) => Ok(true),
            status => Err(classify(status, &resp.body, resp.retry_after)),
        }
    }

    /// Asks the provider whether an access token is still active (RFC 7662), with its
    /// expiry when the provider says. `None` when the provider cannot introspect.
    pub async fn introspect(
        &self,
        http: &Egress,
        app: &ClientApp,
        access_token: &SecretString,
    ) -> Result<Option<Introspection>, OAuthError> {
        let Some(template) = self.method.introspect_url.as_deref() else {
            return Ok(None);
        };
        let url = self.url(Some(template), "introspection URL")?;
        let form = [
            ("token", access_token.expose_secret()),
            ("token_type_hint", "access_token"),
        ];
        let resp = send_capped(http, post_form(http, &url, app, self.method, &form)?).await?;
        if !(200..=299).contains(&resp.status) {
            return Err(classify(resp.status, &resp.body, resp.retry_after));
        }
        let parsed: Introspection = serde_json::from_slice(&resp.body)
            .map_err(|_| OAuthError::Malformed("introspection body".into()))?;
        Ok(Some(parsed))
    }
}

/// An introspection answer (RFC 7662), the parts Conduit reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Introspection {
    /// Whether the token is active.
    pub active: bool,
    /// Expiry, seconds since the epoch.
    #[serde(default)]
    pub exp: Option<i64>,
}

/// A form POST with client authentication (revoke, introspect): HTTP Basic, or the
/// client's id and secret in the form.
fn post_form(
    http: &Egress,
    url: &str,
    app: &ClientApp,
    method: &AuthMethod,
    form: &[(&str, &str)],
) -> Result<reqwest::RequestBuilder, OAuthError> {
    let mut pairs: Vec<(&str, &str)> = form.to_vec();
    let req = http.post(url);
    Ok(match app.client_auth(method) {
        ClientAuth::Basic => req
            .header(reqwest::header::AUTHORIZATION, client_basic(app)?)
            .form(&pairs),
        ClientAuth::RequestBody => {
            pairs.push(("client_id", &app.client_id));
            pairs.push(("client_secret", app.client_secret.expose_secret()));
            req.form(&pairs)
        }
    })
}

/// HTTP Basic client authentication as RFC 6749 §2.3.1 wants it: id and secret each
/// form-urlencoded, then joined by `:` and base64-encoded. The `oauth2` crate encodes
/// the token endpoint's the same way (a test holds the two together), so a secret with
/// `+`, `/`, `=` or `%` authenticates at every endpoint alike.
fn client_basic(app: &ClientApp) -> Result<reqwest::header::HeaderValue, OAuthError> {
    let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let pair = zeroize::Zeroizing::new(format!(
        "{}:{}",
        encode(&app.client_id),
        encode(app.client_secret.expose_secret())
    ));
    let value = zeroize::Zeroizing::new(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair.as_bytes())
    ));
    sensitive(&value)
}

fn sensitive(v: &str) -> Result<reqwest::header::HeaderValue, OAuthError> {
    let mut v = reqwest::header::HeaderValue::from_str(v)
        .map_err(|_| OAuthError::Config("token is not a valid header value".into()))?;
    v.set_sensitive(true);
    Ok(v)
}

/// A provider response, read whole (capped).
struct Raw {
    status: u16,
    body: Vec<u8>,
    retry_after: Option<u64>,
}

impl Raw {
    /// Whether a failed revocation says the token was already invalid.
    fn already_gone(&self, style: RevokeStyle) -> bool {
        match style {
            RevokeStyle::Rfc7009 | RevokeStyle::Query => {
                error_code(&self.body).as_deref() == Some("invalid_token")
            }
            RevokeStyle::Path | RevokeStyle::Bearer => true,
        }
    }
}

async fn send_capped(http: &Egress, req: reqwest::RequestBuilder) -> Result<Raw, OAuthError> {
    let resp = tokio::time::timeout(TIMEOUT, http.send(req))
        .await
        .map_err(|_| transient("timed out"))?
        .map_err(|e| match e {
            crate::egress::SendError::NotPublic => {
                OAuthError::Config("the endpoint is not a public address".into())
            }
            e => transient(&format!("unreachable: {}", e.without_url())),
        })?;
    let status = resp.status().as_u16();
    let retry_after = retry_after(resp.headers());
    let body = read_capped(resp).await?;
    Ok(Raw {
        status,
        body,
        retry_after,
    })
}

async fn read_capped(mut resp: reqwest::Response) -> Result<Vec<u8>, OAuthError> {
    let mut body = Vec::new();
    loop {
        match tokio::time::timeout(TIMEOUT, resp.chunk()).await {
            Err(_) => return Err(transient("timed out")),
            Ok(Err(e)) => return Err(transient(&format!("body failed: {}", e.without_url()))),
            Ok(Ok(None)) => return Ok(body),
            Ok(Ok(Some(chunk))) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(OAuthError::Malformed("body too large".into()));
                }
                body.extend_from_slice(&chunk);
            }
        }
    }
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<u64> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn transient(reason: &str) -> OAuthError {
    OAuthError::Transient {
        reason: reason.to_owned(),
        retry_after: None,
    }
}

/// The `oauth2` crate's HTTP client: our reqwest client (guarded, no redirects),
/// remembering the last status and Retry-After for classification.
struct Sender<'a> {
    http: &'a Egress,
    last: std::sync::Mutex<Option<(u16, Option<u64>)>>,
}

impl<'c> oauth2::AsyncHttpClient<'c> for Sender<'_> {
    type Error = SendError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<oauth2::HttpResponse, SendError>> + Send + 'c>,
    >;

    fn call(&'c self, request: oauth2::HttpRequest) -> Self::Future {
        Box::pin(self.send(request))
    }
}

/// A transport failure, already classified.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SendError(OAuthError);

impl<'a> Sender<'a> {
    fn new(http: &'a Egress) -> Self {
        Self {
            http,
            last: std::sync::Mutex::new(None),
        }
    }

    async fn send(&self, req: oauth2::HttpRequest) -> Result<oauth2::HttpResponse, SendError> {
        let (parts, body) = req.into_parts();
        let mut builder = self
            .http
            .request(parts.method, parts.uri.to_string())
            .body(body);
        for (name, value) in &parts.headers {
            let mut value = value.clone();
            if name == reqwest::header::AUTHORIZATION {
                value.set_sensitive(true);
            }
            builder = builder.header(name, value);
        }
        let raw = send_capped(self.http, builder).await.map_err(SendError)?;
        if let Ok(mut last) = self.last.lock() {
            *last = Some((raw.status, raw.retry_after));
        }
        let mut resp = oauth2::HttpResponse::new(raw.body);
        *resp.status_mut() = http::StatusCode::from_u16(raw.status)
            .map_err(|_| SendError(OAuthError::Malformed("status".into())))?;
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        Ok(resp)
    }

    fn finish(
        &self,
        result: Result<TokenResp, RequestTokenError<SendError, BasicErrorResponse>>,
    ) -> Result<Grant, OAuthError> {
        let (status, retry) = self.last.lock().ok().and_then(|l| *l).unwrap_or((0, None));
        match result {
            Ok(resp) => grant(resp),
            Err(RequestTokenError::Request(SendError(e))) => Err(e),
            Err(RequestTokenError::ServerResponse(e)) => {
                let body = serde_json::to_vec(&e).unwrap_or_default();
                Err(classify(status, &body, retry))
            }
            Err(RequestTokenError::Parse(_, body)) => Err(classify(status, &body, retry)),
            Err(RequestTokenError::Other(_)) => Err(classify(status, &[], retry)),
        }
    }
}

fn grant(resp: TokenResp) -> Result<Grant, OAuthError> {
    if resp.access_token().secret().is_empty() {
        return Err(OAuthError::Malformed("empty access token".into()));
    }
    Ok(Grant {
        access_token: SecretString::from(resp.access_token().secret().to_owned()),
        refresh_token: resp
            .refresh_token()
            .map(|r| r.secret().to_owned())
            .filter(|r| !r.is_empty())
            .map(SecretString::from),
        expires_in: resp.expires_in().map(|d| d.as_secs()),
        scopes: resp
            .scopes()
            .map(|s| granted_scopes(s.iter().map(|s| s.as_str()))),
        extra: resp.extra_fields().fields.clone(),
    })
}

/// The granted scopes of a token response: RFC 6749 separates them with spaces, but
/// Pipedrive answers `"scope": "base,contacts:full"`; no provider's scope holds a comma.
fn granted_scopes<'s>(parts: impl Iterator<Item = &'s str>) -> Vec<String> {
    parts
        .flat_map(|p| p.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The error code of a provider error body: RFC 6749's `error`, or HubSpot's `status`.
fn error_code(body: &[u8]) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(body).ok()?;
    let code = json
        .get("error")
        .and_then(|v| v.as_str())
        .or_else(|| json.get("status").and_then(|v| v.as_str()))?;
    Some(
        code.chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
            .take(64)
            .collect(),
    )
}

/// Classifies a provider's failed token-endpoint answer.
pub fn classify(status: u16, body: &[u8], retry_after: Option<u64>) -> OAuthError {
    if status == 429 || status >= 500 {
        return OAuthError::Transient {
            reason: format!("provider answered {status}"),
            retry_after,
        };
    }
    let Some(code) = error_code(body) else {
        return if status == 0 || (200..=299).contains(&status) {
            OAuthError::Malformed("no access token in the response".into())
        } else {
            OAuthError::Transient {
                reason: format!("provider answered {status} without an error code"),
                retry_after,
            }
        };
    };
    match code.as_str() {
        // RFC 6749 invalid_grant; Zoho's invalid_code (answered with a 200); Google's
        // invalid_token on a revoked grant; HubSpot's BAD_REFRESH_TOKEN / BAD_AUTH_CODE;
        // a code presented with another redirect URI than it was issued for.
        "invalid_grant"
        | "invalid_code"
        | "invalid_token"
        | "access_denied"
        | "BAD_REFRESH_TOKEN"
        | "BAD_AUTH_CODE"
        | "EXPIRED_AUTH_CODE"
        | "BAD_REDIRECT_URI"
        | "redirect_uri_mismatch" => OAuthError::Grant { code },
        "invalid_client"
        | "invalid_client_secret"
        | "unauthorized_client"
        | "BAD_CLIENT_ID"
        | "BAD_CLIENT_SECRET" => OAuthError::Client { code },
        "temporarily_unavailable" | "server_error" => OAuthError::Transient {
            reason: code,
            retry_after,
        },
        _ => OAuthError::Refused { code },
    }
}

/// A fresh PKCE pair (S256, 64 random bytes → 86-character verifier).
pub fn pkce_pair() -> (PkceCodeChallenge, SecretString) {
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256_len(64);
    (challenge, SecretString::from(verifier.secret().to_owned()))
}

/// The S256 challenge of a verifier.
pub fn pkce_challenge(verifier: &SecretString) -> PkceCodeChallenge {
    PkceCodeChallenge::from_code_verifier_sha256(&PkceCodeVerifier::new(
        verifier.expose_secret().to_owned(),
    ))
}

/// A fresh state value: 32 random bytes (256 bits), base64url.
pub fn new_state() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comma_separated_scopes_are_split() {
        assert_eq!(
            granted_scopes(["base,contacts:full", "admin", ""].into_iter()),
            ["base", "contacts:full", "admin"]
        );
    }

    #[test]
    fn classification_follows_provider_shapes() {
        let grant = |b: &str, s| classify(s, b.as_bytes(), None);
        assert!(matches!(
            grant(r#"{"error":"invalid_grant"}"#, 400),
            OAuthError::Grant { .. }
        ));
        // Zoho answers errors with a 200.
        assert!(matches!(
            grant(r#"{"error":"invalid_code"}"#, 200),
            OAuthError::Grant { .. }
        ));
        assert!(matches!(
            grant(r#"{"status":"BAD_REFRESH_TOKEN","message":"x"}"#, 400),
            OAuthError::Grant { .. }
        ));
        assert!(matches!(
            grant(r#"{"error":"invalid_client"}"#, 401),
            OAuthError::Client { .. }
        ));
        assert!(matches!(grant("<html>", 502), OAuthError::Transient { .. }));
        assert!(matches!(
            grant(r#"{"error":"invalid_grant"}"#, 503),
            OAuthError::Transient { .. }
        ));
        assert!(matches!(
            classify(429, b"{}", Some(7)),
            OAuthError::Transient {
                retry_after: Some(7),
                ..
            }
        ));
        assert!(matches!(
            grant(r#"{"error":"invalid_scope"}"#, 400),
            OAuthError::Refused { .. }
        ));
        assert!(matches!(grant("{}", 200), OAuthError::Malformed(_)));
        // Codes are sanitised: nothing but a short identifier leaves the body.
        let OAuthError::Refused { code } = grant(r#"{"error":"bad <script> code!!"}"#, 400) else {
            panic!("expected refused");
        };
        assert_eq!(code, "badscriptcode");
    }

    /// A secret with `+`, `/`, `=` and `%` authenticates the same way at the token
    /// endpoint (the `oauth2` crate) and at revocation and introspection (ours).
    #[tokio::test]
    async fn basic_client_auth_is_form_encoded_like_the_token_endpoint() {
        let app = ClientApp {
            source: AppSource::Tenant,
            client_id: "id+with/odd=chars".into(),
            client_secret: SecretString::from("s3+cr/et==%41 x".to_owned()),
            redirect_uri: None,
            scopes: None,
            settings: BTreeMap::new(),
        };
        let ours = client_basic(&app).unwrap();
        let client = oauth2::basic::BasicClient::new(ClientId::new(app.client_id.clone()))
            .set_client_secret(ClientSecret::new(
                app.client_secret.expose_secret().to_owned(),
            ))
            .set_token_uri(TokenUrl::new("https://example.com/token".into()).unwrap())
            .set_auth_type(oauth2::AuthType::BasicAuth);
        let seen = std::sync::Mutex::new(None);
        let capture = |req: oauth2::HttpRequest| {
            *seen.lock().unwrap() = req.headers().get(http::header::AUTHORIZATION).cloned();
            async { Err::<oauth2::HttpResponse, _>(std::io::Error::other("captured")) }
        };
        let _ = client
            .exchange_refresh_token(&RefreshToken::new("r".into()))
            .request_async(&capture)
            .await;
        let theirs = seen.lock().unwrap().clone().unwrap();
        assert_eq!(ours.as_bytes(), theirs.as_bytes());
        // And it decodes per RFC 6749 §2.3.1: base64, split at ':', form-urldecode.
        let b64 = ours.to_str().unwrap().strip_prefix("Basic ").unwrap();
        let plain = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap(),
        )
        .unwrap();
        let (id, secret) = plain.split_once(':').unwrap();
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("v={s}").as_bytes())
                .next()
                .unwrap()
                .1
                .into_owned()
        };
        assert_eq!(decode(id), app.client_id);
        assert_eq!(decode(secret), "s3+cr/et==%41 x");
        assert!(ours.is_sensitive());
    }

    #[test]
    fn state_and_verifier_are_long_and_random() {
        let a = new_state();
        assert!(a.len() >= 43, "256 bits of state");
        assert_ne!(a, new_state());
        let (challenge, verifier) = pkce_pair();
        assert_eq!(challenge.method().as_str(), "S256");
        assert!(verifier.expose_secret().len() >= 43);
        assert_eq!(pkce_challenge(&verifier).as_str(), challenge.as_str());
    }
}

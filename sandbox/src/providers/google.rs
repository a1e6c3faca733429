//! Google stand-in: OAuth consent at `/accounts.google.com/o/oauth2/v2/auth`, tokens at
//! `/oauth2.googleapis.com/{token,revoke,tokeninfo}`, identity at
//! `/openidconnect.googleapis.com/v1/userinfo` (and `www.googleapis.com/oauth2/v3/userinfo`).
//!
//! Gmail and Calendar methods are [`super::google_api`]'s.
//!
//! Scopes: an authorization may ask only for scopes the sandbox knows for Google
//! (`openid`, `email`, `profile`, the Gmail, Calendar, Drive, Contacts and Sheets scopes)
//! that the client is configured with; others get Google's error page "Error 400:
//! invalid_scope" (no redirect). `include_granted_scopes=true` adds the user's live grants
//! to the same client (incremental authorization); the redirect's `scope` lists what was
//! granted, which the partial-consent knob can make less than asked (Google's granular
//! consent).
//!
//! Refresh tokens come only from a code exchange whose authorization asked for
//! `access_type=offline`, never from a refresh. `email`/`profile` scopes are granted
//! under their long names; userinfo shows `email` only with the email scope and `name`
//! only with the profile scope. Errors: `{"error":"invalid_grant","error_description":…}`.

use axum::http::header::WWW_AUTHENTICATE;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::ProviderRequest;
use crate::oauth::{self, AccessCheck, OAuthProvider, RevokeOutcome, RevokeReach};
use crate::state::SandboxState;
use crate::wire;

/// Route name of `GET accounts.google.com/o/oauth2/v2/auth`.
pub const OAUTH_AUTHORIZE: &str = "google.oauth_authorize";
/// Route name of `POST oauth2.googleapis.com/token`.
pub const OAUTH_TOKEN: &str = "google.oauth_token";
/// Route name of `POST oauth2.googleapis.com/revoke`.
pub const OAUTH_REVOKE: &str = "google.oauth_revoke";
/// Route name of `GET oauth2.googleapis.com/tokeninfo`.
pub const OAUTH_INTROSPECT: &str = "google.oauth_introspect";
/// Route name of `GET openidconnect.googleapis.com/v1/userinfo`.
pub const USERINFO: &str = "google.userinfo";
/// Route name of paths the stand-in does not serve.
pub const UNKNOWN: &str = "google.unknown";

/// Google's consent host.
pub const ACCOUNTS_HOST: &str = "accounts.google.com";
/// Google's OAuth token host.
pub const OAUTH2_HOST: &str = "oauth2.googleapis.com";
/// Google's OpenID Connect host.
pub const OIDC_HOST: &str = "openidconnect.googleapis.com";
/// Google's API host.
pub const API_HOST: &str = "www.googleapis.com";

/// Whether `host` is one of Google's the stand-in serves.
pub(crate) fn is_host(host: &str) -> bool {
    [
        ACCOUNTS_HOST,
        OAUTH2_HOST,
        OIDC_HOST,
        API_HOST,
        super::google_api::GMAIL_HOST,
    ]
    .contains(&host)
}

/// A Google route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `GET accounts.google.com/o/oauth2/v2/auth`.
    OAuthAuthorize,
    /// `POST oauth2.googleapis.com/token`.
    OAuthToken,
    /// `POST oauth2.googleapis.com/revoke`.
    OAuthRevoke,
    /// `GET|POST oauth2.googleapis.com/tokeninfo`.
    TokenInfo,
    /// `GET openidconnect.googleapis.com/v1/userinfo`.
    UserInfo,
    /// A Gmail or Calendar method ([`super::google_api`]).
    Api(super::google_api::ApiRoute),
}

impl Endpoint {
    /// The route's counter name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Endpoint::OAuthAuthorize => OAUTH_AUTHORIZE,
            Endpoint::OAuthToken => OAUTH_TOKEN,
            Endpoint::OAuthRevoke => OAUTH_REVOKE,
            Endpoint::TokenInfo => OAUTH_INTROSPECT,
            Endpoint::UserInfo => USERINFO,
            Endpoint::Api(route) => route.name(),
        }
    }
}

/// Matches a request to a Google route.
pub(crate) fn route(req: &ProviderRequest) -> Option<Endpoint> {
    let get = req.method == Method::GET;
    let post = req.method == Method::POST;
    match (req.host.as_str(), req.path.as_str()) {
        (ACCOUNTS_HOST, "/o/oauth2/v2/auth" | "/o/oauth2/auth") if get => {
            Some(Endpoint::OAuthAuthorize)
        }
        (OAUTH2_HOST, "/token") if post => Some(Endpoint::OAuthToken),
        (OAUTH2_HOST, "/revoke") if post => Some(Endpoint::OAuthRevoke),
        (OAUTH2_HOST, "/tokeninfo") if get || post => Some(Endpoint::TokenInfo),
        (OIDC_HOST, "/v1/userinfo") | (API_HOST, "/oauth2/v3/userinfo") if get || post => {
            Some(Endpoint::UserInfo)
        }
        (host, path) => super::google_api::route(host, &req.method, path).map(Endpoint::Api),
    }
}

/// Serves a matched Google route.
pub(crate) fn handle(endpoint: Endpoint, state: &SandboxState, req: &ProviderRequest) -> Response {
    let provider = OAuthProvider::Google;
    match endpoint {
        Endpoint::OAuthAuthorize => oauth::authorize(state, req, provider, ""),
        Endpoint::OAuthToken => oauth::token(state, req, provider, ""),
        Endpoint::OAuthRevoke => {
            let token = form_or_query(req, "token");
            match oauth::revoke(state, provider, &token, RevokeReach::Grant, None, None) {
                RevokeOutcome::Revoked => wire::json(StatusCode::OK, json!({})),
                RevokeOutcome::Unknown | RevokeOutcome::AlreadyDead => wire::json(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "invalid_token", "error_description": "Token expired or revoked"}),
                ),
            }
        }
        Endpoint::TokenInfo => {
            let token = form_or_query(req, "access_token");
            match oauth::bearer_access(state, provider, Some(&token)) {
                AccessCheck::Granted(grant) => {
                    let mut body = json!({
                        "azp": grant.client_id,
                        "aud": grant.client_id,
                        "sub": grant.user.user_id,
                        "scope": grant.scopes.join(" "),
                        "exp": (grant.issued_unix + grant.ttl.as_secs()).to_string(),
                        "expires_in": grant.expires_in.to_string(),
                        "access_type": "offline",
                    });
                    if has_email_scope(&grant.scopes) {
                        body["email"] = json!(grant.user.email);
                        body["email_verified"] = json!("true");
                    }
                    wire::json(StatusCode::OK, body)
                }
                _ => wire::json(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "invalid_token", "error_description": "Invalid Value"}),
                ),
            }
        }
        Endpoint::UserInfo => {
            match oauth::bearer_access(state, provider, wire::bearer_token(&req.headers)) {
                AccessCheck::Granted(grant) => wire::json(StatusCode::OK, userinfo(&grant)),
                _ => unauthorized(),
            }
        }
        Endpoint::Api(route) => super::google_api::handle(route, state, req),
    }
}

fn form_or_query(req: &ProviderRequest, name: &str) -> String {
    oauth::params(&req.body)
        .ok()
        .and_then(|form| form.get(name).cloned())
        .or_else(|| wire::query_param(req.query.as_deref(), name))
        .unwrap_or_default()
}

fn has_email_scope(scopes: &[String]) -> bool {
    scopes
        .iter()
        .any(|s| s == "https://www.googleapis.com/auth/userinfo.email")
}

fn userinfo(grant: &oauth::AccessGrant) -> Value {
    let user = &grant.user;
    let mut body = json!({"sub": user.user_id});
    if has_email_scope(&grant.scopes) {
        body["email"] = json!(user.email);
        body["email_verified"] = json!(true);
        if let Some((_, domain)) = user.email.split_once('@') {
            body["hd"] = json!(domain);
        }
    }
    if grant
        .scopes
        .iter()
        .any(|s| s == "https://www.googleapis.com/auth/userinfo.profile")
    {
        let (given, family) = user.name.split_once(' ').unwrap_or((&user.name, ""));
        body["name"] = json!(user.name);
        body["given_name"] = json!(given);
        body["family_name"] = json!(family);
        body["picture"] = json!("https://lh3.googleusercontent.com/a/default-user=s96-c");
    }
    body
}

/// 401 of the userinfo endpoint.
fn unauthorized() -> Response {
    let mut response = wire::json(
        StatusCode::UNAUTHORIZED,
        json!({"error": "invalid_request", "error_description": "Invalid Credentials"}),
    );
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static(
            "Bearer realm=\"https://accounts.google.com/\", error=\"invalid_token\"",
        ),
    );
    response
}

fn api_error(status: StatusCode) -> Response {
    let text = super::google_api::grpc_status(status);
    wire::json(
        status,
        json!({"error": {"code": status.as_u16(), "message": wire::reason(status), "status": text}}),
    )
}

/// 404 for a path the stand-in does not serve.
pub(crate) fn not_found() -> Response {
    api_error(StatusCode::NOT_FOUND)
}

/// Google's error body for a forced status.
pub(crate) fn error_for_status(status: StatusCode, retry_after: u64) -> Response {
    let response = api_error(status);
    if matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
        wire::with_retry_after(response, retry_after)
    } else {
        response
    }
}

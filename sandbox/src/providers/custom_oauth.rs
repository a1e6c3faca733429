//! A generic RFC 6749 authorization server standing in for a tenant's own OAuth provider,
//! at `/oauth.custom.example/…`: `GET /authorize`, `POST /token` (client authentication
//! by Basic or form, not both), `POST /revoke` (RFC 7009: 200 even for unknown tokens),
//! `POST /introspect` (RFC 7662) and `GET /userinfo` (bearer → `{sub,email,name}`).
//!
//! Refresh-token rotation is on by default. Errors: `{"error":"…","error_description":"…"}`;
//! bad bearer tokens get 401 with `WWW-Authenticate: Bearer error="invalid_token"`.
//!
//! Scopes: any RFC 6749 scope-token is accepted at authorize (a tenant's server defines
//! its own; malformed ones are redirected with `error=invalid_scope`). A grant that asked
//! for none carries the server's default, everything. `userinfo` needs `openid`,
//! `profile` or `email` (OpenID Connect's claims scopes); without: RFC 6750 §3.1's 403
//! `{"error":"insufficient_scope",…}` with `WWW-Authenticate: Bearer …,
//! error="insufficient_scope", scope="openid profile email"`.

use axum::http::header::WWW_AUTHENTICATE;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::ProviderRequest;
use crate::oauth::{self, AccessCheck, OAuthProvider, RevokeReach, TokenError};
use crate::state::SandboxState;
use crate::wire;

/// Route name of `GET /authorize`.
pub const OAUTH_AUTHORIZE: &str = "custom_oauth.oauth_authorize";
/// Route name of `POST /token`.
pub const OAUTH_TOKEN: &str = "custom_oauth.oauth_token";
/// Route name of `POST /revoke`.
pub const OAUTH_REVOKE: &str = "custom_oauth.oauth_revoke";
/// Route name of `POST /introspect`.
pub const OAUTH_INTROSPECT: &str = "custom_oauth.oauth_introspect";
/// Route name of `GET /userinfo`.
pub const USERINFO: &str = "custom_oauth.userinfo";
/// Route name of paths the stand-in does not serve.
pub const UNKNOWN: &str = "custom_oauth.unknown";

/// The host of the custom OAuth server.
pub const HOST: &str = "oauth.custom.example";

/// A custom OAuth route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `GET /authorize`.
    OAuthAuthorize,
    /// `POST /token`.
    OAuthToken,
    /// `POST /revoke`.
    OAuthRevoke,
    /// `POST /introspect`.
    OAuthIntrospect,
    /// `GET /userinfo`.
    UserInfo,
}

impl Endpoint {
    /// The route's counter name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Endpoint::OAuthAuthorize => OAUTH_AUTHORIZE,
            Endpoint::OAuthToken => OAUTH_TOKEN,
            Endpoint::OAuthRevoke => OAUTH_REVOKE,
            Endpoint::OAuthIntrospect => OAUTH_INTROSPECT,
            Endpoint::UserInfo => USERINFO,
        }
    }
}

/// Matches a request to a route.
pub(crate) fn route(req: &ProviderRequest) -> Option<Endpoint> {
    match (&req.method, req.path.as_str()) {
        (&Method::GET, "/authorize") => Some(Endpoint::OAuthAuthorize),
        (&Method::POST, "/token") => Some(Endpoint::OAuthToken),
        (&Method::POST, "/revoke") => Some(Endpoint::OAuthRevoke),
        (&Method::POST, "/introspect") => Some(Endpoint::OAuthIntrospect),
        (&Method::GET | &Method::POST, "/userinfo") => Some(Endpoint::UserInfo),
        _ => None,
    }
}

/// Serves a matched route.
pub(crate) fn handle(endpoint: Endpoint, state: &SandboxState, req: &ProviderRequest) -> Response {
    let provider = OAuthProvider::CustomOauth;
    match endpoint {
        Endpoint::OAuthAuthorize => oauth::authorize(state, req, provider, ""),
        Endpoint::OAuthToken => oauth::token(state, req, provider, ""),
        Endpoint::OAuthRevoke | Endpoint::OAuthIntrospect => {
            let Ok(form) = oauth::params(&req.body) else {
                return oauth::client_error(
                    provider,
                    TokenError::InvalidRequest("a parameter was given more than once"),
                    false,
                );
            };
            let client = match oauth::authenticate_client(state, provider, req, &form) {
                Ok(client) => client,
                Err((error, basic)) => return oauth::client_error(provider, error, basic),
            };
            let Some(token) = form.get("token").filter(|t| !t.is_empty()) else {
                return oauth::client_error(
                    provider,
                    TokenError::InvalidRequest("token is required"),
                    false,
                );
            };
            if endpoint == Endpoint::OAuthRevoke {
                oauth::revoke(
                    state,
                    provider,
                    token,
                    RevokeReach::AccessTokenOnly,
                    Some(&client.client_id),
                    None,
                );
                return StatusCode::OK.into_response();
            }
            match oauth::introspect_response(state, provider, token) {
                Some(info) if info.client_id == client.client_id => wire::json(
                    StatusCode::OK,
                    json!({
                        "active": true,
                        "scope": info.scopes.join(" "),
                        "client_id": info.client_id,
                        "username": info.user.email,
                        "sub": info.user.user_id,
                        "token_type": if info.refresh { "refresh_token" } else { "Bearer" },
                        "exp": info.expires_unix,
                        "iat": info.issued_unix,
                        "iss": format!("https://{HOST}"),
                    }),
                ),
                _ => wire::json(StatusCode::OK, json!({"active": false})),
            }
        }
        Endpoint::UserInfo => {
            match oauth::bearer_access(state, provider, wire::bearer_token(&req.headers)) {
                AccessCheck::Granted(grant)
                    if !grant.scopes.is_empty()
                        && !oauth::scopes_satisfy(&grant.scopes, &userinfo_scopes()) =>
                {
                    insufficient_scope()
                }
                AccessCheck::Granted(grant) => wire::json(
                    StatusCode::OK,
                    json!({
                        "sub": grant.user.user_id,
                        "email": grant.user.email,
                        "name": grant.user.name,
                    }),
                ),
                AccessCheck::Missing => bearer_error(None),
                AccessCheck::Denied(_) => bearer_error(Some("invalid_token")),
            }
        }
    }
}

/// Scopes of which `userinfo` needs one.
fn userinfo_scopes() -> [String; 3] {
    [
        "openid".to_owned(),
        "profile".to_owned(),
        "email".to_owned(),
    ]
}

/// RFC 6750 §3.1: 403 `insufficient_scope`, naming the scopes that would do.
fn insufficient_scope() -> Response {
    let mut response = wire::json(
        StatusCode::FORBIDDEN,
        json!({"error": "insufficient_scope", "error_description": "The access token lacks the scope this resource needs"}),
    );
    let challenge = format!(
        "Bearer realm=\"{HOST}\", error=\"insufficient_scope\", scope=\"openid profile email\""
    );
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(WWW_AUTHENTICATE, value);
    }
    response
}

/// RFC 6750 §3: 401 with a bearer challenge (and an error code when a token was sent).
fn bearer_error(error: Option<&str>) -> Response {
    let (challenge, body) = match error {
        Some(code) => (
            format!("Bearer realm=\"{HOST}\", error=\"{code}\""),
            json!({"error": code, "error_description": "The access token is expired, revoked or invalid"}),
        ),
        None => (
            format!("Bearer realm=\"{HOST}\""),
            json!({"error": "invalid_request", "error_description": "An access token is required"}),
        ),
    };
    let mut response = wire::json(StatusCode::UNAUTHORIZED, body);
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(WWW_AUTHENTICATE, value);
    }
    response
}

/// 404 for a path the stand-in does not serve.
pub(crate) fn not_found() -> Response {
    wire::json(
        StatusCode::NOT_FOUND,
        json!({"error": "not_found", "error_description": "Not Found"}),
    )
}

/// The server's error body for a forced status.
pub(crate) fn error_for_status(status: StatusCode, retry_after: u64) -> Response {
    let code = match status {
        StatusCode::UNAUTHORIZED => return bearer_error(Some("invalid_token")),
        StatusCode::TOO_MANY_REQUESTS => "slow_down".to_owned(),
        StatusCode::SERVICE_UNAVAILABLE => "temporarily_unavailable".to_owned(),
        s if s.is_server_error() => "server_error".to_owned(),
        s => wire::snake_reason(s),
    };
    let response = wire::json(
        status,
        json!({"error": code, "error_description": wire::reason(status)}),
    );
    if matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
        wire::with_retry_after(response, retry_after)
    } else {
        response
    }
}

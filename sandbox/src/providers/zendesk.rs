//! Zendesk Support stand-in, served at `/{subdomain}.zendesk.com/api/v2/…`.
//!
//! Auth: API token as `Authorization: Basic base64("{email}/token:{api_token}")`, or an
//! OAuth access token as `Authorization: Bearer`. Errors: `{"error":"Couldn't
//! authenticate you"}` (401), `{"error":"invalid_token","error_description":"…"}` (401
//! for a bad OAuth token), `{"error":"<Name>","description":"…"}` otherwise, and the "No
//! help desk at …" body for an unknown subdomain. 429 and 503 carry `Retry-After`.
//!
//! OAuth: `/oauth/authorizations/new`, `/oauth/tokens` (form or JSON body), and
//! `DELETE /api/v2/oauth/tokens/current.json` to revoke the caller's token.
//!
//! Scopes: `read`, `write`, `impersonate` and `{resource}:{read|write}` for Zendesk's
//! resources (`tickets`, `users`, `organizations`, `hc`, …); others are redirected with
//! `error=invalid_scope` ("The requested scope is invalid, unknown, or malformed.").
//! `users/me` with an OAuth token needs `read` or `users:read`; without: 403
//! `{"error":"Forbidden","description":"You are missing the following required scopes:
//! read"}`. API tokens carry the agent's full access. Not reproduced: `write` implying
//! nothing for reads (no write endpoint is served), role permissions, rate limits (but the
//! Help Center routes keep their own per-minute budget).
//!
//! Help Center (Guide) routes under `/api/v2/help_center/…` (articles, the incremental
//! article export, sections, categories, locales) are served by [`super::zendesk_hc`].

use axum::http::header::WWW_AUTHENTICATE;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::ProviderRequest;
use crate::oauth::{self, AccessCheck, OAuthProvider, RevokeOutcome, RevokeReach};
use crate::state::{Account, ProviderAccount, SandboxState};
use crate::wire;

/// Route name of `GET /api/v2/users/me.json`.
pub const USERS_ME: &str = "zendesk.users_me";
/// Route name of `GET /oauth/authorizations/new`.
pub const OAUTH_AUTHORIZE: &str = "zendesk.oauth_authorize";
/// Route name of `POST /oauth/tokens`.
pub const OAUTH_TOKEN: &str = "zendesk.oauth_token";
/// Route name of `DELETE /api/v2/oauth/tokens/current.json`.
pub const OAUTH_REVOKE: &str = "zendesk.oauth_revoke";
/// Route name of paths the stand-in does not serve.
pub const UNKNOWN: &str = "zendesk.unknown";

const HOST_SUFFIX: &str = ".zendesk.com";

/// A Zendesk route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `GET /api/v2/users/me(.json)`: the authenticated user.
    UsersMe,
    /// `GET /oauth/authorizations/new`.
    OAuthAuthorize,
    /// `POST /oauth/tokens`.
    OAuthToken,
    /// `DELETE /api/v2/oauth/tokens/current(.json)`.
    OAuthRevoke,
    /// A Help Center route (`GET /api/v2/help_center/…`).
    HelpCenter(super::zendesk_hc::HcRoute),
}

impl Endpoint {
    /// The route's counter name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Endpoint::UsersMe => USERS_ME,
            Endpoint::OAuthAuthorize => OAUTH_AUTHORIZE,
            Endpoint::OAuthToken => OAUTH_TOKEN,
            Endpoint::OAuthRevoke => OAUTH_REVOKE,
            Endpoint::HelpCenter(route) => route.name(),
        }
    }
}

/// The `acme` of `acme.zendesk.com`.
pub(crate) fn subdomain(host: &str) -> Option<&str> {
    let sub = host.strip_suffix(HOST_SUFFIX)?;
    (!sub.is_empty() && !sub.contains('.')).then_some(sub)
}

/// Matches a request to a Zendesk route.
pub(crate) fn route(req: &ProviderRequest) -> Option<Endpoint> {
    match (&req.method, req.path.as_str()) {
        (&Method::GET, "/api/v2/users/me.json" | "/api/v2/users/me") => Some(Endpoint::UsersMe),
        (&Method::GET, "/oauth/authorizations/new") => Some(Endpoint::OAuthAuthorize),
        (&Method::POST, "/oauth/tokens") => Some(Endpoint::OAuthToken),
        (&Method::DELETE, "/api/v2/oauth/tokens/current.json" | "/api/v2/oauth/tokens/current") => {
            Some(Endpoint::OAuthRevoke)
        }
        _ => super::zendesk_hc::route(req).map(Endpoint::HelpCenter),
    }
}

/// Serves a matched Zendesk route.
pub(crate) fn handle(endpoint: Endpoint, state: &SandboxState, req: &ProviderRequest) -> Response {
    let Some(sub) = subdomain(&req.host) else {
        return invalid_endpoint();
    };
    if !help_desk_exists(state, sub) {
        return no_help_desk(&req.host);
    }
    match endpoint {
        Endpoint::UsersMe => users_me(state, sub, req),
        Endpoint::HelpCenter(route) => super::zendesk_hc::handle(route, state, sub, req),
        Endpoint::OAuthAuthorize => oauth::authorize(state, req, OAuthProvider::Zendesk, sub),
        Endpoint::OAuthToken => oauth::token(state, req, OAuthProvider::Zendesk, sub),
        Endpoint::OAuthRevoke => match oauth_grant(state, sub, req) {
            Ok(_) => {
                let token = wire::bearer_token(&req.headers).unwrap_or("");
                match oauth::revoke(
                    state,
                    OAuthProvider::Zendesk,
                    token,
                    RevokeReach::Grant,
                    None,
                    Some(sub),
                ) {
                    RevokeOutcome::Revoked => StatusCode::NO_CONTENT.into_response(),
                    RevokeOutcome::Unknown | RevokeOutcome::AlreadyDead => invalid_token(),
                }
            }
            Err(response) => response,
        },
    }
}

fn users_me(state: &SandboxState, sub: &str, req: &ProviderRequest) -> Response {
    if wire::bearer_token(&req.headers).is_some() {
        return match oauth_grant(state, sub, req) {
            Ok(grant) if !oauth::scopes_satisfy(&grant.scopes, &users_read_scopes()) => {
                missing_scopes("read")
            }
            Ok(grant) => {
                let user = &grant.user;
                let id = user
                    .user_id
                    .parse::<u64>()
                    .map_or_else(|_| json!(user.user_id), |n| json!(n));
                wire::json(
                    StatusCode::OK,
                    json!({ "user": user_json(id, &user.name, &user.email, sub) }),
                )
            }
            Err(response) => response,
        };
    }
    match authenticate(state, sub, req) {
        Some(account) => wire::json(
            StatusCode::OK,
            json!({ "user": user_json(json!(account.id), &account.name, &account.email, sub) }),
        ),
        None => unauthorized(),
    }
}

/// The OAuth grant of the request's bearer token, if it is valid at this subdomain.
#[allow(clippy::result_large_err)] // The error is the finished response.
pub(crate) fn oauth_grant(
    state: &SandboxState,
    sub: &str,
    req: &ProviderRequest,
) -> Result<Box<oauth::AccessGrant>, Response> {
    match oauth::bearer_access(
        state,
        OAuthProvider::Zendesk,
        wire::bearer_token(&req.headers),
    ) {
        AccessCheck::Granted(grant) if grant.site == sub => Ok(grant),
        _ => Err(invalid_token()),
    }
}

/// Scopes of which `GET /api/v2/users/me` needs one with an OAuth token.
fn users_read_scopes() -> [String; 2] {
    ["read".to_owned(), "users:read".to_owned()]
}

/// Zendesk's 403 for an OAuth token without the endpoint's scope (it names the broad
/// scope even when a resource scope would also do).
pub(crate) fn missing_scopes(named: &str) -> Response {
    wire::json(
        StatusCode::FORBIDDEN,
        json!({
            "error": "Forbidden",
            "description": format!("You are missing the following required scopes: {named}"),
        }),
    )
}

/// 401 for a missing, expired, revoked or unknown OAuth token.
fn invalid_token() -> Response {
    let mut response = wire::json(
        StatusCode::UNAUTHORIZED,
        json!({
            "error": "invalid_token",
            "error_description": "The access token provided is expired, revoked, malformed or invalid for other reasons.",
        }),
    );
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static(
            "Bearer realm=\"Zendesk\", error=\"invalid_token\", error_description=\"The access token is invalid\"",
        ),
    );
    response
}

/// The account whose email and API token are in the request's Basic credentials.
pub(crate) fn authenticate(
    state: &SandboxState,
    sub: &str,
    req: &ProviderRequest,
) -> Option<Account> {
    let (user, token) = wire::basic_credentials(&req.headers)?;
    let email = user.strip_suffix("/token")?;
    state.find_account(|account| {
        account.email.eq_ignore_ascii_case(email)
            && matches!(&account.provider, ProviderAccount::Zendesk { subdomain, api_token }
                if subdomain == sub && api_token.matches(&token))
    })
}

/// Whether an account (API token) or an OAuth user lives at the subdomain.
pub(crate) fn help_desk_exists(state: &SandboxState, sub: &str) -> bool {
    state.any_account(|account| {
        matches!(&account.provider, ProviderAccount::Zendesk { subdomain, .. } if subdomain == sub)
    }) || state
        .oauth_store()
        .any_user(OAuthProvider::Zendesk, |user| user.subdomain == sub)
}

fn user_json(id: Value, name: &str, email: &str, sub: &str) -> Value {
    let id_text = match &id {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    json!({
        "id": id,
        "url": format!("https://{sub}.zendesk.com/api/v2/users/{id_text}.json"),
        "name": name,
        "email": email,
        "created_at": "2024-01-15T09:00:00Z",
        "updated_at": "2024-01-15T09:00:00Z",
        "time_zone": "Eastern Time (US & Canada)",
        "iana_time_zone": "America/New_York",
        "phone": null,
        "shared_phone_number": null,
        "photo": null,
        "locale_id": 1,
        "locale": "en-US",
        "organization_id": null,
        "role": "admin",
        "verified": true,
        "external_id": null,
        "tags": [],
        "alias": null,
        "active": true,
        "shared": false,
        "shared_agent": false,
        "last_login_at": "2024-01-15T09:00:00Z",
        "two_factor_auth_enabled": null,
        "signature": null,
        "details": null,
        "notes": null,
        "role_type": null,
        "custom_role_id": null,
        "moderator": true,
        "ticket_restriction": null,
        "only_private_comments": false,
        "restricted_agent": false,
        "suspended": false,
        "default_group_id": null,
        "report_csv": true,
        "user_fields": {}
    })
}

/// 401 for missing or wrong credentials.
pub(crate) fn unauthorized() -> Response {
    let mut response = wire::json(
        StatusCode::UNAUTHORIZED,
        json!({"error": "Couldn't authenticate you"}),
    );
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"Web Password\""),
    );
    response
}

/// 404 for a subdomain with no account: Zendesk's "No help desk" body.
pub(crate) fn no_help_desk(host: &str) -> Response {
    wire::json(
        StatusCode::NOT_FOUND,
        json!({"error": {
            "title": format!("No help desk at {host}"),
            "message": "There is no help desk configured at this address. This means that the address is available and that you can claim it at http://www.zendesk.com/signup",
        }}),
    )
}

fn invalid_endpoint() -> Response {
    wire::json(
        StatusCode::NOT_FOUND,
        json!({"error": "InvalidEndpoint", "description": "Not found"}),
    )
}

/// 404 for a path the stand-in does not serve.
pub(crate) fn not_found(state: &SandboxState, req: &ProviderRequest) -> Response {
    match subdomain(&req.host) {
        Some(sub) if !help_desk_exists(state, sub) => no_help_desk(&req.host),
        _ => invalid_endpoint(),
    }
}

/// Zendesk's error body for a forced status.
pub(crate) fn error_for_status(status: StatusCode, retry_after: u64) -> Response {
    let response = match status {
        StatusCode::UNAUTHORIZED => return unauthorized(),
        StatusCode::NOT_FOUND => return invalid_endpoint(),
        StatusCode::TOO_MANY_REQUESTS => wire::json(
            status,
            json!({"error": "TooManyRequests", "description": "You have exceeded the rate limit. Please wait and try again."}),
        ),
        _ => wire::json(
            status,
            json!({"error": wire::camel_reason(status), "description": wire::reason(status)}),
        ),
    };
    if matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
        wire::with_retry_after(response, retry_after)
    } else {
        response
    }
}

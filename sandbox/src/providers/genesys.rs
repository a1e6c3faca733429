//! Genesys Cloud stand-in: OAuth at `/login.{region}/oauth/{authorize,token}` (client
//! authentication by HTTP Basic only) and the API at `/api.{region}/api/v2/…`:
//! `GET users/me` and `DELETE tokens/me` (revokes the caller's grant).
//!
//! A grant lives in the region that issued it. Errors: OAuth `{"error":"invalid_grant",
//! "description":"…","error_description":"…"}`; API `{"message":"…","code":"…",
//! "status":N}`.
//!
//! Scopes: `{family}` and `{family}:readonly` of Genesys's scope families (`users`,
//! `conversations`, `analytics`, …); others are redirected with `error=invalid_scope`. A
//! grant that asked for none carries every scope (a client with no scopes assigned).
//! `GET users/me` needs `users` or `users:readonly`; without: 403 with
//! `"code":"missing.any.scopes"` (Genesys's error shape; the exact code and wording are
//! not verified against the live API). `DELETE tokens/me` needs no scope.

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::ProviderRequest;
use crate::oauth::{self, AccessCheck, AccessGrant, GENESYS_REGIONS, OAuthProvider, RevokeReach};
use crate::state::SandboxState;
use crate::wire;

/// Route name of `GET login.{region}/oauth/authorize`.
pub const OAUTH_AUTHORIZE: &str = "genesys.oauth_authorize";
/// Route name of `POST login.{region}/oauth/token`.
pub const OAUTH_TOKEN: &str = "genesys.oauth_token";
/// Route name of `DELETE api.{region}/api/v2/tokens/me`.
pub const OAUTH_REVOKE: &str = "genesys.oauth_revoke";
/// Route name of `GET api.{region}/api/v2/users/me`.
pub const USERINFO: &str = "genesys.userinfo";
/// Route name of paths the stand-in does not serve.
pub const UNKNOWN: &str = "genesys.unknown";

/// Which kind of Genesys host a host is, and its region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Host<'a> {
    /// `login.{region}`.
    Login(&'a str),
    /// `api.{region}`.
    Api(&'a str),
}

/// The kind and region of a Genesys Cloud host.
pub(crate) fn host(host: &str) -> Option<Host<'_>> {
    let known = |region: &&str| GENESYS_REGIONS.contains(region);
    if let Some(region) = host.strip_prefix("login.").filter(known) {
        return Some(Host::Login(region));
    }
    host.strip_prefix("api.").filter(known).map(Host::Api)
}

/// A Genesys Cloud route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `GET login.{region}/oauth/authorize`.
    OAuthAuthorize,
    /// `POST login.{region}/oauth/token`.
    OAuthToken,
    /// `DELETE api.{region}/api/v2/tokens/me`.
    OAuthRevoke,
    /// `GET api.{region}/api/v2/users/me`.
    UsersMe,
}

impl Endpoint {
    /// The route's counter name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Endpoint::OAuthAuthorize => OAUTH_AUTHORIZE,
            Endpoint::OAuthToken => OAUTH_TOKEN,
            Endpoint::OAuthRevoke => OAUTH_REVOKE,
            Endpoint::UsersMe => USERINFO,
        }
    }
}

/// Matches a request to a Genesys Cloud route.
pub(crate) fn route(req: &ProviderRequest) -> Option<Endpoint> {
    match (host(&req.host)?, &req.method, req.path.as_str()) {
        (Host::Login(_), &Method::GET, "/oauth/authorize") => Some(Endpoint::OAuthAuthorize),
        (Host::Login(_), &Method::POST, "/oauth/token") => Some(Endpoint::OAuthToken),
        (Host::Api(_), &Method::GET, "/api/v2/users/me") => Some(Endpoint::UsersMe),
        (Host::Api(_), &Method::DELETE, "/api/v2/tokens/me") => Some(Endpoint::OAuthRevoke),
        _ => None,
    }
}

/// Serves a matched Genesys Cloud route.
pub(crate) fn handle(endpoint: Endpoint, state: &SandboxState, req: &ProviderRequest) -> Response {
    let provider = OAuthProvider::Genesys;
    let region = match host(&req.host) {
        Some(Host::Login(region) | Host::Api(region)) => region,
        None => return not_found(),
    };
    match endpoint {
        Endpoint::OAuthAuthorize => oauth::authorize(state, req, provider, region),
        Endpoint::OAuthToken => oauth::token(state, req, provider, region),
        Endpoint::UsersMe => match grant(state, req, region) {
            Some(grant)
                if !grant.scopes.is_empty()
                    && !oauth::scopes_satisfy(&grant.scopes, &users_me_scopes()) =>
            {
                api_error(
                    StatusCode::FORBIDDEN,
                    "missing.any.scopes",
                    "Missing any scopes: users, users:readonly",
                )
            }
            Some(grant) => {
                let user = &grant.user;
                wire::json(
                    StatusCode::OK,
                    json!({
                        "id": user.user_id,
                        "name": user.name,
                        "division": {
                            "id": oauth::business_unit_id(&user.org_id),
                            "name": "Home",
                            "selfUri": "/api/v2/authorization/divisions/home",
                        },
                        "chat": {"jabberId": format!("{}@acme.orgspan.com", user.user_id)},
                        "email": user.email,
                        "primaryContactInfo": [
                            {"address": user.email, "mediaType": "EMAIL", "type": "PRIMARY"}
                        ],
                        "state": "active",
                        "username": user.email,
                        "version": 1,
                        "acdAutoAnswer": false,
                        "selfUri": format!("/api/v2/users/{}", user.user_id),
                    }),
                )
            }
            None => unauthorized(),
        },
        Endpoint::OAuthRevoke => match grant(state, req, region) {
            Some(_) => {
                let token = wire::bearer_token(&req.headers).unwrap_or("");
                oauth::revoke(
                    state,
                    provider,
                    token,
                    RevokeReach::Grant,
                    None,
                    Some(region),
                );
                StatusCode::NO_CONTENT.into_response()
            }
            None => unauthorized(),
        },
    }
}

/// Scopes of which `GET /api/v2/users/me` needs one.
fn users_me_scopes() -> [String; 2] {
    ["users".to_owned(), "users:readonly".to_owned()]
}

/// The grant of the request's bearer token, if it is valid in this region.
fn grant(state: &SandboxState, req: &ProviderRequest, region: &str) -> Option<Box<AccessGrant>> {
    match oauth::bearer_access(
        state,
        OAuthProvider::Genesys,
        wire::bearer_token(&req.headers),
    ) {
        AccessCheck::Granted(grant) if grant.site == region => Some(grant),
        _ => None,
    }
}

fn api_error(status: StatusCode, code: &str, message: &str) -> Response {
    wire::json(
        status,
        json!({
            "message": message,
            "code": code,
            "status": status.as_u16(),
            "contextId": crate::oauth::context_id(),
            "details": [],
            "errors": [],
        }),
    )
}

/// 401 for a missing, expired, revoked, unknown or other-region token.
fn unauthorized() -> Response {
    api_error(
        StatusCode::UNAUTHORIZED,
        "bad.credentials",
        "Invalid login credentials.",
    )
}

/// 404 for a path the stand-in does not serve.
pub(crate) fn not_found() -> Response {
    api_error(
        StatusCode::NOT_FOUND,
        "not.found",
        "The requested operation was not found.",
    )
}

/// Genesys Cloud's error body for a forced status.
pub(crate) fn error_for_status(status: StatusCode, retry_after: u64) -> Response {
    let response = match status {
        StatusCode::UNAUTHORIZED => return unauthorized(),
        StatusCode::NOT_FOUND => return not_found(),
        StatusCode::TOO_MANY_REQUESTS => api_error(
            status,
            "too.many.requests",
            &format!(
                "Rate limit exceeded the maximum. Retry the request in [{retry_after}] seconds"
            ),
        ),
        StatusCode::SERVICE_UNAVAILABLE => api_error(
            status,
            "service.unavailable",
            "The service is currently unavailable",
        ),
        s if s.is_server_error() => api_error(
            s,
            "internal.server.error",
            "The server encountered an unexpected error",
        ),
        s => api_error(s, "bad.request", wire::reason(s)),
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

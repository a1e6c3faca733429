//! Zoho CRM stand-in: OAuth at `/accounts.zoho.{dc}/oauth/v2/…` and the current user at
//! `/www.zohoapis.{dc}/crm/v2/users?type=CurrentUser`, for the data centres `com`, `eu`,
//! `in`, `com.au`, `jp` and `com.cn`.
//!
//! A grant lives in its user's data centre: the authorize redirect says which
//! (`location`, `accounts-server`), and tokens work only there. Token errors are HTTP 200
//! with `{"error":"invalid_code"}` (Zoho's quirk). API auth:
//! `Authorization: Zoho-oauthtoken {access_token}`; API errors:
//! `{"code":"INVALID_TOKEN","details":{},"message":"invalid oauth token","status":"error"}`.
//!
//! Scopes: an authorization may ask only for scopes Zoho knows (`ZohoCRM.{group}.{OP}`,
//! `ZohoCRM.{group}.{item}.{OP}` with `OP` one of `ALL READ CREATE UPDATE DELETE WRITE`,
//! `AaaServer.profile.READ`) and the client is configured with; others get Zoho's error
//! page ("Invalid OAuth Scope"). `/crm/v{n}/users` needs `ZohoCRM.users.READ` or
//! `ZohoCRM.users.ALL`; a token without gets 401 `{"code":"OAUTH_SCOPE_MISMATCH",
//! "details":{},"message":"invalid oauth scope to access this URL","status":"error"}`.
//! The v8 record and field routes of `Contacts` and `Accounts` (with API credits) are
//! [`super::zoho_crm`]. Not reproduced: Zoho's per-profile permissions.

use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::ProviderRequest;
use crate::oauth::{self, AccessCheck, OAuthProvider, OAuthUser, RevokeReach, ZOHO_DATA_CENTRES};
use crate::state::SandboxState;
use crate::wire;

/// Route name of `GET /oauth/v2/auth`.
pub const OAUTH_AUTHORIZE: &str = "zoho.oauth_authorize";
/// Route name of `POST /oauth/v2/token`.
pub const OAUTH_TOKEN: &str = "zoho.oauth_token";
/// Route name of `POST /oauth/v2/token/revoke`.
pub const OAUTH_REVOKE: &str = "zoho.oauth_revoke";
/// Route name of `GET /crm/v{n}/users`.
pub const USERINFO: &str = "zoho.userinfo";
/// Route name of paths the stand-in does not serve.
pub const UNKNOWN: &str = "zoho.unknown";

/// Which kind of Zoho host a host is, and its data centre.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Host<'a> {
    /// `accounts.zoho.{dc}`.
    Accounts(&'a str),
    /// `www.zohoapis.{dc}`.
    Api(&'a str),
}

/// The kind and data centre of a Zoho host.
pub(crate) fn host(host: &str) -> Option<Host<'_>> {
    let known = |dc: &str| ZOHO_DATA_CENTRES.iter().any(|(d, _)| *d == dc);
    if let Some(dc) = host.strip_prefix("accounts.zoho.")
        && known(dc)
    {
        return Some(Host::Accounts(dc));
    }
    if let Some(dc) = host.strip_prefix("www.zohoapis.")
        && known(dc)
    {
        return Some(Host::Api(dc));
    }
    None
}

/// A Zoho route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `GET accounts.zoho.{dc}/oauth/v2/auth`.
    OAuthAuthorize,
    /// `POST accounts.zoho.{dc}/oauth/v2/token`.
    OAuthToken,
    /// `POST accounts.zoho.{dc}/oauth/v2/token/revoke?token=…`.
    OAuthRevoke,
    /// `GET www.zohoapis.{dc}/crm/v{n}/users`.
    Users,
    /// A v8 record or field route (see [`super::zoho_crm`]).
    Crm(super::zoho_crm::CrmRoute),
    /// `/crm/v8/actions/watch` (see [`super::zoho_webhooks`]).
    Watch,
}

impl Endpoint {
    /// The route's counter name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Endpoint::OAuthAuthorize => OAUTH_AUTHORIZE,
            Endpoint::OAuthToken => OAUTH_TOKEN,
            Endpoint::OAuthRevoke => OAUTH_REVOKE,
            Endpoint::Users => USERINFO,
            Endpoint::Crm(route) => route.name(),
            Endpoint::Watch => super::zoho_webhooks::ROUTE,
        }
    }
}

/// Whether `path` is `/crm/v{n}/users`.
fn is_users_path(path: &str) -> bool {
    path.strip_prefix("/crm/v")
        .and_then(|rest| rest.strip_suffix("/users"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Matches a request to a Zoho route.
pub(crate) fn route(req: &ProviderRequest) -> Option<Endpoint> {
    let path = req.path.trim_end_matches('/');
    match (host(&req.host)?, &req.method, path) {
        (Host::Accounts(_), &Method::GET, "/oauth/v2/auth") => Some(Endpoint::OAuthAuthorize),
        (Host::Accounts(_), &Method::POST, "/oauth/v2/token") => Some(Endpoint::OAuthToken),
        (Host::Accounts(_), &Method::POST, "/oauth/v2/token/revoke") => Some(Endpoint::OAuthRevoke),
        (Host::Api(_), &Method::GET, p) if is_users_path(p) => Some(Endpoint::Users),
        (Host::Api(_), _, p) if super::zoho_webhooks::is_watch_path(p) => Some(Endpoint::Watch),
        (Host::Api(_), method, p) => super::zoho_crm::route(method, p).map(Endpoint::Crm),
        _ => None,
    }
}

/// Serves a matched Zoho route.
pub(crate) fn handle(endpoint: Endpoint, state: &SandboxState, req: &ProviderRequest) -> Response {
    let provider = OAuthProvider::Zoho;
    let dc = match host(&req.host) {
        Some(Host::Accounts(dc) | Host::Api(dc)) => dc,
        None => return not_found(),
    };
    match endpoint {
        Endpoint::OAuthAuthorize => oauth::authorize(state, req, provider, dc),
        Endpoint::OAuthToken => oauth::token(state, req, provider, dc),
        Endpoint::OAuthRevoke => {
            let token = wire::query_param(req.query.as_deref(), "token")
                .or_else(|| {
                    oauth::params(&req.body)
                        .ok()
                        .and_then(|form| form.get("token").cloned())
                })
                .unwrap_or_default();
            oauth::revoke(state, provider, &token, RevokeReach::Grant, None, Some(dc));
            wire::json(StatusCode::OK, json!({"status": "success"}))
        }
        Endpoint::Users => users(state, req, dc),
        Endpoint::Crm(route) => super::zoho_crm::handle(route, state, req, dc),
        Endpoint::Watch => super::zoho_webhooks::handle(state, req, dc),
    }
}

/// The token of `Authorization: Zoho-oauthtoken …`.
pub(crate) fn zoho_token(headers: &HeaderMap) -> Option<&str> {
    let value = wire::header(headers, "authorization")?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("zoho-oauthtoken") && !token.is_empty()).then_some(token)
}

fn users(state: &SandboxState, req: &ProviderRequest, dc: &str) -> Response {
    match oauth::bearer_access(state, OAuthProvider::Zoho, zoho_token(&req.headers)) {
        AccessCheck::Granted(grant)
            if grant.site == dc && !oauth::scopes_satisfy(&grant.scopes, &users_read_scopes()) =>
        {
            api_error(
                StatusCode::UNAUTHORIZED,
                "OAUTH_SCOPE_MISMATCH",
                "invalid oauth scope to access this URL",
            )
        }
        AccessCheck::Granted(grant) if grant.site == dc => wire::json(
            StatusCode::OK,
            json!({
                "users": [user_json(&grant.user)],
                "info": {"per_page": 200, "count": 1, "page": 1, "more_records": false},
            }),
        ),
        AccessCheck::Missing => api_error(
            StatusCode::UNAUTHORIZED,
            "AUTHENTICATION_FAILURE",
            "Authentication failed",
        ),
        _ => invalid_token(),
    }
}

/// Scopes of which `GET /crm/v{n}/users` needs one.
fn users_read_scopes() -> [String; 2] {
    [
        "ZohoCRM.users.READ".to_owned(),
        "ZohoCRM.users.ALL".to_owned(),
    ]
}

fn user_json(user: &OAuthUser) -> Value {
    let (first, last) = user.name.split_once(' ').unwrap_or(("", &user.name));
    json!({
        "id": user.user_id,
        "email": user.email,
        "full_name": user.name,
        "first_name": first,
        "last_name": last,
        "zuid": user.user_id.get(user.user_id.len().saturating_sub(9)..).unwrap_or_default(),
        "status": "active",
        "confirm": true,
        "role": {"name": "CEO", "id": format!("{}0000000026005", &user.org_id)},
        "profile": {"name": "Administrator", "id": format!("{}0000000026011", &user.org_id)},
        "time_zone": "America/New_York",
        "locale": "en_US",
        "country_locale": "en_US",
        "language": "en_US",
        "created_time": "2024-01-15T09:00:00-05:00",
        "Modified_Time": "2024-01-15T09:00:00-05:00",
    })
}

pub(crate) fn api_error(status: StatusCode, code: &str, message: &str) -> Response {
    wire::json(
        status,
        json!({"code": code, "details": {}, "message": message, "status": "error"}),
    )
}

/// 401 for an expired, revoked, unknown or other-data-centre token.
pub(crate) fn invalid_token() -> Response {
    api_error(
        StatusCode::UNAUTHORIZED,
        "INVALID_TOKEN",
        "invalid oauth token",
    )
}

/// 404 for a path the stand-in does not serve.
pub(crate) fn not_found() -> Response {
    api_error(
        StatusCode::NOT_FOUND,
        "INVALID_URL_PATTERN",
        "Please check if the URL trying to access is a correct one",
    )
}

/// Zoho's API error body for a forced status.
pub(crate) fn error_for_status(status: StatusCode, retry_after: u64) -> Response {
    let response = match status {
        StatusCode::UNAUTHORIZED => return invalid_token(),
        StatusCode::NOT_FOUND => return not_found(),
        StatusCode::TOO_MANY_REQUESTS => api_error(
            status,
            "TOO_MANY_REQUESTS",
            "The number of API requests per minute has exceeded the limit.",
        ),
        s if s.is_server_error() => api_error(
            status,
            "INTERNAL_ERROR",
            "Internal Server Error while processing this request",
        ),
        s => api_error(s, "INVALID_REQUEST", wire::reason(s)),
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

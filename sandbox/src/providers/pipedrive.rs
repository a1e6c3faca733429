//! Pipedrive stand-in, served at `/api.pipedrive.com/v1/…` and at the company domain
//! (`/{company}.pipedrive.com/api/v1/…`, the `api_domain` of OAuth token responses).
//!
//! Auth: `?api_token=` or header `x-api-token`, or an OAuth access token as
//! `Authorization: Bearer` (at the company domain or `api.pipedrive.com`). Errors:
//! `{"success":false,"error":"…","errorCode":N,"error_info":"…"}`; 429 carries
//! `Retry-After`.
//!
//! OAuth at `oauth.pipedrive.com`: `/oauth/authorize`, `/oauth/token` and `/oauth/revoke`,
//! with client authentication by HTTP Basic only.
//!
//! Scopes live on the app: the user accepts the app's whole configured set (always with
//! `base`), and the authorize request's `scope` is ignored, except that an app the
//! sandbox has no set for is granted what was asked that Pipedrive knows (`base`,
//! `deals:read|full`, `contacts:read|full`, `users:read`, …). `GET users/me` needs `base`;
//! an OAuth token without it gets 403 `{"success":false,"error":"Scope and URL
//! mismatch","errorCode":403}`. API tokens carry the user's full access. The persons and
//! organizations routes ([`super::pipedrive_crm`]) add the token-based rate limits and
//! daily budget; `users/me` and OAuth do not count against them.

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::ProviderRequest;
use crate::oauth::{self, AccessCheck, OAuthProvider, OAuthUser, RevokeReach};
use crate::state::{Account, ProviderAccount, SandboxState};
use crate::wire;

/// Route name of `GET /v1/users/me`.
pub const USERS_ME: &str = "pipedrive.users_me";
/// Route name of `GET oauth.pipedrive.com/oauth/authorize`.
pub const OAUTH_AUTHORIZE: &str = "pipedrive.oauth_authorize";
/// Route name of `POST oauth.pipedrive.com/oauth/token`.
pub const OAUTH_TOKEN: &str = "pipedrive.oauth_token";
/// Route name of `POST oauth.pipedrive.com/oauth/revoke`.
pub const OAUTH_REVOKE: &str = "pipedrive.oauth_revoke";
/// Route name of paths the stand-in does not serve.
pub const UNKNOWN: &str = "pipedrive.unknown";

/// The host of Pipedrive's API-token endpoints.
pub const API_HOST: &str = "api.pipedrive.com";
/// The host of Pipedrive's OAuth server.
pub const OAUTH_HOST: &str = "oauth.pipedrive.com";
const HOST_SUFFIX: &str = ".pipedrive.com";
/// Hosts under `pipedrive.com` that are not API hosts.
const NON_API_SUBDOMAINS: [&str; 2] = ["oauth", "www"];
const ERROR_INFO: &str =
    "Please check developers.pipedrive.com for more information about Pipedrive API.";

/// A Pipedrive route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `GET /v1/users/me`: the authenticated user.
    UsersMe,
    /// `GET oauth.pipedrive.com/oauth/authorize`.
    OAuthAuthorize,
    /// `POST oauth.pipedrive.com/oauth/token`.
    OAuthToken,
    /// `POST oauth.pipedrive.com/oauth/revoke`.
    OAuthRevoke,
    /// A persons/organizations route (see [`super::pipedrive_crm`]).
    Crm(super::pipedrive_crm::PdRoute),
}

impl Endpoint {
    /// The route's counter name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Endpoint::UsersMe => USERS_ME,
            Endpoint::OAuthAuthorize => OAUTH_AUTHORIZE,
            Endpoint::OAuthToken => OAUTH_TOKEN,
            Endpoint::OAuthRevoke => OAUTH_REVOKE,
            Endpoint::Crm(route) => route.name(),
        }
    }
}

/// Whether `host` serves Pipedrive's REST API (`api.` or a company domain).
pub(crate) fn is_api_host(host: &str) -> bool {
    host.strip_suffix(HOST_SUFFIX).is_some_and(|sub| {
        !sub.is_empty() && !sub.contains('.') && !NON_API_SUBDOMAINS.contains(&sub)
    })
}

/// The company of a company-domain host; `None` for `api.pipedrive.com`.
pub(crate) fn company_of(host: &str) -> Option<&str> {
    if host == API_HOST {
        None
    } else {
        host.strip_suffix(HOST_SUFFIX)
    }
}

/// Matches a request to a Pipedrive route.
pub(crate) fn route(req: &ProviderRequest) -> Option<Endpoint> {
    if req.host == OAUTH_HOST {
        return match (&req.method, req.path.as_str()) {
            (&Method::GET, "/oauth/authorize") => Some(Endpoint::OAuthAuthorize),
            (&Method::POST, "/oauth/token") => Some(Endpoint::OAuthToken),
            (&Method::POST, "/oauth/revoke") => Some(Endpoint::OAuthRevoke),
            _ => None,
        };
    }
    let path = req.path.strip_prefix("/api").unwrap_or(&req.path);
    match (&req.method, path) {
        (&Method::GET, "/v1/users/me") => Some(Endpoint::UsersMe),
        _ => super::pipedrive_crm::route(&req.method, &req.path).map(Endpoint::Crm),
    }
}

/// Serves a matched Pipedrive route.
pub(crate) fn handle(endpoint: Endpoint, state: &SandboxState, req: &ProviderRequest) -> Response {
    match endpoint {
        Endpoint::UsersMe => users_me(state, req),
        Endpoint::OAuthAuthorize => oauth::authorize(state, req, OAuthProvider::Pipedrive, ""),
        Endpoint::OAuthToken => oauth::token(state, req, OAuthProvider::Pipedrive, ""),
        Endpoint::OAuthRevoke => revoke(state, req),
        Endpoint::Crm(route) => super::pipedrive_crm::handle(route, state, req),
    }
}

fn users_me(state: &SandboxState, req: &ProviderRequest) -> Response {
    if let Some(token) = wire::bearer_token(&req.headers) {
        return match oauth::bearer_access(state, OAuthProvider::Pipedrive, Some(token)) {
            AccessCheck::Granted(grant)
                if company_of(&req.host).is_none_or(|c| c == grant.user.company_domain)
                    && !grant.scopes.iter().any(|scope| scope == "base") =>
            {
                scope_mismatch()
            }
            AccessCheck::Granted(grant)
                if company_of(&req.host).is_none_or(|c| c == grant.user.company_domain) =>
            {
                wire::json(
                    StatusCode::OK,
                    json!({"success": true, "data": oauth_user_json(&grant.user)}),
                )
            }
            _ => unauthorized(),
        };
    }
    match authenticate(state, req) {
        Some(account) => wire::json(
            StatusCode::OK,
            json!({"success": true, "data": user_json(&account)}),
        ),
        None => unauthorized(),
    }
}

/// `POST /oauth/revoke` (Basic client auth; form `token`, `token_type_hint`): a refresh
/// token revokes the grant, an access token itself. 200 even for unknown tokens.
fn revoke(state: &SandboxState, req: &ProviderRequest) -> Response {
    let provider = OAuthProvider::Pipedrive;
    let form = match oauth::params(&req.body) {
        Ok(form) => form,
        Err(_) => {
            return oauth::client_error(
                provider,
                oauth::TokenError::InvalidRequest("a parameter was given more than once"),
                false,
            );
        }
    };
    let client = match oauth::authenticate_client(state, provider, req, &form) {
        Ok(client) => client,
        Err((error, basic)) => return oauth::client_error(provider, error, basic),
    };
    let Some(token) = form.get("token").filter(|t| !t.is_empty()) else {
        return oauth::client_error(
            provider,
            oauth::TokenError::InvalidRequest("token is required"),
            false,
        );
    };
    oauth::revoke(
        state,
        provider,
        token,
        RevokeReach::AccessTokenOnly,
        Some(&client.client_id),
        None,
    );
    StatusCode::OK.into_response()
}

/// The account whose API token is in the query or the `x-api-token` header.
pub(crate) fn authenticate(state: &SandboxState, req: &ProviderRequest) -> Option<Account> {
    let token = wire::query_param(req.query.as_deref(), "api_token")
        .or_else(|| wire::header(&req.headers, "x-api-token").map(str::to_owned))?;
    let company = company_of(&req.host);
    state.find_account(|account| {
        matches!(&account.provider, ProviderAccount::Pipedrive { company_domain, api_token, .. }
            if api_token.matches(&token) && company.is_none_or(|c| c == company_domain))
    })
}

fn user_json(account: &Account) -> Value {
    let (company_domain, company_id) = match &account.provider {
        ProviderAccount::Pipedrive {
            company_domain,
            company_id,
            ..
        } => (company_domain.as_str(), *company_id),
        _ => ("", 0),
    };
    person_json(
        json!(account.id),
        &account.name,
        &account.email,
        company_id,
        company_domain,
    )
}

fn oauth_user_json(user: &OAuthUser) -> Value {
    let id = user
        .user_id
        .parse::<u64>()
        .map_or_else(|_| json!(user.user_id), |n| json!(n));
    person_json(
        id,
        &user.name,
        &user.email,
        user.company_id,
        &user.company_domain,
    )
}

fn person_json(id: Value, name: &str, email: &str, company_id: u64, company_domain: &str) -> Value {
    json!({
        "id": id,
        "name": name,
        "default_currency": "USD",
        "locale": "en_US",
        "lang": 1,
        "email": email,
        "phone": null,
        "activated": true,
        "last_login": "2024-01-15 09:00:00",
        "created": "2024-01-01 09:00:00",
        "modified": "2024-01-15 09:00:00",
        "has_created_company": true,
        "access": [{"app": "sales", "admin": true, "permission_set_id": "sandbox-admin"}],
        "active_flag": true,
        "timezone_name": "America/New_York",
        "timezone_offset": "-05:00",
        "role_id": 1,
        "icon_url": null,
        "is_you": true,
        "is_deleted": false,
        "company_id": company_id,
        "company_name": "Acme",
        "company_domain": company_domain,
        "company_country": "US",
        "company_industry": null,
        "language": {"language_code": "en", "country_code": "US"}
    })
}

pub(crate) fn error_body(status: StatusCode, message: &str) -> Response {
    wire::json(
        status,
        json!({
            "success": false,
            "error": message,
            "errorCode": status.as_u16(),
            "error_info": ERROR_INFO,
        }),
    )
}

/// 403 for an OAuth token whose scopes do not cover the endpoint.
pub(crate) fn scope_mismatch() -> Response {
    wire::json(
        StatusCode::FORBIDDEN,
        json!({"success": false, "error": "Scope and URL mismatch", "errorCode": 403}),
    )
}

/// 401 for a missing or wrong token.
pub(crate) fn unauthorized() -> Response {
    error_body(StatusCode::UNAUTHORIZED, "unauthorized access")
}

/// 404 for a path the stand-in does not serve.
pub(crate) fn not_found() -> Response {
    error_body(StatusCode::NOT_FOUND, "Unknown method .")
}

/// Pipedrive's error body for a forced status.
pub(crate) fn error_for_status(status: StatusCode, retry_after: u64) -> Response {
    match status {
        StatusCode::UNAUTHORIZED => unauthorized(),
        StatusCode::NOT_FOUND => not_found(),
        StatusCode::TOO_MANY_REQUESTS => {
            wire::with_retry_after(error_body(status, "Request over limit"), retry_after)
        }
        _ => error_body(status, wire::reason(status)),
    }
}

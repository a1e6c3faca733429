//! Pipedrive stand-in, served at `/api.pipedrive.com/v1/…` and at the company domain
//! (`/{company}.pipedrive.com/api/v1/…`, the `api_domain` of OAuth token responses).
//!
//! Auth: `?api_token=` or header `x-api-token`. Errors: `{"success":false,"error":"…",
//! "errorCode":N,"error_info":"…"}`; 429 carries `Retry-After`.

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::ProviderRequest;
use crate::state::{Account, ProviderAccount, SandboxState};
use crate::wire;

/// Route name of `GET /v1/users/me`.
pub const USERS_ME: &str = "pipedrive.users_me";
/// Route name of paths the stand-in does not serve.
pub const UNKNOWN: &str = "pipedrive.unknown";

/// The host of Pipedrive's API-token endpoints.
pub const API_HOST: &str = "api.pipedrive.com";
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
}

impl Endpoint {
    /// The route's counter name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Endpoint::UsersMe => USERS_ME,
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
fn company_of(host: &str) -> Option<&str> {
    if host == API_HOST {
        None
    } else {
        host.strip_suffix(HOST_SUFFIX)
    }
}

/// Matches a request to a Pipedrive route.
pub(crate) fn route(req: &ProviderRequest) -> Option<Endpoint> {
    let path = req.path.strip_prefix("/api").unwrap_or(&req.path);
    match (&req.method, path) {
        (&Method::GET, "/v1/users/me") => Some(Endpoint::UsersMe),
        _ => None,
    }
}

/// Serves a matched Pipedrive route.
pub(crate) fn handle(endpoint: Endpoint, state: &SandboxState, req: &ProviderRequest) -> Response {
    let Some(account) = authenticate(state, req) else {
        return unauthorized();
    };
    match endpoint {
        Endpoint::UsersMe => wire::json(
            StatusCode::OK,
            json!({"success": true, "data": user_json(&account)}),
        ),
    }
}

/// The account whose API token is in the query or the `x-api-token` header.
fn authenticate(state: &SandboxState, req: &ProviderRequest) -> Option<Account> {
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
    json!({
        "id": account.id,
        "name": account.name,
        "default_currency": "USD",
        "locale": "en_US",
        "lang": 1,
        "email": account.email,
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

fn error_body(status: StatusCode, message: &str) -> Response {
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

/// 401 for a missing or wrong token.
fn unauthorized() -> Response {
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

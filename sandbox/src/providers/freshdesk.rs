//! Freshdesk stand-in, served at `/{subdomain}.freshdesk.com/api/v2/…`.
//!
//! Auth: `Authorization: Basic base64("{api_key}:X")` (the password is ignored, as in
//! Freshdesk). Errors: `{"code":"…","message":"…"}`; 429 carries `Retry-After`.
//!
//! Solutions (knowledge base) routes under `/api/v2/solutions/…` and `/api/v2/settings/helpdesk`
//! are served by [`super::freshdesk_kb`].

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::ProviderRequest;
use crate::state::{Account, ProviderAccount, SandboxState};
use crate::wire;

/// Route name of `GET /api/v2/agents/me`.
pub const AGENTS_ME: &str = "freshdesk.agents_me";
/// Route name of paths the stand-in does not serve.
pub const UNKNOWN: &str = "freshdesk.unknown";

const HOST_SUFFIX: &str = ".freshdesk.com";

/// A Freshdesk route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `GET /api/v2/agents/me`: the authenticated agent.
    AgentsMe,
    /// A knowledge-base route (`GET /api/v2/solutions/…`, `/api/v2/settings/helpdesk`).
    Solutions(super::freshdesk_kb::KbRoute),
}

impl Endpoint {
    /// The route's counter name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Endpoint::AgentsMe => AGENTS_ME,
            Endpoint::Solutions(route) => route.name(),
        }
    }
}

/// The `acme` of `acme.freshdesk.com`.
pub(crate) fn subdomain(host: &str) -> Option<&str> {
    let sub = host.strip_suffix(HOST_SUFFIX)?;
    (!sub.is_empty() && !sub.contains('.')).then_some(sub)
}

/// Matches a request to a Freshdesk route.
pub(crate) fn route(req: &ProviderRequest) -> Option<Endpoint> {
    match (&req.method, req.path.as_str()) {
        (&Method::GET, "/api/v2/agents/me") => Some(Endpoint::AgentsMe),
        _ => super::freshdesk_kb::route(req).map(Endpoint::Solutions),
    }
}

/// Serves a matched Freshdesk route.
pub(crate) fn handle(endpoint: Endpoint, state: &SandboxState, req: &ProviderRequest) -> Response {
    let Some(sub) = subdomain(&req.host) else {
        return not_found_body();
    };
    if !helpdesk_exists(state, sub) {
        return unknown_helpdesk(&req.host);
    }
    if let Endpoint::Solutions(route) = endpoint {
        // Its own budget, credentials and privilege checks.
        return super::freshdesk_kb::handle(route, state, sub, req);
    }
    let Some(account) = authenticate(state, sub, req) else {
        return unauthorized();
    };
    match endpoint {
        Endpoint::AgentsMe => wire::json(StatusCode::OK, agent_json(&account)),
        Endpoint::Solutions(route) => super::freshdesk_kb::handle(route, state, sub, req),
    }
}

/// The account whose API key is the Basic user.
pub(crate) fn authenticate(
    state: &SandboxState,
    sub: &str,
    req: &ProviderRequest,
) -> Option<Account> {
    let (key, _password) = wire::basic_credentials(&req.headers)?;
    state.find_account(|account| {
        matches!(&account.provider, ProviderAccount::Freshdesk { subdomain, api_key }
            if subdomain == sub && api_key.matches(&key))
    })
}

pub(crate) fn helpdesk_exists(state: &SandboxState, sub: &str) -> bool {
    state.any_account(|account| {
        matches!(&account.provider, ProviderAccount::Freshdesk { subdomain, .. } if subdomain == sub)
    })
}

fn agent_json(account: &Account) -> Value {
    json!({
        "available": true,
        "occasional": false,
        "id": account.id,
        "ticket_scope": 1,
        "signature": null,
        "group_ids": [],
        "role_ids": [43_000_000_101_u64],
        "skill_ids": [],
        "available_since": null,
        "contact": {
            "active": true,
            "email": account.email,
            "job_title": null,
            "language": "en",
            "last_login_at": "2024-01-15T09:00:00Z",
            "mobile": null,
            "name": account.name,
            "phone": null,
            "time_zone": "Eastern Time (US & Canada)",
            "created_at": "2024-01-15T09:00:00Z",
            "updated_at": "2024-01-15T09:00:00Z"
        },
        "created_at": "2024-01-15T09:00:00Z",
        "updated_at": "2024-01-15T09:00:00Z",
        "last_active_at": "2024-01-15T09:00:00Z",
        "type": "support_agent",
        "focus_mode": true,
        "agent_level_id": null
    })
}

/// 401 for missing or wrong credentials.
pub(crate) fn unauthorized() -> Response {
    wire::json(
        StatusCode::UNAUTHORIZED,
        json!({
            "code": "invalid_credentials",
            "message": "You have to be logged in to perform this action."
        }),
    )
}

/// 404 for a subdomain with no account.
pub(crate) fn unknown_helpdesk(host: &str) -> Response {
    wire::json(
        StatusCode::NOT_FOUND,
        json!({
            "code": "account_not_found",
            "message": format!("There is no helpdesk at {host}.")
        }),
    )
}

pub(crate) fn not_found_body() -> Response {
    wire::json(
        StatusCode::NOT_FOUND,
        json!({"code": "not_found", "message": "The requested resource could not be found."}),
    )
}

/// 404 for a path the stand-in does not serve.
pub(crate) fn not_found(state: &SandboxState, req: &ProviderRequest) -> Response {
    match subdomain(&req.host) {
        Some(sub) if !helpdesk_exists(state, sub) => unknown_helpdesk(&req.host),
        _ => not_found_body(),
    }
}

/// Freshdesk's error body for a forced status.
pub(crate) fn error_for_status(status: StatusCode, retry_after: u64) -> Response {
    match status {
        StatusCode::UNAUTHORIZED => unauthorized(),
        StatusCode::NOT_FOUND => not_found_body(),
        StatusCode::TOO_MANY_REQUESTS => wire::with_retry_after(
            wire::json(
                status,
                json!({
                    "code": "rate_limit_exceeded",
                    "message": "You have exceeded the limit of requests per minute."
                }),
            ),
            retry_after,
        ),
        _ => wire::json(
            status,
            json!({"code": wire::snake_reason(status), "message": wire::reason(status)}),
        ),
    }
}

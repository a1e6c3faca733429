//! Zendesk Support stand-in, served at `/{subdomain}.zendesk.com/api/v2/…`.
//!
//! Auth: API token as `Authorization: Basic base64("{email}/token:{api_token}")`.
//! Errors: `{"error":"Couldn't authenticate you"}` (401), `{"error":"<Name>",
//! "description":"…"}` otherwise, and the "No help desk at …" body for an unknown
//! subdomain. 429 and 503 carry `Retry-After`.

use axum::http::header::WWW_AUTHENTICATE;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::ProviderRequest;
use crate::state::{Account, ProviderAccount, SandboxState};
use crate::wire;

/// Route name of `GET /api/v2/users/me.json`.
pub const USERS_ME: &str = "zendesk.users_me";
/// Route name of paths the stand-in does not serve.
pub const UNKNOWN: &str = "zendesk.unknown";

const HOST_SUFFIX: &str = ".zendesk.com";

/// A Zendesk route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `GET /api/v2/users/me(.json)`: the authenticated user.
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

/// The `acme` of `acme.zendesk.com`.
pub(crate) fn subdomain(host: &str) -> Option<&str> {
    let sub = host.strip_suffix(HOST_SUFFIX)?;
    (!sub.is_empty() && !sub.contains('.')).then_some(sub)
}

/// Matches a request to a Zendesk route.
pub(crate) fn route(req: &ProviderRequest) -> Option<Endpoint> {
    match (&req.method, req.path.as_str()) {
        (&Method::GET, "/api/v2/users/me.json" | "/api/v2/users/me") => Some(Endpoint::UsersMe),
        _ => None,
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
    let Some(account) = authenticate(state, sub, req) else {
        return unauthorized();
    };
    match endpoint {
        Endpoint::UsersMe => {
            wire::json(StatusCode::OK, json!({ "user": user_json(&account, sub) }))
        }
    }
}

/// The account whose email and API token are in the request's Basic credentials.
fn authenticate(state: &SandboxState, sub: &str, req: &ProviderRequest) -> Option<Account> {
    let (user, token) = wire::basic_credentials(&req.headers)?;
    let email = user.strip_suffix("/token")?;
    state.find_account(|account| {
        account.email.eq_ignore_ascii_case(email)
            && matches!(&account.provider, ProviderAccount::Zendesk { subdomain, api_token }
                if subdomain == sub && api_token.matches(&token))
    })
}

fn help_desk_exists(state: &SandboxState, sub: &str) -> bool {
    state.any_account(|account| {
        matches!(&account.provider, ProviderAccount::Zendesk { subdomain, .. } if subdomain == sub)
    })
}

fn user_json(account: &Account, sub: &str) -> Value {
    let id = account.id;
    json!({
        "id": id,
        "url": format!("https://{sub}.zendesk.com/api/v2/users/{id}.json"),
        "name": account.name,
        "email": account.email,
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
fn unauthorized() -> Response {
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
fn no_help_desk(host: &str) -> Response {
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

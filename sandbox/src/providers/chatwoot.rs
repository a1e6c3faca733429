//! Chatwoot stand-in, served at `/app.chatwoot.com/api/v1/…` (cloud) and at the host of
//! any registered self-hosted Chatwoot account.
//!
//! Auth: header `api_access_token`. Errors: Devise's `{"errors":["…"]}` for 401, Rails'
//! `{"error":"…"}` for 404 and `{"status":N,"error":"…"}` for 5xx; 429 is Rack::Attack's
//! plain-text `Retry later` without `Retry-After`, as Chatwoot's default throttling sends.

use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::ProviderRequest;
use crate::state::{Account, ProviderAccount, SandboxState};
use crate::wire;

/// Route name of `GET /api/v1/profile`.
pub const PROFILE: &str = "chatwoot.profile";
/// Route name of paths the stand-in does not serve.
pub const UNKNOWN: &str = "chatwoot.unknown";

/// A Chatwoot route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `GET /api/v1/profile`: the user behind the access token.
    Profile,
}

impl Endpoint {
    /// The route's counter name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Endpoint::Profile => PROFILE,
        }
    }
}

/// Matches a request to a Chatwoot route.
pub(crate) fn route(req: &ProviderRequest) -> Option<Endpoint> {
    match (&req.method, req.path.as_str()) {
        (&Method::GET, "/api/v1/profile") => Some(Endpoint::Profile),
        _ => None,
    }
}

/// Serves a matched Chatwoot route.
pub(crate) fn handle(endpoint: Endpoint, state: &SandboxState, req: &ProviderRequest) -> Response {
    let Some(account) = authenticate(state, req) else {
        return unauthorized();
    };
    match endpoint {
        Endpoint::Profile => wire::json(StatusCode::OK, profile_json(&account)),
    }
}

/// The account of this host whose token is in the `api_access_token` header.
pub(crate) fn authenticate(state: &SandboxState, req: &ProviderRequest) -> Option<Account> {
    let token = wire::header(&req.headers, "api_access_token")?;
    state.find_account(|account| {
        matches!(&account.provider, ProviderAccount::Chatwoot { host, api_access_token, .. }
            if *host == req.host && api_access_token.matches(token))
    })
}

fn profile_json(account: &Account) -> Value {
    let (account_id, account_name) = match &account.provider {
        ProviderAccount::Chatwoot {
            account_id,
            account_name,
            ..
        } => (*account_id, account_name.as_str()),
        _ => (1, ""),
    };
    json!({
        "id": account.id,
        "account_id": account_id,
        "available_name": account.name,
        "avatar_url": "",
        "confirmed": true,
        "display_name": null,
        "message_signature": null,
        "email": account.email,
        "inviter_id": null,
        "name": account.name,
        "provider": "email",
        "role": "administrator",
        "ui_settings": {},
        "uid": account.email,
        "type": null,
        "custom_attributes": {},
        "accounts": [{
            "id": account_id,
            "name": account_name,
            "status": "active",
            "active_at": null,
            "role": "administrator",
            "permissions": [],
            "availability": "online",
            "availability_status": "online",
            "auto_offline": true,
            "custom_role_id": null,
            "custom_role": null
        }]
    })
}

/// 401 for a missing or wrong token.
fn unauthorized() -> Response {
    wire::json(
        StatusCode::UNAUTHORIZED,
        json!({"errors": ["You need to sign in or sign up before continuing."]}),
    )
}

/// 404 for a path the stand-in does not serve.
pub(crate) fn not_found() -> Response {
    wire::json(
        StatusCode::NOT_FOUND,
        json!({"error": "Resource could not be found"}),
    )
}

/// Chatwoot's error body for a forced status.
pub(crate) fn error_for_status(status: StatusCode) -> Response {
    match status {
        StatusCode::UNAUTHORIZED => unauthorized(),
        StatusCode::NOT_FOUND => not_found(),
        StatusCode::TOO_MANY_REQUESTS => (
            status,
            [(CONTENT_TYPE, HeaderValue::from_static("text/plain"))],
            "Retry later\n",
        )
            .into_response(),
        status if status.is_server_error() => wire::json(
            status,
            json!({"status": status.as_u16(), "error": wire::reason(status)}),
        ),
        _ => wire::json(status, json!({"error": wire::reason(status)})),
    }
}

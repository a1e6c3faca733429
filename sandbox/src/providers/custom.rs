//! Stand-in for a tenant's own REST API ("Custom API" connections), served at
//! `/custom.example/api/…` or at the host and base path of any registered custom account.
//!
//! Auth: any one of `Authorization: Bearer`, `X-Api-Key`, or Basic user/password.
//! `GET {base}/me` and every other `GET {base}/…` answer the account's identity.
//! Errors: `{"error":"<snake_case>"}`; 429 and 503 carry `Retry-After`.

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::json;

use super::ProviderRequest;
use crate::state::{Account, ProviderAccount, SandboxState};
use crate::wire;

/// Route name of `GET {base}/me`.
pub const ME: &str = "custom.me";
/// Route name of any other `GET {base}/…`.
pub const GET: &str = "custom.get";
/// Route name of paths the stand-in does not serve.
pub const UNKNOWN: &str = "custom.unknown";

/// A custom API route.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `GET {base}/me`.
    Me {
        /// The account's base path the request fell under.
        base_path: String,
    },
    /// Any other `GET {base}/…`.
    Get {
        /// The account's base path the request fell under.
        base_path: String,
    },
    /// `GET {base}/kb/{style}`: knowledge-base articles ([`super::custom_kb`]).
    Kb {
        /// The account's base path the request fell under.
        base_path: String,
        /// Which pagination style.
        style: super::custom_kb::KbStyle,
    },
}

impl Endpoint {
    /// The route's counter name.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Endpoint::Me { .. } => ME,
            Endpoint::Get { .. } => GET,
            Endpoint::Kb { style, .. } => style.name(),
        }
    }

    fn base_path(&self) -> &str {
        match self {
            Endpoint::Me { base_path }
            | Endpoint::Get { base_path }
            | Endpoint::Kb { base_path, .. } => base_path,
        }
    }
}

/// Matches a request to a base path registered for its host.
pub(crate) fn route(state: &SandboxState, req: &ProviderRequest) -> Option<Endpoint> {
    if req.method != Method::GET {
        return None;
    }
    // The longest matching base path wins, so `/api/v2` is preferred over `/api`.
    let base_path = state
        .accounts()
        .into_iter()
        .filter_map(|account| match account.provider {
            ProviderAccount::Custom {
                host, base_path, ..
            } if host == req.host && under(&req.path, &base_path) => Some(base_path),
            _ => None,
        })
        .max_by_key(String::len)?;
    if let Some(style) = super::custom_kb::style(&req.path, &base_path) {
        return Some(Endpoint::Kb { base_path, style });
    }
    if req.path == format!("{base_path}/me") {
        Some(Endpoint::Me { base_path })
    } else {
        Some(Endpoint::Get { base_path })
    }
}

/// Whether `path` is `base` or below it.
pub(crate) fn under(path: &str, base: &str) -> bool {
    path.strip_prefix(base)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Serves a matched custom API route.
pub(crate) fn handle(endpoint: Endpoint, state: &SandboxState, req: &ProviderRequest) -> Response {
    if let Endpoint::Kb { base_path, style } = &endpoint {
        return super::custom_kb::handle(*style, state, req, base_path);
    }
    match authenticate(state, req, endpoint.base_path()) {
        Some(account) => wire::json(
            StatusCode::OK,
            json!({
                "id": format!("custom-{}", account.id),
                "name": account.name,
                "email": account.email,
            }),
        ),
        None => unauthorized(),
    }
}

/// The account of this host and base path accepting any of the request's credentials.
pub(crate) fn authenticate(
    state: &SandboxState,
    req: &ProviderRequest,
    base: &str,
) -> Option<Account> {
    let bearer = wire::bearer_token(&req.headers);
    let api_key = wire::header(&req.headers, "x-api-key");
    let basic = wire::basic_credentials(&req.headers);
    state.find_account(|account| {
        let ProviderAccount::Custom {
            host,
            base_path,
            bearer_token,
            api_key: account_key,
            username,
            password,
        } = &account.provider
        else {
            return false;
        };
        if *host != req.host || base_path != base {
            return false;
        }
        let bearer_ok = bearer_token
            .as_ref()
            .zip(bearer)
            .is_some_and(|(secret, given)| secret.matches(given));
        let key_ok = account_key
            .as_ref()
            .zip(api_key)
            .is_some_and(|(secret, given)| secret.matches(given));
        let basic_ok = username
            .as_ref()
            .zip(password.as_ref())
            .zip(basic.as_ref())
            .is_some_and(|((user, secret), (given_user, given_password))| {
                user == given_user && secret.matches(given_password)
            });
        bearer_ok || key_ok || basic_ok
    })
}

fn error_body(status: StatusCode, code: &str) -> Response {
    wire::json(status, json!({ "error": code }))
}

/// 401 when no accepted credential is present.
pub(crate) fn unauthorized() -> Response {
    error_body(StatusCode::UNAUTHORIZED, "unauthorized")
}

/// 404 for a path outside every registered base path.
pub(crate) fn not_found() -> Response {
    error_body(StatusCode::NOT_FOUND, "not_found")
}

/// The custom API's error body for a forced status.
pub(crate) fn error_for_status(status: StatusCode, retry_after: u64) -> Response {
    let response = match status {
        StatusCode::UNAUTHORIZED => unauthorized(),
        StatusCode::TOO_MANY_REQUESTS => error_body(status, "rate_limited"),
        _ => error_body(status, &wire::snake_reason(status)),
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

//! TechnologyOne CiAnywhere stand-in, host side: `{site}.t1cloud.com`, Basic auth of an
//! integration user, and the answer envelope (`DataSet`, `Messages`,
//! `TotalRecordCount`). TechnologyOne publishes no API reference: everything here is
//! the catalogue's assumption (see `sandbox/DISPATCH_STANDINS.md`).
//!
//! Routes (dispatch actions, `crate::actions::technologyone`) live under
//! `/T1Default/CiAnywhere/Web/{SITE}/Api`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::json;

use super::ProviderRequest;
use crate::state::{Account, ProviderAccount, SandboxState};
use crate::wire;

/// Route name of paths the stand-in does not serve.
pub const UNKNOWN: &str = "technologyone.unknown";

/// The `{site}` of `{site}.t1cloud.com`.
pub(crate) fn site(host: &str) -> Option<&str> {
    let site = host.strip_suffix(".t1cloud.com")?;
    crate::state::dns_label(site).is_some().then_some(site)
}

/// The account whose integration user is in the request's Basic credentials (user names
/// compare case-insensitively: CiAnywhere upper-cases them).
pub(crate) fn authenticate(state: &SandboxState, req: &ProviderRequest) -> Option<Account> {
    let site_name = site(&req.host)?;
    super::basic_account(state, req, |account, user, pass| {
        matches!(account, ProviderAccount::Technologyone { site, username, password }
            if site == site_name && username.eq_ignore_ascii_case(user) && password.matches(pass))
    })
}

/// The envelope with one error message: `{"DataSet":null,"Messages":[…],"TotalRecordCount":0}`.
pub(crate) fn error(status: StatusCode, message: &str) -> Response {
    wire::json(
        status,
        json!({
            "DataSet": null,
            "Messages": [{"Type": "Error", "Message": message}],
            "TotalRecordCount": 0,
        }),
    )
}

/// 401 with a Basic challenge.
pub(crate) fn unauthorized() -> Response {
    let mut response = error(StatusCode::UNAUTHORIZED, "Authentication failed.");
    response.headers_mut().insert(
        "www-authenticate",
        HeaderValue::from_static("Basic realm=\"CiAnywhere\""),
    );
    response
}

/// 404 for a path (or service) the stand-in does not serve.
pub(crate) fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "The requested resource was not found.",
    )
}

/// TechnologyOne's (assumed) error body for a forced status.
pub(crate) fn error_for_status(status: StatusCode, retry_after: u64) -> Response {
    if status == StatusCode::UNAUTHORIZED {
        return unauthorized();
    }
    let response = error(status, wire::reason(status));
    wire::with_retry_after_on_throttle(response, retry_after)
}

//! SAP Sales and Service Cloud (C4C) stand-in, host side: `{tenant}.crm.ondemand.com`,
//! Basic auth of a technical user, the OData v2 error body and the CSRF session.
//!
//! Every route is a dispatch action (`crate::actions::sap`): the service root and
//! `$metadata` (the CSRF fetch), `ServiceRequestCollection`,
//! `ServiceRequestTextCollectionCollection` and `PhoneCallCollection`.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::ProviderRequest;
use crate::state::{Account, ProviderAccount, SandboxState};
use crate::wire;

/// Route name of paths the stand-in does not serve.
pub const UNKNOWN: &str = "sap.unknown";

/// The OData service every route lives under.
pub const SERVICE_ROOT: &str = "/sap/c4c/odata/v1/c4codataapi";

/// The `{tenant}` of `{tenant}.crm.ondemand.com`.
pub(crate) fn tenant(host: &str) -> Option<&str> {
    let tenant = host.strip_suffix(".crm.ondemand.com")?;
    crate::state::dns_label(tenant).is_some().then_some(tenant)
}

/// The account whose technical user is in the request's Basic credentials.
pub(crate) fn authenticate(state: &SandboxState, req: &ProviderRequest) -> Option<Account> {
    let tenant_name = tenant(&req.host)?;
    super::basic_account(state, req, |account, user, pass| {
        matches!(account, ProviderAccount::Sap { tenant, username, password }
            if tenant == tenant_name && username.eq_ignore_ascii_case(user) && password.matches(pass))
    })
}

/// The OData v2 error body `{"error":{"code","message":{"lang","value"},"innererror"}}`.
pub(crate) fn odata_error(status: StatusCode, code: &str, message: &str) -> Response {
    wire::json(
        status,
        json!({"error": {
            "code": code,
            "message": {"lang": "en", "value": message},
            "innererror": {
                "transactionid": wire::correlation_id().replace('-', "").to_ascii_uppercase(),
                "timestamp": crate::actions::now_rfc3339(),
                "errordetails": [{"code": code, "message": message, "severity": "error"}],
            },
        }}),
    )
}

/// 401 for missing or wrong credentials: SAP answers with an HTML logon page; the
/// stand-in sends a short HTML body and a Basic challenge.
pub(crate) fn unauthorized() -> Response {
    let mut response = (
        StatusCode::UNAUTHORIZED,
        [("content-type", "text/html; charset=utf-8")],
        "<html><head><title>Logon Error Message</title></head><body>Anmeldung fehlgeschlagen / Logon failed</body></html>",
    )
        .into_response();
    response.headers_mut().insert(
        "www-authenticate",
        HeaderValue::from_static("Basic realm=\"SAP NetWeaver Application Server\""),
    );
    response
}

/// 403 for a write without a valid CSRF token (and its session cookie).
pub(crate) fn csrf_required() -> Response {
    let mut response = (
        StatusCode::FORBIDDEN,
        [("content-type", "text/plain; charset=utf-8")],
        "CSRF token validation failed",
    )
        .into_response();
    response
        .headers_mut()
        .insert("x-csrf-token", HeaderValue::from_static("Required"));
    response
}

/// 404 for a path the stand-in does not serve.
pub(crate) fn not_found() -> Response {
    odata_error(
        StatusCode::NOT_FOUND,
        "/IWFND/MED/170",
        "No service found for namespace , name , version 0001",
    )
}

/// SAP's error body for a forced status.
pub(crate) fn error_for_status(status: StatusCode, retry_after: u64) -> Response {
    if status == StatusCode::UNAUTHORIZED {
        return unauthorized();
    }
    let response = odata_error(
        status,
        &wire::snake_reason(status).to_ascii_uppercase(),
        wire::reason(status),
    );
    wire::with_retry_after_on_throttle(response, retry_after)
}

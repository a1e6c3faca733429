//! Microsoft Dynamics 365 stand-in: the Microsoft identity platform at
//! `/login.microsoftonline.com/{tenant}/oauth2/v2.0/{authorize,token}` and the Dataverse
//! Web API's `WhoAmI` at `/{org}.{crm_region}.dynamics.com/api/data/v9.2/WhoAmI`.
//!
//! An access token is good only at the environment its scopes name as the resource
//! (`https://{env}/user_impersonation` or `https://{env}/.default`): the token's audience.
//! A token for another resource, or with only `openid profile email offline_access`
//! (Microsoft then issues a Graph token), gets the Web API's 401 with an empty body and
//! `WWW-Authenticate: Bearer authorization_uri=…, resource_id=https://{env}/`, as
//! Dataverse answers a token whose `aud` is not the environment. Scopes at authorize:
//! `openid profile email offline_access` and `https://{resource}/{permission}`; others
//! are redirected with `error=invalid_scope` (AADSTS70011). Not reproduced: Dataverse
//! security roles and privileges, service-protection limits on `WhoAmI` (only forced
//! 429s; the knowledge routes of [`super::dynamics365_kb`] enforce the request count).
//! There is no revocation endpoint. Contacts, accounts, their column metadata and
//! `$batch` are [`super::dynamics365_crm`]'s.
//! OAuth errors carry `error_codes`, `trace_id`, `correlation_id` and `timestamp`; the
//! Web API's 401 has an empty body and a `WWW-Authenticate: Bearer …` challenge.

use axum::http::header::WWW_AUTHENTICATE;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::ProviderRequest;
use crate::oauth::{self, AccessCheck, AccessGrant, OAuthProvider};
use crate::state::SandboxState;
use crate::wire;

/// Route name of `GET /{tenant}/oauth2/v2.0/authorize`.
pub const OAUTH_AUTHORIZE: &str = "dynamics365.oauth_authorize";
/// Route name of `POST /{tenant}/oauth2/v2.0/token`.
pub const OAUTH_TOKEN: &str = "dynamics365.oauth_token";
/// Route name of `GET /api/data/v9.x/WhoAmI`.
pub const USERINFO: &str = "dynamics365.userinfo";
/// Route name of paths the stand-in does not serve.
pub const UNKNOWN: &str = "dynamics365.unknown";

/// The Microsoft identity platform's host.
pub const LOGIN_HOST: &str = "login.microsoftonline.com";

/// The `(org, crm_region)` of an environment host `{org}.{crm_region}.dynamics.com`.
pub(crate) fn environment(host: &str) -> Option<(&str, &str)> {
    let rest = host.strip_suffix(".dynamics.com")?;
    let (org, region) = rest.split_once('.')?;
    let label =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    (label(org) && label(region) && region.starts_with("crm")).then_some((org, region))
}

/// Whether `host` is one of Microsoft's the stand-in serves.
pub(crate) fn is_host(host: &str) -> bool {
    host == LOGIN_HOST || environment(host).is_some()
}

/// A Dynamics 365 / Microsoft identity route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `GET login.microsoftonline.com/{tenant}/oauth2/v2.0/authorize`.
    OAuthAuthorize,
    /// `POST login.microsoftonline.com/{tenant}/oauth2/v2.0/token`.
    OAuthToken,
    /// `GET {env}/api/data/v9.x/WhoAmI`.
    WhoAmI,
    /// Knowledge articles and languages ([`super::dynamics365_kb`]).
    Kb(super::dynamics365_kb::KbRoute),
    /// Contacts, accounts, their metadata and `$batch` ([`super::dynamics365_crm`]).
    Crm(super::dynamics365_crm::CrmRoute),
}

impl Endpoint {
    /// The route's counter name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Endpoint::OAuthAuthorize => OAUTH_AUTHORIZE,
            Endpoint::OAuthToken => OAUTH_TOKEN,
            Endpoint::WhoAmI => USERINFO,
            Endpoint::Kb(route) => route.name(),
            Endpoint::Crm(route) => route.name(),
        }
    }
}

/// The `{tenant}` of `/{tenant}/oauth2/v2.0/{action}`.
fn tenant_path<'a>(path: &'a str, action: &str) -> Option<&'a str> {
    let rest = path.strip_prefix('/')?;
    let (tenant, tail) = rest.split_once('/')?;
    (!tenant.is_empty() && tail == format!("oauth2/v2.0/{action}")).then_some(tenant)
}

/// Matches a request to a route.
pub(crate) fn route(req: &ProviderRequest) -> Option<Endpoint> {
    let path = req.path.as_str();
    if req.host == LOGIN_HOST {
        return match req.method {
            Method::GET if tenant_path(path, "authorize").is_some() => {
                Some(Endpoint::OAuthAuthorize)
            }
            Method::POST if tenant_path(path, "token").is_some() => Some(Endpoint::OAuthToken),
            _ => None,
        };
    }
    if let Some(kb) = super::dynamics365_kb::route(req) {
        return Some(Endpoint::Kb(kb));
    }
    if let Some(crm) = super::dynamics365_crm::route(req) {
        return Some(Endpoint::Crm(crm));
    }
    let rest = path.strip_prefix("/api/data/v9.")?;
    let (minor, action) = rest.split_once('/')?;
    let known = !minor.is_empty() && minor.bytes().all(|b| b.is_ascii_digit());
    (known && req.method == Method::GET && matches!(action, "WhoAmI" | "WhoAmI()"))
        .then_some(Endpoint::WhoAmI)
}

/// Serves a matched route.
pub(crate) fn handle(endpoint: Endpoint, state: &SandboxState, req: &ProviderRequest) -> Response {
    let provider = OAuthProvider::Dynamics365;
    match endpoint {
        Endpoint::OAuthAuthorize => oauth::authorize(state, req, provider, ""),
        Endpoint::OAuthToken => oauth::token(state, req, provider, ""),
        Endpoint::Kb(route) => super::dynamics365_kb::handle(route, state, req),
        Endpoint::Crm(route) => super::dynamics365_crm::handle(route, state, req),
        Endpoint::WhoAmI => {
            match oauth::bearer_access(state, provider, wire::bearer_token(&req.headers)) {
                AccessCheck::Granted(grant) if audience_ok(&grant, &req.host) => {
                    let base = format!("https://{}/api/data/v9.2", req.host);
                    wire::json(
                        StatusCode::OK,
                        json!({
                            "@odata.context": format!("{base}/$metadata#Microsoft.Dynamics.CRM.WhoAmIResponse"),
                            "BusinessUnitId": crate::oauth::business_unit_id(&grant.user.org_id),
                            "UserId": grant.user.user_id,
                            "OrganizationId": grant.user.org_id,
                        }),
                    )
                }
                _ => unauthorized(&req.host),
            }
        }
    }
}

/// Whether the token was issued for this environment: one of its scopes is the
/// environment's `user_impersonation` or `.default` permission.
pub(crate) fn audience_ok(grant: &AccessGrant, host: &str) -> bool {
    grant.scopes.iter().any(|scope| {
        scope
            .strip_prefix("https://")
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(resource, permission)| {
                resource.eq_ignore_ascii_case(host)
                    && matches!(permission, "user_impersonation" | ".default")
            })
    })
}

/// The Web API's 401: empty body, bearer challenge naming the authority and resource.
pub(crate) fn unauthorized(host: &str) -> Response {
    let mut response = StatusCode::UNAUTHORIZED.into_response();
    let challenge = format!(
        "Bearer authorization_uri=https://{LOGIN_HOST}/common/oauth2/authorize, resource_id=https://{host}/"
    );
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        response.headers_mut().insert(WWW_AUTHENTICATE, value);
    }
    response
}

pub(crate) fn web_api_error(status: StatusCode, code: &str, message: &str) -> Response {
    wire::json(status, json!({"error": {"code": code, "message": message}}))
}

/// 404 for a path the stand-in does not serve.
pub(crate) fn not_found() -> Response {
    web_api_error(
        StatusCode::NOT_FOUND,
        "0x8006088a",
        "Resource not found for the segment.",
    )
}

/// The Web API's error body for a forced status.
pub(crate) fn error_for_status(status: StatusCode, retry_after: u64) -> Response {
    let response = match status {
        StatusCode::NOT_FOUND => return not_found(),
        StatusCode::TOO_MANY_REQUESTS => web_api_error(
            status,
            "0x80072322",
            "Number of requests exceeded the limit of 6000 over time window of 300 seconds.",
        ),
        s if s.is_server_error() => web_api_error(s, "0x80040216", wire::reason(s)),
        s => web_api_error(s, "0x80040220", wire::reason(s)),
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

//! HubSpot stand-in, served at `/api.hubapi.com/…` and (OAuth consent) at
//! `/app.hubspot.com/oauth/authorize`.
//!
//! Auth: private app token, or an OAuth access token, as `Authorization: Bearer`. Every
//! API response carries the `X-HubSpot-RateLimit-*` headers. Each private-app account has
//! a rolling 10-second budget (110 by default) and a daily budget; each OAuth app has the
//! default budget per portal. Past either, HubSpot's 429 `RATE_LIMIT` body. Errors:
//! `{"status":"error","message":"…","correlationId":"…","category":"…"}`; OAuth token
//! errors: `{"status":"BAD_REFRESH_TOKEN","message":"…","correlationId":"…"}` (400).
//!
//! The CRM endpoints ([`super::hubspot_crm`]) call `authorize` first so they share the same
//! budget, then check the route's granular scopes against the token's: an OAuth grant's
//! (possibly narrowed) scopes or the private app's configured ones; lacking all of the
//! route's alternatives → 403 `MISSING_SCOPES` with `requiredGranularScopes`.
//! Authorize refuses scopes HubSpot does not know or the app is not
//! configured with (error page); `optional_scope` members are granted when the app has
//! them. Token info (`/oauth/v1/access-tokens/{token}`) reports the granted scopes.

use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::ProviderRequest;
use crate::oauth::{self, AccessCheck, AccessDenied, OAuthProvider, RevokeOutcome, RevokeReach};
use crate::ratelimit::{Policy, Usage, Verdict};
use crate::state::{Account, ProviderAccount, SandboxState};
use crate::wire;

/// Route name of `GET /account-info/v3/details`.
pub const ACCOUNT_INFO: &str = "hubspot.account_info";
/// Route name of `GET app.hubspot.com/oauth/authorize`.
pub const OAUTH_AUTHORIZE: &str = "hubspot.oauth_authorize";
/// Route name of `POST /oauth/v1/token`.
pub const OAUTH_TOKEN: &str = "hubspot.oauth_token";
/// Route name of `DELETE /oauth/v1/refresh-tokens/{token}`.
pub const OAUTH_REVOKE: &str = "hubspot.oauth_revoke";
/// Route name of `GET /oauth/v1/access-tokens/{token}` and
/// `GET /oauth/v1/refresh-tokens/{token}`.
pub const OAUTH_INTROSPECT: &str = "hubspot.oauth_introspect";
/// Route name of paths the stand-in does not serve.
pub const UNKNOWN: &str = "hubspot.unknown";

/// The host of HubSpot's REST API.
pub const API_HOST: &str = "api.hubapi.com";
/// Hosts of HubSpot's app (the OAuth consent screen).
pub const APP_HOSTS: [&str; 2] = ["app.hubspot.com", "app-eu1.hubspot.com"];

/// Whether `host` is one of HubSpot's.
pub(crate) fn is_host(host: &str) -> bool {
    host == API_HOST || APP_HOSTS.contains(&host)
}

/// Name of the rolling 10-second policy, as in HubSpot's 429 `policyName`.
pub const TEN_SECONDLY_ROLLING: &str = "TEN_SECONDLY_ROLLING";
/// Name of the daily policy, as in HubSpot's 429 `policyName`.
pub const DAILY: &str = "DAILY";
/// Name of the per-second policy, as in HubSpot's 429 `policyName` (enforced on search).
pub const SECONDLY: &str = "SECONDLY";

const TEN_SECONDS: Duration = Duration::from_secs(10);
const ONE_DAY: Duration = Duration::from_secs(24 * 60 * 60);
const DEFAULT_TEN_SECONDLY: u64 = 110;
const DEFAULT_DAILY: u64 = 250_000;

const AUTH_MESSAGE: &str = "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview";

/// A HubSpot route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `GET /account-info/v3/details`: the portal behind the token.
    AccountInfo,
    /// `GET app.hubspot.com/oauth/authorize`: the consent screen (auto-approves).
    OAuthAuthorize,
    /// `POST /oauth/v1/token`.
    OAuthToken,
    /// `GET /oauth/v1/access-tokens/{token}`.
    AccessTokenInfo,
    /// `GET /oauth/v1/refresh-tokens/{token}`.
    RefreshTokenInfo,
    /// `DELETE /oauth/v1/refresh-tokens/{token}`.
    RefreshTokenDelete,
    /// A CRM objects or properties route (see [`super::hubspot_crm`]).
    Crm(super::hubspot_crm::CrmRoute),
    /// A Webhooks API v3 route (see [`super::hubspot_webhooks`]).
    Webhooks(super::hubspot_webhooks::Route),
    /// An associations v4 route (see [`super::hubspot_associations`]).
    Associations(super::hubspot_associations::Route),
}

impl Endpoint {
    /// The route's counter name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Endpoint::AccountInfo => ACCOUNT_INFO,
            Endpoint::OAuthAuthorize => OAUTH_AUTHORIZE,
            Endpoint::OAuthToken => OAUTH_TOKEN,
            Endpoint::AccessTokenInfo | Endpoint::RefreshTokenInfo => OAUTH_INTROSPECT,
            Endpoint::RefreshTokenDelete => OAUTH_REVOKE,
            Endpoint::Crm(route) => route.name(),
            Endpoint::Webhooks(route) => route.name(),
            Endpoint::Associations(route) => route.name(),
        }
    }
}

/// The `{token}` of `/oauth/v1/{kind}/{token}`.
fn path_token<'a>(path: &'a str, kind: &str) -> Option<&'a str> {
    let token = path
        .strip_prefix("/oauth/v1/")?
        .strip_prefix(kind)?
        .strip_prefix('/')?;
    (!token.is_empty() && !token.contains('/')).then_some(token)
}

/// Matches a request to a HubSpot route.
pub(crate) fn route(req: &ProviderRequest) -> Option<Endpoint> {
    let path = req.path.as_str();
    if APP_HOSTS.contains(&req.host.as_str()) {
        return match (&req.method, path) {
            (&Method::GET, "/oauth/authorize") => Some(Endpoint::OAuthAuthorize),
            _ => None,
        };
    }
    match (&req.method, path) {
        (&Method::GET, "/account-info/v3/details") => Some(Endpoint::AccountInfo),
        (&Method::POST, "/oauth/v1/token") => Some(Endpoint::OAuthToken),
        (&Method::GET, _) if path_token(path, "access-tokens").is_some() => {
            Some(Endpoint::AccessTokenInfo)
        }
        (&Method::GET, _) if path_token(path, "refresh-tokens").is_some() => {
            Some(Endpoint::RefreshTokenInfo)
        }
        (&Method::DELETE, _) if path_token(path, "refresh-tokens").is_some() => {
            Some(Endpoint::RefreshTokenDelete)
        }
        _ if path.starts_with("/webhooks/v3/") => {
            super::hubspot_webhooks::route(path).map(Endpoint::Webhooks)
        }
        _ if path.starts_with("/crm/v4/associations/") => {
            super::hubspot_associations::route(&req.method, path).map(Endpoint::Associations)
        }
        _ => super::hubspot_crm::route(&req.method, path).map(Endpoint::Crm),
    }
}

/// Serves a matched HubSpot route.
pub(crate) fn handle(endpoint: Endpoint, state: &SandboxState, req: &ProviderRequest) -> Response {
    match endpoint {
        Endpoint::Crm(route) => super::hubspot_crm::handle(route, state, req),
        Endpoint::Webhooks(route) => super::hubspot_webhooks::handle(route, state, req),
        Endpoint::Associations(route) => super::hubspot_associations::handle(route, state, req),
        Endpoint::AccountInfo => match authorize(state, req) {
            Ok(authorized) => account_info(state, &authorized),
            Err(response) => response,
        },
        Endpoint::OAuthAuthorize => oauth::authorize(state, req, OAuthProvider::Hubspot, ""),
        Endpoint::OAuthToken => oauth::token(state, req, OAuthProvider::Hubspot, ""),
        Endpoint::AccessTokenInfo => {
            access_token_info(state, path_token(&req.path, "access-tokens").unwrap_or(""))
        }
        Endpoint::RefreshTokenInfo => {
            refresh_token_info(state, path_token(&req.path, "refresh-tokens").unwrap_or(""))
        }
        Endpoint::RefreshTokenDelete => {
            let token = path_token(&req.path, "refresh-tokens").unwrap_or("");
            let outcome = oauth::revoke(
                state,
                OAuthProvider::Hubspot,
                token,
                RevokeReach::Grant,
                None,
                None,
            );
            match outcome {
                RevokeOutcome::Revoked => StatusCode::NO_CONTENT.into_response(),
                RevokeOutcome::Unknown | RevokeOutcome::AlreadyDead => token_not_found("refresh"),
            }
        }
    }
}

/// Who a request acts for: a private app's account or an OAuth grant's portal.
pub(crate) enum Principal {
    /// A private app token of a registered account.
    PrivateApp(Account),
    /// An OAuth access token.
    OAuth(Box<oauth::AccessGrant>),
}

impl Principal {
    /// The portal (hub) id.
    pub(crate) fn portal_id(&self) -> u64 {
        match self {
            Principal::PrivateApp(account) => account.id,
            Principal::OAuth(grant) => grant.user.hub_id,
        }
    }

    /// Whether the token carries one of `any_of`: a private app's configured scopes, an
    /// OAuth token's granted (and possibly narrowed) ones.
    pub(crate) fn has_any_scope(&self, any_of: &[String]) -> bool {
        match self {
            Principal::PrivateApp(account) => match &account.provider {
                ProviderAccount::Hubspot { scopes, .. } => oauth::scopes_satisfy(scopes, any_of),
                _ => false,
            },
            Principal::OAuth(grant) => oauth::scopes_satisfy(&grant.scopes, any_of),
        }
    }

    fn limiter_key(&self) -> String {
        match self {
            Principal::PrivateApp(account) => limiter_key(account),
            Principal::OAuth(grant) => {
                format!("hubspot-oauth:{}:{}", grant.user.hub_id, grant.app_id)
            }
        }
    }

    fn policies(&self) -> [Policy; 3] {
        match self {
            Principal::PrivateApp(account) => policies(account),
            Principal::OAuth(_) => policies_for(DEFAULT_TEN_SECONDLY, DEFAULT_DAILY),
        }
    }
}

/// An authenticated request that fitted the account's budget.
pub(crate) struct Authorized {
    /// Who the token acts for.
    pub(crate) principal: Principal,
    /// Budget left after counting the request.
    pub(crate) usage: Vec<Usage>,
}

/// The principal behind the request's bearer token, or the finished 401.
#[allow(clippy::result_large_err)] // The error is the finished response.
fn principal(state: &SandboxState, headers: &HeaderMap) -> Result<Principal, Response> {
    if let Some(account) = account_for_token(state, headers) {
        return Ok(Principal::PrivateApp(account));
    }
    match oauth::bearer_access(state, OAuthProvider::Hubspot, wire::bearer_token(headers)) {
        AccessCheck::Granted(grant) => Ok(Principal::OAuth(grant)),
        AccessCheck::Denied(AccessDenied::Expired) => Err(expired()),
        AccessCheck::Denied(_) | AccessCheck::Missing => Err(unauthorized()),
    }
}

/// Authenticates the bearer token and counts the request against the account's budget;
/// the error is the finished 401 or 429 response.
#[allow(clippy::result_large_err)] // The error is the finished response.
pub(crate) fn authorize(
    state: &SandboxState,
    req: &ProviderRequest,
) -> Result<Authorized, Response> {
    let principal = principal(state, &req.headers)?;
    let policies = principal.policies();
    let key = principal.limiter_key();
    match state.with_limiter(|limiter| limiter.acquire(&key, &policies, Instant::now())) {
        Verdict::Allowed { usage } => Ok(Authorized { principal, usage }),
        Verdict::Denied { policy, usage, .. } => {
            Err(with_rate_headers(rate_limited(policy), &usage))
        }
    }
}

/// Search requests allowed per account and rolling second (HubSpot: about 4).
pub const SEARCH_PER_SECOND: u64 = 4;

/// Like [`authorize`] for the CRM search routes, which also obey HubSpot's separate
/// limit of [`SEARCH_PER_SECOND`] requests per account (portal) and rolling second: past
/// it, a 429 with `policyName` `SECONDLY` (the search window is checked first, so such a
/// refusal does not count against the 10-second budget).
#[allow(clippy::result_large_err)] // The error is the finished response.
pub(crate) fn authorize_search(
    state: &SandboxState,
    req: &ProviderRequest,
) -> Result<Authorized, Response> {
    let principal = principal(state, &req.headers)?;
    let policies = principal.policies();
    let key = principal.limiter_key();
    let search_key = format!("hubspot-search:{}", principal.portal_id());
    let search = [Policy::rolling(
        SECONDLY,
        SEARCH_PER_SECOND,
        Duration::from_secs(1),
    )];
    let verdict = state.with_limiter(|limiter| {
        let now = Instant::now();
        let full = limiter
            .peek(&search_key, &search, now)
            .first()
            .is_some_and(|usage| usage.remaining == 0);
        if full {
            return Err(limiter.peek(&key, &policies, now));
        }
        let verdict = limiter.acquire(&key, &policies, now);
        if verdict.is_allowed() {
            limiter.acquire(&search_key, &search, now);
        }
        Ok(verdict)
    });
    match verdict {
        Err(usage) => Err(with_rate_headers(rate_limited(SECONDLY), &usage)),
        Ok(Verdict::Allowed { usage }) => Ok(Authorized { principal, usage }),
        Ok(Verdict::Denied { policy, usage, .. }) => {
            Err(with_rate_headers(rate_limited(policy), &usage))
        }
    }
}

fn account_for_token(state: &SandboxState, headers: &HeaderMap) -> Option<Account> {
    let token = wire::bearer_token(headers)?;
    state.find_account(|account| {
        matches!(&account.provider, ProviderAccount::Hubspot { access_token, .. }
            if access_token.matches(token))
    })
}

fn limiter_key(account: &Account) -> String {
    format!("hubspot:{}", account.id)
}

/// The account's budget, in header order: ten-secondly, secondly (reported only), daily.
fn policies(account: &Account) -> [Policy; 3] {
    let (ten_secondly, daily) = match &account.provider {
        ProviderAccount::Hubspot {
            ten_secondly_limit,
            daily_limit,
            ..
        } => (*ten_secondly_limit, *daily_limit),
        _ => (DEFAULT_TEN_SECONDLY, DEFAULT_DAILY),
    };
    policies_for(ten_secondly, daily)
}

fn policies_for(ten_secondly: u64, daily: u64) -> [Policy; 3] {
    [
        Policy::rolling(TEN_SECONDLY_ROLLING, ten_secondly, TEN_SECONDS),
        // HubSpot reports a per-second figure but enforces the 10-second window.
        Policy::rolling(SECONDLY, ten_secondly.div_ceil(10), Duration::from_secs(1))
            .informational(),
        // HubSpot's day ends at midnight in the account's time zone; a fixed 24 h window
        // opened by the first request is close enough for a test double.
        Policy::fixed(DAILY, daily, ONE_DAY),
    ]
}

fn account_info(state: &SandboxState, authorized: &Authorized) -> Response {
    let portal_id = authorized.principal.portal_id();
    // An OAuth portal takes the settings of the private-app account of the same portal.
    let account = match &authorized.principal {
        Principal::PrivateApp(account) => Some(account.clone()),
        Principal::OAuth(_) => state.find_account(|account| {
            account.id == portal_id && matches!(account.provider, ProviderAccount::Hubspot { .. })
        }),
    };
    let (account_type, time_zone) = match account.as_ref().map(|a| &a.provider) {
        Some(ProviderAccount::Hubspot {
            account_type,
            time_zone,
            ..
        }) => (account_type.clone(), time_zone.clone()),
        _ => (default_account_type(), "US/Eastern".to_owned()),
    };
    let response = wire::json(
        StatusCode::OK,
        json!({
            "portalId": portal_id,
            "accountType": account_type,
            "timeZone": time_zone,
            "companyCurrency": "USD",
            "additionalCurrencies": [],
            "utcOffset": "-05:00",
            "utcOffsetMilliseconds": -18_000_000,
            "uiDomain": "app.hubspot.com",
            "dataHostingLocation": "na1"
        }),
    );
    with_rate_headers(response, &authorized.usage)
}

fn default_account_type() -> String {
    "STANDARD".to_owned()
}

/// `GET /oauth/v1/access-tokens/{token}`: HubSpot's `AccessTokenInfoResponse`.
fn access_token_info(state: &SandboxState, token: &str) -> Response {
    let grant = match oauth::bearer_access(state, OAuthProvider::Hubspot, Some(token)) {
        AccessCheck::Granted(grant) => grant,
        _ => return token_not_found("access"),
    };
    wire::json(
        StatusCode::OK,
        json!({
            "token": token,
            "user": grant.user.email,
            "hub_domain": grant.user.hub_domain,
            "scopes": grant.scopes,
            "scope_to_scope_group_pks": [],
            "trial_scopes": [],
            "trial_scope_to_scope_group_pks": [],
            "hub_id": grant.user.hub_id,
            "app_id": grant.app_id,
            "expires_in": grant.expires_in,
            "user_id": numeric_id(&grant.user.user_id),
            "token_type": "access",
            "is_private_distribution": false,
        }),
    )
}

/// `GET /oauth/v1/refresh-tokens/{token}`: HubSpot's `RefreshTokenInfoResponse`.
fn refresh_token_info(state: &SandboxState, token: &str) -> Response {
    match oauth::introspect_response(state, OAuthProvider::Hubspot, token) {
        Some(info) if info.refresh => wire::json(
            StatusCode::OK,
            json!({
                "token": token,
                "user": info.user.email,
                "hub_domain": info.user.hub_domain,
                "scopes": info.scopes,
                "hub_id": info.user.hub_id,
                "client_id": info.client_id,
                "user_id": numeric_id(&info.user.user_id),
                "token_type": "refresh",
            }),
        ),
        _ => token_not_found("refresh"),
    }
}

fn numeric_id(id: &str) -> Value {
    id.parse::<u64>().map_or_else(|_| json!(id), |n| json!(n))
}

/// 404 for an unknown, expired or revoked token at the token-info endpoints.
fn token_not_found(kind: &str) -> Response {
    error_body(
        StatusCode::NOT_FOUND,
        &format!("The {kind} token was not found, has expired or has been revoked."),
        "OBJECT_NOT_FOUND",
    )
}

pub(crate) fn error_body(status: StatusCode, message: &str, category: &str) -> Response {
    wire::json(
        status,
        json!({
            "status": "error",
            "message": message,
            "correlationId": wire::correlation_id(),
            "category": category,
        }),
    )
}

/// HubSpot's 403 `MISSING_SCOPES` for a token lacking every one of `any_of`.
pub(crate) fn missing_scopes(any_of: &[String]) -> Response {
    wire::json(
        StatusCode::FORBIDDEN,
        json!({
            "status": "error",
            "message": "This app hasn't been granted all required scopes to make this call. Read more about required scopes here: https://developers.hubspot.com/scopes.",
            "correlationId": wire::correlation_id(),
            "errors": [{
                "message": "One or more of the following scopes are required.",
                "context": {"requiredGranularScopes": any_of},
            }],
            "links": {"scopes": "https://developers.hubspot.com/scopes"},
            "category": "MISSING_SCOPES",
        }),
    )
}

/// 401 for a missing or unknown token.
fn unauthorized() -> Response {
    error_body(
        StatusCode::UNAUTHORIZED,
        AUTH_MESSAGE,
        "INVALID_AUTHENTICATION",
    )
}

/// 401 for an expired OAuth access token.
fn expired() -> Response {
    error_body(
        StatusCode::UNAUTHORIZED,
        "The OAuth token used to make this call expired.",
        "EXPIRED_AUTHENTICATION",
    )
}

/// 429 for an exhausted policy.
fn rate_limited(policy: &str) -> Response {
    let message = match policy {
        DAILY => "You have reached your daily limit.".to_owned(),
        other => format!(
            "You have reached your {} limit.",
            other.to_ascii_lowercase()
        ),
    };
    wire::json(
        StatusCode::TOO_MANY_REQUESTS,
        json!({
            "status": "error",
            "message": message,
            "errorType": "RATE_LIMIT",
            "correlationId": wire::correlation_id(),
            "policyName": policy,
        }),
    )
}

/// 404 for a path the stand-in does not serve.
pub(crate) fn not_found() -> Response {
    error_body(
        StatusCode::NOT_FOUND,
        "Resource not found",
        "OBJECT_NOT_FOUND",
    )
}

/// HubSpot's error body for a forced status.
pub(crate) fn error_for_status(status: StatusCode) -> Response {
    let category = match status {
        StatusCode::UNAUTHORIZED => return unauthorized(),
        StatusCode::TOO_MANY_REQUESTS => return rate_limited(TEN_SECONDLY_ROLLING),
        StatusCode::BAD_REQUEST => "VALIDATION_ERROR",
        StatusCode::FORBIDDEN => return missing_scopes(&[]),
        StatusCode::NOT_FOUND => "OBJECT_NOT_FOUND",
        StatusCode::CONFLICT => "CONFLICT",
        StatusCode::LOCKED => "LOCKED",
        status if status.is_server_error() => "INTERNAL_ERROR",
        _ => "BAD_REQUEST",
    };
    error_body(status, wire::reason(status), category)
}

/// Adds the rate-limit headers to API responses that do not have them yet (401, 404,
/// forced faults), from the token's account if it has one, else a full default budget.
/// The OAuth endpoints and the app host do not carry them.
pub(crate) fn finish(state: &SandboxState, req: &ProviderRequest, response: Response) -> Response {
    if response.headers().contains_key(HEADER_MAX)
        || req.host != API_HOST
        || req.path.starts_with("/oauth/")
    {
        return response;
    }
    let usage = match principal(state, &req.headers) {
        Ok(principal) => {
            let policies = principal.policies();
            let key = principal.limiter_key();
            state.with_limiter(|limiter| limiter.peek(&key, &policies, Instant::now()))
        }
        Err(_) => policies_for(DEFAULT_TEN_SECONDLY, DEFAULT_DAILY)
            .iter()
            .map(|policy| Usage {
                policy: policy.name,
                limit: policy.limit,
                remaining: policy.limit,
                reset_after: policy.window,
            })
            .collect(),
    };
    with_rate_headers(response, &usage)
}

const HEADER_MAX: &str = "x-hubspot-ratelimit-max";

/// Writes `X-HubSpot-RateLimit-*` from usage in [`policies`] order.
pub(crate) fn with_rate_headers(mut response: Response, usage: &[Usage]) -> Response {
    let find = |name: &str| usage.iter().find(|u| u.policy == name);
    let headers = response.headers_mut();
    let mut put = |name: &'static str, value: u64| {
        headers.insert(HeaderName::from_static(name), HeaderValue::from(value));
    };
    if let Some(daily) = find(DAILY) {
        put("x-hubspot-ratelimit-daily", daily.limit);
        put("x-hubspot-ratelimit-daily-remaining", daily.remaining);
    }
    if let Some(ten) = find(TEN_SECONDLY_ROLLING) {
        put("x-hubspot-ratelimit-interval-milliseconds", 10_000);
        put(HEADER_MAX, ten.limit);
        put("x-hubspot-ratelimit-remaining", ten.remaining);
    }
    if let Some(secondly) = find(SECONDLY) {
        put("x-hubspot-ratelimit-secondly", secondly.limit);
        put("x-hubspot-ratelimit-secondly-remaining", secondly.remaining);
    }
    response
}

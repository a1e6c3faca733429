//! HubSpot stand-in, served at `/api.hubapi.com/…`.
//!
//! Auth: private app token as `Authorization: Bearer`. Every response carries the
//! `X-HubSpot-RateLimit-*` headers. Each account has a rolling 10-second budget (110 by
//! default) and a daily budget; past either, HubSpot's 429 `RATE_LIMIT` body. Errors:
//! `{"status":"error","message":"…","correlationId":"…","category":"…"}`.
//!
//! Later endpoints (CRM objects) call `authorize` first so they share the same budget.

use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use serde_json::json;

use super::ProviderRequest;
use crate::ratelimit::{Policy, Usage, Verdict};
use crate::state::{Account, ProviderAccount, SandboxState};
use crate::wire;

/// Route name of `GET /account-info/v3/details`.
pub const ACCOUNT_INFO: &str = "hubspot.account_info";
/// Route name of paths the stand-in does not serve.
pub const UNKNOWN: &str = "hubspot.unknown";

/// The host of HubSpot's REST API.
pub const API_HOST: &str = "api.hubapi.com";

/// Name of the rolling 10-second policy, as in HubSpot's 429 `policyName`.
pub const TEN_SECONDLY_ROLLING: &str = "TEN_SECONDLY_ROLLING";
/// Name of the daily policy, as in HubSpot's 429 `policyName`.
pub const DAILY: &str = "DAILY";
const SECONDLY: &str = "SECONDLY";

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
}

impl Endpoint {
    /// The route's counter name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Endpoint::AccountInfo => ACCOUNT_INFO,
        }
    }
}

/// Matches a request to a HubSpot route.
pub(crate) fn route(req: &ProviderRequest) -> Option<Endpoint> {
    match (&req.method, req.path.as_str()) {
        (&Method::GET, "/account-info/v3/details") => Some(Endpoint::AccountInfo),
        _ => None,
    }
}

/// Serves a matched HubSpot route.
pub(crate) fn handle(endpoint: Endpoint, state: &SandboxState, req: &ProviderRequest) -> Response {
    let account = match authorize(state, req) {
        Ok(account) => account,
        Err(response) => return response,
    };
    match endpoint {
        Endpoint::AccountInfo => account_info(&account.account, account.usage),
    }
}

/// An authenticated request that fitted the account's budget.
pub(crate) struct Authorized {
    /// The account behind the token.
    pub(crate) account: Account,
    /// Budget left after counting the request.
    pub(crate) usage: Vec<Usage>,
}

/// Authenticates the bearer token and counts the request against the account's budget;
/// the error is the finished 401 or 429 response.
#[allow(clippy::result_large_err)] // The error is the finished response.
pub(crate) fn authorize(
    state: &SandboxState,
    req: &ProviderRequest,
) -> Result<Authorized, Response> {
    let Some(account) = account_for_token(state, &req.headers) else {
        return Err(unauthorized());
    };
    let policies = policies(&account);
    let key = limiter_key(&account);
    match state.with_limiter(|limiter| limiter.acquire(&key, &policies, Instant::now())) {
        Verdict::Allowed { usage } => Ok(Authorized { account, usage }),
        Verdict::Denied { policy, usage, .. } => {
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

fn account_info(account: &Account, usage: Vec<Usage>) -> Response {
    let (account_type, time_zone) = match &account.provider {
        ProviderAccount::Hubspot {
            account_type,
            time_zone,
            ..
        } => (account_type.as_str(), time_zone.as_str()),
        _ => ("STANDARD", "US/Eastern"),
    };
    let response = wire::json(
        StatusCode::OK,
        json!({
            "portalId": account.id,
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
    with_rate_headers(response, &usage)
}

fn error_body(status: StatusCode, message: &str, category: &str) -> Response {
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

/// 401 for a missing or unknown token.
fn unauthorized() -> Response {
    error_body(
        StatusCode::UNAUTHORIZED,
        AUTH_MESSAGE,
        "INVALID_AUTHENTICATION",
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
        StatusCode::FORBIDDEN => "MISSING_SCOPES",
        StatusCode::NOT_FOUND => "OBJECT_NOT_FOUND",
        StatusCode::CONFLICT => "CONFLICT",
        StatusCode::LOCKED => "LOCKED",
        status if status.is_server_error() => "INTERNAL_ERROR",
        _ => "BAD_REQUEST",
    };
    error_body(status, wire::reason(status), category)
}

/// Adds the rate-limit headers to responses that do not have them yet (401, 404,
/// forced faults), from the token's account if it has one, else a full default budget.
pub(crate) fn finish(state: &SandboxState, req: &ProviderRequest, response: Response) -> Response {
    if response.headers().contains_key(HEADER_MAX) {
        return response;
    }
    let usage = match account_for_token(state, &req.headers) {
        Some(account) => {
            let policies = policies(&account);
            let key = limiter_key(&account);
            state.with_limiter(|limiter| limiter.peek(&key, &policies, Instant::now()))
        }
        None => policies_for(DEFAULT_TEN_SECONDLY, DEFAULT_DAILY)
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
fn with_rate_headers(mut response: Response, usage: &[Usage]) -> Response {
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

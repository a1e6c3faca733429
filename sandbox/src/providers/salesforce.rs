//! Salesforce stand-in: OAuth at `/{login|test}.salesforce.com/services/oauth2/…` (also
//! served at instance hosts, as My Domain does), identity, and the REST API root at the
//! instance host (`/acme.my.salesforce.com/services/data/…`); the record routes under
//! it (query, sObjects, collections, limits) are [`super::salesforce_crm`]'s.
//!
//! Token responses carry no `expires_in`; sessions still expire after the configured
//! lifetime (7200 s by default). OAuth errors: `{"error":"invalid_grant",
//! "error_description":"…"}` (400, also for client errors). REST errors: a JSON array,
//! `[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]` (401).
//!
//! Scopes: an authorization may ask only for scopes Salesforce knows and the connected
//! app is configured with (else a redirect with `error=invalid_scope`, "the requested
//! scope is not allowed"); no `scope` means the app's default `api refresh_token`. The
//! REST API (`/services/data/…`, every record route) needs `api` or `full`: a live session
//! without either gets 401 `[{"message":"This session is not valid for use with the REST
//! API","errorCode":"INVALID_SESSION_ID"}]`. A refresh token is issued only with
//! `refresh_token` or `offline_access`. Not reproduced: userinfo and the identity URL take
//! any live session (Salesforce wants one of `id profile email address phone openid`);
//! the `web`, `chatter_api`, `visualforce`… scopes open nothing here.

use axum::http::header::WWW_AUTHENTICATE;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::ProviderRequest;
use crate::oauth::{
    self, AccessCheck, AccessGrant, OAuthProvider, RevokeOutcome, RevokeReach, TokenError,
};
use crate::state::SandboxState;
use crate::wire;

/// Route name of `GET /services/oauth2/authorize`.
pub const OAUTH_AUTHORIZE: &str = "salesforce.oauth_authorize";
/// Route name of `POST /services/oauth2/token`.
pub const OAUTH_TOKEN: &str = "salesforce.oauth_token";
/// Route name of `POST /services/oauth2/revoke`.
pub const OAUTH_REVOKE: &str = "salesforce.oauth_revoke";
/// Route name of `POST /services/oauth2/introspect`.
pub const OAUTH_INTROSPECT: &str = "salesforce.oauth_introspect";
/// Route name of `GET /services/oauth2/userinfo` and `GET /id/{org}/{user}`.
pub const USERINFO: &str = "salesforce.userinfo";
/// Route name of `GET /services/data/…`.
pub const DATA: &str = "salesforce.data";
/// Route name of paths the stand-in does not serve.
pub const UNKNOWN: &str = "salesforce.unknown";

/// The REST API version the sandbox lists as current.
pub const API_VERSION: &str = "60.0";

/// Whether `host` is a Salesforce host (`*.salesforce.com`, `*.force.com`).
pub(crate) fn is_host(host: &str) -> bool {
    [".salesforce.com", ".force.com"].iter().any(|suffix| {
        host.strip_suffix(suffix).is_some_and(|rest| {
            !rest.is_empty()
                && rest
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
        })
    })
}

/// A Salesforce route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `GET /services/oauth2/authorize`.
    OAuthAuthorize,
    /// `POST /services/oauth2/token`.
    OAuthToken,
    /// `POST /services/oauth2/revoke` (also `GET ?token=`).
    OAuthRevoke,
    /// `POST /services/oauth2/introspect`.
    OAuthIntrospect,
    /// `GET /services/oauth2/userinfo`.
    UserInfo,
    /// `GET /id/{org}/{user}`: the identity URL of token responses.
    Identity,
    /// `GET /services/data[/…]`.
    Data,
    /// A REST data route under `/services/data/vNN.N/` (see [`super::salesforce_crm`]).
    Crm(super::salesforce_crm::SfRoute),
}

impl Endpoint {
    /// The route's counter name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Endpoint::OAuthAuthorize => OAUTH_AUTHORIZE,
            Endpoint::OAuthToken => OAUTH_TOKEN,
            Endpoint::OAuthRevoke => OAUTH_REVOKE,
            Endpoint::OAuthIntrospect => OAUTH_INTROSPECT,
            Endpoint::UserInfo | Endpoint::Identity => USERINFO,
            Endpoint::Data => DATA,
            Endpoint::Crm(route) => route.name(),
        }
    }
}

/// Matches a request to a Salesforce route.
pub(crate) fn route(req: &ProviderRequest) -> Option<Endpoint> {
    if let Some(route) = super::salesforce_crm::route(&req.method, &req.path) {
        return Some(Endpoint::Crm(route));
    }
    let path = req.path.trim_end_matches('/');
    match (&req.method, path) {
        (&Method::GET, "/services/oauth2/authorize") => Some(Endpoint::OAuthAuthorize),
        (&Method::POST, "/services/oauth2/token") => Some(Endpoint::OAuthToken),
        (&Method::POST | &Method::GET, "/services/oauth2/revoke") => Some(Endpoint::OAuthRevoke),
        (&Method::POST, "/services/oauth2/introspect") => Some(Endpoint::OAuthIntrospect),
        (&Method::GET | &Method::POST, "/services/oauth2/userinfo") => Some(Endpoint::UserInfo),
        (&Method::GET, p) if p.starts_with("/id/") => Some(Endpoint::Identity),
        (&Method::GET, p) if p == "/services/data" || p.starts_with("/services/data/") => {
            Some(Endpoint::Data)
        }
        _ => None,
    }
}

/// Serves a matched Salesforce route.
pub(crate) fn handle(endpoint: Endpoint, state: &SandboxState, req: &ProviderRequest) -> Response {
    let provider = OAuthProvider::Salesforce;
    match endpoint {
        Endpoint::OAuthAuthorize => oauth::authorize(state, req, provider, &req.host),
        Endpoint::OAuthToken => oauth::token(state, req, provider, &req.host),
        Endpoint::OAuthRevoke => revoke(state, req),
        Endpoint::OAuthIntrospect => introspect(state, req),
        Endpoint::UserInfo => match session(state, req) {
            Some(grant) => wire::json(StatusCode::OK, userinfo_json(&grant)),
            None => bad_oauth_token(&req.headers),
        },
        Endpoint::Identity => match session(state, req) {
            Some(grant)
                if req.path.trim_end_matches('/')
                    == format!("/id/{}/{}", grant.user.org_id, grant.user.user_id) =>
            {
                wire::json(StatusCode::OK, identity_json(&grant))
            }
            Some(_) => wire::json(
                StatusCode::FORBIDDEN,
                json!([{"message": "Bad_Id", "errorCode": "FORBIDDEN"}]),
            ),
            None => bad_oauth_token(&req.headers),
        },
        Endpoint::Data => match session(state, req) {
            Some(grant) if grant.user.instance_host == req.host => {
                if rest_allowed(&grant) {
                    data(req)
                } else {
                    not_for_rest()
                }
            }
            _ => invalid_session(),
        },
        Endpoint::Crm(route) => match session(state, req) {
            Some(grant) if grant.user.instance_host == req.host => {
                if rest_allowed(&grant) {
                    super::salesforce_crm::handle(route, state, req, &grant.user.org_id)
                } else {
                    not_for_rest()
                }
            }
            _ => invalid_session(),
        },
    }
}

/// Adds `Sforce-Limit-Info` to REST API answers of a valid session that lack it (the
/// version root and list, forced faults).
pub(crate) fn finish(state: &SandboxState, req: &ProviderRequest, response: Response) -> Response {
    if !req.path.starts_with("/services/data") || response.status() == StatusCode::UNAUTHORIZED {
        return response;
    }
    match session(state, req) {
        Some(grant) if grant.user.instance_host == req.host => {
            super::salesforce_crm::finish(state, &grant.user.org_id, response)
        }
        _ => response,
    }
}

/// The token of `Authorization: Bearer …` or Salesforce's older `Authorization: OAuth …`.
fn session_token(headers: &HeaderMap) -> Option<&str> {
    wire::bearer_token(headers).or_else(|| {
        let value = wire::header(headers, "authorization")?;
        let (scheme, token) = value.split_once(' ')?;
        let token = token.trim();
        (scheme.eq_ignore_ascii_case("oauth") && !token.is_empty()).then_some(token)
    })
}

/// The grant of a valid session token used at a host that serves it (the login host
/// that issued it, or the user's instance).
pub(crate) fn session(state: &SandboxState, req: &ProviderRequest) -> Option<Box<AccessGrant>> {
    match oauth::bearer_access(
        state,
        OAuthProvider::Salesforce,
        session_token(&req.headers),
    ) {
        AccessCheck::Granted(grant)
            if req.host == grant.site || req.host == grant.user.instance_host =>
        {
            Some(grant)
        }
        _ => None,
    }
}

/// `POST /services/oauth2/revoke` with form (or query) `token=`: revokes the grant.
fn revoke(state: &SandboxState, req: &ProviderRequest) -> Response {
    let token = oauth::params(&req.body)
        .ok()
        .and_then(|form| form.get("token").cloned())
        .or_else(|| wire::query_param(req.query.as_deref(), "token"))
        .unwrap_or_default();
    match oauth::revoke(
        state,
        OAuthProvider::Salesforce,
        &token,
        RevokeReach::Grant,
        None,
        None,
    ) {
        RevokeOutcome::Revoked => StatusCode::OK.into_response(),
        RevokeOutcome::Unknown | RevokeOutcome::AlreadyDead => wire::json(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_token", "error_description": "invalid token"}),
        ),
    }
}

/// `POST /services/oauth2/introspect` (client credentials in the form or Basic).
fn introspect(state: &SandboxState, req: &ProviderRequest) -> Response {
    let provider = OAuthProvider::Salesforce;
    let Ok(form) = oauth::params(&req.body) else {
        return oauth::client_error(
            provider,
            TokenError::InvalidRequest("a parameter was given more than once"),
            false,
        );
    };
    let client = match oauth::authenticate_client(state, provider, req, &form) {
        Ok(client) => client,
        Err((error, basic)) => return oauth::client_error(provider, error, basic),
    };
    let token = form.get("token").map(String::as_str).unwrap_or_default();
    match oauth::introspect_response(state, provider, token) {
        Some(info) if info.client_id == client.client_id => {
            let exp = info.expires_unix.map_or(Value::Null, |exp| json!(exp));
            wire::json(
                StatusCode::OK,
                json!({
                    "active": true,
                    "scope": info.scopes.join(" "),
                    "client_id": info.client_id,
                    "username": info.user.email,
                    "sub": oauth::salesforce_id_url(oauth::SALESFORCE_LOGIN, &info.user),
                    "token_type": if info.refresh { "refresh_token" } else { "access_token" },
                    "exp": exp,
                    "iat": info.issued_unix,
                    "nbf": info.issued_unix,
                }),
            )
        }
        _ => wire::json(StatusCode::OK, json!({"active": false})),
    }
}

fn split_name(name: &str) -> (&str, &str) {
    name.split_once(' ').unwrap_or(("", name))
}

fn userinfo_json(grant: &AccessGrant) -> Value {
    let user = &grant.user;
    let instance = format!("https://{}", user.instance_host);
    let (given, family) = split_name(&user.name);
    json!({
        "sub": oauth::salesforce_id_url(&grant.site, user),
        "user_id": user.user_id,
        "organization_id": user.org_id,
        "preferred_username": user.email,
        "nickname": user.email.split('@').next().unwrap_or_default(),
        "name": user.name,
        "email": user.email,
        "email_verified": true,
        "given_name": given,
        "family_name": family,
        "zoneinfo": "America/Los_Angeles",
        "photos": {
            "picture": format!("{instance}/profilephoto/005/F"),
            "thumbnail": format!("{instance}/profilephoto/005/T"),
        },
        "profile": format!("{instance}/{}", user.user_id),
        "picture": format!("{instance}/profilephoto/005/F"),
        "address": {"country": "US"},
        "is_salesforce_integration_user": false,
        "urls": urls(grant),
        "active": true,
        "user_type": "STANDARD",
        "language": "en_US",
        "locale": "en_US",
        "utcOffset": -28_800_000,
        "updated_at": "2024-01-15T09:00:00Z",
        "is_app_installed": true,
    })
}

fn urls(grant: &AccessGrant) -> Value {
    let instance = format!("https://{}", grant.user.instance_host);
    let v = API_VERSION;
    json!({
        "enterprise": format!("{instance}/services/Soap/c/{v}/{}", grant.user.org_id),
        "metadata": format!("{instance}/services/Soap/m/{v}/{}", grant.user.org_id),
        "partner": format!("{instance}/services/Soap/u/{v}/{}", grant.user.org_id),
        "rest": format!("{instance}/services/data/v{v}/"),
        "sobjects": format!("{instance}/services/data/v{v}/sobjects/"),
        "search": format!("{instance}/services/data/v{v}/search/"),
        "query": format!("{instance}/services/data/v{v}/query/"),
        "profile": format!("{instance}/{}", grant.user.user_id),
    })
}

fn identity_json(grant: &AccessGrant) -> Value {
    let user = &grant.user;
    let (given, family) = split_name(&user.name);
    json!({
        "id": oauth::salesforce_id_url(&grant.site, user),
        "asserted_user": true,
        "user_id": user.user_id,
        "organization_id": user.org_id,
        "username": user.email,
        "nick_name": user.email.split('@').next().unwrap_or_default(),
        "display_name": user.name,
        "email": user.email,
        "email_verified": true,
        "first_name": given,
        "last_name": family,
        "timezone": "America/Los_Angeles",
        "active": true,
        "user_type": "STANDARD",
        "language": "en_US",
        "locale": "en_US",
        "utcOffset": -28_800_000,
        "last_modified_date": "2024-01-15T09:00:00.000+0000",
        "is_app_installed": true,
        "urls": urls(grant),
    })
}

/// The REST API root: versions at `/services/data`, resources at `/services/data/vNN.N`.
fn data(req: &ProviderRequest) -> Response {
    let path = req.path.trim_end_matches('/');
    if path == "/services/data" {
        return wire::json(
            StatusCode::OK,
            json!([
                {"label": "Winter '24", "url": "/services/data/v59.0", "version": "59.0"},
                {"label": "Spring '24", "url": "/services/data/v60.0", "version": "60.0"},
            ]),
        );
    }
    let version = path.strip_prefix("/services/data/v").unwrap_or_default();
    let known = version.split_once('.').is_some_and(|(major, minor)| {
        !major.is_empty()
            && !minor.is_empty()
            && major
                .bytes()
                .chain(minor.bytes())
                .all(|b| b.is_ascii_digit())
    });
    if !known {
        return not_found();
    }
    let base = format!("/services/data/v{version}");
    wire::json(
        StatusCode::OK,
        json!({
            "limits": format!("{base}/limits"),
            "query": format!("{base}/query"),
            "search": format!("{base}/search"),
            "sobjects": format!("{base}/sobjects"),
            "recent": format!("{base}/recent"),
            "composite": format!("{base}/composite"),
        }),
    )
}

/// 401 of the REST API for an expired, revoked or unknown session.
pub(crate) fn invalid_session() -> Response {
    let mut response = wire::json(
        StatusCode::UNAUTHORIZED,
        json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]),
    );
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Token"));
    response
}

/// Scopes that open the REST API to a session: `api`, or `full` (which includes it).
const REST_SCOPES: [&str; 2] = ["api", "full"];

/// Whether the session's scopes open the REST API.
pub(crate) fn rest_allowed(grant: &AccessGrant) -> bool {
    grant
        .scopes
        .iter()
        .any(|scope| REST_SCOPES.contains(&scope.as_str()))
}

/// 401 of the REST API for a live session without the `api` (or `full`) scope.
pub(crate) fn not_for_rest() -> Response {
    let mut response = wire::json(
        StatusCode::UNAUTHORIZED,
        json!([{"message": "This session is not valid for use with the REST API", "errorCode": "INVALID_SESSION_ID"}]),
    );
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Token"));
    response
}

/// 401 of the identity endpoints: `Bad_OAuth_Token` (or `Missing_OAuth_Token`).
fn bad_oauth_token(headers: &HeaderMap) -> Response {
    let text = if session_token(headers).is_some() {
        "Bad_OAuth_Token"
    } else {
        "Missing_OAuth_Token"
    };
    (StatusCode::UNAUTHORIZED, text).into_response()
}

/// 404 for a path the stand-in does not serve.
pub(crate) fn not_found() -> Response {
    wire::json(
        StatusCode::NOT_FOUND,
        json!([{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]),
    )
}

/// Salesforce's REST error body for a forced status.
pub(crate) fn error_for_status(status: StatusCode, retry_after: u64) -> Response {
    let code = match status {
        StatusCode::UNAUTHORIZED => return invalid_session(),
        StatusCode::NOT_FOUND => return not_found(),
        StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS => "REQUEST_LIMIT_EXCEEDED",
        StatusCode::SERVICE_UNAVAILABLE => "SERVER_UNAVAILABLE",
        s if s.is_server_error() => "UNKNOWN_EXCEPTION",
        _ => "INVALID_REQUEST",
    };
    let response = wire::json(
        status,
        json!([{"message": wire::reason(status), "errorCode": code}]),
    );
    if matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
        wire::with_retry_after(response, retry_after)
    } else {
        response
    }
}

//! Each provider's OAuth wire format: what its codes and tokens look like, its token
//! response bodies, its token-endpoint error bodies and statuses.

use axum::http::header::{CACHE_CONTROL, PRAGMA, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::store::{
    ClientProblem, GrantProblem, Issued, SALESFORCE_LOGIN, TokenError, zoho_location,
};
use super::util;
use super::{OAuthFault, OAuthProvider, OAuthUser, SeededGrant};
use crate::wire;

/// What a minted secret is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenUse {
    /// An authorization code.
    Code,
    /// An access token.
    Access,
    /// A refresh token.
    Refresh,
}

/// A fresh random secret in the provider's own format. Every format carries at least
/// 128 random bits; access and refresh tokens at least 32 random characters.
pub(crate) fn new_secret(provider: OAuthProvider, what: TokenUse, user: &OAuthUser) -> String {
    use OAuthProvider as P;
    use TokenUse as T;
    match (provider, what) {
        (P::Hubspot, T::Code) => util::random_guid(),
        (P::Hubspot, T::Access) => format!("CO{}{}", util::random_b64(), util::random_b64()),
        (P::Hubspot, T::Refresh) => format!("na1-{}", util::guid(util::random_bytes::<16>())),
        (P::Salesforce, T::Code) => format!("aPrx{}==", util::random_b64()),
        (P::Salesforce, T::Access) => format!(
            "{}!AR8AQ{}.{}",
            user.org_id,
            util::random_alnum(64),
            util::random_alnum(32)
        ),
        (P::Salesforce, T::Refresh) => format!("5Aep861{}", util::random_alnum(80)),
        (P::Zoho, _) => format!(
            "1000.{}.{}",
            util::random_hex::<16>(),
            util::random_hex::<16>()
        ),
        (P::Pipedrive, T::Code) => format!(
            "{}.{}.{}",
            user.company_id,
            user.user_id,
            util::random_hex::<20>()
        ),
        (P::Pipedrive, _) => format!(
            "{}:{}:{}",
            user.company_id,
            user.user_id,
            util::random_hex::<20>()
        ),
        (P::Dynamics365, T::Code) => format!("1.AQ{}{}", util::random_b64(), util::random_b64()),
        (P::Dynamics365, T::Access) => {
            let header = util::b64url(br#"{"typ":"JWT","alg":"none"}"#);
            let claims = json!({
                "aud": "https://sandbox.dynamics.invalid",
                "oid": user.user_id,
                "tid": user.org_id,
                "uti": util::random_alnum(22),
            });
            let payload = util::b64url(claims.to_string().as_bytes());
            format!("{header}.{payload}.{}", util::random_b64())
        }
        (P::Dynamics365, T::Refresh) => format!(
            "1.AQ{}{}{}",
            util::random_b64(),
            util::random_b64(),
            util::random_b64()
        ),
        (P::Google, T::Code) => format!("4/0A{}", util::random_b64()),
        (P::Google, T::Access) => format!("ya29.a0A{}{}", util::random_b64(), util::random_b64()),
        (P::Google, T::Refresh) => format!("1//0g{}", util::random_b64()),
        (P::Zendesk, T::Code) => util::random_hex::<20>(),
        (P::Zendesk, _) => util::random_hex::<32>(),
        (P::Genesys, T::Code) => util::random_b64(),
        (P::Genesys, _) => format!("{}{}", util::random_b64(), util::random_b64()),
        (P::CustomOauth, _) => util::random_b64(),
    }
}

/// Whole seconds of a lifetime, rounded up.
pub(crate) fn secs_ceil(duration: std::time::Duration) -> u64 {
    duration
        .as_secs()
        .saturating_add(u64::from(duration.subsec_nanos() > 0))
}

/// Google's long names for the OpenID short scopes.
pub(crate) fn google_scope(scope: &str) -> String {
    match scope {
        "email" => "https://www.googleapis.com/auth/userinfo.email".to_owned(),
        "profile" => "https://www.googleapis.com/auth/userinfo.profile".to_owned(),
        other => other.to_owned(),
    }
}

/// A user id as a JSON number when it is one (HubSpot, Zendesk, Pipedrive).
fn numeric(id: &str) -> Value {
    id.parse::<u64>().map_or_else(|_| json!(id), |n| json!(n))
}

/// Salesforce's identity URL of a grant: at the login host that issued it.
pub(crate) fn salesforce_id_url(site: &str, user: &OAuthUser) -> String {
    let login = if site == "test.salesforce.com" {
        site
    } else {
        SALESFORCE_LOGIN
    };
    format!("https://{login}/id/{}/{}", user.org_id, user.user_id)
}

/// An unsigned JWT (RFC 7519 §6): header `{"alg":"none"}`, empty signature.
fn unsigned_jwt(claims: &Value) -> String {
    let header = util::b64url(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = util::b64url(claims.to_string().as_bytes());
    format!("{header}.{payload}.")
}

fn id_token(issued: &Issued) -> Option<String> {
    if !issued.scopes.iter().any(|s| s == "openid") {
        return None;
    }
    let iat = issued.issued_unix_ms / 1000;
    let user = &issued.user;
    let mut claims = match issued.provider {
        OAuthProvider::Google => {
            let mut claims = json!({
                "iss": "https://accounts.google.com",
                "azp": issued.client_id,
                "aud": issued.client_id,
                "sub": user.user_id,
                "iat": iat,
                "exp": iat + 3600,
            });
            if issued.scopes.iter().any(|s| s.ends_with("userinfo.email")) {
                claims["email"] = json!(user.email);
                claims["email_verified"] = json!(true);
            }
            if issued
                .scopes
                .iter()
                .any(|s| s.ends_with("userinfo.profile"))
            {
                claims["name"] = json!(user.name);
            }
            claims
        }
        OAuthProvider::Dynamics365 => json!({
            "iss": format!("https://login.microsoftonline.com/{}/v2.0", user.org_id),
            "aud": issued.client_id,
            "sub": util::derived_guid(&format!("sub:{}:{}", issued.client_id, user.user_id)),
            "oid": user.user_id,
            "tid": user.org_id,
            "preferred_username": user.email,
            "name": user.name,
            "iat": iat,
            "nbf": iat,
            "exp": iat + 3600,
            "ver": "2.0",
        }),
        _ => return None,
    };
    if let Some(nonce) = &issued.nonce {
        claims["nonce"] = json!(nonce);
    }
    Some(unsigned_jwt(&claims))
}

/// The provider's token response body for `issued`.
pub(crate) fn token_body(issued: &Issued) -> Value {
    let user = &issued.user;
    let expires_in = secs_ceil(issued.ttl);
    let scope = issued.scopes.join(" ");
    let mut body = match issued.provider {
        OAuthProvider::Hubspot => json!({
            "token_type": "bearer",
            "access_token": issued.access_token,
            "expires_in": expires_in,
            "hub_id": user.hub_id,
            "user_id": numeric(&user.user_id),
            "scopes": issued.scopes,
            "token_use": "access_token",
        }),
        OAuthProvider::Salesforce => {
            let id = salesforce_id_url(&issued.site, user);
            let issued_at = issued.issued_unix_ms.to_string();
            let signature =
                util::salesforce_signature(issued.client_secret.expose(), &id, &issued_at);
            json!({
                "access_token": issued.access_token,
                "signature": signature,
                "scope": scope,
                "instance_url": format!("https://{}", user.instance_host),
                "id": id,
                "token_type": "Bearer",
                "issued_at": issued_at,
            })
        }
        OAuthProvider::Zoho => json!({
            "access_token": issued.access_token,
            "scope": scope,
            "api_domain": format!("https://www.zohoapis.{}", issued.site),
            "token_type": "Bearer",
            "expires_in": expires_in,
        }),
        OAuthProvider::Pipedrive => json!({
            "access_token": issued.access_token,
            "token_type": "Bearer",
            "expires_in": expires_in,
            "scope": issued.scopes.join(","),
            "api_domain": format!("https://{}.pipedrive.com", user.company_domain),
        }),
        OAuthProvider::Dynamics365 => {
            let shown: Vec<&str> = issued
                .scopes
                .iter()
                .map(String::as_str)
                .filter(|s| *s != "offline_access")
                .collect();
            json!({
                "token_type": "Bearer",
                "scope": shown.join(" "),
                "expires_in": expires_in,
                "ext_expires_in": expires_in,
                "access_token": issued.access_token,
            })
        }
        OAuthProvider::Google => json!({
            "access_token": issued.access_token,
            "expires_in": expires_in,
            "scope": scope,
            "token_type": "Bearer",
        }),
        OAuthProvider::Zendesk => json!({
            "access_token": issued.access_token,
            "token_type": "bearer",
            "scope": scope,
            "expires_in": expires_in,
        }),
        OAuthProvider::Genesys => json!({
            "access_token": issued.access_token,
            "token_type": "bearer",
            "expires_in": expires_in,
        }),
        OAuthProvider::CustomOauth => json!({
            "access_token": issued.access_token,
            "token_type": "Bearer",
            "expires_in": expires_in,
            "scope": scope,
        }),
    };
    if let Some(refresh) = &issued.refresh_token {
        body["refresh_token"] = json!(refresh);
        if issued.provider == OAuthProvider::Zendesk {
            body["refresh_token_expires_in"] = json!(issued.refresh_ttl.map_or(0, secs_ceil));
        }
    }
    if let Some(token) = id_token(issued) {
        body["id_token"] = json!(token);
    }
    body
}

/// Headers every token response carries (RFC 6749 §5.1).
fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

/// A successful token response.
pub(crate) fn token_success(issued: &Issued) -> Response {
    no_store(wire::json(StatusCode::OK, token_body(issued)))
}

/// A seeded grant: the code-exchange body split into tokens and the rest.
pub(crate) fn seeded(issued: &Issued) -> SeededGrant {
    let mut body = match token_body(issued) {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    let mut take = |key: &str| body.remove(key);
    take("access_token");
    take("refresh_token");
    take("expires_in");
    SeededGrant {
        grant_id: issued.grant_id,
        access_token: issued.access_token.clone(),
        refresh_token: issued.refresh_token.clone().unwrap_or_default(),
        expires_in: secs_ceil(issued.ttl),
        extra: Value::Object(body),
    }
}

// ---------------------------------------------------------------- errors

/// The RFC 6749 error code of a token error.
fn rfc_code(error: TokenError) -> &'static str {
    match error {
        TokenError::InvalidRequest(_) => "invalid_request",
        TokenError::InvalidClient(_) => "invalid_client",
        TokenError::InvalidGrant(_) => "invalid_grant",
        TokenError::InvalidScope => "invalid_scope",
        TokenError::UnsupportedGrantType => "unsupported_grant_type",
    }
}

/// A plain-words description of a token error.
fn describe(error: TokenError) -> String {
    match error {
        TokenError::InvalidRequest(what) => what.to_owned(),
        TokenError::InvalidClient(problem) => match problem {
            ClientProblem::Missing => "client authentication is missing".to_owned(),
            ClientProblem::Unknown => "unknown client".to_owned(),
            ClientProblem::BadSecret => "client authentication failed".to_owned(),
            ClientProblem::BasicRequired => {
                "client credentials must be sent with HTTP Basic authentication".to_owned()
            }
            ClientProblem::MultipleMethods => {
                "more than one client authentication method was used".to_owned()
            }
        },
        TokenError::InvalidGrant(problem) => describe_grant(problem).to_owned(),
        TokenError::InvalidScope => "the requested scope exceeds the granted scope".to_owned(),
        TokenError::UnsupportedGrantType => "grant_type is not supported".to_owned(),
    }
}

fn describe_grant(problem: GrantProblem) -> &'static str {
    match problem {
        GrantProblem::UnknownCode => "authorization code is invalid",
        GrantProblem::CodeUsed => "authorization code was already used",
        GrantProblem::CodeExpired => "authorization code has expired",
        GrantProblem::RedirectMismatch => {
            "redirect_uri does not match the one of the authorization request"
        }
        GrantProblem::VerifierMissing => "code_verifier is missing",
        GrantProblem::VerifierMismatch => "code_verifier does not match the code_challenge",
        GrantProblem::WrongClient => "the grant was issued to another client",
        GrantProblem::WrongSite => "the grant was issued at another location",
        GrantProblem::UnknownRefresh => "refresh token is invalid",
        GrantProblem::Revoked => "the grant has been revoked",
        GrantProblem::RefreshExpired => "refresh token has expired",
        GrantProblem::Reused => "refresh token was already used; the grant has been revoked",
        GrantProblem::Forced => "the grant is invalid",
    }
}

/// Whether a 401 needs `WWW-Authenticate: Basic` (RFC 6749 §5.2).
fn with_basic_challenge(mut response: Response, basic_attempted: bool) -> Response {
    if basic_attempted && response.status() == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"oauth\""),
        );
    }
    response
}

/// The provider's answer to a failed token request.
pub(crate) fn token_error(
    provider: OAuthProvider,
    error: TokenError,
    code_exchange: bool,
    basic_attempted: bool,
) -> Response {
    let response = match provider {
        OAuthProvider::Hubspot => hubspot_error(error, code_exchange),
        OAuthProvider::Salesforce => salesforce_error(error),
        OAuthProvider::Zoho => zoho_error(error),
        OAuthProvider::Pipedrive => pipedrive_error(error),
        OAuthProvider::Dynamics365 => microsoft_error(error),
        OAuthProvider::Google => google_error(error),
        OAuthProvider::Zendesk => zendesk_error(error),
        OAuthProvider::Genesys => genesys_error(error),
        OAuthProvider::CustomOauth => rfc_error(error),
    };
    no_store(with_basic_challenge(response, basic_attempted))
}

/// RFC 6749 §5.2 status: 401 for client authentication, else 400.
fn rfc_status(error: TokenError) -> StatusCode {
    match error {
        TokenError::InvalidClient(_) => StatusCode::UNAUTHORIZED,
        _ => StatusCode::BAD_REQUEST,
    }
}

fn rfc_error(error: TokenError) -> Response {
    wire::json(
        rfc_status(error),
        json!({"error": rfc_code(error), "error_description": describe(error)}),
    )
}

fn hubspot_error(error: TokenError, code_exchange: bool) -> Response {
    let (status, message) = match error {
        TokenError::InvalidRequest(what) => ("BAD_REQUEST", what.to_owned()),
        TokenError::InvalidClient(ClientProblem::BadSecret) => (
            "BAD_CLIENT_ID",
            "missing or invalid client secret".to_owned(),
        ),
        TokenError::InvalidClient(_) => {
            ("BAD_CLIENT_ID", "missing or invalid client id".to_owned())
        }
        TokenError::InvalidGrant(problem) => match problem {
            GrantProblem::CodeExpired => ("EXPIRED_AUTH_CODE", "auth code is expired".to_owned()),
            GrantProblem::RedirectMismatch => (
                "BAD_REDIRECT_URI",
                "redirect_uri does not match the one used to get the auth code".to_owned(),
            ),
            GrantProblem::WrongClient if !code_exchange => (
                "BAD_REFRESH_TOKEN",
                "refresh token was not issued to this client".to_owned(),
            ),
            problem if problem.is_code() || code_exchange => {
                ("BAD_AUTH_CODE", "missing or invalid auth code".to_owned())
            }
            _ => (
                "BAD_REFRESH_TOKEN",
                "missing or invalid refresh token".to_owned(),
            ),
        },
        TokenError::InvalidScope => ("BAD_SCOPE", describe(error)),
        TokenError::UnsupportedGrantType => {
            ("BAD_GRANT_TYPE", "missing or unknown grant type".to_owned())
        }
    };
    wire::json(
        StatusCode::BAD_REQUEST,
        json!({"status": status, "message": message, "correlationId": wire::correlation_id()}),
    )
}

fn salesforce_error(error: TokenError) -> Response {
    let (code, description) = match error {
        TokenError::InvalidClient(ClientProblem::Unknown | ClientProblem::Missing) => {
            ("invalid_client_id", "client identifier invalid")
        }
        TokenError::InvalidClient(_) => ("invalid_client", "invalid client credentials"),
        TokenError::InvalidGrant(problem) => (
            "invalid_grant",
            match problem {
                GrantProblem::CodeExpired => "expired authorization code",
                GrantProblem::VerifierMissing | GrantProblem::VerifierMismatch => {
                    "invalid code verifier"
                }
                GrantProblem::RedirectMismatch => "redirect_uri must match configuration",
                GrantProblem::UnknownCode | GrantProblem::CodeUsed => "authentication failure",
                _ => "expired access/refresh token",
            },
        ),
        TokenError::InvalidRequest(what) => ("invalid_request", what),
        TokenError::InvalidScope => ("invalid_scope", "the requested scope is not allowed"),
        TokenError::UnsupportedGrantType => ("unsupported_grant_type", "grant type not supported"),
    };
    // Salesforce answers 400 even for client authentication failures.
    wire::json(
        StatusCode::BAD_REQUEST,
        json!({"error": code, "error_description": description}),
    )
}

fn zoho_error(error: TokenError) -> Response {
    let code = match error {
        TokenError::InvalidClient(ClientProblem::BadSecret) => "invalid_client_secret",
        TokenError::InvalidClient(_) => "invalid_client",
        TokenError::InvalidGrant(_) => "invalid_code",
        TokenError::InvalidRequest(_) => "invalid_request",
        TokenError::InvalidScope => "invalid_scope",
        TokenError::UnsupportedGrantType => "unsupported_grant_type",
    };
    // Zoho's quirk: token errors come back as HTTP 200.
    wire::json(StatusCode::OK, json!({ "error": code }))
}

fn pipedrive_error(error: TokenError) -> Response {
    let message = match error {
        TokenError::InvalidClient(_) => format!("Invalid client: {}", describe(error)),
        TokenError::InvalidGrant(_) => format!("Invalid grant: {}", describe(error)),
        _ => describe(error),
    };
    wire::json(
        rfc_status(error),
        json!({"success": false, "message": message, "error": rfc_code(error)}),
    )
}

fn google_error(error: TokenError) -> Response {
    let description = match error {
        TokenError::InvalidClient(ClientProblem::Unknown | ClientProblem::Missing) => {
            "The OAuth client was not found."
        }
        TokenError::InvalidClient(_) => "Unauthorized",
        TokenError::InvalidGrant(problem) => match problem {
            GrantProblem::UnknownCode => "Malformed auth code.",
            GrantProblem::VerifierMissing => "Missing code verifier.",
            GrantProblem::VerifierMismatch => "Invalid code verifier.",
            p if p.is_code() || p == GrantProblem::WrongClient => "Bad Request",
            _ => "Token has been expired or revoked.",
        },
        TokenError::InvalidRequest(what) => what,
        TokenError::InvalidScope => "Bad Request",
        TokenError::UnsupportedGrantType => "Invalid grant_type: ",
    };
    wire::json(
        rfc_status(error),
        json!({"error": rfc_code(error), "error_description": description}),
    )
}

fn zendesk_error(error: TokenError) -> Response {
    let description = match error {
        TokenError::InvalidClient(_) => "Client authentication failed due to unknown client, no client authentication included, or unsupported authentication method.".to_owned(),
        TokenError::InvalidGrant(_) => "The provided authorization grant is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client.".to_owned(),
        TokenError::UnsupportedGrantType => "The authorization grant type is not supported by the authorization server.".to_owned(),
        TokenError::InvalidScope => "The requested scope is invalid, unknown, or malformed.".to_owned(),
        TokenError::InvalidRequest(what) => format!("The request is missing a required parameter, includes an unsupported parameter value, or is otherwise malformed: {what}."),
    };
    wire::json(
        rfc_status(error),
        json!({"error": rfc_code(error), "error_description": description}),
    )
}

fn genesys_error(error: TokenError) -> Response {
    let description = describe(error);
    wire::json(
        rfc_status(error),
        json!({
            "error": rfc_code(error),
            "description": description,
            "error_description": description,
        }),
    )
}

/// The AADSTS number and message of a token error.
fn aadsts(error: TokenError) -> (u32, &'static str, &'static str) {
    match error {
        TokenError::InvalidClient(ClientProblem::Unknown) => (
            700_016,
            "unauthorized_client",
            "Application with the given identifier was not found in the directory. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant.",
        ),
        TokenError::InvalidClient(ClientProblem::BadSecret) => (
            7_000_215,
            "invalid_client",
            "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app.",
        ),
        TokenError::InvalidClient(_) => (
            7_000_218,
            "invalid_client",
            "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.",
        ),
        TokenError::InvalidGrant(problem) => (
            match problem {
                GrantProblem::CodeUsed => 54_005,
                GrantProblem::CodeExpired => 70_008,
                GrantProblem::RedirectMismatch => 500_112,
                GrantProblem::VerifierMissing | GrantProblem::VerifierMismatch => 501_481,
                GrantProblem::Revoked | GrantProblem::Reused => 50_173,
                GrantProblem::RefreshExpired => 700_082,
                GrantProblem::UnknownRefresh => 9_002_313,
                _ => 70_000,
            },
            "invalid_grant",
            match problem {
                GrantProblem::CodeUsed => {
                    "OAuth2 Authorization code was already redeemed, please retry with a new valid code or use an existing refresh token."
                }
                GrantProblem::CodeExpired => {
                    "The provided authorization code or refresh token has expired due to inactivity. Send a new interactive authorization request for this user and resource."
                }
                GrantProblem::RedirectMismatch => {
                    "The reply address does not match the reply address provided when requesting Authorization code."
                }
                GrantProblem::VerifierMissing | GrantProblem::VerifierMismatch => {
                    "The Code_Verifier does not match the code_challenge supplied in the authorization request."
                }
                GrantProblem::Revoked | GrantProblem::Reused => {
                    "The provided grant has expired due to it being revoked, a fresh auth token is needed. The user might have changed or reset their password."
                }
                GrantProblem::RefreshExpired => "The refresh token has expired due to inactivity.",
                GrantProblem::UnknownRefresh => "Invalid request. Request is malformed or invalid.",
                _ => "Provided grant is invalid or malformed.",
            },
        ),
        TokenError::InvalidScope => (
            70_011,
            "invalid_scope",
            "The provided value for the input parameter 'scope' is not valid.",
        ),
        TokenError::UnsupportedGrantType => (
            70_003,
            "unsupported_grant_type",
            "The app requested an unsupported grant type.",
        ),
        TokenError::InvalidRequest(_) => (
            900_144,
            "invalid_request",
            "The request body must contain the following parameter: 'grant_type'.",
        ),
    }
}

/// Microsoft identity platform's error body (with trace and correlation ids).
fn microsoft_body(status: StatusCode, number: u32, code: &str, message: &str) -> Response {
    let trace_id = util::random_guid();
    let correlation_id = util::random_guid();
    let timestamp = util::utc_timestamp(util::unix_secs());
    wire::json(
        status,
        json!({
            "error": code,
            "error_description": format!("AADSTS{number}: {message} Trace ID: {trace_id} Correlation ID: {correlation_id} Timestamp: {timestamp}"),
            "error_codes": [number],
            "timestamp": timestamp,
            "trace_id": trace_id,
            "correlation_id": correlation_id,
            "error_uri": format!("https://login.microsoftonline.com/error?code={number}"),
        }),
    )
}

fn microsoft_error(error: TokenError) -> Response {
    let (number, code, message) = aadsts(error);
    let status = match (code, error) {
        ("invalid_client", _) => StatusCode::UNAUTHORIZED,
        _ => StatusCode::BAD_REQUEST,
    };
    microsoft_body(status, number, code, message)
}

/// The provider's answer for a forced token-endpoint fault.
pub(crate) fn forced(provider: OAuthProvider, fault: OAuthFault, code_exchange: bool) -> Response {
    let response = match fault {
        OAuthFault::InvalidGrant => token_error(
            provider,
            TokenError::InvalidGrant(if code_exchange {
                GrantProblem::UnknownCode
            } else {
                GrantProblem::Forced
            }),
            code_exchange,
            false,
        ),
        OAuthFault::Status(status) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            forced_status(provider, status)
        }
    };
    no_store(response)
}

/// A provider's token endpoint answering `status` on its own (outage, throttling).
pub(crate) fn forced_status(provider: OAuthProvider, status: StatusCode) -> Response {
    let rfc = match status {
        StatusCode::TOO_MANY_REQUESTS => "slow_down",
        StatusCode::SERVICE_UNAVAILABLE => "temporarily_unavailable",
        s if s.is_server_error() => "server_error",
        StatusCode::UNAUTHORIZED => "invalid_client",
        _ => "invalid_request",
    };
    let response = match provider {
        OAuthProvider::Hubspot => crate::providers::hubspot::error_for_status(status),
        OAuthProvider::Pipedrive => crate::providers::pipedrive::error_for_status(status, 1),
        OAuthProvider::Zendesk => crate::providers::zendesk::error_for_status(status, 1),
        OAuthProvider::Salesforce => {
            let (code, description) = if status.is_server_error() {
                ("unknown_error", "retry your request")
            } else {
                (rfc, wire::reason(status))
            };
            wire::json(
                status,
                json!({"error": code, "error_description": description}),
            )
        }
        OAuthProvider::Zoho => {
            if status == StatusCode::TOO_MANY_REQUESTS {
                wire::json(
                    status,
                    json!({
                        "error_description": "You have made too many requests continuously. Please try again after some time.",
                        "error": "Access Denied",
                        "status": "failure",
                    }),
                )
            } else {
                wire::json(status, json!({"error": wire::snake_reason(status)}))
            }
        }
        OAuthProvider::Dynamics365 => microsoft_body(
            status,
            if status.is_server_error() {
                90_033
            } else {
                90_055
            },
            rfc,
            if status.is_server_error() {
                "A transient error has occurred. Please try again."
            } else {
                "The request has been throttled. Please try again later."
            },
        ),
        OAuthProvider::Google => {
            let (code, description) = match status {
                StatusCode::TOO_MANY_REQUESTS => ("rate_limit_exceeded", "Rate Limit Exceeded"),
                s if s.is_server_error() => ("internal_failure", "Backend Error"),
                s => (rfc, wire::reason(s)),
            };
            wire::json(
                status,
                json!({"error": code, "error_description": description}),
            )
        }
        OAuthProvider::Genesys => {
            let (code, message) = match status {
                StatusCode::TOO_MANY_REQUESTS => (
                    "too.many.requests",
                    "Rate limit exceeded the maximum. Retry the request in [1] seconds",
                ),
                StatusCode::SERVICE_UNAVAILABLE => (
                    "service.unavailable",
                    "The service is currently unavailable",
                ),
                s if s.is_server_error() => (
                    "internal.server.error",
                    "The server encountered an unexpected error",
                ),
                s => ("bad.request", wire::reason(s)),
            };
            wire::json(
                status,
                json!({"message": message, "code": code, "status": status.as_u16()}),
            )
        }
        OAuthProvider::CustomOauth => wire::json(
            status,
            json!({"error": rfc, "error_description": wire::reason(status)}),
        ),
    };
    if matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
        wire::with_retry_after(response, 1)
    } else {
        response
    }
}

/// Zoho's `location` query parameter for a data centre (`com` → `us`).
pub(crate) fn zoho_location_of(data_centre: &str) -> &'static str {
    zoho_location(data_centre).unwrap_or("us")
}

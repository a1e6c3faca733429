//! The HTTP side of the OAuth stand-ins: parsing authorization and token requests,
//! client authentication rules, redirects and error pages. Provider modules call these
//! from their routes. Nothing here logs parameters: they carry codes and secrets.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, LOCATION};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use url::Url;

use super::shape;
use super::store::{
    AuthorizeRefusal, AuthorizeRequest, Caller, Challenge, ClientProblem, Introspection, Lifetimes,
    RevokeOutcome, RevokeReach, TokenError,
};
use super::{AccessDenied, AccessGrant, OAuthProvider};
use crate::providers::ProviderRequest;
use crate::state::SandboxState;
use crate::wire;

/// Parameters of a query string or form body, first value per name; `Err` names a
/// parameter given more than once (RFC 6749 §3.1, §3.2).
pub(crate) fn params(text: &[u8]) -> Result<HashMap<String, String>, String> {
    let mut map = HashMap::new();
    for (key, value) in url::form_urlencoded::parse(text) {
        if map.insert(key.to_string(), value.into_owned()).is_some() {
            return Err(key.into_owned());
        }
    }
    Ok(map)
}

/// Query parameters, ignoring repeats (authorize requests show errors, not crash).
fn query_params(req: &ProviderRequest) -> HashMap<String, String> {
    let mut map = HashMap::new();
    if let Some(query) = &req.query {
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            map.entry(key.into_owned())
                .or_insert_with(|| value.into_owned());
        }
    }
    map
}

/// A token request's parameters: the form body, or (Zendesk) a JSON object; HubSpot also
/// takes them from the query string.
fn token_params(
    provider: OAuthProvider,
    req: &ProviderRequest,
) -> Result<HashMap<String, String>, TokenError> {
    let is_json = wire::header(&req.headers, CONTENT_TYPE.as_str())
        .is_some_and(|value| value.to_ascii_lowercase().contains("json"));
    let mut map = if is_json && provider == OAuthProvider::Zendesk {
        let value: serde_json::Value = serde_json::from_slice(&req.body)
            .map_err(|_| TokenError::InvalidRequest("the body is not valid JSON"))?;
        let object = value
            .as_object()
            .ok_or(TokenError::InvalidRequest("the body must be a JSON object"))?;
        object
            .iter()
            .filter_map(|(key, value)| {
                let text = match value {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Number(n) => n.to_string(),
                    _ => return None,
                };
                Some((key.clone(), text))
            })
            .collect()
    } else {
        params(&req.body)
            .map_err(|_| TokenError::InvalidRequest("a parameter was given more than once"))?
    };
    if provider == OAuthProvider::Hubspot
        && let Some(query) = &req.query
        && let Ok(query) = params(query.as_bytes())
    {
        for (key, value) in query {
            map.entry(key).or_insert(value);
        }
    }
    Ok(map)
}

/// Space-separated scopes (Zoho and Pipedrive also accept commas) of the `name`
/// parameter, with a provider's spellings: Google's long names for `email`/`profile`.
fn scope_list(provider: OAuthProvider, query: &HashMap<String, String>, name: &str) -> Vec<String> {
    let split = |text: &str| -> Vec<String> {
        text.split(|c: char| {
            c.is_whitespace()
                || (c == ',' && matches!(provider, OAuthProvider::Zoho | OAuthProvider::Pipedrive))
        })
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
    };
    let mut scopes = query.get(name).map(|s| split(s)).unwrap_or_default();
    let mut seen = std::collections::HashSet::new();
    scopes.retain(|s| seen.insert(s.clone()));
    scopes
}

/// The asked scopes (see [`scope_list`]), or what the app's configuration grants when
/// the request names none.
fn scopes(provider: OAuthProvider, query: &HashMap<String, String>) -> Vec<String> {
    let mut scopes = scope_list(provider, query, "scope");
    if provider == OAuthProvider::Google {
        scopes = scopes.iter().map(|s| shape::google_scope(s)).collect();
    }
    if scopes.is_empty() {
        // What the app's configuration would grant when the request names no scope.
        match provider {
            OAuthProvider::Salesforce => scopes = vec!["api".into(), "refresh_token".into()],
            OAuthProvider::Pipedrive => scopes = vec!["base".into()],
            _ => {}
        }
    }
    let mut seen = std::collections::HashSet::new();
    scopes.retain(|s| seen.insert(s.clone()));
    scopes
}

/// The authorization server's own error page (400, no redirect): used when the client
/// or the redirect URI cannot be trusted.
fn error_page(provider: OAuthProvider, error: &str, message: &str) -> Response {
    let body = format!(
        "<!DOCTYPE html><html><head><title>Authorization error</title></head><body><h1>Authorization error</h1><p>{provider}: {error}</p><p>{message}</p></body></html>"
    );
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

/// `302 Found` to `redirect` with `extra` appended to its query.
fn redirect(mut redirect: Url, extra: &[(&str, &str)]) -> Response {
    {
        let mut pairs = redirect.query_pairs_mut();
        for (key, value) in extra {
            pairs.append_pair(key, value);
        }
    }
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::FOUND;
    match HeaderValue::from_str(redirect.as_str()) {
        Ok(location) => {
            response.headers_mut().insert(LOCATION, location);
            response
                .headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(_) => (StatusCode::BAD_REQUEST, "redirect_uri cannot be used").into_response(),
    }
}

/// Serves an authorization request (`GET {authorize URL}?response_type=code&…`): auto-
/// approves as the `login_hint` user (or the default user) and redirects with a code.
///
/// `site` is where the request was made (Zendesk subdomain, Genesys region, Salesforce
/// host, Zoho data centre; empty for the others).
pub(crate) fn authorize(
    state: &SandboxState,
    req: &ProviderRequest,
    provider: OAuthProvider,
    site: &str,
) -> Response {
    let query = query_params(req);
    let get = |name: &str| {
        query
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    };
    let Some(client_id) = get("client_id") else {
        return error_page(provider, "invalid_request", "client_id is required.");
    };
    if !state.oauth_store().has_client(provider, client_id) {
        return error_page(
            provider,
            "invalid_client",
            "The OAuth client was not found.",
        );
    }
    let Some(redirect_uri) = get("redirect_uri") else {
        return error_page(provider, "invalid_request", "redirect_uri is required.");
    };
    let target = match Url::parse(redirect_uri) {
        Ok(url) if url.fragment().is_none() && !url.cannot_be_a_base() => url,
        _ => {
            return error_page(
                provider,
                "invalid_request",
                "redirect_uri must be an absolute URI without a fragment.",
            );
        }
    };
    let state_param = get("state");
    let with_state = |mut pairs: Vec<(&'static str, String)>| {
        if let Some(value) = state_param {
            pairs.push(("state", value.to_owned()));
        }
        pairs
    };
    let refuse = |error: &str, description: &str| {
        let pairs = with_state(vec![
            ("error", error.to_owned()),
            ("error_description", description.to_owned()),
        ]);
        let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        redirect(target.clone(), &borrowed)
    };

    // HubSpot's and Pipedrive's documented authorize URLs carry no response_type.
    let implied_code = matches!(provider, OAuthProvider::Hubspot | OAuthProvider::Pipedrive);
    let response_type = get("response_type").or(implied_code.then_some("code"));
    if response_type != Some("code") {
        return refuse(
            "unsupported_response_type",
            "Only response_type=code is supported.",
        );
    }
    let asked = scopes(provider, &query);
    let challenge = match (get("code_challenge"), get("code_challenge_method")) {
        (None, None) => None,
        (None, Some(_)) => {
            return refuse(
                "invalid_request",
                "code_challenge is required with code_challenge_method.",
            );
        }
        (Some(value), method) => {
            let valid = (43..=128).contains(&value.len())
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
            if !valid {
                return refuse("invalid_request", "code_challenge is malformed.");
            }
            match method {
                Some("S256") => Some(Challenge::S256(value.to_owned())),
                Some("plain") | None => Some(Challenge::Plain(value.to_owned())),
                Some(_) => {
                    return refuse(
                        "invalid_request",
                        "code_challenge_method must be S256 or plain.",
                    );
                }
            }
        }
    };
    // HubSpot's `optional_scope`: granted if the app and account have them.
    let optional_scopes = if provider == OAuthProvider::Hubspot {
        scope_list(provider, &query, "optional_scope")
            .into_iter()
            .filter(|scope| !asked.contains(scope))
            .collect()
    } else {
        Vec::new()
    };
    let request = AuthorizeRequest {
        provider,
        client_id: client_id.to_owned(),
        redirect_uri: redirect_uri.to_owned(),
        scopes: asked,
        optional_scopes,
        include_granted: provider == OAuthProvider::Google
            && get("include_granted_scopes") == Some("true"),
        challenge,
        login_hint: get("login_hint").map(str::to_owned),
        site: site.to_owned(),
        offline: get("access_type") == Some("offline"),
        nonce: get("nonce").map(str::to_owned),
    };
    let deny = get("sandbox_decision") == Some("deny");
    let authorized = state.oauth_store().authorize(request, deny);
    match authorized {
        Ok(authorized) => {
            let mut pairs = with_state(vec![("code", authorized.code)]);
            match provider {
                OAuthProvider::Zoho => {
                    let dc = authorized.user.data_centre;
                    pairs.push(("location", shape::zoho_location_of(&dc).to_owned()));
                    pairs.push(("accounts-server", format!("https://accounts.zoho.{dc}")));
                }
                OAuthProvider::Google => {
                    pairs.push(("scope", authorized.scopes.join(" ")));
                }
                _ => {}
            }
            let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (*k, v.as_str())).collect();
            redirect(target, &borrowed)
        }
        Err(AuthorizeRefusal::Denied) => refuse(
            "access_denied",
            "The user denied the authorization request.",
        ),
        Err(AuthorizeRefusal::UnknownClient) => error_page(
            provider,
            "invalid_client",
            "The OAuth client was not found.",
        ),
        Err(AuthorizeRefusal::NoUser) => error_page(
            provider,
            "access_denied",
            "There is no user to sign in as; register one first.",
        ),
        Err(AuthorizeRefusal::InvalidScope(refused)) => {
            invalid_scope(provider, &refused, |description| {
                refuse("invalid_scope", description)
            })
        }
    }
}

/// A provider's answer to scopes it does not know or the app is not configured with:
/// HubSpot, Google and Zoho show an error page (no redirect); the others redirect with
/// RFC 6749 `error=invalid_scope` (`refuse`) in their own wording.
fn invalid_scope(
    provider: OAuthProvider,
    refused: &[String],
    refuse: impl Fn(&str) -> Response,
) -> Response {
    let list = refused.join(" ");
    match provider {
        OAuthProvider::Hubspot => error_page(
            provider,
            "invalid_scope",
            &format!(
                "Couldn't complete the connection. Authorization failed because the provided scopes are insufficient or not allowed for this app: {list}. Please contact the app developer."
            ),
        ),
        OAuthProvider::Google => error_page(
            provider,
            "Error 400: invalid_scope",
            &format!(
                "Some requested scopes were invalid. {{invalid=[{}]}}",
                refused.join(", ")
            ),
        ),
        OAuthProvider::Zoho => error_page(
            provider,
            "Invalid OAuth Scope",
            &format!("Scope does not exist: {list}"),
        ),
        OAuthProvider::Salesforce => refuse("the requested scope is not allowed"),
        OAuthProvider::Dynamics365 => refuse(&format!(
            "AADSTS70011: The provided request must include a 'scope' input parameter. The provided value for the input parameter 'scope' is not valid. The scope {list} is not valid."
        )),
        OAuthProvider::Zendesk => refuse("The requested scope is invalid, unknown, or malformed."),
        OAuthProvider::Genesys | OAuthProvider::CustomOauth | OAuthProvider::Pipedrive => {
            refuse(&format!("Unknown scope: {list}"))
        }
    }
}

/// How a provider wants clients to authenticate at its token endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientAuthRule {
    /// `client_secret_basic` only; body credentials are refused (Pipedrive, Genesys).
    BasicOnly,
    /// `client_secret_post`, Basic also accepted (the others).
    BodyOrBasic,
    /// Either, but never both at once (custom, per RFC 6749 §2.3).
    Either,
}

fn client_auth_rule(provider: OAuthProvider) -> ClientAuthRule {
    match provider {
        OAuthProvider::Pipedrive | OAuthProvider::Genesys => ClientAuthRule::BasicOnly,
        OAuthProvider::CustomOauth => ClientAuthRule::Either,
        _ => ClientAuthRule::BodyOrBasic,
    }
}

/// An authenticated client.
pub(crate) struct ClientAuth {
    pub(crate) client_id: String,
}

/// Authenticates the client of a token, revoke or introspect request by the provider's
/// rule. The error carries whether Basic was tried (for `WWW-Authenticate`).
pub(crate) fn authenticate_client(
    state: &SandboxState,
    provider: OAuthProvider,
    req: &ProviderRequest,
    form: &HashMap<String, String>,
) -> Result<ClientAuth, (TokenError, bool)> {
    let basic = wire::basic_credentials(&req.headers).map(|(user, password)| {
        (
            super::util::form_decode(&user),
            super::util::form_decode(&password),
        )
    });
    let basic_attempted = basic.is_some();
    let fail = |problem| Err((TokenError::InvalidClient(problem), basic_attempted));
    let body_id = form.get("client_id").filter(|v| !v.is_empty());
    let body_secret = form.get("client_secret").filter(|v| !v.is_empty());
    let (client_id, secret) = match (client_auth_rule(provider), basic, body_secret) {
        (ClientAuthRule::BasicOnly, _, Some(_)) => return fail(ClientProblem::BasicRequired),
        (ClientAuthRule::BasicOnly, None, None) => {
            return fail(if body_id.is_some() {
                ClientProblem::BasicRequired
            } else {
                ClientProblem::Missing
            });
        }
        (ClientAuthRule::Either, Some(_), Some(_)) => return fail(ClientProblem::MultipleMethods),
        (_, _, Some(secret)) => match body_id {
            Some(id) => (id.clone(), Some(secret.clone())),
            None => return fail(ClientProblem::Missing),
        },
        (_, Some((id, secret)), None) => {
            if body_id.is_some_and(|body| *body != id) {
                return fail(ClientProblem::Unknown);
            }
            (id, Some(secret))
        }
        (_, None, None) => match body_id {
            Some(id) => (id.clone(), None),
            None => return fail(ClientProblem::Missing),
        },
    };
    state
        .oauth_store()
        .authenticate_client(provider, &client_id, secret.as_deref())
        .map(|()| ClientAuth { client_id })
        .map_err(|problem| (TokenError::InvalidClient(problem), basic_attempted))
}

/// Zendesk's optional `expires_in` (300 s–2 days) and `refresh_token_expires_in`
/// (7–90 days) request parameters.
fn lifetimes(
    provider: OAuthProvider,
    form: &HashMap<String, String>,
) -> Result<Lifetimes, TokenError> {
    if provider != OAuthProvider::Zendesk {
        return Ok(Lifetimes::default());
    }
    let read = |name: &str,
                range: std::ops::RangeInclusive<u64>|
     -> Result<Option<Duration>, TokenError> {
        match form.get(name) {
            None => Ok(None),
            Some(text) => match text.parse::<u64>() {
                Ok(secs) if range.contains(&secs) => Ok(Some(Duration::from_secs(secs))),
                _ => Err(TokenError::InvalidRequest(
                    "expires_in must be 300–172800 and refresh_token_expires_in 604800–7776000",
                )),
            },
        }
    };
    Ok(Lifetimes {
        access: read("expires_in", 300..=172_800)?,
        refresh: read("refresh_token_expires_in", 604_800..=7_776_000)?,
    })
}

/// Serves a token request (`POST {token URL}`): pending forced faults first, then client
/// authentication, then `authorization_code` or `refresh_token`.
pub(crate) fn token(
    state: &SandboxState,
    req: &ProviderRequest,
    provider: OAuthProvider,
    site: &str,
) -> Response {
    let form = token_params(provider, req);
    let grant_type = form
        .as_ref()
        .ok()
        .and_then(|form| form.get("grant_type").cloned())
        .unwrap_or_default();
    let code_exchange = grant_type == "authorization_code";
    let forced = state.oauth_store().take_fault(provider);
    if let Some(fault) = forced {
        return shape::forced(provider, fault, code_exchange);
    }
    let error = |error, basic| shape::token_error(provider, error, code_exchange, basic);
    let form = match form {
        Ok(form) => form,
        Err(problem) => return error(problem, false),
    };
    let client = match authenticate_client(state, provider, req, &form) {
        Ok(client) => client,
        Err((problem, basic)) => return error(problem, basic),
    };
    let lifetimes = match lifetimes(provider, &form) {
        Ok(lifetimes) => lifetimes,
        Err(problem) => return error(problem, false),
    };
    let get = |name: &str| form.get(name).map(String::as_str).filter(|v| !v.is_empty());
    let caller = Caller {
        provider,
        client_id: &client.client_id,
        site,
        lifetimes,
    };
    let result = match grant_type.as_str() {
        "authorization_code" => {
            let Some(code) = get("code") else {
                return error(TokenError::InvalidRequest("code is required"), false);
            };
            state
                .oauth_store()
                .redeem(&caller, code, get("redirect_uri"), get("code_verifier"))
        }
        "refresh_token" => {
            let Some(refresh_token) = get("refresh_token") else {
                return error(
                    TokenError::InvalidRequest("refresh_token is required"),
                    false,
                );
            };
            let asked = get("scope").map(|scope| {
                let query = HashMap::from([("scope".to_owned(), scope.to_owned())]);
                scopes(provider, &query)
            });
            state.oauth_store().refresh(&caller, refresh_token, asked)
        }
        "" => Err(TokenError::InvalidRequest("grant_type is required")),
        _ => Err(TokenError::UnsupportedGrantType),
    };
    match result {
        Ok(issued) => shape::token_success(&issued),
        Err(problem) => error(problem, false),
    }
}

/// The outcome of checking an access token.
pub(crate) enum AccessCheck {
    /// No token was presented.
    Missing,
    /// The token was refused.
    Denied(AccessDenied),
    /// The token is good.
    Granted(Box<AccessGrant>),
}

/// Checks an access token of `provider` (from whichever header the caller read).
pub(crate) fn bearer_access(
    state: &SandboxState,
    provider: OAuthProvider,
    token: Option<&str>,
) -> AccessCheck {
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return AccessCheck::Missing;
    };
    match state.oauth_store().check_access(provider, token) {
        Ok(grant) => AccessCheck::Granted(Box::new(grant)),
        Err(denied) => AccessCheck::Denied(denied),
    }
}

/// Revokes what `token` reaches (see [`RevokeReach`]); `client_id` and `site` limit it
/// to tokens of that client and location.
pub(crate) fn revoke(
    state: &SandboxState,
    provider: OAuthProvider,
    token: &str,
    reach: RevokeReach,
    client_id: Option<&str>,
    site: Option<&str>,
) -> RevokeOutcome {
    state
        .oauth_store()
        .revoke(provider, token, reach, client_id, site)
}

/// What introspection reveals about an active token; `None` for inactive ones.
pub(crate) fn introspect_response(
    state: &SandboxState,
    provider: OAuthProvider,
    token: &str,
) -> Option<Introspection> {
    state.oauth_store().introspect(provider, token)
}

/// A token-endpoint style error for a revoke or introspect request.
pub(crate) fn client_error(provider: OAuthProvider, error: TokenError, basic: bool) -> Response {
    shape::token_error(provider, error, false, basic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameters_are_refused() {
        assert_eq!(params(b"a=1&b=2").map(|m| m.len()), Ok(2));
        assert_eq!(params(b"a=1&a=2"), Err("a".to_owned()));
    }

    #[test]
    fn scopes_follow_provider_spelling() {
        let query = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        assert_eq!(
            scopes(OAuthProvider::Google, &query(&[("scope", "openid email")])),
            ["openid", "https://www.googleapis.com/auth/userinfo.email"]
        );
        assert_eq!(
            scopes(OAuthProvider::Zoho, &query(&[("scope", "A.READ,B.ALL")])),
            ["A.READ", "B.ALL"]
        );
        assert_eq!(
            scope_list(
                OAuthProvider::Hubspot,
                &query(&[("scope", "oauth crm.a"), ("optional_scope", "crm.b oauth")]),
                "optional_scope"
            ),
            ["crm.b", "oauth"]
        );
        assert_eq!(
            scopes(OAuthProvider::Salesforce, &query(&[])),
            ["api", "refresh_token"]
        );
    }
}

//! The `/_sandbox/…` control routes: the same knobs as [`SandboxState`], as JSON over HTTP,
//! so a developer can drive a running sandbox with curl. Errors use the project's shape
//! `{"error":{"code","message"}}`.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::oauth::{GrantSelector, OAuthClient, OAuthFault, OAuthProvider, OAuthUser};
use crate::providers::hubspot_crm::{self, CrmObject};
use crate::providers::salesforce_crm::{self, DEFAULT_SALESFORCE_ORG, SfObject};
use crate::state::{Account, Fault, Provider, SandboxState};
use crate::wire;

/// The control routes, to be merged into the sandbox router.
pub(crate) fn routes() -> Router<SandboxState> {
    Router::new()
        .route("/_sandbox/health", get(health))
        .route("/_sandbox/accounts", get(list_accounts).post(add_account))
        .route("/_sandbox/calls", get(calls))
        .route(
            "/_sandbox/faults",
            get(faults).post(set_faults).delete(clear_faults),
        )
        .route("/_sandbox/reset", post(reset))
        .route(
            "/_sandbox/oauth/clients",
            get(oauth_clients).post(add_oauth_client),
        )
        .route(
            "/_sandbox/oauth/users",
            get(oauth_users).post(add_oauth_user),
        )
        .route(
            "/_sandbox/oauth/settings",
            get(oauth_settings).post(set_oauth_settings),
        )
        .route("/_sandbox/oauth/token_faults", post(oauth_token_faults))
        .route("/_sandbox/oauth/deny", post(oauth_deny))
        .route("/_sandbox/oauth/revoke_user", post(oauth_revoke_user))
        .route(
            "/_sandbox/oauth/expire_access_tokens",
            post(oauth_expire_access_tokens),
        )
        .route("/_sandbox/oauth/grants", get(oauth_grants).post(seed_grant))
        .route("/_sandbox/oauth/grants/lookup", post(oauth_grant_lookup))
        .route("/_sandbox/oauth/client_scopes", post(oauth_client_scopes))
        .route(
            "/_sandbox/oauth/withhold_scopes",
            post(oauth_withhold_scopes),
        )
        .route("/_sandbox/oauth/narrow", post(oauth_narrow))
        .route(
            "/_sandbox/hubspot/private_app_scopes",
            post(hubspot_private_app_scopes),
        )
        .route("/_sandbox/hubspot/seed", post(hubspot_seed))
        .route("/_sandbox/hubspot/records", get(hubspot_records))
        .route("/_sandbox/hubspot/update", post(hubspot_update))
        .route("/_sandbox/hubspot/archive", post(hubspot_archive))
        .route("/_sandbox/hubspot/malformed", post(hubspot_malformed))
        .route("/_sandbox/salesforce/seed", post(salesforce_seed))
        .route("/_sandbox/salesforce/records", get(salesforce_records))
        .route("/_sandbox/salesforce/update", post(salesforce_update))
        .route("/_sandbox/salesforce/delete", post(salesforce_delete))
        .route(
            "/_sandbox/salesforce/limit",
            get(salesforce_limit).post(set_salesforce_limit),
        )
        .route("/_sandbox/salesforce/malformed", post(salesforce_malformed))
        .merge(crate::actions::admin::routes())
        .merge(crate::providers::dynamics365_crm::admin::routes())
}

/// The default private app's portal, used when a HubSpot knob names none.
const DEFAULT_PORTAL: u64 = 62515;

fn default_portal() -> u64 {
    DEFAULT_PORTAL
}

/// Body of `POST /_sandbox/hubspot/seed`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HubspotSeedRequest {
    #[serde(default = "default_portal")]
    portal: u64,
    object: CrmObject,
    count: usize,
}

async fn hubspot_seed(State(state): State<SandboxState>, body: Bytes) -> Response {
    let request: HubspotSeedRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    let ids = state.seed_hubspot(request.portal, request.object, request.count);
    wire::json(StatusCode::CREATED, json!({ "ids": ids }))
}

/// `GET /_sandbox/hubspot/records?object=contacts&portal=62515`.
async fn hubspot_records(State(state): State<SandboxState>, RawQuery(query): RawQuery) -> Response {
    let object = wire::query_param(query.as_deref(), "object")
        .as_deref()
        .and_then(CrmObject::parse);
    let Some(object) = object else {
        return bad_request("invalid_query", "give object=contacts or object=companies");
    };
    let portal = match wire::query_param(query.as_deref(), "portal") {
        None => DEFAULT_PORTAL,
        Some(portal) => match portal.parse() {
            Ok(portal) => portal,
            Err(_) => return bad_request("invalid_query", "portal must be a number"),
        },
    };
    if let Some(id) = wire::query_param(query.as_deref(), "id") {
        return match state.hubspot_record(portal, object, &id) {
            Some(record) => wire::json(StatusCode::OK, json!({ "record": record })),
            None => wire::json(
                StatusCode::NOT_FOUND,
                json!({"error": {"code": "not_found", "message": "no such record"}}),
            ),
        };
    }
    wire::json(
        StatusCode::OK,
        json!({"results": state.hubspot_records(portal, object)}),
    )
}

/// Body of `POST /_sandbox/hubspot/update` and `/archive`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HubspotRecordRequest {
    #[serde(default = "default_portal")]
    portal: u64,
    object: CrmObject,
    id: String,
    #[serde(default)]
    properties: BTreeMap<String, String>,
}

async fn hubspot_update(State(state): State<SandboxState>, body: Bytes) -> Response {
    let request: HubspotRecordRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    match state.update_hubspot_record(
        request.portal,
        request.object,
        &request.id,
        &request.properties,
    ) {
        Some(record) => wire::json(StatusCode::OK, json!({ "record": record })),
        None => bad_request("not_found", "no such live record"),
    }
}

async fn hubspot_archive(State(state): State<SandboxState>, body: Bytes) -> Response {
    let request: HubspotRecordRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    let archived = state.archive_hubspot_record(request.portal, request.object, &request.id);
    wire::json(StatusCode::OK, json!({ "archived": archived }))
}

/// Body of `POST /_sandbox/hubspot/malformed`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MalformedRequest {
    route: String,
    #[serde(default = "one")]
    count: u32,
}

async fn hubspot_malformed(State(state): State<SandboxState>, body: Bytes) -> Response {
    let request: MalformedRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    if !hubspot_crm::ROUTES.contains(&request.route.as_str()) {
        return bad_request(
            "invalid_route",
            &format!("route must be one of {:?}", hubspot_crm::ROUTES),
        );
    }
    state.malform_hubspot_responses(&request.route, request.count);
    wire::json(
        StatusCode::OK,
        json!({"route": request.route, "count": request.count}),
    )
}

fn default_org() -> String {
    DEFAULT_SALESFORCE_ORG.to_owned()
}

/// Body of `POST /_sandbox/salesforce/seed`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SalesforceSeedRequest {
    #[serde(default = "default_org")]
    org: String,
    object: SfObject,
    count: usize,
}

async fn salesforce_seed(State(state): State<SandboxState>, body: Bytes) -> Response {
    let request: SalesforceSeedRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    let ids = state.seed_salesforce(&request.org, request.object, request.count);
    wire::json(StatusCode::CREATED, json!({ "ids": ids }))
}

/// `GET /_sandbox/salesforce/records?object=Contact[&org=…][&id=…]`.
async fn salesforce_records(
    State(state): State<SandboxState>,
    RawQuery(query): RawQuery,
) -> Response {
    let object = wire::query_param(query.as_deref(), "object")
        .as_deref()
        .and_then(SfObject::parse);
    let Some(object) = object else {
        return bad_request("invalid_query", "give object=Contact or object=Account");
    };
    let org = wire::query_param(query.as_deref(), "org").unwrap_or_else(default_org);
    if let Some(id) = wire::query_param(query.as_deref(), "id") {
        return match state.salesforce_record(&org, object, &id) {
            Some(record) => wire::json(StatusCode::OK, json!({ "record": record })),
            None => wire::json(
                StatusCode::NOT_FOUND,
                json!({"error": {"code": "not_found", "message": "no such record"}}),
            ),
        };
    }
    wire::json(
        StatusCode::OK,
        json!({"results": state.salesforce_records(&org, object)}),
    )
}

/// Body of `POST /_sandbox/salesforce/update` and `/delete`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SalesforceRecordRequest {
    #[serde(default = "default_org")]
    org: String,
    object: SfObject,
    id: String,
    #[serde(default)]
    fields: serde_json::Map<String, serde_json::Value>,
}

async fn salesforce_update(State(state): State<SandboxState>, body: Bytes) -> Response {
    let request: SalesforceRecordRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    if !state.update_salesforce_record(&request.org, request.object, &request.id, &request.fields) {
        return bad_request(
            "not_updated",
            "no such live record, or a field is unknown, read-only or invalid",
        );
    }
    let record = state.salesforce_record(&request.org, request.object, &request.id);
    wire::json(StatusCode::OK, json!({ "record": record }))
}

async fn salesforce_delete(State(state): State<SandboxState>, body: Bytes) -> Response {
    let request: SalesforceRecordRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    let deleted = state.delete_salesforce_record(&request.org, request.object, &request.id);
    wire::json(StatusCode::OK, json!({ "deleted": deleted }))
}

/// Body of `POST /_sandbox/salesforce/limit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SalesforceLimitRequest {
    #[serde(default = "default_org")]
    org: String,
    max: u64,
}

fn salesforce_usage(state: &SandboxState, org: &str) -> Response {
    let usage = state.salesforce_api_usage(org);
    wire::json(
        StatusCode::OK,
        json!({"org": org, "max": usage.max, "used": usage.used}),
    )
}

/// `GET /_sandbox/salesforce/limit[?org=…]`.
async fn salesforce_limit(
    State(state): State<SandboxState>,
    RawQuery(query): RawQuery,
) -> Response {
    let org = wire::query_param(query.as_deref(), "org").unwrap_or_else(default_org);
    salesforce_usage(&state, &org)
}

async fn set_salesforce_limit(State(state): State<SandboxState>, body: Bytes) -> Response {
    let request: SalesforceLimitRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    state.set_salesforce_api_limit(&request.org, request.max);
    salesforce_usage(&state, &request.org)
}

async fn salesforce_malformed(State(state): State<SandboxState>, body: Bytes) -> Response {
    let request: MalformedRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    if !salesforce_crm::ROUTES.contains(&request.route.as_str()) {
        return bad_request(
            "invalid_route",
            &format!("route must be one of {:?}", salesforce_crm::ROUTES),
        );
    }
    state.malform_salesforce_responses(&request.route, request.count);
    wire::json(
        StatusCode::OK,
        json!({"route": request.route, "count": request.count}),
    )
}

async fn health() -> Response {
    wire::json(StatusCode::OK, json!({"status": "ok"}))
}

async fn list_accounts(State(state): State<SandboxState>) -> Response {
    wire::json(StatusCode::OK, json!({"accounts": state.account_views()}))
}

async fn add_account(State(state): State<SandboxState>, body: Bytes) -> Response {
    let account: Account = match parse(&body) {
        Ok(account) => account,
        Err(response) => return response,
    };
    match state.add_account(account) {
        Ok(id) => {
            let view = state.account_views().into_iter().find(|view| view.id == id);
            wire::json(StatusCode::CREATED, json!({ "account": view }))
        }
        Err(error) => bad_request("invalid_account", &error.to_string()),
    }
}

async fn calls(State(state): State<SandboxState>) -> Response {
    wire::json(StatusCode::OK, json!(state.calls_view()))
}

async fn faults(State(state): State<SandboxState>) -> Response {
    wire::json(StatusCode::OK, json!(state.faults_view()))
}

/// Body of `POST /_sandbox/faults`: a forced status, a latency, or both.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultRequest {
    /// Status to force on the next `count` requests.
    status: Option<u16>,
    /// How many requests get `status` (default 1).
    count: Option<u32>,
    /// Limits the status and latency to one provider.
    provider: Option<Provider>,
    /// `Retry-After` seconds sent with forced 429/503 (default 1).
    retry_after_secs: Option<u64>,
    /// Limits the status to one route (a name `GET /_sandbox/calls` lists).
    route: Option<String>,
    /// Latency to add before every answer (0 removes it).
    latency_ms: Option<u64>,
}

async fn set_faults(State(state): State<SandboxState>, body: Bytes) -> Response {
    let request: FaultRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    if request.status.is_none() && request.latency_ms.is_none() {
        return bad_request(
            "invalid_fault",
            "give at least one of status (with count) or latency_ms",
        );
    }
    if let Some(status) = request.status {
        let mut fault = Fault::new(status, request.count.unwrap_or(1));
        fault.provider = request.provider;
        fault.route = request.route;
        if let Some(secs) = request.retry_after_secs {
            fault.retry_after_secs = secs;
        }
        if let Err(error) = state.add_fault(fault) {
            return bad_request("invalid_fault", &error.to_string());
        }
    }
    if let Some(ms) = request.latency_ms {
        state.set_latency(request.provider, Duration::from_millis(ms));
    }
    wire::json(StatusCode::OK, json!(state.faults_view()))
}

async fn clear_faults(State(state): State<SandboxState>) -> Response {
    state.clear_faults();
    wire::json(StatusCode::OK, json!(state.faults_view()))
}

async fn reset(State(state): State<SandboxState>) -> Response {
    state.reset();
    wire::json(StatusCode::OK, json!({"status": "reset"}))
}

async fn oauth_clients(State(state): State<SandboxState>) -> Response {
    wire::json(StatusCode::OK, json!({"clients": state.oauth_clients()}))
}

async fn add_oauth_client(State(state): State<SandboxState>, body: Bytes) -> Response {
    let client: OAuthClient = match parse(&body) {
        Ok(client) => client,
        Err(response) => return response,
    };
    match state.add_oauth_client(client) {
        Ok(view) => wire::json(StatusCode::CREATED, json!({ "client": view })),
        Err(error) => bad_request("invalid_client", &error.to_string()),
    }
}

async fn oauth_users(State(state): State<SandboxState>) -> Response {
    wire::json(StatusCode::OK, json!({"users": state.oauth_users()}))
}

async fn add_oauth_user(State(state): State<SandboxState>, body: Bytes) -> Response {
    let user: OAuthUser = match parse(&body) {
        Ok(user) => user,
        Err(response) => return response,
    };
    match state.add_oauth_user(user) {
        Ok(user) => wire::json(StatusCode::CREATED, json!({ "user": user })),
        Err(error) => bad_request("invalid_user", &error.to_string()),
    }
}

async fn oauth_settings(State(state): State<SandboxState>) -> Response {
    wire::json(StatusCode::OK, json!({"settings": state.oauth_settings()}))
}

/// Body of `POST /_sandbox/oauth/settings`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsRequest {
    provider: OAuthProvider,
    /// Access-token lifetime in seconds.
    token_ttl_secs: Option<u64>,
    /// Access-token lifetime in milliseconds (for sub-second tests).
    token_ttl_ms: Option<u64>,
    /// Refresh-token rotation.
    rotation: Option<bool>,
}

async fn set_oauth_settings(State(state): State<SandboxState>, body: Bytes) -> Response {
    let request: SettingsRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    let ttl = match (request.token_ttl_secs, request.token_ttl_ms) {
        (Some(_), Some(_)) => {
            return bad_request(
                "invalid_settings",
                "give token_ttl_secs or token_ttl_ms, not both",
            );
        }
        (Some(secs), None) => Some(Duration::from_secs(secs)),
        (None, Some(ms)) => Some(Duration::from_millis(ms)),
        (None, None) => None,
    };
    if ttl.is_none() && request.rotation.is_none() {
        return bad_request(
            "invalid_settings",
            "give at least one of token_ttl_secs, token_ttl_ms or rotation",
        );
    }
    if let Some(ttl) = ttl {
        state.set_token_ttl(request.provider, ttl);
    }
    if let Some(rotation) = request.rotation {
        state.set_rotation(request.provider, rotation);
    }
    oauth_settings(State(state)).await
}

/// Body of `POST /_sandbox/oauth/token_faults`: `error` or `status`, and a count.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFaultRequest {
    provider: OAuthProvider,
    /// `"invalid_grant"`.
    error: Option<String>,
    /// A status, 400–599.
    status: Option<u16>,
    /// How many token requests get it (default 1).
    count: Option<u32>,
}

async fn oauth_token_faults(State(state): State<SandboxState>, body: Bytes) -> Response {
    let request: TokenFaultRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    let fault = match (request.error.as_deref(), request.status) {
        (Some("invalid_grant"), None) => OAuthFault::InvalidGrant,
        (None, Some(status)) => OAuthFault::Status(status),
        _ => {
            return bad_request(
                "invalid_fault",
                "give either \"error\":\"invalid_grant\" or a status",
            );
        }
    };
    match state.force_token_error(request.provider, fault, request.count.unwrap_or(1)) {
        Ok(()) => oauth_settings(State(state)).await,
        Err(error) => bad_request("invalid_fault", &error.to_string()),
    }
}

/// Body of `POST /_sandbox/oauth/deny`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DenyRequest {
    provider: OAuthProvider,
    #[serde(default = "one")]
    count: u32,
}

fn one() -> u32 {
    1
}

async fn oauth_deny(State(state): State<SandboxState>, body: Bytes) -> Response {
    let request: DenyRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    state.deny_next_authorizations(request.provider, request.count);
    oauth_settings(State(state)).await
}

/// Body naming a provider and, for some routes, a user.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProviderUserRequest {
    provider: OAuthProvider,
    #[serde(default)]
    email: Option<String>,
}

async fn oauth_revoke_user(State(state): State<SandboxState>, body: Bytes) -> Response {
    let request: ProviderUserRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    let Some(email) = request.email else {
        return bad_request("invalid_body", "email is required");
    };
    let revoked = state.revoke_grants_for_user(request.provider, &email);
    wire::json(StatusCode::OK, json!({ "revoked": revoked }))
}

async fn oauth_expire_access_tokens(State(state): State<SandboxState>, body: Bytes) -> Response {
    let request: ProviderUserRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    state.expire_access_tokens(request.provider);
    wire::json(StatusCode::OK, json!({"status": "expired"}))
}

/// Body of `POST /_sandbox/oauth/grants`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedRequest {
    provider: OAuthProvider,
    client_id: String,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    scopes: Vec<String>,
}

async fn seed_grant(State(state): State<SandboxState>, body: Bytes) -> Response {
    let request: SeedRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    let scopes: Vec<&str> = request.scopes.iter().map(String::as_str).collect();
    match state.seed_grant(
        request.provider,
        &request.client_id,
        request.email.as_deref(),
        &scopes,
    ) {
        Ok(seeded) => wire::json(StatusCode::CREATED, json!(seeded)),
        Err(error) => bad_request("invalid_grant", &error.to_string()),
    }
}

/// `GET /_sandbox/oauth/grants?provider=…&email=…`.
async fn oauth_grants(State(state): State<SandboxState>, RawQuery(query): RawQuery) -> Response {
    let provider = wire::query_param(query.as_deref(), "provider");
    let email = wire::query_param(query.as_deref(), "email");
    let (Some(provider), Some(email)) = (provider, email) else {
        return bad_request("invalid_query", "give provider and email");
    };
    let provider: OAuthProvider = match serde_json::from_value(json!(provider)) {
        Ok(provider) => provider,
        Err(error) => return bad_request("invalid_query", &error.to_string()),
    };
    wire::json(
        StatusCode::OK,
        json!({"grants": state.oauth_grants_for_user(provider, &email)}),
    )
}

/// Body of `POST /_sandbox/oauth/grants/lookup`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LookupRequest {
    token: String,
}

async fn oauth_grant_lookup(State(state): State<SandboxState>, body: Bytes) -> Response {
    let request: LookupRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    wire::json(
        StatusCode::OK,
        json!({"grant": state.oauth_grant(&request.token)}),
    )
}

/// Body of `POST /_sandbox/oauth/client_scopes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientScopesRequest {
    provider: OAuthProvider,
    client_id: String,
    /// `null` allows every scope the provider knows.
    scopes: Option<Vec<String>>,
}

async fn oauth_client_scopes(State(state): State<SandboxState>, body: Bytes) -> Response {
    let request: ClientScopesRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    match state.set_oauth_client_scopes(
        request.provider,
        &request.client_id,
        request.scopes.clone(),
    ) {
        Ok(()) => wire::json(
            StatusCode::OK,
            json!({"provider": request.provider, "client_id": request.client_id, "scopes": request.scopes}),
        ),
        Err(error) => bad_request("invalid_scopes", &error.to_string()),
    }
}

/// Body of `POST /_sandbox/oauth/withhold_scopes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WithholdRequest {
    provider: OAuthProvider,
    scopes: Vec<String>,
}

async fn oauth_withhold_scopes(State(state): State<SandboxState>, body: Bytes) -> Response {
    let request: WithholdRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    state.withhold_scopes(request.provider, request.scopes);
    oauth_settings(State(state)).await
}

/// Body of `POST /_sandbox/oauth/narrow`: which grants (one of `token`, `grant_id`,
/// `email` with an optional `client_id`) and how.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NarrowRequest {
    provider: OAuthProvider,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    grant_id: Option<u64>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    keep: Option<Vec<String>>,
    #[serde(default)]
    remove: Vec<String>,
}

async fn oauth_narrow(State(state): State<SandboxState>, body: Bytes) -> Response {
    let request: NarrowRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    if request.keep.is_none() && request.remove.is_empty() {
        return bad_request("invalid_body", "give keep and/or remove");
    }
    let selector = match (
        request.token,
        request.grant_id,
        request.email,
        request.client_id,
    ) {
        (Some(token), None, None, None) => GrantSelector::Token(token),
        (None, Some(id), None, None) => GrantSelector::GrantId(id),
        (None, None, Some(email), client_id) => GrantSelector::User { email, client_id },
        _ => {
            return bad_request(
                "invalid_body",
                "name the grants by exactly one of token, grant_id, or email (with an optional client_id)",
            );
        }
    };
    let grants = state.narrow_grants(
        request.provider,
        &selector,
        request.keep.as_deref(),
        &request.remove,
    );
    if grants.is_empty() {
        return wire::json(
            StatusCode::NOT_FOUND,
            json!({"error": {"code": "unknown_grant", "message": "no grant of that provider matches"}}),
        );
    }
    wire::json(StatusCode::OK, json!({ "grants": grants }))
}

/// Body of `POST /_sandbox/hubspot/private_app_scopes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrivateAppScopesRequest {
    #[serde(default = "default_portal")]
    portal: u64,
    scopes: Vec<String>,
}

async fn hubspot_private_app_scopes(State(state): State<SandboxState>, body: Bytes) -> Response {
    let request: PrivateAppScopesRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    match state.set_hubspot_private_app_scopes(request.portal, &request.scopes) {
        Ok(0) => wire::json(
            StatusCode::NOT_FOUND,
            json!({"error": {"code": "unknown_portal", "message": format!("no HubSpot private app for portal {}", request.portal)}}),
        ),
        Ok(changed) => wire::json(
            StatusCode::OK,
            json!({"portal": request.portal, "changed": changed, "scopes": request.scopes}),
        ),
        Err(error) => bad_request("invalid_scopes", &error.to_string()),
    }
}

/// Parses a JSON body, or answers 400 saying what is wrong (to the caller; nothing is logged).
#[allow(clippy::result_large_err)] // The error is the finished response.
pub(crate) fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|error| bad_request("invalid_body", &error.to_string()))
}

pub(crate) fn bad_request(code: &str, message: &str) -> Response {
    wire::json(
        StatusCode::BAD_REQUEST,
        json!({"error": {"code": code, "message": message}}),
    )
}

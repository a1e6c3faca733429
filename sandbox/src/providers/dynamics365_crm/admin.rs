//! `/_sandbox/dynamics365/…` control routes: the contact/account knobs of [`SandboxState`]
//! as JSON over HTTP. `org` defaults to `acme` (`acme.crm.dynamics.com`, the sandbox's
//! default environment); `table` is `contact` or `account`.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{DynCrmLimits, DynLimit, DynTable};
use crate::admin::{bad_request, parse};
use crate::state::SandboxState;
use crate::wire;

/// The control routes, to be merged into the sandbox's `/_sandbox` router.
pub(crate) fn routes() -> Router<SandboxState> {
    Router::new()
        .route("/_sandbox/dynamics365/seed", post(seed))
        .route("/_sandbox/dynamics365/records", get(records))
        .route("/_sandbox/dynamics365/create", post(create))
        .route("/_sandbox/dynamics365/update", post(update))
        .route("/_sandbox/dynamics365/delete", post(delete))
        .route("/_sandbox/dynamics365/attributes", get(attributes))
        .route(
            "/_sandbox/dynamics365/change_tracking",
            post(change_tracking),
        )
        .route("/_sandbox/dynamics365/expire_delta_tokens", post(expire))
        .route("/_sandbox/dynamics365/limits", post(limits))
        .route("/_sandbox/dynamics365/throttle", post(throttle))
        .route("/_sandbox/dynamics365/serve_contacts", post(serve_contacts))
        .route("/_sandbox/dynamics365/clock", post(clock))
        .route("/_sandbox/dynamics365/malformed", post(malformed))
}

fn default_org() -> String {
    "acme".to_owned()
}

/// Body of `POST /_sandbox/dynamics365/seed`: `{"table": "contact", "count": 100}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SeedRequest {
    #[serde(default = "default_org")]
    org: String,
    table: DynTable,
    count: usize,
    #[serde(default)]
    seed: u64,
}

async fn seed(State(state): State<SandboxState>, body: Bytes) -> Response {
    let request: SeedRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    let ids = state.seed_dynamics_crm(&request.org, request.table, request.count, request.seed);
    wire::json(StatusCode::CREATED, json!({ "ids": ids }))
}

fn table_of(query: Option<&str>) -> Result<(String, DynTable), Response> {
    let table = match wire::query_param(query, "table").as_deref() {
        Some("contact") => DynTable::Contact,
        Some("account") => DynTable::Account,
        Some("opportunity") => DynTable::Opportunity,
        _ => {
            return Err(bad_request(
                "invalid_query",
                "give table=contact, table=account or table=opportunity",
            ));
        }
    };
    Ok((
        wire::query_param(query, "org").unwrap_or_else(default_org),
        table,
    ))
}

/// `GET /_sandbox/dynamics365/records?table=contact[&org=…][&id=…]`.
async fn records(State(state): State<SandboxState>, RawQuery(query): RawQuery) -> Response {
    let (org, table) = match table_of(query.as_deref()) {
        Ok(found) => found,
        Err(response) => return response,
    };
    if let Some(id) = wire::query_param(query.as_deref(), "id") {
        return match state.dyn_crm_record(&org, table, &id) {
            Some(record) => wire::json(StatusCode::OK, json!({ "record": record })),
            None => wire::json(
                StatusCode::NOT_FOUND,
                json!({"error": {"code": "not_found", "message": "no such record"}}),
            ),
        };
    }
    wire::json(
        StatusCode::OK,
        json!({ "results": state.dyn_crm_records(&org, table) }),
    )
}

/// `GET /_sandbox/dynamics365/attributes?table=contact[&org=…]`.
async fn attributes(State(state): State<SandboxState>, RawQuery(query): RawQuery) -> Response {
    match table_of(query.as_deref()) {
        Ok((org, table)) => wire::json(
            StatusCode::OK,
            json!({ "results": state.dyn_crm_attributes(&org, table) }),
        ),
        Err(response) => response,
    }
}

/// Body of `/create`: `{"table": "contact", "values": {"lastname": "X"}}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    #[serde(default = "default_org")]
    org: String,
    table: DynTable,
    #[serde(default)]
    values: Map<String, Value>,
}

async fn create(State(state): State<SandboxState>, body: Bytes) -> Response {
    let request: CreateRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    let record = state.dyn_crm_create(&request.org, request.table, request.values);
    wire::json(StatusCode::CREATED, json!({ "record": record }))
}

/// Body of `/update` and `/delete`: `{"table", "id", "changes"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordRequest {
    #[serde(default = "default_org")]
    org: String,
    table: DynTable,
    id: String,
    #[serde(default)]
    changes: Map<String, Value>,
}

fn not_found() -> Response {
    wire::json(
        StatusCode::NOT_FOUND,
        json!({"error": {"code": "not_found", "message": "no such record"}}),
    )
}

async fn update(State(state): State<SandboxState>, body: Bytes) -> Response {
    let request: RecordRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    match state.dyn_crm_update(&request.org, request.table, &request.id, request.changes) {
        Some(record) => wire::json(StatusCode::OK, json!({ "record": record })),
        None => not_found(),
    }
}

async fn delete(State(state): State<SandboxState>, body: Bytes) -> Response {
    let request: RecordRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    if state.dyn_crm_delete(&request.org, request.table, &request.id) {
        wire::json(StatusCode::OK, json!({ "deleted": true }))
    } else {
        not_found()
    }
}

/// Body of `/change_tracking`: `{"table", "enabled"}`; of `/expire_delta_tokens`:
/// `{"table"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TableRequest {
    #[serde(default = "default_org")]
    org: String,
    table: DynTable,
    #[serde(default)]
    enabled: bool,
}

async fn change_tracking(State(state): State<SandboxState>, body: Bytes) -> Response {
    let request: TableRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    state.dyn_crm_set_change_tracking(&request.org, request.table, request.enabled);
    wire::json(StatusCode::OK, json!({ "enabled": request.enabled }))
}

async fn expire(State(state): State<SandboxState>, body: Bytes) -> Response {
    let request: TableRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    state.dyn_crm_expire_delta_tokens(&request.org, request.table);
    wire::json(StatusCode::OK, json!({ "expired": true }))
}

/// Body of `/limits`: `{"requests_per_window", "execution_ms_per_window",
/// "ms_per_operation"}` (each optional).
#[derive(Debug, Deserialize)]
struct LimitsRequest {
    #[serde(default = "default_org")]
    org: String,
    #[serde(flatten)]
    limits: DynCrmLimits,
}

async fn limits(State(state): State<SandboxState>, body: Bytes) -> Response {
    let request: LimitsRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    state.dyn_crm_set_limits(&request.org, request.limits);
    wire::json(StatusCode::OK, json!({ "limits": request.limits }))
}

/// Body of `/throttle`: `{"limit": "requests"|"execution_time"|"concurrency", "count",
/// "retry_after_secs"}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ThrottleRequest {
    #[serde(default = "default_org")]
    org: String,
    limit: DynLimit,
    count: u32,
    #[serde(default)]
    retry_after_secs: u64,
}

async fn throttle(State(state): State<SandboxState>, body: Bytes) -> Response {
    let request: ThrottleRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    state.dyn_crm_throttle_next(
        &request.org,
        request.limit,
        request.count,
        request.retry_after_secs,
    );
    wire::json(StatusCode::OK, json!({ "count": request.count }))
}

/// Body of `/serve_contacts`: `{"on": true}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServeRequest {
    #[serde(default = "default_org")]
    org: String,
    on: bool,
}

async fn serve_contacts(State(state): State<SandboxState>, body: Bytes) -> Response {
    let request: ServeRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    state.dyn_crm_serve_contacts(&request.org, request.on);
    wire::json(StatusCode::OK, json!({ "on": request.on }))
}

/// Body of `/clock`: `{"advance_secs": 3600}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockRequest {
    #[serde(default = "default_org")]
    org: String,
    advance_secs: i64,
}

async fn clock(State(state): State<SandboxState>, body: Bytes) -> Response {
    let request: ClockRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    state.dyn_crm_advance_clock(&request.org, request.advance_secs);
    wire::json(
        StatusCode::OK,
        json!({ "now": state.dyn_crm_now(&request.org) }),
    )
}

/// Body of `/malformed`: `{"route": "dynamics365.crm_list", "count": 1}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MalformedRequest {
    route: String,
    count: u32,
}

async fn malformed(State(state): State<SandboxState>, body: Bytes) -> Response {
    let request: MalformedRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    state.malform_dynamics_responses(&request.route, request.count);
    wire::json(StatusCode::OK, json!({ "count": request.count }))
}

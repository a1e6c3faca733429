//! The `/_sandbox/…` control routes: the same knobs as [`SandboxState`], as JSON over HTTP,
//! so a developer can drive a running sandbox with curl. Errors use the project's shape
//! `{"error":{"code","message"}}`.

use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

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

/// Parses a JSON body, or answers 400 saying what is wrong (to the caller; nothing is logged).
#[allow(clippy::result_large_err)] // The error is the finished response.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|error| bad_request("invalid_body", &error.to_string()))
}

fn bad_request(code: &str, message: &str) -> Response {
    wire::json(
        StatusCode::BAD_REQUEST,
        json!({"error": {"code": code, "message": message}}),
    )
}

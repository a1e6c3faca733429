//! Control routes of the dispatch-action stand-ins and the webhook receivers:
//!
//! - `GET /_sandbox/dispatch/requests[?provider=…]`, `GET /_sandbox/dispatch/{provider}/requests`
//!   → `{"requests":[Received…]}` in arrival order.
//! - `GET /_sandbox/dispatch/records[?provider=…&collection=…]`,
//!   `GET /_sandbox/dispatch/{provider}/records[?collection=…]` → `{"records":[StoredRecord…]}`.
//! - `GET|POST /_sandbox/dispatch/faults` (an [`ActionFault`]), `DELETE
//!   /_sandbox/dispatch/faults[?provider=…]`.
//! - `POST /_sandbox/dispatch/limits` `{"provider","requests","window_seconds"}` (both
//!   `null`: the catalogue's limit again).
//! - `POST /_sandbox/dispatch/index_delay` `{"provider","ms"}`: the provider's search lag.
//! - `POST /_sandbox/dispatch/csrf/expire`: every SAP CSRF session ends.
//! - `GET|POST /_sandbox/webhooks` `{"secrets":["whsec_…"],"tolerance_secs"?}` → 201 a
//!   [`ReceiverView`] with its `url`; `GET /_sandbox/webhooks/{id}`;
//!   `POST /_sandbox/webhooks/{id}/secrets` `{"secrets":[…]}` (rotation);
//!   `POST /_sandbox/webhooks/{id}/faults` (a [`FaultKnob`]).

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::json;

use super::{ActionFault, FaultKnob};
use crate::admin::{bad_request, parse};
use crate::state::{Provider, SandboxState};
use crate::wire;

/// The routes, merged into the control router.
pub(crate) fn routes() -> Router<SandboxState> {
    Router::new()
        .route("/_sandbox/dispatch/requests", get(requests))
        .route("/_sandbox/dispatch/records", get(records))
        .route(
            "/_sandbox/dispatch/{provider}/requests",
            get(provider_requests),
        )
        .route(
            "/_sandbox/dispatch/{provider}/records",
            get(provider_records),
        )
        .route(
            "/_sandbox/dispatch/faults",
            get(faults).post(add_fault).delete(clear_faults),
        )
        .route("/_sandbox/dispatch/limits", post(set_limit))
        .route("/_sandbox/dispatch/index_delay", post(set_index_delay))
        .route("/_sandbox/dispatch/csrf/expire", post(expire_csrf))
        .route("/_sandbox/webhooks", get(receivers).post(add_receiver))
        .route("/_sandbox/webhooks/{id}", get(receiver))
        .route("/_sandbox/webhooks/{id}/secrets", post(rotate))
        .route("/_sandbox/webhooks/{id}/faults", post(receiver_fault))
}

fn provider_named(name: &str) -> Result<Provider, Response> {
    serde_json::from_value(json!(name))
        .map_err(|_| bad_request("unknown_provider", &format!("no provider {name:?}")))
}

fn provider_param(query: Option<&str>) -> Result<Option<Provider>, Response> {
    wire::query_param(query, "provider")
        .map(|name| provider_named(&name))
        .transpose()
}

async fn requests(State(state): State<SandboxState>, RawQuery(query): RawQuery) -> Response {
    match provider_param(query.as_deref()) {
        Ok(provider) => wire::json(
            StatusCode::OK,
            json!({"requests": state.dispatch_requests(provider)}),
        ),
        Err(response) => response,
    }
}

async fn records(State(state): State<SandboxState>, RawQuery(query): RawQuery) -> Response {
    let collection = wire::query_param(query.as_deref(), "collection");
    match provider_param(query.as_deref()) {
        Ok(provider) => wire::json(
            StatusCode::OK,
            json!({"records": state.dispatch_records(provider, collection.as_deref())}),
        ),
        Err(response) => response,
    }
}

async fn provider_requests(
    State(state): State<SandboxState>,
    Path(provider): Path<String>,
) -> Response {
    match provider_named(&provider) {
        Ok(provider) => wire::json(
            StatusCode::OK,
            json!({"requests": state.dispatch_requests(Some(provider))}),
        ),
        Err(response) => response,
    }
}

async fn provider_records(
    State(state): State<SandboxState>,
    Path(provider): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let collection = wire::query_param(query.as_deref(), "collection");
    match provider_named(&provider) {
        Ok(provider) => wire::json(
            StatusCode::OK,
            json!({"records": state.dispatch_records(Some(provider), collection.as_deref())}),
        ),
        Err(response) => response,
    }
}

async fn faults(State(state): State<SandboxState>) -> Response {
    wire::json(StatusCode::OK, json!({"pending": state.action_faults()}))
}

async fn add_fault(State(state): State<SandboxState>, body: Bytes) -> Response {
    let fault: ActionFault = match parse(&body) {
        Ok(fault) => fault,
        Err(response) => return response,
    };
    match state.add_action_fault(fault) {
        Ok(()) => wire::json(StatusCode::OK, json!({"pending": state.action_faults()})),
        Err(message) => bad_request("invalid_fault", &message),
    }
}

async fn clear_faults(State(state): State<SandboxState>, RawQuery(query): RawQuery) -> Response {
    match provider_param(query.as_deref()) {
        Ok(provider) => {
            state.clear_action_faults(provider);
            wire::json(StatusCode::OK, json!({"pending": state.action_faults()}))
        }
        Err(response) => response,
    }
}

/// Body of `POST /_sandbox/dispatch/limits`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitRequest {
    provider: Provider,
    requests: Option<u64>,
    window_seconds: Option<u64>,
}

async fn set_limit(State(state): State<SandboxState>, body: Bytes) -> Response {
    let request: LimitRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    let limit = match (request.requests, request.window_seconds) {
        (Some(requests), Some(window)) if requests > 0 && window > 0 => Some((requests, window)),
        (None, None) => None,
        _ => {
            return bad_request(
                "invalid_limit",
                "give requests and window_seconds (both at least 1), or neither",
            );
        }
    };
    state.set_action_limit(request.provider, limit);
    wire::json(
        StatusCode::OK,
        json!({"provider": request.provider, "limit": limit.map(|(r, w)| json!({"requests": r, "window_seconds": w}))}),
    )
}

/// Body of `POST /_sandbox/dispatch/index_delay`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IndexDelayRequest {
    provider: Provider,
    ms: u64,
}

async fn set_index_delay(State(state): State<SandboxState>, body: Bytes) -> Response {
    let request: IndexDelayRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    state.set_index_delay(
        request.provider,
        std::time::Duration::from_millis(request.ms),
    );
    wire::json(
        StatusCode::OK,
        json!({"provider": request.provider, "ms": request.ms}),
    )
}

async fn expire_csrf(State(state): State<SandboxState>) -> Response {
    let ended = state.expire_csrf_tokens();
    wire::json(StatusCode::OK, json!({"ended": ended}))
}

/// Body of `POST /_sandbox/webhooks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiverRequest {
    secrets: Vec<String>,
    #[serde(default)]
    tolerance_secs: Option<u64>,
}

async fn add_receiver(State(state): State<SandboxState>, body: Bytes) -> Response {
    let request: ReceiverRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    match state.add_webhook_receiver(&request.secrets, request.tolerance_secs) {
        Ok(view) => wire::json(StatusCode::CREATED, json!(view)),
        Err(message) => bad_request("invalid_secret", &message),
    }
}

async fn receivers(State(state): State<SandboxState>) -> Response {
    wire::json(
        StatusCode::OK,
        json!({"receivers": state.webhook_receivers()}),
    )
}

fn no_receiver() -> Response {
    wire::json(
        StatusCode::NOT_FOUND,
        json!({"error": {"code": "not_found", "message": "no such receiver"}}),
    )
}

async fn receiver(State(state): State<SandboxState>, Path(id): Path<String>) -> Response {
    match state.webhook_receiver(&id) {
        Some(view) => wire::json(StatusCode::OK, json!(view)),
        None => no_receiver(),
    }
}

/// Body of `POST /_sandbox/webhooks/{id}/secrets`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretsRequest {
    secrets: Vec<String>,
}

async fn rotate(
    State(state): State<SandboxState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let request: SecretsRequest = match parse(&body) {
        Ok(request) => request,
        Err(response) => return response,
    };
    match state.set_webhook_secrets(&id, &request.secrets) {
        Some(Ok(())) => receiver(State(state), Path(id)).await,
        Some(Err(message)) => bad_request("invalid_secret", &message),
        None => no_receiver(),
    }
}

async fn receiver_fault(
    State(state): State<SandboxState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    let knob: FaultKnob = match parse(&body) {
        Ok(knob) => knob,
        Err(response) => return response,
    };
    match state.add_webhook_fault(&id, knob) {
        Some(Ok(())) => wire::json(StatusCode::OK, json!({"status": "queued"})),
        Some(Err(message)) => bad_request("invalid_fault", &message),
        None => no_receiver(),
    }
}

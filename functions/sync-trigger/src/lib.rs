//! The sync trigger: starts a run of a sync config — on demand (`POST
//! /v1/sync/trigger`) or from the config's EventBridge Scheduler schedule. It only
//! plans: one log per entity and the first chunk of each on the sync queue; the
//! workers do the rest.

use std::convert::Infallible;

use conduit::app::App;
use conduit::audit::AuditEntry;
use conduit::domain::{SyncConfigId, TenantId};
use conduit::http::{self, ApiError, RequestMeta};
use conduit::queue::Publisher;
use conduit::sync::config::{Configs, SyncDirection};
use conduit::sync::engine::{self, RunRequest, StartError};
use conduit::sync::schema::Entity;
use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::{Value, json};

/// The queue of sync work (`CONDUIT_SYNC_QUEUE_URL`).
pub fn queue(app: &App) -> Result<Publisher, String> {
    conduit::queue::sync_queue(app).map_err(|e| e.to_string())
}

/// Handles `POST /v1/sync/trigger`.
pub async fn handle(app: &App, req: Request) -> Result<Response<Body>, Infallible> {
    http::serve(req, |req, meta| trigger(app, req, meta)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerBody {
    config_id: String,
    #[serde(default)]
    direction: Option<SyncDirection>,
    #[serde(default)]
    entities: Option<Vec<Entity>>,
}

async fn trigger(app: &App, req: Request, meta: RequestMeta) -> Result<Response<Body>, ApiError> {
    let who = http::principal(&req)?;
    tracing::Span::current().record("tenant", who.tenant.as_str());
    http::require_admin(&who)?;
    let body: TriggerBody = http::json_body(&req)?;
    let id = SyncConfigId::parse(&body.config_id)
        .map_err(|_| ApiError::NotFound("no such sync config".into()))?;
    let config = Configs::new(app.table.clone())
        .get(&who.tenant, &id)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::NotFound("no such sync config".into()))?;
    let publisher = queue(app).map_err(ApiError::internal)?;
    let started = engine::start(
        app,
        &publisher,
        &config,
        RunRequest {
            direction: body.direction,
            entities: body.entities,
            trigger: "manual".into(),
            only: Vec::new(),
        },
    )
    .await
    .map_err(|e| match e {
        StartError::Busy(job) => ApiError::Conflict {
            code: "sync_running",
            message: format!("a run of this config is in progress ({job})"),
        },
        StartError::Paused => ApiError::Conflict {
            code: "sync_paused",
            message: "the config is paused; resume it first".into(),
        },
        StartError::Invalid(m) => ApiError::bad_request("invalid_trigger", m),
        StartError::Internal(m) => ApiError::internal(m),
    })?;
    let entry = AuditEntry::by(
        &who,
        &meta.request_id,
        "sync.trigger",
        config.id.to_string(),
    );
    if let Err(e) = app.audit.record(&entry).await {
        tracing::error!(error = %e, "audit write failed");
    }
    http::json(
        lambda_http::http::StatusCode::ACCEPTED,
        &json!({
            "job_id": started.job_id,
            "logs": started.logs.iter().map(|l| json!({
                "id": l.id, "entity": l.entity, "direction": l.direction, "status": l.status,
            })).collect::<Vec<_>>(),
        }),
    )
}

#[derive(Deserialize)]
struct Scheduled {
    source: String,
    tenant: String,
    config_id: String,
}

/// Runs a config from its schedule (input `{"source":"conduit.schedule","tenant",
/// "config_id"}`). A run still in progress, a paused or deleted config: nothing to do.
pub async fn handle_event(app: &App, event: Value) -> Result<Value, lambda_runtime::Error> {
    let Ok(s) = serde_json::from_value::<Scheduled>(event) else {
        tracing::warn!("scheduled event without tenant and config_id; ignored");
        return Ok(json!({"started": false, "reason": "malformed event"}));
    };
    let (Ok(tenant), Ok(id)) = (
        TenantId::parse(&s.tenant),
        SyncConfigId::parse(&s.config_id),
    ) else {
        tracing::warn!("scheduled event with a malformed tenant or config id; ignored");
        return Ok(json!({"started": false, "reason": "malformed event"}));
    };
    if s.source != "conduit.schedule" {
        return Ok(json!({"started": false, "reason": "unknown source"}));
    }
    let Some(config) = Configs::new(app.table.clone())
        .get(&tenant, &id)
        .await
        .map_err(|e| lambda_runtime::Error::from(e.to_string()))?
    else {
        return Ok(json!({"started": false, "reason": "config deleted"}));
    };
    let publisher = queue(app).map_err(lambda_runtime::Error::from)?;
    let request = RunRequest {
        trigger: "schedule".into(),
        ..RunRequest::default()
    };
    match engine::start(app, &publisher, &config, request).await {
        Ok(started) => Ok(json!({"started": true, "job_id": started.job_id})),
        Err(StartError::Busy(job)) => {
            Ok(json!({"started": false, "reason": "running", "job_id": job}))
        }
        Err(StartError::Paused) => Ok(json!({"started": false, "reason": "paused"})),
        Err(StartError::Invalid(m)) => Ok(json!({"started": false, "reason": m})),
        Err(StartError::Internal(m)) => Err(lambda_runtime::Error::from(m)),
    }
}

/// The Lambda entry: an API Gateway HTTP request or a scheduled event.
pub async fn dispatch(
    app: &App,
    payload: Value,
    _request_id: &str,
) -> Result<Value, lambda_runtime::Error> {
    if payload.get("requestContext").is_none() {
        return handle_event(app, payload).await;
    }
    let lambda_req: lambda_http::request::LambdaRequest = serde_json::from_value(payload)?;
    let req: Request = lambda_req.into();
    let Ok(resp) = handle(app, req).await;
    let (parts, body) = resp.into_parts();
    let headers: serde_json::Map<String, Value> = parts
        .headers
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_owned(), json!(v))))
        .collect();
    let body = match body {
        Body::Text(t) => t,
        Body::Binary(b) => String::from_utf8_lossy(&b).into_owned(),
        Body::Empty => String::new(),
        _ => String::new(),
    };
    Ok(json!({
        "statusCode": parts.status.as_u16(),
        "headers": headers,
        "body": body,
        "isBase64Encoded": false,
    }))
}

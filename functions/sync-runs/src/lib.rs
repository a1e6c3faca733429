//! Sync runs: starts a run of a sync config — on demand (`POST
//! /v1/sync/trigger`, one config or `{"all": true}`: every active config of the
//! tenant) or from the config's EventBridge Scheduler schedule. It only
//! plans: one log per entity and the first chunk of each on the sync queue; the
//! workers do the rest.
//!
//! It also answers for the runs it starts: their logs (and the retry of a log's failed
//! records), a config's live status, and the conflicts runs store for review (resolve,
//! ignore). Routing follows the HTTP API's route key, so template.yaml is the one
//! routing table. Members read; admins trigger, retry and settle.

mod conflicts;
mod logs;
mod status;

use std::convert::Infallible;

use conduit::app::App;
use conduit::domain::{SyncConfigId, TenantId};
use conduit::http::{self, Access, ApiError, Route};
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

/// Handles one HTTP API request routed to this function.
pub async fn handle(app: &App, req: Request) -> Result<Response<Body>, Infallible> {
    http::serve_routes(app, &(), ROUTES, req).await
}

/// Everything a route needs about the call.
pub(crate) type Call<'a> = http::Call<'a>;

/// The function's routes: members read; admins trigger, retry and settle, and a
/// member's attempt is refused and audited as the action named.
const ROUTES: &[Route] = &[
    Route {
        key: "POST /v1/sync/trigger",
        access: Access::Admin("sync.trigger"),
        handler: |c| Box::pin(trigger(c)),
    },
    Route {
        key: "GET /v1/sync/logs",
        access: Access::Member,
        handler: |c| Box::pin(logs::list(c)),
    },
    Route {
        key: "GET /v1/sync/logs/{id}",
        access: Access::Member,
        handler: |c| Box::pin(logs::get(c)),
    },
    Route {
        key: "POST /v1/sync/logs/{id}/retry",
        access: Access::Admin("sync.retry"),
        handler: |c| Box::pin(logs::retry(c)),
    },
    Route {
        key: "GET /v1/sync/configs/{id}/status",
        access: Access::Member,
        handler: |c| Box::pin(status::get(c)),
    },
    Route {
        key: "GET /v1/sync/conflicts",
        access: Access::Member,
        handler: |c| Box::pin(conflicts::list(c)),
    },
    Route {
        key: "GET /v1/sync/conflicts/{id}",
        access: Access::Member,
        handler: |c| Box::pin(conflicts::get(c)),
    },
    Route {
        key: "POST /v1/sync/conflicts/{id}/resolve",
        access: Access::Admin("sync.conflict.resolve"),
        handler: |c| Box::pin(conflicts::resolve(c)),
    },
    Route {
        key: "POST /v1/sync/conflicts/{id}/ignore",
        access: Access::Admin("sync.conflict.ignore"),
        handler: |c| Box::pin(conflicts::ignore(c)),
    },
];

/// A config of the caller's tenant, by the id in the path or body.
async fn load_config(
    app: &App,
    tenant: &TenantId,
    raw: &str,
) -> Result<conduit::sync::config::SyncConfig, ApiError> {
    let id =
        SyncConfigId::parse(raw).map_err(|_| ApiError::NotFound("no such sync config".into()))?;
    Configs::new(app.table.clone())
        .get(tenant, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such sync config".into()))
}

/// A start refusal as the API's answer.
fn start_error(e: StartError) -> ApiError {
    match e {
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
        StartError::Store(e) => e.into(),
    }
}

/// A started run's logs, as answered.
fn logs_of(s: &engine::Started) -> Vec<Value> {
    s.logs
        .iter()
        .map(|l| json!({"id": l.id, "entity": l.entity, "direction": l.direction, "status": l.status}))
        .collect()
}

/// What a started run answers (202).
fn started(s: &engine::Started) -> Result<Response<Body>, ApiError> {
    http::json(
        lambda_http::http::StatusCode::ACCEPTED,
        &json!({ "job_id": s.job_id, "logs": logs_of(s) }),
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerBody {
    #[serde(default)]
    config_id: Option<String>,
    /// Every active config of the tenant (the dashboard's "sync all").
    #[serde(default)]
    all: Option<bool>,
    #[serde(default)]
    direction: Option<SyncDirection>,
    #[serde(default)]
    entities: Option<Vec<Entity>>,
}

async fn trigger(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let body: TriggerBody = http::json_body(&call.req)?;
    match (body.config_id, body.all) {
        (Some(id), None) => trigger_one(call, &id, body.direction, body.entities).await,
        (None, Some(true)) if body.direction.is_none() && body.entities.is_none() => {
            trigger_all(call).await
        }
        (None, Some(true)) => Err(ApiError::bad_request(
            "invalid_trigger",
            "\"all\" runs each config as it is configured; direction and entities go with \"config_id\"",
        )),
        (None, Some(false)) => Err(ApiError::bad_request(
            "invalid_trigger",
            "\"all\" may only be true",
        )),
        (Some(_), Some(_)) => Err(ApiError::bad_request(
            "invalid_trigger",
            "give \"config_id\" or \"all\", not both",
        )),
        (None, None) => Err(ApiError::bad_request(
            "invalid_trigger",
            "give \"config_id\" (one config) or \"all\": true (every active config)",
        )),
    }
}

/// Starts a run of every active config of the caller's tenant, each with its own job
/// and logs; configs already running (or paused meanwhile) are listed as skipped.
async fn trigger_all(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let app = call.app;
    let configs = Configs::new(app.table.clone())
        .list(&call.who.tenant)
        .await?;
    let publisher = queue(app).map_err(ApiError::internal)?;
    let mut runs = Vec::new();
    let mut skipped = Vec::new();
    for config in configs {
        if config.status != conduit::sync::config::ConfigStatus::Active {
            skipped.push(json!({
                "config_id": config.id, "code": "sync_paused", "message": "the config is paused",
            }));
            continue;
        }
        let request = RunRequest {
            trigger: "manual".into(),
            ..RunRequest::default()
        };
        match engine::start(app, &publisher, &config, request).await {
            Ok(run) => {
                call.record(&call.audit("sync.trigger", config.id.to_string()))
                    .await;
                runs.push(json!({
                    "config_id": config.id,
                    "job_id": run.job_id,
                    "logs": logs_of(&run),
                }));
            }
            Err(StartError::Busy(job)) => skipped.push(json!({
                "config_id": config.id,
                "code": "sync_running",
                "message": format!("a run of this config is in progress ({job})"),
            })),
            Err(StartError::Paused) => skipped.push(json!({
                "config_id": config.id, "code": "sync_paused", "message": "the config is paused",
            })),
            Err(StartError::Invalid(m)) => skipped.push(json!({
                "config_id": config.id, "code": "invalid_trigger", "message": m,
            })),
            // Runs started so far stand; the caller retries the rest (a started one is
            // then skipped as running).
            Err(e) => return Err(start_error(e)),
        }
    }
    http::json(
        lambda_http::http::StatusCode::ACCEPTED,
        &json!({ "runs": runs, "skipped": skipped }),
    )
}

async fn trigger_one(
    call: &Call<'_>,
    config_id: &str,
    direction: Option<SyncDirection>,
    entities: Option<Vec<Entity>>,
) -> Result<Response<Body>, ApiError> {
    let app = call.app;
    let config = load_config(app, &call.who.tenant, config_id).await?;
    let publisher = queue(app).map_err(ApiError::internal)?;
    let run = engine::start(
        app,
        &publisher,
        &config,
        RunRequest {
            direction,
            entities,
            trigger: "manual".into(),
            only: Vec::new(),
            gone: Vec::new(),
        },
    )
    .await
    .map_err(start_error)?;
    call.record(&call.audit("sync.trigger", config.id.to_string()))
        .await;
    started(&run)
}

#[derive(Deserialize)]
struct Scheduled {
    source: String,
    tenant: String,
    config_id: String,
}

#[derive(Deserialize)]
struct ScheduledImport {
    source: String,
    tenant: String,
    kb_integration_id: String,
}

/// Starts an integration's knowledge-base import from its schedule (input
/// `{"source":"conduit.schedule","tenant","kb_integration_id"}`): an incremental run
/// (the first one full). A run still in progress, a disabled or deleted integration, or
/// one that no longer imports: nothing to do.
async fn scheduled_import(app: &App, s: ScheduledImport) -> Result<Value, lambda_runtime::Error> {
    use conduit::kb::run::{self, RunError, StartError};
    let (Ok(tenant), Ok(id)) = (
        TenantId::parse(&s.tenant),
        conduit::domain::IntegrationId::parse(&s.kb_integration_id),
    ) else {
        tracing::warn!("scheduled import with a malformed tenant or integration id; ignored");
        return Ok(json!({"started": false, "reason": "malformed event"}));
    };
    if s.source != conduit::schedule::SOURCE {
        return Ok(json!({"started": false, "reason": "unknown source"}));
    }
    let found = conduit::store::integrations::Integrations::new(app.table.clone())
        .get(&tenant, &id)
        .await
        .map_err(|e| lambda_runtime::Error::from(e.to_string()))?;
    let Some(integration) = found else {
        return Ok(json!({"started": false, "reason": "integration deleted"}));
    };
    if !integration.enabled {
        return Ok(json!({"started": false, "reason": "disabled"}));
    }
    let publisher = queue(app).map_err(lambda_runtime::Error::from)?;
    match run::start_integration(app, &publisher, &integration, None).await {
        Ok(status) => Ok(json!({"started": true, "run_id": status.run.map(|r| r.run_id)})),
        Err(StartError::Run(RunError::Busy | RunError::Changed)) => {
            Ok(json!({"started": false, "reason": "running"}))
        }
        Err(StartError::NotASource(m)) => Ok(json!({"started": false, "reason": m})),
        // Failing the invocation lets the scheduler retry it (then its dead letters).
        Err(StartError::Run(RunError::Store(e))) => Err(e.into()),
        Err(StartError::Run(RunError::Queue(e))) => Err(lambda_runtime::Error::from(e.to_string())),
    }
}

/// Runs a config from its schedule (input `{"source":"conduit.schedule","tenant",
/// "config_id"}`), or an integration's knowledge-base import (`"kb_integration_id"`
/// instead). A run still in progress, a paused or deleted config: nothing to do.
pub async fn handle_event(app: &App, event: Value) -> Result<Value, lambda_runtime::Error> {
    if event.get("kb_integration_id").is_some() {
        return match serde_json::from_value::<ScheduledImport>(event) {
            Ok(s) => scheduled_import(app, s).await,
            Err(_) => {
                tracing::warn!("scheduled import without tenant and integration id; ignored");
                Ok(json!({"started": false, "reason": "malformed event"}))
            }
        };
    }
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
    // The config's webhooks: made again where the CRM lost them, renewed a day before
    // they expire (Zoho's channels); a failure is tried again the next minute, and the
    // run starts either way.
    match conduit::sync::subscriptions::maintain(app, &config, "schedule", "schedule").await {
        Ok(done) if done == Default::default() => {}
        Ok(done) => tracing::info!(
            config = %id,
            healed = done.healed,
            renewed = done.renewed,
            "webhook subscriptions kept up"
        ),
        Err(e) => {
            tracing::warn!(config = %id, error = %e, "keeping the config's webhook subscriptions up failed")
        }
    }
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
        // Failing the invocation lets Lambda retry it (and then its failure destination).
        Err(StartError::Store(e)) => Err(e.into()),
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

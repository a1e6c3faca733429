//! `/v1/integration-templates…` and `/v1/integrations…`.

use conduit::dispatch::engine::{Dispatcher, webhook_seal_context};
use conduit::dispatch::event::EventType;
use conduit::dispatch::inbound::DispatchEvent;
use conduit::dispatch::integration::{EndpointSecret, Integration, WEBHOOK, WebhookEndpoint};
use conduit::dispatch::log::Origin;
use conduit::dispatch::render::Renderer;
use conduit::dispatch::template::{self, ContextParts};
use conduit::dispatch::webhook;
use conduit::domain::{IntegrationId, now};
use conduit::http::{self, ApiError};
use conduit::store::StoreError;
use conduit::store::dispatches::Dispatches;
use conduit::store::integrations::Integrations;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Response};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::Call;
use crate::validate::{self, Problems};

/// How long `send` and `test` may run a dispatch before answering (the rest waits
/// for the sweep).
const INLINE: std::time::Duration = std::time::Duration::from_secs(25);
/// A provider call's timeout when a route runs a dispatch inline: short enough that a
/// retry after a 429 or a 5xx still fits within API Gateway's 30 s.
const INLINE_CALL: std::time::Duration = std::time::Duration::from_secs(8);

pub(crate) fn store(call: &Call<'_>) -> Integrations {
    Integrations::new(call.app.table.clone())
}

/// An integration as the API shows it: a webhook's secrets by id and dates only (RFC
/// 3339, as every time of the API).
pub(crate) fn view(i: &Integration) -> Value {
    let mut v = json!(i);
    if let Some(obj) = v.as_object_mut() {
        obj.remove("tenant");
        if let Some(w) = obj.get_mut("webhook").and_then(Value::as_object_mut)
            && let Some(secrets) = w.get_mut("secrets").and_then(Value::as_array_mut)
        {
            for s in secrets.iter_mut().filter_map(Value::as_object_mut) {
                s.remove("sealed");
            }
        }
    }
    v
}

fn respond(status: StatusCode, i: &Integration) -> Result<Response<Body>, ApiError> {
    http::json_versioned(status, &view(i), i.version)
}

fn stale() -> ApiError {
    ApiError::concurrent_update("the integration changed concurrently; read it and retry")
}

fn write_error(e: StoreError) -> ApiError {
    match e {
        StoreError::ConditionFailed => stale(),
        e => e.into(),
    }
}

/// `GET /v1/integration-templates`.
pub async fn templates(_call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let all: Vec<_> = template::catalogue().iter().collect();
    http::json(
        StatusCode::OK,
        &json!({ "templates": all, "next_cursor": null }),
    )
}

/// `GET /v1/integration-templates/{provider}`.
pub async fn template(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let provider = call.path_param("provider")?;
    let t = template::catalogue()
        .get(&provider)
        .ok_or_else(|| ApiError::NotFound("no integration template for this provider".into()))?;
    http::json(StatusCode::OK, t)
}

/// `GET /v1/integrations`.
pub async fn list(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let q = http::query(&call.req, &["limit", "cursor"])?;
    let limit = http::page_limit(&q)?;
    let page = store(call)
        .page(&call.who.tenant, limit, q.get("cursor").map(String::as_str))
        .await?;
    let shown: Vec<Value> = page.items.iter().map(view).collect();
    http::json(
        StatusCode::OK,
        &json!({ "integrations": shown, "next_cursor": page.cursor, "skipped": page.skipped }),
    )
}

pub(crate) async fn load(call: &Call<'_>) -> Result<Integration, ApiError> {
    let raw = call.path_param("id")?;
    let id = IntegrationId::parse(&raw).map_err(|e| ApiError::bad_request("invalid_id", e.0))?;
    store(call)
        .get(&call.who.tenant, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such integration".into()))
}

/// `GET /v1/integrations/{id}`.
pub async fn get(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    respond(StatusCode::OK, &load(call).await?)
}

/// Builds an integration from a body over `base` (its id, creation and version).
async fn from_body(
    call: &Call<'_>,
    body: validate::Body,
    base: Option<&Integration>,
) -> Result<Integration, ApiError> {
    let mut p = Problems::default();
    let connection_id = validate::connection_id(body.connection_id.as_deref(), &mut p);
    p.into_result()?;
    let at = now();
    let webhook = match (&body.webhook, base.and_then(|b| b.webhook.as_ref())) {
        (Some(w), Some(old)) => Some(WebhookEndpoint {
            url: w.url.clone(),
            ..old.clone()
        }),
        (Some(w), None) => Some(WebhookEndpoint {
            url: w.url.clone(),
            secrets: Vec::new(),
            failing_since: None,
            disabled_at: None,
        }),
        (None, _) => None,
    };
    let retry = body.retry.unwrap_or_else(|| {
        if body.provider == WEBHOOK {
            validate::webhook_retry()
        } else {
            Default::default()
        }
    });
    let next = Integration {
        id: base.map_or_else(IntegrationId::generate, |b| b.id.clone()),
        tenant: call.who.tenant.clone(),
        name: body.name.trim().to_owned(),
        provider: body.provider,
        action: body.action,
        connection_id,
        acting_user: body.acting_user,
        triggers: body.triggers,
        priority: body.priority,
        enabled: body.enabled,
        settings: body.settings,
        overrides: body.overrides,
        on_failure: body.on_failure,
        retry,
        request: body.request,
        webhook,
        kb_source: body.kb_source,
        created_at: base.map_or(at, |b| b.created_at),
        created_by: base.map_or_else(|| call.who.user.clone(), |b| b.created_by.clone()),
        updated_at: at,
        version: base.map_or(1, |b| b.version + 1),
    };
    validate::check(call, &next).await?;
    Ok(next)
}

/// A new signing secret for `i`'s endpoint: the shown text and its sealed record.
async fn new_secret(
    call: &Call<'_>,
    i: &Integration,
) -> Result<(String, EndpointSecret), ApiError> {
    let (shown, _) = webhook::new_secret();
    let id = format!("sec_{}", ulid::Ulid::new().to_string().to_lowercase());
    let sealed = call
        .app
        .envelope
        .seal(
            &webhook_seal_context(i, &id),
            shown.expose_secret().as_bytes(),
        )
        .await
        .map_err(ApiError::internal)?;
    Ok((
        shown.expose_secret().to_owned(),
        EndpointSecret {
            id,
            sealed,
            created_at: now(),
            expires_at: None,
        },
    ))
}

/// `POST /v1/integrations`: a webhook integration's answer carries its signing
/// secret, shown this once.
pub async fn create(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let body: validate::Body = http::json_body(&call.req)?;
    let mut next = from_body(call, body, None).await?;
    let (existing, _) = store(call).all(&call.who.tenant).await?;
    if existing.len() >= conduit::dispatch::integration::MAX_INTEGRATIONS {
        return Err(ApiError::Conflict {
            code: "too_many_integrations",
            message: "a workspace has at most 100 integrations; delete one first".into(),
        });
    }
    let mut shown = None;
    if next.provider == WEBHOOK {
        let (text, secret) = new_secret(call, &next).await?;
        if let Some(w) = next.webhook.as_mut() {
            w.secrets = vec![secret];
        }
        shown = Some(text);
    }
    let entry = call.audit("integration.create", next.id.to_string());
    store(call)
        .create(&next, &entry)
        .await
        .map_err(write_error)?;
    if let Err(e) = crate::kb::sync_schedule(call, None, Some(&next)).await {
        // Without its schedule the integration is not made.
        let undo = call.audit("integration.create", next.id.to_string());
        if let Err(undo_error) = store(call).delete(&next, &undo).await {
            tracing::error!(integration = %next.id, error = %undo_error, "could not remove an integration whose schedule failed");
        }
        return Err(e);
    }
    let mut v = view(&next);
    if let Some(text) = shown {
        v["secret"] = json!(text);
    }
    http::json_versioned(StatusCode::CREATED, &v, next.version)
}

/// PUT replaces the whole body; PATCH merges the fields it names into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Replace,
    Merge,
}

/// The body that would recreate `i` (for PATCH to merge into).
fn as_body(i: &Integration) -> Value {
    json!({
        "name": i.name,
        "provider": i.provider,
        "action": i.action,
        "connection_id": i.connection_id,
        "acting_user": i.acting_user,
        "triggers": i.triggers,
        "priority": i.priority,
        "enabled": i.enabled,
        "settings": i.settings,
        "overrides": i.overrides,
        "on_failure": i.on_failure,
        "retry": i.retry,
        "request": i.request,
        "kb_source": i.kb_source,
        "webhook": i.webhook.as_ref().map(|w| json!({"url": w.url})),
    })
}

/// `PUT|PATCH /v1/integrations/{id}`.
pub async fn update(call: &Call<'_>, mode: Mode) -> Result<Response<Body>, ApiError> {
    let prev = load(call).await?;
    if let Some(expected) = http::if_match(&call.req)?
        && expected != prev.version
    {
        return Err(ApiError::PreconditionFailed);
    }
    let body: validate::Body = match mode {
        Mode::Replace => http::json_body(&call.req)?,
        Mode::Merge => {
            let patch = http::body_object(&call.req)?;
            let Some(changes) = patch.as_object().filter(|o| !o.is_empty()) else {
                return Err(http::empty_update());
            };
            let mut merged = as_body(&prev);
            for (k, v) in changes {
                merged[k] = v.clone();
            }
            if let Some(o) = merged.as_object_mut() {
                o.retain(|_, v| !v.is_null());
            }
            http::from_body(&merged)?
        }
    };
    let next = from_body(call, body, Some(&prev)).await?;
    let entry = call.audit("integration.update", next.id.to_string());
    store(call)
        .save(&next, prev.version, &entry)
        .await
        .map_err(write_error)?;
    if let Err(e) = crate::kb::sync_schedule(call, Some(&prev), Some(&next)).await {
        // Back to `prev` as a new version (the store only moves forward).
        let mut back = prev.clone();
        back.version = next.version + 1;
        let undo = call.audit("integration.update", next.id.to_string());
        if let Err(undo_error) = store(call).save(&back, next.version, &undo).await {
            tracing::error!(integration = %next.id, error = %undo_error, "could not roll an integration back after its schedule failed");
        }
        return Err(e);
    }
    respond(StatusCode::OK, &next)
}

/// `DELETE /v1/integrations/{id}`: its past dispatches stay in the log.
pub async fn delete(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let i = load(call).await?;
    if let Some(expected) = http::if_match(&call.req)?
        && expected != i.version
    {
        return Err(ApiError::PreconditionFailed);
    }
    crate::kb::sync_schedule(call, Some(&i), None).await?;
    let entry = call.audit("integration.delete", i.id.to_string());
    if let Err(e) = store(call).delete(&i, &entry).await {
        // It stays (it changed meanwhile): give it its schedule back, as it is now.
        if let Ok(Some(current)) = store(call).get(&i.tenant, &i.id).await
            && let Err(again) = crate::kb::sync_schedule(call, None, Some(&current)).await
        {
            tracing::error!(integration = %i.id, error = %again, "could not restore an integration's schedule");
        }
        return Err(write_error(e));
    }
    http::no_content()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestBody {
    /// The sample event's type (default: the integration's first trigger).
    #[serde(default)]
    event_type: Option<String>,
    /// An event to render instead of the sample (schema version 1).
    #[serde(default)]
    event: Option<Value>,
    /// Send it for real (logged as a dispatch).
    #[serde(default)]
    send: bool,
}

/// The event a test or send renders: the caller's (its tenant must be the caller's),
/// or the sample of `kind`.
fn event_for(call: &Call<'_>, given: Option<Value>, kind: &str) -> Result<DispatchEvent, ApiError> {
    let detail = match given {
        Some(v) => crate::dispatches::own_event(call, v, "event")?,
        None => {
            let kind: EventType = serde_json::from_value(json!(kind)).map_err(|_| {
                ApiError::bad_request(
                    "invalid_event_type",
                    "test with a product event type (conversation_ended, contact_request, escalation, low_score, kb_sync) or give an event",
                )
            })?;
            let mut sample = template::sample_event(kind);
            sample["tenant_id"] = json!(call.who.tenant.as_str());
            sample
        }
    };
    let kind = detail.get("type").cloned().unwrap_or(Value::Null);
    let envelope = json!({
        "id": format!("api-{}", ulid::Ulid::new().to_string().to_lowercase()),
        "source": conduit::dispatch::inbound::PRODUCT_SOURCE,
        "detail-type": kind,
        "time": detail.get("occurred_at").cloned().unwrap_or(Value::Null),
        "detail": detail,
    });
    DispatchEvent::from_envelope(&envelope).map_err(|invalid| {
        ApiError::invalid_fields(
            invalid
                .0
                .into_iter()
                .map(|p| conduit::providers::FieldError {
                    field: format!("event.{}", p.field),
                    message: p.message,
                })
                .collect(),
        )
    })
}

/// `POST /v1/integrations/{id}/test`: renders the integration's requests from a sample
/// event (or the one given) and checks its connection; with `"send": true` sends it
/// for real and answers the dispatch.
pub async fn test(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let i = load(call).await?;
    let body: TestBody = if call.req.body().is_empty() {
        TestBody {
            event_type: None,
            event: None,
            send: false,
        }
    } else {
        http::json_body(&call.req)?
    };
    let kind = body
        .event_type
        .clone()
        .or_else(|| i.triggers.first().map(|t| t.event.as_str().to_owned()))
        .unwrap_or_else(|| "conversation_ended".into());
    let event = event_for(call, body.event, &kind)?;
    if body.send {
        validate::own_use(call, &i, &event, "integration.test").await?;
        return run_one(call, &i, &event, Origin::Test).await;
    }
    let rendered = render_preview(call, &i, &event).await;
    http::json(StatusCode::OK, &rendered)
}

/// The requests the integration would send for `event` (auth never shown), and how its
/// connection is.
async fn render_preview(call: &Call<'_>, i: &Integration, event: &DispatchEvent) -> Value {
    let connection = match &i.connection_id {
        None if i.acting_user.is_some() => validate::acting_preview(call, i, event).await,
        None => json!({"status": "not_applicable"}),
        Some(id) => {
            let tokens = conduit::oauth::lifecycle::Tokens::new(
                call.app,
                "test",
                call.meta.request_id.clone(),
            );
            match tokens.credentials(&i.tenant, id).await {
                Ok(c) => {
                    json!({"status": "ok", "provider": c.connection.provider, "connection_status": c.connection.status})
                }
                Err(e) => json!({"status": "unusable", "reason": e.to_string()}),
            }
        }
    };
    let action = template::catalogue()
        .get(&i.provider)
        .and_then(|t| t.action(&i.action))
        .cloned();
    let Some(action) = action else {
        return json!({"connection": connection, "problems": [{"field": "action", "message": "the template action no longer exists"}]});
    };
    let overrides: Map<String, Value> = i.overrides.clone().into_iter().collect();
    let action = match action.with_overrides(&overrides) {
        Ok(a) => a,
        Err(p) => return json!({"connection": connection, "problems": p}),
    };
    let settings: Map<String, Value> = i.settings.clone().into_iter().collect();
    let ctx_event = event.context();
    let key = format!("{}:{}", event.event_id(), i.id);
    let steps = json!({});
    let conn_ctx =
        json!({"api_base": "", "identity": {}, "account_id": null, "account_name": null});
    let ctx = template::render_context(ContextParts {
        event: &ctx_event,
        action: &action,
        settings: &settings,
        connection: &conn_ctx,
        steps: &steps,
        idempotency_key: &key,
    });
    let missing = template::missing_required(&action, &ctx);
    let renderer = Renderer::new();
    let mut requests = Vec::new();
    let mut problems = Vec::new();
    for (n, req) in action.requests.iter().enumerate() {
        match renderer.render_request(req, &ctx) {
            Ok(r) => requests.push(json!({
                "name": req.name,
                "method": r.method.as_str(),
                "path": r.path,
                "query": r.query,
                "headers": r.headers.iter().filter(|(n, _)| !n.eq_ignore_ascii_case("authorization")).collect::<Vec<_>>(),
                "body": r.body,
                "skip_if": req.skip_if,
                "effect": r.effect,
            })),
            Err(e) => problems.push(json!({"field": format!("requests[{n}].{}", e.field), "message": e.message, "line": e.line})),
        }
    }
    json!({
        "event": ctx_event,
        "connection": connection,
        "missing": missing,
        "requests": requests,
        "problems": problems,
    })
}

/// Runs one integration for `event` now and answers its dispatch.
async fn run_one(
    call: &Call<'_>,
    i: &Integration,
    event: &DispatchEvent,
    origin: Origin,
) -> Result<Response<Body>, ApiError> {
    let deadline = std::time::Instant::now() + INLINE;
    let dispatcher = Dispatcher::new(call.app, format!("api-{}", call.meta.request_id), deadline)
        .with_call_timeout(INLINE_CALL);
    let handled = dispatcher
        .single(i, event, origin)
        .await
        .map_err(|e| match e {
            conduit::dispatch::engine::DispatchError::Store(s) => ApiError::from(s),
            other => ApiError::internal(other),
        })?;
    let id = match handled {
        conduit::dispatch::engine::Handled::Done(id, _)
        | conduit::dispatch::engine::Handled::Waiting(id)
        | conduit::dispatch::engine::Handled::Busy(id) => id,
        conduit::dispatch::engine::Handled::UnknownTenant => {
            return Err(ApiError::internal("a single dispatch has no tenant check"));
        }
    };
    let d = Dispatches::new(call.app.table.clone())
        .get(&call.who.tenant, &id)
        .await?
        .ok_or_else(|| ApiError::internal("the dispatch just made is missing"))?;
    http::json(StatusCode::OK, &crate::dispatches::view(&d))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody {
    /// The event to send (schema version 1; its tenant is the caller's).
    #[serde(default)]
    event: Option<Value>,
    /// The sample event of this type, when no event is given.
    #[serde(default)]
    event_type: Option<String>,
}

/// `POST /v1/integrations/{id}/send`: sends one event through this integration now,
/// logged like a dispatch.
pub async fn send(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let i = load(call).await?;
    let body: SendBody = http::json_body(&call.req)?;
    let kind = body
        .event_type
        .or_else(|| i.triggers.first().map(|t| t.event.as_str().to_owned()))
        .unwrap_or_else(|| "conversation_ended".into());
    let event = event_for(call, body.event, &kind)?;
    validate::own_use(call, &i, &event, "integration.send").await?;
    run_one(call, &i, &event, Origin::Send).await
}

/// `GET /v1/integrations/{id}/logs`: its steps, newest first.
pub async fn logs(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let i = load(call).await?;
    let q = http::query(&call.req, &["limit", "cursor"])?;
    let limit = http::page_limit(&q)?;
    let page = Dispatches::new(call.app.table.clone())
        .integration_log(&i.tenant, &i.id, limit, q.get("cursor").map(String::as_str))
        .await?;
    http::json(
        StatusCode::OK,
        &json!({ "logs": page.items, "next_cursor": page.cursor, "skipped": page.skipped }),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    /// How long the old secret keeps signing beside the new one (hours, 0–168).
    #[serde(default = "default_overlap")]
    overlap_hours: u32,
}

fn default_overlap() -> u32 {
    24
}

/// `POST /v1/integrations/{id}/rotate-secret`: a new signing secret (shown once); the
/// ones in use keep signing for the overlap, so receivers can switch without a gap.
pub async fn rotate_secret(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let prev = load(call).await?;
    let body: RotateBody = if call.req.body().is_empty() {
        RotateBody {
            overlap_hours: default_overlap(),
        }
    } else {
        http::json_body(&call.req)?
    };
    if body.overlap_hours > 168 {
        return Err(ApiError::invalid_fields(vec![
            conduit::providers::FieldError {
                field: "overlap_hours".into(),
                message: "from 0 to 168 hours".into(),
            },
        ]));
    }
    if prev.webhook.is_none() {
        return Err(ApiError::Conflict {
            code: "not_a_webhook",
            message: "only a webhook integration has signing secrets".into(),
        });
    }
    let mut next = prev.clone();
    let (text, secret) = new_secret(call, &next).await?;
    let at = now();
    let until = at + time::Duration::hours(i64::from(body.overlap_hours));
    if let Some(w) = next.webhook.as_mut() {
        w.secrets.retain(|s| s.expires_at.is_none_or(|e| e > at));
        for s in &mut w.secrets {
            s.expires_at = Some(s.expires_at.map_or(until, |e| e.min(until)));
        }
        w.secrets.insert(0, secret);
        w.secrets.truncate(5);
    }
    next.version += 1;
    next.updated_at = at;
    let entry = call.audit("integration.rotate_secret", next.id.to_string());
    store(call)
        .save(&next, prev.version, &entry)
        .await
        .map_err(write_error)?;
    let mut v = view(&next);
    v["secret"] = json!(text);
    http::json_versioned(StatusCode::OK, &v, next.version)
}

//! `POST /v1/events` and `/v1/dispatches…`: a test event through the real path (the
//! bus, its rule, the dispatch queue, the dispatcher), and the dispatch log — each
//! event's chain with every step's request summary (never a secret), status, created
//! record, attempts, duration and error — with retries of failed steps.

use conduit::dispatch::event::ProductEvent;
use conduit::dispatch::inbound::PRODUCT_SOURCE;
use conduit::dispatch::integration::TriggerEvent;
use conduit::dispatch::log::{Dispatch, DispatchStatus};
use conduit::domain::{DispatchId, IntegrationId};
use conduit::http::{self, ApiError};
use conduit::providers::FieldError;
use conduit::store::StoreError;
use conduit::store::dispatches::{DispatchFilter, Dispatches};
use event_dispatch::{Resume, ResumeMessage};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Response};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::Call;

/// A dispatch as the API shows it (the lease is internal).
pub fn view(d: &Dispatch) -> Value {
    let mut v = json!(d);
    if let Some(o) = v.as_object_mut() {
        o.remove("lease");
        o.remove("tenant");
        o.remove("version");
    }
    v
}

fn store(call: &Call<'_>) -> Dispatches {
    Dispatches::new(call.app.table.clone())
}

fn invalid_query(field: &str, message: &str) -> ApiError {
    ApiError::bad_request("invalid_query", format!("{field}: {message}"))
}

fn time_ms(
    q: &std::collections::BTreeMap<String, String>,
    name: &str,
) -> Result<Option<u64>, ApiError> {
    q.get(name)
        .map(|raw| {
            OffsetDateTime::parse(raw, &Rfc3339)
                .ok()
                .and_then(|t| u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok())
                .ok_or_else(|| invalid_query(name, "an RFC 3339 time"))
        })
        .transpose()
}

/// `GET /v1/dispatches?event_type=&status=&integration_id=&assistant_id=&since=&until=&limit=&cursor=`,
/// newest first.
pub async fn list(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let q = http::query(
        &call.req,
        &[
            "event_type",
            "status",
            "integration_id",
            "assistant_id",
            "since",
            "until",
            "limit",
            "cursor",
        ],
    )?;
    let limit = http::page_limit(&q)?;
    let filter = DispatchFilter {
        event_type: q
            .get("event_type")
            .map(|t| {
                TriggerEvent::parse(t)
                    .ok_or_else(|| invalid_query("event_type", "not an event type"))
            })
            .transpose()?,
        status: q
            .get("status")
            .map(|s| {
                serde_json::from_value::<DispatchStatus>(json!(s)).map_err(|_| {
                    invalid_query("status", "running, waiting, succeeded, partial or failed")
                })
            })
            .transpose()?,
        integration: q
            .get("integration_id")
            .map(|i| IntegrationId::parse(i).map_err(|e| invalid_query("integration_id", &e.0)))
            .transpose()?,
        assistant: q.get("assistant_id").cloned(),
        since_ms: time_ms(&q, "since")?,
        until_ms: time_ms(&q, "until")?,
    };
    if let (Some(s), Some(u)) = (filter.since_ms, filter.until_ms)
        && s > u
    {
        return Err(invalid_query("since", "after until"));
    }
    let page = store(call)
        .page(
            &call.who.tenant,
            &filter,
            usize::try_from(limit).unwrap_or(50),
            q.get("cursor").map(String::as_str),
        )
        .await?;
    let shown: Vec<Value> = page.items.iter().map(view).collect();
    http::json(
        StatusCode::OK,
        &json!({ "dispatches": shown, "next_cursor": page.cursor, "skipped": page.skipped }),
    )
}

fn dispatch_id(call: &Call<'_>) -> Result<DispatchId, ApiError> {
    let raw = call.path_param("id")?;
    DispatchId::parse(&raw).map_err(|e| ApiError::bad_request("invalid_id", e.0))
}

/// `GET /v1/dispatches/{id}`.
pub async fn get(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let id = dispatch_id(call)?;
    let d = store(call)
        .get(&call.who.tenant, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such dispatch".into()))?;
    http::json(StatusCode::OK, &view(&d))
}

/// `POST /v1/dispatches/{id}/retry`: its failed (and skipped) steps run again; its
/// finished steps are not repeated. 409 when nothing failed.
pub async fn retry(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let id = dispatch_id(call)?;
    let d = store(call)
        .get(&call.who.tenant, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such dispatch".into()))?;
    if !matches!(d.status, DispatchStatus::Failed | DispatchStatus::Partial) {
        return Err(ApiError::Conflict {
            code: "nothing_to_retry",
            message: "only a failed or partly failed dispatch can be retried".into(),
        });
    }
    let queue = conduit::queue::dispatch_queue(call.app).map_err(ApiError::internal)?;
    let dispatcher = conduit::dispatch::engine::Dispatcher::new(
        call.app,
        format!("api-{}", call.meta.request_id),
        std::time::Instant::now(),
    );
    let reset = dispatcher
        .reset_failed(&call.who.tenant, &id)
        .await
        .map_err(|e| match e {
            conduit::dispatch::engine::DispatchError::Store(StoreError::ConditionFailed) => {
                ApiError::concurrent_update("the dispatch changed concurrently; read it and retry")
            }
            conduit::dispatch::engine::DispatchError::Store(s) => s.into(),
            other => ApiError::internal(other),
        })?
        .ok_or_else(|| ApiError::NotFound("no such dispatch".into()))?;
    queue
        .send(&ResumeMessage {
            resume: Resume {
                tenant_id: call.who.tenant.clone(),
                dispatch_id: id.clone(),
            },
        })
        .await
        .map_err(ApiError::internal)?;
    call.record(&call.audit("dispatch.retry", id.to_string()))
        .await;
    http::json(StatusCode::ACCEPTED, &view(&reset))
}

/// A caller's event for their own workspace: a JSON object whose `tenant_id`, when
/// given (not null), is the caller's (set when left out), of the event's shape as
/// strictly as any body (an array never stands in for an object). Its rules are checked
/// where it is read. `field` names the event in errors.
pub(crate) fn own_event(
    call: &Call<'_>,
    mut detail: Value,
    field: &str,
) -> Result<Value, ApiError> {
    let Some(obj) = detail.as_object_mut() else {
        return Err(ApiError::invalid_fields(vec![FieldError {
            field: field.to_owned(),
            message: "an event is a JSON object".into(),
        }]));
    };
    match obj.get("tenant_id") {
        None | Some(Value::Null) => {
            obj.insert("tenant_id".into(), json!(call.who.tenant.as_str()));
        }
        Some(Value::String(t)) if t == call.who.tenant.as_str() => {}
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_event",
                "the event's tenant_id must be your workspace's",
            ));
        }
    }
    http::from_body::<ProductEvent>(&detail)?;
    Ok(detail)
}

/// `POST /v1/events`: puts a product event (schema version 1) on the bus as the
/// product would, so it runs the tenant's chains through the real path. Its tenant is
/// the caller's; the answer names the dispatch it will make.
pub async fn publish(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let detail = own_event(call, http::body_object(&call.req)?, "body")?;
    let event = ProductEvent::parse(&detail).map_err(|invalid| {
        ApiError::invalid_fields(
            invalid
                .0
                .into_iter()
                .map(|p| FieldError {
                    field: p.field,
                    message: p.message,
                })
                .collect(),
        )
    })?;
    let kind = TriggerEvent::of_product(event.kind);
    call.app
        .events
        .publish_from(PRODUCT_SOURCE, kind.as_str(), &event)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "test event not published");
            ApiError::BadGateway {
                code: "bus_unavailable",
                message: "the event could not be put on the bus; nothing was sent, retry".into(),
            }
        })?;
    let id = DispatchId::for_event(&event.tenant_id, &event.event_id, event.occurred_at);
    call.record(&call.audit("event.publish", event.event_id.clone()))
        .await;
    http::json(
        StatusCode::ACCEPTED,
        &json!({ "event_id": event.event_id, "type": kind.as_str(), "dispatch_id": id }),
    )
}

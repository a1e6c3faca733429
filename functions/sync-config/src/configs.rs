//! `/v1/sync/configs…`: create, list, read, change, delete, pause and resume sync
//! configs, keeping each config's schedule in step with it.
//!
//! The config is stored first and its schedule changed after; when the schedule
//! change fails, the config is put back as it was (a delete of a new one) and the
//! caller gets a 502 with nothing changed. Deleting goes the other way: schedule
//! first (a missing one is fine), then the config. Schedule writes are upserts, so a
//! change interrupted between the two is healed by the config's next change.

use std::collections::BTreeMap;

use conduit::audit::{AuditEntry, Outcome};
use conduit::domain::{ConnectionId, SyncConfigId, now};
use conduit::http::{self, ApiError};
use conduit::scopes;
use conduit::sync::config::{ConfigStatus, FieldMapping, SyncConfig};
use conduit::sync::crm::CrmKind;
use conduit::sync::message::SyncMessage;
use conduit::sync::purge::Purge;
use conduit::sync::schema::{CrmField, Entity};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Response};
use serde_json::{Value, json};

use crate::automap;
use crate::crm::{self, kind_of, usable_connection};
use crate::validate::{self, CreateBody, PatchBody, Problems};
use crate::{Call, ConfigCall};
use conduit::sync::config::WriteError;
use conduit::sync::schedules::{self, ScheduleError};

/// What the API shows of a config: the config and its schedule.
pub fn view(c: &SyncConfig) -> Value {
    let mut v = json!(c);
    v["schedule"] = match c.frequency.schedule_expression() {
        Some(expression) => json!({
            "name": c.schedule_name,
            "expression": expression,
            "timezone": "UTC",
            "state": match c.status {
                ConfigStatus::Active => "enabled",
                ConfigStatus::Paused => "disabled",
            },
        }),
        None => Value::Null,
    };
    v
}

/// The config as a response, with its version as ETag.
pub fn respond(status: StatusCode, c: &SyncConfig) -> Result<Response<Body>, ApiError> {
    http::json_versioned(status, &view(c), c.version)
}

/// A store failure as an API error.
pub fn write_error(e: WriteError) -> ApiError {
    match e {
        WriteError::Claimed { entity, config } => ApiError::Conflict {
            code: "entity_already_synced",
            message: format!(
                "sync config {config} already syncs this connection's {entity}; change that config instead"
            ),
        },
        WriteError::Stale => {
            ApiError::concurrent_update("the sync config changed concurrently; read it and retry")
        }
        WriteError::Store(e) => e.into(),
    }
}

fn schedule_error(e: ScheduleError) -> ApiError {
    match e {
        ScheduleError::NotConfigured(_) => ApiError::internal(e),
        ScheduleError::Service(why) => {
            tracing::warn!(cause = %why, "schedule change failed");
            ApiError::BadGateway {
                code: "scheduler_unavailable",
                message: "the config's schedule could not be changed; nothing was changed, retry"
                    .into(),
            }
        }
    }
}

/// Fails before anything is written when the config needs a schedule and the
/// function is not configured to make one.
fn can_schedule(call: &Call<'_>, c: &SyncConfig) -> Result<(), ApiError> {
    if c.frequency.schedule_expression().is_some() {
        call.service
            .settings
            .target()
            .map_err(|name| ApiError::internal(format!("setting {name} is not configured")))?;
    }
    Ok(())
}

/// Brings the config's webhooks in the CRM in step (where Conduit creates them:
/// Pipedrive). Never fails the change: the config still pulls every minute; a failure
/// is audited (`sync_config.webhooks`, failed) and logged, and the next change of the
/// config tries again.
async fn webhooks(call: &Call<'_>, c: &SyncConfig, gone: bool) {
    match conduit::sync::subscriptions::reconcile(
        call.app,
        c,
        gone,
        call.who.user.as_str(),
        &call.meta.request_id,
    )
    .await
    {
        Ok(done) if done.created + done.removed > 0 => {
            call.record(
                &call
                    .audit_config("sync_config.webhooks", &c.id)
                    .detail("created", done.created)
                    .detail("removed", done.removed),
            )
            .await;
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(config = %c.id, error = %e, "the config's webhooks could not be brought in step; it pulls every minute meanwhile");
            call.record(
                &call
                    .audit_config("sync_config.webhooks", &c.id)
                    .failed(Outcome::Failure, "webhooks_failed")
                    .detail("reason", e.chars().take(300).collect::<String>()),
            )
            .await;
        }
    }
}

/// The next version of `prev`, to change.
pub fn next_version(prev: &SyncConfig) -> SyncConfig {
    let mut next = prev.clone();
    next.version = prev.version + 1;
    next.updated_at = now();
    next
}

/// Saves `next` over `prev` with `audit`, then brings the schedule in step when it
/// changed (or `heal`); when that fails, puts `prev` back and answers the failure.
pub async fn save(
    call: &Call<'_>,
    prev: &SyncConfig,
    next: &SyncConfig,
    audit: AuditEntry,
    heal: bool,
) -> Result<(), ApiError> {
    can_schedule(call, next)?;
    let store = call.store();
    store.save(prev, next, &audit).await.map_err(write_error)?;
    let changed = heal
        || prev.frequency != next.frequency
        || prev.status != next.status
        || prev.schedule_name != next.schedule_name;
    if !changed {
        if prev.entities != next.entities || prev.direction != next.direction {
            webhooks(call, next, false).await;
        }
        return Ok(());
    }
    let Err(e) = call.schedules().apply(next).await else {
        webhooks(call, next, false).await;
        return Ok(());
    };
    // Back to `prev` as a new version (the store only moves forward).
    let mut back = prev.clone();
    back.version = next.version + 1;
    back.updated_at = now();
    let undo = call
        .audit_config(&audit.action, &next.id)
        .failed(Outcome::Failure, "schedule_failed")
        .detail("rolled_back_to", prev.version);
    if let Err(undo_error) = store.save(next, &back, &undo).await {
        tracing::error!(config = %next.id, error = %undo_error, "could not roll a config back after its schedule failed");
    } else if let Err(again) = call.schedules().apply(&back).await {
        tracing::error!(config = %next.id, error = %again, "could not restore a config's schedule");
    }
    Err(schedule_error(e))
}

/// `GET /v1/sync/configs?connection_id=&limit=&cursor=`: a page of the tenant's
/// configs, oldest first, paged like every listing; the filter applies within the page.
pub async fn list(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let q = http::query(&call.req, &["connection_id", "limit", "cursor"])?;
    let connection = q
        .get("connection_id")
        .map(|raw| {
            ConnectionId::parse(raw).map_err(|e| {
                ApiError::bad_request("invalid_query", format!("connection_id: {}", e.0))
            })
        })
        .transpose()?;
    let limit = http::page_limit(&q)?;
    let page = call
        .store()
        .page(&call.who.tenant, limit, q.get("cursor").map(String::as_str))
        .await?;
    let shown: Vec<Value> = page
        .items
        .iter()
        .filter(|c| connection.as_ref().is_none_or(|id| c.connection_id == *id))
        .map(view)
        .collect();
    http::json(
        StatusCode::OK,
        &json!({ "configs": shown, "next_cursor": page.cursor, "skipped": page.skipped }),
    )
}

/// `GET /v1/sync/configs/{id}`.
pub async fn get(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let c = call.load().await?;
    respond(StatusCode::OK, &c)
}

/// `GET /v1/sync/configs/{id}/webhook-endpoint` (admins): the URL, with its key, that
/// the CRM's admin points an outbound message at (Salesforce); 404 when the config has
/// none (not realtime, paused, or a CRM whose webhooks Conduit makes itself).
pub async fn webhook_endpoint(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let c = call.load().await?;
    let endpoint = conduit::sync::subscriptions::admin_endpoint(call.app, &c)
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "sync config {} has no endpoint for its CRM's admin",
                c.id
            ))
        })?;
    let mut body = json!({"provider": c.provider, "url": endpoint.url, "entities": c.entities});
    if let Some((name, value)) = endpoint.header {
        body["header"] = json!({"name": name, "value": value});
    }
    let mut response = http::json(StatusCode::OK, &body)?;
    response.headers_mut().insert(
        lambda_http::http::header::CACHE_CONTROL,
        lambda_http::http::HeaderValue::from_static("no-store"),
    );
    Ok(response)
}

/// The CRM's fields of `entities`, described through the config's connection.
async fn describe(
    call: &Call<'_>,
    kind: CrmKind,
    connection: &ConnectionId,
    entities: &[Entity],
) -> Result<BTreeMap<Entity, Vec<CrmField>>, ApiError> {
    let mut unique: Vec<Entity> = entities.to_vec();
    unique.sort_unstable();
    unique.dedup();
    let mut client = crm::client(call, kind, connection)?;
    crm::describe_all(&mut client, &unique).await
}

/// Auto-mapped default mappings of `entities`.
fn default_mappings(
    kind: CrmKind,
    entities: &[Entity],
    described: &BTreeMap<Entity, Vec<CrmField>>,
) -> Vec<FieldMapping> {
    let mut out = Vec::new();
    for e in entities {
        if let Some(fields) = described.get(e)
            && !out.iter().any(|m: &FieldMapping| m.entity == *e)
        {
            out.extend(automap::propose(kind, *e, &[], fields).added);
        }
    }
    out
}

/// `POST /v1/sync/configs`.
pub async fn create(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let body: CreateBody = http::json_body(&call.req)?;
    let mut p = Problems::default();
    let connection_id = match ConnectionId::parse(&body.connection_id) {
        Ok(id) => Some(id),
        Err(e) => {
            p.add("connection_id", e.0);
            None
        }
    };
    let found = match &connection_id {
        Some(id) => usable_connection(call, id).await?,
        None => None,
    };
    if connection_id.is_some() && found.is_none() {
        p.add("connection_id", "no such connection in this workspace");
    }
    // Shape checks need the CRM's limits; without a connection, the loosest.
    let kind = found.as_ref().map(|(_, k)| *k);
    let provider = found
        .as_ref()
        .map(|(c, _)| c.provider.clone())
        .unwrap_or_default();
    let provider_name = call
        .app
        .catalogue
        .provider(&provider)
        .map_or(provider.as_str(), |p| p.name.as_str());
    let name = match validate::name(body.name.as_deref(), provider_name, &body.entities) {
        Ok(n) => n,
        Err(why) => {
            p.add("name", why);
            String::new()
        }
    };
    let at = now();
    let mut c = SyncConfig {
        id: SyncConfigId::generate(),
        tenant: call.who.tenant.clone(),
        connection_id: connection_id.clone().unwrap_or_else(ConnectionId::generate),
        provider,
        name,
        direction: body.direction,
        frequency: body.frequency,
        entities: body.entities,
        filters: body.filters,
        conflict_strategy: body.conflict_strategy,
        options: body.options.unwrap_or_default(),
        status: ConfigStatus::Active,
        mappings: Vec::new(),
        schedule_name: None,
        last_job: None,
        created_at: at,
        created_by: call.who.user.clone(),
        updated_at: at,
        version: 1,
    };
    p.extend(validate::check_shape(kind, &c));
    let Some((conn, kind)) = &found else {
        // The connection is one of the problems.
        return Err(p.into_error());
    };
    let kind = *kind;
    // Before the CRM is asked anything: a grant that cannot serve the config is a 409
    // naming the reconnect, not a run that fails later (bad input is a 400 first).
    if p.0.is_empty() {
        let uses = scopes::sync_uses(c.direction, &c.entities);
        scopes::check(call.app.catalogue, conn, &uses)?;
    }
    let described = describe(call, kind, &c.connection_id, &c.entities).await?;
    p.extend(validate::check_filters(kind, &c, &described));
    let given = body.mappings.is_some();
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    match body.mappings {
        Some(inputs) => {
            for (i, m) in inputs.into_iter().enumerate() {
                let fields = described.get(&m.entity).map(Vec::as_slice);
                let m = m.into_mapping(fields);
                labels.insert(m.id.to_string(), format!("mappings[{i}]"));
                c.mappings.push(m);
            }
        }
        None => c.mappings = default_mappings(kind, &c.entities, &described),
    }
    let label = |m: &FieldMapping| {
        labels
            .get(m.id.as_str())
            .cloned()
            .unwrap_or_else(|| format!("mappings[{}]", m.id))
    };
    p.extend(validate::check_config_mappings(
        kind, &c, &described, &label,
    ));
    p.check()?;
    validate::check_size(&c)?;
    c.schedule_name = c
        .frequency
        .schedule_expression()
        .map(|_| schedules::name(&c));
    can_schedule(call, &c)?;

    let entities: Vec<&str> = c.entities.iter().map(|e| e.as_str()).collect();
    let audit = call
        .audit_config("sync_config.create", &c.id)
        .detail("connection_id", c.connection_id.as_str())
        .detail("provider", &c.provider)
        .detail("entities", &entities)
        .detail("direction", c.direction)
        .detail("frequency", &c.frequency)
        .detail("mappings", c.mappings.len())
        .detail("mappings_given", given);
    let store = call.store();
    store.create(&c, &audit).await.map_err(write_error)?;
    if let Err(e) = call.schedules().apply(&c).await {
        let undo = call
            .audit_config("sync_config.create", &c.id)
            .failed(Outcome::Failure, "schedule_failed")
            .detail("rolled_back", true);
        if let Err(undo_error) = store.delete(&c, &undo).await {
            tracing::error!(config = %c.id, error = %undo_error, "could not remove a config whose schedule failed");
        }
        return Err(schedule_error(e));
    }
    webhooks(call, &c, false).await;
    respond(StatusCode::CREATED, &c)
}

/// `PATCH /v1/sync/configs/{id}`: changes what the body names; filters and entities
/// are checked against the CRM again, and new entities get auto-mapped mappings.
pub async fn update(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let body: PatchBody = http::patch_body(&call.req)?;
    if body.is_empty() {
        return Err(http::empty_update());
    }
    let prev = call.load().await?;
    let kind = kind_of(&prev.provider)?;
    let mut next = next_version(&prev);
    let mut p = Problems::default();
    let mut changed: Vec<&str> = Vec::new();
    if let Some(name) = &body.name {
        match validate::name(Some(name), "", &[]) {
            Ok(n) => next.name = n,
            Err(why) => p.add("name", why),
        }
        changed.push("name");
    }
    if let Some(d) = body.direction {
        next.direction = d;
        changed.push("direction");
    }
    if let Some(f) = body.frequency {
        next.frequency = f;
        changed.push("frequency");
    }
    if let Some(s) = body.conflict_strategy {
        next.conflict_strategy = s;
        changed.push("conflict_strategy");
    }
    if let Some(o) = body.options {
        next.options = o;
        changed.push("options");
    }
    let recheck = body.entities.is_some() || body.filters.is_some();
    if let Some(entities) = body.entities {
        next.entities = entities;
        changed.push("entities");
        // Mappings and filters of entities no longer synced go with them.
        next.mappings.retain(|m| next.entities.contains(&m.entity));
        if body.filters.is_none() {
            next.filters.retain(|f| next.entities.contains(&f.entity));
        }
    }
    if let Some(filters) = body.filters {
        next.filters = filters;
        changed.push("filters");
    }
    p.extend(validate::check_shape(Some(kind), &next));
    let widened = next.direction != prev.direction || next.entities != prev.entities;
    if (recheck || widened) && p.0.is_empty() {
        let Some((conn, _)) = usable_connection(call, &prev.connection_id).await? else {
            return Err(ApiError::Conflict {
                code: "connection_unusable",
                message: format!(
                    "the config's connection {} no longer exists",
                    prev.connection_id
                ),
            });
        };
        if widened {
            scopes::check(
                call.app.catalogue,
                &conn,
                &scopes::sync_uses(next.direction, &next.entities),
            )?;
        }
    }
    if recheck && p.0.is_empty() {
        let described = describe(call, kind, &prev.connection_id, &next.entities).await?;
        p.extend(validate::check_filters(kind, &next, &described));
        let added = next.entities_added_since(&prev);
        next.mappings
            .extend(default_mappings(kind, &added, &described));
        let label = |m: &FieldMapping| format!("field_mappings[{}]", m.id);
        p.extend(validate::check_config_mappings(
            kind, &next, &described, &label,
        ));
    }
    p.check()?;
    validate::check_size(&next)?;
    next.schedule_name = next
        .frequency
        .schedule_expression()
        .map(|_| schedules::name(&next));
    let audit = call
        .audit_config("sync_config.update", &next.id)
        .detail("changed", &changed)
        .detail("version", next.version);
    save(call, &prev, &next, audit, false).await?;
    respond(StatusCode::OK, &next)
}

/// How long a delete's backstop purge waits: past this function's time limit (29 s),
/// so it finds the delete done, or (had the delete failed) a live config, which a purge
/// leaves alone.
const PURGE_BACKSTOP_SECS: i32 = 30;

/// `DELETE /v1/sync/configs/{id}`: the schedule first, then the config; what it owns
/// goes in the background (`conduit::sync::purge`).
pub async fn delete(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let c = call.load().await?;
    // Its links, checkpoints and conflicts go in the background (there can be a
    // hundred thousand links). The purge is queued before anything changes, so a
    // queue that cannot take it refuses the delete instead of leaving orphans.
    let purge = SyncMessage::Purge(Purge {
        tenant: c.tenant.clone(),
        config_id: c.id.clone(),
        entities: c.entities.clone(),
    });
    let queue = conduit::queue::sync_queue(call.app).map_err(ApiError::internal)?;
    queue
        .send_delayed(&purge, PURGE_BACKSTOP_SECS)
        .await
        .map_err(ApiError::internal)?;
    call.schedules().remove(&c).await.map_err(schedule_error)?;
    let audit = call
        .audit_config("sync_config.delete", &c.id)
        .detail("connection_id", c.connection_id.as_str())
        .detail("provider", &c.provider);
    if let Err(e) = call.store().delete(&c, &audit).await {
        // The config stays (it changed meanwhile): give it its schedule back, as it
        // is now.
        let now = call.store().get(&c.tenant, &c.id).await;
        if let Ok(Some(current)) = now
            && let Err(again) = call.schedules().apply(&current).await
        {
            tracing::error!(config = %c.id, error = %again, "could not restore a config's schedule");
        }
        return Err(write_error(e));
    }
    webhooks(call, &c, true).await;
    // The purge starts now; should this send fail, the backstop does the work.
    if let Err(e) = queue.send(&purge).await {
        tracing::warn!(config = %c.id, error = %e, "the clean-up of a deleted config waits for its backstop");
    }
    http::no_content()
}

async fn set_status(
    call: &Call<'_>,
    status: ConfigStatus,
    action: &str,
) -> Result<Response<Body>, ApiError> {
    let prev = call.load().await?;
    if prev.status == status {
        // Already so: only make sure the schedule agrees.
        call.schedules()
            .apply(&prev)
            .await
            .map_err(schedule_error)?;
        webhooks(call, &prev, false).await;
        return respond(StatusCode::OK, &prev);
    }
    let mut next = next_version(&prev);
    next.status = status;
    let audit = call
        .audit_config(action, &next.id)
        .detail("version", next.version);
    save(call, &prev, &next, audit, true).await?;
    respond(StatusCode::OK, &next)
}

/// `POST /v1/sync/configs/{id}/pause`: no scheduled or triggered runs until resumed.
pub async fn pause(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    set_status(call, ConfigStatus::Paused, "sync_config.pause").await
}

/// `POST /v1/sync/configs/{id}/resume`.
pub async fn resume(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    set_status(call, ConfigStatus::Active, "sync_config.resume").await
}

//! `/v1/records/{entity}…`: list and search, create, read, replace, update and delete.
//!
//! Writes are read-modify-write on the record's revision: a concurrent write (a sync
//! pulling into the same record) makes the save fail, and it is applied again on the
//! fresh record unless the caller pinned a version with `If-Match`. The key marker and
//! the audit entry are written in the same transaction as the record.

use conduit::domain::{RecordId, now};
use conduit::http::{self, ApiError};
use conduit::providers::FieldError;
use std::collections::BTreeMap;

use conduit::sync::config::{Configs, SyncConfig};
use conduit::sync::links::{Linked, linked};
use conduit::sync::realtime;
use conduit::sync::records::{ListQuery, Platform, Record, Records, Source, WriteError};
use conduit::sync::schema::Entity;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Response};
use serde::Deserialize;
use serde_json::json;

use crate::Call;
use crate::view::view;
use conduit::sync::values::{self, Changes};

/// Longest search text, in characters.
const MAX_SEARCH_CHARS: usize = 200;
/// How often a write is tried again after a concurrent change.
const ATTEMPTS: usize = 4;

fn store(call: &Call<'_>) -> Records {
    Records::new(call.app.table.clone())
}

fn path_entity(call: &Call<'_>) -> Result<Entity, ApiError> {
    let raw = http::path_param(&call.req, "entity")?;
    Entity::parse(&raw).ok_or_else(|| {
        ApiError::NotFound(format!(
            "no record type {:?}; expected contacts or companies",
            raw.chars().take(64).collect::<String>()
        ))
    })
}

fn path_id(call: &Call<'_>) -> Result<RecordId, ApiError> {
    let raw = http::path_param(&call.req, "id")?;
    RecordId::parse(&raw).map_err(|e| ApiError::bad_request("invalid_id", e.to_string()))
}

fn target(r: &Record) -> String {
    format!("{}/{}", r.entity, r.id)
}

/// A live record of the caller's tenant (a deleted one is not found).
async fn load(call: &Call<'_>, entity: Entity, id: &RecordId) -> Result<Record, ApiError> {
    store(call)
        .get(&call.who.tenant, entity, id)
        .await?
        .filter(|r| r.deleted_at.is_none())
        .ok_or_else(|| ApiError::NotFound(format!("no {} record {id}", entity.as_str())))
}

/// The tenant's sync configs.
async fn configs(call: &Call<'_>) -> Result<Vec<SyncConfig>, ApiError> {
    Configs::new(call.app.table.clone())
        .list(&call.who.tenant)
        .await
        .map_err(ApiError::from)
}

/// The live links of `records` under `configs`, by record id.
async fn links_of(
    call: &Call<'_>,
    entity: Entity,
    configs: &[SyncConfig],
    records: &[Record],
) -> Result<BTreeMap<String, Vec<Linked>>, ApiError> {
    if records.is_empty() {
        return Ok(BTreeMap::new());
    }
    let ids: Vec<RecordId> = records.iter().map(|r| r.id.clone()).collect();
    linked(&call.app.table, &call.who.tenant, entity, configs, &ids)
        .await
        .map_err(ApiError::from)
}

async fn respond(
    call: &Call<'_>,
    status: StatusCode,
    r: &Record,
) -> Result<Response<Body>, ApiError> {
    let configs = configs(call).await?;
    let links = links_of(call, r.entity, &configs, std::slice::from_ref(r)).await?;
    let mine = links.get(r.id.as_str()).map(Vec::as_slice).unwrap_or(&[]);
    http::json_versioned(status, &view(r, mine), r.version)
}

fn write_error(e: WriteError) -> ApiError {
    match e {
        WriteError::DuplicateKey(existing) => ApiError::Conflict {
            code: "duplicate_key",
            message: format!("record {existing} already has this email / domain"),
        },
        WriteError::Stale => {
            ApiError::concurrent_update("the record kept changing concurrently; read it and retry")
        }
        WriteError::Store(e) => e.into(),
    }
}

/// Applies `changes` from the app at `source`; the names of the fields that changed.
fn apply(r: &mut Record, changes: &Changes, source: &Source) -> Vec<&'static str> {
    changes
        .iter()
        .filter(|(field, value)| r.set(field, value.as_deref(), source))
        .map(|(field, _)| *field)
        .collect()
}

fn app_source(at: time::OffsetDateTime) -> Source {
    Source {
        origin: "app".into(),
        config_id: None,
        at,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FieldsBody {
    fields: serde_json::Map<String, serde_json::Value>,
}

fn parse_changes(call: &Call<'_>, entity: Entity, mode: Mode) -> Result<Changes, ApiError> {
    let body: FieldsBody = match mode {
        Mode::Merge => http::patch_body(&call.req)?,
        Mode::Replace => http::json_body(&call.req)?,
    };
    values::changes(entity, &body.fields).map_err(ApiError::invalid_fields)
}

/// The records a write's association fields (a deal's `company_id`, `contact_id`) name
/// must be live records of the caller's tenant: a deal pointing nowhere could not be
/// pushed with its association, so it is refused here rather than failing every run.
async fn check_associations(
    call: &Call<'_>,
    entity: Entity,
    changes: &Changes,
) -> Result<(), ApiError> {
    let mut errors = Vec::new();
    for (field, value) in changes {
        let (Some(target), Some(value)) = (entity.association(field), value) else {
            continue;
        };
        let found = match RecordId::parse(value) {
            Ok(id) => store(call)
                .get(&call.who.tenant, target, &id)
                .await?
                .is_some_and(|r| r.deleted_at.is_none()),
            Err(_) => false,
        };
        if !found {
            errors.push(FieldError {
                field: (*field).to_owned(),
                message: format!("names no {} record of this tenant", target.as_str()),
            });
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid_fields(errors))
    }
}

/// `GET /v1/records/{entity}?search=&platform=&limit=&cursor=`.
pub async fn list(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let entity = path_entity(call)?;
    let q = http::query(&call.req, &["search", "platform", "limit", "cursor"])?;
    let search = q.get("search").map(|s| s.trim()).filter(|s| !s.is_empty());
    if search.is_some_and(|s| s.chars().count() > MAX_SEARCH_CHARS) {
        return Err(ApiError::bad_request(
            "invalid_search",
            format!("search must be at most {MAX_SEARCH_CHARS} characters"),
        ));
    }
    let platform = q.get("platform").map(String::as_str);
    if let Some(p) = platform
        && call.app.catalogue.provider(p).is_none()
    {
        return Err(ApiError::bad_request(
            "unknown_provider",
            "platform names no provider; see GET /v1/providers",
        ));
    }
    let limit = http::page_limit(&q)?;
    let configs = configs(call).await?;
    let query = ListQuery {
        search,
        platform: platform.map(|provider| Platform {
            provider,
            configs: &configs,
        }),
        limit,
        cursor: q.get("cursor").map(String::as_str),
    };
    let page = store(call).list(&call.who.tenant, entity, &query).await?;
    let links = links_of(call, entity, &configs, &page.items).await?;
    let records: Vec<_> = page
        .items
        .iter()
        .map(|r| {
            view(
                r,
                links.get(r.id.as_str()).map(Vec::as_slice).unwrap_or(&[]),
            )
        })
        .collect();
    http::json(
        StatusCode::OK,
        &json!({ "records": records, "next_cursor": page.cursor, "skipped": page.skipped }),
    )
}

/// `POST /v1/records/{entity}` `{"fields": {…}}`: a new record, its values from the app.
pub async fn create(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let entity = path_entity(call)?;
    let changes = parse_changes(call, entity, Mode::Replace)?;
    check_associations(call, entity, &changes).await?;
    if changes.values().all(Option::is_none) {
        return Err(ApiError::bad_request(
            "empty_record",
            "give at least one field with a value",
        ));
    }
    let at = now();
    let mut r = Record::new(RecordId::generate(), call.who.tenant.clone(), entity, at);
    let changed = apply(&mut r, &changes, &app_source(at));
    r.version = 1;
    r.rev = 1;
    let audit = call
        .audit("record.create", target(&r))
        .detail("fields", &changed);
    let write = audit.to_write()?;
    let mut outcome = store(call).create_unique(&r, vec![write]).await;
    for _ in 1..ATTEMPTS {
        // A concurrent create took the key's marker: look again (now a duplicate?).
        if !matches!(outcome, Err(WriteError::Stale)) {
            break;
        }
        let write = audit.to_write()?;
        outcome = store(call).create_unique(&r, vec![write]).await;
    }
    outcome.map_err(write_error)?;
    pushed(call, entity).await;
    respond(call, StatusCode::CREATED, &r).await
}

/// A write went through: realtime configs push it now (the others at their next run).
async fn pushed(call: &Call<'_>, entity: Entity) {
    match conduit::queue::sync_queue(call.app) {
        Ok(queue) => {
            realtime::push_change(call.app, &queue, &call.who.tenant, entity, None).await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "no sync queue: realtime configs push at their schedule")
        }
    }
}

/// `GET /v1/records/{entity}/{id}`.
pub async fn get(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let entity = path_entity(call)?;
    let id = path_id(call)?;
    respond(call, StatusCode::OK, &load(call, entity, &id).await?).await
}

/// How a write's fields combine with the record's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// PUT: the body is every field; the others are cleared.
    Replace,
    /// PATCH: the body's fields change, null clears; the others stay.
    Merge,
}

/// `PUT` / `PATCH /v1/records/{entity}/{id}` `{"fields": {…}}`, honouring `If-Match`.
/// The version moves only when a value changed; an update changing nothing writes
/// nothing.
pub async fn update(call: &Call<'_>, mode: Mode) -> Result<Response<Body>, ApiError> {
    let entity = path_entity(call)?;
    let id = path_id(call)?;
    let mut changes = parse_changes(call, entity, mode)?;
    if mode == Mode::Merge && changes.is_empty() {
        return Err(http::empty_update());
    }
    check_associations(call, entity, &changes).await?;
    if mode == Mode::Replace {
        for f in entity.fields() {
            changes.entry(f.name).or_insert(None);
        }
    }
    let expected = http::if_match(&call.req)?;
    for _ in 0..ATTEMPTS {
        let prev = load(call, entity, &id).await?;
        if expected.is_some_and(|v| v != prev.version) {
            return Err(ApiError::PreconditionFailed);
        }
        let at = now();
        let mut next = prev.clone();
        let changed = apply(&mut next, &changes, &app_source(at));
        if changed.is_empty() {
            return respond(call, StatusCode::OK, &prev).await;
        }
        next.version += 1;
        next.rev += 1;
        next.updated_at = at;
        let audit = call
            .audit("record.update", target(&next))
            .detail("fields", &changed);
        let write = audit.to_write()?;
        match store(call)
            .save_unique(&next, prev.key().as_deref(), vec![write])
            .await
        {
            Ok(()) => {
                pushed(call, entity).await;
                return respond(call, StatusCode::OK, &next).await;
            }
            Err(WriteError::Stale) => continue,
            Err(e) => return Err(write_error(e)),
        }
    }
    Err(write_error(WriteError::Stale))
}

/// `DELETE /v1/records/{entity}/{id}`, honouring `If-Match`: a soft delete (the change
/// feed sees it, so pushes can propagate it); the key is free again at once.
pub async fn delete(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let entity = path_entity(call)?;
    let id = path_id(call)?;
    let expected = http::if_match(&call.req)?;
    for _ in 0..ATTEMPTS {
        let prev = load(call, entity, &id).await?;
        if expected.is_some_and(|v| v != prev.version) {
            return Err(ApiError::PreconditionFailed);
        }
        let at = now();
        let mut next = prev.clone();
        next.deleted_at = Some(at);
        next.updated_at = at;
        next.version += 1;
        next.rev += 1;
        let audit = call.audit("record.delete", target(&next));
        let write = audit.to_write()?;
        match store(call)
            .save_unique(&next, prev.key().as_deref(), vec![write])
            .await
        {
            Ok(()) => {
                pushed(call, entity).await;
                return http::no_content();
            }
            Err(WriteError::Stale) => continue,
            Err(e) => return Err(write_error(e)),
        }
    }
    Err(write_error(WriteError::Stale))
}

//! `/v1/sync/configs/{id}/field-mappings…`, `…/available-fields` and `…/auto-map`.
//!
//! Mappings live in their config; every change checks the whole mapping set of the
//! entity against the CRM's fields as described now, and is stored as a new version
//! of the config (If-Match honoured), so an invalid set is never stored.

use std::collections::BTreeMap;

use conduit::domain::MappingId;
use conduit::http::{self, ApiError};
use conduit::sync::config::{FieldMapping, SyncConfig};
use conduit::sync::crm::CrmKind;
use conduit::sync::schema::{CrmField, Entity};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::automap;
use crate::configs::{next_version, save};
use crate::crm::{self, is_system, kind_of, usable_connection};
use crate::validate::{self, MappingInput, MappingPatch, Problems};
use crate::{Call, ConfigCall};

fn entity_param(call: &Call<'_>, required: bool) -> Result<Option<Entity>, ApiError> {
    let q = http::query(&call.req, &["entity"])?;
    match q.get("entity") {
        Some(raw) => Entity::parse(raw).map(Some).ok_or_else(|| {
            ApiError::bad_request(
                "invalid_query",
                "entity must be one of: contacts, companies",
            )
        }),
        None if required => Err(ApiError::bad_request(
            "invalid_query",
            "the entity query parameter is required (contacts, companies)",
        )),
        None => Ok(None),
    }
}

/// The CRM's fields of `entity` through the config's connection (which must be
/// usable).
pub async fn describe(
    call: &Call<'_>,
    c: &SyncConfig,
    entity: Entity,
) -> Result<(CrmKind, Vec<CrmField>), ApiError> {
    let kind = kind_of(&c.provider)?;
    if usable_connection(call, &c.connection_id).await?.is_none() {
        return Err(ApiError::Conflict {
            code: "connection_unusable",
            message: format!(
                "the config's connection {} no longer exists",
                c.connection_id
            ),
        });
    }
    let mut client = crm::client(call, kind, &c.connection_id)?;
    let fields = client.describe(entity).await.map_err(crm::api_error)?;
    Ok((kind, fields))
}

/// Checks `next`'s mappings of `entity`, naming mappings by `label`.
fn check(
    kind: CrmKind,
    next: &SyncConfig,
    entity: Entity,
    fields: Vec<CrmField>,
    label: &dyn Fn(&FieldMapping) -> String,
) -> Result<(), ApiError> {
    let described = BTreeMap::from([(entity, fields)]);
    let mut p = Problems::default();
    p.extend(validate::check_config_mappings(
        kind, next, &described, label,
    ));
    p.check()?;
    validate::check_size(next)
}

fn by_id(m: &FieldMapping) -> String {
    format!("field_mappings[{}]", m.id)
}

fn mapping_view(m: &FieldMapping) -> Value {
    json!(m)
}

/// `GET …/field-mappings[?entity=]`.
pub async fn list(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let entity = entity_param(call, false)?;
    let c = call.load().await?;
    let shown: Vec<Value> = c
        .mappings
        .iter()
        .filter(|m| entity.is_none_or(|e| m.entity == e))
        .map(mapping_view)
        .collect();
    http::json_versioned(StatusCode::OK, &json!({ "mappings": shown }), c.version)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManyBody {
    mappings: Vec<MappingInput>,
}

/// `POST …/field-mappings`: one mapping, or `{"mappings": […]}`.
pub async fn add(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let raw = http::body_object(&call.req)?;
    let many = raw.get("mappings").is_some();
    let inputs = if many {
        http::from_body::<ManyBody>(&raw)?.mappings
    } else {
        vec![http::from_body::<MappingInput>(&raw)?]
    };
    if inputs.is_empty() {
        return Err(ApiError::bad_request(
            "invalid_fields",
            "mappings: give at least one mapping",
        ));
    }
    let prev = call.load().await?;
    let mut next = next_version(&prev);
    let mut entities: Vec<Entity> = inputs.iter().map(|m| m.entity).collect();
    entities.sort_unstable();
    entities.dedup();
    let mut described: BTreeMap<Entity, Vec<CrmField>> = BTreeMap::new();
    let mut kind = kind_of(&prev.provider)?;
    for &e in &entities {
        if prev.entities.contains(&e) {
            let (k, fields) = describe(call, &prev, e).await?;
            kind = k;
            described.insert(e, fields);
        }
    }
    let mut labels: BTreeMap<MappingId, String> = BTreeMap::new();
    let mut added = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.into_iter().enumerate() {
        let fields = described.get(&input.entity).map(Vec::as_slice);
        let m = input.into_mapping(fields);
        labels.insert(
            m.id.clone(),
            if many {
                format!("mappings[{i}]")
            } else {
                "mapping".to_owned()
            },
        );
        added.push(m.clone());
        next.mappings.push(m);
    }
    let label = |m: &FieldMapping| labels.get(&m.id).cloned().unwrap_or_else(|| by_id(m));
    let mut p = Problems::default();
    p.extend(validate::check_config_mappings(
        kind, &next, &described, &label,
    ));
    p.check()?;
    validate::check_size(&next)?;
    let audit = call
        .audit_config("sync_config.mappings", &next.id)
        .detail("added", added.len())
        .detail("version", next.version);
    save(call, &prev, &next, audit, false).await?;
    let body = if many {
        json!({ "mappings": added.iter().map(mapping_view).collect::<Vec<_>>() })
    } else {
        added.first().map(mapping_view).unwrap_or(Value::Null)
    };
    http::json_versioned(StatusCode::CREATED, &body, next.version)
}

fn mapping_index(call: &Call<'_>, c: &SyncConfig) -> Result<usize, ApiError> {
    let raw = http::path_param(&call.req, "mapping_id")?;
    let id =
        MappingId::parse(&raw).map_err(|e| ApiError::bad_request("invalid_id", e.to_string()))?;
    c.mappings
        .iter()
        .position(|m| m.id == id)
        .ok_or_else(|| ApiError::NotFound(format!("no field mapping {id} in sync config {}", c.id)))
}

/// `PATCH …/field-mappings/{mapping_id}`.
pub async fn update(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let patch: MappingPatch = http::patch_body(&call.req)?;
    let prev = call.load().await?;
    let i = mapping_index(call, &prev)?;
    let mut next = next_version(&prev);
    let Some(m) = next.mappings.get_mut(i) else {
        return Err(ApiError::internal("mapping index out of range"));
    };
    patch.apply(m);
    let changed = m.clone();
    if changed == prev.mappings[i] {
        return http::json_versioned(StatusCode::OK, &mapping_view(&changed), prev.version);
    }
    let (kind, fields) = describe(call, &prev, changed.entity).await?;
    let label = |m: &FieldMapping| {
        if m.id == changed.id {
            "mapping".to_owned()
        } else {
            by_id(m)
        }
    };
    check(kind, &next, changed.entity, fields, &label)?;
    let audit = call
        .audit_config("sync_config.mappings", &next.id)
        .detail("updated", changed.id.as_str())
        .detail("version", next.version);
    save(call, &prev, &next, audit, false).await?;
    http::json_versioned(StatusCode::OK, &mapping_view(&changed), next.version)
}

/// `DELETE …/field-mappings/{mapping_id}`. Taking a mapping away cannot make the
/// rest invalid, so the CRM is not asked.
pub async fn delete(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let prev = call.load().await?;
    let i = mapping_index(call, &prev)?;
    let mut next = next_version(&prev);
    let removed = next.mappings.remove(i);
    let audit = call
        .audit_config("sync_config.mappings", &next.id)
        .detail("removed", removed.id.as_str())
        .detail("version", next.version);
    save(call, &prev, &next, audit, false).await?;
    http::no_content()
}

/// `GET …/available-fields?entity=`: the CRM's fields (Conduit's link field left
/// out; CRM bookkeeping marked `system`) and the app's, each with what it is mapped
/// to.
pub async fn available(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let entity = entity_param(call, true)?.unwrap_or(Entity::Contacts);
    let c = call.load().await?;
    let (kind, fields) = describe(call, &c, entity).await?;
    let mapped: Vec<&FieldMapping> = c.mappings_of(entity).collect();
    let crm_fields: Vec<Value> = fields
        .iter()
        .filter(|f| f.name != kind.marker())
        .map(|f| {
            let mut v = json!(f);
            v["system"] = json!(is_system(kind, entity, f));
            v["mapped_to"] = json!(
                mapped
                    .iter()
                    .find(|m| m.crm_field == f.name)
                    .map(|m| &m.app_field)
            );
            v
        })
        .collect();
    let app_fields: Vec<Value> = entity
        .fields()
        .iter()
        .map(|a| {
            let mut v = json!(a);
            v["mapped_from"] = json!(
                mapped
                    .iter()
                    .find(|m| m.app_field == a.name)
                    .map(|m| &m.crm_field)
            );
            v
        })
        .collect();
    http::json_versioned(
        StatusCode::OK,
        &json!({
            "entity": entity,
            "provider": c.provider,
            "crm_fields": crm_fields,
            "app_fields": app_fields,
        }),
        c.version,
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AutoMapBody {
    entity: Entity,
    #[serde(default)]
    replace: bool,
}

/// `POST …/auto-map`: maps the entity's unmapped app fields (all of them with
/// `replace`, which drops the entity's mappings first) and stores the result.
pub async fn auto_map(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let body: AutoMapBody = http::json_body(&call.req)?;
    let prev = call.load().await?;
    if !prev.entities.contains(&body.entity) {
        let mut p = Problems::default();
        p.add(
            "entity",
            format!("the config does not sync {}", body.entity),
        );
        return Err(p.into_error());
    }
    let (kind, fields) = describe(call, &prev, body.entity).await?;
    let mut next = next_version(&prev);
    if body.replace {
        next.mappings.retain(|m| m.entity != body.entity);
    }
    let existing: Vec<&FieldMapping> = next.mappings_of(body.entity).collect();
    let proposal = automap::propose(kind, body.entity, &existing, &fields);
    next.mappings.extend(proposal.added.iter().cloned());
    let answer = |c: &SyncConfig| {
        json!({
            "entity": body.entity,
            "added": proposal.added.iter().map(mapping_view).collect::<Vec<_>>(),
            "unmatched_app_fields": proposal.unmatched,
            "mappings": c.mappings_of(body.entity).map(mapping_view).collect::<Vec<_>>(),
        })
    };
    if next.mappings == prev.mappings {
        return http::json_versioned(StatusCode::OK, &answer(&prev), prev.version);
    }
    check(kind, &next, body.entity, fields, &by_id)?;
    let audit = call
        .audit_config("sync_config.auto_map", &next.id)
        .detail("entity", body.entity)
        .detail("added", proposal.added.len())
        .detail("replace", body.replace)
        .detail("version", next.version);
    save(call, &prev, &next, audit, false).await?;
    http::json_versioned(StatusCode::OK, &answer(&next), next.version)
}

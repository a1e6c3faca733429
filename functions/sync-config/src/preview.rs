//! `POST /v1/sync/configs/{id}/preview`: a dry run. Reads the first page of the CRM's
//! records of one entity (with the config's filters), maps a sample through the
//! config's mappings and transforms, and shows what a pull would write — writing
//! nothing, in the app or in the CRM. It also flags CRM fields a create needs that no
//! mapping pushes, and values that would not fit their app field.

use std::collections::BTreeMap;

use conduit::http::{self, ApiError};
use conduit::sync::config::{ConfigStatus, Filter, SyncConfig};
use conduit::sync::conflict::Direction;
use conduit::sync::crm::{CrmRecord, Cursor};
use conduit::sync::mapping::Mapper;
use conduit::sync::schema::{CrmField, Entity, FieldType};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::crm::{self, is_system};
use crate::mappings::describe;
use crate::validate::Problems;
use crate::{Call, ConfigCall};

/// The most records a preview shows.
pub const MAX_LIMIT: usize = 20;
/// Records shown by default.
pub const DEFAULT_LIMIT: usize = 5;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PreviewBody {
    entity: Entity,
    #[serde(default)]
    limit: Option<usize>,
}

/// `POST /v1/sync/configs/{id}/preview`.
pub async fn preview(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let body: PreviewBody = http::json_body(&call.req)?;
    let c = call.load().await?;
    let mut p = Problems::default();
    let limit = body.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        p.add("limit", format!("1 to {MAX_LIMIT}"));
    }
    if !c.entities.contains(&body.entity) {
        p.add(
            "entity",
            format!("the config does not sync {}", body.entity),
        );
    }
    p.check()?;
    let entity = body.entity;
    let (kind, fields) = describe(call, &c, entity).await?;
    let mapper = Mapper::new(c.mappings_of(entity));
    let read = mapper.crm_fields();
    let filters: Vec<&Filter> = c.filters_of(entity).collect();
    let mut client = crm::client(call, kind, &c.connection_id)?;
    let page = client
        .pull(entity, &Cursor::default(), &read, &filters)
        .await
        .map_err(crm::api_error)?;
    let pulled: Vec<&str> = c
        .mappings_of(entity)
        .filter(|m| matches!(m.direction, Direction::Pull | Direction::Bidirectional))
        .map(|m| m.app_field.as_str())
        .collect();
    let mut warnings = config_warnings(&c, entity, &fields);
    let mut records = Vec::new();
    for r in page.records.iter().take(limit) {
        let (shown, mut w) = record(r, &mapper, &read, &pulled, entity);
        records.push(shown);
        warnings.append(&mut w);
    }
    if records.is_empty() {
        warnings.push(if filters.is_empty() {
            format!("the CRM has no {entity}")
        } else {
            format!("no CRM {entity} match the config's filters")
        });
    }
    http::json(
        StatusCode::OK,
        &json!({
            "entity": entity,
            "records": records,
            "total": page.total,
            "unmapped_required": unmapped_required(&c, entity, &fields, kind),
            "warnings": warnings,
        }),
    )
}

/// One record: the CRM values read and the app values a pull would write.
fn record(
    r: &CrmRecord,
    mapper: &Mapper,
    read: &[String],
    pulled: &[&str],
    entity: Entity,
) -> (Value, Vec<String>) {
    let crm: BTreeMap<&str, &str> = read
        .iter()
        .filter_map(|f| r.values.get(f).map(|v| (f.as_str(), v.as_str())))
        .collect();
    let mut warnings = Vec::new();
    // A transform that passes its cap on this record fails it alone, as a run would.
    let app: BTreeMap<String, Option<String>> = match mapper.to_app(&r.values) {
        Ok(values) => values
            .into_iter()
            .filter(|(f, _)| pulled.contains(&f.as_str()))
            .collect(),
        Err(e) => {
            warnings.push(format!("CRM record {}: {e}", r.id));
            return (
                json!({ "crm_id": r.id, "crm": crm, "app": {}, "error": e.to_string() }),
                warnings,
            );
        }
    };
    for (field, value) in &app {
        if let (Some(v), Some(def)) = (value, entity.field(field))
            && let Some(why) = misfit(def.kind, v)
        {
            warnings.push(format!(
                "CRM record {}: app field {field} would get {:?}, {why}",
                r.id,
                v.chars().take(64).collect::<String>()
            ));
        }
    }
    (json!({ "crm_id": r.id, "crm": crm, "app": app }), warnings)
}

/// Why a value does not fit an app field of type `kind`, if it does not.
fn misfit(kind: FieldType, v: &str) -> Option<&'static str> {
    let ok = match kind {
        FieldType::Email => v
            .split_once('@')
            .is_some_and(|(a, d)| !a.is_empty() && d.contains('.')),
        FieldType::Number => v.trim().parse::<f64>().is_ok_and(f64::is_finite),
        FieldType::Boolean => matches!(v, "true" | "false"),
        FieldType::Date | FieldType::DateTime => {
            conduit::sync::crm::parse_time_ms(v).is_some()
                || (v.len() == 10 && v.as_bytes()[4] == b'-' && v.as_bytes()[7] == b'-')
        }
        _ => true,
    };
    (!ok).then_some(match kind {
        FieldType::Email => "which is not an email address",
        FieldType::Number => "which is not a number",
        FieldType::Boolean => "which is not true or false",
        _ => "which is not a date",
    })
}

/// Warnings about the config's mappings of `entity` as a whole.
fn config_warnings(c: &SyncConfig, entity: Entity, fields: &[CrmField]) -> Vec<String> {
    let mut w = Vec::new();
    if c.status == ConfigStatus::Paused {
        w.push("the config is paused: nothing runs until it is resumed".to_owned());
    }
    let mappings: Vec<_> = c.mappings_of(entity).collect();
    if mappings.iter().all(|m| m.direction == Direction::None) {
        w.push(format!(
            "no field of {entity} is mapped: a sync would copy nothing"
        ));
        return w;
    }
    // Deals have no key: they are matched only through links and the marker.
    if let Some(key) = entity.key_field() {
        let pulls_key = mappings.iter().any(|m| {
            m.app_field == key && matches!(m.direction, Direction::Pull | Direction::Bidirectional)
        });
        if c.direction.pulls() && !pulls_key {
            w.push(format!(
                "app field {key} is not pulled: CRM {entity} cannot be matched to existing app records"
            ));
        }
        let pushes_key = mappings.iter().any(|m| {
            m.app_field == key && matches!(m.direction, Direction::Push | Direction::Bidirectional)
        });
        if c.direction.pushes() && !pushes_key {
            w.push(format!(
                "app field {key} is not pushed: {entity} created in the CRM will lack it"
            ));
        }
    }
    for m in &mappings {
        if !fields.iter().any(|f| f.name == m.crm_field) {
            w.push(format!(
                "mapping {} names CRM field {:?}, which the CRM no longer has",
                m.id, m.crm_field
            ));
        }
    }
    w
}

/// CRM fields a create needs that no mapping pushes.
fn unmapped_required(
    c: &SyncConfig,
    entity: Entity,
    fields: &[CrmField],
    kind: conduit::sync::crm::CrmKind,
) -> Vec<Value> {
    fields
        .iter()
        .filter(|f| f.required && f.writable && !is_system(kind, entity, f))
        .filter(|f| {
            !c.mappings_of(entity).any(|m| {
                m.crm_field == f.name
                    && matches!(m.direction, Direction::Push | Direction::Bidirectional)
            })
        })
        .map(|f| json!({ "name": f.name, "label": f.label, "type": f.kind }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misfits_are_named() {
        assert_eq!(misfit(FieldType::Email, "a@b.test"), None);
        assert!(misfit(FieldType::Email, "nobody").is_some());
        assert!(misfit(FieldType::Number, "12x").is_some());
        assert_eq!(misfit(FieldType::Number, " 12.5 "), None);
        assert_eq!(misfit(FieldType::Date, "2001-02-03"), None);
        assert!(misfit(FieldType::Date, "yesterday").is_some());
        assert_eq!(misfit(FieldType::String, "anything"), None);
    }
}

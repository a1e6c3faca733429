//! Pipedrive: persons (contacts), organizations (companies) and deals, at the company domain
//! of the connection (`{api_domain}` = `https://{company}.pipedrive.com`; API tokens use
//! `api.pipedrive.com`). Records go through API v2 (`/api/v2/…`, RFC 3339 times, custom
//! fields under `custom_fields`); field definitions and deletions through API v1
//! (`/api/v1/…`), which v2 does not replace for them yet.
//!
//! - **Pull**: `GET /api/v2/{persons|organizations}?sort_by=update_time&sort_direction=asc`,
//!   500 a page (`limit`'s maximum), opaque `cursor` / `additional_data.next_cursor`
//!   (null on the last page). Incremental passes send `updated_since` (RFC 3339, whole
//!   seconds, inclusive: a record seen twice is harmless). The list takes no filters
//!   but a saved `filter_id`: a config's filters are applied to each page here, on the
//!   CRM's values (records filtered out still move the cursor). v2 has no field
//!   selectors: every field is read. 10 tokens a page.
//! - **Values**: persons' `emails` / `phones` arrays are read as `email` / `phone` (the
//!   primary entry's value) and written back into the array: the primary entry's value
//!   is replaced (the record is read first, 1 token, so other entries and labels stay),
//!   a new person gets one entry (Pipedrive labels it `work`), a cleared value drops the
//!   primary entry. Organizations' `address` object is read and written as its `value`
//!   (the full address). Custom fields appear under their 40-hex `key` (a
//!   [`CrmField`]'s name; its label is the field's name), typed on write by
//!   `field_type` (`double` a number, `monetary` `{value}`, `enum` an option id, `set`
//!   comma-separated option ids, the rest text). `label_ids`, `is_deleted` and nested
//!   objects are not read.
//! - **Find**: `GET /api/v2/{object}/search?term=…&fields=…&exact_match=true`, one term
//!   a call (20 tokens; search has its own burst limit of 10 calls per 2 s): `email`,
//!   `phone` and `name` by those fields, the marker and other custom fields by
//!   `custom_fields`. The answer's items are read as far as the searched field (the
//!   matching values only). Search compares without case.
//! - **Read**: `GET /api/v2/{object}?ids=…` (100 ids a call; deleted ids are left out).
//! - **Write**: v2 has no batch writes: `POST /api/v2/{object}` and
//!   `PATCH /api/v2/{object}/{id}` one record at a time, in order (the connection's one
//!   transport and Pipedrive's per-token burst window leave nothing to gain from
//!   concurrency); a 4xx refusal fails that record alone (v2's strict validation, a
//!   contact-sync-only member's 403), other failures the batch.
//! - **Marker**: a `varchar` custom field named "Conduit ID", created with
//!   `POST /api/v1/{personFields|organizationFields}` (scope `admin`; without it, or
//!   past the plan's custom-field cap, creates de-duplicate by email / organization
//!   name). Its hash key differs per company: describing the object finds it by name
//!   (the oldest, should two have been made at once) and shows it as the catalogue's
//!   `marker`; values are renamed both ways. Pipedrive has no unique fields, so creates
//!   de-duplicate themselves: after a batch's creates, one recents read (the changes
//!   since 10 s before its first create) finds every live record carrying one of the
//!   batch's app ids; of each app id's records the oldest wins and newer ones are
//!   deleted (an in-batch retry's or a concurrent delivery's twin), the oldest reported
//!   as existing when it is not this create's. A create in a redelivered message (an
//!   earlier attempt's worker may have stopped between a create and its link, or
//!   between a retried create and the batch's recents read) searches for its app id
//!   first — even in a full pass, whose index would show the oldest record and leave
//!   the twin — keeps the oldest, deletes newer twins, and is reported as existing if
//!   one was found. A search for app ids (a
//!   push looking for creates whose answer was lost) settles twins the same way. So a
//!   first delivery costs a request a record and a recents read a batch (20 tokens); a
//!   redelivery two requests a record, and searches have their own burst window (10 per
//!   2 s). The search index is immediate in the sandbox; in Pipedrive a lagging index
//!   can let a redelivery's duplicate through, which the next batch's recents read
//!   does not see once it is older than its window.
//! - **Organizations' key**: Pipedrive has no domain field; the key is `name` (what
//!   Pipedrive's own duplicate detection compares). Map the app's domain to a custom
//!   field to sync it.
//! - **Deletes**: `DELETE /api/v2/{object}/{id}` one at a time (a soft delete; 404 is
//!   already gone). The v1 bulk delete is deprecated and not used. Deletions are read
//!   from `GET /api/v1/recents?items=person|organization&since_timestamp=` (scope
//!   `recents:read`; `YYYY-MM-DD HH:MM:SS` UTC; `start`/`limit` 500 paging): the changes
//!   whose `data.active_flag` is false.
//! - **Errors**: `{"success":false,"error","error_info"}`; 403 `Scope and URL mismatch`
//!   is a missing scope (Pipedrive does not name it). Rate limits are token-based: a 429
//!   carries `Retry-After` (seconds to the burst window's next slot, or to midnight UTC
//!   when the company's daily token budget is spent, which the transport reports as
//!   exhausted); `x-daily-ratelimit-token-remaining` is kept as the usage report.
//!
//! - **Deals**: `/api/v2/deals` as persons (`title` is the name; the marker a
//!   `dealFields` custom field). The associations are `org_id` / `person_id` (integers
//!   on write, `null` clears). `stage_id` and `pipeline_id` are integers whose options
//!   (what a stage value map may write) describe reads from `GET /api/v2/stages` and
//!   `GET /api/v2/pipelines` (5 tokens each, once per description); an empty stage,
//!   pipeline or `value` is not written (v2 takes no null for them). Deleted deals are
//!   read from recents `items=deal` (v1 data `deleted: true`). Won/lost is the deal's
//!   `status`, a plain field. Not handled: products, participants (more than one
//!   person), archived deals, lost reasons.
//!
//! Not handled: v2 Fields API (2025-12), enum/set option labels (values are option
//! ids), persons' secondary emails and phones as fields, merging, the 30-day purge.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};

use super::passing;
use super::transport::{Target, Wire};
use super::{
    CrmClient, CrmError, CrmRecord, Cursor, Dialect, PullPage, WriteOutcome, WriteValues, clip,
    parse_time_ms, scalar_text,
};
use crate::sync::config::Filter;
use crate::sync::schema::{CrmField, Entity, FieldType};

/// Records per list page (the API's maximum).
const PAGE: usize = 500;
/// Ids one list takes.
const IDS_MAX: usize = 100;
/// Changes per recents page.
const RECENTS_PAGE: usize = 500;
/// Recents pages one deletion check reads at most.
const RECENTS_PAGES: usize = 200;
/// How long before a batch's first create its twin check looks (a concurrent delivery's
/// create of the same app record up to this much earlier is still seen).
const TWIN_WINDOW_MS: i64 = 10_000;
/// List pages a full pass's index of marked records reads at most (100,000 records).
const INDEX_PAGES: usize = 200;
/// The note kept when the object was too large to index.
const INDEX_NOTE: &str = "marked_index";
/// Recents pages one twin check reads at most.
const TWIN_PAGES: usize = 10;
/// Field-list pages one description reads at most.
const FIELD_PAGES: usize = 20;
/// The segment the API base (`…/api/v1`) and our paths share.
const ROOT: &str = "/api/";
/// The marker field's name in Pipedrive (its key is a per-company hash).
const MARKER_NAME: &str = "Conduit ID";
/// The note under which the marker's hash key is kept.
const MARKER_KEY: &str = "marker_key";
/// Fields whose writes need Pipedrive's contact sync (403 otherwise).
const CONTACT_SYNC: [&str; 6] = [
    "job_title",
    "notes",
    "im",
    "birthday",
    "postal_address",
    "ims",
];

/// The Pipedrive dialect.
#[derive(Debug)]
pub struct Pipedrive;

async fn call(
    c: &mut CrmClient<'_>,
    method: Method,
    path: &str,
    query: &[(&str, String)],
    body: Option<&Value>,
) -> Result<Value, CrmError> {
    let target = Target::Root { path, root: ROOT };
    c.call_to(method, target, query, body, &[]).await
}

fn v2(entity_object: &str, rest: &str) -> String {
    format!("/api/v2/{entity_object}{rest}")
}

fn fields_path(entity: Entity) -> &'static str {
    match entity {
        Entity::Contacts => "/api/v1/personFields",
        Entity::Companies => "/api/v1/organizationFields",
        Entity::Deals => "/api/v1/dealFields",
    }
}

/// The built-in fields a v2 write takes.
fn writable_builtin(entity: Entity, key: &str) -> bool {
    match entity {
        Entity::Contacts => matches!(
            key,
            "name"
                | "first_name"
                | "last_name"
                | "owner_id"
                | "org_id"
                | "email"
                | "phone"
                | "visible_to"
                | "marketing_status"
        ),
        Entity::Companies => matches!(key, "name" | "owner_id" | "address" | "visible_to"),
        Entity::Deals => matches!(
            key,
            "title"
                | "owner_id"
                | "person_id"
                | "org_id"
                | "pipeline_id"
                | "stage_id"
                | "value"
                | "currency"
                | "expected_close_date"
                | "visible_to"
        ),
    }
}

/// Whether a name is a custom field's key (40 hex digits).
fn is_custom_key(name: &str) -> bool {
    name.len() == 40 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// RFC 3339, UTC, whole seconds (v2 `updated_since`).
fn v2_time(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

/// v1's `YYYY-MM-DD HH:MM:SS` (UTC).
fn v1_time(ms: i64) -> String {
    v2_time(ms).trim_end_matches('Z').replace('T', " ")
}

/// Parses v1's `YYYY-MM-DD HH:MM:SS` (UTC) or an RFC 3339 time.
fn parse_any_time(text: &str) -> Option<i64> {
    let t = text.trim();
    if t.len() == 19 && t.as_bytes().get(10) == Some(&b' ') {
        return parse_time_ms(&format!("{}Z", t.replacen(' ', "T", 1)));
    }
    parse_time_ms(t)
}

impl Wire for Pipedrive {
    fn provider(&self) -> &'static str {
        "pipedrive"
    }

    fn usage_header(&self) -> Option<&'static str> {
        Some("x-daily-ratelimit-token-remaining")
    }

    fn refusal(&self, status: StatusCode, body: Option<&Value>, _text: &str) -> Option<CrmError> {
        let error = body?.get("error").and_then(Value::as_str)?;
        (status == StatusCode::FORBIDDEN && error.eq_ignore_ascii_case("Scope and URL mismatch"))
            .then(|| CrmError::ScopesMissing(Vec::new()))
    }

    fn error_message(&self, v: &Value) -> String {
        let error = v
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("request refused");
        match v.get("code").and_then(Value::as_str) {
            Some(code) => clip(&format!("{error} ({code})")),
            None => clip(error),
        }
    }
}

/// The text of a custom field's value (`monetary` and `address` objects by `value`,
/// `set` arrays comma-joined).
fn custom_text(v: &Value) -> Option<String> {
    match v {
        Value::Object(m) => m.get("value").and_then(scalar_text),
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().filter_map(scalar_text).collect();
            (!parts.is_empty()).then(|| parts.join(","))
        }
        other => scalar_text(other),
    }
}

/// The primary entry's value of a person's `emails` / `phones` (else the first's).
fn primary(v: &Value) -> Option<String> {
    let items = v.as_array()?;
    items
        .iter()
        .find(|e| e.get("primary").and_then(Value::as_bool) == Some(true))
        .or_else(|| items.first())
        .and_then(|e| e.get("value"))
        .and_then(scalar_text)
}

/// How a custom field is known outside: the marker as the catalogue's `marker`.
struct Names<'a> {
    marker_key: Option<&'a str>,
    marker: &'a str,
}

impl Names<'_> {
    fn outside<'k>(&'k self, key: &'k str) -> &'k str {
        if Some(key) == self.marker_key {
            self.marker
        } else {
            key
        }
    }
}

/// One v2 record as Conduit reads it.
fn record(row: &Value, names: &Names<'_>) -> Result<CrmRecord, CrmError> {
    let obj = row
        .as_object()
        .ok_or_else(|| CrmError::Malformed("record is not an object".into()))?;
    let id = obj
        .get("id")
        .and_then(scalar_text)
        .ok_or_else(|| CrmError::Malformed("record without id".into()))?;
    let mut values = BTreeMap::new();
    for (k, v) in obj {
        let text = match k.as_str() {
            "emails" => {
                if let Some(t) = primary(v) {
                    values.insert("email".to_owned(), t);
                }
                continue;
            }
            "phones" => {
                if let Some(t) = primary(v) {
                    values.insert("phone".to_owned(), t);
                }
                continue;
            }
            "custom_fields" => {
                for (key, cv) in v.as_object().into_iter().flatten() {
                    if let Some(t) = custom_text(cv) {
                        values.insert(names.outside(key).to_owned(), t);
                    }
                }
                continue;
            }
            "address" => v.get("value").and_then(scalar_text),
            "is_deleted" => None,
            _ => scalar_text(v),
        };
        if let Some(t) = text {
            values.insert(k.clone(), t);
        }
    }
    let modified_ms = values
        .get("update_time")
        .and_then(|t| parse_time_ms(t))
        .unwrap_or(0);
    Ok(CrmRecord {
        id,
        values,
        modified_ms,
    })
}

/// The records of a v2 list answer, and its next cursor.
fn page(v: &Value, names: &Names<'_>) -> Result<(Vec<CrmRecord>, Option<String>), CrmError> {
    let rows = match v.get("data") {
        Some(Value::Array(rows)) => rows.as_slice(),
        Some(Value::Null) => &[],
        _ => return Err(CrmError::Malformed("list answer without data".into())),
    };
    let records = rows
        .iter()
        .map(|r| record(r, names))
        .collect::<Result<_, _>>()?;
    let next = v
        .pointer("/additional_data/next_cursor")
        .and_then(Value::as_str)
        .filter(|c| !c.is_empty())
        .map(str::to_owned);
    Ok((records, next))
}

/// One field definition of a v1 field list.
#[derive(Debug, Clone, PartialEq)]
struct FieldDef {
    id: u64,
    key: String,
    name: String,
    field_type: String,
    custom: bool,
    mandatory: bool,
}

/// The definitions of one field-list page, and whether more follow.
fn field_defs(v: &Value) -> Result<(Vec<FieldDef>, bool), CrmError> {
    let rows = v
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| CrmError::Malformed("field list without data".into()))?;
    let defs = rows
        .iter()
        .filter_map(|f| {
            let key = f.get("key").and_then(Value::as_str)?;
            let flag = |k: &str| match f.get(k) {
                Some(Value::Bool(b)) => *b,
                Some(Value::Number(n)) => n.as_u64() == Some(1),
                _ => false,
            };
            Some(FieldDef {
                id: f.get("id").and_then(Value::as_u64).unwrap_or(u64::MAX),
                key: key.to_owned(),
                name: f
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or(key)
                    .to_owned(),
                field_type: f
                    .get("field_type")
                    .and_then(Value::as_str)
                    .unwrap_or("varchar")
                    .to_owned(),
                custom: flag("edit_flag") && is_custom_key(key),
                mandatory: flag("mandatory_flag"),
            })
        })
        .collect();
    let more = v
        .pointer("/additional_data/pagination/more_items_in_collection")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Ok((defs, more))
}

/// The marker field among the definitions: the oldest custom field named "Conduit ID".
fn marker_def(defs: &[FieldDef]) -> Option<&FieldDef> {
    defs.iter()
        .filter(|d| d.custom && d.name == MARKER_NAME)
        .min_by_key(|d| d.id)
}

/// Conduit's view of the definitions (the marker under `marker`, duplicates of it left
/// out).
fn crm_fields(entity: Entity, defs: &[FieldDef], marker: &str) -> Vec<CrmField> {
    let marker_id = marker_def(defs).map(|d| d.id);
    defs.iter()
        .filter(|d| !(d.custom && d.name == MARKER_NAME && Some(d.id) != marker_id))
        .map(|d| {
            let kind = match (d.key.as_str(), d.field_type.as_str()) {
                ("id", _) => FieldType::Id,
                ("email", _) => FieldType::Email,
                ("phone", _) | (_, "phone") => FieldType::Phone,
                ("add_time" | "update_time", _) => FieldType::DateTime,
                (_, "double" | "monetary" | "int") => FieldType::Number,
                (_, "date") => FieldType::Date,
                (_, "enum" | "set" | "visible_to") => FieldType::Enumeration,
                (_, "org" | "people" | "user") => FieldType::Id,
                _ => FieldType::String,
            };
            let writable = if d.custom {
                !matches!(d.field_type.as_str(), "varchar_auto")
            } else {
                writable_builtin(entity, &d.key) && !CONTACT_SYNC.contains(&d.key.as_str())
            };
            let is_marker = Some(d.id) == marker_id && d.custom;
            CrmField {
                name: if is_marker {
                    marker.to_owned()
                } else {
                    d.key.clone()
                },
                label: d.name.clone(),
                kind,
                provider_type: d.field_type.clone(),
                // A person's name can be built from first and last name.
                required: d.mandatory
                    && writable
                    && !(entity == Entity::Contacts && d.key == "name"),
                writable,
                options: Vec::new(),
            }
        })
        .collect()
}

/// The marker's hash key, when the object has the marker field.
async fn marker_key(c: &mut CrmClient<'_>, entity: Entity) -> Result<Option<String>, CrmError> {
    c.describe(entity).await?;
    Ok(c.noted(entity, MARKER_KEY).map(str::to_owned))
}

/// An integer member's value.
fn integer(field: &str, text: &str) -> Result<Value, String> {
    text.trim()
        .parse::<u64>()
        .map(Value::from)
        .map_err(|_| format!("{field} must be a whole number, not {}", clip(text)))
}

fn number(field: &str, text: &str) -> Result<Value, String> {
    let t = text.trim();
    t.parse::<i64>()
        .map(Value::from)
        .or_else(|_| t.parse::<f64>().map(Value::from))
        .map_err(|_| format!("{field} must be a number, not {}", clip(text)))
}

/// A custom field's v2 value, typed by its `field_type`.
fn custom_value(field: &str, field_type: &str, text: Option<&str>) -> Result<Value, String> {
    let Some(text) = text.filter(|t| !t.is_empty()) else {
        return Ok(Value::Null);
    };
    match field_type {
        "double" => number(field, text),
        "monetary" => Ok(json!({"value": number(field, text)?})),
        "enum" => integer(field, text),
        "set" => text
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(|p| integer(field, p))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array),
        _ => Ok(Value::String(text.to_owned())),
    }
}

/// A person's `emails` / `phones` with the primary entry's value set (or dropped).
fn with_primary(current: Option<&Value>, value: Option<&str>) -> Value {
    let mut items: Vec<Value> = current
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|e| {
                    let v = e.get("value").and_then(scalar_text)?;
                    let mut m = Map::new();
                    m.insert("value".into(), json!(v));
                    m.insert(
                        "primary".into(),
                        json!(e.get("primary").and_then(Value::as_bool).unwrap_or(false)),
                    );
                    if let Some(label) = e.get("label").and_then(Value::as_str) {
                        m.insert("label".into(), json!(label));
                    }
                    Some(Value::Object(m))
                })
                .collect()
        })
        .unwrap_or_default();
    let at = items
        .iter()
        .position(|e| e["primary"] == true)
        .or(if items.is_empty() { None } else { Some(0) });
    match (at, value.filter(|v| !v.trim().is_empty())) {
        (Some(i), Some(v)) => {
            items[i]["value"] = json!(v);
            items[i]["primary"] = json!(true);
        }
        (Some(i), None) => {
            items.remove(i);
            if let Some(first) = items.first_mut() {
                first["primary"] = json!(true);
            }
        }
        // Pipedrive labels a new entry `work`.
        (None, Some(v)) => items.push(json!({"value": v, "primary": true})),
        (None, None) => {}
    }
    Value::Array(items)
}

/// The v2 body of one write; `current` is the record as it stands (updates of a
/// person's email or phone).
fn body(
    entity: Entity,
    describe: &[CrmField],
    names: &Names<'_>,
    values: &WriteValues,
    current: Option<&Value>,
) -> Result<Value, String> {
    let mut out = Map::new();
    let mut custom = Map::new();
    for (field, value) in values {
        let text = value.as_deref();
        let present = text.filter(|t| !t.is_empty());
        if field == names.marker {
            let key = names
                .marker_key
                .ok_or("the marker field is missing from Pipedrive")?;
            custom.insert(key.to_owned(), present.map_or(Value::Null, |t| json!(t)));
            continue;
        }
        if is_custom_key(field) {
            let field_type = describe
                .iter()
                .find(|f| &f.name == field)
                .map(|f| f.provider_type.as_str())
                .ok_or_else(|| format!("custom field {field} is not on the object"))?;
            custom.insert(field.clone(), custom_value(field, field_type, present)?);
            continue;
        }
        let v = match (entity, field.as_str()) {
            (Entity::Contacts, "email") => {
                out.insert(
                    "emails".into(),
                    with_primary(current.and_then(|c| c.get("emails")), present),
                );
                continue;
            }
            (Entity::Contacts, "phone") => {
                out.insert(
                    "phones".into(),
                    with_primary(current.and_then(|c| c.get("phones")), present),
                );
                continue;
            }
            (Entity::Companies, "address") => present.map_or(Value::Null, |t| json!({"value": t})),
            (_, "owner_id" | "visible_to") => match present {
                Some(t) => integer(field, t)?,
                None => continue,
            },
            (Entity::Contacts, "org_id") | (Entity::Deals, "org_id" | "person_id") => match present
            {
                Some(t) => integer(field, t)?,
                None => Value::Null,
            },
            // A deal's stage and pipeline cannot be cleared, nor its value (v2 takes a
            // number only): an empty value leaves them as they are.
            (Entity::Deals, "stage_id" | "pipeline_id") => match present {
                Some(t) => integer(field, t)?,
                None => continue,
            },
            (Entity::Deals, "value") => match present {
                Some(t) => number(field, t)?,
                None => continue,
            },
            _ => match present {
                Some(t) => json!(t),
                None if field == "name" || field == "title" || field == "currency" => continue,
                None => Value::Null,
            },
        };
        out.insert(field.clone(), v);
    }
    if !custom.is_empty() {
        out.insert("custom_fields".into(), Value::Object(custom));
    }
    Ok(Value::Object(out))
}

/// The ids of search items whose searched field holds `value`, with the value held.
fn search_hits(v: &Value, field: &str, value: &str) -> Result<Vec<(String, String)>, CrmError> {
    let items = v
        .pointer("/data/items")
        .and_then(Value::as_array)
        .ok_or_else(|| CrmError::Malformed("search answer without items".into()))?;
    let same = |x: &Value| scalar_text(x).filter(|t| t.trim().eq_ignore_ascii_case(value.trim()));
    Ok(items
        .iter()
        .filter_map(|it| {
            let item = it.get("item")?;
            let id = item.get("id").and_then(scalar_text)?;
            let held = match field {
                "name" => item.get("name").and_then(same),
                "email" => item.get("emails")?.as_array()?.iter().find_map(same),
                "phone" => item.get("phones")?.as_array()?.iter().find_map(same),
                _ => item.get("custom_fields")?.as_array()?.iter().find_map(same),
            }?;
            Some((id, held))
        })
        .collect())
}

/// Searches `object` for records whose `field` (a search field) holds `value` exactly.
async fn search(
    c: &mut CrmClient<'_>,
    object: &str,
    field: &str,
    value: &str,
) -> Result<Vec<(String, String)>, CrmError> {
    let fields = match field {
        "name" | "email" | "phone" => field,
        _ => "custom_fields",
    };
    let v = call(
        c,
        Method::GET,
        &v2(object, "/search"),
        &[
            ("term", value.to_owned()),
            ("fields", fields.to_owned()),
            ("exact_match", "true".to_owned()),
            ("limit", "100".to_owned()),
        ],
        None,
    )
    .await?;
    search_hits(&v, field, value)
}

/// Of the records carrying one app id (search hits), keeps the oldest and deletes the
/// newer ones — twins of one app record, made when a worker stopped between a create
/// and its twin check — and returns what is left (the oldest first).
async fn keep_oldest(
    c: &mut CrmClient<'_>,
    object: &str,
    mut hits: Vec<(String, String)>,
) -> Result<Vec<(String, String)>, CrmError> {
    if hits.len() < 2 {
        return Ok(hits);
    }
    hits.sort_by_key(|(id, _)| id.parse::<u64>().unwrap_or(u64::MAX));
    for (id, _) in hits.split_off(1) {
        match call(c, Method::DELETE, &v2(object, &format!("/{id}")), &[], None).await {
            Ok(_) | Err(CrmError::Rejected { status: 404, .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(hits)
}

/// The oldest record carrying `app_id` in the marker field; newer twins are deleted.
async fn oldest_marked(
    c: &mut CrmClient<'_>,
    object: &str,
    app_id: &str,
) -> Result<Option<u64>, CrmError> {
    let hits = search(c, object, "custom_fields", app_id).await?;
    let kept = keep_oldest(c, object, hits).await?;
    Ok(kept.first().and_then(|(id, _)| id.parse::<u64>().ok()))
}

/// Builds the index of the records carrying each app id for a full pass (every record
/// listed once per client, 500 a page; the oldest record of an app id wins). False when
/// the object holds more than `INDEX_PAGES` pages: creates search instead.
async fn index_marked(
    c: &mut CrmClient<'_>,
    entity: Entity,
    names: &Names<'_>,
) -> Result<bool, CrmError> {
    if c.marked(entity).is_some() {
        return Ok(true);
    }
    if c.noted(entity, INDEX_NOTE).is_some() {
        return Ok(false);
    }
    let object = c.kind().object(entity);
    let mut index: BTreeMap<String, String> = BTreeMap::new();
    let mut cursor: Option<String> = None;
    for _ in 0..INDEX_PAGES {
        let mut query = vec![("limit", PAGE.to_string())];
        if let Some(at) = cursor.take() {
            query.push(("cursor", at));
        }
        let v = call(c, Method::GET, &v2(object, ""), &query, None).await?;
        let (records, next) = page(&v, names)?;
        for r in records {
            let (Some(app_id), Ok(id)) = (r.values.get(names.marker), r.id.parse::<u64>()) else {
                continue;
            };
            let older = index
                .get(app_id)
                .and_then(|held| held.parse::<u64>().ok())
                .is_some_and(|held| held < id);
            if !older {
                index.insert(app_id.clone(), r.id);
            }
        }
        match next {
            Some(n) => cursor = Some(n),
            None => {
                c.keep_marked(entity, index);
                return Ok(true);
            }
        }
    }
    c.note(entity, INDEX_NOTE, "too many records to index".into());
    Ok(false)
}

/// The ids of the live items of a v2 list of stages or pipelines (every page).
async fn option_ids(c: &mut CrmClient<'_>, path: &str) -> Result<Vec<String>, CrmError> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..FIELD_PAGES {
        let mut query = vec![("limit", PAGE.to_string())];
        if let Some(at) = cursor.take() {
            query.push(("cursor", at));
        }
        let v = call(c, Method::GET, path, &query, None).await?;
        let rows = v
            .get("data")
            .and_then(Value::as_array)
            .ok_or_else(|| CrmError::Malformed(format!("{path} answer without data")))?;
        out.extend(
            rows.iter()
                .filter(|r| r.get("is_deleted").and_then(Value::as_bool) != Some(true))
                .filter_map(|r| r.get("id").and_then(scalar_text)),
        );
        match v
            .pointer("/additional_data/next_cursor")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            Some(n) => cursor = Some(n.to_owned()),
            None => break,
        }
    }
    Ok(out)
}

/// Whether a recents change (v1 data) shows its record deleted: persons and
/// organizations by `active_flag`, deals by `deleted`.
fn gone(data: &Value) -> bool {
    data.get("active_flag").and_then(Value::as_bool) == Some(false)
        || data.get("deleted").and_then(Value::as_bool) == Some(true)
}

/// The v1 recents `item` of an entity.
fn recents_item(entity: Entity) -> &'static str {
    match entity {
        Entity::Contacts => "person",
        Entity::Companies => "organization",
        Entity::Deals => "deal",
    }
}

/// The changes to `entity`'s records at or after `from_ms` (whole seconds), oldest
/// first, as `(id, v1 data)`: at most `max_pages` pages of 500; whether more remained.
async fn recent_changes(
    c: &mut CrmClient<'_>,
    entity: Entity,
    from_ms: i64,
    max_pages: usize,
) -> Result<(Vec<(String, Value)>, bool), CrmError> {
    let item = recents_item(entity);
    let mut out = Vec::new();
    let mut start = 0usize;
    for _ in 0..max_pages {
        let query = [
            ("since_timestamp", v1_time(from_ms)),
            ("items", item.to_owned()),
            ("start", start.to_string()),
            ("limit", RECENTS_PAGE.to_string()),
        ];
        let mut v = call(c, Method::GET, "/api/v1/recents", &query, None).await?;
        let rows = match v.get_mut("data").map(Value::take) {
            Some(Value::Array(rows)) => rows,
            Some(Value::Null) | None if v.get("success") == Some(&Value::Bool(true)) => Vec::new(),
            _ => return Err(CrmError::Malformed("recents answer without data".into())),
        };
        out.extend(rows.into_iter().filter_map(|mut r| {
            if r.get("item").and_then(Value::as_str) != Some(item) {
                return None;
            }
            let data = r.get_mut("data").map(Value::take)?;
            let id = r
                .get("id")
                .or_else(|| data.get("id"))
                .and_then(scalar_text)?;
            Some((id, data))
        }));
        let pagination = v.pointer("/additional_data/pagination");
        let more = pagination
            .and_then(|p| p.get("more_items_in_collection"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if !more {
            return Ok((out, false));
        }
        start = pagination
            .and_then(|p| p.get("next_start"))
            .and_then(Value::as_u64)
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(start + RECENTS_PAGE);
    }
    Ok((out, true))
}

/// Of recent changes, the live records carrying one of `app_ids` in the marker field
/// (`marker_key`, flat in v1 data), by app id.
fn marked_among(
    changes: &[(String, Value)],
    marker_key: &str,
    app_ids: &BTreeSet<&str>,
) -> BTreeMap<String, BTreeSet<u64>> {
    let mut out: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for (id, data) in changes {
        if gone(data) {
            continue;
        }
        let Some(app_id) = data.get(marker_key).and_then(custom_text) else {
            continue;
        };
        if let (true, Ok(id)) = (app_ids.contains(app_id.as_str()), id.parse::<u64>()) {
            out.entry(app_id).or_default().insert(id);
        }
    }
    out
}

/// Settles the creates of one batch against twins: the records carrying the same app
/// id that Pipedrive shows changed since just before the batch (one recents read for
/// the batch). Of each app id's records the oldest wins and every newer one is deleted
/// — this create's, or a concurrent delivery's; the oldest is reported as existing
/// when it is not this create's.
async fn settle_creates(
    c: &mut CrmClient<'_>,
    entity: Entity,
    marker_key: &str,
    from_ms: i64,
    created: &[(usize, String, u64)],
    out: &mut [WriteOutcome],
) -> Result<(), CrmError> {
    if created.is_empty() {
        return Ok(());
    }
    let object = c.kind().object(entity);
    let app_ids: BTreeSet<&str> = created.iter().map(|(_, a, _)| a.as_str()).collect();
    let (changes, cut) = recent_changes(c, entity, from_ms, TWIN_PAGES).await?;
    if cut {
        tracing::warn!(
            pages = TWIN_PAGES,
            "pipedrive: more changes since the batch began than one twin check reads"
        );
    }
    let mut marked = marked_among(&changes, marker_key, &app_ids);
    for (at, app_id, mine) in created {
        let twins = marked.entry(app_id.clone()).or_default();
        twins.insert(*mine); // not in the changes yet, or already there
        let Some(&oldest) = twins.first() else {
            continue;
        };
        for id in twins.iter().skip(1) {
            match call(c, Method::DELETE, &v2(object, &format!("/{id}")), &[], None).await {
                Ok(_) | Err(CrmError::Rejected { status: 404, .. }) => {}
                Err(e) => return Err(e),
            }
        }
        twins.retain(|id| *id == oldest);
        if oldest != *mine
            && let Some(slot) = out.get_mut(*at)
        {
            *slot = WriteOutcome::Exists(Some(oldest.to_string()));
        }
    }
    Ok(())
}

#[async_trait]
impl Dialect for Pipedrive {
    async fn describe(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
    ) -> Result<Vec<CrmField>, CrmError> {
        let mut defs = Vec::new();
        for n in 0..FIELD_PAGES {
            let query = [
                ("start", (n * PAGE).to_string()),
                ("limit", PAGE.to_string()),
            ];
            let v = call(c, Method::GET, fields_path(entity), &query, None).await?;
            let (page, more) = field_defs(&v)?;
            defs.extend(page);
            if !more {
                break;
            }
        }
        if let Some(m) = marker_def(&defs) {
            c.note(entity, MARKER_KEY, m.key.clone());
        }
        let mut fields = crm_fields(entity, &defs, c.kind().marker());
        if entity == Entity::Deals {
            // A deal's stage and pipeline are ids: their options (what a value map may
            // write) are the company's stages and pipelines.
            for (key, path) in [
                ("stage_id", "/api/v2/stages"),
                ("pipeline_id", "/api/v2/pipelines"),
            ] {
                let ids = option_ids(c, path).await?;
                if let Some(f) = fields.iter_mut().find(|f| f.name == key) {
                    f.kind = FieldType::Enumeration;
                    f.options = ids;
                }
            }
        }
        Ok(fields)
    }

    async fn ensure_marker(&self, c: &mut CrmClient<'_>, entity: Entity) -> Result<bool, CrmError> {
        if c.describes_marker(entity).await? {
            return Ok(true);
        }
        let creds = c.credentials().await?;
        // API tokens carry their user's rights (an admin's may create fields). Pipedrive
        // answers the granted scopes comma-separated (connections stored before they
        // were split still hold them so).
        let granted = creds.connection.token.is_none()
            || creds
                .connection
                .scopes
                .iter()
                .flat_map(|s| s.split([',', ' ']))
                .any(|s| s.trim() == "admin");
        c.keep_credentials(creds);
        if !granted {
            return Ok(false);
        }
        let field =
            json!({"name": MARKER_NAME, "field_type": "varchar", "add_visible_flag": false});
        match call(c, Method::POST, fields_path(entity), &[], Some(&field)).await {
            Ok(_) => {
                c.forget_description(entity);
                c.describes_marker(entity).await
            }
            // Not an admin, or the plan's custom-field cap.
            Err(CrmError::ScopesMissing(_) | CrmError::Rejected { status: 403, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn pull(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
        cursor: &Cursor,
        _fields: &[String],
        filters: &[&Filter],
    ) -> Result<PullPage, CrmError> {
        let key = marker_key(c, entity).await?;
        let names = Names {
            marker_key: key.as_deref(),
            marker: c.kind().marker(),
        };
        let object = c.kind().object(entity);
        let mut query = vec![
            ("limit", PAGE.to_string()),
            ("sort_by", "update_time".to_owned()),
            ("sort_direction", "asc".to_owned()),
        ];
        if let Some(since) = cursor.since_ms {
            query.push(("updated_since", v2_time(since)));
        }
        if let Some(page) = &cursor.page {
            query.push(("cursor", page.clone()));
        }
        let v = call(c, Method::GET, &v2(object, ""), &query, None).await?;
        let (read, next_page) = page(&v, &names)?;
        let next = cursor.after(&read, next_page);
        let kept = passing(read, filters);
        Ok(PullPage::new(kept, next, None))
    }

    async fn read(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
        ids: &[String],
        _fields: &[String],
    ) -> Result<Vec<CrmRecord>, CrmError> {
        let key = marker_key(c, entity).await?;
        let names = Names {
            marker_key: key.as_deref(),
            marker: c.kind().marker(),
        };
        let object = c.kind().object(entity);
        let mut out = Vec::with_capacity(ids.len());
        // Pipedrive ids are integers: anything else cannot be one of its records.
        let ids: Vec<&String> = ids.iter().filter(|i| i.parse::<u64>().is_ok()).collect();
        for chunk in ids.chunks(IDS_MAX) {
            let list: Vec<&str> = chunk.iter().map(|s| s.as_str()).collect();
            let query = [("ids", list.join(",")), ("limit", IDS_MAX.to_string())];
            let v = call(c, Method::GET, &v2(object, ""), &query, None).await?;
            out.extend(page(&v, &names)?.0);
        }
        Ok(out)
    }

    fn find_chunk(&self) -> usize {
        25
    }

    async fn find_by(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
        field: &str,
        values: &[String],
    ) -> Result<Vec<CrmRecord>, CrmError> {
        let object = c.kind().object(entity);
        let searched = if field == c.kind().marker() {
            if marker_key(c, entity).await?.is_none() {
                return Ok(Vec::new());
            }
            "custom_fields"
        } else {
            match (entity, field) {
                (_, "name") | (Entity::Contacts, "email" | "phone") => field,
                (_, f) if is_custom_key(f) => "custom_fields",
                _ => {
                    return Err(CrmError::refused(format!(
                        "Pipedrive cannot search {object} by {field}"
                    )));
                }
            }
        };
        let marker = field == c.kind().marker();
        let mut out = Vec::new();
        for value in values.iter().filter(|v| !v.trim().is_empty()) {
            let mut hits = search(c, object, searched, value).await?;
            if marker {
                hits = keep_oldest(c, object, hits).await?;
            }
            for (id, held) in hits {
                out.push(CrmRecord {
                    id,
                    values: BTreeMap::from([(field.to_owned(), held)]),
                    modified_ms: 0,
                });
            }
        }
        Ok(out)
    }

    async fn write(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
        inputs: &[WriteValues],
        ids: Option<&[String]>,
    ) -> Result<Vec<WriteOutcome>, CrmError> {
        let describe = c.describe(entity).await?;
        let key = marker_key(c, entity).await?;
        let marker = c.kind().marker();
        let names = Names {
            marker_key: key.as_deref(),
            marker,
        };
        let object = c.kind().object(entity);
        let mut out = Vec::with_capacity(inputs.len());
        // Twins are looked for among the changes since a little before the first create.
        let batch_from = crate::domain::now().unix_timestamp() * 1000 - TWIN_WINDOW_MS;
        let mut created: Vec<(usize, String, u64)> = Vec::new();
        for (i, values) in inputs.iter().enumerate() {
            let id = ids.and_then(|ids| ids.get(i));
            if ids.is_some() && id.is_none() {
                out.push(WriteOutcome::Failed("no CRM id to update".into()));
                continue;
            }
            // A person's emails and phones are lists: an update changes the primary
            // entry of the list as it stands.
            let current = match id {
                Some(id)
                    if entity == Entity::Contacts
                        && (values.contains_key("email") || values.contains_key("phone")) =>
                {
                    match call(c, Method::GET, &v2(object, &format!("/{id}")), &[], None).await {
                        Ok(v) => v.get("data").cloned(),
                        Err(CrmError::Rejected { message, .. }) => {
                            out.push(WriteOutcome::Failed(message));
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                }
                _ => None,
            };
            let payload = match body(entity, &describe, &names, values, current.as_ref()) {
                Ok(b) => b,
                Err(message) => {
                    out.push(WriteOutcome::Failed(message));
                    continue;
                }
            };
            let app_id = values
                .get(marker)
                .cloned()
                .flatten()
                .filter(|_| key.is_some());
            // A record already carrying the app id is linked, not made again: one an
            // earlier config made (a full pass looks in its index) or an earlier
            // delivery of this work (its worker stopped between the create and the
            // link, perhaps between a retried create and its twin check: a redelivered
            // message searches, which also deletes such twins). Incremental first
            // deliveries save the lookup.
            if let (None, Some(app_id)) = (id, &app_id) {
                let indexed =
                    !c.redelivered() && c.full_pass() && index_marked(c, entity, &names).await?;
                let found = if indexed {
                    c.marked(entity).and_then(|m| m.get(app_id)).cloned()
                } else if c.full_pass() || c.redelivered() {
                    oldest_marked(c, object, app_id)
                        .await?
                        .map(|id| id.to_string())
                } else {
                    None
                };
                if let Some(found) = found {
                    out.push(WriteOutcome::Exists(Some(found)));
                    continue;
                }
            }
            let sent = match id {
                Some(id) => {
                    let path = v2(object, &format!("/{id}"));
                    call(c, Method::PATCH, &path, &[], Some(&payload)).await
                }
                None => call(c, Method::POST, &v2(object, ""), &[], Some(&payload)).await,
            };
            let written = match sent {
                Ok(v) => v.pointer("/data/id").and_then(scalar_text),
                Err(CrmError::Rejected { message, .. }) => {
                    out.push(WriteOutcome::Failed(message));
                    continue;
                }
                Err(e) => return Err(e),
            };
            let Some(written) = written else {
                return Err(CrmError::Malformed("write answer without an id".into()));
            };
            if let (None, Some(app_id), Ok(mine)) = (id, app_id, written.parse::<u64>()) {
                created.push((out.len(), app_id, mine));
            }
            out.push(WriteOutcome::Done(written));
        }
        if let Some(key) = &key {
            settle_creates(c, entity, key, batch_from, &created, &mut out).await?;
        }
        Ok(out)
    }

    async fn delete(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
        ids: &[String],
    ) -> Result<(), CrmError> {
        let object = c.kind().object(entity);
        for id in ids {
            if id.parse::<u64>().is_err() {
                continue; // not a Pipedrive id: nothing to delete
            }
            match call(c, Method::DELETE, &v2(object, &format!("/{id}")), &[], None).await {
                Ok(_) | Err(CrmError::Rejected { status: 404, .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn deleted_since(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
        since_ms: i64,
    ) -> Result<Vec<(String, i64)>, CrmError> {
        let from = since_ms.div_euclid(1000) * 1000;
        let (changes, _) = recent_changes(c, entity, from, RECENTS_PAGES).await?;
        Ok(changes
            .into_iter()
            .filter_map(|(id, data)| {
                if !gone(&data) {
                    return None;
                }
                let at = data
                    .get("update_time")
                    .and_then(Value::as_str)
                    .and_then(parse_any_time)?;
                (at >= from).then_some((id, at))
            })
            .collect())
    }

    fn subscribes(&self) -> bool {
        true
    }

    /// `POST /api/v1/webhooks` (scope `admin`): a version 2.0 webhook of every action
    /// on the entity's object, with HTTP basic credentials Conduit made.
    async fn subscribe(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
        url: &str,
        auth: (&str, &str),
    ) -> Result<String, CrmError> {
        let body = json!({
            "subscription_url": url,
            "event_action": "*",
            "event_object": recents_item(entity),
            "http_auth_user": auth.0,
            "http_auth_password": auth.1,
            "version": "2.0",
        });
        let v = call(c, Method::POST, "/api/v1/webhooks", &[], Some(&body)).await?;
        v.pointer("/data/id")
            .and_then(|id| id.as_u64().map(|n| n.to_string()))
            .ok_or_else(|| CrmError::Malformed("a created webhook without its id".into()))
    }

    /// `GET /api/v1/webhooks`: the company's webhooks of this user.
    async fn live_subscriptions(
        &self,
        c: &mut CrmClient<'_>,
    ) -> Result<Option<std::collections::BTreeSet<String>>, CrmError> {
        let v = call(c, Method::GET, "/api/v1/webhooks", &[], None).await?;
        let hooks = v
            .get("data")
            .and_then(Value::as_array)
            .ok_or_else(|| CrmError::Malformed("a webhook list without data".into()))?;
        Ok(Some(
            hooks
                .iter()
                .filter_map(|h| h.get("id").and_then(Value::as_u64).map(|n| n.to_string()))
                .collect(),
        ))
    }

    async fn unsubscribe(&self, c: &mut CrmClient<'_>, id: &str) -> Result<(), CrmError> {
        let id: u64 = id
            .parse()
            .map_err(|_| CrmError::Internal(format!("webhook id {id:?} is not a number")))?;
        let path = format!("/api/v1/webhooks/{id}");
        super::removed(call(c, Method::DELETE, &path, &[], None).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names<'a>(key: Option<&'a str>) -> Names<'a> {
        Names {
            marker_key: key,
            marker: "conduit_id",
        }
    }

    const KEY: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn times_are_written_as_each_api_reads_them() {
        let ms = parse_time_ms("2024-01-15T09:00:00.750Z").unwrap();
        assert_eq!(v2_time(ms), "2024-01-15T09:00:00Z");
        assert_eq!(v1_time(ms), "2024-01-15 09:00:00");
        assert_eq!(parse_any_time("2024-01-15 09:00:00"), Some(ms - 750));
        assert_eq!(parse_any_time("2024-01-15T09:00:00Z"), Some(ms - 750));
        assert!(is_custom_key(KEY));
        assert!(!is_custom_key("email"));
    }

    #[test]
    fn records_are_flattened_and_the_marker_renamed() {
        let row = json!({"id": 7, "name": "Ada Lovelace", "first_name": "Ada",
            "last_name": "Lovelace", "org_id": null, "owner_id": 1, "is_deleted": false,
            "update_time": "2024-01-15T09:00:00Z", "label_ids": [1],
            "emails": [{"value": "a@home.test", "primary": false, "label": "home"},
                {"value": "a@work.test", "primary": true, "label": "work"}],
            "phones": [{"value": "+1 555", "primary": false, "label": "work"}],
            "custom_fields": {KEY: "rec_1", "ffffffffffffffffffffffffffffffffffffffff":
                {"value": 12, "currency": "EUR"}}});
        let r = record(&row, &names(Some(KEY))).unwrap();
        assert_eq!(r.id, "7");
        assert_eq!(r.values["email"], "a@work.test");
        assert_eq!(r.values["phone"], "+1 555");
        assert_eq!(r.values["conduit_id"], "rec_1");
        assert_eq!(r.values["ffffffffffffffffffffffffffffffffffffffff"], "12");
        assert!(!r.values.contains_key("org_id"));
        assert!(!r.values.contains_key("is_deleted"));
        assert!(!r.values.contains_key("label_ids"));
        assert!(r.modified_ms > 0);
        let org = json!({"id": 3, "name": "Acme", "address": {"value": "Lyon, France"}});
        assert_eq!(
            record(&org, &names(None)).unwrap().values["address"],
            "Lyon, France"
        );
        assert!(record(&json!([1]), &names(None)).is_err());
        let (rows, next) = page(
            &json!({"data": [org], "additional_data": {"next_cursor": "abc"}}),
            &names(None),
        )
        .unwrap();
        assert_eq!((rows.len(), next.as_deref()), (1, Some("abc")));
        assert!(page(&json!({"success": true}), &names(None)).is_err());
    }

    #[test]
    fn fields_show_the_oldest_marker_under_the_catalogue_name() {
        let v = json!({"data": [
            {"id": 1, "key": "name", "name": "Name", "field_type": "varchar", "edit_flag": false, "mandatory_flag": true},
            {"id": 2, "key": "email", "name": "Email", "field_type": "varchar", "edit_flag": false},
            {"id": 3, "key": "update_time", "name": "Update time", "field_type": "date", "edit_flag": false},
            {"id": 9, "key": "ffffffffffffffffffffffffffffffffffffffff", "name": MARKER_NAME, "field_type": "varchar", "edit_flag": true},
            {"id": 8, "key": KEY, "name": MARKER_NAME, "field_type": "varchar", "edit_flag": true},
            {"id": 10, "key": "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee", "name": "Size", "field_type": "double", "edit_flag": true},
        ], "additional_data": {"pagination": {"more_items_in_collection": false}}});
        let (defs, more) = field_defs(&v).unwrap();
        assert!(!more);
        assert_eq!(marker_def(&defs).map(|d| d.key.as_str()), Some(KEY));
        let fields = crm_fields(Entity::Contacts, &defs, "conduit_id");
        let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "name",
                "email",
                "update_time",
                "conduit_id",
                "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"
            ]
        );
        assert_eq!(fields[1].kind, FieldType::Email);
        assert_eq!(fields[2].kind, FieldType::DateTime);
        assert!(!fields[2].writable);
        assert!(!fields[0].required, "first and last name can build a name");
        assert_eq!(fields[3].label, MARKER_NAME);
        assert_eq!(fields[4].kind, FieldType::Number);
        let orgs = crm_fields(Entity::Companies, &defs, "conduit_id");
        assert!(orgs[0].required);
        assert!(field_defs(&json!({"success": false})).is_err());
    }

    #[test]
    fn bodies_are_typed_and_lists_keep_their_other_entries() {
        let describe = vec![CrmField {
            name: "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee".into(),
            label: "Size".into(),
            kind: FieldType::Number,
            provider_type: "double".into(),
            required: false,
            writable: true,
            options: vec![],
        }];
        let values: WriteValues = [
            ("first_name", Some("Ada")),
            ("email", Some("new@work.test")),
            ("phone", None),
            ("conduit_id", Some("rec_1")),
            ("eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee", Some("12.5")),
            ("org_id", None),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.map(str::to_owned)))
        .collect();
        let current = json!({
            "emails": [{"value": "a@home.test", "primary": false, "label": "home"},
                {"value": "a@work.test", "primary": true, "label": "work"}],
            "phones": [{"value": "+1 555", "primary": true, "label": "mobile"},
                {"value": "+1 556", "primary": false, "label": "work"}]});
        let b = body(
            Entity::Contacts,
            &describe,
            &names(Some(KEY)),
            &values,
            Some(&current),
        )
        .unwrap();
        assert_eq!(b["first_name"], "Ada");
        assert_eq!(
            b["emails"],
            json!([{"value": "a@home.test", "primary": false, "label": "home"},
                {"value": "new@work.test", "primary": true, "label": "work"}])
        );
        assert_eq!(
            b["phones"],
            json!([{"value": "+1 556", "primary": true, "label": "work"}])
        );
        assert_eq!(b["custom_fields"][KEY], "rec_1");
        assert_eq!(
            b["custom_fields"]["eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"],
            12.5
        );
        assert_eq!(b["org_id"], Value::Null);
        let created = body(Entity::Contacts, &describe, &names(None), &values, None);
        assert!(created.is_err(), "no marker field to write the app id to");
        let org: WriteValues = [("address".to_owned(), Some("Lyon".to_owned()))].into();
        assert_eq!(
            body(Entity::Companies, &[], &names(None), &org, None).unwrap(),
            json!({"address": {"value": "Lyon"}})
        );
        let bad: WriteValues = [("owner_id".to_owned(), Some("me".to_owned()))].into();
        assert!(body(Entity::Companies, &[], &names(None), &bad, None).is_err());
        assert_eq!(
            custom_value("f", "set", Some("1,2")).unwrap(),
            json!([1, 2])
        );
        assert_eq!(custom_value("f", "varchar", Some("")).unwrap(), Value::Null);
    }

    #[test]
    fn search_items_match_the_searched_value_only() {
        let v = json!({"data": {"items": [
            {"result_score": 1.0, "item": {"id": 4, "name": "Ada", "emails": ["ADA@x.test", "b@x.test"],
                "phones": [], "custom_fields": ["rec_1"]}},
            {"result_score": 1.0, "item": {"id": 5, "name": "Bob", "emails": ["bob@x.test"],
                "custom_fields": []}}]}});
        assert_eq!(
            search_hits(&v, "email", "ada@x.test").unwrap(),
            [("4".to_owned(), "ADA@x.test".to_owned())]
        );
        assert_eq!(
            search_hits(&v, "custom_fields", "rec_1").unwrap(),
            [("4".to_owned(), "rec_1".to_owned())]
        );
        assert_eq!(search_hits(&v, "name", "bob").unwrap().len(), 1);
        assert!(search_hits(&json!({"data": null}), "name", "x").is_err());
    }

    #[test]
    fn twins_are_the_live_records_carrying_a_batch_app_id() {
        let key = "abc0123456789abc0123456789abc0123456789a";
        let changes = vec![
            (
                "7".to_owned(),
                json!({"id": 7, key: "rec_1", "active_flag": true}),
            ),
            (
                "3".to_owned(),
                json!({"id": 3, key: "rec_1", "active_flag": true}),
            ),
            (
                "4".to_owned(),
                json!({"id": 4, key: "rec_1", "active_flag": false}),
            ),
            (
                "5".to_owned(),
                json!({"id": 5, key: "rec_2", "active_flag": true}),
            ),
            (
                "6".to_owned(),
                json!({"id": 6, key: null, "active_flag": true}),
            ),
            ("x".to_owned(), json!({key: "rec_1"})),
        ];
        let wanted: BTreeSet<&str> = BTreeSet::from(["rec_1", "rec_9"]);
        let marked = marked_among(&changes, key, &wanted);
        assert_eq!(marked.len(), 1);
        assert_eq!(
            marked["rec_1"].iter().copied().collect::<Vec<_>>(),
            vec![3, 7]
        );
    }

    #[test]
    fn deal_bodies_write_ids_as_integers_and_skip_what_cannot_be_cleared() {
        let values: WriteValues = [
            ("title", Some("Big deal")),
            ("org_id", Some("3")),
            ("person_id", None),
            ("stage_id", Some("2")),
            ("pipeline_id", None),
            ("value", Some("1000.5")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.map(str::to_owned)))
        .collect();
        let b = body(Entity::Deals, &[], &names(None), &values, None).unwrap();
        assert_eq!(
            b,
            json!({"title": "Big deal", "org_id": 3, "person_id": null, "stage_id": 2, "value": 1000.5})
        );
        let mut named = values.clone();
        named.insert("stage_id".into(), Some("won".into()));
        let refused = body(Entity::Deals, &[], &names(None), &named, None).unwrap_err();
        assert!(refused.contains("won"), "{refused}");
        let deleted = json!({"id": 4, "deleted": true, "active": false});
        assert!(gone(&deleted) && !gone(&json!({"id": 5, "active_flag": true})));
    }

    #[test]
    fn refusals_are_classified() {
        let scope = json!({"success": false, "error": "Scope and URL mismatch", "errorCode": 403});
        assert!(matches!(
            Pipedrive.refusal(StatusCode::FORBIDDEN, Some(&scope), ""),
            Some(CrmError::ScopesMissing(_))
        ));
        let sync_only = json!({"success": false,
            "error": "Field 'job_title' can only be used when contact sync is enabled for the company"});
        assert!(
            Pipedrive
                .refusal(StatusCode::FORBIDDEN, Some(&sync_only), "")
                .is_none()
        );
        let capped = json!({"success": false, "error": "Custom fields limit reached.",
            "code": "feature_capping_custom_fields_limit"});
        assert_eq!(
            Pipedrive.error_message(&capped),
            "Custom fields limit reached. (feature_capping_custom_fields_limit)"
        );
    }
}

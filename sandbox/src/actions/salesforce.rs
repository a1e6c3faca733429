//! Salesforce REST actions under `{instance}/services/data/vNN.N`: `Task`, `Case` and
//! classic `Note` create, `Task`/`Case` upsert by the external-id field `Conduit_Key__c`,
//! and SOQL lookups on those three objects (`Contact` and `Account` stay with
//! `providers::salesforce_crm`).
//!
//! Auth: a session the sandbox's Salesforce OAuth issued, used at the user's instance,
//! with `api` or `full` (401 `INVALID_SESSION_ID`); each call counts against the org's
//! daily allowance (403 `REQUEST_LIMIT_EXCEEDED`). Errors are Salesforce's arrays
//! `[{"message","errorCode","fields"}]`: unknown fields `INVALID_FIELD`, restricted
//! picklists, malformed ids, lengths, required fields.

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::{Ctx, Outcome, RouteDef, def, type_name};
use crate::oauth::AccessGrant;
use crate::providers::ProviderRequest;
use crate::providers::salesforce as host;
use crate::providers::salesforce_crm::{self, make_id, sf_datetime};
use crate::wire;

pub(crate) const ROUTES: &[RouteDef] = &[
    def(
        Method::POST,
        "/sobjects/Task",
        "salesforce.task_create",
        create_task,
    ),
    def(
        Method::POST,
        "/sobjects/Case",
        "salesforce.case_create",
        create_case,
    ),
    def(
        Method::POST,
        "/sobjects/Note",
        "salesforce.note_create",
        create_note,
    ),
    def(
        Method::PATCH,
        "/sobjects/Task/{}/{}",
        "salesforce.task_upsert",
        upsert_task,
    ),
    def(
        Method::PATCH,
        "/sobjects/Case/{}/{}",
        "salesforce.case_upsert",
        upsert_case,
    ),
    def(Method::GET, "/query", "salesforce.action_query", query),
];

/// The external-id field the sandbox's Task and Case carry (a tenant's admin adds one).
pub const EXTERNAL_ID_FIELD: &str = "Conduit_Key__c";

/// Objects whose SOQL the actions answer.
const OBJECTS: [&str; 3] = ["Task", "Case", "Note"];

/// The path under `/services/data/vNN.N`; `/query` only for the objects served here.
pub(crate) fn api_path(req: &ProviderRequest) -> Option<String> {
    let rest = req.path.strip_prefix("/services/data/v")?;
    let (version, rest) = rest.split_once('/')?;
    if !version.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let rest = format!("/{}", rest.trim_end_matches('/'));
    if rest == "/query" {
        let q = wire::query_param(req.query.as_deref(), "q")?;
        let object = from_object(&q)?;
        if !OBJECTS.iter().any(|o| o.eq_ignore_ascii_case(&object)) {
            return None;
        }
    }
    Some(rest)
}

/// The object after `FROM` in a SOQL text.
fn from_object(q: &str) -> Option<String> {
    let mut words = q.split_whitespace();
    words.find(|w| w.eq_ignore_ascii_case("from"))?;
    words.next().map(str::to_owned)
}

/// The session's grant, checked like every REST call, counted against the allowance.
fn authorize(ctx: &Ctx<'_>) -> Result<Box<AccessGrant>, Response> {
    match host::session(ctx.state, ctx.req) {
        Some(grant) if grant.user.instance_host == ctx.req.host => {
            if !host::rest_allowed(&grant) {
                return Err(host::not_for_rest());
            }
            salesforce_crm::count_api_call(ctx.state, &grant.user.org_id)?;
            Ok(grant)
        }
        _ => Err(host::invalid_session()),
    }
}

/// Salesforce's error array with one entry.
pub(crate) fn error(status: StatusCode, code: &str, message: &str, fields: &[&str]) -> Response {
    wire::json(
        status,
        json!([{"message": message, "errorCode": code, "fields": fields}]),
    )
}

/// The throttle answer: the org's daily allowance is spent.
pub(crate) fn limit_exceeded() -> Response {
    error(
        StatusCode::FORBIDDEN,
        "REQUEST_LIMIT_EXCEEDED",
        "TotalRequests Limit exceeded.",
        &[],
    )
}

/// A field's type and rule.
#[derive(Clone, Copy)]
enum Kind {
    Text(usize),
    Picklist(&'static [&'static str]),
    Date,
    Int,
    Bool,
    /// An id whose 3-character prefix is one of these.
    Id(&'static [&'static str]),
}

struct Schema {
    object: &'static str,
    prefix: &'static str,
    fields: &'static [(&'static str, Kind)],
    required: &'static [&'static str],
    defaults: &'static [(&'static str, &'static str)],
    /// Fields that can be set on create only.
    create_only: &'static [&'static str],
}

const TASK: Schema = Schema {
    object: "Task",
    prefix: "00T",
    fields: &[
        ("Subject", Kind::Text(255)),
        ("Description", Kind::Text(32_000)),
        (
            "TaskSubtype",
            Kind::Picklist(&["Task", "Email", "ListEmail", "Cadence", "Call"]),
        ),
        (
            "Status",
            Kind::Picklist(&[
                "Not Started",
                "In Progress",
                "Completed",
                "Waiting on someone else",
                "Deferred",
            ]),
        ),
        ("Priority", Kind::Picklist(&["High", "Normal", "Low"])),
        ("ActivityDate", Kind::Date),
        (
            "CallType",
            Kind::Picklist(&["Inbound", "Outbound", "Internal"]),
        ),
        ("CallDurationInSeconds", Kind::Int),
        ("CallObject", Kind::Text(255)),
        ("CallDisposition", Kind::Text(255)),
        ("WhoId", Kind::Id(&["003", "00Q"])),
        ("WhatId", Kind::Id(&["001", "006", "500"])),
        ("OwnerId", Kind::Id(&["005"])),
        ("IsReminderSet", Kind::Bool),
        (EXTERNAL_ID_FIELD, Kind::Text(255)),
    ],
    required: &[],
    defaults: &[("Status", "Not Started"), ("Priority", "Normal")],
    create_only: &["TaskSubtype"],
};

const CASE: Schema = Schema {
    object: "Case",
    prefix: "500",
    fields: &[
        ("Subject", Kind::Text(255)),
        ("Description", Kind::Text(32_000)),
        ("Origin", Kind::Picklist(&["Phone", "Email", "Web"])),
        (
            "Status",
            Kind::Picklist(&["New", "Working", "Escalated", "Closed"]),
        ),
        ("Priority", Kind::Picklist(&["High", "Medium", "Low"])),
        ("Reason", Kind::Text(255)),
        ("Type", Kind::Text(255)),
        ("ContactId", Kind::Id(&["003"])),
        ("AccountId", Kind::Id(&["001"])),
        ("SuppliedName", Kind::Text(80)),
        ("SuppliedEmail", Kind::Text(80)),
        ("SuppliedPhone", Kind::Text(40)),
        ("SuppliedCompany", Kind::Text(80)),
        ("Comments", Kind::Text(4000)),
        ("OwnerId", Kind::Id(&["005", "00G"])),
        (EXTERNAL_ID_FIELD, Kind::Text(255)),
    ],
    required: &[],
    defaults: &[("Status", "New"), ("Priority", "Medium")],
    create_only: &[
        "SuppliedName",
        "SuppliedEmail",
        "SuppliedPhone",
        "SuppliedCompany",
    ],
};

const NOTE: Schema = Schema {
    object: "Note",
    prefix: "002",
    fields: &[
        ("ParentId", Kind::Id(&["003", "001", "006", "500", "00Q"])),
        ("Title", Kind::Text(80)),
        ("Body", Kind::Text(32_000)),
        ("IsPrivate", Kind::Bool),
        ("OwnerId", Kind::Id(&["005"])),
    ],
    required: &["ParentId", "Title"],
    defaults: &[],
    create_only: &[],
};

fn check_field(name: &str, kind: Kind, value: &Value) -> Result<(), Response> {
    let bad_type = || {
        error(
            StatusCode::BAD_REQUEST,
            "JSON_PARSER_ERROR",
            &format!(
                "Cannot deserialize instance of {name} from {} value",
                type_name(value)
            ),
            &[],
        )
    };
    if value.is_null() {
        return Ok(());
    }
    match kind {
        Kind::Text(max) => {
            let Some(text) = value.as_str() else {
                return Err(bad_type());
            };
            if text.chars().count() > max {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "STRING_TOO_LONG",
                    &format!(
                        "{name}: data value too large: {}... (max length={max})",
                        text.chars().take(20).collect::<String>()
                    ),
                    &[name],
                ));
            }
        }
        Kind::Picklist(values) => {
            let Some(text) = value.as_str() else {
                return Err(bad_type());
            };
            if !values.contains(&text) {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    &format!("{name}: bad value for restricted picklist field: {text}"),
                    &[name],
                ));
            }
        }
        Kind::Date => {
            let ok = value
                .as_str()
                .is_some_and(|d| crate::clock::parse_date(d).is_some());
            if !ok {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "JSON_PARSER_ERROR",
                    &format!(
                        "Cannot deserialize value of type `Date` from String for field {name}: expected format yyyy-MM-dd"
                    ),
                    &[name],
                ));
            }
        }
        Kind::Int if !value.is_i64() => return Err(bad_type()),
        Kind::Bool if !value.is_boolean() => return Err(bad_type()),
        Kind::Int | Kind::Bool => {}
        Kind::Id(prefixes) => {
            let text = value.as_str().unwrap_or("");
            let valid = salesforce_crm::normalize_id(text)
                .is_some_and(|id| prefixes.iter().any(|p| id.starts_with(p)));
            if !valid {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "MALFORMED_ID",
                    &format!("{name}: id value of incorrect type: {text}"),
                    &[name],
                ));
            }
        }
    }
    Ok(())
}

/// Checks a create (or, with `update`, an upsert's update) body against `schema`.
fn validate(schema: &Schema, map: &Map<String, Value>, update: bool) -> Result<(), Response> {
    for (name, value) in map {
        let Some((_, kind)) = schema.fields.iter().find(|(f, _)| f == name) else {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "INVALID_FIELD",
                &format!(
                    "No such column '{name}' on sobject of type {}",
                    schema.object
                ),
                &[],
            ));
        };
        if update && schema.create_only.contains(&name.as_str()) {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                &format!(
                    "Unable to create/update fields: {name}. Please check the security settings of this field and verify that it is read/write for your profile or permission set."
                ),
                &[name],
            ));
        }
        check_field(name, *kind, value)?;
    }
    let missing: Vec<&str> = schema
        .required
        .iter()
        .copied()
        .filter(|f| {
            map.get(*f)
                .is_none_or(|v| v.is_null() || v.as_str().is_some_and(str::is_empty))
        })
        .collect();
    if !missing.is_empty() && !update {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "REQUIRED_FIELD_MISSING",
            &format!("Required fields are missing: [{}]", missing.join(", ")),
            &missing,
        ));
    }
    Ok(())
}

fn body_object(ctx: &Ctx<'_>) -> Result<Map<String, Value>, Response> {
    match ctx.json() {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(error(
            StatusCode::BAD_REQUEST,
            "JSON_PARSER_ERROR",
            "The request body is not a JSON object",
            &[],
        )),
    }
}

fn insert_record(
    ctx: &Ctx<'_>,
    schema: &Schema,
    map: Map<String, Value>,
    grant: &AccessGrant,
) -> Value {
    let seq = ctx.next_number(schema.object, 1);
    let id = make_id(schema.prefix, seq);
    let now = sf_datetime(crate::clock::now_ms());
    let mut record = map;
    for (field, value) in schema.defaults {
        record.entry(*field).or_insert(json!(value));
    }
    record.insert("Id".into(), json!(id));
    record.insert("OwnerId".into(), json!(grant.user.user_id));
    record.insert("CreatedDate".into(), json!(now));
    record.insert("LastModifiedDate".into(), json!(now));
    record.insert("IsDeleted".into(), json!(false));
    if schema.object == "Case" {
        record.insert("CaseNumber".into(), json!(format!("{:08}", 1000 + seq)));
    }
    let record = Value::Object(record);
    ctx.insert(schema.object, &id, &record);
    record
}

fn create(ctx: &Ctx<'_>, schema: &Schema) -> Outcome {
    let grant = match authorize(ctx) {
        Ok(grant) => grant,
        Err(response) => return response.into(),
    };
    let map = match body_object(ctx) {
        Ok(map) => map,
        Err(response) => return response.into(),
    };
    if let Err(response) = validate(schema, &map, false) {
        return response.into();
    }
    if let Some(key) = map.get(EXTERNAL_ID_FIELD).and_then(Value::as_str)
        && ctx
            .list(schema.object)
            .iter()
            .any(|r| r[EXTERNAL_ID_FIELD] == key)
    {
        return error(
            StatusCode::BAD_REQUEST,
            "DUPLICATE_VALUE",
            &format!(
                "duplicate value found: {EXTERNAL_ID_FIELD} duplicates value on record with id: …"
            ),
            &[EXTERNAL_ID_FIELD],
        )
        .into();
    }
    let record = insert_record(ctx, schema, map, &grant);
    let answer = json!({"id": record["Id"], "success": true, "errors": []});
    Outcome::created(wire::json(StatusCode::CREATED, answer), record)
}

fn create_task(ctx: &Ctx<'_>) -> Outcome {
    create(ctx, &TASK)
}

fn create_case(ctx: &Ctx<'_>) -> Outcome {
    create(ctx, &CASE)
}

fn create_note(ctx: &Ctx<'_>) -> Outcome {
    create(ctx, &NOTE)
}

fn upsert(ctx: &Ctx<'_>, schema: &Schema) -> Outcome {
    let grant = match authorize(ctx) {
        Ok(grant) => grant,
        Err(response) => return response.into(),
    };
    let field = ctx.param(0).to_owned();
    let key = ctx.param(1).to_owned();
    if field != EXTERNAL_ID_FIELD {
        return error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("Provided external ID field does not exist or is not accessible: {field}"),
            &[],
        )
        .into();
    }
    let mut map = match body_object(ctx) {
        Ok(map) => map,
        Err(response) => return response.into(),
    };
    if map
        .get(&field)
        .is_some_and(|v| v.as_str() != Some(key.as_str()))
    {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_FIELD",
            &format!(
                "The value of the external ID field in the body does not match the URL: {field}"
            ),
            &[&field],
        )
        .into();
    }
    let existing = ctx
        .list(schema.object)
        .into_iter()
        .filter(|r| r[EXTERNAL_ID_FIELD] == key.as_str())
        .collect::<Vec<_>>();
    match existing.as_slice() {
        [] => {
            if let Err(response) = validate(schema, &map, false) {
                return response.into();
            }
            map.insert(field, json!(key));
            let record = insert_record(ctx, schema, map, &grant);
            let answer =
                json!({"id": record["Id"], "success": true, "errors": [], "created": true});
            Outcome::created(wire::json(StatusCode::CREATED, answer), record)
        }
        [found] => {
            if let Err(response) = validate(schema, &map, true) {
                return response.into();
            }
            let mut record = found.clone();
            let id = record["Id"].as_str().unwrap_or_default().to_owned();
            if let Some(fields) = record.as_object_mut() {
                fields.extend(map);
                fields.insert(
                    "LastModifiedDate".into(),
                    json!(sf_datetime(crate::clock::now_ms())),
                );
            }
            ctx.replace(schema.object, &id, &record);
            let answer = json!({"id": id, "success": true, "errors": [], "created": false});
            wire::json(StatusCode::OK, answer).into()
        }
        many => {
            let urls: Vec<String> = many
                .iter()
                .map(|r| {
                    format!(
                        "/services/data/v60.0/sobjects/{}/{}",
                        schema.object,
                        r["Id"].as_str().unwrap_or("")
                    )
                })
                .collect();
            wire::json(StatusCode::MULTIPLE_CHOICES, json!(urls)).into()
        }
    }
}

fn upsert_task(ctx: &Ctx<'_>) -> Outcome {
    upsert(ctx, &TASK)
}

fn upsert_case(ctx: &Ctx<'_>) -> Outcome {
    upsert(ctx, &CASE)
}

/// One `WHERE` condition of the SOQL subset.
enum Cond {
    Eq(String, String),
    LastNDays(i64),
}

fn malformed(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, "MALFORMED_QUERY", message, &[])
}

/// A string literal starting at `text` (after the opening quote): its value and the rest.
fn literal(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => value.push(chars.next()?.1),
            '\'' => return Some((value, &text[i + 1..])),
            c => value.push(c),
        }
    }
    None
}

/// Parses `SELECT f, … FROM Obj [WHERE c AND …] [ORDER BY CreatedDate [ASC|DESC]] [LIMIT n]`.
#[allow(clippy::type_complexity)]
fn parse_soql(q: &str) -> Result<(Vec<String>, String, Vec<Cond>, bool, Option<usize>), String> {
    let q = q.trim();
    let upper = q.to_ascii_uppercase();
    let rest = upper
        .strip_prefix("SELECT ")
        .map(|_| &q[7..])
        .ok_or("unexpected token: expected SELECT")?;
    let from_at = rest
        .to_ascii_uppercase()
        .find(" FROM ")
        .ok_or("expecting FROM")?;
    let fields: Vec<String> = rest[..from_at]
        .split(',')
        .map(|f| f.trim().to_owned())
        .collect();
    let mut rest = rest[from_at + 6..].trim_start();
    let object: String = rest.split_whitespace().next().unwrap_or("").to_owned();
    rest = rest[object.len()..].trim_start();
    let mut conds = Vec::new();
    let mut desc = false;
    let mut limit = None;
    if rest.to_ascii_uppercase().starts_with("WHERE ") {
        rest = rest[6..].trim_start();
        loop {
            let (field, after) = rest.split_once('=').ok_or("expecting a comparison")?;
            let field = field.trim().to_owned();
            let after = after.trim_start();
            if let Some(quoted) = after.strip_prefix('\'') {
                let (value, tail) = literal(quoted).ok_or("unterminated string literal")?;
                conds.push(Cond::Eq(field, value));
                rest = tail.trim_start();
            } else {
                let token: String = after.split_whitespace().next().unwrap_or("").to_owned();
                let days = token
                    .strip_prefix("LAST_N_DAYS:")
                    .and_then(|n| n.parse::<i64>().ok())
                    .filter(|_| field.eq_ignore_ascii_case("CreatedDate"))
                    .ok_or_else(|| format!("unexpected token: {token}"))?;
                conds.push(Cond::LastNDays(days));
                rest = after[token.len()..].trim_start();
            }
            if rest.to_ascii_uppercase().starts_with("AND ") {
                rest = rest[4..].trim_start();
            } else {
                break;
            }
        }
    }
    if rest
        .to_ascii_uppercase()
        .starts_with("ORDER BY CREATEDDATE")
    {
        rest = rest[20..].trim_start();
        if rest.to_ascii_uppercase().starts_with("DESC") {
            desc = true;
            rest = rest[4..].trim_start();
        } else if rest.to_ascii_uppercase().starts_with("ASC") {
            rest = rest[3..].trim_start();
        }
    }
    if rest.to_ascii_uppercase().starts_with("LIMIT ") {
        let n = rest[6..].trim();
        limit = Some(
            n.parse::<usize>()
                .map_err(|_| format!("unexpected token: {n}"))?,
        );
        rest = "";
    }
    if !rest.is_empty() {
        return Err(format!(
            "unexpected token: {}",
            rest.split_whitespace().next().unwrap_or("")
        ));
    }
    Ok((fields, object, conds, desc, limit))
}

fn query(ctx: &Ctx<'_>) -> Outcome {
    if let Err(response) = authorize(ctx) {
        return response.into();
    }
    let q = ctx.query("q").unwrap_or_default();
    let (fields, object, conds, desc, limit) = match parse_soql(&q) {
        Ok(parsed) => parsed,
        Err(message) => return malformed(&message).into(),
    };
    let schema = [&TASK, &CASE, &NOTE]
        .into_iter()
        .find(|schema| schema.object.eq_ignore_ascii_case(&object))
        .unwrap_or(&NOTE);
    let known =
        |f: &str| f == "Id" || f == "CreatedDate" || schema.fields.iter().any(|(n, _)| *n == f);
    for field in fields.iter().chain(conds.iter().filter_map(|c| match c {
        Cond::Eq(f, _) => Some(f),
        Cond::LastNDays(_) => None,
    })) {
        if !known(field) {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_FIELD",
                &format!("No such column '{field}' on entity '{object}'."),
                &[],
            )
            .into();
        }
    }
    let now = crate::clock::now_ms();
    let mut records: Vec<Value> = ctx
        .list(schema.object)
        .into_iter()
        .filter(|r| {
            conds.iter().all(|c| match c {
                Cond::Eq(f, v) => r[f.as_str()].as_str() == Some(v.as_str()),
                Cond::LastNDays(n) => {
                    let created = r["CreatedDate"]
                        .as_str()
                        .and_then(crate::clock::parse_datetime)
                        .unwrap_or(0);
                    created >= now - (n + 1) * crate::clock::DAY_MS
                }
            })
        })
        .collect();
    if desc {
        records.reverse();
    }
    if let Some(limit) = limit {
        records.truncate(limit);
    }
    let rows: Vec<Value> = records
        .iter()
        .map(|r| {
            let id = r["Id"].as_str().unwrap_or_default();
            let mut row = Map::new();
            row.insert("attributes".into(), json!({"type": schema.object, "url": format!("/services/data/v60.0/sobjects/{}/{id}", schema.object)}));
            for field in &fields {
                row.insert(field.clone(), r.get(field.as_str()).cloned().unwrap_or(Value::Null));
            }
            Value::Object(row)
        })
        .collect();
    wire::json(
        StatusCode::OK,
        json!({"totalSize": rows.len(), "done": true, "records": rows}),
    )
    .into()
}

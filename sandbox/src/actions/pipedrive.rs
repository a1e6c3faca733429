//! Pipedrive v1 actions on `api.pipedrive.com/v1` or `{company}.pipedrive.com/api/v1`:
//! activities (create, list), notes (create, list) and persons (search, create).
//!
//! Auth: the API token (`?api_token=` or `x-api-token`, every scope) or an OAuth bearer
//! of the company → 401 "unauthorized access". Scopes: activities need
//! `activities:full` (reads `activities:read` too), notes on a person and persons
//! `contacts:full` (reads `contacts:read`) → 403 "Scope and URL mismatch". Errors:
//! `{"success":false,"error",…}`; a note's person must exist (404 "Person not found").

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::{Ctx, Outcome, RouteDef, def, str_field};
use crate::oauth::{self, AccessCheck, OAuthProvider};
use crate::providers::ProviderRequest;
use crate::providers::pipedrive::{self as host, error_body};
use crate::wire;

pub(crate) const ROUTES: &[RouteDef] = &[
    def(
        Method::POST,
        "/activities",
        "pipedrive.activity_create",
        create_activity,
    ),
    def(
        Method::GET,
        "/activities",
        "pipedrive.activities_list",
        list_activities,
    ),
    def(Method::POST, "/notes", "pipedrive.note_create", create_note),
    def(Method::GET, "/notes", "pipedrive.notes_list", list_notes),
    def(
        Method::GET,
        "/persons/search",
        "pipedrive.persons_search",
        search_persons,
    ),
    def(
        Method::POST,
        "/persons",
        "pipedrive.person_create",
        create_person,
    ),
];

const ACTIVITIES: &str = "activities";
const NOTES: &str = "notes";
const PERSONS: &str = "persons";

/// Activity types every company has.
const TYPES: [&str; 6] = ["call", "meeting", "task", "deadline", "email", "lunch"];

/// The path under `/v1` (or `/api/v1`) on an API host.
pub(crate) fn api_path(req: &ProviderRequest) -> Option<String> {
    if !host::is_api_host(&req.host) {
        return None;
    }
    let path = req.path.strip_prefix("/api").unwrap_or(&req.path);
    path.strip_prefix("/v1").map(str::to_owned)
}

fn authorize(ctx: &Ctx<'_>, any_of: &[&str]) -> Result<(), Response> {
    if let Some(token) = wire::bearer_token(&ctx.req.headers) {
        return match oauth::bearer_access(ctx.state, OAuthProvider::Pipedrive, Some(token)) {
            AccessCheck::Granted(grant)
                if host::company_of(&ctx.req.host)
                    .is_none_or(|c| c == grant.user.company_domain) =>
            {
                let wanted: Vec<String> = any_of.iter().map(|s| (*s).to_owned()).collect();
                if oauth::scopes_satisfy(&grant.scopes, &wanted) {
                    Ok(())
                } else {
                    Err(host::scope_mismatch())
                }
            }
            _ => Err(host::unauthorized()),
        };
    }
    host::authenticate(ctx.state, ctx.req)
        .map(|_| ())
        .ok_or_else(host::unauthorized)
}

fn bad(message: &str) -> Response {
    error_body(StatusCode::BAD_REQUEST, message)
}

fn body(ctx: &Ctx<'_>) -> Result<Map<String, Value>, Response> {
    match ctx.json() {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(bad("Invalid JSON in the request body")),
    }
}

fn success(status: StatusCode, data: Value) -> Response {
    wire::json(
        status,
        json!({"success": true, "data": data, "additional_data": {}}),
    )
}

fn matches_pattern(text: &str, pattern: &str) -> bool {
    text.len() == pattern.len()
        && text.bytes().zip(pattern.bytes()).all(|(t, p)| match p {
            b'9' => t.is_ascii_digit(),
            other => t == other,
        })
}

/// A `person_id`, when given, is an integer naming a person that exists.
fn check_person(ctx: &Ctx<'_>, map: &Map<String, Value>) -> Result<(), Response> {
    match person_id(map)? {
        Some(id) if ctx.find(PERSONS, &id).is_none() => {
            Err(error_body(StatusCode::NOT_FOUND, "Person not found"))
        }
        _ => Ok(()),
    }
}

fn person_id(map: &Map<String, Value>) -> Result<Option<String>, Response> {
    match map.get("person_id") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.is_u64() => Ok(Some(n.to_string())),
        Some(_) => Err(bad("person_id must be an integer")),
    }
}

fn create_activity(ctx: &Ctx<'_>) -> Outcome {
    if let Err(response) = authorize(ctx, &["activities:full"]) {
        return response.into();
    }
    let map = match body(ctx) {
        Ok(map) => map,
        Err(response) => return response.into(),
    };
    let kind = map
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("call")
        .to_owned();
    if !TYPES.contains(&kind.as_str()) {
        return bad(&format!("Activity type '{kind}' does not exist")).into();
    }
    for (field, pattern) in [
        ("due_date", "9999-99-99"),
        ("due_time", "99:99"),
        ("duration", "99:99"),
    ] {
        if let Some(value) = map.get(field)
            && !value.as_str().is_some_and(|v| matches_pattern(v, pattern))
        {
            return bad(&format!(
                "Invalid {field}: expected {}",
                pattern.replace('9', "N")
            ))
            .into();
        }
    }
    if map
        .get("due_date")
        .and_then(Value::as_str)
        .is_some_and(|d| crate::clock::parse_date(d).is_none())
    {
        return bad("Invalid due_date").into();
    }
    if let Err(response) = check_person(ctx, &map) {
        return response.into();
    }
    let done = match map.get("done") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n <= 1) => n.as_u64() == Some(1),
        Some(_) => return bad("done must be 0 or 1").into(),
    };
    let id = ctx.next_number("activity", 1);
    let now = super::now_rfc3339().replace('T', " ");
    let mut record = map;
    record.insert("id".into(), json!(id));
    record.insert("type".into(), json!(kind));
    record.insert("done".into(), json!(done));
    record
        .entry("subject")
        .or_insert(json!(if kind == "call" { "Call" } else { "Activity" }));
    record.insert("user_id".into(), json!(10_000_001));
    record.insert("add_time".into(), json!(now.get(..19).unwrap_or(&now)));
    let record = Value::Object(record);
    ctx.insert(ACTIVITIES, &id.to_string(), &record);
    Outcome::created(success(StatusCode::CREATED, record.clone()), record)
}

fn list_activities(ctx: &Ctx<'_>) -> Outcome {
    if let Err(response) = authorize(ctx, &["activities:read", "activities:full"]) {
        return response.into();
    }
    let kind = ctx.query("type");
    let start = ctx.query("start_date");
    let end = ctx.query("end_date");
    let rows: Vec<Value> = ctx
        .list(ACTIVITIES)
        .into_iter()
        .filter(|a| {
            kind.as_deref()
                .is_none_or(|k| k.split(',').any(|k| a["type"] == k))
        })
        .filter(|a| {
            let due = a["due_date"].as_str().unwrap_or("");
            start.as_deref().is_none_or(|s| due >= s) && end.as_deref().is_none_or(|e| due <= e)
        })
        .collect();
    list_answer(rows)
}

fn list_answer(rows: Vec<Value>) -> Outcome {
    let data = if rows.is_empty() {
        Value::Null
    } else {
        Value::Array(rows)
    };
    wire::json(
        StatusCode::OK,
        json!({"success": true, "data": data,
            "additional_data": {"pagination": {"start": 0, "limit": 100, "more_items_in_collection": false}}}),
    )
    .into()
}

fn create_note(ctx: &Ctx<'_>) -> Outcome {
    if let Err(response) = authorize(ctx, &["contacts:full", "deals:full"]) {
        return response.into();
    }
    let map = match body(ctx) {
        Ok(map) => map,
        Err(response) => return response.into(),
    };
    if str_field(&Value::Object(map.clone()), "content").is_none() {
        return bad("Note content is required.").into();
    }
    let parents = ["deal_id", "person_id", "org_id", "lead_id", "project_id"];
    if !parents
        .iter()
        .any(|p| map.get(*p).is_some_and(|v| !v.is_null()))
    {
        return bad("Either deal_id, person_id, org_id, lead_id or project_id must be given")
            .into();
    }
    if let Err(response) = check_person(ctx, &map) {
        return response.into();
    }
    let id = ctx.next_number("note", 1);
    let mut record = map;
    record.insert("id".into(), json!(id));
    record.insert("user_id".into(), json!(10_000_001));
    record.insert("active_flag".into(), json!(true));
    record.insert(
        "add_time".into(),
        json!(
            super::now_rfc3339()
                .replace('T', " ")
                .get(..19)
                .unwrap_or("")
        ),
    );
    let record = Value::Object(record);
    ctx.insert(NOTES, &id.to_string(), &record);
    Outcome::created(success(StatusCode::CREATED, record.clone()), record)
}

fn list_notes(ctx: &Ctx<'_>) -> Outcome {
    if let Err(response) = authorize(
        ctx,
        &["contacts:read", "contacts:full", "deals:read", "deals:full"],
    ) {
        return response.into();
    }
    let person = ctx.query("person_id");
    let limit = ctx
        .query("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(100);
    let mut rows: Vec<Value> = ctx
        .list(NOTES)
        .into_iter()
        .filter(|n| {
            person
                .as_deref()
                .is_none_or(|p| super::id_matches(&n["person_id"], p))
        })
        .collect();
    match ctx.query("sort").as_deref() {
        None | Some("add_time ASC" | "add_time") => {}
        Some("add_time DESC") => rows.reverse(),
        Some(other) => return bad(&format!("Invalid sort field: {other}")).into(),
    }
    rows.truncate(limit);
    list_answer(rows)
}

fn search_persons(ctx: &Ctx<'_>) -> Outcome {
    if let Err(response) = authorize(ctx, &["contacts:read", "contacts:full", "search:read"]) {
        return response.into();
    }
    let term = ctx.query("term").unwrap_or_default();
    let exact = ctx.query("exact_match").as_deref() == Some("true");
    if term.chars().count() < if exact { 1 } else { 2 } {
        return bad("The search term must be at least 2 characters long").into();
    }
    let fields = ctx
        .query("fields")
        .unwrap_or_else(|| "email,phone,name".to_owned());
    let term_lower = term.to_lowercase();
    let hit = |value: &str| {
        let value = value.to_lowercase();
        if exact {
            value == term_lower
        } else {
            value.contains(&term_lower)
        }
    };
    let items: Vec<Value> = ctx
        .list(PERSONS)
        .into_iter()
        .filter(|p| {
            fields.split(',').any(|field| match field.trim() {
                "name" => p["name"].as_str().is_some_and(hit),
                f @ ("email" | "phone") => p[f].as_array().is_some_and(|list| {
                    list.iter().any(|e| e["value"].as_str().is_some_and(hit))
                }),
                _ => false,
            })
        })
        .map(|p| json!({"result_score": 1.0, "item": {"id": p["id"], "type": "person", "name": p["name"],
            "emails": p["email"].as_array().map(|l| l.iter().map(|e| e["value"].clone()).collect::<Vec<_>>()),
            "phones": p["phone"].as_array().map(|l| l.iter().map(|e| e["value"].clone()).collect::<Vec<_>>())}}))
        .collect();
    wire::json(
        StatusCode::OK,
        json!({"success": true, "data": {"items": items},
            "additional_data": {"pagination": {"start": 0, "limit": 100, "more_items_in_collection": false}}}),
    )
    .into()
}

/// `email`/`phone` as Pipedrive keeps them: a list of `{value, primary, label}`.
fn contact_list(value: Option<&Value>, label: &str) -> Result<Value, Response> {
    match value {
        None | Some(Value::Null) => Ok(json!([])),
        Some(Value::String(s)) => Ok(json!([{"value": s, "primary": true, "label": label}])),
        Some(Value::Array(items))
            if items
                .iter()
                .all(|i| i.as_str().is_some() || i["value"].is_string()) =>
        {
            Ok(Value::Array(
                items
                    .iter()
                    .map(|i| match i.as_str() {
                        Some(s) => json!({"value": s, "primary": true, "label": label}),
                        None => i.clone(),
                    })
                    .collect(),
            ))
        }
        Some(_) => Err(bad(
            "email and phone must be a string or a list of {value, primary, label}",
        )),
    }
}

fn create_person(ctx: &Ctx<'_>) -> Outcome {
    if let Err(response) = authorize(ctx, &["contacts:full"]) {
        return response.into();
    }
    let map = match body(ctx) {
        Ok(map) => map,
        Err(response) => return response.into(),
    };
    if str_field(&Value::Object(map.clone()), "name").is_none() {
        return bad("Name must be given.").into();
    }
    let (email, phone) = match (
        contact_list(map.get("email"), "work"),
        contact_list(map.get("phone"), "mobile"),
    ) {
        (Ok(e), Ok(p)) => (e, p),
        (Err(response), _) | (_, Err(response)) => return response.into(),
    };
    let id = ctx.next_number("person", 1201);
    let mut record = map;
    record.insert("id".into(), json!(id));
    record.insert("email".into(), email);
    record.insert("phone".into(), phone);
    record.insert("owner_id".into(), json!(10_000_001));
    let record = Value::Object(record);
    ctx.insert(PERSONS, &id.to_string(), &record);
    Outcome::created(success(StatusCode::CREATED, record.clone()), record)
}

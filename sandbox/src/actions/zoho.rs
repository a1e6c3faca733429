//! Zoho CRM actions under `www.zohoapis.{dc}/crm/v{n}`: upsert of `Calls`, `Tasks` and
//! `Contacts` with `duplicate_check_fields`, `Notes` create, and a contact's notes list.
//!
//! Auth: `Authorization: Zoho-oauthtoken …` of the sandbox's Zoho OAuth, issued in this
//! data centre → 401 `INVALID_TOKEN` (`AUTHENTICATION_FAILURE` without a token). Scopes:
//! `ZohoCRM.modules.ALL` or `ZohoCRM.modules.{module}.{ALL|WRITE|CREATE}` for writes
//! (`…READ` for reads), case-insensitive → 401 `OAUTH_SCOPE_MISMATCH`. Record errors come
//! inside `data[]` (`MANDATORY_NOT_FOUND`, `INVALID_DATA` with `details.api_name` and
//! `json_path`), the HTTP status being 201 (all inserted), 200 (some updated), 207
//! (mixed) or 400 (all failed). Calls and Tasks carry a unique text field `Conduit_Key`.

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::{Ctx, Outcome, RouteDef, def};
use crate::oauth::{self, AccessCheck, OAuthProvider};
use crate::providers::ProviderRequest;
use crate::providers::zoho::{self as host, api_error};
use crate::wire;

pub(crate) const ROUTES: &[RouteDef] = &[
    def(
        Method::POST,
        "/Calls/upsert",
        "zoho.calls_upsert",
        upsert_calls,
    ),
    def(
        Method::POST,
        "/Tasks/upsert",
        "zoho.tasks_upsert",
        upsert_tasks,
    ),
    def(
        Method::POST,
        "/Contacts/upsert",
        "zoho.contacts_upsert",
        upsert_contacts,
    ),
    def(Method::POST, "/Notes", "zoho.notes_create", create_notes),
    def(
        Method::GET,
        "/Contacts/{}/Notes",
        "zoho.contact_notes",
        contact_notes,
    ),
];

/// A field's rule.
#[derive(Clone, Copy)]
enum Field {
    Text(usize),
    Pick(&'static [&'static str]),
    DateTime,
    Date,
    /// `mm:ss`.
    Duration,
    /// `{"id": "…"}`.
    Lookup,
}

struct Module {
    name: &'static str,
    fields: &'static [(&'static str, Field)],
    mandatory: &'static [&'static str],
    unique: &'static [&'static str],
}

const CALLS: Module = Module {
    name: "Calls",
    fields: &[
        ("Subject", Field::Text(255)),
        ("Call_Type", Field::Pick(&["Inbound", "Outbound", "Missed"])),
        ("Call_Start_Time", Field::DateTime),
        ("Call_Duration", Field::Duration),
        ("Call_Purpose", Field::Text(120)),
        ("Call_Result", Field::Text(120)),
        (
            "Outbound_Call_Status",
            Field::Pick(&["Completed", "Scheduled", "Overdue", "Cancelled"]),
        ),
        ("Description", Field::Text(32_000)),
        ("Who_Id", Field::Lookup),
        ("What_Id", Field::Lookup),
        ("$se_module", Field::Text(50)),
        ("Conduit_Key", Field::Text(255)),
    ],
    mandatory: &["Subject", "Call_Type", "Call_Start_Time", "Call_Duration"],
    unique: &["Conduit_Key"],
};

const TASKS: Module = Module {
    name: "Tasks",
    fields: &[
        ("Subject", Field::Text(255)),
        ("Due_Date", Field::Date),
        (
            "Status",
            Field::Pick(&[
                "Not Started",
                "Deferred",
                "In Progress",
                "Completed",
                "Waiting for input",
            ]),
        ),
        (
            "Priority",
            Field::Pick(&["High", "Highest", "Low", "Lowest", "Normal"]),
        ),
        ("Description", Field::Text(32_000)),
        ("Who_Id", Field::Lookup),
        ("What_Id", Field::Lookup),
        ("$se_module", Field::Text(50)),
        ("Conduit_Key", Field::Text(255)),
    ],
    mandatory: &["Subject"],
    unique: &["Conduit_Key"],
};

const CONTACTS: Module = Module {
    name: "Contacts",
    fields: &[
        ("Last_Name", Field::Text(80)),
        ("First_Name", Field::Text(40)),
        ("Email", Field::Text(100)),
        ("Phone", Field::Text(30)),
        ("Mobile", Field::Text(30)),
        ("Description", Field::Text(32_000)),
    ],
    mandatory: &["Last_Name"],
    unique: &["Email"],
};

/// The path under `/crm/v{n}` on an API host.
pub(crate) fn api_path(req: &ProviderRequest) -> Option<String> {
    let Some(host::Host::Api(_)) = host::host(&req.host) else {
        return None;
    };
    let rest = req.path.strip_prefix("/crm/v")?;
    let (version, rest) = rest.split_once('/')?;
    version
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| format!("/{rest}"))
}

/// Checks the token and that it opens `module` for `write` (else read).
fn authorize(ctx: &Ctx<'_>, module: &str, write: bool) -> Result<(), Response> {
    let dc = match host::host(&ctx.req.host) {
        Some(host::Host::Api(dc)) => dc,
        _ => return Err(host::not_found()),
    };
    let grant = match oauth::bearer_access(
        ctx.state,
        OAuthProvider::Zoho,
        host::zoho_token(&ctx.req.headers),
    ) {
        AccessCheck::Granted(grant) if grant.site == dc => grant,
        AccessCheck::Missing => {
            return Err(api_error(
                StatusCode::UNAUTHORIZED,
                "AUTHENTICATION_FAILURE",
                "Authentication failed",
            ));
        }
        _ => return Err(host::invalid_token()),
    };
    let module = module.to_ascii_lowercase();
    let operations: &[&str] = if write {
        &["all", "write", "create"]
    } else {
        &["all", "read"]
    };
    let allowed = grant.scopes.iter().any(|scope| {
        let scope = scope.to_ascii_lowercase();
        scope == "zohocrm.modules.all"
            || scope
                .strip_prefix(&format!("zohocrm.modules.{module}."))
                .is_some_and(|op| operations.contains(&op))
    });
    if allowed {
        Ok(())
    } else {
        Err(api_error(
            StatusCode::UNAUTHORIZED,
            "OAUTH_SCOPE_MISMATCH",
            "invalid oauth scope to access this URL",
        ))
    }
}

fn record_error(code: &str, message: &str, field: &str, index: usize) -> Value {
    json!({"code": code, "details": {"api_name": field, "json_path": format!("$.data[{index}].{field}")},
        "message": message, "status": "error"})
}

fn check_record(module: &Module, record: &Map<String, Value>, index: usize) -> Result<(), Value> {
    for (name, value) in record {
        let Some((_, rule)) = module.fields.iter().find(|(n, _)| n == name) else {
            return Err(record_error(
                "INVALID_DATA",
                "the field does not exist",
                name,
                index,
            ));
        };
        let text = value.as_str();
        let ok = match rule {
            Field::Text(max) => text.is_some_and(|t| t.chars().count() <= *max),
            Field::Pick(values) => text.is_some_and(|t| values.contains(&t)),
            Field::DateTime => text.is_some_and(|t| {
                t.contains('T') && crate::clock::parse_datetime(t).is_some() && !t.ends_with('Z')
            }),
            Field::Date => text.is_some_and(|t| crate::clock::parse_date(t).is_some()),
            Field::Duration => text.is_some_and(|t| {
                t.split_once(':').is_some_and(|(m, s)| {
                    !m.is_empty()
                        && m.bytes().all(|b| b.is_ascii_digit())
                        && s.len() == 2
                        && s.parse::<u8>().is_ok_and(|s| s < 60)
                })
            }),
            Field::Lookup => value
                .get("id")
                .is_some_and(|id| id.is_string() || id.is_u64()),
        };
        if !ok {
            return Err(record_error("INVALID_DATA", "invalid data", name, index));
        }
    }
    if let Some(missing) = module
        .mandatory
        .iter()
        .find(|f| record.get(**f).is_none_or(Value::is_null))
    {
        return Err(record_error(
            "MANDATORY_NOT_FOUND",
            "required field not found",
            missing,
            index,
        ));
    }
    Ok(())
}

fn data(ctx: &Ctx<'_>) -> Result<(Vec<Value>, Map<String, Value>), Response> {
    let Ok(Value::Object(body)) = ctx.json() else {
        return Err(api_error(
            StatusCode::BAD_REQUEST,
            "INVALID_DATA",
            "body is not a valid JSON",
        ));
    };
    let Some(items) = body.get("data").and_then(Value::as_array).cloned() else {
        return Err(api_error(
            StatusCode::BAD_REQUEST,
            "REQUIRED_PARAM_MISSING",
            "data is required",
        ));
    };
    if items.is_empty() {
        return Err(api_error(
            StatusCode::BAD_REQUEST,
            "INVALID_DATA",
            "data must not be empty",
        ));
    }
    if items.len() > 100 {
        return Err(api_error(
            StatusCode::BAD_REQUEST,
            "LIMIT_EXCEEDED",
            "Maximum number of records is 100",
        ));
    }
    Ok((items, body))
}

fn details(id: &str, now: &str) -> Value {
    json!({"id": id, "Created_Time": now, "Modified_Time": now,
        "Created_By": {"id": "4876876000000225013", "name": "Acme Admin"},
        "Modified_By": {"id": "4876876000000225013", "name": "Acme Admin"}})
}

/// The HTTP status of a `data[]` answer: 201 all inserted, 200 some updated, 207 mixed,
/// 400 all failed.
fn status_of(results: &[Value]) -> StatusCode {
    let failed = results.iter().filter(|r| r["status"] == "error").count();
    if failed == results.len() {
        StatusCode::BAD_REQUEST
    } else if failed > 0 {
        StatusCode::MULTI_STATUS
    } else if results.iter().any(|r| r["action"] == "update") {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    }
}

fn now_zoho() -> String {
    super::now_rfc3339()
        .get(..19)
        .map_or_else(String::new, |t| format!("{t}+00:00"))
}

fn upsert(ctx: &Ctx<'_>, module: &Module) -> Outcome {
    if let Err(response) = authorize(ctx, module.name, true) {
        return response.into();
    }
    let (items, body) = match data(ctx) {
        Ok(parsed) => parsed,
        Err(response) => return response.into(),
    };
    let check_fields: Vec<String> = match body.get("duplicate_check_fields") {
        None => module.unique.iter().map(|s| (*s).to_owned()).collect(),
        Some(Value::Array(fields)) => fields
            .iter()
            .filter_map(|f| f.as_str().map(str::to_owned))
            .collect(),
        Some(_) => {
            return api_error(
                StatusCode::BAD_REQUEST,
                "INVALID_DATA",
                "duplicate_check_fields must be a list",
            )
            .into();
        }
    };
    if let Some(bad) = check_fields
        .iter()
        .find(|f| !module.unique.contains(&f.as_str()))
    {
        return wire::json(
            StatusCode::BAD_REQUEST,
            json!({"code": "INVALID_DATA", "details": {"api_name": bad}, "message": "the field is not unique or does not exist", "status": "error"}),
        )
        .into();
    }
    let mut results = Vec::new();
    let mut created = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let Some(record) = item.as_object() else {
            results.push(record_error("INVALID_DATA", "invalid data", "data", index));
            continue;
        };
        if let Err(error) = check_record(module, record, index) {
            results.push(error);
            continue;
        }
        let now = now_zoho();
        let existing = ctx.list(module.name).into_iter().find_map(|stored| {
            check_fields
                .iter()
                .find(|f| {
                    record
                        .get(f.as_str())
                        .is_some_and(|v| !v.is_null() && stored[f.as_str()] == *v)
                })
                .map(|f| (stored, f.clone()))
        });
        match existing {
            Some((mut stored, field)) => {
                let id = stored["id"].as_str().unwrap_or_default().to_owned();
                if let Some(fields) = stored.as_object_mut() {
                    fields.extend(record.clone());
                    fields.insert("Modified_Time".into(), json!(now));
                }
                ctx.replace(module.name, &id, &stored);
                results.push(json!({"code": "SUCCESS", "duplicate_field": field, "action": "update",
                    "details": details(&id, &now), "message": "record updated", "status": "success"}));
            }
            None => {
                let id = format!("5725767000000{:06}", ctx.next_number("record", 412_001));
                let mut stored = record.clone();
                stored.insert("id".into(), json!(id));
                stored.insert("Created_Time".into(), json!(now));
                stored.insert("Modified_Time".into(), json!(now));
                let stored = Value::Object(stored);
                ctx.insert(module.name, &id, &stored);
                created.push(stored);
                results.push(
                    json!({"code": "SUCCESS", "duplicate_field": null, "action": "insert",
                    "details": details(&id, &now), "message": "record added", "status": "success"}),
                );
            }
        }
    }
    let response = wire::json(status_of(&results), json!({"data": results}));
    match created.len() {
        0 => response.into(),
        1 => Outcome::created(response, created.remove(0)),
        _ => Outcome::created(response, Value::Array(created)),
    }
}

fn upsert_calls(ctx: &Ctx<'_>) -> Outcome {
    upsert(ctx, &CALLS)
}

fn upsert_tasks(ctx: &Ctx<'_>) -> Outcome {
    upsert(ctx, &TASKS)
}

fn upsert_contacts(ctx: &Ctx<'_>) -> Outcome {
    upsert(ctx, &CONTACTS)
}

fn create_notes(ctx: &Ctx<'_>) -> Outcome {
    if let Err(response) = authorize(ctx, "notes", true) {
        return response.into();
    }
    let (items, _) = match data(ctx) {
        Ok(parsed) => parsed,
        Err(response) => return response.into(),
    };
    let mut results = Vec::new();
    let mut created = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let content = item["Note_Content"].as_str().filter(|c| !c.is_empty());
        let parent = &item["Parent_Id"];
        let module = parent["module"]["api_name"]
            .as_str()
            .or_else(|| parent["module"].as_str());
        let parent_id = parent["id"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| parent["id"].as_u64().map(|n| n.to_string()));
        let outcome = match (content, module, parent_id) {
            (None, _, _) => Err(record_error(
                "MANDATORY_NOT_FOUND",
                "required field not found",
                "Note_Content",
                index,
            )),
            (_, None, _) | (_, _, None) => Err(record_error(
                "MANDATORY_NOT_FOUND",
                "required field not found",
                "Parent_Id",
                index,
            )),
            (Some(_), Some(module), Some(id))
                if module != "Contacts" || ctx.find("Contacts", &id).is_none() =>
            {
                Err(record_error(
                    "INVALID_DATA",
                    "the related id given seems to be invalid",
                    "Parent_Id",
                    index,
                ))
            }
            (Some(_), Some(_), Some(_)) => Ok(()),
        };
        if let Err(error) = outcome {
            results.push(error);
            continue;
        }
        let now = now_zoho();
        let id = format!("5725767000000{:06}", ctx.next_number("record", 412_001));
        let mut stored = item.as_object().cloned().unwrap_or_default();
        stored.insert("id".into(), json!(id));
        stored.insert("Created_Time".into(), json!(now));
        let stored = Value::Object(stored);
        ctx.insert("Notes", &id, &stored);
        created.push(stored);
        results.push(json!({"code": "SUCCESS", "details": details(&id, &now), "message": "record added", "status": "success"}));
    }
    let response = wire::json(status_of(&results), json!({"data": results}));
    match created.len() {
        0 => response.into(),
        1 => Outcome::created(response, created.remove(0)),
        _ => Outcome::created(response, Value::Array(created)),
    }
}

fn contact_notes(ctx: &Ctx<'_>) -> Outcome {
    if let Err(response) = authorize(ctx, "notes", false) {
        return response.into();
    }
    let contact = ctx.param(0).to_owned();
    if ctx.find("Contacts", &contact).is_none() {
        return api_error(
            StatusCode::BAD_REQUEST,
            "INVALID_DATA",
            "the related id given seems to be invalid",
        )
        .into();
    }
    let notes: Vec<Value> = ctx
        .list("Notes")
        .into_iter()
        .filter(|n| n["Parent_Id"]["id"] == contact.as_str())
        .collect();
    if notes.is_empty() {
        return StatusCode::NO_CONTENT.into_response().into();
    }
    let count = notes.len();
    wire::json(
        StatusCode::OK,
        json!({"data": notes, "info": {"per_page": 200, "count": count, "page": 1, "more_records": false}}),
    )
    .into()
}

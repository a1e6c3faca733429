//! HubSpot CRM v3 engagement actions on `api.hubapi.com`: calls, notes and tasks (create,
//! search) and contacts batch upsert by email (into the same contact store as
//! `providers::hubspot_crm`).
//!
//! Auth, rate limits and the 401/429 bodies are HubSpot's (`providers::hubspot`): a
//! private-app or OAuth token, 110 requests per rolling 10 s, searches 4 per second.
//! Scopes: creates and the upsert need `crm.objects.contacts.write`, searches
//! `crm.objects.contacts.read` (the spec's `security` for calls and notes; tasks assumed)
//! → 403 `MISSING_SCOPES`. Validation: `hs_timestamp` required, unknown properties
//! `PROPERTY_DOESNT_EXIST`, enumerations, association types and that the associated
//! contact exists → 400 `VALIDATION_ERROR`. Engagements are kept per portal. A search
//! answers each engagement's default properties (`hs_object_id`, `hs_createdate`,
//! `hs_lastmodifieddate`) and only the others its `properties` names.

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::{Ctx, Outcome, RouteDef, def, now_rfc3339};
use crate::providers::hubspot::{
    self as host, Authorized, authorize, authorize_search, error_body, with_rate_headers,
};
use crate::providers::hubspot_crm::{self, CrmObject, parse_time};
use crate::wire;

pub(crate) const ROUTES: &[RouteDef] = &[
    def(
        Method::POST,
        "/crm/v3/objects/calls",
        "hubspot.call_create",
        create_call,
    ),
    def(
        Method::POST,
        "/crm/v3/objects/notes",
        "hubspot.note_create",
        create_note,
    ),
    def(
        Method::POST,
        "/crm/v3/objects/tasks",
        "hubspot.task_create",
        create_task,
    ),
    def(
        Method::POST,
        "/crm/v3/objects/calls/search",
        "hubspot.call_search",
        search_calls,
    ),
    def(
        Method::POST,
        "/crm/v3/objects/notes/search",
        "hubspot.note_search",
        search_notes,
    ),
    def(
        Method::POST,
        "/crm/v3/objects/tasks/search",
        "hubspot.task_search",
        search_tasks,
    ),
    def(
        Method::POST,
        "/crm/v3/objects/contacts/batch/upsert",
        "hubspot.contact_batch_upsert",
        upsert_contacts,
    ),
];

/// A property's rule.
#[derive(Clone, Copy)]
enum Prop {
    Text,
    Time,
    Int,
    Enum(&'static [&'static str]),
    Https,
}

struct Engagement {
    object: &'static str,
    association_type: u64,
    properties: &'static [(&'static str, Prop)],
}

const COMMON: [(&str, Prop); 3] = [
    ("hs_timestamp", Prop::Time),
    ("hubspot_owner_id", Prop::Text),
    ("conduit_key", Prop::Text),
];

const CALLS: Engagement = Engagement {
    object: "calls",
    association_type: 194,
    properties: &[
        ("hs_call_title", Prop::Text),
        ("hs_call_body", Prop::Text),
        ("hs_call_direction", Prop::Enum(&["INBOUND", "OUTBOUND"])),
        ("hs_call_duration", Prop::Int),
        (
            "hs_call_status",
            Prop::Enum(&[
                "BUSY",
                "CALLING_CRM_USER",
                "CANCELED",
                "COMPLETED",
                "CONNECTING",
                "FAILED",
                "IN_PROGRESS",
                "NO_ANSWER",
                "QUEUED",
                "RINGING",
            ]),
        ),
        ("hs_call_from_number", Prop::Text),
        ("hs_call_to_number", Prop::Text),
        ("hs_call_recording_url", Prop::Https),
        ("hs_call_disposition", Prop::Text),
    ],
};

const NOTES: Engagement = Engagement {
    object: "notes",
    association_type: 202,
    properties: &[
        ("hs_note_body", Prop::Text),
        ("hs_attachment_ids", Prop::Text),
    ],
};

const TASKS: Engagement = Engagement {
    object: "tasks",
    association_type: 204,
    properties: &[
        ("hs_task_subject", Prop::Text),
        ("hs_task_body", Prop::Text),
        (
            "hs_task_status",
            Prop::Enum(&[
                "NOT_STARTED",
                "IN_PROGRESS",
                "WAITING",
                "COMPLETED",
                "DEFERRED",
            ]),
        ),
        (
            "hs_task_priority",
            Prop::Enum(&["NONE", "LOW", "MEDIUM", "HIGH"]),
        ),
        (
            "hs_task_type",
            Prop::Enum(&[
                "CALL",
                "EMAIL",
                "LINKED_IN",
                "MEETING",
                "LINKED_IN_CONNECT",
                "LINKED_IN_MESSAGE",
                "TODO",
            ]),
        ),
    ],
};

fn invalid(message: &str) -> Response {
    error_body(StatusCode::BAD_REQUEST, message, "VALIDATION_ERROR")
}

fn scoped(ctx: &Ctx<'_>, scope: &str, search: bool) -> Result<Authorized, Response> {
    let authorized = if search {
        authorize_search(ctx.state, ctx.req)?
    } else {
        authorize(ctx.state, ctx.req)?
    };
    let wanted = [scope.to_owned()];
    if authorized.principal.has_any_scope(&wanted) {
        Ok(authorized)
    } else {
        Err(with_rate_headers(
            host::missing_scopes(&wanted),
            &authorized.usage,
        ))
    }
}

fn body(ctx: &Ctx<'_>) -> Result<Map<String, Value>, Response> {
    match ctx.json() {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(invalid(
            "Invalid input JSON on line 1, column 1: the body is not a JSON object",
        )),
    }
}

/// A property value as HubSpot keeps it: text.
fn as_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn property_error(name: &str, message: &str, error: &str) -> Response {
    let detail = json!([{"isValid": false, "message": message, "error": error, "name": name}]);
    invalid(&format!("Property values were not valid: {detail}"))
}

fn check_properties(
    kind: &Engagement,
    input: &Map<String, Value>,
) -> Result<Map<String, Value>, Response> {
    let mut props = Map::new();
    for (name, value) in input {
        let rule = COMMON
            .iter()
            .chain(kind.properties.iter())
            .find(|(n, _)| n == name)
            .map(|(_, r)| *r);
        let Some(rule) = rule else {
            return Err(property_error(
                name,
                &format!("Property \"{name}\" does not exist"),
                "PROPERTY_DOESNT_EXIST",
            ));
        };
        let Some(text) = as_text(value) else {
            return Err(property_error(
                name,
                &format!("{name} must be a string"),
                "INVALID_TYPE",
            ));
        };
        let ok = match rule {
            Prop::Text => true,
            Prop::Time => parse_time(&text).is_some(),
            Prop::Int => text.parse::<u64>().is_ok(),
            Prop::Enum(values) => values.contains(&text.as_str()),
            Prop::Https => text.starts_with("https://"),
        };
        if !ok {
            return Err(property_error(
                name,
                &format!("{text} was not a valid value for {name}"),
                "INVALID_OPTION",
            ));
        }
        props.insert(name.clone(), json!(text));
    }
    if !props.contains_key("hs_timestamp") {
        return Err(property_error(
            "hs_timestamp",
            "hs_timestamp is required",
            "REQUIRED_PROPERTY",
        ));
    }
    Ok(props)
}

fn check_associations(
    ctx: &Ctx<'_>,
    kind: &Engagement,
    portal: u64,
    list: Option<&Value>,
) -> Result<Vec<Value>, Response> {
    let Some(list) = list else {
        return Ok(Vec::new());
    };
    let Some(items) = list.as_array() else {
        return Err(invalid("associations must be a list"));
    };
    let mut contacts = Vec::new();
    for item in items {
        let id = item["to"]["id"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| item["to"]["id"].as_u64().map(|n| n.to_string()));
        let Some(id) = id else {
            return Err(invalid("associations[].to.id is required"));
        };
        let types = item["types"].as_array().cloned().unwrap_or_default();
        let valid_type = !types.is_empty()
            && types.iter().all(|t| {
                t["associationCategory"] == "HUBSPOT_DEFINED"
                    && t["associationTypeId"] == kind.association_type
            });
        if !valid_type {
            return Err(invalid(&format!(
                "Invalid association type for {} to contacts: use HUBSPOT_DEFINED {}",
                kind.object, kind.association_type
            )));
        }
        if ctx
            .state
            .hubspot_record(portal, CrmObject::Contacts, &id)
            .is_none()
        {
            return Err(invalid(&format!(
                "Object of type contacts with id {id} was not found"
            )));
        }
        contacts.push(json!(id));
    }
    Ok(contacts)
}

fn create(ctx: &Ctx<'_>, kind: &Engagement) -> Outcome {
    let authorized = match scoped(ctx, "crm.objects.contacts.write", false) {
        Ok(a) => a,
        Err(response) => return response.into(),
    };
    let portal = authorized.principal.portal_id();
    let input = match body(ctx) {
        Ok(map) => map,
        Err(response) => return with_rate_headers(response, &authorized.usage).into(),
    };
    let Some(Value::Object(properties)) = input.get("properties") else {
        return with_rate_headers(invalid("properties is required"), &authorized.usage).into();
    };
    let checked = check_properties(kind, properties).and_then(|p| {
        check_associations(ctx, kind, portal, input.get("associations")).map(|a| (p, a))
    });
    let (mut props, contacts) = match checked {
        Ok(ok) => ok,
        Err(response) => return with_rate_headers(response, &authorized.usage).into(),
    };
    let id = ctx.next_number(kind.object, 40_000_000_001).to_string();
    let now = now_rfc3339();
    props.insert("hs_object_id".into(), json!(id));
    props.insert("hs_createdate".into(), json!(now));
    props.insert("hs_lastmodifieddate".into(), json!(now));
    let record = json!({
        "id": id, "properties": props, "createdAt": now, "updatedAt": now, "archived": false,
        "associations": {"contacts": contacts},
    });
    ctx.insert(&format!("{portal}:{}", kind.object), &id, &record);
    let mut answer = record.clone();
    if let Some(map) = answer.as_object_mut() {
        map.remove("associations");
    }
    Outcome::created(
        with_rate_headers(wire::json(StatusCode::CREATED, answer), &authorized.usage),
        record,
    )
}

fn create_call(ctx: &Ctx<'_>) -> Outcome {
    create(ctx, &CALLS)
}

fn create_note(ctx: &Ctx<'_>) -> Outcome {
    create(ctx, &NOTES)
}

fn create_task(ctx: &Ctx<'_>) -> Outcome {
    create(ctx, &TASKS)
}

/// Whether a stored engagement passes one filter (`EQ`, `NEQ`, `CONTAINS_TOKEN`,
/// `HAS_PROPERTY`; `associations.contact` EQ a contact id).
fn passes(record: &Value, filter: &Value) -> Result<bool, String> {
    let name = filter["propertyName"]
        .as_str()
        .ok_or("filters[].propertyName is required")?;
    let operator = filter["operator"]
        .as_str()
        .ok_or("filters[].operator is required")?;
    let wanted = filter.get("value").and_then(as_text);
    if name == "associations.contact" {
        let wanted = wanted.ok_or("value is required")?;
        let linked = record["associations"]["contacts"]
            .as_array()
            .is_some_and(|c| c.iter().any(|x| x == wanted.as_str()));
        return match operator {
            "EQ" => Ok(linked),
            _ => Err(format!(
                "operator {operator} is not supported on associations.contact"
            )),
        };
    }
    let have = record["properties"][name].as_str();
    let same = |a: &str, b: &str| match (parse_time(a), parse_time(b)) {
        (Some(x), Some(y)) if name == "hs_timestamp" => x == y,
        _ => a == b,
    };
    match operator {
        "EQ" => Ok(matches!((have, wanted.as_deref()), (Some(h), Some(w)) if same(h, w))),
        "NEQ" => Ok(!matches!((have, wanted.as_deref()), (Some(h), Some(w)) if same(h, w))),
        "CONTAINS_TOKEN" => Ok(
            matches!((have, wanted.as_deref()), (Some(h), Some(w)) if h.to_lowercase().contains(&w.to_lowercase())),
        ),
        "HAS_PROPERTY" => Ok(have.is_some()),
        other => Err(format!("operator {other} is not supported by the stand-in")),
    }
}

fn search(ctx: &Ctx<'_>, kind: &Engagement) -> Outcome {
    let authorized = match scoped(ctx, "crm.objects.contacts.read", true) {
        Ok(a) => a,
        Err(response) => return response.into(),
    };
    let portal = authorized.principal.portal_id();
    let finish = |r: Response| with_rate_headers(r, &authorized.usage);
    let input = match body(ctx) {
        Ok(map) => map,
        Err(response) => return finish(response).into(),
    };
    let groups = input
        .get("filterGroups")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if groups.len() > 5 {
        return finish(invalid("Too many filter groups (max 5)")).into();
    }
    // HubSpot returns an engagement's default properties (its id and its creation and
    // change times) and, of the others, only those the request names.
    let wanted: Vec<String> = match input.get("properties") {
        None => Vec::new(),
        Some(Value::Array(names)) => {
            match names
                .iter()
                .map(|n| n.as_str().map(str::to_owned))
                .collect()
            {
                Some(names) => names,
                None => return finish(invalid("properties must be property names")).into(),
            }
        }
        Some(_) => return finish(invalid("properties must be an array")).into(),
    };
    let shown_property = |name: &str| {
        ["hs_object_id", "hs_createdate", "hs_lastmodifieddate"].contains(&name)
            || wanted.iter().any(|w| w == name)
    };
    let limit = input.get("limit").and_then(Value::as_u64).unwrap_or(10);
    if !(1..=200).contains(&limit) {
        return finish(invalid("limit must be between 1 and 200")).into();
    }
    let mut results = Vec::new();
    for record in ctx.list_indexed(&format!("{portal}:{}", kind.object)) {
        let mut hit = groups.is_empty();
        for group in &groups {
            let filters = group["filters"].as_array().cloned().unwrap_or_default();
            let mut all = true;
            for filter in &filters {
                match passes(&record, filter) {
                    Ok(true) => {}
                    Ok(false) => all = false,
                    Err(message) => return finish(invalid(&message)).into(),
                }
            }
            hit |= all;
        }
        if hit {
            let mut shown = record.clone();
            if let Some(map) = shown.as_object_mut() {
                map.remove("associations");
            }
            if let Some(props) = shown.get_mut("properties").and_then(Value::as_object_mut) {
                props.retain(|name, _| shown_property(name));
            }
            results.push(shown);
        }
    }
    let total = results.len();
    results.truncate(usize::try_from(limit).unwrap_or(10));
    finish(wire::json(
        StatusCode::OK,
        json!({"total": total, "results": results}),
    ))
    .into()
}

fn search_calls(ctx: &Ctx<'_>) -> Outcome {
    search(ctx, &CALLS)
}

fn search_notes(ctx: &Ctx<'_>) -> Outcome {
    search(ctx, &NOTES)
}

fn search_tasks(ctx: &Ctx<'_>) -> Outcome {
    search(ctx, &TASKS)
}

fn upsert_contacts(ctx: &Ctx<'_>) -> Outcome {
    let authorized = match scoped(ctx, "crm.objects.contacts.write", false) {
        Ok(a) => a,
        Err(response) => return response.into(),
    };
    let portal = authorized.principal.portal_id();
    let finish = |r: Response| with_rate_headers(r, &authorized.usage);
    let input = match body(ctx) {
        Ok(map) => map,
        Err(response) => return finish(response).into(),
    };
    let Some(inputs) = input.get("inputs").and_then(Value::as_array) else {
        return finish(invalid("inputs is required")).into();
    };
    if inputs.is_empty() || inputs.len() > 100 {
        return finish(invalid("inputs must hold 1 to 100 items")).into();
    }
    let started = now_rfc3339();
    let mut results = Vec::new();
    let mut created = Vec::new();
    for item in inputs {
        if item["idProperty"] != "email" {
            return finish(invalid(
                "idProperty must be a unique property; the stand-in upserts contacts by email",
            ))
            .into();
        }
        let Some(email) = item["id"].as_str().filter(|e| e.contains('@')) else {
            return finish(invalid("Email address is invalid")).into();
        };
        let properties = item["properties"].as_object().cloned().unwrap_or_default();
        match hubspot_crm::upsert_contact_by_email(ctx.state, portal, email, &properties) {
            Ok((mut record, new)) => {
                if new {
                    created.push(record.clone());
                }
                if let Some(map) = record.as_object_mut() {
                    map.insert("new".into(), json!(new));
                }
                results.push(record);
            }
            Err(response) => return finish(response).into(),
        }
    }
    let answer = json!({"status": "COMPLETE", "results": results, "startedAt": started, "completedAt": now_rfc3339()});
    let response = finish(wire::json(StatusCode::OK, answer));
    match created.len() {
        0 => response.into(),
        1 => Outcome::created(response, created.remove(0)),
        _ => Outcome::created(response, Value::Array(created)),
    }
}

//! Freshdesk actions under `{sub}.freshdesk.com/api/v2`: ticket create, ticket search by
//! tag, note create, conversations list, contact list by email/phone, contact create.
//!
//! Auth: Basic `{api_key}:X` → 401 `invalid_credentials`. No scopes. Validation:
//! `{"description":"Validation failed","errors":[{"field","message","code"}]}` with
//! Freshdesk's codes (`missing_field`, `invalid_value`, `datatype_mismatch`,
//! `invalid_field` for any key not in the documented list, `duplicate_value` 409).

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::{Ctx, Outcome, RouteDef, def, now_rfc3339, str_field};
use crate::providers::ProviderRequest;
use crate::providers::freshdesk as host;
use crate::wire;

pub(crate) const ROUTES: &[RouteDef] = &[
    def(
        Method::POST,
        "/tickets",
        "freshdesk.ticket_create",
        create_ticket,
    ),
    def(
        Method::GET,
        "/search/tickets",
        "freshdesk.ticket_search",
        search_tickets,
    ),
    def(
        Method::POST,
        "/tickets/{}/notes",
        "freshdesk.note_create",
        create_note,
    ),
    def(
        Method::GET,
        "/tickets/{}/conversations",
        "freshdesk.conversations",
        conversations,
    ),
    def(
        Method::GET,
        "/contacts",
        "freshdesk.contacts_list",
        list_contacts,
    ),
    def(
        Method::POST,
        "/contacts",
        "freshdesk.contact_create",
        create_contact,
    ),
];

const TICKETS: &str = "tickets";
const NOTES: &str = "notes";
const CONTACTS: &str = "contacts";

/// The path under `/api/v2`.
pub(crate) fn api_path(req: &ProviderRequest) -> Option<String> {
    host::subdomain(&req.host)?;
    req.path.strip_prefix("/api/v2").map(str::to_owned)
}

fn authenticate(ctx: &Ctx<'_>) -> Result<(), Response> {
    let sub = host::subdomain(&ctx.req.host).unwrap_or("");
    if !host::helpdesk_exists(ctx.state, sub) {
        return Err(host::unknown_helpdesk(&ctx.req.host));
    }
    host::authenticate(ctx.state, sub, ctx.req)
        .map(|_| ())
        .ok_or_else(host::unauthorized)
}

fn validation(status: StatusCode, errors: Vec<Value>) -> Response {
    wire::json(
        status,
        json!({"description": "Validation failed", "errors": errors}),
    )
}

fn field_error(field: &str, message: &str, code: &str) -> Value {
    json!({"field": field, "message": message, "code": code})
}

/// Authenticates, then reads the body as an object of `known` keys.
fn authenticated_object(ctx: &Ctx<'_>, known: &[&str]) -> Result<Map<String, Value>, Response> {
    authenticate(ctx)?;
    object(ctx, known)
}

fn object(ctx: &Ctx<'_>, known: &[&str]) -> Result<Map<String, Value>, Response> {
    let Ok(Value::Object(map)) = ctx.json() else {
        return Err(validation(
            StatusCode::BAD_REQUEST,
            vec![
                json!({"code": "invalid_json", "message": "Request body has invalid json format"}),
            ],
        ));
    };
    let unknown: Vec<Value> = map
        .keys()
        .filter(|k| !known.contains(&k.as_str()))
        .map(|k| field_error(k, "Unexpected/invalid field in request", "invalid_field"))
        .collect();
    if unknown.is_empty() {
        Ok(map)
    } else {
        Err(validation(StatusCode::BAD_REQUEST, unknown))
    }
}

fn integer_in(map: &Map<String, Value>, field: &str, allowed: &[i64], errors: &mut Vec<Value>) {
    match map.get(field) {
        None => {}
        Some(Value::Number(n)) if n.as_i64().is_some_and(|n| allowed.contains(&n)) => {}
        Some(Value::Number(_)) => {
            let list: Vec<String> = allowed.iter().map(i64::to_string).collect();
            errors.push(field_error(
                field,
                &format!("It should be one of these values: '{}'", list.join(",")),
                "invalid_value",
            ));
        }
        Some(other) => errors.push(field_error(
            field,
            &format!(
                "Value set is of type {}.It should be a/an Integer",
                super::type_name(other)
            ),
            "datatype_mismatch",
        )),
    }
}

fn text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

const TICKET_FIELDS: [&str; 24] = [
    "name",
    "requester_id",
    "email",
    "facebook_id",
    "phone",
    "twitter_id",
    "unique_external_id",
    "subject",
    "type",
    "status",
    "priority",
    "description",
    "responder_id",
    "cc_emails",
    "custom_fields",
    "due_by",
    "email_config_id",
    "fr_due_by",
    "group_id",
    "parent_id",
    "product_id",
    "source",
    "tags",
    "company_id",
];

const REQUESTER: [&str; 6] = [
    "requester_id",
    "email",
    "facebook_id",
    "phone",
    "twitter_id",
    "unique_external_id",
];

fn create_ticket(ctx: &Ctx<'_>) -> Outcome {
    let map = match authenticated_object(ctx, &TICKET_FIELDS) {
        Ok(map) => map,
        Err(response) => return response.into(),
    };
    let body = Value::Object(map.clone());
    let mut errors = Vec::new();
    if !REQUESTER
        .iter()
        .any(|f| map.get(*f).is_some_and(|v| !v.is_null()))
    {
        errors.push(field_error(
            "requester_id",
            "Please fill at least 1 of email, mobile, phone, twitter_id, unique_external_id, requester_id fields",
            "missing_field",
        ));
    }
    if str_field(&body, "phone").is_some()
        && str_field(&body, "email").is_none()
        && str_field(&body, "name").is_none()
    {
        errors.push(field_error(
            "name",
            "It should be a/an String",
            "missing_field",
        ));
    }
    if let Some(email) = map.get("email")
        && !email.as_str().is_some_and(|e| e.contains('@'))
    {
        errors.push(field_error(
            "email",
            "It should be in the 'valid email address' format",
            "invalid_value",
        ));
    }
    integer_in(&map, "status", &[2, 3, 4, 5], &mut errors);
    integer_in(&map, "priority", &[1, 2, 3, 4], &mut errors);
    integer_in(&map, "source", &[1, 2, 3, 5, 6, 7, 9, 10], &mut errors);
    if let Some(tags) = map.get("tags")
        && !tags.as_array().is_some_and(|t| {
            t.iter()
                .all(|x| x.as_str().is_some_and(|s| s.chars().count() <= 255))
        })
    {
        errors.push(field_error(
            "tags",
            "It should be a/an Array of Strings",
            "datatype_mismatch",
        ));
    }
    if !errors.is_empty() {
        return validation(StatusCode::BAD_REQUEST, errors).into();
    }
    let id = ctx.next_number("ticket", 1);
    let now = now_rfc3339();
    let description = str_field(&body, "description").unwrap_or("").to_owned();
    let mut ticket = map;
    ticket.insert("id".into(), json!(id));
    ticket.insert("description_text".into(), json!(text(&description)));
    ticket.entry("status").or_insert(json!(2));
    ticket.entry("priority").or_insert(json!(1));
    ticket.entry("source").or_insert(json!(2));
    ticket.entry("tags").or_insert(json!([]));
    ticket
        .entry("requester_id")
        .or_insert(json!(43_000_000_000 + id));
    ticket.insert("created_at".into(), json!(now));
    ticket.insert("updated_at".into(), json!(now));
    let ticket = Value::Object(ticket);
    ctx.insert(TICKETS, &id.to_string(), &ticket);
    Outcome::created(wire::json(StatusCode::CREATED, ticket.clone()), ticket)
}

fn search_tickets(ctx: &Ctx<'_>) -> Outcome {
    if let Err(response) = authenticate(ctx) {
        return response.into();
    }
    let query = ctx.query("query").unwrap_or_default();
    let invalid = |message: &str| {
        validation(
            StatusCode::BAD_REQUEST,
            vec![field_error("query", message, "invalid_value")],
        )
        .into()
    };
    if query.chars().count() > 512 {
        return invalid("It should not exceed 512 characters");
    }
    let Some(inner) = query.strip_prefix('"').and_then(|q| q.strip_suffix('"')) else {
        return invalid("It should be enclosed in double quotes");
    };
    let Some(tag) = inner
        .trim()
        .strip_prefix("tag:'")
        .and_then(|t| t.strip_suffix('\''))
    else {
        return invalid("The stand-in searches by tag:'…' only");
    };
    let results: Vec<Value> = ctx
        .list_indexed(TICKETS)
        .into_iter()
        .filter(|t| {
            t["tags"]
                .as_array()
                .is_some_and(|tags| tags.iter().any(|x| x == tag))
        })
        .collect();
    let total = results.len();
    wire::json(StatusCode::OK, json!({"results": results, "total": total})).into()
}

fn ticket_missing() -> Response {
    host::not_found_body()
}

fn create_note(ctx: &Ctx<'_>) -> Outcome {
    if let Err(response) = authenticate(ctx) {
        return response.into();
    }
    let ticket_id = ctx.param(0).to_owned();
    if ctx.find(TICKETS, &ticket_id).is_none() {
        return ticket_missing().into();
    }
    let map = match object(
        ctx,
        &[
            "body",
            "structured_body",
            "incoming",
            "notify_emails",
            "private",
            "user_id",
        ],
    ) {
        Ok(map) => map,
        Err(response) => return response.into(),
    };
    let body = Value::Object(map.clone());
    let mut errors = Vec::new();
    if str_field(&body, "body").is_none() && body.get("structured_body").is_none() {
        errors.push(field_error(
            "body",
            "It should be a/an String",
            "missing_field",
        ));
    }
    for flag in ["private", "incoming"] {
        if map.get(flag).is_some_and(|v| !v.is_boolean()) {
            errors.push(field_error(
                flag,
                "It should be a/an Boolean",
                "datatype_mismatch",
            ));
        }
    }
    if !errors.is_empty() {
        return validation(StatusCode::BAD_REQUEST, errors).into();
    }
    let id = ctx.next_number("note", 43_000_100_001);
    let html = str_field(&body, "body").unwrap_or("").to_owned();
    let now = now_rfc3339();
    let note = json!({
        "id": id,
        "ticket_id": ticket_id.parse::<u64>().map_or(json!(ticket_id), |n| json!(n)),
        "body": html,
        "body_text": text(&html),
        "private": map.get("private").cloned().unwrap_or(json!(true)),
        "incoming": map.get("incoming").cloned().unwrap_or(json!(false)),
        "user_id": map.get("user_id").cloned().unwrap_or(json!(43_000_000_001_u64)),
        "support_email": null,
        "attachments": [],
        "created_at": now,
        "updated_at": now,
    });
    ctx.insert(NOTES, &id.to_string(), &note);
    Outcome::created(wire::json(StatusCode::CREATED, note.clone()), note)
}

fn conversations(ctx: &Ctx<'_>) -> Outcome {
    if let Err(response) = authenticate(ctx) {
        return response.into();
    }
    let ticket_id = ctx.param(0).to_owned();
    if ctx.find(TICKETS, &ticket_id).is_none() {
        return ticket_missing().into();
    }
    let notes: Vec<Value> = ctx
        .list(NOTES)
        .into_iter()
        .filter(|n| super::id_matches(&n["ticket_id"], &ticket_id))
        .collect();
    wire::json(StatusCode::OK, Value::Array(notes)).into()
}

fn list_contacts(ctx: &Ctx<'_>) -> Outcome {
    if let Err(response) = authenticate(ctx) {
        return response.into();
    }
    let email = ctx.query("email");
    let phone = ctx.query("phone");
    let contacts: Vec<Value> = ctx
        .list(CONTACTS)
        .into_iter()
        .filter(|c| {
            email.as_deref().is_none_or(|e| {
                c["email"]
                    .as_str()
                    .is_some_and(|x| x.eq_ignore_ascii_case(e))
            })
        })
        .filter(|c| {
            phone
                .as_deref()
                .is_none_or(|p| c["phone"] == p || c["mobile"] == p)
        })
        .collect();
    wire::json(StatusCode::OK, Value::Array(contacts)).into()
}

const CONTACT_FIELDS: [&str; 14] = [
    "name",
    "email",
    "phone",
    "mobile",
    "twitter_id",
    "unique_external_id",
    "other_emails",
    "company_id",
    "description",
    "job_title",
    "language",
    "tags",
    "time_zone",
    "address",
];

fn create_contact(ctx: &Ctx<'_>) -> Outcome {
    let map = match authenticated_object(ctx, &CONTACT_FIELDS) {
        Ok(map) => map,
        Err(response) => return response.into(),
    };
    let body = Value::Object(map.clone());
    let mut errors = Vec::new();
    if str_field(&body, "name").is_none() {
        errors.push(field_error(
            "name",
            "It should be a/an String",
            "missing_field",
        ));
    }
    if ![
        "email",
        "phone",
        "mobile",
        "twitter_id",
        "unique_external_id",
    ]
    .iter()
    .any(|f| str_field(&body, f).is_some())
    {
        errors.push(field_error(
            "email",
            "Please fill at least 1 of email, mobile, phone, twitter_id, unique_external_id fields",
            "missing_field",
        ));
    }
    if !errors.is_empty() {
        return validation(StatusCode::BAD_REQUEST, errors).into();
    }
    if let Some(email) = str_field(&body, "email")
        && let Some(existing) = ctx.list(CONTACTS).into_iter().find(|c| {
            c["email"]
                .as_str()
                .is_some_and(|x| x.eq_ignore_ascii_case(email))
        })
    {
        return validation(
            StatusCode::CONFLICT,
            vec![json!({"field": "email", "message": "It should be a unique value", "code": "duplicate_value",
                "additional_info": {"user_id": existing["id"]}})],
        )
        .into();
    }
    let id = ctx.next_number("contact", 43_000_200_001);
    let now = now_rfc3339();
    let mut contact = map;
    contact.insert("id".into(), json!(id));
    contact.insert("active".into(), json!(false));
    contact.insert("created_at".into(), json!(now));
    contact.insert("updated_at".into(), json!(now));
    let contact = Value::Object(contact);
    ctx.insert(CONTACTS, &id.to_string(), &contact);
    Outcome::created(wire::json(StatusCode::CREATED, contact.clone()), contact)
}

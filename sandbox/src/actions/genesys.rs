//! Genesys Cloud actions under `api.{region}/api/v2`: external contacts (search, create),
//! their notes (create, list) and callbacks (create, list).
//!
//! Auth: a bearer token the sandbox's Genesys OAuth issued in that region (401
//! `authentication.required`, `bad.credentials`, `credentials.expired`). Scopes: writes on
//! external contacts need `external-contacts`, reads `external-contacts` or
//! `external-contacts:readonly`; callbacks `conversations` (a grant without scopes has
//! all) → 403 `missing.any.scopes`. Errors are Genesys's `ErrorBody`.

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::{Ctx, Outcome, RouteDef, def, now_rfc3339, str_field, type_name};
use crate::oauth::{self, AccessCheck, AccessDenied, OAuthProvider};
use crate::providers::ProviderRequest;
use crate::wire;

pub(crate) const ROUTES: &[RouteDef] = &[
    def(
        Method::GET,
        "/externalcontacts/contacts",
        "genesys.external_contacts_search",
        search_contacts,
    ),
    def(
        Method::POST,
        "/externalcontacts/contacts",
        "genesys.external_contact_create",
        create_contact,
    ),
    def(
        Method::POST,
        "/externalcontacts/contacts/{}/notes",
        "genesys.external_contact_note_create",
        create_note,
    ),
    def(
        Method::GET,
        "/externalcontacts/contacts/{}/notes",
        "genesys.external_contact_notes_list",
        list_notes,
    ),
    def(
        Method::POST,
        "/conversations/callbacks",
        "genesys.callback_create",
        create_callback,
    ),
    def(
        Method::GET,
        "/conversations/callbacks",
        "genesys.callbacks_list",
        list_callbacks,
    ),
];

const CONTACTS: &str = "externalcontacts";
const NOTES: &str = "notes";
const CALLBACKS: &str = "callbacks";

/// The path under `/api/v2` on a Genesys API host.
pub(crate) fn api_path(req: &ProviderRequest) -> Option<String> {
    match crate::providers::genesys::host(&req.host)? {
        crate::providers::genesys::Host::Api(_) => {
            req.path.strip_prefix("/api/v2").map(str::to_owned)
        }
        crate::providers::genesys::Host::Login(_) => None,
    }
}

/// Genesys's `ErrorBody`.
pub(crate) fn error(status: StatusCode, code: &str, message: &str, details: Value) -> Response {
    let mut response = wire::json(
        status,
        json!({
            "message": message,
            "code": code,
            "status": status.as_u16(),
            "messageWithParams": message,
            "messageParams": {},
            "contextId": crate::oauth::context_id(),
            "details": details,
            "errors": [],
        }),
    );
    if let Ok(value) = axum::http::HeaderValue::from_str(&crate::oauth::context_id()) {
        response.headers_mut().insert("inin-correlation-id", value);
    }
    response
}

fn bad_request(field: &str, message: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "bad.request",
        message,
        json!([{"errorCode": "bad.request", "fieldName": field}]),
    )
}

/// Checks the bearer token (issued in this region) and that it carries one of `any_of`.
fn authorize(ctx: &Ctx<'_>, any_of: &[&str]) -> Result<(), Response> {
    let region = match crate::providers::genesys::host(&ctx.req.host) {
        Some(crate::providers::genesys::Host::Api(region)) => region,
        _ => return Err(crate::providers::genesys::not_found()),
    };
    let token = wire::bearer_token(&ctx.req.headers);
    let grant = match oauth::bearer_access(ctx.state, OAuthProvider::Genesys, token) {
        AccessCheck::Granted(grant) if grant.site == region => grant,
        AccessCheck::Missing => {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "authentication.required",
                "No authentication bearer token specified in authorization header.",
                json!([]),
            ));
        }
        AccessCheck::Denied(AccessDenied::Expired) => {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "credentials.expired",
                "The supplied credentials are expired and cannot be used.",
                json!([]),
            ));
        }
        _ => {
            return Err(error(
                StatusCode::UNAUTHORIZED,
                "bad.credentials",
                "Invalid login credentials.",
                json!([]),
            ));
        }
    };
    let wanted: Vec<String> = any_of.iter().map(|s| (*s).to_owned()).collect();
    if !grant.scopes.is_empty() && !oauth::scopes_satisfy(&grant.scopes, &wanted) {
        return Err(error(
            StatusCode::FORBIDDEN,
            "missing.any.scopes",
            &format!("Missing any scopes: {}", any_of.join(", ")),
            json!([]),
        ));
    }
    Ok(())
}

/// The JSON object body, or Genesys's 400.
fn object_body(ctx: &Ctx<'_>) -> Result<Value, Response> {
    match ctx.json() {
        Ok(value) if value.is_object() => Ok(value),
        _ => Err(error(
            StatusCode::BAD_REQUEST,
            "bad.request",
            "The request could not be understood by the server due to malformed syntax.",
            json!([]),
        )),
    }
}

fn check_string(body: &Value, field: &str, max: usize, required: bool) -> Result<(), Response> {
    match body.get(field) {
        None | Some(Value::Null) if required => {
            Err(bad_request(field, &format!("{field} is required")))
        }
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if required && s.trim().is_empty() => {
            Err(bad_request(field, &format!("{field} is required")))
        }
        Some(Value::String(s)) if s.chars().count() > max => Err(bad_request(
            field,
            &format!("{field} is longer than {max} characters"),
        )),
        Some(Value::String(_)) => Ok(()),
        Some(other) => Err(error(
            StatusCode::BAD_REQUEST,
            "invalid.value",
            &format!(
                "Value [{}] is not valid for field type [{field}]. Allowable values are: string",
                type_name(other)
            ),
            json!([{"errorCode": "invalid.value", "fieldName": field}]),
        )),
    }
}

fn is_e164(text: &str) -> bool {
    let digits = text.strip_prefix('+').unwrap_or("");
    (7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
}

fn validate_contact(body: &Value) -> Result<(), Response> {
    check_string(body, "lastName", 1000, true)?;
    for field in ["firstName", "middleName", "title", "salutation"] {
        check_string(body, field, 1000, false)?;
    }
    for field in ["workEmail", "personalEmail", "otherEmail"] {
        check_string(body, field, 256, false)?;
        if let Some(email) = str_field(body, field)
            && !email.contains('@')
        {
            return Err(bad_request(
                field,
                &format!("{field} is not a valid email address"),
            ));
        }
    }
    for field in ["workPhone", "cellPhone", "homePhone", "otherPhone"] {
        match body.get(field) {
            None | Some(Value::Null) => {}
            Some(phone @ Value::Object(_)) => {
                if let Some(e164) = phone.get("e164") {
                    if !e164.as_str().is_some_and(is_e164) {
                        return Err(bad_request(
                            field,
                            &format!("{field}.e164 is not an E.164 number"),
                        ));
                    }
                } else if str_field(phone, "display").is_none() {
                    return Err(bad_request(
                        field,
                        &format!("{field} needs e164 or display"),
                    ));
                }
            }
            Some(_) => {
                return Err(bad_request(
                    field,
                    &format!("{field} must be a PhoneNumber object"),
                ));
            }
        }
    }
    Ok(())
}

fn search_contacts(ctx: &Ctx<'_>) -> Outcome {
    if let Err(response) = authorize(ctx, &["external-contacts", "external-contacts:readonly"]) {
        return response.into();
    }
    let page_size = match page_size(ctx, 20, 200) {
        Ok(size) => size,
        Err(response) => return response.into(),
    };
    let q = ctx.query("q").unwrap_or_default().to_lowercase();
    let hits: Vec<Value> = ctx
        .list(CONTACTS)
        .into_iter()
        .filter(|c| q.is_empty() || super::contains_text(&lowercase(c), &q))
        .collect();
    wire::json(StatusCode::OK, listing(hits, page_size)).into()
}

fn lowercase(value: &Value) -> Value {
    match value {
        Value::String(s) => Value::String(s.to_lowercase()),
        Value::Array(items) => Value::Array(items.iter().map(lowercase).collect()),
        Value::Object(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), lowercase(v))).collect())
        }
        other => other.clone(),
    }
}

fn page_size(ctx: &Ctx<'_>, default: usize, max: usize) -> Result<usize, Response> {
    match ctx.query("pageSize") {
        None => Ok(default),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(error(
                StatusCode::BAD_REQUEST,
                "invalid.value",
                &format!(
                    "Value [{text}] is not valid for field type [pageSize]. Allowable values are: 1-{max}"
                ),
                json!([{"errorCode": "invalid.value", "fieldName": "pageSize"}]),
            )),
        },
    }
}

fn listing(items: Vec<Value>, page_size: usize) -> Value {
    let total = items.len();
    let entities: Vec<Value> = items.into_iter().take(page_size).collect();
    json!({
        "entities": entities,
        "pageSize": page_size,
        "pageNumber": 1,
        "total": total,
        "pageCount": total.div_ceil(page_size.max(1)),
    })
}

fn create_contact(ctx: &Ctx<'_>) -> Outcome {
    if let Err(response) = authorize(ctx, &["external-contacts"]) {
        return response.into();
    }
    let mut body = match object_body(ctx) {
        Ok(body) => body,
        Err(response) => return response.into(),
    };
    if let Err(response) = validate_contact(&body) {
        return response.into();
    }
    let id = wire::correlation_id();
    let now = now_rfc3339();
    if let Some(map) = body.as_object_mut() {
        map.insert("id".into(), json!(id));
        map.insert("createDate".into(), json!(now));
        map.insert("modifyDate".into(), json!(now));
        map.insert("type".into(), json!("Curated"));
        map.insert(
            "selfUri".into(),
            json!(format!("/api/v2/externalcontacts/contacts/{id}")),
        );
    }
    ctx.insert(CONTACTS, &id, &body);
    Outcome::created(wire::json(StatusCode::OK, body.clone()), body)
}

fn contact_missing(id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not.found",
        &format!("The requested resource was not found: external contact {id}"),
        json!([]),
    )
}

fn create_note(ctx: &Ctx<'_>) -> Outcome {
    if let Err(response) = authorize(ctx, &["external-contacts"]) {
        return response.into();
    }
    let contact_id = ctx.param(0).to_owned();
    if ctx.find(CONTACTS, &contact_id).is_none() {
        return contact_missing(&contact_id).into();
    }
    let body = match object_body(ctx) {
        Ok(body) => body,
        Err(response) => return response.into(),
    };
    if let Err(response) = check_string(&body, "noteText", 1_000_000, true) {
        return response.into();
    }
    let Some(author) = body.get("createdBy").and_then(|c| str_field(c, "id")) else {
        return bad_request("createdBy", "createdBy.id is required").into();
    };
    let id = wire::correlation_id();
    let now = now_rfc3339();
    let note = json!({
        "id": id,
        "entityId": contact_id,
        "entityType": "PERSON",
        "noteText": body.get("noteText"),
        "createDate": now,
        "modifyDate": now,
        "createdBy": {"id": author, "selfUri": format!("/api/v2/users/{author}")},
        "selfUri": format!("/api/v2/externalcontacts/contacts/{contact_id}/notes/{id}"),
    });
    ctx.insert(NOTES, &id, &note);
    Outcome::created(wire::json(StatusCode::OK, note.clone()), note)
}

fn list_notes(ctx: &Ctx<'_>) -> Outcome {
    if let Err(response) = authorize(ctx, &["external-contacts", "external-contacts:readonly"]) {
        return response.into();
    }
    let contact_id = ctx.param(0).to_owned();
    if ctx.find(CONTACTS, &contact_id).is_none() {
        return contact_missing(&contact_id).into();
    }
    let page_size = match page_size(ctx, 20, 200) {
        Ok(size) => size,
        Err(response) => return response.into(),
    };
    let mut notes: Vec<Value> = ctx
        .list(NOTES)
        .into_iter()
        .filter(|n| n.get("entityId").and_then(Value::as_str) == Some(contact_id.as_str()))
        .collect();
    match ctx.query("sortOrder").as_deref() {
        None | Some("asc" | "ASC") => {}
        Some("desc" | "DESC") => notes.reverse(),
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid.value",
                &format!("Value [{other}] is not valid for field type [sortOrder]. Allowable values are: asc, desc"),
                json!([{"errorCode": "invalid.value", "fieldName": "sortOrder"}]),
            )
            .into();
        }
    }
    wire::json(StatusCode::OK, listing(notes, page_size)).into()
}

fn create_callback(ctx: &Ctx<'_>) -> Outcome {
    if let Err(response) = authorize(ctx, &["conversations"]) {
        return response.into();
    }
    let body = match object_body(ctx) {
        Ok(body) => body,
        Err(response) => return response.into(),
    };
    let numbers = match body.get("callbackNumbers") {
        Some(Value::Array(items)) if !items.is_empty() => items.clone(),
        _ => return bad_request("callbackNumbers", "callbackNumbers is required").into(),
    };
    if numbers
        .iter()
        .any(|n| n.as_str().is_none_or(|s| s.trim().is_empty()))
    {
        return bad_request(
            "callbackNumbers",
            "callbackNumbers must be non-empty strings",
        )
        .into();
    }
    if str_field(&body, "queueId").is_none()
        && !body.get("routingData").is_some_and(Value::is_object)
    {
        return bad_request("queueId", "Either queueId or routingData is required").into();
    }
    if let Some(time) = body.get("callbackScheduledTime")
        && time
            .as_str()
            .is_none_or(|t| crate::clock::parse_datetime(t).is_none())
    {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid.date",
            "Dates must be specified as ISO-8601 strings. For example: yyyy-MM-ddTHH:mm:ss.SSSZ",
            json!([{"errorCode": "invalid.date", "fieldName": "callbackScheduledTime"}]),
        )
        .into();
    }
    let data = body.get("data").cloned().unwrap_or_else(|| json!({}));
    if !data
        .as_object()
        .is_some_and(|m| m.values().all(Value::is_string))
    {
        return bad_request("data", "data must map strings to strings").into();
    }
    let id = wire::correlation_id();
    let callback = json!({
        "id": id,
        "startTime": now_rfc3339(),
        "participants": [{
            "id": wire::correlation_id(),
            "purpose": "customer",
            "name": body.get("callbackUserName"),
            "queueId": body.get("queueId"),
            "callbackNumbers": numbers,
            "callbackScheduledTime": body.get("callbackScheduledTime"),
            "attributes": data,
        }],
        "selfUri": format!("/api/v2/conversations/callbacks/{id}"),
    });
    ctx.insert(CALLBACKS, &id, &callback);
    let answer = json!({
        "conversation": {"id": id, "selfUri": format!("/api/v2/conversations/{id}")},
        "callbackIdentifiers": [{"type": "EXTERNAL", "id": wire::correlation_id()}],
    });
    Outcome::created(wire::json(StatusCode::OK, answer), callback)
}

fn list_callbacks(ctx: &Ctx<'_>) -> Outcome {
    if let Err(response) = authorize(ctx, &["conversations", "conversations:readonly"]) {
        return response.into();
    }
    let callbacks = ctx.list(CALLBACKS);
    wire::json(StatusCode::OK, listing(callbacks, 100)).into()
}

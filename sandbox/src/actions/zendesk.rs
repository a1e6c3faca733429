//! Zendesk Support actions under `{sub}.zendesk.com/api/v2` (`.json` suffix optional):
//! ticket create (with `Idempotency-Key`), ticket list by `external_id`, ticket update
//! with a comment, comment list, `users/create_or_update`.
//!
//! Auth: API token Basic `{email}/token:{token}` (every action), or an OAuth bearer with
//! `write`/`tickets:write` (ticket writes), `read`/`tickets:read` (ticket reads),
//! `write`/`users:write` (users) → 403 "You are missing the following required scopes".
//! Validation: 422 `RecordInvalid` with `details`; unknown ticket 404 `RecordNotFound`.
//! Idempotency: the same key and body within 2 hours replays the first 201 with
//! `x-idempotency-lookup: hit` (the first answer carries `miss`); the same key with
//! another body → 400 `IdempotentRequestError`; the same key while the first request is
//! still being answered (held by a `timeout` fault) → 409 (assumed body).

use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{Ctx, Outcome, Replay, RouteDef, def, now_rfc3339, str_field};
use crate::providers::ProviderRequest;
use crate::providers::zendesk as host;
use crate::wire;

pub(crate) const ROUTES: &[RouteDef] = &[
    def(
        Method::POST,
        "/tickets",
        "zendesk.ticket_create",
        create_ticket,
    ),
    def(
        Method::GET,
        "/tickets",
        "zendesk.tickets_list",
        list_tickets,
    ),
    def(
        Method::PUT,
        "/tickets/{}",
        "zendesk.ticket_update",
        update_ticket,
    ),
    def(
        Method::GET,
        "/tickets/{}/comments",
        "zendesk.ticket_comments",
        list_comments,
    ),
    def(
        Method::POST,
        "/users/create_or_update",
        "zendesk.user_create_or_update",
        upsert_user,
    ),
];

const TICKETS: &str = "tickets";
const COMMENTS: &str = "comments";
const USERS: &str = "users";

/// How long Zendesk keeps an idempotency key.
const KEY_LIFETIME_MS: i64 = 2 * 60 * 60 * 1000;

/// The path under `/api/v2`, without a `.json` suffix.
pub(crate) fn api_path(req: &ProviderRequest) -> Option<String> {
    host::subdomain(&req.host)?;
    let rest = req.path.strip_prefix("/api/v2")?;
    Some(rest.strip_suffix(".json").unwrap_or(rest).to_owned())
}

/// Authenticates (API token, or OAuth with one of `scopes`; the 403 names `named`).
fn authorize(ctx: &Ctx<'_>, scopes: [&str; 2], named: &str) -> Result<(), Response> {
    let Some(sub) = host::subdomain(&ctx.req.host) else {
        return Err(host::unauthorized());
    };
    if !host::help_desk_exists(ctx.state, sub) {
        return Err(host::no_help_desk(&ctx.req.host));
    }
    if wire::bearer_token(&ctx.req.headers).is_some() {
        let grant = host::oauth_grant(ctx.state, sub, ctx.req)?;
        let wanted = scopes.map(str::to_owned);
        if !crate::oauth::scopes_satisfy(&grant.scopes, &wanted) {
            return Err(host::missing_scopes(named));
        }
        return Ok(());
    }
    host::authenticate(ctx.state, sub, ctx.req)
        .map(|_| ())
        .ok_or_else(host::unauthorized)
}

fn record_invalid(field: &str, description: &str, error: &str) -> Response {
    wire::json(
        StatusCode::UNPROCESSABLE_ENTITY,
        json!({"error": "RecordInvalid", "description": "Record validation errors",
            "details": {field: [{"description": description, "error": error}]}}),
    )
}

fn not_found() -> Response {
    wire::json(
        StatusCode::NOT_FOUND,
        json!({"error": "RecordNotFound", "description": "Not found"}),
    )
}

fn bad_json() -> Response {
    wire::json(
        StatusCode::BAD_REQUEST,
        json!({"error": "Unprocessable Entity", "description": "The request body is not valid JSON"}),
    )
}

/// `{"<root>": {…}}` of the body, or the 400 Zendesk answers for a missing root.
fn root(ctx: &Ctx<'_>, name: &str) -> Result<Map<String, Value>, Response> {
    let Ok(body) = ctx.json() else {
        return Err(bad_json());
    };
    match body.get(name) {
        Some(Value::Object(map)) => Ok(map.clone()),
        _ => Err(wire::json(
            StatusCode::BAD_REQUEST,
            json!({"error": "InvalidParameter", "description": format!("Parameter {name} is required")}),
        )),
    }
}

fn enum_value(map: &Map<String, Value>, field: &str, allowed: &[&str]) -> Result<(), Response> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if allowed.contains(&s.as_str()) => Ok(()),
        Some(_) => Err(record_invalid(
            field,
            &format!("{field}: is not one of {}", allowed.join(", ")),
            "InvalidValue",
        )),
    }
}

/// The comment of a ticket body, checked: `body` or `html_body`, `public` a boolean.
fn comment(map: &Map<String, Value>) -> Result<Value, Response> {
    let blank = || record_invalid("base", "Description: cannot be blank", "BlankValue");
    let Some(comment) = map.get("comment").filter(|c| c.is_object()) else {
        return Err(blank());
    };
    if str_field(comment, "body").is_none() && str_field(comment, "html_body").is_none() {
        return Err(blank());
    }
    if comment.get("public").is_some_and(|p| !p.is_boolean()) {
        return Err(record_invalid(
            "public",
            "Public: must be true or false",
            "InvalidValue",
        ));
    }
    Ok(comment.clone())
}

fn ticket_url(ctx: &Ctx<'_>, id: u64) -> String {
    format!("https://{}/api/v2/tickets/{id}.json", ctx.req.host)
}

/// Stores a comment of `ticket_id` added by the audit `audit_id` (its change).
fn store_comment(ctx: &Ctx<'_>, ticket_id: u64, comment: &Value, audit_id: u64) -> Value {
    let id = ctx.next_number("comment", 3_000_000_001);
    let body = comment
        .get("body")
        .or_else(|| comment.get("html_body"))
        .cloned()
        .unwrap_or(Value::Null);
    let stored = json!({
        "id": id, "type": "Comment", "ticket_id": ticket_id, "audit_id": audit_id, "author_id": 123,
        "body": body, "html_body": body, "plain_body": body,
        "public": comment.get("public").cloned().unwrap_or(json!(true)),
        "created_at": now_rfc3339(),
    });
    ctx.insert(COMMENTS, &id.to_string(), &stored);
    stored
}

fn fingerprint(ctx: &Ctx<'_>) -> Vec<u8> {
    let mut digest = Sha256::new();
    digest.update(ctx.req.method.as_str().as_bytes());
    digest.update(ctx.req.path.as_bytes());
    digest.update(&ctx.req.body);
    digest.finalize().to_vec()
}

fn replay(replay: &Replay) -> Response {
    let status = StatusCode::from_u16(replay.status).unwrap_or(StatusCode::CREATED);
    let mut response = wire::json(status, replay.body.clone());
    if let Some(location) = replay
        .location
        .as_deref()
        .and_then(|l| HeaderValue::from_str(l).ok())
    {
        response.headers_mut().insert("location", location);
    }
    response
        .headers_mut()
        .insert("x-idempotency-lookup", HeaderValue::from_static("hit"));
    response
}

fn create_ticket(ctx: &Ctx<'_>) -> Outcome {
    if let Err(response) = authorize(ctx, ["write", "tickets:write"], "write") {
        return response.into();
    }
    let key = ctx
        .header("idempotency-key")
        .filter(|k| !k.is_empty())
        .map(|k| format!("{}:{k}", ctx.req.host));
    let print = fingerprint(ctx);
    if let Some(key) = &key {
        let now = crate::clock::now_ms();
        let mut store = ctx.state.dispatch_store();
        store
            .idempotency
            .retain(|_, r| now - r.stored_ms < KEY_LIFETIME_MS);
        if let Some(stored) = store.idempotency.get(key) {
            if stored.in_flight() {
                return wire::json(
                    StatusCode::CONFLICT,
                    json!({"error": "IdempotentRequestInProgress", "description": "A request with this idempotency key is still being processed"}),
                )
                .into();
            }
            if stored.fingerprint == print {
                return replay(stored).into();
            }
            return wire::json(
                StatusCode::BAD_REQUEST,
                json!({"error": "IdempotentRequestError", "description": "Request parameters don't match the given idempotency key"}),
            )
            .into();
        }
    }
    let map = match root(ctx, "ticket") {
        Ok(map) => map,
        Err(response) => return response.into(),
    };
    let first = match comment(&map)
        .and_then(|c| {
            enum_value(&map, "priority", &["urgent", "high", "normal", "low"]).map(|()| c)
        })
        .and_then(|c| {
            enum_value(&map, "type", &["problem", "incident", "question", "task"]).map(|()| c)
        })
        .and_then(|c| check_ticket_fields(&map).map(|()| c))
    {
        Ok(comment) => comment,
        Err(response) => return response.into(),
    };
    let id = ctx.next_number("ticket", 1);
    let now = now_rfc3339();
    let requester_id = map.get("requester_id").cloned().unwrap_or_else(|| {
        json!(if map.contains_key("requester") {
            381_000_000_000 + id
        } else {
            123
        })
    });
    let ticket = json!({
        "id": id,
        "url": ticket_url(ctx, id),
        "external_id": map.get("external_id"),
        "subject": map.get("subject"),
        "raw_subject": map.get("subject"),
        "description": first.get("body").or_else(|| first.get("html_body")),
        "priority": map.get("priority"),
        "type": map.get("type"),
        "status": map.get("status").cloned().unwrap_or(json!("new")),
        "tags": map.get("tags").cloned().unwrap_or(json!([])),
        "requester_id": requester_id,
        "submitter_id": 123,
        "via": {"channel": "api"},
        "created_at": now,
        "updated_at": now,
    });
    ctx.insert(TICKETS, &id.to_string(), &ticket);
    let audit_id = ctx.next_number("audit", 9_000_000_001);
    store_comment(ctx, id, &first, audit_id);
    let body = json!({"ticket": ticket});
    let location = ticket_url(ctx, id);
    if let Some(key) = key {
        ctx.state.dispatch_store().idempotency.insert(
            key,
            Replay {
                fingerprint: print,
                status: 201,
                body: body.clone(),
                location: Some(location.clone()),
                stored_ms: crate::clock::now_ms(),
                in_flight_until_ms: ctx.in_flight_until_ms(),
            },
        );
    }
    let mut response = wire::json(StatusCode::CREATED, body);
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert("location", value);
    }
    if ctx.header("idempotency-key").is_some() {
        response
            .headers_mut()
            .insert("x-idempotency-lookup", HeaderValue::from_static("miss"));
    }
    Outcome::created(response, ticket)
}

fn check_ticket_fields(map: &Map<String, Value>) -> Result<(), Response> {
    if let Some(tags) = map.get("tags")
        && !tags
            .as_array()
            .is_some_and(|t| t.iter().all(Value::is_string))
    {
        return Err(record_invalid(
            "tags",
            "Tags: must be a list of strings",
            "InvalidValue",
        ));
    }
    if let Some(external) = map.get("external_id")
        && external.as_str().is_none_or(|e| e.chars().count() > 255)
    {
        return Err(record_invalid(
            "external_id",
            "External: is too long or not text",
            "InvalidValue",
        ));
    }
    if let Some(requester) = map.get("requester") {
        let email_ok = requester
            .get("email")
            .is_none_or(|e| e.as_str().is_some_and(|e| e.contains('@')));
        if !requester.is_object() || !email_ok {
            return Err(record_invalid(
                "requester",
                "Requester: Email is invalid",
                "InvalidValue",
            ));
        }
    }
    Ok(())
}

fn list_tickets(ctx: &Ctx<'_>) -> Outcome {
    if let Err(response) = authorize(ctx, ["read", "tickets:read"], "read") {
        return response.into();
    }
    let external = ctx.query("external_id");
    let tickets: Vec<Value> = ctx
        .list(TICKETS)
        .into_iter()
        .filter(|t| external.as_deref().is_none_or(|e| t["external_id"] == e))
        .collect();
    let count = tickets.len();
    wire::json(
        StatusCode::OK,
        json!({"tickets": tickets, "count": count, "next_page": null, "previous_page": null}),
    )
    .into()
}

fn update_ticket(ctx: &Ctx<'_>) -> Outcome {
    if let Err(response) = authorize(ctx, ["write", "tickets:write"], "write") {
        return response.into();
    }
    let id = ctx.param(0).to_owned();
    let Some(mut ticket) = ctx.find(TICKETS, &id) else {
        return not_found().into();
    };
    let map = match root(ctx, "ticket") {
        Ok(map) => map,
        Err(response) => return response.into(),
    };
    if let Err(response) = enum_value(&map, "priority", &["urgent", "high", "normal", "low"]) {
        return response.into();
    }
    let audit_id = ctx.next_number("audit", 9_000_000_001);
    let added = match map.get("comment") {
        None => None,
        Some(_) => match comment(&map) {
            Ok(c) => Some(store_comment(ctx, id.parse().unwrap_or(0), &c, audit_id)),
            Err(response) => return response.into(),
        },
    };
    if let Some(fields) = ticket.as_object_mut() {
        for (k, v) in &map {
            if k != "comment" {
                fields.insert(k.clone(), v.clone());
            }
        }
        fields.insert("updated_at".into(), json!(now_rfc3339()));
    }
    ctx.replace(TICKETS, &id, &ticket);
    let events: Vec<Value> = added.iter().cloned().collect();
    let audit = json!({"id": audit_id, "ticket_id": ticket["id"],
        "created_at": now_rfc3339(), "author_id": 123, "events": events});
    let answer = json!({"ticket": ticket, "audit": audit});
    match added {
        Some(comment) => Outcome::created(wire::json(StatusCode::OK, answer), comment),
        None => wire::json(StatusCode::OK, answer).into(),
    }
}

fn list_comments(ctx: &Ctx<'_>) -> Outcome {
    if let Err(response) = authorize(ctx, ["read", "tickets:read"], "read") {
        return response.into();
    }
    let id = ctx.param(0).to_owned();
    if ctx.find(TICKETS, &id).is_none() {
        return not_found().into();
    }
    // Kept with its ticket here; Zendesk's comments do not name their ticket.
    let comments: Vec<Value> = ctx
        .list(COMMENTS)
        .into_iter()
        .filter(|c| super::id_matches(&c["ticket_id"], &id))
        .map(|mut c| {
            if let Some(fields) = c.as_object_mut() {
                fields.remove("ticket_id");
            }
            c
        })
        .collect();
    let count = comments.len();
    wire::json(
        StatusCode::OK,
        json!({"comments": comments, "count": count, "next_page": null, "previous_page": null}),
    )
    .into()
}

fn upsert_user(ctx: &Ctx<'_>) -> Outcome {
    if let Err(response) = authorize(ctx, ["write", "users:write"], "write") {
        return response.into();
    }
    let map = match root(ctx, "user") {
        Ok(map) => map,
        Err(response) => return response.into(),
    };
    let user = Value::Object(map.clone());
    if str_field(&user, "name").is_none() {
        return record_invalid(
            "name",
            "Name: is too short (minimum is 1 character)",
            "InvalidValue",
        )
        .into();
    }
    if let Some(email) = user.get("email")
        && !email.as_str().is_some_and(|e| e.contains('@'))
    {
        return record_invalid("email", "Email: is not properly formatted", "InvalidFormat").into();
    }
    let matches = |stored: &Value| {
        ["email", "external_id"].iter().any(|field| {
            str_field(&user, field).is_some_and(|v| {
                stored[*field]
                    .as_str()
                    .is_some_and(|s| s.eq_ignore_ascii_case(v))
            })
        })
    };
    let existing = ctx.list(USERS).into_iter().find(|u| matches(u));
    let now = now_rfc3339();
    let (status, record) = match existing {
        Some(mut stored) => {
            if let Some(fields) = stored.as_object_mut() {
                for (k, v) in &map {
                    fields.insert(k.clone(), v.clone());
                }
                fields.insert("updated_at".into(), json!(now));
            }
            let id = stored["id"].to_string();
            ctx.replace(USERS, &id, &stored);
            (StatusCode::OK, stored)
        }
        None => {
            let id = ctx.next_number("user", 381_000_000_001);
            let mut fields = map;
            fields.insert("id".into(), json!(id));
            fields.insert(
                "url".into(),
                json!(format!("https://{}/api/v2/users/{id}.json", ctx.req.host)),
            );
            fields.insert("role".into(), json!("end-user"));
            fields.insert("created_at".into(), json!(now));
            fields.insert("updated_at".into(), json!(now));
            let stored = Value::Object(fields);
            ctx.insert(USERS, &id.to_string(), &stored);
            (StatusCode::CREATED, stored)
        }
    };
    let response = wire::json(status, json!({"user": record}));
    if status == StatusCode::CREATED {
        Outcome::created(response, record)
    } else {
        response.into()
    }
}

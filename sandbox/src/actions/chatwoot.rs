//! Chatwoot Application API actions under `{host}/api/v1/accounts/{account}`: private
//! notes (message create, list), agent bots (create, list) and assigning one to an
//! inbox.
//!
//! Auth: header `api_access_token` of a user of that host → 401
//! `{"error":"Invalid Access Token"}`; another account in the path → 401
//! `{"error":"You are not authorized to do this action"}` (Chatwoot's policies answer 401,
//! not 403). The sandbox has no conversations or inboxes of its own: conversation ids
//! 1–1000 and inbox ids 1–10 exist in every account, others answer 404
//! `{"error":"Resource could not be found"}`. Validation: 422 as the Rails source does.

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{Ctx, Outcome, RouteDef, def, now_rfc3339, str_field};
use crate::providers::ProviderRequest;
use crate::providers::chatwoot as host;
use crate::state::ProviderAccount;
use crate::wire;

pub(crate) const ROUTES: &[RouteDef] = &[
    def(
        Method::POST,
        "/accounts/{}/conversations/{}/messages",
        "chatwoot.message_create",
        create_message,
    ),
    def(
        Method::GET,
        "/accounts/{}/conversations/{}/messages",
        "chatwoot.messages_list",
        list_messages,
    ),
    def(
        Method::POST,
        "/accounts/{}/agent_bots",
        "chatwoot.agent_bot_create",
        create_bot,
    ),
    def(
        Method::GET,
        "/accounts/{}/agent_bots",
        "chatwoot.agent_bots_list",
        list_bots,
    ),
    def(
        Method::POST,
        "/accounts/{}/inboxes/{}/set_agent_bot",
        "chatwoot.set_agent_bot",
        set_bot,
    ),
];

const MESSAGES: &str = "messages";
const BOTS: &str = "agent_bots";
const ASSIGNMENTS: &str = "inbox_agent_bots";

/// Conversation display ids that exist in every account.
pub const CONVERSATIONS: std::ops::RangeInclusive<u64> = 1..=1000;
/// Inbox ids that exist in every account.
pub const INBOXES: std::ops::RangeInclusive<u64> = 1..=10;

/// The path under `/api/v1`.
pub(crate) fn api_path(req: &ProviderRequest) -> Option<String> {
    req.path.strip_prefix("/api/v1").map(str::to_owned)
}

fn error(status: StatusCode, message: &str) -> Response {
    wire::json(status, json!({"error": message}))
}

fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "Resource could not be found")
}

/// The user's token and the account in the path.
fn authorize(ctx: &Ctx<'_>) -> Result<u64, Response> {
    let Some(account) = host::authenticate(ctx.state, ctx.req) else {
        return Err(error(StatusCode::UNAUTHORIZED, "Invalid Access Token"));
    };
    let ProviderAccount::Chatwoot { account_id, .. } = account.provider else {
        return Err(error(StatusCode::UNAUTHORIZED, "Invalid Access Token"));
    };
    if ctx.param(0) != account_id.to_string() {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "You are not authorized to do this action",
        ));
    }
    Ok(account_id)
}

fn in_range(text: &str, range: &std::ops::RangeInclusive<u64>) -> Option<u64> {
    text.parse::<u64>().ok().filter(|n| range.contains(n))
}

fn create_message(ctx: &Ctx<'_>) -> Outcome {
    let account = match authorize(ctx) {
        Ok(account) => account,
        Err(response) => return response.into(),
    };
    let Some(conversation) = in_range(ctx.param(1), &CONVERSATIONS) else {
        return not_found().into();
    };
    let Ok(body) = ctx.json() else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "param is missing or the value is empty: content",
        )
        .into();
    };
    if str_field(&body, "content").is_none() {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "param is missing or the value is empty: content",
        )
        .into();
    }
    let message_type = body
        .get("message_type")
        .and_then(Value::as_str)
        .unwrap_or("outgoing");
    if !["outgoing", "incoming"].contains(&message_type) {
        return wire::json(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"message": format!("'{message_type}' is not a valid message_type"), "attributes": ["message_type"]}),
        )
        .into();
    }
    if body.get("private").is_some_and(|p| !p.is_boolean()) {
        return wire::json(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"message": "Private is not included in the list", "attributes": ["private"]}),
        )
        .into();
    }
    let id = ctx.next_number("message", 1001);
    let created_at = crate::clock::now_ms() / 1000;
    let message = json!({
        "id": id,
        "content": body.get("content"),
        "account_id": account,
        "inbox_id": 1,
        "conversation_id": conversation,
        "message_type": if message_type == "outgoing" { 1 } else { 0 },
        "content_type": body.get("content_type").cloned().unwrap_or(json!("text")),
        "content_attributes": body.get("content_attributes").cloned().unwrap_or(json!({})),
        "created_at": created_at,
        "private": body.get("private").cloned().unwrap_or(json!(false)),
        "status": "sent",
        "source_id": null,
        "sender": {"id": 1, "type": "user"},
    });
    ctx.insert(MESSAGES, &id.to_string(), &message);
    Outcome::created(wire::json(StatusCode::OK, message.clone()), message)
}

fn list_messages(ctx: &Ctx<'_>) -> Outcome {
    if let Err(response) = authorize(ctx) {
        return response.into();
    }
    let Some(conversation) = in_range(ctx.param(1), &CONVERSATIONS) else {
        return not_found().into();
    };
    let messages: Vec<Value> = ctx
        .list(MESSAGES)
        .into_iter()
        .filter(|m| m["conversation_id"] == conversation)
        .collect();
    wire::json(
        StatusCode::OK,
        json!({"meta": {"labels": [], "additional_attributes": {}, "contact": {}, "assignee": null}, "payload": messages}),
    )
    .into()
}

fn create_bot(ctx: &Ctx<'_>) -> Outcome {
    let account = match authorize(ctx) {
        Ok(account) => account,
        Err(response) => return response.into(),
    };
    let Ok(body) = ctx.json() else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "param is missing or the value is empty: name",
        )
        .into();
    };
    if str_field(&body, "name").is_none() {
        return wire::json(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"message": "Name can't be blank", "attributes": ["name"]}),
        )
        .into();
    }
    if let Some(url) = body.get("outgoing_url")
        && !url
            .as_str()
            .is_some_and(|u| u.starts_with("http://") || u.starts_with("https://"))
    {
        return wire::json(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"message": "Outgoing url is invalid", "attributes": ["outgoing_url"]}),
        )
        .into();
    }
    let id = ctx.next_number("agent_bot", 1);
    let bot = json!({
        "id": id,
        "name": body.get("name"),
        "description": body.get("description").cloned().unwrap_or(json!("")),
        "thumbnail": "",
        "outgoing_url": body.get("outgoing_url"),
        "bot_type": body.get("bot_type").cloned().unwrap_or(json!("webhook")),
        "bot_config": body.get("bot_config").cloned().unwrap_or(json!({})),
        "account_id": account,
        "access_token": format!("cwbot-{}", super::random_hex(12)),
        "system_bot": false,
    });
    ctx.insert(BOTS, &id.to_string(), &bot);
    Outcome::created(wire::json(StatusCode::OK, bot.clone()), bot)
}

fn list_bots(ctx: &Ctx<'_>) -> Outcome {
    if let Err(response) = authorize(ctx) {
        return response.into();
    }
    wire::json(StatusCode::OK, Value::Array(ctx.list(BOTS))).into()
}

fn set_bot(ctx: &Ctx<'_>) -> Outcome {
    if let Err(response) = authorize(ctx) {
        return response.into();
    }
    let Some(inbox) = in_range(ctx.param(1), &INBOXES) else {
        return not_found().into();
    };
    let bot = match ctx.json().ok().and_then(|b| b.get("agent_bot").cloned()) {
        None | Some(Value::Null) => Value::Null,
        Some(id) => {
            let key = match &id {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.clone(),
                _ => return not_found().into(),
            };
            if ctx.find(BOTS, &key).is_none() {
                return not_found().into();
            }
            id
        }
    };
    let assignment = json!({"inbox_id": inbox, "agent_bot": bot, "at": now_rfc3339()});
    // An inbox has one bot: setting the bot it already has changes nothing (a repeated
    // request makes nothing); another bot replaces the assignment.
    let inbox_key = inbox.to_string();
    let same = ctx
        .find(ASSIGNMENTS, &inbox_key)
        .is_some_and(|a| a["agent_bot"] == assignment["agent_bot"]);
    if same {
        return StatusCode::NO_CONTENT.into_response().into();
    }
    if !ctx.replace(ASSIGNMENTS, &inbox_key, &assignment) {
        ctx.insert(ASSIGNMENTS, &inbox_key, &assignment);
    }
    Outcome::created(StatusCode::NO_CONTENT.into_response(), assignment)
}

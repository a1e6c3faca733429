//! Gmail as the caller: `POST /v1/me/gmail/send` builds the MIME message with
//! `mail-builder` (RFC 5322 headers, encoded words for non-ASCII, multipart/alternative
//! for text and HTML, multipart/mixed with attachments) and sends it with
//! `users.messages.send` (`raw`, base64url); `GET /v1/me/gmail/profile` is the
//! connected address (and, with `gmail.readonly` granted, Gmail's own profile).
//!
//! Limits, stated and enforced before anything is sent (`conduit::mail`): the request
//! body at most 4 MiB; at most 100 recipients (to, cc and bcc together); the subject 998
//! characters; text and HTML bodies 1 MiB each; at most 10 attachments, 3 MiB decoded
//! in all (their base64 in the request counts against the 4 MiB), file names 255
//! characters. A CR or LF in any header value (an address, a name, the subject, a
//! file name or content type, a message id) is 400 `header_injection`; an invalid
//! address 400 `invalid_fields` naming it. A message over 1 MiB goes through Gmail's
//! upload URI (`uploadType=multipart`), smaller ones as `raw`.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use conduit::http::{self, ApiError};
use conduit::mail::{Draft, MAX_REQUEST_BYTES, check};
use conduit::oauth::lifecycle::Tokens;
use conduit::scopes;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Response};
use serde_json::{Value, json};

use crate::{Call, own_connection, own_connection_for, token_error};

const KIND: &str = "gmail";

/// Messages larger than this (as MIME) are sent through Gmail's upload URI
/// (`uploadType=multipart`: the `threadId` as JSON, then the message as
/// `message/rfc822`) rather than as base64url `raw` in JSON, a third larger — Google's
/// guidance for media over a few megabytes. The request limit still bounds the message.
pub const UPLOAD_ABOVE: usize = 1024 * 1024;

/// A `multipart/related` upload body of `mime` with its `Message` metadata: the content
/// type (with its boundary, one the message does not contain) and the bytes.
fn related(mime: &[u8], thread_id: Option<&str>) -> (String, Vec<u8>) {
    let mut boundary = format!("conduit_{}", ulid::Ulid::new());
    while mime
        .windows(boundary.len())
        .any(|w| w == boundary.as_bytes())
    {
        boundary = format!("conduit_{}", ulid::Ulid::new());
    }
    let meta = match thread_id {
        Some(t) => json!({ "threadId": t }),
        None => json!({}),
    };
    let mut body = Vec::with_capacity(mime.len() + 256);
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{meta}\r\n--{boundary}\r\nContent-Type: message/rfc822\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(mime);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/related; boundary={boundary}"), body)
}

/// The Gmail API URL of `users.{…}` for the signed-in user, on Gmail's own host (the
/// discovery document's server).
fn gmail_url(connector: &conduit::connector::Connector<'_>, rest: &str) -> Result<String, String> {
    connector
        .endpoint(&format!(
            "https://gmail.googleapis.com/gmail/v1/users/me/{rest}"
        ))
        .map_err(|e| e.to_string())
}

/// Google's error body: `{"error":{"code","message","status","errors":[{"reason"}]}}`.
pub(crate) fn google_error(status: u16, body: &Value) -> (String, String) {
    let e = &body["error"];
    let reason = e["errors"][0]["reason"]
        .as_str()
        .or_else(|| e["status"].as_str())
        .unwrap_or("")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(64)
        .collect();
    let message = e["message"]
        .as_str()
        .unwrap_or("")
        .chars()
        .filter(|c| !c.is_control())
        .take(300)
        .collect::<String>();
    let message = if message.is_empty() {
        format!("Gmail answered {status}")
    } else {
        message
    };
    (reason, message)
}

/// A Gmail answer that is not a success, as the caller sees it.
async fn refused(
    call: &Call<'_>,
    conn: &conduit::connections::Connection,
    status: u16,
    body: &Value,
    retry_after: Option<u32>,
) -> ApiError {
    let (reason, message) = google_error(status, body);
    let rate_limited = status == 429
        || (status == 403 && (reason == "rateLimitExceeded" || reason == "userRateLimitExceeded"));
    if rate_limited {
        return ApiError::Unavailable {
            retry_after: retry_after.unwrap_or(5).clamp(1, 300),
            cause: "gmail_rate_limited",
        };
    }
    let insufficient = status == 403
        && (reason == "insufficientPermissions"
            || body.to_string().contains("ACCESS_TOKEN_SCOPE_INSUFFICIENT"));
    if insufficient {
        let needed = vec!["https://www.googleapis.com/auth/gmail.send".to_owned()];
        if let Err(e) = scopes::mark_missing(
            call.app,
            &conn.tenant,
            &conn.id,
            &needed,
            "gmail",
            &call.meta.request_id,
        )
        .await
        {
            tracing::warn!(error = %e, "marking the missing scope failed");
        }
        let mut extra = serde_json::Map::new();
        extra.insert("missing_scopes".into(), json!(needed));
        extra.insert(
            "reconnect".into(),
            json!({"method": "POST", "path": "/v1/oauth/google/start",
                   "body": {"kind": KIND, "uses": ["action:send_email"]}}),
        );
        return ApiError::ConflictWith {
            code: "scopes_missing",
            message: "Gmail refused: your connection lacks the send scope; reconnect it".into(),
            extra,
        };
    }
    match status {
        // A reply's thread Gmail does not know.
        404 => ApiError::NotFound("Gmail knows no such thread in your mailbox".into()),
        400 => ApiError::bad_request(
            "provider_rejected",
            format!("Gmail refused the message: {message}"),
        ),
        _ => ApiError::BadGateway {
            code: "provider_error",
            message: format!("Gmail answered {status}: {message}"),
        },
    }
}

/// `POST /v1/me/gmail/send`: `{to, cc?, bcc?, reply_to?, subject, text?, html?,
/// attachments?, thread_id?, in_reply_to?, references?}` → `{message_id, thread_id}`.
pub async fn send(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let body: Draft = http::json_body_up_to(&call.req, MAX_REQUEST_BYTES)?;
    // Bad mail is refused whatever the connection: checked before it is looked up.
    let checked = check(body)?;
    let conn = own_connection_for(call, KIND, "action:send_email").await?;
    let from = conn.identity.as_ref().and_then(|i| i.email.clone());
    let out = checked.mime(from.as_deref())?;
    let tokens = Tokens::new(call.app, "gmail", call.meta.request_id.clone());
    let sent = if out.mime.len() > UPLOAD_ABOVE {
        // Large mail goes to the upload URI as the message itself (no base64).
        let (content_type, body) = related(&out.mime, out.thread_id.as_deref());
        tokens
            .send(&conn.tenant, &conn.id, |connector, client| {
                let url = connector
                    .endpoint(
                        "https://gmail.googleapis.com/upload/gmail/v1/users/me/messages/send?uploadType=multipart",
                    )
                    .map_err(|e| e.to_string())?;
                Ok(client
                    .post(url)
                    .header(reqwest::header::CONTENT_TYPE, content_type.as_str())
                    .body(body.clone()))
            })
            .await
    } else {
        let mut payload = json!({ "raw": URL_SAFE_NO_PAD.encode(&out.mime) });
        if let Some(t) = &out.thread_id {
            payload["threadId"] = json!(t);
        }
        tokens
            .send(&conn.tenant, &conn.id, |connector, client| {
                Ok(client
                    .post(gmail_url(connector, "messages/send")?)
                    .json(&payload))
            })
            .await
    };
    let resp = sent.map_err(token_error)?;
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u32>().ok());
    let answer: Value = resp.json().await.unwrap_or(Value::Null);
    if !(200..300).contains(&status) {
        tracing::info!(status, connection_id = %conn.id, "gmail send refused");
        return Err(refused(call, &conn, status, &answer, retry_after).await);
    }
    let (Some(id), Some(thread)) = (answer["id"].as_str(), answer["threadId"].as_str()) else {
        return Err(ApiError::BadGateway {
            code: "provider_error",
            message: "Gmail's answer named no message or thread".into(),
        });
    };
    tracing::info!(
        connection_id = %conn.id,
        recipients = out.recipients,
        attachments = out.attachments,
        bytes = out.mime.len(),
        "gmail message sent"
    );
    http::json(
        StatusCode::OK,
        &json!({ "message_id": id, "thread_id": thread, "connection_id": conn.id }),
    )
}

/// `GET /v1/me/gmail/profile`: the connected address; with `gmail.readonly` granted,
/// Gmail's profile too (message and thread totals).
pub async fn profile(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    http::query(&call.req, &[])?;
    let conn = own_connection(call, KIND).await?;
    let email = conn.identity.as_ref().and_then(|i| i.email.clone());
    let mut out = json!({
        "connection_id": conn.id,
        "email_address": email,
        "status": conn.status,
        "scopes": conn.scopes,
    });
    let reads = scopes::check(call.app.catalogue, &conn, &["action:read_email".to_owned()]);
    if reads.is_ok() {
        let tokens = Tokens::new(call.app, "gmail", call.meta.request_id.clone());
        let resp = tokens
            .send(&conn.tenant, &conn.id, |connector, client| {
                Ok(client.get(gmail_url(connector, "profile")?))
            })
            .await
            .map_err(token_error)?;
        let status = resp.status().as_u16();
        let answer: Value = resp.json().await.unwrap_or(Value::Null);
        if !(200..300).contains(&status) {
            return Err(refused(call, &conn, status, &answer, None).await);
        }
        if let Some(a) = answer["emailAddress"].as_str() {
            out["email_address"] = json!(a);
        }
        out["messages_total"] = answer["messagesTotal"].clone();
        out["threads_total"] = answer["threadsTotal"].clone();
    }
    http::json(StatusCode::OK, &out)
}

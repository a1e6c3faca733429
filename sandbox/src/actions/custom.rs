//! A tenant's own REST API (Custom API action) under any registered custom base path:
//! writes (`POST {base}` and `POST {base}/{collection}` create, `PUT`/`PATCH`/`DELETE
//! {base}/{collection}/{id}`) and reads of what was written (`GET {base}/{collection}`,
//! `GET {base}/{collection}/{id}`; other `GET`s stay with `providers::custom`).
//!
//! Auth: the account's bearer token, `X-Api-Key` or Basic pair → 401. Idempotency
//! (draft-ietf-httpapi-idempotency-key-header): `Idempotency-Key` as an sf-string
//! (`"…"`) or bare; a malformed one → 400; the same key with the same request → the first
//! answer again; the same key with another request → 422; the same key while the first
//! is still being answered (its answer held by a `timeout` fault) → 409.

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{Action, Ctx, Outcome, Replay};
use crate::providers::ProviderRequest;
use crate::providers::custom as host;
use crate::state::{ProviderAccount, SandboxState};
use crate::wire;

/// Route name of a write.
pub const WRITE: &str = "custom.write";
/// Route name of a read of written records.
pub const READ: &str = "custom.read";

/// The registered base path `req` falls under (the longest).
fn base_path(state: &SandboxState, req: &ProviderRequest) -> Option<String> {
    state
        .accounts()
        .into_iter()
        .filter_map(|account| match account.provider {
            ProviderAccount::Custom {
                host, base_path, ..
            } if host == req.host && host::under(&req.path, &base_path) => Some(base_path),
            _ => None,
        })
        .max_by_key(String::len)
}

/// The action for a custom API request, if it is a write or a read of written records.
pub(crate) fn route(state: &SandboxState, req: &ProviderRequest) -> Option<Action> {
    let base = base_path(state, req)?;
    let rest = req.path.strip_prefix(&base)?.trim_matches('/').to_owned();
    // The base itself takes writes (the catalogue's default request is `POST /`).
    if rest.is_empty() && req.method != Method::POST {
        return None;
    }
    let params = vec![base, rest.clone()];
    match req.method {
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE => Some(Action {
            name: WRITE,
            handler: write,
            params,
        }),
        Method::GET => {
            let store = state.dispatch_store();
            let (collection, _) = split(&rest);
            let known = store.records.iter().any(|r| {
                r.provider == crate::state::Provider::Custom
                    && r.host == req.host
                    && r.collection == collection
            });
            known.then_some(Action {
                name: READ,
                handler: read,
                params,
            })
        }
        _ => None,
    }
}

/// `collection/id` → (`collection`, `Some(id)`); `collection` → (`collection`, `None`).
fn split(rest: &str) -> (String, Option<String>) {
    match rest.rsplit_once('/') {
        Some((collection, id)) => (collection.to_owned(), Some(id.to_owned())),
        None => (rest.to_owned(), None),
    }
}

fn error(status: StatusCode, code: &str) -> Response {
    wire::json(status, json!({"error": code}))
}

fn authenticate(ctx: &Ctx<'_>) -> Result<(), Response> {
    host::authenticate(ctx.state, ctx.req, ctx.param(0))
        .map(|_| ())
        .ok_or_else(host::unauthorized)
}

/// The key of an `Idempotency-Key` header: an sf-string (quoted, no control characters,
/// `\"` and `\\` escapes) or, leniently, a bare token. `Err` when malformed.
fn idempotency_key(raw: &str) -> Result<String, ()> {
    let raw = raw.trim();
    if let Some(inner) = raw.strip_prefix('"') {
        let inner = inner.strip_suffix('"').ok_or(())?;
        let mut key = String::new();
        let mut chars = inner.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(e @ ('"' | '\\')) => key.push(e),
                    _ => return Err(()),
                },
                '"' => return Err(()),
                c if c.is_ascii_graphic() || c == ' ' => key.push(c),
                _ => return Err(()),
            }
        }
        return if key.is_empty() { Err(()) } else { Ok(key) };
    }
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_graphic() && b != b'"') {
        return Err(());
    }
    Ok(raw.to_owned())
}

fn write(ctx: &Ctx<'_>) -> Outcome {
    if let Err(response) = authenticate(ctx) {
        return response.into();
    }
    let key = match ctx.header("idempotency-key").map(idempotency_key) {
        None => None,
        Some(Ok(key)) => Some(format!("custom:{}{}:{key}", ctx.req.host, ctx.param(0))),
        Some(Err(())) => return error(StatusCode::BAD_REQUEST, "invalid_idempotency_key").into(),
    };
    let mut digest = Sha256::new();
    digest.update(ctx.req.method.as_str().as_bytes());
    digest.update(ctx.req.path.as_bytes());
    digest.update(&ctx.req.body);
    let print = digest.finalize().to_vec();
    if let Some(key) = &key
        && let Some(stored) = ctx.state.dispatch_store().idempotency.get(key)
    {
        if stored.in_flight() {
            return error(StatusCode::CONFLICT, "request_in_progress").into();
        }
        if stored.fingerprint != print {
            return error(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused").into();
        }
        let status = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
        return if stored.body.is_null() {
            status.into_response().into()
        } else {
            wire::json(status, stored.body.clone()).into()
        };
    }
    let outcome = apply(ctx);
    // Only effects are remembered: a refused request may be sent again with the key.
    if let (Some(key), Some(record)) = (key, &outcome.created) {
        let body = if outcome.response.status() == StatusCode::NO_CONTENT {
            Value::Null
        } else {
            record.clone()
        };
        ctx.state.dispatch_store().idempotency.insert(
            key,
            Replay {
                fingerprint: print,
                status: outcome.response.status().as_u16(),
                body,
                location: None,
                stored_ms: crate::clock::now_ms(),
                in_flight_until_ms: ctx.in_flight_until_ms(),
            },
        );
    }
    outcome
}

fn apply(ctx: &Ctx<'_>) -> Outcome {
    let (collection, id) = split(ctx.param(1));
    let body = serde_json::from_slice::<Value>(&ctx.req.body)
        .unwrap_or_else(|_| json!({"body": String::from_utf8_lossy(&ctx.req.body)}));
    let fields = match body {
        Value::Object(map) => map,
        other => {
            let mut map = serde_json::Map::new();
            map.insert("body".into(), other);
            map
        }
    };
    match ctx.req.method {
        Method::POST => {
            let id = format!("cus_{}", ctx.next_number("record", 1));
            let mut record = fields;
            record.insert("id".into(), json!(id));
            let record = Value::Object(record);
            ctx.insert(ctx.param(1), &id, &record);
            Outcome::created(wire::json(StatusCode::CREATED, record.clone()), record)
        }
        Method::DELETE => {
            let Some(id) = id.filter(|id| ctx.find(&collection, id).is_some()) else {
                return error(StatusCode::NOT_FOUND, "not_found").into();
            };
            let tombstone = json!({"id": id, "deleted": true});
            ctx.replace(&collection, &id, &tombstone);
            Outcome::created(StatusCode::NO_CONTENT.into_response(), tombstone)
        }
        _ => {
            let Some((id, mut record)) =
                id.and_then(|id| ctx.find(&collection, &id).map(|r| (id, r)))
            else {
                return error(StatusCode::NOT_FOUND, "not_found").into();
            };
            if let Some(map) = record.as_object_mut() {
                if ctx.req.method == Method::PUT {
                    map.retain(|k, _| k == "id");
                }
                map.extend(fields);
                map.insert("id".into(), json!(id));
            }
            ctx.replace(&collection, &id, &record);
            Outcome::created(wire::json(StatusCode::OK, record.clone()), record)
        }
    }
}

fn read(ctx: &Ctx<'_>) -> Outcome {
    if let Err(response) = authenticate(ctx) {
        return response.into();
    }
    let rest = ctx.param(1);
    let whole = ctx.list(rest);
    if !whole.is_empty() {
        return wire::json(StatusCode::OK, json!({"data": whole})).into();
    }
    let (collection, id) = split(rest);
    match id.and_then(|id| ctx.find(&collection, &id)) {
        Some(record) => wire::json(StatusCode::OK, record).into(),
        None => error(StatusCode::NOT_FOUND, "not_found").into(),
    }
}

#[cfg(test)]
mod tests {
    use super::idempotency_key;

    #[test]
    fn keys_are_sf_strings_or_bare_tokens() {
        assert_eq!(
            idempotency_key("\"8e03978e-40d5\""),
            Ok("8e03978e-40d5".to_owned())
        );
        assert_eq!(idempotency_key("\"a\\\"b\""), Ok("a\"b".to_owned()));
        assert_eq!(idempotency_key("evt_1:int_1"), Ok("evt_1:int_1".to_owned()));
        assert!(idempotency_key("\"open").is_err());
        assert!(idempotency_key("\"\"").is_err());
        assert!(idempotency_key("a b").is_err());
        assert!(idempotency_key("\"a\\nb\"").is_err());
    }
}

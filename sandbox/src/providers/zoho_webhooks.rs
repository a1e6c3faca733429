//! Zoho CRM Notifications API stand-in (`/crm/v8/actions/watch`, "Notification APIs"
//! and Zoho's `notifications.json` of `crm-oas` v8.0), and the notifications Zoho
//! sends to a channel's `notify_url` when records of a watched module change.
//!
//! **Auth**: as the record routes — `Authorization: Zoho-oauthtoken` of a grant of the
//! host's data centre (401 `AUTHENTICATION_FAILURE` / `INVALID_TOKEN`), one API credit a
//! call — and the scopes each reference page lists: enable (`POST`) takes
//! `ZohoCRM.notifications.{ALL|WRITE|CREATE}`, update (`PUT`) `…{ALL|WRITE|UPDATE}`,
//! disable (`PATCH`) and delete (`DELETE`) `…{ALL|WRITE|DELETE}`, list (`GET`)
//! `…{ALL|READ}`; anything else is 401 `OAUTH_SCOPE_MISMATCH`.
//!
//! **Routes**:
//! - `POST` `{"watch":[{channel_id, events, notify_url, token?, channel_expiry?,
//!   notify_on_related_action?, return_affected_field_values?}]}`: `channel_id` a long
//!   (number or digits), `events` `{Module}.{all|create|edit|delete}` of a served module
//!   (`Contacts`, `Accounts`; another is `INVALID_MODULE`), `notify_url` absolute
//!   `https` (or loopback `http`), `token` at most 50 characters, `channel_expiry` an
//!   ISO date-time in the future and at most one week ahead (the v4+ maximum; default
//!   one hour). Enabling a channel id that exists for the module replaces it (Zoho's
//!   advice for renewal: enable again before expiry). 201 `{"watch":[{"code":"SUCCESS",
//!   "details":{"events":[{channel_expiry, resource_uri, resource_id, resource_name,
//!   channel_id}]},"message":"Successfully subscribed for actions-watch of the given
//!   module","status":"success"}]}`; a bad item `{"watch":[{"code":
//!   "MANDATORY_NOT_FOUND"|"INVALID_DATA"|"INVALID_MODULE","details":{"api_name"…},
//!   "message","status":"error"}]}` with 400.
//! - `PUT` (same body): replaces an existing channel's details; an unknown channel id
//!   is `INVALID_DATA` on `channel_id`. 200 "Successfully updated the subscribe details".
//! - `PATCH` `{"watch":[{channel_id, events, "_delete_events": true}]}`: stops those
//!   events. 200 "Successfully un-subscribed from actions-watch".
//! - `DELETE ?channel_ids=a,b`: removes the channels. 200 "Successfully removed the
//!   subscribe details" per id; an unknown id `INVALID_DATA`.
//! - `GET` (`channel_id`, `module` filters): `{"watch":[{channel_id, events,
//!   channel_expiry, notify_url, resource_uri, resource_id, resource_name,
//!   notify_on_related_action}],"info":{per_page,page,count,more_records}}`; 204 when
//!   none. Expired channels are gone.
//!
//! **Notifications**: one `POST` to `notify_url` per operation (an insert of 100
//! records is one notification of 100 ids), JSON `{"server_time", "query_params" (the
//! notify URL's query as an object), "module", "resource_uri", "ids", "affected_fields"
//! (update; the written field names), "operation": "insert"|"update"|"delete",
//! "channel_id", "token"}`, only while the channel has not expired; every request is
//! recorded ([`SandboxState::zoho_notification_deliveries`]).
//!
//! **Not reproduced**: Zoho documents no retry of a failed notification, so none is
//! made (and none is promised); `notification_condition`, `fields` and
//! `return_affected_field_values` are accepted and ignored; `notify_on_related_action`
//! (related records are not modelled); the limit on channels per org; modules other
//! than `Contacts` and `Accounts`.

// Handlers return the finished error response as their `Err`, as the record ones do.
#![allow(clippy::result_large_err)]

use std::time::Duration;

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::ProviderRequest;
use super::hook_delivery::{Delivery, post, target_ok};
use super::zoho::{api_error, invalid_token, zoho_token};
use super::zoho_crm::{ZohoModule, spend, zoho_time};
use crate::clock::{now_ms, parse_datetime};
use crate::oauth::{self, AccessCheck, OAuthProvider};
use crate::state::SandboxState;
use crate::wire;

/// The route name of `/crm/v8/actions/watch`.
pub const ROUTE: &str = "zoho.actions_watch";
/// The longest a channel may live (v4 and later).
pub const MAX_EXPIRY_MS: i64 = 7 * 24 * 3600 * 1000;
/// A channel's life when `channel_expiry` is not given.
const DEFAULT_EXPIRY_MS: i64 = 3600 * 1000;
const TOKEN_MAX: usize = 50;
const TIMEOUT: Duration = Duration::from_secs(10);
const DELIVERIES_KEPT: usize = 10_000;
const CHANGES_KEPT: usize = 100_000;
const OPERATIONS: [&str; 4] = ["all", "create", "edit", "delete"];

/// One channel's watch of one module.
#[derive(Clone, Debug)]
struct Channel {
    channel_id: u64,
    module: ZohoModule,
    ops: Vec<String>,
    token: Option<String>,
    notify_url: String,
    expiry_ms: i64,
    related: bool,
    dc: String,
}

impl Channel {
    fn view(&self) -> Value {
        json!({
            "channel_id": self.channel_id.to_string(),
            "events": self.ops.iter().map(|op| format!("{}.{op}", self.module.api_name())).collect::<Vec<_>>(),
            "channel_expiry": zoho_time(self.expiry_ms),
            "notify_url": self.notify_url,
            "resource_uri": resource_uri(&self.dc, self.module),
            "resource_id": module_id(self.module),
            "resource_name": self.module.api_name(),
            "notify_on_related_action": self.related,
        })
    }

    fn wants(&self, module: ZohoModule, operation: &str, at_ms: i64) -> bool {
        let op = match operation {
            "insert" => "create",
            "update" => "edit",
            other => other,
        };
        self.module == module
            && at_ms < self.expiry_ms
            && self.ops.iter().any(|o| o == "all" || o == op)
    }
}

fn resource_uri(dc: &str, module: ZohoModule) -> String {
    format!("https://www.zohoapis.{dc}/crm/v8/{}", module.api_name())
}

fn module_id(module: ZohoModule) -> &'static str {
    match module {
        ZohoModule::Contacts => "4876876000000002179",
        ZohoModule::Accounts => "4876876000000002177",
        ZohoModule::Deals => "4876876000000002181",
    }
}

#[derive(Clone, Debug)]
struct Change {
    module: ZohoModule,
    operation: &'static str,
    ids: Vec<u64>,
    fields: Vec<String>,
    at_ms: i64,
}

/// One org's channels and the changes not yet turned into notifications.
#[derive(Debug, Default)]
pub(crate) struct Channels {
    channels: Vec<Channel>,
    changes: Vec<Change>,
}

impl Channels {
    /// Notes an operation on records of `module` (only while some channel could want
    /// it). `fields`: the field names written (updates).
    pub(crate) fn note(
        &mut self,
        module: ZohoModule,
        operation: &'static str,
        ids: Vec<u64>,
        fields: Vec<String>,
        at_ms: i64,
    ) {
        if ids.is_empty() || !self.channels.iter().any(|c| c.expiry_ms > at_ms) {
            return;
        }
        if self.changes.len() >= CHANGES_KEPT {
            self.changes.drain(..CHANGES_KEPT / 2);
        }
        self.changes.push(Change {
            module,
            operation,
            ids,
            fields,
            at_ms,
        });
    }
}

/// Notifications waiting, and those sent.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    waiting: Vec<(String, String)>,
    sent: Vec<Delivery>,
}

fn item_error(code: &str, message: &str, details: Value) -> Value {
    json!({"code": code, "details": details, "message": message, "status": "error"})
}

fn refused(item: Value) -> Response {
    wire::json(StatusCode::BAD_REQUEST, json!({"watch": [item]}))
}

fn mandatory(name: &str) -> Response {
    refused(item_error(
        "MANDATORY_NOT_FOUND",
        "required field not found",
        json!({"api_name": name}),
    ))
}

fn invalid(name: &str) -> Response {
    refused(item_error(
        "INVALID_DATA",
        "invalid data",
        json!({"api_name": name}),
    ))
}

fn channel_id_of(v: Option<&Value>) -> Result<u64, Response> {
    match v {
        None | Some(Value::Null) => Err(mandatory("channel_id")),
        Some(Value::Number(n)) => n.as_u64().ok_or_else(|| invalid("channel_id")),
        Some(Value::String(s)) => s.trim().parse().map_err(|_| invalid("channel_id")),
        Some(_) => Err(invalid("channel_id")),
    }
}

/// The `(module, operation)` pairs of an `events` list.
fn events_of(v: Option<&Value>) -> Result<Vec<(ZohoModule, String)>, Response> {
    let list = match v {
        None | Some(Value::Null) => return Err(mandatory("events")),
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(_) => return Err(invalid("events")),
    };
    let mut out = Vec::with_capacity(list.len());
    for e in list {
        let text = e.as_str().ok_or_else(|| invalid("events"))?;
        let (module, op) = text.split_once('.').ok_or_else(|| invalid("events"))?;
        let module = ZohoModule::parse(module).ok_or_else(|| {
            refused(item_error(
                "INVALID_MODULE",
                "the module name given seems to be invalid",
                json!({"api_name": "events"}),
            ))
        })?;
        let op = op.to_ascii_lowercase();
        if !OPERATIONS.contains(&op.as_str()) {
            return Err(invalid("events"));
        }
        out.push((module, op));
    }
    Ok(out)
}

/// One enable/update item, read and checked: the channels it makes.
fn channels_of(item: &Map<String, Value>, dc: &str, now: i64) -> Result<Vec<Channel>, Response> {
    let channel_id = channel_id_of(item.get("channel_id"))?;
    let events = events_of(item.get("events"))?;
    let notify_url = match item.get("notify_url") {
        None | Some(Value::Null) => return Err(mandatory("notify_url")),
        Some(Value::String(s)) if target_ok(s) => s.clone(),
        Some(_) => return Err(invalid("notify_url")),
    };
    let token = match item.get("token") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.chars().count() <= TOKEN_MAX => Some(s.clone()),
        Some(_) => return Err(invalid("token")),
    };
    let expiry_ms = match item.get("channel_expiry") {
        None | Some(Value::Null) => now + DEFAULT_EXPIRY_MS,
        Some(Value::String(s)) => match parse_datetime(s) {
            Some(at) if at > now && at <= now + MAX_EXPIRY_MS => at,
            _ => return Err(invalid("channel_expiry")),
        },
        Some(_) => return Err(invalid("channel_expiry")),
    };
    let related = item
        .get("notify_on_related_action")
        .and_then(Value::as_bool)
        .unwrap_or(true);
    let mut out: Vec<Channel> = Vec::new();
    for (module, op) in events {
        match out.iter_mut().find(|c| c.module == module) {
            Some(c) if !c.ops.contains(&op) => c.ops.push(op),
            Some(_) => {}
            None => out.push(Channel {
                channel_id,
                module,
                ops: vec![op],
                token: token.clone(),
                notify_url: notify_url.clone(),
                expiry_ms,
                related,
                dc: dc.to_owned(),
            }),
        }
    }
    Ok(out)
}

fn items(req: &ProviderRequest) -> Result<Vec<Map<String, Value>>, Response> {
    let body: Value = serde_json::from_slice(&req.body).map_err(|_| {
        api_error(
            StatusCode::BAD_REQUEST,
            "INVALID_DATA",
            "body is not valid JSON",
        )
    })?;
    let list = match body.get("watch") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        _ => return Err(mandatory("watch")),
    };
    list.iter()
        .map(|i| i.as_object().cloned().ok_or_else(|| invalid("watch")))
        .collect()
}

fn required_scopes(method: &Method) -> [&'static str; 3] {
    let op = match *method {
        Method::POST => "CREATE",
        Method::PUT => "UPDATE",
        Method::PATCH | Method::DELETE => "DELETE",
        _ => "READ",
    };
    let all = "ZohoCRM.notifications.ALL";
    match op {
        "CREATE" => [
            all,
            "ZohoCRM.notifications.WRITE",
            "ZohoCRM.notifications.CREATE",
        ],
        "UPDATE" => [
            all,
            "ZohoCRM.notifications.WRITE",
            "ZohoCRM.notifications.UPDATE",
        ],
        "DELETE" => [
            all,
            "ZohoCRM.notifications.WRITE",
            "ZohoCRM.notifications.DELETE",
        ],
        _ => [
            all,
            "ZohoCRM.notifications.READ",
            "ZohoCRM.notifications.READ",
        ],
    }
}

/// Whether `path` is `/crm/v8/actions/watch`.
pub(crate) fn is_watch_path(path: &str) -> bool {
    path.trim_end_matches('/') == "/crm/v8/actions/watch"
}

/// Serves `/crm/v8/actions/watch` at data centre `dc`.
pub(crate) fn handle(state: &SandboxState, req: &ProviderRequest, dc: &str) -> Response {
    let grant = match oauth::bearer_access(state, OAuthProvider::Zoho, zoho_token(&req.headers)) {
        AccessCheck::Granted(grant) if grant.site == dc => grant,
        AccessCheck::Missing => {
            return api_error(
                StatusCode::UNAUTHORIZED,
                "AUTHENTICATION_FAILURE",
                "Authentication failed",
            );
        }
        _ => return invalid_token(),
    };
    let required = required_scopes(&req.method);
    if !grant
        .scopes
        .iter()
        .any(|s| required.iter().any(|r| r.eq_ignore_ascii_case(s)))
    {
        return api_error(
            StatusCode::UNAUTHORIZED,
            "OAUTH_SCOPE_MISMATCH",
            "invalid oauth scope to access this URL",
        );
    }
    let org = grant.user.org_id.clone();
    if let Err(response) = spend(state, &org, 1) {
        return response;
    }
    let now = now_ms();
    let out = match req.method {
        Method::POST | Method::PUT => enable(state, req, &org, dc, now),
        Method::PATCH => disable(state, req, &org),
        Method::DELETE => remove(state, req, &org),
        Method::GET => Ok(list(state, req, &org, now)),
        _ => Err(api_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "INVALID_REQUEST_METHOD",
            "The http request method type is not a valid one",
        )),
    };
    out.unwrap_or_else(|r| r)
}

fn enable(
    state: &SandboxState,
    req: &ProviderRequest,
    org: &str,
    dc: &str,
    now: i64,
) -> Result<Response, Response> {
    let updating = req.method == Method::PUT;
    let made = items(req)?
        .iter()
        .map(|item| channels_of(item, dc, now))
        .collect::<Result<Vec<_>, _>>()?;
    let mut store = state.zoho_crm_store();
    let watch = store.channels(org);
    watch.channels.retain(|c| c.expiry_ms > now);
    if updating
        && made
            .iter()
            .flatten()
            .any(|m| !watch.channels.iter().any(|c| c.channel_id == m.channel_id))
    {
        return Err(invalid("channel_id"));
    }
    let mut results = Vec::new();
    for channels in made {
        if let Some(first) = channels.first().filter(|_| updating) {
            // "All the provided details would be persisted and the rest removed."
            let id = first.channel_id;
            watch.channels.retain(|c| c.channel_id != id);
        }
        let events: Vec<Value> = channels
            .iter()
            .map(|c| {
                json!({
                    "channel_expiry": zoho_time(c.expiry_ms),
                    "resource_uri": resource_uri(dc, c.module),
                    "resource_id": module_id(c.module),
                    "resource_name": c.module.api_name(),
                    "channel_id": c.channel_id.to_string(),
                })
            })
            .collect();
        for c in channels {
            watch
                .channels
                .retain(|o| !(o.channel_id == c.channel_id && o.module == c.module));
            watch.channels.push(c);
        }
        results.push(json!({
            "code": "SUCCESS",
            "details": {"events": events},
            "message": if updating { "Successfully updated the subscribe details" } else { "Successfully subscribed for actions-watch of the given module" },
            "status": "success",
        }));
    }
    let status = if updating {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok(wire::json(status, json!({"watch": results})))
}

fn disable(state: &SandboxState, req: &ProviderRequest, org: &str) -> Result<Response, Response> {
    let items = items(req)?;
    let mut stops = Vec::new();
    for item in &items {
        let channel_id = channel_id_of(item.get("channel_id"))?;
        let events = events_of(item.get("events"))?;
        if item.get("_delete_events") != Some(&Value::Bool(true)) {
            return Err(invalid("_delete_events"));
        }
        stops.push((channel_id, events));
    }
    let mut store = state.zoho_crm_store();
    let watch = store.channels(org);
    let mut results = Vec::new();
    for (channel_id, events) in stops {
        for (module, op) in events {
            for c in watch
                .channels
                .iter_mut()
                .filter(|c| c.channel_id == channel_id && c.module == module)
            {
                if op == "all" {
                    c.ops.clear();
                } else {
                    c.ops.retain(|o| *o != op);
                }
            }
        }
        watch.channels.retain(|c| !c.ops.is_empty());
        results.push(json!({
            "code": "SUCCESS",
            "details": {"channel_id": channel_id.to_string()},
            "message": "Successfully un-subscribed from actions-watch",
            "status": "success",
        }));
    }
    Ok(wire::json(StatusCode::OK, json!({"watch": results})))
}

fn remove(state: &SandboxState, req: &ProviderRequest, org: &str) -> Result<Response, Response> {
    let ids = super::zoho_crm::list_items(
        &wire::query_param(req.query.as_deref(), "channel_ids").unwrap_or_default(),
    );
    if ids.is_empty() {
        return Err(api_error(
            StatusCode::BAD_REQUEST,
            "REQUIRED_PARAM_MISSING",
            "One of the expected parameter is missing",
        ));
    }
    let mut store = state.zoho_crm_store();
    let watch = store.channels(org);
    let results: Vec<Value> = ids
        .iter()
        .map(|id| {
            let n = id.parse::<u64>().ok();
            let before = watch.channels.len();
            watch.channels.retain(|c| Some(c.channel_id) != n);
            if watch.channels.len() < before {
                json!({"code": "SUCCESS", "details": {"channel_id": id},
                    "message": "Successfully removed the subscribe details", "status": "success"})
            } else {
                item_error("INVALID_DATA", "invalid data", json!({"channel_id": id}))
            }
        })
        .collect();
    let ok = results.iter().any(|r| r["status"] == "success");
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::BAD_REQUEST
    };
    Ok(wire::json(status, json!({"watch": results})))
}

fn list(state: &SandboxState, req: &ProviderRequest, org: &str, now: i64) -> Response {
    let channel = wire::query_param(req.query.as_deref(), "channel_id");
    let module = wire::query_param(req.query.as_deref(), "module");
    let mut store = state.zoho_crm_store();
    let watch = store.channels(org);
    watch.channels.retain(|c| c.expiry_ms > now);
    let views: Vec<Value> = watch
        .channels
        .iter()
        .filter(|c| {
            channel
                .as_ref()
                .is_none_or(|id| *id == c.channel_id.to_string())
        })
        .filter(|c| {
            module
                .as_ref()
                .is_none_or(|m| m.eq_ignore_ascii_case(c.module.api_name()))
        })
        .map(Channel::view)
        .collect();
    if views.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    let count = views.len();
    wire::json(
        StatusCode::OK,
        json!({"watch": views, "info": {"per_page": 200, "page": 1, "count": count, "more_records": false}}),
    )
}

fn query_object(url: &str) -> Value {
    let Ok(u) = url::Url::parse(url) else {
        return json!({});
    };
    Value::Object(
        u.query_pairs()
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect(),
    )
}

impl SandboxState {
    /// The live notification channels of Zoho org `org`, as `GET actions/watch` lists
    /// them (each with its `token`, which the API does not list).
    pub fn zoho_channels(&self, org: &str) -> Vec<Value> {
        let now = now_ms();
        let mut store = self.zoho_crm_store();
        store
            .channels(org)
            .channels
            .iter()
            .filter(|c| c.expiry_ms > now)
            .map(|c| {
                let mut v = c.view();
                v["token"] = json!(c.token);
                v["expiry_ms"] = json!(c.expiry_ms);
                v
            })
            .collect()
    }

    /// Every Zoho notification sent so far, oldest first (at most the last 10,000).
    pub fn zoho_notification_deliveries(&self) -> Vec<Delivery> {
        self.zoho_crm_store().watch_out.sent.clone()
    }

    /// Turns new record changes into notifications for the orgs' channels.
    fn collect_zoho_notifications(&self) {
        let mut store = self.zoho_crm_store();
        let mut made = Vec::new();
        for watch in store.all_channels() {
            for change in std::mem::take(&mut watch.changes) {
                for c in watch
                    .channels
                    .iter()
                    .filter(|c| c.wants(change.module, change.operation, change.at_ms))
                {
                    let body = json!({
                        "server_time": change.at_ms,
                        "query_params": query_object(&c.notify_url),
                        "module": change.module.api_name(),
                        "resource_uri": resource_uri(&c.dc, change.module),
                        "ids": change.ids.iter().map(u64::to_string).collect::<Vec<_>>(),
                        "affected_fields": if change.operation == "update" { json!(change.fields) } else { json!([]) },
                        "operation": change.operation,
                        "channel_id": c.channel_id.to_string(),
                        "token": c.token,
                    });
                    made.push((c.notify_url.clone(), body.to_string()));
                }
            }
        }
        store.watch_out.waiting.extend(made);
    }

    fn record_zoho_notification(&self, d: Delivery) {
        let mut store = self.zoho_crm_store();
        let out = &mut store.watch_out;
        if out.sent.len() >= DELIVERIES_KEPT {
            out.sent.drain(..DELIVERIES_KEPT / 2);
        }
        out.sent.push(d);
    }
}

/// One round of notifications: new changes become requests, which are sent in order
/// (once each: Zoho documents no retry).
pub(crate) async fn tick(state: &SandboxState, client: &reqwest::Client) {
    state.collect_zoho_notifications();
    let waiting = std::mem::take(&mut state.zoho_crm_store().watch_out.waiting);
    for (url, body) in waiting {
        let headers = vec![("content-type".to_owned(), "application/json".to_owned())];
        let status = post(client, &url, &headers, &body, TIMEOUT)
            .await
            .map(|(s, _)| s);
        state.record_zoho_notification(Delivery {
            url,
            headers,
            body,
            status,
            attempt: 1,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_are_checked_as_zoho_documents_them() {
        let now = 1_700_000_000_000;
        let good = json!({"channel_id": 1000000068001_u64, "events": ["Contacts.all", "Accounts.edit"],
            "notify_url": "https://hooks.example.com/z?k=v", "token": "t0k",
            "channel_expiry": zoho_time(now + 3_600_000)});
        let made = channels_of(good.as_object().unwrap(), "com", now).unwrap();
        assert_eq!(made.len(), 2);
        assert!(made[0].wants(ZohoModule::Contacts, "delete", now));
        assert!(made[1].wants(ZohoModule::Accounts, "update", now));
        assert!(!made[1].wants(ZohoModule::Accounts, "insert", now));
        assert!(!made[0].wants(ZohoModule::Contacts, "insert", now + 3_600_000));
        let with = |k: &str, v: Value| {
            let mut m = good.as_object().unwrap().clone();
            m.insert(k.into(), v);
            m
        };
        for (k, v) in [
            ("channel_id", json!("x")),
            ("events", json!(["Leads.all"])),
            ("events", json!(["Contacts.watch"])),
            ("events", json!([])),
            ("notify_url", json!("http://hooks.example.com/z")),
            ("token", json!("x".repeat(51))),
            (
                "channel_expiry",
                json!(zoho_time(now + MAX_EXPIRY_MS + 60_000)),
            ),
            ("channel_expiry", json!(zoho_time(now - 60_000))),
        ] {
            assert!(
                channels_of(&with(k, v.clone()), "com", now).is_err(),
                "{k} {v}"
            );
        }
        let mut no_url = good.as_object().unwrap().clone();
        no_url.remove("notify_url");
        assert!(channels_of(&no_url, "com", now).is_err());
        assert_eq!(
            query_object("https://h.example/z?a=1&b=x"),
            json!({"a": "1", "b": "x"})
        );
    }
}

//! Pipedrive webhooks stand-in (general webhooks): `GET /v1/webhooks`,
//! `POST /v1/webhooks`, `DELETE /v1/webhooks/{id}` (also under `/api/v1/`), and the
//! requests Pipedrive sends to a webhook's `subscription_url` when a person or an
//! organization of the company is created, changed or deleted.
//!
//! **API** (Pipedrive's OpenAPI `openapi-v1.yaml`, "Guide for Webhooks v2"): the same
//! authentication, burst windows and daily token budget as the CRM routes; an OAuth
//! token needs the `admin` scope (the spec's `security`), else 403. `POST` needs
//! `subscription_url` (absolute `https`, or `http` on a loopback host — the dev host),
//! `event_action` (`create`, `change`, `delete`, `*` for version 2.0; `added`,
//! `updated`, `merged`, `deleted`, `*` for 1.0), `event_object` (the spec's enum) and
//! takes `http_auth_user`/`http_auth_password` and `version` (default `1.0`); at most 40
//! webhooks per user (400 past it). Answers `{"status":"ok","success":true,"data":
//! {id, company_id, owner_id, user_id, event_action, event_object, subscription_url,
//! is_active, add_time, remove_time, type, http_auth_user, http_auth_password,
//! version, …}}` (201); errors `{"success":false,"error","error_info","data":null,
//! "additional_data":null}`. `DELETE` of an unknown or removed id is 404.
//!
//! **Deliveries** (version 2.0 webhooks): one `POST` per change, JSON `{"data",
//! "previous", "meta": {"action": "create"|"change"|"delete", "entity": "person"|
//! "organization", "entity_id", "id", "attempt", "company_id", "user_id",
//! "webhook_id", "webhook_owner_id", "change_source": "api"|"app", "timestamp", "host",
//! "type": "general", "version": "2.0", "is_bulk_edit": false}}`, with
//! `Authorization: Basic` when the webhook has credentials. An answer other than 2xx
//! within 10 s is retried with `attempt` + 1, three times. Every request is recorded
//! ([`SandboxState::pipedrive_webhook_deliveries`]).
//!
//! **Not reproduced:** version 1.0 deliveries (the webhook is stored and listed, but
//! sends nothing); Pipedrive's retry delays (3 s, 30 s, 150 s) — here 0.3 s, 3 s, 15 s;
//! disabling a webhook that keeps failing for days; objects other than persons and
//! organizations (their webhooks are accepted and never fire); `data` is the record's
//! v2 API view, where Pipedrive's webhook `data` is a trimmed form of it;
//! `previous` is always null.

use std::time::Duration;

use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};

use super::ProviderRequest;
pub use super::hook_delivery::Delivery;
use super::hook_delivery::{delivered, post, target_ok};
use super::pipedrive_crm::{Company, PdObject, PdRoute, rfc3339};
use crate::clock::now_ms;
use crate::state::SandboxState;

/// The route name of the webhook endpoints.
pub const ROUTE: &str = "pipedrive.webhooks";
/// Webhooks per user at most.
pub const PER_USER: usize = 40;
/// Attempts per change at most (the first and three retries).
pub const ATTEMPTS: u32 = 4;
const TIMEOUT: Duration = Duration::from_secs(10);
const RETRY_MS: [i64; 3] = [300, 3_000, 15_000];
const DELIVERIES_KEPT: usize = 10_000;
const CHANGES_KEPT: usize = 100_000;

const ACTIONS_V2: [&str; 4] = ["create", "change", "delete", "*"];
const ACTIONS_V1: [&str; 5] = ["added", "updated", "merged", "deleted", "*"];
const OBJECTS: [&str; 11] = [
    "activity",
    "activityType",
    "deal",
    "note",
    "organization",
    "person",
    "pipeline",
    "product",
    "stage",
    "user",
    "*",
];

#[derive(Clone, Debug)]
struct Hook {
    id: u64,
    user_id: u64,
    action: String,
    object: String,
    url: String,
    auth: Option<(String, String)>,
    version: String,
    add_ms: i64,
    removed: bool,
}

impl Hook {
    fn view(&self, company_id: u64) -> Value {
        json!({
            "id": self.id,
            "company_id": company_id,
            "owner_id": self.user_id,
            "user_id": self.user_id,
            "event_action": self.action,
            "event_object": self.object,
            "subscription_url": self.url,
            "is_active": 1,
            "add_time": rfc3339(self.add_ms),
            "remove_time": Value::Null,
            "type": "general",
            "http_auth_user": self.auth.as_ref().map(|a| a.0.clone()),
            "http_auth_password": self.auth.as_ref().map(|a| a.1.clone()),
            "additional_data": {},
            "remove_reason": Value::Null,
            "last_delivery_time": Value::Null,
            "last_http_status": Value::Null,
            "admin_id": self.user_id,
            "version": self.version,
        })
    }

    fn wants(&self, object: PdObject, action: &str) -> bool {
        let name = entity(object);
        !self.removed
            && self.version == "2.0"
            && (self.object == "*" || self.object == name)
            && (self.action == "*" || self.action == action)
    }
}

#[derive(Clone, Debug)]
struct Change {
    object: PdObject,
    id: u64,
    action: &'static str,
    source: &'static str,
    at_ms: i64,
}

/// One company's webhooks and the changes not yet turned into deliveries.
#[derive(Debug, Default)]
pub(crate) struct CompanyHooks {
    hooks: Vec<Hook>,
    next_id: u64,
    changes: Vec<Change>,
}

impl CompanyHooks {
    /// Notes a record change (only while some webhook could want it).
    pub(crate) fn note(
        &mut self,
        object: PdObject,
        id: u64,
        action: &'static str,
        source: &'static str,
        at_ms: i64,
    ) {
        if !self.hooks.iter().any(|h| !h.removed) {
            return;
        }
        if self.changes.len() >= CHANGES_KEPT {
            self.changes.drain(..CHANGES_KEPT / 2);
        }
        self.changes.push(Change {
            object,
            id,
            action,
            source,
            at_ms,
        });
    }
}

#[derive(Clone, Debug)]
struct Outgoing {
    url: String,
    auth: Option<(String, String)>,
    payload: Value,
    attempt: u32,
    due_ms: i64,
}

/// Webhook requests waiting, and those sent.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    waiting: Vec<Outgoing>,
    sent: Vec<Delivery>,
    next_event: u64,
}

fn entity(object: PdObject) -> &'static str {
    match object {
        PdObject::Persons => "person",
        PdObject::Organizations => "organization",
        PdObject::Deals => "deal",
    }
}

type Reply = (StatusCode, Value);

fn fail(status: StatusCode, message: &str) -> Reply {
    (
        status,
        json!({"success": false, "error": message, "error_info": "Please check developers.pipedrive.com for more information about Pipedrive API.", "data": Value::Null, "additional_data": Value::Null}),
    )
}

fn text(body: &serde_json::Map<String, Value>, name: &str) -> Result<Option<String>, Reply> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(fail(
            StatusCode::BAD_REQUEST,
            &format!("Validation failed: {name}: must be string"),
        )),
    }
}

/// Serves a webhook route for `user_id` of `company` (already authenticated and
/// counted).
pub(crate) fn serve(
    route: PdRoute,
    company: &mut Company,
    user_id: u64,
    _domain: &str,
    req: &ProviderRequest,
    now: i64,
) -> Result<Reply, Reply> {
    let company_id = company.company_id();
    let hooks = &mut company.hooks;
    match route {
        PdRoute::Webhooks => Ok((
            StatusCode::OK,
            json!({"status": "ok", "success": true, "data": hooks.hooks.iter().filter(|h| !h.removed).map(|h| h.view(company_id)).collect::<Vec<_>>()}),
        )),
        PdRoute::WebhookCreate => {
            let body = match serde_json::from_slice::<Value>(&req.body) {
                Ok(Value::Object(m)) => m,
                _ => {
                    return Err(fail(
                        StatusCode::BAD_REQUEST,
                        "Invalid JSON in request body",
                    ));
                }
            };
            let url = text(&body, "subscription_url")?.unwrap_or_default();
            let action = text(&body, "event_action")?.unwrap_or_default();
            let object = text(&body, "event_object")?.unwrap_or_default();
            let version = text(&body, "version")?.unwrap_or_else(|| "1.0".to_owned());
            if !target_ok(&url) {
                return Err(fail(
                    StatusCode::BAD_REQUEST,
                    "Validation failed: subscription_url: must be a valid, publicly accessible URL",
                ));
            }
            if version != "1.0" && version != "2.0" {
                return Err(fail(
                    StatusCode::BAD_REQUEST,
                    "Validation failed: version: must be one of 1.0, 2.0",
                ));
            }
            let actions: &[&str] = if version == "2.0" {
                &ACTIONS_V2
            } else {
                &ACTIONS_V1
            };
            if !actions.contains(&action.as_str()) {
                return Err(fail(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "Validation failed: event_action: must be one of {}",
                        actions.join(", ")
                    ),
                ));
            }
            if !OBJECTS.contains(&object.as_str()) {
                return Err(fail(
                    StatusCode::BAD_REQUEST,
                    "Validation failed: event_object: invalid value",
                ));
            }
            let auth = match (
                text(&body, "http_auth_user")?,
                text(&body, "http_auth_password")?,
            ) {
                (Some(u), Some(p)) => Some((u, p)),
                (None, None) => None,
                _ => {
                    return Err(fail(
                        StatusCode::BAD_REQUEST,
                        "Validation failed: http_auth_user and http_auth_password go together",
                    ));
                }
            };
            if hooks
                .hooks
                .iter()
                .filter(|h| !h.removed && h.user_id == user_id)
                .count()
                >= PER_USER
            {
                return Err(fail(
                    StatusCode::BAD_REQUEST,
                    &format!("The maximum limit of {PER_USER} webhooks per user has been reached"),
                ));
            }
            hooks.next_id += 1;
            let hook = Hook {
                id: 400_000 + hooks.next_id,
                user_id,
                action,
                object,
                url,
                auth,
                version,
                add_ms: now,
                removed: false,
            };
            let view = hook.view(company_id);
            hooks.hooks.push(hook);
            Ok((
                StatusCode::CREATED,
                json!({"status": "ok", "success": true, "data": view}),
            ))
        }
        PdRoute::WebhookDelete => {
            let id: Option<u64> = req
                .path
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .and_then(|s| s.parse().ok());
            match hooks
                .hooks
                .iter_mut()
                .find(|h| Some(h.id) == id && !h.removed)
            {
                Some(h) => {
                    h.removed = true;
                    Ok((StatusCode::OK, json!({"status": "ok", "success": true})))
                }
                None => Err(fail(StatusCode::NOT_FOUND, "Webhook not found")),
            }
        }
        _ => Err(fail(StatusCode::NOT_FOUND, "Unknown method")),
    }
}

impl SandboxState {
    /// A company's live webhooks, as `GET /v1/webhooks` lists them.
    pub fn pipedrive_webhooks(&self, company: &str) -> Vec<Value> {
        let store = self.pd_store();
        store
            .companies
            .get(company)
            .map(|c| {
                c.hooks
                    .hooks
                    .iter()
                    .filter(|h| !h.removed)
                    .map(|h| h.view(c.company_id()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Removes a company's webhooks as its admin would by hand in Pipedrive's settings;
    /// answers how many.
    pub fn remove_pipedrive_webhooks(&self, company: &str) -> usize {
        let mut store = self.pd_store();
        let Some(c) = store.companies.get_mut(company) else {
            return 0;
        };
        let mut n = 0;
        for h in c.hooks.hooks.iter_mut().filter(|h| !h.removed) {
            h.removed = true;
            n += 1;
        }
        n
    }

    /// Every Pipedrive webhook request sent so far, oldest first (at most the last
    /// 10,000).
    pub fn pipedrive_webhook_deliveries(&self) -> Vec<Delivery> {
        self.pd_store().hook_out.sent.clone()
    }

    /// Turns new record changes into requests for the companies' webhooks.
    fn collect_pipedrive_events(&self) {
        let mut store = self.pd_store();
        let mut made = Vec::new();
        let mut next_event = store.hook_out.next_event;
        for (domain, company) in store.companies.iter_mut() {
            let changes = std::mem::take(&mut company.hooks.changes);
            if changes.is_empty() {
                continue;
            }
            let company_id = company.company_id();
            for change in changes {
                let data = company.record_data(change.object, change.id);
                for hook in company
                    .hooks
                    .hooks
                    .iter()
                    .filter(|h| h.wants(change.object, change.action))
                {
                    next_event += 1;
                    let (data, previous) = if change.action == "delete" {
                        (Value::Null, data.clone().unwrap_or(Value::Null))
                    } else {
                        (data.clone().unwrap_or(Value::Null), Value::Null)
                    };
                    let payload = json!({
                        "data": data,
                        "previous": previous,
                        "meta": {
                            "action": change.action,
                            "entity": entity(change.object),
                            "entity_id": change.id.to_string(),
                            "id": format!("{:08x}-sand-4box-8000-{:012x}", company_id, next_event),
                            "attempt": 1,
                            "company_id": company_id.to_string(),
                            "user_id": hook.user_id.to_string(),
                            "webhook_id": hook.id.to_string(),
                            "webhook_owner_id": hook.user_id.to_string(),
                            "change_source": change.source,
                            "timestamp": rfc3339(change.at_ms),
                            "host": format!("{domain}.pipedrive.com"),
                            "type": "general",
                            "version": "2.0",
                            "is_bulk_edit": false,
                        },
                    });
                    made.push(Outgoing {
                        url: hook.url.clone(),
                        auth: hook.auth.clone(),
                        payload,
                        attempt: 1,
                        due_ms: now_ms(),
                    });
                }
            }
        }
        store.hook_out.next_event = next_event;
        store.hook_out.waiting.extend(made);
    }

    fn due_pipedrive_requests(&self) -> Vec<Outgoing> {
        let now = now_ms();
        let mut store = self.pd_store();
        let (due, later): (Vec<_>, Vec<_>) = store
            .hook_out
            .waiting
            .drain(..)
            .partition(|o| o.due_ms <= now);
        store.hook_out.waiting = later;
        due
    }

    fn record_pipedrive_delivery(&self, d: Delivery, retry: Option<Outgoing>) {
        let mut store = self.pd_store();
        let out = &mut store.hook_out;
        if out.sent.len() >= DELIVERIES_KEPT {
            out.sent.drain(..DELIVERIES_KEPT / 2);
        }
        out.sent.push(d);
        if let Some(r) = retry {
            out.waiting.push(r);
        }
    }
}

async fn send(client: &reqwest::Client, mut o: Outgoing) -> (Delivery, Option<Outgoing>) {
    o.payload["meta"]["attempt"] = json!(o.attempt);
    let body = o.payload.to_string();
    let mut headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("user-agent".to_owned(), "Pipedrive-Webhook".to_owned()),
    ];
    if let Some((u, p)) = &o.auth {
        headers.push((
            "authorization".to_owned(),
            format!("Basic {}", STANDARD.encode(format!("{u}:{p}"))),
        ));
    }
    let status = post(client, &o.url, &headers, &body, TIMEOUT)
        .await
        .map(|(s, _)| s);
    let ok = delivered(status);
    let retry = (!ok && o.attempt < ATTEMPTS).then(|| Outgoing {
        attempt: o.attempt + 1,
        due_ms: now_ms() + RETRY_MS[(o.attempt as usize - 1).min(RETRY_MS.len() - 1)],
        ..o.clone()
    });
    (
        Delivery {
            url: o.url.clone(),
            headers,
            body,
            status,
            attempt: o.attempt,
        },
        retry,
    )
}

/// One round of deliveries: new changes become requests, due requests are sent (in
/// order).
pub(crate) async fn tick(state: &SandboxState, client: &reqwest::Client) {
    state.collect_pipedrive_events();
    for o in state.due_pipedrive_requests() {
        let (delivery, retry) = send(client, o).await;
        state.record_pipedrive_delivery(delivery, retry);
    }
}

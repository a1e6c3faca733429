//! Dataverse webhooks ("Use webhooks to create external handlers for server events",
//! "Register a webhook", the `serviceendpoint`, `sdkmessageprocessingstep`,
//! `sdkmessage` and `sdkmessagefilter` table references): the registration tables
//! through the Web API, and the `RemoteExecutionContext` Dataverse posts to a webhook
//! when a step's message runs on a contact or account.
//!
//! | Request | Answer |
//! |---|---|
//! | `POST serviceendpoints` `{name, url, contract: 8, authtype: 5, authvalue}` | 204 + `OData-EntityId`, or 201 + row with `Prefer: return=representation` |
//! | `GET serviceendpoints`, `GET serviceendpoints({id})` | rows without `authvalue` (write-only) |
//! | `DELETE serviceendpoints({id})` | 204; a step still using it: 400 `0x8004f01f` (sandbox code) |
//! | `GET sdkmessages?$filter=name eq 'Create'` | `Create`, `Update`, `Delete` |
//! | `GET sdkmessagefilters?$filter=primaryobjecttypecode eq 'contact' and _sdkmessageid_value eq {id}` | one filter per message and table |
//! | `POST sdkmessageprocessingsteps` `{name, mode, stage, rank, supporteddeployment, sdkmessageid@odata.bind, sdkmessagefilterid@odata.bind, eventhandler_serviceendpoint@odata.bind}` | as `serviceendpoints` |
//! | `GET sdkmessageprocessingsteps?$filter=_eventhandler_value eq {id}`, `DELETE sdkmessageprocessingsteps({id})` | rows; 204 |
//!
//! **Privileges.** Registering needs the System Administrator or System Customizer role
//! (`prvCreateSdkMessageProcessingStep`, `prvCreateServiceEndpoint`, and the delete
//! privileges to remove them); a user without it
//! ([`SandboxState::dyn_crm_set_customizer`]) gets 403 `0x80040220` "Principal user
//! (Id=…) is missing prv… privilege" on each `POST` and `DELETE` (reads are allowed).
//! Every environment's users have it unless a test takes it away.
//!
//! **Validation.** `contract` 8 (webhook) only (queues, topics, event hubs: 400);
//! `authtype` 5 (`HttpHeader`) with `authvalue` `<settings><setting name="…"
//! value="…" /></settings>`, 4 (`WebhookKey`, `?code=`) or 6 (`HttpQueryString`, same
//! settings form); `url` absolute `https` (loopback `http` for the dev host); a step's
//! message, filter and handler must exist and the filter be the message's; `mode` 1
//! (asynchronous) only with `stage` 40 (post-operation), `mode` 0 with 10, 20 or 40.
//! Others: 400 `0x80040203` (sandbox wording). `$filter` here takes only `field eq value`
//! terms joined by `and`.
//!
//! **Deliveries.** Each create, update or delete of a row (API, `$batch` or a sandbox
//! knob) runs the steps of its message and table: one `POST` to the endpoint's URL with
//! the auth settings as headers (or query), `Content-Type: application/json`,
//! `x-ms-dynamics-organization`, `x-ms-dynamics-entity-name`,
//! `x-ms-dynamics-request-name`, `x-ms-correlation-request-id`, and the body
//! `{BusinessUnitId, CorrelationId, Depth: 1, InitiatingUserId, InputParameters,
//! IsExecutingOffline: false, IsInTransaction: false, IsOfflinePlayback: false,
//! IsolationMode: 2, MessageName, Mode, OperationCreatedOn, OperationId, OrganizationId,
//! OrganizationName, OutputParameters, OwningExtension, ParentContext: null,
//! PostEntityImages: [], PreEntityImages: [], PrimaryEntityId, PrimaryEntityName,
//! RequestId, SecondaryEntityName: "none", SharedVariables: [], Stage, UserId}`.
//! Asynchronous steps that get no 2xx within 60 s are retried (3 attempts here); every
//! request is recorded ([`SandboxState::dyn_crm_webhook_deliveries`]).
//!
//! **Not reproduced:** synchronous steps blocking the operation (every step is
//! delivered after it, from the delivery loop); the `Target` entity in
//! `InputParameters` holds only the id and changed columns' names; a change set that
//! is rolled back still delivers its steps; filtering attributes, images, impersonation,
//! `asyncautodelete`, the system jobs that show failed async deliveries, Dataverse's
//! retry schedule (compressed to seconds), and the 64 KB payload cap.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::{Map, Value, json};

use super::{Answer, Ctx, DynTable, error, syntax};
use crate::providers::ProviderRequest;
use crate::providers::hook_delivery::{Delivery, delivered, post, target_ok};
use crate::state::SandboxState;

const TIMEOUT: Duration = Duration::from_secs(60);
const ATTEMPTS: u32 = 3;
const RETRY_MS: i64 = 1_000;
const DELIVERIES_KEPT: usize = 10_000;
const CHANGES_KEPT: usize = 100_000;
/// `serviceendpoint.contract` for a webhook.
pub const CONTRACT_WEBHOOK: i64 = 8;
const MESSAGES: [(&str, &str); 3] = [
    ("Create", "9ebdbb1b-ea3e-db11-86a7-000a3a5473e8"),
    ("Update", "20bebb1b-ea3e-db11-86a7-000a3a5473e8"),
    ("Delete", "20b6bb1b-ea3e-db11-86a7-000a3a5473e8"),
];

/// A registration route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HookRoute {
    /// `serviceendpoints` (`GET`, `POST`).
    Endpoints,
    /// `serviceendpoints({id})` (`GET`, `DELETE`).
    Endpoint,
    /// `GET sdkmessages`.
    Messages,
    /// `GET sdkmessagefilters`.
    Filters,
    /// `sdkmessageprocessingsteps` (`GET`, `POST`).
    Steps,
    /// `sdkmessageprocessingsteps({id})` (`GET`, `DELETE`).
    Step,
}

impl HookRoute {
    /// The route's counter name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            HookRoute::Endpoints | HookRoute::Endpoint => "dynamics365.serviceendpoints",
            HookRoute::Messages => "dynamics365.sdkmessages",
            HookRoute::Filters => "dynamics365.sdkmessagefilters",
            HookRoute::Steps | HookRoute::Step => "dynamics365.sdkmessageprocessingsteps",
        }
    }

    /// Matches an entity set (and whether it is keyed) to a route.
    pub(crate) fn of(method: &Method, set: &str, keyed: bool) -> Option<Self> {
        let route = match (set, keyed) {
            ("serviceendpoints", false) => HookRoute::Endpoints,
            ("serviceendpoints", true) => HookRoute::Endpoint,
            ("sdkmessages", false) => HookRoute::Messages,
            ("sdkmessagefilters", false) => HookRoute::Filters,
            ("sdkmessageprocessingsteps", false) => HookRoute::Steps,
            ("sdkmessageprocessingsteps", true) => HookRoute::Step,
            _ => return None,
        };
        let ok = match route {
            HookRoute::Endpoints | HookRoute::Steps => {
                matches!(*method, Method::GET | Method::POST)
            }
            HookRoute::Endpoint | HookRoute::Step => {
                matches!(*method, Method::GET | Method::DELETE)
            }
            HookRoute::Messages | HookRoute::Filters => *method == Method::GET,
        };
        ok.then_some(route)
    }
}

#[derive(Clone, Debug)]
struct Endpoint {
    id: String,
    name: String,
    url: String,
    authtype: i64,
    settings: Vec<(String, String)>,
}

impl Endpoint {
    fn view(&self) -> Value {
        json!({
            "serviceendpointid": self.id,
            "name": self.name,
            "url": self.url,
            "contract": CONTRACT_WEBHOOK,
            "authtype": self.authtype,
            "messageformat": 2,
            "connectionmode": 1,
        })
    }
}

#[derive(Clone, Debug)]
struct Step {
    id: String,
    name: String,
    message: &'static str,
    table: DynTable,
    endpoint: String,
    mode: i64,
    stage: i64,
}

impl Step {
    fn view(&self) -> Value {
        json!({
            "sdkmessageprocessingstepid": self.id,
            "name": self.name,
            "mode": self.mode,
            "stage": self.stage,
            "rank": 1,
            "supporteddeployment": 0,
            "_sdkmessageid_value": message_id(self.message),
            "_sdkmessagefilterid_value": filter_id(self.message, self.table),
            "_eventhandler_value": self.endpoint,
        })
    }
}

#[derive(Clone, Debug)]
struct Change {
    message: &'static str,
    table: DynTable,
    id: String,
    columns: Vec<String>,
}

/// One environment's webhook registrations and the changes not yet delivered.
#[derive(Clone, Debug)]
pub(crate) struct Hooks {
    endpoints: Vec<Endpoint>,
    steps: Vec<Step>,
    changes: Vec<Change>,
    next: u64,
    /// Whether the environment's users hold the customizer privileges.
    pub(crate) customizer: bool,
}

impl Default for Hooks {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            steps: Vec::new(),
            changes: Vec::new(),
            next: 0,
            customizer: true,
        }
    }
}

impl Hooks {
    /// Notes that `message` ran on row `id` of `table` (only while a step may want it).
    pub(crate) fn note(
        &mut self,
        message: &'static str,
        table: DynTable,
        id: &str,
        columns: Vec<String>,
    ) {
        if !self
            .steps
            .iter()
            .any(|s| s.message == message && s.table == table)
        {
            return;
        }
        if self.changes.len() >= CHANGES_KEPT {
            self.changes.drain(..CHANGES_KEPT / 2);
        }
        self.changes.push(Change {
            message,
            table,
            id: id.to_owned(),
            columns,
        });
    }

    fn new_id(&mut self, kind: u64) -> String {
        self.next += 1;
        format!(
            "{:08x}-{:04x}-4{:03x}-8000-{:012x}",
            kind,
            self.next & 0xffff,
            (self.next >> 16) & 0xfff,
            self.next
        )
    }
}

/// Webhook requests waiting, and those sent.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    waiting: Vec<Outgoing>,
    sent: Vec<Delivery>,
}

#[derive(Clone, Debug)]
struct Outgoing {
    url: String,
    headers: Vec<(String, String)>,
    body: String,
    attempt: u32,
    due_ms: i64,
}

fn message_id(message: &str) -> &'static str {
    MESSAGES
        .iter()
        .find(|(m, _)| *m == message)
        .map_or("", |(_, id)| id)
}

fn filter_id(message: &str, table: DynTable) -> String {
    let m = MESSAGES
        .iter()
        .position(|(n, _)| *n == message)
        .unwrap_or(0);
    let t = match table {
        DynTable::Contact => 2,
        DynTable::Account => 1,
        DynTable::Opportunity => 3,
    };
    format!("{:08x}-0000-4000-8000-00000000{:02}{:02}", 0xf1_17e2, m, t)
}

fn table_of_filter(id: &str) -> Option<(&'static str, DynTable)> {
    MESSAGES.iter().find_map(|(m, _)| {
        [DynTable::Contact, DynTable::Account, DynTable::Opportunity]
            .into_iter()
            .find(|t| filter_id(m, *t).eq_ignore_ascii_case(id))
            .map(|t| (*m, t))
    })
}

/// `field eq value` terms joined by `and` (quotes taken off).
fn filter_terms(req: &ProviderRequest) -> Result<Vec<(String, String)>, Answer> {
    let Some(filter) = crate::wire::query_param(req.query.as_deref(), "$filter") else {
        return Ok(Vec::new());
    };
    filter
        .split(" and ")
        .map(|term| {
            let mut parts = term.trim().splitn(3, ' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(field), Some("eq"), Some(value)) => Ok((
                    field.to_owned(),
                    value.trim().trim_matches('\'').to_ascii_lowercase(),
                )),
                _ => Err(syntax(&format!(
                    "The sandbox reads only 'field eq value' terms joined by 'and': {term}"
                ))),
            }
        })
        .collect()
}

fn matches(view: &Value, terms: &[(String, String)]) -> bool {
    terms.iter().all(|(field, value)| {
        view.get(field)
            .map(|v| match v {
                Value::String(s) => s.to_ascii_lowercase(),
                other => other.to_string(),
            })
            .is_some_and(|v| v == *value)
    })
}

fn collection(ctx: &Ctx, set: &str, rows: Vec<Value>, terms: &[(String, String)]) -> Answer {
    let rows: Vec<Value> = rows.into_iter().filter(|r| matches(r, terms)).collect();
    Answer::json(
        StatusCode::OK,
        json!({"@odata.context": format!("{}/$metadata#{set}", ctx.base), "value": rows}),
    )
}

fn invalid(message: &str) -> Answer {
    error(StatusCode::BAD_REQUEST, "0x80040203", message)
}

fn denied(ctx: &Ctx, privilege: &str) -> Answer {
    error(
        StatusCode::FORBIDDEN,
        "0x80040220",
        &format!(
            "Principal user (Id={}, type=8, roleCount=1, privilegeCount=0, accessMode=0), is missing {privilege} privilege (Id=00000000-0000-0000-0000-000000000000) on OTC=4618 for entity 'sdkmessageprocessingstep'.",
            ctx.user
        ),
    )
}

/// The id in `set({id})` or in a bind value `/set({id})`.
fn key_of(text: &str) -> Option<String> {
    let (_, rest) = text.rsplit_once('(')?;
    let id = rest.strip_suffix(')')?;
    (!id.is_empty()).then(|| id.to_ascii_lowercase())
}

/// `<settings><setting name="k" value="v" /></settings>` → pairs.
fn settings(xml: &str) -> Option<Vec<(String, String)>> {
    let body = xml
        .trim()
        .strip_prefix("<settings>")?
        .strip_suffix("</settings>")?;
    let mut out = Vec::new();
    for part in body.split("/>").map(str::trim).filter(|p| !p.is_empty()) {
        let attr = |name: &str| {
            let start = part.find(&format!("{name}=\""))? + name.len() + 2;
            let end = part[start..].find('"')? + start;
            Some(
                part[start..end]
                    .replace("&quot;", "\"")
                    .replace("&lt;", "<")
                    .replace("&gt;", ">")
                    .replace("&amp;", "&"),
            )
        };
        if !part.starts_with("<setting ") {
            return None;
        }
        out.push((attr("name")?, attr("value")?));
    }
    (!out.is_empty()).then_some(out)
}

fn body_of(req: &ProviderRequest) -> Result<Map<String, Value>, Answer> {
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(syntax("The request body is not a JSON object.")),
    }
}

fn created(ctx: &Ctx, set: &str, id: &str, view: Value, req: &ProviderRequest) -> Answer {
    let prefer = super::Prefer::parse(&req.headers);
    if prefer.return_representation {
        Answer::json(StatusCode::CREATED, view)
    } else {
        Answer::empty(StatusCode::NO_CONTENT)
            .with("OData-EntityId", format!("{}/{set}({id})", ctx.base))
    }
}

/// Serves a registration route on an environment's [`Hooks`].
pub(super) fn serve(
    hooks: &mut Hooks,
    ctx: &Ctx,
    route: HookRoute,
    req: &ProviderRequest,
) -> Answer {
    let writes = matches!(req.method, Method::POST | Method::DELETE);
    if writes && !hooks.customizer {
        let privilege = match (route, &req.method) {
            (HookRoute::Endpoints | HookRoute::Endpoint, &Method::POST) => {
                "prvCreateServiceEndpoint"
            }
            (HookRoute::Endpoints | HookRoute::Endpoint, _) => "prvDeleteServiceEndpoint",
            (_, &Method::POST) => "prvCreateSdkMessageProcessingStep",
            _ => "prvDeleteSdkMessageProcessingStep",
        };
        return denied(ctx, privilege);
    }
    let terms = match filter_terms(req) {
        Ok(t) => t,
        Err(a) => return a,
    };
    let keyed = split_key(req);
    match (route, &req.method) {
        (HookRoute::Endpoints, &Method::GET) => {
            collection(ctx, "serviceendpoints", hooks.endpoints.iter().map(Endpoint::view).collect(), &terms)
        }
        (HookRoute::Endpoints, _) => create_endpoint(hooks, ctx, req),
        (HookRoute::Endpoint, &Method::GET) => match hooks.endpoints.iter().find(|e| Some(&e.id) == keyed.as_ref()) {
            Some(e) => Answer::json(StatusCode::OK, e.view()),
            None => error(StatusCode::NOT_FOUND, "0x80040217", "serviceendpoint With Id = … Does Not Exist"),
        },
        (HookRoute::Endpoint, _) => {
            let Some(id) = keyed else {
                return syntax("a key is needed");
            };
            if hooks.steps.iter().any(|s| s.endpoint == id) {
                return error(
                    StatusCode::BAD_REQUEST,
                    "0x8004f01f",
                    "The object you tried to delete is associated with another object and cannot be deleted.",
                );
            }
            let before = hooks.endpoints.len();
            hooks.endpoints.retain(|e| e.id != id);
            if hooks.endpoints.len() == before {
                return error(StatusCode::NOT_FOUND, "0x80040217", &format!("serviceendpoint With Id = {id} Does Not Exist"));
            }
            Answer::empty(StatusCode::NO_CONTENT)
        }
        (HookRoute::Messages, _) => collection(
            ctx,
            "sdkmessages",
            MESSAGES
                .iter()
                .map(|(name, id)| json!({"sdkmessageid": id, "name": name}))
                .collect(),
            &terms,
        ),
        (HookRoute::Filters, _) => collection(
            ctx,
            "sdkmessagefilters",
            MESSAGES
                .iter()
                .flat_map(|(m, mid)| {
                    [DynTable::Contact, DynTable::Account, DynTable::Opportunity].into_iter().map(move |t| {
                        json!({"sdkmessagefilterid": filter_id(m, t), "primaryobjecttypecode": t.logical_name(),
                            "_sdkmessageid_value": mid, "iscustomprocessingstepallowed": true})
                    })
                })
                .collect(),
            &terms,
        ),
        (HookRoute::Steps, &Method::GET) => {
            collection(ctx, "sdkmessageprocessingsteps", hooks.steps.iter().map(Step::view).collect(), &terms)
        }
        (HookRoute::Steps, _) => create_step(hooks, ctx, req),
        (HookRoute::Step, &Method::GET) => match hooks.steps.iter().find(|s| Some(&s.id) == keyed.as_ref()) {
            Some(s) => Answer::json(StatusCode::OK, s.view()),
            None => error(StatusCode::NOT_FOUND, "0x80040217", "sdkmessageprocessingstep With Id = … Does Not Exist"),
        },
        (HookRoute::Step, _) => {
            let before = hooks.steps.len();
            hooks.steps.retain(|s| Some(&s.id) != keyed.as_ref());
            if hooks.steps.len() == before {
                return error(StatusCode::NOT_FOUND, "0x80040217", "sdkmessageprocessingstep With Id = … Does Not Exist");
            }
            Answer::empty(StatusCode::NO_CONTENT)
        }
    }
}

fn split_key(req: &ProviderRequest) -> Option<String> {
    let segment = super::split_path(&req.path).map(|(_, s)| s)?;
    key_of(segment)
}

fn create_endpoint(hooks: &mut Hooks, ctx: &Ctx, req: &ProviderRequest) -> Answer {
    let body = match body_of(req) {
        Ok(b) => b,
        Err(a) => return a,
    };
    let text = |name: &str| body.get(name).and_then(Value::as_str).map(str::to_owned);
    let Some(name) = text("name").filter(|n| !n.trim().is_empty()) else {
        return invalid("name is required.");
    };
    if body.get("contract").and_then(Value::as_i64) != Some(CONTRACT_WEBHOOK) {
        return invalid("Only webhook endpoints (contract 8) are served by the sandbox.");
    }
    let Some(url) = text("url").filter(|u| target_ok(u)) else {
        return invalid("url must be an absolute https URL.");
    };
    let authtype = body.get("authtype").and_then(Value::as_i64).unwrap_or(0);
    let settings = match authtype {
        5 | 6 => match text("authvalue").as_deref().and_then(settings) {
            Some(s) => s,
            None => {
                return invalid(
                    "authvalue must be <settings><setting name=\"…\" value=\"…\" /></settings>.",
                );
            }
        },
        4 => match text("authvalue").filter(|v| !v.is_empty()) {
            Some(v) => vec![("code".to_owned(), v)],
            None => return invalid("authvalue is required for WebhookKey."),
        },
        _ => {
            return invalid(
                "authtype must be 4 (WebhookKey), 5 (HttpHeader) or 6 (HttpQueryString) for a webhook.",
            );
        }
    };
    let id = hooks.new_id(0x5e_2e_e0);
    let endpoint = Endpoint {
        id: id.clone(),
        name,
        url,
        authtype,
        settings,
    };
    let view = endpoint.view();
    hooks.endpoints.push(endpoint);
    created(ctx, "serviceendpoints", &id, view, req)
}

fn create_step(hooks: &mut Hooks, ctx: &Ctx, req: &ProviderRequest) -> Answer {
    let body = match body_of(req) {
        Ok(b) => b,
        Err(a) => return a,
    };
    let bind = |name: &str| {
        body.get(&format!("{name}@odata.bind"))
            .and_then(Value::as_str)
            .and_then(key_of)
    };
    let Some(name) = body
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.trim().is_empty())
    else {
        return invalid("name is required.");
    };
    let Some(message) = bind("sdkmessageid").and_then(|id| {
        MESSAGES
            .iter()
            .find(|(_, mid)| mid.eq_ignore_ascii_case(&id))
            .map(|(m, _)| *m)
    }) else {
        return error(
            StatusCode::NOT_FOUND,
            "0x80040217",
            "sdkmessage With Id = … Does Not Exist",
        );
    };
    let Some((filter_message, table)) = bind("sdkmessagefilterid")
        .as_deref()
        .and_then(table_of_filter)
    else {
        return error(
            StatusCode::NOT_FOUND,
            "0x80040217",
            "sdkmessagefilter With Id = … Does Not Exist",
        );
    };
    if filter_message != message {
        return invalid("The message filter is not the step's message's.");
    }
    let Some(endpoint) = bind("eventhandler_serviceendpoint")
        .filter(|id| hooks.endpoints.iter().any(|e| e.id == *id))
    else {
        return error(
            StatusCode::NOT_FOUND,
            "0x80040217",
            "serviceendpoint With Id = … Does Not Exist",
        );
    };
    let mode = body.get("mode").and_then(Value::as_i64).unwrap_or(0);
    let stage = body.get("stage").and_then(Value::as_i64).unwrap_or(0);
    match (mode, stage) {
        (1, 40) | (0, 10 | 20 | 40) => {}
        _ => {
            return invalid(
                "Asynchronous steps run in the post-operation stage (40); synchronous ones in 10, 20 or 40.",
            );
        }
    }
    let id = hooks.new_id(0x57_e9_00);
    let step = Step {
        id: id.clone(),
        name: name.to_owned(),
        message,
        table,
        endpoint,
        mode,
        stage,
    };
    let view = step.view();
    hooks.steps.push(step);
    created(ctx, "sdkmessageprocessingsteps", &id, view, req)
}

impl SandboxState {
    /// An environment's webhook endpoints and steps, as `GET` lists them (with each
    /// endpoint's auth settings, which the API does not list).
    pub fn dyn_crm_webhooks(&self, org: &str) -> (Vec<Value>, Vec<Value>) {
        let key = super::env_key(org);
        let mut store = self.dynamics_crm_store();
        let hooks = &store.env_mut(&key).hooks;
        (
            hooks
                .endpoints
                .iter()
                .map(|e| {
                    let mut v = e.view();
                    v["settings"] = json!(e.settings);
                    v
                })
                .collect(),
            hooks.steps.iter().map(Step::view).collect(),
        )
    }

    /// Gives the environment's users the customizer privileges, or takes them away.
    pub fn dyn_crm_set_customizer(&self, org: &str, allowed: bool) {
        let key = super::env_key(org);
        self.dynamics_crm_store().env_mut(&key).hooks.customizer = allowed;
    }

    /// What an admin with the customizer role registers with the Plug-in Registration
    /// tool: a webhook endpoint to `url` sending `header: value` (HttpHeader), and an
    /// asynchronous post-operation step on it for each of Create, Update and Delete of
    /// `table`. Answers the endpoint's id.
    pub fn dyn_crm_register_webhook(
        &self,
        org: &str,
        table: DynTable,
        url: &str,
        header: (&str, &str),
    ) -> String {
        let key = super::env_key(org);
        let mut store = self.dynamics_crm_store();
        let hooks = &mut store.env_mut(&key).hooks;
        let id = hooks.new_id(0x5e_2e_e0);
        hooks.endpoints.push(Endpoint {
            id: id.clone(),
            name: "Registered by hand".to_owned(),
            url: url.to_owned(),
            authtype: 5,
            settings: vec![(header.0.to_owned(), header.1.to_owned())],
        });
        for (message, _) in MESSAGES {
            let step = hooks.new_id(0x57_e9_00);
            hooks.steps.push(Step {
                id: step,
                name: format!("{message} of {}", table.logical_name()),
                message,
                table,
                endpoint: id.clone(),
                mode: 1,
                stage: 40,
            });
        }
        id
    }

    /// Every webhook request sent so far, oldest first (at most the last 10,000).
    pub fn dyn_crm_webhook_deliveries(&self) -> Vec<Delivery> {
        self.dynamics_crm_store().hook_out.sent.clone()
    }

    fn collect_dyn_webhooks(&self) {
        let mut store = self.dynamics_crm_store();
        let now = crate::clock::now_ms();
        let mut made = Vec::new();
        for (env, crm) in store.envs.iter_mut() {
            let hooks = &mut crm.hooks;
            let org_id = super::guid(0x0e6_0000, env.len() as u64);
            for change in std::mem::take(&mut hooks.changes) {
                for step in hooks
                    .steps
                    .iter()
                    .filter(|s| s.message == change.message && s.table == change.table)
                {
                    let Some(endpoint) = hooks.endpoints.iter().find(|e| e.id == step.endpoint)
                    else {
                        continue;
                    };
                    let operation = format!(
                        "{:08x}-0000-4000-8000-{:012x}",
                        now & 0xffff_ffff,
                        made.len() as u64 + 1
                    );
                    let correlation = format!("c0{}", &operation[2..]);
                    let body = json!({
                        "BusinessUnitId": "00000000-0000-0000-0000-0000000000b1",
                        "CorrelationId": correlation,
                        "Depth": 1,
                        "InitiatingUserId": super::OWNER_ID,
                        "InputParameters": [{"key": "Target", "value": {
                            "__type": "Entity:http://schemas.microsoft.com/xrm/2011/Contracts",
                            "Id": change.id,
                            "LogicalName": change.table.logical_name(),
                            "Attributes": change.columns.iter().map(|c| json!({"key": c})).collect::<Vec<_>>(),
                        }}],
                        "IsExecutingOffline": false,
                        "IsInTransaction": false,
                        "IsOfflinePlayback": false,
                        "IsolationMode": 2,
                        "MessageName": change.message,
                        "Mode": step.mode,
                        "OperationCreatedOn": format!("/Date({now})/"),
                        "OperationId": operation,
                        "OrganizationId": org_id,
                        "OrganizationName": env.split('.').next().unwrap_or_default(),
                        "OutputParameters": [],
                        "OwningExtension": {"Id": step.id, "KeyAttributes": [], "LogicalName": "sdkmessageprocessingstep", "Name": step.name, "RowVersion": null},
                        "ParentContext": null,
                        "PostEntityImages": [],
                        "PreEntityImages": [],
                        "PrimaryEntityId": change.id,
                        "PrimaryEntityName": change.table.logical_name(),
                        "RequestId": operation,
                        "SecondaryEntityName": "none",
                        "SharedVariables": [],
                        "Stage": step.stage,
                        "UserId": super::OWNER_ID,
                    });
                    let mut url = endpoint.url.clone();
                    let mut headers = vec![
                        ("content-type".to_owned(), "application/json".to_owned()),
                        ("x-ms-dynamics-organization".to_owned(), env.clone()),
                        (
                            "x-ms-dynamics-entity-name".to_owned(),
                            change.table.logical_name().to_owned(),
                        ),
                        (
                            "x-ms-dynamics-request-name".to_owned(),
                            change.message.to_owned(),
                        ),
                        ("x-ms-correlation-request-id".to_owned(), correlation),
                    ];
                    match endpoint.authtype {
                        5 => headers.extend(endpoint.settings.iter().cloned()),
                        _ => {
                            if let Ok(mut u) = url::Url::parse(&url) {
                                u.query_pairs_mut().extend_pairs(endpoint.settings.iter());
                                url = u.to_string();
                            }
                        }
                    }
                    made.push(Outgoing {
                        url,
                        headers,
                        body: body.to_string(),
                        attempt: 1,
                        due_ms: now,
                    });
                }
            }
        }
        store.hook_out.waiting.extend(made);
    }
}

/// One round of deliveries: new changes become requests, due ones are sent in order.
pub(crate) async fn tick(state: &SandboxState, client: &reqwest::Client) {
    state.collect_dyn_webhooks();
    let now = crate::clock::now_ms();
    let due: Vec<Outgoing> = {
        let mut store = state.dynamics_crm_store();
        let (due, later) = std::mem::take(&mut store.hook_out.waiting)
            .into_iter()
            .partition(|o: &Outgoing| o.due_ms <= now);
        store.hook_out.waiting = later;
        due
    };
    for o in due {
        let status = post(client, &o.url, &o.headers, &o.body, TIMEOUT)
            .await
            .map(|(s, _)| s);
        let retry = (!delivered(status) && o.attempt < ATTEMPTS).then(|| Outgoing {
            attempt: o.attempt + 1,
            due_ms: crate::clock::now_ms() + RETRY_MS * i64::from(o.attempt),
            ..o.clone()
        });
        let mut store = state.dynamics_crm_store();
        let out = &mut store.hook_out;
        if out.sent.len() >= DELIVERIES_KEPT {
            out.sent.drain(..DELIVERIES_KEPT / 2);
        }
        out.sent.push(Delivery {
            url: o.url,
            headers: o.headers,
            body: o.body,
            status,
            attempt: o.attempt,
        });
        if let Some(r) = retry {
            out.waiting.push(r);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_settings_are_read_as_registered() {
        assert_eq!(
            settings(
                r#"<settings><setting name="x-conduit-webhook-key" value="a&amp;b" /></settings>"#
            ),
            Some(vec![("x-conduit-webhook-key".to_owned(), "a&b".to_owned())])
        );
        assert_eq!(settings("<settings></settings>"), None);
        assert_eq!(settings("key=value"), None);
        assert_eq!(key_of("/serviceendpoints(ABC-1)"), Some("abc-1".to_owned()));
        assert_eq!(
            table_of_filter(&filter_id("Update", DynTable::Account)),
            Some(("Update", DynTable::Account))
        );
        assert_eq!(
            HookRoute::of(&Method::PATCH, "serviceendpoints", true),
            None
        );
        assert_eq!(
            HookRoute::of(&Method::DELETE, "sdkmessageprocessingsteps", true),
            Some(HookRoute::Step)
        );
    }
}

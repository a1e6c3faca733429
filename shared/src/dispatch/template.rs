//! Integration templates as data (`shared/integration-templates.yaml`, embedded at
//! build time as JSON): per provider, the actions a dispatch step can run — their
//! requests (method, path on the connection's API base, query, headers, JSON body
//! templates), what each captures from the answer, how each effect stays exactly once
//! (idempotency header, upsert, or a lookup before a retry), the settings a tenant
//! enters, the events an action suits and the context it requires.
//!
//! Also here: the render context every template sees ([`render_context`]), sample
//! events for `POST /v1/integrations/{id}/test`, and save-time validation of a
//! tenant's settings, payload overrides and custom requests (positions, no values).
//! Rendering itself is [`super::render`].
//!
//! How the engine runs one step (an integration's action) with these:
//! 1. `missing_required(action, ctx)` empty, else the step fails permanently (named paths);
//!    `ctx` from [`render_context`], with the action's overrides merged first
//!    ([`Action::with_overrides`]).
//! 2. For each request in order: skip it when `skip_if` is true
//!    ([`Renderer::condition`]); render it ([`Renderer::render_action_request`]) once and
//!    store the rendered request with the step state (a retry resends the same bytes);
//!    send it (`csrf` first fetches SAP's token); on success
//!    [`Renderer::capture`] the answer into `ctx.captures`.
//! 3. After an unknown outcome (timeout, reset, 5xx after sending) of an effect:
//!    `header` and `upsert` → resend as is; `lookup` → render and send its request, then
//!    [`Renderer::lookup_found`]: `Some(id)` = done (the id is captured), `None` = resend.
//! 4. [`Renderer::outputs`] gives `{id, url}` for `steps.<key>.outputs` of later steps.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::event::{Channel, Contact, Conversation, Direction, EventType, ProductEvent, Sentiment};
use super::render::{Renderer, path_present, read_expression_paths, read_paths};

/// The catalogue as `build.rs` converted it from `integration-templates.yaml`.
const TEMPLATES_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/integration-templates.json"));

/// Conduit's own events, dispatchable like product events.
pub const CONDUIT_EVENTS: [&str; 4] = [
    "connection.reauth_required",
    "sync.run.completed",
    "sync.run.failed",
    "conflict.opened",
];

/// Every provider's templates.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateCatalogue {
    /// YAML anchors shared by the templates (nothing reads them after parsing).
    #[serde(rename = "snippets", default, skip_serializing)]
    _snippets: serde::de::IgnoredAny,
    /// The providers, in display order.
    pub templates: Vec<ProviderTemplates>,
}

/// One provider's actions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderTemplates {
    /// The provider's catalogue id (`providers.yaml`), or `webhook`.
    pub provider: String,
    /// Display name.
    pub name: String,
    /// Reference pages the templates follow.
    pub docs: Vec<String>,
    /// What the templates assume and why (empty when everything is confirmed).
    pub assumed: Vec<String>,
    /// The actions.
    pub actions: Vec<Action>,
}

/// One action (`log_call`, `create_ticket`…): requests run in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    /// Id within the provider.
    pub id: String,
    /// Display title.
    pub title: String,
    /// What it does.
    pub description: String,
    /// The event types it suits (product types and Conduit's own).
    pub events: Vec<String>,
    /// Context paths that must be present (`a|b`: either).
    pub requires: Vec<String>,
    /// What the tenant enters per integration.
    pub settings: Vec<Setting>,
    /// The requests, in order.
    pub requests: Vec<RequestTemplate>,
    /// What later steps see.
    pub outputs: Outputs,
    /// The kind of personal connection it acts with (Google `gmail`, `calendar`): an
    /// integration of it names its owner's connection, or a user to act as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_kind: Option<String>,
    /// An inbound action: it sends nothing but starts an import of the provider's
    /// knowledge base into Conduit's ([`crate::kb::run::start_integration`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kb_import: bool,
}

/// A per-integration setting of an action.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Setting {
    /// Name (`settings.<name>` in templates).
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Whether an integration must set it.
    #[serde(default)]
    pub required: bool,
    /// Used when the tenant sets nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// A sample value for tests and the dashboard.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub example: Option<Value>,
}

/// One request of an action; every string leaf is a template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestTemplate {
    /// Name within the action (logs, captures).
    pub name: String,
    /// HTTP method.
    pub method: String,
    /// Path on the connection's API base (`/…`, or empty for the base itself).
    pub path: String,
    /// The provider's origin for this API when it is not the connection's API base
    /// (Gmail's `https://gmail.googleapis.com`, as its discovery document serves it):
    /// the path is on it. Catalogue data, never a template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// Query parameters (`name?` drops an empty one).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, String>,
    /// Headers beyond auth and content type (`name?` drops an empty one).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// JSON body template.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
    /// A mail message template (`to`, `cc`, `bcc`, `reply_to`, `subject`, `text`,
    /// `html`, `thread_id`… as `POST /v1/me/gmail/send` takes them): rendered, checked
    /// and built into MIME (`conduit::mail`), `From` the connection's address, and sent
    /// as Gmail's `{"raw": base64url, "threadId"?}` body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mail: Option<Value>,
    /// An expression: the request is skipped when it is true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_if: Option<String>,
    /// Capture name → JSON pointer into the answer, or a template of a value known
    /// before the answer (kept once the request succeeded or its lookup found it).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub capture: BTreeMap<String, String>,
    /// The request creates or changes something.
    #[serde(default)]
    pub effect: bool,
    /// SAP: fetch a CSRF token (and its cookies) first.
    #[serde(default)]
    pub csrf: bool,
    /// How the effect stays exactly once (every effect has one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency: Option<Idempotency>,
}

impl RequestTemplate {
    /// The capture a lookup's found id goes to: its `into`, else the request's only capture.
    pub fn lookup_capture(&self) -> Option<String> {
        match &self.idempotency {
            Some(Idempotency::Lookup {
                into: Some(name), ..
            }) => Some(name.clone()),
            Some(Idempotency::Lookup { into: None, .. }) if self.capture.len() == 1 => {
                self.capture.keys().next().cloned()
            }
            _ => None,
        }
    }
}

/// How one effect stays exactly once under retries and redelivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Idempotency {
    /// The named header carries the idempotency key; the provider replays the first answer.
    Header {
        /// The header (`Idempotency-Key`).
        name: String,
    },
    /// The request is idempotent by itself (an upsert on a key).
    Upsert,
    /// The provider offers neither a key nor a way to look the effect up with the
    /// scopes held (Gmail's send-only grant cannot search sent mail): sent at most
    /// once — an attempt whose outcome is unknown fails the step (`unknown_outcome`)
    /// rather than risk a second copy; a refusal before it was done (429) is retried.
    AtMostOnce,
    /// Before a retry after an unknown outcome, run `request`: a value at `found`
    /// means the effect happened, with that id.
    Lookup {
        /// The lookup request (its captures are ignored).
        request: Box<RequestTemplate>,
        /// JSON pointer to the id (into the matching item when `match` is given).
        found: String,
        /// When the answer is a list to search.
        #[serde(rename = "match", default, skip_serializing_if = "Option::is_none")]
        matcher: Option<LookupMatch>,
        /// The capture the found id goes to (default: the request's only capture).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        into: Option<String>,
    },
}

/// Finds the item of a list answer that shows the effect happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupMatch {
    /// JSON pointer to the list (empty: the answer is the list).
    pub list: String,
    /// JSON pointer, within an item, to the text compared.
    pub field: String,
    /// A template: the item's text contains it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contains: Option<String>,
    /// A template: the item's text equals it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub equals: Option<String>,
}

/// What an action gives later steps.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outputs {
    /// The capture holding the created record's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// A template for the record's URL (may use captures and the connection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

static CATALOGUE: LazyLock<TemplateCatalogue> = LazyLock::new(|| {
    match serde_json::from_str::<TemplateCatalogue>(TEMPLATES_JSON) {
        Ok(catalogue) => catalogue,
        Err(e) => {
            // A unit test reads the same file: this only happens in a broken build.
            tracing::error!(error = %e, "integration templates do not parse");
            TemplateCatalogue {
                _snippets: serde::de::IgnoredAny,
                templates: Vec::new(),
            }
        }
    }
});

/// The embedded catalogue, parsed once.
pub fn catalogue() -> &'static TemplateCatalogue {
    &CATALOGUE
}

impl TemplateCatalogue {
    /// A provider's templates.
    pub fn get(&self, provider: &str) -> Option<&ProviderTemplates> {
        self.templates.iter().find(|p| p.provider == provider)
    }

    /// Every provider's templates, in display order.
    pub fn iter(&self) -> impl Iterator<Item = &ProviderTemplates> {
        self.templates.iter()
    }
}

impl ProviderTemplates {
    /// One action by id.
    pub fn action(&self, id: &str) -> Option<&Action> {
        self.actions.iter().find(|a| a.id == id)
    }
}

impl Action {
    /// Whether the action suits an event type (`conversation_ended`, `sync.run.failed`).
    pub fn suits(&self, event_type: &str) -> bool {
        self.events.iter().any(|e| e == event_type)
    }

    /// The request payload overrides apply to: the last effect.
    pub fn primary_request(&self) -> Option<usize> {
        self.requests.iter().rposition(|r| r.effect)
    }

    /// Every capture name its requests define.
    pub fn capture_names(&self) -> BTreeSet<String> {
        self.requests
            .iter()
            .flat_map(|r| r.capture.keys().cloned())
            .collect()
    }

    /// The action with a tenant's payload overrides merged into its primary request's
    /// body: `{"ticket.subject": "Call with {{ contact.name }}"}`. A path may add
    /// members only where the body is an object.
    pub fn with_overrides(&self, overrides: &Map<String, Value>) -> Result<Action, Vec<Problem>> {
        let mut action = self.clone();
        if overrides.is_empty() {
            return Ok(action);
        }
        let Some(index) = action.primary_request() else {
            return Err(vec![Problem::new(
                "overrides",
                "this action has no body to override",
            )]);
        };
        let mut problems = Vec::new();
        let body = action.requests[index]
            .body
            .get_or_insert_with(|| Value::Object(Map::new()));
        for (path, template) in overrides {
            let field = format!("overrides.{path}");
            let parts: Vec<&str> = path.split('.').collect();
            if parts.iter().any(|p| p.is_empty()) {
                problems.push(Problem::new(
                    &field,
                    "a path of member names separated by dots",
                ));
                continue;
            }
            let (last, parents) = match parts.split_last() {
                Some(split) => split,
                None => continue,
            };
            let mut at = Some(&mut *body);
            for part in parents {
                at = at.and_then(Value::as_object_mut).map(|object| {
                    object
                        .entry((*part).to_owned())
                        .or_insert_with(|| Value::Object(Map::new()))
                });
            }
            match at.and_then(Value::as_object_mut) {
                Some(object) => {
                    // An optional member (`name?`) is replaced by the override.
                    object.remove(&format!("{last}?"));
                    object.insert((*last).to_owned(), template.clone());
                }
                _ => problems.push(Problem::new(
                    &field,
                    "the body is not an object at this path",
                )),
            }
        }
        if problems.is_empty() {
            Ok(action)
        } else {
            Err(problems)
        }
    }
}

/// One problem of a tenant's input: where, what, and for templates the line and column.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The input's path (`overrides.ticket.subject`, `settings.queue_id`, `body.x`).
    pub field: String,
    /// What is wrong (never a setting's value).
    pub message: String,
    /// The line within the template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// The column within that line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

impl Problem {
    fn new(field: &str, message: impl Into<String>) -> Self {
        Problem {
            field: field.to_owned(),
            message: message.into(),
            line: None,
            column: None,
        }
    }
}

/// What the render context is built from.
#[derive(Debug, Clone, Copy)]
pub struct ContextParts<'a> {
    /// The event as JSON (a product event, or one of Conduit's with `detail`).
    pub event: &'a Value,
    /// The action (its setting defaults fill what the tenant left out).
    pub action: &'a Action,
    /// The integration's settings.
    pub settings: &'a Map<String, Value>,
    /// `{api_base, account_id, account_name, identity}` of the connection.
    pub connection: &'a Value,
    /// `{"<step key>": {"outputs": {...}}}` of earlier steps.
    pub steps: &'a Value,
    /// `<event_id>:<integration_id>`, stable per event and step.
    pub idempotency_key: &'a str,
}

/// The render context: the event spread at the top level and whole under `event`,
/// `conversation`, `contact` (with `crm_ids`) and `custom_fields` always objects,
/// settings over their defaults, the connection, earlier steps, empty captures and the
/// idempotency key. Shared: templates read it through a view that holds it (see
/// `render.rs`), and a change to it (a capture) goes through `Arc::make_mut`.
pub fn render_context(parts: ContextParts<'_>) -> std::sync::Arc<Value> {
    let mut ctx = match parts.event {
        Value::Object(event) => event.clone(),
        _ => Map::new(),
    };
    for name in ["conversation", "custom_fields"] {
        if !ctx.get(name).is_some_and(Value::is_object) {
            ctx.insert(name.to_owned(), Value::Object(Map::new()));
        }
    }
    let mut contact = ctx
        .get("contact")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if !contact.get("crm_ids").is_some_and(Value::is_object) {
        contact.insert("crm_ids".to_owned(), Value::Object(Map::new()));
    }
    ctx.insert("contact".to_owned(), Value::Object(contact));
    let mut settings = Map::new();
    for setting in &parts.action.settings {
        if let Some(default) = &setting.default {
            settings.insert(setting.name.clone(), default.clone());
        }
    }
    for (name, value) in parts.settings {
        if !value.is_null() {
            settings.insert(name.clone(), value.clone());
        }
    }
    ctx.insert("event".to_owned(), parts.event.clone());
    ctx.insert("settings".to_owned(), Value::Object(settings));
    ctx.insert("connection".to_owned(), parts.connection.clone());
    ctx.insert("steps".to_owned(), parts.steps.clone());
    ctx.insert("captures".to_owned(), Value::Object(Map::new()));
    ctx.insert(
        "idempotency_key".to_owned(),
        Value::String(parts.idempotency_key.to_owned()),
    );
    std::sync::Arc::new(Value::Object(ctx))
}

/// The `requires` paths the context lacks (an entry `a|b` is met by either).
pub fn missing_required(action: &Action, ctx: &Value) -> Vec<String> {
    action
        .requires
        .iter()
        .filter(|entry| !entry.split('|').any(|path| path_present(ctx, path)))
        .cloned()
        .collect()
}

/// A complete sample of a product event type (every optional field set), built from
/// [`ProductEvent`] so that it always parses.
pub fn sample_event(kind: EventType) -> Value {
    let at = time::macros::datetime!(2026-12-05 03:12:44 UTC);
    let conversation = (kind != EventType::KbSync).then(|| Conversation {
        id: "conv_8f2c".to_owned(),
        channel: Channel::Voice,
        direction: Some(Direction::Inbound),
        started_at: Some(at - time::Duration::seconds(312)),
        ended_at: Some(at),
        duration_seconds: Some(312),
        from_number: Some("+61412345678".to_owned()),
        to_number: Some("+61290001234".to_owned()),
        transcript_url: Some(
            "https://app.example.com/conversations/conv_8f2c/transcript".to_owned(),
        ),
        summary: Some(
            "Caller reported a broken streetlight outside 12 King St and asked for a callback."
                .to_owned(),
        ),
        sentiment: Some(Sentiment::Neutral),
        score: Some(if kind == EventType::LowScore {
            31.0
        } else {
            82.0
        }),
    });
    let crm_ids = [
        ("salesforce", "003AAAAAAAAAAAAAAA"),
        ("dynamics365", "9f1c2d3e-0000-4000-8000-00000000a001"),
        ("zendesk", "381000000001"),
        ("freshdesk", "43000000001"),
        ("hubspot", "51"),
        ("pipedrive", "1201"),
        ("zoho", "5725767000000412001"),
    ];
    let Ok(tenant_id) = crate::domain::TenantId::parse("acme") else {
        return Value::Null;
    };
    let event = ProductEvent {
        schema_version: super::event::SCHEMA_VERSION,
        kind,
        event_id: "evt_01JEXAMPLE7Q".to_owned(),
        tenant_id,
        assistant_id: Some("asst_frontdesk".to_owned()),
        assistant_owner_id: crate::domain::UserId::parse("user_frontdesk_lead").ok(),
        occurred_at: at,
        conversation,
        contact: Some(Contact {
            name: Some("Jane Citizen".to_owned()),
            email: Some("jane@example.com".to_owned()),
            phone: Some("+61412345678".to_owned()),
            crm_ids: crm_ids
                .iter()
                .map(|(p, id)| ((*p).to_owned(), (*id).to_owned()))
                .collect(),
        }),
        custom_fields: BTreeMap::from([("plan".to_owned(), json!("gold"))]),
    };
    serde_json::to_value(&event).unwrap_or(Value::Null)
}

/// A sample of one of Conduit's own events (`sync.run.failed`), or `None` for a name
/// that is not one.
pub fn sample_conduit_event(kind: &str) -> Option<Value> {
    let detail = match kind {
        "connection.reauth_required" => {
            json!({"connection_id": "conn_01", "provider": "salesforce", "reason": "refresh token revoked"})
        }
        "sync.run.completed" => {
            json!({"run_id": "run_01", "connection_id": "conn_01", "entity": "contacts", "created": 3, "updated": 5})
        }
        "sync.run.failed" => {
            json!({"run_id": "run_02", "connection_id": "conn_01", "entity": "contacts", "error": "provider unavailable"})
        }
        "conflict.opened" => {
            json!({"conflict_id": "cfl_01", "connection_id": "conn_01", "entity": "contacts", "record_id": "rec_01"})
        }
        _ => return None,
    };
    Some(json!({
        "type": kind, "event_id": "evt_01JCONDUIT00", "tenant_id": "acme",
        "occurred_at": "2026-12-05T03:12:44Z", "detail": detail,
    }))
}

/// A sample connection for rendering tests and previews.
pub fn sample_connection(api_base: &str) -> Value {
    json!({
        "api_base": api_base, "account_id": "42", "account_name": "Acme",
        "identity": {"id": "3b1f2c4d-0000-4000-8000-0000000000aa", "email": "admin@example.com", "name": "Admin"},
    })
}

/// Checks a tenant's settings and payload overrides for an action at save time: unknown
/// and missing required settings (values never echoed), template syntax (with line and
/// column), variables outside the context, and override paths the body cannot take.
pub fn validate_action_input(
    action: &Action,
    settings: &Map<String, Value>,
    overrides: &Map<String, Value>,
) -> Result<(), Vec<Problem>> {
    let mut problems = Vec::new();
    for name in settings.keys() {
        if !action.settings.iter().any(|s| &s.name == name) {
            problems.push(Problem::new(
                &format!("settings.{name}"),
                "not a setting of this action",
            ));
        }
    }
    for setting in action.settings.iter().filter(|s| s.required) {
        if settings
            .get(&setting.name)
            .is_none_or(|v| v.is_null() || v == "")
        {
            problems.push(Problem::new(
                &format!("settings.{}", setting.name),
                "required",
            ));
        }
    }
    if let Err(mut found) = action.with_overrides(overrides) {
        problems.append(&mut found);
    }
    let known = Known::of(action);
    for (path, template) in overrides {
        check_templates(
            template,
            &format!("overrides.{path}"),
            &known,
            &mut problems,
        );
    }
    if problems.is_empty() {
        // What the static checks cannot see (a comparison of a string with a number, a
        // setting of the wrong type): render against a sample of every suited event.
        if let Ok(merged) = action.with_overrides(overrides) {
            problems.extend(sample_render_problems(&merged, settings));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Renders every request of an action against a sample of each event it suits, every
/// capture set to a sample value: the first failure per event type.
fn sample_render_problems(action: &Action, settings: &Map<String, Value>) -> Vec<Problem> {
    let mut problems = Vec::new();
    let connection = sample_connection("https://sample.example.com/api");
    let custom = custom_fields_read(action);
    for event_type in &action.events {
        let mut event = match serde_json::from_value::<EventType>(Value::String(event_type.clone()))
        {
            Ok(kind) => sample_event(kind),
            Err(_) => match sample_conduit_event(event_type) {
                Some(event) => event,
                None => continue,
            },
        };
        // The tenant's own event fields the templates read (a ticket id the product
        // keeps as `custom_fields.zendesk_ticket_id`) are in the sample too: a sample
        // cannot know them, and an event without one fails its step with the field
        // named, where a setting does not stand in for it.
        if let Some(fields) = event
            .get_mut("custom_fields")
            .and_then(Value::as_object_mut)
        {
            for name in &custom {
                fields
                    .entry(name.clone())
                    .or_insert_with(|| Value::String("sample".to_owned()));
            }
        }
        let mut ctx = render_context(ContextParts {
            event: &event,
            action,
            settings,
            connection: &connection,
            steps: &json!({}),
            idempotency_key: "evt_sample:int_sample",
        });
        if !missing_required(action, &ctx).is_empty() {
            continue;
        }
        // A request the tenant's settings skip (`skip_if` true before any capture, like
        // Salesforce's upsert without an external-id field) is never sent: not checked.
        let skipped: Vec<bool> = action
            .requests
            .iter()
            .map(|r| {
                r.skip_if
                    .as_ref()
                    .is_some_and(|expr| CHECKER.condition(expr, &ctx).unwrap_or(false))
            })
            .collect();
        let sample = std::sync::Arc::make_mut(&mut ctx);
        for name in action.capture_names() {
            sample["captures"][name] = Value::String("sample-id".to_owned());
        }
        let failure = (0..action.requests.len())
            .filter(|&i| !skipped[i])
            .find_map(|i| CHECKER.render_action_request(action, i, &ctx).err())
            .or_else(|| CHECKER.outputs(action, &ctx).err());
        if let Some(e) = failure {
            problems.push(Problem {
                field: e.field,
                message: format!("with a sample {event_type} event: {}", e.message),
                line: e.line,
                column: None,
            });
        }
    }
    problems
}

/// The custom fields an action's templates read (`custom_fields.<name>` in any template
/// of its requests, lookups, captures and outputs, or in a `skip_if`).
fn custom_fields_read(action: &Action) -> BTreeSet<String> {
    fn leaves(value: &Value, paths: &mut Vec<String>) {
        match value {
            Value::String(source) => paths.extend(read_paths(source)),
            Value::Array(items) => items.iter().for_each(|v| leaves(v, paths)),
            Value::Object(members) => members.values().for_each(|v| leaves(v, paths)),
            _ => {}
        }
    }
    let mut paths = Vec::new();
    leaves(
        &serde_json::to_value(action).unwrap_or_default(),
        &mut paths,
    );
    for expr in action.requests.iter().filter_map(|r| r.skip_if.as_deref()) {
        paths.extend(read_expression_paths(expr));
    }
    paths
        .iter()
        .filter_map(|p| p.strip_prefix("custom_fields."))
        .filter_map(|rest| rest.split('.').next())
        .map(str::to_owned)
        .collect()
}

/// A tenant-defined request (the Custom API action).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomRequest {
    /// POST, PUT or PATCH (GET and DELETE too).
    pub method: String,
    /// A path on the connection's base (`/orders/{{ conversation.id }}`).
    pub path: String,
    /// Query templates.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Header templates (reserved names refused; no secrets: those live on the connection).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The JSON body template.
    #[serde(default)]
    pub body: Option<Value>,
    /// Output name → JSON pointer into the answer (`id` is the one later steps use).
    #[serde(default)]
    pub outputs: BTreeMap<String, String>,
    /// A lookup that resolves an unknown outcome: a GET and where its answer holds the id.
    #[serde(default)]
    pub lookup: Option<CustomLookup>,
    /// Send the Idempotency-Key as a quoted structured-field string (the draft's form);
    /// `false` sends it bare.
    #[serde(default = "yes")]
    pub quote_key: bool,
}

fn yes() -> bool {
    true
}

/// The lookup of a custom request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomLookup {
    /// A path on the connection's base.
    pub path: String,
    /// Query templates.
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// JSON pointer to the id in the answer.
    pub found: String,
}

/// Headers a tenant cannot set (the engine owns them).
const RESERVED_HEADERS: [&str; 8] = [
    "authorization",
    "host",
    "content-length",
    "cookie",
    "transfer-encoding",
    "connection",
    "idempotency-key",
    "proxy-authorization",
];

/// Checks a custom request at save time and turns it into a request template that
/// carries the Idempotency-Key (and the lookup, when given).
pub fn validate_custom_request(req: &CustomRequest) -> Result<RequestTemplate, Vec<Problem>> {
    let mut problems = Vec::new();
    let method = req.method.to_ascii_uppercase();
    if !["POST", "PUT", "PATCH", "GET", "DELETE"].contains(&method.as_str()) {
        problems.push(Problem::new("method", "POST, PUT, PATCH, GET or DELETE"));
    }
    check_path(&req.path, "path", &mut problems);
    for name in req.headers.keys() {
        let lower = name.to_ascii_lowercase();
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            problems.push(Problem::new(
                &format!("headers.{name}"),
                "set by Conduit, not by a template",
            ));
        } else if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
        {
            problems.push(Problem::new(
                &format!("headers.{name}"),
                "not a header name",
            ));
        }
    }
    for (name, pointer) in &req.outputs {
        if !(pointer.is_empty() || pointer.starts_with('/')) {
            problems.push(Problem::new(
                &format!("outputs.{name}"),
                "a JSON pointer (/id)",
            ));
        }
    }
    let mut capture: BTreeMap<String, String> = req.outputs.clone();
    if capture.is_empty() {
        capture.insert("id".to_owned(), "/id".to_owned());
    }
    let key = if req.quote_key {
        "\"{{ idempotency_key }}\""
    } else {
        "{{ idempotency_key }}"
    };
    let mut headers = req.headers.clone();
    headers.insert("Idempotency-Key".to_owned(), key.to_owned());
    let idempotency = match &req.lookup {
        None => Idempotency::Header {
            name: "Idempotency-Key".to_owned(),
        },
        Some(lookup) => {
            check_path(&lookup.path, "lookup.path", &mut problems);
            if !lookup.found.starts_with('/') {
                problems.push(Problem::new("lookup.found", "a JSON pointer (/id)"));
            }
            Idempotency::Lookup {
                request: Box::new(RequestTemplate {
                    name: "lookup".to_owned(),
                    method: "GET".to_owned(),
                    path: lookup.path.clone(),
                    origin: None,
                    query: lookup.query.clone(),
                    headers: req.headers.clone(),
                    body: None,
                    mail: None,
                    skip_if: None,
                    capture: BTreeMap::new(),
                    effect: false,
                    csrf: false,
                    idempotency: None,
                }),
                found: lookup.found.clone(),
                matcher: None,
                into: capture.contains_key("id").then(|| "id".to_owned()),
            }
        }
    };
    let template = RequestTemplate {
        name: "request".to_owned(),
        method,
        path: req.path.clone(),
        origin: None,
        query: req.query.clone(),
        headers,
        body: req.body.clone(),
        mail: None,
        skip_if: None,
        capture,
        effect: true,
        csrf: false,
        idempotency: Some(idempotency),
    };
    let known = Known {
        settings: BTreeSet::new(),
        captures: BTreeSet::new(),
    };
    check_templates(
        &Value::String(req.path.clone()),
        "path",
        &known,
        &mut problems,
    );
    for (kind, map) in [("query", &req.query), ("headers", &req.headers)] {
        for (name, value) in map {
            check_templates(
                &Value::String(value.clone()),
                &format!("{kind}.{name}"),
                &known,
                &mut problems,
            );
        }
    }
    if let Some(body) = &req.body {
        check_templates(body, "body", &known, &mut problems);
    }
    if let Some(lookup) = &req.lookup {
        check_templates(
            &Value::String(lookup.path.clone()),
            "lookup.path",
            &known,
            &mut problems,
        );
    }
    if problems.is_empty() {
        // A sample conversation_ended event finds what only rendering can (types).
        let action = Action {
            id: "request".to_owned(),
            title: String::new(),
            description: String::new(),
            events: vec!["conversation_ended".to_owned()],
            requires: Vec::new(),
            settings: Vec::new(),
            requests: vec![template.clone()],
            outputs: Outputs::default(),
            connection_kind: None,
            kb_import: false,
        };
        problems.extend(sample_render_problems(&action, &Map::new()));
    }
    if problems.is_empty() {
        Ok(template)
    } else {
        Err(problems)
    }
}

fn check_path(path: &str, field: &str, problems: &mut Vec<Problem>) {
    if !path.starts_with('/') || path.starts_with("//") {
        problems.push(Problem::new(
            field,
            "a path on the connection's base, starting with /",
        ));
    } else if path.contains("://") || path.split(['/', '?', '#']).any(|s| s == ".." || s == ".") {
        problems.push(Problem::new(field, "no scheme, host, . or .. segments"));
    }
}

/// The names templates may read: the context schema plus an action's settings and captures.
struct Known {
    settings: BTreeSet<String>,
    captures: BTreeSet<String>,
}

/// The fields a conversation and a contact have (from the sample, which sets them all).
static EVENT_FIELDS: LazyLock<(BTreeSet<String>, BTreeSet<String>)> = LazyLock::new(|| {
    let sample = sample_event(EventType::ConversationEnded);
    let keys = |name: &str| {
        sample
            .get(name)
            .and_then(Value::as_object)
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    (keys("conversation"), keys("contact"))
});

impl Known {
    fn of(action: &Action) -> Self {
        Known {
            settings: action.settings.iter().map(|s| s.name.clone()).collect(),
            captures: action.capture_names(),
        }
    }

    /// Whether a dotted path a template reads is in the context.
    fn knows(&self, path: &str) -> bool {
        let mut parts = path.split('.');
        let root = parts.next().unwrap_or_default();
        let second = parts.next();
        let (conversation, contact) = &*EVENT_FIELDS;
        match root {
            "type" | "event_id" | "tenant_id" | "assistant_id" | "occurred_at"
            | "schema_version" | "idempotency_key" => second.is_none(),
            "event" | "detail" | "custom_fields" | "steps" => true,
            "conversation" => second.is_none_or(|s| conversation.contains(s)),
            "contact" => second.is_none_or(|s| contact.contains(s)),
            "connection" => second.is_none_or(|s| {
                ["api_base", "account_id", "account_name", "identity"].contains(&s)
            }),
            "settings" => second.is_none_or(|s| self.settings.contains(s)),
            "captures" => second.is_none_or(|s| self.captures.contains(s)),
            // minijinja's global functions.
            "range" | "dict" | "namespace" => true,
            _ => false,
        }
    }
}

/// Checks every string leaf of a template value: syntax and variables.
fn check_templates(template: &Value, field: &str, known: &Known, problems: &mut Vec<Problem>) {
    match template {
        Value::String(source) => check_template(source, field, known, problems),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                check_templates(item, &format!("{field}[{i}]"), known, problems);
            }
        }
        Value::Object(members) => {
            for (key, item) in members {
                let name = key.strip_suffix('?').unwrap_or(key);
                check_templates(item, &format!("{field}.{name}"), known, problems);
            }
        }
        _ => {}
    }
}

static CHECKER: LazyLock<Renderer> = LazyLock::new(Renderer::new);

fn check_template(source: &str, field: &str, known: &Known, problems: &mut Vec<Problem>) {
    match CHECKER.compile(source) {
        Err(e) => {
            let (line, column) = position(source, &e);
            problems.push(Problem {
                field: field.to_owned(),
                message: format!(
                    "template syntax: {}",
                    e.detail().unwrap_or("invalid template")
                ),
                line,
                column,
            });
        }
        Ok(_) => {
            let unknown: Vec<String> = read_paths(source)
                .into_iter()
                .filter(|p| !known.knows(p))
                .collect();
            if !unknown.is_empty() {
                problems.push(Problem::new(
                    field,
                    format!("not in the event context: {}", unknown.join(", ")),
                ));
            }
        }
    }
}

/// The line and column (1-based, in characters) of a template error.
fn position(source: &str, e: &minijinja::Error) -> (Option<usize>, Option<usize>) {
    let column = e.range().and_then(|range| {
        let before = source.get(..range.start)?;
        Some(before.chars().rev().take_while(|c| *c != '\n').count() + 1)
    });
    (e.line(), column)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dispatch::render::Renderer;

    const PRODUCT_TYPES: [EventType; 5] = [
        EventType::ConversationEnded,
        EventType::ContactRequest,
        EventType::Escalation,
        EventType::LowScore,
        EventType::KbSync,
    ];

    fn product_type(name: &str) -> Option<EventType> {
        serde_json::from_value(Value::String(name.to_owned())).ok()
    }

    fn sample_for(name: &str) -> Value {
        match product_type(name) {
            Some(kind) => sample_event(kind),
            None => sample_conduit_event(name).unwrap(),
        }
    }

    /// Settings with every example and required value set.
    fn example_settings(action: &Action) -> Map<String, Value> {
        action
            .settings
            .iter()
            .filter_map(|s| s.example.clone().map(|v| (s.name.clone(), v)))
            .collect()
    }

    fn context(
        action: &Action,
        event: &Value,
        settings: &Map<String, Value>,
    ) -> std::sync::Arc<Value> {
        render_context(ContextParts {
            event,
            action,
            settings,
            connection: &sample_connection("https://acme.example.test/api/v2"),
            steps: &json!({"genesys_log_call": {"outputs": {"id": "note-77", "url": "https://x.test/n/77"}}}),
            idempotency_key: "evt_01JEXAMPLE7Q:01JINTEGRATION0",
        })
    }

    /// A provider answer that holds a value at every pointer given.
    fn answer_with(pointers: &BTreeMap<String, String>) -> Value {
        let mut answer = Value::Null;
        for (name, pointer) in pointers {
            let mut at = &mut answer;
            for part in pointer.split('/').skip(1) {
                at = match part.parse::<usize>() {
                    Ok(i) => {
                        if !at.is_array() {
                            *at = Value::Array(Vec::new());
                        }
                        let items = at.as_array_mut().unwrap();
                        while items.len() <= i {
                            items.push(Value::Null);
                        }
                        &mut items[i]
                    }
                    Err(_) => {
                        if !at.is_object() {
                            *at = Value::Object(Map::new());
                        }
                        at.as_object_mut()
                            .unwrap()
                            .entry(part.to_owned())
                            .or_insert(Value::Null)
                    }
                };
            }
            *at = Value::String(format!("{name}-1"));
        }
        answer
    }

    /// Runs an action's requests as the engine would, with answers that either hold
    /// every capture (`found`) or only the effects' captures (searches find nothing).
    fn run(
        renderer: &Renderer,
        action: &Action,
        mut ctx: std::sync::Arc<Value>,
        found: bool,
    ) -> Vec<RenderedRequestSummary> {
        let mut sent = Vec::new();
        for (i, req) in action.requests.iter().enumerate() {
            let place = format!("{}[{i}]", action.id);
            if let Some(expr) = &req.skip_if
                && renderer
                    .condition(expr, &ctx)
                    .unwrap_or_else(|e| panic!("{place}: {e}"))
            {
                continue;
            }
            let rendered = renderer
                .render_action_request(action, i, &ctx)
                .unwrap_or_else(|e| panic!("{place}: {e}"));
            assert!(
                rendered.path.is_empty() || rendered.path.starts_with('/'),
                "{place}: {}",
                rendered.path
            );
            if req.effect {
                match req
                    .idempotency
                    .as_ref()
                    .unwrap_or_else(|| panic!("{place}: an effect without idempotency"))
                {
                    Idempotency::Header { name } => {
                        assert!(
                            rendered
                                .headers
                                .iter()
                                .any(|(h, v)| h == name && !v.is_empty()),
                            "{place}: no {name}"
                        );
                    }
                    Idempotency::Upsert => {}
                    Idempotency::AtMostOnce => {
                        // Only where nothing else is possible: Gmail's send.
                        assert!(req.mail.is_some(), "{place}: at most once, not mail");
                    }
                    Idempotency::Lookup { request, .. } => {
                        let lookup = renderer
                            .render_request(request, &ctx)
                            .unwrap_or_else(|e| panic!("{place} lookup: {e}"));
                        assert!(
                            lookup.path.starts_with('/'),
                            "{place} lookup: {}",
                            lookup.path
                        );
                        assert!(!lookup.effect, "{place}: a lookup has no effect");
                        // An empty answer: the effect did not happen.
                        let mut scratch = ctx.clone();
                        assert_eq!(
                            renderer
                                .lookup_found(req, &json!({}), &mut scratch)
                                .unwrap(),
                            None,
                            "{place}"
                        );
                    }
                }
            }
            sent.push(RenderedRequestSummary {
                name: req.name.clone(),
                effect: rendered.effect,
            });
            if found || req.effect {
                renderer.capture(req, &answer_with(&req.capture), &mut ctx);
            }
        }
        let outputs = renderer
            .outputs(action, &ctx)
            .unwrap_or_else(|e| panic!("{} outputs: {e}", action.id));
        if action.outputs.id.is_some() {
            assert!(outputs.contains_key("id"), "{}: no id output", action.id);
        }
        sent
    }

    /// What was sent, for the tests' own checks.
    #[derive(Debug)]
    #[allow(dead_code)] // `name` shows in assertion messages.
    struct RenderedRequestSummary {
        name: String,
        effect: bool,
    }

    #[test]
    fn embedded_json_reads_as_the_yaml_source() {
        let from_yaml: TemplateCatalogue =
            serde_yaml_ng::from_str(include_str!("../../integration-templates.yaml")).unwrap();
        assert_eq!(
            serde_json::to_value(&from_yaml).unwrap(),
            serde_json::to_value(catalogue()).unwrap()
        );
        assert!(catalogue().iter().count() >= 13);
        for provider in [
            "genesys",
            "technologyone",
            "sap",
            "salesforce",
            "dynamics365",
            "zendesk",
            "freshdesk",
            "hubspot",
            "pipedrive",
            "zoho",
            "chatwoot",
            "custom_api",
            "webhook",
        ] {
            assert!(catalogue().get(provider).is_some(), "{provider}");
        }
        assert!(
            catalogue()
                .get("genesys")
                .unwrap()
                .action("log_call")
                .is_some()
        );
    }

    #[test]
    fn the_catalogue_is_consistent() {
        let providers = crate::providers::Catalogue::get().unwrap();
        for p in catalogue().iter() {
            assert!(
                p.provider == "webhook" || providers.providers.iter().any(|c| c.id == p.provider),
                "{} is not in providers.yaml",
                p.provider
            );
            let mut ids = BTreeSet::new();
            for action in &p.actions {
                assert!(ids.insert(&action.id), "{}.{} twice", p.provider, action.id);
                assert!(!action.events.is_empty(), "{}.{}", p.provider, action.id);
                for event in &action.events {
                    assert!(
                        product_type(event).is_some() || CONDUIT_EVENTS.contains(&event.as_str()),
                        "{}.{}: unknown event {event}",
                        p.provider,
                        action.id
                    );
                }
                if let Some(id) = &action.outputs.id {
                    assert!(
                        action.capture_names().contains(id),
                        "{}.{}: output {id} is no capture",
                        p.provider,
                        action.id
                    );
                }
                for req in &action.requests {
                    assert!(http::Method::from_bytes(req.method.as_bytes()).is_ok());
                    if let Some(origin) = &req.origin {
                        let url = url::Url::parse(origin).unwrap();
                        assert!(
                            url.scheme() == "https" && url.path() == "/" && url.query().is_none(),
                            "{}.{}: {origin} is an https origin",
                            p.provider,
                            action.id
                        );
                    }
                    for source in req.capture.values() {
                        assert!(
                            source.starts_with('/') || Renderer::new().compile(source).is_ok(),
                            "{}.{}: {source}",
                            p.provider,
                            action.id
                        );
                    }
                    if let Some(Idempotency::Lookup { found, matcher, .. }) = &req.idempotency {
                        assert!(found.starts_with('/'));
                        let target = req.lookup_capture();
                        assert!(
                            target.is_some_and(|t| req.capture.contains_key(&t)),
                            "{}.{}.{}: where does the found id go?",
                            p.provider,
                            action.id,
                            req.name
                        );
                        if let Some(m) = matcher {
                            assert!(m.contains.is_some() != m.equals.is_some());
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn every_template_reads_only_the_context() {
        for p in catalogue().iter() {
            for action in &p.actions {
                let known = Known::of(action);
                let mut problems = Vec::new();
                for (i, req) in action.requests.iter().enumerate() {
                    let at = format!("{}.{}.requests[{i}]", p.provider, action.id);
                    check_templates(
                        &serde_json::to_value(req).unwrap(),
                        &at,
                        &known,
                        &mut problems,
                    );
                    if let Some(expr) = &req.skip_if {
                        check_templates(
                            &Value::String(format!("{{{{ {expr} }}}}")),
                            &at,
                            &known,
                            &mut problems,
                        );
                    }
                }
                if let Some(url) = &action.outputs.url {
                    check_templates(
                        &Value::String(url.clone()),
                        "outputs.url",
                        &known,
                        &mut problems,
                    );
                }
                assert!(problems.is_empty(), "{problems:#?}");
            }
        }
    }

    #[test]
    fn every_action_renders_for_every_event_it_suits() {
        let renderer = Renderer::new();
        let mut rendered = 0;
        for p in catalogue().iter() {
            for action in p.actions.iter().filter(|a| !a.kb_import) {
                let settings = example_settings(action);
                for event_type in &action.events {
                    let event = sample_for(event_type);
                    let ctx = context(action, &event, &settings);
                    assert_eq!(
                        missing_required(action, &ctx),
                        Vec::<String>::new(),
                        "{}.{} {event_type}",
                        p.provider,
                        action.id
                    );
                    let found = run(&renderer, action, ctx.clone(), true);
                    let missed = run(&renderer, action, ctx, false);
                    assert!(
                        found.iter().any(|r| r.effect) || missed.iter().any(|r| r.effect),
                        "{}.{}",
                        p.provider,
                        action.id
                    );
                    // When a search misses, the create runs.
                    assert!(
                        missed.len() >= found.len(),
                        "{}.{}: {missed:?} {found:?}",
                        p.provider,
                        action.id
                    );
                    rendered += 1;
                }
            }
        }
        assert!(rendered > 100, "{rendered}");
    }

    #[test]
    fn the_gmail_step_builds_a_checked_message_and_the_calendar_step_a_keyed_event() {
        use base64::Engine as _;
        let renderer = Renderer::new();
        let google = catalogue().get("google").unwrap();
        let gmail = google.action("gmail.send_summary").unwrap();
        assert_eq!(gmail.connection_kind.as_deref(), Some("gmail"));
        let event = sample_event(EventType::ContactRequest);
        let mut settings = example_settings(gmail);
        let ctx = context(gmail, &event, &settings);
        let r = renderer.render_action_request(gmail, 0, &ctx).unwrap();
        let raw = r.body.as_ref().unwrap()["raw"].as_str().unwrap().to_owned();
        let mime = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(raw)
            .unwrap();
        let text = String::from_utf8_lossy(&mime);
        assert!(text.contains("To: <followups@example.com>"), "{text}");
        assert!(text.contains("Bcc: <records@example.com>"), "{text}");
        assert!(text.contains("multipart/alternative"), "{text}");
        assert_eq!(r.mail.as_ref().unwrap()["to"][0], "followups@example.com");
        // Without the setting, the contact; a line break in an address builds nothing.
        settings.remove("to");
        let r = renderer
            .render_action_request(gmail, 0, &context(gmail, &event, &settings))
            .unwrap();
        assert_eq!(r.mail.as_ref().unwrap()["to"][0], "jane@example.com");
        settings.insert("to".into(), json!("a@example.com\r\nBcc: x@evil.test"));
        let e = renderer
            .render_action_request(gmail, 0, &context(gmail, &event, &settings))
            .unwrap_err();
        assert!(
            e.field.contains("mail") && e.message.contains("line break"),
            "{e}"
        );
        settings.insert("to".into(), json!("not an address"));
        let e = renderer
            .render_action_request(gmail, 0, &context(gmail, &event, &settings))
            .unwrap_err();
        assert!(e.message.contains("to[0]"), "{e}");

        let calendar = google.action("calendar.create_follow_up").unwrap();
        let ctx = context(calendar, &event, &example_settings(calendar));
        let r = renderer.render_action_request(calendar, 0, &ctx).unwrap();
        let body = r.body.unwrap();
        let id = body["id"].as_str().unwrap();
        assert_eq!(id.len(), 64);
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'v').contains(&b))
        );
        assert_eq!(body["start"]["dateTime"], "2026-12-06T03:12:44Z");
        assert_eq!(body["end"]["dateTime"], "2026-12-06T03:42:44Z");
        assert_eq!(body["attendees"][0]["email"], "jane@example.com");
        assert_eq!(r.query, vec![("sendUpdates".to_owned(), "none".to_owned())]);
        let Some(Idempotency::Lookup { request, .. }) = &calendar.requests[0].idempotency else {
            panic!("the follow-up is looked up");
        };
        let lookup = renderer.render_request(request, &ctx).unwrap();
        assert!(lookup.path.ends_with(id), "{}", lookup.path);
    }

    #[test]
    fn sparse_events_render_or_name_what_is_missing() {
        // Only the required fields: no contact, no times, no summary.
        let renderer = Renderer::new();
        for kind in PRODUCT_TYPES {
            let mut event = json!({"schema_version": 1, "type": kind, "event_id": "e1", "tenant_id": "acme",
                "occurred_at": "2026-12-05T10:00:00Z"});
            if kind != EventType::KbSync {
                event["conversation"] = json!({"id": "c1", "channel": "chat"});
            }
            if kind == EventType::LowScore {
                event["conversation"]["score"] = json!(12);
            }
            ProductEvent::parse(&event).unwrap();
            let event_type = serde_json::to_value(kind).unwrap();
            for p in catalogue().iter() {
                for action in p
                    .actions
                    .iter()
                    .filter(|a| a.suits(event_type.as_str().unwrap()))
                {
                    let ctx = context(action, &event, &example_settings(action));
                    if missing_required(action, &ctx).is_empty() {
                        run(&renderer, action, ctx, false);
                    }
                }
            }
        }
    }

    #[test]
    fn sample_events_parse_and_requires_are_checked() {
        for kind in PRODUCT_TYPES {
            let event = ProductEvent::parse(&sample_event(kind)).unwrap();
            assert_eq!(event.kind, kind);
        }
        for name in CONDUIT_EVENTS {
            assert_eq!(sample_conduit_event(name).unwrap()["type"], name);
        }
        assert!(sample_conduit_event("nope").is_none());
        let action = catalogue()
            .get("salesforce")
            .unwrap()
            .action("add_note")
            .unwrap();
        let mut event = sample_event(EventType::ConversationEnded);
        event["contact"]["crm_ids"] = json!({});
        let ctx = context(action, &event, &Map::new());
        assert_eq!(
            missing_required(action, &ctx),
            vec!["contact.crm_ids.salesforce"]
        );
        let action = catalogue()
            .get("zendesk")
            .unwrap()
            .action("sync_contact")
            .unwrap();
        event["contact"] = json!({"phone": "+61412345678"});
        assert!(missing_required(action, &context(action, &event, &Map::new())).is_empty());
    }

    #[test]
    fn a_note_on_the_events_own_record_saves_without_the_setting() {
        // Each of these names its record by a setting, else by the event's custom
        // field: both ways save.
        for (provider, setting, field) in [
            ("zendesk", "ticket_id", "zendesk_ticket_id"),
            ("freshdesk", "ticket_id", "freshdesk_ticket_id"),
            ("sap", "ticket_object_id", "sap_ticket_object_id"),
            ("chatwoot", "conversation_id", "chatwoot_conversation_id"),
        ] {
            let action = catalogue()
                .get(provider)
                .unwrap()
                .action("add_note")
                .unwrap();
            assert!(custom_fields_read(action).contains(field), "{provider}");
            assert_eq!(
                validate_action_input(action, &Map::new(), &Map::new()),
                Ok(()),
                "{provider} without the setting"
            );
            let mut settings = Map::new();
            settings.insert(setting.to_owned(), json!("381"));
            assert_eq!(
                validate_action_input(action, &settings, &Map::new()),
                Ok(()),
                "{provider} with the setting"
            );
            // An event with neither fails its step naming both.
            let event = sample_event(EventType::ConversationEnded);
            let ctx = context(action, &event, &Map::new());
            let e = CHECKER.render_action_request(action, 0, &ctx).unwrap_err();
            assert!(
                e.message.contains(&format!("custom_fields.{field}")),
                "{provider}: {e}"
            );
        }
    }

    #[test]
    fn hubspots_note_lookup_finds_this_integrations_note_not_anothers() {
        let action = catalogue()
            .get("hubspot")
            .unwrap()
            .action("add_note")
            .unwrap();
        let req = &action.requests[0];
        let mut ctx = context(
            action,
            &sample_event(EventType::ConversationEnded),
            &Map::new(),
        );
        // Another integration noted the same event on the same contact at the same time.
        let theirs = json!({"id": "901", "properties": {"hs_note_body": "<p>Ref: evt_01JEXAMPLE7Q:01JOTHER</p>"}});
        let ours = json!({"id": "902", "properties": {"hs_note_body": "<p>Summary</p><p>Ref: evt_01JEXAMPLE7Q:01JINTEGRATION0</p>"}});
        let found = |answer: Value, ctx: &mut std::sync::Arc<Value>| {
            CHECKER.lookup_found(req, &answer, ctx).unwrap()
        };
        assert_eq!(found(json!({"results": [theirs.clone()]}), &mut ctx), None);
        assert_eq!(
            found(json!({"results": [theirs, ours]}), &mut ctx),
            Some(json!("902"))
        );
        assert_eq!(ctx["captures"]["note_id"], "902");
        // The search asks for the body, which HubSpot leaves out unless asked.
        let Some(Idempotency::Lookup { request, .. }) = &req.idempotency else {
            panic!("a lookup")
        };
        let rendered = CHECKER.render_request(request, &ctx).unwrap();
        assert_eq!(
            rendered.body.unwrap()["properties"],
            json!(["hs_note_body"])
        );
    }

    #[test]
    fn settings_defaults_fill_in_and_tenant_values_win() {
        let action = catalogue()
            .get("zendesk")
            .unwrap()
            .action("create_ticket")
            .unwrap();
        let event = sample_event(EventType::Escalation);
        let ctx = context(action, &event, &Map::new());
        assert_eq!(ctx["settings"]["priority"], "normal");
        let mut settings = Map::new();
        settings.insert("priority".to_owned(), json!("urgent"));
        let ctx = context(action, &event, &settings);
        let req = Renderer::new()
            .render_action_request(action, 0, &ctx)
            .unwrap();
        let body = req.body.unwrap();
        assert_eq!(body["ticket"]["priority"], "urgent");
        assert_eq!(
            body["ticket"]["external_id"],
            "evt_01JEXAMPLE7Q:01JINTEGRATION0"
        );
        assert_eq!(body["ticket"]["comment"]["public"], false);
        assert!(
            body["ticket"]["comment"]["body"]
                .as_str()
                .unwrap()
                .ends_with("Ref: evt_01JEXAMPLE7Q:01JINTEGRATION0")
        );
        assert_eq!(
            req.headers,
            vec![(
                "Idempotency-Key".to_owned(),
                "evt_01JEXAMPLE7Q:01JINTEGRATION0".to_owned()
            )]
        );
    }

    #[test]
    fn validation_names_settings_without_their_values() {
        let action = catalogue()
            .get("genesys")
            .unwrap()
            .action("create_task")
            .unwrap();
        let mut settings = Map::new();
        settings.insert("api_secret".to_owned(), json!("hunter2-secret"));
        let problems = validate_action_input(action, &settings, &Map::new()).unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["settings.api_secret", "settings.queue_id"]);
        assert!(
            !serde_json::to_string(&problems)
                .unwrap()
                .contains("hunter2")
        );
        settings.clear();
        settings.insert("queue_id".to_owned(), json!("q-1"));
        assert_eq!(
            validate_action_input(action, &settings, &Map::new()),
            Ok(())
        );
    }

    #[test]
    fn overrides_are_checked_with_lines_and_merged_into_the_body() {
        let action = catalogue()
            .get("zendesk")
            .unwrap()
            .action("create_ticket")
            .unwrap();
        let mut overrides = Map::new();
        overrides.insert(
            "ticket.subject".to_owned(),
            json!("Call with {{ contact.name }}"),
        );
        overrides.insert(
            "ticket.priority".to_owned(),
            json!("{{ 'high' if conversation.score < 50 else settings.priority }}"),
        );
        assert_eq!(
            validate_action_input(action, &Map::new(), &overrides),
            Ok(())
        );
        let merged = action.with_overrides(&overrides).unwrap();
        let ctx = context(&merged, &sample_event(EventType::LowScore), &Map::new());
        let body = Renderer::new()
            .render_action_request(&merged, 0, &ctx)
            .unwrap()
            .body
            .unwrap();
        assert_eq!(body["ticket"]["subject"], "Call with Jane Citizen");
        assert_eq!(body["ticket"]["priority"], "high");

        let mut bad = Map::new();
        bad.insert(
            "ticket.subject".to_owned(),
            json!("Line one\nLine two {{ contact.name "),
        );
        bad.insert("ticket.tags".to_owned(), json!("{{ contact.shoe_size }}"));
        bad.insert("ticket.subject.deeper".to_owned(), json!("x"));
        let problems = validate_action_input(action, &Map::new(), &bad).unwrap_err();
        let syntax = problems
            .iter()
            .find(|p| p.message.starts_with("template syntax"))
            .unwrap();
        assert_eq!(
            (syntax.field.as_str(), syntax.line),
            ("overrides.ticket.subject", Some(2))
        );
        assert!(syntax.column.is_some_and(|c| c > 1), "{syntax:?}");
        let unknown = problems
            .iter()
            .find(|p| p.field == "overrides.ticket.tags")
            .unwrap();
        assert!(unknown.message.contains("contact.shoe_size"), "{unknown:?}");
        assert!(
            problems
                .iter()
                .any(|p| p.field == "overrides.ticket.subject.deeper"
                    && p.message.contains("not an object"))
        );
        // A type error only rendering finds.
        let mut typed = Map::new();
        typed.insert(
            "ticket.priority".to_owned(),
            json!("{{ 'high' if conversation.score + 'fifty' else 'low' }}"),
        );
        let problems = validate_action_input(action, &Map::new(), &typed).unwrap_err();
        assert_eq!(
            problems[0].field, "requests[0].body.ticket.priority",
            "{problems:?}"
        );
        assert!(
            problems[0]
                .message
                .starts_with("with a sample conversation_ended event"),
            "{problems:?}"
        );
        // A body that is not an object (webhook's data is one expression) refuses new members.
        let webhook = catalogue()
            .get("webhook")
            .unwrap()
            .action("deliver")
            .unwrap();
        let mut into_data = Map::new();
        into_data.insert("data.extra".to_owned(), json!("x"));
        assert!(webhook.with_overrides(&into_data).is_err());
    }

    #[test]
    fn requests_the_settings_skip_are_not_checked_at_save_time() {
        let log_call = catalogue()
            .get("salesforce")
            .unwrap()
            .action("log_call")
            .unwrap();
        // Without external_id_field the upsert (whose path names it) is never sent.
        assert_eq!(
            validate_action_input(log_call, &Map::new(), &Map::new()),
            Ok(())
        );
        let mut settings = Map::new();
        settings.insert("external_id_field".to_owned(), json!("Conduit_Key__c"));
        assert_eq!(
            validate_action_input(log_call, &settings, &Map::new()),
            Ok(())
        );
    }

    #[test]
    fn custom_requests_are_checked_and_carry_the_idempotency_key() {
        let mut req: CustomRequest = serde_json::from_value(json!({
            "method": "post", "path": "/v1/cases/{{ conversation.id }}",
            "headers": {"X-Source": "conduit {{ tenant_id }}"},
            "body": {"summary": "{{ conversation.summary }}", "seconds": "{{ conversation.duration_seconds }}"},
            "outputs": {"id": "/case/id"}
        })).unwrap();
        let template = validate_custom_request(&req).unwrap();
        assert_eq!(template.method, "POST");
        let action = Action {
            id: "request".to_owned(),
            title: String::new(),
            description: String::new(),
            events: vec!["conversation_ended".to_owned()],
            requires: vec![],
            settings: vec![],
            requests: vec![template],
            outputs: Outputs {
                id: Some("id".to_owned()),
                url: None,
            },
            connection_kind: None,
            kb_import: false,
        };
        let ctx = context(
            &action,
            &sample_event(EventType::ConversationEnded),
            &Map::new(),
        );
        let rendered = Renderer::new()
            .render_action_request(&action, 0, &ctx)
            .unwrap();
        assert_eq!(rendered.path, "/v1/cases/conv_8f2c");
        assert!(rendered.headers.contains(&(
            "Idempotency-Key".to_owned(),
            "\"evt_01JEXAMPLE7Q:01JINTEGRATION0\"".to_owned()
        )));
        assert_eq!(rendered.body.unwrap()["seconds"], 312);

        let mut typed = req.clone();
        typed.body = Some(json!({"n": "{{ conversation.summary - 1 }}"}));
        let problems = validate_custom_request(&typed).unwrap_err();
        assert_eq!(problems[0].field, "requests[0].body.n", "{problems:?}");

        req.quote_key = false;
        req.path = "/v1/../admin".to_owned();
        req.method = "TRACE".to_owned();
        req.headers.insert(
            "Authorization".to_owned(),
            "Bearer {{ settings.token }}".to_owned(),
        );
        req.body = Some(json!({"x": "{% for %}"}));
        let problems = validate_custom_request(&req).unwrap_err();
        let fields: BTreeSet<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            BTreeSet::from(["method", "path", "headers.Authorization", "body.x"])
        );
    }
}

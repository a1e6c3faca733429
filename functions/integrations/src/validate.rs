//! An integration's body in, checked whole at save time: its shape (unknown fields
//! refused), its triggers against the events the template action suits, its settings
//! and payload overrides against the action (template syntax with line and column,
//! variables outside the render context), its connection (this tenant's, of the
//! template's provider), a webhook's endpoint URL and a custom request. Every problem
//! is named by its path; values are never echoed.

use std::collections::BTreeMap;

use conduit::dispatch::integration::{
    self, ActingUser, Integration, KbSourceSettings, OnFailure, RetryPolicy, Trigger, WEBHOOK,
};
use conduit::dispatch::template::{self, CustomRequest, Problem as TemplateProblem};
use conduit::domain::ConnectionId;
use conduit::http::ApiError;
use conduit::providers::FieldError;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::Call;

/// What a caller sends to create or replace an integration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Body {
    pub name: String,
    pub provider: String,
    pub action: String,
    #[serde(default)]
    pub connection_id: Option<String>,
    #[serde(default)]
    pub acting_user: Option<ActingUser>,
    pub triggers: Vec<Trigger>,
    #[serde(default = "default_priority")]
    pub priority: u32,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub settings: BTreeMap<String, Value>,
    #[serde(default)]
    pub overrides: BTreeMap<String, Value>,
    #[serde(default)]
    pub on_failure: OnFailure,
    #[serde(default)]
    pub retry: Option<RetryPolicy>,
    #[serde(default)]
    pub request: Option<CustomRequest>,
    #[serde(default)]
    pub webhook: Option<WebhookBody>,
    #[serde(default)]
    pub kb_source: Option<KbSourceSettings>,
}

/// A webhook destination's endpoint as a caller gives it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookBody {
    pub url: String,
}

fn default_priority() -> u32 {
    100
}

fn yes() -> bool {
    true
}

/// The retry policy of a webhook when none is given, in the spirit of Standard
/// Webhooks' schedule (seconds, then minutes, then hours): 10 attempts, 30 s doubling
/// to 2 h 8 min apart — about 4 h 15 min in all; an endpoint whose deliveries keep
/// failing for 5 days is disabled.
pub fn webhook_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 10,
        initial_backoff_seconds: 30,
        max_backoff_seconds: 5 * 3600,
    }
}

/// Problems collected while checking.
#[derive(Default)]
pub struct Problems(pub Vec<FieldError>);

impl Problems {
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    pub fn template(&mut self, p: TemplateProblem) {
        let at = match (p.line, p.column) {
            (Some(l), Some(c)) => format!("line {l}, column {c}: "),
            (Some(l), None) => format!("line {l}: "),
            _ => String::new(),
        };
        self.add(p.field, format!("{at}{}", p.message));
    }

    pub fn into_result(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid_fields(self.0))
        }
    }
}

/// The checks of a knowledge-base import: `kb_source` belongs to an `import_kb`
/// integration (of a knowledge-base source), which a Custom API's must describe.
fn kb_source(next: &Integration, p: &mut Problems) {
    use conduit::kb::run::{IMPORT_ACTION, SOURCES, source_of};
    let imports = next.action == IMPORT_ACTION && source_of(&next.provider).is_some();
    let Some(kb) = &next.kb_source else {
        if imports && next.provider == "custom_api" {
            p.add(
                "kb_source.custom",
                "required for a Custom API's import: the list request, its paging and the mapping",
            );
        }
        return;
    };
    if !imports {
        p.add(
            "kb_source",
            format!(
                "only for an {IMPORT_ACTION} integration of a knowledge-base source ({})",
                SOURCES.join(", ")
            ),
        );
        return;
    }
    if let Some(m) = kb.every_minutes
        && !(MIN_IMPORT_MINUTES..=MAX_IMPORT_MINUTES).contains(&m)
    {
        p.add(
            "kb_source.every_minutes",
            format!("from {MIN_IMPORT_MINUTES} to {MAX_IMPORT_MINUTES} (a week)"),
        );
    }
    match (next.provider == "custom_api", &kb.custom) {
        (true, None) => p.add(
            "kb_source.custom",
            "required for a Custom API's import: the list request, its paging and the mapping",
        ),
        (false, Some(_)) => p.add("kb_source.custom", "only for a Custom API integration"),
        (true, Some(custom)) => {
            for problem in custom.problems() {
                p.add(
                    format!("kb_source.custom.{}", problem.field),
                    problem.message,
                );
            }
        }
        (false, None) => {}
    }
    match (&kb.body_field, next.provider == "salesforce") {
        (Some(f), true) if !conduit::kb::salesforce::is_custom_field(f) => p.add(
            "kb_source.body_field",
            "a custom field's API name (Answer__c)",
        ),
        (Some(_), false) => p.add("kb_source.body_field", "only for Salesforce"),
        _ => {}
    }
    if next.request.is_some() {
        p.add("request", "an import sends no request of its own");
    }
}

/// The shortest and longest period of a scheduled import.
const MIN_IMPORT_MINUTES: u32 = 15;
const MAX_IMPORT_MINUTES: u32 = 10_080;

/// Checks `next` (built from a body over what was stored) as a whole.
pub async fn check(call: &Call<'_>, next: &Integration) -> Result<(), ApiError> {
    let mut p = Problems::default();
    for shape in integration::check_shape(next) {
        p.add(shape.field, shape.message);
    }
    kb_source(next, &mut p);
    let provider = template::catalogue().get(&next.provider);
    let action = provider.and_then(|t| t.action(&next.action));
    match (provider, action) {
        (None, _) => p.add("provider", "no integration template for this provider"),
        (Some(_), None) => p.add("action", "not an action of this provider's template"),
        (Some(_), Some(action)) => {
            acting(call, next, action.connection_kind.as_deref(), &mut p).await?;
            for (n, t) in next.triggers.iter().enumerate() {
                if !action.suits(t.event.as_str()) {
                    p.add(
                        format!("triggers[{n}].event"),
                        format!("the {} action does not take this event", action.id),
                    );
                }
            }
            let settings: Map<String, Value> = next.settings.clone().into_iter().collect();
            let overrides: Map<String, Value> = next.overrides.clone().into_iter().collect();
            if let Err(found) = template::validate_action_input(action, &settings, &overrides) {
                for problem in found {
                    p.template(problem);
                }
            }
        }
    }
    match (next.provider == "custom_api", &next.request) {
        // Without a request of its own, the custom API's template request is used.
        (true, None) => {}
        (true, Some(req)) => {
            if let Err(found) = template::validate_custom_request(req) {
                for problem in found {
                    let mut problem = problem;
                    problem.field = format!("request.{}", problem.field);
                    p.template(problem);
                }
            }
        }
        (false, Some(_)) => p.add("request", "only the custom API takes a request"),
        (false, None) => {}
    }
    if next.provider == WEBHOOK {
        match &next.webhook {
            None => p.add("webhook", "required: the endpoint's url"),
            Some(w) => {
                if let Err(e) = conduit::egress::validate_tenant_url(&w.url, &call.app.url_policy())
                {
                    p.add("webhook.url", e.to_string());
                }
            }
        }
    } else if next.webhook.is_some() {
        p.add("webhook", "only the webhook provider has an endpoint");
    }
    if let Some(id) = &next.connection_id {
        match conduit::connections::Connections::new(call.app.table.clone())
            .get(&call.who.tenant, id)
            .await?
        {
            None => p.add("connection_id", "no such connection in this workspace"),
            Some(c) if c.provider != next.provider => p.add(
                "connection_id",
                format!("a {} connection, not {}", c.provider, next.provider),
            ),
            Some(c) if c.owner.as_ref().is_some_and(|o| *o != call.who.user) => p.add(
                "connection_id",
                "another user's personal connection: only its owner may use it",
            ),
            Some(c) if kind_of(next).is_some_and(|k| c.kind.as_deref() != Some(k)) => p.add(
                "connection_id",
                format!(
                    "the action needs a {} connection",
                    kind_of(next).unwrap_or_default()
                ),
            ),
            Some(_) => {}
        }
    }
    p.into_result()
}

/// The kind of personal connection the integration's action acts with, if any.
fn kind_of(i: &Integration) -> Option<&'static str> {
    template::catalogue()
        .get(&i.provider)
        .and_then(|t| t.action(&i.action))
        .and_then(|a| a.connection_kind.as_deref())
}

/// How the connection an integration acting as a user would run with stands, for a
/// test's preview: whose, and whether it may be used now.
pub async fn acting_preview(
    call: &Call<'_>,
    i: &Integration,
    event: &conduit::dispatch::inbound::DispatchEvent,
) -> serde_json::Value {
    let Some(user) = i.acting_user.as_ref().and_then(|a| a.user_for(event)) else {
        return serde_json::json!({"status": "unusable", "reason": "the event names no assistant owner"});
    };
    let method = call
        .app
        .catalogue
        .provider(&i.provider)
        .and_then(|pr| conduit::oauth::connect::oauth_method(pr).ok());
    let (Some(method), Some(kind)) = (method, kind_of(i)) else {
        return serde_json::json!({"status": "unusable", "reason": "this action does not act as a user"});
    };
    let found = conduit::connections::Connections::new(call.app.table.clone())
        .personal(&i.tenant, &i.provider, &method.id, user, kind)
        .await;
    match found {
        Ok(Some(c)) if c.allow_automations => serde_json::json!({
            "status": "ok", "acting_user": user, "provider": c.provider, "connection_status": c.status,
        }),
        Ok(Some(_)) => serde_json::json!({
            "status": "unusable", "acting_user": user,
            "reason": format!("the user does not let automations use their {kind} connection"),
        }),
        Ok(None) => serde_json::json!({
            "status": "unusable", "acting_user": user,
            "reason": format!("the user has no {kind} connection of their own"),
        }),
        Err(e) => serde_json::json!({"status": "unusable", "reason": e.to_string()}),
    }
}

/// Checks `acting_user` against the action: only an action that acts as a user takes
/// one, and a named user must have a connection of its kind that allows automations
/// (the assistant owner's is known only when an event names them).
async fn acting(
    call: &Call<'_>,
    next: &Integration,
    kind: Option<&str>,
    p: &mut Problems,
) -> Result<(), ApiError> {
    let Some(acting) = &next.acting_user else {
        return Ok(());
    };
    let Some(kind) = kind else {
        p.add("acting_user", "this action does not act as a user");
        return Ok(());
    };
    let Some(user) = &acting.user_id else {
        return Ok(());
    };
    let method = call
        .app
        .catalogue
        .provider(&next.provider)
        .and_then(|pr| conduit::oauth::connect::oauth_method(pr).ok());
    let Some(method) = method else {
        p.add(
            "acting_user",
            "the provider has no OAuth method to act with",
        );
        return Ok(());
    };
    let found = conduit::connections::Connections::new(call.app.table.clone())
        .personal(&call.who.tenant, &next.provider, &method.id, user, kind)
        .await?;
    match found {
        None => p.add(
            "acting_user.user_id",
            format!("this user has no {kind} connection of their own yet"),
        ),
        Some(c) if !c.allow_automations => p.add(
            "acting_user.user_id",
            format!(
                "this user has not let automations use their {kind} connection \
                 (they set allow_automations on it)"
            ),
        ),
        Some(_) => {}
    }
    Ok(())
}

/// Refuses (403, audited as `action`) sending through an integration whose connection
/// is another user's personal one: saved by its owner, it runs on events, but nobody
/// else sends through it by hand.
pub async fn own_use(
    call: &Call<'_>,
    i: &Integration,
    event: &conduit::dispatch::inbound::DispatchEvent,
    action: &str,
) -> Result<(), ApiError> {
    let refusal = match (&i.acting_user, &i.connection_id) {
        // Lent to automations, a user's connection sends on events, never by hand for
        // someone else.
        (Some(acting), _) if acting.user_for(event) != Some(&call.who.user) => {
            Some("the integration acts as another user: only they send through it by hand")
        }
        (_, Some(id)) => conduit::connections::Connections::new(call.app.table.clone())
            .get(&call.who.tenant, id)
            .await?
            .filter(|c| c.owner.as_ref().is_some_and(|o| *o != call.who.user))
            .map(|_| "the integration's connection is another user's personal connection"),
        _ => None,
    };
    let Some(message) = refusal else {
        return Ok(());
    };
    call.record(
        &call
            .audit(action, format!("integration/{}", i.id))
            .failed(conduit::audit::Outcome::Denied, "forbidden"),
    )
    .await;
    Err(ApiError::Forbidden(message.into()))
}

/// The connection id of a body, if it names one.
pub fn connection_id(raw: Option<&str>, p: &mut Problems) -> Option<ConnectionId> {
    let raw = raw?;
    match ConnectionId::parse(raw) {
        Ok(id) => Some(id),
        Err(e) => {
            p.add("connection_id", e.0);
            None
        }
    }
}

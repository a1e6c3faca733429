//! An integration's body in, checked whole at save time: its shape (unknown fields
//! refused), its triggers against the events the template action suits, its settings
//! and payload overrides against the action (template syntax with line and column,
//! variables outside the render context), its connection (this tenant's, of the
//! template's provider), a webhook's endpoint URL and a custom request. Every problem
//! is named by its path; values are never echoed.

use std::collections::BTreeMap;

use conduit::dispatch::integration::{self, Integration, OnFailure, RetryPolicy, Trigger, WEBHOOK};
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

/// Checks `next` (built from a body over what was stored) as a whole.
pub async fn check(call: &Call<'_>, next: &Integration) -> Result<(), ApiError> {
    let mut p = Problems::default();
    for shape in integration::check_shape(next) {
        p.add(shape.field, shape.message);
    }
    let provider = template::catalogue().get(&next.provider);
    let action = provider.and_then(|t| t.action(&next.action));
    match (provider, action) {
        (None, _) => p.add("provider", "no integration template for this provider"),
        (Some(_), None) => p.add("action", "not an action of this provider's template"),
        (Some(_), Some(action)) => {
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
            Some(_) => {}
        }
    }
    p.into_result()
}

/// Refuses (403, audited as `action`) sending through an integration whose connection
/// is another user's personal one: saved by its owner, it runs on events, but nobody
/// else sends through it by hand.
pub async fn own_use(call: &Call<'_>, i: &Integration, action: &str) -> Result<(), ApiError> {
    let Some(id) = &i.connection_id else {
        return Ok(());
    };
    let conn = conduit::connections::Connections::new(call.app.table.clone())
        .get(&call.who.tenant, id)
        .await?;
    if conn.is_some_and(|c| c.owner.as_ref().is_some_and(|o| *o != call.who.user)) {
        call.record(
            &call
                .audit(action, format!("integration/{}", i.id))
                .failed(conduit::audit::Outcome::Denied, "forbidden"),
        )
        .await;
        return Err(ApiError::Forbidden(
            "the integration's connection is another user's personal connection".into(),
        ));
    }
    Ok(())
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

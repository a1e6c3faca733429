//! `/v1/assistants/{assistant_id}/integrations`: which integrations run for one
//! assistant, in which order, with which payload. An assistant without settings uses
//! the tenant's defaults (each integration's own `enabled` and `priority`).

use std::collections::BTreeMap;

use conduit::dispatch::integration::{AssistantOverride, AssistantSettings, Integration};
use conduit::dispatch::template;
use conduit::domain::{IntegrationId, now, rfc3339};
use conduit::http::{self, ApiError};
use conduit::store::StoreError;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Response};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::Call;
use crate::routes::store;
use crate::validate::Problems;

fn assistant_id(call: &Call<'_>) -> Result<String, ApiError> {
    let id = call.path_param("assistant_id")?;
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':' | '.'));
    if ok {
        Ok(id)
    } else {
        Err(ApiError::bad_request(
            "invalid_id",
            "an assistant id is 1–128 characters of letters, digits and - _ : .",
        ))
    }
}

fn view(
    assistant: &str,
    integrations: &[Integration],
    settings: Option<&AssistantSettings>,
) -> Value {
    let rows: Vec<Value> = integrations
        .iter()
        .map(|i| {
            let o = settings.and_then(|s| s.integrations.get(&i.id));
            json!({
                "integration_id": i.id,
                "name": i.name,
                "provider": i.provider,
                "action": i.action,
                "enabled": o.and_then(|o| o.enabled).unwrap_or(i.enabled),
                "priority": o.and_then(|o| o.priority).unwrap_or(i.priority),
                "overrides": o.map(|o| o.overrides.clone()).unwrap_or_default(),
                "default": {"enabled": i.enabled, "priority": i.priority},
                "customised": o.is_some(),
            })
        })
        .collect();
    json!({
        "assistant_id": assistant,
        "uses_defaults": settings.is_none(),
        "integrations": rows,
        "updated_at": settings.map(|s| rfc3339(s.updated_at)),
    })
}

/// `GET /v1/assistants/{assistant_id}/integrations`.
pub async fn get(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let assistant = assistant_id(call)?;
    let (integrations, _) = store(call).all(&call.who.tenant).await?;
    let settings = store(call).assistant(&call.who.tenant, &assistant).await?;
    let version = settings.as_ref().map_or(0, |s| s.version);
    http::json_versioned(
        StatusCode::OK,
        &view(&assistant, &integrations, settings.as_ref()),
        version,
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutBody {
    /// Per integration id: on/off, priority, payload overrides. Integrations left out
    /// use their defaults for this assistant.
    integrations: BTreeMap<String, AssistantOverride>,
}

/// `PUT /v1/assistants/{assistant_id}/integrations`: replaces the assistant's settings.
pub async fn put(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let assistant = assistant_id(call)?;
    let body: PutBody = http::json_body(&call.req)?;
    let (integrations, _) = store(call).all(&call.who.tenant).await?;
    let mut p = Problems::default();
    let mut per = BTreeMap::new();
    for (raw, o) in body.integrations {
        let field = format!("integrations.{}", raw.chars().take(40).collect::<String>());
        let Ok(id) = IntegrationId::parse(&raw) else {
            p.add(field, "not an integration id");
            continue;
        };
        let Some(i) = integrations.iter().find(|i| i.id == id) else {
            p.add(field, "no such integration in this workspace");
            continue;
        };
        if o.priority
            .is_some_and(|n| n > conduit::dispatch::integration::MAX_PRIORITY)
        {
            p.add(
                format!("{field}.priority"),
                "from 0 to 1000 (lower runs first)",
            );
        }
        if !o.overrides.is_empty() {
            match template::catalogue()
                .get(&i.provider)
                .and_then(|t| t.action(&i.action))
            {
                None => p.add(
                    format!("{field}.overrides"),
                    "the integration's action has no template",
                ),
                Some(action) => {
                    let settings: Map<String, Value> = i.settings.clone().into_iter().collect();
                    let overrides: Map<String, Value> = o.overrides.clone().into_iter().collect();
                    if let Err(found) =
                        template::validate_action_input(action, &settings, &overrides)
                    {
                        for mut problem in found {
                            problem.field = format!("{field}.{}", problem.field);
                            p.template(problem);
                        }
                    }
                }
            }
        }
        per.insert(id, o);
    }
    p.into_result()?;
    let prev = store(call).assistant(&call.who.tenant, &assistant).await?;
    if let Some(expected) = http::if_match(&call.req)?
        && expected != prev.as_ref().map_or(0, |s| s.version)
    {
        return Err(ApiError::PreconditionFailed);
    }
    let next = AssistantSettings {
        tenant: call.who.tenant.clone(),
        assistant_id: assistant.clone(),
        integrations: per,
        updated_at: now(),
        version: prev.as_ref().map_or(1, |s| s.version + 1),
    };
    let entry = call.audit("assistant.integrations.update", assistant.clone());
    store(call)
        .save_assistant(&next, prev.as_ref().map(|s| s.version), &entry)
        .await
        .map_err(|e| match e {
            StoreError::ConditionFailed => ApiError::concurrent_update(
                "the assistant's settings changed concurrently; read them and retry",
            ),
            e => e.into(),
        })?;
    http::json_versioned(
        StatusCode::OK,
        &view(&assistant, &integrations, Some(&next)),
        next.version,
    )
}

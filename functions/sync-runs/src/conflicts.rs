//! `/v1/sync/conflicts…`: records changed on both sides that a `manual_review` config
//! stored for a person, and their resolution (per field: the app's value, the CRM's, or
//! a merged value; or "always" one side, which becomes the config's strategy) or
//! setting aside (ignore).

use std::collections::BTreeMap;

use conduit::domain::{ConflictId, RecordId, rfc3339};
use conduit::http::{self, ApiError};
use conduit::sync::resolve::{self, Always, Choice, Push, Resolution, ResolveError};
use conduit::sync::runs::{ConflictQuery, Runs, StoredConflict};
use conduit::sync::schema::Entity;
use conduit::sync::values;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{Call, load_config, queue};

/// What the API shows of a conflict.
fn view(c: &StoredConflict) -> Value {
    json!({
        "id": c.id,
        "config_id": c.config_id,
        "provider": c.provider,
        "entity": c.entity,
        "record_id": c.record_id,
        "crm_id": c.crm_id,
        "status": c.status,
        "fields": c.fields,
        "detected_at": rfc3339(c.detected_at),
        "settled_at": c.settled_at.map(rfc3339),
        "resolution": c.resolution,
    })
}

/// `GET /v1/sync/conflicts?status=open|resolved|ignored|all&config_id=&entity=&record_id=&limit=&cursor=`
/// (open ones by default).
pub async fn list(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let (app, req, who) = (call.app, &call.req, &call.who);
    let q = http::query(
        req,
        &[
            "status",
            "config_id",
            "entity",
            "record_id",
            "limit",
            "cursor",
        ],
    )?;
    let status = match q.get("status").map(String::as_str) {
        None | Some("open") => Some("open"),
        Some("all") => None,
        Some(s @ ("resolved" | "ignored")) => Some(s),
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_status",
                "status must be one of open, resolved, ignored, all",
            ));
        }
    };
    let config = match q.get("config_id") {
        Some(raw) => Some(load_config(app, &who.tenant, raw).await?.id),
        None => None,
    };
    let entity = q
        .get("entity")
        .map(|e| {
            Entity::parse(e).ok_or_else(|| {
                ApiError::bad_request("invalid_entity", "entity must be contacts or companies")
            })
        })
        .transpose()?;
    let record = q
        .get("record_id")
        .map(|r| {
            RecordId::parse(r).map_err(|_| {
                ApiError::bad_request("invalid_record_id", "record_id is not a record id")
            })
        })
        .transpose()?;
    let query = ConflictQuery {
        status,
        config: config.as_ref(),
        entity,
        record: record.as_ref(),
        limit: http::page_limit(&q)?,
        cursor: q.get("cursor").map(String::as_str),
    };
    let page = Runs::new(app.table.clone())
        .search_conflicts(&who.tenant, &query)
        .await?;
    http::json(
        StatusCode::OK,
        &json!({
            "conflicts": page.items.iter().map(view).collect::<Vec<_>>(),
            "next_cursor": page.cursor,
            "skipped": page.skipped,
        }),
    )
}

fn path_id(req: &Request) -> Result<ConflictId, ApiError> {
    let raw = http::path_param(req, "id")?;
    ConflictId::parse(&raw).map_err(|_| ApiError::NotFound("no such conflict".into()))
}

/// `GET /v1/sync/conflicts/{id}`.
pub async fn get(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let (app, who) = (call.app, &call.who);
    let id = path_id(&call.req)?;
    let c = Runs::new(app.table.clone())
        .conflict(&who.tenant, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such conflict".into()))?;
    http::json(StatusCode::OK, &view(&c))
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum SideName {
    App,
    Crm,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    /// Per field: which side's value it keeps.
    #[serde(default)]
    fields: BTreeMap<String, SideName>,
    /// Per field: a merged value (null clears it).
    #[serde(default)]
    values: serde_json::Map<String, Value>,
    /// Every other field takes this side, and the config keeps doing so.
    #[serde(default)]
    always: Option<SideName>,
}

fn resolve_error(e: ResolveError) -> ApiError {
    match e {
        ResolveError::NotFound => ApiError::NotFound("no such conflict".into()),
        ResolveError::AlreadyResolved => ApiError::Conflict {
            code: "conflict_resolved",
            message: e.to_string(),
        },
        ResolveError::Busy(_) => ApiError::Conflict {
            code: "sync_running",
            message: e.to_string(),
        },
        ResolveError::Invalid(m) => ApiError::bad_request("invalid_resolution", m),
        ResolveError::Gone(m) => ApiError::Conflict {
            code: "conflict_obsolete",
            message: m.into(),
        },
        ResolveError::DuplicateKey => ApiError::Conflict {
            code: "duplicate_key",
            message: e.to_string(),
        },
        ResolveError::Store(e) => e.into(),
    }
}

/// `POST /v1/sync/conflicts/{id}/resolve` `{"fields": {"phone": "app"}, "values":
/// {"last_name": "Lovelace"}, "always": "crm"}`.
pub async fn resolve(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let (app, who) = (call.app, &call.who);
    let id = path_id(&call.req)?;
    let body: ResolveBody = http::json_body(&call.req)?;
    if let Some(both) = body.values.keys().find(|f| body.fields.contains_key(*f)) {
        return Err(ApiError::bad_request(
            "invalid_resolution",
            format!("{both:?} is given both a side and a value; give one"),
        ));
    }
    if body.fields.is_empty() && body.values.is_empty() && body.always.is_none() {
        return Err(ApiError::bad_request(
            "invalid_resolution",
            "give fields (app or crm per field), values, or always",
        ));
    }
    let runs = Runs::new(app.table.clone());
    let conflict = runs
        .conflict(&who.tenant, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such conflict".into()))?;
    let merged =
        values::changes(conflict.entity, &body.values).map_err(ApiError::invalid_fields)?;
    let side = |s: SideName| match s {
        SideName::App => Choice::App,
        SideName::Crm => Choice::Crm,
    };
    let mut fields: BTreeMap<String, Choice> = body
        .fields
        .iter()
        .map(|(f, s)| (f.clone(), side(*s)))
        .collect();
    fields.extend(
        merged
            .into_iter()
            .map(|(f, v)| (f.to_owned(), Choice::Value(v))),
    );
    let resolution = Resolution {
        fields,
        always: body.always.map(|s| match s {
            SideName::App => Always::App,
            SideName::Crm => Always::Crm,
        }),
    };
    let publisher = queue(app).map_err(ApiError::internal)?;
    let settled = resolve::resolve(app, &publisher, &who.tenant, &id, &resolution)
        .await
        .map_err(resolve_error)?;
    let mut entry = call
        .audit("sync.conflict.resolve", id.to_string())
        .detail("resolution", &settled.conflict.resolution);
    if let Some(s) = settled.strategy {
        entry = entry.detail("strategy", s);
    }
    call.record(&entry).await;
    let push = match &settled.push {
        Push::NotNeeded => json!({"status": "not_needed"}),
        Push::NotPushed => json!({"status": "not_pushed"}),
        Push::Started(job) => json!({"status": "started", "job_id": job}),
        Push::NextRun => json!({"status": "next_run"}),
    };
    let mut out = view(&settled.conflict);
    out["push"] = push;
    out["conflict_strategy"] = json!(settled.strategy);
    http::json(StatusCode::OK, &out)
}

/// `POST /v1/sync/conflicts/{id}/ignore`.
pub async fn ignore(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let (app, who) = (call.app, &call.who);
    let id = path_id(&call.req)?;
    let c = resolve::ignore(app, &who.tenant, &id)
        .await
        .map_err(resolve_error)?;
    call.record(&call.audit("sync.conflict.ignore", id.to_string()))
        .await;
    http::json(StatusCode::OK, &view(&c))
}

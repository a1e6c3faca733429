//! Knowledge-base import: `POST /v1/integrations/{id}/import-kb` starts an import of
//! the integration's source (it runs on the sync worker), `GET
//! /v1/kb/sources/{integration_id}/status` shows its progress and last run, and the
//! tenant's documents are listed and read under `/v1/kb/documents`.

use conduit::dispatch::integration::Integration;
use conduit::domain::IntegrationId;
use conduit::http::{self, ApiError};
use conduit::kb::document::DocumentId;
use conduit::kb::import::Mode;
use conduit::kb::run::{self, RunError, StartError};
use conduit::schedule::{ScheduleError, Spec};
use conduit::store::kb::{Filter, KbDocuments};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Response};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::Call;
use crate::routes::load;

/// The schedule of an `import_kb` integration with `kb_source.every_minutes`.
pub(crate) fn schedule_name(i: &Integration) -> String {
    format!("kb-{}", i.id)
}

/// What `i`'s schedule should be, if it has one: an incremental import every
/// `kb_source.every_minutes`, enabled while the integration is.
pub(crate) fn schedule_spec(i: &Integration) -> Option<Spec> {
    let minutes = i.kb_source.as_ref()?.every_minutes?;
    (i.action == run::IMPORT_ACTION).then(|| Spec {
        name: schedule_name(i),
        expression: format!("rate({minutes} minutes)"),
        enabled: i.enabled,
        input: json!({
            "source": conduit::schedule::SOURCE,
            "tenant": i.tenant.as_str(),
            "kb_integration_id": i.id.as_str(),
        })
        .to_string(),
        description: format!(
            "Conduit knowledge-base import {} of tenant {}",
            i.id, i.tenant
        ),
    })
}

/// Brings `next`'s schedule in step with it when it changed from `prev` (created,
/// updated, or deleted when `next` is `None` or no longer scheduled).
pub(crate) async fn sync_schedule(
    call: &Call<'_>,
    prev: Option<&Integration>,
    next: Option<&Integration>,
) -> Result<(), ApiError> {
    let before = prev.and_then(schedule_spec);
    let after = next.and_then(schedule_spec);
    if before == after {
        return Ok(());
    }
    let settings = conduit::schedule::Settings::from_env(&call.app.config.env)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let client = aws_sdk_scheduler::Client::new(&call.app.aws);
    let schedules = conduit::schedule::Schedules::new(&client, &settings);
    let changed = match (&after, prev.or(next)) {
        (Some(spec), _) => schedules.apply(spec).await,
        (None, Some(i)) => schedules.remove(&schedule_name(i)).await,
        (None, None) => Ok(()),
    };
    changed.map_err(|e| match e {
        ScheduleError::NotConfigured(_) => ApiError::internal(e.to_string()),
        ScheduleError::Service(why) => {
            tracing::warn!(cause = %why, "knowledge-base schedule change failed");
            ApiError::BadGateway {
                code: "scheduler_unavailable",
                message: "the integration's import schedule could not be changed; nothing was changed, retry".into(),
            }
        }
    })
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportBody {
    /// `full` or `incremental` (default: incremental, or full for a source's first run).
    #[serde(default)]
    mode: Option<Mode>,
}

/// `POST /v1/integrations/{id}/import-kb` → 202 with the source's status.
pub async fn import(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let body: ImportBody = if call.req.body().is_empty() {
        ImportBody::default()
    } else {
        http::json_body(&call.req)?
    };
    let i = load(call).await?;
    let publisher =
        conduit::queue::sync_queue(call.app).map_err(|e| ApiError::internal(e.to_string()))?;
    let started = run::start_integration(call.app, &publisher, &i, body.mode).await;
    let status = match started {
        Ok(s) => s,
        Err(StartError::NotASource(m)) => {
            return Err(ApiError::bad_request("not_a_kb_source", m));
        }
        Err(StartError::Run(RunError::Busy | RunError::Changed)) => {
            return Err(ApiError::Conflict {
                code: "import_running",
                message: "an import of this source is under way; see its status".into(),
            });
        }
        Err(StartError::Run(RunError::Store(e))) => return Err(e.into()),
        Err(StartError::Run(RunError::Queue(e))) => return Err(ApiError::internal(e.to_string())),
    };
    call.record(
        &call
            .audit("kb.import", format!("integration/{}", i.id))
            .detail("mode", status.run.as_ref().map(|r| r.mode)),
    )
    .await;
    http::json(StatusCode::ACCEPTED, &view(&status))
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_default()
}

/// What the API shows of a source's status.
fn view(s: &run::SourceStatus) -> serde_json::Value {
    json!({
        "integration_id": s.integration_id,
        "connection_id": s.connection_id,
        "source": s.source,
        "state": if s.run.is_some() { "running" } else { "idle" },
        "run": s.run.as_ref().map(|r| json!({
            "run_id": r.run_id,
            "mode": r.mode,
            "phase": r.phase,
            "counts": r.counts,
            "started_at": s.run_started_at.map(rfc3339),
        })),
        "last_run": s.last_run,
        "updated_at": rfc3339(s.updated_at),
    })
}

fn integration_id(raw: &str) -> Result<IntegrationId, ApiError> {
    IntegrationId::parse(raw).map_err(|e| ApiError::bad_request("invalid_id", e.0))
}

/// `GET /v1/kb/sources/{integration_id}/status`.
pub async fn status(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    http::query(&call.req, &[])?;
    let id = integration_id(&call.path_param("integration_id")?)?;
    let found = run::status(call.app, &call.who.tenant, &id).await?;
    let s = found.ok_or_else(|| {
        ApiError::NotFound("no import of this integration's knowledge base yet".into())
    })?;
    http::json(StatusCode::OK, &view(&s))
}

/// `GET /v1/kb/documents?integration_id=&source=&locale=&q=&updated_since=&limit=&cursor=`.
pub async fn list(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let q = http::query(
        &call.req,
        &[
            "integration_id",
            "source",
            "locale",
            "q",
            "updated_since",
            "limit",
            "cursor",
        ],
    )?;
    let limit = usize::try_from(http::page_limit(&q)?).unwrap_or(50);
    let filter = Filter {
        integration: q
            .get("integration_id")
            .map(|i| integration_id(i))
            .transpose()?,
        source: q.get("source").cloned(),
        locale: q.get("locale").cloned(),
        updated_since: q
            .get("updated_since")
            .map(|t| {
                OffsetDateTime::parse(t, &Rfc3339).map_err(|_| {
                    ApiError::bad_request(
                        "invalid_query_parameter",
                        "updated_since: an RFC 3339 time (2026-12-01T00:00:00Z)",
                    )
                })
            })
            .transpose()?,
        title: q.get("q").filter(|s| !s.trim().is_empty()).cloned(),
    };
    for (name, value, max) in [
        ("source", &filter.source, 64),
        ("locale", &filter.locale, 35),
        ("q", &filter.title, 200),
    ] {
        if value.as_ref().is_some_and(|v| v.chars().count() > max) {
            return Err(ApiError::bad_request(
                "invalid_query_parameter",
                format!("{name}: at most {max} characters"),
            ));
        }
    }
    let page = KbDocuments::new(call.app.table.clone())
        .page(
            &call.who.tenant,
            limit,
            q.get("cursor").map(String::as_str),
            &filter,
        )
        .await?;
    http::json(
        StatusCode::OK,
        &json!({"documents": page.documents.iter().map(document_view).collect::<Vec<_>>(),
                "next_cursor": page.cursor, "skipped": page.skipped}),
    )
}

fn document_view(d: &conduit::kb::document::Document) -> serde_json::Value {
    json!({
        "id": d.id,
        "integration_id": d.integration_id,
        "source": d.source,
        "external_id": d.external_id,
        "locale": d.locale,
        "title": d.title,
        "url": d.url,
        "labels": d.labels,
        "section_path": d.section_path,
        "published": d.published,
        "updated_at": d.updated_at.map(rfc3339),
        "hash": d.hash,
        "body_bytes": d.body_bytes,
        "imported_at": rfc3339(d.imported_at),
        "version": d.version,
    })
}

/// `GET /v1/kb/documents/{id}`: the document with its body (sanitized HTML and
/// Markdown).
pub async fn get(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    http::query(&call.req, &[])?;
    let id = DocumentId::parse(&call.path_param("id")?)
        .map_err(|e| ApiError::bad_request("invalid_id", e.0))?;
    let store = KbDocuments::new(call.app.table.clone());
    let d = store
        .get(&call.who.tenant, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such document".into()))?;
    let body = store
        .body(&d)
        .await?
        .ok_or_else(|| ApiError::internal("a document's body is missing"))?;
    let mut out = document_view(&d);
    out["html"] = json!(body.html);
    out["markdown"] = json!(body.markdown);
    http::json(StatusCode::OK, &out)
}

//! Knowledge-base import: `POST /v1/integrations/{id}/import-kb` starts an import of
//! the integration's source (it runs on the sync worker), `GET
//! /v1/kb/sources/{integration_id}/status` shows its progress and last run, and the
//! tenant's documents are listed and read under `/v1/kb/documents`.

use conduit::domain::IntegrationId;
use conduit::http::{self, ApiError};
use conduit::kb::document::DocumentId;
use conduit::kb::import::Mode;
use conduit::kb::run::{self, RunError};
use conduit::store::kb::{Filter, KbDocuments};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Response};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::Call;
use crate::routes::load;

/// The providers a knowledge base is imported from today.
const SOURCES: [&str; 1] = ["zendesk"];

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
    if !SOURCES.contains(&i.provider.as_str()) {
        return Err(ApiError::bad_request(
            "not_a_kb_source",
            format!(
                "knowledge bases are imported from {} integrations; this one is {}",
                SOURCES.join(", "),
                i.provider
            ),
        ));
    }
    let Some(connection) = &i.connection_id else {
        return Err(ApiError::bad_request(
            "not_a_kb_source",
            "the integration has no connection to read from",
        ));
    };
    let first = run::status(call.app, &i.tenant, &i.id).await?.is_none();
    let mode = body
        .mode
        .unwrap_or(if first { Mode::Full } else { Mode::Incremental });
    let publisher =
        conduit::queue::sync_queue(call.app).map_err(|e| ApiError::internal(e.to_string()))?;
    let started = run::start(call.app, &publisher, &i.tenant, &i.id, connection, mode).await;
    let status = match started {
        Ok(s) => s,
        Err(RunError::Busy | RunError::Changed) => {
            return Err(ApiError::Conflict {
                code: "import_running",
                message: "an import of this source is under way; see its status".into(),
            });
        }
        Err(RunError::Store(e)) => return Err(e.into()),
        Err(RunError::Queue(e)) => return Err(ApiError::internal(e.to_string())),
    };
    call.record(
        &call
            .audit("kb.import", format!("integration/{}", i.id))
            .detail("mode", mode),
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

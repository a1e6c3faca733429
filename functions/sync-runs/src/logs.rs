//! `/v1/sync/logs…`: the logs of runs (one per run and entity) with their counts and
//! per-record errors, and the retry of a log's failed records.

use conduit::domain::{SyncLogId, rfc3339};
use conduit::http::{self, ApiError};
use conduit::sync::engine::{self, RunRequest};
use conduit::sync::runs::{LogQuery, Phase, RecordError, RunStatus, Runs, SyncLog};
use conduit::sync::schema::Entity;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Response};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::{Call, load_config, queue, start_error};

/// Most per-record errors one log shows.
const MAX_ERRORS_SHOWN: usize = 1_000;

/// What the API shows of a log.
pub fn view(l: &SyncLog) -> Value {
    let count = |name: &str| l.counts.get(name).copied().unwrap_or(0);
    let end = l.finished_at.unwrap_or(l.updated_at);
    json!({
        "id": l.id,
        "config_id": l.config_id,
        "job_id": l.job_id,
        "entity": l.entity,
        "direction": l.direction,
        "trigger": l.trigger,
        "status": l.status,
        "stage": l.stage,
        "processed": count("processed"),
        "synced": count("created") + count("updated") + count("deleted"),
        "failed": count("failed"),
        "skipped": count("skipped"),
        "conflicts_detected": count("conflicts_detected"),
        "conflicts_resolved": count("conflicts_resolved"),
        "estimated_total": l.estimated_total,
        "counts": l.counts,
        "duration_ms": (end - l.started_at).whole_milliseconds().max(0) as u64,
        "error": l.error,
        "error_code": l.error_code,
        "started_at": rfc3339(l.started_at),
        "updated_at": rfc3339(l.updated_at),
        "finished_at": l.finished_at.map(rfc3339),
    })
}

fn parse_status(raw: &str) -> Result<RunStatus, ApiError> {
    serde_json::from_value(json!(raw)).map_err(|_| {
        ApiError::bad_request(
            "invalid_status",
            "status must be one of running, completed, partial, failed",
        )
    })
}

fn parse_time(name: &str, raw: &str) -> Result<OffsetDateTime, ApiError> {
    OffsetDateTime::parse(raw, &Rfc3339).map_err(|_| {
        ApiError::bad_request(
            "invalid_date",
            format!("{name} must be an RFC 3339 time, e.g. 2026-11-22T00:00:00Z"),
        )
    })
}

/// `GET /v1/sync/logs?config_id=&status=&entity=&from=&to=&limit=&cursor=`, newest first.
pub async fn list(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let (app, req, who) = (call.app, &call.req, &call.who);
    let q = http::query(
        req,
        &[
            "config_id",
            "status",
            "entity",
            "from",
            "to",
            "limit",
            "cursor",
        ],
    )?;
    let config = match q.get("config_id") {
        Some(raw) => Some(load_config(app, &who.tenant, raw).await?.id),
        None => None,
    };
    let status = q.get("status").map(|s| parse_status(s)).transpose()?;
    let entity = q
        .get("entity")
        .map(|e| {
            Entity::parse(e).ok_or_else(|| {
                ApiError::bad_request("invalid_entity", "entity must be contacts or companies")
            })
        })
        .transpose()?;
    let from = q.get("from").map(|t| parse_time("from", t)).transpose()?;
    let to = q.get("to").map(|t| parse_time("to", t)).transpose()?;
    if let (Some(f), Some(t)) = (from, to)
        && f > t
    {
        return Err(ApiError::bad_request(
            "invalid_date",
            "from must not be after to",
        ));
    }
    let query = LogQuery {
        config: config.as_ref(),
        status,
        entity,
        from,
        to,
        limit: http::page_limit(&q)?,
        cursor: q.get("cursor").map(String::as_str),
    };
    let page = Runs::new(app.table.clone())
        .search_logs(&who.tenant, &query)
        .await?;
    http::json(
        StatusCode::OK,
        &json!({
            "logs": page.items.iter().map(view).collect::<Vec<_>>(),
            "next_cursor": page.cursor,
            "skipped": page.skipped,
        }),
    )
}

async fn load(call: &Call<'_>) -> Result<SyncLog, ApiError> {
    let (app, who) = (call.app, &call.who);
    let raw = call.path_param("id")?;
    let id = SyncLogId::parse(&raw).map_err(|_| ApiError::NotFound("no such sync log".into()))?;
    Runs::new(app.table.clone())
        .log(&who.tenant, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound("no such sync log".into()))
}

fn error_view(e: &RecordError) -> Value {
    json!({
        "phase": e.phase,
        "record_id": e.record_id,
        "crm_id": e.crm_id,
        "message": e.message,
        "at": rfc3339(e.at),
    })
}

/// `GET /v1/sync/logs/{id}`: the log and its per-record errors.
pub async fn get(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let (app, who) = (call.app, &call.who);
    let log = load(call).await?;
    let errors = Runs::new(app.table.clone())
        .errors(&who.tenant, &log.id)
        .await?;
    let mut body = view(&log);
    body["errors"] = json!(
        errors
            .iter()
            .take(MAX_ERRORS_SHOWN)
            .map(error_view)
            .collect::<Vec<_>>()
    );
    body["error_count"] = json!(errors.len());
    http::json(StatusCode::OK, &body)
}

/// The failed records of a log, by phase: CRM ids to pull again, app ids to push again.
fn failed(errors: &[RecordError]) -> Vec<(Phase, Vec<String>)> {
    let mut pull: Vec<String> = errors
        .iter()
        .filter(|e| e.phase == Phase::Pull)
        .filter_map(|e| e.crm_id.clone())
        .collect();
    let mut push: Vec<String> = errors
        .iter()
        .filter(|e| e.phase == Phase::Push)
        .filter_map(|e| e.record_id.clone())
        .collect();
    for ids in [&mut pull, &mut push] {
        ids.sort();
        ids.dedup();
    }
    [(Phase::Pull, pull), (Phase::Push, push)]
        .into_iter()
        .filter(|(_, ids)| !ids.is_empty())
        .collect()
}

/// `POST /v1/sync/logs/{id}/retry`: a new run of the log's failed records only.
pub async fn retry(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let (app, who) = (call.app, &call.who);
    let log = load(call).await?;
    if log.status == RunStatus::Running {
        return Err(ApiError::Conflict {
            code: "sync_running",
            message: "the run is still in progress; retry when it has finished".into(),
        });
    }
    let errors = Runs::new(app.table.clone())
        .errors(&who.tenant, &log.id)
        .await?;
    let only = failed(&errors);
    if only.is_empty() {
        return Err(ApiError::Conflict {
            code: "nothing_to_retry",
            message: "this log has no failed records".into(),
        });
    }
    let config = load_config(app, &who.tenant, log.config_id.as_str()).await?;
    let publisher = queue(app).map_err(ApiError::internal)?;
    let counts: Value = only
        .iter()
        .map(|(phase, ids)| (phase.as_str().to_owned(), json!(ids.len())))
        .collect::<serde_json::Map<_, _>>()
        .into();
    let run = engine::start(
        app,
        &publisher,
        &config,
        RunRequest {
            direction: None,
            entities: Some(vec![log.entity]),
            trigger: "retry".into(),
            only,
            gone: Vec::new(),
        },
    )
    .await
    .map_err(start_error)?;
    call.record(
        &call
            .audit("sync.retry", log.id.to_string())
            .detail("job_id", run.job_id.as_str()),
    )
    .await;
    let body = json!({
        "job_id": run.job_id,
        "retry_of": log.id,
        "retrying": counts,
        "logs": run.logs.iter().map(view).collect::<Vec<_>>(),
    });
    http::json(StatusCode::ACCEPTED, &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(phase: Phase, record: Option<&str>, crm: Option<&str>) -> RecordError {
        RecordError {
            phase,
            record_id: record.map(str::to_owned),
            crm_id: crm.map(str::to_owned),
            message: "refused".into(),
            at: conduit::domain::now(),
        }
    }

    #[test]
    fn failed_records_are_grouped_by_phase_once_each() {
        let errors = [
            error(Phase::Pull, None, Some("9")),
            error(Phase::Pull, Some("rec_x"), Some("9")),
            error(Phase::Push, Some("rec_a"), None),
            error(Phase::Pull, None, None),
        ];
        assert_eq!(
            failed(&errors),
            vec![
                (Phase::Pull, vec!["9".to_owned()]),
                (Phase::Push, vec!["rec_a".to_owned()]),
            ]
        );
        assert!(failed(&[]).is_empty());
    }
}

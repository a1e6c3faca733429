//! `GET /v1/sync/configs/{id}/status`: where a config stands — its latest run per
//! entity with live progress (the workers write their counts after every page), the
//! open conflicts waiting for review, and when the schedule fires next.

use conduit::domain::{now, rfc3339};
use conduit::http::{self, ApiError};
use conduit::sync::config::ConfigStatus;
use conduit::sync::runs::{ConflictQuery, RunStatus, Runs, SyncLog};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Response};
use serde_json::{Value, json};

use crate::{Call, load_config, logs};

/// How many recent logs are read to find the latest run's.
const RECENT_LOGS: i32 = 20;
/// Most open conflicts counted (more shows as this many and `more`).
const CONFLICTS_COUNTED: i32 = 200;

/// The latest run's logs (one per entity), newest run first in `recent`.
fn latest_run(recent: &[SyncLog]) -> Vec<&SyncLog> {
    let Some(first) = recent.first() else {
        return Vec::new();
    };
    recent.iter().filter(|l| l.job_id == first.job_id).collect()
}

/// The run's state over its entity logs: running while any runs, else the worst end.
fn run_status(logs: &[&SyncLog]) -> Option<RunStatus> {
    let statuses: Vec<RunStatus> = logs.iter().map(|l| l.status).collect();
    [
        RunStatus::Running,
        RunStatus::Failed,
        RunStatus::Partial,
        RunStatus::Completed,
    ]
    .into_iter()
    .find(|s| statuses.contains(s))
}

/// `GET /v1/sync/configs/{id}/status`.
pub async fn get(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let (app, who) = (call.app, &call.who);
    let raw = call.path_param("id")?;
    let config = load_config(app, &who.tenant, &raw).await?;
    let runs = Runs::new(app.table.clone());
    let recent = runs
        .logs(&who.tenant, Some(&config.id), RECENT_LOGS, None)
        .await?;
    let latest = latest_run(&recent.items);
    let status = run_status(&latest);
    let running = status == Some(RunStatus::Running);
    let processed: u64 = latest
        .iter()
        .map(|l| l.counts.get("processed").copied().unwrap_or(0))
        .sum();
    let estimated: Option<u64> = latest
        .iter()
        .map(|l| l.estimated_total)
        .sum::<Option<u64>>();
    let stage = if running {
        latest
            .iter()
            .find(|l| l.status == RunStatus::Running)
            .map(|l| l.stage.clone())
    } else {
        latest.first().map(|_| "done".to_owned())
    };
    let open = runs
        .search_conflicts(
            &who.tenant,
            &ConflictQuery {
                status: Some("open"),
                config: Some(&config.id),
                limit: CONFLICTS_COUNTED,
                ..Default::default()
            },
        )
        .await?;
    let next_run = match config.status {
        ConfigStatus::Active => config.frequency.next_run(now(), config.updated_at),
        ConfigStatus::Paused => None,
    };
    let run: Value = if latest.is_empty() {
        Value::Null
    } else {
        json!({
            "job_id": latest[0].job_id,
            "status": status,
            "stage": stage,
            "processed": processed,
            "estimated_total": estimated,
            "percent": estimated
                .filter(|t| *t > 0)
                .map(|t| ((processed as f64 / t as f64) * 100.0).min(100.0).round() as u64),
            "started_at": latest.iter().map(|l| l.started_at).min().map(rfc3339),
            "updated_at": latest.iter().map(|l| l.updated_at).max().map(rfc3339),
            "finished_at": if running {
                None
            } else {
                latest.iter().filter_map(|l| l.finished_at).max().map(rfc3339)
            },
            "entities": latest.iter().map(|l| logs::view(l)).collect::<Vec<_>>(),
        })
    };
    http::json(
        StatusCode::OK,
        &json!({
            "config_id": config.id,
            "config_status": config.status,
            "running": running,
            "run": run,
            "open_conflicts": open.items.len(),
            "more_open_conflicts": open.cursor.is_some(),
            "frequency": config.frequency,
            "next_run_at": next_run.map(rfc3339),
            "as_of": rfc3339(now()),
        }),
    )
}

//! The token-refresh function, run by an EventBridge schedule every five minutes:
//! finds every OAuth connection whose token is due through the refresh index (never a
//! table scan) and refreshes them, at most [`CONCURRENCY`] at once, one refresher per
//! connection (the lease). It stops taking new work shortly before its own deadline;
//! what is left is still due and the next run takes it.

use std::time::Duration;

use conduit::app::App;
use conduit::oauth::lifecycle::{self, SweepReport};
use lambda_runtime::{Error, LambdaEvent};

/// Refreshes in flight at once.
pub const CONCURRENCY: usize = 32;

/// Time kept back from the invocation deadline for work in flight.
const MARGIN: Duration = Duration::from_secs(10);

/// The function's timeout in template.yaml, for callers without a Lambda context.
const TIMEOUT: Duration = Duration::from_secs(240);

/// Runs one sweep (the Lambda runtime's entry). The event's content is not needed:
/// any schedule or manual invocation triggers a sweep.
pub async fn handle(
    app: &App,
    event: LambdaEvent<serde_json::Value>,
) -> Result<SweepReport, Error> {
    let remaining = event
        .context
        .deadline()
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    sweep(app, &event.context.request_id, remaining).await
}

/// Runs one sweep for a caller without a Lambda context (the dev host's scheduler and
/// `devhost invoke`): the event is any JSON (its `id`, when a string, names the run).
pub async fn handle_event(app: &App, event: serde_json::Value) -> Result<serde_json::Value, Error> {
    let request_id = match event.get("id").and_then(|v| v.as_str()) {
        Some(id) if id.len() <= 128 => id.to_owned(),
        _ => format!("local-{}", ulid_now()),
    };
    let report = sweep(app, &request_id, TIMEOUT).await?;
    serde_json::to_value(report).map_err(|e| Error::from(e.to_string()))
}

fn ulid_now() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

async fn sweep(app: &App, request_id: &str, remaining: Duration) -> Result<SweepReport, Error> {
    let deadline =
        tokio::time::Instant::now() + remaining.saturating_sub(MARGIN).max(Duration::from_secs(1));
    let report = lifecycle::sweep(app, request_id, CONCURRENCY, deadline)
        .await
        .map_err(|e| Error::from(e.to_string()))?;
    tracing::info!(
        request_id = %request_id,
        due = report.due,
        refreshed = report.refreshed,
        fresh = report.fresh,
        busy = report.busy,
        checked = report.checked,
        retrying = report.retrying,
        reauth = report.reauth,
        failed = report.failed,
        deferred = report.deferred,
        "token sweep done"
    );
    Ok(report)
}

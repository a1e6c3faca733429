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

/// Runs one sweep. The event's content is not needed (any schedule or manual
/// invocation triggers a sweep); its id is logged.
pub async fn handle(
    app: &App,
    event: LambdaEvent<serde_json::Value>,
) -> Result<SweepReport, Error> {
    let request_id = event.context.request_id.clone();
    let remaining = event
        .context
        .deadline()
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    let deadline =
        tokio::time::Instant::now() + remaining.saturating_sub(MARGIN).max(Duration::from_secs(1));
    let event_id = event
        .payload
        .get("id")
        .and_then(|v| v.as_str())
        .unwrap_or("-");
    let span = tracing::info_span!("sweep", request_id = %request_id, event_id = %event_id);
    let _enter = span.enter();
    drop(_enter);
    let report = lifecycle::sweep(app, &request_id, CONCURRENCY, deadline)
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

//! The sync worker: takes batches of sync-queue messages ([`SyncMessage`]) from SQS and
//! does each — a chunk of a run (a bounded number of pages of one entity's pull or
//! push), a page of a deleted config's clean-up, a realtime follow-up, a webhook's
//! targeted pull, or a
//! knowledge-base import step (up to 40 s) — then reports the messages that must come
//! back (partial batch failures). A message that cannot be understood is reported too,
//! so after the queue's receive limit it lands in the dead-letter queue instead of
//! being lost.

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent, SqsMessage};
use conduit::app::App;
use conduit::kb::run as kb;
use conduit::queue::Publisher;
use conduit::sync::engine::{self, ChunkError};
use conduit::sync::message::SyncMessage;
use conduit::sync::{purge, realtime, webhook};
use futures::StreamExt;
use lambda_runtime::LambdaEvent;

/// Messages handled at once within one batch.
pub const CONCURRENCY: usize = 4;

/// Handles one SQS batch; answers the messages to retry.
pub async fn handle(
    app: &App,
    event: LambdaEvent<SqsEvent>,
) -> Result<SqsBatchResponse, lambda_runtime::Error> {
    let publisher =
        conduit::queue::sync_queue(app).map_err(|e| lambda_runtime::Error::from(e.to_string()))?;
    let publisher = &publisher;
    let failures: Vec<String> = futures::stream::iter(event.payload.records)
        .map(|record| async move { one(app, publisher, record).await })
        .buffer_unordered(CONCURRENCY)
        .filter_map(|f| async move { f })
        .collect()
        .await;
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = failures
        .into_iter()
        .map(|id| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            failure
        })
        .collect();
    Ok(response)
}

/// Does one message; its id when it must come back.
async fn one(app: &App, publisher: &Publisher, record: SqsMessage) -> Option<String> {
    let id = record.message_id.clone().unwrap_or_default();
    let Some(body) = record.body.as_deref() else {
        tracing::error!(message_id = %id, "sync message without a body");
        return Some(id);
    };
    let message = match SyncMessage::parse(body) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(message_id = %id, error = %e, "not a sync message");
            return Some(id);
        }
    };
    let kind = message.kind();
    // SQS counts receives: past the first, an earlier attempt may have stopped midway.
    let redelivered = record
        .attributes
        .get("ApproximateReceiveCount")
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| n > 1);
    let started = std::time::Instant::now();
    let failed: Option<String> = match &message {
        SyncMessage::Chunk(task) => {
            match Box::pin(engine::run_chunk(app, publisher, task, &id, redelivered)).await {
                Ok(()) => {
                    tracing::info!(
                        message_id = %id,
                        log_id = %task.log_id,
                        chunk = %task.chunk_id(),
                        ms = started.elapsed().as_millis() as u64,
                        "sync chunk done"
                    );
                    None
                }
                Err(ChunkError::Retry(why)) => Some(format!(
                    "log {} chunk {}: {why}",
                    task.log_id,
                    task.chunk_id()
                )),
            }
        }
        SyncMessage::Purge(p) => purge::run(app, publisher, p)
            .await
            .err()
            .map(|e| format!("config {}: {e}", p.config_id)),
        SyncMessage::Realtime(f) => realtime::follow_up(app, publisher, f)
            .await
            .err()
            .map(|e| format!("config {}: {e}", f.config_id)),
        SyncMessage::KbImport(step) => kb::step(app, publisher, step)
            .await
            .err()
            .map(|e| format!("run {}: {e}", step.run_id)),
        SyncMessage::Webhook(h) => match webhook::pull(app, publisher, h).await {
            Ok(pulled) => {
                tracing::info!(message_id = %id, config = %h.config_id, entity = %h.entity, ?pulled, "webhook pull");
                None
            }
            Err(e) => Some(format!("config {}: {e}", h.config_id)),
        },
    };
    let why = failed?;
    tracing::warn!(message_id = %id, kind, reason = %why, "sync message will be retried");
    Some(id)
}

//! The sync worker: takes batches of sync tasks from SQS and does each as one chunk
//! (a bounded number of pages of one entity's pull or push) — or a page of a deleted
//! config's clean-up (`{"purge": …}`), a realtime follow-up (`{"realtime": …}`) or a
//! knowledge-base import step (`{"kb_import": …}`, up to 40 s) — then reports the
//! messages that must come back (partial batch failures). A message that cannot be
//! understood is reported too, so after the queue's receive limit it lands in the
//! dead-letter queue instead of being lost.

use aws_lambda_events::event::sqs::SqsEvent;
use conduit::app::App;
use conduit::kb::run::{self as kb, KbImportMessage};
use conduit::sync::engine::{self, ChunkError};
use conduit::sync::purge::{self, PurgeMessage};
use conduit::sync::realtime::{self, FollowUpMessage};
use conduit::sync::runs::Task;
use futures::StreamExt;
use serde_json::{Value, json};

/// Chunks done at once within one batch.
pub const CONCURRENCY: usize = 4;

/// Handles one SQS batch; answers `{"batchItemFailures": [...]}`.
pub async fn handle_event(app: &App, event: Value) -> Result<Value, lambda_runtime::Error> {
    let event: SqsEvent = serde_json::from_value(event)
        .map_err(|e| lambda_runtime::Error::from(format!("not an SQS event: {e}")))?;
    let publisher =
        conduit::queue::sync_queue(app).map_err(|e| lambda_runtime::Error::from(e.to_string()))?;
    let publisher = &publisher;
    let failures: Vec<String> = futures::stream::iter(event.records)
        .map(|record| async move {
            let id = record.message_id.clone().unwrap_or_default();
            let Some(body) = record.body.as_deref() else {
                tracing::error!(message_id = %id, "sync message without a body");
                return Some(id);
            };
            let task: Task = match serde_json::from_str(body) {
                Ok(t) => t,
                Err(e) => {
                    if let Ok(m) = serde_json::from_str::<FollowUpMessage>(body) {
                        return match realtime::follow_up(app, publisher, &m.realtime).await {
                            Ok(_) => None,
                            Err(e) => {
                                tracing::warn!(message_id = %id, config = %m.realtime.config_id, error = %e, "realtime follow-up will be retried");
                                Some(id)
                            }
                        };
                    }
                    if let Ok(m) = serde_json::from_str::<KbImportMessage>(body) {
                        return match kb::step(app, publisher, &m.kb_import).await {
                            Ok(()) => None,
                            Err(e) => {
                                tracing::warn!(message_id = %id, run = %m.kb_import.run_id, error = %e, "knowledge-base import step will be retried");
                                Some(id)
                            }
                        };
                    }
                    if let Ok(m) = serde_json::from_str::<PurgeMessage>(body) {
                        return match purge::run(app, publisher, &m.purge).await {
                            Ok(()) => None,
                            Err(e) => {
                                tracing::warn!(message_id = %id, config = %m.purge.config_id, error = %e, "purge will be retried");
                                Some(id)
                            }
                        };
                    }
                    tracing::error!(message_id = %id, error = %e, "sync message is not a task");
                    return Some(id);
                }
            };
            let started = std::time::Instant::now();
            match Box::pin(engine::run_chunk(app, publisher, &task, &id)).await {
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
                Err(ChunkError::Retry(why)) => {
                    tracing::warn!(message_id = %id, log_id = %task.log_id, chunk = %task.chunk_id(), reason = %why, "sync chunk will be retried");
                    Some(id)
                }
            }
        })
        .buffer_unordered(CONCURRENCY)
        .filter_map(|f| async move { f })
        .collect()
        .await;
    Ok(json!({
        "batchItemFailures": failures.iter().map(|id| json!({"itemIdentifier": id})).collect::<Vec<_>>()
    }))
}

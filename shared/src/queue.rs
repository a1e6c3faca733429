//! The SQS publisher: JSON messages, batched by ten, each sent with its tenant as
//! `MessageGroupId`. On a standard queue that makes it an SQS fair queue: when one
//! tenant has a disproportionate share of the messages in flight, SQS hands the
//! consumers the other tenants' messages first, so one tenant's long sync does not
//! delay everyone else's (the order within a tenant stays best-effort, as on any
//! standard queue).

use serde::Serialize;

/// Work for one tenant: what the publisher sends.
pub trait TenantWork: Serialize {
    /// The tenant whose work it is: the message's group on a fair queue.
    fn tenant(&self) -> &str;
}

/// Publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The message could not be serialised.
    #[error("message encoding: {0}")]
    Encoding(String),
    /// SQS failed, or refused some messages (their ids are listed).
    #[error("sqs: {0}")]
    Service(String),
}

/// Sends messages to one queue.
#[derive(Clone, Debug)]
pub struct Publisher {
    client: aws_sdk_sqs::Client,
    queue_url: String,
}

impl Publisher {
    /// A publisher to `queue_url`.
    pub fn new(client: aws_sdk_sqs::Client, queue_url: impl Into<String>) -> Self {
        Self {
            client,
            queue_url: queue_url.into(),
        }
    }

    /// Sends one message.
    pub async fn send<T: TenantWork>(&self, message: &T) -> Result<(), QueueError> {
        let body =
            serde_json::to_string(message).map_err(|e| QueueError::Encoding(e.to_string()))?;
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .message_group_id(message.tenant())
            .send()
            .await
            .map_err(|e| {
                QueueError::Service(aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
            })?;
        Ok(())
    }

    /// Sends one message that becomes visible after `delay_secs` (at most 900).
    pub async fn send_delayed<T: TenantWork>(
        &self,
        message: &T,
        delay_secs: i32,
    ) -> Result<(), QueueError> {
        let body =
            serde_json::to_string(message).map_err(|e| QueueError::Encoding(e.to_string()))?;
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(body)
            .message_group_id(message.tenant())
            .delay_seconds(delay_secs.clamp(0, 900))
            .send()
            .await
            .map_err(|e| {
                QueueError::Service(aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
            })?;
        Ok(())
    }

    /// Sends many messages, ten per request; fails if any message was refused.
    pub async fn send_all<T: TenantWork>(&self, messages: &[T]) -> Result<(), QueueError> {
        let mut bodies = Vec::with_capacity(messages.len());
        for m in messages {
            let body = serde_json::to_string(m).map_err(|e| QueueError::Encoding(e.to_string()))?;
            bodies.push((body, m.tenant().to_owned()));
        }
        self.send_bodies(&bodies).await
    }

    /// Sends bodies as they are, each `(body, group)` under its group, ten per
    /// request; fails if any was refused.
    pub async fn send_bodies(&self, bodies: &[(String, String)]) -> Result<(), QueueError> {
        for chunk in bodies.chunks(10) {
            let mut entries = Vec::with_capacity(chunk.len());
            for (i, (body, group)) in chunk.iter().enumerate() {
                entries.push(
                    aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(body)
                        .message_group_id(group)
                        .build()
                        .map_err(|e| QueueError::Encoding(e.to_string()))?,
                );
            }
            let out = self
                .client
                .send_message_batch()
                .queue_url(&self.queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| {
                    QueueError::Service(aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
                })?;
            if !out.failed.is_empty() {
                let ids: Vec<&str> = out.failed.iter().map(|f| f.id.as_str()).collect();
                return Err(QueueError::Service(format!(
                    "messages refused: {}",
                    ids.join(",")
                )));
            }
        }
        Ok(())
    }
}

/// A message set aside with why (a dead-letter queue's): the body exactly as it came,
/// the reason as the `reason` message attribute (never the body's values).
impl Publisher {
    /// Sends `body` as it is, grouped under `group`, with `reason` as an attribute.
    pub async fn set_aside(&self, body: &str, group: &str, reason: &str) -> Result<(), QueueError> {
        let reason = aws_sdk_sqs::types::MessageAttributeValue::builder()
            .data_type("String")
            .string_value(reason.chars().take(1000).collect::<String>())
            .build()
            .map_err(|e| QueueError::Encoding(e.to_string()))?;
        self.client
            .send_message()
            .queue_url(&self.queue_url)
            .message_body(if body.is_empty() { "(empty)" } else { body })
            .message_group_id(group)
            .message_attributes("reason", reason)
            .send()
            .await
            .map_err(|e| {
                QueueError::Service(aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
            })?;
        Ok(())
    }
}

/// The queue a function names in setting `var`.
fn configured(app: &crate::app::App, var: &str) -> Result<Publisher, QueueError> {
    let url = app
        .config
        .env
        .get(var)
        .filter(|u| !u.trim().is_empty())
        .ok_or_else(|| QueueError::Service(format!("missing required setting {var}")))?;
    Ok(Publisher::new(
        aws_sdk_sqs::Client::new(&app.aws),
        url.clone(),
    ))
}

/// The dispatch queue (`CONDUIT_DISPATCH_QUEUE_URL`).
pub fn dispatch_queue(app: &crate::app::App) -> Result<Publisher, QueueError> {
    configured(app, "CONDUIT_DISPATCH_QUEUE_URL")
}

/// The dispatch queue's dead-letter queue (`CONDUIT_DISPATCH_DLQ_URL`).
pub fn dispatch_dlq(app: &crate::app::App) -> Result<Publisher, QueueError> {
    configured(app, "CONDUIT_DISPATCH_DLQ_URL")
}

/// The sync work queue of a function (its `CONDUIT_SYNC_QUEUE_URL` setting).
pub fn sync_queue(app: &crate::app::App) -> Result<Publisher, QueueError> {
    configured(app, "CONDUIT_SYNC_QUEUE_URL")
}

//! Events Conduit publishes on its EventBridge bus for the rest of the product (the
//! dashboard listens for `integration.connection.reauth_required` and
//! `integration.connection.scopes_missing`).
//!
//! Every event has source [`SOURCE`], a detail-type naming what happened, and a JSON
//! detail holding ids and codes only — never a token, secret or provider body.

use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use serde::Serialize;

/// The `source` of every Conduit event.
pub const SOURCE: &str = "conduit.integrations";

/// A connection's grant is gone; an admin must reconnect.
pub const REAUTH_REQUIRED: &str = "integration.connection.reauth_required";

/// A provider refused a call for scopes the connection lacks; an admin must
/// reconnect it with them.
pub const SCOPES_MISSING: &str = "integration.connection.scopes_missing";

/// A sync run (one entity of a config) completed.
pub const SYNC_RUN_COMPLETED: &str = "integration.sync.run.completed";

/// A sync run (one entity of a config) failed.
pub const SYNC_RUN_FAILED: &str = "integration.sync.run.failed";

/// A sync found a conflict an admin must review.
pub const CONFLICT_OPENED: &str = "integration.sync.conflict.opened";

/// A webhook endpoint failed for too long and was disabled.
pub const WEBHOOK_DISABLED: &str = "integration.webhook.endpoint.disabled";

/// Publishing failed.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// No bus is configured (`CONDUIT_EVENT_BUS`).
    #[error("no event bus is configured (CONDUIT_EVENT_BUS)")]
    NoBus,
    /// The detail could not be serialised.
    #[error("event detail: {0}")]
    Detail(String),
    /// EventBridge refused or failed.
    #[error("eventbridge: {0}")]
    Service(String),
}

/// Puts events on the bus.
#[derive(Clone, Debug)]
pub struct EventPublisher {
    client: crate::app::LazyClient<Client>,
    bus: Option<String>,
}

impl EventPublisher {
    /// A publisher to `bus` (none: every publish fails with [`EventError::NoBus`]).
    pub fn new(client: impl Into<crate::app::LazyClient<Client>>, bus: Option<String>) -> Self {
        Self {
            client: client.into(),
            bus,
        }
    }

    /// Publishes one of Conduit's events.
    pub async fn publish<T: Serialize>(
        &self,
        detail_type: &str,
        detail: &T,
    ) -> Result<(), EventError> {
        self.publish_from(SOURCE, detail_type, detail).await
    }

    /// Publishes one event with another source (`POST /v1/events` puts a test event
    /// as the product would).
    pub async fn publish_from<T: Serialize>(
        &self,
        source: &str,
        detail_type: &str,
        detail: &T,
    ) -> Result<(), EventError> {
        let bus = self.bus.as_deref().ok_or(EventError::NoBus)?;
        let detail =
            serde_json::to_string(detail).map_err(|e| EventError::Detail(e.to_string()))?;
        let out = self
            .client
            .get()
            .put_events()
            .entries(
                PutEventsRequestEntry::builder()
                    .event_bus_name(bus)
                    .source(source)
                    .detail_type(detail_type)
                    .detail(detail)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| {
                EventError::Service(aws_sdk_eventbridge::error::DisplayErrorContext(e).to_string())
            })?;
        if out.failed_entry_count() > 0 {
            let code = out
                .entries()
                .iter()
                .find_map(|e| e.error_code())
                .unwrap_or("unknown");
            return Err(EventError::Service(format!("entry refused: {code}")));
        }
        Ok(())
    }
}

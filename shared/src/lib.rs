//! Conduit's shared library: the domain, the provider catalogue, envelope encryption,
//! the DynamoDB store, platform secrets, queues, the outbound HTTP client and the HTTP
//! layer every Lambda function is built on.
//!
//! The domain modules (`domain`, `providers`) know nothing of AWS or Lambda; the
//! adapters (`store`, `crypto::kms`, `secrets`, `queue`) and the HTTP layer (`http`) do.

// The Salesforce dialect's pull (REST or Bulk) is one deep async state machine.
#![recursion_limit = "256"]

pub mod app;
pub mod app_credentials;
pub mod audit;
pub mod config;
pub mod connections;
pub mod connector;
pub mod crypto;
pub mod dispatch;
pub mod domain;
pub mod egress;
pub mod events;
pub mod http;
pub mod kb;
pub mod mail;
pub mod metrics;
pub mod oauth;
pub mod providers;
pub mod queue;
pub mod schedule;
pub mod scopes;
pub mod secrets;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod webhooks;

/// Idempotency keys live in the store tree with the rest of the table layout.
pub use store::idempotency;

//! Scenario tests: every request goes over real HTTP through the dev host (template
//! routes, JWT authorizer emulation) into the real handlers, which use moto's
//! DynamoDB, KMS and Secrets Manager and call the provider sandbox.

mod app_credentials;
mod bad_input;
mod budget;
mod catalogue;
mod connections;
mod contract;
mod ddb_faults;
mod dispatch;
mod dispatch_actions;
mod dispatch_fairness;
mod dispatch_templates;
mod events;
mod fairness;
mod idempotency;
mod isolation;
mod kb;
mod kb_sources;
mod oauth;
mod personal;
mod queue;
mod records;
mod scopes;
mod secrets;
mod security;
mod strict_input;
mod sync;
mod sync_bulk;
mod sync_config;
mod sync_deals;
mod sync_dynamics;
mod sync_faults;
mod sync_holes;
mod sync_multi;
mod sync_pipedrive;
mod sync_review;
mod sync_salesforce;
mod sync_support;
mod sync_webhooks;
mod sync_webhooks_more;
mod sync_zoho;
mod telemetry;
mod tokens;

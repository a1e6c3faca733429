//! Record sync: the app's entities and fields, sync configurations and field
//! mappings, field-mapping transforms and field-level conflict detection.

pub mod behind;
pub mod budget;
pub mod config;
pub mod conflict;
pub mod crm;
pub mod engine;
pub mod links;
pub mod mapping;
pub mod message;
pub mod purge;
pub mod realtime;
pub mod records;
pub mod resolve;
pub mod runs;
pub mod schedules;
pub mod schema;
pub mod subscriptions;
pub mod transform;
pub mod values;
pub mod webhook;

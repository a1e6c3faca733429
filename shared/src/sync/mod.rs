//! Record sync: the app's entities and fields, sync configurations and field
//! mappings, field-mapping transforms and field-level conflict detection.

pub mod config;
pub mod conflict;
pub mod records;
pub mod schema;
pub mod transform;

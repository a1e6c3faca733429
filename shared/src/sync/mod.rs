//! Record sync (issue 4), built up piece by piece: field-mapping transforms and
//! field-level conflict detection first.

pub mod conflict;
pub mod transform;

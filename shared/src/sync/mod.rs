//! Record sync (issue 4), built up piece by piece: field-mapping transforms first.

pub mod transform;

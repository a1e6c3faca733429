//! Knowledge-base import (issue 15): integrations pull help-centre articles from the
//! tenant's systems so the product's assistants can answer from them.
//!
//! - [`clean`]: what is stored of an article's untrusted HTML — sanitized HTML,
//!   Markdown, and the content hash an import compares to skip unchanged articles.
//! - [`document`]: a stored document (its metadata and its body) and how a source's
//!   article becomes one; the store is [`crate::store::kb`].

pub mod clean;
pub mod document;

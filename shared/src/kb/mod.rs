//! Knowledge-base import (issue 15): integrations pull help-centre articles from the
//! tenant's systems so the product's assistants can answer from them.
//!
//! - [`clean`]: what is stored of an article's untrusted HTML — sanitized HTML,
//!   Markdown, and the content hash an import compares to skip unchanged articles.
//! - [`document`]: a stored document (its metadata and its body) and how a source's
//!   article becomes one; the store is [`crate::store::kb`].
//! - [`source`]: what every source shares — the page-by-page [`source::Source`], its
//!   errors, and HTTP reading through a connection under its rate budget.
//! - [`zendesk`]: Zendesk Help Center as a source (the incremental article export).
//! - [`freshdesk`]: Freshdesk solutions (categories → folders → articles, per language).
//! - [`salesforce`]: Salesforce Knowledge (published versions through SOQL).
//! - [`dynamics`]: Dynamics 365 knowledge articles (Dataverse Web API).
//! - [`custom`]: a tenant-described Custom API (its paging and a JSON Pointer mapping).
//! - [`import`]: one run of an import, from a checkpoint to a deadline.
//! - [`run`]: runs in the background — the source's status, starting a run, the sync
//!   worker's steps, the completed event.

pub mod clean;
pub mod custom;
pub mod document;
pub mod dynamics;
pub mod freshdesk;
pub mod import;
pub mod run;
pub mod salesforce;
pub mod source;
pub mod zendesk;

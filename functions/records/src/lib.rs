//! The records function: the tenant's canonical contacts and companies, one view across
//! every connected CRM (search by name or exact email / domain, filter by platform,
//! where each field's value came from), and their create, replace, update and delete.
//!
//! Routing follows the HTTP API's route key, so template.yaml is the one routing
//! table. Members read; admins write; every item key carries the caller's tenant, so
//! another tenant's ids simply are not found.

mod routes;
mod view;

use std::convert::Infallible;

use conduit::app::App;
use conduit::audit::{AuditEntry, Outcome};
use conduit::domain::Principal;
use conduit::http::{self, ApiError, RequestMeta};
use lambda_http::{Body, Request, Response};

/// Handles one HTTP API request routed to this function.
pub async fn handle(app: &App, req: Request) -> Result<Response<Body>, Infallible> {
    http::serve(req, |req, meta| route(app, req, meta)).await
}

/// Everything a route needs about the call.
pub(crate) struct Call<'a> {
    pub app: &'a App,
    pub req: Request,
    pub meta: RequestMeta,
    pub who: Principal,
}

impl Call<'_> {
    /// An audit entry for this call.
    pub fn audit(&self, action: &str, target: impl Into<String>) -> AuditEntry {
        AuditEntry::by(&self.who, &self.meta.request_id, action, target)
    }

    /// A path parameter, cut short (it only names things in messages and audits).
    fn short_param(&self, name: &str) -> Option<String> {
        http::path_param(&self.req, name)
            .ok()
            .map(|v| v.chars().take(64).collect())
    }
}

/// Write routes, by route key, with the audit action a refused member attempt records.
const WRITES: &[(&str, &str)] = &[
    ("POST /v1/records/{entity}", "record.create"),
    ("PUT /v1/records/{entity}/{id}", "record.update"),
    ("PATCH /v1/records/{entity}/{id}", "record.update"),
    ("DELETE /v1/records/{entity}/{id}", "record.delete"),
];

async fn route(app: &App, req: Request, meta: RequestMeta) -> Result<Response<Body>, ApiError> {
    let who = http::principal(&req)?;
    tracing::Span::current().record("tenant", who.tenant.as_str());
    let call = Call {
        app,
        req,
        meta,
        who,
    };
    if let Some((_, action)) = WRITES.iter().find(|(r, _)| *r == call.meta.route_key)
        && !call.who.is_admin()
    {
        let target = [call.short_param("entity"), call.short_param("id")]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("/");
        let entry = call
            .audit(action, target)
            .failed(Outcome::Denied, "forbidden");
        if let Err(e) = call.app.audit.record(&entry).await {
            tracing::error!(error = %e, action = %entry.action, "audit write failed");
        }
        http::require_admin(&call.who)?;
    }
    match call.meta.route_key.as_str() {
        "GET /v1/records/{entity}" => routes::list(&call).await,
        "POST /v1/records/{entity}" => routes::create(&call).await,
        "GET /v1/records/{entity}/{id}" => routes::get(&call).await,
        "PUT /v1/records/{entity}/{id}" => routes::update(&call, routes::Mode::Replace).await,
        "PATCH /v1/records/{entity}/{id}" => routes::update(&call, routes::Mode::Merge).await,
        "DELETE /v1/records/{entity}/{id}" => routes::delete(&call).await,
        other => Err(ApiError::NotFound(format!("no route {other}"))),
    }
}

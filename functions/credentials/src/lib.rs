//! The credentials function: the provider catalogue, tenants' own OAuth apps, and
//! API-key / basic-auth connections (create, list, read, update, delete, activate,
//! deactivate, test).
//!
//! Routing follows the HTTP API's route key, so template.yaml is the one routing
//! table. Members read; admins write; every item key carries the caller's tenant, so
//! another tenant's ids simply are not found.

mod app_credentials;
mod catalogue;
mod connections;

use std::convert::Infallible;

use conduit::app::App;
use conduit::audit::{AuditEntry, Outcome};
use conduit::domain::Principal;
use conduit::http::{self, ApiError, RequestMeta};
use conduit::providers::Provider;
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

    /// Records an attempt that changed nothing; a failure to record is logged.
    pub async fn audit_failure(&self, entry: AuditEntry) {
        if let Err(e) = self.app.audit.record(&entry).await {
            tracing::error!(error = %e, action = %entry.action, "audit write failed");
        }
    }

    /// A catalogue provider named by the path.
    pub fn path_provider(&self) -> Result<&'static Provider, ApiError> {
        let id = http::path_param(&self.req, "provider")?;
        self.app.catalogue.provider(&id).ok_or_else(|| {
            ApiError::NotFound(format!(
                "no provider {:?}",
                id.chars().take(64).collect::<String>()
            ))
        })
    }
}

/// Write routes, by route key, with the audit action a refused member attempt records.
const WRITES: &[(&str, &str)] = &[
    (
        "PUT /v1/providers/{provider}/app-credentials",
        "app_credentials.put",
    ),
    (
        "DELETE /v1/providers/{provider}/app-credentials",
        "app_credentials.delete",
    ),
    ("POST /v1/connections", "connection.create"),
    ("POST /v1/connections/test", "connection.test"),
    ("PATCH /v1/connections/{id}", "connection.update"),
    ("DELETE /v1/connections/{id}", "connection.delete"),
    ("POST /v1/connections/{id}/activate", "connection.activate"),
    (
        "POST /v1/connections/{id}/deactivate",
        "connection.deactivate",
    ),
    ("POST /v1/connections/{id}/test", "connection.test"),
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
        let target = call.req.uri().path().to_owned();
        call.audit_failure(
            call.audit(action, target)
                .failed(Outcome::Denied, "forbidden"),
        )
        .await;
        http::require_admin(&call.who)?;
    }
    match call.meta.route_key.as_str() {
        "GET /v1/providers" => catalogue::list(&call).await,
        "GET /v1/providers/{provider}" => catalogue::get(&call).await,
        "PUT /v1/providers/{provider}/app-credentials" => app_credentials::put(&call).await,
        "GET /v1/providers/{provider}/app-credentials" => app_credentials::get(&call).await,
        "DELETE /v1/providers/{provider}/app-credentials" => app_credentials::delete(&call).await,
        "POST /v1/connections" => connections::create(&call).await,
        "GET /v1/connections" => connections::list(&call).await,
        "POST /v1/connections/test" => connections::test_new(&call).await,
        "GET /v1/connections/{id}" => connections::get(&call).await,
        "PATCH /v1/connections/{id}" => connections::update(&call).await,
        "DELETE /v1/connections/{id}" => connections::delete(&call).await,
        "POST /v1/connections/{id}/activate" => connections::activate(&call).await,
        "POST /v1/connections/{id}/deactivate" => connections::deactivate(&call).await,
        "POST /v1/connections/{id}/test" => connections::test_existing(&call).await,
        other => Err(ApiError::NotFound(format!("no route {other}"))),
    }
}

//! The sync configuration function: a tenant's sync configs (per connection: which
//! entities sync which way, how often, which CRM records, how conflicts settle), their
//! EventBridge Scheduler schedules, their field mappings, and the tools to build
//! those: available fields, auto-map and a dry-run preview.
//!
//! Routing follows the HTTP API's route key, so template.yaml is the one routing
//! table. Members read (a preview reads too); admins write, and a member's attempt to
//! write is audited. Every key carries the caller's tenant, so another tenant's ids
//! are simply not found.

mod automap;
mod configs;
mod crm;
mod mappings;
mod preview;
mod schedules;
mod settings;
mod store;
mod validate;

use std::convert::Infallible;

use conduit::app::App;
use conduit::audit::{AuditEntry, Outcome};
use conduit::config::ConfigError;
use conduit::domain::{Principal, SyncConfigId};
use conduit::http::{self, ApiError, RequestMeta};
use conduit::sync::config::SyncConfig;
use lambda_http::{Body, Request, Response};

pub use settings::Settings;

/// What the function builds once per cold start besides the shared [`App`].
pub struct Service {
    settings: Settings,
    scheduler: aws_sdk_scheduler::Client,
}

impl Service {
    /// The service of `app`: its schedule settings (from the function's environment)
    /// and a Scheduler client on its AWS configuration.
    pub fn new(app: &App) -> Result<Self, ConfigError> {
        Ok(Self {
            settings: Settings::from_env(&app.config.env)?,
            scheduler: aws_sdk_scheduler::Client::new(&app.aws),
        })
    }
}

/// Handles one request with a service built for it (the dev host's entry point; on
/// Lambda, `main` builds the service once and calls [`handle_with`]).
pub async fn handle(app: &App, req: Request) -> Result<Response<Body>, Infallible> {
    match Service::new(app) {
        Ok(service) => handle_with(app, &service, req).await,
        Err(e) => http::serve(req, |_, _| async move { Err(ApiError::internal(e)) }).await,
    }
}

/// Handles one HTTP API request routed to this function.
pub async fn handle_with(
    app: &App,
    service: &Service,
    req: Request,
) -> Result<Response<Body>, Infallible> {
    http::serve(req, |req, meta| route(app, service, req, meta)).await
}

/// Everything a route needs about the call.
pub(crate) struct Call<'a> {
    pub app: &'a App,
    pub service: &'a Service,
    pub req: Request,
    pub meta: RequestMeta,
    pub who: Principal,
}

impl Call<'_> {
    /// An audit entry for this call about config `id`.
    pub fn audit(&self, action: &str, id: &SyncConfigId) -> AuditEntry {
        AuditEntry::by(
            &self.who,
            &self.meta.request_id,
            action,
            format!("sync_config/{id}"),
        )
    }

    /// Records an attempt that changed nothing; a failure to record is logged.
    pub async fn audit_failure(&self, entry: AuditEntry) {
        if let Err(e) = self.app.audit.record(&entry).await {
            tracing::error!(error = %e, action = %entry.action, "audit write failed");
        }
    }

    /// The configs of the tenant.
    pub fn store(&self) -> store::ConfigStore {
        store::ConfigStore::new(self.app.table.clone())
    }

    /// The schedules of configs.
    pub fn schedules(&self) -> schedules::Schedules<'_> {
        schedules::Schedules::new(&self.service.scheduler, &self.service.settings)
    }

    /// The config named by the path, as stored; with `If-Match`, only at that version.
    pub async fn load(&self) -> Result<SyncConfig, ApiError> {
        let raw = http::path_param(&self.req, "id")?;
        let id = SyncConfigId::parse(&raw)
            .map_err(|e| ApiError::bad_request("invalid_id", e.to_string()))?;
        let c = self
            .store()
            .get(&self.who.tenant, &id)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::NotFound(format!("no sync config {id}")))?;
        if http::if_match(&self.req)?.is_some_and(|v| v != c.version) {
            return Err(ApiError::PreconditionFailed);
        }
        Ok(c)
    }
}

/// Write routes, by route key, with the audit action a refused member attempt records.
const WRITES: &[(&str, &str)] = &[
    ("POST /v1/sync/configs", "sync_config.create"),
    ("PATCH /v1/sync/configs/{id}", "sync_config.update"),
    ("DELETE /v1/sync/configs/{id}", "sync_config.delete"),
    ("POST /v1/sync/configs/{id}/pause", "sync_config.pause"),
    ("POST /v1/sync/configs/{id}/resume", "sync_config.resume"),
    (
        "POST /v1/sync/configs/{id}/field-mappings",
        "sync_config.mappings",
    ),
    (
        "PATCH /v1/sync/configs/{id}/field-mappings/{mapping_id}",
        "sync_config.mappings",
    ),
    (
        "DELETE /v1/sync/configs/{id}/field-mappings/{mapping_id}",
        "sync_config.mappings",
    ),
    (
        "POST /v1/sync/configs/{id}/auto-map",
        "sync_config.auto_map",
    ),
];

async fn route(
    app: &App,
    service: &Service,
    req: Request,
    meta: RequestMeta,
) -> Result<Response<Body>, ApiError> {
    let who = http::principal(&req)?;
    tracing::Span::current().record("tenant", who.tenant.as_str());
    let call = Call {
        app,
        service,
        req,
        meta,
        who,
    };
    if let Some((_, action)) = WRITES.iter().find(|(r, _)| *r == call.meta.route_key)
        && !call.who.is_admin()
    {
        let entry = AuditEntry::by(
            &call.who,
            &call.meta.request_id,
            action,
            call.req.uri().path().to_owned(),
        )
        .failed(Outcome::Denied, "forbidden");
        call.audit_failure(entry).await;
        http::require_admin(&call.who)?;
    }
    match call.meta.route_key.as_str() {
        "GET /v1/sync/configs" => configs::list(&call).await,
        "POST /v1/sync/configs" => configs::create(&call).await,
        "GET /v1/sync/configs/{id}" => configs::get(&call).await,
        "PATCH /v1/sync/configs/{id}" => configs::update(&call).await,
        "DELETE /v1/sync/configs/{id}" => configs::delete(&call).await,
        "POST /v1/sync/configs/{id}/pause" => configs::pause(&call).await,
        "POST /v1/sync/configs/{id}/resume" => configs::resume(&call).await,
        "GET /v1/sync/configs/{id}/field-mappings" => mappings::list(&call).await,
        "POST /v1/sync/configs/{id}/field-mappings" => mappings::add(&call).await,
        "PATCH /v1/sync/configs/{id}/field-mappings/{mapping_id}" => mappings::update(&call).await,
        "DELETE /v1/sync/configs/{id}/field-mappings/{mapping_id}" => mappings::delete(&call).await,
        "GET /v1/sync/configs/{id}/available-fields" => mappings::available(&call).await,
        "POST /v1/sync/configs/{id}/auto-map" => mappings::auto_map(&call).await,
        "POST /v1/sync/configs/{id}/preview" => preview::preview(&call).await,
        other => Err(ApiError::NotFound(format!("no route {other}"))),
    }
}

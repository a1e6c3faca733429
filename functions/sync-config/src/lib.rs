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
mod validate;

use std::convert::Infallible;

use conduit::app::App;
use conduit::audit::AuditEntry;
use conduit::config::ConfigError;
use conduit::domain::SyncConfigId;
use conduit::http::{self, Access, ApiError, Route};
use conduit::sync::config::{Configs, SyncConfig};
use conduit::sync::schedules;
use lambda_http::{Body, Request, Response};

pub use conduit::schedule::Settings;

/// What the function builds once per cold start besides the shared [`App`].
pub struct Service {
    settings: Settings,
    aws: aws_config::SdkConfig,
    /// Built at the first schedule call, not at start-up: most requests never need it,
    /// and an SDK client costs a cold start about a millisecond.
    scheduler: std::sync::OnceLock<aws_sdk_scheduler::Client>,
}

impl Service {
    /// The service of `app`: its schedule settings (from the function's environment)
    /// and, when first needed, a Scheduler client on its AWS configuration.
    pub fn new(app: &App) -> Result<Self, ConfigError> {
        Ok(Self {
            settings: Settings::from_env(&app.config.env)?,
            aws: app.aws.clone(),
            scheduler: std::sync::OnceLock::new(),
        })
    }

    fn scheduler(&self) -> &aws_sdk_scheduler::Client {
        self.scheduler
            .get_or_init(|| aws_sdk_scheduler::Client::new(&self.aws))
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
    http::serve_routes(app, service, ROUTES, req).await
}

/// Everything a route needs about the call.
pub(crate) type Call<'a> = http::Call<'a, Service>;

/// What the routes of this function read through the call.
pub(crate) trait ConfigCall {
    /// An audit entry for this call about config `id`.
    fn audit_config(&self, action: &str, id: &SyncConfigId) -> AuditEntry;
    /// The configs of the tenant.
    fn store(&self) -> Configs;
    /// The schedules of configs.
    fn schedules(&self) -> schedules::Schedules<'_>;
    /// The config named by the path, as stored; with `If-Match`, only at that version.
    async fn load(&self) -> Result<SyncConfig, ApiError>;
}

impl ConfigCall for Call<'_> {
    fn audit_config(&self, action: &str, id: &SyncConfigId) -> AuditEntry {
        self.audit(action, format!("sync_config/{id}"))
    }

    fn store(&self) -> Configs {
        Configs::new(self.app.table.clone())
    }

    fn schedules(&self) -> schedules::Schedules<'_> {
        schedules::Schedules::new(self.service.scheduler(), &self.service.settings)
    }

    async fn load(&self) -> Result<SyncConfig, ApiError> {
        let raw = self.path_param("id")?;
        let id = SyncConfigId::parse(&raw)
            .map_err(|e| ApiError::bad_request("invalid_id", e.to_string()))?;
        let c = self
            .store()
            .get(&self.who.tenant, &id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no sync config {id}")))?;
        if http::if_match(&self.req)?.is_some_and(|v| v != c.version) {
            return Err(ApiError::PreconditionFailed);
        }
        Ok(c)
    }
}

/// The function's routes: members read (a preview reads too); admins write, and a
/// member's attempt to write is refused and audited as the action named.
const ROUTES: &[Route<Service>] = &[
    Route {
        key: "GET /v1/sync/configs",
        access: Access::Member,
        handler: |c| Box::pin(configs::list(c)),
    },
    Route {
        key: "POST /v1/sync/configs",
        access: Access::Admin("sync_config.create"),
        handler: |c| Box::pin(configs::create(c)),
    },
    Route {
        key: "GET /v1/sync/configs/{id}",
        access: Access::Member,
        handler: |c| Box::pin(configs::get(c)),
    },
    Route {
        key: "PATCH /v1/sync/configs/{id}",
        access: Access::Admin("sync_config.update"),
        handler: |c| Box::pin(configs::update(c)),
    },
    Route {
        key: "DELETE /v1/sync/configs/{id}",
        access: Access::Admin("sync_config.delete"),
        handler: |c| Box::pin(configs::delete(c)),
    },
    Route {
        key: "POST /v1/sync/configs/{id}/pause",
        access: Access::Admin("sync_config.pause"),
        handler: |c| Box::pin(configs::pause(c)),
    },
    Route {
        key: "POST /v1/sync/configs/{id}/resume",
        access: Access::Admin("sync_config.resume"),
        handler: |c| Box::pin(configs::resume(c)),
    },
    Route {
        key: "GET /v1/sync/configs/{id}/webhook-endpoint",
        access: Access::Admin("sync_config.webhook_endpoint"),
        handler: |c| Box::pin(configs::webhook_endpoint(c)),
    },
    Route {
        key: "GET /v1/sync/configs/{id}/field-mappings",
        access: Access::Member,
        handler: |c| Box::pin(mappings::list(c)),
    },
    Route {
        key: "POST /v1/sync/configs/{id}/field-mappings",
        access: Access::Admin("sync_config.mappings"),
        handler: |c| Box::pin(mappings::add(c)),
    },
    Route {
        key: "PATCH /v1/sync/configs/{id}/field-mappings/{mapping_id}",
        access: Access::Admin("sync_config.mappings"),
        handler: |c| Box::pin(mappings::update(c)),
    },
    Route {
        key: "DELETE /v1/sync/configs/{id}/field-mappings/{mapping_id}",
        access: Access::Admin("sync_config.mappings"),
        handler: |c| Box::pin(mappings::delete(c)),
    },
    Route {
        key: "GET /v1/sync/configs/{id}/available-fields",
        access: Access::Member,
        handler: |c| Box::pin(mappings::available(c)),
    },
    Route {
        key: "POST /v1/sync/configs/{id}/auto-map",
        access: Access::Admin("sync_config.auto_map"),
        handler: |c| Box::pin(mappings::auto_map(c)),
    },
    Route {
        key: "POST /v1/sync/configs/{id}/preview",
        access: Access::Member,
        handler: |c| Box::pin(preview::preview(c)),
    },
];

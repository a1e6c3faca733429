//! The credentials function: the provider catalogue, tenants' own OAuth apps, and
//! API-key / basic-auth connections (create, list, read, update, delete, activate,
//! deactivate, test).
//!
//! Routing follows the HTTP API's route key, so template.yaml is the one routing
//! table. Members read; admins write the tenant's connections, and each user their
//! own personal ones (`GET /v1/me/connections`); every item key carries the caller's
//! tenant, so another tenant's ids simply are not found.

mod app_credentials;
mod catalogue;
mod connections;

use std::convert::Infallible;

use conduit::app::App;
use conduit::http::{self, Access, ApiError, Route};
use conduit::providers::Provider;
use lambda_http::{Body, Request, Response};

/// Handles one HTTP API request routed to this function.
pub async fn handle(app: &App, req: Request) -> Result<Response<Body>, Infallible> {
    http::serve_routes(app, &(), ROUTES, req).await
}

/// Everything a route needs about the call.
pub(crate) type Call<'a> = http::Call<'a>;

/// A catalogue provider named by the path.
pub(crate) fn path_provider(call: &Call<'_>) -> Result<&'static Provider, ApiError> {
    let id = call.path_param("provider")?;
    call.app.catalogue.provider(&id).ok_or_else(|| {
        ApiError::NotFound(format!(
            "no provider {:?}",
            id.chars().take(64).collect::<String>()
        ))
    })
}

/// The function's routes: members read; admins write, and a member's attempt to write
/// is refused and audited as the action named.
const ROUTES: &[Route] = &[
    Route {
        key: "GET /v1/providers",
        access: Access::Member,
        handler: |c| Box::pin(catalogue::list(c)),
    },
    Route {
        key: "GET /v1/providers/{provider}",
        access: Access::Member,
        handler: |c| Box::pin(catalogue::get(c)),
    },
    Route {
        key: "PUT /v1/providers/{provider}/app-credentials",
        access: Access::Admin("app_credentials.put"),
        handler: |c| Box::pin(app_credentials::put(c)),
    },
    Route {
        key: "GET /v1/providers/{provider}/app-credentials",
        access: Access::Member,
        handler: |c| Box::pin(app_credentials::get(c)),
    },
    Route {
        key: "DELETE /v1/providers/{provider}/app-credentials",
        access: Access::Admin("app_credentials.delete"),
        handler: |c| Box::pin(app_credentials::delete(c)),
    },
    Route {
        key: "POST /v1/connections",
        access: Access::Admin("connection.create"),
        handler: |c| Box::pin(connections::create(c)),
    },
    Route {
        key: "GET /v1/connections",
        access: Access::Member,
        handler: |c| Box::pin(connections::list(c)),
    },
    Route {
        key: "GET /v1/me/connections",
        access: Access::Member,
        handler: |c| Box::pin(connections::mine(c)),
    },
    Route {
        key: "POST /v1/connections/test",
        access: Access::Admin("connection.test"),
        handler: |c| Box::pin(connections::test_new(c)),
    },
    Route {
        key: "GET /v1/connections/{id}",
        access: Access::Member,
        handler: |c| Box::pin(connections::get(c)),
    },
    Route {
        key: "PATCH /v1/connections/{id}",
        // Admins for the tenant's connections, the owner for a personal one.
        access: Access::Member,
        handler: |c| Box::pin(connections::update(c)),
    },
    Route {
        key: "DELETE /v1/connections/{id}",
        // Admins for the tenant's connections, the owner for a personal one.
        access: Access::Member,
        handler: |c| Box::pin(connections::delete(c)),
    },
    Route {
        key: "POST /v1/connections/{id}/activate",
        // Admins for the tenant's connections, the owner for a personal one.
        access: Access::Member,
        handler: |c| Box::pin(connections::activate(c)),
    },
    Route {
        key: "POST /v1/connections/{id}/deactivate",
        // Admins for the tenant's connections, the owner for a personal one.
        access: Access::Member,
        handler: |c| Box::pin(connections::deactivate(c)),
    },
    Route {
        key: "POST /v1/connections/{id}/test",
        // Admins for the tenant's connections, the owner for a personal one.
        access: Access::Member,
        handler: |c| Box::pin(connections::test_existing(c)),
    },
];

//! The integrations function: outbound integration templates (read-only data), a
//! tenant's integrations and their per-assistant settings, a test render and a one-off
//! send, test events on the bus, the dispatch log with retries, and knowledge-base
//! imports with their documents.
//!
//! Routing follows the HTTP API's route key, so template.yaml is the one routing table.
//! Members read; admins write.

mod assistants;
mod dispatches;
mod kb;
mod routes;
mod validate;

use std::convert::Infallible;

use conduit::app::App;
use conduit::http::{self, Access, Route};
use lambda_http::{Body, Request, Response};

/// Handles one HTTP API request routed to this function.
pub async fn handle(app: &App, req: Request) -> Result<Response<Body>, Infallible> {
    http::serve_routes(app, &(), ROUTES, req).await
}

/// Everything a route needs about the call.
pub(crate) type Call<'a> = http::Call<'a>;

const ROUTES: &[Route] = &[
    Route {
        key: "GET /v1/integration-templates",
        access: Access::Member,
        handler: |c| Box::pin(routes::templates(c)),
    },
    Route {
        key: "GET /v1/integration-templates/{provider}",
        access: Access::Member,
        handler: |c| Box::pin(routes::template(c)),
    },
    Route {
        key: "GET /v1/integrations",
        access: Access::Member,
        handler: |c| Box::pin(routes::list(c)),
    },
    Route {
        key: "POST /v1/integrations",
        access: Access::Admin("integration.create"),
        handler: |c| Box::pin(routes::create(c)),
    },
    Route {
        key: "GET /v1/integrations/{id}",
        access: Access::Member,
        handler: |c| Box::pin(routes::get(c)),
    },
    Route {
        key: "PUT /v1/integrations/{id}",
        access: Access::Admin("integration.update"),
        handler: |c| Box::pin(routes::update(c, routes::Mode::Replace)),
    },
    Route {
        key: "PATCH /v1/integrations/{id}",
        access: Access::Admin("integration.update"),
        handler: |c| Box::pin(routes::update(c, routes::Mode::Merge)),
    },
    Route {
        key: "DELETE /v1/integrations/{id}",
        access: Access::Admin("integration.delete"),
        handler: |c| Box::pin(routes::delete(c)),
    },
    Route {
        key: "POST /v1/integrations/{id}/test",
        access: Access::Admin("integration.test"),
        handler: |c| Box::pin(routes::test(c)),
    },
    Route {
        key: "POST /v1/integrations/{id}/send",
        access: Access::Admin("integration.send"),
        handler: |c| Box::pin(routes::send(c)),
    },
    Route {
        key: "GET /v1/integrations/{id}/logs",
        access: Access::Member,
        handler: |c| Box::pin(routes::logs(c)),
    },
    Route {
        key: "POST /v1/integrations/{id}/rotate-secret",
        access: Access::Admin("integration.rotate_secret"),
        handler: |c| Box::pin(routes::rotate_secret(c)),
    },
    Route {
        key: "GET /v1/assistants/{assistant_id}/integrations",
        access: Access::Member,
        handler: |c| Box::pin(assistants::get(c)),
    },
    Route {
        key: "PUT /v1/assistants/{assistant_id}/integrations",
        access: Access::Admin("assistant.integrations.update"),
        handler: |c| Box::pin(assistants::put(c)),
    },
    Route {
        key: "POST /v1/events",
        access: Access::Admin("event.publish"),
        handler: |c| Box::pin(dispatches::publish(c)),
    },
    Route {
        key: "GET /v1/dispatches",
        access: Access::Member,
        handler: |c| Box::pin(dispatches::list(c)),
    },
    Route {
        key: "GET /v1/dispatches/{id}",
        access: Access::Member,
        handler: |c| Box::pin(dispatches::get(c)),
    },
    Route {
        key: "POST /v1/dispatches/{id}/retry",
        access: Access::Admin("dispatch.retry"),
        handler: |c| Box::pin(dispatches::retry(c)),
    },
    Route {
        key: "POST /v1/integrations/{id}/import-kb",
        access: Access::Admin("kb.import"),
        handler: |c| Box::pin(kb::import(c)),
    },
    Route {
        key: "GET /v1/kb/sources/{integration_id}/status",
        access: Access::Member,
        handler: |c| Box::pin(kb::status(c)),
    },
    Route {
        key: "GET /v1/kb/documents",
        access: Access::Member,
        handler: |c| Box::pin(kb::list(c)),
    },
    Route {
        key: "GET /v1/kb/documents/{id}",
        access: Access::Member,
        handler: |c| Box::pin(kb::get(c)),
    },
];

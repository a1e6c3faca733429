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
use conduit::http::{self, Access, Route};
use lambda_http::{Body, Request, Response};

/// Handles one HTTP API request routed to this function.
pub async fn handle(app: &App, req: Request) -> Result<Response<Body>, Infallible> {
    http::serve_routes(app, &(), ROUTES, req).await
}

/// Everything a route needs about the call.
pub(crate) type Call<'a> = http::Call<'a>;

/// The function's routes: members read; admins write, and a member's attempt to write
/// is refused and audited as the action named.
const ROUTES: &[Route] = &[
    Route {
        key: "GET /v1/records/{entity}",
        access: Access::Member,
        handler: |c| Box::pin(routes::list(c)),
    },
    Route {
        key: "POST /v1/records/{entity}",
        access: Access::Admin("record.create"),
        handler: |c| Box::pin(routes::create(c)),
    },
    Route {
        key: "GET /v1/records/{entity}/{id}",
        access: Access::Member,
        handler: |c| Box::pin(routes::get(c)),
    },
    Route {
        key: "PUT /v1/records/{entity}/{id}",
        access: Access::Admin("record.update"),
        handler: |c| Box::pin(routes::update(c, routes::Mode::Replace)),
    },
    Route {
        key: "PATCH /v1/records/{entity}/{id}",
        access: Access::Admin("record.update"),
        handler: |c| Box::pin(routes::update(c, routes::Mode::Merge)),
    },
    Route {
        key: "DELETE /v1/records/{entity}/{id}",
        access: Access::Admin("record.delete"),
        handler: |c| Box::pin(routes::delete(c)),
    },
];

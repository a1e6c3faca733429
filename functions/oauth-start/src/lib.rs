//! The OAuth start function: `POST /v1/oauth/{provider}/start` `{label?, uses? | scopes?,
//! return_to, kind?, fields?, connection_id?}` → `{authorize_url, expires_in}`.
//!
//! Admins start the tenant's connections; any user starts their own personal one
//! (Google's Gmail and Calendar: one per user and kind, reconnected when it exists;
//! a member's start of anything else is refused and audited). The tenant's own app for
//! the provider is used, else the platform's,
//! else a 409 says to add app credentials. What is asked for follows the connection's
//! uses: `"uses": ["sync:contacts:bidirectional", "sync:companies:pull",
//! "action:log_call", "kb_import"]` asks for exactly the scopes the catalogue lists for
//! them (plus the identity scopes); no `uses` asks for the tenant app's scopes, else
//! the catalogue's default uses (sync of contacts and companies both ways); `scopes`
//! asks for explicit scopes the provider offers instead. A reconnect (`connection_id`)
//! asks for the connection's granted scopes and the new ones together. The flow (state
//! hash, sealed PKCE verifier, scopes, redirect URI, return_to) is stored for ten
//! minutes.

use std::convert::Infallible;

use conduit::app::App;
use conduit::http::{self, Access, ApiError, Call, Route};
use conduit::oauth::connect::{self, StartBody};
use conduit::oauth::flow::FLOW_TTL;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde_json::json;

/// Handles one HTTP API request routed to this function.
pub async fn handle(app: &App, req: Request) -> Result<Response<Body>, Infallible> {
    http::serve_routes(app, &(), ROUTES, req).await
}

/// The function's one route: who may start what is the flow's to say (a member may
/// start only a personal connection; refusals are audited).
const ROUTES: &[Route] = &[Route {
    key: "POST /v1/oauth/{provider}/start",
    access: Access::Member,
    handler: |c| Box::pin(start(c)),
}];

async fn start(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let provider = call.path_param("provider")?;
    connect::may_start(call.app, &call.who, &call.meta.request_id, &provider).await?;
    let body: StartBody = http::json_body(&call.req)?;
    let authorize_url =
        connect::start(call.app, &call.who, &call.meta.request_id, &provider, body).await?;
    http::json(
        StatusCode::OK,
        &json!({ "authorize_url": authorize_url, "expires_in": FLOW_TTL.whole_seconds() }),
    )
}

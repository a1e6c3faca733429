//! The OAuth start function: `POST /v1/oauth/{provider}/start` `{label?, uses? | scopes?,
//! return_to, kind?, fields?, connection_id?}` → `{authorize_url, expires_in}`.
//!
//! Admins only. The tenant's own app for the provider is used, else the platform's,
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
use conduit::audit::{AuditEntry, Outcome};
use conduit::http::{self, ApiError, RequestMeta};
use conduit::oauth::connect::{self, StartBody};
use conduit::oauth::flow::FLOW_TTL;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, Response};
use serde_json::json;

/// Handles one HTTP API request routed to this function.
pub async fn handle(app: &App, req: Request) -> Result<Response<Body>, Infallible> {
    http::serve(req, |req, meta| route(app, req, meta)).await
}

async fn route(app: &App, req: Request, meta: RequestMeta) -> Result<Response<Body>, ApiError> {
    let who = http::principal(&req)?;
    tracing::Span::current().record("tenant", who.tenant.as_str());
    let provider = http::path_param(&req, "provider")?;
    if !who.is_admin() {
        let entry = AuditEntry::by(
            &who,
            &meta.request_id,
            "oauth.start",
            format!("provider/{provider}"),
        )
        .failed(Outcome::Denied, "forbidden");
        if let Err(e) = app.audit.record(&entry).await {
            tracing::error!(error = %e, "audit write failed");
        }
        http::require_admin(&who)?;
    }
    let body: StartBody = http::json_body(&req)?;
    let authorize_url = connect::start(app, &who, &meta.request_id, &provider, body).await?;
    http::json(
        StatusCode::OK,
        &json!({ "authorize_url": authorize_url, "expires_in": FLOW_TTL.whole_seconds() }),
    )
}

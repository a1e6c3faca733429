//! `GET /v1/providers` and `GET /v1/providers/{provider}`: the catalogue, with the
//! form fields the dashboard renders, and where the tenant's OAuth app comes from.

use conduit::http::{self, ApiError};
use conduit::providers::AuthType;
use lambda_http::http::StatusCode;
use lambda_http::{Body, Response};
use serde_json::json;

use crate::Call;

/// Every provider.
pub async fn list(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    http::query(&call.req, &[])?;
    http::json(
        StatusCode::OK,
        &json!({ "providers": call.app.catalogue.providers }),
    )
}

/// One provider; OAuth providers also say whose app a connection would use.
pub async fn get(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let provider = crate::path_provider(call)?;
    let mut body = json!({ "provider": provider });
    if provider.auth.iter().any(|m| m.kind == AuthType::Oauth2) {
        let tenant_app = crate::app_credentials::store(call)
            .get(&call.who.tenant, &provider.id)
            .await?;
        let source = if tenant_app.is_some() {
            "tenant"
        } else {
            match call.app.platform.oauth_app(&provider.id).await {
                Ok(Some(_)) => "platform",
                Ok(None) => "none",
                Err(e) => {
                    tracing::warn!(error = %e, "platform secret unavailable");
                    "unknown"
                }
            }
        };
        body["oauth_app"] = json!({ "source": source });
    }
    http::json(StatusCode::OK, &body)
}

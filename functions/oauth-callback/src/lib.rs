//! The OAuth callback function: `GET /v1/oauth/{provider}/callback?code&state` — public
//! (the provider sends the browser here, without a JWT).
//!
//! The state is consumed exactly once; the browser is redirected only to the flow's
//! stored, allow-listed `return_to` (`status=connected&connection_id=…` or
//! `status=error&reason=…`). Without a valid flow there is nowhere safe to send it,
//! so it gets a small error page. Nothing from the query is ever logged.

use std::collections::BTreeMap;
use std::convert::Infallible;

use conduit::app::App;
use conduit::http::{self, ApiError, RequestMeta};
use conduit::oauth::connect::{self, Finish};
use lambda_http::http::{StatusCode, header};
use lambda_http::{Body, Request, Response};

/// Handles one HTTP API request routed to this function.
pub async fn handle(app: &App, req: Request) -> Result<Response<Body>, Infallible> {
    http::serve(req, |req, meta| route(app, req, meta)).await
}

/// The query parameters providers send back, parsed leniently (providers add their own
/// parameters) but bounded.
fn query(req: &Request) -> Result<BTreeMap<String, String>, ApiError> {
    let raw = req.uri().query().unwrap_or("");
    if raw.len() > 8192 {
        return Err(ApiError::bad_request(
            "query_too_long",
            "the query string is too long",
        ));
    }
    let mut out = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(raw.as_bytes()) {
        if out.len() >= 32 {
            return Err(ApiError::bad_request(
                "too_many_parameters",
                "too many query parameters",
            ));
        }
        // A repeated parameter is ambiguous: refuse rather than pick one.
        if out.insert(k.into_owned(), v.into_owned()).is_some() {
            return Err(ApiError::bad_request(
                "repeated_parameter",
                "a query parameter is repeated",
            ));
        }
    }
    Ok(out)
}

async fn route(app: &App, req: Request, meta: RequestMeta) -> Result<Response<Body>, ApiError> {
    let provider = http::path_param(&req, "provider")?;
    let q = query(&req)?;
    match connect::finish(app, &provider, &q, &meta.request_id).await? {
        Finish::Redirect(location) => Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, location)
            .header(header::CACHE_CONTROL, "no-store")
            .header(header::REFERRER_POLICY, "no-referrer")
            .body(Body::Empty)
            .map_err(ApiError::internal),
        Finish::Invalid { code, message } => Response::builder()
            .status(StatusCode::BAD_REQUEST)
            .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
            .header(header::CACHE_CONTROL, "no-store")
            .header(header::REFERRER_POLICY, "no-referrer")
            .header("x-error-code", code)
            .body(Body::Text(format!(
                "<!doctype html><meta charset=utf-8><title>Connection failed</title>\
                 <h1>Connection failed</h1><p>{message}</p>"
            )))
            .map_err(ApiError::internal),
    }
}

//! The HTTP layer over `lambda_http`: who is calling (from the HTTP API's JWT
//! authorizer claims), JSON bodies with a size limit, one error type and the one place
//! that maps it to a status and the `{"error":{"code","message"}}` body, and the
//! request id on every response and log line.

use std::collections::BTreeMap;
use std::time::Instant;

use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::domain::{Principal, Role, TenantId, UserId};
use crate::providers::FieldError;

/// The largest JSON body accepted.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// The JWT claim naming the caller's tenant.
pub const CLAIM_TENANT: &str = "tenant_id";
/// The JWT claim naming the caller's role (`admin` or `member`).
pub const CLAIM_ROLE: &str = "role";

/// Every way a request can fail, each with its status and stable code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed (400).
    #[error("{message}")]
    BadRequest {
        /// Stable machine-readable code.
        code: &'static str,
        /// What is wrong, safe to show.
        message: String,
        /// Per-field problems.
        details: Vec<FieldError>,
    },
    /// No usable identity (401).
    #[error("missing or invalid identity")]
    Unauthenticated,
    /// The caller's role may not do this (403).
    #[error("{0}")]
    Forbidden(String),
    /// Nothing at this address for this tenant (404).
    #[error("{0}")]
    NotFound(String),
    /// The state forbids it (409).
    #[error("{message}")]
    Conflict {
        /// Stable code.
        code: &'static str,
        /// What conflicts.
        message: String,
    },
    /// The state forbids it (409), with members saying how to get past it (the
    /// missing scopes and the reconnect call).
    #[error("{message}")]
    ConflictWith {
        /// Stable code.
        code: &'static str,
        /// What conflicts.
        message: String,
        /// Extra members of the error object.
        extra: serde_json::Map<String, serde_json::Value>,
    },
    /// If-Match did not match (412).
    #[error("the resource changed since it was read; fetch it again")]
    PreconditionFailed,
    /// Body over the limit (413).
    #[error("request body exceeds {MAX_BODY_BYTES} bytes")]
    PayloadTooLarge,
    /// Not JSON (415).
    #[error("request body must be application/json")]
    UnsupportedMediaType,
    /// Well-formed but refused (422), e.g. credentials the provider rejects.
    #[error("{message}")]
    Unprocessable {
        /// Stable code.
        code: &'static str,
        /// Why.
        message: String,
    },
    /// The provider failed or could not be reached (502).
    #[error("{message}")]
    BadGateway {
        /// Stable code.
        code: &'static str,
        /// What failed, without provider bodies.
        message: String,
    },
    /// Something of ours failed (500); the cause is logged, not returned.
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    /// A 400 with a code and message.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
            details: Vec::new(),
        }
    }

    /// A 400 listing per-field problems.
    pub fn invalid_fields(details: Vec<FieldError>) -> Self {
        let summary: Vec<String> = details
            .iter()
            .map(|d| format!("{}: {}", d.field, d.message))
            .collect();
        Self::BadRequest {
            code: "invalid_fields",
            message: summary.join("; "),
            details,
        }
    }

    /// A 500 whose cause is logged.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self::Internal(cause.to_string())
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict { .. } | Self::ConflictWith { .. } => StatusCode::CONFLICT,
            Self::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. }
            | Self::Conflict { code, .. }
            | Self::ConflictWith { code, .. }
            | Self::Unprocessable { code, .. }
            | Self::BadGateway { code, .. } => code,
            Self::Unauthenticated => "unauthenticated",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::PreconditionFailed => "precondition_failed",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::Internal(_) => "internal",
        }
    }

    fn body(&self) -> serde_json::Value {
        let mut error = serde_json::json!({ "code": self.code(), "message": self.to_string() });
        if let Self::BadRequest { details, .. } = self
            && !details.is_empty()
        {
            error["details"] = serde_json::json!(details);
        }
        if let Self::ConflictWith { extra, .. } = self {
            for (k, v) in extra {
                error[k] = v.clone();
            }
        }
        serde_json::json!({ "error": error })
    }
}

/// Facts about the current request.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    /// API Gateway's request id (or a fresh one).
    pub request_id: String,
    /// The matched route, e.g. `GET /v1/connections/{id}`.
    pub route_key: String,
}

impl RequestMeta {
    /// Reads the request id and route key from the request context.
    pub fn of(req: &Request) -> Self {
        let (request_id, route_key) = match req.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(ctx)) => {
                (ctx.request_id.clone(), ctx.route_key.clone())
            }
            _ => (None, None),
        };
        Self {
            request_id: request_id
                .filter(|id| !id.is_empty() && id.len() <= 128)
                .unwrap_or_else(|| ulid::Ulid::new().to_string()),
            route_key: route_key
                .unwrap_or_else(|| format!("{} {}", req.method(), req.uri().path())),
        }
    }
}

/// The caller, from the JWT authorizer's claims. Missing or malformed claims are a 401.
pub fn principal(req: &Request) -> Result<Principal, ApiError> {
    let claims = match req.request_context_ref() {
        Some(ctx) => ctx
            .authorizer()
            .and_then(|a| a.jwt.as_ref())
            .map(|j| &j.claims),
        None => None,
    }
    .ok_or(ApiError::Unauthenticated)?;
    let get = |name: &str| {
        claims
            .get(name)
            .map(String::as_str)
            .ok_or(ApiError::Unauthenticated)
    };
    Ok(Principal {
        tenant: TenantId::parse(get(CLAIM_TENANT)?).map_err(|_| ApiError::Unauthenticated)?,
        user: UserId::parse(get("sub")?).map_err(|_| ApiError::Unauthenticated)?,
        role: Role::parse(get(CLAIM_ROLE)?).map_err(|_| ApiError::Unauthenticated)?,
    })
}

/// Fails with 403 unless the caller is an admin of their tenant.
pub fn require_admin(p: &Principal) -> Result<(), ApiError> {
    if p.is_admin() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(
            "this action needs the admin role".into(),
        ))
    }
}

/// A path parameter the route declares.
pub fn path_param(req: &Request, name: &str) -> Result<String, ApiError> {
    req.path_parameters_ref()
        .and_then(|p| p.first(name))
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::bad_request(
                "missing_path_parameter",
                format!("missing path parameter {name}"),
            )
        })
}

/// The query string as a map; a parameter given twice is a 400.
pub fn query(req: &Request, allowed: &[&str]) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    if let Some(q) = req.query_string_parameters_ref() {
        for (k, _) in q.iter() {
            if !allowed.contains(&k) {
                return Err(ApiError::bad_request(
                    "unknown_query_parameter",
                    format!(
                        "unknown query parameter {:?}; expected one of: {}",
                        k.chars().take(64).collect::<String>(),
                        allowed.join(", ")
                    ),
                ));
            }
            let all = q.all(k).unwrap_or_default();
            if all.len() > 1 {
                return Err(ApiError::bad_request(
                    "repeated_query_parameter",
                    format!("query parameter {k} given twice"),
                ));
            }
            if let Some(v) = all.first() {
                out.insert(k.to_owned(), (*v).to_owned());
            }
        }
    }
    Ok(out)
}

/// The `If-Match` version, when the caller sent one (`"3"` or `3`).
pub fn if_match(req: &Request) -> Result<Option<u64>, ApiError> {
    match req.headers().get(header::IF_MATCH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .map(|s| s.trim().trim_start_matches("W/").trim_matches('"'))
            .and_then(|s| s.parse().ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError::bad_request("invalid_if_match", "If-Match must be a version number")
            }),
    }
}

/// Parses a JSON body: at most 256 KiB, application/json, every field known and typed.
/// Error messages name the field but never repeat the value sent (it may be a secret).
pub fn json_body<T: DeserializeOwned>(req: &Request) -> Result<T, ApiError> {
    let bytes: &[u8] = req.body().as_ref();
    if bytes.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge);
    }
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
        if !ct.starts_with("application/json") {
            return Err(ApiError::UnsupportedMediaType);
        }
    }
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "empty_body",
            "a JSON body is required",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = sanitize_serde_message(&inner.to_string());
        let message = if path == "." || path.is_empty() {
            message
        } else {
            format!("{path}: {message}")
        };
        ApiError::bad_request("invalid_body", message)
    })
}

/// serde's messages quote the offending value (`invalid type: string "hunter2"`);
/// keep the kind, drop the value, and drop the line/column suffix.
fn sanitize_serde_message(msg: &str) -> String {
    let msg = match msg.rfind(" at line ") {
        Some(i) => &msg[..i],
        None => msg,
    };
    for prefix in ["invalid type: ", "invalid value: ", "invalid length "] {
        if let Some(rest) = msg.strip_prefix(prefix) {
            let expected = rest.find(", expected").map(|i| &rest[i..]).unwrap_or("");
            let kind = rest.split([' ', ',']).next().unwrap_or("value");
            return format!(
                "{}{kind}{expected}",
                prefix.trim_end_matches(' ').to_owned() + " "
            );
        }
    }
    if msg.starts_with("unknown variant") {
        let expected = msg.find(", expected").map(|i| &msg[i + 2..]).unwrap_or("");
        return format!("unknown variant; {expected}");
    }
    msg.to_owned()
}

/// A JSON response.
pub fn json<T: Serialize>(status: StatusCode, body: &T) -> Result<Response<Body>, ApiError> {
    let bytes = serde_json::to_vec(body).map_err(ApiError::internal)?;
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::Binary(bytes))
        .map_err(ApiError::internal)
}

/// A JSON response carrying the item's version as its ETag.
pub fn json_versioned<T: Serialize>(
    status: StatusCode,
    body: &T,
    version: u64,
) -> Result<Response<Body>, ApiError> {
    let mut resp = json(status, body)?;
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    Ok(resp)
}

/// A 204.
pub fn no_content() -> Result<Response<Body>, ApiError> {
    Response::builder()
        .status(StatusCode::NO_CONTENT)
        .body(Body::Empty)
        .map_err(ApiError::internal)
}

fn error_response(err: &ApiError) -> Response<Body> {
    let bytes = serde_json::to_vec(&err.body()).unwrap_or_default();
    let mut resp = Response::new(Body::Binary(bytes));
    *resp.status_mut() = err.status();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Runs one request through `handler` inside a span carrying the request id and
/// route; maps errors to their responses, stamps `x-request-id`, and logs one line
/// with the outcome. Never fails: every error becomes a response.
pub async fn serve<F, Fut>(
    req: Request,
    handler: F,
) -> Result<Response<Body>, std::convert::Infallible>
where
    F: FnOnce(Request, RequestMeta) -> Fut,
    Fut: Future<Output = Result<Response<Body>, ApiError>>,
{
    let meta = RequestMeta::of(&req);
    let span = tracing::info_span!(
        "request",
        request_id = %meta.request_id,
        route = %meta.route_key,
        tenant = tracing::field::Empty
    );
    let started = Instant::now();
    let request_id = meta.request_id.clone();
    async move {
        let result = handler(req, meta).await;
        let mut resp = match result {
            Ok(resp) => resp,
            Err(err) => {
                match &err {
                    ApiError::Internal(cause) => {
                        tracing::error!(code = err.code(), cause = %cause, "request failed")
                    }
                    ApiError::BadGateway { .. } => {
                        tracing::warn!(code = err.code(), message = %err, "provider failed")
                    }
                    _ => tracing::info!(code = err.code(), "request refused"),
                }
                error_response(&err)
            }
        };
        if let Ok(v) = HeaderValue::from_str(&request_id) {
            resp.headers_mut().insert("x-request-id", v);
        }
        tracing::info!(
            status = resp.status().as_u16(),
            duration_ms = started.elapsed().as_millis() as u64,
            "request completed"
        );
        Ok(resp)
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_messages_lose_their_values() {
        let m = sanitize_serde_message(
            "invalid type: string \"hunter2\", expected u32 at line 1 column 9",
        );
        assert_eq!(m, "invalid type: string, expected u32");
        let m = sanitize_serde_message("invalid type: integer `42`, expected a string");
        assert_eq!(m, "invalid type: integer, expected a string");
        let m = sanitize_serde_message(
            "unknown field `bogus`, expected one of `a`, `b` at line 1 column 3",
        );
        assert_eq!(m, "unknown field `bogus`, expected one of `a`, `b`");
        let m = sanitize_serde_message("unknown variant `s3cr3t`, expected `a` or `b`");
        assert!(!m.contains("s3cr3t"), "{m}");
    }

    #[test]
    fn errors_render_the_documented_body() {
        let e = ApiError::bad_request("invalid_body", "label: too long");
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            e.body(),
            serde_json::json!({"error": {"code": "invalid_body", "message": "label: too long"}})
        );
        let e = ApiError::internal("dynamo exploded");
        assert_eq!(e.body()["error"]["message"], "internal error");
    }
}

//! The HTTP layer over `lambda_http`: who is calling (from the HTTP API's JWT
//! authorizer claims), JSON bodies with a size limit, one error type and the one place
//! that maps it to a status and the `{"error":{"code","message","request_id"}}` body,
//! the request id on every response and log line, and `Idempotency-Key` on every POST
//! of a route table.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::time::Instant;

use lambda_http::http::{HeaderValue, StatusCode, header};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::app::App;
use crate::audit::{AuditEntry, Outcome};
use crate::config::ClaimNames;
use crate::domain::{Principal, Role, TenantId, UserId};
use crate::providers::FieldError;
use crate::store::StoreError;

/// The largest JSON body accepted.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// The code of a write that lost a version race to another.
pub const CONCURRENT_UPDATE: &str = "concurrent_update";

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
    #[error(
        "the request body is larger than this route takes (256 KiB; mail with attachments 4 MiB)"
    )]
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
    /// The store stayed throttled or contended past its retries (503 with
    /// `Retry-After`): nothing was written, and the same request may succeed shortly.
    #[error("the service is busy; try again in a moment")]
    Unavailable {
        /// Seconds the caller should wait (the `Retry-After` header).
        retry_after: u32,
        /// What stayed busy, logged and never returned.
        cause: &'static str,
    },
}

/// An idempotency record that could not be read or written: the store's failure as
/// the store's, a sealed answer that did not open as ours.
impl From<crate::idempotency::IdempotencyError> for ApiError {
    fn from(e: crate::idempotency::IdempotencyError) -> Self {
        match e {
            crate::idempotency::IdempotencyError::Store(e) => e.into(),
            e => Self::internal(e),
        }
    }
}

/// Seconds a 503 asks the caller to wait: the store's own retries span about a
/// second, so one more second lets a throttled partition refill.
pub const RETRY_AFTER_SECS: u32 = 1;

/// The store's failures as answers: a throttle or conflict that outlasted the store's
/// retries is a 503 the caller may retry, a cursor the store refused (malformed,
/// another listing's or tenant's) is the caller's 400 `invalid_cursor`, anything else
/// is ours (500).
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Throttled => Self::unavailable("dynamodb throttled"),
            StoreError::Conflict => Self::unavailable("dynamodb transaction conflict"),
            StoreError::BadCursor => Self::bad_request(
                "invalid_cursor",
                "cursor is not one this listing gave; start again without it",
            ),
            e => Self::internal(e),
        }
    }
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

    /// A 409 `concurrent_update`: another write landed on the version this request
    /// read. A request that sent `If-Match` gets a 412 instead ([`serve_routes`]).
    pub fn concurrent_update(message: impl Into<String>) -> Self {
        Self::Conflict {
            code: CONCURRENT_UPDATE,
            message: message.into(),
        }
    }

    /// A 503 `unavailable` with `Retry-After`; `cause` is logged.
    pub fn unavailable(cause: &'static str) -> Self {
        Self::Unavailable {
            retry_after: RETRY_AFTER_SECS,
            cause,
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
            Self::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
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
            Self::Unavailable { .. } => "unavailable",
        }
    }

    /// The `{"error":{"code","message","request_id",…}}` body: the request id lets a
    /// caller quote the one request support should look up in the logs.
    fn body(&self, request_id: &str) -> serde_json::Value {
        let mut error = serde_json::json!({
            "code": self.code(),
            "message": self.to_string(),
            "request_id": request_id,
        });
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

/// The page size of a listing when the caller names none.
pub const DEFAULT_PAGE: i32 = 50;
/// The largest page size a listing accepts.
pub const MAX_PAGE: i32 = 200;

/// The `limit` query parameter of a listing: 1 to [`MAX_PAGE`], [`DEFAULT_PAGE`] when
/// absent; anything else is a 400 `invalid_limit`. Every listing pages alike (`limit`,
/// `cursor`, `next_cursor`).
pub fn page_limit(q: &BTreeMap<String, String>) -> Result<i32, ApiError> {
    match q.get("limit") {
        None => Ok(DEFAULT_PAGE),
        Some(l) => l
            .parse::<i32>()
            .ok()
            .filter(|l| (1..=MAX_PAGE).contains(l))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_limit",
                    format!("limit must be a whole number from 1 to {MAX_PAGE}"),
                )
            }),
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

/// The caller, from the JWT authorizer's claims, the tenant and role read from the
/// deployment's claim names. Missing or malformed claims are a 401.
pub fn principal(req: &Request, names: &ClaimNames) -> Result<Principal, ApiError> {
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
        tenant: TenantId::parse(get(&names.tenant)?).map_err(|_| ApiError::Unauthenticated)?,
        user: UserId::parse(get("sub")?).map_err(|_| ApiError::Unauthenticated)?,
        role: Role::parse(get(&names.role)?).map_err(|_| ApiError::Unauthenticated)?,
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

/// Parses a JSON body: at most 256 KiB, application/json, exactly one JSON object and
/// then only whitespace, every field known (at every depth) and typed; an array never
/// stands in for an object. Error messages name the field but never repeat the value
/// sent (it may be a secret).
pub fn json_body<T: DeserializeOwned>(req: &Request) -> Result<T, ApiError> {
    from_body(&body_object(req)?)
}

/// The body as one JSON object (the checks of [`json_body`] before typing), for routes
/// that look at its shape before choosing a type.
pub fn body_object(req: &Request) -> Result<serde_json::Value, ApiError> {
    body_object_up_to(req, MAX_BODY_BYTES)
}

/// [`json_body`] for a route that takes bodies up to `max` bytes rather than
/// [`MAX_BODY_BYTES`] (mail with attachments); larger is a 413.
pub fn json_body_up_to<T: DeserializeOwned>(req: &Request, max: usize) -> Result<T, ApiError> {
    from_body(&body_object_up_to(req, max)?)
}

fn body_object_up_to(req: &Request, max: usize) -> Result<serde_json::Value, ApiError> {
    let bytes: &[u8] = req.body().as_ref();
    if bytes.len() > max {
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
    let value = strict::parse(bytes).map_err(|e| {
        ApiError::bad_request("invalid_body", sanitize_serde_message(&e.to_string()))
    })?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "the body must be one JSON object",
        ));
    }
    Ok(value)
}

/// The body of a PATCH: as [`json_body`], and it must name at least one field (400
/// `empty_update` otherwise; the one rule for every PATCH route).
pub fn patch_body<T: DeserializeOwned>(req: &Request) -> Result<T, ApiError> {
    let body = body_object(req)?;
    if body.as_object().is_some_and(serde_json::Map::is_empty) {
        return Err(empty_update());
    }
    from_body(&body)
}

/// A PATCH that changes nothing it names (400 `empty_update`).
pub fn empty_update() -> ApiError {
    ApiError::bad_request(
        "empty_update",
        "a PATCH must name at least one field to change",
    )
}

/// Types a body [`body_object`] returned, strictly: an unknown key at any depth is a
/// 400 `invalid_fields` naming its path; any other mismatch a 400 `invalid_body`
/// naming the field.
pub fn from_body<T: DeserializeOwned>(value: &serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(strict::Strict(value)).map_err(|e| {
        let path = e.path().to_string();
        let path = (path != ".").then_some(path);
        let message = e.into_inner().to_string();
        if strict::is_unknown_key(&message) {
            // The path ends with the key itself (a key, never a value).
            return ApiError::invalid_fields(vec![FieldError {
                field: path
                    .map(|p| p.chars().take(200).collect())
                    .unwrap_or_else(|| "body".to_owned()),
                message: "unknown field".into(),
            }]);
        }
        let message = sanitize_serde_message(&message);
        ApiError::bad_request(
            "invalid_body",
            match path {
                Some(p) => format!("{p}: {message}"),
                None => message,
            },
        )
    })
}

/// serde's messages quote the offending value (`invalid type: string "hunter2"`);
/// keep the kind, drop the value, and drop the line/column suffix.
pub(crate) fn sanitize_serde_message(msg: &str) -> String {
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

fn error_response(err: &ApiError, request_id: &str) -> Response<Body> {
    let bytes = serde_json::to_vec(&err.body(request_id)).unwrap_or_default();
    let mut resp = Response::new(Body::Binary(bytes));
    *resp.status_mut() = err.status();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let ApiError::Unavailable { retry_after, .. } = err {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after));
    }
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
                    ApiError::Unavailable { cause, .. } => {
                        tracing::warn!(code = err.code(), cause, "store busy past its retries")
                    }
                    _ => tracing::info!(code = err.code(), "request refused"),
                }
                error_response(&err, &request_id)
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

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Any member of the tenant (reads, previews).
    Member,
    /// Admins only; a member's attempt is a 403 audited as this action.
    Admin(&'static str),
}

/// What a route handler returns.
pub type Reply<'a> = Pin<Box<dyn Future<Output = Result<Response<Body>, ApiError>> + Send + 'a>>;

/// A route handler: `|call| Box::pin(module::handler(call))`.
pub type Handler<S> = for<'a> fn(&'a Call<'a, S>) -> Reply<'a>;

/// One route of a function: the HTTP API's route key (template.yaml is the one
/// routing table), who may call it, and its handler.
pub struct Route<S: 'static = ()> {
    /// The route key, e.g. `PATCH /v1/connections/{id}`.
    pub key: &'static str,
    /// Who may call it.
    pub access: Access,
    /// What answers it.
    pub handler: Handler<S>,
}

/// Everything a handler needs about the call: the shared context, the function's own
/// service, the request, its meta and the authenticated caller.
pub struct Call<'a, S = ()> {
    /// The shared context.
    pub app: &'a App,
    /// What the function built besides the shared context.
    pub service: &'a S,
    /// The request.
    pub req: Request,
    /// Its request id and route key.
    pub meta: RequestMeta,
    /// The caller (role already checked against the route's access).
    pub who: Principal,
}

impl<S> Call<'_, S> {
    /// An audit entry by this caller for this request.
    pub fn audit(&self, action: &str, target: impl Into<String>) -> AuditEntry {
        AuditEntry::by(&self.who, &self.meta.request_id, action, target)
    }

    /// Records an audit entry that is not part of a transaction (a refused or failed
    /// attempt, or an action already done); a failure to record is logged, not
    /// returned, since the action's outcome stands either way.
    pub async fn record(&self, entry: &AuditEntry) {
        if let Err(e) = self.app.audit.record(entry).await {
            tracing::error!(error = %e, action = %entry.action, "audit write failed");
        }
    }

    /// A path parameter the route declares.
    pub fn path_param(&self, name: &str) -> Result<String, ApiError> {
        path_param(&self.req, name)
    }
}

/// Serves one request from a function's route table: the span and outcome log
/// ([`serve`]), the caller (401 without one), the tenant on the span, the role check
/// with its denial audited (one entry per refused attempt), then the handler. A route
/// key not in the table is a 404. A request with `If-Match` that loses a version race
/// is a 412, like one whose If-Match was already stale when read. A POST with
/// `Idempotency-Key` runs once per key; the same request again replays its success.
pub async fn serve_routes<S: Sync>(
    app: &App,
    service: &S,
    routes: &'static [Route<S>],
    req: Request,
) -> Result<Response<Body>, std::convert::Infallible> {
    serve(req, |req, meta| async move {
        let who = principal(&req, &app.config.claims)?;
        tracing::Span::current().record("tenant", who.tenant.as_str());
        let route = routes
            .iter()
            .find(|r| r.key == meta.route_key)
            .ok_or_else(|| ApiError::NotFound(format!("no route {}", meta.route_key)))?;
        let call = Call {
            app,
            service,
            req,
            meta,
            who,
        };
        if let Access::Admin(action) = route.access
            && !call.who.is_admin()
        {
            let target: String = call.req.uri().path().chars().take(256).collect();
            call.record(
                &call
                    .audit(action, target)
                    .failed(Outcome::Denied, "forbidden"),
            )
            .await;
            require_admin(&call.who)?;
        }
        let ticket = match idempotency::begin(&call).await? {
            idempotency::Started::Run(ticket) => ticket,
            idempotency::Started::Replayed(resp) => return Ok(resp),
        };
        let outcome = match (route.handler)(&call).await {
            // One rule for If-Match losers: whether the version moved before the read or
            // between the read and the conditional write, the If-Match did not match.
            Err(ApiError::Conflict { code, .. })
                if code == CONCURRENT_UPDATE
                    && call.req.headers().contains_key(header::IF_MATCH) =>
            {
                Err(ApiError::PreconditionFailed)
            }
            other => other,
        };
        if let Some(ticket) = ticket {
            idempotency::finish(call.app, ticket, &outcome).await;
        }
        outcome
    })
    .await
}

/// `Idempotency-Key` on the POSTs of a route table (see [`crate::idempotency`]): the
/// same request again replays the first success, marked `Idempotent-Replayed: true`.
mod idempotency {
    use super::*;
    use crate::idempotency::{Answer, Begin, IdempotencyKey, REPLAYED_HEADERS, Scope, Ticket};

    /// The request header carrying the key.
    const HEADER: &str = "idempotency-key";
    /// The response header marking a replayed answer.
    const REPLAYED: &str = "idempotent-replayed";

    /// What to do with a request.
    pub(super) enum Started {
        /// Run it (holding the key's claim, if it sent one).
        Run(Option<Ticket>),
        /// Answer with the first request's answer.
        Replayed(Response<Body>),
    }

    /// The request's key, if it is a POST that sent one; a malformed key is a 400.
    fn key(req: &Request) -> Result<Option<IdempotencyKey>, ApiError> {
        if req.method() != lambda_http::http::Method::POST {
            return Ok(None);
        }
        let mut sent = req.headers().get_all(HEADER).iter();
        let Some(value) = sent.next() else {
            return Ok(None);
        };
        let invalid = |message: &str| ApiError::bad_request("invalid_idempotency_key", message);
        if sent.next().is_some() {
            return Err(invalid("Idempotency-Key given twice"));
        }
        let raw = value
            .to_str()
            .map_err(|_| invalid("Idempotency-Key must be printable ASCII"))?;
        IdempotencyKey::parse(raw).map(Some).map_err(invalid)
    }

    /// Claims the call's key, or answers for it: a replay, 422
    /// `idempotency_key_reused` (another request under the key) or 409
    /// `idempotency_in_flight` (the same request is running).
    pub(super) async fn begin<S>(call: &Call<'_, S>) -> Result<Started, ApiError> {
        let Some(key) = key(&call.req)? else {
            return Ok(Started::Run(None));
        };
        let scope = Scope {
            tenant: &call.who.tenant,
            route: &call.meta.route_key,
            key: &key,
        };
        let fingerprint = crate::idempotency::fingerprint(
            call.req.method().as_str(),
            &call.meta.route_key,
            call.req.uri().path(),
            call.req.uri().query().unwrap_or(""),
            call.req.body().as_ref(),
        );
        let store = crate::idempotency::Idempotency::new(call.app.table.clone());
        match store
            .begin(&call.app.envelope, &scope, &fingerprint)
            .await?
        {
            Begin::Claimed(ticket) => Ok(Started::Run(Some(ticket))),
            Begin::Replay(answer) => replay(answer).map(Started::Replayed),
            Begin::Reused => Err(ApiError::Unprocessable {
                code: "idempotency_key_reused",
                message: "this Idempotency-Key was used with another request; \
                          use a new key for a new request"
                    .into(),
            }),
            Begin::InFlight => Err(ApiError::Conflict {
                code: "idempotency_in_flight",
                message: "a request with this Idempotency-Key is still running; \
                          try again when it has finished"
                    .into(),
            }),
        }
    }

    fn replay(answer: Answer) -> Result<Response<Body>, ApiError> {
        let mut resp = Response::builder()
            .status(answer.status)
            .header(REPLAYED, "true");
        for (name, value) in &answer.headers {
            resp = resp.header(name.as_str(), value.as_str());
        }
        let body = match answer.body.is_empty() {
            true => Body::Empty,
            false => Body::Binary(answer.body),
        };
        resp.body(body).map_err(ApiError::internal)
    }

    /// Stores a success for replay, or gives the key back; a failure here is logged,
    /// since the request's own outcome stands either way (an unstored key frees itself
    /// when its lease ends).
    pub(super) async fn finish(
        app: &App,
        ticket: Ticket,
        outcome: &Result<Response<Body>, ApiError>,
    ) {
        let store = crate::idempotency::Idempotency::new(app.table.clone());
        let done = match outcome {
            Ok(resp) if resp.status().is_success() => {
                let answer = Answer {
                    status: resp.status().as_u16(),
                    headers: REPLAYED_HEADERS
                        .iter()
                        .filter_map(|h| {
                            let v = resp.headers().get(*h)?.to_str().ok()?;
                            Some(((*h).to_owned(), v.to_owned()))
                        })
                        .collect(),
                    body: resp.body().as_ref().to_vec(),
                };
                store.complete(&app.envelope, ticket, &answer).await
            }
            _ => store.release(ticket).await,
        };
        if let Err(e) = done {
            tracing::error!(error = %e, "idempotency key not recorded");
        }
    }
}

/// A deserializer over a parsed body that is stricter than serde's defaults: a struct
/// or map only from a JSON object (serde would take a positional array), and a key a
/// struct would skip is an error (whether or not the type says `deny_unknown_fields`).
/// serde buffers `#[serde(flatten)]` fields and internally tagged enums past this
/// check, so request types use neither (see `Frequency`, read through a plain struct).
mod strict {
    use serde::de::{self, DeserializeSeed, Error as _, IntoDeserializer, Visitor};
    use serde_json::{Error, Map, Value};

    /// The message of an unknown key found by [`StrictMap`].
    const SKIPPED: &str = "unknown field";

    /// Whether `message` reports an unknown key: serde's `deny_unknown_fields` message
    /// or ours.
    pub(super) fn is_unknown_key(message: &str) -> bool {
        message == SKIPPED || message.starts_with("unknown field `")
    }

    /// Parses exactly one JSON document (only whitespace after it) whose objects never
    /// repeat a key: `{"label":"a","label":"b"}` is ambiguous, so it is refused rather
    /// than read as its last value.
    pub(super) fn parse(bytes: &[u8]) -> Result<Value, Error> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        let value = de::Deserializer::deserialize_any(&mut de, Unique)?;
        de.end()?;
        Ok(value)
    }

    /// Builds a [`Value`], refusing a key given twice in one object.
    struct Unique;

    impl<'de> DeserializeSeed<'de> for Unique {
        type Value = Value;

        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Unique {
        type Value = Value;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON value")
        }

        fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }

        fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
            Ok(Value::from(v))
        }

        fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
            Ok(Value::from(v))
        }

        fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
            Ok(Value::from(v))
        }

        fn visit_str<E>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_owned()))
        }

        fn visit_string<E>(self, v: String) -> Result<Value, E> {
            Ok(Value::String(v))
        }

        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }

        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let mut out = Vec::new();
            while let Some(v) = seq.next_element_seed(Unique)? {
                out.push(v);
            }
            Ok(Value::Array(out))
        }

        fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut out = Map::new();
            while let Some(key) = map.next_key::<String>()? {
                let value = map.next_value_seed(Unique)?;
                if out.contains_key(&key) {
                    return Err(A::Error::custom(format!(
                        "duplicate key `{}`",
                        key.chars().take(64).collect::<String>()
                    )));
                }
                out.insert(key, value);
            }
            Ok(Value::Object(out))
        }
    }

    /// A JSON value read strictly.
    pub(super) struct Strict<'a>(pub &'a Value);

    fn unexpected(v: &Value) -> de::Unexpected<'_> {
        match v {
            Value::Null => de::Unexpected::Unit,
            Value::Bool(b) => de::Unexpected::Bool(*b),
            Value::Number(_) => de::Unexpected::Other("number"),
            Value::String(_) => de::Unexpected::Other("string"),
            Value::Array(_) => de::Unexpected::Seq,
            Value::Object(_) => de::Unexpected::Map,
        }
    }

    impl<'de> Strict<'de> {
        fn object<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            match self.0 {
                Value::Object(m) => visitor.visit_map(StrictMap::new(m)),
                other => Err(Error::invalid_type(unexpected(other), &visitor)),
            }
        }

        fn array<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            match self.0 {
                Value::Array(a) => visitor.visit_seq(StrictSeq(a.iter())),
                other => Err(Error::invalid_type(unexpected(other), &visitor)),
            }
        }
    }

    impl<'de> de::Deserializer<'de> for Strict<'de> {
        type Error = Error;

        fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            match self.0 {
                Value::Object(_) => self.object(visitor),
                Value::Array(_) => self.array(visitor),
                other => other.deserialize_any(visitor),
            }
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            _fields: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, Error> {
            self.object(visitor)
        }

        fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            self.object(visitor)
        }

        fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            self.array(visitor)
        }

        fn deserialize_tuple<V: Visitor<'de>>(
            self,
            _len: usize,
            visitor: V,
        ) -> Result<V::Value, Error> {
            self.array(visitor)
        }

        fn deserialize_tuple_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            _len: usize,
            visitor: V,
        ) -> Result<V::Value, Error> {
            self.array(visitor)
        }

        fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            match self.0 {
                Value::Null => visitor.visit_none(),
                _ => visitor.visit_some(self),
            }
        }

        fn deserialize_newtype_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            visitor: V,
        ) -> Result<V::Value, Error> {
            visitor.visit_newtype_struct(self)
        }

        fn deserialize_enum<V: Visitor<'de>>(
            self,
            name: &'static str,
            variants: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, Error> {
            match self.0 {
                // A variant with data (`{"variant": …}`) has its data read strictly too.
                Value::Object(m) if m.len() == 1 => visitor.visit_enum(StrictEnum(m)),
                other => other.deserialize_enum(name, variants, visitor),
            }
        }

        fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            visitor.visit_unit()
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf unit unit_struct identifier
        }
    }

    /// What an unknown key's value reads as: an error.
    struct Skipped;

    impl<'de> de::Deserializer<'de> for Skipped {
        type Error = Error;

        fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Error> {
            Err(Error::custom(SKIPPED))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map struct enum identifier ignored_any
        }
    }

    struct StrictSeq<'a>(std::slice::Iter<'a, Value>);

    impl<'de> de::SeqAccess<'de> for StrictSeq<'de> {
        type Error = Error;

        fn next_element_seed<S: DeserializeSeed<'de>>(
            &mut self,
            seed: S,
        ) -> Result<Option<S::Value>, Error> {
            self.0
                .next()
                .map(|v| seed.deserialize(Strict(v)))
                .transpose()
        }

        fn size_hint(&self) -> Option<usize> {
            Some(self.0.len())
        }
    }

    struct StrictMap<'a> {
        entries: serde_json::map::Iter<'a>,
        value: Option<&'a Value>,
    }

    impl<'a> StrictMap<'a> {
        fn new(map: &'a Map<String, Value>) -> Self {
            Self {
                entries: map.iter(),
                value: None,
            }
        }
    }

    impl<'de> de::MapAccess<'de> for StrictMap<'de> {
        type Error = Error;

        fn next_key_seed<S: DeserializeSeed<'de>>(
            &mut self,
            seed: S,
        ) -> Result<Option<S::Value>, Error> {
            match self.entries.next() {
                Some((k, v)) => {
                    self.value = Some(v);
                    seed.deserialize(k.as_str().into_deserializer()).map(Some)
                }
                None => Ok(None),
            }
        }

        fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, Error> {
            // A derived struct reads a key it does not know as `IgnoredAny` and drops it;
            // nothing else in a request body asks for one, so this is the generic
            // unknown-key check.
            // Refused through the seed, so the error's path ends with the key.
            if std::any::type_name::<S>().contains("IgnoredAny") {
                return seed.deserialize(Skipped);
            }
            let value = self
                .value
                .take()
                .ok_or_else(|| Error::custom("value asked for before its key"))?;
            seed.deserialize(Strict(value))
        }

        fn size_hint(&self) -> Option<usize> {
            Some(self.entries.len())
        }
    }

    struct StrictEnum<'a>(&'a Map<String, Value>);

    impl<'de> de::EnumAccess<'de> for StrictEnum<'de> {
        type Error = Error;
        type Variant = Strict<'de>;

        fn variant_seed<S: DeserializeSeed<'de>>(
            self,
            seed: S,
        ) -> Result<(S::Value, Strict<'de>), Error> {
            let (k, v) = self
                .0
                .iter()
                .next()
                .ok_or_else(|| Error::custom("an enum variant needs a name"))?;
            let variant = seed.deserialize(k.as_str().into_deserializer())?;
            Ok((variant, Strict(v)))
        }
    }

    impl<'de> de::VariantAccess<'de> for Strict<'de> {
        type Error = Error;

        fn unit_variant(self) -> Result<(), Error> {
            match self.0 {
                Value::Null => Ok(()),
                other => Err(Error::invalid_type(unexpected(other), &"unit variant")),
            }
        }

        fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, Error> {
            seed.deserialize(self)
        }

        fn tuple_variant<V: Visitor<'de>>(
            self,
            _len: usize,
            visitor: V,
        ) -> Result<V::Value, Error> {
            self.array(visitor)
        }

        fn struct_variant<V: Visitor<'de>>(
            self,
            _fields: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, Error> {
            self.object(visitor)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sample list-connections event with its JWT claims replaced by `claims`.
    fn request_with_claims(claims: serde_json::Value) -> Request {
        let text = include_str!("../../events/credentials/list-connections.json");
        let mut event: serde_json::Value = serde_json::from_str(text).unwrap();
        event["requestContext"]["authorizer"]["jwt"]["claims"] = claims;
        lambda_http::request::from_str(&event.to_string()).unwrap()
    }

    #[test]
    fn the_tenant_and_role_are_read_under_the_configured_claim_names() {
        let cognito = ClaimNames {
            tenant: "custom:tenant_id".into(),
            role: "custom:role".into(),
        };
        let req = request_with_claims(serde_json::json!({
            "sub": "u-1", "custom:tenant_id": "acme", "custom:role": "admin",
        }));
        let who = principal(&req, &cognito).unwrap();
        assert_eq!(who.tenant.as_str(), "acme");
        assert!(who.is_admin());
        // The default names find nothing in that token: no identity.
        assert!(matches!(
            principal(&req, &ClaimNames::default()),
            Err(ApiError::Unauthenticated)
        ));
        let plain = request_with_claims(serde_json::json!({
            "sub": "u-1", "tenant_id": "acme", "role": "member",
        }));
        assert!(
            !principal(&plain, &ClaimNames::default())
                .unwrap()
                .is_admin()
        );
        assert!(matches!(
            principal(&plain, &cognito),
            Err(ApiError::Unauthenticated)
        ));
    }

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

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        #[serde(default)]
        inner: Option<Inner>,
        #[serde(default)]
        list: Vec<Inner>,
        #[serde(default)]
        free: serde_json::Map<String, serde_json::Value>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        a: u32,
        #[serde(default)]
        denying: Option<Denying>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Denying {
        #[serde(default)]
        b: u32,
    }

    fn typed(v: serde_json::Value) -> Result<Outer, ApiError> {
        from_body(&v)
    }

    #[test]
    fn bodies_are_typed_strictly_at_every_depth() {
        use serde_json::json;
        let ok = typed(json!({"name": "x", "inner": {"a": 1}, "list": [{"a": 2}],
            "free": {"anything": [1, {"b": 2}]}}));
        assert!(ok.is_ok(), "{ok:?}");
        let details = |e: ApiError| match e {
            ApiError::BadRequest { code, details, .. } => (code, details),
            other => panic!("{other:?}"),
        };
        let (code, d) = details(typed(json!({"name": "x", "extra": 1})).unwrap_err());
        assert_eq!(code, "invalid_fields");
        assert_eq!(d[0].field, "extra");
        let (code, d) =
            details(typed(json!({"name": "x", "inner": {"a": 1, "b": 2}})).unwrap_err());
        assert_eq!(code, "invalid_fields");
        assert_eq!(d[0].field, "inner.b");
        let (_, d) = details(typed(json!({"name": "x", "list": [{"a": 1, "zz": 0}]})).unwrap_err());
        assert_eq!(d[0].field, "list[0].zz");
        let (_, d) = details(
            typed(json!({"name": "x", "inner": {"a": 1, "denying": {"c": 1}}})).unwrap_err(),
        );
        assert_eq!(d[0].field, "inner.denying.c");
        let e = typed(json!({"name": "x", "inner": [1]})).unwrap_err();
        assert_eq!(e.code(), "invalid_body");
        assert!(
            e.to_string().starts_with("inner: invalid type: sequence"),
            "{e}"
        );
        let e = from_body::<Outer>(&json!(["x"])).unwrap_err();
        assert_eq!(e.code(), "invalid_body");
    }

    #[test]
    fn a_body_is_one_json_object() {
        let req = |body: &str| {
            let mut r = Request::new(Body::Text(body.to_owned()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        };
        assert!(body_object(&req(" {\"a\": 1} \n")).is_ok());
        for bad in [
            "{\"a\": 1} xyz",
            "{\"a\": 1}{\"a\": 2}",
            "{\"a\": 1, \"a\": 2}",
            "{\"b\": {\"a\": 1, \"a\": 1}}",
            "[\"freshdesk\", \"api_key\"]",
            "\"text\"",
            "3",
            "null",
        ] {
            let e = body_object(&req(bad)).unwrap_err();
            assert_eq!(e.code(), "invalid_body", "{bad}");
            assert!(!e.to_string().contains("xyz") && !e.to_string().contains("freshdesk"));
        }
    }

    #[test]
    fn errors_render_the_documented_body() {
        let e = ApiError::bad_request("invalid_body", "label: too long");
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(
            e.body("req-1"),
            serde_json::json!({"error": {"code": "invalid_body", "message": "label: too long",
                "request_id": "req-1"}})
        );
        let e = ApiError::internal("dynamo exploded");
        assert_eq!(e.body("req-2")["error"]["message"], "internal error");
    }

    #[test]
    fn store_throttles_and_conflicts_are_503s_with_retry_after() {
        for (e, cause) in [
            (StoreError::Throttled, "dynamodb throttled"),
            (StoreError::Conflict, "dynamodb transaction conflict"),
        ] {
            let e = ApiError::from(e);
            assert!(
                matches!(e, ApiError::Unavailable { cause: c, retry_after: 1 } if c == cause),
                "{e:?}"
            );
            assert_eq!(e.status(), StatusCode::SERVICE_UNAVAILABLE);
            let resp = error_response(&e, "req-3");
            assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
            let body: serde_json::Value = serde_json::from_slice(resp.body().as_ref()).unwrap();
            assert_eq!(body["error"]["code"], "unavailable");
            assert_eq!(body["error"]["request_id"], "req-3");
            // What stayed busy is for the logs, not the caller.
            assert!(!body.to_string().contains("dynamodb"), "{body}");
        }
        // A store error wrapped by a domain error keeps its kind through `?`.
        let wrapped = crate::idempotency::IdempotencyError::Store(StoreError::Throttled);
        assert_eq!(
            ApiError::from(wrapped).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[test]
    fn other_store_failures_keep_their_answers() {
        let e = ApiError::from(StoreError::BadCursor);
        assert_eq!(e.status(), StatusCode::BAD_REQUEST);
        assert_eq!(e.code(), "invalid_cursor");
        for e in [
            StoreError::ConditionFailed,
            StoreError::Conversion("missing field `x`".into()),
            StoreError::Invalid("bad expression".into()),
            StoreError::Service("connection reset".into()),
        ] {
            let e = ApiError::from(e);
            assert_eq!(e.status(), StatusCode::INTERNAL_SERVER_ERROR, "{e:?}");
            let resp = error_response(&e, "req-4");
            assert!(resp.headers().get(header::RETRY_AFTER).is_none());
            assert_eq!(e.body("req-4")["error"]["message"], "internal error");
        }
    }
}

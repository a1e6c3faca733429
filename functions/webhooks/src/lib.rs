//! The webhooks function: provider webhooks in — public routes, no JWT — each request
//! verified before anything in it is trusted, a replay refused, then its events turned
//! into targeted pulls of the changed records (`conduit::sync::webhook`).
//!
//! - `POST /v1/webhooks/hubspot`: events of the platform's HubSpot app, signed with its
//!   client secret; the portal in each event finds the connections (of any tenant).
//! - `POST /v1/webhooks/pipedrive/{tenant}/{config}`: events of the webhooks Conduit
//!   created in Pipedrive for a realtime config (`conduit::sync::subscriptions`), with
//!   the HTTP basic credentials it set for them.
//! - `POST /v1/webhooks/hubspot/{tenant}`: events of a tenant's own HubSpot app
//!   (the target URL its admin sets in the app's webhook settings), signed with that
//!   app's client secret; only that tenant's connections are looked at.
//!
//! Answers: 200 `{"events","ignored","connections","configs","pulls_enqueued"}`;
//! 401 `webhook_signature_invalid` / `webhook_timestamp_stale` /
//! `webhook_signature_missing` / `webhook_credentials_invalid` / `webhook_replayed` /
//! `webhook_unknown_app`; 400
//! `webhook_malformed`; 413 past [`MAX_BODY_BYTES`]; 503 when the store or queue
//! failed (the provider sends the batch again). A refused request enqueues nothing and
//! is audited in the tenant's log (tenant routes) and logged with its reason, never
//! with its body or signature.

use std::convert::Infallible;

use conduit::app::App;
use conduit::audit::{AuditEntry, AuditLog, Outcome};
use conduit::connections::AppSource;
use conduit::domain::SyncConfigId;
use conduit::domain::TenantId;
use conduit::http::{self, ApiError, RequestMeta};
use conduit::oauth::connect::resolve_app;
use conduit::store::webhooks::WebhookStore;
use conduit::sync::config::Configs;
use conduit::sync::subscriptions;
use conduit::sync::webhook::{self, AccountChanges};
use conduit::webhooks::{WebhookError, hubspot};
use lambda_http::http::{HeaderMap, StatusCode, header};
use lambda_http::{Body, Request, Response};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

/// Largest body taken (HubSpot's batches of 100 events are far smaller).
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// How long a taken request is remembered (s): past HubSpot's 5-minute window a
/// replay is refused as stale anyway.
const SEEN_TTL_SECS: i64 = 600;

/// Handles one HTTP API request routed to this function.
pub async fn handle(app: &App, req: Request) -> Result<Response<Body>, Infallible> {
    http::serve(req, |req, meta| route(app, req, meta)).await
}

/// A refusal: its status, stable code and message.
struct Refusal {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl Refusal {
    fn of(e: &WebhookError) -> Self {
        let (status, code) = match e {
            WebhookError::MissingHeader(_) => {
                (StatusCode::UNAUTHORIZED, "webhook_signature_missing")
            }
            WebhookError::BadTimestamp | WebhookError::Stale(_) => {
                (StatusCode::UNAUTHORIZED, "webhook_timestamp_stale")
            }
            WebhookError::BadSignature => (StatusCode::UNAUTHORIZED, "webhook_signature_invalid"),
            WebhookError::BadCredentials => {
                (StatusCode::UNAUTHORIZED, "webhook_credentials_invalid")
            }
            WebhookError::Malformed(_) => (StatusCode::BAD_REQUEST, "webhook_malformed"),
        };
        Self {
            status,
            code,
            message: e.to_string(),
        }
    }

    fn unknown_app() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: "webhook_unknown_app",
            message: "no app of this route can verify the request".into(),
        }
    }

    fn replayed() -> Self {
        Self {
            status: StatusCode::UNAUTHORIZED,
            code: "webhook_replayed",
            message: "this request was received before".into(),
        }
    }

    fn response(&self, request_id: &str) -> Result<Response<Body>, ApiError> {
        json(
            self.status,
            &serde_json::json!({"error": {
                "code": self.code,
                "message": self.message,
                "request_id": request_id,
            }}),
        )
    }
}

fn json(status: StatusCode, body: &serde_json::Value) -> Result<Response<Body>, ApiError> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::Text(body.to_string()))
        .map_err(ApiError::internal)
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// The URI the provider called and signed: the API's public base URL, the path and
/// the query.
fn called_uri(app: &App, req: &Request) -> Result<String, ApiError> {
    let base = app
        .config
        .public_base_url
        .as_ref()
        .ok_or_else(|| ApiError::internal("CONDUIT_PUBLIC_BASE_URL is not set"))?;
    let mut uri = format!(
        "{}{}",
        base.as_str().trim_end_matches('/'),
        req.uri().path()
    );
    if let Some(q) = req.uri().query().filter(|q| !q.is_empty()) {
        uri.push('?');
        uri.push_str(q);
    }
    Ok(uri)
}

async fn audit_refusal(
    app: &App,
    tenant: Option<&TenantId>,
    meta: &RequestMeta,
    provider: &str,
    refusal: &Refusal,
) {
    tracing::warn!(provider, code = refusal.code, reason = %refusal.message, "webhook refused");
    let Some(tenant) = tenant else { return };
    let entry = AuditEntry::system(
        tenant,
        "webhooks",
        &meta.request_id,
        "webhook.receive",
        format!("webhook/{provider}"),
    )
    .failed(Outcome::Denied, refusal.code)
    .detail("reason", &refusal.message);
    if let Err(e) = AuditLog::new(app.table.clone()).record(&entry).await {
        tracing::error!(error = %e, "auditing a refused webhook failed");
    }
}

async fn route(app: &App, req: Request, meta: RequestMeta) -> Result<Response<Body>, ApiError> {
    if meta.route_key == "POST /v1/webhooks/pipedrive/{tenant}/{config}" {
        return pipedrive(app, req, meta).await;
    }
    let provider = "hubspot";
    let tenant = match meta.route_key.as_str() {
        "POST /v1/webhooks/hubspot" => None,
        "POST /v1/webhooks/hubspot/{tenant}" => {
            // An unknown or malformed tenant is refused like a bad signature: the
            // route says nothing of which tenants exist.
            match TenantId::parse(&http::path_param(&req, "tenant")?) {
                Ok(t) => Some(t),
                Err(_) => {
                    let refusal = Refusal::unknown_app();
                    audit_refusal(app, None, &meta, provider, &refusal).await;
                    return refusal.response(&meta.request_id);
                }
            }
        }
        other => return Err(ApiError::NotFound(format!("no route {other}"))),
    };
    if let Some(t) = &tenant {
        tracing::Span::current().record("tenant", t.as_str());
    }
    let body: &[u8] = req.body().as_ref();
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge);
    }
    let secret = match &tenant {
        Some(t) => resolve_app(app, t, provider, Some(AppSource::Tenant))
            .await?
            .map(|c| c.client_secret),
        None => app
            .platform
            .oauth_app(provider)
            .await
            .map_err(ApiError::internal)?
            .map(|p| p.client_secret),
    };
    let Some(secret) = secret else {
        let refusal = Refusal::unknown_app();
        audit_refusal(app, tenant.as_ref(), &meta, provider, &refusal).await;
        return refusal.response(&meta.request_id);
    };
    let uri = called_uri(app, &req)?;
    let now = now_ms();
    let headers = req.headers();
    let signature = header_str(headers, hubspot::SIGNATURE);
    if let Err(e) = hubspot::verify(
        secret.expose_secret().as_bytes(),
        req.method().as_str(),
        &uri,
        body,
        header_str(headers, hubspot::TIMESTAMP),
        signature,
        now,
    ) {
        let refusal = Refusal::of(&e);
        audit_refusal(app, tenant.as_ref(), &meta, provider, &refusal).await;
        return refusal.response(&meta.request_id);
    }
    // Verified: the signature (over method, URI, body and timestamp) names this exact
    // request; a second sight of it is a replay.
    let digest = Sha256::digest(signature.unwrap_or_default().trim().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    let store = WebhookStore::new(app.table.clone());
    if !store
        .first_sight(provider, &digest, now, SEEN_TTL_SECS)
        .await?
    {
        let refusal = Refusal::replayed();
        audit_refusal(app, tenant.as_ref(), &meta, provider, &refusal).await;
        return refusal.response(&meta.request_id);
    }
    let batch = match hubspot::parse(body) {
        Ok(b) => b,
        Err(e) => {
            let refusal = Refusal::of(&e);
            audit_refusal(app, tenant.as_ref(), &meta, provider, &refusal).await;
            return refusal.response(&meta.request_id);
        }
    };
    let queue = conduit::queue::sync_queue(app).map_err(ApiError::internal)?;
    let routed = webhook::enqueue(app, &queue, provider, tenant.as_ref(), &batch.changes, now)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "routing webhook changes failed");
            ApiError::unavailable("webhook routing failed")
        })?;
    tracing::info!(
        provider,
        events = batch.event_ids.len(),
        ignored = batch.ignored,
        connections = routed.connections,
        configs = routed.configs,
        pulls = routed.pulls_enqueued,
        "webhook taken"
    );
    json(
        StatusCode::OK,
        &serde_json::json!({
            "events": batch.event_ids.len(),
            "ignored": batch.ignored,
            "connections": routed.connections,
            "configs": routed.configs,
            "pulls_enqueued": routed.pulls_enqueued,
        }),
    )
}

/// `POST /v1/webhooks/pipedrive/{tenant}/{config}`: an event of a webhook Conduit created
/// for the config, carrying the basic credentials Conduit set.
async fn pipedrive(app: &App, req: Request, meta: RequestMeta) -> Result<Response<Body>, ApiError> {
    let provider = "pipedrive";
    let tenant = TenantId::parse(&http::path_param(&req, "tenant")?).ok();
    let config_id = SyncConfigId::parse(&http::path_param(&req, "config")?).ok();
    let (Some(tenant), Some(config_id)) = (tenant, config_id) else {
        let refusal = Refusal::unknown_app();
        audit_refusal(app, None, &meta, provider, &refusal).await;
        return refusal.response(&meta.request_id);
    };
    tracing::Span::current().record("tenant", tenant.as_str());
    let body: &[u8] = req.body().as_ref();
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge);
    }
    let Some(reg) = subscriptions::registration(app, &tenant, &config_id).await? else {
        let refusal = Refusal::unknown_app();
        audit_refusal(app, Some(&tenant), &meta, provider, &refusal).await;
        return refusal.response(&meta.request_id);
    };
    let password = app
        .envelope
        .open(
            &subscriptions::seal_context(&tenant, &config_id),
            &reg.password,
        )
        .await
        .map_err(ApiError::internal)?;
    let password = String::from_utf8(password.to_vec()).map_err(ApiError::internal)?;
    if let Err(e) = conduit::webhooks::pipedrive::check_auth(
        header_str(req.headers(), "authorization"),
        subscriptions::USER,
        &password,
    ) {
        let refusal = Refusal::of(&e);
        audit_refusal(app, Some(&tenant), &meta, provider, &refusal).await;
        return refusal.response(&meta.request_id);
    }
    let event = match conduit::webhooks::pipedrive::parse(body) {
        Ok(e) => e,
        Err(e) => {
            let refusal = Refusal::of(&e);
            audit_refusal(app, Some(&tenant), &meta, provider, &refusal).await;
            return refusal.response(&meta.request_id);
        }
    };
    let now = now_ms();
    let digest = Sha256::digest(format!("{config_id}#{}", event.key).as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    if !WebhookStore::new(app.table.clone())
        .first_sight(provider, &digest, now, SEEN_TTL_SECS)
        .await?
    {
        let refusal = Refusal::replayed();
        audit_refusal(app, Some(&tenant), &meta, provider, &refusal).await;
        return refusal.response(&meta.request_id);
    }
    let config = Configs::new(app.table.clone())
        .get(&tenant, &config_id)
        .await?;
    let mut routed = webhook::Routed::default();
    if let (Some(config), Some((entity, change))) = (config, event.change) {
        let mut c = AccountChanges::default();
        match change {
            hubspot::Change::Changed => c.changed.insert(event.entity_id.clone()),
            hubspot::Change::Deleted => c.deleted.insert(event.entity_id.clone()),
        };
        let queue = conduit::queue::sync_queue(app).map_err(ApiError::internal)?;
        routed = webhook::enqueue_for_config(app, &queue, &config, &[(entity, c)].into(), now)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "routing a webhook change failed");
                ApiError::unavailable("webhook routing failed")
            })?;
    }
    tracing::info!(
        provider,
        configs = routed.configs,
        pulls = routed.pulls_enqueued,
        "webhook taken"
    );
    json(
        StatusCode::OK,
        &serde_json::json!({
            "events": 1,
            "ignored": usize::from(event.change.is_none()),
            "connections": routed.connections,
            "configs": routed.configs,
            "pulls_enqueued": routed.pulls_enqueued,
        }),
    )
}

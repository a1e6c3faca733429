//! The webhooks function: provider webhooks in — public routes, no JWT — each request
//! verified before anything in it is trusted, a replay refused, then its events turned
//! into targeted pulls of the changed records (`conduit::sync::webhook`).
//!
//! - `POST /v1/webhooks/hubspot`: events of the platform's HubSpot app, signed with its
//!   client secret; the portal in each event finds the connections (of any tenant).
//! - `POST /v1/webhooks/pipedrive/{tenant}/{config}`: events of the webhooks Conduit
//!   created in Pipedrive for a realtime config (`conduit::sync::subscriptions`), with
//!   the HTTP basic credentials it set for them.
//! - `POST /v1/webhooks/zoho/{tenant}/{config}`: notifications of the channels Conduit
//!   enabled in Zoho CRM for a realtime config, each carrying the channel token it set.
//! - `POST /v1/webhooks/dynamics365/{tenant}/{config}`: executions of the webhook steps
//!   Conduit registered in Dataverse for a realtime config, each carrying the header
//!   secret it set on the service endpoint.
//! - `POST /v1/webhooks/salesforce/{tenant}/{config}/{key}`: outbound messages (SOAP)
//!   the org's admin pointed at a realtime config, with the key Conduit made for it;
//!   answered `<Ack>true</Ack>`, a message taken before too (Salesforce sends it again
//!   until it sees the acknowledgement; nothing is routed twice).
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

use std::collections::BTreeMap;
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
use conduit::sync::schema::Entity;
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

/// Why a route stopped before answering 200: a refusal (answered 401/400 with its
/// code, audited and logged) or a failure of Conduit's own (5xx; the provider retries).
enum Stop {
    Refused(Refusal),
    Failed(ApiError),
}

impl From<Refusal> for Stop {
    fn from(r: Refusal) -> Self {
        Self::Refused(r)
    }
}

impl From<WebhookError> for Stop {
    fn from(e: WebhookError) -> Self {
        Self::Refused(Refusal::of(&e))
    }
}

impl From<ApiError> for Stop {
    fn from(e: ApiError) -> Self {
        Self::Failed(e)
    }
}

impl From<conduit::store::StoreError> for Stop {
    fn from(e: conduit::store::StoreError) -> Self {
        Self::Failed(e.into())
    }
}

/// One webhook request being handled: who it is for, so far as the route knows.
struct Call<'a> {
    app: &'a App,
    meta: &'a RequestMeta,
    provider: &'static str,
    /// The tenant, once the route has read it (refusals are audited in its log).
    tenant: Option<TenantId>,
    /// The digest [`Call::once`] took, given back when the request then fails.
    taken: Option<String>,
}

impl<'a> Call<'a> {
    fn new(app: &'a App, meta: &'a RequestMeta, provider: &'static str) -> Self {
        Self {
            app,
            meta,
            provider,
            tenant: None,
            taken: None,
        }
    }

    /// Notes the route's tenant (in the span, and for the audit of a refusal).
    fn for_tenant(&mut self, tenant: &TenantId) {
        tracing::Span::current().record("tenant", tenant.as_str());
        self.tenant = Some(tenant.clone());
    }

    /// Refuses a second sight of a verified request, named by `identity` (its
    /// signature, or the provider's event id): its digest is taken once for
    /// [`SEEN_TTL_SECS`].
    async fn once(&mut self, identity: &[u8], now: i64) -> Result<(), Stop> {
        let digest = Sha256::digest(identity)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        if WebhookStore::new(self.app.table.clone())
            .first_sight(self.provider, &digest, now, SEEN_TTL_SECS)
            .await?
        {
            self.taken = Some(digest);
            Ok(())
        } else {
            Err(Refusal::replayed().into())
        }
    }

    /// The answer to a route's outcome: a refusal is logged, audited in the tenant's
    /// log (when the route knew its tenant) and answered with its code.
    async fn finish(
        self,
        outcome: Result<Response<Body>, Stop>,
    ) -> Result<Response<Body>, ApiError> {
        let refusal = match outcome {
            Ok(r) => return Ok(r),
            Err(Stop::Failed(e)) => {
                // Nothing was routed: the provider sends it again (a 5xx), and that
                // retry must not be refused as a replay of this request.
                if let Some(digest) = &self.taken
                    && let Err(forget) = WebhookStore::new(self.app.table.clone())
                        .forget(self.provider, digest)
                        .await
                {
                    tracing::error!(error = %forget, "giving back a failed webhook's replay key failed");
                }
                return Err(e);
            }
            Err(Stop::Refused(r)) => r,
        };
        tracing::warn!(provider = self.provider, code = refusal.code, reason = %refusal.message, "webhook refused");
        if let Some(tenant) = &self.tenant {
            let entry = AuditEntry::system(
                tenant,
                "webhooks",
                &self.meta.request_id,
                "webhook.receive",
                format!("webhook/{}", self.provider),
            )
            .failed(Outcome::Denied, refusal.code)
            .detail("reason", &refusal.message);
            if let Err(e) = AuditLog::new(self.app.table.clone()).record(&entry).await {
                tracing::error!(error = %e, "auditing a refused webhook failed");
            }
        }
        refusal.response(&self.meta.request_id)
    }
}

/// A path parameter that must parse; anything else is refused like a bad signature
/// (the route says nothing of which tenants or configs exist).
fn path_id<T>(req: &Request, name: &str, parse: impl Fn(&str) -> Option<T>) -> Result<T, Stop> {
    parse(&http::path_param(req, name)?).ok_or_else(|| Refusal::unknown_app().into())
}

/// The body, when within [`MAX_BODY_BYTES`].
fn body_of(req: &Request) -> Result<&[u8], Stop> {
    let body: &[u8] = req.body().as_ref();
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge.into());
    }
    Ok(body)
}

/// One entity's ids, changed or deleted, as [`route_to_config`] takes them.
fn one_change(
    entity: Entity,
    change: hubspot::Change,
    ids: impl IntoIterator<Item = String>,
) -> BTreeMap<Entity, AccountChanges> {
    let mut c = AccountChanges::default();
    let set = match change {
        hubspot::Change::Changed => &mut c.changed,
        hubspot::Change::Deleted => &mut c.deleted,
    };
    set.extend(ids);
    [(entity, c)].into()
}

/// Turns the changed and deleted ids of a config route into the config's targeted pull
/// (nothing for no ids, or for a config deleted since its webhook was set up).
async fn route_to_config(
    app: &App,
    tenant: &TenantId,
    config_id: &SyncConfigId,
    changes: &BTreeMap<Entity, AccountChanges>,
    now: i64,
) -> Result<webhook::Routed, Stop> {
    if changes
        .values()
        .all(|c| c.changed.is_empty() && c.deleted.is_empty())
    {
        return Ok(webhook::Routed::default());
    }
    let Some(config) = Configs::new(app.table.clone())
        .get(tenant, config_id)
        .await?
    else {
        return Ok(webhook::Routed::default());
    };
    let queue = conduit::queue::sync_queue(app).map_err(ApiError::internal)?;
    webhook::enqueue_for_config(app, &queue, &config, changes, now)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "routing webhook changes failed");
            Stop::Failed(ApiError::unavailable("webhook routing failed"))
        })
}

/// The 200 answer.
fn taken(
    provider: &str,
    events: usize,
    ignored: usize,
    routed: &webhook::Routed,
) -> Result<Response<Body>, Stop> {
    tracing::info!(
        provider,
        events,
        ignored,
        connections = routed.connections,
        configs = routed.configs,
        pulls = routed.pulls_enqueued,
        "webhook taken"
    );
    Ok(json(
        StatusCode::OK,
        &serde_json::json!({
            "events": events,
            "ignored": ignored,
            "connections": routed.connections,
            "configs": routed.configs,
            "pulls_enqueued": routed.pulls_enqueued,
        }),
    )?)
}

async fn route(app: &App, req: Request, meta: RequestMeta) -> Result<Response<Body>, ApiError> {
    match meta.route_key.as_str() {
        "POST /v1/webhooks/hubspot" => {
            let mut call = Call::new(app, &meta, "hubspot");
            let out = hubspot_route(&mut call, &req, false).await;
            call.finish(out).await
        }
        "POST /v1/webhooks/hubspot/{tenant}" => {
            let mut call = Call::new(app, &meta, "hubspot");
            let out = hubspot_route(&mut call, &req, true).await;
            call.finish(out).await
        }
        "POST /v1/webhooks/pipedrive/{tenant}/{config}" => {
            let mut call = Call::new(app, &meta, "pipedrive");
            let out = pipedrive(&mut call, &req).await;
            call.finish(out).await
        }
        "POST /v1/webhooks/zoho/{tenant}/{config}" => {
            let mut call = Call::new(app, &meta, "zoho");
            let out = zoho(&mut call, &req).await;
            call.finish(out).await
        }
        "POST /v1/webhooks/dynamics365/{tenant}/{config}" => {
            let mut call = Call::new(app, &meta, "dynamics365");
            let out = dynamics(&mut call, &req).await;
            call.finish(out).await
        }
        "POST /v1/webhooks/salesforce/{tenant}/{config}/{key}" => {
            let mut call = Call::new(app, &meta, "salesforce");
            let out = salesforce(&mut call, &req).await;
            call.finish(out).await
        }
        other => Err(ApiError::NotFound(format!("no route {other}"))),
    }
}

/// `POST /v1/webhooks/hubspot` (the platform's app; `own`: false) and
/// `POST /v1/webhooks/hubspot/{tenant}` (a tenant's own app).
async fn hubspot_route(
    call: &mut Call<'_>,
    req: &Request,
    own: bool,
) -> Result<Response<Body>, Stop> {
    let app = call.app;
    let provider = call.provider;
    if own {
        let tenant = path_id(req, "tenant", |s| TenantId::parse(s).ok())?;
        call.for_tenant(&tenant);
    }
    let body = body_of(req)?;
    let secret = match &call.tenant {
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
    let secret = secret.ok_or_else(Refusal::unknown_app)?;
    let uri = called_uri(app, req)?;
    let now = now_ms();
    let headers = req.headers();
    let signature = header_str(headers, hubspot::SIGNATURE);
    hubspot::verify(
        secret.expose_secret().as_bytes(),
        req.method().as_str(),
        &uri,
        body,
        header_str(headers, hubspot::TIMESTAMP),
        signature,
        now,
    )?;
    // Verified: the signature (over method, URI, body and timestamp) names this exact
    // request; a second sight of it is a replay.
    call.once(signature.unwrap_or_default().trim().as_bytes(), now)
        .await?;
    let batch = hubspot::parse(body)?;
    let queue = conduit::queue::sync_queue(app).map_err(ApiError::internal)?;
    let routed = webhook::enqueue(
        app,
        &queue,
        provider,
        call.tenant.as_ref(),
        &batch.changes,
        now,
    )
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "routing webhook changes failed");
        ApiError::unavailable("webhook routing failed")
    })?;
    taken(provider, batch.event_ids.len(), batch.ignored, &routed)
}

/// A config route's parts: the tenant and config of its path, the config's webhook
/// registration (a config without one is refused) and the secret Conduit set, opened.
struct Registered {
    tenant: TenantId,
    config_id: SyncConfigId,
    reg: subscriptions::Registration,
    secret: String,
}

async fn registered(call: &mut Call<'_>, req: &Request) -> Result<Registered, Stop> {
    let tenant = path_id(req, "tenant", |s| TenantId::parse(s).ok())?;
    let config_id = path_id(req, "config", |s| SyncConfigId::parse(s).ok())?;
    call.for_tenant(&tenant);
    let reg = subscriptions::registration(call.app, &tenant, &config_id)
        .await?
        .ok_or_else(Refusal::unknown_app)?;
    let secret = subscriptions::password(call.app, &reg)
        .await
        .map_err(ApiError::internal)?;
    Ok(Registered {
        tenant,
        config_id,
        reg,
        secret,
    })
}

/// `POST /v1/webhooks/pipedrive/{tenant}/{config}`: an event of a webhook Conduit created
/// for the config, carrying the basic credentials Conduit set.
async fn pipedrive(call: &mut Call<'_>, req: &Request) -> Result<Response<Body>, Stop> {
    let app = call.app;
    let body = body_of(req)?;
    let Registered {
        tenant,
        config_id,
        secret,
        ..
    } = registered(call, req).await?;
    conduit::webhooks::pipedrive::check_auth(
        header_str(req.headers(), "authorization"),
        subscriptions::USER,
        &secret,
    )?;
    let event = conduit::webhooks::pipedrive::parse(body)?;
    let now = now_ms();
    call.once(format!("{config_id}#{}", event.key).as_bytes(), now)
        .await?;
    let changes = event
        .change
        .map(|(entity, change)| one_change(entity, change, [event.entity_id.clone()]))
        .unwrap_or_default();
    let routed = route_to_config(app, &tenant, &config_id, &changes, now).await?;
    taken(
        call.provider,
        1,
        usize::from(event.change.is_none()),
        &routed,
    )
}

/// `POST /v1/webhooks/zoho/{tenant}/{config}`: a notification of a channel Conduit
/// enabled for the config, carrying the channel token Conduit set (in the body, which
/// must therefore be read first).
async fn zoho(call: &mut Call<'_>, req: &Request) -> Result<Response<Body>, Stop> {
    let app = call.app;
    let body = body_of(req)?;
    let Registered {
        tenant,
        config_id,
        reg,
        secret,
    } = registered(call, req).await?;
    let note = conduit::webhooks::zoho::parse(body)?;
    conduit::webhooks::zoho::check_token(&note.token, &secret)?;
    // The token is the config's; the channel must be one of its channels too, and the
    // module the one that channel watches.
    let entity = reg
        .hooks
        .iter()
        .find(|(_, channel)| **channel == note.channel_id)
        .map(|(e, _)| *e)
        .ok_or(WebhookError::BadCredentials)?;
    let module = conduit::sync::crm::CrmKind::of("zoho").map(|k| k.object(entity));
    if module != Some(note.module.as_str()) {
        return Err(WebhookError::Malformed(format!(
            "module {} is not the channel's",
            note.module.chars().take(40).collect::<String>()
        ))
        .into());
    }
    let now = now_ms();
    // Zoho numbers nothing: the same body (server time, ids, operation) twice is a
    // replay.
    call.once(&[config_id.as_str().as_bytes(), b"#", body].concat(), now)
        .await?;
    let changes = note
        .change
        .map(|change| one_change(entity, change, note.ids.iter().cloned()))
        .unwrap_or_default();
    let routed = route_to_config(app, &tenant, &config_id, &changes, now).await?;
    taken(
        call.provider,
        note.ids.len(),
        if note.change.is_none() {
            note.ids.len()
        } else {
            0
        },
        &routed,
    )
}

/// `POST /v1/webhooks/dynamics365/{tenant}/{config}`: an execution of a step Conduit
/// registered for the config, carrying the header secret Conduit set on its endpoint.
async fn dynamics(call: &mut Call<'_>, req: &Request) -> Result<Response<Body>, Stop> {
    use conduit::webhooks::dynamics as dataverse;
    let app = call.app;
    let body = body_of(req)?;
    let Registered {
        tenant,
        config_id,
        reg,
        secret,
    } = registered(call, req).await?;
    dataverse::check_key(
        header_str(req.headers(), conduit::sync::crm::dynamics::HOOK_HEADER),
        &secret,
    )?;
    let run = dataverse::parse(body)?;
    let now = now_ms();
    // A retried operation carries its id again; the body names it whole.
    call.once(&[config_id.as_str().as_bytes(), b"#", body].concat(), now)
        .await?;
    let kind = conduit::sync::crm::CrmKind::of("dynamics365");
    let entity = reg
        .hooks
        .keys()
        .copied()
        .find(|e| kind.map(|k| k.object(*e)) == Some(run.table.as_str()));
    let changes = entity
        .zip(run.change)
        .map(|(entity, change)| one_change(entity, change, [run.id.clone()]))
        .unwrap_or_default();
    let routed = route_to_config(app, &tenant, &config_id, &changes, now).await?;
    let ignored = usize::from(entity.is_none() || run.change.is_none());
    taken(call.provider, 1, ignored, &routed)
}

/// `POST /v1/webhooks/salesforce/{tenant}/{config}/{key}`: an outbound message the
/// org's admin pointed at the config, with the key Conduit made for it in the URL;
/// answered with Salesforce's `<Ack>true</Ack>`.
async fn salesforce(call: &mut Call<'_>, req: &Request) -> Result<Response<Body>, Stop> {
    use conduit::webhooks::salesforce as sf;
    let app = call.app;
    let body = body_of(req)?;
    let Registered {
        tenant,
        config_id,
        reg,
        secret,
    } = registered(call, req).await?;
    let key = http::path_param(req, "key")?;
    conduit::webhooks::zoho::check_token(&key, &secret)?;
    let message = sf::parse(body)?;
    // The key is the config's; the message must also come from the connection's org.
    let org = conduit::store::connections::Connections::new(app.table.clone())
        .get(&tenant, &reg.connection_id)
        .await?
        .and_then(|c| c.identity)
        .and_then(|i| i.account);
    if !org.is_some_and(|o| sf::same_id(&o, &message.organization_id)) {
        return Err(WebhookError::BadCredentials.into());
    }
    let now = now_ms();
    let mut ids: Vec<&str> = message
        .notifications
        .iter()
        .map(|(id, _, _)| id.as_str())
        .collect();
    ids.sort_unstable();
    match call
        .once(format!("{config_id}#{}", ids.join(",")).as_bytes(), now)
        .await
    {
        Ok(()) => {}
        // Salesforce sends a message again, with the same notification ids, until it
        // sees an acknowledgement: one it did not see (a timeout after Conduit took the
        // message) is answered again — the request is verified (key and org), and
        // nothing of it is routed twice. Left unanswered, Salesforce would retry it for
        // a day and list it as failing in Setup.
        Err(Stop::Refused(r)) if r.code == Refusal::replayed().code => {
            tracing::info!(
                provider = call.provider,
                events = message.notifications.len(),
                "outbound message taken before: acknowledged again, nothing routed"
            );
            return salesforce_ack();
        }
        Err(e) => return Err(e),
    }
    let kind = conduit::sync::crm::CrmKind::of("salesforce");
    let mut changes: BTreeMap<Entity, AccountChanges> = BTreeMap::new();
    let mut ignored = 0;
    for (_, object, record) in &message.notifications {
        let entity = reg
            .hooks
            .keys()
            .copied()
            .find(|e| kind.map(|k| k.object(*e)) == Some(object.as_str()));
        match entity {
            Some(e) => {
                changes.entry(e).or_default().changed.insert(record.clone());
            }
            None => ignored += 1,
        }
    }
    let routed = route_to_config(app, &tenant, &config_id, &changes, now).await?;
    tracing::info!(
        provider = call.provider,
        events = message.notifications.len(),
        ignored,
        configs = routed.configs,
        pulls = routed.pulls_enqueued,
        "webhook taken"
    );
    salesforce_ack()
}

/// Salesforce's acknowledgement of an outbound message (`<Ack>true</Ack>`).
fn salesforce_ack() -> Result<Response<Body>, Stop> {
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/xml; charset=utf-8")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Body::Text(conduit::webhooks::salesforce::ACK.to_owned()))
        .map_err(ApiError::internal)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_has_its_status_and_code() {
        let cases = [
            (
                WebhookError::MissingHeader("x"),
                401,
                "webhook_signature_missing",
            ),
            (WebhookError::BadTimestamp, 401, "webhook_timestamp_stale"),
            (WebhookError::Stale(400), 401, "webhook_timestamp_stale"),
            (WebhookError::BadSignature, 401, "webhook_signature_invalid"),
            (
                WebhookError::BadCredentials,
                401,
                "webhook_credentials_invalid",
            ),
            (
                WebhookError::Malformed("x".into()),
                400,
                "webhook_malformed",
            ),
        ];
        for (e, status, code) in cases {
            let r = Refusal::of(&e);
            assert_eq!((r.status.as_u16(), r.code), (status, code), "{e:?}");
            assert_eq!(r.message, e.to_string());
        }
        assert_eq!(Refusal::replayed().code, "webhook_replayed");
        assert_eq!(Refusal::unknown_app().status, StatusCode::UNAUTHORIZED);
        let Stop::Refused(r) = Stop::from(WebhookError::BadSignature) else {
            panic!("a webhook error is a refusal");
        };
        assert_eq!(r.code, "webhook_signature_invalid");
        let response = r.response("req-1").unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let Body::Text(text) = response.body() else {
            panic!("a JSON body");
        };
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(v["error"]["code"], "webhook_signature_invalid");
        assert_eq!(v["error"]["request_id"], "req-1");
        assert!(matches!(
            Stop::from(ApiError::PayloadTooLarge),
            Stop::Failed(_)
        ));
    }
}

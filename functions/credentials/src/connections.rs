//! `/v1/connections…`: API-key and basic-auth connections. Credentials are checked
//! against the provider's own "who am I" endpoint before anything is saved; secrets
//! are sealed per connection and only ever shown masked.
//!
//! A personal connection (Google's Gmail and Calendar) is its user's: they see it in
//! full and manage it; an admin sees that it exists (owner, kind, status, connected
//! address) and may delete it, never change, test or reconnect it; other members do
//! not see it. The tenant's connections are read by every member, changed by admins.

use std::collections::BTreeMap;

use conduit::audit::Outcome;
use conduit::connections::{
    Connection, Connections, LastError, Reach, TokenState, WriteError, seal_context,
};
use conduit::connector::{CheckOutcome, Connector};
use conduit::crypto::Sealed;
use conduit::domain::{ConnectionId, ConnectionStatus, Identity, Label, TenantId, now, rfc3339};
use conduit::http::{self, ApiError};
use conduit::oauth::lifecycle::{self, RevokeOutcome, TokenError, Tokens};
use conduit::providers::{AuthMethod, AuthType, FieldError, Fields, Provider};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Response};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::Call;

fn store(call: &Call<'_>) -> Connections {
    Connections::new(call.app.table.clone())
}

/// What the API shows of a connection: settings whole, secrets masked.
#[derive(Serialize)]
struct View<'a> {
    id: &'a str,
    provider: &'a str,
    provider_name: &'a str,
    auth_method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
    label: &'a str,
    status: ConnectionStatus,
    credentials: BTreeMap<&'a str, &'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    connected_as: Option<serde_json::Value>,
    scopes: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    scopes_missing: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    last_error: Option<&'a LastError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    checked_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    allow_automations: Option<bool>,
    created_at: String,
    created_by: &'a str,
    updated_at: String,
    updated_by: &'a str,
    version: u64,
}

/// What an admin sees of another user's personal connection: that it exists.
#[derive(Serialize)]
struct Existence<'a> {
    id: &'a str,
    provider: &'a str,
    provider_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
    owner: &'a str,
    status: ConnectionStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    connected_email: Option<&'a str>,
    allow_automations: bool,
    created_at: String,
    updated_at: String,
    version: u64,
}

/// A connection as `call`'s caller may see it, if at all.
#[derive(Serialize)]
#[serde(untagged)]
enum Shown<'a> {
    Full(Box<View<'a>>),
    Existence(Existence<'a>),
}

fn shown<'a>(call: &'a Call<'_>, c: &'a Connection) -> Option<Shown<'a>> {
    match c.reach(&call.who) {
        Reach::Full => Some(Shown::Full(Box::new(view(call, c)))),
        Reach::Existence => Some(Shown::Existence(Existence {
            id: c.id.as_str(),
            provider: &c.provider,
            provider_name: provider_name(call, c),
            kind: c.kind.as_deref(),
            owner: c.owner.as_ref().map_or("", |o| o.as_str()),
            status: c.status,
            connected_email: c.identity.as_ref().and_then(|i| i.email.as_deref()),
            allow_automations: c.allow_automations,
            created_at: rfc3339(c.created_at),
            updated_at: rfc3339(c.updated_at),
            version: c.version,
        })),
        Reach::Hidden => None,
    }
}

fn provider_name<'a>(call: &'a Call<'_>, c: &'a Connection) -> &'a str {
    call.app
        .catalogue
        .provider(&c.provider)
        .map_or(c.provider.as_str(), |p| p.name.as_str())
}

fn view<'a>(call: &'a Call<'_>, c: &'a Connection) -> View<'a> {
    let provider_name = provider_name(call, c);
    let credentials = c
        .settings
        .iter()
        .chain(c.masked.iter())
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    View {
        id: c.id.as_str(),
        provider: &c.provider,
        provider_name,
        auth_method: &c.auth_method,
        kind: c.kind.as_deref(),
        label: c.label.as_str(),
        status: c.status,
        credentials,
        connected_as: c.identity.as_ref().map(identity_json),
        scopes: &c.scopes,
        scopes_missing: &c.scopes_missing,
        last_error: c.last_error.as_ref(),
        checked_at: c.checked_at.map(rfc3339),
        token: c.token.as_ref().map(token_json),
        owner: c.owner.as_ref().map(|o| o.as_str()),
        allow_automations: c.owner.is_some().then_some(c.allow_automations),
        created_at: rfc3339(c.created_at),
        created_by: c.created_by.as_str(),
        updated_at: rfc3339(c.updated_at),
        updated_by: c.updated_by.as_str(),
        version: c.version,
    }
}

/// The token lifecycle as the dashboard sees it (never a token).
fn token_json(t: &TokenState) -> serde_json::Value {
    json!({
        "app": t.app,
        "expires_at": t.expires_at.map(rfc3339),
        "refreshed_at": t.refreshed_at.map(rfc3339),
        "next_refresh_at": t.refresh_due.map(rfc3339),
        "refresh_failures": t.failures,
        "has_refresh_token": t.has_refresh_token,
    })
}

fn identity_json(i: &Identity) -> serde_json::Value {
    let mut v = json!(i);
    v["display"] = json!(i.display());
    v
}

fn respond(
    call: &Call<'_>,
    status: StatusCode,
    c: &Connection,
) -> Result<Response<Body>, ApiError> {
    http::json_versioned(status, &view(call, c), c.version)
}

fn field_error(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::invalid_fields(vec![FieldError {
        field: field.to_owned(),
        message: message.into(),
    }])
}

/// The provider and key-style auth method a body names.
fn resolve_method(
    call: &Call<'_>,
    provider: &str,
    method: Option<&str>,
) -> Result<(&'static Provider, &'static AuthMethod), ApiError> {
    let provider: &'static Provider = call
        .app
        .catalogue
        .provider(provider)
        .ok_or_else(|| field_error("provider", "unknown provider; see GET /v1/providers"))?;
    let method = provider.auth_method(method).ok_or_else(|| {
        let ids: Vec<&str> = provider.auth.iter().map(|m| m.id.as_str()).collect();
        field_error("auth_method", format!("must be one of: {}", ids.join(", ")))
    })?;
    if method.kind == AuthType::Oauth2 {
        return Err(ApiError::bad_request(
            "oauth_required",
            format!(
                "{} connects through OAuth: POST /v1/oauth/{}/start",
                provider.name, provider.id
            ),
        ));
    }
    Ok((provider, method))
}

/// Runs the provider's check; a refusal or failure becomes the matching error.
async fn verify(
    call: &Call<'_>,
    provider: &Provider,
    method: &AuthMethod,
    fields: &Fields,
) -> Result<Identity, ApiError> {
    let outcome = connector(call, provider, method, fields)
        .check(&call.app.http)
        .await;
    outcome_result(provider, outcome)
}

fn connector<'a>(
    call: &'a Call<'_>,
    provider: &'a Provider,
    method: &'a AuthMethod,
    fields: &'a Fields,
) -> Connector<'a> {
    Connector {
        provider,
        method,
        fields,
        origin_override: call.app.config.provider_origin_override.as_ref(),
    }
}

fn outcome_result(provider: &Provider, outcome: CheckOutcome) -> Result<Identity, ApiError> {
    match outcome {
        CheckOutcome::Verified(identity) => Ok(identity),
        CheckOutcome::Rejected { status } => Err(ApiError::Unprocessable {
            code: "credentials_rejected",
            message: format!("{} rejected the credentials (HTTP {status})", provider.name),
        }),
        CheckOutcome::RateLimited { retry_after } => Err(ApiError::BadGateway {
            code: "provider_rate_limited",
            message: match retry_after {
                Some(s) => format!("{} is rate limiting; retry in {s} s", provider.name),
                None => format!("{} is rate limiting; retry later", provider.name),
            },
        }),
        CheckOutcome::Unavailable(why) => Err(ApiError::BadGateway {
            code: "provider_unavailable",
            message: format!("{}: {why}", provider.name),
        }),
    }
}

async fn seal(
    call: &Call<'_>,
    tenant: &TenantId,
    id: &ConnectionId,
    fields: &Fields,
) -> Result<Sealed, ApiError> {
    let plain: BTreeMap<&str, &str> = fields
        .secret
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose_secret()))
        .collect();
    call.app
        .envelope
        .seal_json(&seal_context(tenant, id), &plain)
        .await
        .map_err(ApiError::internal)
}

async fn open(call: &Call<'_>, c: &Connection) -> Result<Fields, ApiError> {
    let secret: BTreeMap<String, String> = call
        .app
        .envelope
        .open_json(&c.seal_context(), &c.secrets)
        .await
        .map_err(ApiError::internal)?;
    Ok(Fields {
        public: c.settings.clone(),
        secret: secret
            .into_iter()
            .map(|(k, v)| (k, SecretString::from(v)))
            .collect(),
    })
}

fn masked_secrets(fields: &Fields) -> BTreeMap<String, String> {
    fields
        .secret
        .iter()
        .map(|(k, v)| (k.clone(), conduit::domain::mask(v.expose_secret())))
        .collect()
}

fn parse_id(call: &Call<'_>) -> Result<ConnectionId, ApiError> {
    let raw = http::path_param(&call.req, "id")?;
    ConnectionId::parse(&raw).map_err(|e| ApiError::bad_request("invalid_id", e.to_string()))
}

/// The path's connection, if the caller may see it at all (another user's personal
/// connection is not there for a member).
async fn load(call: &Call<'_>) -> Result<Connection, ApiError> {
    let id = parse_id(call)?;
    let conn = store(call).get(&call.who.tenant, &id).await?;
    let conn = conn
        .filter(|c| c.reach(&call.who) != Reach::Hidden)
        .ok_or_else(|| ApiError::NotFound(format!("no connection {id}")))?;
    if http::if_match(&call.req)?.is_some_and(|v| v != conn.version) {
        return Err(ApiError::PreconditionFailed);
    }
    Ok(conn)
}

/// The path's connection for `action` (an audit action): a personal connection is
/// changed only by its user (an admin may only delete another user's); the tenant's
/// only by admins. A refusal is a 403, audited.
async fn load_for(call: &Call<'_>, action: &str) -> Result<Connection, ApiError> {
    let conn = load(call).await?;
    let refusal = match conn.reach(&call.who) {
        Reach::Existence if action == "connection.delete" => None,
        Reach::Existence | Reach::Hidden => {
            Some("a personal connection is used and changed only by its owner")
        }
        Reach::Full if conn.owner.is_none() && !call.who.is_admin() => {
            Some("this action needs the admin role")
        }
        Reach::Full => None,
    };
    if let Some(message) = refusal {
        let target = format!("connection/{}", conn.id);
        call.record(
            &call
                .audit(action, target)
                .failed(Outcome::Denied, "forbidden"),
        )
        .await;
        return Err(ApiError::Forbidden(message.into()));
    }
    Ok(conn)
}

/// Refuses an account another connection holds under a marker written before
/// account keys were hashed (those markers are read, never written).
async fn legacy_duplicate(
    call: &Call<'_>,
    connector: &Connector<'_>,
    identity: &Identity,
    own: &ConnectionId,
) -> Result<(), ApiError> {
    let Some(key) = connector.legacy_account_key(identity) else {
        return Ok(());
    };
    match store(call)
        .legacy_owner(&call.who.tenant, &connector.provider.id, &key)
        .await?
    {
        Some(owner) if owner != *own => Err(write_error(WriteError::Duplicate(owner))),
        _ => Ok(()),
    }
}

fn write_error(e: WriteError) -> ApiError {
    match e {
        WriteError::Duplicate(existing) => ApiError::Conflict {
            code: "connection_exists",
            message: format!("connection {existing} already connects this account"),
        },
        WriteError::Stale => {
            ApiError::concurrent_update("the connection changed concurrently; read it and retry")
        }
        WriteError::Store(e) => e.into(),
    }
}

fn method_of<'a>(
    call: &'a Call<'_>,
    c: &Connection,
) -> Result<(&'a Provider, &'a AuthMethod), ApiError> {
    let provider =
        call.app.catalogue.provider(&c.provider).ok_or_else(|| {
            ApiError::internal(format!("connection {} names unknown provider", c.id))
        })?;
    let method = provider.auth_method(Some(&c.auth_method)).ok_or_else(|| {
        ApiError::internal(format!("connection {} names unknown auth method", c.id))
    })?;
    Ok((provider, method))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    provider: String,
    #[serde(default)]
    auth_method: Option<String>,
    #[serde(default)]
    label: Option<String>,
    credentials: BTreeMap<String, String>,
}

fn parse_label(raw: Option<&str>) -> Result<Option<Label>, ApiError> {
    raw.map(|l| Label::parse(l).map_err(|e| field_error("label", e.0)))
        .transpose()
}

fn default_label(provider: &Provider, identity: &Identity) -> Label {
    let text = match identity.display() {
        Some(who) => format!("{} ({who})", provider.name),
        None => provider.name.clone(),
    };
    Label::lossy(&text)
}

/// `POST /v1/connections`: checks the credentials with the provider, then stores the
/// connection (one per provider account).
pub async fn create(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let body: CreateBody = http::json_body(&call.req)?;
    let (provider, method) = resolve_method(call, &body.provider, body.auth_method.as_deref())?;
    let label = parse_label(body.label.as_deref())?;
    let fields = method
        .validate(&body.credentials, &call.app.url_policy())
        .map_err(ApiError::invalid_fields)?;

    let id = ConnectionId::generate();
    let target = format!("connection/{id}");
    let identity = match verify(call, provider, method, &fields).await {
        Ok(identity) => identity,
        Err(e) => {
            let entry = call
                .audit("connection.create", &target)
                .detail("provider", &provider.id);
            call.record(&entry.failed(Outcome::Failure, e.code())).await;
            return Err(e);
        }
    };
    let at = now();
    legacy_duplicate(
        call,
        &connector(call, provider, method, &fields),
        &identity,
        &id,
    )
    .await?;
    let conn = Connection {
        account_key: connector(call, provider, method, &fields).account_key(&identity),
        label: label.unwrap_or_else(|| default_label(provider, &identity)),
        secrets: seal(call, &call.who.tenant, &id, &fields).await?,
        masked: masked_secrets(&fields),
        settings: fields.public.clone(),
        id,
        tenant: call.who.tenant.clone(),
        provider: provider.id.clone(),
        auth_method: method.id.clone(),
        kind: None,
        status: ConnectionStatus::Connected,
        identity: Some(identity),
        scopes: Vec::new(),
        scopes_missing: Vec::new(),
        last_error: None,
        checked_at: Some(at),
        created_at: at,
        created_by: call.who.user.clone(),
        updated_at: at,
        updated_by: call.who.user.clone(),
        version: 1,
        token: None,
        lease_holder: None,
        lease_until: None,
        allow_automations: false,
        owner: None,
    };
    let audit = call
        .audit("connection.create", &target)
        .detail("provider", &provider.id)
        .detail("auth_method", &method.id);
    store(call)
        .create(&conn, &audit)
        .await
        .map_err(write_error)?;
    respond(call, StatusCode::CREATED, &conn)
}

/// `GET /v1/connections?provider=&status=&limit=&cursor=`: a page of the tenant's
/// connections, oldest first, paged like every listing; the filters apply within the
/// page (so a page may hold fewer than `limit`). `stats` counts all of them by status
/// and provider, for the dashboard's summary.
pub async fn list(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let q = http::query(&call.req, &["provider", "status", "limit", "cursor"])?;
    if let Some(p) = q.get("provider")
        && call.app.catalogue.provider(p).is_none()
    {
        return Err(ApiError::bad_request(
            "unknown_provider",
            "provider filter names no provider",
        ));
    }
    let status = q
        .get("status")
        .map(|s| {
            ConnectionStatus::parse(s).map_err(|e| ApiError::bad_request("invalid_status", e.0))
        })
        .transpose()?;
    let limit = http::page_limit(&q)?;
    let page = store(call)
        .page(&call.who.tenant, limit, q.get("cursor").map(String::as_str))
        .await?;
    // A tenant holds tens of connections, so the summary reads them all (those the
    // caller may see).
    let all: Vec<Connection> = store(call)
        .list(&call.who.tenant)
        .await?
        .connections
        .into_iter()
        .filter(|c| c.reach(&call.who) != Reach::Hidden)
        .collect();
    let mut by_status: BTreeMap<&str, usize> = ConnectionStatus::ALL
        .iter()
        .map(|s| (s.as_str(), 0))
        .collect();
    let mut by_provider: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &all {
        *by_status.entry(c.status.as_str()).or_default() += 1;
        *by_provider.entry(c.provider.as_str()).or_default() += 1;
    }
    let connections: Vec<Shown<'_>> = page
        .items
        .iter()
        .filter(|c| q.get("provider").is_none_or(|p| *p == c.provider))
        .filter(|c| status.is_none_or(|s| s == c.status))
        .filter_map(|c| shown(call, c))
        .collect();
    http::json(
        StatusCode::OK,
        &json!({
            "connections": connections,
            "next_cursor": page.cursor,
            "stats": { "total": all.len(), "by_status": by_status, "by_provider": by_provider },
            "skipped": page.skipped,
        }),
    )
}

/// `GET /v1/connections/{id}`: in full, or that it exists (another user's personal
/// connection, to an admin).
pub async fn get(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let conn = load(call).await?;
    match shown(call, &conn) {
        Some(s) => http::json_versioned(StatusCode::OK, &s, conn.version),
        None => Err(ApiError::NotFound(format!("no connection {}", conn.id))),
    }
}

/// `GET /v1/me/connections`: the caller's own personal connections, in full, oldest
/// first.
pub async fn mine(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    http::query(&call.req, &[])?;
    let all = store(call).list(&call.who.tenant).await?;
    let connections: Vec<View<'_>> = all
        .connections
        .iter()
        .filter(|c| c.owner.as_ref() == Some(&call.who.user))
        .map(|c| view(call, c))
        .collect();
    http::json(StatusCode::OK, &json!({ "connections": connections }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    credentials: Option<BTreeMap<String, String>>,
    #[serde(default)]
    allow_automations: Option<bool>,
}

/// `PATCH /v1/connections/{id}`: rename, change some credentials (checked with the
/// provider before anything is saved), or — the owner of a personal connection only —
/// let the tenant's automations act with it or stop them.
pub async fn update(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    // A member's right to change it is settled before the body is read (a 403 rather
    // than a 400); an admin's body is checked before the connection is looked up.
    let member_may = if call.who.is_admin() {
        None
    } else {
        Some(load_for(call, "connection.update").await?)
    };
    let body: UpdateBody = http::patch_body(&call.req)?;
    if body.label.is_none() && body.credentials.is_none() && body.allow_automations.is_none() {
        return Err(http::empty_update());
    }
    let label = parse_label(body.label.as_deref())?;
    let prev = match member_may {
        Some(prev) => prev,
        None => load_for(call, "connection.update").await?,
    };
    let (provider, method) = method_of(call, &prev)?;
    let mut next = prev.clone();
    let mut changed: Vec<&str> = Vec::new();
    if let Some(label) = label {
        next.label = label;
        changed.push("label");
    }
    if let Some(allow) = body.allow_automations {
        // `load_for` let only the owner this far with a personal connection.
        if prev.owner.is_none() {
            return Err(ApiError::bad_request(
                "not_personal",
                "allow_automations: only a personal connection's owner lends it to \
                 automations; the tenant's connections serve its integrations already",
            ));
        }
        next.allow_automations = allow;
        changed.push("allow_automations");
    }
    if let Some(input) = &body.credentials {
        if method.kind == AuthType::Oauth2 {
            return Err(ApiError::bad_request(
                "oauth_required",
                "OAuth credentials change by reconnecting",
            ));
        }
        let current = open(call, &prev).await?;
        let fields = method
            .validate_update(&current, input, &call.app.url_policy())
            .map_err(ApiError::invalid_fields)?;
        let identity = match verify(call, provider, method, &fields).await {
            Ok(identity) => identity,
            Err(e) => {
                let entry = call.audit("connection.update", format!("connection/{}", prev.id));
                call.record(&entry.failed(Outcome::Failure, e.code())).await;
                return Err(e);
            }
        };
        let account = connector(call, provider, method, &fields);
        legacy_duplicate(call, &account, &identity, &prev.id).await?;
        next.account_key = account.account_key(&identity);
        next.secrets = seal(call, &prev.tenant, &prev.id, &fields).await?;
        next.masked = masked_secrets(&fields);
        next.settings = fields.public.clone();
        next.identity = Some(identity);
        next.checked_at = Some(now());
        next.last_error = None;
        if matches!(
            next.status,
            ConnectionStatus::Error | ConnectionStatus::NeedsReauth
        ) {
            next.status = ConnectionStatus::Connected;
        }
        let mut keys: Vec<&str> = input.keys().map(String::as_str).collect();
        changed.append(&mut keys);
    }
    next.updated_at = now();
    next.updated_by = call.who.user.clone();
    next.version = prev.version + 1;
    let audit = call
        .audit("connection.update", format!("connection/{}", prev.id))
        .detail("fields", &changed);
    store(call)
        .save(&prev, &next, &audit)
        .await
        .map_err(write_error)?;
    respond(call, StatusCode::OK, &next)
}

/// `DELETE /v1/connections/{id}`: revokes an OAuth grant at the provider (a failed
/// revocation is recorded; the disconnect still completes), then removes the
/// connection and its sealed secrets.
pub async fn delete(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let conn = load_for(call, "connection.delete").await?;
    // The webhooks Conduit made in the CRM for the connection's configs go first, while
    // its grant still works (a failure leaves them; the disconnect goes on).
    match conduit::sync::subscriptions::release_connection(
        call.app,
        &conn.tenant,
        &conn.id,
        call.who.user.as_str(),
        &call.meta.request_id,
    )
    .await
    {
        Ok(0) => {}
        Ok(removed) => {
            tracing::info!(connection_id = %conn.id, removed, "the connection's webhooks removed")
        }
        Err(e) => {
            tracing::warn!(connection_id = %conn.id, error = %e, "removing the connection's webhooks failed")
        }
    }
    let revoke = Tokens::new(call.app, "credentials", &call.meta.request_id)
        .revoke(&conn)
        .await;
    if let RevokeOutcome::Failed(code) = &revoke {
        tracing::warn!(connection_id = %conn.id, provider = %conn.provider, code = %code, "revocation failed; disconnecting anyway");
    }
    let audit = call
        .audit("connection.delete", format!("connection/{}", conn.id))
        .detail("provider", &conn.provider)
        .detail("revocation", &revoke);
    match store(call).delete(&conn, &audit).await {
        // The connection is gone either way; a grant still live at the provider is
        // the caller's to know (and to revoke there), not only the audit's.
        Ok(()) => match &revoke {
            RevokeOutcome::Failed(code) => http::json(
                StatusCode::OK,
                &json!({"revocation": {"status": "failed", "reason": code}}),
            ),
            _ => http::no_content(),
        },
        Err(WriteError::Stale) => Err(ApiError::NotFound(format!("no connection {}", conn.id))),
        Err(e) => Err(write_error(e)),
    }
}

/// The connection as it is now when a check may have refreshed its token (which
/// changes its version); others as they were read.
async fn reload(call: &Call<'_>, prev: Connection) -> Result<Connection, ApiError> {
    if prev.token.is_none() {
        return Ok(prev);
    }
    store(call)
        .get(&prev.tenant, &prev.id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no connection {}", prev.id)))
}

/// Applies a check's outcome to a connection's status and error.
fn apply_check(c: &mut Connection, outcome: &Result<Identity, ApiError>) {
    let at = now();
    c.checked_at = Some(at);
    match outcome {
        Ok(identity) => {
            c.identity = Some(identity.clone());
            c.last_error = None;
            if matches!(
                c.status,
                ConnectionStatus::Error | ConnectionStatus::NeedsReauth
            ) {
                c.status = ConnectionStatus::Connected;
            }
        }
        Err(e) => {
            c.last_error = Some(LastError {
                code: e.code().to_owned(),
                message: e.to_string(),
                at,
            });
            let rejected = e.code() == "credentials_rejected";
            c.status = match c.status {
                ConnectionStatus::Inactive => ConnectionStatus::Inactive,
                _ if rejected => ConnectionStatus::NeedsReauth,
                ConnectionStatus::Paused => ConnectionStatus::Paused,
                _ => ConnectionStatus::Error,
            };
        }
    }
}

async fn check_stored(
    call: &Call<'_>,
    conn: &Connection,
) -> Result<Result<Identity, ApiError>, ApiError> {
    let (provider, method) = method_of(call, conn)?;
    if method.kind == AuthType::Oauth2 {
        return Ok(check_oauth(call, conn, provider, method).await);
    }
    let fields = open(call, conn).await?;
    Ok(verify(call, provider, method, &fields).await)
}

/// Checks an OAuth connection with a valid access token (refreshed when due, and
/// once more after a 401), like every provider call.
async fn check_oauth(
    call: &Call<'_>,
    conn: &Connection,
    provider: &Provider,
    method: &AuthMethod,
) -> Result<Identity, ApiError> {
    let tokens = Tokens::new(call.app, "credentials", &call.meta.request_id);
    let mut creds = tokens
        .credentials(&conn.tenant, &conn.id)
        .await
        .map_err(token_error)?;
    for attempt in 0..2 {
        let outcome = connector(call, provider, method, &creds.fields)
            .check(&call.app.http)
            .await;
        match outcome {
            // HubSpot's token-info answers 404 for a token it no longer knows.
            CheckOutcome::Rejected {
                status: 401 | 403 | 404,
            } if attempt == 0 => {
                creds = tokens
                    .after_unauthorized(&creds)
                    .await
                    .map_err(token_error)?;
            }
            other => return outcome_result(provider, other),
        }
    }
    Err(ApiError::Unprocessable {
        code: "credentials_rejected",
        message: format!("{} rejected the connection's token", provider.name),
    })
}

fn token_error(e: TokenError) -> ApiError {
    match e {
        TokenError::NeedsReauth => ApiError::Unprocessable {
            code: "credentials_rejected",
            message: "the provider no longer accepts this connection's authorization; reconnect it"
                .into(),
        },
        TokenError::NotFound => ApiError::NotFound("no such connection".into()),
        TokenError::Unusable(state) => ApiError::Conflict {
            code: "connection_unusable",
            message: format!("the connection is {state}"),
        },
        TokenError::Unavailable(message) => ApiError::BadGateway {
            code: "provider_unavailable",
            message,
        },
        TokenError::Changed => ApiError::Conflict {
            code: "concurrent_update",
            message: "the connection changed concurrently; retry".into(),
        },
        TokenError::Internal(m) => ApiError::internal(m),
        TokenError::Store(e) => e.into(),
    }
}

/// Saves `next` after a status change, with its audit entry.
async fn save_status(
    call: &Call<'_>,
    prev: &Connection,
    next: Connection,
    action: &str,
) -> Result<Connection, ApiError> {
    try_save_status(call, prev, next, action)
        .await
        .map_err(write_error)
}

/// How often a check's outcome is re-applied after losing a version race.
const CHECK_SAVE_ATTEMPTS: usize = 6;

/// Records a check's outcome (and, for activate, the status asked for) on the
/// connection as it is now. A check decides only status, error, identity and when it
/// ran — nothing another check or the refresh lease writes — so losing a version race
/// to them re-reads the connection and re-applies the outcome instead of answering
/// 409.
async fn record_check(
    call: &Call<'_>,
    read: Connection,
    outcome: &Result<Identity, ApiError>,
    action: &str,
    status: Option<ConnectionStatus>,
) -> Result<Connection, ApiError> {
    let mut prev = reload(call, read).await?;
    let mut attempt = 1;
    loop {
        let mut next = prev.clone();
        if let Some(status) = status {
            next.status = status;
        }
        apply_check(&mut next, outcome);
        match try_save_status(call, &prev, next, action).await {
            Err(WriteError::Stale) if attempt < CHECK_SAVE_ATTEMPTS => {
                attempt += 1;
                prev = store(call)
                    .get(&prev.tenant, &prev.id)
                    .await?
                    .ok_or_else(|| ApiError::NotFound(format!("no connection {}", prev.id)))?;
            }
            done => return done.map_err(write_error),
        }
    }
}

async fn try_save_status(
    call: &Call<'_>,
    prev: &Connection,
    mut next: Connection,
    action: &str,
) -> Result<Connection, WriteError> {
    next.updated_at = now();
    next.updated_by = call.who.user.clone();
    next.version = prev.version + 1;
    let mut audit = call
        .audit(action, format!("connection/{}", prev.id))
        .detail("status_before", prev.status)
        .detail("status_after", next.status);
    if let Some(e) = &next.last_error {
        audit = audit.detail("error", &e.code);
    }
    store(call).save(prev, &next, &audit).await?;
    if next.token.is_some()
        && next.status == ConnectionStatus::NeedsReauth
        && prev.status != ConnectionStatus::NeedsReauth
    {
        lifecycle::publish_reauth(call.app, &next, "credentials_rejected").await;
    }
    Ok(next)
}

/// `POST /v1/connections/{id}/activate`: checks the credentials, then puts the
/// connection back in use (or records why it cannot be).
pub async fn activate(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let prev = load_for(call, "connection.activate").await?;
    let outcome = check_stored(call, &prev).await?;
    let next = record_check(
        call,
        prev,
        &outcome,
        "connection.activate",
        Some(ConnectionStatus::Connected),
    )
    .await?;
    match outcome {
        Ok(_) => respond(call, StatusCode::OK, &next),
        Err(e) => Err(e),
    }
}

/// `POST /v1/connections/{id}/deactivate`: takes the connection out of use; nothing
/// uses it until it is activated again.
pub async fn deactivate(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let prev = load_for(call, "connection.deactivate").await?;
    let mut next = prev.clone();
    next.status = ConnectionStatus::Inactive;
    let next = save_status(call, &prev, next, "connection.deactivate").await?;
    respond(call, StatusCode::OK, &next)
}

/// `POST /v1/connections/{id}/test`: checks the stored credentials now and records
/// the result on the connection.
pub async fn test_existing(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let prev = load_for(call, "connection.test").await?;
    let outcome = check_stored(call, &prev).await?;
    let next = record_check(call, prev, &outcome, "connection.test", None).await?;
    let mut body = json!({ "ok": outcome.is_ok(), "connection": view(call, &next) });
    if let Err(e) = &outcome {
        body["error"] = json!({ "code": e.code(), "message": e.to_string() });
    }
    http::json_versioned(StatusCode::OK, &body, next.version)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TestBody {
    provider: String,
    #[serde(default)]
    auth_method: Option<String>,
    credentials: BTreeMap<String, String>,
}

/// `POST /v1/connections/test`: checks credentials before saving; stores nothing.
pub async fn test_new(call: &Call<'_>) -> Result<Response<Body>, ApiError> {
    let body: TestBody = http::json_body(&call.req)?;
    let (provider, method) = resolve_method(call, &body.provider, body.auth_method.as_deref())?;
    let fields = method
        .validate(&body.credentials, &call.app.url_policy())
        .map_err(ApiError::invalid_fields)?;
    let started = std::time::Instant::now();
    let outcome = verify(call, provider, method, &fields).await;
    let latency_ms = started.elapsed().as_millis() as u64;
    let body = match outcome {
        Ok(identity) => {
            json!({ "ok": true, "connected_as": identity_json(&identity), "latency_ms": latency_ms })
        }
        Err(e) => json!({
            "ok": false,
            "error": { "code": e.code(), "message": e.to_string() },
            "latency_ms": latency_ms,
        }),
    };
    http::json(StatusCode::OK, &body)
}

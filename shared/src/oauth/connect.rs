//! Connecting an OAuth provider: `start` builds the authorize URL and remembers the
//! flow; `finish` (the callback) consumes it, exchanges the code, learns who the
//! connection acts as, stores the tokens sealed and sends the browser back.

use std::collections::{BTreeMap, BTreeSet};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use super::client::{self, ClientApp, Endpoints, OAuthError};
use super::flow::{self, Flows, PendingFlow};
use super::tokens;
use crate::app::App;
use crate::app_credentials::{self, AppCredentialStore};
use crate::audit::AuditEntry;
use crate::connections::{AppSource, Connection, Connections, Reach, WriteError};
use crate::connector::{CheckOutcome, Connector, personal_key};
use crate::domain::{ConnectionId, ConnectionStatus, Label, Principal, TenantId, now, rfc3339};
use crate::http::ApiError;
use crate::providers::{AuthMethod, AuthType, Fields, Provider, render};

/// The body of `POST /v1/oauth/{provider}/start`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    /// Label of the new connection.
    #[serde(default)]
    pub label: Option<String>,
    /// What the connection is for (`sync:contacts:bidirectional`, `action:log_call`,
    /// `kb_import`); its scopes are asked for. Default: the catalogue's default uses
    /// (sync of contacts and companies both ways), or the tenant app's own scopes.
    #[serde(default)]
    pub uses: Option<Vec<String>>,
    /// Explicit scopes to request instead (each one the provider offers).
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// Where the browser returns; must be on the dashboard allow-list.
    pub return_to: String,
    /// Connection kind (Google: `gmail` or `calendar`).
    #[serde(default)]
    pub kind: Option<String>,
    /// The method's connection fields (Salesforce environment, Zoho data centre, …).
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// Reconnect this existing connection (any status): asks for its granted scopes
    /// together with the new ones.
    #[serde(default)]
    pub connection_id: Option<String>,
}

/// The provider's OAuth method, or a 400 saying it has none.
pub fn oauth_method(provider: &Provider) -> Result<&AuthMethod, ApiError> {
    provider
        .auth
        .iter()
        .find(|m| m.kind == AuthType::Oauth2)
        .ok_or_else(|| {
            ApiError::bad_request(
                "no_oauth",
                format!("{} does not connect with OAuth", provider.name),
            )
        })
}

/// The client app for a tenant and provider: the tenant's own, else the platform's.
pub async fn resolve_app(
    app: &App,
    tenant: &TenantId,
    provider: &str,
    only: Option<AppSource>,
) -> Result<Option<ClientApp>, ApiError> {
    if only != Some(AppSource::Platform)
        && let Some(creds) = AppCredentialStore::new(app.table.clone())
            .get(tenant, provider)
            .await?
    {
        let secret = app
            .envelope
            .open(
                &app_credentials::seal_context(tenant, provider),
                &creds.client_secret,
            )
            .await
            .map_err(ApiError::internal)?;
        let secret = String::from_utf8(secret.to_vec()).map_err(ApiError::internal)?;
        return Ok(Some(ClientApp {
            source: AppSource::Tenant,
            client_id: creds.client_id,
            client_secret: SecretString::from(secret),
            redirect_uri: creds.redirect_uri,
            scopes: creds.scopes,
            settings: creds.settings,
        }));
    }
    if only == Some(AppSource::Tenant) {
        return Ok(None);
    }
    let platform = app
        .platform
        .oauth_app(provider)
        .await
        .map_err(ApiError::internal)?;
    Ok(platform.map(|p| ClientApp {
        source: AppSource::Platform,
        client_id: p.client_id,
        client_secret: p.client_secret,
        redirect_uri: None,
        scopes: None,
        settings: BTreeMap::new(),
    }))
}

/// Checks `return_to` against the deployment's dashboard origins.
pub fn allowed_return_to(app: &App, value: &str) -> Result<Url, ApiError> {
    let refuse = || {
        ApiError::bad_request(
            "return_to_not_allowed",
            "return_to must be a URL on one of the deployment's dashboard origins",
        )
    };
    if value.len() > 2048 {
        return Err(refuse());
    }
    let url = Url::parse(value).map_err(|_| refuse())?;
    if !url.username().is_empty() || url.password().is_some() || url.fragment().is_some() {
        return Err(refuse());
    }
    let allowed = app
        .config
        .dashboard_origins
        .iter()
        .any(|o| o.origin() == url.origin());
    if allowed { Ok(url) } else { Err(refuse()) }
}

/// The redirect URI of a provider's callback.
pub fn redirect_uri(app: &App, client: &ClientApp, provider: &str) -> Result<String, ApiError> {
    if let Some(uri) = &client.redirect_uri {
        return Ok(uri.clone());
    }
    let base =
        app.config.public_base_url.as_ref().ok_or_else(|| {
            ApiError::internal("CONDUIT_PUBLIC_BASE_URL is not set; OAuth needs it")
        })?;
    Ok(format!(
        "{}/v1/oauth/{provider}/callback",
        base.as_str().trim_end_matches('/')
    ))
}

/// Most uses or scopes one start may name.
const MAX_ASKED: usize = 50;

/// What a start asks for: the scopes, and the authorize parameters of an incremental
/// reconnect.
struct Asked {
    scopes: Vec<String>,
    extra_params: BTreeMap<String, String>,
}

/// The scopes a start asks for: those `uses` need (default: the catalogue's default
/// uses, or the tenant app's own scopes), or explicit `scopes` the provider offers;
/// on a reconnect, together with what the connection was already granted.
fn scopes_for(
    method: &AuthMethod,
    kind: Option<&str>,
    client: &ClientApp,
    body: (Option<Vec<String>>, Option<Vec<String>>),
    fields: &Fields,
    granted_before: Option<&[String]>,
) -> Result<Asked, ApiError> {
    let model = method.scope_model(kind);
    let fill = |s: &str| render(s, |n| fields.value(n)).unwrap_or_else(|_| s.to_owned());
    let invalid = |m: &str| ApiError::bad_request("invalid_scopes", m.to_owned());
    let well_formed = |s: &String| {
        !s.is_empty() && s.len() <= 256 && !s.chars().any(|c| c.is_whitespace() || c.is_control())
    };
    let chosen = match body {
        (Some(_), Some(_)) => return Err(invalid("give uses or scopes, not both")),
        (Some(uses), None) => {
            if uses.is_empty() || uses.len() > MAX_ASKED {
                return Err(ApiError::bad_request(
                    "invalid_uses",
                    format!("uses: 1 to {MAX_ASKED} entries"),
                ));
            }
            let model = model.ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_uses",
                    "this provider's scopes are not modelled; give scopes",
                )
            })?;
            model
                .to_ask(&uses, &fill)
                .map_err(|e| ApiError::bad_request("invalid_uses", e.0))?
        }
        (None, Some(asked)) => {
            if asked.len() > MAX_ASKED {
                return Err(invalid("at most 50 scopes"));
            }
            if !asked.iter().all(well_formed) {
                return Err(invalid(
                    "scopes are non-empty strings of at most 256 characters without spaces",
                ));
            }
            let mut known: BTreeSet<String> = BTreeSet::new();
            if let Some(m) = model {
                known.extend(m.offered.iter().map(|s| fill(s)));
            }
            known.extend(client.scopes.iter().flatten().cloned());
            let free = model.is_none_or(|m| m.free_form);
            if let Some(s) = asked.iter().find(|s| !free && !known.contains(*s)) {
                return Err(ApiError::bad_request(
                    "unknown_scope",
                    format!(
                        "scope {s:?} is not one this provider offers; choose from: {}",
                        known.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
            asked
        }
        (None, None) => match (&client.scopes, model) {
            (Some(app_scopes), _) => app_scopes.clone(),
            (None, Some(m)) => m
                .to_ask(&m.default_uses, &fill)
                .map_err(|e| ApiError::internal(format!("catalogue default uses: {e}")))?,
            (None, None) => Vec::new(),
        },
    };
    let mut scopes: Vec<String> = Vec::new();
    for s in chosen
        .into_iter()
        .chain(granted_before.into_iter().flatten().cloned())
    {
        if !scopes.contains(&s) {
            scopes.push(s);
        }
    }
    let extra_params = match (granted_before, model) {
        (Some(_), Some(m)) => m.incremental.clone(),
        _ => BTreeMap::new(),
    };
    Ok(Asked {
        scopes,
        extra_params,
    })
}

/// `url` with `params` set (replacing any earlier value of the same name).
fn with_params(url: &str, params: &BTreeMap<String, String>) -> Result<String, ApiError> {
    if params.is_empty() {
        return Ok(url.to_owned());
    }
    let mut parsed = Url::parse(url).map_err(ApiError::internal)?;
    let kept: Vec<(String, String)> = parsed
        .query_pairs()
        .filter(|(k, _)| !params.contains_key(k.as_ref()))
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    parsed
        .query_pairs_mut()
        .clear()
        .extend_pairs(kept)
        .extend_pairs(params);
    Ok(parsed.to_string())
}

/// `POST /v1/oauth/{provider}/start`: the URL to send the admin's browser to.
pub async fn start(
    app: &App,
    who: &Principal,
    request_id: &str,
    provider_id: &str,
    body: StartBody,
) -> Result<String, ApiError> {
    let (provider, method) = may_start(app, who, request_id, provider_id).await?;
    let return_to = allowed_return_to(app, &body.return_to)?;
    let kind = match (&body.kind, method.kinds.is_empty()) {
        (None, true) => None,
        (Some(k), false) if method.kinds.contains_key(k) => Some(k.clone()),
        (_, false) => {
            return Err(ApiError::bad_request(
                "invalid_kind",
                format!(
                    "{} needs a connection kind, one of: {}",
                    provider.name,
                    method.kinds.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        (Some(_), true) => {
            return Err(ApiError::bad_request(
                "invalid_kind",
                format!("{} has no connection kinds", provider.name),
            ));
        }
    };
    let label = body
        .label
        .as_deref()
        .map(Label::parse)
        .transpose()
        .map_err(|e| ApiError::bad_request("invalid_label", e.to_string()))?;
    let fields = method
        .validate(&body.fields, &app.url_policy())
        .map_err(ApiError::invalid_fields)?;
    let store = Connections::new(app.table.clone());
    let reconnecting = match &body.connection_id {
        None if method.personal => {
            // The user's own connection of this kind, if there is one, is asked again
            // (one per user and kind; Google adds the new scopes to the grant).
            let key = personal_key(&method.id, &who.user, kind.as_deref());
            match store.owner_of(&who.tenant, &provider.id, &key).await? {
                Some(id) => store
                    .get(&who.tenant, &id)
                    .await?
                    .filter(|c| c.owner.as_ref() == Some(&who.user)),
                None => None,
            }
        }
        None => None,
        Some(raw) => {
            let id = ConnectionId::parse(raw)
                .map_err(|e| ApiError::bad_request("invalid_id", e.to_string()))?;
            let conn = store
                .get(&who.tenant, &id)
                .await?
                .filter(|c| c.provider == provider.id && c.reach(who) != Reach::Hidden)
                .ok_or_else(|| ApiError::NotFound(format!("no {} connection {id}", provider.id)))?;
            if conn.reach(who) == Reach::Existence {
                return Err(refused(
                    app,
                    who,
                    request_id,
                    &provider.id,
                    "only its owner may reconnect a personal connection",
                )
                .await);
            }
            if conn.kind != kind {
                return Err(ApiError::bad_request(
                    "invalid_kind",
                    "a reconnect keeps the connection's kind",
                ));
            }
            Some(conn)
        }
    };
    // A personal connection is its user's to connect; a tenant's (a reconnect keeps
    // what the connection is: one made before connections were personal stays the
    // tenant's) needs an admin.
    let personal = match &reconnecting {
        Some(c) => c.owner.is_some(),
        None => method.personal,
    };
    if !personal && !who.is_admin() {
        return Err(refused(
            app,
            who,
            request_id,
            &provider.id,
            "this action needs the admin role",
        )
        .await);
    }
    let client = resolve_app(app, &who.tenant, &provider.id, None)
        .await?
        .ok_or_else(|| ApiError::Conflict {
            code: "oauth_app_required",
            message: format!(
                "no OAuth app is configured for {}: add your app's client id and secret with \
                 PUT /v1/providers/{}/app-credentials",
                provider.name, provider.id
            ),
        })?;
    if !method.app_fields.is_empty() && client.settings.is_empty() {
        return Err(ApiError::Conflict {
            code: "oauth_app_required",
            message: format!(
                "the {} app credentials need their endpoints: PUT /v1/providers/{}/app-credentials",
                provider.name, provider.id
            ),
        });
    }
    let asked = scopes_for(
        method,
        kind.as_deref(),
        &client,
        (body.uses, body.scopes),
        &fields,
        reconnecting.as_ref().map(|c| c.scopes.as_slice()),
    )?;
    let connection_id = reconnecting.map(|c| c.id);
    let scopes = asked.scopes;
    let redirect_uri = redirect_uri(app, &client, &provider.id)?;
    let mut settings = fields.public.clone();
    settings.extend(client.settings.clone());
    let endpoint_fields = Fields {
        public: settings.clone(),
        secret: BTreeMap::new(),
    };
    let endpoints = Endpoints {
        provider,
        method,
        fields: &endpoint_fields,
        origin_override: app.config.provider_origin_override.as_ref(),
    };
    let state = client::new_state();
    let hash = flow::state_hash(&state);
    let (challenge, verifier) = if method.pkce {
        let (c, v) = client::pkce_pair();
        (Some(c), Some(v))
    } else {
        (None, None)
    };
    let authorize_url = endpoints
        .authorize_url(&client, &redirect_uri, &state, &scopes, challenge)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let authorize_url = with_params(&authorize_url, &asked.extra_params)?;
    let sealed = match &verifier {
        Some(v) => Some(
            app.envelope
                .seal(
                    &flow::seal_context(&who.tenant, &hash),
                    v.expose_secret().as_bytes(),
                )
                .await
                .map_err(ApiError::internal)?,
        ),
        None => None,
    };
    let created = now();
    let pending = PendingFlow {
        tenant: who.tenant.clone(),
        user: who.user.clone(),
        personal,
        provider: provider.id.clone(),
        kind,
        label: label.map(|l| l.as_str().to_owned()),
        scopes,
        redirect_uri,
        return_to: return_to.to_string(),
        settings,
        app: client.source,
        verifier: sealed,
        connection_id,
        created_at: created,
        ttl: (created + flow::FLOW_TTL).unix_timestamp(),
    };
    Flows::new(app.table.clone()).put(&hash, &pending).await?;
    let audit = AuditEntry::by(
        who,
        request_id,
        "oauth.start",
        format!("provider/{}", provider.id),
    )
    .detail("provider", &provider.id)
    .detail("app", client.source)
    .detail("scopes", &pending.scopes);
    app.audit.record(&audit).await?;
    Ok(authorize_url)
}

/// The provider and its OAuth method, if `who` may start connecting it: an admin
/// anything, another user only a personal connection (refused before the body is
/// read: a 403, audited).
pub async fn may_start<'a>(
    app: &'a App,
    who: &Principal,
    request_id: &str,
    provider_id: &str,
) -> Result<(&'a Provider, &'a AuthMethod), ApiError> {
    let provider = app
        .catalogue
        .provider(provider_id)
        .ok_or_else(|| ApiError::NotFound(format!("no provider {provider_id}")))?;
    let method = oauth_method(provider)?;
    if !method.personal && !who.is_admin() {
        return Err(refused(
            app,
            who,
            request_id,
            &provider.id,
            "this action needs the admin role",
        )
        .await);
    }
    Ok((provider, method))
}

/// A start the caller may not make: audited as denied, a 403.
async fn refused(
    app: &App,
    who: &Principal,
    request_id: &str,
    provider: &str,
    message: &str,
) -> ApiError {
    let audit = AuditEntry::by(
        who,
        request_id,
        "oauth.start",
        format!("provider/{provider}"),
    )
    .failed(crate::audit::Outcome::Denied, "forbidden")
    .detail("provider", provider);
    if let Err(e) = app.audit.record(&audit).await {
        tracing::error!(error = %e, "audit write failed");
    }
    ApiError::Forbidden(message.into())
}

/// How a callback ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    /// Send the browser here (always the flow's allow-listed `return_to`).
    Redirect(String),
    /// No flow to return to (bad, replayed, expired or foreign state): show an error.
    Invalid {
        /// Stable code.
        code: &'static str,
        /// What to tell the person.
        message: &'static str,
    },
}

fn back(return_to: &str, pairs: &[(&str, &str)]) -> Finish {
    match Url::parse(return_to) {
        Ok(mut url) => {
            url.query_pairs_mut().extend_pairs(pairs);
            Finish::Redirect(url.to_string())
        }
        Err(_) => Finish::Invalid {
            code: "invalid_state",
            message: "This sign-in link is invalid.",
        },
    }
}

/// A provider's error code, made safe for a URL and a log line.
fn reason(code: &str) -> String {
    let r: String = code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(64)
        .collect();
    if r.is_empty() {
        "provider_error".into()
    } else {
        r
    }
}

/// `GET /v1/oauth/{provider}/callback`: consumes the flow and connects.
pub async fn finish(
    app: &App,
    provider_id: &str,
    query: &BTreeMap<String, String>,
    request_id: &str,
) -> Result<Finish, ApiError> {
    const INVALID: Finish = Finish::Invalid {
        code: "invalid_state",
        message: "This sign-in link is invalid, has expired or was already used. \
                  Start connecting again from the dashboard.",
    };
    let Some(provider) = app.catalogue.provider(provider_id) else {
        return Ok(INVALID);
    };
    let Some(state) = query
        .get("state")
        .filter(|s| !s.is_empty() && s.len() <= 512)
    else {
        return Ok(INVALID);
    };
    let Some((hash, pending)) = Flows::new(app.table.clone())
        .take(state, &provider.id, now())
        .await?
    else {
        tracing::warn!(provider = %provider.id, "oauth callback with an unknown, used, expired or foreign state");
        return Ok(INVALID);
    };
    let who = Principal {
        tenant: pending.tenant.clone(),
        user: pending.user.clone(),
        role: crate::domain::Role::Admin,
    };
    let fail = |code: &str| {
        let audit = AuditEntry::by(
            &who,
            request_id,
            "oauth.callback",
            format!("provider/{}", provider.id),
        )
        .failed(crate::audit::Outcome::Failure, code)
        .detail("provider", &provider.id);
        (
            audit,
            back(&pending.return_to, &[("status", "error"), ("reason", code)]),
        )
    };
    let finish_failed = |code: String| async move {
        let (audit, finish) = fail(&code);
        tracing::info!(provider = %provider.id, reason = %code, "oauth connect failed");
        app.audit.record(&audit).await?;
        Ok::<Finish, ApiError>(finish)
    };
    if let Some(error) = query.get("error") {
        return finish_failed(reason(error)).await;
    }
    let Some(code) = query
        .get("code")
        .filter(|c| !c.is_empty() && c.len() <= 4096)
    else {
        return finish_failed("missing_code".into()).await;
    };
    match connect(
        app,
        provider,
        &who,
        request_id,
        &hash,
        pending.clone(),
        code,
        query,
    )
    .await
    {
        Ok(id) => Ok(back(
            &pending.return_to,
            &[("status", "connected"), ("connection_id", id.as_str())],
        )),
        Err(Failure::Reason(code)) => finish_failed(code).await,
        Err(Failure::Api(e)) => Err(e),
    }
}

/// RFC 9207: an `iss` on the callback must be the provider's issuer (catalogue data,
/// or the custom app's setting), compared as a simple string; a provider that always
/// sends it must have sent it. Without a known issuer, `iss` cannot be checked.
fn check_issuer(
    method: &AuthMethod,
    fields: &Fields,
    query: &BTreeMap<String, String>,
) -> Result<(), Failure> {
    let expected = method
        .issuer
        .as_deref()
        .and_then(|t| render(t, |name| fields.value(name)).ok())
        .filter(|i| !i.is_empty());
    match (query.get("iss"), expected) {
        (Some(sent), Some(expected)) if *sent != expected => {
            tracing::warn!(expected = %expected, "oauth callback from another issuer");
            Err(Failure::Reason("issuer_mismatch".into()))
        }
        (None, Some(_)) if method.authorization_response_iss_parameter_supported => {
            Err(Failure::Reason("issuer_missing".into()))
        }
        _ => Ok(()),
    }
}

enum Failure {
    Reason(String),
    Api(ApiError),
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Self::Api(e)
    }
}

impl From<OAuthError> for Failure {
    /// The reason the dashboard is sent: what went wrong, as far as it can act on it.
    fn from(e: OAuthError) -> Self {
        Self::Reason(match e {
            OAuthError::Grant { .. } => "code_rejected".to_owned(),
            OAuthError::Client { .. } => "oauth_app_rejected".to_owned(),
            OAuthError::Refused { code } => reason(&code),
            OAuthError::Transient { .. } => "provider_unavailable".to_owned(),
            OAuthError::Malformed(_) => "invalid_token_response".to_owned(),
            OAuthError::Config(_) => "oauth_config".to_owned(),
        })
    }
}

#[allow(clippy::too_many_arguments)]
async fn connect(
    app: &App,
    provider: &Provider,
    who: &Principal,
    request_id: &str,
    hash: &str,
    mut pending: PendingFlow,
    code: &str,
    query: &BTreeMap<String, String>,
) -> Result<ConnectionId, Failure> {
    let method = oauth_method(provider)?;
    zoho_data_centre(method, &mut pending.settings, query);
    let client = resolve_app(app, &pending.tenant, &provider.id, Some(pending.app))
        .await?
        .ok_or_else(|| Failure::Reason("oauth_app_missing".into()))?;
    let verifier = match &pending.verifier {
        Some(sealed) => {
            let plain = app
                .envelope
                .open(&flow::seal_context(&pending.tenant, hash), sealed)
                .await
                .map_err(ApiError::internal)?;
            Some(SecretString::from(
                String::from_utf8(plain.to_vec()).map_err(ApiError::internal)?,
            ))
        }
        None => None,
    };
    let mut fields = Fields {
        public: pending.settings.clone(),
        secret: BTreeMap::new(),
    };
    check_issuer(method, &fields, query)?;
    let origin = app.config.provider_origin_override.as_ref();
    let grant = Endpoints {
        provider,
        method,
        fields: &fields,
        origin_override: origin,
    }
    .exchange_code(
        &app.http,
        &client,
        &pending.redirect_uri,
        code,
        verifier.as_ref(),
    )
    .await?;
    let at = now();
    fields.public.extend(tokens::settings(method, &grant)?);
    fields.secret = tokens::secrets(&grant, None);
    let connector = Connector {
        provider,
        method,
        fields: &fields,
        origin_override: origin,
    };
    let (outcome, checked_scopes) = connector.check_detail(&app.http).await;
    let identity = match outcome {
        CheckOutcome::Verified(identity) => identity,
        CheckOutcome::Rejected { .. } => return Err(Failure::Reason("identity_rejected".into())),
        CheckOutcome::RateLimited { .. } | CheckOutcome::Unavailable(_) => {
            return Err(Failure::Reason("provider_unavailable".into()));
        }
    };
    let scopes = grant
        .scopes
        .clone()
        .filter(|s| !s.is_empty())
        .or(checked_scopes.filter(|s| !s.is_empty()))
        .unwrap_or_else(|| pending.scopes.clone());
    let account_key = if pending.personal {
        Some(personal_key(
            &method.id,
            &pending.user,
            pending.kind.as_deref(),
        ))
    } else {
        connector.account_key(&identity)
    };
    let token = tokens::state(
        method,
        &grant,
        fields.secret.contains_key("refresh_token"),
        pending.app,
        at,
        None,
    );
    let store = Connections::new(app.table.clone());
    // Reconnecting: the connection the admin named, or the one already holding this
    // provider account (a second connect of the same account re-authorises it).
    let existing_id = match &pending.connection_id {
        Some(id) => Some(id.clone()),
        None => match &account_key {
            Some(key) => match store
                .owner_of(&pending.tenant, &provider.id, key)
                .await
                .map_err(ApiError::from)?
            {
                Some(owner) => Some(owner),
                // An account connected before keys were hashed holds the old marker.
                None if pending.personal => None,
                None => match connector.legacy_account_key(&identity) {
                    Some(legacy) => store
                        .legacy_owner(&pending.tenant, &provider.id, &legacy)
                        .await
                        .map_err(ApiError::from)?,
                    None => None,
                },
            },
            None => None,
        },
    };
    let existing = match existing_id {
        Some(id) => store
            .get(&pending.tenant, &id)
            .await
            .map_err(ApiError::from)?,
        None => None,
    };
    let plain: BTreeMap<&str, &str> = fields
        .secret
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose_secret()))
        .collect();
    let public = fields.public.clone();
    match existing {
        Some(prev) if prev.owner.is_some() && prev.owner.as_ref() != Some(&pending.user) => {
            Err(Failure::Reason("not_owner".into()))
        }
        Some(prev) => {
            let sealed = app
                .envelope
                .seal_json(&prev.seal_context(), &plain)
                .await
                .map_err(ApiError::internal)?;
            let mut next = prev.clone();
            next.status = ConnectionStatus::Connected;
            next.settings = public;
            next.masked = BTreeMap::new();
            next.secrets = sealed;
            next.identity = Some(identity);
            next.scopes = scopes;
            next.scopes_missing = Vec::new();
            next.account_key = account_key;
            next.last_error = None;
            next.checked_at = Some(at);
            next.updated_at = at;
            next.updated_by = who.user.clone();
            next.version = prev.version + 1;
            next.token = Some(token);
            next.lease_holder = None;
            next.lease_until = None;
            let audit = AuditEntry::by(
                who,
                request_id,
                "connection.reconnect",
                format!("connection/{}", prev.id),
            )
            .detail("provider", &provider.id)
            .detail("status_before", prev.status)
            .detail("scopes", &next.scopes);
            match store.save(&prev, &next, &audit).await {
                Ok(()) => Ok(next.id),
                Err(WriteError::Duplicate(_)) => {
                    Err(Failure::Reason("account_already_connected".into()))
                }
                Err(WriteError::Stale) => Err(Failure::Reason("connection_changed".into())),
                Err(WriteError::Store(e)) => Err(ApiError::from(e).into()),
            }
        }
        None => {
            let id = ConnectionId::generate();
            let sealed = app
                .envelope
                .seal_json(
                    &crate::connections::seal_context(&pending.tenant, &id),
                    &plain,
                )
                .await
                .map_err(ApiError::internal)?;
            let label = pending
                .label
                .as_deref()
                .map(Label::lossy)
                .unwrap_or_else(|| {
                    let who = identity
                        .email
                        .as_deref()
                        .or(identity.name.as_deref())
                        .or(identity.account.as_deref())
                        .unwrap_or("connected");
                    Label::lossy(&format!("{} ({who})", provider.name))
                });
            let conn = Connection {
                id: id.clone(),
                tenant: pending.tenant.clone(),
                provider: provider.id.clone(),
                auth_method: method.id.clone(),
                kind: pending.kind.clone(),
                label,
                status: ConnectionStatus::Connected,
                settings: public,
                masked: BTreeMap::new(),
                secrets: sealed,
                identity: Some(identity),
                scopes,
                scopes_missing: Vec::new(),
                account_key,
                last_error: None,
                checked_at: Some(at),
                created_at: at,
                created_by: who.user.clone(),
                updated_at: at,
                updated_by: who.user.clone(),
                version: 1,
                token: Some(token),
                lease_holder: None,
                lease_until: None,
                allow_automations: false,
                owner: pending.personal.then(|| pending.user.clone()),
            };
            let audit = AuditEntry::by(
                who,
                request_id,
                "connection.connect",
                format!("connection/{id}"),
            )
            .detail("provider", &provider.id)
            .detail("app", pending.app)
            .detail("scopes", &conn.scopes)
            .detail("connected_at", rfc3339(at));
            match store.create(&conn, &audit).await {
                Ok(()) => Ok(id),
                Err(WriteError::Duplicate(_)) => {
                    Err(Failure::Reason("account_already_connected".into()))
                }
                Err(WriteError::Stale) => Err(Failure::Reason("connection_changed".into())),
                Err(WriteError::Store(e)) => Err(ApiError::from(e).into()),
            }
        }
    }
}

/// Zoho sends the browser back with the data centre that holds the account
/// (`accounts-server`); the code must be exchanged there. Only a data centre the
/// catalogue lists is taken.
fn zoho_data_centre(
    method: &AuthMethod,
    settings: &mut BTreeMap<String, String>,
    query: &BTreeMap<String, String>,
) {
    let (Some(field), Some(server)) = (method.field("data_centre"), query.get("accounts-server"))
    else {
        return;
    };
    let Some(host) = Url::parse(server)
        .ok()
        .filter(|u| u.scheme() == "https")
        .and_then(|u| u.host_str().map(str::to_owned))
    else {
        return;
    };
    if let Some(dc) = host.strip_prefix("accounts.zoho.")
        && field.options.iter().any(|o| o == dc)
    {
        settings.insert("data_centre".into(), dc.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::Catalogue;

    fn reason(r: Result<(), Failure>) -> Option<String> {
        match r {
            Ok(()) => None,
            Err(Failure::Reason(r)) => Some(r),
            Err(Failure::Api(e)) => panic!("unexpected {e:?}"),
        }
    }

    #[test]
    fn the_callback_issuer_follows_rfc_9207() {
        let catalogue = Catalogue::get().unwrap();
        let salesforce = catalogue.provider("salesforce").unwrap();
        let mut method = salesforce.auth_method(Some("oauth2")).unwrap().clone();
        let fields = Fields {
            public: [("login_domain".to_owned(), "test.salesforce.com".to_owned())].into(),
            secret: BTreeMap::new(),
        };
        let iss = |v: &str| BTreeMap::from([("iss".to_owned(), v.to_owned())]);
        assert_eq!(
            reason(check_issuer(
                &method,
                &fields,
                &iss("https://test.salesforce.com")
            )),
            None
        );
        assert_eq!(
            reason(check_issuer(
                &method,
                &fields,
                &iss("https://login.salesforce.com")
            ))
            .as_deref(),
            Some("issuer_mismatch")
        );
        // Absent: accepted unless the server always sends it.
        assert_eq!(
            reason(check_issuer(&method, &fields, &BTreeMap::new())),
            None
        );
        method.authorization_response_iss_parameter_supported = true;
        assert_eq!(
            reason(check_issuer(&method, &fields, &BTreeMap::new())).as_deref(),
            Some("issuer_missing")
        );
        // No issuer known (a custom app without the setting): nothing to compare.
        let custom = catalogue.provider("custom_oauth").unwrap();
        let custom = custom.auth_method(Some("oauth2")).unwrap();
        let none = Fields {
            public: BTreeMap::new(),
            secret: BTreeMap::new(),
        };
        assert_eq!(
            reason(check_issuer(custom, &none, &iss("https://any.example"))),
            None
        );
    }
}

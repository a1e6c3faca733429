//! The token lifecycle: a valid access token for any connection, refreshed before it
//! expires by exactly one refresher at a time.
//!
//! **The lease.** A refresher first takes the connection's lease with one conditional
//! update (no lease, or an expired one), which also bumps the version and returns the
//! item as it now is — so the holder always decides on the latest token: a refresh
//! that just happened is not repeated (with rotating refresh tokens a second refresh
//! would present a retired token and the provider would kill the grant). Saving the new
//! tokens replaces the item at the leased version and drops the lease in the same
//! write. Callers that find the lease taken wait for the holder's result.
//!
//! **Failures.** `invalid_grant` (and the providers' equivalents) → `needs_reauth`, a
//! failure record, an audit entry and an `integration.connection.reauth_required`
//! event. A rejected app → status `error`. Anything transient → the status stays, the
//! failure is counted on the connection and the sweep retries with backoff.

use std::collections::BTreeMap;
use std::time::Duration as StdDuration;

use futures::StreamExt;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::client::{ClientApp, Endpoints, OAuthError};
use super::connect::resolve_app;
use super::tokens;
use crate::app::App;
use crate::audit::{AuditEntry, Outcome};
use crate::connections::{AppSource, Connection, Connections, LastError, TokenState};
use crate::connector::Connector;
use crate::domain::{ConnectionId, ConnectionStatus, TenantId, now, rfc3339};
use crate::metrics::{self, Metric};
use crate::providers::{AuthMethod, AuthType, Fields, Provider};
use crate::store::StoreError;

/// How long a lease holds if its holder dies.
const LEASE: Duration = Duration::seconds(30);
/// How long a caller waits for another refresher before giving up.
const WAIT: StdDuration = StdDuration::from_secs(20);
/// How often a waiting caller looks again.
const POLL: StdDuration = StdDuration::from_millis(50);
/// Failure records are kept this long.
const FAILURE_RETENTION: Duration = Duration::days(30);

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// No such connection.
    #[error("no such connection")]
    NotFound,
    /// The grant is gone; an admin must reconnect.
    #[error("the connection needs to be reconnected")]
    NeedsReauth,
    /// The connection is switched off or in error.
    #[error("the connection is {0}")]
    Unusable(&'static str),
    /// The provider could not refresh the token now; try later.
    #[error("the provider is unavailable: {0}")]
    Unavailable(String),
    /// The connection kept changing while it was being saved.
    #[error("the connection changed while its token was being refreshed")]
    Changed,
    /// Something of ours failed.
    #[error("internal: {0}")]
    Internal(String),
    /// The store failed (a throttle or conflict past its retries can be retried).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The OAuth app could not be resolved: a store that stayed busy stays retryable (a
/// 503 to an API caller, the connection left due in a sweep); anything else is ours.
fn app_error(e: crate::http::ApiError) -> TokenError {
    match e {
        crate::http::ApiError::Unavailable { .. } => TokenError::Store(StoreError::Throttled),
        e => TokenError::Internal(e.to_string()),
    }
}

/// A connection with usable credentials.
#[derive(Clone)]
pub struct Credentials {
    /// The connection as read.
    pub connection: Connection,
    /// Its settings and secrets (the access token for OAuth connections).
    pub fields: Fields,
}

impl Credentials {
    /// The access token generation these credentials carry (0 for non-OAuth).
    pub fn generation(&self) -> u64 {
        self.connection.token.as_ref().map_or(0, |t| t.generation)
    }

    /// The access token (OAuth connections).
    pub fn access_token(&self) -> Option<&SecretString> {
        self.fields.secret.get("access_token")
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("connection", &self.connection.id)
            .field("fields", &self.fields)
            .finish()
    }
}

/// Why a refresh is being attempted.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    /// A caller is about to use a token inside the refresh window.
    Window,
    /// The provider answered 401 to the token of this generation.
    Rejected(u64),
    /// The scheduled sweep found it due.
    Sweep,
}

/// What the sweep did with one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SweepOutcome {
    /// A new access token was stored.
    Refreshed,
    /// Someone refreshed it already; nothing to do.
    Fresh,
    /// Another refresher holds the lease.
    Busy,
    /// A token without an expiry was confirmed active by introspection.
    Checked,
    /// A transient failure; it will be retried with backoff.
    Retrying,
    /// The grant is gone: needs_reauth.
    Reauth,
    /// The app was rejected or is missing: status error.
    Failed,
    /// It vanished or is not an OAuth connection.
    Skipped,
}

/// Counts of a sweep.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SweepReport {
    /// Due connections found in the index.
    pub due: u64,
    /// New tokens stored.
    pub refreshed: u64,
    /// Already fresh.
    pub fresh: u64,
    /// Held by another refresher.
    pub busy: u64,
    /// Confirmed by introspection.
    pub checked: u64,
    /// Transient failures (will retry).
    pub retrying: u64,
    /// Moved to needs_reauth.
    pub reauth: u64,
    /// Moved to error.
    pub failed: u64,
    /// Vanished or not OAuth.
    pub skipped: u64,
    /// Left for the next run (time ran out).
    pub deferred: u64,
}

impl SweepReport {
    fn add(&mut self, o: SweepOutcome) {
        let slot = match o {
            SweepOutcome::Refreshed => &mut self.refreshed,
            SweepOutcome::Fresh => &mut self.fresh,
            SweepOutcome::Busy => &mut self.busy,
            SweepOutcome::Checked => &mut self.checked,
            SweepOutcome::Retrying => &mut self.retrying,
            SweepOutcome::Reauth => &mut self.reauth,
            SweepOutcome::Failed => &mut self.failed,
            SweepOutcome::Skipped => &mut self.skipped,
        };
        *slot += 1;
    }
}

/// The event detail of `integration.connection.reauth_required`.
#[derive(Debug, Serialize)]
struct ReauthEvent<'a> {
    tenant_id: &'a str,
    connection_id: &'a str,
    provider: &'a str,
    reason: &'a str,
    at: String,
}

/// A refresh failure, kept for the operator (never a provider body or a token).
#[derive(Debug, Serialize, Deserialize)]
pub struct TokenFailure {
    /// The connection.
    pub connection_id: ConnectionId,
    /// Its provider.
    pub provider: String,
    /// Stable code.
    pub code: String,
    /// What happened.
    pub message: String,
    /// Consecutive failures including this one.
    pub attempt: u32,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// DynamoDB TTL.
    pub ttl: i64,
}

/// The token service of a function.
pub struct Tokens<'a> {
    app: &'a App,
    actor: &'a str,
    request_id: String,
    /// Client apps read during this service's life (one sweep, one request): a sweep
    /// of thousands of connections reads each tenant's app once.
    apps: std::sync::Mutex<AppCache>,
}

type AppCache =
    std::collections::HashMap<(String, String, AppSource), Option<std::sync::Arc<ClientApp>>>;

impl<'a> Tokens<'a> {
    /// The service, acting as `actor` (the function's name, for audit entries).
    pub fn new(app: &'a App, actor: &'a str, request_id: impl Into<String>) -> Self {
        Self {
            app,
            actor,
            request_id: request_id.into(),
            apps: std::sync::Mutex::new(AppCache::new()),
        }
    }

    /// The client app of a grant (cached for this service's life).
    async fn client_app(
        &self,
        tenant: &TenantId,
        provider: &str,
        source: AppSource,
    ) -> Result<Option<std::sync::Arc<ClientApp>>, TokenError> {
        let key = (tenant.as_str().to_owned(), provider.to_owned(), source);
        if let Some(hit) = self.apps.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(hit);
        }
        let app = resolve_app(self.app, tenant, provider, Some(source))
            .await
            .map_err(app_error)?
            .map(std::sync::Arc::new);
        if let Ok(mut cache) = self.apps.lock() {
            cache.insert(key, app.clone());
        }
        Ok(app)
    }

    fn provider(
        &self,
        conn: &Connection,
    ) -> Result<(&'static Provider, &'static AuthMethod), TokenError> {
        let provider =
            self.app.catalogue.provider(&conn.provider).ok_or_else(|| {
                TokenError::Internal(format!("unknown provider {}", conn.provider))
            })?;
        let method = provider
            .auth_method(Some(&conn.auth_method))
            .ok_or_else(|| {
                TokenError::Internal(format!("unknown auth method {}", conn.auth_method))
            })?;
        Ok((provider, method))
    }

    /// The connections' store.
    fn store(&self) -> Connections {
        Connections::new(self.app.table.clone())
    }

    async fn read(&self, tenant: &TenantId, id: &ConnectionId) -> Result<Connection, TokenError> {
        self.store()
            .get(tenant, id)
            .await?
            .ok_or(TokenError::NotFound)
    }

    async fn open(&self, conn: Connection) -> Result<Credentials, TokenError> {
        let secret: BTreeMap<String, String> = self
            .app
            .envelope
            .open_json(&conn.seal_context(), &conn.secrets)
            .await
            .map_err(|e| TokenError::Internal(e.to_string()))?;
        Ok(Credentials {
            fields: Fields {
                public: conn.settings.clone(),
                secret: secret
                    .into_iter()
                    .map(|(k, v)| (k, SecretString::from(v)))
                    .collect(),
            },
            connection: conn,
        })
    }

    fn usable(conn: &Connection) -> Result<(), TokenError> {
        match conn.status {
            ConnectionStatus::Connected | ConnectionStatus::Paused | ConnectionStatus::Error => {
                Ok(())
            }
            ConnectionStatus::NeedsReauth => Err(TokenError::NeedsReauth),
            ConnectionStatus::Inactive => Err(TokenError::Unusable("inactive")),
        }
    }

    /// Valid credentials for a connection: for OAuth, an access token refreshed first
    /// when it is inside the refresh window.
    pub async fn credentials(
        &self,
        tenant: &TenantId,
        id: &ConnectionId,
    ) -> Result<Credentials, TokenError> {
        let conn = self.read(tenant, id).await?;
        Self::usable(&conn)?;
        match &conn.token {
            Some(t) if t.has_refresh_token && tokens::needs_refresh(t, now()) => {
                self.refresh(tenant, id, Trigger::Window).await
            }
            _ => self.open(conn).await,
        }
    }

    /// New credentials after the provider answered 401 to `seen` (once per call):
    /// refreshes unless someone already replaced that token.
    pub async fn after_unauthorized(&self, seen: &Credentials) -> Result<Credentials, TokenError> {
        let conn = &seen.connection;
        match &conn.token {
            Some(t) if t.has_refresh_token => {
                self.refresh(&conn.tenant, &conn.id, Trigger::Rejected(seen.generation()))
                    .await
            }
            _ => Err(TokenError::Unavailable(
                "the provider rejected the credentials".into(),
            )),
        }
    }

    /// Sends a request built by `build` with credentials the caller keeps between
    /// requests (from [`Tokens::credentials`]); after a 401, refreshes once and retries,
    /// leaving the fresh credentials in `creds`.
    pub async fn send_using<F>(
        &self,
        creds: &mut Credentials,
        build: F,
    ) -> Result<reqwest::Response, TokenError>
    where
        F: Fn(&Connector<'_>, &reqwest::Client) -> Result<reqwest::RequestBuilder, String>,
    {
        let resp = self.send_once(creds, &build).await?;
        if resp.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        *creds = self.after_unauthorized(creds).await?;
        self.send_once(creds, &build).await
    }

    /// Sends a provider request with valid credentials; on a 401 refreshes once and
    /// sends it again. `build` makes the request from a connector (which puts the
    /// credentials on it).
    pub async fn send<F>(
        &self,
        tenant: &TenantId,
        id: &ConnectionId,
        build: F,
    ) -> Result<reqwest::Response, TokenError>
    where
        F: Fn(&Connector<'_>, &reqwest::Client) -> Result<reqwest::RequestBuilder, String>,
    {
        let creds = self.credentials(tenant, id).await?;
        let resp = self.send_once(&creds, &build).await?;
        if resp.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let fresh = self.after_unauthorized(&creds).await?;
        self.send_once(&fresh, &build).await
    }

    async fn send_once<F>(
        &self,
        creds: &Credentials,
        build: &F,
    ) -> Result<reqwest::Response, TokenError>
    where
        F: Fn(&Connector<'_>, &reqwest::Client) -> Result<reqwest::RequestBuilder, String>,
    {
        let (provider, method) = self.provider(&creds.connection)?;
        let connector = Connector {
            provider,
            method,
            fields: &creds.fields,
            origin_override: self.app.config.provider_origin_override.as_ref(),
        };
        let req = build(&connector, &self.app.http).map_err(TokenError::Internal)?;
        let req = connector
            .authorize(req)
            .map_err(|e| TokenError::Internal(e.to_string()))?;
        self.app.http.send(req).await.map_err(|e| {
            TokenError::Unavailable(format!("provider unreachable: {}", e.without_url()))
        })
    }

    /// Takes the lease: returns the connection as it is now, or `None` when another
    /// refresher holds it.
    async fn lease(
        &self,
        tenant: &TenantId,
        id: &ConnectionId,
        holder: &str,
    ) -> Result<Option<Connection>, TokenError> {
        let at = now();
        let result = self
            .store()
            .lease(tenant, id, holder, millis(at), millis(at + LEASE))
            .await;
        match result {
            Ok(conn) => conn.map(Some).ok_or(TokenError::NotFound),
            Err(StoreError::ConditionFailed) => {
                // Held by someone else, or the connection is gone.
                self.read(tenant, id).await?;
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Drops the lease without changing the tokens.
    async fn release(&self, conn: &Connection, holder: &str) -> Result<Connection, TokenError> {
        self.store()
            .release(conn, holder)
            .await?
            .ok_or(TokenError::NotFound)
    }

    fn still_needed(conn: &Connection, trigger: Trigger, at: OffsetDateTime) -> bool {
        let Some(t) = &conn.token else { return false };
        if !t.has_refresh_token {
            return false;
        }
        match trigger {
            Trigger::Window => tokens::needs_refresh(t, at),
            Trigger::Rejected(generation) => t.generation == generation,
            Trigger::Sweep => conn.refresh_due().is_some_and(|due| due <= at),
        }
    }

    async fn refresh(
        &self,
        tenant: &TenantId,
        id: &ConnectionId,
        trigger: Trigger,
    ) -> Result<Credentials, TokenError> {
        let holder = ulid::Ulid::new().to_string();
        let started = tokio::time::Instant::now();
        let mut failures_seen: Option<u32> = None;
        loop {
            if let Some(leased) = self.lease(tenant, id, &holder).await? {
                if let Err(e) = Self::usable(&leased) {
                    self.release(&leased, &holder).await?;
                    return Err(e);
                }
                if !Self::still_needed(&leased, trigger, now()) {
                    let released = self.release(&leased, &holder).await?;
                    return self.open(released).await;
                }
                return match self.refresh_leased(leased, &holder).await? {
                    Refreshed::Done(conn) => self.open(conn).await,
                    Refreshed::Kept(conn) if !conn_expired(&conn) => self.open(conn).await,
                    Refreshed::Kept(_) => Err(TokenError::Unavailable(
                        "the provider could not refresh the token; retrying later".into(),
                    )),
                    Refreshed::Reauth => Err(TokenError::NeedsReauth),
                    Refreshed::Failed(code) => Err(TokenError::Unusable(code)),
                };
            }
            // Another refresher holds the lease: wait for its result.
            if started.elapsed() > WAIT {
                return Err(TokenError::Unavailable(
                    "another refresh is taking too long".into(),
                ));
            }
            tokio::time::sleep(POLL).await;
            let conn = self.read(tenant, id).await?;
            Self::usable(&conn)?;
            // The holder failed (transiently) while we waited: do not hammer the
            // provider again; use the current token while it lasts.
            let failures = conn.token.as_ref().map_or(0, |t| t.failures);
            if failures_seen.is_some_and(|f| failures > f) {
                return if conn_expired(&conn) {
                    Err(TokenError::Unavailable(
                        "the provider could not refresh the token; retrying later".into(),
                    ))
                } else {
                    self.open(conn).await
                };
            }
            failures_seen.get_or_insert(failures);
            let lease_free = conn.lease_until.is_none_or(|u| u < millis(now()));
            let replaced = match trigger {
                Trigger::Rejected(g) => conn.token.as_ref().is_some_and(|t| t.generation != g),
                _ => !Self::still_needed(&conn, trigger, now()),
            };
            if replaced {
                return self.open(conn).await;
            }
            if !lease_free {
                continue;
            }
        }
    }

    /// Refreshes a leased connection and saves the outcome (dropping the lease).
    async fn refresh_leased(
        &self,
        leased: Connection,
        holder: &str,
    ) -> Result<Refreshed, TokenError> {
        let (provider, method) = self.provider(&leased)?;
        let creds = self.open(leased.clone()).await?;
        let Some(refresh_token) = creds.fields.secret.get("refresh_token") else {
            return self
                .record_failure(
                    leased,
                    &OAuthError::Grant {
                        code: "no_refresh_token".into(),
                    },
                )
                .await;
        };
        let Some(token) = leased.token.clone() else {
            return Ok(Refreshed::Kept(self.release(&leased, holder).await?));
        };
        let client =
            match resolve_app(self.app, &leased.tenant, &leased.provider, Some(token.app)).await {
                Ok(Some(c)) => c,
                Ok(None) => {
                    return self
                        .record_failure(
                            leased,
                            &OAuthError::Client {
                                code: "oauth_app_missing".into(),
                            },
                        )
                        .await;
                }
                Err(e) => return Err(app_error(e)),
            };
        let endpoints = Endpoints {
            provider,
            method,
            fields: &creds.fields,
            origin_override: self.app.config.provider_origin_override.as_ref(),
        };
        match endpoints
            .refresh(&self.app.http, &client, refresh_token)
            .await
        {
            Ok(grant) => {
                let at = now();
                let settings = match tokens::settings(method, &grant) {
                    Ok(s) => s,
                    Err(e) => return self.record_failure(leased, &e).await,
                };
                let secrets = tokens::secrets(&grant, Some(refresh_token));
                let plain: BTreeMap<&str, &str> = secrets
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.expose_secret()))
                    .collect();
                let sealed = self
                    .app
                    .envelope
                    .seal_json(&leased.seal_context(), &plain)
                    .await
                    .map_err(|e| TokenError::Internal(e.to_string()))?;
                let new_token = tokens::state(
                    method,
                    &grant,
                    secrets.contains_key("refresh_token"),
                    token.app,
                    at,
                    Some(&token),
                );
                // The new tokens must never be lost (a rotated refresh token is the
                // only one that still works): if the item changed under the lease,
                // apply them to the item as it is now and save again.
                let mut prev = leased;
                for attempt in 0..3 {
                    let mut next = prev.clone();
                    next.settings.extend(settings.clone());
                    next.secrets = sealed.clone();
                    next.token = Some(new_token.clone());
                    if next.status == ConnectionStatus::Error {
                        next.status = ConnectionStatus::Connected;
                    }
                    next.last_error = None;
                    next.updated_at = at;
                    match self.save(&prev, next, None).await {
                        Ok(saved) => {
                            metrics::count(
                                Metric::RefreshOk,
                                &saved.provider,
                                Some(saved.id.as_str()),
                            );
                            return Ok(Refreshed::Done(saved));
                        }
                        Err(TokenError::Changed) if attempt < 2 => {
                            tracing::warn!(connection_id = %prev.id, "connection changed during refresh; saving the new tokens again");
                            prev = self.read(&prev.tenant, &prev.id).await?;
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(TokenError::Changed)
            }
            Err(e) => self.record_failure(leased, &e).await,
        }
    }

    /// Saves `next` over the leased `prev` (dropping the lease), with a failure record
    /// and audit entry in the same transaction when given. The new tokens must not be
    /// lost: a concurrent change by an admin makes it re-read and apply them again.
    async fn save(
        &self,
        prev: &Connection,
        mut next: Connection,
        failure: Option<(&TokenFailure, Option<&AuditEntry>)>,
    ) -> Result<Connection, TokenError> {
        next.lease_holder = None;
        next.lease_until = None;
        next.version = prev.version + 1;
        let (failure, entry) = failure.unzip();
        let result = self
            .store()
            .save_refreshed(&next, prev.version, failure, entry.flatten())
            .await;
        result.map_err(|e| match e {
            StoreError::ConditionFailed => TokenError::Changed,
            other => other.into(),
        })?;
        Ok(next)
    }

    async fn record_failure(
        &self,
        leased: Connection,
        e: &OAuthError,
    ) -> Result<Refreshed, TokenError> {
        metrics::count(
            Metric::RefreshFailed,
            &leased.provider,
            Some(leased.id.as_str()),
        );
        let at = now();
        let mut next = leased.clone();
        let mut token = next.token.clone().unwrap_or(TokenState {
            app: AppSource::Platform,
            expires_at: None,
            refresh_due: None,
            refreshed_at: None,
            validated_at: None,
            failures: 0,
            generation: 0,
            has_refresh_token: false,
        });
        token.failures += 1;
        let (outcome, code, message) = match e {
            OAuthError::Grant { .. } => (
                Refreshed::Reauth,
                "reauth_required",
                "The provider no longer accepts this connection's authorization; reconnect it."
                    .to_owned(),
            ),
            OAuthError::Client { .. } => (
                Refreshed::Failed("error"),
                "oauth_app_rejected",
                "The provider rejected the OAuth app's credentials; check the app credentials."
                    .to_owned(),
            ),
            other => {
                token.refresh_due = Some(at + backoff(token.failures));
                (
                    Refreshed::Kept(leased.clone()),
                    "refresh_failed",
                    other.to_string(),
                )
            }
        };
        match outcome {
            Refreshed::Reauth => next.status = ConnectionStatus::NeedsReauth,
            Refreshed::Failed(_) => next.status = ConnectionStatus::Error,
            _ => {}
        }
        next.last_error = Some(LastError {
            code: code.to_owned(),
            message: message.clone(),
            at,
        });
        next.token = Some(token.clone());
        let failure = TokenFailure {
            connection_id: leased.id.clone(),
            provider: leased.provider.clone(),
            code: e.code().to_owned(),
            message: message.clone(),
            attempt: token.failures,
            at,
            ttl: (at + FAILURE_RETENTION).unix_timestamp(),
        };
        let permanent = !matches!(outcome, Refreshed::Kept(_));
        let audit = permanent.then(|| {
            AuditEntry::system(
                &leased.tenant,
                self.actor,
                &self.request_id,
                "connection.token_refresh",
                format!("connection/{}", leased.id),
            )
            .failed(Outcome::Failure, e.code())
            .detail("provider", &leased.provider)
            .detail("status_before", leased.status)
            .detail("status_after", next.status)
        });
        tracing::warn!(
            connection_id = %leased.id,
            provider = %leased.provider,
            code = e.code(),
            failures = token.failures,
            "token refresh failed"
        );
        let saved = self
            .save(&leased, next, Some((&failure, audit.as_ref())))
            .await?;
        if matches!(outcome, Refreshed::Reauth) {
            publish_reauth(self.app, &leased, e.code()).await;
        }
        Ok(match outcome {
            Refreshed::Kept(_) => Refreshed::Kept(saved),
            other => other,
        })
    }

    /// The sweep's work on one due connection.
    pub async fn sweep_one(&self, tenant: &TenantId, id: &ConnectionId) -> SweepOutcome {
        match self.sweep_inner(tenant, id).await {
            Ok(o) => o,
            Err(TokenError::NotFound) => SweepOutcome::Skipped,
            Err(e) => {
                tracing::error!(connection_id = %id, error = %e, "sweep failed on a connection");
                SweepOutcome::Retrying
            }
        }
    }

    async fn sweep_inner(
        &self,
        tenant: &TenantId,
        id: &ConnectionId,
    ) -> Result<SweepOutcome, TokenError> {
        let holder = ulid::Ulid::new().to_string();
        let Some(leased) = self.lease(tenant, id, &holder).await? else {
            return Ok(SweepOutcome::Busy);
        };
        let at = now();
        if !Self::still_needed(&leased, Trigger::Sweep, at) {
            self.release(&leased, &holder).await?;
            return Ok(SweepOutcome::Fresh);
        }
        let Some(token) = leased.token.clone() else {
            self.release(&leased, &holder).await?;
            return Ok(SweepOutcome::Skipped);
        };
        if token.expires_at.is_none() {
            // No expiry was given (Salesforce): ask the provider whether it is active.
            match self.introspect(&leased, &token).await {
                Ok(Some(exp)) => {
                    let mut next = leased.clone();
                    let mut t = token.clone();
                    t.validated_at = Some(at);
                    t.expires_at = exp;
                    let (_, method) = self.provider(&leased)?;
                    t.refresh_due = tokens::due(method, &t, None);
                    t.failures = 0;
                    next.token = Some(t);
                    self.save(&leased, next, None).await?;
                    return Ok(SweepOutcome::Checked);
                }
                Ok(None) => {}
                Err(e) => {
                    self.record_failure(leased, &e).await?;
                    return Ok(SweepOutcome::Retrying);
                }
            }
        }
        Ok(match self.refresh_leased(leased, &holder).await? {
            Refreshed::Done(_) => SweepOutcome::Refreshed,
            Refreshed::Kept(_) => SweepOutcome::Retrying,
            Refreshed::Reauth => SweepOutcome::Reauth,
            Refreshed::Failed(_) => SweepOutcome::Failed,
        })
    }

    /// `Ok(Some(expiry))` when the token is active, `Ok(None)` when it is not (or the
    /// provider cannot say): then it is refreshed.
    async fn introspect(
        &self,
        conn: &Connection,
        token: &TokenState,
    ) -> Result<Option<Option<OffsetDateTime>>, OAuthError> {
        let (provider, method) = self
            .provider(conn)
            .map_err(|e| OAuthError::Config(e.to_string()))?;
        let creds = self
            .open(conn.clone())
            .await
            .map_err(|e| OAuthError::Config(e.to_string()))?;
        let Some(access) = creds.access_token() else {
            return Ok(None);
        };
        let client = self
            .client_app(&conn.tenant, &conn.provider, token.app)
            .await
            .map_err(|e| OAuthError::Config(e.to_string()))?
            .ok_or_else(|| OAuthError::Client {
                code: "oauth_app_missing".into(),
            })?;
        let endpoints = Endpoints {
            provider,
            method,
            fields: &creds.fields,
            origin_override: self.app.config.provider_origin_override.as_ref(),
        };
        Ok(
            match endpoints
                .introspect(&self.app.http, &client, access)
                .await?
            {
                Some(i) if i.active => Some(
                    i.exp
                        .and_then(|e| OffsetDateTime::from_unix_timestamp(e).ok()),
                ),
                _ => None,
            },
        )
    }

    /// Revokes a connection's grant at the provider (disconnect). Never fails the
    /// disconnect: the outcome is returned for the audit entry.
    pub async fn revoke(&self, conn: &Connection) -> RevokeOutcome {
        if conn.token.is_none() {
            return RevokeOutcome::NotApplicable;
        }
        let Ok((provider, method)) = self.provider(conn) else {
            return RevokeOutcome::Failed("unknown_provider".into());
        };
        if method.kind != AuthType::Oauth2 || method.revoke_url.is_none() {
            return RevokeOutcome::Unsupported;
        }
        let creds = match self.open(conn.clone()).await {
            Ok(c) => c,
            Err(_) => return RevokeOutcome::Failed("secrets_unreadable".into()),
        };
        let app_source = conn.token.as_ref().map(|t| t.app);
        let client: ClientApp =
            match resolve_app(self.app, &conn.tenant, &conn.provider, app_source).await {
                Ok(Some(c)) => c,
                Ok(None) => return RevokeOutcome::Failed("oauth_app_missing".into()),
                Err(_) => return RevokeOutcome::Failed("oauth_app_unreadable".into()),
            };
        let endpoints = Endpoints {
            provider,
            method,
            fields: &creds.fields,
            origin_override: self.app.config.provider_origin_override.as_ref(),
        };
        match endpoints.revoke(&self.app.http, &client).await {
            Ok(true) => RevokeOutcome::Revoked,
            Ok(false) => RevokeOutcome::Unsupported,
            Err(e) => RevokeOutcome::Failed(e.code().to_owned()),
        }
    }
}

/// Tells the dashboard a connection needs reconnecting
/// (`integration.connection.reauth_required`). Publishing is best effort: the status is
/// already stored; a failure is logged.
pub async fn publish_reauth(app: &App, conn: &Connection, reason: &str) {
    let detail = ReauthEvent {
        tenant_id: conn.tenant.as_str(),
        connection_id: conn.id.as_str(),
        provider: &conn.provider,
        reason,
        at: rfc3339(now()),
    };
    if let Err(err) = app
        .events
        .publish(crate::events::REAUTH_REQUIRED, &detail)
        .await
    {
        tracing::error!(connection_id = %conn.id, error = %err, "reauth event not published");
    }
}

/// How a revocation went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "revoke", content = "code")]
pub enum RevokeOutcome {
    /// The provider revoked the grant.
    Revoked,
    /// The provider has no revocation endpoint.
    Unsupported,
    /// Not an OAuth connection.
    NotApplicable,
    /// It failed (code).
    Failed(String),
}

enum Refreshed {
    Done(Connection),
    Kept(Connection),
    Reauth,
    Failed(&'static str),
}

fn conn_expired(conn: &Connection) -> bool {
    conn.token
        .as_ref()
        .and_then(|t| t.expires_at)
        .is_some_and(|at| at <= now())
}

fn millis(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// 30 s, 1 min, 2 min, … capped at 15 min, with ±20 % jitter.
fn backoff(failures: u32) -> Duration {
    let base = 30_i64.saturating_mul(1_i64 << failures.saturating_sub(1).min(5));
    let capped = base.min(900);
    let jitter = rand::random::<f64>() * 0.4 + 0.8;
    Duration::milliseconds((capped as f64 * 1000.0 * jitter) as i64)
}

/// Finds due connections in the refresh index (never a scan) and refreshes them with at
/// most `concurrency` at once, stopping to take new work at `deadline`.
pub async fn sweep(
    app: &App,
    request_id: &str,
    concurrency: usize,
    deadline: tokio::time::Instant,
) -> Result<SweepReport, TokenError> {
    let at = now();
    let due = Connections::new(app.table.clone())
        .due_for_refresh(at)
        .await?;
    let mut report = SweepReport {
        due: due.len() as u64,
        ..Default::default()
    };
    let tokens = Tokens::new(app, "token-refresh", request_id);
    let tokens = &tokens;
    let mut outcomes = futures::stream::iter(due)
        .map(|(tenant, id)| async move {
            if tokio::time::Instant::now() >= deadline {
                None
            } else {
                Some(tokens.sweep_one(&tenant, &id).await)
            }
        })
        .buffer_unordered(concurrency.max(1));
    while let Some(outcome) = outcomes.next().await {
        match outcome {
            Some(o) => report.add(o),
            None => report.deferred += 1,
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::ApiError;

    #[test]
    fn a_busy_store_behind_the_oauth_app_stays_a_503() {
        let e = app_error(ApiError::from(StoreError::Conflict));
        assert!(
            matches!(e, TokenError::Store(StoreError::Throttled)),
            "{e:?}"
        );
        let e = app_error(ApiError::internal("kms refused"));
        assert!(matches!(e, TokenError::Internal(_)), "{e:?}");
    }
}

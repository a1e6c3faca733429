//! OAuth 2.0 authorization-code stand-ins (RFC 6749, PKCE RFC 7636, revocation RFC 7009)
//! for every OAuth provider, sharing one grant engine.
//!
//! The engine (`store`) keeps registered clients, users, authorization codes, grants and
//! tokens; `flow` turns HTTP requests into engine calls (authorize, token, revoke,
//! introspect, bearer checks); `shape` renders each provider's own token bodies, error
//! bodies and token formats. The provider modules own the routes.
//!
//! A *grant* is one user's approval of one client: the code exchange creates it, refreshes
//! extend it, and revocation (by the client, by the user via
//! [`SandboxState::revoke_grants_for_user`], or by refresh-token reuse) kills every token
//! of it. Views ([`OAuthGrantView`]) never carry tokens.

mod flow;
mod scopes;
mod shape;
mod store;
mod util;

pub(crate) use flow::{
    AccessCheck, authenticate_client, authorize, bearer_access, client_error, introspect_response,
    params, revoke, token,
};
pub use scopes::hubspot_crm_scopes;
pub(crate) use scopes::{known as known_scope, satisfies as scopes_satisfy};
pub(crate) use shape::{forced_status, salesforce_id_url};
pub(crate) use store::{
    AccessDenied, AccessGrant, GENESYS_REGIONS, RevokeOutcome, RevokeReach, SALESFORCE_LOGIN,
    Store, TokenError, ZOHO_DATA_CENTRES,
};
pub use store::{default_oauth_clients, default_oauth_users};

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::state::{FaultError, Provider, SandboxState, Secret};

/// Dynamics' `BusinessUnitId` (and Genesys' division id) of an organisation: stable.
pub(crate) fn business_unit_id(org_id: &str) -> String {
    util::derived_guid(&format!("business-unit:{org_id}"))
}

/// A random GUID for error bodies' `contextId`.
pub(crate) fn context_id() -> String {
    util::random_guid()
}

/// A provider whose OAuth 2.0 authorization server the sandbox stands in for.
///
/// Serialized as the snake_case ids used in route names and JSON: `hubspot`,
/// `salesforce`, `zoho`, `pipedrive`, `dynamics365`, `google`, `zendesk`, `genesys`,
/// `custom_oauth`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OAuthProvider {
    /// HubSpot: `app.hubspot.com/oauth/authorize`, `api.hubapi.com/oauth/v1/token`.
    Hubspot,
    /// Salesforce: `{login|test}.salesforce.com/services/oauth2/…`.
    Salesforce,
    /// Zoho: `accounts.zoho.{com|eu|in|com.au|jp|com.cn}/oauth/v2/…`.
    Zoho,
    /// Pipedrive: `oauth.pipedrive.com/oauth/…`.
    Pipedrive,
    /// Microsoft identity platform for Dynamics 365:
    /// `login.microsoftonline.com/{tenant}/oauth2/v2.0/…`.
    Dynamics365,
    /// Google: `accounts.google.com/o/oauth2/v2/auth`, `oauth2.googleapis.com/token`.
    Google,
    /// Zendesk: `{subdomain}.zendesk.com/oauth/…`.
    Zendesk,
    /// Genesys Cloud: `login.{region}/oauth/…`.
    Genesys,
    /// A generic RFC 6749 server at `oauth.custom.example`.
    CustomOauth,
}

impl OAuthProvider {
    /// Every OAuth provider, in a stable order.
    pub const ALL: [OAuthProvider; 9] = [
        OAuthProvider::Hubspot,
        OAuthProvider::Salesforce,
        OAuthProvider::Zoho,
        OAuthProvider::Pipedrive,
        OAuthProvider::Dynamics365,
        OAuthProvider::Google,
        OAuthProvider::Zendesk,
        OAuthProvider::Genesys,
        OAuthProvider::CustomOauth,
    ];

    /// The snake_case id, as in route names (`{id}.oauth_token`) and JSON.
    pub const fn as_str(self) -> &'static str {
        self.provider().as_str()
    }

    /// The sandbox provider serving its hosts (for counters, latency and status faults).
    pub const fn provider(self) -> Provider {
        match self {
            OAuthProvider::Hubspot => Provider::Hubspot,
            OAuthProvider::Salesforce => Provider::Salesforce,
            OAuthProvider::Zoho => Provider::Zoho,
            OAuthProvider::Pipedrive => Provider::Pipedrive,
            OAuthProvider::Dynamics365 => Provider::Dynamics365,
            OAuthProvider::Google => Provider::Google,
            OAuthProvider::Zendesk => Provider::Zendesk,
            OAuthProvider::Genesys => Provider::Genesys,
            OAuthProvider::CustomOauth => Provider::CustomOauth,
        }
    }

    /// The OAuth provider of a sandbox provider, if it has one.
    pub const fn of(provider: Provider) -> Option<OAuthProvider> {
        match provider {
            Provider::Hubspot => Some(OAuthProvider::Hubspot),
            Provider::Salesforce => Some(OAuthProvider::Salesforce),
            Provider::Zoho => Some(OAuthProvider::Zoho),
            Provider::Pipedrive => Some(OAuthProvider::Pipedrive),
            Provider::Dynamics365 => Some(OAuthProvider::Dynamics365),
            Provider::Google => Some(OAuthProvider::Google),
            Provider::Zendesk => Some(OAuthProvider::Zendesk),
            Provider::Genesys => Some(OAuthProvider::Genesys),
            Provider::CustomOauth => Some(OAuthProvider::CustomOauth),
            Provider::Freshdesk
            | Provider::Chatwoot
            | Provider::Custom
            | Provider::Sap
            | Provider::Technologyone => None,
        }
    }

    /// Default access-token lifetime (and `expires_in`, except Salesforce, which sends
    /// none): HubSpot 1800 s, Salesforce 7200 s, Zoho 3600 s, Pipedrive, Google and
    /// Microsoft 3599 s, Zendesk 172 800 s, Genesys 86 399 s, custom 3600 s.
    pub const fn default_token_ttl(self) -> Duration {
        Duration::from_secs(match self {
            OAuthProvider::Hubspot => 1800,
            OAuthProvider::Salesforce => 7200,
            OAuthProvider::Zoho | OAuthProvider::CustomOauth => 3600,
            OAuthProvider::Pipedrive | OAuthProvider::Dynamics365 | OAuthProvider::Google => 3599,
            OAuthProvider::Zendesk => 172_800,
            OAuthProvider::Genesys => 86_399,
        })
    }

    /// Whether refresh-token rotation is on by default (only for `custom_oauth`).
    pub const fn default_rotation(self) -> bool {
        matches!(self, OAuthProvider::CustomOauth)
    }
}

impl fmt::Display for OAuthProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A registered OAuth client (a connected app). Any `redirect_uri` is accepted at
/// authorize; the code is bound to it.
///
/// JSON (`POST /_sandbox/oauth/clients`):
/// `{"provider":"hubspot","client_id":"…","client_secret":"…"}`.
#[derive(Clone, Debug, Deserialize)]
pub struct OAuthClient {
    /// Whose authorization server knows it.
    pub provider: OAuthProvider,
    /// The public client id.
    pub client_id: String,
    /// The client secret (redacted in `Debug`).
    pub client_secret: Secret,
}

/// A registered client as listed: no secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OAuthClientView {
    /// The provider.
    pub provider: OAuthProvider,
    /// The client id.
    pub client_id: String,
    /// A numeric app id (HubSpot's `app_id` in token info).
    pub app_id: u64,
}

/// A person who can approve an authorization at a provider, with the account they
/// belong to. Fields a provider does not use are ignored; empty or zero fields get the
/// seeded Acme account's values (see the crate docs) when the user is added.
///
/// Build one with [`OAuthUser::new`] and struct update syntax:
/// `OAuthUser { hub_id: 777, ..OAuthUser::new(OAuthProvider::Hubspot, "b@globex.test") }`.
/// As JSON (`POST /_sandbox/oauth/users`) only `provider` and `email` are required.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OAuthUser {
    /// The provider.
    pub provider: OAuthProvider,
    /// Login email; unique per provider (case-insensitive). `login_hint` matches it.
    pub email: String,
    /// Display name; empty gets "Sandbox User".
    #[serde(default)]
    pub name: String,
    /// The provider's id of the user: HubSpot/Zendesk/Pipedrive/Zoho/Google digits,
    /// Salesforce `005…`, Microsoft and Genesys GUIDs, custom `user-N`. Empty: assigned.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user_id: String,
    /// HubSpot portal id (`hub_id`); 0 means 62515.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hub_id: u64,
    /// HubSpot `hub_domain`; empty means `acme.hubspot.com` (portal 62515) or
    /// `portal-{hub_id}.hubspot.com`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hub_domain: String,
    /// The organisation: Salesforce org id (`00D…`), Microsoft `OrganizationId` (GUID),
    /// Zoho org id (digits), Genesys organization id (GUID). Empty: the Acme org.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub org_id: String,
    /// Salesforce instance host (`acme.my.salesforce.com`), the `instance_url` of tokens.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instance_host: String,
    /// Pipedrive company id; 0 means 5000001.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub company_id: u64,
    /// Pipedrive company domain (`acme` → `api_domain` `https://acme.pipedrive.com`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub company_domain: String,
    /// Zoho data centre: `com` (default), `eu`, `in`, `com.au`, `jp` or `com.cn`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub data_centre: String,
    /// Zendesk subdomain (`acme`, the default).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subdomain: String,
    /// Dynamics 365 environment host (`acme.crm.dynamics.com`, the default).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub environment_host: String,
    /// Genesys Cloud region (`mypurecloud.com`, the default).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub region: String,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl OAuthUser {
    /// A user of `provider` with `email` and every other field left to defaults.
    pub fn new(provider: OAuthProvider, email: impl Into<String>) -> Self {
        Self {
            provider,
            email: email.into(),
            name: String::new(),
            user_id: String::new(),
            hub_id: 0,
            hub_domain: String::new(),
            org_id: String::new(),
            instance_host: String::new(),
            company_id: 0,
            company_domain: String::new(),
            data_centre: String::new(),
            subdomain: String::new(),
            environment_host: String::new(),
            region: String::new(),
        }
    }
}

/// A forced answer of a provider's token endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "status")]
pub enum OAuthFault {
    /// The provider's "grant is invalid" answer: RFC 6749 `invalid_grant`, HubSpot
    /// `BAD_REFRESH_TOKEN` (or `BAD_AUTH_CODE` for a code exchange), Zoho's HTTP 200
    /// `{"error":"invalid_code"}`. The grant itself is untouched.
    InvalidGrant,
    /// An HTTP status (400–599) in the provider's error shape; 429 and 503 carry
    /// `Retry-After: 1`.
    Status(u16),
}

/// A grant created directly by [`SandboxState::seed_grant`], as the token response
/// would have carried it.
#[derive(Clone, PartialEq, Serialize)]
pub struct SeededGrant {
    /// The grant's id, as in [`OAuthGrantView::grant_id`].
    pub grant_id: u64,
    /// The access token.
    pub access_token: String,
    /// The refresh token (always issued for seeded grants).
    pub refresh_token: String,
    /// Access-token lifetime in seconds (Salesforce sends none; this is its TTL).
    pub expires_in: u64,
    /// Every other member of the provider's code-exchange response: `instance_url`,
    /// `id`, `signature`, `issued_at` (Salesforce), `api_domain` (Zoho, Pipedrive),
    /// `hub_id`/`user_id` (HubSpot), `id_token` (Google with `openid`), `scope`, …
    pub extra: serde_json::Value,
}

impl fmt::Debug for SeededGrant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SeededGrant")
            .field("grant_id", &self.grant_id)
            .field("access_token", &"[redacted]")
            .field("refresh_token", &"[redacted]")
            .field("expires_in", &self.expires_in)
            .field("extra", &self.extra)
            .finish()
    }
}

/// What a grant looks like from outside: who, what, how often used. Never tokens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OAuthGrantView {
    /// Sandbox-wide grant id (1, 2, …).
    pub grant_id: u64,
    /// The provider.
    pub provider: OAuthProvider,
    /// The client the grant was issued to.
    pub client_id: String,
    /// The approving user's email.
    pub email: String,
    /// The approving user's provider id.
    pub user_id: String,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Token-endpoint requests that authenticated as the grant's client and named one
    /// of its codes or refresh tokens: the code exchange, refreshes, and failed attempts
    /// (code reuse, refresh after revocation, refresh-token reuse).
    pub token_requests: u64,
    /// Successful refreshes.
    pub refreshes: u64,
    /// Whether the grant is revoked (every token of it is dead).
    pub revoked: bool,
    /// Revocation requests that named one of its tokens (also counted when already
    /// revoked).
    pub revoke_requests: u64,
    /// Whether a retired refresh token was presented (which revoked the grant).
    pub reuse_detected: bool,
}

/// Which grants a knob acts on (`POST /_sandbox/oauth/narrow` takes `token`, `grant_id`,
/// or `email` with an optional `client_id`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GrantSelector {
    /// The grant of any code or token ever issued for it (what a test holding the
    /// tokens knows).
    Token(String),
    /// A grant by id (as listed by `GET /_sandbox/oauth/grants`).
    GrantId(u64),
    /// Every grant of a user, optionally only those to one client (what a test that
    /// never sees the tokens knows).
    User {
        /// The approving user's email.
        email: String,
        /// Only grants to this client.
        client_id: Option<String>,
    },
}

/// An OAuth provider's knobs, as served by `GET /_sandbox/oauth/settings`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct OAuthSettingsView {
    /// The provider.
    pub provider: OAuthProvider,
    /// Access-token lifetime in milliseconds.
    pub token_ttl_ms: u64,
    /// Whether refreshes rotate the refresh token.
    pub rotation: bool,
    /// Forced token-endpoint answers still to be served, in order, with counts.
    pub pending_token_faults: Vec<(OAuthFault, u32)>,
    /// Authorizations still to be denied.
    pub pending_denials: u32,
    /// Scopes every new authorization leaves out (partial consent).
    pub withheld_scopes: Vec<String>,
}

/// Why an OAuth client, user or seeded grant was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthError(pub(crate) String);

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OAuthError {}

/// The OAuth knobs and views. Every method takes the OAuth lock briefly.
impl SandboxState {
    /// Registers (or replaces, by provider and client id) an OAuth client.
    pub fn add_oauth_client(&self, client: OAuthClient) -> Result<OAuthClientView, OAuthError> {
        self.oauth_store().add_client(client)
    }

    /// Every registered OAuth client, without secrets.
    pub fn oauth_clients(&self) -> Vec<OAuthClientView> {
        self.oauth_store().client_views()
    }

    /// Registers (or replaces, by provider and email) an OAuth user; returns it with every
    /// default filled in.
    pub fn add_oauth_user(&self, user: OAuthUser) -> Result<OAuthUser, OAuthError> {
        self.oauth_store().add_user(user)
    }

    /// Every registered OAuth user.
    pub fn oauth_users(&self) -> Vec<OAuthUser> {
        self.oauth_store().users()
    }

    /// The access-token lifetime of `provider` (and the `expires_in` it sends, rounded
    /// up to whole seconds; Salesforce sends none). Applies to tokens issued from now on.
    pub fn set_token_ttl(&self, provider: OAuthProvider, ttl: Duration) {
        self.oauth_store().knobs_mut(provider).ttl = ttl;
    }

    /// Turns refresh-token rotation on or off for `provider`. On: every refresh returns
    /// a new refresh token and retires the old one; presenting a retired one answers
    /// `invalid_grant` and revokes the whole grant. Off: the same refresh token keeps
    /// working (Microsoft still hands out a new one each time; the old stays valid).
    pub fn set_rotation(&self, provider: OAuthProvider, on: bool) {
        self.oauth_store().knobs_mut(provider).rotation = on;
    }

    /// Makes the next `count` token-endpoint requests of `provider` answer `fault`
    /// (before the request is looked at: grants are untouched).
    pub fn force_token_error(
        &self,
        provider: OAuthProvider,
        fault: OAuthFault,
        count: u32,
    ) -> Result<(), FaultError> {
        if let OAuthFault::Status(status) = fault
            && !(400..=599).contains(&status)
        {
            return Err(FaultError::new(format!(
                "status must be between 400 and 599, got {status}"
            )));
        }
        if count == 0 {
            return Err(FaultError::new("count must be at least 1"));
        }
        self.oauth_store()
            .knobs_mut(provider)
            .faults
            .push_back((fault, count));
        Ok(())
    }

    /// Makes the next `count` authorizations of `provider` redirect with
    /// `error=access_denied` (as if the user clicked "Deny").
    pub fn deny_next_authorizations(&self, provider: OAuthProvider, count: u32) {
        let mut store = self.oauth_store();
        let knobs = store.knobs_mut(provider);
        knobs.denials = knobs.denials.saturating_add(count);
    }

    /// The user removed the app at the provider: every grant of that user (any client) is
    /// revoked, so its tokens are dead and refreshes answer `invalid_grant`. Returns how
    /// many grants were newly revoked.
    pub fn revoke_grants_for_user(&self, provider: OAuthProvider, email: &str) -> usize {
        self.oauth_store().revoke_user(provider, email)
    }

    /// Every access token of `provider` issued so far expires now (refresh tokens stay
    /// valid), to test "401, refresh, retry".
    pub fn expire_access_tokens(&self, provider: OAuthProvider) {
        self.oauth_store().expire_access_tokens(provider);
    }

    /// Creates a grant directly, as if `user_email` (or the provider's default user for
    /// `None`) had approved `client_id` for `scopes` and the code had been exchanged.
    /// Always issues a refresh token. Cheap: fit for seeding thousands of connections.
    /// The scopes are granted as given (the consent is taken as read), but each must be
    /// one the provider knows.
    pub fn seed_grant(
        &self,
        provider: OAuthProvider,
        client_id: &str,
        user_email: Option<&str>,
        scopes: &[&str],
    ) -> Result<SeededGrant, OAuthError> {
        let issued = self
            .oauth_store()
            .seed(provider, client_id, user_email, scopes)?;
        Ok(shape::seeded(&issued))
    }

    /// The grant any token ever issued for it belongs to: an authorization code, an
    /// access token, a current or retired refresh token.
    pub fn oauth_grant(&self, token: &str) -> Option<OAuthGrantView> {
        self.oauth_store().grant_view_by_token(token)
    }

    /// Every grant (any client, revoked or not) of the user with `email` at `provider`.
    pub fn oauth_grants_for_user(
        &self,
        provider: OAuthProvider,
        email: &str,
    ) -> Vec<OAuthGrantView> {
        self.oauth_store().grant_views_for_user(provider, email)
    }

    /// Every authorization code, access token and refresh token issued since the last
    /// reset, in issue order (to assert none of them ever reaches a log).
    pub fn issued_secrets(&self) -> Vec<String> {
        self.oauth_store().issued_secrets()
    }

    /// Every OAuth provider's knobs.
    pub fn oauth_settings(&self) -> Vec<OAuthSettingsView> {
        self.oauth_store().settings_views()
    }

    /// Configures the scopes an app (client) may be granted, as in the provider's app
    /// settings; `None` (the default) allows every scope the provider knows. An
    /// authorization asking for others is refused the provider's way; Pipedrive grants
    /// exactly this set. Unknown scopes are refused here.
    pub fn set_oauth_client_scopes(
        &self,
        provider: OAuthProvider,
        client_id: &str,
        scopes: Option<Vec<String>>,
    ) -> Result<(), OAuthError> {
        self.oauth_store()
            .set_client_scopes(provider, client_id, scopes)
    }

    /// Partial consent: from now on, authorizations at `provider` grant every asked
    /// scope except these (the user unticked them, or the account lacks the feature).
    /// An empty list grants in full again.
    pub fn withhold_scopes(&self, provider: OAuthProvider, scopes: Vec<String>) {
        self.oauth_store().knobs_mut(provider).withheld = scopes;
    }

    /// An admin narrowed the app in the provider: every grant `selector` names keeps
    /// only the members of `keep` (when given) and loses those of `remove`. Their live
    /// access tokens lose them at once (later calls get the provider's missing-scope
    /// answer), token info reports the narrower set, and refreshes issue it. Returns the
    /// grants as they are now; empty when none matched at `provider`.
    pub fn narrow_grants(
        &self,
        provider: OAuthProvider,
        selector: &GrantSelector,
        keep: Option<&[String]>,
        remove: &[String],
    ) -> Vec<OAuthGrantView> {
        self.oauth_store().narrow(provider, selector, keep, remove)
    }
}

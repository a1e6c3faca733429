//! The sandbox's shared state: the accounts it recognises, per-route call counters, fault
//! knobs and rate-limit windows. One [`SandboxState`] is shared by the server and the
//! tests driving it; every clone points at the same data.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ratelimit::RateLimiter;

/// A provider the sandbox stands in for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// Zendesk Support (`{subdomain}.zendesk.com`).
    Zendesk,
    /// Freshdesk (`{subdomain}.freshdesk.com`).
    Freshdesk,
    /// Pipedrive (`api.pipedrive.com`, `{company}.pipedrive.com`).
    Pipedrive,
    /// HubSpot (`api.hubapi.com`).
    Hubspot,
    /// Chatwoot, cloud (`app.chatwoot.com`) or self-hosted at a registered host.
    Chatwoot,
    /// A tenant's own REST API (`custom.example/api` or a registered host and base path).
    Custom,
    /// Salesforce (`login.salesforce.com`, `test.salesforce.com`, instance hosts).
    Salesforce,
    /// Zoho CRM (`accounts.zoho.{dc}`, `www.zohoapis.{dc}`).
    Zoho,
    /// Microsoft Dynamics 365 (`login.microsoftonline.com`, `{org}.{region}.dynamics.com`).
    Dynamics365,
    /// Google (`accounts.google.com`, `oauth2.googleapis.com`, `openidconnect.googleapis.com`).
    Google,
    /// Genesys Cloud (`login.{region}`, `api.{region}`).
    Genesys,
    /// A tenant's own OAuth 2.0 authorization server (`oauth.custom.example`).
    CustomOauth,
    /// SAP Sales and Service Cloud (C4C) OData v2 (`{tenant}.crm.ondemand.com`).
    Sap,
    /// TechnologyOne CiAnywhere (`{site}.t1cloud.com`).
    Technologyone,
}

impl Provider {
    /// Every provider, in a stable order.
    pub const ALL: [Provider; 14] = [
        Provider::Zendesk,
        Provider::Freshdesk,
        Provider::Pipedrive,
        Provider::Hubspot,
        Provider::Chatwoot,
        Provider::Custom,
        Provider::Salesforce,
        Provider::Zoho,
        Provider::Dynamics365,
        Provider::Google,
        Provider::Genesys,
        Provider::CustomOauth,
        Provider::Sap,
        Provider::Technologyone,
    ];

    /// The provider's snake_case name, as used in JSON and route names.
    pub const fn as_str(self) -> &'static str {
        match self {
            Provider::Zendesk => "zendesk",
            Provider::Freshdesk => "freshdesk",
            Provider::Pipedrive => "pipedrive",
            Provider::Hubspot => "hubspot",
            Provider::Chatwoot => "chatwoot",
            Provider::Custom => "custom",
            Provider::Salesforce => "salesforce",
            Provider::Zoho => "zoho",
            Provider::Dynamics365 => "dynamics365",
            Provider::Google => "google",
            Provider::Genesys => "genesys",
            Provider::CustomOauth => "custom_oauth",
            Provider::Sap => "sap",
            Provider::Technologyone => "technologyone",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A credential value; its `Debug` output is redacted so it cannot leak into logs.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a credential value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The credential value itself.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` is this credential.
    pub fn matches(&self, candidate: &str) -> bool {
        !self.0.is_empty() && self.0 == candidate
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self::new(value)
    }
}

/// An identity the sandbox recognises: who it is, plus which provider and credentials.
///
/// As JSON (for `POST /_sandbox/accounts`) the provider fields sit beside the identity:
/// `{"provider":"zendesk","subdomain":"globex","api_token":"…","email":"a@globex.test"}`.
#[derive(Clone, Debug, Deserialize)]
pub struct Account {
    /// Provider-side numeric id (HubSpot: the portal id); 0 lets the sandbox assign one.
    #[serde(default)]
    pub id: u64,
    /// Display name; empty gets a default.
    #[serde(default)]
    pub name: String,
    /// Login email; empty gets a default. Zendesk API-token auth uses it as the user.
    #[serde(default)]
    pub email: String,
    /// Which provider, how it is addressed, and its credentials.
    #[serde(flatten)]
    pub provider: ProviderAccount,
}

impl Account {
    /// The provider this account belongs to.
    pub fn provider(&self) -> Provider {
        self.provider.provider()
    }
}

/// The provider-specific part of an [`Account`]: addressing and credentials.
#[derive(Clone, Debug, Deserialize)]
#[serde(tag = "provider", rename_all = "snake_case")]
pub enum ProviderAccount {
    /// Zendesk: Basic `{email}/token:{api_token}` at `{subdomain}.zendesk.com`.
    Zendesk {
        /// The `acme` of `acme.zendesk.com`.
        subdomain: String,
        /// The API token.
        api_token: Secret,
    },
    /// Freshdesk: Basic `{api_key}:X` at `{subdomain}.freshdesk.com`.
    Freshdesk {
        /// The `acme` of `acme.freshdesk.com`.
        subdomain: String,
        /// The agent's API key.
        api_key: Secret,
    },
    /// Pipedrive: `?api_token=` or header `x-api-token`.
    Pipedrive {
        /// The company's subdomain, `acme` of `acme.pipedrive.com`.
        #[serde(default = "default_company_domain")]
        company_domain: String,
        /// The company id; 0 gets a default.
        #[serde(default)]
        company_id: u64,
        /// The personal API token.
        api_token: Secret,
    },
    /// HubSpot: private app token as `Authorization: Bearer`.
    Hubspot {
        /// The private app access token.
        access_token: Secret,
        /// `accountType` reported by account-info.
        #[serde(default = "default_account_type")]
        account_type: String,
        /// `timeZone` reported by account-info.
        #[serde(default = "default_time_zone")]
        time_zone: String,
        /// Requests allowed per rolling 10 s (HubSpot: 110 for private apps).
        #[serde(default = "default_ten_secondly_limit")]
        ten_secondly_limit: u64,
        /// Requests allowed per day (HubSpot: 250,000 for Free and Starter).
        #[serde(default = "default_daily_limit")]
        daily_limit: u64,
        /// The private app's scopes (default: `oauth` and read/write of the objects and
        /// schemas of contacts, companies and deals); CRM calls outside them answer 403
        /// `MISSING_SCOPES`.
        #[serde(default = "crate::oauth::hubspot_crm_scopes")]
        scopes: Vec<String>,
    },
    /// Chatwoot: header `api_access_token`.
    Chatwoot {
        /// Host of the installation; `app.chatwoot.com` for the cloud.
        #[serde(default = "default_chatwoot_host")]
        host: String,
        /// The Chatwoot account the user belongs to.
        #[serde(default = "default_chatwoot_account_id")]
        account_id: u64,
        /// Name of that Chatwoot account.
        #[serde(default = "default_chatwoot_account_name")]
        account_name: String,
        /// The user's access token.
        api_access_token: Secret,
    },
    /// A tenant's own API: bearer token, `X-Api-Key` header or Basic pair (any one).
    Custom {
        /// Host segment, `custom.example` by default.
        #[serde(default = "default_custom_host")]
        host: String,
        /// Path prefix of the API under the host, `/api` by default.
        #[serde(default = "default_custom_base_path")]
        base_path: String,
        /// Accepted `Authorization: Bearer` token.
        #[serde(default)]
        bearer_token: Option<Secret>,
        /// Accepted `X-Api-Key` value.
        #[serde(default)]
        api_key: Option<Secret>,
        /// Accepted Basic user (with `password`).
        #[serde(default)]
        username: Option<String>,
        /// Accepted Basic password (with `username`).
        #[serde(default)]
        password: Option<Secret>,
    },
    /// SAP C4C: Basic `{username}:{password}` (a technical user) at
    /// `{tenant}.crm.ondemand.com`.
    Sap {
        /// The `my000001` of `my000001.crm.ondemand.com`.
        tenant: String,
        /// The technical user.
        username: String,
        /// Its password.
        password: Secret,
    },
    /// TechnologyOne CiAnywhere: Basic `{username}:{password}` (an integration user; the
    /// user name is compared case-insensitively) at `{site}.t1cloud.com`.
    Technologyone {
        /// The `council` of `council.t1cloud.com`.
        site: String,
        /// The integration user.
        username: String,
        /// Its password.
        password: Secret,
    },
}

impl ProviderAccount {
    /// The provider this belongs to.
    pub fn provider(&self) -> Provider {
        match self {
            ProviderAccount::Zendesk { .. } => Provider::Zendesk,
            ProviderAccount::Freshdesk { .. } => Provider::Freshdesk,
            ProviderAccount::Pipedrive { .. } => Provider::Pipedrive,
            ProviderAccount::Hubspot { .. } => Provider::Hubspot,
            ProviderAccount::Chatwoot { .. } => Provider::Chatwoot,
            ProviderAccount::Custom { .. } => Provider::Custom,
            ProviderAccount::Sap { .. } => Provider::Sap,
            ProviderAccount::Technologyone { .. } => Provider::Technologyone,
        }
    }

    /// The address the account is served at, `host[/base]` as in a sandbox URL.
    pub fn address(&self) -> String {
        match self {
            ProviderAccount::Zendesk { subdomain, .. } => format!("{subdomain}.zendesk.com"),
            ProviderAccount::Freshdesk { subdomain, .. } => format!("{subdomain}.freshdesk.com"),
            ProviderAccount::Pipedrive { .. } => "api.pipedrive.com".to_owned(),
            ProviderAccount::Hubspot { .. } => "api.hubapi.com".to_owned(),
            ProviderAccount::Chatwoot { host, .. } => host.clone(),
            ProviderAccount::Custom {
                host, base_path, ..
            } => format!("{host}{base_path}"),
            ProviderAccount::Sap { tenant, .. } => format!("{tenant}.crm.ondemand.com"),
            ProviderAccount::Technologyone { site, .. } => format!("{site}.t1cloud.com"),
        }
    }
}

fn default_company_domain() -> String {
    "acme".to_owned()
}
fn default_account_type() -> String {
    "STANDARD".to_owned()
}
fn default_time_zone() -> String {
    "US/Eastern".to_owned()
}
fn default_ten_secondly_limit() -> u64 {
    110
}
fn default_daily_limit() -> u64 {
    250_000
}
fn default_chatwoot_host() -> String {
    CHATWOOT_CLOUD_HOST.to_owned()
}
fn default_chatwoot_account_id() -> u64 {
    1
}
fn default_chatwoot_account_name() -> String {
    "Acme".to_owned()
}
fn default_custom_host() -> String {
    CUSTOM_DEFAULT_HOST.to_owned()
}
fn default_custom_base_path() -> String {
    "/api".to_owned()
}

/// Host of Chatwoot's cloud installation.
pub const CHATWOOT_CLOUD_HOST: &str = "app.chatwoot.com";
/// Host of the default custom API.
pub const CUSTOM_DEFAULT_HOST: &str = "custom.example";

/// What an account looks like from outside: identity and address, never credentials.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct AccountView {
    /// The provider.
    pub provider: Provider,
    /// Provider-side id.
    pub id: u64,
    /// Display name.
    pub name: String,
    /// Login email.
    pub email: String,
    /// Where it is served, `host[/base]`.
    pub address: String,
}

/// Why an account was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountError(String);

impl fmt::Display for AccountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AccountError {}

/// A forced answer for the next `count` provider requests (optionally of one provider).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// HTTP status to answer, 400–599; the body is the provider's own error shape.
    pub status: u16,
    /// How many requests get it.
    #[serde(default = "default_fault_count")]
    pub count: u32,
    /// Only requests to this provider; `None` means any provider.
    #[serde(default)]
    pub provider: Option<Provider>,
    /// `Retry-After` seconds, for the providers that send it with 429 and 503.
    #[serde(default = "default_retry_after")]
    pub retry_after_secs: u64,
    /// Only requests of this route (its name, such as `pipedrive.recents`); `None`
    /// means any route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
}

fn default_fault_count() -> u32 {
    1
}
fn default_retry_after() -> u64 {
    1
}

impl Fault {
    /// A fault answering `status` to the next `count` requests of any provider.
    pub fn new(status: u16, count: u32) -> Self {
        Self {
            status,
            count,
            provider: None,
            retry_after_secs: default_retry_after(),
            route: None,
        }
    }

    /// The same fault, limited to one provider.
    pub fn for_provider(self, provider: Provider) -> Self {
        Self {
            provider: Some(provider),
            ..self
        }
    }

    /// The same fault, limited to one route of its provider (a route name such as
    /// `pipedrive.recents`).
    pub fn for_route(self, route: &str) -> Self {
        Self {
            route: Some(route.to_owned()),
            ..self
        }
    }
}

/// Why a fault was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultError(String);

impl FaultError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

impl fmt::Display for FaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FaultError {}

/// Call counters: total provider requests and per route name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CallsView {
    /// Every request that reached a provider host (admin routes excluded).
    pub total: u64,
    /// Requests per route name, e.g. `zendesk.users_me`.
    pub routes: BTreeMap<String, u64>,
}

/// Current fault knobs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FaultsView {
    /// Latency added to every provider request, in milliseconds.
    pub latency_ms: u64,
    /// Latency overrides per provider, in milliseconds.
    pub provider_latency_ms: BTreeMap<Provider, u64>,
    /// Forced statuses still to be served, in order.
    pub pending: Vec<Fault>,
}

/// Route name counted for requests to a host no provider owns.
pub const UNKNOWN_HOST_ROUTE: &str = "unknown_host";

/// Cheap, cloneable handle to the sandbox's shared state.
#[derive(Clone, Default)]
pub struct SandboxState {
    inner: Arc<Mutex<Inner>>,
    /// OAuth clients, users, codes, grants and tokens, behind their own lock so the token
    /// endpoint does not contend with the counters.
    oauth: Arc<Mutex<crate::oauth::Store>>,
    /// HubSpot CRM records per portal, behind their own lock.
    crm: Arc<Mutex<crate::providers::hubspot_crm::CrmStore>>,
    /// HubSpot apps' webhook settings, subscriptions and deliveries, behind their own lock.
    hooks: Arc<Mutex<crate::providers::hubspot_webhooks::HookStore>>,
    /// Salesforce records per org, behind their own lock.
    sf: Arc<Mutex<crate::providers::salesforce_crm::SfStore>>,
    /// Pipedrive persons, organizations, fields and budgets per company, behind their
    /// own lock.
    pipedrive_crm: Arc<Mutex<crate::providers::pipedrive_crm::PdStore>>,
    /// Zoho CRM records, custom fields and page tokens per org, behind their own lock.
    zoho_crm: Arc<Mutex<crate::providers::zoho_crm::ZohoStore>>,
    /// Gmail messages and Calendar events per Google user, behind their own lock.
    google: Arc<Mutex<crate::providers::google_api::GoogleStore>>,
    /// Zendesk help centres (articles, sections, categories) and their knobs per
    /// subdomain, behind their own lock.
    zendesk_hc: Arc<Mutex<crate::providers::zendesk_hc::HelpCenterStore>>,
    /// Freshdesk knowledge bases (solution categories, folders, articles) and their knobs
    /// per subdomain, behind their own lock.
    freshdesk_kb: Arc<Mutex<crate::providers::freshdesk_kb::FdKbStore>>,
    /// Dataverse knowledge articles and their knobs per environment, behind their own lock.
    dynamics_kb: Arc<Mutex<crate::providers::dynamics365_kb::DynKbStore>>,
    /// Dataverse contacts and accounts, their metadata and knobs per environment, behind
    /// their own lock.
    dynamics_crm: Arc<Mutex<crate::providers::dynamics365_crm::DynCrmStore>>,
    /// The custom API's knowledge-base articles and knobs, behind their own lock.
    custom_kb: Arc<Mutex<crate::providers::custom_kb::CustomKbStore>>,
    /// The exchange recording for contract tests (off unless started).
    recorder: crate::record::Recorder,
    /// What the dispatch-action stand-ins received and created, their fault knobs, and
    /// the webhook receivers, behind their own lock.
    dispatch: Arc<Mutex<crate::actions::DispatchStore>>,
}

impl fmt::Debug for SandboxState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxState").finish_non_exhaustive()
    }
}

/// How many request arrival times the sandbox keeps (a 100k-record sync makes about
/// 1,000 requests).
pub const CALL_TIMES: usize = 20_000;

/// The data behind the mutex.
#[derive(Debug)]
pub(crate) struct Inner {
    accounts: Vec<Account>,
    next_id: u64,
    calls: BTreeMap<String, u64>,
    total_calls: u64,
    /// When the latest requests arrived (at most [`CALL_TIMES`]), for timelines.
    call_times: VecDeque<(std::time::Instant, String)>,
    latency: Duration,
    provider_latency: BTreeMap<Provider, Duration>,
    faults: VecDeque<Fault>,
    limiter: RateLimiter,
}

impl Default for Inner {
    fn default() -> Self {
        let mut inner = Self {
            accounts: Vec::new(),
            next_id: 900_001,
            calls: BTreeMap::new(),
            total_calls: 0,
            call_times: VecDeque::new(),
            latency: Duration::ZERO,
            provider_latency: BTreeMap::new(),
            faults: VecDeque::new(),
            limiter: RateLimiter::new(),
        };
        for account in default_accounts() {
            // The seeds are valid by construction; a failure here would be a bug in them.
            if let Err(error) = inner.add_account(account) {
                tracing::error!(%error, "invalid seed account");
            }
        }
        inner
    }
}

impl SandboxState {
    /// A fresh state holding the default seeded accounts.
    pub fn new() -> Self {
        Self::default()
    }

    /// The recording of provider exchanges ([`crate::record`]), off until started.
    pub fn recorder(&self) -> &crate::record::Recorder {
        &self.recorder
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the data half-written in a way that
        // matters for a test double, so keep serving.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers an account (replacing one of the same provider and id); returns its id.
    pub fn add_account(&self, account: Account) -> Result<u64, AccountError> {
        self.lock().add_account(account)
    }

    /// Sets the scopes of the HubSpot private app(s) of `portal` (an admin edited the
    /// app); CRM calls outside them answer 403 `MISSING_SCOPES`. Returns how many private
    /// apps changed; unknown scopes are refused and change nothing.
    pub fn set_hubspot_private_app_scopes(
        &self,
        portal: u64,
        scopes: &[String],
    ) -> Result<usize, AccountError> {
        let hubspot = crate::oauth::OAuthProvider::Hubspot;
        if let Some(unknown) = scopes
            .iter()
            .find(|scope| !crate::oauth::known_scope(hubspot, scope))
        {
            return Err(AccountError(format!("unknown HubSpot scope {unknown:?}")));
        }
        let mut inner = self.lock();
        let mut changed = 0;
        for account in inner.accounts.iter_mut().filter(|a| a.id == portal) {
            if let ProviderAccount::Hubspot {
                scopes: current, ..
            } = &mut account.provider
            {
                *current = scopes.to_vec();
                changed += 1;
            }
        }
        Ok(changed)
    }

    /// Every registered account (credentials stay redacted in `Debug`).
    pub fn accounts(&self) -> Vec<Account> {
        self.lock().accounts.clone()
    }

    /// Every registered account, without credentials.
    pub fn account_views(&self) -> Vec<AccountView> {
        self.lock()
            .accounts
            .iter()
            .map(|account| AccountView {
                provider: account.provider(),
                id: account.id,
                name: account.name.clone(),
                email: account.email.clone(),
                address: account.provider.address(),
            })
            .collect()
    }

    /// Requests counted for one route name, e.g. `zendesk.users_me`.
    pub fn calls(&self, route: &str) -> u64 {
        self.lock().calls.get(route).copied().unwrap_or(0)
    }

    /// Requests that reached any provider host.
    pub fn total_calls(&self) -> u64 {
        self.lock().total_calls
    }

    /// All counters at once.
    pub fn calls_view(&self) -> CallsView {
        let inner = self.lock();
        CallsView {
            total: inner.total_calls,
            routes: inner.calls.clone(),
        }
    }

    /// Adds `latency` before every answer of `provider` (or of every provider for `None`).
    pub fn set_latency(&self, provider: Option<Provider>, latency: Duration) {
        let mut inner = self.lock();
        match provider {
            None => inner.latency = latency,
            Some(provider) if latency.is_zero() => {
                inner.provider_latency.remove(&provider);
            }
            Some(provider) => {
                inner.provider_latency.insert(provider, latency);
            }
        }
    }

    /// Makes the next `count` requests (of `provider`, or of any) answer `status`.
    pub fn force_status(
        &self,
        status: u16,
        count: u32,
        provider: Option<Provider>,
    ) -> Result<(), FaultError> {
        self.add_fault(Fault {
            provider,
            ..Fault::new(status, count)
        })
    }

    /// Queues a fault behind any already pending.
    pub fn add_fault(&self, fault: Fault) -> Result<(), FaultError> {
        if !(400..=599).contains(&fault.status) {
            return Err(FaultError(format!(
                "status must be between 400 and 599, got {}",
                fault.status
            )));
        }
        if fault.count == 0 {
            return Err(FaultError("count must be at least 1".to_owned()));
        }
        self.lock().faults.push_back(fault);
        Ok(())
    }

    /// Current fault knobs.
    pub fn faults_view(&self) -> FaultsView {
        let inner = self.lock();
        FaultsView {
            latency_ms: duration_ms(inner.latency),
            provider_latency_ms: inner
                .provider_latency
                .iter()
                .map(|(provider, latency)| (*provider, duration_ms(*latency)))
                .collect(),
            pending: inner.faults.iter().cloned().collect(),
        }
    }

    /// Removes pending faults and added latency; accounts and counters stay.
    pub fn clear_faults(&self) {
        let mut inner = self.lock();
        inner.faults.clear();
        inner.latency = Duration::ZERO;
        inner.provider_latency.clear();
    }

    /// Back to a freshly started sandbox: seeded accounts, OAuth clients and users only,
    /// zero counters, no faults, no OAuth grants, default OAuth knobs, no HubSpot CRM
    /// or Salesforce records, custom properties, query locators, API allowances or
    /// malformed-response knobs, empty rate-limit windows, no Gmail messages or Calendar
    /// events, no help centre content or Help Center knobs.
    pub fn reset(&self) {
        *self.lock() = Inner::default();
        *self.oauth_store() = crate::oauth::Store::default();
        *self.crm_store() = crate::providers::hubspot_crm::CrmStore::default();
        *self.hook_store() = crate::providers::hubspot_webhooks::HookStore::default();
        *self.sf_store() = crate::providers::salesforce_crm::SfStore::default();
        *self.pd_store() = crate::providers::pipedrive_crm::PdStore::default();
        *self.zoho_crm_store() = crate::providers::zoho_crm::ZohoStore::default();
        *self.google_store() = crate::providers::google_api::GoogleStore::default();
        *self.zendesk_hc_store() = crate::providers::zendesk_hc::HelpCenterStore::default();
        *self.freshdesk_kb_store() = crate::providers::freshdesk_kb::FdKbStore::default();
        *self.dynamics_kb_store() = crate::providers::dynamics365_kb::DynKbStore::default();
        *self.dynamics_crm_store() = crate::providers::dynamics365_crm::DynCrmStore::default();
        *self.custom_kb_store() = crate::providers::custom_kb::CustomKbStore::default();
        *self.dispatch_store() = crate::actions::DispatchStore::default();
    }

    /// The dispatch-action store, locked.
    pub(crate) fn dispatch_store(&self) -> MutexGuard<'_, crate::actions::DispatchStore> {
        self.dispatch.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The Zendesk Help Center store, locked. Never held while taking another lock.
    pub(crate) fn zendesk_hc_store(
        &self,
    ) -> MutexGuard<'_, crate::providers::zendesk_hc::HelpCenterStore> {
        self.zendesk_hc
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The Dataverse knowledge-article store, locked. Never held while taking another lock.
    pub(crate) fn dynamics_kb_store(
        &self,
    ) -> MutexGuard<'_, crate::providers::dynamics365_kb::DynKbStore> {
        self.dynamics_kb
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The Dataverse contact/account store, locked. Never held while taking another lock.
    pub(crate) fn dynamics_crm_store(
        &self,
    ) -> MutexGuard<'_, crate::providers::dynamics365_crm::DynCrmStore> {
        self.dynamics_crm
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The custom API's knowledge-base store, locked. Never held while taking another lock.
    pub(crate) fn custom_kb_store(
        &self,
    ) -> MutexGuard<'_, crate::providers::custom_kb::CustomKbStore> {
        self.custom_kb
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The Freshdesk knowledge-base store, locked. Never held while taking another lock.
    pub(crate) fn freshdesk_kb_store(
        &self,
    ) -> MutexGuard<'_, crate::providers::freshdesk_kb::FdKbStore> {
        self.freshdesk_kb
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The Gmail and Calendar store, locked.
    pub(crate) fn google_store(&self) -> MutexGuard<'_, crate::providers::google_api::GoogleStore> {
        self.google.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The Salesforce record store, locked.
    pub(crate) fn sf_store(&self) -> MutexGuard<'_, crate::providers::salesforce_crm::SfStore> {
        self.sf.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The Zoho CRM store, locked. Never held while taking another lock.
    pub(crate) fn zoho_crm_store(&self) -> MutexGuard<'_, crate::providers::zoho_crm::ZohoStore> {
        self.zoho_crm.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The Pipedrive CRM store, locked. Never held while taking another lock.
    pub(crate) fn pd_store(&self) -> MutexGuard<'_, crate::providers::pipedrive_crm::PdStore> {
        self.pipedrive_crm
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The HubSpot CRM store, locked.
    pub(crate) fn crm_store(&self) -> MutexGuard<'_, crate::providers::hubspot_crm::CrmStore> {
        self.crm.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The HubSpot webhooks store, locked. Never held with the CRM or OAuth store.
    pub(crate) fn hook_store(
        &self,
    ) -> MutexGuard<'_, crate::providers::hubspot_webhooks::HookStore> {
        self.hooks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The OAuth store, locked. Hold it briefly: every OAuth request takes it.
    pub(crate) fn oauth_store(&self) -> MutexGuard<'_, crate::oauth::Store> {
        self.oauth.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts one request for `route`.
    pub(crate) fn record_call(&self, route: &str) {
        let mut inner = self.lock();
        inner.total_calls += 1;
        *inner.calls.entry(route.to_owned()).or_insert(0) += 1;
        if inner.call_times.len() == CALL_TIMES {
            inner.call_times.pop_front();
        }
        inner
            .call_times
            .push_back((std::time::Instant::now(), route.to_owned()));
    }

    /// When the latest requests (at most [`CALL_TIMES`]) arrived, oldest first, with
    /// their routes: a bench's timeline of a run.
    pub fn call_times(&self) -> Vec<(std::time::Instant, String)> {
        self.lock().call_times.iter().cloned().collect()
    }

    /// Latency to add before answering a request of `provider`.
    pub(crate) fn latency_for(&self, provider: Provider) -> Duration {
        let inner = self.lock();
        inner
            .provider_latency
            .get(&provider)
            .copied()
            .unwrap_or(inner.latency)
    }

    /// Takes one use of the first pending fault that applies to `provider`.
    pub(crate) fn take_fault(&self, provider: Provider, route: &str) -> Option<Fault> {
        let mut inner = self.lock();
        let index = inner.faults.iter().position(|fault| {
            fault.provider.is_none_or(|p| p == provider)
                && fault.route.as_deref().is_none_or(|r| r == route)
        })?;
        let fault = inner.faults.get_mut(index)?;
        let taken = Fault {
            count: 1,
            ..fault.clone()
        };
        fault.count = fault.count.saturating_sub(1);
        if fault.count == 0 {
            inner.faults.remove(index);
        }
        Some(taken)
    }

    /// The first account matching `predicate`.
    pub(crate) fn find_account(&self, predicate: impl FnMut(&&Account) -> bool) -> Option<Account> {
        self.lock().accounts.iter().find(predicate).cloned()
    }

    /// Whether any account matches `predicate`.
    pub(crate) fn any_account(&self, predicate: impl FnMut(&Account) -> bool) -> bool {
        self.lock().accounts.iter().any(predicate)
    }

    /// Runs `f` on the rate limiter, under the state lock.
    pub(crate) fn with_limiter<R>(&self, f: impl FnOnce(&mut RateLimiter) -> R) -> R {
        f(&mut self.lock().limiter)
    }
}

fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl Inner {
    fn add_account(&mut self, mut account: Account) -> Result<u64, AccountError> {
        normalise(&mut account.provider)?;
        let provider = account.provider();
        if let Some(host) = self_hosted_host(&account.provider) {
            let clash = self.accounts.iter().any(|other| {
                other.provider() != provider
                    && self_hosted_host(&other.provider).is_some_and(|h| h == host)
            });
            if clash
                || crate::providers::fixed_provider_for_host(host).is_some_and(|p| p != provider)
            {
                return Err(AccountError(format!(
                    "host {host} already belongs to another provider"
                )));
            }
        }
        if account.id == 0 {
            account.id = self.next_id;
            self.next_id += 1;
        }
        if account.name.trim().is_empty() {
            account.name = "Sandbox User".to_owned();
        }
        if account.email.trim().is_empty() {
            account.email = format!("user{}@sandbox.test", account.id);
        }
        let id = account.id;
        match self
            .accounts
            .iter_mut()
            .find(|other| other.provider() == provider && other.id == id)
        {
            Some(existing) => *existing = account,
            None => self.accounts.push(account),
        }
        Ok(id)
    }
}

/// The host of accounts whose host is chosen by the tenant (Chatwoot, custom API).
fn self_hosted_host(account: &ProviderAccount) -> Option<&str> {
    match account {
        ProviderAccount::Chatwoot { host, .. } | ProviderAccount::Custom { host, .. } => Some(host),
        _ => None,
    }
}

/// Checks an account's fields and puts hosts and paths in canonical form.
fn normalise(account: &mut ProviderAccount) -> Result<(), AccountError> {
    fn require(secret: &Secret, what: &str) -> Result<(), AccountError> {
        if secret.expose().is_empty() {
            return Err(AccountError(format!("{what} must not be empty")));
        }
        Ok(())
    }
    match account {
        ProviderAccount::Zendesk {
            subdomain,
            api_token,
        } => {
            *subdomain = subdomain_label(subdomain)?;
            require(api_token, "api_token")
        }
        ProviderAccount::Freshdesk { subdomain, api_key } => {
            *subdomain = subdomain_label(subdomain)?;
            require(api_key, "api_key")
        }
        ProviderAccount::Pipedrive {
            company_domain,
            company_id,
            api_token,
        } => {
            *company_domain = subdomain_label(company_domain)?;
            if *company_id == 0 {
                *company_id = 5_000_001;
            }
            require(api_token, "api_token")
        }
        ProviderAccount::Hubspot {
            access_token,
            ten_secondly_limit,
            daily_limit,
            scopes,
            ..
        } => {
            if *ten_secondly_limit == 0 || *daily_limit == 0 {
                return Err(AccountError("rate limits must be at least 1".to_owned()));
            }
            if let Some(unknown) = scopes.iter().find(|scope| {
                !crate::oauth::known_scope(crate::oauth::OAuthProvider::Hubspot, scope)
            }) {
                return Err(AccountError(format!("unknown HubSpot scope {unknown:?}")));
            }
            require(access_token, "access_token")
        }
        ProviderAccount::Chatwoot {
            host,
            api_access_token,
            ..
        } => {
            *host = host_name(host)?;
            require(api_access_token, "api_access_token")
        }
        ProviderAccount::Custom {
            host,
            base_path,
            bearer_token,
            api_key,
            username,
            password,
        } => {
            *host = host_name(host)?;
            let trimmed = base_path.trim().trim_end_matches('/');
            if trimmed.contains(['?', '#']) {
                return Err(AccountError("base_path must be a plain path".to_owned()));
            }
            *base_path = match trimmed {
                "" => String::new(),
                path if path.starts_with('/') => path.to_owned(),
                path => format!("/{path}"),
            };
            if username.is_some() != password.is_some() {
                return Err(AccountError("username and password go together".to_owned()));
            }
            let has_any = [bearer_token.as_ref(), api_key.as_ref(), password.as_ref()]
                .into_iter()
                .flatten()
                .any(|secret| !secret.expose().is_empty());
            if !has_any {
                return Err(AccountError(
                    "a custom account needs bearer_token, api_key or username/password".to_owned(),
                ));
            }
            Ok(())
        }
        ProviderAccount::Sap {
            tenant: label,
            username,
            password,
        }
        | ProviderAccount::Technologyone {
            site: label,
            username,
            password,
        } => {
            *label = subdomain_label(label)?;
            if username.trim().is_empty() {
                return Err(AccountError("username must not be empty".to_owned()));
            }
            require(password, "password")
        }
    }
}

/// `raw` trimmed and lower-cased, if it is a DNS label (letters, digits, inner
/// hyphens, at most 63 characters).
pub(crate) fn dns_label(raw: &str) -> Option<String> {
    let label = raw.trim().to_ascii_lowercase();
    let valid = !label.is_empty()
        && label.len() <= 63
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    valid.then_some(label)
}

/// A lower-cased DNS label (letters, digits, inner hyphens).
fn subdomain_label(raw: &str) -> Result<String, AccountError> {
    dns_label(raw).ok_or_else(|| AccountError(format!("invalid subdomain {raw:?}")))
}

/// A lower-cased host name, optionally with a port.
fn host_name(raw: &str) -> Result<String, AccountError> {
    let host = raw.trim().to_ascii_lowercase();
    let valid = !host.is_empty()
        && host.len() <= 253
        && !host.starts_with(['.', '_'])
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'));
    if valid {
        Ok(host)
    } else {
        Err(AccountError(format!("invalid host {raw:?}")))
    }
}

/// The accounts every fresh sandbox starts with (see the crate documentation).
pub fn default_accounts() -> Vec<Account> {
    vec![
        Account {
            id: 123,
            name: "Acme Admin".to_owned(),
            email: "admin@acme.test".to_owned(),
            provider: ProviderAccount::Zendesk {
                subdomain: "acme".to_owned(),
                api_token: "zd-sandbox-token-0001".into(),
            },
        },
        Account {
            id: 43_000_000_001,
            name: "Acme Agent".to_owned(),
            email: "agent@acme.test".to_owned(),
            provider: ProviderAccount::Freshdesk {
                subdomain: "acme".to_owned(),
                api_key: "fd-sandbox-key-0001".into(),
            },
        },
        Account {
            id: 10_000_001,
            name: "Acme Sales".to_owned(),
            email: "sales@acme.test".to_owned(),
            provider: ProviderAccount::Pipedrive {
                company_domain: "acme".to_owned(),
                company_id: 5_000_001,
                api_token: "pd-sandbox-token-0001".into(),
            },
        },
        Account {
            id: 62_515,
            name: "Acme".to_owned(),
            email: "admin@acme.test".to_owned(),
            provider: ProviderAccount::Hubspot {
                access_token: "pat-na1-sandbox-0001".into(),
                account_type: default_account_type(),
                time_zone: default_time_zone(),
                ten_secondly_limit: default_ten_secondly_limit(),
                daily_limit: default_daily_limit(),
                scopes: crate::oauth::hubspot_crm_scopes(),
            },
        },
        Account {
            id: 1,
            name: "Acme Support".to_owned(),
            email: "support@acme.test".to_owned(),
            provider: ProviderAccount::Chatwoot {
                host: default_chatwoot_host(),
                account_id: 1,
                account_name: default_chatwoot_account_name(),
                api_access_token: "cw-sandbox-token-0001".into(),
            },
        },
        Account {
            id: 1,
            name: "Custom Sandbox".to_owned(),
            email: "ops@custom.example".to_owned(),
            provider: ProviderAccount::Custom {
                host: default_custom_host(),
                base_path: default_custom_base_path(),
                bearer_token: Some("custom-sandbox-token-0001".into()),
                api_key: Some("custom-sandbox-key-0001".into()),
                username: Some("custom-user".to_owned()),
                password: Some("custom-pass-0001".into()),
            },
        },
        Account {
            id: 1,
            name: "Conduit Integration".to_owned(),
            email: "integration@acme.test".to_owned(),
            provider: ProviderAccount::Sap {
                tenant: "my000001".to_owned(),
                username: "CONDUIT_API".to_owned(),
                password: "sap-sandbox-pass-0001".into(),
            },
        },
        Account {
            id: 1,
            name: "Conduit Integration".to_owned(),
            email: "integration@council.test".to_owned(),
            provider: ProviderAccount::Technologyone {
                site: "council".to_owned(),
                username: "CONDUIT".to_owned(),
                password: "t1-sandbox-pass-0001".into(),
            },
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_valid() {
        let state = SandboxState::new();
        assert_eq!(state.accounts().len(), default_accounts().len());
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let text = format!("{:?}", SandboxState::new().accounts());
        assert!(!text.contains("zd-sandbox-token-0001"), "{text}");
        assert!(text.contains("[redacted]"));
    }

    #[test]
    fn account_json_flattens_provider_fields() {
        let account: Account = serde_json::from_value(serde_json::json!({
            "provider": "zendesk", "subdomain": "Globex", "api_token": "t", "email": "a@globex.test"
        }))
        .unwrap();
        let state = SandboxState::new();
        let id = state.add_account(account).unwrap();
        assert!(id >= 900_001);
        let views = state.account_views();
        let view = views.iter().find(|v| v.id == id).unwrap();
        assert_eq!(view.address, "globex.zendesk.com");
        assert_eq!(view.name, "Sandbox User");
    }

    #[test]
    fn invalid_accounts_are_refused() {
        let state = SandboxState::new();
        let bad_sub = Account {
            id: 0,
            name: String::new(),
            email: String::new(),
            provider: ProviderAccount::Zendesk {
                subdomain: "a/b".to_owned(),
                api_token: "t".into(),
            },
        };
        assert!(state.add_account(bad_sub).is_err());
        let no_creds = Account {
            id: 0,
            name: String::new(),
            email: String::new(),
            provider: ProviderAccount::Custom {
                host: "x.example".to_owned(),
                base_path: "/".to_owned(),
                bearer_token: None,
                api_key: None,
                username: None,
                password: None,
            },
        };
        assert!(state.add_account(no_creds).is_err());
        let stolen_host = Account {
            id: 0,
            name: String::new(),
            email: String::new(),
            provider: ProviderAccount::Chatwoot {
                host: "custom.example".to_owned(),
                account_id: 1,
                account_name: "x".to_owned(),
                api_access_token: "t".into(),
            },
        };
        assert!(state.add_account(stolen_host).is_err());
    }

    #[test]
    fn faults_are_taken_in_order_and_by_provider() {
        let state = SandboxState::new();
        state
            .add_fault(Fault::new(503, 2).for_provider(Provider::Zendesk))
            .unwrap();
        state.force_status(500, 1, None).unwrap();
        assert_eq!(
            state
                .take_fault(Provider::Hubspot, "hubspot.x")
                .map(|f| f.status),
            Some(500)
        );
        assert_eq!(state.take_fault(Provider::Hubspot, "hubspot.x"), None);
        assert_eq!(
            state
                .take_fault(Provider::Zendesk, "zendesk.x")
                .map(|f| f.status),
            Some(503)
        );
        assert_eq!(state.faults_view().pending[0].count, 1);
        assert_eq!(
            state
                .take_fault(Provider::Zendesk, "zendesk.x")
                .map(|f| f.status),
            Some(503)
        );
        assert_eq!(state.take_fault(Provider::Zendesk, "zendesk.x"), None);
        assert!(state.force_status(200, 1, None).is_err());
        assert!(state.force_status(503, 0, None).is_err());
    }

    #[test]
    fn a_fault_for_one_route_waits_for_that_route() {
        let state = SandboxState::new();
        state
            .add_fault(
                Fault::new(504, 1)
                    .for_provider(Provider::Pipedrive)
                    .for_route("pipedrive.recents"),
            )
            .unwrap();
        assert_eq!(
            state.take_fault(Provider::Pipedrive, "pipedrive.crm_create"),
            None
        );
        assert_eq!(
            state.take_fault(Provider::Hubspot, "pipedrive.recents"),
            None
        );
        assert_eq!(
            state
                .take_fault(Provider::Pipedrive, "pipedrive.recents")
                .map(|f| f.status),
            Some(504)
        );
        assert!(state.faults_view().pending.is_empty());
    }

    #[test]
    fn reset_restores_seeds() {
        let state = SandboxState::new();
        state.record_call("x");
        state.set_latency(None, Duration::from_millis(5));
        state.reset();
        assert_eq!(state.total_calls(), 0);
        assert_eq!(state.faults_view(), FaultsView::default());
    }
}

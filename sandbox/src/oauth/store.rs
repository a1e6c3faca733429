//! The OAuth grant engine: clients, users, authorization codes, grants, tokens and the
//! per-provider knobs, with the RFC 6749 / 7636 / 7009 rules. No HTTP here: `flow` parses
//! requests and `shape` renders answers.
//!
//! Every token ever issued stays in `tokens` (marked retired or revoked, never removed) so
//! views can find its grant and reuse can be detected. Lookups are hash-map hits: a token
//! request does O(1) work under the lock.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::shape::{self, TokenUse};
use super::{
    GrantSelector, OAuthClient, OAuthClientView, OAuthError, OAuthFault, OAuthGrantView,
    OAuthProvider, OAuthSettingsView, OAuthUser,
};
use super::{scopes, util};
use crate::state::Secret;

/// How long an authorization code can be exchanged.
pub(crate) const CODE_TTL: Duration = Duration::from_secs(600);
/// Zendesk's default refresh-token lifetime (`refresh_token_expires_in`), 30 days.
pub(crate) const ZENDESK_REFRESH_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Zoho's data centres, as in `accounts.zoho.{dc}`, with their `location` names.
pub(crate) const ZOHO_DATA_CENTRES: [(&str, &str); 6] = [
    ("com", "us"),
    ("eu", "eu"),
    ("in", "in"),
    ("com.au", "au"),
    ("jp", "jp"),
    ("com.cn", "cn"),
];

/// Genesys Cloud regions, as in `login.{region}` and `api.{region}`.
pub(crate) const GENESYS_REGIONS: [&str; 11] = [
    "mypurecloud.com",
    "usw2.pure.cloud",
    "cac1.pure.cloud",
    "mypurecloud.ie",
    "euw2.pure.cloud",
    "mypurecloud.de",
    "aps1.pure.cloud",
    "mypurecloud.jp",
    "apne2.pure.cloud",
    "mypurecloud.com.au",
    "sae1.pure.cloud",
];

/// Salesforce's default login host.
pub(crate) const SALESFORCE_LOGIN: &str = "login.salesforce.com";

/// One provider's knobs.
#[derive(Debug)]
pub(crate) struct Knobs {
    /// Access-token lifetime.
    pub(crate) ttl: Duration,
    /// Refresh-token rotation.
    pub(crate) rotation: bool,
    /// Forced token-endpoint answers, with remaining counts.
    pub(crate) faults: VecDeque<(OAuthFault, u32)>,
    /// Authorizations still to deny.
    pub(crate) denials: u32,
    /// Access tokens with a sequence number up to this one are expired.
    expired_up_to: u64,
    /// Scopes the consenting user (or the account's plan) withholds from every new
    /// authorization: a partial grant.
    pub(crate) withheld: Vec<String>,
}

impl Knobs {
    fn new(provider: OAuthProvider) -> Self {
        Self {
            ttl: provider.default_token_ttl(),
            rotation: provider.default_rotation(),
            faults: VecDeque::new(),
            denials: 0,
            expired_up_to: 0,
            withheld: Vec::new(),
        }
    }
}

#[derive(Debug)]
struct ClientRecord {
    secret: Secret,
    app_id: u64,
    /// The scopes the app is configured with; `None`: every scope the provider knows.
    scopes: Option<Vec<String>>,
}

/// A PKCE code challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Challenge {
    /// `code_challenge_method=S256`.
    S256(String),
    /// `code_challenge_method=plain` (or absent, per RFC 7636 §4.3).
    Plain(String),
}

#[derive(Debug)]
struct CodeRecord {
    provider: OAuthProvider,
    client_id: String,
    redirect_uri: String,
    scopes: Vec<String>,
    challenge: Option<Challenge>,
    user: usize,
    site: String,
    offline: bool,
    nonce: Option<String>,
    expires_at: Instant,
    /// The grant the code was exchanged for, once it was.
    redeemed: Option<u64>,
}

#[derive(Debug)]
struct Grant {
    provider: OAuthProvider,
    client_id: String,
    user: usize,
    scopes: Vec<String>,
    site: String,
    nonce: Option<String>,
    token_requests: u64,
    refreshes: u64,
    revoked: bool,
    revoke_requests: u64,
    reuse_detected: bool,
    /// Access tokens of an older generation are dead (Zendesk's refresh deletes them).
    generation: u64,
}

#[derive(Debug)]
enum TokenKind {
    Access {
        expires_at: Instant,
        issued_unix: u64,
        ttl: Duration,
        seq: u64,
        generation: u64,
        revoked: bool,
        /// Narrower scopes asked for at refresh; `None` means the grant's.
        scopes: Option<Vec<String>>,
    },
    Refresh {
        retired: bool,
        revoked: bool,
        issued_unix: u64,
        expires_at: Option<Instant>,
    },
}

#[derive(Debug)]
struct TokenRecord {
    grant: u64,
    kind: TokenKind,
}

/// Why a token request failed (rendered per provider by `shape`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenError {
    /// A parameter is missing, repeated or malformed.
    InvalidRequest(&'static str),
    /// Client authentication failed.
    InvalidClient(ClientProblem),
    /// The code or refresh token is not (or no longer) good for this client.
    InvalidGrant(GrantProblem),
    /// A refresh asked for scopes beyond the grant's.
    InvalidScope,
    /// `grant_type` is missing or not one the sandbox serves.
    UnsupportedGrantType,
}

/// What is wrong with the client's credentials.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClientProblem {
    /// No client id at all.
    Missing,
    /// No such client at this provider.
    Unknown,
    /// The secret is missing or wrong.
    BadSecret,
    /// Credentials in the body where the provider wants HTTP Basic.
    BasicRequired,
    /// Basic and body credentials at once (RFC 6749 §2.3).
    MultipleMethods,
}

/// What is wrong with the grant named in a token request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GrantProblem {
    /// No such code.
    UnknownCode,
    /// The code was already exchanged.
    CodeUsed,
    /// The code is older than ten minutes.
    CodeExpired,
    /// `redirect_uri` differs from the authorization request's.
    RedirectMismatch,
    /// A PKCE challenge was given but no verifier.
    VerifierMissing,
    /// The verifier does not match the challenge.
    VerifierMismatch,
    /// The code or token was issued to another client.
    WrongClient,
    /// The code or token belongs to another data centre, subdomain or region.
    WrongSite,
    /// No such refresh token.
    UnknownRefresh,
    /// The grant (or this token) was revoked.
    Revoked,
    /// The refresh token is past its lifetime.
    RefreshExpired,
    /// A retired (rotated-out) refresh token: the grant is now revoked.
    Reused,
    /// A forced `OAuthFault::InvalidGrant`.
    Forced,
}

impl GrantProblem {
    /// Whether the problem is about an authorization code (vs. a refresh token).
    pub(crate) fn is_code(self) -> bool {
        matches!(
            self,
            GrantProblem::UnknownCode
                | GrantProblem::CodeUsed
                | GrantProblem::CodeExpired
                | GrantProblem::RedirectMismatch
                | GrantProblem::VerifierMissing
                | GrantProblem::VerifierMismatch
        )
    }
}

/// An authorization request, as `flow` parsed it.
#[derive(Debug)]
pub(crate) struct AuthorizeRequest {
    pub(crate) provider: OAuthProvider,
    pub(crate) client_id: String,
    pub(crate) redirect_uri: String,
    pub(crate) scopes: Vec<String>,
    /// HubSpot's `optional_scope`: granted when the app and account have them, else
    /// silently left out.
    pub(crate) optional_scopes: Vec<String>,
    /// Google's `include_granted_scopes=true`: add the scopes of the user's live grants
    /// to this client.
    pub(crate) include_granted: bool,
    pub(crate) challenge: Option<Challenge>,
    pub(crate) login_hint: Option<String>,
    /// Where the request was made: Zendesk subdomain, Genesys region, Salesforce host,
    /// Zoho data centre; empty elsewhere.
    pub(crate) site: String,
    /// `access_type=offline` (Google, Zoho).
    pub(crate) offline: bool,
    pub(crate) nonce: Option<String>,
}

/// An approved authorization.
#[derive(Debug)]
pub(crate) struct Authorized {
    pub(crate) code: String,
    pub(crate) user: OAuthUser,
    /// The scopes the code grants.
    pub(crate) scopes: Vec<String>,
}

/// Why an authorization request was not approved.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AuthorizeRefusal {
    /// Not a client of this provider: error page, no redirect.
    UnknownClient,
    /// The user (or the denial knob) said no.
    Denied,
    /// The provider has no user to approve: error page.
    NoUser,
    /// Scopes the provider does not know or the app is not configured with.
    InvalidScope(Vec<String>),
}

/// Tokens just issued by a code exchange, a refresh or a seed, with everything the
/// provider's response shows.
#[derive(Debug)]
pub(crate) struct Issued {
    pub(crate) provider: OAuthProvider,
    pub(crate) grant_id: u64,
    pub(crate) client_id: String,
    /// Needed for Salesforce's `signature`; never rendered.
    pub(crate) client_secret: Secret,
    pub(crate) user: OAuthUser,
    pub(crate) site: String,
    pub(crate) access_token: String,
    /// The refresh token to put in the response, if any.
    pub(crate) refresh_token: Option<String>,
    /// Lifetime of that refresh token, if it has one (Zendesk).
    pub(crate) refresh_ttl: Option<Duration>,
    pub(crate) ttl: Duration,
    pub(crate) issued_unix_ms: u64,
    pub(crate) scopes: Vec<String>,
    pub(crate) nonce: Option<String>,
}

/// Who made a token request, and where: an authenticated client of `provider` at `site`
/// (Zoho data centre, Zendesk subdomain, Genesys region, Salesforce host; else empty).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Caller<'a> {
    pub(crate) provider: OAuthProvider,
    pub(crate) client_id: &'a str,
    pub(crate) site: &'a str,
    pub(crate) lifetimes: Lifetimes,
}

/// Lifetimes a token request asked for (Zendesk's `expires_in`,
/// `refresh_token_expires_in`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Lifetimes {
    pub(crate) access: Option<Duration>,
    pub(crate) refresh: Option<Duration>,
}

/// A valid access token's grant, as protected endpoints see it.
#[derive(Clone, Debug)]
pub(crate) struct AccessGrant {
    pub(crate) client_id: String,
    pub(crate) app_id: u64,
    pub(crate) user: OAuthUser,
    pub(crate) scopes: Vec<String>,
    pub(crate) site: String,
    pub(crate) issued_unix: u64,
    pub(crate) ttl: Duration,
    /// Whole seconds left.
    pub(crate) expires_in: u64,
}

/// Why an access token is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AccessDenied {
    /// Never issued (or by another provider).
    Unknown,
    /// Past its lifetime (or expired by the knob).
    Expired,
    /// Its grant, or the token itself, was revoked.
    Revoked,
}

/// What introspection reveals about a token.
#[derive(Clone, Debug)]
pub(crate) struct Introspection {
    pub(crate) refresh: bool,
    pub(crate) client_id: String,
    pub(crate) user: OAuthUser,
    pub(crate) scopes: Vec<String>,
    pub(crate) issued_unix: u64,
    pub(crate) expires_unix: Option<u64>,
}

/// How far a revocation reaches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RevokeReach {
    /// Any token of the grant revokes the whole grant.
    Grant,
    /// A refresh token revokes the grant; an access token only itself.
    AccessTokenOnly,
}

/// What a revocation request found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RevokeOutcome {
    /// No such token at this provider (or issued to another client).
    Unknown,
    /// Revoked now.
    Revoked,
    /// The token was already dead (revoked or expired).
    AlreadyDead,
}

/// The OAuth state of one sandbox.
#[derive(Debug)]
pub(crate) struct Store {
    clients: BTreeMap<(OAuthProvider, String), ClientRecord>,
    next_app_id: u64,
    users: Vec<OAuthUser>,
    user_grants: Vec<Vec<u64>>,
    user_index: HashMap<(OAuthProvider, String), usize>,
    provider_users: BTreeMap<OAuthProvider, Vec<usize>>,
    codes: HashMap<String, CodeRecord>,
    /// Grant `n` is at index `n - 1`.
    grants: Vec<Grant>,
    tokens: HashMap<String, TokenRecord>,
    issued: Vec<String>,
    knobs: BTreeMap<OAuthProvider, Knobs>,
    access_seq: u64,
    next_number: u64,
}

impl Default for Store {
    fn default() -> Self {
        let mut store = Self {
            clients: BTreeMap::new(),
            next_app_id: 1_000_001,
            users: Vec::new(),
            user_grants: Vec::new(),
            user_index: HashMap::new(),
            provider_users: BTreeMap::new(),
            codes: HashMap::new(),
            grants: Vec::new(),
            tokens: HashMap::new(),
            issued: Vec::new(),
            knobs: OAuthProvider::ALL
                .into_iter()
                .map(|provider| (provider, Knobs::new(provider)))
                .collect(),
            access_seq: 0,
            next_number: 9_100_001,
        };
        for client in default_oauth_clients() {
            // The seeds are valid by construction; a failure would be a bug in them.
            if let Err(error) = store.add_client(client) {
                tracing::error!(%error, "invalid seed OAuth client");
            }
        }
        for user in default_oauth_users() {
            if let Err(error) = store.add_user(user) {
                tracing::error!(%error, "invalid seed OAuth user");
            }
        }
        store
    }
}

impl Store {
    // ------------------------------------------------------------ clients and users

    pub(crate) fn add_client(
        &mut self,
        client: OAuthClient,
    ) -> Result<OAuthClientView, OAuthError> {
        let client_id = client.client_id.trim().to_owned();
        if client_id.is_empty() || client_id.contains(char::is_whitespace) {
            return Err(OAuthError(
                "client_id must be non-empty without spaces".to_owned(),
            ));
        }
        if client.client_secret.expose().is_empty() {
            return Err(OAuthError("client_secret must not be empty".to_owned()));
        }
        let key = (client.provider, client_id.clone());
        let (app_id, scopes) = match self.clients.get(&key) {
            Some(existing) => (existing.app_id, existing.scopes.clone()),
            None => {
                self.next_app_id += 1;
                (self.next_app_id - 1, None)
            }
        };
        self.clients.insert(
            key,
            ClientRecord {
                secret: client.client_secret,
                app_id,
                scopes,
            },
        );
        Ok(OAuthClientView {
            provider: client.provider,
            client_id,
            app_id,
        })
    }

    pub(crate) fn client_views(&self) -> Vec<OAuthClientView> {
        self.clients
            .iter()
            .map(|((provider, client_id), record)| OAuthClientView {
                provider: *provider,
                client_id: client_id.clone(),
                app_id: record.app_id,
            })
            .collect()
    }

    /// Checks a client's credentials; `secret` is `None` when none was sent.
    pub(crate) fn authenticate_client(
        &self,
        provider: OAuthProvider,
        client_id: &str,
        secret: Option<&str>,
    ) -> Result<(), ClientProblem> {
        let record = self
            .clients
            .get(&(provider, client_id.to_owned()))
            .ok_or(ClientProblem::Unknown)?;
        match secret {
            Some(secret) if util::secure_eq(record.secret.expose(), secret) => Ok(()),
            _ => Err(ClientProblem::BadSecret),
        }
    }

    /// Configures the scopes an app may be granted (`None`: every scope the provider
    /// knows). Unknown scopes are refused.
    pub(crate) fn set_client_scopes(
        &mut self,
        provider: OAuthProvider,
        client_id: &str,
        scopes: Option<Vec<String>>,
    ) -> Result<(), OAuthError> {
        if let Some(unknown) = scopes
            .iter()
            .flatten()
            .find(|scope| !scopes::known(provider, scope))
        {
            return Err(OAuthError(format!(
                "{provider} does not know scope {unknown:?}"
            )));
        }
        let record = self
            .clients
            .get_mut(&(provider, client_id.to_owned()))
            .ok_or_else(|| OAuthError(format!("{provider} has no client {client_id:?}")))?;
        record.scopes = scopes;
        Ok(())
    }

    /// The scopes an app is configured with (`None`: unrestricted).
    pub(crate) fn client_scopes(
        &self,
        provider: OAuthProvider,
        client_id: &str,
    ) -> Option<Vec<String>> {
        self.clients
            .get(&(provider, client_id.to_owned()))
            .and_then(|record| record.scopes.clone())
    }

    /// Whether `client_id` is a client of `provider`.
    pub(crate) fn has_client(&self, provider: OAuthProvider, client_id: &str) -> bool {
        self.clients.contains_key(&(provider, client_id.to_owned()))
    }

    pub(crate) fn add_user(&mut self, mut user: OAuthUser) -> Result<OAuthUser, OAuthError> {
        self.fill_user(&mut user)?;
        let key = (user.provider, user.email.to_ascii_lowercase());
        match self.user_index.get(&key) {
            // `fill_user` kept the replaced user's id unless a new one was given.
            Some(&index) => self.users[index] = user.clone(),
            None => {
                let index = self.users.len();
                self.users.push(user.clone());
                self.user_grants.push(Vec::new());
                self.user_index.insert(key, index);
                self.provider_users
                    .entry(user.provider)
                    .or_default()
                    .push(index);
            }
        }
        Ok(user)
    }

    pub(crate) fn users(&self) -> Vec<OAuthUser> {
        self.users.clone()
    }

    fn next_number(&mut self) -> u64 {
        self.next_number += 1;
        self.next_number - 1
    }

    /// Validates a user and fills its defaults (the Acme account's values).
    fn fill_user(&mut self, user: &mut OAuthUser) -> Result<(), OAuthError> {
        user.email = user.email.trim().to_owned();
        if user.email.is_empty()
            || !user.email.contains('@')
            || user.email.contains(char::is_whitespace)
        {
            return Err(OAuthError(format!("invalid email {:?}", user.email)));
        }
        if user.name.trim().is_empty() {
            user.name = "Sandbox User".to_owned();
        }
        let existing = self
            .user_index
            .get(&(user.provider, user.email.to_ascii_lowercase()))
            .map(|&index| self.users[index].user_id.clone());
        if user.user_id.trim().is_empty() {
            user.user_id = match existing {
                Some(id) => id,
                None => self.new_user_id(user.provider),
            };
        }
        match user.provider {
            OAuthProvider::Hubspot => {
                if user.hub_id == 0 {
                    user.hub_id = 62_515;
                }
                if user.hub_domain.is_empty() {
                    user.hub_domain = if user.hub_id == 62_515 {
                        "acme.hubspot.com".to_owned()
                    } else {
                        format!("portal-{}.hubspot.com", user.hub_id)
                    };
                }
            }
            OAuthProvider::Salesforce => {
                default_string(&mut user.org_id, ACME_SF_ORG);
                default_string(&mut user.instance_host, "acme.my.salesforce.com");
                user.instance_host = user.instance_host.to_ascii_lowercase();
                if !crate::providers::salesforce::is_host(&user.instance_host) {
                    return Err(OAuthError(format!(
                        "instance_host must be a *.salesforce.com or *.force.com host, got {:?}",
                        user.instance_host
                    )));
                }
            }
            OAuthProvider::Zoho => {
                default_string(&mut user.data_centre, "com");
                if zoho_location(&user.data_centre).is_none() {
                    return Err(OAuthError(format!(
                        "data_centre must be one of com, eu, in, com.au, jp, com.cn, got {:?}",
                        user.data_centre
                    )));
                }
                default_string(&mut user.org_id, "700000001");
            }
            OAuthProvider::Pipedrive => {
                if user.company_id == 0 {
                    user.company_id = 5_000_001;
                }
                default_string(&mut user.company_domain, "acme");
                user.company_domain = dns_label(&user.company_domain, "company_domain")?;
            }
            OAuthProvider::Dynamics365 => {
                default_string(&mut user.org_id, ACME_MS_ORG);
                default_string(&mut user.environment_host, "acme.crm.dynamics.com");
                user.environment_host = user.environment_host.to_ascii_lowercase();
                if crate::providers::dynamics365::environment(&user.environment_host).is_none() {
                    return Err(OAuthError(format!(
                        "environment_host must look like org.crm.dynamics.com, got {:?}",
                        user.environment_host
                    )));
                }
            }
            OAuthProvider::Zendesk => {
                default_string(&mut user.subdomain, "acme");
                user.subdomain = dns_label(&user.subdomain, "subdomain")?;
            }
            OAuthProvider::Genesys => {
                default_string(&mut user.region, GENESYS_REGIONS[0]);
                user.region = user.region.to_ascii_lowercase();
                if !GENESYS_REGIONS.contains(&user.region.as_str()) {
                    return Err(OAuthError(format!(
                        "unknown Genesys region {:?}",
                        user.region
                    )));
                }
                default_string(&mut user.org_id, ACME_GENESYS_ORG);
            }
            OAuthProvider::Google | OAuthProvider::CustomOauth => {}
        }
        Ok(())
    }

    /// A fresh user id in the provider's format.
    fn new_user_id(&mut self, provider: OAuthProvider) -> String {
        let n = self.next_number();
        match provider {
            OAuthProvider::Hubspot | OAuthProvider::Pipedrive | OAuthProvider::Zendesk => {
                n.to_string()
            }
            OAuthProvider::Zoho => format!("48768760000{n:08}"),
            OAuthProvider::Salesforce => format!("005Dn{n:010}AAA"),
            OAuthProvider::Google => format!("1098765432{n:011}"),
            OAuthProvider::Dynamics365 | OAuthProvider::Genesys => util::random_guid(),
            OAuthProvider::CustomOauth => format!("user-{n}"),
        }
    }

    fn user_by_email(&self, provider: OAuthProvider, email: &str) -> Option<usize> {
        self.user_index
            .get(&(provider, email.trim().to_ascii_lowercase()))
            .copied()
    }

    /// The approving user: the `login_hint` user if known, else the default user of the
    /// request's site (Zoho data centre, Zendesk subdomain, Genesys region), else the
    /// provider's first user.
    fn pick_user(&self, provider: OAuthProvider, hint: Option<&str>, site: &str) -> Option<usize> {
        if let Some(index) = hint.and_then(|hint| self.user_by_email(provider, hint)) {
            return Some(index);
        }
        let candidates = self.provider_users.get(&provider)?;
        let at_site = candidates.iter().copied().find(|&index| {
            let user = &self.users[index];
            match provider {
                OAuthProvider::Zoho => user.data_centre == site,
                OAuthProvider::Zendesk => user.subdomain == site,
                OAuthProvider::Genesys => user.region == site,
                _ => false,
            }
        });
        at_site.or_else(|| candidates.first().copied())
    }

    // ------------------------------------------------------------ knobs

    pub(crate) fn knobs_mut(&mut self, provider: OAuthProvider) -> &mut Knobs {
        self.knobs
            .entry(provider)
            .or_insert_with(|| Knobs::new(provider))
    }

    fn ttl(&self, provider: OAuthProvider) -> Duration {
        self.knobs
            .get(&provider)
            .map_or_else(|| provider.default_token_ttl(), |knobs| knobs.ttl)
    }

    fn rotation(&self, provider: OAuthProvider) -> bool {
        self.knobs
            .get(&provider)
            .map_or_else(|| provider.default_rotation(), |knobs| knobs.rotation)
    }

    /// Takes one use of the provider's first pending token fault.
    pub(crate) fn take_fault(&mut self, provider: OAuthProvider) -> Option<OAuthFault> {
        let faults = &mut self.knobs_mut(provider).faults;
        let (fault, count) = faults.front_mut()?;
        let fault = *fault;
        *count = count.saturating_sub(1);
        if *count == 0 {
            faults.pop_front();
        }
        Some(fault)
    }

    pub(crate) fn expire_access_tokens(&mut self, provider: OAuthProvider) {
        let seq = self.access_seq;
        self.knobs_mut(provider).expired_up_to = seq;
    }

    pub(crate) fn settings_views(&self) -> Vec<OAuthSettingsView> {
        self.knobs
            .iter()
            .map(|(provider, knobs)| OAuthSettingsView {
                provider: *provider,
                token_ttl_ms: u64::try_from(knobs.ttl.as_millis()).unwrap_or(u64::MAX),
                rotation: knobs.rotation,
                pending_token_faults: knobs.faults.iter().copied().collect(),
                pending_denials: knobs.denials,
                withheld_scopes: knobs.withheld.clone(),
            })
            .collect()
    }

    // ------------------------------------------------------------ issuing

    /// A new unique secret of `provider`'s format, recorded in `issued`.
    fn mint(&mut self, provider: OAuthProvider, what: TokenUse, user: usize) -> String {
        loop {
            let value = shape::new_secret(provider, what, &self.users[user]);
            if !self.tokens.contains_key(&value) && !self.codes.contains_key(&value) {
                self.issued.push(value.clone());
                return value;
            }
        }
    }

    fn issue_access(
        &mut self,
        grant_id: u64,
        ttl: Duration,
        scopes: Option<Vec<String>>,
    ) -> String {
        let (provider, user, generation) = {
            let grant = &self.grants[index_of(grant_id)];
            (grant.provider, grant.user, grant.generation)
        };
        let token = self.mint(provider, TokenUse::Access, user);
        self.access_seq += 1;
        self.tokens.insert(
            token.clone(),
            TokenRecord {
                grant: grant_id,
                kind: TokenKind::Access {
                    expires_at: Instant::now() + ttl,
                    issued_unix: util::unix_secs(),
                    ttl,
                    seq: self.access_seq,
                    generation,
                    revoked: false,
                    scopes,
                },
            },
        );
        token
    }

    fn issue_refresh(&mut self, grant_id: u64, ttl: Option<Duration>) -> String {
        let (provider, user) = {
            let grant = &self.grants[index_of(grant_id)];
            (grant.provider, grant.user)
        };
        let token = self.mint(provider, TokenUse::Refresh, user);
        self.tokens.insert(
            token.clone(),
            TokenRecord {
                grant: grant_id,
                kind: TokenKind::Refresh {
                    retired: false,
                    revoked: false,
                    issued_unix: util::unix_secs(),
                    expires_at: ttl.map(|ttl| Instant::now() + ttl),
                },
            },
        );
        token
    }

    /// Creates a grant and its first tokens.
    #[allow(clippy::too_many_arguments)]
    fn create_grant(
        &mut self,
        provider: OAuthProvider,
        client_id: &str,
        user: usize,
        scopes: Vec<String>,
        site: String,
        nonce: Option<String>,
        with_refresh: bool,
        lifetimes: Lifetimes,
    ) -> Issued {
        self.grants.push(Grant {
            provider,
            client_id: client_id.to_owned(),
            user,
            scopes,
            site,
            nonce,
            token_requests: 0,
            refreshes: 0,
            revoked: false,
            revoke_requests: 0,
            reuse_detected: false,
            generation: 0,
        });
        let grant_id = u64::try_from(self.grants.len()).unwrap_or(u64::MAX);
        if let Some(grants) = self.user_grants.get_mut(user) {
            grants.push(grant_id);
        }
        let ttl = lifetimes.access.unwrap_or_else(|| self.ttl(provider));
        let access = self.issue_access(grant_id, ttl, None);
        let refresh_ttl = refresh_lifetime(provider, lifetimes);
        let refresh = with_refresh.then(|| self.issue_refresh(grant_id, refresh_ttl));
        self.issued_for(grant_id, access, refresh, refresh_ttl, ttl, None)
    }

    #[allow(clippy::too_many_arguments)]
    fn issued_for(
        &self,
        grant_id: u64,
        access_token: String,
        refresh_token: Option<String>,
        refresh_ttl: Option<Duration>,
        ttl: Duration,
        scopes: Option<Vec<String>>,
    ) -> Issued {
        let grant = &self.grants[index_of(grant_id)];
        let client_secret = self
            .clients
            .get(&(grant.provider, grant.client_id.clone()))
            .map_or_else(|| Secret::new(""), |client| client.secret.clone());
        Issued {
            provider: grant.provider,
            grant_id,
            client_id: grant.client_id.clone(),
            client_secret,
            user: self.users[grant.user].clone(),
            site: grant.site.clone(),
            access_token,
            refresh_token: refresh_token.clone(),
            refresh_ttl: refresh_token.and(refresh_ttl),
            ttl,
            issued_unix_ms: util::unix_millis(),
            scopes: scopes.unwrap_or_else(|| grant.scopes.clone()),
            nonce: grant.nonce.clone(),
        }
    }

    // ------------------------------------------------------------ authorize

    pub(crate) fn authorize(
        &mut self,
        request: AuthorizeRequest,
        deny: bool,
    ) -> Result<Authorized, AuthorizeRefusal> {
        let provider = request.provider;
        if !self.has_client(provider, &request.client_id) {
            return Err(AuthorizeRefusal::UnknownClient);
        }
        let granted = self.scopes_to_grant(&request)?;
        if deny {
            return Err(AuthorizeRefusal::Denied);
        }
        let knobs = self.knobs_mut(provider);
        if knobs.denials > 0 {
            knobs.denials -= 1;
            return Err(AuthorizeRefusal::Denied);
        }
        let user = self
            .pick_user(provider, request.login_hint.as_deref(), &request.site)
            .ok_or(AuthorizeRefusal::NoUser)?;
        let site = match provider {
            // Zoho sends the user to their own data centre (`location`, `accounts-server`).
            OAuthProvider::Zoho => self.users[user].data_centre.clone(),
            _ => request.site,
        };
        let mut granted = granted;
        if request.include_granted {
            // Google's incremental authorization: the new grant also carries what the
            // user already granted this client.
            let earlier: Vec<String> = self.user_grants[user]
                .iter()
                .map(|&id| &self.grants[index_of(id)])
                .filter(|g| !g.revoked && g.client_id == request.client_id)
                .flat_map(|g| g.scopes.iter().cloned())
                .collect();
            for scope in earlier {
                if !granted.contains(&scope) {
                    granted.push(scope);
                }
            }
        }
        let code = self.mint(provider, TokenUse::Code, user);
        self.codes.insert(
            code.clone(),
            CodeRecord {
                provider,
                client_id: request.client_id,
                redirect_uri: request.redirect_uri,
                scopes: granted.clone(),
                challenge: request.challenge,
                user,
                site,
                offline: request.offline,
                nonce: request.nonce,
                expires_at: Instant::now() + CODE_TTL,
                redeemed: None,
            },
        );
        Ok(Authorized {
            code,
            user: self.users[user].clone(),
            scopes: granted,
        })
    }

    /// What an authorization grants: every asked scope must be one the provider knows
    /// and the app is configured with (else the request is refused, naming them);
    /// optional scopes are granted only when both hold; scopes the user withholds (the
    /// partial-grant knob) are left out. Pipedrive ignores the asked scopes: its users
    /// accept the app's configured set (with `base` always), or, for an app configured
    /// with no set, what was asked that Pipedrive knows.
    fn scopes_to_grant(&self, request: &AuthorizeRequest) -> Result<Vec<String>, AuthorizeRefusal> {
        let provider = request.provider;
        let app = self.client_scopes(provider, &request.client_id);
        let allowed = |scope: &String| {
            scopes::known(provider, scope) && app.as_ref().is_none_or(|app| app.contains(scope))
        };
        let mut granted: Vec<String> = if provider == OAuthProvider::Pipedrive {
            let mut set = app.clone().unwrap_or_else(|| {
                request
                    .scopes
                    .iter()
                    .filter(|s| allowed(s))
                    .cloned()
                    .collect()
            });
            if !set.iter().any(|s| s == "base") {
                set.insert(0, "base".to_owned());
            }
            set
        } else {
            let refused: Vec<String> = request
                .scopes
                .iter()
                .filter(|s| !allowed(s))
                .cloned()
                .collect();
            if !refused.is_empty() {
                return Err(AuthorizeRefusal::InvalidScope(refused));
            }
            request.scopes.clone()
        };
        for scope in &request.optional_scopes {
            if allowed(scope) && !granted.contains(scope) {
                granted.push(scope.clone());
            }
        }
        if let Some(knobs) = self.knobs.get(&provider) {
            granted.retain(|scope| !knobs.withheld.contains(scope));
        }
        Ok(granted)
    }

    // ------------------------------------------------------------ token endpoint

    /// `grant_type=authorization_code` for an authenticated client.
    pub(crate) fn redeem(
        &mut self,
        caller: &Caller<'_>,
        code: &str,
        redirect_uri: Option<&str>,
        verifier: Option<&str>,
    ) -> Result<Issued, TokenError> {
        let Caller {
            provider,
            client_id,
            site,
            lifetimes,
        } = *caller;
        let bad = |problem| Err(TokenError::InvalidGrant(problem));
        let Some(record) = self.codes.get(code) else {
            return bad(GrantProblem::UnknownCode);
        };
        if record.provider != provider {
            return bad(GrantProblem::UnknownCode);
        }
        if record.client_id != client_id {
            return bad(GrantProblem::WrongClient);
        }
        if let Some(grant_id) = record.redeemed {
            self.grants[index_of(grant_id)].token_requests += 1;
            return bad(GrantProblem::CodeUsed);
        }
        if Instant::now() >= record.expires_at {
            return bad(GrantProblem::CodeExpired);
        }
        if !self.site_matches(provider, &record.site, record.user, site) {
            return bad(GrantProblem::WrongSite);
        }
        if redirect_uri != Some(record.redirect_uri.as_str()) {
            return bad(GrantProblem::RedirectMismatch);
        }
        match (&record.challenge, verifier) {
            (None, _) => {}
            (Some(_), None) => return bad(GrantProblem::VerifierMissing),
            (Some(challenge), Some(verifier)) => {
                let expected = match challenge {
                    Challenge::S256(value) | Challenge::Plain(value) => value,
                };
                let computed = match challenge {
                    Challenge::S256(_) => util::s256(verifier),
                    Challenge::Plain(_) => verifier.to_owned(),
                };
                if !valid_verifier(verifier) || !util::secure_eq(expected, &computed) {
                    return bad(GrantProblem::VerifierMismatch);
                }
            }
        }
        let with_refresh = match provider {
            OAuthProvider::Google | OAuthProvider::Zoho => record.offline,
            OAuthProvider::Salesforce => {
                record.scopes.is_empty()
                    || record
                        .scopes
                        .iter()
                        .any(|s| s == "refresh_token" || s == "offline_access")
            }
            OAuthProvider::Dynamics365 => record.scopes.iter().any(|s| s == "offline_access"),
            _ => true,
        };
        let (user, scopes, site, nonce) = (
            record.user,
            record.scopes.clone(),
            record.site.clone(),
            record.nonce.clone(),
        );
        let issued = self.create_grant(
            provider,
            client_id,
            user,
            scopes,
            site,
            nonce,
            with_refresh,
            lifetimes,
        );
        self.grants[index_of(issued.grant_id)].token_requests += 1;
        if let Some(record) = self.codes.get_mut(code) {
            record.redeemed = Some(issued.grant_id);
        }
        Ok(issued)
    }

    /// `grant_type=refresh_token` for an authenticated client.
    pub(crate) fn refresh(
        &mut self,
        caller: &Caller<'_>,
        refresh_token: &str,
        scopes: Option<Vec<String>>,
    ) -> Result<Issued, TokenError> {
        let Caller {
            provider,
            client_id,
            site,
            lifetimes,
        } = *caller;
        let bad = |problem| Err(TokenError::InvalidGrant(problem));
        let Some(record) = self.tokens.get(refresh_token) else {
            return bad(GrantProblem::UnknownRefresh);
        };
        let TokenKind::Refresh {
            retired,
            revoked,
            expires_at,
            ..
        } = record.kind
        else {
            return bad(GrantProblem::UnknownRefresh);
        };
        let grant_id = record.grant;
        let index = index_of(grant_id);
        let grant = &self.grants[index];
        if grant.provider != provider {
            return bad(GrantProblem::UnknownRefresh);
        }
        if grant.client_id != client_id {
            return bad(GrantProblem::WrongClient);
        }
        let site_ok = self.site_matches(provider, &grant.site, grant.user, site);
        let grant = &mut self.grants[index];
        grant.token_requests += 1;
        if !site_ok {
            return bad(GrantProblem::WrongSite);
        }
        if grant.revoked || revoked {
            return bad(GrantProblem::Revoked);
        }
        if retired {
            // RFC 6819 §5.2.2.3 / OAuth 2.1: a rotated-out token came back, so either the
            // client or an attacker holds a stolen copy. Kill the whole grant.
            grant.revoked = true;
            grant.reuse_detected = true;
            return bad(GrantProblem::Reused);
        }
        if expires_at.is_some_and(|at| Instant::now() >= at) {
            return bad(GrantProblem::RefreshExpired);
        }
        let narrowed = match scopes {
            Some(asked) if !asked.is_empty() => {
                if !asked.iter().all(|scope| grant.scopes.contains(scope)) {
                    return Err(TokenError::InvalidScope);
                }
                (asked != grant.scopes).then_some(asked)
            }
            _ => None,
        };
        grant.refreshes += 1;
        if provider == OAuthProvider::Zendesk {
            // Zendesk's refresh deletes the previous access tokens.
            grant.generation += 1;
        }
        let ttl = lifetimes.access.unwrap_or_else(|| self.ttl(provider));
        let access = self.issue_access(grant_id, ttl, narrowed.clone());
        let refresh_ttl = refresh_lifetime(provider, lifetimes);
        let returned = if self.rotation(provider) {
            if let Some(TokenRecord {
                kind: TokenKind::Refresh { retired, .. },
                ..
            }) = self.tokens.get_mut(refresh_token)
            {
                *retired = true;
            }
            Some(self.issue_refresh(grant_id, refresh_ttl))
        } else {
            match provider {
                // Microsoft hands out a new refresh token each time; the old one stays good.
                OAuthProvider::Dynamics365 => Some(self.issue_refresh(grant_id, refresh_ttl)),
                OAuthProvider::Salesforce | OAuthProvider::Zoho | OAuthProvider::Google => None,
                _ => Some(refresh_token.to_owned()),
            }
        };
        Ok(self.issued_for(grant_id, access, returned, refresh_ttl, ttl, narrowed))
    }

    /// Whether a request made at `site` may use a grant issued at `grant_site`.
    fn site_matches(
        &self,
        provider: OAuthProvider,
        grant_site: &str,
        user: usize,
        site: &str,
    ) -> bool {
        match provider {
            // Salesforce answers at the login host that issued the grant and at the
            // user's instance (My Domain).
            OAuthProvider::Salesforce => {
                site == grant_site
                    || self
                        .users
                        .get(user)
                        .is_some_and(|u| u.instance_host == site)
            }
            _ => grant_site.is_empty() || site == grant_site,
        }
    }

    // ------------------------------------------------------------ seeding

    pub(crate) fn seed(
        &mut self,
        provider: OAuthProvider,
        client_id: &str,
        email: Option<&str>,
        scopes: &[&str],
    ) -> Result<Issued, OAuthError> {
        if !self.has_client(provider, client_id) {
            return Err(OAuthError(format!(
                "{provider} has no client {client_id:?}"
            )));
        }
        if let Some(unknown) = scopes.iter().find(|scope| !scopes::known(provider, scope)) {
            return Err(OAuthError(format!(
                "{provider} does not know scope {unknown:?}"
            )));
        }
        let user = match email {
            Some(email) => self
                .user_by_email(provider, email)
                .ok_or_else(|| OAuthError(format!("{provider} has no user {email:?}")))?,
            None => self
                .provider_users
                .get(&provider)
                .and_then(|users| users.first().copied())
                .ok_or_else(|| OAuthError(format!("{provider} has no users")))?,
        };
        let person = &self.users[user];
        let site = match provider {
            OAuthProvider::Zoho => person.data_centre.clone(),
            OAuthProvider::Zendesk => person.subdomain.clone(),
            OAuthProvider::Genesys => person.region.clone(),
            OAuthProvider::Salesforce => SALESFORCE_LOGIN.to_owned(),
            _ => String::new(),
        };
        let scopes = scopes.iter().map(|s| (*s).to_owned()).collect();
        let issued = self.create_grant(
            provider,
            client_id,
            user,
            scopes,
            site,
            None,
            true,
            Lifetimes::default(),
        );
        self.grants[index_of(issued.grant_id)].token_requests += 1;
        Ok(issued)
    }

    // ------------------------------------------------------------ using tokens

    /// The grant behind a valid access token of `provider`.
    pub(crate) fn check_access(
        &self,
        provider: OAuthProvider,
        token: &str,
    ) -> Result<AccessGrant, AccessDenied> {
        let record = self.tokens.get(token).ok_or(AccessDenied::Unknown)?;
        let TokenKind::Access {
            expires_at,
            issued_unix,
            ttl,
            seq,
            generation,
            revoked,
            ref scopes,
        } = record.kind
        else {
            return Err(AccessDenied::Unknown);
        };
        let grant = &self.grants[index_of(record.grant)];
        if grant.provider != provider {
            return Err(AccessDenied::Unknown);
        }
        if grant.revoked || revoked || generation < grant.generation {
            return Err(AccessDenied::Revoked);
        }
        let now = Instant::now();
        let expired_up_to = self.knobs.get(&provider).map_or(0, |k| k.expired_up_to);
        if now >= expires_at || seq <= expired_up_to {
            return Err(AccessDenied::Expired);
        }
        let left = expires_at.saturating_duration_since(now);
        Ok(AccessGrant {
            client_id: grant.client_id.clone(),
            app_id: self.app_id(provider, &grant.client_id),
            user: self.users[grant.user].clone(),
            scopes: effective_scopes(scopes, grant),
            site: grant.site.clone(),
            issued_unix,
            ttl,
            expires_in: left.as_secs(),
        })
    }

    /// A HubSpot app by its numeric id: its client id and client secret.
    pub(crate) fn hubspot_app(&self, app_id: u64) -> Option<(String, String)> {
        self.clients
            .iter()
            .find_map(|((provider, client_id), record)| {
                (*provider == OAuthProvider::Hubspot && record.app_id == app_id)
                    .then(|| (client_id.clone(), record.secret.expose().to_owned()))
            })
    }

    /// The portals (hub ids) where a HubSpot app is installed: those with a grant to it
    /// that is not revoked.
    pub(crate) fn hubspot_installs(&self, client_id: &str) -> std::collections::BTreeSet<u64> {
        self.grants
            .iter()
            .filter(|g| {
                g.provider == OAuthProvider::Hubspot && g.client_id == client_id && !g.revoked
            })
            .filter_map(|g| self.users.get(g.user).map(|u| u.hub_id))
            .collect()
    }

    fn app_id(&self, provider: OAuthProvider, client_id: &str) -> u64 {
        self.clients
            .get(&(provider, client_id.to_owned()))
            .map_or(0, |client| client.app_id)
    }

    /// What an introspection endpoint reveals about an active token of `provider`.
    pub(crate) fn introspect(&self, provider: OAuthProvider, token: &str) -> Option<Introspection> {
        let record = self.tokens.get(token)?;
        let grant = &self.grants[index_of(record.grant)];
        if grant.provider != provider || grant.revoked {
            return None;
        }
        let base =
            |refresh, scopes: &Option<Vec<String>>, issued_unix, expires_unix| Introspection {
                refresh,
                client_id: grant.client_id.clone(),
                user: self.users[grant.user].clone(),
                scopes: effective_scopes(scopes, grant),
                issued_unix,
                expires_unix,
            };
        match &record.kind {
            TokenKind::Access {
                issued_unix,
                ttl,
                scopes,
                ..
            } => {
                self.check_access(provider, token).ok()?;
                Some(base(
                    false,
                    scopes,
                    *issued_unix,
                    Some(issued_unix + ttl.as_secs()),
                ))
            }
            TokenKind::Refresh {
                retired,
                revoked,
                issued_unix,
                expires_at,
            } => {
                let expired = expires_at.is_some_and(|at| Instant::now() >= at);
                if *retired || *revoked || expired {
                    return None;
                }
                let expires_unix = expires_at.map(|at| {
                    util::unix_secs() + at.saturating_duration_since(Instant::now()).as_secs()
                });
                Some(base(true, &None, *issued_unix, expires_unix))
            }
        }
    }

    /// Revokes what `token` reaches (see [`RevokeReach`]). With `client_id`, a token of
    /// another client counts as unknown; with `site`, so does a token of another site
    /// (Zoho data centre).
    pub(crate) fn revoke(
        &mut self,
        provider: OAuthProvider,
        token: &str,
        reach: RevokeReach,
        client_id: Option<&str>,
        site: Option<&str>,
    ) -> RevokeOutcome {
        let Some(record) = self.tokens.get(token) else {
            return RevokeOutcome::Unknown;
        };
        let grant_id = record.grant;
        let is_refresh = matches!(record.kind, TokenKind::Refresh { .. });
        let grant = &self.grants[index_of(grant_id)];
        if grant.provider != provider
            || client_id.is_some_and(|id| id != grant.client_id)
            || site.is_some_and(|site| !self.site_matches(provider, &grant.site, grant.user, site))
        {
            return RevokeOutcome::Unknown;
        }
        let alive = if is_refresh {
            self.introspect(provider, token).is_some()
        } else {
            self.check_access(provider, token).is_ok()
        };
        let grant = &mut self.grants[index_of(grant_id)];
        grant.revoke_requests += 1;
        if !alive {
            return RevokeOutcome::AlreadyDead;
        }
        if is_refresh || reach == RevokeReach::Grant {
            grant.revoked = true;
        } else if let Some(TokenRecord {
            kind: TokenKind::Access { revoked, .. },
            ..
        }) = self.tokens.get_mut(token)
        {
            *revoked = true;
        }
        RevokeOutcome::Revoked
    }

    /// The ids of the grants of `provider` that `selector` names (live or not).
    fn select_grants(&self, provider: OAuthProvider, selector: &GrantSelector) -> Vec<u64> {
        let ids: Vec<u64> = match selector {
            GrantSelector::Token(token) => self
                .tokens
                .get(token)
                .map(|record| record.grant)
                .or_else(|| self.codes.get(token).and_then(|code| code.redeemed))
                .into_iter()
                .collect(),
            GrantSelector::GrantId(id) => vec![*id],
            GrantSelector::User { email, client_id } => self
                .user_by_email(provider, email)
                .map(|user| {
                    self.user_grants[user]
                        .iter()
                        .copied()
                        .filter(|&id| {
                            client_id
                                .as_deref()
                                .is_none_or(|c| self.grants[index_of(id)].client_id == c)
                        })
                        .collect()
                })
                .unwrap_or_default(),
        };
        ids.into_iter()
            .filter(|&id| {
                self.grants
                    .get(index_of(id))
                    .is_some_and(|g| g.provider == provider)
            })
            .collect()
    }

    /// An admin narrowed the app: each grant `selector` names keeps only `keep`'s members
    /// it has and loses `remove`'s. Live access tokens lose them at once; later refreshes
    /// issue the narrower set. Returns the grants as they are now.
    pub(crate) fn narrow(
        &mut self,
        provider: OAuthProvider,
        selector: &GrantSelector,
        keep: Option<&[String]>,
        remove: &[String],
    ) -> Vec<OAuthGrantView> {
        let ids = self.select_grants(provider, selector);
        for &id in &ids {
            if let Some(grant) = self.grants.get_mut(index_of(id)) {
                grant.scopes.retain(|scope| {
                    keep.is_none_or(|keep| keep.contains(scope)) && !remove.contains(scope)
                });
            }
        }
        ids.into_iter()
            .filter_map(|id| self.grant_view(id))
            .collect()
    }

    pub(crate) fn revoke_user(&mut self, provider: OAuthProvider, email: &str) -> usize {
        let Some(user) = self.user_by_email(provider, email) else {
            return 0;
        };
        let mut count = 0;
        for &grant_id in &self.user_grants[user] {
            let grant = &mut self.grants[index_of(grant_id)];
            if !grant.revoked {
                grant.revoked = true;
                count += 1;
            }
        }
        count
    }

    // ------------------------------------------------------------ views

    fn grant_view(&self, grant_id: u64) -> Option<OAuthGrantView> {
        let grant = self.grants.get(index_of(grant_id))?;
        let user = &self.users[grant.user];
        Some(OAuthGrantView {
            grant_id,
            provider: grant.provider,
            client_id: grant.client_id.clone(),
            email: user.email.clone(),
            user_id: user.user_id.clone(),
            scopes: grant.scopes.clone(),
            token_requests: grant.token_requests,
            refreshes: grant.refreshes,
            revoked: grant.revoked,
            revoke_requests: grant.revoke_requests,
            reuse_detected: grant.reuse_detected,
        })
    }

    pub(crate) fn grant_view_by_token(&self, token: &str) -> Option<OAuthGrantView> {
        let grant_id = match self.tokens.get(token) {
            Some(record) => record.grant,
            None => self.codes.get(token)?.redeemed?,
        };
        self.grant_view(grant_id)
    }

    pub(crate) fn grant_views_for_user(
        &self,
        provider: OAuthProvider,
        email: &str,
    ) -> Vec<OAuthGrantView> {
        self.user_by_email(provider, email)
            .map(|user| {
                self.user_grants[user]
                    .iter()
                    .filter_map(|&grant_id| self.grant_view(grant_id))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub(crate) fn issued_secrets(&self) -> Vec<String> {
        self.issued.clone()
    }

    /// Whether any user of `provider` matches `predicate` (e.g. a Zendesk subdomain).
    pub(crate) fn any_user(
        &self,
        provider: OAuthProvider,
        predicate: impl Fn(&OAuthUser) -> bool,
    ) -> bool {
        self.provider_users
            .get(&provider)
            .is_some_and(|users| users.iter().any(|&index| predicate(&self.users[index])))
    }
}

/// A token's scopes: those asked at its refresh (or the grant's), less any the grant
/// lost since (narrowing).
fn effective_scopes(token_scopes: &Option<Vec<String>>, grant: &Grant) -> Vec<String> {
    match token_scopes {
        Some(scopes) => scopes
            .iter()
            .filter(|scope| grant.scopes.contains(scope))
            .cloned()
            .collect(),
        None => grant.scopes.clone(),
    }
}

fn index_of(grant_id: u64) -> usize {
    usize::try_from(grant_id.saturating_sub(1)).unwrap_or(usize::MAX)
}

fn default_string(field: &mut String, value: &str) {
    if field.trim().is_empty() {
        *field = value.to_owned();
    }
}

fn dns_label(raw: &str, what: &str) -> Result<String, OAuthError> {
    crate::state::dns_label(raw).ok_or_else(|| OAuthError(format!("invalid {what} {raw:?}")))
}

/// The refresh-token lifetime a provider gives (Zendesk only).
fn refresh_lifetime(provider: OAuthProvider, lifetimes: Lifetimes) -> Option<Duration> {
    match provider {
        OAuthProvider::Zendesk => Some(lifetimes.refresh.unwrap_or(ZENDESK_REFRESH_TTL)),
        _ => lifetimes.refresh,
    }
}

/// RFC 7636 §4.1: 43–128 characters of `[A-Za-z0-9-._~]`.
fn valid_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// Zoho's `location` name of a data centre (`com` → `us`).
pub(crate) fn zoho_location(data_centre: &str) -> Option<&'static str> {
    ZOHO_DATA_CENTRES
        .iter()
        .find(|(dc, _)| *dc == data_centre)
        .map(|(_, location)| *location)
}

const ACME_SF_ORG: &str = "00DDn00000AcmeOEAA";
const ACME_MS_ORG: &str = "1f0d4b8e-6c2a-4e8f-8a3b-5d6e7f809a12";
const ACME_GENESYS_ORG: &str = "6c5e1a4b-2d3f-4a5b-9c8d-7e6f5a4b3c2d";

/// The OAuth clients every fresh sandbox has: for each provider `{p}`, client id
/// `{p}-sandbox-client-id` with secret `{p}-sandbox-client-secret`.
pub fn default_oauth_clients() -> Vec<OAuthClient> {
    OAuthProvider::ALL
        .into_iter()
        .map(|provider| OAuthClient {
            provider,
            client_id: format!("{provider}-sandbox-client-id"),
            client_secret: Secret::new(format!("{provider}-sandbox-client-secret")),
        })
        .collect()
}

/// The OAuth users every fresh sandbox has (see the crate documentation). The first user
/// of each provider is its default; Zoho has one per data centre.
pub fn default_oauth_users() -> Vec<OAuthUser> {
    let user = |provider, email: &str, name: &str, user_id: &str| OAuthUser {
        name: name.to_owned(),
        user_id: user_id.to_owned(),
        ..OAuthUser::new(provider, email)
    };
    let mut users = vec![
        OAuthUser {
            hub_id: 62_515,
            hub_domain: "acme.hubspot.com".to_owned(),
            ..user(
                OAuthProvider::Hubspot,
                "admin@acme.test",
                "Acme Admin",
                "4711001",
            )
        },
        OAuthUser {
            org_id: ACME_SF_ORG.to_owned(),
            instance_host: "acme.my.salesforce.com".to_owned(),
            ..user(
                OAuthProvider::Salesforce,
                "admin@acme.test",
                "Acme Admin",
                "005Dn00000AcmeUAAA",
            )
        },
    ];
    for (index, (dc, location)) in ZOHO_DATA_CENTRES.iter().enumerate() {
        let email = if *dc == "com" {
            "admin@acme.test".to_owned()
        } else {
            format!("admin.{location}@acme.test")
        };
        let number = u64::try_from(index).unwrap_or(0);
        users.push(OAuthUser {
            data_centre: (*dc).to_owned(),
            org_id: format!("{}", 700_000_001 + number),
            ..user(
                OAuthProvider::Zoho,
                &email,
                "Acme Admin",
                &format!("48768760000002250{:02}", 13 + number),
            )
        });
    }
    users.extend([
        OAuthUser {
            company_id: 5_000_001,
            company_domain: "acme".to_owned(),
            ..user(
                OAuthProvider::Pipedrive,
                "sales@acme.test",
                "Acme Sales",
                "10000001",
            )
        },
        OAuthUser {
            org_id: ACME_MS_ORG.to_owned(),
            environment_host: "acme.crm.dynamics.com".to_owned(),
            ..user(
                OAuthProvider::Dynamics365,
                "admin@acme.test",
                "Acme Admin",
                "7d4a9f52-2f6b-4c3e-9b1a-0c1d2e3f4a51",
            )
        },
        user(
            OAuthProvider::Google,
            "admin@acme.test",
            "Acme Admin",
            "109876543210987654321",
        ),
        OAuthUser {
            subdomain: "acme".to_owned(),
            ..user(
                OAuthProvider::Zendesk,
                "admin@acme.test",
                "Acme Admin",
                "123",
            )
        },
        OAuthUser {
            region: GENESYS_REGIONS[0].to_owned(),
            org_id: ACME_GENESYS_ORG.to_owned(),
            ..user(
                OAuthProvider::Genesys,
                "admin@acme.test",
                "Acme Admin",
                "3c9e1c52-8f4a-4b6d-a2e1-5f7b9d0c1e23",
            )
        },
        user(
            OAuthProvider::CustomOauth,
            "ops@custom.example",
            "Custom Sandbox",
            "custom-user-1",
        ),
    ]);
    users
}

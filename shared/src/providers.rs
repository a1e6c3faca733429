//! The provider catalogue: every provider Conduit can connect, as data
//! (`shared/providers.yaml`, embedded at build time as JSON, see `build.rs`), and the rules for the
//! credentials a tenant gives for each auth method.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::egress::{self, UrlPolicy};

/// The catalogue as `build.rs` converted it from `providers.yaml`.
const CATALOGUE_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/providers.json"));

/// The whole catalogue.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalogue {
    /// Every provider, in display order.
    pub providers: Vec<Provider>,
}

/// One provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provider {
    /// Stable id used in URLs and items (`hubspot`).
    pub id: String,
    /// Display name.
    pub name: String,
    /// Kind of system (crm, helpdesk, …).
    pub category: String,
    /// One-sentence description for the dashboard.
    pub description: String,
    /// The provider's API documentation.
    pub docs_url: String,
    /// Base URL of the REST API, a template over the connection's settings.
    pub api_base: String,
    /// The ways a tenant can authenticate, in order of preference.
    pub auth: Vec<AuthMethod>,
    /// What Conduit can do with the provider.
    pub capabilities: Capabilities,
    /// The provider's documented rate limits.
    pub rate_limit: RateLimit,
    /// How records sync with this CRM (providers whose `capabilities.sync` is not empty).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crm: Option<CrmFacts>,
}

/// The facts about a CRM that are data, for record sync; its behaviour (paging, search,
/// batch shapes, errors) is the dialect module `shared/src/sync/crm/{dialect}.rs`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrmFacts {
    /// The dialect module that speaks this CRM's API.
    pub dialect: String,
    /// The most records one batch write, delete or read by id takes.
    pub batch_size: usize,
    /// The most filters a sync config may have (beside the modification time, in one
    /// search or query).
    pub filters_max: usize,
    /// The field holding the app record id on the records Conduit writes.
    pub marker: String,
    /// Bookkeeping fields of every object (ids, stamps the CRM sets): never mapped.
    pub system_fields: Vec<String>,
    /// Each synced entity's CRM object, by entity (`contacts`, `companies`).
    pub objects: BTreeMap<String, CrmObject>,
}

/// One CRM object a sync entity maps to.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrmObject {
    /// The object's API name (`contacts`, `Account`).
    pub name: String,
    /// The field holding a record's last modification time.
    pub modified: String,
    /// The field identifying a record by the app's key (email, domain): how creates are
    /// de-duplicated without the marker. Empty: the entity has no key (deals).
    #[serde(default)]
    pub key: String,
}

/// How credentials are obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthType {
    /// OAuth 2.0 authorization code flow.
    Oauth2,
    /// A token or key sent in a header or the query.
    ApiKey,
    /// HTTP Basic authentication.
    Basic,
}

/// One way of authenticating with a provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthMethod {
    /// Id of the method within the provider (`api_token`, `oauth2`).
    pub id: String,
    /// The kind of authentication.
    #[serde(rename = "type")]
    pub kind: AuthType,
    /// Display label.
    pub label: String,
    /// Form fields the admin fills in (credentials and settings).
    #[serde(default)]
    pub fields: Vec<Field>,
    /// Overrides the provider's `api_base` for this method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_base: Option<String>,
    /// How the credentials go on each request (api_key and basic methods).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "serde_yaml_ng::with::singleton_map"
    )]
    pub apply: Option<Apply>,
    /// The "who am I" call that tests credentials and names the identity.
    pub check: Check,
    /// OAuth: the authorize endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authorize_url: Option<String>,
    /// OAuth: the token endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_url: Option<String>,
    /// OAuth: the revocation endpoint, where the provider has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_url: Option<String>,
    /// OAuth: how the revocation endpoint takes the token.
    #[serde(default)]
    pub revoke_style: RevokeStyle,
    /// OAuth: the token introspection endpoint, where the provider has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub introspect_url: Option<String>,
    /// OAuth: the authorization server's issuer identifier (RFC 8414), a template
    /// filled like the endpoints; an `iss` sent on the callback must equal it
    /// (RFC 9207). Absent where the issuer is not known before the callback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// OAuth: the server always sends `iss` on the callback (RFC 9207's
    /// `authorization_response_iss_parameter_supported`), so a callback without it
    /// is refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub authorization_response_iss_parameter_supported: bool,
    /// OAuth: whether the provider accepts PKCE (S256).
    #[serde(default)]
    pub pkce: bool,
    /// OAuth: how the client authenticates at the token endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_auth: Option<ClientAuth>,
    /// OAuth: extra query parameters on the authorize URL.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub authorize_params: BTreeMap<String, String>,
    /// OAuth: scopes to request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Scopes>,
    /// OAuth: access-token lifetime when the token response does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token_ttl_seconds: Option<u64>,
    /// OAuth: settings read from the token response (instance_url, api_domain).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub token_settings: Vec<TokenSetting>,
    /// OAuth: separate connection kinds with their own scopes (Google gmail/calendar).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kinds: BTreeMap<String, Kind>,
    /// OAuth: settings that belong to the tenant's app credentials rather than to a
    /// connection (a custom provider's endpoints). Their values fill placeholders too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub app_fields: Vec<Field>,
    /// OAuth: each connection belongs to the user who connects it (Google's Gmail and
    /// Calendar): one per user and kind, seen in full and used only by that user.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub personal: bool,
}

/// How a provider's revocation endpoint takes the token.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokeStyle {
    /// RFC 7009: POST form `token=` (the refresh token when there is one), with client
    /// authentication.
    #[default]
    Rfc7009,
    /// `DELETE` the revoke URL, whose path names the refresh token (HubSpot).
    Path,
    /// `DELETE` the revoke URL with the access token as bearer (Zendesk).
    Bearer,
    /// `POST` with `?token=` in the query (Zoho).
    Query,
}

/// Scopes of an OAuth method: what each use of the connection needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scopes {
    /// Every scope Conduit may ask this provider for (templates over the fields).
    pub offered: Vec<String>,
    /// Scopes a granted scope includes (Zoho `.ALL`, Salesforce `full`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub implies: BTreeMap<String, Vec<String>>,
    /// Asked on every connect: what the "who am I" check and offline access need.
    pub identity: Vec<String>,
    /// What each use needs, by use id (`sync:contacts:pull`, `action:log_call`,
    /// `kb_import`).
    pub uses: BTreeMap<String, UseScopes>,
    /// The uses a connect asks for when the caller names none.
    pub default_uses: Vec<String>,
    /// Authorize parameters that add scopes to the earlier grant on a reconnect.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub incremental: BTreeMap<String, String>,
    /// The tenant's own provider: any well-formed scope may be asked for.
    #[serde(default)]
    pub free_form: bool,
}

/// The scopes one use needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UseScopes {
    /// Without these the use fails: checked before use.
    pub needs: Vec<String>,
    /// Asked for and used when granted; the use works without them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub optional: Vec<String>,
}

/// A use of a connection, as a caller names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use<'a> {
    /// Record sync of an entity in a direction (`pull`, `push`, `bidirectional`).
    Sync(&'a str, &'a str),
    /// An outbound action.
    Action(&'a str),
    /// Knowledge-base import.
    KbImport,
}

impl<'a> Use<'a> {
    /// Parses `sync:{entity}:{pull|push|bidirectional}`, `action:{name}` or `kb_import`.
    pub fn parse(text: &'a str) -> Option<Self> {
        let mut parts = text.split(':');
        let use_ = match (parts.next(), parts.next(), parts.next()) {
            (Some("sync"), Some(entity), Some(d @ ("pull" | "push" | "bidirectional")))
                if !entity.is_empty() =>
            {
                Self::Sync(entity, d)
            }
            (Some("action"), Some(name), None) if !name.is_empty() => Self::Action(name),
            (Some("kb_import"), None, None) => Self::KbImport,
            _ => return None,
        };
        parts.next().is_none().then_some(use_)
    }

    /// The catalogue's use ids this use stands for (a bidirectional sync is both).
    pub fn keys(self) -> Vec<String> {
        match self {
            Self::Sync(e, "bidirectional") => {
                vec![format!("sync:{e}:pull"), format!("sync:{e}:push")]
            }
            Self::Sync(e, d) => vec![format!("sync:{e}:{d}")],
            Self::Action(a) => vec![format!("action:{a}")],
            Self::KbImport => vec!["kb_import".to_owned()],
        }
    }
}

/// A use the provider's catalogue entry does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UnknownUse(pub String);

impl Scopes {
    /// The scopes `uses` need (`optional` ones too when `with_optional`), in catalogue
    /// order, each once; `fill` renders templates (Dynamics' environment).
    pub fn for_uses(
        &self,
        uses: &[String],
        with_optional: bool,
        fill: &dyn Fn(&str) -> String,
    ) -> Result<Vec<String>, UnknownUse> {
        let mut out: Vec<String> = Vec::new();
        for text in uses {
            let parsed = Use::parse(text).ok_or_else(|| {
                UnknownUse(format!(
                    "use {:?} is not sync:{{entity}}:{{pull|push|bidirectional}}, action:{{name}} or kb_import",
                    text.chars().take(64).collect::<String>()
                ))
            })?;
            for key in parsed.keys() {
                let found = self.uses.get(&key).ok_or_else(|| {
                    UnknownUse(format!(
                        "this connection offers no {key}; available: {}",
                        self.uses.keys().cloned().collect::<Vec<_>>().join(", ")
                    ))
                })?;
                let optional = if with_optional {
                    &found.optional[..]
                } else {
                    &[]
                };
                for s in found.needs.iter().chain(optional) {
                    let s = fill(s);
                    if !out.contains(&s) {
                        out.push(s);
                    }
                }
            }
        }
        Ok(out)
    }

    /// What a connect asks for: the identity scopes, then what the uses need and may
    /// use, each once, leaving out those another asked scope includes.
    pub fn to_ask(
        &self,
        uses: &[String],
        fill: &dyn Fn(&str) -> String,
    ) -> Result<Vec<String>, UnknownUse> {
        let mut out: Vec<String> = self.identity.iter().map(|s| fill(s)).collect();
        for s in self.for_uses(uses, true, fill)? {
            if !out.contains(&s) {
                out.push(s);
            }
        }
        let implies = |a: &str, b: &str| {
            self.implies
                .iter()
                .any(|(from, to)| fill(from) == a && to.iter().any(|t| fill(t) == b))
        };
        let covered = |s: &String| out.iter().any(|t| implies(t, s) && !implies(s, t));
        Ok(out.iter().filter(|s| !covered(s)).cloned().collect())
    }

    /// Of `needed`, the scopes `granted` covers neither itself nor through `implies`.
    pub fn missing(
        &self,
        needed: &[String],
        granted: &[String],
        fill: &dyn Fn(&str) -> String,
    ) -> Vec<String> {
        let mut covered: BTreeSet<String> = granted.iter().cloned().collect();
        for g in granted {
            for (from, implied) in &self.implies {
                if fill(from) == *g {
                    covered.extend(implied.iter().map(|s| fill(s)));
                }
            }
        }
        needed
            .iter()
            .filter(|s| !covered.contains(*s))
            .cloned()
            .collect()
    }

    /// Checks the scope data of one method (or kind) against the provider's
    /// capabilities: every use is a capability, every scope is offered.
    fn check(&self, provider: &Provider) -> Result<(), String> {
        let offered = |s: &String| self.free_form || self.offered.contains(s);
        let caps = &provider.capabilities;
        for (key, scopes) in &self.uses {
            let ok = match Use::parse(key) {
                Some(Use::Sync(entity, "pull" | "push")) => caps.sync.iter().any(|e| e == entity),
                Some(Use::Action(a)) => caps.actions.iter().any(|x| x == a),
                Some(Use::KbImport) => caps.kb_import,
                _ => false,
            };
            if !ok {
                return Err(format!(
                    "use {key} is not one of the provider's capabilities"
                ));
            }
            if let Some(s) = scopes
                .needs
                .iter()
                .chain(&scopes.optional)
                .find(|s| !offered(s))
            {
                return Err(format!("use {key} names scope {s}, which is not offered"));
            }
        }
        let implied = self
            .implies
            .iter()
            .flat_map(|(k, v)| std::iter::once(k).chain(v));
        if let Some(s) = self.identity.iter().chain(implied).find(|s| !offered(s)) {
            return Err(format!("scope {s} is not offered"));
        }
        for u in &self.default_uses {
            if Use::parse(u).is_none_or(|p| p.keys().iter().any(|k| !self.uses.contains_key(k))) {
                return Err(format!("default use {u} is not one of the uses"));
            }
        }
        Ok(())
    }
}

/// A connection kind of an OAuth method (Gmail, Calendar).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kind {
    /// Display label.
    pub label: String,
    /// The kind's scopes.
    pub scopes: Scopes,
}

/// A setting taken from the OAuth token response, checked against allowed hosts.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSetting {
    /// The placeholder name it fills.
    pub name: String,
    /// The token response's field.
    pub from: String,
    /// Hosts the value may name (`*.` matches any subdomain).
    pub allowed_hosts: Vec<String>,
}

/// How an OAuth client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// client_id and client_secret in the form body.
    RequestBody,
    /// HTTP Basic with client_id:client_secret.
    Basic,
}

/// How credentials are put on a request. Values are templates over the fields.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Apply {
    /// `Authorization: Basic base64(username:password)`.
    Basic {
        /// Username template.
        username: String,
        /// Password template.
        password: String,
    },
    /// `Authorization: Bearer <token>`.
    Bearer(String),
    /// A named header.
    Header {
        /// Header name template.
        name: String,
        /// Header value template.
        value: String,
    },
    /// A query parameter.
    Query {
        /// Parameter name.
        name: String,
        /// Parameter value template.
        value: String,
    },
}

/// The provider's "who am I" endpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    /// HTTP method (GET).
    pub method: String,
    /// Path under the API base, or a whole URL when `absolute`.
    pub path: String,
    /// Whether `path` is a whole URL.
    #[serde(default)]
    pub absolute: bool,
    /// Response format: json (default) or xml (success is then a 2xx alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// JSON pointers to the identity's parts.
    #[serde(default)]
    pub identity: IdentityPointers,
    /// A 2xx without an identity id means the credentials were not accepted (Zendesk
    /// answers unauthenticated calls with an anonymous user).
    #[serde(default)]
    pub require_id: bool,
}

/// JSON pointers (RFC 6901) into a check response.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityPointers {
    /// The user's or account's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The user's email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// A display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The provider account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// OAuth: the granted scopes (an array or a space-separated string).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<String>,
}

/// A form field the dashboard renders and the API validates.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    /// Key in the `credentials` object.
    pub name: String,
    /// Display label.
    pub label: String,
    /// Input type; also decides validation.
    #[serde(rename = "type")]
    pub kind: FieldType,
    /// Encrypted at rest, never returned unmasked.
    #[serde(default)]
    pub secret: bool,
    /// Must be given (unless it has a default).
    #[serde(default)]
    pub required: bool,
    /// Longest accepted value, in characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<usize>,
    /// Help text shown under the input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub help: Option<String>,
    /// Allowed values of a select.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
    /// Used when the field is not given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

/// Input types of form fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// Free text without control characters.
    Text,
    /// An email address.
    Email,
    /// A secret (masked input).
    Password,
    /// A DNS label (`acme` in acme.zendesk.com).
    Subdomain,
    /// One of `options`.
    Select,
    /// A tenant-supplied URL: https, public address (SSRF-checked).
    Url,
    /// An HTTP header name.
    HeaderName,
    /// An absolute URL path (`/me`).
    Path,
    /// Digits only.
    Digits,
}

impl FieldType {
    fn default_max(self) -> usize {
        match self {
            Self::Password => 4096,
            Self::Url => 2048,
            Self::Subdomain => 63,
            Self::Path => 1024,
            _ => 255,
        }
    }
}

/// What Conduit can do with a provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    /// Entities that sync (contacts, companies, deals).
    pub sync: Vec<String>,
    /// Outbound actions (log_call, create_ticket, …).
    pub actions: Vec<String>,
    /// Knowledge-base import.
    pub kb_import: bool,
    /// Provider webhooks for real-time sync.
    pub webhooks: bool,
}

/// A provider's documented rate limits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests allowed per window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<u32>,
    /// The window, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_seconds: Option<u32>,
    /// Requests allowed per day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily: Option<u32>,
    /// What the limit applies to (account, user, token).
    pub scope: String,
    /// Which response headers report the budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<String>,
}

/// The catalogue could not be loaded (a build defect caught by unit tests).
#[derive(Debug, thiserror::Error)]
#[error("provider catalogue is invalid: {0}")]
pub struct CatalogueError(String);

static CATALOGUE: OnceLock<Result<Catalogue, String>> = OnceLock::new();

impl Catalogue {
    /// The embedded catalogue, parsed and checked once per process.
    pub fn get() -> Result<&'static Catalogue, CatalogueError> {
        CATALOGUE
            .get_or_init(|| {
                let catalogue: Catalogue =
                    serde_json::from_str(CATALOGUE_JSON).map_err(|e| e.to_string())?;
                catalogue.check()?;
                Ok(catalogue)
            })
            .as_ref()
            .map_err(|e| CatalogueError(e.clone()))
    }

    /// Parses and checks a catalogue document in YAML (the form `providers.yaml` has).
    pub fn parse(yaml: &str) -> Result<Catalogue, String> {
        let catalogue: Catalogue = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
        catalogue.check()?;
        Ok(catalogue)
    }

    /// A provider by id.
    pub fn provider(&self, id: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.id == id)
    }

    fn check(&self) -> Result<(), String> {
        let mut ids = std::collections::BTreeSet::new();
        for p in &self.providers {
            if !ids.insert(p.id.as_str()) {
                return Err(format!("duplicate provider id {}", p.id));
            }
            // What a dialect serves, the catalogue promises, and nothing more: the
            // entities of `capabilities.sync` are exactly the CRM objects (none without
            // a `crm` block).
            let objects: Vec<&String> = p.crm.iter().flat_map(|c| c.objects.keys()).collect();
            let mut promised: Vec<&String> = p.capabilities.sync.iter().collect();
            promised.sort();
            if promised != objects {
                return Err(format!(
                    "{}: capabilities.sync must list exactly the entities of crm.objects",
                    p.id
                ));
            }
            if p.auth.is_empty() {
                return Err(format!("{} has no auth method", p.id));
            }
            let mut methods = std::collections::BTreeSet::new();
            for m in &p.auth {
                if !methods.insert(m.id.as_str()) {
                    return Err(format!("{}: duplicate auth method {}", p.id, m.id));
                }
                m.check_shape(p)
                    .map_err(|e| format!("{}/{}: {e}", p.id, m.id))?;
            }
        }
        Ok(())
    }
}

impl Provider {
    /// An auth method by id; with no id, the provider's only non-OAuth method.
    pub fn auth_method(&self, id: Option<&str>) -> Option<&AuthMethod> {
        match id {
            Some(id) => self.auth.iter().find(|m| m.id == id),
            None => {
                let mut keyed = self.auth.iter().filter(|m| m.kind != AuthType::Oauth2);
                match (keyed.next(), keyed.next()) {
                    (Some(only), None) => Some(only),
                    _ => None,
                }
            }
        }
    }
}

impl AuthMethod {
    /// The API base template for this method.
    pub fn api_base<'a>(&'a self, provider: &'a Provider) -> &'a str {
        self.api_base.as_deref().unwrap_or(&provider.api_base)
    }

    /// The scope model of the method, or of one of its kinds (Google gmail/calendar);
    /// None: Conduit cannot know what the credentials are granted (API keys).
    pub fn scope_model(&self, kind: Option<&str>) -> Option<&Scopes> {
        match kind {
            Some(k) => self.kinds.get(k).map(|k| &k.scopes),
            None => self.scopes.as_ref(),
        }
    }

    /// A field by name (of the connection form, or of the app credentials).
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields
            .iter()
            .chain(&self.app_fields)
            .find(|f| f.name == name)
    }

    /// Placeholders this method can fill: its fields, token settings and tokens.
    fn known_placeholders(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .fields
            .iter()
            .chain(&self.app_fields)
            .map(|f| f.name.as_str())
            .collect();
        names.extend(self.token_settings.iter().map(|s| s.name.as_str()));
        if self.kind == AuthType::Oauth2 {
            names.extend(["access_token", "refresh_token"]);
        }
        names
    }

    fn check_shape(&self, provider: &Provider) -> Result<(), String> {
        let known = self.known_placeholders();
        let mut templates: Vec<&str> = vec![self.api_base(provider), &self.check.path];
        templates.extend(self.authorize_url.as_deref());
        templates.extend(self.token_url.as_deref());
        templates.extend(self.revoke_url.as_deref());
        templates.extend(self.introspect_url.as_deref());
        for scopes in self
            .scopes
            .iter()
            .chain(self.kinds.values().map(|k| &k.scopes))
        {
            templates.extend(scopes.offered.iter().map(String::as_str));
            scopes.check(provider)?;
        }
        match &self.apply {
            Some(Apply::Basic { username, password }) => {
                templates.extend([username.as_str(), password.as_str()])
            }
            Some(Apply::Bearer(token)) => templates.push(token),
            Some(Apply::Header { name, value }) | Some(Apply::Query { name, value }) => {
                templates.extend([name.as_str(), value.as_str()])
            }
            None => {}
        }
        for t in templates {
            for name in placeholders(t)? {
                if !known.contains(&name) {
                    return Err(format!("placeholder {{{name}}} in {t:?} is not declared"));
                }
            }
        }
        match self.kind {
            AuthType::Oauth2 => {
                if self.authorize_url.is_none() || self.token_url.is_none() {
                    return Err("oauth2 needs authorize_url and token_url".into());
                }
                if self.scopes.is_none() && self.kinds.is_empty() {
                    return Err("oauth2 needs scopes or kinds".into());
                }
                if self.client_auth.is_none() {
                    return Err("oauth2 needs client_auth".into());
                }
            }
            AuthType::ApiKey | AuthType::Basic => {
                if !self.app_fields.is_empty() {
                    return Err("only oauth2 methods have app fields".into());
                }
                if self.apply.is_none() {
                    return Err("api_key and basic methods need apply".into());
                }
                if !self.fields.iter().any(|f| f.secret) {
                    return Err("api_key and basic methods need a secret field".into());
                }
            }
        }
        for f in self.fields.iter().chain(&self.app_fields) {
            if f.kind == FieldType::Select && f.options.is_empty() {
                return Err(format!("select field {} has no options", f.name));
            }
            if f.secret != (f.kind == FieldType::Password) {
                return Err(format!(
                    "field {}: secret fields are exactly the password fields",
                    f.name
                ));
            }
        }
        Ok(())
    }
}

/// The `{names}` a template refers to.
pub fn placeholders(template: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed placeholder in {template:?}"))?;
        out.push(&after[..end]);
        rest = &after[end + 1..];
    }
    Ok(out)
}

/// A template referred to a value that is not there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no value for {{{0}}}")]
pub struct MissingValue(pub String);

/// Fills a template's `{names}` from `value`.
pub fn render<'v>(
    template: &str,
    value: impl Fn(&str) -> Option<&'v str>,
) -> Result<String, MissingValue> {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        out.push_str(value(name).ok_or_else(|| MissingValue(name.to_owned()))?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// One rejected field of a credentials form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// The field's name (as the caller sent it).
    pub field: String,
    /// What is wrong; never repeats a value.
    pub message: String,
}

/// Credentials and settings a tenant gave, validated against an auth method's form.
#[derive(Clone, Default)]
pub struct Fields {
    /// Non-secret values (subdomain, email, base URL), stored in the clear.
    pub public: BTreeMap<String, String>,
    /// Secret values, stored only encrypted.
    pub secret: BTreeMap<String, SecretString>,
}

impl std::fmt::Debug for Fields {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fields")
            .field("public", &self.public)
            .field("secret", &self.secret.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Fields {
    /// A value by name, secret or not.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.public
            .get(name)
            .map(String::as_str)
            .or_else(|| self.secret.get(name).map(|s| s.expose_secret()))
    }

    /// The values as the dashboard may see them: public ones whole, secrets masked.
    pub fn masked(&self) -> BTreeMap<String, String> {
        let mut out = self.public.clone();
        for (k, v) in &self.secret {
            out.insert(k.clone(), crate::domain::mask(v.expose_secret()));
        }
        out
    }
}

impl AuthMethod {
    /// Validates a whole form: every required field given, no unknown field, each value
    /// well formed for its type. Defaults fill absent optional fields.
    pub fn validate(
        &self,
        input: &BTreeMap<String, String>,
        policy: &UrlPolicy,
    ) -> Result<Fields, Vec<FieldError>> {
        self.validate_update(&Fields::default(), input, policy)
    }

    /// Validates a partial form over `current` values: given fields replace the current
    /// ones, and every required field must end up with a value.
    pub fn validate_update(
        &self,
        current: &Fields,
        input: &BTreeMap<String, String>,
        policy: &UrlPolicy,
    ) -> Result<Fields, Vec<FieldError>> {
        validate_form(&self.fields, current, input, policy)
    }

    /// Validates the app-credential settings of the method (a custom provider's
    /// endpoints) the same way.
    pub fn validate_app_fields(
        &self,
        input: &BTreeMap<String, String>,
        policy: &UrlPolicy,
    ) -> Result<BTreeMap<String, String>, Vec<FieldError>> {
        validate_form(&self.app_fields, &Fields::default(), input, policy).map(|f| f.public)
    }
}

fn validate_form(
    fields: &[Field],
    current: &Fields,
    input: &BTreeMap<String, String>,
    policy: &UrlPolicy,
) -> Result<Fields, Vec<FieldError>> {
    let mut errors = Vec::new();
    for name in input.keys() {
        if !fields.iter().any(|f| &f.name == name) {
            let expected: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
            errors.push(FieldError {
                field: name.chars().take(64).collect(),
                message: format!("unknown field; expected one of: {}", expected.join(", ")),
            });
        }
    }
    let mut out = current.clone();
    for field in fields {
        let value = match input.get(&field.name) {
            Some(v) => v.trim().to_owned(),
            None if current.value(&field.name).is_some() => continue,
            None => field.default.clone().unwrap_or_default(),
        };
        out.public.remove(&field.name);
        out.secret.remove(&field.name);
        if value.is_empty() {
            if field.required {
                errors.push(FieldError {
                    field: field.name.clone(),
                    message: "is required".into(),
                });
            }
            continue;
        }
        match field.check(&value, policy) {
            Ok(v) if field.secret => {
                out.secret.insert(field.name.clone(), SecretString::from(v));
            }
            Ok(v) => {
                out.public.insert(field.name.clone(), v);
            }
            Err(message) => errors.push(FieldError {
                field: field.name.clone(),
                message,
            }),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

impl Field {
    /// Checks one value; returns it normalised. Messages never repeat the value.
    fn check(&self, value: &str, policy: &UrlPolicy) -> Result<String, String> {
        let max = self.max_length.unwrap_or(self.kind.default_max());
        if value.chars().count() > max {
            return Err(format!("must be at most {max} characters"));
        }
        if value.chars().any(char::is_control) {
            return Err("may not hold control characters".into());
        }
        match self.kind {
            FieldType::Text | FieldType::Password => Ok(value.to_owned()),
            FieldType::Email => {
                let ok = value.split_once('@').is_some_and(|(local, domain)| {
                    !local.is_empty()
                        && domain.contains('.')
                        && !domain.starts_with('.')
                        && !domain.ends_with('.')
                        && !value.contains(char::is_whitespace)
                        && !domain.contains('@')
                });
                if ok {
                    Ok(value.to_owned())
                } else {
                    Err("must be an email address".into())
                }
            }
            FieldType::Subdomain => {
                let v = value.to_ascii_lowercase();
                let ok = !v.starts_with('-')
                    && !v.ends_with('-')
                    && v.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                if ok {
                    Ok(v)
                } else {
                    Err("must be a DNS label: letters, digits and inner hyphens".into())
                }
            }
            FieldType::Select => {
                if self.options.iter().any(|o| o == value) {
                    Ok(value.to_owned())
                } else {
                    Err(format!("must be one of: {}", self.options.join(", ")))
                }
            }
            FieldType::Url => egress::validate_tenant_url(value, policy)
                .map(|u| u.as_str().trim_end_matches('/').to_owned())
                .map_err(|e| e.to_string()),
            FieldType::HeaderName => {
                let lower = value.to_ascii_lowercase();
                let token = !value.is_empty()
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
                const RESERVED: [&str; 9] = [
                    "host",
                    "content-length",
                    "transfer-encoding",
                    "connection",
                    "te",
                    "upgrade",
                    "cookie",
                    "proxy-authorization",
                    "forwarded",
                ];
                if !token {
                    Err("must be an HTTP header name".into())
                } else if RESERVED.contains(&lower.as_str()) {
                    Err("names a header Conduit sets itself".into())
                } else {
                    Ok(value.to_owned())
                }
            }
            FieldType::Path => {
                let ok = value.starts_with('/')
                    && !value.starts_with("//")
                    && !value.contains("..")
                    && !value.contains(['#', '\\', ' ', '@']);
                if ok {
                    Ok(value.to_owned())
                } else {
                    Err("must be a path starting with / (no .., #, @ or spaces)".into())
                }
            }
            FieldType::Digits => {
                if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
                    Ok(value.to_owned())
                } else {
                    Err("must be digits".into())
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> UrlPolicy {
        UrlPolicy {
            allow_loopback_http: false,
        }
    }

    fn form(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_embedded_catalogue_loads_and_covers_every_provider() {
        let c = Catalogue::get().unwrap();
        for id in [
            "hubspot",
            "salesforce",
            "zoho",
            "pipedrive",
            "dynamics365",
            "google",
            "zendesk",
            "freshdesk",
            "chatwoot",
            "genesys",
            "sap",
            "technologyone",
            "custom_api",
        ] {
            assert!(c.provider(id).is_some(), "missing {id}");
        }
    }

    #[test]
    fn oauth_quirks_are_in_the_data() {
        let c = Catalogue::get().unwrap();
        let sf = c
            .provider("salesforce")
            .unwrap()
            .auth_method(Some("oauth2"))
            .unwrap();
        assert!(sf.token_settings.iter().any(|s| s.name == "instance_url"));
        let pd = c
            .provider("pipedrive")
            .unwrap()
            .auth_method(Some("oauth2"))
            .unwrap();
        assert_eq!(pd.client_auth, Some(ClientAuth::Basic));
        let g = c
            .provider("google")
            .unwrap()
            .auth_method(Some("oauth2"))
            .unwrap();
        assert_eq!(
            g.authorize_params.get("access_type").map(String::as_str),
            Some("offline")
        );
        assert!(g.kinds.contains_key("gmail") && g.kinds.contains_key("calendar"));
    }

    fn id(s: &str) -> String {
        s.to_owned()
    }

    #[test]
    fn every_capability_of_an_oauth_method_has_its_scopes() {
        for p in &Catalogue::get().unwrap().providers {
            for m in p.auth.iter().filter(|m| m.kind == AuthType::Oauth2) {
                let models: Vec<&Scopes> = m
                    .scopes
                    .iter()
                    .chain(m.kinds.values().map(|k| &k.scopes))
                    .collect();
                if models.iter().all(|s| s.free_form) {
                    continue;
                }
                let has = |key: &str| models.iter().any(|s| s.uses.contains_key(key));
                for e in &p.capabilities.sync {
                    for d in ["pull", "push"] {
                        assert!(has(&format!("sync:{e}:{d}")), "{}: sync:{e}:{d}", p.id);
                    }
                }
                for a in &p.capabilities.actions {
                    assert!(has(&format!("action:{a}")), "{}: action:{a}", p.id);
                }
                assert_eq!(
                    has("kb_import"),
                    p.capabilities.kb_import,
                    "{}: kb_import",
                    p.id
                );
                for s in &models {
                    let asked = s.to_ask(&s.default_uses, &id).unwrap();
                    assert!(!asked.is_empty(), "{}: the default asks for nothing", p.id);
                }
            }
        }
    }

    #[test]
    fn hubspot_defaults_cover_sync_both_ways_with_the_marker_optional() {
        let m = Catalogue::get()
            .unwrap()
            .provider("hubspot")
            .unwrap()
            .auth_method(Some("oauth2"))
            .unwrap();
        let s = m.scope_model(None).unwrap();
        let asked = s.to_ask(&s.default_uses, &id).unwrap();
        for scope in [
            "oauth",
            "crm.objects.contacts.write",
            "crm.objects.companies.read",
            "crm.schemas.contacts.write",
            "crm.schemas.companies.write",
        ] {
            assert!(asked.iter().any(|a| a == scope), "{scope} in {asked:?}");
        }
        assert_eq!(asked[0], "oauth", "identity first");
        let needed = s
            .for_uses(&["sync:contacts:push".into()], false, &id)
            .unwrap();
        assert!(
            !needed.iter().any(|n| n.starts_with("crm.schemas")),
            "schema write is optional: {needed:?}"
        );
        let read_only = vec![id("oauth"), id("crm.objects.contacts.read")];
        assert_eq!(
            s.missing(&needed, &read_only, &id),
            ["crm.objects.contacts.write"]
        );
        assert!(
            s.for_uses(&["sync:tickets:pull".into()], false, &id)
                .is_err()
        );
        assert!(s.for_uses(&["sync:contacts".into()], false, &id).is_err());
        assert!(
            s.for_uses(&["action:create_ticket".into()], false, &id)
                .is_err()
        );
    }

    #[test]
    fn broader_grants_cover_narrower_needs() {
        let c = Catalogue::get().unwrap();
        let zoho = c
            .provider("zoho")
            .unwrap()
            .auth_method(Some("oauth2"))
            .unwrap()
            .scope_model(None)
            .unwrap();
        let needed = zoho
            .for_uses(&["sync:contacts:bidirectional".into()], false, &id)
            .unwrap();
        let granted = vec![
            id("ZohoCRM.modules.contacts.ALL"),
            id("ZohoCRM.settings.ALL"),
        ];
        assert!(
            zoho.missing(&needed, &granted, &id).is_empty(),
            "{needed:?}"
        );
        let sf = c
            .provider("salesforce")
            .unwrap()
            .auth_method(Some("oauth2"))
            .unwrap()
            .scope_model(None)
            .unwrap();
        let needed = sf
            .for_uses(&["sync:companies:push".into()], false, &id)
            .unwrap();
        assert!(sf.missing(&needed, &[id("full")], &id).is_empty());
        assert_eq!(sf.missing(&needed, &[id("refresh_token")], &id), ["api"]);
        let calendar = c
            .provider("google")
            .unwrap()
            .auth_method(Some("oauth2"))
            .unwrap()
            .scope_model(Some("calendar"))
            .unwrap();
        let asked = calendar.to_ask(&calendar.default_uses, &id).unwrap();
        assert_eq!(
            asked,
            [
                "openid",
                "email",
                "https://www.googleapis.com/auth/calendar.events"
            ],
            "readonly is included in events"
        );
    }

    #[test]
    fn uses_parse_strictly() {
        assert_eq!(
            Use::parse("sync:contacts:bidirectional"),
            Some(Use::Sync("contacts", "bidirectional"))
        );
        assert_eq!(Use::parse("action:log_call"), Some(Use::Action("log_call")));
        assert_eq!(Use::parse("kb_import"), Some(Use::KbImport));
        for bad in [
            "",
            "sync",
            "sync::pull",
            "sync:contacts:both",
            "sync:contacts:pull:x",
            "action:",
            "action:a:b",
            "kb_import:x",
        ] {
            assert_eq!(Use::parse(bad), None, "{bad}");
        }
        assert_eq!(
            Use::parse("sync:contacts:bidirectional").unwrap().keys(),
            ["sync:contacts:pull", "sync:contacts:push"]
        );
    }

    #[test]
    fn scopes_outside_the_offered_ones_are_caught() {
        let bad = r#"
providers:
  - id: x
    name: X
    category: crm
    description: d
    docs_url: https://x
    api_base: https://x.example.com
    auth:
      - id: oauth2
        type: oauth2
        label: O
        authorize_url: https://x.example.com/a
        token_url: https://x.example.com/t
        client_auth: basic
        scopes:
          offered: [read]
          identity: [read]
          default_uses: ["action:log_call"]
          uses:
            "action:log_call": { needs: [read, write] }
        check: { method: GET, path: /me }
    capabilities: { sync: [], actions: [log_call], kb_import: false, webhooks: false }
    rate_limit: { scope: account }
"#;
        let err = Catalogue::parse(bad).unwrap_err();
        assert!(err.contains("scope write"), "{err}");
        let not_capable = bad.replace("actions: [log_call]", "actions: []");
        let err = Catalogue::parse(&not_capable).unwrap_err();
        assert!(err.contains("capabilities"), "{err}");
    }

    #[test]
    fn embedded_json_reads_as_the_yaml_source() {
        let from_yaml = Catalogue::parse(include_str!("../providers.yaml")).expect("yaml");
        let embedded = Catalogue::get().expect("embedded");
        assert!(!embedded.providers.is_empty());
        assert_eq!(
            serde_json::to_value(&from_yaml).expect("yaml as json"),
            serde_json::to_value(embedded).expect("embedded as json")
        );
    }

    #[test]
    fn undeclared_placeholders_are_caught() {
        let bad = r#"
providers:
  - id: x
    name: X
    category: crm
    description: d
    docs_url: https://x
    api_base: https://{nope}.example.com
    auth:
      - id: k
        type: api_key
        label: K
        fields: [{ name: key, label: Key, type: password, secret: true, required: true }]
        apply: { bearer: "{key}" }
        check: { method: GET, path: /me }
    capabilities: { sync: [], actions: [], kb_import: false, webhooks: false }
    rate_limit: { scope: account }
"#;
        let err = Catalogue::parse(bad).unwrap_err();
        assert!(err.contains("{nope}"), "{err}");
    }

    #[test]
    fn render_fills_and_reports_missing() {
        let vals = form(&[("subdomain", "acme")]);
        let get = |k: &str| vals.get(k).map(String::as_str);
        assert_eq!(
            render("https://{subdomain}.zendesk.com/api/v2", get).unwrap(),
            "https://acme.zendesk.com/api/v2"
        );
        assert_eq!(render("{x}", get).unwrap_err(), MissingValue("x".into()));
    }

    #[test]
    fn forms_reject_unknown_missing_and_malformed_fields() {
        let zd = Catalogue::get()
            .unwrap()
            .provider("zendesk")
            .unwrap()
            .auth_method(None)
            .unwrap();
        let ok = zd
            .validate(
                &form(&[
                    ("subdomain", "Acme"),
                    ("email", "a@acme.test"),
                    ("api_token", " t0k "),
                ]),
                &policy(),
            )
            .unwrap();
        assert_eq!(ok.public["subdomain"], "acme");
        assert_eq!(ok.value("api_token"), Some("t0k"));
        assert!(!format!("{ok:?}").contains("t0k"));

        let errs = zd
            .validate(
                &form(&[("subdomain", "a.b"), ("email", "nope"), ("bogus", "1")]),
                &policy(),
            )
            .unwrap_err();
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        assert!(fields.contains(&"bogus"));
        assert!(fields.contains(&"subdomain"));
        assert!(fields.contains(&"email"));
        assert!(fields.contains(&"api_token"));

        let long = "x".repeat(300);
        let errs = zd
            .validate(
                &form(&[
                    ("subdomain", "acme"),
                    ("email", "a@b.co"),
                    ("api_token", &long),
                ]),
                &policy(),
            )
            .unwrap_err();
        assert_eq!(errs[0].field, "api_token");
        assert!(!errs[0].message.contains(&long));
    }

    #[test]
    fn partial_updates_keep_current_values() {
        let zd = Catalogue::get()
            .unwrap()
            .provider("zendesk")
            .unwrap()
            .auth_method(None)
            .unwrap();
        let current = zd
            .validate(
                &form(&[
                    ("subdomain", "acme"),
                    ("email", "a@acme.test"),
                    ("api_token", "old"),
                ]),
                &policy(),
            )
            .unwrap();
        let next = zd
            .validate_update(&current, &form(&[("api_token", "new")]), &policy())
            .unwrap();
        assert_eq!(next.value("api_token"), Some("new"));
        assert_eq!(next.value("subdomain"), Some("acme"));
        let errs = zd
            .validate_update(&current, &form(&[("email", "")]), &policy())
            .unwrap_err();
        assert_eq!(errs[0].field, "email");
    }

    #[test]
    fn tenant_urls_and_header_names_are_policed() {
        let custom = Catalogue::get()
            .unwrap()
            .provider("custom_api")
            .unwrap()
            .auth_method(Some("header"))
            .unwrap();
        for (url, ok) in [
            ("https://api.example.com/v1", true),
            ("http://api.example.com", false),
            ("https://127.0.0.1/x", false),
            ("https://169.254.169.254/latest", false),
            ("https://user:pw@api.example.com", false),
        ] {
            let r = custom.validate(
                &form(&[
                    ("base_url", url),
                    ("header_name", "X-Key"),
                    ("api_key", "k"),
                ]),
                &policy(),
            );
            assert_eq!(r.is_ok(), ok, "{url}");
        }
        let r = custom.validate(
            &form(&[
                ("base_url", "https://api.example.com"),
                ("header_name", "Host"),
                ("api_key", "k"),
            ]),
            &policy(),
        );
        assert!(r.is_err());
    }
}

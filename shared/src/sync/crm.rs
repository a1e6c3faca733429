//! The CRM side of a sync: HubSpot and Salesforce contacts and companies behind one
//! client — describe fields, read changes page by page from a cursor, read, create,
//! update and delete in batches, find the records Conduit created.
//!
//! Every call takes its token from the token lifecycle ([`Tokens::credentials`], a
//! refresh after a 401) and a slot from the connection's shared [`Budget`]. A 429 holds
//! the budget off for the provider's `Retry-After` (HubSpot: its policy's window) and
//! retries the same request, so a rate-limit storm slows a sync down and never fails
//! it; 5xx answers and timeouts are retried with jittered backoff, then reported as
//! transient (the message is retried later from its checkpoint).
//!
//! Values cross this boundary as strings (None: empty); Salesforce's typed JSON values
//! are converted with the object's describe.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use rand::Rng;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::budget::{Budget, BudgetError, interval_for, tolerance_for};
use super::config::{Filter, FilterOp};
use super::schema::{CrmField, Entity, FieldType};
use crate::app::App;
use crate::domain::{ConnectionId, TenantId};
use crate::oauth::lifecycle::{Credentials, TokenError, Tokens};
use crate::store::StoreError;

/// The CRM property holding the app record id of records Conduit created (HubSpot;
/// a unique-value property Conduit defines once per portal).
pub const HUBSPOT_MARKER: &str = "conduit_id";
/// The Salesforce custom field holding the app record id (an external id field).
pub const SALESFORCE_MARKER: &str = "Conduit_Id__c";

/// Which CRM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrmKind {
    /// HubSpot CRM v3.
    Hubspot,
    /// Salesforce REST.
    Salesforce,
}

impl CrmKind {
    /// The kind of a catalogue provider, if Conduit syncs records with it.
    pub fn of(provider: &str) -> Option<Self> {
        match provider {
            "hubspot" => Some(Self::Hubspot),
            "salesforce" => Some(Self::Salesforce),
            _ => None,
        }
    }

    /// The catalogue provider of this kind.
    pub fn provider(self) -> &'static str {
        match self {
            Self::Hubspot => "hubspot",
            Self::Salesforce => "salesforce",
        }
    }

    /// The CRM object of an entity.
    pub fn object(self, entity: Entity) -> &'static str {
        match (self, entity) {
            (Self::Hubspot, Entity::Contacts) => "contacts",
            (Self::Hubspot, Entity::Companies) => "companies",
            (Self::Salesforce, Entity::Contacts) => "Contact",
            (Self::Salesforce, Entity::Companies) => "Account",
        }
    }

    /// The largest batch write.
    pub fn batch_size(self) -> usize {
        match self {
            Self::Hubspot => 100,
            Self::Salesforce => 200,
        }
    }

    /// The field carrying the app record id.
    pub fn marker(self) -> &'static str {
        match self {
            Self::Hubspot => HUBSPOT_MARKER,
            Self::Salesforce => SALESFORCE_MARKER,
        }
    }

    /// The field that identifies a record by its key (the app's email / domain): how
    /// creates are de-duplicated when the marker field cannot be defined.
    pub fn key_field(self, entity: Entity) -> &'static str {
        match (self, entity) {
            (Self::Hubspot, Entity::Contacts) => "email",
            (Self::Hubspot, Entity::Companies) => "domain",
            (Self::Salesforce, Entity::Contacts) => "Email",
            (Self::Salesforce, Entity::Companies) => "Website",
        }
    }

    /// The field holding a record's last modification time.
    pub fn modified_field(self, entity: Entity) -> &'static str {
        match (self, entity) {
            (Self::Hubspot, Entity::Contacts) => "lastmodifieddate",
            (Self::Hubspot, Entity::Companies) => "hs_lastmodifieddate",
            (Self::Salesforce, _) => "SystemModstamp",
        }
    }
}

/// A CRM record as read.
#[derive(Debug, Clone, PartialEq)]
pub struct CrmRecord {
    /// The CRM's id.
    pub id: String,
    /// Field values (absent or null fields are left out).
    pub values: BTreeMap<String, String>,
    /// Last modification (Unix ms).
    pub modified_ms: i64,
}

/// Where a pull stands: a full pass or changes since a time, and the provider's
/// position within the current pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Only records modified at or after this (Unix ms); None: every record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<i64>,
    /// The provider's paging token within the pass (HubSpot `after`, Salesforce
    /// `nextRecordsUrl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
    /// The latest modification time seen in this pass.
    #[serde(default)]
    pub high_water_ms: i64,
    /// When this pass started (the next pass starts from here when it completes).
    #[serde(default)]
    pub pass_started_ms: i64,
    /// Deletes are looked for from this time (Unix ms) at the end of each pass.
    #[serde(default)]
    pub deletes_since_ms: i64,
}

/// One page of a pull.
#[derive(Debug)]
pub struct PullPage {
    /// The records.
    pub records: Vec<CrmRecord>,
    /// Where to continue; None: the pass is complete.
    pub next: Option<Cursor>,
    /// The provider's count of matching records, when it gives one.
    pub total: Option<u64>,
}

/// What one record of a batch write came to.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOutcome {
    /// Written; the CRM id.
    Done(String),
    /// Refused for this record (validation); the message is the provider's.
    Failed(String),
    /// The create clashed with an existing record: the CRM id of that record, when
    /// the provider named it (HubSpot's unique-email conflict).
    Exists(Option<String>),
}

/// A CRM call failed.
#[derive(Debug, thiserror::Error)]
pub enum CrmError {
    /// The connection needs to be re-authorised, or cannot be used.
    #[error("connection unusable: {0}")]
    Auth(String),
    /// The provider or the network failed repeatedly; retry later.
    #[error("provider unavailable: {0}")]
    Transient(String),
    /// The provider refused the request (4xx); retrying the same will not help.
    #[error("provider refused the request ({status}): {message}")]
    Rejected {
        /// HTTP status.
        status: u16,
        /// The provider's message (never a credential).
        message: String,
    },
    /// The connection was not granted scopes this call needs (an admin narrowed the
    /// grant): retrying will not help, a reconnect will.
    #[error("the connection lacks scopes: {}", .0.join(", "))]
    ScopesMissing(Vec<String>),
    /// The provider's allowance is used up for a long time (Salesforce daily limit).
    #[error("provider allowance exhausted: {0}")]
    LimitExhausted(String),
    /// The answer did not have the documented shape.
    #[error("provider answered malformed data: {0}")]
    Malformed(String),
    /// Something of ours failed.
    #[error("internal: {0}")]
    Internal(String),
    /// The store failed; kept whole so an API caller gets a 503 for a throttle.
    #[error(transparent)]
    Store(StoreError),
}

impl CrmError {
    /// Whether retrying later (the SQS message again) may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Transient(_) | Self::Malformed(_) | Self::Internal(_) | Self::Store(_)
        )
    }
}

impl From<BudgetError> for CrmError {
    fn from(e: BudgetError) -> Self {
        Self::Transient(e.to_string())
    }
}

/// How many times one request is tried on 5xx / network failures.
const ATTEMPTS: u32 = 4;
/// How many 429s one request sits out before giving up (then: transient).
const RATE_LIMIT_RETRIES: u32 = 30;
/// How long credentials are reused before the lifecycle is asked again.
const CREDENTIALS_TTL: Duration = Duration::from_secs(60);
/// HubSpot's search paging cap (results beyond it are a 400).
const HUBSPOT_SEARCH_CAP: u64 = 10_000;

/// A client for one connection's CRM.
pub struct CrmClient<'a> {
    kind: CrmKind,
    tenant: TenantId,
    connection: ConnectionId,
    tokens: Tokens<'a>,
    creds: Option<(Credentials, Instant)>,
    budget: Budget,
    /// Requests sent (including retries).
    pub requests: u64,
    /// 429s sat out.
    pub rate_limited: u64,
    /// The provider's latest usage report (Salesforce `Sforce-Limit-Info`).
    pub usage: Option<String>,
    describe_cache: BTreeMap<Entity, Vec<CrmField>>,
    /// Entities whose CRM object has no marker field (pushes de-duplicate by key).
    unmarked: BTreeSet<Entity>,
}

impl std::fmt::Debug for CrmClient<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrmClient")
            .field("kind", &self.kind)
            .field("connection", &self.connection)
            .finish()
    }
}

fn jitter(base: Duration) -> Duration {
    let ms = base.as_millis() as u64;
    Duration::from_millis(ms / 2 + rand::thread_rng().gen_range(0..=ms / 2 + 1))
}

fn clip(s: &str) -> String {
    s.chars().take(300).collect()
}

impl<'a> CrmClient<'a> {
    /// A client for `connection` of `tenant`, acting for `actor` in `request_id`.
    pub fn new(
        app: &'a App,
        kind: CrmKind,
        tenant: TenantId,
        connection: ConnectionId,
        actor: &'a str,
        request_id: &str,
    ) -> Result<Self, CrmError> {
        let provider = app
            .catalogue
            .provider(kind.provider())
            .ok_or_else(|| CrmError::Internal("provider missing from the catalogue".into()))?;
        let budget = Budget::new(
            app.table.clone(),
            &tenant,
            &connection,
            interval_for(provider),
            tolerance_for(provider),
        );
        Ok(Self {
            kind,
            tokens: Tokens::new(app, actor, request_id.to_owned()),
            tenant,
            connection,
            creds: None,
            budget,
            requests: 0,
            rate_limited: 0,
            usage: None,
            describe_cache: BTreeMap::new(),
            unmarked: BTreeSet::new(),
        })
    }

    /// Which CRM.
    pub fn kind(&self) -> CrmKind {
        self.kind
    }

    async fn credentials(&mut self) -> Result<Credentials, CrmError> {
        if let Some((creds, at)) = self.creds.take()
            && at.elapsed() < CREDENTIALS_TTL
        {
            return Ok(creds);
        }
        self.tokens
            .credentials(&self.tenant, &self.connection)
            .await
            .map_err(token_error)
    }

    /// One API call: `path` under the connection's API base (or a path from the
    /// provider's root, for Salesforce's `nextRecordsUrl`), JSON in and out.
    async fn call(
        &mut self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        headers: &[(&str, String)],
    ) -> Result<Value, CrmError> {
        let mut failures = 0u32;
        let mut limited = 0u32;
        loop {
            self.budget.acquire().await?;
            let mut creds = self.credentials().await?;
            self.requests += 1;
            let sent = self
                .tokens
                .send_using(&mut creds, |connector, http| {
                    let url = if path.starts_with("/services/") {
                        let base = connector.api_base().map_err(|e| e.to_string())?;
                        let root = base
                            .find("/services/")
                            .map_or(base.as_str(), |i| &base[..i]);
                        format!("{root}{path}")
                    } else {
                        connector.url(path).map_err(|e| e.to_string())?
                    };
                    let mut req = http
                        .request(method.clone(), url)
                        .timeout(Duration::from_secs(20))
                        .header(reqwest::header::ACCEPT, "application/json");
                    for (name, value) in headers {
                        req = req.header(*name, value.as_str());
                    }
                    if !query.is_empty() {
                        req = req.query(query);
                    }
                    if let Some(body) = body {
                        req = req.json(body);
                    }
                    Ok(req)
                })
                .await;
            let resp = match sent {
                Ok(resp) => {
                    self.creds = Some((creds, Instant::now()));
                    resp
                }
                Err(TokenError::Unavailable(why)) => {
                    self.creds = Some((creds, Instant::now()));
                    failures += 1;
                    if failures >= ATTEMPTS {
                        return Err(CrmError::Transient(why));
                    }
                    tokio::time::sleep(jitter(Duration::from_millis(250 << failures))).await;
                    continue;
                }
                Err(e) => return Err(token_error(e)),
            };
            let status = resp.status();
            if let Some(usage) = resp
                .headers()
                .get("sforce-limit-info")
                .and_then(|v| v.to_str().ok())
            {
                self.usage = Some(usage.to_owned());
            }
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok());
            let text = match resp.text().await {
                Ok(t) => t,
                Err(e) => {
                    failures += 1;
                    if failures >= ATTEMPTS {
                        return Err(CrmError::Transient(format!(
                            "reading the answer: {}",
                            e.without_url()
                        )));
                    }
                    tokio::time::sleep(jitter(Duration::from_millis(250 << failures))).await;
                    continue;
                }
            };
            if status == StatusCode::TOO_MANY_REQUESTS {
                self.rate_limited += 1;
                crate::metrics::count(
                    crate::metrics::Metric::ProviderRateLimited,
                    self.kind.provider(),
                    Some(self.connection.as_str()),
                );
                limited += 1;
                if limited > RATE_LIMIT_RETRIES {
                    return Err(CrmError::Transient("rate limited for too long".into()));
                }
                let wait = match retry_after {
                    Some(s) => Duration::from_secs(s.clamp(1, 60)),
                    None if text.contains("DAILY") => {
                        return Err(CrmError::LimitExhausted(
                            "the provider's daily request limit is reached".into(),
                        ));
                    }
                    None => Duration::from_secs(1),
                };
                self.budget.hold_off(jitter(wait) + wait / 2).await?;
                continue;
            }
            if status.is_server_error() {
                failures += 1;
                if failures >= ATTEMPTS {
                    return Err(CrmError::Transient(format!(
                        "{} after {ATTEMPTS} attempts",
                        status.as_u16()
                    )));
                }
                let wait = retry_after
                    .map(|s| Duration::from_secs(s.min(30)))
                    .unwrap_or(Duration::from_millis(250 << failures));
                tokio::time::sleep(jitter(wait)).await;
                continue;
            }
            if status == StatusCode::NO_CONTENT || (status.is_success() && text.trim().is_empty()) {
                return Ok(Value::Null);
            }
            let parsed: Result<Value, _> = serde_json::from_str(&text);
            if status.is_success() {
                return match parsed {
                    Ok(v) => Ok(v),
                    Err(_) => {
                        failures += 1;
                        if failures >= ATTEMPTS {
                            return Err(CrmError::Malformed("the answer is not JSON".into()));
                        }
                        continue;
                    }
                };
            }
            let message = parsed
                .as_ref()
                .map(error_message)
                .unwrap_or_else(|_| clip(&text));
            if let Some(scopes) = missing_scopes(status, parsed.as_ref().ok()) {
                return Err(CrmError::ScopesMissing(scopes));
            }
            if status == StatusCode::UNAUTHORIZED {
                return Err(CrmError::Auth(message));
            }
            if status == StatusCode::FORBIDDEN && text.contains("REQUEST_LIMIT_EXCEEDED") {
                return Err(CrmError::LimitExhausted(message));
            }
            if status == StatusCode::MULTI_STATUS {
                return parsed.map_err(|_| CrmError::Malformed("207 without JSON".into()));
            }
            return Err(CrmError::Rejected {
                status: status.as_u16(),
                message,
            });
        }
    }

    // ------------------------------------------------------------------ describe

    /// The object's fields.
    pub async fn describe(&mut self, entity: Entity) -> Result<Vec<CrmField>, CrmError> {
        if let Some(f) = self.describe_cache.get(&entity) {
            return Ok(f.clone());
        }
        let object = self.kind.object(entity);
        let fields = match self.kind {
            CrmKind::Hubspot => {
                let v = self
                    .call(
                        Method::GET,
                        &format!("/crm/v3/properties/{object}"),
                        &[],
                        None,
                        &[],
                    )
                    .await?;
                hubspot_fields(&v)?
            }
            CrmKind::Salesforce => {
                let v = self
                    .call(
                        Method::GET,
                        &format!("/sobjects/{object}/describe"),
                        &[],
                        None,
                        &[],
                    )
                    .await?;
                salesforce_fields(&v)?
            }
        };
        self.describe_cache.insert(entity, fields.clone());
        Ok(fields)
    }

    /// Whether the CRM holds the app record id of `entity`'s records (as far as
    /// [`CrmClient::ensure_marker`] found; assumed until it says otherwise).
    pub fn has_marker(&self, entity: Entity) -> bool {
        !self.unmarked.contains(&entity)
    }

    /// Makes sure the CRM can hold the app record id (HubSpot: defines the unique
    /// `conduit_id` property once; Salesforce: the `Conduit_Id__c` external id field
    /// must exist — an admin adds it with the managed package). Returns whether it
    /// can: a HubSpot grant without the object's schema write scope cannot define the
    /// property, and pushes then de-duplicate creates by key instead.
    pub async fn ensure_marker(&mut self, entity: Entity) -> Result<bool, CrmError> {
        let marked = match self.kind {
            // Defining the property answers whether it exists (201, or 409 when it
            // does): one request where a describe and then a create were two. A grant
            // that cannot define it is asked whether someone else did.
            CrmKind::Hubspot => match self.define_hubspot_marker(entity).await? {
                Some(defined) => defined,
                None => self.describes_marker(entity).await?,
            },
            CrmKind::Salesforce => {
                if !self.describes_marker(entity).await? {
                    return Err(CrmError::Rejected {
                        status: 400,
                        message: format!(
                            "the {} object has no {SALESFORCE_MARKER} external id field",
                            self.kind.object(entity)
                        ),
                    });
                }
                true
            }
        };
        if marked {
            self.unmarked.remove(&entity);
        } else {
            self.unmarked.insert(entity);
        }
        Ok(marked)
    }

    /// Whether the CRM's description of `entity` lists the marker field.
    async fn describes_marker(&mut self, entity: Entity) -> Result<bool, CrmError> {
        let fields = self.describe(entity).await?;
        Ok(fields.iter().any(|f| f.name == self.kind.marker()))
    }

    /// Defines HubSpot's `conduit_id` property: Some(true) when it now exists (made
    /// or already there), None when this grant may not define properties (an OAuth
    /// grant without the object's schema write scope, or an API key refused for it).
    async fn define_hubspot_marker(&mut self, entity: Entity) -> Result<Option<bool>, CrmError> {
        let object = self.kind.object(entity);
        let schema_write = format!("crm.schemas.{object}.write");
        let creds = self.credentials().await?;
        // An OAuth grant says its scopes; an API key's are unknown: try.
        let lacks =
            creds.connection.token.is_some() && !creds.connection.scopes.contains(&schema_write);
        self.creds = Some((creds, Instant::now()));
        if lacks {
            return Ok(None);
        }
        let group = match entity {
            Entity::Contacts => "contactinformation",
            Entity::Companies => "companyinformation",
        };
        let body = json!({
            "name": HUBSPOT_MARKER,
            "label": "Conduit ID",
            "type": "string",
            "fieldType": "text",
            "groupName": group,
            "hasUniqueValue": true,
            "description": "The Conduit record this record is synced with.",
        });
        match self
            .call(
                Method::POST,
                &format!("/crm/v3/properties/{object}"),
                &[],
                Some(&body),
                &[],
            )
            .await
        {
            Ok(_) | Err(CrmError::Rejected { status: 409, .. }) => {
                // A description cached before the property existed lacks it.
                self.describe_cache.remove(&entity);
                Ok(Some(true))
            }
            Err(CrmError::ScopesMissing(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    // ---------------------------------------------------------------------- pull

    /// The next page of records changed since the cursor, oldest change first.
    pub async fn pull(
        &mut self,
        entity: Entity,
        cursor: &Cursor,
        fields: &[String],
        filters: &[&Filter],
    ) -> Result<PullPage, CrmError> {
        match self.kind {
            CrmKind::Hubspot => self.hubspot_pull(entity, cursor, fields, filters).await,
            CrmKind::Salesforce => self.salesforce_pull(entity, cursor, fields, filters).await,
        }
    }

    fn with_system_fields(&self, entity: Entity, fields: &[String]) -> Vec<String> {
        let mut all: Vec<String> = fields.to_vec();
        for f in [self.kind.modified_field(entity), self.kind.marker()] {
            if !all.iter().any(|x| x == f) {
                all.push(f.to_owned());
            }
        }
        if self.kind == CrmKind::Salesforce && !all.iter().any(|x| x == "Id") {
            all.insert(0, "Id".to_owned());
        }
        all
    }

    async fn hubspot_pull(
        &mut self,
        entity: Entity,
        cursor: &Cursor,
        fields: &[String],
        filters: &[&Filter],
    ) -> Result<PullPage, CrmError> {
        let object = self.kind.object(entity);
        let props = self.with_system_fields(entity, fields);
        let modified = self.kind.modified_field(entity);
        // A full pass without filters walks the list endpoint (100 a page, no cap);
        // everything else searches on the modification time (200 a page, re-anchored
        // on the last time seen before the 10,000-result cap).
        if cursor.since_ms.is_none() && filters.is_empty() {
            // The list endpoint tells no total: at the start of the pass, one search
            // of a single record counts them (the run's "of estimated total").
            let total = if cursor.page.is_none() {
                let count = json!({"limit": 1, "properties": ["hs_object_id"]});
                let v = self
                    .call(
                        Method::POST,
                        &format!("/crm/v3/objects/{object}/search"),
                        &[],
                        Some(&count),
                        &[],
                    )
                    .await?;
                v.get("total").and_then(Value::as_u64)
            } else {
                None
            };
            let mut query = vec![
                ("limit", "100".to_owned()),
                ("properties", props.join(",")),
                ("archived", "false".to_owned()),
            ];
            if let Some(after) = &cursor.page {
                query.push(("after", after.clone()));
            }
            let v = self
                .call(
                    Method::GET,
                    &format!("/crm/v3/objects/{object}"),
                    &query,
                    None,
                    &[],
                )
                .await?;
            let records = hubspot_records(&v, modified)?;
            let mut next = cursor.clone();
            for r in &records {
                next.high_water_ms = next.high_water_ms.max(r.modified_ms);
            }
            let after = v.pointer("/paging/next/after").and_then(|a| {
                a.as_str()
                    .map(str::to_owned)
                    .or_else(|| a.as_u64().map(|n| n.to_string()))
            });
            next.page = after;
            return Ok(PullPage {
                records,
                next: next.page.is_some().then_some(next),
                total,
            });
        }
        let since = cursor.since_ms.unwrap_or(0);
        let offset: u64 = cursor
            .page
            .as_deref()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let mut group = vec![json!({
            "propertyName": modified, "operator": "GTE", "value": since.to_string()
        })];
        for f in filters {
            group.push(hubspot_filter(f));
        }
        let body = json!({
            "filterGroups": [{"filters": group}],
            "sorts": [{"propertyName": modified, "direction": "ASCENDING"}],
            "properties": props,
            "limit": 200,
            "after": offset.to_string(),
        });
        let v = self
            .call(
                Method::POST,
                &format!("/crm/v3/objects/{object}/search"),
                &[],
                Some(&body),
                &[],
            )
            .await?;
        let records = hubspot_records(&v, modified)?;
        // The total of the pass's first search (a re-anchored one counts only what
        // is left).
        let total = if cursor.page.is_none() {
            v.get("total").and_then(Value::as_u64)
        } else {
            None
        };
        let mut next = cursor.clone();
        for r in &records {
            next.high_water_ms = next.high_water_ms.max(r.modified_ms);
        }
        let after: Option<u64> = v.pointer("/paging/next/after").and_then(|a| {
            a.as_str()
                .and_then(|s| s.parse().ok())
                .or_else(|| a.as_u64())
        });
        next.page = match after {
            // Re-anchor before the cap: start a new search from the latest time seen
            // (GTE: records sharing that millisecond are seen again, harmlessly).
            Some(a) if a + 200 > HUBSPOT_SEARCH_CAP => {
                if next.high_water_ms <= since {
                    return Err(CrmError::Rejected {
                        status: 400,
                        message: "more than 10,000 records share one modification time".into(),
                    });
                }
                next.since_ms = Some(next.high_water_ms);
                Some("0".to_owned())
            }
            Some(a) => Some(a.to_string()),
            None => None,
        };
        Ok(PullPage {
            records,
            next: next.page.is_some().then_some(next),
            total,
        })
    }

    async fn salesforce_pull(
        &mut self,
        entity: Entity,
        cursor: &Cursor,
        fields: &[String],
        filters: &[&Filter],
    ) -> Result<PullPage, CrmError> {
        let describe = self.describe(entity).await?;
        let v = match &cursor.page {
            Some(next) => {
                if !next.starts_with("/services/data/") {
                    return Err(CrmError::Internal("bad Salesforce paging locator".into()));
                }
                self.call(
                    Method::GET,
                    next,
                    &[],
                    None,
                    &[("Sforce-Query-Options", "batchSize=2000".into())],
                )
                .await?
            }
            None => {
                let object = self.kind.object(entity);
                let props = self.with_system_fields(entity, fields);
                let mut conditions = Vec::new();
                if let Some(since) = cursor.since_ms {
                    conditions.push(format!("SystemModstamp >= {}", soql_datetime(since)));
                }
                for f in filters {
                    conditions.push(soql_condition(f, &describe)?);
                }
                let mut soql = format!("SELECT {} FROM {object}", props.join(", "));
                if !conditions.is_empty() {
                    soql.push_str(" WHERE ");
                    soql.push_str(&conditions.join(" AND "));
                }
                soql.push_str(" ORDER BY SystemModstamp ASC, Id ASC");
                self.call(
                    Method::GET,
                    "/query",
                    &[("q", soql)],
                    None,
                    &[("Sforce-Query-Options", "batchSize=2000".into())],
                )
                .await?
            }
        };
        let rows = v
            .get("records")
            .and_then(Value::as_array)
            .ok_or_else(|| CrmError::Malformed("query answer without records".into()))?;
        let mut records = Vec::with_capacity(rows.len());
        for row in rows {
            records.push(salesforce_record(row)?);
        }
        let mut next = cursor.clone();
        for r in &records {
            next.high_water_ms = next.high_water_ms.max(r.modified_ms);
        }
        let done = v.get("done").and_then(Value::as_bool).unwrap_or(true);
        next.page = if done {
            None
        } else {
            Some(
                v.get("nextRecordsUrl")
                    .and_then(Value::as_str)
                    .ok_or_else(|| CrmError::Malformed("not done, but no nextRecordsUrl".into()))?
                    .to_owned(),
            )
        };
        Ok(PullPage {
            records,
            next: next.page.is_some().then_some(next),
            total: v.get("totalSize").and_then(Value::as_u64),
        })
    }

    /// Reads records by CRM id (missing ones are left out).
    pub async fn read(
        &mut self,
        entity: Entity,
        ids: &[String],
        fields: &[String],
    ) -> Result<Vec<CrmRecord>, CrmError> {
        let object = self.kind.object(entity);
        let props = self.with_system_fields(entity, fields);
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(self.kind.batch_size()) {
            match self.kind {
                CrmKind::Hubspot => {
                    let body = json!({
                        "properties": props,
                        "inputs": chunk.iter().map(|id| json!({"id": id})).collect::<Vec<_>>(),
                    });
                    let v = self
                        .call(
                            Method::POST,
                            &format!("/crm/v3/objects/{object}/batch/read"),
                            &[("archived", "false".to_owned())],
                            Some(&body),
                            &[],
                        )
                        .await?;
                    out.extend(hubspot_records(&v, self.kind.modified_field(entity))?);
                }
                CrmKind::Salesforce => {
                    let v = self
                        .call(
                            Method::GET,
                            &format!("/composite/sobjects/{object}"),
                            &[("ids", chunk.join(",")), ("fields", props.join(","))],
                            None,
                            &[],
                        )
                        .await?;
                    let rows = v.as_array().ok_or_else(|| {
                        CrmError::Malformed("retrieve answer is not a list".into())
                    })?;
                    for row in rows.iter().filter(|r| !r.is_null()) {
                        out.push(salesforce_record(row)?);
                    }
                }
            }
        }
        Ok(out)
    }

    /// Finds the CRM records carrying these app record ids: app id → CRM id.
    pub async fn find_by_marker(
        &mut self,
        entity: Entity,
        app_ids: &[String],
    ) -> Result<BTreeMap<String, String>, CrmError> {
        let marker = self.kind.marker();
        self.find_by(entity, marker, app_ids).await
    }

    /// Finds the CRM records whose key field (email / domain) holds one of `keys`
    /// (compared lower-cased): key → CRM id.
    pub async fn find_by_key(
        &mut self,
        entity: Entity,
        keys: &[String],
    ) -> Result<BTreeMap<String, String>, CrmError> {
        let lower: Vec<String> = keys.iter().map(|k| k.trim().to_lowercase()).collect();
        let found = self
            .find_by(entity, self.kind.key_field(entity), &lower)
            .await?;
        Ok(found
            .into_iter()
            .map(|(k, id)| (k.trim().to_lowercase(), id))
            .collect())
    }

    /// Finds the CRM records whose `field` holds one of `values`: value → CRM id.
    async fn find_by(
        &mut self,
        entity: Entity,
        marker: &str,
        values: &[String],
    ) -> Result<BTreeMap<String, String>, CrmError> {
        let object = self.kind.object(entity);
        let mut found = BTreeMap::new();
        for chunk in values.chunks(100) {
            let records = match self.kind {
                CrmKind::Hubspot => {
                    let body = json!({
                        "filterGroups": [{"filters": [{
                            "propertyName": marker, "operator": "IN", "values": chunk
                        }]}],
                        "properties": [marker],
                        "limit": 200,
                    });
                    let v = self
                        .call(
                            Method::POST,
                            &format!("/crm/v3/objects/{object}/search"),
                            &[],
                            Some(&body),
                            &[],
                        )
                        .await?;
                    hubspot_records(&v, self.kind.modified_field(entity))?
                }
                CrmKind::Salesforce => {
                    let list = chunk
                        .iter()
                        .map(|id| soql_string(id))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let soql = format!(
                        "SELECT Id, SystemModstamp, {marker} FROM {object} WHERE {marker} IN ({list})"
                    );
                    let v = self
                        .call(Method::GET, "/query", &[("q", soql)], None, &[])
                        .await?;
                    v.get("records")
                        .and_then(Value::as_array)
                        .ok_or_else(|| CrmError::Malformed("query answer without records".into()))?
                        .iter()
                        .map(salesforce_record)
                        .collect::<Result<Vec<_>, _>>()?
                }
            };
            for r in records {
                if let Some(app) = r.values.get(marker) {
                    found.insert(app.clone(), r.id.clone());
                }
            }
        }
        Ok(found)
    }

    // --------------------------------------------------------------------- write

    /// Creates records (each carrying its app record id in the marker field, when
    /// the CRM has it); one outcome per input, in order. At most one batch (HubSpot
    /// 100, Salesforce 200).
    pub async fn create(
        &mut self,
        entity: Entity,
        records: &[(String, BTreeMap<String, Option<String>>)],
    ) -> Result<Vec<WriteOutcome>, CrmError> {
        let marker = self.kind.marker();
        let marked = self.has_marker(entity);
        let inputs: Vec<BTreeMap<String, Option<String>>> = records
            .iter()
            .map(|(app_id, values)| {
                let mut v = values.clone();
                if marked {
                    v.insert(marker.to_owned(), Some(app_id.clone()));
                }
                v
            })
            .collect();
        match self.kind {
            CrmKind::Hubspot => self.hubspot_write(entity, &inputs, None).await,
            CrmKind::Salesforce => self.salesforce_write(entity, &inputs, None).await,
        }
    }

    /// Updates records: (CRM id, changed values); one outcome per input, in order.
    pub async fn update(
        &mut self,
        entity: Entity,
        records: &[(String, BTreeMap<String, Option<String>>)],
    ) -> Result<Vec<WriteOutcome>, CrmError> {
        let ids: Vec<String> = records.iter().map(|(id, _)| id.clone()).collect();
        let values: Vec<BTreeMap<String, Option<String>>> =
            records.iter().map(|(_, v)| v.clone()).collect();
        match self.kind {
            CrmKind::Hubspot => self.hubspot_write(entity, &values, Some(&ids)).await,
            CrmKind::Salesforce => self.salesforce_write(entity, &values, Some(&ids)).await,
        }
    }

    /// Deletes (HubSpot: archives) records; already-gone ones count as deleted.
    pub async fn delete(&mut self, entity: Entity, ids: &[String]) -> Result<(), CrmError> {
        let object = self.kind.object(entity);
        for chunk in ids.chunks(self.kind.batch_size()) {
            match self.kind {
                CrmKind::Hubspot => {
                    let body = json!({
                        "inputs": chunk.iter().map(|id| json!({"id": id})).collect::<Vec<_>>()
                    });
                    self.call(
                        Method::POST,
                        &format!("/crm/v3/objects/{object}/batch/archive"),
                        &[],
                        Some(&body),
                        &[],
                    )
                    .await?;
                }
                CrmKind::Salesforce => {
                    self.call(
                        Method::DELETE,
                        "/composite/sobjects",
                        &[("ids", chunk.join(",")), ("allOrNone", "false".into())],
                        None,
                        &[],
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }

    /// CRM records deleted since `since_ms`: (id, deleted at ms).
    pub async fn deleted_since(
        &mut self,
        entity: Entity,
        since_ms: i64,
    ) -> Result<Vec<(String, i64)>, CrmError> {
        let object = self.kind.object(entity);
        let mut out = Vec::new();
        match self.kind {
            CrmKind::Hubspot => {
                let mut after: Option<String> = None;
                loop {
                    let mut query = vec![
                        ("limit", "100".to_owned()),
                        ("archived", "true".to_owned()),
                        ("properties", self.kind.marker().to_owned()),
                    ];
                    if let Some(a) = &after {
                        query.push(("after", a.clone()));
                    }
                    let v = self
                        .call(
                            Method::GET,
                            &format!("/crm/v3/objects/{object}"),
                            &query,
                            None,
                            &[],
                        )
                        .await?;
                    let results = v
                        .get("results")
                        .and_then(Value::as_array)
                        .ok_or_else(|| CrmError::Malformed("list answer without results".into()))?;
                    for r in results {
                        let id = r.get("id").and_then(Value::as_str);
                        let at = r
                            .get("archivedAt")
                            .and_then(Value::as_str)
                            .and_then(parse_time_ms);
                        if let (Some(id), Some(at)) = (id, at)
                            && at >= since_ms
                        {
                            out.push((id.to_owned(), at));
                        }
                    }
                    after = v
                        .pointer("/paging/next/after")
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    if after.is_none() {
                        break;
                    }
                }
            }
            CrmKind::Salesforce => {
                // The window may reach back at most 30 days.
                let now = crate::domain::now();
                let earliest = (now - time::Duration::days(29)).unix_timestamp() * 1000;
                let start = since_ms.max(earliest);
                let v = self
                    .call(
                        Method::GET,
                        &format!("/sobjects/{object}/deleted/"),
                        &[
                            ("start", soql_datetime(start)),
                            ("end", soql_datetime(now.unix_timestamp() * 1000 + 60_000)),
                        ],
                        None,
                        &[],
                    )
                    .await?;
                let rows = v
                    .get("deletedRecords")
                    .and_then(Value::as_array)
                    .ok_or_else(|| CrmError::Malformed("deleted answer without records".into()))?;
                for r in rows {
                    let id = r.get("id").and_then(Value::as_str);
                    let at = r
                        .get("deletedDate")
                        .and_then(Value::as_str)
                        .and_then(parse_time_ms);
                    if let (Some(id), Some(at)) = (id, at) {
                        out.push((id.to_owned(), at));
                    }
                }
            }
        }
        Ok(out)
    }

    async fn hubspot_write(
        &mut self,
        entity: Entity,
        inputs: &[BTreeMap<String, Option<String>>],
        ids: Option<&[String]>,
    ) -> Result<Vec<WriteOutcome>, CrmError> {
        let object = self.kind.object(entity);
        let op = if ids.is_some() { "update" } else { "create" };
        let body = json!({
            "inputs": inputs.iter().enumerate().map(|(i, values)| {
                let props: serde_json::Map<String, Value> = values
                    .iter()
                    .map(|(k, v)| (k.clone(), json!(v.clone().unwrap_or_default())))
                    .collect();
                match ids {
                    Some(ids) => json!({"id": ids[i], "properties": props}),
                    None => json!({"properties": props}),
                }
            }).collect::<Vec<_>>()
        });
        let result = self
            .call(
                Method::POST,
                &format!("/crm/v3/objects/{object}/batch/{op}"),
                &[],
                Some(&body),
                &[],
            )
            .await;
        match result {
            Ok(v) => {
                // Results come in no particular order: match creates by their marker
                // (without one, by their unique key: email / domain), updates by id.
                let records = hubspot_records(&v, self.kind.modified_field(entity))?;
                let field = if self.has_marker(entity) {
                    HUBSPOT_MARKER
                } else {
                    self.kind.key_field(entity)
                };
                let matched =
                    |v: Option<&String>| v.map(|s| s.trim().to_lowercase()).unwrap_or_default();
                let mut by_key: BTreeMap<String, String> = BTreeMap::new();
                for r in records {
                    let key = match ids {
                        Some(_) => r.id.clone(),
                        None => matched(r.values.get(field)),
                    };
                    by_key.insert(key, r.id);
                }
                Ok(inputs
                    .iter()
                    .enumerate()
                    .map(|(i, values)| {
                        let key = match ids {
                            Some(ids) => ids[i].clone(),
                            None => matched(values.get(field).and_then(Option::as_ref)),
                        };
                        match by_key.get(&key) {
                            Some(id) => WriteOutcome::Done(id.clone()),
                            None => WriteOutcome::Failed("missing from the CRM's answer".into()),
                        }
                    })
                    .collect())
            }
            // HubSpot fails a whole batch for one bad input: split it to find which.
            Err(CrmError::Rejected { status, message }) if status == 400 || status == 409 => {
                if inputs.len() == 1 {
                    if status == 409 {
                        return Ok(vec![WriteOutcome::Exists(existing_id(&message))]);
                    }
                    if status == 400 && message.contains("OBJECT_NOT_FOUND") {
                        return Ok(vec![WriteOutcome::Failed("the CRM record is gone".into())]);
                    }
                    return Ok(vec![WriteOutcome::Failed(message)]);
                }
                let mid = inputs.len() / 2;
                let (left_ids, right_ids) = match ids {
                    Some(ids) => (Some(&ids[..mid]), Some(&ids[mid..])),
                    None => (None, None),
                };
                let mut out =
                    Box::pin(self.hubspot_write(entity, &inputs[..mid], left_ids)).await?;
                out.extend(Box::pin(self.hubspot_write(entity, &inputs[mid..], right_ids)).await?);
                Ok(out)
            }
            Err(e) => Err(e),
        }
    }

    async fn salesforce_write(
        &mut self,
        entity: Entity,
        inputs: &[BTreeMap<String, Option<String>>],
        ids: Option<&[String]>,
    ) -> Result<Vec<WriteOutcome>, CrmError> {
        let describe = self.describe(entity).await?;
        let object = self.kind.object(entity);
        let records: Vec<Value> = inputs
            .iter()
            .enumerate()
            .map(|(i, values)| {
                let mut m = serde_json::Map::new();
                m.insert("attributes".into(), json!({"type": object}));
                if let Some(ids) = ids {
                    m.insert("Id".into(), json!(ids[i]));
                }
                for (k, v) in values {
                    m.insert(k.clone(), salesforce_value(&describe, k, v.as_deref()));
                }
                Value::Object(m)
            })
            .collect();
        let body = json!({"allOrNone": false, "records": records});
        let method = if ids.is_some() {
            Method::PATCH
        } else {
            Method::POST
        };
        let v = self
            .call(method, "/composite/sobjects", &[], Some(&body), &[])
            .await?;
        let rows = v
            .as_array()
            .filter(|rows| rows.len() == inputs.len())
            .ok_or_else(|| {
                CrmError::Malformed("collection answer does not match the request".into())
            })?;
        Ok(rows
            .iter()
            .enumerate()
            .map(|(i, row)| {
                if row.get("success").and_then(Value::as_bool) == Some(true) {
                    let id = row
                        .get("id")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .or_else(|| ids.map(|ids| ids[i].clone()))
                        .unwrap_or_default();
                    return WriteOutcome::Done(id);
                }
                let errors = row.get("errors").and_then(Value::as_array);
                let duplicate = errors.is_some_and(|es| {
                    es.iter().any(|e| {
                        e.get("statusCode").and_then(Value::as_str) == Some("DUPLICATE_VALUE")
                    })
                });
                if duplicate && ids.is_none() {
                    return WriteOutcome::Exists(None);
                }
                let message = errors
                    .map(|es| {
                        es.iter()
                            .map(|e| {
                                format!(
                                    "{}: {}",
                                    e.get("statusCode")
                                        .and_then(Value::as_str)
                                        .unwrap_or("ERROR"),
                                    e.get("message").and_then(Value::as_str).unwrap_or("")
                                )
                            })
                            .collect::<Vec<_>>()
                            .join("; ")
                    })
                    .unwrap_or_else(|| "refused".into());
                WriteOutcome::Failed(clip(&message))
            })
            .collect())
    }
}

fn token_error(e: TokenError) -> CrmError {
    match e {
        TokenError::NotFound => CrmError::Auth("the connection no longer exists".into()),
        TokenError::NeedsReauth => {
            CrmError::Auth("the connection needs to be re-authorised".into())
        }
        TokenError::Unusable(why) => CrmError::Auth(why.to_owned()),
        TokenError::Unavailable(why) => CrmError::Transient(why),
        TokenError::Changed => CrmError::Transient("the connection changed".into()),
        TokenError::Internal(why) => CrmError::Internal(why),
        TokenError::Store(e) => CrmError::Store(e),
    }
}

/// The scopes a refusal says are missing, when it is a missing-scope refusal:
/// HubSpot's 403 `MISSING_SCOPES` (naming them in `errors[].context`), Salesforce's
/// answer to a token without `api` ("not valid for use with the REST API").
fn missing_scopes(status: StatusCode, body: Option<&Value>) -> Option<Vec<String>> {
    if status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED {
        return None;
    }
    let body = body?;
    if body.get("category").and_then(Value::as_str) == Some("MISSING_SCOPES") {
        let mut scopes: Vec<String> = Vec::new();
        for e in body
            .get("errors")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let context = e.get("context");
            for key in ["requiredGranularScopes", "requiredScopes"] {
                for s in context
                    .and_then(|c| c.get(key))
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                {
                    if !scopes.iter().any(|x| x == s) {
                        scopes.push(clip(s));
                    }
                }
            }
        }
        return Some(scopes);
    }
    let salesforce_no_api = body.as_array().is_some_and(|items| {
        items.iter().any(|e| {
            e.get("message")
                .and_then(Value::as_str)
                .is_some_and(|m| m.contains("not valid for use with the REST API"))
        })
    });
    salesforce_no_api.then(|| vec!["api".to_owned()])
}

/// The human part of a provider error body (HubSpot object, Salesforce array).
fn error_message(v: &Value) -> String {
    let text = match v {
        Value::Array(items) => items
            .iter()
            .map(|e| {
                format!(
                    "{}: {}",
                    e.get("errorCode")
                        .and_then(Value::as_str)
                        .unwrap_or("ERROR"),
                    e.get("message").and_then(Value::as_str).unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
            .join("; "),
        Value::Object(o) => {
            let category = o.get("category").and_then(Value::as_str).unwrap_or("");
            let message = o.get("message").and_then(Value::as_str).unwrap_or("");
            if category.is_empty() {
                message.to_owned()
            } else {
                format!("{category}: {message}")
            }
        }
        other => other.to_string(),
    };
    clip(&text)
}

/// HubSpot names the existing record in a unique-value conflict: "Existing ID: 123".
fn existing_id(message: &str) -> Option<String> {
    let at = message.find("Existing ID:")? + "Existing ID:".len();
    let id: String = message[at..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    (!id.is_empty()).then_some(id)
}

/// Parses RFC 3339 / Salesforce (`+0000`) times and epoch milliseconds.
pub fn parse_time_ms(text: &str) -> Option<i64> {
    let t = text.trim();
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
        return t.parse().ok();
    }
    let fixed;
    let t = if t.len() > 5 && (t.ends_with("+0000") || t.ends_with("-0000")) {
        fixed = format!("{}Z", &t[..t.len() - 5]);
        fixed.as_str()
    } else {
        t
    };
    time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|d| (d.unix_timestamp_nanos() / 1_000_000) as i64)
}

fn soql_datetime(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    crate::domain::sortable_time(t)
}

fn soql_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

fn soql_literal(describe: &[CrmField], field: &str, value: &str) -> String {
    match describe.iter().find(|f| f.name == field).map(|f| f.kind) {
        Some(FieldType::Number) if value.parse::<f64>().is_ok() => value.to_owned(),
        Some(FieldType::Boolean) if value == "true" || value == "false" => value.to_owned(),
        Some(FieldType::DateTime) => parse_time_ms(value)
            .map(soql_datetime)
            .unwrap_or_else(|| soql_string(value)),
        Some(FieldType::Date) if value.len() == 10 => value.to_owned(),
        _ => soql_string(value),
    }
}

fn soql_condition(f: &Filter, describe: &[CrmField]) -> Result<String, CrmError> {
    if !describe.iter().any(|d| d.name == f.field) {
        return Err(CrmError::Rejected {
            status: 400,
            message: format!("filter on unknown field {:?}", clip(&f.field)),
        });
    }
    let field = &f.field;
    let value = f.value.as_deref().unwrap_or_default();
    let lit = || soql_literal(describe, field, value);
    Ok(match f.operator {
        FilterOp::Eq => format!("{field} = {}", lit()),
        FilterOp::Neq => format!("{field} != {}", lit()),
        FilterOp::Contains => {
            let escaped = value.replace('%', "\\%").replace('_', "\\_");
            format!("{field} LIKE {}", soql_string(&format!("%{escaped}%")))
        }
        FilterOp::Gt => format!("{field} > {}", lit()),
        FilterOp::Gte => format!("{field} >= {}", lit()),
        FilterOp::Lt => format!("{field} < {}", lit()),
        FilterOp::Lte => format!("{field} <= {}", lit()),
        FilterOp::In => format!(
            "{field} IN ({})",
            f.values
                .iter()
                .map(|v| soql_literal(describe, field, v))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        FilterOp::HasValue => format!("{field} != null"),
        FilterOp::NoValue => format!("{field} = null"),
    })
}

fn hubspot_filter(f: &Filter) -> Value {
    let value = f.value.clone().unwrap_or_default();
    match f.operator {
        FilterOp::Eq => json!({"propertyName": f.field, "operator": "EQ", "value": value}),
        FilterOp::Neq => json!({"propertyName": f.field, "operator": "NEQ", "value": value}),
        FilterOp::Contains => {
            json!({"propertyName": f.field, "operator": "CONTAINS_TOKEN", "value": value})
        }
        FilterOp::Gt => json!({"propertyName": f.field, "operator": "GT", "value": value}),
        FilterOp::Gte => json!({"propertyName": f.field, "operator": "GTE", "value": value}),
        FilterOp::Lt => json!({"propertyName": f.field, "operator": "LT", "value": value}),
        FilterOp::Lte => json!({"propertyName": f.field, "operator": "LTE", "value": value}),
        FilterOp::In => json!({"propertyName": f.field, "operator": "IN", "values": f.values}),
        FilterOp::HasValue => json!({"propertyName": f.field, "operator": "HAS_PROPERTY"}),
        FilterOp::NoValue => json!({"propertyName": f.field, "operator": "NOT_HAS_PROPERTY"}),
    }
}

fn hubspot_records(v: &Value, modified: &str) -> Result<Vec<CrmRecord>, CrmError> {
    let results = v
        .get("results")
        .and_then(Value::as_array)
        .ok_or_else(|| CrmError::Malformed("answer without results".into()))?;
    let mut out = Vec::with_capacity(results.len());
    for r in results {
        let id = r
            .get("id")
            .and_then(|id| {
                id.as_str()
                    .map(str::to_owned)
                    .or_else(|| id.as_u64().map(|n| n.to_string()))
            })
            .ok_or_else(|| CrmError::Malformed("record without id".into()))?;
        let props = r
            .get("properties")
            .and_then(Value::as_object)
            .ok_or_else(|| CrmError::Malformed("record without properties".into()))?;
        let mut values = BTreeMap::new();
        for (k, v) in props {
            match v {
                Value::String(s) if !s.is_empty() => {
                    values.insert(k.clone(), s.clone());
                }
                Value::Number(n) => {
                    values.insert(k.clone(), n.to_string());
                }
                Value::Bool(b) => {
                    values.insert(k.clone(), b.to_string());
                }
                _ => {}
            }
        }
        let modified_ms = values
            .get(modified)
            .and_then(|t| parse_time_ms(t))
            .or_else(|| {
                r.get("updatedAt")
                    .and_then(Value::as_str)
                    .and_then(parse_time_ms)
            })
            .unwrap_or(0);
        out.push(CrmRecord {
            id,
            values,
            modified_ms,
        });
    }
    Ok(out)
}

fn salesforce_record(row: &Value) -> Result<CrmRecord, CrmError> {
    let obj = row
        .as_object()
        .ok_or_else(|| CrmError::Malformed("record is not an object".into()))?;
    let id = obj
        .get("Id")
        .and_then(Value::as_str)
        .ok_or_else(|| CrmError::Malformed("record without Id".into()))?
        .to_owned();
    let mut values = BTreeMap::new();
    for (k, v) in obj {
        if k == "attributes" {
            continue;
        }
        match v {
            Value::String(s) if !s.is_empty() => {
                values.insert(k.clone(), s.clone());
            }
            Value::Number(n) => {
                let text = match (n.as_i64(), n.as_f64()) {
                    (Some(i), _) => i.to_string(),
                    (None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => {
                        format!("{}", f as i64)
                    }
                    _ => n.to_string(),
                };
                values.insert(k.clone(), text);
            }
            Value::Bool(b) => {
                values.insert(k.clone(), b.to_string());
            }
            _ => {}
        }
    }
    let modified_ms = values
        .get("SystemModstamp")
        .and_then(|t| parse_time_ms(t))
        .unwrap_or(0);
    Ok(CrmRecord {
        id,
        values,
        modified_ms,
    })
}

fn salesforce_value(describe: &[CrmField], field: &str, value: Option<&str>) -> Value {
    let Some(value) = value.filter(|v| !v.is_empty()) else {
        return Value::Null;
    };
    match describe.iter().find(|f| f.name == field).map(|f| f.kind) {
        Some(FieldType::Number) => value
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| value.parse::<f64>().map(Value::from))
            .unwrap_or_else(|_| Value::String(value.to_owned())),
        Some(FieldType::Boolean) => match value {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            other => Value::String(other.to_owned()),
        },
        _ => Value::String(value.to_owned()),
    }
}

fn hubspot_fields(v: &Value) -> Result<Vec<CrmField>, CrmError> {
    let results = v
        .get("results")
        .and_then(Value::as_array)
        .ok_or_else(|| CrmError::Malformed("properties answer without results".into()))?;
    let mut out = Vec::with_capacity(results.len());
    for p in results {
        let Some(name) = p.get("name").and_then(Value::as_str) else {
            continue;
        };
        let ptype = p.get("type").and_then(Value::as_str).unwrap_or("string");
        let field_type = p.get("fieldType").and_then(Value::as_str).unwrap_or("text");
        let kind = match (ptype, field_type, name) {
            (_, _, "hs_object_id") => FieldType::Id,
            (_, _, "email") => FieldType::Email,
            (_, "phonenumber", _) => FieldType::Phone,
            ("number", _, _) => FieldType::Number,
            ("bool", _, _) => FieldType::Boolean,
            ("date", _, _) => FieldType::Date,
            ("datetime", _, _) => FieldType::DateTime,
            ("enumeration", "booleancheckbox", _) => FieldType::Boolean,
            ("enumeration", _, _) => FieldType::Enumeration,
            (_, _, "domain" | "website") => FieldType::Url,
            (_, _, "phone" | "mobilephone") => FieldType::Phone,
            _ => FieldType::String,
        };
        let read_only = p
            .pointer("/modificationMetadata/readOnlyValue")
            .and_then(Value::as_bool)
            .unwrap_or(false)
            || p.get("calculated")
                .and_then(Value::as_bool)
                .unwrap_or(false);
        out.push(CrmField {
            name: name.to_owned(),
            label: p
                .get("label")
                .and_then(Value::as_str)
                .unwrap_or(name)
                .to_owned(),
            kind,
            provider_type: format!("{ptype}/{field_type}"),
            required: false,
            writable: !read_only,
            options: p
                .get("options")
                .and_then(Value::as_array)
                .map(|o| {
                    o.iter()
                        .filter_map(|x| x.get("value").and_then(Value::as_str).map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
    Ok(out)
}

fn salesforce_fields(v: &Value) -> Result<Vec<CrmField>, CrmError> {
    let fields = v
        .get("fields")
        .and_then(Value::as_array)
        .ok_or_else(|| CrmError::Malformed("describe answer without fields".into()))?;
    let mut out = Vec::with_capacity(fields.len());
    for f in fields {
        let Some(name) = f.get("name").and_then(Value::as_str) else {
            continue;
        };
        let ftype = f.get("type").and_then(Value::as_str).unwrap_or("string");
        let flag = |k: &str| f.get(k).and_then(Value::as_bool).unwrap_or(false);
        let kind = match ftype {
            "id" | "reference" => FieldType::Id,
            "email" => FieldType::Email,
            "phone" => FieldType::Phone,
            "url" => FieldType::Url,
            "int" | "double" | "currency" | "percent" => FieldType::Number,
            "boolean" => FieldType::Boolean,
            "date" => FieldType::Date,
            "datetime" => FieldType::DateTime,
            "picklist" | "multipicklist" => FieldType::Enumeration,
            _ => FieldType::String,
        };
        let createable = flag("createable");
        out.push(CrmField {
            name: name.to_owned(),
            label: f
                .get("label")
                .and_then(Value::as_str)
                .unwrap_or(name)
                .to_owned(),
            kind,
            provider_type: ftype.to_owned(),
            required: createable && !flag("nillable") && !flag("defaultedOnCreate"),
            writable: createable || flag("updateable"),
            options: f
                .get("picklistValues")
                .and_then(Value::as_array)
                .map(|o| {
                    o.iter()
                        .filter_map(|x| x.get("value").and_then(Value::as_str).map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_scope_refusals_are_told_from_other_refusals() {
        let hubspot = json!({
            "status": "error",
            "message": "This app hasn't been granted all required scopes to make this call.",
            "errors": [{"message": "One or more of the following scopes are required.",
                        "context": {"requiredGranularScopes": ["crm.objects.contacts.write"]}}],
            "category": "MISSING_SCOPES",
        });
        assert_eq!(
            missing_scopes(StatusCode::FORBIDDEN, Some(&hubspot)),
            Some(vec!["crm.objects.contacts.write".to_owned()])
        );
        let salesforce = json!([{"message": "This session is not valid for use with the REST API",
                                 "errorCode": "INVALID_SESSION_ID"}]);
        assert_eq!(
            missing_scopes(StatusCode::FORBIDDEN, Some(&salesforce)),
            Some(vec!["api".to_owned()])
        );
        let expired =
            json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]);
        assert_eq!(
            missing_scopes(StatusCode::UNAUTHORIZED, Some(&expired)),
            None
        );
        let other = json!({"category": "VALIDATION_ERROR", "message": "bad"});
        assert_eq!(missing_scopes(StatusCode::BAD_REQUEST, Some(&other)), None);
        assert_eq!(missing_scopes(StatusCode::FORBIDDEN, Some(&other)), None);
        assert!(!CrmError::ScopesMissing(vec![]).is_transient());
    }

    #[test]
    fn times_parse_in_every_provider_format() {
        let a = parse_time_ms("2024-01-15T09:00:00.000+0000").unwrap();
        let b = parse_time_ms("2024-01-15T09:00:00.000Z").unwrap();
        assert_eq!(a, b);
        assert_eq!(parse_time_ms("1705309200000"), Some(1_705_309_200_000));
        assert_eq!(parse_time_ms("yesterday"), None);
        assert_eq!(soql_datetime(b), "2024-01-15T09:00:00.000Z");
    }

    #[test]
    fn soql_is_escaped_and_typed() {
        assert_eq!(soql_string("O'Brien\\"), "'O\\'Brien\\\\'");
        let describe = vec![CrmField {
            name: "NumberOfEmployees".into(),
            label: "Employees".into(),
            kind: FieldType::Number,
            provider_type: "int".into(),
            required: false,
            writable: true,
            options: vec![],
        }];
        let f = Filter {
            entity: Entity::Companies,
            field: "NumberOfEmployees".into(),
            operator: FilterOp::Gte,
            value: Some("50".into()),
            values: vec![],
        };
        assert_eq!(
            soql_condition(&f, &describe).unwrap(),
            "NumberOfEmployees >= 50"
        );
        let bad = Filter {
            field: "Nope".into(),
            ..f
        };
        assert!(soql_condition(&bad, &describe).is_err());
    }

    #[test]
    fn provider_answers_become_records() {
        let hs = json!({"results": [{"id": "51", "properties": {
            "email": "a@x.io", "firstname": "", "lastmodifieddate": "2024-01-15T09:00:00.000Z"
        }}]});
        let r = hubspot_records(&hs, "lastmodifieddate").unwrap();
        assert_eq!(r[0].id, "51");
        assert_eq!(r[0].values.get("email").map(String::as_str), Some("a@x.io"));
        assert!(!r[0].values.contains_key("firstname"));
        assert!(r[0].modified_ms > 0);
        assert!(hubspot_records(&json!({"nope": 1}), "x").is_err());
        let sf = json!({"attributes": {"type": "Account"}, "Id": "001A", "NumberOfEmployees": 120.0,
            "Name": "Acme", "Website": null, "SystemModstamp": "2024-01-15T09:00:00.000+0000"});
        let r = salesforce_record(&sf).unwrap();
        assert_eq!(
            r.values.get("NumberOfEmployees").map(String::as_str),
            Some("120")
        );
        assert!(!r.values.contains_key("Website"));
        assert_eq!(
            existing_id("Contact already exists. Existing ID: 9012"),
            Some("9012".into())
        );
    }
}

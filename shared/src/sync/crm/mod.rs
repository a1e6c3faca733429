//! The CRM side of a sync: every CRM's contacts and companies behind one client —
//! describe fields, read changes page by page from a cursor, read, create, update and
//! delete in batches, find the records Conduit created.
//!
//! Three layers:
//! - **Facts that are data** — object names, the modification-time field, the key field,
//!   the marker field, system fields, batch size, filter limit — live in the provider
//!   catalogue (`providers.yaml`, `crm:`), read here as a [`CrmKind`].
//! - **Behaviour that differs** — paging and cursors, search and filter syntax, batch
//!   shapes, the marker strategy, deletes, error classification, usage headers — is one
//!   [`Dialect`] per CRM, one module each ([`hubspot`], [`salesforce`], [`zoho`],
//!   [`dynamics`], [`pipedrive`]).
//! - **The shared transport** — token, budget, 429 hold-off, retries — is
//!   [`transport::Transport`], used by every dialect.
//!
//! Values cross this boundary as strings (None: empty); dialects with typed JSON values
//! convert them with the object's description.

use std::collections::{BTreeMap, BTreeSet};

use async_trait::async_trait;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::budget::{Budget, interval_for, tolerance_for};
use super::config::Filter;
use super::schema::{CrmField, Entity, FieldType};
use crate::app::App;
use crate::domain::{ConnectionId, TenantId};
use crate::oauth::lifecycle::{Credentials, Tokens};
use crate::providers::{Catalogue, CrmFacts, CrmObject};
use crate::store::StoreError;

pub mod dynamics;
pub mod hubspot;
pub mod pipedrive;
pub mod salesforce;
pub mod salesforce_bulk;
pub mod transport;
pub mod zoho;

pub use transport::clip;
use transport::{Target, Transport, Wire};

/// A CRM Conduit syncs records with: its catalogue facts and its dialect. Cheap to copy.
#[derive(Clone, Copy)]
pub struct CrmKind {
    provider: &'static str,
    facts: &'static CrmFacts,
    contacts: &'static CrmObject,
    companies: &'static CrmObject,
    /// Deals, where the CRM syncs them (its catalogue `crm.objects` lists them).
    deals: Option<&'static CrmObject>,
    dialect: &'static dyn Dialect,
}

impl std::fmt::Debug for CrmKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.provider)
    }
}

impl PartialEq for CrmKind {
    fn eq(&self, other: &Self) -> bool {
        self.provider == other.provider
    }
}

impl Eq for CrmKind {}

/// The dialect module a catalogue `crm.dialect` names (the catalogue loader).
fn dialect_named(name: &str) -> Option<&'static dyn Dialect> {
    match name {
        "hubspot" => Some(&hubspot::HubSpot),
        "salesforce" => Some(&salesforce::Salesforce),
        "zoho" => Some(&zoho::Zoho),
        "pipedrive" => Some(&pipedrive::Pipedrive),
        "dynamics" => Some(&dynamics::Dynamics),
        _ => None,
    }
}

impl CrmKind {
    /// The CRM of a catalogue provider, if Conduit syncs records with it (it has a
    /// `crm` block naming a dialect, with both entities).
    pub fn of(provider: &str) -> Option<Self> {
        let p = Catalogue::get().ok()?.provider(provider)?;
        let facts = p.crm.as_ref()?;
        Some(Self {
            provider: p.id.as_str(),
            contacts: facts.objects.get(Entity::Contacts.as_str())?,
            companies: facts.objects.get(Entity::Companies.as_str())?,
            deals: facts.objects.get(Entity::Deals.as_str()),
            dialect: dialect_named(&facts.dialect)?,
            facts,
        })
    }

    /// Every provider Conduit syncs records with, in catalogue order.
    pub fn all() -> Vec<Self> {
        Catalogue::get()
            .map(|c| c.providers.iter().filter_map(|p| Self::of(&p.id)).collect())
            .unwrap_or_default()
    }

    /// The catalogue provider.
    pub fn provider(self) -> &'static str {
        self.provider
    }

    fn object_facts(self, entity: Entity) -> &'static CrmObject {
        match entity {
            Entity::Contacts => self.contacts,
            Entity::Companies => self.companies,
            // A config syncs deals only with a CRM that has them (validated on save);
            // the companies' facts stand in so nothing here panics.
            Entity::Deals => self.deals.unwrap_or(self.companies),
        }
    }

    /// Whether this CRM syncs `entity` (contacts and companies always; deals where the
    /// catalogue lists the object).
    pub fn syncs(self, entity: Entity) -> bool {
        entity != Entity::Deals || self.deals.is_some()
    }

    /// Whether and when the CRM's admin makes the webhook subscriptions by hand
    /// ([`Dialect::by_hand`]).
    pub fn by_hand(self) -> ByHand {
        self.dialect.by_hand()
    }

    /// This CRM as if its catalogue listed no deals object: every CRM connector syncs
    /// deals, so what refuses a CRM without them is tested with this.
    pub fn without_deals(self) -> Self {
        Self {
            deals: None,
            ..self
        }
    }

    /// The CRM object of an entity.
    pub fn object(self, entity: Entity) -> &'static str {
        &self.object_facts(entity).name
    }

    /// The largest batch write.
    pub fn batch_size(self) -> usize {
        self.facts.batch_size.max(1)
    }

    /// The most filters a sync config may have.
    pub fn filters_max(self) -> usize {
        self.facts.filters_max
    }

    /// The field carrying the app record id.
    pub fn marker(self) -> &'static str {
        &self.facts.marker
    }

    /// The field that identifies a record by its key (the app's email / domain): how
    /// creates are de-duplicated when the marker field cannot be defined. None: the
    /// entity has no key (deals).
    pub fn key_field(self, entity: Entity) -> Option<&'static str> {
        entity.key_field()?;
        let key = self.object_facts(entity).key.as_str();
        (!key.is_empty()).then_some(key)
    }

    /// The field holding a record's last modification time.
    pub fn modified_field(self, entity: Entity) -> &'static str {
        &self.object_facts(entity).modified
    }

    /// The fewest writes of one kind a push page sends through the CRM's bulk API (None:
    /// it has none; everything goes through its batch writes).
    pub fn bulk_min(self) -> Option<usize> {
        self.dialect.bulk_min()
    }

    /// The app records a push page reads when the CRM has a bulk API (pages big enough
    /// to fill a bulk job), in place of five batches.
    pub fn bulk_page(self) -> Option<usize> {
        self.dialect.bulk_page()
    }

    /// Whether a field is bookkeeping (ids, stamps the CRM sets, Conduit's marker)
    /// rather than data a mapping should offer.
    pub fn is_system_field(self, entity: Entity, name: &str) -> bool {
        name == self.marker()
            || name == self.modified_field(entity)
            || self.facts.system_fields.iter().any(|f| f == name)
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
    /// Where the CRM's own change tracking stands (Dynamics 365's delta link): a pass
    /// with it reads the changes and deletions since, instead of `since_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delta: Option<String>,
    /// The pass restarted because the CRM lost its change position (an expired
    /// Dataverse delta token): the deletions since the last pass are unknown, so at the
    /// pass's end every linked record is read back and those gone count as deleted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sweep: bool,
}

impl Cursor {
    /// The cursor after `records`: the high-water mark moved to their latest change,
    /// the page set to `page` (None: the pass is complete).
    pub fn after(&self, records: &[CrmRecord], page: Option<String>) -> Self {
        let mut next = self.clone();
        for r in records {
            next.high_water_ms = next.high_water_ms.max(r.modified_ms);
        }
        next.page = page;
        next
    }
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
    /// Records the CRM reports deleted on this page (change tracking): (id, when).
    pub deleted: Vec<(String, i64)>,
    /// On a pass's last page, where the CRM's change tracking resumes next pass
    /// ([`Cursor::delta`]).
    pub resume: Option<String>,
    /// This page starts a new full pass because the CRM lost its change position
    /// ([`Cursor::sweep`]).
    pub restarted: bool,
}

impl PullPage {
    /// A page whose continuation is `next`'s page, if it has one.
    pub fn new(records: Vec<CrmRecord>, next: Cursor, total: Option<u64>) -> Self {
        Self {
            records,
            next: next.page.is_some().then_some(next),
            total,
            deleted: Vec::new(),
            resume: None,
            restarted: false,
        }
    }
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

/// Values to write, by CRM field (None: clear the field).
pub type WriteValues = BTreeMap<String, Option<String>>;

/// A bulk write: creates (upserted by the marker, so a job run twice creates nothing
/// twice) or updates by CRM id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum BulkOp {
    /// Creates, keyed by the app record id in the marker field.
    Upsert,
    /// Updates, keyed by the CRM id.
    Update,
    /// Deletes, keyed by the CRM id (rows carry no values).
    Delete,
}

impl BulkOp {
    /// The name a checkpoint keeps the op's job under.
    pub fn as_str(self) -> &'static str {
        match self {
            BulkOp::Upsert => "upsert",
            BulkOp::Update => "update",
            BulkOp::Delete => "delete",
        }
    }
}

/// Whether and when a CRM's admin makes a realtime config's webhook subscriptions by
/// hand ([`Dialect::by_hand`]); the key Conduit made for the config then outlives a
/// pause, so what the admin entered works again when the config resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByHand {
    /// Never: Conduit makes them through the CRM's API, or they are app-level.
    Never,
    /// Always (Salesforce's outbound messages need Setup): the key is in the URL.
    Always,
    /// When the connection's user may not make them (Dynamics 365 without the
    /// customizer role): the admin registers the URL with the key in this header.
    WhenRefused {
        /// The header the CRM sends the key in.
        header: &'static str,
    },
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

    /// A 400 of our own making: the request cannot be expressed for this CRM.
    pub fn refused(message: impl Into<String>) -> Self {
        Self::Rejected {
            status: 400,
            message: message.into(),
        }
    }
}

/// How one CRM's API is spoken. Dialects are stateless; the per-connection state
/// (transport, descriptions, marker knowledge) is the [`CrmClient`] they are handed.
/// Each method does one request's worth of work or one documented sequence; batching
/// to the catalogue's sizes is the client's.
#[async_trait]
pub trait Dialect: Wire {
    /// The fields of `entity`'s object, as the CRM describes them.
    async fn describe(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
    ) -> Result<Vec<CrmField>, CrmError>;

    /// Makes sure the CRM can hold the app record id on `entity`'s records; whether it
    /// can (when it cannot, pushes de-duplicate creates by key instead), or a refusal
    /// when the CRM needs an admin to add the field.
    async fn ensure_marker(&self, c: &mut CrmClient<'_>, entity: Entity) -> Result<bool, CrmError>;

    /// The next page of records changed since the cursor, oldest change first.
    async fn pull(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
        cursor: &Cursor,
        fields: &[String],
        filters: &[&Filter],
    ) -> Result<PullPage, CrmError>;

    /// Reads at most one batch of records by CRM id (missing ones are left out).
    async fn read(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
        ids: &[String],
        fields: &[String],
    ) -> Result<Vec<CrmRecord>, CrmError>;

    /// The records whose `field` holds one of at most [`Dialect::find_chunk`] `values`
    /// (each record carrying at least `field`).
    async fn find_by(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
        field: &str,
        values: &[String],
    ) -> Result<Vec<CrmRecord>, CrmError>;

    /// How many values one [`Dialect::find_by`] takes.
    fn find_chunk(&self) -> usize {
        100
    }

    /// Creates (`ids` None) or updates (`ids`: the CRM ids, one per input) at most one
    /// batch; one outcome per input, in order.
    async fn write(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
        inputs: &[WriteValues],
        ids: Option<&[String]>,
    ) -> Result<Vec<WriteOutcome>, CrmError>;

    /// Deletes at most one batch; already-gone records count as deleted.
    async fn delete(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
        ids: &[String],
    ) -> Result<(), CrmError>;

    /// Records deleted since `since_ms`: (id, deleted at ms).
    async fn deleted_since(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
        since_ms: i64,
    ) -> Result<Vec<(String, i64)>, CrmError>;

    /// The fewest writes of one kind sent through the CRM's bulk API (None: none).
    fn bulk_min(&self) -> Option<usize> {
        None
    }

    /// The app records a push page reads to fill a bulk job (None: no bulk API).
    fn bulk_page(&self) -> Option<usize> {
        None
    }

    /// Starts a bulk job writing `rows` ((key, values): the app id for
    /// [`BulkOp::Upsert`], the CRM id for [`BulkOp::Update`] and [`BulkOp::Delete`]);
    /// answers its id once the
    /// CRM has the data and processes it.
    async fn bulk_submit(
        &self,
        _c: &mut CrmClient<'_>,
        _entity: Entity,
        _op: BulkOp,
        _rows: &[(String, WriteValues)],
    ) -> Result<String, CrmError> {
        Err(CrmError::Internal("this CRM has no bulk API".into()))
    }

    /// Waits for bulk job `job` and reads its results: one per row of `rows` (matched
    /// by key), None for a row the job does not hold. A job still processing after a
    /// while is a transient error (the work is retried and polls the job again).
    async fn bulk_collect(
        &self,
        _c: &mut CrmClient<'_>,
        _entity: Entity,
        _op: BulkOp,
        _job: &str,
        _rows: &[(String, WriteValues)],
    ) -> Result<Vec<Option<WriteOutcome>>, CrmError> {
        Err(CrmError::Internal("this CRM has no bulk API".into()))
    }

    /// Whether Conduit creates webhook subscriptions for a realtime config itself
    /// (false: the CRM has no per-account subscription API Conduit uses, or its
    /// webhooks are set up once per app — HubSpot's).
    fn subscribes(&self) -> bool {
        false
    }

    /// Whether and when the CRM's admin makes a config's subscriptions by hand,
    /// pointing them at what `GET /v1/sync/configs/{id}/webhook-endpoint` shows.
    fn by_hand(&self) -> ByHand {
        ByHand::Never
    }

    /// Creates a webhook sending `entity`'s changes to `url` with HTTP basic
    /// credentials `auth` (user, password); answers its id.
    async fn subscribe(
        &self,
        _c: &mut CrmClient<'_>,
        _entity: Entity,
        _url: &str,
        _auth: (&str, &str),
    ) -> Result<String, CrmError> {
        Err(CrmError::Internal(
            "this CRM's webhooks are not created by Conduit".into(),
        ))
    }

    /// Removes webhook `id` (one already gone counts as removed).
    async fn unsubscribe(&self, _c: &mut CrmClient<'_>, _id: &str) -> Result<(), CrmError> {
        Ok(())
    }

    /// The ids of the subscriptions the CRM has now (`None`: the CRM does not list
    /// them), to re-create those someone removed by hand.
    async fn live_subscriptions(
        &self,
        _c: &mut CrmClient<'_>,
    ) -> Result<Option<std::collections::BTreeSet<String>>, CrmError> {
        Ok(None)
    }

    /// How long a subscription lives unless renewed (`None`: until removed). The
    /// subscription made or renewed now lasts at least this long.
    fn subscription_lifetime(&self) -> Option<std::time::Duration> {
        None
    }

    /// Renews subscription `id` of `entity` (made with the same `url` and `auth`) for
    /// another [`Dialect::subscription_lifetime`].
    async fn renew(
        &self,
        _c: &mut CrmClient<'_>,
        _entity: Entity,
        _id: &str,
        _url: &str,
        _auth: (&str, &str),
    ) -> Result<(), CrmError> {
        Ok(())
    }
}

/// A removal's answer: a 404 or 410 means it was gone already, which is what removing
/// it asked for.
pub(crate) fn removed(answer: Result<Value, CrmError>) -> Result<(), CrmError> {
    match answer {
        Ok(_)
        | Err(CrmError::Rejected {
            status: 404 | 410, ..
        }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// A client for one connection's CRM.
pub struct CrmClient<'a> {
    kind: CrmKind,
    transport: Transport<'a>,
    describe_cache: BTreeMap<Entity, Vec<CrmField>>,
    /// Entities whose CRM object has no marker field (pushes de-duplicate by key).
    unmarked: BTreeSet<Entity>,
    /// What a dialect learned describing an object (Pipedrive's custom-field keys).
    notes: BTreeMap<(Entity, &'static str), String>,
    /// An earlier delivery of this work may have written records it did not record
    /// (its worker stopped between a create and its link).
    redelivered: bool,
    /// The work is a push's full pass (every app record, not the changes since the
    /// last): records may already be in the CRM under their app ids (an earlier config's).
    full_pass: bool,
    /// Per entity, the CRM records carrying each app id in the marker field, as a
    /// dialect read them (Pipedrive's index for a full pass; CRMs with unique marker
    /// fields need none).
    marked: BTreeMap<Entity, BTreeMap<String, String>>,
}

impl std::fmt::Debug for CrmClient<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CrmClient")
            .field("kind", &self.kind)
            .field("connection", self.transport.connection())
            .finish()
    }
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
        let tokens = Tokens::new(app, actor, request_id.to_owned());
        Ok(Self {
            kind,
            transport: Transport::new(kind.dialect, tokens, tenant, connection, budget),
            describe_cache: BTreeMap::new(),
            unmarked: BTreeSet::new(),
            notes: BTreeMap::new(),
            redelivered: false,
            full_pass: false,
            marked: BTreeMap::new(),
        })
    }

    /// Marks the work as a redelivery: an earlier attempt may have created records whose
    /// links it did not write. CRMs without unique fields (Pipedrive) look for such
    /// records before creating; the others refuse a second create by the marker.
    pub fn set_redelivered(&mut self, redelivered: bool) {
        self.redelivered = redelivered;
    }

    /// Whether an earlier attempt may have written without recording it.
    pub fn redelivered(&self) -> bool {
        self.redelivered
    }

    /// Marks the work as a push's full pass: creates may meet records an earlier
    /// config made for the same app records.
    pub fn set_full_pass(&mut self, full_pass: bool) {
        self.full_pass = full_pass;
    }

    /// Whether the work is a push's full pass.
    pub fn full_pass(&self) -> bool {
        self.full_pass
    }

    /// The CRM records known to carry each app id (see [`Self::keep_marked`]).
    pub(crate) fn marked(&self, entity: Entity) -> Option<&BTreeMap<String, String>> {
        self.marked.get(&entity)
    }

    /// Keeps an index of the CRM records carrying each app id, for this client's life.
    pub(crate) fn keep_marked(&mut self, entity: Entity, index: BTreeMap<String, String>) {
        self.marked.insert(entity, index);
    }

    /// Which CRM.
    pub fn kind(&self) -> CrmKind {
        self.kind
    }

    /// The requests sent (including retries) and the 429s sat out since the last call.
    pub fn take_counts(&mut self) -> (u64, u64) {
        (
            std::mem::take(&mut self.transport.requests),
            std::mem::take(&mut self.transport.rate_limited),
        )
    }

    /// The provider's latest usage report (Salesforce `Sforce-Limit-Info`).
    pub fn usage(&self) -> Option<&str> {
        self.transport.usage.as_deref()
    }

    /// One call under the API base (for dialects).
    pub(crate) async fn call(
        &mut self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Value, CrmError> {
        self.transport
            .call(method, Target::Api(path), query, body, &[])
            .await
    }

    /// One call with extra headers, to a [`Target`] (for dialects).
    pub(crate) async fn call_to(
        &mut self,
        method: Method,
        target: Target<'_>,
        query: &[(&str, String)],
        body: Option<&Value>,
        headers: &[(&str, String)],
    ) -> Result<Value, CrmError> {
        self.transport
            .call(method, target, query, body, headers)
            .await
    }

    /// One call without a body answered as text with its headers (CSV results; for
    /// dialects).
    pub(crate) async fn call_text(
        &mut self,
        method: Method,
        target: Target<'_>,
        query: &[(&str, String)],
        headers: &[(&str, String)],
    ) -> Result<transport::RawAnswer, CrmError> {
        self.transport
            .call_text(method, target, query, headers)
            .await
    }

    /// One call with a non-JSON body (OData `$batch`), answered as text (for dialects).
    pub(crate) async fn call_raw(
        &mut self,
        method: Method,
        target: Target<'_>,
        content_type: &str,
        body: &str,
        headers: &[(&str, String)],
    ) -> Result<transport::RawAnswer, CrmError> {
        self.transport
            .call_raw(method, target, content_type, body, headers)
            .await
    }

    /// The connection's current credentials (for dialects that need to know the grant).
    pub(crate) async fn credentials(&mut self) -> Result<Credentials, CrmError> {
        self.transport.credentials().await
    }

    /// Gives credentials back for reuse.
    pub(crate) fn keep_credentials(&mut self, creds: Credentials) {
        self.transport.keep(creds);
    }

    /// Forgets a cached description (the object changed).
    pub(crate) fn forget_description(&mut self, entity: Entity) {
        self.describe_cache.remove(&entity);
        self.notes.retain(|(e, _), _| *e != entity);
    }

    /// Keeps a fact a dialect learned describing `entity` (for dialects; forgotten with
    /// the description).
    pub(crate) fn note(&mut self, entity: Entity, name: &'static str, value: String) {
        self.notes.insert((entity, name), value);
    }

    /// A fact kept with [`CrmClient::note`] since the description was last read.
    pub(crate) fn noted(&self, entity: Entity, name: &'static str) -> Option<&str> {
        self.notes.get(&(entity, name)).map(String::as_str)
    }

    /// The object's fields.
    pub async fn describe(&mut self, entity: Entity) -> Result<Vec<CrmField>, CrmError> {
        if let Some(f) = self.describe_cache.get(&entity) {
            return Ok(f.clone());
        }
        let fields = self.kind.dialect.describe(self, entity).await?;
        self.describe_cache.insert(entity, fields.clone());
        Ok(fields)
    }

    /// Whether the CRM's description of `entity` lists the marker field.
    pub(crate) async fn describes_marker(&mut self, entity: Entity) -> Result<bool, CrmError> {
        let marker = self.kind.marker();
        let fields = self.describe(entity).await?;
        Ok(fields.iter().any(|f| f.name == marker))
    }

    /// Whether the CRM holds the app record id of `entity`'s records (as far as
    /// [`CrmClient::ensure_marker`] found; assumed until it says otherwise).
    pub fn has_marker(&self, entity: Entity) -> bool {
        !self.unmarked.contains(&entity)
    }

    /// Makes sure the CRM can hold the app record id ([`Dialect::ensure_marker`]);
    /// returns whether it can.
    pub async fn ensure_marker(&mut self, entity: Entity) -> Result<bool, CrmError> {
        let marked = self.kind.dialect.ensure_marker(self, entity).await?;
        if marked {
            self.unmarked.remove(&entity);
        } else {
            self.unmarked.insert(entity);
        }
        Ok(marked)
    }

    /// `fields` with the system fields every read needs (modification time, marker).
    pub fn with_system_fields(&self, entity: Entity, fields: &[String]) -> Vec<String> {
        let mut all: Vec<String> = fields.to_vec();
        for f in [self.kind.modified_field(entity), self.kind.marker()] {
            if !all.iter().any(|x| x == f) {
                all.push(f.to_owned());
            }
        }
        all
    }

    /// The next page of records changed since the cursor, oldest change first.
    pub async fn pull(
        &mut self,
        entity: Entity,
        cursor: &Cursor,
        fields: &[String],
        filters: &[&Filter],
    ) -> Result<PullPage, CrmError> {
        self.kind
            .dialect
            .pull(self, entity, cursor, fields, filters)
            .await
    }

    /// Reads records by CRM id (missing ones are left out).
    pub async fn read(
        &mut self,
        entity: Entity,
        ids: &[String],
        fields: &[String],
    ) -> Result<Vec<CrmRecord>, CrmError> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(self.kind.batch_size()) {
            out.extend(self.kind.dialect.read(self, entity, chunk, fields).await?);
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
        let Some(field) = self.kind.key_field(entity) else {
            return Ok(BTreeMap::new());
        };
        let lower: Vec<String> = keys.iter().map(|k| k.trim().to_lowercase()).collect();
        let found = self.find_by(entity, field, &lower).await?;
        Ok(found
            .into_iter()
            .map(|(k, id)| (k.trim().to_lowercase(), id))
            .collect())
    }

    /// Finds the CRM records whose `field` holds one of `values`: value → CRM id.
    async fn find_by(
        &mut self,
        entity: Entity,
        field: &str,
        values: &[String],
    ) -> Result<BTreeMap<String, String>, CrmError> {
        let mut found = BTreeMap::new();
        for chunk in values.chunks(self.kind.dialect.find_chunk().max(1)) {
            let records = self
                .kind
                .dialect
                .find_by(self, entity, field, chunk)
                .await?;
            for r in records {
                if let Some(value) = r.values.get(field) {
                    found.insert(value.clone(), r.id.clone());
                }
            }
        }
        Ok(found)
    }

    /// Creates records (each carrying its app record id in the marker field, when
    /// the CRM has it); one outcome per input, in order. At most one batch.
    pub async fn create(
        &mut self,
        entity: Entity,
        records: &[(String, WriteValues)],
    ) -> Result<Vec<WriteOutcome>, CrmError> {
        let marker = self.kind.marker();
        let marked = self.has_marker(entity);
        let inputs: Vec<WriteValues> = records
            .iter()
            .map(|(app_id, values)| {
                let mut v = values.clone();
                if marked {
                    v.insert(marker.to_owned(), Some(app_id.clone()));
                }
                v
            })
            .collect();
        self.kind.dialect.write(self, entity, &inputs, None).await
    }

    /// Updates records: (CRM id, changed values); one outcome per input, in order.
    pub async fn update(
        &mut self,
        entity: Entity,
        records: &[(String, WriteValues)],
    ) -> Result<Vec<WriteOutcome>, CrmError> {
        let ids: Vec<String> = records.iter().map(|(id, _)| id.clone()).collect();
        let values: Vec<WriteValues> = records.iter().map(|(_, v)| v.clone()).collect();
        self.kind
            .dialect
            .write(self, entity, &values, Some(&ids))
            .await
    }

    /// Starts a bulk job of `op` over `rows` (app id or CRM id, values); creates carry
    /// the app id in the marker field as [`CrmClient::create`]'s do. Answers its id.
    pub async fn bulk_submit(
        &mut self,
        entity: Entity,
        op: BulkOp,
        rows: &[(String, WriteValues)],
    ) -> Result<String, CrmError> {
        let rows = self.bulk_rows(entity, op, rows);
        self.kind.dialect.bulk_submit(self, entity, op, &rows).await
    }

    /// Waits for bulk job `job` of `rows` and answers one outcome per row, in order; rows
    /// the job does not hold (the page changed since it was submitted) are written
    /// through the CRM's batch writes instead.
    pub async fn bulk_collect(
        &mut self,
        entity: Entity,
        op: BulkOp,
        job: &str,
        rows: &[(String, WriteValues)],
    ) -> Result<Vec<WriteOutcome>, CrmError> {
        let marked = self.bulk_rows(entity, op, rows);
        let found = self
            .kind
            .dialect
            .bulk_collect(self, entity, op, job, &marked)
            .await?;
        let missing: Vec<usize> = (0..rows.len())
            .filter(|i| found.get(*i).is_none_or(Option::is_none))
            .collect();
        if !missing.is_empty() {
            // Expected only when a redelivered page differs from the one its job was
            // built from; an operator reading this elsewhere has found a bug.
            tracing::warn!(
                job,
                op = op.as_str(),
                rows = rows.len(),
                missing = missing.len(),
                "a bulk job lacks rows of its page: those go through the batch writes"
            );
        }
        let mut out: Vec<Option<WriteOutcome>> = found;
        out.resize(rows.len(), None);
        for chunk in missing.chunks(self.kind.batch_size()) {
            let batch: Vec<(String, WriteValues)> =
                chunk.iter().filter_map(|i| rows.get(*i).cloned()).collect();
            let written = match op {
                BulkOp::Upsert => self.create(entity, &batch).await?,
                BulkOp::Update => self.update(entity, &batch).await?,
                BulkOp::Delete => {
                    let ids: Vec<String> = batch.iter().map(|(id, _)| id.clone()).collect();
                    self.delete(entity, &ids).await?;
                    ids.into_iter().map(WriteOutcome::Done).collect()
                }
            };
            for (i, outcome) in chunk.iter().zip(written) {
                if let Some(slot) = out.get_mut(*i) {
                    *slot = Some(outcome);
                }
            }
        }
        Ok(out
            .into_iter()
            .map(|o| o.unwrap_or_else(|| WriteOutcome::Failed("no result".into())))
            .collect())
    }

    /// A bulk job's rows: creates with the marker field set.
    fn bulk_rows(
        &self,
        entity: Entity,
        op: BulkOp,
        rows: &[(String, WriteValues)],
    ) -> Vec<(String, WriteValues)> {
        let marker = self.kind.marker();
        let marked = op == BulkOp::Upsert && self.has_marker(entity);
        rows.iter()
            .map(|(key, values)| {
                let mut v = values.clone();
                if marked {
                    v.insert(marker.to_owned(), Some(key.clone()));
                }
                (key.clone(), v)
            })
            .collect()
    }

    /// Deletes records; already-gone ones count as deleted.
    pub async fn delete(&mut self, entity: Entity, ids: &[String]) -> Result<(), CrmError> {
        for chunk in ids.chunks(self.kind.batch_size()) {
            self.kind.dialect.delete(self, entity, chunk).await?;
        }
        Ok(())
    }

    /// Whether Conduit creates this CRM's webhook subscriptions.
    pub fn subscribes(&self) -> bool {
        self.kind.dialect.subscribes()
    }

    /// Whether and when the CRM's admin makes the subscriptions by hand.
    pub fn by_hand(&self) -> ByHand {
        self.kind.by_hand()
    }

    /// Creates a webhook for `entity`'s changes; its id.
    pub async fn subscribe(
        &mut self,
        entity: Entity,
        url: &str,
        auth: (&str, &str),
    ) -> Result<String, CrmError> {
        self.kind.dialect.subscribe(self, entity, url, auth).await
    }

    /// Removes a webhook.
    pub async fn unsubscribe(&mut self, id: &str) -> Result<(), CrmError> {
        self.kind.dialect.unsubscribe(self, id).await
    }

    /// The ids of the subscriptions the CRM has now, where it lists them.
    pub async fn live_subscriptions(
        &mut self,
    ) -> Result<Option<std::collections::BTreeSet<String>>, CrmError> {
        self.kind.dialect.live_subscriptions(self).await
    }

    /// How long this CRM's subscriptions live unless renewed.
    pub fn subscription_lifetime(&self) -> Option<std::time::Duration> {
        self.kind.dialect.subscription_lifetime()
    }

    /// Renews a subscription for another lifetime.
    pub async fn renew(
        &mut self,
        entity: Entity,
        id: &str,
        url: &str,
        auth: (&str, &str),
    ) -> Result<(), CrmError> {
        self.kind.dialect.renew(self, entity, id, url, auth).await
    }

    /// CRM records deleted since `since_ms`: (id, deleted at ms).
    pub async fn deleted_since(
        &mut self,
        entity: Entity,
        since_ms: i64,
    ) -> Result<Vec<(String, i64)>, CrmError> {
        self.kind
            .dialect
            .deleted_since(self, entity, since_ms)
            .await
    }
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

/// The records of a pulled page that pass a config's filters, on the CRM's values (for
/// CRMs whose list takes no filters: they are applied to each page).
pub(crate) fn passing(records: Vec<CrmRecord>, filters: &[&Filter]) -> Vec<CrmRecord> {
    records
        .into_iter()
        .filter(|r| {
            filters
                .iter()
                .all(|f| f.matches(r.values.get(&f.field).map(String::as_str)))
        })
        .collect()
}

/// The records whose `field` holds one of `values`, compared without case (for CRMs
/// whose search also matches other values or compares loosely).
pub(crate) fn holding(records: Vec<CrmRecord>, field: &str, values: &[String]) -> Vec<CrmRecord> {
    records
        .into_iter()
        .filter(|r| {
            r.values
                .get(field)
                .is_some_and(|x| values.iter().any(|v| v.eq_ignore_ascii_case(x)))
        })
        .collect()
}

/// A JSON scalar as the string CRM values are carried in (None: null, empty, or not a
/// scalar). Whole floats print without a fraction (`120.0` → `120`).
pub fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        }),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A string value as JSON typed by the object's description (numbers and booleans
/// as such, when they parse; anything else as text); None or empty: null.
pub fn typed_value(describe: &[CrmField], field: &str, value: Option<&str>) -> Value {
    let Some(text) = value.filter(|v| !v.is_empty()) else {
        return Value::Null;
    };
    match describe.iter().find(|f| f.name == field).map(|f| f.kind) {
        Some(FieldType::Number) => text
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| text.parse::<f64>().map(Value::from))
            .unwrap_or_else(|_| Value::String(text.to_owned())),
        Some(FieldType::Boolean) => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            other => Value::String(other.to_owned()),
        },
        _ => Value::String(text.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn times_parse_in_every_provider_format() {
        let a = parse_time_ms("2024-01-15T09:00:00.000+0000").unwrap();
        let b = parse_time_ms("2024-01-15T09:00:00.000Z").unwrap();
        assert_eq!(a, b);
        assert_eq!(parse_time_ms("1705309200000"), Some(1_705_309_200_000));
        assert_eq!(parse_time_ms("yesterday"), None);
    }

    #[test]
    fn every_syncing_provider_has_a_dialect_and_both_objects() {
        let catalogue = Catalogue::get().unwrap();
        for p in catalogue.providers.iter().filter(|p| p.crm.is_some()) {
            let kind = CrmKind::of(&p.id).unwrap();
            assert_eq!(kind.provider(), p.id);
            for e in [Entity::Contacts, Entity::Companies] {
                assert!(!kind.object(e).is_empty());
                assert!(kind.is_system_field(e, kind.modified_field(e)));
                assert!(kind.is_system_field(e, kind.marker()));
                let key = kind.key_field(e).unwrap();
                assert!(!kind.is_system_field(e, key));
            }
            if kind.syncs(Entity::Deals) {
                assert!(!kind.object(Entity::Deals).is_empty());
                assert_eq!(kind.key_field(Entity::Deals), None);
            }
        }
        assert!(CrmKind::all().len() >= 2);
        assert!(CrmKind::of("zendesk").is_none());
    }

    #[test]
    fn scalars_become_strings() {
        assert_eq!(scalar_text(&json!(120.0)).as_deref(), Some("120"));
        assert_eq!(scalar_text(&json!(1.5)).as_deref(), Some("1.5"));
        assert_eq!(scalar_text(&json!(true)).as_deref(), Some("true"));
        assert_eq!(scalar_text(&json!("")), None);
        assert_eq!(scalar_text(&json!(null)), None);
    }
}

//! Records per org: contacts and accounts with their tombstones, the org's modification
//! stamps, open query cursors, API allowance, and the [`SandboxState`] knobs.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value, json};

use super::schema::{
    self, BadValue, FieldType, RecordError, SfObject, Source, make_id, sf_datetime,
};
use super::soql::Query;
use crate::clock::now_ms;
use crate::providers::sample;
use crate::state::SandboxState;

/// Daily API requests an org may make unless [`SandboxState::set_salesforce_api_limit`]
/// says otherwise.
pub const DEFAULT_API_LIMIT: u64 = 100_000;
/// How long an unused query locator stays valid.
pub(crate) const LOCATOR_IDLE: Duration = Duration::from_secs(15 * 60);
/// Open query locators per org; opening more drops the least recently used.
pub(crate) const MAX_LOCATORS: usize = 50;
/// Tombstones older than this are purged (and `/deleted` refuses to look further back).
pub(crate) const TOMBSTONE_DAYS: i64 = 15;

/// A Salesforce record as the sandbox holds it, for assertions.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SfRecord {
    /// The 18-character id.
    pub id: String,
    /// The object.
    pub object: SfObject,
    /// Every field of the object by API name (as in describe), unset ones as null:
    /// `Id`, the timestamps (Salesforce format, `2024-01-15T09:00:00.000+0000`) and
    /// `IsDeleted` included.
    pub fields: BTreeMap<String, Value>,
    /// `SystemModstamp` (equal to `LastModifiedDate`).
    pub system_modstamp: String,
    /// Whether the record is deleted (in the recycle bin).
    pub is_deleted: bool,
}

/// How much of an org's daily API allowance is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct SfApiUsage {
    /// Requests counted in the current 24-hour window.
    pub used: u64,
    /// Requests allowed per 24 hours.
    pub max: u64,
}

/// One stored record. Shared (`Arc`) with open query cursors, which therefore see the
/// record as it was when the query ran; writes copy on write.
#[derive(Clone, Debug)]
pub(crate) struct Rec {
    pub(crate) id: String,
    /// Values by field index (`Null` for unset and for the system fields).
    pub(crate) values: Vec<Value>,
    pub(crate) created_ms: i64,
    pub(crate) modified_ms: i64,
    pub(crate) deleted: bool,
}

impl Rec {
    /// Field `index`'s value as JSON (system fields derived).
    pub(crate) fn json(&self, object: SfObject, index: usize) -> Value {
        let Some(field) = object.fields().get(index) else {
            return Value::Null;
        };
        match field.source {
            Source::Id => Value::String(self.id.clone()),
            Source::Created => Value::String(sf_datetime(self.created_ms)),
            Source::Modified => Value::String(sf_datetime(self.modified_ms)),
            Source::Deleted => Value::Bool(self.deleted),
            Source::Stored => match self.values.get(index) {
                // Stored date-times (Knowledge's) are epoch milliseconds.
                Some(Value::Number(n)) if field.kind == FieldType::DateTime => n
                    .as_i64()
                    .map_or(Value::Null, |ms| Value::String(sf_datetime(ms))),
                value => value.cloned().unwrap_or(Value::Null),
            },
        }
    }

    /// The REST shape: `attributes` plus the fields at `indices`.
    pub(crate) fn to_json(&self, object: SfObject, indices: &[usize], version: &str) -> Value {
        let mut body = Map::with_capacity(indices.len() + 1);
        body.insert(
            "attributes".to_owned(),
            json!({
                "type": object.name(),
                "url": format!("/services/data/v{version}/sobjects/{}/{}", object.name(), self.id),
            }),
        );
        for &index in indices {
            if let Some(field) = object.fields().get(index) {
                body.insert(field.name.to_owned(), self.json(object, index));
            }
        }
        Value::Object(body)
    }

    fn view(&self, object: SfObject) -> SfRecord {
        let fields = object
            .fields()
            .iter()
            .enumerate()
            .map(|(index, field)| (field.name.to_owned(), self.json(object, index)))
            .collect();
        SfRecord {
            id: self.id.clone(),
            object,
            fields,
            system_modstamp: sf_datetime(self.modified_ms),
            is_deleted: self.deleted,
        }
    }

    fn stored_text(&self, index: usize) -> Option<&str> {
        self.values.get(index).and_then(Value::as_str)
    }
}

/// Records of one object in one org.
#[derive(Clone, Debug, Default)]
pub(crate) struct Table {
    /// Every record, deleted ones too, by id (ids sort in creation order).
    pub(crate) records: BTreeMap<String, Arc<Rec>>,
    pub(crate) next_seq: u64,
    /// Live records' `Conduit_Id__c`, lower-cased → id.
    external: HashMap<String, String>,
    /// `(id, deleted at)` in deletion order.
    pub(crate) tombstones: VecDeque<(String, i64)>,
}

impl Table {
    pub(crate) fn next_id(&mut self, object: SfObject) -> String {
        // Start high enough that ids look like real ones (letters as well as digits).
        let id = make_id(object.key_prefix(), 916_132_832 + self.next_seq);
        self.next_seq += 1;
        id
    }

    fn external_key(object: SfObject, rec: &Rec) -> Option<String> {
        let index = object.external_id_field()?;
        rec.stored_text(index).map(str::to_lowercase)
    }

    fn index(&mut self, object: SfObject, rec: &Rec) {
        if !rec.deleted
            && let Some(key) = Self::external_key(object, rec)
        {
            self.external.insert(key, rec.id.clone());
        }
    }

    fn unindex(&mut self, object: SfObject, rec: &Rec) {
        if let Some(key) = Self::external_key(object, rec)
            && self.external.get(&key) == Some(&rec.id)
        {
            self.external.remove(&key);
        }
    }

    /// The live record holding external id `value` (case-insensitive).
    pub(crate) fn by_external(&self, value: &str) -> Option<&Arc<Rec>> {
        let id = self.external.get(&value.to_lowercase())?;
        self.records.get(id).filter(|r| !r.deleted)
    }

    pub(crate) fn live(&self, id: &str) -> Option<&Arc<Rec>> {
        self.records.get(id).filter(|r| !r.deleted)
    }

    fn put(&mut self, object: SfObject, rec: Rec) {
        if let Some(old) = self.records.get(&rec.id).cloned() {
            self.unindex(object, &old);
        }
        self.index(object, &rec);
        self.records.insert(rec.id.clone(), Arc::new(rec));
    }

    fn purge_tombstones(&mut self, before_ms: i64) {
        while self
            .tombstones
            .front()
            .is_some_and(|(_, at)| *at < before_ms)
        {
            self.tombstones.pop_front();
        }
    }
}

/// An open query: the matching rows as they were when it ran.
#[derive(Debug)]
pub(crate) struct Cursor {
    pub(crate) object: SfObject,
    pub(crate) fields: Vec<usize>,
    pub(crate) rows: Vec<Arc<Rec>>,
    pub(crate) page_size: usize,
    pub(crate) last_used: Instant,
}

/// How to undo one change of an all-or-none request.
#[derive(Debug)]
enum Undo {
    /// A record was put: restore `previous` (`None`: remove it).
    Put {
        object: SfObject,
        id: String,
        previous: Option<Arc<Rec>>,
    },
    /// A tombstone was appended.
    Tombstone(SfObject),
}

/// One org's data.
#[derive(Debug, Default)]
pub(crate) struct Org {
    tables: [Table; 4],
    /// The latest modification stamp handed out (epoch ms).
    last_stamp: i64,
    /// Open cursors by query id, least recently used first.
    pub(crate) cursors: VecDeque<(String, Cursor)>,
    /// Changes since [`Org::begin`], while an all-or-none request runs.
    journal: Option<Vec<Undo>>,
    /// Outbound messages its admin set up ([`super::outbound`]).
    pub(crate) outbound: super::outbound::Outbound,
}

/// A write refused: the whole request (a JSON value of the wrong type) or one record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum WriteError {
    Request(String),
    Record(RecordError),
}

impl From<RecordError> for WriteError {
    fn from(error: RecordError) -> Self {
        WriteError::Record(error)
    }
}

impl Org {
    pub(crate) fn table(&self, object: SfObject) -> &Table {
        &self.tables[object.index()]
    }

    pub(crate) fn table_mut(&mut self, object: SfObject) -> &mut Table {
        &mut self.tables[object.index()]
    }

    /// A stamp strictly later than every earlier one of this org (the wall clock when it
    /// is ahead, else one millisecond past the last stamp).
    pub(crate) fn stamp(&mut self) -> i64 {
        self.last_stamp = now_ms().max(self.last_stamp + 1);
        self.last_stamp
    }

    /// The latest stamp handed out (0 before any write).
    pub(crate) fn last_stamp(&self) -> i64 {
        self.last_stamp
    }

    /// Starts recording changes so they can be rolled back.
    pub(crate) fn begin(&mut self) {
        self.journal = Some(Vec::new());
    }

    /// Keeps the changes since [`Org::begin`].
    pub(crate) fn commit(&mut self) {
        self.journal = None;
    }

    /// Undoes every change since [`Org::begin`] (record ids and stamps handed out stay
    /// used, as in Salesforce).
    pub(crate) fn rollback(&mut self) {
        let Some(journal) = self.journal.take() else {
            return;
        };
        for undo in journal.into_iter().rev() {
            match undo {
                Undo::Put {
                    object,
                    id,
                    previous,
                } => {
                    let table = self.table_mut(object);
                    if let Some(current) = table.records.remove(&id) {
                        table.unindex(object, &current);
                    }
                    if let Some(previous) = previous {
                        table.index(object, &previous);
                        table.records.insert(id, previous);
                    }
                }
                Undo::Tombstone(object) => {
                    self.table_mut(object).tombstones.pop_back();
                }
            }
        }
    }

    /// Stores `rec` (journaled).
    fn put(&mut self, object: SfObject, rec: Rec) {
        if let Some(journal) = &mut self.journal {
            journal.push(Undo::Put {
                object,
                id: rec.id.clone(),
                previous: self.tables[object.index()].records.get(&rec.id).cloned(),
            });
        }
        if !self.outbound.watches(object) {
            self.table_mut(object).put(object, rec);
            return;
        }
        let (id, deleted, values) = (rec.id.clone(), rec.deleted, rec.values.clone());
        self.table_mut(object).put(object, rec);
        super::outbound::note_put(self, object, &values, &id, deleted);
    }

    /// Checks and converts written fields into `values` (keys are API names, any case;
    /// `attributes` is ignored). `creating` picks `createable` over `updateable`.
    fn apply_fields(
        &self,
        object: SfObject,
        input: &Map<String, Value>,
        values: &mut [Value],
        creating: bool,
    ) -> Result<(), WriteError> {
        let mut read_only = Vec::new();
        for (name, value) in input {
            if name == "attributes" {
                continue;
            }
            let Some((index, field)) = object.field(name) else {
                return Err(RecordError::new(
                    "INVALID_FIELD",
                    format!(
                        "No such column '{name}' on sobject of type {}",
                        object.name()
                    ),
                )
                .into());
            };
            if field.source == Source::Id && !creating {
                continue; // The record's own Id, as collections updates carry it.
            }
            if (creating && !field.createable) || (!creating && !field.updateable) {
                read_only.push(field.name.to_owned());
                continue;
            }
            let value = match schema::coerce(field, value) {
                Ok(value) => value,
                Err(BadValue::Parse(message)) => return Err(WriteError::Request(message)),
                Err(BadValue::Record(error)) => return Err(error.into()),
            };
            if field.kind == FieldType::Reference
                && let (Some(id), Some(to)) = (value.as_str(), field.reference_to)
            {
                self.check_reference(field.label, field.name, to, id)?;
            }
            if let Some(slot) = values.get_mut(index) {
                *slot = value;
            }
        }
        if read_only.is_empty() {
            return Ok(());
        }
        let message = if read_only.iter().any(|f| f == "Id") && creating {
            "cannot specify Id in an insert call".to_owned()
        } else {
            format!(
                "Unable to create/update fields: {}. Please check the security settings of this field and verify that it is read/write for your profile or permission set.",
                read_only.join(", ")
            )
        };
        let mut error = RecordError::new("INVALID_FIELD_FOR_INSERT_UPDATE", message);
        error.fields = read_only;
        Err(error.into())
    }

    fn check_reference(
        &self,
        label: &str,
        name: &str,
        to: SfObject,
        id: &str,
    ) -> Result<(), RecordError> {
        match self.table(to).records.get(id) {
            Some(rec) if !rec.deleted => Ok(()),
            Some(_) => Err(RecordError::new("ENTITY_IS_DELETED", "entity is deleted").on(name)),
            None => Err(RecordError::new(
                "INVALID_CROSS_REFERENCE_KEY",
                format!("{label}: invalid cross reference id"),
            )
            .on(name)),
        }
    }

    /// Required fields set, external id unique (among live records but `except`).
    fn check_record(
        &self,
        object: SfObject,
        values: &[Value],
        except: &str,
    ) -> Result<(), RecordError> {
        let missing: Vec<String> = object
            .required()
            .filter(|(index, _)| values.get(*index).is_none_or(Value::is_null))
            .map(|(_, field)| field.name.to_owned())
            .collect();
        if !missing.is_empty() {
            let mut error = RecordError::new(
                "REQUIRED_FIELD_MISSING",
                format!("Required fields are missing: [{}]", missing.join(", ")),
            );
            error.fields = missing;
            return Err(error);
        }
        if let Some(index) = object.external_id_field()
            && let Some(value) = values.get(index).and_then(Value::as_str)
            && let Some(owner) = self.table(object).by_external(value)
            && owner.id != except
        {
            let name = object.fields()[index].name;
            return Err(RecordError::new(
                "DUPLICATE_VALUE",
                format!(
                    "duplicate value found: {name} duplicates value on record with id: {}",
                    owner.id
                ),
            ));
        }
        Ok(())
    }

    /// Creates a record at `stamp`; returns its id.
    pub(crate) fn create(
        &mut self,
        object: SfObject,
        input: &Map<String, Value>,
        stamp: i64,
    ) -> Result<String, WriteError> {
        let mut values = vec![Value::Null; object.fields().len()];
        self.apply_fields(object, input, &mut values, true)?;
        self.check_record(object, &values, "")?;
        let id = self.table_mut(object).next_id(object);
        self.put(
            object,
            Rec {
                id: id.clone(),
                values,
                created_ms: stamp,
                modified_ms: stamp,
                deleted: false,
            },
        );
        Ok(id)
    }

    /// The live record `id` of `object`, or Salesforce's error for it.
    fn live_or_error(&self, object: SfObject, id: &str) -> Result<&Arc<Rec>, RecordError> {
        let normalized = schema::normalize_id(id)
            .filter(|id| id.starts_with(object.key_prefix()))
            .ok_or_else(|| RecordError::new("MALFORMED_ID", format!("malformed id {id}")))?;
        match self.table(object).records.get(&normalized) {
            Some(rec) if !rec.deleted => Ok(rec),
            Some(_) => Err(RecordError::new("ENTITY_IS_DELETED", "entity is deleted")),
            None => Err(RecordError::new(
                "INVALID_CROSS_REFERENCE_KEY",
                "invalid cross reference id",
            )),
        }
    }

    /// Updates a live record at `stamp`.
    pub(crate) fn update(
        &mut self,
        object: SfObject,
        id: &str,
        input: &Map<String, Value>,
        stamp: i64,
    ) -> Result<String, WriteError> {
        let current = self.live_or_error(object, id)?;
        let mut rec = Rec::clone(current);
        self.apply_fields(object, input, &mut rec.values, false)?;
        self.check_record(object, &rec.values, &rec.id)?;
        rec.modified_ms = stamp;
        let id = rec.id.clone();
        self.put(object, rec);
        Ok(id)
    }

    /// Deletes a live record at `stamp` (an account takes its contacts with it, as in
    /// Salesforce); returns its id.
    pub(crate) fn delete(
        &mut self,
        object: SfObject,
        id: &str,
        stamp: i64,
    ) -> Result<String, RecordError> {
        let id = self.live_or_error(object, id)?.id.clone();
        self.tombstone(object, &id, stamp);
        if object == SfObject::Account
            && let Some((account_field, _)) = SfObject::Contact.field("AccountId")
        {
            let children: Vec<String> = self
                .table(SfObject::Contact)
                .records
                .values()
                .filter(|rec| !rec.deleted && rec.stored_text(account_field) == Some(id.as_str()))
                .map(|rec| rec.id.clone())
                .collect();
            for child in children {
                self.tombstone(SfObject::Contact, &child, stamp);
            }
        }
        Ok(id)
    }

    fn tombstone(&mut self, object: SfObject, id: &str, stamp: i64) {
        let Some(current) = self.table(object).records.get(id) else {
            return;
        };
        let mut rec = Rec::clone(current);
        rec.deleted = true;
        rec.modified_ms = stamp;
        self.put(object, rec);
        if let Some(journal) = &mut self.journal {
            journal.push(Undo::Tombstone(object));
        } else {
            // Purging only outside journaled requests keeps their undo exact.
            self.table_mut(object)
                .purge_tombstones(stamp - TOMBSTONE_DAYS * crate::clock::DAY_MS);
        }
        self.table_mut(object)
            .tombstones
            .push_back((id.to_owned(), stamp));
    }

    /// Runs a query: the matching rows, ordered, offset and limited.
    pub(crate) fn run(&self, query: &Query, include_deleted: bool) -> Vec<Arc<Rec>> {
        let object = query.object;
        let mut rows: Vec<Arc<Rec>> = self
            .table(object)
            .records
            .values()
            .filter(|rec| include_deleted || !rec.deleted)
            .filter(|rec| query.filter.as_ref().is_none_or(|f| f.matches(object, rec)))
            .cloned()
            .collect();
        if !query.order.is_empty() {
            rows.sort_by(|a, b| super::soql::order(object, &query.order, a, b));
        }
        let rows = rows.into_iter().skip(query.offset);
        match query.limit {
            Some(limit) => rows.take(limit).collect(),
            None => rows.collect(),
        }
    }
}

/// Every org's records, the query-locator counter and the malformed-response knob.
#[derive(Debug, Default)]
pub(crate) struct SfStore {
    orgs: HashMap<String, Org>,
    api_limits: HashMap<String, u64>,
    next_locator: u64,
    malformed: HashMap<String, u32>,
    /// Each org's Knowledge settings and counters (`knowledge.rs`).
    pub(crate) knowledge: HashMap<String, super::knowledge::KbOrg>,
    /// Bulk API 2.0 jobs, usage and limits (`bulk.rs`).
    pub(crate) bulk: super::bulk::Bulk,
    /// Outbound message requests sent ([`super::outbound`]).
    pub(crate) outbound_out: super::outbound::Outbox,
}

impl SfStore {
    /// Every org, by id.
    pub(crate) fn orgs_mut(&mut self) -> impl Iterator<Item = (&String, &mut Org)> {
        self.orgs.iter_mut()
    }

    pub(crate) fn org(&mut self, org: &str) -> &mut Org {
        self.orgs.entry(org.to_owned()).or_default()
    }

    pub(crate) fn org_ref(&self, org: &str) -> Option<&Org> {
        self.orgs.get(org)
    }

    /// The org's daily API allowance.
    pub(crate) fn api_limit(&self, org: &str) -> u64 {
        self.api_limits
            .get(org)
            .copied()
            .unwrap_or(DEFAULT_API_LIMIT)
    }

    /// Stores a cursor and returns its query id (`01g…`, 18 characters).
    pub(crate) fn open_cursor(&mut self, org: &str, cursor: Cursor) -> String {
        self.next_locator += 1;
        let id = make_id("01g", 2_000_000_000 + self.next_locator);
        let org = self.org(org);
        org.cursors
            .retain(|(_, c)| c.last_used.elapsed() < LOCATOR_IDLE);
        while org.cursors.len() >= MAX_LOCATORS {
            org.cursors.pop_front();
        }
        org.cursors.push_back((id.clone(), cursor));
        id
    }

    /// The live cursor `id` of `org`, marked as just used.
    pub(crate) fn cursor(&mut self, org: &str, id: &str) -> Option<&Cursor> {
        let org = self.orgs.get_mut(org)?;
        let index = org.cursors.iter().position(|(qid, _)| qid == id)?;
        let (qid, mut cursor) = org.cursors.remove(index)?;
        if cursor.last_used.elapsed() >= LOCATOR_IDLE {
            return None;
        }
        cursor.last_used = Instant::now();
        org.cursors.push_back((qid, cursor));
        org.cursors.back().map(|(_, c)| c)
    }

    /// Takes one pending malformed answer of `route`.
    pub(crate) fn take_malformed(&mut self, route: &str) -> bool {
        match self.malformed.get_mut(route) {
            Some(n) if *n > 0 => {
                *n -= 1;
                if *n == 0 {
                    self.malformed.remove(route);
                }
                true
            }
            _ => false,
        }
    }
}

/// The fields seeding fills, in the order [`seed_values`] yields their values.
fn seed_fields(object: SfObject) -> &'static [&'static str] {
    match object {
        SfObject::Contact => &[
            "FirstName",
            "LastName",
            "Email",
            "Phone",
            "MobilePhone",
            "Title",
            "Department",
            "MailingCity",
            "MailingCountry",
            "LeadSource",
            "Birthdate",
            "AccountId",
        ],
        SfObject::Opportunity => &["Name", "Amount", "CloseDate", "StageName"],
        SfObject::Account => &[
            "Name",
            "Website",
            "Phone",
            "Industry",
            "BillingCity",
            "BillingCountry",
            "NumberOfEmployees",
            "AnnualRevenue",
            "Description",
        ],
        SfObject::Knowledge => &[],
    }
}

/// Values of the `n`th seeded record, aligned with [`seed_fields`] (`accounts`: live
/// account ids to spread contacts over).
fn seed_values(object: SfObject, n: u64, accounts: &[String]) -> Vec<Value> {
    match object {
        SfObject::Contact => {
            let p = sample::person(n);
            let sources = ["Web", "Phone Inquiry", "Partner Referral", "Other"];
            let account = match accounts.len() {
                0 => Value::Null,
                len => Value::from(accounts[usize::try_from(n).unwrap_or(0) % len].clone()),
            };
            vec![
                Value::from(p.first),
                Value::from(p.last),
                Value::from(p.email),
                Value::from(p.phone),
                if n.is_multiple_of(3) {
                    Value::Null
                } else {
                    Value::from(p.mobile)
                },
                Value::from(p.title),
                Value::from(p.department),
                Value::from(p.city),
                Value::from(p.country),
                Value::from(sources[p.stage % 4]),
                Value::from(p.birthdate),
                account,
            ]
        }
        SfObject::Account => {
            let c = sample::company(n);
            let industry = match c.industry {
                sample::Industry::Technology => "Technology",
                sample::Industry::Finance => "Finance",
                sample::Industry::Retail => "Retail",
                sample::Industry::Healthcare => "Healthcare",
                sample::Industry::Other => "Other",
            };
            vec![
                Value::from(c.name),
                Value::from(format!("https://www.{}", c.domain)),
                Value::from(c.phone),
                Value::from(industry),
                Value::from(c.city),
                Value::from(c.country),
                Value::from(c.employees),
                json!(c.revenue as f64),
                Value::from(c.description),
            ]
        }
        SfObject::Opportunity => vec![
            Value::from(format!("Opportunity {n}")),
            json!((1_000 + (n % 97) * 250) as f64),
            Value::from(format!("2027-{:02}-15", 1 + n % 12)),
            Value::from(super::schema::STAGES[usize::try_from(n).unwrap_or(0) % 8]),
        ],
        SfObject::Knowledge => Vec::new(),
    }
}

impl SandboxState {
    /// Adds `n` records of `object` to Salesforce org `org` (the default OAuth user's org
    /// is [`super::DEFAULT_SALESFORCE_ORG`]) and returns their ids in creation (= `Id`)
    /// order. Values are realistic and deterministic: contacts get first and last names,
    /// a unique email, phones, title, department, mailing city and country, lead source
    /// and birthdate, and are spread over the org's existing accounts (`AccountId`);
    /// accounts get a unique name, website, phone, industry, billing city and country,
    /// employees, revenue and description. `Conduit_Id__c` stays empty. All records of
    /// one call share one modification stamp (later than any earlier write), as one
    /// Salesforce transaction would.
    pub fn seed_salesforce(&self, org: &str, object: SfObject, n: usize) -> Vec<String> {
        if object == SfObject::Knowledge {
            // Article versions have a lifecycle of their own: seed `n` articles and
            // answer their Online versions' ids.
            let seed = super::knowledge::KnowledgeSeed {
                articles: n,
                ..super::knowledge::KnowledgeSeed::default()
            };
            return self.seed_knowledge(org, seed).online_version_ids;
        }
        let mut store = self.sf_store();
        let org = store.org(org);
        let stamp = org.stamp();
        let accounts: Vec<String> = if object == SfObject::Contact {
            org.table(SfObject::Account)
                .records
                .values()
                .filter(|r| !r.deleted)
                .map(|r| r.id.clone())
                .collect()
        } else {
            Vec::new()
        };
        let slots: Vec<usize> = seed_fields(object)
            .iter()
            .filter_map(|name| object.field(name).map(|(index, _)| index))
            .collect();
        let width = object.fields().len();
        let table = org.table_mut(object);
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            let seq = table.next_seq;
            let id = table.next_id(object);
            let mut values = vec![Value::Null; width];
            for (slot, value) in slots.iter().zip(seed_values(object, seq, &accounts)) {
                values[*slot] = value;
            }
            let rec = Rec {
                id: id.clone(),
                values,
                created_ms: stamp,
                modified_ms: stamp,
                deleted: false,
            };
            table.records.insert(id.clone(), Arc::new(rec));
            ids.push(id);
        }
        ids
    }

    /// Every live (not deleted) record of `object` in `org`, in `Id` order.
    pub fn salesforce_records(&self, org: &str, object: SfObject) -> Vec<SfRecord> {
        let store = self.sf_store();
        store
            .org_ref(org)
            .map(|o| {
                o.table(object)
                    .records
                    .values()
                    .filter(|r| !r.deleted)
                    .map(|r| r.view(object))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// One record by 15- or 18-character id, deleted ones too (`is_deleted`).
    pub fn salesforce_record(&self, org: &str, object: SfObject, id: &str) -> Option<SfRecord> {
        let id = schema::normalize_id(id)?;
        let store = self.sf_store();
        store
            .org_ref(org)?
            .table(object)
            .records
            .get(&id)
            .map(|r| r.view(object))
    }

    /// Changes a live record as a Salesforce user would in the UI: sets `fields` (API
    /// names, any case; null or "" clears) and moves `LastModifiedDate` and
    /// `SystemModstamp` past every earlier stamp of the org. False, changing nothing,
    /// when there is no such live record or a field is unknown, read-only or invalid.
    pub fn update_salesforce_record(
        &self,
        org: &str,
        object: SfObject,
        id: &str,
        fields: &Map<String, Value>,
    ) -> bool {
        let mut store = self.sf_store();
        let org = store.org(org);
        let stamp = org.stamp();
        org.update(object, id, fields, stamp).is_ok()
    }

    /// Deletes a live record as a Salesforce user would (to the recycle bin): it leaves
    /// `query` results, shows in `queryAll` with `IsDeleted` true and in
    /// `/sobjects/{S}/deleted`. Deleting an account also deletes its contacts. False
    /// when there is no such live record.
    pub fn delete_salesforce_record(&self, org: &str, object: SfObject, id: &str) -> bool {
        let mut store = self.sf_store();
        let org = store.org(org);
        let stamp = org.stamp();
        org.delete(object, id, stamp).is_ok()
    }

    /// Sets `org`'s daily API allowance (default [`DEFAULT_API_LIMIT`]); requests past it
    /// get 403 `REQUEST_LIMIT_EXCEEDED`. Requests already counted stay counted.
    pub fn set_salesforce_api_limit(&self, org: &str, max: u64) {
        self.sf_store().api_limits.insert(org.to_owned(), max);
    }

    /// How much of `org`'s daily API allowance is used.
    pub fn salesforce_api_usage(&self, org: &str) -> SfApiUsage {
        let max = self.sf_store().api_limit(org);
        super::api_usage(self, org, max)
    }

    /// Makes the next `count` responses of Salesforce data route `route` (e.g.
    /// `salesforce.query`) carry a truncated, unparseable JSON body with their usual
    /// status.
    pub fn malform_salesforce_responses(&self, route: &str, count: u32) {
        let mut store = self.sf_store();
        if count == 0 {
            store.malformed.remove(route);
        } else {
            store.malformed.insert(route.to_owned(), count);
        }
    }

    /// Closes every open query locator of every org, as if they had expired: the next
    /// `nextRecordsUrl` request answers 400 `INVALID_QUERY_LOCATOR`.
    pub fn expire_salesforce_query_locators(&self) {
        let mut store = self.sf_store();
        for org in store.orgs.values_mut() {
            org.cursors.clear();
        }
    }

    /// The Salesforce org id of the user behind a live access token (the token's grant),
    /// e.g. [`super::DEFAULT_SALESFORCE_ORG`] for the default user; `None` for unknown,
    /// expired or revoked tokens.
    pub fn salesforce_org_of_token(&self, access_token: &str) -> Option<String> {
        match crate::oauth::bearer_access(
            self,
            crate::oauth::OAuthProvider::Salesforce,
            Some(access_token),
        ) {
            crate::oauth::AccessCheck::Granted(grant) => Some(grant.user.org_id.clone()),
            _ => None,
        }
    }
}

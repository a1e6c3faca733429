//! HubSpot CRM stand-in: contacts, companies and deals kept in memory per portal (the
//! portal of the authenticating token), served at HubSpot's `/crm/v3/objects/…` and
//! `/crm/v3/properties/…` paths on `api.hubapi.com` (deal associations: see
//! [`super::hubspot_associations`]).
//!
//! Deals: a create needs `dealname` and `dealstage` (HubSpot's documented required
//! properties; `pipeline` defaults to `default`), and `dealstage` must be a stage of the
//! deal's pipeline, on create and update (`INVALID_OPTION`, as for other enumerations).
//! Each portal has two pipelines: `default` (HubSpot's "Sales Pipeline" with its seven
//! stock stages) and `75e28846` ("Renewals", three stages with numeric ids, as custom
//! stages have). Not reproduced: pipeline and stage management (`/crm/v3/pipelines`),
//! stage probabilities and `hs_is_closed*` calculations, currency settings (any
//! `deal_currency_code` of the three offered is taken).
//!
//! Records have a numeric string `id` (increasing per portal and object type),
//! `properties` (every value a string), `createdAt`, `updatedAt` (RFC 3339 with
//! milliseconds) and `archived`. The properties `hs_object_id`, `createdate`,
//! `lastmodifieddate` and `hs_lastmodifieddate` are derived from the record and always
//! present on **both** object types (HubSpot itself uses `lastmodifieddate` on contacts and
//! `hs_lastmodifieddate` on companies); both equal `updatedAt`.
//!
//! Property definitions are real: each portal has the built-in definitions plus the
//! custom ones created through `POST /crm/v3/properties/{object}` (or
//! [`SandboxState::hubspot_define_property`]); writes naming an undefined property fail
//! with `PROPERTY_DOESNT_EXIST`, and `hasUniqueValue` properties (and contact `email`)
//! are kept unique among live records through a per-table index.
//!
//! Every CRM request authenticates and counts against the token's rate-limit budget
//! first (so a burst meets HubSpot's 429; search also has its own 4-per-second limit),
//! then runs. Errors use HubSpot's body
//! `{"status":"error","message","correlationId","category"}`.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};

use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::hubspot::{self, authorize, authorize_search, error_body, with_rate_headers};
use super::{ProviderRequest, sample};
use crate::clock::{civil_from_days, days_from_civil, now_ms};
use crate::state::SandboxState;
use crate::wire;

/// Route name of `GET /crm/v3/objects/{object}`.
pub const CRM_LIST: &str = "hubspot.crm_list";
/// Route name of `GET /crm/v3/objects/{object}/{id}`.
pub const CRM_GET: &str = "hubspot.crm_get";
/// Route name of `POST /crm/v3/objects/{object}`.
pub const CRM_CREATE: &str = "hubspot.crm_create";
/// Route name of `PATCH /crm/v3/objects/{object}/{id}`.
pub const CRM_UPDATE: &str = "hubspot.crm_update";
/// Route name of `DELETE /crm/v3/objects/{object}/{id}`.
pub const CRM_ARCHIVE: &str = "hubspot.crm_archive";
/// Route name of `POST /crm/v3/objects/{object}/batch/read`.
pub const CRM_BATCH_READ: &str = "hubspot.crm_batch_read";
/// Route name of `POST /crm/v3/objects/{object}/batch/create`.
pub const CRM_BATCH_CREATE: &str = "hubspot.crm_batch_create";
/// Route name of `POST /crm/v3/objects/{object}/batch/update`.
pub const CRM_BATCH_UPDATE: &str = "hubspot.crm_batch_update";
/// Route name of `POST /crm/v3/objects/{object}/batch/archive`.
pub const CRM_BATCH_ARCHIVE: &str = "hubspot.crm_batch_archive";
/// Route name of `POST /crm/v3/objects/{object}/search`.
pub const CRM_SEARCH: &str = "hubspot.crm_search";
/// Route name of `GET /crm/v3/properties/{object}`.
pub const CRM_PROPERTIES: &str = "hubspot.crm_properties";
/// Route name of `GET /crm/v3/properties/{object}/{propertyName}`.
pub const CRM_PROPERTY_GET: &str = "hubspot.crm_property_get";
/// Route name of `POST /crm/v3/properties/{object}`.
pub const CRM_PROPERTY_CREATE: &str = "hubspot.crm_property_create";

/// Every CRM route name.
pub const ROUTES: [&str; 13] = [
    CRM_LIST,
    CRM_GET,
    CRM_CREATE,
    CRM_UPDATE,
    CRM_ARCHIVE,
    CRM_BATCH_READ,
    CRM_BATCH_CREATE,
    CRM_BATCH_UPDATE,
    CRM_BATCH_ARCHIVE,
    CRM_SEARCH,
    CRM_PROPERTIES,
    CRM_PROPERTY_GET,
    CRM_PROPERTY_CREATE,
];

/// Most inputs of one batch request.
pub const BATCH_LIMIT: usize = 100;
/// Largest page of the list endpoint.
pub const LIST_LIMIT: usize = 100;
/// Largest page of the search endpoint.
pub const SEARCH_LIMIT: usize = 200;
/// Search never pages past this many results.
pub const SEARCH_CAP: usize = 10_000;
const DEFAULT_LIMIT: usize = 10;
const MAX_FILTER_GROUPS: usize = 5;

/// A CRM object type the stand-in keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CrmObject {
    /// `contacts` (object type id `0-1`).
    Contacts,
    /// `companies` (object type id `0-2`).
    Companies,
    /// `deals` (object type id `0-3`).
    Deals,
}

impl CrmObject {
    /// The object type from its path name or id (`contacts`, `0-1`, `companies`, `0-2`).
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "contacts" | "contact" | "0-1" => Some(CrmObject::Contacts),
            "companies" | "company" | "0-2" => Some(CrmObject::Companies),
            "deals" | "deal" | "0-3" => Some(CrmObject::Deals),
            _ => None,
        }
    }

    /// The plural path name.
    pub fn as_str(self) -> &'static str {
        match self {
            CrmObject::Contacts => "contacts",
            CrmObject::Companies => "companies",
            CrmObject::Deals => "deals",
        }
    }

    /// The singular noun, for messages.
    fn singular(self) -> &'static str {
        match self {
            CrmObject::Contacts => "contact",
            CrmObject::Companies => "company",
            CrmObject::Deals => "deal",
        }
    }

    /// The property group of its main built-in properties.
    fn group_name(self) -> &'static str {
        match self {
            CrmObject::Contacts => "contactinformation",
            CrmObject::Companies => "companyinformation",
            CrmObject::Deals => "dealinformation",
        }
    }

    /// Properties returned when a request names none.
    fn default_properties(self) -> &'static [&'static str] {
        match self {
            CrmObject::Contacts => &[
                "createdate",
                "email",
                "firstname",
                "hs_object_id",
                "lastmodifieddate",
                "lastname",
            ],
            CrmObject::Companies => &[
                "createdate",
                "domain",
                "hs_lastmodifieddate",
                "hs_object_id",
                "name",
            ],
            CrmObject::Deals => &[
                "amount",
                "closedate",
                "createdate",
                "dealname",
                "dealstage",
                "hs_lastmodifieddate",
                "hs_object_id",
                "pipeline",
            ],
        }
    }
}

/// A CRM record as the sandbox holds it, for assertions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CrmRecord {
    /// Numeric id as a string.
    pub id: String,
    /// Every set property, plus the derived `hs_object_id`, `createdate`,
    /// `lastmodifieddate` and `hs_lastmodifieddate`.
    pub properties: BTreeMap<String, String>,
    /// RFC 3339 with milliseconds.
    pub created_at: String,
    /// RFC 3339 with milliseconds.
    pub updated_at: String,
    /// Whether the record is archived (deleted).
    pub archived: bool,
}

/// A stored property name or value: borrowed for the built-in names and the sample
/// values of seeded records (so seeding 100,000 records stays cheap), owned otherwise.
type Text = Cow<'static, str>;

/// A record's set properties, sorted by name: a small vector map, far cheaper to build
/// than a `BTreeMap` for the handful of properties a record has.
#[derive(Clone, Debug, Default)]
struct Props(Vec<(Text, Text)>);

impl Props {
    /// From pairs already sorted by name, without duplicates.
    fn from_sorted(pairs: Vec<(Text, Text)>) -> Self {
        debug_assert!(pairs.windows(2).all(|w| w[0].0 < w[1].0));
        Self(pairs)
    }

    fn position(&self, name: &str) -> Result<usize, usize> {
        self.0.binary_search_by(|(k, _)| k.as_ref().cmp(name))
    }

    fn get(&self, name: &str) -> Option<&str> {
        let index = self.position(name).ok()?;
        self.0.get(index).map(|(_, v)| v.as_ref())
    }

    fn insert(&mut self, name: &str, value: String) {
        match self.position(name) {
            Ok(index) => self.0[index].1 = Cow::Owned(value),
            Err(index) => self
                .0
                .insert(index, (Cow::Owned(name.to_owned()), Cow::Owned(value))),
        }
    }

    fn remove(&mut self, name: &str) {
        if let Ok(index) = self.position(name) {
            self.0.remove(index);
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_ref(), v.as_ref()))
    }
}

/// One stored record.
#[derive(Clone, Debug)]
struct Record {
    id: u64,
    properties: Props,
    created_ms: i64,
    updated_ms: i64,
    archived: bool,
}

const DATE_PROPERTIES: [&str; 3] = ["createdate", "lastmodifieddate", "hs_lastmodifieddate"];

impl Record {
    /// A property's value, derived ones included.
    fn get(&self, name: &str) -> Option<String> {
        match name {
            "hs_object_id" => Some(self.id.to_string()),
            "createdate" => Some(rfc3339(self.created_ms)),
            "lastmodifieddate" | "hs_lastmodifieddate" => Some(rfc3339(self.updated_ms)),
            _ => self.properties.get(name).map(str::to_owned),
        }
    }

    /// A date property in epoch milliseconds.
    fn time_of(&self, name: &str) -> Option<i64> {
        match name {
            "createdate" => Some(self.created_ms),
            "lastmodifieddate" | "hs_lastmodifieddate" => Some(self.updated_ms),
            _ => self.properties.get(name).and_then(parse_time),
        }
    }

    fn all_properties(&self) -> BTreeMap<String, String> {
        let mut properties: BTreeMap<String, String> = self
            .properties
            .iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        for name in [
            "hs_object_id",
            "createdate",
            "lastmodifieddate",
            "hs_lastmodifieddate",
        ] {
            if let Some(value) = self.get(name) {
                properties.insert(name.to_owned(), value);
            }
        }
        properties
    }

    fn view(&self) -> CrmRecord {
        CrmRecord {
            id: self.id.to_string(),
            properties: self.all_properties(),
            created_at: rfc3339(self.created_ms),
            updated_at: rfc3339(self.updated_ms),
            archived: self.archived,
        }
    }

    /// HubSpot's `SimplePublicObject`: `names` selects properties (`None`: all set ones).
    fn to_json(&self, names: Option<&[String]>) -> Value {
        let properties: Map<String, Value> = match names {
            Some(names) => names
                .iter()
                .map(|name| {
                    (
                        name.clone(),
                        self.get(name).map_or(Value::Null, Value::String),
                    )
                })
                .collect(),
            None => self
                .all_properties()
                .into_iter()
                .map(|(k, v)| (k, Value::String(v)))
                .collect(),
        };
        let mut body = json!({
            "id": self.id.to_string(),
            "properties": properties,
            "createdAt": rfc3339(self.created_ms),
            "updatedAt": rfc3339(self.updated_ms),
            "archived": self.archived,
        });
        if self.archived {
            body["archivedAt"] = json!(rfc3339(self.updated_ms));
        }
        body
    }

    /// Applies input properties: strings, numbers and booleans as text; null or "" clears.
    fn apply(&mut self, input: &Map<String, Value>, now: i64) {
        for (name, value) in input {
            if DATE_PROPERTIES.contains(&name.as_str()) || name == "hs_object_id" {
                continue; // Read-only.
            }
            match value_text(value) {
                Some(text) if !text.is_empty() => {
                    self.properties.insert(name, text);
                }
                _ => {
                    self.properties.remove(name.as_str());
                }
            }
        }
        self.updated_ms = now.max(self.updated_ms);
    }
}

fn value_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Records of one object type in one portal.
#[derive(Debug, Default)]
struct Table {
    records: BTreeMap<u64, Record>,
    next_id: u64,
    /// Changes not yet taken by the webhook deliveries (`hubspot_webhooks`).
    changes: Vec<Change>,
    /// The next changes are a user's in HubSpot's UI (`CRM_UI`), not the API's.
    by_ui: bool,
    /// Live records' values of unique properties (contact `email`, custom properties
    /// with `hasUniqueValue`): property → trimmed, lower-cased value → record id.
    unique: HashMap<String, HashMap<String, u64>>,
}

/// What happened to a record, for the webhook deliveries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ChangeKind {
    /// Created.
    Creation,
    /// These properties' values changed.
    PropertyChange(Vec<String>),
    /// Archived.
    Deletion,
    /// An association of this (deal) record to `to` record `to_id` was added or
    /// removed.
    Association {
        /// The associated object.
        to: CrmObject,
        /// The associated record.
        to_id: u64,
        /// Removed rather than added.
        removed: bool,
    },
}

/// One change of a record.
#[derive(Clone, Debug)]
pub(crate) struct Change {
    pub(crate) id: u64,
    pub(crate) kind: ChangeKind,
    pub(crate) at_ms: i64,
    /// `API` or `CRM_UI`.
    pub(crate) source: &'static str,
}

/// Changes kept for deliveries at most (older ones are dropped, as if no app were
/// subscribed when they happened).
const CHANGES_KEPT: usize = 200_000;

/// A unique property's value as the index keys it; `None` when empty.
fn unique_key(value: &str) -> Option<String> {
    let key = value.trim().to_lowercase();
    (!key.is_empty()).then_some(key)
}

impl Table {
    fn note(&mut self, id: u64, kind: ChangeKind, at_ms: i64) {
        if self.changes.len() >= CHANGES_KEPT {
            self.changes.drain(..CHANGES_KEPT / 2);
        }
        let source = if self.by_ui { "CRM_UI" } else { "API" };
        self.changes.push(Change {
            id,
            kind,
            at_ms,
            source,
        });
    }

    /// Starts indexing `name` (no-op when already indexed).
    fn index_property(&mut self, name: &str) {
        if self.unique.contains_key(name) {
            return;
        }
        let index: HashMap<String, u64> = self
            .records
            .values()
            .filter(|r| !r.archived)
            .filter_map(|r| Some((unique_key(r.properties.get(name)?)?, r.id)))
            .collect();
        self.unique.insert(name.to_owned(), index);
    }

    fn unindex(&mut self, id: u64) {
        let Some(record) = self.records.get(&id) else {
            return;
        };
        for (name, index) in &mut self.unique {
            if let Some(key) = record.properties.get(name).and_then(unique_key)
                && index.get(&key) == Some(&id)
            {
                index.remove(&key);
            }
        }
    }

    fn reindex(&mut self, id: u64) {
        let Some(record) = self.records.get(&id).filter(|r| !r.archived) else {
            return;
        };
        for (name, index) in &mut self.unique {
            if let Some(key) = record.properties.get(name).and_then(unique_key) {
                index.entry(key).or_insert(id);
            }
        }
    }

    /// The first unique property of `input` whose value another live record (not
    /// `except`) holds: `(property, value, owner id)`.
    fn conflict(&self, input: &Map<String, Value>, except: u64) -> Option<(String, String, u64)> {
        self.unique.iter().find_map(|(name, index)| {
            let value = input.get(name).and_then(value_text)?;
            let owner = *index.get(&unique_key(&value)?)?;
            (owner != except).then(|| (name.clone(), value, owner))
        })
    }

    /// Adds a record; returns its id.
    fn insert(&mut self, properties: Props, now: i64) -> u64 {
        if self.next_id == 0 {
            self.next_id = 1001;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.records.insert(
            id,
            Record {
                id,
                properties,
                created_ms: now,
                updated_ms: now,
                archived: false,
            },
        );
        self.reindex(id);
        self.note(id, ChangeKind::Creation, now);
        id
    }

    /// Applies input properties to a live record; `None` when there is none.
    fn set(&mut self, id: u64, input: &Map<String, Value>, now: i64) -> Option<&Record> {
        let before = self
            .records
            .get(&id)
            .filter(|r| !r.archived)?
            .properties
            .clone();
        self.unindex(id);
        if let Some(record) = self.records.get_mut(&id) {
            record.apply(input, now);
        }
        self.reindex(id);
        let changed: Vec<String> = input
            .keys()
            .filter(|k| {
                self.records
                    .get(&id)
                    .is_some_and(|r| r.properties.get(k.as_str()) != before.get(k.as_str()))
            })
            .cloned()
            .collect();
        if !changed.is_empty() {
            self.note(id, ChangeKind::PropertyChange(changed), now);
        }
        self.records.get(&id)
    }

    /// Archives a live record; false when there is none.
    fn archive(&mut self, id: u64, now: i64) -> bool {
        if self.records.get(&id).is_none_or(|r| r.archived) {
            return false;
        }
        self.unindex(id);
        if let Some(record) = self.records.get_mut(&id) {
            record.archived = true;
            record.updated_ms = now.max(record.updated_ms);
        }
        self.note(id, ChangeKind::Deletion, now);
        true
    }

    fn live(&self, id: &str) -> Option<&Record> {
        let id: u64 = id.trim().parse().ok()?;
        self.records.get(&id).filter(|r| !r.archived)
    }
}

/// A custom property created through the API or [`SandboxState::hubspot_define_property`].
#[derive(Clone, Debug)]
struct CustomProperty {
    name: String,
    label: String,
    kind: String,
    field_type: String,
    group: String,
    description: String,
    unique: bool,
    /// `options` as given, for enumeration properties.
    options: Vec<Value>,
    created_at: String,
}

/// All CRM records, custom property definitions and the malformed-response knob.
#[derive(Debug, Default)]
pub(crate) struct CrmStore {
    tables: HashMap<(u64, CrmObject), Table>,
    custom: HashMap<(u64, CrmObject), Vec<CustomProperty>>,
    malformed: HashMap<String, u32>,
    /// Deals' associations (see [`super::hubspot_associations`]).
    pub(crate) associations: super::hubspot_associations::Associations,
}

impl CrmStore {
    /// The table of `object` in `portal`, indexing every unique property.
    fn table(&mut self, portal: u64, object: CrmObject) -> &mut Table {
        let table = self.tables.entry((portal, object)).or_default();
        if object == CrmObject::Contacts {
            table.index_property("email");
        }
        for custom in self.custom.get(&(portal, object)).into_iter().flatten() {
            if custom.unique {
                table.index_property(&custom.name);
            }
        }
        table
    }

    /// Takes every table's changes since the last call: (portal, object, change).
    pub(crate) fn take_changes(&mut self) -> Vec<(u64, CrmObject, Change)> {
        let mut out = Vec::new();
        for ((portal, object), table) in &mut self.tables {
            out.extend(table.changes.drain(..).map(|c| (*portal, *object, c)));
        }
        out.sort_by_key(|(_, _, c)| c.at_ms);
        out
    }

    /// Whether record `id` of `object` in `portal` exists and is not archived.
    pub(crate) fn is_live(&self, portal: u64, object: CrmObject, id: u64) -> bool {
        self.tables
            .get(&(portal, object))
            .and_then(|t| t.records.get(&id))
            .is_some_and(|r| !r.archived)
    }

    /// A deal's association to `to` record `to_id` was added (or `removed`): its
    /// `hs_lastmodifieddate` moves (HubSpot recalculates `num_associated_contacts` and
    /// the like), and both changes are noted for the webhook deliveries.
    pub(crate) fn touch(
        &mut self,
        portal: u64,
        deal: u64,
        to: CrmObject,
        to_id: u64,
        removed: bool,
    ) {
        let now = now_ms();
        let table = self.table(portal, CrmObject::Deals);
        if let Some(record) = table.records.get_mut(&deal).filter(|r| !r.archived) {
            record.updated_ms = now.max(record.updated_ms + 1);
            let at = record.updated_ms;
            table.note(
                deal,
                ChangeKind::PropertyChange(vec!["num_associated_contacts".into()]),
                at,
            );
            table.note(deal, ChangeKind::Association { to, to_id, removed }, at);
        }
    }

    fn customs(&self, portal: u64, object: CrmObject) -> &[CustomProperty] {
        self.custom
            .get(&(portal, object))
            .map_or(&[], Vec::as_slice)
    }

    /// Whether `name` is a property of `object` in `portal` (built-in, derived or custom).
    fn is_defined(&self, portal: u64, object: CrmObject, name: &str) -> bool {
        DERIVED_PROPERTIES.contains(&name)
            || builtin_properties(object).iter().any(|def| def.0 == name)
            || self.customs(portal, object).iter().any(|c| c.name == name)
    }

    /// Takes one pending malformed answer of `route`.
    fn take_malformed(&mut self, route: &str) -> bool {
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

/// Sample properties of the `n`th seeded record (a realistic value for every built-in
/// writable property; contact emails unique), in name order.
fn seed_properties(object: CrmObject, n: u64) -> Props {
    let pairs: Vec<(&'static str, Text)> = match object {
        CrmObject::Contacts => {
            let p = sample::person(n);
            vec![
                ("city", p.city.into()),
                ("company", p.company.into()),
                ("country", p.country.into()),
                ("date_of_birth", p.birthdate.into()),
                ("email", p.email.into()),
                ("firstname", p.first.into()),
                ("jobtitle", p.title.into()),
                ("lastname", p.last.into()),
                (
                    "lifecyclestage",
                    LIFECYCLE_STAGES[[1, 2, 4, 5][p.stage % 4]].0.into(),
                ),
                ("mobilephone", p.mobile.into()),
                ("phone", p.phone.into()),
                ("website", p.website.into()),
            ]
        }
        CrmObject::Companies => {
            let c = sample::company(n);
            vec![
                ("annualrevenue", c.revenue.to_string().into()),
                ("city", c.city.into()),
                ("country", c.country.into()),
                ("description", c.description.into()),
                ("domain", c.domain.clone().into()),
                ("industry", hubspot_industry(c.industry).into()),
                ("name", c.name.into()),
                ("numberofemployees", c.employees.to_string().into()),
                ("phone", c.phone.into()),
                ("website", format!("https://www.{}", c.domain).into()),
            ]
        }
        CrmObject::Deals => {
            let (_, _, stages) = PIPELINES[0];
            vec![
                ("amount", (1_000 + (n % 97) * 250).to_string().into()),
                ("closedate", format!("2027-{:02}-15", 1 + n % 12).into()),
                ("dealname", format!("Deal {n}").into()),
                ("dealstage", stages[(n as usize) % stages.len()].0.into()),
                ("pipeline", PIPELINES[0].0.into()),
            ]
        }
    };
    Props::from_sorted(
        pairs
            .into_iter()
            .map(|(name, value)| (Cow::Borrowed(name), value))
            .collect(),
    )
}

fn hubspot_industry(industry: sample::Industry) -> &'static str {
    match industry {
        sample::Industry::Technology => "COMPUTER_SOFTWARE",
        sample::Industry::Finance => "FINANCIAL_SERVICES",
        sample::Industry::Retail => "RETAIL",
        sample::Industry::Healthcare => "HOSPITAL_HEALTH_CARE",
        sample::Industry::Other => "BUSINESS_SUPPLIES_AND_EQUIPMENT",
    }
}

impl SandboxState {
    /// Adds `n` contacts or companies to HubSpot portal `portal` (62515 is the default
    /// private app's) and returns their ids in order. Records get a realistic value for
    /// every built-in writable property (contacts: `email` (unique), `firstname`,
    /// `lastname`, `phone`, `mobilephone`, `jobtitle`, `company`, `website`, `city`,
    /// `country`, `lifecyclestage`, `date_of_birth`; companies: `name`, `domain`,
    /// `website`, `phone`, `industry`, `city`, `country`, `numberofemployees`,
    /// `annualrevenue`, `description`). Deterministic: the same portal state seeds the
    /// same values.
    pub fn seed_hubspot(&self, portal: u64, object: CrmObject, n: usize) -> Vec<String> {
        let now = now_ms();
        let mut store = self.crm_store();
        let table = store.table(portal, object);
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            let next = table.next_id.max(1001);
            let id = table.insert(seed_properties(object, next), now);
            ids.push(id.to_string());
        }
        ids
    }

    /// Every record (archived ones too) of `object` in `portal`, by id.
    pub fn hubspot_records(&self, portal: u64, object: CrmObject) -> Vec<CrmRecord> {
        let store = self.crm_store();
        store
            .tables
            .get(&(portal, object))
            .map(|t| t.records.values().map(Record::view).collect())
            .unwrap_or_default()
    }

    /// One record (archived or not).
    pub fn hubspot_record(&self, portal: u64, object: CrmObject, id: &str) -> Option<CrmRecord> {
        let id: u64 = id.trim().parse().ok()?;
        let store = self.crm_store();
        store
            .tables
            .get(&(portal, object))?
            .records
            .get(&id)
            .map(Record::view)
    }

    /// Changes a live record as a HubSpot user would in the UI: sets the properties
    /// (empty clears) and bumps `updatedAt` (strictly, so a change is always visible to a
    /// `lastmodifieddate` filter). `None` when there is no such live record. Unlike the
    /// API, property names are not checked against the definitions, nor values for
    /// uniqueness.
    pub fn update_hubspot_record(
        &self,
        portal: u64,
        object: CrmObject,
        id: &str,
        properties: &BTreeMap<String, String>,
    ) -> Option<CrmRecord> {
        let mut store = self.crm_store();
        let table = store.table(portal, object);
        let record = table.live(id)?;
        let (id, now) = (record.id, now_ms().max(record.updated_ms + 1));
        let input: Map<String, Value> = properties
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        table.by_ui = true;
        let view = table.set(id, &input, now).map(Record::view);
        table.by_ui = false;
        view
    }

    /// Archives a live record as a HubSpot user would; false when there is none.
    pub fn archive_hubspot_record(&self, portal: u64, object: CrmObject, id: &str) -> bool {
        let mut store = self.crm_store();
        let table = store.table(portal, object);
        match table.live(id) {
            Some(record) => {
                let (id, now) = (record.id, now_ms().max(record.updated_ms + 1));
                table.by_ui = true;
                let archived = table.archive(id, now);
                table.by_ui = false;
                archived
            }
            None => false,
        }
    }

    /// Defines a custom text property `name` on `object` in `portal` (as an admin would in
    /// HubSpot's settings), so writes may name it; `unique` makes it a `hasUniqueValue`
    /// property (a value held by another live record is a 409 `CONFLICT`). Returns false
    /// when a property of that name already exists (nothing changes).
    pub fn hubspot_define_property(
        &self,
        portal: u64,
        object: CrmObject,
        name: &str,
        unique: bool,
    ) -> bool {
        let property = CustomProperty {
            name: name.to_owned(),
            label: name.to_owned(),
            kind: "string".to_owned(),
            field_type: "text".to_owned(),
            group: object.group_name().to_owned(),
            description: String::new(),
            unique,
            options: Vec::new(),
            created_at: rfc3339(now_ms()),
        };
        self.crm_store().define(portal, object, property).is_ok()
    }

    /// Makes the next `count` responses of CRM route `route` (e.g. `hubspot.crm_list`)
    /// carry a truncated, unparseable JSON body with their usual status.
    pub fn malform_hubspot_responses(&self, route: &str, count: u32) {
        let mut store = self.crm_store();
        if count == 0 {
            store.malformed.remove(route);
        } else {
            store.malformed.insert(route.to_owned(), count);
        }
    }
}

/// A CRM route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrmRoute {
    /// `GET /crm/v3/objects/{object}`.
    List,
    /// `GET /crm/v3/objects/{object}/{id}`.
    Get,
    /// `POST /crm/v3/objects/{object}`.
    Create,
    /// `PATCH /crm/v3/objects/{object}/{id}`.
    Update,
    /// `DELETE /crm/v3/objects/{object}/{id}`.
    Archive,
    /// `POST /crm/v3/objects/{object}/batch/read`.
    BatchRead,
    /// `POST /crm/v3/objects/{object}/batch/create`.
    BatchCreate,
    /// `POST /crm/v3/objects/{object}/batch/update`.
    BatchUpdate,
    /// `POST /crm/v3/objects/{object}/batch/archive`.
    BatchArchive,
    /// `POST /crm/v3/objects/{object}/search`.
    Search,
    /// `GET /crm/v3/properties/{object}`.
    Properties,
    /// `GET /crm/v3/properties/{object}/{propertyName}`.
    PropertyGet,
    /// `POST /crm/v3/properties/{object}`.
    PropertyCreate,
}

impl CrmRoute {
    /// The route's counter name.
    pub fn name(self) -> &'static str {
        match self {
            CrmRoute::List => CRM_LIST,
            CrmRoute::Get => CRM_GET,
            CrmRoute::Create => CRM_CREATE,
            CrmRoute::Update => CRM_UPDATE,
            CrmRoute::Archive => CRM_ARCHIVE,
            CrmRoute::BatchRead => CRM_BATCH_READ,
            CrmRoute::BatchCreate => CRM_BATCH_CREATE,
            CrmRoute::BatchUpdate => CRM_BATCH_UPDATE,
            CrmRoute::BatchArchive => CRM_BATCH_ARCHIVE,
            CrmRoute::Search => CRM_SEARCH,
            CrmRoute::Properties => CRM_PROPERTIES,
            CrmRoute::PropertyGet => CRM_PROPERTY_GET,
            CrmRoute::PropertyCreate => CRM_PROPERTY_CREATE,
        }
    }

    /// The scopes of which a token needs one, per HubSpot's OpenAPI `security`: the
    /// object's read scope for reads and searches, its write scope for writes; reading
    /// property definitions takes the object's schema read scope or either object scope
    /// (the spec lists them as alternatives), creating one its schema write scope.
    pub fn required_scopes(self, object: CrmObject) -> Vec<String> {
        let object = object.as_str();
        match self {
            CrmRoute::List | CrmRoute::Get | CrmRoute::BatchRead | CrmRoute::Search => {
                vec![format!("crm.objects.{object}.read")]
            }
            CrmRoute::Create
            | CrmRoute::Update
            | CrmRoute::Archive
            | CrmRoute::BatchCreate
            | CrmRoute::BatchUpdate
            | CrmRoute::BatchArchive => vec![format!("crm.objects.{object}.write")],
            CrmRoute::Properties | CrmRoute::PropertyGet => vec![
                format!("crm.schemas.{object}.read"),
                format!("crm.objects.{object}.read"),
                format!("crm.objects.{object}.write"),
            ],
            CrmRoute::PropertyCreate => vec![format!("crm.schemas.{object}.write")],
        }
    }

    fn is_property_route(self) -> bool {
        matches!(
            self,
            CrmRoute::Properties | CrmRoute::PropertyGet | CrmRoute::PropertyCreate
        )
    }
}

/// The path segments after `/crm/v3/objects/` or `/crm/v3/properties/`.
fn segments<'a>(path: &'a str, prefix: &str) -> Option<Vec<&'a str>> {
    let rest = path.strip_prefix(prefix)?.trim_end_matches('/');
    let parts: Vec<&str> = rest.split('/').collect();
    parts.iter().all(|p| !p.is_empty()).then_some(parts)
}

/// Matches a CRM path (any object type; unknown types answer 404 in the handler).
pub(crate) fn route(method: &Method, path: &str) -> Option<CrmRoute> {
    if let Some(parts) = segments(path, "/crm/v3/properties/") {
        return match (method, parts.len()) {
            (&Method::GET, 1) => Some(CrmRoute::Properties),
            (&Method::POST, 1) => Some(CrmRoute::PropertyCreate),
            (&Method::GET, 2) => Some(CrmRoute::PropertyGet),
            _ => None,
        };
    }
    let parts = segments(path, "/crm/v3/objects/")?;
    match (method, parts.as_slice()) {
        (&Method::GET, [_]) => Some(CrmRoute::List),
        (&Method::POST, [_]) => Some(CrmRoute::Create),
        (&Method::POST, [_, "search"]) => Some(CrmRoute::Search),
        (&Method::POST, [_, "batch", "read"]) => Some(CrmRoute::BatchRead),
        (&Method::POST, [_, "batch", "create"]) => Some(CrmRoute::BatchCreate),
        (&Method::POST, [_, "batch", "update"]) => Some(CrmRoute::BatchUpdate),
        (&Method::POST, [_, "batch", "archive"]) => Some(CrmRoute::BatchArchive),
        (&Method::GET, [_, _]) => Some(CrmRoute::Get),
        (&Method::PATCH, [_, _]) => Some(CrmRoute::Update),
        (&Method::DELETE, [_, _]) => Some(CrmRoute::Archive),
        _ => None,
    }
}

/// A handler's answer before rendering: status and body (`None`: empty).
type Reply = (StatusCode, Option<Value>);

/// Serves a CRM route: authenticate and count against the budget, run, then add the
/// rate-limit headers (and malform the body when asked to).
pub(crate) fn handle(route: CrmRoute, state: &SandboxState, req: &ProviderRequest) -> Response {
    let authorized = if route == CrmRoute::Search {
        authorize_search(state, req)
    } else {
        authorize(state, req)
    };
    let authorized = match authorized {
        Ok(authorized) => authorized,
        Err(response) => return response,
    };
    let portal = authorized.principal.portal_id();
    let prefix = if route.is_property_route() {
        "/crm/v3/properties/"
    } else {
        "/crm/v3/objects/"
    };
    let parts = segments(&req.path, prefix).unwrap_or_default();
    let object_name = parts.first().copied().unwrap_or("");
    let reply = match CrmObject::parse(object_name) {
        None => Err(error(
            StatusCode::NOT_FOUND,
            &format!("Unable to infer object type from: {object_name}"),
            "OBJECT_NOT_FOUND",
        )),
        Some(object) => {
            let required = route.required_scopes(object);
            if authorized.principal.has_any_scope(&required) {
                let id = parts.get(1).copied().unwrap_or("");
                serve(route, object, id, state, portal, req)
            } else {
                Err(hubspot::missing_scopes(&required))
            }
        }
    };
    let response = match reply {
        Ok((status, Some(body))) => {
            if state.crm_store().take_malformed(route.name()) {
                malformed(status, &body)
            } else {
                wire::json(status, body)
            }
        }
        Ok((status, None)) => status.into_response(),
        Err(response) => response,
    };
    with_rate_headers(response, &authorized.usage)
}

/// Upserts one contact by its email, as one input of `POST
/// /crm/v3/objects/contacts/batch/upsert` with `idProperty: email`: the record as JSON
/// and whether it was created. Properties are checked like a create's.
#[allow(clippy::result_large_err)] // The error is the finished response.
pub(crate) fn upsert_contact_by_email(
    state: &SandboxState,
    portal: u64,
    email: &str,
    properties: &Map<String, Value>,
) -> Result<(Value, bool), Response> {
    let mut input = properties.clone();
    input.insert("email".into(), json!(email));
    let mut store = state.crm_store();
    check_defined(&store, portal, CrmObject::Contacts, [&input])?;
    check_options([&input])?;
    let table = store.table(portal, CrmObject::Contacts);
    let now = now_ms();
    let (id, created) = match table.conflict(&input, 0) {
        Some((property, _, owner)) if property == "email" => (owner, false),
        Some(clash) => return Err(conflict(CrmObject::Contacts, clash)),
        None => (table.insert(Props::default(), now), true),
    };
    let record = table.set(id, &input, now).ok_or_else(hubspot::not_found)?;
    Ok((record.to_json(None), created))
}

fn malformed(status: StatusCode, body: &Value) -> Response {
    let text = body.to_string();
    let cut: String = text.chars().take(text.chars().count() / 2).collect();
    let mut response = (status, format!("{cut}\u{0}")).into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

fn error(status: StatusCode, message: &str, category: &str) -> Response {
    error_body(status, message, category)
}

/// 409 for a unique value another live record already holds: HubSpot's wording for a
/// contact email, a similar one for custom `hasUniqueValue` properties.
fn conflict(object: CrmObject, (property, value, existing): (String, String, u64)) -> Response {
    let message = if object == CrmObject::Contacts && property == "email" {
        format!("Contact already exists. Existing ID: {existing}")
    } else {
        format!(
            "A {} with the unique value \"{value}\" for property \"{property}\" already exists. Existing ID: {existing}",
            object.singular()
        )
    };
    error(StatusCode::CONFLICT, &message, "CONFLICT")
}

/// 409 for two inputs of one batch sharing a unique value.
fn batch_duplicate(property: &str) -> Response {
    let message = if property == "email" {
        "Duplicate email addresses within the batch".to_owned()
    } else {
        format!("Duplicate values of the unique property \"{property}\" within the batch")
    };
    error(StatusCode::CONFLICT, &message, "CONFLICT")
}

/// HubSpot's 400 for writes naming properties the object does not define.
fn undefined_properties(names: &[String]) -> Response {
    let details: Vec<Value> = names
        .iter()
        .map(|name| {
            let message = format!("Property \"{name}\" does not exist");
            json!({
                "isValid": false,
                "message": message,
                "error": "PROPERTY_DOESNT_EXIST",
                "name": name,
                "localizedErrorMessage": message,
            })
        })
        .collect();
    let errors: Vec<Value> = names
        .iter()
        .map(|name| {
            json!({
                "message": format!("Property \"{name}\" does not exist"),
                "code": "PROPERTY_DOESNT_EXIST",
                "context": {"propertyName": [name]},
            })
        })
        .collect();
    wire::json(
        StatusCode::BAD_REQUEST,
        json!({
            "status": "error",
            "message": format!("Property values were not valid: {}", Value::Array(details)),
            "correlationId": wire::correlation_id(),
            "category": "VALIDATION_ERROR",
            "errors": errors,
        }),
    )
}

/// Fails (the whole request) when any input names a property `object` does not define.
#[allow(clippy::result_large_err)] // The error is the finished response.
fn check_defined<'a>(
    store: &CrmStore,
    portal: u64,
    object: CrmObject,
    inputs: impl IntoIterator<Item = &'a Map<String, Value>>,
) -> Result<(), Response> {
    let mut missing: Vec<String> = inputs
        .into_iter()
        .flat_map(Map::keys)
        .filter(|name| !store.is_defined(portal, object, name))
        .cloned()
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    missing.sort();
    missing.dedup();
    Err(undefined_properties(&missing))
}

fn validation(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, message, "VALIDATION_ERROR")
}

fn not_found_record(object: CrmObject, id: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        &format!(
            "resource not found: no {} record with id {id}",
            object.as_str()
        ),
        "OBJECT_NOT_FOUND",
    )
}

#[allow(clippy::result_large_err)] // The error is the finished response.
fn body_json(req: &ProviderRequest) -> Result<Map<String, Value>, Response> {
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(validation("Invalid input JSON: expected an object")),
        Err(e) => Err(validation(&format!(
            "Invalid input JSON on line {}, column {}: {}",
            e.line(),
            e.column(),
            e.classify_message()
        ))),
    }
}

trait ClassifyMessage {
    fn classify_message(&self) -> &'static str;
}

impl ClassifyMessage for serde_json::Error {
    fn classify_message(&self) -> &'static str {
        match self.classify() {
            serde_json::error::Category::Eof => "Unexpected end-of-input",
            serde_json::error::Category::Syntax => "Unexpected character",
            _ => "Cannot deserialize value",
        }
    }
}

/// `properties` of a list query, search or batch read: a comma list or an array.
fn names_of(value: Option<&Value>) -> Option<Vec<String>> {
    match value? {
        Value::Array(items) => {
            let names: Vec<String> = items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            (!names.is_empty()).then_some(names)
        }
        Value::String(s) => names_from_csv(s),
        _ => None,
    }
}

fn names_from_csv(s: &str) -> Option<Vec<String>> {
    let names: Vec<String> = s
        .split(',')
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_owned)
        .collect();
    (!names.is_empty()).then_some(names)
}

fn selected(object: CrmObject, names: Option<Vec<String>>) -> Vec<String> {
    let mut names = names.unwrap_or_default();
    for default in object.default_properties() {
        if !names.iter().any(|n| n == default) {
            names.push((*default).to_owned());
        }
    }
    names
}

/// Every value of a repeated query parameter.
fn query_all(req: &ProviderRequest, name: &str) -> Vec<String> {
    req.query
        .as_deref()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .filter(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[allow(clippy::result_large_err)] // The error is the finished response.
fn limit_of(value: Option<&Value>, max: usize) -> Result<usize, Response> {
    let limit = match value {
        None | Some(Value::Null) => return Ok(DEFAULT_LIMIT),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        Some(_) => None,
    };
    match limit {
        Some(n) if n >= 1 && n <= max as u64 => Ok(n as usize),
        _ => Err(validation(&format!("limit must be between 1 and {max}"))),
    }
}

#[allow(clippy::result_large_err)] // The error is the finished response.
fn serve(
    route: CrmRoute,
    object: CrmObject,
    id: &str,
    state: &SandboxState,
    portal: u64,
    req: &ProviderRequest,
) -> Result<Reply, Response> {
    match route {
        CrmRoute::Properties => {
            let store = state.crm_store();
            Ok((StatusCode::OK, Some(properties_of(&store, portal, object))))
        }
        CrmRoute::PropertyGet => {
            let store = state.crm_store();
            match property_json(&store, portal, object, id) {
                Some(definition) => Ok((StatusCode::OK, Some(definition))),
                None => Err(error(
                    StatusCode::NOT_FOUND,
                    &format!(
                        "Unable to find property {id} for object type {}",
                        object.as_str()
                    ),
                    "OBJECT_NOT_FOUND",
                )),
            }
        }
        CrmRoute::PropertyCreate => create_property(object, state, portal, req),
        CrmRoute::List => list(object, state, portal, req),
        CrmRoute::Get => {
            let archived =
                wire::query_param(req.query.as_deref(), "archived").as_deref() == Some("true");
            let names = selected(
                object,
                names_from_csv(&query_all(req, "properties").join(",")),
            );
            let store = state.crm_store();
            let record = id
                .parse::<u64>()
                .ok()
                .and_then(|n| store.tables.get(&(portal, object))?.records.get(&n))
                .filter(|r| r.archived == archived);
            match record {
                Some(record) => Ok((StatusCode::OK, Some(record.to_json(Some(&names))))),
                None => Err(not_found_record(object, id)),
            }
        }
        CrmRoute::Create => {
            let body = body_json(req)?;
            let input = input_properties(&body)?;
            let mut store = state.crm_store();
            check_defined(&store, portal, object, [&input])?;
            check_options([&input])?;
            let table = store.table(portal, object);
            if object == CrmObject::Deals {
                check_deals(table, &[(0, &input)], true)?;
            }
            if let Some(clash) = table.conflict(&input, 0) {
                return Err(conflict(object, clash));
            }
            let associations = associations_of(&store, portal, object, &body)?;
            let table = store.table(portal, object);
            let now = now_ms();
            let id = table.insert(Props::default(), now);
            let record = table
                .set(id, &input, now)
                .ok_or_else(hubspot::not_found)?
                .to_json(None);
            associate(&mut store, portal, id, associations);
            Ok((StatusCode::CREATED, Some(record)))
        }
        CrmRoute::Update => {
            let body = body_json(req)?;
            let input = input_properties(&body)?;
            let mut store = state.crm_store();
            check_defined(&store, portal, object, [&input])?;
            check_options([&input])?;
            let table = store.table(portal, object);
            let own_id = table
                .live(id)
                .map(|r| r.id)
                .ok_or_else(|| not_found_record(object, id))?;
            if object == CrmObject::Deals {
                check_deals(table, &[(own_id, &input)], false)?;
            }
            if let Some(clash) = table.conflict(&input, own_id) {
                return Err(conflict(object, clash));
            }
            let record = table
                .set(own_id, &input, now_ms())
                .ok_or_else(|| not_found_record(object, id))?;
            Ok((StatusCode::OK, Some(record.to_json(None))))
        }
        CrmRoute::Archive => {
            let mut store = state.crm_store();
            let table = store.table(portal, object);
            // HubSpot answers 204 whether or not the record existed.
            if let Some(own_id) = table.live(id).map(|r| r.id) {
                table.archive(own_id, now_ms());
            }
            Ok((StatusCode::NO_CONTENT, None))
        }
        CrmRoute::BatchRead
        | CrmRoute::BatchCreate
        | CrmRoute::BatchUpdate
        | CrmRoute::BatchArchive => batch(route, object, state, portal, req),
        CrmRoute::Search => search(object, state, portal, req),
    }
}

/// The associations a create input carries (only deals take them here), checked:
/// types valid, targets live.
#[allow(clippy::result_large_err)] // The error is the finished response.
fn associations_of(
    store: &CrmStore,
    portal: u64,
    object: CrmObject,
    input: &Map<String, Value>,
) -> Result<Vec<(CrmObject, u64, Vec<u64>)>, Response> {
    if !input.contains_key("associations") {
        return Ok(Vec::new());
    }
    if object != CrmObject::Deals {
        return Err(validation(
            "the stand-in takes associations on deal creates only",
        ));
    }
    let list = super::hubspot_associations::create_associations(input)?;
    for (to, id, _) in &list {
        super::hubspot_associations::check_ids(store, portal, *to, [(0, *id)])?;
    }
    Ok(list)
}

/// Stores a new deal's associations (checked by [`associations_of`]).
fn associate(
    store: &mut CrmStore,
    portal: u64,
    deal: u64,
    associations: Vec<(CrmObject, u64, Vec<u64>)>,
) {
    for (to, id, types) in associations {
        let entry = store
            .associations
            .entry((portal, deal))
            .or_default()
            .entry((to, id))
            .or_default();
        entry.extend(types);
        entry.insert(match to {
            CrmObject::Companies => super::hubspot_associations::DEAL_TO_COMPANY,
            _ => super::hubspot_associations::DEAL_TO_CONTACT,
        });
    }
}

#[allow(clippy::result_large_err)] // The error is the finished response.
fn input_properties(body: &Map<String, Value>) -> Result<Map<String, Value>, Response> {
    match body.get("properties") {
        Some(Value::Object(map)) => Ok(map.clone()),
        None | Some(Value::Null) => Ok(Map::new()),
        Some(_) => Err(validation(
            "properties must be an object of property values",
        )),
    }
}

#[allow(clippy::result_large_err)] // The error is the finished response.
fn list(
    object: CrmObject,
    state: &SandboxState,
    portal: u64,
    req: &ProviderRequest,
) -> Result<Reply, Response> {
    let query = req.query.as_deref();
    let limit = limit_of(
        wire::query_param(query, "limit")
            .map(Value::String)
            .as_ref(),
        LIST_LIMIT,
    )?;
    let after = match wire::query_param(query, "after") {
        None => 0,
        Some(after) => after
            .trim()
            .parse::<u64>()
            .map_err(|_| validation("after must be a paging cursor from a previous page"))?,
    };
    let archived = wire::query_param(query, "archived").as_deref() == Some("true");
    let names = selected(
        object,
        names_from_csv(&query_all(req, "properties").join(",")),
    );
    let store = state.crm_store();
    let mut page: Vec<&Record> = Vec::with_capacity(limit + 1);
    if let Some(table) = store.tables.get(&(portal, object)) {
        page.extend(
            table
                .records
                .range(after.saturating_add(1)..)
                .map(|(_, r)| r)
                .filter(|r| r.archived == archived)
                .take(limit + 1),
        );
    }
    let more = page.len() > limit;
    page.truncate(limit);
    let results: Vec<Value> = page.iter().map(|r| r.to_json(Some(&names))).collect();
    let mut body = json!({ "results": results });
    if more && let Some(last) = page.last() {
        let cursor = last.id.to_string();
        body["paging"] = json!({"next": {
            "after": cursor,
            "link": format!("https://api.hubapi.com/crm/v3/objects/{}?after={cursor}", object.as_str()),
        }});
    }
    Ok((StatusCode::OK, Some(body)))
}

#[allow(clippy::result_large_err)] // The error is the finished response.
fn batch_inputs(body: &Map<String, Value>) -> Result<Vec<Map<String, Value>>, Response> {
    let Some(Value::Array(inputs)) = body.get("inputs") else {
        return Err(validation("inputs must be an array"));
    };
    if inputs.len() > BATCH_LIMIT {
        return Err(validation(&format!(
            "Batch input limit exceeded: {} inputs given, at most {BATCH_LIMIT} allowed",
            inputs.len()
        )));
    }
    inputs
        .iter()
        .map(|input| match input {
            Value::Object(map) => Ok(map.clone()),
            _ => Err(validation("each input must be an object")),
        })
        .collect()
}

fn input_id(input: &Map<String, Value>) -> String {
    input.get("id").and_then(value_text).unwrap_or_default()
}

#[allow(clippy::result_large_err)] // The error is the finished response.
fn batch(
    route: CrmRoute,
    object: CrmObject,
    state: &SandboxState,
    portal: u64,
    req: &ProviderRequest,
) -> Result<Reply, Response> {
    let body = body_json(req)?;
    let inputs = batch_inputs(&body)?;
    let started = rfc3339(now_ms());
    let mut store = state.crm_store();
    // Which property names the object defines, decided before borrowing the table.
    let defined: HashSet<String> = inputs
        .iter()
        .filter_map(|input| input.get("properties").and_then(Value::as_object))
        .flat_map(Map::keys)
        .filter(|name| store.is_defined(portal, object, name))
        .cloned()
        .collect();
    let store_defined = &defined;
    let table = store.table(portal, object);
    let mut results = Vec::with_capacity(inputs.len());
    let mut missing = Vec::new();
    let status = match route {
        CrmRoute::BatchRead => {
            let names = selected(object, names_of(body.get("properties")));
            let mut seen = HashSet::new();
            for input in &inputs {
                let id = input_id(input);
                if !seen.insert(id.clone()) {
                    continue;
                }
                match table.live(&id) {
                    Some(record) => results.push(record.to_json(Some(&names))),
                    None => missing.push(id),
                }
            }
            StatusCode::OK
        }
        CrmRoute::BatchCreate => {
            let created = inputs
                .iter()
                .map(input_properties)
                .collect::<Result<Vec<_>, _>>()?;
            let checked: Vec<(u64, &Map<String, Value>)> =
                created.iter().map(|properties| (0, properties)).collect();
            check_batch(store_defined, object, table, &checked, true)?;
            let associations = inputs
                .iter()
                .map(|input| associations_of(&store, portal, object, input))
                .collect::<Result<Vec<_>, _>>()?;
            let now = now_ms();
            for (properties, associations) in created.iter().zip(associations) {
                let table = store.table(portal, object);
                let id = table.insert(Props::default(), now);
                if let Some(record) = table.set(id, properties, now) {
                    results.push(record.to_json(None));
                }
                associate(&mut store, portal, id, associations);
            }
            StatusCode::CREATED
        }
        CrmRoute::BatchUpdate => {
            let mut updates = Vec::with_capacity(inputs.len());
            for input in &inputs {
                let id = input_id(input);
                let own_id = table.live(&id).map_or(0, |r| r.id);
                updates.push((id, own_id, input_properties(input)?));
            }
            let checked: Vec<(u64, &Map<String, Value>)> = updates
                .iter()
                .map(|(_, own_id, properties)| (*own_id, properties))
                .collect();
            check_batch(store_defined, object, table, &checked, false)?;
            let now = now_ms();
            for (id, own_id, properties) in &updates {
                match table.set(*own_id, properties, now) {
                    Some(record) => results.push(record.to_json(None)),
                    None => missing.push(id.clone()),
                }
            }
            StatusCode::OK
        }
        _ => {
            let now = now_ms();
            for input in &inputs {
                if let Some(own_id) = table.live(&input_id(input)).map(|r| r.id) {
                    table.archive(own_id, now);
                }
            }
            return Ok((StatusCode::NO_CONTENT, None));
        }
    };
    let mut answer = json!({
        "status": "COMPLETE",
        "results": results,
        "startedAt": started,
        "completedAt": rfc3339(now_ms()),
    });
    if missing.is_empty() {
        return Ok((status, Some(answer)));
    }
    answer["numErrors"] = json!(1);
    answer["errors"] = json!([{
        "status": "error",
        "category": "OBJECT_NOT_FOUND",
        "message": format!("Could not get some {} objects, they may be deleted or not exist. Check that ids are valid.", object.as_str()),
        "context": {"ids": missing},
        // Required members of the spec's StandardError, empty here.
        "links": {},
        "errors": [],
    }]);
    Ok((StatusCode::MULTI_STATUS, Some(answer)))
}

/// Checks a batch of writes `(own id or 0, properties)` before any is applied: every
/// property defined (`defined` holds the defined names among them), no unique value held
/// by another live record or by two inputs. Any failure fails the whole batch.
#[allow(clippy::result_large_err)] // The error is the finished response.
fn check_batch(
    defined: &HashSet<String>,
    object: CrmObject,
    table: &Table,
    inputs: &[(u64, &Map<String, Value>)],
    creating: bool,
) -> Result<(), Response> {
    let mut missing: Vec<String> = inputs
        .iter()
        .flat_map(|(_, properties)| properties.keys())
        .filter(|name| !defined.contains(*name))
        .cloned()
        .collect();
    if !missing.is_empty() {
        missing.sort();
        missing.dedup();
        return Err(undefined_properties(&missing));
    }
    check_options(inputs.iter().map(|(_, properties)| *properties))?;
    if object == CrmObject::Deals {
        check_deals(table, inputs, creating)?;
    }
    let mut claimed: HashSet<(&str, String)> = HashSet::new();
    for (own_id, properties) in inputs {
        if let Some(clash) = table.conflict(properties, *own_id) {
            return Err(conflict(object, clash));
        }
        for name in table.unique.keys() {
            if let Some(key) = properties
                .get(name)
                .and_then(value_text)
                .and_then(|v| unique_key(&v))
                && !claimed.insert((name.as_str(), key))
            {
                return Err(batch_duplicate(name));
            }
        }
    }
    Ok(())
}

/// Fails (the whole request, as HubSpot does) when an enumeration property is given a
/// value that is not one of its options.
#[allow(clippy::result_large_err)] // The error is the finished response.
fn check_options<'a>(
    inputs: impl IntoIterator<Item = &'a Map<String, Value>>,
) -> Result<(), Response> {
    for properties in inputs {
        for (name, value) in properties {
            let options: &[(&str, &str)] = match name.as_str() {
                "lifecyclestage" => &LIFECYCLE_STAGES,
                "industry" => &INDUSTRIES,
                "deal_currency_code" => &CURRENCIES,
                _ => continue,
            };
            let Some(text) = value_text(value).filter(|t| !t.is_empty()) else {
                continue;
            };
            if options.iter().any(|(v, _)| *v == text) {
                continue;
            }
            let allowed: Vec<&str> = options.iter().map(|(v, _)| *v).collect();
            let message = format!(
                "{text} was not one of the allowed options: [{}]",
                allowed.join(", ")
            );
            let detail = json!([{
                "isValid": false,
                "message": message,
                "error": "INVALID_OPTION",
                "name": name,
                "localizedErrorMessage": message,
            }]);
            return Err(wire::json(
                StatusCode::BAD_REQUEST,
                json!({
                    "status": "error",
                    "message": format!("Property values were not valid: {detail}"),
                    "correlationId": wire::correlation_id(),
                    "category": "VALIDATION_ERROR",
                    "errors": [{
                        "message": message,
                        "code": "INVALID_OPTION",
                        "context": {"propertyName": [name]},
                    }],
                }),
            ));
        }
    }
    Ok(())
}

/// One search filter.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    property_name: String,
    operator: String,
    #[serde(default)]
    value: Option<Value>,
    /// `IN` / `NOT_IN` values.
    #[serde(default)]
    values: Option<Vec<Value>>,
    /// `BETWEEN`'s upper bound (`value` is the lower), inclusive.
    #[serde(default)]
    high_value: Option<Value>,
}

#[derive(Debug, Deserialize)]
struct FilterGroup {
    #[serde(default)]
    filters: Vec<Filter>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Sort {
    property_name: String,
    #[serde(default)]
    direction: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SearchRequest {
    #[serde(default)]
    filter_groups: Vec<FilterGroup>,
    #[serde(default)]
    sorts: Vec<Value>,
    #[serde(default)]
    properties: Option<Value>,
    #[serde(default)]
    limit: Option<Value>,
    #[serde(default)]
    after: Option<Value>,
}

const OPERATORS: [&str; 12] = [
    "EQ",
    "NEQ",
    "GT",
    "GTE",
    "LT",
    "LTE",
    "HAS_PROPERTY",
    "NOT_HAS_PROPERTY",
    "CONTAINS_TOKEN",
    "IN",
    "NOT_IN",
    "BETWEEN",
];

#[allow(clippy::result_large_err)] // The error is the finished response.
fn search(
    object: CrmObject,
    state: &SandboxState,
    portal: u64,
    req: &ProviderRequest,
) -> Result<Reply, Response> {
    let body = body_json(req)?;
    let request: SearchRequest = serde_json::from_value(Value::Object(body))
        .map_err(|e| validation(&format!("Invalid search request: {e}")))?;
    let limit = limit_of(request.limit.as_ref(), SEARCH_LIMIT)?;
    let after = match &request.after {
        None | Some(Value::Null) => 0,
        Some(value) => value_text(value)
            .and_then(|t| t.trim().parse::<usize>().ok())
            .ok_or_else(|| validation("after must be a paging cursor from a previous page"))?,
    };
    if after >= SEARCH_CAP {
        return Err(validation(&format!(
            "Cannot page past {SEARCH_CAP} results: after={after} is beyond the search limit"
        )));
    }
    if request.filter_groups.len() > MAX_FILTER_GROUPS {
        return Err(validation(&format!(
            "Too many filter groups: at most {MAX_FILTER_GROUPS} allowed"
        )));
    }
    for filter in request.filter_groups.iter().flat_map(|g| &g.filters) {
        if !OPERATORS.contains(&filter.operator.as_str()) {
            return Err(validation(&format!(
                "Unsupported operator {} for property {}",
                filter.operator, filter.property_name
            )));
        }
        check_filter(filter)?;
    }
    let sort = match request.sorts.first() {
        None => None,
        Some(Value::String(name)) => Some(Sort {
            property_name: name.clone(),
            direction: None,
        }),
        Some(value) => Some(
            serde_json::from_value::<Sort>(value.clone())
                .map_err(|e| validation(&format!("Invalid sort: {e}")))?,
        ),
    };
    let names = selected(object, names_of(request.properties.as_ref()));
    let store = state.crm_store();
    let mut hits: Vec<&Record> = store
        .tables
        .get(&(portal, object))
        .map(|t| {
            t.records
                .values()
                .filter(|r| !r.archived && matches_groups(r, &request.filter_groups))
                .collect()
        })
        .unwrap_or_default();
    if let Some(sort) = &sort {
        let descending = sort
            .direction
            .as_deref()
            .is_some_and(|d| d.eq_ignore_ascii_case("DESCENDING"));
        let name = sort.property_name.as_str();
        hits.sort_by(|a, b| {
            let order = compare_for_sort(a, b, name);
            if descending { order.reverse() } else { order }
        });
    }
    let total = hits.len();
    let page: Vec<Value> = hits
        .iter()
        .skip(after)
        .take(limit)
        .map(|r| r.to_json(Some(&names)))
        .collect();
    let mut answer = json!({ "total": total, "results": page });
    let next = after + limit;
    if next < total {
        answer["paging"] = json!({"next": {"after": next.to_string()}});
    }
    Ok((StatusCode::OK, Some(answer)))
}

/// A filter's operands fit its operator: `values` for `IN`/`NOT_IN`, `value` and
/// `highValue` for `BETWEEN`, `value` for the rest but `(NOT_)HAS_PROPERTY`.
#[allow(clippy::result_large_err)] // The error is the finished response.
fn check_filter(filter: &Filter) -> Result<(), Response> {
    let has = |value: Option<&Value>| value.and_then(value_text).is_some();
    let (ok, needs) = match filter.operator.as_str() {
        "HAS_PROPERTY" | "NOT_HAS_PROPERTY" => (true, ""),
        "IN" | "NOT_IN" => (
            filter
                .values
                .as_ref()
                .is_some_and(|values| !values.is_empty() && values.iter().all(|v| has(Some(v)))),
            "a non-empty values array",
        ),
        "BETWEEN" => (
            has(filter.value.as_ref()) && has(filter.high_value.as_ref()),
            "a value and a highValue",
        ),
        _ => (has(filter.value.as_ref()), "a value"),
    };
    if ok {
        Ok(())
    } else {
        Err(validation(&format!(
            "Filter on {} with operator {} needs {needs}",
            filter.property_name, filter.operator
        )))
    }
}

fn matches_groups(record: &Record, groups: &[FilterGroup]) -> bool {
    groups.is_empty()
        || groups
            .iter()
            .any(|g| g.filters.iter().all(|f| matches_filter(record, f)))
}

/// How two property values compare: as times for date properties, as numbers when both
/// parse, else as case-insensitive text.
fn compare_values(record: &Record, name: &str, left: &str, right: &str) -> std::cmp::Ordering {
    if DATE_PROPERTIES.contains(&name)
        && let (Some(l), Some(r)) = (record.time_of(name), parse_time(right))
    {
        return l.cmp(&r);
    }
    if let (Ok(l), Ok(r)) = (left.trim().parse::<f64>(), right.trim().parse::<f64>()) {
        return l.partial_cmp(&r).unwrap_or(std::cmp::Ordering::Equal);
    }
    left.to_lowercase().cmp(&right.to_lowercase())
}

fn matches_filter(record: &Record, filter: &Filter) -> bool {
    let name = filter.property_name.as_str();
    let actual = record.get(name).filter(|v| !v.is_empty());
    let wanted = filter
        .value
        .as_ref()
        .and_then(value_text)
        .unwrap_or_default();
    use std::cmp::Ordering::{Equal, Greater, Less};
    let any_of = |actual: &str| {
        filter.values.iter().flatten().any(|v| {
            value_text(v).is_some_and(|v| compare_values(record, name, actual, &v) == Equal)
        })
    };
    match (filter.operator.as_str(), actual) {
        ("HAS_PROPERTY", actual) => actual.is_some(),
        ("NOT_HAS_PROPERTY", actual) => actual.is_none(),
        ("NEQ" | "NOT_IN", None) => true,
        (_, None) => false,
        ("EQ", Some(a)) => compare_values(record, name, &a, &wanted) == Equal,
        ("NEQ", Some(a)) => compare_values(record, name, &a, &wanted) != Equal,
        ("GT", Some(a)) => compare_values(record, name, &a, &wanted) == Greater,
        ("GTE", Some(a)) => compare_values(record, name, &a, &wanted) != Less,
        ("LT", Some(a)) => compare_values(record, name, &a, &wanted) == Less,
        ("LTE", Some(a)) => compare_values(record, name, &a, &wanted) != Greater,
        ("CONTAINS_TOKEN", Some(a)) => contains_token(&a, &wanted),
        ("IN", Some(a)) => any_of(&a),
        ("NOT_IN", Some(a)) => !any_of(&a),
        ("BETWEEN", Some(a)) => {
            let high = filter
                .high_value
                .as_ref()
                .and_then(value_text)
                .unwrap_or_default();
            compare_values(record, name, &a, &wanted) != Less
                && compare_values(record, name, &a, &high) != Greater
        }
        _ => false,
    }
}

/// HubSpot's token match: the value split into words; `*` at either end of the token is
/// a wildcard.
fn contains_token(value: &str, token: &str) -> bool {
    let value = value.to_lowercase();
    let token = token.to_lowercase();
    let (lead, trail) = (token.starts_with('*'), token.ends_with('*'));
    let core = token.trim_matches('*');
    if core.is_empty() {
        return true;
    }
    if value == core {
        return true;
    }
    value
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .any(|word| match (lead, trail) {
            (true, true) => word.contains(core),
            (true, false) => word.ends_with(core),
            (false, true) => word.starts_with(core),
            (false, false) => word == core,
        })
}

fn compare_for_sort(a: &Record, b: &Record, name: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    if DATE_PROPERTIES.contains(&name) {
        return a.time_of(name).cmp(&b.time_of(name)).then(a.id.cmp(&b.id));
    }
    let order = match (a.get(name), b.get(name)) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => match (x.parse::<f64>(), y.parse::<f64>()) {
            (Ok(l), Ok(r)) => l.partial_cmp(&r).unwrap_or(Ordering::Equal),
            _ => x.to_lowercase().cmp(&y.to_lowercase()),
        },
    };
    order.then(a.id.cmp(&b.id))
}

/// A built-in property definition: name, label, type, fieldType, description.
type PropertyDef = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

/// Properties derived from the record itself: always defined, never written.
const DERIVED_PROPERTIES: [&str; 4] = [
    "hs_object_id",
    "createdate",
    "lastmodifieddate",
    "hs_lastmodifieddate",
];

#[rustfmt::skip]
const CONTACT_PROPERTIES: [PropertyDef; 15] = [
    ("email", "Email", "string", "text", "A contact's email address"),
    ("firstname", "First Name", "string", "text", "A contact's first name"),
    ("lastname", "Last Name", "string", "text", "A contact's last name"),
    ("phone", "Phone Number", "string", "phonenumber", "A contact's primary phone number"),
    ("mobilephone", "Mobile Phone Number", "string", "phonenumber",
     "A contact's mobile phone number"),
    ("jobtitle", "Job Title", "string", "text", "A contact's job title"),
    ("company", "Company Name", "string", "text", "Name of the contact's company"),
    ("website", "Website URL", "string", "text", "Associated company website"),
    ("city", "City", "string", "text", "A contact's city of residence"),
    ("country", "Country/Region", "string", "text", "The contact's country/region of residence"),
    ("lifecyclestage", "Lifecycle Stage", "enumeration", "radio",
     "The qualification of contacts to sales readiness"),
    ("date_of_birth", "Date of birth", "date", "date", "The contact's date of birth"),
    ("lastmodifieddate", "Last Modified Date", "datetime", "date",
     "Most recent timestamp of any property update for this contact"),
    ("createdate", "Create Date", "datetime", "date", "The date that a contact entered the system"),
    ("hs_object_id", "Record ID", "number", "number", "The unique ID for this record"),
];

#[rustfmt::skip]
const COMPANY_PROPERTIES: [PropertyDef; 13] = [
    ("name", "Company name", "string", "text", "The name of the company or organization"),
    ("domain", "Company Domain Name", "string", "text",
     "The domain name of the company or organization"),
    ("website", "Website URL", "string", "text", "The main website of the company"),
    ("phone", "Phone Number", "string", "phonenumber", "A company's primary phone number"),
    ("industry", "Industry", "enumeration", "select", "The type of business the company performs"),
    ("city", "City", "string", "text", "The city where the company is located"),
    ("country", "Country/Region", "string", "text",
     "The country/region in which the company is located"),
    ("numberofemployees", "Number of Employees", "number", "number",
     "The total number of employees who work for the company"),
    ("annualrevenue", "Annual Revenue", "number", "number",
     "The actual or estimated annual revenue of the company"),
    ("description", "Description", "string", "textarea",
     "A short statement about the company's mission and goals"),
    ("hs_lastmodifieddate", "Last Modified Date", "datetime", "date",
     "Most recent timestamp of any property update for this company"),
    ("createdate", "Create Date", "datetime", "date",
     "The date the company was added to your account"),
    ("hs_object_id", "Record ID", "number", "number", "The unique ID for this record"),
];

#[rustfmt::skip]
const DEAL_PROPERTIES: [PropertyDef; 10] = [
    ("dealname", "Deal Name", "string", "text", "The name given to this deal."),
    ("amount", "Amount", "number", "number", "The total amount of the deal"),
    ("deal_currency_code", "Currency", "enumeration", "select",
     "Currency code for the deal."),
    ("closedate", "Close Date", "datetime", "date",
     "Date the deal was closed. Set automatically by HubSpot."),
    ("dealstage", "Deal Stage", "enumeration", "radio",
     "The stage of the deal. Deal stages allow you to categorize and track the progress of the deals that you are working on."),
    ("pipeline", "Pipeline", "enumeration", "select", "The pipeline the deal is in."),
    ("description", "Deal Description", "string", "textarea", "Description of the deal"),
    ("hs_lastmodifieddate", "Last Modified Date", "datetime", "date",
     "Most recent timestamp of any property update for this deal."),
    ("createdate", "Create Date", "datetime", "date", "Date the deal was created."),
    ("hs_object_id", "Record ID", "number", "number", "The unique ID for this record"),
];

/// `deal_currency_code` options offered.
const CURRENCIES: [(&str, &str); 3] = [
    ("USD", "US Dollar"),
    ("EUR", "Euro"),
    ("GBP", "British Pound"),
];

/// A pipeline: id, label, stages (id, label).
type Pipeline = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

/// Every portal's deal pipelines: HubSpot's default one and a custom one.
#[rustfmt::skip]
pub const PIPELINES: [Pipeline; 2] = [
    ("default", "Sales Pipeline", &[
        ("appointmentscheduled", "Appointment Scheduled"),
        ("qualifiedtobuy", "Qualified To Buy"),
        ("presentationscheduled", "Presentation Scheduled"),
        ("decisionmakerboughtin", "Decision Maker Bought-In"),
        ("contractsent", "Contract Sent"),
        ("closedwon", "Closed Won"),
        ("closedlost", "Closed Lost"),
    ]),
    ("75e28846", "Renewals", &[
        ("1031923", "Renewal Due"),
        ("1031924", "Renewed"),
        ("1031925", "Churned"),
    ]),
];

/// A 400 `VALIDATION_ERROR` naming one invalid property value, as HubSpot words it.
fn invalid_property(name: &str, message: &str, code: &str) -> Response {
    let detail = json!([{
        "isValid": false,
        "message": message,
        "error": code,
        "name": name,
        "localizedErrorMessage": message,
    }]);
    wire::json(
        StatusCode::BAD_REQUEST,
        json!({
            "status": "error",
            "message": format!("Property values were not valid: {detail}"),
            "correlationId": wire::correlation_id(),
            "category": "VALIDATION_ERROR",
            "errors": [{
                "message": message,
                "code": code,
                "context": {"propertyName": [name]},
            }],
        }),
    )
}

/// Checks deal writes `(own id or 0 for a create, properties)` before any is applied:
/// a create names `dealname` and `dealstage`; the stage (given, or kept when only the
/// pipeline changes) is one of the deal's pipeline's stages.
#[allow(clippy::result_large_err)] // The error is the finished response.
fn check_deals(
    table: &Table,
    inputs: &[(u64, &Map<String, Value>)],
    creating: bool,
) -> Result<(), Response> {
    for (own_id, properties) in inputs {
        let given = |name: &str| {
            properties
                .get(name)
                .map(|v| value_text(v).unwrap_or_default())
        };
        let current = |name: &str| {
            table
                .records
                .get(own_id)
                .and_then(|r| r.properties.get(name).map(str::to_owned))
        };
        if creating {
            for required in ["dealname", "dealstage"] {
                if given(required).is_none_or(|v| v.is_empty()) {
                    return Err(invalid_property(
                        required,
                        &format!("{required} is required"),
                        "REQUIRED_PROPERTY",
                    ));
                }
            }
        }
        let pipeline = given("pipeline")
            .filter(|p| !p.is_empty())
            .or_else(|| current("pipeline"))
            .unwrap_or_else(|| PIPELINES[0].0.to_owned());
        let Some((_, _, stages)) = PIPELINES.iter().find(|(id, _, _)| *id == pipeline) else {
            let allowed: Vec<&str> = PIPELINES.iter().map(|(id, _, _)| *id).collect();
            return Err(invalid_property(
                "pipeline",
                &format!(
                    "{pipeline} was not one of the allowed options: [{}]",
                    allowed.join(", ")
                ),
                "INVALID_OPTION",
            ));
        };
        let stage = given("dealstage").or_else(|| current("dealstage"));
        if let Some(stage) = stage.filter(|s| !s.is_empty())
            && !stages.iter().any(|(id, _)| *id == stage)
        {
            let allowed: Vec<&str> = stages.iter().map(|(id, _)| *id).collect();
            return Err(invalid_property(
                "dealstage",
                &format!(
                    "{stage} is not a valid dealstage of pipeline {pipeline}: [{}]",
                    allowed.join(", ")
                ),
                "INVALID_OPTION",
            ));
        }
    }
    Ok(())
}

/// `lifecyclestage` options: internal value, label.
const LIFECYCLE_STAGES: [(&str, &str); 8] = [
    ("subscriber", "Subscriber"),
    ("lead", "Lead"),
    ("marketingqualifiedlead", "Marketing Qualified Lead"),
    ("salesqualifiedlead", "Sales Qualified Lead"),
    ("opportunity", "Opportunity"),
    ("customer", "Customer"),
    ("evangelist", "Evangelist"),
    ("other", "Other"),
];

/// A realistic subset of HubSpot's `industry` options: internal value, label.
#[rustfmt::skip]
const INDUSTRIES: [(&str, &str); 14] = [
    ("ACCOUNTING", "Accounting"),
    ("BANKING", "Banking"),
    ("BIOTECHNOLOGY", "Biotechnology"),
    ("BUSINESS_SUPPLIES_AND_EQUIPMENT", "Business Supplies and Equipment"),
    ("COMPUTER_SOFTWARE", "Computer Software"),
    ("CONSUMER_GOODS", "Consumer Goods"),
    ("FINANCIAL_SERVICES", "Financial Services"),
    ("HOSPITAL_HEALTH_CARE", "Hospital & Health Care"),
    ("INFORMATION_TECHNOLOGY_AND_SERVICES", "Information Technology and Services"),
    ("INSURANCE", "Insurance"),
    ("LOGISTICS_AND_SUPPLY_CHAIN", "Logistics and Supply Chain"),
    ("MARKETING_AND_ADVERTISING", "Marketing and Advertising"),
    ("RETAIL", "Retail"),
    ("TELECOMMUNICATIONS", "Telecommunications"),
];

/// The built-in definitions of `object`.
fn builtin_properties(object: CrmObject) -> &'static [PropertyDef] {
    match object {
        CrmObject::Contacts => &CONTACT_PROPERTIES,
        CrmObject::Companies => &COMPANY_PROPERTIES,
        CrmObject::Deals => &DEAL_PROPERTIES,
    }
}

fn options_json(options: &[(&str, &str)]) -> Vec<Value> {
    options
        .iter()
        .enumerate()
        .map(|(i, (value, label))| {
            json!({"label": label, "value": value, "displayOrder": i, "hidden": false})
        })
        .collect()
}

/// A built-in definition as HubSpot's `Property`.
fn builtin_json(object: CrmObject, def: &PropertyDef) -> Value {
    let (name, label, kind, field_type, description) = *def;
    let options = match name {
        "lifecyclestage" => options_json(&LIFECYCLE_STAGES),
        "industry" => options_json(&INDUSTRIES),
        "deal_currency_code" => options_json(&CURRENCIES),
        "pipeline" => options_json(&PIPELINES.map(|(id, label, _)| (id, label))),
        // Every pipeline's stages, as HubSpot lists them on the property.
        "dealstage" => options_json(
            &PIPELINES
                .iter()
                .flat_map(|(_, _, stages)| stages.iter().copied())
                .collect::<Vec<_>>(),
        ),
        _ => Vec::new(),
    };
    let read_only = DERIVED_PROPERTIES.contains(&name);
    json!({
        "name": name,
        "label": label,
        "type": kind,
        "fieldType": field_type,
        "groupName": object.group_name(),
        "description": description,
        "options": options,
        "displayOrder": -1,
        "calculated": false,
        "externalOptions": false,
        "hasUniqueValue": false,
        "hidden": false,
        "hubspotDefined": true,
        "formField": !read_only,
        "modificationMetadata": {
            "archivable": true,
            "readOnlyDefinition": true,
            "readOnlyValue": read_only,
        },
        "createdAt": "2019-08-06T02:41:08.029Z",
        "updatedAt": "2019-08-06T02:41:08.029Z",
        "archived": false,
    })
}

impl CustomProperty {
    /// The definition as HubSpot's `Property`.
    fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "label": self.label,
            "type": self.kind,
            "fieldType": self.field_type,
            "groupName": self.group,
            "description": self.description,
            "options": self.options,
            "displayOrder": -1,
            "calculated": false,
            "externalOptions": false,
            "hasUniqueValue": self.unique,
            "hidden": false,
            "formField": true,
            "modificationMetadata": {
                "archivable": true,
                "readOnlyDefinition": false,
                "readOnlyValue": false,
            },
            "createdAt": self.created_at,
            "updatedAt": self.created_at,
            "archived": false,
        })
    }
}

impl CrmStore {
    /// Adds a custom property; `Err` when the name is taken (built-in or custom).
    fn define(
        &mut self,
        portal: u64,
        object: CrmObject,
        property: CustomProperty,
    ) -> Result<&CustomProperty, ()> {
        if self.is_defined(portal, object, &property.name) {
            return Err(());
        }
        if property.unique {
            self.table(portal, object).index_property(&property.name);
        }
        let customs = self.custom.entry((portal, object)).or_default();
        customs.push(property);
        customs.last().ok_or(())
    }
}

/// `GET /crm/v3/properties/{object}`: the built-in definitions and the portal's own.
fn properties_of(store: &CrmStore, portal: u64, object: CrmObject) -> Value {
    let results: Vec<Value> = builtin_properties(object)
        .iter()
        .map(|def| builtin_json(object, def))
        .chain(
            store
                .customs(portal, object)
                .iter()
                .map(CustomProperty::to_json),
        )
        .collect();
    json!({ "results": results })
}

/// `GET /crm/v3/properties/{object}/{name}`.
fn property_json(store: &CrmStore, portal: u64, object: CrmObject, name: &str) -> Option<Value> {
    builtin_properties(object)
        .iter()
        .find(|def| def.0 == name)
        .map(|def| builtin_json(object, def))
        .or_else(|| {
            store
                .customs(portal, object)
                .iter()
                .find(|c| c.name == name)
                .map(CustomProperty::to_json)
        })
}

const PROPERTY_TYPES: [&str; 6] = [
    "string",
    "number",
    "date",
    "datetime",
    "enumeration",
    "bool",
];
const FIELD_TYPES: [&str; 10] = [
    "text",
    "textarea",
    "number",
    "date",
    "select",
    "radio",
    "checkbox",
    "booleancheckbox",
    "phonenumber",
    "html",
];

/// Body of `POST /crm/v3/properties/{object}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PropertyCreate {
    name: String,
    label: String,
    #[serde(rename = "type")]
    kind: String,
    field_type: String,
    group_name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    has_unique_value: bool,
    #[serde(default)]
    options: Vec<Value>,
}

/// Whether `name` is a valid internal property name (lower-case letter, then lower-case
/// letters, digits and underscores).
fn valid_property_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// `POST /crm/v3/properties/{object}`: 201 with the new definition, 409 when taken.
#[allow(clippy::result_large_err)] // The error is the finished response.
fn create_property(
    object: CrmObject,
    state: &SandboxState,
    portal: u64,
    req: &ProviderRequest,
) -> Result<Reply, Response> {
    let body = body_json(req)?;
    let request: PropertyCreate = serde_json::from_value(Value::Object(body))
        .map_err(|e| validation(&format!("Invalid property definition: {e}")))?;
    if !valid_property_name(&request.name) {
        return Err(validation(&format!(
            "Property name {:?} is invalid: use lower-case letters, digits and underscores, starting with a letter",
            request.name
        )));
    }
    if !PROPERTY_TYPES.contains(&request.kind.as_str())
        || !FIELD_TYPES.contains(&request.field_type.as_str())
    {
        return Err(validation(&format!(
            "Invalid type/fieldType combination {}/{}",
            request.kind, request.field_type
        )));
    }
    if request.label.trim().is_empty() || request.group_name.trim().is_empty() {
        return Err(validation("label and groupName must not be empty"));
    }
    let property = CustomProperty {
        name: request.name.clone(),
        label: request.label,
        kind: request.kind,
        field_type: request.field_type,
        group: request.group_name,
        description: request.description,
        unique: request.has_unique_value,
        options: request.options,
        created_at: rfc3339(now_ms()),
    };
    let mut store = state.crm_store();
    match store.define(portal, object, property) {
        Ok(property) => Ok((StatusCode::CREATED, Some(property.to_json()))),
        Err(()) => Err(error(
            StatusCode::CONFLICT,
            &format!("Property named '{}' already exists.", request.name),
            "OBJECT_ALREADY_EXISTS",
        )),
    }
}

/// Epoch milliseconds as RFC 3339 UTC with milliseconds, e.g. `2024-05-01T12:00:00.000Z`.
pub fn rfc3339(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

/// A filter or property time: epoch milliseconds, or RFC 3339 UTC (`Z`), or a date.
pub fn parse_time(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Ok(ms) = text.parse::<i64>() {
        return Some(ms);
    }
    let num = |s: Option<&str>| s?.parse::<i64>().ok();
    let (date, time) = text.split_once('T').unwrap_or((text, "00:00:00Z"));
    let mut parts = date.split('-');
    let (y, m, d) = (num(parts.next())?, num(parts.next())?, num(parts.next())?);
    let time = time
        .strip_suffix('Z')
        .or_else(|| time.strip_suffix("+00:00"))?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut parts = hms.split(':');
    let (h, mi, s) = (
        num(parts.next())?,
        num(parts.next())?,
        num(parts.next()).unwrap_or(0),
    );
    let frac: String = frac.chars().chain("000".chars()).take(3).collect();
    let ms = frac.parse::<i64>().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86_400_000 + ((h * 60 + mi) * 60 + s) * 1000 + ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        let ms = 1_714_564_800_123;
        let text = rfc3339(ms);
        assert_eq!(text, "2024-05-01T12:00:00.123Z");
        assert_eq!(parse_time(&text), Some(ms));
        assert_eq!(parse_time("1714564800123"), Some(ms));
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(parse_time("garbage"), None);
    }

    #[test]
    fn tokens() {
        assert!(contains_token("ada@acme.test", "acme"));
        assert!(contains_token("Ada Lovelace", "lovelace"));
        assert!(contains_token("Ada Lovelace", "love*"));
        assert!(!contains_token("Ada Lovelace", "love"));
    }

    #[test]
    fn routes() {
        assert_eq!(
            route(&Method::GET, "/crm/v3/objects/contacts"),
            Some(CrmRoute::List)
        );
        assert_eq!(
            route(&Method::GET, "/crm/v3/objects/contacts/12"),
            Some(CrmRoute::Get)
        );
        assert_eq!(
            route(&Method::POST, "/crm/v3/objects/companies/batch/read"),
            Some(CrmRoute::BatchRead)
        );
        assert_eq!(
            route(&Method::GET, "/crm/v3/properties/contacts"),
            Some(CrmRoute::Properties)
        );
        assert_eq!(route(&Method::GET, "/crm/v3/objects/"), None);
    }
}

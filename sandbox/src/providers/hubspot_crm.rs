//! HubSpot CRM stand-in: contacts and companies kept in memory per portal (the portal of
//! the authenticating token), served at HubSpot's `/crm/v3/objects/…` and
//! `/crm/v3/properties/…` paths on `api.hubapi.com`.
//!
//! Records have a numeric string `id` (increasing per portal and object type),
//! `properties` (every value a string), `createdAt`, `updatedAt` (RFC 3339 with
//! milliseconds) and `archived`. The properties `hs_object_id`, `createdate`,
//! `lastmodifieddate` and `hs_lastmodifieddate` are derived from the record and always
//! present on **both** object types (HubSpot itself uses `lastmodifieddate` on contacts and
//! `hs_lastmodifieddate` on companies); both equal `updatedAt`.
//!
//! Every CRM request authenticates and counts against the token's rate-limit budget
//! first (so a burst meets HubSpot's 429), then runs. Errors use HubSpot's body
//! `{"status":"error","message","correlationId","category"}`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::ProviderRequest;
use super::hubspot::{self, authorize, error_body, with_rate_headers};
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

/// Every CRM route name.
pub const ROUTES: [&str; 11] = [
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
}

impl CrmObject {
    /// The object type from its path name or id (`contacts`, `0-1`, `companies`, `0-2`).
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "contacts" | "contact" | "0-1" => Some(CrmObject::Contacts),
            "companies" | "company" | "0-2" => Some(CrmObject::Companies),
            _ => None,
        }
    }

    /// The plural path name.
    pub fn as_str(self) -> &'static str {
        match self {
            CrmObject::Contacts => "contacts",
            CrmObject::Companies => "companies",
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

/// One stored record.
#[derive(Clone, Debug)]
struct Record {
    id: u64,
    properties: BTreeMap<String, String>,
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
            _ => self.properties.get(name).cloned(),
        }
    }

    /// A date property in epoch milliseconds.
    fn time_of(&self, name: &str) -> Option<i64> {
        match name {
            "createdate" => Some(self.created_ms),
            "lastmodifieddate" | "hs_lastmodifieddate" => Some(self.updated_ms),
            _ => self.properties.get(name).and_then(|v| parse_time(v)),
        }
    }

    fn all_properties(&self) -> BTreeMap<String, String> {
        let mut properties = self.properties.clone();
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
                    self.properties.insert(name.clone(), text);
                }
                _ => {
                    self.properties.remove(name);
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
}

impl Table {
    fn insert(&mut self, properties: BTreeMap<String, String>, now: i64) -> &Record {
        if self.next_id == 0 {
            self.next_id = 1001;
        }
        let id = self.next_id;
        self.next_id += 1;
        self.records.entry(id).or_insert(Record {
            id,
            properties,
            created_ms: now,
            updated_ms: now,
            archived: false,
        })
    }

    fn live(&self, id: &str) -> Option<&Record> {
        let id: u64 = id.trim().parse().ok()?;
        self.records.get(&id).filter(|r| !r.archived)
    }

    /// For contacts: the id of another live contact already holding the input's email
    /// (HubSpot keeps contact emails unique, case-insensitively).
    fn email_owner(
        &self,
        object: CrmObject,
        input: &Map<String, Value>,
        except: u64,
    ) -> Option<u64> {
        if object != CrmObject::Contacts {
            return None;
        }
        let email = input
            .get("email")
            .and_then(value_text)?
            .trim()
            .to_lowercase();
        if email.is_empty() {
            return None;
        }
        self.records
            .values()
            .find(|r| {
                !r.archived
                    && r.id != except
                    && r.properties
                        .get("email")
                        .is_some_and(|e| e.to_lowercase() == email)
            })
            .map(|r| r.id)
    }

    fn live_mut(&mut self, id: &str) -> Option<&mut Record> {
        let id: u64 = id.trim().parse().ok()?;
        self.records.get_mut(&id).filter(|r| !r.archived)
    }
}

/// All CRM records and the malformed-response knob.
#[derive(Debug, Default)]
pub(crate) struct CrmStore {
    tables: HashMap<(u64, CrmObject), Table>,
    malformed: HashMap<String, u32>,
}

impl CrmStore {
    fn table(&mut self, portal: u64, object: CrmObject) -> &mut Table {
        self.tables.entry((portal, object)).or_default()
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

impl SandboxState {
    /// Adds `n` contacts or companies to HubSpot portal `portal` (62515 is the default
    /// private app's) and returns their ids in order. Records get sample properties
    /// (contacts: `email`, `firstname`, `lastname`; companies: `name`, `domain`).
    pub fn seed_hubspot(&self, portal: u64, object: CrmObject, n: usize) -> Vec<String> {
        let now = now_ms();
        let mut store = self.crm_store();
        let table = store.table(portal, object);
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            let next = table.next_id.max(1001);
            let properties = match object {
                CrmObject::Contacts => BTreeMap::from([
                    ("email".to_owned(), format!("contact{next}@seed.test")),
                    ("firstname".to_owned(), "Seed".to_owned()),
                    ("lastname".to_owned(), format!("Contact {next}")),
                ]),
                CrmObject::Companies => BTreeMap::from([
                    ("name".to_owned(), format!("Company {next}")),
                    ("domain".to_owned(), format!("company{next}.test")),
                ]),
            };
            ids.push(table.insert(properties, now).id.to_string());
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
    /// `lastmodifieddate` filter). `None` when there is no such live record.
    pub fn update_hubspot_record(
        &self,
        portal: u64,
        object: CrmObject,
        id: &str,
        properties: &BTreeMap<String, String>,
    ) -> Option<CrmRecord> {
        let mut store = self.crm_store();
        let record = store.table(portal, object).live_mut(id)?;
        let input: Map<String, Value> = properties
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let now = now_ms().max(record.updated_ms + 1);
        record.apply(&input, now);
        Some(record.view())
    }

    /// Archives a live record as a HubSpot user would; false when there is none.
    pub fn archive_hubspot_record(&self, portal: u64, object: CrmObject, id: &str) -> bool {
        let mut store = self.crm_store();
        match store.table(portal, object).live_mut(id) {
            Some(record) => {
                record.archived = true;
                record.updated_ms = now_ms().max(record.updated_ms + 1);
                true
            }
            None => false,
        }
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
        }
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
        return (method == Method::GET && parts.len() == 1).then_some(CrmRoute::Properties);
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
    let authorized = match authorize(state, req) {
        Ok(authorized) => authorized,
        Err(response) => return response,
    };
    let portal = authorized.principal.portal_id();
    let prefix = if route == CrmRoute::Properties {
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
            let id = parts.get(1).copied().unwrap_or("");
            serve(route, object, id, state, portal, req)
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

/// 409 for a contact email another contact already has, as HubSpot words it.
fn conflict(existing: u64) -> Response {
    error(
        StatusCode::CONFLICT,
        &format!("Contact already exists. Existing ID: {existing}"),
        "CONFLICT",
    )
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
        CrmRoute::Properties => Ok((StatusCode::OK, Some(properties_of(object)))),
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
            if let Some(owner) = store.table(portal, object).email_owner(object, &input, 0) {
                return Err(conflict(owner));
            }
            let record = store
                .table(portal, object)
                .insert(BTreeMap::new(), now_ms());
            let id = record.id;
            let table = store.table(portal, object);
            let record = table.records.get_mut(&id).ok_or_else(hubspot::not_found)?;
            let created = record.created_ms;
            record.apply(&input, created);
            Ok((StatusCode::CREATED, Some(record.to_json(None))))
        }
        CrmRoute::Update => {
            let body = body_json(req)?;
            let input = input_properties(&body)?;
            let mut store = state.crm_store();
            let table = store.table(portal, object);
            let own_id = table
                .live(id)
                .map(|r| r.id)
                .ok_or_else(|| not_found_record(object, id))?;
            if let Some(owner) = table.email_owner(object, &input, own_id) {
                return Err(conflict(owner));
            }
            let record = table
                .live_mut(id)
                .ok_or_else(|| not_found_record(object, id))?;
            record.apply(&input, now_ms());
            Ok((StatusCode::OK, Some(record.to_json(None))))
        }
        CrmRoute::Archive => {
            let mut store = state.crm_store();
            // HubSpot answers 204 whether or not the record existed.
            if let Some(record) = store.table(portal, object).live_mut(id) {
                record.archived = true;
                record.updated_ms = now_ms().max(record.updated_ms);
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
            let now = now_ms();
            let mut created = Vec::with_capacity(inputs.len());
            let mut emails = HashSet::new();
            for input in &inputs {
                let properties = input_properties(input)?;
                if let Some(owner) = table.email_owner(object, &properties, 0) {
                    return Err(conflict(owner));
                }
                if object == CrmObject::Contacts
                    && let Some(email) = properties.get("email").and_then(value_text)
                    && !email.trim().is_empty()
                    && !emails.insert(email.trim().to_lowercase())
                {
                    return Err(error(
                        StatusCode::CONFLICT,
                        "Duplicate email addresses within the batch",
                        "CONFLICT",
                    ));
                }
                created.push(properties);
            }
            for properties in &created {
                let id = table.insert(BTreeMap::new(), now).id;
                if let Some(record) = table.records.get_mut(&id) {
                    record.apply(properties, now);
                    results.push(record.to_json(None));
                }
            }
            StatusCode::CREATED
        }
        CrmRoute::BatchUpdate => {
            let now = now_ms();
            let mut updates = Vec::with_capacity(inputs.len());
            for input in &inputs {
                let id = input_id(input);
                let properties = input_properties(input)?;
                let own_id = table.live(&id).map_or(0, |r| r.id);
                if let Some(owner) = table.email_owner(object, &properties, own_id) {
                    return Err(conflict(owner));
                }
                updates.push((id, properties));
            }
            for (id, properties) in &updates {
                match table.live_mut(id) {
                    Some(record) => {
                        record.apply(properties, now);
                        results.push(record.to_json(None));
                    }
                    None => missing.push(id.clone()),
                }
            }
            StatusCode::OK
        }
        _ => {
            let now = now_ms();
            for input in &inputs {
                if let Some(record) = table.live_mut(&input_id(input)) {
                    record.archived = true;
                    record.updated_ms = now.max(record.updated_ms);
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
    }]);
    Ok((StatusCode::MULTI_STATUS, Some(answer)))
}

/// One search filter.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    property_name: String,
    operator: String,
    #[serde(default)]
    value: Option<Value>,
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

const OPERATORS: [&str; 9] = [
    "EQ",
    "NEQ",
    "GT",
    "GTE",
    "LT",
    "LTE",
    "HAS_PROPERTY",
    "NOT_HAS_PROPERTY",
    "CONTAINS_TOKEN",
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
        let needs_value = !filter.operator.ends_with("HAS_PROPERTY");
        if needs_value && filter.value.as_ref().and_then(value_text).is_none() {
            return Err(validation(&format!(
                "Filter on {} with operator {} needs a value",
                filter.property_name, filter.operator
            )));
        }
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
    match (filter.operator.as_str(), actual) {
        ("HAS_PROPERTY", actual) => actual.is_some(),
        ("NOT_HAS_PROPERTY", actual) => actual.is_none(),
        ("NEQ", None) => true,
        (_, None) => false,
        ("EQ", Some(a)) => compare_values(record, name, &a, &wanted) == Equal,
        ("NEQ", Some(a)) => compare_values(record, name, &a, &wanted) != Equal,
        ("GT", Some(a)) => compare_values(record, name, &a, &wanted) == Greater,
        ("GTE", Some(a)) => compare_values(record, name, &a, &wanted) != Less,
        ("LT", Some(a)) => compare_values(record, name, &a, &wanted) == Less,
        ("LTE", Some(a)) => compare_values(record, name, &a, &wanted) != Greater,
        ("CONTAINS_TOKEN", Some(a)) => contains_token(&a, &wanted),
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

/// A property definition: name, label, type, fieldType, description.
type PropertyDef = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
);

#[rustfmt::skip]
const CONTACT_PROPERTIES: [PropertyDef; 10] = [
    ("email", "Email", "string", "text", "A contact's email address"),
    ("firstname", "First Name", "string", "text", "A contact's first name"),
    ("lastname", "Last Name", "string", "text", "A contact's last name"),
    ("phone", "Phone Number", "string", "phonenumber", "A contact's primary phone number"),
    ("company", "Company Name", "string", "text", "Name of the contact's company"),
    ("jobtitle", "Job Title", "string", "text", "A contact's job title"),
    ("lifecyclestage", "Lifecycle Stage", "enumeration", "radio",
     "The qualification of contacts to sales readiness"),
    ("lastmodifieddate", "Last Modified Date", "datetime", "date",
     "Most recent timestamp of any property update for this contact"),
    ("createdate", "Create Date", "datetime", "date", "The date that a contact entered the system"),
    ("hs_object_id", "Record ID", "number", "number", "The unique ID for this record"),
];

#[rustfmt::skip]
const COMPANY_PROPERTIES: [PropertyDef; 10] = [
    ("name", "Company name", "string", "text", "The name of the company or organization"),
    ("domain", "Company Domain Name", "string", "text",
     "The domain name of the company or organization"),
    ("industry", "Industry", "string", "text", "The type of business the company performs"),
    ("phone", "Phone Number", "string", "phonenumber", "A company's primary phone number"),
    ("city", "City", "string", "text", "The city where the company is located"),
    ("country", "Country/Region", "string", "text",
     "The country/region in which the company is located"),
    ("numberofemployees", "Number of Employees", "number", "number",
     "The total number of employees who work for the company"),
    ("hs_lastmodifieddate", "Last Modified Date", "datetime", "date",
     "Most recent timestamp of any property update for this company"),
    ("createdate", "Create Date", "datetime", "date",
     "The date the company was added to your account"),
    ("hs_object_id", "Record ID", "number", "number", "The unique ID for this record"),
];

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

/// `GET /crm/v3/properties/{object}`: a realistic subset of HubSpot's definitions.
fn properties_of(object: CrmObject) -> Value {
    let (defs, group) = match object {
        CrmObject::Contacts => (&CONTACT_PROPERTIES, "contactinformation"),
        CrmObject::Companies => (&COMPANY_PROPERTIES, "companyinformation"),
    };
    let results: Vec<Value> = defs
        .iter()
        .map(|(name, label, kind, field_type, description)| {
            let options: Vec<Value> = if *name == "lifecyclestage" {
                LIFECYCLE_STAGES
                    .iter()
                    .enumerate()
                    .map(|(i, (value, label))| {
                        json!({"label": label, "value": value, "displayOrder": i, "hidden": false})
                    })
                    .collect()
            } else {
                Vec::new()
            };
            json!({
                "name": name,
                "label": label,
                "type": kind,
                "fieldType": field_type,
                "groupName": group,
                "description": description,
                "options": options,
                "displayOrder": -1,
                "calculated": false,
                "externalOptions": false,
                "hasUniqueValue": false,
                "hidden": false,
                "hubspotDefined": true,
                "formField": *kind != "datetime" && *name != "hs_object_id",
                "modificationMetadata": {
                    "archivable": true,
                    "readOnlyDefinition": true,
                    "readOnlyValue": DATE_PROPERTIES.contains(name) || *name == "hs_object_id",
                },
                "createdAt": "2019-08-06T02:41:08.029Z",
                "updatedAt": "2019-08-06T02:41:08.029Z",
                "archived": false,
            })
        })
        .collect();
    json!({ "results": results })
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
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

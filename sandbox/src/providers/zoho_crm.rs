//! Zoho CRM record stand-in: the modules `Contacts`, `Accounts` and `Deals` kept in memory per
//! Zoho org (the org of the authenticating grant's user; [`DEFAULT_ZOHO_ORG`] for the
//! default user `admin@acme.test`), served at Zoho's v8 paths on `www.zohoapis.{dc}`
//! (Zoho's OpenAPI description `crm-oas` v8.0, `record.json` and `fields.json`).
//!
//! **Auth** (every route): `Authorization: Zoho-oauthtoken {token}` of a Zoho grant of the
//! same data centre as the host (a `com` token at `www.zohoapis.eu` is 401
//! `INVALID_TOKEN`, as Zoho's multi-DC guide says); no token is 401
//! `AUTHENTICATION_FAILURE`; a token whose scopes do not cover the route is 401
//! `OAUTH_SCOPE_MISMATCH` ("invalid oauth scope to access this URL"). Record routes take
//! `ZohoCRM.modules.ALL` or `ZohoCRM.modules.{contacts|accounts}.{OP}` with the operation
//! types each reference page lists ([`CrmRoute::required_scopes`]); the field routes take
//! `ZohoCRM.settings.ALL`, `ZohoCRM.settings.fields.ALL` or `…fields.READ` (create:
//! `…fields.CREATE`).
//!
//! **API credits** (Zoho's "API Limits" page): every call spends credits from the org's
//! rolling 24-hour budget — 1 per call, and for insert, update and upsert 1 per 10 records
//! (rounded up). The default budget is the Enterprise edition's for 10 user licences
//! (50,000 + 10 × 1,000 = [`DEFAULT_CREDITS`]); [`SandboxState::set_zoho_credit_limit`]
//! makes it tight. A call that does not fit is 429 `{"code":"TOO_MANY_REQUESTS",
//! "details":{},"message":"…","status":"error"}` and spends nothing. Zoho documents no
//! rate-limit response headers for v8, so none are sent.
//!
//! **Times** are Zoho's `yyyy-MM-ddTHH:mm:ss±HH:mm` in UTC (`2024-01-15T09:00:00+00:00`),
//! second precision. Writes stamp `Modified_Time` with the current second;
//! `If-Modified-Since` returns records modified **strictly after** the given second, so
//! a client must overlap its cursor by a second (and de-duplicate by `id`) not to miss a
//! change made in the same second as its last page.
//!
//! Routes (route names are the `pub const`s; malformed bodies via
//! [`SandboxState::malform_zoho_responses`]):
//! - `GET /crm/v8/{module}?fields=…`: `fields` required (at most 50 API names; unknown
//!   ones 400 `INVALID_DATA`); `per_page` 1–200 (default 200); `page` only while
//!   `page × per_page ≤ 2000`, past that 400 `DISCRETE_PAGINATION_LIMIT_EXCEEDED` — use
//!   `page_token` (from `info.next_page_token`, valid 24 h, not together with `page`);
//!   `sort_by` `id|Created_Time|Modified_Time` (default `id`), `sort_order` `asc|desc`
//!   (default `desc`); `ids` (at most 100 record ids: only those); `If-Modified-Since`
//!   header. Answer `{"data":[…],"info":{per_page,
//!   count,page,sort_by,sort_order,more_records,next_page_token,previous_page_token,
//!   page_token_expiry}}`; no match: 204 with no body (304 when `If-Modified-Since`
//!   was given and nothing changed after it).
//! - `GET /crm/v8/{module}/{id}`: `{"data":[record]}` (every field, or `fields=`); an
//!   unknown or deleted id: 204.
//! - `POST /crm/v8/{module}` (insert), `PUT /crm/v8/{module}` (update, each with `id`),
//!   `POST /crm/v8/{module}/upsert` (`duplicate_check_fields`, default the module's
//!   system duplicate-check field plus every unique custom field): body `{"data":[…]}`,
//!   1–100 records (more: 400 `LIMIT_EXCEEDED`), answered per record in `data` with
//!   `{code,details,message,status}`: `SUCCESS` (`details` id, Created_/Modified_Time,
//!   Created_/Modified_By; upsert adds `action` and `duplicate_field`),
//!   `MANDATORY_NOT_FOUND` (`details.api_name` `Last_Name` for Contacts, `Account_Name`
//!   for Accounts; `id` on update), `DUPLICATE_DATA` (`details.api_name`, `details.id`
//!   and `duplicate_record`) for a value of a unique field (Contacts `Email`, Accounts
//!   `Account_Name`, unique custom fields) another live record holds, `INVALID_DATA` for a
//!   value of the wrong type or length, an unknown field or an unknown `id`. Status 201
//!   (insert) / 200 (update, upsert) when every record succeeded, 400 when none did,
//!   207 when some did.
//! - `DELETE /crm/v8/{module}?ids=a,b`: 1–100 ids; each `SUCCESS` ("record deleted") or
//!   `INVALID_DATA` (status 200, 207 or 400 as for writes); deleted records go to the
//!   recycle bin.
//! - `GET /crm/v8/{module}/deleted?type=all|recycle|permanent` (+ `page`, `per_page`,
//!   `If-Modified-Since` on the deletion time): `{"data":[{id,display_name,type,
//!   deleted_time,deleted_by,created_by}],"info":{…}}`, 204 when none. Records leave the
//!   recycle bin for `permanent` through [`SandboxState::empty_zoho_recycle_bin`].
//!   Nothing deleted after `If-Modified-Since`: 304.
//! - `GET /crm/v8/{module}/search?criteria=|email=|word=|phone=` (exactly one): criteria
//!   `(Field:op:value)` joined by `and`/`or` with parentheses, at most 10 conditions,
//!   operators `equals`, `not_equal`, `starts_with`, `in` (comma list), `\(`, `\)` and
//!   `\,` escaped; `word` at least 2 characters; `per_page` ≤ 200 and at most 2,000
//!   results in all (`page × per_page ≤ 2000`, no page token); 204 when none.
//! - `GET /crm/v8/settings/fields?module=`: `{"fields":[…]}` with `api_name`,
//!   `field_label`, `display_label`, `data_type`, `read_only`, `field_read_only`,
//!   `system_mandatory`, `custom_field`, `unique` (`{"casesensitive":"false"}` or null),
//!   `length`, and the other members Zoho's schema requires.
//! - `POST /crm/v8/settings/fields?module=` with `{"fields":[{"field_label","data_type":
//!   "text","length"≤255,"unique"?}]}`: a custom single-line text field; its `api_name` is
//!   the label with spaces as `_` (`Conduit Id` → `Conduit_Id`). 201 `{"fields":[{"code":
//!   "SUCCESS","details":{"id"},"message":"field created","status":"success"}]}`; a taken
//!   label 400 `DUPLICATE_DATA`. Conduit's marker can be such a unique text field (Zoho
//!   has no external-id mechanism on these modules short of `X-EXTERNAL`, not served).
//!
//! **Deals**: `Deal_Name` (≤ 120) and `Stage` mandatory (`MANDATORY_NOT_FOUND` naming
//! the first missing); `Stage` a picklist of Zoho's standard layout (Qualification …
//! Closed-Lost to Competition; another value is `INVALID_DATA` with
//! `expected_data_type` `picklist`); `Amount` currency, `Closing_Date` a `yyyy-MM-dd`
//! date, `Probability` integer. `Account_Name` and `Contact_Name` are **lookups** (data
//! type `lookup`, field metadata with `lookup.module`): written as `{"id": "…"}` (a bare
//! id is taken too) naming a live record of Accounts / Contacts, else `INVALID_DATA`
//! "the related id given seems to be invalid" with `details.id`; `null` clears;
//! answered as `{"name": …, "id": …}` (the name of the record as it is now). Scopes
//! `ZohoCRM.modules.deals.*` as for the other modules. Not reproduced for deals:
//! pipelines and layout-dependent stage lists, `Probability` / `Expected_Revenue`
//! derived from the stage, the contact-roles related list, `Campaign_Source` and other
//! lookups, a contact's `Account_Name` being a lookup (it stays text here, as the
//! contacts scenarios have it), criteria search on lookups, and `Closed Won` /
//! `Closed Lost` side effects.
//!
//! `POST /crm/v8/Contacts/upsert` (and `Calls`/`Tasks` upserts, `Notes`) over HTTP is
//! claimed first by the dispatch-action stand-in ([`crate::actions`], its own record
//! store), so only the Accounts upsert reaches this module through the dispatcher.
//!
//! Not reproduced: the concurrency limits per edition (Free 5 … Ultimate 25 calls in
//! flight per app and org; 10 for heavy calls) — the sandbox answers each call
//! synchronously; other modules, lookups outside Deals (`Account_Name` on a contact is
//! plain text here), layouts, profiles and field-level permissions, `cvid`, `converted`/`approved`
//! filters, `X-EXTERNAL`, single-record `PUT`/`DELETE` by path id, triggers/workflows,
//! search-index lag (records are searchable at once), the 60-day recycle-bin expiry, COQL
//! and bulk APIs. Unknown field names in writes are refused (Zoho may drop them
//! silently; refusing catches a misspelt marker field).

// Handlers return the finished error response as their `Err`, as the HubSpot ones do.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::zoho::{api_error, invalid_token, zoho_token};
use super::{ProviderRequest, sample};
use crate::clock::{civil_from_days, now_ms, parse_datetime};
use crate::oauth::{self, AccessCheck, OAuthProvider, OAuthUser};
use crate::ratelimit::{Policy, Verdict};
use crate::state::SandboxState;
use crate::wire;

/// The org id of the default Zoho OAuth user (`admin@acme.test`, data centre `com`).
pub const DEFAULT_ZOHO_ORG: &str = "700000001";

/// Route name of `GET /crm/v8/{module}`.
pub const CRM_LIST: &str = "zoho.crm_list";
/// Route name of `GET /crm/v8/{module}/{id}`.
pub const CRM_GET: &str = "zoho.crm_get";
/// Route name of `POST /crm/v8/{module}`.
pub const CRM_INSERT: &str = "zoho.crm_insert";
/// Route name of `PUT /crm/v8/{module}`.
pub const CRM_UPDATE: &str = "zoho.crm_update";
/// Route name of `POST /crm/v8/{module}/upsert`.
pub const CRM_UPSERT: &str = "zoho.crm_upsert";
/// Route name of `DELETE /crm/v8/{module}?ids=`.
pub const CRM_DELETE: &str = "zoho.crm_delete";
/// Route name of `GET /crm/v8/{module}/deleted`.
pub const CRM_DELETED: &str = "zoho.crm_deleted";
/// Route name of `GET /crm/v8/{module}/search`.
pub const CRM_SEARCH: &str = "zoho.crm_search";
/// Route name of `GET /crm/v8/settings/fields`.
pub const CRM_FIELDS: &str = "zoho.crm_fields";
/// Route name of `POST /crm/v8/settings/fields`.
pub const CRM_FIELD_CREATE: &str = "zoho.crm_field_create";

/// Every CRM route name.
pub const ROUTES: [&str; 10] = [
    CRM_LIST,
    CRM_GET,
    CRM_INSERT,
    CRM_UPDATE,
    CRM_UPSERT,
    CRM_DELETE,
    CRM_DELETED,
    CRM_SEARCH,
    CRM_FIELDS,
    CRM_FIELD_CREATE,
];

/// Most records of one insert, update, upsert or delete.
pub const WRITE_LIMIT: usize = 100;
/// Largest page of the list, deleted and search routes.
pub const PAGE_LIMIT: usize = 200;
/// Records reachable with `page` (list) or at all (search).
pub const PAGE_DEPTH: usize = 2000;
/// Most field API names in `fields=`.
pub const FIELDS_LIMIT: usize = 50;
/// Most conditions in a search `criteria`.
pub const CRITERIA_LIMIT: usize = 10;
/// The default rolling 24-hour credit budget: Enterprise, 10 user licences.
pub const DEFAULT_CREDITS: u64 = 60_000;
/// How long a `page_token` is valid.
const PAGE_TOKEN_TTL_MS: i64 = 24 * 60 * 60 * 1000;
const ONE_DAY: Duration = Duration::from_secs(24 * 60 * 60);
const CREDITS_POLICY: &str = "ZOHO_CRM_CREDITS";

/// A module the stand-in serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum ZohoModule {
    /// `Contacts` (mandatory `Last_Name`, duplicate check on `Email`).
    Contacts,
    /// `Accounts` (mandatory `Account_Name`, which is also its duplicate check).
    Accounts,
    /// `Deals` (mandatory `Deal_Name` and `Stage`; lookups `Account_Name`, `Contact_Name`).
    Deals,
}

impl ZohoModule {
    /// The module from its API name (case-insensitive, as Zoho reads it).
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "contacts" => Some(Self::Contacts),
            "accounts" => Some(Self::Accounts),
            "deals" => Some(Self::Deals),
            _ => None,
        }
    }

    /// The module's API name.
    pub fn api_name(self) -> &'static str {
        match self {
            Self::Contacts => "Contacts",
            Self::Accounts => "Accounts",
            Self::Deals => "Deals",
        }
    }

    /// The module name in scopes (`ZohoCRM.modules.contacts.READ`).
    fn scope_name(self) -> &'static str {
        match self {
            Self::Contacts => "contacts",
            Self::Accounts => "accounts",
            Self::Deals => "deals",
        }
    }

    /// The mandatory fields.
    fn mandatory(self) -> &'static [&'static str] {
        match self {
            Self::Contacts => &["Last_Name"],
            Self::Accounts => &["Account_Name"],
            Self::Deals => &["Deal_Name", "Stage"],
        }
    }

    /// The module a lookup field of this module points to.
    fn lookup(self, field: &str) -> Option<ZohoModule> {
        match (self, field) {
            (Self::Deals, "Account_Name") => Some(Self::Accounts),
            (Self::Deals, "Contact_Name") => Some(Self::Contacts),
            _ => None,
        }
    }

    /// The values a restricted picklist takes.
    fn picklist(self, field: &str) -> Option<&'static [&'static str]> {
        match (self, field) {
            (Self::Deals, "Stage") => Some(&DEAL_STAGES),
            _ => None,
        }
    }

    fn fields(self) -> &'static [FieldDef] {
        match self {
            Self::Contacts => &CONTACT_FIELDS,
            Self::Accounts => &ACCOUNT_FIELDS,
            Self::Deals => &DEAL_FIELDS,
        }
    }

    fn module_id(self) -> &'static str {
        match self {
            Self::Contacts => "4876876000000002179",
            Self::Accounts => "4876876000000002177",
            Self::Deals => "4876876000000002181",
        }
    }

    fn first_id(self) -> u64 {
        match self {
            Self::Contacts => 4_876_876_000_000_500_001,
            Self::Accounts => 4_876_876_000_000_400_001,
            Self::Deals => 4_876_876_000_000_600_001,
        }
    }

    /// A record's name as Zoho shows it (deleted-record `display_name`).
    fn display_name(self, fields: &BTreeMap<String, Value>) -> String {
        let text = |name: &str| fields.get(name).and_then(Value::as_str).unwrap_or("");
        match self {
            Self::Contacts => format!("{} {}", text("First_Name"), text("Last_Name"))
                .trim()
                .to_owned(),
            Self::Accounts => text("Account_Name").to_owned(),
            Self::Deals => text("Deal_Name").to_owned(),
        }
    }
}

/// A built-in field: API name, label, data type, length, read-only, unique.
#[derive(Clone, Copy, Debug)]
struct FieldDef {
    api_name: &'static str,
    label: &'static str,
    data_type: &'static str,
    length: u32,
    read_only: bool,
    unique: bool,
}

const fn field(api_name: &'static str, label: &'static str, data_type: &'static str) -> FieldDef {
    FieldDef {
        api_name,
        label,
        data_type,
        length: 255,
        read_only: false,
        unique: false,
    }
}

const fn system(api_name: &'static str, label: &'static str, data_type: &'static str) -> FieldDef {
    FieldDef {
        read_only: true,
        ..field(api_name, label, data_type)
    }
}

#[rustfmt::skip]
const CONTACT_FIELDS: [FieldDef; 17] = [
    system("id", "Record Id", "bigint"),
    system("Owner", "Contact Owner", "ownerlookup"),
    field("First_Name", "First Name", "text"),
    FieldDef { length: 80, ..field("Last_Name", "Last Name", "text") },
    FieldDef { unique: true, length: 100, ..field("Email", "Email", "email") },
    FieldDef { length: 30, ..field("Phone", "Phone", "phone") },
    FieldDef { length: 30, ..field("Mobile", "Mobile", "phone") },
    FieldDef { length: 100, ..field("Title", "Title", "text") },
    FieldDef { length: 100, ..field("Department", "Department", "text") },
    field("Account_Name", "Account Name", "text"),
    FieldDef { length: 30, ..field("Mailing_City", "Mailing City", "text") },
    FieldDef { length: 30, ..field("Mailing_Country", "Mailing Country", "text") },
    FieldDef { length: 32000, ..field("Description", "Description", "textarea") },
    system("Created_By", "Created By", "ownerlookup"),
    system("Modified_By", "Modified By", "ownerlookup"),
    system("Created_Time", "Created Time", "datetime"),
    system("Modified_Time", "Modified Time", "datetime"),
];

#[rustfmt::skip]
const ACCOUNT_FIELDS: [FieldDef; 16] = [
    system("id", "Record Id", "bigint"),
    system("Owner", "Account Owner", "ownerlookup"),
    FieldDef { unique: true, length: 200, ..field("Account_Name", "Account Name", "text") },
    field("Website", "Website", "website"),
    FieldDef { length: 30, ..field("Phone", "Phone", "phone") },
    FieldDef { length: 120, ..field("Industry", "Industry", "picklist") },
    FieldDef { length: 16, ..field("Employees", "Employees", "integer") },
    FieldDef { length: 16, ..field("Annual_Revenue", "Annual Revenue", "currency") },
    FieldDef { length: 30, ..field("Billing_City", "Billing City", "text") },
    FieldDef { length: 30, ..field("Billing_Country", "Billing Country", "text") },
    FieldDef { length: 32000, ..field("Description", "Description", "textarea") },
    system("Created_By", "Created By", "ownerlookup"),
    system("Modified_By", "Modified By", "ownerlookup"),
    system("Created_Time", "Created Time", "datetime"),
    system("Modified_Time", "Modified Time", "datetime"),
    FieldDef { length: 32000, ..system("Tag", "Tag", "text") },
];

#[rustfmt::skip]
const DEAL_FIELDS: [FieldDef; 14] = [
    system("id", "Record Id", "bigint"),
    system("Owner", "Deal Owner", "ownerlookup"),
    FieldDef { length: 120, ..field("Deal_Name", "Deal Name", "text") },
    FieldDef { length: 16, ..field("Amount", "Amount", "currency") },
    FieldDef { length: 10, ..field("Closing_Date", "Closing Date", "date") },
    FieldDef { length: 120, ..field("Stage", "Stage", "picklist") },
    FieldDef { length: 18, ..field("Account_Name", "Account Name", "lookup") },
    FieldDef { length: 18, ..field("Contact_Name", "Contact Name", "lookup") },
    FieldDef { length: 3, ..field("Probability", "Probability (%)", "integer") },
    FieldDef { length: 32000, ..field("Description", "Description", "textarea") },
    system("Created_By", "Created By", "ownerlookup"),
    system("Modified_By", "Modified By", "ownerlookup"),
    system("Created_Time", "Created Time", "datetime"),
    system("Modified_Time", "Modified Time", "datetime"),
];

/// The `Stage` picklist of Zoho's standard deal layout.
const DEAL_STAGES: [&str; 9] = [
    "Qualification",
    "Needs Analysis",
    "Value Proposition",
    "Identify Decision Makers",
    "Proposal/Price Quote",
    "Negotiation/Review",
    "Closed Won",
    "Closed Lost",
    "Closed-Lost to Competition",
];

/// A custom single-line text field.
#[derive(Clone, Debug)]
struct CustomField {
    id: String,
    api_name: String,
    label: String,
    length: u32,
    unique: bool,
    created_ms: i64,
}

/// A record as the sandbox holds it, for assertions.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ZohoRecord {
    /// Zoho's 19-digit id.
    pub id: String,
    /// Every set field by API name (system fields not included).
    pub fields: BTreeMap<String, Value>,
    /// `Created_Time`, e.g. `2024-01-15T09:00:00+00:00`.
    pub created_time: String,
    /// `Modified_Time`.
    pub modified_time: String,
}

#[derive(Clone, Debug)]
struct Record {
    id: u64,
    fields: BTreeMap<String, Value>,
    created_ms: i64,
    modified_ms: i64,
}

#[derive(Clone, Debug)]
struct Deleted {
    id: u64,
    display_name: String,
    deleted_ms: i64,
    permanent: bool,
}

/// A live `page_token`: where the next page starts in one listing.
#[derive(Clone, Debug)]
struct PageToken {
    module: ZohoModule,
    since: Option<i64>,
    sort_by: &'static str,
    descending: bool,
    per_page: usize,
    offset: usize,
    expires_ms: i64,
}

/// One module's records in one org.
#[derive(Debug)]
struct Table {
    records: BTreeMap<u64, Record>,
    deleted: Vec<Deleted>,
    next_id: u64,
    /// Indexed fields (the unique ones, once a write needed them): field → key → id.
    index: HashMap<String, HashMap<String, u64>>,
}

impl Table {
    fn new(module: ZohoModule) -> Self {
        Self {
            records: BTreeMap::new(),
            deleted: Vec::new(),
            next_id: module.first_id(),
            index: HashMap::new(),
        }
    }

    /// The live record (other than `except`) whose `field` equals `value`
    /// (case-insensitive, trimmed).
    fn holder(&self, field: &str, value: &Value, except: u64) -> Option<u64> {
        let wanted = unique_key(value)?;
        if let Some(index) = self.index.get(field) {
            return index.get(&wanted).copied().filter(|id| *id != except);
        }
        self.records
            .values()
            .find(|r| {
                r.id != except
                    && r.fields
                        .get(field)
                        .and_then(Value::as_str)
                        .is_some_and(|v| v.trim().to_lowercase() == wanted)
            })
            .map(|r| r.id)
    }

    /// Starts indexing `field`'s values (no-op when already indexed).
    fn index_field(&mut self, field: &str) {
        if self.index.contains_key(field) {
            return;
        }
        let index: HashMap<String, u64> = self
            .records
            .values()
            .filter_map(|r| Some((unique_key(r.fields.get(field)?)?, r.id)))
            .collect();
        self.index.insert(field.to_owned(), index);
    }

    /// Drops a record's values from the indexes (before it changes or goes).
    fn unindex(&mut self, id: u64) {
        let Some(record) = self.records.get(&id) else {
            return;
        };
        for (field, index) in &mut self.index {
            if let Some(key) = record.fields.get(field).and_then(unique_key)
                && index.get(&key) == Some(&id)
            {
                index.remove(&key);
            }
        }
    }

    /// Adds a record's values to the indexes (after it was written).
    fn reindex(&mut self, id: u64) {
        let Some(record) = self.records.get(&id) else {
            return;
        };
        for (field, index) in &mut self.index {
            if let Some(key) = record.fields.get(field).and_then(unique_key) {
                index.entry(key).or_insert(id);
            }
        }
    }
}

/// A unique field's value as the index keys it: trimmed, lower-cased text; `None` when
/// empty or not text.
fn unique_key(value: &Value) -> Option<String> {
    let key = value.as_str()?.trim().to_lowercase();
    (!key.is_empty()).then_some(key)
}

/// One org: its tables, custom fields, credit budget and page tokens.
#[derive(Debug, Default)]
struct Org {
    tables: HashMap<ZohoModule, Table>,
    custom: HashMap<ZohoModule, Vec<CustomField>>,
    credits: Option<u64>,
    tokens: HashMap<String, PageToken>,
    next_token: u64,
    last_ms: i64,
    /// Notification channels and the changes they may want.
    watch: super::zoho_webhooks::Channels,
}

impl Org {
    fn table(&mut self, module: ZohoModule) -> &mut Table {
        self.tables
            .entry(module)
            .or_insert_with(|| Table::new(module))
    }

    /// A write time: now, never before an earlier write of the org.
    fn stamp(&mut self) -> i64 {
        self.last_ms = now_ms().max(self.last_ms + 1);
        self.last_ms
    }

    fn customs(&self, module: ZohoModule) -> &[CustomField] {
        self.custom.get(&module).map_or(&[], Vec::as_slice)
    }

    /// `(data_type, length, read_only, unique)` of a field, built-in or custom.
    fn field(&self, module: ZohoModule, name: &str) -> Option<(&'static str, u32, bool, bool)> {
        if let Some(def) = module.fields().iter().find(|f| f.api_name == name) {
            return Some((def.data_type, def.length, def.read_only, def.unique));
        }
        self.customs(module)
            .iter()
            .find(|c| c.api_name == name)
            .map(|c| ("text", c.length, false, c.unique))
    }

    /// Every unique field of `module`.
    fn unique_fields(&self, module: ZohoModule) -> Vec<String> {
        module
            .fields()
            .iter()
            .filter(|f| f.unique)
            .map(|f| f.api_name.to_owned())
            .chain(
                self.customs(module)
                    .iter()
                    .filter(|c| c.unique)
                    .map(|c| c.api_name.clone()),
            )
            .collect()
    }
}

/// Every org's Zoho CRM data and the malformed-response knob.
#[derive(Debug, Default)]
pub(crate) struct ZohoStore {
    orgs: HashMap<String, Org>,
    malformed: HashMap<String, u32>,
    /// Notifications waiting and sent.
    pub(crate) watch_out: super::zoho_webhooks::Outbox,
}

impl ZohoStore {
    /// An org's notification channels.
    pub(crate) fn channels(&mut self, org: &str) -> &mut super::zoho_webhooks::Channels {
        &mut self.org(org).watch
    }

    /// Every org's notification channels.
    pub(crate) fn all_channels(
        &mut self,
    ) -> impl Iterator<Item = &mut super::zoho_webhooks::Channels> {
        self.orgs.values_mut().map(|o| &mut o.watch)
    }

    fn org(&mut self, org: &str) -> &mut Org {
        self.orgs.entry(org.to_owned()).or_default()
    }

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

/// Epoch milliseconds as Zoho's `2024-01-15T09:00:00+00:00` (UTC, whole seconds).
pub fn zoho_time(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}+00:00",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60
    )
}

fn seconds(ms: i64) -> i64 {
    ms.div_euclid(1000)
}

/// Fields of the `n`th seeded record (deterministic; emails and account names unique).
fn seed_fields(module: ZohoModule, n: u64) -> BTreeMap<String, Value> {
    let pairs: Vec<(&str, Value)> = match module {
        ZohoModule::Contacts => {
            let p = sample::person(n);
            vec![
                ("First_Name", p.first.into()),
                ("Last_Name", p.last.into()),
                ("Email", p.email.into()),
                ("Phone", p.phone.into()),
                ("Mobile", p.mobile.into()),
                ("Title", p.title.into()),
                ("Department", p.department.into()),
                ("Account_Name", p.company.into()),
                ("Mailing_City", p.city.into()),
                ("Mailing_Country", p.country.into()),
            ]
        }
        ZohoModule::Accounts => {
            let c = sample::company(n);
            vec![
                ("Account_Name", c.name.into()),
                ("Website", format!("https://www.{}", c.domain).into()),
                ("Phone", c.phone.into()),
                ("Industry", zoho_industry(c.industry).into()),
                ("Employees", c.employees.into()),
                ("Annual_Revenue", c.revenue.into()),
                ("Billing_City", c.city.into()),
                ("Billing_Country", c.country.into()),
                ("Description", c.description.into()),
            ]
        }
        ZohoModule::Deals => {
            let c = sample::company(n);
            vec![
                ("Deal_Name", format!("Deal {n} with {}", c.name).into()),
                ("Stage", DEAL_STAGES[(n % 6) as usize].into()),
                ("Amount", (1000 + n * 250).into()),
                ("Closing_Date", format!("2027-0{}-15", 1 + n % 9).into()),
            ]
        }
    };
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

fn zoho_industry(industry: sample::Industry) -> &'static str {
    match industry {
        sample::Industry::Technology => "Technology",
        sample::Industry::Finance => "Financial Services",
        sample::Industry::Retail => "Retail",
        sample::Industry::Healthcare => "Health Care",
        sample::Industry::Other => "Manufacturing",
    }
}

impl Record {
    fn view(&self) -> ZohoRecord {
        ZohoRecord {
            id: self.id.to_string(),
            fields: self.fields.clone(),
            created_time: zoho_time(self.created_ms),
            modified_time: zoho_time(self.modified_ms),
        }
    }

    /// The record as Zoho answers it: `names` selects fields (`None`: every field).
    fn to_json(
        &self,
        module: ZohoModule,
        org: &Org,
        owner: &Value,
        names: Option<&[String]>,
    ) -> Value {
        let all: Vec<String>;
        let names = match names {
            Some(names) => names,
            None => {
                all = module
                    .fields()
                    .iter()
                    .map(|f| f.api_name.to_owned())
                    .chain(org.customs(module).iter().map(|c| c.api_name.clone()))
                    .collect();
                &all
            }
        };
        let mut out = Map::new();
        out.insert("id".into(), json!(self.id.to_string()));
        for name in names {
            let value = match name.as_str() {
                "id" => continue,
                "Owner" | "Created_By" | "Modified_By" => owner.clone(),
                "Created_Time" => json!(zoho_time(self.created_ms)),
                "Modified_Time" => json!(zoho_time(self.modified_ms)),
                "Tag" => json!([]),
                _ => match (module.lookup(name), self.fields.get(name)) {
                    // A lookup is held as the id and answered as `{name, id}`.
                    (Some(target), Some(Value::String(id))) => {
                        let shown = id
                            .parse::<u64>()
                            .ok()
                            .and_then(|n| org.tables.get(&target)?.records.get(&n))
                            .map(|r| target.display_name(&r.fields));
                        json!({"name": shown, "id": id})
                    }
                    (_, value) => value.cloned().unwrap_or(Value::Null),
                },
            };
            out.insert(name.clone(), value);
        }
        Value::Object(out)
    }
}

/// `{"name","id","email"}` of the acting user.
fn user_ref(user: &OAuthUser) -> Value {
    json!({"name": user.name, "id": user.user_id, "email": user.email})
}

/// The org's default user, for records written outside the API.
fn system_user() -> Value {
    json!({"name": "Sandbox Admin", "id": "4876876000000321001", "email": "admin@acme.test"})
}

impl SandboxState {
    /// Adds `n` records to `module` of Zoho org `org` ([`DEFAULT_ZOHO_ORG`] is the default
    /// user's) and returns their ids in order. Contacts get `First_Name`, `Last_Name`,
    /// `Email` (unique), `Phone`, `Mobile`, `Title`, `Department`, `Account_Name`,
    /// `Mailing_City`, `Mailing_Country`; accounts `Account_Name` (unique), `Website`,
    /// `Phone`, `Industry`, `Employees`, `Annual_Revenue`, `Billing_City`,
    /// `Billing_Country`, `Description`. Deterministic: the n-th record of a module has
    /// the same values in every sandbox.
    pub fn seed_zoho(&self, org: &str, module: ZohoModule, n: usize) -> Vec<String> {
        let mut store = self.zoho_crm_store();
        let org = store.org(org);
        let now = org.stamp();
        let table = org.table(module);
        let mut ids = Vec::with_capacity(n);
        for _ in 0..n {
            let id = table.next_id;
            table.next_id += 1;
            let sequence = id - module.first_id();
            table.records.insert(
                id,
                Record {
                    id,
                    fields: seed_fields(module, sequence),
                    created_ms: now,
                    modified_ms: now,
                },
            );
            table.reindex(id);
            ids.push(id.to_string());
        }
        let made = ids.iter().filter_map(|id| id.parse().ok()).collect();
        org.watch.note(module, "insert", made, Vec::new(), now);
        ids
    }

    /// Every live record of `module` in `org`, by id.
    pub fn zoho_records(&self, org: &str, module: ZohoModule) -> Vec<ZohoRecord> {
        let store = self.zoho_crm_store();
        store
            .orgs
            .get(org)
            .and_then(|o| o.tables.get(&module))
            .map(|t| t.records.values().map(Record::view).collect())
            .unwrap_or_default()
    }

    /// One live record.
    pub fn zoho_record(&self, org: &str, module: ZohoModule, id: &str) -> Option<ZohoRecord> {
        let id: u64 = id.trim().parse().ok()?;
        let store = self.zoho_crm_store();
        store
            .orgs
            .get(org)?
            .tables
            .get(&module)?
            .records
            .get(&id)
            .map(Record::view)
    }

    /// Changes a live record as a user would in Zoho's UI: sets the fields (null
    /// clears) and stamps `Modified_Time`. `None` when there is no such record. Field
    /// names and values are not checked.
    pub fn update_zoho_record(
        &self,
        org: &str,
        module: ZohoModule,
        id: &str,
        fields: &BTreeMap<String, Value>,
    ) -> Option<ZohoRecord> {
        let id: u64 = id.trim().parse().ok()?;
        let mut store = self.zoho_crm_store();
        let org = store.org(org);
        let now = org.stamp();
        let table = org.table(module);
        table.records.get(&id)?;
        table.unindex(id);
        let record = table.records.get_mut(&id)?;
        for (name, value) in fields {
            if value.is_null() {
                record.fields.remove(name);
            } else {
                record.fields.insert(name.clone(), value.clone());
            }
        }
        record.modified_ms = now;
        let view = record.view();
        table.reindex(id);
        let names = fields.keys().cloned().collect();
        org.watch.note(module, "update", vec![id], names, now);
        Some(view)
    }

    /// Deletes a live record as a user would (to the recycle bin); false when none.
    pub fn delete_zoho_record(&self, org: &str, module: ZohoModule, id: &str) -> bool {
        let Ok(id) = id.trim().parse::<u64>() else {
            return false;
        };
        let mut store = self.zoho_crm_store();
        let org = store.org(org);
        let now = org.stamp();
        let gone = delete_record(org.table(module), module, id, now);
        if gone {
            org.watch.note(module, "delete", vec![id], Vec::new(), now);
        }
        gone
    }

    /// Empties the recycle bin of `module` (an admin did, or 60 days passed): its records
    /// are listed as `permanent` from now on. Returns how many.
    pub fn empty_zoho_recycle_bin(&self, org: &str, module: ZohoModule) -> usize {
        let mut store = self.zoho_crm_store();
        let table = store.org(org).table(module);
        let mut count = 0;
        for deleted in table.deleted.iter_mut().filter(|d| !d.permanent) {
            deleted.permanent = true;
            count += 1;
        }
        count
    }

    /// Defines a custom single-line text field labelled `label` on `module` (as an admin
    /// would in Zoho's layout editor) and returns its API name (`Conduit Id` →
    /// `Conduit_Id`); `unique` makes it "Do not allow duplicate values". `None` when a
    /// field with that API name exists.
    pub fn zoho_define_field(
        &self,
        org: &str,
        module: ZohoModule,
        label: &str,
        unique: bool,
    ) -> Option<String> {
        let mut store = self.zoho_crm_store();
        define_field(store.org(org), module, label, 255, unique).ok()
    }

    /// Sets `org`'s rolling 24-hour API credit budget (default [`DEFAULT_CREDITS`]), to
    /// make Zoho's 429 `TOO_MANY_REQUESTS` reachable in tests.
    pub fn set_zoho_credit_limit(&self, org: &str, credits: u64) {
        self.zoho_crm_store().org(org).credits = Some(credits);
    }

    /// Credits `org` may still spend in the current 24-hour window.
    pub fn zoho_credits_remaining(&self, org: &str) -> u64 {
        let limit = credit_limit(self, org);
        let policies = credit_policy(limit);
        let key = credit_key(org);
        self.with_limiter(|l| l.peek(&key, &policies, Instant::now()))
            .first()
            .map_or(limit, |u| u.remaining)
    }

    /// Makes the next `count` answers with a body of route `route` (e.g.
    /// `zoho.crm_list`) carry a truncated, unparseable JSON body with their usual status.
    pub fn malform_zoho_responses(&self, route: &str, count: u32) {
        let mut store = self.zoho_crm_store();
        if count == 0 {
            store.malformed.remove(route);
        } else {
            store.malformed.insert(route.to_owned(), count);
        }
    }
}

fn delete_record(table: &mut Table, module: ZohoModule, id: u64, now: i64) -> bool {
    table.unindex(id);
    match table.records.remove(&id) {
        Some(record) => {
            table.deleted.push(Deleted {
                id,
                display_name: module.display_name(&record.fields),
                deleted_ms: now,
                permanent: false,
            });
            true
        }
        None => false,
    }
}

/// The API name Zoho derives from a field label.
fn api_name_of(label: &str) -> String {
    label
        .trim()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn define_field(
    org: &mut Org,
    module: ZohoModule,
    label: &str,
    length: u32,
    unique: bool,
) -> Result<String, ()> {
    let api_name = api_name_of(label);
    if api_name.is_empty() || org.field(module, &api_name).is_some() {
        return Err(());
    }
    let number = org.custom.values().map(Vec::len).sum::<usize>() + 1;
    let created_ms = org.stamp();
    org.custom.entry(module).or_default().push(CustomField {
        id: format!("48768760000009{number:05}"),
        api_name: api_name.clone(),
        label: label.trim().to_owned(),
        length,
        unique,
        created_ms,
    });
    Ok(api_name)
}

fn credit_key(org: &str) -> String {
    format!("zoho-credits:{org}")
}

fn credit_policy(limit: u64) -> [Policy; 1] {
    [Policy::rolling(CREDITS_POLICY, limit, ONE_DAY)]
}

fn credit_limit(state: &SandboxState, org: &str) -> u64 {
    state
        .zoho_crm_store()
        .orgs
        .get(org)
        .and_then(|o| o.credits)
        .unwrap_or(DEFAULT_CREDITS)
}

/// Spends `credits` of the org's budget, all or none; the error is Zoho's 429.
pub(crate) fn spend(state: &SandboxState, org: &str, credits: u64) -> Result<(), Response> {
    let limit = credit_limit(state, org);
    let policies = credit_policy(limit);
    let key = credit_key(org);
    let allowed = state.with_limiter(|limiter| {
        let now = Instant::now();
        let remaining = limiter
            .peek(&key, &policies, now)
            .first()
            .map_or(0, |u| u.remaining);
        if remaining < credits {
            return false;
        }
        (0..credits).all(|_| {
            matches!(
                limiter.acquire(&key, &policies, now),
                Verdict::Allowed { .. }
            )
        })
    });
    if allowed {
        Ok(())
    } else {
        Err(api_error(
            StatusCode::TOO_MANY_REQUESTS,
            "TOO_MANY_REQUESTS",
            "You have exceeded the maximum API credits allowed in a 24-hour window for your organization.",
        ))
    }
}

/// A CRM route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrmRoute {
    /// `GET /crm/v8/{module}`.
    List,
    /// `GET /crm/v8/{module}/{id}`.
    Get,
    /// `POST /crm/v8/{module}`.
    Insert,
    /// `PUT /crm/v8/{module}`.
    Update,
    /// `POST /crm/v8/{module}/upsert`.
    Upsert,
    /// `DELETE /crm/v8/{module}?ids=`.
    Delete,
    /// `GET /crm/v8/{module}/deleted`.
    Deleted,
    /// `GET /crm/v8/{module}/search`.
    Search,
    /// `GET /crm/v8/settings/fields?module=`.
    Fields,
    /// `POST /crm/v8/settings/fields?module=`.
    FieldCreate,
}

impl CrmRoute {
    /// The route's counter name.
    pub fn name(self) -> &'static str {
        match self {
            Self::List => CRM_LIST,
            Self::Get => CRM_GET,
            Self::Insert => CRM_INSERT,
            Self::Update => CRM_UPDATE,
            Self::Upsert => CRM_UPSERT,
            Self::Delete => CRM_DELETE,
            Self::Deleted => CRM_DELETED,
            Self::Search => CRM_SEARCH,
            Self::Fields => CRM_FIELDS,
            Self::FieldCreate => CRM_FIELD_CREATE,
        }
    }

    /// The scopes of which a token needs one, per each route's reference page:
    /// `ZohoCRM.modules.ALL` or `ZohoCRM.modules.{module}.{ALL|op…}` for records,
    /// `ZohoCRM.settings.ALL` or `ZohoCRM.settings.fields.{ALL|READ|CREATE}` for fields.
    pub fn required_scopes(self, module: ZohoModule) -> Vec<String> {
        let ops: &[&str] = match self {
            Self::List | Self::Get | Self::Deleted | Self::Search => &["READ"],
            Self::Insert => &["WRITE", "CREATE"],
            Self::Update => &["WRITE", "UPDATE"],
            Self::Upsert => &["WRITE", "CREATE"],
            Self::Delete => &["DELETE"],
            Self::Fields => {
                return vec![
                    "ZohoCRM.settings.ALL".to_owned(),
                    "ZohoCRM.settings.fields.ALL".to_owned(),
                    "ZohoCRM.settings.fields.READ".to_owned(),
                ];
            }
            Self::FieldCreate => {
                return vec![
                    "ZohoCRM.settings.ALL".to_owned(),
                    "ZohoCRM.settings.fields.ALL".to_owned(),
                    "ZohoCRM.settings.fields.CREATE".to_owned(),
                ];
            }
        };
        let module = module.scope_name();
        let mut scopes = vec![
            "ZohoCRM.modules.ALL".to_owned(),
            format!("ZohoCRM.modules.{module}.ALL"),
        ];
        scopes.extend(
            ops.iter()
                .map(|op| format!("ZohoCRM.modules.{module}.{op}")),
        );
        scopes
    }

    /// Credits one call spends for `records` records (Zoho's API Limits table).
    fn credits(self, records: usize) -> u64 {
        match self {
            Self::Insert | Self::Update | Self::Upsert => {
                u64::try_from(records.div_ceil(10).max(1)).unwrap_or(u64::MAX)
            }
            _ => 1,
        }
    }
}

/// The segments after `/crm/v8/`.
fn segments(path: &str) -> Option<Vec<&str>> {
    let rest = path.strip_prefix("/crm/v8/")?.trim_end_matches('/');
    let parts: Vec<&str> = rest.split('/').collect();
    parts.iter().all(|p| !p.is_empty()).then_some(parts)
}

/// Matches a v8 record or field path (any module name; unknown ones answer 400).
pub(crate) fn route(method: &Method, path: &str) -> Option<CrmRoute> {
    let parts = segments(path)?;
    let route = match (method, parts.as_slice()) {
        (&Method::GET, ["settings", "fields"]) => CrmRoute::Fields,
        (&Method::POST, ["settings", "fields"]) => CrmRoute::FieldCreate,
        (_, ["settings", ..]) => return None,
        (&Method::GET, [_]) => CrmRoute::List,
        (&Method::POST, [_]) => CrmRoute::Insert,
        (&Method::PUT, [_]) => CrmRoute::Update,
        (&Method::DELETE, [_]) => CrmRoute::Delete,
        (&Method::POST, [_, "upsert"]) => CrmRoute::Upsert,
        (&Method::GET, [_, "deleted"]) => CrmRoute::Deleted,
        (&Method::GET, [_, "search"]) => CrmRoute::Search,
        (&Method::GET, [_, id]) if id.bytes().all(|b| b.is_ascii_digit()) => CrmRoute::Get,
        _ => return None,
    };
    Some(route)
}

/// A handler's answer before rendering: status and body (`None`: empty).
type Reply = (StatusCode, Option<Value>);
type Handled = Result<Reply, Response>;

/// Who a call acts for.
struct Caller {
    org: String,
    user: Value,
}

/// Serves a CRM route at data centre `dc`: authenticate, check scopes, spend credits,
/// run (and malform the body when asked to).
pub(crate) fn handle(
    route: CrmRoute,
    state: &SandboxState,
    req: &ProviderRequest,
    dc: &str,
) -> Response {
    let grant = match oauth::bearer_access(state, OAuthProvider::Zoho, zoho_token(&req.headers)) {
        AccessCheck::Granted(grant) if grant.site == dc => grant,
        AccessCheck::Missing => {
            return api_error(
                StatusCode::UNAUTHORIZED,
                "AUTHENTICATION_FAILURE",
                "Authentication failed",
            );
        }
        _ => return invalid_token(),
    };
    let module_name = match route {
        CrmRoute::Fields | CrmRoute::FieldCreate => {
            match wire::query_param(req.query.as_deref(), "module") {
                Some(name) => name,
                None => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "REQUIRED_PARAM_MISSING",
                        "One of the expected parameter is missing",
                        json!({"param_name": "module"}),
                    );
                }
            }
        }
        _ => segments(&req.path)
            .and_then(|p| p.first().map(|s| (*s).to_owned()))
            .unwrap_or_default(),
    };
    let Some(module) = ZohoModule::parse(&module_name) else {
        return error(
            StatusCode::BAD_REQUEST,
            "INVALID_MODULE",
            "The module name given seems to be invalid",
            json!({"resource_path_index": 0}),
        );
    };
    // Zoho reads scopes case-insensitively (`ZohoCRM.modules.Contacts.READ` works too).
    let required = route.required_scopes(module);
    let granted = grant
        .scopes
        .iter()
        .any(|scope| required.iter().any(|r| r.eq_ignore_ascii_case(scope)));
    if !granted {
        return api_error(
            StatusCode::UNAUTHORIZED,
            "OAUTH_SCOPE_MISMATCH",
            "invalid oauth scope to access this URL",
        );
    }
    let records = match route {
        CrmRoute::Insert | CrmRoute::Update | CrmRoute::Upsert => record_count(req),
        _ => 1,
    };
    let org = grant.user.org_id.clone();
    if let Err(response) = spend(state, &org, route.credits(records)) {
        return response;
    }
    let caller = Caller {
        org,
        user: user_ref(&grant.user),
    };
    let reply = match route {
        CrmRoute::List => list(state, req, &caller, module),
        CrmRoute::Get => get(state, req, &caller, module),
        CrmRoute::Insert | CrmRoute::Update | CrmRoute::Upsert => {
            write(route, state, req, &caller, module)
        }
        CrmRoute::Delete => delete(state, req, &caller, module),
        CrmRoute::Deleted => deleted(state, req, &caller, module),
        CrmRoute::Search => search(state, req, &caller, module),
        CrmRoute::Fields => Ok((StatusCode::OK, Some(fields_json(state, &caller, module)))),
        CrmRoute::FieldCreate => create_field(state, req, &caller, module),
    };
    match reply {
        Ok((status, Some(body))) => {
            if state.zoho_crm_store().take_malformed(route.name()) {
                malformed(status, &body)
            } else {
                wire::json(status, body)
            }
        }
        Ok((status, None)) => status.into_response(),
        Err(response) => response,
    }
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

/// Zoho's error body with details.
fn error(status: StatusCode, code: &str, message: &str, details: Value) -> Response {
    wire::json(
        status,
        json!({"code": code, "details": details, "message": message, "status": "error"}),
    )
}

fn invalid_param(name: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "INVALID_DATA",
        "invalid data",
        json!({"param_name": name}),
    )
}

/// How many records a write body carries (0 when it does not parse; the handler then
/// answers the error).
fn record_count(req: &ProviderRequest) -> usize {
    serde_json::from_slice::<Value>(&req.body)
        .ok()
        .and_then(|v| v.get("data").and_then(Value::as_array).map(Vec::len))
        .unwrap_or(0)
}

fn query_param(req: &ProviderRequest, name: &str) -> Option<String> {
    wire::query_param(req.query.as_deref(), name)
}

/// The items of a comma-separated list (`ids=`, `fields=`, `channel_ids=`), blanks
/// dropped.
pub(super) fn list_items(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A positive integer query parameter within `1..=max`, or 400 `INVALID_DATA`.
fn number_param(
    req: &ProviderRequest,
    name: &str,
    default: usize,
    max: usize,
) -> Result<usize, Response> {
    match query_param(req, name) {
        None => Ok(default),
        Some(text) => match text.trim().parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(invalid_param(name)),
        },
    }
}

/// The `If-Modified-Since` header in epoch milliseconds, or 400.
fn modified_since(req: &ProviderRequest) -> Result<Option<i64>, Response> {
    match wire::header(&req.headers, "if-modified-since") {
        None => Ok(None),
        Some(text) => parse_datetime(text)
            .map(Some)
            .ok_or_else(|| invalid_param("If-Modified-Since")),
    }
}

/// The `fields=` list checked against the module, or 400.
fn field_names(org: &Org, module: ZohoModule, list: &str) -> Result<Vec<String>, Response> {
    let names = list_items(list);
    if names.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "REQUIRED_PARAM_MISSING",
            "One of the expected parameter is missing",
            json!({"param_name": "fields"}),
        ));
    }
    if names.len() > FIELDS_LIMIT {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "LIMIT_EXCEEDED",
            "Max field limit exceeded",
            json!({"param_name": "fields", "limit": FIELDS_LIMIT}),
        ));
    }
    if let Some(unknown) = names.iter().find(|n| org.field(module, n).is_none()) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "INVALID_DATA",
            "invalid data",
            json!({"api_name": unknown, "param_name": "fields"}),
        ));
    }
    Ok(names)
}

fn list(
    state: &SandboxState,
    req: &ProviderRequest,
    caller: &Caller,
    module: ZohoModule,
) -> Handled {
    let mut store = state.zoho_crm_store();
    let org = store.org(&caller.org);
    let names = match query_param(req, "fields") {
        Some(list) => field_names(org, module, &list)?,
        None => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "REQUIRED_PARAM_MISSING",
                "One of the expected parameter is missing",
                json!({"param_name": "fields"}),
            ));
        }
    };
    // `ids`: at most 100 record ids (others than digits match nothing).
    let only: Option<Vec<u64>> = match query_param(req, "ids") {
        None => None,
        Some(list) => {
            let ids = list_items(&list);
            if ids.is_empty() {
                return Err(invalid_param("ids"));
            }
            if ids.len() > WRITE_LIMIT {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "LIMIT_EXCEEDED",
                    "Record count exceeded",
                    json!({"limit": WRITE_LIMIT}),
                ));
            }
            Some(ids.iter().filter_map(|id| id.parse().ok()).collect())
        }
    };
    let now = now_ms();
    org.tokens.retain(|_, t| t.expires_ms > now);
    let (cursor, page) = match query_param(req, "page_token") {
        Some(token) => {
            if query_param(req, "page").is_some() {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_REQUEST",
                    "page and page_token cannot be given together",
                    json!({"param_name": "page_token"}),
                ));
            }
            match org.tokens.get(&token).filter(|t| t.module == module) {
                Some(cursor) => (cursor.clone(), None),
                None => {
                    return Err(error(
                        StatusCode::BAD_REQUEST,
                        "INVALID_DATA",
                        "invalid data",
                        json!({"param_name": "page_token"}),
                    ));
                }
            }
        }
        None => {
            let per_page = number_param(req, "per_page", PAGE_LIMIT, PAGE_LIMIT)?;
            let page = number_param(req, "page", 1, usize::MAX)?;
            if page.saturating_mul(per_page) > PAGE_DEPTH {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "DISCRETE_PAGINATION_LIMIT_EXCEEDED",
                    "The maximum number of records that can be fetched using the page parameter is 2000. Use page_token to fetch more.",
                    json!({"limit": PAGE_DEPTH}),
                ));
            }
            let sort_by = match query_param(req, "sort_by").as_deref() {
                None | Some("id") => "id",
                Some("Created_Time") => "Created_Time",
                Some("Modified_Time") => "Modified_Time",
                Some(_) => return Err(invalid_param("sort_by")),
            };
            let descending = match query_param(req, "sort_order").as_deref() {
                None | Some("desc") => true,
                Some("asc") => false,
                Some(_) => return Err(invalid_param("sort_order")),
            };
            let cursor = PageToken {
                module,
                since: modified_since(req)?,
                sort_by,
                descending,
                per_page,
                offset: (page - 1) * per_page,
                expires_ms: now + PAGE_TOKEN_TTL_MS,
            };
            (cursor, Some(page))
        }
    };
    org.table(module);
    let org_view: &Org = org;
    let mut rows: Vec<&Record> = org_view
        .tables
        .get(&module)
        .into_iter()
        .flat_map(|t| t.records.values())
        .filter(|r| {
            cursor
                .since
                .is_none_or(|since| seconds(r.modified_ms) > seconds(since))
        })
        .filter(|r| only.as_ref().is_none_or(|ids| ids.contains(&r.id)))
        .collect();
    let key = |r: &Record| match cursor.sort_by {
        "Created_Time" => (seconds(r.created_ms), r.id),
        "Modified_Time" => (seconds(r.modified_ms), r.id),
        _ => (0, r.id),
    };
    rows.sort_by_key(|r| key(r));
    if cursor.descending {
        rows.reverse();
    }
    let page_rows: Vec<&Record> = rows
        .iter()
        .skip(cursor.offset)
        .take(cursor.per_page)
        .copied()
        .collect();
    if page_rows.is_empty() {
        return Ok((
            empty_status(cursor.since.is_some() && cursor.offset == 0),
            None,
        ));
    }
    let more = rows.len() > cursor.offset + page_rows.len();
    let data: Vec<Value> = page_rows
        .iter()
        .map(|r| r.to_json(module, org_view, &system_user(), Some(&names)))
        .collect();
    let count = data.len();
    drop(rows);
    let next = more.then(|| PageToken {
        offset: cursor.offset + count,
        expires_ms: now + PAGE_TOKEN_TTL_MS,
        ..cursor.clone()
    });
    let next_token = next.map(|token| {
        org.next_token += 1;
        let name = format!("{:016x}{:08x}", org.last_ms.max(1), org.next_token);
        org.tokens.insert(name.clone(), token);
        name
    });
    let page_number = page.unwrap_or(cursor.offset / cursor.per_page + 1);
    Ok((
        StatusCode::OK,
        Some(json!({
            "data": data,
            "info": {
                "per_page": cursor.per_page,
                "count": count,
                "page": page_number,
                "sort_by": cursor.sort_by,
                "sort_order": if cursor.descending { "desc" } else { "asc" },
                "more_records": more,
                "next_page_token": next_token,
                "previous_page_token": null,
                "page_token_expiry": zoho_time(now + PAGE_TOKEN_TTL_MS),
            },
        })),
    ))
}

fn get(
    state: &SandboxState,
    req: &ProviderRequest,
    caller: &Caller,
    module: ZohoModule,
) -> Handled {
    let id = segments(&req.path)
        .and_then(|p| p.get(1).and_then(|id| id.parse::<u64>().ok()))
        .unwrap_or(0);
    let mut store = state.zoho_crm_store();
    let org = store.org(&caller.org);
    let names = match query_param(req, "fields") {
        Some(list) => Some(field_names(org, module, &list)?),
        None => None,
    };
    org.table(module);
    let org: &Org = org;
    match org.tables.get(&module).and_then(|t| t.records.get(&id)) {
        Some(record) => Ok((
            StatusCode::OK,
            Some(json!({"data": [record.to_json(module, org, &system_user(), names.as_deref())]})),
        )),
        None => Ok((StatusCode::NO_CONTENT, None)),
    }
}

/// An empty list's status: 304 when `If-Modified-Since` found nothing newer (Zoho's
/// status-code page: "not modified since the time given in the If-Modified-Since
/// header"), else 204.
fn empty_status(conditional: bool) -> StatusCode {
    if conditional {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::NO_CONTENT
    }
}

/// One record's outcome in a write answer.
fn outcome_error(code: &str, message: &str, details: Value) -> Value {
    json!({"code": code, "details": details, "message": message, "status": "error"})
}

/// Checks one input record's values against the module's fields: the first problem as
/// an outcome, else the values to store.
fn check_values(
    org: &Org,
    module: ZohoModule,
    index: usize,
    input: &Map<String, Value>,
) -> Result<Vec<(String, Value)>, Value> {
    let mut out = Vec::new();
    for (name, value) in input {
        if name == "id" || name.starts_with('$') {
            continue;
        }
        let path = format!("$.data[{index}].{name}");
        let Some((data_type, length, read_only, _)) = org.field(module, name) else {
            return Err(outcome_error(
                "INVALID_DATA",
                "invalid data",
                json!({"api_name": name, "json_path": path}),
            ));
        };
        if read_only {
            continue;
        }
        let invalid = |expected: &str| {
            outcome_error(
                "INVALID_DATA",
                "invalid data",
                json!({"api_name": name, "json_path": path, "expected_data_type": expected}),
            )
        };
        if let Some(target) = module.lookup(name) {
            // A lookup is written as `{"id": …}` (Zoho also takes the bare id) naming a
            // live record of its module.
            let id = match value {
                Value::Null => None,
                Value::Object(m) => m.get("id").and_then(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                }),
                Value::String(s) => Some(s.clone()),
                _ => return Err(invalid("lookup")),
            };
            let Some(id) = id else {
                if value.is_null() {
                    out.push((name.clone(), Value::Null));
                    continue;
                }
                return Err(invalid("lookup"));
            };
            let live = id.trim().parse::<u64>().ok().is_some_and(|n| {
                org.tables
                    .get(&target)
                    .is_some_and(|t| t.records.contains_key(&n))
            });
            if !live {
                return Err(outcome_error(
                    "INVALID_DATA",
                    "the related id given seems to be invalid",
                    json!({"api_name": name, "json_path": path, "id": id}),
                ));
            }
            out.push((name.clone(), Value::String(id.trim().to_owned())));
            continue;
        }
        if let (Some(options), Value::String(s)) = (module.picklist(name), value)
            && !options.contains(&s.as_str())
        {
            return Err(outcome_error(
                "INVALID_DATA",
                "invalid data",
                json!({"api_name": name, "json_path": path, "expected_data_type": "picklist"}),
            ));
        }
        let ok = match (data_type, value) {
            (_, Value::Null) => true,
            ("date", Value::String(s)) => s.len() == 10 && crate::clock::parse_date(s).is_some(),
            ("integer", Value::Number(n)) => n.is_i64(),
            ("currency", Value::Number(_)) => true,
            ("email", Value::String(s)) => {
                let s = s.trim();
                s.split_once('@').is_some_and(|(user, host)| {
                    !user.is_empty()
                        && host.contains('.')
                        && !host.starts_with('.')
                        && !host.ends_with('.')
                })
            }
            ("text" | "textarea" | "phone" | "website" | "picklist", Value::String(_)) => true,
            _ => false,
        };
        if !ok {
            return Err(invalid(data_type));
        }
        if let Value::String(s) = value
            && s.chars().count() > length as usize
        {
            return Err(outcome_error(
                "INVALID_DATA",
                "invalid data",
                json!({"api_name": name, "json_path": path, "maximum_length": length.to_string()}),
            ));
        }
        out.push((name.clone(), value.clone()));
    }
    Ok(out)
}

fn duplicate(module: ZohoModule, field: &str, holder: u64, index: usize, owner: &Value) -> Value {
    outcome_error(
        "DUPLICATE_DATA",
        "duplicate data",
        json!({
            "api_name": field,
            "json_path": format!("$.data[{index}].{field}"),
            "id": holder.to_string(),
            "duplicate_record": {
                "id": holder.to_string(),
                "module": {"api_name": module.api_name(), "id": module.module_id()},
                "Owner": owner,
            },
        }),
    )
}

fn success(message: &str, record: &Record, created_by: &Value) -> Value {
    json!({
        "code": "SUCCESS",
        "details": {
            "Modified_Time": zoho_time(record.modified_ms),
            "Modified_By": created_by,
            "Created_Time": zoho_time(record.created_ms),
            "id": record.id.to_string(),
            "Created_By": created_by,
        },
        "message": message,
        "status": "success",
    })
}

/// Insert, update and upsert.
fn write(
    route: CrmRoute,
    state: &SandboxState,
    req: &ProviderRequest,
    caller: &Caller,
    module: ZohoModule,
) -> Handled {
    let body: Map<String, Value> = match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(map)) => map,
        _ => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "INVALID_DATA",
                "body",
                json!({}),
            ));
        }
    };
    let Some(Value::Array(inputs)) = body.get("data") else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "REQUIRED_PARAM_MISSING",
            "One of the expected parameter is missing",
            json!({"param_name": "data"}),
        ));
    };
    if inputs.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "REQUIRED_PARAM_MISSING",
            "One of the expected parameter is missing",
            json!({"param_name": "data"}),
        ));
    }
    if inputs.len() > WRITE_LIMIT {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "LIMIT_EXCEEDED",
            "Record count exceeded",
            json!({"limit": WRITE_LIMIT}),
        ));
    }
    let mut store = state.zoho_crm_store();
    let org = store.org(&caller.org);
    let check_fields: Vec<String> = match body.get("duplicate_check_fields") {
        None | Some(Value::Null) => org.unique_fields(module),
        Some(Value::Array(names)) if route == CrmRoute::Upsert => {
            let mut fields = Vec::new();
            for name in names {
                match name
                    .as_str()
                    .and_then(|n| org.field(module, n).map(|f| (n, f)))
                {
                    Some((n, ("text" | "email" | "phone" | "website", _, false, _))) => {
                        fields.push(n.to_owned())
                    }
                    _ => {
                        return Err(error(
                            StatusCode::BAD_REQUEST,
                            "INVALID_DATA",
                            "invalid data",
                            json!({"api_name": name.as_str().unwrap_or_default(), "json_path": "$.duplicate_check_fields"}),
                        ));
                    }
                }
            }
            fields
        }
        Some(_) => return Err(invalid_param("duplicate_check_fields")),
    };
    let unique = org.unique_fields(module);
    let now = org.stamp();
    {
        let table = org.table(module);
        for field in unique.iter().chain(&check_fields) {
            table.index_field(field);
        }
    }
    let mut results = Vec::with_capacity(inputs.len());
    // What the channels of the org hear: ids inserted, ids updated, fields written.
    let (mut inserted, mut updated, mut written) = (Vec::new(), Vec::new(), Vec::new());
    for (index, input) in inputs.iter().enumerate() {
        let Some(input) = input.as_object() else {
            results.push(outcome_error(
                "INVALID_DATA",
                "invalid data",
                json!({"json_path": format!("$.data[{index}]")}),
            ));
            continue;
        };
        let values = match check_values(org, module, index, input) {
            Ok(values) => values,
            Err(outcome) => {
                results.push(outcome);
                continue;
            }
        };
        let table = org.table(module);
        // Which record the input names: by id (update), by duplicate check (upsert).
        let (target, matched_on) = match route {
            CrmRoute::Update => {
                let id = input.get("id").and_then(|v| match v {
                    Value::String(s) => s.trim().parse::<u64>().ok(),
                    Value::Number(n) => n.as_u64(),
                    _ => None,
                });
                match (
                    input.get("id"),
                    id.filter(|id| table.records.contains_key(id)),
                ) {
                    (None, _) => {
                        results.push(outcome_error(
                            "MANDATORY_NOT_FOUND",
                            "required field not found",
                            json!({"api_name": "id", "json_path": format!("$.data[{index}].id")}),
                        ));
                        continue;
                    }
                    (Some(_), None) => {
                        results.push(outcome_error(
                            "INVALID_DATA",
                            "the id given seems to be invalid",
                            json!({"api_name": "id", "json_path": format!("$.data[{index}].id")}),
                        ));
                        continue;
                    }
                    (Some(_), Some(id)) => (Some(id), None),
                }
            }
            CrmRoute::Upsert => check_fields
                .iter()
                .find_map(|field| {
                    values
                        .iter()
                        .find(|(n, _)| n == field)
                        .and_then(|(_, v)| table.holder(field, v, 0))
                        .map(|id| (Some(id), Some(field.clone())))
                })
                .unwrap_or((None, None)),
            _ => (None, None),
        };
        // A new record needs the mandatory fields; an update may not clear them.
        let missing = module.mandatory().iter().find(|mandatory| {
            let given = values.iter().find(|(n, _)| n == *mandatory).map(|(_, v)| v);
            match (target, given) {
                (None, None) => true,
                (_, Some(v)) => v.as_str().is_none_or(|s| s.trim().is_empty()),
                (Some(_), None) => false,
            }
        });
        if let Some(mandatory) = missing {
            results.push(outcome_error(
                "MANDATORY_NOT_FOUND",
                "required field not found",
                json!({"api_name": mandatory, "json_path": format!("$.data[{index}].{mandatory}")}),
            ));
            continue;
        }
        let except = target.unwrap_or(0);
        if let Some((field, holder)) = unique.iter().find_map(|field| {
            let (_, value) = values.iter().find(|(n, _)| n == field)?;
            table.holder(field, value, except).map(|h| (field, h))
        }) {
            results.push(duplicate(module, field, holder, index, &system_user()));
            continue;
        }
        let (id, created) = match target {
            Some(id) => (id, false),
            None => {
                let id = table.next_id;
                table.next_id += 1;
                table.records.insert(
                    id,
                    Record {
                        id,
                        fields: BTreeMap::new(),
                        created_ms: now,
                        modified_ms: now,
                    },
                );
                (id, true)
            }
        };
        table.unindex(id);
        let Some(record) = table.records.get_mut(&id) else {
            continue;
        };
        for (name, value) in values {
            if !created && !written.contains(&name) {
                written.push(name.clone());
            }
            if value.is_null() {
                record.fields.remove(&name);
            } else {
                record.fields.insert(name, value);
            }
        }
        record.modified_ms = now;
        if created {
            inserted.push(id);
        } else {
            updated.push(id);
        }
        let record = record.clone();
        table.reindex(id);
        let record = &record;
        let message = if created {
            "record added"
        } else {
            "record updated"
        };
        let mut outcome = success(message, record, &caller.user);
        if route == CrmRoute::Upsert {
            outcome["action"] = json!(if created { "insert" } else { "update" });
            outcome["duplicate_field"] = matched_on.map_or(Value::Null, Value::String);
        }
        results.push(outcome);
    }
    org.watch.note(module, "insert", inserted, Vec::new(), now);
    org.watch.note(module, "update", updated, written, now);
    Ok((
        write_status(route, &results),
        Some(json!({"data": results})),
    ))
}

/// 201/200 when every record succeeded, 400 when none did, 207 when some did.
fn write_status(route: CrmRoute, results: &[Value]) -> StatusCode {
    let ok = results.iter().filter(|r| r["status"] == "success").count();
    if ok == results.len() {
        if route == CrmRoute::Insert {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        }
    } else if ok == 0 {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::MULTI_STATUS
    }
}

fn delete(
    state: &SandboxState,
    req: &ProviderRequest,
    caller: &Caller,
    module: ZohoModule,
) -> Handled {
    let ids = list_items(&query_param(req, "ids").unwrap_or_default());
    if ids.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "REQUIRED_PARAM_MISSING",
            "One of the expected parameter is missing",
            json!({"param_name": "ids"}),
        ));
    }
    if ids.len() > WRITE_LIMIT {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "LIMIT_EXCEEDED",
            "Record count exceeded",
            json!({"limit": WRITE_LIMIT}),
        ));
    }
    let mut store = state.zoho_crm_store();
    let org = store.org(&caller.org);
    let now = org.stamp();
    let table = org.table(module);
    let mut gone = Vec::new();
    let results: Vec<Value> = ids
        .iter()
        .map(|id| match id.parse::<u64>() {
            Ok(n) if delete_record(table, module, n, now) => {
                gone.push(n);
                json!({
                "code": "SUCCESS",
                "details": {"id": id},
                "message": "record deleted",
                "status": "success",
                })
            }
            _ => outcome_error(
                "INVALID_DATA",
                "the id given seems to be invalid",
                json!({"id": id}),
            ),
        })
        .collect();
    org.watch.note(module, "delete", gone, Vec::new(), now);
    Ok((
        write_status(CrmRoute::Delete, &results),
        Some(json!({"data": results})),
    ))
}

fn deleted(
    state: &SandboxState,
    req: &ProviderRequest,
    caller: &Caller,
    module: ZohoModule,
) -> Handled {
    let kind = query_param(req, "type").unwrap_or_else(|| "all".to_owned());
    if !matches!(kind.as_str(), "all" | "recycle" | "permanent") {
        return Err(invalid_param("type"));
    }
    let per_page = number_param(req, "per_page", PAGE_LIMIT, PAGE_LIMIT)?;
    let page = number_param(req, "page", 1, usize::MAX)?;
    let since = modified_since(req)?;
    let mut store = state.zoho_crm_store();
    let table = store.org(&caller.org).table(module);
    let mut rows: Vec<&Deleted> = table
        .deleted
        .iter()
        .filter(|d| match kind.as_str() {
            "recycle" => !d.permanent,
            "permanent" => d.permanent,
            _ => true,
        })
        .filter(|d| since.is_none_or(|s| seconds(d.deleted_ms) > seconds(s)))
        .collect();
    rows.sort_by_key(|d| std::cmp::Reverse((d.deleted_ms, d.id)));
    let offset = (page - 1).saturating_mul(per_page);
    let data: Vec<Value> = rows
        .iter()
        .skip(offset)
        .take(per_page)
        .map(|d| {
            let permanent = d.permanent;
            json!({
                "deleted_by": system_user_min(),
                "id": d.id.to_string(),
                "display_name": if permanent { Value::Null } else { json!(d.display_name) },
                "type": if permanent { "permanent" } else { "recycle" },
                "created_by": if permanent { Value::Null } else { system_user_min() },
                "deleted_time": zoho_time(d.deleted_ms),
            })
        })
        .collect();
    if data.is_empty() {
        return Ok((empty_status(since.is_some() && offset == 0), None));
    }
    let more = rows.len() > offset + data.len();
    Ok((
        StatusCode::OK,
        Some(json!({
            "data": data,
            "info": {"per_page": per_page, "count": data.len(), "page": page, "more_records": more},
        })),
    ))
}

fn system_user_min() -> Value {
    json!({"name": "Sandbox Admin", "id": "4876876000000321001"})
}

/// One search condition.
#[derive(Debug, Clone, PartialEq)]
enum Criteria {
    Cond {
        field: String,
        op: String,
        value: String,
    },
    And(Vec<Criteria>),
    Or(Vec<Criteria>),
}

/// Parses Zoho's criteria grammar: `(F:op:v)`, `((A)and(B))`, `(A)or(B)`; values escape
/// `(`, `)` and `,` with `\`.
fn parse_criteria(text: &str) -> Option<Criteria> {
    let chars: Vec<char> = text.trim().chars().collect();
    let (criteria, end) = parse_group(&chars, 0)?;
    (end == chars.len()).then_some(criteria)
}

/// A sequence of parenthesised terms joined by `and`/`or` starting at `at`.
fn parse_group(chars: &[char], mut at: usize) -> Option<(Criteria, usize)> {
    let mut terms = Vec::new();
    let mut joiner: Option<&str> = None;
    loop {
        while chars.get(at) == Some(&' ') {
            at += 1;
        }
        if chars.get(at) != Some(&'(') {
            return None;
        }
        let (term, next) = parse_term(chars, at + 1)?;
        terms.push(term);
        at = next;
        while chars.get(at) == Some(&' ') {
            at += 1;
        }
        let rest: String = chars[at.min(chars.len())..]
            .iter()
            .take(3)
            .collect::<String>()
            .to_lowercase();
        let word = if rest.starts_with("and") {
            "and"
        } else if rest.starts_with("or") {
            "or"
        } else {
            break;
        };
        if joiner.is_some_and(|j| j != word) {
            return None;
        }
        joiner = Some(word);
        at += word.len();
    }
    let criteria = match (terms.len(), joiner) {
        (1, _) => terms.pop()?,
        (_, Some("or")) => Criteria::Or(terms),
        _ => Criteria::And(terms),
    };
    Some((criteria, at))
}

/// The inside of one `(…)` starting after its `(`: a nested group or a condition.
fn parse_term(chars: &[char], at: usize) -> Option<(Criteria, usize)> {
    let mut i = at;
    while chars.get(i) == Some(&' ') {
        i += 1;
    }
    if chars.get(i) == Some(&'(') {
        let (group, next) = parse_group(chars, i)?;
        let mut j = next;
        while chars.get(j) == Some(&' ') {
            j += 1;
        }
        return (chars.get(j) == Some(&')')).then_some((group, j + 1));
    }
    let mut text = String::new();
    while let Some(&c) = chars.get(i) {
        match c {
            '\\' => {
                text.push('\\');
                text.push(*chars.get(i + 1)?);
                i += 2;
            }
            ')' => break,
            '(' => return None,
            _ => {
                text.push(c);
                i += 1;
            }
        }
    }
    if chars.get(i) != Some(&')') {
        return None;
    }
    let mut parts = text.splitn(3, ':');
    let field = parts.next()?.trim().to_owned();
    let op = parts.next()?.trim().to_lowercase();
    let value = parts.next()?.to_owned();
    if field.is_empty() {
        return None;
    }
    Some((Criteria::Cond { field, op, value }, i + 1))
}

fn unescape(text: &str) -> String {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(next) = chars.next() {
                out.push(next);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Splits an `in` list on unescaped commas.
fn split_values(text: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut escaped = false;
    for c in text.chars() {
        match (escaped, c) {
            (false, '\\') => escaped = true,
            (false, ',') => out.push(String::new()),
            _ => {
                escaped = false;
                if let Some(last) = out.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    out.into_iter().map(|s| s.trim().to_owned()).collect()
}

fn conditions(criteria: &Criteria) -> Vec<&Criteria> {
    match criteria {
        Criteria::Cond { .. } => vec![criteria],
        Criteria::And(terms) | Criteria::Or(terms) => terms.iter().flat_map(conditions).collect(),
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

fn matches(record: &Record, criteria: &Criteria) -> bool {
    match criteria {
        Criteria::And(terms) => terms.iter().all(|t| matches(record, t)),
        Criteria::Or(terms) => terms.iter().any(|t| matches(record, t)),
        Criteria::Cond { field, op, value } => {
            let actual = match field.as_str() {
                "id" => Some(record.id.to_string()),
                _ => record.fields.get(field).and_then(value_text),
            };
            let actual = actual.map(|a| a.to_lowercase());
            let wanted = unescape(value).trim().to_lowercase();
            match (op.as_str(), actual) {
                ("equals", Some(a)) => a == wanted,
                ("not_equal", Some(a)) => a != wanted,
                ("not_equal", None) => true,
                ("starts_with", Some(a)) => a.starts_with(&wanted),
                ("in", Some(a)) => split_values(value).iter().any(|v| v.to_lowercase() == a),
                _ => false,
            }
        }
    }
}

fn search(
    state: &SandboxState,
    req: &ProviderRequest,
    caller: &Caller,
    module: ZohoModule,
) -> Handled {
    let given: Vec<(&str, String)> = ["criteria", "email", "phone", "word"]
        .into_iter()
        .filter_map(|name| query_param(req, name).map(|v| (name, v)))
        .collect();
    let [(kind, text)] = given.as_slice() else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "REQUIRED_PARAM_MISSING",
            "One of the expected parameter is missing",
            json!({"param_name": "criteria"}),
        ));
    };
    let per_page = number_param(req, "per_page", PAGE_LIMIT, PAGE_LIMIT)?;
    let page = number_param(req, "page", 1, usize::MAX)?;
    if page.saturating_mul(per_page) > PAGE_DEPTH {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "LIMIT_REACHED",
            "Search results exceed 2000 records; narrow the criteria",
            json!({"limit": PAGE_DEPTH}),
        ));
    }
    let mut store = state.zoho_crm_store();
    let org = store.org(&caller.org);
    let names = match query_param(req, "fields") {
        Some(list) => Some(field_names(org, module, &list)?),
        None => None,
    };
    let criteria = match *kind {
        "criteria" => {
            let criteria = parse_criteria(text).ok_or_else(|| {
                error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_QUERY",
                    "invalid query formed",
                    json!({"reason": "the criteria is not well formed", "param_name": "criteria"}),
                )
            })?;
            let conds = conditions(&criteria);
            if conds.len() > CRITERIA_LIMIT {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "LIMIT_EXCEEDED",
                    "Maximum lookup field limit in criteria exceeded",
                    json!({"limit": CRITERIA_LIMIT, "param_name": "criteria"}),
                ));
            }
            for cond in conds {
                if let Criteria::Cond { field, op, .. } = cond {
                    if field != "id" && org.field(module, field).is_none() {
                        return Err(error(
                            StatusCode::BAD_REQUEST,
                            "INVALID_QUERY",
                            "invalid query formed",
                            json!({"api_name": field, "reason": "invalid field", "param_name": "criteria"}),
                        ));
                    }
                    if !matches!(op.as_str(), "equals" | "not_equal" | "starts_with" | "in") {
                        return Err(error(
                            StatusCode::BAD_REQUEST,
                            "INVALID_QUERY",
                            "invalid query formed",
                            json!({"api_name": field, "operator": op, "reason": "invalid operator found", "param_name": "criteria"}),
                        ));
                    }
                }
            }
            criteria
        }
        "email" => Criteria::Cond {
            field: "Email".into(),
            op: "equals".into(),
            value: text.clone(),
        },
        "phone" => Criteria::Or(
            ["Phone", "Mobile"]
                .into_iter()
                .map(|field| Criteria::Cond {
                    field: field.into(),
                    op: "equals".into(),
                    value: text.clone(),
                })
                .collect(),
        ),
        _ => {
            if text.trim().chars().count() < 2 {
                return Err(invalid_param("word"));
            }
            let word = text.trim().to_lowercase();
            let org_ref: &Org = org;
            let hits = org_ref
                .tables
                .get(&module)
                .map(|t| {
                    t.records
                        .values()
                        .filter(|r| {
                            r.fields
                                .values()
                                .filter_map(value_text)
                                .any(|v| v.to_lowercase().contains(&word))
                        })
                        .map(|r| r.id)
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            return Ok(search_page(
                org_ref,
                module,
                hits,
                page,
                per_page,
                names.as_deref(),
            ));
        }
    };
    org.table(module);
    let org_ref: &Org = org;
    let hits: Vec<u64> = org_ref
        .tables
        .get(&module)
        .map(|t| {
            t.records
                .values()
                .filter(|r| matches(r, &criteria))
                .map(|r| r.id)
                .collect()
        })
        .unwrap_or_default();
    Ok(search_page(
        org_ref,
        module,
        hits,
        page,
        per_page,
        names.as_deref(),
    ))
}

fn search_page(
    org: &Org,
    module: ZohoModule,
    hits: Vec<u64>,
    page: usize,
    per_page: usize,
    names: Option<&[String]>,
) -> Reply {
    let hits: Vec<u64> = hits.into_iter().take(PAGE_DEPTH).collect();
    let offset = (page - 1) * per_page;
    let Some(table) = org.tables.get(&module) else {
        return (StatusCode::NO_CONTENT, None);
    };
    let data: Vec<Value> = hits
        .iter()
        .skip(offset)
        .take(per_page)
        .filter_map(|id| table.records.get(id))
        .map(|r| r.to_json(module, org, &system_user(), names))
        .collect();
    if data.is_empty() {
        return (StatusCode::NO_CONTENT, None);
    }
    let more = hits.len() > offset + data.len();
    (
        StatusCode::OK,
        Some(json!({
            "data": data,
            "info": {"per_page": per_page, "count": data.len(), "page": page, "more_records": more},
        })),
    )
}

/// One field's metadata with every member Zoho's `fields` schema requires.
#[allow(clippy::too_many_arguments)]
fn field_json(
    module: ZohoModule,
    id: &str,
    api_name: &str,
    label: &str,
    data_type: &str,
    length: u32,
    read_only: bool,
    unique: bool,
    custom: bool,
    created: Option<&str>,
) -> Value {
    let json_type = match data_type {
        "integer" | "bigint" => "integer",
        "currency" => "double",
        "ownerlookup" | "lookup" => "jsonobject",
        _ => "string",
    };
    let mandatory = module.mandatory().contains(&api_name);
    // Zoho's schema requires these objects; a plain text field has them empty.
    let none_module = json!({"api_name": null, "id": null});
    let mut head = json!({
        "id": id,
        "api_name": api_name,
        "field_label": label,
        "display_label": label,
        "column_name": api_name.to_uppercase(),
        "data_type": data_type,
        "json_type": json_type,
        "length": length,
        "read_only": read_only,
        "field_read_only": read_only,
        "system_mandatory": mandatory,
        "custom_field": custom,
        "unique": if unique { json!({"casesensitive": "false"}) } else { Value::Null },
        "associated_module": {"api_name": null, "id": null},
        "operation_type": {"web_update": !read_only, "api_create": !read_only, "web_create": !read_only, "api_update": !read_only},
    });
    let more = json!({
        "webhook": true,
        "blueprint_supported": !read_only,
        "virtual_field": false,
        "customizable_properties": [],
        "businesscard_supported": true,
        "filterable": true,
        "visible": true,
        "available_in_user_layout": true,
        "display_field": mandatory,
        "pick_list_values_sorted_lexically": false,
        "sortable": true,
        "layout_associations": [],
        "separator": false,
        "searchable": true,
        "enable_colour_code": false,
        "mass_update": !read_only,
        "created_source": if custom { "crm" } else { "default" },
        "type": "used",
        "display_type": -1,
        "ui_type": 1,
        "colour_code_enabled_by_system": false,
    });
    let rest = json!({
        "decimal_place": null,
        "quick_sequence_number": "1",
        "email_parser": {"fields_update_supported": false, "record_operations_supported": false},
        "rollup_summary": null,
        "refer_from_field": {"id": null, "api_name": null},
        "created_time": created,
        "modified_time": created,
        "show_type": 7,
        "category": 0,
        "multi_module_lookup": null,
        "sharing_properties": {},
        "currency": null,
        "file_upolad_optionlist": [],
        "lookup": null,
        "profiles": [],
        "view_type": {"view": true, "edit": !read_only, "quick_create": !read_only, "create": !read_only},
    });
    let tail = json!({
        "sub_module": {"api_name": null, "id": null},
        "subform": null,
        "external": {"show": false, "type": null, "allow_multiple_config": false},
        "formula": null,
        "convert_mapping": {},
        "multiselectlookup": null,
        "multiuserlookup": {
            "display_label": null, "linking_module": none_module, "connected_module": none_module,
            "lookup_apiname": null, "api_name": null, "connectedfield_apiname": null,
            "connectedlookup_apiname": null, "id": null, "record_access": null,
        },
        "autonumber": {"starting_number_length": 0, "prefix": null, "suffix": null, "start_number": null},
        "auto_number": null,
        "pick_list_values": [],
        "crypt": {"mode": null, "status": null},
        "tooltip": {"name": "", "value": ""},
        "history_tracking": {"module": {}, "duration_configured_field": none_module},
        "association_details": {"related_field": none_module, "lookup_field": none_module},
        "allowed_modules": [],
        "additional_column": null,
        "common.picklist": null,
        "hipaa_compliance_enabled": false,
        "hipaa_compliance": {"restricted_in_export": false, "restricted": false},
        "_update_existing_records": false,
        "number_separator": false,
        "textarea": {},
        "static_field": false,
    });
    for part in [more, rest, tail] {
        if let (Value::Object(out), Value::Object(part)) = (&mut head, part) {
            out.extend(part);
        }
    }
    if let Some(target) = module.lookup(api_name) {
        head["lookup"] = json!({
            "display_label": label, "api_name": api_name, "id": id,
            "module": {"api_name": target.api_name(), "id": target.module_id()},
            "query_details": {},
        });
    }
    if let Some(options) = module.picklist(api_name) {
        head["pick_list_values"] = options
            .iter()
            .enumerate()
            .map(|(i, v)| {
                json!({"display_value": v, "actual_value": v, "sequence_number": i + 1,
                    "reference_value": v, "type": "used", "id": format!("{id}{:02}", i + 1),
                    "colour_code": null})
            })
            .collect();
    }
    head
}

fn fields_json(state: &SandboxState, caller: &Caller, module: ZohoModule) -> Value {
    let mut store = state.zoho_crm_store();
    let org = store.org(&caller.org);
    let mut fields: Vec<Value> = module
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            field_json(
                module,
                &format!("{}{:03}", &module.module_id()[..16], i + 1),
                f.api_name,
                f.label,
                f.data_type,
                f.length,
                f.read_only,
                f.unique,
                false,
                None,
            )
        })
        .collect();
    for c in org.customs(module) {
        let created = zoho_time(c.created_ms);
        fields.push(field_json(
            module,
            &c.id,
            &c.api_name,
            &c.label,
            "text",
            c.length,
            false,
            c.unique,
            true,
            Some(&created),
        ));
    }
    json!({"fields": fields})
}

fn create_field(
    state: &SandboxState,
    req: &ProviderRequest,
    caller: &Caller,
    module: ZohoModule,
) -> Handled {
    let body = serde_json::from_slice::<Value>(&req.body).ok();
    let Some(inputs) = body
        .as_ref()
        .and_then(|b| b.get("fields"))
        .and_then(Value::as_array)
        .filter(|f| !f.is_empty())
    else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "MANDATORY_NOT_FOUND",
            "required field not found",
            json!({"api_name": "fields", "json_path": "$.fields"}),
        ));
    };
    let mut store = state.zoho_crm_store();
    let org = store.org(&caller.org);
    let mut results = Vec::new();
    for (index, input) in inputs.iter().enumerate() {
        let label = input
            .get("field_label")
            .and_then(Value::as_str)
            .unwrap_or("");
        let path = |member: &str| format!("$.fields[{index}].{member}");
        if label.trim().is_empty() {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "MANDATORY_NOT_FOUND",
                "required field not found",
                json!({"api_name": "field_label", "json_path": path("field_label")}),
            ));
        }
        match input.get("data_type").and_then(Value::as_str) {
            Some("text") => {}
            Some(_) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "INVALID_DATA",
                    "invalid data",
                    json!({"api_name": "data_type", "json_path": path("data_type"), "reason": "the sandbox creates single-line text fields only"}),
                ));
            }
            None => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "MANDATORY_NOT_FOUND",
                    "required field not found",
                    json!({"api_name": "data_type", "json_path": path("data_type")}),
                ));
            }
        }
        let length = match input.get("length") {
            None => 255,
            Some(v) => match v.as_u64().filter(|n| (1..=255).contains(n)) {
                Some(n) => u32::try_from(n).unwrap_or(255),
                None => {
                    return Err(error(
                        StatusCode::BAD_REQUEST,
                        "INVALID_DATA",
                        "invalid data",
                        json!({"api_name": "length", "json_path": path("length"), "maximum_length": "255"}),
                    ));
                }
            },
        };
        let unique = input.get("unique").is_some_and(|u| !u.is_null());
        match define_field(org, module, label, length, unique) {
            Ok(api_name) => {
                let id = org
                    .customs(module)
                    .iter()
                    .find(|c| c.api_name == api_name)
                    .map(|c| c.id.clone())
                    .unwrap_or_default();
                results.push(json!({
                    "code": "SUCCESS",
                    "details": {"id": id},
                    "message": "field created",
                    "status": "success",
                }));
            }
            Err(()) => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "DUPLICATE_DATA",
                    "duplicate data",
                    json!({"api_name": "field_label", "json_path": path("field_label")}),
                ));
            }
        }
    }
    Ok((StatusCode::CREATED, Some(json!({"fields": results}))))
}

#[cfg(test)]
mod tests {
    use axum::body::Bytes;
    use axum::http::HeaderMap;
    use axum::http::header::AUTHORIZATION;

    use super::*;

    const HOST: &str = "www.zohoapis.com";

    fn grant(state: &SandboxState, scopes: &[&str]) -> String {
        state
            .seed_grant(OAuthProvider::Zoho, "zoho-sandbox-client-id", None, scopes)
            .expect("grant")
            .access_token
    }

    /// Sends a request through the whole dispatch (counting, faults, routing).
    async fn call_at(
        state: &SandboxState,
        host: &str,
        method: Method,
        path_and_query: &str,
        auth: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
            None => (path_and_query.to_owned(), None),
        };
        let mut map = HeaderMap::new();
        if let Some(auth) = auth {
            map.insert(
                AUTHORIZATION,
                HeaderValue::from_str(&format!("Zoho-oauthtoken {auth}")).unwrap(),
            );
        }
        for (name, value) in headers {
            map.insert(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        let req = ProviderRequest {
            method,
            host: host.to_owned(),
            path,
            query,
            headers: map,
            body: body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string())),
        };
        let response = crate::providers::dispatch(state, req).await;
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (status, value)
    }

    /// Calls the stand-in's upsert directly: `POST /crm/v8/Contacts/upsert` over HTTP
    /// is claimed by the dispatch-action stand-in (`crate::actions::zoho`).
    async fn upsert_direct(
        state: &SandboxState,
        module: &str,
        auth: &str,
        body: Value,
    ) -> (StatusCode, Value) {
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Zoho-oauthtoken {auth}")).unwrap(),
        );
        let req = ProviderRequest {
            method: Method::POST,
            host: HOST.to_owned(),
            path: format!("/crm/v8/{module}/upsert"),
            query: None,
            headers,
            body: Bytes::from(body.to_string()),
        };
        let response = handle(CrmRoute::Upsert, state, &req, "com");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, serde_json::from_slice(&bytes).unwrap())
    }

    async fn call(
        state: &SandboxState,
        method: Method,
        path_and_query: &str,
        auth: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        call_at(state, HOST, method, path_and_query, Some(auth), &[], body).await
    }

    const ALL: &[&str] = &["ZohoCRM.modules.ALL", "ZohoCRM.settings.fields.ALL"];

    #[tokio::test]
    async fn auth_data_centre_and_scopes_are_enforced() {
        let state = SandboxState::new();
        let (status, body) = call_at(
            &state,
            HOST,
            Method::GET,
            "/crm/v8/Contacts?fields=Email",
            None,
            &[],
            None,
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(body["code"], "AUTHENTICATION_FAILURE");
        let all = grant(&state, ALL);
        let (status, body) = call_at(
            &state,
            "www.zohoapis.eu",
            Method::GET,
            "/crm/v8/Contacts?fields=Email",
            Some(&all),
            &[],
            None,
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("INVALID_TOKEN"))
        );
        let accounts_read = grant(&state, &["ZohoCRM.modules.accounts.READ"]);
        let (status, body) = call(
            &state,
            Method::GET,
            "/crm/v8/Contacts?fields=Email",
            &accounts_read,
            None,
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("OAUTH_SCOPE_MISMATCH"))
        );
        let (status, _) = call(
            &state,
            Method::GET,
            "/crm/v8/Accounts?fields=Account_Name",
            &accounts_read,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, body) = call(
            &state,
            Method::POST,
            "/crm/v8/Accounts",
            &accounts_read,
            Some(json!({"data": [{"Account_Name": "Globex"}]})),
        )
        .await;
        assert_eq!(body["code"], "OAUTH_SCOPE_MISMATCH", "{status}");
        let (_, body) = call(
            &state,
            Method::GET,
            "/crm/v8/settings/fields?module=Accounts",
            &accounts_read,
            None,
        )
        .await;
        assert_eq!(body["code"], "OAUTH_SCOPE_MISMATCH");
        let (status, body) = call(
            &state,
            Method::GET,
            "/crm/v8/Leads?fields=Email",
            &all,
            None,
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("INVALID_MODULE"))
        );
    }

    #[tokio::test]
    async fn lists_page_by_page_then_by_token_past_2000() {
        let state = SandboxState::new();
        let token = grant(&state, ALL);
        let (status, body) = call(&state, Method::GET, "/crm/v8/Contacts", &token, None).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("REQUIRED_PARAM_MISSING"))
        );
        let ids = state.seed_zoho(DEFAULT_ZOHO_ORG, ZohoModule::Contacts, 2150);
        let (status, body) = call(
            &state,
            Method::GET,
            "/crm/v8/Contacts?fields=Email,Last_Name&per_page=200&sort_order=asc",
            &token,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["data"].as_array().unwrap().len(), 200);
        assert_eq!(body["data"][0]["id"], ids[0]);
        assert!(body["data"][0]["Email"].is_string());
        assert!(body["data"][0].get("Phone").is_none());
        assert_eq!(body["info"]["more_records"], true);
        let (status, body) = call(
            &state,
            Method::GET,
            "/crm/v8/Contacts?fields=Email&per_page=200&page=11",
            &token,
            None,
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (
                StatusCode::BAD_REQUEST,
                Some("DISCRETE_PAGINATION_LIMIT_EXCEEDED")
            )
        );
        let (status, _) = call(
            &state,
            Method::GET,
            "/crm/v8/Contacts?fields=Email&per_page=201",
            &token,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, body) = call(
            &state,
            Method::GET,
            "/crm/v8/Contacts?fields=Nope",
            &token,
            None,
        )
        .await;
        assert_eq!(
            (status, body["details"]["api_name"].as_str()),
            (StatusCode::BAD_REQUEST, Some("Nope"))
        );
        // Walk everything with page tokens.
        let mut seen = Vec::new();
        let mut url =
            "/crm/v8/Contacts?fields=Email&sort_by=Modified_Time&sort_order=asc".to_owned();
        loop {
            let (status, body) = call(&state, Method::GET, &url, &token, None).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            for record in body["data"].as_array().unwrap() {
                seen.push(record["id"].as_str().unwrap().to_owned());
            }
            match body["info"]["next_page_token"].as_str() {
                Some(next) => url = format!("/crm/v8/Contacts?fields=Email&page_token={next}"),
                None => break,
            }
        }
        assert_eq!(seen, ids);
        // If-Modified-Since: only what changed strictly after that second.
        std::thread::sleep(Duration::from_millis(1100));
        let since = zoho_time(now_ms() - 1000);
        let mut change = BTreeMap::new();
        change.insert("Title".to_owned(), json!("CTO"));
        std::thread::sleep(Duration::from_millis(1000));
        state
            .update_zoho_record(DEFAULT_ZOHO_ORG, ZohoModule::Contacts, &ids[7], &change)
            .unwrap();
        let (status, body) = call_at(
            &state,
            HOST,
            Method::GET,
            "/crm/v8/Contacts?fields=Title",
            Some(&token),
            &[("if-modified-since", &since)],
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"].as_array().unwrap().len(), 1);
        assert_eq!(body["data"][0]["Title"], "CTO");
        let (status, _) = call_at(
            &state,
            HOST,
            Method::GET,
            "/crm/v8/Contacts?fields=Title",
            Some(&token),
            &[("if-modified-since", &zoho_time(now_ms()))],
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NOT_MODIFIED);
        let (status, body) = call(
            &state,
            Method::GET,
            &format!("/crm/v8/Contacts/{}", ids[7]),
            &token,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["data"][0]["Title"], "CTO");
        assert!(
            body["data"][0]["Modified_Time"]
                .as_str()
                .unwrap()
                .ends_with("+00:00")
        );
        let (status, _) = call(&state, Method::GET, "/crm/v8/Contacts/1", &token, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT);
    }

    #[tokio::test]
    async fn deals_take_lookups_by_id_and_stages_from_the_picklist() {
        let state = SandboxState::new();
        let token = grant(&state, ALL);
        let account = state
            .seed_zoho(DEFAULT_ZOHO_ORG, ZohoModule::Accounts, 1)
            .remove(0);
        let (status, body) = call(
            &state,
            Method::POST,
            "/crm/v8/Deals",
            &token,
            Some(json!({"data": [
                {"Deal_Name": "Big", "Stage": "Qualification", "Account_Name": {"id": account}},
                {"Deal_Name": "No stage"},
                {"Deal_Name": "Odd", "Stage": "Won-ish"},
                {"Deal_Name": "Ghost", "Stage": "Qualification", "Account_Name": {"id": "4876876000000999999"}},
            ]})),
        )
        .await;
        assert_eq!(status, StatusCode::MULTI_STATUS, "{body}");
        let data = body["data"].as_array().unwrap();
        assert_eq!(data[0]["code"], "SUCCESS", "{body}");
        assert_eq!(data[1]["details"]["api_name"], "Stage");
        assert_eq!(data[2]["details"]["expected_data_type"], "picklist");
        assert_eq!(data[3]["details"]["api_name"], "Account_Name");
        let id = data[0]["details"]["id"].as_str().unwrap().to_owned();
        let (_, got) = call(
            &state,
            Method::GET,
            &format!("/crm/v8/Deals/{id}"),
            &token,
            None,
        )
        .await;
        assert_eq!(
            got["data"][0]["Account_Name"]["id"],
            account.as_str(),
            "{got}"
        );
        assert!(got["data"][0]["Account_Name"]["name"].is_string(), "{got}");
        let (_, fields) = call(
            &state,
            Method::GET,
            "/crm/v8/settings/fields?module=Deals",
            &token,
            None,
        )
        .await;
        let stage = fields["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["api_name"] == "Stage")
            .unwrap();
        assert_eq!(stage["pick_list_values"].as_array().map(Vec::len), Some(9));
        let deals_read = grant(&state, &["ZohoCRM.modules.accounts.ALL"]);
        let (status, _) = call(
            &state,
            Method::GET,
            "/crm/v8/Deals?fields=Deal_Name",
            &deals_read,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn writes_answer_per_record() {
        let state = SandboxState::new();
        let token = grant(&state, ALL);
        let (status, body) = call(
            &state,
            Method::POST,
            "/crm/v8/Contacts",
            &token,
            Some(json!({"data": [
                {"Last_Name": "Lovelace", "Email": "ada@acme.test"},
                {"First_Name": "No", "Email": "x@acme.test"},
                {"Last_Name": "Twin", "Email": "ADA@acme.test"},
                {"Last_Name": "Bad", "Email": "not-an-email"},
                {"Last_Name": "Odd", "Nickname": "x"},
            ]})),
        )
        .await;
        assert_eq!(status, StatusCode::MULTI_STATUS, "{body}");
        let data = body["data"].as_array().unwrap();
        assert_eq!(data[0]["code"], "SUCCESS");
        assert_eq!(data[0]["message"], "record added");
        let ada = data[0]["details"]["id"].as_str().unwrap().to_owned();
        assert_eq!(data[1]["code"], "MANDATORY_NOT_FOUND");
        assert_eq!(data[1]["details"]["api_name"], "Last_Name");
        assert_eq!(data[2]["code"], "DUPLICATE_DATA");
        assert_eq!(data[2]["details"]["api_name"], "Email");
        assert_eq!(data[2]["details"]["id"], ada.as_str());
        assert_eq!(data[3]["code"], "INVALID_DATA");
        assert_eq!(data[4]["details"]["api_name"], "Nickname");
        let (status, body) = call(
            &state,
            Method::POST,
            "/crm/v8/Accounts",
            &token,
            Some(json!({"data": [{"Website": "x"}]})),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["data"][0]["details"]["api_name"], "Account_Name");
        let many: Vec<Value> = (0..101)
            .map(|i| json!({"Last_Name": format!("n{i}")}))
            .collect();
        let (status, body) = call(
            &state,
            Method::POST,
            "/crm/v8/Contacts",
            &token,
            Some(json!({"data": many})),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("LIMIT_EXCEEDED"))
        );
        // Update: id required and known.
        let (status, body) = call(
            &state,
            Method::PUT,
            "/crm/v8/Contacts",
            &token,
            Some(json!({"data": [
                {"id": ada, "Title": "Countess"},
                {"Title": "x"},
                {"id": "123", "Title": "x"},
            ]})),
        )
        .await;
        assert_eq!(status, StatusCode::MULTI_STATUS);
        assert_eq!(body["data"][0]["message"], "record updated");
        assert_eq!(body["data"][1]["details"]["api_name"], "id");
        assert_eq!(body["data"][2]["code"], "INVALID_DATA");
        let record = state
            .zoho_record(DEFAULT_ZOHO_ORG, ZohoModule::Contacts, &ada)
            .unwrap();
        assert_eq!(record.fields["Title"], "Countess");
        // Upsert by Email updates; a new email inserts.
        let (status, body) = upsert_direct(
            &state,
            "Contacts",
            &token,
            json!({"data": [
                {"Last_Name": "Lovelace", "Email": "ada@acme.test", "Phone": "1"},
                {"Last_Name": "Hopper", "Email": "grace@acme.test"},
            ], "duplicate_check_fields": ["Email"]}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"][0]["action"], "update");
        assert_eq!(body["data"][0]["duplicate_field"], "Email");
        assert_eq!(body["data"][0]["details"]["id"], ada.as_str());
        assert_eq!(body["data"][1]["action"], "insert");
        assert_eq!(
            state
                .zoho_records(DEFAULT_ZOHO_ORG, ZohoModule::Contacts)
                .len(),
            2
        );
    }

    #[tokio::test]
    async fn deletes_go_to_the_recycle_bin() {
        let state = SandboxState::new();
        let token = grant(&state, ALL);
        let ids = state.seed_zoho(DEFAULT_ZOHO_ORG, ZohoModule::Accounts, 3);
        let (status, _) = call(
            &state,
            Method::GET,
            "/crm/v8/Accounts/deleted",
            &token,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, body) = call(
            &state,
            Method::DELETE,
            &format!("/crm/v8/Accounts?ids={},{},42", ids[0], ids[1]),
            &token,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::MULTI_STATUS, "{body}");
        assert_eq!(body["data"][0]["message"], "record deleted");
        assert_eq!(body["data"][2]["code"], "INVALID_DATA");
        let (status, body) = call(
            &state,
            Method::GET,
            "/crm/v8/Accounts/deleted?type=recycle",
            &token,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["data"].as_array().unwrap().len(), 2);
        assert_eq!(body["data"][0]["type"], "recycle");
        assert_eq!(
            state.empty_zoho_recycle_bin(DEFAULT_ZOHO_ORG, ZohoModule::Accounts),
            2
        );
        let (status, _) = call(
            &state,
            Method::GET,
            "/crm/v8/Accounts/deleted?type=recycle",
            &token,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (_, body) = call(
            &state,
            Method::GET,
            "/crm/v8/Accounts/deleted?type=permanent",
            &token,
            None,
        )
        .await;
        assert_eq!(body["data"].as_array().unwrap().len(), 2);
        assert_eq!(
            state
                .zoho_records(DEFAULT_ZOHO_ORG, ZohoModule::Accounts)
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn search_by_criteria_email_and_word() {
        let state = SandboxState::new();
        let token = grant(&state, ALL);
        state.seed_zoho(DEFAULT_ZOHO_ORG, ZohoModule::Contacts, 20);
        let seeded = state.zoho_records(DEFAULT_ZOHO_ORG, ZohoModule::Contacts);
        let email = seeded[3].fields["Email"].as_str().unwrap().to_owned();
        let (status, body) = call(
            &state,
            Method::GET,
            &format!("/crm/v8/Contacts/search?email={email}"),
            &token,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"][0]["id"], seeded[3].id.as_str());
        let criteria = format!(
            "((Email:equals:{email})or(Email:equals:{}))",
            seeded[4].fields["Email"].as_str().unwrap()
        );
        let query: String = url::form_urlencoded::byte_serialize(criteria.as_bytes()).collect();
        let (status, body) = call(
            &state,
            Method::GET,
            &format!("/crm/v8/Contacts/search?criteria={query}&fields=Email"),
            &token,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"].as_array().unwrap().len(), 2);
        let (status, _) = call(
            &state,
            Method::GET,
            "/crm/v8/Contacts/search?email=nobody@nowhere.test",
            &token,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, body) = call(
            &state,
            Method::GET,
            "/crm/v8/Contacts/search?criteria=(Email:like:x)",
            &token,
            None,
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("INVALID_QUERY"))
        );
        let (status, _) = call(
            &state,
            Method::GET,
            "/crm/v8/Contacts/search?word=a",
            &token,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, body) =
            call(&state, Method::GET, "/crm/v8/Contacts/search", &token, None).await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("REQUIRED_PARAM_MISSING"))
        );
    }

    #[tokio::test]
    async fn custom_marker_field_is_created_listed_and_kept_unique() {
        let state = SandboxState::new();
        let token = grant(&state, ALL);
        let (status, body) = call(
            &state,
            Method::POST,
            "/crm/v8/settings/fields?module=Contacts",
            &token,
            Some(json!({"fields": [{"field_label": "Conduit Id", "data_type": "text", "length": 64, "unique": {"casesensitive": "false"}}]})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!(body["fields"][0]["code"], "SUCCESS");
        let (status, body) = call(
            &state,
            Method::POST,
            "/crm/v8/settings/fields?module=Contacts",
            &token,
            Some(json!({"fields": [{"field_label": "Conduit Id", "data_type": "text"}]})),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("DUPLICATE_DATA"))
        );
        let (status, body) = call(
            &state,
            Method::GET,
            "/crm/v8/settings/fields?module=Contacts",
            &token,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let marker = body["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["api_name"] == "Conduit_Id")
            .unwrap();
        assert_eq!(marker["custom_field"], true);
        assert_eq!(marker["data_type"], "text");
        assert!(marker["unique"].is_object());
        let (_, body) = call(
            &state,
            Method::POST,
            "/crm/v8/Contacts",
            &token,
            Some(json!({"data": [{"Last_Name": "A", "Conduit_Id": "c-1"}, {"Last_Name": "B", "Conduit_Id": "C-1"}]})),
        )
        .await;
        assert_eq!(body["data"][0]["code"], "SUCCESS");
        assert_eq!(body["data"][1]["code"], "DUPLICATE_DATA");
        assert_eq!(body["data"][1]["details"]["api_name"], "Conduit_Id");
        let (status, body) = upsert_direct(
            &state,
            "Contacts",
            &token,
            json!({"data": [{"Last_Name": "A2", "Conduit_Id": "c-1"}], "duplicate_check_fields": ["Conduit_Id"]}),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["data"][0]["action"], "update");
    }

    #[tokio::test]
    async fn ten_thousand_records_seed_and_write_quickly() {
        let state = SandboxState::new();
        let token = grant(&state, ALL);
        let started = Instant::now();
        let ids = state.seed_zoho(DEFAULT_ZOHO_ORG, ZohoModule::Contacts, 10_000);
        assert_eq!(ids.len(), 10_000);
        let seeded = started.elapsed();
        let records: Vec<Value> = (0..100)
            .map(|i| json!({"Last_Name": format!("n{i}"), "Email": format!("n{i}@fast.test")}))
            .collect();
        let started = Instant::now();
        for _ in 0..5 {
            call(
                &state,
                Method::POST,
                "/crm/v8/Contacts",
                &token,
                Some(json!({"data": records})),
            )
            .await;
        }
        let written = started.elapsed();
        println!("seeded 10,000 in {seeded:?}; 5 batches of 100 in {written:?}");
        assert!(seeded < Duration::from_secs(5) && written < Duration::from_secs(5));
        assert_eq!(
            state
                .zoho_records(DEFAULT_ZOHO_ORG, ZohoModule::Contacts)
                .len(),
            10_100
        );
    }

    #[tokio::test]
    async fn credits_run_out_with_zohos_429() {
        let state = SandboxState::new();
        let token = grant(&state, ALL);
        state.set_zoho_credit_limit(DEFAULT_ZOHO_ORG, 4);
        let records: Vec<Value> = (0..25)
            .map(|i| json!({"Last_Name": format!("n{i}")}))
            .collect();
        let (status, _) = call(
            &state,
            Method::POST,
            "/crm/v8/Contacts",
            &token,
            Some(json!({"data": records})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        assert_eq!(state.zoho_credits_remaining(DEFAULT_ZOHO_ORG), 1);
        let (status, body) = call(
            &state,
            Method::POST,
            "/crm/v8/Contacts",
            &token,
            Some(json!({"data": records})),
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (StatusCode::TOO_MANY_REQUESTS, Some("TOO_MANY_REQUESTS"))
        );
        assert_eq!(state.zoho_credits_remaining(DEFAULT_ZOHO_ORG), 1);
        let (status, _) = call(
            &state,
            Method::GET,
            "/crm/v8/Contacts?fields=Email",
            &token,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = call(
            &state,
            Method::GET,
            "/crm/v8/Contacts?fields=Email",
            &token,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(state.calls(CRM_LIST), 2);
    }

    #[tokio::test]
    async fn malformed_bodies_on_request() {
        let state = SandboxState::new();
        let token = grant(&state, ALL);
        state.seed_zoho(DEFAULT_ZOHO_ORG, ZohoModule::Accounts, 1);
        state.malform_zoho_responses(CRM_LIST, 1);
        let req = ProviderRequest {
            method: Method::GET,
            host: HOST.to_owned(),
            path: "/crm/v8/Accounts".to_owned(),
            query: Some("fields=Account_Name".to_owned()),
            headers: {
                let mut h = HeaderMap::new();
                h.insert(
                    AUTHORIZATION,
                    HeaderValue::from_str(&format!("Zoho-oauthtoken {token}")).unwrap(),
                );
                h
            },
            body: Bytes::new(),
        };
        let response = crate::providers::dispatch(&state, req).await;
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        assert!(serde_json::from_slice::<Value>(&bytes).is_err());
        let (status, _) = call(
            &state,
            Method::GET,
            "/crm/v8/Accounts?fields=Account_Name",
            &token,
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }

    #[test]
    fn routes_match_v8_paths() {
        assert_eq!(
            route(&Method::GET, "/crm/v8/Contacts"),
            Some(CrmRoute::List)
        );
        assert_eq!(
            route(&Method::GET, "/crm/v8/Contacts/4876876000000500001"),
            Some(CrmRoute::Get)
        );
        assert_eq!(
            route(&Method::GET, "/crm/v8/Accounts/search"),
            Some(CrmRoute::Search)
        );
        assert_eq!(
            route(&Method::GET, "/crm/v8/Accounts/deleted"),
            Some(CrmRoute::Deleted)
        );
        assert_eq!(
            route(&Method::POST, "/crm/v8/Accounts/upsert"),
            Some(CrmRoute::Upsert)
        );
        assert_eq!(
            route(&Method::PUT, "/crm/v8/Accounts"),
            Some(CrmRoute::Update)
        );
        assert_eq!(
            route(&Method::DELETE, "/crm/v8/Accounts"),
            Some(CrmRoute::Delete)
        );
        assert_eq!(
            route(&Method::GET, "/crm/v8/settings/fields"),
            Some(CrmRoute::Fields)
        );
        assert_eq!(route(&Method::GET, "/crm/v8/settings/modules"), None);
        assert_eq!(route(&Method::GET, "/crm/v2/Contacts"), None);
    }

    #[test]
    fn times_are_zoho_form() {
        assert_eq!(zoho_time(1_705_309_200_999), "2024-01-15T09:00:00+00:00");
    }

    #[test]
    fn criteria_parse() {
        let c = parse_criteria("((Email:equals:a@b.test)or(Last_Name:starts_with:Lo\\(v\\)))")
            .expect("criteria");
        assert!(matches!(c, Criteria::Or(ref t) if t.len() == 2));
        assert!(parse_criteria("(Email:equals:a)and(B:equals:c)or(D:equals:e)").is_none());
        assert!(parse_criteria("Email:equals:a").is_none());
        assert_eq!(
            split_values("a\\,b, c"),
            vec!["a,b".to_owned(), "c".to_owned()]
        );
        assert_eq!(api_name_of("Conduit Id"), "Conduit_Id");
    }
}

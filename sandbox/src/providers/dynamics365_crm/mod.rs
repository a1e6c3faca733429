//! Dataverse (Dynamics 365) **contacts, accounts and opportunities** through the Web API, served beside
//! `WhoAmI` ([`super::dynamics365`]) and the knowledge routes ([`super::dynamics365_kb`]) at
//! `/{org}.{crm_region}.dynamics.com/api/data/v9.x/…`, shaped after Microsoft's references:
//! the generated table references (`reference/entities/contact.md`, `account.md`: column
//! names, types, `MaxLength`, `IsValidForCreate`/`IsValidForUpdate`), "Query data using the
//! Web API", "Page results", "Use change tracking to synchronize data with external
//! systems", "Create/Update and delete/Upsert a table row using the Web API", "Execute batch
//! operations using the Web API", "Create and update column definitions using the Web
//! API", "Service protection API limits" and "Web service error codes". Microsoft
//! publishes no static `$metadata` (see `../shared/specs/MISSING.txt`). One store per
//! environment host ([`DynCrmStore`]); an environment nobody seeded has both tables empty
//! with their standard columns.
//!
//! | Route name | Request | Answer |
//! |---|---|---|
//! | `dynamics365.crm_list` | `GET contacts`, `GET accounts` with `$select $filter $orderby $top $count $skiptoken $deltatoken`; `Prefer: odata.maxpagesize=N`, `odata.track-changes` | `{"@odata.context", "value": [...], "@odata.nextLink" \| "@odata.deltaLink"}` |
//! | `dynamics365.crm_get` | `GET contacts({guid})` with `$select`; `If-None-Match: W/"n"` | the row, `…/$entity`; 304 when `n` is current |
//! | `dynamics365.crm_create` | `POST contacts` (JSON row; `…@odata.bind` lookups); `Prefer: return=representation` (with `$select`) | 204 + `OData-EntityId`, or 201 + row (then no `OData-EntityId`, as Microsoft says) |
//! | `dynamics365.crm_update` | `PATCH contacts({guid})`; `If-Match: *` (no create), `If-Match: W/"n"` (concurrency), `If-None-Match: *` (no update) | 204 (+ `OData-EntityId` when it created), or 200/201 + row |
//! | `dynamics365.crm_delete` | `DELETE contacts({guid})`, `If-Match` as above; `DELETE opportunities({guid})/parentcontactid/$ref` (clears a single-valued navigation property) | 204 |
//! | `dynamics365.crm_batch` | `POST $batch` (`multipart/mixed`, change sets, `Content-ID`, `$n` references); `Prefer: odata.continue-on-error` | 200 `multipart/mixed` with one part per request (one per failed change set) |
//! | `dynamics365.crm_entity_definition` | `GET EntityDefinitions(LogicalName='contact')` with `$select` | `LogicalName EntitySetName PrimaryIdAttribute PrimaryNameAttribute ChangeTrackingEnabled ObjectTypeCode MetadataId …` |
//! | `dynamics365.crm_attributes` | `GET EntityDefinitions(LogicalName='contact')/Attributes[/Microsoft.Dynamics.CRM.{String,Picklist,Lookup}AttributeMetadata]` with `$select`, `$filter` (`$expand=OptionSet` / `GlobalOptionSet` on the Picklist cast) | `{"value": [{"@odata.type", LogicalName, SchemaName, AttributeType, AttributeOf (always null), IsValidForCreate, IsValidForUpdate, IsValidForRead, IsCustomAttribute, DisplayName, MetadataId, …}]}` |
//! | `dynamics365.crm_attribute` | `GET EntityDefinitions(LogicalName='contact')/Attributes(LogicalName='emailaddress1')` | one column |
//! | `dynamics365.crm_create_attribute` | `POST EntityDefinitions(LogicalName='contact')/Attributes` with a `StringAttributeMetadata` | 204 + `OData-EntityId` |
//!
//! (`accounts` and `opportunities` everywhere `contacts` is shown.) **`GET contacts` and `POST contacts` are
//! served here only for an environment switched over with
//! [`SandboxState::dyn_crm_serve_contacts`] (`POST /_sandbox/dynamics365/serve_contacts`);
//! otherwise the dispatch-action stand-in (`crate::actions`, routed first) answers them
//! from its own contacts, as the dispatch scenarios expect.** Every other route here,
//! `$batch` parts included, always uses this store. Columns — contact: `contactid firstname
//! lastname fullname emailaddress1 emailaddress2 telephone1 mobilephone jobtitle
//! address1_city address1_country description _parentcustomerid_value statecode statuscode
//! createdon modifiedon versionnumber _ownerid_value`; account: `accountid name
//! accountnumber emailaddress1 telephone1 websiteurl address1_city address1_country
//! description numberofemployees _primarycontactid_value _parentaccountid_value statecode
//! statuscode createdon modifiedon versionnumber _ownerid_value`; opportunity:
//! `opportunityid name estimatedvalue estimatedclosedate salesstage stepname
//! closeprobability description _parentaccountid_value _parentcontactid_value statecode
//! statuscode createdon modifiedon versionnumber _ownerid_value`; plus custom columns. Each
//! row carries `@odata.etag` `W/"{versionnumber}"`; times print as `2024-01-15T09:00:00Z`
//! (whole seconds).
//!
//! **Marker field.** Conduit's record id goes in a custom string column created through the
//! API (`POST …/Attributes` with `SchemaName` `new_ConduitId` → column `new_conduitid`), not
//! an alternate key: simpler, and findable with `$filter=new_conduitid eq '…'`. A
//! `SchemaName` must start with a publisher prefix the environment knows (`new_` by
//! default, [`SandboxState::dyn_crm_add_publisher_prefix`]) and be new on the table;
//! `DisplayName` needs a label, `MaxLength` is 1–4,000 (default 100). The column can be used
//! at once (no publish step). Alternate keys (`contacts(new_conduitid='…')`) are not
//! reproduced: 400.
//!
//! **Queries** reuse the knowledge routes' OData engine: `$filter` with `eq ne gt ge lt le`,
//! `and or not`, parentheses, `contains/startswith/endswith`, text compared
//! case-insensitively, date-times unquoted (`modifiedon ge 2024-01-01T00:00:00Z`), GUIDs
//! unquoted for keys and lookups; unknown column: 400 `0x0` "Could not find a property
//! named …"; wrong literal type: 400 `0x0` "A binary operator with incompatible types …";
//! malformed: 400 `0x80060888`. `$orderby` any column (id breaks ties), `$top` ≤ 5,000,
//! `Prefer: odata.maxpagesize` ≤ 5,000 (default and cap 5,000) with `@odata.nextLink`
//! (`$skiptoken=<cookie pagenumber=… pagingcookie=… istracking="False" />`, keyset, bound
//! to its `$filter`/`$orderby`), `$count=true` (capped at 5,000). `$expand`, `$skip`,
//! `$apply`, FetchXML: 400 "The query parameter '…' is not supported.".
//!
//! **Change tracking** ("Use change tracking to synchronize data with external systems").
//! Each table has `ChangeTrackingEnabled`, true for both here by default;
//! [`SandboxState::dyn_crm_set_change_tracking`] models a table where it is off (Microsoft:
//! once enabled it cannot be disabled, so turning it off is only for tests). `GET
//! contacts?$select=…` with `Prefer: odata.track-changes` answers every current row (paged
//! by `odata.maxpagesize`, `@odata.nextLink` with `istracking="True"`),
//! `Preference-Applied: odata.track-changes`, and on the last page `@odata.deltaLink` = the
//! URL with `$deltatoken={rowversion}!{MM/dd/yyyy HH:mm:ss}` (Microsoft's example:
//! `919042%2108%2f22%2f2017%2008%3a10%3a44`). Following it (with or without the `Prefer`)
//! answers, with context `…(cols)/$delta`, the rows created or changed since (by row
//! version), then `{"@odata.context": "…/$metadata#contacts/$deletedEntity", "id": …,
//! "reason": "deleted"}` for each row deleted since (a row created and deleted in between
//! is reported deleted, as Microsoft says), and a new `@odata.deltaLink`; more than a page
//! of changes (5,000 or `odata.maxpagesize`): `@odata.nextLink` is a delta link with the
//! token of the page's last change. `$filter`, `$orderby`, `$top` (and `$count` here) with
//! tracking: 400 `0x80060888` `The "$filter" query parameter isn't supported when Change
//! Tracking is enabled.`. On a table without change tracking: 400 `0x80072491` "Entity
//! contact isn't enabled for change tracking.". A token older than the retention
//! ([`CHANGE_RETENTION_DAYS`] days, Microsoft's default `ExpireChangeTrackingInDays`, by
//! the environment's clock), issued before tracking was last (re-)enabled or the table
//! reseeded, expired by [`SandboxState::dyn_crm_expire_delta_tokens`], or not a token at
//! all: 400 `0x80044352` "Version stamp associated with the client has expired. Please
//! perform a full sync." (the status and code are the sandbox's reading of Microsoft's
//! "the system throws an exception").
//!
//! **Writes.** Body keys are column logical names valid for the operation
//! (`IsValidForCreate`/`IsValidForUpdate`; the key on create), `@…` annotations, or
//! `{nav}@odata.bind` (`parentcustomerid_account`, `parentcustomerid_contact` on contact;
//! `primarycontactid`, `parentaccountid` on account) with `/accounts({guid})`, a full URL
//! or `$n` in a batch. A body the OData reader refuses — not JSON, an unknown property, an
//! unknown navigation property, a value of the wrong JSON type — is 400 `0x80048d19`
//! "Error identified in Payload provided by the user for Entity :'contacts', … ---->
//! InnerException : Microsoft.OData.ODataException: …" with OData's message inside (the
//! property named); a read-only column: 400 `0x80040203` (sandbox wording); text over
//! `MaxLength`: 400 `0x80044331` "A validation error occurred.  The length of the
//! 'firstname' attribute of the 'contact' entity exceeded the maximum allowed length of
//! '50'." (two spaces, as Dataverse prints it); a bound row that does not exist: 404 `0x80040217`;
//! a create with an id that exists, or `If-None-Match: *` on an existing row: 412
//! `0x80040237` "A record with matching key values already exists."; `If-Match: *` or
//! `DELETE` on a missing row: 404 `0x80040217` "contact With Id = … Does Not Exist"; a stale
//! `If-Match: W/"n"`: 412 `0x80060882`. With `MSCRM.SuppressDuplicateDetection: false` the
//! default duplicate rules run (contacts or accounts with the same `emailaddress1`,
//! accounts with the same `name`, case-insensitive): 500 `0x80040333` "A record was not
//! created or updated because a duplicate of the current record already exists.", as
//! Microsoft's example shows. `statecode` 0 Active/1 Inactive with `statuscode`
//! 1/2; `fullname` is `firstname lastname`. Every write bumps `versionnumber` (one counter
//! per environment, like SQL rowversion) and `modifiedon`.
//!
//! **Opportunities** (the Sales table reference `opportunity`; "Associate and disassociate
//! table rows using the Web API"). `name` (the Topic) is required on create: 400
//! `0x80040200` (stricter than Dataverse, whose API leaves `ApplicationRequired` to
//! forms; sandbox wording). `estimatedvalue` is Money: a JSON number (else OData's
//! `Edm.Decimal` payload refusal) within ±922,337,203,685,477, kept to 2 decimals (the
//! currency's precision). `estimatedclosedate` is a date-only column (`DateTimeBehavior`
//! `DateOnly`): `yyyy-MM-dd` (a date-time is cut to its date), answered the same; not a
//! real date: `Edm.Date` payload refusal. `salesstage` is a Picklist with the Sales app's
//! options 0 Qualify, 1 Develop, 2 Propose, 3 Close, read with `GET …/Attributes/
//! Microsoft.Dynamics.CRM.PicklistAttributeMetadata?$select=LogicalName&$expand=
//! OptionSet($select=Options)`; a number it does not list: 400 `0x8004431a` "A validation
//! error occurred. The value 7 of 'salesstage' on record of type 'opportunity' is outside
//! the valid range. Accepted Values: 0,1,2,3"; text: `Edm.Int32` payload refusal.
//! `parentaccountid` / `parentcontactid` are lookups (`Targets` `["account"]` /
//! `["contact"]` on the `LookupAttributeMetadata` cast) written only as
//! `"parentaccountid@odata.bind": "/accounts({guid})"` (a raw `parentaccountid` or
//! `_parentaccountid_value` member is the payload refusal naming it; a bind to a row that
//! does not exist 404 `0x80040217`; to another table's set 400) and read as
//! `_parentaccountid_value`; `null` as the bind, or `DELETE …/parentcontactid/$ref`,
//! clears one. `statecode` 0 Open (`statuscode` 1 In Progress / 2 On Hold); setting 1 Won
//! or 2 Lost is Dataverse's 400 naming `WinOpportunityRequest` / `LoseOpportunityRequest`
//! (those actions are not served). No duplicate rule covers opportunities. Change tracking
//! and `$batch` as for the other tables.
//!
//! **`$batch`** ("Execute batch operations using the Web API"): `Content-Type:
//! multipart/mixed; boundary=…` (quoted or not; else 400 `0x80060888`); parts are
//! `application/http` requests (absolute URL, `/api/data/v9.x/…` path, or a path relative
//! to the service root) or change sets (`multipart/mixed` of requests with `Content-ID`).
//! More than 1,000 requests in all: 400 `0x8004b600` (sandbox code and wording) before any
//! runs; a `GET` inside a change set or a nested `$batch`: 400. Requests run in order;
//! without `Prefer: odata.continue-on-error` the first failure ends the batch and the batch
//! answers with that failure's status (e.g. 400) and only the parts run so far; with it,
//! 200 and every part. A change set is all or nothing: on its first failure every change it
//! made is undone and its one response part is that failure. `$1` (a `Content-ID` declared
//! earlier in the same change set) stands for the created row in a later URL (`PATCH $1`)
//! or `@odata.bind`; one not declared: 400 "Content-ID Reference: '$1' does not exist in
//! the batch context.". Answer: `multipart/mixed; boundary=batchresponse_…`, parts
//! `HTTP/1.1 204 No Content` with `Location` and `OData-EntityId` for creates, JSON bodies
//! for reads and errors, change sets as `changesetresponse_…` parts with their
//! `Content-ID`s.
//!
//! **Service protection** (Microsoft: per user, per web server, over a 5-minute sliding
//! window, 6,000 requests, 1,200 s of combined execution time, 52 concurrent requests).
//! Per user and environment ([`DynCrmLimits`], [`SandboxState::dyn_crm_set_limits`]): each
//! request is counted after authentication, a `$batch` once ("A batch can contain up to
//! 1000 operations and will avoid the number of requests limit. However, you will need to
//! be prepared for the execution time limit."); each operation (a request, or each request
//! inside a `$batch`) costs `ms_per_operation` of execution time.
//! Past the count: 429 `{"error":{"code":"0x80072322","message":"Number of requests
//! exceeded the limit of 6000 over time window of 300 seconds."}}`; past the time: 429
//! `0x80072321` "Combined execution time of incoming requests exceeded limit of 1,200,000
//! milliseconds over time window of 300 seconds. …"; both with `Retry-After` (whole seconds
//! until the window frees). [`SandboxState::dyn_crm_throttle_next`] forces any of the three
//! (the concurrency one `0x80072326` "Number of concurrent requests exceeded the limit of
//! 52." only this way: the handler is synchronous, so concurrency is never observable).
//! Every answer carries `x-ms-ratelimit-burst-remaining-xrm-requests` (requests left),
//! `x-ms-ratelimit-time-remaining-xrm-requests` (milliseconds left, printed like
//! `1,199,980.00`) and `OData-Version: 4.0`. These routes keep their own window, apart from
//! the knowledge routes'.
//!
//! Auth, as `WhoAmI`: an OAuth access token from the sandbox's Microsoft identity platform
//! whose audience is this environment (scope `https://{env}/user_impersonation` or
//! `https://{env}/.default`), else 401, empty body, `WWW-Authenticate: Bearer …`.
//!
//! Knobs ([`SandboxState`]): [`SandboxState::seed_dynamics_crm`],
//! [`SandboxState::dyn_crm_seed_more`],
//! [`SandboxState::dyn_crm_records`], [`SandboxState::dyn_crm_record`],
//! [`SandboxState::dyn_crm_create`], [`SandboxState::dyn_crm_update`],
//! [`SandboxState::dyn_crm_delete`], [`SandboxState::dyn_crm_attributes`],
//! [`SandboxState::dyn_crm_set_change_tracking`],
//! [`SandboxState::dyn_crm_expire_delta_tokens`], [`SandboxState::dyn_crm_set_limits`],
//! [`SandboxState::dyn_crm_throttle_next`], [`SandboxState::dyn_crm_now`],
//! [`SandboxState::dyn_crm_advance_clock`], [`SandboxState::dyn_crm_add_publisher_prefix`],
//! [`SandboxState::dyn_crm_set_table_privileges`],
//! [`SandboxState::malform_dynamics_responses`], [`SandboxState::dyn_crm_serve_contacts`];
//! the same over HTTP under `/_sandbox/dynamics365/…` (`admin.rs`). `org` is an environment
//! host or a bare org name (`{org}.crm.dynamics.com`).
//!
//! **Privileges.** Any token of the environment reads, writes and customizes everything,
//! unless a table's privileges are taken away
//! ([`SandboxState::dyn_crm_set_table_privileges`], e.g. a role without the Sales app's
//! opportunity privileges): then every request on its rows is 403 `0x80040220`
//! "Principal user (Id=…) is missing prvReadOpportunity privilege … on OTC=3 for entity
//! 'opportunity'." (`prvCreate…` for `POST`, `prvWrite…` for `PATCH`, `prvDelete…` for
//! `DELETE`).
//!
//! Not reproduced: security roles themselves (the privileges are all or nothing per
//! table; access levels — user, business unit, organization — and `prvAppendTo` on the
//! bound row are not checked), duplicate rules other than the three above,
//! for opportunities: `customerid` (the polymorphic potential customer), the
//! `transactioncurrencyid` lookup and `exchangerate` / `*_base` Money columns (every
//! amount is in the base currency here), `stepname` tied to a business process flow,
//! `WinOpportunity` / `LoseOpportunity` / `CalculateActualValueOpportunity`, products and
//! price lists, a `UserLocal` date behaviour (`estimatedclosedate` is `DateOnly` here),
//! the exact wording of the Picklist range error (as commonly reported), a
//! `$filter` comparing a Money column with a decimal literal (Money compares as an
//! integer here), the `$ref` forms other than `DELETE` of a single-valued property
//! (`PUT …/$ref`, collection-valued `$ref`),
//! plug-ins, business rules and required levels
//! (`ApplicationRequired` is not enforced by the API anyway), every other column and
//! relationship of the real tables, `$expand`, `$apply`, FetchXML, alternate keys, `PUT` of
//! a single property, formatted-value annotations,
//! `Prefer: odata.include-annotations`, the `MSCRM.SolutionUniqueName` header, other
//! attribute types than `StringAttributeMetadata` on create, updating or deleting column
//! definitions, `PUT EntityDefinitions` (change tracking is switched by a knob), the real
//! concurrency limit, the real Dataverse paging-cookie XML, the exact wording of errors
//! marked "sandbox wording" in the code, several web servers per environment (one window
//! per user here), a longer `Retry-After` for clients that keep pushing, `GET
//! contacts/$count?$deltatoken=…`, and `REQ_ID` headers.

// The error of most helpers here is the finished answer.
#![allow(clippy::result_large_err)]

pub(crate) mod admin;
mod batch;
pub(crate) mod hooks;
mod metadata;
mod query;
mod write;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::ProviderRequest;
use super::dynamics365::{audience_ok, unauthorized};
use super::dynamics365_kb::{guid, iso, split_path};
use crate::clock;
use crate::oauth::{self, AccessCheck, OAuthProvider};
use crate::state::SandboxState;
use crate::wire;

/// Route name of `GET contacts` / `GET accounts`.
pub const CRM_LIST: &str = "dynamics365.crm_list";
/// Route name of `GET contacts({id})` / `GET accounts({id})`.
pub const CRM_GET: &str = "dynamics365.crm_get";
/// Route name of `POST contacts` / `POST accounts`.
pub const CRM_CREATE: &str = "dynamics365.crm_create";
/// Route name of `PATCH contacts({id})` / `PATCH accounts({id})`.
pub const CRM_UPDATE: &str = "dynamics365.crm_update";
/// Route name of `DELETE contacts({id})` / `DELETE accounts({id})`.
pub const CRM_DELETE: &str = "dynamics365.crm_delete";
/// Route name of `POST $batch`.
pub const CRM_BATCH: &str = "dynamics365.crm_batch";
/// Route name of `GET EntityDefinitions(LogicalName='…')`.
pub const CRM_ENTITY_DEFINITION: &str = "dynamics365.crm_entity_definition";
/// Route name of `GET EntityDefinitions(LogicalName='…')/Attributes`.
pub const CRM_ATTRIBUTES: &str = "dynamics365.crm_attributes";
/// Route name of `GET EntityDefinitions(LogicalName='…')/Attributes(LogicalName='…')`.
pub const CRM_ATTRIBUTE: &str = "dynamics365.crm_attribute";
/// Route name of `POST EntityDefinitions(LogicalName='…')/Attributes`.
pub const CRM_CREATE_ATTRIBUTE: &str = "dynamics365.crm_create_attribute";

/// Requests per user per 5-minute window by default (Microsoft: 6,000).
pub const DEFAULT_REQUESTS_PER_WINDOW: u64 = 6_000;
/// Combined execution time per user per window by default, ms (Microsoft: 20 minutes).
pub const DEFAULT_EXECUTION_MS_PER_WINDOW: u64 = 1_200_000;
/// Execution time one operation costs by default, ms.
pub const DEFAULT_MS_PER_OPERATION: u64 = 20;
/// The service-protection window, seconds.
pub const WINDOW_SECS: u64 = 300;
/// Requests a `$batch` may hold (Microsoft: 1,000).
pub const MAX_BATCH_REQUESTS: usize = 1_000;
/// Days a delta token stays good (Dataverse's default change-tracking retention).
pub const CHANGE_RETENTION_DAYS: i64 = 7;
/// Dataverse's code for the request-count limit.
pub const REQUESTS_LIMIT_CODE: &str = "0x80072322";
/// Dataverse's code for the execution-time limit.
pub const TIME_LIMIT_CODE: &str = "0x80072321";
/// Dataverse's code for the concurrency limit.
pub const CONCURRENCY_LIMIT_CODE: &str = "0x80072326";

/// The default Dynamics user (owner of seeded rows).
const OWNER_ID: &str = "7d4a9f52-2f6b-4c3e-9b1a-0c1d2e3f4a51";

// ---------------------------------------------------------------------------------------
// Public types
// ---------------------------------------------------------------------------------------

/// A Dataverse table the stand-in serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DynTable {
    /// `contact` (entity set `contacts`).
    Contact,
    /// `account` (entity set `accounts`).
    Account,
    /// `opportunity` (entity set `opportunities`).
    Opportunity,
}

impl DynTable {
    /// The table's logical name.
    pub fn logical_name(self) -> &'static str {
        match self {
            DynTable::Contact => "contact",
            DynTable::Account => "account",
            DynTable::Opportunity => "opportunity",
        }
    }

    /// The entity set name used in URLs.
    pub fn set_name(self) -> &'static str {
        match self {
            DynTable::Contact => "contacts",
            DynTable::Account => "accounts",
            DynTable::Opportunity => "opportunities",
        }
    }

    /// The primary key column.
    pub fn key(self) -> &'static str {
        match self {
            DynTable::Contact => "contactid",
            DynTable::Account => "accountid",
            DynTable::Opportunity => "opportunityid",
        }
    }

    /// The primary name column.
    pub fn primary_name(self) -> &'static str {
        match self {
            DynTable::Contact => "fullname",
            DynTable::Account | DynTable::Opportunity => "name",
        }
    }

    fn index(self) -> usize {
        match self {
            DynTable::Contact => 0,
            DynTable::Account => 1,
            DynTable::Opportunity => 2,
        }
    }

    fn from_set(set: &str) -> Option<Self> {
        match set {
            "contacts" => Some(DynTable::Contact),
            "accounts" => Some(DynTable::Account),
            "opportunities" => Some(DynTable::Opportunity),
            _ => None,
        }
    }

    fn from_logical(name: &str) -> Option<Self> {
        match name {
            "contact" => Some(DynTable::Contact),
            "account" => Some(DynTable::Account),
            "opportunity" => Some(DynTable::Opportunity),
            _ => None,
        }
    }

    fn metadata_id(self) -> &'static str {
        match self {
            DynTable::Contact => "608861bc-50a4-4c5f-a02c-21fe1943e2cf",
            DynTable::Account => "70816501-edb9-4740-a16c-6a5efbc05d84",
            DynTable::Opportunity => "3aac6db8-6b5f-4d8c-9f63-0c1b2f1e7a3d",
        }
    }

    fn object_type_code(self) -> i64 {
        match self {
            DynTable::Contact => 2,
            DynTable::Account => 1,
            DynTable::Opportunity => 3,
        }
    }
}

/// A row as the stand-in keeps it. `values` holds columns by logical name (lookups by
/// their logical name, e.g. `parentcustomerid`, with the GUID); times are epoch seconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DynRecord {
    /// The primary key (`contactid`/`accountid`), lower case.
    pub id: String,
    /// Column values by logical name (text, integers, booleans, GUIDs as text).
    pub values: BTreeMap<String, Value>,
    /// `createdon`.
    pub created_on: i64,
    /// `modifiedon`.
    pub modified_on: i64,
    /// `versionnumber`: the row version (the etag), bumped by every change.
    pub version_number: i64,
}

impl DynRecord {
    /// A text column's value.
    pub fn text(&self, column: &str) -> Option<&str> {
        self.values.get(column).and_then(Value::as_str)
    }
}

/// A column definition (`AttributeMetadata`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DynAttribute {
    /// `LogicalName`, e.g. `emailaddress1`.
    pub logical_name: String,
    /// `SchemaName`, e.g. `EMailAddress1`.
    pub schema_name: String,
    /// `AttributeType`: `String`, `Memo`, `DateTime`, `Uniqueidentifier`, `Lookup`,
    /// `Customer`, `Owner`, `Integer`, `BigInt`, `State`, `Status`, `Boolean`.
    pub attribute_type: String,
    /// `DisplayName` (the 1033 label).
    pub display_name: String,
    /// `IsValidForCreate`.
    pub is_valid_for_create: bool,
    /// `IsValidForUpdate`.
    pub is_valid_for_update: bool,
    /// `IsCustomAttribute`.
    pub is_custom: bool,
    /// `MaxLength` of text columns.
    pub max_length: Option<u32>,
    /// `RequiredLevel.Value`: `None`, `ApplicationRequired`, `SystemRequired`.
    pub required_level: String,
    /// `MetadataId`.
    pub metadata_id: String,
    /// A `Picklist`'s options (`OptionSet.Options`): `(Value, label)`.
    pub options: Vec<(i64, String)>,
    /// A `DateTime` column whose `DateTimeBehavior` is `DateOnly` (written and answered
    /// as `yyyy-MM-dd`).
    pub date_only: bool,
}

impl DynAttribute {
    /// The property name the Web API uses: `_{name}_value` for lookups.
    pub fn web_name(&self) -> String {
        if self.is_lookup() {
            format!("_{}_value", self.logical_name)
        } else {
            self.logical_name.clone()
        }
    }

    fn is_lookup(&self) -> bool {
        matches!(
            self.attribute_type.as_str(),
            "Lookup" | "Customer" | "Owner"
        )
    }
}

/// Service-protection limits of an environment ([`SandboxState::dyn_crm_set_limits`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DynCrmLimits {
    /// Requests per user per 5-minute window (default 6,000).
    pub requests_per_window: u64,
    /// Combined execution time per user per window, ms (default 1,200,000).
    pub execution_ms_per_window: u64,
    /// What one operation costs, ms (default 20).
    pub ms_per_operation: u64,
}

impl Default for DynCrmLimits {
    fn default() -> Self {
        Self {
            requests_per_window: DEFAULT_REQUESTS_PER_WINDOW,
            execution_ms_per_window: DEFAULT_EXECUTION_MS_PER_WINDOW,
            ms_per_operation: DEFAULT_MS_PER_OPERATION,
        }
    }
}

/// Which service-protection limit a forced 429 reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DynLimit {
    /// `0x80072322`, the request count.
    Requests,
    /// `0x80072321`, the combined execution time.
    ExecutionTime,
    /// `0x80072326`, the concurrent requests.
    Concurrency,
}

// ---------------------------------------------------------------------------------------
// Store
// ---------------------------------------------------------------------------------------

/// Every environment's contacts, accounts, column definitions and knobs.
#[derive(Debug, Default)]
pub struct DynCrmStore {
    envs: BTreeMap<String, CrmEnv>,
    knobs: BTreeMap<String, Knobs>,
    malformed: HashMap<String, u32>,
    /// Environments whose `GET`/`POST contacts` this module serves rather than the
    /// dispatch actions ([`SandboxState::dyn_crm_serve_contacts`]).
    contact_collection: std::collections::BTreeSet<String>,
    /// Webhook requests waiting and sent ([`hooks`]).
    hook_out: hooks::Outbox,
}

/// Per-environment knobs and service-protection windows.
#[derive(Debug, Default)]
struct Knobs {
    limits: DynCrmLimits,
    forced: Option<(DynLimit, u32, u64)>,
    clock_offset: i64,
    windows: HashMap<String, UserWindow>,
}

/// One user's 5-minute windows.
#[derive(Debug, Default)]
struct UserWindow {
    requests: VecDeque<Instant>,
    time: VecDeque<(Instant, u64)>,
}

/// A deleted row, for change tracking.
#[derive(Clone, Debug)]
struct Tombstone {
    version: i64,
    id: String,
}

/// One table of an environment.
#[derive(Clone, Debug)]
struct TableData {
    table: DynTable,
    rows: BTreeMap<String, DynRecord>,
    attrs: Vec<DynAttribute>,
    tracking: bool,
    /// Delta tokens below this row version are expired.
    token_floor: i64,
    tombstones: Vec<Tombstone>,
}

/// A change a change set may have to undo.
#[derive(Clone, Debug)]
struct Undo {
    table: DynTable,
    id: String,
    before: Option<DynRecord>,
}

/// One environment.
#[derive(Clone, Debug)]
struct CrmEnv {
    tables: [TableData; 3],
    /// The last row version handed out.
    version: i64,
    salt: u64,
    next_id: u64,
    prefixes: Vec<String>,
    /// Changes made while a change set runs.
    journal: Option<Vec<Undo>>,
    /// Webhook registrations ([`hooks`]).
    hooks: hooks::Hooks,
    /// Tables whose privileges the users' security roles lack
    /// ([`SandboxState::dyn_crm_set_table_privileges`]).
    denied: std::collections::BTreeSet<DynTable>,
}

impl CrmEnv {
    fn new(env: &str) -> Self {
        let salt = super::dynamics365_kb::mix(env.bytes().fold(0xD1A_u64, |h, b| {
            h.wrapping_mul(31).wrapping_add(u64::from(b))
        }));
        Self {
            tables: [
                TableData::new(DynTable::Contact),
                TableData::new(DynTable::Account),
                TableData::new(DynTable::Opportunity),
            ],
            version: 1_000_000,
            salt,
            next_id: 0,
            prefixes: vec!["new".to_owned()],
            journal: None,
            hooks: hooks::Hooks::default(),
            denied: std::collections::BTreeSet::new(),
        }
    }

    fn table(&self, table: DynTable) -> &TableData {
        &self.tables[table.index()]
    }

    fn table_mut(&mut self, table: DynTable) -> &mut TableData {
        &mut self.tables[table.index()]
    }

    fn bump(&mut self) -> i64 {
        self.version += 1;
        self.version
    }

    fn new_id(&mut self) -> String {
        self.next_id += 1;
        guid(self.salt ^ 0xC0_0000_0000, self.next_id)
    }

    /// Inserts or replaces a row, journaling the old one inside a change set.
    fn put(&mut self, table: DynTable, record: DynRecord) {
        let before = self
            .table_mut(table)
            .rows
            .insert(record.id.clone(), record.clone());
        match &before {
            None => self.hooks.note("Create", table, &record.id, Vec::new()),
            Some(old) => {
                let changed = record
                    .values
                    .iter()
                    .filter(|(k, v)| old.values.get(*k) != Some(*v))
                    .map(|(k, _)| k.clone())
                    .collect();
                self.hooks.note("Update", table, &record.id, changed);
            }
        }
        if let Some(journal) = self.journal.as_mut() {
            journal.push(Undo {
                table,
                id: record.id,
                before,
            });
        }
    }

    /// Removes a row (leaving a tombstone), journaling it inside a change set.
    fn remove(&mut self, table: DynTable, id: &str) -> Option<DynRecord> {
        let version = self.bump();
        let data = self.table_mut(table);
        let removed = data.rows.remove(id)?;
        data.tombstones.push(Tombstone {
            version,
            id: id.to_owned(),
        });
        self.hooks.note("Delete", table, id, Vec::new());
        if let Some(journal) = self.journal.as_mut() {
            journal.push(Undo {
                table,
                id: id.to_owned(),
                before: Some(removed.clone()),
            });
        }
        Some(removed)
    }

    /// Undoes a change set's changes (rows back, its tombstones gone).
    fn rollback(&mut self, journal: Vec<Undo>, version_before: i64) {
        for undo in journal.into_iter().rev() {
            let data = self.table_mut(undo.table);
            match undo.before {
                Some(record) => {
                    data.rows.insert(undo.id, record);
                }
                None => {
                    data.rows.remove(&undo.id);
                }
            }
        }
        for data in &mut self.tables {
            data.tombstones.retain(|t| t.version <= version_before);
        }
    }
}

impl TableData {
    fn new(table: DynTable) -> Self {
        Self {
            table,
            rows: BTreeMap::new(),
            attrs: metadata::standard_attributes(table),
            tracking: true,
            token_floor: 0,
            tombstones: Vec::new(),
        }
    }

    fn attr(&self, logical: &str) -> Option<&DynAttribute> {
        self.attrs.iter().find(|a| a.logical_name == logical)
    }

    /// The column a Web API property names (`_x_value` → lookup `x`).
    fn attr_by_web_name(&self, prop: &str) -> Option<&DynAttribute> {
        match prop
            .strip_prefix('_')
            .and_then(|p| p.strip_suffix("_value"))
        {
            Some(lookup) => self.attr(lookup).filter(|a| a.is_lookup()),
            None => self.attr(prop).filter(|a| !a.is_lookup()),
        }
    }
}

/// `org` or an environment host → the store key (an environment host, lower case).
fn env_key(org: &str) -> String {
    let org = org.trim().to_ascii_lowercase();
    if org.contains('.') {
        org
    } else {
        format!("{org}.crm.dynamics.com")
    }
}

impl DynCrmStore {
    fn env_mut(&mut self, env: &str) -> &mut CrmEnv {
        self.envs
            .entry(env.to_owned())
            .or_insert_with(|| CrmEnv::new(env))
    }

    /// The environment of `org` (a host or bare org name) and its clock, epoch seconds.
    fn env_at(&mut self, org: &str) -> (i64, &mut CrmEnv) {
        let key = env_key(org);
        let now = self.now(&key);
        (now, self.env_mut(&key))
    }

    fn knobs_mut(&mut self, env: &str) -> &mut Knobs {
        self.knobs.entry(env.to_owned()).or_default()
    }

    fn now(&self, env: &str) -> i64 {
        clock::now_ms().div_euclid(1000) + self.knobs.get(env).map_or(0, |k| k.clock_offset)
    }

    fn take_malformed(&mut self, route: &str) -> bool {
        match self.malformed.get_mut(route) {
            Some(left) if *left > 0 => {
                *left -= 1;
                if *left == 0 {
                    self.malformed.remove(route);
                }
                true
            }
            _ => false,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The public knobs
// ---------------------------------------------------------------------------------------

/// Dataverse contacts and accounts, for tests and benchmarks.
impl SandboxState {
    /// Replaces the rows of `table` in environment `org` (a host, or a bare org name for
    /// `{org}.crm.dynamics.com`) with `n` deterministic ones (names, emails
    /// `first.last{i}@example.test`, phones, cities; accounts with `name`, `websiteurl`,
    /// `accountnumber`; opportunities `Deal {i}: … renewal` with `estimatedvalue`,
    /// `estimatedclosedate`, `salesstage`, `closeprobability` and no lookups), `modifiedon` spread over the 30 days before the environment's
    /// clock in id-creation order, one second or more apart; the same `seed` gives the same
    /// values in every environment (the ids differ). Custom columns are kept (and
    /// left empty); outstanding delta tokens of the table expire. 10,000 rows take well
    /// under a second. Answers the ids in `modifiedon` order.
    pub fn seed_dynamics_crm(
        &self,
        org: &str,
        table: DynTable,
        n: usize,
        seed: u64,
    ) -> Vec<String> {
        let mut store = self.dynamics_crm_store();
        let (now, env) = store.env_at(org);
        let rows = write::seed_rows(env, table, n, seed, now);
        let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        let floor = env.bump();
        let data = env.table_mut(table);
        data.rows = rows.into_iter().map(|r| (r.id.clone(), r)).collect();
        data.tombstones.clear();
        data.token_floor = floor;
        ids
    }

    /// Adds `n` rows to `table` as users would make them in the app (the table's other
    /// rows stay): the values [`SandboxState::seed_dynamics_crm`] gives the rows after
    /// the ones the table holds, new ids, `modifiedon` now, so change tracking reports
    /// them. Answers their ids.
    pub fn dyn_crm_seed_more(
        &self,
        org: &str,
        table: DynTable,
        n: usize,
        seed: u64,
    ) -> Vec<String> {
        let mut store = self.dynamics_crm_store();
        let (now, env) = store.env_at(org);
        let held = env.table(table).rows.len();
        let rows = write::seed_rows(env, table, held + n, seed, now);
        let mut ids = Vec::with_capacity(n);
        for mut record in rows.into_iter().skip(held) {
            record.id = env.new_id();
            record.created_on = now;
            record.modified_on = now;
            record.version_number = env.bump();
            ids.push(record.id.clone());
            env.put(table, record);
        }
        ids
    }

    /// Every row of `table`, by id.
    pub fn dyn_crm_records(&self, org: &str, table: DynTable) -> Vec<DynRecord> {
        self.dynamics_crm_store()
            .envs
            .get(&env_key(org))
            .map(|env| env.table(table).rows.values().cloned().collect())
            .unwrap_or_default()
    }

    /// One row.
    pub fn dyn_crm_record(&self, org: &str, table: DynTable, id: &str) -> Option<DynRecord> {
        self.dynamics_crm_store()
            .envs
            .get(&env_key(org))?
            .table(table)
            .rows
            .get(&id.to_ascii_lowercase())
            .cloned()
    }

    /// Creates a row as a user would in the app: `values` by logical name (unchecked but
    /// for the key, which is generated), `fullname` derived, `modifiedon` now.
    pub fn dyn_crm_create(
        &self,
        org: &str,
        table: DynTable,
        values: Map<String, Value>,
    ) -> DynRecord {
        let mut store = self.dynamics_crm_store();
        let (now, env) = store.env_at(org);
        let id = env.new_id();
        let version = env.bump();
        let mut record = DynRecord {
            id,
            values: write::default_values(),
            created_on: now,
            modified_on: now,
            version_number: version,
        };
        record.values.extend(values);
        write::derive(table, &mut record);
        env.put(table, record.clone());
        record
    }

    /// Changes a row as a user would in the app (`null` clears a column), bumping
    /// `modifiedon` and `versionnumber`. `None` for an unknown id.
    pub fn dyn_crm_update(
        &self,
        org: &str,
        table: DynTable,
        id: &str,
        changes: Map<String, Value>,
    ) -> Option<DynRecord> {
        let mut store = self.dynamics_crm_store();
        let (now, env) = store.env_at(org);
        let data = env.table(table);
        let mut record = data.rows.get(&id.to_ascii_lowercase())?.clone();
        for (column, value) in changes {
            if value.is_null() {
                record.values.remove(&column);
            } else {
                let value = write::typed_for_knob(data.attr(&column), value);
                record.values.insert(column, value);
            }
        }
        write::derive(table, &mut record);
        record.modified_on = now;
        record.version_number = env.bump();
        env.put(table, record.clone());
        Some(record)
    }

    /// Deletes a row as a user would (change tracking reports it). `false` if unknown.
    pub fn dyn_crm_delete(&self, org: &str, table: DynTable, id: &str) -> bool {
        let key = env_key(org);
        self.dynamics_crm_store()
            .env_mut(&key)
            .remove(table, &id.to_ascii_lowercase())
            .is_some()
    }

    /// The column definitions of `table`, custom ones included.
    pub fn dyn_crm_attributes(&self, org: &str, table: DynTable) -> Vec<DynAttribute> {
        match self.dynamics_crm_store().envs.get(&env_key(org)) {
            Some(env) => env.table(table).attrs.clone(),
            None => metadata::standard_attributes(table),
        }
    }

    /// Turns change tracking of `table` on or off. Turning it on (again) expires every
    /// delta token issued before.
    pub fn dyn_crm_set_change_tracking(&self, org: &str, table: DynTable, enabled: bool) {
        let key = env_key(org);
        let mut store = self.dynamics_crm_store();
        let env = store.env_mut(&key);
        let floor = env.bump();
        let data = env.table_mut(table);
        if enabled && !data.tracking {
            data.token_floor = floor;
        }
        data.tracking = enabled;
    }

    /// Expires every delta token of `table` issued so far (as if the retention passed).
    pub fn dyn_crm_expire_delta_tokens(&self, org: &str, table: DynTable) {
        let key = env_key(org);
        let mut store = self.dynamics_crm_store();
        let env = store.env_mut(&key);
        let floor = env.bump();
        env.table_mut(table).token_floor = floor;
    }

    /// Sets the environment's service-protection limits (each at least 1) and empties its
    /// windows.
    pub fn dyn_crm_set_limits(&self, org: &str, limits: DynCrmLimits) {
        let mut store = self.dynamics_crm_store();
        let knobs = store.knobs_mut(&env_key(org));
        knobs.limits = DynCrmLimits {
            requests_per_window: limits.requests_per_window.max(1),
            execution_ms_per_window: limits.execution_ms_per_window.max(1),
            ms_per_operation: limits.ms_per_operation,
        };
        knobs.windows.clear();
    }

    /// The next `count` requests to `org`'s contact/account routes answer 429 for `limit`
    /// with `Retry-After: retry_after_secs` (at least 1), whatever the windows hold.
    pub fn dyn_crm_throttle_next(
        &self,
        org: &str,
        limit: DynLimit,
        count: u32,
        retry_after_secs: u64,
    ) {
        self.dynamics_crm_store().knobs_mut(&env_key(org)).forced =
            (count > 0).then_some((limit, count, retry_after_secs.max(1)));
    }

    /// The environment's clock, epoch seconds (what the next change is stamped with).
    pub fn dyn_crm_now(&self, org: &str) -> i64 {
        self.dynamics_crm_store().now(&env_key(org))
    }

    /// Moves the environment's clock by `secs` (delta tokens age with it).
    pub fn dyn_crm_advance_clock(&self, org: &str, secs: i64) {
        self.dynamics_crm_store()
            .knobs_mut(&env_key(org))
            .clock_offset += secs;
    }

    /// Gives the environment's users the privileges on `table`'s rows (the default), or
    /// takes them away: a security role without, say, the Sales app's
    /// `prvReadOpportunity`. Without them every request on the table's rows (a `$batch`
    /// part too) is 403 `0x80040220` naming the privilege its method needs.
    pub fn dyn_crm_set_table_privileges(&self, org: &str, table: DynTable, granted: bool) {
        let key = env_key(org);
        let mut store = self.dynamics_crm_store();
        let env = store.env_mut(&key);
        if granted {
            env.denied.remove(&table);
        } else {
            env.denied.insert(table);
        }
    }

    /// Adds a publisher customization prefix custom columns may use (`new` is known).
    pub fn dyn_crm_add_publisher_prefix(&self, org: &str, prefix: &str) {
        let key = env_key(org);
        let mut store = self.dynamics_crm_store();
        let env = store.env_mut(&key);
        let prefix = prefix.to_ascii_lowercase();
        if !env.prefixes.contains(&prefix) {
            env.prefixes.push(prefix);
        }
    }

    /// Whether `GET contacts` and `POST contacts` of `org` come here (`true`) or go to the
    /// dispatch-action stand-in (`crate::actions`, the default, which keeps its own
    /// contacts for the dispatch scenarios). Every other contact/account route is always
    /// served here.
    pub fn dyn_crm_serve_contacts(&self, org: &str, on: bool) {
        let key = env_key(org);
        let mut store = self.dynamics_crm_store();
        if on {
            store.contact_collection.insert(key);
        } else {
            store.contact_collection.remove(&key);
        }
    }

    /// The next `count` answers of `route` (a `dynamics365.crm_*` route name) are cut in
    /// half and end in a NUL byte, whatever their status; 0 clears it.
    pub fn malform_dynamics_responses(&self, route: &str, count: u32) {
        let mut store = self.dynamics_crm_store();
        if count == 0 {
            store.malformed.remove(route);
        } else {
            store.malformed.insert(route.to_owned(), count);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------------------

/// A contact/account route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CrmRoute {
    /// `GET contacts`.
    List(DynTable),
    /// `GET contacts({id})`.
    Get(DynTable),
    /// `POST contacts`.
    Create(DynTable),
    /// `PATCH contacts({id})`.
    Update(DynTable),
    /// `DELETE contacts({id})`.
    Delete(DynTable),
    /// `DELETE opportunities({id})/{navigation property}/$ref`.
    DeleteRef(DynTable),
    /// `POST $batch`.
    Batch,
    /// `GET EntityDefinitions(LogicalName='…')`.
    EntityDefinition,
    /// `GET EntityDefinitions(LogicalName='…')/Attributes`.
    Attributes,
    /// `GET EntityDefinitions(LogicalName='…')/Attributes(LogicalName='…')`.
    Attribute,
    /// `POST EntityDefinitions(LogicalName='…')/Attributes`.
    CreateAttribute,
    /// A webhook registration table ([`hooks`]).
    Hooks(hooks::HookRoute),
}

impl CrmRoute {
    /// The table whose rows the route reads or writes.
    fn table(self) -> Option<DynTable> {
        match self {
            CrmRoute::List(t)
            | CrmRoute::Get(t)
            | CrmRoute::Create(t)
            | CrmRoute::Update(t)
            | CrmRoute::Delete(t)
            | CrmRoute::DeleteRef(t) => Some(t),
            _ => None,
        }
    }

    /// The route's counter name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            CrmRoute::List(_) => CRM_LIST,
            CrmRoute::Get(_) => CRM_GET,
            CrmRoute::Create(_) => CRM_CREATE,
            CrmRoute::Update(_) => CRM_UPDATE,
            CrmRoute::Delete(_) | CrmRoute::DeleteRef(_) => CRM_DELETE,
            CrmRoute::Batch => CRM_BATCH,
            CrmRoute::EntityDefinition => CRM_ENTITY_DEFINITION,
            CrmRoute::Attributes => CRM_ATTRIBUTES,
            CrmRoute::Attribute => CRM_ATTRIBUTE,
            CrmRoute::CreateAttribute => CRM_CREATE_ATTRIBUTE,
            CrmRoute::Hooks(r) => r.name(),
        }
    }
}

/// Whether the request is `GET`/`POST contacts` of an environment switched to this
/// module ([`SandboxState::dyn_crm_serve_contacts`]).
pub(crate) fn serves_contact_collection(state: &SandboxState, req: &ProviderRequest) -> bool {
    matches!(
        route(req),
        Some(CrmRoute::List(DynTable::Contact) | CrmRoute::Create(DynTable::Contact))
    ) && state
        .dynamics_crm_store()
        .contact_collection
        .contains(&req.host)
}

/// Matches a request to a route.
pub(crate) fn route(req: &ProviderRequest) -> Option<CrmRoute> {
    let (_, segment) = split_path(&req.path)?;
    match_segment(&req.method, segment)
}

/// Matches a method and the path after `/api/data/v9.x/`.
fn match_segment(method: &Method, segment: &str) -> Option<CrmRoute> {
    if segment == "$batch" {
        return (*method == Method::POST).then_some(CrmRoute::Batch);
    }
    if let Some(rest) = segment.strip_prefix("EntityDefinitions(") {
        let (_, tail) = rest.split_once(')')?;
        return match (method, tail) {
            (&Method::GET, "") => Some(CrmRoute::EntityDefinition),
            (
                &Method::GET,
                "/Attributes"
                | "/Attributes/Microsoft.Dynamics.CRM.StringAttributeMetadata"
                | "/Attributes/Microsoft.Dynamics.CRM.PicklistAttributeMetadata"
                | "/Attributes/Microsoft.Dynamics.CRM.LookupAttributeMetadata",
            ) => Some(CrmRoute::Attributes),
            (&Method::POST, "/Attributes") => Some(CrmRoute::CreateAttribute),
            (&Method::GET, t) if t.starts_with("/Attributes(") && t.ends_with(')') => {
                Some(CrmRoute::Attribute)
            }
            _ => None,
        };
    }
    let (set, keyed) = match segment.split_once('(') {
        Some((set, rest)) if rest.ends_with(')') && !rest.contains('/') => (set, true),
        // `opportunities({id})/parentcontactid/$ref`.
        Some((set, rest))
            if *method == Method::DELETE
                && rest.ends_with("/$ref")
                && rest.matches('/').count() == 2
                && rest.contains(")/") =>
        {
            return DynTable::from_set(set).map(CrmRoute::DeleteRef);
        }
        Some(_) => return None,
        None => (segment, false),
    };
    if let Some(r) = hooks::HookRoute::of(method, set, keyed) {
        return Some(CrmRoute::Hooks(r));
    }
    let table = DynTable::from_set(set)?;
    match (method, keyed) {
        (&Method::GET, false) => Some(CrmRoute::List(table)),
        (&Method::POST, false) => Some(CrmRoute::Create(table)),
        (&Method::GET, true) => Some(CrmRoute::Get(table)),
        (&Method::PATCH, true) => Some(CrmRoute::Update(table)),
        (&Method::DELETE, true) => Some(CrmRoute::Delete(table)),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Answers
// ---------------------------------------------------------------------------------------

/// An answer body.
#[derive(Debug)]
enum Body {
    Empty,
    Json(Value),
    /// `(content type, text)`, for `$batch`.
    Raw(String, String),
}

/// What a route answers, before it becomes an HTTP response (or a `$batch` part).
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    headers: Vec<(&'static str, String)>,
    body: Body,
}

impl Answer {
    fn json(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Body::Json(body),
        }
    }

    fn empty(status: StatusCode) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Body::Empty,
        }
    }

    fn with(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn is_error(&self) -> bool {
        self.status.is_client_error() || self.status.is_server_error()
    }

    fn into_response(self) -> Response {
        let mut response = match self.body {
            Body::Empty => self.status.into_response(),
            Body::Json(value) => {
                let mut r = wire::json(self.status, value);
                r.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("application/json; odata.metadata=minimal"),
                );
                r
            }
            Body::Raw(content_type, text) => {
                let mut r = (self.status, text).into_response();
                if let Ok(value) = HeaderValue::from_str(&content_type) {
                    r.headers_mut().insert(CONTENT_TYPE, value);
                }
                r
            }
        };
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                response.headers_mut().append(name, value);
            }
        }
        response
    }
}

/// The Web API's error answer.
fn error(status: StatusCode, code: &str, message: &str) -> Answer {
    Answer::json(status, json!({"error": {"code": code, "message": message}}))
}

/// 400 `0x80060888` (OData syntax / payload errors).
fn syntax(message: &str) -> Answer {
    error(StatusCode::BAD_REQUEST, "0x80060888", message)
}

/// 404 `0x80040217` for a row that does not exist.
fn missing(table: DynTable, id: &str) -> Answer {
    error(
        StatusCode::NOT_FOUND,
        "0x80040217",
        &format!("{} With Id = {id} Does Not Exist", table.logical_name()),
    )
}

/// A finished error response of the shared OData helpers ([`super::dynamics365_kb`])
/// turned back into an answer, so that `$batch` can print it as a part.
fn from_response(response: Response) -> Answer {
    let status = response.status();
    let body = futures_body(response);
    Answer::json(status, body)
}

/// The JSON body of an already-built error response (the KB helpers' bodies are JSON
/// held in memory, so polling once completes).
fn futures_body(response: Response) -> Value {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};
    let future = axum::body::to_bytes(response.into_body(), 1 << 20);
    let mut future = pin!(future);
    let mut cx = Context::from_waker(Waker::noop());
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(bytes)) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        _ => Value::Null,
    }
}

// ---------------------------------------------------------------------------------------
// Serving
// ---------------------------------------------------------------------------------------

/// Everything a route needs to know of its request besides the store.
struct Ctx {
    /// `https://{env}/api/data/v9.x`.
    base: String,
    now: i64,
    /// The calling user's id.
    user: String,
}

/// Serves a contact/account route: token, then service protection, then the route.
pub(crate) fn handle(route: CrmRoute, state: &SandboxState, req: &ProviderRequest) -> Response {
    let grant = match oauth::bearer_access(
        state,
        OAuthProvider::Dynamics365,
        wire::bearer_token(&req.headers),
    ) {
        AccessCheck::Granted(grant) if audience_ok(&grant, &req.host) => grant,
        _ => return unauthorized(&req.host),
    };
    let Some((prefix, _)) = split_path(&req.path) else {
        return super::dynamics365::not_found();
    };
    let base = format!("https://{}{prefix}", req.host);
    let user = grant.user.user_id.clone();
    let mut store = state.dynamics_crm_store();
    let now = store.now(&req.host);
    let admitted = admit(&mut store, &req.host, &user);
    let answer = match admitted {
        Err(refused) => refused,
        Ok(()) => {
            let ctx = Ctx {
                base,
                now,
                user: user.clone(),
            };
            let env = store.env_mut(&req.host);
            let (answer, operations) = match route {
                CrmRoute::Batch => batch::run(env, &ctx, req),
                _ => (execute(env, &ctx, route, req, &BTreeMap::new()), 1),
            };
            charge(&mut store, &req.host, &user, operations);
            answer
        }
    };
    let (burst, time) = remaining(&mut store, &req.host, &user);
    let malform = store.take_malformed(route.name());
    drop(store);
    let mut answer = answer
        .with("OData-Version", "4.0")
        .with(
            "x-ms-ratelimit-burst-remaining-xrm-requests",
            burst.to_string(),
        )
        .with(
            "x-ms-ratelimit-time-remaining-xrm-requests",
            thousands(time),
        );
    if malform {
        answer.body = match answer.body {
            Body::Json(value) => Body::Raw("application/json".to_owned(), cut(&value.to_string())),
            Body::Raw(content_type, text) => Body::Raw(content_type, cut(&text)),
            Body::Empty => Body::Raw("application/json".to_owned(), "{\u{0}".to_owned()),
        };
    }
    answer.into_response()
}

/// Half of `text` and a NUL byte.
fn cut(text: &str) -> String {
    let half: String = text.chars().take(text.chars().count() / 2).collect();
    format!("{half}\u{0}")
}

/// `1199980` → `1,199,980.00`, as Dataverse prints the time header.
fn thousands(ms: u64) -> String {
    let digits = ms.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    format!("{out}.00")
}

/// Runs one (non-batch) route on an environment. `refs` are a change set's `Content-ID`s.
fn execute(
    env: &mut CrmEnv,
    ctx: &Ctx,
    route: CrmRoute,
    req: &ProviderRequest,
    refs: &BTreeMap<String, (DynTable, String)>,
) -> Answer {
    let segment = split_path(&req.path).map_or("", |(_, s)| s);
    if let Some(table) = route.table()
        && env.denied.contains(&table)
    {
        return privilege_denied(ctx, table, &req.method);
    }
    match route {
        CrmRoute::List(table) => query::list(env, ctx, table, req),
        CrmRoute::Get(table) => query::get(env, ctx, table, segment, req),
        CrmRoute::Create(table) => write::create(env, ctx, table, req, refs),
        CrmRoute::Update(table) => write::update(env, ctx, table, segment, req, refs),
        CrmRoute::Delete(table) => write::delete(env, table, segment, req),
        CrmRoute::DeleteRef(table) => write::delete_ref(env, ctx, table, segment, req),
        CrmRoute::Batch => syntax("A batch request cannot contain another batch request."),
        CrmRoute::EntityDefinition => metadata::entity_definition(env, ctx, segment, req),
        CrmRoute::Attributes => metadata::attributes(env, ctx, segment, req),
        CrmRoute::Attribute => metadata::attribute(env, ctx, segment, req),
        CrmRoute::CreateAttribute => metadata::create_attribute(env, ctx, segment, req),
        CrmRoute::Hooks(r) => hooks::serve(&mut env.hooks, ctx, r, req),
    }
}

/// Dataverse's 403 for a security role without the privilege a request on `table`'s rows
/// needs (`prvReadOpportunity`, `prvCreateOpportunity`, `prvWriteOpportunity`,
/// `prvDeleteOpportunity`, …).
fn privilege_denied(ctx: &Ctx, table: DynTable, method: &Method) -> Answer {
    let action = match *method {
        Method::GET => "Read",
        Method::POST => "Create",
        Method::DELETE => "Delete",
        _ => "Write",
    };
    let name = table.logical_name();
    let mut entity = name.to_owned();
    if let Some(first) = entity.get_mut(..1) {
        first.make_ascii_uppercase();
    }
    error(
        StatusCode::FORBIDDEN,
        "0x80040220",
        &format!(
            "Principal user (Id={}, type=8, roleCount=1, privilegeCount=0, accessMode=0), is missing prv{action}{entity} privilege (Id=00000000-0000-0000-0000-000000000000) on OTC={} for entity '{name}'.",
            ctx.user,
            table.object_type_code()
        ),
    )
}

/// The `Prefer` preferences the contact/account routes know.
#[derive(Debug, Default)]
struct Prefer {
    max_page_size: Option<usize>,
    track_changes: bool,
    return_representation: bool,
    continue_on_error: bool,
}

impl Prefer {
    fn parse(headers: &HeaderMap) -> Self {
        let mut prefer = Prefer::default();
        for value in headers.get_all("prefer") {
            let Ok(text) = value.to_str() else { continue };
            for item in super::dynamics365_kb::split_outside_quotes(text, ',') {
                let (name, raw) = item.split_once('=').unwrap_or((item, ""));
                let raw = raw.trim().trim_matches('"');
                match name.trim().to_ascii_lowercase().as_str() {
                    "odata.maxpagesize" => {
                        prefer.max_page_size = raw
                            .parse::<usize>()
                            .ok()
                            .filter(|n| (1..=super::dynamics365_kb::MAX_PAGE_SIZE).contains(n));
                    }
                    "odata.track-changes" => prefer.track_changes = true,
                    "return" => prefer.return_representation = raw == "representation",
                    "odata.continue-on-error" => prefer.continue_on_error = true,
                    _ => {}
                }
            }
        }
        prefer
    }
}

// ---------------------------------------------------------------------------------------
// Service protection
// ---------------------------------------------------------------------------------------

/// Counts a request against the user's window, or refuses it.
fn admit(store: &mut DynCrmStore, env: &str, user: &str) -> Result<(), Answer> {
    let knobs = store.knobs_mut(env);
    if let Some((limit, left, retry)) = knobs.forced {
        knobs.forced = (left > 1).then_some((limit, left - 1, retry));
        return Err(throttled(limit, &knobs.limits, retry));
    }
    let limits = knobs.limits;
    let window = Duration::from_secs(WINDOW_SECS);
    let now = Instant::now();
    let w = knobs.windows.entry(user.to_owned()).or_default();
    prune(w, now, window);
    if w.requests.len() as u64 >= limits.requests_per_window {
        let oldest = w.requests.front().copied().unwrap_or(now);
        return Err(throttled(
            DynLimit::Requests,
            &limits,
            secs_until(oldest + window, now),
        ));
    }
    let used: u64 = w.time.iter().map(|(_, ms)| ms).sum();
    if used >= limits.execution_ms_per_window {
        // Free as soon as enough of the oldest time leaves the window.
        let mut freed = 0;
        let mut at = now;
        for (t, ms) in &w.time {
            freed += ms;
            at = *t + window;
            if used - freed < limits.execution_ms_per_window {
                break;
            }
        }
        return Err(throttled(
            DynLimit::ExecutionTime,
            &limits,
            secs_until(at, now),
        ));
    }
    w.requests.push_back(now);
    Ok(())
}

/// Adds the execution time of `operations`.
fn charge(store: &mut DynCrmStore, env: &str, user: &str, operations: u64) {
    let knobs = store.knobs_mut(env);
    let cost = operations.saturating_mul(knobs.limits.ms_per_operation);
    if cost > 0 {
        knobs
            .windows
            .entry(user.to_owned())
            .or_default()
            .time
            .push_back((Instant::now(), cost));
    }
}

/// `(requests, ms)` left in the user's window.
fn remaining(store: &mut DynCrmStore, env: &str, user: &str) -> (u64, u64) {
    let knobs = store.knobs_mut(env);
    let limits = knobs.limits;
    let w = knobs.windows.entry(user.to_owned()).or_default();
    prune(w, Instant::now(), Duration::from_secs(WINDOW_SECS));
    let used: u64 = w.time.iter().map(|(_, ms)| ms).sum();
    (
        limits
            .requests_per_window
            .saturating_sub(w.requests.len() as u64),
        limits.execution_ms_per_window.saturating_sub(used),
    )
}

fn prune(w: &mut UserWindow, now: Instant, window: Duration) {
    while w
        .requests
        .front()
        .is_some_and(|t| now.duration_since(*t) >= window)
    {
        w.requests.pop_front();
    }
    while w
        .time
        .front()
        .is_some_and(|(t, _)| now.duration_since(*t) >= window)
    {
        w.time.pop_front();
    }
}

fn secs_until(at: Instant, now: Instant) -> u64 {
    let wait = at.saturating_duration_since(now);
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// Dataverse's 429 for a service-protection limit.
fn throttled(limit: DynLimit, limits: &DynCrmLimits, retry_after: u64) -> Answer {
    let (code, message) = match limit {
        DynLimit::Requests => (
            REQUESTS_LIMIT_CODE,
            format!(
                "Number of requests exceeded the limit of {} over time window of {WINDOW_SECS} seconds.",
                limits.requests_per_window
            ),
        ),
        DynLimit::ExecutionTime => (
            TIME_LIMIT_CODE,
            format!(
                "Combined execution time of incoming requests exceeded limit of {} milliseconds over time window of {WINDOW_SECS} seconds. Decrease number of concurrent requests or reduce the duration of requests and try again later.",
                thousands(limits.execution_ms_per_window).trim_end_matches(".00")
            ),
        ),
        DynLimit::Concurrency => (
            CONCURRENCY_LIMIT_CODE,
            "Number of concurrent requests exceeded the limit of 52.".to_owned(),
        ),
    };
    error(StatusCode::TOO_MANY_REQUESTS, code, &message)
        .with("Retry-After", retry_after.to_string())
}

// ---------------------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------------------

/// The id of `contacts({guid})` or `contacts(contactid={guid})`.
fn key_of(table: DynTable, segment: &str) -> Result<String, Answer> {
    let raw = segment
        .split_once('(')
        .and_then(|(_, rest)| rest.strip_suffix(')'))
        .unwrap_or_default();
    let raw = raw
        .strip_prefix(&format!("{}=", table.key()))
        .unwrap_or(raw);
    if super::dynamics365_kb::is_guid(raw) {
        Ok(raw.to_ascii_lowercase())
    } else if raw.contains('=') {
        Err(error(
            StatusCode::BAD_REQUEST,
            "0x80060888",
            &format!(
                "The key used is not defined for entity {} (alternate keys are not reproduced).",
                table.logical_name()
            ),
        ))
    } else {
        Err(syntax("Bad Request - Error in query syntax."))
    }
}

/// A row as the Web API prints it: etag, the selected (or every) column, the key.
fn row_json(data: &TableData, record: &DynRecord, select: Option<&[String]>) -> Map<String, Value> {
    let mut object = Map::new();
    object.insert(
        "@odata.etag".to_owned(),
        json!(format!("W/\"{}\"", record.version_number)),
    );
    let key = data.table.key();
    let mut put = |attr: &DynAttribute| {
        let name = attr.web_name();
        let value = column_value(data.table, record, attr);
        object.insert(name, value);
    };
    match select {
        Some(list) => {
            for prop in list {
                if let Some(attr) = data.attr_by_web_name(prop) {
                    put(attr);
                }
            }
        }
        None => data.attrs.iter().for_each(put),
    }
    object.insert(key.to_owned(), json!(record.id));
    object
}

/// A column's JSON value.
fn column_value(table: DynTable, record: &DynRecord, attr: &DynAttribute) -> Value {
    match attr.logical_name.as_str() {
        n if n == table.key() => json!(record.id),
        "createdon" => json!(iso(record.created_on)),
        "modifiedon" => json!(iso(record.modified_on)),
        "versionnumber" => json!(record.version_number),
        "ownerid" => json!(OWNER_ID),
        n => record.values.get(n).cloned().unwrap_or(Value::Null),
    }
}

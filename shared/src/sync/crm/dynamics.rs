//! Dynamics 365 (Dataverse Web API v9.2): the `contact`, `account` and `opportunity`
//! tables (opportunities are deals: `parentaccountid` / `parentcontactid` their
//! associations, `salesstage` the stage Picklist) of the
//! connection's environment (every path is under `https://{org}.{region}.dynamics.com/
//! api/data/v9.2`). Microsoft publishes no static `$metadata` document, so there is no
//! contract test against a spec; the shapes below follow Microsoft's Web API pages
//! ("Query data", "Page results", "Use change tracking to synchronize data with external
//! systems", "Execute batch operations", "Create and update column definitions",
//! "Service protection API limits", "Web service error codes").
//!
//! - **Pull: change tracking.** A full pass `GET /{set}?$select=…` with `Prefer:
//!   odata.track-changes,odata.maxpagesize=500` answers every row, page by page through
//!   `@odata.nextLink` (followed only under the API base, the same `Prefer` again); the
//!   last page's `@odata.deltaLink` is kept ([`PullPage::resume`] → [`Cursor::delta`]).
//!   The next pass GETs that link: the rows created or changed since, then
//!   `…/$deletedEntity` rows (`{"id", "reason": "deleted"}`) for the deletions, which go
//!   to [`PullPage::deleted`]; its last page brings the next delta link. A delta link
//!   keeps the `$select` it was made with: when the fields wanted are no longer all in
//!   it (a mapping added a field, the marker column was created), the link is still
//!   read to its end for its deletions (its rows are dropped), then a new full pass
//!   with every field reads the rows. Change tracking refuses `$filter`, `$orderby`
//!   and `$top`, so a config's filters are applied to each page here, on the CRM's
//!   values; rows come in the CRM's order, not by modification time. An expired or unknown delta token (400
//!   `0x80044352` "Version stamp associated with the client has expired", after the
//!   retention — 7 days by default — or a re-enabled tracking) starts a new full
//!   tracked pass ([`PullPage::restarted`]): it sees every current row again, and at
//!   its end the engine reads back every linked record (100 ids a `$filter`) and takes
//!   those gone as the deletions made during the gap. A table without change tracking
//!   (400 `0x80072491`) is not served: tracking is on for `contact` and `account` by
//!   default and an admin must turn it back on. `deleted_since` reports nothing: the
//!   deletions come through the delta.
//! - **Find**: `GET /{set}?$filter=f eq 'a' or f eq 'b' …` (`'` doubled), 50 values a
//!   query (URLs stay far below Dataverse's 32 KB); Dataverse compares text without
//!   case, so only the rows whose value is one asked for are kept.
//! - **Read**: `GET /{set}?$filter=contactid eq {guid} or …` (a batch of ids).
//! - **Write**: `POST /$batch` (`multipart/mixed`, at most 1,000 requests; the catalogue
//!   sends 100) with one independent request per record — no change set, so one
//!   record's failure undoes nothing else — and `Prefer: odata.continue-on-error`, so
//!   every record gets its own response part, in order. Creates `POST /{set}` (the id
//!   from the part's `OData-EntityId`, or the key of a returned row). The marker column
//!   is not unique (alternate keys need an index job), so a marked create carries a
//!   primary key of its own making, derived from the app record id (Dataverse accepts
//!   a client-chosen key): a create retried after a lost answer, or delivered twice,
//!   is refused 412 `0x80040237` and reported as existing, never duplicated (an
//!   unmarked create gets Dataverse's key). Updates `PATCH /{set}({id})` with
//!   `If-Match: *`, so a record deleted in the CRM is not re-created by the upsert
//!   `PATCH` would otherwise be (its 404 is that record's failure). Values typed by
//!   the column's `AttributeType`. A lookup (read as `_x_value`) with one target table is
//!   written through its single-valued navigation property, `"parentaccountid@odata.bind":
//!   "/accounts({guid})"`, and cleared with `null` (Microsoft's "set the value to null"
//!   disassociation); polymorphic `Customer` / `Owner` lookups stay read-only. A Picklist
//!   value that is not one of its options (a label, say) is that record's failure,
//!   naming the column and value, before anything is sent. An answer whose
//!   parts cannot be read, or do not match the requests one to one, is malformed (the
//!   chunk is retried from its checkpoint; its creates are then refused as existing).
//! - **Deletes**: the same `$batch` of `DELETE /{set}({id})`; a 404 is a record already
//!   gone.
//! - **Marker**: a custom text column `new_conduitid` (SchemaName `new_ConduitId`, the
//!   default publisher's prefix `new`), created with `POST EntityDefinitions(LogicalName=
//!   '{table}')/Attributes` when missing; it can be used at once. Without the
//!   privilege to customize (403), creates de-duplicate by key (`emailaddress1`,
//!   `websiteurl`).
//! - **Describe**: `GET EntityDefinitions(LogicalName='{table}')/Attributes` →
//!   `AttributeType` to a field type (text columns named like e-mail, phone and web
//!   site columns as such), `IsValidForCreate` and `IsValidForUpdate` → writable,
//!   `RequiredLevel` → required; lookups as their Web API properties `_x_value`;
//!   virtual and other unreadable columns (`AttributeOf` set, `Virtual`, …) left out.
//!   When the table has `Lookup` columns, `…/Attributes/Microsoft.Dynamics.CRM.
//!   LookupAttributeMetadata?$select=LogicalName,SchemaName,IsCustomAttribute,Targets`
//!   tells each one's target (its entity set: the logical name in the plural) and
//!   navigation property (a standard lookup's logical name, a custom one's schema name);
//!   when it has `Picklist` columns, `…/Microsoft.Dynamics.CRM.PicklistAttributeMetadata
//!   ?$select=LogicalName&$expand=OptionSet($select=Options)` their option values (a
//!   value map is checked against them when a config is saved).
//! - **Errors**: `{"error":{"code":"0x…","message"}}`. 429 (service protection, per user
//!   over 5 minutes: 6,000 requests `0x80072322`, 1,200 s of execution time
//!   `0x80072321`, 52 concurrent requests `0x80072326`) always comes with
//!   `Retry-After`: a wait. 401 comes without a body (the transport refreshes the
//!   token). 403 `0x80040220` (PrivilegeDenied: the user's security roles lack a
//!   privilege) is reported as missing grants, like Zoho's `NO_PERMISSION`: a
//!   reconnect with a user who has the privilege, or a role change, helps.
//!   `x-ms-ratelimit-burst-remaining-xrm-requests` is kept as the usage report.

use std::collections::BTreeMap;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};

use super::transport::{Target, Wire};
use super::{
    CrmClient, CrmError, CrmRecord, Cursor, Dialect, PullPage, WriteOutcome, WriteValues, clip,
    parse_time_ms, scalar_text,
};
use super::{holding, passing};
use crate::sync::config::Filter;
use crate::sync::schema::{CrmField, Entity, FieldType};

/// The path of the API base (the catalogue's `api_base`), for `$batch` parts.
const SERVICE_PATH: &str = "/api/data/v9.2";
/// Rows a page asks for (`odata.maxpagesize`).
const PAGE: usize = 500;
/// Values one find takes.
const FIND_CHUNK: usize = 50;
/// The marker column's schema name (its logical name is the catalogue's `marker`).
const MARKER_SCHEMA: &str = "new_ConduitId";
/// The marker column's label.
const MARKER_LABEL: &str = "Conduit Id";
/// The marker column's length (an app record id is far shorter).
const MARKER_LENGTH: u32 = 100;
/// A create whose key exists already.
const KEY_EXISTS: &str = "0x80040237";
/// An expired or unknown delta token.
const EXPIRED_TOKEN: &str = "0x80044352";
/// The user's security roles lack a privilege.
const PRIVILEGE_DENIED: &str = "0x80040220";

/// The Dynamics 365 dialect.
#[derive(Debug)]
pub struct Dynamics;

/// The entity set and primary key of a table (its logical name, the catalogue's object).
fn table(logical: &str) -> (String, String) {
    (entity_set(logical), format!("{logical}id"))
}

/// The entity set of a table: its logical name in the plural, as Dataverse names the
/// sets of its standard tables (`opportunity` → `opportunities`, `transactioncurrency`
/// → `transactioncurrencies`, `contact` → `contacts`).
fn entity_set(logical: &str) -> String {
    match logical.strip_suffix('y') {
        Some(stem) if !stem.ends_with(['a', 'e', 'o', 'u']) => format!("{stem}ies"),
        _ if logical.ends_with('s') || logical.ends_with('x') => format!("{logical}es"),
        _ => format!("{logical}s"),
    }
}

/// The note ([`CrmClient::note`]) holding how the writable lookups of a table are
/// written: one `_x_value\tnavigation property\ttarget entity set` line each.
const BINDS: &str = "dynamics.binds";

/// A writable lookup: how its `_x_value` property is written.
#[derive(Debug, Clone, PartialEq)]
struct Bind {
    /// The read property, `_parentaccountid_value`.
    field: String,
    /// The single-valued navigation property, `parentaccountid`.
    nav: String,
    /// The entity set of the one table it refers to, `accounts`.
    set: String,
}

impl Bind {
    fn line(&self) -> String {
        format!("{}\t{}\t{}", self.field, self.nav, self.set)
    }

    fn parse(note: &str) -> Vec<Self> {
        note.lines()
            .filter_map(|l| {
                let mut it = l.split('\t');
                Some(Self {
                    field: it.next()?.to_owned(),
                    nav: it.next()?.to_owned(),
                    set: it.next()?.to_owned(),
                })
            })
            .collect()
    }

    /// The body member writing `id` (`None` clears: Microsoft's "set the value to
    /// null" disassociation).
    fn member(&self, id: Option<&str>) -> (String, Value) {
        let value = id.map_or(Value::Null, |id| json!(format!("/{}({id})", self.set)));
        (format!("{}@odata.bind", self.nav), value)
    }
}

/// The writable lookups of a `LookupAttributeMetadata` answer: `Lookup` columns valid
/// for create and update with a single target table (polymorphic `Customer` and `Owner`
/// lookups stay read-only). The navigation property of a standard lookup is its logical
/// name; of a custom one its schema name (Dataverse's default for both).
fn binds(v: &Value, writable: &[String]) -> Result<Vec<Bind>, CrmError> {
    let mut out = Vec::new();
    for a in rows(v)? {
        let Some(logical) = a.get("LogicalName").and_then(Value::as_str) else {
            continue;
        };
        let field = format!("_{logical}_value");
        let targets: Vec<&str> = a
            .get("Targets")
            .and_then(Value::as_array)
            .map(|t| t.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let [target] = targets.as_slice() else {
            continue;
        };
        if !writable.contains(&field) {
            continue;
        }
        let custom = a.get("IsCustomAttribute").and_then(Value::as_bool) == Some(true);
        let nav = match a.get("SchemaName").and_then(Value::as_str) {
            Some(schema) if custom => schema.to_owned(),
            _ => logical.to_owned(),
        };
        out.push(Bind {
            field,
            nav,
            set: entity_set(target),
        });
    }
    Ok(out)
}

/// A metadata answer, or `None` where Dataverse refused the query itself (400, 404);
/// other errors stay errors.
fn not_refused(answer: Result<Value, CrmError>) -> Result<Option<Value>, CrmError> {
    match answer {
        Ok(v) => Ok(Some(v)),
        Err(CrmError::Rejected {
            status: 400 | 404, ..
        }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The options of a `PicklistAttributeMetadata` answer (`$expand=OptionSet`): each
/// column's option values, as text.
fn picklists(v: &Value) -> Result<BTreeMap<String, Vec<String>>, CrmError> {
    let mut out = BTreeMap::new();
    for a in rows(v)? {
        let Some(logical) = a.get("LogicalName").and_then(Value::as_str) else {
            continue;
        };
        let options = ["OptionSet", "GlobalOptionSet"]
            .iter()
            .filter_map(|k| {
                a.pointer(&format!("/{k}/Options"))
                    .and_then(Value::as_array)
            })
            .flatten()
            .filter_map(|o| o.get("Value").and_then(scalar_text))
            .collect();
        out.insert(logical.to_owned(), options);
    }
    Ok(out)
}

impl Wire for Dynamics {
    fn provider(&self) -> &'static str {
        "dynamics365"
    }

    fn usage_header(&self) -> Option<&'static str> {
        Some("x-ms-ratelimit-burst-remaining-xrm-requests")
    }

    fn refusal(&self, status: StatusCode, body: Option<&Value>, _text: &str) -> Option<CrmError> {
        let code = body?.pointer("/error/code").and_then(Value::as_str)?;
        (status == StatusCode::FORBIDDEN && code.eq_ignore_ascii_case(PRIVILEGE_DENIED))
            .then(|| CrmError::ScopesMissing(Vec::new()))
    }

    fn error_message(&self, v: &Value) -> String {
        let code = v
            .pointer("/error/code")
            .and_then(Value::as_str)
            .unwrap_or("error");
        let message = v
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("");
        clip(&format!("{code}: {message}"))
    }
}

/// Whether a refusal is Dataverse's expired delta token.
fn expired_token(e: &CrmError) -> bool {
    matches!(e, CrmError::Rejected { status: 400, message } if message.starts_with(EXPIRED_TOKEN))
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// A row as a record: its key, its scalar properties (annotations left out).
fn record(row: &Value, key: &str, modified: &str) -> Result<CrmRecord, CrmError> {
    let obj = row
        .as_object()
        .ok_or_else(|| CrmError::Malformed("row is not an object".into()))?;
    let id = obj
        .get(key)
        .and_then(scalar_text)
        .ok_or_else(|| CrmError::Malformed("row without its key".into()))?;
    let values: BTreeMap<String, String> = obj
        .iter()
        .filter(|(k, _)| !k.contains('@'))
        .filter_map(|(k, v)| scalar_text(v).map(|t| (k.clone(), t)))
        .collect();
    let modified_ms = values
        .get(modified)
        .and_then(|t| parse_time_ms(t))
        .unwrap_or(0);
    Ok(CrmRecord {
        id,
        values,
        modified_ms,
    })
}

/// The rows of a collection answer.
fn rows(v: &Value) -> Result<&Vec<Value>, CrmError> {
    v.get("value")
        .and_then(Value::as_array)
        .ok_or_else(|| CrmError::Malformed("answer without value".into()))
}

/// A change-tracking row reporting a deletion: its id.
fn deleted_id(row: &Value) -> Option<String> {
    let context = row.get("@odata.context").and_then(Value::as_str);
    let deleted = context.is_some_and(|c| c.ends_with("$deletedEntity"))
        || row.get("reason").and_then(Value::as_str) == Some("deleted");
    if !deleted {
        return None;
    }
    row.get("id").and_then(scalar_text)
}

/// What one page of a tracked pull holds.
#[derive(Debug, Default)]
struct Changes {
    records: Vec<CrmRecord>,
    deleted: Vec<String>,
    next: Option<String>,
    delta: Option<String>,
}

fn changes(v: &Value, key: &str, modified: &str) -> Result<Changes, CrmError> {
    let mut out = Changes::default();
    for row in rows(v)? {
        match deleted_id(row) {
            Some(id) => out.deleted.push(id),
            None => out.records.push(record(row, key, modified)?),
        }
    }
    let link = |name: &str| {
        v.get(name)
            .and_then(Value::as_str)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
    };
    out.next = link("@odata.nextLink");
    out.delta = link("@odata.deltaLink");
    if out.next.is_none() && out.delta.is_none() {
        return Err(CrmError::Malformed(
            "a tracked answer with neither a next nor a delta link".into(),
        ));
    }
    Ok(out)
}

/// Where a pull pass goes next (kept as [`Cursor::page`]).
#[derive(Debug, Clone, PartialEq)]
enum Step {
    /// A new full tracked pass.
    Full,
    /// A next or delta link of the pass.
    Next(String),
    /// A delta link read for its deletions only (its `$select` lacks a field now
    /// wanted); a full pass follows.
    Drain(String),
}

impl Step {
    fn parse(page: &str) -> Result<Self, CrmError> {
        match page.split_once(':') {
            _ if page == "full" => Ok(Self::Full),
            Some(("next", link)) => Ok(Self::Next(link.to_owned())),
            Some(("drain", link)) => Ok(Self::Drain(link.to_owned())),
            _ => Err(CrmError::Internal("bad Dynamics paging locator".into())),
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Full => f.write_str("full"),
            Self::Next(link) => write!(f, "next:{link}"),
            Self::Drain(link) => write!(f, "drain:{link}"),
        }
    }
}

/// Whether a delta link's `$select` names every field wanted.
fn covers(link: &str, wanted: &[String]) -> bool {
    let Ok(url) = url::Url::parse(link) else {
        return false;
    };
    let Some(select) = url
        .query_pairs()
        .find(|(k, _)| k == "$select")
        .map(|(_, v)| v.into_owned())
    else {
        return false;
    };
    let have: Vec<&str> = select.split(',').map(str::trim).collect();
    wanted.iter().all(|w| have.contains(&w.as_str()))
}

/// An OData string literal (`'` doubled).
fn literal(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

/// The primary key a record created for app record `app_id` gets: the same for every
/// attempt, so a retried or twice-delivered create is refused (412 `0x80040237`)
/// instead of duplicated. Shaped as a version-4 GUID from a hash of the table and id.
fn derived_key(logical: &str, app_id: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(format!("conduit:{logical}:{app_id}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Whether `id` looks like a Dataverse key (a GUID), so it can go into a URL or filter.
fn is_guid(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The fields a query selects: `fields` with the system fields, those the table has
/// (Dataverse refuses a `$select` naming an unknown property; the marker may not exist
/// yet), without the key (always answered), sorted, no duplicates.
async fn selectable(
    c: &mut CrmClient<'_>,
    entity: Entity,
    fields: &[String],
) -> Result<Vec<String>, CrmError> {
    let known = c.describe(entity).await?;
    let (_, key) = table(c.kind().object(entity));
    let mut wanted = c.with_system_fields(entity, fields);
    wanted.retain(|f| *f != key && known.iter().any(|k| &k.name == f));
    wanted.sort();
    wanted.dedup();
    Ok(wanted)
}

/// One value as Dataverse types it (by the column's `AttributeType`).
fn value(describe: &[CrmField], field: &str, value: Option<&str>) -> Value {
    let Some(text) = value.filter(|v| !v.is_empty()) else {
        return Value::Null;
    };
    let kind = describe
        .iter()
        .find(|f| f.name == field)
        .map(|f| f.provider_type.as_str());
    match kind {
        Some("Integer" | "BigInt" | "Picklist" | "State" | "Status") => text
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(text.to_owned())),
        Some("Decimal" | "Double" | "Money") => text
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| text.parse::<f64>().map(Value::from))
            .unwrap_or_else(|_| Value::String(text.to_owned())),
        Some("Boolean") => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            other => Value::String(other.to_owned()),
        },
        _ => Value::String(text.to_owned()),
    }
}

/// The field type of a column.
fn field_type(attribute_type: &str, name: &str) -> FieldType {
    match attribute_type {
        "Uniqueidentifier" | "Lookup" | "Customer" | "Owner" => FieldType::Id,
        "Integer" | "BigInt" | "Decimal" | "Double" | "Money" => FieldType::Number,
        "Boolean" => FieldType::Boolean,
        "DateTime" => FieldType::DateTime,
        "Picklist" | "State" | "Status" | "MultiSelectPicklist" => FieldType::Enumeration,
        "String" if name.starts_with("emailaddress") => FieldType::Email,
        "String" if name.starts_with("telephone") || name == "mobilephone" || name == "fax" => {
            FieldType::Phone
        }
        "String" if name == "websiteurl" => FieldType::Url,
        _ => FieldType::String,
    }
}

/// Columns that are not properties a query can select.
const UNREADABLE: [&str; 5] = [
    "Virtual",
    "EntityName",
    "CalendarRules",
    "ManagedProperty",
    "PartyList",
];

fn fields(v: &Value) -> Result<Vec<CrmField>, CrmError> {
    let mut out = Vec::new();
    for a in rows(v)? {
        let Some(logical) = a.get("LogicalName").and_then(Value::as_str) else {
            continue;
        };
        let attribute_type = a
            .get("AttributeType")
            .and_then(Value::as_str)
            .unwrap_or("String");
        let flag = |k: &str| a.get(k).and_then(Value::as_bool).unwrap_or(false);
        let derived = a.get("AttributeOf").is_some_and(|v| !v.is_null());
        if UNREADABLE.contains(&attribute_type)
            || derived
            || a.get("IsValidForRead").and_then(Value::as_bool) == Some(false)
        {
            continue;
        }
        let lookup = matches!(attribute_type, "Lookup" | "Customer" | "Owner");
        let name = if lookup {
            format!("_{logical}_value")
        } else {
            logical.to_owned()
        };
        // A `Lookup` is writable once its one target is known (see `binds`); the
        // polymorphic `Customer` and `Owner` lookups are not written.
        let writable = !matches!(attribute_type, "Customer" | "Owner")
            && flag("IsValidForCreate")
            && flag("IsValidForUpdate");
        let required = writable
            && matches!(
                a.pointer("/RequiredLevel/Value").and_then(Value::as_str),
                Some("SystemRequired" | "ApplicationRequired")
            );
        let label = a
            .pointer("/DisplayName/UserLocalizedLabel/Label")
            .or_else(|| a.pointer("/DisplayName/LocalizedLabels/0/Label"))
            .and_then(Value::as_str)
            .filter(|l| !l.is_empty())
            .unwrap_or(logical);
        out.push(CrmField {
            kind: field_type(attribute_type, logical),
            name,
            label: label.to_owned(),
            provider_type: attribute_type.to_owned(),
            required,
            writable,
            options: Vec::new(),
        });
    }
    Ok(out)
}

// ------------------------------------------------------------------------ $batch

/// One request of a batch.
struct Part {
    method: &'static str,
    /// Under the API base: `/contacts(…)`.
    path: String,
    headers: Vec<(&'static str, &'static str)>,
    body: Option<Value>,
}

/// A batch body: one `application/http` part per request, no change sets.
fn batch_body(boundary: &str, parts: &[Part]) -> String {
    let mut out = String::new();
    for p in parts {
        out.push_str(&format!(
            "--{boundary}\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n{} {SERVICE_PATH}{} HTTP/1.1\r\n",
            p.method, p.path
        ));
        for (k, v) in &p.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        match &p.body {
            Some(body) => out.push_str(&format!(
                "Content-Type: application/json; type=entry\r\n\r\n{body}\r\n"
            )),
            None => out.push_str("\r\n"),
        }
    }
    out.push_str(&format!("--{boundary}--\r\n"));
    out
}

/// One response part of a batch answer.
#[derive(Debug, Clone, PartialEq)]
struct PartAnswer {
    status: u16,
    /// Header names lower-cased.
    headers: Vec<(String, String)>,
    body: String,
}

impl PartAnswer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The provider's message of a failed part.
    fn message(&self) -> String {
        match serde_json::from_str::<Value>(&self.body) {
            Ok(v) if v.get("error").is_some() => Dynamics.error_message(&v),
            _ => format!("{} without an error body", self.status),
        }
    }
}

/// The `boundary` of a `multipart/mixed` content type.
fn boundary_of(content_type: &str) -> Option<String> {
    let mut pieces = content_type.split(';');
    if !pieces
        .next()?
        .trim()
        .eq_ignore_ascii_case("multipart/mixed")
    {
        return None;
    }
    pieces.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_owned())
            .filter(|b| !b.is_empty())
    })
}

/// `(lower-cased headers, rest)` of a block of header lines and a blank line.
fn head(text: &str) -> (Vec<(String, String)>, &str) {
    let (head, rest) = text.split_once("\n\n").unwrap_or((text, ""));
    let headers = head
        .lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            Some((k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        })
        .collect();
    (headers, rest)
}

/// Every response part of a batch answer, change sets flattened, in order.
fn parse_batch(content_type: &str, text: &str) -> Result<Vec<PartAnswer>, CrmError> {
    let malformed = |why: &str| CrmError::Malformed(format!("batch answer: {why}"));
    let boundary = boundary_of(content_type).ok_or_else(|| malformed("not multipart"))?;
    let text = text.replace("\r\n", "\n");
    let delimiter = format!("--{boundary}");
    let mut chunks = text.split(delimiter.as_str());
    chunks.next(); // the preamble
    let mut out = Vec::new();
    let mut closed = false;
    for chunk in chunks {
        if chunk.starts_with("--") {
            closed = true;
            break;
        }
        let chunk = chunk.strip_prefix('\n').unwrap_or(chunk);
        let (mime, content) = head(chunk);
        let part_type = mime
            .iter()
            .find(|(k, _)| k == "content-type")
            .map(|(_, v)| v.as_str())
            .unwrap_or_default();
        if boundary_of(part_type).is_some() {
            out.extend(parse_batch(part_type, content)?);
            continue;
        }
        let content = content.trim_start_matches('\n');
        let (status_line, rest) = content.split_once('\n').unwrap_or((content, ""));
        let status = status_line
            .strip_prefix("HTTP/1.1 ")
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| malformed("a part without a status line"))?;
        let (headers, body) = head(rest);
        out.push(PartAnswer {
            status,
            headers,
            body: body.trim().to_owned(),
        });
    }
    if !closed {
        return Err(malformed("no closing delimiter"));
    }
    Ok(out)
}

/// Sends a batch of independent requests; one answer per request, in order.
async fn batch(c: &mut CrmClient<'_>, parts: &[Part]) -> Result<Vec<PartAnswer>, CrmError> {
    if parts.is_empty() {
        return Ok(Vec::new());
    }
    let boundary = format!("batch_{:032x}", rand::random::<u128>());
    let body = batch_body(&boundary, parts);
    let answer = c
        .call_raw(
            Method::POST,
            Target::Api("/$batch"),
            &format!("multipart/mixed; boundary={boundary}"),
            &body,
            &[("Prefer", "odata.continue-on-error".to_owned())],
        )
        .await?;
    let answers = parse_batch(&answer.content_type, &answer.text)?;
    if answers.len() != parts.len() {
        return Err(CrmError::Malformed(format!(
            "batch answer: {} parts for {} requests",
            answers.len(),
            parts.len()
        )));
    }
    Ok(answers)
}

/// The id a create's part answer names: `OData-EntityId: …/contacts({id})`, or the key
/// of the returned row.
fn created_id(part: &PartAnswer, key: &str) -> Option<String> {
    part.header("odata-entityid")
        .and_then(|v| v.rsplit_once('('))
        .map(|(_, id)| id.trim_end_matches(')').to_owned())
        .filter(|id| is_guid(id))
        .or_else(|| {
            serde_json::from_str::<Value>(&part.body)
                .ok()?
                .get(key)
                .and_then(scalar_text)
        })
}

/// The header carrying a webhook's secret on Dataverse's requests to Conduit.
pub const HOOK_HEADER: &str = "x-conduit-webhook-key";

/// `text` as an XML attribute value.
fn xml_attr(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A GUID member of a row.
fn guid_of(row: &Value, key: &str) -> Result<String, CrmError> {
    row.get(key)
        .and_then(Value::as_str)
        .filter(|g| !g.is_empty() && g.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
        .map(str::to_ascii_lowercase)
        .ok_or_else(|| CrmError::Malformed(format!("a row without its {key}")))
}

/// The GUID member of a collection's first row.
fn first_guid(v: &Value, key: &str) -> Result<String, CrmError> {
    let row = rows(v)?
        .first()
        .ok_or_else(|| CrmError::Malformed(format!("no {key} found")))?;
    guid_of(row, key)
}

#[async_trait]
impl Dialect for Dynamics {
    async fn describe(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
    ) -> Result<Vec<CrmField>, CrmError> {
        let logical = c.kind().object(entity);
        let select = "LogicalName,AttributeType,AttributeOf,DisplayName,IsValidForCreate,\
                      IsValidForUpdate,IsValidForRead,RequiredLevel";
        let path = format!("/EntityDefinitions(LogicalName='{logical}')/Attributes");
        let v = c
            .call(Method::GET, &path, &[("$select", select.to_owned())], None)
            .await?;
        let mut out = fields(&v)?;
        // Lookups: the one table each refers to, for their `@odata.bind`.
        let lookups: Vec<String> = out
            .iter()
            .filter(|f| f.provider_type == "Lookup" && f.writable)
            .map(|f| f.name.clone())
            .collect();
        let mut found = Vec::new();
        if !lookups.is_empty() {
            let v = c
                .call(
                    Method::GET,
                    &format!("{path}/Microsoft.Dynamics.CRM.LookupAttributeMetadata"),
                    &[(
                        "$select",
                        "LogicalName,SchemaName,IsCustomAttribute,Targets".to_owned(),
                    )],
                    None,
                )
                .await;
            // A refused cast leaves the lookups read-only rather than the table
            // unreadable.
            if let Some(v) = not_refused(v)? {
                found = binds(&v, &lookups)?;
            }
        }
        for f in out.iter_mut().filter(|f| f.kind == FieldType::Id) {
            f.writable = found.iter().any(|b| b.field == f.name);
            f.required &= f.writable;
        }
        // Picklists: their options, so a value map is checked against them.
        if out.iter().any(|f| f.provider_type == "Picklist") {
            let v = c
                .call(
                    Method::GET,
                    &format!("{path}/Microsoft.Dynamics.CRM.PicklistAttributeMetadata"),
                    &[
                        ("$select", "LogicalName".to_owned()),
                        ("$expand", "OptionSet($select=Options)".to_owned()),
                    ],
                    None,
                )
                .await;
            // Refused: the options stay unknown (value maps are not checked at save).
            let options = match not_refused(v)? {
                Some(v) => picklists(&v)?,
                None => BTreeMap::new(),
            };
            for f in out.iter_mut() {
                if let Some(o) = options.get(&f.name) {
                    f.options = o.clone();
                }
            }
        }
        let lines: Vec<String> = found.iter().map(Bind::line).collect();
        c.note(entity, BINDS, lines.join("\n"));
        Ok(out)
    }

    async fn ensure_marker(&self, c: &mut CrmClient<'_>, entity: Entity) -> Result<bool, CrmError> {
        if c.describes_marker(entity).await? {
            return Ok(true);
        }
        let logical = c.kind().object(entity);
        let body = json!({
            "@odata.type": "Microsoft.Dynamics.CRM.StringAttributeMetadata",
            "SchemaName": MARKER_SCHEMA,
            "AttributeType": "String",
            "AttributeTypeName": {"Value": "StringType"},
            "MaxLength": MARKER_LENGTH,
            "FormatName": {"Value": "Text"},
            "RequiredLevel": {
                "Value": "None",
                "CanBeChanged": true,
                "ManagedPropertyLogicalName": "canmodifyrequirementlevelsettings",
            },
            "DisplayName": {
                "@odata.type": "Microsoft.Dynamics.CRM.Label",
                "LocalizedLabels": [{
                    "@odata.type": "Microsoft.Dynamics.CRM.LocalizedLabel",
                    "Label": MARKER_LABEL,
                    "LanguageCode": 1033,
                }],
            },
            "Description": {
                "@odata.type": "Microsoft.Dynamics.CRM.Label",
                "LocalizedLabels": [{
                    "@odata.type": "Microsoft.Dynamics.CRM.LocalizedLabel",
                    "Label": "The Conduit record this row is synced with.",
                    "LanguageCode": 1033,
                }],
            },
        });
        let made = c
            .call(
                Method::POST,
                &format!("/EntityDefinitions(LogicalName='{logical}')/Attributes"),
                &[],
                Some(&body),
            )
            .await;
        match made {
            Ok(_) | Err(CrmError::Rejected { status: 400, .. }) => {
                // Made, or there already (a name taken): ask again.
                c.forget_description(entity);
                c.describes_marker(entity).await
            }
            Err(CrmError::ScopesMissing(_) | CrmError::Rejected { status: 403, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn pull(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
        cursor: &Cursor,
        fields: &[String],
        filters: &[&Filter],
    ) -> Result<PullPage, CrmError> {
        let logical = c.kind().object(entity);
        let (set, key) = table(logical);
        let modified = c.kind().modified_field(entity);
        let mut asked = fields.to_vec();
        asked.extend(filters.iter().map(|f| f.field.clone()));
        let wanted = selectable(c, entity, &asked).await?;
        let tracked = [(
            "Prefer",
            format!("odata.track-changes,odata.maxpagesize={PAGE}"),
        )];
        let step = match (cursor.page.as_deref(), cursor.delta.as_deref()) {
            (Some(page), _) => Step::parse(page)?,
            (None, Some(delta)) if covers(delta, &wanted) => Step::Next(delta.to_owned()),
            // The delta link lacks a field now wanted: its deletions first, then a new
            // full pass with every field.
            (None, Some(delta)) => Step::Drain(delta.to_owned()),
            (None, None) => Step::Full,
        };
        let path = format!("/{set}");
        let select = [("$select", wanted.join(","))];
        let full = Target::Api(&path);
        let answer = match &step {
            Step::Next(l) | Step::Drain(l) => {
                c.call_to(Method::GET, Target::Link(l), &[], None, &tracked)
                    .await
            }
            Step::Full => c.call_to(Method::GET, full, &select, None, &tracked).await,
        };
        let mut restarted = false;
        let (v, step) = match answer {
            // The delta token expired: a new full pass, swept at its end for the
            // deletions made in the gap.
            Err(e) if step != Step::Full && expired_token(&e) => {
                restarted = true;
                (
                    c.call_to(Method::GET, full, &select, None, &tracked)
                        .await?,
                    Step::Full,
                )
            }
            other => (other?, step),
        };
        let mut page = changes(&v, &key, modified)?;
        let draining = matches!(step, Step::Drain(_));
        if draining {
            // The full pass that follows reads every current row again.
            page.records.clear();
        }
        let next_step = match (page.next.take(), draining) {
            (Some(next), true) => Some(Step::Drain(next)),
            (Some(next), false) => Some(Step::Next(next)),
            (None, true) => Some(Step::Full),
            (None, false) => None,
        };
        let next = cursor.after(&page.records, next_step.map(|s| s.to_string()));
        let at = now_ms();
        let kept = passing(page.records, filters);
        let mut out = PullPage::new(kept, next, None);
        out.restarted = restarted;
        out.deleted = page.deleted.into_iter().map(|id| (id, at)).collect();
        if out.next.is_none() {
            out.resume = page.delta;
        }
        Ok(out)
    }

    async fn read(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
        ids: &[String],
        fields: &[String],
    ) -> Result<Vec<CrmRecord>, CrmError> {
        let (set, key) = table(c.kind().object(entity));
        let ids: Vec<&String> = ids.iter().filter(|id| is_guid(id)).collect();
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let wanted = selectable(c, entity, fields).await?;
        let filter = ids
            .iter()
            .map(|id| format!("{key} eq {id}"))
            .collect::<Vec<_>>()
            .join(" or ");
        let query = [("$select", wanted.join(",")), ("$filter", filter)];
        let v = c
            .call(Method::GET, &format!("/{set}"), &query, None)
            .await?;
        let modified = c.kind().modified_field(entity);
        rows(&v)?
            .iter()
            .map(|row| record(row, &key, modified))
            .collect()
    }

    fn find_chunk(&self) -> usize {
        FIND_CHUNK
    }

    async fn find_by(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
        field: &str,
        values: &[String],
    ) -> Result<Vec<CrmRecord>, CrmError> {
        // A column the table does not have (the marker not made yet) holds nothing.
        if !c.describe(entity).await?.iter().any(|f| f.name == field) || values.is_empty() {
            return Ok(Vec::new());
        }
        let (set, key) = table(c.kind().object(entity));
        let modified = c.kind().modified_field(entity);
        let filter = values
            .iter()
            .map(|v| format!("{field} eq {}", literal(v)))
            .collect::<Vec<_>>()
            .join(" or ");
        let mut select = vec![field.to_owned()];
        if modified != field {
            select.push(modified.to_owned());
        }
        let query = [("$select", select.join(",")), ("$filter", filter)];
        let v = c
            .call(Method::GET, &format!("/{set}"), &query, None)
            .await?;
        let found: Vec<CrmRecord> = rows(&v)?
            .iter()
            .map(|row| record(row, &key, modified))
            .collect::<Result<_, _>>()?;
        // Dataverse compares text without case: keep the rows holding a value asked for.
        Ok(holding(found, field, values))
    }

    async fn write(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
        inputs: &[WriteValues],
        ids: Option<&[String]>,
    ) -> Result<Vec<WriteOutcome>, CrmError> {
        let describe = c.describe(entity).await?;
        let logical = c.kind().object(entity);
        let marker = c.kind().marker();
        let (set, key) = table(logical);
        let binds = Bind::parse(c.noted(entity, BINDS).unwrap_or_default());
        let mut keys: Vec<Option<String>> = vec![None; inputs.len()];
        let mut outcomes: Vec<Option<WriteOutcome>> = vec![None; inputs.len()];
        let mut parts = Vec::with_capacity(inputs.len());
        let mut sent = Vec::with_capacity(inputs.len());
        for (i, values) in inputs.iter().enumerate() {
            let mut body = Map::new();
            let mut refused = None;
            for (k, v) in values {
                // A lookup is written through its navigation property (one with no
                // single target is read-only); the key is never written.
                if let Some(bind) = binds.iter().find(|b| b.field == *k) {
                    let id = v.as_deref().filter(|v| !v.is_empty());
                    if let Some(id) = id.filter(|id| !is_guid(id)) {
                        refused = Some(format!("{k}: {id:?} is not a Dataverse id"));
                    }
                    let (member, value) = bind.member(id);
                    body.insert(member, value);
                    continue;
                }
                if *k == key || (k.starts_with('_') && k.ends_with("_value")) {
                    continue;
                }
                // A Picklist takes only its option values (numbers): a label or another
                // number would be Dataverse's refusal, which names neither.
                if let (Some(f), Some(text)) = (
                    describe
                        .iter()
                        .find(|f| f.name == *k && !f.options.is_empty()),
                    v.as_deref().filter(|v| !v.is_empty()),
                ) && !f.options.iter().any(|o| o == text)
                {
                    refused = Some(format!(
                        "{k}: {text:?} is not one of its options ({})",
                        f.options.join(", ")
                    ));
                }
                body.insert(k.clone(), value(&describe, k, v.as_deref()));
            }
            if let Some(why) = refused {
                outcomes[i] = Some(WriteOutcome::Failed(why));
                continue;
            }
            let part = match ids {
                Some(ids) => {
                    let Some(id) = ids.get(i).filter(|id| is_guid(id)) else {
                        outcomes[i] = Some(WriteOutcome::Failed("not a Dataverse id".into()));
                        continue;
                    };
                    Part {
                        method: "PATCH",
                        path: format!("/{set}({id})"),
                        headers: vec![("If-Match", "*")],
                        body: Some(Value::Object(body)),
                    }
                }
                None => {
                    // A marked create gets a key of its own making (see `derived_key`).
                    if let Some(Some(app_id)) = values.get(marker) {
                        let id = derived_key(logical, app_id);
                        body.insert(key.clone(), json!(id));
                        keys[i] = Some(id);
                    }
                    Part {
                        method: "POST",
                        path: format!("/{set}"),
                        headers: Vec::new(),
                        body: Some(Value::Object(body)),
                    }
                }
            };
            parts.push(part);
            sent.push(i);
        }
        let answers = batch(c, &parts).await?;
        for (i, part) in sent.into_iter().zip(answers) {
            let exists = part.status == 412 && part.message().starts_with(KEY_EXISTS);
            outcomes[i] = Some(if exists && ids.is_none() {
                WriteOutcome::Exists(keys[i].clone())
            } else if !part.ok() {
                WriteOutcome::Failed(part.message())
            } else {
                match ids {
                    Some(ids) => WriteOutcome::Done(ids[i].clone()),
                    None => created_id(&part, &key).map_or_else(
                        || WriteOutcome::Failed("the answer names no id".into()),
                        WriteOutcome::Done,
                    ),
                }
            });
        }
        Ok(outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| WriteOutcome::Failed("not sent".into())))
            .collect())
    }

    async fn delete(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
        ids: &[String],
    ) -> Result<(), CrmError> {
        let (set, _) = table(c.kind().object(entity));
        let parts: Vec<Part> = ids
            .iter()
            .filter(|id| is_guid(id))
            .map(|id| Part {
                method: "DELETE",
                path: format!("/{set}({id})"),
                headers: Vec::new(),
                body: None,
            })
            .collect();
        for part in batch(c, &parts).await? {
            // 404: already gone.
            if !part.ok() && part.status != 404 {
                return Err(CrmError::Rejected {
                    status: part.status,
                    message: part.message(),
                });
            }
        }
        Ok(())
    }

    async fn deleted_since(
        &self,
        _c: &mut CrmClient<'_>,
        _entity: Entity,
        _since_ms: i64,
    ) -> Result<Vec<(String, i64)>, CrmError> {
        // Deletions come through the delta link (`PullPage::deleted`).
        Ok(Vec::new())
    }

    fn subscribes(&self) -> bool {
        true
    }

    /// A user without System Customizer may not register steps; the tenant's admin
    /// then registers the endpoint with the Plug-in Registration tool.
    fn by_hand(&self) -> super::ByHand {
        super::ByHand::WhenRefused {
            header: HOOK_HEADER,
        }
    }

    /// A webhook service endpoint (`contract` 8, `authtype` 5 HttpHeader: the
    /// password as [`HOOK_HEADER`]) and an asynchronous post-operation step for each
    /// of Create, Update and Delete of the entity's table; answers the endpoint's id.
    /// Needs the System Administrator or System Customizer role (403 `0x80040220`
    /// otherwise: the connection lacks what it takes, see `refusal`).
    async fn subscribe(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
        url: &str,
        auth: (&str, &str),
    ) -> Result<String, CrmError> {
        let logical = c.kind().object(entity);
        let representation = [("Prefer", "return=representation".to_owned())];
        let body = json!({
            "name": format!("Conduit {logical} {}", &auth.1[..8.min(auth.1.len())]),
            "url": url,
            "contract": 8,
            "authtype": 5,
            "authvalue": format!(
                "<settings><setting name=\"{HOOK_HEADER}\" value=\"{}\" /></settings>",
                xml_attr(auth.1)
            ),
        });
        let endpoint = c
            .call_to(
                Method::POST,
                Target::Api("/serviceendpoints"),
                &[],
                Some(&body),
                &representation,
            )
            .await?;
        let endpoint = guid_of(&endpoint, "serviceendpointid")?;
        for message in ["Create", "Update", "Delete"] {
            let made = async {
                let m = c
                    .call(
                        Method::GET,
                        "/sdkmessages",
                        &[
                            ("$select", "sdkmessageid".to_owned()),
                            ("$filter", format!("name eq '{message}'")),
                        ],
                        None,
                    )
                    .await?;
                let message_id = first_guid(&m, "sdkmessageid")?;
                let f = c
                    .call(
                        Method::GET,
                        "/sdkmessagefilters",
                        &[
                            ("$select", "sdkmessagefilterid".to_owned()),
                            (
                                "$filter",
                                format!(
                                    "primaryobjecttypecode eq '{logical}' and _sdkmessageid_value eq {message_id}"
                                ),
                            ),
                        ],
                        None,
                    )
                    .await?;
                let filter_id = first_guid(&f, "sdkmessagefilterid")?;
                let step = json!({
                    "name": format!("Conduit: {message} of {logical}"),
                    "mode": 1,
                    "stage": 40,
                    "rank": 1,
                    "supporteddeployment": 0,
                    "asyncautodelete": true,
                    "sdkmessageid@odata.bind": format!("/sdkmessages({message_id})"),
                    "sdkmessagefilterid@odata.bind": format!("/sdkmessagefilters({filter_id})"),
                    "eventhandler_serviceendpoint@odata.bind": format!("/serviceendpoints({endpoint})"),
                });
                c.call_to(
                    Method::POST,
                    Target::Api("/sdkmessageprocessingsteps"),
                    &[],
                    Some(&step),
                    &representation,
                )
                .await
                .map(|_| ())
            }
            .await;
            if let Err(e) = made {
                // Nothing half-made is left behind: the endpoint and its steps go.
                let _ = self.unsubscribe(c, &endpoint).await;
                return Err(e);
            }
        }
        Ok(endpoint)
    }

    /// Removes the endpoint's steps, then the endpoint (gone already: removed).
    async fn unsubscribe(&self, c: &mut CrmClient<'_>, id: &str) -> Result<(), CrmError> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            return Err(CrmError::Internal(format!(
                "endpoint id {id:?} is not a GUID"
            )));
        }
        let steps = c
            .call(
                Method::GET,
                "/sdkmessageprocessingsteps",
                &[
                    ("$select", "sdkmessageprocessingstepid".to_owned()),
                    ("$filter", format!("_eventhandler_value eq {id}")),
                ],
                None,
            )
            .await?;
        for row in rows(&steps)? {
            let step = guid_of(row, "sdkmessageprocessingstepid")?;
            let path = format!("/sdkmessageprocessingsteps({step})");
            super::removed(c.call(Method::DELETE, &path, &[], None).await)?;
        }
        let path = format!("/serviceendpoints({id})");
        super::removed(c.call(Method::DELETE, &path, &[], None).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "60c4e274-0d87-e711-80e5-00155db19e6d";

    #[test]
    fn tracked_pages_become_records_deletions_and_links() {
        let v = json!({
            "@odata.context": "https://acme.crm.dynamics.com/api/data/v9.2/$metadata#contacts(emailaddress1,modifiedon)/$delta",
            "value": [
                {"@odata.etag": "W/\"915244\"", "emailaddress1": "a@x.io", "_ownerid_value": ID,
                 "numberofemployees": 120, "telephone1": null,
                 "modifiedon": "2024-01-15T09:00:00Z", "contactid": ID},
                {"@odata.context": "https://acme.crm.dynamics.com/api/data/v9.2/$metadata#contacts/$deletedEntity",
                 "id": "11111111-2222-3333-4444-555555555555", "reason": "deleted"}
            ],
            "@odata.deltaLink": "https://acme.crm.dynamics.com/api/data/v9.2/contacts?$select=emailaddress1,modifiedon&$deltatoken=919042%2108%2f22%2f2017%2008%3a10%3a44"
        });
        let page = changes(&v, "contactid", "modifiedon").unwrap();
        assert_eq!(page.records.len(), 1);
        let r = &page.records[0];
        assert_eq!(r.id, ID);
        assert_eq!(r.values["emailaddress1"], "a@x.io");
        assert_eq!(r.values["numberofemployees"], "120");
        assert!(!r.values.contains_key("@odata.etag"));
        assert!(!r.values.contains_key("telephone1"));
        assert!(r.modified_ms > 0);
        assert_eq!(page.deleted, vec!["11111111-2222-3333-4444-555555555555"]);
        assert!(page.next.is_none());
        let delta = page.delta.unwrap();
        assert!(covers(
            &delta,
            &["emailaddress1".into(), "modifiedon".into()]
        ));
        assert!(!covers(&delta, &["new_conduitid".into()]));
        assert!(changes(&json!({"value": []}), "contactid", "modifiedon").is_err());
        assert!(changes(&json!({"rows": []}), "contactid", "modifiedon").is_err());
    }

    #[test]
    fn created_keys_are_derived_from_the_app_id_and_steps_round_trip() {
        let a = derived_key("contact", "rec_1");
        assert!(is_guid(&a), "{a}");
        assert_eq!(a, derived_key("contact", "rec_1"));
        assert_ne!(a, derived_key("contact", "rec_2"));
        assert_ne!(a, derived_key("account", "rec_1"));
        assert_eq!(&a[14..15], "4");
        for step in [
            Step::Full,
            Step::Next("https://a.crm.dynamics.com/api/data/v9.2/contacts?$skiptoken=x:y".into()),
            Step::Drain("https://a.crm.dynamics.com/api/data/v9.2/contacts?$deltatoken=1".into()),
        ] {
            assert_eq!(Step::parse(&step.to_string()).unwrap(), step);
        }
        assert!(Step::parse("zz").is_err());
    }

    #[test]
    fn filters_and_ids_are_written_as_odata_reads_them() {
        assert_eq!(literal("o'brien@x.io"), "'o''brien@x.io'");
        assert!(is_guid(ID));
        assert!(!is_guid("60c4e274-0d87-e711-80e5-00155db19e6d) or true"));
        assert!(!is_guid("42"));
        assert_eq!(
            table("contact"),
            ("contacts".to_owned(), "contactid".to_owned())
        );
    }

    #[test]
    fn batch_answers_are_read_part_by_part() {
        let parts = [
            Part {
                method: "POST",
                path: "/contacts".into(),
                headers: Vec::new(),
                body: Some(json!({"lastname": "Lovelace"})),
            },
            Part {
                method: "PATCH",
                path: format!("/contacts({ID})"),
                headers: vec![("If-Match", "*")],
                body: Some(json!({"firstname": "Ada"})),
            },
        ];
        let body = batch_body("batch_x", &parts);
        assert!(body.contains("POST /api/data/v9.2/contacts HTTP/1.1\r\n"));
        assert!(body.contains("If-Match: *\r\n"));
        assert!(body.ends_with("--batch_x--\r\n"));

        let answer = format!(
            "--batchresponse_1\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n\
             HTTP/1.1 204 No Content\r\nOData-Version: 4.0\r\nLocation: https://a.crm.dynamics.com/api/data/v9.2/contacts({ID})\r\n\
             OData-EntityId: https://a.crm.dynamics.com/api/data/v9.2/contacts({ID})\r\n\r\n\r\n\
             --batchresponse_1\r\nContent-Type: application/http\r\nContent-Transfer-Encoding: binary\r\n\r\n\
             HTTP/1.1 404 Not Found\r\nContent-Type: application/json; odata.metadata=minimal\r\n\r\n\
             {{\"error\":{{\"code\":\"0x80040217\",\"message\":\"contact With Id = {ID} Does Not Exist\"}}}}\r\n\
             --batchresponse_1--\r\n"
        );
        let got = parse_batch("multipart/mixed; boundary=batchresponse_1", &answer).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].status, 204);
        assert_eq!(created_id(&got[0], "contactid").as_deref(), Some(ID));
        assert_eq!(got[1].status, 404);
        assert!(got[1].message().starts_with("0x80040217: contact With Id"));

        // Cut short (no closing delimiter), not multipart, or a part without a status.
        let cut = &answer[..answer.len() / 2];
        assert!(matches!(
            parse_batch("multipart/mixed; boundary=batchresponse_1", cut),
            Err(CrmError::Malformed(_))
        ));
        assert!(parse_batch("application/json", &answer).is_err());
        assert!(
            parse_batch(
                "multipart/mixed; boundary=b",
                "--b\r\nContent-Type: application/http\r\n\r\nnonsense\r\n--b--\r\n"
            )
            .is_err()
        );

        // A change set's answer is flattened.
        let nested = "--b\r\nContent-Type: multipart/mixed; boundary=cs\r\n\r\n--cs\r\n\
                      Content-Type: application/http\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n\r\n--cs--\r\n--b--\r\n";
        let got = parse_batch("multipart/mixed; boundary=\"b\"", nested).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].status, 204);
    }

    #[test]
    fn attributes_become_fields() {
        let v = json!({"value": [
            {"LogicalName": "emailaddress1", "AttributeType": "String", "AttributeOf": null,
             "DisplayName": {"UserLocalizedLabel": {"Label": "Email"}},
             "IsValidForCreate": true, "IsValidForUpdate": true, "IsValidForRead": true,
             "RequiredLevel": {"Value": "None"}},
            {"LogicalName": "lastname", "AttributeType": "String",
             "IsValidForCreate": true, "IsValidForUpdate": true,
             "RequiredLevel": {"Value": "ApplicationRequired"}},
            {"LogicalName": "parentcustomerid", "AttributeType": "Customer",
             "IsValidForCreate": true, "IsValidForUpdate": true},
            {"LogicalName": "parentcustomeridname", "AttributeType": "String",
             "AttributeOf": "parentcustomerid"},
            {"LogicalName": "modifiedon", "AttributeType": "DateTime",
             "IsValidForCreate": false, "IsValidForUpdate": false},
            {"LogicalName": "numberofemployees", "AttributeType": "Integer",
             "IsValidForCreate": true, "IsValidForUpdate": true},
            {"LogicalName": "entityimage", "AttributeType": "Virtual"}
        ]});
        let f = fields(&v).unwrap();
        let names: Vec<&str> = f.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "emailaddress1",
                "lastname",
                "_parentcustomerid_value",
                "modifiedon",
                "numberofemployees"
            ]
        );
        assert_eq!(f[0].kind, FieldType::Email);
        assert_eq!(f[0].label, "Email");
        assert!(f[1].required && f[1].writable);
        assert!(!f[2].writable);
        assert_eq!(f[2].kind, FieldType::Id);
        assert!(!f[3].writable);
        assert_eq!(value(&f, "numberofemployees", Some("42")), json!(42));
        assert_eq!(value(&f, "emailaddress1", Some("a@x.io")), json!("a@x.io"));
        assert_eq!(value(&f, "emailaddress1", None), Value::Null);
    }

    #[test]
    fn lookups_are_bound_to_their_one_target_and_picklists_list_their_options() {
        assert_eq!(entity_set("opportunity"), "opportunities");
        assert_eq!(entity_set("transactioncurrency"), "transactioncurrencies");
        assert_eq!(entity_set("account"), "accounts");
        assert_eq!(entity_set("survey"), "surveys");
        let v = json!({"value": [
            {"LogicalName": "parentaccountid", "SchemaName": "ParentAccountId",
             "IsCustomAttribute": false, "Targets": ["account"]},
            {"LogicalName": "new_partnerid", "SchemaName": "new_PartnerId",
             "IsCustomAttribute": true, "Targets": ["account"]},
            {"LogicalName": "customerid", "SchemaName": "CustomerId",
             "IsCustomAttribute": false, "Targets": ["account", "contact"]},
            {"LogicalName": "transactioncurrencyid", "Targets": ["transactioncurrency"]},
            {"Targets": ["account"]}
        ]});
        let writable = [
            "_parentaccountid_value".to_owned(),
            "_new_partnerid_value".to_owned(),
            "_customerid_value".to_owned(),
        ];
        let found = binds(&v, &writable).unwrap();
        assert_eq!(
            found,
            [
                Bind {
                    field: "_parentaccountid_value".into(),
                    nav: "parentaccountid".into(),
                    set: "accounts".into(),
                },
                Bind {
                    field: "_new_partnerid_value".into(),
                    nav: "new_PartnerId".into(),
                    set: "accounts".into(),
                },
            ]
        );
        let note: Vec<String> = found.iter().map(Bind::line).collect();
        assert_eq!(Bind::parse(&note.join("\n")), found);
        assert_eq!(
            found[0].member(Some(ID)),
            (
                "parentaccountid@odata.bind".to_owned(),
                json!(format!("/accounts({ID})"))
            )
        );
        assert_eq!(
            found[0].member(None),
            ("parentaccountid@odata.bind".to_owned(), Value::Null)
        );
        assert!(binds(&json!({}), &writable).is_err());
        // A refused metadata query leaves lookups read-only; other failures stay.
        let refused = CrmError::Rejected {
            status: 400,
            message: "0x0: Could not find a property named 'Targets'".into(),
        };
        assert!(not_refused(Err(refused)).unwrap().is_none());
        assert!(not_refused(Err(CrmError::Malformed("x".into()))).is_err());
        assert!(not_refused(Ok(json!({}))).unwrap().is_some());

        let v = json!({"value": [
            {"LogicalName": "salesstage", "OptionSet": {"Options": [
                {"Value": 0, "Label": {"UserLocalizedLabel": {"Label": "Qualify"}}},
                {"Value": 1, "Label": {"UserLocalizedLabel": {"Label": "Develop"}}}
            ]}, "GlobalOptionSet": null},
            {"LogicalName": "new_tier", "OptionSet": null,
             "GlobalOptionSet": {"Options": [{"Value": 100000000}]}}
        ]});
        let p = picklists(&v).unwrap();
        assert_eq!(p["salesstage"], ["0", "1"]);
        assert_eq!(p["new_tier"], ["100000000"]);
        // A lookup is read as the GUID it holds; Money and Picklist values as numbers.
        let row = json!({"opportunityid": ID, "_parentaccountid_value": ID,
            "_parentaccountid_value@OData.Community.Display.V1.FormattedValue": "Acme",
            "estimatedvalue": 1250.5, "salesstage": 1});
        let r = record(&row, "opportunityid", "modifiedon").unwrap();
        assert_eq!(r.values["_parentaccountid_value"], ID);
        assert_eq!(r.values["estimatedvalue"], "1250.5");
        assert_eq!(r.values["salesstage"], "1");
        assert_eq!(r.values.len(), 4);
    }

    #[test]
    fn refusals_are_classified() {
        let denied = json!({"error": {"code": "0x80040220",
            "message": "Principal user (Id=…) is missing prvCreateAttribute privilege"}});
        assert!(matches!(
            Dynamics.refusal(StatusCode::FORBIDDEN, Some(&denied), ""),
            Some(CrmError::ScopesMissing(_))
        ));
        let other = json!({"error": {"code": "0x80040217", "message": "Does Not Exist"}});
        assert!(
            Dynamics
                .refusal(StatusCode::NOT_FOUND, Some(&other), "")
                .is_none()
        );
        let expired = json!({"error": {"code": EXPIRED_TOKEN,
            "message": "Version stamp associated with the client has expired. Please perform a full sync."}});
        let e = CrmError::Rejected {
            status: 400,
            message: Dynamics.error_message(&expired),
        };
        assert!(expired_token(&e));
    }
}

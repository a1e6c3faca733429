//! Salesforce REST data stand-in: `Contact`, `Account` and `Opportunity` records per org, served at the
//! instance host under `/services/data/vNN.N/…` (any version) to the Bearer session of a
//! Salesforce OAuth grant. The org is the grant user's (`00DDn00000AcmeOEAA`,
//! [`DEFAULT_SALESFORCE_ORG`], for the default user `admin@acme.test`).
//!
//! Every call counts against the org's daily API allowance ([`DEFAULT_API_LIMIT`] per
//! 24 h) and its answer carries `Sforce-Limit-Info: api-usage=N/MAX`; past the allowance
//! the answer is 403 `REQUEST_LIMIT_EXCEEDED`. Errors are Salesforce's JSON arrays
//! `[{"message","errorCode"[,"fields"]}]`.
//!
//! Writes stamp `LastModifiedDate` and `SystemModstamp` with a time strictly later than
//! every earlier stamp of the org (records written by one request share it), so an
//! incremental `WHERE SystemModstamp > :last ORDER BY SystemModstamp, Id` never misses
//! or double-counts a change. Query cursors are snapshots: later pages show records as
//! they were when the query ran.
//!
//! `Opportunity`: `Name`, `StageName` and `CloseDate` required on create; `StageName`
//! is a restricted picklist of the standard sales process's ten stages
//! (`INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST`); `AccountId` and `ContactId` must name
//! live records (`INVALID_CROSS_REFERENCE_KEY`); `ContactId` is createable, not
//! updateable (Salesforce derives it from the primary `OpportunityContactRole`). Not
//! reproduced: `OpportunityContactRole` itself, sales processes and record types (one
//! stage list for every opportunity), `Probability` / `ForecastCategory` /
//! `IsClosed` / `IsWon` derived from the stage, currencies (`Amount` is a plain
//! number), and the cascade delete of an account's opportunities.

// Handlers return the finished error response as their `Err`, as the HubSpot ones do.
#![allow(clippy::result_large_err)]

mod bulk;
mod collections;
mod knowledge;
pub(crate) mod outbound;
mod schema;
mod soql;
mod store;

use std::time::{Duration, Instant};

use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

pub use bulk::{
    BULK_BATCH_RECORDS, BULK_BATCHES_PER_DAY, BULK_INGEST_RECORDS_PER_DAY, BULK_QUERY_JOBS_PER_DAY,
    BULK_UPLOAD_BASE64_MAX, DEFAULT_BULK_DELAY, SfBulkUsage,
};
pub use knowledge::{
    BODY_FIELD, DEFAULT_KNOWLEDGE_LANGUAGE, DYNAMODB_ITEM_LIMIT, KbArticle, KbChange, KbNewArticle,
    KbVersion, KnowledgeSeed, KnowledgeSummary, LANGUAGE_RESTRICTION, LONG_TEXT_BATCH,
    LONG_TEXT_PAGE_BYTES, PUBLISH_STATUS_RESTRICTION, RICH_TEXT_MAX,
};
pub use schema::SfObject;
pub use store::{DEFAULT_API_LIMIT, SfApiUsage, SfRecord};

use super::ProviderRequest;
use crate::clock::{self, now_ms};
use crate::ratelimit::{Policy, Verdict};
use crate::state::SandboxState;
use crate::wire;
use schema::{RecordError, parse_datetime};
use store::{Cursor, TOMBSTONE_DAYS, WriteError};

pub(crate) use schema::{make_id, normalize_id, sf_datetime};
pub(crate) use store::SfStore;

/// The org id of the default Salesforce OAuth user (`admin@acme.test`); a grant's org is
/// also in its token response's `id` URL (`…/id/{org}/{user}`) and
/// [`SandboxState::salesforce_org_of_token`].
pub const DEFAULT_SALESFORCE_ORG: &str = "00DDn00000AcmeOEAA";

/// Route name of `GET /query?q=`.
pub const QUERY: &str = "salesforce.query";
/// Route name of `GET /queryAll?q=` (deleted records included).
pub const QUERY_ALL: &str = "salesforce.query_all";
/// Route name of `GET /query/{locator}` (and `/queryAll/{locator}`).
pub const QUERY_MORE: &str = "salesforce.query_more";
/// Route name of `GET /sobjects/{S}/describe`.
pub const DESCRIBE: &str = "salesforce.describe";
/// Route name of `GET /sobjects/{S}/{id}` and `GET /sobjects/{S}/{externalIdField}/{value}`.
pub const SOBJECT_GET: &str = "salesforce.sobject_get";
/// Route name of `POST /sobjects/{S}`.
pub const SOBJECT_CREATE: &str = "salesforce.sobject_create";
/// Route name of `PATCH /sobjects/{S}/{id}`.
pub const SOBJECT_UPDATE: &str = "salesforce.sobject_update";
/// Route name of `PATCH /sobjects/{S}/{externalIdField}/{value}`.
pub const SOBJECT_UPSERT: &str = "salesforce.sobject_upsert";
/// Route name of `DELETE /sobjects/{S}/{id}`.
pub const SOBJECT_DELETE: &str = "salesforce.sobject_delete";
/// Route name of `GET /sobjects/{S}/deleted/?start=&end=`.
pub const DELETED: &str = "salesforce.deleted";
/// Route name of `GET /sobjects/{S}/updated/?start=&end=`.
pub const UPDATED: &str = "salesforce.updated";
/// Route name of `POST /composite/sobjects`.
pub const COMPOSITE_CREATE: &str = "salesforce.composite_create";
/// Route name of `PATCH /composite/sobjects`.
pub const COMPOSITE_UPDATE: &str = "salesforce.composite_update";
/// Route name of `PATCH /composite/sobjects/{S}/{externalIdField}`.
pub const COMPOSITE_UPSERT: &str = "salesforce.composite_upsert";
/// Route name of `DELETE /composite/sobjects?ids=`.
pub const COMPOSITE_DELETE: &str = "salesforce.composite_delete";
/// Route name of `GET /composite/sobjects/{S}?ids=&fields=` (or `POST` with a body).
pub const COMPOSITE_RETRIEVE: &str = "salesforce.composite_retrieve";
/// Route name of `GET /limits`.
pub const LIMITS: &str = "salesforce.limits";
/// Route name of `GET /knowledgeManagement/settings`.
pub const KNOWLEDGE_SETTINGS: &str = "salesforce.knowledge_settings";
/// Route name of `POST /jobs/query` (Bulk API 2.0, `bulk.rs`).
pub const BULK_QUERY_CREATE: &str = "salesforce.bulk_query_create";
/// Route name of `GET /jobs/query`.
pub const BULK_QUERY_LIST: &str = "salesforce.bulk_query_list";
/// Route name of `GET /jobs/query/{id}`.
pub const BULK_QUERY_INFO: &str = "salesforce.bulk_query_info";
/// Route name of `PATCH /jobs/query/{id}` (abort).
pub const BULK_QUERY_ABORT: &str = "salesforce.bulk_query_abort";
/// Route name of `DELETE /jobs/query/{id}`.
pub const BULK_QUERY_DELETE: &str = "salesforce.bulk_query_delete";
/// Route name of `GET /jobs/query/{id}/results`.
pub const BULK_QUERY_RESULTS: &str = "salesforce.bulk_query_results";
/// Route name of `POST /jobs/ingest`.
pub const BULK_INGEST_CREATE: &str = "salesforce.bulk_ingest_create";
/// Route name of `GET /jobs/ingest`.
pub const BULK_INGEST_LIST: &str = "salesforce.bulk_ingest_list";
/// Route name of `GET /jobs/ingest/{id}`.
pub const BULK_INGEST_INFO: &str = "salesforce.bulk_ingest_info";
/// Route name of `PATCH /jobs/ingest/{id}` (close or abort).
pub const BULK_INGEST_STATE: &str = "salesforce.bulk_ingest_state";
/// Route name of `DELETE /jobs/ingest/{id}`.
pub const BULK_INGEST_DELETE: &str = "salesforce.bulk_ingest_delete";
/// Route name of `PUT /jobs/ingest/{id}/batches`.
pub const BULK_INGEST_UPLOAD: &str = "salesforce.bulk_ingest_upload";
/// Route name of `GET /jobs/ingest/{id}/successfulResults`.
pub const BULK_INGEST_SUCCESSFUL: &str = "salesforce.bulk_ingest_successful";
/// Route name of `GET /jobs/ingest/{id}/failedResults`.
pub const BULK_INGEST_FAILED: &str = "salesforce.bulk_ingest_failed";
/// Route name of `GET /jobs/ingest/{id}/unprocessedrecords`.
pub const BULK_INGEST_UNPROCESSED: &str = "salesforce.bulk_ingest_unprocessed";

/// Every data route name.
pub const ROUTES: [&str; 33] = [
    QUERY,
    QUERY_ALL,
    QUERY_MORE,
    DESCRIBE,
    SOBJECT_GET,
    SOBJECT_CREATE,
    SOBJECT_UPDATE,
    SOBJECT_UPSERT,
    SOBJECT_DELETE,
    DELETED,
    UPDATED,
    COMPOSITE_CREATE,
    COMPOSITE_UPDATE,
    COMPOSITE_UPSERT,
    COMPOSITE_DELETE,
    COMPOSITE_RETRIEVE,
    LIMITS,
    KNOWLEDGE_SETTINGS,
    BULK_QUERY_CREATE,
    BULK_QUERY_LIST,
    BULK_QUERY_INFO,
    BULK_QUERY_ABORT,
    BULK_QUERY_DELETE,
    BULK_QUERY_RESULTS,
    BULK_INGEST_CREATE,
    BULK_INGEST_LIST,
    BULK_INGEST_INFO,
    BULK_INGEST_STATE,
    BULK_INGEST_DELETE,
    BULK_INGEST_UPLOAD,
    BULK_INGEST_SUCCESSFUL,
    BULK_INGEST_FAILED,
    BULK_INGEST_UNPROCESSED,
];

/// Records per query page unless `Sforce-Query-Options: batchSize=N` asks otherwise.
pub const DEFAULT_BATCH_SIZE: usize = 2000;
/// Records per sObject Collections request.
pub const COLLECTION_LIMIT: usize = 200;

const LIMIT_HEADER: &str = "sforce-limit-info";
const DAILY_POLICY: &str = "DailyApiRequests";
const ONE_DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// A data route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SfRoute {
    Query,
    QueryAll,
    QueryMore,
    Describe,
    Get,
    Create,
    Update,
    Upsert,
    Delete,
    Deleted,
    Updated,
    CompositeCreate,
    CompositeUpdate,
    CompositeUpsert,
    CompositeDelete,
    CompositeRetrieve,
    Limits,
    KnowledgeSettings,
    BulkQueryCreate,
    BulkQueryList,
    BulkQueryInfo,
    BulkQueryAbort,
    BulkQueryDelete,
    BulkQueryResults,
    BulkIngestCreate,
    BulkIngestList,
    BulkIngestInfo,
    BulkIngestState,
    BulkIngestDelete,
    BulkIngestUpload,
    BulkIngestSuccessful,
    BulkIngestFailed,
    BulkIngestUnprocessed,
}

impl SfRoute {
    /// The route's counter name.
    pub(crate) fn name(self) -> &'static str {
        match self {
            SfRoute::Query => QUERY,
            SfRoute::QueryAll => QUERY_ALL,
            SfRoute::QueryMore => QUERY_MORE,
            SfRoute::Describe => DESCRIBE,
            SfRoute::Get => SOBJECT_GET,
            SfRoute::Create => SOBJECT_CREATE,
            SfRoute::Update => SOBJECT_UPDATE,
            SfRoute::Upsert => SOBJECT_UPSERT,
            SfRoute::Delete => SOBJECT_DELETE,
            SfRoute::Deleted => DELETED,
            SfRoute::Updated => UPDATED,
            SfRoute::CompositeCreate => COMPOSITE_CREATE,
            SfRoute::CompositeUpdate => COMPOSITE_UPDATE,
            SfRoute::CompositeUpsert => COMPOSITE_UPSERT,
            SfRoute::CompositeDelete => COMPOSITE_DELETE,
            SfRoute::CompositeRetrieve => COMPOSITE_RETRIEVE,
            SfRoute::Limits => LIMITS,
            SfRoute::KnowledgeSettings => KNOWLEDGE_SETTINGS,
            SfRoute::BulkQueryCreate => BULK_QUERY_CREATE,
            SfRoute::BulkQueryList => BULK_QUERY_LIST,
            SfRoute::BulkQueryInfo => BULK_QUERY_INFO,
            SfRoute::BulkQueryAbort => BULK_QUERY_ABORT,
            SfRoute::BulkQueryDelete => BULK_QUERY_DELETE,
            SfRoute::BulkQueryResults => BULK_QUERY_RESULTS,
            SfRoute::BulkIngestCreate => BULK_INGEST_CREATE,
            SfRoute::BulkIngestList => BULK_INGEST_LIST,
            SfRoute::BulkIngestInfo => BULK_INGEST_INFO,
            SfRoute::BulkIngestState => BULK_INGEST_STATE,
            SfRoute::BulkIngestDelete => BULK_INGEST_DELETE,
            SfRoute::BulkIngestUpload => BULK_INGEST_UPLOAD,
            SfRoute::BulkIngestSuccessful => BULK_INGEST_SUCCESSFUL,
            SfRoute::BulkIngestFailed => BULK_INGEST_FAILED,
            SfRoute::BulkIngestUnprocessed => BULK_INGEST_UNPROCESSED,
        }
    }

    /// Whether the route is Bulk API 2.0's (`bulk.rs`: CSV answers, its own errors).
    fn is_bulk(self) -> bool {
        self.name().starts_with("salesforce.bulk_")
    }
}

/// `/services/data/vNN.N/rest…` as the version (`60.0`) and the rest's segments.
fn split_path(path: &str) -> Option<(&str, Vec<&str>)> {
    let rest = path.strip_prefix("/services/data/v")?;
    let (version, tail) = rest.split_once('/')?;
    let (major, minor) = version.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(major) || !digits(minor) {
        return None;
    }
    let tail = tail.trim_end_matches('/');
    if tail.is_empty() {
        return None;
    }
    let segments: Vec<&str> = tail.split('/').collect();
    segments
        .iter()
        .all(|s| !s.is_empty())
        .then_some((version, segments))
}

/// Matches a data path (`None`: not a data route, e.g. the version root).
pub(crate) fn route(method: &Method, path: &str) -> Option<SfRoute> {
    let (_, segments) = split_path(path)?;
    if segments.first() == Some(&"jobs") {
        return bulk::route(method, &segments);
    }
    let route = match (method, segments.as_slice()) {
        (&Method::GET, ["query"]) => SfRoute::Query,
        (&Method::GET, ["queryAll"]) => SfRoute::QueryAll,
        (&Method::GET, ["query" | "queryAll", _]) => SfRoute::QueryMore,
        (&Method::GET, ["limits"]) => SfRoute::Limits,
        (&Method::GET, ["knowledgeManagement", "settings"]) => SfRoute::KnowledgeSettings,
        (&Method::GET, ["sobjects", _, "describe"]) => SfRoute::Describe,
        (&Method::GET, ["sobjects", _, "deleted"]) => SfRoute::Deleted,
        (&Method::GET, ["sobjects", _, "updated"]) => SfRoute::Updated,
        (&Method::POST, ["sobjects", _]) => SfRoute::Create,
        (&Method::GET, ["sobjects", _, _] | ["sobjects", _, _, _]) => SfRoute::Get,
        (&Method::PATCH, ["sobjects", _, _]) => SfRoute::Update,
        (&Method::PATCH, ["sobjects", _, _, _]) => SfRoute::Upsert,
        (&Method::DELETE, ["sobjects", _, _]) => SfRoute::Delete,
        (&Method::POST, ["composite", "sobjects"]) => SfRoute::CompositeCreate,
        (&Method::PATCH, ["composite", "sobjects"]) => SfRoute::CompositeUpdate,
        (&Method::PATCH, ["composite", "sobjects", _, _]) => SfRoute::CompositeUpsert,
        (&Method::DELETE, ["composite", "sobjects"] | ["composite", "sobjects", _]) => {
            SfRoute::CompositeDelete
        }
        (&Method::GET | &Method::POST, ["composite", "sobjects", _]) => SfRoute::CompositeRetrieve,
        _ => return None,
    };
    Some(route)
}

/// A handler's answer before rendering: status and body (`None`: empty).
type Reply = (StatusCode, Option<Value>);
/// A handler's result; the error is the finished response.
type Handled = Result<Reply, Response>;

/// A Salesforce REST error array with one entry.
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response {
    wire::json(status, json!([{"message": message, "errorCode": code}]))
}

fn bad_request(code: &str, message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, code, message)
}

fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "The requested resource does not exist",
    )
}

fn record_error(status: StatusCode, error: &RecordError) -> Response {
    wire::json(status, json!([error.rest_json()]))
}

fn json_parser_error(message: &str) -> Response {
    bad_request("JSON_PARSER_ERROR", message)
}

/// The limiter key and policy of an org's daily allowance.
fn daily_policy(org: &str, max: u64) -> (String, [Policy; 1]) {
    (
        format!("salesforce-api:{org}"),
        [Policy::fixed(DAILY_POLICY, max, ONE_DAY)],
    )
}

/// How much of `org`'s allowance of `max` is used (without counting a request).
pub(crate) fn api_usage(state: &SandboxState, org: &str, max: u64) -> SfApiUsage {
    let (key, policies) = daily_policy(org, max);
    let usage = state.with_limiter(|l| l.peek(&key, &policies, Instant::now()));
    let remaining = usage.first().map_or(max, |u| u.remaining);
    SfApiUsage {
        used: max.saturating_sub(remaining),
        max,
    }
}

fn with_limit_info(mut response: Response, usage: SfApiUsage) -> Response {
    if let Ok(value) = HeaderValue::from_str(&format!("api-usage={}/{}", usage.used, usage.max)) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(LIMIT_HEADER), value);
    }
    response
}

/// Adds `Sforce-Limit-Info` (without counting) to a data response that lacks it (the
/// version root, forced faults).
pub(crate) fn finish(state: &SandboxState, org: &str, response: Response) -> Response {
    if response.headers().contains_key(LIMIT_HEADER) {
        return response;
    }
    let max = state.sf_store().api_limit(org);
    with_limit_info(response, api_usage(state, org, max))
}

/// Counts one REST call against the org's daily allowance (what every data route
/// does); past it, the finished 403 `REQUEST_LIMIT_EXCEEDED` with `Sforce-Limit-Info`.
#[allow(clippy::result_large_err)] // The error is the finished response.
pub(crate) fn count_api_call(state: &SandboxState, org: &str) -> Result<(), Response> {
    let max = state.sf_store().api_limit(org);
    let (key, policies) = daily_policy(org, max);
    let verdict = state.with_limiter(|l| l.acquire(&key, &policies, Instant::now()));
    if let Verdict::Denied { .. } = verdict {
        let response = error(
            StatusCode::FORBIDDEN,
            "REQUEST_LIMIT_EXCEEDED",
            "TotalRequests Limit exceeded.",
        );
        return Err(with_limit_info(response, api_usage(state, org, max)));
    }
    Ok(())
}

/// Serves a data route for an authenticated session of `org`: counts the call against
/// the org's allowance (403 past it), runs it, and adds `Sforce-Limit-Info`.
pub(crate) fn handle(
    route: SfRoute,
    state: &SandboxState,
    req: &ProviderRequest,
    org: &str,
) -> Response {
    if route != SfRoute::Limits
        && let Err(response) = count_api_call(state, org)
    {
        return response;
    }
    let max = state.sf_store().api_limit(org);
    let Some((version, segments)) = split_path(&req.path) else {
        return not_found();
    };
    if route.is_bulk() {
        let response = bulk::serve(route, state, req, org, version, &segments);
        return with_limit_info(response, api_usage(state, org, max));
    }
    let reply = serve(route, state, req, org, version, &segments);
    let response = match reply {
        Ok((status, Some(body))) => {
            if state.sf_store().take_malformed(route.name()) {
                malformed(status, &body)
            } else {
                wire::json(status, body)
            }
        }
        Ok((status, None)) => status.into_response(),
        Err(response) => response,
    };
    with_limit_info(response, api_usage(state, org, max))
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

fn serve(
    route: SfRoute,
    state: &SandboxState,
    req: &ProviderRequest,
    org: &str,
    version: &str,
    segments: &[&str],
) -> Handled {
    if let Some(reply) = knowledge::serve(route, state, req, org, version, segments) {
        return reply;
    }
    // Segment 1 names the sObject on the sobjects routes, segment 2 on collections.
    let object_at = |index: usize| {
        segments
            .get(index)
            .and_then(|name| SfObject::parse(name))
            .ok_or_else(not_found)
    };
    match route {
        SfRoute::Query | SfRoute::QueryAll => {
            query(state, req, org, version, route == SfRoute::QueryAll)
        }
        SfRoute::QueryMore => query_more(state, req, org, version, segments.get(1).copied()),
        SfRoute::Limits => {
            let max = state.sf_store().api_limit(org);
            let usage = api_usage(state, org, max);
            let mut limits = bulk::limits_json(&mut state.sf_store(), org);
            limits.insert(
                "DailyApiRequests".into(),
                json!({"Max": usage.max, "Remaining": usage.max - usage.used}),
            );
            limits.insert(
                "DataStorageMB".into(),
                json!({"Max": 1024, "Remaining": 1000}),
            );
            limits.insert(
                "FileStorageMB".into(),
                json!({"Max": 1024, "Remaining": 1024}),
            );
            Ok((StatusCode::OK, Some(Value::Object(limits))))
        }
        SfRoute::Describe => Ok((
            StatusCode::OK,
            Some(schema::describe(object_at(1)?, version)),
        )),
        SfRoute::Get => get(state, req, org, version, object_at(1)?, &segments[2..]),
        SfRoute::Create => create(state, req, org, object_at(1)?),
        SfRoute::Update => update(
            state,
            req,
            org,
            object_at(1)?,
            segments.get(2).copied().unwrap_or(""),
        ),
        SfRoute::Upsert => upsert(state, req, org, object_at(1)?, &segments[2..]),
        SfRoute::Delete => delete(
            state,
            org,
            object_at(1)?,
            segments.get(2).copied().unwrap_or(""),
        ),
        SfRoute::Deleted => deleted(state, req, org, object_at(1)?),
        SfRoute::Updated => updated(state, req, org, object_at(1)?),
        SfRoute::CompositeCreate => collections::create(state, req, org),
        SfRoute::CompositeUpdate => collections::update(state, req, org),
        SfRoute::CompositeUpsert => collections::upsert(
            state,
            req,
            org,
            object_at(2)?,
            segments.get(3).copied().unwrap_or(""),
        ),
        SfRoute::CompositeDelete => collections::delete(state, req, org),
        SfRoute::CompositeRetrieve => {
            collections::retrieve(state, req, org, version, object_at(2)?)
        }
        // Served by `knowledge::serve` above, and by `bulk::serve` in `handle`.
        SfRoute::KnowledgeSettings => Err(not_found()),
        _ => Err(not_found()),
    }
}

/// The page size asked for by `Sforce-Query-Options: batchSize=N` (clamped to
/// 200–2000), if any.
fn batch_size(headers: &HeaderMap) -> Option<usize> {
    let options = wire::header(headers, "sforce-query-options")?;
    options.split(',').find_map(|option| {
        let (name, value) = option.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("batchSize") {
            return None;
        }
        let n: usize = value.trim().parse().ok()?;
        Some(n.clamp(200, DEFAULT_BATCH_SIZE))
    })
}

/// One page of a query answer.
fn page(cursor: &Cursor, offset: usize, size: usize, version: &str, query_id: &str) -> Value {
    let total = cursor.rows.len();
    let end = knowledge::page_end(cursor, offset, size);
    let records: Vec<Value> = cursor.rows[offset.min(end)..end]
        .iter()
        .map(|rec| rec.to_json(cursor.object, &cursor.fields, version))
        .collect();
    let done = end >= total;
    let mut body = json!({"totalSize": total, "done": done, "records": records});
    if !done {
        body["nextRecordsUrl"] = json!(format!("/services/data/v{version}/query/{query_id}-{end}"));
    }
    body
}

/// `GET /query?q=` and `GET /queryAll?q=`.
fn query(
    state: &SandboxState,
    req: &ProviderRequest,
    org: &str,
    version: &str,
    all: bool,
) -> Handled {
    let Some(text) = wire::query_param(req.query.as_deref(), "q").filter(|q| !q.trim().is_empty())
    else {
        return Err(bad_request(
            "MALFORMED_QUERY",
            "A query string has to be specified",
        ));
    };
    let query = soql::parse(&text).map_err(|e| bad_request(e.code, &e.message))?;
    let query = knowledge::check_query(state, org, version, &text, query)?;
    let size = batch_size(&req.headers).unwrap_or(DEFAULT_BATCH_SIZE);
    let size = knowledge::batch_limit(query.object, query.fields.as_deref(), size);
    let mut store = state.sf_store();
    let rows = store.org(org).run(&query, all);
    let Some(fields) = query.fields else {
        return Ok((
            StatusCode::OK,
            Some(json!({"totalSize": rows.len(), "done": true, "records": []})),
        ));
    };
    let cursor = Cursor {
        object: query.object,
        fields,
        rows,
        page_size: size,
        last_used: Instant::now(),
    };
    if knowledge::page_end(&cursor, 0, size) >= cursor.rows.len() {
        return Ok((StatusCode::OK, Some(page(&cursor, 0, size, version, ""))));
    }
    let query_id = store.open_cursor(org, cursor);
    let cursor = store.cursor(org, &query_id).ok_or_else(not_found)?;
    Ok((
        StatusCode::OK,
        Some(page(cursor, 0, size, version, &query_id)),
    ))
}

/// `GET /query/{queryId}-{offset}`.
fn query_more(
    state: &SandboxState,
    req: &ProviderRequest,
    org: &str,
    version: &str,
    locator: Option<&str>,
) -> Handled {
    let invalid = || bad_request("INVALID_QUERY_LOCATOR", "invalid query locator");
    let (query_id, offset) = locator
        .and_then(|l| l.rsplit_once('-'))
        .and_then(|(id, offset)| Some((id, offset.parse::<usize>().ok()?)))
        .ok_or_else(invalid)?;
    let mut store = state.sf_store();
    let cursor = store.cursor(org, query_id).ok_or_else(invalid)?;
    if offset >= cursor.rows.len() {
        return Err(invalid());
    }
    let size = batch_size(&req.headers).unwrap_or(cursor.page_size);
    let size = knowledge::batch_limit(cursor.object, Some(&cursor.fields), size);
    Ok((
        StatusCode::OK,
        Some(page(cursor, offset, size, version, query_id)),
    ))
}

/// Field indices named by a `fields=` list (`None`: every field), or 400 `INVALID_FIELD`.
fn field_list(object: SfObject, list: Option<&str>) -> Result<Vec<usize>, Response> {
    let Some(list) = list.filter(|l| !l.trim().is_empty()) else {
        return Ok((0..object.fields().len()).collect());
    };
    list.split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| {
            object.field(name).map(|(index, _)| index).ok_or_else(|| {
                bad_request(
                    "INVALID_FIELD",
                    &format!("No such column '{name}' on entity '{}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name. Please reference your WSDL or the describe call for the appropriate names.", object.name()),
                )
            })
        })
        .collect()
}

/// The external-id field named in a path (`Conduit_Id__c`), or 404.
fn external_field(object: SfObject, name: &str) -> Result<usize, Response> {
    match object.field(name) {
        Some((index, field)) if field.external_id => Ok(index),
        _ => Err(error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            &format!("Provided external ID field does not exist or is not accessible: {name}"),
        )),
    }
}

/// `GET /sobjects/{S}/{id}[?fields=]` or `GET /sobjects/{S}/{externalIdField}/{value}`.
fn get(
    state: &SandboxState,
    req: &ProviderRequest,
    org: &str,
    version: &str,
    object: SfObject,
    rest: &[&str],
) -> Handled {
    let fields = field_list(
        object,
        wire::query_param(req.query.as_deref(), "fields").as_deref(),
    )?;
    let mut store = state.sf_store();
    let table = store.org(org).table(object);
    let record = match rest {
        [id] => normalize_id(id).and_then(|id| table.live(&id)),
        [field, value] => {
            external_field(object, field)?;
            table.by_external(&decode(value))
        }
        _ => None,
    };
    match record {
        Some(rec) => Ok((StatusCode::OK, Some(rec.to_json(object, &fields, version)))),
        None => Err(not_found()),
    }
}

/// A percent-decoded path segment.
fn decode(segment: &str) -> String {
    url::form_urlencoded::parse(format!("v={}", segment.replace('+', "%2B")).as_bytes())
        .next()
        .map_or_else(|| segment.to_owned(), |(_, v)| v.into_owned())
}

/// The request body as a JSON object, or 400 `JSON_PARSER_ERROR`.
fn body_object(req: &ProviderRequest) -> Result<Map<String, Value>, Response> {
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(json_parser_error("Expected a JSON object for the record")),
        Err(e) => Err(json_parser_error(&format!(
            "Unexpected character at [line:{}, column:{}]",
            e.line(),
            e.column()
        ))),
    }
}

/// A write error of a single-record route as its response.
fn write_error(error: WriteError) -> Response {
    match error {
        WriteError::Request(message) => json_parser_error(&message),
        WriteError::Record(error) => match error.code {
            "MALFORMED_ID" | "INVALID_CROSS_REFERENCE_KEY" if error.fields.is_empty() => {
                not_found()
            }
            "ENTITY_IS_DELETED" if error.fields.is_empty() => {
                record_error(StatusCode::NOT_FOUND, &error)
            }
            _ => record_error(StatusCode::BAD_REQUEST, &error),
        },
    }
}

/// `POST /sobjects/{S}` → 201 `{id, success, errors}`.
fn create(state: &SandboxState, req: &ProviderRequest, org: &str, object: SfObject) -> Handled {
    let body = body_object(req)?;
    let mut store = state.sf_store();
    let org = store.org(org);
    let stamp = org.stamp();
    let id = org.create(object, &body, stamp).map_err(write_error)?;
    Ok((
        StatusCode::CREATED,
        Some(json!({"id": id, "success": true, "errors": []})),
    ))
}

/// `PATCH /sobjects/{S}/{id}` → 204.
fn update(
    state: &SandboxState,
    req: &ProviderRequest,
    org: &str,
    object: SfObject,
    id: &str,
) -> Handled {
    let body = body_object(req)?;
    let mut store = state.sf_store();
    let org = store.org(org);
    let stamp = org.stamp();
    org.update(object, id, &body, stamp).map_err(write_error)?;
    Ok((StatusCode::NO_CONTENT, None))
}

/// `PATCH /sobjects/{S}/{externalIdField}/{value}`: updates the record holding the value
/// (200, `created: false`) or creates one with it (201, `created: true`).
fn upsert(
    state: &SandboxState,
    req: &ProviderRequest,
    org: &str,
    object: SfObject,
    rest: &[&str],
) -> Handled {
    let [field, value] = rest else {
        return Err(not_found());
    };
    let index = external_field(object, field)?;
    let body = body_object(req)?;
    let mut store = state.sf_store();
    let org = store.org(org);
    let stamp = org.stamp();
    let (id, created) = collections::upsert_one(org, object, index, &decode(value), body, stamp)
        .map_err(write_error)?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Some(json!({"id": id, "success": true, "errors": [], "created": created})),
    ))
}

/// `DELETE /sobjects/{S}/{id}` → 204.
fn delete(state: &SandboxState, org: &str, object: SfObject, id: &str) -> Handled {
    let mut store = state.sf_store();
    let org = store.org(org);
    let stamp = org.stamp();
    org.delete(object, id, stamp)
        .map_err(|e| write_error(WriteError::Record(e)))?;
    Ok((StatusCode::NO_CONTENT, None))
}

/// The `start`/`end` window of `/deleted` and `/updated`: `(start, covered, earliest)`
/// where `covered` is `end` capped at now (or at the org's latest stamp, when writes
/// have run ahead of the clock), so a later change always falls after `covered`.
/// Errors are Salesforce's 400s.
fn window(req: &ProviderRequest, last_stamp: i64) -> Result<(i64, i64, i64), Response> {
    let param = |name: &str| -> Result<i64, Response> {
        let text = wire::query_param(req.query.as_deref(), name)
            .filter(|v| !v.trim().is_empty())
            .ok_or_else(|| {
                bad_request(
                    "MISSING_ARGUMENT",
                    &format!("Missing required parameter: {name}"),
                )
            })?;
        parse_datetime(&text).ok_or_else(|| {
            bad_request(
                "INVALID_DATE_FORMAT",
                &format!("{name}: invalid date/time {text:?}; use ISO 8601 with a zone, e.g. 2024-01-15T09:00:00+00:00"),
            )
        })
    };
    let (start, end) = (param("start")?, param("end")?);
    let now = now_ms();
    let earliest = (now - TOMBSTONE_DAYS * clock::DAY_MS) / 60_000 * 60_000;
    if start > end {
        return Err(bad_request(
            "INVALID_REPLICATION_DATE",
            "startDate must chronologically precede endDate",
        ));
    }
    if start < earliest {
        return Err(bad_request(
            "INVALID_REPLICATION_DATE",
            &format!(
                "startDate is before earliestDateAvailable {}",
                sf_datetime(earliest)
            ),
        ));
    }
    Ok((start, end.min(now.max(last_stamp)), earliest))
}

/// `GET /sobjects/{S}/deleted/?start=&end=`: tombstones deleted in `[start, end]` (`end`
/// capped at now, reported as `latestDateCovered`).
fn deleted(state: &SandboxState, req: &ProviderRequest, org: &str, object: SfObject) -> Handled {
    let mut store = state.sf_store();
    let (start, covered, earliest) = window(req, store.org(org).last_stamp())?;
    let records: Vec<Value> = store
        .org(org)
        .table(object)
        .tombstones
        .iter()
        .filter(|(_, at)| (start..=covered).contains(at))
        .map(|(id, at)| json!({"id": id, "deletedDate": sf_datetime(*at)}))
        .collect();
    Ok((
        StatusCode::OK,
        Some(json!({
            "deletedRecords": records,
            "earliestDateAvailable": sf_datetime(earliest),
            "latestDateCovered": sf_datetime(covered),
        })),
    ))
}

/// `GET /sobjects/{S}/updated/?start=&end=`: ids of live records last modified in
/// `[start, end]`.
fn updated(state: &SandboxState, req: &ProviderRequest, org: &str, object: SfObject) -> Handled {
    let mut store = state.sf_store();
    let (start, covered, _) = window(req, store.org(org).last_stamp())?;
    let ids: Vec<&str> = store
        .org(org)
        .table(object)
        .records
        .values()
        .filter(|rec| !rec.deleted && (start..=covered).contains(&rec.modified_ms))
        .map(|rec| rec.id.as_str())
        .collect();
    Ok((
        StatusCode::OK,
        Some(json!({"ids": ids, "latestDateCovered": sf_datetime(covered)})),
    ))
}

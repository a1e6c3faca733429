//! Bulk API 2.0 (`/services/data/vNN.N/jobs/…`): query jobs and ingest jobs over CSV,
//! for the same `Contact` and `Account` records the REST routes serve, to the same
//! sessions (the `api` scope), counted against the same daily API allowance.
//!
//! **Query jobs.** `POST jobs/query` `{"operation":"query"|"queryAll","query":SOQL,
//! "contentType":"CSV","columnDelimiter","lineEnding"}` parses the SOQL with the REST
//! routes' parser (its errors, 400 `MALFORMED_QUERY`/`INVALID_FIELD`/…), refuses what Bulk
//! API 2.0 does not run (`COUNT()` and other aggregates, `OFFSET`) and answers the job
//! `UploadComplete`; `GET jobs/query/{id}` shows it `InProgress`, then `JobComplete` (the
//! query runs then, a snapshot); `GET …/results[?locator=&maxRecords=]` is the CSV (a
//! header of the selected fields, every value quoted, nulls empty, date-times
//! `…T09:00:00.000Z`) with `Sforce-NumberOfRecords` and `Sforce-Locator` (`null` on the
//! last set); a results call under another API version than the job's is 409;
//! `PATCH` `{"state":"Aborted"}` aborts; `DELETE` deletes a finished job.
//!
//! **Ingest jobs.** `POST jobs/ingest` `{"object","operation":"insert"|"update"|"upsert"|
//! "delete","externalIdFieldName" (upsert: an external-id field or `Id`),"contentType":
//! "CSV","lineEnding":"LF"|"CRLF","columnDelimiter"}` answers the job `Open` with its
//! `contentUrl`; `PUT …/batches` (`text/csv`, once per job, at most 150 MB once
//! base64-encoded) takes the data; `PATCH` `{"state":"UploadComplete"}` closes it (or
//! `Aborted`); processing follows (`InProgress`, then `JobComplete`, or `Failed` with an
//! `errorMessage` for data it cannot read or past the daily allowance). Each row is
//! written by the REST routes' own record writer, so a record refused through sObject
//! Collections is refused here for the same reason; rows go in batches of 10,000, each
//! under one modification stamp. An empty cell leaves the field as it is, `#N/A` clears
//! it. `successfulResults/` (`sf__Id`, `sf__Created`, the row), `failedResults/`
//! (`sf__Id`, `sf__Error` as `CODE:message:fields --`, the row) and
//! `unprocessedrecords/` (the rows of an aborted or failed job that were not processed)
//! are CSV.
//!
//! **Limits** (Bulk API 2.0 developer guide, "Limits and Allocations"): 10,000 query jobs
//! per rolling 24 hours (the next create is 403 `REQUEST_LIMIT_EXCEEDED`); 150,000,000
//! ingest records per rolling 24 hours — past it the rest of a job is not processed
//! and the job fails, as the guide says; a batch of the shared 15,000-a-day batch
//! allocation per 10,000 records. `/limits` shows `DailyBulkV2QueryJobs`,
//! `DailyBulkApiBatches` and `DailyBulkV2QueryFileStorageMB`.
//!
//! **Not reproduced**, per endpoint:
//! - every route: the error codes of refusals the guide does not spell out are the
//!   stand-in's (400 `INVALIDJOB` for a bad job definition, 400 `INVALIDJOBSTATE` for a
//!   request the job's state does not allow, 400 `INVALIDBATCH` for an upload too large,
//!   404 `NOT_FOUND` for an unknown job); jobs are kept until deleted or the sandbox is
//!   reset (Salesforce deletes finished jobs after 7 days); processing takes a fixed delay
//!   per org ([`DEFAULT_BULK_DELAY`], [`SandboxState::set_salesforce_bulk_delay`])
//!   whatever the size, then runs at once when the job is next looked at (no retries, no
//!   parallel/serial concurrency, no per-batch timeouts).
//! - `POST jobs/query`: relationship fields, date functions, `TYPEOF` and the parser's
//!   other gaps are the REST parser's; `ORDER BY` and `LIMIT` are honoured (Salesforce
//!   advises against them, as they disable PK chunking); PK chunking itself and
//!   `GET …/parallelResults` are absent.
//! - `GET …/results`: Salesforce cuts sets by size; without `maxRecords` the stand-in
//!   answers at most [`DEFAULT_RESULT_SET`] rows; no gzip; `DailyBulkV2QueryFileStorageMB`
//!   is shown, never consumed.
//! - `POST jobs/ingest`: `hardDelete`, `assignmentRuleId`, multipart create-with-data and
//!   relationship columns (`Account.External__c`) are refused or not read.
//! - `PUT …/batches`: the size limit is checked on the body as sent (no compression).
//! - results: rows come back in upload order (Salesforce does not promise an order).
//! - `GET jobs/query`, `GET jobs/ingest`: one page, no `isPkChunkingEnabled`/`jobType`
//!   filters.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use serde_json::{Map, Value, json};

use super::schema::{RecordError, SfObject, make_id, sf_datetime};
use super::soql::{self, Query};
use super::store::{Org, Rec, SfStore, WriteError};
use super::{SfRoute, bad_request, error, not_found};
use crate::clock::{DAY_MS, now_ms};
use crate::providers::ProviderRequest;
use crate::state::SandboxState;
use crate::wire;

/// Query jobs an org may create per rolling 24 hours.
pub const BULK_QUERY_JOBS_PER_DAY: u64 = 10_000;
/// Ingest records an org may have processed per rolling 24 hours.
pub const BULK_INGEST_RECORDS_PER_DAY: u64 = 150_000_000;
/// Batches (Bulk API and 2.0 together) an org may have processed per rolling 24 hours.
pub const BULK_BATCHES_PER_DAY: u64 = 15_000;
/// Records of one ingest batch.
pub const BULK_BATCH_RECORDS: usize = 10_000;
/// The most one job upload may hold once base64-encoded.
pub const BULK_UPLOAD_BASE64_MAX: usize = 150 * 1024 * 1024;
/// Rows of a query results set when the request names no `maxRecords`.
pub const DEFAULT_RESULT_SET: usize = 100_000;
/// How long a closed job takes to be processed unless the sandbox is told otherwise.
pub const DEFAULT_BULK_DELAY: Duration = Duration::from_millis(200);
/// `DailyBulkV2QueryFileStorageMB`'s maximum as `/limits` reports 1 TB.
const QUERY_STORAGE_MB: u64 = 976_562;

/// A job's state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum JobState {
    Open,
    UploadComplete,
    InProgress,
    JobComplete,
    Failed,
    Aborted,
}

impl JobState {
    fn as_str(self) -> &'static str {
        match self {
            JobState::Open => "Open",
            JobState::UploadComplete => "UploadComplete",
            JobState::InProgress => "InProgress",
            JobState::JobComplete => "JobComplete",
            JobState::Failed => "Failed",
            JobState::Aborted => "Aborted",
        }
    }

    fn is_final(self) -> bool {
        matches!(
            self,
            JobState::JobComplete | JobState::Failed | JobState::Aborted
        )
    }
}

/// An ingest operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IngestOp {
    Insert,
    Update,
    Upsert,
    Delete,
}

impl IngestOp {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "insert" => Some(IngestOp::Insert),
            "update" => Some(IngestOp::Update),
            "upsert" => Some(IngestOp::Upsert),
            "delete" => Some(IngestOp::Delete),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            IngestOp::Insert => "insert",
            IngestOp::Update => "update",
            IngestOp::Upsert => "upsert",
            IngestOp::Delete => "delete",
        }
    }
}

/// The CSV dialect of a job.
#[derive(Clone, Copy, Debug)]
struct Format {
    delimiter: u8,
    delimiter_name: &'static str,
    crlf: bool,
}

impl Format {
    fn from_body(body: &Map<String, Value>) -> Result<Self, Response> {
        let text = |name: &str| body.get(name).and_then(Value::as_str);
        if let Some(content) = text("contentType")
            && content != "CSV"
        {
            return Err(invalid_job(&format!(
                "contentType {content} is not supported; use CSV"
            )));
        }
        let (delimiter, delimiter_name) = match text("columnDelimiter").unwrap_or("COMMA") {
            "COMMA" => (b',', "COMMA"),
            "BACKQUOTE" => (b'`', "BACKQUOTE"),
            "CARET" => (b'^', "CARET"),
            "PIPE" => (b'|', "PIPE"),
            "SEMICOLON" => (b';', "SEMICOLON"),
            "TAB" => (b'\t', "TAB"),
            other => {
                return Err(invalid_job(&format!(
                    "columnDelimiter {other} is not one of BACKQUOTE, CARET, COMMA, PIPE, SEMICOLON, TAB"
                )));
            }
        };
        let crlf = match text("lineEnding").unwrap_or("LF") {
            "LF" => false,
            "CRLF" => true,
            other => {
                return Err(invalid_job(&format!(
                    "lineEnding {other} is not one of LF, CRLF"
                )));
            }
        };
        Ok(Self {
            delimiter,
            delimiter_name,
            crlf,
        })
    }

    fn writer(&self) -> csv::Writer<Vec<u8>> {
        csv::WriterBuilder::new()
            .delimiter(self.delimiter)
            .quote_style(csv::QuoteStyle::Always)
            .terminator(if self.crlf {
                csv::Terminator::CRLF
            } else {
                csv::Terminator::Any(b'\n')
            })
            .from_writer(Vec::new())
    }
}

/// What a job does.
#[derive(Debug)]
enum Kind {
    Query {
        all: bool,
        query: Query,
        /// The rows, once the query ran.
        rows: Option<Vec<Arc<Rec>>>,
    },
    Ingest {
        object: SfObject,
        op: IngestOp,
        /// The external-id field name of an upsert (`Id` or `Conduit_Id__c`).
        external: Option<String>,
        data: Option<Vec<u8>>,
        results: Option<IngestResults>,
    },
}

/// What an ingest job's rows came to.
#[derive(Debug, Default)]
struct IngestResults {
    header: Vec<String>,
    successful: Vec<(String, bool, Vec<String>)>,
    failed: Vec<(String, String, Vec<String>)>,
    unprocessed: Vec<Vec<String>>,
}

/// One job.
#[derive(Debug)]
struct Job {
    id: String,
    org: String,
    version: String,
    created_ms: i64,
    modified_ms: i64,
    /// When the upload was completed (a query job: created): processing is timed from it.
    closed_ms: Option<i64>,
    state: JobState,
    format: Format,
    kind: Kind,
    processed: u64,
    failed: u64,
    error_message: Option<String>,
}

impl Job {
    fn object(&self) -> SfObject {
        match &self.kind {
            Kind::Query { query, .. } => query.object,
            Kind::Ingest { object, .. } => *object,
        }
    }

    fn info(&self) -> Value {
        let mut body = json!({
            "id": self.id,
            "object": self.object().name(),
            "createdById": "005Dn000003SandAAA",
            "createdDate": sf_datetime(self.created_ms),
            "systemModstamp": sf_datetime(self.modified_ms),
            "state": self.state.as_str(),
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": self.version.parse::<f64>().unwrap_or(60.0),
            "lineEnding": if self.format.crlf { "CRLF" } else { "LF" },
            "columnDelimiter": self.format.delimiter_name,
            "numberRecordsProcessed": self.processed,
            "retries": 0,
            "totalProcessingTime": 0,
        });
        match &self.kind {
            Kind::Query { all, .. } => {
                body["operation"] = json!(if *all { "queryAll" } else { "query" });
                body["jobType"] = json!("V2Query");
            }
            Kind::Ingest { op, external, .. } => {
                body["operation"] = json!(op.as_str());
                body["jobType"] = json!("V2Ingest");
                body["contentUrl"] = json!(format!(
                    "services/data/v{}/jobs/ingest/{}/batches",
                    self.version, self.id
                ));
                body["numberRecordsFailed"] = json!(self.failed);
                if let Some(external) = external {
                    body["externalIdFieldName"] = json!(external);
                }
            }
        }
        if let Some(message) = &self.error_message {
            body["errorMessage"] = json!(message);
        }
        body
    }
}

/// A rolling 24-hour count.
#[derive(Debug, Default)]
struct Rolling(VecDeque<(i64, u64)>);

impl Rolling {
    fn used(&mut self, now: i64) -> u64 {
        while self.0.front().is_some_and(|(at, _)| *at <= now - DAY_MS) {
            self.0.pop_front();
        }
        self.0.iter().map(|(_, n)| n).sum()
    }

    fn add(&mut self, now: i64, n: u64) {
        if n > 0 {
            self.0.push_back((now, n));
        }
    }
}

/// An org's Bulk API usage.
#[derive(Debug, Default)]
struct Usage {
    query_jobs: Rolling,
    records: Rolling,
    batches: Rolling,
}

/// Every org's Bulk API 2.0 jobs, usage and limits (held in [`SfStore`]).
#[derive(Debug, Default)]
pub(crate) struct Bulk {
    jobs: HashMap<String, Job>,
    next_seq: u64,
    usage: HashMap<String, Usage>,
    /// Per org: (query jobs, ingest records) per 24 hours, when not the defaults.
    limits: HashMap<String, (u64, u64)>,
    /// Per org: processing time, when not [`DEFAULT_BULK_DELAY`].
    delays: HashMap<String, Duration>,
}

impl Bulk {
    fn limits(&self, org: &str) -> (u64, u64) {
        self.limits
            .get(org)
            .copied()
            .unwrap_or((BULK_QUERY_JOBS_PER_DAY, BULK_INGEST_RECORDS_PER_DAY))
    }

    fn delay_ms(&self, org: &str) -> i64 {
        let delay = self.delays.get(org).copied().unwrap_or(DEFAULT_BULK_DELAY);
        i64::try_from(delay.as_millis()).unwrap_or(0)
    }

    fn next_id(&mut self) -> String {
        self.next_seq += 1;
        make_id("750", 3_000_000_000 + self.next_seq)
    }
}

/// The Bulk API 2.0 part of `/limits`.
pub(crate) fn limits_json(store: &mut SfStore, org: &str) -> Map<String, Value> {
    let now = now_ms();
    let (query_max, _) = store.bulk.limits(org);
    let usage = store.bulk.usage.entry(org.to_owned()).or_default();
    let query_used = usage.query_jobs.used(now);
    let batches_used = usage.batches.used(now);
    let mut out = Map::new();
    out.insert(
        "DailyBulkV2QueryJobs".into(),
        json!({"Max": query_max, "Remaining": query_max.saturating_sub(query_used)}),
    );
    out.insert(
        "DailyBulkApiBatches".into(),
        json!({"Max": BULK_BATCHES_PER_DAY, "Remaining": BULK_BATCHES_PER_DAY.saturating_sub(batches_used)}),
    );
    out.insert(
        "DailyBulkV2QueryFileStorageMB".into(),
        json!({"Max": QUERY_STORAGE_MB, "Remaining": QUERY_STORAGE_MB}),
    );
    out
}

fn invalid_job(message: &str) -> Response {
    bad_request("INVALIDJOB", message)
}

fn invalid_state(job: &Job, what: &str) -> Response {
    bad_request(
        "INVALIDJOBSTATE",
        &format!(
            "Job {} is in state {}: cannot {what}",
            job.id,
            job.state.as_str()
        ),
    )
}

fn body_json(req: &ProviderRequest) -> Result<Map<String, Value>, Response> {
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(bad_request(
            "JSON_PARSER_ERROR",
            "The request body must be a JSON object",
        )),
    }
}

fn json_reply(status: StatusCode, body: Value) -> Response {
    wire::json(status, body)
}

/// Serves a Bulk API 2.0 route of `org` (the session and the allowance are checked).
pub(crate) fn serve(
    route: SfRoute,
    state: &SandboxState,
    req: &ProviderRequest,
    org: &str,
    version: &str,
    segments: &[&str],
) -> Response {
    let id = segments.get(2).copied().unwrap_or("");
    let mut store = state.sf_store();
    let result = match route {
        SfRoute::BulkQueryCreate => create_query(&mut store, req, org, version),
        SfRoute::BulkIngestCreate => create_ingest(&mut store, req, org, version),
        SfRoute::BulkQueryList => Ok(list(&mut store, org, true)),
        SfRoute::BulkIngestList => Ok(list(&mut store, org, false)),
        _ => with_job(&mut store, org, id, route, |store, job| {
            job_route(store, route, req, version, job)
        }),
    };
    result.unwrap_or_else(|response| response)
}

/// Runs `f` on job `id` of `org` after moving it along in time; 404 if there is none
/// (or it is of the other kind than `route` serves).
fn with_job(
    store: &mut SfStore,
    org: &str,
    id: &str,
    route: SfRoute,
    f: impl FnOnce(&mut SfStore, &mut Job) -> Result<Response, Response>,
) -> Result<Response, Response> {
    let query_route = matches!(
        route,
        SfRoute::BulkQueryInfo
            | SfRoute::BulkQueryAbort
            | SfRoute::BulkQueryDelete
            | SfRoute::BulkQueryResults
    );
    let Some(mut job) = store.bulk.jobs.remove(id) else {
        return Err(not_found());
    };
    if job.org != org || matches!(job.kind, Kind::Query { .. }) != query_route {
        store.bulk.jobs.insert(job.id.clone(), job);
        return Err(not_found());
    }
    advance(store, &mut job);
    let answer = f(store, &mut job);
    if !(route == SfRoute::BulkQueryDelete || route == SfRoute::BulkIngestDelete) || answer.is_err()
    {
        store.bulk.jobs.insert(job.id.clone(), job);
    }
    answer
}

fn job_route(
    store: &mut SfStore,
    route: SfRoute,
    req: &ProviderRequest,
    version: &str,
    job: &mut Job,
) -> Result<Response, Response> {
    match route {
        SfRoute::BulkQueryInfo | SfRoute::BulkIngestInfo => {
            Ok(json_reply(StatusCode::OK, job.info()))
        }
        SfRoute::BulkQueryAbort | SfRoute::BulkIngestState => set_state(store, req, job),
        SfRoute::BulkQueryDelete | SfRoute::BulkIngestDelete => {
            if !job.state.is_final() && job.state != JobState::Open {
                return Err(invalid_state(job, "delete it before it is finished"));
            }
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        SfRoute::BulkQueryResults => query_results(req, version, job),
        SfRoute::BulkIngestUpload => upload(req, job),
        SfRoute::BulkIngestSuccessful => ingest_results(job, Results::Successful),
        SfRoute::BulkIngestFailed => ingest_results(job, Results::Failed),
        SfRoute::BulkIngestUnprocessed => ingest_results(job, Results::Unprocessed),
        _ => Err(not_found()),
    }
}

/// Moves a closed job through `InProgress` to its end as time passes: half the delay
/// after closing it is in progress, after the whole delay it is processed.
fn advance(store: &mut SfStore, job: &mut Job) {
    let Some(closed) = job.closed_ms else {
        return;
    };
    if job.state.is_final() {
        return;
    }
    let now = now_ms();
    let delay = store.bulk.delay_ms(&job.org);
    if now >= closed + delay {
        process(store, job, now);
        job.modified_ms = now;
    } else if now >= closed + delay / 2 && job.state == JobState::UploadComplete {
        job.state = JobState::InProgress;
        job.modified_ms = now;
    }
}

fn process(store: &mut SfStore, job: &mut Job, now: i64) {
    let org_id = job.org.clone();
    match &mut job.kind {
        Kind::Query {
            all, query, rows, ..
        } => {
            let found = store.org(&org_id).run(query, *all);
            job.processed = found.len() as u64;
            *rows = Some(found);
            job.state = JobState::JobComplete;
        }
        Kind::Ingest {
            object,
            op,
            external,
            data,
            results,
        } => {
            let (_, records_max) = store.bulk.limits(&org_id);
            let usage = store.bulk.usage.entry(org_id.clone()).or_default();
            let allowance = records_max.saturating_sub(usage.records.used(now));
            let data = data.take().unwrap_or_default();
            let outcome = ingest(
                store.org(&org_id),
                *object,
                *op,
                external.as_deref(),
                job.format,
                &data,
                allowance,
            );
            match outcome {
                Ok((done, over_limit)) => {
                    let rows = (done.successful.len() + done.failed.len()) as u64;
                    let usage = store.bulk.usage.entry(org_id).or_default();
                    usage.records.add(now, rows);
                    usage
                        .batches
                        .add(now, rows.div_ceil(BULK_BATCH_RECORDS as u64));
                    job.processed = rows;
                    job.failed = done.failed.len() as u64;
                    if over_limit {
                        job.state = JobState::Failed;
                        job.error_message = Some(format!(
                            "Exceeded the limit of {records_max} records processed by Bulk API 2.0 ingest jobs per rolling 24 hours; the remaining records were not processed"
                        ));
                    } else {
                        job.state = JobState::JobComplete;
                    }
                    *results = Some(done);
                }
                Err(message) => {
                    job.state = JobState::Failed;
                    job.error_message = Some(message);
                    *results = Some(IngestResults::default());
                }
            }
        }
    }
}

/// Reads an upload and writes its rows: the results and whether the allowance cut it
/// short, or why the data cannot be read (the job fails).
fn ingest(
    org: &mut Org,
    object: SfObject,
    op: IngestOp,
    external: Option<&str>,
    format: Format,
    data: &[u8],
    allowance: u64,
) -> Result<(IngestResults, bool), String> {
    if data.is_empty() {
        return Err("InvalidBatch : no data was uploaded for this job".into());
    }
    check_line_endings(data, format.crlf)?;
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(format.delimiter)
        .has_headers(true)
        .from_reader(data);
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| format!("InvalidBatch : {e}"))?
        .iter()
        .map(str::to_owned)
        .collect();
    for name in &header {
        if object.field(name).is_none() {
            return Err(format!("InvalidBatch : Field name not found : {name}"));
        }
    }
    let mut rows: Vec<Vec<String>> = Vec::new();
    for row in reader.records() {
        let row = row.map_err(|e| format!("InvalidBatch : {e}"))?;
        rows.push(row.iter().map(str::to_owned).collect());
    }
    let external_index = match (op, external) {
        (IngestOp::Upsert, Some(name)) if !name.eq_ignore_ascii_case("Id") => {
            object.field(name).map(|(i, _)| i)
        }
        _ => None,
    };
    let id_column = header.iter().position(|h| h.eq_ignore_ascii_case("Id"));
    let external_column =
        external.and_then(|name| header.iter().position(|h| h.eq_ignore_ascii_case(name)));
    let mut out = IngestResults {
        header: header.clone(),
        ..IngestResults::default()
    };
    let allowed = usize::try_from(allowance).unwrap_or(usize::MAX);
    let over_limit = rows.len() > allowed;
    let (now_rows, later) = rows.split_at(rows.len().min(allowed));
    for batch in now_rows.chunks(BULK_BATCH_RECORDS) {
        let stamp = org.stamp();
        for row in batch {
            let given_id = id_column
                .and_then(|i| row.get(i))
                .filter(|v| !v.is_empty())
                .cloned();
            let body = row_body(&header, row);
            let written: Result<(String, bool), WriteError> = match op {
                IngestOp::Insert => org.create(object, &body, stamp).map(|id| (id, true)),
                IngestOp::Update => match &given_id {
                    Some(id) => org.update(object, id, &body, stamp).map(|id| (id, false)),
                    None => Err(RecordError::new(
                        "MISSING_ARGUMENT",
                        "Id not specified in an update call",
                    )
                    .into()),
                },
                IngestOp::Delete => match &given_id {
                    Some(id) => org
                        .delete(object, id, stamp)
                        .map(|id| (id, false))
                        .map_err(WriteError::Record),
                    None => Err(RecordError::new(
                        "MISSING_ARGUMENT",
                        "Id not specified in a delete call",
                    )
                    .into()),
                },
                IngestOp::Upsert => match external_index {
                    None => match &given_id {
                        Some(id) => org.update(object, id, &body, stamp).map(|id| (id, false)),
                        None => {
                            let mut body = body.clone();
                            body.retain(|k, _| !k.eq_ignore_ascii_case("Id"));
                            org.create(object, &body, stamp).map(|id| (id, true))
                        }
                    },
                    Some(index) => {
                        match external_column
                            .and_then(|i| row.get(i))
                            .filter(|v| !v.is_empty())
                        {
                            Some(value) => super::collections::upsert_one(
                                org,
                                object,
                                index,
                                value,
                                body.clone(),
                                stamp,
                            ),
                            None => Err(RecordError::new(
                                "MISSING_ARGUMENT",
                                format!("{} not specified", external.unwrap_or_default()),
                            )
                            .into()),
                        }
                    }
                },
            };
            match written {
                Ok((id, created)) => out.successful.push((id, created, row.clone())),
                Err(e) => {
                    let error = match e {
                        WriteError::Record(error) => error,
                        WriteError::Request(message) => RecordError::new("INVALID_FIELD", message),
                    };
                    out.failed
                        .push((given_id.unwrap_or_default(), sf_error(&error), row.clone()));
                }
            }
        }
    }
    out.unprocessed = later.to_vec();
    Ok((out, over_limit))
}

/// A failed row's `sf__Error`: `CODE:message:fields --`.
fn sf_error(error: &RecordError) -> String {
    format!(
        "{}:{}:{} --",
        error.code,
        error.message,
        error.fields.join(",")
    )
}

/// A row as the record writer's input: empty cells left out, `#N/A` as null.
fn row_body(header: &[String], row: &[String]) -> Map<String, Value> {
    header
        .iter()
        .zip(row)
        .filter(|(_, cell)| !cell.is_empty())
        .map(|(name, cell)| {
            let value = if cell == "#N/A" {
                Value::Null
            } else {
                Value::String(cell.clone())
            };
            (name.clone(), value)
        })
        .collect()
}

/// Refuses data whose line endings are not the job's (outside quoted values).
fn check_line_endings(data: &[u8], crlf: bool) -> Result<(), String> {
    let mut quoted = false;
    for (i, b) in data.iter().enumerate() {
        match b {
            b'"' => quoted = !quoted,
            b'\n' if !quoted => {
                let after_cr = i > 0 && data[i - 1] == b'\r';
                if after_cr != crlf {
                    return Err(format!(
                        "ClientInputError : LineEnding is invalid on user data. Current LineEnding setting is {}",
                        if crlf { "CRLF" } else { "LF" }
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// `POST jobs/query`.
fn create_query(
    store: &mut SfStore,
    req: &ProviderRequest,
    org: &str,
    version: &str,
) -> Result<Response, Response> {
    let body = body_json(req)?;
    let all = match body.get("operation").and_then(Value::as_str) {
        Some("query") => false,
        Some("queryAll") => true,
        _ => return Err(invalid_job("operation must be query or queryAll")),
    };
    let Some(text) = body
        .get("query")
        .and_then(Value::as_str)
        .filter(|q| !q.trim().is_empty())
    else {
        return Err(invalid_job("A query is required"));
    };
    let format = Format::from_body(&body)?;
    let query = soql::parse(text).map_err(|e| bad_request(e.code, &e.message))?;
    if query.fields.is_none() {
        return Err(bad_request(
            "INVALIDJOB",
            "Bulk API 2.0 does not support aggregate functions such as COUNT()",
        ));
    }
    if query.offset > 0 {
        return Err(bad_request(
            "INVALIDJOB",
            "Bulk API 2.0 does not support OFFSET",
        ));
    }
    if !SfObject::ALL.contains(&query.object) {
        return Err(invalid_job(&format!(
            "Bulk API 2.0 queries of {} are not served by this stand-in",
            query.object.name()
        )));
    }
    let now = now_ms();
    let (query_max, _) = store.bulk.limits(org);
    let usage = store.bulk.usage.entry(org.to_owned()).or_default();
    if usage.query_jobs.used(now) >= query_max {
        return Err(error(
            StatusCode::FORBIDDEN,
            "REQUEST_LIMIT_EXCEEDED",
            &format!(
                "Exceeded the limit of {query_max} Bulk API 2.0 query jobs per rolling 24 hours"
            ),
        ));
    }
    usage.query_jobs.add(now, 1);
    let kind = Kind::Query {
        all,
        query,
        rows: None,
    };
    Ok(new_job(store, org, version, format, kind))
}

/// Keeps a new job (a query job closed at once, an ingest job open) and answers it.
fn new_job(store: &mut SfStore, org: &str, version: &str, format: Format, kind: Kind) -> Response {
    let now = now_ms();
    let query = matches!(kind, Kind::Query { .. });
    let job = Job {
        id: store.bulk.next_id(),
        org: org.to_owned(),
        version: version.to_owned(),
        created_ms: now,
        modified_ms: now,
        closed_ms: query.then_some(now),
        state: if query {
            JobState::UploadComplete
        } else {
            JobState::Open
        },
        format,
        kind,
        processed: 0,
        failed: 0,
        error_message: None,
    };
    let info = job.info();
    store.bulk.jobs.insert(job.id.clone(), job);
    json_reply(StatusCode::OK, info)
}

/// `POST jobs/ingest`.
fn create_ingest(
    store: &mut SfStore,
    req: &ProviderRequest,
    org: &str,
    version: &str,
) -> Result<Response, Response> {
    let body = body_json(req)?;
    let object_name = body.get("object").and_then(Value::as_str).unwrap_or("");
    let Some(object) = SfObject::parse(object_name) else {
        return Err(invalid_job(&format!(
            "Unable to find object: {object_name}"
        )));
    };
    let op_name = body.get("operation").and_then(Value::as_str).unwrap_or("");
    let Some(op) = IngestOp::parse(op_name) else {
        return Err(invalid_job(&format!(
            "operation {op_name} is not one of insert, update, upsert, delete"
        )));
    };
    let format = Format::from_body(&body)?;
    if body.contains_key("assignmentRuleId") {
        return Err(invalid_job(
            "assignmentRuleId is not supported by this stand-in",
        ));
    }
    let external = match (op, body.get("externalIdFieldName").and_then(Value::as_str)) {
        (IngestOp::Upsert, None) => {
            return Err(invalid_job(
                "externalIdFieldName is required for an upsert job",
            ));
        }
        (IngestOp::Upsert, Some(name)) => {
            let fits = name.eq_ignore_ascii_case("Id")
                || object
                    .field(name)
                    .is_some_and(|(_, field)| field.external_id);
            if !fits {
                return Err(invalid_job(&format!(
                    "The field {name} on {} is not an external id field",
                    object.name()
                )));
            }
            Some(name.to_owned())
        }
        (_, Some(_)) => {
            return Err(invalid_job("externalIdFieldName is only for upsert jobs"));
        }
        (_, None) => None,
    };
    let kind = Kind::Ingest {
        object,
        op,
        external,
        data: None,
        results: None,
    };
    Ok(new_job(store, org, version, format, kind))
}

/// `GET jobs/query` / `GET jobs/ingest`: the org's jobs of that kind, oldest first.
fn list(store: &mut SfStore, org: &str, queries: bool) -> Response {
    let ids: Vec<String> = store
        .bulk
        .jobs
        .values()
        .filter(|j| j.org == org && matches!(j.kind, Kind::Query { .. }) == queries)
        .map(|j| j.id.clone())
        .collect();
    let mut jobs = Vec::new();
    for id in ids {
        if let Some(mut job) = store.bulk.jobs.remove(&id) {
            advance(store, &mut job);
            jobs.push(job);
        }
    }
    jobs.sort_by(|a, b| a.id.cmp(&b.id));
    let records: Vec<Value> = jobs.iter().map(Job::info).collect();
    for job in jobs {
        store.bulk.jobs.insert(job.id.clone(), job);
    }
    json_reply(
        StatusCode::OK,
        json!({"done": true, "records": records, "nextRecordsUrl": null}),
    )
}

/// `PATCH jobs/query/{id}` (abort) and `PATCH jobs/ingest/{id}` (close or abort).
fn set_state(
    store: &mut SfStore,
    req: &ProviderRequest,
    job: &mut Job,
) -> Result<Response, Response> {
    let body = body_json(req)?;
    let wanted = body.get("state").and_then(Value::as_str).unwrap_or("");
    let now = now_ms();
    match (wanted, &job.kind) {
        ("Aborted", _) => {
            if job.state.is_final() {
                return Err(invalid_state(job, "abort it"));
            }
            if let Kind::Ingest { data, results, .. } = &mut job.kind {
                // Nothing of an aborted job is processed.
                let rows = data
                    .take()
                    .map(|d| unread_rows(&d, job.format))
                    .unwrap_or_default();
                *results = Some(IngestResults {
                    header: rows.0,
                    unprocessed: rows.1,
                    ..IngestResults::default()
                });
            }
            job.state = JobState::Aborted;
        }
        ("UploadComplete", Kind::Ingest { .. }) => {
            if job.state != JobState::Open {
                return Err(invalid_state(job, "close it"));
            }
            job.state = JobState::UploadComplete;
            job.closed_ms = Some(now);
        }
        _ => {
            return Err(invalid_job(&format!(
                "state {wanted} cannot be set on a {} job",
                if matches!(job.kind, Kind::Query { .. }) {
                    "query"
                } else {
                    "ingest"
                }
            )));
        }
    }
    job.modified_ms = now;
    advance(store, job);
    Ok(json_reply(StatusCode::OK, job.info()))
}

/// The header and rows of uploaded data read as well as they can be (an aborted job's
/// unprocessed records).
fn unread_rows(data: &[u8], format: Format) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(format.delimiter)
        .has_headers(true)
        .flexible(true)
        .from_reader(data);
    let header = reader
        .headers()
        .map(|h| h.iter().map(str::to_owned).collect())
        .unwrap_or_default();
    let rows = reader
        .records()
        .filter_map(Result::ok)
        .map(|r| r.iter().map(str::to_owned).collect())
        .collect();
    (header, rows)
}

/// `PUT jobs/ingest/{id}/batches`.
fn upload(req: &ProviderRequest, job: &mut Job) -> Result<Response, Response> {
    let content_type = wire::header(&req.headers, "content-type").unwrap_or("");
    if !content_type
        .split(';')
        .next()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/csv"))
    {
        return Err(bad_request(
            "INVALIDCONTENTTYPE",
            "Content-Type must be text/csv",
        ));
    }
    if base64_len(req.body.len()) > BULK_UPLOAD_BASE64_MAX {
        return Err(bad_request(
            "INVALIDBATCH",
            "Exceeded max size limit of 150 MB of base64 encoded content for one job upload",
        ));
    }
    if job.state != JobState::Open {
        return Err(invalid_state(job, "take data"));
    }
    let Kind::Ingest { data, .. } = &mut job.kind else {
        return Err(not_found());
    };
    if data.is_some() {
        return Err(bad_request(
            "BULK_API_ERROR",
            &format!(
                "Found multiple contents for job: <{}>, please 'Close' / 'Abort' / 'Delete' the current Job then create a new Job and make sure you only do 'PUT' once on a given Job.",
                job.id
            ),
        ));
    }
    *data = Some(req.body.to_vec());
    Ok(StatusCode::CREATED.into_response())
}

/// The length of `n` bytes once base64-encoded.
fn base64_len(n: usize) -> usize {
    n.div_ceil(3).saturating_mul(4)
}

fn csv_response(body: Vec<u8>, headers: &[(&'static str, String)]) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/csv"));
    for (name, value) in headers {
        if let Ok(value) = HeaderValue::from_str(value) {
            response
                .headers_mut()
                .insert(HeaderName::from_static(name), value);
        }
    }
    response
}

/// A query result value as CSV text.
fn cell_text(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::String(s) => match s.strip_suffix("+0000") {
            // Date-times as the Bulk API writes them.
            Some(head) if s.len() == 28 && s.as_bytes().get(10) == Some(&b'T') => {
                format!("{head}Z")
            }
            _ => s.clone(),
        },
        other => other.to_string(),
    }
}

/// `GET jobs/query/{id}/results?locator=&maxRecords=`.
fn query_results(req: &ProviderRequest, version: &str, job: &Job) -> Result<Response, Response> {
    if job.version != version {
        return Err(error(
            StatusCode::CONFLICT,
            "INVALIDJOBSTATE",
            &format!(
                "Use the API version the job was created with ({}) to get its results",
                job.version
            ),
        ));
    }
    let Kind::Query { query, rows, .. } = &job.kind else {
        return Err(not_found());
    };
    let (JobState::JobComplete, Some(rows)) = (job.state, rows) else {
        return Err(invalid_state(job, "give results before it is complete"));
    };
    let max = match wire::query_param(req.query.as_deref(), "maxRecords") {
        None => DEFAULT_RESULT_SET,
        Some(text) => match text.trim().parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(bad_request(
                    "INVALID_FIELD",
                    "maxRecords must be a positive integer",
                ));
            }
        },
    };
    let start = match wire::query_param(req.query.as_deref(), "locator") {
        None => 0,
        Some(locator) => STANDARD_NO_PAD
            .decode(locator.trim_end_matches('='))
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|n| *n <= rows.len())
            .ok_or_else(|| bad_request("INVALID_QUERY_LOCATOR", "invalid query locator"))?,
    };
    let end = start.saturating_add(max).min(rows.len());
    let fields = query.fields.as_deref().unwrap_or_default();
    let object = query.object;
    let mut writer = job.format.writer();
    let names: Vec<&str> = fields
        .iter()
        .filter_map(|i| object.fields().get(*i).map(|f| f.name))
        .collect();
    let internal = |e: csv::Error| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN_EXCEPTION",
            &format!("writing the results: {e}"),
        )
    };
    writer.write_record(&names).map_err(internal)?;
    for rec in &rows[start..end] {
        let row: Vec<String> = fields
            .iter()
            .map(|i| cell_text(&rec.json(object, *i)))
            .collect();
        writer.write_record(&row).map_err(internal)?;
    }
    let body = writer
        .into_inner()
        .map_err(|e| internal(csv::Error::from(e.into_error())))?;
    let locator = if end < rows.len() {
        STANDARD_NO_PAD.encode(end.to_string())
    } else {
        "null".to_owned()
    };
    Ok(csv_response(
        body,
        &[
            ("sforce-locator", locator),
            ("sforce-numberofrecords", (end - start).to_string()),
        ],
    ))
}

/// Which results of an ingest job.
#[derive(Clone, Copy)]
enum Results {
    Successful,
    Failed,
    Unprocessed,
}

/// `GET jobs/ingest/{id}/successfulResults|failedResults|unprocessedrecords`.
fn ingest_results(job: &Job, which: Results) -> Result<Response, Response> {
    let Kind::Ingest { results, .. } = &job.kind else {
        return Err(not_found());
    };
    let Some(results) = results.as_ref().filter(|_| job.state.is_final()) else {
        return Err(invalid_state(job, "give results before it is finished"));
    };
    let internal = |e: csv::Error| {
        error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "UNKNOWN_EXCEPTION",
            &format!("writing the results: {e}"),
        )
    };
    let mut writer = job.format.writer();
    let mut header: Vec<String> = match which {
        Results::Successful => vec!["sf__Id".into(), "sf__Created".into()],
        Results::Failed => vec!["sf__Id".into(), "sf__Error".into()],
        Results::Unprocessed => Vec::new(),
    };
    header.extend(results.header.iter().cloned());
    writer.write_record(&header).map_err(internal)?;
    match which {
        Results::Successful => {
            for (id, created, row) in &results.successful {
                let mut line = vec![id.clone(), created.to_string()];
                line.extend(row.iter().cloned());
                writer.write_record(&line).map_err(internal)?;
            }
        }
        Results::Failed => {
            for (id, message, row) in &results.failed {
                let mut line = vec![id.clone(), message.clone()];
                line.extend(row.iter().cloned());
                writer.write_record(&line).map_err(internal)?;
            }
        }
        Results::Unprocessed => {
            for row in &results.unprocessed {
                writer.write_record(row).map_err(internal)?;
            }
        }
    }
    let body = writer
        .into_inner()
        .map_err(|e| internal(csv::Error::from(e.into_error())))?;
    Ok(csv_response(body, &[]))
}

/// Matches a Bulk API 2.0 path (`jobs/…` under the version).
pub(crate) fn route(method: &Method, segments: &[&str]) -> Option<SfRoute> {
    let route = match (method, segments) {
        (&Method::POST, ["jobs", "query"]) => SfRoute::BulkQueryCreate,
        (&Method::GET, ["jobs", "query"]) => SfRoute::BulkQueryList,
        (&Method::GET, ["jobs", "query", _]) => SfRoute::BulkQueryInfo,
        (&Method::PATCH, ["jobs", "query", _]) => SfRoute::BulkQueryAbort,
        (&Method::DELETE, ["jobs", "query", _]) => SfRoute::BulkQueryDelete,
        (&Method::GET, ["jobs", "query", _, "results"]) => SfRoute::BulkQueryResults,
        (&Method::POST, ["jobs", "ingest"]) => SfRoute::BulkIngestCreate,
        (&Method::GET, ["jobs", "ingest"]) => SfRoute::BulkIngestList,
        (&Method::GET, ["jobs", "ingest", _]) => SfRoute::BulkIngestInfo,
        (&Method::PATCH, ["jobs", "ingest", _]) => SfRoute::BulkIngestState,
        (&Method::DELETE, ["jobs", "ingest", _]) => SfRoute::BulkIngestDelete,
        (&Method::PUT, ["jobs", "ingest", _, "batches"]) => SfRoute::BulkIngestUpload,
        (&Method::GET, ["jobs", "ingest", _, "successfulResults"]) => SfRoute::BulkIngestSuccessful,
        (&Method::GET, ["jobs", "ingest", _, "failedResults"]) => SfRoute::BulkIngestFailed,
        (&Method::GET, ["jobs", "ingest", _, "unprocessedrecords"]) => {
            SfRoute::BulkIngestUnprocessed
        }
        _ => return None,
    };
    Some(route)
}

/// How much of an org's Bulk API 2.0 allowances is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SfBulkUsage {
    /// Query jobs created in the last 24 hours, and the most allowed.
    pub query_jobs: (u64, u64),
    /// Ingest records processed in the last 24 hours, and the most allowed.
    pub ingest_records: (u64, u64),
    /// Batches processed in the last 24 hours, and the most allowed.
    pub batches: (u64, u64),
}

impl SandboxState {
    /// Sets `org`'s Bulk API 2.0 allowances per rolling 24 hours (query jobs, ingest
    /// records), in place of the documented 10,000 and 150,000,000.
    pub fn set_salesforce_bulk_limits(&self, org: &str, query_jobs: u64, ingest_records: u64) {
        self.sf_store()
            .bulk
            .limits
            .insert(org.to_owned(), (query_jobs, ingest_records));
    }

    /// Sets how long a closed Bulk API 2.0 job of `org` takes to be processed (half of
    /// it `UploadComplete`, half `InProgress`).
    pub fn set_salesforce_bulk_delay(&self, org: &str, delay: Duration) {
        self.sf_store().bulk.delays.insert(org.to_owned(), delay);
    }

    /// How much of `org`'s Bulk API 2.0 allowances is used.
    pub fn salesforce_bulk_usage(&self, org: &str) -> SfBulkUsage {
        let mut store = self.sf_store();
        let now = now_ms();
        let (query_max, records_max) = store.bulk.limits(org);
        let usage = store.bulk.usage.entry(org.to_owned()).or_default();
        SfBulkUsage {
            query_jobs: (usage.query_jobs.used(now), query_max),
            ingest_records: (usage.records.used(now), records_max),
            batches: (usage.batches.used(now), BULK_BATCHES_PER_DAY),
        }
    }

    /// The Bulk API 2.0 jobs of `org`: (id, operation, state), oldest first.
    pub fn salesforce_bulk_jobs(&self, org: &str) -> Vec<(String, String, String)> {
        let store = self.sf_store();
        let mut jobs: Vec<(String, String, String)> = store
            .bulk
            .jobs
            .values()
            .filter(|j| j.org == org)
            .map(|j| {
                let op = match &j.kind {
                    Kind::Query { all: true, .. } => "queryAll",
                    Kind::Query { .. } => "query",
                    Kind::Ingest { op, .. } => op.as_str(),
                };
                (j.id.clone(), op.to_owned(), j.state.as_str().to_owned())
            })
            .collect();
        jobs.sort();
        jobs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(crlf: bool) -> Format {
        Format {
            delimiter: b',',
            delimiter_name: "COMMA",
            crlf,
        }
    }

    #[test]
    fn rows_fail_as_they_fail_through_collections() {
        let mut org = Org::default();
        let data = b"LastName,Email,Conduit_Id__c\nAda,ada@x.test,app-1\n,bob@x.test,app-2\nEve,not-an-email,app-3\n";
        let (out, over) = ingest(
            &mut org,
            SfObject::Contact,
            IngestOp::Upsert,
            Some("Conduit_Id__c"),
            format(false),
            data,
            u64::MAX,
        )
        .unwrap();
        assert!(!over);
        assert_eq!(out.successful.len(), 1);
        assert!(out.successful[0].1, "created");
        let errors: Vec<&str> = out.failed.iter().map(|f| f.1.as_str()).collect();
        assert!(
            errors[0].starts_with("REQUIRED_FIELD_MISSING:"),
            "{errors:?}"
        );
        assert!(
            errors[1].starts_with("INVALID_EMAIL_ADDRESS:"),
            "{errors:?}"
        );
        // The same row again updates the record its external id names.
        let (again, _) = ingest(
            &mut org,
            SfObject::Contact,
            IngestOp::Upsert,
            Some("Conduit_Id__c"),
            format(false),
            b"LastName,Conduit_Id__c\nLovelace,app-1\n",
            u64::MAX,
        )
        .unwrap();
        assert_eq!(again.successful[0].0, out.successful[0].0);
        assert!(!again.successful[0].1, "updated");
    }

    #[test]
    fn the_allowance_leaves_the_rest_unprocessed() {
        let mut org = Org::default();
        let data = b"LastName\nA\nB\nC\n";
        let (out, over) = ingest(
            &mut org,
            SfObject::Contact,
            IngestOp::Insert,
            None,
            format(false),
            data,
            2,
        )
        .unwrap();
        assert!(over);
        assert_eq!(out.successful.len(), 2);
        assert_eq!(out.unprocessed, vec![vec!["C".to_owned()]]);
    }

    #[test]
    fn bad_data_fails_the_job() {
        let mut org = Org::default();
        let crlf = ingest(
            &mut org,
            SfObject::Contact,
            IngestOp::Insert,
            None,
            format(false),
            b"LastName\r\nA\r\n",
            10,
        );
        assert!(crlf.unwrap_err().contains("LineEnding"));
        let unknown = ingest(
            &mut org,
            SfObject::Contact,
            IngestOp::Insert,
            None,
            format(false),
            b"Nope\nA\n",
            10,
        );
        assert!(unknown.unwrap_err().contains("Field name not found : Nope"));
        // A quoted line break is data, not a line ending.
        assert!(check_line_endings(b"A\r\n\"x\ny\"\r\n", true).is_ok());
    }

    #[test]
    fn sizes_and_cells() {
        assert_eq!(base64_len(3), 4);
        assert_eq!(base64_len(4), 8);
        assert!(base64_len(113 * 1024 * 1024) > BULK_UPLOAD_BASE64_MAX);
        assert!(base64_len(112 * 1024 * 1024) <= BULK_UPLOAD_BASE64_MAX);
        assert_eq!(
            cell_text(&json!("2024-01-15T09:00:00.000+0000")),
            "2024-01-15T09:00:00.000Z"
        );
        assert_eq!(cell_text(&json!(12)), "12");
        assert_eq!(cell_text(&Value::Null), "");
        let mut r = Rolling::default();
        r.add(0, 5);
        r.add(DAY_MS / 2, 3);
        assert_eq!(r.used(DAY_MS / 2), 8);
        assert_eq!(r.used(DAY_MS + 1), 3);
    }
}

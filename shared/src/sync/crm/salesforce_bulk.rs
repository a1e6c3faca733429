//! Salesforce Bulk API 2.0: what the Salesforce dialect sends through it, and how.
//!
//! **When.** Salesforce's own guidance (Limits and Allocations Quick Reference, "Bulk API
//! and Bulk API 2.0"): an operation of more than 2,000 records is a candidate for Bulk
//! API 2.0, fewer belong to bulkified REST calls. So [`BULK_MIN`] is 2,000:
//! - **Pull**: a full pass (no `since`) first counts its records (`SELECT COUNT()` with
//!   the config's filters, one REST call); from 2,000 on, the pass is one query job,
//!   read [`BULK_PULL_PAGE`] records a page (the REST path's page, so a page costs the
//!   pipeline what a REST page does). An incremental pass (the minute's changes of a
//!   realtime config) starts on REST — one query call, no job to wait for, no count —
//!   and only when that first page's `totalSize` shows 2,000 changes or more (a mass
//!   update in Salesforce) goes on as a query job of the same changes (`SystemModstamp`
//!   at or after the pass's `since`, and the filters); the REST page is dropped.
//! - **Push**: a Salesforce push page reads [`BULK_PAGE`] app records; its creates or
//!   its updates, when 2,000 or more, are one ingest job each (creates as an `upsert`
//!   on the marker field `Conduit_Id__c`, so a job submitted twice creates nothing
//!   twice; updates by `Id`); smaller sets go through sObject Collections as before.
//!   5,000 keeps a page's DynamoDB reads under the 1 MB a query answers per shard and a
//!   job's CSV far under the 150 MB upload limit. A page's deletes, when 2,000 or more,
//!   are one `delete` job by `Id` (a row failing `ENTITY_IS_DELETED` counts as deleted,
//!   other failures are record errors); fewer go through sObject Collections.
//!
//! **Resuming.** The pull cursor's page is `bulk:{jobId}` until the job is read, then
//! `bulk:{jobId}:{locator}`: it is checkpointed like a REST locator, so a worker killed
//! while the job runs polls the same job when its chunk is redelivered. A push page
//! checkpoints its jobs' ids ([`crate::sync::runs::PushCursor::bulk`]) before waiting
//! for them; the redelivered page finds them there and collects them instead of
//! submitting again.
//!
//! **Waiting.** Jobs are polled with backoff ([`POLL_FIRST`] growing by half to
//! [`POLL_MAX`]) for at most [`POLL_FOR`] per call: a query job still running then gives
//! an empty page with the same cursor (the chunk goes on polling, and hands on at its
//! time limit), an ingest job still running is a transient error (the message comes
//! back and polls it again).
//!
//! **Results.** Successful rows link their records; failed rows (`sf__Error`) and the
//! rows of a failed or aborted job that were not processed become the run's per-record
//! errors, as a refused record of a collection call does; rows the job does not hold
//! (the page changed between a submit and its redelivery) are written through REST.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{Value, json};

use super::salesforce::{select, soql_condition, soql_datetime};
use super::transport::{RawAnswer, Target};
use super::{
    BulkOp, CrmClient, CrmError, CrmRecord, Cursor, PullPage, WriteOutcome, WriteValues, clip,
    parse_time_ms,
};
use crate::sync::config::Filter;
use crate::sync::schema::{CrmField, Entity, FieldType};

/// The fewest records an operation sends through Bulk API 2.0.
pub const BULK_MIN: usize = 2_000;
/// App records per push page.
pub const BULK_PAGE: usize = 5_000;
/// Records per pulled page of a query job's results (`maxRecords`).
pub const BULK_PULL_PAGE: usize = 2_000;
/// How a pull cursor's page names a query job.
const PAGE_PREFIX: &str = "bulk:";
/// The first wait between polls of a job.
const POLL_FIRST: Duration = Duration::from_millis(200);
/// The longest wait between polls.
const POLL_MAX: Duration = Duration::from_secs(3);
/// How long one call polls a job before it hands back.
const POLL_FOR: Duration = Duration::from_secs(20);
/// A job in one of these states is done.
const FINAL: [&str; 3] = ["JobComplete", "Failed", "Aborted"];

/// Whether a pull cursor's page is a query job's.
pub(super) fn is_bulk_page(page: &str) -> bool {
    page.starts_with(PAGE_PREFIX)
}

/// The `WHERE` conditions of a pass: the changes since `since` (`modified` at or after
/// it, for an incremental pass), then the config's filters, typed by the describe.
fn conditions(
    filters: &[&Filter],
    describe: &[CrmField],
    since: Option<(&str, i64)>,
) -> Result<String, CrmError> {
    let mut parts: Vec<String> = since
        .map(|(modified, ms)| format!("{modified} >= {}", soql_datetime(ms)))
        .into_iter()
        .collect();
    for f in filters {
        parts.push(soql_condition(f, describe)?);
    }
    Ok(if parts.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", parts.join(" AND "))
    })
}

/// The start of a pass on Bulk API 2.0, from [`BULK_MIN`] records on: a query job (a
/// page without records whose cursor names it). A full pass counts its records first;
/// an incremental one (`first`: its first REST page) takes that page's `totalSize` and
/// queries the same changes (the REST page is dropped, its records come with the
/// job's). None: the pass stays on REST.
pub(super) async fn pull_start(
    c: &mut CrmClient<'_>,
    entity: Entity,
    cursor: &Cursor,
    fields: &[String],
    filters: &[&Filter],
    describe: &[CrmField],
    first: Option<&Value>,
) -> Result<Option<PullPage>, CrmError> {
    let total = match first {
        Some(page) => page.get("totalSize").and_then(Value::as_u64),
        None => {
            let object = c.kind().object(entity);
            let filter = conditions(filters, describe, None)?;
            let q = format!("SELECT COUNT() FROM {object}{filter}");
            let count = c.call(Method::GET, "/query", &[("q", q)], None).await?;
            Some(
                count
                    .get("totalSize")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| CrmError::Malformed("count answer without totalSize".into()))?,
            )
        }
    };
    if total.is_none_or(|n| n < BULK_MIN as u64) {
        return Ok(None);
    }
    let since = if first.is_some() {
        cursor.since_ms
    } else {
        None
    };
    let job = create_query(c, entity, fields, filters, describe, since).await?;
    let next = cursor.after(&[], Some(format!("{PAGE_PREFIX}{job}")));
    Ok(Some(PullPage::new(Vec::new(), next, total)))
}

/// Creates the query job of a pass (of the changes since `since`, for an incremental
/// one); answers its id.
async fn create_query(
    c: &mut CrmClient<'_>,
    entity: Entity,
    fields: &[String],
    filters: &[&Filter],
    describe: &[CrmField],
    since: Option<i64>,
) -> Result<String, CrmError> {
    let object = c.kind().object(entity);
    let modified = c.kind().modified_field(entity);
    let soql = format!(
        "SELECT {} FROM {object}{}",
        select(c, entity, fields).join(", "),
        conditions(filters, describe, since.map(|ms| (modified, ms)))?
    );
    let body = json!({
        "operation": "query",
        "query": soql,
        "contentType": "CSV",
        "columnDelimiter": "COMMA",
        "lineEnding": "LF",
    });
    let info = c
        .call(Method::POST, "/jobs/query", &[], Some(&body))
        .await?;
    job_id(&info)
}

fn job_id(info: &Value) -> Result<String, CrmError> {
    info.get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric()))
        .map(str::to_owned)
        .ok_or_else(|| CrmError::Malformed("job answer without a usable id".into()))
}

/// Polls job `id` (`kind`: `query` or `ingest`) until it is done or [`POLL_FOR`]
/// passed; answers its last description.
async fn poll(c: &mut CrmClient<'_>, kind: &str, id: &str) -> Result<Value, CrmError> {
    let started = Instant::now();
    let mut wait = POLL_FIRST;
    loop {
        let info = c
            .call(Method::GET, &format!("/jobs/{kind}/{id}"), &[], None)
            .await?;
        let done = info
            .get("state")
            .and_then(Value::as_str)
            .is_some_and(|s| FINAL.contains(&s));
        if done || started.elapsed() + wait > POLL_FOR {
            return Ok(info);
        }
        tokio::time::sleep(wait).await;
        wait = (wait + wait / 2).min(POLL_MAX);
    }
}

fn state(info: &Value) -> &str {
    info.get("state").and_then(Value::as_str).unwrap_or("")
}

/// A page of a full pass read through its query job (the cursor's page is
/// `bulk:{job}[:{locator}]`).
pub(super) async fn pull_next(
    c: &mut CrmClient<'_>,
    entity: Entity,
    cursor: &Cursor,
    fields: &[String],
    filters: &[&Filter],
    describe: &[CrmField],
) -> Result<PullPage, CrmError> {
    let page = cursor.page.as_deref().unwrap_or_default();
    let rest = page
        .strip_prefix(PAGE_PREFIX)
        .ok_or_else(|| CrmError::Internal("not a Bulk API page".into()))?;
    let (job, locator) = match rest.split_once(':') {
        Some((job, locator)) => (job, Some(locator)),
        None => (rest, None),
    };
    if job.is_empty() || !job.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(CrmError::Internal("bad Bulk API job in the cursor".into()));
    }
    let mut total = None;
    if locator.is_none() {
        let info = poll(c, "query", job).await?;
        match state(&info) {
            "JobComplete" => {
                total = info.get("numberRecordsProcessed").and_then(Value::as_u64);
            }
            "Failed" | "Aborted" => {
                // The pass starts over with a new job.
                tracing::warn!(
                    job,
                    state = state(&info),
                    "Bulk API query job ended without results"
                );
                let job =
                    create_query(c, entity, fields, filters, describe, cursor.since_ms).await?;
                let next = cursor.after(&[], Some(format!("{PAGE_PREFIX}{job}")));
                return Ok(PullPage::new(Vec::new(), next, None));
            }
            // Still running: the same cursor again.
            _ => return Ok(PullPage::new(Vec::new(), cursor.clone(), None)),
        }
    }
    let mut query = vec![("maxRecords", BULK_PULL_PAGE.to_string())];
    if let Some(l) = locator {
        query.push(("locator", l.to_owned()));
    }
    let answer = c
        .call_text(
            Method::GET,
            Target::Api(&format!("/jobs/query/{job}/results")),
            &query,
            &[("accept", "text/csv".to_owned())],
        )
        .await?;
    let records = query_records(&answer.text, describe)?;
    let next = next_locator(&answer).map(|l| format!("{PAGE_PREFIX}{job}:{l}"));
    let next = cursor.after(&records, next);
    Ok(PullPage::new(records, next, total))
}

/// The `Sforce-Locator` of a results set, unless it is the last (`null`).
fn next_locator(answer: &RawAnswer) -> Option<String> {
    answer
        .headers
        .get("sforce-locator")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|l| !l.is_empty() && *l != "null")
        .map(str::to_owned)
}

/// A number field's CSV text as the REST path carries it (`120.0` → `120`).
fn number_text(text: &str) -> String {
    match text.parse::<f64>() {
        Ok(f) if f.fract() == 0.0 && f.abs() < 1e15 && text.contains('.') => {
            format!("{}", f as i64)
        }
        _ => text.to_owned(),
    }
}

/// A results CSV's reader (rows may be short: `flexible`) and its header.
fn read_csv(text: &str) -> Result<(csv::Reader<&[u8]>, Vec<String>), CrmError> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| CrmError::Malformed(format!("results header: {e}")))?
        .iter()
        .map(str::to_owned)
        .collect();
    Ok((reader, header))
}

/// The records of a query job's CSV results (empty cells are unset fields).
pub(super) fn query_records(text: &str, describe: &[CrmField]) -> Result<Vec<CrmRecord>, CrmError> {
    let (mut reader, header) = read_csv(text)?;
    let numbers: BTreeSet<&str> = describe
        .iter()
        .filter(|f| f.kind == FieldType::Number)
        .map(|f| f.name.as_str())
        .collect();
    let mut out = Vec::new();
    for row in reader.records() {
        let row = row.map_err(|e| CrmError::Malformed(format!("results row: {e}")))?;
        let mut values = BTreeMap::new();
        for (name, cell) in header.iter().zip(row.iter()) {
            if cell.is_empty() {
                continue;
            }
            let text = if numbers.contains(name.as_str()) {
                number_text(cell)
            } else {
                cell.to_owned()
            };
            values.insert(name.clone(), text);
        }
        let id = values
            .get("Id")
            .cloned()
            .ok_or_else(|| CrmError::Malformed("results row without Id".into()))?;
        let modified_ms = values
            .get("SystemModstamp")
            .and_then(|t| parse_time_ms(t))
            .unwrap_or(0);
        out.push(CrmRecord {
            id,
            values,
            modified_ms,
        });
    }
    Ok(out)
}

/// The key column of an op's CSV: the marker (upserts) or `Id`.
fn key_column(c: &CrmClient<'_>, op: BulkOp) -> String {
    match op {
        BulkOp::Upsert => c.kind().marker().to_owned(),
        BulkOp::Update | BulkOp::Delete => "Id".to_owned(),
    }
}

/// An ingest job's CSV: the key column, then every field any row writes (sorted); a
/// cleared value is `#N/A`, a field a row does not write is empty (left as it is).
pub(super) fn ingest_csv(key: &str, rows: &[(String, WriteValues)]) -> Result<String, CrmError> {
    let mut columns: BTreeSet<&str> = BTreeSet::new();
    for (_, values) in rows {
        columns.extend(values.keys().map(String::as_str).filter(|k| *k != key));
    }
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let failed = |e: csv::Error| CrmError::Internal(format!("building the job's CSV: {e}"));
    let mut header = vec![key];
    header.extend(columns.iter().copied());
    writer.write_record(&header).map_err(failed)?;
    for (k, values) in rows {
        let mut line: Vec<&str> = vec![k.as_str()];
        for column in &columns {
            line.push(match values.get(*column) {
                None => "",
                Some(None) => "#N/A",
                Some(Some(v)) if v.is_empty() => "#N/A",
                Some(Some(v)) => v.as_str(),
            });
        }
        writer.write_record(&line).map_err(failed)?;
    }
    let bytes = writer
        .into_inner()
        .map_err(|e| CrmError::Internal(format!("building the job's CSV: {}", e.error())))?;
    String::from_utf8(bytes).map_err(|_| CrmError::Internal("the job's CSV is not UTF-8".into()))
}

/// Creates an ingest job for `rows`, uploads them and closes it; answers its id.
pub(super) async fn submit(
    c: &mut CrmClient<'_>,
    entity: Entity,
    op: BulkOp,
    rows: &[(String, WriteValues)],
) -> Result<String, CrmError> {
    let key = key_column(c, op);
    let csv = ingest_csv(&key, rows)?;
    let mut body = json!({
        "object": c.kind().object(entity),
        "operation": op.as_str(),
        "contentType": "CSV",
        "lineEnding": "LF",
        "columnDelimiter": "COMMA",
    });
    if op == BulkOp::Upsert {
        body["externalIdFieldName"] = json!(key);
    }
    let info = c
        .call(Method::POST, "/jobs/ingest", &[], Some(&body))
        .await?;
    let job = job_id(&info)?;
    let path = format!("/jobs/ingest/{job}");
    let uploaded = c
        .call_raw(
            Method::PUT,
            Target::Api(&format!("{path}/batches")),
            "text/csv",
            &csv,
            &[],
        )
        .await;
    if let Err(e) = uploaded {
        // Best effort: a job left open would be closed by Salesforce after a day anyway.
        let abort = json!({"state": "Aborted"});
        let _ = c.call(Method::PATCH, &path, &[], Some(&abort)).await;
        return Err(e);
    }
    let close = json!({"state": "UploadComplete"});
    c.call(Method::PATCH, &path, &[], Some(&close)).await?;
    Ok(job)
}

/// Waits for ingest job `job` and reads its results: one per row of `rows` (matched
/// by their key column), None for a row the job does not hold.
pub(super) async fn collect(
    c: &mut CrmClient<'_>,
    op: BulkOp,
    job: &str,
    rows: &[(String, WriteValues)],
) -> Result<Vec<Option<WriteOutcome>>, CrmError> {
    if job.is_empty() || !job.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(CrmError::Internal("bad Bulk API job id".into()));
    }
    let info = poll(c, "ingest", job).await?;
    let state = state(&info).to_owned();
    if !FINAL.contains(&state.as_str()) {
        return Err(CrmError::Transient(format!(
            "the Bulk API job {job} is still {}",
            clip(&state)
        )));
    }
    let key = key_column(c, op);
    let mut wanted = vec![
        ("successfulResults", Outcome::Successful),
        ("failedResults", Outcome::Failed),
    ];
    if state != "JobComplete" {
        let why = info
            .get("errorMessage")
            .and_then(Value::as_str)
            .map_or_else(|| format!("the job ended {state}"), clip);
        wanted.push(("unprocessedrecords", Outcome::Unprocessed(why)));
    }
    let mut found: BTreeMap<String, WriteOutcome> = BTreeMap::new();
    for (resource, kind) in wanted {
        let answer = c
            .call_text(
                Method::GET,
                Target::Api(&format!("/jobs/ingest/{job}/{resource}/")),
                &[],
                &[("accept", "text/csv".to_owned())],
            )
            .await?;
        found.extend(results(&answer.text, &key, kind)?);
    }
    Ok(rows.iter().map(|(k, _)| found.remove(k)).collect())
}

/// Which results a CSV holds.
#[derive(Debug, Clone)]
enum Outcome {
    Successful,
    Failed,
    /// Not processed, and why.
    Unprocessed(String),
}

/// `sf__Error` (`CODE:message:fields --`) as the REST path words a refusal
/// (`CODE: message`).
fn sf_error(text: &str) -> String {
    let text = text.trim().trim_end_matches("--").trim_end();
    let (code, rest) = text.split_once(':').unwrap_or(("ERROR", text));
    let message = rest.rsplit_once(':').map_or(rest, |(m, _)| m);
    clip(&format!("{code}: {message}"))
}

/// Key → outcome of one results CSV.
fn results(
    text: &str,
    key: &str,
    kind: Outcome,
) -> Result<BTreeMap<String, WriteOutcome>, CrmError> {
    let (mut reader, header) = read_csv(text)?;
    if header.iter().all(String::is_empty) {
        return Ok(BTreeMap::new());
    }
    let at = |name: &str| header.iter().position(|h| h.eq_ignore_ascii_case(name));
    let key_at =
        at(key).ok_or_else(|| CrmError::Malformed(format!("results without the {key} column")))?;
    let (id_at, error_at) = (at("sf__Id"), at("sf__Error"));
    let mut out = BTreeMap::new();
    for row in reader.records() {
        let row = row.map_err(|e| CrmError::Malformed(format!("results row: {e}")))?;
        let Some(k) = row.get(key_at).filter(|k| !k.is_empty()) else {
            continue;
        };
        let outcome = match &kind {
            Outcome::Successful => WriteOutcome::Done(
                id_at
                    .and_then(|i| row.get(i))
                    .filter(|id| !id.is_empty())
                    .ok_or_else(|| CrmError::Malformed("a successful row without sf__Id".into()))?
                    .to_owned(),
            ),
            Outcome::Failed => WriteOutcome::Failed(sf_error(
                error_at.and_then(|i| row.get(i)).unwrap_or("refused"),
            )),
            Outcome::Unprocessed(why) => {
                WriteOutcome::Failed(clip(&format!("not processed by the Bulk API job: {why}")))
            }
        };
        out.insert(k.to_owned(), outcome);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(name: &str, kind: FieldType) -> CrmField {
        CrmField {
            name: name.into(),
            label: name.into(),
            kind,
            provider_type: String::new(),
            required: false,
            writable: true,
            options: vec![],
        }
    }

    #[test]
    fn query_results_become_records_as_rest_reads_them() {
        let csv = "\"Id\",\"Name\",\"NumberOfEmployees\",\"Website\",\"SystemModstamp\"\n\
                   \"001A\",\"Acme, Inc.\",\"120.0\",\"\",\"2024-01-15T09:00:00.000Z\"\n\
                   \"001B\",\"Say \"\"hi\"\"\",\"7\",\"b.test\",\"2024-01-15T09:00:01.000Z\"\n";
        let describe = vec![field("NumberOfEmployees", FieldType::Number)];
        let records = query_records(csv, &describe).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].id, "001A");
        assert_eq!(records[0].values["Name"], "Acme, Inc.");
        assert_eq!(records[0].values["NumberOfEmployees"], "120");
        assert!(!records[0].values.contains_key("Website"));
        assert_eq!(
            records[0].modified_ms,
            parse_time_ms("2024-01-15T09:00:00.000+0000").unwrap()
        );
        assert_eq!(records[1].values["Name"], "Say \"hi\"");
        assert!(query_records("\"Name\"\n\"x\"\n", &describe).is_err());
    }

    #[test]
    fn ingest_csv_keys_clears_and_leaves_fields() {
        let mut a = WriteValues::new();
        a.insert("LastName".into(), Some("O'Brien, Jr".into()));
        a.insert("Title".into(), None);
        let mut b = WriteValues::new();
        b.insert("Email".into(), Some("b@x.test".into()));
        let csv = ingest_csv("Conduit_Id__c", &[("app-1".into(), a), ("app-2".into(), b)]).unwrap();
        assert_eq!(
            csv,
            "Conduit_Id__c,Email,LastName,Title\napp-1,,\"O'Brien, Jr\",#N/A\napp-2,b@x.test,,\n"
        );
    }

    #[test]
    fn results_map_back_to_rows() {
        let ok = "\"sf__Id\",\"sf__Created\",\"Conduit_Id__c\",\"LastName\"\n\"003A\",\"true\",\"app-1\",\"Ada\"\n";
        let failed = "\"sf__Id\",\"sf__Error\",\"Conduit_Id__c\",\"LastName\"\n\"\",\"INVALID_EMAIL_ADDRESS:Email: invalid email address: x:Email --\",\"app-2\",\"Bob\"\n";
        let rest = "\"Conduit_Id__c\",\"LastName\"\n\"app-3\",\"Eve\"\n";
        let mut all = results(ok, "Conduit_Id__c", Outcome::Successful).unwrap();
        all.extend(results(failed, "Conduit_Id__c", Outcome::Failed).unwrap());
        all.extend(results(rest, "Conduit_Id__c", Outcome::Unprocessed("limit".into())).unwrap());
        assert_eq!(all["app-1"], WriteOutcome::Done("003A".into()));
        assert_eq!(
            all["app-2"],
            WriteOutcome::Failed("INVALID_EMAIL_ADDRESS: Email: invalid email address: x".into())
        );
        assert!(matches!(&all["app-3"], WriteOutcome::Failed(m) if m.contains("limit")));
        // An empty results file holds nothing.
        assert!(results("", "Id", Outcome::Failed).unwrap().is_empty());
        // A successful row must name its record.
        assert!(
            results(
                "\"sf__Id\",\"Id\"\n\"\",\"003A\"\n",
                "Id",
                Outcome::Successful
            )
            .is_err()
        );
    }

    #[test]
    fn numbers_and_pages() {
        assert_eq!(number_text("120.0"), "120");
        assert_eq!(number_text("1.5"), "1.5");
        assert_eq!(number_text("120"), "120");
        assert!(is_bulk_page("bulk:750A"));
        assert!(!is_bulk_page("/services/data/v60.0/query/01g-2000"));
    }
}

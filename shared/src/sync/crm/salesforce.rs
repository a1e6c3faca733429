//! Salesforce REST: Contact and Account.
//!
//! - **Pull**: one SOQL query per pass, `SystemModstamp >= since` plus the config's
//!   filters (typed by the describe), `ORDER BY SystemModstamp ASC, Id ASC`, 2,000 a
//!   batch (`Sforce-Query-Options`), continued by `nextRecordsUrl`; a full pass of 2,000
//!   records or more is a Bulk API 2.0 query job instead ([`super::salesforce_bulk`]).
//! - **Push**: a page's creates or updates, 2,000 or more, are one Bulk API 2.0 ingest
//!   job each ([`super::salesforce_bulk`]).
//! - **Find**: SOQL `IN` over up to 100 values.
//! - **Read / write / delete**: sObject Collections (`/composite/sobjects`, 200 records,
//!   `allOrNone: false`, one result per record in order); values typed by the describe.
//! - **Marker**: the external-id field `Conduit_Id__c`, which the tenant's admin adds;
//!   without it a push is refused with a clear message.
//! - **Deletes**: `/sobjects/{object}/deleted/` (at most 30 days back).
//! - **Errors**: an array of `{"errorCode","message"}`; a token without `api` is refused
//!   "not valid for use with the REST API"; `REQUEST_LIMIT_EXCEEDED` (403) is the daily
//!   allowance; `Sforce-Limit-Info` reports usage.

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::salesforce_bulk as bulk;
use super::transport::{Target, Wire};
use super::{
    BulkOp, CrmClient, CrmError, CrmRecord, Cursor, Dialect, PullPage, WriteOutcome, WriteValues,
    clip, parse_time_ms, scalar_text, typed_value,
};
use crate::sync::config::{Filter, FilterOp};
use crate::sync::schema::{CrmField, Entity, FieldType};

/// Query batch size asked for.
const QUERY_OPTIONS: &str = "batchSize=2000";
/// Where paging locators start.
const ROOT: &str = "/services/";

/// The Salesforce dialect.
#[derive(Debug)]
pub struct Salesforce;

impl Wire for Salesforce {
    fn provider(&self) -> &'static str {
        "salesforce"
    }

    fn usage_header(&self) -> Option<&'static str> {
        Some("sforce-limit-info")
    }

    fn refusal(&self, status: StatusCode, body: Option<&Value>, text: &str) -> Option<CrmError> {
        if status != StatusCode::FORBIDDEN && status != StatusCode::UNAUTHORIZED {
            return None;
        }
        let no_api = body.and_then(Value::as_array).is_some_and(|items| {
            items.iter().any(|e| {
                e.get("message")
                    .and_then(Value::as_str)
                    .is_some_and(|m| m.contains("not valid for use with the REST API"))
            })
        });
        if no_api {
            return Some(CrmError::ScopesMissing(vec!["api".to_owned()]));
        }
        if status == StatusCode::FORBIDDEN && text.contains("REQUEST_LIMIT_EXCEEDED") {
            return Some(CrmError::LimitExhausted(
                body.map_or_else(|| clip(text), |b| self.error_message(b)),
            ));
        }
        None
    }

    fn error_message(&self, v: &Value) -> String {
        let text = match v {
            Value::Array(items) => items
                .iter()
                .map(|e| {
                    format!(
                        "{}: {}",
                        e.get("errorCode")
                            .and_then(Value::as_str)
                            .unwrap_or("ERROR"),
                        e.get("message").and_then(Value::as_str).unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
            Value::Object(o) => o
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            other => other.to_string(),
        };
        clip(&text)
    }
}

/// The fields a read selects: `Id` first, then the client's system fields.
pub(super) fn select(c: &CrmClient<'_>, entity: Entity, fields: &[String]) -> Vec<String> {
    let mut all = c.with_system_fields(entity, fields);
    if !all.iter().any(|x| x == "Id") {
        all.insert(0, "Id".to_owned());
    }
    all
}

fn rows(v: &Value) -> Result<Vec<CrmRecord>, CrmError> {
    v.get("records")
        .and_then(Value::as_array)
        .ok_or_else(|| CrmError::Malformed("query answer without records".into()))?
        .iter()
        .map(record)
        .collect()
}

/// The registration's hook id for an entity whose changes come by outbound message.
pub const OUTBOUND_MESSAGE: &str = "outbound-message";

#[async_trait]
impl Dialect for Salesforce {
    async fn describe(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
    ) -> Result<Vec<CrmField>, CrmError> {
        let object = c.kind().object(entity);
        let v = c
            .call(
                Method::GET,
                &format!("/sobjects/{object}/describe"),
                &[],
                None,
            )
            .await?;
        fields(&v)
    }

    async fn ensure_marker(&self, c: &mut CrmClient<'_>, entity: Entity) -> Result<bool, CrmError> {
        if !c.describes_marker(entity).await? {
            return Err(CrmError::refused(format!(
                "the {} object has no {} external id field",
                c.kind().object(entity),
                c.kind().marker()
            )));
        }
        Ok(true)
    }

    async fn pull(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
        cursor: &Cursor,
        fields: &[String],
        filters: &[&Filter],
    ) -> Result<PullPage, CrmError> {
        let describe = c.describe(entity).await?;
        // Boxed: the Bulk API futures are deep, and this one is already large.
        if cursor.page.as_deref().is_some_and(bulk::is_bulk_page) {
            return Box::pin(bulk::pull_next(
                c, entity, cursor, fields, filters, &describe,
            ))
            .await;
        }
        if cursor.page.is_none()
            && cursor.since_ms.is_none()
            && let Some(page) = Box::pin(bulk::pull_start(
                c, entity, cursor, fields, filters, &describe, None,
            ))
            .await?
        {
            return Ok(page);
        }
        let options = [("Sforce-Query-Options", QUERY_OPTIONS.to_owned())];
        let v = match &cursor.page {
            Some(next) => {
                if !next.starts_with("/services/data/") {
                    return Err(CrmError::Internal("bad Salesforce paging locator".into()));
                }
                let target = Target::Root {
                    path: next,
                    root: ROOT,
                };
                c.call_to(Method::GET, target, &[], None, &options).await?
            }
            None => {
                let object = c.kind().object(entity);
                let modified = c.kind().modified_field(entity);
                let mut conditions = Vec::new();
                if let Some(since) = cursor.since_ms {
                    conditions.push(format!("{modified} >= {}", soql_datetime(since)));
                }
                for f in filters {
                    conditions.push(soql_condition(f, &describe)?);
                }
                let mut soql = format!(
                    "SELECT {} FROM {object}",
                    select(c, entity, fields).join(", ")
                );
                if !conditions.is_empty() {
                    soql.push_str(" WHERE ");
                    soql.push_str(&conditions.join(" AND "));
                }
                soql.push_str(&format!(" ORDER BY {modified} ASC, Id ASC"));
                let target = Target::Api("/query");
                c.call_to(Method::GET, target, &[("q", soql)], None, &options)
                    .await?
            }
        };
        // An incremental pass with as many changes as a full pass would send through
        // Bulk API 2.0 (a mass update in Salesforce) goes on as a query job of the same
        // changes; the first page read here is dropped.
        if cursor.page.is_none()
            && cursor.since_ms.is_some()
            && let Some(page) = Box::pin(bulk::pull_start(
                c,
                entity,
                cursor,
                fields,
                filters,
                &describe,
                Some(&v),
            ))
            .await?
        {
            return Ok(page);
        }
        let records = rows(&v)?;
        let done = v.get("done").and_then(Value::as_bool).unwrap_or(true);
        let page = if done {
            None
        } else {
            Some(
                v.get("nextRecordsUrl")
                    .and_then(Value::as_str)
                    .ok_or_else(|| CrmError::Malformed("not done, but no nextRecordsUrl".into()))?
                    .to_owned(),
            )
        };
        let next = cursor.after(&records, page);
        let total = v.get("totalSize").and_then(Value::as_u64);
        Ok(PullPage::new(records, next, total))
    }

    async fn read(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
        ids: &[String],
        fields: &[String],
    ) -> Result<Vec<CrmRecord>, CrmError> {
        let object = c.kind().object(entity);
        let query = [
            ("ids", ids.join(",")),
            ("fields", select(c, entity, fields).join(",")),
        ];
        let v = c
            .call(
                Method::GET,
                &format!("/composite/sobjects/{object}"),
                &query,
                None,
            )
            .await?;
        let rows = v
            .as_array()
            .ok_or_else(|| CrmError::Malformed("retrieve answer is not a list".into()))?;
        rows.iter().filter(|r| !r.is_null()).map(record).collect()
    }

    async fn find_by(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
        field: &str,
        values: &[String],
    ) -> Result<Vec<CrmRecord>, CrmError> {
        let object = c.kind().object(entity);
        let modified = c.kind().modified_field(entity);
        let list = values
            .iter()
            .map(|v| soql_string(v))
            .collect::<Vec<_>>()
            .join(", ");
        let soql =
            format!("SELECT Id, {modified}, {field} FROM {object} WHERE {field} IN ({list})");
        let v = c.call(Method::GET, "/query", &[("q", soql)], None).await?;
        rows(&v)
    }

    async fn write(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
        inputs: &[WriteValues],
        ids: Option<&[String]>,
    ) -> Result<Vec<WriteOutcome>, CrmError> {
        let describe = c.describe(entity).await?;
        let object = c.kind().object(entity);
        let records: Vec<Value> = inputs
            .iter()
            .enumerate()
            .map(|(i, values)| {
                let mut m = serde_json::Map::new();
                m.insert("attributes".into(), json!({"type": object}));
                if let Some(id) = ids.and_then(|ids| ids.get(i)) {
                    m.insert("Id".into(), json!(id));
                }
                for (k, v) in values {
                    m.insert(k.clone(), typed_value(&describe, k, v.as_deref()));
                }
                Value::Object(m)
            })
            .collect();
        let body = json!({"allOrNone": false, "records": records});
        let method = if ids.is_some() {
            Method::PATCH
        } else {
            Method::POST
        };
        let v = c
            .call(method, "/composite/sobjects", &[], Some(&body))
            .await?;
        let rows = v
            .as_array()
            .filter(|rows| rows.len() == inputs.len())
            .ok_or_else(|| {
                CrmError::Malformed("collection answer does not match the request".into())
            })?;
        Ok(rows
            .iter()
            .enumerate()
            .map(|(i, row)| outcome(row, ids.and_then(|ids| ids.get(i))))
            .collect())
    }

    async fn delete(
        &self,
        c: &mut CrmClient<'_>,
        _entity: Entity,
        ids: &[String],
    ) -> Result<(), CrmError> {
        c.call(
            Method::DELETE,
            "/composite/sobjects",
            &[("ids", ids.join(",")), ("allOrNone", "false".into())],
            None,
        )
        .await?;
        Ok(())
    }

    fn bulk_min(&self) -> Option<usize> {
        Some(bulk::BULK_MIN)
    }

    fn bulk_page(&self) -> Option<usize> {
        Some(bulk::BULK_PAGE)
    }

    async fn bulk_submit(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
        op: BulkOp,
        rows: &[(String, WriteValues)],
    ) -> Result<String, CrmError> {
        bulk::submit(c, entity, op, rows).await
    }

    async fn bulk_collect(
        &self,
        c: &mut CrmClient<'_>,
        _entity: Entity,
        op: BulkOp,
        job: &str,
        rows: &[(String, WriteValues)],
    ) -> Result<Vec<Option<WriteOutcome>>, CrmError> {
        bulk::collect(c, op, job, rows).await
    }

    async fn deleted_since(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
        since_ms: i64,
    ) -> Result<Vec<(String, i64)>, CrmError> {
        let object = c.kind().object(entity);
        // The window may reach back at most 30 days.
        let now = crate::domain::now();
        let earliest = (now - time::Duration::days(29)).unix_timestamp() * 1000;
        let start = since_ms.max(earliest);
        let v = c
            .call(
                Method::GET,
                &format!("/sobjects/{object}/deleted/"),
                &[
                    ("start", soql_datetime(start)),
                    ("end", soql_datetime(now.unix_timestamp() * 1000 + 60_000)),
                ],
                None,
            )
            .await?;
        let rows = v
            .get("deletedRecords")
            .and_then(Value::as_array)
            .ok_or_else(|| CrmError::Malformed("deleted answer without records".into()))?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let id = r.get("id").and_then(Value::as_str)?;
                let at = r
                    .get("deletedDate")
                    .and_then(Value::as_str)
                    .and_then(parse_time_ms)?;
                Some((id.to_owned(), at))
            })
            .collect())
    }

    fn subscribes(&self) -> bool {
        true
    }

    fn by_hand(&self) -> super::ByHand {
        super::ByHand::Always
    }

    /// Outbound messages are made by the org's admin (Setup or the Metadata API, which
    /// Conduit does not call): "subscribing" makes only Conduit's side — the
    /// registration whose key the admin puts in the message's endpoint URL.
    async fn subscribe(
        &self,
        _c: &mut CrmClient<'_>,
        _entity: Entity,
        _url: &str,
        _auth: (&str, &str),
    ) -> Result<String, CrmError> {
        Ok(OUTBOUND_MESSAGE.to_owned())
    }
}

/// One record's result of a collection write.
fn outcome(row: &Value, id: Option<&String>) -> WriteOutcome {
    if row.get("success").and_then(Value::as_bool) == Some(true) {
        let id = row
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| id.cloned())
            .unwrap_or_default();
        return WriteOutcome::Done(id);
    }
    let errors = row.get("errors").and_then(Value::as_array);
    let duplicate = errors.is_some_and(|es| {
        es.iter()
            .any(|e| e.get("statusCode").and_then(Value::as_str) == Some("DUPLICATE_VALUE"))
    });
    if duplicate && id.is_none() {
        return WriteOutcome::Exists(None);
    }
    let message = errors
        .map(|es| {
            es.iter()
                .map(|e| {
                    format!(
                        "{}: {}",
                        e.get("statusCode")
                            .and_then(Value::as_str)
                            .unwrap_or("ERROR"),
                        e.get("message").and_then(Value::as_str).unwrap_or("")
                    )
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_else(|| "refused".into());
    WriteOutcome::Failed(clip(&message))
}

pub(super) fn soql_datetime(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    crate::domain::sortable_time(t)
}

fn soql_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

fn soql_literal(describe: &[CrmField], field: &str, value: &str) -> String {
    match describe.iter().find(|f| f.name == field).map(|f| f.kind) {
        Some(FieldType::Number) if value.parse::<f64>().is_ok() => value.to_owned(),
        Some(FieldType::Boolean) if value == "true" || value == "false" => value.to_owned(),
        Some(FieldType::DateTime) => parse_time_ms(value)
            .map(soql_datetime)
            .unwrap_or_else(|| soql_string(value)),
        Some(FieldType::Date) if value.len() == 10 => value.to_owned(),
        _ => soql_string(value),
    }
}

pub(super) fn soql_condition(f: &Filter, describe: &[CrmField]) -> Result<String, CrmError> {
    if !describe.iter().any(|d| d.name == f.field) {
        return Err(CrmError::refused(format!(
            "filter on unknown field {:?}",
            clip(&f.field)
        )));
    }
    let field = &f.field;
    let value = f.value.as_deref().unwrap_or_default();
    let lit = || soql_literal(describe, field, value);
    Ok(match f.operator {
        FilterOp::Eq => format!("{field} = {}", lit()),
        FilterOp::Neq => format!("{field} != {}", lit()),
        FilterOp::Contains => {
            let escaped = value.replace('%', "\\%").replace('_', "\\_");
            format!("{field} LIKE {}", soql_string(&format!("%{escaped}%")))
        }
        FilterOp::Gt => format!("{field} > {}", lit()),
        FilterOp::Gte => format!("{field} >= {}", lit()),
        FilterOp::Lt => format!("{field} < {}", lit()),
        FilterOp::Lte => format!("{field} <= {}", lit()),
        FilterOp::In => format!(
            "{field} IN ({})",
            f.values
                .iter()
                .map(|v| soql_literal(describe, field, v))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        FilterOp::HasValue => format!("{field} != null"),
        FilterOp::NoValue => format!("{field} = null"),
    })
}

fn record(row: &Value) -> Result<CrmRecord, CrmError> {
    let obj = row
        .as_object()
        .ok_or_else(|| CrmError::Malformed("record is not an object".into()))?;
    let id = obj
        .get("Id")
        .and_then(Value::as_str)
        .ok_or_else(|| CrmError::Malformed("record without Id".into()))?
        .to_owned();
    let values: std::collections::BTreeMap<String, String> = obj
        .iter()
        .filter(|(k, _)| k.as_str() != "attributes")
        .filter_map(|(k, v)| scalar_text(v).map(|t| (k.clone(), t)))
        .collect();
    let modified_ms = values
        .get("SystemModstamp")
        .and_then(|t| parse_time_ms(t))
        .unwrap_or(0);
    Ok(CrmRecord {
        id,
        values,
        modified_ms,
    })
}

fn fields(v: &Value) -> Result<Vec<CrmField>, CrmError> {
    let fields = v
        .get("fields")
        .and_then(Value::as_array)
        .ok_or_else(|| CrmError::Malformed("describe answer without fields".into()))?;
    let mut out = Vec::with_capacity(fields.len());
    for f in fields {
        let Some(name) = f.get("name").and_then(Value::as_str) else {
            continue;
        };
        let ftype = f.get("type").and_then(Value::as_str).unwrap_or("string");
        let flag = |k: &str| f.get(k).and_then(Value::as_bool).unwrap_or(false);
        let kind = match ftype {
            "id" | "reference" => FieldType::Id,
            "email" => FieldType::Email,
            "phone" => FieldType::Phone,
            "url" => FieldType::Url,
            "int" | "double" | "currency" | "percent" => FieldType::Number,
            "boolean" => FieldType::Boolean,
            "date" => FieldType::Date,
            "datetime" => FieldType::DateTime,
            "picklist" | "multipicklist" => FieldType::Enumeration,
            _ => FieldType::String,
        };
        let createable = flag("createable");
        out.push(CrmField {
            name: name.to_owned(),
            label: f
                .get("label")
                .and_then(Value::as_str)
                .unwrap_or(name)
                .to_owned(),
            kind,
            provider_type: ftype.to_owned(),
            required: createable && !flag("nillable") && !flag("defaultedOnCreate"),
            writable: createable || flag("updateable"),
            options: f
                .get("picklistValues")
                .and_then(Value::as_array)
                .map(|o| {
                    o.iter()
                        .filter_map(|x| x.get("value").and_then(Value::as_str).map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_classified() {
        let no_api = json!([{"message": "This session is not valid for use with the REST API",
                             "errorCode": "INVALID_SESSION_ID"}]);
        assert!(matches!(
            Salesforce.refusal(StatusCode::FORBIDDEN, Some(&no_api), ""),
            Some(CrmError::ScopesMissing(s)) if s == ["api"]
        ));
        let expired =
            json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]);
        assert!(
            Salesforce
                .refusal(StatusCode::UNAUTHORIZED, Some(&expired), "")
                .is_none()
        );
        let limit = json!([{"message": "TotalRequests Limit exceeded.",
                            "errorCode": "REQUEST_LIMIT_EXCEEDED"}]);
        let text = limit.to_string();
        assert!(matches!(
            Salesforce.refusal(StatusCode::FORBIDDEN, Some(&limit), &text),
            Some(CrmError::LimitExhausted(_))
        ));
        assert_eq!(
            Salesforce.error_message(&expired),
            "INVALID_SESSION_ID: Session expired or invalid"
        );
    }

    #[test]
    fn soql_is_escaped_and_typed() {
        assert_eq!(soql_string("O'Brien\\"), "'O\\'Brien\\\\'");
        assert_eq!(
            soql_datetime(parse_time_ms("2024-01-15T09:00:00.000Z").unwrap()),
            "2024-01-15T09:00:00.000Z"
        );
        let describe = vec![CrmField {
            name: "NumberOfEmployees".into(),
            label: "Employees".into(),
            kind: FieldType::Number,
            provider_type: "int".into(),
            required: false,
            writable: true,
            options: vec![],
        }];
        let f = Filter {
            entity: Entity::Companies,
            field: "NumberOfEmployees".into(),
            operator: FilterOp::Gte,
            value: Some("50".into()),
            values: vec![],
        };
        assert_eq!(
            soql_condition(&f, &describe).unwrap(),
            "NumberOfEmployees >= 50"
        );
        let bad = Filter {
            field: "Nope".into(),
            ..f
        };
        assert!(soql_condition(&bad, &describe).is_err());
    }

    #[test]
    fn answers_become_records() {
        let sf = json!({"attributes": {"type": "Account"}, "Id": "001A", "NumberOfEmployees": 120.0,
            "Name": "Acme", "Website": null, "SystemModstamp": "2024-01-15T09:00:00.000+0000"});
        let r = record(&sf).unwrap();
        assert_eq!(
            r.values.get("NumberOfEmployees").map(String::as_str),
            Some("120")
        );
        assert!(!r.values.contains_key("Website"));
        assert!(r.modified_ms > 0);
        let failed = json!({"success": false, "errors": [
            {"statusCode": "DUPLICATE_VALUE", "message": "duplicate value found"}]});
        assert_eq!(outcome(&failed, None), WriteOutcome::Exists(None));
        assert!(matches!(
            outcome(&failed, Some(&"003".to_owned())),
            WriteOutcome::Failed(_)
        ));
    }
}

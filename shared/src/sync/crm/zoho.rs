//! Zoho CRM v8: Contacts, Accounts and Deals, in the data centre of the connection's
//! `api_domain` (every path is under `{api_domain}/crm/v8`).
//!
//! - **Pull**: `GET /{module}` sorted by `Modified_Time` ascending, 200 a page; past the
//!   first 2,000 records only `page_token` pages (the answer's `next_page_token`).
//!   Incremental passes send `If-Modified-Since` — Zoho keeps seconds and answers
//!   records modified strictly after, so the cursor reaches back one second (a record
//!   seen twice is harmless). A 204 or 304 is an empty page. The list takes no
//!   filters: a config's filters are applied to each page here, on the CRM's values
//!   (the records read but filtered out still move the cursor).
//! - **Find**: `GET /{module}/search?criteria=((F:equals:a)or(F:equals:b)…)`, at most
//!   10 conditions a search (`(`, `)` and `,` escaped).
//! - **Read**: `GET /{module}?ids=…` (100 ids).
//! - **Write**: insert `POST /{module}`, update `PUT /{module}` (100 records, one
//!   result per record in order, `SUCCESS` / `DUPLICATE_DATA` / `INVALID_DATA` /
//!   `MANDATORY_NOT_FOUND`; a batch whose records all failed is a 400 that still holds
//!   every result). Values typed by the field metadata.
//! - **Lookups** (a deal's `Account_Name` and `Contact_Name`, data type `lookup`) are
//!   read as the id of their `{"name","id"}` and written as `{"id": …}` (`null`
//!   clears); they carry the deal's associations. `Stage` is a picklist whose
//!   `pick_list_values` describe lists (a value map is checked against them).
//! - **Marker**: a unique single-line text field `Conduit_Id` (label "Conduit Id"),
//!   created with `POST /settings/fields` when the grant has
//!   `ZohoCRM.settings.fields.CREATE`; otherwise creates de-duplicate by key.
//! - **Deletes**: `DELETE /{module}?ids=` (100); deletions are read from
//!   `/{module}/deleted?type=all` with `If-Modified-Since`.
//! - **Errors**: `{"code","details","message","status":"error"}`; 401
//!   `OAUTH_SCOPE_MISMATCH` (Zoho does not name the scope); 429 `TOO_MANY_REQUESTS`
//!   for the API credits of a rolling 24 hours (exhaustion: retrying within the chunk
//!   does not help) or the concurrency limit (a short wait does).
//! - **Notifications** (realtime configs, `sync::subscriptions`): one channel per
//!   module, enabled with `POST /actions/watch` (`{"watch":[{channel_id, events:
//!   ["{Module}.all"], channel_expiry, token, notify_url, notify_on_related_action:
//!   false}]}`; scope `ZohoCRM.notifications.CREATE`/`WRITE`/`ALL`), renewed the same
//!   way before it expires (Zoho keeps a channel at most a week from v4 on), removed
//!   with `DELETE /actions/watch?channel_ids=`.

use std::collections::BTreeMap;

use async_trait::async_trait;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::transport::{RateLimited, Target, Wire};
use super::{
    CrmClient, CrmError, CrmRecord, Cursor, Dialect, PullPage, WriteOutcome, WriteValues, clip,
    parse_time_ms, scalar_text, typed_value,
};
use super::{holding, passing};
use crate::sync::config::Filter;
use crate::sync::schema::{CrmField, Entity, FieldType};

/// Records per page.
const PAGE: usize = 200;
/// Records a `page` number may reach; beyond, only page tokens.
const PAGE_DEPTH: usize = 2_000;
/// Conditions one search criteria takes.
const CRITERIA_MAX: usize = 10;
/// The segment the API base and our paths share.
const ROOT: &str = "/crm/";
/// The marker field's label (its API name is the catalogue's `marker`).
const MARKER_LABEL: &str = "Conduit Id";
/// The scope that lets a grant create fields.
const FIELDS_CREATE: &str = "ZohoCRM.settings.fields.CREATE";

/// How long a notification channel is asked to live: Zoho's maximum is one week
/// (v4 and later); an hour less leaves room for clocks.
const CHANNEL_LIFETIME: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600 - 3600);

/// Fields holding a user (`{"name","id","email"}`), not read as values.
const OWNER_LOOKUPS: [&str; 3] = ["Owner", "Created_By", "Modified_By"];

/// The Zoho dialect.
#[derive(Debug)]
pub struct Zoho;

fn path(rest: &str) -> String {
    format!("/crm/v8{rest}")
}

async fn get(
    c: &mut CrmClient<'_>,
    rest: &str,
    query: &[(&str, String)],
    headers: &[(&str, String)],
) -> Result<Value, CrmError> {
    let p = path(rest);
    let target = Target::Root {
        path: &p,
        root: ROOT,
    };
    c.call_to(Method::GET, target, query, None, headers).await
}

async fn send(
    c: &mut CrmClient<'_>,
    method: Method,
    rest: &str,
    query: &[(&str, String)],
    body: Option<&Value>,
) -> Result<Value, CrmError> {
    let p = path(rest);
    let target = Target::Root {
        path: &p,
        root: ROOT,
    };
    c.call_to(method, target, query, body, &[]).await
}

/// Zoho's time form, UTC, whole seconds.
fn zoho_time(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}+00:00",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}

impl Wire for Zoho {
    fn provider(&self) -> &'static str {
        "zoho"
    }

    fn rate_limited(&self, body: &str) -> RateLimited {
        if body.to_ascii_lowercase().contains("concurren") {
            RateLimited::Wait
        } else {
            RateLimited::Exhausted
        }
    }

    fn refusal(&self, status: StatusCode, body: Option<&Value>, _text: &str) -> Option<CrmError> {
        let code = body?.get("code").and_then(Value::as_str)?;
        match (status, code) {
            (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, "OAUTH_SCOPE_MISMATCH") => {
                Some(CrmError::ScopesMissing(Vec::new()))
            }
            (_, "NO_PERMISSION") => Some(CrmError::ScopesMissing(Vec::new())),
            _ => None,
        }
    }

    fn error_message(&self, v: &Value) -> String {
        let code = v.get("code").and_then(Value::as_str).unwrap_or("ERROR");
        let message = v.get("message").and_then(Value::as_str).unwrap_or("");
        let field = v
            .pointer("/details/api_name")
            .and_then(Value::as_str)
            .map(|f| format!(" ({f})"))
            .unwrap_or_default();
        clip(&format!("{code}: {message}{field}"))
    }

    fn answers(&self, status: StatusCode, body: Option<&Value>) -> bool {
        status == StatusCode::BAD_REQUEST
            && body
                .and_then(|b| b.get("data"))
                .is_some_and(Value::is_array)
    }
}

/// The records of a list or search answer (`Null`: none).
fn records(v: &Value, modified: &str) -> Result<Vec<CrmRecord>, CrmError> {
    if v.is_null() {
        return Ok(Vec::new());
    }
    let rows = v
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| CrmError::Malformed("answer without data".into()))?;
    rows.iter().map(|row| record(row, modified)).collect()
}

fn record(row: &Value, modified: &str) -> Result<CrmRecord, CrmError> {
    let obj = row
        .as_object()
        .ok_or_else(|| CrmError::Malformed("record is not an object".into()))?;
    let id = obj
        .get("id")
        .and_then(scalar_text)
        .ok_or_else(|| CrmError::Malformed("record without id".into()))?;
    let values: BTreeMap<String, String> = obj
        .iter()
        .filter_map(|(k, v)| {
            let text = match v {
                // A lookup (`{"name", "id"}`) is read as the id it holds; owner lookups
                // are system fields and stay unread.
                Value::Object(m) if !OWNER_LOOKUPS.contains(&k.as_str()) => {
                    m.get("id").and_then(scalar_text)
                }
                other => scalar_text(other),
            };
            text.map(|t| (k.clone(), t))
        })
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

/// The fields a list asks for: `fields` with the system fields, those the module has
/// (Zoho refuses a list naming a field it does not know; the marker may not exist
/// yet), without `id` (always answered), no duplicates.
async fn selectable(
    c: &mut CrmClient<'_>,
    entity: Entity,
    fields: &[String],
) -> Result<Vec<String>, CrmError> {
    let known = c.describe(entity).await?;
    let mut wanted = c.with_system_fields(entity, fields);
    wanted.retain(|f| f != "id" && known.iter().any(|k| &k.name == f));
    wanted.sort();
    wanted.dedup();
    Ok(wanted)
}

/// A search criteria value, escaped.
fn criteria_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for ch in v.chars() {
        if matches!(ch, '(' | ')' | ',' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// Where a pass stands in Zoho's paging: a page number (the first 2,000 records) or a
/// page token.
fn page_of(cursor: &Cursor) -> Result<(Option<usize>, Option<String>), CrmError> {
    match cursor.page.as_deref() {
        None => Ok((Some(1), None)),
        Some(p) => match p.split_once(':') {
            Some(("p", n)) => n
                .parse()
                .map(|n| (Some(n), None))
                .map_err(|_| CrmError::Internal("bad Zoho page".into())),
            Some(("t", token)) => Ok((None, Some(token.to_owned()))),
            _ => Err(CrmError::Internal("bad Zoho paging locator".into())),
        },
    }
}

/// One record's result of a write.
fn outcome(row: &Value, creating: bool) -> WriteOutcome {
    let code = row.get("code").and_then(Value::as_str).unwrap_or("");
    let id = row.pointer("/details/id").and_then(scalar_text);
    match code {
        "SUCCESS" => id.map_or_else(
            || WriteOutcome::Failed("the answer names no id".into()),
            WriteOutcome::Done,
        ),
        "DUPLICATE_DATA" if creating => WriteOutcome::Exists(id.or_else(|| {
            row.pointer("/details/duplicate_record/id")
                .and_then(scalar_text)
        })),
        _ => WriteOutcome::Failed(Zoho.error_message(row)),
    }
}

fn fields(v: &Value) -> Result<Vec<CrmField>, CrmError> {
    let fields = v
        .get("fields")
        .and_then(Value::as_array)
        .ok_or_else(|| CrmError::Malformed("fields answer without fields".into()))?;
    let mut out = Vec::with_capacity(fields.len());
    for f in fields {
        let Some(name) = f.get("api_name").and_then(Value::as_str) else {
            continue;
        };
        let data_type = f.get("data_type").and_then(Value::as_str).unwrap_or("text");
        let flag = |k: &str| f.get(k).and_then(Value::as_bool).unwrap_or(false);
        let kind = match (data_type, name) {
            (_, "id") => FieldType::Id,
            ("email", _) => FieldType::Email,
            ("phone", _) => FieldType::Phone,
            ("website", _) => FieldType::Url,
            ("integer" | "bigint" | "double" | "currency" | "decimal" | "percent", _) => {
                FieldType::Number
            }
            ("boolean", _) => FieldType::Boolean,
            ("date", _) => FieldType::Date,
            ("datetime", _) => FieldType::DateTime,
            ("picklist" | "multiselectpicklist", _) => FieldType::Enumeration,
            ("lookup" | "ownerlookup", _) => FieldType::Id,
            _ => FieldType::String,
        };
        let read_only = flag("read_only") || flag("field_read_only");
        out.push(CrmField {
            name: name.to_owned(),
            label: f
                .get("field_label")
                .and_then(Value::as_str)
                .unwrap_or(name)
                .to_owned(),
            kind,
            provider_type: data_type.to_owned(),
            required: flag("system_mandatory") && !read_only,
            writable: !read_only,
            options: f
                .get("pick_list_values")
                .and_then(Value::as_array)
                .map(|o| {
                    o.iter()
                        .filter_map(|x| {
                            x.get("actual_value")
                                .or_else(|| x.get("display_value"))
                                .and_then(Value::as_str)
                                .map(str::to_owned)
                        })
                        .collect()
                })
                .unwrap_or_default(),
        });
    }
    Ok(out)
}

/// `POST /actions/watch`: enables (or, for a channel that exists, re-enables with a new
/// expiry) channel `channel` for every operation on the entity's module.
async fn watch(
    c: &mut CrmClient<'_>,
    entity: Entity,
    channel: &str,
    url: &str,
    token: &str,
) -> Result<(), CrmError> {
    let channel_id: u64 = channel
        .parse()
        .map_err(|_| CrmError::Internal(format!("channel id {channel:?} is not a number")))?;
    let module = c.kind().object(entity);
    let expiry = (time::OffsetDateTime::now_utc().unix_timestamp() * 1000)
        + i64::try_from(CHANNEL_LIFETIME.as_millis()).unwrap_or(i64::MAX / 2);
    let body = json!({"watch": [{
        "channel_id": channel_id,
        "events": [format!("{module}.all")],
        "channel_expiry": zoho_time(expiry),
        "token": token,
        "notify_url": url,
        "notify_on_related_action": false,
    }]});
    let v = send(c, Method::POST, "/actions/watch", &[], Some(&body)).await?;
    let first = v.pointer("/watch/0");
    match first.and_then(|w| w.get("status")).and_then(Value::as_str) {
        Some("success") => Ok(()),
        Some(_) => Err(CrmError::Rejected {
            status: 400,
            message: first
                .and_then(|w| w.get("message"))
                .and_then(Value::as_str)
                .unwrap_or("the channel was not enabled")
                .chars()
                .take(200)
                .collect(),
        }),
        None => Err(CrmError::Malformed(
            "an actions/watch answer without its result".into(),
        )),
    }
}

#[async_trait]
impl Dialect for Zoho {
    async fn describe(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
    ) -> Result<Vec<CrmField>, CrmError> {
        let module = c.kind().object(entity);
        let v = get(c, "/settings/fields", &[("module", module.to_owned())], &[]).await?;
        fields(&v)
    }

    async fn ensure_marker(&self, c: &mut CrmClient<'_>, entity: Entity) -> Result<bool, CrmError> {
        if c.describes_marker(entity).await? {
            return Ok(true);
        }
        let creds = c.credentials().await?;
        let granted = creds.connection.scopes.iter().any(|s| {
            s == FIELDS_CREATE || s == "ZohoCRM.settings.fields.ALL" || s == "ZohoCRM.settings.ALL"
        });
        c.keep_credentials(creds);
        if !granted {
            return Ok(false);
        }
        let module = c.kind().object(entity);
        let body = json!({"fields": [{
            "field_label": MARKER_LABEL,
            "data_type": "text",
            "length": 64,
            "unique": {"casesensitive": "false"},
        }]});
        let made = send(
            c,
            Method::POST,
            "/settings/fields",
            &[("module", module.to_owned())],
            Some(&body),
        )
        .await;
        match made {
            Ok(_) | Err(CrmError::Rejected { status: 400, .. }) => {
                // Made, or there already (a duplicate label): ask again.
                c.forget_description(entity);
                c.describes_marker(entity).await
            }
            Err(CrmError::ScopesMissing(_)) => Ok(false),
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
        let module = c.kind().object(entity);
        let modified = c.kind().modified_field(entity);
        let mut asked = fields.to_vec();
        asked.extend(filters.iter().map(|f| f.field.clone()));
        let wanted = selectable(c, entity, &asked).await?;
        let (page, token) = page_of(cursor)?;
        let mut query = vec![
            ("fields", wanted.join(",")),
            ("per_page", PAGE.to_string()),
            ("sort_by", "Modified_Time".to_owned()),
            ("sort_order", "asc".to_owned()),
        ];
        match (&token, page) {
            (Some(t), _) => query.push(("page_token", t.clone())),
            (None, Some(n)) => query.push(("page", n.to_string())),
            (None, None) => {}
        }
        let headers: Vec<(&str, String)> = cursor
            .since_ms
            .map(|since| ("If-Modified-Since", zoho_time(since - 1_000)))
            .into_iter()
            .collect();
        let v = get(c, &format!("/{module}"), &query, &headers).await?;
        let read = records(&v, modified)?;
        let more = v
            .pointer("/info/more_records")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let next_token = v
            .pointer("/info/next_page_token")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty());
        let next_page = match (more, next_token, page) {
            (false, _, _) => None,
            (true, Some(t), _) => Some(format!("t:{t}")),
            (true, None, Some(n)) if (n + 1) * PAGE <= PAGE_DEPTH => Some(format!("p:{}", n + 1)),
            (true, None, _) => {
                return Err(CrmError::Malformed(
                    "more records, but no page token to reach them".into(),
                ));
            }
        };
        let next = cursor.after(&read, next_page);
        let kept = passing(read, filters);
        Ok(PullPage::new(kept, next, None))
    }

    async fn read(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
        ids: &[String],
        fields: &[String],
    ) -> Result<Vec<CrmRecord>, CrmError> {
        let module = c.kind().object(entity);
        let wanted = selectable(c, entity, fields).await?;
        let query = [("ids", ids.join(",")), ("fields", wanted.join(","))];
        let v = get(c, &format!("/{module}"), &query, &[]).await?;
        records(&v, c.kind().modified_field(entity))
    }

    fn find_chunk(&self) -> usize {
        CRITERIA_MAX
    }

    async fn find_by(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
        field: &str,
        values: &[String],
    ) -> Result<Vec<CrmRecord>, CrmError> {
        let module = c.kind().object(entity);
        let criteria = values
            .iter()
            .map(|v| format!("({field}:equals:{})", criteria_value(v)))
            .collect::<Vec<_>>()
            .join("or");
        let v = get(
            c,
            &format!("/{module}/search"),
            &[("criteria", format!("({criteria})"))],
            &[],
        )
        .await?;
        // Search compares without case: keep the records whose value is one asked for.
        let found = records(&v, c.kind().modified_field(entity))?;
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
        let module = c.kind().object(entity);
        let data: Vec<Value> = inputs
            .iter()
            .enumerate()
            .map(|(i, values)| {
                let mut m = serde_json::Map::new();
                if let Some(id) = ids.and_then(|ids| ids.get(i)) {
                    m.insert("id".into(), json!(id));
                }
                for (k, v) in values {
                    let lookup = describe
                        .iter()
                        .any(|f| &f.name == k && f.provider_type == "lookup");
                    let value = match v.as_deref().filter(|v| !v.is_empty()) {
                        // A lookup is written as the record it names.
                        Some(id) if lookup => json!({"id": id}),
                        _ => typed_value(&describe, k, v.as_deref()),
                    };
                    m.insert(k.clone(), value);
                }
                Value::Object(m)
            })
            .collect();
        let method = if ids.is_some() {
            Method::PUT
        } else {
            Method::POST
        };
        let v = send(
            c,
            method,
            &format!("/{module}"),
            &[],
            Some(&json!({"data": data})),
        )
        .await?;
        let rows = v
            .get("data")
            .and_then(Value::as_array)
            .filter(|rows| rows.len() == inputs.len())
            .ok_or_else(|| CrmError::Malformed("write answer does not match the request".into()))?;
        Ok(rows.iter().map(|r| outcome(r, ids.is_none())).collect())
    }

    async fn delete(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
        ids: &[String],
    ) -> Result<(), CrmError> {
        let module = c.kind().object(entity);
        // Per-record failures are records already gone.
        send(
            c,
            Method::DELETE,
            &format!("/{module}"),
            &[("ids", ids.join(","))],
            None,
        )
        .await?;
        Ok(())
    }

    async fn deleted_since(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
        since_ms: i64,
    ) -> Result<Vec<(String, i64)>, CrmError> {
        let module = c.kind().object(entity);
        let since = [("If-Modified-Since", zoho_time(since_ms - 1_000))];
        let mut out = Vec::new();
        for page in 1..=(PAGE_DEPTH / PAGE) {
            let query = [
                ("type", "all".to_owned()),
                ("page", page.to_string()),
                ("per_page", PAGE.to_string()),
            ];
            let v = get(c, &format!("/{module}/deleted"), &query, &since).await?;
            if v.is_null() {
                break;
            }
            let rows = v
                .get("data")
                .and_then(Value::as_array)
                .ok_or_else(|| CrmError::Malformed("deleted answer without data".into()))?;
            out.extend(rows.iter().filter_map(|r| {
                let id = r.get("id").and_then(scalar_text)?;
                let at = r
                    .get("deleted_time")
                    .and_then(Value::as_str)
                    .and_then(parse_time_ms)?;
                (at >= since_ms).then_some((id, at))
            }));
            let more = v
                .pointer("/info/more_records")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if !more {
                break;
            }
        }
        Ok(out)
    }

    fn subscribes(&self) -> bool {
        true
    }

    fn subscription_lifetime(&self) -> Option<std::time::Duration> {
        Some(CHANNEL_LIFETIME)
    }

    /// Enables a notification channel of a new id for every operation on the entity's
    /// module, with the webhook's password as the channel `token`.
    async fn subscribe(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
        url: &str,
        auth: (&str, &str),
    ) -> Result<String, CrmError> {
        // Zoho's channel ids are longs the subscriber picks; 16 digits keep clear of
        // another app's small ones.
        let channel = 1_000_000_000_000_000 + rand::random::<u64>() % 8_000_000_000_000_000;
        watch(c, entity, &channel.to_string(), url, auth.1).await?;
        Ok(channel.to_string())
    }

    async fn renew(
        &self,
        c: &mut CrmClient<'_>,
        entity: Entity,
        id: &str,
        url: &str,
        auth: (&str, &str),
    ) -> Result<(), CrmError> {
        watch(c, entity, id, url, auth.1).await
    }

    async fn unsubscribe(&self, c: &mut CrmClient<'_>, id: &str) -> Result<(), CrmError> {
        if !id.bytes().all(|b| b.is_ascii_digit()) || id.is_empty() {
            return Err(CrmError::Internal(format!(
                "channel id {id:?} is not a number"
            )));
        }
        super::removed(
            send(
                c,
                Method::DELETE,
                "/actions/watch",
                &[("channel_ids", id.to_owned())],
                None,
            )
            .await,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_criteria_are_written_as_zoho_reads_them() {
        let ms = parse_time_ms("2024-01-15T09:00:00.750Z").unwrap();
        assert_eq!(zoho_time(ms), "2024-01-15T09:00:00+00:00");
        assert_eq!(parse_time_ms(&zoho_time(ms)), Some(ms - 750));
        assert_eq!(criteria_value("a(b),c\\"), "a\\(b\\)\\,c\\\\");
    }

    #[test]
    fn answers_become_records_and_outcomes() {
        let v = json!({"data": [{"id": "4150868000000224005", "Email": "a@x.io",
            "Owner": {"id": "1"}, "Last_Name": "Lovelace", "Phone": null,
            "Modified_Time": "2024-01-15T09:00:00+00:00"}],
            "info": {"more_records": false}});
        let r = records(&v, "Modified_Time").unwrap();
        assert_eq!(r[0].id, "4150868000000224005");
        assert_eq!(r[0].values.get("Email").map(String::as_str), Some("a@x.io"));
        assert!(!r[0].values.contains_key("Owner"));
        assert!(!r[0].values.contains_key("Phone"));
        // A lookup is read as the id it holds.
        let deal = json!({"id": "5", "Deal_Name": "Big",
            "Account_Name": {"name": "Acme", "id": "4150868000000224001"},
            "Contact_Name": null, "Modified_By": {"name": "Ada", "id": "2"}});
        let d = record(&deal, "Modified_Time").unwrap();
        assert_eq!(d.values["Account_Name"], "4150868000000224001");
        assert!(!d.values.contains_key("Contact_Name"));
        assert!(!d.values.contains_key("Modified_By"));
        assert!(r[0].modified_ms > 0);
        assert!(records(&Value::Null, "Modified_Time").unwrap().is_empty());
        assert!(records(&json!({"info": {}}), "Modified_Time").is_err());

        let ok = json!({"code": "SUCCESS", "details": {"id": "9"}, "status": "success"});
        assert_eq!(outcome(&ok, true), WriteOutcome::Done("9".into()));
        let dup = json!({"code": "DUPLICATE_DATA", "details": {"api_name": "Email", "id": "7"},
            "message": "duplicate data", "status": "error"});
        assert_eq!(outcome(&dup, true), WriteOutcome::Exists(Some("7".into())));
        assert!(matches!(outcome(&dup, false), WriteOutcome::Failed(m) if m.contains("Email")));
        let missing = json!({"code": "MANDATORY_NOT_FOUND", "details": {"api_name": "Last_Name"},
            "message": "required field not found", "status": "error"});
        assert_eq!(
            outcome(&missing, true),
            WriteOutcome::Failed(
                "MANDATORY_NOT_FOUND: required field not found (Last_Name)".into()
            )
        );
    }

    #[test]
    fn refusals_and_limits_are_classified() {
        let scope = json!({"code": "OAUTH_SCOPE_MISMATCH", "details": {},
            "message": "invalid oauth scope to access this URL", "status": "error"});
        assert!(matches!(
            Zoho.refusal(StatusCode::UNAUTHORIZED, Some(&scope), ""),
            Some(CrmError::ScopesMissing(_))
        ));
        let token = json!({"code": "INVALID_TOKEN", "details": {}, "message": "invalid oauth token",
            "status": "error"});
        assert!(
            Zoho.refusal(StatusCode::UNAUTHORIZED, Some(&token), "")
                .is_none()
        );
        assert_eq!(
            Zoho.rate_limited(r#"{"code":"TOO_MANY_REQUESTS","message":"API credits exhausted"}"#),
            RateLimited::Exhausted
        );
        let all_failed = json!({"data": [{"code": "INVALID_DATA"}]});
        assert!(Zoho.answers(StatusCode::BAD_REQUEST, Some(&all_failed)));
        assert!(!Zoho.answers(StatusCode::BAD_REQUEST, Some(&token)));
    }

    #[test]
    fn paging_locators_round_trip() {
        let mut c = Cursor::default();
        assert_eq!(page_of(&c).unwrap(), (Some(1), None));
        c.page = Some("p:4".into());
        assert_eq!(page_of(&c).unwrap(), (Some(4), None));
        c.page = Some("t:abc:def".into());
        assert_eq!(page_of(&c).unwrap(), (None, Some("abc:def".into())));
        c.page = Some("zz".into());
        assert!(page_of(&c).is_err());
    }
}

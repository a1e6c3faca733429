//! Reads: `GET contacts` (filter, order, page), change tracking (initial sync and delta
//! links) and `GET contacts({id})`, on the knowledge routes' OData engine.

use std::cmp::Ordering;

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::super::ProviderRequest;
use super::super::dynamics365_kb::{
    self as kb, Kind, MAX_PAGE_SIZE, Query, Row, Schema, SortVal, Val,
};
use super::{
    Answer, CHANGE_RETENTION_DAYS, CrmEnv, Ctx, DynRecord, DynTable, Prefer, TableData, error,
    from_response, key_of, missing, row_json, syntax,
};

/// The query options the list route knows.
const LIST_OPTIONS: [&str; 7] = [
    "$select",
    "$filter",
    "$orderby",
    "$top",
    "$count",
    "$skiptoken",
    "$deltatoken",
];

/// The most `@odata.count` reports.
const COUNT_LIMIT: usize = 5_000;

impl Schema for TableData {
    fn kind(&self, prop: &str) -> Option<Kind> {
        if prop == self.table.key() {
            return Some(Kind::Guid);
        }
        self.attr_by_web_name(prop)
            .map(|a| kind_of(&a.attribute_type))
    }

    fn type_name(&self) -> &str {
        self.table.logical_name()
    }
}

/// The EDM kind of an attribute type.
pub(super) fn kind_of(attribute_type: &str) -> Kind {
    match attribute_type {
        "String" | "Memo" => Kind::Text,
        "DateTime" => Kind::Date,
        "Uniqueidentifier" | "Lookup" | "Customer" | "Owner" => Kind::Guid,
        "Boolean" => Kind::Bool,
        _ => Kind::Int,
    }
}

/// A row seen through its table's columns.
pub(super) struct RowRef<'a> {
    pub(super) table: DynTable,
    pub(super) record: &'a DynRecord,
}

impl Row for RowRef<'_> {
    fn get(&self, prop: &str) -> Val<'_> {
        let record = self.record;
        if prop == self.table.key() {
            return Val::Guid(&record.id);
        }
        match prop {
            "createdon" => return Val::Date(record.created_on * 1000),
            "modifiedon" => return Val::Date(record.modified_on * 1000),
            "versionnumber" => return Val::Int(record.version_number),
            "_ownerid_value" => return Val::Guid(super::OWNER_ID),
            _ => {}
        }
        let (column, lookup) = match prop
            .strip_prefix('_')
            .and_then(|p| p.strip_suffix("_value"))
        {
            Some(lookup) => (lookup, true),
            None => (prop, false),
        };
        match record.values.get(column) {
            Some(Value::String(s)) if lookup => Val::Guid(s),
            Some(Value::String(s)) => Val::Text(s),
            Some(Value::Bool(b)) => Val::Bool(*b),
            Some(Value::Number(n)) => n.as_i64().map_or(Val::Null, Val::Int),
            _ => Val::Null,
        }
    }

    fn id(&self) -> &str {
        &self.record.id
    }
}

/// `$select` checked against the table; `None` selects every column.
pub(super) fn select(data: &TableData, raw: Option<&str>) -> Result<Option<Vec<String>>, Answer> {
    let Some(raw) = raw else { return Ok(None) };
    let mut props = Vec::new();
    for name in raw.split(',').map(str::trim) {
        if name.is_empty() {
            return Err(syntax(&format!(
                "Syntax error at position {} in '{raw}'.",
                raw.len()
            )));
        }
        if data.kind(name).is_none() {
            return Err(from_response(kb::unknown_property(
                name,
                data.table.logical_name(),
            )));
        }
        if !props.iter().any(|p| p == name) {
            props.push(name.to_owned());
        }
    }
    Ok(Some(props))
}

fn context_select(select: Option<&[String]>) -> String {
    match select {
        Some(list) if !list.is_empty() => format!("({})", list.join(",")),
        _ => String::new(),
    }
}

/// The answer of a list: JSON with `Preference-Applied` when a preference was honoured.
fn respond(body: Map<String, Value>, applied: &[String]) -> Answer {
    let answer = Answer::json(StatusCode::OK, Value::Object(body));
    if applied.is_empty() {
        answer
    } else {
        answer.with("Preference-Applied", applied.join(","))
    }
}

/// `GET contacts`.
pub(super) fn list(env: &CrmEnv, ctx: &Ctx, table: DynTable, req: &ProviderRequest) -> Answer {
    match list_inner(env, ctx, table, req) {
        Ok(answer) | Err(answer) => answer,
    }
}

fn list_inner(
    env: &CrmEnv,
    ctx: &Ctx,
    table: DynTable,
    req: &ProviderRequest,
) -> Result<Answer, Answer> {
    let query = Query::parse_with(req, &LIST_OPTIONS).map_err(from_response)?;
    let prefer = Prefer::parse(&req.headers);
    let data = env.table(table);
    let select = select(data, query.get("$select"))?;
    let tracking = prefer.track_changes || query.get("$deltatoken").is_some();
    if tracking {
        if !data.tracking {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "0x80072491",
                &format!(
                    "Entity {} isn't enabled for change tracking.",
                    table.logical_name()
                ),
            ));
        }
        for option in ["$filter", "$orderby", "$top", "$count"] {
            if query.get(option).is_some() {
                return Err(syntax(&format!(
                    "The \"{option}\" query parameter isn't supported when Change Tracking is enabled."
                )));
            }
        }
        return match query.get("$deltatoken") {
            Some(token) => delta(env, ctx, data, &query, &prefer, select.as_deref(), token),
            None => initial_sync(env, ctx, data, &query, &prefer, select.as_deref()),
        };
    }
    plain_list(ctx, data, &query, &prefer, select.as_deref())
}

fn plain_list(
    ctx: &Ctx,
    data: &TableData,
    query: &Query,
    prefer: &Prefer,
    select: Option<&[String]>,
) -> Result<Answer, Answer> {
    let set = data.table.set_name();
    let filter_raw = query.get("$filter").unwrap_or("");
    let filter = if filter_raw.trim().is_empty() {
        None
    } else {
        Some(kb::parse_filter(filter_raw, data).map_err(from_response)?)
    };
    let orderby_raw = query.get("$orderby").unwrap_or("");
    let order = kb::parse_orderby(orderby_raw, data).map_err(from_response)?;
    let top = match query.get("$top") {
        None => None,
        Some(raw) => match raw.trim().parse::<i64>() {
            Ok(n) if n >= 0 => Some(
                usize::try_from(n)
                    .unwrap_or(MAX_PAGE_SIZE)
                    .min(MAX_PAGE_SIZE),
            ),
            _ => {
                return Err(syntax(&format!(
                    "Invalid value '{raw}' for $top query option found. The $top query option requires a non-negative integer value."
                )));
            }
        },
    };
    let count = match query.get("$count") {
        None | Some("false") => false,
        Some("true") => true,
        Some(raw) => return Err(syntax(&format!("'{raw}' is not a valid count option."))),
    };
    if count && top.is_some() {
        return Err(syntax("The $top query option cannot be used with $count."));
    }
    let fingerprint = kb::fingerprint(&[set, filter_raw, orderby_raw]);
    let after =
        match query.get("$skiptoken") {
            None => None,
            Some(raw) => Some(kb::decode_skiptoken(raw, &fingerprint).ok_or_else(|| {
                syntax("The $skiptoken query option is not valid for this query.")
            })?),
        };
    let mut keyed: Vec<(Vec<SortVal>, RowRef<'_>)> = data
        .rows
        .values()
        .map(|record| RowRef {
            table: data.table,
            record,
        })
        .filter(|row| filter.as_ref().is_none_or(|f| f.eval(row)))
        .map(|row| {
            (
                order.iter().map(|(p, _)| row.get(p).sort_key()).collect(),
                row,
            )
        })
        .collect();
    let total = keyed.len();
    keyed.sort_by(|a, b| kb::compare(&order, &a.0, a.1.id(), &b.0, b.1.id()));
    let start = match &after {
        None => 0,
        Some(token) => keyed.partition_point(|(key, row)| {
            kb::compare(&order, key, row.id(), &token.key, &token.id) != Ordering::Greater
        }),
    };
    let (page_size, applied) = match (top, prefer.max_page_size) {
        (Some(top), _) => (top, None),
        (None, Some(n)) => (n, Some(n)),
        (None, None) => (MAX_PAGE_SIZE, None),
    };
    let end = (start + page_size).min(keyed.len());
    let page = &keyed[start.min(end)..end];
    let value: Vec<Value> = page
        .iter()
        .map(|(_, row)| Value::Object(row_json(data, row.record, select)))
        .collect();
    let mut body = Map::new();
    body.insert(
        "@odata.context".to_owned(),
        json!(format!(
            "{}/$metadata#{set}{}",
            ctx.base,
            context_select(select)
        )),
    );
    if count {
        body.insert("@odata.count".to_owned(), json!(total.min(COUNT_LIMIT)));
    }
    body.insert("value".to_owned(), Value::Array(value));
    if top.is_none()
        && end < keyed.len()
        && let Some((key, row)) = page.last()
    {
        let page_number = after.as_ref().map_or(1, |t| t.page) + 1;
        let token = kb::encode_skiptoken(page_number, key, row.id(), &fingerprint);
        body.insert(
            "@odata.nextLink".to_owned(),
            json!(link(ctx, set, query, &[("$skiptoken", &token)])),
        );
    }
    let applied: Vec<String> = applied
        .map(|n| format!("odata.maxpagesize={n}"))
        .into_iter()
        .collect();
    Ok(respond(body, &applied))
}

/// This request's URL with `extra` options instead of the paging ones.
fn link(ctx: &Ctx, set: &str, query: &Query, extra: &[(&str, &str)]) -> String {
    let mut pairs: Vec<String> = query
        .pairs
        .iter()
        .filter(|(k, _)| k != "$skiptoken" && k != "$deltatoken")
        .map(|(k, v)| format!("{}={}", kb::encode(k), kb::encode(v)))
        .collect();
    for (k, v) in extra {
        pairs.push(format!("{k}={}", kb::encode(v)));
    }
    format!("{}/{set}?{}", ctx.base, pairs.join("&"))
}

/// `{rowversion}!{MM/dd/yyyy HH:mm:ss}`.
fn delta_token(version: i64, at: i64) -> String {
    let stamp = iso_parts(at);
    format!("{version}!{stamp}")
}

fn iso_parts(secs: i64) -> String {
    let iso = kb::iso(secs);
    // 2024-01-15T09:00:00Z → 01/15/2024 09:00:00
    let (date, time) = iso
        .trim_end_matches('Z')
        .split_once('T')
        .unwrap_or((&iso, ""));
    let mut parts = date.split('-');
    let (y, m, d) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    format!("{m}/{d}/{y} {time}")
}

/// `(version, issued at)` of a delta token, if it is one.
fn parse_delta_token(raw: &str) -> Option<(i64, i64)> {
    let (version, stamp) = raw.split_once('!')?;
    let version = version.trim().parse::<i64>().ok()?;
    let (date, time) = stamp.trim().split_once(' ')?;
    let mut d = date.split('/');
    let (m, day, y) = (d.next()?, d.next()?, d.next()?);
    if d.next().is_some() || m.len() != 2 || day.len() != 2 || y.len() != 4 {
        return None;
    }
    let ms = crate::clock::parse_datetime(&format!("{y}-{m}-{day}T{time}Z"))?;
    Some((version, ms.div_euclid(1000)))
}

/// Change tracking's first answer: every current row, paged, then a delta link.
fn initial_sync(
    env: &CrmEnv,
    ctx: &Ctx,
    data: &TableData,
    query: &Query,
    prefer: &Prefer,
    select: Option<&[String]>,
) -> Result<Answer, Answer> {
    let set = data.table.set_name();
    let fingerprint = kb::fingerprint(&["track", set, query.get("$select").unwrap_or("")]);
    let after =
        match query.get("$skiptoken") {
            None => None,
            Some(raw) => Some(kb::decode_skiptoken(raw, &fingerprint).ok_or_else(|| {
                syntax("The $skiptoken query option is not valid for this query.")
            })?),
        };
    // The version the whole initial sync stands at: changes after it come in the delta.
    let snapshot = match after.as_ref().and_then(|t| t.key.first()) {
        Some(SortVal::Int(v)) => *v,
        _ => env.version,
    };
    let ids: Vec<&DynRecord> = data
        .rows
        .values()
        .filter(|r| after.as_ref().is_none_or(|t| r.id.as_str() > t.id.as_str()))
        .collect();
    let page_size = prefer.max_page_size.unwrap_or(MAX_PAGE_SIZE);
    let page = &ids[..page_size.min(ids.len())];
    let mut body = Map::new();
    body.insert(
        "@odata.context".to_owned(),
        json!(format!(
            "{}/$metadata#{set}{}",
            ctx.base,
            context_select(select)
        )),
    );
    body.insert(
        "value".to_owned(),
        Value::Array(
            page.iter()
                .map(|r| Value::Object(row_json(data, r, select)))
                .collect(),
        ),
    );
    if page.len() < ids.len()
        && let Some(last) = page.last()
    {
        let page_number = after.as_ref().map_or(1, |t| t.page) + 1;
        let cookie = kb::encode_skiptoken(
            page_number,
            &[SortVal::Int(snapshot)],
            &last.id,
            &fingerprint,
        )
        .replace("istracking=\"False\"", "istracking=\"True\"");
        body.insert(
            "@odata.nextLink".to_owned(),
            json!(link(ctx, set, query, &[("$skiptoken", &cookie)])),
        );
    } else {
        body.insert(
            "@odata.deltaLink".to_owned(),
            json!(link(
                ctx,
                set,
                query,
                &[("$deltatoken", &delta_token(snapshot, ctx.now))]
            )),
        );
    }
    let mut applied = vec!["odata.track-changes".to_owned()];
    if let Some(n) = prefer.max_page_size {
        applied.push(format!("odata.maxpagesize={n}"));
    }
    Ok(respond(body, &applied))
}

/// A delta link followed: rows changed since the token, then rows deleted since.
fn delta(
    env: &CrmEnv,
    ctx: &Ctx,
    data: &TableData,
    query: &Query,
    prefer: &Prefer,
    select: Option<&[String]>,
    raw: &str,
) -> Result<Answer, Answer> {
    let set = data.table.set_name();
    let expired = || {
        error(
            StatusCode::BAD_REQUEST,
            "0x80044352",
            "Version stamp associated with the client has expired. Please perform a full sync.",
        )
    };
    let (since, issued) = parse_delta_token(raw).ok_or_else(expired)?;
    if since < data.token_floor
        || since > env.version
        || ctx.now - issued > CHANGE_RETENTION_DAYS * 86_400
    {
        return Err(expired());
    }
    // Changes in version order: rows by their current version, then tombstones.
    let mut changes: Vec<(i64, Option<&DynRecord>, &str)> = data
        .rows
        .values()
        .filter(|r| r.version_number > since)
        .map(|r| (r.version_number, Some(r), r.id.as_str()))
        .chain(
            data.tombstones
                .iter()
                .filter(|t| t.version > since)
                .map(|t| (t.version, None, t.id.as_str())),
        )
        .collect();
    changes.sort_by_key(|(v, _, _)| *v);
    let page_size = prefer.max_page_size.unwrap_or(MAX_PAGE_SIZE);
    let more = changes.len() > page_size;
    changes.truncate(page_size);
    let mut value = Vec::with_capacity(changes.len());
    // Rows first, then deletions, as Dataverse lists them.
    for (_, record, _) in &changes {
        if let Some(record) = record {
            value.push(Value::Object(row_json(data, record, select)));
        }
    }
    for (_, record, id) in &changes {
        if record.is_none() {
            value.push(json!({
                "@odata.context": format!("{}/$metadata#{set}/$deletedEntity", ctx.base),
                "id": id,
                "reason": "deleted",
            }));
        }
    }
    let mut body = Map::new();
    body.insert(
        "@odata.context".to_owned(),
        json!(format!(
            "{}/$metadata#{set}{}/$delta",
            ctx.base,
            context_select(select)
        )),
    );
    body.insert("value".to_owned(), Value::Array(value));
    let (name, upto) = match (more, changes.last()) {
        (true, Some((v, _, _))) => ("@odata.nextLink", *v),
        _ => ("@odata.deltaLink", env.version),
    };
    body.insert(
        name.to_owned(),
        json!(link(
            ctx,
            set,
            query,
            &[("$deltatoken", &delta_token(upto, ctx.now))]
        )),
    );
    let mut applied = vec!["odata.track-changes".to_owned()];
    if let Some(n) = prefer.max_page_size {
        applied.push(format!("odata.maxpagesize={n}"));
    }
    Ok(respond(body, &applied))
}

/// `GET contacts({id})`.
pub(super) fn get(
    env: &CrmEnv,
    ctx: &Ctx,
    table: DynTable,
    segment: &str,
    req: &ProviderRequest,
) -> Answer {
    let run = || -> Result<Answer, Answer> {
        let id = key_of(table, segment)?;
        let query = Query::parse_with(req, &["$select"]).map_err(from_response)?;
        let data = env.table(table);
        let select = select(data, query.get("$select"))?;
        let record = data.rows.get(&id).ok_or_else(|| missing(table, &id))?;
        // Conditional retrieval: the client's etag is still current.
        let current = format!("W/\"{}\"", record.version_number);
        if crate::wire::header(&req.headers, "if-none-match") == Some(current.as_str()) {
            return Ok(Answer::empty(StatusCode::NOT_MODIFIED));
        }
        Ok(Answer::json(
            StatusCode::OK,
            entity_json(ctx, data, record, select.as_deref()),
        ))
    };
    match run() {
        Ok(answer) | Err(answer) => answer,
    }
}

/// A single row with its `…/$entity` context.
pub(super) fn entity_json(
    ctx: &Ctx,
    data: &TableData,
    record: &DynRecord,
    select: Option<&[String]>,
) -> Value {
    let mut object = Map::new();
    object.insert(
        "@odata.context".to_owned(),
        json!(format!(
            "{}/$metadata#{}{}/$entity",
            ctx.base,
            data.table.set_name(),
            context_select(select)
        )),
    );
    object.extend(row_json(data, record, select));
    Value::Object(object)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn delta_tokens_round_trip() {
        let token = delta_token(1_000_123, 1_704_067_200);
        assert_eq!(token, "1000123!01/01/2024 00:00:00");
        assert_eq!(parse_delta_token(&token), Some((1_000_123, 1_704_067_200)));
        assert_eq!(parse_delta_token("garbage"), None);
        assert_eq!(parse_delta_token("12!2024-01-01"), None);
    }
}

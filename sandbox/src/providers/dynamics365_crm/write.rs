//! Writes: `POST contacts`, `PATCH contacts({id})` (update or upsert), `DELETE`, their
//! validation, and deterministic seeding.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::super::ProviderRequest;
use super::super::dynamics365_kb::{self as kb, Kind, Query};
use super::query::{entity_json, kind_of, select};
use super::{
    Answer, CrmEnv, Ctx, DynRecord, DynTable, Prefer, error, from_response, key_of, missing, syntax,
};
use crate::wire;

/// Whether a body is for a create or an update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Create,
    Update,
}

/// Navigation properties that `@odata.bind` sets: `(table, nav) → (lookup, target)`.
fn navigation(table: DynTable, nav: &str) -> Option<(&'static str, DynTable)> {
    match (table, nav) {
        (DynTable::Contact, "parentcustomerid_account") => {
            Some(("parentcustomerid", DynTable::Account))
        }
        (DynTable::Contact, "parentcustomerid_contact") => {
            Some(("parentcustomerid", DynTable::Contact))
        }
        (DynTable::Account, "primarycontactid") => Some(("primarycontactid", DynTable::Contact)),
        (DynTable::Account, "parentaccountid") => Some(("parentaccountid", DynTable::Account)),
        (DynTable::Opportunity, "parentaccountid") => Some(("parentaccountid", DynTable::Account)),
        (DynTable::Opportunity, "parentcontactid") => Some(("parentcontactid", DynTable::Contact)),
        _ => None,
    }
}

/// A new row's `statecode`/`statuscode`.
pub(super) fn default_values() -> BTreeMap<String, Value> {
    BTreeMap::from([
        ("statecode".to_owned(), json!(0)),
        ("statuscode".to_owned(), json!(1)),
    ])
}

/// Columns derived from others: a contact's `fullname`.
pub(super) fn derive(table: DynTable, record: &mut DynRecord) {
    if table == DynTable::Contact {
        let name: Vec<&str> = ["firstname", "lastname"]
            .iter()
            .filter_map(|c| record.values.get(*c).and_then(Value::as_str))
            .filter(|s| !s.is_empty())
            .collect();
        if name.is_empty() {
            record.values.remove("fullname");
        } else {
            record
                .values
                .insert("fullname".to_owned(), json!(name.join(" ")));
        }
    }
}

/// Dataverse's 400 for a body it cannot read as the entity (`0x80048d19`, the OData
/// reader's message as the inner exception).
fn payload_error(table: DynTable, inner: &str) -> Answer {
    error(
        StatusCode::BAD_REQUEST,
        "0x80048d19",
        &format!(
            "Error identified in Payload provided by the user for Entity :'{}', For more information on this error please follow this help link https://go.microsoft.com/fwlink/?linkid=2195293  ----> InnerException : Microsoft.OData.ODataException: {inner}",
            table.set_name()
        ),
    )
}

/// The request body as a JSON object.
fn body_object(table: DynTable, req: &ProviderRequest) -> Result<Map<String, Value>, Answer> {
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(payload_error(
            table,
            "A node of type 'PrimitiveValue' was read from the JSON reader when trying to read the start of an entry. A 'StartObject' node was expected.",
        )),
        Err(_) => Err(payload_error(
            table,
            "Invalid JSON. A token was not recognized in the JSON content.",
        )),
    }
}

/// Duplicate detection (`MSCRM.SuppressDuplicateDetection: false`) with Dataverse's
/// default rules: contacts and accounts with the same email, accounts with the same name.
fn duplicate_detected(env: &CrmEnv, table: DynTable, record: &DynRecord) -> bool {
    let columns: &[&str] = match table {
        DynTable::Contact => &["emailaddress1"],
        DynTable::Account => &["emailaddress1", "name"],
        // No default duplicate rule covers opportunities.
        DynTable::Opportunity => &[],
    };
    env.table(table).rows.values().any(|other| {
        other.id != record.id
            && columns
                .iter()
                .any(|c| match (record.text(c), other.text(c)) {
                    (Some(a), Some(b)) => {
                        !a.trim().is_empty() && a.trim().eq_ignore_ascii_case(b.trim())
                    }
                    _ => false,
                })
    })
}

fn detect_duplicates(req: &ProviderRequest) -> bool {
    wire::header(&req.headers, "mscrm.suppressduplicatedetection")
        .is_some_and(|v| v.eq_ignore_ascii_case("false"))
}

fn duplicate_found() -> Answer {
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "0x80040333",
        "A record was not created or updated because a duplicate of the current record already exists.",
    )
}

/// The id an `@odata.bind` value names in `target`'s set, or a `$n` reference.
fn bind_target(
    env: &CrmEnv,
    ctx: &Ctx,
    target: DynTable,
    raw: &str,
    refs: &BTreeMap<String, (DynTable, String)>,
) -> Result<String, Answer> {
    let invalid = || {
        syntax(&format!(
            "The value '{raw}' is not a valid entity reference for '{}'.",
            target.set_name()
        ))
    };
    if let Some((table, id)) = refs.get(raw) {
        return if *table == target {
            Ok(id.clone())
        } else {
            Err(invalid())
        };
    }
    if raw.starts_with('$') {
        return Err(super::batch::unknown_reference(raw));
    }
    let path = raw.strip_prefix(ctx.base.as_str()).unwrap_or(raw);
    let path = path.trim_start_matches('/');
    let path = match kb::split_path(&format!("/{path}")) {
        Some((_, segment)) => segment.to_owned(),
        None => path.to_owned(),
    };
    let (set, _) = path.split_once('(').ok_or_else(invalid)?;
    if set != target.set_name() {
        return Err(invalid());
    }
    let id = key_of(target, &path)?;
    if !env.table(target).rows.contains_key(&id) {
        return Err(missing(target, &id));
    }
    Ok(id)
}

/// Checks a body against the table's columns; the changes to apply (`None`: clear).
fn changes(
    env: &CrmEnv,
    ctx: &Ctx,
    table: DynTable,
    body: &Map<String, Value>,
    mode: Mode,
    refs: &BTreeMap<String, (DynTable, String)>,
) -> Result<Vec<(String, Option<Value>)>, Answer> {
    let data = env.table(table);
    let type_name = format!("Microsoft.Dynamics.CRM.{}", table.logical_name());
    let mut out = Vec::new();
    for (key, value) in body {
        if key.starts_with('@') {
            continue;
        }
        if let Some(nav) = key.strip_suffix("@odata.bind") {
            let Some((lookup, target)) = navigation(table, nav) else {
                return Err(payload_error(
                    table,
                    &format!(
                        "An undeclared property '{nav}' which only has property annotations in the payload but no property value was found in the payload. In OData, only declared navigation properties and declared named streams can be represented as properties without values."
                    ),
                ));
            };
            // Microsoft: "To disassociate, set the value to null."
            if value.is_null() {
                out.push((lookup.to_owned(), None));
                continue;
            }
            let Some(raw) = value.as_str() else {
                return Err(syntax(&format!(
                    "The value of the '{key}' annotation must be a string with an entity URI."
                )));
            };
            let id = bind_target(env, ctx, target, raw, refs)?;
            out.push((lookup.to_owned(), Some(json!(id))));
            continue;
        }
        let attr = data
            .attr(key)
            .filter(|a| !a.is_lookup())
            .ok_or_else(|| {
                payload_error(table, &format!(
                    "The property '{key}' does not exist on type '{type_name}'. Make sure to only use property names that are defined by the type or mark the type as open type."
                ))
            })?;
        let allowed = match mode {
            Mode::Create => attr.is_valid_for_create,
            Mode::Update => attr.is_valid_for_update,
        };
        if !allowed {
            // Sandbox wording.
            let op = if mode == Mode::Create {
                "create"
            } else {
                "update"
            };
            return Err(error(
                StatusCode::BAD_REQUEST,
                "0x80040203",
                &format!(
                    "The '{key}' attribute of the '{}' entity is not valid for {op}.",
                    table.logical_name()
                ),
            ));
        }
        if let Some(checked) = typed_column(table, attr, value)? {
            out.push((key.clone(), checked));
            continue;
        }
        let kind = kind_of(&attr.attribute_type);
        let wrong = |edm: &str| {
            payload_error(
                table,
                &format!(
                    "Cannot convert a primitive value to the expected type '{edm}'. See the inner exception for more details."
                ),
            )
        };
        match (kind, value) {
            (_, Value::Null) => {}
            (Kind::Text, Value::String(s)) => {
                if let Some(max) = attr.max_length
                    && s.chars().count() > max as usize
                {
                    return Err(error(
                        StatusCode::BAD_REQUEST,
                        "0x80044331",
                        &format!(
                            "A validation error occurred.  The length of the '{key}' attribute of the '{}' entity exceeded the maximum allowed length of '{max}'.",
                            table.logical_name()
                        ),
                    ));
                }
            }
            (Kind::Int, Value::Number(n)) if n.is_i64() => {}
            (Kind::Bool, Value::Bool(_)) => {}
            (Kind::Guid, Value::String(s)) if kb::is_guid(s) => {}
            (Kind::Date, Value::String(s)) if crate::clock::parse_datetime(s).is_some() => {}
            (kind, _) => return Err(wrong(kind.edm())),
        }
        let value = match (kind, value) {
            (Kind::Guid, Value::String(s)) => json!(s.to_ascii_lowercase()),
            _ => value.clone(),
        };
        out.push((key.clone(), (!value.is_null()).then_some(value)));
    }
    Ok(out)
}

/// Money, Picklist and date-only columns, checked and normalised (`None`: another type,
/// checked by the caller; `Some(None)`: cleared).
fn typed_column(
    table: DynTable,
    attr: &super::DynAttribute,
    value: &Value,
) -> Result<Option<Option<Value>>, Answer> {
    let key = attr.logical_name.as_str();
    let wrong = |edm: &str| {
        payload_error(
            table,
            &format!(
                "Cannot convert a primitive value to the expected type '{edm}'. See the inner exception for more details."
            ),
        )
    };
    let checked = match (attr.attribute_type.as_str(), value) {
        ("Money" | "Picklist", Value::Null) => None,
        ("DateTime", Value::Null) if attr.date_only => None,
        ("Money", Value::Number(n)) => {
            let amount = n.as_f64().unwrap_or(f64::MAX);
            if amount.abs() > MONEY_MAX {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "0x80044331",
                    &format!(
                        "A validation error occurred.  The value of '{key}' on record of type '{}' is outside the valid range.",
                        table.logical_name()
                    ),
                ));
            }
            // Dataverse keeps a currency's precision (2 here).
            let cents = (amount * 100.0).round() / 100.0;
            Some(if (cents - amount).abs() < f64::EPSILON {
                value.clone()
            } else {
                json!(cents)
            })
        }
        ("Money", _) => return Err(wrong("Edm.Decimal")),
        ("Picklist", Value::Number(n)) if n.is_i64() => {
            let v = n.as_i64().unwrap_or_default();
            if !attr.options.is_empty() && !attr.options.iter().any(|(o, _)| *o == v) {
                let accepted: Vec<String> =
                    attr.options.iter().map(|(o, _)| o.to_string()).collect();
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "0x8004431a",
                    &format!(
                        "A validation error occurred. The value {v} of '{key}' on record of type '{}' is outside the valid range. Accepted Values: {}",
                        table.logical_name(),
                        accepted.join(",")
                    ),
                ));
            }
            Some(value.clone())
        }
        ("Picklist", _) => return Err(wrong("Edm.Int32")),
        ("DateTime", Value::String(s)) if attr.date_only => {
            let day = s.get(..10).unwrap_or_default();
            let whole = s.len() == 10 || crate::clock::parse_datetime(s).is_some();
            if !whole || crate::clock::parse_date(day).is_none() {
                return Err(wrong("Edm.Date"));
            }
            Some(json!(day))
        }
        ("DateTime", _) if attr.date_only => return Err(wrong("Edm.Date")),
        _ => return Ok(None),
    };
    Ok(Some(checked))
}

/// The largest Money value Dataverse takes.
const MONEY_MAX: f64 = 922_337_203_685_477.0;

/// A value set through a knob ([`SandboxState::dyn_crm_update`]) as the column's JSON
/// type: text of a number becomes the number for numeric, Money and Picklist columns.
pub(super) fn typed_for_knob(attr: Option<&super::DynAttribute>, value: Value) -> Value {
    let numeric = attr.is_some_and(|a| {
        matches!(
            a.attribute_type.as_str(),
            "Integer" | "BigInt" | "Picklist" | "Money" | "Decimal" | "Double"
        )
    });
    match &value {
        Value::String(s) if numeric => s
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| s.parse::<f64>().map(|f| json!(f)))
            .unwrap_or(value),
        _ => value,
    }
}

/// An opportunity's state: Open (0) by `PATCH`; Won (1) and Lost (2) only through the
/// `WinOpportunity` / `LoseOpportunity` actions (not served here).
fn opportunity_state(
    record: &mut DynRecord,
    state_set: bool,
    status_set: bool,
) -> Result<(), Answer> {
    let state = record
        .values
        .get("statecode")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if state_set && state != 0 {
        let (word, action) = if state == 1 {
            ("Won", "WinOpportunityRequest")
        } else {
            ("Lost", "LoseOpportunityRequest")
        };
        return Err(error(
            StatusCode::BAD_REQUEST,
            "0x80040203",
            &format!(
                "This message can not be used to set the state of opportunity to {word}. In order to set state of opportunity to {word} use the {action} message instead."
            ),
        ));
    }
    if state_set && !status_set {
        record.values.insert("statuscode".to_owned(), json!(1));
    }
    let status = record
        .values
        .get("statuscode")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let allowed: &[i64] = match state {
        0 => &[1, 2],
        1 => &[3],
        _ => &[4, 5],
    };
    if !allowed.contains(&status) {
        // Sandbox wording.
        return Err(error(
            StatusCode::BAD_REQUEST,
            "0x80040203",
            &format!("{status} is not a valid status code for state code {state} of opportunity."),
        ));
    }
    Ok(())
}

/// Applies changes, keeping `statecode`/`statuscode` consistent.
fn apply(
    table: DynTable,
    record: &mut DynRecord,
    changes: Vec<(String, Option<Value>)>,
) -> Result<(), Answer> {
    let mut state_set = false;
    let mut status_set = false;
    for (column, value) in changes {
        if column == table.key() {
            continue;
        }
        state_set |= column == "statecode";
        status_set |= column == "statuscode";
        match value {
            Some(v) => {
                record.values.insert(column, v);
            }
            None => {
                record.values.remove(&column);
            }
        }
    }
    if table == DynTable::Opportunity {
        return opportunity_state(record, state_set, status_set);
    }
    let state = record
        .values
        .get("statecode")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    if !(0..=1).contains(&state) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "0x80040203",
            &format!(
                "{state} is not a valid state code on {}.",
                table.logical_name()
            ),
        ));
    }
    if state_set && !status_set {
        record
            .values
            .insert("statuscode".to_owned(), json!(state + 1));
    }
    let status = record
        .values
        .get("statuscode")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    if status != state + 1 {
        // Dataverse's InvalidStateCodeStatusCode error; sandbox wording.
        return Err(error(
            StatusCode::BAD_REQUEST,
            "0x80040203",
            &format!(
                "{status} is not a valid status code for state code {}State.{}.",
                table.logical_name(),
                if state == 0 { "Active" } else { "Inactive" }
            ),
        ));
    }
    derive(table, record);
    Ok(())
}

/// The answer to a successful create or update.
fn written(
    env: &CrmEnv,
    ctx: &Ctx,
    table: DynTable,
    id: &str,
    created: bool,
    req: &ProviderRequest,
) -> Answer {
    let entity_id = format!("{}/{}({id})", ctx.base, table.set_name());
    let prefer = Prefer::parse(&req.headers);
    let data = env.table(table);
    if prefer.return_representation
        && let Some(record) = data.rows.get(id)
    {
        let select = match Query::parse_with(req, &["$select"]) {
            Ok(query) => match select(data, query.get("$select")) {
                Ok(select) => select,
                Err(answer) => return answer,
            },
            Err(response) => return from_response(response),
        };
        let status = if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        // Microsoft: with a representation, no `OData-EntityId`.
        return Answer::json(status, entity_json(ctx, data, record, select.as_deref()))
            .with("Preference-Applied", "return=representation");
    }
    let answer = Answer::empty(StatusCode::NO_CONTENT);
    if created || req.method == axum::http::Method::POST {
        answer.with("OData-EntityId", entity_id)
    } else {
        answer
    }
}

/// Creates a row with `id` (or a new one) from checked changes.
fn insert(
    env: &mut CrmEnv,
    ctx: &Ctx,
    table: DynTable,
    id: Option<String>,
    changes: Vec<(String, Option<Value>)>,
    dedupe: bool,
) -> Result<String, Answer> {
    let from_body = changes
        .iter()
        .find(|(c, _)| c == table.key())
        .and_then(|(_, v)| v.as_ref().and_then(Value::as_str).map(str::to_owned));
    let id = match (id, from_body) {
        (Some(id), _) => id,
        (None, Some(id)) => id,
        (None, None) => env.new_id(),
    };
    if env.table(table).rows.contains_key(&id) {
        return Err(duplicate());
    }
    let mut record = DynRecord {
        id: id.clone(),
        values: default_values(),
        created_on: ctx.now,
        modified_on: ctx.now,
        version_number: 0,
    };
    apply(table, &mut record, changes)?;
    if table == DynTable::Opportunity && record.text("name").is_none_or(|n| n.trim().is_empty()) {
        // The Topic is required (stricter than Dataverse, whose API leaves
        // `ApplicationRequired` to forms); sandbox wording.
        return Err(error(
            StatusCode::BAD_REQUEST,
            "0x80040200",
            "A validation error occurred. The 'name' attribute of the 'opportunity' entity is required.",
        ));
    }
    if dedupe && duplicate_detected(env, table, &record) {
        return Err(duplicate_found());
    }
    record.version_number = env.bump();
    env.put(table, record);
    Ok(id)
}

fn duplicate() -> Answer {
    error(
        StatusCode::PRECONDITION_FAILED,
        "0x80040237",
        "A record with matching key values already exists.",
    )
}

/// `POST contacts`.
pub(super) fn create(
    env: &mut CrmEnv,
    ctx: &Ctx,
    table: DynTable,
    req: &ProviderRequest,
    refs: &BTreeMap<String, (DynTable, String)>,
) -> Answer {
    let run = |env: &mut CrmEnv| -> Result<Answer, Answer> {
        let body = body_object(table, req)?;
        let changes = changes(env, ctx, table, &body, Mode::Create, refs)?;
        let id = insert(env, ctx, table, None, changes, detect_duplicates(req))?;
        Ok(written(env, ctx, table, &id, true, req))
    };
    match run(env) {
        Ok(answer) | Err(answer) => answer,
    }
}

/// The `If-Match` / `If-None-Match` conditions of a write.
fn precondition(
    req: &ProviderRequest,
    existing: Option<&DynRecord>,
    table: DynTable,
    id: &str,
) -> Result<(), Answer> {
    if let Some(tag) = wire::header(&req.headers, "if-match") {
        let Some(record) = existing else {
            return Err(missing(table, id));
        };
        if tag != "*"
            && tag.trim_start_matches("W/").trim_matches('"') != record.version_number.to_string()
        {
            return Err(error(
                StatusCode::PRECONDITION_FAILED,
                "0x80060882",
                "The version of the existing record doesn't match the RowVersion property provided.",
            ));
        }
    }
    if wire::header(&req.headers, "if-none-match") == Some("*") && existing.is_some() {
        return Err(duplicate());
    }
    Ok(())
}

/// `PATCH contacts({id})`: update, or create with that id (upsert) unless `If-Match`.
pub(super) fn update(
    env: &mut CrmEnv,
    ctx: &Ctx,
    table: DynTable,
    segment: &str,
    req: &ProviderRequest,
    refs: &BTreeMap<String, (DynTable, String)>,
) -> Answer {
    let run = |env: &mut CrmEnv| -> Result<Answer, Answer> {
        let id = key_of(table, segment)?;
        let body = body_object(table, req)?;
        let existing = env.table(table).rows.get(&id).cloned();
        precondition(req, existing.as_ref(), table, &id)?;
        match existing {
            None => {
                let changes = changes(env, ctx, table, &body, Mode::Create, refs)?;
                insert(
                    env,
                    ctx,
                    table,
                    Some(id.clone()),
                    changes,
                    detect_duplicates(req),
                )?;
                Ok(written(env, ctx, table, &id, true, req))
            }
            Some(mut record) => {
                let changes = changes(env, ctx, table, &body, Mode::Update, refs)?;
                apply(table, &mut record, changes)?;
                if detect_duplicates(req) && duplicate_detected(env, table, &record) {
                    return Err(duplicate_found());
                }
                record.modified_on = ctx.now;
                record.version_number = env.bump();
                env.put(table, record);
                Ok(written(env, ctx, table, &id, false, req))
            }
        }
    };
    match run(env) {
        Ok(answer) | Err(answer) => answer,
    }
}

/// `DELETE contacts({id})`.
pub(super) fn delete(
    env: &mut CrmEnv,
    table: DynTable,
    segment: &str,
    req: &ProviderRequest,
) -> Answer {
    let run = |env: &mut CrmEnv| -> Result<Answer, Answer> {
        let id = key_of(table, segment)?;
        let existing = env.table(table).rows.get(&id).cloned();
        let Some(existing) = existing else {
            return Err(missing(table, &id));
        };
        precondition(req, Some(&existing), table, &id)?;
        env.remove(table, &id);
        Ok(Answer::empty(StatusCode::NO_CONTENT))
    };
    match run(env) {
        Ok(answer) | Err(answer) => answer,
    }
}

/// `DELETE opportunities({id})/parentcontactid/$ref`: clears a single-valued navigation
/// property (Microsoft: "Remove a reference to a table row").
pub(super) fn delete_ref(
    env: &mut CrmEnv,
    ctx: &Ctx,
    table: DynTable,
    segment: &str,
    req: &ProviderRequest,
) -> Answer {
    let run = |env: &mut CrmEnv| -> Result<Answer, Answer> {
        let (keyed, nav) = segment
            .strip_suffix("/$ref")
            .and_then(|s| s.rsplit_once('/'))
            .ok_or_else(|| syntax("Bad Request - Error in query syntax."))?;
        let id = key_of(table, keyed)?;
        let Some((lookup, _)) = navigation(table, nav) else {
            return Err(syntax(&format!(
                "Resource not found for the segment '{nav}'."
            )));
        };
        let Some(mut record) = env.table(table).rows.get(&id).cloned() else {
            return Err(missing(table, &id));
        };
        precondition(req, Some(&record), table, &id)?;
        if record.values.remove(lookup).is_some() {
            record.modified_on = ctx.now;
            record.version_number = env.bump();
            env.put(table, record);
        }
        Ok(Answer::empty(StatusCode::NO_CONTENT))
    };
    match run(env) {
        Ok(answer) | Err(answer) => answer,
    }
}

// ---------------------------------------------------------------------------------------
// Seeding
// ---------------------------------------------------------------------------------------

const FIRST: [&str; 16] = [
    "Ada", "Ben", "Chloe", "Dev", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Kira",
    "Liam", "Maya", "Noor", "Oscar", "Priya",
];
const LAST: [&str; 16] = [
    "Lovelace", "Okafor", "Martin", "Patel", "Rossi", "Haddad", "Hopper", "Lambert", "Silva",
    "Berg", "Tanaka", "Murphy", "Cohen", "Rahman", "Nilsson", "Iyer",
];
const CITIES: [&str; 8] = [
    "Seattle", "London", "Berlin", "Paris", "Sydney", "Toronto", "Madrid", "Oslo",
];
const COUNTRIES: [&str; 8] = [
    "United States",
    "United Kingdom",
    "Germany",
    "France",
    "Australia",
    "Canada",
    "Spain",
    "Norway",
];
const WORDS: [&str; 16] = [
    "Contoso",
    "Fabrikam",
    "Northwind",
    "Tailspin",
    "Litware",
    "Adatum",
    "Proseware",
    "Wingtip",
    "Alpine",
    "Coho",
    "Lucerne",
    "Margie",
    "Trey",
    "Woodgrove",
    "Fourth",
    "Humongous",
];
const JOBS: [&str; 6] = [
    "Engineer",
    "Buyer",
    "Director",
    "Analyst",
    "Manager",
    "Consultant",
];

/// `n` deterministic rows of `table`, `modifiedon` increasing and ending before `now`.
pub(super) fn seed_rows(
    env: &mut CrmEnv,
    table: DynTable,
    n: usize,
    seed: u64,
    now: i64,
) -> Vec<DynRecord> {
    let span = 30 * 86_400_i64;
    let n_i = i64::try_from(n).unwrap_or(i64::MAX).max(1);
    let step = (span / n_i).max(1);
    let start = now - step * n_i - 60;
    // Values depend on the seed only (the same in every environment); ids do not.
    let salt = kb::mix(seed ^ (table as u64 + 1).wrapping_mul(0x9E37));
    let mut rows = Vec::with_capacity(n);
    for i in 0..n {
        let k = i as u64;
        let r = kb::mix(salt ^ k);
        let pick = |shift: u32, len: usize| ((r >> shift) as usize) % len;
        let modified = start + step * (i as i64 + 1);
        let created = modified - ((r >> 40) % 86_400) as i64;
        let mut values = default_values();
        let mut put = |c: &str, v: Value| {
            values.insert(c.to_owned(), v);
        };
        match table {
            DynTable::Contact => {
                let first = FIRST[pick(0, FIRST.len())];
                let last = LAST[pick(8, LAST.len())];
                put("firstname", json!(first));
                put("lastname", json!(last));
                put(
                    "emailaddress1",
                    json!(format!(
                        "{}.{}{i}@example.test",
                        first.to_ascii_lowercase(),
                        last.to_ascii_lowercase()
                    )),
                );
                put("telephone1", json!(format!("+1 555 {:04}", k % 10_000)));
                put("jobtitle", json!(JOBS[pick(16, JOBS.len())]));
                let c = pick(24, CITIES.len());
                put("address1_city", json!(CITIES[c]));
                put("address1_country", json!(COUNTRIES[c]));
            }
            DynTable::Account => {
                let a = WORDS[pick(0, WORDS.len())];
                let b = WORDS[pick(8, WORDS.len())];
                let name = format!("{a} {b} {i}");
                let domain = format!(
                    "{}-{}{i}.example",
                    a.to_ascii_lowercase(),
                    b.to_ascii_lowercase()
                );
                put("name", json!(name));
                put("accountnumber", json!(format!("ACC-{i:06}")));
                put("websiteurl", json!(format!("https://www.{domain}")));
                put("emailaddress1", json!(format!("info@{domain}")));
                put("telephone1", json!(format!("+1 555 {:04}", k % 10_000)));
                put("numberofemployees", json!(10 + (r >> 16) % 5_000));
                let c = pick(24, CITIES.len());
                put("address1_city", json!(CITIES[c]));
                put("address1_country", json!(COUNTRIES[c]));
            }
            DynTable::Opportunity => {
                let a = WORDS[pick(0, WORDS.len())];
                put("name", json!(format!("Deal {i}: {a} renewal")));
                put("estimatedvalue", json!(1_000 * (1 + (r >> 16) % 200)));
                let day = 1 + (r >> 24) % 28;
                put(
                    "estimatedclosedate",
                    json!(format!("2027-{:02}-{day:02}", 1 + (r >> 32) % 12)),
                );
                put("salesstage", json!((r >> 8) % 4));
                put("closeprobability", json!((r >> 40) % 101));
            }
        }
        let mut record = DynRecord {
            id: kb::guid(salt, k + 1),
            values,
            created_on: created,
            modified_on: modified,
            version_number: env.bump(),
        };
        derive(table, &mut record);
        rows.push(record);
    }
    rows
}

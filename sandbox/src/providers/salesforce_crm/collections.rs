//! sObject Collections (`/composite/sobjects`): create, update, upsert and delete up to
//! 200 records in one request, each record succeeding or failing on its own unless
//! `allOrNone` is true (then any failure rolls every change back and the others report
//! `ALL_OR_NONE_OPERATION_ROLLED_BACK`), and retrieve by ids. A value of the wrong JSON
//! type fails the whole request (400 `JSON_PARSER_ERROR`), as in Salesforce.

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::schema::{BadValue, RecordError, SfObject, coerce, normalize_id};
use super::store::{Org, WriteError};
use super::{COLLECTION_LIMIT, Handled, bad_request, body_object, field_list, json_parser_error};
use crate::providers::ProviderRequest;
use crate::state::SandboxState;
use crate::wire;

/// Most ids of one retrieve request.
const RETRIEVE_LIMIT: usize = 2000;

/// A record's result: its id and (upserts) whether it was created, or its id if known
/// and the error.
type Outcome = Result<(String, Option<bool>), (Option<String>, RecordError)>;

fn outcome_json(outcome: &Outcome) -> Value {
    match outcome {
        Ok((id, created)) => {
            let mut body = json!({"id": id, "success": true, "errors": []});
            if let Some(created) = created {
                body["created"] = json!(created);
            }
            body
        }
        Err((id, error)) => {
            let mut body = json!({"success": false, "errors": [error.collection_json()]});
            if let Some(id) = id {
                body["id"] = json!(id);
            }
            body
        }
    }
}

fn too_many() -> Response {
    bad_request(
        "EXCEEDED_ID_LIMIT",
        "record limit reached. cannot submit more than 200 records into this call",
    )
}

/// A write request's `allOrNone` and records.
struct Batch {
    all_or_none: bool,
    records: Vec<Map<String, Value>>,
}

fn flag(value: Option<&Value>) -> bool {
    match value {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

fn batch(req: &ProviderRequest) -> Result<Batch, Response> {
    let body = body_object(req)?;
    let Some(Value::Array(items)) = body.get("records") else {
        return Err(json_parser_error("records must be an array of sObjects"));
    };
    if items.len() > COLLECTION_LIMIT {
        return Err(too_many());
    }
    let records = items
        .iter()
        .map(|item| match item {
            Value::Object(map) => Ok(map.clone()),
            _ => Err(json_parser_error("each record must be a JSON object")),
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Batch {
        all_or_none: flag(body.get("allOrNone")),
        records,
    })
}

/// The record's `attributes.type`.
fn record_type(record: &Map<String, Value>) -> Option<SfObject> {
    record
        .get("attributes")?
        .get("type")?
        .as_str()
        .and_then(SfObject::parse)
}

fn record_id(record: &Map<String, Value>) -> Option<String> {
    record
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("Id"))
        .and_then(|(_, value)| value.as_str())
        .map(str::to_owned)
}

/// The first value of a record that cannot be read as its field's type.
fn parse_problem(object: SfObject, record: &Map<String, Value>) -> Option<String> {
    record.iter().find_map(|(name, value)| {
        let (_, field) = object.field(name)?;
        if !(field.createable || field.updateable) {
            return None;
        }
        match coerce(field, value) {
            Err(BadValue::Parse(message)) => Some(message),
            _ => None,
        }
    })
}

/// Runs `write` on each record under one stamp, journaled: a request-level error or (with
/// `allOrNone`) any record error rolls everything back.
fn run(
    state: &SandboxState,
    org: &str,
    batch: &Batch,
    kind: impl Fn(&Map<String, Value>) -> Option<SfObject>,
    mut write: impl FnMut(
        &mut Org,
        SfObject,
        &Map<String, Value>,
        i64,
    ) -> Result<(String, Option<bool>), WriteError>,
    keeps_id: bool,
) -> Handled {
    // Values of the wrong JSON type fail the request before anything is written.
    for record in &batch.records {
        if let Some(object) = kind(record)
            && let Some(message) = parse_problem(object, record)
        {
            return Err(json_parser_error(&message));
        }
    }
    let mut store = state.sf_store();
    let org = store.org(org);
    let stamp = org.stamp();
    org.begin();
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(batch.records.len());
    for record in &batch.records {
        let given_id = keeps_id.then(|| record_id(record)).flatten();
        let outcome = match kind(record) {
            None => Err((
                given_id,
                RecordError::new(
                    "INVALID_TYPE",
                    "Each record needs attributes.type naming a supported sObject type (Contact, Account, Opportunity)",
                ),
            )),
            Some(object) => match write(org, object, record, stamp) {
                Ok(done) => Ok(done),
                Err(WriteError::Record(error)) => Err((given_id, error)),
                Err(WriteError::Request(message)) => {
                    org.rollback();
                    return Err(json_parser_error(&message));
                }
            },
        };
        outcomes.push(outcome);
    }
    if batch.all_or_none && outcomes.iter().any(Result::is_err) {
        org.rollback();
        for outcome in &mut outcomes {
            if let Ok((id, _)) = outcome {
                let id = keeps_id.then(|| id.clone());
                *outcome = Err((
                    id,
                    RecordError::new(
                        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                        "Record rolled back because not all records were valid and the request was using AllOrNone header",
                    ),
                ));
            }
        }
    } else {
        org.commit();
    }
    let results: Vec<Value> = outcomes.iter().map(outcome_json).collect();
    Ok((StatusCode::OK, Some(Value::Array(results))))
}

/// `POST /composite/sobjects` `{allOrNone, records:[{attributes:{type}, …fields}]}`.
pub(super) fn create(state: &SandboxState, req: &ProviderRequest, org: &str) -> Handled {
    let batch = batch(req)?;
    run(
        state,
        org,
        &batch,
        record_type,
        |org, object, record, stamp| {
            if record_id(record).is_some() {
                return Err(RecordError::new(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    "cannot specify Id in an insert call",
                )
                .on("Id")
                .into());
            }
            org.create(object, record, stamp).map(|id| (id, None))
        },
        false,
    )
}

/// The record's type, or the object its `Id` belongs to.
fn type_or_id_prefix(record: &Map<String, Value>) -> Option<SfObject> {
    record_type(record).or_else(|| record_id(record).and_then(|id| SfObject::of_id(&id)))
}

/// `PATCH /composite/sobjects` `{allOrNone, records:[{attributes:{type}, Id, …}]}`.
pub(super) fn update(state: &SandboxState, req: &ProviderRequest, org: &str) -> Handled {
    let batch = batch(req)?;
    run(
        state,
        org,
        &batch,
        type_or_id_prefix,
        |org, object, record, stamp| {
            let id = record_id(record).ok_or_else(|| {
                RecordError::new("MISSING_ARGUMENT", "Id not specified in an update call")
            })?;
            org.update(object, &id, record, stamp).map(|id| (id, None))
        },
        true,
    )
}

/// Updates the record whose external id field `index` holds `value`, or creates one
/// holding it: `(id, created)`.
pub(super) fn upsert_one(
    org: &mut Org,
    object: SfObject,
    index: usize,
    value: &str,
    mut body: Map<String, Value>,
    stamp: i64,
) -> Result<(String, bool), WriteError> {
    let name = object.fields()[index].name;
    let named: Vec<String> = body
        .keys()
        .filter(|k| k.eq_ignore_ascii_case(name))
        .cloned()
        .collect();
    for key in named {
        if body.remove(&key).is_some_and(|v| v.as_str() != Some(value)) {
            return Err(RecordError::new(
                "INVALID_FIELD",
                format!("{name}: the body's value differs from the external id in the URL"),
            )
            .on(name)
            .into());
        }
    }
    let existing = org
        .table(object)
        .by_external(value)
        .map(|rec| rec.id.clone());
    match existing {
        Some(id) => org.update(object, &id, &body, stamp).map(|id| (id, false)),
        None => {
            body.insert(name.to_owned(), Value::String(value.to_owned()));
            org.create(object, &body, stamp).map(|id| (id, true))
        }
    }
}

/// `PATCH /composite/sobjects/{S}/{externalIdField}` `{allOrNone, records}`: each record
/// carries its external id value; results add `created`.
pub(super) fn upsert(
    state: &SandboxState,
    req: &ProviderRequest,
    org: &str,
    object: SfObject,
    field: &str,
) -> Handled {
    let index = super::external_field(object, field)?;
    let name = object.fields()[index].name;
    let batch = batch(req)?;
    run(
        state,
        org,
        &batch,
        |record| {
            record_type(record)
                .or(Some(object))
                .filter(|t| *t == object)
        },
        |org, object, record, stamp| {
            let value = record
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| v.as_str().map(str::to_owned))
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    RecordError::new("MISSING_ARGUMENT", format!("{name} not specified"))
                })?;
            let mut body = record.clone();
            body.remove("attributes");
            upsert_one(org, object, index, &value, body, stamp)
                .map(|(id, created)| (id, Some(created)))
        },
        false,
    )
}

/// A comma-separated query parameter.
fn list_param(req: &ProviderRequest, name: &str) -> Vec<String> {
    wire::query_param(req.query.as_deref(), name)
        .map(|list| {
            list.split(',')
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// `DELETE /composite/sobjects?ids=a,b&allOrNone=false`.
pub(super) fn delete(state: &SandboxState, req: &ProviderRequest, org: &str) -> Handled {
    let ids = list_param(req, "ids");
    if ids.is_empty() {
        return Err(bad_request("MISSING_ARGUMENT", "ids: no ids specified"));
    }
    if ids.len() > COLLECTION_LIMIT {
        return Err(too_many());
    }
    let all_or_none = wire::query_param(req.query.as_deref(), "allOrNone")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let records: Vec<Map<String, Value>> = ids
        .iter()
        .map(|id| {
            let mut record = Map::new();
            record.insert("Id".to_owned(), Value::String(id.clone()));
            record
        })
        .collect();
    let batch = Batch {
        all_or_none,
        records,
    };
    run(
        state,
        org,
        &batch,
        // Unknown prefixes still reach the writer, which reports them as malformed.
        |record| {
            Some(
                record_id(record)
                    .and_then(|id| SfObject::of_id(&id))
                    .unwrap_or(SfObject::Contact),
            )
        },
        |org, _, record, stamp| {
            let id = record_id(record).unwrap_or_default();
            let object = SfObject::of_id(&id)
                .ok_or_else(|| RecordError::new("MALFORMED_ID", format!("malformed id {id}")))?;
            org.delete(object, &id, stamp)
                .map(|id| (id, None))
                .map_err(WriteError::Record)
        },
        true,
    )
}

/// `GET /composite/sobjects/{S}?ids=&fields=` (or `POST` with `{ids, fields}`): the
/// records in `ids` order, null for ids with no live record.
pub(super) fn retrieve(
    state: &SandboxState,
    req: &ProviderRequest,
    org: &str,
    version: &str,
    object: SfObject,
) -> Handled {
    let (ids, fields) = if req.body.is_empty() {
        (list_param(req, "ids"), list_param(req, "fields"))
    } else {
        let body = body_object(req)?;
        let strings = |name: &str| -> Vec<String> {
            body.get(name)
                .and_then(Value::as_array)
                .map(|items| {
                    items
                        .iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default()
        };
        (strings("ids"), strings("fields"))
    };
    if ids.is_empty() || fields.is_empty() {
        return Err(bad_request(
            "MISSING_ARGUMENT",
            "ids and fields are both required",
        ));
    }
    if ids.len() > RETRIEVE_LIMIT {
        return Err(bad_request(
            "EXCEEDED_ID_LIMIT",
            "record limit reached. cannot retrieve more than 2000 records in this call",
        ));
    }
    let indices = field_list(object, Some(&fields.join(",")))?;
    let mut store = state.sf_store();
    let table = store.org(org).table(object);
    let records: Vec<Value> = ids
        .iter()
        .map(|id| {
            normalize_id(id)
                .and_then(|id| table.live(&id))
                .map_or(Value::Null, |rec| rec.to_json(object, &indices, version))
        })
        .collect();
    Ok((StatusCode::OK, Some(Value::Array(records))))
}

//! HubSpot associations v4 stand-in, for deals: a deal's companies and contacts, kept
//! per portal beside the records of [`super::hubspot_crm`], served at
//! `/crm/v4/associations/{fromObjectType}/{toObjectType}/batch/{read,create,archive}`
//! and `…/batch/associate/default`, as `crm-associations-v4.json` (the published spec)
//! describes them; creates through `POST /crm/v3/objects/deals[/batch/create]` may
//! carry `associations` too (checked here, applied with the record).
//!
//! - **Types**: deal → company `5` ("Primary") and `341` (unlabeled, the default),
//!   deal → contact `3` (unlabeled, the default), all `HUBSPOT_DEFINED`; any other
//!   category or type id is a 400 `VALIDATION_ERROR`. Creating the primary one also
//!   makes the unlabeled one, as HubSpot does.
//! - **Ids**: every from and to id must be a live record of its object: an unknown one
//!   fails the whole request with a 400 `VALIDATION_ERROR` naming it (nothing is
//!   applied). Associations to an archived record are not read back.
//! - **Read**: a deal without associations, or unknown, is listed in `errors` (207,
//!   `OBJECT_NOT_FOUND`), the others in `results`; ids are strings, a type without a
//!   label has no `label`. `batch/create` answers 201, `batch/associate/default` 200,
//!   `batch/archive` 204 (as the spec lists them; `contract/tests/hubspot.rs` checks the
//!   answers against it).
//! - **Scopes**: the spec accepts any of a long list of object scopes; the stand-in asks
//!   for the deals read scope to read and the deals write scope to write (what a deals
//!   integration holds).
//!
//! Not reproduced: from-object types other than deals (a 400), labels (`USER_DEFINED`
//! types, `/labels`), association limits per record (HubSpot caps a deal at 10,000
//! associations), paging of a record's associations (`after`: all are answered at
//! once), the high-usage report, and the single-record v4 routes.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::ProviderRequest;
use super::hubspot::{self, authorize, with_rate_headers};
use super::hubspot_crm::{CrmObject, rfc3339};
use crate::clock::now_ms;
use crate::state::SandboxState;
use crate::wire;

/// Route name of `POST /crm/v4/associations/{from}/{to}/batch/read`.
pub const ASSOC_READ: &str = "hubspot.assoc_read";
/// Route name of `POST /crm/v4/associations/{from}/{to}/batch/create` (and
/// `…/batch/associate/default`).
pub const ASSOC_CREATE: &str = "hubspot.assoc_create";
/// Route name of `POST /crm/v4/associations/{from}/{to}/batch/archive`.
pub const ASSOC_ARCHIVE: &str = "hubspot.assoc_archive";

/// Most inputs of one request.
pub const BATCH_LIMIT: usize = 1_000;

/// Deal → company, primary.
pub const DEAL_TO_PRIMARY_COMPANY: u64 = 5;
/// Deal → company, unlabeled (the default).
pub const DEAL_TO_COMPANY: u64 = 341;
/// Deal → contact, unlabeled (the default).
pub const DEAL_TO_CONTACT: u64 = 3;

/// An associations route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// `batch/read`.
    Read,
    /// `batch/create` with types.
    Create,
    /// `batch/associate/default`.
    Default,
    /// `batch/archive`.
    Archive,
}

impl Route {
    /// The route's counter name.
    pub fn name(self) -> &'static str {
        match self {
            Route::Read => ASSOC_READ,
            Route::Create | Route::Default => ASSOC_CREATE,
            Route::Archive => ASSOC_ARCHIVE,
        }
    }
}

/// The associations of a portal's deals: (portal, deal id) → (object, id) → type ids.
pub(crate) type Associations = BTreeMap<(u64, u64), BTreeMap<(CrmObject, u64), BTreeSet<u64>>>;

fn parts(path: &str) -> Option<(&str, &str, &str)> {
    let rest = path.strip_prefix("/crm/v4/associations/")?;
    let mut it = rest.trim_end_matches('/').splitn(3, '/');
    let from = it.next()?;
    let to = it.next()?;
    let op = it.next()?.strip_prefix("batch/")?;
    Some((from, to, op))
}

/// Matches an associations path.
pub(crate) fn route(method: &Method, path: &str) -> Option<Route> {
    if method != Method::POST {
        return None;
    }
    match parts(path)?.2 {
        "read" => Some(Route::Read),
        "create" => Some(Route::Create),
        "associate/default" => Some(Route::Default),
        "archive" => Some(Route::Archive),
        _ => None,
    }
}

fn error(status: StatusCode, message: &str, category: &str) -> Response {
    hubspot::error_body(status, message, category)
}

fn validation(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, message, "VALIDATION_ERROR")
}

/// The type ids HubSpot defines from deals to `to`, and the default one.
fn types_to(to: CrmObject) -> (&'static [u64], u64) {
    match to {
        CrmObject::Companies => (&[DEAL_TO_PRIMARY_COMPANY, DEAL_TO_COMPANY], DEAL_TO_COMPANY),
        _ => (&[DEAL_TO_CONTACT], DEAL_TO_CONTACT),
    }
}

fn label(type_id: u64) -> Value {
    if type_id == DEAL_TO_PRIMARY_COMPANY {
        json!("Primary")
    } else {
        Value::Null
    }
}

fn object_id(v: Option<&Value>) -> Option<u64> {
    match v?.get("id")? {
        Value::String(s) => s.trim().parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// Serves an associations route.
pub(crate) fn handle(route: Route, state: &SandboxState, req: &ProviderRequest) -> Response {
    let authorized = match authorize(state, req) {
        Ok(a) => a,
        Err(response) => return response,
    };
    let portal = authorized.principal.portal_id();
    let response =
        serve(route, state, portal, &authorized.principal, req).unwrap_or_else(|response| response);
    with_rate_headers(response, &authorized.usage)
}

#[allow(clippy::result_large_err)] // The error is the finished response.
fn serve(
    route: Route,
    state: &SandboxState,
    portal: u64,
    principal: &hubspot::Principal,
    req: &ProviderRequest,
) -> Result<Response, Response> {
    let (from, to, _) = parts(&req.path).unwrap_or_default();
    let from_object = CrmObject::parse(from).ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            &format!("Unable to infer object type from: {from}"),
            "OBJECT_NOT_FOUND",
        )
    })?;
    let to_object = CrmObject::parse(to).ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            &format!("Unable to infer object type from: {to}"),
            "OBJECT_NOT_FOUND",
        )
    })?;
    if from_object != CrmObject::Deals || to_object == CrmObject::Deals {
        return Err(validation(&format!(
            "the stand-in keeps deal associations only, not {from} to {to}"
        )));
    }
    let scope = match route {
        Route::Read => "crm.objects.deals.read",
        _ => "crm.objects.deals.write",
    };
    let required = vec![scope.to_owned()];
    if !principal.has_any_scope(&required) {
        return Err(hubspot::missing_scopes(&required));
    }
    let body: Map<String, Value> = match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(map)) => map,
        _ => {
            return Err(validation(
                "Invalid input JSON: expected an object with inputs",
            ));
        }
    };
    let inputs: Vec<Map<String, Value>> = match body.get("inputs") {
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_object().cloned())
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| validation("every input must be an object"))?,
        _ => return Err(validation("inputs is required")),
    };
    if inputs.len() > BATCH_LIMIT {
        return Err(validation(&format!(
            "Batch input limit is {BATCH_LIMIT}, got {}",
            inputs.len()
        )));
    }
    let started = rfc3339(now_ms());
    match route {
        Route::Read => {
            let store = state.crm_store();
            let mut results = Vec::new();
            let mut none = Vec::new();
            let mut unknown = Vec::new();
            for input in &inputs {
                let Some(id) = object_id(Some(&Value::Object(input.clone()))) else {
                    return Err(validation("every input needs an id"));
                };
                if !store.is_live(portal, CrmObject::Deals, id) {
                    unknown.push(id.to_string());
                    continue;
                }
                let to: Vec<Value> = store
                    .associations
                    .get(&(portal, id))
                    .into_iter()
                    .flatten()
                    .filter(|((object, to_id), _)| {
                        *object == to_object && store.is_live(portal, *object, *to_id)
                    })
                    .map(|((_, to_id), types)| {
                        json!({
                            "toObjectId": to_id.to_string(),
                            "associationTypes": types.iter().map(|t| json!({
                                "category": "HUBSPOT_DEFINED",
                                "typeId": t,
                                "label": label(*t),
                            }).as_object().map(|o| {
                                // A type without a label has no `label` (never null).
                                let mut o = o.clone();
                                o.retain(|_, v| !v.is_null());
                                Value::Object(o)
                            })).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                if to.is_empty() {
                    none.push(id.to_string());
                } else {
                    results.push(json!({"from": {"id": id.to_string()}, "to": to}));
                }
            }
            let mut answer = json!({
                "status": "COMPLETE",
                "results": results,
                "startedAt": started,
                "completedAt": rfc3339(now_ms()),
            });
            let mut errors = Vec::new();
            if !none.is_empty() {
                errors.push(json!({
                    "status": "error",
                    "category": "OBJECT_NOT_FOUND",
                    "message": format!("No {} is associated with deals {}.", to_object.as_str(), none.join(", ")),
                    "context": {"fromObjectId": none},
                    "links": {}, "errors": [],
                }));
            }
            if !unknown.is_empty() {
                errors.push(json!({
                    "status": "error",
                    "category": "OBJECT_NOT_FOUND",
                    "message": format!("Could not get some deals objects, they may be deleted or not exist: {}", unknown.join(", ")),
                    "context": {"ids": unknown},
                    "links": {}, "errors": [],
                }));
            }
            if errors.is_empty() {
                return Ok(wire::json(StatusCode::OK, answer));
            }
            answer["numErrors"] = json!(errors.len());
            answer["errors"] = json!(errors);
            Ok(wire::json(StatusCode::MULTI_STATUS, answer))
        }
        Route::Create | Route::Default => {
            let (allowed, default) = types_to(to_object);
            let mut pairs = Vec::with_capacity(inputs.len());
            for input in &inputs {
                let from_id = object_id(input.get("from"));
                let to_id = object_id(input.get("to"));
                let (Some(from_id), Some(to_id)) = (from_id, to_id) else {
                    return Err(validation("every input needs from.id and to.id"));
                };
                let types: Vec<u64> = if route == Route::Default {
                    vec![default]
                } else {
                    let specs = input
                        .get("types")
                        .and_then(Value::as_array)
                        .filter(|t| !t.is_empty())
                        .ok_or_else(|| validation("types is required"))?;
                    let mut out = Vec::new();
                    for spec in specs {
                        let category = spec.get("associationCategory").and_then(Value::as_str);
                        let id = spec.get("associationTypeId").and_then(Value::as_u64);
                        match (category, id) {
                            (Some("HUBSPOT_DEFINED"), Some(id)) if allowed.contains(&id) => {
                                out.push(id);
                            }
                            _ => {
                                return Err(validation(&format!(
                                    "invalid association type {spec} from deals to {}",
                                    to_object.as_str()
                                )));
                            }
                        }
                    }
                    out
                };
                pairs.push((from_id, to_id, types));
            }
            let mut store = state.crm_store();
            check_ids(
                &store,
                portal,
                to_object,
                pairs.iter().map(|(f, t, _)| (*f, *t)),
            )?;
            let mut results = Vec::new();
            for (from_id, to_id, types) in pairs {
                let entry = store
                    .associations
                    .entry((portal, from_id))
                    .or_default()
                    .entry((to_object, to_id))
                    .or_default();
                for t in &types {
                    entry.insert(*t);
                }
                // The primary association includes the unlabeled one.
                entry.insert(default);
                store.touch(portal, from_id, to_object, to_id, false);
                if route == Route::Default {
                    results.push(json!({
                        "from": {"id": from_id.to_string()},
                        "to": {"id": to_id.to_string()},
                        "associationSpec": {
                            "associationCategory": "HUBSPOT_DEFINED",
                            "associationTypeId": default,
                        },
                    }));
                    continue;
                }
                results.push(json!({
                    "fromObjectTypeId": "0-3",
                    "fromObjectId": from_id.to_string(),
                    "toObjectTypeId": if to_object == CrmObject::Companies { "0-2" } else { "0-1" },
                    "toObjectId": to_id.to_string(),
                    "labels": types.iter().filter(|t| **t == DEAL_TO_PRIMARY_COMPANY).map(|_| "Primary").collect::<Vec<_>>(),
                }));
            }
            // The default route answers 200, the typed one 201 (as the spec lists them).
            let status = if route == Route::Default {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok(wire::json(
                status,
                json!({
                    "status": "COMPLETE",
                    "results": results,
                    "startedAt": started,
                    "completedAt": rfc3339(now_ms()),
                }),
            ))
        }
        Route::Archive => {
            let mut pairs = Vec::new();
            for input in &inputs {
                let Some(from_id) = object_id(input.get("from")) else {
                    return Err(validation("every input needs from.id"));
                };
                let to = input
                    .get("to")
                    .and_then(Value::as_array)
                    .ok_or_else(|| validation("every input needs to: [{id}]"))?;
                for t in to {
                    let to_id =
                        object_id(Some(t)).ok_or_else(|| validation("to ids must be ids"))?;
                    pairs.push((from_id, to_id));
                }
            }
            let mut store = state.crm_store();
            for (from_id, to_id) in pairs {
                let removed = store
                    .associations
                    .get_mut(&(portal, from_id))
                    .and_then(|m| m.remove(&(to_object, to_id)))
                    .is_some();
                if removed {
                    store.touch(portal, from_id, to_object, to_id, true);
                }
            }
            Ok(StatusCode::NO_CONTENT.into_response())
        }
    }
}

/// Fails (the whole request) when a deal or a target is not a live record.
#[allow(clippy::result_large_err)] // The error is the finished response.
pub(crate) fn check_ids(
    store: &super::hubspot_crm::CrmStore,
    portal: u64,
    to: CrmObject,
    pairs: impl IntoIterator<Item = (u64, u64)>,
) -> Result<(), Response> {
    let mut bad = Vec::new();
    for (from_id, to_id) in pairs {
        if from_id != 0 && !store.is_live(portal, CrmObject::Deals, from_id) {
            bad.push(format!("deals {from_id}"));
        }
        if !store.is_live(portal, to, to_id) {
            bad.push(format!("{} {to_id}", to.as_str()));
        }
    }
    if bad.is_empty() {
        return Ok(());
    }
    Err(validation(&format!(
        "Some objects could not be found: {}",
        bad.join(", ")
    )))
}

/// The `associations` of a v3 create input: (object, id, type ids), checked.
#[allow(clippy::result_large_err)] // The error is the finished response.
pub(crate) fn create_associations(
    input: &Map<String, Value>,
) -> Result<Vec<(CrmObject, u64, Vec<u64>)>, Response> {
    let Some(list) = input.get("associations") else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or_else(|| validation("associations must be an array"))?;
    let mut out = Vec::new();
    for a in list {
        let to_id =
            object_id(a.get("to")).ok_or_else(|| validation("associations[].to.id is required"))?;
        let specs = a
            .get("types")
            .and_then(Value::as_array)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| validation("associations[].types is required"))?;
        let mut object = None;
        let mut types = Vec::new();
        for spec in specs {
            let category = spec.get("associationCategory").and_then(Value::as_str);
            let id = spec.get("associationTypeId").and_then(Value::as_u64);
            let to = match (category, id) {
                (Some("HUBSPOT_DEFINED"), Some(DEAL_TO_PRIMARY_COMPANY | DEAL_TO_COMPANY)) => {
                    CrmObject::Companies
                }
                (Some("HUBSPOT_DEFINED"), Some(DEAL_TO_CONTACT)) => CrmObject::Contacts,
                _ => {
                    return Err(validation(&format!(
                        "invalid association type {spec} for a deal"
                    )));
                }
            };
            if object.is_some_and(|o| o != to) {
                return Err(validation("one association's types name two object types"));
            }
            object = Some(to);
            types.extend(id);
        }
        if let Some(object) = object {
            out.push((object, to_id, types));
        }
    }
    Ok(out)
}

impl SandboxState {
    /// The live companies (or contacts) deal `deal` of `portal` is associated with.
    pub fn hubspot_deal_associations(&self, portal: u64, deal: &str, to: CrmObject) -> Vec<String> {
        let Ok(deal) = deal.trim().parse::<u64>() else {
            return Vec::new();
        };
        let store = self.crm_store();
        store
            .associations
            .get(&(portal, deal))
            .into_iter()
            .flatten()
            .filter(|((o, id), _)| *o == to && store.is_live(portal, *o, *id))
            .map(|((_, id), _)| id.to_string())
            .collect()
    }

    /// Associates deal `deal` with `to` record `id` (as a HubSpot user would), replacing
    /// the deal's other associations to that object; the deal's `updatedAt` moves.
    pub fn hubspot_set_deal_association(&self, portal: u64, deal: &str, to: CrmObject, id: &str) {
        let (Ok(deal), Ok(id)) = (deal.trim().parse::<u64>(), id.trim().parse::<u64>()) else {
            return;
        };
        let mut store = self.crm_store();
        let (_, default) = types_to(to);
        let map = store.associations.entry((portal, deal)).or_default();
        let before: Vec<u64> = map
            .keys()
            .filter(|(o, other)| *o == to && *other != id)
            .map(|(_, other)| *other)
            .collect();
        map.retain(|(o, _), _| *o != to);
        map.insert((to, id), BTreeSet::from([default]));
        for other in before {
            store.touch(portal, deal, to, other, true);
        }
        store.touch(portal, deal, to, id, false);
    }
}

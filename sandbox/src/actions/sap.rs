//! SAP C4C OData v2 actions under `{tenant}.crm.ondemand.com/sap/c4c/odata/v1/c4codataapi`:
//! the CSRF fetch (service root or `$metadata` with `x-csrf-token: Fetch`), service
//! requests (create, list, their description texts), text create, phone calls (create,
//! list).
//!
//! Auth: Basic of the tenant's technical user (401 with an HTML logon page). Writes also
//! need the CSRF token fetched in the same session and its `SAP_SESSIONID` cookie:
//! without → 403 `x-csrf-token: Required`. Errors are OData v2
//! `{"error":{"code","message":{"lang","value"}}}`. Unknown properties are refused.

use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Map, Value, json};

use super::{Ctx, Outcome, RouteDef, def, type_name};
use crate::actions::store::CsrfSession;
use crate::providers::ProviderRequest;
use crate::providers::sap::{self as host, SERVICE_ROOT, odata_error};
use crate::wire;

pub(crate) const ROUTES: &[RouteDef] = &[
    def(Method::GET, "", "sap.service_root", service_root),
    def(Method::GET, "/", "sap.service_root", service_root),
    def(Method::GET, "/$metadata", "sap.metadata", metadata),
    def(
        Method::POST,
        "/ServiceRequestCollection",
        "sap.service_request_create",
        create_ticket,
    ),
    def(
        Method::GET,
        "/ServiceRequestCollection",
        "sap.service_request_list",
        list_tickets,
    ),
    def(
        Method::GET,
        "/{}/ServiceRequestDescription",
        "sap.service_request_descriptions",
        descriptions,
    ),
    def(
        Method::POST,
        "/ServiceRequestTextCollectionCollection",
        "sap.service_request_text_create",
        create_text,
    ),
    def(
        Method::POST,
        "/PhoneCallCollection",
        "sap.phone_call_create",
        create_call,
    ),
    def(
        Method::GET,
        "/PhoneCallCollection",
        "sap.phone_call_list",
        list_calls,
    ),
];

const TICKETS: &str = "ServiceRequestCollection";
const CALLS: &str = "PhoneCallCollection";

/// The path under the OData service on an SAP tenant host.
pub(crate) fn api_path(req: &ProviderRequest) -> Option<String> {
    host::tenant(&req.host)?;
    req.path.strip_prefix(SERVICE_ROOT).map(str::to_owned)
}

fn authenticate(ctx: &Ctx<'_>) -> Result<(), Response> {
    host::authenticate(ctx.state, ctx.req)
        .map(|_| ())
        .ok_or_else(host::unauthorized)
}

/// The session cookie's name for a tenant.
fn cookie_name(ctx: &Ctx<'_>) -> String {
    let tenant = host::tenant(&ctx.req.host)
        .unwrap_or("")
        .to_ascii_uppercase();
    format!("SAP_SESSIONID_{tenant}_100")
}

/// Adds a fresh CSRF token and session cookie to a GET answer when the request asked
/// with `x-csrf-token: Fetch`.
fn with_csrf(ctx: &Ctx<'_>, mut response: Response) -> Response {
    let asked = ctx
        .header("x-csrf-token")
        .is_some_and(|v| v.eq_ignore_ascii_case("fetch"));
    if !asked {
        return response;
    }
    let token = base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 18]>());
    let session: String = crate::actions::random_hex(20);
    let name = cookie_name(ctx);
    ctx.state.dispatch_store().csrf.insert(
        token.clone(),
        CsrfSession {
            host: ctx.req.host.clone(),
            cookie: session.clone(),
        },
    );
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&token) {
        headers.insert("x-csrf-token", value);
    }
    if let Ok(value) = HeaderValue::from_str(&format!("{name}={session}; path=/; secure; HttpOnly"))
    {
        headers.append("set-cookie", value);
    }
    headers.append(
        "set-cookie",
        HeaderValue::from_static("sap-usercontext=sap-client=100; path=/"),
    );
    response
}

/// Checks the write's CSRF token and that its session cookie came with it.
fn check_csrf(ctx: &Ctx<'_>) -> Result<(), Response> {
    let Some(token) = ctx.header("x-csrf-token") else {
        return Err(host::csrf_required());
    };
    let session = ctx.state.dispatch_store().csrf.get(token).cloned();
    let Some(session) = session.filter(|s| s.host == ctx.req.host) else {
        return Err(host::csrf_required());
    };
    let name = cookie_name(ctx);
    let cookie_ok = ctx.req.headers.get_all("cookie").iter().any(|value| {
        value.to_str().is_ok_and(|text| {
            text.split(';').any(|pair| {
                pair.trim()
                    .split_once('=')
                    .is_some_and(|(k, v)| k == name && v == session.cookie)
            })
        })
    });
    if cookie_ok {
        Ok(())
    } else {
        Err(host::csrf_required())
    }
}

fn service_root(ctx: &Ctx<'_>) -> Outcome {
    if let Err(response) = authenticate(ctx) {
        return response.into();
    }
    let body =
        json!({"d": {"EntitySets": [TICKETS, "ServiceRequestTextCollectionCollection", CALLS]}});
    with_csrf(ctx, wire::json(StatusCode::OK, body)).into()
}

fn metadata(ctx: &Ctx<'_>) -> Outcome {
    if let Err(response) = authenticate(ctx) {
        return response.into();
    }
    let xml = r#"<?xml version="1.0" encoding="utf-8"?><edmx:Edmx Version="1.0" xmlns:edmx="http://schemas.microsoft.com/ado/2007/06/edmx"><edmx:DataServices m:DataServiceVersion="2.0" xmlns:m="http://schemas.microsoft.com/ado/2007/08/dataservices/metadata"><Schema Namespace="c4codata" xmlns="http://schemas.microsoft.com/ado/2008/09/edm"><EntityContainer Name="c4codataapi" m:IsDefaultEntityContainer="true"><EntitySet Name="ServiceRequestCollection" EntityType="c4codata.ServiceRequest"/><EntitySet Name="ServiceRequestTextCollectionCollection" EntityType="c4codata.ServiceRequestTextCollection"/><EntitySet Name="PhoneCallCollection" EntityType="c4codata.PhoneCall"/></EntityContainer></Schema></edmx:DataServices></edmx:Edmx>"#;
    let response = (StatusCode::OK, [("content-type", "application/xml")], xml).into_response();
    with_csrf(ctx, response).into()
}

/// `/Date(ms)/`, OData v2's JSON date-time.
fn odata_date(ms: i64) -> String {
    format!("/Date({ms})/")
}

fn object_id() -> String {
    format!(
        "00163E{}",
        crate::actions::random_hex(13).to_ascii_uppercase()
    )
}

fn invalid(message: &str) -> Response {
    odata_error(StatusCode::BAD_REQUEST, "/IWBEP/CM_MGW_RT/020", message)
}

/// The body as a JSON object whose keys are all in `known`.
fn object_body(ctx: &Ctx<'_>, known: &[&str]) -> Result<Map<String, Value>, Response> {
    let Ok(Value::Object(map)) = ctx.json() else {
        return Err(odata_error(
            StatusCode::BAD_REQUEST,
            "/IWBEP/CM_MGW_RT/004",
            "Malformed syntax in JSON request body",
        ));
    };
    if let Some(unknown) = map.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(invalid(&format!("Property '{unknown}' is invalid")));
    }
    Ok(map)
}

fn string(
    map: &Map<String, Value>,
    name: &str,
    max: usize,
    required: bool,
) -> Result<Option<String>, Response> {
    match map.get(name) {
        None | Some(Value::Null) if required => {
            Err(invalid(&format!("Property '{name}' is mandatory")))
        }
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if required && s.trim().is_empty() => {
            Err(invalid(&format!("Property '{name}' is mandatory")))
        }
        Some(Value::String(s)) if s.chars().count() > max => Err(invalid(&format!(
            "Value of property '{name}' exceeds the maximum length of {max}"
        ))),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(invalid(&format!(
            "Invalid value of type {} for property '{name}' of type Edm.String",
            type_name(other)
        ))),
    }
}

fn datetime(map: &Map<String, Value>, name: &str) -> Result<Option<i64>, Response> {
    match map.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => crate::clock::parse_datetime(s).map(Some).ok_or_else(|| {
            invalid(&format!(
                "Invalid value '{s}' for property '{name}' of type Edm.DateTimeOffset"
            ))
        }),
        Some(_) => Err(invalid(&format!(
            "Invalid value for property '{name}' of type Edm.DateTimeOffset"
        ))),
    }
}

/// Description text type codes the tenant knows.
const TEXT_TYPES: [&str; 4] = ["10004", "10007", "10008", "10011"];

fn text_entry(item: &Value, parent: &str, require_type: bool) -> Result<Value, Response> {
    let Value::Object(map) = item else {
        return Err(invalid("Each text must be an object"));
    };
    if let Some(unknown) = map
        .keys()
        .find(|k| !["TypeCode", "Text", "LanguageCode", "ParentObjectID"].contains(&k.as_str()))
    {
        return Err(invalid(&format!("Property '{unknown}' is invalid")));
    }
    let text = string(map, "Text", 1_000_000, true)?;
    let type_code = string(map, "TypeCode", 5, require_type)?;
    if let Some(code) = &type_code
        && !TEXT_TYPES.contains(&code.as_str())
    {
        return Err(invalid(&format!(
            "Value '{code}' of property 'TypeCode' is not in the code list"
        )));
    }
    Ok(json!({
        "ObjectID": object_id(),
        "ParentObjectID": parent,
        "TypeCode": type_code.unwrap_or_else(|| "10002".to_owned()),
        "Text": text,
        "LanguageCode": map.get("LanguageCode").cloned().unwrap_or(json!("EN")),
        "CreatedOn": odata_date(crate::clock::now_ms()),
    }))
}

fn entity_uri(ctx: &Ctx<'_>, set: &str, id: &str) -> String {
    format!("https://{}{SERVICE_ROOT}/{set}('{id}')", ctx.req.host)
}

fn created(ctx: &Ctx<'_>, set: &str, record: &Value) -> Response {
    let id = record["ObjectID"].as_str().unwrap_or_default();
    let uri = entity_uri(ctx, set, id);
    let mut results = record.clone();
    if let Some(map) = results.as_object_mut() {
        map.insert(
            "__metadata".into(),
            json!({"uri": uri, "type": format!("c4codata.{}", set.trim_end_matches("Collection"))}),
        );
    }
    let mut response = wire::json(StatusCode::CREATED, json!({"d": {"results": results}}));
    if let Ok(value) = HeaderValue::from_str(&uri) {
        response.headers_mut().insert("location", value);
    }
    response
}

const TICKET_FIELDS: [&str; 16] = [
    "Name",
    "ServicePriorityCode",
    "ProcessingTypeCode",
    "DataOriginTypeCode",
    "ReporterPartyID",
    "ReportedForPartyID",
    "ServiceIssueCategoryID",
    "IncidentServiceIssueCategoryID",
    "CauseServiceIssueCategoryID",
    "ActivityServiceIssueCategoryID",
    "ProductID",
    "ServiceRequestDescription",
    "ReporterEmail",
    "ReportedForEmail",
    "CustomerID",
    "ServiceRequestUserLifeCycleStatusCode",
];

fn create_ticket(ctx: &Ctx<'_>) -> Outcome {
    if let Err(response) = authenticate(ctx).and_then(|()| check_csrf(ctx)) {
        return response.into();
    }
    let map = match object_body(ctx, &TICKET_FIELDS) {
        Ok(map) => map,
        Err(response) => return response.into(),
    };
    match build_ticket(ctx, &map) {
        Ok(record) => {
            let id = record["ObjectID"].as_str().unwrap_or_default().to_owned();
            ctx.insert(TICKETS, &id, &record);
            Outcome::created(created(ctx, TICKETS, &record), record)
        }
        Err(response) => response.into(),
    }
}

fn build_ticket(ctx: &Ctx<'_>, map: &Map<String, Value>) -> Result<Value, Response> {
    let name = match map.get("Name") {
        Some(Value::Object(complex)) => string(complex, "content", 255, true)?,
        _ => string(map, "Name", 255, true)?,
    };
    let priority = string(map, "ServicePriorityCode", 1, false)?;
    if let Some(code) = &priority
        && !["1", "2", "3", "7"].contains(&code.as_str())
    {
        return Err(invalid(&format!(
            "Value '{code}' of property 'ServicePriorityCode' is not in the code list"
        )));
    }
    let processing = string(map, "ProcessingTypeCode", 4, false)?;
    for field in ["ReporterEmail", "ReportedForEmail"] {
        if let Some(email) = string(map, field, 255, false)?
            && !email.contains('@')
        {
            return Err(invalid(&format!(
                "Value of property '{field}' is not an e-mail address"
            )));
        }
    }
    let object = object_id();
    let descriptions = match map.get("ServiceRequestDescription") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| text_entry(item, &object, false))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => {
            return Err(invalid(
                "Property 'ServiceRequestDescription' must be a list",
            ));
        }
    };
    let now = odata_date(crate::clock::now_ms());
    let mut record = map.clone();
    record.insert("ObjectID".into(), json!(object));
    record.insert(
        "ID".into(),
        json!(ctx.next_number("service_request", 5197).to_string()),
    );
    record.insert("Name".into(), json!(name));
    record.insert(
        "ServicePriorityCode".into(),
        json!(priority.unwrap_or_else(|| "3".to_owned())),
    );
    record.insert(
        "ProcessingTypeCode".into(),
        json!(processing.unwrap_or_else(|| "SRRQ".to_owned())),
    );
    record.insert("ServiceRequestLifeCycleStatusCode".into(), json!("1"));
    record.insert("CreationDateTime".into(), json!(now));
    record.insert("LastChangeDateTime".into(), json!(now));
    record.insert(
        "ServiceRequestDescription".into(),
        Value::Array(descriptions),
    );
    Ok(Value::Object(record))
}

/// `$top`, `$orderby=LastChangeDateTime desc|asc`, `$filter=ObjectID eq '…'` and
/// `$expand={navigation}` over a collection.
fn query_collection(ctx: &Ctx<'_>, set: &str, navigation: &str) -> Response {
    let mut records = ctx.list(set);
    if let Some(filter) = ctx.query("$filter") {
        let Some(id) = filter
            .strip_prefix("ObjectID eq '")
            .and_then(|rest| rest.strip_suffix('\''))
        else {
            return invalid("The stand-in filters on ObjectID eq '…' only");
        };
        records.retain(|r| r["ObjectID"] == id);
    }
    match ctx.query("$orderby").as_deref().map(str::trim) {
        None => {}
        Some("LastChangeDateTime desc") => records.reverse(),
        Some("LastChangeDateTime" | "LastChangeDateTime asc") => {}
        Some(other) => return invalid(&format!("Invalid $orderby '{other}'")),
    }
    if let Some(top) = ctx.query("$top") {
        match top.parse::<usize>() {
            Ok(n) => records.truncate(n),
            Err(_) => return invalid(&format!("Invalid system query option $top '{top}'")),
        }
    }
    let expand = ctx.query("$expand");
    match expand.as_deref() {
        None => {}
        Some(e) if e == navigation => {}
        Some(other) => return invalid(&format!("Navigation property '{other}' not found")),
    }
    let results: Vec<Value> = records
        .into_iter()
        .map(|mut record| {
            let id = record["ObjectID"].as_str().unwrap_or_default().to_owned();
            let uri = entity_uri(ctx, set, &id);
            if let Some(map) = record.as_object_mut() {
                map.insert("__metadata".into(), json!({"uri": uri}));
                if expand.is_none() {
                    map.insert(
                        navigation.into(),
                        json!({"__deferred": {"uri": format!("{uri}/{navigation}")}}),
                    );
                }
            }
            record
        })
        .collect();
    wire::json(StatusCode::OK, json!({"d": {"results": results}}))
}

fn list_tickets(ctx: &Ctx<'_>) -> Outcome {
    if let Err(response) = authenticate(ctx) {
        return response.into();
    }
    with_csrf(
        ctx,
        query_collection(ctx, TICKETS, "ServiceRequestDescription"),
    )
    .into()
}

fn descriptions(ctx: &Ctx<'_>) -> Outcome {
    if let Err(response) = authenticate(ctx) {
        return response.into();
    }
    let key = ctx.param(0);
    let Some(id) = key
        .strip_prefix("ServiceRequestCollection('")
        .and_then(|rest| rest.strip_suffix("')"))
    else {
        return host::not_found().into();
    };
    match ctx.find(TICKETS, id) {
        Some(ticket) => wire::json(
            StatusCode::OK,
            json!({"d": {"results": ticket["ServiceRequestDescription"].clone()}}),
        )
        .into(),
        None => odata_error(
            StatusCode::NOT_FOUND,
            "/IWBEP/CM_MGW_RT/106",
            &format!("Resource not found for the segment 'ServiceRequestCollection('{id}')'"),
        )
        .into(),
    }
}

fn create_text(ctx: &Ctx<'_>) -> Outcome {
    if let Err(response) = authenticate(ctx).and_then(|()| check_csrf(ctx)) {
        return response.into();
    }
    let map = match object_body(ctx, &["ParentObjectID", "TypeCode", "Text", "LanguageCode"]) {
        Ok(map) => map,
        Err(response) => return response.into(),
    };
    let parent = match string(&map, "ParentObjectID", 70, true) {
        Ok(parent) => parent.unwrap_or_default(),
        Err(response) => return response.into(),
    };
    let Some(mut ticket) = ctx.find(TICKETS, &parent) else {
        return invalid(&format!("Parent object '{parent}' does not exist")).into();
    };
    let entry = match text_entry(&Value::Object(map), &parent, true) {
        Ok(entry) => entry,
        Err(response) => return response.into(),
    };
    if let Some(list) = ticket["ServiceRequestDescription"].as_array_mut() {
        list.push(entry.clone());
    }
    if let Some(map) = ticket.as_object_mut() {
        map.insert(
            "LastChangeDateTime".into(),
            json!(odata_date(crate::clock::now_ms())),
        );
    }
    ctx.replace(TICKETS, &parent, &ticket);
    Outcome::created(
        created(ctx, "ServiceRequestTextCollectionCollection", &entry),
        entry,
    )
}

const CALL_FIELDS: [&str; 14] = [
    "Subject",
    "Phone",
    "StartDateTime",
    "EndDateTime",
    "StartDateTimeZoneCode",
    "InitiatorCode",
    "Status",
    "Priority",
    "Category",
    "DocumentType",
    "MainAccountPartyID",
    "MainContactPartyID",
    "OwnerPartyID",
    "PhoneCallNotes",
];

fn create_call(ctx: &Ctx<'_>) -> Outcome {
    if let Err(response) = authenticate(ctx).and_then(|()| check_csrf(ctx)) {
        return response.into();
    }
    let map = match object_body(ctx, &CALL_FIELDS) {
        Ok(map) => map,
        Err(response) => return response.into(),
    };
    match build_call(ctx, &map) {
        Ok(record) => {
            let id = record["ObjectID"].as_str().unwrap_or_default().to_owned();
            ctx.insert(CALLS, &id, &record);
            Outcome::created(created(ctx, CALLS, &record), record)
        }
        Err(response) => response.into(),
    }
}

fn build_call(ctx: &Ctx<'_>, map: &Map<String, Value>) -> Result<Value, Response> {
    string(map, "Subject", 765, true)?;
    string(map, "Phone", 40, false)?;
    let start = datetime(map, "StartDateTime")?;
    let end = datetime(map, "EndDateTime")?;
    if let (Some(start), Some(end)) = (start, end)
        && end < start
    {
        return Err(invalid("EndDateTime is before StartDateTime"));
    }
    if let Some(code) = string(map, "InitiatorCode", 1, false)?
        && !["1", "2"].contains(&code.as_str())
    {
        return Err(invalid(&format!(
            "Value '{code}' of property 'InitiatorCode' is not in the code list"
        )));
    }
    let object = object_id();
    let notes = match map.get("PhoneCallNotes") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| text_entry(item, &object, false))
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(invalid("Property 'PhoneCallNotes' must be a list")),
    };
    let now = odata_date(crate::clock::now_ms());
    let mut record = map.clone();
    record.insert("ObjectID".into(), json!(object));
    record.insert(
        "ID".into(),
        json!(ctx.next_number("phone_call", 3001).to_string()),
    );
    record.insert("CreationDateTime".into(), json!(now));
    record.insert("LastChangeDateTime".into(), json!(now));
    record.insert("PhoneCallNotes".into(), Value::Array(notes));
    Ok(Value::Object(record))
}

fn list_calls(ctx: &Ctx<'_>) -> Outcome {
    if let Err(response) = authenticate(ctx) {
        return response.into();
    }
    with_csrf(ctx, query_collection(ctx, CALLS, "PhoneCallNotes")).into()
}

//! TechnologyOne CiAnywhere actions under
//! `{site}.t1cloud.com/T1Default/CiAnywhere/Web/{SITE}/Api` (every detail assumed: see
//! `sandbox/DISPATCH_STANDINS.md`): `GET /System/CurrentUser`, the web service that creates
//! customer requests (`POST /WS/v1/CustomerRequest`) and the RaaS report that finds one by
//! reference (`GET /RaaS/v1/CustomerRequestByReference?q=`).
//!
//! Auth: Basic of the site's integration user (user name case-insensitive) → 401. Other
//! service names → 404 (services are configured per tenant; the stand-in has these two).
//! Validation errors are 400 with the `Messages` envelope (`"Type": "Error"`).

use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::{Ctx, Outcome, RouteDef, def, type_name};
use crate::providers::ProviderRequest;
use crate::providers::technologyone::{self as host, error};
use crate::state::ProviderAccount;
use crate::wire;

pub(crate) const ROUTES: &[RouteDef] = &[
    def(
        Method::GET,
        "/System/CurrentUser",
        "technologyone.current_user",
        current_user,
    ),
    def(
        Method::POST,
        "/WS/v1/{}",
        "technologyone.ws_create",
        create_request,
    ),
    def(
        Method::GET,
        "/RaaS/v1/{}",
        "technologyone.raas_lookup",
        lookup,
    ),
];

/// The web service that creates customer requests.
pub const CREATE_SERVICE: &str = "CustomerRequest";
/// The report that finds a customer request by `ExternalReference`.
pub const LOOKUP_SERVICE: &str = "CustomerRequestByReference";

const REQUESTS: &str = "CustomerRequest";

/// The path under `…/Web/{SITE}/Api`; the site segment must name the host's site
/// (any case: public examples upper-case it).
pub(crate) fn api_path(req: &ProviderRequest) -> Option<String> {
    let site = host::site(&req.host)?;
    let rest = req.path.strip_prefix("/T1Default/CiAnywhere/Web/")?;
    let (segment, rest) = rest.split_once('/')?;
    if !segment.eq_ignore_ascii_case(site) {
        return None;
    }
    rest.strip_prefix("Api").map(str::to_owned)
}

fn current_user(ctx: &Ctx<'_>) -> Outcome {
    let Some(account) = host::authenticate(ctx.state, ctx.req) else {
        return host::unauthorized().into();
    };
    let user = match &account.provider {
        ProviderAccount::Technologyone { username, .. } => username.to_ascii_uppercase(),
        _ => String::new(),
    };
    wire::json(
        StatusCode::OK,
        json!({"UserId": user, "EmailAddress": account.email, "Name": account.name}),
    )
    .into()
}

fn invalid(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, message)
}

/// Fields of the default customer-request mapping, with their maximum lengths.
const FIELDS: [(&str, usize, bool); 8] = [
    ("RequestType", 20, true),
    ("Description", 4000, true),
    ("ContactName", 100, false),
    ("ContactPhone", 30, false),
    ("ContactEmail", 254, false),
    ("ExternalReference", 100, true),
    ("Notes", 4000, false),
    ("Location", 200, false),
];

fn validate(map: &Map<String, Value>) -> Result<(), Response> {
    if let Some(unknown) = map
        .keys()
        .find(|k| !FIELDS.iter().any(|(name, _, _)| name == k))
    {
        return Err(invalid(&format!(
            "Field '{unknown}' is not part of the service {CREATE_SERVICE}."
        )));
    }
    for (name, max, required) in FIELDS {
        match map.get(name) {
            None | Some(Value::Null) if required => {
                return Err(invalid(&format!("Field '{name}' is mandatory.")));
            }
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if required && s.trim().is_empty() => {
                return Err(invalid(&format!("Field '{name}' is mandatory.")));
            }
            Some(Value::String(s)) if s.chars().count() > max => {
                return Err(invalid(&format!(
                    "Field '{name}' is longer than {max} characters."
                )));
            }
            Some(Value::String(_)) => {}
            Some(other) => {
                return Err(invalid(&format!(
                    "Field '{name}' must be text, not {}.",
                    type_name(other)
                )));
            }
        }
    }
    Ok(())
}

fn create_request(ctx: &Ctx<'_>) -> Outcome {
    if host::authenticate(ctx.state, ctx.req).is_none() {
        return host::unauthorized().into();
    }
    if ctx.param(0) != CREATE_SERVICE {
        return host::not_found().into();
    }
    let Ok(Value::Object(map)) = ctx.json() else {
        return invalid("The request body is not a JSON object.").into();
    };
    if let Err(response) = validate(&map) {
        return response.into();
    }
    let number = format!("CR{:06}", ctx.next_number("request", 1001));
    let mut record = map;
    record.insert("RequestNumber".into(), json!(number));
    record.insert("Status".into(), json!("OPEN"));
    record.insert("CreatedDateTime".into(), json!(super::now_rfc3339()));
    let record = Value::Object(record);
    ctx.insert(REQUESTS, &number, &record);
    let answer = json!({"DataSet": [record], "Messages": [], "TotalRecordCount": 1});
    Outcome::created(wire::json(StatusCode::OK, answer), record)
}

fn lookup(ctx: &Ctx<'_>) -> Outcome {
    if host::authenticate(ctx.state, ctx.req).is_none() {
        return host::unauthorized().into();
    }
    if ctx.param(0) != LOOKUP_SERVICE {
        return host::not_found().into();
    }
    let Some(q) = ctx.query("q").filter(|q| !q.is_empty()) else {
        return invalid("Parameter 'q' is mandatory for this report.").into();
    };
    let found: Vec<Value> = ctx
        .list(REQUESTS)
        .into_iter()
        .filter(|r| r["ExternalReference"] == q.as_str())
        .collect();
    let total = found.len();
    wire::json(
        StatusCode::OK,
        json!({"DataSet": found, "Messages": [], "TotalRecordCount": total}),
    )
    .into()
}

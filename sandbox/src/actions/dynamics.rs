//! Dataverse Web API actions under `{org}.{region}.dynamics.com/api/data/v9.x`: create
//! `phonecalls`, `incidents`, `tasks`, `annotations` and `contacts` (201 with the record
//! under `Prefer: return=representation`, else 204 with `OData-EntityId`), and the `GET`
//! lookups with `$select`, `$filter` (`contains(col,'…')` and `col eq '…'`, joined by
//! `and`) and `$top`.
//!
//! Auth: a bearer token of the sandbox's Microsoft identity for this environment
//! (`{env}/user_impersonation` or `{env}/.default`) → 401 with an empty body. Errors are
//! `{"error":{"code","message"}}` with Dataverse's hex codes: unknown columns `0x0`,
//! lengths, option sets, required columns, `statecode` on create, `@odata.bind` to a
//! contact that does not exist (404 `0x80040217`), and a duplicate-detection hit on a
//! contact's email with `MSCRM.SuppressDuplicateDetection: false` (500 `0x80040333`).

use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use super::{Ctx, Outcome, RouteDef, def, now_rfc3339};
use crate::oauth::{self, AccessCheck, OAuthProvider};
use crate::providers::ProviderRequest;
use crate::providers::dynamics365::{self as host, web_api_error};
use crate::wire;

pub(crate) const ROUTES: &[RouteDef] = &[
    def(
        Method::POST,
        "/phonecalls",
        "dynamics365.phonecall_create",
        create_phonecall,
    ),
    def(
        Method::POST,
        "/incidents",
        "dynamics365.incident_create",
        create_incident,
    ),
    def(
        Method::POST,
        "/tasks",
        "dynamics365.task_create",
        create_task,
    ),
    def(
        Method::POST,
        "/annotations",
        "dynamics365.annotation_create",
        create_annotation,
    ),
    def(
        Method::POST,
        "/contacts",
        "dynamics365.contact_create",
        create_contact,
    ),
    def(
        Method::GET,
        "/phonecalls",
        "dynamics365.phonecalls_query",
        query_phonecalls,
    ),
    def(
        Method::GET,
        "/incidents",
        "dynamics365.incidents_query",
        query_incidents,
    ),
    def(
        Method::GET,
        "/tasks",
        "dynamics365.tasks_query",
        query_tasks,
    ),
    def(
        Method::GET,
        "/annotations",
        "dynamics365.annotations_query",
        query_annotations,
    ),
    def(
        Method::GET,
        "/contacts",
        "dynamics365.contacts_query",
        query_contacts,
    ),
];

/// A column's rule.
#[derive(Clone, Copy)]
enum Col {
    Text(usize),
    Bool,
    Int,
    Time,
    Options(&'static [i64]),
    /// `@odata.bind` to a contact.
    ContactBind,
    /// `@odata.bind` to a record the stand-in does not keep (not checked).
    Bind,
    Parties,
}

struct Table {
    set: &'static str,
    entity: &'static str,
    key: &'static str,
    columns: &'static [(&'static str, Col)],
    required: &'static [&'static str],
    /// Required, one of these.
    one_of: &'static [&'static str],
}

const PHONECALL: Table = Table {
    set: "phonecalls",
    entity: "phonecall",
    key: "activityid",
    columns: &[
        ("subject", Col::Text(200)),
        ("description", Col::Text(2000)),
        ("phonenumber", Col::Text(200)),
        ("directioncode", Col::Bool),
        ("actualstart", Col::Time),
        ("actualend", Col::Time),
        ("actualdurationminutes", Col::Int),
        ("prioritycode", Col::Options(&[0, 1, 2])),
        (
            "regardingobjectid_contact_phonecall@odata.bind",
            Col::ContactBind,
        ),
        ("regardingobjectid_incident_phonecall@odata.bind", Col::Bind),
        ("regardingobjectid_account_phonecall@odata.bind", Col::Bind),
        ("phonecall_activity_parties", Col::Parties),
        ("conduit_key", Col::Text(100)),
    ],
    required: &["subject"],
    one_of: &[],
};

const INCIDENT: Table = Table {
    set: "incidents",
    entity: "incident",
    key: "incidentid",
    columns: &[
        ("title", Col::Text(200)),
        ("description", Col::Text(2000)),
        (
            "caseorigincode",
            Col::Options(&[1, 2, 3, 2483, 3986, 700_610_000]),
        ),
        ("casetypecode", Col::Options(&[1, 2, 3])),
        ("prioritycode", Col::Options(&[1, 2, 3])),
        ("customerid_contact@odata.bind", Col::ContactBind),
        ("customerid_account@odata.bind", Col::Bind),
        ("conduit_key", Col::Text(100)),
    ],
    required: &["title"],
    one_of: &[
        "customerid_contact@odata.bind",
        "customerid_account@odata.bind",
    ],
};

const TASK: Table = Table {
    set: "tasks",
    entity: "task",
    key: "activityid",
    columns: &[
        ("subject", Col::Text(200)),
        ("description", Col::Text(2000)),
        ("scheduledend", Col::Time),
        ("scheduledstart", Col::Time),
        ("prioritycode", Col::Options(&[0, 1, 2])),
        (
            "regardingobjectid_contact_task@odata.bind",
            Col::ContactBind,
        ),
        ("regardingobjectid_incident_task@odata.bind", Col::Bind),
        ("conduit_key", Col::Text(100)),
    ],
    required: &["subject"],
    one_of: &[],
};

const ANNOTATION: Table = Table {
    set: "annotations",
    entity: "annotation",
    key: "annotationid",
    columns: &[
        ("subject", Col::Text(500)),
        ("notetext", Col::Text(100_000)),
        ("objectid_contact@odata.bind", Col::ContactBind),
        ("objectid_incident@odata.bind", Col::Bind),
        ("objectid_phonecall@odata.bind", Col::Bind),
    ],
    required: &[],
    one_of: &[
        "objectid_contact@odata.bind",
        "objectid_incident@odata.bind",
        "objectid_phonecall@odata.bind",
    ],
};

const CONTACT: Table = Table {
    set: "contacts",
    entity: "contact",
    key: "contactid",
    columns: &[
        ("firstname", Col::Text(50)),
        ("lastname", Col::Text(50)),
        ("emailaddress1", Col::Text(100)),
        ("telephone1", Col::Text(50)),
        ("mobilephone", Col::Text(50)),
        ("description", Col::Text(2000)),
    ],
    required: &["lastname"],
    one_of: &[],
};

/// The path under `/api/data/v9.x`.
pub(crate) fn api_path(req: &ProviderRequest) -> Option<String> {
    host::environment(&req.host)?;
    let rest = req.path.strip_prefix("/api/data/v9.")?;
    let (minor, rest) = rest.split_once('/')?;
    minor
        .bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| format!("/{rest}"))
}

fn authorize(ctx: &Ctx<'_>) -> Result<(), Response> {
    match oauth::bearer_access(
        ctx.state,
        OAuthProvider::Dynamics365,
        wire::bearer_token(&ctx.req.headers),
    ) {
        AccessCheck::Granted(grant) if host::audience_ok(&grant, &ctx.req.host) => Ok(()),
        _ => Err(host::unauthorized(&ctx.req.host)),
    }
}

fn bad(message: &str) -> Response {
    web_api_error(StatusCode::BAD_REQUEST, "0x0", message)
}

/// The guid of `/contacts(<guid>)`.
fn bound_id(value: &str, set: &str) -> Option<String> {
    value
        .strip_prefix('/')
        .unwrap_or(value)
        .strip_prefix(set)?
        .strip_prefix('(')?
        .strip_suffix(')')
        .map(str::to_owned)
}

fn check(ctx: &Ctx<'_>, table: &Table, map: &Map<String, Value>) -> Result<(), Response> {
    if (map.contains_key("statecode") || map.contains_key("statuscode")) && table.set != "contacts"
    {
        return Err(web_api_error(
            StatusCode::BAD_REQUEST,
            "0x80040203",
            &format!(
                "statecode is not valid for create on {}: set it with a PATCH afterwards",
                table.entity
            ),
        ));
    }
    for (name, value) in map {
        let Some((_, col)) = table.columns.iter().find(|(n, _)| n == name) else {
            return Err(bad(&format!(
                "Could not find a property named '{name}' on type 'Microsoft.Dynamics.CRM.{}'.",
                table.entity
            )));
        };
        if value.is_null() {
            continue;
        }
        let type_error = || {
            bad(&format!(
                "Cannot convert the literal '{value}' to the expected type of '{name}'."
            ))
        };
        match *col {
            Col::Text(max) => {
                let text = value.as_str().ok_or_else(type_error)?;
                if text.chars().count() > max {
                    return Err(web_api_error(
                        StatusCode::BAD_REQUEST,
                        "0x80044331",
                        &format!(
                            "A validation error occurred. The length of the '{name}' attribute of the '{}' entity exceeded the maximum allowed length of '{max}'.",
                            table.entity
                        ),
                    ));
                }
            }
            Col::Bool if !value.is_boolean() => return Err(type_error()),
            Col::Int if !value.is_i64() => return Err(type_error()),
            Col::Time
                if value
                    .as_str()
                    .is_none_or(|t| crate::clock::parse_datetime(t).is_none()) =>
            {
                return Err(type_error());
            }
            Col::Options(allowed) => {
                let n = value.as_i64().ok_or_else(type_error)?;
                if !allowed.contains(&n) {
                    return Err(web_api_error(
                        StatusCode::BAD_REQUEST,
                        "0x8004431a",
                        &format!("{n} is not a valid value for the {name} option set."),
                    ));
                }
            }
            Col::ContactBind => {
                let target = value.as_str().ok_or_else(type_error)?;
                let Some(id) = bound_id(target, "contacts") else {
                    return Err(bad(&format!(
                        "Invalid reference '{target}' for {name}: expected /contacts(<id>)"
                    )));
                };
                if ctx.find("contacts", &id.to_ascii_lowercase()).is_none() {
                    return Err(web_api_error(
                        StatusCode::NOT_FOUND,
                        "0x80040217",
                        &format!("contact With Id = {id} Does Not Exist"),
                    ));
                }
            }
            Col::Bind if !value.is_string() => return Err(type_error()),
            Col::Parties if !value.is_array() => return Err(type_error()),
            _ => {}
        }
    }
    for name in table.required {
        if map
            .get(*name)
            .is_none_or(|v| v.is_null() || v.as_str().is_some_and(str::is_empty))
        {
            return Err(web_api_error(
                StatusCode::BAD_REQUEST,
                "0x80040200",
                &format!(
                    "Attribute '{name}' cannot be NULL: it is required for {}",
                    table.entity
                ),
            ));
        }
    }
    if !table.one_of.is_empty() && !table.one_of.iter().any(|n| map.contains_key(*n)) {
        return Err(web_api_error(
            StatusCode::BAD_REQUEST,
            "0x80040200",
            &format!(
                "One of {} is required for {}",
                table.one_of.join(", "),
                table.entity
            ),
        ));
    }
    Ok(())
}

fn create(ctx: &Ctx<'_>, table: &Table) -> Outcome {
    if let Err(response) = authorize(ctx) {
        return response.into();
    }
    let Ok(Value::Object(map)) = ctx.json() else {
        return bad("The request body is not a JSON object.").into();
    };
    if let Err(response) = check(ctx, table, &map) {
        return response.into();
    }
    let duplicate_check = ctx
        .header("mscrm.suppressduplicatedetection")
        .is_some_and(|v| v.eq_ignore_ascii_case("false"));
    if duplicate_check
        && table.set == "contacts"
        && let Some(email) = map.get("emailaddress1").and_then(Value::as_str)
        && ctx.list("contacts").iter().any(|c| {
            c["emailaddress1"]
                .as_str()
                .is_some_and(|e| e.eq_ignore_ascii_case(email))
        })
    {
        return web_api_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "0x80040333",
            "A record was not created or updated because a duplicate of the current record already exists.",
        )
        .into();
    }
    let id = wire::correlation_id();
    let now = now_rfc3339();
    let base = format!("https://{}/api/data/v9.2", ctx.req.host);
    let mut record = map;
    record.insert(table.key.into(), json!(id));
    record.insert("createdon".into(), json!(now));
    record.insert("modifiedon".into(), json!(now));
    if table.set == "incidents" {
        record.insert(
            "ticketnumber".into(),
            json!(format!("CAS-{:05}-X1Y2Z3", ctx.next_number("ticket", 1001))),
        );
    }
    if table.entity == "phonecall" {
        record.entry("directioncode").or_insert(json!(true));
        record.insert("statecode".into(), json!(0));
    }
    let record = Value::Object(record);
    ctx.insert(table.set, &id, &record);
    let entity_id = format!("{base}/{}({id})", table.set);
    let wants_body = ctx.header("prefer").is_some_and(|p| {
        p.split(',')
            .any(|x| x.trim().eq_ignore_ascii_case("return=representation"))
    });
    let mut response = if wants_body {
        let mut shown = record.clone();
        if let Some(fields) = shown.as_object_mut() {
            fields.insert(
                "@odata.context".into(),
                json!(format!("{base}/$metadata#{}/$entity", table.set)),
            );
            fields.insert(
                "@odata.etag".into(),
                json!(format!("W/\"{}\"", ctx.next_number("etag", 1_000_001))),
            );
        }
        wire::json(StatusCode::CREATED, shown)
    } else {
        StatusCode::NO_CONTENT.into_response()
    };
    if let Ok(value) = HeaderValue::from_str(&entity_id) {
        response.headers_mut().insert("odata-entityid", value);
    }
    response
        .headers_mut()
        .insert("odata-version", HeaderValue::from_static("4.0"));
    Outcome::created(response, record)
}

fn create_phonecall(ctx: &Ctx<'_>) -> Outcome {
    create(ctx, &PHONECALL)
}

fn create_incident(ctx: &Ctx<'_>) -> Outcome {
    create(ctx, &INCIDENT)
}

fn create_task(ctx: &Ctx<'_>) -> Outcome {
    create(ctx, &TASK)
}

fn create_annotation(ctx: &Ctx<'_>) -> Outcome {
    create(ctx, &ANNOTATION)
}

fn create_contact(ctx: &Ctx<'_>) -> Outcome {
    create(ctx, &CONTACT)
}

/// One `$filter` clause.
enum Clause {
    Contains(String, String),
    Eq(String, String),
}

/// An OData string literal after its opening quote: the value (`''` is a quote) and the
/// rest.
fn literal(text: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut rest = text;
    loop {
        let at = rest.find('\'')?;
        value.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('\'') {
            value.push('\'');
            rest = after;
        } else {
            return Some((value, rest));
        }
    }
}

fn parse_filter(filter: &str) -> Result<Vec<Clause>, String> {
    let mut clauses = Vec::new();
    let mut rest = filter.trim();
    loop {
        if let Some(inner) = rest.strip_prefix("contains(") {
            let (column, after) = inner
                .split_once(',')
                .ok_or("expected contains(column,'text')")?;
            let after = after
                .trim_start()
                .strip_prefix('\'')
                .ok_or("expected a string literal")?;
            let (value, after) = literal(after).ok_or("unterminated string literal")?;
            rest = after
                .trim_start()
                .strip_prefix(')')
                .ok_or("expected )")?
                .trim_start();
            clauses.push(Clause::Contains(column.trim().to_owned(), value));
        } else {
            let (column, after) = rest
                .split_once(" eq ")
                .ok_or("the stand-in filters with contains() and eq only")?;
            let after = after
                .trim_start()
                .strip_prefix('\'')
                .ok_or("expected a string literal")?;
            let (value, after) = literal(after).ok_or("unterminated string literal")?;
            rest = after.trim_start();
            clauses.push(Clause::Eq(column.trim().to_owned(), value));
        }
        if rest.is_empty() {
            return Ok(clauses);
        }
        rest = rest
            .strip_prefix("and ")
            .ok_or("expected and")?
            .trim_start();
    }
}

fn query(ctx: &Ctx<'_>, table: &Table) -> Outcome {
    if let Err(response) = authorize(ctx) {
        return response.into();
    }
    let known =
        |c: &str| c == table.key || c == "createdon" || table.columns.iter().any(|(n, _)| *n == c);
    let clauses = match ctx.query("$filter").map(|f| parse_filter(&f)).transpose() {
        Ok(clauses) => clauses.unwrap_or_default(),
        Err(message) => return bad(&format!("Syntax error in $filter: {message}")).into(),
    };
    let select: Vec<String> = ctx
        .query("$select")
        .map(|s| s.split(',').map(|c| c.trim().to_owned()).collect())
        .unwrap_or_default();
    for column in select
        .iter()
        .map(String::as_str)
        .chain(clauses.iter().map(|c| match c {
            Clause::Contains(col, _) | Clause::Eq(col, _) => col.as_str(),
        }))
    {
        if !known(column) {
            return bad(&format!(
                "Could not find a property named '{column}' on type 'Microsoft.Dynamics.CRM.{}'.",
                table.entity
            ))
            .into();
        }
    }
    let top = match ctx.query("$top").map(|t| t.parse::<usize>()) {
        None => usize::MAX,
        Some(Ok(n)) => n,
        Some(Err(_)) => return bad("Invalid $top").into(),
    };
    let rows: Vec<Value> = ctx
        .list(table.set)
        .into_iter()
        .filter(|r| {
            clauses.iter().all(|c| match c {
                Clause::Contains(col, text) => r[col.as_str()]
                    .as_str()
                    .is_some_and(|v| v.contains(text.as_str())),
                Clause::Eq(col, text) => r[col.as_str()]
                    .as_str()
                    .is_some_and(|v| v.eq_ignore_ascii_case(text)),
            })
        })
        .take(top)
        .map(|r| {
            if select.is_empty() {
                return r;
            }
            let mut row = Map::new();
            for column in &select {
                row.insert(
                    column.clone(),
                    r.get(column.as_str()).cloned().unwrap_or(Value::Null),
                );
            }
            Value::Object(row)
        })
        .collect();
    let context = format!(
        "https://{}/api/data/v9.2/$metadata#{}",
        ctx.req.host, table.set
    );
    wire::json(
        StatusCode::OK,
        json!({"@odata.context": context, "value": rows}),
    )
    .into()
}

fn query_phonecalls(ctx: &Ctx<'_>) -> Outcome {
    query(ctx, &PHONECALL)
}

fn query_incidents(ctx: &Ctx<'_>) -> Outcome {
    query(ctx, &INCIDENT)
}

fn query_tasks(ctx: &Ctx<'_>) -> Outcome {
    query(ctx, &TASK)
}

fn query_annotations(ctx: &Ctx<'_>) -> Outcome {
    query(ctx, &ANNOTATION)
}

fn query_contacts(ctx: &Ctx<'_>) -> Outcome {
    query(ctx, &CONTACT)
}

//! Contract checks: provider exchanges the sandbox recorded ([`sandbox::Exchange`]) held
//! against the providers' own published API descriptions.
//!
//! The descriptions are copied into this crate (`specs/`, with `SOURCES.txt` saying where
//! each comes from) and loaded at test time: HubSpot's OpenAPI 3.0 files for the CRM
//! objects, properties and OAuth v1 APIs, and Google's Gmail and Calendar discovery
//! documents as OpenAPI 3.0 conversions. An exchange is matched to its operation by
//! host (the spec's server), method and path template; then its query and path
//! parameters (names, required, types), its request body (content type, schema), and its
//! response (declared status, content type, schema) are checked ([`schema`]).
//!
//! Where a description is stricter than the live API as the provider documents it, the
//! difference is an entry of [`exceptions::EXCEPTIONS`]: one operation, one place, one
//! rule, with the reason and the documentation it comes from. Nothing else is relaxed.

#![warn(missing_docs)]

pub mod exceptions;
pub mod schema;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use sandbox::Exchange;
use serde_json::{Map, Value};

use crate::exceptions::Exception;
use crate::schema::{Keyword, SchemaError};

/// Which half of an exchange a violation is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Side {
    /// What the client (Conduit, or a test) sent.
    Request,
    /// What the sandbox answered.
    Response,
}

/// What an exchange broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rule {
    /// A schema rule of a body or parameter value.
    Schema(Keyword),
    /// A query parameter the operation does not declare.
    UnknownParameter,
    /// A required parameter is missing.
    MissingParameter,
    /// A body of a content type the operation does not declare.
    ContentType,
    /// A body where the operation declares none.
    UnexpectedBody,
    /// No body where the operation requires one.
    MissingBody,
    /// A JSON media type whose body does not parse.
    NotJson,
    /// A response status the operation does not declare (and no `default`).
    UndeclaredStatus,
    /// No credentials on a request to an operation whose `security` asks for OAuth 2.0.
    MissingCredentials,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Schema(k) => f.write_str(k.as_str()),
            Self::UnknownParameter => f.write_str("unknown parameter"),
            Self::MissingParameter => f.write_str("missing parameter"),
            Self::ContentType => f.write_str("content type"),
            Self::UnexpectedBody => f.write_str("unexpected body"),
            Self::MissingBody => f.write_str("missing body"),
            Self::NotJson => f.write_str("not JSON"),
            Self::UndeclaredStatus => f.write_str("undeclared status"),
            Self::MissingCredentials => f.write_str("missing credentials"),
        }
    }
}

/// One way one exchange does not conform to its operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The operation, `METHOD /path/template`.
    pub operation: String,
    /// Request or response.
    pub side: Side,
    /// Where: `/body/…`, `/query/{name}[/i]`, `/path/{name}` or `/status` (a JSON pointer
    /// into the exchange; body pointers continue into the body).
    pub pointer: String,
    /// The rule broken.
    pub rule: Rule,
    /// The JSON type found (`missing` when absent; the status for `/status`).
    pub found: String,
    /// The exchange's response status (for either side).
    pub status: u16,
    /// What the description expects.
    pub expected: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:?} {} [{}]: {} (found {}, expected {})",
            self.operation,
            self.side,
            self.pointer,
            self.status,
            self.rule,
            self.found,
            self.expected
        )
    }
}

/// A spec file that could not be read.
#[derive(Debug)]
pub struct SpecError(String);

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SpecError {}

/// One OpenAPI document and the server it describes.
#[derive(Debug)]
pub struct Spec {
    /// The file name.
    pub name: String,
    doc: Value,
    host: String,
    base: String,
}

impl Spec {
    /// Parses an OpenAPI 3.0 document; its first server gives host and base path.
    pub fn parse(name: &str, text: &str) -> Result<Self, SpecError> {
        let doc: Value =
            serde_json::from_str(text).map_err(|e| SpecError(format!("{name}: not JSON: {e}")))?;
        let server = doc
            .pointer("/servers/0/url")
            .and_then(Value::as_str)
            .ok_or_else(|| SpecError(format!("{name}: no servers[0].url")))?;
        let rest = server
            .strip_prefix("https://")
            .ok_or_else(|| SpecError(format!("{name}: server is not https")))?;
        let (host, base) = match rest.split_once('/') {
            Some((h, b)) => (h, format!("/{}", b.trim_end_matches('/'))),
            None => (rest, String::new()),
        };
        let base = if base == "/" { String::new() } else { base };
        Ok(Self {
            name: name.to_owned(),
            host: host.to_ascii_lowercase(),
            base,
            doc,
        })
    }

    fn operations(&self) -> impl Iterator<Item = (&str, &str, &Value, &Value)> {
        self.doc
            .get("paths")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .flat_map(|(template, item)| {
                item.as_object()
                    .into_iter()
                    .flatten()
                    .filter_map(move |(m, op)| {
                        HTTP_METHODS.contains(&m.as_str()).then_some((
                            template.as_str(),
                            m.as_str(),
                            item,
                            op,
                        ))
                    })
            })
    }
}

const HTTP_METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// A set of descriptions to check exchanges against.
#[derive(Debug, Default)]
pub struct Specs(Vec<Spec>);

/// The folder of the spec files copied into this crate.
pub fn specs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("specs")
}

impl Specs {
    /// Every `*.json` description in `specs/{folder}` (`hubspot`, `google`).
    pub fn load(folder: &str) -> Result<Self, SpecError> {
        let dir = specs_dir().join(folder);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .map_err(|e| SpecError(format!("{}: {e}", dir.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        let mut specs = Vec::new();
        for f in files {
            let text = std::fs::read_to_string(&f)
                .map_err(|e| SpecError(format!("{}: {e}", f.display())))?;
            let name = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            specs.push(Spec::parse(&name, &text)?);
        }
        Ok(Self(specs))
    }

    /// The hosts these descriptions cover.
    pub fn hosts(&self) -> Vec<&str> {
        let mut h: Vec<&str> = self.0.iter().map(|s| s.host.as_str()).collect();
        h.sort_unstable();
        h.dedup();
        h
    }

    /// The operation an exchange is a call of: same host, method, and a path template
    /// matching its path (the one with the most literal segments wins).
    pub fn operation(&self, method: &str, host: &str, path: &str) -> Option<Operation<'_>> {
        let method = method.to_ascii_lowercase();
        let mut best: Option<(usize, Operation<'_>)> = None;
        for spec in self.0.iter().filter(|s| s.host == host) {
            let Some(rest) = path.strip_prefix(spec.base.as_str()) else {
                continue;
            };
            for (template, m, item, op) in spec.operations() {
                if m != method {
                    continue;
                }
                if let Some((literals, params)) = match_template(template, rest)
                    && best.as_ref().is_none_or(|(l, _)| literals > *l)
                {
                    best = Some((
                        literals,
                        Operation {
                            spec,
                            key: format!(
                                "{} {}{}",
                                method.to_ascii_uppercase(),
                                spec.base,
                                template
                            ),
                            item,
                            op,
                            path_params: params,
                        },
                    ));
                }
            }
        }
        best.map(|(_, o)| o)
    }
}

/// Matches `/a/{x}/b{y}:c` against a concrete path: (literal segments, path parameters).
fn match_template(template: &str, path: &str) -> Option<(usize, BTreeMap<String, String>)> {
    let t: Vec<&str> = template.trim_start_matches('/').split('/').collect();
    let p: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    if t.len() != p.len() {
        return None;
    }
    let mut literals = 0;
    let mut params = BTreeMap::new();
    for (ts, ps) in t.iter().zip(&p) {
        match (ts.find('{'), ts.find('}')) {
            (Some(open), Some(close)) if open < close => {
                let (prefix, suffix) = (&ts[..open], &ts[close + 1..]);
                let value = ps.strip_prefix(prefix)?.strip_suffix(suffix)?;
                if value.is_empty() {
                    return None;
                }
                params.insert(ts[open + 1..close].to_owned(), percent_decode(value));
            }
            _ if ts == ps => literals += 1,
            _ => return None,
        }
    }
    Some((literals, params))
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("v={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// One operation of a description, matched to a concrete path.
#[derive(Debug)]
pub struct Operation<'a> {
    spec: &'a Spec,
    /// `METHOD /base/path/template`.
    pub key: String,
    item: &'a Value,
    op: &'a Value,
    path_params: BTreeMap<String, String>,
}

impl Operation<'_> {
    /// The file the operation is described in.
    pub fn spec_name(&self) -> &str {
        &self.spec.name
    }

    fn doc(&self) -> &Value {
        &self.spec.doc
    }

    /// Parameters of the path item and the operation (the operation's win), resolved.
    fn parameters(&self) -> Vec<&Value> {
        let mut out: Vec<&Value> = Vec::new();
        for list in [self.item.get("parameters"), self.op.get("parameters")] {
            for p in list.and_then(Value::as_array).into_iter().flatten() {
                let Some(p) = schema::deref(self.doc(), p) else {
                    continue;
                };
                let key = |v: &Value| (v.get("name").cloned(), v.get("in").cloned());
                out.retain(|q| key(q) != key(p));
                out.push(p);
            }
        }
        out
    }

    /// Every way `exchange` departs from this operation.
    pub fn check(&self, exchange: &Exchange) -> Vec<Violation> {
        let mut out = Vec::new();
        self.check_credentials(exchange, &mut out);
        self.check_parameters(exchange, &mut out);
        self.check_request_body(exchange, &mut out);
        self.check_response(exchange, &mut out);
        for v in &mut out {
            v.status = exchange.status;
        }
        out
    }

    fn violation(
        &self,
        side: Side,
        pointer: String,
        rule: Rule,
        found: &str,
        expected: String,
    ) -> Violation {
        Violation {
            operation: self.key.clone(),
            side,
            pointer,
            rule,
            found: found.to_owned(),
            status: 0,
            expected,
        }
    }

    fn schema_violations(
        &self,
        side: Side,
        prefix: &str,
        errors: Vec<SchemaError>,
        out: &mut Vec<Violation>,
    ) {
        out.extend(errors.into_iter().map(|e| {
            self.violation(
                side,
                format!("{prefix}{}", e.pointer),
                Rule::Schema(e.keyword),
                e.found,
                e.expected,
            )
        }));
    }

    /// An OAuth 2.0 `security` requirement (the operation's, else the document's) means
    /// a bearer token: an `authorization` header, or Google's `access_token` /
    /// `oauth_token` query parameter.
    fn check_credentials(&self, exchange: &Exchange, out: &mut Vec<Violation>) {
        let security = self
            .op
            .get("security")
            .or_else(|| self.doc().get("security"))
            .and_then(Value::as_array);
        let schemes = self.doc().pointer("/components/securitySchemes");
        let wants_oauth = security.into_iter().flatten().any(|requirement| {
            requirement
                .as_object()
                .into_iter()
                .flatten()
                .any(|(name, _)| {
                    schemes
                        .and_then(|s| s.get(name))
                        .and_then(|s| s.get("type"))
                        .and_then(Value::as_str)
                        == Some("oauth2")
                })
        });
        let has_token = exchange.header_names.iter().any(|h| h == "authorization")
            || exchange
                .query
                .iter()
                .any(|(k, _)| k == "access_token" || k == "oauth_token");
        if wants_oauth && !has_token {
            out.push(self.violation(
                Side::Request,
                "/headers/authorization".into(),
                Rule::MissingCredentials,
                "missing",
                "a bearer token".into(),
            ));
        }
    }

    fn check_parameters(&self, exchange: &Exchange, out: &mut Vec<Violation>) {
        let params = self.parameters();
        let mut query: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (k, v) in &exchange.query {
            query.entry(k.as_str()).or_default().push(v.as_str());
        }
        for p in &params {
            let (Some(name), Some(place)) = (
                p.get("name").and_then(Value::as_str),
                p.get("in").and_then(Value::as_str),
            ) else {
                continue;
            };
            let required = p.get("required").and_then(Value::as_bool) == Some(true);
            let schema = p.get("schema").cloned().unwrap_or(Value::Null);
            let values: Vec<&str> = match place {
                "query" => query.remove(name).unwrap_or_default(),
                "path" => self
                    .path_params
                    .get(name)
                    .map(|v| vec![v.as_str()])
                    .unwrap_or_default(),
                _ => continue,
            };
            let at = format!("/{place}/{}", schema::escape(name));
            if values.is_empty() {
                if required {
                    out.push(self.violation(
                        Side::Request,
                        at,
                        Rule::MissingParameter,
                        "missing",
                        "present".into(),
                    ));
                }
                continue;
            }
            let resolved = schema::deref(self.doc(), &schema).unwrap_or(&schema);
            let is_array = resolved.get("type").and_then(Value::as_str) == Some("array");
            let mut errors = Vec::new();
            if is_array {
                let items = resolved.get("items").cloned().unwrap_or(Value::Null);
                let explode = p.get("explode").and_then(Value::as_bool).unwrap_or(true);
                let list: Vec<Value> = values
                    .iter()
                    .flat_map(|v| {
                        if explode {
                            vec![*v]
                        } else {
                            v.split(',').collect()
                        }
                    })
                    .map(|v| coerce(self.doc(), &items, v))
                    .collect();
                schema::validate(self.doc(), &schema, &Value::Array(list), "", &mut errors);
            } else {
                if values.len() > 1 {
                    out.push(self.violation(
                        Side::Request,
                        at.clone(),
                        Rule::Schema(Keyword::Type),
                        "array",
                        "one value".into(),
                    ));
                }
                let v = coerce(self.doc(), &schema, values[0]);
                schema::validate(self.doc(), &schema, &v, "", &mut errors);
            }
            self.schema_violations(Side::Request, &at, errors, out);
        }
        for name in query.keys() {
            out.push(self.violation(
                Side::Request,
                format!("/query/{}", schema::escape(name)),
                Rule::UnknownParameter,
                "string",
                "a declared query parameter".into(),
            ));
        }
    }

    fn check_request_body(&self, exchange: &Exchange, out: &mut Vec<Violation>) {
        let declared = self
            .op
            .get("requestBody")
            .and_then(|b| schema::deref(self.doc(), b));
        let Some(declared) = declared else {
            if !exchange.request_body.is_empty() {
                out.push(self.violation(
                    Side::Request,
                    "/body".into(),
                    Rule::UnexpectedBody,
                    "body",
                    "none".into(),
                ));
            }
            return;
        };
        if exchange.request_body.is_empty() {
            if declared.get("required").and_then(Value::as_bool) == Some(true) {
                out.push(self.violation(
                    Side::Request,
                    "/body".into(),
                    Rule::MissingBody,
                    "missing",
                    "a body".into(),
                ));
            }
            return;
        }
        let content = declared.get("content").and_then(Value::as_object);
        self.check_body(
            Side::Request,
            exchange.content_type.as_deref(),
            &exchange.request_body,
            content,
            out,
        );
    }

    fn check_body(
        &self,
        side: Side,
        content_type: Option<&str>,
        body: &[u8],
        content: Option<&Map<String, Value>>,
        out: &mut Vec<Violation>,
    ) {
        let Some(content) = content.filter(|c| !c.is_empty()) else {
            out.push(self.violation(
                side,
                "/body".into(),
                Rule::UnexpectedBody,
                "body",
                "none".into(),
            ));
            return;
        };
        let media = content_type
            .map(|c| {
                c.split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_else(|| "application/json".to_owned());
        let Some((declared_type, media_object)) =
            content.iter().find(|(k, _)| media_matches(k, &media))
        else {
            let declared: Vec<&String> = content.keys().collect();
            out.push(self.violation(
                side,
                "/content-type".into(),
                Rule::ContentType,
                &media,
                format!("{declared:?}"),
            ));
            return;
        };
        let schema = media_object.get("schema").cloned().unwrap_or(Value::Null);
        let value = if media == "application/x-www-form-urlencoded" {
            let resolved = schema::deref(self.doc(), &schema).unwrap_or(&schema);
            let mut map = Map::new();
            for (k, v) in url::form_urlencoded::parse(body) {
                let prop = resolved
                    .pointer(&format!("/properties/{}", schema::escape(&k)))
                    .cloned()
                    .unwrap_or(Value::Null);
                map.insert(k.into_owned(), coerce(self.doc(), &prop, &v));
            }
            Value::Object(map)
        } else if media.contains("json") || declared_type == "*/*" {
            match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(_) => {
                    out.push(self.violation(
                        side,
                        "/body".into(),
                        Rule::NotJson,
                        "text",
                        "JSON".into(),
                    ));
                    return;
                }
            }
        } else {
            // Other media (raw uploads) are not described by a schema we can check.
            return;
        };
        let mut errors = Vec::new();
        schema::validate(self.doc(), &schema, &value, "", &mut errors);
        self.schema_violations(side, "/body", errors, out);
    }

    fn check_response(&self, exchange: &Exchange, out: &mut Vec<Violation>) {
        let responses = self.op.get("responses").and_then(Value::as_object);
        let status = exchange.status.to_string();
        let range = format!("{}XX", &status[..1]);
        let declared = responses.and_then(|r| {
            r.get(&status)
                .or_else(|| r.get(&range))
                .or_else(|| r.get("default"))
        });
        let Some(declared) = declared.and_then(|d| schema::deref(self.doc(), d)) else {
            let known: Vec<&String> = responses.into_iter().flat_map(|r| r.keys()).collect();
            out.push(self.violation(
                Side::Response,
                "/status".into(),
                Rule::UndeclaredStatus,
                &status,
                format!("{known:?}"),
            ));
            return;
        };
        let content = declared.get("content").and_then(Value::as_object);
        if exchange.response_body.is_empty() {
            if content.is_some_and(|c| !c.is_empty()) && exchange.status != 204 {
                out.push(self.violation(
                    Side::Response,
                    "/body".into(),
                    Rule::MissingBody,
                    "missing",
                    "a body".into(),
                ));
            }
            return;
        }
        self.check_body(
            Side::Response,
            exchange.response_content_type.as_deref(),
            &exchange.response_body,
            content,
            out,
        );
    }
}

fn media_matches(declared: &str, actual: &str) -> bool {
    let declared = declared.to_ascii_lowercase();
    declared == actual
        || declared == "*/*"
        || declared
            .strip_suffix("/*")
            .is_some_and(|major| actual.split('/').next() == Some(major))
}

/// A parameter or form value (always text on the wire) as the JSON value its schema's
/// type reads it as; text that is not of that type stays text, so validation reports it.
fn coerce(doc: &Value, schema: &Value, text: &str) -> Value {
    let schema = schema::deref(doc, schema).unwrap_or(schema);
    match schema.get("type").and_then(Value::as_str) {
        Some("integer") => text
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| text.into()),
        Some("number") => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or_else(|| text.into()),
        Some("boolean") => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => text.into(),
        },
        _ => text.into(),
    }
}

/// The outcome of checking recorded exchanges.
#[derive(Debug, Default)]
pub struct Report {
    /// Exchanges checked (to the hosts the descriptions cover).
    pub exchanges: usize,
    /// Exchanges per operation (`METHOD template`).
    pub operations: BTreeMap<String, usize>,
    /// Calls to a covered host that no operation describes: `METHOD host/path`.
    pub unmatched: Vec<String>,
    /// Violations no exception covers, with the exchange they were found in.
    pub violations: Vec<(String, Violation)>,
    /// How many violations each exception covered (by index into
    /// [`exceptions::EXCEPTIONS`]).
    pub excepted: BTreeMap<usize, usize>,
}

impl Report {
    /// Whether every exchange matched an operation and conformed (up to exceptions).
    pub fn passed(&self) -> bool {
        self.unmatched.is_empty() && self.violations.is_empty()
    }

    /// Distinct violations (the same one in many exchanges counts once), with counts.
    pub fn distinct_violations(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for (_, v) in &self.violations {
            *out.entry(generalise(&v.to_string())).or_insert(0) += 1;
        }
        out
    }
}

/// Array indexes and record ids in a pointer become `*`, so one rule broken by many
/// items reads as one line.
fn generalise(text: &str) -> String {
    text.split(' ')
        .map(|word| {
            if word.starts_with('/') {
                word.split('/')
                    .map(|s| {
                        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
                            "*"
                        } else {
                            s
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("/")
            } else {
                word.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} exchanges checked against {} operations:",
            self.exchanges,
            self.operations.len()
        )?;
        for (op, n) in &self.operations {
            writeln!(f, "  {n:>5}  {op}")?;
        }
        if !self.excepted.is_empty() {
            writeln!(f, "listed exceptions applied:")?;
            for (i, n) in &self.excepted {
                if let Some(e) = exceptions::EXCEPTIONS.get(*i) {
                    writeln!(f, "  {n:>5}x {}", e.summary())?;
                }
            }
        }
        for u in &self.unmatched {
            writeln!(f, "NO OPERATION: {u}")?;
        }
        for (v, n) in self.distinct_violations() {
            writeln!(f, "VIOLATION ({n}x): {v}")?;
        }
        Ok(())
    }
}

/// Checks every exchange to a host `specs` covers; others are left out.
pub fn check_all(specs: &Specs, exchanges: &[Exchange]) -> Report {
    check_with(specs, exchanges, exceptions::EXCEPTIONS)
}

/// [`check_all`] with a given exception table.
pub fn check_with(specs: &Specs, exchanges: &[Exchange], table: &[Exception]) -> Report {
    let hosts = specs.hosts();
    let mut report = Report::default();
    for exchange in exchanges
        .iter()
        .filter(|e| hosts.contains(&e.host.as_str()))
    {
        report.exchanges += 1;
        let Some(op) = specs.operation(&exchange.method, &exchange.host, &exchange.path) else {
            report.unmatched.push(exchange.summary());
            continue;
        };
        *report.operations.entry(op.key.clone()).or_insert(0) += 1;
        for v in op.check(exchange) {
            match table.iter().position(|e| e.covers(&v)) {
                Some(i) => *report.excepted.entry(i).or_insert(0) += 1,
                None => report.violations.push((exchange.summary(), v)),
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_match_by_segment_and_prefer_literals() {
        assert_eq!(
            match_template(
                "/crm/v3/objects/contacts/{contactId}",
                "/crm/v3/objects/contacts/42"
            ),
            Some((
                4,
                BTreeMap::from([("contactId".to_owned(), "42".to_owned())])
            ))
        );
        assert_eq!(match_template("/a/{id}", "/a/b/c"), None);
        assert_eq!(
            match_template("/k/{keyPairId}:disable", "/k/p%201:disable").map(|(_, p)| p),
            Some(BTreeMap::from([("keyPairId".to_owned(), "p 1".to_owned())]))
        );
        let specs = Specs::load("hubspot").expect("specs");
        let op = specs
            .operation("POST", "api.hubapi.com", "/crm/v3/objects/contacts/search")
            .expect("search");
        assert_eq!(op.key, "POST /crm/v3/objects/contacts/search");
        let op = specs
            .operation(
                "GET",
                "api.hubapi.com",
                "/crm/v3/properties/contacts/groups",
            )
            .expect("groups");
        assert_eq!(op.key, "GET /crm/v3/properties/{objectType}/groups");
        assert!(
            specs
                .operation("GET", "api.hubapi.com", "/crm/v4/nothing")
                .is_none()
        );
        let google = Specs::load("google").expect("google");
        let op = google
            .operation(
                "POST",
                "www.googleapis.com",
                "/calendar/v3/calendars/primary/events",
            )
            .expect("calendar insert");
        assert_eq!(op.key, "POST /calendar/v3/calendars/{calendarId}/events");
    }

    fn exchange(
        method: &str,
        path: &str,
        headers: &[&str],
        body: &str,
        status: u16,
        answer: &str,
    ) -> Exchange {
        Exchange {
            method: method.into(),
            host: "api.hubapi.com".into(),
            path: path.into(),
            query: vec![("limit".into(), "ten".into())],
            header_names: headers.iter().map(|h| (*h).to_owned()).collect(),
            content_type: Some("application/json".into()),
            request_body: body.as_bytes().to_vec().into(),
            status,
            response_content_type: Some("application/json".into()),
            response_body: answer.as_bytes().to_vec().into(),
        }
    }

    #[test]
    fn an_exchange_is_checked_on_both_sides() {
        let specs = Specs::load("hubspot").expect("specs");
        let list = exchange(
            "GET",
            "/crm/v3/objects/contacts",
            &[],
            "",
            200,
            r#"{"results":[{"id":"1"}]}"#,
        );
        let report = check_with(&specs, &[list], &[]);
        let got: Vec<(Side, &str, Rule)> = report
            .violations
            .iter()
            .map(|(_, v)| (v.side, v.pointer.as_str(), v.rule))
            .collect();
        assert!(
            got.contains(&(
                Side::Request,
                "/headers/authorization",
                Rule::MissingCredentials
            )),
            "{got:?}"
        );
        assert!(
            got.contains(&(Side::Request, "/query/limit", Rule::Schema(Keyword::Type))),
            "{got:?}"
        );
        assert!(
            got.contains(&(
                Side::Response,
                "/body/results/0/createdAt",
                Rule::Schema(Keyword::Required)
            )),
            "{got:?}"
        );
        let search = exchange(
            "POST",
            "/crm/v3/objects/contacts/search",
            &["authorization"],
            r#"{"limit":"ten","after":"0","sorts":[],"properties":[],"filterGroups":[],"extra":1}"#,
            418,
            "",
        );
        let report = check_with(&specs, &[search], &[]);
        let got: Vec<(&str, Rule)> = report
            .violations
            .iter()
            .map(|(_, v)| (v.pointer.as_str(), v.rule))
            .collect();
        assert!(
            got.contains(&("/body/limit", Rule::Schema(Keyword::Type))),
            "{got:?}"
        );
        assert!(
            got.contains(&("/query/limit", Rule::UnknownParameter)),
            "{got:?}"
        );
        let unknown = exchange("GET", "/crm/v3/nowhere", &["authorization"], "", 200, "{}");
        assert_eq!(check_with(&specs, &[unknown], &[]).unmatched.len(), 1);
    }

    #[test]
    fn generalised_pointers_group_items() {
        assert_eq!(
            generalise("X Response /body/results/12/properties/a: type"),
            "X Response /body/results/*/properties/a: type"
        );
    }
}

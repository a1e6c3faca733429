//! The API Gateway HTTP API payload (format 2.0), built exactly as AWS sends it to a
//! function, and turned into a `lambda_http::Request` by the same code a deployed
//! function runs (`lambda_http::request::from_str`).

use std::collections::BTreeMap;

use anyhow::{Result, anyhow};
use base64::Engine;
use http::HeaderMap;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::macros::format_description;

/// The JWT authorizer's output for a request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JwtContext {
    /// Every claim, flattened to a string as API Gateway does.
    pub claims: BTreeMap<String, String>,
    /// The token's scopes.
    pub scopes: Vec<String>,
}

/// What the event is built from.
#[derive(Debug, Clone)]
pub struct EventInput<'a> {
    /// The matched route's key, e.g. `GET /v1/connections/{id}`.
    pub route_key: &'a str,
    /// The request method.
    pub method: &'a str,
    /// The raw (still percent-encoded) path.
    pub raw_path: &'a str,
    /// The raw query string, without `?`.
    pub raw_query: &'a str,
    /// The request headers.
    pub headers: &'a HeaderMap,
    /// The request body.
    pub body: &'a [u8],
    /// The route's path parameters.
    pub path_params: &'a BTreeMap<String, String>,
    /// The client's address.
    pub source_ip: &'a str,
    /// The port the client connected to (for `x-forwarded-port`).
    pub port: u16,
    /// The HTTP version, e.g. `HTTP/1.1`.
    pub protocol: &'a str,
    /// The authorizer's output; `None` on public routes.
    pub jwt: Option<&'a JwtContext>,
    /// The request id.
    pub request_id: &'a str,
    /// `requestContext.accountId`.
    pub account_id: &'a str,
    /// `requestContext.apiId`.
    pub api_id: &'a str,
    /// When the request arrived.
    pub time: OffsetDateTime,
}

/// A fresh request id in API Gateway's style (base64 of random bytes, 16 characters).
pub fn new_request_id() -> String {
    let bytes = ulid::Ulid::new().to_bytes();
    base64::engine::general_purpose::STANDARD.encode(&bytes[6..16])
}

fn trace_id(time: OffsetDateTime) -> String {
    let ulid = ulid::Ulid::new().to_bytes();
    let hex: String = ulid[4..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("Root=1-{:08x}-{hex}", time.unix_timestamp())
}

/// Builds the HTTP API v2 event for a request.
pub fn build_event(input: &EventInput<'_>) -> Value {
    let mut headers = Map::new();
    let mut cookies: Vec<String> = Vec::new();
    for name in input.headers.keys() {
        let values: Vec<String> = input
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        if name == http::header::COOKIE {
            cookies.extend(
                values
                    .iter()
                    .flat_map(|v| v.split(';'))
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned),
            );
            continue;
        }
        headers.insert(name.as_str().to_owned(), Value::String(values.join(",")));
    }
    let forwarded_for = match headers.get("x-forwarded-for").and_then(Value::as_str) {
        Some(prior) => format!("{prior}, {}", input.source_ip),
        None => input.source_ip.to_owned(),
    };
    headers.insert("x-forwarded-for".into(), Value::String(forwarded_for));
    headers.insert(
        "x-forwarded-port".into(),
        Value::String(input.port.to_string()),
    );
    headers.insert("x-forwarded-proto".into(), Value::String("http".into()));
    headers.insert(
        "x-amzn-trace-id".into(),
        Value::String(trace_id(input.time)),
    );

    let domain_name = headers
        .get("host")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("127.0.0.1:{}", input.port));
    let domain_prefix = domain_name
        .split(':')
        .next()
        .and_then(|h| h.split('.').next())
        .unwrap_or_default()
        .to_owned();
    let user_agent = headers
        .get("user-agent")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let time = input
        .time
        .format(format_description!(
            "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
        ))
        .unwrap_or_default();

    let mut context = json!({
        "accountId": input.account_id,
        "apiId": input.api_id,
        "domainName": domain_name,
        "domainPrefix": domain_prefix,
        "http": {
            "method": input.method,
            "path": input.raw_path,
            "protocol": input.protocol,
            "sourceIp": input.source_ip,
            "userAgent": user_agent,
        },
        "requestId": input.request_id,
        "routeKey": input.route_key,
        "stage": "$default",
        "time": time,
        "timeEpoch": (input.time.unix_timestamp_nanos() / 1_000_000) as i64,
    });
    if let Some(jwt) = input.jwt {
        context["authorizer"] = json!({
            "jwt": {
                "claims": jwt.claims,
                "scopes": if jwt.scopes.is_empty() { Value::Null } else { json!(jwt.scopes) },
            }
        });
    }

    let mut event = json!({
        "version": "2.0",
        "routeKey": input.route_key,
        "rawPath": input.raw_path,
        "rawQueryString": input.raw_query,
        "headers": headers,
        "requestContext": context,
        "isBase64Encoded": false,
    });
    if !cookies.is_empty() {
        event["cookies"] = json!(cookies);
    }
    let query = query_parameters(input.raw_query);
    if !query.is_empty() {
        event["queryStringParameters"] = json!(query);
    }
    if !input.path_params.is_empty() {
        event["pathParameters"] = json!(input.path_params);
    }
    if !input.body.is_empty() {
        match std::str::from_utf8(input.body) {
            Ok(text) => event["body"] = Value::String(text.to_owned()),
            Err(_) => {
                event["body"] =
                    Value::String(base64::engine::general_purpose::STANDARD.encode(input.body));
                event["isBase64Encoded"] = Value::Bool(true);
            }
        }
    }
    event
}

/// `queryStringParameters` as the HTTP API fills it: decoded, duplicates comma-joined.
pub fn query_parameters(raw_query: &str) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in url::form_urlencoded::parse(raw_query.as_bytes()) {
        out.entry(k.into_owned())
            .and_modify(|prior| {
                prior.push(',');
                prior.push_str(&v);
            })
            .or_insert_with(|| v.into_owned());
    }
    out
}

/// Turns an event into the request a deployed function would see, through
/// `lambda_http::request::from_str`.
pub fn to_request(event: &Value) -> Result<lambda_http::Request> {
    let text = event.to_string();
    parse_request(&text)
}

/// Parses an event's JSON text into a request (as the Lambda runtime does), failing
/// cleanly on anything the runtime would reject.
pub fn parse_request(text: &str) -> Result<lambda_http::Request> {
    match std::panic::catch_unwind(|| lambda_http::request::from_str(text)) {
        Ok(Ok(req)) => Ok(req),
        Ok(Err(e)) => Err(anyhow!(
            "the event is not an API Gateway HTTP API (2.0) request: {e}"
        )),
        Err(_) => Err(anyhow!(
            "lambda_http could not build a request from the event (bad host or path)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use lambda_http::RequestExt;
    use lambda_http::request::RequestContext;

    use super::*;

    fn build(headers: &HeaderMap, body: &[u8], jwt: Option<&JwtContext>) -> Value {
        let params = BTreeMap::from([("id".to_owned(), "01J0CONN".to_owned())]);
        build_event(&EventInput {
            route_key: "GET /v1/connections/{id}",
            method: "GET",
            raw_path: "/v1/connections/01J0CONN",
            raw_query: "provider=zendesk&status=a&status=b&q=x%20y",
            headers,
            body,
            path_params: &params,
            source_ip: "127.0.0.1",
            port: 3000,
            protocol: "HTTP/1.1",
            jwt,
            request_id: "req-1",
            account_id: "123456789012",
            api_id: "devhost",
            time: OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
        })
    }

    #[test]
    fn events_round_trip_through_lambda_http() {
        let mut headers = HeaderMap::new();
        headers.insert("host", "127.0.0.1:3000".parse().unwrap());
        headers.insert("content-type", "application/json".parse().unwrap());
        headers.append("x-multi", "a".parse().unwrap());
        headers.append("x-multi", "b".parse().unwrap());
        headers.insert("cookie", "a=1; b=2".parse().unwrap());
        let jwt = JwtContext {
            claims: BTreeMap::from([
                ("sub".to_owned(), "dev-admin".to_owned()),
                ("tenant_id".to_owned(), "demo".to_owned()),
                ("role".to_owned(), "admin".to_owned()),
                ("exp".to_owned(), "1700000600".to_owned()),
            ]),
            scopes: vec!["conduit".into()],
        };
        let event = build(&headers, br#"{"a":1}"#, Some(&jwt));
        assert_eq!(event["version"], "2.0");
        assert_eq!(event["headers"]["x-multi"], "a,b");
        assert_eq!(event["cookies"], json!(["a=1", "b=2"]));
        assert!(event["headers"].get("cookie").is_none());
        assert_eq!(event["queryStringParameters"]["status"], "a,b");
        assert_eq!(event["queryStringParameters"]["q"], "x y");
        assert_eq!(
            event["requestContext"]["time"],
            "14/Nov/2023:22:13:20 +0000"
        );
        assert_eq!(event["requestContext"]["timeEpoch"], 1_700_000_000_000i64);

        let req = to_request(&event).unwrap();
        assert_eq!(req.method(), "GET");
        assert_eq!(req.uri().path(), "/v1/connections/01J0CONN");
        assert_eq!(req.uri().host(), Some("127.0.0.1"));
        assert_eq!(
            req.path_parameters_ref().and_then(|p| p.first("id")),
            Some("01J0CONN")
        );
        let q = req.query_string_parameters_ref().unwrap();
        assert_eq!(q.all("status"), Some(vec!["a", "b"]));
        assert_eq!(q.first("provider"), Some("zendesk"));
        assert_eq!(req.headers()["cookie"], "a=1; b=2");
        assert_eq!(req.body().as_ref(), br#"{"a":1}"#);
        match req.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(ctx)) => {
                assert_eq!(ctx.route_key.as_deref(), Some("GET /v1/connections/{id}"));
                assert_eq!(ctx.request_id.as_deref(), Some("req-1"));
                assert_eq!(ctx.stage.as_deref(), Some("$default"));
                let jwt = ctx
                    .authorizer
                    .as_ref()
                    .and_then(|a| a.jwt.as_ref())
                    .unwrap();
                assert_eq!(jwt.claims["tenant_id"], "demo");
                assert_eq!(jwt.claims["exp"], "1700000600");
                assert_eq!(jwt.scopes, Some(vec!["conduit".to_owned()]));
            }
            other => panic!("unexpected context {other:?}"),
        }
    }

    #[test]
    fn binary_bodies_are_base64_and_public_routes_have_no_authorizer() {
        let mut headers = HeaderMap::new();
        headers.insert("host", "localhost:3000".parse().unwrap());
        let event = build(&headers, &[0xff, 0x00, 0x80], None);
        assert_eq!(event["isBase64Encoded"], true);
        assert!(event["requestContext"].get("authorizer").is_none());
        let req = to_request(&event).unwrap();
        assert_eq!(req.body().as_ref(), &[0xff, 0x00, 0x80]);
        match req.request_context_ref() {
            Some(RequestContext::ApiGatewayV2(ctx)) => assert!(ctx.authorizer.is_none()),
            other => panic!("unexpected context {other:?}"),
        }
    }

    #[test]
    fn a_bad_host_fails_cleanly() {
        let mut headers = HeaderMap::new();
        headers.insert("host", "bad host[".parse().unwrap());
        let event = build(&headers, b"", None);
        assert!(to_request(&event).is_err());
        assert!(parse_request("{\"nope\": 1}").is_err());
    }

    #[test]
    fn request_ids_are_unique() {
        let a = new_request_id();
        assert_ne!(a, new_request_id());
        assert_eq!(a.len(), 16);
    }
}

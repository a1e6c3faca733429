//! Runs one function once on an event file, like `sam local invoke -e`: the function's
//! `App` is built from its template environment on the running local stack. An HTTP
//! function's event goes through `lambda_http::request::from_str` and its response is
//! printed the way the function hands it to API Gateway; a function with an event
//! handler (a scheduled one) gets the event as JSON and its JSON result is printed.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use base64::Engine;
use conduit::app::App;
use conduit::config::Config;
use futures::FutureExt;
use serde_json::{Map, Value, json};

use crate::event::parse_request;
use crate::registry::{EventHandler, FunctionRegistry};
use crate::stack::{LocalStack, StackOptions, bootstrap};
use crate::state::StackFile;
use crate::template::{Function, Template};
use crate::trace::{TraceHeader, within};

/// Lambda's default timeout, for functions whose template gives none.
const DEFAULT_TIMEOUT_SECS: u64 = 3;

/// Bootstraps against the stack `devhost up` started (`.local/stack.json`), then runs
/// `function` (logical id or binary name) on the event in `event_path`.
pub async fn invoke_from_files(
    function: &str,
    event_path: &Path,
    functions: &FunctionRegistry,
) -> Result<Value> {
    let running = StackFile::load()?;
    let aws = crate::aws::moto_sdk_config(&running.aws_endpoint).await;
    let template = Template::load(&crate::paths::repo_root()?.join("template.yaml"))?;
    let options = StackOptions {
        stack_name: running.stack_name.clone(),
        parameters: running.parameters.clone(),
        secret_values: Default::default(),
        local_env: running.local_env.clone(),
    };
    let stack = bootstrap(&template, &aws, &options)
        .await
        .with_context(|| {
            format!(
                "reaching the local stack at {} — is `devhost up` running?",
                running.aws_endpoint
            )
        })?;
    let event = std::fs::read_to_string(event_path)
        .with_context(|| format!("reading the event {}", event_path.display()))?;
    invoke(&stack, functions, function, &event).await
}

/// Runs `function` (logical id or binary name) of `stack` once on `event` and returns
/// what it returns: for a function with an event handler (see
/// [`FunctionRegistry::register_event`]) the handler's JSON result, the event being any
/// JSON (e.g. an EventBridge scheduled event, an SQS event); for an HTTP function the
/// response as it hands it to API Gateway, the event being an API Gateway HTTP API 2.0
/// request. A function with both handlers gets HTTP API requests through its HTTP one.
pub async fn invoke(
    stack: &LocalStack,
    functions: &FunctionRegistry,
    function: &str,
    event: &str,
) -> Result<Value> {
    let def = find_function(stack, function)?;
    let event_handler = functions.get_event(&def.binary);
    // A function with both (an HTTP API route and, say, a schedule) takes HTTP API
    // requests through its HTTP handler and every other event through its event one.
    let http = functions.get(&def.binary).is_some()
        && (event_handler.is_none() || is_http_api_event(&parse_event_json(event)?));
    if let Some(handler) = event_handler.filter(|_| !http) {
        let event = parse_event_json(event)?;
        let app = function_app(stack, &def.logical_id)?;
        return call_event_handler(
            &handler,
            &app,
            event,
            function_timeout(def),
            &def.logical_id,
            TraceHeader::new_root(),
        )
        .await;
    }
    let handler = functions.get(&def.binary).ok_or_else(|| {
        anyhow!(
            "no handler registered for binary {} in devhost::FunctionRegistry (neither an HTTP \
             handler nor an event handler)",
            def.binary
        )
    })?;
    let app = function_app(stack, &def.logical_id)?;
    let request = parse_request(event)?;
    let timeout = function_timeout(def);
    let response = match tokio::time::timeout(
        timeout,
        within(
            TraceHeader::new_root(),
            AssertUnwindSafe(handler(&app, request)).catch_unwind(),
        ),
    )
    .await
    {
        Err(_) => {
            return Err(anyhow!(
                "{} timed out after {}s",
                def.logical_id,
                timeout.as_secs()
            ));
        }
        Ok(Err(_)) => return Err(anyhow!("{} panicked", def.logical_id)),
        Ok(Ok(Err(error))) => return Err(anyhow!("{} failed: {error}", def.logical_id)),
        Ok(Ok(Ok(response))) => response,
    };
    Ok(gateway_response(response))
}

/// Whether `event` is an API Gateway HTTP API (payload 2.0) request.
pub fn is_http_api_event(event: &Value) -> bool {
    event.get("version").and_then(Value::as_str) == Some("2.0")
        && event.get("routeKey").is_some()
        && event.pointer("/requestContext/http").is_some()
}

/// The template function with this logical id or binary name; the error lists the
/// known ones.
pub fn find_function<'a>(stack: &'a LocalStack, function: &str) -> Result<&'a Function> {
    stack.template().function(function).ok_or_else(|| {
        let known: Vec<String> = stack
            .template()
            .functions
            .values()
            .map(|f| format!("{} ({})", f.logical_id, f.binary))
            .collect();
        anyhow!(
            "no function {function} in the template; known: {}",
            known.join(", ")
        )
    })
}

/// The function's timeout: the template's, else Lambda's default of 3 s.
pub fn function_timeout(function: &Function) -> Duration {
    Duration::from_secs(function.timeout_secs.unwrap_or(DEFAULT_TIMEOUT_SECS))
}

/// The `App` a function builds from its template environment on the local stack.
pub fn function_app(stack: &LocalStack, logical_id: &str) -> Result<App> {
    let env = stack.function_env(logical_id)?;
    let config =
        Config::from_map(&env).with_context(|| format!("configuration of {logical_id}"))?;
    // Its own connection pool: an invocation runs on its caller's runtime (a test's),
    // and a pooled connection of a runtime that has ended cannot be used by another.
    let aws = crate::aws::with_own_http_client(stack.sdk_config());
    App::with_aws(config, aws).with_context(|| format!("building the App of {logical_id}"))
}

/// Parses an event file's text as JSON; the error says where it is malformed (the
/// event's content is not repeated).
pub fn parse_event_json(text: &str) -> Result<Value> {
    serde_json::from_str(text).map_err(|e| {
        anyhow!(
            "the event is not valid JSON ({:?} error at line {}, column {})",
            e.classify(),
            e.line(),
            e.column()
        )
    })
}

/// Calls an event handler as Lambda would: bounded by `timeout`, a panic reported as
/// a failed invocation, its AWS requests carrying `trace`. `name` (the function's
/// logical id) names it in errors.
pub async fn call_event_handler(
    handler: &EventHandler,
    app: &App,
    event: Value,
    timeout: Duration,
    name: &str,
    trace: TraceHeader,
) -> Result<Value> {
    match tokio::time::timeout(
        timeout,
        within(trace, AssertUnwindSafe(handler(app, event)).catch_unwind()),
    )
    .await
    {
        Err(_) => Err(anyhow!("{name} timed out after {}s", timeout.as_secs())),
        Ok(Err(_)) => Err(anyhow!("{name} panicked")),
        Ok(Ok(Err(error))) => Err(anyhow!("{name} failed: {error}")),
        Ok(Ok(Ok(result))) => Ok(result),
    }
}

/// A function response as payload-2.0 JSON: `statusCode`, `headers` (duplicates
/// comma-joined), `cookies`, `body` (text when UTF-8, else base64) and
/// `isBase64Encoded`.
pub fn gateway_response(response: lambda_http::Response<lambda_http::Body>) -> Value {
    let (parts, body) = response.into_parts();
    let mut headers = Map::new();
    let mut cookies = Vec::new();
    for name in parts.headers.keys() {
        let values: Vec<String> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        if name == http::header::SET_COOKIE {
            cookies.extend(values);
        } else {
            headers.insert(name.as_str().to_owned(), Value::String(values.join(",")));
        }
    }
    let bytes = match body {
        lambda_http::Body::Text(text) => text.into_bytes(),
        lambda_http::Body::Binary(bytes) => bytes,
        _ => Vec::new(),
    };
    let (body, base64) = match String::from_utf8(bytes) {
        Ok(text) => (text, false),
        Err(err) => (
            base64::engine::general_purpose::STANDARD.encode(err.into_bytes()),
            true,
        ),
    };
    let mut out = json!({
        "statusCode": parts.status.as_u16(),
        "headers": headers,
        "body": body,
        "isBase64Encoded": base64,
    });
    if !cookies.is_empty() {
        out["cookies"] = json!(cookies);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_api_requests_are_told_from_other_events() {
        let path = crate::paths::repo_root()
            .unwrap()
            .join("events/credentials/list-providers.json");
        let request = parse_event_json(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert!(is_http_api_event(&request));
        assert!(!is_http_api_event(&json!({"Records": []})));
        assert!(!is_http_api_event(
            &json!({"version": "0", "detail-type": "Scheduled Event"})
        ));
        assert!(!is_http_api_event(&json!({"sync_config_id": "cfg-1"})));
    }

    #[test]
    fn responses_render_like_payload_2() {
        let resp = lambda_http::Response::builder()
            .status(201)
            .header("content-type", "application/json")
            .header("set-cookie", "a=1")
            .body(lambda_http::Body::Binary(br#"{"ok":true}"#.to_vec()))
            .unwrap();
        let out = gateway_response(resp);
        assert_eq!(out["statusCode"], 201);
        assert_eq!(out["body"], r#"{"ok":true}"#);
        assert_eq!(out["isBase64Encoded"], false);
        assert_eq!(out["cookies"], json!(["a=1"]));
        assert!(out["headers"].get("set-cookie").is_none());
        let binary = lambda_http::Response::new(lambda_http::Body::Binary(vec![0xff]));
        assert_eq!(gateway_response(binary)["isBase64Encoded"], true);
    }
}

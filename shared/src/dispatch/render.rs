//! Sandboxed rendering of integration templates: a request template and a render
//! context (the event, settings, connection, earlier steps, captures) in, the request
//! to send out.
//!
//! Threat model: templates are data a tenant may edit (overrides, custom requests), and
//! the context holds text from the product's callers (names, summaries). So:
//! - one minijinja environment with no loader (no includes, no imports), no macros,
//!   strict undefined (a misspelt path is an error naming it, not an empty string), a
//!   fuel budget per template (every instruction and every byte allocated costs fuel:
//!   endless loops and memory blow-ups stop), a recursion limit, and size caps on each
//!   rendered leaf and on the whole body;
//! - bodies are JSON values rendered leaf by leaf, never JSON built as text: a summary
//!   containing `"}` stays inside its string. A leaf that is exactly one `{{ expr }}`
//!   keeps the expression's type;
//! - every expression printed in a path is percent-encoded as one segment, so a value
//!   cannot add segments, a query or `..`; header values cannot hold line breaks;
//! - error messages never carry setting values (settings may be secrets).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;

use minijinja::value::{Enumerator, Object, ObjectRepr, Serde, Value as JinjaValue};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Expression, UndefinedBehavior};
use serde::Serialize;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::template::{Action, Idempotency, RequestTemplate};

/// Fuel for one template: generous for the catalogue (a 20,000-character summary costs
/// a few hundred), small enough that a hostile loop stops within milliseconds.
pub const FUEL: u64 = 50_000;
/// The deepest nesting a template may reach at run time.
const RECURSION_LIMIT: usize = 32;
/// The longest rendered leaf, in characters.
pub const MAX_LEAF_CHARS: usize = 64 * 1024;
/// The largest rendered body, in bytes of JSON.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// The name prefix of templates rendered into a URL path (their output is encoded).
const PATH_TEMPLATE: &str = "path";

/// A request ready to send: relative to the connection's API base.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RenderedRequest {
    /// The HTTP method.
    #[serde(serialize_with = "method_name")]
    pub method: http::Method,
    /// The path on the API base (`/…`, or empty for the base itself), segments encoded.
    pub path: String,
    /// The origin the path is on instead of the API base (the template's `origin`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
    /// Query parameters, not yet encoded.
    pub query: Vec<(String, String)>,
    /// Headers beyond auth and content type.
    pub headers: Vec<(String, String)>,
    /// The JSON body.
    pub body: Option<Value>,
    /// The mail message the body carries built (`mail` templates), as rendered: what
    /// a preview shows; never logged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mail: Option<Value>,
    /// Fetch an SAP CSRF token (and its cookies) before sending.
    pub csrf: bool,
    /// The request creates or changes something.
    pub effect: bool,
}

fn method_name<S: serde::Serializer>(m: &http::Method, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(m.as_str())
}

/// Why a template did not render: where (`requests[1].body.subject`), the line in that
/// template when known, and what — never a setting's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{field}: {message}")]
pub struct RenderError {
    /// The template's place (`body.ticket.comment.body`, `outputs.url`).
    pub field: String,
    /// The line within that template.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// What went wrong.
    pub message: String,
}

impl RenderError {
    fn new(field: &str, message: impl Into<String>) -> Self {
        RenderError {
            field: field.to_owned(),
            line: None,
            message: message.into(),
        }
    }

    /// The same error placed under `prefix` (`requests[2]`).
    pub fn under(mut self, prefix: &str) -> Self {
        self.field = if self.field.is_empty() {
            prefix.to_owned()
        } else {
            format!("{prefix}.{}", self.field)
        };
        self
    }
}

/// Bytes of template source a renderer keeps compiled at most (then it starts
/// afresh): the catalogue's templates are a few hundred bytes each, tenants' Custom API
/// bodies a few KiB.
const COMPILED_MAX_BYTES: usize = 2 * 1024 * 1024;
/// A template longer than this is compiled for each render, never kept.
const COMPILED_MAX_SOURCE: usize = 32 * 1024;

/// The template engine, configured once (cheap to keep in a `LazyLock` or on the
/// handler's state).
pub struct Renderer {
    env: Environment<'static>,
    /// The same engine holding the text templates rendered so far, compiled, by their
    /// kind and source: a dispatch renders the same few templates for every event, and
    /// compiling one cost as much as rendering it. Rendered under the read lock.
    compiled: std::sync::RwLock<Environment<'static>>,
    /// Bytes of source `compiled` holds.
    kept: std::sync::atomic::AtomicUsize,
    /// The single-expression leaves (`{{ contact.email }}`) evaluated so far, compiled,
    /// by source, and the bytes of source they hold: compiling one cost more than
    /// evaluating it.
    expressions: std::sync::RwLock<(Expressions, usize)>,
}

/// Compiled expressions by their source, compiled in [`EXPRESSION_ENV`].
type Expressions = std::collections::HashMap<String, std::sync::Arc<Expression<'static, 'static>>>;

/// The environment kept expressions are compiled in (an expression borrows its
/// environment, so theirs lives as long as the process; it is configured as every
/// renderer's).
static EXPRESSION_ENV: std::sync::LazyLock<Environment<'static>> =
    std::sync::LazyLock::new(configured);

impl Default for Renderer {
    fn default() -> Self {
        Self::new()
    }
}

/// The sandboxed environment with Conduit's filters (minijinja's builtins, no loader,
/// no macros: the `macros` feature is off).
fn configured() -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    // The `debug` feature gives errors their position; debug mode would also copy
    // every template's source and context into errors: off.
    env.set_debug(false);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(RECURSION_LIMIT);
    env.set_auto_escape_callback(|name| {
        if name.starts_with(PATH_TEMPLATE) {
            AutoEscape::Custom(PATH_TEMPLATE.into())
        } else {
            AutoEscape::None
        }
    });
    env.set_formatter(format_value);
    env.add_filter("e164", filter_e164);
    env.add_filter("truncate", filter_truncate);
    env.add_filter("date", filter_date);
    env.add_filter("add_days", filter_add_days);
    env.add_filter("add_minutes", filter_add_minutes);
    env.add_filter("mmss", filter_mmss);
    env.add_filter("hhmm", filter_hhmm);
    env.add_filter("first_name", filter_first_name);
    env.add_filter("last_name", filter_last_name);
    env.add_filter("soql", filter_soql);
    env.add_filter("odata", filter_odata);
    env.add_filter("html", filter_html);
    env.add_filter("origin", filter_origin);
    env.add_filter("digest", filter_digest);
    env
}

/// A rendered mail draft built into Gmail's `raw` (base64url MIME) and its thread:
/// the draft is read as `POST /v1/me/gmail/send` reads a body and checked the same
/// way (addresses, line breaks in headers, limits) — a bad one is a render error
/// naming the field, and nothing is sent.
fn build_mail(draft: &Value, from: Option<&str>) -> Result<(String, Option<String>), RenderError> {
    use base64::Engine as _;
    let draft: crate::mail::Draft = serde_path_to_error::deserialize(draft).map_err(|e| {
        let path = e.path().to_string();
        RenderError::new(
            &format!("mail.{path}"),
            crate::http::sanitize_serde_message(&e.into_inner().to_string()),
        )
    })?;
    let out =
        crate::mail::build(draft, from).map_err(|e| RenderError::new("mail", e.to_string()))?;
    Ok((
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&out.mime),
        out.thread_id,
    ))
}

impl Renderer {
    /// The sandboxed environment with Conduit's filters (minijinja's builtins, no
    /// loader, no macros: the `macros` feature is off).
    pub fn new() -> Self {
        Renderer {
            env: configured(),
            compiled: std::sync::RwLock::new(configured()),
            kept: std::sync::atomic::AtomicUsize::new(0),
            expressions: std::sync::RwLock::new((Expressions::new(), 0)),
        }
    }

    /// Renders one request template against `ctx` (see [`super::template::render_context`]).
    /// Error fields are relative to the request (`body.subject`).
    pub fn render_request(
        &self,
        req: &RequestTemplate,
        ctx: &Arc<Value>,
    ) -> Result<RenderedRequest, RenderError> {
        let jctx = view(ctx);
        let ctx: &Value = ctx;
        let method = http::Method::from_bytes(req.method.as_bytes())
            .map_err(|_| RenderError::new("method", "not an HTTP method"))?;
        let path = self.render_path(&req.path, &jctx, ctx)?;
        let query = self.render_pairs(&req.query, "query", &jctx, ctx)?;
        let headers = self.render_pairs(&req.headers, "headers", &jctx, ctx)?;
        if let Some((name, _)) = headers.iter().find(|(_, v)| v.contains(['\r', '\n', '\0'])) {
            return Err(RenderError::new(
                &format!("headers.{name}"),
                "a header value cannot hold line breaks",
            ));
        }
        let body = match &req.body {
            None => None,
            Some(template) => {
                let body = self
                    .render_value(template, "body", &jctx, ctx)?
                    .unwrap_or(Value::Null);
                let size = json_size(&body);
                if size > MAX_BODY_BYTES {
                    return Err(RenderError::new(
                        "body",
                        format!("the rendered body is larger than {MAX_BODY_BYTES} bytes"),
                    ));
                }
                Some(body)
            }
        };
        let (body, mail) = match &req.mail {
            None => (body, None),
            Some(template) => {
                let draft = self
                    .render_value(template, "mail", &jctx, ctx)?
                    .unwrap_or(Value::Null);
                let from = ctx
                    .pointer("/connection/identity/email")
                    .and_then(Value::as_str);
                let raw = build_mail(&draft, from)?;
                let mut body = match body {
                    Some(Value::Object(o)) => o,
                    _ => Map::new(),
                };
                body.insert("raw".into(), Value::String(raw.0));
                if let Some(thread) = raw.1 {
                    body.insert("threadId".into(), Value::String(thread));
                }
                (Some(Value::Object(body)), Some(draft))
            }
        };
        Ok(RenderedRequest {
            method,
            path,
            origin: req.origin.clone(),
            query,
            headers,
            body,
            mail,
            csrf: req.csrf,
            effect: req.effect,
        })
    }

    /// Renders request `index` of `action`, error fields under `requests[index]`.
    pub fn render_action_request(
        &self,
        action: &Action,
        index: usize,
        ctx: &Arc<Value>,
    ) -> Result<RenderedRequest, RenderError> {
        let prefix = format!("requests[{index}]");
        let req = action
            .requests
            .get(index)
            .ok_or_else(|| RenderError::new(&prefix, "no such request"))?;
        self.render_request(req, ctx).map_err(|e| e.under(&prefix))
    }

    /// Evaluates a condition (`skip_if`): true or false; an undefined result is an error.
    pub fn condition(&self, expr: &str, ctx: &Arc<Value>) -> Result<bool, RenderError> {
        let jctx = view(ctx);
        let ctx: &Value = ctx;
        let value = self.eval(expr, "skip_if", &jctx, ctx)?;
        if value.is_undefined() {
            let missing = read_expression_paths(expr)
                .into_iter()
                .filter(|path| !path_present(ctx, path))
                .collect::<Vec<_>>();
            return Err(RenderError::new(
                "skip_if",
                format!("undefined: {}", missing.join(", ")),
            ));
        }
        Ok(value.is_true())
    }

    /// The action's outputs after its requests ran: `id` (a capture) and `url` (a
    /// template). A capture that the provider's answer did not hold is left out.
    pub fn outputs(
        &self,
        action: &Action,
        ctx: &Arc<Value>,
    ) -> Result<BTreeMap<String, String>, RenderError> {
        let mut out = BTreeMap::new();
        if let Some(name) = &action.outputs.id
            && let Some(value) = ctx.pointer(&format!("/captures/{}", pointer_escape(name)))
            && let Some(text) = scalar_text(value)
        {
            out.insert("id".to_owned(), text);
        }
        if let Some(template) = &action.outputs.url {
            let jctx = view(ctx);
            // The effect has happened by now: a link that cannot be built is left out
            // (and logged), never a reason to fail the step.
            match self.render_text(template, "outputs.url", None, &jctx, ctx) {
                Ok(url) => {
                    out.insert("url".to_owned(), url);
                }
                Err(e) => {
                    tracing::warn!(error = %e, action = %action.id, "output URL not rendered")
                }
            }
        }
        Ok(out)
    }

    /// Stores what `req` captures from the provider's `answer` into `ctx.captures`.
    /// A pointer the answer does not hold (or holds `null` at) captures nothing; a
    /// capture that is a template (a value known before the answer) is rendered.
    pub fn capture(&self, req: &RequestTemplate, answer: &Value, ctx: &mut Arc<Value>) {
        for (name, source) in &req.capture {
            if !source.starts_with('/') {
                continue;
            }
            if let Some(value) = answer.pointer(source).filter(|v| !v.is_null()) {
                set_capture(ctx, name, value.clone());
            }
        }
        self.known_captures(req, ctx);
    }

    /// The captures of `req` that are templates (values known before any answer, such
    /// as the record a path names): rendered from the context; one that renders empty or
    /// fails captures nothing.
    fn known_captures(&self, req: &RequestTemplate, ctx: &mut Arc<Value>) {
        let known: Vec<(&String, &String)> = req
            .capture
            .iter()
            .filter(|(_, source)| !source.starts_with('/'))
            .collect();
        if known.is_empty() {
            return;
        }
        let jctx = view(ctx);
        let rendered: Vec<(String, String)> = known
            .into_iter()
            .filter_map(|(name, source)| {
                self.render_text(source, "capture", None, &jctx, ctx)
                    .ok()
                    .filter(|v| !v.is_empty())
                    .map(|v| (name.clone(), v))
            })
            .collect();
        // The view shares the context: let go of it before changing the context, or
        // the change would copy it.
        drop(jctx);
        for (name, value) in rendered {
            set_capture(ctx, &name, Value::String(value));
        }
    }

    /// Reads the answer to a lookup request (`Idempotency::Lookup`): `Some(id)` when the
    /// effect already happened — the id is then also captured under the lookup's
    /// `into` — and `None` when it did not (the request may be sent again).
    pub fn lookup_found(
        &self,
        req: &RequestTemplate,
        answer: &Value,
        ctx: &mut Arc<Value>,
    ) -> Result<Option<Value>, RenderError> {
        let Some(Idempotency::Lookup { found, matcher, .. }) = &req.idempotency else {
            return Err(RenderError::new("idempotency", "not a lookup"));
        };
        let hit = match matcher {
            None => answer.pointer(found).cloned(),
            Some(m) => {
                let jctx = view(ctx);
                let (needle, exact) = match (&m.contains, &m.equals) {
                    (Some(t), _) => (t, false),
                    (None, Some(t)) => (t, true),
                    (None, None) => {
                        return Err(RenderError::new(
                            "idempotency.match",
                            "needs contains or equals",
                        ));
                    }
                };
                let needle = self.render_text(needle, "idempotency.match", None, &jctx, ctx)?;
                if needle.is_empty() {
                    // Every item contains the empty string: that proves nothing.
                    return Err(RenderError::new("idempotency.match", "renders empty"));
                }
                let items = answer
                    .pointer(&m.list)
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                items
                    .iter()
                    .find(|item| {
                        item.pointer(&m.field)
                            .and_then(scalar_text)
                            .is_some_and(|text| {
                                if exact {
                                    text == needle
                                } else {
                                    text.contains(&needle)
                                }
                            })
                    })
                    .and_then(|item| item.pointer(found).cloned())
            }
        };
        let hit = hit.filter(|v| !v.is_null());
        if let Some(value) = &hit
            && let Some(name) = req.lookup_capture()
        {
            set_capture(ctx, &name, value.clone());
            self.known_captures(req, ctx);
        }
        Ok(hit)
    }

    /// Compiles a template without rendering it: the minijinja error on bad syntax.
    pub(crate) fn compile(&self, source: &str) -> Result<(), Error> {
        self.env.template_from_str(source).map(|_| ())
    }

    fn render_path(
        &self,
        source: &str,
        jctx: &JinjaValue,
        ctx: &Value,
    ) -> Result<String, RenderError> {
        let path = self.render_text(source, "path", Some(PATH_TEMPLATE), jctx, ctx)?;
        if !(path.is_empty() || path.starts_with('/')) || path.starts_with("//") {
            return Err(RenderError::new(
                "path",
                "a path starts with / (or is empty)",
            ));
        }
        if path
            .split(['/', '?', '#'])
            .any(|segment| segment == ".." || segment == ".")
        {
            return Err(RenderError::new(
                "path",
                "a path cannot hold . or .. segments",
            ));
        }
        Ok(path)
    }

    fn render_pairs(
        &self,
        map: &BTreeMap<String, String>,
        kind: &str,
        jctx: &JinjaValue,
        ctx: &Value,
    ) -> Result<Vec<(String, String)>, RenderError> {
        let mut out = Vec::with_capacity(map.len());
        for (key, template) in map {
            let (name, optional) = optional_key(key);
            let field = format!("{kind}.{name}");
            let value = if let Some(expr) = single_expression(template) {
                let value = self.eval(expr, &field, jctx, ctx)?;
                if value.is_undefined() || value.is_none() {
                    if optional {
                        continue;
                    }
                    return Err(RenderError::new(
                        &field,
                        format!("undefined: {}", expr.trim()),
                    ));
                }
                text_of(&value)
            } else {
                self.render_text(template, &field, None, jctx, ctx)?
            };
            if optional && value.is_empty() {
                continue;
            }
            out.push((name.to_owned(), value));
        }
        Ok(out)
    }

    /// Renders a JSON template: `None` when an optional member renders to nothing.
    fn render_value(
        &self,
        template: &Value,
        field: &str,
        jctx: &JinjaValue,
        ctx: &Value,
    ) -> Result<Option<Value>, RenderError> {
        Ok(Some(match template {
            Value::String(source) => match single_expression(source) {
                Some(expr) => {
                    let value = self.eval(expr, field, jctx, ctx)?;
                    if value.is_undefined() {
                        return Err(RenderError::new(
                            field,
                            format!("undefined: {}", expr.trim()),
                        ));
                    }
                    let json = serde_json::to_value(&value)
                        .map_err(|_| RenderError::new(field, "the value has no JSON form"))?;
                    if json
                        .as_str()
                        .is_some_and(|s| s.chars().count() > MAX_LEAF_CHARS)
                    {
                        return Err(too_long(field));
                    }
                    json
                }
                None => Value::String(self.render_text(source, field, None, jctx, ctx)?),
            },
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    let field = format!("{field}[{i}]");
                    out.push(
                        self.render_value(item, &field, jctx, ctx)?
                            .unwrap_or(Value::Null),
                    );
                }
                Value::Array(out)
            }
            Value::Object(members) => {
                let mut out = Map::with_capacity(members.len());
                for (key, item) in members {
                    let (name, optional) = optional_key(key);
                    let field = format!("{field}.{name}");
                    let rendered = if optional {
                        match self.render_value(item, &field, jctx, ctx) {
                            Err(e) if e.message.starts_with("undefined: ") => None,
                            other => other?,
                        }
                    } else {
                        self.render_value(item, &field, jctx, ctx)?
                    };
                    match rendered {
                        Some(Value::Null) | None if optional => {}
                        Some(Value::String(s)) if optional && s.is_empty() => {}
                        Some(v) => {
                            out.insert(name.to_owned(), v);
                        }
                        None => {}
                    }
                }
                Value::Object(out)
            }
            other => other.clone(),
        }))
    }

    fn render_text(
        &self,
        source: &str,
        field: &str,
        name: Option<&'static str>,
        jctx: &JinjaValue,
        ctx: &Value,
    ) -> Result<String, RenderError> {
        // Kept under its kind (the name its auto-escaping goes by) and source.
        let key = format!("{}\u{1f}{source}", name.unwrap_or("text"));
        let rendered = match self.render_kept(&key, jctx) {
            Some(rendered) => rendered,
            None => {
                // A miss: compiled and rendered here, and kept for the next render (a
                // template that does not compile is never kept).
                let template = match name {
                    Some(name) => self.env.template_from_named_str(name, source),
                    None => self.env.template_from_str(source),
                }
                .map_err(|e| engine_error(&e, field, read_paths, source, ctx))?;
                let rendered = template.render(jctx.clone());
                self.keep(key, source);
                rendered
            }
        };
        let text = rendered.map_err(|e| engine_error(&e, field, read_paths, source, ctx))?;
        if text.chars().count() > MAX_LEAF_CHARS {
            return Err(too_long(field));
        }
        Ok(text)
    }

    /// Renders the kept template `key`, if it is kept.
    fn render_kept(&self, key: &str, jctx: &JinjaValue) -> Option<Result<String, Error>> {
        let env = self.compiled.read().ok()?;
        let template = env.get_template(key).ok()?;
        Some(template.render(jctx.clone()))
    }

    /// Keeps `source` compiled under `key` (starting afresh beyond
    /// [`COMPILED_MAX_BYTES`]; never one longer than [`COMPILED_MAX_SOURCE`]).
    fn keep(&self, key: String, source: &str) {
        use std::sync::atomic::Ordering;
        if source.len() > COMPILED_MAX_SOURCE {
            return;
        }
        let Ok(mut env) = self.compiled.write() else {
            return;
        };
        if self.kept.load(Ordering::Relaxed) + source.len() > COMPILED_MAX_BYTES {
            env.clear_templates();
            self.kept.store(0, Ordering::Relaxed);
        }
        if env.add_template_owned(key, source.to_owned()).is_ok() {
            self.kept.fetch_add(source.len(), Ordering::Relaxed);
        }
    }

    fn eval(
        &self,
        expr: &str,
        field: &str,
        jctx: &JinjaValue,
        ctx: &Value,
    ) -> Result<JinjaValue, RenderError> {
        let kept = self
            .expressions
            .read()
            .ok()
            .and_then(|kept| kept.0.get(expr).cloned());
        let compiled = match kept {
            Some(compiled) => compiled,
            None => {
                let compiled = std::sync::Arc::new(
                    EXPRESSION_ENV
                        .compile_expression_owned(expr.to_owned())
                        .map_err(|e| engine_error(&e, field, read_expression_paths, expr, ctx))?,
                );
                self.keep_expression(expr, &compiled);
                compiled
            }
        };
        compiled
            .eval(jctx.clone())
            .map_err(|e| engine_error(&e, field, read_expression_paths, expr, ctx))
    }

    /// Keeps a compiled expression (starting afresh beyond [`COMPILED_MAX_BYTES`];
    /// never one longer than [`COMPILED_MAX_SOURCE`]).
    fn keep_expression(&self, expr: &str, compiled: &std::sync::Arc<Expression<'static, 'static>>) {
        if expr.len() > COMPILED_MAX_SOURCE {
            return;
        }
        let Ok(mut kept) = self.expressions.write() else {
            return;
        };
        let (map, bytes) = &mut *kept;
        if *bytes + expr.len() > COMPILED_MAX_BYTES {
            map.clear();
            *bytes = 0;
        }
        if map.insert(expr.to_owned(), compiled.clone()).is_none() {
            *bytes += expr.len();
        }
    }
}

/// Bytes of `value` as JSON, counted without building the text.
fn json_size(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Writing to a counter cannot fail, and a JSON value always serialises.
    let _ = serde_json::to_writer(&mut count, value);
    count.0
}

fn too_long(field: &str) -> RenderError {
    RenderError::new(
        field,
        format!("the rendered value is longer than {MAX_LEAF_CHARS} characters"),
    )
}

/// `name?` → (`name`, optional).
fn optional_key(key: &str) -> (&str, bool) {
    match key.strip_suffix('?') {
        Some(name) => (name, true),
        None => (key, false),
    }
}

/// The expression of a leaf that is exactly one `{{ … }}`.
fn single_expression(source: &str) -> Option<&str> {
    let inner = source.strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.strip_prefix('-').unwrap_or(inner);
    let inner = inner.strip_suffix('-').unwrap_or(inner);
    let nested = ["{{", "}}", "{%", "%}", "{#", "#}"];
    (!nested.iter().any(|n| inner.contains(n))).then_some(inner)
}

/// What templates see of a render context: a view of the JSON converted into
/// minijinja's values member by member as a template reads them. A render reads a few
/// of the context's members (the event's contact and summary, a setting, a capture);
/// converting all of them for every render cost more than the reads. Maps and arrays
/// read through the view are views themselves; scalars are converted as minijinja's
/// serde conversion converts them, so a template sees the same values either way.
fn view(root: &Arc<Value>) -> JinjaValue {
    match &**root {
        Value::Object(_) | Value::Array(_) => JinjaValue::from_object(JsonView {
            root: root.clone(),
            path: Vec::new(),
        }),
        scalar => JinjaValue::from(Serde(scalar)),
    }
}

/// A map or array inside a shared JSON value: the value and the path to it.
#[derive(Debug)]
struct JsonView {
    root: Arc<Value>,
    path: Vec<Member>,
}

/// One step of a [`JsonView`]'s path.
#[derive(Debug, Clone)]
enum Member {
    Key(String),
    Index(usize),
}

impl JsonView {
    fn node(&self) -> Option<&Value> {
        let mut at = &*self.root;
        for member in &self.path {
            at = match member {
                Member::Key(key) => at.get(key.as_str())?,
                Member::Index(index) => at.get(*index)?,
            };
        }
        Some(at)
    }

    fn member(&self, member: Member, value: &Value) -> JinjaValue {
        match value {
            Value::Object(_) | Value::Array(_) => {
                let mut path = Vec::with_capacity(self.path.len() + 1);
                path.extend_from_slice(&self.path);
                path.push(member);
                JinjaValue::from_object(JsonView {
                    root: self.root.clone(),
                    path,
                })
            }
            scalar => JinjaValue::from(Serde(scalar)),
        }
    }
}

impl Object for JsonView {
    fn repr(self: &Arc<Self>) -> ObjectRepr {
        match self.node() {
            Some(Value::Array(_)) => ObjectRepr::Seq,
            _ => ObjectRepr::Map,
        }
    }

    fn get_value(self: &Arc<Self>, key: &JinjaValue) -> Option<JinjaValue> {
        match self.node()? {
            Value::Object(map) => {
                let key = key.as_str()?;
                let value = map.get(key)?;
                Some(self.member(Member::Key(key.to_owned()), value))
            }
            Value::Array(items) => {
                let index = key.as_usize()?;
                let value = items.get(index)?;
                Some(self.member(Member::Index(index), value))
            }
            _ => None,
        }
    }

    fn enumerate(self: &Arc<Self>) -> Enumerator {
        match self.node() {
            Some(Value::Object(map)) => {
                Enumerator::Values(map.keys().map(|k| JinjaValue::from(k.as_str())).collect())
            }
            Some(Value::Array(items)) => Enumerator::Seq(items.len()),
            _ => Enumerator::Empty,
        }
    }

    fn enumerator_len(self: &Arc<Self>) -> Option<usize> {
        match self.node() {
            Some(Value::Object(map)) => Some(map.len()),
            Some(Value::Array(items)) => Some(items.len()),
            _ => Some(0),
        }
    }
}

fn set_capture(ctx: &mut Arc<Value>, name: &str, value: Value) {
    if let Some(root) = Arc::make_mut(ctx).as_object_mut() {
        let captures = root
            .entry("captures")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(map) = captures.as_object_mut() {
            map.insert(name.to_owned(), value);
        }
    }
}

fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn pointer_escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// A value as text in a query or header: strings as they are, others as JSON.
fn text_of(value: &JinjaValue) -> String {
    match value.as_str() {
        Some(s) => s.to_owned(),
        None => value.to_string(),
    }
}

/// Maps an engine error to a [`RenderError`] that names undefined paths and never
/// carries a setting's value.
fn engine_error(
    e: &Error,
    field: &str,
    paths: fn(&str) -> Vec<String>,
    source: &str,
    ctx: &Value,
) -> RenderError {
    let message = match e.kind() {
        ErrorKind::UndefinedError => {
            let missing = paths(source)
                .into_iter()
                .filter(|path| !path_present(ctx, path))
                .collect::<Vec<_>>();
            if missing.is_empty() {
                "undefined value".to_owned()
            } else {
                format!("undefined: {}", missing.join(", "))
            }
        }
        ErrorKind::OutOfFuel => "the template does too much work (out of fuel)".to_owned(),
        kind => match e.detail() {
            Some(detail) => format!("{kind}: {}", scrub(detail, ctx)),
            None => kind.to_string(),
        },
    };
    RenderError {
        field: field.to_owned(),
        line: e.line(),
        message,
    }
}

/// The nested variable paths a template reads, sorted.
pub(crate) fn read_paths(source: &str) -> Vec<String> {
    let env = Environment::new();
    sorted(
        env.template_from_str(source)
            .map(|t| t.undeclared_variables(true)),
    )
}

/// The nested variable paths an expression reads, sorted.
pub(crate) fn read_expression_paths(expr: &str) -> Vec<String> {
    let env = Environment::new();
    sorted(
        env.compile_expression(expr)
            .map(|e| e.undeclared_variables(true)),
    )
}

fn sorted(paths: Result<std::collections::HashSet<String>, Error>) -> Vec<String> {
    let mut paths: Vec<String> = paths.unwrap_or_default().into_iter().collect();
    paths.sort();
    paths
}

/// Whether a dotted path (`contact.email`) resolves to a value in the context.
pub(crate) fn path_present(ctx: &Value, path: &str) -> bool {
    let mut at = ctx;
    for part in path.split('.') {
        match at.get(part) {
            Some(next) => at = next,
            None => return false,
        }
    }
    !at.is_null() && at.as_str().is_none_or(|s| !s.is_empty())
}

/// Removes setting values from an engine message (settings may be secrets).
fn scrub(detail: &str, ctx: &Value) -> String {
    let mut out = detail.to_owned();
    if let Some(settings) = ctx.get("settings").and_then(Value::as_object) {
        for value in settings.values() {
            if let Some(s) = value.as_str().filter(|s| s.len() >= 3) {
                out = out.replace(s, "…");
            }
        }
    }
    out
}

/// Prints values: `none` as nothing, and — in path templates — every printed value
/// percent-encoded as one path segment (all but unreserved characters, so a value
/// cannot close an OData key literal either); none or empty is an error there.
fn format_value(
    out: &mut minijinja::Output,
    state: &mut minijinja::State,
    value: &JinjaValue,
) -> Result<(), Error> {
    if value.is_undefined() {
        return Err(Error::new(ErrorKind::UndefinedError, "printed"));
    }
    let in_path = *state.auto_escape() == AutoEscape::Custom(PATH_TEMPLATE.into());
    if value.is_none() && !in_path {
        return Ok(());
    }
    if in_path {
        let text = text_of(value);
        if text.is_empty() || value.is_none() {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                "an empty path segment",
            ));
        }
        let mut encoded = String::with_capacity(text.len());
        for byte in text.bytes() {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
                encoded.push(char::from(byte));
            } else {
                let _ = write!(encoded, "%{byte:02X}");
            }
        }
        return out.write_str(&encoded).map_err(Error::from);
    }
    minijinja::escape_formatter(out, state, value)
}

// ---- Filters. Undefined and none pass through as none, so `key?` leaves drop them.

fn absent(v: &JinjaValue) -> bool {
    v.is_undefined() || v.is_none()
}

fn invalid(message: &str) -> Error {
    Error::new(ErrorKind::InvalidOperation, message.to_owned())
}

/// `+` and digits: spaces, dashes, dots and brackets removed; `00` becomes `+`.
fn filter_e164(v: &JinjaValue) -> Result<JinjaValue, Error> {
    if absent(v) {
        return Ok(JinjaValue::from(()));
    }
    let text = text_of(v);
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    let digits = if !text.trim_start().starts_with('+') {
        digits
            .strip_prefix("00")
            .map(str::to_owned)
            .unwrap_or(digits)
    } else {
        digits
    };
    if !(8..=15).contains(&digits.len()) {
        return Err(invalid("not a phone number"));
    }
    Ok(JinjaValue::from(format!("+{digits}")))
}

/// At most `length` characters (default 255), ending in `end` (default `…`) when cut.
fn filter_truncate(v: &JinjaValue, length: Option<usize>, end: Option<String>) -> JinjaValue {
    if absent(v) {
        return JinjaValue::from(());
    }
    let text = text_of(v);
    let length = length.unwrap_or(255);
    if text.chars().count() <= length {
        return JinjaValue::from(text);
    }
    let end = end.unwrap_or_else(|| "…".to_owned());
    let keep = length.saturating_sub(end.chars().count());
    let mut cut: String = text.chars().take(keep).collect();
    cut.push_str(&end);
    JinjaValue::from(cut)
}

fn parse_time(v: &JinjaValue) -> Result<OffsetDateTime, Error> {
    let text = text_of(v);
    OffsetDateTime::parse(&text, &Rfc3339)
        .map(|t| t.to_offset(time::UtcOffset::UTC))
        .map_err(|_| invalid("not an RFC 3339 time"))
}

/// An RFC 3339 time in UTC, formatted with a `time` format description
/// (`[year]-[month]-[day] [hour]:[minute]`).
fn filter_date(v: &JinjaValue, format: &str) -> Result<JinjaValue, Error> {
    if absent(v) {
        return Ok(JinjaValue::from(()));
    }
    let when = parse_time(v)?;
    let description = time::format_description::parse_borrowed::<2>(format)
        .map_err(|_| invalid("not a date format"))?;
    when.format(&description)
        .map(JinjaValue::from)
        .map_err(|_| invalid("the date does not fit the format"))
}

/// An RFC 3339 time `days` later (UTC).
fn filter_add_days(v: &JinjaValue, days: i64) -> Result<JinjaValue, Error> {
    if absent(v) {
        return Ok(JinjaValue::from(()));
    }
    if !(-3660..=3660).contains(&days) {
        return Err(invalid("days out of range"));
    }
    let when = parse_time(v)? + time::Duration::days(days);
    when.format(&Rfc3339)
        .map(JinjaValue::from)
        .map_err(|_| invalid("the date cannot be written"))
}

/// An RFC 3339 time `minutes` later (UTC), within a year either way.
fn filter_add_minutes(v: &JinjaValue, minutes: i64) -> Result<JinjaValue, Error> {
    if absent(v) {
        return Ok(JinjaValue::from(()));
    }
    if !(-527_040..=527_040).contains(&minutes) {
        return Err(invalid("minutes out of range (a year either way)"));
    }
    let when = parse_time(v)? + time::Duration::minutes(minutes);
    when.format(&Rfc3339)
        .map(JinjaValue::from)
        .map_err(|_| invalid("the date cannot be written"))
}

fn seconds(v: &JinjaValue) -> Result<u64, Error> {
    u64::try_from(v.clone()).map_err(|_| invalid("not a number of seconds"))
}

/// Seconds as `mm:ss` (minutes may pass 59).
fn filter_mmss(v: &JinjaValue) -> Result<JinjaValue, Error> {
    if absent(v) {
        return Ok(JinjaValue::from(()));
    }
    let s = seconds(v)?;
    Ok(JinjaValue::from(format!("{:02}:{:02}", s / 60, s % 60)))
}

/// Seconds as `HH:MM` (minutes rounded down).
fn filter_hhmm(v: &JinjaValue) -> Result<JinjaValue, Error> {
    if absent(v) {
        return Ok(JinjaValue::from(()));
    }
    let s = seconds(v)?;
    Ok(JinjaValue::from(format!(
        "{:02}:{:02}",
        s / 3600,
        (s % 3600) / 60
    )))
}

/// All words of a name but the last (none for a one-word name).
fn filter_first_name(v: &JinjaValue) -> JinjaValue {
    if absent(v) {
        return JinjaValue::from(());
    }
    let text = text_of(v);
    let words: Vec<&str> = text.split_whitespace().collect();
    match words.split_last() {
        Some((_, rest)) if !rest.is_empty() => JinjaValue::from(rest.join(" ")),
        _ => JinjaValue::from(()),
    }
}

/// The last word of a name.
fn filter_last_name(v: &JinjaValue) -> JinjaValue {
    if absent(v) {
        return JinjaValue::from(());
    }
    let text = text_of(v);
    match text.split_whitespace().last() {
        Some(last) => JinjaValue::from(last),
        None => JinjaValue::from(()),
    }
}

/// Escaped for a SOQL string literal (`\`, `'`, `"`, line breaks).
fn filter_soql(v: &JinjaValue) -> Result<JinjaValue, Error> {
    if absent(v) {
        return Err(Error::new(ErrorKind::UndefinedError, "soql"));
    }
    let mut out = String::new();
    for c in text_of(v).chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c => out.push(c),
        }
    }
    Ok(JinjaValue::from(out))
}

/// Escaped for an OData string literal (`'` doubled).
fn filter_odata(v: &JinjaValue) -> Result<JinjaValue, Error> {
    if absent(v) {
        return Err(Error::new(ErrorKind::UndefinedError, "odata"));
    }
    Ok(JinjaValue::from(text_of(v).replace('\'', "''")))
}

/// Escaped for HTML text and attributes (`&`, `<`, `>`, `"`, `'`); slashes stay.
fn filter_html(v: &JinjaValue) -> JinjaValue {
    if absent(v) {
        return JinjaValue::from(());
    }
    let mut out = String::new();
    for c in text_of(v).chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    JinjaValue::from(out)
}

/// The SHA-256 of a text, in lowercase hex (64 characters of `0-9a-f`: an id a
/// provider derives nothing from, valid where ids are base32hex, as Google Calendar's).
fn filter_digest(v: &JinjaValue) -> JinjaValue {
    use sha2::Digest as _;
    let hash = sha2::Sha256::digest(text_of(v).as_bytes());
    let mut out = String::with_capacity(64);
    for b in hash {
        let _ = write!(out, "{b:02x}");
    }
    JinjaValue::from(out)
}

/// `scheme://host[:port]` of a URL.
fn filter_origin(v: &JinjaValue) -> Result<JinjaValue, Error> {
    let url = url::Url::parse(&text_of(v)).map_err(|_| invalid("not a URL"))?;
    Ok(JinjaValue::from(url.origin().ascii_serialization()))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use serde_json::json;

    use super::*;
    use crate::dispatch::template::{LookupMatch, Outputs};

    /// The test context, shared as the dispatcher shares it.
    fn ctx() -> Arc<Value> {
        Arc::new(json_ctx())
    }

    fn json_ctx() -> Value {
        json!({
            "type": "conversation_ended", "event_id": "evt_1", "tenant_id": "acme",
            "occurred_at": "2026-12-05T10:00:00+10:00",
            "conversation": {"id": "conv_9", "channel": "voice", "duration_seconds": 312,
                "summary": "Broken \"}, \"admin\": true, {\" light"},
            "contact": {"name": "Ada María Lovelace", "phone": "+61 2 5555 0100", "crm_ids": {"x": "../../admin?x=1"}},
            "custom_fields": {}, "settings": {"token": "s3cr3t-value"},
            "connection": {"api_base": "https://acme.example.test:8443/api/v2"},
            "steps": {}, "captures": {}, "idempotency_key": "evt_1:int_1",
        })
    }

    /// Templates see the same values through the lazy view as through minijinja's
    /// serde conversion of the whole context: printed, typed, iterated, compared,
    /// tested, filtered and serialised.
    #[test]
    fn the_view_reads_as_the_converted_context_does() {
        let mut json = json_ctx();
        json["list"] = json!([1, -2, 3.5, "four", null, true, {"k": "v"}, [5, 6]]);
        json["nested"] =
            json!({"b": {"c": [{"d": 1}, {"d": 2}]}, "a": "", "empty": {}, "none": []});
        json["big"] = json!(u64::MAX);
        let ctx = Arc::new(json);
        let eager = JinjaValue::from(Serde(&*ctx));
        let lazy = view(&ctx);
        let env = configured();
        let templates = [
            "{{ contact }}",
            "{{ contact.crm_ids }}",
            "{{ list }}",
            "{{ list | tojson }}",
            "{{ nested | tojson }}",
            "{{ contact | tojson }}",
            "{{ list | length }} {{ contact | length }} {{ nested.empty | length }}",
            "{% for k, v in contact | items %}{{ k }}={{ v }};{% endfor %}",
            "{% for k in contact %}{{ k }},{% endfor %}",
            "{% for x in list %}{{ loop.index }}:{{ x }};{% endfor %}",
            "{% for x in nested.b.c %}{{ x.d }}{% endfor %}",
            "{{ list[0] }} {{ list[-1] }} {{ list[6].k }} {{ list[7][1] }} {{ list | first }} {{ list | last }}",
            "{{ 'name' in contact }} {{ 'nope' in contact }} {{ 3.5 in list }} {{ 'four' in list }}",
            "{{ contact is mapping }} {{ list is sequence }} {{ list is mapping }} {{ nested.empty is mapping }}",
            "{{ nested.empty is true }}{% if nested.empty %}full{% else %}empty{% endif %}{% if nested.none %}x{% else %}y{% endif %}{% if contact %}c{% endif %}",
            "{{ nested.b.c | map(attribute='d') | join(',') }} {{ list | select('number') | list }}",
            "{{ contact | dictsort }} {{ nested.missing | default('dflt') }} {{ nested.a | default('dflt', true) }}",
            "{{ contact == contact }} {{ nested.b == {'c': [{'d': 1}, {'d': 2}]} }} {{ list[7] == [5, 6] }}",
            "{{ conversation.duration_seconds * 2 }} {{ conversation.duration_seconds | mmss }} {{ big }} {{ list[2] }}",
            "{{ contact.crm_ids.x }} {{ contact.name | first_name }} {{ conversation.summary | tojson }}",
            "{{ list | reverse | list }} {{ contact | list }} {{ contact | items | list | length }}",
            "{{ nested.b.c[0] | tojson }} {{ nested | dictsort | first }} {{ [contact, list] | tojson }}",
        ];
        for source in templates {
            let template = env.template_from_str(source).unwrap();
            let rendered = template.render(lazy.clone());
            assert!(rendered.is_ok(), "{source}: {rendered:?}");
            assert_eq!(
                rendered.unwrap(),
                template.render(eager.clone()).unwrap(),
                "{source}"
            );
        }
        for expr in [
            "contact",
            "list",
            "nested",
            "list[6]",
            "nested.b.c",
            "big",
            "conversation.duration_seconds",
            "nested.empty",
            "contact.crm_ids",
        ] {
            let compiled = env.compile_expression(expr).unwrap();
            let (a, b) = (
                compiled.eval(lazy.clone()).unwrap(),
                compiled.eval(eager.clone()).unwrap(),
            );
            assert_eq!(a, b, "{expr}");
            assert_eq!(
                serde_json::to_value(&a).unwrap(),
                serde_json::to_value(&b).unwrap(),
                "{expr}"
            );
        }
        for bad in [
            "{{ contact.nope }}",
            "{{ list[8] }}",
            "{{ nested.b.c[0].e }}",
            "{{ contact.name.x.y }}",
        ] {
            let template = env.template_from_str(bad).unwrap();
            let (a, b) = (
                template.render(lazy.clone()),
                template.render(eager.clone()),
            );
            assert!(a.is_err() && b.is_err(), "{bad}");
            assert_eq!(a.unwrap_err().kind(), b.unwrap_err().kind(), "{bad}");
        }
        // Rendering let go of the view: the context is changed in place, not copied.
        drop(lazy);
        let mut ctx = ctx;
        let at = Arc::as_ptr(&ctx);
        set_capture(&mut ctx, "id", json!(1));
        assert_eq!(Arc::as_ptr(&ctx), at);
        assert_eq!(ctx["captures"]["id"], 1);
    }

    fn request(body: Value) -> RequestTemplate {
        RequestTemplate {
            name: "r".to_owned(),
            method: "POST".to_owned(),
            path: "/things".to_owned(),
            origin: None,
            query: BTreeMap::new(),
            headers: BTreeMap::new(),
            body: Some(body),
            mail: None,
            skip_if: None,
            capture: BTreeMap::new(),
            effect: true,
            csrf: false,
            idempotency: Some(Idempotency::Upsert),
        }
    }

    fn render_body(body: Value) -> Result<Value, RenderError> {
        Renderer::new()
            .render_request(&request(body), &ctx())
            .map(|r| r.body.unwrap())
    }

    #[test]
    fn a_single_expression_keeps_its_type_and_text_stays_text() {
        let body = render_body(json!({
            "seconds": "{{ conversation.duration_seconds }}",
            "minutes": "{{ conversation.duration_seconds // 60 }}",
            "label": "{{ conversation.duration_seconds }}s",
            "flag": "{{ conversation.channel == 'voice' }}",
            "none": "{{ none }}",
            "object": "{{ {'id': conversation.id} }}",
            "literal": 7,
            "list": ["{{ conversation.id }}", "x"],
        }))
        .unwrap();
        assert_eq!(
            body,
            json!({"seconds": 312, "minutes": 5, "label": "312s", "flag": true, "none": null,
                "object": {"id": "conv_9"}, "literal": 7, "list": ["conv_9", "x"]})
        );
    }

    #[test]
    fn event_text_cannot_break_out_of_its_string() {
        let body = render_body(json!({"note": "Summary: {{ conversation.summary }}", "raw": "{{ conversation.summary }}"})).unwrap();
        let summary = "Broken \"}, \"admin\": true, {\" light";
        assert_eq!(body["note"], format!("Summary: {summary}"));
        assert_eq!(body["raw"], summary);
        assert_eq!(body.as_object().unwrap().len(), 2);
        assert!(body.get("admin").is_none());
    }

    #[test]
    fn strict_undefined_names_the_path() {
        let err = render_body(json!({"subject": "Hello {{ contact.nmae }}"})).unwrap_err();
        assert_eq!(err.field, "body.subject");
        assert!(err.message.contains("contact.nmae"), "{err}");
        let err = render_body(json!({"ticket": {"id": "{{ captures.ticket_id }}"}})).unwrap_err();
        assert_eq!(err.field, "body.ticket.id");
        assert!(err.message.contains("captures.ticket_id"), "{err}");
        // An optional member is dropped instead.
        let body = render_body(
            json!({"email?": "{{ contact.email }}", "name?": "{{ contact.name }}", "empty?": ""}),
        )
        .unwrap();
        assert_eq!(body, json!({"name": "Ada María Lovelace"}));
    }

    #[test]
    fn hostile_templates_stop_with_an_error_not_a_hang() {
        let started = Instant::now();
        let endless = "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}";
        let huge = "{{ 'x' * 50000000 }}";
        let doubling = format!(
            "{{% set a = 'x' * 1000 %}}{}{{{{ a|length }}}}",
            "{% set a = a ~ a %}".repeat(40)
        );
        let nested = format!("{{{{ {}1{} }}}}", "(".repeat(400), ")".repeat(400));
        for source in [endless, huge, doubling.as_str(), nested.as_str()] {
            let err = render_body(json!({"x": format!("a{source}")})).unwrap_err();
            assert_eq!(err.field, "body.x");
            assert!(!err.message.is_empty());
        }
        // A leaf that is one expression is bounded the same way.
        for expr in [
            "{{ 'x' * 50000000 }}",
            "{{ range(100000) | map('string') | join(',') * 1000 }}",
        ] {
            let err = render_body(json!({ "x": expr })).unwrap_err();
            assert!(err.message.contains("fuel"), "{expr}: {err}");
        }
        let err = render_body(json!({"x": format!("a{endless}")})).unwrap_err();
        assert!(err.message.contains("fuel"), "{err}");
        // Within the fuel, the size caps hold.
        let err = render_body(json!({"x": "{{ 'x' * 70000 }}"})).unwrap_err();
        assert!(err.message.contains("longer than"), "{err}");
        let leaves: Map<String, Value> = (0..6)
            .map(|i| (format!("k{i}"), json!("{{ 'y' * 60000 }}")))
            .collect();
        let err = render_body(Value::Object(leaves)).unwrap_err();
        assert!(err.message.contains("larger than"), "{err}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn kept_templates_render_as_freshly_compiled_ones() {
        use std::sync::atomic::Ordering::Relaxed;
        let renderer = Renderer::new();
        let body = json!({"note": "Call with {{ contact.name }} ({{ conversation.channel }})"});
        let first = renderer
            .render_request(&request(body.clone()), &ctx())
            .unwrap();
        let kept = renderer.kept.load(Relaxed);
        let mut other = json_ctx();
        other["contact"]["name"] = json!("Grace / Hopper");
        let second = renderer
            .render_request(&request(body), &Arc::new(other.clone()))
            .unwrap();
        assert_eq!(renderer.kept.load(Relaxed), kept, "compiled again");
        assert_eq!(
            first.body.unwrap()["note"],
            "Call with Ada María Lovelace (voice)"
        );
        assert_eq!(
            second.body.unwrap()["note"],
            "Call with Grace / Hopper (voice)"
        );
        // The same source in a path is kept apart, and encoded there.
        let mut req = request(json!({"n": "/n/{{ contact.name }}"}));
        req.path = "/n/{{ contact.name }}".to_owned();
        let rendered = renderer
            .render_request(&req, &Arc::new(other.clone()))
            .unwrap();
        assert_eq!(rendered.path, "/n/Grace%20%2F%20Hopper");
        assert_eq!(rendered.body.unwrap()["n"], "/n/Grace / Hopper");
        // A template that does not compile is refused every time, and never kept.
        let kept = renderer.kept.load(Relaxed);
        for _ in 0..2 {
            let bad = renderer.render_request(&request(json!({"x": "a {{ oops "})), &ctx());
            assert_eq!(bad.unwrap_err().field, "body.x");
        }
        assert_eq!(renderer.kept.load(Relaxed), kept);
        // Nor is a long one, which renders all the same.
        let long = format!("{}{{{{ contact.name }}}}", "x".repeat(COMPILED_MAX_SOURCE));
        let rendered = renderer.render_request(&request(json!({ "x": long })), &ctx());
        assert!(
            rendered.unwrap().body.unwrap()["x"]
                .as_str()
                .unwrap()
                .ends_with("xAda María Lovelace")
        );
        assert_eq!(renderer.kept.load(Relaxed), kept);
    }

    #[test]
    fn json_size_counts_the_bytes_of_the_text() {
        for v in [
            json!(null),
            json!({"a": [1, "é\n", {"b": true}]}),
            json!("x".repeat(70_000)),
        ] {
            assert_eq!(json_size(&v), serde_json::to_vec(&v).unwrap().len());
        }
    }

    #[test]
    fn kept_expressions_evaluate_as_freshly_compiled_ones() {
        let renderer = Renderer::new();
        let kept = |r: &Renderer| r.expressions.read().unwrap().0.len();
        let body = json!({"d": "{{ conversation.duration_seconds }}", "n": "{{ contact.name }}"});
        let first = renderer
            .render_request(&request(body.clone()), &ctx())
            .unwrap();
        assert_eq!(kept(&renderer), 2);
        let mut other = json_ctx();
        other["contact"]["name"] = json!("Grace Hopper");
        let second = renderer
            .render_request(&request(body.clone()), &Arc::new(other.clone()))
            .unwrap();
        assert_eq!(kept(&renderer), 2, "compiled again");
        // Typed as evaluated (a number stays a number), each from its own context.
        assert_eq!(
            first.body.as_ref().unwrap()["d"],
            ctx()["conversation"]["duration_seconds"]
        );
        assert_eq!(first.body.unwrap()["n"], "Ada María Lovelace");
        assert_eq!(second.body.unwrap()["n"], "Grace Hopper");
        // A kept expression that meets a context without its value names what is
        // missing, as a fresh one does.
        let mut bare = json_ctx();
        bare["contact"].as_object_mut().unwrap().remove("name");
        let err = renderer
            .render_request(&request(body), &Arc::new(bare.clone()))
            .unwrap_err();
        assert_eq!(err.field, "body.n");
        assert_eq!(err.message, "undefined: contact.name");
        // An expression that does not compile is refused every time and never kept.
        for _ in 0..2 {
            let bad = renderer.render_request(&request(json!({"x": "{{ a + }}"})), &ctx());
            assert_eq!(bad.unwrap_err().field, "body.x");
        }
        assert_eq!(kept(&renderer), 2);
    }

    #[test]
    fn paths_encode_values_and_headers_refuse_line_breaks() {
        let renderer = Renderer::new();
        let mut req = request(json!({}));
        req.path = "/contacts/{{ contact.crm_ids.x }}/notes".to_owned();
        let rendered = renderer.render_request(&req, &ctx()).unwrap();
        assert_eq!(rendered.path, "/contacts/..%2F..%2Fadmin%3Fx%3D1/notes");
        req.path = "/ServiceRequestCollection('{{ contact.name }}')/x/{{ none }}".to_owned();
        assert_eq!(
            renderer.render_request(&req, &ctx()).unwrap_err().field,
            "path"
        );
        req.path = "/ServiceRequestCollection('{{ contact.crm_ids.x ~ \"')(\" }}')".to_owned();
        assert_eq!(
            renderer.render_request(&req, &ctx()).unwrap().path,
            "/ServiceRequestCollection('..%2F..%2Fadmin%3Fx%3D1%27%29%28')"
        );
        req.path = "/contacts/{{ contact.crm_ids.x }}/notes".to_owned();
        let mut dots = json_ctx();
        dots["contact"]["crm_ids"]["x"] = json!("..");
        assert_eq!(
            renderer
                .render_request(&req, &Arc::new(dots.clone()))
                .unwrap_err()
                .field,
            "path"
        );
        req.path = "{{ connection.api_base }}".to_owned();
        assert_eq!(
            renderer.render_request(&req, &ctx()).unwrap_err().field,
            "path"
        );
        req.path = "/x".to_owned();
        req.headers.insert(
            "X-Note".to_owned(),
            "{{ conversation.summary }}\r\nX-Admin: 1".to_owned(),
        );
        assert_eq!(
            renderer.render_request(&req, &ctx()).unwrap_err().field,
            "headers.X-Note"
        );
        req.headers.clear();
        req.query.insert(
            "q".to_owned(),
            "{{ conversation.duration_seconds }}".to_owned(),
        );
        req.query
            .insert("email?".to_owned(), "{{ contact.email }}".to_owned());
        assert_eq!(
            renderer.render_request(&req, &ctx()).unwrap().query,
            vec![("q".to_owned(), "312".to_owned())]
        );
    }

    #[test]
    fn errors_never_carry_setting_values() {
        let err = render_body(json!({"n": "{{ settings.token | int }}"})).unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
    }

    #[test]
    fn filters() {
        let body = render_body(json!({
            "e164": "{{ contact.phone | e164 }}",
            "first": "{{ contact.name | first_name }}",
            "last": "{{ contact.name | last_name }}",
            "cut": "{{ contact.name | truncate(8) }}",
            "date": "{{ occurred_at | date('[year]-[month]-[day] [hour]:[minute]') }}",
            "later": "{{ occurred_at | add_days(2) }}",
            "mmss": "{{ conversation.duration_seconds | mmss }}",
            "hhmm": "{{ 3720 | hhmm }}",
            "soql": "{{ \"O'Brien\\\\\" | soql }}",
            "odata": "{{ \"O'Brien\" | odata }}",
            "html": "{{ '<b>\"Tom & Jerry\"</b>' | html }}",
            "origin": "{{ connection.api_base | origin }}",
        }))
        .unwrap();
        assert_eq!(
            body,
            json!({"e164": "+61255550100", "first": "Ada María", "last": "Lovelace", "cut": "Ada Mar…",
                "date": "2026-12-05 00:00", "later": "2026-12-07T00:00:00Z", "mmss": "05:12", "hhmm": "01:02",
                "soql": "O\\'Brien\\\\", "odata": "O''Brien",
                "html": "&lt;b&gt;&quot;Tom &amp; Jerry&quot;&lt;/b&gt;", "origin": "https://acme.example.test:8443"})
        );
    }

    #[test]
    fn conditions_captures_lookups_and_outputs() {
        let renderer = Renderer::new();
        let mut c = ctx();
        assert!(
            !renderer
                .condition("captures.contact_id is defined", &c)
                .unwrap()
        );
        let err = renderer.condition("captures.contact_id", &c).unwrap_err();
        assert!(err.message.contains("captures.contact_id"), "{err}");

        let mut req = request(json!({}));
        req.capture
            .insert("contact_id".to_owned(), "/entities/0/id".to_owned());
        req.capture.insert("absent".to_owned(), "/nope".to_owned());
        renderer.capture(&req, &json!({"entities": [{"id": "c-1"}]}), &mut c);
        assert_eq!(c["captures"], json!({"contact_id": "c-1"}));
        assert!(
            renderer
                .condition("captures.contact_id is defined", &c)
                .unwrap()
        );

        let lookup = RequestTemplate {
            effect: false,
            idempotency: None,
            body: None,
            mail: None,
            ..request(json!({}))
        };
        let mut note = request(json!({}));
        note.capture.insert("note_id".to_owned(), "/id".to_owned());
        note.idempotency = Some(Idempotency::Lookup {
            request: Box::new(lookup),
            found: "/id".to_owned(),
            matcher: Some(LookupMatch {
                list: "/entities".to_owned(),
                field: "/noteText".to_owned(),
                contains: Some("Ref: {{ idempotency_key }}".to_owned()),
                equals: None,
            }),
            into: None,
        });
        let other = json!({"entities": [{"id": 7, "noteText": "Ref: evt_0:int_1"}]});
        assert_eq!(renderer.lookup_found(&note, &other, &mut c).unwrap(), None);
        let answer = json!({"entities": [{"id": 7, "noteText": "x"}, {"id": 8, "noteText": "Summary\nRef: evt_1:int_1"}]});
        assert_eq!(
            renderer.lookup_found(&note, &answer, &mut c).unwrap(),
            Some(json!(8))
        );
        assert_eq!(c["captures"]["note_id"], 8);

        let action = Action {
            id: "a".to_owned(),
            title: String::new(),
            description: String::new(),
            events: vec![],
            requires: vec![],
            settings: vec![],
            requests: vec![note],
            outputs: Outputs {
                id: Some("note_id".to_owned()),
                url: Some(
                    "{{ connection.api_base | origin }}/notes/{{ captures.note_id }}".to_owned(),
                ),
            },
            connection_kind: None,
            kb_import: false,
        };
        let out = renderer.outputs(&action, &c).unwrap();
        assert_eq!(out["id"], "8");
        assert_eq!(out["url"], "https://acme.example.test:8443/notes/8");
    }
}

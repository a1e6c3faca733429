//! Reads the AWS SAM template (`template.yaml`): parameters, resources, functions with
//! their build binary, environment, HttpApi routes and schedules, and the HTTP API's
//! authorizers and CORS settings. Values stay unresolved YAML (`!Ref`, `!GetAtt`, `!Sub`, `!Join`
//! in short or long form); [`crate::stack`] resolves them against the local stack.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use serde_yaml_ng::{Mapping, Value};

/// The SAM resource type of a function.
pub const FUNCTION_TYPE: &str = "AWS::Serverless::Function";
/// The SAM resource type of an HTTP API.
pub const HTTP_API_TYPE: &str = "AWS::Serverless::HttpApi";

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    /// Parameters by name.
    pub parameters: BTreeMap<String, Parameter>,
    /// Every resource by logical id.
    pub resources: BTreeMap<String, Resource>,
    /// Every `AWS::Serverless::Function` by logical id.
    pub functions: BTreeMap<String, Function>,
    /// Every `AWS::Serverless::HttpApi` by logical id.
    pub apis: BTreeMap<String, HttpApi>,
    /// The `Conditions` section: each condition's expression by name.
    pub conditions: BTreeMap<String, Value>,
}

/// A template parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Parameter {
    /// The parameter's name.
    pub name: String,
    /// Its CloudFormation type (`String`, `Number`, `CommaDelimitedList`, …).
    pub kind: String,
    /// Its default, as text.
    pub default: Option<String>,
    /// The values it may take (empty: any).
    pub allowed_values: Vec<String>,
}

impl Parameter {
    /// Whether the parameter's value is a list (`CommaDelimitedList` or `List<…>`).
    pub fn is_list(&self) -> bool {
        self.kind == "CommaDelimitedList" || self.kind.starts_with("List<")
    }
}

/// A resource: its logical id, type and unresolved properties.
#[derive(Debug, Clone)]
pub struct Resource {
    /// The logical id.
    pub logical_id: String,
    /// The resource type, e.g. `AWS::DynamoDB::Table`.
    pub kind: String,
    /// The `Properties` mapping (`Null` when absent).
    pub properties: Value,
    /// The explicit `DependsOn` logical ids.
    pub depends_on: Vec<String>,
    /// The `Condition` it is created under, if any.
    pub condition: Option<String>,
}

impl Resource {
    /// A property by name, if present.
    pub fn property(&self, name: &str) -> Option<&Value> {
        self.properties.get(name)
    }
}

/// A serverless function.
#[derive(Debug, Clone)]
pub struct Function {
    /// The logical id, e.g. `CredentialsFunction`.
    pub logical_id: String,
    /// `Metadata.BuildProperties.Binary`: the cargo binary the function runs.
    pub binary: String,
    /// `Environment.Variables` merged over `Globals.Function.Environment.Variables`,
    /// unresolved.
    pub environment: BTreeMap<String, Value>,
    /// `Timeout` in seconds (the function's or the global one).
    pub timeout_secs: Option<u64>,
    /// Its `HttpApi` events.
    pub routes: Vec<Route>,
    /// Its `Schedule` and `ScheduleV2` events.
    pub schedules: Vec<Schedule>,
    /// Its `SQS` events: the queues Lambda polls into it.
    pub sqs_sources: Vec<SqsSource>,
    /// `ReservedConcurrentExecutions`, if given.
    pub reserved_concurrency: Option<u32>,
    /// `RecursiveLoop`: what Lambda does with an invocation that continues a loop.
    pub recursive_loop: RecursiveLoop,
    /// `FunctionName`, unresolved, if given (else the name is generated).
    pub function_name: Option<Value>,
    /// Its other events as (name, type); the dev host does not drive these.
    pub other_events: Vec<(String, String)>,
}

/// A function's `RecursiveLoop` setting: whether Lambda stops a chain of invocations
/// it sees looping through SQS, SNS or S3 (see [`crate::trace`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RecursiveLoop {
    /// Lambda's default: the invocation after the 16th of one chain is stopped.
    #[default]
    Terminate,
    /// The chain is intended; nothing is stopped.
    Allow,
}

/// The largest `BatchSize` of an SQS event source on a standard queue.
pub const MAX_SQS_BATCH_SIZE: u32 = 10_000;
/// The `BatchSize` of an SQS event source that gives none.
pub const DEFAULT_SQS_BATCH_SIZE: u32 = 10;

/// An `SQS` event: a Lambda event source mapping polling a queue into the function.
#[derive(Debug, Clone, PartialEq)]
pub struct SqsSource {
    /// The logical id of the function it invokes.
    pub function: String,
    /// The event's name in the template.
    pub event: String,
    /// `Queue`: the queue's ARN, unresolved (e.g. `!GetAtt SyncQueue.Arn`).
    pub queue: Value,
    /// `BatchSize` (default 10; up to 10,000, more than 10 only with a batching window).
    pub batch_size: u32,
    /// `MaximumBatchingWindowInSeconds` (default: none, a batch is what one poll
    /// returns).
    pub batching_window: Option<Duration>,
    /// Whether `FunctionResponseTypes` holds `ReportBatchItemFailures`.
    pub report_batch_item_failures: bool,
    /// `ScalingConfig.MaximumConcurrency`, if given.
    pub maximum_concurrency: Option<u32>,
    /// `Enabled` (default: true).
    pub enabled: bool,
}

/// A `Schedule` (or `ScheduleV2`) event: EventBridge invokes the function at a fixed
/// rate or on a cron expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The logical id of the function it invokes.
    pub function: String,
    /// The event's name in the template.
    pub event: String,
    /// `Schedule` (or `ScheduleExpression` of a `ScheduleV2`).
    pub expression: ScheduleExpression,
    /// `Enabled` / `State` (default: enabled).
    pub enabled: bool,
    /// `Input`: the JSON EventBridge sends instead of the scheduled event, if given.
    pub input: Option<String>,
}

/// An EventBridge schedule expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleExpression {
    /// `rate(N minute|minutes|hour|hours|day|days)`.
    Rate(Duration),
    /// `cron(minutes hours day-of-month month day-of-week year)`, kept as written.
    Cron(String),
}

impl ScheduleExpression {
    /// Parses `rate(…)` or `cron(…)` as EventBridge accepts them: a positive whole
    /// number with the singular unit for 1 and the plural otherwise; six cron fields.
    pub fn parse(text: &str) -> Result<Self> {
        let text = text.trim();
        if let Some(inner) = text.strip_prefix("rate(").and_then(|t| t.strip_suffix(')')) {
            let (count, unit) = inner
                .trim()
                .split_once(' ')
                .ok_or_else(|| anyhow!("{text:?}: a rate is rate(N unit)"))?;
            let count: u64 = count
                .parse()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| anyhow!("{text:?}: the rate must be a positive whole number"))?;
            let unit = unit.trim();
            let (singular, seconds) = match unit.trim_end_matches('s') {
                "minute" => ("minute", 60),
                "hour" => ("hour", 3600),
                "day" => ("day", 86_400),
                _ => bail!("{text:?}: the unit must be minute(s), hour(s) or day(s)"),
            };
            let wanted = if count == 1 {
                singular.to_owned()
            } else {
                format!("{singular}s")
            };
            if unit != wanted {
                bail!("{text:?}: EventBridge wants rate({count} {wanted})");
            }
            let every = count
                .checked_mul(seconds)
                .ok_or_else(|| anyhow!("{text:?}: the rate is too long"))?;
            return Ok(Self::Rate(Duration::from_secs(every)));
        }
        if let Some(inner) = text.strip_prefix("cron(").and_then(|t| t.strip_suffix(')')) {
            let fields = inner.split_whitespace().count();
            if fields != 6 {
                bail!("{text:?}: a cron expression has six fields, not {fields}");
            }
            return Ok(Self::Cron(
                inner.split_whitespace().collect::<Vec<_>>().join(" "),
            ));
        }
        bail!("{text:?} is neither rate(…) nor cron(…)")
    }

    /// The period of a rate expression; `None` for cron.
    pub fn period(&self) -> Option<Duration> {
        match self {
            Self::Rate(every) => Some(*every),
            Self::Cron(_) => None,
        }
    }
}

impl fmt::Display for ScheduleExpression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cron(fields) => write!(f, "cron({fields})"),
            Self::Rate(every) => {
                let secs = every.as_secs();
                let (count, unit) = if secs % 86_400 == 0 {
                    (secs / 86_400, "day")
                } else if secs % 3600 == 0 {
                    (secs / 3600, "hour")
                } else {
                    (secs / 60, "minute")
                };
                let plural = if count == 1 { "" } else { "s" };
                write!(f, "rate({count} {unit}{plural})")
            }
        }
    }
}

/// An `HttpApi` event: one route of the HTTP API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The logical id of the function serving it.
    pub function: String,
    /// The event's name in the template.
    pub event: String,
    /// The method, upper-case (`ANY` matches every method).
    pub method: String,
    /// The path template, e.g. `/v1/connections/{id}`.
    pub path: String,
    /// The logical id of the API (`ApiId`), if given.
    pub api: Option<String>,
    /// The authorizer protecting the route; `None` when public (`Authorizer: NONE` or
    /// no authorizer configured).
    pub authorizer: Option<String>,
    /// `AuthorizationScopes`: the token needs at least one of these (empty: no check).
    pub scopes: Vec<String>,
}

impl Route {
    /// Whether the route is public (no authorizer).
    pub fn is_public(&self) -> bool {
        self.authorizer.is_none()
    }

    /// The API Gateway route key, e.g. `GET /v1/connections/{id}`.
    pub fn route_key(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

/// An `AWS::Serverless::HttpApi`: its authorizers and CORS configuration.
#[derive(Debug, Clone)]
pub struct HttpApi {
    /// The logical id.
    pub logical_id: String,
    /// `Auth.DefaultAuthorizer`.
    pub default_authorizer: Option<String>,
    /// `Auth.Authorizers` with a `JwtConfiguration`, by name.
    pub authorizers: BTreeMap<String, JwtAuthorizer>,
    /// `CorsConfiguration`, unresolved.
    pub cors: Option<Value>,
    /// `DefaultRouteSettings` (throttling), unresolved.
    pub route_settings: Option<Value>,
    /// `RouteSettings` (each route's own throttling, by route key), unresolved.
    pub per_route_settings: Option<Value>,
}

/// A JWT authorizer of an HTTP API.
#[derive(Debug, Clone)]
pub struct JwtAuthorizer {
    /// The authorizer's name.
    pub name: String,
    /// `JwtConfiguration.issuer`, unresolved.
    pub issuer: Value,
    /// `JwtConfiguration.audience`, unresolved (a list).
    pub audience: Value,
    /// `IdentitySource`, e.g. `$request.header.Authorization`.
    pub identity_source: String,
}

impl JwtAuthorizer {
    /// The header holding the token (lower-case), from `IdentitySource`.
    pub fn header(&self) -> String {
        self.identity_source
            .strip_prefix("$request.header.")
            .unwrap_or("Authorization")
            .to_ascii_lowercase()
    }
}

/// An intrinsic function call found in a template value: its long name (`Ref`,
/// `Fn::GetAtt`, `Fn::Sub`, …) and its argument.
pub fn intrinsic(value: &Value) -> Option<(String, &Value)> {
    match value {
        Value::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let tag = tag.trim_start_matches('!');
            let name = if tag == "Ref" || tag == "Condition" {
                tag.to_owned()
            } else {
                format!("Fn::{tag}")
            };
            Some((name, &tagged.value))
        }
        Value::Mapping(map) if map.len() == 1 => {
            let (key, arg) = map.iter().next()?;
            let key = key.as_str()?;
            (key == "Ref" || key.starts_with("Fn::")).then(|| (key.to_owned(), arg))
        }
        _ => None,
    }
}

/// The logical id a `Ref` (short or long form) points at, if `value` is one.
pub fn ref_target(value: &Value) -> Option<&str> {
    match intrinsic(value) {
        Some((name, arg)) if name == "Ref" => arg.as_str(),
        _ => None,
    }
}

/// Every logical id or parameter `value` refers to (through `Ref`, `Fn::GetAtt` and
/// `Fn::Sub` variables), pseudo parameters excluded.
pub fn references(value: &Value) -> Vec<String> {
    let mut out = Vec::new();
    collect_references(value, &mut out);
    out.sort();
    out.dedup();
    out
}

fn collect_references(value: &Value, out: &mut Vec<String>) {
    if let Some((name, arg)) = intrinsic(value) {
        match name.as_str() {
            "Ref" => {
                if let Some(target) = arg.as_str().filter(|t| !t.starts_with("AWS::")) {
                    out.push(target.to_owned());
                }
                return;
            }
            "Fn::GetAtt" => {
                match arg {
                    Value::String(s) => {
                        if let Some((id, _)) = s.split_once('.') {
                            out.push(id.to_owned());
                        }
                    }
                    Value::Sequence(seq) => {
                        if let Some(id) = seq.first().and_then(Value::as_str) {
                            out.push(id.to_owned());
                        }
                    }
                    _ => {}
                }
                return;
            }
            "Fn::Sub" => {
                let (text, vars) = match arg {
                    Value::String(s) => (Some(s.as_str()), None),
                    Value::Sequence(seq) => (seq.first().and_then(Value::as_str), seq.get(1)),
                    _ => (None, None),
                };
                let local: Vec<&str> = match vars {
                    Some(Value::Mapping(m)) => m.keys().filter_map(Value::as_str).collect(),
                    _ => Vec::new(),
                };
                if let Some(text) = text {
                    for var in sub_variables(text) {
                        let id = var.split('.').next().unwrap_or(var);
                        if !id.starts_with("AWS::") && !local.contains(&var) {
                            out.push(id.to_owned());
                        }
                    }
                }
                if let Some(vars) = vars {
                    collect_references(vars, out);
                }
                return;
            }
            _ => {}
        }
    }
    match value {
        Value::Sequence(seq) => seq.iter().for_each(|v| collect_references(v, out)),
        Value::Mapping(map) => map.values().for_each(|v| collect_references(v, out)),
        Value::Tagged(tagged) => collect_references(&tagged.value, out),
        _ => {}
    }
}

/// The `${…}` variable names of a `Fn::Sub` string (literals `${!…}` excluded).
pub fn sub_variables(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else { break };
        let name = &after[..end];
        if !name.starts_with('!') {
            out.push(name.trim());
        }
        rest = &after[end + 1..];
    }
    out
}

impl Template {
    /// Reads and parses the template at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the SAM template {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("parsing the SAM template {}", path.display()))
    }

    /// Parses a template from YAML text.
    pub fn parse(text: &str) -> Result<Self> {
        let root: Value =
            serde_yaml_ng::from_str(text).context("the template is not valid YAML")?;
        let root = root
            .as_mapping()
            .ok_or_else(|| anyhow!("the template's top level is not a mapping"))?;

        let parameters = parse_parameters(root.get("Parameters"))?;
        let globals_fn = root.get("Globals").and_then(|g| g.get("Function"));
        let global_env = environment_of(globals_fn).context("Globals.Function.Environment")?;
        let global_timeout = globals_fn
            .and_then(|g| g.get("Timeout"))
            .and_then(Value::as_u64);
        let mut global_env = global_env;
        global_env.extend(log_level_of(globals_fn));
        let conditions = root
            .get("Conditions")
            .and_then(Value::as_mapping)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.clone())))
                    .collect()
            })
            .unwrap_or_default();

        let resources_map = root
            .get("Resources")
            .and_then(Value::as_mapping)
            .ok_or_else(|| anyhow!("the template has no Resources mapping"))?;
        let mut resources = BTreeMap::new();
        for (key, body) in resources_map {
            let logical_id = key
                .as_str()
                .ok_or_else(|| anyhow!("a resource's logical id is not a string"))?
                .to_owned();
            let kind = body
                .get("Type")
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("resource {logical_id} has no Type"))?
                .to_owned();
            let depends_on = match body.get("DependsOn") {
                None => Vec::new(),
                Some(Value::String(s)) => vec![s.clone()],
                Some(Value::Sequence(seq)) => seq
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
                Some(_) => bail!("resource {logical_id}: DependsOn must be a string or a list"),
            };
            let properties = body.get("Properties").cloned().unwrap_or(Value::Null);
            let condition = match body.get("Condition") {
                None => None,
                Some(Value::String(name)) => Some(name.clone()),
                Some(_) => bail!("resource {logical_id}: Condition must be a condition's name"),
            };
            resources.insert(
                logical_id.clone(),
                Resource {
                    logical_id,
                    kind,
                    properties,
                    depends_on,
                    condition,
                },
            );
        }

        let mut apis = BTreeMap::new();
        for res in resources.values().filter(|r| r.kind == HTTP_API_TYPE) {
            apis.insert(
                res.logical_id.clone(),
                parse_api(res).with_context(|| format!("HTTP API {}", res.logical_id))?,
            );
        }

        let mut functions = BTreeMap::new();
        for (key, body) in resources_map {
            if body.get("Type").and_then(Value::as_str) != Some(FUNCTION_TYPE) {
                continue;
            }
            let logical_id = key.as_str().unwrap_or_default().to_owned();
            let function = parse_function(&logical_id, body, &global_env, global_timeout, &apis)
                .with_context(|| format!("function {logical_id}"))?;
            functions.insert(logical_id, function);
        }

        Ok(Self {
            parameters,
            resources,
            functions,
            apis,
            conditions,
        })
    }

    /// Every schedule of every function.
    pub fn schedules(&self) -> Vec<Schedule> {
        self.functions
            .values()
            .flat_map(|f| f.schedules.iter().cloned())
            .collect()
    }

    /// Every HttpApi route of every function.
    pub fn routes(&self) -> Vec<Route> {
        self.functions
            .values()
            .flat_map(|f| f.routes.iter().cloned())
            .collect()
    }

    /// The function with this logical id or build binary name.
    pub fn function(&self, name: &str) -> Option<&Function> {
        self.functions
            .get(name)
            .or_else(|| self.functions.values().find(|f| f.binary == name))
    }

    /// The HTTP API serving `route` (its `ApiId`, else the template's only API).
    pub fn api_of(&self, route: &Route) -> Option<&HttpApi> {
        match &route.api {
            Some(id) => self.apis.get(id),
            None if self.apis.len() == 1 => self.apis.values().next(),
            None => None,
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

fn parse_parameters(section: Option<&Value>) -> Result<BTreeMap<String, Parameter>> {
    let mut out = BTreeMap::new();
    let Some(section) = section else {
        return Ok(out);
    };
    let map = section
        .as_mapping()
        .ok_or_else(|| anyhow!("Parameters is not a mapping"))?;
    for (key, body) in map {
        let name = key
            .as_str()
            .ok_or_else(|| anyhow!("a parameter's name is not a string"))?
            .to_owned();
        let kind = body
            .get("Type")
            .and_then(Value::as_str)
            .ok_or_else(|| anyhow!("parameter {name} has no Type"))?
            .to_owned();
        let default = match body.get("Default") {
            None => None,
            Some(Value::Sequence(seq)) => Some(
                seq.iter()
                    .filter_map(scalar_text)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            Some(v) => Some(
                scalar_text(v)
                    .ok_or_else(|| anyhow!("parameter {name}: Default is not a scalar"))?,
            ),
        };
        let allowed_values = match body.get("AllowedValues") {
            Some(Value::Sequence(seq)) => seq.iter().filter_map(scalar_text).collect(),
            _ => Vec::new(),
        };
        out.insert(
            name.clone(),
            Parameter {
                name,
                kind,
                default,
                allowed_values,
            },
        );
    }
    Ok(out)
}

fn environment_of(owner: Option<&Value>) -> Result<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    let Some(vars) = owner
        .and_then(|o| o.get("Environment"))
        .and_then(|e| e.get("Variables"))
    else {
        return Ok(out);
    };
    let map = vars
        .as_mapping()
        .ok_or_else(|| anyhow!("Environment.Variables is not a mapping"))?;
    for (k, v) in map {
        let name = k
            .as_str()
            .ok_or_else(|| anyhow!("an environment variable's name is not a string"))?;
        out.insert(name.to_owned(), v.clone());
    }
    Ok(out)
}

fn parse_api(res: &Resource) -> Result<HttpApi> {
    let auth = res.property("Auth");
    let default_authorizer = auth
        .and_then(|a| a.get("DefaultAuthorizer"))
        .and_then(Value::as_str)
        .filter(|name| *name != "NONE")
        .map(str::to_owned);
    let mut authorizers = BTreeMap::new();
    if let Some(map) = auth
        .and_then(|a| a.get("Authorizers"))
        .and_then(Value::as_mapping)
    {
        for (key, body) in map {
            let name = key
                .as_str()
                .ok_or_else(|| anyhow!("an authorizer's name is not a string"))?
                .to_owned();
            let Some(jwt) = body.get("JwtConfiguration") else {
                tracing::debug!(authorizer = %name, "not a JWT authorizer; the dev host ignores it");
                continue;
            };
            let issuer = jwt
                .get("issuer")
                .cloned()
                .ok_or_else(|| anyhow!("authorizer {name} has no JwtConfiguration.issuer"))?;
            let audience = jwt
                .get("audience")
                .cloned()
                .ok_or_else(|| anyhow!("authorizer {name} has no JwtConfiguration.audience"))?;
            let identity_source = body
                .get("IdentitySource")
                .and_then(Value::as_str)
                .unwrap_or("$request.header.Authorization")
                .to_owned();
            authorizers.insert(
                name.clone(),
                JwtAuthorizer {
                    name,
                    issuer,
                    audience,
                    identity_source,
                },
            );
        }
    }
    if let Some(name) = &default_authorizer
        && !authorizers.contains_key(name)
    {
        bail!("DefaultAuthorizer {name} is not among its JWT authorizers");
    }
    Ok(HttpApi {
        logical_id: res.logical_id.clone(),
        default_authorizer,
        authorizers,
        cors: res.property("CorsConfiguration").cloned(),
        route_settings: res.property("DefaultRouteSettings").cloned(),
        per_route_settings: res.property("RouteSettings").cloned(),
    })
}

fn parse_function(
    logical_id: &str,
    body: &Value,
    global_env: &BTreeMap<String, Value>,
    global_timeout: Option<u64>,
    apis: &BTreeMap<String, HttpApi>,
) -> Result<Function> {
    let binary = body
        .get("Metadata")
        .and_then(|m| m.get("BuildProperties"))
        .and_then(|b| b.get("Binary"))
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("no Metadata.BuildProperties.Binary (the cargo binary to run)"))?
        .to_owned();
    let props = body.get("Properties");
    let mut environment = global_env.clone();
    environment.extend(log_level_of(props));
    environment.extend(environment_of(props).context("Environment")?);
    let timeout_secs = props
        .and_then(|p| p.get("Timeout"))
        .and_then(Value::as_u64)
        .or(global_timeout);

    let mut routes = Vec::new();
    let mut schedules = Vec::new();
    let mut sqs_sources = Vec::new();
    let mut other_events = Vec::new();
    let empty = Mapping::new();
    let events = props
        .and_then(|p| p.get("Events"))
        .and_then(Value::as_mapping)
        .unwrap_or(&empty);
    for (key, event) in events {
        let name = key
            .as_str()
            .ok_or_else(|| anyhow!("an event's name is not a string"))?
            .to_owned();
        let kind = event
            .get("Type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if kind == "Schedule" || kind == "ScheduleV2" {
            schedules.push(
                parse_schedule(logical_id, &name, kind, event.get("Properties"))
                    .with_context(|| format!("event {name}"))?,
            );
            continue;
        }
        if kind == "SQS" {
            sqs_sources.push(
                parse_sqs(logical_id, &name, event.get("Properties"))
                    .with_context(|| format!("event {name}"))?,
            );
            continue;
        }
        if kind != "HttpApi" {
            other_events.push((name, kind.to_owned()));
            continue;
        }
        routes.push(
            parse_route(logical_id, &name, event.get("Properties"), apis)
                .with_context(|| format!("event {name}"))?,
        );
    }
    Ok(Function {
        logical_id: logical_id.to_owned(),
        binary,
        environment,
        timeout_secs,
        routes,
        schedules,
        sqs_sources,
        reserved_concurrency: match props.and_then(|p| p.get("ReservedConcurrentExecutions")) {
            None => None,
            Some(v) => Some(
                scalar_text(v)
                    .and_then(|t| t.parse().ok())
                    .ok_or_else(|| anyhow!("ReservedConcurrentExecutions must be a number"))?,
            ),
        },
        recursive_loop: match props
            .and_then(|p| p.get("RecursiveLoop"))
            .map(|v| scalar_text(v).unwrap_or_default())
            .as_deref()
        {
            None | Some("Terminate") => RecursiveLoop::Terminate,
            Some("Allow") => RecursiveLoop::Allow,
            Some(other) => bail!("RecursiveLoop must be Allow or Terminate, not {other:?}"),
        },
        function_name: props.and_then(|p| p.get("FunctionName")).cloned(),
        other_events,
    })
}

/// `LoggingConfig.ApplicationLogLevel` as Lambda passes it: `AWS_LAMBDA_LOG_LEVEL`.
fn log_level_of(owner: Option<&Value>) -> Option<(String, Value)> {
    let level = owner?.get("LoggingConfig")?.get("ApplicationLogLevel")?;
    Some(("AWS_LAMBDA_LOG_LEVEL".to_owned(), level.clone()))
}

fn parse_sqs(function: &str, event: &str, props: Option<&Value>) -> Result<SqsSource> {
    let props = props.ok_or_else(|| anyhow!("no Properties"))?;
    let queue = props
        .get("Queue")
        .cloned()
        .ok_or_else(|| anyhow!("no Queue (the queue's ARN)"))?;
    let number = |key: &str| -> Result<Option<u64>> {
        match props.get(key) {
            None => Ok(None),
            Some(v) => scalar_text(v)
                .and_then(|t| t.parse().ok())
                .map(Some)
                .ok_or_else(|| anyhow!("{key} must be a literal whole number for the local stack")),
        }
    };
    let batch_size = match number("BatchSize")? {
        None => DEFAULT_SQS_BATCH_SIZE,
        Some(n) if (1..=u64::from(MAX_SQS_BATCH_SIZE)).contains(&n) => n as u32,
        Some(n) => bail!("BatchSize {n} is not within 1..={MAX_SQS_BATCH_SIZE}"),
    };
    let batching_window = match number("MaximumBatchingWindowInSeconds")? {
        None => None,
        Some(n) if n <= 300 => Some(Duration::from_secs(n)),
        Some(n) => bail!("MaximumBatchingWindowInSeconds {n} is more than 300"),
    };
    if batch_size > 10 && batching_window.is_none_or(|w| w.is_zero()) {
        bail!(
            "BatchSize {batch_size} needs MaximumBatchingWindowInSeconds of at least 1 (Lambda \
             refuses more than 10 without a batching window)"
        );
    }
    let report_batch_item_failures = match props.get("FunctionResponseTypes") {
        None => false,
        Some(Value::Sequence(seq)) => {
            for t in seq {
                if t.as_str() != Some("ReportBatchItemFailures") {
                    bail!("FunctionResponseTypes may only hold ReportBatchItemFailures");
                }
            }
            !seq.is_empty()
        }
        Some(_) => bail!("FunctionResponseTypes must be a list"),
    };
    let maximum_concurrency = match props
        .get("ScalingConfig")
        .and_then(|c| c.get("MaximumConcurrency"))
    {
        None => None,
        Some(v) => match scalar_text(v).and_then(|t| t.parse::<u32>().ok()) {
            Some(n) if (2..=1000).contains(&n) => Some(n),
            _ => bail!("ScalingConfig.MaximumConcurrency must be a number within 2..=1000"),
        },
    };
    let enabled = match props.get("Enabled") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => bail!("Enabled must be true or false"),
    };
    Ok(SqsSource {
        function: function.to_owned(),
        event: event.to_owned(),
        queue,
        batch_size,
        batching_window,
        report_batch_item_failures,
        maximum_concurrency,
        enabled,
    })
}

fn parse_schedule(
    function: &str,
    event: &str,
    kind: &str,
    props: Option<&Value>,
) -> Result<Schedule> {
    let props = props.ok_or_else(|| anyhow!("no Properties"))?;
    let key = if kind == "ScheduleV2" {
        "ScheduleExpression"
    } else {
        "Schedule"
    };
    let expression = props.get(key).ok_or_else(|| anyhow!("no {key}"))?;
    let expression = match expression {
        Value::String(text) => text,
        _ => bail!("{key} must be a literal expression for the local stack"),
    };
    let expression = ScheduleExpression::parse(expression).with_context(|| key.to_owned())?;
    let enabled = match (props.get("Enabled"), props.get("State")) {
        (Some(Value::Bool(b)), _) => *b,
        (Some(_), _) => bail!("Enabled must be true or false"),
        (None, Some(state)) => match state.as_str() {
            Some("ENABLED") => true,
            Some("DISABLED") => false,
            _ => bail!("State must be ENABLED or DISABLED"),
        },
        (None, None) => true,
    };
    let input = match props.get("Input") {
        None => None,
        Some(Value::String(text)) => {
            serde_json::from_str::<serde_json::Value>(text)
                .context("Input must be a JSON document")?;
            Some(text.clone())
        }
        Some(_) => bail!("Input must be a JSON document as a string"),
    };
    Ok(Schedule {
        function: function.to_owned(),
        event: event.to_owned(),
        expression,
        enabled,
        input,
    })
}

fn parse_route(
    function: &str,
    event: &str,
    props: Option<&Value>,
    apis: &BTreeMap<String, HttpApi>,
) -> Result<Route> {
    let props = props.ok_or_else(|| anyhow!("no Properties"))?;
    if let Some(version) = props.get("PayloadFormatVersion").and_then(scalar_text)
        && version != "2.0"
    {
        bail!("PayloadFormatVersion {version} is not emulated; the dev host sends payload 2.0");
    }
    let method = props
        .get("Method")
        .and_then(Value::as_str)
        .unwrap_or("ANY")
        .to_ascii_uppercase();
    let path = props
        .get("Path")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("no Path"))?
        .to_owned();
    if !path.starts_with('/') {
        bail!("Path {path:?} must start with /");
    }
    let api = props.get("ApiId").and_then(ref_target).map(str::to_owned);
    let api_def = match &api {
        Some(id) => Some(
            apis.get(id)
                .ok_or_else(|| anyhow!("ApiId {id} is not an AWS::Serverless::HttpApi"))?,
        ),
        None if apis.len() == 1 => apis.values().next(),
        None => None,
    };
    let auth = props.get("Auth");
    let authorizer = match auth
        .and_then(|a| a.get("Authorizer"))
        .and_then(Value::as_str)
    {
        Some("NONE") => None,
        Some(name) => {
            if let Some(api_def) = api_def
                && !api_def.authorizers.contains_key(name)
            {
                bail!(
                    "Authorizer {name} is not defined on API {}",
                    api_def.logical_id
                );
            }
            Some(name.to_owned())
        }
        None => api_def.and_then(|a| a.default_authorizer.clone()),
    };
    let scopes = match auth.and_then(|a| a.get("AuthorizationScopes")) {
        Some(Value::Sequence(seq)) => seq
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    };
    Ok(Route {
        function: function.to_owned(),
        event: event.to_owned(),
        method,
        path,
        api,
        authorizer,
        scopes,
    })
}

/// The repository's `template.yaml`, parsed (used by tests and the binary).
pub fn load_repo_template() -> Result<Template> {
    Template::load(&crate::paths::repo_root()?.join("template.yaml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_real_template_parses() {
        let t = load_repo_template().unwrap();
        assert_eq!(t.parameters["LogLevel"].default.as_deref(), Some("INFO"));
        assert_eq!(
            t.parameters["LogRetentionDays"].default.as_deref(),
            Some("90")
        );
        assert!(t.parameters["DashboardOrigins"].is_list());
        assert!(t.parameters["JwtIssuer"].default.is_none());
        assert_eq!(t.resources["Table"].kind, "AWS::DynamoDB::Table");
        assert_eq!(t.resources["SyncQueue"].kind, "AWS::SQS::Queue");
        assert_eq!(
            t.resources["ApiDomain"].condition.as_deref(),
            Some("HasCustomDomain")
        );
        assert!(t.resources["SyncQueue"].condition.is_none());
        assert!(t.conditions.contains_key("HasAlarmEmail"));

        let f = &t.functions["CredentialsFunction"];
        assert_eq!(f.binary, "credentials");
        assert_eq!(f.timeout_secs, Some(29));
        for var in [
            "CONDUIT_TABLE",
            "CONDUIT_KMS_KEY_ID",
            "CONDUIT_PLATFORM_SECRET_ID",
            "CONDUIT_DASHBOARD_ORIGINS",
            "CONDUIT_TENANT_CLAIM",
            "AWS_LAMBDA_LOG_LEVEL",
        ] {
            assert!(f.environment.contains_key(var), "{var} missing");
        }
        assert_eq!(ref_target(&f.environment["CONDUIT_TABLE"]), Some("Table"));
        let get = f
            .routes
            .iter()
            .find(|r| r.event == "GetConnection")
            .unwrap();
        assert_eq!(get.route_key(), "GET /v1/connections/{id}");
        assert_eq!(get.api.as_deref(), Some("Api"));
        assert_eq!(get.authorizer.as_deref(), Some("DashboardJwt"));
        assert!(!get.is_public());
        assert!(t.function("credentials").is_some());

        let refresh = &t.functions["TokenRefreshFunction"];
        assert_eq!(refresh.binary, "token-refresh");
        assert!(refresh.routes.is_empty());
        assert_eq!(
            refresh.schedules,
            vec![Schedule {
                function: "TokenRefreshFunction".into(),
                event: "Sweep".into(),
                expression: ScheduleExpression::Rate(Duration::from_secs(300)),
                enabled: true,
                input: None,
            }]
        );
        // The dispatcher: the dispatch queue polled as Lambda would (batch 10, partial
        // failures, at most 10 batches at once) and the due_retries schedule.
        let dispatch = &t.functions["EventDispatchFunction"];
        assert_eq!(dispatch.binary, "event-dispatch");
        assert_eq!(dispatch.timeout_secs, Some(120));
        assert_eq!(dispatch.reserved_concurrency, None);
        assert_eq!(dispatch.recursive_loop, RecursiveLoop::Terminate);
        let [source] = dispatch.sqs_sources.as_slice() else {
            panic!("one SQS source: {:?}", dispatch.sqs_sources)
        };
        assert_eq!(references(&source.queue), ["DispatchQueue"]);
        assert_eq!(source.batch_size, 10);
        assert!(source.report_batch_item_failures);
        assert_eq!(source.maximum_concurrency, Some(10));
        let [due] = dispatch.schedules.as_slice() else {
            panic!("one schedule: {:?}", dispatch.schedules)
        };
        assert_eq!(
            due.expression,
            ScheduleExpression::Rate(Duration::from_secs(60))
        );
        assert_eq!(due.input.as_deref(), Some(r#"{"kind":"due_retries"}"#));
        assert_eq!(t.schedules().len(), 2);
        let integrations = &t.functions["IntegrationsFunction"];
        assert_eq!(integrations.binary, "integrations");
        assert_eq!(integrations.routes.len(), 22);
        assert!(integrations.routes.iter().all(|r| !r.is_public()));
        let callback = &t.functions["OAuthCallbackFunction"].routes[0];
        assert!(callback.is_public());
        assert_eq!(callback.route_key(), "GET /v1/oauth/{provider}/callback");
        let start = &t.functions["OAuthStartFunction"].routes[0];
        assert!(!start.is_public());

        let api = &t.apis["Api"];
        assert_eq!(api.default_authorizer.as_deref(), Some("DashboardJwt"));
        assert_eq!(api.authorizers["DashboardJwt"].header(), "authorization");
        assert!(api.cors.is_some());
    }

    #[test]
    fn short_and_long_intrinsics_are_recognised() {
        let v: Value = serde_yaml_ng::from_str(
            r#"
a: !Ref Table
b: { Ref: Table }
c: !GetAtt Key.Arn
d: { "Fn::GetAtt": [Key, Arn] }
e: !Sub "${Table.Arn}/index/* ${AWS::Region} ${!Literal} ${Param}"
f: { "Fn::Join": [",", [!Ref A, { Ref: B }]] }
"#,
        )
        .unwrap();
        assert_eq!(ref_target(&v["a"]), Some("Table"));
        assert_eq!(ref_target(&v["b"]), Some("Table"));
        assert_eq!(intrinsic(&v["c"]).unwrap().0, "Fn::GetAtt");
        assert_eq!(intrinsic(&v["d"]).unwrap().0, "Fn::GetAtt");
        assert_eq!(references(&v["e"]), vec!["Param", "Table"]);
        assert_eq!(references(&v["f"]), vec!["A", "B"]);
        assert_eq!(references(&v["d"]), vec!["Key"]);
    }

    #[test]
    fn public_routes_and_payload_versions() {
        let t = Template::parse(
            r#"
Resources:
  Api:
    Type: AWS::Serverless::HttpApi
    Properties:
      Auth:
        DefaultAuthorizer: Jwt
        Authorizers:
          Jwt:
            IdentitySource: $request.header.Authorization
            JwtConfiguration: { issuer: x, audience: [y] }
  Fn:
    Type: AWS::Serverless::Function
    Metadata: { BuildProperties: { Binary: oauth-callback } }
    Properties:
      Events:
        Callback:
          Type: HttpApi
          Properties: { ApiId: !Ref Api, Method: get, Path: /v1/oauth/callback, Auth: { Authorizer: NONE } }
        Scoped:
          Type: HttpApi
          Properties: { ApiId: !Ref Api, Method: POST, Path: /v1/x, Auth: { AuthorizationScopes: [conduit] } }
        Queue:
          Type: SQS
          Properties: { Queue: !GetAtt Q.Arn }
"#,
        )
        .unwrap();
        let f = &t.functions["Fn"];
        let cb = f.routes.iter().find(|r| r.event == "Callback").unwrap();
        assert!(cb.is_public());
        assert_eq!(cb.method, "GET");
        let scoped = f.routes.iter().find(|r| r.event == "Scoped").unwrap();
        assert_eq!(scoped.authorizer.as_deref(), Some("Jwt"));
        assert_eq!(scoped.scopes, vec!["conduit"]);
        assert!(f.other_events.is_empty());
        assert_eq!(f.sqs_sources.len(), 1);
        assert_eq!(f.sqs_sources[0].batch_size, 10);
        assert!(!f.sqs_sources[0].report_batch_item_failures);

        let err = Template::parse(
            r#"
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Metadata: { BuildProperties: { Binary: x } }
    Properties:
      Events:
        E: { Type: HttpApi, Properties: { Method: GET, Path: /x, PayloadFormatVersion: "1.0" } }
"#,
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("PayloadFormatVersion"),
            "{err:#}"
        );
    }

    #[test]
    fn schedule_expressions_parse_as_eventbridge_accepts_them() {
        let rate = |t: &str| ScheduleExpression::parse(t).map(|e| e.period());
        assert_eq!(
            rate("rate(1 minute)").unwrap(),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            rate("rate(5 minutes)").unwrap(),
            Some(Duration::from_secs(300))
        );
        assert_eq!(
            rate("rate(2 hours)").unwrap(),
            Some(Duration::from_secs(7200))
        );
        assert_eq!(
            rate("rate(1 day)").unwrap(),
            Some(Duration::from_secs(86_400))
        );
        assert_eq!(
            rate(" rate(3 days) ").unwrap(),
            Some(Duration::from_secs(259_200))
        );
        for bad in [
            "rate(1 minutes)",
            "rate(5 minute)",
            "rate(0 minutes)",
            "rate(-1 minutes)",
            "rate(5 seconds)",
            "rate(5)",
            "rate(five minutes)",
            "cron(0 12 * * ?)",
            "every 5 minutes",
        ] {
            assert!(ScheduleExpression::parse(bad).is_err(), "{bad} parsed");
        }
        let cron = ScheduleExpression::parse("cron(0  12 * * ? *)").unwrap();
        assert_eq!(cron.period(), None);
        assert_eq!(cron.to_string(), "cron(0 12 * * ? *)");
        for text in [
            "rate(1 minute)",
            "rate(90 minutes)",
            "rate(2 hours)",
            "rate(1 day)",
        ] {
            assert_eq!(ScheduleExpression::parse(text).unwrap().to_string(), text);
        }
    }

    #[test]
    fn schedule_events_are_read() {
        let t = Template::parse(
            r#"
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Metadata: { BuildProperties: { Binary: sweeper } }
    Properties:
      Events:
        Often: { Type: Schedule, Properties: { Schedule: rate(1 minute) } }
        Off: { Type: Schedule, Properties: { Schedule: rate(2 hours), Enabled: false } }
        Nightly: { Type: Schedule, Properties: { Schedule: "cron(0 3 * * ? *)", Input: '{"full":true}' } }
        V2: { Type: ScheduleV2, Properties: { ScheduleExpression: rate(3 days), State: DISABLED } }
        Q: { Type: SQS, Properties: { Queue: arn } }
"#,
        )
        .unwrap();
        let f = &t.functions["Fn"];
        let by_name = |n: &str| f.schedules.iter().find(|s| s.event == n).unwrap();
        assert!(by_name("Often").enabled);
        assert!(!by_name("Off").enabled);
        assert_eq!(
            by_name("Nightly").input.as_deref(),
            Some(r#"{"full":true}"#)
        );
        assert!(matches!(
            by_name("Nightly").expression,
            ScheduleExpression::Cron(_)
        ));
        assert!(!by_name("V2").enabled);
        assert!(f.other_events.is_empty());
        assert_eq!(f.sqs_sources[0].event, "Q");

        for (props, wanted) in [
            ("{ Schedule: rate(5 minute) }", "rate(5 minutes)"),
            ("{ Schedule: !Ref Rate }", "literal"),
            ("{ Schedule: rate(1 day), Input: 'not json' }", "Input"),
            ("{ Schedule: rate(1 day), State: PAUSED }", "State"),
            ("{ Enabled: true }", "no Schedule"),
        ] {
            let err = Template::parse(&format!(
                "Resources:\n  Fn:\n    Type: AWS::Serverless::Function\n    Metadata: {{ BuildProperties: {{ Binary: x }} }}\n    Properties:\n      Events:\n        E: {{ Type: Schedule, Properties: {props} }}\n"
            ))
            .unwrap_err();
            assert!(format!("{err:#}").contains(wanted), "{props}: {err:#}");
        }
    }

    #[test]
    fn recursive_loop_defaults_to_terminate_and_takes_only_its_two_values() {
        let fn_with = |setting: &str| {
            Template::parse(&format!(
                "Resources:\n  Fn:\n    Type: AWS::Serverless::Function\n    Metadata: {{ BuildProperties: {{ Binary: w }} }}\n    Properties: {{ {setting} }}\n"
            ))
        };
        let plain = fn_with("").unwrap();
        assert_eq!(
            plain.functions["Fn"].recursive_loop,
            RecursiveLoop::Terminate
        );
        let terminate = fn_with("RecursiveLoop: Terminate").unwrap();
        assert_eq!(
            terminate.functions["Fn"].recursive_loop,
            RecursiveLoop::Terminate
        );
        let error = fn_with("RecursiveLoop: allow").unwrap_err();
        assert!(format!("{error:#}").contains("RecursiveLoop"), "{error:#}");
    }

    #[test]
    fn sqs_events_are_read_as_event_source_mappings() {
        let t = Template::parse(
            r#"
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Metadata: { BuildProperties: { Binary: worker } }
    Properties:
      FunctionName: !Sub "${AWS::StackName}-worker"
      ReservedConcurrentExecutions: 3
      RecursiveLoop: Allow
      Events:
        Work:
          Type: SQS
          Properties:
            Queue: !GetAtt Q.Arn
            BatchSize: 50
            MaximumBatchingWindowInSeconds: 2
            FunctionResponseTypes: [ReportBatchItemFailures]
            ScalingConfig: { MaximumConcurrency: 5 }
        Plain: { Type: SQS, Properties: { Queue: arn, Enabled: false } }
"#,
        )
        .unwrap();
        let f = &t.functions["Fn"];
        assert_eq!(f.reserved_concurrency, Some(3));
        assert_eq!(f.recursive_loop, RecursiveLoop::Allow);
        assert!(f.function_name.is_some());
        let work = f.sqs_sources.iter().find(|s| s.event == "Work").unwrap();
        assert_eq!(work.batch_size, 50);
        assert_eq!(work.batching_window, Some(Duration::from_secs(2)));
        assert!(work.report_batch_item_failures);
        assert_eq!(work.maximum_concurrency, Some(5));
        assert!(work.enabled);
        assert_eq!(intrinsic(&work.queue).unwrap().0, "Fn::GetAtt");
        let plain = f.sqs_sources.iter().find(|s| s.event == "Plain").unwrap();
        assert_eq!(plain.batch_size, DEFAULT_SQS_BATCH_SIZE);
        assert!(!plain.enabled && !plain.report_batch_item_failures);

        for (props, wanted) in [
            ("{ BatchSize: 5 }", "no Queue"),
            ("{ Queue: a, BatchSize: 0 }", "BatchSize"),
            ("{ Queue: a, BatchSize: 11 }", "batching window"),
            (
                "{ Queue: a, FunctionResponseTypes: [Other] }",
                "ReportBatchItemFailures",
            ),
            (
                "{ Queue: a, ScalingConfig: { MaximumConcurrency: 1 } }",
                "MaximumConcurrency",
            ),
        ] {
            let err = Template::parse(&format!(
                "Resources:\n  Fn:\n    Type: AWS::Serverless::Function\n    Metadata: {{ BuildProperties: {{ Binary: x }} }}\n    Properties:\n      Events:\n        E: {{ Type: SQS, Properties: {props} }}\n"
            ))
            .unwrap_err();
            assert!(format!("{err:#}").contains(wanted), "{props}: {err:#}");
        }
    }
}

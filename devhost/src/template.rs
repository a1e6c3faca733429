//! Reads the AWS SAM template (`template.yaml`): parameters, resources, functions with
//! their build binary, environment and HttpApi routes, and the HTTP API's authorizers
//! and CORS settings. Values stay unresolved YAML (`!Ref`, `!GetAtt`, `!Sub`, `!Join`
//! in short or long form); [`crate::stack`] resolves them against the local stack.

use std::collections::BTreeMap;
use std::path::Path;

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
    /// Its other events as (name, type); the dev host does not drive these yet.
    pub other_events: Vec<(String, String)>,
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
            resources.insert(
                logical_id.clone(),
                Resource {
                    logical_id,
                    kind,
                    properties,
                    depends_on,
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
        })
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
    environment.extend(environment_of(props).context("Environment")?);
    let timeout_secs = props
        .and_then(|p| p.get("Timeout"))
        .and_then(Value::as_u64)
        .or(global_timeout);

    let mut routes = Vec::new();
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
        other_events,
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
        assert_eq!(t.parameters["LogLevel"].default.as_deref(), Some("info"));
        assert_eq!(
            t.parameters["LogRetentionDays"].default.as_deref(),
            Some("90")
        );
        assert!(t.parameters["DashboardOrigins"].is_list());
        assert!(t.parameters["JwtIssuer"].default.is_none());
        assert_eq!(t.resources["Table"].kind, "AWS::DynamoDB::Table");
        assert_eq!(t.resources["SyncQueue"].kind, "AWS::SQS::Queue");

        let f = &t.functions["CredentialsFunction"];
        assert_eq!(f.binary, "credentials");
        assert_eq!(f.timeout_secs, Some(29));
        for var in [
            "CONDUIT_TABLE",
            "CONDUIT_KMS_KEY_ID",
            "CONDUIT_PLATFORM_SECRET_ID",
            "CONDUIT_DASHBOARD_ORIGINS",
            "CONDUIT_LOG_LEVEL",
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
        assert_eq!(f.other_events, vec![("Queue".to_owned(), "SQS".to_owned())]);

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
}

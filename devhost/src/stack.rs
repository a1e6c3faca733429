//! Creates the resources of `template.yaml` on moto — DynamoDB tables, KMS keys and
//! aliases, Secrets Manager secrets, SQS queues, EventBridge buses and rules (with
//! their targets, [`crate::rules`]), EventBridge Scheduler schedule groups — and resolves the template's intrinsics (`Ref`, `Fn::GetAtt`, `Fn::Sub`, `Fn::Join`, …) against them,
//! so every function gets exactly the environment the template gives it when deployed.
//!
//! Physical names are `{stack_name}-{LogicalId}` unless the template names the resource.
//! Queue policies are not created: moto does not enforce them (see [`crate::rules`]).
//! Functions, log groups, HTTP APIs and IAM roles are not created, but `Ref` and
//! `Fn::GetAtt .Arn` give what their deployed counterparts would (a function's
//! `FunctionName` or `{stack_name}-{LogicalId}`, a role's `RoleName` or likewise).
//! Bootstrapping is idempotent: run twice against the same moto, it reuses what exists.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use aws_config::SdkConfig;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use serde_json::Value as Json;
use serde_yaml_ng::Value;

use crate::template::{Template, intrinsic, references};

/// The API id the local HTTP API reports (`Ref` of an `AWS::Serverless::HttpApi`).
pub const LOCAL_API_ID: &str = "devhost";

const TABLE: &str = "AWS::DynamoDB::Table";
const KMS_KEY: &str = "AWS::KMS::Key";
const KMS_ALIAS: &str = "AWS::KMS::Alias";
const SECRET: &str = "AWS::SecretsManager::Secret";
const QUEUE: &str = "AWS::SQS::Queue";
const EVENT_BUS: &str = "AWS::Events::EventBus";
/// The resource type of an EventBridge Scheduler schedule group.
pub const SCHEDULE_GROUP: &str = "AWS::Scheduler::ScheduleGroup";
const IAM_ROLE: &str = "AWS::IAM::Role";
const EVENT_RULE: &str = crate::rules::EVENT_RULE;
const CREATED: [&str; 8] = [
    TABLE,
    KMS_KEY,
    KMS_ALIAS,
    SECRET,
    QUEUE,
    EVENT_BUS,
    EVENT_RULE,
    SCHEDULE_GROUP,
];

/// What the caller decides about a local stack.
#[derive(Debug, Clone, Default)]
pub struct StackOptions {
    /// The stack name: physical names are `{stack_name}-{LogicalId}`.
    pub stack_name: String,
    /// Parameter values (over the template's defaults); lists comma-separated.
    pub parameters: BTreeMap<String, String>,
    /// Secret values by logical id, used instead of the template's `SecretString`
    /// (and written over an existing secret's value).
    pub secret_values: BTreeMap<String, String>,
    /// Settings added to every function's environment (local use only, e.g.
    /// `CONDUIT_PROVIDER_ORIGIN_OVERRIDE`).
    pub local_env: BTreeMap<String, String>,
}

impl StackOptions {
    /// Options for a stack named `stack_name`, with nothing else set.
    pub fn new(stack_name: impl Into<String>) -> Self {
        Self {
            stack_name: stack_name.into(),
            ..Self::default()
        }
    }

    /// Sets a parameter value.
    pub fn parameter(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.parameters.insert(name.into(), value.into());
        self
    }

    /// Sets the value of the secret with this logical id.
    pub fn secret_value(mut self, logical_id: impl Into<String>, value: impl Into<String>) -> Self {
        self.secret_values.insert(logical_id.into(), value.into());
        self
    }

    /// Adds a setting to every function's environment.
    pub fn local_env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.local_env.insert(name.into(), value.into());
        self
    }
}

/// A resource as it exists locally: what `Ref` and `Fn::GetAtt` return for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhysicalResource {
    /// The resource type.
    pub kind: String,
    /// The value of `Ref` (table name, key id, secret ARN, queue URL, …).
    pub reference: String,
    /// The `Fn::GetAtt` attributes (`Arn`, `QueueName`, …).
    pub attributes: BTreeMap<String, String>,
}

/// The local stack: the template, its resources on moto and the resolver of its values.
#[derive(Debug, Clone)]
pub struct LocalStack {
    template: Arc<Template>,
    aws: SdkConfig,
    stack_name: String,
    region: String,
    account_id: String,
    parameters: BTreeMap<String, Json>,
    resources: BTreeMap<String, PhysicalResource>,
    function_env: BTreeMap<String, BTreeMap<String, String>>,
    given_parameters: BTreeMap<String, String>,
    local_env: BTreeMap<String, String>,
}

/// Creates (or finds) every supported resource of `template` on the AWS endpoint of
/// `aws` (moto), and resolves every function's environment.
pub async fn bootstrap(
    template: &Template,
    aws: &SdkConfig,
    options: &StackOptions,
) -> Result<LocalStack> {
    validate_stack_name(&options.stack_name)?;
    let region = aws
        .region()
        .map(|r| r.as_ref().to_owned())
        .unwrap_or_else(|| crate::aws::REGION.to_owned());
    let mut stack = LocalStack {
        template: Arc::new(template.clone()),
        aws: aws.clone(),
        stack_name: options.stack_name.clone(),
        region,
        account_id: crate::aws::ACCOUNT_ID.to_owned(),
        parameters: resolve_parameters(template, &options.parameters)?,
        resources: BTreeMap::new(),
        function_env: BTreeMap::new(),
        given_parameters: options.parameters.clone(),
        local_env: options.local_env.clone(),
    };
    for id in options.secret_values.keys() {
        match template.resources.get(id) {
            Some(r) if r.kind == SECRET => {}
            _ => bail!(
                "a secret value was given for {id}, which is not an AWS::SecretsManager::Secret of the template"
            ),
        }
    }
    stack.register_derived();

    for res in template.resources.values() {
        // Queue policies (e.g. the dispatch rules' right to send to DispatchQueue)
        // are skipped on purpose: moto does not enforce them, so a local queue takes
        // every sender; cfn-lint and checkov check the template's policies instead.
        if !CREATED.contains(&res.kind.as_str()) {
            tracing::debug!(logical_id = %res.logical_id, kind = %res.kind, "not created by the local stack");
        }
    }
    for id in creation_order(template)? {
        let res = &template.resources[&id];
        if let Some(condition) = &res.condition
            && !stack.condition(condition)?
        {
            tracing::debug!(logical_id = %id, %condition, "not created: its condition is false");
            continue;
        }
        let props = stack
            .resolve(&res.properties)
            .with_context(|| format!("resolving the properties of {id}"))?
            .unwrap_or(Json::Null);
        let physical = match res.kind.as_str() {
            TABLE => stack.ensure_table(&id, &props).await,
            KMS_KEY => stack.ensure_key(&id, &props).await,
            KMS_ALIAS => stack.ensure_alias(&props).await,
            SECRET => {
                stack
                    .ensure_secret(&id, &props, options.secret_values.get(&id))
                    .await
            }
            QUEUE => stack.ensure_queue(&id, &props).await,
            EVENT_BUS => stack.ensure_event_bus(&props).await,
            EVENT_RULE => stack.ensure_rule(&id, &props).await,
            SCHEDULE_GROUP => stack.ensure_schedule_group(&id, &props).await,
            other => Err(anyhow!("unexpected resource type {other}")),
        }
        .with_context(|| format!("creating {id} ({}) on the local stack", res.kind))?;
        tracing::debug!(logical_id = %id, reference = %physical.reference, "local resource ready");
        stack.resources.insert(id, physical);
    }

    for (id, function) in &template.functions {
        let mut env = BTreeMap::new();
        for (name, value) in &function.environment {
            let resolved = stack
                .resolve(value)
                .with_context(|| format!("resolving environment variable {name} of {id}"))?;
            if let Some(resolved) = resolved {
                let text = as_text(&resolved).with_context(|| {
                    format!("environment variable {name} of {id} must resolve to text")
                })?;
                env.insert(name.clone(), text);
            }
        }
        env.extend(
            options
                .local_env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        stack.function_env.insert(id.clone(), env);
    }
    Ok(stack)
}

fn validate_stack_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !ok {
        bail!(
            "stack name {name:?} must start with a letter and hold only letters, digits and '-' (at most 64)"
        );
    }
    Ok(())
}

fn resolve_parameters(
    template: &Template,
    given: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, Json>> {
    if let Some(unknown) = given.keys().find(|k| !template.parameters.contains_key(*k)) {
        bail!("parameter {unknown} is not declared by the template");
    }
    let mut out = BTreeMap::new();
    let mut missing = Vec::new();
    for (name, param) in &template.parameters {
        let Some(value) = given.get(name).or(param.default.as_ref()) else {
            missing.push(name.as_str());
            continue;
        };
        if !param.allowed_values.is_empty() && !param.allowed_values.contains(value) {
            bail!(
                "parameter {name} is {value:?}; allowed: {}",
                param.allowed_values.join(", ")
            );
        }
        let json = if param.is_list() {
            Json::Array(
                value
                    .split(',')
                    .map(|s| Json::String(s.trim().to_owned()))
                    .collect(),
            )
        } else {
            Json::String(value.clone())
        };
        out.insert(name.clone(), json);
    }
    if !missing.is_empty() {
        bail!(
            "parameters without a default need a value: {}",
            missing.join(", ")
        );
    }
    Ok(out)
}

/// The supported resources in an order where each comes after what it refers to.
fn creation_order(template: &Template) -> Result<Vec<String>> {
    let created: BTreeSet<&str> = template
        .resources
        .values()
        .filter(|r| CREATED.contains(&r.kind.as_str()))
        .map(|r| r.logical_id.as_str())
        .collect();
    let mut deps: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for id in &created {
        let res = &template.resources[*id];
        let mut d: BTreeSet<String> = references(&res.properties).into_iter().collect();
        d.extend(res.depends_on.iter().cloned());
        d.retain(|x| created.contains(x.as_str()) && x != id);
        deps.insert(id, d);
    }
    let mut order: Vec<String> = Vec::new();
    let mut done: BTreeSet<String> = BTreeSet::new();
    while order.len() < created.len() {
        let ready: Vec<&str> = deps
            .iter()
            .filter(|(id, d)| !done.contains(**id) && d.iter().all(|x| done.contains(x)))
            .map(|(id, _)| *id)
            .collect();
        if ready.is_empty() {
            let stuck: Vec<&str> = deps
                .keys()
                .filter(|id| !done.contains(**id))
                .copied()
                .collect();
            bail!("circular references between {}", stuck.join(", "));
        }
        for id in ready {
            done.insert(id.to_owned());
            order.push(id.to_owned());
        }
    }
    Ok(order)
}

/// A resolved scalar as text (numbers and booleans as CloudFormation renders them).
fn as_text(value: &Json) -> Result<String> {
    match value {
        Json::String(s) => Ok(s.clone()),
        Json::Number(n) => Ok(n.to_string()),
        Json::Bool(b) => Ok(b.to_string()),
        other => bail!("expected text, got {}", kind_of(other)),
    }
}

fn kind_of(value: &Json) -> &'static str {
    match value {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "a list",
        Json::Object(_) => "a mapping",
    }
}

fn sdk_error(err: impl std::error::Error) -> anyhow::Error {
    anyhow!("{}", DisplayErrorContext(err))
}

fn str_prop<'a>(props: &'a Json, name: &str) -> Option<&'a str> {
    props.get(name).and_then(Json::as_str)
}

fn bool_prop(props: &Json, name: &str) -> bool {
    match props.get(name) {
        Some(Json::Bool(b)) => *b,
        Some(Json::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

impl LocalStack {
    /// The template this stack was created from.
    pub fn template(&self) -> &Template {
        &self.template
    }

    /// The SDK configuration reaching the local AWS endpoint.
    pub fn sdk_config(&self) -> &SdkConfig {
        &self.aws
    }

    /// The stack name.
    pub fn stack_name(&self) -> &str {
        &self.stack_name
    }

    /// The region (`AWS::Region`).
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The account id (`AWS::AccountId`).
    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    /// The parameter values the caller gave (defaults not included).
    pub fn parameter_values(&self) -> &BTreeMap<String, String> {
        &self.given_parameters
    }

    /// The local additions to every function's environment.
    pub fn local_env(&self) -> &BTreeMap<String, String> {
        &self.local_env
    }

    /// The resource with this logical id, as created locally.
    pub fn resource(&self, logical_id: &str) -> Option<&PhysicalResource> {
        self.resources.get(logical_id)
    }

    /// What `Ref` returns for this logical id, parameter or pseudo parameter, as text.
    pub fn ref_value(&self, name: &str) -> Result<String> {
        let value = self
            .reference(name)?
            .ok_or_else(|| anyhow!("{name} has no value"))?;
        as_text(&value).with_context(|| format!("Ref {name}"))
    }

    /// What `Fn::GetAtt` returns for `logical_id.attribute`.
    pub fn get_att(&self, logical_id: &str, attribute: &str) -> Result<String> {
        let res = self.resources.get(logical_id).ok_or_else(|| {
            match self.template.resources.get(logical_id) {
                Some(r) => anyhow!(
                    "the local stack does not provide {} resources ({logical_id})",
                    r.kind
                ),
                None => anyhow!("no resource {logical_id} in the template"),
            }
        })?;
        res.attributes.get(attribute).cloned().ok_or_else(|| {
            anyhow!(
                "{logical_id} ({}) has no attribute {attribute} locally",
                res.kind
            )
        })
    }

    /// Each function's environment, resolved from the template, plus the local
    /// additions of [`StackOptions::local_env`].
    pub fn function_env(&self, logical_id: &str) -> Result<BTreeMap<String, String>> {
        self.function_env
            .get(logical_id)
            .cloned()
            .ok_or_else(|| anyhow!("no function {logical_id} in the template"))
    }

    /// Resolves a template value; `None` for `AWS::NoValue`.
    pub fn resolve(&self, value: &Value) -> Result<Option<Json>> {
        if let Some((name, arg)) = intrinsic(value) {
            return match name.as_str() {
                "Ref" => {
                    let target = arg.as_str().ok_or_else(|| anyhow!("Ref takes a name"))?;
                    self.reference(target)
                }
                "Fn::GetAtt" => {
                    let (id, attr) = get_att_args(arg)?;
                    Ok(Some(Json::String(self.get_att(&id, &attr)?)))
                }
                "Fn::Sub" => Ok(Some(Json::String(self.sub(arg)?))),
                "Fn::Join" => {
                    let seq = arg
                        .as_sequence()
                        .filter(|s| s.len() == 2)
                        .ok_or_else(|| anyhow!("Fn::Join takes [delimiter, list]"))?;
                    let delimiter = seq[0]
                        .as_str()
                        .ok_or_else(|| anyhow!("Fn::Join's delimiter must be a string"))?;
                    let items = self.resolve_list_value(&seq[1]).context("Fn::Join")?;
                    Ok(Some(Json::String(items.join(delimiter))))
                }
                "Fn::Select" => {
                    let seq = arg
                        .as_sequence()
                        .filter(|s| s.len() == 2)
                        .ok_or_else(|| anyhow!("Fn::Select takes [index, list]"))?;
                    let index: usize = match self.resolve(&seq[0])? {
                        Some(v) => as_text(&v)?.parse().context("Fn::Select's index")?,
                        None => bail!("Fn::Select's index has no value"),
                    };
                    let items = self.resolve_list_value(&seq[1]).context("Fn::Select")?;
                    let item = items
                        .get(index)
                        .ok_or_else(|| anyhow!("Fn::Select index {index} is out of range"))?;
                    Ok(Some(Json::String(item.clone())))
                }
                "Fn::Split" => {
                    let seq = arg
                        .as_sequence()
                        .filter(|s| s.len() == 2)
                        .ok_or_else(|| anyhow!("Fn::Split takes [delimiter, string]"))?;
                    let delimiter = seq[0]
                        .as_str()
                        .ok_or_else(|| anyhow!("Fn::Split's delimiter must be a string"))?;
                    let text = match self.resolve(&seq[1])? {
                        Some(v) => as_text(&v)?,
                        None => bail!("Fn::Split's string has no value"),
                    };
                    Ok(Some(Json::Array(
                        text.split(delimiter)
                            .map(|s| Json::String(s.to_owned()))
                            .collect(),
                    )))
                }
                "Fn::Base64" => {
                    use base64::Engine;
                    let text = match self.resolve(arg)? {
                        Some(v) => as_text(&v)?,
                        None => bail!("Fn::Base64's argument has no value"),
                    };
                    Ok(Some(Json::String(
                        base64::engine::general_purpose::STANDARD.encode(text),
                    )))
                }
                "Fn::If" => {
                    let seq = arg
                        .as_sequence()
                        .filter(|s| s.len() == 3)
                        .ok_or_else(|| anyhow!("Fn::If takes [condition, then, else]"))?;
                    let name = seq[0]
                        .as_str()
                        .ok_or_else(|| anyhow!("Fn::If's condition must be a name"))?;
                    let chosen = if self.condition(name)? {
                        &seq[1]
                    } else {
                        &seq[2]
                    };
                    self.resolve(chosen)
                }
                other => bail!("{other} is not supported by the local stack"),
            };
        }
        Ok(Some(match value {
            Value::Null => Json::Null,
            Value::Bool(b) => Json::Bool(*b),
            Value::Number(n) => serde_json::to_value(n).context("converting a number")?,
            Value::String(s) => Json::String(s.clone()),
            Value::Sequence(seq) => {
                let mut out = Vec::with_capacity(seq.len());
                for item in seq {
                    if let Some(v) = self.resolve(item)? {
                        out.push(v);
                    }
                }
                Json::Array(out)
            }
            Value::Mapping(map) => {
                let mut out = serde_json::Map::new();
                for (k, v) in map {
                    let key = match k {
                        Value::String(s) => s.clone(),
                        other => serde_yaml_ng::to_string(other)
                            .map(|s| s.trim().to_owned())
                            .context("converting a key")?,
                    };
                    if let Some(v) = self.resolve(v).with_context(|| format!("in {key}"))? {
                        out.insert(key, v);
                    }
                }
                Json::Object(out)
            }
            Value::Tagged(tagged) => bail!("unknown tag {}", tagged.tag),
        }))
    }

    /// Whether the template's condition `name` holds for the stack's parameters.
    pub fn condition(&self, name: &str) -> Result<bool> {
        let expr = self
            .template
            .conditions
            .get(name)
            .ok_or_else(|| anyhow!("no condition {name} in the template"))?;
        self.truth(expr)
            .with_context(|| format!("evaluating condition {name}"))
    }

    /// Evaluates a condition expression (`Fn::Equals`, `Fn::Not`, `Fn::And`,
    /// `Fn::Or`, `Condition`).
    fn truth(&self, value: &Value) -> Result<bool> {
        let (name, arg) = intrinsic(value).ok_or_else(|| anyhow!("not a condition function"))?;
        let args = || {
            arg.as_sequence()
                .ok_or_else(|| anyhow!("{name} takes a list"))
        };
        match name.as_str() {
            "Condition" => self.condition(arg.as_str().unwrap_or_default()),
            "Fn::Equals" => {
                let seq = args()?;
                if seq.len() != 2 {
                    bail!("Fn::Equals takes two values");
                }
                Ok(self.resolve(&seq[0])? == self.resolve(&seq[1])?)
            }
            "Fn::Not" => match args()?.as_slice() {
                [one] => Ok(!self.truth(one)?),
                _ => bail!("Fn::Not takes one condition"),
            },
            "Fn::And" => {
                for c in args()? {
                    if !self.truth(c)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            "Fn::Or" => {
                for c in args()? {
                    if self.truth(c)? {
                        return Ok(true);
                    }
                }
                Ok(false)
            }
            other => bail!("{other} is not a condition function"),
        }
    }

    /// Resolves a template value that must be text.
    pub fn resolve_text(&self, value: &Value) -> Result<String> {
        match self.resolve(value)? {
            Some(v) => as_text(&v),
            None => bail!("the value is AWS::NoValue"),
        }
    }

    /// Resolves a template value that must be a list of text (or one text).
    pub fn resolve_list(&self, value: &Value) -> Result<Vec<String>> {
        self.resolve_list_value(value)
    }

    fn resolve_list_value(&self, value: &Value) -> Result<Vec<String>> {
        match self.resolve(value)? {
            Some(Json::Array(items)) => items.iter().map(as_text).collect(),
            Some(other) => Ok(vec![as_text(&other)?]),
            None => Ok(Vec::new()),
        }
    }

    fn reference(&self, name: &str) -> Result<Option<Json>> {
        if let Some(pseudo) = name.strip_prefix("AWS::") {
            let text = match pseudo {
                "Region" => self.region.clone(),
                "AccountId" => self.account_id.clone(),
                "StackName" => self.stack_name.clone(),
                "StackId" => format!(
                    "arn:aws:cloudformation:{}:{}:stack/{}/local",
                    self.region, self.account_id, self.stack_name
                ),
                "Partition" => "aws".to_owned(),
                "URLSuffix" => "amazonaws.com".to_owned(),
                "NoValue" => return Ok(None),
                "NotificationARNs" => return Ok(Some(Json::Array(Vec::new()))),
                _ => bail!("unknown pseudo parameter {name}"),
            };
            return Ok(Some(Json::String(text)));
        }
        if let Some(v) = self.parameters.get(name) {
            return Ok(Some(v.clone()));
        }
        if let Some(res) = self.resources.get(name) {
            return Ok(Some(Json::String(res.reference.clone())));
        }
        match self.template.resources.get(name) {
            Some(r) if CREATED.contains(&r.kind.as_str()) => {
                bail!("{name} is referenced before it is created")
            }
            Some(r) => bail!(
                "the local stack does not provide {} resources ({name})",
                r.kind
            ),
            None => bail!("Ref {name}: no such parameter or resource"),
        }
    }

    fn sub(&self, arg: &Value) -> Result<String> {
        let (text, vars) = match arg {
            Value::String(s) => (s.as_str(), None),
            Value::Sequence(seq) if seq.len() == 2 => (
                seq[0]
                    .as_str()
                    .ok_or_else(|| anyhow!("Fn::Sub's first item must be a string"))?,
                seq[1].as_mapping(),
            ),
            _ => bail!("Fn::Sub takes a string or [string, variables]"),
        };
        let mut local = BTreeMap::new();
        if let Some(vars) = vars {
            for (k, v) in vars {
                let name = k
                    .as_str()
                    .ok_or_else(|| anyhow!("a Fn::Sub variable name is not a string"))?;
                let value = match self.resolve(v)? {
                    Some(v) => as_text(&v).with_context(|| format!("Fn::Sub variable {name}"))?,
                    None => String::new(),
                };
                local.insert(name.to_owned(), value);
            }
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| anyhow!("unclosed ${{ in Fn::Sub string {text:?}"))?;
            let name = after[..end].trim();
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else if let Some(v) = local.get(name) {
                out.push_str(v);
            } else if let Some((id, attr)) = name.split_once('.') {
                out.push_str(&self.get_att(id, attr)?);
            } else {
                out.push_str(&self.ref_value(name)?);
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn physical_name(&self, logical_id: &str) -> String {
        format!("{}-{logical_id}", self.stack_name)
    }

    fn arn(&self, service: &str, resource: &str) -> String {
        format!(
            "arn:aws:{service}:{}:{}:{resource}",
            self.region, self.account_id
        )
    }

    /// Registers what `Ref`/`GetAtt` return for resources the local stack does not
    /// create but whose names are derived (functions, log groups, HTTP APIs).
    fn register_derived(&mut self) {
        let mut derived = Vec::new();
        for res in self.template.resources.values() {
            let name = self.physical_name(&res.logical_id);
            let physical = match res.kind.as_str() {
                crate::template::FUNCTION_TYPE | "AWS::Lambda::Function" => {
                    let name = self.given_name(res, "FunctionName").unwrap_or(name);
                    PhysicalResource {
                        kind: res.kind.clone(),
                        attributes: BTreeMap::from([(
                            "Arn".to_owned(),
                            self.arn("lambda", &format!("function:{name}")),
                        )]),
                        reference: name,
                    }
                }
                // Not created on moto (nothing checks roles locally); its name and ARN
                // are what a deployed role's would look like.
                IAM_ROLE => {
                    let name = self.given_name(res, "RoleName").unwrap_or(name);
                    let path = self
                        .given_name(res, "Path")
                        .unwrap_or_else(|| "/".to_owned());
                    PhysicalResource {
                        kind: res.kind.clone(),
                        attributes: BTreeMap::from([
                            (
                                "Arn".to_owned(),
                                format!("arn:aws:iam::{}:role{path}{name}", self.account_id),
                            ),
                            ("RoleId".to_owned(), local_role_id(&name)),
                        ]),
                        reference: name,
                    }
                }
                "AWS::Logs::LogGroup" => {
                    let name = format!("/aws/{}/{}", self.stack_name, res.logical_id);
                    PhysicalResource {
                        kind: res.kind.clone(),
                        attributes: BTreeMap::from([(
                            "Arn".to_owned(),
                            self.arn("logs", &format!("log-group:{name}:*")),
                        )]),
                        reference: name,
                    }
                }
                crate::template::HTTP_API_TYPE => PhysicalResource {
                    kind: res.kind.clone(),
                    attributes: BTreeMap::from([(
                        "ApiEndpoint".to_owned(),
                        format!(
                            "https://{LOCAL_API_ID}.execute-api.{}.amazonaws.com",
                            self.region
                        ),
                    )]),
                    reference: LOCAL_API_ID.to_owned(),
                },
                _ => continue,
            };
            derived.push((res.logical_id.clone(), physical));
        }
        self.resources.extend(derived);
    }

    /// A name property of a resource that is not created locally, if the template
    /// gives one that resolves before any resource exists (text or `!Sub` of
    /// parameters and pseudo parameters).
    fn given_name(&self, res: &crate::template::Resource, property: &str) -> Option<String> {
        let value = res.property(property)?;
        match self.resolve(value) {
            Ok(Some(Json::String(name))) if !name.is_empty() => Some(name),
            _ => {
                tracing::debug!(logical_id = %res.logical_id, property, "name not resolvable locally; using the derived one");
                None
            }
        }
    }

    async fn ensure_table(&self, logical_id: &str, props: &Json) -> Result<PhysicalResource> {
        use aws_sdk_dynamodb::types::{
            AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType,
            PointInTimeRecoverySpecification, Projection, ProjectionType, ProvisionedThroughput,
            ScalarAttributeType, SseSpecification, SseType, StreamSpecification, StreamViewType,
            TimeToLiveSpecification, TimeToLiveStatus,
        };
        let client = aws_sdk_dynamodb::Client::new(&self.aws);
        let name = str_prop(props, "TableName")
            .map(str::to_owned)
            .unwrap_or_else(|| self.physical_name(logical_id));

        let key_schema = |value: Option<&Json>| -> Result<Vec<KeySchemaElement>> {
            let items = value
                .and_then(Json::as_array)
                .ok_or_else(|| anyhow!("KeySchema must be a list"))?;
            items
                .iter()
                .map(|k| {
                    KeySchemaElement::builder()
                        .attribute_name(str_prop(k, "AttributeName").unwrap_or_default())
                        .key_type(KeyType::from(str_prop(k, "KeyType").unwrap_or_default()))
                        .build()
                        .context("KeySchema")
                })
                .collect()
        };
        let throughput = |value: Option<&Json>| -> Result<Option<ProvisionedThroughput>> {
            let Some(t) = value else { return Ok(None) };
            let units = |n: &str| {
                t.get(n)
                    .and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()))
            };
            Ok(Some(
                ProvisionedThroughput::builder()
                    .set_read_capacity_units(units("ReadCapacityUnits"))
                    .set_write_capacity_units(units("WriteCapacityUnits"))
                    .build()
                    .context("ProvisionedThroughput")?,
            ))
        };

        let existing = client.describe_table().table_name(&name).send().await;
        let description = match existing {
            Ok(out) => out.table,
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                let billing = str_prop(props, "BillingMode").unwrap_or("PROVISIONED");
                let mut req = client
                    .create_table()
                    .table_name(&name)
                    .billing_mode(BillingMode::from(billing))
                    .set_key_schema(Some(key_schema(props.get("KeySchema"))?))
                    .set_provisioned_throughput(throughput(props.get("ProvisionedThroughput"))?);
                for def in props
                    .get("AttributeDefinitions")
                    .and_then(Json::as_array)
                    .ok_or_else(|| anyhow!("AttributeDefinitions must be a list"))?
                {
                    req = req.attribute_definitions(
                        AttributeDefinition::builder()
                            .attribute_name(str_prop(def, "AttributeName").unwrap_or_default())
                            .attribute_type(ScalarAttributeType::from(
                                str_prop(def, "AttributeType").unwrap_or_default(),
                            ))
                            .build()
                            .context("AttributeDefinitions")?,
                    );
                }
                for gsi in props
                    .get("GlobalSecondaryIndexes")
                    .and_then(Json::as_array)
                    .into_iter()
                    .flatten()
                {
                    let projection = gsi.get("Projection");
                    let projection = Projection::builder()
                        .set_projection_type(
                            projection
                                .and_then(|p| str_prop(p, "ProjectionType"))
                                .map(ProjectionType::from),
                        )
                        .set_non_key_attributes(
                            projection
                                .and_then(|p| p.get("NonKeyAttributes"))
                                .and_then(Json::as_array)
                                .map(|a| {
                                    a.iter()
                                        .filter_map(Json::as_str)
                                        .map(str::to_owned)
                                        .collect()
                                }),
                        )
                        .build();
                    req = req.global_secondary_indexes(
                        GlobalSecondaryIndex::builder()
                            .index_name(str_prop(gsi, "IndexName").unwrap_or_default())
                            .set_key_schema(Some(key_schema(gsi.get("KeySchema"))?))
                            .projection(projection)
                            .set_provisioned_throughput(throughput(
                                gsi.get("ProvisionedThroughput"),
                            )?)
                            .build()
                            .context("GlobalSecondaryIndexes")?,
                    );
                }
                if let Some(sse) = props.get("SSESpecification") {
                    req = req.sse_specification(
                        SseSpecification::builder()
                            .enabled(bool_prop(sse, "SSEEnabled"))
                            .set_sse_type(str_prop(sse, "SSEType").map(SseType::from))
                            .set_kms_master_key_id(
                                str_prop(sse, "KMSMasterKeyId").map(str::to_owned),
                            )
                            .build(),
                    );
                }
                if let Some(view) = props
                    .get("StreamSpecification")
                    .and_then(|s| str_prop(s, "StreamViewType"))
                {
                    req = req.stream_specification(
                        StreamSpecification::builder()
                            .stream_enabled(true)
                            .stream_view_type(StreamViewType::from(view))
                            .build()
                            .context("StreamSpecification")?,
                    );
                }
                req.send().await.map_err(sdk_error)?.table_description
            }
            Err(err) => return Err(sdk_error(err)),
        }
        .ok_or_else(|| anyhow!("DynamoDB returned no table description for {name}"))?;

        if let Some(ttl) = props.get("TimeToLiveSpecification")
            && bool_prop(ttl, "Enabled")
        {
            let attribute = str_prop(ttl, "AttributeName")
                .ok_or_else(|| anyhow!("TimeToLiveSpecification has no AttributeName"))?;
            let current = client
                .describe_time_to_live()
                .table_name(&name)
                .send()
                .await
                .map_err(sdk_error)?;
            let enabled = current.time_to_live_description().is_some_and(|d| {
                d.time_to_live_status() == Some(&TimeToLiveStatus::Enabled)
                    && d.attribute_name() == Some(attribute)
            });
            if !enabled {
                client
                    .update_time_to_live()
                    .table_name(&name)
                    .time_to_live_specification(
                        TimeToLiveSpecification::builder()
                            .attribute_name(attribute)
                            .enabled(true)
                            .build()
                            .context("TimeToLiveSpecification")?,
                    )
                    .send()
                    .await
                    .map_err(sdk_error)?;
            }
        }
        if let Some(pitr) = props.get("PointInTimeRecoverySpecification")
            && bool_prop(pitr, "PointInTimeRecoveryEnabled")
        {
            client
                .update_continuous_backups()
                .table_name(&name)
                .point_in_time_recovery_specification(
                    PointInTimeRecoverySpecification::builder()
                        .point_in_time_recovery_enabled(true)
                        .build()
                        .context("PointInTimeRecoverySpecification")?,
                )
                .send()
                .await
                .map_err(sdk_error)?;
        }

        let mut attributes = BTreeMap::new();
        let arn = description
            .table_arn()
            .map(str::to_owned)
            .unwrap_or_else(|| self.arn("dynamodb", &format!("table/{name}")));
        attributes.insert("Arn".to_owned(), arn);
        if let Some(stream) = description.latest_stream_arn() {
            attributes.insert("StreamArn".to_owned(), stream.to_owned());
        }
        Ok(PhysicalResource {
            kind: TABLE.to_owned(),
            reference: name,
            attributes,
        })
    }

    /// The alias the local stack uses to find a key it created before (keys have no
    /// name of their own).
    fn tracking_alias(&self, logical_id: &str) -> String {
        format!("alias/devhost/{}/{logical_id}", self.stack_name)
    }

    async fn ensure_key(&self, logical_id: &str, props: &Json) -> Result<PhysicalResource> {
        use aws_sdk_kms::types::{KeySpec, KeyUsageType};
        let client = aws_sdk_kms::Client::new(&self.aws);
        let tracking = self.tracking_alias(logical_id);
        let metadata = match client.describe_key().key_id(&tracking).send().await {
            Ok(out) => out.key_metadata,
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_not_found_exception()) =>
            {
                let policy = match props.get("KeyPolicy") {
                    Some(Json::String(s)) => Some(s.clone()),
                    Some(p @ Json::Object(_)) => {
                        Some(serde_json::to_string(p).context("serialising KeyPolicy")?)
                    }
                    _ => None,
                };
                let created = client
                    .create_key()
                    .set_description(str_prop(props, "Description").map(str::to_owned))
                    .set_key_usage(str_prop(props, "KeyUsage").map(KeyUsageType::from))
                    .set_key_spec(str_prop(props, "KeySpec").map(KeySpec::from))
                    .set_policy(policy)
                    .send()
                    .await
                    .map_err(sdk_error)?;
                let key_id = created
                    .key_metadata()
                    .map(|m| m.key_id().to_owned())
                    .ok_or_else(|| anyhow!("KMS returned no key metadata"))?;
                client
                    .create_alias()
                    .alias_name(&tracking)
                    .target_key_id(&key_id)
                    .send()
                    .await
                    .map_err(sdk_error)?;
                created.key_metadata
            }
            Err(err) => return Err(sdk_error(err)),
        }
        .ok_or_else(|| anyhow!("KMS returned no key metadata"))?;
        let key_id = metadata.key_id().to_owned();
        if bool_prop(props, "EnableKeyRotation") {
            client
                .enable_key_rotation()
                .key_id(&key_id)
                .send()
                .await
                .map_err(sdk_error)?;
        }
        let arn = metadata
            .arn()
            .map(str::to_owned)
            .unwrap_or_else(|| self.arn("kms", &format!("key/{key_id}")));
        Ok(PhysicalResource {
            kind: KMS_KEY.to_owned(),
            attributes: BTreeMap::from([
                ("Arn".to_owned(), arn),
                ("KeyId".to_owned(), key_id.clone()),
            ]),
            reference: key_id,
        })
    }

    async fn ensure_alias(&self, props: &Json) -> Result<PhysicalResource> {
        let client = aws_sdk_kms::Client::new(&self.aws);
        let alias = str_prop(props, "AliasName").ok_or_else(|| anyhow!("AliasName is required"))?;
        let target =
            str_prop(props, "TargetKeyId").ok_or_else(|| anyhow!("TargetKeyId is required"))?;
        match client.describe_key().key_id(alias).send().await {
            Ok(out) => {
                let current = out.key_metadata().map(|m| m.key_id().to_owned());
                let wanted = client
                    .describe_key()
                    .key_id(target)
                    .send()
                    .await
                    .map_err(sdk_error)?
                    .key_metadata()
                    .map(|m| m.key_id().to_owned());
                if current != wanted {
                    client
                        .update_alias()
                        .alias_name(alias)
                        .target_key_id(target)
                        .send()
                        .await
                        .map_err(sdk_error)?;
                }
            }
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_not_found_exception()) =>
            {
                client
                    .create_alias()
                    .alias_name(alias)
                    .target_key_id(target)
                    .send()
                    .await
                    .map_err(sdk_error)?;
            }
            Err(err) => return Err(sdk_error(err)),
        }
        Ok(PhysicalResource {
            kind: KMS_ALIAS.to_owned(),
            reference: alias.to_owned(),
            attributes: BTreeMap::new(),
        })
    }

    async fn ensure_secret(
        &self,
        logical_id: &str,
        props: &Json,
        value: Option<&String>,
    ) -> Result<PhysicalResource> {
        let client = aws_sdk_secretsmanager::Client::new(&self.aws);
        let name = str_prop(props, "Name")
            .map(str::to_owned)
            .unwrap_or_else(|| self.physical_name(logical_id));
        let arn = match client.describe_secret().secret_id(&name).send().await {
            Ok(out) => {
                let arn = out
                    .arn()
                    .map(str::to_owned)
                    .ok_or_else(|| anyhow!("Secrets Manager returned no ARN for {name}"))?;
                if let Some(value) = value {
                    client
                        .put_secret_value()
                        .secret_id(&arn)
                        .secret_string(value)
                        .send()
                        .await
                        .map_err(sdk_error)?;
                }
                arn
            }
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                let secret = match value {
                    Some(v) => v.clone(),
                    None => initial_secret_string(props)?,
                };
                client
                    .create_secret()
                    .name(&name)
                    .set_description(str_prop(props, "Description").map(str::to_owned))
                    .set_kms_key_id(str_prop(props, "KmsKeyId").map(str::to_owned))
                    .secret_string(secret)
                    .send()
                    .await
                    .map_err(sdk_error)?
                    .arn
                    .ok_or_else(|| anyhow!("Secrets Manager returned no ARN for {name}"))?
            }
            Err(err) => return Err(sdk_error(err)),
        };
        Ok(PhysicalResource {
            kind: SECRET.to_owned(),
            attributes: BTreeMap::from([("Id".to_owned(), arn.clone()), ("Name".to_owned(), name)]),
            reference: arn,
        })
    }

    /// Writes a new value into the secret with this logical id (e.g. to install the
    /// sandbox's OAuth apps into the platform secret).
    pub async fn set_secret(&self, logical_id: &str, value: &str) -> Result<()> {
        let res = self
            .resources
            .get(logical_id)
            .filter(|r| r.kind == SECRET)
            .ok_or_else(|| anyhow!("{logical_id} is not a secret of the local stack"))?;
        aws_sdk_secretsmanager::Client::new(&self.aws)
            .put_secret_value()
            .secret_id(&res.reference)
            .secret_string(value)
            .send()
            .await
            .map_err(sdk_error)
            .with_context(|| format!("writing secret {logical_id}"))?;
        Ok(())
    }

    async fn ensure_queue(&self, logical_id: &str, props: &Json) -> Result<PhysicalResource> {
        use aws_sdk_sqs::types::QueueAttributeName;
        let client = aws_sdk_sqs::Client::new(&self.aws);
        let fifo = bool_prop(props, "FifoQueue");
        let name = match str_prop(props, "QueueName") {
            Some(n) => n.to_owned(),
            None if fifo => format!("{}.fifo", self.physical_name(logical_id)),
            None => self.physical_name(logical_id),
        };
        let mut attributes: HashMap<QueueAttributeName, String> = HashMap::new();
        for key in [
            "ContentBasedDeduplication",
            "DeduplicationScope",
            "DelaySeconds",
            "FifoQueue",
            "FifoThroughputLimit",
            "KmsDataKeyReusePeriodSeconds",
            "KmsMasterKeyId",
            "MaximumMessageSize",
            "MessageRetentionPeriod",
            "ReceiveMessageWaitTimeSeconds",
            "SqsManagedSseEnabled",
            "VisibilityTimeout",
        ] {
            if let Some(v) = props.get(key) {
                attributes.insert(
                    QueueAttributeName::from(key),
                    as_text(v).with_context(|| key.to_owned())?,
                );
            }
        }
        for key in ["RedrivePolicy", "RedriveAllowPolicy"] {
            match props.get(key) {
                None => {}
                Some(Json::String(s)) => {
                    attributes.insert(QueueAttributeName::from(key), s.clone());
                }
                Some(v) => {
                    attributes.insert(
                        QueueAttributeName::from(key),
                        serde_json::to_string(v).with_context(|| key.to_owned())?,
                    );
                }
            }
        }
        let url = match client.get_queue_url().queue_name(&name).send().await {
            Ok(out) => {
                let url = out
                    .queue_url
                    .ok_or_else(|| anyhow!("SQS returned no URL for {name}"))?;
                let mut changeable = attributes.clone();
                changeable.remove(&QueueAttributeName::FifoQueue);
                if !changeable.is_empty() {
                    client
                        .set_queue_attributes()
                        .queue_url(&url)
                        .set_attributes(Some(changeable))
                        .send()
                        .await
                        .map_err(sdk_error)?;
                }
                url
            }
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_queue_does_not_exist()) =>
            {
                client
                    .create_queue()
                    .queue_name(&name)
                    .set_attributes((!attributes.is_empty()).then_some(attributes))
                    .send()
                    .await
                    .map_err(sdk_error)?
                    .queue_url
                    .ok_or_else(|| anyhow!("SQS returned no URL for {name}"))?
            }
            Err(err) => return Err(sdk_error(err)),
        };
        let arn = client
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .map_err(sdk_error)?
            .attributes()
            .and_then(|a| a.get(&QueueAttributeName::QueueArn).cloned())
            .unwrap_or_else(|| self.arn("sqs", &name));
        Ok(PhysicalResource {
            kind: QUEUE.to_owned(),
            attributes: BTreeMap::from([
                ("Arn".to_owned(), arn),
                ("QueueName".to_owned(), name),
                ("QueueUrl".to_owned(), url.clone()),
            ]),
            reference: url,
        })
    }

    async fn ensure_event_bus(&self, props: &Json) -> Result<PhysicalResource> {
        let client = aws_sdk_eventbridge::Client::new(&self.aws);
        let name = str_prop(props, "Name").ok_or_else(|| anyhow!("Name is required"))?;
        let arn = match client.describe_event_bus().name(name).send().await {
            Ok(out) => out.arn,
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                client
                    .create_event_bus()
                    .name(name)
                    .send()
                    .await
                    .map_err(sdk_error)?
                    .event_bus_arn
            }
            Err(err) => return Err(sdk_error(err)),
        }
        .unwrap_or_else(|| self.arn("events", &format!("event-bus/{name}")));
        Ok(PhysicalResource {
            kind: EVENT_BUS.to_owned(),
            attributes: BTreeMap::from([
                ("Arn".to_owned(), arn),
                ("Name".to_owned(), name.to_owned()),
            ]),
            reference: name.to_owned(),
        })
    }
}

impl LocalStack {
    async fn ensure_schedule_group(
        &self,
        logical_id: &str,
        props: &Json,
    ) -> Result<PhysicalResource> {
        let client = aws_sdk_scheduler::Client::new(&self.aws);
        let name = str_prop(props, "Name")
            .map(str::to_owned)
            .unwrap_or_else(|| self.physical_name(logical_id));
        // Look first: moto's CreateScheduleGroup replaces an existing group (and its
        // schedules) instead of refusing.
        let arn = match client.get_schedule_group().name(&name).send().await {
            Ok(out) => out.arn,
            Err(err)
                if err
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception()) =>
            {
                Some(
                    client
                        .create_schedule_group()
                        .name(&name)
                        .send()
                        .await
                        .map_err(sdk_error)?
                        .schedule_group_arn,
                )
            }
            Err(err) => return Err(sdk_error(err)),
        }
        .unwrap_or_else(|| self.arn("scheduler", &format!("schedule-group/{name}")));
        Ok(PhysicalResource {
            kind: SCHEDULE_GROUP.to_owned(),
            attributes: BTreeMap::from([
                ("Arn".to_owned(), arn),
                ("State".to_owned(), "ACTIVE".to_owned()),
            ]),
            reference: name,
        })
    }

    /// The schedule group names of the stack's `AWS::Scheduler::ScheduleGroup`s, by
    /// logical id.
    pub fn schedule_groups(&self) -> BTreeMap<String, String> {
        self.resources
            .iter()
            .filter(|(_, r)| r.kind == SCHEDULE_GROUP)
            .map(|(id, r)| (id.clone(), r.reference.clone()))
            .collect()
    }

    /// The stack's queues (`AWS::SQS::Queue`) by logical id: (URL, ARN).
    pub fn queues(&self) -> BTreeMap<String, (String, String)> {
        self.resources
            .iter()
            .filter(|(_, r)| r.kind == QUEUE)
            .map(|(id, r)| {
                (
                    id.clone(),
                    (
                        r.reference.clone(),
                        r.attributes.get("Arn").cloned().unwrap_or_default(),
                    ),
                )
            })
            .collect()
    }
}

/// A plausible IAM role id (`AROA` and 17 characters) derived from its name.
fn local_role_id(name: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut hasher);
    let digest = format!(
        "{:016X}{:016X}",
        hasher.finish(),
        hasher.finish().rotate_left(17)
    );
    format!("AROA{}", &digest[..17])
}

fn get_att_args(arg: &Value) -> Result<(String, String)> {
    match arg {
        Value::String(s) => s
            .split_once('.')
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .ok_or_else(|| anyhow!("Fn::GetAtt {s:?} must be LogicalId.Attribute")),
        Value::Sequence(seq) if seq.len() == 2 => match (seq[0].as_str(), seq[1].as_str()) {
            (Some(a), Some(b)) => Ok((a.to_owned(), b.to_owned())),
            _ => bail!("Fn::GetAtt takes [LogicalId, Attribute] strings"),
        },
        _ => bail!("Fn::GetAtt takes LogicalId.Attribute or [LogicalId, Attribute]"),
    }
}

/// The first value of a secret that the caller did not set: `SecretString`, else a
/// value generated as `GenerateSecretString` asks.
fn initial_secret_string(props: &Json) -> Result<String> {
    if let Some(s) = str_prop(props, "SecretString") {
        return Ok(s.to_owned());
    }
    let Some(generate) = props.get("GenerateSecretString") else {
        bail!("neither SecretString nor GenerateSecretString is given, and no value was passed");
    };
    let length = generate
        .get("PasswordLength")
        .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
        .unwrap_or(32) as usize;
    let exclude = str_prop(generate, "ExcludeCharacters").unwrap_or_default();
    let alphabet: Vec<char> = ('a'..='z')
        .chain('A'..='Z')
        .chain('0'..='9')
        .filter(|c| !exclude.contains(*c))
        .collect();
    if alphabet.is_empty() {
        bail!("GenerateSecretString excludes every character");
    }
    let password: String = {
        use rand::Rng;
        let mut rng = rand::thread_rng();
        (0..length)
            .map(|_| alphabet[rng.gen_range(0..alphabet.len())])
            .collect()
    };
    match (
        str_prop(generate, "SecretStringTemplate"),
        str_prop(generate, "GenerateStringKey"),
    ) {
        (Some(template), Some(key)) => {
            let mut doc: serde_json::Map<String, Json> = serde_json::from_str(template)
                .context("SecretStringTemplate is not a JSON object")?;
            doc.insert(key.to_owned(), Json::String(password));
            Ok(Json::Object(doc).to_string())
        }
        _ => Ok(password),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stack over the real template with made-up physical resources, to test
    /// resolution without moto.
    fn offline_stack() -> LocalStack {
        let template = crate::template::load_repo_template().unwrap();
        let params = BTreeMap::from([
            (
                "JwtIssuer".to_owned(),
                "http://127.0.0.1:3000/local-issuer".to_owned(),
            ),
            ("JwtAudience".to_owned(), "conduit-local".to_owned()),
            (
                "DashboardOrigins".to_owned(),
                "http://localhost:5173, https://app.example.com".to_owned(),
            ),
            (
                "PublicBaseUrl".to_owned(),
                "http://127.0.0.1:3000".to_owned(),
            ),
        ]);
        let mut stack = LocalStack {
            parameters: resolve_parameters(&template, &params).unwrap(),
            template: Arc::new(template),
            aws: SdkConfig::builder().build(),
            stack_name: "unit".to_owned(),
            region: "us-east-1".to_owned(),
            account_id: "123456789012".to_owned(),
            resources: BTreeMap::new(),
            function_env: BTreeMap::new(),
            given_parameters: BTreeMap::new(),
            local_env: BTreeMap::new(),
        };
        stack.register_derived();
        stack.resources.insert(
            "Table".into(),
            PhysicalResource {
                kind: TABLE.into(),
                reference: "unit-Table".into(),
                attributes: BTreeMap::from([(
                    "Arn".into(),
                    "arn:aws:dynamodb:us-east-1:123456789012:table/unit-Table".into(),
                )]),
            },
        );
        stack.resources.insert(
            "DataKey".into(),
            PhysicalResource {
                kind: KMS_KEY.into(),
                reference: "k-1".into(),
                attributes: BTreeMap::from([(
                    "Arn".into(),
                    "arn:aws:kms:us-east-1:123456789012:key/k-1".into(),
                )]),
            },
        );
        stack
    }

    fn yaml(text: &str) -> Value {
        serde_yaml_ng::from_str(text).unwrap()
    }

    #[test]
    fn intrinsics_resolve_against_the_real_template() {
        let mut stack = offline_stack();
        let t = stack.template().clone();
        let env = &t.functions["CredentialsFunction"].environment;
        assert_eq!(
            stack.resolve_text(&env["CONDUIT_TABLE"]).unwrap(),
            "unit-Table"
        );
        assert_eq!(
            stack.resolve_text(&env["CONDUIT_KMS_KEY_ID"]).unwrap(),
            "arn:aws:kms:us-east-1:123456789012:key/k-1"
        );
        assert_eq!(
            stack
                .resolve_text(&env["CONDUIT_DASHBOARD_ORIGINS"])
                .unwrap(),
            "http://localhost:5173,https://app.example.com"
        );
        assert_eq!(
            stack.resolve_text(&env["AWS_LAMBDA_LOG_LEVEL"]).unwrap(),
            "INFO"
        );
        // Without DomainName the public origin is the parameter; with one, the domain.
        let base = &env["CONDUIT_PUBLIC_BASE_URL"];
        assert_eq!(stack.resolve_text(base).unwrap(), "http://127.0.0.1:3000");
        assert!(!stack.condition("HasCustomDomain").unwrap());
        stack.parameters.insert(
            "DomainName".to_owned(),
            Json::String("api.example.com".to_owned()),
        );
        assert!(stack.condition("HasCustomDomain").unwrap());
        assert_eq!(stack.resolve_text(base).unwrap(), "https://api.example.com");
        // The secret is not created offline: resolving it names the problem.
        let err = stack
            .resolve_text(&env["CONDUIT_PLATFORM_SECRET_ID"])
            .unwrap_err();
        assert!(err.to_string().contains("PlatformSecret"), "{err}");

        let alias = &t.resources["DataKeyAlias"].properties["AliasName"];
        assert_eq!(stack.resolve_text(alias).unwrap(), "alias/unit-data");
        let index = yaml(r#"!Sub "${Table.Arn}/index/*""#);
        assert_eq!(
            stack.resolve_text(&index).unwrap(),
            "arn:aws:dynamodb:us-east-1:123456789012:table/unit-Table/index/*"
        );
        let url = &yaml(r#"!Sub "https://${Api}.execute-api.${AWS::Region}.${AWS::URLSuffix}""#);
        assert_eq!(
            stack.resolve_text(url).unwrap(),
            "https://devhost.execute-api.us-east-1.amazonaws.com"
        );
        let issuer = &t.apis["Api"].authorizers["DashboardJwt"];
        assert_eq!(
            stack.resolve_text(&issuer.issuer).unwrap(),
            "http://127.0.0.1:3000/local-issuer"
        );
        assert_eq!(
            stack.resolve_list(&issuer.audience).unwrap(),
            vec!["conduit-local"]
        );
    }

    #[test]
    fn long_forms_and_other_intrinsics_resolve() {
        let stack = offline_stack();
        let cases = [
            (
                r#"{ "Fn::GetAtt": [Table, Arn] }"#,
                "arn:aws:dynamodb:us-east-1:123456789012:table/unit-Table",
            ),
            (r#"{ Ref: LogLevel }"#, "INFO"),
            (r#"{ "Fn::Sub": "${AWS::StackName}-x" }"#, "unit-x"),
            (
                r#"{ "Fn::Sub": ["${A}/${!Lit}", { A: !Ref Table }] }"#,
                "unit-Table/${Lit}",
            ),
            (
                r#"{ "Fn::Join": ["-", [a, !Ref Table, { Ref: "AWS::Region" }]] }"#,
                "a-unit-Table-us-east-1",
            ),
            (
                r#"!Select [1, !Ref DashboardOrigins]"#,
                "https://app.example.com",
            ),
            (r#"!Select [0, !Split [",", "x,y"]]"#, "x"),
            (
                r#"!GetAtt CredentialsFunction.Arn"#,
                "arn:aws:lambda:us-east-1:123456789012:function:unit-CredentialsFunction",
            ),
            (
                r#"!GetAtt SyncSchedulerRole.Arn"#,
                "arn:aws:iam::123456789012:role/unit-SyncSchedulerRole",
            ),
            (r#"!Ref SyncSchedulerRole"#, "unit-SyncSchedulerRole"),
        ];
        for (text, want) in cases {
            assert_eq!(stack.resolve_text(&yaml(text)).unwrap(), want, "{text}");
        }
        let with_novalue = yaml("{ a: !Ref 'AWS::NoValue', b: 1 }");
        assert_eq!(
            stack.resolve(&with_novalue).unwrap(),
            Some(serde_json::json!({"b": 1}))
        );
        assert!(stack.resolve(&yaml("!If [c, a, b]")).is_err());
        assert!(stack.resolve(&yaml("!Ref Nope")).is_err());
    }

    #[test]
    fn parameters_are_checked() {
        let t = crate::template::load_repo_template().unwrap();
        let err = resolve_parameters(&t, &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("JwtIssuer") && err.contains("JwtAudience"),
            "{err}"
        );
        let mut p = BTreeMap::from([
            ("JwtIssuer".to_owned(), "i".to_owned()),
            ("JwtAudience".to_owned(), "a".to_owned()),
            ("DashboardOrigins".to_owned(), "http://x".to_owned()),
            ("PublicBaseUrl".to_owned(), "http://x".to_owned()),
            ("LogLevel".to_owned(), "loud".to_owned()),
        ]);
        assert!(
            resolve_parameters(&t, &p)
                .unwrap_err()
                .to_string()
                .contains("LogLevel")
        );
        p.insert("LogLevel".into(), "DEBUG".into());
        p.insert("Bogus".into(), "x".into());
        assert!(
            resolve_parameters(&t, &p)
                .unwrap_err()
                .to_string()
                .contains("Bogus")
        );
    }

    #[test]
    fn dead_letter_queues_come_first() {
        let t = crate::template::load_repo_template().unwrap();
        let order = creation_order(&t).unwrap();
        let pos = |id: &str| order.iter().position(|x| x == id).unwrap();
        assert!(pos("SyncDeadLetterQueue") < pos("SyncQueue"));
        assert!(pos("DataKey") < pos("DataKeyAlias"));
        assert!(pos("DataKey") < pos("PlatformSecret"));
        assert!(!order.contains(&"CredentialsFunction".to_owned()));
        // A rule after the bus it is on and the queues it delivers to; queue policies
        // are not created locally.
        for rule in ["ProductEventsRule", "ConduitEventsRule"] {
            assert!(pos("EventBus") < pos(rule));
            assert!(pos("DispatchQueue") < pos(rule));
            assert!(pos("DispatchDLQ") < pos(rule));
        }
        assert!(!order.contains(&"DispatchQueuePolicy".to_owned()));
    }
}

//! The template's EventBridge rules (`AWS::Events::Rule`) on moto: each rule with its
//! `EventPattern` (or `ScheduleExpression`), `EventBusName`, `State` and `Targets`
//! (`Id`, `Arn`, `Input`, `InputPath`, `InputTransformer`, `RetryPolicy`,
//! `DeadLetterConfig`, `SqsParameters`), so that an event put on the bus reaches the
//! rule's SQS targets exactly as in AWS (moto matches the pattern and delivers the
//! whole event, or what `Input*` makes of it).
//!
//! What moto does not do: it does not enforce `AWS::SQS::QueuePolicy` (nor KMS key
//! policies), so queue policies are not created locally — a target queue whose policy
//! would refuse the rule still receives its events here; `infra/check.sh` (cfn-lint,
//! checkov) is what checks those policies. It neither retries nor dead-letters a
//! delivery (`RetryPolicy` and `DeadLetterConfig` are kept on the target, unused).
//! Targets other than SQS queues (a Lambda function, …) are created but not run by the
//! dev host; a warning says so.
//!
//! Physical names are `{stack_name}-{LogicalId}` (cut to EventBridge's 64 characters)
//! unless the template gives `Name`. `Ref` is the rule's name on the default bus and
//! `{bus}|{name}` on a custom bus, as CloudFormation returns it; `Fn::GetAtt .Arn` is
//! the rule's ARN. Bootstrapping twice updates the rule in place and removes targets
//! the template no longer has.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result, anyhow, bail};
use aws_sdk_eventbridge::types::{
    DeadLetterConfig, InputTransformer, RetryPolicy, RuleState, SqsParameters, Target,
};
use serde_json::Value as Json;

use crate::stack::{LocalStack, PhysicalResource};

/// The resource type of an EventBridge rule.
pub const EVENT_RULE: &str = "AWS::Events::Rule";
/// The longest rule name EventBridge takes.
const MAX_RULE_NAME: usize = 64;
/// The bus a rule without `EventBusName` is on.
const DEFAULT_BUS: &str = "default";

/// A rule's name and bus as the template gives them (resolved properties).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleName {
    /// The rule's name.
    pub name: String,
    /// The bus's name (`default` when the template gives none).
    pub bus: String,
}

impl RuleName {
    /// The name and bus of the rule `logical_id` of stack `stack_name`, from its resolved
    /// properties: `Name` or `{stack_name}-{logical_id}` (cut to 64 characters), and
    /// `EventBusName` (a name or an ARN) or `default`.
    pub fn of(stack_name: &str, logical_id: &str, props: &Json) -> Self {
        let name = match props.get("Name").and_then(Json::as_str) {
            Some(name) => name.to_owned(),
            None => format!("{stack_name}-{logical_id}")
                .chars()
                .take(MAX_RULE_NAME)
                .collect(),
        };
        let bus = match props.get("EventBusName").and_then(Json::as_str) {
            // An ARN names the bus after `event-bus/`.
            Some(bus) => bus.rsplit_once("event-bus/").map_or(bus, |(_, n)| n),
            None => DEFAULT_BUS,
        };
        Self {
            name,
            bus: bus.to_owned(),
        }
    }

    /// What CloudFormation's `Ref` returns: the name on the default bus, else
    /// `{bus}|{name}`.
    pub fn reference(&self) -> String {
        if self.bus == DEFAULT_BUS {
            self.name.clone()
        } else {
            format!("{}|{}", self.bus, self.name)
        }
    }
}

/// The pattern of a rule as EventBridge takes it: JSON text.
fn pattern_text(props: &Json) -> Result<Option<String>> {
    match props.get("EventPattern") {
        None | Some(Json::Null) => Ok(None),
        Some(Json::String(text)) => {
            serde_json::from_str::<Json>(text).context("EventPattern is not JSON")?;
            Ok(Some(text.clone()))
        }
        Some(pattern @ Json::Object(_)) => Ok(Some(pattern.to_string())),
        Some(_) => bail!("EventPattern must be a mapping or JSON text"),
    }
}

fn text<'a>(props: &'a Json, name: &str) -> Option<&'a str> {
    props.get(name).and_then(Json::as_str)
}

fn number(props: &Json, name: &str) -> Result<Option<i32>> {
    match props.get(name) {
        None => Ok(None),
        Some(Json::Number(n)) => n
            .as_i64()
            .and_then(|n| i32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| anyhow!("{name} must be a whole number")),
        Some(Json::String(s)) => s
            .parse()
            .map(Some)
            .with_context(|| format!("{name} must be a whole number")),
        Some(_) => bail!("{name} must be a whole number"),
    }
}

/// One target of the template's `Targets`, as the SDK takes it.
pub fn target(spec: &Json) -> Result<Target> {
    let id = text(spec, "Id").ok_or_else(|| anyhow!("a target has no Id"))?;
    let arn = text(spec, "Arn").ok_or_else(|| anyhow!("target {id} has no Arn"))?;
    let mut target = Target::builder()
        .id(id)
        .arn(arn)
        .set_role_arn(text(spec, "RoleArn").map(str::to_owned))
        .set_input(text(spec, "Input").map(str::to_owned))
        .set_input_path(text(spec, "InputPath").map(str::to_owned));
    if let Some(transformer) = spec.get("InputTransformer") {
        let template = text(transformer, "InputTemplate")
            .ok_or_else(|| anyhow!("target {id}: InputTransformer has no InputTemplate"))?;
        let paths = match transformer.get("InputPathsMap") {
            None => None,
            Some(Json::Object(map)) => Some(
                map.iter()
                    .map(|(k, v)| {
                        v.as_str()
                            .map(|v| (k.clone(), v.to_owned()))
                            .ok_or_else(|| anyhow!("target {id}: InputPathsMap.{k} is not text"))
                    })
                    .collect::<Result<_>>()?,
            ),
            Some(_) => bail!("target {id}: InputPathsMap must be a mapping"),
        };
        target = target.input_transformer(
            InputTransformer::builder()
                .input_template(template)
                .set_input_paths_map(paths)
                .build()
                .with_context(|| format!("target {id}: InputTransformer"))?,
        );
    }
    if let Some(retry) = spec.get("RetryPolicy") {
        target = target.retry_policy(
            RetryPolicy::builder()
                .set_maximum_retry_attempts(number(retry, "MaximumRetryAttempts")?)
                .set_maximum_event_age_in_seconds(number(retry, "MaximumEventAgeInSeconds")?)
                .build(),
        );
    }
    if let Some(dlq) = spec.get("DeadLetterConfig") {
        target = target.dead_letter_config(
            DeadLetterConfig::builder()
                .set_arn(text(dlq, "Arn").map(str::to_owned))
                .build(),
        );
    }
    if let Some(group) = spec
        .get("SqsParameters")
        .and_then(|p| text(p, "MessageGroupId"))
    {
        target = target.sqs_parameters(SqsParameters::builder().message_group_id(group).build());
    }
    target
        .build()
        .with_context(|| format!("building target {id}"))
}

impl LocalStack {
    /// Creates or updates the rule `logical_id` from its resolved properties, with
    /// exactly the template's targets.
    pub(crate) async fn ensure_rule(
        &self,
        logical_id: &str,
        props: &Json,
    ) -> Result<PhysicalResource> {
        let client = aws_sdk_eventbridge::Client::new(self.sdk_config());
        let rule = RuleName::of(self.stack_name(), logical_id, props);
        let pattern = pattern_text(props)?;
        let schedule = text(props, "ScheduleExpression");
        if pattern.is_none() && schedule.is_none() {
            bail!("a rule needs an EventPattern or a ScheduleExpression");
        }
        let state = text(props, "State").unwrap_or("ENABLED");
        let arn = client
            .put_rule()
            .name(&rule.name)
            .event_bus_name(&rule.bus)
            .set_event_pattern(pattern)
            .set_schedule_expression(schedule.map(str::to_owned))
            .set_description(text(props, "Description").map(str::to_owned))
            .set_role_arn(text(props, "RoleArn").map(str::to_owned))
            .state(RuleState::from(state))
            .send()
            .await
            .map_err(sdk_error)
            .with_context(|| format!("putting rule {} on bus {}", rule.name, rule.bus))?
            .rule_arn
            .ok_or_else(|| anyhow!("EventBridge returned no ARN for rule {}", rule.name))?;

        let specs = match props.get("Targets") {
            None => Vec::new(),
            Some(Json::Array(items)) => items.iter().map(target).collect::<Result<Vec<_>>>()?,
            Some(_) => bail!("Targets must be a list"),
        };
        let queues: BTreeSet<String> = self.queues().into_values().map(|(_, arn)| arn).collect();
        for t in &specs {
            if !queues.contains(t.arn()) {
                tracing::warn!(target: "devhost", rule = %logical_id, target = %t.id(), arn = %t.arn(), "rule target is not one of the stack's queues: moto keeps it but the dev host does not run it");
            }
        }
        let wanted: BTreeSet<String> = specs.iter().map(|t| t.id().to_owned()).collect();
        let existing = client
            .list_targets_by_rule()
            .rule(&rule.name)
            .event_bus_name(&rule.bus)
            .send()
            .await
            .map_err(sdk_error)
            .with_context(|| format!("listing the targets of rule {}", rule.name))?;
        let stale: Vec<String> = existing
            .targets()
            .iter()
            .map(|t| t.id().to_owned())
            .filter(|id| !wanted.contains(id))
            .collect();
        if !stale.is_empty() {
            client
                .remove_targets()
                .rule(&rule.name)
                .event_bus_name(&rule.bus)
                .set_ids(Some(stale))
                .send()
                .await
                .map_err(sdk_error)
                .with_context(|| format!("removing old targets of rule {}", rule.name))?;
        }
        if !specs.is_empty() {
            let out = client
                .put_targets()
                .rule(&rule.name)
                .event_bus_name(&rule.bus)
                .set_targets(Some(specs))
                .send()
                .await
                .map_err(sdk_error)
                .with_context(|| format!("putting the targets of rule {}", rule.name))?;
            if out.failed_entry_count() > 0 {
                let failed: Vec<String> = out
                    .failed_entries()
                    .iter()
                    .map(|e| {
                        format!(
                            "{}: {}",
                            e.target_id().unwrap_or("?"),
                            e.error_message().unwrap_or("refused")
                        )
                    })
                    .collect();
                bail!(
                    "EventBridge refused targets of rule {}: {}",
                    rule.name,
                    failed.join("; ")
                );
            }
        }
        Ok(PhysicalResource {
            kind: EVENT_RULE.to_owned(),
            attributes: BTreeMap::from([("Arn".to_owned(), arn)]),
            reference: rule.reference(),
        })
    }

    /// The stack's EventBridge rules by logical id: (bus, name, ARN).
    pub fn event_rules(&self) -> BTreeMap<String, (String, String, String)> {
        self.template()
            .resources
            .values()
            .filter(|r| r.kind == EVENT_RULE)
            .filter_map(|r| {
                let physical = self.resource(&r.logical_id)?;
                let (bus, name) = physical
                    .reference
                    .split_once('|')
                    .unwrap_or((DEFAULT_BUS, physical.reference.as_str()));
                let arn = physical.attributes.get("Arn")?;
                Some((
                    r.logical_id.clone(),
                    (bus.to_owned(), name.to_owned(), arn.clone()),
                ))
            })
            .collect()
    }
}

fn sdk_error(err: impl std::error::Error) -> anyhow::Error {
    anyhow!("{}", aws_sdk_eventbridge::error::DisplayErrorContext(err))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_and_references_follow_cloudformation() {
        let on_bus = RuleName::of(
            "dev",
            "ProductEventsRule",
            &json!({"EventBusName": "dev-events"}),
        );
        assert_eq!(on_bus.name, "dev-ProductEventsRule");
        assert_eq!(on_bus.reference(), "dev-events|dev-ProductEventsRule");
        let by_arn = RuleName::of(
            "dev",
            "R",
            &json!({"EventBusName": "arn:aws:events:us-east-1:123456789012:event-bus/dev-events", "Name": "mine"}),
        );
        assert_eq!(by_arn.bus, "dev-events");
        assert_eq!(by_arn.reference(), "dev-events|mine");
        let default = RuleName::of(&"s".repeat(60), "SomeRule", &json!({}));
        assert_eq!(default.bus, "default");
        assert_eq!(default.name.len(), MAX_RULE_NAME);
        assert_eq!(default.reference(), default.name);
    }

    #[test]
    fn the_real_templates_rules_build_their_targets() {
        let template = crate::template::load_repo_template().unwrap();
        let rules: Vec<_> = template
            .resources
            .values()
            .filter(|r| r.kind == EVENT_RULE)
            .collect();
        assert!(rules.len() >= 2, "the dispatch rules are in template.yaml");
        for rule in rules {
            // Resolved as the stack would, with the intrinsics replaced by text.
            let targets = rule
                .property("Targets")
                .and_then(|t| t.as_sequence())
                .unwrap();
            for t in targets {
                let mut spec: Json = serde_json::to_value(t).unwrap();
                spec["Arn"] = json!("arn:aws:sqs:us-east-1:123456789012:q");
                if spec.get("DeadLetterConfig").is_some() {
                    spec["DeadLetterConfig"]["Arn"] =
                        json!("arn:aws:sqs:us-east-1:123456789012:dlq");
                }
                let built = target(&spec).unwrap();
                assert_eq!(built.arn(), "arn:aws:sqs:us-east-1:123456789012:q");
                // The whole event is delivered: nothing reshapes it.
                assert!(built.input().is_none() && built.input_path().is_none());
                assert!(built.input_transformer().is_none());
                assert!(built.dead_letter_config().is_some(), "{}", rule.logical_id);
                let retry = built.retry_policy().unwrap();
                assert!(retry.maximum_event_age_in_seconds().is_some());
            }
        }
    }

    #[test]
    fn targets_are_checked() {
        assert!(target(&json!({"Arn": "a"})).is_err());
        assert!(target(&json!({"Id": "t"})).is_err());
        assert!(
            target(&json!({"Id": "t", "Arn": "a", "RetryPolicy": {"MaximumRetryAttempts": "x"}}))
                .is_err()
        );
        let t = target(&json!({"Id": "t", "Arn": "a", "InputTransformer": {
            "InputPathsMap": {"d": "$.detail"}, "InputTemplate": "<d>"},
            "SqsParameters": {"MessageGroupId": "g"}}))
        .unwrap();
        assert_eq!(t.input_transformer().unwrap().input_template(), "<d>");
        assert_eq!(t.sqs_parameters().unwrap().message_group_id(), Some("g"));
        assert_eq!(
            pattern_text(&json!({"EventPattern": {"source": ["x"]}}))
                .unwrap()
                .as_deref(),
            Some(r#"{"source":["x"]}"#)
        );
        assert!(pattern_text(&json!({"EventPattern": "not json"})).is_err());
    }
}

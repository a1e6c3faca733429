//! Sync configurations: per connection, which entities sync which way, how often,
//! which CRM records (filters), how conflicts settle, and the field mappings.
//!
//! A config is one item (`T#{tenant}` / `SYNCCFG#{id}`) holding its mappings, so the
//! worker reads everything it needs in one read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::conflict::{Direction, Strategy};
use super::schema::{CrmField, Entity, FieldType};
use super::transform::{INPUT_CHARS, MAX_OUTPUT, Transform};
use crate::domain::{ConnectionId, JobId, MappingId, SyncConfigId, TenantId, UserId};

/// Which way records flow for a whole config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncDirection {
    /// App → CRM.
    Push,
    /// CRM → app.
    Pull,
    /// Both.
    Bidirectional,
}

impl SyncDirection {
    /// Whether records flow from the CRM.
    pub fn pulls(self) -> bool {
        matches!(self, Self::Pull | Self::Bidirectional)
    }
    /// Whether records flow to the CRM.
    pub fn pushes(self) -> bool {
        matches!(self, Self::Push | Self::Bidirectional)
    }
    /// Its name in the API (`pull`, `push`, `bidirectional`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pull => "pull",
            Self::Push => "push",
            Self::Bidirectional => "bidirectional",
        }
    }
    /// Whether `narrower` is this direction or a part of it.
    pub fn covers(self, narrower: SyncDirection) -> bool {
        self == Self::Bidirectional || self == narrower
    }
}

/// How often a config runs by itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type", try_from = "FrequencyFields")]
pub enum Frequency {
    /// As soon as possible: every minute, and app writes are pushed at once.
    Realtime,
    /// Every hour.
    Hourly,
    /// Once a day at `at` (`HH:MM`, UTC).
    Daily {
        /// `HH:MM` in UTC.
        at: String,
    },
    /// Only when triggered.
    Manual,
}

/// A frequency as written, read as a plain struct: serde's internally tagged enums
/// ignore unknown keys on unit variants (`{"type":"manual","every":1}`) and take
/// arrays for objects, which a request must not get away with.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FrequencyFields {
    #[serde(rename = "type")]
    kind: FrequencyKind,
    #[serde(default)]
    at: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum FrequencyKind {
    Realtime,
    Hourly,
    Daily,
    Manual,
}

impl TryFrom<FrequencyFields> for Frequency {
    type Error = &'static str;

    fn try_from(f: FrequencyFields) -> Result<Self, Self::Error> {
        match (f.kind, f.at) {
            (FrequencyKind::Daily, Some(at)) => Ok(Self::Daily { at }),
            (FrequencyKind::Daily, None) => Err("a daily frequency needs `at` (HH:MM, UTC)"),
            (_, Some(_)) => Err("only a daily frequency takes `at`"),
            (FrequencyKind::Realtime, None) => Ok(Self::Realtime),
            (FrequencyKind::Hourly, None) => Ok(Self::Hourly),
            (FrequencyKind::Manual, None) => Ok(Self::Manual),
        }
    }
}

impl Frequency {
    /// The EventBridge Scheduler expression, if the config runs by itself.
    pub fn schedule_expression(&self) -> Option<String> {
        match self {
            Frequency::Realtime => Some("rate(1 minute)".into()),
            Frequency::Hourly => Some("rate(1 hour)".into()),
            Frequency::Daily { at } => {
                let (h, m) = parse_hh_mm(at)?;
                Some(format!("cron({m} {h} * * ? *)"))
            }
            Frequency::Manual => None,
        }
    }

    /// When the schedule fires next after `after` (UTC, as the schedules are created);
    /// rate schedules count from `anchor`, when the schedule was last written.
    pub fn next_run(
        &self,
        after: OffsetDateTime,
        anchor: OffsetDateTime,
    ) -> Option<OffsetDateTime> {
        let every = match self {
            Frequency::Realtime => time::Duration::minutes(1),
            Frequency::Hourly => time::Duration::hours(1),
            Frequency::Daily { at } => {
                let (h, m) = parse_hh_mm(at)?;
                let time = time::Time::from_hms(h, m, 0).ok()?;
                let after = after.to_offset(time::UtcOffset::UTC);
                let today = after.date().with_time(time).assume_utc();
                return Some(if today > after {
                    today
                } else {
                    today + time::Duration::days(1)
                });
            }
            Frequency::Manual => return None,
        };
        if anchor > after {
            return Some(anchor + every);
        }
        let periods = (after - anchor).whole_seconds() / every.whole_seconds() + 1;
        Some(anchor + every * periods as i32)
    }
}

fn parse_hh_mm(at: &str) -> Option<(u8, u8)> {
    let (h, m) = at.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let h: u8 = h.parse().ok()?;
    let m: u8 = m.parse().ok()?;
    (h < 24 && m < 60).then_some((h, m))
}

/// Whether a config runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigStatus {
    /// Runs on schedule and on demand.
    Active,
    /// Neither; runs in flight stop at their next chunk.
    Paused,
}

/// A filter operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterOp {
    /// Equal.
    Eq,
    /// Not equal.
    Neq,
    /// Contains the word.
    Contains,
    /// Greater than.
    Gt,
    /// Greater or equal.
    Gte,
    /// Less than.
    Lt,
    /// Less or equal.
    Lte,
    /// One of `values`.
    In,
    /// Has any value.
    HasValue,
    /// Has no value.
    NoValue,
}

/// Only CRM records matching every filter of an entity sync (applied by the CRM on
/// pulls, and to the mapped values before a push).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    /// The entity it applies to.
    pub entity: Entity,
    /// A CRM field.
    pub field: String,
    /// How to compare.
    pub operator: FilterOp,
    /// The value (all operators but `in`, `has_value`, `no_value`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The values of `in`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
}

impl Filter {
    /// Whether mapped CRM values match this filter (a missing field has no value).
    pub fn matches(&self, value: Option<&str>) -> bool {
        let want = self.value.as_deref().unwrap_or_default();
        match (self.operator, value) {
            (FilterOp::HasValue, v) => v.is_some_and(|v| !v.is_empty()),
            (FilterOp::NoValue, v) => v.is_none_or(str::is_empty),
            (_, None) => self.operator == FilterOp::Neq,
            (FilterOp::Eq, Some(v)) => v.eq_ignore_ascii_case(want),
            (FilterOp::Neq, Some(v)) => !v.eq_ignore_ascii_case(want),
            (FilterOp::Contains, Some(v)) => v.to_lowercase().contains(&want.to_lowercase()),
            (FilterOp::In, Some(v)) => self.values.iter().any(|x| x.eq_ignore_ascii_case(v)),
            (op, Some(v)) => {
                let ord = match (v.parse::<f64>(), want.parse::<f64>()) {
                    (Ok(a), Ok(b)) => a.partial_cmp(&b),
                    _ => Some(v.cmp(want)),
                };
                let Some(ord) = ord else { return false };
                match op {
                    FilterOp::Gt => ord.is_gt(),
                    FilterOp::Gte => ord.is_ge(),
                    FilterOp::Lt => ord.is_lt(),
                    _ => ord.is_le(),
                }
            }
        }
    }
}

/// What a config does beyond copying changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncOptions {
    /// Create records missing on the other side (else only linked records sync).
    #[serde(default = "yes")]
    pub create_missing: bool,
    /// Delete on one side what was deleted on the other.
    #[serde(default)]
    pub propagate_deletes: bool,
}

fn yes() -> bool {
    true
}

impl Default for SyncOptions {
    fn default() -> Self {
        Self {
            create_missing: true,
            propagate_deletes: false,
        }
    }
}

/// One CRM field ↔ app field pairing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldMapping {
    /// Its id.
    pub id: MappingId,
    /// The entity.
    pub entity: Entity,
    /// The CRM field's API name.
    pub crm_field: String,
    /// The app field.
    pub app_field: String,
    /// Which way it flows.
    pub direction: Direction,
    /// Applied to CRM values on the way in (pull), in the transform language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<String>,
    /// Applied to app values on the way out (push).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub push_transform: Option<String>,
}

/// A sync configuration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncConfig {
    /// Its id.
    pub id: SyncConfigId,
    /// Its tenant.
    pub tenant: TenantId,
    /// The connection it syncs with.
    pub connection_id: ConnectionId,
    /// The connection's provider (hubspot, salesforce).
    pub provider: String,
    /// A human name.
    pub name: String,
    /// Which way records flow.
    pub direction: SyncDirection,
    /// How often it runs.
    pub frequency: Frequency,
    /// The entities it syncs.
    pub entities: Vec<Entity>,
    /// Which CRM records.
    #[serde(default)]
    pub filters: Vec<Filter>,
    /// How conflicts settle.
    pub conflict_strategy: Strategy,
    /// Creation and delete behaviour.
    #[serde(default)]
    pub options: SyncOptions,
    /// Active or paused.
    pub status: ConfigStatus,
    /// The field mappings of every entity.
    #[serde(default)]
    pub mappings: Vec<FieldMapping>,
    /// The EventBridge Scheduler schedule's name, when it runs by itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule_name: Option<String>,
    /// The latest run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_job: Option<JobId>,
    /// Creation time.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Who created it.
    pub created_by: UserId,
    /// Last change.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Optimistic-concurrency version, +1 per change.
    pub version: u64,
}

impl SyncConfig {
    /// The entities this config has that `prev` (an earlier version) did not.
    pub fn entities_added_since(&self, prev: &SyncConfig) -> Vec<Entity> {
        self.entities
            .iter()
            .copied()
            .filter(|e| !prev.entities.contains(e))
            .collect()
    }

    /// The mappings of `entity`.
    pub fn mappings_of(&self, entity: Entity) -> impl Iterator<Item = &FieldMapping> {
        self.mappings.iter().filter(move |m| m.entity == entity)
    }

    /// The filters of `entity`.
    pub fn filters_of(&self, entity: Entity) -> impl Iterator<Item = &Filter> {
        self.filters.iter().filter(move |f| f.entity == entity)
    }
}

/// One problem with a mapping set, for a 4xx answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MappingProblem {
    /// The mapping (its index or id) and field at fault.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// Checks every mapping of `entity` against the CRM's fields and the app's, and the
/// set as a whole: known fields on both sides, compatible types, valid transforms
/// whose field references exist, no two mappings writing one target.
pub fn check_mappings(
    entity: Entity,
    mappings: &[&FieldMapping],
    crm_fields: &[CrmField],
) -> Vec<MappingProblem> {
    let mut problems = Vec::new();
    let mut pull_targets: BTreeMap<&str, usize> = BTreeMap::new();
    let mut push_targets: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, m) in mappings.iter().enumerate() {
        let at = |what: &str| format!("mappings[{i}].{what}");
        let app = entity.field(&m.app_field);
        let crm = crm_fields.iter().find(|f| f.name == m.crm_field);
        if app.is_none() {
            problems.push(MappingProblem {
                field: at("app_field"),
                message: format!("{entity} have no app field {:?}", clip(&m.app_field)),
            });
        }
        let Some(crm) = crm else {
            problems.push(MappingProblem {
                field: at("crm_field"),
                message: format!("the CRM has no {entity} field {:?}", clip(&m.crm_field)),
            });
            continue;
        };
        let pulls = matches!(m.direction, Direction::Pull | Direction::Bidirectional);
        let pushes = matches!(m.direction, Direction::Push | Direction::Bidirectional);
        if pushes && !crm.writable {
            problems.push(MappingProblem {
                field: at("direction"),
                message: format!("CRM field {:?} is read-only: it cannot be pushed", crm.name),
            });
        }
        for (name, src, side_fields) in [
            ("transform", &m.transform, Side::Crm),
            ("push_transform", &m.push_transform, Side::App),
        ] {
            let Some(src) = src else { continue };
            match Transform::parse(src) {
                Err(e) => problems.push(MappingProblem {
                    field: at(name),
                    message: e.to_string(),
                }),
                Ok(t) => {
                    // A value map pushed into a CRM picklist (a deal stage, a lifecycle
                    // stage) writes only the CRM's options: a target it does not list is
                    // refused now, not record by record at run time.
                    if matches!(side_fields, Side::App)
                        && pushes
                        && crm.kind == FieldType::Enumeration
                        && !crm.options.is_empty()
                        && let Some(targets) = t.map_targets()
                        && let Some(bad) = targets
                            .iter()
                            .find(|v| !v.is_empty() && !crm.options.iter().any(|o| o == *v))
                    {
                        problems.push(MappingProblem {
                            field: at(name),
                            message: format!(
                                "the value map writes {:?}, which is not one of CRM field {:?}'s options",
                                clip(bad),
                                crm.name
                            ),
                        });
                    }
                    let bound = t.bound();
                    if bound > MAX_OUTPUT as u64 {
                        problems.push(MappingProblem {
                            field: at(name),
                            message: format!(
                                "the transform can produce {} bytes from values of {INPUT_CHARS} characters; at most {MAX_OUTPUT} are allowed",
                                if bound == u64::MAX { "unboundedly many".to_owned() } else { bound.to_string() }
                            ),
                        });
                    }
                    for f in t.fields() {
                        let known = match side_fields {
                            Side::Crm => crm_fields.iter().any(|c| c.name == f),
                            Side::App => entity.field(f).is_some(),
                        };
                        if !known {
                            problems.push(MappingProblem {
                                field: at(name),
                                message: format!(
                                    "the transform refers to an unknown field {:?}",
                                    clip(f)
                                ),
                            });
                        }
                    }
                }
            }
        }
        if let Some(app) = app {
            let transformed = m.transform.is_some() || m.push_transform.is_some();
            if !transformed && !app.kind.accepts(crm.kind) {
                problems.push(MappingProblem {
                    field: at("crm_field"),
                    message: format!(
                        "type mismatch: CRM field {:?} is {}, app field {:?} is {}",
                        crm.name,
                        crm.kind.as_str(),
                        app.name,
                        app.kind.as_str()
                    ),
                });
            }
            if pulls && let Some(j) = pull_targets.insert(app.name, i) {
                problems.push(MappingProblem {
                    field: at("app_field"),
                    message: format!("mappings[{j}] already writes app field {:?}", app.name),
                });
            }
        }
        if pushes && let Some(j) = push_targets.insert(crm.name.as_str(), i) {
            problems.push(MappingProblem {
                field: at("crm_field"),
                message: format!("mappings[{j}] already writes CRM field {:?}", crm.name),
            });
        }
    }
    problems
}

enum Side {
    Crm,
    App,
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

pub use crate::store::configs::{Configs, WriteError};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::schema::FieldType;

    fn crm(name: &str, kind: FieldType, writable: bool) -> CrmField {
        CrmField {
            name: name.into(),
            label: name.into(),
            kind,
            provider_type: "string".into(),
            required: false,
            writable,
            options: vec![],
        }
    }

    fn m(crm_field: &str, app_field: &str, direction: Direction) -> FieldMapping {
        FieldMapping {
            id: MappingId::generate(),
            entity: Entity::Contacts,
            crm_field: crm_field.into(),
            app_field: app_field.into(),
            direction,
            transform: None,
            push_transform: None,
        }
    }

    #[test]
    fn a_sound_mapping_set_passes() {
        let fields = vec![
            crm("email", FieldType::Email, true),
            crm("firstname", FieldType::String, true),
            crm("hs_object_id", FieldType::Id, false),
        ];
        let mut first = m("firstname", "first_name", Direction::Bidirectional);
        first.transform = Some("trim | upper".into());
        let set = [
            &m("email", "email", Direction::Bidirectional),
            &first,
            &m("hs_object_id", "notes", Direction::Pull),
        ];
        assert_eq!(check_mappings(Entity::Contacts, &set, &fields), vec![]);
    }

    #[test]
    fn bad_mappings_are_named() {
        let fields = vec![
            crm("email", FieldType::Email, true),
            crm("age", FieldType::Number, true),
            crm("hs_object_id", FieldType::Id, false),
        ];
        let mut bad_transform = m("email", "notes", Direction::Pull);
        bad_transform.transform = Some("concat(nope)".into());
        let mut growing = m("email", "department", Direction::Pull);
        growing.transform = Some("concat(_, _, _, _, _) | concat(_, _, _, _, _)".into());
        let set = [
            &m("email", "email", Direction::Bidirectional),
            &m("missing", "email", Direction::Pull),
            &m("email", "not_a_field", Direction::Pull),
            &m("age", "birth_date", Direction::Pull),
            &m("hs_object_id", "notes", Direction::Push),
            &m("email", "email", Direction::Bidirectional),
            &bad_transform,
            &growing,
        ];
        let problems = check_mappings(Entity::Contacts, &set, &fields);
        let text = format!("{problems:?}");
        assert!(text.contains("no contacts field \\\"missing\\\""), "{text}");
        assert!(text.contains("not_a_field"), "{text}");
        assert!(text.contains("type mismatch"), "{text}");
        assert!(text.contains("read-only"), "{text}");
        assert!(text.contains("already writes app field"), "{text}");
        assert!(text.contains("already writes CRM field"), "{text}");
        assert!(text.contains("unknown field \\\"nope\\\""), "{text}");
        assert!(
            text.contains("mappings[7].transform") && text.contains("can produce 200000 bytes"),
            "{text}"
        );
    }

    #[test]
    fn a_stage_value_map_writes_only_the_crms_options() {
        let mut stage = crm("dealstage", FieldType::Enumeration, true);
        stage.options = vec!["appointmentscheduled".into(), "closedwon".into()];
        let fields = vec![stage];
        let mapped = |push: &str| {
            let mut m = m("dealstage", "stage", Direction::Bidirectional);
            m.entity = Entity::Deals;
            m.transform = Some(r#"map({"closedwon": "won"})"#.into());
            m.push_transform = Some(push.into());
            m
        };
        let good = mapped(r#"map({"new": "appointmentscheduled", "won": "closedwon"})"#);
        assert_eq!(check_mappings(Entity::Deals, &[&good], &fields), vec![]);
        let bad = mapped(r#"map({"new": "appointmentscheduled", "won": "closed_won"})"#);
        let problems = check_mappings(Entity::Deals, &[&bad], &fields);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert_eq!(problems[0].field, "mappings[0].push_transform");
        assert!(problems[0].message.contains("closed_won"), "{problems:?}");
        // A value the map does not know passes through unchanged: the CRM refuses it
        // record by record (a run-time record error), as any other enumeration value.
        let pass_through = mapped(r#"trim | map({"won": "closedwon"})"#);
        assert_eq!(
            check_mappings(Entity::Deals, &[&pass_through], &fields),
            vec![]
        );
    }

    #[test]
    fn schedules_and_filters() {
        assert_eq!(
            Frequency::Daily { at: "02:30".into() }.schedule_expression(),
            Some("cron(30 2 * * ? *)".into())
        );
        assert_eq!(
            Frequency::Daily { at: "24:00".into() }.schedule_expression(),
            None
        );
        assert_eq!(Frequency::Manual.schedule_expression(), None);
        let t = time::macros::datetime!(2026-11-22 03:10 UTC);
        let anchor = time::macros::datetime!(2026-11-21 00:20:30 UTC);
        assert_eq!(
            Frequency::Daily { at: "02:30".into() }.next_run(t, anchor),
            Some(time::macros::datetime!(2026-11-23 02:30 UTC))
        );
        assert_eq!(
            Frequency::Daily { at: "04:00".into() }.next_run(t, anchor),
            Some(time::macros::datetime!(2026-11-22 04:00 UTC))
        );
        assert_eq!(
            Frequency::Hourly.next_run(t, anchor),
            Some(time::macros::datetime!(2026-11-22 03:20:30 UTC))
        );
        assert_eq!(Frequency::Manual.next_run(t, anchor), None);
        let f = Filter {
            entity: Entity::Companies,
            field: "employees".into(),
            operator: FilterOp::Gte,
            value: Some("50".into()),
            values: vec![],
        };
        assert!(f.matches(Some("120")));
        assert!(!f.matches(Some("9")));
        assert!(!f.matches(None));
    }

    #[test]
    fn frequencies_read_back_and_refuse_extra_keys() {
        use serde_json::json;
        for f in [
            Frequency::Realtime,
            Frequency::Hourly,
            Frequency::Manual,
            Frequency::Daily { at: "02:30".into() },
        ] {
            let v = serde_json::to_value(&f).unwrap();
            assert_eq!(serde_json::from_value::<Frequency>(v).unwrap(), f);
        }
        for bad in [
            json!({"type": "manual", "every": 1}),
            json!({"type": "hourly", "at": "02:00"}),
            json!({"type": "daily"}),
            json!({"type": "weekly"}),
        ] {
            assert!(
                serde_json::from_value::<Frequency>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }
}

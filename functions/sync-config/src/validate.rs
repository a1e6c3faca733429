//! Request bodies and the checks a config passes before it is stored: its own shape
//! (entities, frequency, filters), then its filters and mappings against the CRM's
//! described fields. Every problem is collected, so one 400 lists them all.

use std::collections::BTreeMap;

use conduit::domain::{Label, MappingId};
use conduit::http::ApiError;
use conduit::providers::FieldError;
use conduit::sync::config::{
    FieldMapping, Filter, FilterOp, Frequency, SyncConfig, SyncDirection, SyncOptions,
    check_mappings,
};
use conduit::sync::conflict::{Direction, Strategy};
use conduit::sync::crm::{CrmKind, parse_time_ms};
use conduit::sync::schema::{CrmField, Entity, FieldType};
use serde::{Deserialize, Deserializer};

/// The most mappings of one entity.
pub const MAX_MAPPINGS: usize = 100;
/// The most values of an `in` filter.
pub const MAX_FILTER_VALUES: usize = 100;
/// The longest filter value, in characters.
pub const MAX_VALUE_CHARS: usize = 256;
/// The largest stored config (DynamoDB items hold at most 400 KB).
pub const MAX_CONFIG_BYTES: usize = 300 * 1024;

/// `POST /v1/sync/configs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// The connection.
    pub connection_id: String,
    /// A human name.
    #[serde(default)]
    pub name: Option<String>,
    /// Which way records flow.
    pub direction: SyncDirection,
    /// How often it runs.
    pub frequency: Frequency,
    /// What it syncs.
    pub entities: Vec<Entity>,
    /// Which CRM records.
    #[serde(default)]
    pub filters: Vec<Filter>,
    /// How conflicts settle.
    pub conflict_strategy: Strategy,
    /// Creation and delete behaviour.
    #[serde(default)]
    pub options: Option<SyncOptions>,
    /// Field mappings (default: auto-mapped).
    #[serde(default)]
    pub mappings: Option<Vec<MappingInput>>,
}

/// `PATCH /v1/sync/configs/{id}`: what changes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchBody {
    /// A new name.
    #[serde(default)]
    pub name: Option<String>,
    /// A new direction.
    #[serde(default)]
    pub direction: Option<SyncDirection>,
    /// A new frequency.
    #[serde(default)]
    pub frequency: Option<Frequency>,
    /// New entities.
    #[serde(default)]
    pub entities: Option<Vec<Entity>>,
    /// New filters (all of them).
    #[serde(default)]
    pub filters: Option<Vec<Filter>>,
    /// A new strategy.
    #[serde(default)]
    pub conflict_strategy: Option<Strategy>,
    /// New options.
    #[serde(default)]
    pub options: Option<SyncOptions>,
}

impl PatchBody {
    /// Whether it changes nothing.
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.direction.is_none()
            && self.frequency.is_none()
            && self.entities.is_none()
            && self.filters.is_none()
            && self.conflict_strategy.is_none()
            && self.options.is_none()
    }
}

/// A new mapping as a caller writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingInput {
    /// The entity.
    pub entity: Entity,
    /// The CRM field's API name.
    pub crm_field: String,
    /// The app field.
    pub app_field: String,
    /// Which way it flows (default: both ways, pull only for read-only CRM fields).
    #[serde(default)]
    pub direction: Option<Direction>,
    /// Pull transform.
    #[serde(default)]
    pub transform: Option<String>,
    /// Push transform.
    #[serde(default)]
    pub push_transform: Option<String>,
}

impl MappingInput {
    /// The mapping, with a new id.
    pub fn into_mapping(self, crm_fields: Option<&[CrmField]>) -> FieldMapping {
        let writable = crm_fields
            .and_then(|fs| fs.iter().find(|f| f.name == self.crm_field))
            .is_none_or(|f| f.writable);
        FieldMapping {
            id: MappingId::generate(),
            entity: self.entity,
            direction: self.direction.unwrap_or(if writable {
                Direction::Bidirectional
            } else {
                Direction::Pull
            }),
            crm_field: self.crm_field,
            app_field: self.app_field,
            transform: self.transform.filter(|t| !t.trim().is_empty()),
            push_transform: self.push_transform.filter(|t| !t.trim().is_empty()),
        }
    }
}

/// `PATCH …/field-mappings/{mapping_id}`: what changes; a transform set to null is
/// removed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MappingPatch {
    /// A new CRM field.
    #[serde(default)]
    pub crm_field: Option<String>,
    /// A new app field.
    #[serde(default)]
    pub app_field: Option<String>,
    /// A new direction.
    #[serde(default)]
    pub direction: Option<Direction>,
    /// A new pull transform (null: none).
    #[serde(default, deserialize_with = "present")]
    pub transform: Option<Option<String>>,
    /// A new push transform (null: none).
    #[serde(default, deserialize_with = "present")]
    pub push_transform: Option<Option<String>>,
}

/// A field that is present (with a value or null) is `Some`.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

impl MappingPatch {
    /// Applies the patch to `m`.
    pub fn apply(self, m: &mut FieldMapping) {
        if let Some(v) = self.crm_field {
            m.crm_field = v;
        }
        if let Some(v) = self.app_field {
            m.app_field = v;
        }
        if let Some(v) = self.direction {
            m.direction = v;
        }
        if let Some(v) = self.transform {
            m.transform = v.filter(|t| !t.trim().is_empty());
        }
        if let Some(v) = self.push_transform {
            m.push_transform = v.filter(|t| !t.trim().is_empty());
        }
    }
}

/// Collected problems.
#[derive(Debug, Default)]
pub struct Problems(pub Vec<FieldError>);

impl Problems {
    /// Adds one.
    pub fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    /// Adds many.
    pub fn extend(&mut self, more: Vec<FieldError>) {
        self.0.extend(more);
    }

    /// The 400 listing them.
    pub fn into_error(self) -> ApiError {
        ApiError::invalid_fields(self.0)
    }

    /// A 400 listing them, if there are any.
    pub fn check(self) -> Result<(), ApiError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(ApiError::invalid_fields(self.0))
        }
    }
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// A config name as given (checked), or a default made of the provider and entities.
pub fn name(
    given: Option<&str>,
    provider_name: &str,
    entities: &[Entity],
) -> Result<String, String> {
    match given {
        Some(n) => Label::parse(n).map(String::from).map_err(|e| e.0),
        None => {
            let what: Vec<&str> = entities.iter().map(|e| e.as_str()).collect();
            Ok(String::from(Label::lossy(&format!(
                "{provider_name} {}",
                what.join(" and ")
            ))))
        }
    }
}

/// Checks what a config says about itself: entities, frequency, filter shapes.
pub fn check_shape(kind: Option<CrmKind>, c: &SyncConfig) -> Vec<FieldError> {
    let mut p = Problems::default();
    if c.entities.is_empty() {
        p.add(
            "entities",
            "name at least one entity: contacts, companies, deals",
        );
    }
    for (i, e) in c.entities.iter().enumerate() {
        if c.entities[..i].contains(e) {
            p.add(format!("entities[{i}]"), format!("{e} is listed twice"));
        }
        if let Some(k) = kind
            && !k.syncs(*e)
        {
            p.add(
                format!("entities[{i}]"),
                format!("{} does not sync {e} (yet)", k.provider()),
            );
        }
    }
    if let Frequency::Daily { at } = &c.frequency
        && c.frequency.schedule_expression().is_none()
    {
        p.add(
            "frequency.at",
            format!(
                "{:?} is not a time of day; use HH:MM (UTC), 00:00 to 23:59",
                clip(at)
            ),
        );
    }
    // The CRM's own limit (HubSpot: 6 filters in a search group, one of them the
    // pull's modification time), from the catalogue.
    let max_filters = kind.map_or_else(
        || {
            CrmKind::all()
                .iter()
                .map(|k| k.filters_max())
                .max()
                .unwrap_or(0)
        },
        CrmKind::filters_max,
    );
    for e in Entity::ALL {
        let n = c.filters_of(e).count();
        if n > max_filters {
            p.add(
                "filters",
                format!("at most {max_filters} filters per entity on this CRM ({e}: {n})"),
            );
        }
    }
    for (i, f) in c.filters.iter().enumerate() {
        let at = |what: &str| format!("filters[{i}].{what}");
        if !c.entities.contains(&f.entity) {
            p.add(
                at("entity"),
                format!("the config does not sync {}", f.entity),
            );
        }
        if f.field.trim().is_empty() {
            p.add(at("field"), "name a CRM field");
        }
        match f.operator {
            FilterOp::In => {
                if f.values.is_empty() {
                    p.add(at("values"), "`in` needs at least one value in `values`");
                }
                if f.values.len() > MAX_FILTER_VALUES {
                    p.add(at("values"), format!("at most {MAX_FILTER_VALUES} values"));
                }
                if f.value.is_some() {
                    p.add(at("value"), "`in` takes `values`, not `value`");
                }
            }
            FilterOp::HasValue | FilterOp::NoValue => {
                if f.value.is_some() || !f.values.is_empty() {
                    p.add(at("value"), "has_value and no_value take no value");
                }
            }
            _ => {
                if f.value.as_deref().is_none_or(|v| v.trim().is_empty()) {
                    p.add(at("value"), "this operator needs a `value`");
                }
                if !f.values.is_empty() {
                    p.add(at("values"), "only `in` takes `values`");
                }
            }
        }
        for v in f.value.iter().chain(&f.values) {
            if v.chars().count() > MAX_VALUE_CHARS || v.chars().any(char::is_control) {
                p.add(
                    at("value"),
                    format!("values are at most {MAX_VALUE_CHARS} characters, without control characters"),
                );
                break;
            }
        }
    }
    p.0
}

/// Whether `value` is a valid value of a field of type `kind` (and options).
fn value_problem(field: &CrmField, value: &str) -> Option<String> {
    let ok = match field.kind {
        FieldType::Number => value.trim().parse::<f64>().is_ok_and(f64::is_finite),
        FieldType::Boolean => matches!(value, "true" | "false"),
        FieldType::Date => is_date(value),
        FieldType::DateTime => parse_time_ms(value).is_some() || is_date(value),
        FieldType::Enumeration if !field.options.is_empty() => {
            field.options.iter().any(|o| o == value)
        }
        _ => true,
    };
    if ok {
        return None;
    }
    Some(match field.kind {
        FieldType::Number => format!("{} is a number field", field.name),
        FieldType::Boolean => format!("{} is true or false", field.name),
        FieldType::Date => format!("{} is a date: YYYY-MM-DD", field.name),
        FieldType::DateTime => format!(
            "{} is a date-time: RFC 3339, YYYY-MM-DD or epoch milliseconds",
            field.name
        ),
        _ => {
            let shown: Vec<&str> = field.options.iter().take(20).map(String::as_str).collect();
            format!("{} takes one of: {}", field.name, shown.join(", "))
        }
    })
}

fn op_name(op: FilterOp) -> String {
    serde_json::to_value(op)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn is_date(v: &str) -> bool {
    let b = v.as_bytes();
    v.is_ascii()
        && b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && v[..4].parse::<u16>().is_ok()
        && v[5..7].parse::<u8>().is_ok_and(|m| (1..=12).contains(&m))
        && v[8..].parse::<u8>().is_ok_and(|d| (1..=31).contains(&d))
}

/// Checks the config's filters against the CRM's fields of each entity.
pub fn check_filters(
    kind: CrmKind,
    c: &SyncConfig,
    described: &BTreeMap<Entity, Vec<CrmField>>,
) -> Vec<FieldError> {
    let mut p = Problems::default();
    for (i, f) in c.filters.iter().enumerate() {
        let at = |what: &str| format!("filters[{i}].{what}");
        let Some(fields) = described.get(&f.entity) else {
            continue;
        };
        let Some(field) = fields.iter().find(|d| d.name == f.field) else {
            if !f.field.trim().is_empty() {
                p.add(
                    at("field"),
                    format!("the CRM has no {} field {:?}", f.entity, clip(&f.field)),
                );
            }
            continue;
        };
        if field.name == kind.marker() {
            p.add(
                at("field"),
                format!("{} is Conduit's own link field", field.name),
            );
            continue;
        }
        let operator_fits = match f.operator {
            FilterOp::Contains => matches!(
                field.kind,
                FieldType::String
                    | FieldType::Email
                    | FieldType::Phone
                    | FieldType::Url
                    | FieldType::Enumeration
            ),
            FilterOp::Gt | FilterOp::Gte | FilterOp::Lt | FilterOp::Lte => !matches!(
                field.kind,
                FieldType::Boolean | FieldType::Enumeration | FieldType::Id
            ),
            _ => true,
        };
        if !operator_fits {
            p.add(
                at("operator"),
                format!(
                    "{} does not apply to {} ({})",
                    op_name(f.operator),
                    field.name,
                    field.kind.as_str()
                ),
            );
            continue;
        }
        if let Some(problem) = f
            .value
            .iter()
            .chain(&f.values)
            .find_map(|v| value_problem(field, v))
        {
            p.add(
                at(if f.operator == FilterOp::In {
                    "values"
                } else {
                    "value"
                }),
                problem,
            );
        }
    }
    p.0
}

/// Replaces every `mappings[i]` in `text` (an index into `subset`) by `label` of
/// that mapping.
fn relabel(
    text: &str,
    subset: &[&FieldMapping],
    label: &dyn Fn(&FieldMapping) -> String,
) -> String {
    const OPEN: &str = "mappings[";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find(OPEN) {
        out.push_str(&rest[..at]);
        let after = &rest[at + OPEN.len()..];
        let digits = after.chars().take_while(char::is_ascii_digit).count();
        let index: Option<usize> = after[..digits].parse().ok();
        match (index, after[digits..].starts_with(']')) {
            (Some(i), true) if i < subset.len() => {
                out.push_str(&label(subset[i]));
                rest = &after[digits + 1..];
            }
            _ => {
                out.push_str(OPEN);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Checks the mappings of each entity the config syncs as a whole set, against the
/// CRM's fields; problems name mappings by `label`. Mappings of entities the config
/// does not sync are a problem too.
pub fn check_config_mappings(
    kind: CrmKind,
    c: &SyncConfig,
    described: &BTreeMap<Entity, Vec<CrmField>>,
    label: &dyn Fn(&FieldMapping) -> String,
) -> Vec<FieldError> {
    let mut p = Problems::default();
    for m in &c.mappings {
        if !c.entities.contains(&m.entity) {
            p.add(
                format!("{}.entity", label(m)),
                format!("the config does not sync {}", m.entity),
            );
        }
    }
    for (&entity, fields) in described {
        let subset: Vec<&FieldMapping> = c.mappings_of(entity).collect();
        if subset.len() > MAX_MAPPINGS {
            p.add(
                "mappings",
                format!(
                    "at most {MAX_MAPPINGS} mappings per entity ({entity}: {})",
                    subset.len()
                ),
            );
            continue;
        }
        for m in &subset {
            // Associations hold app ids the engine translates through the links of the
            // associated entity: that entity is synced too, and no transform applies.
            if let Some(to) = entity.association(&m.app_field) {
                if !c.entities.contains(&to) {
                    p.add(
                        format!("{}.app_field", label(m)),
                        format!(
                            "{} holds {to} ids: the config must sync {to} too",
                            m.app_field
                        ),
                    );
                }
                if m.transform.is_some() || m.push_transform.is_some() {
                    p.add(
                        format!("{}.transform", label(m)),
                        format!("{} is an association: it takes no transform", m.app_field),
                    );
                }
            }
            if m.crm_field == kind.marker() {
                p.add(
                    format!("{}.crm_field", label(m)),
                    format!(
                        "{} is Conduit's own link field; it cannot be mapped",
                        m.crm_field
                    ),
                );
            }
        }
        for problem in check_mappings(entity, &subset, fields) {
            p.add(
                relabel(&problem.field, &subset, label),
                relabel(&problem.message, &subset, label),
            );
        }
    }
    p.0
}

/// Fails unless the config fits in one item.
pub fn check_size(c: &SyncConfig) -> Result<(), ApiError> {
    let size = serde_json::to_vec(c).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > MAX_CONFIG_BYTES {
        return Err(ApiError::bad_request(
            "config_too_large",
            format!(
                "the config would take {size} bytes, over {MAX_CONFIG_BYTES}: use fewer or shorter transforms"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hubspot() -> CrmKind {
        CrmKind::of("hubspot").expect("HubSpot syncs")
    }
    use conduit::domain::{ConnectionId, SyncConfigId, TenantId, UserId, now};
    use conduit::sync::config::ConfigStatus;

    fn crm(name: &str, kind: FieldType, options: &[&str]) -> CrmField {
        CrmField {
            name: name.into(),
            label: name.into(),
            kind,
            provider_type: "x".into(),
            required: false,
            writable: true,
            options: options.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn config(filters: Vec<Filter>, mappings: Vec<FieldMapping>) -> SyncConfig {
        SyncConfig {
            id: SyncConfigId::generate(),
            tenant: TenantId::parse("acme").unwrap(),
            connection_id: ConnectionId::generate(),
            provider: "hubspot".into(),
            name: "n".into(),
            direction: SyncDirection::Pull,
            frequency: Frequency::Daily { at: "7:00".into() },
            entities: vec![Entity::Contacts, Entity::Contacts],
            filters,
            conflict_strategy: Strategy::CrmWins,
            options: SyncOptions::default(),
            status: ConfigStatus::Active,
            mappings,
            schedule_name: None,
            last_job: None,
            created_at: now(),
            created_by: UserId::parse("u").unwrap(),
            updated_at: now(),
            version: 1,
        }
    }

    fn filter(
        entity: Entity,
        field: &str,
        op: FilterOp,
        value: Option<&str>,
        values: &[&str],
    ) -> Filter {
        Filter {
            entity,
            field: field.into(),
            operator: op,
            value: value.map(str::to_owned),
            values: values.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    fn fields_of(problems: &[FieldError]) -> Vec<&str> {
        problems.iter().map(|p| p.field.as_str()).collect()
    }

    #[test]
    fn a_crm_without_deals_refuses_them() {
        let mut c = config(vec![], vec![]);
        c.entities = vec![Entity::Companies, Entity::Deals];
        c.frequency = Frequency::Hourly;
        for provider in ["hubspot", "salesforce", "zoho", "pipedrive", "dynamics365"] {
            let kind = CrmKind::of(provider).expect("a CRM");
            assert!(kind.syncs(Entity::Deals), "{provider}");
            assert!(check_shape(Some(kind), &c).is_empty(), "{provider}");
            let p = check_shape(Some(kind.without_deals()), &c);
            assert_eq!(fields_of(&p), ["entities[1]"], "{provider}");
            assert_eq!(
                p[0].message,
                format!("{provider} does not sync deals (yet)"),
                "{provider}"
            );
        }
    }

    #[test]
    fn shape_problems_are_all_listed() {
        let c = config(
            vec![
                filter(Entity::Companies, "name", FilterOp::Eq, Some("x"), &[]),
                filter(Entity::Contacts, "email", FilterOp::In, Some("x"), &[]),
                filter(
                    Entity::Contacts,
                    "email",
                    FilterOp::HasValue,
                    Some("x"),
                    &[],
                ),
                filter(Entity::Contacts, "email", FilterOp::Eq, None, &["a"]),
            ],
            vec![],
        );
        let p = check_shape(Some(hubspot()), &c);
        let f = fields_of(&p);
        for want in [
            "entities[1]",
            "frequency.at",
            "filters[0].entity",
            "filters[1].values",
            "filters[1].value",
            "filters[2].value",
            "filters[3].value",
            "filters[3].values",
        ] {
            assert!(f.contains(&want), "{want} missing from {f:?}");
        }
    }

    #[test]
    fn filters_are_checked_against_the_crm() {
        let mut c = config(
            vec![
                filter(Entity::Contacts, "nope", FilterOp::Eq, Some("x"), &[]),
                filter(Entity::Contacts, "age", FilterOp::Gt, Some("old"), &[]),
                filter(
                    Entity::Contacts,
                    "stage",
                    FilterOp::In,
                    None,
                    &["lead", "bogus"],
                ),
                filter(Entity::Contacts, "vip", FilterOp::Contains, Some("t"), &[]),
                filter(
                    Entity::Contacts,
                    "conduit_id",
                    FilterOp::HasValue,
                    None,
                    &[],
                ),
                filter(
                    Entity::Contacts,
                    "born",
                    FilterOp::Lt,
                    Some("2001-02-03"),
                    &[],
                ),
            ],
            vec![],
        );
        c.entities = vec![Entity::Contacts];
        let described = BTreeMap::from([(
            Entity::Contacts,
            vec![
                crm("age", FieldType::Number, &[]),
                crm("stage", FieldType::Enumeration, &["lead", "customer"]),
                crm("vip", FieldType::Boolean, &[]),
                crm("conduit_id", FieldType::String, &[]),
                crm("born", FieldType::Date, &[]),
            ],
        )]);
        let p = check_filters(hubspot(), &c, &described);
        assert_eq!(
            fields_of(&p),
            vec![
                "filters[0].field",
                "filters[1].value",
                "filters[2].values",
                "filters[3].operator",
                "filters[4].field"
            ],
            "{p:?}"
        );
    }

    #[test]
    fn mapping_problems_name_the_mapping() {
        let m = |crm: &str, app: &str| FieldMapping {
            id: MappingId::generate(),
            entity: Entity::Contacts,
            crm_field: crm.into(),
            app_field: app.into(),
            direction: Direction::Bidirectional,
            transform: None,
            push_transform: None,
        };
        let mut c = config(
            vec![],
            vec![
                m("email", "email"),
                m("email", "email"),
                m("conduit_id", "notes"),
            ],
        );
        c.entities = vec![Entity::Contacts];
        let described = BTreeMap::from([(
            Entity::Contacts,
            vec![
                crm("email", FieldType::Email, &[]),
                crm("conduit_id", FieldType::String, &[]),
            ],
        )]);
        let ids: Vec<MappingId> = c.mappings.iter().map(|m| m.id.clone()).collect();
        let label = |m: &FieldMapping| {
            format!(
                "mappings[{}]",
                10 + ids.iter().position(|i| *i == m.id).unwrap_or(99)
            )
        };
        let p = check_config_mappings(hubspot(), &c, &described, &label);
        let text = format!("{p:?}");
        assert!(text.contains("mappings[12].crm_field"), "{text}");
        assert!(text.contains("mappings[10] already writes"), "{text}");
        assert!(text.contains("mappings[11].app_field"), "{text}");
    }

    #[test]
    fn relabel_leaves_other_text_alone() {
        let m = FieldMapping {
            id: MappingId::generate(),
            entity: Entity::Contacts,
            crm_field: "a".into(),
            app_field: "b".into(),
            direction: Direction::Pull,
            transform: None,
            push_transform: None,
        };
        let label = |_: &FieldMapping| "X".to_owned();
        assert_eq!(
            relabel("mappings[0].a mappings[7] mappings[", &[&m], &label),
            "X.a mappings[7] mappings["
        );
    }

    #[test]
    fn names_default_and_are_checked() {
        assert_eq!(
            name(None, "HubSpot", &[Entity::Contacts, Entity::Companies]).unwrap(),
            "HubSpot contacts and companies"
        );
        assert!(name(Some(""), "HubSpot", &[]).is_err());
        assert_eq!(name(Some(" Mine "), "HubSpot", &[]).unwrap(), "Mine");
    }
}

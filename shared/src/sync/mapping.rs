//! Applying a config's field mappings: CRM values → app values (pull) and app values
//! → CRM values (push), through each mapping's transform, in the app's field space
//! where the conflict check works.

use std::collections::BTreeMap;

use super::config::FieldMapping;
use super::conflict::{Direction, Values};
use super::transform::{Overflow, Transform};
use crate::domain::MappingId;

/// A mapping's transform stopped for one record (its output or work passed the cap):
/// the record fails, the run goes on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{overflow} in mapping {mapping} (app field {app_field})")]
pub struct TransformFailed {
    /// The mapping.
    pub mapping: MappingId,
    /// Its app field.
    pub app_field: String,
    /// What passed the cap.
    pub overflow: Overflow,
}

/// A mapping with its transforms parsed once.
#[derive(Debug, Clone)]
pub struct Compiled {
    /// The mapping.
    pub mapping: FieldMapping,
    pull: Option<Transform>,
    push: Option<Transform>,
}

/// The mappings of one entity, ready to apply.
#[derive(Debug, Clone, Default)]
pub struct Mapper {
    mappings: Vec<Compiled>,
}

impl Mapper {
    /// Compiles `mappings` (already validated when stored; a transform that no longer
    /// parses makes its mapping copy values unchanged).
    pub fn new<'m>(mappings: impl IntoIterator<Item = &'m FieldMapping>) -> Self {
        Self {
            mappings: mappings
                .into_iter()
                .filter(|m| m.direction != Direction::None)
                .map(|m| Compiled {
                    pull: m
                        .transform
                        .as_deref()
                        .and_then(|t| Transform::parse(t).ok()),
                    push: m
                        .push_transform
                        .as_deref()
                        .and_then(|t| Transform::parse(t).ok()),
                    mapping: m.clone(),
                })
                .collect(),
        }
    }

    /// Whether there is nothing to map.
    pub fn is_empty(&self) -> bool {
        self.mappings.is_empty()
    }

    /// The CRM fields to read.
    pub fn crm_fields(&self) -> Vec<String> {
        let mut f: Vec<String> = self
            .mappings
            .iter()
            .map(|m| m.mapping.crm_field.clone())
            .collect();
        for m in &self.mappings {
            if let Some(t) = &m.pull {
                f.extend(t.fields().into_iter().map(str::to_owned));
            }
        }
        f.sort_unstable();
        f.dedup();
        f
    }

    /// (app field, CRM field) of every mapping.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.mappings
            .iter()
            .map(|m| (m.mapping.app_field.as_str(), m.mapping.crm_field.as_str()))
    }

    /// (app field, direction) of every mapping, for the conflict check.
    pub fn directions(&self) -> Vec<(String, Direction)> {
        self.mappings
            .iter()
            .map(|m| (m.mapping.app_field.clone(), m.mapping.direction))
            .collect()
    }

    /// A CRM record's values in app fields (every mapped field, pulled or not, so the
    /// conflict check sees the CRM's side whole).
    pub fn to_app(&self, crm: &BTreeMap<String, String>) -> Result<Values, TransformFailed> {
        self.mappings
            .iter()
            .map(|m| {
                let raw = crm.get(&m.mapping.crm_field).map(String::as_str);
                let value = match &m.pull {
                    Some(t) => t.apply(raw, crm).map_err(|o| m.failed(o))?,
                    None => raw.map(str::to_owned),
                };
                Ok((m.mapping.app_field.clone(), value.filter(|v| !v.is_empty())))
            })
            .collect()
    }

    /// An app record's values in app fields (only mapped ones).
    pub fn app_values(&self, app: &BTreeMap<String, String>) -> Values {
        self.mappings
            .iter()
            .map(|m| {
                (
                    m.mapping.app_field.clone(),
                    app.get(&m.mapping.app_field).cloned(),
                )
            })
            .collect()
    }

    /// CRM values for the app fields in `changed` that may be pushed, through the
    /// push transforms (which see the whole app record).
    pub fn to_crm(
        &self,
        changed: &Values,
        app: &BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, Option<String>>, TransformFailed> {
        let mut out = BTreeMap::new();
        for m in &self.mappings {
            if !matches!(
                m.mapping.direction,
                Direction::Push | Direction::Bidirectional
            ) {
                continue;
            }
            let Some(value) = changed.get(&m.mapping.app_field) else {
                continue;
            };
            let value = match &m.push {
                Some(t) => t.apply(value.as_deref(), app).map_err(|o| m.failed(o))?,
                None => value.clone(),
            };
            out.insert(m.mapping.crm_field.clone(), value.filter(|v| !v.is_empty()));
        }
        Ok(out)
    }
}

impl Compiled {
    fn failed(&self, overflow: Overflow) -> TransformFailed {
        TransformFailed {
            mapping: self.mapping.id.clone(),
            app_field: self.mapping.app_field.clone(),
            overflow,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::schema::Entity;

    fn m(crm: &str, app: &str, dir: Direction, t: Option<&str>, pt: Option<&str>) -> FieldMapping {
        FieldMapping {
            id: MappingId::generate(),
            entity: Entity::Contacts,
            crm_field: crm.into(),
            app_field: app.into(),
            direction: dir,
            transform: t.map(str::to_owned),
            push_transform: pt.map(str::to_owned),
        }
    }

    #[test]
    fn maps_both_ways_through_transforms() {
        let mappings = [
            m(
                "email",
                "email",
                Direction::Bidirectional,
                Some("trim | lower"),
                None,
            ),
            m("firstname", "first_name", Direction::Pull, None, None),
            m(
                "jobtitle",
                "job_title",
                Direction::Push,
                None,
                Some("upper"),
            ),
            m("phone", "phone", Direction::None, None, None),
        ];
        let mapper = Mapper::new(&mappings);
        assert_eq!(mapper.crm_fields(), vec!["email", "firstname", "jobtitle"]);
        let crm = BTreeMap::from([
            ("email".to_owned(), " Ann@X.IO ".to_owned()),
            ("firstname".to_owned(), "Ann".to_owned()),
        ]);
        let app = mapper.to_app(&crm).expect("within the cap");
        assert_eq!(app["email"].as_deref(), Some("ann@x.io"));
        assert_eq!(app["first_name"].as_deref(), Some("Ann"));
        assert_eq!(app["job_title"], None);
        let record = BTreeMap::from([("job_title".to_owned(), "cto".to_owned())]);
        let changed = mapper.app_values(&record);
        let out = mapper.to_crm(&changed, &record).expect("within the cap");
        assert_eq!(out.get("jobtitle"), Some(&Some("CTO".to_owned())));
        assert!(
            !out.contains_key("firstname"),
            "pull-only fields are never pushed"
        );
    }
}

//! Auto-map: proposes mappings for the app fields of an entity that have none, from
//! the CRM's fields. Strong matches win over weak ones: every app field is first
//! matched by normalised name, then by normalised label, then by its aliases. A CRM
//! field is used once, type-incompatible pairs are skipped, and read-only CRM fields
//! are mapped pull-only.

use conduit::domain::MappingId;
use conduit::sync::config::FieldMapping;
use conduit::sync::conflict::Direction;
use conduit::sync::crm::CrmKind;
use conduit::sync::schema::{AppField, CrmField, Entity, normalise};

use crate::crm::is_system;

/// What auto-map proposes.
#[derive(Debug, Default)]
pub struct Proposal {
    /// New mappings, in app-field order.
    pub added: Vec<FieldMapping>,
    /// App fields still without a mapping.
    pub unmatched: Vec<&'static str>,
}

type Matcher = fn(&AppField, &CrmField) -> bool;

fn by_name(app: &AppField, crm: &CrmField) -> bool {
    normalise(&crm.name) == normalise(app.name)
}

fn by_label(app: &AppField, crm: &CrmField) -> bool {
    let label = normalise(&crm.label);
    let name = normalise(&crm.name);
    label == normalise(app.label) || label == normalise(app.name) || name == normalise(app.label)
}

fn by_alias(app: &AppField, crm: &CrmField) -> bool {
    let (name, label) = (normalise(&crm.name), normalise(&crm.label));
    app.aliases
        .iter()
        .map(|a| normalise(a))
        .any(|a| a == name || a == label)
}

/// Proposes mappings for `entity`'s app fields that no mapping in `existing` writes
/// or reads, from `crm_fields` no mapping in `existing` uses.
pub fn propose(
    kind: CrmKind,
    entity: Entity,
    existing: &[&FieldMapping],
    crm_fields: &[CrmField],
) -> Proposal {
    let mut free_crm: Vec<&CrmField> = crm_fields
        .iter()
        .filter(|f| !is_system(kind, entity, f))
        .filter(|f| !existing.iter().any(|m| m.crm_field == f.name))
        .collect();
    let mut open: Vec<&'static AppField> = entity
        .fields()
        .iter()
        .filter(|a| !existing.iter().any(|m| m.app_field == a.name))
        .collect();
    let mut matched: Vec<(&'static AppField, &CrmField)> = Vec::new();
    let passes: [Matcher; 3] = [by_name, by_label, by_alias];
    for pass in passes {
        open.retain(|app| {
            let hit = free_crm
                .iter()
                .position(|crm| pass(app, crm) && app.kind.accepts(crm.kind));
            match hit {
                Some(i) => {
                    matched.push((app, free_crm.remove(i)));
                    false
                }
                None => true,
            }
        });
    }
    // Report in the app's field order.
    let order = |name: &str| entity.fields().iter().position(|f| f.name == name);
    matched.sort_by_key(|(app, _)| order(app.name));
    Proposal {
        added: matched
            .into_iter()
            .map(|(app, crm)| FieldMapping {
                id: MappingId::generate(),
                entity,
                crm_field: crm.name.clone(),
                app_field: app.name.to_owned(),
                direction: if crm.writable {
                    Direction::Bidirectional
                } else {
                    Direction::Pull
                },
                transform: None,
                push_transform: None,
            })
            .collect(),
        unmatched: open.iter().map(|a| a.name).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hubspot() -> CrmKind {
        CrmKind::of("hubspot").expect("HubSpot syncs")
    }

    fn salesforce() -> CrmKind {
        CrmKind::of("salesforce").expect("Salesforce syncs")
    }
    use conduit::sync::config::check_mappings;
    use conduit::sync::schema::FieldType;

    fn f(name: &str, label: &str, kind: FieldType, writable: bool) -> CrmField {
        CrmField {
            name: name.into(),
            label: label.into(),
            kind,
            provider_type: "string".into(),
            required: false,
            writable,
            options: vec![],
        }
    }

    fn hubspot_contacts() -> Vec<CrmField> {
        vec![
            f("email", "Email", FieldType::Email, true),
            f("firstname", "First Name", FieldType::String, true),
            f("lastname", "Last Name", FieldType::String, true),
            f("phone", "Phone Number", FieldType::Phone, true),
            f("mobilephone", "Mobile Phone Number", FieldType::Phone, true),
            f("jobtitle", "Job Title", FieldType::String, true),
            f("company", "Company Name", FieldType::String, true),
            f("website", "Website URL", FieldType::Url, true),
            f("city", "City", FieldType::String, true),
            f("country", "Country/Region", FieldType::String, true),
            f(
                "lifecyclestage",
                "Lifecycle Stage",
                FieldType::Enumeration,
                true,
            ),
            f("date_of_birth", "Date of birth", FieldType::Date, true),
            f(
                "lastmodifieddate",
                "Last Modified Date",
                FieldType::DateTime,
                false,
            ),
            f("createdate", "Create Date", FieldType::DateTime, false),
            f("hs_object_id", "Record ID", FieldType::Id, false),
            f("conduit_id", "Conduit ID", FieldType::String, true),
        ]
    }

    fn pairs(p: &Proposal) -> Vec<(String, String)> {
        p.added
            .iter()
            .map(|m| (m.app_field.clone(), m.crm_field.clone()))
            .collect()
    }

    #[test]
    fn maps_hubspot_contacts_by_name_label_and_alias() {
        let crm = hubspot_contacts();
        let p = propose(hubspot(), Entity::Contacts, &[], &crm);
        let got = pairs(&p);
        for (app, crm) in [
            ("email", "email"),
            ("first_name", "firstname"),
            ("last_name", "lastname"),
            ("phone", "phone"),
            ("mobile_phone", "mobilephone"),
            ("job_title", "jobtitle"),
            ("company_name", "company"),
            ("city", "city"),
            ("country", "country"),
            ("lifecycle_stage", "lifecyclestage"),
            ("website", "website"),
            ("birth_date", "date_of_birth"),
        ] {
            assert!(
                got.contains(&(app.into(), crm.into())),
                "{app} ← {crm}: {got:?}"
            );
        }
        assert!(p.unmatched.contains(&"department"));
        assert!(p.unmatched.contains(&"notes"));
        assert!(
            !got.iter()
                .any(|(_, c)| c == "conduit_id" || c == "hs_object_id"),
            "system fields are never proposed"
        );
        let set: Vec<&FieldMapping> = p.added.iter().collect();
        assert_eq!(check_mappings(Entity::Contacts, &set, &crm), vec![]);
    }

    #[test]
    fn existing_mappings_and_used_fields_are_left_alone() {
        let crm = hubspot_contacts();
        let mine = FieldMapping {
            id: MappingId::generate(),
            entity: Entity::Contacts,
            crm_field: "company".into(),
            app_field: "notes".into(),
            direction: Direction::Pull,
            transform: None,
            push_transform: None,
        };
        let p = propose(hubspot(), Entity::Contacts, &[&mine], &crm);
        let got = pairs(&p);
        assert!(
            !got.iter().any(|(a, c)| a == "notes" || c == "company"),
            "{got:?}"
        );
        assert!(p.unmatched.contains(&"company_name"));
    }

    #[test]
    fn types_and_read_only_fields_are_respected() {
        let crm = vec![
            f("employees", "Employees", FieldType::Boolean, true),
            f("NumberOfEmployees", "Employees", FieldType::Number, false),
            f("Name", "Account Name", FieldType::String, true),
        ];
        let p = propose(salesforce(), Entity::Companies, &[], &crm);
        let m = p
            .added
            .iter()
            .find(|m| m.app_field == "employees")
            .expect("employees mapped");
        assert_eq!(m.crm_field, "NumberOfEmployees", "the boolean is skipped");
        assert_eq!(m.direction, Direction::Pull, "read-only: pull only");
        assert!(
            p.added
                .iter()
                .any(|m| m.app_field == "name" && m.crm_field == "Name")
        );
    }

    #[test]
    fn one_crm_field_feeds_one_app_field() {
        // "company" matches company_name by label and nothing else may take it.
        let crm = vec![f("company", "Company Name", FieldType::String, true)];
        let p = propose(hubspot(), Entity::Contacts, &[], &crm);
        assert_eq!(p.added.len(), 1);
    }
}

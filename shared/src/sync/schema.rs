//! The app's side of a sync: the entities Conduit keeps (contacts, companies, deals),
//! their fields and types, and how a CRM field's type relates to an app field's.
//!
//! Deals carry associations: `company_id` and `contact_id` hold the app ids of the
//! deal's company and primary contact. The engine translates them through the config's
//! links of those entities (app id ↔ CRM id), so a CRM never sees an app id and the app
//! never a CRM id.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A kind of record Conduit keeps and syncs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Entity {
    /// People.
    Contacts,
    /// Organisations (HubSpot companies, Salesforce accounts).
    Companies,
    /// Sales opportunities (HubSpot deals, Salesforce opportunities), with their
    /// company and primary contact.
    Deals,
}

impl Entity {
    /// Every entity.
    pub const ALL: [Entity; 3] = [Entity::Contacts, Entity::Companies, Entity::Deals];

    /// The path and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Entity::Contacts => "contacts",
            Entity::Companies => "companies",
            Entity::Deals => "deals",
        }
    }

    /// Parses a path or body value.
    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "contacts" => Some(Entity::Contacts),
            "companies" => Some(Entity::Companies),
            "deals" => Some(Entity::Deals),
            _ => None,
        }
    }

    /// The app fields of this entity.
    pub fn fields(self) -> &'static [AppField] {
        match self {
            Entity::Contacts => CONTACT_FIELDS,
            Entity::Companies => COMPANY_FIELDS,
            Entity::Deals => DEAL_FIELDS,
        }
    }

    /// An app field by name.
    pub fn field(self, name: &str) -> Option<&'static AppField> {
        self.fields().iter().find(|f| f.name == name)
    }

    /// The field that identifies a record across systems (contacts: email, companies:
    /// domain): pulls link a CRM record to an app record with the same key. Deals have
    /// none: they are linked only through links and Conduit's marker.
    pub fn key_field(self) -> Option<&'static str> {
        match self {
            Entity::Contacts => Some("email"),
            Entity::Companies => Some("domain"),
            Entity::Deals => None,
        }
    }

    /// The entity an association field of this entity holds app ids of (deals'
    /// `company_id` and `contact_id`).
    pub fn association(self, field: &str) -> Option<Entity> {
        match (self, field) {
            (Entity::Deals, "company_id") => Some(Entity::Companies),
            (Entity::Deals, "contact_id") => Some(Entity::Contacts),
            _ => None,
        }
    }

    /// The entities this one's associations point at (synced before it in a run).
    pub fn associated(self) -> &'static [Entity] {
        match self {
            Entity::Deals => &[Entity::Companies, Entity::Contacts],
            _ => &[],
        }
    }

    /// The field(s) a record's display name is made of.
    pub fn name_fields(self) -> &'static [&'static str] {
        match self {
            Entity::Contacts => &["first_name", "last_name"],
            Entity::Companies => &["name"],
            Entity::Deals => &["name"],
        }
    }
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The type of a field, on either side, reduced to what matters for mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    /// Free text (also single-line text, text areas).
    String,
    /// An email address.
    Email,
    /// A phone number.
    Phone,
    /// A URL or a domain.
    Url,
    /// A number (integer or decimal).
    Number,
    /// true / false.
    Boolean,
    /// A calendar date.
    Date,
    /// A point in time.
    DateTime,
    /// One of a set of values (picklist, enumeration).
    Enumeration,
    /// An identifier or reference to another record.
    Id,
}

impl FieldType {
    /// Whether values of a CRM field of type `crm` can flow into an app field of this
    /// type (and back) without a transform.
    pub fn accepts(self, crm: FieldType) -> bool {
        use FieldType::*;
        match self {
            String => true,
            Email | Phone | Url => matches!(crm, String | Email | Phone | Url | Enumeration),
            Enumeration => matches!(crm, String | Enumeration),
            Number => matches!(crm, Number | String),
            Boolean => matches!(crm, Boolean | String),
            Date | DateTime => matches!(crm, Date | DateTime | String),
            Id => matches!(crm, Id | String),
        }
    }

    /// The name used in API answers.
    pub fn as_str(self) -> &'static str {
        use FieldType::*;
        match self {
            String => "string",
            Email => "email",
            Phone => "phone",
            Url => "url",
            Number => "number",
            Boolean => "boolean",
            Date => "date",
            DateTime => "datetime",
            Enumeration => "enumeration",
            Id => "id",
        }
    }
}

/// A field of an app record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AppField {
    /// Its name in records and mappings.
    pub name: &'static str,
    /// A human label (auto-map compares labels too).
    pub label: &'static str,
    /// Its type.
    #[serde(rename = "type")]
    pub kind: FieldType,
    /// Other names a CRM commonly uses for it (auto-map).
    #[serde(skip)]
    pub aliases: &'static [&'static str],
}

const fn field(
    name: &'static str,
    label: &'static str,
    kind: FieldType,
    aliases: &'static [&'static str],
) -> AppField {
    AppField {
        name,
        label,
        kind,
        aliases,
    }
}

/// Contact fields.
pub const CONTACT_FIELDS: &[AppField] = &[
    field("email", "Email", FieldType::Email, &["emailaddress"]),
    field(
        "first_name",
        "First name",
        FieldType::String,
        &["firstname", "givenname"],
    ),
    field(
        "last_name",
        "Last name",
        FieldType::String,
        &["lastname", "surname", "familyname"],
    ),
    field(
        "phone",
        "Phone",
        FieldType::Phone,
        &["phonenumber", "workphone"],
    ),
    field(
        "mobile_phone",
        "Mobile phone",
        FieldType::Phone,
        &["mobilephone", "mobile", "mobilephonenumber"],
    ),
    field(
        "job_title",
        "Job title",
        FieldType::String,
        &["jobtitle", "title"],
    ),
    field("department", "Department", FieldType::String, &[]),
    field(
        "company_name",
        "Company name",
        FieldType::String,
        &["company", "companyname", "accountname"],
    ),
    field("city", "City", FieldType::String, &["mailingcity"]),
    field(
        "country",
        "Country",
        FieldType::String,
        &["mailingcountry", "countryregion"],
    ),
    field(
        "lifecycle_stage",
        "Lifecycle stage",
        FieldType::Enumeration,
        &["lifecyclestage", "leadsource"],
    ),
    field("website", "Website", FieldType::Url, &["websiteurl"]),
    field(
        "birth_date",
        "Birth date",
        FieldType::Date,
        &["birthdate", "dateofbirth"],
    ),
    field("notes", "Notes", FieldType::String, &["description"]),
];

/// Company fields.
pub const COMPANY_FIELDS: &[AppField] = &[
    field(
        "name",
        "Name",
        FieldType::String,
        &["companyname", "accountname"],
    ),
    field(
        "domain",
        "Domain",
        FieldType::Url,
        &["website", "companydomainname", "websiteurl"],
    ),
    field("phone", "Phone", FieldType::Phone, &["phonenumber"]),
    field("industry", "Industry", FieldType::Enumeration, &[]),
    field("city", "City", FieldType::String, &["billingcity"]),
    field(
        "country",
        "Country",
        FieldType::String,
        &["billingcountry", "countryregion"],
    ),
    field(
        "employees",
        "Number of employees",
        FieldType::Number,
        &["numberofemployees"],
    ),
    field(
        "annual_revenue",
        "Annual revenue",
        FieldType::Number,
        &["annualrevenue"],
    ),
    field(
        "description",
        "Description",
        FieldType::String,
        &["about", "aboutus"],
    ),
];

/// Deal fields (`company_id` / `contact_id`: app ids of associated records).
pub const DEAL_FIELDS: &[AppField] = &[
    field(
        "name",
        "Deal name",
        FieldType::String,
        &["dealname", "opportunityname", "title"],
    ),
    field(
        "amount",
        "Amount",
        FieldType::Number,
        &["value", "estimatedvalue"],
    ),
    field(
        "currency",
        "Currency",
        FieldType::String,
        &[
            "dealcurrencycode",
            "currencyisocode",
            "transactioncurrencyid",
        ],
    ),
    field(
        "close_date",
        "Close date",
        FieldType::Date,
        &["closedate", "expectedclosedate", "estimatedclosedate"],
    ),
    field(
        "stage",
        "Stage",
        FieldType::Enumeration,
        &["dealstage", "stagename", "stageid", "salesstage"],
    ),
    field(
        "pipeline",
        "Pipeline",
        FieldType::Enumeration,
        &["pipelineid"],
    ),
    field(
        "company_id",
        "Company",
        FieldType::Id,
        &[
            "accountid",
            "orgid",
            "accountname",
            "parentaccountid",
            // Dataverse reads a lookup as `_parentaccountid_value`.
            "_parentaccountid_value",
            "associationscompanies",
        ],
    ),
    field(
        "contact_id",
        "Primary contact",
        FieldType::Id,
        &[
            "contactid",
            "personid",
            "contactname",
            "parentcontactid",
            "_parentcontactid_value",
            "associationscontacts",
        ],
    ),
];

/// Lower-case ASCII letters and digits only: "First Name", "first_name" and
/// "FirstName" all become "firstname" (auto-map compares these).
pub fn normalise(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

/// A field of a CRM object, as the provider describes it (properties / describe).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrmField {
    /// API name.
    pub name: String,
    /// Human label.
    pub label: String,
    /// Type.
    #[serde(rename = "type")]
    pub kind: FieldType,
    /// The provider's own type name.
    pub provider_type: String,
    /// Required on create.
    pub required: bool,
    /// Can be written.
    pub writable: bool,
    /// Allowed values (enumerations), when the provider lists them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entities_and_fields_are_named_once() {
        for e in Entity::ALL {
            assert_eq!(Entity::parse(e.as_str()), Some(e));
            if let Some(k) = e.key_field() {
                assert!(e.field(k).is_some());
            }
            for n in e.name_fields() {
                assert!(e.field(n).is_some());
            }
            let mut names: Vec<_> = e.fields().iter().map(|f| f.name).collect();
            names.sort_unstable();
            names.dedup();
            assert_eq!(names.len(), e.fields().len());
        }
        assert_eq!(Entity::parse("opportunities"), None);
        assert_eq!(
            Entity::Deals.association("company_id"),
            Some(Entity::Companies)
        );
        assert_eq!(Entity::Deals.association("name"), None);
        for e in Entity::ALL {
            for f in e.fields() {
                assert_eq!(
                    e.association(f.name).is_some(),
                    f.kind == FieldType::Id,
                    "{e}.{}",
                    f.name
                );
            }
        }
    }

    #[test]
    fn types_and_names() {
        assert!(FieldType::String.accepts(FieldType::Number));
        assert!(!FieldType::Number.accepts(FieldType::Boolean));
        assert!(!FieldType::Date.accepts(FieldType::Number));
        assert!(FieldType::Email.accepts(FieldType::String));
        assert_eq!(normalise("First Name"), "firstname");
        assert_eq!(normalise("first_name"), normalise("FirstName"));
    }
}

//! The objects and fields the Salesforce stand-in keeps, their describe metadata, record
//! ids (15 and 18 characters), timestamps in Salesforce's format, and how written values
//! are checked and converted.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::clock::{self, civil_from_days};

/// A Salesforce object (sObject type) the stand-in keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum SfObject {
    /// `Contact`, ids starting `003`.
    #[serde(alias = "contact", alias = "contacts", alias = "Contacts")]
    Contact,
    /// `Account`, ids starting `001`.
    #[serde(alias = "account", alias = "accounts", alias = "Accounts")]
    Account,
    /// `Opportunity`, ids starting `006`: `Name`, `StageName` (the standard sales
    /// process's picklist) and `CloseDate` required; `AccountId` and `ContactId` (the
    /// primary contact: set on create only, as Salesforce's derived field) reference
    /// the org's accounts and contacts.
    #[serde(
        alias = "opportunity",
        alias = "opportunities",
        alias = "Opportunities"
    )]
    Opportunity,
    /// `Knowledge__kav`, Lightning Knowledge article versions, ids starting `ka0`: only
    /// queried and read (see `knowledge.rs`); not in [`SfObject::ALL`], so the generic
    /// sObject write routes do not take it.
    #[serde(rename = "Knowledge__kav", alias = "Knowledge", alias = "knowledge")]
    Knowledge,
}

impl SfObject {
    /// The sObjects the generic routes serve.
    pub const ALL: [SfObject; 3] = [SfObject::Contact, SfObject::Account, SfObject::Opportunity];

    /// The object from its API name, case-insensitively (`Contact`, `account`).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|object| object.name().eq_ignore_ascii_case(name.trim()))
    }

    /// The API name, `Contact` or `Account`.
    pub fn name(self) -> &'static str {
        match self {
            SfObject::Contact => "Contact",
            SfObject::Account => "Account",
            SfObject::Opportunity => "Opportunity",
            SfObject::Knowledge => "Knowledge__kav",
        }
    }

    /// The three-character id prefix, `003` or `001`.
    pub fn key_prefix(self) -> &'static str {
        match self {
            SfObject::Contact => "003",
            SfObject::Account => "001",
            SfObject::Opportunity => "006",
            SfObject::Knowledge => "ka0",
        }
    }

    /// The object whose ids start with `id`'s prefix.
    pub(crate) fn of_id(id: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|object| id.starts_with(object.key_prefix()))
    }

    fn label_plural(self) -> &'static str {
        match self {
            SfObject::Contact => "Contacts",
            SfObject::Account => "Accounts",
            SfObject::Opportunity => "Opportunities",
            SfObject::Knowledge => "Knowledge",
        }
    }

    pub(crate) fn index(self) -> usize {
        match self {
            SfObject::Contact => 0,
            SfObject::Account => 1,
            SfObject::Knowledge => 2,
            SfObject::Opportunity => 3,
        }
    }

    /// The object's fields, in describe order.
    pub(crate) fn fields(self) -> &'static [Field] {
        match self {
            SfObject::Contact => &CONTACT_FIELDS,
            SfObject::Account => &ACCOUNT_FIELDS,
            SfObject::Opportunity => &OPPORTUNITY_FIELDS,
            SfObject::Knowledge => &super::knowledge::FIELDS,
        }
    }

    /// A field by API name, case-insensitively: its index and definition.
    pub(crate) fn field(self, name: &str) -> Option<(usize, &'static Field)> {
        self.fields()
            .iter()
            .enumerate()
            .find(|(_, field)| field.name.eq_ignore_ascii_case(name))
    }

    /// The required field that must be set on create (`LastName`, `Name`).
    pub(crate) fn required(self) -> impl Iterator<Item = (usize, &'static Field)> {
        self.fields()
            .iter()
            .enumerate()
            .filter(|(_, field)| field.is_required())
    }

    /// The external-id field, `Conduit_Id__c`.
    pub(crate) fn external_id_field(self) -> Option<usize> {
        self.fields().iter().position(|field| field.external_id)
    }
}

/// A field's data type, as describe reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FieldType {
    Id,
    String,
    Email,
    Phone,
    Url,
    Date,
    DateTime,
    Int,
    Double,
    Boolean,
    Picklist,
    Reference,
    Textarea,
}

impl FieldType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FieldType::Id => "id",
            FieldType::String => "string",
            FieldType::Email => "email",
            FieldType::Phone => "phone",
            FieldType::Url => "url",
            FieldType::Date => "date",
            FieldType::DateTime => "datetime",
            FieldType::Int => "int",
            FieldType::Double => "double",
            FieldType::Boolean => "boolean",
            FieldType::Picklist => "picklist",
            FieldType::Reference => "reference",
            FieldType::Textarea => "textarea",
        }
    }

    fn soap_type(self) -> &'static str {
        match self {
            FieldType::Id | FieldType::Reference => "tns:ID",
            FieldType::Date => "xsd:date",
            FieldType::DateTime => "xsd:dateTime",
            FieldType::Int => "xsd:int",
            FieldType::Double => "xsd:double",
            FieldType::Boolean => "xsd:boolean",
            _ => "xsd:string",
        }
    }

    /// Whether values are text (compared case-insensitively, `LIKE` allowed).
    pub(crate) fn is_text(self) -> bool {
        matches!(
            self,
            FieldType::String
                | FieldType::Email
                | FieldType::Phone
                | FieldType::Url
                | FieldType::Picklist
                | FieldType::Textarea
        )
    }

    /// The type name SOQL uses in "must be of type …" messages.
    pub(crate) fn soql_name(self) -> &'static str {
        match self {
            FieldType::Id | FieldType::Reference => "id",
            FieldType::Date => "date",
            FieldType::DateTime => "dateTime",
            FieldType::Int | FieldType::Double => "double",
            FieldType::Boolean => "boolean",
            _ => "string",
        }
    }
}

/// Where a field's value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// Stored with the record, written by the API.
    Stored,
    /// The record id.
    Id,
    /// `CreatedDate`.
    Created,
    /// `LastModifiedDate`, `SystemModstamp`.
    Modified,
    /// `IsDeleted`.
    Deleted,
}

/// One field's metadata.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Field {
    pub(crate) name: &'static str,
    pub(crate) label: &'static str,
    pub(crate) kind: FieldType,
    pub(crate) length: u32,
    pub(crate) nillable: bool,
    pub(crate) createable: bool,
    pub(crate) updateable: bool,
    pub(crate) external_id: bool,
    pub(crate) custom: bool,
    pub(crate) picklist: &'static [&'static str],
    /// A value outside `picklist` is refused (`StageName`, whose values are the sales
    /// process's stages).
    pub(crate) restricted: bool,
    pub(crate) reference_to: Option<SfObject>,
    pub(crate) source: Source,
    /// SOQL may filter on it (`WHERE`).
    pub(crate) filter: bool,
    /// SOQL may order by it.
    pub(crate) sort: bool,
}

impl Field {
    pub(crate) const fn text(
        name: &'static str,
        label: &'static str,
        kind: FieldType,
        length: u32,
    ) -> Self {
        // Long text areas can be neither filtered nor sorted.
        let plain = !matches!(kind, FieldType::Textarea);
        Self {
            name,
            label,
            kind,
            length,
            nillable: true,
            createable: true,
            updateable: true,
            external_id: false,
            custom: false,
            picklist: &[],
            restricted: false,
            reference_to: None,
            source: Source::Stored,
            filter: plain,
            sort: plain,
        }
    }

    const fn required(self) -> Self {
        Self {
            nillable: false,
            ..self
        }
    }

    pub(crate) const fn system(self, source: Source) -> Self {
        Self {
            nillable: matches!(source, Source::Stored),
            createable: false,
            updateable: false,
            source,
            ..self
        }
    }

    pub(crate) const fn picklist(self, values: &'static [&'static str]) -> Self {
        Self {
            picklist: values,
            ..self
        }
    }

    pub(crate) const fn reference(self, to: SfObject) -> Self {
        Self {
            reference_to: Some(to),
            ..self
        }
    }

    const fn external(self) -> Self {
        Self {
            external_id: true,
            custom: true,
            ..self
        }
    }

    /// Must be given on create and can never be null.
    pub(crate) fn is_required(&self) -> bool {
        !self.nillable && self.createable
    }

    /// Whether SOQL may filter on it (long text areas cannot be).
    pub(crate) fn filterable(&self) -> bool {
        self.filter
    }

    /// Whether SOQL may order by it (long text areas cannot be).
    pub(crate) fn sortable(&self) -> bool {
        self.sort
    }

    /// `describe`'s entry for this field.
    pub(crate) fn describe(&self) -> Value {
        let (precision, scale, digits) = match self.kind {
            FieldType::Double => (18, 0, 0),
            FieldType::Int => (0, 0, 8),
            _ => (0, 0, 0),
        };
        let picklist: Vec<Value> = self
            .picklist
            .iter()
            .map(|value| {
                json!({"active": true, "defaultValue": false, "label": value, "validFor": null, "value": value})
            })
            .collect();
        json!({
            "name": self.name,
            "label": self.label,
            "type": self.kind.as_str(),
            "soapType": self.kind.soap_type(),
            "length": self.length,
            "byteLength": self.length * 3,
            "precision": precision,
            "scale": scale,
            "digits": digits,
            "nillable": self.nillable,
            "createable": self.createable,
            "updateable": self.updateable,
            "externalId": self.external_id,
            "unique": self.external_id,
            "idLookup": self.external_id || self.source == Source::Id,
            "caseSensitive": false,
            "custom": self.custom,
            "calculated": false,
            "defaultedOnCreate": !matches!(self.source, Source::Stored),
            "filterable": self.filterable(),
            "sortable": self.sortable(),
            "groupable": self.filterable() && self.kind != FieldType::Double,
            "nameField": self.name == "Name",
            "restrictedPicklist": self.restricted,
            "picklistValues": picklist,
            "referenceTo": self.reference_to.map_or_else(Vec::new, |to| vec![to.name()]),
            "relationshipName": self.reference_to.map(SfObject::name),
            "defaultValue": null,
            "inlineHelpText": null,
        })
    }
}

use FieldType as T;

const LEAD_SOURCES: [&str; 4] = ["Web", "Phone Inquiry", "Partner Referral", "Other"];
pub(crate) const INDUSTRIES: [&str; 5] = ["Technology", "Finance", "Retail", "Healthcare", "Other"];

const ID: Field = Field::text("Id", "Record ID", T::Id, 18).system(Source::Id);
const CONDUIT_ID: Field = Field::text("Conduit_Id__c", "Conduit Id", T::String, 255).external();
const CREATED: Field =
    Field::text("CreatedDate", "Created Date", T::DateTime, 0).system(Source::Created);
const MODIFIED: Field =
    Field::text("LastModifiedDate", "Last Modified Date", T::DateTime, 0).system(Source::Modified);
const MODSTAMP: Field =
    Field::text("SystemModstamp", "System Modstamp", T::DateTime, 0).system(Source::Modified);
const DELETED: Field = Field::text("IsDeleted", "Deleted", T::Boolean, 0).system(Source::Deleted);

const CONTACT_FIELDS: [Field; 18] = [
    Field {
        label: "Contact ID",
        ..ID
    },
    Field::text("FirstName", "First Name", T::String, 40),
    Field::text("LastName", "Last Name", T::String, 80).required(),
    Field::text("Email", "Email", T::Email, 80),
    Field::text("Phone", "Business Phone", T::Phone, 40),
    Field::text("MobilePhone", "Mobile Phone", T::Phone, 40),
    Field::text("Title", "Title", T::String, 128),
    Field::text("Department", "Department", T::String, 80),
    Field::text("AccountId", "Account ID", T::Reference, 18).reference(SfObject::Account),
    Field::text("MailingCity", "Mailing City", T::String, 40),
    Field::text("MailingCountry", "Mailing Country", T::String, 80),
    Field::text("LeadSource", "Lead Source", T::Picklist, 255).picklist(&LEAD_SOURCES),
    Field::text("Birthdate", "Birthdate", T::Date, 0),
    CONDUIT_ID,
    CREATED,
    MODIFIED,
    MODSTAMP,
    DELETED,
];

const ACCOUNT_FIELDS: [Field; 15] = [
    Field {
        label: "Account ID",
        ..ID
    },
    Field::text("Name", "Account Name", T::String, 255).required(),
    Field::text("Website", "Website", T::Url, 255),
    Field::text("Phone", "Account Phone", T::Phone, 40),
    Field::text("Industry", "Industry", T::Picklist, 255).picklist(&INDUSTRIES),
    Field::text("BillingCity", "Billing City", T::String, 40),
    Field::text("BillingCountry", "Billing Country", T::String, 80),
    Field::text("NumberOfEmployees", "Employees", T::Int, 0),
    Field::text("AnnualRevenue", "Annual Revenue", T::Double, 0),
    Field::text("Description", "Account Description", T::Textarea, 32_000),
    CONDUIT_ID,
    CREATED,
    MODIFIED,
    MODSTAMP,
    DELETED,
];

/// The standard sales process's stages (`StageName`).
pub(crate) const STAGES: [&str; 10] = [
    "Prospecting",
    "Qualification",
    "Needs Analysis",
    "Value Proposition",
    "Id. Decision Makers",
    "Perception Analysis",
    "Proposal/Price Quote",
    "Negotiation/Review",
    "Closed Won",
    "Closed Lost",
];

const OPPORTUNITY_FIELDS: [Field; 13] = [
    Field {
        label: "Opportunity ID",
        ..ID
    },
    Field::text("Name", "Name", T::String, 120).required(),
    Field::text("Amount", "Amount", T::Double, 0),
    Field::text("CloseDate", "Close Date", T::Date, 0).required(),
    Field {
        restricted: true,
        ..Field::text("StageName", "Stage", T::Picklist, 255)
            .picklist(&STAGES)
            .required()
    },
    Field::text("AccountId", "Account ID", T::Reference, 18).reference(SfObject::Account),
    Field {
        updateable: false,
        ..Field::text("ContactId", "Contact ID", T::Reference, 18).reference(SfObject::Contact)
    },
    Field::text("Description", "Description", T::Textarea, 32_000),
    CONDUIT_ID,
    CREATED,
    MODIFIED,
    MODSTAMP,
    DELETED,
];

/// `GET /sobjects/{S}/describe`.
pub(crate) fn describe(object: SfObject, version: &str) -> Value {
    let name = object.name();
    let base = format!("/services/data/v{version}/sobjects/{name}");
    let fields: Vec<Value> = object.fields().iter().map(Field::describe).collect();
    json!({
        "name": name,
        "label": name,
        "labelPlural": object.label_plural(),
        "keyPrefix": object.key_prefix(),
        "custom": false,
        "createable": true,
        "updateable": true,
        "deletable": true,
        "queryable": true,
        "retrieveable": true,
        "searchable": true,
        "replicateable": true,
        "undeletable": true,
        "triggerable": true,
        "fields": fields,
        "childRelationships": [],
        "recordTypeInfos": [],
        "urls": {
            "sobject": base,
            "describe": format!("{base}/describe"),
            "rowTemplate": format!("{base}/{{ID}}"),
        },
    })
}

/// An error of one record, as Salesforce reports it: `statusCode` (`errorCode` in the
/// single-record routes), `message`, `fields`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RecordError {
    pub(crate) code: &'static str,
    pub(crate) message: String,
    pub(crate) fields: Vec<String>,
}

impl RecordError {
    pub(crate) fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            fields: Vec::new(),
        }
    }

    pub(crate) fn on(mut self, field: &str) -> Self {
        self.fields.push(field.to_owned());
        self
    }

    /// The sObject Collections shape.
    pub(crate) fn collection_json(&self) -> Value {
        json!({"statusCode": self.code, "message": self.message, "fields": self.fields})
    }

    /// The single-record routes' shape.
    pub(crate) fn rest_json(&self) -> Value {
        json!({"message": self.message, "errorCode": self.code, "fields": self.fields})
    }
}

/// Why a written value was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum BadValue {
    /// The JSON cannot be read as the field's type: Salesforce fails the whole request
    /// (400 `JSON_PARSER_ERROR`).
    Parse(String),
    /// A valid JSON value the record cannot hold: an error of that record.
    Record(RecordError),
}

fn parse_error(field: &Field, value: &Value) -> BadValue {
    let kind = match value {
        Value::String(_) => "VALUE_STRING",
        Value::Number(_) => "VALUE_NUMBER",
        Value::Bool(_) => "VALUE_TRUE",
        Value::Array(_) => "START_ARRAY",
        Value::Object(_) => "START_OBJECT",
        Value::Null => "VALUE_NULL",
    };
    BadValue::Parse(format!(
        "Cannot deserialize instance of {} from {kind} value {value} or request may be missing a required field",
        field.kind.soql_name()
    ))
}

/// Whether `text` looks like an email address Salesforce accepts.
fn valid_email(text: &str) -> bool {
    let Some((local, domain)) = text.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !text
            .chars()
            .any(|c| c.is_whitespace() || c == ',' || c == ';')
        && !local.contains('@')
}

/// Converts a written JSON value to what the field stores (`Null` clears). References
/// are only checked for shape here; whether the record exists is the store's question.
pub(crate) fn coerce(field: &Field, value: &Value) -> Result<Value, BadValue> {
    if value.is_null() {
        return Ok(Value::Null);
    }
    match field.kind {
        T::String | T::Email | T::Phone | T::Url | T::Picklist | T::Textarea => {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return Err(parse_error(field, value)),
            };
            if text.is_empty() {
                return Ok(Value::Null);
            }
            if field.length > 0 && text.chars().count() > field.length as usize {
                return Err(BadValue::Record(
                    RecordError::new(
                        "STRING_TOO_LONG",
                        format!(
                            "{}: data value too large: {text} (max length={})",
                            field.label, field.length
                        ),
                    )
                    .on(field.name),
                ));
            }
            if field.restricted && !field.picklist.contains(&text.as_str()) {
                return Err(BadValue::Record(
                    RecordError::new(
                        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                        format!(
                            "{}: bad value for restricted picklist field: {text}",
                            field.label
                        ),
                    )
                    .on(field.name),
                ));
            }
            if field.kind == T::Email && !valid_email(&text) {
                return Err(BadValue::Record(
                    RecordError::new(
                        "INVALID_EMAIL_ADDRESS",
                        format!("{}: invalid email address: {text}", field.label),
                    )
                    .on(field.name),
                ));
            }
            Ok(Value::String(text))
        }
        T::Int => {
            let n = match value {
                Value::Number(n) => n.as_i64().or_else(|| {
                    n.as_f64()
                        .filter(|f| f.fract() == 0.0 && f.abs() < 1e15)
                        .map(|f| f as i64)
                }),
                Value::String(s) => s.trim().parse::<i64>().ok(),
                _ => None,
            };
            match n {
                Some(n) if n.abs() < 100_000_000 => Ok(json!(n)),
                Some(_) => Err(BadValue::Record(
                    RecordError::new(
                        "NUMBER_OUTSIDE_VALID_RANGE",
                        format!(
                            "{}: value outside of valid range on numeric field",
                            field.label
                        ),
                    )
                    .on(field.name),
                )),
                None => Err(parse_error(field, value)),
            }
        }
        T::Double => {
            let n = match value {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
                _ => None,
            };
            n.map(|n| json!(n)).ok_or_else(|| parse_error(field, value))
        }
        T::Boolean => match value {
            Value::Bool(b) => Ok(Value::Bool(*b)),
            Value::String(s) if s.eq_ignore_ascii_case("true") => Ok(Value::Bool(true)),
            Value::String(s) if s.eq_ignore_ascii_case("false") => Ok(Value::Bool(false)),
            _ => Err(parse_error(field, value)),
        },
        T::Date => match value {
            Value::String(s) if clock::parse_date(s.trim()).is_some() => {
                Ok(Value::String(s.trim().to_owned()))
            }
            _ => Err(parse_error(field, value)),
        },
        T::Reference => {
            let Some(text) = value.as_str() else {
                return Err(parse_error(field, value));
            };
            if text.is_empty() {
                return Ok(Value::Null);
            }
            match (normalize_id(text), field.reference_to) {
                (Some(id), Some(to)) if id.starts_with(to.key_prefix()) => Ok(Value::String(id)),
                _ => Err(BadValue::Record(
                    RecordError::new(
                        "FIELD_INTEGRITY_EXCEPTION",
                        format!("{}: id value of incorrect type: {text}", field.label),
                    )
                    .on(field.name),
                )),
            }
        }
        T::Id | T::DateTime => Err(parse_error(field, value)),
    }
}

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const CHECKSUM: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";

/// The three-character case-safe suffix of a 15-character id.
fn checksum(id15: &[u8]) -> [u8; 3] {
    let mut suffix = [b'A'; 3];
    for (chunk, slot) in id15.chunks(5).zip(suffix.iter_mut()) {
        let flags = chunk
            .iter()
            .enumerate()
            .filter(|(_, b)| b.is_ascii_uppercase())
            .fold(0usize, |acc, (i, _)| acc | (1 << i));
        *slot = CHECKSUM[flags % 32];
    }
    suffix
}

/// An 18-character id: `prefix` (three characters), the pod `Dn`, `seq` in base 62
/// (ten digits, so ids sort in creation order), and the case-safe checksum.
pub(crate) fn make_id(prefix: &str, seq: u64) -> String {
    let mut digits = [b'0'; 10];
    let mut n = seq;
    for slot in digits.iter_mut().rev() {
        *slot = BASE62[usize::try_from(n % 62).unwrap_or(0)];
        n /= 62;
    }
    let mut id = Vec::with_capacity(18);
    id.extend_from_slice(prefix.as_bytes());
    id.extend_from_slice(b"Dn");
    id.extend_from_slice(&digits);
    let suffix = checksum(&id);
    id.extend_from_slice(&suffix);
    String::from_utf8(id).unwrap_or_default()
}

/// A 15- or 18-character id in its 18-character form; `None` when it is not an id (wrong
/// length, characters, or an 18-character id whose suffix does not match).
pub(crate) fn normalize_id(text: &str) -> Option<String> {
    let bytes = text.trim().as_bytes();
    if !(bytes.len() == 15 || bytes.len() == 18) || !bytes.iter().all(u8::is_ascii_alphanumeric) {
        return None;
    }
    let suffix = checksum(&bytes[..15]);
    if bytes.len() == 18 && !bytes[15..].eq_ignore_ascii_case(&suffix) {
        return None;
    }
    let mut id = bytes[..15].to_vec();
    id.extend_from_slice(&suffix);
    String::from_utf8(id).ok()
}

/// Epoch milliseconds in Salesforce's format, `2024-01-15T09:00:00.000+0000`.
pub(crate) fn sf_datetime(ms: i64) -> String {
    let days = ms.div_euclid(clock::DAY_MS);
    let rem = ms.rem_euclid(clock::DAY_MS);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}+0000",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

pub(crate) use crate::clock::parse_datetime;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_case_safe_suffix() {
        let id = make_id("003", 1_000_000);
        assert_eq!(id.len(), 18);
        assert!(id.starts_with("003Dn"));
        assert_eq!(normalize_id(&id[..15]).as_deref(), Some(id.as_str()));
        assert_eq!(normalize_id(&id.to_lowercase()[..]), None);
        assert_eq!(normalize_id(&id).as_deref(), Some(id.as_str()));
        // A known real pair: 001A0000006Vm9r → 001A0000006Vm9rIAC.
        assert_eq!(
            normalize_id("001A0000006Vm9r").as_deref(),
            Some("001A0000006Vm9rIAC")
        );
        assert!(make_id("003", 5) < make_id("003", 62));
        assert_eq!(normalize_id("hello"), None);
    }

    #[test]
    fn datetimes() {
        let ms = parse_datetime("2024-01-15T09:00:00.000+0000").unwrap();
        assert_eq!(sf_datetime(ms), "2024-01-15T09:00:00.000+0000");
        assert_eq!(parse_datetime("2024-01-15T09:00:00Z"), Some(ms));
        assert_eq!(parse_datetime("2024-01-15T10:00:00+01:00"), Some(ms));
        assert_eq!(parse_datetime("2024-01-15T01:00:00-08:00"), Some(ms));
        assert_eq!(parse_datetime("2024-01-15T10:00:00 01:00"), Some(ms));
        assert_eq!(parse_datetime("2024-01-15T09:00:00.5Z"), Some(ms + 500));
        assert_eq!(parse_datetime("2024-01-15"), None);
        assert_eq!(parse_datetime("2024-01-15T09:00Z"), None);
    }

    #[test]
    fn values_are_checked() {
        let (_, email) = SfObject::Contact.field("email").unwrap();
        assert!(matches!(
            coerce(email, &json!("nope")),
            Err(BadValue::Record(RecordError {
                code: "INVALID_EMAIL_ADDRESS",
                ..
            }))
        ));
        assert_eq!(coerce(email, &json!("")), Ok(Value::Null));
        let (_, employees) = SfObject::Account.field("NumberOfEmployees").unwrap();
        assert_eq!(coerce(employees, &json!("42")), Ok(json!(42)));
        assert!(matches!(
            coerce(employees, &json!("many")),
            Err(BadValue::Parse(_))
        ));
        let (_, birthdate) = SfObject::Contact.field("Birthdate").unwrap();
        assert!(matches!(
            coerce(birthdate, &json!("1990-02-30")),
            Err(BadValue::Parse(_))
        ));
        let (_, account) = SfObject::Contact.field("AccountId").unwrap();
        let contact_id = make_id("003", 7);
        assert!(matches!(
            coerce(account, &json!(contact_id)),
            Err(BadValue::Record(_))
        ));
        assert_eq!(
            SfObject::Contact
                .required()
                .map(|(_, f)| f.name)
                .collect::<Vec<_>>(),
            ["LastName"]
        );
    }
}

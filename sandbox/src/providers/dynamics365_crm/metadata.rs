//! Column definitions: the standard columns of `contact` and `account`, `GET
//! EntityDefinitions(LogicalName='…')[/Attributes[(LogicalName='…')]]` and creating a custom
//! string column.

use axum::http::StatusCode;
use serde_json::{Map, Value, json};

use super::super::ProviderRequest;
use super::super::dynamics365_kb::{self as kb, Kind, Query, Row, Schema, Val};
use super::{Answer, CrmEnv, Ctx, DynAttribute, DynTable, error, from_response, syntax};

/// `(logical, schema, type, label, create, update, max length, required)`.
type Column = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    bool,
    Option<u32>,
    &'static str,
);

/// `description`, a Memo of every table here.
const DESCRIPTION: Column = (
    "description",
    "Description",
    "Memo",
    "Description",
    true,
    true,
    Some(2000),
    "None",
);

const COMMON_TAIL: [Column; 6] = [
    (
        "statecode",
        "StateCode",
        "State",
        "Status",
        false,
        true,
        None,
        "SystemRequired",
    ),
    (
        "statuscode",
        "StatusCode",
        "Status",
        "Status Reason",
        true,
        true,
        None,
        "None",
    ),
    (
        "createdon",
        "CreatedOn",
        "DateTime",
        "Created On",
        false,
        false,
        None,
        "None",
    ),
    (
        "modifiedon",
        "ModifiedOn",
        "DateTime",
        "Modified On",
        false,
        false,
        None,
        "None",
    ),
    (
        "versionnumber",
        "VersionNumber",
        "BigInt",
        "Version Number",
        false,
        false,
        None,
        "None",
    ),
    (
        "ownerid",
        "OwnerId",
        "Owner",
        "Owner",
        true,
        true,
        None,
        "SystemRequired",
    ),
];

const CONTACT: [Column; 13] = [
    (
        "contactid",
        "ContactId",
        "Uniqueidentifier",
        "Contact",
        true,
        false,
        None,
        "SystemRequired",
    ),
    (
        "firstname",
        "FirstName",
        "String",
        "First Name",
        true,
        true,
        Some(50),
        "Recommended",
    ),
    (
        "lastname",
        "LastName",
        "String",
        "Last Name",
        true,
        true,
        Some(50),
        "ApplicationRequired",
    ),
    (
        "fullname",
        "FullName",
        "String",
        "Full Name",
        false,
        false,
        Some(160),
        "None",
    ),
    (
        "emailaddress1",
        "EMailAddress1",
        "String",
        "Email",
        true,
        true,
        Some(100),
        "None",
    ),
    (
        "emailaddress2",
        "EMailAddress2",
        "String",
        "Email Address 2",
        true,
        true,
        Some(100),
        "None",
    ),
    (
        "telephone1",
        "Telephone1",
        "String",
        "Business Phone",
        true,
        true,
        Some(50),
        "None",
    ),
    (
        "mobilephone",
        "MobilePhone",
        "String",
        "Mobile Phone",
        true,
        true,
        Some(50),
        "None",
    ),
    (
        "jobtitle",
        "JobTitle",
        "String",
        "Job Title",
        true,
        true,
        Some(100),
        "None",
    ),
    (
        "address1_city",
        "Address1_City",
        "String",
        "Address 1: City",
        true,
        true,
        Some(80),
        "None",
    ),
    (
        "address1_country",
        "Address1_Country",
        "String",
        "Address 1: Country/Region",
        true,
        true,
        Some(80),
        "None",
    ),
    DESCRIPTION,
    (
        "parentcustomerid",
        "ParentCustomerId",
        "Customer",
        "Company Name",
        true,
        true,
        None,
        "None",
    ),
];

const ACCOUNT: [Column; 12] = [
    (
        "accountid",
        "AccountId",
        "Uniqueidentifier",
        "Account",
        true,
        false,
        None,
        "SystemRequired",
    ),
    (
        "name",
        "Name",
        "String",
        "Account Name",
        true,
        true,
        Some(160),
        "ApplicationRequired",
    ),
    (
        "accountnumber",
        "AccountNumber",
        "String",
        "Account Number",
        true,
        true,
        Some(20),
        "None",
    ),
    (
        "emailaddress1",
        "EMailAddress1",
        "String",
        "Email",
        true,
        true,
        Some(100),
        "None",
    ),
    (
        "telephone1",
        "Telephone1",
        "String",
        "Main Phone",
        true,
        true,
        Some(50),
        "None",
    ),
    (
        "websiteurl",
        "WebSiteURL",
        "String",
        "Website",
        true,
        true,
        Some(200),
        "None",
    ),
    (
        "address1_city",
        "Address1_City",
        "String",
        "Address 1: City",
        true,
        true,
        Some(80),
        "None",
    ),
    (
        "address1_country",
        "Address1_Country",
        "String",
        "Address 1: Country/Region",
        true,
        true,
        Some(80),
        "None",
    ),
    DESCRIPTION,
    (
        "numberofemployees",
        "NumberOfEmployees",
        "Integer",
        "Number of Employees",
        true,
        true,
        None,
        "None",
    ),
    (
        "primarycontactid",
        "PrimaryContactId",
        "Lookup",
        "Primary Contact",
        true,
        true,
        None,
        "None",
    ),
    (
        "parentaccountid",
        "ParentAccountId",
        "Lookup",
        "Parent Account",
        true,
        true,
        None,
        "None",
    ),
];

/// The standard columns of `opportunity` (the Sales table reference: `name` is the
/// "Topic", `estimatedvalue` Money, `estimatedclosedate` a date, `salesstage` the
/// Picklist of the sales process's stages, `stepname` free text, `parentaccountid` /
/// `parentcontactid` lookups to one table each).
const OPPORTUNITY: [Column; 10] = [
    (
        "opportunityid",
        "OpportunityId",
        "Uniqueidentifier",
        "Opportunity",
        true,
        false,
        None,
        "SystemRequired",
    ),
    (
        "name",
        "Name",
        "String",
        "Topic",
        true,
        true,
        Some(300),
        "ApplicationRequired",
    ),
    (
        "estimatedvalue",
        "EstimatedValue",
        "Money",
        "Est. Revenue",
        true,
        true,
        None,
        "None",
    ),
    (
        "estimatedclosedate",
        "EstimatedCloseDate",
        "DateTime",
        "Est. Close Date",
        true,
        true,
        None,
        "None",
    ),
    (
        "salesstage",
        "SalesStage",
        "Picklist",
        "Sales Stage",
        true,
        true,
        None,
        "None",
    ),
    (
        "stepname",
        "StepName",
        "String",
        "Pipeline Phase",
        true,
        true,
        Some(200),
        "None",
    ),
    (
        "closeprobability",
        "CloseProbability",
        "Integer",
        "Probability",
        true,
        true,
        None,
        "None",
    ),
    DESCRIPTION,
    (
        "parentaccountid",
        "ParentAccountId",
        "Lookup",
        "Account",
        true,
        true,
        None,
        "None",
    ),
    (
        "parentcontactid",
        "ParentContactId",
        "Lookup",
        "Contact",
        true,
        true,
        None,
        "None",
    ),
];

/// The options of a standard Picklist column (`salesstage`: the Sales app's stages).
pub(super) fn picklist_options(table: DynTable, logical: &str) -> &'static [(i64, &'static str)] {
    match (table, logical) {
        (DynTable::Opportunity, "salesstage") => {
            &[(0, "Qualify"), (1, "Develop"), (2, "Propose"), (3, "Close")]
        }
        _ => &[],
    }
}

/// The tables a lookup column of `table` refers to (`LookupAttributeMetadata.Targets`).
pub(super) fn lookup_targets(table: DynTable, logical: &str) -> &'static [&'static str] {
    match (table, logical) {
        (DynTable::Contact, "parentcustomerid") => &["account", "contact"],
        (DynTable::Account, "primarycontactid") | (DynTable::Opportunity, "parentcontactid") => {
            &["contact"]
        }
        (DynTable::Account | DynTable::Opportunity, "parentaccountid") => &["account"],
        (_, "ownerid") => &["systemuser", "team"],
        _ => &[],
    }
}

/// The standard columns of `table`.
pub(super) fn standard_attributes(table: DynTable) -> Vec<DynAttribute> {
    let own: &[Column] = match table {
        DynTable::Contact => &CONTACT,
        DynTable::Account => &ACCOUNT,
        DynTable::Opportunity => &OPPORTUNITY,
    };
    own.iter()
        .chain(COMMON_TAIL.iter())
        .enumerate()
        .map(|(i, c)| DynAttribute {
            logical_name: c.0.to_owned(),
            schema_name: c.1.to_owned(),
            attribute_type: c.2.to_owned(),
            display_name: c.3.to_owned(),
            is_valid_for_create: c.4,
            is_valid_for_update: c.5,
            is_custom: false,
            max_length: c.6,
            required_level: c.7.to_owned(),
            metadata_id: kb::guid(0xA77_0000 + table.object_type_code() as u64, i as u64 + 1),
            options: picklist_options(table, c.0)
                .iter()
                .map(|(v, l)| (*v, (*l).to_owned()))
                .collect(),
            date_only: table == DynTable::Opportunity && c.0 == "estimatedclosedate",
        })
        .collect()
}

/// The `@odata.type` of a column's metadata.
fn odata_type(attr: &DynAttribute) -> &'static str {
    match attr.attribute_type.as_str() {
        "String" => "#Microsoft.Dynamics.CRM.StringAttributeMetadata",
        "Memo" => "#Microsoft.Dynamics.CRM.MemoAttributeMetadata",
        "DateTime" => "#Microsoft.Dynamics.CRM.DateTimeAttributeMetadata",
        "Uniqueidentifier" => "#Microsoft.Dynamics.CRM.UniqueIdentifierAttributeMetadata",
        "Lookup" | "Customer" | "Owner" => "#Microsoft.Dynamics.CRM.LookupAttributeMetadata",
        "Integer" => "#Microsoft.Dynamics.CRM.IntegerAttributeMetadata",
        "BigInt" => "#Microsoft.Dynamics.CRM.BigIntAttributeMetadata",
        "State" => "#Microsoft.Dynamics.CRM.StateAttributeMetadata",
        "Status" => "#Microsoft.Dynamics.CRM.StatusAttributeMetadata",
        "Boolean" => "#Microsoft.Dynamics.CRM.BooleanAttributeMetadata",
        "Picklist" => "#Microsoft.Dynamics.CRM.PicklistAttributeMetadata",
        "Money" => "#Microsoft.Dynamics.CRM.MoneyAttributeMetadata",
        _ => "#Microsoft.Dynamics.CRM.AttributeMetadata",
    }
}

fn label(text: &str) -> Value {
    let localized = json!({
        "Label": text,
        "LanguageCode": 1033,
        "IsManaged": false,
        "MetadataId": kb::guid(0x1ABE1, text.len() as u64),
        "HasChanged": null,
    });
    json!({"LocalizedLabels": [localized.clone()], "UserLocalizedLabel": localized})
}

/// Properties of `AttributeMetadata` a `$select` may name (and their kinds for `$filter`).
const ATTRIBUTE_PROPS: [(&str, Kind); 14] = [
    ("LogicalName", Kind::Text),
    // The column this one derives from (`parentcustomeridname` of `parentcustomerid`):
    // such columns are not Web API properties. The stand-in has none: always null.
    ("AttributeOf", Kind::Text),
    ("SchemaName", Kind::Text),
    ("AttributeType", Kind::Text),
    ("AttributeTypeName", Kind::Text),
    ("DisplayName", Kind::Text),
    ("IsValidForCreate", Kind::Bool),
    ("IsValidForUpdate", Kind::Bool),
    ("IsValidForRead", Kind::Bool),
    ("IsCustomAttribute", Kind::Bool),
    ("IsPrimaryId", Kind::Bool),
    ("IsPrimaryName", Kind::Bool),
    ("RequiredLevel", Kind::Text),
    ("MetadataId", Kind::Guid),
];

/// The derived type an `Attributes/Microsoft.Dynamics.CRM.…` segment casts to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Cast {
    None,
    /// `StringAttributeMetadata` (adds `MaxLength`).
    String,
    /// `PicklistAttributeMetadata` (adds the `OptionSet` navigation property).
    Picklist,
    /// `LookupAttributeMetadata` (adds `Targets`).
    Lookup,
}

impl Cast {
    fn of(tail: &str) -> Self {
        match tail.rsplit_once('/').map_or("", |(_, t)| t) {
            "Microsoft.Dynamics.CRM.StringAttributeMetadata" => Cast::String,
            "Microsoft.Dynamics.CRM.PicklistAttributeMetadata" => Cast::Picklist,
            "Microsoft.Dynamics.CRM.LookupAttributeMetadata" => Cast::Lookup,
            _ => Cast::None,
        }
    }

    /// The `AttributeType`s of the columns the cast keeps.
    fn keeps(self, attr: &DynAttribute) -> bool {
        match self {
            Cast::None => true,
            Cast::String => attr.attribute_type == "String",
            Cast::Picklist => attr.attribute_type == "Picklist",
            Cast::Lookup => matches!(
                attr.attribute_type.as_str(),
                "Lookup" | "Customer" | "Owner"
            ),
        }
    }

    fn segment(self) -> &'static str {
        match self {
            Cast::None => "",
            Cast::String => "/Microsoft.Dynamics.CRM.StringAttributeMetadata",
            Cast::Picklist => "/Microsoft.Dynamics.CRM.PicklistAttributeMetadata",
            Cast::Lookup => "/Microsoft.Dynamics.CRM.LookupAttributeMetadata",
        }
    }
}

/// `$filter`/`$select` schema over `AttributeMetadata` (or a derived type).
struct AttrSchema {
    cast: Cast,
}

impl Schema for AttrSchema {
    fn kind(&self, prop: &str) -> Option<Kind> {
        if prop == "MaxLength" && self.cast == Cast::String {
            return Some(Kind::Int);
        }
        if prop == "Targets" && self.cast == Cast::Lookup {
            // Selectable, not comparable here.
            return None;
        }
        if matches!(
            prop,
            "AttributeType" | "AttributeTypeName" | "DisplayName" | "RequiredLevel"
        ) {
            // Complex or enum values: selectable, not comparable here.
            return None;
        }
        ATTRIBUTE_PROPS
            .iter()
            .find(|(p, _)| *p == prop)
            .map(|(_, k)| *k)
    }

    fn type_name(&self) -> &str {
        match self.cast {
            Cast::None => "AttributeMetadata",
            Cast::String => "StringAttributeMetadata",
            Cast::Picklist => "PicklistAttributeMetadata",
            Cast::Lookup => "LookupAttributeMetadata",
        }
    }
}

/// A column seen by `$filter`.
struct AttrRow<'a> {
    attr: &'a DynAttribute,
    table: DynTable,
}

impl Row for AttrRow<'_> {
    fn get(&self, prop: &str) -> Val<'_> {
        let a = self.attr;
        match prop {
            "LogicalName" => Val::Text(&a.logical_name),
            "SchemaName" => Val::Text(&a.schema_name),
            "AttributeOf" => Val::Null,
            "IsValidForCreate" => Val::Bool(a.is_valid_for_create),
            "IsValidForUpdate" => Val::Bool(a.is_valid_for_update),
            "IsValidForRead" => Val::Bool(true),
            "IsCustomAttribute" => Val::Bool(a.is_custom),
            "IsPrimaryId" => Val::Bool(a.logical_name == self.table.key()),
            "IsPrimaryName" => Val::Bool(a.logical_name == self.table.primary_name()),
            "MaxLength" => a.max_length.map_or(Val::Null, |n| Val::Int(i64::from(n))),
            "MetadataId" => Val::Guid(&a.metadata_id),
            _ => Val::Null,
        }
    }

    fn id(&self) -> &str {
        &self.attr.metadata_id
    }
}

fn attribute_json(table: DynTable, attr: &DynAttribute, select: Option<&[String]>) -> Value {
    let type_name = match attr.attribute_type.as_str() {
        "Uniqueidentifier" => "UniqueidentifierType".to_owned(),
        "BigInt" => "BigIntType".to_owned(),
        t => format!("{t}Type"),
    };
    let mut all = Map::new();
    all.insert("@odata.type".to_owned(), json!(odata_type(attr)));
    all.insert("LogicalName".to_owned(), json!(attr.logical_name));
    all.insert("SchemaName".to_owned(), json!(attr.schema_name));
    all.insert("AttributeType".to_owned(), json!(attr.attribute_type));
    all.insert("AttributeOf".to_owned(), Value::Null);
    all.insert("AttributeTypeName".to_owned(), json!({"Value": type_name}));
    all.insert("DisplayName".to_owned(), label(&attr.display_name));
    all.insert(
        "IsValidForCreate".to_owned(),
        json!(attr.is_valid_for_create),
    );
    all.insert(
        "IsValidForUpdate".to_owned(),
        json!(attr.is_valid_for_update),
    );
    all.insert("IsValidForRead".to_owned(), json!(true));
    all.insert("IsCustomAttribute".to_owned(), json!(attr.is_custom));
    all.insert(
        "IsPrimaryId".to_owned(),
        json!(attr.logical_name == table.key()),
    );
    all.insert(
        "IsPrimaryName".to_owned(),
        json!(attr.logical_name == table.primary_name()),
    );
    all.insert(
        "RequiredLevel".to_owned(),
        json!({"Value": attr.required_level, "CanBeChanged": true, "ManagedPropertyLogicalName": "canmodifyrequirementlevelsettings"}),
    );
    all.insert("EntityLogicalName".to_owned(), json!(table.logical_name()));
    all.insert("MetadataId".to_owned(), json!(attr.metadata_id));
    if let Some(max) = attr.max_length {
        all.insert("MaxLength".to_owned(), json!(max));
    }
    if attr.is_lookup() {
        all.insert(
            "Targets".to_owned(),
            json!(lookup_targets(table, &attr.logical_name)),
        );
    }
    if attr.attribute_type == "DateTime" {
        let behavior = if attr.date_only {
            "DateOnly"
        } else {
            "UserLocal"
        };
        all.insert("DateTimeBehavior".to_owned(), json!({"Value": behavior}));
        all.insert(
            "Format".to_owned(),
            json!(if attr.date_only {
                "DateOnly"
            } else {
                "DateAndTime"
            }),
        );
    }
    match select {
        None => Value::Object(all),
        Some(list) => {
            let mut out = Map::new();
            out.insert("@odata.type".to_owned(), json!(odata_type(attr)));
            for prop in list {
                out.insert(prop.clone(), all.get(prop).cloned().unwrap_or(Value::Null));
            }
            out.insert("MetadataId".to_owned(), json!(attr.metadata_id));
            Value::Object(out)
        }
    }
}

/// The table of `EntityDefinitions(LogicalName='contact')…`.
fn entity_of(segment: &str) -> Result<(DynTable, &str), Answer> {
    let rest = segment
        .strip_prefix("EntityDefinitions(")
        .unwrap_or_default();
    let (key, tail) = rest.split_once(')').unwrap_or_default();
    let name = key
        .strip_prefix("LogicalName='")
        .and_then(|k| k.strip_suffix('\''))
        .ok_or_else(|| {
            // Sandbox: only the LogicalName alternate key is served.
            syntax("Only EntityDefinitions(LogicalName='…') is served by the sandbox.")
        })?;
    let table = DynTable::from_logical(name).ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            "0x80040217",
            &format!("Could not find an entity with name {name}."),
        )
    })?;
    Ok((table, tail))
}

fn metadata_select(
    raw: Option<&str>,
    known: &dyn Fn(&str) -> bool,
    type_name: &str,
) -> Result<Option<Vec<String>>, Answer> {
    let Some(raw) = raw else { return Ok(None) };
    let mut out = Vec::new();
    for name in raw.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if !known(name) {
            return Err(from_response(kb::unknown_property(name, type_name)));
        }
        out.push(name.to_owned());
    }
    Ok(Some(out))
}

/// `GET EntityDefinitions(LogicalName='contact')`.
pub(super) fn entity_definition(
    env: &CrmEnv,
    ctx: &Ctx,
    segment: &str,
    req: &ProviderRequest,
) -> Answer {
    let run = || -> Result<Answer, Answer> {
        let (table, _) = entity_of(segment)?;
        let query = Query::parse_with(req, &["$select"]).map_err(from_response)?;
        let data = env.table(table);
        let mut all = Map::new();
        all.insert("LogicalName".to_owned(), json!(table.logical_name()));
        all.insert(
            "SchemaName".to_owned(),
            json!(match table {
                DynTable::Contact => "Contact",
                DynTable::Account => "Account",
                DynTable::Opportunity => "Opportunity",
            }),
        );
        all.insert("EntitySetName".to_owned(), json!(table.set_name()));
        all.insert("LogicalCollectionName".to_owned(), json!(table.set_name()));
        all.insert("PrimaryIdAttribute".to_owned(), json!(table.key()));
        all.insert(
            "PrimaryNameAttribute".to_owned(),
            json!(table.primary_name()),
        );
        all.insert("ChangeTrackingEnabled".to_owned(), json!(data.tracking));
        all.insert("ObjectTypeCode".to_owned(), json!(table.object_type_code()));
        all.insert("IsCustomEntity".to_owned(), json!(false));
        all.insert(
            "DisplayName".to_owned(),
            label(match table {
                DynTable::Contact => "Contact",
                DynTable::Account => "Account",
                DynTable::Opportunity => "Opportunity",
            }),
        );
        all.insert("MetadataId".to_owned(), json!(table.metadata_id()));
        let known = |p: &str| all.contains_key(p);
        let select = metadata_select(query.get("$select"), &known, "EntityMetadata")?;
        let mut out = Map::new();
        out.insert(
            "@odata.context".to_owned(),
            json!(format!("{}/$metadata#EntityDefinitions/$entity", ctx.base)),
        );
        match select {
            None => out.extend(all),
            Some(list) => {
                for p in list {
                    out.insert(p.clone(), all.get(&p).cloned().unwrap_or(Value::Null));
                }
                out.insert("MetadataId".to_owned(), json!(table.metadata_id()));
            }
        }
        Ok(Answer::json(StatusCode::OK, Value::Object(out)))
    };
    match run() {
        Ok(answer) | Err(answer) => answer,
    }
}

/// `GET EntityDefinitions(LogicalName='contact')/Attributes[/…StringAttributeMetadata]`.
pub(super) fn attributes(env: &CrmEnv, ctx: &Ctx, segment: &str, req: &ProviderRequest) -> Answer {
    let run = || -> Result<Answer, Answer> {
        let (table, tail) = entity_of(segment)?;
        let schema = AttrSchema {
            cast: Cast::of(tail),
        };
        let query =
            Query::parse_with(req, &["$select", "$filter", "$expand"]).map_err(from_response)?;
        let known = |p: &str| {
            ATTRIBUTE_PROPS.iter().any(|(n, _)| *n == p)
                || (schema.cast == Cast::String && p == "MaxLength")
                || (schema.cast == Cast::Lookup && p == "Targets")
        };
        let select = metadata_select(query.get("$select"), &known, schema.type_name())?;
        let expand = option_set_expand(query.get("$expand"), schema.cast)?;
        let filter = match query.get("$filter").filter(|f| !f.trim().is_empty()) {
            Some(raw) => Some(kb::parse_filter(raw, &schema).map_err(from_response)?),
            None => None,
        };
        let data = env.table(table);
        let value: Vec<Value> = data
            .attrs
            .iter()
            .filter(|a| schema.cast.keeps(a))
            .filter(|a| {
                filter
                    .as_ref()
                    .is_none_or(|f| f.eval(&AttrRow { attr: a, table }))
            })
            .map(|a| {
                let mut row = attribute_json(table, a, select.as_deref());
                if let (Some(names), Value::Object(map)) = (&expand, &mut row) {
                    for name in names {
                        map.insert(name.clone(), option_set(a, name));
                    }
                }
                row
            })
            .collect();
        let cast = schema.cast.segment();
        let suffix = select
            .as_ref()
            .map(|s| format!("({})", s.join(",")))
            .unwrap_or_default();
        Ok(Answer::json(
            StatusCode::OK,
            json!({
                "@odata.context": format!(
                    "{}/$metadata#EntityDefinitions('{}')/Attributes{cast}{suffix}",
                    ctx.base,
                    table.metadata_id()
                ),
                "value": value,
            }),
        ))
    };
    match run() {
        Ok(answer) | Err(answer) => answer,
    }
}

/// The navigation properties a `$expand` of `PicklistAttributeMetadata` names
/// (`OptionSet`, `GlobalOptionSet`, each with an optional `($select=Options)`); `$expand`
/// on any other cast: 400, as OData refuses a navigation property the type lacks.
fn option_set_expand(raw: Option<&str>, cast: Cast) -> Result<Option<Vec<String>>, Answer> {
    let Some(raw) = raw.filter(|r| !r.trim().is_empty()) else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for item in split_outside_parens(raw) {
        let item = item.trim();
        let (name, options) = match item.split_once('(') {
            Some((name, rest)) => (name.trim(), Some(rest.trim_end_matches(')'))),
            None => (item, None),
        };
        let known = cast == Cast::Picklist && matches!(name, "OptionSet" | "GlobalOptionSet");
        if !known {
            return Err(syntax(&format!(
                "Could not find a property named '{name}' on type 'Microsoft.Dynamics.CRM.{}'.",
                AttrSchema { cast }.type_name()
            )));
        }
        if let Some(o) = options
            && !o.is_empty()
            && o.replace(' ', "") != "$select=Options"
        {
            // Sandbox: only `$select=Options` inside the expansion.
            return Err(syntax(&format!(
                "The sandbox expands {name} with $select=Options only, not '{o}'."
            )));
        }
        out.push(name.to_owned());
    }
    Ok(Some(out))
}

/// `a,b(c,d),e` → `a`, `b(c,d)`, `e`.
fn split_outside_parens(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0_i32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out
}

/// A Picklist's `OptionSet` (a local option set; `GlobalOptionSet` is null).
fn option_set(attr: &DynAttribute, name: &str) -> Value {
    if name == "GlobalOptionSet" {
        return Value::Null;
    }
    let options: Vec<Value> = attr
        .options
        .iter()
        .map(|(v, l)| json!({"Value": v, "Label": label(l)}))
        .collect();
    json!({"Options": options})
}

/// `GET EntityDefinitions(LogicalName='contact')/Attributes(LogicalName='x')`.
pub(super) fn attribute(env: &CrmEnv, ctx: &Ctx, segment: &str, req: &ProviderRequest) -> Answer {
    let run = || -> Result<Answer, Answer> {
        let (table, tail) = entity_of(segment)?;
        let name = tail
            .strip_prefix("/Attributes(LogicalName='")
            .and_then(|t| t.strip_suffix("')"))
            .ok_or_else(|| syntax("Only Attributes(LogicalName='…') is served by the sandbox."))?;
        let query = Query::parse_with(req, &["$select"]).map_err(from_response)?;
        let known = |p: &str| ATTRIBUTE_PROPS.iter().any(|(n, _)| *n == p);
        let select = metadata_select(query.get("$select"), &known, "AttributeMetadata")?;
        let attr = env.table(table).attr(name).ok_or_else(|| {
            error(
                StatusCode::NOT_FOUND,
                "0x80040217",
                &format!(
                    "Could not find attribute with name {name} on entity {}.",
                    table.logical_name()
                ),
            )
        })?;
        let mut body = attribute_json(table, attr, select.as_deref());
        if let Value::Object(map) = &mut body {
            map.insert(
                "@odata.context".to_owned(),
                json!(format!(
                    "{}/$metadata#EntityDefinitions('{}')/Attributes/$entity",
                    ctx.base,
                    table.metadata_id()
                )),
            );
        }
        Ok(Answer::json(StatusCode::OK, body))
    };
    match run() {
        Ok(answer) | Err(answer) => answer,
    }
}

/// The 1033 (or first) label of a `Label` object.
fn label_text(value: Option<&Value>) -> Option<String> {
    let labels = value?.get("LocalizedLabels")?.as_array()?;
    let pick = labels
        .iter()
        .find(|l| l.get("LanguageCode").and_then(Value::as_i64) == Some(1033))
        .or_else(|| labels.first())?;
    pick.get("Label")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .map(str::to_owned)
}

/// `POST EntityDefinitions(LogicalName='contact')/Attributes` with a string column.
pub(super) fn create_attribute(
    env: &mut CrmEnv,
    ctx: &Ctx,
    segment: &str,
    req: &ProviderRequest,
) -> Answer {
    let run = |env: &mut CrmEnv| -> Result<Answer, Answer> {
        let (table, _) = entity_of(segment)?;
        let body: Map<String, Value> = match serde_json::from_slice(&req.body) {
            Ok(Value::Object(map)) => map,
            _ => {
                return Err(syntax(
                    "Invalid JSON. A token was not recognized in the JSON content.",
                ));
            }
        };
        let odata_type = body
            .get("@odata.type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .trim_start_matches('#');
        if odata_type != "Microsoft.Dynamics.CRM.StringAttributeMetadata" {
            // Sandbox: only string columns can be created here.
            return Err(error(
                StatusCode::BAD_REQUEST,
                "0x80040203",
                &format!(
                    "The sandbox creates only Microsoft.Dynamics.CRM.StringAttributeMetadata columns, not '{odata_type}'."
                ),
            ));
        }
        let invalid = |message: &str| error(StatusCode::BAD_REQUEST, "0x80040203", message);
        let schema_name = body
            .get("SchemaName")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("SchemaName is required."))?
            .to_owned();
        let (prefix, rest) = schema_name.split_once('_').unwrap_or(("", ""));
        let valid_chars = schema_name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid_chars || rest.is_empty() || schema_name.len() > 50 {
            return Err(invalid(&format!(
                "Invalid schema name '{schema_name}': use letters, digits and underscores, at most 50 characters, after the publisher prefix and an underscore."
            )));
        }
        if !env.prefixes.iter().any(|p| p.eq_ignore_ascii_case(prefix)) {
            // Sandbox wording.
            return Err(invalid(&format!(
                "The schema name {schema_name} for type Attribute is not prefixed with a valid customization prefix: the publisher's prefix ({}) followed by an underscore.",
                env.prefixes.join(", ")
            )));
        }
        let display = label_text(body.get("DisplayName"))
            .ok_or_else(|| invalid("DisplayName must have a localized label."))?;
        let max_length = match body.get("MaxLength") {
            None | Some(Value::Null) => 100,
            Some(v) => v
                .as_u64()
                .filter(|n| (1..=4000).contains(n))
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| invalid("MaxLength must be between 1 and 4000."))?,
        };
        let required = body
            .get("RequiredLevel")
            .and_then(|r| r.get("Value"))
            .and_then(Value::as_str)
            .unwrap_or("None");
        if !matches!(required, "None" | "Recommended" | "ApplicationRequired") {
            return Err(invalid(&format!(
                "RequiredLevel '{required}' is not valid for a custom column."
            )));
        }
        let logical = schema_name.to_ascii_lowercase();
        if env.table(table).attr(&logical).is_some() {
            // Sandbox wording.
            return Err(error(
                StatusCode::BAD_REQUEST,
                "0x80047013",
                &format!(
                    "An attribute with the specified name {logical} already exists on entity {}.",
                    table.logical_name()
                ),
            ));
        }
        let n = env.table(table).attrs.len() as u64;
        let attr = DynAttribute {
            logical_name: logical,
            schema_name,
            attribute_type: "String".to_owned(),
            display_name: display,
            is_valid_for_create: true,
            is_valid_for_update: true,
            is_custom: true,
            max_length: Some(max_length),
            required_level: required.to_owned(),
            metadata_id: kb::guid(
                env.salt ^ 0xC057_0000,
                n + table.object_type_code() as u64 * 1000,
            ),
            options: Vec::new(),
            date_only: false,
        };
        let location = format!(
            "{}/EntityDefinitions(LogicalName='{}')/Attributes({})",
            ctx.base,
            table.logical_name(),
            attr.metadata_id
        );
        env.table_mut(table).attrs.push(attr);
        Ok(Answer::empty(StatusCode::NO_CONTENT).with("OData-EntityId", location))
    };
    match run(env) {
        Ok(answer) | Err(answer) => answer,
    }
}

//! What the sync scenarios share: a tenant with a CRM of its own (a HubSpot portal, a
//! Salesforce org, a Zoho org, a Dynamics 365 environment or a Pipedrive company no other
//! test uses), configs stored as the config API stores them, triggered runs awaited to
//! their end, and both sides' records read back in the app's field space so they can be
//! compared whole.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use conduit::domain::{ConnectionId, MappingId, SyncConfigId, SyncLogId, TenantId, UserId, now};
use conduit::sync::config::{
    ConfigStatus, Configs, FieldMapping, Frequency, SyncConfig, SyncDirection, SyncOptions,
};
use conduit::sync::conflict::{Direction, Strategy};
use conduit::sync::records::{ListQuery, Record, Records, normalise_key};
use conduit::sync::runs::{RunStatus, Runs, SyncLog};
use conduit::sync::schema::Entity;
use sandbox::oauth::{OAuthProvider, OAuthUser};
use sandbox::providers::dynamics365_crm::DynTable;
use sandbox::providers::zoho_crm::ZohoModule;
use sandbox::{CrmObject, PdObject, SfObject};
use scenarios::{Role, TestApp};
use serde_json::{Value, json};

pub const RETURN_TO: &str = "http://localhost:5173/integrations";

/// Which CRM a tenant is connected to, and its account there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Crm {
    /// A HubSpot portal.
    Hubspot(u64),
    /// A Salesforce org.
    Salesforce(String),
    /// A Zoho CRM org.
    Zoho(String),
    /// A Dynamics 365 environment (its host, `sync-N.crm.dynamics.com`).
    Dynamics(String),
    /// A Pipedrive company (its domain, `sync-pd-N` of `sync-pd-N.pipedrive.com`).
    Pipedrive(String),
}

/// A tenant with one CRM connection.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: TenantId,
    pub admin: String,
    pub conn: ConnectionId,
    pub crm: Crm,
}

impl Tenant {
    pub fn provider(&self) -> &'static str {
        match self.crm {
            Crm::Hubspot(_) => "hubspot",
            Crm::Salesforce(_) => "salesforce",
            Crm::Zoho(_) => "zoho",
            Crm::Dynamics(_) => "dynamics365",
            Crm::Pipedrive(_) => "pipedrive",
        }
    }
}

/// A number no other sync scenario of this process uses.
pub fn fresh() -> u64 {
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

/// A new tenant connected (OAuth through the dev host) to a CRM account of its own.
pub async fn connect(app: &TestApp, provider: &str) -> Tenant {
    connect_asking(app, provider, json!({})).await
}

/// Like [`connect`], with more members of the OAuth start body (`uses`, `scopes`).
pub async fn connect_asking(app: &TestApp, provider: &str, start: Value) -> Tenant {
    let tenant = app.tenant();
    let admin = app.token(&tenant, Role::Admin);
    connect_tenant(app, &tenant, admin, provider, start).await
}

/// Another CRM connection of `t`'s tenant (an account of its own there).
pub async fn connect_also(app: &TestApp, t: &Tenant, provider: &str) -> Tenant {
    connect_tenant(app, t.id.as_str(), t.admin.clone(), provider, json!({})).await
}

async fn connect_tenant(
    app: &TestApp,
    tenant: &str,
    admin: String,
    provider: &str,
    start: Value,
) -> Tenant {
    let n = fresh();
    let email = format!("sync-{provider}-{n}@sandbox.test");
    let (user, crm) = match provider {
        "hubspot" => {
            let portal = 8_700_000 + n;
            (
                OAuthUser {
                    hub_id: portal,
                    ..OAuthUser::new(OAuthProvider::Hubspot, email.clone())
                },
                Crm::Hubspot(portal),
            )
        }
        "zoho" => {
            let org = format!("{}", 760_000_000 + n);
            (
                OAuthUser {
                    org_id: org.clone(),
                    ..OAuthUser::new(OAuthProvider::Zoho, email.clone())
                },
                Crm::Zoho(org),
            )
        }
        "dynamics365" => {
            let org = format!("sync-{n}");
            let host = format!("{org}.crm.dynamics.com");
            // The environment's own contacts collection, not the dispatch actions'.
            app.sandbox().dyn_crm_serve_contacts(&host, true);
            (
                OAuthUser {
                    environment_host: host.clone(),
                    ..OAuthUser::new(OAuthProvider::Dynamics365, email.clone())
                },
                Crm::Dynamics(host),
            )
        }
        "pipedrive" => {
            let company = format!("sync-pd-{n}");
            pd_define_fields(app, &company);
            (
                OAuthUser {
                    company_domain: company.clone(),
                    company_id: 5_200_000 + n,
                    ..OAuthUser::new(OAuthProvider::Pipedrive, email.clone())
                },
                Crm::Pipedrive(company),
            )
        }
        _ => {
            let org = format!("00DSY{n:010}AAA");
            (
                OAuthUser {
                    org_id: org.clone(),
                    ..OAuthUser::new(OAuthProvider::Salesforce, email.clone())
                },
                Crm::Salesforce(org),
            )
        }
    };
    app.sandbox().add_oauth_user(user).expect("sandbox user");
    let out = app
        .oauth_connect(
            &admin,
            provider,
            {
                let mut body = start;
                body["return_to"] = json!(RETURN_TO);
                if let Crm::Dynamics(host) = &crm {
                    let org = host.split('.').next().unwrap_or_default();
                    body["fields"] = json!({"org": org, "crm_region": "crm"});
                }
                body
            },
            &format!("login_hint={email}"),
        )
        .await;
    assert_eq!(out.status, "connected", "{}", out.return_url);
    Tenant {
        id: TenantId::parse(tenant).unwrap(),
        admin,
        conn: out.connection_id.expect("connection id"),
        crm,
    }
}

pub fn mapping(entity: Entity, crm: &str, app: &str, direction: Direction) -> FieldMapping {
    FieldMapping {
        id: MappingId::generate(),
        entity,
        crm_field: crm.into(),
        app_field: app.into(),
        direction,
        transform: None,
        push_transform: None,
    }
}

/// The key field of an entity the shared scenarios sync (contacts, companies).
fn key_field(entity: Entity) -> &'static str {
    entity
        .key_field()
        .expect("the shared CRM scenarios sync entities with a key")
}

/// (CRM field, app field) pairs the scenarios sync by default.
pub fn default_pairs(provider: &str, entity: Entity) -> &'static [(&'static str, &'static str)] {
    match (provider, entity) {
        ("hubspot", Entity::Contacts) => &[
            ("email", "email"),
            ("firstname", "first_name"),
            ("lastname", "last_name"),
            ("phone", "phone"),
            ("jobtitle", "job_title"),
        ],
        ("hubspot", Entity::Companies) => &[
            ("name", "name"),
            ("domain", "domain"),
            ("city", "city"),
            ("numberofemployees", "employees"),
        ],
        ("zoho", Entity::Contacts) => &[
            ("Email", "email"),
            ("First_Name", "first_name"),
            ("Last_Name", "last_name"),
            ("Phone", "phone"),
            ("Title", "job_title"),
        ],
        ("zoho", Entity::Companies) => &[
            ("Account_Name", "name"),
            ("Website", "domain"),
            ("Billing_City", "city"),
            ("Employees", "employees"),
        ],
        // Pipedrive persons have no job title outside contact sync; organizations no
        // domain, city or head count: custom fields by name (keys: `config_field`).
        ("pipedrive", Entity::Contacts) => &[
            ("email", "email"),
            ("first_name", "first_name"),
            ("last_name", "last_name"),
            ("phone", "phone"),
        ],
        ("pipedrive", Entity::Companies) => &[
            ("name", "name"),
            ("Website", "domain"),
            ("City", "city"),
            ("Employees", "employees"),
        ],
        ("dynamics365", Entity::Contacts) => &[
            ("emailaddress1", "email"),
            ("firstname", "first_name"),
            ("lastname", "last_name"),
            ("telephone1", "phone"),
            ("jobtitle", "job_title"),
        ],
        ("dynamics365", Entity::Companies) => &[
            ("name", "name"),
            ("websiteurl", "domain"),
            ("address1_city", "city"),
            ("numberofemployees", "employees"),
        ],
        (_, Entity::Contacts) => &[
            ("Email", "email"),
            ("FirstName", "first_name"),
            ("LastName", "last_name"),
            ("Phone", "phone"),
            ("Title", "job_title"),
        ],
        (_, Entity::Companies) => &[
            ("Name", "name"),
            ("Website", "domain"),
            ("BillingCity", "city"),
            ("NumberOfEmployees", "employees"),
        ],
        ("zoho", Entity::Deals) => &[
            ("Deal_Name", "name"),
            ("Amount", "amount"),
            ("Closing_Date", "close_date"),
            ("Stage", "stage"),
            ("Account_Name", "company_id"),
            ("Contact_Name", "contact_id"),
        ],
        ("dynamics365", Entity::Deals) => &[
            ("name", "name"),
            ("estimatedvalue", "amount"),
            ("estimatedclosedate", "close_date"),
            ("salesstage", "stage"),
            ("_parentaccountid_value", "company_id"),
            ("_parentcontactid_value", "contact_id"),
        ],
        ("pipedrive", Entity::Deals) => &[
            ("title", "name"),
            ("value", "amount"),
            ("expected_close_date", "close_date"),
            ("stage_id", "stage"),
            ("org_id", "company_id"),
            ("person_id", "contact_id"),
        ],
        ("hubspot", Entity::Deals) => &[
            ("dealname", "name"),
            ("amount", "amount"),
            ("closedate", "close_date"),
            ("dealstage", "stage"),
            ("pipeline", "pipeline"),
            ("associations.companies", "company_id"),
            ("associations.contacts", "contact_id"),
        ],
        (_, Entity::Deals) => &[
            ("Name", "name"),
            ("Amount", "amount"),
            ("CloseDate", "close_date"),
            ("StageName", "stage"),
            ("AccountId", "company_id"),
            ("ContactId", "contact_id"),
        ],
    }
}

/// The CRM field an app field is synced with by default.
pub fn crm_field(provider: &str, entity: Entity, app_field: &str) -> &'static str {
    default_pairs(provider, entity)
        .iter()
        .find(|(_, a)| *a == app_field)
        .map(|(c, _)| *c)
        .expect("a mapped field")
}

/// A config of `t` (not stored yet): manual, last write wins, creating missing
/// records, not propagating deletes, the default mappings of `entities`.
pub fn new_config(t: &Tenant, direction: SyncDirection, entities: &[Entity]) -> SyncConfig {
    let at = now();
    SyncConfig {
        id: SyncConfigId::generate(),
        tenant: t.id.clone(),
        connection_id: t.conn.clone(),
        provider: t.provider().into(),
        name: format!("{} sync", t.provider()),
        direction,
        frequency: Frequency::Manual,
        entities: entities.to_vec(),
        filters: vec![],
        conflict_strategy: Strategy::LastWriteWins,
        options: SyncOptions::default(),
        status: ConfigStatus::Active,
        mappings: entities
            .iter()
            .flat_map(|e| {
                default_pairs(t.provider(), *e)
                    .iter()
                    .map(|(c, a)| mapping(*e, &config_field(t, c), a, Direction::Bidirectional))
            })
            .collect(),
        schedule_name: None,
        last_job: None,
        created_at: at,
        created_by: UserId::parse("dev-admin").unwrap(),
        updated_at: at,
        version: 1,
    }
}

/// Stores a config as the config API does.
pub async fn store(app: &TestApp, c: &SyncConfig) {
    Configs::new(app.app().table.clone())
        .insert(c)
        .await
        .unwrap();
}

/// Triggers a run over HTTP; answers the status and the body.
pub async fn trigger(app: &TestApp, t: &Tenant, config: &SyncConfigId) -> (u16, Value) {
    app.post("/v1/sync/trigger", &t.admin, json!({"config_id": config}))
        .await
}

/// Waits until every log of a started run is closed.
pub async fn wait(app: &TestApp, t: &Tenant, started: &Value) -> Vec<SyncLog> {
    let ids: Vec<SyncLogId> = started["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| SyncLogId::parse(l["id"].as_str().unwrap()).unwrap())
        .collect();
    let runs = Runs::new(app.app().table.clone());
    // Generous: fault scenarios sit out Retry-After and backoffs.
    for _ in 0..1800 {
        let mut logs = Vec::new();
        for id in &ids {
            logs.push(runs.log(&t.id, id).await.unwrap().unwrap());
        }
        if logs.iter().all(|l| l.status != RunStatus::Running) {
            return logs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // What the functions last said, for the failure message (the SDK's own debug
    // lines are too many to read).
    let logs = app.logs();
    let said: Vec<&str> = logs
        .lines()
        .filter(|l| !l.contains(r#""level":"DEBUG""#) && !l.contains(r#""level":"TRACE""#))
        .collect();
    panic!(
        "the run did not finish in time; the last log lines:\n{}",
        said[said.len().saturating_sub(20)..].join("\n")
    );
}

/// Triggers a run and waits for it to end.
pub async fn run(app: &TestApp, t: &Tenant, config: &SyncConfigId) -> Vec<SyncLog> {
    let (status, started) = trigger(app, t, config).await;
    assert_eq!(
        status,
        202,
        "{started}\n{}",
        app.logs_about("request failed")
    );
    wait(app, t, &started).await
}

/// Triggers a run and asserts every log of it completed.
pub async fn run_ok(app: &TestApp, t: &Tenant, config: &SyncConfigId) -> Vec<SyncLog> {
    let logs = run(app, t, config).await;
    for l in &logs {
        assert_eq!(l.status, RunStatus::Completed, "{l:?}");
    }
    logs
}

// ------------------------------------------------------------------- the CRM side

/// A live CRM record: its id and its set fields as text.
#[derive(Debug, Clone)]
pub struct CrmRow {
    pub id: String,
    pub values: BTreeMap<String, String>,
}

/// `n` more CRM records (made as a CRM user would, beside those there); answers the ids.
/// Only Dynamics 365's seeding replaces a table, so only it differs from [`seed`].
pub fn seed_more(app: &TestApp, t: &Tenant, entity: Entity, n: usize) -> Vec<String> {
    match &t.crm {
        Crm::Dynamics(host) => app
            .sandbox()
            .dyn_crm_seed_more(host, dyn_table(entity), n, 1),
        _ => seed(app, t, entity, n),
    }
}

/// Adds `n` realistic records; answers their CRM ids.
pub fn seed(app: &TestApp, t: &Tenant, entity: Entity, n: usize) -> Vec<String> {
    match &t.crm {
        Crm::Hubspot(portal) => app.sandbox().seed_hubspot(*portal, hs_object(entity), n),
        Crm::Salesforce(org) => app.sandbox().seed_salesforce(org, sf_object(entity), n),
        Crm::Zoho(org) => app.sandbox().seed_zoho(org, zoho_module(entity), n),
        Crm::Dynamics(host) => app
            .sandbox()
            .seed_dynamics_crm(host, dyn_table(entity), n, 1),
        Crm::Pipedrive(company) => pd_seed(app, company, entity, n),
    }
}

// ------------------------------------------------------------ Pipedrive's fields

/// Organization custom fields the Pipedrive scenarios sync (name, type).
const PD_ORG_FIELDS: [(&str, &str); 3] = [
    ("Website", "varchar"),
    ("City", "varchar"),
    ("Employees", "double"),
];

/// Pipedrive custom-field keys (per-company hashes): (company, name) → (key, type).
type PdKeys = BTreeMap<(String, String), (String, &'static str)>;

fn pd_keys() -> &'static std::sync::Mutex<PdKeys> {
    static KEYS: std::sync::OnceLock<std::sync::Mutex<PdKeys>> = std::sync::OnceLock::new();
    KEYS.get_or_init(Default::default)
}

/// Defines the organization fields in a new Pipedrive company, as its admin would.
fn pd_define_fields(app: &TestApp, company: &str) {
    for (name, kind) in PD_ORG_FIELDS {
        let key = app
            .sandbox()
            .pipedrive_define_field(company, PdObject::Organizations, name, kind)
            .expect("a custom field");
        pd_keys()
            .lock()
            .unwrap()
            .insert((company.to_owned(), name.to_owned()), (key, kind));
    }
}

/// The CRM field a config maps for `field` of the default pairs (a Pipedrive custom
/// field by its key).
pub fn config_field(t: &Tenant, field: &str) -> String {
    match &t.crm {
        Crm::Pipedrive(company) => pd_keys()
            .lock()
            .unwrap()
            .get(&(company.clone(), field.to_owned()))
            .map_or_else(|| field.to_owned(), |(key, _)| key.clone()),
        _ => field.to_owned(),
    }
}

fn pd_object(entity: Entity) -> PdObject {
    match entity {
        Entity::Contacts => PdObject::Persons,
        Entity::Companies => PdObject::Organizations,
        Entity::Deals => PdObject::Deals,
    }
}

/// A Pipedrive record's values: primary email / phone, address text, custom fields by
/// name.
fn pd_values(company: &str, data: &Value) -> BTreeMap<String, String> {
    let names: BTreeMap<String, String> = pd_keys()
        .lock()
        .unwrap()
        .iter()
        .filter(|((c, _), _)| c == company)
        .map(|((_, name), (key, _))| (key.clone(), name.clone()))
        .collect();
    let primary = |v: &Value| {
        v.as_array()?
            .iter()
            .find(|e| e["primary"] == true)
            .and_then(|e| sf_text(&e["value"]))
    };
    let mut out = BTreeMap::new();
    for (k, v) in data.as_object().into_iter().flatten() {
        match k.as_str() {
            "emails" => out.extend(primary(v).map(|e| ("email".to_owned(), e))),
            "phones" => out.extend(primary(v).map(|p| ("phone".to_owned(), p))),
            "address" => out.extend(sf_text(&v["value"]).map(|a| (k.clone(), a))),
            "custom_fields" => {
                for (key, cv) in v.as_object().into_iter().flatten() {
                    let name = names.get(key).unwrap_or(key);
                    out.extend(sf_text(cv).map(|t| (name.clone(), t)));
                }
            }
            _ => out.extend(sf_text(v).map(|t| (k.clone(), t))),
        }
    }
    out
}

/// A v2 PATCH body setting fields named as in [`pd_values`].
fn pd_changes(company: &str, fields: &[(&str, &str)]) -> Value {
    let keys = pd_keys().lock().unwrap();
    let mut body = json!({});
    for (field, value) in fields {
        match (*field, keys.get(&(company.to_owned(), (*field).to_owned()))) {
            ("email", _) => body["emails"] = json!([{"value": value, "primary": true}]),
            ("phone", _) => body["phones"] = json!([{"value": value, "primary": true}]),
            (_, Some((key, "double"))) => {
                body["custom_fields"][key] = json!(value.parse::<f64>().expect("a number"))
            }
            (_, Some((key, _))) => body["custom_fields"][key] = json!(value),
            // Ids (a deal's stage, organization, person) and a deal's value are numbers.
            (f, None) if f.ends_with("_id") || f == "value" => {
                body[f] = json!(value.parse::<u64>().expect("a number"))
            }
            (f, None) => body[f] = json!(value),
        }
    }
    body
}

/// Seeds Pipedrive records; organizations get a website, a city and a head count.
fn pd_seed(app: &TestApp, company: &str, entity: Entity, n: usize) -> Vec<String> {
    let ids = app.sandbox().seed_pipedrive(company, pd_object(entity), n);
    if entity == Entity::Companies {
        for id in &ids {
            let data = app
                .sandbox()
                .pipedrive_record(company, PdObject::Organizations, *id)
                .expect("a seeded organization")
                .data;
            let name = data["name"].as_str().unwrap_or_default();
            let site: String = name
                .to_lowercase()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
                .collect();
            let city = data["address"]["locality"].as_str().unwrap_or("Paris");
            let changes = pd_changes(
                company,
                &[
                    ("Website", &format!("{site}.example")),
                    ("City", city),
                    ("Employees", &(10 + id * 7).to_string()),
                ],
            );
            app.sandbox()
                .update_pipedrive_record(company, PdObject::Organizations, *id, &changes)
                .expect("seeded fields");
        }
    }
    ids.iter().map(u64::to_string).collect()
}

fn dyn_table(entity: Entity) -> DynTable {
    match entity {
        Entity::Contacts => DynTable::Contact,
        Entity::Companies => DynTable::Account,
        Entity::Deals => DynTable::Opportunity,
    }
}

fn zoho_module(entity: Entity) -> ZohoModule {
    match entity {
        Entity::Contacts => ZohoModule::Contacts,
        Entity::Companies => ZohoModule::Accounts,
        Entity::Deals => ZohoModule::Deals,
    }
}

fn hs_object(entity: Entity) -> CrmObject {
    match entity {
        Entity::Contacts => CrmObject::Contacts,
        Entity::Companies => CrmObject::Companies,
        Entity::Deals => CrmObject::Deals,
    }
}

fn sf_object(entity: Entity) -> SfObject {
    match entity {
        Entity::Contacts => SfObject::Contact,
        Entity::Companies => SfObject::Account,
        Entity::Deals => SfObject::Opportunity,
    }
}

fn sf_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i.to_string(),
            (None, Some(f)) if f.fract() == 0.0 => format!("{}", f as i64),
            _ => n.to_string(),
        }),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Every live (not archived or deleted) CRM record of `entity`.
pub fn crm_rows(app: &TestApp, t: &Tenant, entity: Entity) -> Vec<CrmRow> {
    match &t.crm {
        Crm::Hubspot(portal) => app
            .sandbox()
            .hubspot_records(*portal, hs_object(entity))
            .into_iter()
            .filter(|r| !r.archived)
            .map(|r| CrmRow {
                id: r.id,
                values: r
                    .properties
                    .into_iter()
                    .filter(|(_, v)| !v.is_empty())
                    .collect(),
            })
            .collect(),
        Crm::Salesforce(org) => app
            .sandbox()
            .salesforce_records(org, sf_object(entity))
            .into_iter()
            .map(|r| CrmRow {
                id: r.id,
                values: r
                    .fields
                    .iter()
                    .filter_map(|(k, v)| sf_text(v).map(|v| (k.clone(), v)))
                    .collect(),
            })
            .collect(),
        Crm::Zoho(org) => app
            .sandbox()
            .zoho_records(org, zoho_module(entity))
            .into_iter()
            .map(|r| CrmRow {
                id: r.id,
                values: r
                    .fields
                    .iter()
                    .filter_map(|(k, v)| sf_text(v).map(|v| (k.clone(), v)))
                    .collect(),
            })
            .collect(),
        Crm::Dynamics(host) => app
            .sandbox()
            .dyn_crm_records(host, dyn_table(entity))
            .into_iter()
            .map(|r| CrmRow {
                id: r.id,
                values: r
                    .values
                    .iter()
                    .filter_map(|(k, v)| sf_text(v).map(|v| (k.clone(), v)))
                    .collect(),
            })
            .collect(),
        Crm::Pipedrive(company) => app
            .sandbox()
            .pipedrive_records(company, pd_object(entity))
            .into_iter()
            .filter(|r| !r.deleted)
            .map(|r| CrmRow {
                id: r.id.to_string(),
                values: pd_values(company, &r.data),
            })
            .collect(),
    }
}

/// Changes CRM fields as a user of the CRM would.
pub fn crm_update(app: &TestApp, t: &Tenant, entity: Entity, id: &str, fields: &[(&str, &str)]) {
    match &t.crm {
        Crm::Hubspot(portal) => {
            let props = fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            let done = app
                .sandbox()
                .update_hubspot_record(*portal, hs_object(entity), id, &props);
            assert!(done.is_some(), "HubSpot record {id} updated");
        }
        Crm::Salesforce(org) => {
            let values = fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), json!(v)))
                .collect();
            let done = app
                .sandbox()
                .update_salesforce_record(org, sf_object(entity), id, &values);
            assert!(done, "Salesforce record {id} updated");
        }
        Crm::Zoho(org) => {
            let values = fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), json!(v)))
                .collect();
            let done = app
                .sandbox()
                .update_zoho_record(org, zoho_module(entity), id, &values);
            assert!(done.is_some(), "Zoho record {id} updated");
        }
        Crm::Dynamics(host) => {
            let values = fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), json!(v)))
                .collect();
            let done = app
                .sandbox()
                .dyn_crm_update(host, dyn_table(entity), id, values);
            assert!(done.is_some(), "Dynamics record {id} updated");
        }
        Crm::Pipedrive(company) => {
            let done = app.sandbox().update_pipedrive_record(
                company,
                pd_object(entity),
                id.parse().expect("a Pipedrive id"),
                &pd_changes(company, fields),
            );
            assert!(done.is_ok(), "Pipedrive record {id} updated: {done:?}");
        }
    }
}

/// Deletes (HubSpot: archives) a CRM record as a user of the CRM would.
pub fn crm_delete(app: &TestApp, t: &Tenant, entity: Entity, id: &str) {
    let done = match &t.crm {
        Crm::Hubspot(portal) => {
            app.sandbox()
                .archive_hubspot_record(*portal, hs_object(entity), id)
        }
        Crm::Salesforce(org) => app
            .sandbox()
            .delete_salesforce_record(org, sf_object(entity), id),
        Crm::Zoho(org) => app
            .sandbox()
            .delete_zoho_record(org, zoho_module(entity), id),
        Crm::Dynamics(host) => app.sandbox().dyn_crm_delete(host, dyn_table(entity), id),
        Crm::Pipedrive(company) => app.sandbox().delete_pipedrive_record(
            company,
            pd_object(entity),
            id.parse().expect("a Pipedrive id"),
        ),
    };
    assert!(done, "CRM record {id} deleted");
}

// ------------------------------------------------------------------- the app side

/// Every live (not deleted) app record of `entity`.
pub async fn app_rows(app: &TestApp, t: &Tenant, entity: Entity) -> Vec<Record> {
    let records = Records::new(app.app().table.clone());
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = records
            .list(
                &t.id,
                entity,
                &ListQuery {
                    limit: 200,
                    cursor: cursor.as_deref(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        out.extend(page.items);
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

/// Fields of the `i`th app-made record of a scenario.
pub fn app_fields(entity: Entity, i: usize) -> Value {
    match entity {
        Entity::Contacts => json!({
            "email": format!("app.person{i}@app-made.test"),
            "first_name": format!("Appfirst{i}"),
            "last_name": format!("Applast{i}"),
            "phone": format!("+1555010{i:04}"),
            "job_title": "Engineer",
        }),
        Entity::Companies => json!({
            "name": format!("App Made {i}"),
            "domain": format!("app-made-{i}.test"),
            "city": "Lyon",
            "employees": "42",
        }),
        Entity::Deals => json!({
            "name": format!("App Deal {i}"),
            "amount": format!("{}", 1000 + i),
            "close_date": "2027-03-31",
        }),
    }
}

/// Creates an app record through the records API; answers its id.
pub async fn app_create(app: &TestApp, t: &Tenant, entity: Entity, fields: Value) -> String {
    let (status, body) = app
        .post(
            &format!("/v1/records/{}", entity.as_str()),
            &t.admin,
            json!({ "fields": fields }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

/// Creates app records 0..n of a scenario; answers their ids.
pub async fn app_create_many(app: &TestApp, t: &Tenant, entity: Entity, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(app_create(app, t, entity, app_fields(entity, i)).await);
    }
    ids
}

/// Changes app record fields through the records API.
pub async fn app_update(app: &TestApp, t: &Tenant, entity: Entity, id: &str, fields: Value) {
    let (status, body) = app
        .patch(
            &format!("/v1/records/{}/{id}", entity.as_str()),
            &t.admin,
            json!({ "fields": fields }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// Soft-deletes an app record through the records API.
pub async fn app_delete(app: &TestApp, t: &Tenant, entity: Entity, id: &str) {
    let (status, body) = app
        .delete(&format!("/v1/records/{}/{id}", entity.as_str()), &t.admin)
        .await;
    assert!(status == 200 || status == 204, "{status} {body}");
}

// ------------------------------------------------------------------ comparing them

/// Records by key (email / domain), each as its synced fields in app names.
pub type View = BTreeMap<String, BTreeMap<String, String>>;

fn key_of(entity: Entity, fields: &BTreeMap<String, String>) -> String {
    let k = fields.get(key_field(entity)).cloned().unwrap_or_default();
    normalise_key(entity, &k)
}

/// The CRM's live records in app field names (default mappings, no transforms);
/// panics on two records with one key (a duplicate).
pub fn crm_view(app: &TestApp, t: &Tenant, entity: Entity) -> View {
    let pairs = default_pairs(t.provider(), entity);
    let mut out = View::new();
    let rows = crm_rows(app, t, entity);
    for row in &rows {
        let fields: BTreeMap<String, String> = pairs
            .iter()
            .filter_map(|(c, a)| row.values.get(*c).map(|v| ((*a).to_owned(), v.clone())))
            .collect();
        let key = key_of(entity, &fields);
        let before = out.insert(key.clone(), fields);
        if before.is_some() {
            let twins: Vec<&CrmRow> = rows
                .iter()
                .filter(|r| r.values.values().any(|v| normalise_key(entity, v) == key))
                .collect();
            panic!(
                "two CRM records with key {key} in {}: {twins:?}",
                t.provider()
            );
        }
    }
    out
}

/// The app's live records, their default-mapped fields only; panics on a duplicate.
pub async fn app_view(app: &TestApp, t: &Tenant, entity: Entity) -> View {
    let pairs = default_pairs(t.provider(), entity);
    let mut out = View::new();
    for r in app_rows(app, t, entity).await {
        let fields: BTreeMap<String, String> = pairs
            .iter()
            .filter_map(|(_, a)| r.fields.get(*a).map(|v| ((*a).to_owned(), v.clone())))
            .collect();
        let key = key_of(entity, &fields);
        let before = out.insert(key.clone(), fields);
        assert!(before.is_none(), "two app records with key {key}");
    }
    out
}

/// Asserts two views hold the same records with the same values, naming the first
/// difference.
pub fn assert_same(left: &View, right: &View, what: &str) {
    for (k, l) in left {
        match right.get(k) {
            Some(r) => assert_eq!(l, r, "{what}: record {k} differs"),
            None => panic!("{what}: {k} only on the left ({l:?})"),
        }
    }
    for k in right.keys() {
        assert!(left.contains_key(k), "{what}: {k} only on the right");
    }
}

/// The key of the CRM record `id` in a view.
pub fn crm_key(app: &TestApp, t: &Tenant, entity: Entity, id: &str) -> String {
    let pairs = default_pairs(t.provider(), entity);
    let key_crm = pairs
        .iter()
        .find(|(_, a)| *a == key_field(entity))
        .map(|(c, _)| *c)
        .unwrap();
    let row = crm_rows(app, t, entity)
        .into_iter()
        .find(|r| r.id == id)
        .expect("a live CRM record");
    normalise_key(entity, &row.values[key_crm])
}

/// An email as keys compare it.
pub fn normalise(email: &str) -> String {
    normalise_key(Entity::Contacts, email)
}

/// The id of the app record with key `key`.
pub async fn app_id(app: &TestApp, t: &Tenant, entity: Entity, key: &str) -> String {
    app_rows(app, t, entity)
        .await
        .into_iter()
        .find(|r| {
            r.fields
                .get(key_field(entity))
                .map(|k| normalise_key(entity, k))
                == Some(key.to_owned())
        })
        .map(|r| r.id.to_string())
        .expect("an app record with that key")
}

fn set(view: &mut View, key: &str, field: &str, value: &str) {
    view.get_mut(key)
        .unwrap_or_else(|| panic!("{key} in the view"))
        .insert(field.to_owned(), value.to_owned());
}

/// A field a scenario edits on either side (not the key).
pub fn edited_field(entity: Entity) -> &'static str {
    match entity {
        Entity::Contacts => "first_name",
        Entity::Companies => "city",
        Entity::Deals => "name",
    }
}

// --------------------------------------------------------------------- scenarios

/// Pull, push and bidirectional configs side by side, each on a tenant of its own.
pub async fn all_directions(app: &TestApp, provider: &str, entity: Entity) {
    tokio::join!(
        directions(app, provider, entity, SyncDirection::Pull),
        directions(app, provider, entity, SyncDirection::Push),
        directions(app, provider, entity, SyncDirection::Bidirectional),
    );
}

/// Each strategy side by side, each on a tenant of its own.
pub async fn all_conflicts(app: &TestApp, provider: &str, strategies: &[Strategy]) {
    futures::future::join_all(strategies.iter().map(|s| conflicts(app, provider, *s))).await;
}

/// Deletes propagated and not, side by side.
pub async fn both_deletes(app: &TestApp, provider: &str, entity: Entity) {
    tokio::join!(
        deletes(app, provider, entity, true),
        deletes(app, provider, entity, false),
    );
}

/// Pull, push or both between 20 CRM records and 3 app records: the first run brings
/// each side what the direction says (and nothing else), a second carries one edit on
/// each side the same way.
pub async fn directions(app: &TestApp, provider: &str, entity: Entity, direction: SyncDirection) {
    let t = connect(app, provider).await;
    let seeded = seed(app, &t, entity, 20);
    let mine = app_create_many(app, &t, entity, 3).await;
    let crm_before = crm_view(app, &t, entity);
    let app_before = app_view(app, &t, entity).await;
    assert_eq!((crm_before.len(), app_before.len()), (20, 3));
    let c = new_config(&t, direction, &[entity]);
    store(app, &c).await;

    let logs = run_ok(app, &t, &c.id).await;
    let mut union = crm_before.clone();
    union.extend(app_before.clone());
    let (mut want_app, mut want_crm) = match direction {
        SyncDirection::Pull => (union.clone(), crm_before.clone()),
        SyncDirection::Push => (app_before.clone(), union.clone()),
        SyncDirection::Bidirectional => (union.clone(), union.clone()),
    };
    assert_same(
        &app_view(app, &t, entity).await,
        &want_app,
        "app after the first run",
    );
    assert_same(
        &crm_view(app, &t, entity),
        &want_crm,
        "CRM after the first run",
    );
    let created = match direction {
        SyncDirection::Pull => 20,
        SyncDirection::Push => 3,
        SyncDirection::Bidirectional => 23,
    };
    assert_eq!(logs[0].counts["created"], created, "{:?}", logs[0].counts);
    assert_eq!(logs[0].counts["failed"], 0, "{:?}", logs[0].counts);

    // One edit on each side.
    let field = edited_field(entity);
    let crm_changed = crm_key(app, &t, entity, &seeded[0]);
    let app_changed = app_view(app, &t, entity)
        .await
        .into_keys()
        .find(|k| app_before.contains_key(k))
        .unwrap();
    let app_changed_id = app_id(app, &t, entity, &app_changed).await;
    assert!(mine.contains(&app_changed_id));
    crm_update(
        app,
        &t,
        entity,
        &seeded[0],
        &[(crm_field(provider, entity, field), "Crmchanged")],
    );
    app_update(
        app,
        &t,
        entity,
        &app_changed_id,
        json!({ field: "Appchanged" }),
    )
    .await;
    set(&mut want_crm, &crm_changed, field, "Crmchanged");
    set(&mut want_app, &app_changed, field, "Appchanged");
    if direction.pulls() {
        set(&mut want_app, &crm_changed, field, "Crmchanged");
    }
    if direction.pushes() {
        set(&mut want_crm, &app_changed, field, "Appchanged");
    }
    run_ok(app, &t, &c.id).await;
    assert_same(
        &app_view(app, &t, entity).await,
        &want_app,
        "app after the edits",
    );
    assert_same(&crm_view(app, &t, entity), &want_crm, "CRM after the edits");
}

/// A bidirectional sync, then a CRM-side delete and an app-side (soft) delete: each
/// reaches the other side only when the config propagates deletes, and nothing comes
/// back on a later run.
pub async fn deletes(app: &TestApp, provider: &str, entity: Entity, propagate: bool) {
    let t = connect(app, provider).await;
    deletes_of(app, &t, entity, propagate).await;
}

/// [`deletes`] for a tenant already connected (a grant of its own).
pub async fn deletes_of(app: &TestApp, t: &Tenant, entity: Entity, propagate: bool) {
    let t = t.clone();
    let seeded = seed(app, &t, entity, 6);
    let mine = app_create_many(app, &t, entity, 2).await;
    let mut c = new_config(&t, SyncDirection::Bidirectional, &[entity]);
    c.options.propagate_deletes = propagate;
    store(app, &c).await;
    run_ok(app, &t, &c.id).await;
    let synced = crm_view(app, &t, entity);
    assert_eq!(synced.len(), 8);
    assert_same(
        &app_view(app, &t, entity).await,
        &synced,
        "after the first run",
    );

    let crm_gone = crm_key(app, &t, entity, &seeded[0]);
    crm_delete(app, &t, entity, &seeded[0]);
    let app_gone = app_fields(entity, 0)[key_field(entity)]
        .as_str()
        .map(|k| normalise_key(entity, k))
        .unwrap();
    assert_eq!(app_id(app, &t, entity, &app_gone).await, mine[0]);
    app_delete(app, &t, entity, &mine[0]).await;

    let mut want_app = synced.clone();
    let mut want_crm = synced.clone();
    want_app.remove(&app_gone);
    want_crm.remove(&crm_gone);
    if propagate {
        want_app.remove(&crm_gone);
        want_crm.remove(&app_gone);
    }
    let logs = run_ok(app, &t, &c.id).await;
    assert_same(
        &app_view(app, &t, entity).await,
        &want_app,
        "app after the deletes",
    );
    assert_same(
        &crm_view(app, &t, entity),
        &want_crm,
        "CRM after the deletes",
    );
    let deleted = logs[0].counts["deleted"];
    assert_eq!(
        deleted,
        if propagate { 2 } else { 0 },
        "{:?}",
        logs[0].counts
    );

    run_ok(app, &t, &c.id).await;
    assert_same(
        &app_view(app, &t, entity).await,
        &want_app,
        "app after a rerun",
    );
    assert_same(&crm_view(app, &t, entity), &want_crm, "CRM after a rerun");
}

/// A bidirectional contacts sync under `strategy`: one record's first name changed on
/// both sides (the CRM last), another's changed on both (the app last), and fields
/// changed on one side only, which always flow.
pub async fn conflicts(app: &TestApp, provider: &str, strategy: Strategy) {
    let entity = Entity::Contacts;
    let t = connect(app, provider).await;
    let seeded = seed(app, &t, entity, 4);
    let mut c = new_config(&t, SyncDirection::Bidirectional, &[entity]);
    c.conflict_strategy = strategy;
    store(app, &c).await;
    run_ok(app, &t, &c.id).await;
    let synced = crm_view(app, &t, entity);
    assert_same(
        &app_view(app, &t, entity).await,
        &synced,
        "after the first run",
    );

    let first = crm_field(provider, entity, "first_name");
    let phone = crm_field(provider, entity, "phone");
    let (a, b) = (
        crm_key(app, &t, entity, &seeded[0]),
        crm_key(app, &t, entity, &seeded[1]),
    );
    let (a_id, b_id) = (
        app_id(app, &t, entity, &a).await,
        app_id(app, &t, entity, &b).await,
    );
    // b: the CRM first, then the app. a: the app first, then the CRM. The pauses keep
    // the two sides' modification times apart (Zoho and Pipedrive keep whole seconds).
    let pause = Duration::from_millis(match provider {
        "zoho" | "pipedrive" => 1_100,
        _ => 30,
    });
    crm_update(app, &t, entity, &seeded[1], &[(first, "Crmfirst1")]);
    tokio::time::sleep(pause).await;
    app_update(
        app,
        &t,
        entity,
        &a_id,
        json!({"first_name": "Appfirst0", "last_name": "Applast0"}),
    )
    .await;
    app_update(app, &t, entity, &b_id, json!({"first_name": "Appfirst1"})).await;
    tokio::time::sleep(pause).await;
    crm_update(
        app,
        &t,
        entity,
        &seeded[0],
        &[(first, "Crmfirst0"), (phone, "+15559990000")],
    );

    let logs = run(app, &t, &c.id).await;
    assert_eq!(logs[0].status, RunStatus::Completed, "{:?}", logs[0]);
    let mut want_app = synced.clone();
    set(&mut want_app, &a, "last_name", "Applast0");
    set(&mut want_app, &a, "phone", "+15559990000");
    let mut want_crm = want_app.clone();
    let (a_app, a_crm, b_app, b_crm) = match strategy {
        Strategy::CrmWins => ("Crmfirst0", "Crmfirst0", "Crmfirst1", "Crmfirst1"),
        Strategy::AppWins => ("Appfirst0", "Appfirst0", "Appfirst1", "Appfirst1"),
        Strategy::LastWriteWins => ("Crmfirst0", "Crmfirst0", "Appfirst1", "Appfirst1"),
        Strategy::ManualReview => ("Appfirst0", "Crmfirst0", "Appfirst1", "Crmfirst1"),
    };
    set(&mut want_app, &a, "first_name", a_app);
    set(&mut want_crm, &a, "first_name", a_crm);
    set(&mut want_app, &b, "first_name", b_app);
    set(&mut want_crm, &b, "first_name", b_crm);
    assert_same(
        &app_view(app, &t, entity).await,
        &want_app,
        "app after the conflicts",
    );
    assert_same(
        &crm_view(app, &t, entity),
        &want_crm,
        "CRM after the conflicts",
    );

    let stored = Runs::new(app.app().table.clone())
        .conflicts(&t.id)
        .await
        .unwrap();
    if strategy != Strategy::ManualReview {
        assert!(stored.is_empty(), "{stored:?}");
        assert_eq!(
            logs[0].counts["conflicts_resolved"], 2,
            "{:?}",
            logs[0].counts
        );
        return;
    }
    assert_eq!(stored.len(), 2, "{stored:?}");
    for (id, app_value, crm_value) in [(&a_id, a_app, a_crm), (&b_id, b_app, b_crm)] {
        let conflict = stored
            .iter()
            .find(|s| s.record_id.as_str() == id)
            .expect("a conflict per record");
        assert_eq!(conflict.status, "open");
        assert_eq!(conflict.fields.len(), 1, "{conflict:?}");
        assert_eq!(conflict.fields[0].field, "first_name");
        assert_eq!(conflict.fields[0].app.as_deref(), Some(app_value));
        assert_eq!(conflict.fields[0].crm.as_deref(), Some(crm_value));
    }
    // The fields stay frozen on both sides run after run; no second conflict appears.
    run_ok(app, &t, &c.id).await;
    assert_same(
        &app_view(app, &t, entity).await,
        &want_app,
        "app after a rerun",
    );
    assert_same(&crm_view(app, &t, entity), &want_crm, "CRM after a rerun");
    let again = Runs::new(app.app().table.clone())
        .conflicts(&t.id)
        .await
        .unwrap();
    assert_eq!(again.len(), 2, "{again:?}");
}

//! Deals and their associations, end to end against the CRM stand-ins: a deal made in
//! the app reaches the CRM with its company and contact (as the CRM's own ids), a stage
//! and an association changed in the CRM come back as app ids, deletes follow both
//! ways; a deal whose company is not linked yet ends as a record error and goes
//! through once it is (push) or pulls that company first (pull); a stage the value map
//! does not know is a record error naming the CRM's refusal; a deals config needs the
//! deal scopes, and a CRM without deals refuses them.

use conduit::sync::config::{Filter, FilterOp, SyncConfig, SyncDirection};
use conduit::sync::conflict::Direction;
use conduit::sync::runs::{RunStatus, Runs, SyncLog};
use conduit::sync::schema::Entity;
use sandbox::CrmObject;
use scenarios::TestApp;
use serde_json::{Value, json};

use crate::sync_support::{self as s, Crm, Tenant};

/// App stages ↔ HubSpot's default pipeline stages (the value map: pull, push).
const HS_STAGES: (&str, &str) = (
    r#"map({"appointmentscheduled": "new", "qualifiedtobuy": "qualified", "closedwon": "won", "closedlost": "lost"})"#,
    r#"map({"new": "appointmentscheduled", "qualified": "qualifiedtobuy", "won": "closedwon", "lost": "closedlost"})"#,
);

/// A tenant connected to `provider` for contacts, companies and deals.
async fn connect_deals(app: &TestApp, provider: &str) -> Tenant {
    s::connect_asking(
        app,
        provider,
        json!({"uses": [
            "sync:contacts:bidirectional",
            "sync:companies:bidirectional",
            "sync:deals:bidirectional",
        ]}),
    )
    .await
}

async fn hubspot(app: &TestApp) -> (Tenant, u64) {
    let t = connect_deals(app, "hubspot").await;
    let Crm::Hubspot(portal) = t.crm else {
        unreachable!()
    };
    (t, portal)
}

/// A bidirectional config of contacts, companies and deals, stages through the value
/// map (`(pull, push)`), deletes propagated.
fn deals_config(t: &Tenant, (pull, push): (&str, &str)) -> SyncConfig {
    let mut c = s::new_config(
        t,
        SyncDirection::Bidirectional,
        &[Entity::Contacts, Entity::Companies, Entity::Deals],
    );
    c.options.propagate_deletes = true;
    for m in c.mappings.iter_mut() {
        if m.entity == Entity::Deals && m.app_field == "stage" {
            m.transform = Some(pull.into());
            m.push_transform = Some(push.into());
        }
    }
    c
}

/// The app side of a deal round trip, stored: a company, a person, their deal at stage
/// "qualified" (with `extra` fields), a second deal at a stage no value map knows, and
/// [`deals_config`].
struct Setup {
    t: Tenant,
    company: String,
    person: String,
    deal: String,
    odd: String,
    config: SyncConfig,
}

async fn setup(app: &TestApp, t: Tenant, stages: (&str, &str), extra: Value) -> Setup {
    let company = s::app_create(
        app,
        &t,
        Entity::Companies,
        s::app_fields(Entity::Companies, 0),
    )
    .await;
    let person = s::app_create(
        app,
        &t,
        Entity::Contacts,
        s::app_fields(Entity::Contacts, 0),
    )
    .await;
    let mut fields = s::app_fields(Entity::Deals, 0);
    fields["stage"] = json!("qualified");
    fields["company_id"] = json!(company);
    fields["contact_id"] = json!(person);
    if let (Some(fields), Value::Object(extra)) = (fields.as_object_mut(), extra) {
        fields.extend(extra);
    }
    let deal = s::app_create(app, &t, Entity::Deals, fields).await;
    let mut odd = s::app_fields(Entity::Deals, 1);
    odd["stage"] = json!("negotiation");
    let odd = s::app_create(app, &t, Entity::Deals, odd).await;
    let config = deals_config(&t, stages);
    s::store(app, &config).await;
    Setup {
        t,
        company,
        person,
        deal,
        odd,
        config,
    }
}

/// Retries a run's failed records (`/v1/sync/logs/{id}/retry`); the retry completes.
async fn retry_completes(app: &TestApp, t: &Tenant, log: &SyncLog) {
    let (status, retried) = app
        .post(
            &format!("/v1/sync/logs/{}/retry", log.id),
            &t.admin,
            json!({}),
        )
        .await;
    assert_eq!(status, 202, "{retried}");
    let logs = s::wait(app, t, &retried).await;
    assert_eq!(logs[0].status, RunStatus::Completed, "{logs:?}");
}

/// Companies synced only from Lyon.
fn lyon_only(config: &mut SyncConfig) {
    config.filters.push(Filter {
        entity: Entity::Companies,
        field: "city".into(),
        operator: FilterOp::Eq,
        value: Some("Lyon".into()),
        values: vec![],
    });
}

/// The deals log of a run is partial with one record error: company `company`, `why`.
async fn deal_waits_for_company(
    app: &TestApp,
    t: &Tenant,
    logs: &[SyncLog],
    company: &str,
    why: &str,
) -> SyncLog {
    let deals_log = log_of(logs, Entity::Deals).clone();
    assert_eq!(deals_log.status, RunStatus::Partial, "{deals_log:?}");
    let messages = errors(app, t, &deals_log).await;
    assert!(
        messages.len() == 1
            && messages[0].contains("company_id")
            && messages[0].contains(company)
            && messages[0].contains(why),
        "{messages:?}"
    );
    deals_log
}

fn log_of(logs: &[SyncLog], entity: Entity) -> &SyncLog {
    logs.iter().find(|l| l.entity == entity).expect("a log")
}

async fn errors(app: &TestApp, t: &Tenant, log: &SyncLog) -> Vec<String> {
    Runs::new(app.app().table.clone())
        .errors(&t.id, &log.id)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.message)
        .collect()
}

/// The HubSpot id of the live record whose `field` is `value`.
fn hs_id(app: &TestApp, t: &Tenant, entity: Entity, field: &str, value: &str) -> String {
    s::crm_rows(app, t, entity)
        .into_iter()
        .find(|r| r.values.get(field).map(String::as_str) == Some(value))
        .unwrap_or_else(|| panic!("a HubSpot {entity} with {field} {value}"))
        .id
}

async fn app_deal(app: &TestApp, t: &Tenant, id: &str) -> Option<Value> {
    s::app_rows(app, t, Entity::Deals)
        .await
        .into_iter()
        .find(|r| r.id.as_str() == id)
        .map(|r| json!(r.fields))
}

#[tokio::test]
async fn hubspot_deals_round_trip_with_their_company_and_contact() {
    let app = TestApp::spawn().await;
    let (t, portal) = hubspot(&app).await;
    // The second deal's stage the value map does not know reaches HubSpot unchanged and
    // is refused there, as any other enumeration value: a record error, the rest goes on.
    let Setup {
        t,
        person,
        deal,
        odd,
        config,
        ..
    } = setup(&app, t, HS_STAGES, json!({"pipeline": "default"})).await;

    let logs = s::run(&app, &t, &config.id).await;
    for e in [Entity::Contacts, Entity::Companies] {
        assert_eq!(log_of(&logs, e).status, RunStatus::Completed, "{logs:?}");
    }
    let deals_log = log_of(&logs, Entity::Deals);
    assert_eq!(deals_log.status, RunStatus::Partial, "{deals_log:?}");
    assert_eq!(deals_log.counts["failed"], 1, "{deals_log:?}");
    let messages = errors(&app, &t, deals_log).await;
    assert!(
        messages.len() == 1
            && messages[0].contains("dealstage")
            && messages[0].contains("negotiation"),
        "{messages:?}"
    );
    assert!(
        s::crm_rows(&app, &t, Entity::Deals).iter().all(|r| r
            .values
            .get("dealname")
            .map(String::as_str)
            != Some("App Deal 1"))
    );
    // Failed creates are tried again by every run (as for any entity): away with it.
    s::app_delete(&app, &t, Entity::Deals, &odd).await;

    // In HubSpot: the deal, its stage through the map, its company and contact by their
    // HubSpot ids.
    let hs_deal = hs_id(&app, &t, Entity::Deals, "dealname", "App Deal 0");
    let row = s::crm_rows(&app, &t, Entity::Deals)
        .into_iter()
        .find(|r| r.id == hs_deal)
        .unwrap();
    assert_eq!(row.values["dealstage"], "qualifiedtobuy");
    assert_eq!(row.values["pipeline"], "default");
    assert_eq!(row.values["amount"], "1000");
    let hs_company = hs_id(&app, &t, Entity::Companies, "domain", "app-made-0.test");
    let hs_person = hs_id(
        &app,
        &t,
        Entity::Contacts,
        "email",
        "app.person0@app-made.test",
    );
    assert_eq!(
        app.sandbox()
            .hubspot_deal_associations(portal, &hs_deal, CrmObject::Companies),
        [hs_company]
    );
    assert_eq!(
        app.sandbox()
            .hubspot_deal_associations(portal, &hs_deal, CrmObject::Contacts),
        [hs_person]
    );

    // In HubSpot: the deal is won, and moves to a company the app has never seen.
    let new_company = s::seed(&app, &t, Entity::Companies, 1).remove(0);
    let new_domain = s::crm_rows(&app, &t, Entity::Companies)
        .into_iter()
        .find(|r| r.id == new_company)
        .unwrap()
        .values["domain"]
        .clone();
    s::crm_update(
        &app,
        &t,
        Entity::Deals,
        &hs_deal,
        &[("dealstage", "closedwon")],
    );
    app.sandbox().hubspot_set_deal_association(
        portal,
        &hs_deal,
        CrmObject::Companies,
        &new_company,
    );
    // Only the deals run: the new company is pulled first, for the deal's sake.
    let (status, started) = app
        .post(
            "/v1/sync/trigger",
            &t.admin,
            json!({"config_id": config.id, "entities": ["deals"]}),
        )
        .await;
    assert_eq!(status, 202, "{started}");
    let logs = s::wait(&app, &t, &started).await;
    assert_eq!(
        logs[0].status,
        RunStatus::Completed,
        "{logs:?} {:?}",
        errors(&app, &t, &logs[0]).await
    );
    let new_app_company = s::app_id(&app, &t, Entity::Companies, &new_domain).await;
    let pulled = app_deal(&app, &t, &deal).await.expect("the deal");
    assert_eq!(pulled["stage"], "won", "{pulled}");
    assert_eq!(pulled["company_id"], json!(new_app_company), "{pulled}");
    assert_eq!(pulled["contact_id"], json!(person), "{pulled}");

    // In the app: the contact is cleared and the deal renamed; HubSpot follows.
    s::app_update(
        &app,
        &t,
        Entity::Deals,
        &deal,
        json!({"name": "Renamed deal", "contact_id": null}),
    )
    .await;
    let logs = s::run(&app, &t, &config.id).await;
    assert_eq!(log_of(&logs, Entity::Deals).counts["failed"], 0, "{logs:?}");
    let row = s::crm_rows(&app, &t, Entity::Deals)
        .into_iter()
        .find(|r| r.id == hs_deal)
        .unwrap();
    assert_eq!(row.values["dealname"], "Renamed deal");
    assert!(
        app.sandbox()
            .hubspot_deal_associations(portal, &hs_deal, CrmObject::Contacts)
            .is_empty()
    );
    assert_eq!(
        app.sandbox()
            .hubspot_deal_associations(portal, &hs_deal, CrmObject::Companies),
        [new_company],
        "the company is kept"
    );

    // Deletes, both ways.
    s::app_delete(&app, &t, Entity::Deals, &deal).await;
    let in_crm = s::seed(&app, &t, Entity::Deals, 1).remove(0);
    s::run(&app, &t, &config.id).await;
    assert!(
        s::crm_rows(&app, &t, Entity::Deals)
            .iter()
            .all(|r| r.id != hs_deal)
    );
    let pulled: Vec<_> = s::app_rows(&app, &t, Entity::Deals).await;
    let seeded = pulled
        .iter()
        .find(|r| r.fields.get("name").is_some_and(|n| n.starts_with("Deal ")))
        .expect("the CRM-made deal pulled")
        .id
        .to_string();
    s::crm_delete(&app, &t, Entity::Deals, &in_crm);
    s::run(&app, &t, &config.id).await;
    assert!(
        app_deal(&app, &t, &seeded).await.is_none(),
        "deleted in the app too"
    );
}

#[tokio::test]
async fn hubspot_deals_wait_for_their_company_to_be_linked() {
    let app = TestApp::spawn().await;
    let (t, portal) = hubspot(&app).await;
    // Companies are pushed only from Lyon: this one is not, so its deal cannot name it.
    let mut far = s::app_fields(Entity::Companies, 0);
    far["city"] = json!("Paris");
    let company = s::app_create(&app, &t, Entity::Companies, far).await;
    let mut fields = s::app_fields(Entity::Deals, 0);
    fields["stage"] = json!("new");
    fields["company_id"] = json!(company);
    let deal = s::app_create(&app, &t, Entity::Deals, fields).await;
    let mut config = deals_config(&t, HS_STAGES);
    config.direction = SyncDirection::Push;
    lyon_only(&mut config);
    s::store(&app, &config).await;
    let logs = s::run(&app, &t, &config.id).await;
    let deals_log = deal_waits_for_company(&app, &t, &logs, &company, "not linked").await;
    assert!(
        s::crm_rows(&app, &t, Entity::Deals).is_empty(),
        "nothing written without its company"
    );

    // The company moves to Lyon and is pushed; the deal's retry then goes through.
    s::app_update(
        &app,
        &t,
        Entity::Companies,
        &company,
        json!({"city": "Lyon"}),
    )
    .await;
    s::run_ok(&app, &t, &config.id).await;
    retry_completes(&app, &t, &deals_log).await;
    let hs_deal = hs_id(&app, &t, Entity::Deals, "dealname", "App Deal 0");
    let hs_company = hs_id(&app, &t, Entity::Companies, "domain", "app-made-0.test");
    assert_eq!(
        app.sandbox()
            .hubspot_deal_associations(portal, &hs_deal, CrmObject::Companies),
        [hs_company]
    );
    let _ = deal;
}

#[tokio::test]
async fn hubspot_deals_whose_company_cannot_be_pulled_are_set_aside_not_mislinked() {
    let app = TestApp::spawn().await;
    let (t, portal) = hubspot(&app).await;
    // A company the config's filters leave out, and a deal of it.
    let company = s::seed(&app, &t, Entity::Companies, 1).remove(0);
    s::crm_update(&app, &t, Entity::Companies, &company, &[("city", "Paris")]);
    let deal = s::seed(&app, &t, Entity::Deals, 1).remove(0);
    app.sandbox()
        .hubspot_set_deal_association(portal, &deal, CrmObject::Companies, &company);
    let mut config = deals_config(&t, HS_STAGES);
    config.direction = SyncDirection::Pull;
    lyon_only(&mut config);
    s::store(&app, &config).await;
    let logs = s::run(&app, &t, &config.id).await;
    let deals_log = deal_waits_for_company(&app, &t, &logs, &company, "filters").await;
    assert!(
        s::app_rows(&app, &t, Entity::Deals).await.is_empty(),
        "the deal is not written without its company"
    );
    assert!(s::app_rows(&app, &t, Entity::Companies).await.is_empty());

    // The company moves to Lyon: the next run pulls it, the retry brings the deal.
    s::crm_update(&app, &t, Entity::Companies, &company, &[("city", "Lyon")]);
    s::run_ok(&app, &t, &config.id).await;
    retry_completes(&app, &t, &deals_log).await;
    let key = s::crm_key(&app, &t, Entity::Companies, &company);
    let app_company = s::app_id(&app, &t, Entity::Companies, &key).await;
    let deals = s::app_rows(&app, &t, Entity::Deals).await;
    assert_eq!(deals.len(), 1);
    assert_eq!(deals[0].fields.get("company_id"), Some(&app_company));
}

/// How one CRM shows a deal round trip ([`round_trip`]).
struct RoundTrip {
    /// The CRM connected.
    provider: &'static str,
    /// CRM stage → app stage, and back (the value maps: pull, push).
    stages: (&'static str, &'static str),
    /// What the record error of a stage the map does not know says.
    odd_stage_error: &'static [&'static str],
    /// (CRM field, value) finding the pushed company and contact.
    company_by: (&'static str, &'static str),
    contact_by: (&'static str, &'static str),
    /// The deal's name, company and contact fields in the CRM.
    name: &'static str,
    company: &'static str,
    contact: &'static str,
    /// CRM values the pushed deal has besides its associations.
    pushed: &'static [(&'static str, &'static str)],
    /// A CRM stage a CRM user moves the deal to (field, value) and its app stage.
    crm_stage: (&'static str, &'static str, &'static str),
    /// How deals seeded in the CRM are named.
    seeded_prefix: &'static str,
    /// Whether the CRM lets a deal's contact be cleared after its creation.
    contact_clearable: bool,
}

/// A deal made in the app reaches the CRM with its company and contact; a stage and a
/// company changed in the CRM (one the app has never seen) come back as app ids; the
/// company changed back (and the contact cleared, where the CRM allows it) in the app
/// reach the CRM; deletes go both ways. A second deal whose stage the value map does not
/// know is a record error.
async fn round_trip(rt: RoundTrip) {
    let app = TestApp::spawn().await;
    let t = connect_deals(&app, rt.provider).await;
    let Setup {
        t,
        company,
        person,
        deal,
        odd,
        config,
    } = setup(&app, t, rt.stages, json!({})).await;
    let logs = s::run(&app, &t, &config.id).await;
    for e in [Entity::Contacts, Entity::Companies] {
        assert_eq!(log_of(&logs, e).status, RunStatus::Completed, "{logs:?}");
    }
    let messages = errors(&app, &t, log_of(&logs, Entity::Deals)).await;
    assert!(
        messages.len() == 1 && rt.odd_stage_error.iter().all(|m| messages[0].contains(m)),
        "{messages:?}"
    );
    s::app_delete(&app, &t, Entity::Deals, &odd).await;
    let crm_company = hs_id(
        &app,
        &t,
        Entity::Companies,
        rt.company_by.0,
        rt.company_by.1,
    );
    let crm_contact = hs_id(&app, &t, Entity::Contacts, rt.contact_by.0, rt.contact_by.1);
    let crm_deal = hs_id(&app, &t, Entity::Deals, rt.name, "App Deal 0");
    let row = s::crm_rows(&app, &t, Entity::Deals)
        .into_iter()
        .find(|r| r.id == crm_deal)
        .unwrap();
    for (field, value) in rt.pushed {
        assert_eq!(row.values[*field], *value, "{field}: {:?}", row.values);
    }
    assert_eq!(row.values[rt.company], crm_company);
    assert_eq!(row.values[rt.contact], crm_contact);

    // In the CRM: another stage, and a company the app has never seen.
    let other = s::seed_more(&app, &t, Entity::Companies, 1).remove(0);
    let other_key = s::crm_key(&app, &t, Entity::Companies, &other);
    let (stage_field, crm_stage, app_stage) = rt.crm_stage;
    s::crm_update(
        &app,
        &t,
        Entity::Deals,
        &crm_deal,
        &[(stage_field, crm_stage), (rt.company, &other)],
    );
    let (status, started) = app
        .post(
            "/v1/sync/trigger",
            &t.admin,
            json!({"config_id": config.id, "entities": ["deals"]}),
        )
        .await;
    assert_eq!(status, 202, "{started}");
    let logs = s::wait(&app, &t, &started).await;
    assert_eq!(
        logs[0].status,
        RunStatus::Completed,
        "{logs:?} {:?}",
        errors(&app, &t, &logs[0]).await
    );
    let other_app = s::app_id(&app, &t, Entity::Companies, &other_key).await;
    let pulled = app_deal(&app, &t, &deal).await.expect("the deal");
    assert_eq!(pulled["stage"], app_stage, "{pulled}");
    assert_eq!(pulled["company_id"], json!(other_app), "{pulled}");
    assert_eq!(pulled["contact_id"], json!(person), "{pulled}");

    // In the app: back to the first company (the contact cleared where the CRM allows
    // it); the CRM follows.
    let mut change = json!({"company_id": company});
    if rt.contact_clearable {
        change["contact_id"] = Value::Null;
    }
    s::app_update(&app, &t, Entity::Deals, &deal, change).await;
    s::run_ok(&app, &t, &config.id).await;
    let row = s::crm_rows(&app, &t, Entity::Deals)
        .into_iter()
        .find(|r| r.id == crm_deal)
        .unwrap();
    assert_eq!(row.values[rt.company], crm_company);
    assert_eq!(
        row.values.get(rt.contact),
        (!rt.contact_clearable).then_some(&crm_contact),
        "{:?}",
        row.values
    );

    // Deletes, both ways.
    s::app_delete(&app, &t, Entity::Deals, &deal).await;
    s::run(&app, &t, &config.id).await;
    assert!(
        s::crm_rows(&app, &t, Entity::Deals)
            .iter()
            .all(|r| r.id != crm_deal)
    );
    let in_crm = s::seed_more(&app, &t, Entity::Deals, 1).remove(0);
    s::run(&app, &t, &config.id).await;
    let seeded = s::app_rows(&app, &t, Entity::Deals)
        .await
        .into_iter()
        .find(|r| {
            r.deleted_at.is_none()
                && r.fields
                    .get("name")
                    .is_some_and(|n| n.starts_with(rt.seeded_prefix))
        })
        .expect("the CRM-made deal pulled")
        .id
        .to_string();
    s::crm_delete(&app, &t, Entity::Deals, &in_crm);
    s::run(&app, &t, &config.id).await;
    assert!(
        app_deal(&app, &t, &seeded).await.is_none(),
        "deleted in the app too"
    );
}

/// Pipedrive: stage ids of its default pipeline (Qualified, Contact Made, Proposal
/// Made); a stage name is not an id, refused before the write; the marker is a deal
/// custom field.
#[tokio::test]
async fn pipedrive_deals_round_trip_with_their_organization_and_person() {
    round_trip(RoundTrip {
        provider: "pipedrive",
        stages: (
            r#"map({"1": "new", "2": "qualified", "4": "proposal"})"#,
            r#"map({"new": "1", "qualified": "2", "proposal": "4"})"#,
        ),
        odd_stage_error: &["stage_id", "negotiation"],
        company_by: ("name", "App Made 0"),
        contact_by: ("email", "app.person0@app-made.test"),
        name: "title",
        company: "org_id",
        contact: "person_id",
        pushed: &[
            ("stage_id", "2"),
            ("pipeline_id", "1"),
            ("value", "1000"),
            ("expected_close_date", "2027-03-31"),
        ],
        crm_stage: ("stage_id", "4", "proposal"),
        seeded_prefix: "Deal ",
        contact_clearable: true,
    })
    .await;
}

/// Zoho: `Account_Name` / `Contact_Name` lookups, the `Stage` picklist (a value it does
/// not list is Zoho's INVALID_DATA).
#[tokio::test]
async fn zoho_deals_round_trip_with_their_account_and_contact() {
    round_trip(RoundTrip {
        provider: "zoho",
        stages: (
            r#"map({"Qualification": "new", "Needs Analysis": "qualified", "Closed Won": "won", "Closed Lost": "lost"})"#,
            r#"map({"new": "Qualification", "qualified": "Needs Analysis", "won": "Closed Won", "lost": "Closed Lost"})"#,
        ),
        odd_stage_error: &["INVALID_DATA", "Stage"],
        company_by: ("Account_Name", "App Made 0"),
        contact_by: ("Email", "app.person0@app-made.test"),
        name: "Deal_Name",
        company: "Account_Name",
        contact: "Contact_Name",
        pushed: &[
            ("Stage", "Needs Analysis"),
            ("Amount", "1000"),
            ("Closing_Date", "2027-03-31"),
        ],
        crm_stage: ("Stage", "Closed Won", "won"),
        seeded_prefix: "Deal ",
        contact_clearable: true,
    })
    .await;
}

/// Salesforce: `Opportunity` with the standard sales process's `StageName` (a
/// restricted picklist), `AccountId`, and `ContactId`, which Salesforce sets on create
/// only (it derives it from the primary contact role afterwards).
#[tokio::test]
async fn salesforce_opportunities_round_trip_with_their_account_and_contact() {
    round_trip(RoundTrip {
        provider: "salesforce",
        stages: (
            r#"map({"Prospecting": "new", "Qualification": "qualified", "Closed Won": "won", "Closed Lost": "lost"})"#,
            r#"map({"new": "Prospecting", "qualified": "Qualification", "won": "Closed Won", "lost": "Closed Lost"})"#,
        ),
        odd_stage_error: &["INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", "negotiation"],
        company_by: ("Website", "app-made-0.test"),
        contact_by: ("Email", "app.person0@app-made.test"),
        name: "Name",
        company: "AccountId",
        contact: "ContactId",
        pushed: &[("StageName", "Qualification"), ("CloseDate", "2027-03-31")],
        crm_stage: ("StageName", "Closed Won", "won"),
        seeded_prefix: "Opportunity ",
        contact_clearable: false,
    })
    .await;
}

/// Dynamics 365: opportunities, `salesstage` option values (0 Qualify … 3 Close: a
/// stage name is not an option value, refused before the write), `parentaccountid` /
/// `parentcontactid` written as `@odata.bind` (cleared with a null bind) and read as
/// `_x_value`; deletions through change tracking.
#[tokio::test]
async fn dynamics_opportunities_round_trip_with_their_account_and_contact() {
    round_trip(RoundTrip {
        provider: "dynamics365",
        stages: (
            r#"map({"0": "new", "1": "qualified", "2": "proposal", "3": "won"})"#,
            r#"map({"new": "0", "qualified": "1", "proposal": "2", "won": "3"})"#,
        ),
        odd_stage_error: &["salesstage", "negotiation"],
        company_by: ("name", "App Made 0"),
        contact_by: ("emailaddress1", "app.person0@app-made.test"),
        name: "name",
        company: "parentaccountid",
        contact: "parentcontactid",
        pushed: &[
            ("salesstage", "1"),
            ("estimatedvalue", "1000"),
            ("estimatedclosedate", "2027-03-31"),
        ],
        crm_stage: ("salesstage", "3", "won"),
        seeded_prefix: "Deal ",
        contact_clearable: true,
    })
    .await;
}

/// A Dynamics user whose security roles lack the opportunity privileges: the deals of
/// a run fail as missing grants (the connection shows what to reconnect for), contacts
/// and companies go on.
#[tokio::test]
async fn dynamics_deals_need_the_opportunity_privileges() {
    let app = TestApp::spawn().await;
    let t = connect_deals(&app, "dynamics365").await;
    let Crm::Dynamics(host) = t.crm.clone() else {
        unreachable!()
    };
    app.sandbox().dyn_crm_set_table_privileges(
        &host,
        sandbox::providers::dynamics365_crm::DynTable::Opportunity,
        false,
    );
    let mut fields = s::app_fields(Entity::Deals, 0);
    fields["stage"] = json!("new");
    s::app_create(&app, &t, Entity::Deals, fields).await;
    let config = deals_config(&t, (r#"map({"0": "new"})"#, r#"map({"new": "0"})"#));
    s::store(&app, &config).await;
    let logs = s::run(&app, &t, &config.id).await;
    for e in [Entity::Contacts, Entity::Companies] {
        assert_eq!(log_of(&logs, e).status, RunStatus::Completed, "{logs:?}");
    }
    let deals = log_of(&logs, Entity::Deals);
    assert_eq!(deals.status, RunStatus::Failed, "{deals:?}");
    assert_eq!(
        deals.error_code.as_deref(),
        Some("scopes_missing"),
        "{deals:?}"
    );
    assert!(s::crm_rows(&app, &t, Entity::Deals).is_empty());
    // Neither token reaches the log's answer, the logs or the stored items.
    let (status, shown) = app
        .get(&format!("/v1/sync/logs/{}", deals.id), &t.admin)
        .await;
    assert_eq!(status, 200, "{shown}");
    let tokens = app.tokens(t.id.as_str(), &t.conn).await;
    for name in ["access_token", "refresh_token"] {
        let secret = tokens.get(name).expect("a token");
        assert!(!shown.to_string().contains(secret.as_str()), "{name} shown");
        app.assert_secret_absent(secret, t.id.as_str()).await;
    }
}

/// A CRM without deals refuses a deals config: every CRM connector syncs deals now, so
/// that refusal is proven at the unit level (`check_shape` in the sync-config function,
/// `a_crm_without_deals_refuses_them`); here, the deal scopes.
#[tokio::test]
async fn deals_configs_need_the_deal_scopes_and_a_crm_with_deals() {
    let app = TestApp::spawn().await;
    // Connected for contacts and companies only (the default uses).
    let t = s::connect(&app, "hubspot").await;
    let body = |t: &Tenant, entities: Value| {
        json!({
            "connection_id": t.conn,
            "direction": "bidirectional",
            "frequency": {"type": "manual"},
            "entities": entities,
            "conflict_strategy": "last_write_wins",
        })
    };
    let (status, refused) = app
        .post(
            "/v1/sync/configs",
            &t.admin,
            body(&t, json!(["companies", "deals"])),
        )
        .await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "scopes_missing");
    let missing = refused["error"]["missing_scopes"].to_string();
    assert!(
        missing.contains("crm.objects.deals.read") && missing.contains("crm.objects.deals.write"),
        "{missing}"
    );
    assert_eq!(
        refused["error"]["reconnect"]["body"]["uses"],
        json!(["sync:companies:bidirectional", "sync:deals:bidirectional"])
    );
    // Dynamics 365 syncs deals: connected with the default uses, its one delegated
    // scope serves them, so a deals config is taken (its security roles decide).
    let z = s::connect(&app, "dynamics365").await;
    let (status, made) = app
        .post(
            "/v1/sync/configs",
            &z.admin,
            body(&z, json!(["contacts", "companies", "deals"])),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    // Auto-map finds the opportunity's columns, its lookups as the associations.
    let deals: Vec<(String, String)> = made["mappings"]
        .as_array()
        .expect("mappings")
        .iter()
        .filter(|m| m["entity"] == "deals")
        .map(|m| {
            (
                m["crm_field"].as_str().unwrap_or_default().to_owned(),
                m["app_field"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for pair in s::default_pairs("dynamics365", Entity::Deals) {
        let pair = (pair.0.to_owned(), pair.1.to_owned());
        assert!(deals.contains(&pair), "{pair:?} not in {deals:?}");
    }
    // An association mapping needs its entity in the config.
    let (t2, _) = hubspot(&app).await;
    let mut b = body(&t2, json!(["deals"]));
    b["mappings"] = json!([
        {"entity": "deals", "crm_field": "dealname", "app_field": "name", "direction": "bidirectional"},
        {"entity": "deals", "crm_field": "associations.companies", "app_field": "company_id", "direction": "bidirectional"},
    ]);
    let (status, refused) = app.post("/v1/sync/configs", &t2.admin, b).await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused.to_string().contains("must sync companies too"),
        "{refused}"
    );
    // A stage value map writing a stage HubSpot does not have: refused when saved.
    let mut b = body(&t2, json!(["deals"]));
    b["mappings"] = json!([
        {"entity": "deals", "crm_field": "dealname", "app_field": "name", "direction": "bidirectional"},
        {"entity": "deals", "crm_field": "dealstage", "app_field": "stage", "direction": "bidirectional",
         "push_transform": "map({\"won\": \"closed_won\"})"},
    ]);
    let (status, refused) = app.post("/v1/sync/configs", &t2.admin, b).await;
    assert_eq!(status, 400, "{refused}");
    let text = refused.to_string();
    assert!(
        text.contains("push_transform")
            && text.contains("closed_won")
            && text.contains("dealstage"),
        "{refused}"
    );
    let _ = Direction::Bidirectional;
}

/// Realtime on Dynamics: a config of contacts, companies and deals registers webhook
/// steps for `opportunity` too; an opportunity made in Dynamics with an account the app
/// has never seen reaches the app within seconds, with that account's app id.
#[tokio::test]
async fn dynamics_opportunities_arrive_through_webhook_steps() {
    use sandbox::providers::dynamics365_crm::DynTable;
    let app = TestApp::spawn().await;
    let t = connect_deals(&app, "dynamics365").await;
    let Crm::Dynamics(host) = t.crm.clone() else {
        unreachable!()
    };
    let config_id = crate::sync_webhooks_more::realtime_config_of(
        &app,
        &t,
        json!(["contacts", "companies", "deals"]),
    )
    .await;
    // An endpoint per table, with its Create, Update and Delete steps.
    let (endpoints, steps) = app.sandbox().dyn_crm_webhooks(&host);
    assert_eq!((endpoints.len(), steps.len()), (3, 9), "{steps:?}");
    s::run_ok(&app, &t, &config_id).await;

    let object = |v: Value| v.as_object().cloned().unwrap_or_default();
    let account = app.sandbox().dyn_crm_create(
        &host,
        DynTable::Account,
        object(json!({"name": "Hooked Account", "websiteurl": "https://hooked.example"})),
    );
    app.sandbox().dyn_crm_create(
        &host,
        DynTable::Opportunity,
        object(
            json!({"name": "Hooked deal", "salesstage": 2, "estimatedvalue": 5000,
            "parentaccountid": account.id}),
        ),
    );
    crate::sync_webhooks::wait_for(
        "the opportunity with its account",
        std::time::Duration::from_secs(30),
        || async {
            let companies = s::app_rows(&app, &t, Entity::Companies).await;
            let Some(company) = companies
                .iter()
                .find(|r| r.fields.get("name").map(String::as_str) == Some("Hooked Account"))
            else {
                return false;
            };
            s::app_rows(&app, &t, Entity::Deals).await.iter().any(|d| {
                d.fields.get("name").map(String::as_str) == Some("Hooked deal")
                    && d.fields.get("company_id") == Some(&company.id.to_string())
                    && d.fields.get("stage").map(String::as_str) == Some("2")
            })
        },
    )
    .await;
}

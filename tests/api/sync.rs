//! Record sync end to end: a HubSpot connection, a config, a triggered run through
//! the sync queue and the worker, and the records on both sides afterwards.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use conduit::domain::{ConnectionId, MappingId, SyncConfigId, SyncLogId, TenantId, UserId, now};
use conduit::sync::config::{
    ConfigStatus, Configs, FieldMapping, Filter, FilterOp, Frequency, SyncConfig, SyncDirection,
    SyncOptions,
};
use conduit::sync::conflict::{Direction, Strategy};
use conduit::sync::records::{ListQuery, Record, Records};
use conduit::sync::runs::{RunStatus, Runs, SyncLog};
use conduit::sync::schema::Entity;
use sandbox::CrmObject;
use sandbox::oauth::{OAuthProvider, OAuthUser};
use scenarios::{Role, TestApp};
use serde_json::json;

use crate::sync_support::{self as s, Tenant};

const RETURN_TO: &str = "http://localhost:5173/integrations";

fn unique(prefix: &str) -> String {
    format!("{prefix}{}@acme.test", &ulid_suffix()[16..])
}

fn ulid_suffix() -> String {
    SyncConfigId::generate().as_str()[5..].to_owned()
}

/// A tenant with a connected sandbox HubSpot portal of its own: (tenant, admin, id, portal).
async fn hubspot_tenant(app: &TestApp) -> (String, String, ConnectionId, u64) {
    let u = app
        .sandbox()
        .add_oauth_user(OAuthUser::new(OAuthProvider::Hubspot, unique("sync")))
        .expect("user");
    let tenant = app.tenant();
    let admin = app.token(&tenant, Role::Admin);
    let out = app
        .oauth_connect(
            &admin,
            "hubspot",
            json!({"return_to": RETURN_TO}),
            &format!("login_hint={}", u.email),
        )
        .await;
    assert_eq!(out.status, "connected", "{}", out.return_url);
    (tenant, admin, out.connection_id.expect("id"), u.hub_id)
}

fn mapping(crm: &str, app: &str, direction: Direction) -> FieldMapping {
    FieldMapping {
        id: MappingId::generate(),
        entity: Entity::Contacts,
        crm_field: crm.into(),
        app_field: app.into(),
        direction,
        transform: None,
        push_transform: None,
    }
}

async fn config(
    app: &TestApp,
    tenant: &str,
    connection: &ConnectionId,
    direction: SyncDirection,
    strategy: Strategy,
) -> SyncConfig {
    let at = now();
    let c = SyncConfig {
        id: SyncConfigId::generate(),
        tenant: TenantId::parse(tenant).unwrap(),
        connection_id: connection.clone(),
        provider: "hubspot".into(),
        name: "HubSpot contacts".into(),
        direction,
        frequency: Frequency::Manual,
        entities: vec![Entity::Contacts],
        filters: vec![],
        conflict_strategy: strategy,
        options: SyncOptions::default(),
        status: ConfigStatus::Active,
        mappings: vec![
            mapping("email", "email", Direction::Bidirectional),
            mapping("firstname", "first_name", Direction::Bidirectional),
            mapping("lastname", "last_name", Direction::Bidirectional),
            mapping("phone", "phone", Direction::Bidirectional),
        ],
        schedule_name: None,
        last_job: None,
        created_at: at,
        created_by: UserId::parse("dev-admin").unwrap(),
        updated_at: at,
        version: 1,
    };
    Configs::new(app.app().table.clone())
        .insert(&c)
        .await
        .unwrap();
    c
}

/// Triggers a run and waits until every log of it is closed.
async fn run(app: &TestApp, admin: &str, tenant: &str, config: &SyncConfigId) -> Vec<SyncLog> {
    let (status, started) = app
        .post("/v1/sync/trigger", admin, json!({"config_id": config}))
        .await;
    assert_eq!(
        status,
        202,
        "{started}\n{}",
        app.logs_about("request failed")
    );
    let ids: Vec<SyncLogId> = started["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| SyncLogId::parse(l["id"].as_str().unwrap()).unwrap())
        .collect();
    let runs = Runs::new(app.app().table.clone());
    let tenant = TenantId::parse(tenant).unwrap();
    for _ in 0..600 {
        let mut logs = Vec::new();
        for id in &ids {
            logs.push(runs.log(&tenant, id).await.unwrap().unwrap());
        }
        if logs.iter().all(|l| l.status != RunStatus::Running) {
            return logs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the run did not finish in time");
}

async fn app_contacts(app: &TestApp, tenant: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let records = Records::new(app.app().table.clone());
    let tenant = TenantId::parse(tenant).unwrap();
    let mut out = BTreeMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let page = records
            .list(
                &tenant,
                Entity::Contacts,
                &ListQuery {
                    limit: 200,
                    cursor: cursor.as_deref(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        for r in page.items {
            out.insert(r.fields.get("email").cloned().unwrap_or_default(), r.fields);
        }
        match page.cursor {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

#[tokio::test]
async fn a_bidirectional_hubspot_sync_pulls_then_pushes_changes_both_ways() {
    let app = TestApp::spawn().await;
    let (tenant, admin, conn, portal) = hubspot_tenant(&app).await;
    app.sandbox().seed_hubspot(portal, CrmObject::Contacts, 250);
    let cfg = config(
        &app,
        &tenant,
        &conn,
        SyncDirection::Bidirectional,
        Strategy::LastWriteWins,
    )
    .await;

    let logs = run(&app, &admin, &tenant, &cfg.id).await;
    assert_eq!(logs[0].status, RunStatus::Completed, "{:?}", logs[0]);
    assert_eq!(logs[0].counts["created"], 250, "{:?}", logs[0].counts);
    let contacts = app_contacts(&app, &tenant).await;
    assert_eq!(contacts.len(), 250);
    let crm = app.sandbox().hubspot_records(portal, CrmObject::Contacts);
    for r in &crm {
        let email = r.properties.get("email").unwrap();
        let mine = contacts
            .get(email)
            .expect("every CRM contact is in the app");
        assert_eq!(mine.get("first_name"), r.properties.get("firstname"));
    }

    // A second run with nothing changed writes nothing and creates nothing.
    let logs = run(&app, &admin, &tenant, &cfg.id).await;
    assert_eq!(logs[0].status, RunStatus::Completed, "{:?}", logs[0]);
    assert_eq!(logs[0].counts["created"], 0, "{:?}", logs[0].counts);
    assert_eq!(
        app.sandbox()
            .hubspot_records(portal, CrmObject::Contacts)
            .len(),
        250
    );

    // An app-side create and edit are pushed; a CRM-side edit is pulled.
    let (status, created) = app
        .post(
            "/v1/records/contacts",
            &admin,
            json!({"fields": {"email": "new.person@acme.test", "first_name": "New", "last_name": "Person"}}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let crm_first = &crm[0];
    let changed_email = crm_first.properties.get("email").unwrap().clone();
    app.sandbox().update_hubspot_record(
        portal,
        CrmObject::Contacts,
        &crm_first.id,
        &BTreeMap::from([("firstname".to_owned(), "Renamed".to_owned())]),
    );
    let logs = run(&app, &admin, &tenant, &cfg.id).await;
    assert_eq!(logs[0].status, RunStatus::Completed, "{:?}", logs[0]);
    let contacts = app_contacts(&app, &tenant).await;
    assert_eq!(contacts[&changed_email]["first_name"], "Renamed");
    let crm = app.sandbox().hubspot_records(portal, CrmObject::Contacts);
    assert_eq!(crm.len(), 251);
    let pushed = crm
        .iter()
        .find(|r| r.properties.get("email").map(String::as_str) == Some("new.person@acme.test"))
        .expect("the app's new contact is in HubSpot");
    assert_eq!(
        pushed.properties.get("firstname").map(String::as_str),
        Some("New")
    );
    assert!(pushed.properties.contains_key("conduit_id"));
}

// ------------------------------------------------------------------------------
// HubSpot: each direction for each entity, each conflict strategy, deletes, filters,
// field directions and transforms, pause and resume, duplicate deliveries.

#[tokio::test]
async fn hubspot_contacts_pull_push_and_bidirectional() {
    let app = TestApp::spawn().await;
    s::all_directions(&app, "hubspot", Entity::Contacts).await;
}

#[tokio::test]
async fn hubspot_companies_pull_push_and_bidirectional() {
    let app = TestApp::spawn().await;
    s::all_directions(&app, "hubspot", Entity::Companies).await;
}

/// last_write_wins, crm_wins and app_wins settle a field changed on both sides;
/// manual_review stores a conflict and freezes the field on both sides.
#[tokio::test]
async fn hubspot_conflicts_under_each_strategy() {
    let app = TestApp::spawn().await;
    s::all_conflicts(
        &app,
        "hubspot",
        &[
            Strategy::LastWriteWins,
            Strategy::CrmWins,
            Strategy::AppWins,
            Strategy::ManualReview,
        ],
    )
    .await;
}

#[tokio::test]
async fn hubspot_deletes_propagate_only_when_enabled() {
    let app = TestApp::spawn().await;
    s::both_deletes(&app, "hubspot", Entity::Contacts).await;
}

/// Without the marker property (a grant without schema write), the CRM records Conduit
/// created carry no app id: a record deleted in the app is still found by its linked
/// CRM record, so a later pull neither brings it back nor deletes it in HubSpot unless
/// the config propagates deletes.
#[tokio::test]
async fn hubspot_without_the_marker_keeps_app_deletes() {
    let app = TestApp::spawn().await;
    let scopes = [
        "oauth",
        "crm.objects.contacts.read",
        "crm.objects.contacts.write",
    ];
    let ask = || s::connect_asking(&app, "hubspot", serde_json::json!({ "scopes": scopes }));
    let (kept, propagated) = tokio::join!(ask(), ask());
    tokio::join!(
        s::deletes_of(&app, &kept, Entity::Contacts, false),
        s::deletes_of(&app, &propagated, Entity::Contacts, true),
    );
}

/// Only CRM records matching the filter are pulled, only app records matching it are
/// pushed.
#[tokio::test]
async fn hubspot_filters_limit_both_directions() {
    let app = TestApp::spawn().await;
    let entity = Entity::Contacts;
    let t = s::connect(&app, "hubspot").await;
    s::seed(&app, &t, entity, 12);
    let rows = s::crm_rows(&app, &t, entity);
    let stage = rows[0].values["lifecyclestage"].clone();
    let matching: BTreeSet<String> = rows
        .iter()
        .filter(|r| r.values.get("lifecyclestage") == Some(&stage))
        .map(|r| r.values["email"].to_lowercase())
        .collect();
    assert!(matching.len() < rows.len(), "the filter leaves some out");
    for i in 0..4 {
        let mut fields = s::app_fields(entity, i);
        let value = if i % 2 == 0 { stage.as_str() } else { "other" };
        fields["lifecycle_stage"] = json!(value);
        s::app_create(&app, &t, entity, fields).await;
    }
    let mut c = s::new_config(&t, SyncDirection::Bidirectional, &[entity]);
    c.mappings.push(s::mapping(
        entity,
        "lifecyclestage",
        "lifecycle_stage",
        Direction::Bidirectional,
    ));
    c.filters = vec![Filter {
        entity,
        field: "lifecyclestage".into(),
        operator: FilterOp::Eq,
        value: Some(stage.clone()),
        values: vec![],
    }];
    s::store(&app, &c).await;
    s::run_ok(&app, &t, &c.id).await;

    let app_keys: BTreeSet<String> = s::app_view(&app, &t, entity).await.into_keys().collect();
    let mut want: BTreeSet<String> = matching.clone();
    want.extend((0..4).map(|i| format!("app.person{i}@app-made.test")));
    assert_eq!(app_keys, want);
    let crm = s::crm_view(&app, &t, entity);
    assert_eq!(crm.len(), 14);
    assert!(crm.contains_key("app.person0@app-made.test"));
    assert!(crm.contains_key("app.person2@app-made.test"));
    assert!(!crm.contains_key("app.person1@app-made.test"));
    let pulled = s::app_view(&app, &t, entity).await;
    for k in &matching {
        assert_eq!(pulled[k], crm[k]);
    }
}

/// Push-only, pull-only and unsynced fields, and transforms both ways.
#[tokio::test]
async fn hubspot_field_directions_and_transforms() {
    let app = TestApp::spawn().await;
    let entity = Entity::Contacts;
    let t = s::connect(&app, "hubspot").await;
    let ids = s::seed(&app, &t, entity, 5);
    s::crm_update(&app, &t, entity, &ids[0], &[("city", "")]);
    let seeded = s::crm_rows(&app, &t, entity);
    let mut c = s::new_config(&t, SyncDirection::Bidirectional, &[entity]);
    let mut jobtitle = s::mapping(entity, "jobtitle", "job_title", Direction::Bidirectional);
    jobtitle.transform = Some("upper".into());
    jobtitle.push_transform = Some("lower".into());
    let mut city = s::mapping(entity, "city", "city", Direction::Pull);
    city.transform = Some("default(\"Unknown\")".into());
    let mut email = s::mapping(entity, "email", "email", Direction::Bidirectional);
    email.transform = Some("trim | lower".into());
    c.mappings = vec![
        email,
        s::mapping(entity, "firstname", "first_name", Direction::Pull),
        s::mapping(entity, "lastname", "last_name", Direction::Push),
        s::mapping(entity, "phone", "phone", Direction::None),
        jobtitle,
        city,
    ];
    s::store(&app, &c).await;
    s::run_ok(&app, &t, &c.id).await;

    let by_email = |rows: &[Record]| -> BTreeMap<String, Record> {
        rows.iter()
            .map(|r| (r.fields["email"].clone(), r.clone()))
            .collect()
    };
    let mine = by_email(&s::app_rows(&app, &t, entity).await);
    assert_eq!(mine.len(), 5);
    for r in &seeded {
        let a = &mine[&r.values["email"].to_lowercase()];
        assert_eq!(a.fields.get("first_name"), r.values.get("firstname"));
        assert_eq!(a.fields.get("last_name"), None, "push-only: not pulled");
        assert_eq!(a.fields.get("phone"), None, "not synced");
        assert_eq!(
            a.fields.get("job_title"),
            r.values.get("jobtitle").map(|j| j.to_uppercase()).as_ref()
        );
        let city = r.values.get("city").map_or("Unknown", String::as_str);
        assert_eq!(a.fields.get("city").map(String::as_str), Some(city));
    }
    // Pulling wrote nothing back to the CRM.
    let crm_now = s::crm_rows(&app, &t, entity);
    for (before, after) in seeded.iter().zip(&crm_now) {
        for f in ["firstname", "lastname", "phone", "jobtitle", "city"] {
            assert_eq!(
                before.values.get(f),
                after.values.get(f),
                "{f} of {}",
                before.id
            );
        }
    }

    // App edits of every kind of field; CRM edits of a pull-only and a push-only one.
    let one = &seeded[1];
    let one_id = mine[&one.values["email"].to_lowercase()].id.to_string();
    s::app_update(
        &app,
        &t,
        entity,
        &one_id,
        json!({"first_name": "Appfirst", "last_name": "Applast", "phone": "+15550009999",
               "job_title": "Chief Tester"}),
    )
    .await;
    let two = &seeded[2];
    s::crm_update(
        &app,
        &t,
        entity,
        &two.id,
        &[("firstname", "Crmfirst"), ("lastname", "Crmlast")],
    );
    s::run_ok(&app, &t, &c.id).await;
    let crm: BTreeMap<String, s::CrmRow> = s::crm_rows(&app, &t, entity)
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect();
    let got = |id: &str, f: &str| crm[id].values.get(f).cloned();
    assert_eq!(got(&one.id, "lastname").as_deref(), Some("Applast"));
    assert_eq!(got(&one.id, "jobtitle").as_deref(), Some("chief tester"));
    assert_eq!(
        got(&one.id, "firstname"),
        one.values.get("firstname").cloned()
    );
    assert_eq!(got(&one.id, "phone"), one.values.get("phone").cloned());
    assert_eq!(got(&two.id, "lastname").as_deref(), Some("Crmlast"));
    let mine = by_email(&s::app_rows(&app, &t, entity).await);
    let a2 = &mine[&two.values["email"].to_lowercase()];
    assert_eq!(
        a2.fields.get("first_name").map(String::as_str),
        Some("Crmfirst")
    );
    assert_eq!(a2.fields.get("last_name"), None, "push-only: not pulled");
    let a1 = &mine[&one.values["email"].to_lowercase()];
    assert_eq!(
        a1.fields.get("first_name").map(String::as_str),
        Some("Appfirst")
    );
    assert_eq!(mine.len(), 5);
    assert_eq!(crm.len(), 5);
}

/// A paused config refuses triggers and syncs nothing; resumed, it runs.
#[tokio::test]
async fn hubspot_paused_configs_do_not_run_until_resumed() {
    let app = TestApp::spawn().await;
    let entity = Entity::Contacts;
    let t = s::connect(&app, "hubspot").await;
    s::seed(&app, &t, entity, 5);
    let c = s::new_config(&t, SyncDirection::Pull, &[entity]);
    s::store(&app, &c).await;
    let path = format!("/v1/sync/configs/{}", c.id);
    let (status, body) = app
        .post(&format!("{path}/pause"), &t.admin, json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = s::trigger(&app, &t, &c.id).await;
    assert_eq!(status, 409, "{body}");
    assert!(s::app_rows(&app, &t, entity).await.is_empty());

    let (status, body) = app
        .post(&format!("{path}/resume"), &t.admin, json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    s::run_ok(&app, &t, &c.id).await;
    s::assert_same(
        &s::app_view(&app, &t, entity).await,
        &s::crm_view(&app, &t, entity),
        "after the resumed run",
    );
}

/// The same task message delivered twice (both copies through the sync queue, so
/// possibly in one batch, side by side) creates nothing twice on either side.
#[tokio::test]
async fn hubspot_duplicate_task_deliveries_duplicate_nothing() {
    let app = TestApp::spawn().await;
    duplicate_deliveries(&app, "hubspot").await;
}

/// Starts a bidirectional run whose first task messages are each sent to the sync
/// queue twice; the end state equals a single delivery's.
pub(crate) async fn duplicate_deliveries(app: &TestApp, provider: &str) {
    let entity = Entity::Contacts;
    let t: Tenant = s::connect(app, provider).await;
    s::seed(app, &t, entity, 20);
    s::app_create_many(app, &t, entity, 3).await;
    let c = s::new_config(&t, SyncDirection::Bidirectional, &[entity]);
    s::store(app, &c).await;

    let local = app.local();
    let sqs = aws_sdk_sqs::Client::new(&local.aws);
    let side = sqs
        .create_queue()
        .queue_name(format!("dup-{}", s::fresh()))
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let a = app.app();
    let started = conduit::sync::engine::start(
        &a,
        &conduit::queue::Publisher::new(sqs.clone(), &side),
        &c,
        conduit::sync::engine::RunRequest {
            trigger: "manual".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut bodies = Vec::new();
    while bodies.is_empty() {
        let out = sqs
            .receive_message()
            .queue_url(&side)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        bodies.extend(
            out.messages
                .unwrap_or_default()
                .into_iter()
                .filter_map(|m| m.body),
        );
    }
    assert_eq!(bodies.len(), 1);
    let task = conduit::sync::message::SyncMessage::parse(&bodies[0]).unwrap();
    assert_eq!(task.kind(), "chunk");
    let queue = conduit::queue::Publisher::new(sqs, local.stack.ref_value("SyncQueue").unwrap());
    queue.send_all(&[task.clone(), task]).await.unwrap();

    let runs = Runs::new(a.table.clone());
    let log = loop {
        let log = runs.log(&t.id, &started.logs[0].id).await.unwrap().unwrap();
        if log.status != RunStatus::Running {
            break log;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(log.status, RunStatus::Completed, "{log:?}");
    let crm = s::crm_view(app, &t, entity);
    assert_eq!(crm.len(), 23);
    s::assert_same(
        &s::app_view(app, &t, entity).await,
        &crm,
        "after duplicates",
    );
    // Let any straggling duplicate chunk finish, then check again.
    s::run_ok(app, &t, &c.id).await;
    let crm = s::crm_view(app, &t, entity);
    assert_eq!(crm.len(), 23);
    s::assert_same(&s::app_view(app, &t, entity).await, &crm, "after a rerun");
}

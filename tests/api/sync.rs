//! Record sync end to end: a HubSpot connection, a config, a triggered run through
//! the sync queue and the worker, and the records on both sides afterwards.

use std::collections::BTreeMap;
use std::time::Duration;

use conduit::domain::{ConnectionId, MappingId, SyncConfigId, SyncLogId, TenantId, UserId, now};
use conduit::sync::config::{
    ConfigStatus, Configs, FieldMapping, Frequency, SyncConfig, SyncDirection, SyncOptions,
};
use conduit::sync::conflict::{Direction, Strategy};
use conduit::sync::records::{ListQuery, Records};
use conduit::sync::runs::{RunStatus, Runs, SyncLog};
use conduit::sync::schema::Entity;
use sandbox::CrmObject;
use sandbox::oauth::{OAuthProvider, OAuthUser};
use scenarios::{Role, TestApp};
use serde_json::json;

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

//! OAuth scopes, end to end against the sandbox's HubSpot (which enforces granular
//! CRM scopes per endpoint and answers 403 `MISSING_SCOPES` like the real one):
//! a connect asks for what its uses need; a sync config the grant cannot serve is a
//! 409 `scopes_missing` naming the reconnect, and that reconnect fixes it; a scope
//! an admin removes from the grant fails the next run with `scopes_missing`, marks the
//! connection and publishes an event; pushes on a grant without schema write (no
//! `conduit_id` marker property) stay exactly-once.

use std::time::Duration;

use conduit::sync::config::SyncDirection;
use conduit::sync::runs::RunStatus;
use conduit::sync::schema::Entity;
use sandbox::oauth::{GrantSelector, OAuthProvider};
use scenarios::{TestApp, query_param};
use serde_json::{Value, json};

use crate::sync_support::{self as s, RETURN_TO, Tenant};

const CONTACTS_READ: &str = "crm.objects.contacts.read";
const CONTACTS_WRITE: &str = "crm.objects.contacts.write";

fn config_body(t: &Tenant, direction: &str) -> Value {
    json!({
        "connection_id": t.conn,
        "name": format!("contacts {direction}"),
        "direction": direction,
        "frequency": {"type": "manual"},
        "entities": ["contacts"],
        "conflict_strategy": "last_write_wins",
    })
}

async fn connection(app: &TestApp, t: &Tenant) -> Value {
    let (status, conn) = app
        .get(&format!("/v1/connections/{}", t.conn), &t.admin)
        .await;
    assert_eq!(status, 200, "{conn}");
    conn
}

fn scopes_of(conn: &Value) -> Vec<String> {
    conn["scopes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Plays the reconnect call a `scopes_missing` error names; answers the asked scopes.
async fn reconnect(app: &TestApp, t: &Tenant, error: &Value) -> Vec<String> {
    let call = &error["error"]["reconnect"];
    assert_eq!(call["method"], "POST", "{error}");
    assert_eq!(call["path"], "/v1/oauth/hubspot/start", "{error}");
    let mut body = call["body"].clone();
    body["return_to"] = json!(RETURN_TO);
    let email = connection(app, t).await["connected_as"]["email"]
        .as_str()
        .expect("connected as")
        .to_owned();
    let out = app
        .oauth_connect(&t.admin, "hubspot", body, &format!("login_hint={email}"))
        .await;
    assert_eq!(out.status, "connected", "{}", out.return_url);
    assert_eq!(
        out.connection_id.as_ref(),
        Some(&t.conn),
        "the same connection"
    );
    query_param(&out.authorize_url, "scope")
        .unwrap_or_default()
        .split(' ')
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_connect_asks_for_what_its_uses_need_and_no_more() {
    let app = TestApp::spawn().await;
    let tenant = app.tenant();
    let admin = app.token(&tenant, scenarios::Role::Admin);
    let start = |body: Value| {
        let mut b = body;
        b["return_to"] = json!(RETURN_TO);
        b
    };
    let scope = |v: &Value| query_param(v["authorize_url"].as_str().unwrap_or(""), "scope");

    // The default: contacts and companies both ways, with the marker's schema write.
    let (status, started) = app.oauth_start(&admin, "hubspot", start(json!({}))).await;
    assert_eq!(status, 200, "{started}");
    assert_eq!(
        scope(&started).as_deref(),
        Some(
            "oauth crm.objects.contacts.read crm.objects.contacts.write crm.schemas.contacts.write \
             crm.objects.companies.read crm.objects.companies.write crm.schemas.companies.write"
        )
    );
    // A pull of contacts needs only their read scope.
    let (_, started) = app
        .oauth_start(
            &admin,
            "hubspot",
            start(json!({"uses": ["sync:contacts:pull"]})),
        )
        .await;
    assert_eq!(
        scope(&started).as_deref(),
        Some("oauth crm.objects.contacts.read")
    );
    // Salesforce: one API scope for every use, plus the refresh token.
    let (_, started) = app
        .oauth_start(
            &admin,
            "salesforce",
            start(json!({"uses": ["sync:companies:push", "kb_import"]})),
        )
        .await;
    assert_eq!(scope(&started).as_deref(), Some("api refresh_token id"));
    // Google: a reconnect asks for the earlier grant and the new uses, with
    // incremental authorization.
    let google = app
        .sandbox()
        .add_oauth_user(sandbox::oauth::OAuthUser::new(
            OAuthProvider::Google,
            format!("scopes-{}@sandbox.test", s::fresh()),
        ))
        .expect("sandbox user");
    let first = app
        .oauth_connect(
            &admin,
            "google",
            start(json!({"kind": "gmail"})),
            &format!("login_hint={}", google.email),
        )
        .await;
    assert_eq!(first.status, "connected", "{}", first.return_url);
    assert_eq!(
        query_param(&first.authorize_url, "include_granted_scopes").as_deref(),
        Some("false"),
        "a first connect asks for its kind's scopes alone"
    );
    let (status, again) = app
        .oauth_start(
            &admin,
            "google",
            start(json!({"kind": "gmail", "connection_id": first.connection_id, "uses": ["action:send_email"]})),
        )
        .await;
    assert_eq!(status, 200, "{again}");
    let url = again["authorize_url"].as_str().unwrap_or("");
    assert_eq!(
        query_param(url, "include_granted_scopes").as_deref(),
        Some("true")
    );
    assert!(
        scope(&again).is_some_and(|s| s.contains("gmail.send") && s.starts_with("openid email")),
        "{again}"
    );
    let (status, refused) = app
        .oauth_start(
            &admin,
            "google",
            start(json!({"kind": "calendar", "connection_id": first.connection_id})),
        )
        .await;
    assert_eq!(status, 400, "a reconnect keeps the kind: {refused}");

    // Uses are validated strictly; nothing is stored for a refused start.
    for (body, code) in [
        (json!({"uses": ["sync:tickets:pull"]}), "invalid_uses"),
        (json!({"uses": ["sync:contacts"]}), "invalid_uses"),
        (json!({"uses": ["action:create_ticket"]}), "invalid_uses"),
        (json!({"uses": []}), "invalid_uses"),
        (json!({"uses": "sync:contacts:pull"}), "invalid_json"),
        (
            json!({"uses": ["sync:contacts:pull"], "scopes": ["oauth"]}),
            "invalid_scopes",
        ),
    ] {
        let (status, answer) = app
            .oauth_start(&admin, "hubspot", start(body.clone()))
            .await;
        assert_eq!(status, 400, "{body} → {answer}");
        if code != "invalid_json" {
            assert_eq!(answer["error"]["code"], code, "{body} → {answer}");
        }
    }
}

#[tokio::test]
async fn read_only_scopes_refuse_a_push_config_and_a_reconnect_with_more_fixes_it() {
    let app = TestApp::spawn().await;
    let t = s::connect_asking(&app, "hubspot", json!({"uses": ["sync:contacts:pull"]})).await;
    assert_eq!(
        scopes_of(&connection(&app, &t).await),
        ["oauth", CONTACTS_READ],
        "the granted scopes, as HubSpot's token info reports them"
    );

    // A push config: 409 naming the missing scope and the reconnect; nothing stored.
    let (status, refused) = app
        .post("/v1/sync/configs", &t.admin, config_body(&t, "push"))
        .await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "scopes_missing");
    assert_eq!(refused["error"]["missing_scopes"], json!([CONTACTS_WRITE]));
    assert_eq!(
        refused["error"]["reconnect"]["body"],
        json!({"connection_id": t.conn, "uses": ["sync:contacts:push"]})
    );
    let (_, listed) = app.get("/v1/sync/configs", &t.admin).await;
    assert_eq!(listed["configs"], json!([]), "{listed}");

    // A pull config is fine; widening it to both ways is refused the same way.
    let (status, created) = app
        .post("/v1/sync/configs", &t.admin, config_body(&t, "pull"))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().expect("config id").to_owned();
    let (status, refused) = app
        .patch(
            &format!("/v1/sync/configs/{id}"),
            &t.admin,
            json!({"direction": "bidirectional"}),
        )
        .await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "scopes_missing");
    let (_, still) = app.get(&format!("/v1/sync/configs/{id}"), &t.admin).await;
    assert_eq!(
        still["direction"], "pull",
        "the refused change changed nothing"
    );

    // The reconnect the error names asks for the old grant and the new needs.
    let asked = reconnect(&app, &t, &refused).await;
    for scope in [
        "oauth",
        CONTACTS_READ,
        CONTACTS_WRITE,
        "crm.schemas.contacts.write",
    ] {
        assert!(asked.iter().any(|a| a == scope), "{scope} in {asked:?}");
    }
    assert!(
        scopes_of(&connection(&app, &t).await)
            .iter()
            .any(|s| s == CONTACTS_WRITE)
    );
    let (status, changed) = app
        .patch(
            &format!("/v1/sync/configs/{id}"),
            &t.admin,
            json!({"direction": "bidirectional"}),
        )
        .await;
    assert_eq!(status, 200, "{changed}");

    // And it runs both ways against a HubSpot that checks every call's scopes.
    s::seed(&app, &t, Entity::Contacts, 5);
    s::app_create_many(&app, &t, Entity::Contacts, 3).await;
    let config = conduit::domain::SyncConfigId::parse(&id).expect("config id");
    let logs = s::run_ok(&app, &t, &config).await;
    assert_eq!(logs[0].counts["processed"], 8, "{:?}", logs[0]);
}

#[tokio::test]
async fn a_scope_removed_from_the_grant_fails_the_run_with_scopes_missing_and_an_event() {
    let app = TestApp::spawn().await;
    let t = s::connect(&app, "hubspot").await;
    let email = connection(&app, &t).await["connected_as"]["email"]
        .as_str()
        .expect("connected as")
        .to_owned();
    s::seed(&app, &t, Entity::Contacts, 10);
    let c = s::new_config(&t, SyncDirection::Bidirectional, &[Entity::Contacts]);
    s::store(&app, &c).await;
    s::run_ok(&app, &t, &c.id).await;

    // An admin narrows the app in HubSpot: contacts can be read, not written.
    let narrowed = app.sandbox().narrow_grants(
        OAuthProvider::Hubspot,
        &GrantSelector::User {
            email,
            client_id: None,
        },
        None,
        &[CONTACTS_WRITE.to_owned()],
    );
    assert!(!narrowed.is_empty(), "the connection's grant was narrowed");
    s::app_create_many(&app, &t, Entity::Contacts, 2).await;
    let logs = s::run(&app, &t, &c.id).await;
    let log = &logs[0];
    assert_eq!(log.status, RunStatus::Failed, "{log:?}");
    assert_eq!(log.error_code.as_deref(), Some("scopes_missing"), "{log:?}");
    assert!(
        log.error
            .as_deref()
            .is_some_and(|e| e.contains(CONTACTS_WRITE)),
        "{log:?}"
    );
    assert!(
        log.counts["pulled"] > 0 || log.counts["processed"] > 0,
        "the pull ran first: {log:?}"
    );

    // Visible in the log and the config status.
    let (_, shown) = app
        .get(&format!("/v1/sync/logs/{}", log.id), &t.admin)
        .await;
    assert_eq!(shown["error_code"], "scopes_missing", "{shown}");
    let (_, status) = app
        .get(&format!("/v1/sync/configs/{}/status", c.id), &t.admin)
        .await;
    assert_eq!(status["run"]["status"], "failed", "{status}");
    assert_eq!(status["run"]["entities"][0]["error_code"], "scopes_missing");

    // Never retried: no "retrying after" note, and the log stays as it closed (a
    // redelivered message would run the push again).
    assert!(
        !log.error
            .as_deref()
            .unwrap_or("")
            .starts_with("retrying after"),
        "{log:?}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (_, later) = app
        .get(&format!("/v1/sync/logs/{}", log.id), &t.admin)
        .await;
    assert_eq!(later["updated_at"], shown["updated_at"], "{later}");
    assert_eq!(later["counts"], shown["counts"], "{later}");

    // The connection shows what to reconnect for; the dashboard heard of it.
    let conn = connection(&app, &t).await;
    assert_eq!(conn["scopes_missing"], json!([CONTACTS_WRITE]), "{conn}");
    assert!(
        !scopes_of(&conn).iter().any(|s| s == CONTACTS_WRITE),
        "{conn}"
    );
    let conn_id = t.conn.to_string();
    let event = app
        .wait_for_event("integration.connection.scopes_missing", |d| {
            d["connection_id"] == conn_id.as_str()
        })
        .await;
    assert_eq!(
        event["detail"]["missing_scopes"],
        json!([CONTACTS_WRITE]),
        "{event}"
    );
    assert_eq!(event["detail"]["provider"], "hubspot");

    // Config changes now see the narrower grant; a reconnect clears it and the run
    // completes.
    let (status, refused) = app
        .patch(
            &format!("/v1/sync/configs/{}", c.id),
            &t.admin,
            json!({"direction": "push"}),
        )
        .await;
    assert_eq!(status, 409, "{refused}");
    reconnect(&app, &t, &refused).await;
    let conn = connection(&app, &t).await;
    assert!(conn.get("scopes_missing").is_none(), "{conn}");
    s::run_ok(&app, &t, &c.id).await;
}

#[tokio::test]
async fn pushes_without_schema_write_create_each_record_once() {
    let app = TestApp::spawn().await;
    let t = s::connect_asking(
        &app,
        "hubspot",
        json!({"scopes": ["oauth", CONTACTS_READ, CONTACTS_WRITE]}),
    )
    .await;
    s::seed(&app, &t, Entity::Contacts, 4);
    s::app_create_many(&app, &t, Entity::Contacts, 6).await;
    let c = s::new_config(&t, SyncDirection::Bidirectional, &[Entity::Contacts]);
    s::store(&app, &c).await;
    let logs = s::run_ok(&app, &t, &c.id).await;
    let s::Crm::Hubspot(portal) = t.crm else {
        panic!("a HubSpot tenant")
    };
    let records = app
        .sandbox()
        .hubspot_records(portal, sandbox::CrmObject::Contacts);
    assert!(
        records
            .iter()
            .all(|r| !r.properties.contains_key("conduit_id")),
        "no marker without schema write"
    );
    assert_eq!(logs[0].counts["processed"], 10, "{:?}", logs[0]);
    let crm = s::crm_view(&app, &t, Entity::Contacts);
    assert_eq!(crm.len(), 10);
    s::assert_same(
        &s::app_view(&app, &t, Entity::Contacts).await,
        &crm,
        "app and CRM",
    );

    // A rerun creates nothing (the fault scenarios in sync_faults.rs run this grant
    // through killed workers, redeliveries and a lost create answer).
    let again = s::run_ok(&app, &t, &c.id).await;
    assert_eq!(again[0].counts["created"], 0, "{:?}", again[0].counts);
    assert_eq!(s::crm_view(&app, &t, Entity::Contacts).len(), 10);
}

#[tokio::test]
async fn salesforce_without_the_api_scope_fails_the_run_with_scopes_missing() {
    let app = TestApp::spawn().await;
    let t = s::connect(&app, "salesforce").await;
    let email = connection(&app, &t).await["connected_as"]["email"]
        .as_str()
        .expect("connected as")
        .to_owned();
    s::seed(&app, &t, Entity::Contacts, 3);
    let c = s::new_config(&t, SyncDirection::Pull, &[Entity::Contacts]);
    s::store(&app, &c).await;
    let narrowed = app.sandbox().narrow_grants(
        OAuthProvider::Salesforce,
        &GrantSelector::User {
            email,
            client_id: None,
        },
        None,
        &["api".to_owned()],
    );
    assert!(!narrowed.is_empty(), "the connection's grant was narrowed");
    let logs = s::run(&app, &t, &c.id).await;
    assert_eq!(logs[0].status, RunStatus::Failed, "{:?}", logs[0]);
    assert_eq!(
        logs[0].error_code.as_deref(),
        Some("scopes_missing"),
        "{:?}",
        logs[0]
    );
    let conn = connection(&app, &t).await;
    assert_eq!(conn["scopes_missing"], json!(["api"]), "{conn}");
    assert_eq!(
        conn["status"], "connected",
        "what it may still do keeps working"
    );
}

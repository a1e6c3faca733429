//! Contract test: every request Conduit sends to HubSpot, and every answer the sandbox
//! gives it, checked against HubSpot's own published OpenAPI descriptions (the `contract`
//! crate). The flows are Conduit's real ones, driven through the dev host: OAuth connect
//! (token exchange and the token-info check), a bidirectional contacts-and-companies
//! config created over the API (auto-mapped from the properties list, available fields,
//! preview), a first run (list, counting search, batch creates), edits and deletes on
//! both sides and a second run (incremental searches, batch read/update/archive, the
//! archived list), the search re-anchored past HubSpot's 10,000-result cap, a token
//! refresh, and the revocation on disconnect.
//!
//! The sandbox's recorder sees the exchanges on an environment of its own, so no other
//! test's traffic is in the recording.

use std::collections::BTreeSet;

use conduit::domain::TenantId;
use conduit::sync::schema::Entity;
use sandbox::oauth::{OAuthProvider, OAuthUser};
use scenarios::{Role, TestApp};
use serde_json::json;

use crate::sync_support as s;

/// The HubSpot operations these flows must reach; the test fails if one goes missing.
const EXPECTED: &[&str] = &[
    "POST /oauth/v1/token",
    "GET /oauth/v1/access-tokens/{token}",
    "DELETE /oauth/v1/refresh-tokens/{token}",
    "GET /crm/v3/properties/{objectType}",
    "GET /crm/v3/objects/contacts",
    "POST /crm/v3/objects/contacts/search",
    "POST /crm/v3/objects/contacts/batch/create",
    "POST /crm/v3/objects/contacts/batch/update",
    "POST /crm/v3/objects/contacts/batch/archive",
    "GET /crm/v3/objects/companies",
    "POST /crm/v3/objects/companies/search",
    "POST /crm/v3/objects/companies/batch/create",
    "POST /crm/v3/objects/companies/batch/update",
    "POST /crm/v3/objects/companies/batch/archive",
];

/// What the flows need: read and write of both objects and their schemas, schema write
/// included, which creating the push's marker property needs.
const SCOPES: &[&str] = &[
    "oauth",
    "crm.objects.contacts.read",
    "crm.objects.contacts.write",
    "crm.objects.companies.read",
    "crm.objects.companies.write",
    "crm.schemas.contacts.read",
    "crm.schemas.contacts.write",
    "crm.schemas.companies.read",
    "crm.schemas.companies.write",
];

/// [`SCOPES`] without schema write: all a HubSpot connection may ask for while the
/// catalogue does not offer `crm.schemas.*.write` (issue 11 §1). Then the portal's admin
/// defines the marker beforehand ([`define_markers`]), and the property create is
/// checked by the sandbox-only contract test (`contract/tests/hubspot.rs`) alone.
const SCOPES_WITHOUT_SCHEMA_WRITE: &[&str] = &[
    "oauth",
    "crm.objects.contacts.read",
    "crm.objects.contacts.write",
    "crm.objects.companies.read",
    "crm.objects.companies.write",
    "crm.schemas.contacts.read",
    "crm.schemas.companies.read",
];

/// Defines Conduit's unique `conduit_id` marker property on both objects of `t`'s portal,
/// as a HubSpot admin would in the portal's settings.
fn define_markers(app: &TestApp, t: &s::Tenant) {
    let s::Crm::Hubspot(portal) = t.crm else {
        panic!("a HubSpot tenant");
    };
    for object in [sandbox::CrmObject::Contacts, sandbox::CrmObject::Companies] {
        let defined = app
            .sandbox()
            .hubspot_define_property(portal, object, "conduit_id", true);
        assert!(defined, "the marker is new in portal {portal}");
    }
}

/// A tenant connected over OAuth (through the dev host) to a HubSpot portal of its own,
/// granted [`SCOPES`] where the catalogue offers them, else
/// [`SCOPES_WITHOUT_SCHEMA_WRITE`] with the markers predefined; tells which.
async fn connect(app: &TestApp) -> (s::Tenant, bool) {
    let n = s::fresh();
    let portal = 8_800_000 + n;
    let email = format!("contract-{n}@sandbox.test");
    app.sandbox()
        .add_oauth_user(OAuthUser {
            hub_id: portal,
            ..OAuthUser::new(OAuthProvider::Hubspot, email.clone())
        })
        .expect("sandbox user");
    let tenant = app.tenant();
    let admin = app.token(&tenant, Role::Admin);
    let start = |scopes: &[&str]| json!({"return_to": RETURN_TO, "scopes": scopes});
    let (mut status, mut started) = app.oauth_start(&admin, "hubspot", start(SCOPES)).await;
    let schema_write = !(status == 400 && started["error"]["code"] == "unknown_scope");
    if !schema_write {
        (status, started) = app
            .oauth_start(&admin, "hubspot", start(SCOPES_WITHOUT_SCHEMA_WRITE))
            .await;
    }
    assert_eq!(status, 200, "{started}");
    let url = started["authorize_url"].as_str().expect("authorize_url");
    let out = app.oauth_browse(url, &format!("login_hint={email}")).await;
    assert_eq!(out.status, "connected", "{}", out.return_url);
    let t = s::Tenant {
        id: TenantId::parse(&tenant).expect("tenant"),
        admin,
        conn: out.connection_id.expect("connection id"),
        crm: s::Crm::Hubspot(portal),
    };
    if !schema_write {
        define_markers(app, &t);
    }
    (t, schema_write)
}

const RETURN_TO: &str = "http://localhost:5173/integrations";

/// More records than one search may page through (HubSpot stops at 10,000 results).
const PAST_THE_SEARCH_CAP: usize = 10_150;

#[tokio::test]
async fn conduits_hubspot_exchanges_conform_to_hubspots_published_specs() {
    let app = TestApp::isolated(devhost::LocalEnvOptions::default()).await;
    let recorder = app.sandbox().recorder().clone();
    recorder.start();

    // OAuth connect: authorize, token exchange, token-info check.
    let (t, schema_write) = connect(&app).await;
    s::seed(&app, &t, Entity::Contacts, 30);
    s::seed(&app, &t, Entity::Companies, 12);
    let app_contacts = s::app_create_many(&app, &t, Entity::Contacts, 3).await;
    let app_companies = s::app_create_many(&app, &t, Entity::Companies, 2).await;

    // A config over the API, auto-mapped from HubSpot's properties.
    let (status, created) = app
        .post(
            "/v1/sync/configs",
            &t.admin,
            json!({
                "connection_id": t.conn,
                "name": "HubSpot both ways",
                "direction": "bidirectional",
                "frequency": {"type": "manual"},
                "entities": ["contacts", "companies"],
                "conflict_strategy": "last_write_wins",
                "options": {"create_missing": true, "propagate_deletes": true},
            }),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let config_id = created["id"].as_str().expect("config id").to_owned();
    let config = conduit::domain::SyncConfigId::parse(&config_id).expect("id");
    for entity in ["contacts", "companies"] {
        let (status, body) = app
            .get(
                &format!("/v1/sync/configs/{config_id}/available-fields?entity={entity}"),
                &t.admin,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = app
            .post(
                &format!("/v1/sync/configs/{config_id}/preview"),
                &t.admin,
                json!({"entity": entity}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    // First run: both sides get each other's records.
    s::run_ok(&app, &t, &config).await;

    // Edits and deletes on both sides, then a second run.
    let crm_contacts = s::crm_rows(&app, &t, Entity::Contacts);
    let crm_companies = s::crm_rows(&app, &t, Entity::Companies);
    s::crm_update(
        &app,
        &t,
        Entity::Contacts,
        &crm_contacts[0].id,
        &[("jobtitle", "Buyer")],
    );
    s::crm_update(
        &app,
        &t,
        Entity::Companies,
        &crm_companies[0].id,
        &[("city", "Lyon")],
    );
    s::crm_delete(&app, &t, Entity::Contacts, &crm_contacts[1].id);
    s::crm_delete(&app, &t, Entity::Companies, &crm_companies[1].id);
    s::app_update(
        &app,
        &t,
        Entity::Contacts,
        &app_contacts[0],
        json!({"job_title": "Owner"}),
    )
    .await;
    s::app_update(
        &app,
        &t,
        Entity::Companies,
        &app_companies[0],
        json!({"city": "Porto"}),
    )
    .await;
    s::app_delete(&app, &t, Entity::Contacts, &app_contacts[1]).await;
    s::app_delete(&app, &t, Entity::Companies, &app_companies[1]).await;
    s::run_ok(&app, &t, &config).await;

    // The search past HubSpot's 10,000-result cap: a filtered pull searches from the
    // start and must re-anchor on the last modification time seen.
    let (big, _) = connect(&app).await;
    // Seeded in slices a few milliseconds apart: records sharing one modification time
    // cannot be re-anchored between (HubSpot's own imports spread over time too).
    for _ in 0..5 {
        s::seed(&app, &big, Entity::Contacts, PAST_THE_SEARCH_CAP / 5);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let mut pull = s::new_config(
        &big,
        conduit::sync::config::SyncDirection::Pull,
        &[Entity::Contacts],
    );
    pull.filters = vec![conduit::sync::config::Filter {
        entity: Entity::Contacts,
        field: "email".into(),
        operator: conduit::sync::config::FilterOp::HasValue,
        value: None,
        values: vec![],
    }];
    s::store(&app, &pull).await;
    let logs = s::run_ok(&app, &big, &pull.id).await;
    assert_eq!(
        logs[0].counts["created"], PAST_THE_SEARCH_CAP as u64,
        "{:?}",
        logs[0].counts
    );

    // A token refresh, then the revocation on disconnect.
    app.make_due(t.id.as_str(), &t.conn).await;
    app.sweep_settled(t.id.as_str(), &t.conn).await;
    let (status, body) = app
        .delete(&format!("/v1/connections/{}", t.conn), &t.admin)
        .await;
    assert!(status == 200 || status == 204, "{status} {body}");

    let exchanges = recorder.stop();
    let specs = contract::Specs::load("hubspot").expect("HubSpot specs");
    let report = contract::check_all(&specs, &exchanges);
    println!("{report}");
    println!(
        "Exceptions to HubSpot's published specs:\n{}",
        contract::exceptions::table()
    );

    let reached: BTreeSet<&str> = report.operations.keys().map(String::as_str).collect();
    let mut expected = EXPECTED.to_vec();
    if schema_write {
        expected.push("POST /crm/v3/properties/{objectType}");
    } else {
        println!(
            "the catalogue offers no crm.schemas.*.write: markers predefined, property create not in the flow"
        );
    }
    let missing: Vec<&&str> = expected.iter().filter(|o| !reached.contains(**o)).collect();
    assert!(
        missing.is_empty(),
        "the flows never called {missing:?}\n{report}"
    );
    let re_anchored = exchanges.iter().filter(|e| {
        e.path == "/crm/v3/objects/contacts/search"
            && serde_json::from_slice::<serde_json::Value>(&e.request_body)
                .is_ok_and(|b| b["after"] == "0")
    });
    assert!(re_anchored.count() >= 2, "the search was never re-anchored");
    assert!(
        report.passed(),
        "HubSpot exchanges that break the published specs:\n{report}"
    );
}

/// Conduit's Gmail and Calendar calls (a send with text, HTML and an attachment; the
/// profile with reading granted; an event created, listed by range and by sync token,
/// changed with its ETag, deleted) and the stand-in's answers, checked against
/// Google's discovery documents (`specs/google/`).
#[tokio::test]
async fn conduits_google_exchanges_conform_to_googles_published_specs() {
    use base64::Engine as _;
    let app = TestApp::isolated(devhost::LocalEnvOptions::default()).await;
    let recorder = app.sandbox().recorder().clone();
    let tenant = app.tenant();
    let alice = app.user_token(&tenant, "alice", Role::Member);
    let user = app
        .sandbox()
        .add_oauth_user(OAuthUser::new(
            OAuthProvider::Google,
            "contract-gmail@sandbox.test",
        ))
        .expect("sandbox user");
    let out = app
        .oauth_connect(
            &alice,
            "google",
            json!({"return_to": "http://localhost:5173/settings", "kind": "gmail",
                   "uses": ["action:send_email", "action:read_email"]}),
            &format!("login_hint={}", user.email),
        )
        .await;
    assert_eq!(out.status, "connected", "{}", out.return_url);
    let mut lent = vec![out.connection_id.expect("gmail connection").to_string()];

    recorder.start();
    let (status, sent) = app
        .post(
            "/v1/me/gmail/send",
            &alice,
            json!({"to": ["Zoë <zoe@example.com>"], "subject": "Résumé", "text": "hello",
                   "html": "<p>hello</p>",
                   "attachments": [{"filename": "a.txt", "content_type": "text/plain",
                                    "content": base64::engine::general_purpose::STANDARD.encode("a")}]}),
        )
        .await;
    assert_eq!(status, 200, "{sent}");
    let (status, profile) = app.get("/v1/me/gmail/profile", &alice).await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["email_address"], user.email);
    assert!(
        profile["messages_total"].is_number(),
        "reading granted: Gmail's profile {profile}"
    );

    // Calendar: create, list (a range, then incrementally), change with its ETag, delete.
    let out = app
        .oauth_connect(
            &alice,
            "google",
            json!({"return_to": "http://localhost:5173/settings", "kind": "calendar",
                   "uses": ["action:create_event", "action:list_events", "action:update_event",
                            "action:delete_event", "action:list_calendars", "action:free_busy"]}),
            &format!("login_hint={}", user.email),
        )
        .await;
    assert_eq!(out.status, "connected", "{}", out.return_url);
    lent.push(out.connection_id.expect("calendar connection").to_string());
    let (status, event) = app
        .post(
            "/v1/me/calendar/events?send_updates=none",
            &alice,
            json!({"summary": "Call back", "attendees": [{"email": "zoe@example.com"}],
                   "start": {"date_time": "2026-12-07T10:00:00+01:00", "time_zone": "Europe/Paris"},
                   "end": {"date_time": "2026-12-07T10:30:00+01:00", "time_zone": "Europe/Paris"}}),
        )
        .await;
    assert_eq!(status, 201, "{event}");
    let id = event["id"].as_str().expect("id").to_owned();
    let etag = event["etag"].as_str().expect("etag").to_owned();
    let (status, listed) = app
        .get(
            "/v1/me/calendar/events?time_min=2026-12-07T00:00:00Z&time_max=2026-12-08T00:00:00Z",
            &alice,
        )
        .await;
    assert_eq!(status, 200, "{listed}");
    let sync = listed["next_sync_token"].as_str().expect("sync").to_owned();
    let path = format!("/v1/me/calendar/events/{id}");
    let (status, _, changed) = app
        .send_headed(
            "PATCH",
            &path,
            &alice,
            Some(json!({"summary": "Call back (moved)"})),
            &[("if-match", &etag)],
        )
        .await;
    assert_eq!(status, 200, "{changed}");
    let (status, changes) = app
        .get(&format!("/v1/me/calendar/events?sync_token={sync}"), &alice)
        .await;
    assert_eq!(status, 200, "{changes}");
    let (status, cals) = app.get("/v1/me/calendar/calendars", &alice).await;
    assert_eq!(status, 200, "{cals}");
    let (status, busy) = app
        .post(
            "/v1/me/calendar/freebusy",
            &alice,
            json!({"time_min": "2026-12-07T00:00:00Z", "time_max": "2026-12-08T00:00:00Z"}),
        )
        .await;
    assert_eq!(status, 200, "{busy}");
    let (status, _, _) = app.send_headed("DELETE", &path, &alice, None, &[]).await;
    assert_eq!(status, 204);

    // The dispatch steps acting as Alice (she lends both): the follow-up (an event id
    // the client chooses) and the summary, in one chain.
    let admin = app.user_token(&tenant, "carol", Role::Admin);
    for id in &lent {
        let (status, body) = app
            .patch(
                &format!("/v1/connections/{id}"),
                &alice,
                json!({"allow_automations": true}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    for (action, priority) in [
        ("calendar.create_follow_up", 10),
        ("gmail.send_summary", 20),
    ] {
        let (status, body) = app
            .post(
                "/v1/integrations",
                &admin,
                json!({"name": action, "provider": "google", "action": action,
                       "acting_user": {"user_id": "alice"},
                       "triggers": [{"event": "contact_request"}], "priority": priority}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let d = app
        .dispatched(
            &admin,
            json!({"schema_version": 1, "type": "contact_request", "event_id": "evt_contract_google",
                   "occurred_at": "2026-12-06T09:00:00Z",
                   "conversation": {"id": "conv_1", "channel": "chat", "summary": "Wants a callback."},
                   "contact": {"name": "Zoë", "email": "zoe@example.com"}}),
        )
        .await;
    assert_eq!(d["status"], "succeeded", "{d}");
    let exchanges = recorder.stop();

    let specs = contract::Specs::load("google").expect("Google specs");
    let report = contract::check_all(&specs, &exchanges);
    println!("{report}");
    let reached: BTreeSet<&str> = report.operations.keys().map(String::as_str).collect();
    for op in [
        "POST /gmail/v1/users/{userId}/messages/send",
        "GET /gmail/v1/users/{userId}/profile",
        "POST /calendar/v3/calendars/{calendarId}/events",
        "GET /calendar/v3/calendars/{calendarId}/events",
        "PATCH /calendar/v3/calendars/{calendarId}/events/{eventId}",
        "DELETE /calendar/v3/calendars/{calendarId}/events/{eventId}",
        "GET /calendar/v3/users/me/calendarList",
        "POST /calendar/v3/freeBusy",
    ] {
        assert!(reached.contains(op), "never called {op}\n{report}");
    }
    assert!(
        report.passed(),
        "Google exchanges that break Google's published specs:\n{report}"
    );
}

/// The Zoho CRM operations a sync reaches; the test fails if one goes missing.
const ZOHO_EXPECTED: &[&str] = &[
    "GET /crm/v8/settings/fields",
    "POST /crm/v8/settings/fields",
    "GET /crm/v8/{module_api_name}",
    "POST /crm/v8/{module_api_name}",
    "PUT /crm/v8/{module_api_name}",
    "DELETE /crm/v8/{module_api_name}",
    "GET /crm/v8/{module_api_name}/deleted",
];

/// Conduit's Zoho CRM sync — a bidirectional contacts-and-accounts config created over
/// the API (auto-mapped from the field metadata, available fields, preview), a first run
/// (field metadata, the marker field created, lists, inserts), edits and deletes on
/// both sides and a second run (`If-Modified-Since` lists, reads by id, updates,
/// deletes, the deleted records) — and the stand-in's answers, checked against Zoho's
/// own OpenAPI description of CRM v8 (`specs/zoho/`).
#[tokio::test]
async fn conduits_zoho_exchanges_conform_to_zohos_published_specs() {
    let app = TestApp::isolated(devhost::LocalEnvOptions::default()).await;
    let recorder = app.sandbox().recorder().clone();
    let t = s::connect(&app, "zoho").await;
    s::seed(&app, &t, Entity::Contacts, 12);
    s::seed(&app, &t, Entity::Companies, 6);
    let app_contacts = s::app_create_many(&app, &t, Entity::Contacts, 3).await;
    let app_companies = s::app_create_many(&app, &t, Entity::Companies, 2).await;
    recorder.start();

    let (status, created) = app
        .post(
            "/v1/sync/configs",
            &t.admin,
            json!({
                "connection_id": t.conn,
                "name": "Zoho both ways",
                "direction": "bidirectional",
                "frequency": {"type": "manual"},
                "entities": ["contacts", "companies"],
                "conflict_strategy": "last_write_wins",
                "options": {"create_missing": true, "propagate_deletes": true},
            }),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let config_id = created["id"].as_str().expect("config id").to_owned();
    let mapped: BTreeSet<(String, String)> = created["mappings"]
        .as_array()
        .expect("mappings")
        .iter()
        .map(|m| {
            (
                m["crm_field"].as_str().unwrap_or_default().to_owned(),
                m["app_field"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    for pair in [
        ("Email", "email"),
        ("Last_Name", "last_name"),
        ("Website", "domain"),
    ] {
        assert!(
            mapped.contains(&(pair.0.to_owned(), pair.1.to_owned())),
            "auto-mapped {pair:?}: {mapped:?}"
        );
    }
    let config = conduit::domain::SyncConfigId::parse(&config_id).expect("id");
    for entity in ["contacts", "companies"] {
        let (status, body) = app
            .get(
                &format!("/v1/sync/configs/{config_id}/available-fields?entity={entity}"),
                &t.admin,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = app
            .post(
                &format!("/v1/sync/configs/{config_id}/preview"),
                &t.admin,
                json!({"entity": entity}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    s::run_ok(&app, &t, &config).await;

    let crm_contacts = s::crm_rows(&app, &t, Entity::Contacts);
    let crm_companies = s::crm_rows(&app, &t, Entity::Companies);
    s::crm_update(
        &app,
        &t,
        Entity::Contacts,
        &crm_contacts[0].id,
        &[("Title", "Buyer")],
    );
    s::crm_update(
        &app,
        &t,
        Entity::Companies,
        &crm_companies[0].id,
        &[("Billing_City", "Lyon")],
    );
    s::crm_delete(&app, &t, Entity::Contacts, &crm_contacts[1].id);
    s::app_update(
        &app,
        &t,
        Entity::Contacts,
        &app_contacts[0],
        json!({"job_title": "Owner"}),
    )
    .await;
    s::app_update(
        &app,
        &t,
        Entity::Companies,
        &app_companies[0],
        json!({"city": "Porto"}),
    )
    .await;
    s::app_delete(&app, &t, Entity::Contacts, &app_contacts[1]).await;
    // Zoho keeps seconds: the second run's changes are in a later second than the first's.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    s::run_ok(&app, &t, &config).await;

    let exchanges = recorder.stop();
    let specs = contract::Specs::load("zoho").expect("Zoho specs");
    let report = contract::check_all(&specs, &exchanges);
    println!("{report}");
    let reached: BTreeSet<&str> = report.operations.keys().map(String::as_str).collect();
    let missing: Vec<&&str> = ZOHO_EXPECTED
        .iter()
        .filter(|o| !reached.contains(**o))
        .collect();
    assert!(
        missing.is_empty(),
        "the flows never called {missing:?}\n{report}"
    );
    assert!(
        report.passed(),
        "Zoho exchanges that break the published specs:\n{report}"
    );
}

/// The Pipedrive operations a sync reaches (v2 records and search, v1 fields and
/// recents); the test fails if one goes missing.
const PIPEDRIVE_EXPECTED: &[&str] = &[
    "GET /v1/personFields",
    "POST /v1/personFields",
    "GET /v1/organizationFields",
    "POST /v1/organizationFields",
    "GET /v1/recents",
    "GET /api/v2/persons",
    "POST /api/v2/persons",
    "PATCH /api/v2/persons/{id}",
    "DELETE /api/v2/persons/{id}",
    "GET /api/v2/persons/search",
    "GET /api/v2/organizations",
    "POST /api/v2/organizations",
    "PATCH /api/v2/organizations/{id}",
    "GET /api/v2/organizations/search",
    "GET /v1/dealFields",
    "POST /v1/dealFields",
    "GET /api/v2/deals",
    "POST /api/v2/deals",
    "PATCH /api/v2/deals/{id}",
    "DELETE /api/v2/deals/{id}",
    "GET /api/v2/stages",
    "GET /api/v2/pipelines",
    "POST /v1/webhooks",
    "DELETE /v1/webhooks/{id}",
];

/// Conduit's Pipedrive sync — a bidirectional persons, organizations and deals config created
/// over the API (auto-mapped from the field lists, available fields, preview), a first
/// run (field lists, the marker fields created, lists, creates, the marker searches),
/// edits and deletes on both sides and a second run (`updated_since` lists, reads by
/// id, updates, deletes, recents), the switch to realtime (a webhook per entity created)
/// and the config's deletion (its webhooks removed) — and the stand-in's answers,
/// checked against Pipedrive's own OpenAPI descriptions (`specs/pipedrive/`: v2 for
/// records and search, v1 for fields, recents and webhooks). The files describe `api.pipedrive.com`; Conduit calls
/// the company domain, which serves the same API (v1 also under `/api/v1`), so the
/// exchanges are checked as calls of `api.pipedrive.com` at the files' paths.
#[tokio::test]
async fn conduits_pipedrive_exchanges_conform_to_pipedrives_published_specs() {
    let app = TestApp::isolated(devhost::LocalEnvOptions::default()).await;
    let recorder = app.sandbox().recorder().clone();
    let t = s::connect_asking(
        &app,
        "pipedrive",
        json!({"uses": [
            "sync:contacts:bidirectional",
            "sync:companies:bidirectional",
            "sync:deals:bidirectional",
        ]}),
    )
    .await;
    s::seed(&app, &t, Entity::Companies, 4);
    s::seed(&app, &t, Entity::Contacts, 10);
    s::seed(&app, &t, Entity::Deals, 3);
    let app_contacts = s::app_create_many(&app, &t, Entity::Contacts, 3).await;
    let app_companies = s::app_create_many(&app, &t, Entity::Companies, 2).await;
    let app_deals = s::app_create_many(&app, &t, Entity::Deals, 2).await;
    let plain = s::connect_asking(
        &app,
        "pipedrive",
        json!({"scopes": ["base", "contacts:full", "recents:read"]}),
    )
    .await;
    s::app_create_many(&app, &plain, Entity::Contacts, 2).await;
    s::app_create_many(&app, &plain, Entity::Companies, 2).await;
    recorder.start();

    let mut mappings = Vec::new();
    for entity in [Entity::Contacts, Entity::Companies, Entity::Deals] {
        for (crm, field) in s::default_pairs("pipedrive", entity) {
            mappings.push(json!({
                "entity": entity.as_str(),
                "crm_field": s::config_field(&t, crm),
                "app_field": field,
                "direction": "bidirectional",
            }));
        }
    }
    let (status, created) = app
        .post(
            "/v1/sync/configs",
            &t.admin,
            json!({
                "connection_id": t.conn,
                "name": "Pipedrive both ways",
                "direction": "bidirectional",
                "frequency": {"type": "manual"},
                "entities": ["contacts", "companies", "deals"],
                "conflict_strategy": "last_write_wins",
                "options": {"create_missing": true, "propagate_deletes": true},
                "mappings": mappings,
            }),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let config_id = created["id"].as_str().expect("config id").to_owned();
    let config = conduit::domain::SyncConfigId::parse(&config_id).expect("id");
    for entity in ["contacts", "companies", "deals"] {
        let (status, body) = app
            .get(
                &format!("/v1/sync/configs/{config_id}/available-fields?entity={entity}"),
                &t.admin,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = app
            .post(
                &format!("/v1/sync/configs/{config_id}/preview"),
                &t.admin,
                json!({"entity": entity}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    s::run_ok(&app, &t, &config).await;

    let crm_contacts = s::crm_rows(&app, &t, Entity::Contacts);
    let crm_companies = s::crm_rows(&app, &t, Entity::Companies);
    s::crm_update(
        &app,
        &t,
        Entity::Contacts,
        &crm_contacts[0].id,
        &[("first_name", "Buyer")],
    );
    s::crm_update(
        &app,
        &t,
        Entity::Companies,
        &crm_companies[0].id,
        &[("City", "Lyon")],
    );
    s::crm_delete(&app, &t, Entity::Contacts, &crm_contacts[1].id);
    let crm_deals = s::crm_rows(&app, &t, Entity::Deals);
    s::crm_update(
        &app,
        &t,
        Entity::Deals,
        &crm_deals[0].id,
        &[("stage_id", "3"), ("value", "4200")],
    );
    s::crm_delete(&app, &t, Entity::Deals, &crm_deals[1].id);
    s::app_update(
        &app,
        &t,
        Entity::Deals,
        &app_deals[0],
        json!({"amount": "5100"}),
    )
    .await;
    s::app_delete(&app, &t, Entity::Deals, &app_deals[1]).await;
    s::app_update(
        &app,
        &t,
        Entity::Contacts,
        &app_contacts[0],
        json!({"last_name": "Owner"}),
    )
    .await;
    s::app_update(
        &app,
        &t,
        Entity::Companies,
        &app_companies[0],
        json!({"city": "Porto"}),
    )
    .await;
    s::app_delete(&app, &t, Entity::Contacts, &app_contacts[1]).await;
    // Pipedrive keeps seconds: the second run's changes are in a later second.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    s::run_ok(&app, &t, &config).await;

    // A grant without `admin` (no marker field): pushes look records up by email and
    // by name through search before creating.
    let push = s::new_config(
        &plain,
        conduit::sync::config::SyncDirection::Push,
        &[Entity::Contacts, Entity::Companies],
    );
    s::store(&app, &push).await;
    s::run_ok(&app, &plain, &push.id).await;

    // Realtime: Conduit creates the config's webhooks (one per entity); deleting the
    // config removes them.
    let (status, body) = app
        .send(
            "PATCH",
            &format!("/v1/sync/configs/{config_id}"),
            &t.admin,
            Some(json!({"frequency": {"type": "realtime"}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let s::Crm::Pipedrive(company) = t.crm.clone() else {
        unreachable!("a Pipedrive tenant")
    };
    assert_eq!(app.sandbox().pipedrive_webhooks(&company).len(), 3);
    let (status, body) = app
        .send(
            "DELETE",
            &format!("/v1/sync/configs/{config_id}"),
            &t.admin,
            None,
        )
        .await;
    assert!(status == 200 || status == 204, "{status} {body}");
    assert!(app.sandbox().pipedrive_webhooks(&company).is_empty());

    let mut exchanges = recorder.stop();
    for e in &mut exchanges {
        let company_domain = e.host.ends_with(".pipedrive.com")
            && !["api.pipedrive.com", "oauth.pipedrive.com"].contains(&e.host.as_str());
        if company_domain {
            e.host = "api.pipedrive.com".into();
            if let Some(v1) = e.path.strip_prefix("/api/v1/") {
                e.path = format!("/v1/{v1}");
            }
        }
        // The v1 file's recents items are 12 `anyOf` alternatives whose nullable members
        // (a person's `org_id` and `last_name`, an organization's `address`) are not
        // marked nullable, and an exception cannot reach inside an alternative: the
        // null members are left out of the checked copy (the other v2 files' same fault
        // is a listed exception).
        if e.path == "/v1/recents"
            && let Ok(mut body) = serde_json::from_slice::<serde_json::Value>(&e.response_body)
        {
            for change in body["data"].as_array_mut().into_iter().flatten() {
                if let Some(data) = change["data"].as_object_mut() {
                    data.retain(|_, v| !v.is_null());
                }
            }
            e.response_body = serde_json::to_vec(&body).unwrap_or_default().into();
        }
    }
    let specs = contract::Specs::load("pipedrive").expect("Pipedrive specs");
    let report = contract::check_all(&specs, &exchanges);
    println!("{report}");
    let reached: BTreeSet<&str> = report.operations.keys().map(String::as_str).collect();
    let missing: Vec<&&str> = PIPEDRIVE_EXPECTED
        .iter()
        .filter(|o| !reached.contains(**o))
        .collect();
    assert!(
        missing.is_empty(),
        "the flows never called {missing:?}\n{report}"
    );
    assert!(
        report.unmatched.is_empty(),
        "calls the descriptions lack: {report}"
    );
    assert!(
        report.passed(),
        "Pipedrive exchanges that break the published specs:\n{report}"
    );
}

/// What the HubSpot Webhooks API flow must reach.
const HUBSPOT_WEBHOOKS_EXPECTED: &[&str] = &[
    "GET /webhooks/v3/{appId}/settings",
    "PUT /webhooks/v3/{appId}/settings",
    "DELETE /webhooks/v3/{appId}/settings",
    "GET /webhooks/v3/{appId}/subscriptions",
    "POST /webhooks/v3/{appId}/subscriptions",
    "GET /webhooks/v3/{appId}/subscriptions/{subscriptionId}",
    "PATCH /webhooks/v3/{appId}/subscriptions/{subscriptionId}",
    "DELETE /webhooks/v3/{appId}/subscriptions/{subscriptionId}",
];

/// The Webhooks API v3 stand-in as an operator (or a tenant's admin) drives it to point
/// an app's webhooks at Conduit — settings configured (and refused without the developer
/// key), subscriptions created, listed, read, changed and removed, settings cleared — with
/// every request and answer checked against HubSpot's own description
/// (`specs/hubspot/webhooks-v3.json`).
#[tokio::test]
async fn the_hubspot_webhooks_api_stand_in_conforms_to_webhooks_v3() {
    let app = TestApp::isolated(devhost::LocalEnvOptions::default()).await;
    let recorder = app.sandbox().recorder().clone();
    recorder.start();
    let (_t, app_id, _secret) = crate::sync_webhooks::hooked_tenant(&app).await;
    let key = app
        .sandbox()
        .hubspot_developer_key(app_id)
        .expect("a developer key");
    let http = reqwest::Client::new();
    let base = format!("{}/api.hubapi.com/webhooks/v3/{app_id}", app.sandbox_url());
    let send = |method: reqwest::Method, path: &str, body: Option<serde_json::Value>| {
        let mut r = http
            .request(method, format!("{base}{path}"))
            .bearer_auth(&key);
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send()
    };
    let settings = send(reqwest::Method::GET, "/settings", None).await.unwrap();
    assert_eq!(settings.status(), 200);
    let all = send(reqwest::Method::GET, "/subscriptions", None)
        .await
        .unwrap();
    assert_eq!(all.status(), 200);
    let all: serde_json::Value = all.json().await.unwrap();
    let first = all["results"][0]["id"].clone();
    let id = first
        .as_u64()
        .map(|n| n.to_string())
        .or_else(|| first.as_str().map(str::to_owned))
        .expect("a subscription id");
    let one = send(reqwest::Method::GET, &format!("/subscriptions/{id}"), None)
        .await
        .unwrap();
    assert_eq!(one.status(), 200);
    let paused = send(
        reqwest::Method::PATCH,
        &format!("/subscriptions/{id}"),
        Some(json!({"active": false})),
    )
    .await
    .unwrap();
    assert_eq!(paused.status(), 200);
    let duplicate = send(
        reqwest::Method::POST,
        "/subscriptions",
        Some(json!({"eventType": "contact.creation", "active": true})),
    )
    .await
    .unwrap();
    assert_eq!(duplicate.status(), 409, "a second subscription of one type");
    let gone = send(
        reqwest::Method::DELETE,
        &format!("/subscriptions/{id}"),
        None,
    )
    .await
    .unwrap();
    assert_eq!(gone.status(), 204);
    let cleared = send(reqwest::Method::DELETE, "/settings", None)
        .await
        .unwrap();
    assert_eq!(cleared.status(), 204);

    let exchanges: Vec<_> = recorder
        .stop()
        .into_iter()
        .filter(|e| e.host == "api.hubapi.com" && e.path.starts_with("/webhooks/v3/"))
        .collect();
    // The legacy query parameter is not a credential the description declares.
    let legacy = http
        .get(format!("{base}/subscriptions?hapikey={key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(legacy.status(), 401);
    let specs = contract::Specs::load("hubspot").expect("HubSpot specs");
    let report = contract::check_all(&specs, &exchanges);
    println!("{report}");
    let reached: BTreeSet<&str> = report.operations.keys().map(String::as_str).collect();
    let missing: Vec<&&str> = HUBSPOT_WEBHOOKS_EXPECTED
        .iter()
        .filter(|o| !reached.contains(**o))
        .collect();
    assert!(
        missing.is_empty(),
        "the flow never called {missing:?}\n{report}"
    );
    assert!(
        report.unmatched.is_empty(),
        "calls the description lacks: {report}"
    );
    assert!(
        report.passed(),
        "Webhooks API exchanges that break HubSpot's description:\n{report}"
    );
}
